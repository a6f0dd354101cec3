"""Config parsing and validation: defaults, every problem at once, anchored comm regexes."""

import pytest

from exporter import config


def test_empty_file_means_all_defaults():
    assert config.parse("") == config.Config()


def test_default_yaml_is_the_defaults():
    assert config.load("config/default.yaml") == config.Config()


def test_values_are_typed():
    cfg = config.parse(
        "probe: {mode: tracepoint, count_noaudit: true}\n"
        "maps: {checks_max_entries: 5}\n"
        "filters: {comm_exclude: ['sshd'], uids: [0, 1000], pids: [1], cgroup_prefix: /system.slice}\n"
        "labels: {uid: true}\n"
    )
    assert cfg.probe.mode == "tracepoint" and cfg.probe.count_noaudit is True
    assert cfg.maps.checks_max_entries == 5
    assert cfg.filters.uids == (0, 1000) and cfg.filters.comm_exclude == ("sshd",)
    assert cfg.filters.cgroup_prefix == "/system.slice"
    assert cfg.labels.uid is True and cfg.labels.cgroup is False


def test_every_problem_is_reported_at_once():
    with pytest.raises(config.ConfigError) as err:
        config.parse("probe: {mode: magic}\nmaps: {checks_max_entries: 0}\nbogus: 1\n", "x.yaml")
    problems = err.value.problems
    assert len(problems) == 3
    assert any(p.startswith("probe.mode: must be one of") for p in problems)
    assert any(p.startswith("maps.checks_max_entries: must be at least 1") for p in problems)
    assert any(p.startswith("bogus: unknown key") for p in problems)
    assert str(err.value).startswith("x.yaml: ")


@pytest.mark.parametrize(
    "include, exclude, comm, kept",
    [
        ([], [], "sshd", True),
        ([], ["sshd"], "sshd", False),
        ([], ["sshd"], "sshd-session", True),  # anchored: sshd does not match sshd-session
        ([], ["ssh.*"], "sshd-session", False),
        (["kube.*"], [], "kubelet", True),
        (["kube.*"], [], "containerd", False),
        (["kube.*"], ["kube-proxy"], "kube-proxy", False),
    ],
)
def test_comm_filter(include, exclude, comm, kept):
    filters = config.FiltersConfig(comm_include=tuple(include), comm_exclude=tuple(exclude))
    assert config.comm_filter(filters)(comm) is kept


def test_flag_overrides_probe_settings():
    cfg = config.with_probe(config.Config(), mode="kprobe", bpf_stats=True)
    assert cfg.probe.mode == "kprobe" and cfg.probe.bpf_stats is True
