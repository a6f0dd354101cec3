/* struct pt_regs for kprobe arguments. Its layout is user ABI; the field names
 * are the kernel's, because BCC's PT_REGS_PARMn macros use them. */
#ifndef CAPEXP_SHIM_PTRACE_H
#define CAPEXP_SHIM_PTRACE_H

#if defined(__TARGET_ARCH_x86) || defined(bpf_target_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx;
	unsigned long r11, r10, r9, r8, ax, cx, dx, si, di;
	unsigned long orig_ax, ip, cs, flags, sp, ss;
};
#elif defined(__TARGET_ARCH_arm64) || defined(bpf_target_arm64)
struct pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
	__u64 orig_x0;
};
#else
#error "kprobe mode supports x86_64 and arm64"
#endif

#endif
