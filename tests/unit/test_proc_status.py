"""/proc parsing for capability_unused: status files, kernel threads, and the refresh cache."""

from exporter.core import held, proc_status

STATUS = """Name:\t{name}
Umask:\t0022
State:\tS (sleeping)
Tgid:\t{pid}
PPid:\t{ppid}
{kthread}CapInh:\t0000000000000000
CapPrm:\t{prm}
CapEff:\t0000000000000000
CapBnd:\t000001ffffffffff
CapAmb:\t{prm}
"""


def fake_proc(tmp_path, processes):
    for pid, (comm, ppid, prm, kthread) in processes.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_bytes(comm + b"\n")
        kline = f"Kthread:\t{int(kthread)}\n" if kthread is not None else ""
        (tmp_path / str(pid) / "status").write_text(
            STATUS.format(name="x", pid=pid, ppid=ppid, kthread=kline, prm=prm))
    (tmp_path / "self").mkdir()
    return str(tmp_path)


def test_processes_leave_out_kernel_threads_and_decode_comms(tmp_path):
    proc = fake_proc(tmp_path, {
        1: (b"systemd", 0, "000001ffffffffff", 0),
        2: (b"kthreadd", 0, "000001ffffffffff", None),
        3: (b"kworker/0:1", 2, "000001ffffffffff", None),
        4: (b"rcu_gp", 1, "000001ffffffffff", 1),
        77: (b"ping\xff", 1, "0000000000002000", None),
    })
    found = {p.pid: p for p in proc_status.processes(proc)}
    assert sorted(found) == [1, 77]
    assert found[77].comm == "ping\\xff" and found[77].permitted == 1 << 13 and found[77].ambient == 1 << 13


def test_a_process_that_vanishes_midway_is_skipped(tmp_path):
    proc = fake_proc(tmp_path, {5: (b"gone", 1, "0", None)})
    (tmp_path / "5" / "comm").unlink()
    assert list(proc_status.processes(proc)) == []


def test_held_is_the_union_per_comm_and_cached_for_the_refresh_interval():
    now = [0.0]
    scans = []

    def scan():
        scans.append(now[0])
        return [proc_status.ProcessCaps(1, "a", 1, 0, 0, 0), proc_status.ProcessCaps(2, "a", 4, 0, 0, 0),
                proc_status.ProcessCaps(3, "b", 2, 0, 0, 0)]

    cache = held.HeldCapabilities(10, scan=scan, clock=lambda: now[0])
    assert cache.by_workload() == {"a": 5, "b": 2}
    now[0] = 9.9
    cache.by_workload()
    now[0] = 10.0
    cache.by_workload()
    assert scans == [0.0, 10.0]


def test_in_the_background_a_stale_cache_is_served_while_the_next_scan_runs():
    import threading

    now = [0.0]
    results = iter([[proc_status.ProcessCaps(1, "a", 1, 0, 0, 0)], [proc_status.ProcessCaps(1, "a", 3, 0, 0, 0)]])
    allowed = threading.Semaphore(1)  # the first scan may run; each later one waits for a release
    scans = []

    def scan():
        allowed.acquire()
        scans.append(now[0])
        return next(results)

    cache = held.HeldCapabilities(10, scan=scan, clock=lambda: now[0], background=True)
    assert cache.by_workload() == {"a": 1}  # the first scan, started at once, is waited for
    now[0] = 10.0
    assert cache.by_workload() == {"a": 1}  # stale: served as it is, and the next scan starts
    assert cache.by_workload() == {"a": 1}  # that scan is still running: no second one starts
    allowed.release()
    for _ in range(500):
        if cache.by_workload() == {"a": 3}:
            break
        threading.Event().wait(0.01)
    assert cache.by_workload() == {"a": 3}
    assert scans == [0.0, 10.0]


def test_at_every_scrape_means_no_background():
    cache = held.HeldCapabilities(0, scan=lambda: [], background=True)
    assert not cache.background and cache.by_workload() == {}
