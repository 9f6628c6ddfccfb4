/* The test side of the fake CUDA driver (tests/fake_cuda): where it is,
 * its call counters, IPC handles as text, removing what killed processes
 * left in /dev/shm, and passing VMM descriptors between processes
 * (SCM_RIGHTS: the fake does not do that part, as the driver does not).
 *
 * Nothing here asserts: cuda_peer (no Criterion) and suite finis use it. */
#ifndef RM_TEST_FAKE_CUDA_H
#define RM_TEST_FAKE_CUDA_H

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "shm_cleanup.h"

/* The fake with cuGetProcAddress_v2, and the one without it (set by
 * tests/meson.build). */
static inline const char *fake_cuda_library(void)
{
    return getenv("FAKE_CUDA_LIBRARY");
}

static inline const char *fake_cuda_library_noproc(void)
{
    return getenv("FAKE_CUDA_LIBRARY_NOPROC");
}

/* The fake's counter `name` in this process (see tests/fake_cuda), read
 * through the copy the loader opened; -2 when `library` is not loaded. */
static inline long long fake_cuda_counter(const char *library, const char *name)
{
    void *handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL)
        return -2;
    void *symbol = dlsym(handle, "fake_cuda_calls");
    long long (*calls)(const char *) = NULL;
    memcpy(&calls, &symbol, sizeof calls);
    long long count = calls != NULL ? calls(name) : -3;
    dlclose(handle);
    return count;
}

/* 64 bytes as 128 lowercase hex digits and back (0, or -1 if malformed). */
static inline void fake_cuda_hex(const void *bytes, char text[129])
{
    const uint8_t *b = bytes;
    for (int i = 0; i < 64; i++)
        snprintf(text + 2 * i, 3, "%02x", b[i]);
}

static inline int fake_cuda_unhex(const char *text, void *bytes)
{
    uint8_t *b = bytes;
    if (strlen(text) != 128)
        return -1;
    for (int i = 0; i < 64; i++) {
        unsigned value;
        if (sscanf(text + 2 * i, "%2x", &value) != 1)
            return -1;
        b[i] = (uint8_t)value;
    }
    return 0;
}

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" to 16 bytes (0, or -1). */
static inline int fake_cuda_parse_uuid(const char *text, uint8_t uuid[16])
{
    if (strncmp(text, "GPU-", 4) == 0)
        text += 4;
    int digits = 0;
    for (; *text != '\0'; text++) {
        if (*text == '-')
            continue;
        unsigned value;
        char pair[2] = {*text, '\0'};
        if (digits >= 32 || sscanf(pair, "%1x", &value) != 1)
            return -1;
        if (digits % 2 == 0)
            uuid[digits / 2] = (uint8_t)(value << 4);
        else
            uuid[digits / 2] |= (uint8_t)value;
        digits++;
    }
    return digits == 32 ? 0 : -1;
}

/* Makes the fake's device 0 (and, inherited, a peer's) a device of this
 * process's own, by a UUID no other process uses: cuMemGetInfo_v2 counts
 * the memory of every process on a device, so tests that check its
 * numbers must not share a device with tests running beside them. Set
 * before the first open. */
static inline void fake_cuda_use_private_device(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char uuid[48];
    snprintf(uuid, sizeof uuid, "GPU-%08lx-%04x-4000-8000-%012llx",
             (unsigned long)getpid() & 0xffffffffUL, (unsigned)now.tv_sec & 0xffffu,
             (unsigned long long)now.tv_nsec);
    setenv("FAKE_CUDA_UUIDS", uuid, 1);
}

/* The bytes the tests write and check: byte i of a buffer filled with
 * `seed`. */
static inline uint8_t fake_cuda_pattern(uint64_t seed, size_t i)
{
    return (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

/* Objects the fake made for process `pid` ("fakecu.<pid>.*"). */
static inline long fake_cuda_objects_of(pid_t pid)
{
    char prefix[40];
    snprintf(prefix, sizeof prefix, "fakecu.%ld.", (long)pid);
    return shm_each_prefix(prefix, NULL, NULL);
}

static inline void fake_cuda_remove_if_dead(const char *path, const char *name, void *user)
{
    long *removed = user;
    long pid = strtol(name + strlen("fakecu."), NULL, 10);
    if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH && unlink(path) == 0)
        (*removed)++;
}

/* Removes the objects of processes that no longer exist (killed ones
 * cannot clean up); how many. A zombie still counts as existing: reap
 * it first. */
static inline long fake_cuda_reap_dead(void)
{
    long removed = 0;
    shm_each_prefix("fakecu.", fake_cuda_remove_if_dead, &removed);
    return removed;
}

/* Descriptors open in this process (-1 if /proc/self/fd is unreadable). */
static inline long fake_cuda_open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return -1;
    long count = 0;
    for (const struct dirent *entry; (entry = readdir(dir)) != NULL;)
        count += entry->d_name[0] != '.';
    closedir(dir);
    return count - 1; /* the directory's own descriptor */
}

/* Sends descriptor `fd` over the Unix socket `socket` (SCM_RIGHTS, one
 * byte of data); 0, or -1 with errno. */
static inline int fake_cuda_send_fd(int socket, int fd)
{
    char byte = 'F';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                             .msg_controllen = sizeof control.space};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fd, sizeof fd);
    for (;;) {
        ssize_t sent = sendmsg(socket, &message, MSG_NOSIGNAL);
        if (sent == 1)
            return 0;
        if (sent < 0 && errno == EINTR)
            continue;
        return -1;
    }
}

/* The descriptor the other end sent (close-on-exec here), or -1 with
 * errno (EPROTO: a message without one). Blocks. */
static inline int fake_cuda_recv_fd(int socket)
{
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                             .msg_controllen = sizeof control.space};
    ssize_t got;
    while ((got = recvmsg(socket, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    if (got <= 0)
        return -1;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (header == NULL || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS ||
        header->cmsg_len != CMSG_LEN(sizeof(int))) {
        errno = EPROTO;
        return -1;
    }
    int fd;
    memcpy(&fd, CMSG_DATA(header), sizeof fd);
    return fd;
}

/* How many of this process's descriptors and mappings are the fake's VMM
 * memory (memfds named "fakecu.vmm.*"): 0 once everything is released
 * and unmapped; -1 if /proc is unreadable. */
static inline long fake_cuda_vmm_memfds(void)
{
    static const char name[] = "memfd:fakecu.vmm.";
    long count = 0;
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return -1;
    for (const struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        ssize_t length = readlink(path, target, sizeof target - 1);
        if (length > 0) {
            target[length] = '\0';
            count += strstr(target, name) != NULL;
        }
    }
    closedir(dir);
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return -1;
    char line[512];
    while (fgets(line, sizeof line, maps) != NULL)
        count += strstr(line, name) != NULL;
    fclose(maps);
    return count;
}

#endif
