/* BCC includes this first; BPF programs need the syscall side of BPF enabled. */
#ifndef CAPEXP_SHIM_KCONFIG_H
#define CAPEXP_SHIM_KCONFIG_H
#define CONFIG_BPF_SYSCALL 1
#endif
