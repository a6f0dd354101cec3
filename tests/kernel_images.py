"""Kernels for the matrix that are not in /boot: Debian's packages, fetched privately and unpacked into .kernels/.

usage: kernel_images.py [--dir DIR] KERNEL...
  KERNEL is a release (6.1.0-57-amd64) or a series (7.2). One in /boot is used as it is.
  Any other comes from the Debian suite that SUITES names for its series: apt runs with a
  configuration of its own under DIR/apt (its own sources, lists, cache and dpkg status),
  so the host's sources and packages are never touched; `apt-get download` fetches the
  image (and, where Debian splits it, the binary and modules packages) and `dpkg-deb -x`
  unpacks them into DIR/<release>/. The package is resolved from the suite's lists
  (linux-image-amd64's dependency), since the mirror moves on to new ABI numbers; a
  series gets a link DIR/<series> -> <release>. Prints, per kernel, where its vmlinuz and
  modules are.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
KERNELS_DIR = ROOT / ".kernels"
BOOT = Path("/boot")
MIRROR = "http://deb.debian.org/debian"
# A stable suite's kernel updates arrive in <suite>-security (bookworm's 6.1.0-56 was only there).
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# The Debian suite whose kernel is each series (measured on the mirror; buster's 4.19 is gone).
# All but sid also read <suite>-security.
SUITES = {
    "5.10": "bullseye",
    "6.1": "bookworm",
    "6.12": "trixie",
    "7.2": "sid",
}
FLAVOUR = "amd64"
# Packages of a split image (sid): vmlinuz in the binary package, the modules apart.
PARTS = ("linux-binary-", "linux-modules-")

log = logging.getLogger(__name__)


class ImageError(Exception):
    """A kernel that cannot be fetched: one line that says why."""


@dataclass(frozen=True)
class Kernel:
    release: str
    vmlinuz: Path
    modules: Optional[Path]  # the directory holding modules.dep, or None for a /boot kernel


def series(kernel: str) -> str:
    """The major.minor of a release or series: 6.12.117+deb13-amd64 -> 6.12."""
    match = re.match(r"(\d+)\.(\d+)", kernel)
    if not match:
        raise ImageError(f"{kernel!r} is neither a kernel release nor a series like 7.2")
    return f"{match[1]}.{match[2]}"


def parse_packages(text: str) -> dict[str, dict[str, str]]:
    """A Packages list's stanzas by package name (the last stanza of a name wins)."""
    stanzas: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            stanzas[fields["Package"]] = fields
    return stanzas


def depends(stanza: dict[str, str]) -> list[str]:
    """The package names in a stanza's Depends (each alternative's first name)."""
    names = []
    for clause in stanza.get("Depends", "").split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(first.split()[0])
    return names


def choose(packages: dict[str, dict[str, str]], wanted: str, suite: str) -> tuple[str, list[str]]:
    """The release and the packages to fetch for wanted (a release or a series) from a suite's list.

    A series takes the release linux-image-amd64 depends on; the -unsigned image where the
    suite has one (same kernel, no signature wrapper), plus the binary and modules packages
    where Debian splits the image.
    """
    if re.fullmatch(r"\d+\.\d+", wanted):
        meta = packages.get(f"linux-image-{FLAVOUR}")
        if meta is None:
            raise ImageError(f"{suite} has no linux-image-{FLAVOUR} package to tell its kernel")
        prefix = "linux-image-"
        images = [d for d in depends(meta) if d.startswith(prefix) and d != f"linux-image-{FLAVOUR}"]
        if not images:
            raise ImageError(f"{suite}'s linux-image-{FLAVOUR} depends on no kernel image")
        release = images[0][len(prefix):]
        if series(release) != wanted:
            raise ImageError(f"{suite}'s kernel is now {release}, not a {wanted} kernel")
    else:
        release = wanted
    image = next((p for p in (f"linux-image-{release}-unsigned", f"linux-image-{release}") if p in packages), None)
    if image is None:
        raise ImageError(f"{suite} has no package linux-image-{release} (nor -unsigned)")
    parts = [d for d in depends(packages[image]) if d in (p + release for p in PARTS)]
    missing = [p for p in parts if p not in packages]
    if missing:
        raise ImageError(f"{suite} lacks {', '.join(missing)}, which {image} depends on")
    return release, [image, *parts]


def find_kernel(root: Path, release: str) -> Kernel:
    """The vmlinuz and modules directory in an unpacked image (bookworm puts vmlinuz in boot/, sid beside the modules)."""
    modules = root / "lib" / "modules" / release
    if not modules.is_dir():
        modules = root / "usr" / "lib" / "modules" / release
    for vmlinuz in (root / "boot" / f"vmlinuz-{release}", modules / "vmlinuz"):
        if vmlinuz.is_file():
            return Kernel(release, vmlinuz, modules if modules.is_dir() else None)
    raise ImageError(f"no vmlinuz for {release} in {root}")


