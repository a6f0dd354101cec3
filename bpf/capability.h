/* Shared by the BPF programs: the layouts exporter/ebpf/layouts.py mirrors (change both together). */
#ifndef CAPEXP_CAPABILITY_H
#define CAPEXP_CAPABILITY_H

#define COMM_LEN 16

/* Kernel headers would bring this; the shim deliberately brings almost nothing. */
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* errno values are user ABI; without kernel headers nothing else defines them. */
#ifndef EEXIST
#define EEXIST 17
#endif

/* cap_capable()'s 4th argument since Linux 5.1 (before: int audit). */
#define CAP_OPT_NOAUDIT 0x2
#define CAP_OPT_INSETID 0x4

/* uid, cgroup_id, opts and process stay 0 unless a label needs them, so that
 * series the user did not ask for collapse into one map entry; syscall and
 * kernel_stack stay NO_SYSCALL and -1 unless run asks why (KEY_REASON). */
struct check_key {
	char comm[COMM_LEN];
	__u32 cap;
	__u32 uid;
	__u64 cgroup_id;
	__u32 opts;	/* CAP_OPT_NOAUDIT | CAP_OPT_INSETID, also on kernels before 5.1 */
	__u32 syscall;	/* the number of the syscall the thread was in */
	__s32 kernel_stack;	/* a stacks map id */
	__u32 pad;
	char process[COMM_LEN];	/* the thread group leader's comm (KEY_PROCESS) */
};

/* What a thread outside any syscall (a kernel thread) reads as its syscall number. */
#define NO_SYSCALL 0xffffffff

/* The syscall the current thread is in, from the user registers the kernel saved on
 * entry (orig_ax on x86_64, syscallno on arm64), so that no hook on every syscall is
 * needed. PT_REGS_SYSCALL is that member's offset, from BTF. With TASK_PT_REGS_HELPER
 * (Linux 5.15+) the kernel finds the registers; before that they sit at the top of
 * the task's stack: TASK_STACK (task_struct.stack, from BTF) + TASK_STACK_REGS. */
#ifdef PT_REGS_SYSCALL
static __always_inline __u32 current_syscall(void)
{
	long nr = -1;
#ifdef TASK_PT_REGS_HELPER
	void *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
#else
	void *stack = 0;

	bpf_probe_read_kernel(&stack, sizeof(stack), (void *)bpf_get_current_task() + TASK_STACK);
	void *regs = stack + TASK_STACK_REGS;
#endif
	if (bpf_probe_read_kernel(&nr, sizeof(nr), regs + PT_REGS_SYSCALL) || nr < 0)
		return NO_SYSCALL;
	return nr;
}
#else
static __always_inline __u32 current_syscall(void)
{
	return NO_SYSCALL;
}
#endif

/* The thread group leader's comm: worker threads that rename themselves (tokio-runtime-w,
 * worker-3) still belong to the program that exec'd them. TASK_GROUP_LEADER and TASK_COMM
 * are byte offsets from BTF. Without KEY_PROCESS the field stays zero. */
static __always_inline void read_process_name(char *process)
{
#ifdef KEY_PROCESS
	void *leader = 0;

	bpf_probe_read_kernel(&leader, sizeof(leader), (void *)bpf_get_current_task() + TASK_GROUP_LEADER);
	bpf_probe_read_kernel(process, COMM_LEN, leader + TASK_COMM);
#endif
}

struct check_value {
	__u64 checks;
	__u64 denials;
};

/* Slots of the per-CPU "drops" array: updates lost because a map was full. */
enum drop_slot {
	DROP_CHECKS = 0,
	DROP_INFLIGHT = 1,
	DROP_SLOTS = 2,
};

/* Capability changes: the syscalls traced, in label order (exporter/core/changes.py). */
enum change_syscall {
	SYS_CAPSET, SYS_PRCTL, SYS_SETUID, SYS_SETGID, SYS_SETREUID, SYS_SETREGID,
	SYS_SETRESUID, SYS_SETRESGID, SYS_SETFSUID, SYS_SETFSGID, SYS_EXECVE, SYS_EXECVEAT,
};

enum cap_set {
	SET_EFFECTIVE, SET_PERMITTED, SET_INHERITABLE, SET_BOUNDING, SET_AMBIENT, SET_COUNT,
	SET_SECUREBITS = SET_COUNT,	/* in change_key only */
};

/* A thread's credentials as /proc/<pid>/status shows them, plus what decides them. */
struct cred_state {
	__u64 sets[SET_COUNT];	/* indexed by enum cap_set */
	__u32 securebits;
	__u32 uid;
	__u32 euid;
	__u32 pad;
};

/* One transition of one set (or of securebits) by one syscall; user space turns
 * before ^ after into per-capability gained/lost counts when it is scraped. */
struct change_key {
	char comm[COMM_LEN];
	__u32 syscall;
	__u32 set;
	__u64 before;
	__u64 after;
	char process[COMM_LEN];	/* read_process_name() */
};

/* Slots of the per-CPU "change_drops" array: changes lost because a map was full. */
enum change_drop_slot {
	DROP_SNAPSHOTS = 0,
	DROP_CHANGES = 1,
	CHANGE_DROP_SLOTS = 2,
};

/* Per-event records for `capability-exporter trace` (-DEMIT_EVENTS only). */
#define ARGS_LEN 3
#define PATH_LEN 64

struct check_event {
	__u64 ts;
	__u32 pid;		/* thread id */
	__u32 tgid;
	__u32 uid;
	__s32 cap;
	__s32 ret;
	__u32 opts;		/* CAP_OPT_* bits; meaningless in tracepoint mode */
	__s32 user_stack;	/* stack map ids; negative when not taken */
	__s32 kernel_stack;
	__u32 syscall;		/* as current_syscall() */
	__u32 pad;
	char comm[COMM_LEN];
};

struct change_event {
	__u64 ts;
	__u32 pid;
	__u32 tgid;
	__u32 ppid;
	__u32 syscall;
	__s64 ret;
	__u64 args[ARGS_LEN];	/* the syscall's first arguments, as numbers */
	__s32 user_stack;
	__s32 pad;
	char comm[COMM_LEN];
	char path[PATH_LEN];	/* execve/execveat: the file name */
	struct cred_state before;
	struct cred_state after;
};

#endif
