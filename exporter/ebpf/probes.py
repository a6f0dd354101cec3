"""Compile bpf/cap_capable.c with BCC, choose the attach mode and attach; runs in the loader child."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from exporter.config import Config
from exporter.core import changes, reasons
from exporter.ebpf import bpf_syscall, btf, kallsyms, kernel

AUTO_ORDER = ("fexit", "kprobe", "tracepoint")
# Where the kernel preempts tracing programs, a fexit run can be preempted; until it resumes
# the trampoline skips that program for every other thread on the CPU (a recursion miss, an
# uncounted check). Kprobes run with preemption off and lose nothing (7.2 on one CPU, four
# threads: fexit missed 960 of 4000 setuid checks, kprobe none).
PREEMPTIBLE_ORDER = ("kprobe", "fexit", "tracepoint")
# The maps the serving process reads; the others live on through the programs' own references.
SERVED_MAPS = ("checks", "drops", "changes", "change_drops")
# Kernel struct layouts cap_changes.c reads, as -D defines, from BTF.
CRED_LAYOUT = {
    "TASK_REAL_CRED": ("task_struct", "real_cred"),
    "CRED_CAP_EFFECTIVE": ("cred", "cap_effective"),
    "CRED_CAP_PERMITTED": ("cred", "cap_permitted"),
    "CRED_CAP_INHERITABLE": ("cred", "cap_inheritable"),
    "CRED_CAP_BSET": ("cred", "cap_bset"),
    "CRED_CAP_AMBIENT": ("cred", "cap_ambient"),
    "CRED_SECUREBITS": ("cred", "securebits"),
    "CRED_UID": ("cred", "uid"),
    "CRED_EUID": ("cred", "euid"),
    "TASK_REAL_PARENT": ("task_struct", "real_parent"),
    "TASK_TGID": ("task_struct", "tgid"),
}
# uid .. cap_ambient: 80 bytes in 6.1 and 6.18; read at once, on the BPF stack.
CRED_BLOCK_MAX = 192
# Change tracking's hooks are tried in auto's order: fentry on commit_creds ("fexit", as the
# mode that needs the same kernel support is called), a kprobe on it, the syscall tracepoints.
CHANGE_HOOK_DEFINES = {"fexit": "HOOK_COMMIT_CREDS_FENTRY", "kprobe": "HOOK_COMMIT_CREDS_KPROBE"}
# The numbers of the syscalls whose changes are counted, per machine (asm/unistd_64.h, and
# the generic asm-generic/unistd.h of arm64): enum change_syscall's order.
CHANGE_SYSCALL_NUMBERS = {
    "x86_64": {"CAPSET": 126, "PRCTL": 157, "SETUID": 105, "SETGID": 106, "SETREUID": 113, "SETREGID": 114,
               "SETRESUID": 117, "SETRESGID": 119, "SETFSUID": 122, "SETFSGID": 123, "EXECVE": 59,
               "EXECVEAT": 322},
    "aarch64": {"CAPSET": 91, "PRCTL": 167, "SETUID": 146, "SETGID": 144, "SETREUID": 145, "SETREGID": 143,
                "SETRESUID": 147, "SETRESGID": 149, "SETFSUID": 151, "SETFSGID": 152, "EXECVE": 221,
                "EXECVEAT": 281},
}
# run's process tree reads a forked child's thread id.
TREE_LAYOUT = {"TASK_PID": ("task_struct", "pid")}
# The path from a task to the cgroup of one cgroup v1 controller, for CGROUP_V1_SUBSYS.
CGROUP_V1_LAYOUT = {
    "TASK_CGROUPS": ("task_struct", "cgroups"),
    "CSS_SET_SUBSYS": ("css_set", "subsys"),
    "CSS_CGROUP": ("cgroup_subsys_state", "cgroup"),
    "CGROUP_KN": ("cgroup", "kn"),
    "KERNFS_NODE_ID": ("kernfs_node", "id"),
}
# The process label: the thread group leader's comm.
PROCESS_LAYOUT = {"TASK_GROUP_LEADER": ("task_struct", "group_leader"), "TASK_COMM": ("task_struct", "comm")}
# The saved user register that holds the syscall number, per machine (struct pt_regs).
SYSCALL_REGISTER = {"x86_64": "orig_ax", "aarch64": "syscallno"}
# THREAD_SIZE of x86_64 and arm64 with 4 KiB pages, and twice that under KASAN: before
# bpf_task_pt_regs() (5.15), the saved registers are found below the stack's top.
THREAD_SIZE = 16384
# What each mode's program is called in the kernel, for self-metrics.
PROGRAM_LABELS = {
    "kretfunc__cap_capable": "cap_capable_fexit",
    "kprobe__cap_capable": "cap_capable_entry",
    "kretprobe__cap_capable": "cap_capable_return",
    "tracepoint__capability__cap_capable": "cap_capable_tracepoint",
    "kfunc__cap_vm_enough_memory": "cap_vm_enough_memory_entry",
    "kretfunc__cap_vm_enough_memory": "cap_vm_enough_memory_fexit",
    "kprobe__cap_vm_enough_memory": "cap_vm_enough_memory_entry",
    "kretprobe__cap_vm_enough_memory": "cap_vm_enough_memory_return",
    "kfunc__commit_creds": "commit_creds_fentry",
    "kprobe__commit_creds": "commit_creds_entry",
}


class ModeUnavailable(Exception):
    """This attach mode cannot run here; the message says why, in one line."""


class LoadError(Exception):
    """Nothing was attached; the message says why in one line, with every mode's reason."""

    def __init__(self, message: str, reasons: Optional[dict[str, str]] = None):
        self.reasons = reasons or {}
        super().__init__(message)


