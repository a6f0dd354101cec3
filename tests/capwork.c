/* A C workload with frame pointers, so that trace -U can name its own functions.
 * usage: capwork PATH -- chown PATH to uid 65533 once, then linger so the tracer
 * can still read this process's memory map when it symbolizes the stack. */
#include <stdio.h>
#include <unistd.h>

/* Two levels: a frame-pointer unwinder skips the frame that calls into libc,
 * so the function the test looks for is the caller's caller. */
__attribute__((noinline)) int capwork_do_chown(const char *path)
{
	return chown(path, 65533, -1);
}

__attribute__((noinline)) int capwork_marked_chown(const char *path)
{
	return capwork_do_chown(path) + 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: capwork PATH\n");
		return 2;
	}
	capwork_marked_chown(argv[1]);
	sleep(2);
	return 0;
}
