"""capability-exporter run: trace one command and its descendants, then say which capabilities it needs."""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import sys
from dataclasses import dataclass
from typing import Optional

from . import capabilities, kallsyms, kernel, privileges, probes, proc_status, profile
from .config import ChangesConfig, Config, LabelsConfig, MODES, ProbeConfig
from .maps import BpfMap, open_maps
from .usage import Parser, fail

# run's own failures, apart from the command's exit codes, as timeout(1) and env(1) do.
EXIT_RUN_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
TREE_MAX_THREADS = 32768

# OWN_CREDS_ONLY: a program needs what is checked against its own credentials, not what
# overlayfs checks against its mounter's on its behalf (seen: CAP_SYS_ADMIN, CAP_FOWNER).
DEFINES: probes.Defines = {"FOLLOW_TREE": TREE_MAX_THREADS, "RECORD_HELD": None,
                           "NOAUDIT_CALLERS": len(profile.NOAUDIT_FUNCTIONS), "OWN_CREDS_ONLY": None}


def parser() -> Parser:
    p = Parser(
        prog="capability-exporter run",
        usage="%(prog)s [options] -- COMMAND [ARGS...]",
        description=(
            "Run COMMAND, trace the capability checks and changes of it and of every process it forks, and at "
            "its exit print what it was granted, what it was denied, what it held but never used, and the "
            "capabilities to grant it. Exits with COMMAND's exit code; run's own failures exit 125, a command "
            "that cannot be executed 126, one that is not found 127."
        ),
    )
    p.usage_exit = EXIT_RUN_FAILED
    p.add_argument("--format", choices=profile.FORMATS, default="text", metavar="FORMAT",
                   help="text (a table, the default), json, systemd (CapabilityBoundingSet= and "
                        "AmbientCapabilities=), kubernetes (a securityContext block) or docker (--cap-* flags)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE (default: standard error)")
    p.add_argument("--user", metavar="USER",
                   help="run COMMAND as this user (name or uid) with its primary group, as systemd's User= does")
    p.add_argument("--caps", metavar="CAPS", default="",
                   help="with --user: the capabilities COMMAND gets, as systemd's AmbientCapabilities= gives "
                        "them: a comma-separated list such as CAP_NET_RAW,CAP_CHOWN, or all")
    p.add_argument("--probe.mode", dest="mode", choices=MODES, default="auto", metavar="MODE",
                   help="attach mode for checks: auto, fexit, kprobe or tracepoint")
    p.add_argument("command", nargs="*", metavar="COMMAND", help=argparse.SUPPRESS)
    return p


@dataclass(frozen=True)
class Identity:
    """Who the command runs as, when --user is given."""

    uid: int
    gid: int
    caps: list[int]


def identity(user: Optional[str], caps: str) -> Optional[Identity]:
    if not user:
        if caps:
            fail("--caps needs --user: root gets every capability back at execve", EXIT_RUN_FAILED)
        return None
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        fail(f"--user: no such user {user!r}", EXIT_RUN_FAILED)
    return Identity(entry.pw_uid, entry.pw_gid, cap_list(caps))


def cap_list(text: str) -> list[int]:
    """--caps: all (every capability run has itself), or names (CAP_X, cap_x or X) separated by commas."""
    if text.strip().lower() == "all":
        own = proc_status.read(os.getpid())
        assert own is not None  # run is no kernel thread
        return [bit for bit in range(64) if own.permitted >> bit & 1]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n.upper().removeprefix("CAP_") not in KNOWN_NAMES]
    if unknown:
        fail(f"--caps: unknown capabilities: {', '.join(unknown)}", EXIT_RUN_FAILED)
    return sorted({capabilities.number(n) for n in names})


KNOWN_NAMES = {name.removeprefix("CAP_") for name in capabilities.NAMES}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if not args.command:
        fail("no command to run (capability-exporter run [options] -- COMMAND [ARGS...])", EXIT_RUN_FAILED)
    who = identity(args.user, args.caps)
    if who and os.geteuid() != 0:
        fail("--user needs run to be started as root", EXIT_RUN_FAILED)
    report = _open_report(args.output)
    try:
        kernel.ensure_tracefs()
        with probes.captured_stderr() as log:
            loaded = probes.attach_first(config_for(args.mode), log, DEFINES)
    except (probes.LoadError, OSError) as err:
        fail(str(err), EXIT_RUN_FAILED)
    except KeyboardInterrupt:
        fail("interrupted before the command started", 128 + signal.SIGINT)
    noaudit = _noaudit_handling(loaded)
    child = Child.start(args.command, who)
    tree = loaded.modules[-1]["tree"]  # bpf/tree.c's, which the other programs share
    tree[tree.Key(child.pid)] = tree.Leaf(1)
    code = child.run()
    if child.failed:
        return code
    result = read_profile(loaded, noaudit)
    report.write(profile.render(args.format, result.profile, command=args.command, exit_code=code))
    report.flush()
    for warning in result.warnings:
        print(f"capability-exporter run: warning: {warning}", file=sys.stderr)
    return code


def config_for(mode: str) -> Config:
    """Non-audited checks counted apart (opts in the key) so that they can be left out."""
    return Config(probe=ProbeConfig(mode=mode, count_noaudit=True), labels=LabelsConfig(opts=True),
                  changes=ChangesConfig(enabled=True))


