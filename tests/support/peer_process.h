/* The test's side of a peer process: fork + exec of a small host with its
 * stdin and stdout on pipes, its output read a line at a time with a
 * deadline, and its end reaped with a kill after a timeout.
 *
 * Nothing here asserts, so that forked children (which must not run
 * Criterion's assertions) and suite finis (which run after a failure) can
 * use it; the suites wrap it in asserting helpers. */
#ifndef RM_TEST_PEER_PROCESS_H
#define RM_TEST_PEER_PROCESS_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PEER_LINE_BYTES 8192

extern char **environ;

static inline uint64_t peer_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static inline void peer_sleep_ms(long ms)
{
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

static inline bool peer_starts_with(const char *text, const char *prefix)
{
    return text != NULL && strncmp(text, prefix, strlen(prefix)) == 0;
}

/* The pipes to one peer and what has been read from it but not yet
 * returned as a line. */
typedef struct peer_io {
    int to;   /* its stdin; -1 once closed */
    int from; /* its stdout; -1 once closed */
    size_t have;
    char buffer[PEER_LINE_BYTES];
    char line[PEER_LINE_BYTES];
    char why[256]; /* why the last call failed */
} peer_io;

/* Forks and execs argv[0] with stdin and stdout on new pipes (io->to,
 * io->from) and stderr on err_fd (-1: this process's). fd_map holds pairs
 * (descriptor here, number in the peer), -1 terminated; a source must not
 * be another pair's target (dup it out of the way first). env NULL:
 * environ. The peer gets SIGKILL when this process dies, so that a crashed
 * test leaves no process behind. Its pid, or -1 with errno (no pipe left
 * open). */
static inline pid_t peer_spawn(char *const argv[], char *const env[], int err_fd,
                               const int *fd_map, peer_io *io)
{
    int in[2], out[2];
    io->to = io->from = -1;
    io->have = 0;
    if (pipe2(in, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) != 0) {
        int saved = errno;
        close(in[0]);
        close(in[1]);
        errno = saved;
        return -1;
    }
    pid_t parent = getpid();
    fflush(NULL); /* or the child's exit path could flush our buffers twice */
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls until exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) /* the parent died before prctl */
            _exit(126);
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        if (err_fd >= 0)
            dup2(err_fd, STDERR_FILENO);
        for (const int *map = fd_map; map != NULL && map[0] >= 0; map += 2)
            dup2(map[0], map[1]);
        execve(argv[0], argv, env != NULL ? env : environ);
        _exit(127);
    }
    int saved = errno;
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        errno = saved;
        return -1;
    }
    io->to = in[1];
    io->from = out[0];
    return pid;
}

static inline int peer_send_all(int fd, const void *data, size_t size)
{
    const uint8_t *at = data;
    while (size > 0) {
        ssize_t wrote = write(fd, at, size);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote <= 0)
            return -1;
        at += wrote;
        size -= (size_t)wrote;
    }
    return 0;
}

/* `line` and a newline; 0, or -1 with io->why. */
static inline int peer_send_line(peer_io *io, const char *line)
{
    if (peer_send_all(io->to, line, strlen(line)) != 0 || peer_send_all(io->to, "\n", 1) != 0) {
        snprintf(io->why, sizeof io->why, "cannot write to it: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* The peer's next line (valid until the next call), or NULL when its
 * output ended, failed or had no whole line within timeout_ms (io->why
 * says which). */
static inline const char *peer_read_line(peer_io *io, int timeout_ms)
{
    uint64_t deadline = peer_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        char *newline = memchr(io->buffer, '\n', io->have);
        if (newline != NULL) {
            size_t length = (size_t)(newline - io->buffer);
            memcpy(io->line, io->buffer, length);
            io->line[length] = '\0';
            io->have -= length + 1;
            memmove(io->buffer, newline + 1, io->have);
            return io->line;
        }
        if (io->have == sizeof io->buffer) {
            snprintf(io->why, sizeof io->why, "a line longer than %zu bytes", sizeof io->buffer);
            return NULL;
        }
        uint64_t now = peer_now_ms();
        int left = now >= deadline ? 0 : (int)(deadline - now);
        struct pollfd ready = {.fd = io->from, .events = POLLIN};
        int polled = poll(&ready, 1, left);
        if (polled < 0 && errno == EINTR)
            continue;
        if (polled == 0) {
            snprintf(io->why, sizeof io->why, "no line within %d ms", timeout_ms);
            return NULL;
        }
        ssize_t got = read(io->from, io->buffer + io->have, sizeof io->buffer - io->have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            snprintf(io->why, sizeof io->why, "its output ended (%s)",
                     got == 0 ? "exited, crashed or killed" : strerror(errno));
            return NULL;
        }
        io->have += (size_t)got;
    }
}

/* Waits up to timeout_ms for the process to end, then SIGKILLs it (and
 * says so in *killed, which may be NULL). Its wait status, or -1 when it
 * cannot be waited for. */
static inline int peer_reap(pid_t pid, int timeout_ms, bool *killed)
{
    uint64_t deadline = peer_now_ms() + (uint64_t)timeout_ms;
    int status = 0;
    if (killed != NULL)
        *killed = false;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid)
            return status;
        if (done < 0 && errno != EINTR)
            return -1;
        if (peer_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            if (killed != NULL)
                *killed = true;
            return status;
        }
        peer_sleep_ms(2);
    }
}

/* Closes both pipes (either may be closed already). */
static inline void peer_io_close(peer_io *io)
{
    if (io->to >= 0)
        close(io->to);
    if (io->from >= 0)
        close(io->from);
    io->to = io->from = -1;
}

#endif
