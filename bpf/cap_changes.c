/* Count capability-set and securebits changes made by the syscalls that can make them.
 *
 * Two ways to see them, chosen by a -D define:
 * HOOK_COMMIT_CREDS_FENTRY or HOOK_COMMIT_CREDS_KPROBE: every credential change, whatever
 *   the syscall, is installed by commit_creds(new); on entry to it the old credentials are
 *   still the task's, so one program compares them, and takes the syscall from the task's
 *   saved user registers (capability.h's current_syscall(): PT_REGS_SYSCALL and friends).
 *   No syscall is hooked, so the syscalls that change nothing pay nothing. NR_<SYSCALL>:
 *   the machine's numbers of the tracked syscalls; other syscalls' commits are not counted.
 * Otherwise (kernels without fentry and kprobes; trace and run): on entry to each tracked
 *   syscall the thread's credentials are saved; on exit they are compared. While any
 *   syscall tracepoint is on, every syscall of every task takes the kernel's slower
 *   tracing path (docs/performance.md has its cost).
 * Either way each set that changed counts one (before, after) transition in a kernel map.
 * No loop over bits here: a 64-bit loop in 12 exit programs took the verifier 4 s; the
 * exporter expands the bits when it reads the map.
 * Options (-D): TASK_REAL_CRED and CRED_* byte offsets, read from BTF at start-up, and
 * CRED_BLOCK/CRED_BLOCK_SIZE, the span of struct cred that holds them all, read at once;
 * SNAPSHOTS_MAX_ENTRIES, CHANGES_MAX_ENTRIES; KEY_PROCESS (capability.h). For `capability-exporter trace`:
 * EMIT_EVENTS sends one event per changing syscall to user space (needs
 * TASK_REAL_PARENT and TASK_TGID), USER_STACKS, STACKS_MAX_ENTRIES.
 * For `capability-exporter run`: FOLLOW_TREE (bpf/tree.c's map), and RECORD_HELD,
 * which keeps the union of every permitted set seen after a syscall.
 */
#include "capability.h"

#if defined(HOOK_COMMIT_CREDS_FENTRY) || defined(HOOK_COMMIT_CREDS_KPROBE)
#define HOOK_COMMIT_CREDS
#endif

#ifdef FOLLOW_TREE
/* bpf/tree.c's map of the threads `capability-exporter run` follows (in_tree() is
 * repeated in cap_capable.c, which says why). */
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

/* Types the syscall tracepoint formats name; only their size matters here. */
typedef void *cap_user_header_t;
typedef void *cap_user_data_t;

#define PR_SET_KEEPCAPS 8
#define PR_CAPBSET_DROP 24
#define PR_SET_SECUREBITS 28
#define PR_CAP_AMBIENT 47

/* What entry saw, for the exit to compare; the arguments only when they are shown. */
struct snapshot {
	struct cred_state creds;
#ifdef EMIT_EVENTS
	__u64 args[ARGS_LEN];
	char path[PATH_LEN];
#endif
};

#ifndef HOOK_COMMIT_CREDS
/* LRU: a thread killed inside a syscall never reaches the exit tracepoint. */
BPF_TABLE("lru_hash", __u32, struct snapshot, snapshots, SNAPSHOTS_MAX_ENTRIES);
#endif
/* Per-CPU for the same reason as the checks map: no shared cache line on the hot path. */
BPF_PERCPU_HASH(changes, struct change_key, __u64, CHANGES_MAX_ENTRIES);
BPF_PERCPU_ARRAY(change_drops, __u64, CHANGE_DROP_SLOTS);

static __always_inline void count_drop(int slot)
{
	__u64 *drop = change_drops.lookup(&slot);

	if (drop)
		(*drop)++;
}

static __always_inline __u64 read_u64(void *base, long offset)
{
	__u64 value = 0;

	bpf_probe_read_kernel(&value, sizeof(value), base + offset);
	return value;
}

static __always_inline __u32 read_u32(void *base, long offset)
{
	__u32 value = 0;

	bpf_probe_read_kernel(&value, sizeof(value), base + offset);
	return value;
}

/* The members of struct cred that cred_state holds sit side by side (uid .. cap_ambient):
 * one read of the span takes them all. */
struct cred_block {
	__u8 bytes[CRED_BLOCK_SIZE];
};

