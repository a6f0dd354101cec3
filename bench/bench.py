"""What the exporter costs: per check, per syscall, per scrape, at start-up and in memory, in one table.

usage: bench.py [--smoke] [--rounds N] [--calls N] [--repeat N] [--sizes 1000,10000,50000]
                [--scrapes N] [--hold N] [--mode MODE] [--out FILE] [--guest KERNEL --vng PATH]
  Run as root from a checkout, with the project's venv (make bench). Prints one markdown table
  (and writes it to --out): every figure is measured in this one run, interleaved, as medians.
  --guest KERNEL: run the bench instead in a virtme-ng guest of KERNEL (as make test-kernels takes it), once per
  attach mode of --guest-modes (default fexit,kprobe), under software emulation: absolute
  times there mean little, the ratios are what compare (make bench-kernels).

Phase 1, syscalls. Each round sets up every configuration in turn, in an order that rotates
from round to round, and runs each syscall loop under it --repeat times (bench/loops.c, timed
in C; the fastest run counts, since other load only ever adds time):
  none          nothing attached: the baseline
  empty         an empty BPF program on the exporter's cap_capable hook (the floor)
  bpftrace      bpftrace counting checks by the same key (comm, capability)
  changes off   the exporter with changes.enabled: false
  changes on    the exporter with change tracking
The loops: kill(pid, 0) of a process of another user (one CAP_KILL check, and no syscall that
change tracking hooks), setuid(0) as root (one CAP_SETUID check, in a syscall that commits
credentials), getppid() (no check: what every other syscall on the node pays). A figure is the
median over rounds of (ns per call under the configuration - ns per call with nothing, in the
same round). Each exporter start (with --probe.mode, default auto, as users start it) is timed
from exec to its first /metrics answer.

Phase 2, scrapes. Two exporters run side by side, capability_unused on and off; the checks map
is filled with real checks (one CAP_KILL check per distinct comm), and a population of waiting
root processes with distinct comms gives the unused section something to report. At each size
both are scraped in turn, with Prometheus's Accept and Accept-Encoding headers; then the
serving processes' RSS is read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import yaml

from exporter.core import proc_status

ROOT = Path(__file__).resolve().parent.parent
LOOPS_SOURCE = ROOT / "bench" / "loops.c"
# What Prometheus 2.x sends: OpenMetrics first, and gzip.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
CONFIGS = ("none", "empty", "bpftrace", "changes off", "changes on")
LOOPS = ("kill", "setuid", "getppid")
START_TIMEOUT = 300  # a bound on a hang: under emulation a start takes a minute
HOLD_PREFIX = "bh"
FILL_PREFIX = "bf"

EMPTY_PROGRAMS = {
    "tracepoint": "TRACEPOINT_PROBE(capability, cap_capable) { return 0; }",
    "fexit": "struct cred; struct user_namespace;\n"
             "KRETFUNC_PROBE(cap_capable, const struct cred *cred, struct user_namespace *ns, int cap,"
             " unsigned int opts, int ret) { return 0; }",
    "kprobe": "int kprobe__cap_capable(void *ctx) { return 0; }\n"
              "int kretprobe__cap_capable(void *ctx) { return 0; }",
}
BPFTRACE_PROGRAMS = {
    "tracepoint": "tracepoint:capability:cap_capable { @[comm, args->cap] = count(); }",
    "fexit": "kretfunc:cap_capable { @[comm, args->cap] = count(); }",
    "kprobe": "kprobe:cap_capable { @[comm, arg2] = count(); }",
}


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# --- processes the bench runs ------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 60, headers: Optional[dict] = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        status = proc_status.parse(f.read())
    return {key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM") if key in status}


class Exporter:
    """The real exporter, started as a user starts it, timed to its first /metrics answer."""

    def __init__(self, workdir: Path, name: str, config: dict, mode: str):
        path = workdir / f"{name.replace(' ', '-')}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.errors = tempfile.TemporaryFile()
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--config.file", str(path), "--probe.mode", mode,
             "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "warn"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.errors,
        )
        self.startup = self._first_answer(start)
        self.rss_at_start = memory(self.proc.pid)["VmRSS"]

    def _first_answer(self, start: float) -> float:
        deadline = start + START_TIMEOUT
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                self.errors.seek(0)
                raise SystemExit(f"the exporter exited: {self.errors.read().decode(errors='replace')[-2000:]}")
            try:
                get(self.url, timeout=START_TIMEOUT)
                return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.005)
        raise SystemExit(f"the exporter did not answer within {START_TIMEOUT} s")

    def scrape(self) -> tuple[float, int]:
        """Seconds for one scrape as Prometheus makes it, and the compressed size."""
        start = time.perf_counter()
        body = get(self.url, headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        return time.perf_counter() - start, len(body)

    def text(self) -> str:
        return get(self.url).decode()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Waiting:
    """A helper process that prints "ready" once set up and ends when its stdin closes."""

    def __init__(self, cmd: list[str], ready: str = "ready", **options):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **options)
        for line in self.proc.stdout:
            if line.strip() == ready:
                return
        raise SystemExit(f"{cmd[0]} ended before it was ready (exit status {self.proc.wait()})")

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Bpftrace:
    def __init__(self, mode: str):
        program = 'BEGIN { printf("ready\\n"); } ' + BPFTRACE_PROGRAMS[mode]
        self.proc = subprocess.Popen(["bpftrace", "-e", program], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        for line in self.proc.stdout:
            if line.strip() == "ready":
                return
        raise SystemExit(f"bpftrace ended before it attached (exit status {self.proc.wait()})")

    def stop(self) -> None:
        self.proc.send_signal(2)  # SIGINT: bpftrace prints its map and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=60)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def empty_program(mode: str) -> None:
    """bench.py --empty MODE: attach an empty program to the mode's hook until stdin closes."""
    from exporter.ebpf import kernel

    os.environ["BCC_KERNEL_SOURCE"] = str(ROOT / "bpf" / "shim")
    from bcc import BPF

    flags = [f"-I{ROOT / 'bpf'}", f"-DLINUX_VERSION_CODE={kernel.version_code()}"]
    bpf = BPF(text=EMPTY_PROGRAMS[mode], cflags=flags)
    print("ready", flush=True)
    sys.stdin.read()
    bpf.cleanup()


