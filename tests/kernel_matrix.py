"""The kernel x attach-mode matrix: the real-kernel suite per mode, here and on other kernels under QEMU.

usage: kernel_matrix.py [--vng PATH] [--out DIR] [--markdown FILE] [--tests PATHS] [--portability KERNELS]
                        [--modes MODES] [--jobs N] [KERNEL...]
  KERNEL is a release with /boot/vmlinuz-KERNEL (e.g. 6.1.0-57-amd64), or one that
  tests/kernel_images.py unpacked into .kernels/ (a release, or a series such as 7.2),
  booted with virtme-ng under software emulation. The running kernel is always the first
  row. --tests: a subset of the suite, as pytest paths separated by spaces (default
  tests/kernel), here and in guests. --portability: these kernels (of KERNEL) run only
  PORTABILITY, the portability subset, instead; their cells say so.
  --modes: only these attach modes, separated by spaces (default: all three).
  --jobs: guests at once (default: one per CPU; each guest has one virtual CPU).

Each (kernel, mode) is a guest of its own, so that modes and kernels run side by side.
Inside it, `capability-exporter --config.check --probe.mode MODE` decides "not available"
(with the exporter's own reason); where it attaches, the tests/kernel suite runs with
CAPEXP_TEST_MODE=MODE: in every mode the tests that depend on it, and the tests marked
any_mode (what no attach mode changes) once per kernel, dealt out among the modes it must
attach (CAPEXP_ANY_MODE_SHARE; or all in its first that attaches). Exit status 1 if
a mode that EXPECTED says a kernel must pass does not pass; the tail of each failing log
is printed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

import code_patching
import guest_cpus
import kernel_images
from exporter.ebpf.kernel import ensure_tracefs

ROOT = Path(__file__).resolve().parent.parent
MODES = ("fexit", "kprobe", "tracepoint")
# The modes each kernel series must pass; other modes may be "not available".
EXPECTED = {
    "host": {"tracepoint"},
    "6.1": {"fexit", "kprobe"},
    "6.12": {"fexit", "kprobe"},
    "5.10": {"fexit", "kprobe"},
    "7.2": {"fexit", "kprobe", "tracepoint"},
}
# Emulation speed differs from machine to machine: a 6.1 guest took 13 min on one and over
# 40 on another, and guests side by side share the host (7.2's full suite had run 48 of its
# 59 tests, none failing, when a 45-minute limit stopped it). These bound a hang, not a slow
# run, and end a stuck CI guest (starting about 15 minutes in) inside CI's 90 minutes;
# TEST_TIMEOUT names a test that hangs in user space. A guest whose pytest logs stop
# growing for STALL_TIMEOUT is stopped (a kernel that livelocks runs no timer of pytest's);
# after DUMP_AFTER of silence the guest first saves its kernel's view of the blocked tasks
# and CPUs to <kernel>-<mode>-dmesg.log. The guest's kernel console goes to
# <kernel>-<mode>-boot.log on the host, so the kernel's own hang reports (hung tasks, soft
# lockups, RCU stalls) arrive even if the guest's user space stops.
GUEST_TIMEOUT = 85 * 60
SUITE_TIMEOUT = 70 * 60
# A 5.10 guest beside another took 470 s to start a test's two exporters (fixture setup,
# which pytest-timeout counts). TEST_TIMEOUT stays under STALL_TIMEOUT, so a hang is named.
TEST_TIMEOUT = 12 * 60
STALL_TIMEOUT = 15 * 60
DUMP_AFTER = 5 * 60
WATCH_INTERVAL = 5
SYSRQ_TRIGGER = Path("/proc/sysrq-trigger")
# One virtual CPU: with more, QEMU's multi-threaded TCG froze guests while their kernel
# patched its own text (see tests/code_patching.py, which each guest runs first).
GUEST_CPUS = 1
# Guests are CPU-bound under emulation; niced, they leave the host's own suite its CPU.
GUEST_NICE = 10
LOG_TAIL = 40
DUMP_TAIL = 150


@dataclass
class Cell:
    kernel: str
    mode: str
    result: str  # pass | fail | not available
    detail: str
    seconds: float = 0.0
    log: str = ""  # the file in the output directory that tells why, if it fails


# What each mode's suite runs (--tests): all of tests/kernel, or a subset to save a guest's time.
TESTS = ["tests/kernel"]
# The portability subset (--portability KERNELS): what a kernel most plausibly changes, at
# about a third of the suite's guest time. Exact counts and denials, audit handling,
# capability changes, run, the privilege drop and the systemd unit's set.
PORTABILITY = [
    "tests/kernel/test_counts.py",
    "tests/kernel/test_audit.py",
    "tests/kernel/test_changes.py",
    "tests/kernel/test_run.py",
    "tests/kernel/test_lifecycle.py::test_exporter_drops_all_its_capabilities_and_keeps_serving",
    "tests/kernel/test_systemd_unit.py",
]
# Kernels (releases) that run PORTABILITY instead of TESTS.
SUBSET_KERNELS: set[str] = set()


def run_modes(kernel: str, out: Path, guest: bool, modes: tuple[str, ...] = MODES) -> list[Cell]:
    """On the running kernel: each of modes' config check, then the suite where the mode attaches.

    Where EXPECTED names no modes for the kernel, the modes before them are checked too (not
    run): whether one attaches decides whether a mode runs the any_mode tests. A guest writes
    its cells to its report after each mode, so that a guest stopped midway still tells what
    finished.
    """
    cells: list[Cell] = []
    expected = expected_here(kernel, guest)
    attached = False
    checked = modes if expected else MODES[:max(MODES.index(m) for m in modes) + 1]
    for mode in checked:
        start = time.monotonic()
        _progress(f"{kernel} / {mode}: checking")
        check = subprocess.run(
            [sys.executable, "-m", "exporter", "--config.check", "--probe.mode", mode],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        first, attached = not attached, attached or check.returncode == 0
        if mode not in modes:
            continue
        if check.returncode != 0:
            cells.append(Cell(kernel, mode, "not available", _error_line(check.stderr), time.monotonic() - start))
        else:
            share = any_mode_share(mode, expected, first)
            _progress(f"{kernel} / {mode}: running the mode-dependent tests and {_describe_share(share)}")
            result, detail = _run_suite(kernel, mode, out, guest, expected, share)
            cells.append(Cell(kernel, mode, result, detail, time.monotonic() - start, _log(kernel, mode).name))
        _progress(f"{kernel} / {mode}: {cells[-1].result} after {cells[-1].seconds:.0f} s")
        if guest:
            (out / _report(kernel, mode)).write_text(json.dumps([asdict(c) for c in cells]))
    return cells


def any_mode_share(mode: str, expected: list[str], first: bool) -> Optional[tuple[int, int]]:
    """Which any_mode tests a mode's suite runs: (i, n) is every n-th from the i-th, None is none.

    They are dealt out among the modes the kernel must attach, so that its guests take
    about as long as each other; where it must attach none, the first mode that attaches
    runs them all."""
    if expected:
        return (expected.index(mode), len(expected)) if mode in expected else None
    return (0, 1) if first else None


def _describe_share(share: Optional[tuple[int, int]]) -> str:
    if share is None:
        return "no any_mode tests"
    return "every any_mode test" if share[1] == 1 else f"any_mode share {share[0] + 1} of {share[1]}"


def _progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _run_suite(kernel: str, mode: str, out: Path, guest: bool, expected: list[str],
               share: Optional[tuple[int, int]]) -> tuple[str, str]:
    # Guests see this checkout read-only and are not the machine the host_kernel tests describe;
    # they have no podman store (the host's is not theirs to write).
    # Under emulation every exporter start compiles for seconds; a second worker runs
    # while the first waits (on 9p, a scrape, a workload's sleep).
    excluded = ["host_kernel", "kernel_independent", "podman"] if guest else []
    if share is None:
        excluded.append("any_mode")
    selection = ["-m", " and ".join(f"not {m}" for m in excluded)] if excluded else []
    if guest:
        selection += ["-n", "2"]
    log = out / _log(kernel, mode)
    with open(log, "w") as f:
        try:
            watch = _dump_when_silent(out, kernel, mode) if guest else contextlib.nullcontext()
            with watch:
                done = subprocess.run(
                    [sys.executable, "-m", "pytest", *TESTS, "-p", "no:cacheprovider", "-v",
                     f"--timeout={TEST_TIMEOUT}", "--durations=15", *selection],
                    cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=SUITE_TIMEOUT,
                    env={**os.environ, "CAPEXP_TEST_MODE": mode, "PYTHONDONTWRITEBYTECODE": "1",
                         "CAPEXP_EXPECTED_MODES": " ".join(expected),
                         "CAPEXP_ANY_MODE_SHARE": "/".join(map(str, share or (0, 1)))},
                )
        except subprocess.TimeoutExpired:
            return "fail", f"the suite did not finish in {SUITE_TIMEOUT} s"
    return ("pass" if done.returncode == 0 else "fail"), _pytest_summary(log.read_text())


# The files in the output directory, per guest (kernel and mode): its pytest log, its
# report of what it finished, its console, its kernel dump, its symbols and CPU samples.
def _guest(kernel: str, mode: str) -> str:
    return f"{_slug(kernel)}-{mode}"


def _log(kernel: str, mode: str) -> Path:
    return Path(f"{_guest(kernel, mode)}.log")


def _report(kernel: str, mode: str) -> Path:
    return Path(f"{_guest(kernel, mode)}.json")


def _extra(kernel: str, mode: str, what: str) -> Path:
    """The guest's other files: "boot.log" (console), "dmesg.log" (kernel dump), "kallsyms", "cpus.log"."""
    return Path(f"{_guest(kernel, mode)}-{what}")


