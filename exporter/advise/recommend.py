"""capability-exporter recommend: what a workload needs across every node, from Prometheus's history."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from exporter import config
from exporter.advise import fleet
from exporter.advise.prometheus_api import ApiError, Client, HttpConfig, load_http_config
from exporter.core import profile
from exporter.usage import EXIT_USAGE, Parser, fail

EXIT_UNREACHABLE = 3
EXIT_PROMETHEUS_ERROR = 4
EXIT_NO_SERIES = 5
DEFAULT_RANGE = "30d"
EXIT_CODES = (f"Exits 0 with a recommendation; {EXIT_USAGE} for a bad flag, --range, selector, URL or "
              f"--http.config.file; {EXIT_UNREACHABLE} when Prometheus cannot be reached; "
              f"{EXIT_PROMETHEUS_ERROR} when it answers with an error; {EXIT_NO_SERIES} when the selector "
              "matches no capability checks in the range.")


def parser() -> Parser:
    p = Parser(
        prog="capability-exporter recommend",
        description="Ask Prometheus what a workload was granted, denied and held but never used, over a range "
                    "and across every node whose exporter it scrapes, and print the capabilities to grant it, "
                    "in the shapes 'capability-exporter run' prints. " + EXIT_CODES,
    )
    p.add_argument("--prometheus", required=True, metavar="URL",
                   help="Prometheus (or Thanos, Mimir: any Prometheus query API) base URL, e.g. http://prometheus:9090")
    p.add_argument("--http.config.file", dest="http_config", metavar="FILE",
                   help="basic_auth, authorization (a bearer token, or its credentials_file) and tls_config "
                        "(ca_file, cert_file, key_file, insecure_skip_verify), in Prometheus's http_config format")
    which = p.add_argument_group("the workload (one or more; all must match)")
    which.add_argument("--unit", default="", metavar="UNIT", help="a systemd unit (the unit label)")
    which.add_argument("--container", default="", metavar="ID|NAME",
                       help="a container: its 64-hex id (container) or its runtime's name (container_name)")
    which.add_argument("--process", default="", metavar="NAME", help="a program (the process label)")
    which.add_argument("--comm", default="", metavar="COMM", help="a thread name (the comm label)")
    which.add_argument("--match", default="", metavar="MATCHERS",
                       help='PromQL label matchers, e.g. \'unit=~"web@.*",job="capability-exporter"\'')
    p.add_argument("--range", default=DEFAULT_RANGE, metavar="DURATION",
                   help=f"how far back, a Prometheus duration (default {DEFAULT_RANGE})")
    p.add_argument("--source", choices=fleet.SOURCES, default="raw",
                   help="raw: the exporters' counters; recorded: the recording rule of deploy/prometheus/alerts.yml "
                        "(cheaper over long ranges, but only since the rule was loaded). Default raw")
    p.add_argument("--format", choices=profile.FORMATS, default="text", metavar="FORMAT",
                   help="text (the default), json, systemd, kubernetes or docker, as run --format")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE (default: standard output)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="per query (default 60)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    client, selector, window = _inputs(args)
    try:
        answers = ask(client, selector, window, args.source)
    except ApiError as err:
        fail(str(err), EXIT_UNREACHABLE if err.unreachable else EXIT_PROMETHEUS_ERROR)
    result, instances = fleet.merge(answers, window)
    if not result.checks:
        fail(f"no capability checks of {selector} in the last {args.range} "
             f"({'the recorded series ' + fleet.RECORDED if args.source == 'recorded' else 'capability_checks_total'}"
             " at " + client.url + ")", EXIT_NO_SERIES)
    text = profile.render(args.format, result,
                          prometheus=fleet.context(client.url, selector, window, args.source, instances))
    _write(args.output, text)
    return 0


def _inputs(args: argparse.Namespace) -> tuple[Client, fleet.Selector, fleet.Window]:
    """Every flag checked before the first query: a bad one costs no round trip."""
    try:
        seconds = fleet.parse_duration(args.range)
    except ValueError as err:
        fail(f"--range {err}", EXIT_USAGE)
    if not any((args.unit, args.container, args.process, args.comm, args.match)):
        fail("name the workload: --unit, --container, --process, --comm or --match (see --help)", EXIT_USAGE)
    try:
        selector = fleet.Selector.of(args.unit, args.container, args.process, args.comm, args.match)
    except ValueError as err:
        fail(f"--match: {err}", EXIT_USAGE)
    if not 0 < args.timeout <= 3600:
        fail(f"--timeout must be above 0 and at most 3600 seconds (got {args.timeout:g})", EXIT_USAGE)
    try:
        http = load_http_config(args.http_config) if args.http_config else HttpConfig()
        client = Client(args.prometheus, http, args.timeout)
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    except config.ConfigError as err:
        fail(f"invalid --http.config.file {err}", EXIT_USAGE)
    return client, selector, fleet.Window(seconds, time.time())


def ask(client: Client, selector: fleet.Selector, window: fleet.Window, source: str) -> fleet.Answers:
    asked = fleet.queries(selector, window, source)
    return fleet.Answers(**{name: client.query(expr, window.end) if expr else []
                            for name, expr in vars(asked).items()})


def _write(path: Optional[str], text: str) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        fail(f"--output: cannot write {path}: {err.strerror}", EXIT_USAGE)
