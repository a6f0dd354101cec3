"""Exact check and denial counts from workloads the test runs, read from the real /metrics."""

from support import NOBODY, run_workload, unique_comm

N_SETUID = 10000
M_CHOWN = 500


def test_setuid_as_root_counts_every_check_and_no_denial(shared_exporter):
    exporter = shared_exporter
    comm = unique_comm()
    run_workload(f"{comm}=setuid:{N_SETUID}")
    assert exporter.value("capability_checks_total", comm=comm, capability="CAP_SETUID") == N_SETUID
    assert exporter.value("capability_denials_total", comm=comm, capability="CAP_SETUID") == 0


def test_unprivileged_chown_counts_every_check_as_denied(shared_exporter, root_owned_file):
    exporter = shared_exporter
    comm = unique_comm()
    (step,) = run_workload(f"{comm}=chown:{M_CHOWN}:{root_owned_file}", user=NOBODY)
    assert step["result"] == {"refused": M_CHOWN}
    assert exporter.value("capability_checks_total", comm=comm, capability="CAP_CHOWN") == M_CHOWN
    assert exporter.value("capability_denials_total", comm=comm, capability="CAP_CHOWN") == M_CHOWN


def test_counts_accumulate_across_scrapes(shared_exporter):
    exporter = shared_exporter
    comm = unique_comm()
    run_workload(f"{comm}=setuid:100")
    assert exporter.value("capability_checks_total", comm=comm, capability="CAP_SETUID") == 100
    run_workload(f"{comm}=setuid:50")
    assert exporter.value("capability_checks_total", comm=comm, capability="CAP_SETUID") == 150


def test_probe_info_names_the_mode_and_what_it_can_see(shared_exporter, attach_mode):
    exporter = shared_exporter
    info = exporter.series("capability_exporter_probe_info")
    assert list(info.values()) == [1]
    (labels,) = info
    noaudit = "indistinguishable" if attach_mode == "tracepoint" else "excluded"
    assert dict(labels) == {"probe": "cap_capable", "mode": attach_mode, "noaudit": noaudit}
