"""The HTTP side: a landing page at /, the metrics at the telemetry path, and /profiles."""

from __future__ import annotations

import html
import logging
import socket
import threading
import zlib
from typing import Callable, Generic, Iterable, Optional, TypeVar
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter import __version__
from exporter.serve import exposition, profile_query

log = logging.getLogger(__name__)

LANDING = """<!DOCTYPE html>
<html>
<head><title>capability-exporter</title></head>
<body>
<h1>capability-exporter</h1>
<p>Linux capability checks and denials, counted in the kernel with eBPF. Version {version}, attach mode {mode}.</p>
<ul><li><a href="{path}">Metrics</a></li>
<li><a href="/profiles">Profiles</a>: per workload, the capabilities granted, denied and held, and what to grant
(one: /profiles?comm=NAME, or unit, process, container; &amp;format=systemd and the other formats of run)</li></ul>
</body>
</html>
"""
MAX_SHARED_FORMATS = 8
GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's way of asking for a gzip header and trailer

# (documents, comms that have one) for one comm (a name) or for the first ones (None)
Profiles = profile_query.Profiles


class ListenError(Exception):
    """The listen address is malformed or cannot be bound."""


def parse_address(address: str) -> tuple[str, int]:
    """host:port, [v6]:port or :port (all interfaces) into (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ListenError(f"--web.listen-address {address!r} is not host:port with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenError(f"--web.listen-address {address!r}: write an IPv6 host in brackets, e.g. [::1]:port")
    return host, int(port_text)


def check_address(address: str) -> tuple[str, int]:
    """parse_address, and the host resolves: what start-up and --config.check both refuse."""
    host, port = parse_address(address)
    if host:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as err:
            reason = err.strerror if isinstance(err, socket.gaierror) else "not a valid host name"
            raise ListenError(f"cannot resolve listen host {host!r}: {reason}") from None
    return host, port


Output = TypeVar("Output")


class Fresh(Generic[Output]):
    """Concurrent requests share one run of produce(), each one a run that began after it arrived.

    A hundred scrapers at once then cost about one collection per collection time, and none
    gets counts older than its request. The result is kept only while a request that may take it
    is inside get(): a later one runs afresh anyway, and 10k series are a megabyte or two.
    """

    def __init__(self, produce: Callable[[], Output]):
        self.produce = produce
        self.ready = threading.Condition()
        self.started = 0
        self.finished = 0
        self.running = False
        self.inside = 0  # requests in get()
        self.result: Output | BaseException | None = None

    def get(self) -> Output:
        with self.ready:
            self.inside += 1
            try:
                result = self._wait_for_run()
            finally:
                self.inside -= 1
                if not self.inside:
                    self.result = None
            if isinstance(result, BaseException):
                raise result
            return result

    def _wait_for_run(self) -> Output | BaseException:
        """The result of a run that began after the caller came (with self.ready held)."""
        wanted = self.started + 1
        while self.finished < wanted:
            if self.running:
                self.ready.wait()
                continue
            self.started += 1
            self.running = True
            self.ready.release()
            try:
                result: Output | BaseException = self.produce()
            except Exception as err:  # every waiter of this run gets it
                result = err
            finally:
                self.ready.acquire()
            self.result, self.finished, self.running = result, self.started, False
            self.ready.notify_all()
        return self.result  # type: ignore[return-value]  # set by the run waited for


def app(registry: CollectorRegistry, telemetry_path: str, mode: Callable[[], str],
        profiles: Optional[Profiles] = None, max_profiles: int = 100) -> Callable:
    metrics = _metrics(registry)

    def route(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "only GET and HEAD are served\n",
                          [("Allow", "GET, HEAD")])
        if path == telemetry_path:
            return metrics(environ, start_response)
        if path == "/":
            page = LANDING.format(version=__version__, mode=html.escape(mode()), path=html.escape(telemetry_path))
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [page.encode()]
        if path == "/profiles" and profiles is not None:
            return _profiles(start_response, profiles, max_profiles, environ.get("QUERY_STRING", ""))
        return _plain(start_response, "404 Not Found", f"not found; metrics are at {telemetry_path}\n")

    return route


def _metrics(registry: CollectorRegistry) -> Callable:
    """prometheus_client's exposition formats, gzip and name[] filters, with concurrent scrapes shared."""
    shared: dict[str, Fresh] = {}
    lock = threading.Lock()

    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        params = parse_qs(environ.get("QUERY_STRING", ""))
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))

        def render(source) -> tuple[bytes, ...]:
            # prometheus_client's format, with the big families' lines written directly.
            return exposition.encode(list(source.collect()), encoder, content_type)

        with lock:
            # The content type echoes the version the client asked for: only a few are shared.
            fresh = shared.get(content_type)
            if fresh is None and len(shared) < MAX_SHARED_FORMATS:
                fresh = shared[content_type] = Fresh(lambda: render(registry))
        if "name[]" in params:
            output = render(registry.restricted_registry(params["name[]"]))
        elif fresh is None:
            output = render(registry)
        else:
            output = fresh.get()
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
            output = (gzipped(output),)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return list(output)

    serve.shared = shared  # type: ignore[attr-defined]  # for tests
    return serve


def gzipped(chunks: Iterable[bytes]) -> bytes:
    """The chunks as one gzip stream, compressed one at a time (so never joined uncompressed), at
    level 6, prometheus_client's own."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, GZIP_WBITS)
    return b"".join([*map(compressor.compress, chunks), compressor.flush()])


def hardened(application: Callable) -> Callable:
    """Every response: nosniff, a Content-Length, and no body for HEAD."""

    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if head:
            environ = {**environ, "REQUEST_METHOD": "GET"}
        response: list = []
        chunks = list(application(environ, lambda status, headers, exc_info=None: response.extend((status,
                                                                                                     headers))))
        status, headers = response
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "x-content-type-options")]
        headers += [("Content-Length", str(sum(map(len, chunks)))), ("X-Content-Type-Options", "nosniff")]
        start_response(status, headers)
        return [] if head else chunks

    return serve


def _profiles(start_response: Callable, profiles: Profiles, limit: int, query: str) -> list[bytes]:
    """The first `limit` workloads' profiles (saying how many were left out), or one's with ?comm=NAME
    (unit, process, container, as unused.by keys them), in any run format."""
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8)
    except ValueError as err:
        return _plain(start_response, "400 Bad Request", f"bad query string: {err}\n")
    reply = profile_query.answer(params, profiles, limit)
    start_response(reply.status, [("Content-Type", reply.content_type)])
    return [reply.body]


def _plain(start_response: Callable, status: str, text: str, extra: Optional[list] = None) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *(extra or [])])
    return [text.encode()]
