"""capability_unused and /profiles on the real kernel: live processes' permitted sets against their checks."""

import json
import shutil
import subprocess
import time
import urllib.error

import pytest

from support import NOBODY, unique_comm, wait_for

# No attach mode changes how these are served or computed: once per kernel in the matrix.
pytestmark = pytest.mark.any_mode

# Only this suite's holders: capability_unused keeps the first max_comms workloads by name, and
# on a busy machine (parallel suites) enough root processes sort before "hold..." to push it out.
CONFIG = {"unused": {"refresh_seconds": 0, "comms": ["hold[0-9a-f]+"]}}


@pytest.fixture
def hold_net_raw(public_dir):
    """hold_net_raw() -> (comm, process): a process as nobody holding only CAP_NET_RAW, which it never uses."""
    holders = []

    def start():
        comm = unique_comm("hold")
        program = public_dir / comm
        shutil.copy("/bin/sleep", program)
        program.chmod(0o755)
        process = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                    "--inh-caps=+net_raw", "--ambient-caps=+net_raw", str(program), "300"])
        holders.append(process)
        return comm, process

    yield start
    for process in holders:
        process.kill()
        process.wait()


def profile_of(exporter, comm):
    try:
        return json.loads(exporter.get(f"/profiles?comm={comm}"))
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return None


def test_unused_capability_appears_while_the_process_lives_and_goes_when_it_exits(start_exporter, hold_net_raw):
    exporter = start_exporter(CONFIG)
    comm, process = hold_net_raw()
    wait_for(lambda: exporter.series("capability_unused", comm=comm), f"capability_unused of {comm}")
    assert exporter.series("capability_unused", comm=comm) == {
        frozenset({"comm": comm, "capability": "CAP_NET_RAW"}.items()): 1.0
    }
    doc = profile_of(exporter, comm)
    assert doc["comm"] == comm and doc["held"] == ["CAP_NET_RAW"]
    assert doc["recommendation"]["unused"] == ["CAP_NET_RAW"] and doc["recommendation"]["needed"] == []
    process.kill()
    process.wait()
    assert exporter.series("capability_unused", comm=comm) == {}
    gone = profile_of(exporter, comm)
    assert gone is None or gone["held"] is None


def test_allow_list_and_limit_with_the_left_out_counted(start_exporter, hold_net_raw):
    first, second, outsider = (hold_net_raw() for _ in range(3))
    names = sorted([first[0], second[0]])
    exporter = start_exporter({"unused": {"refresh_seconds": 0, "comms": names, "max_comms": 1}})
    # /profiles shows every allowed comm and does not count as a scrape of capability_unused.
    wait_for(lambda: all(profile_of(exporter, n) for n in names), "both profiles")
    assert profile_of(exporter, outsider[0]) is None
    for scrape in (1, 2):
        samples = exporter.scrape()
        unused_comms = {dict(labels)["comm"] for (name, labels) in samples if name == "capability_unused"}
        assert unused_comms == {names[0]}
        assert samples[("capability_exporter_unused_comms_dropped_total", frozenset())] == scrape


def test_disabled_means_no_series_and_no_held_sets(start_exporter, hold_net_raw):
    exporter = start_exporter({"unused": {"enabled": False}})
    comm, _ = hold_net_raw()
    time.sleep(0.5)
    samples = exporter.scrape()
    assert not [name for (name, _) in samples if name.startswith(("capability_unused", "capability_exporter_unused"))]
    # Its exec's checks still make a profile, but without what it holds.
    doc = profile_of(exporter, comm)
    assert doc is None or (doc["held"] is None and doc["recommendation"]["unused"] == [])
