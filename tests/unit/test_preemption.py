"""The kernel's preemption model, from debugfs, uname -v, preempt= and the build config, and the
attach order auto takes from it (fexit loses checks where tracing programs are preemptible)."""

import logging

import pytest

from exporter.ebpf import kernel, probes

DYNAMIC = "#1 SMP PREEMPT_DYNAMIC Debian 7.2.13-1 (2026-10-28)"


def test_debugfs_names_the_current_model_in_parentheses():
    assert kernel.model_from_debugfs("none voluntary full (lazy) \n") == "lazy"
    assert kernel.model_from_debugfs("none (voluntary) full\n") == "voluntary"
    with pytest.raises(ValueError):
        kernel.model_from_debugfs("")


@pytest.mark.parametrize("uts, model", [
    ("#1 SMP PREEMPT_RT Debian 6.1.0-57-rt", "rt"),
    ("#1 SMP PREEMPT Tue Jan 1", "full"),
    ("#1 SMP PREEMPT_LAZY Tue Jan 1", "lazy"),
    ("#1 SMP Debian 5.10.0-46", "voluntary"),
])
def test_kernels_built_with_one_model_say_it_in_uname(uts, model):
    assert kernel.model_from_build(uts, "", None)[0] == model


def test_a_dynamic_kernel_boots_what_preempt_says_else_what_its_config_chose():
    lazy = {"CONFIG_PREEMPT_DYNAMIC=y", "CONFIG_PREEMPT_LAZY=y"}
    voluntary = {"CONFIG_PREEMPT_DYNAMIC=y", "CONFIG_PREEMPT_VOLUNTARY=y", "CONFIG_PREEMPTION=y"}
    assert kernel.model_from_build(DYNAMIC, "root=/dev/vda preempt=full quiet", voluntary) == (
        "full", "preempt= on the kernel command line")
    assert kernel.model_from_build(DYNAMIC, "root=/dev/vda", lazy) == ("lazy", "the kernel config")
    assert kernel.model_from_build(DYNAMIC, "root=/dev/vda", voluntary) == ("voluntary", "the kernel config")
    model, why = kernel.model_from_build(DYNAMIC, "nopreempt=full", None)
    assert model == "" and "debugfs" in why


def test_this_machine_has_a_model():
    """The dev machines' kernel is PREEMPT_DYNAMIC with /proc/config.gz (PREEMPT_NONE)."""
    model, source = kernel.preemption()
    assert model in ("none", "voluntary", "full", "lazy", "rt"), source


def test_auto_tries_kprobe_first_where_fexit_runs_can_be_preempted():
    assert probes.candidates("auto", ("lazy", "debugfs")) == ("kprobe", "fexit", "tracepoint")
    assert probes.candidates("auto", ("rt", "uname -v")) == ("kprobe", "fexit", "tracepoint")
    assert probes.candidates("auto", ("voluntary", "the kernel config")) == ("fexit", "kprobe", "tracepoint")
    assert probes.candidates("auto", ("", "unknown")) == ("fexit", "kprobe", "tracepoint")
    assert probes.candidates("fexit", ("lazy", "debugfs")) == ("fexit",)


def test_the_caveat_names_the_model_and_the_metric_that_shows_the_loss():
    caveat = probes.fexit_caveat(("lazy", "/sys/kernel/debug/sched/preempt"))
    assert "lazy" in caveat and "recursion_misses_total" in caveat and "kprobe" in caveat
    assert probes.fexit_caveat(("voluntary", "the kernel config")) is None


def test_auto_says_why_it_passed_over_fexit():
    reasons = {}
    assert probes._note_preemption("auto", "kprobe", reasons, ("lazy", "debugfs")) == []
    assert reasons["fexit"].startswith("tried after kprobe: the kernel preempts tracing programs")
    failed = {"fexit": "the kernel refused to load the program (EPERM)"}
    probes._note_preemption("auto", "tracepoint", failed, ("lazy", "debugfs"))
    assert failed == {"fexit": "the kernel refused to load the program (EPERM)"}


def test_a_configured_fexit_is_kept_with_a_warning_for_whoever_loaded_it():
    reasons = {}
    notes = probes._note_preemption("fexit", "fexit", reasons, ("full", "preempt= on the kernel command line"))
    assert reasons == {}
    (level, message), = notes
    assert level == logging.WARNING
    assert message.startswith("fexit mode: the kernel preempts tracing programs (preemption model full")
    loaded = probes.Loaded("fexit", [], reasons, notes)
    assert loaded.warnings() == [message]


def test_an_unknown_preemption_model_is_a_note_not_a_warning():
    notes = probes._note_preemption("auto", "fexit", {}, ("", "no debugfs, no kernel config"))
    assert [level for level, _ in notes] == [logging.INFO]
    assert probes.Loaded("fexit", [], {}, notes).warnings() == []
    assert probes._note_preemption("auto", "fexit", {}, ("voluntary", "the kernel config")) == []


def test_change_tracking_follows_autos_order_unless_a_mode_is_named():
    assert probes.change_hooks("auto") == probes.candidates("auto")
    assert probes.change_hooks("tracepoint") == probes.candidates("auto")
    assert probes.change_hooks("kprobe") == ("kprobe", "tracepoint")
