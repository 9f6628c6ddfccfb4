/* GPU-resident model weights (ABI 1.4, REF: gpu-weights) across real
 * processes: this process loads the real rm_plugin.so and forks + execs
 * gpu_weights_peer ($RM_GPU_WEIGHTS_PEER), a small host that gets, checks,
 * writes into, holds and releases device models on command (protocol at
 * the top of gpu_weights_peer.c).
 *
 * Covered, in the order of the sections below:
 *  1. 8 processes released together on one "name@cuda:0" run one loader
 *     and all read its bytes;
 *  2. a loader SIGKILLed mid-load is taken over by one of two waiters
 *     within 2 s, with one copy of device memory after;
 *  3. the loader's process ending (context destroyed, exit(), _exit(),
 *     SIGKILL) loses nothing while another process has the weights, and a
 *     newcomer still attaches; when the last process that had them ends
 *     or is killed, the entry goes (sweep, registry_reclaim) and the next
 *     get loads; a process that released the model still serves it;
 *     contexts and threads of one process share one mapping; a loader
 *     failure reaches the waiter; a process without VMM cannot attach; a
 *     stopped holder is skipped, none answering is RM_E_SYSTEM; newcomers
 *     racing right after the last holder was killed load once; equivalent
 *     keys and a 200-byte name meet; namespaces are apart; a process
 *     without "cuda-ipc" keeps "name@cuda:N" apart;
 *  4. a write through the sealed weights fails, in the loader's process
 *     too;
 *  5. ten processes holding a 64 MiB model use one copy of device memory;
 *  6. processes that list the devices in opposite orders meet on one
 *     entry keyed by UUID, each with its own ordinal (-1 where unseen);
 *  7. rows and model_to_dlpack of device and host models; a view outlives
 *     its handle;
 *  8. model_evict (of the key, and of every idle model), the TTL,
 *     registry.max_bytes and a full table give the device memory back
 *     within a sweep, and the next get loads again, also before the old
 *     mappings are swept;
 *  9. process-scope device buffers;
 * 10. alloc_device_buffer's errors and the loader's fields beside a device
 *     buffer; a failed call uses up nothing (ask again, or for a host
 *     buffer); zero-filled buffers; driver failures while sealing and
 *     attaching.
 *
 * One binary, two suites (tests/meson.build), as test_cuda_tensors:
 * "cuda" against the fake driver (FAKE_CUDA_LIBRARY, named to the plugin
 * by cuda.driver), "gpu" against the real driver, where main() exits 77
 * when cuda_info() finds no usable device. Device memory is read and
 * written only through the driver in the device's primary context
 * (cuda_tensor_common.h), so the tests run unchanged on a GPU; the checks
 * that need the fake (its counters, its knobs, exact device memory
 * figures) are skipped there.
 *
 * Every test uses its own node namespace ("gw<pid><tag>"); the tests that
 * read cuMemGetInfo_v2 use a fake device of their own (a UUID no other
 * process uses), so tests running beside them do not change the figures.
 * The suite's fini kills and reaps the peers still running, prints what
 * they said when the test did not reach its end, destroys the contexts
 * left, and unlinks what the namespaces, the counter files and dead
 * processes left. Peers also die with this process (PR_SET_PDEATHSIG).
 *
 * No sleep stands in for synchronisation: start barriers are pipes, and a
 * condition that the plugin reaches in the background (a sweep) is polled
 * with a deadline. Run time (2 cores): about 7 s, 10 s under ASan+UBSan
 * (4 s of it the stopped holders' timeouts). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_cuda.h"
#include "gpu_suite_main.h"
#include "gpu_weights_common.h"
#include "peer_process.h"
#include "plugin_fixture.h"
#include "shm_cleanup.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)

#define REPLY_MS 20000   /* a peer that says nothing for this long is stuck */
#define SWEEP_MS 10000   /* what a background sweep may take, with room */
#define MAX_PEERS 16
#define MAX_NAMESPACES 4
#define TRANSCRIPT_BYTES 8192
#define MAX_ROWS 8

/* ------------------------------------------------------------------------ */
/* Bookkeeping                                                              */
/* ------------------------------------------------------------------------ */

typedef struct peer {
    char label[32];
    pid_t pid;
    peer_io io;
    bool reaped;
    int status;
    char reply[PEER_LINE_BYTES];       /* the last line asked for */
    char transcript[TRANSCRIPT_BYTES]; /* every line it printed */
    size_t transcript_used;
} peer;

static const char *peer_path;
static peer *peers[MAX_PEERS];
static int peer_count;
static char namespaces[MAX_NAMESPACES][33];
static int namespace_count;
static char counters[MAX_NAMESPACES][64];
static int counter_count;
static td_driver test_driver;
static bool test_driver_open;
static bool test_finished;

static void suite_init(void)
{
    fixture_load();
    peer_path = getenv("RM_GPU_WEIGHTS_PEER");
    cr_assert_not_null(peer_path, "RM_GPU_WEIGHTS_PEER must name gpu_weights_peer");
    test_finished = false;
}

static void suite_fini(void)
{
    for (int i = 0; i < peer_count; i++) {
        peer *p = peers[i];
        if (!p->reaped && p->pid > 0) {
            kill(p->pid, SIGKILL);
            p->status = peer_reap(p->pid, 10000, NULL);
            p->reaped = true;
        }
        while (p->io.from >= 0 && peer_read_line(&p->io, 0) != NULL) {
            /* what it printed last goes into the story below */
            size_t length = strlen(p->io.line);
            if (p->transcript_used + length + 2 < sizeof p->transcript) {
                memcpy(p->transcript + p->transcript_used, p->io.line, length);
                p->transcript_used += length;
                p->transcript[p->transcript_used++] = '\n';
                p->transcript[p->transcript_used] = '\0';
            }
        }
        if (!test_finished)
            fprintf(stderr, "---- %s, pid %d, wait status %#x, stdout:\n%s", p->label,
                    (int)p->pid, p->status, p->transcript);
        peer_io_close(&p->io);
        free(p);
        peers[i] = NULL;
    }
    peer_count = 0;
    fixture_close_all();
    for (int i = 0; i < namespace_count; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "rmreg.%.32s.", namespaces[i]);
        (void)shm_unlink_prefix(prefix);
    }
    for (int i = 0; i < counter_count; i++)
        unlink(counters[i]);
    if (test_driver_open)
        td_close(&test_driver);
    test_driver_open = false;
    fake_cuda_reap_dead();
    fixture_unload();
}

TestSuite(gpu_weights, .init = suite_init, .fini = suite_fini, .timeout = 120);

/* A node namespace for this test, "gw<pid><tag>", cleaned up by the fini. */
static const char *make_namespace(const char *tag)
{
    cr_assert_lt(namespace_count, MAX_NAMESPACES);
    char *name = namespaces[namespace_count++];
    snprintf(name, sizeof namespaces[0], "gw%ld%s", (long)getpid(), tag);
    return name;
}

/* An empty file whose size counts the loader calls of every peer given it
 * (--counter), removed by the fini. */
static const char *make_counter(const char *tag)
{
    cr_assert_lt(counter_count, MAX_NAMESPACES);
    char *path = counters[counter_count++];
    snprintf(path, sizeof counters[0], "/tmp/gw-%ld-%s.count", (long)getpid(), tag);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    close(fd);
    return path;
}

static long long loader_calls_in(const char *counter)
{
    struct stat st;
    cr_assert_eq(stat(counter, &st), 0, "%s: %s", counter, strerror(errno));
    return (long long)st.st_size;
}

/* The driver as this process's host code reaches it. */
static td_driver *driver(void)
{
    if (!test_driver_open)
        cr_assert_eq(td_open(&test_driver), 0, "the CUDA driver for the test: %s",
                     test_driver.why);
    test_driver_open = true;
    return &test_driver;
}

static void fake_only(const char *what)
{
    if (!td_is_fake())
        cr_skip_test("%s needs the fake driver", what);
}

/* Makes this test's device 0 (and its peers', who inherit the variable) a
 * fake device no other process uses, so that cuMemGetInfo_v2 counts this
 * test's memory alone. Nothing on a real GPU. */
static void private_device(void)
{
    if (td_is_fake())
        fake_cuda_use_private_device();
}

/* ------------------------------------------------------------------------ */
/* Peers                                                                    */
/* ------------------------------------------------------------------------ */

static void transcript_add(peer *p, const char *text)
{
    size_t length = strlen(text);
    if (p->transcript_used + length + 2 >= sizeof p->transcript)
        return;
    memcpy(p->transcript + p->transcript_used, text, length);
    p->transcript_used += length;
    p->transcript[p->transcript_used++] = '\n';
    p->transcript[p->transcript_used] = '\0';
}

/* Starts gpu_weights_peer in namespace `ns` with this test's driver, the
 * counter file (or NULL), descriptor `barrier_fd` as its descriptor 3 (or
 * -1) and the extra "KEY=VALUE" settings (NULL-terminated); waits for
 * "ready". It gets this process's environment as it is now (FAKE_CUDA_*
 * knobs included). */
static peer *start_peer(const char *label, const char *ns, const char *counter, int barrier_fd,
                        ...)
{
    cr_assert_lt(peer_count, MAX_PEERS);
    peer *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    p->io.to = p->io.from = -1;
    peers[peer_count++] = p;
    snprintf(p->label, sizeof p->label, "%s", label);

    const char *argv[48];
    int argc = 0;
    argv[argc++] = peer_path;
    argv[argc++] = "--ns";
    argv[argc++] = ns;
    char driver_setting[PATH_MAX + 16];
    if (td_is_fake()) {
        snprintf(driver_setting, sizeof driver_setting, "cuda.driver=%s", td_library());
        argv[argc++] = "--set";
        argv[argc++] = driver_setting;
    }
    if (counter != NULL) {
        argv[argc++] = "--counter";
        argv[argc++] = counter;
    }
    va_list args;
    va_start(args, barrier_fd);
    for (const char *setting; argc < 44 && (setting = va_arg(args, const char *)) != NULL;) {
        argv[argc++] = "--set";
        argv[argc++] = setting;
    }
    va_end(args);
    argv[argc] = NULL;
    /* Out of the way of 0..3, so that no dup2 in the child clobbers it. */
    int fd_map[3] = {-1, -1, -1};
    if (barrier_fd >= 0) {
        fd_map[0] = fcntl(barrier_fd, F_DUPFD_CLOEXEC, 10);
        fd_map[1] = 3;
        cr_assert_geq(fd_map[0], 0, "dup: %s", strerror(errno));
    }
    p->pid = peer_spawn((char *const *)argv, NULL, -1, fd_map, &p->io);
    int spawn_errno = errno;
    if (fd_map[0] >= 0)
        close(fd_map[0]);
    cr_assert_gt(p->pid, 0, "cannot start %s: %s", peer_path, strerror(spawn_errno));
    const char *line = peer_read_line(&p->io, REPLY_MS);
    if (line != NULL)
        transcript_add(p, line);
    cr_assert(peer_starts_with(line, "ready "), "%s (pid %d) did not start: %s", label,
              (int)p->pid, line != NULL ? line : p->io.why);
    return p;
}

/* Reads until a line that starts with `prefix` (the lines before it stay in
 * the transcript) and returns a copy (p->reply, until the next read).
 * Fails the test on the end of its output, a timeout, or a "fail" line. */
static const char *expect_line(peer *p, const char *prefix, int timeout_ms)
{
    uint64_t deadline = peer_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = peer_now_ms();
        const char *line = peer_read_line(&p->io, now >= deadline ? 0 : (int)(deadline - now));
        cr_assert_not_null(line, "%s (pid %d): no \"%s\" line: %s; it printed:\n%s", p->label,
                           (int)p->pid, prefix, p->io.why, p->transcript);
        transcript_add(p, line);
        cr_assert(!peer_starts_with(line, "fail "), "%s (pid %d): %s; it printed:\n%s",
                  p->label, (int)p->pid, line, p->transcript);
        if (peer_starts_with(line, prefix)) {
            snprintf(p->reply, sizeof p->reply, "%s", line);
            return p->reply;
        }
    }
}

/* A command's reply: the next "ok" or "err" line (the loader's lines before
 * it stay in the transcript). */
static const char *reply_of(peer *p, int timeout_ms)
{
    uint64_t deadline = peer_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = peer_now_ms();
        const char *line = peer_read_line(&p->io, now >= deadline ? 0 : (int)(deadline - now));
        cr_assert_not_null(line, "%s (pid %d): no reply: %s; it printed:\n%s", p->label,
                           (int)p->pid, p->io.why, p->transcript);
        transcript_add(p, line);
        cr_assert(!peer_starts_with(line, "fail "), "%s (pid %d): %s; it printed:\n%s",
                  p->label, (int)p->pid, line, p->transcript);
        if (peer_starts_with(line, "ok") || peer_starts_with(line, "err ")) {
            snprintf(p->reply, sizeof p->reply, "%s", line);
            return p->reply;
        }
    }
}

static void send_line(peer *p, const char *line)
{
    char shown[PEER_LINE_BYTES];
    snprintf(shown, sizeof shown, "> %s", line);
    transcript_add(p, shown);
    cr_assert_eq(peer_send_line(&p->io, line), 0, "%s (pid %d): %s", p->label, (int)p->pid,
                 p->io.why);
}

__attribute__((format(printf, 2, 3))) static void send_to(peer *p, const char *format, ...)
{
    char line[PEER_LINE_BYTES];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    send_line(p, line);
}

/* A command whose reply must start with "ok"; the reply. */
__attribute__((format(printf, 2, 3))) static const char *call_ok(peer *p, const char *format,
                                                                 ...)
{
    char line[PEER_LINE_BYTES];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    send_line(p, line);
    const char *reply = reply_of(p, REPLY_MS);
    cr_assert(peer_starts_with(reply, "ok"), "%s (pid %d), `%s` answered: %s", p->label,
              (int)p->pid, line, reply);
    return reply;
}

/* "get KEY SEED BYTES [options]" that must succeed: the reply. */
static const char *peer_get(peer *p, const char *key, uint64_t seed, uint64_t bytes,
                            const char *options)
{
    send_to(p, "get %s %" PRIu64 " %" PRIu64 " %s", key, seed, bytes,
            options != NULL ? options : "");
    const char *reply = reply_of(p, REPLY_MS);
    cr_assert(peer_starts_with(reply, "ok"), "%s (pid %d): get %s: %s", p->label, (int)p->pid,
              key, reply);
    return reply;
}

