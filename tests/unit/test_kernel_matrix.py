"""The kernel matrix's own bookkeeping: partial guest reports, failing-log tails, verdicts."""

import json
import os
import subprocess
import threading
import time
import types

import pytest

import kernel_matrix
from kernel_matrix import Cell, Quiet, _dump_when_silent, _finished, _watch, tails, verdicts


def test_a_guest_that_reported_its_mode_gives_that_cell(tmp_path):
    (tmp_path / "6.1-fexit.json").write_text(json.dumps([{"kernel": "6.1", "mode": "fexit", "result": "pass",
                                                          "detail": "54 passed", "seconds": 400.0,
                                                          "log": "6.1-fexit.log"}]))
    cells = _finished("6.1", "fexit", tmp_path, "the guest did not finish in 10 s")
    assert [(c.mode, c.result, c.log) for c in cells] == [("fexit", "pass", "6.1-fexit.log")]


def test_a_guest_stopped_midway_fails_with_its_pytest_log(tmp_path):
    (tmp_path / "6.1-kprobe.log").write_text("tests/kernel/test_checks.py::test_setuid ")
    cells = _finished("6.1", "kprobe", tmp_path, "the guest did not finish in 10 s")
    assert [(c.mode, c.result, c.log, c.detail) for c in cells] == [
        ("kprobe", "fail", "6.1-kprobe.log", "the guest did not finish in 10 s")]


def test_a_guest_with_no_report_fails_with_its_console(tmp_path):
    cells = _finished("6.1", "tracepoint", tmp_path, "the guest wrote no report")
    assert [(c.mode, c.result, c.log) for c in cells] == [("tracepoint", "fail", "6.1-tracepoint-boot.log")]


def test_guests_run_side_by_side_and_their_cells_come_in_kernel_then_mode_order(tmp_path, monkeypatch):
    started, both = [], threading.Barrier(2, timeout=10)

    def boot(kernel, mode, vng, out):
        started.append((kernel, mode))
        if len(started) <= 2:
            both.wait()  # the first two guests must be running at once
        return [Cell(kernel, mode, "pass", "")]

    monkeypatch.setattr(kernel_matrix, "boot", boot)
    cells = kernel_matrix.boot_all(["5.10", "6.1"], "vng", tmp_path, jobs=2)
    assert started[:2] == [("5.10", "fexit"), ("6.1", "fexit")]  # the whole-suite modes first
    assert [(c.kernel, c.mode) for c in cells] == [(k, m) for k in ("5.10", "6.1") for m in kernel_matrix.MODES]


def test_the_hosts_row_runs_beside_the_guests_and_comes_first(tmp_path, monkeypatch):
    both = threading.Barrier(2, timeout=10)

    def on_host(kernel, out, guest, modes):
        both.wait()  # the host's suite and a guest must be running at once
        return [Cell(kernel, "tracepoint", "pass", "")]

    def boot(kernel, mode, vng, out):
        both.wait()
        return [Cell(kernel, mode, "pass", "")]

    monkeypatch.setattr(kernel_matrix, "run_modes", on_host)
    monkeypatch.setattr(kernel_matrix, "boot", boot)
    cells = kernel_matrix.run_all("host 6.18", ["6.1"], "vng", tmp_path, jobs=1, modes=("tracepoint",))
    assert [(c.kernel, c.mode) for c in cells] == [("host 6.18", "tracepoint"), ("6.1", "tracepoint")]


def test_modes_limit_the_guests_to_those_modes(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "boot", lambda kernel, mode, vng, out: [Cell(kernel, mode, "pass", "")])
    cells = kernel_matrix.boot_all(["7.2.13+deb14-amd64"], "vng", tmp_path, jobs=1, modes=("fexit",))
    assert [(c.kernel, c.mode) for c in cells] == [("7.2.13+deb14-amd64", "fexit")]


