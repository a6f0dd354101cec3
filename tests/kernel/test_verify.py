"""run --verify and the reasons behind each capability, on real Debian programs and the real kernel.

Each over-granting program is traced, verified, and then proven again without run: under exactly
the final set (setpriv, as nobody where the program allows it) it succeeds, and without any one
member it fails.

The program tests are marked any_mode: fexit and kprobe both hook cap_capable() and
see the same checks (each was run in both on 6.1), so the kernel matrix runs them in a kernel's
first attaching mode only; the reasons and trace tests, whose stacks each hook takes its own
way, run in every mode.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from exporter.core import profile
from support import HANG_TIMEOUT, NOBODY, ROOT, exporter_command, run_workload, trace_started, unique_comm

SETPRIV_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
CHOWN_TO = "65533"
# Bounds a verification run that hangs; the programs here take well under a second.
VERIFY_TIMEOUT = "60"


def run_json(tmp_path: Path, command: list[str], *options: str, env=None) -> tuple[int, dict, str]:
    """run --format json ... -- command; (exit code, the report, run's stderr)."""
    report = tmp_path / f"report-{uuid.uuid4().hex[:8]}.json"
    done = subprocess.run([*exporter_command("run", "--format", "json", "-o", str(report), *options), "--", *command],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    text = report.read_text() if report.exists() else ""
    return done.returncode, json.loads(text) if text else {}, done.stderr


def verified(tmp_path: Path, command: list[str], *options: str, env=None) -> tuple[list[str], dict]:
    """(the unverified recommendation, the --verify report) of one command."""
    code, doc, err = run_json(tmp_path, command, "--verify", "--verify-timeout", VERIFY_TIMEOUT, *options, env=env)
    assert code == 0, err
    assert doc["recommendation"]["verified"] is True, doc["verification"]
    # What run says without --verify, from the same checks (one compile less under emulation).
    traced = profile.from_document(doc)
    traced.verification = None
    return traced.recommend().needed, doc


def under_set(caps: list[str], as_nobody: bool) -> list[str]:
    """setpriv: exactly caps, as nobody (ambient, inheritable, bounding) or as root (bounding)."""
    names = ",".join(["-all"] + [f"+{c.removeprefix('CAP_').lower()}" for c in caps])
    if as_nobody:
        return [*SETPRIV_NOBODY, f"--inh-caps={names}", f"--ambient-caps={names}", f"--bounding-set={names}"]
    return ["setpriv", "--inh-caps=-all", f"--bounding-set={names}"]


def succeeds(command: list[str], env=None) -> bool:
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=HANG_TIMEOUT)
    return done.returncode == 0


def assert_minimal(final: list[str], command: list[str], as_nobody: bool, env=None) -> None:
    """Sufficient: the command succeeds under exactly final. Necessary: it fails without each member."""
    assert succeeds(under_set(final, as_nobody) + ["--", *command], env), f"fails under {final}"
    for cap in final:
        rest = [c for c in final if c != cap]
        assert not succeeds(under_set(rest, as_nobody) + ["--", *command], env), f"succeeds without {cap}"


@pytest.fixture
def notify_socket(public_dir):
    """A NOTIFY_SOCKET that anyone may send to, as systemd's would be."""
    path = public_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        path.chmod(0o777)
        yield {**os.environ, "NOTIFY_SOCKET": str(path)}


def capset_check_seen(doc: dict, attach_mode: str) -> bool:
    """Whether capset()'s CAP_SETPCAP check was seen. The tracepoint, inside cap_capable(), sees
    every copy of it; fexit and kprobe miss it where the kernel inlines cap_capable() into
    cap_capset() (Debian's 6.1), and then there is no such check to recommend."""
    seen = any(c["capability"] == "CAP_SETPCAP" and c["caller"] == "cap_capset" for c in doc["checks"])
    assert seen or attach_mode != "tracepoint", doc["checks"]
    return seen


# What the programs need depends on the checks seen, which fexit and kprobe see alike: see above.
PROGRAMS = pytest.mark.any_mode


@PROGRAMS
def test_ping_is_not_granted_the_setpcap_its_capset_asks_for(tmp_path, attach_mode):
    command = ["ping", "-c", "1", "-W", "5", "127.0.0.1"]
    unverified, doc = verified(tmp_path, command)
    rec = doc["recommendation"]
    # Even unverified: capset's CAP_SETPCAP check is a known probe site.
    assert "CAP_SETPCAP" not in unverified
    assert rec["needed"] == ["CAP_NET_RAW"]
    if capset_check_seen(doc, attach_mode):
        assert "CAP_SETPCAP" in [n["capability"] for n in rec["not_needed"]]
    assert_minimal(rec["needed"], command, as_nobody=True)


@PROGRAMS
def test_setpriv_needs_setuid_and_setgid_but_not_setpcap(tmp_path):
    command = [*SETPRIV_NOBODY, "--inh-caps=-all", "true"]
    unverified, doc = verified(tmp_path, command)
    assert "CAP_SETPCAP" not in unverified
    assert doc["recommendation"]["needed"] == ["CAP_SETGID", "CAP_SETUID"]
    assert doc["verification"]["method"] == "root"
    assert_minimal(doc["recommendation"]["needed"], command, as_nobody=False)


@PROGRAMS
def test_systemd_notify_falls_back_from_its_privileged_sends(tmp_path, notify_socket):
    """sd_notify() asks SO_SNDBUFFORCE (CAP_NET_ADMIN) and sends its parent's pid (CAP_SYS_ADMIN), and
    falls back from both when refused."""
    command = ["systemd-notify", "--no-block", "--ready"]
    unverified, doc = verified(tmp_path, command, env=notify_socket)
    assert {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"} <= set(unverified)
    assert doc["recommendation"]["needed"] == []
    reasons = {n["capability"]: n["reasons"] for n in doc["recommendation"]["not_needed"]}
    assert any(r.startswith("setsockopt: ") for r in reasons["CAP_NET_ADMIN"]), reasons
    assert_minimal([], command, as_nobody=True, env=notify_socket)


@PROGRAMS
@pytest.mark.parametrize("command, over_granted", [
    # Reads what it may of other users' processes. fexit and kprobe see that most of its
    # CAP_SYS_PTRACE checks are non-audited (PTRACE_MODE_NOAUDIT); the tracepoint cannot, and
    # counts those whose ns_capable_noaudit() is inlined as audited: --verify removes them.
    (["ps", "aux"], None),
    (["sysctl", "-a"], "CAP_SYS_ADMIN"),      # prints the keys it may read, warns of the others
])
def test_programs_that_read_what_they_may_need_nothing(tmp_path, attach_mode, command, over_granted):
    unverified, doc = verified(tmp_path, command)
    if over_granted or attach_mode == "tracepoint":
        assert unverified, "the unverified recommendation over-grants"
    if over_granted:
        assert over_granted in unverified
    assert doc["recommendation"]["needed"] == []
    assert [n["capability"] for n in doc["recommendation"]["not_needed"]] == unverified
    assert_minimal([], command, as_nobody=True)


@pytest.fixture
def strangers_sleep():
    """A process of a user who is neither root nor nobody, for kill -0."""
    proc = subprocess.Popen(["setpriv", f"--reuid={CHOWN_TO}", f"--regid={CHOWN_TO}", "--clear-groups", "sleep", "600"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def root_only_file(public_dir):
    path = public_dir / "root-only"
    path.write_text("secret\n")
    path.chmod(0o600)
    return path


MINIMAL = {
    "chown": (lambda d: ["chown", CHOWN_TO, str(d["file"])], ["CAP_CHOWN"]),
    "capsh": (lambda d: ["capsh", "--drop=cap_net_raw", "--", "-c", "true"], ["CAP_SETPCAP"]),
    "chrt": (lambda d: ["chrt", "-f", "10", "true"], ["CAP_SYS_NICE"]),
    "kill": (lambda d: ["kill", "-0", str(d["pid"])], ["CAP_KILL"]),
    "cat": (lambda d: ["cat", str(d["secret"])], ["CAP_DAC_READ_SEARCH"]),
}


@PROGRAMS
@pytest.mark.parametrize("program", sorted(MINIMAL))
def test_minimal_recommendations_come_out_of_verify_unchanged(tmp_path, program, root_owned_file, strangers_sleep,
                                                              root_only_file):
    make, expected = MINIMAL[program]
    command = make({"file": root_owned_file, "pid": strangers_sleep, "secret": root_only_file})
    # As nobody holding every capability, then verified as nobody holding fewer: systemd's way.
    as_root = program == "capsh"  # capsh drops from the bounding set, which takes root's own process
    options = () if as_root else ("--user", "nobody", "--caps", "all")
    unverified, doc = verified(tmp_path, command, *options)
    assert unverified == expected
    assert doc["recommendation"]["needed"] == expected
    assert doc["verification"]["method"] == ("root" if as_root else "user")
    assert [t["verdict"] for t in doc["verification"]["trials"]] == ["sufficient", "needed"]
    assert_minimal(expected, command, as_nobody=not as_root)


@PROGRAMS
def test_capset_that_raises_the_inheritable_set_keeps_setpcap(tmp_path, attach_mode):
    code, doc, err = run_json(tmp_path, ["capsh", "--inh=cap_net_raw", "--", "-c", "true"])
    assert code == 0, err
    raised = [c for c in doc["changes"] if (c["syscall"], c["set"], c["direction"]) == ("capset", "inheritable",
                                                                                      "gained")]
    assert raised, doc["changes"]
    seen = capset_check_seen(doc, attach_mode)
    assert ("CAP_SETPCAP" in doc["recommendation"]["needed"]) == seen


def test_the_reason_for_a_chown_names_fchownat_and_the_function_that_asked(tmp_path, root_owned_file):
    code, doc, err = run_json(tmp_path, ["chown", CHOWN_TO, str(root_owned_file)])
    assert code == 0, err
    (chown,) = [c for c in doc["checks"] if c["capability"] == "CAP_CHOWN"]
    assert chown["syscall"] == "fchownat"
    assert chown["caller"] in ("chown_ok", "setattr_prepare"), chown  # chown_ok is inlined on some kernels
    assert doc["recommendation"]["reasons"] == {"CAP_CHOWN": [f"fchownat: {chown['caller']}"]}


def test_the_reason_for_an_unprivileged_exec_names_execve_and_memory_accounting(tmp_path):
    code, doc, err = run_json(tmp_path, ["true"], "--user", "nobody")
    assert code == 0, err
    exec_checks = [c for c in doc["checks"] if c["capability"] == "CAP_SYS_ADMIN" and c["syscall"] == "execve"]
    assert exec_checks and all(c["audited"] is False and c["denied"] for c in exec_checks), doc["checks"]
    assert {c["caller"] for c in exec_checks} <= {"security_vm_enough_memory_mm", "cap_vm_enough_memory"}


def test_systemd_snippet_says_why_and_that_it_was_verified(tmp_path, root_owned_file):
    report = tmp_path / "unit.conf"
    done = subprocess.run([*exporter_command("run", "--verify", "--format", "systemd", "-o", str(report)), "--",
                           "chown", CHOWN_TO, str(root_owned_file)], cwd=ROOT, capture_output=True, text=True,
                          timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr
    lines = report.read_text().splitlines()
    assert "# verified by re-running" in lines
    assert any(ln.startswith("# CAP_CHOWN: fchownat: ") for ln in lines), lines
    assert "CapabilityBoundingSet=CAP_CHOWN" in lines


def test_user_gets_the_users_environment_as_systemd_gives_it(tmp_path):
    names = ["HOME", "USER", "LOGNAME", "SHELL", "PATH"]
    done = subprocess.run([*exporter_command("run", "--user", "nobody"), "--", "printenv", *names], cwd=ROOT,
                          capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["/nonexistent", "nobody", "nobody", "/usr/sbin/nologin",
                                        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    kept = subprocess.run([*exporter_command("run", "--user", "nobody", "--keep-env"), "--", "printenv", "HOME"],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT,
                          env={**os.environ, "HOME": "/root"})
    assert kept.stdout == "/root\n", kept.stderr


@pytest.mark.kernel_independent  # the guests' 9p root shows no file capabilities
def test_a_file_capability_binary_blocked_by_caps_is_explained(tmp_path):
    assert os.getxattr("/usr/bin/ping", "security.capability"), "Debian's ping has cap_net_raw=ep"
    code, _, err = run_json(tmp_path, ["ping", "-c", "1", "127.0.0.1"], "--user", "nobody", "--caps", "CAP_CHOWN")
    assert code == 126
    (line,) = [ln for ln in err.splitlines() if "ping" in ln]
    assert "file has the capabilities CAP_NET_RAW" in line and "--caps" in line


@pytest.mark.kernel_independent
@pytest.mark.parametrize("options, message", [
    (("--verify-timeout", "soon"), "not a number of seconds"),
    (("--verify-timeout", "-1"), "must be a positive number"),
    (("--success-check", "true"), "--success-check go(es) with --verify"),
    (("--keep-env",), "--keep-env goes with --user"),
])
def test_bad_verify_flags_get_one_line_and_exit_125(options, message):
    done = subprocess.run([*exporter_command("run", *options), "--", "true"], cwd=ROOT, capture_output=True,
                          text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 125
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@pytest.mark.kernel_independent
def test_a_success_check_that_cannot_run_is_one_line_and_exit_125(tmp_path):
    code, doc, err = run_json(tmp_path, ["true"], "--verify", "--success-check", "/nonexistent/check")
    assert code == 125
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert len(errors) == 1 and "--success-check cannot run" in errors[0], err
    assert doc["recommendation"]["verified"] is False


@pytest.mark.kernel_independent
def test_success_check_decides_success(tmp_path, public_dir):
    """chown -f exits 0 even when refused: only the check on the new file's owner tells."""
    home = public_dir / "nobody"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    target = home / "file"
    check = f"test $(stat -c %u {target}) = {CHOWN_TO}"
    command = ["sh", "-c", f"rm -f {target} && touch {target} && chown -f {CHOWN_TO} {target}"]
    code, doc, err = run_json(tmp_path, command, "--user", "nobody", "--caps", "all", "--verify",
                              "--success-check", check)
    assert code == 0, err
    assert doc["recommendation"]["needed"] == ["CAP_CHOWN"]
    assert "--success-check" in doc["verification"]["success"]


@pytest.mark.kernel_independent
def test_a_command_that_hangs_when_verified_is_killed_with_all_it_forked(tmp_path, public_dir):
    marker = public_dir / "ran-once"
    sleeper = f"600.{uuid.uuid4().int % 10**6}"  # a sleep no other process has
    command = ["sh", "-c", f"if [ -e {marker} ]; then sleep {sleeper}; fi; touch {marker}"]
    code, doc, err = run_json(tmp_path, command, "--verify", "--verify-timeout", "2")
    assert code == 124
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert len(errors) == 1 and "did not finish within 2 s" in errors[0], err
    assert doc["recommendation"]["verified"] is False
    assert subprocess.run(["pgrep", "-f", f"sleep {sleeper}"], capture_output=True).returncode == 1


def test_trace_shows_the_syscall_of_a_setuid_and_a_chown(public_dir, root_owned_file):
    comm = unique_comm("ts")
    trace = subprocess.Popen(exporter_command("trace", "--json", "--no-changes", "-c", comm), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        trace_started(trace.stderr)
        run_workload(f"{comm}=setuid:2")
        chown = public_dir / comm  # exec names the thread after the file
        shutil.copy("/usr/bin/chown", chown)
        subprocess.run([str(chown), CHOWN_TO, str(root_owned_file)], check=True, timeout=60)
    finally:
        trace.send_signal(2)
        out, err = trace.communicate(timeout=180)
    records = [json.loads(ln) for ln in out.splitlines()]
    assert {(r["name"], r["syscall"]) for r in records} >= {("CAP_SETUID", "setuid")}, records
    chowns = [r for r in records if r["name"] == "CAP_CHOWN"]
    assert chowns and {r["syscall"] for r in chowns} == {"fchownat"}, records


def test_trace_without_verbose_shows_no_non_audited_check_of_an_unprivileged_exec(true_copy):
    """In every mode, tracepoint too (by the kernel caller): -v shows them, and only -v."""
    comm = Path(true_copy).name
    traces = {verbose: subprocess.Popen(exporter_command("trace", "--json", "--no-changes", "-c", comm,
                                                         *(["-v"] if verbose else [])),
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for verbose in (False, True)}
    try:
        for trace in traces.values():
            trace_started(trace.stderr)
        subprocess.run([*SETPRIV_NOBODY, true_copy], check=True, timeout=60)
    finally:
        for trace in traces.values():
            trace.send_signal(2)
        outs = {verbose: trace.communicate(timeout=180)[0] for verbose, trace in traces.items()}
    verbose = [json.loads(ln) for ln in outs[True].splitlines()]
    assert verbose and {(r["name"], r["audit"], r["verdict"]) for r in verbose} == {("CAP_SYS_ADMIN", False, "deny")}
    assert outs[False] == ""
