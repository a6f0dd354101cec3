"""Least-privilege profiles: what programs were granted, denied and hold, and what to grant them."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional

import yaml

from . import capabilities, changes
from .layouts import CAP_OPT_NOAUDIT, decode_comm
from .maps import BpfMap, total

FORMATS = ("text", "json", "systemd", "kubernetes", "docker")
SCHEMA_VERSION = 1
# Kernel functions whose capability checks are never audited: in tracepoint mode, which
# cannot see opts, run takes a check with one of them on its kernel stack as non-audited.
# security_vm_enough_memory_mm: 6.18 tail-calls cap_vm_enough_memory, which leaves no frame.
NOAUDIT_FUNCTIONS = ("cap_vm_enough_memory", "security_vm_enough_memory_mm", "ns_capable_noaudit",
                     "has_ns_capability_noaudit", "has_capability_noaudit", "ptracer_capable")
# What each noaudit value (probe_info's, "inferred" or "unknown") means for a recommendation.
NOAUDIT_NOTES = {
    "excluded": "non-audited checks are not seen in this mode's configuration, so none enter the recommendation",
    "included": "non-audited checks are counted apart and never enter the recommendation",
    "unknown": "non-audited checks were counted but not told apart: the needed set may include capabilities "
               "the kernel only probed without audit (e.g. CAP_SYS_ADMIN from memory accounting on exec)",
    "inferred": "the tracepoint mode cannot see whether a check was audited; checks with a known non-audited "
                f"caller on their kernel stack ({', '.join(NOAUDIT_FUNCTIONS)}) are counted apart and never enter "
                "the recommendation; one from another caller would count as audited",
    "indistinguishable": "the tracepoint mode cannot tell audited from non-audited checks: the needed set may "
                         "include capabilities the kernel only probed without audit (e.g. CAP_SYS_ADMIN from "
                         "memory accounting on exec and mmap)",
}


@dataclass(frozen=True)
class CheckCount:
    """Checks of one capability by one comm; audited is None where the mode cannot tell."""

    comm: str
    capability: str
    audited: Optional[bool]
    granted: int
    denied: int


@dataclass(frozen=True)
class ChangeCount:
    """A capability (or securebit) one syscall added to or removed from one set, and how often."""

    comm: str
    syscall: str
    set: str
    capability: str
    direction: str
    count: int


@dataclass(frozen=True)
class Recommendation:
    needed: list[str]
    denied: list[str]
    unused: list[str]
    note: str


@dataclass
class Profile:
    """Everything one recommendation is made from: one command's tree, or one comm's history."""

    mode: str
    noaudit: str  # a probe_info noaudit value, or "unknown"
    checks: list[CheckCount] = field(default_factory=list)
    changes: list[ChangeCount] = field(default_factory=list)
    held: Optional[list[str]] = None  # the permitted set, or the union of those seen; None: not seen

    def recommend(self) -> Recommendation:
        counted = [c for c in self.checks if c.audited is not False]
        needed = by_number({c.capability for c in counted if c.granted})
        denied = by_number({c.capability for c in counted if c.denied} - set(needed))
        unused = by_number(set(self.held) - set(needed)) if self.held is not None else []
        return Recommendation(needed, denied, unused, NOAUDIT_NOTES.get(self.noaudit, ""))


def by_number(names: Iterable[str]) -> list[str]:
    """Capability names in the kernel's order; unknown names last, sorted."""
    return sorted(names, key=_kernel_order)


def _kernel_order(name: str) -> tuple[int, str]:
    return capabilities.NUMBERS.get(name, 1 << 16), name


def audited_by(noaudit: str) -> Callable[[int], Optional[bool]]:
    """How to read a check's opts: audited, not audited, or None where they cannot say."""
    if noaudit == "excluded":
        return lambda opts: True
    if noaudit in ("included", "inferred"):
        return lambda opts: not opts & CAP_OPT_NOAUDIT
    return lambda opts: None


def read_checks(checks: BpfMap, noaudit: str) -> list[CheckCount]:
    """The checks map summed over CPUs and over the labels a profile does not use (uid, cgroup)."""
    audited = audited_by(noaudit)
    totals: dict[tuple, tuple[int, int]] = {}
    for key, values in checks.items():
        value = total(values)
        index = (decode_comm(key.comm), capabilities.name(key.cap), audited(key.opts))
        granted, denied = totals.get(index, (0, 0))
        totals[index] = (granted + value.checks - value.denials, denied + value.denials)
    return [CheckCount(*index, *counts) for index, counts in totals.items()]


def read_changes(change_map: BpfMap) -> list[ChangeCount]:
    """The changes map's (before, after) transitions as per-capability counts."""
    totals: dict[tuple, int] = {}
    for key, values in change_map.items():
        count = total(values)
        for change in changes.expand(key.syscall, key.set, key.before, key.after):
            index = (decode_comm(key.comm), *change)
            totals[index] = totals.get(index, 0) + count
    return [ChangeCount(*index, count) for index, count in sorted(totals.items())]


