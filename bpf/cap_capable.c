/* Count cap_capable() checks and denials per comm and capability, in kernel maps.
 *
 * Options (-D): one of MODE_FEXIT, MODE_KPROBE, MODE_TRACEPOINT;
 * CHECKS_MAX_ENTRIES, INFLIGHT_MAX_ENTRIES; COUNT_NOAUDIT; CAP_AUDIT_ARG_INT
 * (kernels before 5.1, where the 4th argument is "int audit");
 * KEY_UID, KEY_CGROUP, KEY_OPTS; FILTER_UIDS=n, FILTER_PIDS=n, FILTER_CGROUP.
 * KEY_PROCESS keys by the thread group leader's comm too (capability.h's
 * read_process_name(): TASK_GROUP_LEADER, TASK_COMM from BTF).
 * VM_ENOUGH_RETURNS_ERRNO: cap_vm_enough_memory() returns 0 or an error (6.12+).
 * CGROUP_V1_SUBSYS=n keys by the cgroup of that cgroup v1 controller instead of
 * cgroup v2; it needs TASK_CGROUPS, CSS_SET_SUBSYS, CSS_CGROUP, CGROUP_KN and
 * KERNFS_NODE_ID, byte offsets read from BTF.
 * For `capability-exporter trace`: EMIT_EVENTS sends one event per check to user
 * space instead of counting; DENIED_ONLY, USER_STACKS, KERNEL_STACKS, STACKS_MAX_ENTRIES.
 * For `capability-exporter run`: FOLLOW_TREE=n (bpf/tree.c, compiled first),
 * NOAUDIT_CALLERS=n (tracepoint mode; trace uses it too), OWN_CREDS_ONLY with
 * TASK_REAL_CRED from BTF, KEY_REASON (key by syscall and kernel stack).
 * PT_REGS_SYSCALL and friends (capability.h's current_syscall()), from BTF.
 */
#include "capability.h"

struct cred;
struct user_namespace;
struct mm_struct;

#define CAP_SYS_ADMIN 21

#ifdef FOLLOW_TREE
/* bpf/tree.c's map of the threads `capability-exporter run` follows. in_tree() is
 * repeated in cap_changes.c (as is trace_is_stopped()): BCC rewrites map calls
 * like tree.lookup() in a program's own file only; from a bpf/*.h header one
 * compiled to an indirect call that the verifier refused ("unknown opcode 8d"). */
BPF_TABLE("extern", __u32, __u8, tree, FOLLOW_TREE);

static __always_inline bool in_tree(void)
{
	__u32 tid = bpf_get_current_pid_tgid();

	return tree.lookup(&tid) != 0;
}
#else
static __always_inline bool in_tree(void)
{
	return true;
}
#endif

/* Per-CPU values: the hottest keys (one busy comm, one capability) are hit on
 * every CPU at once, and a shared counter would bounce its cache line between
 * them. Plain increments are safe: a tracing program never runs twice at once
 * on one CPU (kprobes and tracepoints hold bpf_prog_active; a nested fexit run
 * is skipped and shows as a recursion miss, which the exporter exports). */
BPF_PERCPU_HASH(checks, struct check_key, struct check_value, CHECKS_MAX_ENTRIES);
BPF_PERCPU_ARRAY(drops, __u64, DROP_SLOTS);

#ifdef FILTER_UIDS
BPF_HASH(filter_uids, __u32, __u8, FILTER_UIDS);
#endif
#ifdef FILTER_PIDS
BPF_HASH(filter_pids, __u32, __u8, FILTER_PIDS);
#endif
#ifdef FILTER_CGROUP
BPF_CGROUP_ARRAY(filter_cgroup, 1);
#endif

static __always_inline __u64 read_kernel_u64(void *address)
{
	__u64 value = 0;

	bpf_probe_read_kernel(&value, sizeof(value), address);
	return value;
}

#ifdef OWN_CREDS_ONLY
/* Checks of credentials other than the task's own are not its needs: overlayfs
 * checks with its mounter's (override_creds), access() with a modified copy, and
 * has_capability() another task's. real_cred is what no override replaces. */
static __always_inline bool own_creds(const void *cred)
{
	void *task = (void *)bpf_get_current_task();

	return (const void *)read_kernel_u64(task + TASK_REAL_CRED) == cred;
}
#else
static __always_inline bool own_creds(const void *cred)
{
	return true;
}
#endif