@contextlib.contextmanager
def configuration(name: str, mode: str, exporter_mode: str, workdir: Path, base: dict,
                  result: "Results") -> Iterator[None]:
    """name set up (mode: the hook the exporter attached to; exporter_mode: its --probe.mode)."""
    running = None
    if name == "empty":
        running = Waiting([sys.executable, str(Path(__file__).resolve()), "--empty", mode])
    elif name == "bpftrace":
        running = Bpftrace(mode)
    elif name.startswith("changes"):
        config = {**base, "changes": {"enabled": name == "changes on"}}
        running = Exporter(workdir, name, config, exporter_mode)
        result.startup.setdefault(name, []).append(running.startup)
        result.rss_start.setdefault(name, []).append(running.rss_at_start)
    try:
        yield
    finally:
        if running is not None:
            running.stop()


def loop(loops: Path, kind: str, calls: int) -> float:
    done = subprocess.run([str(loops), kind, str(calls)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"loops {kind}: {done.stderr.strip()}")
    return float(done.stdout)


# --- results -------------------------------------------------------------------------------------

@dataclass
class Results:
    mode: str = ""
    rounds: int = 0
    calls: int = 0
    ns: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # config -> loop -> per round
    startup: dict[str, list[float]] = field(default_factory=dict)
    rss_start: dict[str, list[float]] = field(default_factory=dict)
    scrapes: list[dict] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    load: list[str] = field(default_factory=list)  # the load average at the start and at the end

    def overhead(self, config: str, kind: str) -> float:
        """Median over rounds of (config - none), paired within each round."""
        pairs = zip(self.ns[config][kind], self.ns["none"][kind])
        return statistics.median(c - n for c, n in pairs)

    def base(self, kind: str) -> float:
        return statistics.median(self.ns["none"][kind])


def run_syscalls(args, loops: Path, workdir: Path, result: Results) -> None:
    base = {"maps": {"checks_max_entries": 10240}}
    configs = [c for c in CONFIGS if c != "bpftrace" or shutil.which("bpftrace")]
    result.ns = {c: {k: [] for k in LOOPS} for c in configs}
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        log(f"round {r + 1}/{args.rounds}: {', '.join(order)}")
        for name in order:
            with configuration(name, result.mode, args.mode, workdir, base, result):
                best = {kind: float("inf") for kind in LOOPS}
                for _ in range(args.repeat):
                    for i in range(len(LOOPS)):
                        kind = LOOPS[(r + i) % len(LOOPS)]
                        best[kind] = min(best[kind], loop(loops, kind, args.calls))
                for kind in LOOPS:
                    result.ns[name][kind].append(best[kind])


def run_scrapes(args, loops: Path, workdir: Path, result: Results) -> None:
    capacity = max(args.sizes) + 2048
    base = {"maps": {"checks_max_entries": capacity}}
    population = Waiting([str(loops), "hold", HOLD_PREFIX, str(args.hold)])
    exporters = {}
    try:
        for unused in ("on", "off"):
            config = {**base, "unused": {"enabled": unused == "on"}}
            exporters[unused] = Exporter(workdir, f"unused {unused}", config, args.mode)
        filled = 0
        for size in args.sizes:
            # Other programs check too; count what the map holds, then top it up with our comms.
            have = entries(exporters["off"])
            if have < size:
                subprocess.run([str(loops), "fill", FILL_PREFIX, str(filled), str(size - have)], check=True)
                filled += size - have
            series = entries(exporters["off"])
            times: dict[str, list[float]] = {"on": [], "off": []}
            sizes: dict[str, int] = {}
            for i in range(args.scrapes):
                for unused in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    seconds, size_bytes = exporters[unused].scrape()
                    times[unused].append(seconds)
                    sizes[unused] = size_bytes
            row = {"series": series}
            for unused in ("on", "off"):
                text = exporters[unused].text()
                row[f"samples {unused}"] = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
                row[f"bytes {unused}"] = len(text)
                row[f"gzip bytes {unused}"] = sizes[unused]
                row[f"scrape {unused}"] = statistics.median(times[unused])
                mem = memory(exporters[unused].proc.pid)
                row[f"rss {unused}"] = mem["VmRSS"]
                row[f"hwm {unused}"] = mem["VmHWM"]
            log(f"{series} series: scrape {row['scrape off'] * 1000:.0f} ms (unused off), "
                f"{row['scrape on'] * 1000:.0f} ms (unused on)")
            result.scrapes.append(row)
    finally:
        for exporter in exporters.values():
            exporter.stop()
        population.stop()


def entries(exporter: Exporter) -> int:
    for line in exporter.text().splitlines():
        if line.startswith('capability_exporter_bpf_map_entries{map="checks"}'):
            return int(float(line.split()[-1]))
    raise SystemExit("the exporter reports no checks map entries")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def other_bpf_programs() -> list[str]:
    """Tracing programs that something else keeps loaded: they make every figure noisier."""
    try:
        listing = json.loads(subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True,
                                            timeout=60).stdout or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    kinds = ("tracepoint", "kprobe", "tracing", "raw_tracepoint", "perf_event")
    return sorted({f"{p.get('type')}:{p.get('name', '?')}" for p in listing if p.get("type") in kinds})


# --- the table -----------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"


def plus(ns: float) -> str:
    return f"{ns:+.0f} ns"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("systemd-detect-virt") else ""
    return (f"Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB"
            + (f", virtualised ({virt})" if virt and virt != "none" else "")
            + f", Python {platform.python_version()}")


def table(result: Results, args) -> str:
    out = [f"`make bench` ({'smoke run' if args.smoke else 'full run'}), {time.strftime('%Y-%m-%d')}: "
           f"{result.mode} mode (--probe.mode {args.mode}); {result.rounds} rounds, each loop the fastest of "
           f"{args.repeat} runs of {result.calls} calls; {machine()}; load average {' -> '.join(result.load)}.", ""]
    if result.others:
        out += [f"Other tracing programs were loaded during the run (noisier figures): {', '.join(result.others)}.", ""]
    floor = {k: result.overhead("empty", k) for k in LOOPS} if result.ns else {}
    if result.ns:
        out += syscall_rows(result, floor)
    if result.scrapes:
        out += scrape_rows(result)
    out += goals(result, floor)
    return "\n".join(out) + "\n"


def syscall_rows(result: Results, floor: dict[str, float]) -> list[str]:
    have = [c for c in CONFIGS if c in result.ns and c != "none"]
    out = ["| ns per call | nothing attached | " + " | ".join(have) + " |",
           "| --- | --- | " + " | ".join("---" for _ in have) + " |"]
    names = {"kill": "kill(pid, 0): one CAP_KILL check", "setuid": "setuid(0) as root: one CAP_SETUID check",
             "getppid": "getppid(): no check"}
    for kind in LOOPS:
        cells = [f"{result.base(kind):.0f}"]
        for config in have:
            over = result.overhead(config, kind)
            cell = plus(over)
            if kind == "getppid":
                cell += f" ({over / result.base(kind):+.0%})"
            elif config != "empty":
                cell += f" ({ratio(over, floor[kind])} the floor)"
            cells.append(cell)
        out.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    return out + [""]


def scrape_rows(result: Results) -> list[str]:
    out = ["| checks map entries | samples, unused off / on | scrape, unused off | scrape, unused on | "
           "unused adds | RSS after, unused off / on (peak) |",
           "| --- | --- | --- | --- | --- | --- |"]
    for row in result.scrapes:
        out.append(
            f"| {row['series']} | {row['samples off']} / {row['samples on']} | {ms(row['scrape off'])} | "
            f"{ms(row['scrape on'])} | {ms(row['scrape on'] - row['scrape off'])} | "
            f"{row['rss off']:.0f} / {row['rss on']:.0f} MB ({max(row['hwm off'], row['hwm on']):.0f} MB) |")
    return out + [""]


def goals(result: Results, floor: dict[str, float]) -> list[str]:
    rows = ["| goal | measured | met |", "| --- | --- | --- |"]

    def row(goal: str, measured: str, met: bool) -> None:
        rows.append(f"| {goal} | {measured} | {'yes' if met else 'no'} |")

    if result.ns:
        check_off = result.overhead("changes off", "kill")
        check_on = result.overhead("changes on", "kill")
        worst = max(check_off, check_on)
        row("per check on kill(pid, 0) within 1.2x the empty program's cost",
            f"{plus(check_off)} (changes off), {plus(check_on)} (on); floor {plus(floor['kill'])}: "
            f"{ratio(worst, floor['kill'])}", worst <= 1.2 * floor["kill"])
        check = result.overhead("changes off", "setuid")
        tracking = result.overhead("changes on", "setuid") - check
        row("change tracking adds at most the check's cost on setuid(0)",
            f"tracking {plus(tracking)}, check {plus(check)}", tracking <= check)
        tax = result.overhead("changes on", "getppid")
        off = result.overhead("changes off", "getppid")
        row("no measurable tax on getppid() with change tracking on",
            f"{plus(tax)} ({tax / result.base('getppid'):+.0%}); changes off {plus(off)}",
            tax <= max(10.0, 0.03 * result.base("getppid")))
    big = [r for r in result.scrapes if r["series"] >= 9000]
    if big:
        r = big[0]
        row(f"a scrape of {r['series']} series under 100 ms", ms(r["scrape off"]), r["scrape off"] < 0.1)
        added = r["scrape on"] - r["scrape off"]
        row("capability_unused adds under 20 ms", ms(added), added < 0.02)
        rss = max(r["rss on"], r["rss off"])
        row(f"RSS under 40 MB after scrapes of {r['series']} series", f"{rss:.0f} MB", rss < 40)
    starts = [s for name in ("changes off", "changes on") for s in result.startup.get(name, [])]
    if starts:
        on = statistics.median(result.startup["changes on"])
        off = statistics.median(result.startup["changes off"])
        row("start-up, exec to the first /metrics answer, under 2 s",
            f"{on:.2f} s (changes on), {off:.2f} s (off); all {min(starts):.2f}-{max(starts):.2f} s",
            max(on, off) < 2)
        rss = [r for name in result.rss_start for r in result.rss_start[name]]
        rows.append(f"| (RSS of the serving process at start) | {statistics.median(rss):.0f} MB | |")
    return rows + [""]


# --- in a guest ----------------------------------------------------------------------------------

GUEST_TIMEOUT = 150 * 60
# The options passed on to the bench inside the guest.
PASSED_ON = ("smoke", "rounds", "calls", "repeat", "sizes", "scrapes", "hold", "skip")


def in_guest(args) -> int:
    """Boot the kernel under QEMU (TCG, one CPU) and run this bench there, once per mode."""
    sys.path.insert(0, str(ROOT / "tests"))  # the matrix's kernel lookup, /boot or .kernels/
    import kernel_images

    image = kernel_images.vmlinuz(args.guest)
    if not image.exists():
        raise SystemExit(f"{image} is not there (make kernel-images KERNELS={args.guest} fetches it)")
    out = Path(tempfile.mkdtemp(prefix="capexp-bench-guest-"))
    passed = []
    for name in PASSED_ON:
        value = getattr(args, name)
        if value is True:
            passed.append(f"--{name}")
        elif value not in (None, False, ""):
            passed += [f"--{name}", str(value)]
    modes = args.guest_modes.split(",")
    runs = [f"{sys.executable} bench/bench.py --mode {mode} --out {out}/{mode}.md {' '.join(passed)}"
            f" 2>> {out}/log" for mode in modes]
    inner = f"cd {ROOT} && " + "; ".join(runs)
    cmd = [args.vng, "-r", str(image), "--disable-kvm", "--force-9p", "--memory", "3G", "--cpus", "1",
           "--rwdir", str(out), "--exec", inner]
    env = {**os.environ, "PATH": f"{Path(args.vng).parent}:{os.environ.get('PATH', '')}"}
    log(f"booting {args.guest} under QEMU; the bench's progress goes to {out}/log")
    subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=GUEST_TIMEOUT)
    tables = [(out / f"{mode}.md") for mode in modes]
    text = "\n".join(t.read_text() for t in tables if t.exists())
    print(text or f"the guest wrote no table; see {out}/log")
    if args.out and text:
        args.out.write_text(text)
    return 0 if all(t.exists() for t in tables) else 1


