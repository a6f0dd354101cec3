"""capability-exporter run on the real kernel: a command's tree traced, its exit code kept, its report right."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from exporter.core import profile
from support import HANG_TIMEOUT, NOBODY, ROOT, WORKLOAD, checks_of, exporter_command, run_command, run_workload, unique_comm

SETPRIV_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
CHOWN_TO = "65533"  # neither root nor nobody: chown always needs CAP_CHOWN
# The function that asks for CAP_CHOWN on this host's kernel (chown_ok, inlined into it here).
CHOWN_CALLER = "setattr_prepare"


def test_root_chown_recommends_cap_chown(tmp_path, root_owned_file):
    code, text, err = run_command(tmp_path, ["chown", CHOWN_TO, str(root_owned_file)])
    doc = json.loads(text)
    assert code == 0, err
    assert os.stat(root_owned_file).st_uid == int(CHOWN_TO)
    assert doc["recommendation"]["needed"] == ["CAP_CHOWN"]
    assert doc["recommendation"]["denied"] == []
    granted, denied = checks_of(doc, "chown")[("CAP_CHOWN", True)]
    assert granted >= 1 and denied == 0
    # Root held every capability and used one.
    assert "CAP_CHOWN" in doc["held"] and "CAP_CHOWN" not in doc["recommendation"]["unused"]
    assert set(doc["recommendation"]["unused"]) == set(doc["held"]) - {"CAP_CHOWN"}


def test_unprivileged_chown_is_denied_cap_chown_and_keeps_its_exit_code(tmp_path, root_owned_file):
    command = [*SETPRIV_NOBODY, "chown", CHOWN_TO, str(root_owned_file)]
    own_code = subprocess.run(command, capture_output=True).returncode
    assert own_code != 0
    code, text, err = run_command(tmp_path, command)
    doc = json.loads(text)
    assert code == own_code == doc["exit_code"]
    assert "CAP_CHOWN" in doc["recommendation"]["denied"]
    assert checks_of(doc, "chown")[("CAP_CHOWN", True)] == (0, 1)
    # setpriv, not chown, used what it took to become nobody.
    assert {"CAP_SETUID", "CAP_SETGID"} <= set(doc["recommendation"]["needed"])
    assert all(c["comm"] == "setpriv" for c in doc["checks"] if c["capability"] == "CAP_SETUID")


def test_as_user_only_the_commands_own_checks_count(tmp_path, root_owned_file):
    """--user sets the command up untraced: nothing but chown's own audited checks remain."""
    code, text, err = run_command(tmp_path, ["chown", CHOWN_TO, str(root_owned_file)], "--user", "nobody")
    doc = json.loads(text)
    assert code == 1, err
    assert doc["recommendation"]["needed"] == [] and doc["recommendation"]["denied"] == ["CAP_CHOWN"]
    assert doc["held"] == [] and doc["recommendation"]["unused"] == []
    assert {c["comm"] for c in doc["checks"] if c["audited"] is not False} == {"chown"}


def test_a_forked_childs_setuid_is_attributed_and_a_stranger_with_its_comm_is_not(tmp_path):
    comm = unique_comm("fk")
    report = tmp_path / "report.json"
    command = [sys.executable, str(WORKLOAD), "--wait", "--fork", f"{comm}=setuid:3", f"{comm}=become:{NOBODY}"]
    run = subprocess.Popen([*exporter_command("run", "--format", "json", "-o", str(report)), "--", *command],
                           cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdout.readline() == "ready\n", run.stderr.read()
    # The tree is being followed now: the same comm outside it must not count.
    stranger = run_workload(f"{comm}=setuid:5")
    assert stranger[0]["result"] == 5
    out, err = run.communicate("go\n", timeout=HANG_TIMEOUT)
    assert run.returncode == 0, err
    assert json.loads(out.splitlines()[0])["result"] == 3
    doc = json.loads(report.read_text())
    # become: one more CAP_SETUID check, and the change it made, both seen through the fork.
    assert checks_of(doc, comm) == {("CAP_SETUID", True): (4, 0)}
    assert "CAP_SETUID" in doc["recommendation"]["needed"]
    lost = {(c["set"], c["capability"]) for c in doc["changes"]
            if c["comm"] == comm and c["syscall"] == "setuid" and c["direction"] == "lost"}
    assert {("permitted", "CAP_SETUID"), ("effective", "CAP_SETUID")} <= lost


@pytest.mark.kernel_independent
def test_exit_codes_of_commands_that_do_not_run(tmp_path):
    assert run_command(tmp_path, ["/nonexistent/program"])[0] == 127
    assert run_command(tmp_path, ["/etc/hostname"])[0] == 126
    code, text, err = run_command(tmp_path, ["sh", "-c", "kill -TERM $$"])
    assert code == 128 + 15 and json.loads(text)["exit_code"] == 143


# The formats are rendered from the same profile on every kernel: the matrix's guests skip them.
FORMATS = pytest.mark.kernel_independent


@pytest.fixture(scope="module")
def chown_report_formats():
    """Each format of one run as nobody holding only CAP_CHOWN, which the chown uses."""
    directory = Path(tempfile.mkdtemp(prefix="capexp-"))  # pytest's tmp_path is root-only
    directory.chmod(0o755)
    target = directory / "file"
    target.write_text("")
    reports = {}
    for fmt in profile.FORMATS:
        os.chown(target, 0, 0)
        code, text, err = run_command(directory, ["chown", CHOWN_TO, str(target)], "--user", "nobody",
                                      "--caps", "CAP_CHOWN", fmt=fmt)
        assert code == 0, err
        reports[fmt] = text
    shutil.rmtree(directory)
    return reports


@FORMATS
def test_text_format_has_the_table_and_the_recommendation(chown_report_formats):
    text = chown_report_formats["text"]
    rows = [line.split() for line in text.splitlines() if line.strip().startswith("CAP_CHOWN")]
    assert ["CAP_CHOWN", "chown", "yes", "fchownat", CHOWN_CALLER, "1", "0"] in rows
    assert "  needed:                  CAP_CHOWN\n" in text
    assert f"                           CAP_CHOWN: fchownat: {CHOWN_CALLER}\n" in text


@FORMATS
def test_json_format_round_trips(chown_report_formats):
    text = chown_report_formats["json"]
    doc = json.loads(text)
    assert json.dumps(doc, indent=2) + "\n" == text
    context = {k: doc[k] for k in ("command", "exit_code")}
    assert profile.document(profile.from_document(doc), **context) == doc
    assert doc["recommendation"]["needed"] == ["CAP_CHOWN"] and doc["held"] == ["CAP_CHOWN"]


@FORMATS
def test_systemd_lines_parse_and_name_capabilities_systemd_knows(chown_report_formats, tmp_path):
    text = chown_report_formats["systemd"]
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == ["CapabilityBoundingSet=CAP_CHOWN", "AmbientCapabilities=CAP_CHOWN"]
    known = systemd_capability_names()
    assert all(name.lower() in known for line in settings for name in line.split("=", 1)[1].split())
    unit = tmp_path / "probe.service"
    unit.write_text(f"[Service]\nExecStart=/bin/true\nDynamicUser=yes\n{text}")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def systemd_capability_names() -> set[str]:
    listing = subprocess.run(["systemd-analyze", "capability"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}


@FORMATS
def test_kubernetes_block_validates_against_the_schema(chown_report_formats):
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    block = yaml.safe_load(chown_report_formats["kubernetes"])
    assert block == {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
           "spec": {"containers": [{"name": "app", "image": "busybox", **block}]}}
    kubernetes_validate.validate(pod, latest_version(), strict=True)


@FORMATS
def test_docker_flags(chown_report_formats):
    assert chown_report_formats["docker"].splitlines()[-1] == "--cap-drop=ALL --cap-add=CHOWN"


@FORMATS
def test_report_goes_to_stderr_by_default(root_owned_file):
    done = subprocess.run([*exporter_command("run"), "--", "chown", CHOWN_TO, str(root_owned_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert done.returncode == 0 and done.stdout == ""
    assert "Recommendation (not verified" in done.stderr
