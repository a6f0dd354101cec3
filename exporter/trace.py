"""capability-exporter trace: capability checks and changes, live, one event at a time."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from exporter.config import ChangesConfig, Config, FiltersConfig, MODES, ProbeConfig
from exporter.core import capabilities, changes, syscalls
from exporter.ebpf import kernel, probes
from exporter.ebpf.layouts import CAP_OPT_INSETID, CAP_OPT_NOAUDIT, ChangeEvent, CheckEvent, decode_comm
from exporter.usage import EXIT_FAILURE, Parser, fail

STACKS_MAX_ENTRIES = 16384
CHECK_HEADER = f"{'TIME':<9} {'UID':<6} {'PID':<7} {'COMM':<16} {'CAP':<4} {'NAME':<22} {'AUDIT':<5} {'VERDICT':<7} SYSCALL"
PRCTL_OPTIONS = {8: "PR_SET_KEEPCAPS", 24: "PR_CAPBSET_DROP", 28: "PR_SET_SECUREBITS", 47: "PR_CAP_AMBIENT"}
AMBIENT_OPS = {1: "PR_CAP_AMBIENT_IS_SET", 2: "PR_CAP_AMBIENT_RAISE", 3: "PR_CAP_AMBIENT_LOWER",
               4: "PR_CAP_AMBIENT_CLEAR_ALL"}
SET_FIELDS = ("cap_effective", "cap_permitted", "cap_inheritable", "cap_bset", "cap_ambient")


def parser() -> Parser:
    p = Parser(
        prog="capability-exporter trace",
        description=(
            "Print capability checks (columns like BCC's capable) and capability changes (capset, prctl, "
            "set*id, execve) as they happen. Unlike the exporter, which only counts in kernel maps, this "
            "sends every event to user space: use it to debug, not to monitor. Events lost because the "
            "buffer was full are reported at exit."
        ),
    )
    p.add_argument("duration", nargs="?", type=float, help="seconds to trace (default: until Ctrl-C)")
    p.add_argument("-p", "--pid", type=int, help="only this process (thread group id)")
    p.add_argument("-c", "--comm", help="only threads with this name (comm)")
    p.add_argument("--denied-only", action="store_true", help="only checks that were denied")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="include non-audited checks (in tracepoint mode, told apart by their kernel caller)")
    p.add_argument("-U", "--user-stack", action="store_true", help="show user stacks, symbolized")
    p.add_argument("-K", "--kernel-stack", action="store_true", help="show kernel stacks of checks, symbolized")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--no-changes", action="store_true", help="trace checks only")
    p.add_argument("--probe.mode", dest="mode", choices=MODES, default="auto", metavar="MODE",
                   help="attach mode for checks: auto, fexit, kprobe or tracepoint")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        fail("the duration must be a positive number of seconds", 2)
    tracer = Tracer(args)
    try:
        loaded = tracer.attach()
    except (probes.LoadError, OSError) as err:
        fail(str(err), EXIT_FAILURE)
    except KeyboardInterrupt:
        fail("interrupted before tracing started", 128 + signal.SIGINT)
    for warning in loaded.warnings():
        print(f"capability-exporter trace: warning: {warning}", file=sys.stderr)
    return tracer.run(loaded)


def config_for(args) -> Config:
    filters = FiltersConfig(pids=(args.pid,) if args.pid else ())
    return Config(
        probe=ProbeConfig(mode=args.mode, count_noaudit=args.verbose),
        filters=filters,
        changes=ChangesConfig(enabled=not args.no_changes),
    )


def defines_for(args) -> dict[str, Optional[int]]:
    defines: dict[str, Optional[int]] = {"EMIT_EVENTS": None, "STACKS_MAX_ENTRIES": STACKS_MAX_ENTRIES,
                                         **probes.noaudit_defines()}
    for flag, define in ((args.user_stack, "USER_STACKS"), (args.kernel_stack, "KERNEL_STACKS"),
                         (args.denied_only, "DENIED_ONLY")):
        if flag:
            defines[define] = None
    return defines


@dataclass
class Tracer:
    args: Any
    lost: dict[str, int] = field(default_factory=lambda: {"check": 0, "change": 0})
    # bpf_ktime_get_ns() is CLOCK_MONOTONIC; this turns it into wall-clock time.
    clock_offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    def attach(self) -> probes.Loaded:
        kernel.ensure_tracefs()
        with probes.captured_stderr() as log:
            return probes.attach_first(config_for(self.args), log, defines_for(self.args))

    def run(self, loaded: probes.Loaded) -> int:
        self.mode = loaded.mode
        # Tracepoint mode sees no opts: without -v, checks with a non-audited caller are left out.
        self.audit_inferred = probes.fill_noaudit_callers(loaded) == "inferred"
        self.checks_module = loaded.modules[0]
        self.checks_module["check_events"].open_perf_buffer(self._on_check, page_cnt=256, lost_cb=self._lost("check"))
        self.changes_module = loaded.modules[1] if len(loaded.modules) > 1 else None
        # Not "if module": a BCC module is falsy until one of its tables has been looked up.
        modules = [m for m in (self.checks_module, self.changes_module) if m is not None]
        if self.changes_module is not None:
            self.changes_module["change_events"].open_perf_buffer(
                self._on_change, page_cnt=256, lost_cb=self._lost("change")
            )
        self.modules, self.stop, self.events_ended = modules, StopSignals(), False
        self.deadline = time.monotonic() + self.args.duration if self.args.duration else None
        print(f"Tracing capability checks ({self.mode} mode) and changes... Hit Ctrl-C to end.",
              file=sys.stderr, flush=True)
        if not self.args.json:
            print(CHECK_HEADER, flush=True)
        while not self._ending():
            for module in modules:
                module.perf_buffer_poll(timeout=50)
        self._end_events()
        # Events already in the buffers when the trace is stopped are still shown.
        for module in modules:
            module.perf_buffer_poll(timeout=0)
        print(f"lost {self.lost['check']} check events and {self.lost['change']} change events",
              file=sys.stderr, flush=True)
        return 0

    def _ending(self) -> bool:
        return self.stop.check() or (self.deadline is not None and time.monotonic() >= self.deadline)

    def _end_events_if_ending(self) -> None:
        # Called for each event: BCC returns to the poll loop only once a buffer is empty,
        # which a flood never lets it be, so a stop must take effect here too.
        if not self.events_ended and self._ending():
            self._end_events()

    def _end_events(self) -> None:
        """Set trace_stopped in each BPF program, which then sends no more events: BCC's reader can empty its buffers."""
        if not self.events_ended:
            self.events_ended = True
            for module in self.modules:
                module["trace_stopped"][ctypes.c_int(0)] = ctypes.c_uint32(1)

    def _lost(self, kind: str):
        def count(n: int) -> None:
            self.lost[kind] += n

        return count

    def _wanted(self, comm: str) -> bool:
        return self.args.comm is None or comm == self.args.comm

    def _on_check(self, cpu: int, data: Any, size: int) -> None:
        self._end_events_if_ending()
        event = ctypes.cast(data, ctypes.POINTER(CheckEvent)).contents
        comm = decode_comm(event.comm)
        if not self._wanted(comm):
            return
        user = self._stack(self.checks_module, event.user_stack, event.tgid, kernel_space=False)
        kern = self._stack(self.checks_module, event.kernel_stack, event.tgid, kernel_space=True)
        record = check_record(event, comm, self.mode, self._wall(event.ts), user, kern, self.audit_inferred)
        print(json.dumps(record) if self.args.json else format_check(record), flush=True)

    def _on_change(self, cpu: int, data: Any, size: int) -> None:
        self._end_events_if_ending()
        event = ctypes.cast(data, ctypes.POINTER(ChangeEvent)).contents
        comm = decode_comm(event.comm)
        if not self._wanted(comm):
            return
        user = self._stack(self.changes_module, event.user_stack, event.tgid, kernel_space=False)
        record = change_record(event, comm, self._wall(event.ts), user)
        print(json.dumps(record) if self.args.json else format_change(record), flush=True)

    def _wall(self, ktime_ns: int) -> float:
        return ktime_ns / 1e9 + self.clock_offset

    @staticmethod
    def _stack(module: Any, stack_id: int, tgid: int, kernel_space: bool) -> Optional[list[str]]:
        if stack_id < 0:
            return None
        frames = module["stacks"].walk(stack_id)
        if kernel_space:
            return [module.ksym(addr, show_offset=True).decode("utf-8", "replace") for addr in frames]
        return [module.sym(addr, tgid, show_module=True, show_offset=True).decode("utf-8", "replace")
                for addr in frames]


