"""--web.config.file in Prometheus exporter-toolkit's format: TLS and basic auth for the endpoint."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import ssl
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from . import config

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
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def _bcrypt_hashes(users: dict) -> Optional[str]:
    bad = [user for user, hashed in users.items() if not hashed.startswith(BCRYPT_PREFIXES)]
    return f"the password of {bad[0]!r} is not a bcrypt hash ($2a$, $2b$ or $2y$)" if bad else None


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
    """The server's TLS context, or None without TLS; ConfigError when a file does not load."""
    if not tls.cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError) as err:
        raise config.ConfigError(source, [f"tls_server_config: cannot load certificates: {err}"]) from None
    return context


class BasicAuth:
    """WSGI middleware: every path needs a user and password from basic_auth_users."""

    def __init__(self, app: Callable, users: dict[str, str]):
        import bcrypt  # only when basic auth is configured

        self.app = app
        self.users = {user: hashed.encode() for user, hashed in users.items()}
        self.checkpw = bcrypt.checkpw
        # bcrypt is slow on purpose; remember credentials already checked, by digest only.
        self.accepted: set[bytes] = set()
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        start_response("401 Unauthorized", [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("WWW-Authenticate", 'Basic realm="capability-exporter"'),
        ])
        return [b"Unauthorized\n"]

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        digest = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with self.lock:
            if any(hmac.compare_digest(digest, seen) for seen in self.accepted):
                return True
        if not self.checkpw(password.encode(), hashed):
            return False
        with self.lock:
            self.accepted.add(digest)
        return True
