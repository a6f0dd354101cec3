"""Load the BPF programs in a forked child and receive their fds, so the server never maps BCC/LLVM."""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from exporter.config import Config
from exporter.ebpf import probes
from exporter.ebpf.probes import LoadError

log = logging.getLogger(__name__)

MAX_FDS = 64
MAX_MESSAGE = 1 << 16


@dataclass
class Attachment:
    """What the children attached, held by fd: closing the link fds detaches the programs."""

    mode: str
    maps: dict[str, int]
    programs: dict[str, int]
    links: list[int]
    reasons: dict[str, str] = field(default_factory=dict)
    change_hook: str = ""  # fexit or kprobe (on commit_creds), or tracepoint (the syscalls'); "" when off
    change_reasons: dict[str, str] = field(default_factory=dict)  # why the hooks tried before it failed

    def close(self) -> None:
        # Each detach waits out an RCU grace period (about 0.1 s); closing the links
        # side by side lets those waits overlap instead of adding up.
        with ThreadPoolExecutor(max_workers=max(1, len(self.links))) as pool:
            list(pool.map(_close_quietly, self.links))
        for fd in list(self.programs.values()) + list(self.maps.values()):
            _close_quietly(fd)
        self.links, self.programs, self.maps = [], {}, {}


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def load(config: Config) -> Attachment:
    """Compile and attach in child processes; raise LoadError with a one-line reason.

    The capability checks' program and change tracking's are compiled at once, each in a
    child of its own: compiling is most of the start-up, and the two need nothing of each
    other. Neither child's BCC or LLVM ever maps into this process."""
    jobs: dict[str, Callable[[Any], probes.Loaded]] = {
        "checks": lambda log: probes.attach_first(config, log, with_changes=False),
    }
    if config.changes.enabled:
        jobs["changes"] = lambda log: probes.attach_changes(config, log)
    started = {name: _start(job) for name, job in jobs.items()}
    answers = {name: _answer(*child) for name, child in started.items()}
    failed = [name for name in jobs if "error" in answers[name][0]]
    if failed:
        for meta, fds in answers.values():
            for fd in fds:
                _close_quietly(fd)
        meta = answers[failed[0]][0]
        raise LoadError(meta["error"], meta.get("reasons"))
    attachment = _attachment(*answers["checks"])
    if "changes" in answers:
        changes = _attachment(*answers["changes"])
        attachment.maps.update(changes.maps)
        attachment.programs.update(changes.programs)
        attachment.links += changes.links
        attachment.change_hook, attachment.change_reasons = changes.mode, changes.reasons
        for hook, why in changes.reasons.items():
            log.info("change tracking hook %s not used: %s", hook, why)
        log.info("tracking capability changes %s", CHANGE_HOOK_NAMES.get(changes.mode, changes.mode))
    return attachment


# How the log names each change tracking hook.
CHANGE_HOOK_NAMES = {
    "fexit": "on commit_creds (fentry)",
    "kprobe": "on commit_creds (kprobe)",
    "tracepoint": "on the syscall tracepoints (every syscall pays while they are on)",
}


def _start(job: Callable[[Any], probes.Loaded]) -> tuple[int, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        _child(theirs, job)
    theirs.close()
    return pid, ours


def _answer(pid: int, sock: socket.socket) -> tuple[dict, list[int]]:
    with sock:
        message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    _, status = os.waitpid(pid, 0)
    if not message:
        return {"error": f"the BPF loader process ended without an answer ({_describe(status)})"}, fds
    meta = json.loads(message)
    if meta.get("compiler_output"):
        log.debug("BCC said: %s", meta["compiler_output"])
    for level, message in meta.get("notes", []):
        log.log(level, "%s", message)
    return meta, fds


def _attachment(meta: dict, fds: list[int]) -> Attachment:
    take = iter(fds)
    maps = {name: next(take) for name in meta["maps"]}
    programs = {name: next(take) for name in meta["programs"]}
    links = [next(take) for _ in range(meta["links"])]
    return Attachment(meta["mode"], maps, programs, links, meta.get("reasons", {}))


def _child(sock: socket.socket, job: Callable[[Any], probes.Loaded]) -> None:
    """Never returns: os._exit keeps BCC from detaching what the parent now holds."""
    # BCC and LLVM print to fd 2; keep that off the daemon's log and use it in error messages.
    compiler_log = tempfile.TemporaryFile()
    os.dup2(compiler_log.fileno(), 2)
    fds: list[int] = []
    try:
        loaded = job(compiler_log)
        maps, programs, links = loaded.map_fds(), loaded.program_fds(), loaded.link_fds()
        fds = list(maps.values()) + list(programs.values()) + links
        meta = {"mode": loaded.mode, "maps": list(maps), "programs": list(programs), "links": len(links)}
        meta["reasons"], meta["notes"] = loaded.reasons, loaded.notes
    except LoadError as err:
        meta = {"error": str(err), "reasons": err.reasons}
    except BaseException as err:  # the parent must get an answer whatever went wrong
        meta = {"error": f"loading the BPF program failed: {type(err).__name__}: {err}"}
    meta["compiler_output"] = _tail(compiler_log)
    try:
        socket.send_fds(sock, [json.dumps(meta).encode()], fds)
    finally:
        os._exit(0)


def _tail(f, limit: int = 4000) -> str:
    f.flush()
    f.seek(0)
    return f.read().decode("utf-8", "replace")[-limit:].strip()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
