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


def _usage_error(tmp_path, flag: str, text: str) -> str:
    """Run the CLI with a file of this text behind flag; its one error line, after exit status 2."""
    path = tmp_path / "bad.yaml"
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
