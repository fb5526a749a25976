/* base/clock.h: the monotonic clock, the one time source for every deadline
 * and measured duration (never the wall clock, which can jump). */
#pragma once

#include <stdint.h>
#include <time.h>

static inline uint64_t vh_clock_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static inline uint64_t vh_clock_ms(void) {
        return vh_clock_ns() / 1000000u;
}
