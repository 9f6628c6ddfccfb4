/* Who a process is, beyond its pid: pids are reused, so shared state that
 * records an owner or a holder records the pid and the process's start
 * time, and a process counts as alive only while both match. */
#ifndef RM_HOOKS_PROCESS_IDENTITY_H
#define RM_HOOKS_PROCESS_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/**
 * The start time of `pid` in clock ticks since boot (field 22 of
 * /proc/<pid>/stat), or 0 when the process does not exist, is a zombie, or
 * /proc cannot say.
 */
uint64_t rm_process_start_time(pid_t pid);

/** The calling process's start time; cached per process (fork-safe). */
uint64_t rm_process_self_start_time(void);

/**
 * True when `pid` runs and started at `start_time`. A start time of 0 (not
 * recorded yet) falls back to the pid alone. A zombie is dead: it holds
 * nothing any more.
 */
bool rm_process_alive(pid_t pid, uint64_t start_time);

#endif
