"""trace's decoding and formatting: syscall arguments, check lines, change blocks."""

import pytest

from exporter.ebpf.layouts import ChangeEvent, CheckEvent
from exporter.trace import change_record, check_record, format_change, format_check, syscall_args


@pytest.mark.parametrize(
    "syscall, args, path, shown",
    [
        ("prctl", [24, 16, 0], "", {"option": "PR_CAPBSET_DROP", "capability": "CAP_SYS_MODULE"}),
        ("prctl", [47, 2, 13], "", {"option": "PR_CAP_AMBIENT", "op": "PR_CAP_AMBIENT_RAISE", "capability": "CAP_NET_RAW"}),
        ("prctl", [47, 4, 0], "", {"option": "PR_CAP_AMBIENT", "op": "PR_CAP_AMBIENT_CLEAR_ALL"}),
        ("prctl", [8, 1, 0], "", {"option": "PR_SET_KEEPCAPS", "arg2": 1}),
        ("setuid", [65534, 0, 0], "", {"uid": 65534}),
        ("setresuid", [0xFFFFFFFF, 1000, 0xFFFFFFFF], "", {"ruid": -1, "euid": 1000, "suid": -1}),
        ("execve", [0, 0, 0], "/usr/bin/ping", {"filename": "/usr/bin/ping"}),
        ("capset", [0x7F00, 0x7F10, 0], "", {"header": "0x7f00", "data": "0x7f10"}),
    ],
)
def test_syscall_args(syscall, args, path, shown):
    assert syscall_args(syscall, args, path) == shown


def check_event(cap=0, ret=-1, opts=0):
    return CheckEvent(ts=0, pid=11, tgid=10, uid=1000, cap=cap, ret=ret, opts=opts, user_stack=-1, kernel_stack=-1,
                      syscall=260, comm=b"tcpdump")


def test_check_line_has_capable_columns_and_dash_for_unknown_audit():
    record = check_record(check_event(), "tcpdump", "tracepoint", 0.0, None, None)
    fields = format_check(record).split()
    assert fields[1:] == ["1000", "10", "tcpdump", "0", "CAP_CHOWN", "-", "deny", "fchownat"]
    assert record["audit"] is None and record["verdict"] == "deny"


def test_check_audit_column_where_opts_are_seen():
    assert check_record(check_event(opts=2), "x", "fexit", 0, None, None)["audit"] is False
    assert format_check(check_record(check_event(ret=0), "x", "kprobe", 0, ["main"], None)).splitlines()[1].strip() == "main"


def test_change_block_marks_what_changed():
    event = ChangeEvent(pid=7, tgid=7, ppid=1, syscall=1, ret=0, comm=b"sshd")
    event.args[0], event.args[1] = 24, 12  # PR_CAPBSET_DROP CAP_NET_ADMIN
    event.before.sets[3] = (1 << 13) - 1
    event.after.sets[3] = (1 << 13) - 1 - (1 << 12)
    event.after.securebits = 1 << 4
    record = change_record(event, "sshd", 0.0, None)
    assert record["lost"] == {"bounding": ["CAP_NET_ADMIN"]}
    assert record["gained"] == {"securebits": ["SECBIT_KEEP_CAPS"]}
    text = format_change(record)
    assert "syscall: prctl\noption: PR_CAPBSET_DROP\ncapability: CAP_NET_ADMIN\nretval: 0" in text
    assert "cap_bset:        0x0000000000001fff -> 0x0000000000000fff  * -CAP_NET_ADMIN" in text
    assert "securebits:      0x00000000 -> 0x00000010  * +SECBIT_KEEP_CAPS" in text
    assert "cap_effective:   0x0000000000000000\n" in text


def test_tracepoint_mode_shows_the_audit_it_infers_from_the_kernel_caller():
    record = check_record(check_event(opts=2), "x", "tracepoint", 0, None, None, audit_inferred=True)
    assert record["audit"] is False and record["insetid"] is None