static int id_of(const char *reply)
{
    int64_t id = gw_field_int(reply, "id", -1);
    cr_assert_geq(id, 0, "no id in %s", reply);
    return (int)id;
}

/* The peer reads model `id` back: every byte is the loader's pattern. */
static void expect_peer_bytes(peer *p, int id, uint64_t bytes)
{
    const char *reply = call_ok(p, "check %d", id);
    cr_assert_eq(gw_field_u64(reply, "checked", 0), bytes, "%s: %s", p->label, reply);
}

static long long peer_counter(peer *p, const char *name)
{
    const char *reply = call_ok(p, "counter %s", name);
    long long value = -9999;
    cr_assert(sscanf(reply, "ok %lld", &value) == 1, "not a number: %s", reply);
    return value;
}

/* (total - free) of the peer's device `ordinal`. */
static uint64_t peer_used(peer *p, int ordinal)
{
    const char *reply = call_ok(p, "meminfo %d", ordinal);
    uint64_t used = gw_field_u64(reply, "used", UINT64_MAX);
    cr_assert_neq(used, UINT64_MAX, "%s", reply);
    return used;
}

/* The peer's registry rows, each line copied into rows[0..capacity); the
 * count. */
static int peer_rows(peer *p, char (*rows)[1024], int capacity)
{
    const char *reply = call_ok(p, "rows");
    int count = (int)gw_field_int(reply, "count", -1);
    cr_assert_geq(count, 0, "%s", reply);
    for (int i = 0; i < count; i++) {
        const char *row = expect_line(p, "row ", REPLY_MS);
        if (i < capacity)
            snprintf(rows[i], sizeof rows[i], "%s", row);
    }
    return count;
}

static int peer_wait(peer *p, int timeout_ms)
{
    if (p->reaped)
        return p->status;
    bool killed = false;
    p->status = peer_reap(p->pid, timeout_ms, &killed);
    p->reaped = true;
    cr_assert(!killed, "%s (pid %d) did not end within %d ms; it printed:\n%s", p->label,
              (int)p->pid, timeout_ms, p->transcript);
    return p->status;
}

/* "quit": releases, destroys its context, exits 0. */
static void quit_peer(peer *p)
{
    send_to(p, "quit");
    expect_line(p, "ok bye", REPLY_MS);
    int status = peer_wait(p, REPLY_MS);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status %#x; it printed:\n%s",
              p->label, status, p->transcript);
}

static void kill_peer(peer *p)
{
    cr_assert_eq(kill(p->pid, SIGKILL), 0, "kill %d: %s", (int)p->pid, strerror(errno));
    int status = peer_wait(p, 10000);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "%s: status %#x", p->label,
              status);
}

/* Whether the peer's main thread sleeps (state S in /proc): after its
 * "calling" line it is inside model_get_or_load, so it is waiting there. */
static bool sleeps(pid_t pid)
{
    char path[96], text[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, (int)pid);
    FILE *file = fopen(path, "re");
    if (file == NULL)
        return false;
    size_t got = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[got] = '\0';
    const char *paren = strrchr(text, ')');
    return paren != NULL && paren[1] == ' ' && paren[2] == 'S';
}

/* Waits until the peer, after its "calling" line, blocks inside the plugin
 * (asleep in 5 samples in a row, 10 ms apart). */
static void wait_until_blocked(peer *p)
{
    expect_line(p, "calling", REPLY_MS);
    uint64_t deadline = peer_now_ms() + REPLY_MS;
    int in_a_row = 0;
    while (in_a_row < 5 && peer_now_ms() < deadline) {
        in_a_row = sleeps(p->pid) ? in_a_row + 1 : 0;
        peer_sleep_ms(10);
    }
    cr_assert_eq(in_a_row, 5, "%s (pid %d) never blocked in model_get_or_load; it printed:\n%s",
                 p->label, (int)p->pid, p->transcript);
}

/* ------------------------------------------------------------------------ */
/* Contexts and loaders of this process                                     */
/* ------------------------------------------------------------------------ */

/* A context with this test's driver and key/value pairs (NULL-ended);
 * the code, *out tracked for the fini. */
static int32_t try_context(rm_context **out, ...)
{
    const char *pairs[34];
    size_t count = 0;
    if (td_is_fake()) {
        pairs[count++] = "cuda.driver";
        pairs[count++] = td_library();
    }
    va_list args;
    va_start(args, out);
    for (const char *word; count < 32 && (word = va_arg(args, const char *)) != NULL;)
        pairs[count++] = word;
    va_end(args);
    pairs[count] = NULL;
    int32_t rc = fixture_context(out, pairs);
    if (rc == RM_OK)
        fixture_track(*out);
    return rc;
}

#define new_context(out, ...)                                                              \
    do {                                                                                   \
        int32_t rc_ = try_context((out), __VA_ARGS__, NULL);                               \
        cr_assert_eq(rc_, RM_OK, "context_create: %s: %s", vt->error_name(rc_),            \
                     vt->context_last_error(NULL));                                        \
    } while (0)

#define expect_code(rc, expected, context, what)                                           \
    do {                                                                                   \
        int32_t got_ = (rc);                                                               \
        cr_assert_eq(got_, (expected), "%s: %s (%d), expected %s: %s", (what),            \
                     vt->error_name(got_), (int)got_, vt->error_name(expected),            \
                     vt->context_last_error(context));                                     \
    } while (0)

#define expect_ok(rc, context, what) expect_code((rc), RM_OK, (context), (what))

/* What the loaders of this process do, and what they saw. */
typedef enum buffer_plan {
    PLAN_DEVICE,        /* one device buffer, filled with the pattern */
    PLAN_DEVICE_DEVICE, /* a second device buffer after the first */
    PLAN_HOST_DEVICE,   /* a host buffer, then a device buffer */
    PLAN_DEVICE_HOST,   /* a device buffer, then a host buffer */
    PLAN_NULL_POINTER,  /* alloc_device_buffer without out_device_pointer */
    PLAN_ZERO_BYTES,    /* alloc_device_buffer of 0 bytes */
    PLAN_HUGE_BYTES,    /* alloc_device_buffer of 2^48 + 1 bytes */
    PLAN_HALF,          /* one device buffer, the first half filled */
    PLAN_RETRY,         /* a device buffer of 0 bytes (fails), then PLAN_DEVICE */
    PLAN_HOST_FALLBACK, /* a device buffer; when it fails, a host buffer */
    PLAN_SET_MODEL,     /* PLAN_DEVICE, then model = the buffer, bytes = 1 */
    PLAN_SET_DESTROY,   /* PLAN_DEVICE, then a destroy callback */
    PLAN_OTHER_MODEL,   /* PLAN_DEVICE, then model = a host pointer */
} buffer_plan;

typedef struct test_loader {
    rm_context *context;
    buffer_plan plan;
    int ordinal;
    uint64_t seed;
    uint64_t bytes;
    int calls;
    /* The call the plan expects to fail: its code and message. */
    int32_t failed_rc;
    char failed_message[1024];
    /* What the device buffer was. */
    uint64_t pointer;
    void *stream;
} test_loader;

static atomic_int destroy_calls;

static void count_destroy(void *model, void *user)
{
    (void)model;
    (void)user;
    atomic_fetch_add(&destroy_calls, 1);
}

static int32_t record_failure(test_loader *state, int32_t rc)
{
    state->failed_rc = rc;
    snprintf(state->failed_message, sizeof state->failed_message, "%s",
             rc == RM_OK ? "" : vt->context_last_error(state->context));
    return rc;
}

static int32_t run_test_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    test_loader *state = user;
    state->calls++;
    state->failed_rc = RM_OK;
    state->failed_message[0] = '\0';
    if (!RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out))
        return record_failure(state, RM_E_NOT_SHAREABLE);
    uint64_t pointer = 0;
    void *host = NULL;
    int32_t rc;
    switch (state->plan) {
    case PLAN_NULL_POINTER:
        return record_failure(state, out->alloc_device_buffer(out, state->bytes, NULL, NULL));
    case PLAN_ZERO_BYTES:
        return record_failure(state, out->alloc_device_buffer(out, 0, &pointer, NULL));
    case PLAN_HUGE_BYTES:
        return record_failure(
            state, out->alloc_device_buffer(out, ((uint64_t)1 << 48) + 1, &pointer, NULL));
    case PLAN_RETRY:
        if (out->alloc_device_buffer(out, 0, &pointer, NULL) != RM_E_INVALID_ARGUMENT)
            return record_failure(state, RM_E_LOADER_FAILED);
        break;
    case PLAN_HOST_FALLBACK:
        rc = out->alloc_device_buffer(out, state->bytes, &pointer, &state->stream);
        if (rc == RM_OK)
            break;
        state->failed_rc = rc;
        rc = out->alloc_buffer(out, state->bytes, &host);
        if (rc != RM_OK)
            return rc;
        td_pattern(state->seed, 0, host, (size_t)state->bytes);
        return RM_OK;
    case PLAN_HOST_DEVICE:
        rc = out->alloc_buffer(out, state->bytes, &host);
        if (rc != RM_OK)
            return rc; /* not the call under test: failed_rc stays OK */
        return record_failure(state,
                              out->alloc_device_buffer(out, state->bytes, &pointer, NULL));
    default:
        break;
    }
    if (state->plan != PLAN_HOST_FALLBACK) {
        rc = out->alloc_device_buffer(out, state->bytes, &pointer, &state->stream);
        if (rc != RM_OK)
            return record_failure(state, rc);
    }
    state->pointer = pointer;
    if (state->plan == PLAN_DEVICE_DEVICE) {
        uint64_t second = 0;
        return record_failure(state, out->alloc_device_buffer(out, state->bytes, &second, NULL));
    }
    if (state->plan == PLAN_DEVICE_HOST)
        return record_failure(state, out->alloc_buffer(out, state->bytes, &host));
    td_driver *d = driver();
    uint64_t filled = state->plan == PLAN_HALF ? state->bytes / 2 : state->bytes;
    if (td_fill(d, state->ordinal, pointer, filled, state->seed) != 0) {
        cr_log_error("the loader's fill: %s", d->why);
        return RM_E_LOADER_FAILED;
    }
    if (state->plan == PLAN_SET_MODEL) {
        out->model = (void *)(uintptr_t)pointer;
        out->bytes = 1;
    } else if (state->plan == PLAN_SET_DESTROY) {
        out->destroy = count_destroy;
        out->destroy_user = state;
    } else if (state->plan == PLAN_OTHER_MODEL) {
        out->model = state;
    }
    return RM_OK;
}

static void expect_bytes_at(void *model, int ordinal, uint64_t bytes, uint64_t seed)
{
    td_driver *d = driver();
    int rc = td_check(d, ordinal, (td_deviceptr)(uintptr_t)model, bytes, seed);
    cr_assert_eq(rc, 0, "the model's bytes (cuda:%d, %" PRIu64 " bytes at %p): %s", ordinal,
                 bytes, model, d->why);
}

static uint32_t list_rows(rm_context *context, rm_model_info *rows, uint32_t capacity)
{
    uint32_t count = 0;
    int32_t rc = vt->registry_list(context, rows, sizeof *rows, capacity, &count);
    expect_ok(rc, context, "registry_list");
    return count;
}

static rm_registry_metrics metrics_of(rm_context *context)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    expect_ok(vt->registry_metrics(context, &metrics), context, "registry_metrics");
    return metrics;
}

/* This process's device 0 as cuda_info() reports it. */
static rm_cuda_device device_zero(rm_context *context)
{
    rm_cuda_info info = RM_STRUCT_INIT(rm_cuda_info);
    expect_ok(vt->cuda_info(context, &info), context, "cuda_info");
    cr_assert(info.status == RM_OK && info.device_count >= 1, "cuda_info: %s", info.message);
    return info.devices[0];
}

/* The fake's counter in this process; -1 on a real driver. */
static long long counter(const char *name)
{
    return td_counter_loaded(name);
}

static void expect_1_4(void)
{
    cr_assert(RM_PLUGIN_HAS(vt, model_to_dlpack), "the plugin has no 1.4 vtable (abi %#x)",
              vt->abi_version);
}

/* ------------------------------------------------------------------------ */
/* 1. Eight processes race one device key                                   */
/* ------------------------------------------------------------------------ */