def bpf_dir() -> Path:
    """bpf/ of a source checkout, or the copy packaged inside exporter/ by a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "bpf", here.parent.parent / "bpf"):
        if (candidate / "capability.h").is_file():
            return candidate
    raise FileNotFoundError(f"no bpf/ directory beside {here}")


def candidates(mode: str, preemption: Optional[tuple[str, str]] = None) -> tuple[str, ...]:
    """The modes to try, in order: the configured one, or for auto the cheapest that counts every check."""
    if mode != "auto":
        return (mode,)
    return PREEMPTIBLE_ORDER if _preemptible(preemption) else AUTO_ORDER


def _preemptible(preemption: Optional[tuple[str, str]] = None) -> bool:
    return (preemption or kernel.preemption())[0] in kernel.PREEMPTIBLE


def fexit_caveat(preemption: Optional[tuple[str, str]] = None) -> Optional[str]:
    """Why fexit can lose checks on this kernel, in one line; None where it cannot."""
    model, source = preemption or kernel.preemption()
    if model not in kernel.PREEMPTIBLE:
        return None
    return (f"the kernel preempts tracing programs (preemption model {model}, from {source}): while a "
            "fexit run is preempted, other threads' checks on that CPU go uncounted, as "
            "capability_exporter_bpf_program_recursion_misses_total shows; kprobe mode counts them all")


def _flags(defines: dict[str, Optional[int]]) -> list[str]:
    defines = {"LINUX_VERSION_CODE": kernel.version_code(), **defines}
    return [f"-I{bpf_dir()}"] + [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in defines.items()]


Defines = dict[str, Optional[int]]


def change_cflags(config: Config, layout: dict[str, int], extra: Optional[Defines] = None) -> list[str]:
    """The -D defines of cap_changes.c: map sizes and the cred layout from BTF."""
    return _flags({
        "SNAPSHOTS_MAX_ENTRIES": config.changes.snapshots_max_entries,
        "CHANGES_MAX_ENTRIES": config.changes.changes_max_entries,
        **layout,
        **(extra or {}),
    })


def cflags(config: Config, mode: str, extra: Optional[Defines] = None) -> list[str]:
    """The -D defines that carry the config into cap_capable.c."""
    defines: dict[str, Optional[int]] = {
        f"MODE_{mode.upper()}": None,
        "CHECKS_MAX_ENTRIES": config.maps.checks_max_entries,
        "INFLIGHT_MAX_ENTRIES": config.maps.inflight_max_entries,
    }
    flags = {
        "COUNT_NOAUDIT": config.probe.count_noaudit,
        "CAP_AUDIT_ARG_INT": kernel.version() < (5, 1, 0),
        "VM_ENOUGH_RETURNS_ERRNO": kernel.version() >= (6, 12, 0),
        "KEY_UID": config.labels.uid,
        "KEY_CGROUP": config.key_cgroup,
        "KEY_OPTS": config.labels.opts,
        "FILTER_CGROUP": bool(config.filters.cgroup_prefix),
    }
    defines.update({name: None for name, on in flags.items() if on})
    if config.filters.uids:
        defines["FILTER_UIDS"] = len(config.filters.uids)
    if config.filters.pids:
        defines["FILTER_PIDS"] = len(config.filters.pids)
    return _flags({**defines, **(extra or {})})


def precheck(mode: str, function: str = "cap_capable") -> None:
    """Refuse a mode cheaply, with a clear reason, before BCC compiles for a second and fails."""
    if mode == "fexit":
        if kernel.version() < (5, 5, 0):
            raise ModeUnavailable(f"fexit needs Linux 5.5 or newer (running {kernel.version_string()})")
        if not os.path.exists(kernel.BTF_VMLINUX):
            raise ModeUnavailable(f"fexit needs kernel BTF and {kernel.BTF_VMLINUX} does not exist")
        _try_empty_fexit(function)
    elif mode == "kprobe":
        if not kernel.has_kprobes():
            raise ModeUnavailable(
                "this kernel has no kprobe support (no kprobe PMU and no kprobe_events in tracefs: "
                "CONFIG_KPROBES is off)"
            )
    elif mode == "tracepoint":
        if not kernel.has_tracepoint("capability", "cap_capable"):
            raise ModeUnavailable(
                "the tracepoint capability:cap_capable does not exist here (it was added in Linux 6.14; "
                f"running {kernel.version_string()})"
            )


def _try_empty_fexit(function: str) -> None:
    """Load an empty fexit program for function, in a millisecond: a kernel that refuses it
    (as some refuse every fexit program, with EPERM) refuses the compiled one too."""
    try:
        function_id = _vmlinux().function_id(function)
    except btf.BtfError:
        return  # no answer here: the compiled program will tell
    try:
        bpf_syscall.load_empty_tracing_program(function_id)
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            raise ModeUnavailable(f"the kernel refused to load the program ({errno.errorcode[err.errno]}): "
                                  f"bpf: Failed to load program: {err.strerror}") from None
        # Any other refusal may be this probe's own: let the compiled program tell.


@dataclass
class Loaded:
    """Compiled and attached BCC modules, and why the modes tried before the one used failed.

    notes: (logging level, message) for whoever started the load to log or print. They cannot
    be logged where the load runs: its fd 2 is the compiler's log (captured_stderr)."""

    mode: str
    modules: list[Any]
    reasons: dict[str, str] = field(default_factory=dict)
    notes: list[tuple[int, str]] = field(default_factory=list)

    def warnings(self) -> list[str]:
        return [message for level, message in self.notes if level >= logging.WARNING]

    def map_fds(self, names: tuple[str, ...] = SERVED_MAPS) -> dict[str, int]:
        """The fds of these maps, from whichever module defines them."""
        fds = {}
        for module in self.modules:
            for name in names:
                try:
                    fds[name] = module[name.encode()].map_fd
                except KeyError:
                    continue
        return fds

    def program_fds(self) -> dict[str, int]:
        return {_program_label(n.decode()): f.fd for m in self.modules for n, f in m.funcs.items()}

    def link_fds(self) -> list[int]:
        fds = []
        for m in self.modules:
            fds += list(m.tracepoint_fds.values()) + list(m.kfunc_entry_fds.values()) + list(m.kfunc_exit_fds.values())
            for by_fn in m.kprobe_fds.values():
                fds.extend(by_fn.values())
        return fds