def test_a_series_unpacked_in_kernels_boots_its_release(tmp_path, monkeypatch):
    release = "7.2.13+deb14-amd64"
    vmlinuz = tmp_path / release / "usr/lib/modules" / release / "vmlinuz"
    vmlinuz.parent.mkdir(parents=True)
    vmlinuz.touch()
    (tmp_path / "7.2").symlink_to(release)
    monkeypatch.setattr(kernel_matrix.kernel_images, "KERNELS_DIR", tmp_path)
    assert kernel_matrix.release("7.2") == release
    assert kernel_matrix.kernel_images.vmlinuz(release) == vmlinuz
    assert kernel_matrix.kernel_images.vmlinuz("7.2").resolve() == vmlinuz
    assert kernel_matrix.expected(release) == {"fexit", "kprobe", "tracepoint"}


def test_tails_show_the_end_of_each_failing_log_and_the_guests_console(tmp_path):
    (tmp_path / "6.1-kprobe.log").write_text("\n".join(f"line {i}" for i in range(100)))
    (tmp_path / "6.1-tracepoint-boot.log").write_text(
        "[ 12.0] virtme-ng-init: starting script\n[ 300.1] INFO: rcu_sched self-detected stall")
    cells = [
        Cell("6.1", "fexit", "pass", "54 passed", log="6.1-fexit.log"),
        Cell("6.1", "kprobe", "fail", "the guest hangs", log="6.1-kprobe.log"),
        Cell("6.1", "tracepoint", "fail", "the guest hangs", log="6.1-tracepoint-boot.log"),
    ]
    shown = tails(cells, tmp_path)
    assert shown[0] == "--- 6.1 / kprobe: last 40 lines of 6.1-kprobe.log"
    assert shown[1:41] == [f"line {i}" for i in range(60, 100)]
    assert shown[41:] == ["--- 6.1 / tracepoint: last 2 lines of 6.1-tracepoint-boot.log",
                          "[ 12.0] virtme-ng-init: starting script", "[ 300.1] INFO: rcu_sched self-detected stall"]


def test_a_failing_guests_console_and_kernel_dump_are_shown_once(tmp_path):
    (tmp_path / "6.1-fexit-boot.log").write_text("[ 400.0] sysrq: Show Blocked State")
    (tmp_path / "6.1-fexit-dmesg.log").write_text("=== 12:05:00 no log has grown for 300 s\n--- 812/812 (python3) D")
    cells = [Cell("6.1", "fexit", "fail", "1 failed", log="6.1-fexit-boot.log")]
    assert tails(cells, tmp_path) == [
        "--- 6.1 / fexit: last 1 lines of 6.1-fexit-boot.log", "[ 400.0] sysrq: Show Blocked State",
        "--- 6.1 / fexit: last 2 lines of 6.1-fexit-dmesg.log", "=== 12:05:00 no log has grown for 300 s",
        "--- 812/812 (python3) D"]