static __always_inline void count_drop(int slot)
{
	__u64 *drop = drops.lookup(&slot);

	if (drop)
		(*drop)++;
}

/* cap_capable()'s 4th argument as CAP_OPT_* bits, whichever form the kernel passes. */
static __always_inline __u32 decode_opts(unsigned long arg)
{
#ifdef CAP_AUDIT_ARG_INT
	return (int)arg == 0 ? CAP_OPT_NOAUDIT : 0;
#else
	return arg & (CAP_OPT_NOAUDIT | CAP_OPT_INSETID);
#endif
}

static __always_inline bool is_counted(__u32 opts)
{
#ifdef COUNT_NOAUDIT
	return true;
#else
	return !(opts & CAP_OPT_NOAUDIT);
#endif
}

/* Checks the user filtered out cost one lookup each and touch no counter. Every
 * hook asks this first, before any costlier work (kprobe: before the entry saves
 * anything; tracepoint: before the stack walk of NOAUDIT_CALLERS). */
static __always_inline bool is_wanted(void)
{
	if (!in_tree())
		return false;
#ifdef FILTER_UIDS
	__u32 uid = bpf_get_current_uid_gid();

	if (!filter_uids.lookup(&uid))
		return false;
#endif
#ifdef FILTER_PIDS
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!filter_pids.lookup(&tgid))
		return false;
#endif
#ifdef FILTER_CGROUP
	if (filter_cgroup.check_current_task(0) != 1)
		return false;
#endif
	return true;
}

#if defined(USER_STACKS) || defined(KERNEL_STACKS) || defined(KEY_REASON)
/* BPF_STACK_TRACE would need the kernel's roundup_pow_of_two(); the size is one already. */
BPF_TABLE("stacktrace", int, struct bpf_stacktrace, stacks, STACKS_MAX_ENTRIES);
#endif

/* The kernel stack of a check, for run's "which kernel function asked". */
static __always_inline int reason_stack(void *ctx)
{
#ifdef KEY_REASON
	return stacks.get_stackid(ctx, 0);
#else
	return -1;
#endif
}

#ifdef EMIT_EVENTS
/* Set by trace when it is told to stop: BCC's perf reader returns only once a
 * buffer is empty, which under a flood of events it never is. */
BPF_ARRAY(trace_stopped, __u32, 1);

static __always_inline bool trace_is_stopped(void)
{
	int zero = 0;
	__u32 *stopped = trace_stopped.lookup(&zero);

	return stopped && *stopped;
}

BPF_PERF_OUTPUT(check_events);

static __always_inline void emit_check(void *ctx, int cap, int ret, __u32 opts, __u32 uid)
{
	struct check_event event = {};
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (trace_is_stopped())
		return;
	event.ts = bpf_ktime_get_ns();
	event.pid = pid_tgid;
	event.tgid = pid_tgid >> 32;
	event.uid = uid;
	event.cap = cap;
	event.ret = ret;
	event.opts = opts;
	event.user_stack = -1;
	event.kernel_stack = -1;
	event.syscall = current_syscall();
#ifdef USER_STACKS
	event.user_stack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
#endif
#ifdef KERNEL_STACKS
	event.kernel_stack = stacks.get_stackid(ctx, 0);
#endif
	bpf_get_current_comm(&event.comm, sizeof(event.comm));
	check_events.perf_submit(ctx, &event, sizeof(event));
}
#endif

#ifdef CGROUP_V1_SUBSYS
/* bpf_get_current_cgroup_id() knows only cgroup v2; containers that live in v1
 * hierarchies are found through task->cgroups->subsys[n]->cgroup->kn->id. */
static __always_inline __u64 current_v1_cgroup_id(void)
{
	void *task = (void *)bpf_get_current_task();
	void *css_set = (void *)read_kernel_u64(task + TASK_CGROUPS);
	void *css = (void *)read_kernel_u64(css_set + CSS_SET_SUBSYS + CGROUP_V1_SUBSYS * sizeof(void *));
	void *cgroup = (void *)read_kernel_u64(css + CSS_CGROUP);
	void *kn = (void *)read_kernel_u64(cgroup + CGROUP_KN);

	return read_kernel_u64(kn + KERNFS_NODE_ID);
}
#endif