def _program_label(function: str) -> str:
    return PROGRAM_LABELS.get(function, function.removeprefix("tracepoint__syscalls__"))


def attach_first(config: Config, compiler_log, extra: Optional[Defines] = None, with_changes: bool = True) -> Loaded:
    """Try the configured mode (or each mode, for auto) and return the first that attaches.

    extra: more -D defines for both programs (trace's EMIT_EVENTS and friends). With
    FOLLOW_TREE, bpf/tree.c is loaded first and comes last in Loaded.modules. with_changes:
    False leaves change tracking out, whatever the config says (the exporter's loader
    attaches it with attach_changes, in a process of its own).
    """
    cgroup = cgroup_dir(config.filters.cgroup_prefix) if config.filters.cgroup_prefix else None
    extra = {**(extra or {}), **cgroup_v1_defines(config)}
    if "OWN_CREDS_ONLY" in extra:
        extra.update(_required_offsets({"TASK_REAL_CRED": CRED_LAYOUT["TASK_REAL_CRED"]}, "checking whose credentials"))
    extra.update(process_defines(config))
    if "KEY_REASON" in extra or "EMIT_EVENTS" in extra:
        extra.update(syscall_defines())
    tree = _load_tree(extra, compiler_log) if "FOLLOW_TREE" in extra else None

    def load(mode: str) -> Any:
        precheck(mode)
        return _bcc_module("cap_capable.c", cflags(config, mode, extra))

    preemption = kernel.preemption()
    mode, module, reasons = _first_loaded(candidates(config.probe.mode, preemption), load, compiler_log)
    if module is not None:
        notes = _note_preemption(config.probe.mode, mode, reasons, preemption)
        _fill_filters(module, config, cgroup)
        modules = [module]
        if config.changes.enabled and with_changes:
            modules.append(_load_changes(config, compiler_log, extra))
        if tree is not None:
            modules.append(tree)
        return Loaded(mode, modules, reasons, notes)
    if len(reasons) == 1:
        (mode, why), = reasons.items()
        raise LoadError(f"{mode} mode cannot attach: {why}", reasons)
    summary = "; ".join(f"{mode}: {why}" for mode, why in reasons.items())
    raise LoadError(f"no attach mode worked ({summary})", reasons)


