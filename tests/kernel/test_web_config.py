"""--web.config.file on the real exporter: TLS, basic auth and client certificates."""

import base64
import http.client
import signal
import socket
import ssl
import statistics
import time
import urllib.error
import urllib.request

import bcrypt
import pytest
import yaml

from support import make_pki, openssl

# TLS, client certificates and basic auth are user space over a loopback socket: no kernel or
# attach mode changes them, so the kernel matrix leaves them to the host (each start of the
# exporter costs half a minute in an emulated guest).
pytestmark = pytest.mark.kernel_independent

USER, PASSWORD = "prometheus", "s3cret-scrape"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def web_config(pki, name: str = "", rounds: int = 4, tls_files: bool = True, **tls) -> str:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=rounds)).decode()
    path = pki / f"web-{name or len(tls)}.yml"
    # Relative paths: exporter-toolkit resolves them against the web config's directory.
    data = {"basic_auth_users": {USER: hashed}}
    if tls_files:
        data["tls_server_config"] = {"cert_file": "server.crt", "key_file": "server.key", **tls}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def self_signed(directory, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def status_of(exporter, path: str, auth: str, context=None) -> int:
    conn = (http.client.HTTPSConnection("127.0.0.1", exporter.port, context=context, timeout=30) if context
            else http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=30))
    try:
        conn.request("GET", path, headers={"Authorization": auth})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def der(path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def client_context(pki, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if with_cert:
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return context


def test_tls_with_basic_auth(start_exporter, pki):
    exporter = start_exporter(None, "--web.config.file", web_config(pki), tls=client_context(pki),
                              auth=(USER, PASSWORD))
    assert "capability_exporter_build_info" in exporter.get("/metrics")
    for auth in ((USER, "wrong"), ("nobody", PASSWORD)):
        with pytest.raises(urllib.error.HTTPError) as err:
            exporter.get("/metrics", auth=auth)
        assert err.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(exporter.url + "/metrics", context=client_context(pki), timeout=10)
    assert err.value.code == 401 and err.value.headers["WWW-Authenticate"].startswith("Basic")


def test_plain_http_to_the_tls_port_gets_400_and_one_log_line(start_exporter, pki):
    exporter = start_exporter(None, "--web.config.file", web_config(pki), tls=client_context(pki),
                              auth=(USER, PASSWORD))
    plain = exporter.url.replace("https://", "http://")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(plain + "/metrics", timeout=10).read()
    assert err.value.code == 400 and b"HTTPS only" in err.value.read()
    assert "capability_exporter_build_info" in exporter.get("/metrics")  # still serving
    exporter.stop()
    assert "Traceback" not in exporter.stderr
    assert len([line for line in exporter.stderr.splitlines() if "plain HTTP" in line]) == 1, exporter.stderr


def test_failed_handshakes_are_one_line_each_and_rate_limited(start_exporter, pki):
    exporter = start_exporter(None, "--web.config.file", web_config(pki), tls=client_context(pki),
                              auth=(USER, PASSWORD))
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a TLS record that is no ClientHello
            sock.recv(100)
    assert "capability_exporter_build_info" in exporter.get("/metrics")
    exporter.stop()
    failed = [line for line in exporter.stderr.splitlines() if "TLS handshake with" in line]
    assert 1 <= len(failed) <= 5 and "Traceback" not in exporter.stderr, exporter.stderr


def test_a_password_of_100_bytes_gets_401(start_exporter, pki):
    exporter = start_exporter(None, "--web.config.file", web_config(pki, "plain", tls_files=False),
                              auth=(USER, PASSWORD))
    assert status_of(exporter, "/metrics", basic(USER, "p" * 100)) == 401
    assert status_of(exporter, "/metrics", basic(USER, PASSWORD + "p" * 100)) == 401
    assert status_of(exporter, "/metrics", basic(USER, PASSWORD)) == 200
    exporter.stop()
    assert "Traceback" not in exporter.stderr


def test_unknown_users_take_as_long_as_wrong_passwords(start_exporter, pki):
    """Medians of 50 each, interleaved, at a bcrypt cost that takes milliseconds."""
    exporter = start_exporter(None, "--web.config.file", web_config(pki, "cost8", rounds=8, tls_files=False),
                              auth=(USER, PASSWORD))
    times = {"unknown user": [], "wrong password": []}
    for _ in range(50):
        for kind, auth in (("unknown user", basic("nobody-here", "guess")), ("wrong password", basic(USER, "guess"))):
            start = time.perf_counter()
            assert status_of(exporter, "/metrics", auth) == 401
            times[kind].append(time.perf_counter() - start)
    unknown, wrong = (statistics.median(times[kind]) for kind in times)
    assert max(unknown, wrong) / min(unknown, wrong) < 2, f"unknown user {unknown * 1000:.1f} ms, " \
                                                           f"wrong password {wrong * 1000:.1f} ms"


@pytest.mark.parametrize("auth_type", ["RequireAnyClientCert", "RequestClientCert"])
def test_any_client_certificate_is_taken_without_a_ca(start_exporter, pki, auth_type):
    """As in Go's crypto/tls, which exporter-toolkit uses: no CA verifies these."""
    self_signed(pki, "stranger")
    config = web_config(pki, auth_type, client_auth_type=auth_type)
    context = client_context(pki)
    context.load_cert_chain(str(pki / "stranger.crt"), str(pki / "stranger.key"))
    exporter = start_exporter(None, "--web.config.file", config, tls=context, auth=(USER, PASSWORD))
    assert "capability_exporter_build_info" in exporter.get("/metrics")
    if auth_type == "RequireAnyClientCert":
        exporter.tls = client_context(pki)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            exporter.get("/metrics")
    else:
        exporter.tls = client_context(pki)
        assert "capability_exporter_build_info" in exporter.get("/metrics")


def test_sighup_serves_a_rotated_certificate_and_keeps_serving_on_a_bad_file(start_exporter, pki, tmp_path):
    for name in ("first", "second"):
        self_signed(tmp_path, name)
    (tmp_path / "server.crt").write_bytes((tmp_path / "first.crt").read_bytes())
    (tmp_path / "server.key").write_bytes((tmp_path / "first.key").read_bytes())
    config = tmp_path / "web.yml"
    config.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}}))
    context = ssl.create_default_context(cafile=str(tmp_path / "first.crt"))
    exporter = start_exporter(None, "--web.config.file", str(config), tls=context)
    assert served_certificate(exporter.port) == der(tmp_path / "first.crt")
    (tmp_path / "server.crt").write_bytes((tmp_path / "second.crt").read_bytes())
    (tmp_path / "server.key").write_bytes((tmp_path / "second.key").read_bytes())
    exporter.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while served_certificate(exporter.port) != der(tmp_path / "second.crt"):
        assert time.monotonic() < deadline, "the rotated certificate was not served after SIGHUP"
        time.sleep(0.1)
    config.write_text("tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n")
    exporter.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert served_certificate(exporter.port) == der(tmp_path / "second.crt")
    assert exporter.proc.poll() is None
    assert exporter.stop() == 0
    lines = exporter.stderr.splitlines()
    assert len([line for line in lines if "received SIGHUP; re-read" in line]) == 1, exporter.stderr
    assert len([line for line in lines if "received SIGHUP; kept the web config in use" in line]) == 1
    assert "Traceback" not in exporter.stderr


def test_sighup_without_a_web_config_is_logged_and_changes_nothing(start_exporter):
    exporter = start_exporter(None)
    exporter.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert "capability_exporter_build_info" in exporter.get("/metrics")
    assert exporter.stop() == 0
    assert "received SIGHUP; no --web.config.file to re-read" in exporter.stderr


@pytest.mark.parametrize("path", ["/metrics", "/"])
def test_head_gets_200_and_no_body(shared_exporter, path):
    conn = http.client.HTTPConnection("127.0.0.1", shared_exporter.port, timeout=30)
    try:
        conn.request("HEAD", path)
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        assert int(response.headers["Content-Length"]) > 0
        assert response.headers["Server"] == "capability-exporter"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        # The connection is still in step: a GET on it gets its body.
        conn.request("GET", path)
        assert len(conn.getresponse().read()) > 0
    finally:
        conn.close()


def test_client_certificate_required(start_exporter, pki):
    config = web_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt")
    exporter = start_exporter(None, "--web.config.file", config, tls=client_context(pki, with_cert=True),
                              auth=(USER, PASSWORD))
    assert "capability_exporter_build_info" in exporter.get("/metrics")
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        exporter.tls = client_context(pki)
        exporter.get("/metrics")