#define BLOCK_U64(block, offset) (*(__u64 *)&(block).bytes[(offset) - CRED_BLOCK])
#define BLOCK_U32(block, offset) (*(__u32 *)&(block).bytes[(offset) - CRED_BLOCK])

static __always_inline void read_cred_state(void *cred, struct cred_state *state)
{
	struct cred_block block;

	/* On a failed read the helper zeroes the block. */
	bpf_probe_read_kernel(&block, sizeof(block), cred + CRED_BLOCK);
	state->sets[SET_EFFECTIVE] = BLOCK_U64(block, CRED_CAP_EFFECTIVE);
	state->sets[SET_PERMITTED] = BLOCK_U64(block, CRED_CAP_PERMITTED);
	state->sets[SET_INHERITABLE] = BLOCK_U64(block, CRED_CAP_INHERITABLE);
	state->sets[SET_BOUNDING] = BLOCK_U64(block, CRED_CAP_BSET);
	state->sets[SET_AMBIENT] = BLOCK_U64(block, CRED_CAP_AMBIENT);
	state->securebits = BLOCK_U32(block, CRED_SECUREBITS);
	state->uid = BLOCK_U32(block, CRED_UID);
	state->euid = BLOCK_U32(block, CRED_EUID);
}

/* real_cred is what /proc/<pid>/status shows; cred may be overridden for a while. */
static __always_inline void read_creds(struct cred_state *state)
{
	void *task = (void *)bpf_get_current_task();

	read_cred_state((void *)read_u64(task, TASK_REAL_CRED), state);
}

static __always_inline bool creds_differ(struct cred_state *a, struct cred_state *b)
{
	bool differ = a->securebits != b->securebits;

#pragma unroll
	for (int set = 0; set < SET_COUNT; set++)
		differ |= a->sets[set] != b->sets[set];
	return differ;
}

#ifndef HOOK_COMMIT_CREDS
static __always_inline void save_creds(__u64 arg0, __u64 arg1, __u64 arg2, const char *path)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct snapshot snap = {};

	if (!in_tree())
		return;
	read_creds(&snap.creds);
#ifdef EMIT_EVENTS
	snap.args[0] = arg0;
	snap.args[1] = arg1;
	snap.args[2] = arg2;
	if (path)
		bpf_probe_read_user_str(&snap.path, sizeof(snap.path), path);
#endif
	if (snapshots.update(&tid, &snap))
		count_drop(DROP_SNAPSHOTS);
}
#endif

#ifdef EMIT_EVENTS
/* As in cap_capable.c. */
BPF_ARRAY(trace_stopped, __u32, 1);

static __always_inline bool trace_is_stopped(void)
{
	int zero = 0;
	__u32 *stopped = trace_stopped.lookup(&zero);

	return stopped && *stopped;
}

BPF_PERF_OUTPUT(change_events);
#ifdef USER_STACKS
/* BPF_STACK_TRACE would need the kernel's roundup_pow_of_two(); the size is one already. */
BPF_TABLE("stacktrace", int, struct bpf_stacktrace, stacks, STACKS_MAX_ENTRIES);
#endif

/* Only syscalls that changed a set or securebits reach user space. Big: kept off the stack. */
BPF_PERCPU_ARRAY(event_buffer, struct change_event, 1);

static __always_inline void emit_change(void *ctx, __u32 syscall, long ret, struct snapshot *snap,
					struct cred_state *after)
{
	int zero = 0;
	struct change_event *event = event_buffer.lookup(&zero);
	void *task = (void *)bpf_get_current_task();
	void *parent = (void *)read_u64(task, TASK_REAL_PARENT);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!event || trace_is_stopped() || !creds_differ(&snap->creds, after))
		return;
	event->ts = bpf_ktime_get_ns();
	event->pid = pid_tgid;
	event->tgid = pid_tgid >> 32;
	event->ppid = read_u32(parent, TASK_TGID);
	event->syscall = syscall;
	event->ret = ret;
	__builtin_memcpy(event->args, snap->args, sizeof(event->args));
	__builtin_memcpy(event->path, snap->path, sizeof(event->path));
	event->before = snap->creds;
	event->after = *after;
	event->user_stack = -1;
#ifdef USER_STACKS
	event->user_stack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
