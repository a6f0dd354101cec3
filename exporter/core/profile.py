"""Least-privilege profiles: what programs were granted, denied and hold, and what to grant them."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional

import yaml

from exporter.config import WORKLOAD_KEYS
from exporter.core import capabilities, changes, reasons, syscalls
from exporter.core.verification import Verification
from exporter.ebpf.layouts import CAP_OPT_NOAUDIT, decode_comm
from exporter.ebpf.maps import BpfMap, total

FORMATS = ("text", "json", "systemd", "kubernetes", "docker")
# 2: checks name the kernel function that asked and the syscall; recommendations say what is
# granted but not needed, why each capability was asked for, and how they were verified.
SCHEMA_VERSION = 2
# What each noaudit value (probe_info's, "inferred" or "unknown") means for a recommendation:
# one short sentence, said once per report.
NOAUDIT_NOTES = {
    "excluded": "non-audited checks are not counted, so none enter the recommendation",
    "included": "non-audited checks never enter the recommendation",
    "unknown": "audited and non-audited checks were not told apart: the needed set may be too large",
    "inferred": "audit is inferred from the kernel caller; non-audited checks never enter the recommendation",
    "indistinguishable": "the tracepoint mode cannot tell audited from non-audited checks: the needed set "
                         "may be too large",
}


@dataclass(frozen=True)
class CheckCount:
    """Checks of one capability by one comm; audited is None where the mode cannot tell.

    caller (the kernel function that asked) and syscall are None where nothing asked why
    (the daemon's /profiles), "-" where the kernel could not say."""

    comm: str
    capability: str
    audited: Optional[bool]
    granted: int
    denied: int
    caller: Optional[str] = None
    syscall: Optional[str] = None

    @property
    def reason(self) -> Optional[str]:
        """"fchownat: chown_common" style: the syscall, then the function that asked."""
        if self.caller is None:
            return None
        return f"{self.syscall}: {self.caller}"


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
class NotNeeded:
    """A capability the command was granted but does not need, and how that is known."""

    capability: str
    why: str
    reasons: list[str]


@dataclass(frozen=True)
class Recommendation:
    needed: list[str]
    denied: list[str]
    unused: list[str]
    note: str
    not_needed: list[NotNeeded] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # capability -> its checks' reasons
    verified: Optional[bool] = None  # None: not tried (no --verify)


@dataclass
class Profile:
    """Everything one recommendation is made from: one command's tree, or one comm's history."""

    mode: str
    noaudit: str  # a probe_info noaudit value, or "unknown"
    checks: list[CheckCount] = field(default_factory=list)
    changes: list[ChangeCount] = field(default_factory=list)
    held: Optional[list[str]] = None  # the permitted set, or the union of those seen; None: not seen
    verification: Optional[Verification] = None

    def granted(self) -> list[str]:
        """Every capability granted on an audited check: what a recommendation is cut down from."""
        return by_number({c.capability for c in self.checks if c.audited is not False and c.granted})

    def recommend(self) -> Recommendation:
        counted = [c for c in self.checks if c.audited is not False]
        probes = self._probes_only(counted)
        needed = [cap for cap in self.granted() if cap not in probes]
        not_needed = [NotNeeded(cap, why, self._reasons(cap)) for cap, why in probes.items()]
        verification = self.verification
        if verification is not None and verification.verified:
            needed = verification.needed
            not_needed = [NotNeeded(cap, verification.why_not_needed(cap), self._reasons(cap))
                          for cap in self.granted() if cap not in needed]
        denied = by_number({c.capability for c in counted if c.denied} - set(self.granted()))
        unused = by_number(set(self.held) - set(needed)) if self.held is not None else []
        return Recommendation(
            needed, denied, unused, NOAUDIT_NOTES.get(self.noaudit, ""), not_needed,
            {cap: self._reasons(cap) for cap in needed if self._reasons(cap)},
            None if verification is None else verification.verified,
        )

    def _probes_only(self, counted: list[CheckCount]) -> dict[str, str]:
        """Capabilities granted only at known probe call sites, with why each is not needed."""
        probes: dict[str, str] = {}
        needed_elsewhere = set()
        for check in (c for c in counted if c.granted):
            site = reasons.probe_site(check.capability, check.caller)
            if site is None or (site.needed_after and self._made(site.needed_after)):
                needed_elsewhere.add(check.capability)
            else:
                probes[check.capability] = f"a probe: {site.why}"
        return {cap: why for cap, why in probes.items() if cap not in needed_elsewhere}

    def _made(self, change: tuple[str, str, str]) -> bool:
        return any((c.syscall, c.set, c.direction) == change for c in self.changes)

    def _reasons(self, capability: str) -> list[str]:
        """Where the granted audited checks of one capability came from, most frequent first."""
        counts: dict[str, int] = {}
        for c in self.checks:
            if c.capability == capability and c.audited is not False and c.granted and c.reason:
                counts[c.reason] = counts.get(c.reason, 0) + c.granted
        return sorted(counts, key=lambda r: (-counts[r], r))


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


def read_checks(checks: BpfMap, noaudit: str,
                caller_of: Optional[Callable[[int], str]] = None) -> list[CheckCount]:
    """The checks map summed over CPUs and over the labels a profile does not use (uid, cgroup).

    caller_of(kernel stack id): the function that asked, where the keys carry reasons (run)."""
    return read_checks_by(checks, noaudit, lambda key: "", caller_of).get("", [])


def read_checks_by(checks: BpfMap, noaudit: str, workload_of: Callable[[Any], str],
                   caller_of: Optional[Callable[[int], str]] = None) -> dict[str, list[CheckCount]]:
    """read_checks per workload: workload_of(key) names the workload of a checks map key."""
    audited = audited_by(noaudit)
    totals: dict[tuple, tuple[int, int]] = {}
    for key, values in checks.items():
        value = total(values)
        index = (workload_of(key), decode_comm(key.comm), capabilities.name(key.cap), audited(key.opts))
        why = (caller_of(key.kernel_stack), syscalls.name(key.syscall)) if caller_of else (None, None)
        granted, denied = totals.get(index + why, (0, 0))
        totals[index + why] = (granted + value.checks - value.denials, denied + value.denials)
    grouped: dict[str, list[CheckCount]] = {}
    for (workload, *index), counts in totals.items():
        grouped.setdefault(workload, []).append(CheckCount(*index[:3], *counts, *index[3:]))
    return grouped


def read_changes(change_map: BpfMap) -> list[ChangeCount]:
    """The changes map's (before, after) transitions as per-capability counts."""
    return read_changes_by(change_map, lambda key: "").get("", [])


def read_changes_by(change_map: BpfMap, workload_of: Callable[[Any], str]) -> dict[str, list[ChangeCount]]:
    """read_changes per workload: workload_of(key) names the workload of a changes map key."""
    totals: dict[tuple, int] = {}
    for key, values in change_map.items():
        count = total(values)
        for change in changes.expand(key.syscall, key.set, key.before, key.after):
            index = (workload_of(key), decode_comm(key.comm), *change)
            totals[index] = totals.get(index, 0) + count
    grouped: dict[str, list[ChangeCount]] = {}
    for (workload, *index), count in sorted(totals.items()):
        grouped.setdefault(workload, []).append(ChangeCount(*index, count))
    return grouped


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
        "recommendation": {
            "needed": rec.needed, "denied": rec.denied, "unused": rec.unused, "note": rec.note,
            "not_needed": [asdict(n) for n in rec.not_needed], "reasons": rec.reasons, "verified": rec.verified,
        },
        "verification": profile.verification.document() if profile.verification else None,
    }


