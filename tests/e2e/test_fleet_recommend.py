"""recommend across two nodes: two real exporters, each seeing part of one workload, and a real Prometheus.

Each exporter's pid filter lets it see one of the workload's two processes, as if they ran on
two nodes (instance="node1" and "node2"): node1 sees setuid(0) (CAP_SETUID), node2 a root chown
(CAP_CHOWN). The same two steps in one process under `run` are the one-place answer that
recommend's systemd lines must equal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bcrypt
import pytest

from prometheus_server import Prometheus
from support import HANG_TIMEOUT, ROOT, WORKLOAD, Exporter, WaitingWorkload, make_pki, unique_comm, wait_for, write_config
from test_prometheus import ALERTS, as_promql, dashboard_targets

pytestmark = pytest.mark.kernel

NODES = ("node1", "node2")
LEAST_PRIVILEGE_ROW = "Least privilege"


def recommend(prometheus_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "recommend", "--prometheus", prometheus_url, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)


def grant_lines(systemd: str) -> list[str]:
    """The lines systemd reads; the comments say where each report came from, and differ."""
    return [line for line in systemd.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def fleet():
    directory = Path(tempfile.mkdtemp(prefix="capexp-fleet-"))
    owned = directory / "owned-by-root"
    owned.write_text("")
    comm = unique_comm("cxfleet")
    steps = {"node1": f"{comm}=setuid:50", "node2": f"{comm}=chown:30:{owned}"}
    # Started first, so that each pid can go in its exporter's filter; they run on go().
    workloads = {node: WaitingWorkload(step) for node, step in steps.items()}
    exporters = {node: Exporter(write_config(directory, {"changes": {"enabled": False},
                                                         "filters": {"pids": [workloads[node].pid]}},
                                             name=f"{node}.yaml"))
                 for node in NODES}
    prometheus = None
    try:
        for exporter in exporters.values():
            exporter.wait_ready()
        prometheus = Prometheus(directory, {f"127.0.0.1:{e.port}": {"instance": node} for node, e in exporters.items()},
                                ALERTS).wait_ready()
        wait_for(lambda: len(prometheus.query("capability_exporter_build_info")) == 2, "both nodes scraped")
        yield prometheus, workloads, comm, steps, owned
    finally:
        for workload in workloads.values():
            if workload.proc.poll() is None:
                workload.proc.kill()
                workload.proc.wait()
        if prometheus:
            prometheus.stop()
        statuses = {node: exporter.stop() for node, exporter in exporters.items()}
        shutil.rmtree(directory)
    assert statuses == {node: 0 for node in NODES}, {node: e.stderr for node, e in exporters.items()}


def first_uses(prometheus: Prometheus, comm: str) -> dict[str, str]:
    """capability -> the state of CapabilityFirstUse for the comm."""
    return {a["labels"]["capability"]: a["state"] for a in prometheus.alerts("CapabilityFirstUse")
            if a["labels"].get("comm") == comm}


@pytest.fixture(scope="module")
def used(fleet):
    """node1's part first, then node2's: CAP_CHOWN is new to the workload when node2 uses it."""
    prometheus, workloads, comm, _, _ = fleet
    workloads["node1"].go()
    wait_for(lambda: "CAP_SETUID" in first_uses(prometheus, comm), "CapabilityFirstUse of CAP_SETUID",
               context=lambda: str(prometheus.alerts("CapabilityFirstUse")))
    before = first_uses(prometheus, comm)
    workloads["node2"].go()
    after = wait_for(lambda: "CAP_CHOWN" in first_uses(prometheus, comm) and first_uses(prometheus, comm),
                       "CapabilityFirstUse of CAP_CHOWN", context=lambda: str(prometheus.alerts("CapabilityFirstUse")))
    wait_for(lambda: prometheus.query(f'workload:capability_granted_checks_total:sum{{comm="{comm}"}}'),
               "the recorded series of both nodes")
    return before, after


def test_capability_first_use_fires_when_the_workload_starts_using_a_new_capability(fleet, used):
    before, after = used
    assert "CAP_CHOWN" not in before  # not yet used anywhere
    assert after["CAP_CHOWN"] in ("pending", "firing")
    (alert,) = [a for a in fleet[0].alerts("CapabilityFirstUse")
                if a["labels"].get("comm") == fleet[2] and a["labels"]["capability"] == "CAP_CHOWN"]
    assert "instance" not in alert["labels"]  # a workload's first use anywhere in the fleet
    assert alert["labels"]["severity"] == "warning"


@pytest.mark.parametrize("source", ["raw", "recorded"])
def test_recommend_takes_the_union_of_both_nodes(fleet, used, source):
    prometheus, _, comm, _, _ = fleet
    if source == "recorded":
        wait_for(lambda: len(prometheus.query(f'workload:capability_granted_checks_total:sum{{comm="{comm}"}}')) == 2,
                   "both nodes' recorded series")
    done = recommend(prometheus.url, "--comm", comm, "--range", "10m", "--source", source, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["recommendation"]["needed"] == ["CAP_CHOWN", "CAP_SETUID"]
    nodes = {node["instance"]: node for node in report["prometheus"]["instances"]}
    # CAP_CHOWN was only ever used on node2, and still is needed.
    assert nodes["node1"]["granted"] == ["CAP_SETUID"] and nodes["node2"]["granted"] == ["CAP_CHOWN"]
    checks = {(c["comm"], c["capability"]): (c["granted"], c["denied"]) for c in report["checks"]}
    assert checks == {(comm, "CAP_SETUID"): (50, 0), (comm, "CAP_CHOWN"): (30, 0)}
    # This Prometheus started seconds ago: the 10m range reaches before its oldest sample.
    assert any(note.startswith("the range (10m) reaches before the oldest sample of node1, node2 (the oldest sample is ")
               for note in report["prometheus"]["notes"]), report["prometheus"]["notes"]
    noaudit = {node["noaudit"] for node in nodes.values()}
    blind = any("cannot tell audited from non-audited" in n for n in report["prometheus"]["notes"])
    assert blind == ("indistinguishable" in noaudit)


def test_recommend_systemd_lines_equal_what_run_recommends_in_one_place(fleet, used, tmp_path):
    prometheus, _, comm, steps, _ = fleet
    fleet_report = recommend(prometheus.url, "--comm", comm, "--range", "10m", "--format", "systemd")
    assert fleet_report.returncode == 0, fleet_report.stderr
    one_place = subprocess.run([sys.executable, "-m", "exporter", "run", "--format", "systemd", "-o",
                                str(tmp_path / "run.txt"), "--", sys.executable, str(WORKLOAD), *steps.values()],
                               cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert one_place.returncode == 0, one_place.stderr
    run_lines = grant_lines((tmp_path / "run.txt").read_text())
    assert run_lines == ["CapabilityBoundingSet=CAP_CHOWN CAP_SETUID", "AmbientCapabilities=CAP_CHOWN CAP_SETUID"]
    assert grant_lines(fleet_report.stdout) == run_lines
    assert f'# capability-exporter recommend: Prometheus: {prometheus.url}, {{comm="{comm}"}}' in fleet_report.stdout


def test_recommend_text_and_kubernetes_read_as_runs(fleet, used):
    prometheus, _, comm, _, _ = fleet
    text = recommend(prometheus.url, "--comm", comm, "--range", "10m").stdout
    assert "Instance node2 (" in text and "granted CAP_CHOWN" in text
    assert [line.split()[1:] for line in text.splitlines() if line.strip().startswith("needed:")] == \
        [["CAP_CHOWN", "CAP_SETUID"]]
    kube = recommend(prometheus.url, "--comm", comm, "--range", "10m", "--format", "kubernetes").stdout
    assert "add:\n    - CHOWN\n    - SETUID\n" in kube


def test_recommend_errors_are_one_line_with_their_exit_code(fleet, used):
    prometheus, _, comm, _, _ = fleet
    cases = {
        # Prometheus refuses the regex: its own error, exit 4.
        ("--match", 'comm=~"("'): (4, "answered 400: "),
        ("--comm", unique_comm("cxnobody")): (5, "no capability checks of"),
    }
    for args, (code, message) in cases.items():
        done = recommend(prometheus.url, *args)
        assert done.returncode == code, (args, done.stderr)
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_least_privilege_row_shows_the_workload(fleet, used):
    """The row's queries, as Grafana sends them for this comm, show both capabilities used."""
    prometheus, _, comm, _, _ = fleet
    row = [(title, expr) for title, expr in dashboard_targets(LEAST_PRIVILEGE_ROW)]
    assert row
    shown = {}
    for title, expr in row:
        shown[title] = prometheus.query(as_promql(expr, workload_label="comm", workload=comm))
    used_caps = {s["metric"]["capability"] for s in shown["Capabilities used per workload, all nodes"]}
    assert used_caps == {"CAP_CHOWN", "CAP_SETUID"}
    first = {s["metric"]["capability"] for s in shown["Recent first uses"]}
    assert "CAP_CHOWN" in first


