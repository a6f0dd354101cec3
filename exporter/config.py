"""The YAML config: typed dataclasses, validated with every problem reported at once."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import yaml

MODES = ("auto", "fexit", "kprobe", "tracepoint")
# What capability_unused and /profiles are kept per (unused.by), and the /profiles parameters.
WORKLOAD_KEYS = ("comm", "process", "unit", "container")
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid" to the kernel
MAX_MAP_ENTRIES = 1 << 24


class ConfigError(Exception):
    """A config that cannot be used; carries every problem found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _at_least(low: int, high: Optional[int] = None) -> Callable[[int], Optional[str]]:
    def check(value: int) -> Optional[str]:
        if value < low:
            return f"must be at least {low} (got {value})"
        if high is not None and value > high:
            return f"must be at most {high} (got {value})"
        return None

    return check


def one_of(choices: Iterable[str]) -> Callable[[str], Optional[str]]:
    """A field check: the value is one of choices (any iterable of names, a dict's keys too)."""
    names = tuple(choices)

    def check(value: str) -> Optional[str]:
        if value not in names:
            return f"must be one of {', '.join(names)} (got {value!r})"
        return None

    return check


def _each(check: Callable[[Any], Optional[str]]) -> Callable[[tuple], Optional[str]]:
    def check_all(values: tuple) -> Optional[str]:
        problems = [f"item {i}: {p}" for i, v in enumerate(values) if (p := check(v))]
        return "; ".join(problems) or None

    return check_all


def _regex(pattern: str) -> Optional[str]:
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as err:
        return f"bad regular expression {pattern!r}: {err}"
    return None


def _cgroup_path(path: str) -> Optional[str]:
    if path and not path.startswith("/"):
        return f"must be a cgroup v2 path starting with '/' (got {path!r})"
    return None


def _absolute_path(path: str) -> Optional[str]:
    if not path.startswith("/"):
        return f"must be an absolute path (got {path!r})"
    return None


def _controller_name(name: str) -> Optional[str]:
    if name and not re.fullmatch(r"[a-z_]+", name):
        return f"must be a cgroup v1 controller name such as memory or cpu (got {name!r})"
    return None


def checked(default: Any, check: Callable[[Any], Optional[str]]) -> Any:
    """A dataclass field whose value build() passes through check (None, or the problem)."""
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class ProbeConfig:
    mode: str = checked("auto", one_of(MODES))
    count_noaudit: bool = False
    bpf_stats: bool = False


@dataclass(frozen=True)
class MapsConfig:
    checks_max_entries: int = checked(10240, _at_least(1, MAX_MAP_ENTRIES))
    inflight_max_entries: int = checked(10240, _at_least(1, MAX_MAP_ENTRIES))


@dataclass(frozen=True)
class FiltersConfig:
    comm_include: tuple[str, ...] = checked((), _each(_regex))
    comm_exclude: tuple[str, ...] = checked((), _each(_regex))
    uids: tuple[int, ...] = checked((), _each(_at_least(0, MAX_UID)))
    pids: tuple[int, ...] = checked((), _each(_at_least(1, 2**22)))
    cgroup_prefix: str = checked("", _cgroup_path)


@dataclass(frozen=True)
class LabelsConfig:
    uid: bool = False
    cgroup: bool = False
    unit: bool = False
    container: bool = False
    pod: bool = False
    opts: bool = False
    process: bool = False
    container_name: bool = False
    pod_name: bool = False
    namespace: bool = False
    cgroup_v1_controller: str = checked("", _controller_name)
    # Where the host's / is, for the container runtimes' state (exporter/core/runtimes.py).
    container_state_root: str = checked("/", _absolute_path)

    @property
    def needs_cgroup_id(self) -> bool:
        return (self.cgroup or self.unit or self.container or self.pod
                or self.container_name or self.pod_name or self.namespace)


@dataclass(frozen=True)
class ChangesConfig:
    enabled: bool = True
    snapshots_max_entries: int = checked(10240, _at_least(1, MAX_MAP_ENTRIES))
    changes_max_entries: int = checked(10240, _at_least(1, MAX_MAP_ENTRIES))


@dataclass(frozen=True)
class UnusedConfig:
    enabled: bool = True
    by: str = checked("comm", one_of(WORKLOAD_KEYS))
    comms: tuple[str, ...] = checked((), _each(_regex))
    max_comms: int = checked(100, _at_least(1, 1 << 20))
    refresh_seconds: int = checked(10, _at_least(0, 3600))


@dataclass(frozen=True)
class Config:
    probe: ProbeConfig = ProbeConfig()
    changes: ChangesConfig = ChangesConfig()
    unused: UnusedConfig = UnusedConfig()
    maps: MapsConfig = MapsConfig()
    filters: FiltersConfig = FiltersConfig()
    labels: LabelsConfig = LabelsConfig()

    @property
    def key_process(self) -> bool:
        """Whether checks are keyed by their process in the kernel: for a label, or for unused.by."""
        return self.labels.process or self.unused.by == "process"

    @property
    def key_cgroup(self) -> bool:
        """Whether checks are keyed by cgroup in the kernel: for a label, or for unused.by."""
        return self.labels.needs_cgroup_id or self.unused.by in ("unit", "container")