def document(profile: Profile, **context) -> dict:
    """The JSON document of run --format json and of /profiles; context: command, exit_code, ..."""
    rec = profile.recommend()
    return {
        "version": SCHEMA_VERSION,
        **context,
        "mode": profile.mode,
        "noaudit": profile.noaudit,
        "checks": [asdict(c) for c in sorted(profile.checks, key=_check_order)],
        "changes": [asdict(c) for c in profile.changes],
        "held": by_number(profile.held) if profile.held is not None else None,
        "recommendation": {"needed": rec.needed, "denied": rec.denied, "unused": rec.unused, "note": rec.note},
    }


def from_document(doc: dict) -> Profile:
    """The profile a document was made from: document(from_document(d), **context) == d."""
    return Profile(
        mode=doc["mode"], noaudit=doc["noaudit"],
        checks=[CheckCount(**c) for c in doc["checks"]],
        changes=[ChangeCount(**c) for c in doc["changes"]],
        held=doc["held"],
    )


def _check_order(check: CheckCount) -> tuple:
    return (*_kernel_order(check.capability), check.comm, check.audited is False)


def render(fmt: str, profile: Profile, **context) -> str:
    return RENDERERS[fmt](profile, context)


def _text(profile: Profile, context: dict) -> str:
    rec = profile.recommend()
    lines = []
    if "command" in context:
        lines.append(f"Command: {' '.join(context['command'])} (exit code {context.get('exit_code')})")
    lines.append(f"Capability checks ({profile.mode} mode):")
    lines += _table(("CAPABILITY", "COMM", "AUDITED", "GRANTED", "DENIED"),
                    [(c.capability, c.comm, _yes_no(c.audited), str(c.granted), str(c.denied))
                     for c in sorted(profile.checks, key=_check_order)])
    if profile.changes:
        lines += ["", "Capability changes:"]
        lines += _table(("COMM", "SYSCALL", "SET", "CAPABILITY", "DIRECTION", "COUNT"),
                        [(c.comm, c.syscall, c.set, c.capability, c.direction, str(c.count)) for c in profile.changes])
    lines += ["", "Recommendation:"]
    for label, value in (("needed (granted on audited checks):", _names(rec.needed)),
                         ("denied: the program may need this:", _names(rec.denied)),
                         ("held but never used:", _names(rec.unused) if profile.held is not None else "unknown"),
                         ("note:", rec.note)):
        lines += textwrap.wrap(value, width=100, initial_indent=f"  {label:<36} ", subsequent_indent=" " * 39)
    return "\n".join(lines) + "\n"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def _yes_no(audited: Optional[bool]) -> str:
    return "unknown" if audited is None else ("yes" if audited else "no")


def _names(names: list[str]) -> str:
    return " ".join(names) or "-"


def _json(profile: Profile, context: dict) -> str:
    return json.dumps(document(profile, **context), indent=2) + "\n"


def _comments(profile: Profile, rec: Recommendation, context: dict) -> list[str]:
    """What the grant lines cannot say, for formats that allow comments."""
    lines = [f"capability-exporter run: {' '.join(context['command'])}"] if "command" in context else []
    if rec.denied:
        lines.append(f"denied: the program may need this: {' '.join(rec.denied)}")
    lines.append(f"{profile.mode} mode: {rec.note}")
    return lines


def _systemd(profile: Profile, context: dict) -> str:
    rec = profile.recommend()
    caps = " ".join(rec.needed)
    lines = [f"# {c}" for c in _comments(profile, rec, context)]
    # An empty assignment is systemd's way of saying "no capabilities at all".
    lines += [f"CapabilityBoundingSet={caps}", f"AmbientCapabilities={caps}"]
    return "\n".join(lines) + "\n"


def kubernetes_names(names: list[str]) -> list[str]:
    """Kubernetes (and Docker) spell capabilities without the CAP_ prefix."""
    return [n.removeprefix("CAP_") for n in names]


def _kubernetes(profile: Profile, context: dict) -> str:
    rec = profile.recommend()
    block = {"securityContext": {"capabilities": {"drop": ["ALL"], "add": kubernetes_names(rec.needed)}}}
    comments = [f"# {c}" for c in _comments(profile, rec, context)]
    comments.append("# Goes under a container of a Pod spec.")
    return "\n".join(comments) + "\n" + yaml.safe_dump(block, sort_keys=False)


def _docker(profile: Profile, context: dict) -> str:
    rec = profile.recommend()
    return " ".join(["--cap-drop=ALL"] + [f"--cap-add={n}" for n in kubernetes_names(rec.needed)]) + "\n"


RENDERERS: dict[str, Callable[[Profile, dict], str]] = {
    "text": _text, "json": _json, "systemd": _systemd, "kubernetes": _kubernetes, "docker": _docker,
}
