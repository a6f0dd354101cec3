"""A capability-check workload the tests control: exact numbers of checks under chosen comms.

usage: workload.py [--wait] [--user UID] [--cgroup DIR] STEP...
  STEP is COMM=setuid:N (N setuid(0) calls), COMM=chown:N:PATH (N chown attempts of PATH)
  or COMM=read:N:PATH (N reads of PATH).
  --wait   print "ready" and wait for a line on stdin before the steps
  --user   become this uid (and gid), with no supplementary groups, before the steps
  --cgroup move this process into the cgroup v2 directory DIR before the steps
  --exec   after the steps, replace this process with the program PATH (its comm becomes PATH's name)
"""

import argparse
import ctypes
import os
import sys

PR_SET_NAME = 15
# chown to this owner: it is neither root nor the test user, so it always needs CAP_CHOWN.
CHOWN_TARGET_UID = 65533

_libc = ctypes.CDLL(None, use_errno=True)


def set_comm(comm: str) -> None:
    if _libc.prctl(PR_SET_NAME, comm.encode()[:15], 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def setuid_loop(n: int) -> None:
    for _ in range(n):
        os.setuid(0)


def chown_loop(n: int, path: str) -> int:
    refused = 0
    for _ in range(n):
        try:
            os.chown(path, CHOWN_TARGET_UID, -1)
        except PermissionError:
            refused += 1
    return refused


def run_step(step: str) -> str:
    comm, _, action = step.partition("=")
    kind, _, rest = action.partition(":")
    count, _, path = rest.partition(":")
    set_comm(comm)
    if kind == "setuid":
        setuid_loop(int(count))
        return f"{comm} setuid {count}"
    if kind == "chown":
        return f"{comm} chown {count} refused {chown_loop(int(count), path)}"
    if kind == "read":
        for _ in range(int(count)):
            with open(path, "rb") as f:
                f.read()
        return f"{comm} read {count}"
    raise SystemExit(f"unknown step {step!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--user", type=int)
    parser.add_argument("--cgroup")
    parser.add_argument("--exec", dest="program")
    parser.add_argument("steps", nargs="*")
    args = parser.parse_args()
    if args.cgroup:
        with open(os.path.join(args.cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if args.user is not None:
        os.setgroups([])
        os.setresgid(args.user, args.user, args.user)
        os.setresuid(args.user, args.user, args.user)
    if args.wait:
        print("ready", flush=True)
        sys.stdin.readline()
    results = [run_step(step) for step in args.steps]
    print("\n".join(results), flush=True)
    if args.program:
        os.execv(args.program, [args.program])


if __name__ == "__main__":
    main()
