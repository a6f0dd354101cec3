"""Profiles: what enters the recommendation, and each output format, from plain data."""

import json

import pytest
import yaml

from exporter import profile
from exporter.profile import ChangeCount, CheckCount, Profile


def a_profile(noaudit="included", held=("CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_ADMIN")):
    return Profile(
        mode="fexit", noaudit=noaudit,
        checks=[
            CheckCount("chown", "CAP_CHOWN", True, granted=2, denied=0),
            CheckCount("chown", "CAP_SYS_ADMIN", False, granted=9, denied=0),  # exec's memory accounting
            CheckCount("ping", "CAP_NET_RAW", True, granted=0, denied=1),
            CheckCount("ping", "CAP_CHOWN", True, granted=0, denied=3),  # granted to chown: not "denied"
        ],
        changes=[ChangeCount("chown", "execve", "permitted", "CAP_KILL", "lost", 1)],
        held=None if held is None else list(held),
    )


def test_non_audited_grants_never_enter_the_recommendation():
    rec = a_profile().recommend()
    assert rec.needed == ["CAP_CHOWN"]
    assert rec.denied == ["CAP_NET_RAW"]
    assert rec.unused == ["CAP_NET_RAW", "CAP_SYS_ADMIN"]
    assert "never enter" in rec.note


def test_where_the_mode_cannot_tell_every_check_counts_and_the_note_says_so():
    p = a_profile(noaudit="indistinguishable")
    p.checks = [CheckCount(c.comm, c.capability, None, c.granted, c.denied) for c in p.checks]
    rec = p.recommend()
    assert rec.needed == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert "cannot tell audited from non-audited" in rec.note


def test_unknown_held_gives_no_unused():
    assert a_profile(held=None).recommend().unused == []
    assert profile.document(a_profile(held=None))["held"] is None


def test_capabilities_are_in_kernel_order():
    assert profile.by_number(["CAP_BPF", "CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_UNKNOWN_63"]) == [
        "CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_BPF", "CAP_UNKNOWN_63"]


@pytest.mark.parametrize("held_known", [True, False])
def test_json_document_round_trips(held_known):
    p = a_profile(held=("CAP_CHOWN",) if held_known else None)
    doc = json.loads(profile.render("json", p, command=["chown", "x"], exit_code=1))
    assert profile.document(profile.from_document(doc), command=["chown", "x"], exit_code=1) == doc
    assert doc["command"] == ["chown", "x"] and doc["exit_code"] == 1 and doc["version"] == 1


def test_systemd_lines():
    lines = profile.render("systemd", a_profile(), command=["chown", "x"]).splitlines()
    assert [ln for ln in lines if not ln.startswith("#")] == [
        "CapabilityBoundingSet=CAP_CHOWN", "AmbientCapabilities=CAP_CHOWN"]
    assert "# denied: the program may need this: CAP_NET_RAW" in lines


def test_systemd_with_nothing_needed_grants_nothing():
    empty = Profile(mode="fexit", noaudit="included")
    settings = [ln for ln in profile.render("systemd", empty).splitlines() if not ln.startswith("#")]
    assert settings == ["CapabilityBoundingSet=", "AmbientCapabilities="]


def test_kubernetes_and_docker_drop_the_prefix():
    block = yaml.safe_load(profile.render("kubernetes", a_profile()))
    assert block == {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}}
    assert profile.render("docker", a_profile()) == "--cap-drop=ALL --cap-add=CHOWN\n"


def test_text_table_and_recommendation():
    text = profile.render("text", a_profile(), command=["chown", "x"], exit_code=0)
    assert "Command: chown x (exit code 0)" in text
    assert "  CAP_SYS_ADMIN  chown  no       9        0" in text
    assert "  needed (granted on audited checks):  CAP_CHOWN" in text
    assert "  chown  execve   permitted  CAP_KILL    lost       1" in text
