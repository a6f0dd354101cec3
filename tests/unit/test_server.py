"""Listen-address parsing, and /profiles' answers to good and bad requests."""

import json

import pytest
from prometheus_client import CollectorRegistry

from exporter.server import ListenError, app, parse_address


@pytest.mark.parametrize(
    "address, parsed",
    [(":9661", ("", 9661)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9661", ("::1", 9661)),
     ("localhost:1", ("localhost", 1))],
)
def test_parse_address(address, parsed):
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address", ["9661", "host:", "host:0", "host:65536", "host:port", "::1:9661"])
def test_bad_addresses(address):
    with pytest.raises(ListenError):
        parse_address(address)


def call(path: str, query: str = "") -> tuple[str, str]:
    documents = {"chown": {"comm": "chown"}, "ping": {"comm": "ping"}}
    application = app(CollectorRegistry(), "/metrics", lambda: "fexit", lambda: documents)
    status = []
    body = application({"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"},
                       lambda s, headers: status.append(s))
    return status[0], b"".join(body).decode()


def test_profiles_of_every_comm_or_one():
    assert call("/profiles") == ("200 OK", json.dumps({"chown": {"comm": "chown"}, "ping": {"comm": "ping"}},
                                                      indent=2) + "\n")
    status, body = call("/profiles", "comm=ping")
    assert status == "200 OK" and json.loads(body) == {"comm": "ping"}


@pytest.mark.parametrize("query, status, text", [
    ("comm=sshd", "404 Not Found", "no profile for this comm"),
    ("unit=ping", "404 Not Found", "no profile for this unit"),
    ("comm=a&comm=b", "400 Bad Request", "each given once"),
    ("comm=a&unit=b", "400 Bad Request", "the parameters are one of comm, process, unit, container"),
    ("pid=1", "400 Bad Request", "the parameters are one of comm, process, unit, container"),
    ("comm=ping&format=xml", "400 Bad Request", "format must be one of text, json"),
    ("format=systemd", "400 Bad Request", "format systemd is for one workload"),
    ("comm", "400 Bad Request", "bad query string"),
])
def test_bad_profile_requests_get_one_line(query, status, text):
    got_status, body = call("/profiles", query)
    assert got_status == status and text in body and body.count("\n") == 1