static __always_inline void add_check(int cap, int ret, __u32 opts, __u32 uid, int kernel_stack)
{
	struct check_key key = {};
	struct check_value *value;

	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	key.cap = cap;
	key.syscall = NO_SYSCALL;
	key.kernel_stack = -1;
#ifdef KEY_REASON
	key.syscall = current_syscall();
	key.kernel_stack = kernel_stack;
#endif
#ifdef KEY_UID
	key.uid = uid;
#endif
#if defined(KEY_CGROUP) && defined(CGROUP_V1_SUBSYS)
	key.cgroup_id = current_v1_cgroup_id();
#elif defined(KEY_CGROUP)
	key.cgroup_id = bpf_get_current_cgroup_id();
#endif
#ifdef KEY_OPTS
	key.opts = opts;
#endif
	read_process_name(key.process);
	value = checks.lookup(&key);
	if (!value) {
		struct check_value zero = {};
		int err = checks.insert(&key, &zero);

		/* Another CPU may have inserted the key first; only a full map loses the count. */
		if (err && err != -EEXIST) {
			count_drop(DROP_CHECKS);
			return;
		}
		value = checks.lookup(&key);
		if (!value)
			return;
	}
	value->checks++;
	if (ret != 0)
		value->denials++;
}

/* One wanted capability check that passed the hooks' audit handling: counted, or sent to
 * trace. kernel_stack: reason_stack() where the hook can take the check's own stack. */
static __always_inline void count_check(void *ctx, int cap, int ret, __u32 opts, int kernel_stack)
{
	/* A helper call is a large part of a check's cost: made only where the uid is used. */
#if defined(KEY_UID) || defined(EMIT_EVENTS)
	__u32 uid = bpf_get_current_uid_gid();
#else
	__u32 uid = 0;
#endif

#ifdef DENIED_ONLY
	if (ret == 0)
		return;
#endif
#ifdef EMIT_EVENTS
	emit_check(ctx, cap, ret, opts, uid);
#else
	add_check(cap, ret, opts, uid, kernel_stack);
#endif
}

#if defined(COUNT_NOAUDIT) && !defined(MODE_TRACEPOINT)
/* Memory accounting asks cap_capable(CAP_SYS_ADMIN, CAP_OPT_NOAUDIT) from
 * cap_vm_enough_memory() on every exec and mmap. Kernels that inline that call
 * (measured: Debian's 6.1) hide it from cap_capable hooks, so it is counted from
 * cap_vm_enough_memory itself; threads inside it are marked so that a
 * cap_capable hook that does see the check skips it instead of counting it twice. */
BPF_HASH(in_vm_enough, __u32, __u8, INFLIGHT_MAX_ENTRIES);

static __always_inline bool inside_vm_enough(void)
{
	__u32 tid = bpf_get_current_pid_tgid();

	return in_vm_enough.lookup(&tid) != 0;
}

static __always_inline void enter_vm_enough(void)
{
	__u32 tid = bpf_get_current_pid_tgid();
	__u8 one = 1;

	if (!is_wanted())
		return;
	if (in_vm_enough.update(&tid, &one))
		count_drop(DROP_INFLIGHT);
}

/* cap_vm_enough_memory() returns 1 when CAP_SYS_ADMIN was granted, or, since
 * Linux 6.12 (VM_ENOUGH_RETURNS_ERRNO), 0 when granted and an error when not. */
static __always_inline void leave_vm_enough(void *ctx, int ret)
{
#ifdef VM_ENOUGH_RETURNS_ERRNO
	int granted = ret == 0;
#else
	int granted = ret == 1;
#endif
	__u32 tid = bpf_get_current_pid_tgid();

	if (!in_vm_enough.lookup(&tid))
		return;
	in_vm_enough.delete(&tid);
	count_check(ctx, CAP_SYS_ADMIN, granted ? 0 : -1, CAP_OPT_NOAUDIT, reason_stack(ctx));
}
#else
static __always_inline bool inside_vm_enough(void)
{
	return false;
}
#endif

#if defined(MODE_FEXIT)

KRETFUNC_PROBE(cap_capable, const struct cred *cred, struct user_namespace *ns,
	       int cap, unsigned int opts, int ret)
{
	__u32 flags = decode_opts(opts);

	if (is_counted(flags) && is_wanted() && !inside_vm_enough() && own_creds(cred))
		count_check(ctx, cap, ret, flags, reason_stack(ctx));
	return 0;
}

