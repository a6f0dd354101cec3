/* Layouts shared by the BPF programs and exporter/layouts.py: change both together. */
#ifndef CAPEXP_CAPABILITY_H
#define CAPEXP_CAPABILITY_H

#define COMM_LEN 16

/* errno values are user ABI; without kernel headers nothing else defines them. */
#ifndef EEXIST
#define EEXIST 17
#endif

/* cap_capable()'s 4th argument since Linux 5.1 (before: int audit). */
#define CAP_OPT_NOAUDIT 0x2
#define CAP_OPT_INSETID 0x4

/* uid, cgroup_id and opts stay 0 unless a label needs them, so that
 * series the user did not ask for collapse into one map entry. */
struct check_key {
	char comm[COMM_LEN];
	__u32 cap;
	__u32 uid;
	__u64 cgroup_id;
	__u32 opts;	/* CAP_OPT_NOAUDIT | CAP_OPT_INSETID, also on kernels before 5.1 */
	__u32 pad;
};

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

#endif