#endif
	bpf_get_current_comm(&event->comm, sizeof(event->comm));
	change_events.perf_submit(ctx, event, sizeof(*event));
}
#endif

#ifdef RECORD_HELD
/* One per-CPU slot: each CPU ORs into its own copy, and run ORs the copies. */
BPF_PERCPU_ARRAY(held, __u64, 1);

/* What the tree holds is what its permitted sets were after execve (or any other change). */
static __always_inline void record_held(struct cred_state *after)
{
	int zero = 0;
	__u64 *permitted = held.lookup(&zero);

	if (permitted)
		*permitted |= after->sets[SET_PERMITTED];
}
#endif

/* Only a full map loses a count; another CPU inserting the key first does not. */
static __always_inline void count_change(struct change_key *key, __u64 before, __u64 after)
{
	__u64 zero = 0, *count;

	if (before == after)
		return;
	key->before = before;
	key->after = after;
	count = changes.lookup(key);
	if (!count) {
		int err = changes.insert(key, &zero);

		if (err && err != -EEXIST) {
			count_drop(DROP_CHANGES);
			return;
		}
		count = changes.lookup(key);
	}
	if (count)
		(*count)++;
}

/* Each set (and securebits) that differs between before and after, counted under key's comm and syscall. */
static __always_inline void count_changes(struct change_key *key, struct cred_state *before,
					  struct cred_state *after)
{
#pragma unroll
	for (int set = 0; set < SET_COUNT; set++) {
		key->set = set;
		count_change(key, before->sets[set], after->sets[set]);
	}
	key->set = SET_SECUREBITS;
	count_change(key, before->securebits, after->securebits);
}

#ifdef NR_CAPSET
/* The tracked syscall (enum change_syscall) of a native syscall number; -1 for the others:
 * unshare() into a new user namespace, say, is not what the tracepoints would count. */
static __always_inline int change_syscall(__u32 nr)
{
	switch (nr) {
	case NR_CAPSET: return SYS_CAPSET;
	case NR_PRCTL: return SYS_PRCTL;
	case NR_SETUID: return SYS_SETUID;
	case NR_SETGID: return SYS_SETGID;
	case NR_SETREUID: return SYS_SETREUID;
	case NR_SETREGID: return SYS_SETREGID;
	case NR_SETRESUID: return SYS_SETRESUID;
	case NR_SETRESGID: return SYS_SETRESGID;
	case NR_SETFSUID: return SYS_SETFSUID;
	case NR_SETFSGID: return SYS_SETFSGID;
	case NR_EXECVE: return SYS_EXECVE;
	case NR_EXECVEAT: return SYS_EXECVEAT;
	}
	return -1;
}
#endif

#ifdef HOOK_COMMIT_CREDS

#if defined(EMIT_EVENTS) || defined(FOLLOW_TREE) || defined(RECORD_HELD)
#error "trace and run take capability changes from the syscall tracepoints"
#endif
#ifndef PT_REGS_SYSCALL
#error "the commit_creds hook needs PT_REGS_SYSCALL for current_syscall()"
#endif

/* On entry to commit_creds(new) the task's credentials are still the old ones. After
 * execve the comm is already the new program's, as the exit tracepoint would see it. */
static __always_inline void compare_commit(void *new_cred)
{
	void *task = (void *)bpf_get_current_task();
	struct cred_state before = {}, after = {};
	struct change_key key = {};
	int syscall;

	read_cred_state((void *)read_u64(task, TASK_REAL_CRED), &before);
	read_cred_state(new_cred, &after);
	if (!creds_differ(&before, &after))
		return;
	syscall = change_syscall(current_syscall());
	if (syscall < 0)
		return;
	key.syscall = syscall;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	read_process_name(key.process);
	count_changes(&key, &before, &after);
}

#ifdef HOOK_COMMIT_CREDS_FENTRY
struct cred;

KFUNC_PROBE(commit_creds, struct cred *new)
{
	compare_commit(new);
	return 0;
}
#else
#include <uapi/linux/ptrace.h>	/* struct pt_regs: the shim's, or the kernel's */

int kprobe__commit_creds(struct pt_regs *ctx)
{
	compare_commit((void *)PT_REGS_PARM1(ctx));
	return 0;
}
#endif

#else	/* the syscall tracepoints */

