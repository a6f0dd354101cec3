"""Suite-wide rules: kernel tests run as root, and a skipped test fails the run."""

from __future__ import annotations

import os
import re

import pytest

from support import any_mode_share, expected_modes, mode_under_test, run_exporter


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/kernel/" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)
    # Before the mode's own deselections, so that every mode of a kernel deals from one deck.
    _keep_this_runs_share_of_any_mode(config, items)
    _deselect_other_modes(config, items)
    _deselect_where_modes_are_not_side_by_side(config, items)


def _keep_this_runs_share_of_any_mode(config, items):
    """The kernel matrix deals the any_mode tests out among a kernel's modes: every n-th from the i-th here."""
    i, n = any_mode_share()
    if n == 1:
        return
    dealt = [item for item in items if item.get_closest_marker("any_mode")]
    _deselect(config, items, [item for k, item in enumerate(dealt) if k % n != i])


def _deselect_other_modes(config, items):
    """Tests marked modes(...) test what only those attach modes can see; the kernel matrix runs them there."""
    limited = [item for item in items if item.get_closest_marker("modes")]
    if not limited:
        return
    mode = mode_under_test() or _auto_mode()
    _deselect(config, items, [item for item in limited if mode not in item.get_closest_marker("modes").args])


def _deselect_where_modes_are_not_side_by_side(config, items):
    """Tests marked side_by_side(...) load those modes at once; they run where the matrix expects all of them."""
    expected = set(expected_modes())
    _deselect(config, items, [item for item in items
                              if (marker := item.get_closest_marker("side_by_side")) and not set(marker.args) <= expected])


def _deselect(config, items, unwanted):
    if unwanted:
        config.hook.pytest_deselected(items=unwanted)
        gone = set(map(id, unwanted))
        items[:] = [item for item in items if id(item) not in gone]


def _auto_mode() -> str:
    done = run_exporter("--config.check")
    match = re.search(r"attach mode (\w+)", done.stdout)
    if not match:
        raise pytest.UsageError(f"cannot tell which attach mode this kernel uses: {done.stderr.strip()}")
    return match[1]


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
