"""Real Prometheus scrapes the real exporter and runs deploy/'s alert rules and dashboard queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from support import NOBODY, ROOT, Exporter, free_port, run_workload, unique_comm, write_config

pytestmark = pytest.mark.kernel

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "capability-exporter.json"
PROMETHEUS = "/usr/bin/prometheus"  # Debian's prometheus package
JOB = "capability-exporter"
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


class Prometheus:
    """Debian's real prometheus binary on a free loopback port, scraping one target every second."""

    def __init__(self, directory: Path, target: str, rule_file: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        config_path = write_config(directory, config, name="prometheus.yml")
        self.log_path = directory / "prometheus.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            cwd=directory, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:  # a bad query is a 400 whose body says why
            return json.load(err)

    def query(self, expr: str) -> list[dict]:
        reply = self.get("/api/v1/query", query=expr)
        assert reply["status"] == "success", f"{expr}: {reply}"
        return reply["data"]["result"]

    def alerts(self, name: str) -> list[dict]:
        return [a for a in self.get("/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == name]

    def wait_ready(self, timeout: float = 30) -> "Prometheus":
        eventually(lambda: self.proc.poll() is None and ready(self.url), "prometheus /-/ready", timeout,
                   lambda: self.log_path.read_text()[-2000:])
        return self

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def eventually(check, what: str, timeout: float = 30, context=lambda: ""):
    """Poll check() until it returns something truthy; fail with what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{context()}")
        time.sleep(0.5)


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every target, rows' nested panels included."""
    def walk(panels):
        for panel in panels:
            yield from ((panel["title"], target["expr"]) for target in panel.get("targets", []))
            yield from walk(panel.get("panels", []))
    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


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
        prometheus = Prometheus(directory, f"127.0.0.1:{exporter.port}", ALERTS).wait_ready()
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
    eventually(lambda: prometheus.query(f'capability_denials_total{{comm="{comm}"}}'),
               f"Prometheus to scrape denials of {comm}")
    run_workload(f"{comm}=chown:20:{owned}", user=NOBODY)
    return comm


def test_capability_denied_alert_fires_for_the_denied_comm(stack, denied):
    _, prometheus, _ = stack
    alert = eventually(lambda: [a for a in prometheus.alerts("CapabilityDenied") if a["labels"]["comm"] == denied],
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
        eventually(lambda: prometheus.alerts("CapabilityExporterNoauditIndistinguishable"), "the noaudit alert")
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
    for title, expr in shown:
        result = prometheus.query(as_promql(expr, comm=denied, capability="CAP_CHOWN"))
        values = [float(sample["value"][1]) for sample in result
                  if sample["metric"].get("comm", denied) == denied]
        assert values and max(values) > 0, f"{title}: {expr} gave {result}"


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