def _open_report(path: Optional[str]):
    if path is None:
        return sys.stderr
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as err:
        fail(f"--output: cannot write {path}: {err.strerror}", EXIT_RUN_FAILED)


@dataclass
class Child:
    """The command, forked, set up as --user asks, and held at a pipe until its pid is in the tree map.

    Its set-up is not traced: only what the command itself does is.
    """

    pid: int
    go: int
    exec_errors: int
    command: list[str]
    failed: bool = False  # it never ran: set-up or execve failed

    @classmethod
    def start(cls, command: list[str], who: Optional[Identity]) -> "Child":
        ready_read, ready_write = os.pipe()
        go_read, go_write = os.pipe()
        errors_read, errors_write = os.pipe2(os.O_CLOEXEC)  # closed by a successful execve
        pid = os.fork()
        if pid == 0:
            for fd in (ready_read, go_write, errors_read):
                os.close(fd)
            _child(command, who, ready_write, go_read, errors_write)
        for fd in (ready_write, go_read, errors_write):
            os.close(fd)
        child = cls(pid, go_write, errors_read, command)
        if not _read_all(ready_read):
            child.failed = True  # the reason is waiting in exec_errors
        return child

    def run(self) -> int:
        """Let the command go, wait for it, and return its exit code as a shell would."""
        # Ctrl-C reaches the command through the terminal; run outlives it to report.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(self.pid, signal.SIGTERM))
        if not self.failed:
            os.write(self.go, b"g")
        os.close(self.go)
        error = _read_all(self.exec_errors)
        _, status = os.waitpid(self.pid, 0)
        if error:
            self.failed = True
            code, _, message = error.decode("utf-8", "replace").partition(":")
            print(f"capability-exporter run: {message}", file=sys.stderr)
            return int(code)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


def _child(command: list[str], who: Optional[Identity], ready: int, go: int, errors: int) -> None:
    """In the forked child: become the user, say so, wait to be traced, execute. Never returns."""
    try:
        # Python ignores SIGPIPE and SIGXFSZ; execve would pass that on to the command.
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        if who:
            try:
                privileges.become(who.uid, who.gid, who.caps)
            except (privileges.PrivilegeError, OSError) as err:
                _exit_with(errors, EXIT_RUN_FAILED, f"cannot become uid {who.uid}: {err}")
        # Searching PATH is set-up too: as another user it meets directories it may not enter.
        path = command[0] if "/" in command[0] else shutil.which(command[0])
        if path is None:
            _exit_with(errors, EXIT_NOT_FOUND, f"{command[0]}: command not found")
        os.write(ready, b"r")
        os.close(ready)
        if not os.read(go, 1):
            os._exit(EXIT_RUN_FAILED)
        os.close(go)
        try:
            os.execv(path, command)
        except FileNotFoundError:
            _exit_with(errors, EXIT_NOT_FOUND, f"{command[0]}: command not found")
        except OSError as err:
            _exit_with(errors, EXIT_CANNOT_EXECUTE, f"{command[0]}: {err.strerror}")
    finally:
        os._exit(EXIT_RUN_FAILED)


def _exit_with(errors: int, code: int, message: str) -> None:
    os.write(errors, f"{code}:{message}".encode())
    os._exit(code)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


@dataclass
class RunResult:
    profile: profile.Profile
    warnings: list[str]


def _noaudit_handling(loaded: probes.Loaded) -> str:
    """How non-audited checks are told apart: by opts, by their callers (tracepoint), or not at all."""
    if loaded.mode != "tracepoint":
        return "included"
    try:
        found = kallsyms.ranges(profile.NOAUDIT_FUNCTIONS)
    except OSError:
        found = {}
    table = loaded.modules[0]["noaudit_callers"]
    for index, (start, end) in enumerate(found.values()):
        table[table.Key(index)] = table.Leaf(start, end)
    return "inferred" if found else "indistinguishable"


RUN_MAPS = ("checks", "drops", "changes", "change_drops", "held", "tree_drops")


def read_profile(loaded: probes.Loaded, noaudit: str) -> RunResult:
    """What the tree did, from the maps of all three modules."""
    maps = open_maps(loaded.map_fds(RUN_MAPS))
    held = 0
    for permitted in maps["held"].lookup(maps["held"].key_type(0)):  # one copy per CPU
        held |= permitted.value
    result = profile.Profile(
        mode=loaded.mode, noaudit=noaudit,
        checks=profile.read_checks(maps["checks"], noaudit),
        changes=profile.read_changes(maps["changes"]),
        held=capabilities.decode(held),
    )
    return RunResult(result, _warnings(maps))


def _warnings(maps: dict[str, BpfMap]) -> list[str]:
    lost = {
        "forks not followed (the tree map was full)": maps["tree_drops"].slot_total(0),
        "checks not counted (the checks map was full)": maps["drops"].slot_total(0),
        "checks lost in flight (kprobe mode: the inflight map was full)": maps["drops"].slot_total(1),
        "syscalls whose changes were not seen": maps["change_drops"].slot_total(0)
        + maps["change_drops"].slot_total(1),
    }
    return [f"{n} {what}" for what, n in lost.items() if n]