class StopSignals:
    """Whether SIGINT (Ctrl-C) or SIGTERM has come, for the poll loop to end the trace.

    The signals are blocked and taken from the kernel's pending set, not handled in Python:
    a Python handler runs wherever the interpreter is, often inside a perf-buffer callback,
    where the KeyboardInterrupt it raised was swallowed by ctypes and the trace went on. A
    blocked signal stays pending even if this process inherited it ignored (a script's
    background job starts with SIGINT ignored).
    """

    SIGNALS = {signal.SIGINT, signal.SIGTERM}

    def __init__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        self.received = False

    def check(self) -> bool:
        self.received = self.received or signal.sigtimedwait(self.SIGNALS, 0) is not None
        return self.received


def check_record(event: CheckEvent, comm: str, mode: str, wall: float, user_stack: Optional[list[str]],
                 kernel_stack: Optional[list[str]], audit_inferred: bool = False) -> dict:
    """A check as plain data; audit and insetid are None where the mode cannot see opts, but audit
    is known where tracepoint mode infers it from the kernel caller."""
    sees_opts = mode != "tracepoint"
    audit_known = sees_opts or audit_inferred
    record = {
        "type": "check", "time": wall, "uid": event.uid, "pid": event.tgid, "tid": event.pid, "comm": comm,
        "cap": event.cap, "name": capabilities.name(event.cap),
        "audit": (not event.opts & CAP_OPT_NOAUDIT) if audit_known else None,
        "insetid": bool(event.opts & CAP_OPT_INSETID) if sees_opts else None,
        "verdict": "allow" if event.ret == 0 else "deny",
        "syscall": syscalls.name(event.syscall),
    }
    if user_stack is not None:
        record["user_stack"] = user_stack
    if kernel_stack is not None:
        record["kernel_stack"] = kernel_stack
    return record


