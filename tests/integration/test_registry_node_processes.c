/* The node-scope model registry (ABI 1.2) across real processes: this
 * process loads the real rm_plugin.so and forks + execs registry_peer
 * ($RM_REGISTRY_PEER), a small host that loads, attaches, holds, writes
 * into and dies with models as its arguments say (top of registry_peer.c).
 * Covered: 8 processes racing one key run one loader and see the same
 * bytes; a waiter sleeps in futex() while the loader runs (sampled from
 * /proc), and a loader SIGKILLed mid-load is taken over by it within 2 s,
 * its partial segment unlinked; holders
 * SIGKILLed lose their references, and the model is evicted after the TTL
 * and not before, nor while a live process holds it; a loader failure
 * reaches every waiting process unchanged and leaves no entry; namespaces
 * are isolated; a process SIGKILLed holding the table lock does not wedge
 * the node; the sealed model cannot be written (SIGSEGV, in the loader's
 * process too); 4 processes touching a 64 MiB model cost about 64 MiB of
 * Pss; a table filled by another process is RM_E_QUOTA_EXCEEDED until that
 * process dies; the table goes with the namespace's last context unless a
 * live process (holding a model or not) uses it, and registry_reclaim
 * removes one that only SIGKILLed processes were attached to; 6 processes
 * creating and destroying contexts (so the table is removed and made
 * anew) while they load one model never hold two loads at once, and
 * leave /dev/shm empty.
 *
 * Every test uses its own namespaces ("rp<pid><tag>"). The suite's fini
 * kills and reaps every peer still running, destroys the contexts left,
 * unlinks /dev/shm/rmreg.<ns>.* and the counter files, and, when the test
 * did not reach its end, prints every peer's stdout and stderr. Peers also
 * die with this process (PR_SET_PDEATHSIG).
 *
 * Run time (2 cores): about 7 s in the default build, about 9 s under
 * ASan+UBSan (a plugin that never takes over a dead load makes the
 * takeover test wait 20 s for its peer). Run with --jobs=1: the tests time
 * processes against each other. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node_table.h"
#include "peer_process.h"
#include "plugin_fixture.h"
#include "registry_peer_protocol.h"
#include "shm_cleanup.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)

#define MAX_PEERS 24
#define MAX_NAMESPACES 4
#define LINE_BYTES PEER_LINE_BYTES
#define TRANSCRIPT_BYTES 8192
#define REPLY_MS 20000 /* a peer that says nothing for this long is stuck */

/* ------------------------------------------------------------------------ */
/* Bookkeeping                                                              */
/* ------------------------------------------------------------------------ */

typedef struct peer {
    char label[48];
    pid_t pid;
    peer_io io;
    bool reaped;
    int status;
    char err_path[64];                /* its stderr */
    char transcript[TRANSCRIPT_BYTES]; /* every line it printed */
    size_t transcript_used;
} peer;

/* Options of one spawn (NULL: none). */
typedef struct peer_extra {
    int barrier_fd;        /* read end here, fd 3 in the peer; -1 none */
    int loader_barrier_fd; /* read end here, fd 4 in the peer; -1 none */
    bool segv_default;     /* sanitizers leave SIGSEGV alone */
} peer_extra;

static const char *peer_path;
static peer *peers[MAX_PEERS];
static int peer_count;
static char namespaces[MAX_NAMESPACES][RM_NODE_NAMESPACE_MAX + 1];
static int namespace_count;
static char counters[MAX_NAMESPACES][64];
static int counter_count;
static bool test_finished;

/* A namespace for this test, "rp<pid><tag>", cleaned up by the fini. */
static const char *make_namespace(const char *tag)
{
    cr_assert_lt(namespace_count, MAX_NAMESPACES);
    char *name = namespaces[namespace_count++];
    snprintf(name, sizeof namespaces[0], "rp%ld%s", (long)getpid(), tag);
    return name;
}

/* An empty counter file for loader calls, removed by the fini. */
static const char *make_counter(const char *tag)
{
    cr_assert_lt(counter_count, MAX_NAMESPACES);
    char *path = counters[counter_count++];
    snprintf(path, sizeof counters[0], "/tmp/rp-%ld-%s.count", (long)getpid(), tag);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    close(fd);
    return path;
}

/* Loader calls so far, across processes. */
static long long loader_calls_in(const char *counter)
{
    struct stat st;
    cr_assert_eq(stat(counter, &st), 0, "%s: %s", counter, strerror(errno));
    return (long long)st.st_size;
}

/* ------------------------------------------------------------------------ */
/* /dev/shm                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct segment_names {
    char (*names)[128];
    int capacity;
    int count;
} segment_names;

static void keep_segment_name(const char *path, const char *name, void *user)
{
    (void)path;
    segment_names *found = user;
    if (found->count < found->capacity)
        snprintf(found->names[found->count], 128, "%.127s", name);
    found->count++;
}

/* Model segments of `ns` (rmreg.<ns>.m.*): the count, and the first names
 * into names[0..capacity). */
static int model_segments(const char *ns, char (*names)[128], int capacity)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.m.", ns);
    segment_names found = {.names = names, .capacity = capacity};
    long count = shm_each_prefix(prefix, keep_segment_name, &found);
    cr_assert_geq(count, 0, "/dev/shm: %s", strerror(errno));
    return (int)count;
}

/* The one model segment of `ns`: asserts there is exactly one, returns
 * its stat and name. */
static struct stat the_model_segment(const char *ns, char *name, size_t size)
{
    char names[4][128];
    int count = model_segments(ns, names, 4);
    cr_assert_eq(count, 1, "%d model segments of %s in /dev/shm (first: %s)", count, ns,
                 count > 0 ? names[0] : "none");
    char path[160];
    snprintf(path, sizeof path, "/dev/shm/%s", names[0]);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
    if (name != NULL)
        snprintf(name, size, "%s", names[0]);
    return st;
}

/* An open descriptor of a segment: once it is unlinked, st_nlink is 0. */
static int open_segment(const char *name)
{
    char path[160];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    return fd;
}

static nlink_t links_of(int fd)
{
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    return st.st_nlink;
}

/* ------------------------------------------------------------------------ */
/* Contexts of this process                                                 */
/* ------------------------------------------------------------------------ */

/* A node-scope context of `ns` with extra key/value pairs (NULL-ended). */
static rm_context *node_context(const char *ns, ...)
{
    const char *pairs[24] = {"registry.scope", "node", "registry.namespace", ns};
    size_t count = 4;
    va_list args;
    va_start(args, ns);
    for (const char *word; count < 22 && (word = va_arg(args, const char *)) != NULL;)
        pairs[count++] = word;
    va_end(args);
    pairs[count] = NULL;
    rm_context *context = NULL;
    int32_t rc = fixture_context(&context, pairs);
    cr_assert_eq(rc, RM_OK, "context_create in %s: %s: %s", ns, vt->error_name(rc),
                 vt->context_last_error(NULL));
    fixture_track(context);
    return context;
}

static void destroy_context(rm_context *context)
{
    fixture_close(context);
}

/* The node table's rows as this context lists them; the count. */
static uint32_t list_rows(rm_context *context, rm_model_info *rows, uint32_t capacity)
{
    uint32_t count = 0;
    int32_t rc = vt->registry_list(context, rows, sizeof *rows, capacity, &count);
    cr_assert_eq(rc, RM_OK, "registry_list: %s: %s", vt->error_name(rc),
                 vt->context_last_error(context));
    return count;
}

static rm_registry_metrics metrics_of(rm_context *context)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    int32_t rc = vt->registry_metrics(context, &metrics);
    cr_assert_eq(rc, RM_OK, "registry_metrics: %s", vt->error_name(rc));
    return metrics;
}

static rm_registry_reclaim_report reclaim(rm_context *context)
{
    rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
    int32_t rc = vt->registry_reclaim(context, &report);
    cr_assert_eq(rc, RM_OK, "registry_reclaim: %s: %s", vt->error_name(rc),
                 vt->context_last_error(context));
    return report;
}

