"""Capability names, numbers and masks."""

import pytest

from exporter.core import capabilities


@pytest.mark.parametrize(
    "number, name",
    [(0, "CAP_CHOWN"), (7, "CAP_SETUID"), (21, "CAP_SYS_ADMIN"), (39, "CAP_BPF"), (40, "CAP_CHECKPOINT_RESTORE"),
     (41, "CAP_UNKNOWN_41"), (63, "CAP_UNKNOWN_63")],
)
def test_name(number, name):
    assert capabilities.name(number) == name


@pytest.mark.parametrize("text, number", [("CAP_NET_RAW", 13), ("cap_net_raw", 13), ("net_raw", 13)])
def test_number_accepts_kernel_capsh_and_short_names(text, number):
    assert capabilities.number(text) == number


def test_decode_mask_as_capsh_does():
    # capsh --decode=000000c001201106 (seed 001)
    assert capabilities.decode(0x000000C001201106) == [
        "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_SETPCAP", "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_PERFMON", "CAP_BPF",
    ]
