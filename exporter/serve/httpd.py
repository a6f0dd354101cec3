"""The HTTP server: cheroot's WSGI server with bounded connections, timeouts and TLS handshakes in workers."""

from __future__ import annotations

import dataclasses
import errno
import logging
import queue
import resource
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from cheroot import connections, server as cheroot_server, wsgi
from cheroot.makefile import MakeFile

log = logging.getLogger(__name__)

SERVER_NAME = "capability-exporter"  # the Server: header, without a version
BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
# Out of file descriptors: accept again only after this pause, as Go's net/http does.
ACCEPT_BACKOFF = 0.05
# Requests larger than these are refused (413/414): the endpoint serves GETs without bodies.
MAX_HEADER_BYTES = 16 << 10
MAX_BODY_BYTES = 64 << 10


def plain_answer(status: str, text: str, *headers: str) -> bytes:
    """A whole text/plain response that closes the connection, with the headers every answer has."""
    body = text.encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}",
            "X-Content-Type-Options: nosniff", f"Server: {SERVER_NAME}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


OVERLOADED = plain_answer("503 Service Unavailable", "overloaded; try again\n", "Retry-After: 1")


@dataclass(frozen=True)
class Limits:
    """How many connections and requests the server holds, and for how long."""

    max_connections: int = 512
    # Scrapes wait for one shared collection, so a few workers serve many scrapers; the queue
    # holds the rest. Each worker that served a scrape keeps some freed memory of its own
    # (malloc's per-thread cache): 64 workers held 1.5 MB more than 16 after 10k-series scrapes.
    workers: int = 16
    queued_requests: int = 256  # read requests waiting for a worker; past it, 503 at once
    header_timeout: float = 10.0  # from a request's first byte to the end of its headers
    tls_handshake_timeout: float = 10.0
    idle_timeout: float = 120.0  # a connection with nothing to read, new or kept alive
    io_timeout: float = 30.0  # one read or write on a socket, and a whole request's response
    # Counted as open files besides connections: workers' connections, queued ones, the process's own.
    reserved_files: int = 64

    def files_needed(self) -> int:
        return self.max_connections + self.workers + self.queued_requests + self.reserved_files


class TooFewFiles(Exception):
    """The open-file limit leaves too little for the server, even with fewer connections."""


