"""Real Prometheus scrapes the real exporter and runs deploy/'s alert rules and dashboard queries."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import pytest

from prometheus_server import JOB, Prometheus
from support import NOBODY, ROOT, Exporter, run_workload, unique_comm, wait_for, write_config

pytestmark = pytest.mark.kernel

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "capability-exporter.json"
# Grafana's variables, as "All" would set them, and its interval macros, for plain PromQL.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "5s",
    "$__range": "5m",
    "$instance": ".*",
    "$comm": ".*",
    "$workload_label": "comm",
    "$workload": ".*",
    "$capability": ".*",
}


def dashboard_targets(row: Optional[str] = None) -> list[tuple[str, str]]:
    """(panel title, expr) of every target, rows' nested panels included; or of one row's panels."""
    def walk(panels, within):
        for panel in panels:
            if panel["type"] == "row":
                within = panel["title"]
            if row is None or within == row:
                yield from ((panel["title"], target["expr"]) for target in panel.get("targets", []))
            yield from walk(panel.get("panels", []), within)
    return list(walk(json.loads(DASHBOARD.read_text())["panels"], None))


def as_promql(expr: str, **values: str) -> str:
    # Longest names first, so that $__range is not cut short by a shorter name.
    for name, value in sorted({**SUBSTITUTIONS, **{f"${k}": v for k, v in values.items()}}.items(),
                              key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


@pytest.fixture(scope="module")
def stack():
    """The exporter (default config) and Prometheus scraping it, with a file only root may chown."""
    directory = Path(tempfile.mkdtemp(prefix="capexp-e2e-"))
    directory.chmod(0o755)  # uid 65534 must reach the file to be denied CAP_CHOWN on it
    owned = directory / "owned-by-root"
    owned.write_text("")
    exporter = Exporter(write_config(directory, {}, name="exporter.yaml"))
    prometheus = None
    try:
        exporter.wait_ready()
        # deploy/'s rule file as shipped: an alert is pending as soon as its expression holds,
        # long before its for: duration is over.
        prometheus = Prometheus(directory, {f"127.0.0.1:{exporter.port}": {}}, ALERTS).wait_ready()
        yield exporter, prometheus, owned
    finally:
        if prometheus:
            prometheus.stop()
        status = exporter.stop()
        shutil.rmtree(directory)
    assert status == 0, exporter.stderr


@pytest.fixture(scope="module")
def denied(stack):
    """A unique comm denied CAP_CHOWN in two bursts: rate() needs the counter to grow while scraped."""
    exporter, prometheus, owned = stack
    comm = unique_comm("cxprom")
    run_workload(f"{comm}=chown:20:{owned}", user=NOBODY)
    wait_for(lambda: prometheus.query(f'capability_denials_total{{comm="{comm}"}}'),
               f"Prometheus to scrape denials of {comm}")
    run_workload(f"{comm}=chown:20:{owned}", user=NOBODY)
    return comm


def test_capability_denied_alert_fires_for_the_denied_comm(stack, denied):
    _, prometheus, _ = stack
    alert = wait_for(lambda: [a for a in prometheus.alerts("CapabilityDenied") if a["labels"]["comm"] == denied],
                       f"CapabilityDenied for {denied}")[0]
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"]["capability"] == "CAP_CHOWN"
    assert alert["labels"]["severity"] == "warning"
    assert denied in alert["annotations"]["summary"]


def test_exporter_alerts_match_what_the_exporter_reports(stack, denied):
    _, prometheus, _ = stack
    up = prometheus.query(f'up{{job="{JOB}"}}')
    assert [s["value"][1] for s in up] == ["1"]
    assert not prometheus.alerts("CapabilityExporterDown")
    assert not prometheus.alerts("CapabilityExporterMapReadFailing")
    # The noaudit alert fires exactly when the attach mode cannot see opts (tracepoint).
    (info,) = prometheus.query("capability_exporter_probe_info")
    if info["metric"]["noaudit"] == "indistinguishable":
        wait_for(lambda: prometheus.alerts("CapabilityExporterNoauditIndistinguishable"), "the noaudit alert")
    else:
        assert not prometheus.alerts("CapabilityExporterNoauditIndistinguishable")


def test_every_dashboard_query_runs(stack, denied):
    _, prometheus, _ = stack
    targets = dashboard_targets()
    assert targets
    for title, expr in targets:
        prometheus.query(as_promql(expr))  # asserts status success


def test_checks_and_denials_panels_show_the_denied_comm(stack, denied):
    _, prometheus, _ = stack
    # Per workload panels (held against used) count capabilities, not checks: the next test.
    shown = [(title, expr) for title, expr in dashboard_targets()
             if re.search(r"\bcapability_(checks|denials)_total\b", expr) and "$workload" not in expr]
    assert len(shown) >= 2

    def positive(expr: str) -> bool:
        result = prometheus.query(as_promql(expr, comm=denied, capability="CAP_CHOWN"))
        return any(float(sample["value"][1]) > 0 for sample in result
                   if sample["metric"].get("comm", denied) == denied)

    # A rate needs two scrapes after the denials: on a loaded machine the second may be late.
    for title, expr in shown:
        wait_for(lambda: positive(expr), f"{title}: {expr} above 0 for {denied}")


def test_held_against_used_counts_the_unused_capabilities_of_running_programs(stack, denied):
    """With the default unused.by (comm), root's programs hold capabilities they never used."""
    _, prometheus, _ = stack
    (unused,) = [expr for title, expr in dashboard_targets()
                 if title == "Held against used per workload" and "capability_unused" in expr]
    result = prometheus.query(as_promql(unused))
    assert result and all(float(sample["value"][1]) >= 1 and "comm" in sample["metric"] for sample in result)


def test_dashboard_variables_list_the_denied_comm(stack, denied):
    """Each label_values(selector, label) variable, as Grafana asks Prometheus for it."""
    _, prometheus, _ = stack
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    listed = {}
    for var in variables:
        if var["type"] != "query":
            continue
        selector, label = re.fullmatch(r"label_values\((.+), (\$?\w+)\)", var["query"]["query"]).groups()
        reply = prometheus.get(f"/api/v1/label/{as_promql(label)}/values", **{"match[]": as_promql(selector)})
        assert reply["status"] == "success", f"{var['name']}: {reply}"
        listed[var["name"]] = reply["data"]
    assert denied in listed["comm"]
    assert "CAP_CHOWN" in listed["capability"]
