"""A real Prometheus for end-to-end tests: Debian's binary on loopback, scraping the real exporters."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from support import free_port, wait_for, write_config

PROMETHEUS = "/usr/bin/prometheus"  # Debian's prometheus package
JOB = "capability-exporter"


class Prometheus:
    """Debian's real prometheus binary on a free loopback port, scraping its targets every second.

    targets: address -> the labels to give it (an instance of its own, to pose as a node);
    flags: more of prometheus's, with scheme https for a --web.config.file that has TLS."""

    def __init__(self, directory: Path, targets: dict[str, dict[str, str]], rule_file: Path, *flags: str,
                 scheme: str = "http"):
        address = f"127.0.0.1:{free_port()}"
        self.url = f"{scheme}://{address}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [
                {"targets": [target], "labels": labels} for target, labels in targets.items()]}],
        }
        config_path = write_config(directory, config, name="prometheus.yml")
        self.log_path = directory / "prometheus.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address={address}", *flags],
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
        wait_for(lambda: self.proc.poll() is None and ready(self.url), "prometheus /-/ready", timeout,
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

