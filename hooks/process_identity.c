/* Process identity from /proc: pid plus start time. */
#include "process_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads /proc/<pid>/stat. Returns 1 and the state and start time, 0 when
 * the process does not exist, -1 when /proc cannot be read at all. */
static int read_stat(pid_t pid, char *state, uint64_t *start_time)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH ? 0 : -1;
    char text[1024];
    ssize_t got;
    do
        got = read(fd, text, sizeof text - 1);
    while (got < 0 && errno == EINTR);
    close(fd);
    if (got <= 0)
        return got == 0 || errno == ESRCH ? 0 : -1;
    text[got] = '\0';
    /* The command name (field 2) may hold blanks and parentheses; fields
     * after it start after the last ')'. */
    char *cursor = strrchr(text, ')');
    if (cursor == NULL || cursor[1] != ' ')
        return -1;
    cursor += 2;
    *state = *cursor;
    /* Field 3 is the state; field 22 the start time: skip 19 fields. */
    for (int field = 3; field < 22; field++) {
        cursor = strchr(cursor, ' ');
        if (cursor == NULL)
            return -1;
        cursor++;
    }
    char *end;
    errno = 0;
    unsigned long long value = strtoull(cursor, &end, 10);
    if (errno != 0 || end == cursor)
        return -1;
    *start_time = value;
    return 1;
}

uint64_t rm_process_start_time(pid_t pid)
{
    char state = 0;
    uint64_t start = 0;
    if (pid <= 0 || read_stat(pid, &state, &start) != 1)
        return 0;
    return state == 'Z' || state == 'X' ? 0 : start;
}

uint64_t rm_process_self_start_time(void)
{
    /* pid and start time packed per process, so a child of fork() reads
     * its own instead of the parent's cached one. */
    static _Atomic pid_t cached_pid;
    static _Atomic uint64_t cached_start;
    pid_t self = getpid();
    if (atomic_load_explicit(&cached_pid, memory_order_acquire) == self)
        return atomic_load_explicit(&cached_start, memory_order_relaxed);
    uint64_t start = rm_process_start_time(self);
    atomic_store_explicit(&cached_start, start, memory_order_relaxed);
    atomic_store_explicit(&cached_pid, self, memory_order_release);
    return start;
}

bool rm_process_alive(pid_t pid, uint64_t start_time)
{
    if (pid <= 0)
        return false;
    char state = 0;
    uint64_t start = 0;
    int found = read_stat(pid, &state, &start);
    if (found == 0)
        return false;
    if (found < 0) /* no /proc: the pid is all there is */
        return kill(pid, 0) == 0 || errno == EPERM;
    if (state == 'Z' || state == 'X')
        return false;
    return start_time == 0 || start == start_time;
}
