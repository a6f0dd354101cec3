"""BTF struct member offsets: synthetic blobs for the parser's logic, the running kernel's BTF for the truth."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time

import pytest

from exporter.ebpf.btf import VMLINUX, Btf, BtfError, Member, offsets

BPFTOOL = "/usr/sbin/bpftool"


class Blob:
    """Encodes a small BTF blob type by type; each method returns the new type's id."""

    def __init__(self):
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def _name(self, name):
        if not name:
            return 0
        offset = len(self.strings)
        self.strings += name.encode() + b"\0"
        return offset

    def _add(self, kind, name=None, vlen=0, size_or_type=0, kind_flag=False, trailer=b""):
        info = (kind << 24) | vlen | (int(kind_flag) << 31)
        self.types += struct.pack("<III", self._name(name), info, size_or_type) + trailer
        self.count += 1
        return self.count

    def int(self, name, size, bits=None, bit_offset=0):
        encoding = (bit_offset << 16) | (size * 8 if bits is None else bits)
        return self._add(1, name, size_or_type=size, trailer=struct.pack("<I", encoding))

    def ptr(self, target):
        return self._add(2, size_or_type=target)

    def array(self, element, index, count):
        return self._add(3, trailer=struct.pack("<III", element, index, count))

    def struct(self, name, size, members, kind_flag=False, union=False):
        """members: (name or None, type id, bit offset[, bitfield size])."""
        trailer = b""
        for member in members:
            member_name, type_id, offset = member[:3]
            bitfield = member[3] if len(member) > 3 else 0
            encoded = (bitfield << 24) | offset if kind_flag else offset
            trailer += struct.pack("<III", self._name(member_name), type_id, encoded)
        return self._add(5 if union else 4, name, len(members), size, kind_flag, trailer)

    def union(self, name, size, members, kind_flag=False):
        return self.struct(name, size, members, kind_flag, union=True)

    def fwd(self, name):
        return self._add(7, name)

    def typedef(self, name, target):
        return self._add(8, name, size_or_type=target)

    def volatile(self, target):
        return self._add(9, size_or_type=target)

    def const(self, target):
        return self._add(10, size_or_type=target)

    def raw(self, kind, vlen=0, trailer=b""):
        return self._add(kind, vlen=vlen, trailer=trailer)

    def bytes(self, magic=0xEB9F, version=1):
        header = struct.pack("<HBBIIIII", magic, version, 0, 24, 0, len(self.types), len(self.types),
                             len(self.strings))
        return header + bytes(self.types) + bytes(self.strings)

    def parse(self):
        return Btf.parse(self.bytes())


def cred_like():
    """struct cred-alike: typedefs to one-member structs, as the kernel's kuid_t and kernel_cap_t are."""
    b = Blob()
    uint = b.int("unsigned int", 4)
    u64 = b.int("long long unsigned int", 8)
    b.int("long int", 8)
    kuid = b.typedef("kuid_t", b.struct(None, 4, [("val", b.typedef("uid_t", uint), 0)]))
    cap = b.typedef("kernel_cap_t", b.struct(None, 8, [("val", b.typedef("u64", u64), 0)]))
    b.struct("cred", 48, [("usage", uint, 0), ("uid", kuid, 32), ("securebits", uint, 64),
                          ("cap_inheritable", b.const(cap), 128), ("cap_effective", b.volatile(b.const(cap)), 192),
                          ("user", b.ptr(b.fwd("user_struct")), 256), ("comm", b.array(uint, uint, 4), 320)])
    return b


def test_direct_member():
    assert cred_like().parse().member("cred", "securebits") == Member(offset=8, size=4)


def test_nested_dotted_path_through_typedef():
    assert cred_like().parse().member("cred", "uid.val") == Member(offset=4, size=4)


def test_const_and_volatile_are_looked_through():
    btf = cred_like().parse()
    assert btf.member("cred", "cap_effective") == Member(offset=24, size=8)
    assert btf.member("cred", "cap_effective.val") == Member(offset=24, size=8)
    assert btf.member("cred", "cap_inheritable.val") == Member(offset=16, size=8)


def test_pointer_takes_the_size_of_long():
    assert cred_like().parse().member("cred", "user") == Member(offset=32, size=8)


def test_pointer_size_follows_a_32_bit_long():
    b = Blob()
    b.int("long int", 4)
    b.struct("s", 4, [("p", b.ptr(0), 0)])
    assert b.parse().member("s", "p").size == 4


