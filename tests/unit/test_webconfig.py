"""Basic auth as exporter-toolkit does it, TLS settings checked at start-up, and the unit's file limit."""

import base64
import logging
import re

import bcrypt
import pytest

from exporter.serve import httpd, webconfig
from support import ROOT

PASSWORD = b"s3cret-scrape"
HASHED = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4)).decode()


def counting(credentials: webconfig.Credentials) -> list:
    calls = []
    checkpw = credentials.checkpw

    def counted(password, hashed):
        calls.append(hashed)
        return checkpw(password, hashed)

    credentials.checkpw = counted
    return calls


def test_a_successful_check_is_remembered_and_a_failed_one_is_not():
    credentials = webconfig.Credentials({"alice": HASHED})
    calls = counting(credentials)
    assert credentials.check("alice", PASSWORD) and credentials.check("alice", PASSWORD)
    assert not credentials.check("alice", b"wrong") and not credentials.check("alice", b"wrong")
    assert len(calls) == 3


def test_an_unknown_user_costs_a_bcrypt_check_against_a_real_hash():
    credentials = webconfig.Credentials({"alice": HASHED})
    calls = counting(credentials)
    assert not credentials.check("mallory", PASSWORD)
    assert calls == [HASHED.encode()]


@pytest.mark.parametrize("password", [b"x" * 100, PASSWORD + b"x" * 100, b"a\0b", b""])
def test_passwords_bcrypt_cannot_take_are_refused_not_raised(password):
    credentials = webconfig.Credentials({"alice": HASHED})
    calls = counting(credentials)
    assert not credentials.check("alice", password)
    assert len(calls) == 1  # the same cost as any wrong password


def test_a_password_whose_first_72_bytes_match_is_still_refused():
    long = b"p" * 72
    credentials = webconfig.Credentials({"alice": bcrypt.hashpw(long, bcrypt.gensalt(rounds=4)).decode()})
    assert credentials.check("alice", long) and not credentials.check("alice", long + b"more")


def call(auth: webconfig.BasicAuth, header: str) -> str:
    status = []
    auth({"HTTP_AUTHORIZATION": header}, lambda s, headers: status.append(s))
    return status[0]


@pytest.mark.parametrize("header", ["", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"alice").decode(),
                                    "Basic " + base64.b64encode(b"\xff:\xfe").decode()])
def test_malformed_authorization_headers_get_401(header):
    auth = webconfig.BasicAuth(lambda environ, start: start("200 OK", []) or [b""], {"alice": HASHED})
    assert call(auth, header) == "401 Unauthorized"


def test_users_can_be_replaced_and_removed():
    auth = webconfig.BasicAuth(lambda environ, start: start("200 OK", []) or [b""], {"alice": HASHED})
    good = "Basic " + base64.b64encode(b"alice:" + PASSWORD).decode()
    assert call(auth, good) == "200 OK"
    auth.set_users({"bob": HASHED})
    assert call(auth, good) == "401 Unauthorized"
    auth.set_users({})
    assert call(auth, "") == "200 OK"


def test_tls_version_order_and_client_auth_needs():
    def problems(**tls):
        return webconfig._tls_problems(webconfig.TlsServerConfig(cert_file="c", key_file="k", **tls))

    assert problems(min_version="TLS13", max_version="TLS12") == [
        "tls_server_config: min_version TLS13 is above max_version TLS12"]
    assert problems(min_version="TLS13", max_version="TLS13") == []
    assert problems(client_auth_type="RequireAnyClientCert") == []  # needs no CA, as in Go
    assert problems(client_auth_type="RequireAndVerifyClientCert") == [
        "tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file"]


def test_failures_are_logged_a_few_at_a_time_then_counted(caplog):
    noisy = httpd.RateLimitedLog(logging.getLogger("test"), burst=3, interval=3600)
    with caplog.at_level(logging.WARNING):
        for i in range(50):
            noisy.warn("failed TLS handshakes", "handshake %d failed", i)
    assert [r.getMessage() for r in caplog.records] == ["handshake 0 failed", "handshake 1 failed",
                                                        "handshake 2 failed"]


def test_the_systemd_unit_allows_the_files_the_server_may_hold():
    unit = (ROOT / "deploy" / "systemd" / "capability-exporter.service").read_text()
    limit = int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M)[1])
    assert limit >= httpd.Limits().files_needed()
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)
