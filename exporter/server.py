"""The HTTP side: a landing page at /, the metrics at the telemetry path, and /profiles."""

from __future__ import annotations

import html
import logging
import socket
import ssl
from socketserver import ThreadingMixIn
from typing import Callable, Iterable, Optional
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry

from . import __version__, exposition, profile_query

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


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _server_class(host: str) -> type:
    """A server class of the address family the host resolves to (IPv6 when it is one)."""
    family = socket.AF_INET
    if host:
        try:
            family = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        except socket.gaierror as err:
            raise ListenError(f"cannot resolve listen host {host!r}: {err.strerror}") from None
    return type("Server", (_ThreadingServer,), {"address_family": family})


def app(registry: CollectorRegistry, telemetry_path: str, mode: Callable[[], str],
        profiles: Optional[Callable[[], dict[str, dict]]] = None) -> Callable:
    metrics = exposition.make_wsgi_app(registry)

    def route(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _plain(start_response, "405 Method Not Allowed", "only GET and HEAD are served\n")
        if path == telemetry_path:
            return metrics(environ, start_response)
        if path == "/":
            page = LANDING.format(version=__version__, mode=html.escape(mode()), path=html.escape(telemetry_path))
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [page.encode()]
        if path == "/profiles" and profiles is not None:
            return _profiles(start_response, profiles, environ.get("QUERY_STRING", ""))
        return _plain(start_response, "404 Not Found", f"not found; metrics are at {telemetry_path}\n")

    return route


def _profiles(start_response: Callable, profiles: Callable[[], dict[str, dict]], query: str) -> list[bytes]:
    """All workloads' profiles, or one's with ?comm=NAME (unit, process, container), in any run format."""
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8)
    except ValueError as err:
        return _plain(start_response, "400 Bad Request", f"bad query string: {err}\n")
    reply = profile_query.answer(params, profiles())
    start_response(reply.status, [("Content-Type", reply.content_type)])
    return [reply.body]


def _plain(start_response: Callable, status: str, text: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [text.encode()]


def bind(address: str, application: Callable, tls: Optional[ssl.SSLContext] = None) -> WSGIServer:
    """Bind and listen now, so that a busy port fails before any BPF work is done."""
    host, port = parse_address(address)
    try:
        httpd = make_server(host, port, application, server_class=_server_class(host), handler_class=_QuietHandler)
    except OSError as err:
        raise ListenError(f"cannot listen on {address}: {err.strerror}") from None
    if tls is not None:
        # The handshake happens in the request's thread, not in the accept loop.
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    return httpd
