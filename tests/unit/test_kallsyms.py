"""Function address ranges from a kallsyms file."""

from exporter.ebpf import kallsyms

KALLSYMS = """ffffffff81000000 T _stext
ffffffff8136f900 T has_capability_noaudit
ffffffff8136f9d0 T ns_capable
ffffffff8136fa40 d some_data
ffffffff81abce80 T cap_vm_enough_memory
ffffffff81abcf00 t cap_other [some_module]
"""


def test_a_function_ends_where_the_next_text_symbol_starts(tmp_path):
    path = tmp_path / "kallsyms"
    path.write_text(KALLSYMS)
    found = kallsyms.ranges(("has_capability_noaudit", "cap_vm_enough_memory", "missing"), str(path))
    assert found == {
        "has_capability_noaudit": (0xFFFFFFFF8136F900, 0xFFFFFFFF8136F9D0),
        "cap_vm_enough_memory": (0xFFFFFFFF81ABCE80, 0xFFFFFFFF81ABCF00),
    }


def test_hidden_addresses_find_nothing(tmp_path):
    path = tmp_path / "kallsyms"
    path.write_text("\n".join("0000000000000000" + line[16:] for line in KALLSYMS.splitlines()))
    assert kallsyms.ranges(("has_capability_noaudit",), str(path)) == {}
