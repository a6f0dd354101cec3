"""Choosing a kernel's packages from a suite's Packages list, and finding vmlinuz and modules in an unpacked image."""

from pathlib import Path

import pytest

import kernel_images
from kernel_images import ImageError, PrivateApt, choose, depends, find_kernel, parse_packages, series

# Stanzas as the suites had them when measured (fields trimmed to what matters).
BULLSEYE = """\
Package: linux-image-amd64
Version: 5.10.223-1
Depends: linux-image-5.10.0-32-amd64 (= 5.10.223-1)

Package: linux-image-5.10.0-32-amd64
Version: 5.10.223-1
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool

Package: linux-image-5.10.0-32-amd64-unsigned
Version: 5.10.223-1
Depends: kmod, linux-base (>= 4.3~),
 initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
"""

SID = """\
Package: linux-image-amd64
Version: 7.2.13-1
Depends: linux-base-amd64 (= 7.2.13-1), linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)

Package: linux-image-7.2.13+deb14-amd64
Version: 7.2.13-1
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)

Package: linux-binary-7.2.13+deb14-amd64
Version: 7.2.13-1

Package: linux-modules-7.2.13+deb14-amd64
Version: 7.2.13-1
"""


def test_a_continued_depends_line_is_one_field():
    stanza = parse_packages(BULLSEYE)["linux-image-5.10.0-32-amd64-unsigned"]
    assert depends(stanza) == ["kmod", "linux-base", "initramfs-tools"]


def test_a_series_takes_the_release_the_metapackage_depends_on_and_prefers_unsigned():
    assert choose(parse_packages(BULLSEYE), "5.10", "bullseye") == (
        "5.10.0-32-amd64", ["linux-image-5.10.0-32-amd64-unsigned"])


def test_a_split_image_brings_its_binary_and_modules_packages():
    assert choose(parse_packages(SID), "7.2", "sid") == (
        "7.2.13+deb14-amd64",
        ["linux-image-7.2.13+deb14-amd64", "linux-binary-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64"])


def test_an_exact_release_is_looked_up_as_it_is():
    assert choose(parse_packages(BULLSEYE), "5.10.0-32-amd64", "bullseye")[1] == [
        "linux-image-5.10.0-32-amd64-unsigned"]


def test_a_release_the_suite_no_longer_has_says_so():
    with pytest.raises(ImageError, match="bullseye has no package linux-image-5.10.0-31-amd64"):
        choose(parse_packages(BULLSEYE), "5.10.0-31-amd64", "bullseye")


def test_a_suite_whose_kernel_moved_to_another_series_says_which():
    with pytest.raises(ImageError, match="sid's kernel is now 7.2.13\\+deb14-amd64, not a 7.3 kernel"):
        choose(parse_packages(SID), "7.3", "sid")


def test_a_missing_modules_package_is_named():
    broken = SID.replace("Package: linux-modules-7.2.13+deb14-amd64", "Package: something-else")
    with pytest.raises(ImageError, match="sid lacks linux-modules-7.2.13\\+deb14-amd64"):
        choose(parse_packages(broken), "7.2", "sid")


def test_series_of_releases_and_bad_names():
    assert series("6.12.117+deb13-amd64") == "6.12"
    assert series("7.2") == "7.2"
    with pytest.raises(ImageError, match="neither a kernel release nor a series"):
        series("latest")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def test_vmlinuz_in_boot_and_modules_in_lib(tmp_path):
    vmlinuz = _touch(tmp_path / "boot/vmlinuz-5.10.0-32-amd64")
    _touch(tmp_path / "lib/modules/5.10.0-32-amd64/kernel/fs/9p/9p.ko")
    assert find_kernel(tmp_path, "5.10.0-32-amd64") == kernel_images.Kernel(
        "5.10.0-32-amd64", vmlinuz, tmp_path / "lib/modules/5.10.0-32-amd64")


def test_vmlinuz_beside_the_modules_in_usr(tmp_path):
    vmlinuz = _touch(tmp_path / "usr/lib/modules/7.2.13+deb14-amd64/vmlinuz")
    assert find_kernel(tmp_path, "7.2.13+deb14-amd64").vmlinuz == vmlinuz


def test_an_image_without_vmlinuz_says_so(tmp_path):
    with pytest.raises(ImageError, match="no vmlinuz for 6.12"):
        find_kernel(tmp_path, "6.12")


def test_private_apt_points_every_directory_under_its_own(tmp_path):
    options = PrivateApt(tmp_path, "sid").options()
    paths = [opt.split("=", 1)[1] for opt in options[1::2] if opt.startswith("Dir::")]
    assert len(paths) == 8
    assert all(p.startswith(f"{tmp_path}/sid/") for p in paths)


def test_no_network_is_one_line_naming_the_suite(tmp_path, monkeypatch):
    # A closed loopback port stands for a mirror that cannot be reached; real apt-get runs.
    monkeypatch.setattr(kernel_images, "MIRROR", "http://127.0.0.1:9/debian")
    with pytest.raises(ImageError, match="^apt-get update for sid failed: .*Could not connect") as err:
        kernel_images.fetch("7.2", tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "7.2").exists()


def test_a_stable_suite_also_reads_its_security_updates_and_sid_does_not(tmp_path):
    # bookworm's 6.1 kernels after a point release are only in bookworm-security.
    assert [line.split()[2:4] for line in kernel_images.sources("bookworm")] == [
        [kernel_images.MIRROR, "bookworm"], [kernel_images.SECURITY_MIRROR, "bookworm-security"]]
    assert [line.split()[3] for line in kernel_images.sources("sid")] == ["sid"]


def test_a_missing_unpacking_tool_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither depmod nor dpkg-deb there
    (tmp_path / "lib/modules/7.2.0").mkdir(parents=True)
    (tmp_path / "lib/modules/7.2.0/vmlinuz").touch()
    with pytest.raises(ImageError, match="^depmod is not installed"):
        kernel_images._depmod(find_kernel(tmp_path, "7.2.0"))
