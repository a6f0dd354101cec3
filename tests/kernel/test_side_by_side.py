"""Attach modes side by side on one kernel: one workload, seen by every mode at once, counted alike.

These run where the kernel matrix expects two or more modes to attach (CAPEXP_EXPECTED_MODES,
see conftest.py): every mode it expects is loaded here, whatever mode the run is testing.
"""

import json
from pathlib import Path
from typing import Optional

import pytest

from exporter.ebpf import kernel
from support import (FEXIT_CAVEAT, NOBODY, checks_of, expected_modes, run_command, run_workers, run_workload, unique_comm,
                     workload_command)

VERBOSE = {"probe": {"count_noaudit": True}}
N_SETUID = 1000
N_CHOWN = 200
N_READS = 30


def _workload(root_owned_file, true_copy) -> dict[str, Optional[tuple[str, int, int]]]:
    """Run checks of every kind as root and as nobody; comm -> (capability, checks, denials) where known in advance."""
    root_setuid, root_chown, denied_chown, reader = (unique_comm(p) for p in ("su", "cr", "cd", "rd"))
    run_workload(f"{root_setuid}=setuid:{N_SETUID}", f"{root_chown}=chown:{N_CHOWN}:{root_owned_file}")
    # As nobody: denied chowns, reads of another user's /proc/<pid>/stat (non-audited CAP_SYS_PTRACE)
    # and, by exec, the non-audited CAP_SYS_ADMIN checks of cap_vm_enough_memory.
    run_workload(f"{denied_chown}=chown:{N_CHOWN}:{root_owned_file}", f"{reader}=read:{N_READS}:/proc/1/stat",
                 user=NOBODY, program=true_copy)
    # A root chown's count depends on the filesystem: on an overlay (a guest's /tmp) the upper
    # filesystem's setattr asks for CAP_CHOWN again, so it is compared across modes only.
    return {root_setuid: ("CAP_SETUID", N_SETUID, 0), root_chown: None,
            denied_chown: ("CAP_CHOWN", N_CHOWN, N_CHOWN), reader: None, Path(true_copy).name: None}


def _per_comm_and_capability(exporter, metric: str, comms) -> dict[tuple[str, str], float]:
    """metric summed over every other label, per (comm, capability), for these comms."""
    found: dict[tuple[str, str], float] = {}
    for labels, value in exporter.series(metric).items():
        labels = dict(labels)
        if labels["comm"] in comms:
            key = (labels["comm"], labels["capability"])
            found[key] = found.get(key, 0) + value
    return found


@pytest.mark.any_mode
@pytest.mark.side_by_side("fexit", "kprobe")
def test_every_mode_counts_the_same_workload_alike(start_exporter, root_owned_file, true_copy):
    modes = expected_modes()
    exporters = {mode: start_exporter(VERBOSE, "--probe.mode", mode) for mode in modes}
    for mode, exporter in exporters.items():
        (labels,) = exporter.series("capability_exporter_probe_info")
        assert dict(labels)["mode"] == mode
    known = _workload(root_owned_file, true_copy)

    seen = {mode: {metric: _per_comm_and_capability(exporter, metric, known)
                   for metric in ("capability_checks_total", "capability_denials_total")}
            for mode, exporter in exporters.items()}
    first = modes[0]
    for mode in modes[1:]:
        assert seen[mode] == seen[first], f"{mode} and {first} counted the same workload differently"
    checks, denials = seen[first]["capability_checks_total"], seen[first]["capability_denials_total"]
    for comm, exact in known.items():
        if exact:
            capability, *counts = exact
            assert [checks[(comm, capability)], denials[(comm, capability)]] == counts, comm
    assert checks[(Path(true_copy).name, "CAP_SYS_ADMIN")] > 0, "an unprivileged exec makes non-audited CAP_SYS_ADMIN checks"


def _run_report(tmp_path, mode, root_owned_file, true_copy, comms) -> tuple[dict, str]:
    steps = [f"{comms[0]}=chown:{N_CHOWN}:{root_owned_file}", f"{comms[1]}=read:{N_READS}:/proc/1/stat"]
    code, text, err = run_command(tmp_path, workload_command(*steps, user=NOBODY, program=true_copy),
                                  "--probe.mode", mode, name=mode)
    assert code == 0, err
    return json.loads(text), err