def test_array_size_is_count_times_element():
    assert cred_like().parse().member("cred", "comm") == Member(offset=40, size=16)


def test_struct_size():
    assert cred_like().parse().size("cred") == 48


def test_anonymous_union_and_struct_members():
    # struct task { int a; union { struct { long x; const long y; }; int z; }; u16 after; }
    b = Blob()
    i32 = b.int("int", 4)
    i64 = b.int("long int", 8)
    u16 = b.int("short unsigned int", 2)
    inner = b.struct(None, 16, [("x", i64, 0), ("y", b.const(i64), 64)])
    union = b.union(None, 16, [(None, inner, 0), ("z", i32, 0)])
    b.struct("task", 40, [("a", i32, 0), (None, b.const(union), 64), ("after", u16, 256)])
    btf = b.parse()
    assert btf.member("task", "x") == Member(offset=8, size=8)
    assert btf.member("task", "y") == Member(offset=16, size=8)
    assert btf.member("task", "z") == Member(offset=8, size=4)
    assert btf.member("task", "after") == Member(offset=32, size=2)


def test_dotted_path_into_a_member_of_an_anonymous_struct():
    b = Blob()
    i32 = b.int("int", 4)
    pair = b.struct("pair", 8, [("lo", i32, 0), ("hi", i32, 32)])
    anon = b.struct(None, 16, [("pad", i32, 0), ("p", pair, 64)])
    b.struct("outer", 24, [("head", i32, 0), (None, anon, 64)])
    assert b.parse().member("outer", "p.hi") == Member(offset=8 + 8 + 4, size=4)


def test_kind_flag_offsets_drop_the_bitfield_size():
    # struct flags { u32 a:3, b:5; u64 c; union { u32 d; }; } with kind_flag: offset = size << 24 | bit offset.
    b = Blob()
    u32 = b.int("unsigned int", 4)
    u64 = b.int("long long unsigned int", 8)
    anon = b.union(None, 4, [("d", u32, 0)], kind_flag=True)
    b.struct("flags", 24, [("a", u32, 0, 3), ("b", u32, 3, 5), ("c", u64, 64, 0), (None, anon, 128, 0)],
             kind_flag=True)
    btf = b.parse()
    assert btf.member("flags", "c") == Member(offset=8, size=8)
    assert btf.member("flags", "d") == Member(offset=16, size=4)


def test_bitfield_member_has_no_byte_offset():
    b = Blob()
    u32 = b.int("unsigned int", 4)
    b.struct("flags", 4, [("a", u32, 0, 8), ("b", u32, 8, 5)], kind_flag=True)
    btf = b.parse()
    for name, bit in (("a", 0), ("b", 8)):
        with pytest.raises(BtfError, match=rf"^struct flags member {name} is a bitfield \(bit {bit}\)"):
            btf.member("flags", name)


def test_legacy_bitfield_without_kind_flag_is_refused():
    b = Blob()
    b.struct("old", 4, [("a", b.int("unsigned int", 4, bits=3), 0), ("b", b.int("unsigned int", 4), 3)])
    btf = b.parse()
    for name in ("a", "b"):
        with pytest.raises(BtfError, match=f"member {name} is a bitfield"):
            btf.member("old", name)


def test_struct_with_members_wins_over_forward_and_empty_declarations():
    b = Blob()
    i32 = b.int("int", 4)
    b.fwd("dup")
    b.struct("dup", 0, [])
    b.union("dup", 4, [("u", i32, 0)])
    b.struct("dup", 8, [("pad", i32, 0), ("real", i32, 32)])
    b.struct("dup", 4, [("later", i32, 0)])
    btf = b.parse()
    assert btf.member("dup", "real") == Member(offset=4, size=4)
    assert btf.size("dup") == 8


def test_missing_struct():
    with pytest.raises(BtfError, match="^BTF has no struct task_struct$"):
        cred_like().parse().member("task_struct", "cred")
    with pytest.raises(BtfError, match="^BTF has no struct nope$"):
        cred_like().parse().size("nope")


def test_forward_declaration_is_not_a_struct():
    with pytest.raises(BtfError, match="^BTF has no struct user_struct$"):
        cred_like().parse().member("user_struct", "uid")


@pytest.mark.parametrize("path", ["cap_permitted", "uid.nope", "cap_effective.val2"])
def test_missing_member(path):
    with pytest.raises(BtfError, match=rf"^struct cred has no member {re.escape(path)}$"):
        cred_like().parse().member("cred", path)