def load(path: str) -> Config:
    """Read and validate a config file; raise ConfigError with every problem."""
    data = load_yaml(path)
    return build(Config, {} if data is None else data, path)


def parse(text: str, source: str = "<config>") -> Config:
    data = parse_yaml(text.encode(), source)
    return build(Config, {} if data is None else data, source)


def build(cls: type, data: Any, source: str) -> Any:
    """A validated dataclass of type cls from parsed YAML; ConfigError with every problem."""
    problems: list[str] = []
    value = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return value


MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """safe_load that also refuses duplicate keys, aliases (a billion laughs) and deep nesting."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not supported",
                                              event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: the constructor says so itself
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(data: bytes, source: str) -> Any:
    """Parsed YAML of a config file's bytes; ConfigError for anything but a small, plain, UTF-8 document."""
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(source, [f"larger than {MAX_FILE_BYTES >> 20} MiB: not a config file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(source, [f"not UTF-8 text: byte {err.start} is 0x{data[err.start]:02x}"]) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise ConfigError(source, [_yaml_problem(err)]) from None
    except (ValueError, OverflowError, RecursionError, MemoryError) as err:  # e.g. a date of month 13
        raise ConfigError(source, [f"not valid YAML: {type(err).__name__}: {str(err)[:200]}"]) from None


def load_yaml(path: str) -> Any:
    """Parsed YAML of a file; ConfigError for a file that cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigError(path, [f"cannot read the file: {err.strerror}"]) from None
    except ValueError as err:  # a NUL in the path
        raise ConfigError(path, [f"cannot read the file: {err}"]) from None
    return parse_yaml(data, path)


def _yaml_problem(err: yaml.YAMLError) -> str:
    where = getattr(err, "problem_mark", None)
    line = f" at line {where.line + 1}" if where else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"not valid YAML{line}: {problem}"


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{path or 'the top level'}: must be a mapping (got {_type_name(data)})")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            problems.append(f"{_join(path, key)}: unknown key (known here: {', '.join(fields)})")
    values = {}
    for name in [n for n in fields if n in data]:
        where = _join(path, name)
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], data[name], where, problems)
            continue
        value, problem = _convert(hints[name], data[name])
        if problem is None and "check" in fields[name].metadata:
            problem = fields[name].metadata["check"](value)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            values[name] = value
    return cls(**values)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _convert(hint: Any, value: Any) -> tuple[Any, Optional[str]]:
    if typing.get_origin(hint) is dict:
        key_type, value_type = typing.get_args(hint)
        if value is None:
            return {}, None
        if not isinstance(value, dict):
            return None, f"must be a mapping of {key_type.__name__} to {value_type.__name__} (got {_type_name(value)})"
        bad = [k for k, v in value.items() if not (_is_a(key_type, k) and _is_a(value_type, v))]
        if bad:
            return None, f"entry {bad[0]!r} must map {key_type.__name__} to {value_type.__name__}"
        return dict(value), None
    if typing.get_origin(hint) is tuple:
        item_type = typing.get_args(hint)[0]
        if value is None:
            return (), None
        if not isinstance(value, list):
            return None, f"must be a list of {item_type.__name__} (got {_type_name(value)})"
        bad = [i for i, v in enumerate(value) if not _is_a(item_type, v)]
        if bad:
            return None, f"item {bad[0]} must be {item_type.__name__} (got {_type_name(value[bad[0]])})"
        return tuple(value), None
    if not _is_a(hint, value):
        return None, f"must be {hint.__name__} (got {_type_name(value)})"
    return value, None


def _is_a(kind: type, value: Any) -> bool:
    # YAML's true/false are ints to Python; they are not numbers here.
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}
    if isinstance(value, bool):
        return f"a boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return names.get(type(value), type(value).__name__)


def with_probe(config: Config, **changes: Any) -> Config:
    """The config with probe settings from flags (--probe.mode, --bpf.stats) over the file's."""
    return dataclasses.replace(config, probe=dataclasses.replace(config.probe, **changes))


def comm_filter(filters: FiltersConfig, allowed: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """A predicate that keeps a comm the include/exclude regexes, and allowed if given, let through.

    The regexes are anchored at both ends, as in Prometheus relabelling.
    """
    includes = [[re.compile(p) for p in patterns] for patterns in (filters.comm_include, allowed) if patterns]
    exclude = [re.compile(p) for p in filters.comm_exclude]

    def keep(comm: str) -> bool:
        if not all(any(p.fullmatch(comm) for p in include) for include in includes):
            return False
        return not any(p.fullmatch(comm) for p in exclude)

    return keep