def test_a_guest_whose_logs_stop_growing_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "STALL_TIMEOUT", 0.5)
    monkeypatch.setattr(kernel_matrix, "WATCH_INTERVAL", 0.1)
    (tmp_path / "6.1-fexit.log").write_text("....")
    # vng's child, like QEMU, must go too.
    guest = subprocess.Popen(["sh", "-c", "sleep 60 & echo $! > child; wait"], cwd=tmp_path, start_new_session=True)
    assert _watch(guest, tmp_path, "6.1-fexit") == "the guest was stopped after 0.5 s without output: it hangs"
    assert guest.returncode is not None
    child = int((tmp_path / "child").read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(100):
            os.kill(child, 0)
            time.sleep(0.05)


def test_the_console_and_the_guests_own_output_both_reach_the_boot_log(tmp_path):
    # Like QEMU and virtme: one writes to its stdout, the other opens that stdout anew.
    script = "echo console line 1; echo script line > /proc/self/fd/1; echo console line 2"
    assert kernel_matrix._run_guest(["sh", "-c", script], dict(os.environ), tmp_path, "6.1-fexit") is None
    assert (tmp_path / "6.1-fexit-boot.log").read_text() == "console line 1\nscript line\nconsole line 2\n"


def test_a_guest_that_keeps_writing_its_log_is_not_stopped_while_its_console_and_dump_do_not_count(tmp_path):
    log, console = tmp_path / "6.1-fexit.log", tmp_path / "6.1-fexit-boot.log"
    log.write_text("")
    quiet = Quiet(tmp_path, "6.1-fexit")
    time.sleep(0.2)
    console.write_text("[ 30.0] INFO: task python3 blocked for more than 120 seconds")
    (tmp_path / "6.1-fexit-dmesg.log").write_text("=== dump")
    (tmp_path / "6.1-kprobe.log").write_text("another guest's progress")
    assert quiet.seconds() >= 0.2
    log.write_text("tests/kernel/test_checks.py::test_setuid PASSED")
    assert quiet.seconds() < 0.1


def test_quiet_compares_sizes_not_the_guests_clock_with_the_hosts_mtimes(tmp_path):
    log = tmp_path / "6.1-fexit.log"
    log.write_text("....")
    os.utime(log, (time.time() + 3600, time.time() + 3600))  # a file stamped by a clock an hour ahead
    quiet = Quiet(tmp_path, "6.1-fexit")
    time.sleep(0.2)
    assert 0.2 <= quiet.seconds() < 1


def test_a_guest_that_ends_is_not_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "WATCH_INTERVAL", 0.1)
    assert _watch(subprocess.Popen(["true"]), tmp_path, "6.1-fexit") is None


def test_only_an_expected_mode_that_does_not_pass_is_a_verdict():
    cells = [
        Cell("host 6.18", "fexit", "not available", "EPERM"),
        Cell("host 6.18", "tracepoint", "pass", "66 passed"),
        Cell("6.1.0-56-amd64", "fexit", "fail", "1 failed"),
        Cell("6.1.0-56-amd64", "tracepoint", "not available", "no tracepoint"),
    ]
    assert verdicts(cells, "host 6.18") == ["6.1.0-56-amd64 / fexit: expected pass, got fail: 1 failed"]


def test_a_guest_saves_its_kernel_state_once_per_silence(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "DUMP_AFTER", 0.3)
    monkeypatch.setattr(kernel_matrix, "WATCH_INTERVAL", 0.05)
    dumps = []
    monkeypatch.setattr(kernel_matrix, "_dump_kernel_state", lambda dump, why: dumps.append((dump.name, why)))
    log = tmp_path / "6.1-kprobe.log"
    log.write_text("....")
    with _dump_when_silent(tmp_path, "6.1", "kprobe"):
        time.sleep(0.2)
        assert dumps == []
        time.sleep(0.6)
        assert dumps == [("6.1-kprobe-dmesg.log", "no log of 6.1-kprobe has grown for 0.3 s")]
        log.write_text("........")
        time.sleep(0.6)
    assert len(dumps) == 2


def test_the_kernel_dump_lists_running_threads_with_their_kernel_stacks():
    lines = kernel_matrix._running_tasks().splitlines()
    mine = [ln for ln in lines if ln.startswith(f"--- {os.getpid()}/{threading.get_native_id()} ")]
    assert len(mine) == 1 and mine[0].endswith(" R")


def test_the_kernel_dump_holds_memory_pressure_and_running_stacks_after_the_sysrq_keys(tmp_path, monkeypatch):
    keys = []
    monkeypatch.setattr(kernel_matrix, "SYSRQ_TRIGGER", types.SimpleNamespace(write_text=keys.append))
    monkeypatch.setattr(kernel_matrix.time, "sleep", lambda seconds: None)
    kernel_matrix._dump_kernel_state(tmp_path / "6.1-dmesg.log", "no log has grown for 300 s")
    dump = (tmp_path / "6.1-dmesg.log").read_text()
    assert keys == ["w", "l"]
    assert dump.startswith("=== ") and dump.splitlines()[0].endswith(" no log has grown for 300 s")
    assert "--- /proc/meminfo\nMemTotal:" in dump and "MemAvailable:" in dump
    assert f"--- {os.getpid()}/{threading.get_native_id()} " in dump


