"""--web.config.file on the real exporter: TLS, basic auth and client certificates."""

import ssl
import subprocess
import urllib.error
import urllib.request

import bcrypt
import pytest
import yaml

# No attach mode changes how these are served or computed: once per kernel in the matrix.
pytestmark = pytest.mark.any_mode

USER, PASSWORD = "prometheus", "s3cret-scrape"


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=d)
    return d


def web_config(pki, **tls) -> str:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = pki / f"web-{len(tls)}.yml"
    # Relative paths: exporter-toolkit resolves them against the web config's directory.
    path.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", **tls},
        "basic_auth_users": {USER: hashed},
    }))
    return str(path)


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


def test_plain_http_to_the_tls_port_fails(start_exporter, pki):
    exporter = start_exporter(None, "--web.config.file", web_config(pki), tls=client_context(pki),
                              auth=(USER, PASSWORD))
    plain = exporter.url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)) as err:
        urllib.request.urlopen(plain + "/metrics", timeout=10).read()
    assert not isinstance(err.value, urllib.error.HTTPError)


def test_client_certificate_required(start_exporter, pki):
    config = web_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt")
    exporter = start_exporter(None, "--web.config.file", config, tls=client_context(pki, with_cert=True),
                              auth=(USER, PASSWORD))
    assert "capability_exporter_build_info" in exporter.get("/metrics")
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        exporter.tls = client_context(pki)
        exporter.get("/metrics")
