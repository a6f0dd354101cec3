"""The fast /metrics writer: byte for byte what prometheus_client writes, in every format it negotiates."""

import gzip

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families

from exporter.serve import exposition, server
from exporter.serve.exposition import RenderedFamily, label_text, labels_of

ODD = ['plain', 'quo"te', 'back\\slash', 'new\nline', 'bad\\xff\\xfe', 'ünï', '']
ACCEPTS = [
    None,
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=dots",  # falls back to prometheus_client whole
]
VALUES = [0, 1, 999_999, 1_000_000, 123_456_789, 2**53 + 1, 0.5, 1e-9]


class Fixed:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def families(rendered: bool):
    """The same families, as prometheus_client's own or with the big ones as RenderedFamilies."""
    names = ["comm", "capability", "uid"]
    if rendered:
        checks = RenderedFamily("capability_checks", "Checks, with a \\ and a\nnewline.", "counter", names, "_total")
        unused = RenderedFamily("capability_unused", 'Held, "unused".', "gauge", ["comm", "capability"])
    else:
        checks = CounterMetricFamily("capability_checks", "Checks, with a \\ and a\nnewline.", labels=names)
        unused = GaugeMetricFamily("capability_unused", 'Held, "unused".', labels=["comm", "capability"])
    for i, comm in enumerate(ODD):
        for value in VALUES:
            checks.add_metric([comm, f"CAP_{value}", str(i)], value)
        unused.add_metric([comm, "CAP_KILL"], 1)
    info = GaugeMetricFamily("capability_exporter_build_info", "Build.", labels=["version"])
    info.add_metric(["1.0"], 1)
    empty = CounterMetricFamily("capability_denials", "Nothing yet.", labels=names)
    return [info, checks, empty, unused]


def parsed(text: str):
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                  for f in text_string_to_metric_families(text) for s in f.samples)


@pytest.mark.parametrize("accept", ACCEPTS)
def test_rendered_families_come_out_as_prometheus_client_writes_them(accept):
    encoder, content_type = choose_encoder(accept)
    expected = encoder(Fixed(families(rendered=False)))
    got = b"".join(exposition.encode(families(rendered=True), encoder, content_type))
    # The writer puts the rendered families after the others; each family's lines are the same.
    assert sorted(got.splitlines()) == sorted(expected.splitlines())
    if content_type.startswith("application/openmetrics-text"):
        assert got.endswith(b"# EOF\n") and got.count(b"# EOF") == 1
    else:
        assert parsed(got.decode()) == parsed(expected.decode())


def test_each_family_keeps_its_header_right_above_its_samples():
    encoder, content_type = choose_encoder(None)
    lines = b"".join(exposition.encode(families(rendered=True), encoder, content_type)).decode().splitlines()
    at = lines.index("# TYPE capability_checks_total counter")
    assert lines[at - 1].startswith("# HELP capability_checks_total ")
    assert all(line.startswith("capability_checks_total{") for line in lines[at + 1:at + 1 + len(ODD) * len(VALUES)])


def test_a_rendered_family_still_has_samples_for_whoever_reads_them():
    family = families(rendered=True)[1]
    assert family.samples == families(rendered=False)[1].samples


def test_label_text_sorts_and_escapes():
    assert label_text(["comm", "capability"], ['a"b', "CAP_X"]) == 'capability="CAP_X",comm="a\\"b"'


@pytest.mark.parametrize("value", ODD + ['a="b",c="d"', '\\"', "\\n", "x\\", '"', "\\\n\"", "=,{}"])
def test_labels_read_back_from_label_text_exactly(value):
    names = ["comm", "capability", "uid"]
    values = [value, "CAP_X", value[::-1]]
    assert labels_of(label_text(names, values)) == dict(zip(names, values))


def test_the_server_serves_rendered_families_negotiated_filtered_and_compressed():
    registry = CollectorRegistry(support_collectors_without_names=True)  # so that name[] finds them
    registry.register(Fixed(families(rendered=True)))
    app = server._metrics(registry)
    answers = []

    def start_response(status, headers):
        answers.append((status, dict(headers)))

    body = app({"REQUEST_METHOD": "GET", "HTTP_ACCEPT": ACCEPTS[3], "HTTP_ACCEPT_ENCODING": "gzip"}, start_response)
    status, headers = answers[-1]
    assert status == "200 OK" and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    encoder, content_type = choose_encoder(ACCEPTS[3])
    expected = encoder(Fixed(families(rendered=False)))
    assert sorted(gzip.decompress(b"".join(body)).splitlines()) == sorted(expected.splitlines())
    body = app({"REQUEST_METHOD": "GET", "QUERY_STRING": "name[]=capability_unused"}, start_response)
    assert parsed(b"".join(body).decode()) == [("capability_unused", (("capability", "CAP_KILL"), ("comm", c)), 1.0)
                                              for c in sorted(ODD)]
