"""Fixtures for real-kernel tests: the real exporter and a file only root may chown."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support import HANG_TIMEOUT, ROOT, mode_under_test, run_exporter, starter, unique_comm

# What each attach mode's counting program is called in capability_exporter_bpf_program_*.
COUNTING_PROGRAM = {"fexit": "cap_capable_fexit", "kprobe": "cap_capable_return", "tracepoint": "cap_capable_tracepoint"}


@pytest.fixture(scope="session")
def attach_mode() -> str:
    """The mode the exporter attaches in for this run (CAPEXP_TEST_MODE, or what auto picks)."""
    if mode_under_test():
        # The kernel matrix ran this mode's --config.check before the suite, and every start
        # here names the mode: checking again costs half a minute per worker in a guest.
        return mode_under_test()
    done = run_exporter("--config.check")
    assert done.returncode == 0, done.stderr
    return re.search(r"attach mode (\w+)", done.stdout)[1]


@pytest.fixture(scope="session")
def counting_program(attach_mode) -> str:
    return COUNTING_PROGRAM[attach_mode]


@pytest.fixture
def start_exporter(tmp_path):
    """start_exporter(config_dict, *flags) -> a serving Exporter; stopped after the test."""
    start, started = starter(tmp_path)
    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture(scope="module")
def shared_exporter(tmp_path_factory):
    """One exporter with the default checks config for the tests of a module that only read it.

    Each test uses its own comm, so sharing cannot mix their numbers.
    """
    start, started = starter(tmp_path_factory.mktemp("shared"))
    yield start()
    for exporter in started:
        exporter.stop()


@pytest.fixture
def public_dir():
    """A directory every user can search (pytest's tmp_path is root-only), removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="capexp-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.fixture
def root_owned_file(public_dir):
    """A root-owned file that other users can reach, so their chown gets to the CAP_CHOWN check."""
    path = public_dir / "owned-by-root"
    path.write_text("")
    return path


@pytest.fixture
def true_copy(public_dir):
    """A copy of /bin/true that anyone may run, named with a fresh comm: exec makes that its comm."""
    path = public_dir / unique_comm("exe")
    shutil.copy("/bin/true", path)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def workers(tmp_path):
    """tests/workers.c compiled under a fresh name, which exec makes its main thread's comm."""
    binary = tmp_path / unique_comm("thr")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(ROOT / "tests" / "workers.c")],
                   check=True, timeout=HANG_TIMEOUT)
    return binary
