"""Reading a frozen guest's CPUs: QEMU monitor output parsed and named against kallsyms."""

import socket
import threading

import guest_cpus
from guest_cpus import Symbols, parse_registers, parse_words

# The shape of QEMU 7.2's `info registers -a` for a 64-bit guest (trimmed).
REGISTERS = (
    "info registers -a\x1b[K\r\n\r\nCPU#0\r\n"
    "RAX=0000000000000000 RBX=ffff888100a8c000 RCX=0000000000000001 RDX=0000000000000000\r\n"
    "RSI=0000000000000000 RDI=0000000000000000 RBP=ffffc90000013e80 RSP=ffffc90000013e58\r\n"
    "RIP=ffffffff81a02b10 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n"
    "CR0=80050033 CR2=00007f0c3c1e7000 CR3=0000000104c9e000 CR4=00350ef0\r\n"
    "CPU#1\r\n"
    "RSI=0000000000000000 RDI=0000000000000000 RBP=0000000000000000 RSP=00007ffd4f1e8a20\r\n"
    "RIP=00007f0c3c0a1234 RFL=00000246 [---Z-P-] CPL=3 II=0 A20=1 SMM=0 HLT=0\r\n"
    "(qemu) "
)
KALLSYMS = "ffffffff81000000 T _stext\nffffffff81a02b00 T text_poke_bp_batch\nffffffff81a03000 t poke_int3_handler\n"


def test_registers_give_each_cpus_instruction_and_stack_pointers():
    assert parse_registers(REGISTERS) == [
        {"cpu": 0, "rip": 0xFFFFFFFF81A02B10, "rsp": 0xFFFFC90000013E58, "cpl": 0, "halted": False},
        {"cpu": 1, "rip": 0x7F0C3C0A1234, "rsp": 0x7FFD4F1E8A20, "cpl": 3, "halted": False},
    ]


def test_memory_dump_words_leave_out_the_echoed_command_and_the_addresses():
    text = "x /4gx 0xffffc90000013e58\x1b[K\r\nffffc90000013e58: 0xffffffff81a03010 0x0000000000000001\r\n" \
           "ffffc90000013e68: 0xffff888100a8c000 0xffffffff81a02b40\r\n(qemu) "
    assert parse_words(text) == [0xFFFFFFFF81A03010, 1, 0xFFFF888100A8C000, 0xFFFFFFFF81A02B40]


def test_addresses_are_named_function_plus_offset(tmp_path):
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    symbols = Symbols.load(tmp_path / "kallsyms")
    assert symbols.name(0xFFFFFFFF81A02B10) == "text_poke_bp_batch+0x10"
    assert symbols.name(0xFFFFFFFF81A03000) == "poke_int3_handler+0x0"
    assert symbols.is_text(0xFFFFFFFF81A02B40) and not symbols.is_text(0xFFFF888100A8C000)
    assert Symbols.load(tmp_path / "missing").name(0xFFFFFFFF81A02B10) == "0xffffffff81a02b10"


def test_the_report_samples_every_cpu_and_names_its_stack(tmp_path, monkeypatch):
    monkeypatch.setattr(guest_cpus, "SAMPLES", 2)
    monkeypatch.setattr(guest_cpus, "SAMPLE_INTERVAL", 0)
    (tmp_path / "kallsyms").write_text(KALLSYMS)
    stack = "\r\nffffc90000013e58: 0xffffffff81a03010 0xffff888100a8c000\r\n(qemu) "
    answers = {"info registers -a": REGISTERS, "cpu 0": "(qemu) ", "cpu 1": "(qemu) ",
               "x /64gx 0xffffc90000013e58": stack, "x /64gx 0x7ffd4f1e8a20": "\r\n(qemu) "}
    monitor = tmp_path / "monitor"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(monitor))
    server.listen()

    def serve():
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ")
            for line in lines:
                conn.sendall(answers[line.decode().strip()].encode())

    threading.Thread(target=serve, daemon=True).start()
    assert guest_cpus.report(monitor, tmp_path / "kallsyms").splitlines() == [
        "sample 0: CPU0 text_poke_bp_batch+0x10  CPU1 0x7f0c3c0a1234 (user)",
        "sample 1: CPU0 text_poke_bp_batch+0x10  CPU1 0x7f0c3c0a1234 (user)",
        "CPU0 stack: poke_int3_handler+0x10",
        "CPU1 stack: no kernel text",
    ]
    server.close()
