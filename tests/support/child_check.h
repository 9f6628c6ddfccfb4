/* Checks that must run in a forked child (a private mount namespace, a
 * signal that kills the process, a fork-generation test): the child writes
 * failure lines to a pipe and exits 0 (passed), 1 (failed) or 77 (skipped,
 * with the reason), and the parent turns that into Criterion results.
 * Children never use cr_* themselves. Test code, header-only; one copy per
 * test program. */
#ifndef RM_TEST_CHILD_CHECK_H
#define RM_TEST_CHILD_CHECK_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int child_fd = -1;
static int child_failures;

__attribute__((format(printf, 2, 3), unused)) static void child_fail(int line,
                                                                     const char *format, ...)
{
    char message[512];
    int n = snprintf(message, sizeof message, "line %d: ", line);
    va_list args;
    va_start(args, format);
    vsnprintf(message + n, sizeof message - (size_t)n, format, args);
    va_end(args);
    size_t length = strlen(message);
    if (length < sizeof message - 1)
        message[length++] = '\n';
    if (write(child_fd, message, length) < 0) {
        /* nothing more a child can do */
    }
    child_failures++;
}

#define CHILD_EXPECT(condition, ...)                 \
    do {                                             \
        if (!(condition))                            \
            child_fail(__LINE__, __VA_ARGS__);       \
    } while (0)

__attribute__((noreturn, unused)) static void child_skip(const char *reason)
{
    if (write(child_fd, reason, strlen(reason)) < 0) {
        /* nothing more a child can do */
    }
    _exit(77);
}

static inline void no_core_dumps(void)
{
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
}

/* Runs body(arg) in a forked child and reports what it found. */
__attribute__((unused)) static void run_in_child(void (*body)(void *), void *arg,
                                                 const char *what)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0, "fork: %s", strerror(errno));
    if (child == 0) {
        close(fds[0]);
        child_fd = fds[1];
        child_failures = 0;
        no_core_dumps();
        body(arg);
        _exit(child_failures == 0 ? 0 : 1);
    }
    close(fds[1]);
    char report[8192];
    size_t used = 0;
    ssize_t n;
    while ((n = read(fds[0], report + used, sizeof report - 1 - used)) > 0 ||
           (n < 0 && errno == EINTR))
        used += n > 0 ? (size_t)n : 0;
    report[used] = '\0';
    close(fds[0]);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        cr_skip_test("%s: %s", what, report);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: child status %#x\n%s", what,
              status, report);
}

/* Gives this (child) process a mount namespace with its own /dev/shm: a
 * tmpfs of `size` (e.g. "256k", "16m"), read-only if asked (no segment can
 * be created, as without /dev/shm). Not root: a user namespace maps us to
 * root in it. Returns 0, or -1 with errno. */
static inline int private_dev_shm(const char *size, int read_only)
{
    if (unshare(CLONE_NEWNS) != 0) {
        if (errno != EPERM)
            return -1;
        char map[64];
        unsigned uid = (unsigned)geteuid(), gid = (unsigned)getegid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return -1;
        const char *files[3] = {"/proc/self/setgroups", "/proc/self/uid_map",
                                "/proc/self/gid_map"};
        for (int i = 0; i < 3; i++) {
            if (i == 0)
                snprintf(map, sizeof map, "deny");
            else
                snprintf(map, sizeof map, "0 %u 1", i == 1 ? uid : gid);
            int fd = open(files[i], O_WRONLY);
            if (fd < 0 || write(fd, map, strlen(map)) < 0) {
                if (fd >= 0)
                    close(fd);
                return -1;
            }
            close(fd);
        }
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return -1;
    char options[64];
    snprintf(options, sizeof options, "size=%s,mode=1777", size);
    unsigned long flags = MS_NOSUID | MS_NODEV | (read_only ? MS_RDONLY : 0);
    return mount("tmpfs", "/dev/shm", "tmpfs", flags, options);
}

/* In a child: a private /dev/shm of `size`, or skip when this machine
 * cannot give one (no namespaces for this user), or fail. */
__attribute__((unused)) static void child_private_dev_shm(const char *size, int read_only)
{
    if (private_dev_shm(size, read_only) == 0)
        return;
    char reason[128];
    snprintf(reason, sizeof reason, "no private /dev/shm: %s", strerror(errno));
    if (errno == EPERM || errno == EACCES || errno == ENOSYS || errno == EINVAL)
        child_skip(reason);
    child_fail(__LINE__, "%s", reason);
    _exit(1);
}

#endif
