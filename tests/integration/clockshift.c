/* Licensed under the Apache License, Version 2.0. */

/*
 * LD_PRELOAD shim for the fault tests: the wall clock (gettimeofday,
 * clock_gettime(CLOCK_REALTIME*), time) of the process runs off by the
 * microseconds held, as a native 64-bit integer, in the file named by
 * $IMC_CLOCK_SHIFT_FILE; a test rewrites the file to step the clock while
 * httpd runs. CLOCK_MONOTONIC and the kernel's own clocks are untouched.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const volatile int64_t *shift_map;
static int shift_tried;

static int64_t shift_usec(void)
{
    if (!__atomic_load_n(&shift_tried, __ATOMIC_ACQUIRE)) {
        const char *path = getenv("IMC_CLOCK_SHIFT_FILE");
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        void *m = fd >= 0 ? mmap(NULL, sizeof(int64_t), PROT_READ,
                                 MAP_SHARED, fd, 0)
                          : MAP_FAILED;
        if (fd >= 0) {
            close(fd);
        }
        if (m != MAP_FAILED) {
            shift_map = m;
        }
        __atomic_store_n(&shift_tried, 1, __ATOMIC_RELEASE);
    }
    return shift_map ? *shift_map : 0;
}

static int real_clock_gettime(clockid_t clk, struct timespec *ts)
{
    return (int)syscall(SYS_clock_gettime, clk, ts);
}

static void shifted(struct timespec *ts)
{
    int64_t ns = (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec +
                 shift_usec() * 1000;
    ts->tv_sec = (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    int rc = real_clock_gettime(clk, ts);
    if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE)) {
        shifted(ts);
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    real_clock_gettime(CLOCK_REALTIME, &ts);
    shifted(&ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *t)
{
    struct timespec ts;
    real_clock_gettime(CLOCK_REALTIME, &ts);
    shifted(&ts);
    if (t) {
        *t = ts.tv_sec;
    }
    return ts.tv_sec;
}
