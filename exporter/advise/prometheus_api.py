"""A client for Prometheus's HTTP query API (and Thanos's or Mimir's, which serve the same one)."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import Optional

from exporter import config

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 << 20


@dataclass(frozen=True)
class BasicAuth:
    username: str = ""
    password: str = ""
    password_file: str = ""


@dataclass(frozen=True)
class Authorization:
    type: str = "Bearer"
    credentials: str = ""
    credentials_file: str = ""


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class HttpConfig:
    """The part of Prometheus's http_config (promtool's --http.config.file) that a query needs."""

    basic_auth: BasicAuth = BasicAuth()
    authorization: Authorization = Authorization()
    tls_config: TlsConfig = TlsConfig()


class ApiError(Exception):
    """A query that got no answer: unreachable is True when Prometheus was never reached."""

    def __init__(self, message: str, unreachable: bool):
        super().__init__(message)
        self.unreachable = unreachable


def load_http_config(path: str) -> HttpConfig:
    """--http.config.file; ConfigError with every problem. File paths are relative to the file."""
    data = config.load_yaml(path)
    http = config.build(HttpConfig, {} if data is None else data, path)
    problems = []
    auth, bearer = http.basic_auth, http.authorization
    if auth.password and auth.password_file:
        problems.append("basic_auth: password and password_file are exclusive")
    if bearer.credentials and bearer.credentials_file:
        problems.append("authorization: credentials and credentials_file are exclusive")
    if auth.username and (bearer.credentials or bearer.credentials_file):
        problems.append("basic_auth and authorization are exclusive")
    if bool(http.tls_config.cert_file) != bool(http.tls_config.key_file):
        problems.append("tls_config: cert_file and key_file go together")
    if problems:
        raise config.ConfigError(path, problems)
    here = os.path.dirname(os.path.abspath(path))

    def rel(value: str) -> str:
        return os.path.join(here, value) if value else ""

    return HttpConfig(replace(auth, password_file=rel(auth.password_file)),
                      replace(bearer, credentials_file=rel(bearer.credentials_file)),
                      replace(http.tls_config, **{k: rel(getattr(http.tls_config, k))
                                                  for k in ("ca_file", "cert_file", "key_file")}))


def check_url(url: str) -> str:
    """The base URL without a trailing slash; ValueError saying what is wrong with it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--prometheus must be an http:// or https:// URL with a host (got {url!r})")
    if parts.query or parts.fragment:
        raise ValueError(f"--prometheus takes no query or fragment (got {url!r})")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"--prometheus has a bad port (got {url!r})") from None
    return url.rstrip("/")


class Client:
    """Instant queries; every failure is an ApiError of one line."""

    def __init__(self, url: str, http: HttpConfig = HttpConfig(), timeout: float = 60):
        self.url = check_url(url)
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        credential = _authorization(http)
        if credential:
            self.headers["Authorization"] = credential
        self.context = _tls_context(http.tls_config) if self.url.startswith("https:") else None

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant query's vector: (labels, value) per series."""
        log.debug("query at %.3f: %s", at, expr)
        body = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"}).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/query", data=body, headers=self.headers)
        answer = self._answer(request)
        data = answer.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise ApiError(f"{self.url} did not answer with a vector: not a Prometheus query API?", False)
        try:
            return [(dict(s["metric"]), float(s["value"][1])) for s in data["result"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise ApiError(f"{self.url} answered with samples of an unknown shape", False) from None

    def _answer(self, request: urllib.request.Request) -> dict:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                return _json(response.read(MAX_ANSWER_BYTES), self.url, response.status)
        except urllib.error.HTTPError as err:
            answer = _json(err.read(MAX_ANSWER_BYTES), self.url, err.code, quiet=True)
            why = answer.get("error") or err.reason
            raise ApiError(f"Prometheus at {self.url} answered {err.code}: {_one_line(str(why))}", False) from None
        except urllib.error.URLError as err:
            raise ApiError(f"cannot reach Prometheus at {self.url}: {_reason(err.reason)}", True) from None
        except (socket.timeout, TimeoutError):
            raise ApiError(f"Prometheus at {self.url} did not answer within {self.timeout:g}s", True) from None
        except (OSError, ssl.SSLError) as err:
            raise ApiError(f"cannot reach Prometheus at {self.url}: {_reason(err)}", True) from None


def _json(raw: bytes, url: str, status: int, quiet: bool = False) -> dict:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        if quiet:
            return {}
        raise ApiError(f"{url} answered {status} with no Prometheus API JSON", False)
    if answer.get("status") == "error" and not quiet:
        raise ApiError(f"Prometheus at {url} answered with an error: {_one_line(str(answer.get('error')))}", False)
    return answer


def _authorization(http: HttpConfig) -> Optional[str]:
    """The Authorization header, reading password and token files now, as Prometheus does."""
    auth, bearer = http.basic_auth, http.authorization
    if auth.username:
        password = _read_secret(auth.password_file, "basic_auth.password_file") if auth.password_file else auth.password
        return "Basic " + base64.b64encode(f"{auth.username}:{password}".encode()).decode()
    token = _read_secret(bearer.credentials_file, "authorization.credentials_file") if bearer.credentials_file \
        else bearer.credentials
    return f"{bearer.type} {token}" if token else None


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise config.ConfigError(path, [f"{what}: cannot read it: {getattr(err, 'strerror', None) or err}"]) from None


def _tls_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:
        if tls.ca_file:
            context.load_verify_locations(tls.ca_file)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as err:
        raise config.ConfigError(tls.ca_file or tls.cert_file, [f"tls_config: cannot load it: {_reason(err)}"]) from None
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reason(err: object) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        return f"TLS: {err.reason}"
    return getattr(err, "strerror", None) or str(err)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
