"""Suite-wide rules: kernel tests run as root, and a skipped test fails the run."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/kernel/" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(autouse=True)
def _kernel_tests_need_root(request):
    if request.node.get_closest_marker("kernel") and os.geteuid() != 0:
        pytest.fail("real-kernel tests load BPF programs and must run as root")


def pytest_sessionfinish(session, exitstatus):
    # A skip is not a pass: nothing in this suite may be skipped quietly.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0 and os.environ.get("ALLOW_SKIPS") != "1":
        reporter.write_line(f"{len(skipped)} test(s) skipped: a skip fails this suite (ALLOW_SKIPS=1 to allow)", red=True)
        session.exitstatus = 1