def sources(suite: str) -> list[str]:
    """The sources.list lines for a suite: the suite, and its security updates unless it is sid."""
    lines = [f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"]
    if suite != "sid":
        lines.append(f"deb [signed-by={KEYRING}] {SECURITY_MIRROR} {suite}-security main\n")
    return lines


class PrivateApt:
    """apt-get and apt-cache with sources, lists, cache, parts and dpkg status of their own under a directory."""

    def __init__(self, base: Path, suite: str) -> None:
        self.base = base / suite
        self.suite = suite

    def options(self) -> list[str]:
        b = self.base
        settings = {
            "Dir::Etc::SourceList": b / "sources.list",
            "Dir::Etc::SourceParts": b / "sources.list.d",
            "Dir::Etc::Parts": b / "apt.conf.d",
            "Dir::Etc::Preferences": b / "preferences",
            "Dir::Etc::PreferencesParts": b / "preferences.d",
            "Dir::State::Lists": b / "lists",
            "Dir::State::status": b / "status",
            "Dir::Cache": b / "cache",
            "Debug::NoLocking": "1",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def prepare(self) -> None:
        for sub in ("sources.list.d", "apt.conf.d", "preferences.d", "lists/partial", "cache/archives/partial"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "status").touch()
        (self.base / "sources.list").write_text("".join(sources(self.suite)))

    def update(self) -> None:
        self._run("apt-get", "update", "-qq")

    def packages(self) -> dict[str, dict[str, str]]:
        return parse_packages(self._run("apt-cache", "dumpavail"))

    def download(self, names: list[str], into: Path) -> list[Path]:
        into.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", "download", "-qq", *names, cwd=into)
        debs = [next(into.glob(f"{name}_*.deb"), None) for name in names]
        if None in debs:
            raise ImageError(f"apt-get download left no .deb for {names[debs.index(None)]}")
        return [d for d in debs if d is not None]

    def _run(self, *cmd: str, cwd: Optional[Path] = None) -> str:
        try:
            done = subprocess.run([cmd[0], *self.options(), *cmd[1:]], capture_output=True, text=True, cwd=cwd)
        except OSError as err:
            raise ImageError(f"cannot run {cmd[0]}: {err.strerror}") from None
        # apt-get update says "W: Failed to fetch" and may still exit 0 without a network.
        trouble = [ln for ln in done.stderr.splitlines() if ln.startswith(("E:", "W: Failed", "Err:"))]
        if done.returncode != 0 or trouble:
            reason = (trouble or done.stderr.strip().splitlines() or ["no message"])[-1]
            raise ImageError(f"{' '.join(cmd[:2])} for {self.suite} failed: {reason}")
        return done.stdout


def in_boot(kernel: str) -> Optional[Kernel]:
    vmlinuz = BOOT / f"vmlinuz-{kernel}"
    return Kernel(kernel, vmlinuz, None) if vmlinuz.is_file() else None


def vmlinuz(kernel: str) -> Path:
    """/boot/vmlinuz-KERNEL, or the vmlinuz unpacked in .kernels/KERNEL (virtme-ng finds its modules beside it)."""
    found = in_boot(kernel)
    if found:
        return found.vmlinuz
    try:
        link = KERNELS_DIR / kernel
        return find_kernel(link, link.resolve().name).vmlinuz
    except ImageError:
        return BOOT / f"vmlinuz-{kernel}"


def fetch(kernel: str, base: Path) -> Kernel:
    """The kernel from /boot, from an earlier unpacking in base, or fetched and unpacked now."""
    found = in_boot(kernel)
    if found:
        return found
    link = base / kernel
    if (link / ".complete").exists():
        return find_kernel(link, link.resolve().name)
    suite = SUITES.get(series(kernel))
    if suite is None:
        raise ImageError(f"no Debian suite known for {kernel} (known: {', '.join(SUITES)})")
    apt = PrivateApt(base / "apt", suite)
    apt.prepare()
    log.info("reading %s's package lists", suite)
    apt.update()
    release, names = choose(apt.packages(), kernel, suite)
    target = base / release
    if not (target / ".complete").exists():
        log.info("fetching %s from %s", " ".join(names), suite)
        for deb in apt.download(names, base / "apt" / suite / "debs"):
            _unpack(deb, target)
            deb.unlink()  # hundreds of MB, and the unpacked tree is what is kept
        _depmod(find_kernel(target, release))
        (target / ".complete").touch()
    if release != kernel:
        link.unlink(missing_ok=True)
        link.symlink_to(release)
    return find_kernel(target, release)


def _unpack(deb: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = _tool(["dpkg-deb", "-x", str(deb), str(target)])
    if done.returncode != 0:
        raise ImageError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")


def _depmod(kernel: Kernel) -> None:
    # Debian's packages ship no modules.dep; the guest's modprobe (9p, virtio, overlay) needs one.
    if kernel.modules is None:
        return
    base = kernel.modules.parent.parent.parent  # the directory holding lib/modules/<release>
    done = _tool(["depmod", "-b", str(base), kernel.release])
    if done.returncode != 0:
        raise ImageError(f"depmod for {kernel.release} failed: {done.stderr.strip()}")


def _tool(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        # make kernel-images installs them (dpkg, kmod); run by hand, say which is missing.
        raise ImageError(f"{cmd[0]} is not installed (make kernel-images installs it)") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kernels", nargs="*")
    parser.add_argument("--dir", type=Path, default=KERNELS_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="kernel-images: %(message)s")
    failed = False
    for kernel in args.kernels:
        try:
            found = fetch(kernel, args.dir.resolve())
        except ImageError as err:
            print(f"kernel-images: error: {kernel}: {err}", file=sys.stderr)
            failed = True
            continue
        print(f"{kernel}: vmlinuz {found.vmlinuz}, modules {found.modules or 'built in or in /lib/modules'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