def _note_preemption(configured: str, mode: str, reasons: dict[str, str],
                     preemption: tuple[str, str]) -> list[tuple[int, str]]:
    """Say why auto passed over fexit (in reasons); the notes for a fexit that can lose checks."""
    caveat = fexit_caveat(preemption)
    if caveat and configured == "auto" and "fexit" not in reasons and mode != "fexit":
        reasons["fexit"] = f"tried after kprobe: {caveat}"
    elif caveat and mode == "fexit":
        return [(logging.WARNING, f"fexit mode: {caveat}")]
    elif not preemption[0] and mode == "fexit":
        return [(logging.INFO, f"preemption model unknown ({preemption[1]}): if the kernel preempts tracing "
                               "programs, fexit mode can miss checks "
                               "(capability_exporter_bpf_program_recursion_misses_total)")]
    return []


def _first_loaded(names: Iterable[str], load: Callable[[str], Any],
                  compiler_log) -> tuple[Optional[str], Any, dict[str, str]]:
    """The first name that load() takes, its module, and why each one tried before failed;
    (None, None, every reason) when none loads."""
    reasons: dict[str, str] = {}
    for name in names:
        try:
            return name, load(name), reasons
        except ModeUnavailable as err:
            reasons[name] = str(err)
        except Exception as err:  # BCC reports every failure as a bare Exception
            reasons[name] = _explain(err, compiler_log)
    return None, None, reasons