/* This process's loader: the same model as a peer's (seed, bytes). */
typedef struct test_loader_state {
    uint64_t seed;
    uint64_t bytes;
    int calls;
} test_loader_state;

static int32_t test_loader(void *user, const char *key, rm_loaded_model *out)
{
    test_loader_state *state = user;
    state->calls++;
    if (!RM_LOADED_MODEL_HAS_BUFFER(out))
        return RM_E_NOT_SHAREABLE;
    void *buffer = NULL;
    int32_t rc = out->alloc_buffer(out, state->bytes, &buffer);
    if (rc != RM_OK)
        return rc;
    tp_pattern(rp_model_seed(key, state->seed), 0, buffer, (size_t)state->bytes);
    return RM_OK;
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

/* The environment for a peer; with segv_default, the sanitizers are told
 * not to catch SIGSEGV, so that a write into a sealed model ends the peer
 * by the signal itself in every build. */
static char **peer_environment(bool segv_default)
{
    static char *env[1024];
    static char asan[2048], ubsan[2048];
    if (!segv_default)
        return environ;
    size_t count = 0;
    const char *asan_old = getenv("ASAN_OPTIONS"), *ubsan_old = getenv("UBSAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%shandle_segv=0", asan_old ? asan_old : "",
             asan_old && *asan_old ? ":" : "");
    snprintf(ubsan, sizeof ubsan, "UBSAN_OPTIONS=%s%shandle_segv=0", ubsan_old ? ubsan_old : "",
             ubsan_old && *ubsan_old ? ":" : "");
    for (char **at = environ; *at != NULL && count < 1020; at++)
        if (!peer_starts_with(*at, "ASAN_OPTIONS=") && !peer_starts_with(*at, "UBSAN_OPTIONS="))
            env[count++] = *at;
    env[count++] = asan;
    env[count++] = ubsan;
    env[count] = NULL;
    return env;
}

/* Forks and execs registry_peer with the words of `format` (split on
 * blanks) as its arguments. */
__attribute__((format(printf, 3, 4))) static peer *start_peer(const char *label,
                                                              const peer_extra *extra,
                                                              const char *format, ...)
{
    cr_assert_lt(peer_count, MAX_PEERS);
    peer *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    peers[peer_count++] = p;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->io.to = p->io.from = -1;

    static char words[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(words, sizeof words, format, args);
    va_end(args);
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)peer_path;
    for (char *save = NULL, *word = strtok_r(words, " ", &save); word != NULL && argc < 63;
         word = strtok_r(NULL, " ", &save))
        argv[argc++] = word;
    argv[argc] = NULL;

    snprintf(p->err_path, sizeof p->err_path, "/tmp/rp-%ld-%d.err", (long)getpid(), peer_count);
    int err = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_geq(err, 0, "%s: %s", p->err_path, strerror(errno));
    /* Out of the way of 0..4, so that no dup2 in the child clobbers a
     * source. */
    int fd_map[5] = {-1, -1, -1, -1, -1}, mapped = 0;
    if (extra != NULL && extra->barrier_fd >= 0) {
        fd_map[mapped++] = fcntl(extra->barrier_fd, F_DUPFD_CLOEXEC, 10);
        fd_map[mapped++] = 3;
    }
    if (extra != NULL && extra->loader_barrier_fd >= 0) {
        fd_map[mapped++] = fcntl(extra->loader_barrier_fd, F_DUPFD_CLOEXEC, 10);
        fd_map[mapped++] = 4;
    }
    char **env = peer_environment(extra != NULL && extra->segv_default);

    pid_t pid = peer_spawn(argv, env, err, fd_map, &p->io);
    int spawn_errno = errno;
    close(err);
    for (int i = 0; i < mapped; i += 2)
        if (fd_map[i] >= 0)
            close(fd_map[i]);
    cr_assert_gt(pid, 0, "fork: %s", strerror(spawn_errno));
    p->pid = pid;
    return p;
}

/* The peer's next line, or NULL (end, error or timeout; p->io.why says). */
static const char *peer_read(peer *p, int timeout_ms)
{
    const char *line = peer_read_line(&p->io, timeout_ms);
    if (line != NULL)
        transcript_add(p, line);
    return line;
}

/* Reads until a line starting with `prefix` (others are kept in the
 * transcript); a copy of that line, valid until the next expect_line on
 * the peer. Fails the test on end, timeout or a "fail" line. */
static const char *expect_line(peer *p, const char *prefix, int timeout_ms)
{
    static char copies[MAX_PEERS][LINE_BYTES];
    uint64_t deadline = peer_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = peer_now_ms();
        const char *line = peer_read(p, now >= deadline ? 0 : (int)(deadline - now));
        cr_assert_not_null(line, "%s (pid %d): no \"%s\" line: %s; it printed:\n%s", p->label,
                           (int)p->pid, prefix, p->io.why, p->transcript);
        cr_assert(!peer_starts_with(line, "fail "), "%s (pid %d): %s; it printed:\n%s", p->label,
                  (int)p->pid, line, p->transcript);
        if (peer_starts_with(line, prefix)) {
            for (int i = 0; i < peer_count; i++)
                if (peers[i] == p) {
                    snprintf(copies[i], sizeof copies[i], "%s", line);
                    return copies[i];
                }
        }
    }
}

/* Whether the peer has printed a line starting with `prefix` so far
 * (reading what is already there, not waiting). */
static bool printed_yet(peer *p, const char *prefix)
{
    while (peer_read(p, 0) != NULL)
        ;
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\n%s", prefix);
    return peer_starts_with(p->transcript, prefix) || strstr(p->transcript, pattern) != NULL;
}

/* Waits for the peer to end (killing it after timeout_ms); its status. */
static int peer_wait(peer *p, int timeout_ms)
{
    if (p->reaped)
        return p->status;
    bool killed = false;
    int status = peer_reap(p->pid, timeout_ms, &killed);
    if (killed)
        snprintf(p->io.why, sizeof p->io.why, "killed after %d ms", timeout_ms);
    p->reaped = true;
    p->status = status;
    while (peer_read(p, 0) != NULL) /* what it printed last, for the story */
        ;
    return status;
}

/* SIGKILL now; asserts it died of it. */
static void peer_kill(peer *p)
{
    cr_assert_eq(kill(p->pid, SIGKILL), 0, "kill %d: %s", (int)p->pid, strerror(errno));
    int status = peer_wait(p, 10000);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "%s: status %#x", p->label,
              status);
}

/* SIGKILLs the peers together: stopped first, so that none of them sees
 * (and sweeps) another's death before dying itself. */
static void peer_kill_all(peer **group, int count)
{
    for (int i = 0; i < count; i++)
        cr_assert_eq(kill(group[i]->pid, SIGSTOP), 0, "kill %d: %s", (int)group[i]->pid,
                     strerror(errno));
    for (int i = 0; i < count; i++) {
        int status = 0;
        pid_t done;
        while ((done = waitpid(group[i]->pid, &status, WUNTRACED)) < 0 && errno == EINTR)
            ;
        cr_assert(done == group[i]->pid && WIFSTOPPED(status), "%s: status %#x", group[i]->label,
                  status);
    }
    for (int i = 0; i < count; i++)
        peer_kill(group[i]);
}

/* Closes its stdin (a --hold stdin peer releases and says bye) and expects
 * exit status 0; the bye line. */
static const char *peer_finish(peer *p)
{
    close(p->io.to);
    p->io.to = -1;
    const char *bye = expect_line(p, "bye", REPLY_MS);
    int status = peer_wait(p, REPLY_MS);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s: status %#x; it printed:\n%s", p->label, status, p->transcript);
    return bye;
}

/* Expects a peer without --hold to end with status 0. */
static void expect_exit_0(peer *p)
{
    int status = peer_wait(p, REPLY_MS);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s: status %#x; it printed:\n%s", p->label, status, p->transcript);
}

/* Whether the peer's main thread sleeps in futex(): inside
 * model_get_or_load, waiting (it printed "ready" and calls nothing else).
 * Where /proc/<pid>/task/<pid>/syscall cannot be read, a sleeping thread
 * is taken for it. */
