"""A capability workload the tests control: exact numbers of checks and changes under chosen comms.

usage: workload.py [--wait] [--fork] [--user UID] [--cgroup DIR] [--exec PATH [--from-thread]] STEP...
  STEP is COMM=ACTION, run with the thread's comm set to COMM; ACTION is one of
    setuid:N               N setuid(0) calls
    chown:N:PATH           N chown attempts of PATH (to a uid that is neither root nor the caller)
    read:N:PATH            N reads of PATH
    drop-effective:CAPS    one capset() that removes CAPS (comma-separated) from the effective set
    drop-bounding:CAP      one prctl(PR_CAPBSET_DROP, CAP)
    become:UID             one setuid(UID)
    get-name:N             N prctl(PR_GET_NAME) calls, which change nothing
    keep-caps:0|1          one prctl(PR_SET_KEEPCAPS, 0|1)
  --wait   print "ready" and wait for a line on stdin before the steps
  --fork   run the steps in a forked child, and exit with its exit status
  --user   become this uid (and gid), with no supplementary groups, before the steps
  --cgroup move this process into the cgroup v2 directory DIR before the steps
  --exec   after the steps, replace this process with the program PATH (its comm becomes PATH's name)
  --from-thread  exec from a second thread, not the main one (the kernel gives it the main one's id)
Prints one JSON object per step: the step, its result, and the Cap* lines of /proc/self/status
before and after it.
"""

import argparse
import ctypes
import json
import os
import sys

PR_SET_NAME = 15
PR_GET_NAME = 16
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# chown to this owner: it is neither root nor the test user, so it always needs CAP_CHOWN.
CHOWN_TARGET_UID = 65533
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_SETUID": 7, "CAP_NET_RAW": 13, "CAP_SYS_MODULE": 16, "CAP_SYS_ADMIN": 21}

_libc = ctypes.CDLL(None, use_errno=True)


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def set_comm(comm: str) -> None:
    _check(_libc.prctl(PR_SET_NAME, comm.encode()[:15], 0, 0, 0), "prctl(PR_SET_NAME)")


def status_caps() -> dict:
    with open("/proc/self/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f) if k.startswith("Cap")}


def drop_effective(names: str) -> None:
    header = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for name in names.split(","):
        number = CAP_NUMBERS[name]
        data[number // 32].effective &= ~(1 << (number % 32))
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def chown_loop(n: int, path: str) -> int:
    refused = 0
    for _ in range(n):
        try:
            os.chown(path, CHOWN_TARGET_UID, -1)
        except PermissionError:
            refused += 1
    return refused


def read_loop(n: int, path: str) -> int:
    for _ in range(n):
        with open(path, "rb") as f:
            f.read()
    return n


def get_name_loop(n: int) -> int:
    name = ctypes.create_string_buffer(16)
    for _ in range(n):
        _check(_libc.prctl(PR_GET_NAME, name, 0, 0, 0), "prctl(PR_GET_NAME)")
    return n


def setuid_loop(n: int) -> int:
    for _ in range(n):
        os.setuid(0)
    return n


ACTIONS = {
    "setuid": lambda n: setuid_loop(int(n)),
    "chown": lambda n, path: {"refused": chown_loop(int(n), path)},
    "read": lambda n, path: read_loop(int(n), path),
    "drop-effective": drop_effective,
    "drop-bounding": lambda name: _check(_libc.prctl(PR_CAPBSET_DROP, CAP_NUMBERS[name], 0, 0, 0), "PR_CAPBSET_DROP"),
    "become": lambda uid: os.setuid(int(uid)),
    "get-name": lambda n: get_name_loop(int(n)),
    "keep-caps": lambda on: _check(_libc.prctl(PR_SET_KEEPCAPS, int(on), 0, 0, 0), "PR_SET_KEEPCAPS"),
}


def run_step(step: str) -> dict:
    comm, _, action = step.partition("=")
    kind, *params = action.split(":", 2)
    if kind not in ACTIONS:
        raise SystemExit(f"unknown step {step!r}")
    set_comm(comm)
    before = status_caps()
    result = ACTIONS[kind](*params)
    return {"step": step, "pid": os.getpid(), "result": result, "before": before, "after": status_caps()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--user", type=int)
    parser.add_argument("--cgroup")
    parser.add_argument("--exec", dest="program")
    parser.add_argument("--from-thread", action="store_true")
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
    if args.fork:
        child = os.fork()
        if child:
            raise SystemExit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
    for step in args.steps:
        print(json.dumps(run_step(step)), flush=True)
    if args.program and args.from_thread:
        import threading

        threading.Thread(target=os.execv, args=(args.program, [args.program])).start()
        threading.Event().wait()  # the exec ends this thread with the rest
    elif args.program:
        os.execv(args.program, [args.program])


if __name__ == "__main__":
    main()
