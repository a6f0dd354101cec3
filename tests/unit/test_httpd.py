"""The HTTP server on its own, on loopback: overflow refused at once, idle connections closed."""

import socket
import threading
import time

import pytest

from exporter.serve import httpd


@pytest.fixture
def serve():
    """serve(app, **limits) -> a running httpd.Server on a loopback port; stopped afterwards."""
    servers = []

    def start(application, **limits):
        server = httpd.Server(httpd.listening_socket("127.0.0.1", 0), application, httpd.Limits(**limits))
        server.prepare()
        threading.Thread(target=server.serve, daemon=True).start()
        servers.append(server)
        return server.bound_socket.getsockname()[1]

    yield start
    for server in servers:
        server.stop()


def ok(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def request(port: int, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_requests_past_the_queue_get_503_at_once(serve):
    release = threading.Event()

    def slow(environ, start_response):
        release.wait(20)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    port = serve(slow, workers=1, queued_requests=1)
    answers = []
    held = [threading.Thread(target=lambda: answers.append(request(port, 30))) for _ in range(2)]
    for thread in held:
        thread.start()
        time.sleep(0.5)  # one in the worker, then one in the queue
    start = time.monotonic()
    refused = request(port)
    assert refused.startswith(b"HTTP/1.1 503") and time.monotonic() - start < 2
    release.set()
    for thread in held:
        thread.join(30)
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 2


def test_idle_connections_are_closed_after_the_idle_timeout(serve):
    port = serve(ok, idle_timeout=1)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.5 < time.monotonic() - start < 5


def test_past_max_connections_the_longest_idle_is_closed(serve):
    port = serve(ok, max_connections=4)
    oldest = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(0.2)
    others = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        assert oldest.recv(1) == b""  # closed to make room
        assert request(port).endswith(b"ok")
    finally:
        for sock in [oldest, *others]:
            sock.close()


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


@pytest.mark.parametrize("data", [b"<script>alert(1)</script>\r\n\r\n", b"GET / HTTP/1.1\r\n<script> no colon\r\n\r\n",
                                  b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * (20 << 10) + b"\r\n\r\n"])
def test_bad_requests_get_a_plain_status_that_echoes_nothing(serve, data):
    answer = raw(serve(ok), data)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1][:1] == b"4", answer[:200]
    assert b"X-Content-Type-Options: nosniff" in head and b"Server: capability-exporter" in head
    assert b"script" not in body and b"aaaa" not in body