static bool sleeps_in_futex(pid_t pid)
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
    if (paren == NULL || paren[1] != ' ' || paren[2] != 'S')
        return false;
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", (int)pid, (int)pid);
    file = fopen(path, "re");
    if (file == NULL)
        return true;
    got = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[got] = '\0';
    char *end = NULL;
    long number = strtol(text, &end, 10);
    if (end == text)
        return true; /* "running" races us; unreadable: take it */
#ifdef SYS_futex
    return number == SYS_futex;
#else
    (void)number;
    return true;
#endif
}

/* Waits until the peer (after its "ready") blocks inside the plugin, seen
 * in 5 samples in a row; then 100 ms more for it to settle. */
static void wait_until_blocked(peer *p)
{
    uint64_t deadline = peer_now_ms() + 10000;
    int in_a_row = 0;
    while (in_a_row < 5 && peer_now_ms() < deadline) {
        in_a_row = sleeps_in_futex(p->pid) ? in_a_row + 1 : 0;
        peer_sleep_ms(10);
    }
    cr_assert_eq(in_a_row, 5, "%s (pid %d) never blocked in the plugin; it printed:\n%s",
                 p->label, (int)p->pid, p->transcript);
    peer_sleep_ms(100);
}

/* A result line's fields, checked as a successful, correct load. */
static void expect_good_result(const peer *p, const char *result, const char *key,
                               uint64_t seed, uint64_t bytes)
{
    cr_assert_eq(rp_field_int(result, "rc", 1), RM_OK, "%s: %s", p->label, result);
    cr_assert_eq(rp_field_int(result, "ok", 0), 1, "%s: wrong bytes: %s", p->label, result);
    cr_assert_eq(rp_field_hex(result, "sum"), rp_model_hash(key, seed, bytes), "%s: %s",
                 p->label, result);
}

/* ------------------------------------------------------------------------ */
/* Suite                                                                    */
/* ------------------------------------------------------------------------ */

static void suite_init(void)
{
    fixture_load();
    peer_path = getenv("RM_REGISTRY_PEER");
    cr_assert_not_null(peer_path, "RM_REGISTRY_PEER must name the built registry_peer");
    cr_assert(RM_PLUGIN_HAS(vt, registry_reclaim), "the plugin has no 1.2 node registry");
    test_finished = false;
}

static void print_file_to_stderr(const char *path)
{
    FILE *file = fopen(path, "re");
    if (file == NULL)
        return;
    char chunk[1024];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, file)) > 0)
        fwrite(chunk, 1, got, stderr);
    fclose(file);
}

static void suite_fini(void)
{
    for (int i = 0; i < peer_count; i++) {
        peer *p = peers[i];
        if (!p->reaped && p->pid > 0) {
            p->status = peer_reap(p->pid, 0, NULL);
            p->reaped = true;
            while (peer_read(p, 0) != NULL)
                ;
        }
        if (!test_finished) {
            fprintf(stderr, "---- %s, pid %d, wait status %#x, stdout:\n%s---- stderr:\n",
                    p->label, (int)p->pid, p->status, p->transcript);
            print_file_to_stderr(p->err_path);
        }
        peer_io_close(&p->io);
        unlink(p->err_path);
        free(p);
    }
    peer_count = 0;
    fixture_close_all();
    for (int i = 0; i < namespace_count; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "rmreg.%.32s.", namespaces[i]);
        shm_unlink_prefix(prefix);
    }
    for (int i = 0; i < counter_count; i++)
        unlink(counters[i]);
    fixture_unload();
}

TestSuite(registry_node_processes, .init = suite_init, .fini = suite_fini, .timeout = 60);

/* ------------------------------------------------------------------------ */
/* 1. Eight processes race one key                                          */
/* ------------------------------------------------------------------------ */

