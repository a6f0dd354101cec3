"""Why a capability was asked for: the caller above the capability helpers, syscall names, file capabilities."""

import pytest

from exporter.core import reasons, syscalls
from exporter.ebpf.layouts import NO_SYSCALL
from exporter.recommend import run


@pytest.mark.parametrize("frames, asked_by", [
    (["cap_capable+0x0", "security_capable+0x3c", "capable_wrt_inode_uidgid+0x2c", "chown_ok+0x48",
      "setattr_prepare+0x1a0", "notify_change+0x1d4"], "chown_ok"),
    # fexit runs from a trampoline, which stands where cap_capable's frame was.
    (["bpf_prog_6deef7357e7b4530_kretfunc__cap_capable", "bpf_trampoline_6442509001", "ns_capable+0x2d",
      "__sys_setuid+0xd6"], "__sys_setuid"),
    (["cap_capable", "cap_inh_is_capped", "cap_capset", "security_capset"], "cap_capset"),
    (["[unknown]", "cap_capable"], "-"),
    ([], "-"),
])
def test_the_caller_is_the_first_frame_above_the_capability_helpers(frames, asked_by):
    assert reasons.caller(frames) == asked_by


def test_only_the_tabled_probe_sites_are_probes():
    assert reasons.probe_site("CAP_SETPCAP", "cap_capset") is not None
    assert reasons.probe_site("CAP_SETPCAP", "cap_prctl_drop") is None
    assert reasons.probe_site("CAP_CHOWN", "cap_capset") is None
    assert reasons.probe_site("CAP_SETPCAP", None) is None


@pytest.mark.parametrize("number, name", [(105, "setuid"), (260, "fchownat"), (126, "capset"), (59, "execve"),
                                          (NO_SYSCALL, "-"), (4000, "syscall_4000")])
def test_syscall_names(number, name):
    assert syscalls.name(number, machine="x86_64") == name


def test_other_machines_show_the_number():
    assert syscalls.name(105, machine="aarch64") == "syscall_105"


def test_file_capabilities_decode_revision_2_and_3():
    # magic_etc (revision 2, effective), then {permitted, inheritable} x 2: cap_net_raw=ep.
    v2 = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
    assert run.file_capabilities(v2) == ["CAP_NET_RAW"]
    v3 = (0x03000001).to_bytes(4, "little") + bytes(4) + bytes(4) + (1 << 7).to_bytes(4, "little") + bytes(8)
    assert run.file_capabilities(v3) == ["CAP_BPF"]  # bit 39: the high word
    assert run.file_capabilities(b"") == []
