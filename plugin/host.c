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

uint64_t rm_host_now_ns(const rm_host *host)
{
    if (host != NULL && host->services.monotonic_ns != NULL)
        return host->services.monotonic_ns(host->services.user);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}
