"""The Prometheus collector: reads the BPF maps at scrape time and yields fresh metric families."""

from __future__ import annotations

import functools
import logging
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import Config, FiltersConfig, LabelsConfig, comm_filter
from exporter.core import capabilities, changes, containers, proc_status, profile, runtimes, units, workloads
from exporter.core.cgroups import UNKNOWN, CgroupNames
from exporter.core.held import HeldCapabilities
from exporter.core.runtimes import ContainerNames
from exporter.ebpf import progstats
from exporter.ebpf.layouts import CAP_OPT_INSETID, CAP_OPT_NOAUDIT, CHANGE_DROP_SLOTS, DROP_SLOTS, ChangeKey, CheckKey, decode_comm
from exporter.ebpf.maps import BpfMap
from exporter.serve.exposition import RenderedFamily, label_text

log = logging.getLogger(__name__)

PREFIX = "capability_exporter_"


@dataclass(frozen=True)
class ProbeInfo:
    """What the exporter attached to and what it can see, for probe_info."""

    mode: str
    noaudit: str  # excluded | included | indistinguishable

    @classmethod
    def of(cls, mode: str, count_noaudit: bool) -> "ProbeInfo":
        if mode == "tracepoint":
            return cls(mode, "indistinguishable")
        return cls(mode, "included" if count_noaudit else "excluded")


@dataclass
class UnusedSettings:
    """capability_unused: what live processes hold per workload (unused.by), which workloads may
    have series, and how many."""

    held: HeldCapabilities
    keep: Callable[[str], bool]  # a workload's name through unused.comms (and, by comm, the comm filters)
    max_workloads: int
    by: str = "comm"
    names: Optional[ContainerNames] = None  # shared with the collector's labels

    @classmethod
    def of(cls, config: Config, cgroup_controller: str = "") -> Optional["UnusedSettings"]:
        unused = config.unused
        if not unused.enabled:
            return None
        by = unused.by
        # By comm the comm filters apply to the workload's name; by anything else, to checks only.
        keep = comm_filter(config.filters if by == "comm" else FiltersConfig(), unused.comms)
        scan = functools.partial(proc_status.processes,
                                 cgroup=cgroup_controller if workloads.needs_cgroup(by) else None)
        names = ContainerNames(config.labels.container_state_root)
        held = HeldCapabilities(unused.refresh_seconds, scan=scan, background=True,
                                workload_of=functools.partial(workloads.of_process, by))
        return cls(held, keep, unused.max_comms, by, names)


@dataclass
class _Scrape:
    """What one scrape learns on its way: map sizes, and what each workload was granted."""

    entries: dict[str, int] = field(default_factory=dict)
    granted: dict[str, int] = field(default_factory=dict)  # workload -> mask of capabilities granted


class _Series(NamedTuple):
    """What a checks map key stands for, worked out once and kept across scrapes.

    A tuple of strings and ints, which the garbage collector stops tracking: a cache of 50k of
    these adds nothing to the collections that each scrape's allocations set off. It is kept
    for every map key, so it holds only what a scrape needs (about 300 bytes a key with the
    key's bytes and the label text): the label values are read back from the text where asked."""

    text: str  # the label text of its series, as /metrics writes it
    workload: str  # its name under unused.by ("" without capability_unused, which alone needs it)
    grant: int  # 1 << cap if a granted check under this key was audited (counts as a use), else 0
    container: str = ""  # the container id, if the key is a container's and its series say so
    cgroup_id: int = 0  # its cgroup, if it has a container


_FILTERED = _Series("", "", 0)  # a key whose comm the filters leave out
# 1 << cap for each capability, made once: an int above 256 is an object of its own per key.
_GRANTS = tuple(1 << cap for cap in range(64))
# The labels worked out from a key's cgroup, in label order.
CGROUP_LABELS = ("cgroup", "unit", "container", "pod", "container_name", "pod_name", "namespace")
# Label texts kept per map key, as a multiple of the map's capacity; past it the cache starts anew.
_CACHE_FACTOR = 2


