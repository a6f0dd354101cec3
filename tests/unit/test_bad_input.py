"""Bad config files and flags: one clear line, exit status 2, never a traceback (the real CLI)."""

import pytest

from support import run_exporter

BAD_CONFIGS = [
    ("unknown top-level key", "probes: {mode: auto}\n", "probes: unknown key"),
    ("unknown nested key", "probe: {moed: auto}\n", "probe.moed: unknown key"),
    ("unknown mode", "probe: {mode: uprobe}\n", "probe.mode: must be one of auto, fexit, kprobe, tracepoint"),
    ("mode of wrong type", "probe: {mode: 3}\n", "probe.mode: must be str (got the number 3)"),
    ("bool as string", "probe: {count_noaudit: 'yes'}\n", "probe.count_noaudit: must be bool (got a string)"),
    ("zero map size", "maps: {checks_max_entries: 0}\n", "maps.checks_max_entries: must be at least 1 (got 0)"),
    ("negative map size", "maps: {checks_max_entries: -5}\n", "must be at least 1 (got -5)"),
    ("huge map size", "maps: {checks_max_entries: 100000000}\n", "must be at most 16777216"),
    ("bool as size", "maps: {checks_max_entries: true}\n", "must be int (got a boolean true)"),
    ("bad regex", "filters: {comm_exclude: ['ssh(']}\n", "bad regular expression 'ssh('"),
    ("regex list is a string", "filters: {comm_include: sshd}\n", "must be a list of str (got a string)"),
    ("uid not a number", "filters: {uids: [root]}\n", "filters.uids: item 0 must be int (got a string)"),
    ("negative uid", "filters: {uids: [-1]}\n", "filters.uids: item 0: must be at least 0 (got -1)"),
    ("pid zero", "filters: {pids: [0]}\n", "filters.pids: item 0: must be at least 1"),
    ("relative cgroup", "filters: {cgroup_prefix: system.slice}\n", "must be a cgroup v2 path starting with '/'"),
    ("section not a mapping", "labels: [uid]\n", "labels: must be a mapping (got a list)"),
    ("top level not a mapping", "- probe\n- maps\n", "the top level: must be a mapping (got a list)"),
    ("top level a scalar", "just text\n", "the top level: must be a mapping (got a string)"),
    ("not YAML", "probe: {mode: [auto\n", "not valid YAML at line"),
    ("two problems at once", "probe: {mode: x}\nlabels: {uid: 1}\n", "probe.mode: must be one of"),
    ("zero unused comms", "unused: {max_comms: 0}\n", "unused.max_comms: must be at least 1 (got 0)"),
    ("negative refresh", "unused: {refresh_seconds: -1}\n", "unused.refresh_seconds: must be at least 0"),
    ("bad allow-list regex", "unused: {comms: ['(']}\n", "unused.comms: item 0: bad regular expression"),
    ("unknown workload key", "unused: {by: pod}\n", "unused.by: must be one of comm, process, unit, container (got 'pod')"),
]


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("capability-exporter: error: ")
    return lines[0]


def _usage_error(tmp_path, flag: str, text) -> str:
    """Run the CLI with a file of this text (or bytes) behind flag; its one error line, after exit status 2."""
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    done = run_exporter(flag, str(path), "--config.check")
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert str(path) in line
    return line