def within_open_files(limits: Limits) -> Limits:
    """limits, after raising the soft open-file limit towards the hard one as Go programs do;
    with fewer connections (logged) if the hard limit is too low for them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.files_needed()
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limits
    soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft >= wanted:
        return limits
    fitting = soft - (wanted - limits.max_connections)
    if fitting < 16:
        raise TooFewFiles(f"the open-file limit ({soft}) is too low for the HTTP server; raise it (LimitNOFILE=)")
    log.warning("open-file limit %d: holding at most %d connections, not %d", soft, fitting, limits.max_connections)
    return dataclasses.replace(limits, max_connections=fitting)


class RateLimitedLog:
    """At most `burst` lines per `interval` seconds per kind; the rest are counted and said later."""

    def __init__(self, logger: logging.Logger, burst: int = 5, interval: float = 10.0):
        self.logger, self.burst, self.interval = logger, burst, interval
        self.lock = threading.Lock()
        self.windows: dict[str, tuple[float, int, int]] = {}  # kind -> (start, logged, suppressed)

    def warn(self, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        with self.lock:
            start, logged, suppressed = self.windows.get(kind, (now, 0, 0))
            if now - start >= self.interval:
                if suppressed:
                    self.logger.warning("%d more %s in the last %.0f s", suppressed, kind, now - start)
                start, logged, suppressed = now, 0, 0
            if logged < self.burst:
                logged += 1
                self.logger.warning(message, *args)
            else:
                suppressed += 1
            self.windows[kind] = (start, logged, suppressed)


class Deadlines:
    """Shuts down the sockets of reads that take too long: a blocked recv() then returns at once.

    A socket timeout bounds one recv(); a client that sends a byte a second never trips it.
    """

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.lock = threading.Lock()
        self.watched: dict[int, tuple[float, socket.socket, str]] = {}
        self.thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
        self.thread.start()

    @contextmanager
    def watch(self, sock: socket.socket, seconds: float, what: str) -> Iterator[None]:
        key = id(sock)
        with self.lock:
            self.watched[key] = (time.monotonic() + seconds, sock, what)
        try:
            yield
        finally:
            with self.lock:
                self.watched.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self.lock:
                late = [(key, sock, what) for key, (at, sock, what) in self.watched.items() if at <= now]
                for key, _, _ in late:
                    del self.watched[key]
            for _, sock, what in late:
                _shut(sock)
                log.debug("dropped a connection: %s took too long", what)


def _shut(sock: socket.socket) -> None:
    """shutdown(2) on the TCP socket itself, also under TLS, without touching the TLS object."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Request(cheroot_server.HTTPRequest):
    def parse_request(self) -> None:
        limits: Limits = self.server.limits
        with self.server.deadlines.watch(self.conn.socket, limits.header_timeout, "the request headers"):
            super().parse_request()

    def respond(self) -> None:
        with self.server.deadlines.watch(self.conn.socket, self.server.limits.io_timeout, "the response"):
            super().respond()

    def simple_response(self, status, msg: str = "") -> None:
        """cheroot's own answers (400, 408, 413, ...): the status alone, never the request echoed back."""
        status = str(status)
        if status.startswith("1"):
            return super().simple_response(status, msg)
        self.close_connection = True
        try:
            self.conn.wfile.write(plain_answer(status, status.split(" ", 1)[-1] + "\n"))
        except OSError:
            pass


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request
    waited = False  # has waited in the selector for its first bytes
    handshaken = False

    def communicate(self) -> bool:
        if isinstance(self.socket, ssl.SSLSocket) and not self.handshaken:
            if not self._handshake():
                return False
        return super().communicate()

    def _handshake(self) -> bool:
        """The TLS handshake, here in a worker and bounded in time, not in the accept loop."""
        server = self.server
        try:
            with server.deadlines.watch(self.socket, server.limits.tls_handshake_timeout, "the TLS handshake"):
                self.socket.do_handshake()
        except ssl.SSLError as err:
            if "http request" in str(err).lower():
                server.noisy.warn("failed TLS handshakes", "plain HTTP from %s to the TLS port; answered 400",
                                  self.remote_addr)
                self._plain_http_answer()
            else:
                server.noisy.warn("failed TLS handshakes", "TLS handshake with %s failed: %s",
                                  self.remote_addr, _ssl_reason(err))
            return False
        except OSError as err:
            server.noisy.warn("failed TLS handshakes", "TLS handshake with %s failed: %s", self.remote_addr,
                              err.strerror or type(err).__name__)
            return False
        self.handshaken = True
        self.ssl_env = {"wsgi.url_scheme": "https", "HTTPS": "on", "SSL_PROTOCOL": self.socket.version() or ""}
        return True

    def _close_kernel_socket(self) -> None:
        # cheroot lets unexpected shutdown errors escape, and a worker that raises stops the server.
        try:
            super()._close_kernel_socket()
        except OSError:
            pass

    def _plain_http_answer(self) -> None:
        try:
            socket.socket.send(self.socket, plain_answer("400 Bad Request", "This port speaks HTTPS only.\n"))
        except OSError:
            pass


def _ssl_reason(err: ssl.SSLError) -> str:
    return getattr(err, "reason", None) or (err.args[1] if len(err.args) > 1 else str(err))


