"""Listen-address parsing, /profiles' answers to good and bad requests, HEAD, and shared scrapes."""

import json
import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from exporter.serve.server import MAX_SHARED_FORMATS, Fresh, ListenError, _metrics, app, check_address, hardened, parse_address


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


def test_an_unresolvable_listen_host_is_refused_before_binding():
    with pytest.raises(ListenError, match="cannot resolve listen host"):
        check_address("no-such-host.invalid:9661")


DOCUMENTS = {"chown": {"comm": "chown"}, "ping": {"comm": "ping"}, "sshd": {"comm": "sshd"}}


def profiles(limit):
    def answer(comm):
        if comm is not None:
            return {comm: DOCUMENTS[comm]} if comm in DOCUMENTS else {}, len(DOCUMENTS)
        return {name: DOCUMENTS[name] for name in sorted(DOCUMENTS)[:limit]}, len(DOCUMENTS)

    return answer


def call(path: str, query: str = "", method: str = "GET", limit: int = 100) -> tuple[str, dict, str]:
    application = hardened(app(CollectorRegistry(), "/metrics", lambda: "fexit", profiles(limit), limit))
    response = []
    body = application({"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": method},
                       lambda status, headers: response.extend((status, dict(headers))))
    return response[0], response[1], b"".join(body).decode()


def test_profiles_of_every_comm_or_one():
    status, _, body = call("/profiles")
    assert status == "200 OK"
    assert json.loads(body) == {"version": 2, "by": "comm", "max_workloads": 100, "workloads": 3, "truncated": False,
                                "profiles": DOCUMENTS}
    status, _, body = call("/profiles", "comm=ping")
    assert status == "200 OK" and json.loads(body) == {"comm": "ping"}


def test_profiles_are_bounded_by_max_comms_and_say_so():
    doc = json.loads(call("/profiles", limit=2)[2])
    assert doc["truncated"] is True and doc["workloads"] == 3 and list(doc["profiles"]) == ["chown", "ping"]
    # One comm's profile is one document, whatever the limit.
    assert json.loads(call("/profiles", "comm=sshd", limit=2)[2]) == {"comm": "sshd"}


@pytest.mark.parametrize("path", ["/", "/metrics", "/profiles", "/nowhere"])
def test_head_gets_the_headers_of_get_and_no_body(path):
    get_status, get_headers, get_body = call(path)
    status, headers, body = call(path, method="HEAD")
    assert (status, body) == (get_status, "")
    assert headers["Content-Length"] == str(len(get_body.encode())) and headers["Content-Type"] == get_headers["Content-Type"]


@pytest.mark.parametrize("path", ["/", "/metrics", "/profiles", "/nowhere"])
def test_every_answer_says_nosniff(path):
    assert call(path)[1]["X-Content-Type-Options"] == "nosniff"


def test_other_methods_get_405_with_allow():
    status, headers, _ = call("/metrics", method="POST")
    assert status.startswith("405") and headers["Allow"] == "GET, HEAD"


def test_a_missing_comm_is_not_echoed():
    status, _, body = call("/profiles", "comm=<script>")
    assert status == "404 Not Found" and "<script>" not in body


def test_concurrent_requests_share_one_run_that_began_after_each_arrived():
    runs = []
    gate = threading.Event()

    def produce():
        runs.append(time.monotonic())
        gate.wait(5)
        return str(len(runs)).encode()

    fresh = Fresh(produce)
    first = threading.Thread(target=fresh.get)
    first.start()
    while not runs:
        time.sleep(0.01)
    arrived = time.monotonic()
    late = []
    waiters = [threading.Thread(target=lambda: late.append(fresh.get())) for _ in range(10)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.1)
    gate.set()
    for thread in [first, *waiters]:
        thread.join(5)
    # The ten that came during the first run share the second one, which began after they came.
    assert late == [b"2"] * 10 and len(runs) == 2 and runs[1] > arrived


def test_a_failed_run_fails_its_waiters_and_the_next_run_starts_afresh():
    outcomes = iter([RuntimeError("map read failed"), b"ok"])

    def produce():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    fresh = Fresh(produce)
    with pytest.raises(RuntimeError):
        fresh.get()
    assert fresh.get() == b"ok"


def test_the_output_is_not_kept_once_its_requests_have_it():
    fresh = Fresh(lambda: bytes(1 << 20))
    output = fresh.get()
    assert sys.getrefcount(output) == 2  # `output`, and getrefcount's own argument


@pytest.mark.parametrize("query, status, text", [
    ("comm=nginx", "404 Not Found", "no profile for this comm"),
    ("unit=ping", "404 Not Found", "no profile for this unit"),
    ("comm=a&comm=b", "400 Bad Request", "each given once"),
    ("comm=a&unit=b", "400 Bad Request", "the parameters are one of comm, process, unit, container"),
    ("pid=1", "400 Bad Request", "the parameters are one of comm, process, unit, container"),
    ("comm=ping&format=xml", "400 Bad Request", "format must be one of text, json"),
    ("format=systemd", "400 Bad Request", "format systemd is for one workload"),
    ("comm", "400 Bad Request", "bad query string"),
])
def test_bad_profile_requests_get_one_line(query, status, text):
    got_status, _, body = call("/profiles", query)
    assert got_status == status and text in body and body.count("\n") == 1


def test_made_up_format_versions_are_served_but_not_kept():
    metrics = _metrics(CollectorRegistry())
    for version in range(50):
        status = []
        metrics({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET",
                 "HTTP_ACCEPT": f"application/openmetrics-text; version={version}.0"}, lambda s, h: status.append(s))
        assert status == ["200 OK"]
    assert len(metrics.shared) == MAX_SHARED_FORMATS
