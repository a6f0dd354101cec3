"""Why a capability was asked for: the kernel function that asked, and the known probe call sites."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

# Functions that only pass a check on to cap_capable(): the function that asked is the
# first frame above them. Kernels inline some of them, which leaves no frame to skip.
CAPABILITY_HELPERS = frozenset({
    "cap_capable", "cap_capable_helper", "security_capable", "ns_capable", "ns_capable_common",
    "ns_capable_noaudit", "ns_capable_setid", "capable", "has_ns_capability", "has_ns_capability_noaudit",
    "has_capability", "has_capability_noaudit", "file_ns_capable", "capable_wrt_inode_uidgid",
    "privileged_wrt_inode_uidgid", "sk_ns_capable", "sk_capable", "sk_net_capable", "sockopt_ns_capable",
    "sockopt_capable", "netlink_ns_capable", "netlink_capable", "netlink_net_capable", "__netlink_ns_capable",
    "perfmon_capable", "bpf_capable", "checkpoint_restore_ns_capable", "ns_capable_any", "capable_any",
    "bpf_token_capable", "cap_inh_is_capped",
})
UNKNOWN = "-"
# Kernel functions whose capability checks are never audited: in tracepoint mode, which
# cannot see opts, run and trace take a check with one of them on its kernel stack as
# non-audited. security_vm_enough_memory_mm: 6.18 tail-calls cap_vm_enough_memory, which
# leaves no frame.
NOAUDIT_FUNCTIONS = ("cap_vm_enough_memory", "security_vm_enough_memory_mm", "ns_capable_noaudit",
                     "has_ns_capability_noaudit", "has_capability_noaudit", "ptracer_capable")


def caller(frames: Iterable[str]) -> str:
    """The kernel function that asked: the first frame that is no capability helper and no BPF
    trampoline or program (fexit runs from one); "-" where the stack was not taken."""
    for frame in frames:
        function = frame.split("+", 1)[0]
        if function in CAPABILITY_HELPERS or function.startswith("bpf_") or function in ("", "[unknown]"):
            continue
        return function
    return UNKNOWN


@dataclass(frozen=True)
class ProbeSite:
    """A check a program may be granted but does not need in order to succeed."""

    capability: str
    caller: str
    why: str
    # The capability is needed after all when the traced tree made this change (syscall, set,
    # direction); None: never by construction, only --verify can show it is.
    needed_after: Optional[tuple[str, str, str]] = None


# The one table of known probe call sites: checks whose refusal a program survives by design.
PROBE_SITES = (
    # cap_capset() asks cap_inh_is_capped() on every capset(), granted or not, to know whether
    # the inheritable set may grow beyond the permitted one; dropping capabilities needs none.
    ProbeSite("CAP_SETPCAP", "cap_capset",
              "asked on every capset(); needed only to raise the inheritable set",
              needed_after=("capset", "inheritable", "gained")),
)
_BY_SITE = {(site.capability, site.caller): site for site in PROBE_SITES}


def probe_site(capability: str, asked_by: Optional[str]) -> Optional[ProbeSite]:
    return _BY_SITE.get((capability, asked_by)) if asked_by else None
