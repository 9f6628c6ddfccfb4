/* The services a host lends the plugin: a log sink and a clock. */
#include "host.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *rm_log_level_name(int32_t level)
{
    if (level < RM_LOG_ERROR || level > RM_LOG_DEBUG)
        return NULL;
    return level_names[level];
}

void rm_host_log(const rm_host *host, int32_t level, const char *format, ...)
{
    if (host == NULL || level > host->log_level)
        return;
    char line[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (host->services.log != NULL) {
        host->services.log(host->services.user, level, line);
        return;
    }
    /* One fprintf per line keeps concurrent lines whole. */
    fprintf(stderr, "rm_plugin: %s: %s\n", level_names[level], line);
}

#define NS_PER_S UINT64_C(1000000000)

uint64_t rm_monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * NS_PER_S + (uint64_t)now.tv_nsec;
}

struct timespec rm_monotonic_after(uint64_t delay_ns)
{
    struct timespec when;
    clock_gettime(CLOCK_MONOTONIC, &when);
    /* Far-off deadlines are clamped to a year: time_t arithmetic on
     * UINT64_MAX would overflow, and waiters wake before then anyway
     * whenever something changes. */
    const uint64_t year_ns = UINT64_C(365) * 24 * 3600 * NS_PER_S;
    if (delay_ns > year_ns)
        delay_ns = year_ns;
    uint64_t nanoseconds = (uint64_t)when.tv_nsec + delay_ns % NS_PER_S;
    when.tv_sec += (time_t)(delay_ns / NS_PER_S + nanoseconds / NS_PER_S);
    when.tv_nsec = (long)(nanoseconds % NS_PER_S);
    return when;
}

uint64_t rm_host_now_ns(const rm_host *host)
{
    if (host != NULL && host->services.monotonic_ns != NULL)
        return host->services.monotonic_ns(host->services.user);
    return rm_monotonic_ns();
}
