"""Facts about the running kernel and the filesystems BPF tracing needs."""

from __future__ import annotations

import ctypes
import gzip
import errno
import functools
import logging
import os
import platform
import re
from typing import Iterator, Optional

log = logging.getLogger(__name__)

TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
BTF_VMLINUX = "/sys/kernel/btf/vmlinux"


def version(release: Optional[str] = None) -> tuple[int, int, int]:
    """(major, minor, patch) of a release string such as 6.18.44-fc-v769."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or platform.release())
    if not match:
        return (0, 0, 0)
    return (int(match[1]), int(match[2]), int(match[3] or 0))


def version_string() -> str:
    return platform.release()


def version_code(release: Optional[str] = None) -> int:
    """LINUX_VERSION_CODE of a release, as include/linux/version.h computes it."""
    major, minor, patch = version(release)
    return (major << 16) + (minor << 8) + min(patch, 255)


def config_enabled(option: str, release: Optional[str] = None) -> bool:
    """Whether the kernel was built with option=y, from /proc/config.gz or /boot/config-<release>;
    False where neither can be read."""
    return f"{option}=y" in (build_config(release) or ())


def build_config(release: Optional[str] = None) -> Optional[set[str]]:
    """The kernel's config lines (CONFIG_X=y ...), from /proc/config.gz or /boot/config-<release>;
    None where neither can be read."""
    release = release or platform.release()
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{release}", open)):
        try:
            with opener(path, "rt", encoding="ascii", errors="replace") as f:
                return {line.strip() for line in f}
        except OSError:
            continue
    return None


PREEMPT_DEBUGFS = "/sys/kernel/debug/sched/preempt"
# Where the kernel's code can be preempted anywhere, a fexit program can be too, and the
# trampoline skips the program for every other thread that enters it on that CPU meanwhile.
PREEMPTIBLE = ("full", "lazy", "rt")
# A PREEMPT_DYNAMIC kernel boots the model its config chose unless preempt= says otherwise.
CONFIG_MODELS = (("CONFIG_PREEMPT_RT", "rt"), ("CONFIG_PREEMPT_LAZY", "lazy"), ("CONFIG_PREEMPT", "full"),
                 ("CONFIG_PREEMPT_VOLUNTARY", "voluntary"), ("CONFIG_PREEMPT_NONE", "none"))


@functools.cache
def preemption() -> tuple[str, str]:
    """(model, where it was read): none, voluntary, full, lazy or rt; ("", why not) if unknown.
    Read once per process: the checks' and the changes' hooks both ask."""
    try:
        with open(PREEMPT_DEBUGFS, encoding="ascii") as f:
            return model_from_debugfs(f.read()), PREEMPT_DEBUGFS
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cmdline", encoding="ascii", errors="replace") as f:
            cmdline = f.read()
    except OSError:
        cmdline = ""
    return model_from_build(platform.version(), cmdline, build_config())


def model_from_debugfs(text: str) -> str:
    """The current model of sched/preempt's "none voluntary full (lazy)"."""
    match = re.search(r"\((\w+)\)", text)
    if not match:
        raise ValueError(f"no (model) in {text!r}")
    return match[1]


def model_from_build(uts_version: str, cmdline: str, config: Optional[set[str]]) -> tuple[str, str]:
    """The model from uname -v (#1 SMP PREEMPT_DYNAMIC ...), preempt= and the build config."""
    words = uts_version.split()
    if "PREEMPT_RT" in words:
        return "rt", "uname -v"
    if "PREEMPT_DYNAMIC" not in words:
        if "PREEMPT_LAZY" in words:
            return "lazy", "uname -v"
        return ("full", "uname -v") if "PREEMPT" in words else ("voluntary", "uname -v (none or voluntary)")
    chosen = re.search(r"(?:^|\s)preempt=(\w+)", cmdline)
    if chosen:
        return chosen[1], "preempt= on the kernel command line"
    if config is None:
        return "", f"PREEMPT_DYNAMIC and neither {PREEMPT_DEBUGFS} (debugfs) nor the kernel config can be read"
    for option, model in CONFIG_MODELS:
        if f"{option}=y" in config:
            return model, "the kernel config"
    return "", "the kernel config names no preemption model"


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many slots a per-CPU map value has: one per possible CPU."""
    with open(path, encoding="ascii") as f:
        text = f.read().strip()
    highest = 0
    for part in text.split(","):
        highest = max(highest, int(part.split("-")[-1]))
    return highest + 1


def tracing_dir() -> Optional[str]:
    """The mounted tracefs, where BCC reads tracepoint formats; None if none is mounted."""
    for path in (DEBUGFS_TRACING, TRACEFS):
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs() -> str:
    """Mount tracefs at /sys/kernel/tracing unless some tracefs is already mounted."""
    found = tracing_dir()
    if found:
        return found
    mounted = mounts("tracefs")
    if mounted:
        raise OSError(errno.EACCES, f"tracefs is mounted at {mounted[0]} but its events cannot be read "
                                    "(run as root, or grant CAP_DAC_READ_SEARCH)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)}")
    log.info("mounted tracefs at %s", TRACEFS)
    return TRACEFS


def has_kprobes() -> bool:
    """Whether the kernel can make kprobes: a kprobe PMU or the legacy kprobe_events file."""
    if os.path.isdir(KPROBE_PMU):
        return True
    tracing = tracing_dir()
    return tracing is not None and os.path.exists(os.path.join(tracing, "kprobe_events"))


def has_tracepoint(category: str, event: str) -> bool:
    tracing = tracing_dir()
    return tracing is not None and os.path.isdir(os.path.join(tracing, "events", category, event))


def _mount_entries(mountinfo: str) -> Iterator[tuple[str, str, list[str]]]:
    """(mount point, filesystem type, super options) of every mount in mountinfo."""
    with open(mountinfo, encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, rest = right.partition(" ")
            options = rest.split(" ")[1].strip().split(",") if " " in rest else []
            yield left.split(" ")[4], fstype, options


def mounts(fstype: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of a filesystem type, from mountinfo."""
    return [point for point, kind, _ in _mount_entries(mountinfo) if kind == fstype]


def cgroup_v1_mount(controller: str, mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """Where the cgroup v1 hierarchy of one controller (memory, cpu, ...) is mounted."""
    for point, kind, options in _mount_entries(mountinfo):
        if kind == "cgroup" and controller in options:
            return point
    return None


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid hosts)."""
    found = mounts("cgroup2", mountinfo)
    return found[0] if found else None
