"""What a workload was granted, denied and held across every node, as PromQL, and the profile made of the answers."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from exporter.core import profile

RECORDED = "workload:capability_granted_checks_total:sum"  # deploy/prometheus/alerts.yml's recording rule
SOURCES = ("raw", "recorded")
# Prometheus's duration units, longest first, in seconds.
UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
MATCHER = re.compile(r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*""")
# Labels that the rules drop: a workload is not told apart by them.
PER_SERIES = "uid, cgroup, audit, insetid"
WORKLOAD_LABELS = ("comm", "process", "unit", "container", "container_name")
# Subqueries take at most this many steps, and steps no shorter than this.
MAX_STEPS = 10000
MIN_STEP = 15.0
# noaudit values of probe_info, the worst first: the profile says the worst any node had.
NOAUDIT_ORDER = ("indistinguishable", "unknown", "included", "excluded")
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def parse_duration(text: str) -> float:
    """A Prometheus duration (30d, 1h30m, 90s) in seconds; ValueError saying why not."""
    match = DURATION.fullmatch(text)
    if not text or not match:
        raise ValueError(f"must be a Prometheus duration such as 30d, 12h or 1h30m (got {text!r})")
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), UNITS.values()) if n)
    if seconds <= 0:
        raise ValueError(f"must be above zero (got {text!r})")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration, whole milliseconds, largest units first: 2592000 -> 30d."""
    rest, text = round(seconds * 1000), ""
    for unit, size in list(UNITS.items())[2:]:  # days at most: 30d, not 4w2d
        count, rest = divmod(rest, round(size * 1000))
        if count:
            text += f"{count}{unit}"
    return text or "0s"


def quote(value: str) -> str:
    """A PromQL string literal."""
    return json.dumps(value, ensure_ascii=False)


def parse_matchers(text: str) -> tuple[str, ...]:
    """A raw label matcher list (unit=~"web.*", job="node"), one matcher each; ValueError if it is not one."""
    matchers, at = [], 0
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    while at < len(body):
        match = MATCHER.match(body, at)
        if not match:
            raise ValueError(f"not a list of label matchers such as unit=\"web.service\" (at {body[at:at + 20]!r})")
        matchers.append(f"{match[1]}{match[2]}{match[3]}")
        at = match.end()
        if at < len(body):
            if body[at] != ",":
                raise ValueError(f"label matchers are separated by commas (at {body[at:at + 20]!r})")
            at += 1
    if not matchers:
        raise ValueError("an empty list of label matchers")
    return tuple(matchers)


@dataclass(frozen=True)
class Selector:
    """The workload's label matchers, as PromQL."""

    matchers: tuple[str, ...]

    @classmethod
    def of(cls, unit: str = "", container: str = "", process: str = "", comm: str = "",
           match: str = "") -> "Selector":
        """From recommend's flags; a container is its 64-hex id or its runtime's name."""
        container_key = "container" if CONTAINER_ID.fullmatch(container) else "container_name"
        chosen = [f"{key}={quote(value)}" for key, value in
                  (("unit", unit), (container_key, container), ("process", process), ("comm", comm)) if value]
        return cls(tuple(chosen) + (parse_matchers(match) if match else ()))

    def labels(self) -> list[str]:
        """The workload labels it names (a container's id or name, a unit...)."""
        names = [MATCHER.match(m)[1] for m in self.matchers]
        return [n for n in WORKLOAD_LABELS if n in names]

    def braces(self, *extra: str) -> str:
        return "{" + ", ".join(self.matchers + extra) + "}"

    def __str__(self) -> str:
        return self.braces()


@dataclass(frozen=True)
class Window:
    """The range asked for, ending at a time, and the step its subqueries read series at."""

    seconds: float
    end: float

    @property
    def step(self) -> float:
        return max(MIN_STEP, math.ceil(self.seconds / MAX_STEPS))

    @property
    def start(self) -> float:
        return self.end - self.seconds

    def range(self) -> str:
        return format_duration(self.seconds)

    def subquery(self, expr: str) -> str:
        return f"({expr})[{self.range()}:{format_duration(self.step)}]"


