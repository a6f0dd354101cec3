/* The running kernel's version comes in as -DLINUX_VERSION_CODE, read from uname at start-up. */
#ifndef CAPEXP_SHIM_VERSION_H
#define CAPEXP_SHIM_VERSION_H
#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))
#ifndef LINUX_VERSION_CODE
#error "LINUX_VERSION_CODE must be passed with -D"
#endif
#endif