def format_check(record: dict) -> str:
    audit = "-" if record["audit"] is None else str(int(record["audit"]))
    line = (f"{time.strftime('%H:%M:%S', time.localtime(record['time'])):<9} {record['uid']:<6} "
            f"{record['pid']:<7} {record['comm']:<16} {record['cap']:<4} {record['name']:<22} {audit:<5} "
            f"{record['verdict']:<7} {record['syscall']}")
    return "\n".join([line] + _stack_lines(record, "user_stack") + _stack_lines(record, "kernel_stack"))


def _stack_lines(record: dict, key: str) -> list[str]:
    return [f"        {frame}" for frame in record.get(key, [])]


def change_record(event: ChangeEvent, comm: str, wall: float, user_stack: Optional[list[str]]) -> dict:
    """A change as plain data: the syscall, its key arguments, and every set before and after."""
    syscall = changes.syscall_name(event.syscall)
    record = {
        "type": "change", "time": wall, "uid": event.before.uid, "pid": event.pid, "tgid": event.tgid,
        "ppid": event.ppid, "comm": comm, "syscall": syscall,
        "args": syscall_args(syscall, list(event.args), event.path.decode("utf-8", "replace")),
        "ret": event.ret,
        "before": _cred_dict(event.before), "after": _cred_dict(event.after),
        "gained": {}, "lost": {},
    }
    for index, set_name in enumerate(changes.SETS + ("securebits",)):
        before, after = _set_value(event.before, index), _set_value(event.after, index)
        for change in changes.expand(event.syscall, index, before, after):
            record[change.direction].setdefault(set_name, []).append(change.name)
    if user_stack is not None:
        record["user_stack"] = user_stack
    return record


def _set_value(state, index: int) -> int:
    return state.securebits if index == changes.SECUREBITS_SET else state.sets[index]


def _cred_dict(state) -> dict:
    values = {name: f"0x{state.sets[i]:016x}" for i, name in enumerate(changes.SETS)}
    values.update(securebits=f"0x{state.securebits:08x}", uid=state.uid, euid=state.euid)
    return values


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def syscall_args(syscall: str, args: list[int], path: str) -> dict:
    """The arguments that say what the syscall asked for, by name."""
    if syscall == "prctl":
        option, arg2, arg3 = args
        shown: dict[str, Any] = {"option": PRCTL_OPTIONS.get(option, option)}
        if option == 24:
            shown["capability"] = capabilities.name(arg2)
        elif option == 47:
            shown["op"] = AMBIENT_OPS.get(arg2, arg2)
            if arg2 in (1, 2, 3):
                shown["capability"] = capabilities.name(arg3)
        else:
            shown["arg2"] = arg2
        return shown
    names = {
        "capset": ("header", "data"), "setuid": ("uid",), "setgid": ("gid",), "setfsuid": ("uid",),
        "setfsgid": ("gid",), "setreuid": ("ruid", "euid"), "setregid": ("rgid", "egid"),
        "setresuid": ("ruid", "euid", "suid"), "setresgid": ("rgid", "egid", "sgid"), "execveat": ("fd", "flags"),
    }.get(syscall, ())
    shown = {name: (hex(value) if syscall == "capset" else _signed_id(value)) for name, value in zip(names, args)}
    if syscall in ("execve", "execveat"):
        shown["filename"] = path
    return shown


def _signed_id(value: int) -> int:
    """uid/gid arguments are 32-bit; (uid_t)-1 means "leave unchanged" and reads better as -1."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def format_change(record: dict) -> str:
    """A block in the style of the capability-change tracer: the header, the syscall, each set."""
    when = time.strftime("%H:%M:%S", time.localtime(record["time"])) + f".{int(record['time'] % 1 * 1e9):09d}"
    lines = [
        "",
        f"Time: {when}, uid = {record['uid']}, pid: {record['pid']}, tgid: {record['tgid']}, "
        f"ppid: {record['ppid']}, comm: {record['comm']}",
        f"syscall: {record['syscall']}",
        *(f"{name}: {value}" for name, value in record["args"].items()),
        f"retval: {record['ret']}",
    ]
    for set_name, label in zip(changes.SETS + ("securebits",), SET_FIELDS + ("securebits",)):
        before, after = record["before"][set_name], record["after"][set_name]
        marks = [f"+{n}" for n in record["gained"].get(set_name, [])] + [f"-{n}" for n in record["lost"].get(set_name, [])]
        change = f" -> {after}  * {' '.join(marks)}" if before != after else ""
        lines.append(f"{label + ':':<17}{before}{change}")
    lines += _stack_lines(record, "user_stack")
    return "\n".join(lines)
