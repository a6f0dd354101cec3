"""Kernel struct member offsets read from BTF (/sys/kernel/btf/vmlinux) in pure Python."""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

VMLINUX = "/sys/kernel/btf/vmlinux"

_MAGIC = 0xEB9F
_HEADER = "HBBIIIII"
_HEADER_SIZE = struct.calcsize("<" + _HEADER)

(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT,
 FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(1, 20)

_KIND_NAMES = ("void", "int", "pointer", "array", "struct", "union", "enum", "forward declaration",
               "typedef", "volatile", "const", "restrict", "function", "function prototype",
               "variable", "data section", "float", "decl tag", "type tag", "enum64")

# Words (u32) that follow each kind's 3-word header: (fixed, per vlen entry).
_TRAILER = (None, (1, 0), (0, 0), (3, 0), (0, 3), (0, 3), (0, 2), (0, 0), (0, 0), (0, 0), (0, 0),
            (0, 0), (0, 0), (0, 2), (1, 0), (0, 3), (0, 0), (1, 0), (0, 0), (0, 3))

_MODIFIERS = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))
_SIZED = frozenset((INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC))
_COMPOSITES = frozenset((STRUCT, UNION))

# BTF has no pointer size; like libbpf, infer it from the C "long" type.
_LONG_NAMES = frozenset(("long", "long int", "int long", "unsigned long", "long unsigned",
                         "unsigned long int", "long unsigned int", "long int unsigned"))

# A modifier chain longer than this can only be a cycle in malformed data.
_MAX_CHAIN = 64


class BtfError(Exception):
    """BTF that cannot be read, or lacks a struct or member that was asked for."""


@dataclass(frozen=True)
class Member:
    """Where a member sits: bytes from the start of the outermost struct, and its type's size."""

    offset: int
    size: int


def _u32_array(section: bytes, byte_order: str) -> array:
    code = next(c for c in "IL" if array(c).itemsize == 4)
    words = array(code)
    words.frombytes(section)
    if (byte_order == "<") != (struct.pack("=H", 1) == b"\x01\x00"):
        words.byteswap()
    return words


def _byte_order(data: bytes) -> str:
    if len(data) < 2:
        raise BtfError(f"BTF truncated: {len(data)} bytes, too short for a header")
    if struct.unpack_from("<H", data)[0] == _MAGIC:
        return "<"
    if struct.unpack_from(">H", data)[0] == _MAGIC:
        return ">"
    raise BtfError(f"not BTF: magic is 0x{struct.unpack_from('<H', data)[0]:04x}, expected 0xeb9f")


def _section(data: bytes, hdr_len: int, off: int, length: int, what: str) -> bytes:
    start, end = hdr_len + off, hdr_len + off + length
    if end > len(data):
        raise BtfError(f"BTF truncated: {what} section ends at byte {end}, data has {len(data)}")
    return data[start:end]