def test_a_stalled_guest_is_stopped_even_if_its_report_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_matrix, "STALL_TIMEOUT", 0.3)
    monkeypatch.setattr(kernel_matrix, "WATCH_INTERVAL", 0.1)
    guest = subprocess.Popen(["sleep", "60"], start_new_session=True)

    def broken_report():
        raise RuntimeError("the report broke")

    with pytest.raises(RuntimeError):
        _watch(guest, tmp_path, "6.1-fexit", broken_report)
    assert guest.returncode is not None


def test_side_by_side_tests_load_the_modes_the_kernel_must_attach():
    assert kernel_matrix.expected_here("7.2.13+deb14-amd64", guest=True) == ["fexit", "kprobe", "tracepoint"]
    assert kernel_matrix.expected_here("5.10.0-32-amd64", guest=True) == ["fexit", "kprobe"]
    assert kernel_matrix.expected_here("6.18.44-fc", guest=False) == ["tracepoint"]


def test_any_mode_tests_are_dealt_among_the_modes_a_kernel_must_attach():
    share = kernel_matrix.any_mode_share
    assert [share(m, ["fexit", "kprobe", "tracepoint"], first=False) for m in ("fexit", "kprobe", "tracepoint")] == [
        (0, 3), (1, 3), (2, 3)]
    assert share("tracepoint", ["fexit", "kprobe"], first=False) is None  # 6.1 has no tracepoint: nothing to deal
    assert share("kprobe", [], first=True) == (0, 1)  # nothing expected: the first that attaches runs them all
    assert share("tracepoint", [], first=False) is None


def _collected(share: str, marks: str = "") -> set[str]:
    done = subprocess.run(
        [os.sys.executable, "-m", "pytest", "tests/kernel", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", "not host_kernel and not kernel_independent and not podman" + marks],
        cwd=kernel_matrix.ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CAPEXP_TEST_MODE": "fexit", "CAPEXP_ANY_MODE_SHARE": share},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_dealt_shares_hold_every_any_mode_test_once_and_each_the_mode_dependent_ones():
    whole = _collected("0/1")
    first, second = _collected("0/2"), _collected("1/2")
    assert first | second == whole
    assert first & second == _collected("0/1", " and not any_mode")
    assert len(first ^ second) > 20 and abs(len(first) - len(second)) <= 1


def test_a_portability_kernel_runs_the_subset_and_its_cells_say_so(tmp_path, monkeypatch):
    commands = []

    def run_guest(cmd, env, out, guest_name, before_stop):
        commands.append(cmd[-1])
        kernel, mode = guest_name.rsplit("-", 1)
        (out / f"{guest_name}.json").write_text(json.dumps([{"kernel": kernel, "mode": mode, "result": "pass",
                                                              "detail": "20 passed", "seconds": 1.0}]))

    monkeypatch.setattr(kernel_matrix.kernel_images, "vmlinuz", lambda kernel: tmp_path)
    monkeypatch.setattr(kernel_matrix, "_run_guest", run_guest)
    monkeypatch.setattr(kernel_matrix, "SUBSET_KERNELS", {"5.10.0-46-amd64"})
    subset = kernel_matrix.boot("5.10.0-46-amd64", "fexit", "vng", tmp_path)
    full = kernel_matrix.boot("6.1.0-57-amd64", "fexit", "vng", tmp_path)
    assert [c.detail for c in subset] == ["portability subset: 20 passed"]
    assert [c.detail for c in full] == ["20 passed"]
    assert commands[0].endswith(f" --tests '{' '.join(kernel_matrix.PORTABILITY)}'")
    assert "--tests" not in commands[1]


def test_the_portability_subset_names_tests_that_exist():
    for path in kernel_matrix.PORTABILITY:
        file, _, name = path.partition("::")
        source = (kernel_matrix.ROOT / file).read_text()
        assert not name or f"\ndef {name}(" in source, path