def test_path_through_a_non_struct():
    expected = r"^struct cred member securebits is not a struct or union \(int\), so it has no member low$"
    with pytest.raises(BtfError, match=expected):
        cred_like().parse().member("cred", "securebits.low")
    with pytest.raises(BtfError, match=r"member user is not a struct or union \(pointer\)"):
        cred_like().parse().member("cred", "user.uid")


@pytest.mark.parametrize("path", ["", "uid.", ".val", "uid..val"])
def test_bad_path(path):
    with pytest.raises(BtfError, match="bad member path"):
        cred_like().parse().member("cred", path)


def test_bad_magic():
    with pytest.raises(BtfError, match="^not BTF: magic is 0x1234, expected 0xeb9f$"):
        Btf.parse(cred_like().bytes(magic=0x1234))


def test_elf_file_is_not_btf():
    with pytest.raises(BtfError, match="^not BTF"):
        Btf.parse(b"\x7fELF" + bytes(60))


def test_unsupported_version():
    with pytest.raises(BtfError, match="^unsupported BTF version 2$"):
        Btf.parse(cred_like().bytes(version=2))


def test_every_truncation_is_a_btf_error():
    data = cred_like().bytes()
    for length in range(len(data)):
        with pytest.raises(BtfError, match="truncated"):
            Btf.parse(data[:length])


def test_type_section_cut_mid_record():
    b = cred_like()
    b.types = b.types[:-4]
    with pytest.raises(BtfError, match=r"^BTF truncated: type \d+ runs past the type section$"):
        b.parse()


def test_unknown_kind():
    b = cred_like()
    b.raw(25)
    with pytest.raises(BtfError, match=r"^unknown BTF kind 25 at type \d+$"):
        b.parse()


def test_member_of_a_type_that_does_not_exist():
    b = Blob()
    b.struct("s", 4, [("m", 99, 0)])
    with pytest.raises(BtfError, match="^BTF refers to type 99, which does not exist$"):
        b.parse().member("s", "m")


def test_typedef_cycle():
    b = Blob()
    b.typedef("a", 2)
    b.typedef("b", 1)
    b.struct("s", 4, [("m", 1, 0)])
    with pytest.raises(BtfError, match="does not end"):
        b.parse().member("s", "m")


def test_name_outside_the_string_section():
    b = Blob()
    b.types += struct.pack("<III", 10_000, 4 << 24, 0)
    b.count += 1
    with pytest.raises(BtfError, match="outside the string section"):
        b.parse()


def test_kinds_that_carry_trailers_are_skipped():
    b = Blob()
    i32 = b.int("int", 4)
    b.raw(6, vlen=2, trailer=bytes(16))  # enum
    b.raw(13, vlen=1, trailer=bytes(8))  # func_proto
    b.raw(14, trailer=bytes(4))  # var
    b.raw(15, vlen=1, trailer=bytes(12))  # datasec
    b.raw(17, trailer=bytes(4))  # decl_tag
    b.raw(19, vlen=1, trailer=bytes(12))  # enum64
    b.struct("after", 4, [("m", i32, 0)])
    assert b.parse().member("after", "m") == Member(offset=0, size=4)


def test_big_endian_blob():
    little = cred_like().bytes()
    big = struct.pack(">HBBIIIII", *struct.unpack_from("<HBBIIIII", little))
    types = little[24:24 + struct.unpack_from("<I", little, 12)[0]]
    big += b"".join(struct.pack(">I", w) for (w,) in struct.iter_unpack("<I", types))
    big += little[24 + len(types):]
    assert Btf.parse(big).member("cred", "uid.val") == Member(offset=4, size=4)


def test_load_missing_file_is_a_btf_error(tmp_path):
    with pytest.raises(BtfError, match="^cannot read BTF from .*/absent: No such file or directory$"):
        Btf.load(str(tmp_path / "absent"))


def test_load_names_the_file_when_malformed(tmp_path):
    path = tmp_path / "garbage"
    path.write_bytes(b"garbage")
    with pytest.raises(BtfError, match=rf"^{re.escape(str(path))}: not BTF"):
        Btf.load(str(path))


