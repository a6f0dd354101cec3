"""recommend's pure parts: durations, selectors, the PromQL it asks, merging nodes' answers; and its bad input."""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import subprocess
import sys
import threading

import pytest
import yaml

from exporter.advise import fleet, prometheus_api
from exporter.advise.fleet import Answers, Selector, Window
from exporter.core import profile
from support import ROOT, free_port

DAY = 86400


@pytest.mark.parametrize("text, seconds", [
    ("30d", 30 * DAY), ("1h30m", 5400), ("90s", 90), ("500ms", 0.5), ("2w", 14 * DAY), ("1y", 365 * DAY),
    ("1d12h", 1.5 * DAY),
])
def test_prometheus_durations(text, seconds):
    assert fleet.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "30x", "1m1h", "0s", "-1d", "1.5h", "30 d"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        fleet.parse_duration(text)


@pytest.mark.parametrize("seconds, text", [(30 * DAY, "30d"), (5400, "1h30m"), (15, "15s"), (0.25, "250ms"),
                                           (14 * DAY, "14d")])
def test_durations_as_promql(seconds, text):
    assert fleet.format_duration(seconds) == text


def test_selector_from_flags_quotes_values_and_tells_a_container_id_from_a_name():
    container_id = "ab" * 32
    assert str(Selector.of(unit='we"ird\\.service')) == '{unit="we\\"ird\\\\.service"}'
    assert str(Selector.of(container=container_id)) == f'{{container="{container_id}"}}'
    assert str(Selector.of(container="web", comm="nginx")) == '{container_name="web", comm="nginx"}'
    assert Selector.of(unit="a.service", match='job="x", process=~"p.*"').labels() == ["process", "unit"]


@pytest.mark.parametrize("text, matchers", [
    ('unit="a"', ('unit="a"',)),
    ('{unit=~"web@.*" , job!="x"}', ('unit=~"web@.*"', 'job!="x"')),
    ("comm!~'cron.*'", ("comm!~'cron.*'",)),
    ('unit="with, comma"', ('unit="with, comma"',)),
])
def test_raw_matchers(text, matchers):
    assert fleet.parse_matchers(text) == matchers


@pytest.mark.parametrize("text", ['unit="a"} or vector(1) or up{', "unit=a", 'unit="a" job="b"', "", "{}",
                                  '1unit="a"'])
def test_raw_matchers_that_are_not(text):
    with pytest.raises(ValueError):
        fleet.parse_matchers(text)


def test_subquery_step_keeps_long_ranges_to_a_bounded_number_of_points():
    assert Window(30 * DAY, 0).step == 260  # 30d / 10000, rounded up
    assert Window(600, 0).step == fleet.MIN_STEP


def test_granted_counts_new_series_whole_and_reads_old_ones_by_increase():
    expr = fleet.queries(Selector.of(unit="a.service"), Window(DAY, 0)).granted
    series = ('sum without (uid, cgroup, audit, insetid) (capability_checks_total{unit="a.service", audit!="false"}) - '
              'sum without (uid, cgroup, audit, insetid) (capability_denials_total{unit="a.service", audit!="false"})')
    before = series.replace('audit!="false"}', 'audit!="false"} offset 1d')
    assert expr == (f"sum by (instance, comm, capability) ((increase(({series})[1d:15s]) and ({before})) "
                    f"or ((max_over_time(({series})[1d:15s]) or ({series})) unless ({before})))")


def test_recorded_source_reads_the_recording_rule():
    expr = fleet.queries(Selector.of(comm="ping"), Window(DAY, 0), "recorded").granted
    assert f'increase(({fleet.RECORDED}{{comm="ping"}})[1d:15s]) and ({fleet.RECORDED}{{comm="ping"}} offset 1d)' in expr


def test_held_is_unknown_without_a_workload_label_to_ask_capability_unused_by():
    assert fleet.queries(Selector.of(match='job="x"'), Window(DAY, 0)).held_known is None
    assert 'capability_unused{unit!=""}' in fleet.queries(Selector.of(unit="a"), Window(DAY, 0)).held_known


