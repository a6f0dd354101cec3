"""The kernel matrix's own bookkeeping: partial guest reports, failing-log tails, verdicts."""

import json
import os
import subprocess
import time

import kernel_matrix
from kernel_matrix import Cell, _dump_when_silent, _finished, _watch, tails, verdicts


def test_a_guest_stopped_midway_keeps_the_modes_it_finished(tmp_path):
    report = tmp_path / "6.1.json"
    report.write_text(json.dumps([{"kernel": "6.1", "mode": "fexit", "result": "pass", "detail": "54 passed",
                                   "seconds": 400.0}]))
    cells = _finished("6.1", report, "the guest did not finish in 10 s")
    assert [(c.mode, c.result) for c in cells] == [("fexit", "pass"), ("kprobe", "fail"), ("tracepoint", "fail")]
    assert cells[1].detail == "the guest did not finish in 10 s"


def test_a_guest_with_no_report_fails_every_mode(tmp_path):
    cells = _finished("6.1", tmp_path / "missing.json", "the guest wrote no report")
    assert {c.result for c in cells} == {"fail"} and len(cells) == 3


def test_tails_show_the_end_of_each_failing_log(tmp_path):
    (tmp_path / "6.1-kprobe.log").write_text("\n".join(f"line {i}" for i in range(100)))
    (tmp_path / "6.1-boot.log").write_text("booted\n12:00:00 6.1 / kprobe: running")
    cells = [
        Cell("6.1", "fexit", "pass", "54 passed (log: 6.1-fexit.log)"),
        Cell("6.1", "kprobe", "fail", "1 failed, 27 passed (log: 6.1-kprobe.log)"),
        Cell("6.1", "tracepoint", "fail", "the guest did not finish in 10 s (see 6.1-boot.log)"),
    ]
    shown = tails(cells, tmp_path)
    assert shown[0] == "--- 6.1 / kprobe: last 40 lines of 6.1-kprobe.log"
    assert shown[1:41] == [f"line {i}" for i in range(60, 100)]
    assert shown[41:] == ["--- 6.1 / tracepoint: last 2 lines of 6.1-boot.log", "booted", "12:00:00 6.1 / kprobe: running"]


def test_a_failing_guests_kernel_dump_is_shown(tmp_path):
    (tmp_path / "6.1-dmesg.log").write_text("=== 12:05:00 6.1-kprobe.log has not grown for 300 s\nsysrq: Show Blocked State")
    shown = tails([Cell("6.1", "kprobe", "fail", "the guest hangs (see 6.1-boot.log)")], tmp_path)
    assert shown == ["--- 6.1: last 2 lines of 6.1-dmesg.log", "=== 12:05:00 6.1-kprobe.log has not grown for 300 s",
                     "sysrq: Show Blocked State"]


def test_a_guest_whose_logs_stop_growing_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "STALL_TIMEOUT", 0.5)
    monkeypatch.setattr(kernel_matrix, "WATCH_INTERVAL", 0.1)
    (tmp_path / "6.1-fexit.log").write_text("....")
    guest = subprocess.Popen(["sleep", "60"])
    assert _watch(guest, tmp_path) == "the guest was stopped after 0.5 s without output: it hangs"
    assert guest.returncode is not None


def test_a_guest_that_ends_is_not_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "WATCH_INTERVAL", 0.1)
    assert _watch(subprocess.Popen(["true"]), tmp_path) is None


def test_only_an_expected_mode_that_does_not_pass_is_a_verdict():
    cells = [
        Cell("host 6.18", "fexit", "not available", "EPERM"),
        Cell("host 6.18", "tracepoint", "pass", "66 passed"),
        Cell("6.1.0-56-amd64", "fexit", "fail", "1 failed"),
        Cell("6.1.0-56-amd64", "tracepoint", "not available", "no tracepoint"),
    ]
    assert verdicts(cells, "host 6.18") == ["6.1.0-56-amd64 / fexit: expected pass, got fail: 1 failed"]


def test_a_guest_saves_its_kernel_state_once_its_logs_go_quiet(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "DUMP_AFTER", 60)
    monkeypatch.setattr(kernel_matrix, "WATCH_INTERVAL", 0.05)
    dumps = []
    monkeypatch.setattr(kernel_matrix, "_dump_kernel_state", lambda dump, why: dumps.append((dump.name, why)))
    log = tmp_path / "6.1-kprobe.log"
    log.write_text("....")
    with _dump_when_silent(tmp_path, tmp_path / "6.1-dmesg.log"):
        time.sleep(0.3)
        assert dumps == []
        os.utime(log, (time.time() - 120, time.time() - 120))
        time.sleep(0.3)
    assert dumps and dumps[0] == ("6.1-dmesg.log", f"no log in {tmp_path} has grown for 60 s")