Test(gpu_weights, eight_processes_racing_one_key_run_one_loader)
{
    enum { RACERS = 8 };
    const uint64_t bytes = 4 * MiB + 8 * KiB;
    const uint64_t seed = 101;
    const char *ns = make_namespace("race");
    const char *count_file = make_counter("race");
    int barrier[2];
    cr_assert_eq(pipe2(barrier, O_CLOEXEC), 0);
    peer *racers[RACERS];
    for (int i = 0; i < RACERS; i++) {
        char label[32];
        snprintf(label, sizeof label, "racer %d", i);
        racers[i] = start_peer(label, ns, count_file, barrier[0], NULL);
    }
    /* Each racer says "waiting" once it reads the barrier; its end of file
     * then starts them all. The loader sleeps 200 ms so that the others
     * arrive while it loads. */
    for (int i = 0; i < RACERS; i++)
        send_to(racers[i], "get race@cuda:0 %" PRIu64 " %" PRIu64 " sleep=200 barrier", seed,
                bytes);
    for (int i = 0; i < RACERS; i++)
        expect_line(racers[i], "waiting", REPLY_MS);
    close(barrier[0]);
    close(barrier[1]);

    char results[RACERS][PEER_LINE_BYTES];
    for (int i = 0; i < RACERS; i++) {
        const char *reply = reply_of(racers[i], REPLY_MS);
        cr_assert(peer_starts_with(reply, "ok"), "racer %d: %s", i, reply);
        snprintf(results[i], sizeof results[i], "%s", reply);
    }
    cr_assert_eq(loader_calls_in(count_file), 1, "8 racers made %lld loader calls",
                 loader_calls_in(count_file));
    int loaders = 0, waited = 0;
    for (int i = 0; i < RACERS; i++) {
        const char *r = results[i];
        cr_log_info("racer %d: %s", i, r);
        int64_t calls = gw_field_int(r, "calls", -1);
        if (calls == 1) {
            loaders++;
            cr_assert_eq(gw_field_int(r, "loads", -1), 1, "the loader's metrics: %s", r);
            cr_assert_geq(gw_field_int(r, "ms", -1), 200, "the loader slept 200 ms: %s", r);
        } else {
            cr_assert_eq(calls, 0, "racer %d: %s", i, r);
            cr_assert_eq(gw_field_int(r, "loads", -1), 0, "racer %d: %s", i, r);
            cr_assert_eq(gw_field_int(r, "attaches", -1), 1, "racer %d attached? %s", i, r);
            waited += gw_field_int(r, "ms", 0) >= 100;
        }
        expect_peer_bytes(racers[i], id_of(r), bytes);
    }
    cr_assert_eq(loaders, 1, "%d racers ran the loader", loaders);
    cr_assert_geq(waited, 1, "no racer waited for the loader: the race did not happen");
    for (int i = 0; i < RACERS; i++)
        quit_peer(racers[i]);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 2. The loader SIGKILLed mid-load                                         */
/* ------------------------------------------------------------------------ */

Test(gpu_weights, a_loader_killed_mid_load_is_taken_over)
{
    const uint64_t bytes = 2 * MiB + 4 * KiB; /* 4 MiB on the device */
    const uint64_t seed = 202;
    private_device();
    const char *ns = make_namespace("kill");
    const char *count_file = make_counter("kill");
    peer *dying = start_peer("dying loader", ns, count_file, -1, NULL);
    peer *first = start_peer("waiter 1", ns, count_file, -1, NULL);
    peer *second = start_peer("waiter 2", ns, count_file, -1, NULL);
    uint64_t before = td_is_fake() ? peer_used(first, 0) : 0;

    /* The loader has its device buffer, has written half of it, and
     * blocks until it is killed. */
    send_to(dying, "get takeover@cuda:0 %" PRIu64 " %" PRIu64 " block", seed, bytes);
    expect_line(dying, "blocked", REPLY_MS);
    char rows[MAX_ROWS][1024];
    cr_assert_eq(peer_rows(first, rows, MAX_ROWS), 1, "the claim is not a row");
    cr_assert_eq(gw_field_int(rows[0], "state", -1), RM_MODEL_STATE_LOADING, "%s", rows[0]);
    cr_assert_eq(gw_field_int(rows[0], "loader_pid", -1), dying->pid, "%s", rows[0]);
    /* rm_model_info.memory of a LOADING row: what is known so far, HOST
     * until the buffer exists; here the device buffer exists. */
    cr_expect_eq(gw_field_int(rows[0], "memory", -1), RM_MEMORY_CUDA,
                 "the loading row's device buffer exists, yet memory is not "
                 "RM_MEMORY_CUDA: %s",
                 rows[0]);
    char device[40];
    cr_assert(gw_field_word(rows[0], "device", device, sizeof device), "%s", rows[0]);
    cr_expect_str_eq(device, "cuda:0", "the loading row's device is not this process's cuda:N: %s",
                     rows[0]);

    send_to(first, "get takeover@cuda:0 %" PRIu64 " %" PRIu64, seed, bytes);
    send_to(second, "get takeover@cuda:0 %" PRIu64 " %" PRIu64, seed, bytes);
    wait_until_blocked(first);
    wait_until_blocked(second);
    kill_peer(dying);
    uint64_t killed_at = peer_now_ms();

    const char *reply = reply_of(first, REPLY_MS);
    cr_assert(peer_starts_with(reply, "ok"), "waiter 1: %s", reply);
    char one[PEER_LINE_BYTES];
    snprintf(one, sizeof one, "%s", reply);
    reply = reply_of(second, REPLY_MS);
    cr_assert(peer_starts_with(reply, "ok"), "waiter 2: %s", reply);
    char two[PEER_LINE_BYTES];
    snprintf(two, sizeof two, "%s", reply);
    uint64_t took = peer_now_ms() - killed_at;
    cr_assert_leq(took, 2000, "the waiters took %" PRIu64 " ms to take over the dead load (it "
                  "is noticed within RM_NODE_TAKEOVER_POLL_MS)", took);
    cr_log_info("waiter 1: %s", one);
    cr_log_info("waiter 2: %s", two);

    int64_t takeovers = gw_field_int(one, "takeovers", -1) + gw_field_int(two, "takeovers", -1);
    int64_t loads = gw_field_int(one, "loads", -1) + gw_field_int(two, "loads", -1);
    cr_assert_eq(takeovers, 1, "one waiter takes the dead load over:\n%s\n%s", one, two);
    cr_assert_eq(loads, 1, "one load after the takeover:\n%s\n%s", one, two);
    const char *taker = gw_field_int(one, "takeovers", 0) == 1 ? one : two;
    const char *other = taker == one ? two : one;
    cr_assert_eq(gw_field_int(taker, "calls", -1), 1, "the taker ran its loader: %s", taker);
    cr_assert_eq(gw_field_int(other, "calls", -1), 0, "the other waiter ran a loader: %s", other);
    cr_assert_eq(gw_field_int(other, "attaches", -1), 1, "the other waiter attached: %s", other);
    cr_assert_eq(loader_calls_in(count_file), 2, "the dead loader and the taker: %lld calls",
                 loader_calls_in(count_file));
    expect_peer_bytes(first, id_of(one), bytes);
    expect_peer_bytes(second, id_of(two), bytes);
    if (td_is_fake())
        cr_assert_eq(peer_used(first, 0), before + 2 * GW_GRANULARITY,
                     "the device holds other than one copy of the weights after the takeover "
                     "(the dead loader's half-made buffer dies with it)");

    peer *late = start_peer("newcomer", ns, count_file, -1, NULL);
    reply = peer_get(late, "takeover@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "the newcomer loaded: %s", reply);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "%s", reply);
    expect_peer_bytes(late, id_of(reply), bytes);
    cr_assert_eq(peer_rows(late, rows, MAX_ROWS), 1);
    cr_assert_eq(gw_field_int(rows[0], "state", -1), RM_MODEL_STATE_READY, "%s", rows[0]);
    quit_peer(late);
    quit_peer(second);
    quit_peer(first);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 3. Which processes have the weights                                      */
/* ------------------------------------------------------------------------ */

typedef enum loader_end { END_QUIT, END_EXIT, END_UNDERSCORE_EXIT, END_KILL } loader_end;

/* The loader loads and a holder attaches; the loader's process ends as
 * `how` says; the holder still reads the weights, and a process started
 * after the loader's end attaches to them (no loader call) and reads
 * them. */
static void loader_ends(const char *tag, loader_end how)
{
    const uint64_t bytes = 6 * MiB;
    const uint64_t seed = 303 + (uint64_t)how;
    const char *ns = make_namespace(tag);
    const char *count_file = make_counter(tag);
    peer *loader = start_peer("loader", ns, count_file, -1, NULL);
    peer *holder = start_peer("holder", ns, count_file, -1, NULL);
    const char *reply = peer_get(loader, "ends@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "loads", -1), 1, "%s", reply);
    reply = peer_get(holder, "ends@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "the holder attached? %s", reply);
    cr_assert_eq(gw_field_int(reply, "loads", -1), 0, "%s", reply);
    int held = id_of(reply);
    expect_peer_bytes(holder, held, bytes);

    switch (how) {
    case END_QUIT:
        quit_peer(loader);
        break;
    case END_EXIT:
    case END_UNDERSCORE_EXIT: {
        send_to(loader, how == END_EXIT ? "exit" : "_exit");
        expect_line(loader, "ok exiting", REPLY_MS);
        int status = peer_wait(loader, REPLY_MS);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the loader ended with status %#x after its exit; it printed:\n%s", status,
                  loader->transcript);
        break;
    }
    case END_KILL:
        kill_peer(loader);
        break;
    }
    expect_peer_bytes(holder, held, bytes);

    peer *late = start_peer("newcomer", ns, count_file, -1, NULL);
    reply = peer_get(late, "ends@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "the newcomer ran a loader: %s", reply);
    cr_assert_eq(gw_field_int(reply, "loads", -1), 0, "%s", reply);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "the newcomer attached? %s", reply);
    expect_peer_bytes(late, id_of(reply), bytes);
    expect_peer_bytes(holder, held, bytes);
    cr_assert_eq(loader_calls_in(count_file), 1, "%lld loader calls",
                 loader_calls_in(count_file));
    quit_peer(late);
    quit_peer(holder);
    test_finished = true;
}

Test(gpu_weights, loader_destroying_its_context_loses_nothing)
{
    loader_ends("quit", END_QUIT);
}

Test(gpu_weights, loader_exiting_loses_nothing)
{
    loader_ends("exit", END_EXIT);
}

Test(gpu_weights, loader_exiting_without_destructors_loses_nothing)
{
    loader_ends("uexit", END_UNDERSCORE_EXIT);
}

Test(gpu_weights, loader_killed_after_the_load_loses_nothing)
{
    loader_ends("dead", END_KILL);
}

/* When no live process has the weights any more, they are gone: the next
 * get loads again (the entry stayed in the table, idle, when the holders
 * ended cleanly; it names weights of dead processes when they were
 * killed). */
static void last_holders_end(const char *tag, bool killed)
{
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 330 + killed;
    private_device();
    const char *ns = make_namespace(tag);
    const char *count_file = make_counter(tag);
    peer *observer = start_peer("observer", ns, count_file, -1, NULL);
    peer *loader = start_peer("loader", ns, count_file, -1, NULL);
    peer *holder = start_peer("holder", ns, count_file, -1, NULL);
    uint64_t before = td_is_fake() ? peer_used(loader, 0) : 0;
    peer_get(loader, "gone@cuda:0", seed, bytes, NULL);
    peer_get(holder, "gone@cuda:0", seed, bytes, NULL);
    if (killed) {
        kill_peer(holder);
        kill_peer(loader);
    } else {
        quit_peer(holder);
        quit_peer(loader);
    }
    /* The observer (alive, never mapped them) drops the entry: at once
     * with registry_reclaim (killed), at its next sweep (ended). */
    char rows[MAX_ROWS][1024];
    if (killed)
        call_ok(observer, "reclaim");
    uint64_t deadline = peer_now_ms() + (killed ? 0 : SWEEP_MS);
    while (peer_rows(observer, rows, MAX_ROWS) != 0 && peer_now_ms() < deadline)
        peer_sleep_ms(50);
    cr_assert_eq(peer_rows(observer, rows, MAX_ROWS), 0,
                 "%s the last process that had the weights %s, the entry is still listed: %s",
                 killed ? "after registry_reclaim," : "a sweep after",
                 killed ? "was killed" : "ended", rows[0]);
    quit_peer(observer);
    peer *late = start_peer("newcomer", ns, count_file, -1, NULL);
    if (td_is_fake())
        cr_assert_eq(peer_used(late, 0), before, "the weights outlived every process");
    const char *reply = peer_get(late, "gone@cuda:0", seed + 1, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1,
                 "no process had the weights, yet the newcomer did not load: %s", reply);
    expect_peer_bytes(late, id_of(reply), bytes);
    cr_assert_eq(peer_rows(late, rows, MAX_ROWS), 1);
    cr_assert_eq(gw_field_int(rows[0], "state", -1), RM_MODEL_STATE_READY, "%s", rows[0]);
    cr_assert_eq(loader_calls_in(count_file), 2);
    if (td_is_fake())
        cr_assert_eq(peer_used(late, 0), before + bytes, "one copy of the new weights");
    quit_peer(late);
    test_finished = true;
}

Test(gpu_weights, weights_go_with_their_last_process_that_ends)
{
    last_holders_end("gone", false);
}

Test(gpu_weights, weights_go_with_their_last_process_killed)
{
    last_holders_end("gonek", true);
}

/* Every process that had the weights killed at once (stopped first, so
 * that neither sweeps the other's death), and a newcomer's get right
 * after, before any sweep or reclaim: it loads, whatever the table still
 * says about the dead holders. */
Test(gpu_weights, a_get_right_after_every_holder_was_killed_loads)
{
    const uint64_t bytes = 2 * MiB;
    const char *ns = make_namespace("wedge");
    const char *count_file = make_counter("wedge");
    peer *late = start_peer("newcomer", ns, count_file, -1, NULL);
    peer *group[2] = {start_peer("loader", ns, count_file, -1, NULL),
                      start_peer("holder", ns, count_file, -1, NULL)};
    peer_get(group[0], "wedge@cuda:0", 7, bytes, NULL);
    peer_get(group[1], "wedge@cuda:0", 7, bytes, NULL);
    call_ok(group[1], "release 0"); /* one keeper, one holder */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(kill(group[i]->pid, SIGSTOP), 0);
    for (int i = 0; i < 2; i++)
        kill_peer(group[i]);
    uint64_t start = peer_now_ms();
    const char *reply = peer_get(late, "wedge@cuda:0", 8, bytes, NULL);
    uint64_t took = peer_now_ms() - start;
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1,
                 "nobody has the weights, yet the newcomer did not load: %s", reply);
    expect_peer_bytes(late, id_of(reply), bytes);
    cr_assert_leq(took, 5000, "the get took %" PRIu64 " ms", took);
    quit_peer(late);
    test_finished = true;
}

/* Newcomers released together right after the only process that had
 * the weights was killed (holding them, or keeping them released): one of
 * them loads, the others attach to it, nobody wedges. */
static void herd_after_kill(const char *tag, bool released)
{
    enum { NEWCOMERS = 6 };
    const uint64_t bytes = 2 * MiB;
    const char *ns = make_namespace(tag);
    const char *count_file = make_counter(tag);
    int barrier[2];
    cr_assert_eq(pipe2(barrier, O_CLOEXEC), 0);
    peer *newcomers[NEWCOMERS];
    for (int i = 0; i < NEWCOMERS; i++) {
        char label[32];
        snprintf(label, sizeof label, "newcomer %d", i);
        newcomers[i] = start_peer(label, ns, count_file, barrier[0], NULL);
    }
    peer *holder = start_peer("holder", ns, count_file, -1, NULL);
    peer_get(holder, "herd@cuda:0", 9, bytes, NULL);
    if (released)
        call_ok(holder, "release 0");
    for (int i = 0; i < NEWCOMERS; i++)
        send_to(newcomers[i], "get herd@cuda:0 10 %" PRIu64 " barrier", bytes);
    for (int i = 0; i < NEWCOMERS; i++)
        expect_line(newcomers[i], "waiting", REPLY_MS);
    kill_peer(holder);
    close(barrier[0]);
    close(barrier[1]);
    int loaders = 0;
    for (int i = 0; i < NEWCOMERS; i++) {
        const char *reply = reply_of(newcomers[i], REPLY_MS);
        cr_assert(peer_starts_with(reply, "ok"), "newcomer %d: %s", i, reply);
        loaders += gw_field_int(reply, "calls", -1) == 1;
        expect_peer_bytes(newcomers[i], id_of(reply), bytes);
    }
    cr_assert_eq(loaders, 1, "%d newcomers loaded", loaders);
    cr_assert_eq(loader_calls_in(count_file), 2, "the holder's load and one more");
    for (int i = 0; i < NEWCOMERS; i++)
        quit_peer(newcomers[i]);
    test_finished = true;
}

Test(gpu_weights, newcomers_racing_after_the_holder_was_killed_load_once)
{
    herd_after_kill("herd", false);
}

Test(gpu_weights, newcomers_racing_after_the_keeper_was_killed_load_once)
{
    herd_after_kill("herdk", true);
}

/* A process keeps the weights mapped after its last handle is released,
 * while the entry stays: a newcomer attaches through it. */
Test(gpu_weights, a_process_that_released_the_model_still_serves_it)
{
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 340;
    const char *ns = make_namespace("idle");
    const char *count_file = make_counter("idle");
    peer *loader = start_peer("loader", ns, count_file, -1, NULL);
    int id = id_of(peer_get(loader, "idle@cuda:0", seed, bytes, NULL));
    call_ok(loader, "release %d", id);
    if (td_is_fake())
        cr_assert_eq(peer_counter(loader, "@vmm_mapped"), 1,
                     "the loader unmapped the weights at its release");
    char rows[MAX_ROWS][1024];
    cr_assert_eq(peer_rows(loader, rows, MAX_ROWS), 1);
    cr_assert(gw_field_int(rows[0], "holders", -1) == 0 &&
                  gw_field_int(rows[0], "refcount", -1) == 0,
              "a process that keeps the weights mapped without a reference is no holder: %s",
              rows[0]);
    peer *late = start_peer("newcomer", ns, count_file, -1, NULL);
    const char *reply = peer_get(late, "idle@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "the newcomer loaded: %s", reply);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "%s", reply);
    expect_peer_bytes(late, id_of(reply), bytes);
    cr_assert_eq(loader_calls_in(count_file), 1);
    cr_assert_eq(peer_rows(late, rows, MAX_ROWS), 1);
    cr_assert(gw_field_int(rows[0], "holders", -1) == 1 &&
                  gw_field_int(rows[0], "refcount", -1) == 1,
              "the newcomer alone holds it: %s", rows[0]);
    quit_peer(late);
    quit_peer(loader);
    test_finished = true;
}

/* Contexts of one process share its one mapping of the weights: the same
 * pointer, one reference per context, one holder process; the mapping
 * ends with the process's last context of the namespace. */
static int32_t must_not_load(void *user, const char *key, rm_loaded_model *out)
{
    (void)out;
    int *calls = user;
    (*calls)++;
    cr_log_error("a loader ran for %s, which another process has loaded", key);
    return RM_E_LOADER_FAILED;
}

Test(gpu_weights, contexts_of_one_process_share_its_mapping)
{
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 370;
    const char *ns = make_namespace("ctx");
    peer *loader = start_peer("loader", ns, NULL, -1, NULL);
    peer_get(loader, "ctx@cuda:0", seed, bytes, NULL);
    rm_context *one = NULL, *two = NULL;
    new_context(&one, "registry.scope", "node", "registry.namespace", ns);
    new_context(&two, "registry.scope", "node", "registry.namespace", ns);
    int calls = 0;
    rm_model_handle *first = NULL, *second = NULL;
    void *model_one = NULL, *model_two = NULL;
    expect_ok(vt->model_get_or_load(one, "ctx@cuda:0", must_not_load, &calls, &first, &model_one),
              one, "model_get_or_load (context one)");
    expect_ok(vt->model_get_or_load(two, "ctx@cuda:0", must_not_load, &calls, &second,
                                    &model_two),
              two, "model_get_or_load (context two)");
    cr_assert_eq(calls, 0);
    cr_assert_eq(model_one, model_two, "two contexts of one process map the weights twice");
    cr_assert_eq(metrics_of(two).attaches, 1);
    if (td_is_fake())
        cr_assert_eq(counter("@vmm_mapped"), 1, "one mapping for the process");
    rm_model_info rows[MAX_ROWS];
    cr_assert_eq(list_rows(one, rows, MAX_ROWS), 1);
    cr_assert_eq(rows[0].holders, 2, "holder processes: the loader's and this one");
    cr_assert_eq(rows[0].refcount, 3, "references: the loader's and one per context here");

    expect_ok(vt->model_release(one, first), one, "model_release");
    expect_bytes_at(model_two, 0, bytes, seed);
    fixture_close(one);
    expect_bytes_at(model_two, 0, bytes, seed);
    expect_ok(vt->model_release(two, second), two, "model_release");
    fixture_close(two);
    if (td_is_fake())
        cr_assert_eq(counter("@vmm_mapped"), 0,
                     "the process's last context of the namespace is gone, the mapping stays");
    quit_peer(loader);
    test_finished = true;
}

/* Threads of one process, each with a context of its own, attach to
 * weights another process loaded all at once: one mapping, one pointer. */
enum { ATTACHING_THREADS = 6 };

typedef struct attach_thread {
    rm_context *context;
    pthread_barrier_t *start;
    int32_t rc;
    void *model;
    rm_model_handle *handle;
    int calls;
    char message[512];
} attach_thread;

static void *attach_main(void *argument)
{
    attach_thread *t = argument;
    pthread_barrier_wait(t->start);
    t->rc = vt->model_get_or_load(t->context, "threads@cuda:0", must_not_load, &t->calls,
                                  &t->handle, &t->model);
    snprintf(t->message, sizeof t->message, "%s",
             t->rc == RM_OK ? "" : vt->context_last_error(t->context));
    return NULL;
}

Test(gpu_weights, threads_attaching_at_once_share_one_mapping)
{
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 375;
    const char *ns = make_namespace("thr");
    peer *loader = start_peer("loader", ns, NULL, -1, NULL);
    peer_get(loader, "threads@cuda:0", seed, bytes, NULL);
    pthread_barrier_t start;
    cr_assert_eq(pthread_barrier_init(&start, NULL, ATTACHING_THREADS), 0);
    attach_thread threads[ATTACHING_THREADS];
    pthread_t ids[ATTACHING_THREADS];
    for (int i = 0; i < ATTACHING_THREADS; i++) {
        threads[i] = (attach_thread){.start = &start};
        new_context(&threads[i].context, "registry.scope", "node", "registry.namespace", ns);
    }
    for (int i = 0; i < ATTACHING_THREADS; i++)
        cr_assert_eq(pthread_create(&ids[i], NULL, attach_main, &threads[i]), 0);
    for (int i = 0; i < ATTACHING_THREADS; i++)
        pthread_join(ids[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < ATTACHING_THREADS; i++) {
        cr_assert_eq(threads[i].rc, RM_OK, "thread %d: %s: %s", i, vt->error_name(threads[i].rc),
                     threads[i].message);
        cr_assert_eq(threads[i].calls, 0);
        cr_assert_eq(threads[i].model, threads[0].model,
                     "threads %d and 0 of one process got different pointers", i);
    }
    if (td_is_fake())
        cr_assert_eq(counter("@vmm_mapped"), 1, "one mapping for the process");
    expect_bytes_at(threads[0].model, 0, bytes, seed);
    rm_model_info rows[MAX_ROWS];
    cr_assert_eq(list_rows(threads[0].context, rows, MAX_ROWS), 1);
    cr_assert_eq(rows[0].holders, 2, "holder processes: the loader's and this one");
    cr_assert_eq(rows[0].refcount, 1 + ATTACHING_THREADS);
    for (int i = 0; i < ATTACHING_THREADS; i++) {
        expect_ok(vt->model_release(threads[i].context, threads[i].handle), threads[i].context,
                  "model_release");
        fixture_close(threads[i].context);
    }
    if (td_is_fake())
        cr_assert_eq(counter("@vmm_mapped"), 0, "the mapping outlived every context");
    quit_peer(loader);
    test_finished = true;
}

/* Namespaces do not share weights; one process serves many models. */
Test(gpu_weights, namespaces_are_apart_and_many_models_cross)
{
    enum { MODELS = 12 };
    const uint64_t bytes = 2 * MiB - 16;
    const char *one = make_namespace("ns1");
    const char *two = make_namespace("ns2");
    peer *loader = start_peer("loader (ns1)", one, NULL, -1, NULL);
    peer *reader = start_peer("reader (ns1)", one, NULL, -1, NULL);
    peer *stranger = start_peer("stranger (ns2)", two, NULL, -1, NULL);
    for (int i = 0; i < MODELS; i++) {
        char key[32];
        snprintf(key, sizeof key, "many%d@cuda:0", i);
        peer_get(loader, key, 1000 + (uint64_t)i, bytes, NULL);
    }
    for (int i = 0; i < MODELS; i++) {
        char key[32];
        snprintf(key, sizeof key, "many%d@cuda:0", i);
        const char *reply = peer_get(reader, key, 1000 + (uint64_t)i, bytes, NULL);
        cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "%s: %s", key, reply);
        expect_peer_bytes(reader, id_of(reply), bytes);
    }
    const char *reply = peer_get(stranger, "many0@cuda:0", 2000, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1,
                 "a process of another namespace got ns1's weights: %s", reply);
    expect_peer_bytes(stranger, id_of(reply), bytes);
    quit_peer(stranger);
    quit_peer(reader);
    quit_peer(loader);
    test_finished = true;
}

/* The code of an "err CODE NAME ..." reply (1 when it is not one). */
static int32_t error_code_of(const char *reply)
{
    int code = 1;
    if (peer_starts_with(reply, "err ") && sscanf(reply, "err %d", &code) == 1)
        return (int32_t)code;
    return 1;
}

/* A holder that does not answer (stopped) is skipped for another; when
 * none answers, RM_E_SYSTEM names each one tried, and a later get
 * attaches once they answer again. */
Test(gpu_weights, an_unanswering_holder_is_skipped_and_none_answering_is_an_error)
{
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 380;
    const char *ns = make_namespace("stop");
    const char *count_file = make_counter("stop");
    peer *loader = start_peer("loader", ns, count_file, -1, NULL);
    peer *holder = start_peer("holder", ns, count_file, -1, NULL);
    peer *first = start_peer("newcomer 1", ns, count_file, -1, NULL);
    peer *second = start_peer("newcomer 2", ns, count_file, -1, NULL);
    peer_get(loader, "stop@cuda:0", seed, bytes, NULL);
    peer_get(holder, "stop@cuda:0", seed, bytes, NULL);

    cr_assert_eq(kill(loader->pid, SIGSTOP), 0);
    const char *reply = peer_get(first, "stop@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "%s", reply);
    expect_peer_bytes(first, id_of(reply), bytes);
    quit_peer(first);

    cr_assert_eq(kill(holder->pid, SIGSTOP), 0);
    send_to(second, "get stop@cuda:0 %" PRIu64 " %" PRIu64, seed, bytes);
    reply = reply_of(second, REPLY_MS);
    cr_assert_eq(error_code_of(reply), RM_E_SYSTEM,
                 "no holder answers, and the get gave: %s", reply);
    char loader_pid[32], holder_pid[32];
    snprintf(loader_pid, sizeof loader_pid, "pid %d", (int)loader->pid);
    snprintf(holder_pid, sizeof holder_pid, "pid %d", (int)holder->pid);
    cr_assert(strstr(reply, "stop@") != NULL && strstr(reply, loader_pid) != NULL &&
                  strstr(reply, holder_pid) != NULL,
              "the message names the key and each process tried: %s", reply);
    cr_assert_eq(loader_calls_in(count_file), 1, "a loader ran while the weights are held");

    cr_assert_eq(kill(loader->pid, SIGCONT), 0);
    cr_assert_eq(kill(holder->pid, SIGCONT), 0);
    reply = peer_get(second, "stop@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "%s", reply);
    expect_peer_bytes(second, id_of(reply), bytes);
    quit_peer(second);
    quit_peer(holder);
    quit_peer(loader);
    test_finished = true;
}

/* Keys that normalise alike meet on one entry, and the longest name keeps
 * all its bytes in the table's UUID key. */
Test(gpu_weights, equivalent_keys_and_the_longest_name_share_one_entry)
{
    const uint64_t bytes = 2 * MiB;
    const char *ns = make_namespace("keys");
    peer *a = start_peer("A", ns, NULL, -1, NULL);
    peer *b = start_peer("B", ns, NULL, -1, NULL);
    peer_get(a, "same@cuda", 390, bytes, NULL);
    const char *reply = peer_get(b, "same@CUDA:00", 390, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "\"same@CUDA:00\" is \"same@cuda\": %s",
                 reply);
    expect_peer_bytes(b, id_of(reply), bytes);

    char name[201], key[260];
    for (int i = 0; i < 200; i++)
        name[i] = "abcdefghijklmnopqrstuvwxyz0123456789._-"[i % 39];
    name[200] = '\0';
    snprintf(key, sizeof key, "%s@cuda:0", name);
    peer_get(a, key, 391, bytes, NULL);
    reply = peer_get(b, key, 391, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "B loaded the long key: %s", reply);
    expect_peer_bytes(b, id_of(reply), bytes);
    char rows[MAX_ROWS][1024];
    int count = peer_rows(b, rows, MAX_ROWS);
    cr_assert_eq(count, 2);
    bool long_seen = false;
    for (int i = 0; i < count; i++) {
        char listed[RM_MODEL_KEY_MAX];
        cr_assert(gw_field_word(rows[i], "key", listed, sizeof listed), "%s", rows[i]);
        if (strncmp(listed, name, 200) == 0) {
            long_seen = true;
            cr_assert(strncmp(listed + 200, "@cuda:GPU-", 10) == 0 &&
                          strlen(listed) == 200 + strlen("@cuda:GPU-") + 36,
                      "the long key's row: %s", listed);
        }
    }
    cr_assert(long_seen, "no row of the 200-byte name");
    quit_peer(b);
    quit_peer(a);
    test_finished = true;
}

/* A loader that fails after filling its device buffer: its code reaches a
 * process waiting for the load, no entry and no device memory is left,
 * and the waiter's next get loads. */
Test(gpu_weights, a_loader_failure_reaches_the_waiters_and_frees_the_buffer)
{
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 350;
    private_device();
    const char *ns = make_namespace("fail");
    const char *count_file = make_counter("fail");
    peer *loader = start_peer("failing loader", ns, count_file, -1, NULL);
    peer *waiter = start_peer("waiter", ns, count_file, -1, NULL);
    uint64_t before = td_is_fake() ? peer_used(waiter, 0) : 0;
    send_to(loader, "get fails@cuda:0 %" PRIu64 " %" PRIu64 " gate fail=%d", seed, bytes,
            (int)RM_E_NOT_FOUND);
    expect_line(loader, "gated", REPLY_MS);
    send_to(waiter, "get fails@cuda:0 %" PRIu64 " %" PRIu64, seed, bytes);
    wait_until_blocked(waiter);
    send_to(loader, "go");
    const char *reply = reply_of(loader, REPLY_MS);
    cr_assert_eq(error_code_of(reply), RM_E_NOT_FOUND, "the loader's own get: %s", reply);
    reply = reply_of(waiter, REPLY_MS);
    cr_assert_eq(error_code_of(reply), RM_E_NOT_FOUND,
                 "the waiter did not get the loader's code: %s", reply);
    cr_assert_eq(loader_calls_in(count_file), 1, "the waiter ran its loader");
    char rows[MAX_ROWS][1024];
    cr_assert_eq(peer_rows(waiter, rows, MAX_ROWS), 0, "a failed load left an entry");
    if (td_is_fake())
        cr_assert_eq(peer_used(waiter, 0), before, "the failed load's device buffer stays");
    reply = peer_get(waiter, "fails@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1, "the next get did not load: %s", reply);
    expect_peer_bytes(waiter, id_of(reply), bytes);
    quit_peer(waiter);
    quit_peer(loader);
    test_finished = true;
}

/* A process whose driver cannot import POSIX descriptors cannot map
 * weights another process loaded: RM_E_DEVICE_UNAVAILABLE with a message
 * naming the key, no loader call of its own, and the others keep them. */
Test(gpu_weights, a_process_without_vmm_cannot_attach)
{
    fake_only("FAKE_CUDA_NO_VMM");
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 360;
    const char *ns = make_namespace("novmma");
    const char *count_file = make_counter("novmma");
    peer *loader = start_peer("loader", ns, count_file, -1, NULL);
    int id = id_of(peer_get(loader, "vmmless@cuda:0", seed, bytes, NULL));
    setenv("FAKE_CUDA_NO_VMM", "1", 1);
    peer *vmmless = start_peer("without VMM", ns, count_file, -1, NULL);
    unsetenv("FAKE_CUDA_NO_VMM");
    send_to(vmmless, "get vmmless@cuda:0 %" PRIu64 " %" PRIu64, seed, bytes);
    const char *reply = reply_of(vmmless, REPLY_MS);
    cr_assert_eq(error_code_of(reply), RM_E_DEVICE_UNAVAILABLE, "%s", reply);
    cr_assert(strstr(reply, "vmmless@") != NULL, "the message does not name the key: %s", reply);
    cr_assert_eq(loader_calls_in(count_file), 1, "the process without VMM ran a loader");
    expect_peer_bytes(loader, id, bytes);
    peer *late = start_peer("newcomer", ns, count_file, -1, NULL);
    reply = peer_get(late, "vmmless@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "%s", reply);
    expect_peer_bytes(late, id_of(reply), bytes);
    quit_peer(late);
    quit_peer(vmmless);
    quit_peer(loader);
    test_finished = true;
}

/* A process with "cuda-ipc" disabled keeps "name@cuda:N" as its key: it
 * does not meet the device weights (keyed by UUID), and its own loader
 * cannot ask for a device buffer. */
Test(gpu_weights, a_process_without_cuda_ipc_keeps_its_own_key)
{
    const uint64_t bytes = 2 * MiB;
    const char *ns = make_namespace("noipc");
    const char *count_file = make_counter("noipc");
    peer *gpu = start_peer("with cuda-ipc", ns, count_file, -1, NULL);
    peer *cpu = start_peer("without cuda-ipc", ns, count_file, -1,
                           "features=model-registry,shared-memory", NULL);
    peer_get(gpu, "noipc@cuda:0", 395, bytes, NULL);
    send_to(cpu, "get noipc@cuda:0 395 %" PRIu64, bytes);
    const char *reply = reply_of(cpu, REPLY_MS);
    cr_assert_eq(error_code_of(reply), RM_E_FEATURE_DISABLED,
                 "its loader's alloc_device_buffer without cuda-ipc: %s", reply);
    cr_assert_eq(loader_calls_in(count_file), 2, "the process without cuda-ipc attached to the "
                 "device weights instead of running its loader");
    char rows[MAX_ROWS][1024];
    int count = peer_rows(cpu, rows, MAX_ROWS);
    cr_assert_eq(count, 1, "the failed load of \"noipc@cuda:0\" left a row");
    char key[RM_MODEL_KEY_MAX];
    cr_assert(gw_field_word(rows[0], "key", key, sizeof key), "%s", rows[0]);
    cr_assert(strncmp(key, "noipc@cuda:GPU-", 15) == 0, "%s", rows[0]);
    quit_peer(cpu);
    quit_peer(gpu);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 4. The weights are sealed                                                */
/* ------------------------------------------------------------------------ */

/* A write through the model pointer fails, in a reader's process and in
 * the loader's; the bytes stay the loader's. On a GPU the failed copy may
 * leave the writer's context unusable (a sticky fault), so only a third
 * process reads the bytes afterwards there. */
Test(gpu_weights, writes_through_the_weights_are_refused)
{
    const uint64_t bytes = 2 * MiB;
    const uint64_t seed = 404;
    const char *ns = make_namespace("seal");
    peer *loader = start_peer("loader", ns, NULL, -1, NULL);
    peer *reader = start_peer("reader", ns, NULL, -1, NULL);
    peer *witness = start_peer("witness", ns, NULL, -1, NULL);
    int loaded = id_of(peer_get(loader, "seal@cuda:0", seed, bytes, NULL));
    int read = id_of(peer_get(reader, "seal@cuda:0", seed, bytes, NULL));
    int watched = id_of(peer_get(witness, "seal@cuda:0", seed, bytes, NULL));

    const char *reply = call_ok(reader, "write %d", read);
    int64_t reader_cu = gw_field_int(reply, "cu", 0);
    reply = call_ok(loader, "write %d", loaded);
    int64_t loader_cu = gw_field_int(reply, "cu", 0);
    if (td_is_fake()) {
        cr_assert_eq(reader_cu, GW_CUDA_ERROR_ILLEGAL_ADDRESS,
                     "a reader's write into the weights gave CUresult %" PRId64, reader_cu);
        cr_assert_eq(loader_cu, GW_CUDA_ERROR_ILLEGAL_ADDRESS,
                     "the loader's write after the load gave CUresult %" PRId64
                     " (not sealed in its own process)",
                     loader_cu);
        expect_peer_bytes(reader, read, bytes);
        expect_peer_bytes(loader, loaded, bytes);
    } else {
        cr_assert_neq(reader_cu, 0, "a reader wrote into the weights");
        cr_assert_neq(loader_cu, 0, "the loader wrote into the weights after the load");
    }
    expect_peer_bytes(witness, watched, bytes);
    quit_peer(witness);
    quit_peer(reader);
    quit_peer(loader);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 5. One copy of device memory for every process                           */
/* ------------------------------------------------------------------------ */

Test(gpu_weights, ten_processes_use_one_copy_of_device_memory)
{
    fake_only("exact device memory figures");
    enum { HOLDERS = 10 };
    const uint64_t bytes = 64 * MiB;
    const uint64_t seed = 505;
    private_device();
    const char *ns = make_namespace("mem");
    const char *count_file = make_counter("mem");
    peer *observer = start_peer("observer", ns, NULL, -1, NULL);
    uint64_t before = peer_used(observer, 0);
    peer *holders[HOLDERS];
    for (int i = 0; i < HOLDERS; i++) {
        char label[32];
        snprintf(label, sizeof label, "holder %d", i);
        holders[i] = start_peer(label, ns, count_file, -1, NULL);
    }
    int ids[HOLDERS];
    for (int i = 0; i < HOLDERS; i++)
        ids[i] = id_of(peer_get(holders[i], "mem@cuda:0", seed, bytes, NULL));
    cr_assert_eq(loader_calls_in(count_file), 1);
    uint64_t after = peer_used(observer, 0);
    cr_log_info("device memory used: %" PRIu64 " before, %" PRIu64 " with %d holders", before,
                after, HOLDERS);
    cr_assert_geq(after, before + bytes,
                  "the device holds less than the model: %" PRIu64 " bytes more", after - before);
    cr_assert_leq(after, before + bytes + GW_GRANULARITY,
                  "%d processes holding a %" PRIu64 " MiB model use %" PRIu64
                  " MiB of device memory, not one copy",
                  HOLDERS, bytes / MiB, (after - before) / MiB);
    expect_peer_bytes(holders[0], ids[0], bytes);
    expect_peer_bytes(holders[HOLDERS - 1], ids[HOLDERS - 1], bytes);
    char rows[MAX_ROWS][1024];
    cr_assert_eq(peer_rows(observer, rows, MAX_ROWS), 1);
    cr_assert_eq(gw_field_u64(rows[0], "device_bytes", 0), bytes, "%s", rows[0]);
    cr_assert_eq(gw_field_int(rows[0], "holders", -1), HOLDERS, "%s", rows[0]);
    cr_assert_eq(gw_field_int(rows[0], "refcount", -1), HOLDERS, "%s", rows[0]);
    const char *metrics = call_ok(observer, "metrics");
    cr_assert(gw_field_int(metrics, "models", -1) == 1 &&
                  gw_field_u64(metrics, "bytes", 0) == bytes,
              "node-scope metrics count the table's ready models: %s", metrics);
    for (int i = 0; i < HOLDERS; i++)
        quit_peer(holders[i]);
    quit_peer(observer);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 6. Devices matched by UUID                                               */
/* ------------------------------------------------------------------------ */

/* Process A lists devices (U, V), process B (V, U): A's "m@cuda:0" and B's
 * "m@cuda:1" are the same device U, so B attaches to A's weights; B's
 * "m@cuda:0" is V, another entry. */
Test(gpu_weights, processes_with_reversed_device_orders_share_by_uuid)
{
    fake_only("FAKE_CUDA_UUIDS");
    const uint64_t bytes = 2 * MiB + 512;
    const uint64_t seed = 606;
    char u[48], v[48], uv[100], vu[100];
    snprintf(u, sizeof u, "GPU-aaaaaaaa-%04x-4000-8000-%012lx", (unsigned)getpid() & 0xffff,
             (unsigned long)getpid());
    snprintf(v, sizeof v, "GPU-bbbbbbbb-%04x-4000-8000-%012lx", (unsigned)getpid() & 0xffff,
             (unsigned long)getpid());
    snprintf(uv, sizeof uv, "%s,%s", u, v);
    snprintf(vu, sizeof vu, "%s,%s", v, u);
    uint8_t u_uuid[16];
    cr_assert_eq(fake_cuda_parse_uuid(u, u_uuid), 0);
    char u_hex[33], u_key[96];
    td_hex16(u_uuid, u_hex);
    snprintf(u_key, sizeof u_key, "order@cuda:%s", u);

    const char *ns = make_namespace("order");
    setenv("FAKE_CUDA_DEVICES", "2", 1);
    setenv("FAKE_CUDA_UUIDS", uv, 1);
    peer *a = start_peer("A (U,V)", ns, NULL, -1, NULL);
    setenv("FAKE_CUDA_UUIDS", vu, 1);
    peer *b = start_peer("B (V,U)", ns, NULL, -1, NULL);

    const char *reply = peer_get(a, "order@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "loads", -1), 1, "%s", reply);
    int a_id = id_of(reply);
    reply = peer_get(b, "order@cuda:1", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "B's cuda:1 is A's cuda:0, yet B loaded: %s",
                 reply);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "%s", reply);
    int b_id = id_of(reply);
    expect_peer_bytes(b, b_id, bytes);

    char rows[MAX_ROWS][1024];
    const struct {
        peer *p;
        int ordinal;
    } sides[2] = {{a, 0}, {b, 1}};
    for (int s = 0; s < 2; s++) {
        cr_assert_eq(peer_rows(sides[s].p, rows, MAX_ROWS), 1, "%s's rows", sides[s].p->label);
        char key[RM_MODEL_KEY_MAX], uuid[40];
        cr_assert(gw_field_word(rows[0], "key", key, sizeof key), "%s", rows[0]);
        cr_assert_eq(strcasecmp(key, u_key), 0, "%s's row is keyed %s, not %s",
                     sides[s].p->label, key, u_key);
        cr_assert_eq(gw_field_int(rows[0], "ordinal", -9), sides[s].ordinal,
                     "%s sees U as cuda:%d: %s", sides[s].p->label, sides[s].ordinal, rows[0]);
        char device[40], expected[16];
        snprintf(expected, sizeof expected, "cuda:%d", sides[s].ordinal);
        cr_assert(gw_field_word(rows[0], "device", device, sizeof device), "%s", rows[0]);
        cr_expect_str_eq(device, expected,
                         "%s's row names the device %s; rm_model_info.device[32] is "
                         "\"cpu\", \"cuda:N\" (a UUID does not fit)",
                         sides[s].p->label, device);
        cr_assert(gw_field_word(rows[0], "uuid", uuid, sizeof uuid), "%s", rows[0]);
        cr_assert_str_eq(uuid, u_hex, "%s's row: %s", sides[s].p->label, rows[0]);
        cr_assert_eq(gw_field_int(rows[0], "memory", -1), RM_MEMORY_CUDA, "%s", rows[0]);
    }
    reply = call_ok(a, "dlpack %d", a_id);
    cr_assert(gw_field_int(reply, "type", -1) == 2 && gw_field_int(reply, "id", -1) == 0,
              "A's view: %s", reply);
    reply = call_ok(b, "dlpack %d", b_id);
    cr_assert(gw_field_int(reply, "type", -1) == 2 && gw_field_int(reply, "id", -1) == 1,
              "B's view is on its own cuda:1: %s", reply);

    /* B's cuda:0 is V: another entry, loaded by B. */
    reply = peer_get(b, "order@cuda:0", seed + 1, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1, "B's cuda:0 (V) is not U's entry: %s",
                 reply);
    expect_peer_bytes(b, id_of(reply), bytes);
    cr_assert_eq(peer_rows(a, rows, MAX_ROWS), 2, "U's and V's entries");

    /* C sees V alone, as its cuda:0: it attaches to B's V weights, and
     * lists U's entry with ordinal -1 (a device it does not see). */
    setenv("FAKE_CUDA_DEVICES", "1", 1);
    setenv("FAKE_CUDA_UUIDS", v, 1);
    peer *c = start_peer("C (V)", ns, NULL, -1, NULL);
    reply = peer_get(c, "order@cuda:0", seed + 1, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "C's cuda:0 is V, loaded by B: %s", reply);
    expect_peer_bytes(c, id_of(reply), bytes);
    int count = peer_rows(c, rows, MAX_ROWS);
    cr_assert_eq(count, 2, "C's rows");
    bool seen_u = false;
    for (int i = 0; i < count; i++) {
        char key[RM_MODEL_KEY_MAX];
        cr_assert(gw_field_word(rows[i], "key", key, sizeof key), "%s", rows[i]);
        bool is_u = strcasecmp(key, u_key) == 0;
        seen_u |= is_u;
        cr_assert_eq(gw_field_int(rows[i], "ordinal", -9), is_u ? -1 : 0,
                     "C's row of %s: %s", is_u ? "U, which it does not see," : "V", rows[i]);
        char device[40];
        cr_assert(gw_field_word(rows[i], "device", device, sizeof device), "%s", rows[i]);
        cr_expect_str_eq(device, is_u ? "cuda:?" : "cuda:0", "C's row of %s: %s",
                         is_u ? "U, which it does not see," : "V", rows[i]);
    }
    cr_assert(seen_u, "C does not list U's entry");
    quit_peer(c);
    quit_peer(b);
    quit_peer(a);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 7. Rows and DLPack of a device model                                     */
/* ------------------------------------------------------------------------ */

Test(gpu_weights, rows_and_dlpack_describe_the_device_model)
{
    expect_1_4();
    private_device();
    const uint64_t bytes = 3 * MiB + 100;
    const char *ns = make_namespace("row");
    rm_context *context = NULL;
    new_context(&context, "registry.scope", "node", "registry.namespace", ns);
    rm_cuda_device device = device_zero(context);
    long long streams = counter("@streams_live");
    test_loader state = {.context = context, .plan = PLAN_DEVICE, .seed = 707, .bytes = bytes};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    expect_ok(vt->model_get_or_load(context, "row@cuda:0", run_test_loader, &state, &handle,
                                    &model),
              context, "model_get_or_load");
    cr_assert_eq(state.calls, 1);
    cr_assert_neq(state.pointer, 0);
    cr_assert_not_null(state.stream, "alloc_device_buffer gave no stream");
    if (streams >= 0)
        cr_assert_eq(counter("@streams_live"), streams, "the load's stream was not destroyed");
    expect_bytes_at(model, 0, bytes, 707);

    rm_model_info rows[MAX_ROWS];
    cr_assert_eq(list_rows(context, rows, MAX_ROWS), 1);
    const rm_model_info *row = &rows[0];
    char key[96];
    snprintf(key, sizeof key, "row@cuda:%s", device.uuid_text);
    cr_assert_eq(strcasecmp(row->key, key), 0, "the row is keyed %s, not %s", row->key, key);
    cr_assert_eq(row->memory, RM_MEMORY_CUDA, "memory %u", row->memory);
    cr_assert_eq(row->device_ordinal, 0);
    cr_expect_str_eq(row->device, "cuda:0",
                     "the row's device is \"%.32s\"; rm_model_info.device[32] is \"cpu\", "
                     "\"cuda:N\" (a UUID does not fit)",
                     row->device);
    cr_assert_arr_eq(row->device_uuid, device.uuid, 16, "the row's device_uuid is not device 0's");
    cr_assert_eq(row->bytes, bytes);
    cr_assert_geq(row->device_bytes, bytes, "device_bytes %" PRIu64, row->device_bytes);
    cr_assert_eq(row->device_bytes % GW_GRANULARITY, 0,
                 "device_bytes %" PRIu64 " is not a multiple of 2 MiB", row->device_bytes);
    cr_assert_eq(row->scope, RM_REGISTRY_SCOPE_NODE);
    cr_assert_eq(row->state, RM_MODEL_STATE_READY);
    cr_assert_eq(row->refcount, 1);

    rm_dl_managed_tensor_versioned *view = NULL;
    expect_ok(vt->model_to_dlpack(context, handle, &view), context, "model_to_dlpack");
    cr_assert_not_null(view);
    cr_assert(view->version.major == 1 && view->version.minor == 0, "DLPack %u.%u",
              view->version.major, view->version.minor);
    const rm_dl_tensor *t = &view->dl_tensor;
    cr_assert_eq(t->device.device_type, 2, "device type %d, not kDLCUDA", t->device.device_type);
    cr_assert_eq(t->device.device_id, 0);
    cr_assert_neq(view->flags & RM_DLPACK_FLAG_READ_ONLY, 0, "the view is not read-only");
    cr_assert_eq(t->ndim, 1);
    cr_assert_not_null(t->shape);
    cr_assert_eq(t->shape[0], (int64_t)bytes);
    cr_expect_null(t->strides, "a compact view has NULL strides");
    cr_assert(t->dtype.code == RM_DTYPE_UINT && t->dtype.bits == 8 && t->dtype.lanes == 1,
              "dtype {%u, %u, %u}, not uint8", t->dtype.code, t->dtype.bits, t->dtype.lanes);
    cr_assert_eq((uint8_t *)t->data + t->byte_offset, (uint8_t *)model,
                 "the view's data is not the model");

    /* The view holds the model: evicting it is refused until its deleter,
     * here and in another process. */
    expect_ok(vt->model_release(context, handle), context, "model_release");
    expect_code(vt->model_evict(context, "row@cuda:0"), RM_E_BUSY, context,
                "model_evict while a view holds the model");
    char table_key[RM_MODEL_KEY_MAX];
    snprintf(table_key, sizeof table_key, "%s", row->key);
    peer *other = start_peer("evicter", ns, NULL, -1, NULL);
    const char *reply = call_ok(other, "evict %s", table_key);
    cr_assert_eq(gw_field_int(reply, "code", 1), RM_E_BUSY,
                 "another process evicted a model this process's view holds: %s", reply);
    quit_peer(other);
    expect_bytes_at((uint8_t *)t->data + t->byte_offset, 0, bytes, 707);
    view->deleter(view);
    /* model_evict takes the row's key ("name@cuda:GPU-<uuid>") too. */
    expect_ok(vt->model_evict(context, table_key), context,
              "model_evict of the row's key after the deleter");
    cr_assert_eq(list_rows(context, rows, MAX_ROWS), 0, "the model is still listed");
    test_finished = true;
}

/* Bytes [from, from + size) of a device model are zero. */
static void expect_zero_at(void *model, int ordinal, uint64_t from, uint64_t size)
{
    td_driver *d = driver();
    uint8_t *bytes = malloc(size);
    cr_assert_not_null(bytes);
    cr_assert_eq(td_enter(d, ordinal), 0, "%s", d->why);
    int rc = d->dtoh(bytes, (td_deviceptr)(uintptr_t)model + from, size);
    td_leave(d);
    cr_assert_eq(rc, 0, "cuMemcpyDtoH_v2: CUresult %d", rc);
    uint64_t first = size;
    for (uint64_t i = 0; i < size && first == size; i++)
        if (bytes[i] != 0)
            first = i;
    free(bytes);
    cr_assert_eq(first, size, "byte %" PRIu64 " of a device buffer the loader left alone is not "
                 "zero (alloc_device_buffer zero-fills)", from + first);
}

/* What the loader does not write of its device buffer reads as zero. */
Test(gpu_weights, device_buffers_are_zero_filled)
{
    expect_1_4();
    const uint64_t bytes = 4 * MiB;
    const char *ns = make_namespace("zero");
    rm_context *contexts[2] = {NULL, NULL};
    new_context(&contexts[0], "registry.scope", "process");
    new_context(&contexts[1], "registry.scope", "node", "registry.namespace", ns);
    for (int i = 0; i < 2; i++) {
        test_loader state = {.context = contexts[i], .plan = PLAN_HALF, .seed = 31,
                             .bytes = bytes};
        rm_model_handle *handle = NULL;
        void *model = NULL;
        expect_ok(vt->model_get_or_load(contexts[i], "half@cuda:0", run_test_loader, &state,
                                        &handle, &model),
                  contexts[i], "model_get_or_load");
        expect_bytes_at(model, 0, bytes / 2, 31);
        expect_zero_at(model, 0, bytes / 2, bytes / 2);
        expect_ok(vt->model_release(contexts[i], handle), contexts[i], "model_release");
    }
    test_finished = true;
}

/* A host model's view is kDLCPU, read-only; a loader's own pointer has no
 * bytes the plugin knows (RM_E_NOT_SHAREABLE). */
static int32_t host_buffer_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    (void)user;
    void *buffer = NULL;
    int32_t rc = out->alloc_buffer(out, 4096, &buffer);
    if (rc == RM_OK)
        memset(buffer, 7, 4096);
    return rc;
}

static uint8_t own_model[64];

static int32_t own_pointer_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    (void)user;
    out->model = own_model;
    out->bytes = sizeof own_model;
    return RM_OK;
}

Test(gpu_weights, dlpack_of_host_models)
{
    expect_1_4();
    rm_context *context = NULL;
    new_context(&context, "registry.scope", "process");
    rm_model_handle *handle = NULL;
    void *model = NULL;
    expect_ok(vt->model_get_or_load(context, "host@cpu", host_buffer_loader, NULL, &handle,
                                    &model),
              context, "model_get_or_load");
    rm_dl_managed_tensor_versioned *view = NULL;
    expect_ok(vt->model_to_dlpack(context, handle, &view), context, "model_to_dlpack");
    cr_assert_eq(view->dl_tensor.device.device_type, 1, "a host model is not kDLCPU");
    cr_assert_neq(view->flags & RM_DLPACK_FLAG_READ_ONLY, 0);
    cr_assert_eq(view->dl_tensor.shape[0], 4096);
    cr_assert_eq((uint8_t *)view->dl_tensor.data + view->dl_tensor.byte_offset, (uint8_t *)model);
    view->deleter(view);
    expect_ok(vt->model_release(context, handle), context, "model_release");

    expect_ok(vt->model_get_or_load(context, "own@cpu", own_pointer_loader, NULL, &handle,
                                    &model),
              context, "model_get_or_load");
    rm_dl_managed_tensor_versioned not_set;
    view = &not_set; /* NULL on error */
    expect_code(vt->model_to_dlpack(context, handle, &view), RM_E_NOT_SHAREABLE, context,
                "model_to_dlpack of a loader's own pointer");
    cr_assert_null(view, "*out is not NULL after an error");
    view = &not_set;
    expect_code(vt->model_to_dlpack(context, NULL, &view), RM_E_INVALID_ARGUMENT, context,
                "model_to_dlpack of a NULL handle");
    cr_assert_null(view, "*out is not NULL after an error");
    expect_code(vt->model_to_dlpack(context, handle, NULL), RM_E_INVALID_ARGUMENT, context,
                "model_to_dlpack without out");
    expect_code(vt->model_to_dlpack(NULL, handle, &view), RM_E_INVALID_ARGUMENT, NULL,
                "model_to_dlpack without a context");
    expect_ok(vt->model_release(context, handle), context, "model_release");
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 8. Eviction gives the device memory back                                 */
/* ------------------------------------------------------------------------ */

typedef enum eviction_kind { EVICT_EXPLICIT, EVICT_ALL_IDLE, EVICT_TTL } eviction_kind;

/* Two processes get the model and release it; it is evicted (model_evict,
 * or its TTL); the device memory goes back to what it was (the holders
 * unmap at their next sweep), and the next get loads again. */
static void eviction_frees(const char *tag, eviction_kind kind)
{
    const uint64_t bytes = 8 * MiB;
    const uint64_t seed = 808;
    private_device();
    const char *ns = make_namespace(tag);
    const char *count_file = make_counter(tag);
    const char *ttl = kind == EVICT_TTL ? "registry.ttl_s=0.3" : "registry.ttl_s=600";
    peer *a = start_peer("A", ns, count_file, -1, ttl, NULL);
    peer *b = start_peer("B", ns, count_file, -1, ttl, NULL);
    bool fake = td_is_fake();
    uint64_t before = fake ? peer_used(a, 0) : 0;

    int a_id = id_of(peer_get(a, "evict@cuda:0", seed, bytes, NULL));
    const char *reply = peer_get(b, "evict@cuda:0", seed, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "attaches", -1), 1, "%s", reply);
    int b_id = id_of(reply);
    if (fake)
        cr_assert_eq(peer_used(a, 0), before + bytes, "the model's device memory");
    if (kind != EVICT_TTL) {
        reply = call_ok(a, "evict evict@cuda:0");
        cr_assert_eq(gw_field_int(reply, "code", 1), RM_E_BUSY,
                     "evicting a model two processes hold: %s", reply);
    }
    call_ok(a, "release %d", a_id);
    call_ok(b, "release %d", b_id);

    char rows[MAX_ROWS][1024];
    if (kind != EVICT_TTL) {
        reply = call_ok(a, kind == EVICT_EXPLICIT ? "evict evict@cuda:0" : "evict -");
        cr_assert_eq(gw_field_int(reply, "code", 1), RM_OK, "model_evict: %s", reply);
        cr_assert_eq(peer_rows(b, rows, MAX_ROWS), 0, "evicted, but B lists it");
    } else {
        uint64_t deadline = peer_now_ms() + SWEEP_MS;
        while (peer_rows(b, rows, MAX_ROWS) != 0 && peer_now_ms() < deadline)
            peer_sleep_ms(50);
        cr_assert_eq(peer_rows(b, rows, MAX_ROWS), 0, "not evicted %d ms after its TTL",
                     SWEEP_MS);
    }
    if (fake) {
        uint64_t deadline = peer_now_ms() + SWEEP_MS;
        uint64_t used = peer_used(a, 0);
        while (used != before && peer_now_ms() < deadline) {
            peer_sleep_ms(50);
            used = peer_used(a, 0);
        }
        cr_assert_eq(used, before,
                     "%d ms after the eviction the device still holds %" PRId64
                     " bytes more than before the load",
                     SWEEP_MS, (int64_t)(used - before));
        cr_assert_eq(peer_counter(a, "@vmm_mapped"), 0, "A still maps the weights");
        cr_assert_eq(peer_counter(b, "@vmm_mapped"), 0, "B still maps the weights");
    }

    reply = peer_get(b, "evict@cuda:0", seed + 1, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1, "the get after the eviction loaded? %s",
                 reply);
    expect_peer_bytes(b, id_of(reply), bytes);
    cr_assert_eq(loader_calls_in(count_file), 2);
    quit_peer(b);
    quit_peer(a);
    test_finished = true;
}

Test(gpu_weights, model_evict_frees_the_device_memory)
{
    eviction_frees("evict", EVICT_EXPLICIT);
}

Test(gpu_weights, evicting_every_idle_model_frees_the_device_memory)
{
    eviction_frees("all", EVICT_ALL_IDLE);
}

Test(gpu_weights, ttl_eviction_frees_the_device_memory)
{
    eviction_frees("ttl", EVICT_TTL);
}

/* A key loaded again right after its eviction, before the processes that
 * kept the old weights mapped have swept: everyone gets the new weights,
 * and the old mappings go at the next sweep. */
Test(gpu_weights, a_reload_right_after_eviction_is_the_new_model)
{
    const uint64_t bytes = 2 * MiB;
    const char *ns = make_namespace("reld");
    peer *a = start_peer("A", ns, NULL, -1, NULL);
    peer *b = start_peer("B", ns, NULL, -1, NULL);
    int a_old = id_of(peer_get(a, "reload@cuda:0", 1, bytes, NULL));
    int b_old = id_of(peer_get(b, "reload@cuda:0", 1, bytes, NULL));
    call_ok(a, "release %d", a_old);
    call_ok(b, "release %d", b_old);
    const char *reply = call_ok(a, "evict reload@cuda:0");
    cr_assert_eq(gw_field_int(reply, "code", 1), RM_OK, "%s", reply);
    reply = peer_get(b, "reload@cuda:0", 2, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1, "B did not load the evicted key: %s", reply);
    expect_peer_bytes(b, id_of(reply), bytes);
    reply = peer_get(a, "reload@cuda:0", 2, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 1, "A ran its loader again: %s", reply);
    expect_peer_bytes(a, id_of(reply), bytes);
    if (td_is_fake()) {
        uint64_t deadline = peer_now_ms() + SWEEP_MS;
        while ((peer_counter(a, "@vmm_mapped") != 1 || peer_counter(b, "@vmm_mapped") != 1) &&
               peer_now_ms() < deadline)
            peer_sleep_ms(50);
        cr_assert(peer_counter(a, "@vmm_mapped") == 1 && peer_counter(b, "@vmm_mapped") == 1,
                  "the evicted weights are still mapped %d ms later", SWEEP_MS);
    }
    quit_peer(b);
    quit_peer(a);
    test_finished = true;
}

/* registry.max_bytes: admitting a second device model evicts the idle
 * first one (LRU), whose device memory goes back within a sweep. */
Test(gpu_weights, budget_eviction_frees_the_device_memory)
{
    const uint64_t bytes = 4 * MiB;
    private_device();
    const char *ns = make_namespace("lru");
    const char *count_file = make_counter("lru");
    peer *a = start_peer("A", ns, count_file, -1, "registry.max_bytes=6M", NULL);
    peer *b = start_peer("B", ns, count_file, -1, "registry.max_bytes=6M", NULL);
    bool fake = td_is_fake();
    uint64_t before = fake ? peer_used(a, 0) : 0;
    int first = id_of(peer_get(a, "old@cuda:0", 1, bytes, NULL));
    peer_get(b, "old@cuda:0", 1, bytes, NULL);
    call_ok(b, "release 0");
    call_ok(a, "release %d", first);
    int second = id_of(peer_get(a, "new@cuda:0", 2, bytes, NULL));
    char rows[MAX_ROWS][1024];
    cr_assert_eq(peer_rows(b, rows, MAX_ROWS), 1, "over registry.max_bytes, two models are "
                 "listed");
    char key[RM_MODEL_KEY_MAX];
    cr_assert(gw_field_word(rows[0], "key", key, sizeof key), "%s", rows[0]);
    cr_assert(strncmp(key, "new@", 4) == 0, "the newest model was evicted: %s", rows[0]);
    cr_assert_eq(gw_field_int(call_ok(a, "metrics"), "evictions", -1), 1, "A's evictions");
    if (fake) {
        uint64_t deadline = peer_now_ms() + SWEEP_MS;
        uint64_t used = peer_used(a, 0);
        while (used != before + bytes && peer_now_ms() < deadline) {
            peer_sleep_ms(50);
            used = peer_used(a, 0);
        }
        cr_assert_eq(used, before + bytes,
                     "%d ms after the LRU eviction the device holds %" PRId64
                     " bytes, not the one model left",
                     SWEEP_MS, (int64_t)(used - before));
    }
    expect_peer_bytes(a, second, bytes);
    quit_peer(b);
    quit_peer(a);
    test_finished = true;
}

/* A full node table (registry.table_entries) reuses the least recently
 * used idle entry for a new key: its device memory goes back too. */
Test(gpu_weights, a_full_table_evicts_the_lru_device_model)
{
    enum { ENTRIES = 4 };
    const uint64_t bytes = 2 * MiB;
    private_device();
    const char *ns = make_namespace("full");
    peer *a = start_peer("A", ns, NULL, -1, "registry.table_entries=4", NULL);
    bool fake = td_is_fake();
    uint64_t before = fake ? peer_used(a, 0) : 0;
    for (int i = 0; i <= ENTRIES; i++) {
        char key[32];
        snprintf(key, sizeof key, "full%d@cuda:0", i);
        int id = id_of(peer_get(a, key, 50 + (uint64_t)i, bytes, NULL));
        if (i < ENTRIES)
            call_ok(a, "release %d", id);
        else
            expect_peer_bytes(a, id, bytes);
    }
    char rows[MAX_ROWS][1024];
    int count = peer_rows(a, rows, MAX_ROWS);
    cr_assert_eq(count, ENTRIES);
    for (int i = 0; i < count; i++)
        cr_assert(strncmp(rows[i], "row key=full0@", 14) != 0,
                  "the least recently used model is still listed: %s", rows[i]);
    if (fake) {
        uint64_t deadline = peer_now_ms() + SWEEP_MS;
        uint64_t used = peer_used(a, 0);
        while (used != before + ENTRIES * bytes && peer_now_ms() < deadline) {
            peer_sleep_ms(50);
            used = peer_used(a, 0);
        }
        cr_assert_eq(used, before + ENTRIES * bytes,
                     "%d entries of 2 MiB, and the device holds %" PRIu64 " MiB", ENTRIES,
                     (used - before) / MiB);
    }
    quit_peer(a);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 9. Process scope                                                         */
/* ------------------------------------------------------------------------ */

Test(gpu_weights, process_scope_device_buffers)
{
    expect_1_4();
    const uint64_t bytes = 1 * MiB + 1;
    rm_context *context = NULL;
    new_context(&context, "registry.scope", "process");
    long long allocations = counter("@allocs_live");
    test_loader state = {.context = context, .plan = PLAN_DEVICE, .seed = 909, .bytes = bytes};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    expect_ok(vt->model_get_or_load(context, "proc@cuda:0", run_test_loader, &state, &handle,
                                    &model),
              context, "model_get_or_load");
    cr_assert_eq((uint64_t)(uintptr_t)model, state.pointer,
                 "process scope: the model is the loader's device buffer");
    expect_bytes_at(model, 0, bytes, 909);
    if (allocations >= 0)
        cr_assert_eq(counter("@allocs_live"), allocations + 1, "device allocations while loaded");

    rm_model_info rows[MAX_ROWS];
    cr_assert_eq(list_rows(context, rows, MAX_ROWS), 1);
    cr_assert_str_eq(rows[0].key, "proc@cuda:0");
    cr_assert_eq(rows[0].memory, RM_MEMORY_CUDA);
    cr_assert_eq(rows[0].device_ordinal, 0);
    cr_assert_geq(rows[0].device_bytes, bytes);
    rm_dl_managed_tensor_versioned *view = NULL;
    expect_ok(vt->model_to_dlpack(context, handle, &view), context, "model_to_dlpack");
    cr_assert(view->dl_tensor.device.device_type == 2 && view->dl_tensor.device.device_id == 0,
              "{%d, %d}", view->dl_tensor.device.device_type, view->dl_tensor.device.device_id);
    cr_assert_neq(view->flags & RM_DLPACK_FLAG_READ_ONLY, 0);
    cr_assert_eq(view->dl_tensor.shape[0], (int64_t)bytes);

    /* The view outlives the handle: the model stays until its deleter. */
    expect_ok(vt->model_release(context, handle), context, "model_release");
    expect_code(vt->model_evict(context, "proc@cuda:0"), RM_E_BUSY, context,
                "model_evict while a view holds the model");
    expect_bytes_at(view->dl_tensor.data, 0, bytes, 909);
    view->deleter(view);
    expect_ok(vt->model_evict(context, "proc@cuda:0"), context, "model_evict");
    if (allocations >= 0)
        cr_assert_eq(counter("@allocs_live"), allocations, "the device buffer was not freed");
    expect_ok(vt->model_get_or_load(context, "proc@cuda:0", run_test_loader, &state, &handle,
                                    &model),
              context, "model_get_or_load after the eviction");
    cr_assert_eq(state.calls, 2, "the get after the eviction did not load");
    expect_bytes_at(model, 0, bytes, 909);
    expect_ok(vt->model_release(context, handle), context, "model_release");
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 10. Errors of alloc_device_buffer                                        */
/* ------------------------------------------------------------------------ */

/* model_get_or_load(key) with a loader that follows `plan`: the call that
 * the plan expects to fail gives `expected`, with a message naming the
 * model; the get returns it, with a message naming the model; no entry is
 * left, and (on the fake) no device memory. */
static void expect_failed_load(rm_context *context, const char *key, buffer_plan plan,
                               int32_t expected)
{
    long long vmm = counter("@vmm_live"), allocations = counter("@allocs_live");
    test_loader state = {.context = context, .plan = plan, .seed = 1, .bytes = 2 * MiB};
    rm_model_handle *handle = (rm_model_handle *)&state;
    void *model = &state;
    int32_t rc = vt->model_get_or_load(context, key, run_test_loader, &state, &handle, &model);
    char name[64];
    snprintf(name, sizeof name, "%.*s@", (int)strcspn(key, "@"), key);
    cr_assert_eq(state.calls, 1, "%s: the loader ran %d times", key, state.calls);
    cr_assert_eq(state.failed_rc, expected, "%s, plan %d: the buffer call gave %s, not %s: %s",
                 key, (int)plan, vt->error_name(state.failed_rc), vt->error_name(expected),
                 state.failed_message);
    cr_assert(strstr(state.failed_message, name) != NULL,
              "%s: the buffer call's message does not name the model: \"%s\"", key,
              state.failed_message);
    expect_code(rc, expected, context, key);
    cr_assert(strstr(vt->context_last_error(context), name) != NULL,
              "%s: the get's message does not name the model: \"%s\"", key,
              vt->context_last_error(context));
    cr_assert_null(handle);
    cr_assert_null(model);
    rm_model_info rows[MAX_ROWS];
    uint32_t count = list_rows(context, rows, MAX_ROWS);
    for (uint32_t i = 0; i < count; i++)
        cr_assert(strncmp(rows[i].key, name, strlen(name)) != 0,
                  "a failed load left the entry %s", rows[i].key);
    if (vmm >= 0)
        cr_assert_eq(counter("@vmm_live"), vmm, "%s: a failed load left VMM memory", key);
    if (allocations >= 0)
        cr_assert_eq(counter("@allocs_live"), allocations, "%s: a failed load left device memory",
                     key);
}

Test(gpu_weights, device_buffer_for_a_cpu_key_is_invalid)
{
    expect_1_4();
    const char *ns = make_namespace("cpu");
    rm_context *process = NULL, *node = NULL;
    new_context(&process, "registry.scope", "process");
    new_context(&node, "registry.scope", "node", "registry.namespace", ns);
    expect_failed_load(process, "cpukey@cpu", PLAN_DEVICE, RM_E_INVALID_ARGUMENT);
    expect_failed_load(node, "cpukey@cpu", PLAN_DEVICE, RM_E_INVALID_ARGUMENT);
    test_finished = true;
}

Test(gpu_weights, device_buffer_without_cuda_ipc_is_feature_disabled)
{
    expect_1_4();
    const char *ns = make_namespace("feat");
    rm_context *process = NULL, *node = NULL;
    new_context(&process, "registry.scope", "process", "features",
                "model-registry,shared-memory");
    new_context(&node, "registry.scope", "node", "registry.namespace", ns, "features",
                "model-registry,shared-memory");
    expect_failed_load(process, "nofeat@cuda:0", PLAN_DEVICE, RM_E_FEATURE_DISABLED);
    expect_failed_load(node, "nofeat@cuda:0", PLAN_DEVICE, RM_E_FEATURE_DISABLED);
    test_finished = true;
}

/* Without VMM (POSIX descriptors) node scope cannot share device memory:
 * RM_E_DEVICE_UNAVAILABLE, the load fails cleanly, and the next get runs
 * the loader again. */
Test(gpu_weights, node_scope_without_vmm_is_device_unavailable)
{
    fake_only("FAKE_CUDA_NO_VMM");
    expect_1_4();
    setenv("FAKE_CUDA_NO_VMM", "1", 1);
    const char *ns = make_namespace("novmm");
    rm_context *node = NULL;
    new_context(&node, "registry.scope", "node", "registry.namespace", ns);
    expect_failed_load(node, "novmm@cuda:0", PLAN_DEVICE, RM_E_DEVICE_UNAVAILABLE);
    expect_failed_load(node, "novmm@cuda:0", PLAN_DEVICE, RM_E_DEVICE_UNAVAILABLE);
    cr_assert_eq(metrics_of(node).load_failures, 2);
    test_finished = true;
}

/* A device the process does not have (cuda:1023), a driver that cannot be
 * loaded, and a device too small: each its code from alloc_device_buffer
 * and the get, with a message naming the key, and nothing left. */
Test(gpu_weights, missing_devices_drivers_and_memory_are_errors)
{
    expect_1_4();
    private_device();
    const char *ns = make_namespace("dev");
    const char *nodriver = make_namespace("nodrv");
    rm_context *contexts[4] = {NULL, NULL, NULL, NULL};
    new_context(&contexts[0], "registry.scope", "process");
    new_context(&contexts[1], "registry.scope", "node", "registry.namespace", ns);
    new_context(&contexts[2], "registry.scope", "process", "cuda.driver",
                "/nonexistent/libcuda.so.1");
    new_context(&contexts[3], "registry.scope", "node", "registry.namespace", nodriver,
                "cuda.driver", "/nonexistent/libcuda.so.1");
    for (int i = 0; i < 2; i++)
        expect_failed_load(contexts[i], "lastdev@cuda:1023", PLAN_DEVICE,
                           RM_E_DEVICE_UNAVAILABLE);
    for (int i = 2; i < 4; i++)
        expect_failed_load(contexts[i], "nodriver@cuda:0", PLAN_DEVICE,
                           RM_E_DEVICE_UNAVAILABLE);
    if (!td_is_fake()) {
        test_finished = true;
        return; /* the device's size is the fake's knob */
    }
    setenv("FAKE_CUDA_MEMORY_BYTES", "33554432", 1); /* 32 MiB */
    for (int i = 0; i < 2; i++) {
        long long vmm = counter("@vmm_live"), allocations = counter("@allocs_live");
        test_loader state = {.context = contexts[i], .plan = PLAN_DEVICE, .seed = 1,
                             .bytes = 64 * MiB};
        rm_model_handle *handle = NULL;
        void *model = NULL;
        int32_t rc = vt->model_get_or_load(contexts[i], "toobig@cuda:0", run_test_loader, &state,
                                           &handle, &model);
        expect_code(state.failed_rc, RM_E_NO_MEMORY, contexts[i],
                    "alloc_device_buffer of 64 MiB on a 32 MiB device");
        cr_assert(strstr(state.failed_message, "toobig@") != NULL,
                  "the message does not name the key: %s", state.failed_message);
        expect_code(rc, RM_E_NO_MEMORY, contexts[i], "model_get_or_load");
        cr_assert_eq(counter("@vmm_live"), vmm);
        cr_assert_eq(counter("@allocs_live"), allocations);
    }
    unsetenv("FAKE_CUDA_MEMORY_BYTES");
    test_finished = true;
}

/* The driver failing while the plugin seals a load (export) or while a
 * process maps weights it received (import): an error code with a message
 * naming the key, nothing half-made left, and the next get works. */
Test(gpu_weights, driver_failures_while_sealing_and_attaching)
{
    fake_only("FAKE_CUDA_FAIL");
    expect_1_4();
    private_device();
    const uint64_t bytes = 2 * MiB;
    const char *ns = make_namespace("drvf");
    rm_context *context = NULL;
    new_context(&context, "registry.scope", "node", "registry.namespace", ns);
    (void)device_zero(context); /* the driver loaded: the counters can be read */
    long long vmm = counter("@vmm_live");
    setenv("FAKE_CUDA_FAIL", "cuMemExportToShareableHandle:1", 1);
    test_loader state = {.context = context, .plan = PLAN_DEVICE, .seed = 21, .bytes = bytes};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t rc = vt->model_get_or_load(context, "sealfail@cuda:0", run_test_loader, &state,
                                       &handle, &model);
    unsetenv("FAKE_CUDA_FAIL");
    cr_assert_neq(rc, RM_OK, "the seal's export failed, yet the get succeeded");
    cr_log_info("a failed export: %s: %s", vt->error_name(rc), vt->context_last_error(context));
    cr_assert(strstr(vt->context_last_error(context), "sealfail@") != NULL,
              "the message does not name the key: %s", vt->context_last_error(context));
    cr_assert_null(handle);
    rm_model_info rows[MAX_ROWS];
    cr_assert_eq(list_rows(context, rows, MAX_ROWS), 0, "a failed seal left an entry");
    cr_assert_eq(counter("@vmm_live"), vmm, "a failed seal left device memory");
    expect_ok(vt->model_get_or_load(context, "sealfail@cuda:0", run_test_loader, &state,
                                    &handle, &model),
              context, "the get after a failed seal");
    cr_assert_eq(state.calls, 2);
    expect_bytes_at(model, 0, bytes, 21);

    /* A process whose import fails: its error, the entry stays for the
     * others, and its next get attaches. */
    setenv("FAKE_CUDA_FAIL", "cuMemImportFromShareableHandle:1", 1);
    peer *attacher = start_peer("attacher", ns, NULL, -1, NULL);
    unsetenv("FAKE_CUDA_FAIL");
    send_to(attacher, "get sealfail@cuda:0 21 %" PRIu64, bytes);
    const char *reply = reply_of(attacher, REPLY_MS);
    cr_assert(peer_starts_with(reply, "err "), "the import failed, yet: %s", reply);
    cr_assert(strstr(reply, "sealfail@") != NULL, "the message does not name the key: %s",
              reply);
    cr_assert_eq(list_rows(context, rows, MAX_ROWS), 1, "a failed attach took the entry");
    cr_assert_eq(rows[0].refcount, 1, "the failed attach left a reference");
    reply = peer_get(attacher, "sealfail@cuda:0", 21, bytes, NULL);
    cr_assert_eq(gw_field_int(reply, "calls", -1), 0, "%s", reply);
    expect_peer_bytes(attacher, id_of(reply), bytes);
    quit_peer(attacher);
    expect_ok(vt->model_release(context, handle), context, "model_release");
    test_finished = true;
}

/* At most one buffer, host or device, per load. */
Test(gpu_weights, a_second_buffer_is_invalid)
{
    expect_1_4();
    private_device();
    const char *ns = make_namespace("two");
    rm_context *contexts[2] = {NULL, NULL};
    new_context(&contexts[0], "registry.scope", "process");
    new_context(&contexts[1], "registry.scope", "node", "registry.namespace", ns);
    for (int i = 0; i < 2; i++) {
        expect_failed_load(contexts[i], "twodev@cuda:0", PLAN_DEVICE_DEVICE,
                           RM_E_INVALID_ARGUMENT);
        expect_failed_load(contexts[i], "hostdev@cuda:0", PLAN_HOST_DEVICE,
                           RM_E_INVALID_ARGUMENT);
        expect_failed_load(contexts[i], "devhost@cuda:0", PLAN_DEVICE_HOST,
                           RM_E_INVALID_ARGUMENT);
    }
    test_finished = true;
}

/* A buffer call that fails uses up nothing: the loader may ask again, or
 * for a host buffer (a host without cuda-ipc falls back to one). */
Test(gpu_weights, a_failed_buffer_call_uses_up_nothing)
{
    expect_1_4();
    private_device();
    const uint64_t bytes = 2 * MiB + 24;
    const char *ns = make_namespace("again");
    const char *cpu_ns = make_namespace("fallb");
    rm_context *contexts[4] = {NULL, NULL, NULL, NULL};
    new_context(&contexts[0], "registry.scope", "process");
    new_context(&contexts[1], "registry.scope", "node", "registry.namespace", ns);
    new_context(&contexts[2], "registry.scope", "process", "features",
                "model-registry,shared-memory");
    new_context(&contexts[3], "registry.scope", "node", "registry.namespace", cpu_ns,
                "features", "model-registry,shared-memory");
    for (int i = 0; i < 2; i++) {
        test_loader state = {.context = contexts[i], .plan = PLAN_RETRY, .seed = 41,
                             .bytes = bytes};
        rm_model_handle *handle = NULL;
        void *model = NULL;
        expect_ok(vt->model_get_or_load(contexts[i], "again@cuda:0", run_test_loader, &state,
                                        &handle, &model),
                  contexts[i], "a device buffer asked for again after a failed call");
        expect_bytes_at(model, 0, bytes, 41);
        expect_ok(vt->model_release(contexts[i], handle), contexts[i], "model_release");
    }
    for (int i = 2; i < 4; i++) {
        test_loader state = {.context = contexts[i], .plan = PLAN_HOST_FALLBACK, .seed = 42,
                             .bytes = bytes};
        rm_model_handle *handle = NULL;
        void *model = NULL;
        expect_ok(vt->model_get_or_load(contexts[i], "fallback@cuda:0", run_test_loader, &state,
                                        &handle, &model),
                  contexts[i], "a host buffer after a failed device buffer");
        cr_assert_eq(state.failed_rc, RM_E_FEATURE_DISABLED, "the device buffer gave %s",
                     vt->error_name(state.failed_rc));
        uint8_t expected[256];
        td_pattern(42, 0, expected, sizeof expected);
        cr_assert_arr_eq(model, expected, sizeof expected, "the host model's bytes");
        rm_model_info rows[MAX_ROWS];
        cr_assert_eq(list_rows(contexts[i], rows, MAX_ROWS), 1);
        cr_assert_neq(rows[0].memory, RM_MEMORY_CUDA, "a host buffer is listed as CUDA");
        expect_ok(vt->model_release(contexts[i], handle), contexts[i], "model_release");
    }
    test_finished = true;
}

/* NULL out_device_pointer, 0 bytes. */
Test(gpu_weights, bad_device_buffer_arguments_are_invalid)
{
    expect_1_4();
    private_device();
    const char *ns = make_namespace("args");
    rm_context *contexts[2] = {NULL, NULL};
    new_context(&contexts[0], "registry.scope", "process");
    new_context(&contexts[1], "registry.scope", "node", "registry.namespace", ns);
    for (int i = 0; i < 2; i++) {
        expect_failed_load(contexts[i], "zero@cuda:0", PLAN_ZERO_BYTES, RM_E_INVALID_ARGUMENT);
        expect_failed_load(contexts[i], "huge@cuda:0", PLAN_HUGE_BYTES, RM_E_INVALID_ARGUMENT);
        expect_failed_load(contexts[i], "nullptr@cuda:0", PLAN_NULL_POINTER,
                           RM_E_INVALID_ARGUMENT);
    }
    test_finished = true;
}

/* What the loader sets beside a device buffer: `model` may be the buffer
 * and `bytes` is the buffer's whatever it says; a destroy callback or
 * another model pointer is RM_E_INVALID_ARGUMENT (the callback never
 * runs), with the buffer freed and no entry left. */
Test(gpu_weights, loader_fields_beside_a_device_buffer)
{
    expect_1_4();
    private_device();
    const char *ns = make_namespace("fields");
    rm_context *contexts[2] = {NULL, NULL};
    new_context(&contexts[0], "registry.scope", "process");
    new_context(&contexts[1], "registry.scope", "node", "registry.namespace", ns);
    const uint64_t bytes = 2 * MiB + 8;
    for (int i = 0; i < 2; i++) {
        rm_context *context = contexts[i];
        test_loader state = {.context = context, .plan = PLAN_SET_MODEL, .seed = 11,
                             .bytes = bytes};
        rm_model_handle *handle = NULL;
        void *model = NULL;
        expect_ok(vt->model_get_or_load(context, "setmodel@cuda:0", run_test_loader, &state,
                                        &handle, &model),
                  context, "a loader that sets model to its device buffer");
        expect_bytes_at(model, 0, bytes, 11);
        rm_model_info rows[MAX_ROWS];
        uint32_t count = list_rows(context, rows, MAX_ROWS);
        cr_assert_eq(count, 1);
        cr_assert_eq(rows[0].bytes, bytes, "the loader said 1 byte; the row says %" PRIu64,
                     rows[0].bytes);
        expect_ok(vt->model_release(context, handle), context, "model_release");
        expect_ok(vt->model_evict(context, "setmodel@cuda:0"), context, "model_evict");

        const buffer_plan bad[2] = {PLAN_SET_DESTROY, PLAN_OTHER_MODEL};
        for (int b = 0; b < 2; b++) {
            long long vmm = counter("@vmm_live"), allocations = counter("@allocs_live");
            atomic_store(&destroy_calls, 0);
            state = (test_loader){.context = context, .plan = bad[b], .seed = 12, .bytes = bytes};
            handle = (rm_model_handle *)&state;
            int32_t rc = vt->model_get_or_load(context, "badfields@cuda:0", run_test_loader,
                                               &state, &handle, &model);
            expect_code(rc, RM_E_INVALID_ARGUMENT, context,
                        bad[b] == PLAN_SET_DESTROY ? "a device buffer and a destroy callback"
                                                   : "a device buffer and another model");
            cr_assert(strstr(vt->context_last_error(context), "badfields@") != NULL,
                      "the message does not name the key: %s", vt->context_last_error(context));
            cr_assert_null(handle);
            cr_assert_eq(atomic_load(&destroy_calls), 0, "the destroy callback ran");
            cr_assert_eq(list_rows(context, rows, MAX_ROWS), 0, "a failed load left an entry");
            if (vmm >= 0)
                cr_assert_eq(counter("@vmm_live"), vmm, "the refused load's buffer stays");
            if (allocations >= 0)
                cr_assert_eq(counter("@allocs_live"), allocations,
                             "the refused load's buffer stays");
        }
    }
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* main: the gpu suite skips (77) without a usable device                   */
/* ------------------------------------------------------------------------ */

int main(int argc, char *argv[])
{
    return gpu_suite_main(argc, argv, "test_gpu_weights");
}
