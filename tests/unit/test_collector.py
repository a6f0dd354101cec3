"""The collector's decoding and aggregation, over in-memory stand-ins for the BPF maps."""

import ctypes
from array import array

from prometheus_client import CollectorRegistry

from exporter.config import LabelsConfig, comm_filter, FiltersConfig
from exporter.core.cgroups import CgroupNames
from exporter.ebpf.layouts import CheckKey, CheckValue, DropKey, DropValue
from exporter.ebpf.maps import BpfMap, Chunk
from exporter.serve.collector import CapabilityCollector, ProbeInfo


class FakeMap:
    """Per-CPU entries as the kernel would return them; entries with fewer CPUs are padded with zeros."""

    def __init__(self, entries, key_type=CheckKey, capacity=100):
        self.entries = entries
        self.key_type = key_type
        self.capacity = capacity
        self.key_size = ctypes.sizeof(type(entries[0][0]) if entries else key_type)
        per_cpu = [values for _, values in entries if isinstance(values, list)]
        self.slots = max(map(len, per_cpu), default=1)
        self.words = max((ctypes.sizeof(values[0]) // 8 for values in per_cpu), default=2)

    def items(self):
        return iter(self.entries)

    def chunks(self):
        words = array("Q")
        for _, values in self.entries:
            for value in values + [type(values[0])()] * (self.slots - len(values)):
                words.frombytes(bytes(value))
        yield Chunk(len(self.entries), b"".join(bytes(k) for k, _ in self.entries), words)

    def lookup(self, key):
        return [v for k, v in self.entries if k.value == key.value]

    slot_total = BpfMap.slot_total


class BrokenMap(FakeMap):
    def items(self):
        raise OSError(9, "Bad file descriptor")

    def chunks(self):
        raise OSError(9, "Bad file descriptor")


def key(comm, cap, uid=0, cgroup_id=0, opts=0):
    return CheckKey(comm.encode(), cap, uid, cgroup_id, opts)


def registry_for(checks, labels=LabelsConfig(), filters=FiltersConfig(), mode="fexit", drops=None, extra_maps=None):
    drops = drops or FakeMap([(DropKey(0), DropValue(3)), (DropKey(0), DropValue(4))], key_type=DropKey)
    collector = CapabilityCollector(
        {"checks": checks, "drops": drops, **(extra_maps or {})}, {"cap_capable_fexit": 99}, ProbeInfo.of(mode, False), labels,
        comm_filter(filters), CgroupNames(None),
        stats_enabled=lambda: True,
        read_program_stats=lambda fd: {"run_cnt": 10, "run_time_ns": 2_000_000_000, "recursion_misses": 1},
    )
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_per_cpu_values_are_summed_and_unknown_capabilities_get_a_label():
    checks = FakeMap([
        (key("sshd", 7), [CheckValue(3, 1), CheckValue(4, 0)]),
        (key("newcap", 45), [CheckValue(1, 1)]),
    ])
    r = registry_for(checks)
    assert r.get_sample_value("capability_checks_total", {"comm": "sshd", "capability": "CAP_SETUID"}) == 7
    assert r.get_sample_value("capability_denials_total", {"comm": "sshd", "capability": "CAP_SETUID"}) == 1
    assert r.get_sample_value("capability_checks_total", {"comm": "newcap", "capability": "CAP_UNKNOWN_45"}) == 1
    assert r.get_sample_value("capability_exporter_bpf_map_entries", {"map": "checks"}) == 2
    assert r.get_sample_value("capability_exporter_bpf_map_full_drops_total", {"map": "checks"}) == 7


def test_comm_filter_applies_and_bad_bytes_do_not_break_the_scrape():
    raw = CheckKey(b"bad\xff\xfe", 0, 0, 0, 0)
    checks = FakeMap([(raw, [CheckValue(1, 0)]), (key("sshd", 0), [CheckValue(1, 0)])])
    r = registry_for(checks, filters=FiltersConfig(comm_exclude=("sshd",)))
    assert r.get_sample_value("capability_checks_total", {"comm": "bad\\xff\\xfe", "capability": "CAP_CHOWN"}) == 1
    assert r.get_sample_value("capability_checks_total", {"comm": "sshd", "capability": "CAP_CHOWN"}) is None


def test_optional_labels():
    checks = FakeMap([(key("ping", 13, uid=1000, cgroup_id=12345), [CheckValue(2, 0)])])
    r = registry_for(checks, labels=LabelsConfig(uid=True, cgroup=True))
    labels = {"comm": "ping", "capability": "CAP_NET_RAW", "uid": "1000", "cgroup": "unknown"}
    assert r.get_sample_value("capability_checks_total", labels) == 2


def test_opts_labels_decode_noaudit_and_insetid():
    checks = FakeMap([
        (key("exe", 21, opts=0x2), [CheckValue(4, 4)]),
        (key("su", 7, opts=0x4), [CheckValue(2, 0)]),
        (key("both", 7, opts=0x6), [CheckValue(1, 0)]),
    ])
    r = registry_for(checks, labels=LabelsConfig(opts=True))
    assert r.get_sample_value(
        "capability_checks_total", {"comm": "exe", "capability": "CAP_SYS_ADMIN", "audit": "false", "insetid": "false"}
    ) == 4
    assert r.get_sample_value(
        "capability_checks_total", {"comm": "su", "capability": "CAP_SETUID", "audit": "true", "insetid": "true"}
    ) == 2
    assert r.get_sample_value(
        "capability_checks_total", {"comm": "both", "capability": "CAP_SETUID", "audit": "false", "insetid": "true"}
    ) == 1


def test_opts_labels_are_unknown_in_tracepoint_mode():
    r = registry_for(FakeMap([(key("su", 7), [CheckValue(2, 0)])]), labels=LabelsConfig(opts=True), mode="tracepoint")
    labels = {"comm": "su", "capability": "CAP_SETUID", "audit": "unknown", "insetid": "unknown"}
    assert r.get_sample_value("capability_checks_total", labels) == 2


def test_a_failing_map_is_reported_and_the_rest_of_the_scrape_succeeds():
    r = registry_for(BrokenMap([]))
    assert r.get_sample_value("capability_exporter_bpf_map_read_success", {"map": "checks"}) == 0
    assert r.get_sample_value("capability_exporter_bpf_map_read_success", {"map": "drops"}) == 1
    assert r.get_sample_value("capability_exporter_bpf_program_runs_total", {"program": "cap_capable_fexit"}) == 10
    assert r.get_sample_value("capability_exporter_bpf_program_run_seconds_total", {"program": "cap_capable_fexit"}) == 2
    assert r.get_sample_value("capability_exporter_scrape_duration_seconds") is not None


def test_probe_info_says_what_each_mode_can_see():
    assert ProbeInfo.of("tracepoint", False).noaudit == "indistinguishable"
    assert ProbeInfo.of("tracepoint", True).noaudit == "indistinguishable"
    assert ProbeInfo.of("kprobe", False).noaudit == "excluded"
    assert ProbeInfo.of("fexit", True).noaudit == "included"


def test_changes_are_expanded_per_capability_and_summed_over_transitions():
    from exporter.ebpf.layouts import ChangeKey, ChangeValue

    changes = FakeMap([
        (ChangeKey(b"sshd", 1, 3, 0b11, 0b01), [ChangeValue(2), ChangeValue(1)]),  # bounding loses CAP_DAC_OVERRIDE
        (ChangeKey(b"sshd", 1, 3, 0b10, 0b00), [ChangeValue(4)]),  # and again, from another starting set
        (ChangeKey(b"sshd", 1, 5, 0, 0b10000), [ChangeValue(1)]),  # SECBIT_KEEP_CAPS on
    ])
    r = registry_for(FakeMap([]), extra_maps={"changes": changes})
    labels = {"comm": "sshd", "syscall": "prctl", "set": "bounding", "capability": "CAP_DAC_OVERRIDE", "direction": "lost"}
    assert r.get_sample_value("capability_set_changes_total", labels) == 7
    bits = {"comm": "sshd", "syscall": "prctl", "bit": "SECBIT_KEEP_CAPS", "direction": "gained"}
    assert r.get_sample_value("capability_securebits_changes_total", bits) == 1
    assert r.get_sample_value("capability_exporter_bpf_map_entries", {"map": "changes"}) == 3


def test_process_label_comes_from_the_key_and_keeps_comm_apart():
    def keyed(comm, process):
        raw = key(comm, 7)
        raw.process = process.encode()
        return raw

    checks = FakeMap([
        (keyed("worker-1", "server"), [CheckValue(5, 0)]),
        (keyed("worker-1", "client"), [CheckValue(2, 1)]),
    ])
    r = registry_for(checks, labels=LabelsConfig(process=True))
    assert r.get_sample_value("capability_checks_total",
                              {"comm": "worker-1", "process": "server", "capability": "CAP_SETUID"}) == 5
    assert r.get_sample_value("capability_denials_total",
                              {"comm": "worker-1", "process": "client", "capability": "CAP_SETUID"}) == 1


def test_unit_label_from_the_resolved_cgroup_path():
    names = CgroupNames(None)
    names._paths[77] = "/system.slice/ssh.service"
    checks = FakeMap([(key("sshd", 7, cgroup_id=77), [CheckValue(3, 0)]), (key("bash", 7, cgroup_id=1), [CheckValue(1, 0)])])
    collector = CapabilityCollector({"checks": checks}, {}, ProbeInfo.of("fexit", False), LabelsConfig(unit=True),
                                    comm_filter(FiltersConfig()), names)
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("capability_checks_total",
                                     {"comm": "sshd", "capability": "CAP_SETUID", "unit": "ssh.service"}) == 3
    assert registry.get_sample_value("capability_checks_total",
                                     {"comm": "bash", "capability": "CAP_SETUID", "unit": ""}) == 1


def test_unused_by_unit_combines_processes_bounded_and_counted():
    from exporter.serve.collector import UnusedSettings
    from exporter.config import Config, UnusedConfig
    from exporter.core.proc_status import ProcessCaps

    def process(comm, cgroup, permitted):
        return ProcessCaps(1, comm, permitted, 0, 0, 0, cgroup)

    names = CgroupNames(None)
    names._paths.update({5: "/system.slice/a.service", 6: "/system.slice/b.service"})
    scan = [process("a1", "/system.slice/a.service", 1 << 13), process("a2", "/system.slice/a.service", 1 << 7),
            process("b", "/system.slice/b.service", 1 << 12), process("c", "/system.slice/c.service", 1 << 1),
            process("loose", "/user.slice", 1 << 2)]
    settings = UnusedSettings.of(Config(unused=UnusedConfig(by="unit", refresh_seconds=0, max_comms=2)))
    settings.held.scan = lambda: scan
    # a.service: a2's thread was granted CAP_SETUID; a1 holds CAP_NET_RAW, unused.
    checks = FakeMap([(key("a2-worker", 7, cgroup_id=5), [CheckValue(4, 0)]),
                      (key("b", 12, cgroup_id=6), [CheckValue(1, 1)])])
    collector = CapabilityCollector({"checks": checks}, {}, ProbeInfo.of("fexit", False), LabelsConfig(),
                                    comm_filter(FiltersConfig()), names, unused=settings)
    registry = CollectorRegistry()
    registry.register(collector)
    families = list(registry.collect())  # one scrape: the left-out counter sums over scrapes
    unused = {tuple(sorted(s.labels.items())): s.value for m in families if m.name == "capability_unused"
              for s in m.samples}
    dropped = [s.value for m in families for s in m.samples if s.name == "capability_exporter_unused_comms_dropped_total"]
    # a's CAP_NET_RAW; b's CAP_NET_ADMIN (its check was denied); c is past max_comms; "loose" is in no unit.
    assert unused == {(("capability", "CAP_NET_RAW"), ("unit", "a.service")): 1,
                      (("capability", "CAP_NET_ADMIN"), ("unit", "b.service")): 1}
    assert dropped == [1]
    documents, count = collector.profiles(100)
    assert sorted(documents) == ["a.service", "b.service", "c.service"] and count == 3
    assert documents["a.service"]["unit"] == "a.service"
    assert documents["a.service"]["held"] == ["CAP_SETUID", "CAP_NET_RAW"]


def test_a_removed_containers_series_go_and_its_entries_are_deleted(tmp_path):
    """A container's cgroup is looked at once per scrape; once gone, its keys leave the map."""
    class DeletingMap(FakeMap):
        def delete(self, raw):
            self.entries = [(k, v) for k, v in self.entries if bytes(k) != raw]
            return True

    cid = "c" * 64
    leaf = tmp_path / f"libpod_parent/libpod-{cid}"
    leaf.mkdir(parents=True)
    names = CgroupNames(str(tmp_path))
    cgroup_id = leaf.stat().st_ino
    checks = DeletingMap([(key("chroot", 18, cgroup_id=cgroup_id), [CheckValue(3, 0)]),
                          (key("sshd", 7), [CheckValue(1, 0)])])
    collector = CapabilityCollector({"checks": checks}, {}, ProbeInfo.of("fexit", False), LabelsConfig(container=True),
                                    comm_filter(FiltersConfig()), names)
    registry = CollectorRegistry()
    registry.register(collector)
    labels = {"comm": "chroot", "capability": "CAP_SYS_CHROOT", "container": cid}
    assert registry.get_sample_value("capability_checks_total", labels) == 3
    leaf.rmdir()
    assert registry.get_sample_value("capability_checks_total", labels) is None
    assert [k.comm for k, _ in checks.entries] == [b"sshd"]
    assert collector._gone_cgroups == set()
    assert registry.get_sample_value("capability_checks_total", {"comm": "sshd", "capability": "CAP_SETUID",
                                                                 "container": ""}) == 1


def test_a_removed_containers_counts_stay_in_series_that_do_not_name_it(tmp_path):
    """Without the container label its checks are part of the comm's series, which must not go down."""
    cid = "d" * 64
    leaf = tmp_path / f"libpod_parent/libpod-{cid}"
    leaf.mkdir(parents=True)
    checks = FakeMap([(key("chroot", 18, cgroup_id=leaf.stat().st_ino), [CheckValue(3, 0)]),
                      (key("chroot", 18, cgroup_id=1), [CheckValue(2, 0)])])
    collector = CapabilityCollector({"checks": checks}, {}, ProbeInfo.of("fexit", False), LabelsConfig(namespace=True),
                                    comm_filter(FiltersConfig()), CgroupNames(str(tmp_path)))
    registry = CollectorRegistry()
    registry.register(collector)
    labels = {"comm": "chroot", "capability": "CAP_SYS_CHROOT", "namespace": ""}
    assert registry.get_sample_value("capability_checks_total", labels) == 5
    leaf.rmdir()
    assert registry.get_sample_value("capability_checks_total", labels) == 5
