"""run --verify: prove a recommendation by running the command again under it, and without each member."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Optional

from exporter.core import capabilities, privileges
from exporter.core.verification import Trial, Verification

EXIT_TIMED_OUT = 124  # as timeout(1): verification stopped at a timeout
EXIT_RUN_FAILED = 125  # run's own failure, as in run.py
METHODS = {
    "user": "as {user} with ambient, inheritable and bounding sets equal to the set "
            "(systemd's User= with AmbientCapabilities= and CapabilityBoundingSet=)",
    "root": "as root with the bounding set cut to the set (docker's --cap-drop=ALL --cap-add=...)",
}


class VerifyError(Exception):
    """Verification cannot go on; the message says why in one line, partial holds what was learnt."""

    def __init__(self, message: str, code: int = EXIT_TIMED_OUT):
        super().__init__(message)
        self.code = code
        self.partial: Optional["Verification"] = None


@dataclass(frozen=True)
class Launch:
    """How to start the command for one trial: the same command, environment and identity as the traced run."""

    command: list[str]
    env: dict[str, str]
    uid: Optional[int]  # None: as root
    gid: Optional[int]
    timeout: float


def run_under(launch: Launch, caps: list[int]) -> Optional[int]:
    """Run the command under exactly caps; its exit code, 126 when it cannot be executed, None at the timeout."""
    try:
        proc = subprocess.Popen(launch.command, env=launch.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: _confine(launch, caps))
    except FileNotFoundError:
        return 127
    except (OSError, subprocess.SubprocessError):
        return 126  # e.g. EPERM: a file-capability binary whose capabilities the set lacks
    try:
        return _exit_code(proc.wait(timeout=launch.timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the command and all it forked
        proc.wait()
        return None


def _confine(launch: Launch, caps: list[int]) -> None:
    """In the child, before execve: the set as systemd (a user) or docker (root) would grant it."""
    if launch.uid is not None:
        privileges.become(launch.uid, launch.gid, caps)
    elif not privileges.drop_all(caps).bounding_dropped:
        # A bounding set left whole would grant what the trial claims to leave out.
        raise privileges.PrivilegeError("cannot cut the bounding set (it takes CAP_SETPCAP)")
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)


def _exit_code(status: int) -> int:
    return 128 - status if status < 0 else status


def success_test(expected_exit: int, check: Optional[str], timeout: float) -> Callable[[Optional[int]], bool]:
    """Success: the traced run's exit code, or --success-check's exit 0 after the run."""
    if check is None:
        return lambda code: code == expected_exit

    def passed(code: Optional[int]) -> bool:
        if code is None:
            return False
        try:
            done = subprocess.run(["/bin/sh", "-c", check], stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VerifyError(f"--success-check did not finish within {timeout:g} s: {check}") from None
        if done.returncode in (126, 127):
            detail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise VerifyError(f"--success-check cannot run: {detail}", EXIT_RUN_FAILED)
        return done.returncode == 0

    return passed


def verify(launch: Launch, granted: list[str], first: list[str], passed: Callable[[Optional[int]], bool],
           method: str, how: str, success: str, deadline: float) -> Verification:
    """Run under every granted capability, then without each in turn, keeping a removal only when the
    command still succeeds: what is left is sufficient (its last run succeeded) and each member necessary.

    first: the capabilities to try removing first (known probe sites). At most len(granted) + 1 runs."""
    result = Verification(method, how, success)
    try:
        return _eliminate(result, launch, granted, first, passed, deadline)
    except VerifyError as err:
        result.summary = f"stopped: {err}"
        err.partial = result
        raise


def _eliminate(result: Verification, launch: Launch, granted: list[str], first: list[str],
               passed: Callable[[Optional[int]], bool], deadline: float) -> Verification:
    current = list(granted)
    if not _trial(result, launch, current, None, passed, deadline):
        result.summary = "the command did not succeed under every capability it was granted: nothing is proven"
        return result
    order = [c for c in first if c in current] + [c for c in current if c not in first]
    for cap in order:
        trial_set = [c for c in current if c != cap]
        if _trial(result, launch, trial_set, cap, passed, deadline):
            current = trial_set
    result.needed, result.verified = current, True
    result.summary = (f"{len(granted) - len(current)} of {len(granted)} granted capabilities are not needed; "
                      "each one left is needed: the command failed without it")
    return result


def _trial(result: Verification, launch: Launch, caps: list[str], without: Optional[str],
           passed: Callable[[Optional[int]], bool], deadline: float) -> bool:
    if time.monotonic() > deadline:
        raise VerifyError(f"--verify-total-timeout reached after {len(result.trials)} runs")
    code = run_under(launch, [capabilities.number(c) for c in caps])
    ok = passed(code)
    if code is None and without is None:
        raise VerifyError(f"the command did not finish within {launch.timeout:g} s under the granted set "
                          "and was killed (--verify-timeout)")
    if without is None:
        verdict = "sufficient" if ok else "insufficient"
    else:
        verdict = "not needed" if ok else "needed"
    result.trials.append(Trial(list(caps), without, code, ok, verdict))
    return ok
