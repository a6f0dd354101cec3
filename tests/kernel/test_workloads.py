"""Workload identity on the real kernel: the process label of threads that rename themselves."""

import subprocess

import pytest

from support import HANG_TIMEOUT, ROOT, unique_comm

CHECKS = "capability_checks_total"
CHANGES = "capability_set_changes_total"


@pytest.fixture
def workers(tmp_path):
    """tests/workers.c compiled under a fresh name, which exec makes its main thread's comm."""
    binary = tmp_path / unique_comm("thr")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ROOT / "tests" / "workers.c")],
                   check=True, timeout=HANG_TIMEOUT)
    return binary


def run_workers(binary, *args: str) -> None:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr


def test_renamed_threads_are_counted_under_their_program(start_exporter, workers):
    exporter = start_exporter({"labels": {"process": True}})
    run_workers(workers, "1000")
    program = workers.name
    by_program = exporter.series(CHECKS, process=program, capability="CAP_SETUID")
    assert sum(by_program.values()) == 4000
    # The comm series are the threads' own names, as without the label.
    assert {dict(labels)["comm"]: value for labels, value in by_program.items()} == {
        f"worker-{i}": 1000 for i in range(4)
    }
    assert exporter.series(CHECKS, comm=program, capability="CAP_SETUID") == {}


def test_without_the_label_there_is_no_process_label(start_exporter, workers):
    exporter = start_exporter()
    run_workers(workers, "10")
    assert exporter.series(CHECKS, comm="worker-0")
    assert all("process" not in dict(labels) for labels in exporter.series(CHECKS))


def test_changes_carry_the_process_label(start_exporter, workers):
    exporter = start_exporter({"labels": {"process": True}, "changes": {"enabled": True}})
    run_workers(workers, "1", "drop-bounding")
    assert exporter.series(CHANGES, process=workers.name) == {
        frozenset({"comm": "worker-0", "process": workers.name, "syscall": "prctl", "set": "bounding",
                   "capability": "CAP_SYS_MODULE", "direction": "lost"}.items()): 1.0
    }