def _bcc_module(source: str, flags: list[str]) -> Any:
    os.environ["BCC_KERNEL_SOURCE"] = str(bpf_dir() / "shim")
    from bcc import BPF  # only the loader child pays for BCC and LLVM

    # Programs named kretfunc__/kprobe__/kretprobe__/tracepoint__ attach as they load.
    return BPF(src_file=str(bpf_dir() / source).encode(), cflags=flags)


CHANGES_ADVICE = "set changes.enabled: false to run without change tracking"


def _load_changes(config: Config, compiler_log, extra: Optional[Defines]) -> Any:
    """cap_changes.c on the syscall tracepoints; every kernel with BTF has them."""
    layout = _cred_layout()
    try:
        return _bcc_module("cap_changes.c", change_cflags(config, layout, extra))
    except Exception as err:  # BCC reports every failure as a bare Exception
        raise LoadError(f"capability change tracking: {_explain(err, compiler_log)} ({CHANGES_ADVICE})") from None


def change_hooks(mode: str) -> tuple[str, ...]:
    """Where to take capability changes from, in order: commit_creds by fentry or kprobe, else
    the syscall tracepoints. A mode the config names is the one tried on commit_creds."""
    return {"fexit": ("fexit", "tracepoint"), "kprobe": ("kprobe", "tracepoint")}.get(mode, candidates("auto"))


def attach_changes(config: Config, compiler_log) -> Loaded:
    """The exporter's change tracking: cap_changes.c on the first of change_hooks() that attaches.

    Loaded.mode is the hook: fexit or kprobe (on commit_creds), or tracepoint (the syscalls')."""
    layout = {**_cred_layout(), **process_defines(config)}

    def load(hook: str) -> Any:
        defines = _commit_creds_defines(hook) if hook != "tracepoint" else _shared_syscall_defines()
        module = _bcc_module("cap_changes.c", change_cflags(config, layout, defines))
        if "SHARED_SYSCALL_PROGRAMS" in defines:
            _attach_shared_syscall_programs(module)
        return module

    hook, module, reasons = _first_loaded(change_hooks(config.probe.mode), load, compiler_log)
    if module is not None:
        return Loaded(hook, [module], reasons)
    raise LoadError(f"capability change tracking: {reasons.get('tracepoint', 'no hook attached')} "
                    f"({CHANGES_ADVICE})", reasons)


def _commit_creds_defines(hook: str) -> Defines:
    """cap_changes.c's defines for commit_creds by fentry (hook fexit) or kprobe; ModeUnavailable
    where this kernel or machine cannot tell which syscall commits."""
    numbers = CHANGE_SYSCALL_NUMBERS.get(os.uname().machine)
    if numbers is None:
        raise ModeUnavailable(f"no table of syscall numbers for {os.uname().machine}")
    precheck(hook, "commit_creds")
    registers = syscall_defines()
    if "PT_REGS_SYSCALL" not in registers:
        raise ModeUnavailable("the kernel's BTF does not say where a task's syscall number is saved")
    return {CHANGE_HOOK_DEFINES[hook]: None, **registers, **{f"NR_{name}": nr for name, nr in numbers.items()}}


def _shared_syscall_defines() -> Defines:
    """One entry and one exit program for the twelve syscalls' tracepoints, where this machine's
    syscall numbers are known (else each syscall's own pair of programs: 24 to compile)."""
    numbers = CHANGE_SYSCALL_NUMBERS.get(os.uname().machine)
    if numbers is None:
        return {}
    return {"SHARED_SYSCALL_PROGRAMS": None, **{f"NR_{name}": nr for name, nr in numbers.items()}}


def _attach_shared_syscall_programs(module: Any) -> None:
    for syscall in changes.SYSCALLS:
        module.attach_tracepoint(tp=f"syscalls:sys_enter_{syscall}".encode(), fn_name=b"syscall_enter")
        module.attach_tracepoint(tp=f"syscalls:sys_exit_{syscall}".encode(), fn_name=b"syscall_exit")