class _Connections(connections.ConnectionManager):
    """cheroot's selector loop, with a bound on connections and the idle timeout of our own."""

    def _expire(self, threshold: float) -> None:
        super()._expire(time.time() - self.server.limits.idle_timeout)

    def _from_server_socket(self, server_socket):
        try:
            return super()._from_server_socket(server_socket)
        except OSError as err:
            if err.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            self.server.noisy.warn("accept failures", "cannot accept a connection: %s; closing the longest idle",
                                   err.strerror)
            self.evict_idle()
            time.sleep(ACCEPT_BACKOFF)
            return None

    def evict_idle(self) -> bool:
        """Close the connection that has waited longest with nothing to read; False if there is none."""
        idle = [(conn.last_used, fd, conn) for fd, conn in self.connections() if conn is not self.server]
        if not idle:
            return False
        _, fd, conn = min(idle, key=lambda entry: entry[0])
        self._selector.unregister(fd)
        conn.close()
        return True

    def connections(self) -> list:
        return list(self._selector.connections)


class Server(wsgi.Server):
    """cheroot's WSGI server on a socket bound beforehand, within Limits."""

    ConnectionClass = _Connection

    def __init__(self, sock: socket.socket, application: Callable, limits: Limits,
                 tls: Optional[ssl.SSLContext] = None):
        super().__init__(
            sock.getsockname()[:2], application,
            numthreads=limits.workers, max=limits.workers, server_name=SERVER_NAME,
            request_queue_size=BACKLOG, timeout=limits.io_timeout,
            accepted_queue_size=limits.queued_requests, accepted_queue_timeout=0,
        )
        self.bound_socket = sock
        self.limits = limits
        self.keep_alive_conn_limit = limits.max_connections
        self.max_request_header_size = MAX_HEADER_BYTES
        self.max_request_body_size = MAX_BODY_BYTES
        self.software = SERVER_NAME
        self.noisy = RateLimitedLog(log)
        self.deadlines = Deadlines()
        self.set_tls(tls)

    def set_tls(self, context: Optional[ssl.SSLContext]) -> None:
        """Serve new connections with this TLS context (None: plain HTTP); open ones keep theirs."""
        if context is None:
            self.ssl_adapter = None
            return
        self.ssl_adapter = _TlsAdapter(context)

    # cheroot binds in prepare(); the socket was bound before the BPF programs were loaded.
    def bind(self, family, type, proto=0):
        self.socket = self.bound_socket

    def prepare(self) -> None:
        super().prepare()
        default = self._connections
        self._connections = _Connections(self)
        default._selector.close()

    def process_conn(self, conn) -> None:
        """A new connection waits in the selector until it sends something: idle ones hold no worker."""
        if not conn.waited:
            conn.waited = True
            while self._connections._num_connections >= self.limits.max_connections:
                if not self._connections.evict_idle():
                    break
            self._connections.put(conn)
            return
        try:
            self.requests.put(conn)
        except queue.Full:
            self._refuse(conn)

    def _refuse(self, conn) -> None:
        """503 and close, here and now: the queue of requests for the workers is full."""
        self.noisy.warn("refused requests", "%d requests wait for a worker already; refused one with 503",
                        self.limits.queued_requests)
        try:
            if not isinstance(conn.socket, ssl.SSLSocket):
                conn.socket.send(OVERLOADED, socket.MSG_DONTWAIT)
            elif conn.handshaken:  # else a 503 would need a handshake first, for a client not served
                conn.socket.send(OVERLOADED)
        except OSError:
            pass
        conn.close()

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        # cheroot asks for tracebacks on errors from clients; one rate-limited line says enough.
        first = str(msg).strip().splitlines()[0] if str(msg).strip() else "error"
        if level >= logging.ERROR and not traceback:
            log.error("http server: %s", first)
        else:
            self.noisy.warn("http server errors", "http server: %s", first)

    def threads(self) -> int:
        return len(self.requests._threads)


class _TlsAdapter:
    """cheroot's TLS adapter interface: wraps accepted sockets without a handshake, which a worker does."""

    def __init__(self, context: ssl.SSLContext):
        self.context = context

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket):
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), {}

    def get_environ(self) -> dict:
        return {}

    makefile = staticmethod(MakeFile)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket of the host's address family; OSError if it cannot bind."""
    family = socket.AF_INET
    if host:
        family = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or "0.0.0.0", port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock

