"""cap_capable's opts on the real kernel: non-audited checks, and the audit/insetid labels.

fexit and kprobe see opts; the tracepoint does not, and these tests check that
it says so instead of guessing.
"""

import os

import pytest

from support import NOBODY, run_workload, starter, unique_comm

OPTS = {"labels": {"opts": True}}


@pytest.fixture(scope="module")
def exporters(tmp_path_factory):
    """(default, verbose): the same opts labels, without and with count_noaudit; shared by the module."""
    start, started = starter(tmp_path_factory.mktemp("audit"))
    yield start(OPTS), start({"probe": {"count_noaudit": True}, **OPTS})
    for running in started:
        running.stop()


# Only modes that see cap_capable's opts can tell this check is not audited.
@pytest.mark.modes("fexit", "kprobe")
def test_reading_another_users_proc_stat_is_one_noaudit_ptrace_check_each(exporters):
    default, verbose = exporters
    comm = unique_comm("rd")
    # do_task_stat() asks ptrace_may_access(PTRACE_MODE_NOAUDIT): CAP_SYS_PTRACE, not audited, denied.
    run_workload(f"{comm}=read:40:/proc/1/stat", user=NOBODY)
    labels = {"audit": "false", "insetid": "false"}
    assert default.series("capability_checks_total", comm=comm) == {}
    assert verbose.value("capability_checks_total", comm=comm, capability="CAP_SYS_PTRACE", **labels) == 40
    assert verbose.value("capability_denials_total", comm=comm, capability="CAP_SYS_PTRACE", **labels) == 40


def test_unprivileged_exec_makes_noaudit_sys_admin_checks(exporters, attach_mode, true_copy):
    default, verbose = exporters
    comm = os.path.basename(true_copy)
    # Loading a program reserves memory: cap_vm_enough_memory asks for CAP_SYS_ADMIN without audit.
    # Some kernels inline that cap_capable call (Debian's 6.1); the exporter counts it either way.
    run_workload(user=NOBODY, program=true_copy)
    counted = verbose.series("capability_checks_total", comm=comm, capability="CAP_SYS_ADMIN")
    assert counted, "an unprivileged exec makes CAP_SYS_ADMIN checks"
    (labels, checks), = counted.items()
    assert checks > 0
    assert verbose.value("capability_denials_total", **dict(labels)) == checks
    if attach_mode == "tracepoint":
        assert dict(labels)["audit"] == "unknown"
        # The tracepoint cannot leave them out: the default config counts them too.
        assert default.series("capability_checks_total", comm=comm, capability="CAP_SYS_ADMIN") == counted
    else:
        assert dict(labels)["audit"] == "false" and dict(labels)["insetid"] == "false"
        assert default.series("capability_checks_total", comm=comm, capability="CAP_SYS_ADMIN") == {}


def test_set_id_checks_carry_insetid(exporters, attach_mode, root_owned_file):
    exporter, _ = exporters
    setuid_comm, chown_comm = unique_comm("su"), unique_comm("ch")
    run_workload(f"{setuid_comm}=setuid:100")
    run_workload(f"{chown_comm}=chown:50:{root_owned_file}", user=NOBODY)
    if attach_mode == "tracepoint":
        setuid_labels = chown_labels = {"audit": "unknown", "insetid": "unknown"}
    else:
        setuid_labels = {"audit": "true", "insetid": "true"}  # ns_capable_setid()
        chown_labels = {"audit": "true", "insetid": "false"}
    assert exporter.value("capability_checks_total", comm=setuid_comm, capability="CAP_SETUID", **setuid_labels) == 100
    assert exporter.value("capability_checks_total", comm=chown_comm, capability="CAP_CHOWN", **chown_labels) == 50
    assert exporter.value("capability_denials_total", comm=chown_comm, capability="CAP_CHOWN", **chown_labels) == 50