def _cred_layout() -> Defines:
    """CRED_LAYOUT's offsets, and CRED_BLOCK/CRED_BLOCK_SIZE: the span of struct cred that holds
    every member cap_changes.c reads, which it reads at once."""
    try:
        members = btf.offsets(CRED_LAYOUT, btf=_vmlinux())
    except btf.BtfError as err:
        raise LoadError(f"capability change tracking needs kernel BTF: {err} ({CHANGES_ADVICE})") from None
    in_cred = [m for name, m in members.items() if name.startswith("CRED_")]
    start, end = min(m.offset for m in in_cred), max(m.offset + m.size for m in in_cred)
    if end - start > CRED_BLOCK_MAX:
        raise LoadError(f"capability change tracking: the credential members span {end - start} bytes of "
                        f"struct cred, more than the {CRED_BLOCK_MAX} expected ({CHANGES_ADVICE})")
    return {**{name: m.offset for name, m in members.items()}, "CRED_BLOCK": start, "CRED_BLOCK_SIZE": end - start}


def _load_tree(extra: Defines, compiler_log) -> Any:
    """bpf/tree.c, whose public map the other programs use: loaded once, before them."""
    offsets = _required_offsets(TREE_LAYOUT, "following a process tree")
    try:
        return _bcc_module("tree.c", _flags({"FOLLOW_TREE": extra["FOLLOW_TREE"], **offsets}))
    except Exception as err:  # BCC reports every failure as a bare Exception
        raise LoadError(f"following a process tree: {_explain(err, compiler_log)}") from None


def process_defines(config: Config) -> Defines:
    """KEY_PROCESS and the offsets of capability.h's read_process_name(), for labels.process or
    unused.by: process."""
    if not config.key_process:
        return {}
    return {"KEY_PROCESS": None, **_required_offsets(PROCESS_LAYOUT, "labels.process")}


def _required_offsets(layout: dict[str, tuple[str, str]], what: str) -> Defines:
    try:
        return _offsets(layout)
    except btf.BtfError as err:
        raise LoadError(f"{what} needs kernel BTF: {err}") from None


def _fill_filters(module: Any, config: Config, cgroup: Optional[str]) -> None:
    for name, ids in (("filter_uids", config.filters.uids), ("filter_pids", config.filters.pids)):
        if ids:
            table = module[name]
            for ident in ids:
                table[table.Key(ident)] = table.Leaf(1)
    if cgroup:
        module["filter_cgroup"][0] = cgroup


def noaudit_defines() -> Defines:
    """cap_capable.c's table of non-audited callers, for the tracepoint mode (fill_noaudit_callers)."""
    return {"NOAUDIT_CALLERS": len(reasons.NOAUDIT_FUNCTIONS)}


def fill_noaudit_callers(loaded: Loaded) -> str:
    """How non-audited checks are told apart: by opts ("included"), by their kernel callers in
    tracepoint mode ("inferred"), or not at all where kallsyms hides the addresses."""
    if loaded.mode != "tracepoint":
        return "included"
    try:
        found = kallsyms.ranges(reasons.NOAUDIT_FUNCTIONS)
    except OSError:
        found = {}
    table = loaded.modules[0]["noaudit_callers"]
    for index, (start, end) in enumerate(found.values()):
        table[table.Key(index)] = table.Leaf(start, end)
    return "inferred" if found else "indistinguishable"


def kernel_callers(module: Any) -> Any:
    """stack id -> the kernel function that asked (reasons.caller), from a module's stacks map."""

    @functools.lru_cache(maxsize=None)
    def caller_of(stack_id: int) -> str:
        if stack_id < 0:
            return reasons.UNKNOWN
        try:
            frames = [module.ksym(address).decode("utf-8", "replace") for address in module["stacks"].walk(stack_id)]
        except KeyError:  # the stack was evicted from the map
            return reasons.UNKNOWN
        return reasons.caller(frames)

    return caller_of