def from_document(doc: dict) -> Profile:
    """The profile a document was made from: document(from_document(d), **context) == d."""
    return Profile(
        mode=doc["mode"], noaudit=doc["noaudit"],
        checks=[CheckCount(**c) for c in doc["checks"]],
        changes=[ChangeCount(**c) for c in doc["changes"]],
        held=doc["held"],
        verification=Verification.from_document(doc["verification"]) if doc.get("verification") else None,
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
    lines += [f"Workload: {key} {context[key]}" for key in WORKLOAD_KEYS if key in context]
    lines.append(f"Capability checks ({profile.mode} mode):")
    with_reasons = any(c.caller is not None for c in profile.checks)
    header = ("CAPABILITY", "COMM", "AUDITED") + (("SYSCALL", "ASKED BY") if with_reasons else ()) + ("GRANTED", "DENIED")
    lines += _table(header, [(c.capability, c.comm, _yes_no(c.audited))
                             + ((c.syscall or "-", c.caller or "-") if with_reasons else ())
                             + (str(c.granted), str(c.denied))
                             for c in sorted(profile.checks, key=_check_order)])
    if profile.changes:
        lines += ["", "Capability changes:"]
        lines += _table(("COMM", "SYSCALL", "SET", "CHANGE", "COUNT"), change_rows(profile.changes))
    if profile.verification is not None:
        lines += ["", *profile.verification.text()]
    lines += ["", f"Recommendation ({_verified_phrase(rec)}):"]
    lines += _field("needed:", _names(rec.needed))
    for cap in rec.needed:
        lines += _field("", f"{cap}: {'; '.join(rec.reasons.get(cap, [])) or 'asked by -'}")
    for item in rec.not_needed:
        lines += _field("granted but not needed:", f"{item.capability}: {item.why}"
                        + (f" (asked in {'; '.join(item.reasons)})" if item.reasons else ""))
    lines += _field("denied (may be needed):", _names(rec.denied))
    lines += _field("held but never used:", _names(rec.unused) if profile.held is not None else "unknown")
    lines += _field("note:", f"{profile.mode} mode: {rec.note}")
    return "\n".join(lines) + "\n"


def _field(label: str, value: str) -> list[str]:
    return textwrap.wrap(value, width=100, initial_indent=f"  {label:<24} ", subsequent_indent=" " * 27)


def _verified_phrase(rec: Recommendation) -> str:
    if rec.verified is None:
        return "not verified: --verify re-runs the command to prove it"
    return "verified by re-running" if rec.verified else "NOT verified: see Verification"


def change_rows(change_counts: list[ChangeCount]) -> list[tuple[str, ...]]:
    """One row per set a syscall changed, naming every capability it gained or lost."""
    grouped: dict[tuple, list[str]] = {}
    for c in change_counts:
        grouped.setdefault((c.comm, c.syscall, c.set, c.direction, c.count), []).append(c.capability)
    return [(comm, syscall, set_name, f"{direction} {_capability_list(names)}", str(count))
            for (comm, syscall, set_name, direction, count), names in grouped.items()]


def _capability_list(names: list[str]) -> str:
    """Names, or "all but X" where that is shorter: a root setuid() loses every capability."""
    known = set(capabilities.NAMES)
    rest = known - set(names)
    if len(names) > 8 and set(names) <= known and len(rest) < len(names):
        return f"{len(names)}: all but {' '.join(by_number(rest))}" if rest else f"all {len(names)}"
    return " ".join(by_number(names))


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
    """What the grant lines cannot say, for formats that allow comments: one line per capability."""
    lines = [f"capability-exporter run: {' '.join(context['command'])}"] if "command" in context else []
    lines += [f"capability-exporter /profiles: {key} {context[key]}" for key in WORKLOAD_KEYS if key in context]
    lines.append(_verified_phrase(rec))
    for cap in rec.needed:
        lines.append(f"{cap}: {'; '.join(rec.reasons.get(cap, [])) or 'asked by -'}")
    for item in rec.not_needed:
        lines.append(f"not granted: {item.capability}: {item.why}")
    if rec.denied:
        lines.append(f"denied (may be needed): {' '.join(rec.denied)}")
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
    flags = " ".join(["--cap-drop=ALL"] + [f"--cap-add={n}" for n in kubernetes_names(rec.needed)])
    return f"# {_verified_phrase(rec)}\n{flags}\n"


RENDERERS: dict[str, Callable[[Profile, dict], str]] = {
    "text": _text, "json": _json, "systemd": _systemd, "kubernetes": _kubernetes, "docker": _docker,
}
