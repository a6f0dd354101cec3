"""The bpf() system call through ctypes: the few commands the serving process needs without BCC."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import resource
from typing import Iterator, Optional

_NR_BPF = {"x86_64": 321, "aarch64": 280}

BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_ENABLE_STATS = 32
ENOTSUPP = 524  # the kernel's internal "not supported", which bpf() passes to user space
BPF_STATS_RUN_TIME = 0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _CreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
    ]


class _ProgLoadAttr(ctypes.Structure):
    """The head of union bpf_attr for BPF_PROG_LOAD, up to attach_btf_id (Linux 5.5)."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    ]


# r0 = 0; exit
_RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _IdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _StatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info; the kernel fills only as much as we ask for."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf() syscall number unknown on {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info


def map_keys(fd: int, key_type: type) -> Iterator[ctypes.Structure]:
    """Every key of a hash map; keys added meanwhile may or may not be seen."""
    key: Optional[ctypes.Structure] = None
    while True:
        next_key = key_type()
        attr = _MapElemAttr(
            map_fd=fd,
            key=ctypes.addressof(key) if key is not None else 0,
            value=ctypes.addressof(next_key),
        )
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, attr)
        except OSError as err:
            if err.errno == errno.ENOENT:
                return
            raise
        yield next_key
        key = next_key


def map_lookup(fd: int, key: ctypes._CData, value: ctypes.Array) -> bool:
    """Fill value with the entry for key; False when there is none."""
    attr = _MapElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return False
        raise
    return True


class BatchUnsupported(Exception):
    """This kernel (before 5.6) or this map type has no BPF_MAP_LOOKUP_BATCH."""


def map_lookup_batch(fd: int, token: Optional[ctypes.Array], next_token: ctypes.Array,
                     keys: ctypes.Array, values: ctypes.Array, count: int) -> tuple[int, bool]:
    """Copy up to count entries, from where token says (None: the start), into keys and values.

    Returns how many were copied and whether the map has no more; next_token then says where
    the next call goes on. OSError ENOSPC: one hash bucket holds more than count entries.
    """
    attr = _BatchAttr(
        in_batch=ctypes.addressof(token) if token is not None else 0,
        out_batch=ctypes.addressof(next_token),
        keys=ctypes.addressof(keys),
        values=ctypes.addressof(values),
        count=count,
        map_fd=fd,
    )
    try:
        _bpf(BPF_MAP_LOOKUP_BATCH, attr)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return attr.count, True
        if err.errno in (errno.EINVAL, ENOTSUPP, errno.ENOSYS, errno.EOPNOTSUPP):
            raise BatchUnsupported(os.strerror(err.errno) if err.errno != ENOTSUPP else "not supported") from None
        raise
    return attr.count, False


@functools.cache
def lift_memlock() -> None:
    """Kernels before 5.11 charge every BPF map and program to its user's locked memory, checked
    against the loading process's RLIMIT_MEMLOCK (64 KiB by default before 5.16). Root's other
    exporters' programs count too, so a new one fails with EPERM: lifted once, as BCC and libbpf
    do. Without CAP_SYS_RESOURCE it stays; kernels since 5.11 charge the memory cgroup instead."""
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    """A new map's fd (for tests: the exporter's maps come from its BPF programs)."""
    lift_memlock()
    return _bpf(BPF_MAP_CREATE, _CreateAttr(map_type, key_size, value_size, max_entries, 0))


def map_update(fd: int, key: ctypes._CData, value: ctypes.Array) -> None:
    _bpf(BPF_MAP_UPDATE_ELEM, _MapElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value)))


def map_delete(fd: int, key: ctypes._CData) -> bool:
    """Delete one entry; False if it was not there."""
    try:
        _bpf(BPF_MAP_DELETE_ELEM, _MapElemAttr(map_fd=fd, key=ctypes.addressof(key)))
    except FileNotFoundError:
        return False
    return True


def load_empty_tracing_program(attach_btf_id: int, attach_type: int = BPF_TRACE_FEXIT) -> None:
    """Load (and close at once) a program that returns 0, for a kernel function by its BTF id:
    whether this kernel lets fentry/fexit programs load at all, without a compiler. OSError if not."""
    lift_memlock()
    insns = ctypes.create_string_buffer(_RETURN_ZERO, len(_RETURN_ZERO))
    license = ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_TRACING, insn_cnt=len(_RETURN_ZERO) // 8,
                         insns=ctypes.addressof(insns), license=ctypes.addressof(license),
                         expected_attach_type=attach_type, attach_btf_id=attach_btf_id)
    os.close(_bpf(BPF_PROG_LOAD, attr))


def prog_fd_by_id(prog_id: int) -> int:
    """An fd for a loaded program (needs CAP_SYS_ADMIN); OSError ENOENT once it is gone."""
    return _bpf(BPF_PROG_GET_FD_BY_ID, _IdAttr(id=prog_id))


def enable_stats() -> int:
    """Turn on BPF run-time statistics for as long as the returned fd stays open."""
    return _bpf(BPF_ENABLE_STATS, _StatsAttr(type=BPF_STATS_RUN_TIME))
