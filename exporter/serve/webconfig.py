"""--web.config.file in Prometheus exporter-toolkit's format: TLS and basic auth for the endpoint."""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import hashlib
import hmac
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from exporter import config

log = logging.getLogger(__name__)

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# $2a$, $2b$ or $2y$, a cost of 04 to 31, then 22 characters of salt and 31 of hash.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
BCRYPT_MAX_PASSWORD = 72  # bytes; bcrypt ignores or refuses the rest


def _bcrypt_hashes(users: dict) -> Optional[str]:
    bad = [user for user, hashed in users.items() if not BCRYPT_HASH.fullmatch(hashed)]
    if bad:
        return (f"the password of {bad[0]!r} is not a bcrypt hash ($2a$, $2b$ or $2y$, a cost of 04 to 31, "
                "53 characters of salt and hash)")
    return None


@dataclass(frozen=True)
class TlsServerConfig:
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = config.checked("NoClientCert", config.one_of(CLIENT_AUTH))
    client_ca_file: str = ""
    min_version: str = config.checked("TLS12", config.one_of(TLS_VERSIONS))
    max_version: str = config.checked("TLS13", config.one_of(TLS_VERSIONS))


@dataclass(frozen=True)
class WebConfig:
    tls_server_config: TlsServerConfig = TlsServerConfig()
    basic_auth_users: dict[str, str] = field(default_factory=dict, metadata={"check": _bcrypt_hashes})


def load(path: str) -> WebConfig:
    """Read and check a web config file; ConfigError lists every problem, files included."""
    data = config.load_yaml(path)
    web = config.build(WebConfig, {} if data is None else data, path)
    problems = _tls_problems(web.tls_server_config)
    if problems:
        raise config.ConfigError(path, problems)
    return _relative_to(web, os.path.dirname(os.path.abspath(path)))


def _tls_problems(tls: TlsServerConfig) -> list[str]:
    problems = []
    if bool(tls.cert_file) != bool(tls.key_file):
        problems.append("tls_server_config: cert_file and key_file go together")
    if tls.client_ca_file and tls.client_auth_type == "NoClientCert":
        problems.append("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert")
    if tls.client_auth_type in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven") and not tls.client_ca_file:
        problems.append(f"tls_server_config: client_auth_type {tls.client_auth_type} needs client_ca_file")
    if tls.client_auth_type != "NoClientCert" and not tls.cert_file:
        problems.append("tls_server_config: client certificates need TLS (cert_file and key_file)")
    versions = list(TLS_VERSIONS)
    if tls.min_version in versions and tls.max_version in versions and \
            versions.index(tls.min_version) > versions.index(tls.max_version):
        problems.append(f"tls_server_config: min_version {tls.min_version} is above max_version {tls.max_version}")
    return problems


def _relative_to(web: WebConfig, directory: str) -> WebConfig:
    """Paths in the file are relative to the file, as in exporter-toolkit."""
    tls = web.tls_server_config
    paths = {
        name: os.path.join(directory, getattr(tls, name))
        for name in ("cert_file", "key_file", "client_ca_file")
        if getattr(tls, name)
    }
    return dataclasses.replace(web, tls_server_config=dataclasses.replace(tls, **paths))


def ssl_context(tls: TlsServerConfig, source: str) -> Optional[ssl.SSLContext]:
    """The server's TLS context, or None without TLS; ConfigError when a file does not load.

    The client_auth_type values mean what they mean in Go's crypto/tls, as in exporter-toolkit:
    RequestClientCert and RequireAnyClientCert take any certificate, verified by no CA.
    """
    if not tls.cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = TLS_VERSIONS[tls.min_version]
        context.maximum_version = TLS_VERSIONS[tls.max_version]
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError, ValueError) as err:
        raise config.ConfigError(source, [f"tls_server_config: cannot load certificates: {_reason(err)}"]) from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
        problem = _accept_any_client_certificate(context)
        if problem:
            raise config.ConfigError(source, [f"tls_server_config: client_auth_type {tls.client_auth_type}: {problem}"])
    return context