def cgroup_v1_defines(config: Config) -> Defines:
    """Offsets and the controller's index for keying checks by a cgroup v1 hierarchy."""
    controller = config.labels.cgroup_v1_controller
    if not (controller and config.key_cgroup):
        return {}
    if kernel.cgroup_v1_mount(controller) is None:
        raise LoadError(f"labels.cgroup_v1_controller: no cgroup v1 hierarchy of {controller} is mounted")
    try:
        defines = _offsets(CGROUP_V1_LAYOUT)
        defines["CGROUP_V1_SUBSYS"] = _vmlinux().enum_value("cgroup_subsys_id", f"{controller}_cgrp_id")
    except btf.BtfError as err:
        raise LoadError(f"labels.cgroup_v1_controller: {err}") from None
    return defines


def syscall_defines(machine: str = os.uname().machine) -> Defines:
    """Where capability.h's current_syscall() finds the syscall number; none (it reads as
    "-") on a machine or kernel whose BTF does not say."""
    register = SYSCALL_REGISTER.get(machine)
    if register is None:
        return {}
    try:
        vmlinux = _vmlinux()
        defines: Defines = {"PT_REGS_SYSCALL": vmlinux.member("pt_regs", register).offset}
        if _has_helper(vmlinux, "BPF_FUNC_task_pt_regs"):
            defines["TASK_PT_REGS_HELPER"] = None
        else:
            defines["TASK_STACK"] = vmlinux.member("task_struct", "stack").offset
            defines["TASK_STACK_REGS"] = THREAD_SIZE * (2 if kernel.config_enabled("CONFIG_KASAN") else 1) \
                - vmlinux.size("pt_regs")
    except btf.BtfError:
        return {}
    return defines


def _has_helper(vmlinux: btf.Btf, helper: str) -> bool:
    try:
        vmlinux.enum_value("bpf_func_id", helper)
        return True
    except btf.BtfError:
        return False


def _offsets(layout: dict[str, tuple[str, str]]) -> Defines:
    """-D defines of struct member byte offsets, read from the kernel's BTF."""
    return {name: member.offset for name, member in btf.offsets(layout, btf=_vmlinux()).items()}


@functools.lru_cache(maxsize=1)
def _vmlinux() -> btf.Btf:
    """The kernel's BTF, parsed once however many programs need offsets from it."""
    return btf.Btf.load()


def cgroup_dir(path: str) -> str:
    """The directory of a cgroup v2 path such as /system.slice."""
    mount = kernel.cgroup2_mount()
    if mount is None:
        raise LoadError("filters.cgroup_prefix needs cgroup v2, and none is mounted")
    full = os.path.join(mount, path.lstrip("/"))
    if not os.path.isdir(full):
        raise LoadError(f"filters.cgroup_prefix: there is no cgroup {path} under {mount}")
    return full


@contextlib.contextmanager
def captured_stderr() -> Iterator[Any]:
    """BCC and LLVM write to fd 2; keep that for error messages instead of the terminal."""
    log = tempfile.TemporaryFile()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        yield log
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _explain(err: Exception, compiler_log) -> str:
    """One line for a BCC failure, with the kernel's or compiler's own words when it printed any."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if text == "Need super-user privileges to run":
        text = "the kernel refused to load the program (EPERM)"
    detail = _last_error_line(compiler_log)
    return f"{text}: {detail}" if detail and detail not in text else text


def _last_error_line(compiler_log) -> str:
    if compiler_log is None:
        return ""
    compiler_log.flush()
    compiler_log.seek(0)
    lines = compiler_log.read().decode("utf-8", "replace").splitlines()
    compiler_log.seek(0)
    compiler_log.truncate()
    for marker in ("error:", "error", "failed"):
        wanted = [ln.strip() for ln in lines if marker in ln.lower()]
        if wanted:
            return wanted[0][:300]
    return ""