class Quiet:
    """How long one guest's own output (its pytest log and report in out) has not changed.

    Sizes and mtimes are compared, never mtimes against a clock: a 9p file's mtime comes
    from the host's clock and the guest's may differ. The boot log (the kernel's console)
    and the kernel dump are not the guest's progress, and other guests' files are theirs.
    """

    def __init__(self, out: Path, guest: str) -> None:
        self.out = out
        self.names = {f"{guest}.log", f"{guest}.json"}
        self.seen = self._snapshot()
        self.since = time.monotonic()

    def seconds(self) -> float:
        now = self._snapshot()
        if now != self.seen:
            self.seen, self.since = now, time.monotonic()
        return time.monotonic() - self.since

    def _snapshot(self) -> list[tuple[str, int, int]]:
        files = [f for f in self.out.iterdir() if f.name in self.names]
        return sorted((f.name, st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])


@contextlib.contextmanager
def _dump_when_silent(out: Path, kernel: str, mode: str) -> Iterator[None]:
    """In a guest: once per silence of DUMP_AFTER in its logs, save the kernel's blocked tasks and CPU stacks."""
    done = threading.Event()
    quiet, dump = Quiet(out, _guest(kernel, mode)), out / _extra(kernel, mode, "dmesg.log")

    def watch() -> None:
        dumped = None
        while not done.wait(WATCH_INTERVAL):
            if quiet.seconds() > DUMP_AFTER and dumped != quiet.since:
                dumped = quiet.since
                _dump_kernel_state(dump, f"no log of {_guest(kernel, mode)} has grown for {DUMP_AFTER} s")

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def _dump_kernel_state(dump: Path, why: str) -> None:
    # sysrq w: tasks in uninterruptible sleep; l: a backtrace of every CPU. Both go to the
    # console too, which reaches the host even if this process blocks below.
    try:
        for key in "wl":
            SYSRQ_TRIGGER.write_text(key)
        time.sleep(2)
    except OSError as err:
        why += f" (sysrq: {err.strerror})"
    with open(dump, "a") as f:
        f.write(f"=== {time.strftime('%H:%M:%S')} {why}\n")
        f.flush()
        # A guest short of memory thrashes (re-reading programs over 9p) rather than failing.
        for name in ("/proc/meminfo", "/proc/pressure/memory", "/proc/pressure/cpu"):
            with contextlib.suppress(OSError):
                f.write(f"--- {name}\n{Path(name).read_text()}")
        f.write(_running_tasks())
        f.flush()
        try:
            f.write(subprocess.run(["dmesg"], capture_output=True, text=True, timeout=60).stdout[-60000:])
        except (OSError, subprocess.SubprocessError) as err:
            f.write(f"dmesg: {err}\n")


