"""The systemd unit a cgroup v2 path belongs to, for the unit label."""

from __future__ import annotations

# The unit types whose processes systemd places in a cgroup of their own (slices only group
# other units: a process directly in a slice is in no unit).
_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap")


def from_cgroup(path: str) -> str:
    """The innermost systemd unit in a cgroup path; "" outside any unit.

    Innermost, so that a user service (/user.slice/user-1000.slice/user@1000.service/
    app.slice/foo.service) is foo.service rather than its user manager, and a delegated
    service's sub-cgroups (/system.slice/foo.service/payload) are still foo.service.
    """
    for part in reversed(path.split("/")):
        if part.endswith(_UNIT_SUFFIXES) and part not in _UNIT_SUFFIXES:
            return part
    return ""
