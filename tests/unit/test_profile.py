"""Profiles: what enters the recommendation, and each output format, from plain data."""

import json

import pytest
import yaml

from exporter.core import capabilities, profile
from exporter.core.profile import ChangeCount, CheckCount, Profile
from exporter.core.verification import Trial, Verification


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
    assert len(rec.note) < 120, "the note is said once, briefly"


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
    assert doc["command"] == ["chown", "x"] and doc["exit_code"] == 1 and doc["version"] == 2


def test_systemd_lines():
    lines = profile.render("systemd", a_profile(), command=["chown", "x"]).splitlines()
    assert [ln for ln in lines if not ln.startswith("#")] == [
        "CapabilityBoundingSet=CAP_CHOWN", "AmbientCapabilities=CAP_CHOWN"]
    assert "# denied (may be needed): CAP_NET_RAW" in lines
    assert "# not verified: --verify re-runs the command to prove it" in lines


def test_systemd_with_nothing_needed_grants_nothing():
    empty = Profile(mode="fexit", noaudit="included")
    settings = [ln for ln in profile.render("systemd", empty).splitlines() if not ln.startswith("#")]
    assert settings == ["CapabilityBoundingSet=", "AmbientCapabilities="]


def test_kubernetes_and_docker_drop_the_prefix():
    block = yaml.safe_load(profile.render("kubernetes", a_profile()))
    assert block == {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}}
    assert profile.render("docker", a_profile()).splitlines() == [
        "# not verified: --verify re-runs the command to prove it", "--cap-drop=ALL --cap-add=CHOWN"]


def test_text_table_and_recommendation():
    text = profile.render("text", a_profile(), command=["chown", "x"], exit_code=0)
    assert "Command: chown x (exit code 0)" in text
    assert "  CAP_SYS_ADMIN  chown  no       9        0" in text
    assert "  needed:                  CAP_CHOWN" in text
    assert "  chown  execve   permitted  lost CAP_KILL  1" in text


def with_reasons(*checks, changes=()):
    return Profile(mode="tracepoint", noaudit="inferred", checks=list(checks), changes=list(changes), held=None)


def test_a_capability_granted_only_at_a_probe_site_is_not_needed():
    p = with_reasons(
        CheckCount("ping", "CAP_SETPCAP", True, 1, 0, caller="cap_capset", syscall="capset"),
        CheckCount("ping", "CAP_NET_RAW", True, 2, 0, caller="inet_create", syscall="socket"),
    )
    rec = p.recommend()
    assert rec.needed == ["CAP_NET_RAW"] and rec.reasons == {"CAP_NET_RAW": ["socket: inet_create"]}
    (probe,) = rec.not_needed
    assert probe.capability == "CAP_SETPCAP" and "every capset()" in probe.why
    assert probe.reasons == ["capset: cap_capset"]
    assert rec.denied == [], "granted but not needed is not 'denied'"


def test_the_probe_site_is_needed_where_it_is_needed_elsewhere_or_the_inheritable_set_was_raised():
    setpcap = CheckCount("capsh", "CAP_SETPCAP", True, 1, 0, caller="cap_capset", syscall="capset")
    bounding = CheckCount("capsh", "CAP_SETPCAP", True, 1, 0, caller="cap_prctl_drop", syscall="prctl")
    assert with_reasons(setpcap, bounding).recommend().needed == ["CAP_SETPCAP"]
    raised = ChangeCount("capsh", "capset", "inheritable", "CAP_NET_RAW", "gained", 1)
    assert with_reasons(setpcap, changes=[raised]).recommend().needed == ["CAP_SETPCAP"]
    assert with_reasons(setpcap).recommend().needed == []


def test_change_rows_name_each_set_once():
    lost = [ChangeCount("ping", "setuid", "effective", name, "lost", 1)
            for name in capabilities.NAMES if name != "CAP_NET_RAW"]
    gained = [ChangeCount("ping", "capset", "effective", "CAP_NET_RAW", "gained", 1)]
    rows = profile.change_rows(lost + gained)
    assert rows == [("ping", "setuid", "effective", f"lost {len(lost)}: all but CAP_NET_RAW", "1"),
                    ("ping", "capset", "effective", "gained CAP_NET_RAW", "1")]


def test_a_verified_recommendation_keeps_only_what_failing_runs_proved():
    p = with_reasons(
        CheckCount("notify", "CAP_NET_ADMIN", True, 2, 0, caller="sk_setsockopt", syscall="setsockopt"),
        CheckCount("notify", "CAP_KILL", True, 1, 0, caller="kill_ok", syscall="kill"),
    )
    p.verification = Verification("root", "as root", "exit code 0", [
        Trial(["CAP_KILL", "CAP_NET_ADMIN"], None, 0, True, "sufficient"),
        Trial(["CAP_KILL"], "CAP_NET_ADMIN", 0, True, "not needed"),
        Trial([], "CAP_KILL", 1, False, "needed"),
    ], needed=["CAP_KILL"], verified=True, summary="")
    rec = p.recommend()
    assert rec.needed == ["CAP_KILL"] and rec.verified is True
    assert [(n.capability, n.why) for n in rec.not_needed] == [
        ("CAP_NET_ADMIN", "the command succeeded without it (run 2)")]
    doc = json.loads(profile.render("json", p))
    assert doc["recommendation"]["verified"] is True and len(doc["verification"]["trials"]) == 3
    assert profile.document(profile.from_document(doc)) == doc
    systemd = profile.render("systemd", p).splitlines()
    assert "# verified by re-running" in systemd and "# CAP_KILL: kill: kill_ok" in systemd
    assert "CapabilityBoundingSet=CAP_KILL" in systemd


def test_an_unverifiable_recommendation_says_so_and_stays_as_traced():
    p = with_reasons(CheckCount("x", "CAP_CHOWN", True, 1, 0, caller="chown_ok", syscall="fchownat"))
    p.verification = Verification("root", "as root", "exit code 0", [
        Trial(["CAP_CHOWN"], None, 1, False, "insufficient")], summary="nothing is proven")
    rec = p.recommend()
    assert rec.needed == ["CAP_CHOWN"] and rec.verified is False
    assert "NOT verified" in profile.render("text", p)