static __always_inline void compare_creds(void *ctx, __u32 syscall, long ret)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct snapshot *snap = snapshots.lookup(&tid);
	struct cred_state *before, after = {};
	struct change_key key = { .syscall = syscall };

	if (!snap)
		return;
	before = &snap->creds;
	read_creds(&after);
#ifdef RECORD_HELD
	record_held(&after);
#endif
#ifdef EMIT_EVENTS
	emit_change(ctx, syscall, ret, snap, &after);
	snapshots.delete(&tid);
	return;
#endif
	/* After execve the comm is the new program's: the one that holds the new sets. */
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	read_process_name(key.process);
	count_changes(&key, before, &after);
	snapshots.delete(&tid);
}

/* prctl options that cannot change capabilities or securebits cost one compare. */
static __always_inline bool prctl_may_change(long option)
{
	return option == PR_CAPBSET_DROP || option == PR_CAP_AMBIENT ||
	       option == PR_SET_SECUREBITS || option == PR_SET_KEEPCAPS;
}

#ifdef SHARED_SYSCALL_PROGRAMS
/* The exporter's own fallback: one program for the entries of all twelve syscalls and one for
 * their exits, each attached to the twelve tracepoints by the loader (probes.py): two programs
 * to compile and verify instead of 24. Every syscall tracepoint's record starts alike: the
 * common fields, the syscall number, then the arguments (entry) or the result (exit). */
#if defined(EMIT_EVENTS) || defined(FOLLOW_TREE) || defined(RECORD_HELD)
#error "trace and run take each syscall's own tracepoint programs"
#endif
#ifndef NR_CAPSET
#error "SHARED_SYSCALL_PROGRAMS needs the NR_<SYSCALL> numbers"
#endif

struct syscall_enter_record {
	__u64 common;
	int nr;
	int pad;
	unsigned long args[6];
};

struct syscall_exit_record {
	__u64 common;
	int nr;
	int pad;
	long ret;
};

int syscall_enter(struct syscall_enter_record *ctx)
{
	if (ctx->nr == NR_PRCTL && !prctl_may_change(ctx->args[0]))
		return 0;
	save_creds(0, 0, 0, 0);
	return 0;
}

int syscall_exit(struct syscall_exit_record *ctx)
{
	int syscall = change_syscall(ctx->nr);

	if (syscall >= 0)
		compare_creds(ctx, syscall, ctx->ret);
	return 0;
}

#else

TRACEPOINT_PROBE(syscalls, sys_enter_prctl)
{
	if (prctl_may_change(args->option))
		save_creds(args->option, args->arg2, args->arg3, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_prctl)
{
	compare_creds(args, SYS_PRCTL, args->ret);
	return 0;
}

/* The entry saves the arguments trace shows: a0..a2, and a user-space file name. */
#define TRACE_SYSCALL(name, id, a0, a1, a2, path)			\
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)			\
	{								\
		save_creds((__u64)(a0), (__u64)(a1), (__u64)(a2), path); \
		return 0;						\
	}								\
	TRACEPOINT_PROBE(syscalls, sys_exit_##name)			\
	{								\
		compare_creds(args, id, args->ret);			\
		return 0;						\
	}

TRACE_SYSCALL(capset, SYS_CAPSET, args->header, args->data, 0, 0)
TRACE_SYSCALL(setuid, SYS_SETUID, args->uid, 0, 0, 0)
TRACE_SYSCALL(setgid, SYS_SETGID, args->gid, 0, 0, 0)
TRACE_SYSCALL(setreuid, SYS_SETREUID, args->ruid, args->euid, 0, 0)
TRACE_SYSCALL(setregid, SYS_SETREGID, args->rgid, args->egid, 0, 0)
TRACE_SYSCALL(setresuid, SYS_SETRESUID, args->ruid, args->euid, args->suid, 0)
TRACE_SYSCALL(setresgid, SYS_SETRESGID, args->rgid, args->egid, args->sgid, 0)
TRACE_SYSCALL(setfsuid, SYS_SETFSUID, args->uid, 0, 0, 0)
TRACE_SYSCALL(setfsgid, SYS_SETFSGID, args->gid, 0, 0, 0)
TRACE_SYSCALL(execve, SYS_EXECVE, 0, 0, 0, args->filename)
TRACE_SYSCALL(execveat, SYS_EXECVEAT, args->fd, args->flags, 0, args->filename)

#endif

#endif
