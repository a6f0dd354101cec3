"""Fixtures for real-kernel tests: the real exporter and a file only root may chown."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from support import Exporter, run_exporter, write_config

# What each attach mode's counting program is called in capability_exporter_bpf_program_*.
COUNTING_PROGRAM = {"fexit": "cap_capable_fexit", "kprobe": "cap_capable_return", "tracepoint": "cap_capable_tracepoint"}


@pytest.fixture(scope="session")
def attach_mode() -> str:
    """The mode the exporter attaches in for this run (CAPEXP_TEST_MODE, or what auto picks)."""
    done = run_exporter("--config.check")
    assert done.returncode == 0, done.stderr
    return re.search(r"attach mode (\w+)", done.stdout)[1]


@pytest.fixture(scope="session")
def counting_program(attach_mode) -> str:
    return COUNTING_PROGRAM[attach_mode]


@pytest.fixture
def start_exporter(tmp_path):
    """start_exporter(config_dict, *flags) -> a serving Exporter; stopped after the test."""
    started = []

    def start(config: dict | None = None, *args: str, **options) -> Exporter:
        path = write_config(tmp_path, config or {}, name=f"config{len(started)}.yaml")
        exporter = Exporter(path, *args, **options)
        started.append(exporter)
        return exporter.wait_ready()

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture
def root_owned_file():
    """A root-owned file in a directory everyone can search, so chown reaches the CAP_CHOWN check."""
    directory = Path(tempfile.mkdtemp(prefix="capexp-"))
    directory.chmod(0o755)
    path = directory / "owned-by-root"
    path.write_text("")
    yield path
    shutil.rmtree(directory)