def answers(**given) -> Answers:
    return Answers(**{name: given.get(name, []) for name in Answers.__dataclass_fields__})


def node(instance, **labels):
    return {"instance": instance, **labels}


def test_merge_takes_the_union_of_the_nodes_and_flags_the_blind_one():
    window = Window(DAY, 10 * DAY)
    result, instances = fleet.merge(answers(
        granted=[(node("n1", comm="sshd", capability="CAP_SETUID"), 50.2),
                 (node("n2", comm="sshd", capability="CAP_CHOWN"), 3),
                 (node("n2", comm="sshd", capability="CAP_NET_RAW"), 0)],
        denied=[(node("n2", comm="sshd", capability="CAP_NET_RAW"), 4),
                (node("n1", comm="sshd", capability="CAP_SETUID"), 0)],
        unused=[(node("n1", capability="CAP_SYS_TIME"), 1), (node("n1", capability="CAP_SETUID"), 1)],
        held_known=[(node("n1"), 1)],
        probes=[(node("n1", mode="fexit", noaudit="excluded"), 1),
                (node("n2", mode="tracepoint", noaudit="indistinguishable"), 1)],
        oldest=[(node("n1"), 5 * DAY), (node("n2"), 9.5 * DAY)],
        resets=[(node("n1"), 2), (node("n2"), 0)],
    ), window)
    rec = result.recommend()
    assert rec.needed == ["CAP_CHOWN", "CAP_SETUID"]
    assert rec.denied == ["CAP_NET_RAW"]
    # Held unused on n1, but CAP_SETUID is granted there since: only CAP_SYS_TIME is unused.
    assert rec.unused == ["CAP_SYS_TIME"]
    assert result.noaudit == "indistinguishable" and result.mode == "fexit, tracepoint"
    assert [(n.instance, n.granted, n.denied) for n in instances] == [
        ("n1", ["CAP_SETUID"], []), ("n2", ["CAP_CHOWN"], ["CAP_NET_RAW"])]
    said = fleet.notes(instances, window)
    assert said == [
        "the range (1d) reaches before the oldest sample of n2 (the oldest sample is 12h old): use before then is not seen",
        "counters were reset (an exporter restarted) on n1: checks between a restart and the scrape before it are not seen",
        "n2 cannot tell audited from non-audited checks: the needed set may be too large",
        "n2 keep no capability_unused by the selector's labels: what the workload holds there is not known",
    ]


def test_included_noaudit_without_the_audit_label_is_unknown():
    _, (only,) = fleet.merge(answers(granted=[(node("n1", comm="c", capability="CAP_CHOWN"), 1)],
                                     probes=[(node("n1", mode="fexit", noaudit="included"), 1)]), Window(DAY, DAY))
    assert only.noaudit == "unknown" and only.audited() is None


def test_held_unknown_everywhere_says_so_in_the_report():
    result, instances = fleet.merge(answers(granted=[(node("n1", comm="c", capability="CAP_CHOWN"), 1)]),
                                    Window(DAY, DAY))
    assert result.held is None
    text = profile.render("text", result, prometheus=fleet.context("http://p", Selector.of(comm="c"),
                                                                   Window(DAY, DAY), "raw", instances))
    assert "held but never used:     unknown" in text
    assert "Instance n1 (unknown mode): granted CAP_CHOWN; denied -" in text


