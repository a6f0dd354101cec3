"""In a guest: does the emulated machine survive the kernel patching its own syscall entry under load?

Every exporter start and stop turns a syscall tracepoint on or off, and the kernel then
rewrites the jump label in syscall_trace_enter (x86 text_poke_bp: an int3 first, the new
bytes, then the int3 replaced) while other CPUs run through it. Under QEMU's multi-threaded
TCG (one host thread per virtual CPU; QEMU 7.2 here), a CPU can keep a translation of the
text made while the int3 was there. The kernel's int3 handler finds no breakpoint at that
address any more and returns to retry it, the stale translation traps again, and the CPU
loops there for good: 6.1 guests with two virtual CPUs froze in this check, 3 of 3 (two
with both CPUs at syscall_trace_enter+0xe9, the jump label), as the last silent CI guest
had (there, too, one sample in get_kprobe). The matrix boots guests with one virtual CPU,
which cannot race with itself; this check shows, on each run, that they still survive.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

TOGGLES = 1000
# A process that makes syscalls as fast as the interpreter allows.
SPINNER = "import os\nwhile True:\n    os.getppid()\n"


def check(tracefs: str, toggles: int = TOGGLES, spinners: int = 2) -> str:
    """Toggle raw_syscalls:sys_enter toggles times while spinners processes make syscalls; a line for the log."""
    enable = Path(tracefs) / "events" / "raw_syscalls" / "sys_enter" / "enable"
    busy = [subprocess.Popen([sys.executable, "-c", SPINNER]) for _ in range(spinners)]
    start = time.monotonic()
    try:
        for _ in range(toggles):
            enable.write_text("1")
            enable.write_text("0")
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return (f"code patching: the syscall-entry jump label flipped {2 * toggles} times "
            f"under {spinners} busy processes in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    # By hand, in a guest: vng -r /boot/vmlinuz-KERNEL --disable-kvm --cpus N -- .venv/bin/python tests/code_patching.py
    from exporter.ebpf.kernel import ensure_tracefs

    print(check(ensure_tracefs()), flush=True)