def _preemptible() -> bool:
    model, source = kernel.preemption()
    assert model, f"the matrix's guests mount debugfs, so the preemption model is known ({source})"
    return model in kernel.PREEMPTIBLE


@pytest.mark.any_mode
@pytest.mark.side_by_side("fexit", "tracepoint")
def test_run_infers_in_tracepoint_mode_which_checks_fexit_sees_are_not_audited(tmp_path, root_owned_file, true_copy):
    comms = [unique_comm("cd"), unique_comm("rd")]
    runs = {mode: _run_report(tmp_path, mode, root_owned_file, true_copy, comms) for mode in ("fexit", "tracepoint")}
    reports = {mode: report for mode, (report, _) in runs.items()}
    # run names the loss a preemptible kernel can cause when it is told to use fexit.
    assert (f"capability-exporter run: warning: {FEXIT_CAVEAT}" in runs["fexit"][1]) == _preemptible(), runs["fexit"][1]
    assert reports["fexit"]["noaudit"] == "included"
    assert reports["tracepoint"]["noaudit"] == "inferred"
    for comm in [*comms, Path(true_copy).name]:
        assert checks_of(reports["tracepoint"], comm) == checks_of(reports["fexit"], comm), comm
    assert checks_of(reports["fexit"], comms[0]) == {("CAP_CHOWN", True): (0, N_CHOWN)}
    assert reports["tracepoint"]["recommendation"]["needed"] == reports["fexit"]["recommendation"]["needed"]


def _setuid_per_thread(exporter, program: str) -> dict[str, float]:
    series = exporter.series("capability_checks_total", process=program, capability="CAP_SETUID")
    return {dict(labels)["comm"]: value for labels, value in series.items()}


def _fexit_misses(exporter) -> float:
    (misses,) = exporter.series("capability_exporter_bpf_program_recursion_misses_total",
                                program="cap_capable_fexit").values()
    return misses


@pytest.mark.any_mode
@pytest.mark.side_by_side("fexit", "kprobe")
def test_threads_at_once_auto_counts_them_all_and_fexit_shows_what_it_lost(start_exporter, workers):
    """Four threads of one program making setuid checks at the same time, seen by auto and by
    the mode auto did not pick. Where the kernel preempts tracing programs (7.2: lazy), a
    preempted fexit run makes the kernel skip other threads' checks on that CPU: auto then
    picks kprobe, and whatever fexit does not count it reports as recursion misses."""
    preemptible = _preemptible()
    chosen, other = ("kprobe", "fexit") if preemptible else ("fexit", "kprobe")
    labels = {"labels": {"process": True}}
    auto = start_exporter(labels, "--probe.mode", "auto")
    fixed = start_exporter(labels, "--probe.mode", other)
    (info,) = auto.series("capability_exporter_probe_info")
    assert dict(info)["mode"] == chosen, kernel.preemption()
    fexit = auto if chosen == "fexit" else fixed
    missed_before = _fexit_misses(fexit)
    run_workers(workers, "1000", "at-once")

    every = {f"worker-{i}": 1000 for i in range(4)}
    assert _setuid_per_thread(auto, workers.name) == every
    seen_by_fexit = _setuid_per_thread(fexit, workers.name)
    missed = _fexit_misses(fexit) - missed_before
    if not preemptible:
        assert (seen_by_fexit, missed) == (every, 0)
    lost = 4000 - sum(seen_by_fexit.values())
    assert all(seen_by_fexit.get(comm, 0) <= 1000 for comm in every), seen_by_fexit
    # Misses can include other programs' checks skipped meanwhile, never fewer than ours.
    assert 0 <= lost <= missed, f"fexit lost {lost} of 4000 checks but reported {missed} misses"

    # Each log says why: auto why it passed over fexit, a configured fexit what it can lose.
    auto.stop()
    fixed.stop()
    passed_over = "attach mode fexit not used: tried after kprobe: the kernel preempts tracing programs"
    assert (passed_over in auto.stderr) == preemptible, auto.stderr
    assert (f'level=warn source=exporter.ebpf.loader msg="{FEXIT_CAVEAT}' in fixed.stderr) == preemptible, fixed.stderr