def _running_tasks() -> str:
    """Each running or blocked thread with its kernel stack.

    Read from /proc/*/task/*/{stat,stack}, not with ps: ps reads cmdline, which waits
    for the mm lock of a task stuck holding it.
    """
    lines = []
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        try:
            # "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ")".
            name, _, rest = (task / "stat").read_text().rpartition(")")
            state = rest.split()[0]
            if state in ("R", "D"):
                lines.append(f"--- {task.parent.parent.name}/{task.name} {name}) {state}")
                lines.append((task / "stack").read_text())
        except (OSError, IndexError):
            continue
    return "\n".join(lines) + "\n"


def _pytest_summary(text: str) -> str:
    lines = [ln.strip("= ") for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return lines[-1] if lines else "no pytest summary"


def _error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if "error: " in line:
            return line.split("error: ", 1)[1]
    return stderr.strip().splitlines()[-1] if stderr.strip() else "no reason given"


def _slug(kernel: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]", "_", kernel)


def release(kernel: str) -> str:
    """A series that tests/kernel_images.py linked in .kernels (7.2) as its release; anything else as it is."""
    link = kernel_images.KERNELS_DIR / kernel
    return link.resolve().name if link.is_symlink() else kernel


def boot(kernel: str, mode: str, vng: str, out: Path) -> list[Cell]:
    """Boot KERNEL's image under QEMU (TCG) and run the guest side of one mode there."""
    image = kernel_images.vmlinuz(kernel)
    if not image.exists():
        return [Cell(kernel, mode, "fail", f"{image} is not installed (make kernel-images fetches it)")]
    _progress(f"booting {kernel} for {mode} under QEMU (software emulation)")
    (out / _report(kernel, mode)).unlink(missing_ok=True)
    inner = f"cd {ROOT} && {sys.executable} tests/kernel_matrix.py --guest {kernel} --mode {mode} --out {out}"
    if tests_for(kernel) != ["tests/kernel"]:
        inner += f" --tests '{' '.join(tests_for(kernel))}'"
    monitor = Path(tempfile.mkdtemp(prefix="kernel-matrix-")) / "monitor"
    # -v: the kernel's console into the boot log; a soft lockup shows every CPU's stack there.
    cmd = ["nice", "-n", str(GUEST_NICE), vng, "-v", "-r", str(image), "--disable-kvm", "--force-9p", "--memory", "3G", "--cpus", str(GUEST_CPUS),
           "--append", "softlockup_all_cpu_backtrace=1", *guest_cpus.qemu_args(monitor),
           "--rwdir", str(out), "--exec", inner]
    # vng runs virtme-run from PATH: the one beside it in its venv.
    env = {**os.environ, "PATH": f"{Path(vng).parent}:{os.environ.get('PATH', '')}"}

    def where_the_cpus_are() -> None:
        # Any error: this report explains a failure and must not replace it with its own.
        try:
            guest = guest_cpus.report(monitor, out / _extra(kernel, mode, "kallsyms"))
        except Exception as err:  # noqa: BLE001
            guest = f"cannot read QEMU's monitor: {err!r}\n"
        (out / _extra(kernel, mode, "cpus.log")).write_text(guest + _host_load())

    try:
        stopped = _run_guest(cmd, env, out, _guest(kernel, mode), before_stop=where_the_cpus_are)
    except OSError as err:
        return [Cell(kernel, mode, "fail", f"cannot run {vng}: {err.strerror}")]
    finally:
        shutil.rmtree(monitor.parent, ignore_errors=True)
    cells = _finished(kernel, mode, out, stopped or "the guest wrote no report")
    if kernel in SUBSET_KERNELS:
        for cell in cells:
            cell.detail = f"portability subset: {cell.detail}"
    return cells


def tests_for(kernel: str) -> list[str]:
    return PORTABILITY if kernel in SUBSET_KERNELS else TESTS


def boot_all(kernels: list[str], vng: str, out: Path, jobs: int, modes: tuple[str, ...] = MODES) -> list[Cell]:
    """A guest per kernel and mode, jobs at a time; the cells in kernel order, then mode order."""
    # Mode by mode: the modes a kernel cannot attach, last in MODES, end after their check.
    order = [(kernel, mode) for mode in modes for kernel in kernels]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        done = dict(zip(order, pool.map(lambda guest: boot(*guest, vng, out), order)))
    return [cell for kernel in kernels for mode in modes for cell in done[(kernel, mode)]]


def precompile() -> None:
    """Write the checkout's bytecode, and pytest's rewritten test modules, for the guests to read.

    Guests see the checkout read-only and run with PYTHONDONTWRITEBYTECODE: without these,
    every exporter start there compiles its modules again (seconds under emulation), and
    every pytest worker rewrites every test module."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "exporter", "tests"], cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, check=True)
    subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *TESTS],
                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=True)


def run_all(host_label: str, kernels: list[str], vng: str, out: Path, jobs: int,
            modes: tuple[str, ...] = MODES) -> list[Cell]:
    """The host's row and the guests at the same time; the host's cells first.

    The host's suite mostly waits (about 0.8 of a CPU here, over 5 minutes), so beside the
    guests it costs them less than it would cost the run in front of them; the guests run
    niced (GUEST_NICE) so that its waits stay short."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        host = pool.submit(run_modes, host_label, out, False, modes)
        guests = boot_all(kernels, vng, out, jobs, modes)
        return host.result() + guests


def _run_guest(cmd: list[str], env: dict[str, str], out: Path, guest_name: str,
               before_stop: Callable[[], None] = lambda: None) -> Optional[str]:
    """Run cmd with its output in the guest's boot log, watched by _watch."""
    with open(out / f"{guest_name}-boot.log", "wb") as log:
        # A session of its own, so that a stop reaches QEMU too, not only vng.
        guest = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
        # Through a pipe: QEMU (the console) and virtme (the script's output) each open the
        # guest's stdout anew; on a file, each from offset 0, they overwrote each other.
        copier = threading.Thread(target=_copy, args=(guest.stdout, log), daemon=True)
        copier.start()
        stopped = _watch(guest, out, guest_name, before_stop)
        copier.join(timeout=30)
    return stopped


def _host_load() -> str:
    """What else this machine runs: a guest starved of host CPUs looks hung from outside."""
    try:
        top = subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=60).stdout.splitlines()[:12]
    except (OSError, subprocess.SubprocessError) as err:
        top = [f"ps: {err}"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"host: {os.cpu_count()} CPUs, load average {load}\n" + "\n".join(line[:200] for line in top) + "\n"


def _copy(source: IO[bytes], log: IO[bytes]) -> None:
    for chunk in iter(lambda: source.read1(65536), b""):
        log.write(chunk)
        log.flush()


def _watch(guest: subprocess.Popen, out: Path, guest_name: str,
           before_stop: Callable[[], None] = lambda: None) -> Optional[str]:
    """Wait for the guest; stop it and say why if it runs too long or its logs stop growing."""
    start, quiet = time.monotonic(), Quiet(out, guest_name)
    while guest.poll() is None:
        time.sleep(WATCH_INTERVAL)
        if time.monotonic() - start > GUEST_TIMEOUT:
            why = f"the guest did not finish in {GUEST_TIMEOUT} s"
        elif quiet.seconds() > STALL_TIMEOUT:
            why = f"the guest was stopped after {STALL_TIMEOUT} s without output: it hangs"
        else:
            continue
        try:
            before_stop()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(guest.pid, signal.SIGKILL)
            guest.wait()
        return why
    return None


def _finished(kernel: str, mode: str, out: Path, why_not: str) -> list[Cell]:
    """The cell the guest reported, or a failure with why_not if it did not finish."""
    report = out / _report(kernel, mode)
    cells = [Cell(**c) for c in json.loads(report.read_text())] if report.exists() else []
    if not cells:
        log = _log(kernel, mode) if (out / _log(kernel, mode)).exists() else _extra(kernel, mode, "boot.log")
        cells.append(Cell(kernel, mode, "fail", why_not, log=log.name))
    return cells


def tails(cells: list[Cell], out: Path) -> list[str]:
    """The last lines of each failing cell's log, and of a failing guest's console and kernel dump."""
    logs = {c.log: (f"{c.kernel} / {c.mode}", LOG_TAIL) for c in cells if c.result == "fail" and c.log}
    for c in cells:
        if c.result == "fail":
            for what in ("boot.log", "dmesg.log", "cpus.log"):
                logs.setdefault(_extra(c.kernel, c.mode, what).name, (f"{c.kernel} / {c.mode}", DUMP_TAIL))
    shown = []
    for name, (what, count) in logs.items():
        shown += _tail(out / name, what, count)
    return shown


def _tail(log: Path, what: str, count: int) -> list[str]:
    if not log.is_file():
        return []
    lines = log.read_text(errors="replace").splitlines()[-count:]
    return [f"--- {what}: last {len(lines)} lines of {log.name}", *lines]


def expected(kernel: str) -> set[str]:
    series = ".".join(kernel.split(".")[:2]) if kernel != "host" else "host"
    return EXPECTED.get(series, set())


def expected_here(kernel: str, guest: bool) -> list[str]:
    """The modes this kernel must attach, in MODES order: the any_mode tests are dealt among them, and the
    side_by_side tests load them at once."""
    wanted = expected(kernel if guest else "host")
    return [mode for mode in MODES if mode in wanted]


def verdicts(cells: list[Cell], host_label: str) -> list[str]:
    """The cells that break an expectation: a mode a kernel must pass that did not pass."""
    problems = []
    for c in cells:
        key = "host" if c.kernel == host_label else c.kernel
        if c.mode in expected(key) and c.result != "pass":
            problems.append(f"{c.kernel} / {c.mode}: expected pass, got {c.result}: {c.detail}")
        elif c.result == "fail":
            problems.append(f"{c.kernel} / {c.mode}: {c.detail}")
    return problems


def table(cells: list[Cell]) -> str:
    width = max(len(c.kernel) for c in cells)
    rows = [f"{'kernel':<{width}}  {'mode':<10}  {'result':<13}  {'time':>6}  detail"]
    for c in cells:
        log = f" (log: {c.log})" if c.log else ""
        rows.append(f"{c.kernel:<{width}}  {c.mode:<10}  {c.result:<13}  {c.seconds:5.0f}s  {c.detail}{log}")
    return "\n".join(rows)


def markdown(cells: list[Cell]) -> str:
    rows = ["| kernel | mode | result | detail |", "| --- | --- | --- | --- |"]
    rows += [f"| {c.kernel} | {c.mode} | {c.result} | {c.detail} |" for c in cells]
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kernels", nargs="*")
    parser.add_argument("--vng", default="vng")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--tests", help="pytest paths to run instead of tests/kernel, separated by spaces")
    parser.add_argument("--portability", default="", metavar="KERNELS",
                        help="kernels, separated by spaces, that run only the portability subset")
    parser.add_argument("--modes", default=" ".join(MODES), help="attach modes to run, separated by spaces")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="guests at once")
    parser.add_argument("--guest", metavar="KERNEL", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    modes = tuple(m for m in MODES if m in args.modes.split())
    if not modes or set(args.modes.split()) - set(MODES):
        parser.error(f"--modes takes some of {', '.join(MODES)}")
    if args.tests:
        TESTS[:] = args.tests.split()
    unlisted = set(args.portability.split()) - set(args.kernels)
    if unlisted:
        parser.error(f"--portability names kernels the matrix does not boot: {', '.join(sorted(unlisted))}")
    SUBSET_KERNELS.update(release(k) for k in args.portability.split())
    out = args.out or Path(tempfile.mkdtemp(prefix="kernel-matrix-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.guest:
        # In the background: reading kallsyms takes seconds under emulation.
        threading.Thread(target=guest_cpus.save_kallsyms, args=(out / _extra(args.guest, args.mode, "kallsyms"),),
                         daemon=True).start()
        _progress(code_patching.check(ensure_tracefs()))
        run_modes(args.guest, out, guest=True, modes=(args.mode,))
        return 0
    host_label = f"host {platform.release()}"
    if args.kernels:
        precompile()
    cells = run_all(host_label, [release(k) for k in args.kernels], args.vng, out, args.jobs, modes)
    print(table(cells))
    print(f"logs: {out}")
    if args.markdown:
        args.markdown.write_text(markdown(cells))
    problems = verdicts(cells, host_label)
    if problems:
        print("\n".join(tails(cells, out)))
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
