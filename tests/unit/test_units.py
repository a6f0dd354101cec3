"""The unit label's parsing of cgroup v2 paths."""

import pytest

from exporter.core import units


@pytest.mark.parametrize("path, unit", [
    ("/system.slice/ssh.service", "ssh.service"),
    ("/system.slice/system-getty.slice/getty@tty1.service", "getty@tty1.service"),
    ("/system.slice/system-systemd\\x2dfsck.slice/systemd-fsck@dev-sda1.service", "systemd-fsck@dev-sda1.service"),
    ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope"),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "foo.service"),
    ("/user.slice/user-1000.slice/user@1000.service/init.scope", "init.scope"),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-2215.scope",
     "app-gnome-firefox-2215.scope"),
    ("/system.slice/containerd.service/payload", "containerd.service"),
    ("/system.slice/docker.socket", "docker.socket"),
    ("/system.slice/boot-efi.mount", "boot-efi.mount"),
    ("/system.slice/dev-sda2.swap", "dev-sda2.swap"),
    ("/init.scope", "init.scope"),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/"
     "cri-containerd-" + "a" * 64 + ".scope", "cri-containerd-" + "a" * 64 + ".scope"),
    ("/", ""),
    ("", ""),
    ("unknown", ""),
    ("/system.slice", ""),
    ("/user.slice/user-1000.slice", ""),
    ("/capexp-test-1234", ""),
    ("/docker/" + "b" * 64, ""),
    ("/weird/.service", ""),
])
def test_unit_from_cgroup_path(path, unit):
    assert units.from_cgroup(path) == unit
