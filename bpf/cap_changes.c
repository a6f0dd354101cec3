/* Count capability-set and securebits changes made by the syscalls that can make them.
 *
 * On entry to each syscall the thread's credentials are saved; on exit they are
 * compared, and each set that changed counts one (before, after) transition in a
 * kernel map. No loop over bits here: a 64-bit loop in 12 exit programs took the
 * verifier 4 s; the exporter expands the bits when it reads the map.
 * Options (-D): TASK_REAL_CRED and CRED_* byte offsets, read from BTF at start-up;
 * SNAPSHOTS_MAX_ENTRIES, CHANGES_MAX_ENTRIES.
 */
#include "capability.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Types the syscall tracepoint formats name; only their size matters here. */
typedef void *cap_user_header_t;
typedef void *cap_user_data_t;

#define PR_SET_KEEPCAPS 8
#define PR_CAPBSET_DROP 24
#define PR_SET_SECUREBITS 28
#define PR_CAP_AMBIENT 47

/* LRU: a thread killed inside a syscall never reaches the exit tracepoint. */
BPF_TABLE("lru_hash", __u32, struct cred_state, snapshots, SNAPSHOTS_MAX_ENTRIES);
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

/* real_cred is what /proc/<pid>/status shows; cred may be overridden for a while. */
static __always_inline void read_creds(struct cred_state *state)
{
	void *task = (void *)bpf_get_current_task();
	void *cred = (void *)read_u64(task, TASK_REAL_CRED);

	state->sets[SET_EFFECTIVE] = read_u64(cred, CRED_CAP_EFFECTIVE);
	state->sets[SET_PERMITTED] = read_u64(cred, CRED_CAP_PERMITTED);
	state->sets[SET_INHERITABLE] = read_u64(cred, CRED_CAP_INHERITABLE);
	state->sets[SET_BOUNDING] = read_u64(cred, CRED_CAP_BSET);
	state->sets[SET_AMBIENT] = read_u64(cred, CRED_CAP_AMBIENT);
	state->securebits = read_u32(cred, CRED_SECUREBITS);
	state->uid = read_u32(cred, CRED_UID);
	state->euid = read_u32(cred, CRED_EUID);
}

static __always_inline void save_creds(void)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct cred_state state = {};

	read_creds(&state);
	if (snapshots.update(&tid, &state))
		count_drop(DROP_SNAPSHOTS);
}

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

static __always_inline void compare_creds(__u32 syscall)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct cred_state *before = snapshots.lookup(&tid);
	struct cred_state after = {};
	struct change_key key = { .syscall = syscall };

	if (!before)
		return;
	read_creds(&after);
	/* After execve the comm is the new program's: the one that holds the new sets. */
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
#pragma unroll
	for (int set = 0; set < SET_COUNT; set++) {
		key.set = set;
		count_change(&key, before->sets[set], after.sets[set]);
	}
	key.set = SET_SECUREBITS;
	count_change(&key, before->securebits, after.securebits);
	snapshots.delete(&tid);
}

/* prctl options that cannot change capabilities or securebits cost one compare. */
static __always_inline bool prctl_may_change(long option)
{
	return option == PR_CAPBSET_DROP || option == PR_CAP_AMBIENT ||
	       option == PR_SET_SECUREBITS || option == PR_SET_KEEPCAPS;
}

TRACEPOINT_PROBE(syscalls, sys_enter_prctl)
{
	if (prctl_may_change(args->option))
		save_creds();
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_prctl)
{
	compare_creds(SYS_PRCTL);
	return 0;
}

#define TRACE_SYSCALL(name, id)						\
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)			\
	{								\
		save_creds();						\
		return 0;						\
	}								\
	TRACEPOINT_PROBE(syscalls, sys_exit_##name)			\
	{								\
		compare_creds(id);					\
		return 0;						\
	}

TRACE_SYSCALL(capset, SYS_CAPSET)
TRACE_SYSCALL(setuid, SYS_SETUID)
TRACE_SYSCALL(setgid, SYS_SETGID)
TRACE_SYSCALL(setreuid, SYS_SETREUID)
TRACE_SYSCALL(setregid, SYS_SETREGID)
TRACE_SYSCALL(setresuid, SYS_SETRESUID)
TRACE_SYSCALL(setresgid, SYS_SETRESGID)
TRACE_SYSCALL(setfsuid, SYS_SETFSUID)
TRACE_SYSCALL(setfsgid, SYS_SETFSGID)
TRACE_SYSCALL(execve, SYS_EXECVE)
TRACE_SYSCALL(execveat, SYS_EXECVEAT)
