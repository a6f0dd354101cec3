"""Fixtures for real-kernel tests: the real exporter and a file only root may chown."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from support import Exporter, write_config


@pytest.fixture
def start_exporter(tmp_path):
    """start_exporter(config_dict, *flags) -> a serving Exporter; stopped after the test."""
    started = []

    def start(config: dict | None = None, *args: str) -> Exporter:
        path = write_config(tmp_path, config or {}, name=f"config{len(started)}.yaml")
        exporter = Exporter(path, *args)
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
