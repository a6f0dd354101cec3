"""ctypes mirrors of the structs in bpf/capability.h: change both together."""

from __future__ import annotations

import ctypes

COMM_LEN = 16
CAP_OPT_NOAUDIT = 0x2
CAP_OPT_INSETID = 0x4
NO_SYSCALL = 0xFFFFFFFF  # bpf/capability.h: a check made outside any syscall

# enum drop_slot, and the per-CPU "drops" array's key and value.
DROP_SLOTS = {"checks": 0, "inflight": 1}
DropKey = ctypes.c_uint32
DropValue = ctypes.c_uint64


class CheckKey(ctypes.Structure):
    _fields_ = [
        ("comm", ctypes.c_char * COMM_LEN),
        ("cap", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("opts", ctypes.c_uint32),
        ("syscall", ctypes.c_uint32),
        ("kernel_stack", ctypes.c_int32),
        ("pad", ctypes.c_uint32),
        ("process", ctypes.c_char * COMM_LEN),
    ]


class CheckValue(ctypes.Structure):
    _fields_ = [
        ("checks", ctypes.c_uint64),
        ("denials", ctypes.c_uint64),
    ]


class ChangeKey(ctypes.Structure):
    _fields_ = [
        ("comm", ctypes.c_char * COMM_LEN),
        ("syscall", ctypes.c_uint32),
        ("set", ctypes.c_uint32),
        ("before", ctypes.c_uint64),
        ("after", ctypes.c_uint64),
        ("process", ctypes.c_char * COMM_LEN),
    ]


# enum change_drop_slot
CHANGE_DROP_SLOTS = {"cred_snapshots": 0, "changes": 1}
ChangeValue = ctypes.c_uint64


def decode_comm(raw: bytes) -> str:
    """A comm as a label: the kernel's bytes up to the NUL, undecodable bytes escaped."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


# Each served map's key and value layout, by map name.
MAP_LAYOUTS = {
    "checks": (CheckKey, CheckValue),
    "drops": (DropKey, DropValue),
    "changes": (ChangeKey, ChangeValue),
    "change_drops": (DropKey, DropValue),
    "held": (ctypes.c_uint32, ctypes.c_uint64),  # run: one slot, the union of permitted sets
    "tree_drops": (DropKey, DropValue),
}


class CredState(ctypes.Structure):
    _fields_ = [
        ("sets", ctypes.c_uint64 * 5),  # indexed like exporter.core.changes.SETS
        ("securebits", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("euid", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class CheckEvent(ctypes.Structure):
    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("cap", ctypes.c_int32),
        ("ret", ctypes.c_int32),
        ("opts", ctypes.c_uint32),
        ("user_stack", ctypes.c_int32),
        ("kernel_stack", ctypes.c_int32),
        ("syscall", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


ARGS_LEN = 3
PATH_LEN = 64


class ChangeEvent(ctypes.Structure):
    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tgid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("syscall", ctypes.c_uint32),
        ("ret", ctypes.c_int64),
        ("args", ctypes.c_uint64 * ARGS_LEN),
        ("user_stack", ctypes.c_int32),
        ("pad", ctypes.c_int32),
        ("comm", ctypes.c_char * COMM_LEN),
        ("path", ctypes.c_char * PATH_LEN),
        ("before", CredState),
        ("after", CredState),
    ]