def granted_series(selector: Selector, source: str) -> Callable[[str], str]:
    """offset -> the granted audited checks of the workload's series, per node (and comm)."""
    if source == "recorded":
        return lambda offset: f"{RECORDED}{selector}{offset}"
    audited = selector.braces('audit!="false"')
    return lambda offset: (f"sum without ({PER_SERIES}) (capability_checks_total{audited}{offset}) - "
                           f"sum without ({PER_SERIES}) (capability_denials_total{audited}{offset})")


def denied_series(selector: Selector) -> Callable[[str], str]:
    audited = selector.braces('audit!="false"')
    return lambda offset: f"sum without ({PER_SERIES}) (capability_denials_total{audited}{offset})"


def counted_in(window: Window, series: Callable[[str], str]) -> str:
    """Per node, comm and capability: how much the series grew in the window. A series that first
    appears in the window counts whole: one used once starts at 1 and never grows, which
    increase() alone would miss (CapabilityFirstUse reads its rule the same way)."""
    sub = window.subquery(series(""))
    before = series(f" offset {window.range()}")
    # The subquery's last step may be before the newest samples: new series as they are now, too.
    return (f"sum by (instance, comm, capability) ((increase({sub}) and ({before})) "
            f"or ((max_over_time({sub}) or ({series('')})) unless ({before})))")


@dataclass(frozen=True)
class Queries:
    """Every query one recommendation asks, by what it answers."""

    granted: str
    denied: str
    unused: str
    held_known: Optional[str]
    probes: str
    audit_labelled: str
    oldest: str
    resets: str


def queries(selector: Selector, window: Window, source: str = "raw") -> Queries:
    r = window.range()
    named = ", ".join(f'{name}!=""' for name in selector.labels())
    audit_true = selector.braces('audit="true"')
    return Queries(
        granted=counted_in(window, granted_series(selector, source)),
        denied=counted_in(window, denied_series(selector)),
        unused=f"max by (instance, capability) (max_over_time(capability_unused{selector}[{r}]))",
        # Whether the nodes keep capability_unused by a label the selector names: if not, what
        # the workload holds is not known (rather than all used).
        held_known=f"group by (instance) (max_over_time(capability_unused{{{named}}}[{r}]))" if named else None,
        probes=f"max by (instance, mode, noaudit) (max_over_time(capability_exporter_probe_info[{r}]))",
        audit_labelled=f"group by (instance) (last_over_time(capability_checks_total{audit_true}[{r}]))",
        oldest=(f"min by (instance) (min_over_time(timestamp(capability_exporter_build_info)[{r}:{format_duration(window.step)}])"
                " or timestamp(capability_exporter_build_info))"),
        resets=f"max by (instance) (resets({window.subquery('capability_checks_total' + str(selector))}))",
    )


Sample = tuple[dict[str, str], float]


@dataclass
class Instance:
    """One node's exporter, as probe_info and its series describe it."""

    instance: str
    mode: str = "unknown"
    noaudit: str = "unknown"
    granted: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    held_known: bool = False
    oldest: Optional[float] = None
    resets: int = 0

    def audited(self) -> Optional[bool]:
        return True if self.noaudit in ("excluded", "included") else None


@dataclass(frozen=True)
class Answers:
    granted: list[Sample]
    denied: list[Sample]
    unused: list[Sample]
    held_known: list[Sample]
    probes: list[Sample]
    audit_labelled: list[Sample]
    oldest: list[Sample]
    resets: list[Sample]


