"""The kernel-facing layer: kernel facts, BTF, the bpf() syscall, loading the BPF programs and reading their maps."""
