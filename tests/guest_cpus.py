"""Where a frozen guest's virtual CPUs are: QEMU's monitor read against the guest's kernel symbols.

A guest whose kernel livelocks runs none of its own tools (no sysrq, no pytest timeout), but
QEMU can still show each virtual CPU's registers and memory. The guest saves its kallsyms
at boot; on a stall the host samples each CPU's instruction pointer several times and the
kernel-text words on its stack (a crude unwind, like the kernel's "? func" lines), and names them.
"""

from __future__ import annotations

import bisect
import re
import socket
import time
from pathlib import Path
from typing import Optional

SAMPLES = 5
SAMPLE_INTERVAL = 0.5
STACK_WORDS = 64
PROMPT = b"(qemu) "


def qemu_args(monitor: Path) -> list[str]:
    """vng options that give QEMU a monitor on the unix socket monitor."""
    # One argument with "=": vng would take a separate "-monitor ..." for an option of its own.
    return [f"--qemu-opts=-monitor unix:{monitor},server=on,wait=off"]


def save_kallsyms(dest: Path) -> None:
    """In the guest: its kernel's text symbols, with the addresses this boot placed them at."""
    text = [ln for ln in Path("/proc/kallsyms").read_text().splitlines() if ln.split()[1] in ("t", "T")]
    dest.write_text("\n".join(text) + "\n")


class Symbols:
    """Kernel addresses to function+offset, from a kallsyms file."""

    def __init__(self, rows: list[tuple[int, str]]) -> None:
        rows = sorted(rows)
        self.addresses = [a for a, _ in rows]
        self.names = [n for _, n in rows]

    @classmethod
    def load(cls, kallsyms: Path) -> Symbols:
        """The symbols in kallsyms; none if the guest never saved it (addresses are then shown bare)."""
        if not kallsyms.exists():
            return cls([])
        return cls([(int(f[0], 16), f[2]) for f in (ln.split() for ln in kallsyms.read_text().splitlines()) if f])

    def name(self, address: int) -> str:
        i = self._index(address)
        return f"{address:#x}" if i is None else f"{self.names[i]}+{address - self.addresses[i]:#x}"

    def is_text(self, address: int) -> bool:
        return self._index(address) is not None

    def _index(self, address: int) -> Optional[int]:
        # No symbol spans a megabyte: past that the address is in no function (data, a gap).
        i = bisect.bisect_right(self.addresses, address) - 1
        return i if i >= 0 and address - self.addresses[i] < 0x100000 else None


def report(monitor: Path, kallsyms: Path) -> str:
    """Each CPU's instruction pointer SAMPLES times, then the kernel text on each CPU's stack."""
    symbols = Symbols.load(kallsyms)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(monitor))
        _until_prompt(conn)
        lines = []
        for sample in range(SAMPLES):
            cpus = parse_registers(command(conn, "info registers -a"))
            lines.append(f"sample {sample}: " + "  ".join(_where(cpu, symbols) for cpu in cpus))
            time.sleep(SAMPLE_INTERVAL)
        for cpu in cpus:
            command(conn, f"cpu {cpu['cpu']}")
            words = parse_words(command(conn, f"x /{STACK_WORDS}gx {cpu['rsp']:#x}"))
            callers = [symbols.name(w) for w in words if symbols.is_text(w)]
            lines.append(f"CPU{cpu['cpu']} stack: " + (" < ".join(callers) or "no kernel text"))
    return "\n".join(lines) + "\n"


def _where(cpu: dict, symbols: Symbols) -> str:
    state = " (halted)" if cpu["halted"] else "" if cpu["cpl"] == 0 else " (user)"
    return f"CPU{cpu['cpu']} {symbols.name(cpu['rip'])}{state}"


def command(conn: socket.socket, line: str) -> str:
    conn.sendall(line.encode() + b"\n")
    return _until_prompt(conn)


def _until_prompt(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(PROMPT):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("QEMU's monitor closed the connection")
        data += chunk
    return data.decode("utf-8", "replace")


def parse_registers(text: str) -> list[dict]:
    """The CPU#n blocks of `info registers -a`: rip, rsp, cpl and halted per CPU."""
    cpus = []
    for number, block in re.findall(r"CPU#(\d+)\r?\n(.*?)(?=CPU#\d+|\Z)", text, re.S):
        fields = dict(re.findall(r"\b(RIP|RSP|CPL|HLT)=([0-9a-f]+)", block))
        if "RIP" in fields:
            cpus.append({"cpu": int(number), "rip": int(fields["RIP"], 16), "rsp": int(fields["RSP"], 16),
                         "cpl": int(fields["CPL"]), "halted": fields.get("HLT") == "1"})
    return cpus


def parse_words(text: str) -> list[int]:
    """The 64-bit words of an `x /Ngx ADDR` dump (lines of "addr: 0xword 0xword")."""
    return [int(w, 16) for line in text.splitlines() if ":" in line for w in re.findall(r"0x([0-9a-f]{16})", line.split(":", 1)[1])]