class CapabilityCollector(Collector):
    """Capability checks and denials per comm and capability, plus the exporter's own health."""

    def __init__(
        self,
        maps: dict[str, BpfMap],
        programs: dict[str, int],
        probe: ProbeInfo,
        labels: LabelsConfig,
        keep_comm: Callable[[str], bool],
        cgroup_names: CgroupNames,
        stats_enabled: Callable[[], bool] = progstats.enabled,
        read_program_stats: Callable[[int], dict[str, int]] = progstats.read,
        unused: Optional[UnusedSettings] = None,
    ):
        self.maps = maps
        self.programs = programs
        self.probe = probe
        self.labels = labels
        self.keep_comm = keep_comm
        self.cgroup_names = cgroup_names
        self.stats_enabled = stats_enabled
        self.read_program_stats = read_program_stats
        self.unused = unused
        self._unused_dropped = 0
        self._lock = threading.Lock()  # scrapes run in parallel threads
        self._series_cache: dict[bytes, _Series] = {}
        self._unused_texts: dict[tuple[str, int], str] = {}
        self.label_names = ["comm", "capability"] + [
            n for n in ("process", "uid", *CGROUP_LABELS) if getattr(labels, n)
        ]
        self._wants_names = labels.container_name or labels.pod_name or labels.namespace
        if labels.opts:
            self.label_names += ["audit", "insetid"]
        self.by = unused.by if unused is not None else "comm"
        self._needs_cgroup = labels.needs_cgroup_id or workloads.needs_cgroup(self.by)
        self.container_names = (unused.names if unused is not None and unused.names is not None
                                else ContainerNames(labels.container_state_root))
        self._gone_cgroups: set[int] = set()  # of removed containers: cgroup ids are never reused
        # Only where its own series name the container can a removed container's be dropped: in a
        # series it shares with others (a comm's, a pod's) the count would go down, which
        # Prometheus reads as a counter reset.
        self._forget_gone = labels.container or labels.cgroup

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        families: list[Metric] = list(self._info())
        read_ok = GaugeMetricFamily(
            PREFIX + "bpf_map_read_success", "Whether the last read of a BPF map succeeded (1) or not (0).", labels=["map"]
        )
        sections = {"checks": self._checks, "drops": self._drops, "changes": self._changes}
        scrape = _Scrape()  # per scrape: scrapes may run concurrently
        for name in [n for n in sections if n in self.maps]:
            section = sections[name]
            try:
                families.extend(section(scrape))
                read_ok.add_metric([name], 1)
            except OSError as err:
                log.error("reading BPF map %s failed: %s", name, err)
                read_ok.add_metric([name], 0)
        families.append(read_ok)
        families.extend(self._fill(scrape.entries))
        if self.unused is not None and "checks" in scrape.entries:
            families.extend(self._unused(scrape.granted))
        families.extend(self._programs())
        yield from families
        yield GaugeMetricFamily(
            PREFIX + "scrape_duration_seconds",
            "How long reading the BPF maps and programs took for this scrape.",
            value=time.perf_counter() - start,
        )

    def _info(self) -> Iterable[Metric]:
        build = GaugeMetricFamily(
            PREFIX + "build_info", "The exporter's version, as labels; always 1.", labels=["version", "pythonversion"]
        )
        build.add_metric([__version__, platform.python_version()], 1)
        probe = GaugeMetricFamily(
            PREFIX + "probe_info",
            "The attach mode in use; noaudit says whether non-audited checks are excluded, included, "
            "or indistinguishable from audited ones in this mode. Always 1.",
            labels=["probe", "mode", "noaudit"],
        )
        probe.add_metric(["cap_capable", self.probe.mode, self.probe.noaudit], 1)
        return [build, probe]

    def _checks(self, scrape: _Scrape) -> Iterable[Metric]:
        """Per series, the checks and denials summed over CPUs and over the keys that share its labels."""
        self.cgroup_names.new_scrape()
        checks_map = self.maps["checks"]
        size, words = checks_map.key_size, checks_map.words
        cache = self._series_cache
        if len(cache) > _CACHE_FACTOR * checks_map.capacity:
            cache.clear()
        # Per series, in parallel lists: its label text, checks and denials (ints, so that a scrape
        # allocates no containers per entry for the garbage collector to walk); at[text] is its index.
        at: dict[str, int] = {}
        texts: list[str] = []
        checks_by: list[int] = []
        denials_by: list[int] = []
        entries = 0
        granted = scrape.granted
        alive: set[int] = set()
        gone: list[tuple[bytes, int]] = []  # the keys of removed containers, deleted below
        for chunk in checks_map.chunks():
            keys = chunk.keys
            entries += chunk.n
            all_checks, all_denials = chunk.totals(0, checks_map.slots, words), chunk.totals(1, checks_map.slots, words)
            for i in range(chunk.n):
                raw = keys[i * size:(i + 1) * size]
                known = cache.get(raw)
                if known is None:
                    known = self._series_of(raw)
                if known is _FILTERED:
                    continue
                if known.container and self._container_gone(known, alive):
                    gone.append((raw, known.cgroup_id))
                    continue
                text, n_checks, n_denials = known.text, all_checks[i], all_denials[i]
                index = at.get(text)
                if index is None:
                    at[text] = len(texts)
                    texts.append(text)
                    checks_by.append(n_checks)
                    denials_by.append(n_denials)
                else:
                    checks_by[index] += n_checks
                    denials_by[index] += n_denials
                if known.grant and n_checks > n_denials:
                    granted[known.workload] = granted.get(known.workload, 0) | known.grant
        scrape.entries["checks"] = entries
        self._delete_gone(checks_map, gone)
        checks = RenderedFamily("capability_checks", "Capability checks (cap_capable calls), granted and denied.",
                                "counter", self.label_names, "_total", texts, checks_by)
        denials = RenderedFamily("capability_denials", "Capability checks that were denied.", "counter",
                                 self.label_names, "_total", texts, denials_by)
        return [checks, denials]

    def _series_of(self, raw: bytes) -> _Series:
        """Decode one checks map key into its series, and keep it unless a name was not known yet."""
        key = CheckKey.from_buffer_copy(raw)
        comm = decode_comm(key.comm)
        if not self.keep_comm(comm):
            known = _FILTERED
        else:
            # Only with labels.opts can a key say that it was not audited.
            grant = 0 if key.opts & CAP_OPT_NOAUDIT else _GRANTS[key.cap] if key.cap < len(_GRANTS) else 1 << key.cap
            container = containers.from_cgroup(self.cgroup_names.name(key.cgroup_id)).container \
                if self._forget_gone else ""
            known = _Series(label_text(self.label_names, self._label_values(key, comm)),
                            self._workload_of(key, comm) if self.unused is not None else "", grant,
                            container, key.cgroup_id if container else 0)
        if not (self._needs_cgroup and self.cgroup_names.name(key.cgroup_id) == UNKNOWN):
            self._series_cache[raw] = known
        return known

    def _workload_of(self, key, comm: str) -> str:
        if self.by == "comm":  # the common case, and the only one that needs no more decoding
            return comm
        path = self.cgroup_names.name(key.cgroup_id) if workloads.needs_cgroup(self.by) else ""
        return workloads.name(self.by, comm, decode_comm(key.process), path)

    def _container_gone(self, series: _Series, alive: set[int]) -> bool:
        """Whether the container a series belongs to was removed: its series go, and its names
        are forgotten. alive: the cgroups this scrape found, so that each is looked at once per
        scrape."""
        if series.cgroup_id in self._gone_cgroups:
            return True
        if series.cgroup_id in alive:
            return False
        if self.cgroup_names.exists(series.cgroup_id):
            alive.add(series.cgroup_id)
            return False
        self._gone_cgroups.add(series.cgroup_id)
        self.container_names.forget(series.container)
        return True

    def _delete_gone(self, checks_map: BpfMap, gone: list[tuple[bytes, int]]) -> None:
        """Free the map entries of removed containers, so that container churn does not fill the
        map; a cgroup is remembered as gone only while some of its entries could not be deleted."""
        kept = set()
        for raw, cgroup_id in gone:
            try:
                checks_map.delete(raw)
                self._series_cache.pop(raw, None)
            except OSError as err:
                log.debug("deleting a removed container's entry from the checks map failed: %s", err)
                kept.add(cgroup_id)
        self._gone_cgroups -= {cgroup_id for _, cgroup_id in gone} - kept

    def _fill(self, entries: dict[str, int]) -> list[Metric]:
        map_entries = GaugeMetricFamily(PREFIX + "bpf_map_entries", "Entries in a BPF map.", labels=["map"])
        capacity = GaugeMetricFamily(
            PREFIX + "bpf_map_capacity", "The most entries a BPF map can hold (max_entries).", labels=["map"]
        )
        for name, count in entries.items():
            map_entries.add_metric([name], count)
            capacity.add_metric([name], self.maps[name].capacity)
        return [map_entries, capacity]

    def _changes(self, scrape: _Scrape) -> Iterable[Metric]:
        totals: dict[tuple[str, ...], int] = {}
        change_map = self.maps["changes"]
        size = change_map.key_size
        scrape.entries["changes"] = 0
        for chunk in change_map.chunks():
            scrape.entries["changes"] += chunk.n
            counts = chunk.totals(0, change_map.slots, change_map.words)
            for i in range(chunk.n):
                key = ChangeKey.from_buffer_copy(chunk.keys, i * size)
                comm = decode_comm(key.comm)
                if not self.keep_comm(comm):
                    continue
                count = counts[i]
                who = (comm, decode_comm(key.process)) if self.labels.process else (comm,)
                for change in changes.expand(key.syscall, key.set, key.before, key.after):
                    labels = (*who, *change)
                    totals[labels] = totals.get(labels, 0) + count
        who = ["comm", "process"] if self.labels.process else ["comm"]
        sets = CounterMetricFamily(
            "capability_set_changes",
            "Capabilities a syscall added to (gained) or removed from (lost) a thread's capability set.",
            labels=[*who, "syscall", "set", "capability", "direction"],
        )
        securebits = CounterMetricFamily(
            "capability_securebits_changes",
            "Securebits a syscall turned on (gained) or off (lost).",
            labels=[*who, "syscall", "bit", "direction"],
        )
        for labels, count in totals.items():
            *identity, syscall, set_name, name, direction = labels
            if set_name == "securebits":
                securebits.add_metric([*identity, syscall, name, direction], count)
            else:
                sets.add_metric([*identity, syscall, set_name, name, direction], count)
        return [sets, securebits]

    def _label_values(self, key, comm: str) -> tuple[str, ...]:
        values = [comm, capabilities.name(key.cap)]
        if self.labels.process:
            values.append(decode_comm(key.process))
        if self.labels.uid:
            values.append(str(key.uid))
        if self.labels.needs_cgroup_id:
            path = self.cgroup_names.name(key.cgroup_id)
            workload = containers.from_cgroup(path)
            names = self.container_names.names(workload.container) if self._wants_names else runtimes.NONE
            chosen = {"cgroup": path, "unit": units.from_cgroup(path), "container": workload.container,
                      "pod": workload.pod, "container_name": names.container, "pod_name": names.pod,
                      "namespace": names.namespace}
            values.extend(chosen[name] for name in CGROUP_LABELS if getattr(self.labels, name))
        if self.labels.opts:
            values.extend(self._opts_label_values(key.opts))
        return tuple(values)

    def _opts_label_values(self, opts: int) -> tuple[str, str]:
        """(audit, insetid) as label values; the tracepoint cannot see them."""
        if self.probe.noaudit == "indistinguishable":
            return ("unknown", "unknown")
        return (str(not opts & CAP_OPT_NOAUDIT).lower(), str(bool(opts & CAP_OPT_INSETID)).lower())

    def _drops(self, scrape: _Scrape) -> Iterable[Metric]:
        drops = CounterMetricFamily(
            PREFIX + "bpf_map_full_drops",
            "Counts lost because a BPF map was full; raise the map's size in the config if this grows.",
            labels=["map"],
        )
        slots = {"checks": DROP_SLOTS["checks"]}
        if self.probe.mode == "kprobe":
            slots["inflight"] = DROP_SLOTS["inflight"]
        for name, slot in slots.items():
            drops.add_metric([name], self.maps["drops"].slot_total(slot))
        if "change_drops" in self.maps:
            for name, slot in CHANGE_DROP_SLOTS.items():
                drops.add_metric([name], self.maps["change_drops"].slot_total(slot))
        return [drops]

    def _unused(self, granted: dict[str, int]) -> Iterable[Metric]:
        assert self.unused is not None
        held = self.unused.held.by_workload()
        extra = {name: workloads.extra_values(self.by, name, self.container_names) for name in held}
        unused = {name: mask & ~granted.get(name, 0) for name, mask in held.items()
                  if self.unused.keep(name) or any(map(self.unused.keep, filter(None, extra[name])))}
        names = sorted(name for name, mask in unused.items() if mask)
        kept = names[:self.unused.max_workloads]
        with self._lock:
            self._unused_dropped += len(names) - len(kept)
            dropped = self._unused_dropped
        by = self.by
        family = RenderedFamily(
            "capability_unused",
            f"1 for a capability that a running process of this {by} holds in its permitted set, but that "
            f"no check of this {by} was granted since the exporter started.",
            "gauge", [by, *workloads.extra_labels(by), "capability"],
        )
        texts = self._unused_texts
        if len(texts) > 64 * self.unused.max_workloads + 4096:
            texts.clear()
        for name in kept:
            mask = unused[name]
            for bit in range(mask.bit_length()):
                if mask >> bit & 1:
                    text = texts.get((name, bit))
                    if text is None:
                        values = (name, *extra[name], capabilities.name(bit))
                        text = texts[(name, bit)] = label_text(family.label_names, values)
                    family.add(text, 1)
        left_out = CounterMetricFamily(
            PREFIX + "unused_comms_dropped",
            "Workloads (comms, or what unused.by names) with unused capabilities left out of capability_unused "
            "because unused.max_comms was reached, summed over scrapes.",
            value=dropped,
        )
        return [family, left_out]

    def profiles(self, limit: int, only: Optional[str] = None) -> tuple[dict[str, dict], int]:
        """Per workload (unused.by), the document `capability-exporter run --format json` makes, from
        the maps and /proc. Keyed by cgroup (unit, container), a profile has no changes: the changes
        map does not know cgroups.

        Only one workload's, or the first `limit` in name order (as capability_unused keeps them);
        with the number of workloads that have a profile.
        """
        noaudit = self.probe.noaudit
        if noaudit == "included" and not self.labels.opts:
            noaudit = "unknown"
        held = self.unused.held.by_workload() if self.unused is not None else {}
        profiles: dict[str, profile.Profile] = {}

        def of(name: str) -> profile.Profile:
            if name not in profiles:
                mask = held.get(name)
                profiles[name] = profile.Profile(self.probe.mode, noaudit,
                                                 held=None if mask is None else capabilities.decode(mask))
            return profiles[name]

        checks = profile.read_checks_by(self.maps["checks"], noaudit,
                                        lambda key: self._workload_of(key, decode_comm(key.comm)))
        for name, counts in checks.items():
            kept = [check for check in counts if self.keep_comm(check.comm)]
            if name and kept:
                of(name).checks.extend(kept)
        if "changes" in self.maps and not workloads.needs_cgroup(self.by):
            field_name = "process" if self.by == "process" else "comm"
            for name, counts in profile.read_changes_by(self.maps["changes"],
                                                         lambda key: decode_comm(getattr(key, field_name))).items():
                kept = [change for change in counts if self.keep_comm(change.comm)]
                if kept:
                    of(name).changes.extend(kept)
        if self.unused is not None:
            for name in filter(self.unused.keep, held):
                of(name)
        chosen = sorted(profiles)[:limit] if only is None else [only] if only in profiles else [
            name for name in profiles if self._workload_context(name).get(f"{self.by}_name") == only][:1]
        documents = {name: profile.document(profiles[name], **self._workload_context(name))
                     for name in chosen if name in profiles}
        return documents, len(profiles)

    def _workload_context(self, name: str) -> dict[str, str]:
        """What names a workload in its document: {"unit": "ssh.service"}, or a container's id and name."""
        return dict(zip([self.by, *workloads.extra_labels(self.by)],
                        (name, *workloads.extra_values(self.by, name, self.container_names))))

    def _programs(self) -> Iterable[Metric]:
        stats_on = self.stats_enabled()
        enabled = GaugeMetricFamily(
            PREFIX + "bpf_stats_enabled",
            "Whether the kernel counts BPF program runs (kernel.bpf_stats_enabled or --bpf.stats).",
            value=int(stats_on),
        )
        runs = CounterMetricFamily(
            PREFIX + "bpf_program_runs", "Times a BPF program ran (while BPF stats are on).", labels=["program"]
        )
        seconds = CounterMetricFamily(
            PREFIX + "bpf_program_run_seconds", "Time spent in a BPF program (while BPF stats are on).", labels=["program"]
        )
        misses = CounterMetricFamily(
            PREFIX + "bpf_program_recursion_misses",
            "Runs of a BPF program the kernel skipped because it was already running on that CPU; "
            "each is a check that was not counted.",
            labels=["program"],
        )
        for name, fd in self.programs.items():
            try:
                stats = self.read_program_stats(fd)
            except OSError as err:
                log.error("reading stats of BPF program %s failed: %s", name, err)
                continue
            if stats_on:
                runs.add_metric([name], stats.get("run_cnt", 0))
                seconds.add_metric([name], stats.get("run_time_ns", 0) / 1e9)
            misses.add_metric([name], stats.get("recursion_misses", 0))
        return [enabled, runs, seconds, misses] if stats_on else [enabled, misses]
