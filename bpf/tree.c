/* Follow one process tree, for `capability-exporter run`: the thread it started and
 * every thread forked from the tree since. Thread ids leave the map when their
 * thread exits, so a recycled pid cannot bring a stranger in.
 *
 * Its own module, compiled once before the others, which use the map as "extern":
 * cap_capable.c is compiled once per attach mode tried, and a public map defined
 * there would leave the changes program bound to the copy of a mode that failed.
 * Raw tracepoints, because BCC 0.26 cannot build TRACEPOINT_PROBE's struct from
 * 6.x's sched_process_fork format (__data_loc comm).
 *
 * Options (-D): FOLLOW_TREE=n, the most threads at once; TASK_PID, the byte
 * offset of task_struct.pid, from BTF.
 */
#include "capability.h"

BPF_TABLE_PUBLIC("hash", __u32, __u8, tree, FOLLOW_TREE);
/* Forks not followed because the map was full: their checks are missing. */
BPF_ARRAY(tree_drops, __u64, 1);

/* Runs in the forking thread, before the child can run: nothing of the child is missed.
 * The arguments are (struct task_struct *parent, struct task_struct *child). */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	__u32 parent = bpf_get_current_pid_tgid(), child = 0;
	__u8 one = 1;
	int zero = 0;
	__u64 *drops;

	if (!tree.lookup(&parent))
		return 0;
	bpf_probe_read_kernel(&child, sizeof(child), (void *)ctx->args[1] + TASK_PID);
	if (tree.update(&child, &one)) {
		drops = tree_drops.lookup(&zero);
		if (drops)
			__sync_fetch_and_add(drops, 1);
	}
	return 0;
}

RAW_TRACEPOINT_PROBE(sched_process_exit)
{
	__u32 tid = bpf_get_current_pid_tgid();

	tree.delete(&tid);
	return 0;
}
