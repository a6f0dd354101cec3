"""capability-exporter run: trace one command and its descendants, then say which capabilities it needs."""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import pwd
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass
from typing import Optional

from exporter.config import ChangesConfig, Config, LabelsConfig, MODES, ProbeConfig
from exporter.core import capabilities, privileges, proc_status, profile
from exporter.ebpf import kernel, probes
from exporter.ebpf.maps import BpfMap, open_maps
from exporter.advise import verify
from exporter.usage import Parser, fail

# run's own failures, apart from the command's exit codes, as timeout(1) and env(1) do.
EXIT_TIMED_OUT = verify.EXIT_TIMED_OUT
EXIT_RUN_FAILED = verify.EXIT_RUN_FAILED
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
TREE_MAX_THREADS = 32768
STACKS_MAX_ENTRIES = 16384
# The child's comm from fork to execve: its set-up is run's, not the command's, and the report leaves it out.
SETUP_COMM = "capexp-run-exec"
# What systemd gives a service with User= (split-usr builds, as Debian 12's, add /sbin:/bin).
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PR_SET_NAME = 15
VERIFY_TIMEOUT = 60.0  # seconds, per run
VERIFY_TOTAL_TIMEOUT = 900.0

# OWN_CREDS_ONLY: a program needs what is checked against its own credentials, not what
# overlayfs checks against its mounter's on its behalf (seen: CAP_SYS_ADMIN, CAP_FOWNER).
# KEY_REASON: each check keyed by its syscall and kernel stack, to say why it was asked.
DEFINES: probes.Defines = {"FOLLOW_TREE": TREE_MAX_THREADS, "RECORD_HELD": None, **probes.noaudit_defines(),
                           "OWN_CREDS_ONLY": None, "KEY_REASON": None, "STACKS_MAX_ENTRIES": STACKS_MAX_ENTRIES}


def parser() -> Parser:
    p = Parser(
        prog="capability-exporter run",
        usage="%(prog)s [options] -- COMMAND [ARGS...]",
        description=(
            "Run COMMAND, trace the capability checks and changes of it and of every process it forks, and at "
            "its exit print what it was granted, what it was denied, what it held but never used, and the "
            "capabilities to grant it, each with the syscall and kernel function that asked. Exits with "
            "COMMAND's exit code; run's own failures exit 125, a command that cannot be executed 126, one that "
            "is not found 127, and --verify stopped by a timeout 124."
        ),
    )
    p.usage_exit = EXIT_RUN_FAILED
    p.add_argument("--format", choices=profile.FORMATS, default="text", metavar="FORMAT",
                   help="text (a table, the default), json, systemd (CapabilityBoundingSet= and "
                        "AmbientCapabilities=), kubernetes (a securityContext block) or docker (--cap-* flags)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE (default: standard error)")
    p.add_argument("--user", metavar="USER",
                   help="run COMMAND as this user (name or uid) with its primary group and, as systemd's User= "
                        "does, HOME, USER, LOGNAME and SHELL from its passwd entry and PATH=" + SYSTEMD_PATH)
    p.add_argument("--keep-env", action="store_true",
                   help="with --user: keep the caller's HOME, USER, LOGNAME, SHELL and PATH")
    p.add_argument("--caps", metavar="CAPS", default="",
                   help="with --user: the capabilities COMMAND gets, as systemd's AmbientCapabilities= gives "
                        "them: a comma-separated list such as CAP_NET_RAW,CAP_CHOWN, or all")
    p.add_argument("--verify", action="store_true",
                   help="prove the recommendation: run COMMAND AGAIN under every capability it was granted, then "
                        "once without each in turn, keeping out those it succeeds without. COMMAND runs up to "
                        "one time per granted capability plus one, SIDE EFFECTS AND ALL, with no terminal (its "
                        "input and output are /dev/null). With --user it runs as that user with ambient, "
                        "inheritable and bounding sets equal to the set (systemd); without, as root with the "
                        "bounding set cut to it (docker)")
    p.add_argument("--success-check", metavar="CMD",
                   help="with --verify: a shell command, run after each run, whose exit 0 means the run did its "
                        "job (default: the run exits as the traced run did)")
    p.add_argument("--verify-timeout", type=_seconds, metavar="SECONDS",
                   help="with --verify: kill a run (and all it forked) after this long; one killed without a "
                        "capability counts as failing without it (default 60)")
    p.add_argument("--verify-total-timeout", type=_seconds, metavar="SECONDS",
                   help="with --verify: start no new run after this long (default 900)")
    p.add_argument("--probe.mode", dest="mode", choices=MODES, default="auto", metavar="MODE",
                   help="attach mode for checks: auto, fexit, kprobe or tracepoint")
    p.add_argument("command", nargs="*", metavar="COMMAND", help=argparse.SUPPRESS)
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


