"""The container image, built and run for real: podman builds the Dockerfile unchanged and runs it as the README says.

usage: container_e2e.py [--keep-base] [--omit-mount PATH]
  Builds a debian:bookworm-slim stand-in from Debian's packages (mmdebstrap), builds the
  project's Dockerfile with podman, runs the image with the README's `docker run` flags
  (host PID namespace, the documented capabilities and mounts, a read-only root), makes
  exact numbers of capability checks on the host, and asserts them on the container's
  /metrics. Then: the exporter inside holds no effective capability, and `podman stop`
  (SIGTERM) detaches its BPF programs and exits 0. Every container and image it made is
  removed at the end, whether it passed or not. Exit status 0 if every check passed.
  --omit-mount PATH   leave out the README's mount of PATH (to see that the test then fails)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

from prometheus_client.parser import text_string_to_metric_families

from support import NOBODY, ROOT, free_port, unique_comm, workload_command

# FROM in the Dockerfile; the stand-in is imported under this name, so the build needs no registry.
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
SUITE = "bookworm"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# What makes debian:bookworm-slim slim (debuerreotype's --slimify and its apt clean-up).
SLIM_DPKG_CFG = """\
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/groff/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/linda/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/man/*
"""
SLIM_APT_CONF = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::GzipIndexes "true";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
"""
N_SETUID = 1000
M_CHOWN = 500
# Bounds a hang, not a speed: the exporter compiles its BPF programs before it serves.
READY_TIMEOUT = 180
BUILD_TIMEOUT = 15 * 60
STOP_TIMEOUT = 60
LOG_TAIL = 30


class Failed(Exception):
    """A check of the image failed; the message says which and why."""


def log(message: str) -> None:
    print(f"container-e2e: {message}", flush=True)


def run(cmd: list[str], timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise Failed(f"{shlex.join(cmd)} exited {done.returncode}:\n{tail(done.stdout + done.stderr)}")
    return done


def tail(text: str, lines: int = LOG_TAIL) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# A store of this run's own (set in main): every image and container the test makes lives
# there, and nothing another user of podman on this machine has can clash or be removed.
STORE: list[str] = []


def podman_globals() -> list[str]:
    # crun refuses hybrid cgroup hosts; runc works on both layouts.
    return ["podman", "--runtime", "runc", *STORE]


def ulimits() -> list[str]:
    # Without CAP_SYS_RESOURCE podman's default rlimits cannot be set: keep the hard limits we have.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={hard}:{hard}", "--ulimit", "nproc=32768:32768"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return run([*podman_globals(), *args], timeout=timeout, check=check)


class Made:
    """What this run created, removed in reverse order at the end whatever happened."""

    def __init__(self) -> None:
        self.containers: list[str] = []
        self.images: list[str] = []

    def cleanup(self) -> list[str]:
        problems = []
        for name in reversed(self.containers):
            done = podman("rm", "--force", "--ignore", "--time", "10", name, check=False, timeout=120)
            if done.returncode:
                problems.append(f"podman rm {name}: {done.stderr.strip()}")
        for image in reversed(self.images):
            done = podman("rmi", "--force", image, check=False)
            if done.returncode and "image not known" not in done.stderr:
                problems.append(f"podman rmi {image}: {done.stderr.strip()}")
        # The build's intermediate images (one per cached step, and the build stage's) are ours too.
        intermediate = podman("images", "--all", "--quiet", check=False).stdout.split()
        if intermediate:
            podman("rmi", "--force", *intermediate, check=False)
        left = podman("images", "--all", "--quiet", check=False).stdout.split()
        left += podman("ps", "--all", "--quiet", check=False).stdout.split()
        if left:
            problems.append(f"left in the test's podman store: {left}")
        return problems


def build_base(work: Path, made: Made) -> None:
    """The stand-in for debian:bookworm-slim: minbase from Debian's archive, slimmed the same way."""
    sources = work / "debian.sources"
    sources.write_text("".join(line for line in HOST_SOURCES.read_text().splitlines(keepends=True)
                               if not line.lstrip().startswith("#")))
    (work / "slim-dpkg.cfg").write_text(SLIM_DPKG_CFG)
    (work / "slim-apt.conf").write_text(SLIM_APT_CONF)
    tarball = work / "base.tar"
    started = time.monotonic()
    run(["mmdebstrap", "--variant=minbase", "--quiet",
         # Merged /usr set up by mmdebstrap itself, as in the real image (no usrmerge package).
         "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
         f"--dpkgopt={work / 'slim-dpkg.cfg'}", f"--aptopt={work / 'slim-apt.conf'}",
         "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin",
         SUITE, str(tarball), str(sources)], timeout=BUILD_TIMEOUT)
    made.images.append(BASE_IMAGE)
    podman("import", str(tarball), BASE_IMAGE, timeout=300)
    tarball.unlink()
    log(f"base image {BASE_IMAGE} built from Debian {SUITE} in {time.monotonic() - started:.0f} s, "
        f"{image_size(BASE_IMAGE) / 1e6:.1f} MB")


def build_image(work: Path, tag: str, made: Made) -> float:
    """podman build of the Dockerfile as it is; the proxy's CA reaches pip by a build-time mount only."""
    pip_dir = work / "pip"
    pip_dir.mkdir()
    shutil.copy(HOST_CA, pip_dir / "ca.crt")
    (pip_dir / "pip.conf").write_text("[global]\ncert = /etc/xdg/pip/ca.crt\n")
    made.images.append(tag)
    started = time.monotonic()
    done = run([*podman_globals(), "build", "--pull=never", "--network=host", *ulimits(),
                "-v", f"{pip_dir}:/etc/xdg/pip:ro", "-f", str(ROOT / "Dockerfile"), "-t", tag, str(ROOT)],
               timeout=BUILD_TIMEOUT, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise Failed(f"podman build failed ({done.returncode}) after {seconds:.0f} s:\n{tail(done.stdout + done.stderr)}")
    return seconds


def image_size(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def readme_run_command() -> list[str]:
    """The README's `docker run` example, word by word."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    commands = [" ".join(line.split()) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    runs = [shlex.split(cmd) for cmd in commands if cmd.startswith("docker run ")]
    if len(runs) != 1:
        raise Failed(f"expected one `docker run` example in README.md, found {len(runs)}")
    return runs[0]


def podman_run_command(readme: list[str], name: str, tag: str, port: int, omit_mount: Optional[str]) -> list[str]:
    """The README's flags for podman: the image under test, a loopback port, and what this host needs."""
    words = readme[2:]
    if not words[-1].startswith("capability-exporter"):
        raise Failed(f"the README's docker run should end with the image name: {shlex.join(readme)}")
    flags = words[:-1]
    out: list[str] = []
    i = 0
    while i < len(flags):
        flag = flags[i]
        value = flags[i + 1] if flag in ("-v", "-p", "--tmpfs") else None
        if flag == "-p":
            container_port = value.rsplit(":", 1)[1]
            value = f"127.0.0.1:{port}:{container_port}"
        target = {"-v": lambda v: v.split(":")[1], "--tmpfs": lambda v: v.split(":")[0]}.get(flag, lambda v: None)
        if omit_mount and value and target(value) == omit_mount:
            log(f"leaving out the README's mount {flag} {value} (--omit-mount)")
        else:
            out += [flag] if value is None else [flag, value]
        i += 1 if value is None else 2
    # --read-only-tmpfs=false: podman would otherwise put a tmpfs on /tmp of a read-only
    # root by itself, which Docker and Kubernetes do not; the README's --tmpfs /tmp must do it.
    return [*podman_globals(), "run", "--detach", "--name", name, *ulimits(), "--read-only-tmpfs=false", *out, tag]


def get(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(get(url)) for s in family.samples}


def container_state(name: str) -> dict:
    return json.loads(podman("inspect", "--format", "{{json .State}}", name).stdout)


def wait_ready(name: str, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        state = container_state(name)
        if not state["Running"]:
            raise Failed(f"the container stopped before serving (exit code {state['ExitCode']}); its log:\n"
                         f"{container_log(name)}")
        try:
            if "capability_exporter_probe_info" in get(url, timeout=5):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise Failed(f"/metrics did not answer within {READY_TIMEOUT} s; the container's log:\n{container_log(name)}")


def container_log(name: str) -> str:
    done = podman("logs", name, check=False)
    return tail(done.stdout + done.stderr)


def status_fields(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def held_program_ids(pid: int) -> set[int]:
    """BPF program ids behind the file descriptors the process holds (fdinfo's prog_id)."""
    ids = set()
    fd_dir = Path(f"/proc/{pid}/fdinfo")
    for info in fd_dir.iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        ids.update(int(m) for m in re.findall(r"^prog_id:\s*(\d+)", text, flags=re.M))
    return ids


def program_exists(prog_id: int) -> bool:
    return run(["bpftool", "prog", "show", "id", str(prog_id)], check=False).returncode == 0


def drive_workload(work: Path) -> tuple[str, str]:
    """N setuid(0) as root and M refused chowns as nobody, under comms no other process has."""
    public = work / "public"
    public.mkdir()
    public.chmod(0o755)
    target = public / "root-owned"
    target.write_text("")
    setuid_comm, chown_comm = unique_comm("ctsu"), unique_comm("ctch")
    for cmd in (workload_command(f"{setuid_comm}=setuid:{N_SETUID}"),
                workload_command(f"{chown_comm}=chown:{M_CHOWN}:{target}", user=NOBODY)):
        done = run(cmd, timeout=120)
        (step,) = [json.loads(line) for line in done.stdout.splitlines()]
        if "chown" in step["step"] and step["result"] != {"refused": M_CHOWN}:
            raise Failed(f"the workload's chowns were not all refused: {step['result']}")
    return setuid_comm, chown_comm


def expect(what: str, got, want) -> None:
    if got != want:
        raise Failed(f"{what}: got {got!r}, want {want!r}")
    log(f"ok: {what} = {got!r}")


def check_counts(url: str, setuid_comm: str, chown_comm: str) -> None:
    samples = scrape(url)

    def value(name: str, **labels: str) -> Optional[float]:
        return samples.get((name, frozenset(labels.items())))

    expect(f"checks of CAP_SETUID by {setuid_comm}", value("capability_checks_total", comm=setuid_comm,
                                                            capability="CAP_SETUID"), N_SETUID)
    expect(f"denials of CAP_SETUID by {setuid_comm}", value("capability_denials_total", comm=setuid_comm,
                                                             capability="CAP_SETUID"), 0)
    expect(f"checks of CAP_CHOWN by {chown_comm}", value("capability_checks_total", comm=chown_comm,
                                                          capability="CAP_CHOWN"), M_CHOWN)
    expect(f"denials of CAP_CHOWN by {chown_comm}", value("capability_denials_total", comm=chown_comm,
                                                           capability="CAP_CHOWN"), M_CHOWN)
    mode = [dict(labels)["mode"] for (name, labels) in samples if name == "capability_exporter_probe_info"]
    log(f"attach mode inside the container: {mode}")


def check_no_capabilities(pid: int) -> None:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if "capability-exporter" not in cmdline:
        raise Failed(f"pid {pid} is not the exporter: {cmdline}")
    status = status_fields(pid)
    log(f"exporter pid {pid} (host): CapEff {status['CapEff']} CapPrm {status['CapPrm']} "
        f"CapInh {status['CapInh']} CapAmb {status['CapAmb']} CapBnd {status['CapBnd']}")
    for field in ("CapEff", "CapPrm", "CapAmb"):
        expect(f"{field} of the serving exporter", int(status[field], 16), 0)
    # 2: a seccomp filter, the runtime's default (what the DaemonSet's RuntimeDefault asks for).
    expect("Seccomp mode of the serving exporter", status["Seccomp"], "2")


def check_stop_detaches(name: str, prog_ids: set[int]) -> None:
    started = time.monotonic()
    podman("stop", "--time", str(STOP_TIMEOUT), name, timeout=STOP_TIMEOUT + 60)
    state = container_state(name)
    log(f"podman stop took {time.monotonic() - started:.1f} s; the container's last lines:\n{container_log(name)}")
    expect("exit code after podman stop (SIGTERM)", state["ExitCode"], 0)
    left = sorted(i for i in prog_ids if program_exists(i))
    expect("BPF programs of the exporter still loaded after stop", left, [])


def run_image(tag: str, work: Path, made: Made, omit_mount: Optional[str]) -> None:
    name = f"capexp-e2e-{os.getpid()}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    cmd = podman_run_command(readme_run_command(), name, tag, port, omit_mount)
    log(f"running: {shlex.join(cmd)}")
    made.containers.append(name)
    run(cmd, timeout=120)
    started = time.monotonic()
    wait_ready(name, url)
    log(f"/metrics answered {time.monotonic() - started:.1f} s after podman run")
    pid = int(container_state(name)["Pid"])
    check_no_capabilities(pid)
    prog_ids = held_program_ids(pid)
    if not prog_ids or not all(program_exists(i) for i in prog_ids):
        raise Failed(f"the exporter holds no loaded BPF program: {sorted(prog_ids)}")
    log(f"the exporter holds BPF programs {sorted(prog_ids)}")
    setuid_comm, chown_comm = drive_workload(work)
    check_counts(url, setuid_comm, chown_comm)
    check_stop_detaches(name, prog_ids)


def interrupted(signum: int, _frame) -> None:
    log(f"{signal.Signals(signum).name}: removing what this run made, then exiting")
    sys.exit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--omit-mount", metavar="PATH", help="leave out the README's mount of PATH")
    args = parser.parse_args()
    # A CI runner's SIGTERM must still clean up (finally below).
    signal.signal(signal.SIGTERM, interrupted)
    made = Made()
    tag = f"localhost/capability-exporter-e2e:{os.getpid()}"
    started = time.monotonic()
    failure = None
    with tempfile.TemporaryDirectory(prefix="capexp-container-") as tmp:
        work = Path(tmp)
        # The unprivileged workload must reach its file: its chown must get as far as CAP_CHOWN.
        work.chmod(0o755)
        STORE[:] = ["--root", str(work / "storage"), "--runroot", str(work / "run")]
        try:
            build_base(work, made)
            seconds = build_image(work, tag, made)
            log(f"image built in {seconds:.0f} s; size {image_size(tag) / 1e6:.1f} MB "
                f"(podman image inspect .Size); layers:\n"
                + podman("history", "--format", "{{.Size}}\t{{.CreatedBy}}", tag).stdout.rstrip())
            run_image(tag, work, made, args.omit_mount)
        except (Failed, subprocess.TimeoutExpired, OSError) as err:
            failure = str(err)
        finally:
            problems = made.cleanup()
    for problem in problems:
        log(f"cleanup: {problem}")
    elapsed = time.monotonic() - started
    if failure:
        log(f"FAIL after {elapsed:.0f} s: {failure}")
        return 1
    if problems:
        log(f"FAIL after {elapsed:.0f} s: could not remove what this test made")
        return 1
    log(f"PASS in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