def _reason(err: Exception) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        return f"{err.reason} ({err.library or 'ssl'})"
    return getattr(err, "strerror", None) or str(err)


# Python's ssl module has no verify callback; OpenSSL's is set on the context's SSL_CTX, which
# CPython keeps right after the object header. Both are checked against what Python reports
# before anything is changed.
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ANY = _VERIFY_CALLBACK(lambda preverified, store: 1)


def _accept_any_client_certificate(context: ssl.SSLContext) -> Optional[str]:
    """Make OpenSSL take any client certificate the verify mode asks for; None, or why it could not."""
    try:
        import _ssl

        libssl = ctypes.CDLL(getattr(_ssl, "__file__", None))
        libssl.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        libssl.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        libssl.SSL_CTX_get_options.restype = ctypes.c_uint64
        libssl.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
    except (OSError, AttributeError) as err:
        return f"this Python's OpenSSL cannot be reached ({err})"
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    expected_mode = {ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[context.verify_mode]
    if not pointer or libssl.SSL_CTX_get_verify_mode(pointer) != expected_mode or \
            libssl.SSL_CTX_get_options(pointer) != int(context.options):
        return "this Python's ssl module is laid out differently; cannot accept unverified certificates"
    libssl.SSL_CTX_set_verify(pointer, expected_mode, _ACCEPT_ANY)
    return None


class Credentials:
    """basic_auth_users, checked as exporter-toolkit does: same cost for unknown users, hits cached."""

    def __init__(self, users: dict[str, str]):
        import bcrypt  # only when basic auth is configured

        self.checkpw = bcrypt.checkpw
        self.users = {user: hashed.encode() for user, hashed in users.items()}
        # An unknown user is checked against the costliest real hash (and refused whatever the
        # result), so that the time taken does not tell which users exist.
        self.dummy = max(self.users.values(), key=lambda hashed: int(hashed[4:6]))
        # bcrypt is slow on purpose; credentials that passed are remembered, by digest only.
        self.accepted: set[bytes] = set()
        self.lock = threading.Lock()

    def check(self, user: str, password: bytes) -> bool:
        hashed = self.users.get(user)
        digest = hashlib.sha256((hashed or self.dummy) + b"\0" + user.encode() + b"\0" + password).digest()
        if hashed is not None:
            with self.lock:
                if any(hmac.compare_digest(digest, seen) for seen in self.accepted):
                    return True
        usable = len(password) <= BCRYPT_MAX_PASSWORD and b"\0" not in password
        try:
            # A password bcrypt cannot take is compared truncated, for the time, and refused.
            matched = self.checkpw(password[:BCRYPT_MAX_PASSWORD].replace(b"\0", b""), hashed or self.dummy)
        except ValueError as err:  # a hash bcrypt refuses although it looked right
            log.warning("cannot check the password of user %r: %s", user, err)
            return False
        if not (matched and usable and hashed is not None):
            return False
        with self.lock:
            self.accepted.add(digest)
        return True


class BasicAuth:
    """WSGI middleware: with basic_auth_users, every path needs a user and password from them."""

    def __init__(self, app: Callable, users: dict[str, str]):
        self.app = app
        self.credentials: Optional[Credentials] = None
        self.set_users(users)

    def set_users(self, users: dict[str, str]) -> None:
        """Use these users from now on (none: no authentication)."""
        self.credentials = Credentials(users) if users else None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        credentials = self.credentials
        if credentials is None or self._authorized(credentials, environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        start_response("401 Unauthorized", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("WWW-Authenticate", 'Basic realm="capability-exporter"'),
        ])
        return [b"Unauthorized\n"]

    @staticmethod
    def _authorized(credentials: Credentials, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return bool(sep) and credentials.check(user, password.encode())
