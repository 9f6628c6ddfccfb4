/* The services a host lends the plugin: a log sink and a clock. */
#ifndef RM_INTERNAL_HOST_H
#define RM_INTERNAL_HOST_H

#include <stdint.h>
#include <time.h>

#include "rm_plugin.h"

typedef struct rm_host {
    rm_host_services services; /* copied at negotiation; zeroed = none */
    int32_t log_level;         /* lines above this level are dropped */
} rm_host;

/** Sends one line to the host's sink (or stderr) if `level` passes. */
void rm_host_log(const rm_host *host, int32_t level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/** CLOCK_MONOTONIC in nanoseconds: one clock for every process of the
 *  machine (the node registry's shared times use it). */
uint64_t rm_monotonic_ns(void);

/** The CLOCK_MONOTONIC time `delay_ns` from now, for timed waits on
 *  condition variables that use that clock (clamped to a year). */
struct timespec rm_monotonic_after(uint64_t delay_ns);

/** Monotonic nanoseconds from the host's clock, or CLOCK_MONOTONIC. */
uint64_t rm_host_now_ns(const rm_host *host);

/** Static name of a log level ("error", ...), or NULL if out of range. */
const char *rm_log_level_name(int32_t level);

#endif