Test(registry_node_processes, eight_processes_racing_one_key_run_one_loader)
{
    enum { RACERS = 8 };
    const char *ns = make_namespace("race");
    const char *counter = make_counter("race");
    const uint64_t bytes = 4 * MiB;
    int barrier[2];
    cr_assert_eq(pipe2(barrier, O_CLOEXEC), 0);
    peer *racers[RACERS];
    for (int i = 0; i < RACERS; i++) {
        char label[32];
        snprintf(label, sizeof label, "racer %d", i);
        racers[i] = start_peer(label,
                               &(peer_extra){.barrier_fd = barrier[0], .loader_barrier_fd = -1},
                               "--ns %s load race@cpu --bytes %" PRIu64
                               " --sleep-ms 200 --counter %s --barrier-fd 3",
                               ns, bytes, counter);
    }
    for (int i = 0; i < RACERS; i++)
        expect_line(racers[i], "ready", REPLY_MS);
    /* Every racer now reads its barrier; the end of file starts them all. */
    close(barrier[0]);
    close(barrier[1]);

    char results[RACERS][LINE_BYTES];
    for (int i = 0; i < RACERS; i++)
        snprintf(results[i], sizeof results[i], "%s",
                 expect_line(racers[i], "result", REPLY_MS));
    for (int i = 0; i < RACERS; i++)
        expect_exit_0(racers[i]);

    cr_assert_eq(loader_calls_in(counter), 1, "8 racers made %lld loader calls",
                 loader_calls_in(counter));
    int loaders = 0, waited = 0;
    for (int i = 0; i < RACERS; i++) {
        const char *r = results[i];
        cr_log_info("%s", r);
        expect_good_result(racers[i], r, "race@cpu", 0, bytes);
        int64_t calls = rp_field_int(r, "calls", -1);
        cr_assert(calls == 0 || calls == 1, "%s", r);
        int64_t ms = rp_field_int(r, "ms", -1), cpu_ms = rp_field_int(r, "cpu_ms", -1);
        if (calls == 1) {
            loaders++;
            cr_assert_geq(ms, 200, "the loader slept 200 ms: %s", r);
            continue;
        }
        cr_assert_eq(rp_field_int(r, "attaches", -1), 1, "%s", r);
        cr_assert_eq(rp_field_int(r, "loads", -1), 0, "%s", r);
        /* A waiter sleeps: CPU time well under its wall time. */
        if (ms >= 100) {
            waited++;
            cr_assert_leq(cpu_ms, ms / 2 + 20, "a waiter spins? %s", r);
        }
    }
    cr_assert_eq(loaders, 1);
    cr_assert_geq(waited, 1, "no racer waited for the loader: the race did not happen");

    char name[128];
    struct stat st = the_model_segment(ns, name, sizeof name);
    cr_assert_geq((uint64_t)st.st_size, bytes, "%s", name);
    cr_assert_eq(st.st_mode & 0777, 0400, "%s is not sealed: mode %o", name, st.st_mode & 0777);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 2. The loader killed mid-load                                            */
/* ------------------------------------------------------------------------ */

Test(registry_node_processes, a_loader_killed_mid_load_is_taken_over_within_2_s)
{
    const char *ns = make_namespace("kill");
    const char *counter = make_counter("kill");
    const uint64_t bytes = 1 * MiB;
    peer *dying = start_peer("dying loader", NULL,
                             "--ns %s load takeover@cpu --bytes %" PRIu64
                             " --die-half --counter %s",
                             ns, bytes, counter);
    expect_line(dying, "half", REPLY_MS);

    /* The table shows the claim; the partial segment exists. */
    rm_context *lister = node_context(ns, NULL);
    rm_model_info rows[4];
    cr_assert_eq(list_rows(lister, rows, 4), 1);
    cr_assert_str_eq(rows[0].key, "takeover@cpu");
    cr_assert_eq(rows[0].state, RM_MODEL_STATE_LOADING);
    cr_assert_eq(rows[0].loader_pid, dying->pid);
    destroy_context(lister); /* the takeover must be the waiter's own */
    char partial_name[128];
    struct stat partial_st = the_model_segment(ns, partial_name, sizeof partial_name);
    cr_assert_eq(partial_st.st_mode & 0777, 0600, "%s: mode %o while loading", partial_name,
                 partial_st.st_mode & 0777);
    int partial = open_segment(partial_name);

    peer *waiter = start_peer("waiter", NULL,
                              "--ns %s load takeover@cpu --bytes %" PRIu64 " --counter %s", ns,
                              bytes, counter);
    expect_line(waiter, "ready", REPLY_MS);
    wait_until_blocked(waiter);
    cr_assert(!printed_yet(waiter, "result"),
              "the waiter returned while the loader was alive and loading:\n%s",
              waiter->transcript);
    cr_assert(!printed_yet(waiter, "loading"), "the waiter ran its loader while the first "
                                               "loader was alive:\n%s", waiter->transcript);

    uint64_t killed_at = peer_now_ms();
    peer_kill(dying);
    const char *result = expect_line(waiter, "result", REPLY_MS);
    uint64_t took = peer_now_ms() - killed_at;
    expect_exit_0(waiter);

    expect_good_result(waiter, result, "takeover@cpu", 0, bytes);
    cr_assert_leq(took, 2000, "the waiter completed %" PRIu64 " ms after the kill", took);
    cr_assert_eq(rp_field_int(result, "calls", -1), 1, "the waiter's loader did not run: %s",
                 result);
    /* The waiter's own poll takes the claim over, or its sweeper (every
     * second) clears the dead claim first and it claims afresh. */
    cr_assert_leq(rp_field_int(result, "takeovers", -1), 1, "%s", result);
    cr_assert_eq(rp_field_int(result, "loads", -1), 1, "%s", result);
    cr_assert_eq(loader_calls_in(counter), 2);

    /* The dead loader's segment is gone; the waiter's is the one left. */
    cr_assert_eq(links_of(partial), 0, "the dead loader's segment %s is still linked",
                 partial_name);
    close(partial);
    char name[128];
    struct stat st = the_model_segment(ns, name, sizeof name);
    cr_assert(strcmp(name, partial_name) != 0 || st.st_ino != partial_st.st_ino);
    cr_assert_eq(st.st_mode & 0777, 0400, "%s: mode %o", name, st.st_mode & 0777);
    cr_assert_geq((uint64_t)st.st_size, bytes);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 3. Holders killed; TTL                                                   */
/* ------------------------------------------------------------------------ */

Test(registry_node_processes, killed_holders_lose_their_references_and_the_model_expires_after_ttl)
{
    const char *ns = make_namespace("ttl");
    const char *counter = make_counter("ttl");
    const uint64_t bytes = 256 * KiB, ttl_ms = 300;
    const char *args = "load held@cpu --bytes 262144 --hold stdin --counter";
    peer *doomed[3];
    for (int i = 0; i < 3; i++) {
        char label[32];
        snprintf(label, sizeof label, "doomed holder %d", i);
        doomed[i] = start_peer(label, NULL, "--ns %s --set registry.ttl_s=0.3 %s %s", ns, args,
                               counter);
        expect_good_result(doomed[i], expect_line(doomed[i], "result", REPLY_MS), "held@cpu", 0,
                           bytes);
        expect_line(doomed[i], "holding", REPLY_MS);
    }
    peer *survivor = start_peer("surviving holder", NULL,
                                "--ns %s --set registry.ttl_s=0.3 %s %s", ns, args, counter);
    expect_good_result(survivor, expect_line(survivor, "result", REPLY_MS), "held@cpu", 0, bytes);
    expect_line(survivor, "holding", REPLY_MS);
    cr_assert_eq(loader_calls_in(counter), 1);

    rm_context *context = node_context(ns, "registry.ttl_s", "0.3", NULL);
    rm_model_info rows[4];
    cr_assert_eq(list_rows(context, rows, 4), 1);
    cr_assert_eq(rows[0].state, RM_MODEL_STATE_READY);
    cr_assert_eq(rows[0].holders, 4);
    cr_assert_eq(rows[0].refcount, 4);
    cr_assert_eq(rows[0].idle_ns, 0);
    char name[128];
    the_model_segment(ns, name, sizeof name);
    int segment = open_segment(name);

    peer_kill_all(doomed, 3);
    /* Any context's sweep or our reclaim drops the dead references. */
    for (uint64_t deadline = peer_now_ms() + 3000;; peer_sleep_ms(20)) {
        reclaim(context);
        cr_assert_eq(list_rows(context, rows, 4), 1, "the model went while a live process "
                                                     "holds it");
        if ((rows[0].holders == 1 && rows[0].refcount == 1) || peer_now_ms() >= deadline)
            break;
    }
    cr_assert_eq(rows[0].holders, 1, "dead holders still counted");
    cr_assert_eq(rows[0].refcount, 1, "dead references still counted");

    /* Past the TTL, still held by the survivor: stays. */
    peer_sleep_ms(2 * (long)ttl_ms);
    rm_registry_reclaim_report report = reclaim(context);
    cr_assert_eq(report.models_evicted, 0);
    cr_assert_eq(list_rows(context, rows, 4), 1, "evicted while a live process holds it");
    cr_assert_eq(links_of(segment), 1, "unlinked while a live process holds it");

    /* The survivor lets go: evicted once idle for the TTL, not before, by
     * this context's own sweep (nobody calls reclaim now). */
    uint64_t let_go_at = peer_now_ms();
    close(survivor->io.to);
    survivor->io.to = -1;
    uint64_t gone_at = 0;
    for (uint64_t deadline = peer_now_ms() + 5000; peer_now_ms() < deadline; peer_sleep_ms(5)) {
        if (list_rows(context, rows, 4) == 0) {
            gone_at = peer_now_ms();
            break;
        }
    }
    const char *bye = expect_line(survivor, "bye", REPLY_MS);
    expect_exit_0(survivor);
    cr_assert_neq(gone_at, 0, "not evicted within 5 s of its last release (ttl %" PRIu64 " ms)",
                  ttl_ms);
    cr_assert_geq(gone_at - let_go_at, ttl_ms,
                  "evicted %" PRIu64 " ms after the last release, before its TTL of %" PRIu64
                  " ms",
                  gone_at - let_go_at, ttl_ms);
    cr_assert_eq(links_of(segment), 0, "evicted but its segment %s is still linked", name);
    close(segment);
    cr_assert_eq(model_segments(ns, NULL, 0), 0);

    rm_registry_metrics metrics = metrics_of(context);
    cr_assert_eq(metrics.dead_references + (uint64_t)rp_field_int(bye, "dead_references", 0), 3,
                 "dead references dropped: %" PRIu64 " here, %s in the survivor",
                 metrics.dead_references, bye);
    cr_assert_geq(metrics.evictions, 1, "the eviction was not this context's");
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 4. A loader failure reaches every waiter                                 */
/* ------------------------------------------------------------------------ */

Test(registry_node_processes, a_loader_failure_reaches_every_waiting_process)
{
    enum { WAITERS = 4 };
    const char *ns = make_namespace("fail");
    const char *counter = make_counter("fail");
    const uint64_t bytes = 1 * MiB;
    int hold[2];
    cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
    peer *failing = start_peer("failing loader",
                               &(peer_extra){.barrier_fd = -1, .loader_barrier_fd = hold[0]},
                               "--ns %s load flaky@cpu --bytes %" PRIu64
                               " --counter %s --loader-barrier-fd 4 --fail -1234",
                               ns, bytes, counter);
    close(hold[0]);
    expect_line(failing, "half", REPLY_MS);
    char segment_name[128];
    the_model_segment(ns, segment_name, sizeof segment_name);
    int segment = open_segment(segment_name);

    peer *waiters[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        char label[32];
        snprintf(label, sizeof label, "waiter %d", i);
        waiters[i] = start_peer(label, NULL,
                                "--ns %s load flaky@cpu --bytes %" PRIu64 " --counter %s", ns,
                                bytes, counter);
    }
    for (int i = 0; i < WAITERS; i++) {
        expect_line(waiters[i], "ready", REPLY_MS);
        wait_until_blocked(waiters[i]);
    }
    close(hold[1]); /* the loader goes on, and fails */

    const char *result = expect_line(failing, "result", REPLY_MS);
    cr_assert_eq(rp_field_int(result, "rc", 0), -1234, "the loader's own call: %s", result);
    for (int i = 0; i < WAITERS; i++) {
        result = expect_line(waiters[i], "result", REPLY_MS);
        cr_assert_eq(rp_field_int(result, "rc", 0), -1234, "%s: %s", waiters[i]->label, result);
        cr_assert_eq(rp_field_int(result, "calls", -1), 0, "%s ran a loader: %s",
                     waiters[i]->label, result);
    }
    expect_exit_0(failing);
    for (int i = 0; i < WAITERS; i++)
        expect_exit_0(waiters[i]);
    cr_assert_eq(loader_calls_in(counter), 1);

    /* No entry, no segment left. */
    cr_assert_eq(links_of(segment), 0, "the failed load's segment %s is still linked",
                 segment_name);
    close(segment);
    cr_assert_eq(model_segments(ns, NULL, 0), 0);
    rm_context *context = node_context(ns, NULL);
    rm_model_info rows[4];
    cr_assert_eq(list_rows(context, rows, 4), 0, "a stale row: %s state %u", rows[0].key,
                 rows[0].state);
    destroy_context(context);

    /* The next caller loads it afresh. */
    peer *next = start_peer("next caller", NULL,
                            "--ns %s load flaky@cpu --bytes %" PRIu64 " --counter %s", ns, bytes,
                            counter);
    result = expect_line(next, "result", REPLY_MS);
    expect_exit_0(next);
    expect_good_result(next, result, "flaky@cpu", 0, bytes);
    cr_assert_eq(rp_field_int(result, "calls", -1), 1, "%s", result);
    cr_assert_eq(loader_calls_in(counter), 2);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 5. Namespaces                                                            */
/* ------------------------------------------------------------------------ */

Test(registry_node_processes, namespaces_are_isolated)
{
    const char *ns_a = make_namespace("nsA");
    const char *ns_b = make_namespace("nsB");
    const char *counter = make_counter("ns");
    const char *key = "same@cpu";
    peer *a = start_peer("loader in A", NULL,
                         "--ns %s load %s --bytes 65536 --seed 1 --counter %s --hold stdin", ns_a,
                         key, counter);
    const char *result = expect_line(a, "result", REPLY_MS);
    expect_good_result(a, result, key, 1, 64 * KiB);
    cr_assert_eq(rp_field_int(result, "calls", -1), 1, "%s", result);
    uint64_t sum_a = rp_field_hex(result, "sum");

    peer *b = start_peer("loader in B", NULL,
                         "--ns %s load %s --bytes 131072 --seed 2 --counter %s --hold stdin", ns_b,
                         key, counter);
    result = expect_line(b, "result", REPLY_MS);
    expect_good_result(b, result, key, 2, 128 * KiB);
    cr_assert_eq(rp_field_int(result, "calls", -1), 1, "B attached A's model? %s", result);
    cr_assert_neq(rp_field_hex(result, "sum"), sum_a);
    cr_assert_eq(loader_calls_in(counter), 2);

    /* Within A, a second process shares A's model (the control). */
    peer *a2 = start_peer("attacher in A", NULL,
                          "--ns %s load %s --bytes 65536 --seed 1 --counter %s", ns_a, key,
                          counter);
    result = expect_line(a2, "result", REPLY_MS);
    expect_exit_0(a2);
    expect_good_result(a2, result, key, 1, 64 * KiB);
    cr_assert_eq(rp_field_int(result, "calls", -1), 0, "%s", result);
    cr_assert_eq(loader_calls_in(counter), 2);

    /* Each namespace lists its own row only. */
    rm_context *context_a = node_context(ns_a, NULL), *context_b = node_context(ns_b, NULL);
    rm_model_info rows[4];
    cr_assert_eq(list_rows(context_a, rows, 4), 1);
    cr_assert_str_eq(rows[0].key, key);
    cr_assert_eq(rows[0].bytes, 64 * KiB);
    cr_assert_eq(rows[0].holders, 1);
    cr_assert_eq(list_rows(context_b, rows, 4), 1);
    cr_assert_str_eq(rows[0].key, key);
    cr_assert_eq(rows[0].bytes, 128 * KiB);
    cr_assert_eq(rows[0].holders, 1);
    cr_assert_eq((uint64_t)the_model_segment(ns_a, NULL, 0).st_size, 64 * KiB);
    cr_assert_eq((uint64_t)the_model_segment(ns_b, NULL, 0).st_size, 128 * KiB);

    /* Evicting in A leaves B alone. */
    peer_finish(a);
    cr_assert_eq(vt->model_evict(context_a, key), RM_OK, "%s", vt->context_last_error(context_a));
    cr_assert_eq(list_rows(context_a, rows, 4), 0);
    cr_assert_eq(model_segments(ns_a, NULL, 0), 0);
    cr_assert_eq(list_rows(context_b, rows, 4), 1);
    cr_assert_eq(model_segments(ns_b, NULL, 0), 1);
    peer_finish(b);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 6. Dead lock holder                                                      */
/* ------------------------------------------------------------------------ */

/* The node table's header, mapped read-only. */
static const rm_node_header *map_table_header(const char *ns)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/rmreg.%s.table", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    void *mapped = mmap(NULL, RM_NODE_TABLE_HEADER_BYTES, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(mapped, MAP_FAILED, "%s: %s", path, strerror(errno));
    const rm_node_header *header = mapped;
    cr_assert_eq(header->magic, RM_NODE_TABLE_MAGIC);
    return header;
}

Test(registry_node_processes, a_process_killed_holding_the_table_lock_does_not_wedge_the_node)
{
    const char *ns = make_namespace("lock");
    const char *counter = make_counter("lock");
    peer *locker = start_peer("lock-and-die", NULL, "--ns %s lock-and-die", ns);
    expect_line(locker, "locked", REPLY_MS);
    int status = peer_wait(locker, REPLY_MS);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);

    const rm_node_header *header = map_table_header(ns);
#ifdef __GLIBC__
    /* The kernel marked the robust mutex: its owner died holding it. */
    const uint32_t *lock_word = (const uint32_t *)&header->lock.__data.__lock;
    uint32_t word = __atomic_load_n(lock_word, __ATOMIC_SEQ_CST);
    cr_assert(word & FUTEX_OWNER_DIED, "the lock was not left held by the dead (word %#x)", word);
#endif

    peer *next = start_peer("next caller", NULL,
                            "--ns %s load after-lock@cpu --bytes 65536 --counter %s", ns, counter);
    uint64_t started = peer_now_ms();
    const char *result = expect_line(next, "result", 5000);
    uint64_t took = peer_now_ms() - started;
    expect_exit_0(next);
    expect_good_result(next, result, "after-lock@cpu", 0, 64 * KiB);
    cr_assert_leq(took, 2000, "the next caller took %" PRIu64 " ms", took);
    cr_assert_leq(rp_field_int(result, "ms", 99999), 1000, "%s", result);
    cr_assert_geq(rp_field_int(result, "lock_recoveries", 0), 1, "%s", result);
    cr_assert_geq(header->lock_recoveries, 1);
#ifdef __GLIBC__
    word = __atomic_load_n(lock_word, __ATOMIC_SEQ_CST);
    cr_assert_eq(word & FUTEX_OWNER_DIED, 0, "the lock is still marked (word %#x)", word);
#endif
    munmap((void *)header, RM_NODE_TABLE_HEADER_BYTES);

    /* And the node works on: a second process attaches. */
    peer *attacher = start_peer("attacher", NULL,
                                "--ns %s load after-lock@cpu --bytes 65536 --counter %s", ns,
                                counter);
    result = expect_line(attacher, "result", REPLY_MS);
    expect_exit_0(attacher);
    expect_good_result(attacher, result, "after-lock@cpu", 0, 64 * KiB);
    cr_assert_eq(rp_field_int(result, "calls", -1), 0, "%s", result);
    cr_assert_eq(loader_calls_in(counter), 1);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 7. Sealed read-only                                                      */
/* ------------------------------------------------------------------------ */

/* The peer writes into the model it got, after the result line: it must
 * die of SIGSEGV, faulting on the model with SEGV_ACCERR. */
static void expect_write_faults(peer *p, const char *key, int64_t calls)
{
    const char *result = expect_line(p, "result", REPLY_MS);
    expect_good_result(p, result, key, 0, 1 * MiB);
    cr_assert_eq(rp_field_int(result, "calls", -1), calls, "%s", result);
    expect_line(p, "writing", REPLY_MS);
    int status = peer_wait(p, REPLY_MS);
    cr_assert(!printed_yet(p, "wrote"), "%s wrote into the sealed model:\n%s", p->label,
              p->transcript);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
              "%s: status %#x, not SIGSEGV:\n%s", p->label, status, p->transcript);
    char fault[64];
    snprintf(fault, sizeof fault, "segv code=%d in_model=1", SEGV_ACCERR);
    cr_assert(printed_yet(p, fault),
              "%s: the fault was not a permission fault (SEGV_ACCERR) on the model:\n%s",
              p->label, p->transcript);
}

Test(registry_node_processes, the_sealed_model_cannot_be_written_in_any_process)
{
    const char *ns = make_namespace("seal");
    const char *counter = make_counter("seal");
    const peer_extra segv = {.barrier_fd = -1, .loader_barrier_fd = -1, .segv_default = true};
    /* The loader's own process gets a read-only mapping too. */
    peer *loader = start_peer("loader writing", &segv,
                              "--ns %s load sealed@cpu --bytes 1048576 --counter %s --write", ns,
                              counter);
    expect_write_faults(loader, "sealed@cpu", 1);
    peer *attacher = start_peer("attacher writing", &segv,
                                "--ns %s load sealed@cpu --bytes 1048576 --counter %s --write",
                                ns, counter);
    expect_write_faults(attacher, "sealed@cpu", 0);

    /* The bytes are intact for the next process. */
    peer *reader = start_peer("reader", NULL,
                              "--ns %s load sealed@cpu --bytes 1048576 --counter %s", ns, counter);
    const char *result = expect_line(reader, "result", REPLY_MS);
    expect_exit_0(reader);
    expect_good_result(reader, result, "sealed@cpu", 0, 1 * MiB);
    cr_assert_eq(rp_field_int(result, "calls", -1), 0, "%s", result);
    cr_assert_eq(loader_calls_in(counter), 1);
    char name[128];
    struct stat st = the_model_segment(ns, name, sizeof name);
    cr_assert_eq(st.st_mode & 0777, 0400, "%s: mode %o", name, st.st_mode & 0777);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 8. Pss                                                                   */
/* ------------------------------------------------------------------------ */

/* Rss and Pss (kB) of the process's mappings of `ns`'s model segments. */
static void model_memory(pid_t pid, const char *ns, uint64_t *rss_kb, uint64_t *pss_kb)
{
    char path[64], needle[96], line[1024];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
    snprintf(needle, sizeof needle, "/dev/shm/rmreg.%s.m.", ns);
    FILE *file = fopen(path, "re");
    cr_assert_not_null(file, "%s: %s", path, strerror(errno));
    bool in_model = false;
    *rss_kb = *pss_kb = 0;
    while (fgets(line, sizeof line, file) != NULL) {
        unsigned long start, end;
        char colon = 0;
        if (sscanf(line, "%lx-%lx %c", &start, &end, &colon) == 3 && strchr(line, ':') != NULL &&
            strchr(line, '-') < strchr(line, ' ')) {
            in_model = strstr(line, needle) != NULL;
            continue;
        }
        unsigned long long kb;
        if (in_model && sscanf(line, "Rss: %llu kB", &kb) == 1)
            *rss_kb += kb;
        else if (in_model && sscanf(line, "Pss: %llu kB", &kb) == 1)
            *pss_kb += kb;
    }
    fclose(file);
}

Test(registry_node_processes, four_processes_touching_a_64_mib_model_cost_64_mib_of_pss)
{
    enum { HOLDERS = 4 };
    const char *ns = make_namespace("pss");
    const char *counter = make_counter("pss");
    const uint64_t bytes = 64 * MiB, model_kb = bytes / KiB;
    peer *holders[HOLDERS];
    for (int i = 0; i < HOLDERS; i++) {
        char label[32];
        snprintf(label, sizeof label, "holder %d", i);
        holders[i] = start_peer(label, NULL,
                                "--ns %s load big@cpu --bytes %" PRIu64
                                " --counter %s --hold stdin",
                                ns, bytes, counter);
        /* The result line comes after the peer hashed every byte. */
        const char *result = expect_line(holders[i], "result", REPLY_MS);
        expect_good_result(holders[i], result, "big@cpu", 0, bytes);
        cr_assert_eq(rp_field_int(result, "calls", -1), i == 0 ? 1 : 0, "%s", result);
        expect_line(holders[i], "holding", REPLY_MS);
    }
    uint64_t pss_total = 0, rss_total = 0;
    char story[1024] = "";
    size_t used = 0;
    for (int i = 0; i < HOLDERS; i++) {
        uint64_t rss, pss;
        model_memory(holders[i]->pid, ns, &rss, &pss);
        used += (size_t)snprintf(story + used, sizeof story - used,
                                 " [pid %d: Rss %" PRIu64 " kB, Pss %" PRIu64 " kB]",
                                 (int)holders[i]->pid, rss, pss);
        cr_assert_geq(rss, model_kb, "holder %d does not have the model resident:%s", i, story);
        pss_total += pss;
        rss_total += rss;
    }
    cr_log_info("64 MiB model, %d processes: Rss %" PRIu64 " kB, Pss %" PRIu64 " kB (%.3fx)%s",
                HOLDERS, rss_total, pss_total, (double)pss_total / (double)model_kb, story);
    cr_assert_leq(pss_total * 10, model_kb * 13, "Pss %" PRIu64 " kB for a %" PRIu64
                  " kB model: the pages are not shared:%s", pss_total, model_kb, story);
    cr_assert_geq(pss_total * 100, model_kb * 95, "Pss %" PRIu64 " kB:%s", pss_total, story);
    for (int i = 0; i < HOLDERS; i++)
        peer_finish(holders[i]);
    cr_assert_eq(loader_calls_in(counter), 1);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 9. A table filled by another process                                     */
/* ------------------------------------------------------------------------ */

Test(registry_node_processes, a_table_full_of_another_process_s_models_frees_up_when_it_dies)
{
    const char *ns = make_namespace("full");
    peer *filler = start_peer("filler", NULL,
                              "--ns %s --set registry.table_entries=4 load fill@cpu --count 4 "
                              "--bytes 4096 --hold stdin",
                              ns);
    for (int i = 0; i < 4; i++) {
        const char *result = expect_line(filler, "result", REPLY_MS);
        cr_assert_eq(rp_field_int(result, "rc", 1), RM_OK, "%s", result);
        cr_assert_eq(rp_field_int(result, "ok", 0), 1, "%s", result);
    }
    expect_line(filler, "holding", REPLY_MS);

    rm_context *context = node_context(ns, "registry.table_entries", "4", NULL);
    rm_model_info rows[8];
    cr_assert_eq(list_rows(context, rows, 8), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(rows[i].holders, 1, "%s", rows[i].key);
    test_loader_state state = {.seed = 0, .bytes = 4096};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t rc = vt->model_get_or_load(context, "extra@cpu", test_loader, &state, &handle, &model);
    cr_assert_eq(rc, RM_E_QUOTA_EXCEEDED, "a fifth model in a table of 4 held ones: %s: %s",
                 vt->error_name(rc), vt->context_last_error(context));
    cr_assert_null(handle);
    cr_assert_eq(state.calls, 0, "the loader ran although the table is full");
    cr_assert_eq(list_rows(context, rows, 8), 4);

    peer_kill(filler);
    reclaim(context);
    cr_assert_eq(metrics_of(context).dead_references, 4);
    rc = vt->model_get_or_load(context, "extra@cpu", test_loader, &state, &handle, &model);
    cr_assert_eq(rc, RM_OK, "after the filler died: %s: %s", vt->error_name(rc),
                 vt->context_last_error(context));
    cr_assert_eq(state.calls, 1);
    cr_assert_eq(tp_hash_bytes(model, 4096), rp_model_hash("extra@cpu", 0, 4096));
    uint32_t count = list_rows(context, rows, 8);
    cr_assert_leq(count, 4);
    bool listed = false;
    for (uint32_t i = 0; i < count; i++)
        listed = listed || strcmp(rows[i].key, "extra@cpu") == 0;
    cr_assert(listed);
    cr_assert_eq(vt->model_release(context, handle), RM_OK);
    cr_assert_leq(model_segments(ns, NULL, 0), 4);
    test_finished = true;
}

/* ------------------------------------------------------------------------ */
/* 10. The table's lifetime                                                 */
/* ------------------------------------------------------------------------ */

/* The table of `ns` as /dev/shm has it: whether it exists, and its stat. */
static bool table_stat(const char *ns, struct stat *out)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/rmreg.%s.table", ns);
    return lstat(path, out) == 0;
}

static bool table_exists(const char *ns)
{
    struct stat st;
    return table_stat(ns, &st);
}

/* Files of `ns` in /dev/shm (table, model segments, tables being built). */
static long namespace_files(const char *ns)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.", ns);
    long count = shm_each_prefix(prefix, NULL, NULL);
    cr_assert_geq(count, 0, "/dev/shm: %s", strerror(errno));
    return count;
}

Test(registry_node_processes, the_last_context_removes_the_table_unless_a_live_process_uses_it)
{
    const char *ns = make_namespace("life");
    rm_context *mine = node_context(ns, NULL);
    cr_assert(table_exists(ns), "context_create made no table");

    /* Another process holds a model: this process's last context going
     * leaves the table (and the model) to it. */
    peer *holder = start_peer("holder", NULL, "--ns %s load kept@cpu --hold stdin --evict", ns);
    expect_good_result(holder, expect_line(holder, "result", REPLY_MS), "kept@cpu", 0, 65536);
    expect_line(holder, "holding", REPLY_MS);
    destroy_context(mine);
    cr_assert(table_exists(ns), "the table went while a live process held a model in it");
    cr_assert_eq(model_segments(ns, NULL, 0), 1);

    /* It releases and evicts the model, then destroys its context, the
     * namespace's last: nothing is left, the table goes. */
    peer_finish(holder);
    cr_assert(printed_yet(holder, "evicted rc=OK"), "the holder could not evict: %s",
              holder->transcript);
    cr_assert_not(table_exists(ns), "the namespace's last context left its table");
    cr_assert_eq(namespace_files(ns), 0, "files of %s left in /dev/shm", ns);

    /* A process attached without any model keeps the table as well. */
    mine = node_context(ns, NULL);
    peer *idle = start_peer("idle", NULL, "--ns %s idle", ns);
    expect_line(idle, "ready", REPLY_MS);
    destroy_context(mine);
    cr_assert(table_exists(ns), "the table went while a live process was attached to it");
    peer_finish(idle);
    cr_assert_not(table_exists(ns), "the idle process, the last to go, left the table");
    cr_assert_eq(namespace_files(ns), 0);
    test_finished = true;
}

Test(registry_node_processes, reclaim_removes_a_table_only_dead_processes_were_attached_to)
{
    const char *ns = make_namespace("dead");
    peer *idle = start_peer("idle", NULL, "--ns %s idle", ns);
    expect_line(idle, "ready", REPLY_MS);
    rm_context *context = node_context(ns, NULL);

    /* Alive, it keeps the table. */
    rm_registry_reclaim_report report = reclaim(context);
    cr_assert_eq(report.segments_unlinked, 0, "reclaim unlinked %" PRIu64 " segments",
                 report.segments_unlinked);
    cr_assert(table_exists(ns));

    /* SIGKILLed, it cannot leave: its record stays in the table until
     * reclaim finds it dead, and then the table goes. */
    peer_kill(idle);
    struct stat table;
    cr_assert(table_stat(ns, &table), "the table went with the SIGKILLed process");
    report = reclaim(context);
    cr_assert_eq(report.segments_unlinked, 1, "the table is the one segment: %" PRIu64,
                 report.segments_unlinked);
    cr_assert_eq(report.bytes_unlinked, (uint64_t)table.st_blocks * 512u,
                 "%" PRIu64 " bytes freed, the table had %" PRIu64, report.bytes_unlinked,
                 (uint64_t)table.st_blocks * 512u);
    cr_assert_eq(report.dead_references + report.loads_abandoned + report.models_evicted, 0);
    cr_assert_not(table_exists(ns), "reclaim left the table of a dead process");
    cr_assert_eq(namespace_files(ns), 0);

    /* The context has no table now: listing creates none, ... */
    rm_model_info rows[2];
    cr_assert_eq(list_rows(context, rows, 2), 0);
    cr_assert_eq(metrics_of(context).models, 0);
    cr_assert_not(table_exists(ns), "registry_list made a table");
    /* ... a second reclaim neither, ... */
    report = reclaim(context);
    cr_assert_eq(report.segments_unlinked, 0);
    cr_assert_not(table_exists(ns), "registry_reclaim made a table");
    /* ... its next load makes one, which another process shares. */
    test_loader_state state = {.seed = 5, .bytes = 8192};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t rc = vt->model_get_or_load(context, "again@cpu", test_loader, &state, &handle, &model);
    cr_assert_eq(rc, RM_OK, "%s: %s", vt->error_name(rc), vt->context_last_error(context));
    cr_assert_eq(state.calls, 1);
    cr_assert(table_exists(ns));
    peer *other = start_peer("attacher", NULL, "--ns %s load again@cpu --seed 5 --bytes 8192", ns);
    const char *result = expect_line(other, "result", REPLY_MS);
    expect_good_result(other, result, "again@cpu", 5, 8192);
    cr_assert_eq(rp_field_int(result, "calls", -1), 0, "it loaded instead of attaching: %s",
                 result);
    expect_exit_0(other);
    cr_assert_eq(vt->model_release(context, handle), RM_OK);
    cr_assert_eq(vt->model_evict(context, "again@cpu"), RM_OK);
    destroy_context(context);
    cr_assert_eq(namespace_files(ns), 0);
    test_finished = true;
}

/* The attacher's side of the race, made to happen: a process opens the
 * table and waits for its lock (this test holds it) while the table is
 * retired (`retired` set; with `unlinked`, its name unlinked too, as the
 * remover does; without, as a remover SIGKILLed between the two leaves
 * it). Once it gets the lock it must let that table go and load into a
 * new one under the name, where every other process finds it. */
static void attach_while_retired(const char *tag, bool unlinked)
{
    const char *ns = make_namespace(tag);
    peer *idle = start_peer("idle", NULL, "--ns %s idle", ns);
    expect_line(idle, "ready", REPLY_MS);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/rmreg.%s.table", ns);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    struct stat old;
    cr_assert_eq(fstat(fd, &old), 0);
    rm_node_header *header =
        mmap(NULL, RM_NODE_TABLE_HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(header, MAP_FAILED, "%s: %s", path, strerror(errno));
    cr_assert_eq(header->layout, RM_NODE_TABLE_LAYOUT);
    cr_assert_eq(pthread_mutex_lock(&header->lock), 0);

    peer *attacher = start_peer("attacher", NULL, "--ns %s load late@cpu --hold stdin --evict",
                                ns);
    wait_until_blocked(attacher);
    cr_assert_not(printed_yet(attacher, "ready"), "the attacher got past the table lock");
    header->retired = 1;
    if (unlinked)
        cr_assert_eq(unlink(path), 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(pthread_mutex_unlock(&header->lock), 0);

    const char *result = expect_line(attacher, "result", REPLY_MS);
    expect_good_result(attacher, result, "late@cpu", 0, 65536);
    cr_assert_eq(rp_field_int(result, "calls", -1), 1, "the new table has no model: %s", result);
    expect_line(attacher, "holding", REPLY_MS);
    struct stat now;
    cr_assert(table_stat(ns, &now), "no table under the name while the attacher holds a model");
    cr_assert_neq(now.st_ino, old.st_ino, "the retired table is still under the name");
    /* The model is in the table every process finds. */
    rm_context *context = node_context(ns, NULL);
    rm_model_info rows[2];
    cr_assert_eq(list_rows(context, rows, 2), 1, "the attacher's model is not in the table");
    cr_assert_str_eq(rows[0].key, "late@cpu");
    cr_assert_eq(rows[0].holders, 1);
    destroy_context(context);
    peer_finish(attacher);
    cr_assert(printed_yet(attacher, "evicted rc=OK"), "%s", attacher->transcript);
    cr_assert_not(table_exists(ns), "the new table outlived its last context");
    /* The idle process stays in the retired table, and leaves it alone. */
    peer_finish(idle);
    munmap(header, RM_NODE_TABLE_HEADER_BYTES);
    cr_assert_eq(namespace_files(ns), 0, "files of %s left in /dev/shm", ns);
    test_finished = true;
}

Test(registry_node_processes, an_attacher_that_finds_the_table_retired_makes_a_new_one)
{
    attach_while_retired("ret", true);
}

Test(registry_node_processes, an_attacher_finishes_the_removal_of_a_killed_remover)
{
    attach_while_retired("half", false);
}

/* The churn log's lines (registry_peer.c, churn). */
typedef struct churn_hold {
    uint64_t stamp;
    uint64_t from_ns;
    uint64_t to_ns;
} churn_hold;

typedef struct churn_log {
    uint64_t *loads;
    size_t load_count;
    churn_hold *holds;
    size_t hold_count;
} churn_log;

static int compare_u64(const void *a, const void *b)
{
    uint64_t left = *(const uint64_t *)a, right = *(const uint64_t *)b;
    return left < right ? -1 : left > right;
}

static int compare_hold_start(const void *a, const void *b)
{
    const churn_hold *left = a, *right = b;
    return left->from_ns < right->from_ns ? -1 : left->from_ns > right->from_ns;
}

static void read_churn_log(const char *path, churn_log *log)
{
    FILE *file = fopen(path, "re");
    cr_assert_not_null(file, "%s: %s", path, strerror(errno));
    size_t load_capacity = 0, hold_capacity = 0;
    char line[256];
    while (fgets(line, sizeof line, file) != NULL) {
        unsigned long long stamp, from, to;
        if (sscanf(line, "load %llx", &stamp) == 1) {
            if (log->load_count == load_capacity) {
                load_capacity = load_capacity ? 2 * load_capacity : 1024;
                log->loads = realloc(log->loads, load_capacity * sizeof *log->loads);
                cr_assert_not_null(log->loads);
            }
            log->loads[log->load_count++] = stamp;
        } else if (sscanf(line, "hold %llx %llu %llu", &stamp, &from, &to) == 3) {
            if (log->hold_count == hold_capacity) {
                hold_capacity = hold_capacity ? 2 * hold_capacity : 1024;
                log->holds = realloc(log->holds, hold_capacity * sizeof *log->holds);
                cr_assert_not_null(log->holds);
            }
            cr_assert_leq(from, to, "%s", line);
            log->holds[log->hold_count++] = (churn_hold){stamp, from, to};
        } else {
            cr_assert_fail("a line the churn log should not have: %s", line);
        }
    }
    fclose(file);
}

static bool stamp_in(const uint64_t *sorted, size_t count, uint64_t stamp)
{
    return bsearch(&stamp, sorted, count, sizeof *sorted, compare_u64) != NULL;
}

/* Many processes create a context, load or attach one model, release and
 * evict it and destroy the context, over and over, in one namespace: the
 * table is removed whenever all of them are out at once, while others
 * attach to it. Checked: every call of every process succeeds; every
 * model read is the bytes of a real load (a stamp a loader wrote); two
 * processes that held the model at overlapping times held the same load
 * (a process that attached to a table just removed, while another made a
 * new one and loaded there, would hold another); each load is held by
 * its loader; the table was replaced during the run; nothing is left in
 * /dev/shm at the end. */
Test(registry_node_processes, processes_attaching_while_the_table_is_removed_share_one_table)
{
    enum { CHURNERS = 6, SECONDS = 3 };
    const char *ns = make_namespace("churn");
    const char *log_path = make_counter("churn");
    peer *churners[CHURNERS];
    for (int i = 0; i < CHURNERS; i++) {
        char label[32];
        snprintf(label, sizeof label, "churner %d", i);
        churners[i] = start_peer(label, NULL,
                                 "--ns %s --set features=model-registry churn churn@cpu "
                                 "--seconds %d --log %s --bytes 16384",
                                 ns, SECONDS, log_path);
    }
    for (int i = 0; i < CHURNERS; i++)
        expect_line(churners[i], "ready", REPLY_MS);

    /* Watch the table come and go: a new inode, or none, since the last
     * look is a removal. */
    int replaced = 0;
    ino_t last = 0;
    bool seen = false;
    uint64_t until = peer_now_ms() + SECONDS * 1000u;
    while (peer_now_ms() < until) {
        struct stat st;
        bool exists = table_stat(ns, &st);
        if (seen && (!exists || st.st_ino != last))
            replaced++;
        seen = exists;
        last = exists ? st.st_ino : 0;
        peer_sleep_ms(1);
    }

    long long cycles = 0, loads = 0;
    for (int i = 0; i < CHURNERS; i++) {
        const char *done = expect_line(churners[i], "churned", REPLY_MS);
        cycles += rp_field_int(done, "cycles", 0);
        loads += rp_field_int(done, "loads", 0);
        expect_exit_0(churners[i]);
    }
    cr_log_info("%lld cycles, %lld loads, table removed %d times (seen)", cycles, loads,
                replaced);

    churn_log log = {0};
    read_churn_log(log_path, &log);
    cr_assert_eq((long long)log.load_count, loads, "loads logged and counted differ");
    cr_assert_eq((long long)log.hold_count, cycles, "one hold per cycle");
    cr_assert_gt(log.load_count, 0);
    qsort(log.loads, log.load_count, sizeof *log.loads, compare_u64);
    for (size_t i = 1; i < log.load_count; i++)
        cr_assert_neq(log.loads[i - 1], log.loads[i], "stamp %016" PRIx64 " loaded twice",
                      log.loads[i]);
    uint64_t *held = malloc(log.hold_count * sizeof *held);
    cr_assert_not_null(held);
    for (size_t i = 0; i < log.hold_count; i++) {
        held[i] = log.holds[i].stamp;
        cr_assert(stamp_in(log.loads, log.load_count, log.holds[i].stamp),
                  "a model of stamp %016" PRIx64 " was held, which no loader wrote",
                  log.holds[i].stamp);
    }
    qsort(held, log.hold_count, sizeof *held, compare_u64);
    for (size_t i = 0; i < log.load_count; i++)
        cr_assert(stamp_in(held, log.hold_count, log.loads[i]),
                  "load %016" PRIx64 " was held by nobody, not even its loader", log.loads[i]);
    free(held);
    qsort(log.holds, log.hold_count, sizeof *log.holds, compare_hold_start);
    for (size_t i = 0; i < log.hold_count; i++)
        for (size_t j = i + 1; j < log.hold_count && log.holds[j].from_ns <= log.holds[i].to_ns;
             j++)
            cr_assert_eq(log.holds[i].stamp, log.holds[j].stamp,
                         "two loads held at once: %016" PRIx64 " over [%" PRIu64 ", %" PRIu64
                         "] and %016" PRIx64 " over [%" PRIu64 ", %" PRIu64 "]",
                         log.holds[i].stamp, log.holds[i].from_ns, log.holds[i].to_ns,
                         log.holds[j].stamp, log.holds[j].from_ns, log.holds[j].to_ns);
    free(log.loads);
    free(log.holds);
    cr_assert_gt(replaced, 0, "the table was never removed while the processes churned");
    cr_assert_eq(namespace_files(ns), 0, "files of %s left in /dev/shm", ns);
    test_finished = true;
}