def merge(answers: Answers, window: Window) -> tuple[profile.Profile, list[Instance]]:
    """The workload's profile over every node, and the nodes that contributed (name order)."""
    counts: dict[tuple[str, str, str], list[int]] = {}
    for index, samples in enumerate((answers.granted, answers.denied)):
        for labels, value in samples:
            if round(value) > 0:
                key = (labels.get("instance", ""), labels.get("comm", ""), labels.get("capability", ""))
                counts.setdefault(key, [0, 0])[index] += round(value)
    instances = {name: Instance(name) for name in sorted({key[0] for key in counts}
                                                       | {l.get("instance", "") for l, _ in answers.unused})}
    _describe(instances, answers)
    checks: dict[tuple[str, str, Optional[bool]], list[int]] = {}
    for (name, comm, cap), (granted, denied) in counts.items():
        node = instances[name]
        node.granted += [cap] if granted else []
        node.denied += [cap] if denied else []
        total = checks.setdefault((comm, cap, node.audited()), [0, 0])
        total[0] += granted
        total[1] += denied
    held = None
    if any(node.held_known for node in instances.values()):
        held = {l["capability"] for l, v in answers.unused if v >= 1}
        held |= {cap for node in instances.values() for cap in node.granted}
    result = profile.Profile(
        mode=", ".join(sorted({node.mode for node in instances.values()})) or "unknown",
        noaudit=min((node.noaudit for node in instances.values()), key=NOAUDIT_ORDER.index, default="unknown"),
        checks=[profile.CheckCount(comm, cap, audited, granted, denied)
                for (comm, cap, audited), (granted, denied) in checks.items()],
        held=profile.by_number(held) if held is not None else None,
    )
    for node in instances.values():
        node.granted, node.denied = profile.by_number(set(node.granted)), profile.by_number(set(node.denied))
    return result, list(instances.values())


def _describe(instances: dict[str, Instance], answers: Answers) -> None:
    """Mode, noaudit, history and resets of each node, from its own series."""
    for labels, _ in answers.probes:
        node = instances.get(labels.get("instance", ""))
        noaudit = _known(labels.get("noaudit", ""))
        # A node whose mode changed in the range: the worst it was.
        if node and (node.mode == "unknown" or NOAUDIT_ORDER.index(noaudit) < NOAUDIT_ORDER.index(node.noaudit)):
            node.mode, node.noaudit = labels.get("mode", "unknown"), noaudit
    labelled = {labels.get("instance") for labels, _ in answers.audit_labelled}
    for node in instances.values():
        if node.noaudit == "included" and node.instance not in labelled:
            node.noaudit = "unknown"  # non-audited checks counted, and no audit label to leave them out by
    def of(samples: list[Sample]) -> list[tuple[Instance, float]]:
        return [(instances[l["instance"]], value) for l, value in samples if l.get("instance") in instances]

    for node, _ in of(answers.held_known):
        node.held_known = True
    for node, value in of(answers.oldest):
        node.oldest = value
    for node, value in of(answers.resets):
        node.resets = round(value)


def _known(noaudit: str) -> str:
    return noaudit if noaudit in NOAUDIT_ORDER else "unknown"


def notes(instances: list[Instance], window: Window) -> list[str]:
    """What the recommendation cannot see, each said once: missing history, counter resets, audit."""
    lines = []
    late = [node for node in instances if node.oldest is None or node.oldest > window.start + 2 * window.step + 300]
    if late:
        oldest = min((node.oldest for node in late if node.oldest is not None), default=None)
        since = f"the oldest sample is {format_duration(window.end - oldest)} old" if oldest else "no sample of them"
        lines.append(f"the range ({window.range()}) reaches before the oldest sample of "
                     f"{', '.join(n.instance for n in late)} ({since}): use before then is not seen")
    reset = [node.instance for node in instances if node.resets]
    if reset:
        lines.append(f"counters were reset (an exporter restarted) on {', '.join(reset)}: checks between a "
                     "restart and the scrape before it are not seen")
    blind = [node.instance for node in instances if node.audited() is None]
    if blind:
        lines.append(f"{', '.join(blind)} cannot tell audited from non-audited checks: the needed set may be too large")
    unknown_held = [node.instance for node in instances if not node.held_known]
    if unknown_held:
        lines.append(f"{', '.join(unknown_held)} keep no capability_unused by the selector's labels: what the "
                     "workload holds there is not known")
    return lines


def context(url: str, selector: Selector, window: Window, source: str, instances: list[Instance]) -> dict:
    """The report's "prometheus" section: where it comes from, and each node's part."""
    return {
        "url": url, "selector": str(selector), "range": window.range(), "source": source,
        "start": window.start, "end": window.end,
        "instances": [{"instance": n.instance, "mode": n.mode, "noaudit": n.noaudit, "granted": n.granted,
                       "denied": n.denied, "held_known": n.held_known} for n in instances],
        "notes": notes(instances, window),
    }