@pytest.mark.parametrize("name, text, expected", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_clear_line_and_exit_2(tmp_path, name, text, expected):
    assert expected in _usage_error(tmp_path, "--config.file", text)


def test_two_problems_are_reported_in_the_same_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("probe: {mode: x}\nlabels: {uid: 1}\n")
    line = _one_error_line(run_exporter("--config.file", str(path)).stderr)
    assert "probe.mode" in line and "labels.uid: must be bool" in line


def test_missing_config_file(tmp_path):
    done = run_exporter("--config.file", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert "cannot read the file: No such file or directory" in _one_error_line(done.stderr)


def test_config_file_that_is_a_directory(tmp_path):
    done = run_exporter("--config.file", str(tmp_path))
    assert done.returncode == 2
    assert "cannot read the file: Is a directory" in _one_error_line(done.stderr)


BAD_FLAGS = [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--probe.mode", "uprobe"], "argument --probe.mode: invalid choice: 'uprobe'"),
    (["--log.level", "loud"], "argument --log.level: invalid choice: 'loud'"),
    (["--web.listen-address", "9661"], "is not host:port"),
    (["--web.listen-address", "127.0.0.1:99999"], "with a port from 1 to 65535"),
    (["--web.listen-address", "::1:9661"], "write an IPv6 host in brackets"),
    (["--web.telemetry-path", "metrics"], "--web.telemetry-path must start with '/'"),
    (["--config.file"], "argument --config.file: expected one argument"),
]


@pytest.mark.parametrize("args, expected", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_clear_line_and_exit_2(args, expected):
    done = run_exporter(*args)
    assert done.returncode == 2
    assert expected in _one_error_line(done.stderr)


BAD_WEB_CONFIGS = [
    ("not YAML", "tls_server_config: [\n", "not valid YAML"),
    ("unknown key", "tls_server_config: {cert_fil: x}\n", "tls_server_config.cert_fil: unknown key"),
    ("unknown client auth", "tls_server_config: {cert_file: a, key_file: b, client_auth_type: Always}\n",
     "client_auth_type: must be one of NoClientCert"),
    ("cert without key", "tls_server_config: {cert_file: a}\n", "cert_file and key_file go together"),
    ("CA without client auth", "tls_server_config: {cert_file: a, key_file: b, client_ca_file: c}\n",
     "client_ca_file is set but client_auth_type is NoClientCert"),
    ("missing certificate files", "tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n",
     "cannot load certificates"),
    ("plain-text password", "basic_auth_users: {alice: hunter2}\n", "the password of 'alice' is not a bcrypt hash"),
    ("users not a mapping", "basic_auth_users: [alice]\n", "basic_auth_users: must be a mapping of str to str"),
    ("bad TLS version", "tls_server_config: {cert_file: a, key_file: b, min_version: SSL3}\n",
     "min_version: must be one of TLS10"),
]


@pytest.mark.parametrize("name, text, expected", BAD_WEB_CONFIGS, ids=[c[0] for c in BAD_WEB_CONFIGS])
def test_bad_web_config_stops_start_up_with_one_line_and_exit_2(tmp_path, name, text, expected):
    line = _usage_error(tmp_path, "--web.config.file", text)
    assert "invalid web config" in line and expected in line


HASH = "$2b$04$" + "a" * 53  # well formed; no password matches it
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
# Files no config or web config should be: each gets one line and exit 2, not a traceback.
HOSTILE_FILES = [
    ("config not UTF-8", "--config.file", b"probe: {mode: \xff\xfe}\n", "not UTF-8 text: byte 14 is 0xff"),
    ("config in UTF-16", "--config.file", "probe: {}\n".encode("utf-16"), "not UTF-8 text"),
    ("config nested in flow style", "--config.file", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
     "nested more than 32 levels deep"),
    ("config nested in block style", "--config.file",
     "".join(f"{' ' * i}k{i}:\n" for i in range(500)).encode(), "nested more than 32 levels deep"),
    ("config of 2 MiB", "--config.file", b"# " + b"x" * (2 << 20) + b"\n", "larger than 1 MiB"),
    ("config duplicate section", "--config.file", b"probe: {mode: auto}\nprobe: {mode: kprobe}\n",
     "duplicate key 'probe'"),
    ("config duplicate nested key", "--config.file", b"maps:\n  checks_max_entries: 1\n  checks_max_entries: 2\n",
     "duplicate key 'checks_max_entries'"),
    ("config billion laughs", "--config.file", LAUGHS.encode(), "aliases (*a) are not supported"),
    ("config python tag", "--config.file", b"probe: !!python/object/apply:os.system ['true']\n",
     "could not determine a constructor"),
    ("config impossible date", "--config.file", b"probe: {mode: 2024-13-45}\n", "not valid YAML"),
    ("config huge repetition", "--config.file", b"filters: {comm_include: ['a{99999999999999999999}']}\n",
     "bad regular expression"),
    ("config binary tag", "--config.file", b"probe: {mode: !!binary aGk=}\n", "probe.mode: must be str (got bytes)"),
    ("web config not UTF-8", "--web.config.file", b"basic_auth_users: {\xc3\x28: x}\n", "not UTF-8 text"),
    ("web config nested", "--web.config.file", b"tls_server_config: " + b"{a: " * 100 + b"1" + b"}" * 100 + b"\n",
     "nested more than 32 levels deep"),
    ("web config duplicate user", "--web.config.file",
     f"basic_auth_users:\n  alice: '{HASH}'\n  alice: '{HASH}'\n".encode(), "duplicate key 'alice'"),
    ("web config billion laughs", "--web.config.file", LAUGHS.encode(), "aliases (*a) are not supported"),
    ("web config of 2 MiB", "--web.config.file", b"#" * (2 << 20), "larger than 1 MiB"),
    ("hash cut short", "--web.config.file", f"basic_auth_users: {{alice: '{HASH[:-1]}'}}\n".encode(),
     "the password of 'alice' is not a bcrypt hash"),
    ("hash with a bad character", "--web.config.file",
     f"basic_auth_users: {{alice: '{HASH[:-1]}!'}}\n".encode(), "the password of 'alice' is not a bcrypt hash"),
    ("hash of cost 99", "--web.config.file", f"basic_auth_users: {{alice: '{HASH.replace('$04$', '$99$')}'}}\n".encode(),
     "the password of 'alice' is not a bcrypt hash"),
    ("hash of an unknown variant", "--web.config.file",
     f"basic_auth_users: {{alice: '{HASH.replace('$2b$', '$2z$')}'}}\n".encode(), "is not a bcrypt hash"),
    ("TLS 1.3 at least and 1.2 at most", "--web.config.file",
     b"tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}\n",
     "min_version TLS13 is above max_version TLS12"),
]


@pytest.mark.parametrize("name, flag, data, expected", HOSTILE_FILES, ids=[c[0] for c in HOSTILE_FILES])
def test_hostile_file_is_one_line_and_exit_2(tmp_path, name, flag, data, expected):
    assert expected in _usage_error(tmp_path, flag, data)


@pytest.mark.parametrize("args, expected", [
    (["--web.listen-address", "not-an-address"], "is not host:port"),
    (["--web.listen-address", "no-such-host.invalid:9661"], "cannot resolve listen host"),
    (["--web.telemetry-path", "metrics"], "--web.telemetry-path must start with '/'"),
    (["--web.read-header-timeout", "0s"], "must be a duration above zero"),
    (["--web.max-connections", "0"], "must be a whole number from 1"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_flags_are_checked_under_config_check_as_at_start_up(args, expected):
    done = run_exporter(*args, "--config.check")
    assert done.returncode == 2
    assert expected in _one_error_line(done.stderr)


BAD_RUNS = [
    ([], "no command to run"),
    (["--caps", "CAP_CHOWN", "--", "true"], "--caps needs --user"),
    (["--user", "nobody", "--caps", "CAP_CHOWN,CAP_FLY", "--", "true"], "--caps: unknown capabilities: CAP_FLY"),
    (["--user", "no-such-user-here", "--", "true"], "--user: no such user 'no-such-user-here'"),
    (["--format", "yaml", "--", "true"], "argument --format: invalid choice: 'yaml'"),
    (["-o", "/nonexistent/dir/report", "--", "true"], "--output: cannot write /nonexistent/dir/report"),
]


@pytest.mark.parametrize("args, expected", BAD_RUNS, ids=[" ".join(a) or "nothing" for a, _ in BAD_RUNS])
def test_bad_run_is_one_clear_line_and_exit_125(args, expected):
    """run keeps 1 and 2 for the command's own exit codes; its own failures exit 125, as timeout(1)'s do."""
    done = run_exporter("run", *args)
    assert done.returncode == 125
    assert expected in _one_error_line(done.stderr)