class Btf:
    """One parsed BTF blob; struct members are decoded only when asked for."""

    def __init__(self, words: array, starts: array, strings: bytes, named: List[int], ints: List[int],
                 funcs: Optional[List[int]] = None):
        self._words = words
        self._starts = starts
        self._strings = strings
        self._funcs = funcs or []
        self._by_name = self._index_composites(named)
        self._pointer_size = self._infer_pointer_size(ints)

    @classmethod
    def load(cls, path: str = VMLINUX) -> "Btf":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BtfError(f"cannot read BTF from {path}: {e.strerror or e}") from None
        try:
            return cls.parse(data)
        except BtfError as e:
            raise BtfError(f"{path}: {e}") from None

    @classmethod
    def parse(cls, data: bytes) -> "Btf":
        order = _byte_order(data)
        if len(data) < _HEADER_SIZE:
            raise BtfError(f"BTF truncated: {len(data)} bytes, too short for a header")
        _, version, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(order + _HEADER, data)
        if version != 1:
            raise BtfError(f"unsupported BTF version {version}")
        if hdr_len < _HEADER_SIZE or type_off % 4 or type_len % 4 or (hdr_len + type_off) % 4:
            raise BtfError("malformed BTF header: misaligned or short sections")
        words = _u32_array(_section(data, hdr_len, type_off, type_len, "type"), order)
        strings = _section(data, hdr_len, str_off, str_len, "string")
        starts, named, ints, funcs = cls._scan_types(words)
        return cls(words, starts, strings, named, ints, funcs)

    @staticmethod
    def _scan_types(words: array) -> Tuple[array, List[int], List[int], List[int]]:
        """Where each type id starts, which ids are named structs/unions, ints, functions."""
        starts = array("L", [0])  # id 0 is void and has no record
        named: List[int] = []
        ints: List[int] = []
        funcs: List[int] = []
        i, end, trailer = 0, len(words), _TRAILER
        while i < end:
            if i + 3 > end:
                raise BtfError(f"BTF truncated: type {len(starts)} cut off")
            info = words[i + 1]
            kind = (info >> 24) & 0x1F
            layout = trailer[kind] if kind < len(trailer) else None
            if layout is None:
                raise BtfError(f"unknown BTF kind {kind} at type {len(starts)}")
            if (kind == STRUCT or kind == UNION) and words[i]:
                named.append(len(starts))
            elif kind == INT:
                ints.append(len(starts))
            elif kind == FUNC:
                funcs.append(len(starts))
            starts.append(i)
            i += 3 + layout[0] + layout[1] * (info & 0xFFFF)
        if i != end:
            raise BtfError(f"BTF truncated: type {len(starts) - 1} runs past the type section")
        return starts, named, ints, funcs

    def _index_composites(self, named: List[int]) -> Dict[str, int]:
        # Rank: a complete definition beats an empty one, a struct beats a union; ties keep the first.
        best: Dict[str, Tuple[Tuple[bool, bool], int]] = {}
        for type_id in named:
            name_off, kind, vlen, _, _, _ = self._type(type_id)
            rank = (vlen > 0, kind == STRUCT)
            name = self._name(name_off)
            if name not in best or rank > best[name][0]:
                best[name] = (rank, type_id)
        return {name: type_id for name, (_, type_id) in best.items()}

    def _infer_pointer_size(self, ints: List[int]) -> int:
        for type_id in ints:
            name_off, _, _, _, size, _ = self._type(type_id)
            if self._name(name_off) in _LONG_NAMES and size in (4, 8):
                return size
        return struct.calcsize("P")

    def _type(self, type_id: int) -> Tuple[int, int, int, bool, int, int]:
        """(name_off, kind, vlen, kind_flag, size_or_type, word index) of one type."""
        if not 0 < type_id < len(self._starts):
            raise BtfError(f"BTF refers to type {type_id}, which does not exist")
        i = self._starts[type_id]
        info = self._words[i + 1]
        return self._words[i], (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31), self._words[i + 2], i

    def _name(self, name_off: int) -> str:
        end = self._strings.find(b"\0", name_off)
        if name_off >= len(self._strings) or end < 0:
            raise BtfError(f"BTF name offset {name_off} is outside the string section")
        return self._strings[name_off:end].decode("utf-8", "replace")

    def _name_is(self, name_off: int, wanted: bytes) -> bool:
        return self._strings[name_off:name_off + len(wanted)] == wanted

    def _resolve(self, type_id: int) -> int:
        """The type behind any typedef/const/volatile/restrict/type tag."""
        for _ in range(_MAX_CHAIN):
            if type_id == 0:
                return 0
            _, kind, _, _, target, _ = self._type(type_id)
            if kind not in _MODIFIERS:
                return type_id
            type_id = target
        raise BtfError(f"BTF type chain through type {type_id} does not end")

    def _kind(self, type_id: int) -> int:
        return self._type(type_id)[1] if type_id else 0

    def _size_of(self, type_id: int) -> int:
        type_id = self._resolve(type_id)
        if type_id == 0:
            raise BtfError("void has no size")
        _, kind, _, _, size, i = self._type(type_id)
        if kind in _SIZED:
            return size
        if kind == PTR:
            return self._pointer_size
        if kind == ARRAY:
            element, count = self._words[i + 3], self._words[i + 5]
            return count * self._size_of(element)
        raise BtfError(f"BTF type {type_id} is a {_KIND_NAMES[kind]}, which has no size")

    def _is_legacy_bitfield(self, type_id: int) -> bool:
        # Without kind_flag, a bitfield points at an int narrower than its storage.
        type_id = self._resolve(type_id)
        if self._kind(type_id) != INT:
            return False
        _, _, _, _, size, i = self._type(type_id)
        encoding = self._words[i + 3]
        return (encoding >> 16) & 0xFF != 0 or encoding & 0xFF != size * 8

    def _members(self, type_id: int):
        """(name_off, type_id, bit_offset, bitfield_size) for each direct member."""
        _, _, vlen, kind_flag, _, i = self._type(type_id)
        words = self._words
        for j in range(i + 3, i + 3 + 3 * vlen, 3):
            offset = words[j + 2]
            if kind_flag:
                yield words[j], words[j + 1], offset & 0xFFFFFF, offset >> 24
            else:
                yield words[j], words[j + 1], offset, 0

    def _find(self, composite: int, wanted: bytes) -> Optional[Tuple[int, int, int]]:
        """(bit_offset, type_id, bitfield_size) of a member, looking inside anonymous members."""
        for name_off, type_id, offset, bits in self._members(composite):
            if name_off and self._name_is(name_off, wanted):
                return offset, type_id, bits
            if not name_off:
                inner = self._resolve(type_id)
                if self._kind(inner) in _COMPOSITES:
                    found = self._find(inner, wanted)
                    if found:
                        return offset + found[0], found[1], found[2]
        return None

    def _struct_id(self, struct_name: str) -> int:
        type_id = self._by_name.get(struct_name)
        if type_id is None:
            raise BtfError(f"BTF has no struct {struct_name}")
        return type_id

    def member(self, struct: str, path: str) -> Member:
        """Offset from the start of `struct` and size of a dotted member path such as "uid.val"."""
        parts = path.split(".")
        if not all(parts):
            raise BtfError(f"bad member path {path!r} for struct {struct}")
        type_id, bit_offset = self._struct_id(struct), 0
        for depth, part in enumerate(parts):
            container = self._resolve(type_id)
            if self._kind(container) not in _COMPOSITES:
                above = ".".join(parts[:depth])
                kind = _KIND_NAMES[self._kind(container)]
                raise BtfError(f"struct {struct} member {above} is not a struct or union ({kind}), "
                               f"so it has no member {part}")
            found = self._find(container, part.encode() + b"\0")
            if found is None:
                raise BtfError(f"struct {struct} has no member {path}")
            offset, type_id, bits = found
            bit_offset += offset
            if bits or bit_offset % 8 or self._is_legacy_bitfield(type_id):
                raise BtfError(f"struct {struct} member {'.'.join(parts[:depth + 1])} is a bitfield "
                               f"(bit {bit_offset}), which has no byte offset")
        return Member(offset=bit_offset // 8, size=self._size_of(type_id))

    def enum_value(self, enum: str, name: str) -> int:
        """The value of one enumerator, e.g. enum_value("cgroup_subsys_id", "memory_cgrp_id")."""
        wanted = enum.encode()
        for type_id in range(1, len(self._starts)):
            name_off, kind, vlen, _, _, at = self._type(type_id)
            if kind != ENUM or not self._name_is(name_off, wanted):
                continue
            for i in range(vlen):
                entry_name, value = self._words[at + 3 + 2 * i], self._words[at + 4 + 2 * i]
                if self._name(entry_name) == name:
                    return value - (1 << 32) if value >= 1 << 31 else value
            raise BtfError(f"enum {enum} has no enumerator {name}")
        raise BtfError(f"BTF has no enum {enum}")

    def function_id(self, name: str) -> int:
        """The type id of a kernel function, as a fexit program's attach_btf_id names it."""
        wanted = name.encode() + b"\0"
        for type_id in self._funcs:
            if self._name_is(self._words[self._starts[type_id]], wanted):
                return type_id
        raise BtfError(f"BTF has no function {name}")

    def size(self, struct: str) -> int:
        """sizeof(struct `struct`)."""
        return self._size_of(self._struct_id(struct))


def offsets(wanted: Dict[str, Tuple[str, str]], path: str = VMLINUX, btf: Optional[Btf] = None) -> Dict[str, Member]:
    """Look up every (struct, member path) in `wanted`, naming all the missing ones in one BtfError.

    btf: an already loaded Btf of path, so that callers needing several lookups parse it once.
    """
    btf = btf or Btf.load(path)
    found: Dict[str, Member] = {}
    missing: List[str] = []
    for name, (struct_name, member_path) in wanted.items():
        try:
            found[name] = btf.member(struct_name, member_path)
        except BtfError as e:
            missing.append(f"{name}: {e}")
    if missing:
        raise BtfError(f"{path}: " + "; ".join(missing))
    return found