@dataclass(frozen=True)
class Identity:
    """Who the command runs as, when --user is given."""

    uid: int
    gid: int
    caps: list[int]
    name: str = ""
    home: str = "/"
    shell: str = "/bin/sh"


def identity(user: Optional[str], caps: str) -> Optional[Identity]:
    if not user:
        if caps:
            fail("--caps needs --user: root gets every capability back at execve", EXIT_RUN_FAILED)
        return None
    try:
        entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        fail(f"--user: no such user {user!r}", EXIT_RUN_FAILED)
    return Identity(entry.pw_uid, entry.pw_gid, cap_list(caps), entry.pw_name, entry.pw_dir,
                    entry.pw_shell or "/bin/sh")


def environment(who: Optional[Identity], keep_env: bool) -> dict[str, str]:
    """The command's environment: the caller's, with what systemd's User= sets taken from the user."""
    env = dict(os.environ)
    if who and not keep_env:
        env.update(HOME=who.home, USER=who.name, LOGNAME=who.name, SHELL=who.shell, PATH=SYSTEMD_PATH)
    return env


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
    _check_verify_flags(args)
    who = identity(args.user, args.caps)
    if who and os.geteuid() != 0:
        fail("--user needs run to be started as root", EXIT_RUN_FAILED)
    if args.keep_env and not who:
        fail("--keep-env goes with --user", EXIT_RUN_FAILED)
    env = environment(who, args.keep_env)
    report = _open_report(args.output)
    try:
        kernel.ensure_tracefs()
        with probes.captured_stderr() as log:
            loaded = probes.attach_first(config_for(args.mode), log, DEFINES)
    except (probes.LoadError, OSError) as err:
        fail(str(err), EXIT_RUN_FAILED)
    except KeyboardInterrupt:
        fail("interrupted before the command started", 128 + signal.SIGINT)
    noaudit = probes.fill_noaudit_callers(loaded)
    child = Child.start(args.command, who, env)
    tree = loaded.modules[-1]["tree"]  # bpf/tree.c's, which the other programs share
    tree[tree.Key(child.pid)] = tree.Leaf(1)
    code = child.run()
    if child.failed:
        return code
    result = read_profile(loaded, noaudit)
    for warning in result.warnings:
        print(f"capability-exporter run: warning: {warning}", file=sys.stderr)
    exit_code = code
    if args.verify:
        exit_code = _verify(args, who, env, code, result.profile)
    report.write(profile.render(args.format, result.profile, command=args.command, exit_code=code))
    report.flush()
    return exit_code


def _check_verify_flags(args) -> None:
    given = [flag for flag, value in (("--success-check", args.success_check), ("--verify-timeout", args.verify_timeout),
                                      ("--verify-total-timeout", args.verify_total_timeout)) if value is not None]
    if given and not args.verify:
        fail(f"{', '.join(given)} go(es) with --verify", EXIT_RUN_FAILED)
    args.verify_timeout = args.verify_timeout or VERIFY_TIMEOUT
    args.verify_total_timeout = args.verify_total_timeout or VERIFY_TOTAL_TIMEOUT


def _verify(args, who: Optional[Identity], env: dict[str, str], traced_exit: int, result: profile.Profile) -> int:
    """Prove the recommendation by experiment; the report then says what was proven. Returns run's exit code."""
    method = "user" if who else "root"
    how = verify.METHODS[method].format(user=who.name if who else "root")
    launch = verify.Launch(args.command, env, who.uid if who else None, who.gid if who else None,
                           args.verify_timeout)
    passed = verify.success_test(traced_exit, args.success_check, args.verify_timeout)
    success = f"--success-check exits 0 ({args.success_check})" if args.success_check else f"exit code {traced_exit}"
    probes_first = [n.capability for n in result.recommend().not_needed]
    print(f"capability-exporter run: --verify: running the command again, up to {len(result.granted()) + 1} "
          f"times, {how}", file=sys.stderr, flush=True)
    try:
        if args.success_check and not passed(traced_exit):
            result.verification = verify.Verification(method, how, success, summary=(
                "the traced run itself did not pass --success-check: nothing to verify"))
            return traced_exit
        result.verification = verify.verify(launch, result.granted(), probes_first, passed, method, how, success,
                                            time.monotonic() + args.verify_total_timeout)
    except verify.VerifyError as err:
        result.verification = err.partial or verify.Verification(method, how, success, summary=f"stopped: {err}")
        print(f"capability-exporter run: error: --verify: {err}", file=sys.stderr)
        return err.code
    return traced_exit


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
    def start(cls, command: list[str], who: Optional[Identity], env: dict[str, str]) -> "Child":
        ready_read, ready_write = os.pipe()
        go_read, go_write = os.pipe()
        errors_read, errors_write = os.pipe2(os.O_CLOEXEC)  # closed by a successful execve
        pid = os.fork()
        if pid == 0:
            for fd in (ready_read, go_write, errors_read):
                os.close(fd)
            _child(command, who, env, ready_write, go_read, errors_write)
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