#ifdef COUNT_NOAUDIT
KFUNC_PROBE(cap_vm_enough_memory, struct mm_struct *mm, long pages)
{
	enter_vm_enough();
	return 0;
}

KRETFUNC_PROBE(cap_vm_enough_memory, struct mm_struct *mm, long pages, int ret)
{
	leave_vm_enough(ctx, ret);
	return 0;
}
#endif

#elif defined(MODE_KPROBE)

#include <uapi/linux/ptrace.h>	/* struct pt_regs: the shim's, or the kernel's */

struct inflight_check {
	int cap;
	__u32 opts;
	int kernel_stack;	/* taken here: the return probe's stack has lost cap_capable's caller on old kernels */
};

/* What the entry probe saw, keyed by thread id, until the return probe. */
BPF_HASH(inflight, __u32, struct inflight_check, INFLIGHT_MAX_ENTRIES);

int kprobe__cap_capable(struct pt_regs *ctx, const struct cred *cred,
			struct user_namespace *ns, int cap, unsigned long opts)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct inflight_check check = { .cap = cap, .opts = decode_opts(opts) };

	if (!is_counted(check.opts) || !is_wanted() || inside_vm_enough() || !own_creds(cred))
		return 0;
	check.kernel_stack = reason_stack(ctx);
	if (inflight.update(&tid, &check))
		count_drop(DROP_INFLIGHT);
	return 0;
}

int kretprobe__cap_capable(struct pt_regs *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct inflight_check *check = inflight.lookup(&tid);

	if (!check)
		return 0;
	count_check(ctx, check->cap, PT_REGS_RC(ctx), check->opts, check->kernel_stack);
	inflight.delete(&tid);
	return 0;
}

#ifdef COUNT_NOAUDIT
int kprobe__cap_vm_enough_memory(struct pt_regs *ctx)
{
	enter_vm_enough();
	return 0;
}

int kretprobe__cap_vm_enough_memory(struct pt_regs *ctx)
{
	leave_vm_enough(ctx, PT_REGS_RC(ctx));
	return 0;
}
#endif

#elif defined(MODE_TRACEPOINT)

#ifdef NOAUDIT_CALLERS
/* The kernel functions that only ever ask without audit (cap_vm_enough_memory,
 * ns_capable_noaudit, ...), as [start, end) text addresses from kallsyms. */
struct text_range {
	__u64 start;
	__u64 end;
};

BPF_ARRAY(noaudit_callers, struct text_range, NOAUDIT_CALLERS);

/* Frames above the tracepoint that may hold the caller: cap_capable,
 * security_capable, then the function that asked. */
#define CALLER_DEPTH 4

/* CAP_OPT_NOAUDIT when a known non-audited caller is on the kernel stack. */
static __always_inline __u32 infer_opts(void *ctx)
{
	__u64 frames[CALLER_DEPTH] = {};

	if (bpf_get_stack(ctx, frames, sizeof(frames), 0) < 0)
		return 0;
#pragma unroll
	for (int i = 0; i < NOAUDIT_CALLERS; i++) {
		int index = i;
		struct text_range *range = noaudit_callers.lookup(&index);

		if (!range)
			continue;
#pragma unroll
		for (int depth = 0; depth < CALLER_DEPTH; depth++)
			if (frames[depth] >= range->start && frames[depth] < range->end)
				return CAP_OPT_NOAUDIT;
	}
	return 0;
}
#else
static __always_inline __u32 infer_opts(void *ctx)
{
	return 0;
}
#endif

/* The tracepoint (Linux 6.14+) has no opts field: audited and non-audited
 * checks are counted alike, and the exporter's probe_info says so, unless
 * NOAUDIT_CALLERS (run) tells them apart by their callers. */
TRACEPOINT_PROBE(capability, cap_capable)
{
	__u32 opts;

	if (!is_wanted())
		return 0;
	opts = infer_opts(args);
	if (is_counted(opts) && own_creds(args->cred))
		count_check(args, args->cap, args->ret, opts, reason_stack(args));
	return 0;
}

#else
#error "define one of MODE_FEXIT, MODE_KPROBE, MODE_TRACEPOINT"
#endif