def test_offsets_from_a_file(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(cred_like().bytes())
    found = offsets({"CRED_UID": ("cred", "uid.val"), "CRED_CAP_EFFECTIVE": ("cred", "cap_effective")}, str(path))
    assert found == {"CRED_UID": Member(4, 4), "CRED_CAP_EFFECTIVE": Member(24, 8)}


def test_offsets_names_every_missing_one(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(cred_like().bytes())
    with pytest.raises(BtfError) as raised:
        offsets({"OK": ("cred", "uid"), "A": ("task_struct", "cred"), "B": ("cred", "cap_bset")}, str(path))
    message = str(raised.value)
    assert "\n" not in message
    assert "A: BTF has no struct task_struct" in message
    assert "B: struct cred has no member cap_bset" in message
    assert "OK" not in message


# The running kernel's BTF.


@pytest.fixture(scope="module")
def vmlinux():
    if not os.path.exists(VMLINUX):
        pytest.fail(f"{VMLINUX} does not exist: this kernel was built without CONFIG_DEBUG_INFO_BTF")
    return Btf.load()


def test_real_task_struct_cred_is_a_pointer(vmlinux):
    assert vmlinux.member("task_struct", "cred").size == 8


def test_real_cap_effective(vmlinux):
    assert vmlinux.member("cred", "cap_effective").size == 8
    assert vmlinux.member("cred", "cap_effective.val") == vmlinux.member("cred", "cap_effective")


def test_real_capability_sets_in_struct_cred_order(vmlinux):
    sets = ["cap_inheritable", "cap_permitted", "cap_effective", "cap_bset", "cap_ambient"]
    found = [vmlinux.member("cred", name).offset for name in sets]
    assert found == sorted(found) and len(set(found)) == len(found), dict(zip(sets, found))


def test_real_uid_and_securebits(vmlinux):
    assert vmlinux.member("cred", "uid.val").size == 4
    assert vmlinux.member("cred", "securebits").size == 4


def test_real_load_is_fast():
    start = time.perf_counter()
    Btf.load()
    assert time.perf_counter() - start < 1.0


def test_real_offsets_helper():
    found = offsets({"TASK_CRED": ("task_struct", "cred"), "CRED_CAP_EFFECTIVE": ("cred", "cap_effective")})
    assert found["TASK_CRED"].size == 8 and found["CRED_CAP_EFFECTIVE"].size == 8


def bpftool_structs():
    """bpftool's raw dump as {struct: (size, {member: bits_offset, or None for a bitfield})}.

    The first struct with members wins a shared name, as in Btf.
    """
    if not os.access(BPFTOOL, os.X_OK):
        pytest.fail(f"{BPFTOOL} is not installed; it is needed to cross-check the BTF parser")
    run = subprocess.run([BPFTOOL, "btf", "dump", "file", VMLINUX, "format", "raw"],
                         capture_output=True, text=True, timeout=60)
    if run.returncode:
        pytest.fail(f"bpftool btf dump failed ({run.returncode}): {run.stderr.strip()}")
    dump = run.stdout
    structs, current = {}, None
    for line in dump.splitlines():
        if line.startswith("["):
            current = None
            header = re.match(r"\[\d+\] STRUCT '([^']+)' size=(\d+) vlen=([1-9]\d*)$", line)
            if header and header[1] != "(anon)" and header[1] not in structs:
                current = structs[header[1]] = (int(header[2]), {})
        elif current is not None:
            member = re.match(r"\t'([^']+)' type_id=\d+ bits_offset=(\d+)( bitfield_size=(\d+))?$", line)
            if member and member[1] != "(anon)":
                bitfield = member[4] and member[4] != "0"
                current[1][member[1]] = None if bitfield else int(member[2])
    return structs


@pytest.fixture(scope="module")
def bpftool():
    return bpftool_structs()


def test_real_cred_matches_bpftool(vmlinux, bpftool):
    size, members = bpftool["cred"]
    assert vmlinux.size("cred") == size
    assert vmlinux.member("cred", "cap_effective").offset == members["cap_effective"] // 8
    for name, bits in members.items():
        assert vmlinux.member("cred", name).offset == bits // 8, name


def test_real_every_struct_matches_bpftool(vmlinux, bpftool):
    """Every named, non-bitfield, direct member of every struct agrees with bpftool."""
    wrong = []
    for struct_name, (size, members) in bpftool.items():
        if vmlinux.size(struct_name) != size:
            wrong.append(f"sizeof({struct_name})")
        for name, bits in members.items():
            if bits is not None and vmlinux.member(struct_name, name).offset != bits // 8:
                wrong.append(f"{struct_name}.{name}")
    assert not wrong, wrong[:20]
    assert len(bpftool) > 1000, "bpftool's dump parsed to too few structs to be a cross-check"