def _child(command: list[str], who: Optional[Identity], env: dict[str, str], ready: int, go: int,
           errors: int) -> None:
    """In the forked child: become the user, say so, wait to be traced, execute. Never returns."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, SETUP_COMM.encode()[:15], 0, 0, 0)
        # Python ignores SIGPIPE and SIGXFSZ; execve would pass that on to the command.
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        if who:
            try:
                privileges.become(who.uid, who.gid, who.caps)
            except (privileges.PrivilegeError, OSError) as err:
                _exit_with(errors, EXIT_RUN_FAILED, f"cannot become uid {who.uid}: {err}")
        # Searching PATH is set-up too: as another user it meets directories it may not enter.
        path = command[0] if "/" in command[0] else shutil.which(command[0], path=env.get("PATH"))
        if path is None:
            _exit_with(errors, EXIT_NOT_FOUND, f"{command[0]}: command not found")
        os.write(ready, b"r")
        os.close(ready)
        if not os.read(go, 1):
            os._exit(EXIT_RUN_FAILED)
        os.close(go)
        try:
            os.execve(path, command, env)
        except FileNotFoundError:
            _exit_with(errors, EXIT_NOT_FOUND, f"{command[0]}: command not found")
        except OSError as err:
            _exit_with(errors, EXIT_CANNOT_EXECUTE, f"{command[0]}: {exec_refusal(path, err)}")
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


def exec_refusal(path: str, err: OSError) -> str:
    """Why execve failed, naming the file capabilities or set-user-ID bit that a cut set blocks."""
    if err.errno != errno.EPERM:
        return err.strerror
    try:
        granted = file_capabilities(os.getxattr(path, "security.capability"))
    except OSError:
        granted = None
    if granted:
        return (f"the kernel refused to execute it (Operation not permitted): the file has the capabilities "
                f"{' '.join(granted)}, and it may not run without all of them; give them with --caps (or keep "
                "them in the bounding set)")
    if os.stat(path).st_mode & stat.S_ISUID:
        return ("the kernel refused to execute it (Operation not permitted): it is set-user-ID, and the bounding "
                "set or --caps blocks what it would gain")
    return err.strerror


def file_capabilities(raw: bytes) -> list[str]:
    """The permitted set of a security.capability xattr (struct vfs_cap_data, revision 2 or 3)."""
    if len(raw) < 12:
        return []
    low = int.from_bytes(raw[4:8], "little")
    high = int.from_bytes(raw[12:16], "little") if len(raw) >= 20 else 0
    return capabilities.decode(low | high << 32)


@dataclass
class RunResult:
    profile: profile.Profile
    warnings: list[str]


RUN_MAPS = ("checks", "drops", "changes", "change_drops", "held", "tree_drops")


def read_profile(loaded: probes.Loaded, noaudit: str) -> RunResult:
    """What the tree did, from the maps of all three modules."""
    maps = open_maps(loaded.map_fds(RUN_MAPS))
    held = 0
    for permitted in maps["held"].lookup(maps["held"].key_type(0)):  # one copy per CPU
        held |= permitted.value
    result = profile.Profile(
        mode=loaded.mode, noaudit=noaudit,
        checks=[c for c in profile.read_checks(maps["checks"], noaudit, probes.kernel_callers(loaded.modules[0]))
                if c.comm != SETUP_COMM],
        changes=[c for c in profile.read_changes(maps["changes"]) if c.comm != SETUP_COMM],
        held=capabilities.decode(held),
    )
    return RunResult(result, loaded.warnings() + _warnings(maps))


def _warnings(maps: dict[str, BpfMap]) -> list[str]:
    lost = {
        "forks not followed (the tree map was full)": maps["tree_drops"].slot_total(0),
        "checks not counted (the checks map was full)": maps["drops"].slot_total(0),
        "checks lost in flight (kprobe mode: the inflight map was full)": maps["drops"].slot_total(1),
        "syscalls whose changes were not seen": maps["change_drops"].slot_total(0)
        + maps["change_drops"].slot_total(1),
    }
    return [f"{n} {what}" for what, n in lost.items() if n]
