"""Expanding kernel-side (before, after) transitions into per-capability changes."""

import pytest

from exporter.core import changes
from exporter.core.changes import Change, expand


@pytest.mark.parametrize(
    "syscall, set_index, before, after, expected",
    [
        (0, 0, 0b10000000000001, 0, [Change("capset", "effective", "CAP_CHOWN", "lost"),
                                      Change("capset", "effective", "CAP_NET_RAW", "lost")]),
        (1, 3, 1 << 16, 0, [Change("prctl", "bounding", "CAP_SYS_MODULE", "lost")]),
        (10, 1, 0, 1 << 13, [Change("execve", "permitted", "CAP_NET_RAW", "gained")]),
        (1, 4, 1 << 12, 1 << 10, [Change("prctl", "ambient", "CAP_NET_BIND_SERVICE", "gained"),
                                  Change("prctl", "ambient", "CAP_NET_ADMIN", "lost")]),
        (1, 5, 0, 1 << 4, [Change("prctl", "securebits", "SECBIT_KEEP_CAPS", "gained")]),
        (2, 2, 1 << 45, 0, [Change("setuid", "inheritable", "CAP_UNKNOWN_45", "lost")]),
        (99, 0, 0, 1, [Change("syscall_99", "effective", "CAP_CHOWN", "gained")]),
        (0, 0, 5, 5, []),
    ],
)
def test_expand(syscall, set_index, before, after, expected):
    assert list(expand(syscall, set_index, before, after)) == expected


def test_commit_creds_hook_numbers_are_the_tracked_syscalls_in_label_order():
    from exporter.ebpf import probes
    from exporter.core import syscalls

    for machine, numbers in probes.CHANGE_SYSCALL_NUMBERS.items():
        assert [name.lower() for name in numbers] == list(changes.SYSCALLS), machine
    for name, number in probes.CHANGE_SYSCALL_NUMBERS["x86_64"].items():
        assert syscalls.name(number, "x86_64") == name.lower()


def test_a_configured_mode_is_the_commit_creds_hook_tried_before_the_tracepoints():
    from exporter.ebpf import probes

    assert probes.change_hooks("fexit") == ("fexit", "tracepoint")
    assert probes.change_hooks("kprobe") == ("kprobe", "tracepoint")
    assert probes.change_hooks("auto") == probes.change_hooks("tracepoint") == ("fexit", "kprobe", "tracepoint")
