/* Syscall loops for bench/bench.py, timed in C so that the interpreter adds nothing.
 *
 * usage: loops kill N        N kill(pid, 0) of a child running as nobody (as root: one CAP_KILL check each)
 *        loops setuid N      N setuid(0) (as root: one CAP_SETUID check each, and a credential commit)
 *        loops getppid N     N getppid() (no capability check)
 *        loops fill PREFIX FIRST COUNT
 *                            for i in FIRST..FIRST+COUNT-1: rename this thread PREFIX<i> and make
 *                            one CAP_KILL check, so that the checks map gains COUNT distinct comms
 *        loops hold PREFIX COUNT
 *                            start COUNT children named PREFIX<i> that wait; print "ready", and stop
 *                            them all when stdin closes
 * The timed modes print the mean nanoseconds per call of the timed loop, after a warm-up.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOBODY 65534

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static pid_t nobody_child(void)
{
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		if (setgid(NOBODY) || setuid(NOBODY))
			_exit(1);
		for (;;)
			pause();
	}
	return pid;
}

static void stop(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static long call(const char *mode, pid_t target)
{
	if (strcmp(mode, "kill") == 0)
		return kill(target, 0);
	if (strcmp(mode, "setuid") == 0)
		return syscall(SYS_setuid, 0);
	return syscall(SYS_getppid);
}

static int timed(const char *mode, long n)
{
	pid_t target = 0;
	long i, failed = 0;
	double start;

	if (strcmp(mode, "kill") == 0) {
		target = nobody_child();
		usleep(20000); /* let the child become nobody */
	}
	/* One branch per mode, outside the timed loop's body. */
	for (i = 0; i < n / 10 + 1; i++)
		call(mode, target);
	start = now_ns();
	if (strcmp(mode, "kill") == 0) {
		for (i = 0; i < n; i++)
			failed += kill(target, 0) != 0;
	} else if (strcmp(mode, "setuid") == 0) {
		for (i = 0; i < n; i++)
			failed += syscall(SYS_setuid, 0) != 0;
	} else {
		for (i = 0; i < n; i++)
			syscall(SYS_getppid);
	}
	printf("%.2f\n", (now_ns() - start) / n);
	if (target)
		stop(target);
	if (failed) {
		fprintf(stderr, "%s: %ld of %ld calls failed (not root?)\n", mode, failed, n);
		return 1;
	}
	return 0;
}

static int fill(const char *prefix, long first, long count)
{
	pid_t target = nobody_child();
	char name[32];
	long i;

	usleep(20000);
	for (i = first; i < first + count; i++) {
		snprintf(name, sizeof(name), "%s%ld", prefix, i);
		prctl(PR_SET_NAME, name, 0, 0, 0);
		kill(target, 0);
	}
	prctl(PR_SET_NAME, "loops", 0, 0, 0);
	stop(target);
	return 0;
}

static int hold(const char *prefix, long count)
{
	pid_t *children = calloc(count, sizeof(*children));
	char name[32], line[8];
	long i;

	for (i = 0; i < count; i++) {
		children[i] = fork();
		if (children[i] == 0) {
			snprintf(name, sizeof(name), "%s%ld", prefix, i);
			prctl(PR_SET_NAME, name, 0, 0, 0);
			prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
			for (;;)
				pause();
		}
	}
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
	for (i = 0; i < count; i++)
		stop(children[i]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "fill") != 0 && strcmp(argv[1], "hold") != 0)
		return timed(argv[1], atol(argv[2]));
	if (argc == 5 && strcmp(argv[1], "fill") == 0)
		return fill(argv[2], atol(argv[3]), atol(argv[4]));
	if (argc == 4 && strcmp(argv[1], "hold") == 0)
		return hold(argv[2], atol(argv[3]));
	fprintf(stderr, "usage: loops kill|setuid|getppid N | fill PREFIX FIRST COUNT | hold PREFIX COUNT\n");
	return 2;
}
