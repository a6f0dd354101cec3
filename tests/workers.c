/* A multi-threaded program whose threads rename themselves, for the process label's test.
 *
 * usage: workers N [drop-bounding|linger|at-once]
 *   Four threads rename themselves worker-0 .. worker-3 and each makes exactly N setuid(0)
 *   calls, one thread after another; with at-once, all four at the same time (where the
 *   kernel preempts fexit programs, that is what loses checks). With drop-bounding,
 *   worker-0 then drops CAP_SYS_MODULE from its bounding set.
 *   The main thread keeps the program's name and checks nothing itself; with linger it
 *   then prints "done" and waits until stdin closes.
 *   setuid is called as a raw syscall: glibc's setuid() makes every thread of the process
 *   call it, which would count each call four times, under every thread's name.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 4
#define CAP_SYS_MODULE 16

static long calls;
static int drop_bounding;
static int at_once;
static pthread_mutex_t turn = PTHREAD_MUTEX_INITIALIZER;

static void *work(void *arg)
{
	long index = (long)arg;
	char name[16];

	snprintf(name, sizeof(name), "worker-%ld", index);
	if (prctl(PR_SET_NAME, name, 0, 0, 0))
		return "prctl(PR_SET_NAME)";
	if (!at_once)
		pthread_mutex_lock(&turn);
	long i = 0;
	while (i < calls && syscall(SYS_setuid, 0) == 0)
		i++;
	if (!at_once)
		pthread_mutex_unlock(&turn);
	if (i < calls)
		return "setuid(0)";
	if (drop_bounding && index == 0 && prctl(PR_CAPBSET_DROP, CAP_SYS_MODULE, 0, 0, 0))
		return "prctl(PR_CAPBSET_DROP)";
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t threads[THREADS];
	int failed = 0;

	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "drop-bounding") && strcmp(argv[2], "linger")
				     && strcmp(argv[2], "at-once"))) {
		fprintf(stderr, "usage: workers N [drop-bounding|linger|at-once]\n");
		return 2;
	}
	calls = atol(argv[1]);
	drop_bounding = argc == 3 && !strcmp(argv[2], "drop-bounding");
	at_once = argc == 3 && !strcmp(argv[2], "at-once");
	for (long i = 0; i < THREADS; i++)
		if (pthread_create(&threads[i], NULL, work, (void *)i)) {
			perror("pthread_create");
			return 1;
		}
	for (int i = 0; i < THREADS; i++) {
		void *error;

		pthread_join(threads[i], &error);
		if (error) {
			perror(error);
			failed = 1;
		}
	}
	if (argc == 3 && !strcmp(argv[2], "linger")) {
		printf("done\n");
		fflush(stdout);
		while (getchar() != EOF)
			;
	}
	return failed;
}