def test_recommend_reaches_a_prometheus_behind_tls_and_basic_auth(tmp_path):
    """Prometheus's own --web.config.file; recommend's http_config gives the CA and the password file."""
    pki = make_pki(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = write_config(tmp_path, {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
                                  "basic_auth_users": {"recommend": hashed}}, name="web.yml")
    prometheus = Prometheus(tmp_path, {}, ALERTS, f"--web.config.file={web}", scheme="https")
    (pki / "right").write_text("s3cret\n")
    (pki / "wrong").write_text("guess\n")

    def http_config(password_file: str, **tls: str) -> str:
        return str(write_config(tmp_path, {"basic_auth": {"username": "recommend", "password_file": password_file},
                                           "tls_config": tls}, name=f"http-{password_file}-{len(tls)}.yml"))

    nobody = unique_comm("cxnobody")
    try:
        # Up and answering: no series of this comm, so exit 5, past TLS and the password.
        done = wait_for(lambda: (d := recommend(prometheus.url, "--comm", nobody, "--http.config.file",
                                                  http_config("right", ca_file="ca.crt"))).returncode != 3 and d,
                          "Prometheus behind TLS", context=lambda: prometheus.log_path.read_text()[-2000:])
        assert done.returncode == 5 and "no capability checks of" in done.stderr, done.stderr
        refused = recommend(prometheus.url, "--comm", nobody, "--http.config.file", http_config("wrong", ca_file="ca.crt"))
        assert refused.returncode == 4 and "answered 401" in refused.stderr, refused.stderr
        untrusted = recommend(prometheus.url, "--comm", nobody, "--http.config.file", http_config("right"))
        assert untrusted.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr
        for done in (refused, untrusted):
            assert len(done.stderr.splitlines()) == 1
    finally:
        prometheus.stop()