# --- main ------------------------------------------------------------------------------------------

def attach_mode(mode: str) -> str:
    done = subprocess.run([sys.executable, "-m", "exporter", "--config.check", "--probe.mode", mode,
                           "--config.file", "/dev/null"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the exporter cannot attach here: {done.stderr.strip()}")
    return done.stdout.split("attach mode ", 1)[1].split()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=textwrap.dedent(__doc__.split("\n", 1)[1]))
    parser.add_argument("--smoke", action="store_true", help="small numbers: checks that the bench runs, no more")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--calls", type=int, help="syscalls per timed loop")
    parser.add_argument("--repeat", type=int, help="timed loops per syscall and configuration, of which the "
                                                   "fastest counts (other load only ever adds time)")
    parser.add_argument("--sizes", help="checks map sizes to scrape at, comma-separated")
    parser.add_argument("--scrapes", type=int, help="scrapes per exporter at each size")
    parser.add_argument("--hold", type=int, help="waiting processes of distinct comms during the scrapes")
    parser.add_argument("--mode", default="auto", help="the exporter's --probe.mode (default auto)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--skip", default="", help="phases to leave out: syscalls, scrapes")
    parser.add_argument("--guest", metavar="KERNEL", help="run in a virtme-ng guest of this kernel release")
    parser.add_argument("--guest-modes", default="fexit,kprobe")
    parser.add_argument("--vng", default="vng", help="virtme-ng's vng, for --guest")
    parser.add_argument("--empty", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.empty:
        empty_program(args.empty)
        return 0
    if args.guest:
        return in_guest(args)
    defaults = dict(rounds=1, calls=20000, repeat=1, sizes="200,1000", scrapes=3, hold=20) if args.smoke else \
        dict(rounds=9, calls=100000, repeat=5, sizes="1000,10000,50000", scrapes=15, hold=200)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if os.geteuid() != 0:
        raise SystemExit("bench.py loads BPF programs and must run as root")
    result = Results(rounds=args.rounds, calls=args.calls)
    result.mode = attach_mode(args.mode)
    log(f"attach mode {result.mode}")
    others = other_bpf_programs()
    result.load.append(load_average())
    with tempfile.TemporaryDirectory(prefix="capexp-bench-") as tmp:
        workdir = Path(tmp)
        loops = workdir / "loops"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(loops), str(LOOPS_SOURCE)], check=True)
        if "syscalls" not in args.skip:
            run_syscalls(args, loops, workdir, result)
        if "scrapes" not in args.skip:
            run_scrapes(args, loops, workdir, result)
    result.others = sorted(set(others) | set(other_bpf_programs()))
    result.load.append(load_average())
    text = table(result, args)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