def recommend(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "recommend", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, code, expected", [
    (["--prometheus", "ftp://host", "--unit", "a"], 2, "must be an http:// or https:// URL"),
    (["--prometheus", "http://", "--unit", "a"], 2, "must be an http:// or https:// URL"),
    (["--prometheus", "http://host:99999", "--unit", "a"], 2, "bad port"),
    (["--prometheus", "http://host", "--unit", "a", "--range", "30x"], 2, "--range must be a Prometheus duration"),
    (["--prometheus", "http://host", "--unit", "a", "--range", "0d"], 2, "--range must be above zero"),
    (["--prometheus", "http://host"], 2, "name the workload"),
    (["--prometheus", "http://host", "--match", "unit=a"], 2, "--match: not a list of label matchers"),
    (["--unit", "a"], 2, "the following arguments are required: --prometheus"),
    (["--prometheus", "http://host", "--unit", "a", "--http.config.file", "/nonexistent"], 2,
     "invalid --http.config.file /nonexistent: cannot read the file"),
])
def test_bad_input_is_one_line_and_its_exit_code(args, code, expected):
    done = recommend(*args)
    assert done.returncode == code and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1 and expected in done.stderr, done.stderr


def test_an_unreachable_prometheus_exits_3():
    done = recommend("--prometheus", f"http://127.0.0.1:{free_port()}", "--unit", "a")
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("capability-exporter: error: cannot reach Prometheus at http://127.0.0.1:")
    assert len(done.stderr.splitlines()) == 1


def test_a_bad_http_config_lists_every_problem(tmp_path):
    path = tmp_path / "http.yml"
    path.write_text("basic_auth: {username: u, password: p, password_file: f}\n"
                    "authorization: {credentials: t}\ntls_config: {cert_file: c}\nbogus: 1\n")
    done = recommend("--prometheus", "http://host", "--unit", "a", "--http.config.file", str(path))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    for problem in ("bogus: unknown key",):
        assert problem in done.stderr


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in that answers every query with one sample, and keeps the headers it got."""

    seen: list[str] = []

    def do_POST(self):
        self.seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"instance": "n1"}, "value": [0, "1"]}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("config, header", [
    ("basic_auth: {username: alice, password_file: secret}\n", "Basic " + base64.b64encode(b"alice:s3cret").decode()),
    ("authorization: {credentials_file: secret}\n", "Bearer s3cret"),
    ("", ""),
])
def test_credentials_from_the_http_config_file_are_sent(recorder, tmp_path, config, header):
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "http.yml").write_text(config)
    client = prometheus_api.Client(recorder, prometheus_api.load_http_config(str(tmp_path / "http.yml")))
    assert client.query("up", 0) == [({"instance": "n1"}, 1.0)]
    assert _Recorder.seen == [header]


GRANTED_CASES = [
    # (comm, checks, denials, granted in the last hour at 3h)
    ("growing", "0+1x180", "0x180", 60),  # one a minute all along: the hour's growth
    ("new", "_x150 5x30", "_x150 0x30", 5),  # first seen at 2h30m with 5: counted whole
    ("newest", "_x179 2", "_x179 0", 2),  # first seen a minute before the end
    ("flat", "3x180", "0x180", 0),  # used before the range only
    ("reset", "0+1x120 0+1x59", "0x180", 59),  # an exporter restart at 2h01m: 59 after it, none lost
    ("denied", "0+1x180", "0+1x180", 0),  # every check denied
    ("before", "0+1x90 _x90", "0x90 _x90", None),  # a node gone before the range
]


def test_granted_in_the_range_as_prometheus_computes_it(tmp_path):
    """The granted query run by promtool's PromQL engine on series of every shape recommend meets."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool not found: install the Debian package prometheus")
    expr = fleet.queries(Selector.of(match='job="x"'), Window(3600, 3 * 3600)).granted
    labels = 'job="x",instance="n1",capability="CAP_CHOWN",comm="{}"'
    test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": f"capability_{kind}_total{{{labels.format(comm)}}}", "values": values}
                         for comm, checks, denials, _ in GRANTED_CASES
                         for kind, values in (("checks", checks), ("denials", denials))],
        "promql_expr_test": [{"expr": f"round({expr})", "eval_time": "3h", "exp_samples": [
            {"labels": "{" + labels.format(comm).replace('job="x",', "") + "}", "value": value}
            for comm, _, _, value in GRANTED_CASES if value is not None]}],
    }]}
    path = tmp_path / "granted_test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
