/* Shared-memory tensors across real processes: this process loads the real
 * rm_plugin.so and forks + execs tensor_peer ($RM_TENSOR_PEER), a small host
 * that imports, checks, holds, releases and produces tensors on command
 * (protocol at the top of tensor_peer.c). Covered: data equal across
 * processes for sizes 0 to 1 GiB, every dtype and strided views, binary and
 * text descriptors (over a pipe and through argv); writable and read-only
 * views; 2 producers x 2 consumers streaming handoffs with checksums and
 * sequence numbers, pools back to their baseline; a consumer and a
 * producer killed with SIGKILL; a full /dev/shm in a private mount
 * namespace; quota races with imports from several processes at once;
 * RM_TENSOR_MAX_HOLDERS importing processes; namespace isolation; forged
 * segments and forged descriptors.
 *
 * Every test uses its own namespaces ("pr-<tag>-<pid>"). The suite's fini
 * kills and reaps every peer still running, destroys the contexts left and
 * unlinks whatever those namespaces left in /dev/shm, so that a failing test
 * leaves no process and no segment behind; peers also die with this process
 * (PR_SET_PDEATHSIG).
 *
 * Run time (2 cores, idle machine): about 8 s in all in the default build
 * (the 1 GiB case ~5 s, 400k handoffs ~0.7 s), about 23 s under ASan+UBSan;
 * up to ~45 s on a heavily loaded machine (page faults dominate). RM_TEST_HANDOFFS=N changes the 100000
 * handoffs per producer-consumer pair. Run with --jobs=1: the tests use a
 * lot of /dev/shm and every core. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "descriptor_forge.h"
#include "peer_process.h"
#include "plugin_fixture.h"
#include "shm_cleanup.h"
#include "tensor_peer_protocol.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

#define REPLY_TIMEOUT_MS 60000
#define STREAM_TIMEOUT_MS 300000
#define MAX_PEERS 64
#define LINE_BYTES PEER_LINE_BYTES

/* ------------------------------------------------------------------------ */
/* Bookkeeping for cleanup                                                  */
/* ------------------------------------------------------------------------ */

typedef struct peer {
    pid_t pid;
    peer_io io;
} peer;

static const char *peer_path;
static peer *live_peers[MAX_PEERS];
static rm_context *live_contexts[16];
static char namespaces[16][40];
static int namespace_count;

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* A namespace for this test, "pr-<tag>-<pid>", cleaned up by the fini. */
static const char *make_namespace(const char *tag)
{
    cr_assert_lt(namespace_count, 16);
    char *name = namespaces[namespace_count++];
    snprintf(name, sizeof namespaces[0], "pr-%s-%ld", tag, (long)getpid());
    return name;
}

/* Names in /dev/shm starting with "rm.<ns>." (and "<pid>." when pid > 0);
 * -1 when /dev/shm cannot be read. */
static int count_segments(const char *ns, long pid)
{
    char prefix[96];
    if (pid > 0)
        snprintf(prefix, sizeof prefix, "rm.%s.%ld.", ns, pid);
    else
        snprintf(prefix, sizeof prefix, "rm.%s.", ns);
    return (int)shm_list_prefix(prefix, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* Contexts                                                                 */
/* ------------------------------------------------------------------------ */

/* A context in namespace `ns` with extra key/value pairs (NULL-terminated);
 * returns the code, *out tracked for the fini. */
static int32_t try_context(rm_context **out, const char *ns, ...)
{
    const char *pairs[34] = {"shm.namespace", ns};
    size_t count = 2;
    va_list args;
    va_start(args, ns);
    for (const char *word; count < 32 && (word = va_arg(args, const char *)) != NULL;)
        pairs[count++] = word;
    va_end(args);
    pairs[count] = NULL;
    int32_t rc = fixture_context(out, pairs);
    if (rc == RM_OK)
        for (size_t i = 0; i < 16; i++)
            if (live_contexts[i] == NULL) {
                live_contexts[i] = *out;
                break;
            }
    return rc;
}

#define new_context(out, ...)                                                          \
    do {                                                                               \
        int32_t rc_ = try_context((out), __VA_ARGS__, NULL);                          \
        cr_assert_eq(rc_, RM_OK, "context_create: %s: %s", vt->error_name(rc_),       \
                     vt->context_last_error(NULL));                                    \
    } while (0)

static void destroy_context(rm_context *context)
{
    for (size_t i = 0; i < 16; i++)
        if (live_contexts[i] == context)
            live_contexts[i] = NULL;
    vt->context_destroy(context);
}

/* ------------------------------------------------------------------------ */
/* Peers: the non-asserting core (also used in forked children)             */
/* ------------------------------------------------------------------------ */

static void track_peer(peer *p, bool add)
{
    for (size_t i = 0; i < MAX_PEERS; i++)
        if (add ? live_peers[i] == NULL : live_peers[i] == p) {
            live_peers[i] = add ? p : NULL;
            return;
        }
}

/* Forks and execs tensor_peer [--ns ns] [extra...]; fd_map holds pairs
 * (descriptor here, number in the peer), -1 terminated. NULL on failure. */
static peer *peer_spawn_tensor(const char *ns, const char *const *extra, const int *fd_map)
{
    peer *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    const char *argv[64];
    int argc = 0;
    argv[argc++] = peer_path;
    if (ns != NULL) {
        argv[argc++] = "--ns";
        argv[argc++] = ns;
    }
    for (; extra != NULL && *extra != NULL && argc < 62; extra++)
        argv[argc++] = *extra;
    argv[argc] = NULL;
    p->pid = peer_spawn((char *const *)argv, NULL, -1, fd_map, &p->io);
    if (p->pid < 0) {
        free(p);
        return NULL;
    }
    track_peer(p, true);
    return p;
}

/* The peer's next line, or NULL (end, error or timeout; p->io.why says). */
static const char *peer_read(peer *p, int timeout_ms)
{
    return peer_read_line(&p->io, timeout_ms);
}

/* Sends a command line and returns the reply, or NULL. */
static const char *peer_call_v(peer *p, int timeout_ms, const char *format, va_list args)
{
    char line[LINE_BYTES];
    vsnprintf(line, sizeof line, format, args);
    if (peer_send_line(&p->io, line) != 0)
        return NULL;
    return peer_read(p, timeout_ms);
}

static const char *peer_call(peer *p, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    const char *reply = peer_call_v(p, REPLY_TIMEOUT_MS, format, args);
    va_end(args);
    return reply;
}

/* "importbin LEN [w]" and the bytes; returns the reply, or NULL. */
static const char *peer_import_binary_within(peer *p, const void *bytes, size_t size,
                                             bool writable, int timeout_ms)
{
    char line[64];
    snprintf(line, sizeof line, "importbin %zu%s", size, writable ? " w" : "");
    if (peer_send_line(&p->io, line) != 0 || peer_send_all(p->io.to, bytes, size) != 0)
        return NULL;
    return peer_read(p, timeout_ms);
}

static const char *peer_import_binary(peer *p, const void *bytes, size_t size, bool writable)
{
    return peer_import_binary_within(p, bytes, size, writable, REPLY_TIMEOUT_MS);
}

/* Waits up to timeout_ms for the process, then kills it. Wait status. */
static int reap(pid_t pid, int timeout_ms)
{
    return peer_reap(pid, timeout_ms, NULL);
}

static void peer_forget(peer *p)
{
    peer_io_close(&p->io);
    track_peer(p, false);
    free(p);
}

/* SIGKILL and reap; the wait status. */
static int peer_kill(peer *p)
{
    kill(p->pid, SIGKILL);
    int status = reap(p->pid, 10000);
    peer_forget(p);
    return status;
}

/* "quit", then reap: the wait status, and whether it answered "ok bye". */
static int peer_quit_status(peer *p, bool *said_bye)
{
    const char *reply = peer_call(p, "quit");
    *said_bye = reply != NULL && strcmp(reply, "ok bye") == 0;
    close(p->io.to);
    p->io.to = -1;
    int status = reap(p->pid, 20000);
    peer_forget(p);
    return status;
}

/* The code of an "err CODE NAME ..." reply, or 1 when it is not one. */
static int32_t error_code_of(const char *reply)
{
    int code = 1;
    if (peer_starts_with(reply, "err ") && sscanf(reply, "err %d", &code) == 1)
        return (int32_t)code;
    return 1;
}

/* The value of "key=<u64>" in a reply; UINT64_MAX when absent. */
static uint64_t field_of(const char *reply, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, " %s=", key);
    const char *at = reply ? strstr(reply, pattern) : NULL;
    return at ? strtoull(at + strlen(pattern), NULL, 0) : UINT64_MAX;
}

/* ------------------------------------------------------------------------ */
/* Peers: asserting wrappers for test bodies                                */
/* ------------------------------------------------------------------------ */

/* Spawns a peer and waits for "ready". */
static peer *start_peer_with(const char *ns, const char *const *extra, const int *fd_map)
{
    peer *p = peer_spawn_tensor(ns, extra, fd_map);
    cr_assert_not_null(p, "cannot start %s: %s", peer_path, strerror(errno));
    return p;
}

static void expect_ready(peer *p)
{
    const char *line = peer_read(p, REPLY_TIMEOUT_MS);
    cr_assert(peer_starts_with(line, "ready "), "peer %d did not start: %s", (int)p->pid,
              line ? line : p->io.why);
}

static peer *start_peer(const char *ns, const char *const *extra)
{
    peer *p = start_peer_with(ns, extra, NULL);
    expect_ready(p);
    return p;
}

static const char *must_reply(peer *p, const char *reply, const char *what)
{
    cr_assert_not_null(reply, "peer %d, `%s`: %s", (int)p->pid, what, p->io.why);
    return reply;
}

#define CALL(p, ...) must_reply((p), peer_call((p), __VA_ARGS__), #__VA_ARGS__)

static const char *must_be_ok(peer *p, const char *reply, const char *what)
{
    must_reply(p, reply, what);
    cr_assert(peer_starts_with(reply, "ok"), "peer %d, `%s` answered: %s", (int)p->pid, what,
              reply);
    return reply;
}

/* A command that must answer "ok ..."; returns the whole reply. */
#define CALL_OK(p, ...) must_be_ok((p), peer_call((p), __VA_ARGS__), #__VA_ARGS__)

static void quit_peer(peer *p)
{
    pid_t pid = p->pid;
    bool bye = false;
    int status = peer_quit_status(p, &bye);
    cr_assert(bye, "peer %d did not say bye", (int)pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "peer %d ended with status %#x (signal %d)", (int)pid, status,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void kill_peer(peer *p)
{
    int status = peer_kill(p);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "a killed peer ended with status %#x", status);
}

/* importbin; must succeed; returns the handle id in the peer. */
static int import_ok(peer *p, const uint8_t *descriptor, size_t size, bool writable,
                     uint64_t *out_flags)
{
    const char *reply = must_reply(p, peer_import_binary(p, descriptor, size, writable),
                                   "importbin");
    int id = -1;
    cr_assert(peer_starts_with(reply, "ok ") && sscanf(reply, "ok %d", &id) == 1,
              "peer %d could not import: %s", (int)p->pid, reply);
    if (out_flags != NULL)
        *out_flags = field_of(reply, "flags");
    return id;
}

/* ------------------------------------------------------------------------ */
/* Tensors in this process                                                  */
/* ------------------------------------------------------------------------ */

static rm_tensor_info info_of(rm_context *context, const rm_tensor *tensor)
{
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    int32_t rc = vt->tensor_info(context, tensor, &info);
    cr_assert_eq(rc, RM_OK, "tensor_info: %s: %s", vt->error_name(rc),
                 vt->context_last_error(context));
    return info;
}

static rm_tensor *allocate_bytes(rm_context *context, uint64_t nbytes, uint64_t session,
                                 uint64_t flags)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)nbytes;
    spec.session = session;
    spec.flags = flags;
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_allocate(context, &spec, &tensor);
    cr_assert_eq(rc, RM_OK, "tensor_allocate(%" PRIu64 " bytes): %s: %s", nbytes,
                 vt->error_name(rc), vt->context_last_error(context));
    return tensor;
}

/* Fills the tensor with pattern `seed` and returns "VIEW RAW DESCRIPTION",
 * the line a peer's `sum` must answer after "ok ". */
static void fill_and_describe(rm_context *context, rm_tensor *tensor, uint64_t seed,
                              char *expected, size_t size)
{
    rm_tensor_info info = info_of(context, tensor);
    tp_view view = tp_view_of(&info);
    tp_view_fill(&view, seed);
    char described[512];
    tp_describe(&info, described, sizeof described);
    uint64_t elements = 0, raw = 0;
    tp_view_hashes(&view, &elements, &raw);
    snprintf(expected, size, "ok %016" PRIx64 " %016" PRIx64 " %s", elements, raw, described);
}

static void export_both(rm_context *context, const rm_tensor *tensor,
                        uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE],
                        char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX])
{
    int32_t rc = vt->tensor_export(context, tensor, binary, RM_TENSOR_DESCRIPTOR_SIZE);
    cr_assert_eq(rc, RM_OK, "tensor_export: %s: %s", vt->error_name(rc),
                 vt->context_last_error(context));
    if (text != NULL) {
        rc = vt->tensor_export_text(context, tensor, text, RM_TENSOR_DESCRIPTOR_TEXT_MAX);
        cr_assert_eq(rc, RM_OK, "tensor_export_text: %s: %s", vt->error_name(rc),
                     vt->context_last_error(context));
        cr_assert(peer_starts_with(text, "rmt1."), "text form %s", text);
        cr_assert_lt(strlen(text), RM_TENSOR_DESCRIPTOR_TEXT_MAX);
    }
}

static rm_tensor_pool_stats stats_of(rm_context *context)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    int32_t rc = vt->tensor_pool_stats(context, &stats);
    cr_assert_eq(rc, RM_OK, "tensor_pool_stats: %s", vt->error_name(rc));
    return stats;
}

static rm_reclaim_report reclaim(rm_context *context)
{
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    int32_t rc = vt->tensor_reclaim(context, &report);
    cr_assert_eq(rc, RM_OK, "tensor_reclaim: %s: %s", vt->error_name(rc),
                 vt->context_last_error(context));
    return report;
}

static void release(rm_context *context, rm_tensor *tensor)
{
    int32_t rc = vt->tensor_release(context, tensor);
    cr_assert_eq(rc, RM_OK, "tensor_release: %s", vt->error_name(rc));
}

static void expect_pool_empty(rm_context *context, const char *when)
{
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.live_tensors, 0, "%s: %" PRIu64 " live tensors", when,
                 stats.live_tensors);
    cr_assert_eq(stats.live_bytes, 0, "%s: %" PRIu64 " live bytes", when, stats.live_bytes);
}

/* ------------------------------------------------------------------------ */
/* Suite                                                                    */
/* ------------------------------------------------------------------------ */

static void suite_init(void)
{
    signal(SIGPIPE, SIG_IGN); /* a dead peer is an error, not our death */
    peer_path = getenv("RM_TENSOR_PEER");
    cr_assert_not_null(peer_path, "RM_TENSOR_PEER must name the built tensor_peer");
    fixture_load();
    cr_assert(RM_PLUGIN_HAS(vt, shm_list), "the plugin has no ABI 1.1 tensor functions");
    namespace_count = 0;
}

static void suite_fini(void)
{
    for (size_t i = 0; i < MAX_PEERS; i++)
        if (live_peers[i] != NULL)
            peer_kill(live_peers[i]);
    for (size_t i = 0; i < 16; i++)
        if (live_contexts[i] != NULL)
            destroy_context(live_contexts[i]);
    for (int i = 0; i < namespace_count; i++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "rm.%.39s.", namespaces[i]);
        shm_unlink_prefix(prefix);
    }
    char hold_prefix[64];
    snprintf(hold_prefix, sizeof hold_prefix, "pr-hold-%ld-", (long)getpid());
    shm_unlink_prefix(hold_prefix);
    fixture_unload();
}

TestSuite(tensor_processes, .init = suite_init, .fini = suite_fini, .timeout = 240);

/* ------------------------------------------------------------------------ */
/* Data equal across processes                                              */
/* ------------------------------------------------------------------------ */

/* The peer imports the binary form (over its stdin) and the text form,
 * checks and releases each; the checksums it reports must be ours. */
static void check_in_peer(peer *p, const uint8_t *binary, const char *text,
                          const char *expected, uint64_t nbytes)
{
    uint64_t flags = 0;
    int id = import_ok(p, binary, RM_TENSOR_DESCRIPTOR_SIZE, false, &flags);
    cr_assert_eq(flags & (RM_TENSOR_IMPORTED | RM_TENSOR_SHAREABLE | RM_TENSOR_WRITABLE |
                          RM_TENSOR_OWNED),
                 RM_TENSOR_IMPORTED | RM_TENSOR_SHAREABLE,
                 "an import is a read-only shareable view, flags %" PRIu64, flags);
    const char *sum = CALL(p, "sum %d", id);
    cr_assert_str_eq(sum, expected, "%" PRIu64 " bytes, binary descriptor", nbytes);
    CALL_OK(p, "release %d", id);

    const char *reply = CALL(p, "importtext %s", text);
    cr_assert(peer_starts_with(reply, "ok ") && sscanf(reply, "ok %d", &id) == 1,
              "text import: %s", reply);
    sum = CALL(p, "sum %d", id);
    cr_assert_str_eq(sum, expected, "%" PRIu64 " bytes, text descriptor", nbytes);
    CALL_OK(p, "release %d", id);
}

Test(tensor_processes, data_is_equal_across_processes_from_0_bytes_to_1_gib)
{
    const char *ns = make_namespace("size");
    rm_context *context;
    new_context(&context, ns, "shm.pool_bytes", "2G");
    peer *p = start_peer(ns, NULL);
    const uint64_t sizes[] = {0, 1, 63, 4 * KiB, 1 * MiB, 64 * MiB, 1 * GiB};
    enum { N = sizeof sizes / sizeof sizes[0] };
    for (size_t i = 0; i < N; i++) {
        uint64_t started = now_ns();
        rm_tensor *tensor = allocate_bytes(context, sizes[i], 1, 0);
        rm_tensor_info info = info_of(context, tensor);
        cr_assert_eq(info.nbytes, sizes[i]);
        cr_assert_eq(info.flags & (RM_TENSOR_WRITABLE | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED),
                     RM_TENSOR_WRITABLE | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED,
                     "flags %" PRIu64, info.flags);
        cr_assert_eq((uintptr_t)info.data % RM_TENSOR_MIN_ALIGNMENT, 0);
        cr_assert_eq(info.owner_pid, (uint32_t)getpid());
        char expected[LINE_BYTES];
        fill_and_describe(context, tensor, 1000 + i, expected, sizeof expected);
        /* What the memory holds is the pattern itself, not only what we
         * read back: checked against a hash computed without the memory. */
        char pattern_hash[40];
        snprintf(pattern_hash, sizeof pattern_hash, "ok %016" PRIx64 " ",
                 tp_pattern_hash(1000 + i, sizes[i]));
        cr_assert(peer_starts_with(expected, pattern_hash), "the fill did not write the pattern");

        uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
        char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
        export_both(context, tensor, binary, text);
        check_in_peer(p, binary, text, expected, sizes[i]);

        /* The text form through argv, imported as the peer starts. */
        if (sizes[i] == 4 * KiB || sizes[i] == 1 * MiB) {
            const char *extra[] = {"--import-text", text, NULL};
            peer *q = start_peer_with(ns, extra, NULL);
            const char *reply = must_reply(q, peer_read(q, REPLY_TIMEOUT_MS), "argv import");
            cr_assert(peer_starts_with(reply, "ok 0 "), "import from argv: %s", reply);
            expect_ready(q);
            cr_assert_str_eq(CALL(q, "sum 0"), expected, "text descriptor through argv");
            quit_peer(q);
        }
        release(context, tensor);
        cr_log_info("%" PRIu64 " bytes: allocate, fill, hand over twice, check: %.3f s",
                    sizes[i], (double)(now_ns() - started) / 1e9);
    }
    /* The peer mapped our pool once and kept the mapping. */
    const char *stats = CALL_OK(p, "stats");
    cr_assert_eq(field_of(stats, "imports"), 2 * N, "%s", stats);
    cr_assert_eq(field_of(stats, "pools_mapped"), 1, "%s", stats);
    cr_assert_eq(field_of(stats, "live_tensors"), 0, "the importer allocated nothing: %s",
                 stats);
    quit_peer(p);

    rm_tensor_pool_stats own = stats_of(context);
    cr_assert_eq(own.allocations, N);
    cr_assert_eq(own.frees, N);
    expect_pool_empty(context, "after every handoff");
    cr_assert_eq(own.fallbacks, 0);
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0, "segments left in /dev/shm");
}

typedef struct dtype_case {
    const char *name;
    rm_dtype dtype;
} dtype_case;

static const dtype_case dtypes[] = {
    {"int8", {RM_DTYPE_INT, 8, 1}},        {"int16", {RM_DTYPE_INT, 16, 1}},
    {"int32", {RM_DTYPE_INT, 32, 1}},      {"int64", {RM_DTYPE_INT, 64, 1}},
    {"uint8", {RM_DTYPE_UINT, 8, 1}},      {"uint16", {RM_DTYPE_UINT, 16, 1}},
    {"uint32", {RM_DTYPE_UINT, 32, 1}},    {"uint64", {RM_DTYPE_UINT, 64, 1}},
    {"float16", {RM_DTYPE_FLOAT, 16, 1}},  {"float32", {RM_DTYPE_FLOAT, 32, 1}},
    {"float64", {RM_DTYPE_FLOAT, 64, 1}},  {"bfloat16", {RM_DTYPE_BFLOAT, 16, 1}},
    {"complex64", {RM_DTYPE_COMPLEX, 64, 1}}, {"complex128", {RM_DTYPE_COMPLEX, 128, 1}},
    {"bool", {RM_DTYPE_BOOL, 8, 1}},       {"float32x4", {RM_DTYPE_FLOAT, 32, 4}},
    {"uint8x3", {RM_DTYPE_UINT, 8, 3}},
};

typedef struct layout_case {
    const char *name;
    uint32_t ndim;
    int64_t shape[RM_TENSOR_MAX_DIMS];
    int64_t strides[RM_TENSOR_MAX_DIMS]; /* all 0 with strided false */
    bool strided;
} layout_case;

static const layout_case layouts[] = {
    {"scalar", 0, {0}, {0}, false},
    {"vector", 1, {1000}, {0}, false},
    {"matrix", 2, {7, 13}, {0}, false},
    {"padded rows", 2, {7, 13}, {16, 1}, true},
    {"transposed", 2, {7, 13}, {1, 7}, true},
    {"3-d interleaved", 3, {4, 5, 6}, {64, 1, 8}, true},
    {"broadcast row", 2, {3, 100}, {0, 1}, true},
    {"every other element", 1, {500}, {2}, true},
    {"empty", 3, {5, 0, 3}, {0}, false},
    {"8 dimensions", 8, {2, 2, 2, 2, 2, 2, 3, 2}, {0}, false},
};

/* element size * (1 + sum((shape - 1) * stride)); 0 for an empty tensor. */
static uint64_t expected_nbytes(const rm_tensor_info *info)
{
    uint64_t element = (uint64_t)info->dtype.bits * info->dtype.lanes / 8;
    int64_t last = 0;
    for (uint32_t i = 0; i < info->ndim; i++) {
        if (info->shape[i] == 0)
            return 0;
        last += (info->shape[i] - 1) * info->strides[i];
    }
    return element * (uint64_t)(last + 1);
}

Test(tensor_processes, data_is_equal_for_every_dtype_and_strided_view)
{
    const char *ns = make_namespace("dtype");
    rm_context *context;
    new_context(&context, ns);
    peer *p = start_peer(ns, NULL);
    size_t cases = 0;
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
            const layout_case *layout = &layouts[l];
            rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
            spec.dtype = dtypes[d].dtype;
            spec.ndim = layout->ndim;
            memcpy(spec.shape, layout->shape, sizeof spec.shape);
            if (layout->strided) {
                memcpy(spec.strides, layout->strides, sizeof spec.strides);
                spec.flags = RM_TENSOR_ALLOC_STRIDED;
            }
            rm_tensor *tensor = NULL;
            int32_t rc = vt->tensor_allocate(context, &spec, &tensor);
            cr_assert_eq(rc, RM_OK, "%s %s: %s: %s", dtypes[d].name, layout->name,
                         vt->error_name(rc), vt->context_last_error(context));
            rm_tensor_info info = info_of(context, tensor);
            cr_assert_eq(info.dtype.code, spec.dtype.code);
            cr_assert_eq(info.dtype.bits, spec.dtype.bits);
            cr_assert_eq(info.dtype.lanes, spec.dtype.lanes);
            cr_assert_eq(info.ndim, spec.ndim);
            for (uint32_t i = 0; i < spec.ndim; i++) {
                cr_assert_eq(info.shape[i], spec.shape[i]);
                if (layout->strided)
                    cr_assert_eq(info.strides[i], spec.strides[i], "%s %s: stride %u",
                                 dtypes[d].name, layout->name, i);
            }
            cr_assert_eq(info.nbytes, expected_nbytes(&info), "%s %s: nbytes %" PRIu64,
                         dtypes[d].name, layout->name, info.nbytes);
            if (!layout->strided && info.nbytes > 0) {
                tp_view view = tp_view_of(&info);
                cr_assert(tp_view_is_contiguous(&view), "%s %s: strides not C order",
                          dtypes[d].name, layout->name);
            }
            char expected[LINE_BYTES];
            fill_and_describe(context, tensor, 7 * d + l, expected, sizeof expected);
            uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
            char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
            export_both(context, tensor, binary, text);
            cr_log_info("%s %s", dtypes[d].name, layout->name);
            check_in_peer(p, binary, text, expected, info.nbytes);
            release(context, tensor);
            cases++;
        }
    }
    quit_peer(p);
    expect_pool_empty(context, "after every dtype and layout");
    cr_assert_eq(stats_of(context).allocations, cases);
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}

Test(tensor_processes, writable_imports_write_through_and_read_only_ones_fault)
{
    const char *ns = make_namespace("write");
    rm_context *context;
    new_context(&context, ns);
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_FLOAT, .bits = 32, .lanes = 1};
    spec.ndim = 2;
    spec.shape[0] = 256;
    spec.shape[1] = 256;
    rm_tensor *tensor = NULL;
    cr_assert_eq(vt->tensor_allocate(context, &spec, &tensor), RM_OK);
    char expected[LINE_BYTES];
    fill_and_describe(context, tensor, 1, expected, sizeof expected);
    uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    export_both(context, tensor, binary, text);

    /* A writable view in one process writes the owner's memory... */
    peer *writer = start_peer(ns, NULL);
    uint64_t flags = 0;
    int id = import_ok(writer, binary, sizeof binary, true, &flags);
    cr_assert(flags & RM_TENSOR_WRITABLE, "flags %" PRIu64, flags);
    const char *filled = CALL_OK(writer, "fill %d 77", id);
    rm_tensor_info info = info_of(context, tensor);
    tp_view view = tp_view_of(&info);
    char ours[40];
    snprintf(ours, sizeof ours, "ok %016" PRIx64, tp_view_hash(&view));
    cr_assert_str_eq(filled, ours, "the owner does not see the importer's writes");
    cr_assert_eq(tp_view_hash(&view), tp_pattern_hash(77, info.nbytes));

    /* ...that a read-only view elsewhere sees, and cannot write. */
    peer *reader = start_peer(ns, NULL);
    const char *reply = CALL(reader, "importtext %s", text);
    cr_assert(peer_starts_with(reply, "ok 0 "), "%s", reply);
    const char *sum = CALL_OK(reader, "sum 0");
    cr_assert(peer_starts_with(sum + 3, ours + 3), "the reader sees %s, the owner %s", sum, ours);
    uint8_t first = ((const uint8_t *)info.data)[0];
    reply = peer_call(reader, "poke 0");
    cr_assert(reply == NULL, "a write through a read-only view succeeded: %s", reply);
    pid_t reader_pid = reader->pid;
    int status = reap(reader_pid, 20000);
    peer_forget(reader);
    /* SIGSEGV, or under ASan its report and a non-zero exit. */
    cr_assert((WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV ||
                                       WTERMSIG(status) == SIGBUS)) ||
                  (WIFEXITED(status) && WEXITSTATUS(status) != 0),
              "the poking reader ended with status %#x", status);
    cr_assert_eq(((const uint8_t *)info.data)[0], first, "the read-only write landed");

    CALL_OK(writer, "release %d", id);
    quit_peer(writer);
    release(context, tensor);
    reclaim(context); /* the reader died holding its view */
    expect_pool_empty(context, "after the writer and the reader");
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}

/* ------------------------------------------------------------------------ */
/* 2 producers x 2 consumers                                                */
/* ------------------------------------------------------------------------ */

Test(tensor_processes, two_producers_two_consumers_hand_off_without_loss, .timeout = 400)
{
    const char *ns = make_namespace("stream");
    uint64_t handoffs = 100000;
    if (getenv("RM_TEST_HANDOFFS") != NULL)
        handoffs = strtoull(getenv("RM_TEST_HANDOFFS"), NULL, 10);
    cr_assert_gt(handoffs, 0);

    /* data[p][c] carries records from producer p to consumer c, ack[p][c]
     * the consumer's acknowledgements back. */
    int data[2][2][2], ack[2][2][2];
    for (int p = 0; p < 2; p++)
        for (int c = 0; c < 2; c++) {
            cr_assert_eq(pipe2(data[p][c], O_CLOEXEC), 0);
            cr_assert_eq(pipe2(ack[p][c], O_CLOEXEC), 0);
        }
    peer *producers[2], *consumers[2];
    for (int p = 0; p < 2; p++) {
        const int map[] = {data[p][0][1], 200, ack[p][0][0], 201,
                           data[p][1][1], 202, ack[p][1][0], 203, -1};
        producers[p] = start_peer_with(ns, NULL, map);
    }
    for (int c = 0; c < 2; c++) {
        const int map[] = {data[0][c][0], 200, ack[0][c][1], 201,
                           data[1][c][0], 202, ack[1][c][1], 203, -1};
        consumers[c] = start_peer_with(ns, NULL, map);
    }
    for (int p = 0; p < 2; p++)
        for (int c = 0; c < 2; c++)
            for (int end = 0; end < 2; end++) {
                close(data[p][c][end]);
                close(ack[p][c][end]);
            }
    for (int i = 0; i < 2; i++) {
        expect_ready(producers[i]);
        expect_ready(consumers[i]);
    }
    for (int p = 0; p < 2; p++) {
        const char *baseline = CALL_OK(producers[p], "stats");
        cr_assert_eq(field_of(baseline, "live_tensors"), 0, "%s", baseline);
        cr_assert_eq(field_of(baseline, "allocations"), 0, "%s", baseline);
    }

    uint64_t started = now_ns();
    char line[128];
    for (int p = 0; p < 2; p++) {
        snprintf(line, sizeof line, "produce %" PRIu64 " %d 200 201 202 203", handoffs, p + 1);
        cr_assert_eq(peer_send_line(&producers[p]->io, line), 0, "%s", producers[p]->io.why);
    }
    for (int c = 0; c < 2; c++) {
        snprintf(line, sizeof line, "consume %" PRIu64 " 1 200 201 2 202 203", handoffs);
        cr_assert_eq(peer_send_line(&consumers[c]->io, line), 0, "%s", consumers[c]->io.why);
    }
    char results[4][LINE_BYTES];
    peer *all[4] = {producers[0], producers[1], consumers[0], consumers[1]};
    for (int i = 0; i < 4; i++) {
        const char *reply = peer_read(all[i], STREAM_TIMEOUT_MS);
        snprintf(results[i], sizeof results[i], "%s", reply ? reply : all[i]->io.why);
    }
    double seconds = (double)(now_ns() - started) / 1e9;
    char expected[4][64];
    bool all_right = true;
    for (int i = 0; i < 4; i++) {
        if (i < 2)
            snprintf(expected[i], sizeof expected[i], "ok produced %" PRIu64, 2 * handoffs);
        else
            snprintf(expected[i], sizeof expected[i],
                     "ok consumed %" PRIu64 " stale=STALE_DESCRIPTOR", 2 * handoffs);
        all_right = all_right && strcmp(results[i], expected[i]) == 0;
    }
    cr_assert(all_right,
              "the streams failed:\n producer 1: %s\n producer 2: %s\n consumer 1: %s\n "
              "consumer 2: %s",
              results[0], results[1], results[2], results[3]);
    cr_log_info("%" PRIu64 " handoffs in %.2f s (%.0f per second)", 4 * handoffs, seconds,
                (double)(4 * handoffs) / seconds);

    /* The consumers have released everything; once they are gone, one
     * tensor call in each producer frees what their releases left. */
    for (int c = 0; c < 2; c++)
        quit_peer(consumers[c]);
    for (int p = 0; p < 2; p++) {
        CALL_OK(producers[p], "reclaim");
        const char *stats = CALL_OK(producers[p], "stats");
        cr_log_info("producer %d: %s", p + 1, stats);
        cr_assert_eq(field_of(stats, "live_tensors"), 0, "producer %d: %s", p + 1, stats);
        cr_assert_eq(field_of(stats, "live_bytes"), 0, "producer %d: %s", p + 1, stats);
        cr_assert_eq(field_of(stats, "allocations"), 2 * handoffs, "%s", stats);
        cr_assert_eq(field_of(stats, "frees"), 2 * handoffs, "%s", stats);
        cr_assert_eq(field_of(stats, "holders"), 0, "%s", stats);
        cr_assert_eq(field_of(stats, "fallbacks"), 0, "%s", stats);
        quit_peer(producers[p]);
    }
    cr_assert_eq(count_segments(ns, 0), 0, "segments left in /dev/shm");
}

/* ------------------------------------------------------------------------ */
/* Killed processes                                                         */
/* ------------------------------------------------------------------------ */

Test(tensor_processes, a_killed_consumer_s_holds_are_reclaimed_by_the_owner)
{
    const char *ns = make_namespace("deadc");
    rm_context *context;
    new_context(&context, ns);
    enum { N = 6 };
    rm_tensor *tensors[N];
    uint8_t descriptors[N][RM_TENSOR_DESCRIPTOR_SIZE];
    char expected[N][LINE_BYTES];
    uint64_t bytes[N];
    for (int i = 0; i < N; i++) {
        bytes[i] = (uint64_t)(i + 1) * 100 * KiB + 3;
        tensors[i] = allocate_bytes(context, bytes[i], 0, 0);
        fill_and_describe(context, tensors[i], 50 + (uint64_t)i, expected[i], LINE_BYTES);
        export_both(context, tensors[i], descriptors[i], NULL);
    }

    /* The consumer holds 0, 1, 2, 3 and 5 (0 twice) and dies. */
    peer *consumer = start_peer(ns, NULL);
    const int held[] = {0, 1, 2, 3, 5, 0};
    for (size_t i = 0; i < sizeof held / sizeof held[0]; i++) {
        int id = import_ok(consumer, descriptors[held[i]], RM_TENSOR_DESCRIPTOR_SIZE, false,
                           NULL);
        cr_assert_str_eq(CALL(consumer, "sum %d", id), expected[held[i]]);
    }
    cr_assert_eq(stats_of(context).holders, 1);
    kill_peer(consumer);

    /* The owner lets go of all but 5: only 4 is free to go. */
    for (int i = 0; i < 5; i++)
        release(context, tensors[i]);
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.live_tensors, 5, "a dead holder's tensors stay until reclaimed");
    cr_assert_eq(stats.frees, 1);

    rm_reclaim_report report = reclaim(context);
    cr_assert_eq(report.dead_holders, 1);
    cr_assert_eq(report.holds_dropped, 5, "one hold per tensor the consumer held");
    cr_assert_eq(report.tensors_freed, 4, "5 is still the owner's");
    stats = stats_of(context);
    cr_assert_eq(stats.live_tensors, 1);
    cr_assert_eq(stats.live_bytes, bytes[5]);
    cr_assert_eq(stats.holders, 0);
    cr_assert_eq(stats.dead_holders_reclaimed, 1);
    cr_assert_eq(stats.holds_reclaimed, 5);
    cr_assert_eq(stats.frees, 5);
    /* Tensor 5 is intact and still the owner's to release. */
    rm_tensor_info info = info_of(context, tensors[5]);
    tp_view view = tp_view_of(&info);
    char hash[24];
    snprintf(hash, sizeof hash, "%016" PRIx64, tp_view_hash(&view));
    cr_assert_eq(strncmp(expected[5] + 3, hash, 16), 0);
    release(context, tensors[5]);
    expect_pool_empty(context, "after the owner released the last one");

    report = reclaim(context);
    cr_assert_eq(report.dead_holders + report.holds_dropped + report.tensors_freed, 0,
                 "a second reclaim found more to do");

    /* A new consumer still imports: a new tensor yes, a freed one no. */
    peer *next = start_peer(ns, NULL);
    const char *reply = must_reply(next, peer_import_binary(next, descriptors[1],
                                                            RM_TENSOR_DESCRIPTOR_SIZE, false),
                                   "importbin");
    cr_assert_eq(error_code_of(reply), RM_E_STALE_DESCRIPTOR, "a freed tensor: %s", reply);
    rm_tensor *fresh = allocate_bytes(context, 300 * KiB, 0, 0);
    char fresh_expected[LINE_BYTES];
    fill_and_describe(context, fresh, 99, fresh_expected, sizeof fresh_expected);
    uint8_t fresh_descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    export_both(context, fresh, fresh_descriptor, NULL);
    int id = import_ok(next, fresh_descriptor, sizeof fresh_descriptor, false, NULL);
    cr_assert_str_eq(CALL(next, "sum %d", id), fresh_expected);
    quit_peer(next);
    release(context, fresh);
    expect_pool_empty(context, "at the end");
    cr_assert_eq(stats_of(context).holders, 0);
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}

Test(tensor_processes, an_allocation_out_of_quota_reclaims_dead_holders_first)
{
    const char *ns = make_namespace("deadq");
    rm_context *context;
    new_context(&context, ns, "shm.pool_bytes", "4M");
    rm_tensor *tensors[4];
    peer *consumer = start_peer(ns, NULL);
    for (int i = 0; i < 4; i++) {
        tensors[i] = allocate_bytes(context, 1 * MiB, 0, 0);
        uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
        export_both(context, tensors[i], descriptor, NULL);
        import_ok(consumer, descriptor, sizeof descriptor, false, NULL);
    }
    kill_peer(consumer);
    for (int i = 0; i < 4; i++)
        release(context, tensors[i]);
    cr_assert_eq(stats_of(context).live_bytes, 4 * MiB, "the dead consumer still holds all");
    /* The pool is full of tensors only a dead process holds: the allocation
     * reclaims them itself instead of failing. */
    rm_tensor *again = allocate_bytes(context, 1 * MiB, 0, 0);
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.dead_holders_reclaimed, 1);
    cr_assert_eq(stats.live_tensors, 1);
    cr_assert_eq(stats.live_bytes, 1 * MiB);
    release(context, again);
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}

/* Allocates in a producer peer: its handle id, descriptor text and bytes. */
static void produce_in_peer(peer *producer, uint64_t nbytes, uint64_t seed,
                            char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX],
                            uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE])
{
    const char *reply = CALL_OK(producer, "alloc %" PRIu64 " %" PRIu64, nbytes, seed);
    char hex[2 * RM_TENSOR_DESCRIPTOR_SIZE + 8];
    int id = -1;
    cr_assert_eq(sscanf(reply, "ok %d %279s %407s", &id, text, hex), 3, "%s", reply);
    cr_assert(tp_hex_decode(hex, strlen(hex), binary, RM_TENSOR_DESCRIPTOR_SIZE), "%s", reply);
}

/* What `sum` answers for a contiguous uint8 tensor of pattern `seed`. */
static void expected_bytes_sum(uint64_t nbytes, uint64_t seed, char *out, size_t size)
{
    uint64_t hash = tp_pattern_hash(seed, nbytes);
    snprintf(out, size,
             "ok %016" PRIx64 " %016" PRIx64 " dtype=%u.8.1 ndim=1 shape=%" PRIu64
             " strides=1 nbytes=%" PRIu64,
             hash, hash, RM_DTYPE_UINT, nbytes, nbytes);
}

Test(tensor_processes, a_killed_producer_s_views_stay_readable_and_reclaim_unlinks_its_segments)
{
    const char *ns = make_namespace("deadp");
    peer *producer = start_peer(ns, NULL);
    pid_t producer_pid = producer->pid;
    char text[2][RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    uint8_t binary[2][RM_TENSOR_DESCRIPTOR_SIZE];
    produce_in_peer(producer, 3 * MiB, 11, text[0], binary[0]);
    produce_in_peer(producer, 64 * KiB, 12, text[1], binary[1]);
    char expected[LINE_BYTES];
    expected_bytes_sum(3 * MiB, 11, expected, sizeof expected);

    peer *consumer = start_peer(ns, NULL);
    int id = import_ok(consumer, binary[0], RM_TENSOR_DESCRIPTOR_SIZE, false, NULL);
    cr_assert_str_eq(CALL(consumer, "sum %d", id), expected);

    kill_peer(producer);
    int left = count_segments(ns, producer_pid);
    cr_assert_geq(left, 1, "the dead producer's segments are still there to reclaim");
    cr_assert_str_eq(CALL(consumer, "sum %d", id), expected, "after the producer died");

    const char *report = CALL_OK(consumer, "reclaim");
    cr_log_info("consumer's reclaim: %s (%d segments were left)", report, left);
    cr_assert_geq(field_of(report, "segments_unlinked"), 1, "%s", report);
    cr_assert_neq(field_of(report, "segments_unlinked"), UINT64_MAX, "%s", report);
    cr_assert_geq(field_of(report, "bytes_unlinked"), 3 * MiB, "%s", report);
    cr_assert_eq(count_segments(ns, producer_pid), 0, "reclaim left the dead pool in /dev/shm");
    cr_assert_str_eq(CALL(consumer, "sum %d", id), expected, "after its segments went");

    /* A process that had not mapped the pool finds it gone. */
    peer *late = start_peer(ns, NULL);
    const char *reply = CALL(late, "importtext %s", text[1]);
    cr_assert_eq(error_code_of(reply), RM_E_STALE_DESCRIPTOR, "%s", reply);
    quit_peer(late);

    CALL_OK(consumer, "release %d", id);
    quit_peer(consumer);
    cr_assert_eq(count_segments(ns, 0), 0);
}

Test(tensor_processes, a_killed_producer_s_segments_go_at_the_next_context_creation)
{
    const char *ns = make_namespace("deadi");
    peer *producer = start_peer(ns, NULL);
    pid_t producer_pid = producer->pid;
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
    produce_in_peer(producer, 1 * MiB + 5, 21, text, binary);

    rm_context *consumer;
    new_context(&consumer, ns);
    rm_tensor *view_handle = NULL;
    int32_t rc = vt->tensor_import_text(consumer, text, 0, &view_handle);
    cr_assert_eq(rc, RM_OK, "import: %s: %s", vt->error_name(rc),
                 vt->context_last_error(consumer));
    rm_tensor_info info = info_of(consumer, view_handle);
    cr_assert_eq(info.owner_pid, (uint32_t)producer_pid);
    tp_view view = tp_view_of(&info);
    uint64_t expected = tp_pattern_hash(21, 1 * MiB + 5);
    cr_assert_eq(tp_view_hash(&view), expected);

    kill_peer(producer);
    cr_assert_geq(count_segments(ns, producer_pid), 1);
    rm_context *next;
    new_context(&next, ns);
    cr_assert_eq(count_segments(ns, producer_pid), 0,
                 "creating a context in the namespace left the dead pool's segments");
    cr_assert_eq(tp_view_hash(&view), expected, "the view changed after the unlink");
    /* A second import of the same descriptor through the cached mapping,
     * or a refusal: never a crash. */
    rm_tensor *again = NULL;
    rc = vt->tensor_import(next, binary, sizeof binary, 0, &again);
    cr_assert_eq(rc, RM_E_STALE_DESCRIPTOR, "a fresh context imports from a dead, unlinked "
                 "pool: %s", vt->error_name(rc));
    release(consumer, view_handle);
    destroy_context(next);
    destroy_context(consumer);
    cr_assert_eq(count_segments(ns, 0), 0);
}

/* ------------------------------------------------------------------------ */
/* A full /dev/shm                                                          */
/* ------------------------------------------------------------------------ */

#define SKIP_EXIT 77

#define CHILD_CHECK(condition, code, ...)                    \
    do {                                                     \
        if (!(condition)) {                                  \
            fprintf(stderr, "child check %d failed: ", code); \
            fprintf(stderr, __VA_ARGS__);                    \
            fprintf(stderr, "\n");                           \
            result = code;                                   \
            goto out;                                        \
        }                                                    \
    } while (0)

/* Runs in a forked child (never returns into Criterion): a 64 MiB tmpfs on
 * /dev/shm in a private mount namespace. */
static int full_dev_shm_child(const char *ns)
{
    int result = 0;
    rm_context *context = NULL;
    peer *importer = NULL;
    uint8_t *inline_bytes = NULL;
    enum { MAX_SHARED = 32 };
    rm_tensor *shared[MAX_SHARED] = {0};
    rm_tensor *heap = NULL;
    size_t shared_count = 0;

    if (unshare(CLONE_NEWNS) != 0)
        return errno == EPERM ? SKIP_EXIT : 2;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return errno == EPERM ? SKIP_EXIT : 3;
    if (mount("rm-test", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777") != 0)
        return errno == EPERM ? SKIP_EXIT : 4;

    const char *pairs[] = {"shm.namespace", ns, "shm.pool_bytes", "1G", NULL};
    int32_t rc = fixture_context(&context, pairs);
    CHILD_CHECK(rc == RM_OK, 5, "context_create: %s", vt->context_last_error(NULL));

    /* Shared only: 4 MiB at a time until /dev/shm says no. */
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)(4 * MiB);
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    char message[1024] = "";
    for (;;) {
        CHILD_CHECK(shared_count < MAX_SHARED, 6, "64 MiB of /dev/shm held %zu x 4 MiB",
                    shared_count);
        rc = vt->tensor_allocate(context, &spec, &shared[shared_count]);
        if (rc != RM_OK) {
            snprintf(message, sizeof message, "%s", vt->context_last_error(context));
            break;
        }
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        CHILD_CHECK(vt->tensor_info(context, shared[shared_count], &info) == RM_OK, 7, "info");
        CHILD_CHECK(info.flags & RM_TENSOR_SHAREABLE, 8, "a shared-only tensor in the heap");
        /* Every byte handed out is backed: a SIGBUS here fails the test. */
        memset(info.data, 0x5a, (size_t)info.nbytes);
        shared_count++;
    }
    CHILD_CHECK(rc == RM_E_NO_MEMORY, 9, "a full /dev/shm gave %s (%s)", vt->error_name(rc),
                message);
    CHILD_CHECK(shared[shared_count] == NULL, 10, "a failed allocation returned a tensor");
    CHILD_CHECK(strstr(message, "/dev/shm") != NULL, 11, "the message does not name /dev/shm: %s",
                message);
    CHILD_CHECK(shared_count * 4 * MiB >= 40 * MiB && shared_count * 4 * MiB <= 64 * MiB, 12,
                "%zu MiB from a 64 MiB /dev/shm", shared_count * 4);
    fprintf(stderr, "full /dev/shm after %zu MiB: %s\n", shared_count * 4, message);

    /* Without the flag: a heap tensor that says it is not shareable. */
    spec.flags = 0;
    rc = vt->tensor_allocate(context, &spec, &heap);
    CHILD_CHECK(rc == RM_OK, 13, "fallback allocation: %s: %s", vt->error_name(rc),
                vt->context_last_error(context));
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    CHILD_CHECK(vt->tensor_info(context, heap, &info) == RM_OK, 14, "info");
    CHILD_CHECK((info.flags & (RM_TENSOR_SHAREABLE | RM_TENSOR_WRITABLE | RM_TENSOR_OWNED)) ==
                    (RM_TENSOR_WRITABLE | RM_TENSOR_OWNED),
                15, "heap tensor flags %" PRIu64, info.flags);
    CHILD_CHECK(info.pool_id == 0, 16, "heap tensor in pool %" PRIx64, info.pool_id);
    tp_view view = tp_view_of(&info);
    tp_view_fill(&view, 31);
    uint64_t heap_hash = tp_view_hash(&view);
    uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
    rc = vt->tensor_export(context, heap, binary, sizeof binary);
    CHILD_CHECK(rc == RM_E_NOT_SHAREABLE, 17, "export of a heap tensor: %s", vt->error_name(rc));
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    rc = vt->tensor_export_text(context, heap, text, sizeof text);
    CHILD_CHECK(rc == RM_E_NOT_SHAREABLE, 18, "text export of a heap tensor: %s",
                vt->error_name(rc));
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    CHILD_CHECK(vt->tensor_pool_stats(context, &stats) == RM_OK, 19, "stats");
    CHILD_CHECK(stats.fallbacks == 1 && stats.heap_tensors == 1 && stats.heap_bytes == 4 * MiB,
                20, "fallbacks %" PRIu64 ", heap tensors %" PRIu64 ", heap bytes %" PRIu64,
                stats.fallbacks, stats.heap_tensors, stats.heap_bytes);
    CHILD_CHECK(stats.live_tensors == shared_count, 21, "live %" PRIu64, stats.live_tensors);

    /* By value to another process (same mount namespace): a private copy. */
    uint64_t needed = 0;
    rc = vt->tensor_export_inline(context, heap, NULL, 0, &needed);
    CHILD_CHECK(rc == RM_E_BUFFER_TOO_SMALL && needed == RM_TENSOR_DESCRIPTOR_SIZE + 4 * MiB, 22,
                "inline size: %s, %" PRIu64, vt->error_name(rc), needed);
    inline_bytes = malloc((size_t)needed);
    CHILD_CHECK(inline_bytes != NULL, 23, "malloc");
    rc = vt->tensor_export_inline(context, heap, inline_bytes, needed, NULL);
    CHILD_CHECK(rc == RM_OK, 24, "export_inline: %s", vt->error_name(rc));
    importer = peer_spawn_tensor(ns, NULL, NULL);
    CHILD_CHECK(importer != NULL, 25, "spawn");
    const char *line = peer_read(importer, REPLY_TIMEOUT_MS);
    CHILD_CHECK(peer_starts_with(line, "ready "), 26, "peer: %s", line ? line : importer->io.why);
    line = peer_import_binary(importer, inline_bytes, (size_t)needed, false);
    CHILD_CHECK(peer_starts_with(line, "ok 0 "), 27, "inline import: %s",
                line ? line : importer->io.why);
    CHILD_CHECK(!(field_of(line, "flags") & RM_TENSOR_SHAREABLE), 28, "%s", line);
    line = peer_call(importer, "sum 0");
    char expected[64];
    snprintf(expected, sizeof expected, "ok %016" PRIx64 " ", heap_hash);
    CHILD_CHECK(peer_starts_with(line, expected), 29, "the copy differs: %s (want %s)",
                line ? line : importer->io.why, expected);
    bool bye = false;
    int status = peer_quit_status(importer, &bye);
    importer = NULL;
    CHILD_CHECK(bye && WIFEXITED(status) && WEXITSTATUS(status) == 0, 30,
                "importer ended %#x", status);

    /* Freed space is there again for shared tensors. */
    CHILD_CHECK(vt->tensor_release(context, heap) == RM_OK, 31, "release heap");
    heap = NULL;
    for (size_t i = 0; i < shared_count; i++) {
        CHILD_CHECK(vt->tensor_release(context, shared[i]) == RM_OK, 32, "release");
        shared[i] = NULL;
    }
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    spec.shape[0] = (int64_t)(16 * MiB);
    rc = vt->tensor_allocate(context, &spec, &shared[0]);
    CHILD_CHECK(rc == RM_OK, 33, "16 MiB after the frees: %s: %s", vt->error_name(rc),
                vt->context_last_error(context));
    info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    CHILD_CHECK(vt->tensor_info(context, shared[0], &info) == RM_OK, 34, "info");
    memset(info.data, 0x6b, 16 * MiB);
    CHILD_CHECK(vt->tensor_pool_stats(context, &stats) == RM_OK && stats.heap_tensors == 0, 35,
                "heap tensors %" PRIu64, stats.heap_tensors);
    vt->tensor_release(context, shared[0]);
    shared[0] = NULL;
    vt->context_destroy(context);
    context = NULL;
    CHILD_CHECK(count_segments(ns, 0) == 0, 36, "segments left in the small /dev/shm");
out:
    if (importer != NULL)
        peer_kill(importer);
    if (context != NULL)
        vt->context_destroy(context); /* releases the handles */
    free(inline_bytes);
    return result;
}

Test(tensor_processes, a_full_dev_shm_is_an_error_code_or_a_heap_tensor_never_a_signal)
{
    const char *ns = make_namespace("full");
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0, "fork: %s", strerror(errno));
    if (child == 0)
        _exit(full_dev_shm_child(ns));
    int status = reap(child, 200000);
    if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_EXIT)
        cr_skip_test("no permission for a private mount namespace (unshare or mount: EPERM)");
    cr_assert(!WIFSIGNALED(status), "the child died of signal %d (%s)", WTERMSIG(status),
              strsignal(WTERMSIG(status)));
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child failed check %d (reason on stderr)", WEXITSTATUS(status));
}

/* ------------------------------------------------------------------------ */
/* Quotas                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct quota_racer {
    rm_context *context;
    pthread_barrier_t *start;
    uint64_t nbytes;
    uint64_t session;
    rm_tensor *won[64];
    size_t wins;
    int32_t refusal;
    char message[512];
} quota_racer;

static void *race_to_quota(void *arg)
{
    quota_racer *racer = arg;
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)racer->nbytes;
    spec.session = racer->session;
    pthread_barrier_wait(racer->start);
    while (racer->wins < 64) {
        rm_tensor *tensor = NULL;
        int32_t rc = vt->tensor_allocate(racer->context, &spec, &tensor);
        if (rc != RM_OK) {
            racer->refusal = rc;
            snprintf(racer->message, sizeof racer->message, "%s",
                     vt->context_last_error(racer->context));
            break;
        }
        racer->won[racer->wins++] = tensor;
    }
    return NULL;
}

/* Threads allocate until refused: exactly `limit` / `nbytes` win. */
static void race_rounds(rm_context *context, uint64_t nbytes, bool same_session, size_t wins,
                        const char *limit_name)
{
    enum { THREADS = 4 };
    for (int round = 0; round < 20; round++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS);
        quota_racer racers[THREADS];
        pthread_t threads[THREADS];
        for (int t = 0; t < THREADS; t++) {
            racers[t] = (quota_racer){.context = context, .start = &start, .nbytes = nbytes,
                                      .session = same_session ? 7 : 100 + (uint64_t)t};
            cr_assert_eq(pthread_create(&threads[t], NULL, race_to_quota, &racers[t]), 0);
        }
        size_t total = 0;
        for (int t = 0; t < THREADS; t++) {
            pthread_join(threads[t], NULL);
            total += racers[t].wins;
        }
        pthread_barrier_destroy(&start);
        for (int t = 0; t < THREADS; t++) {
            cr_assert_eq(racers[t].refusal, RM_E_QUOTA_EXCEEDED, "round %d: %s: %s", round,
                         vt->error_name(racers[t].refusal), racers[t].message);
            cr_assert(strstr(racers[t].message, limit_name) != NULL,
                      "the refusal does not name %s: %s", limit_name, racers[t].message);
        }
        cr_assert_eq(total, wins, "round %d: %zu allocations of %" PRIu64 " fit under %s", round,
                     total, nbytes, limit_name);
        if (same_session) {
            uint64_t bytes = 0;
            cr_assert_eq(vt->tensor_session_bytes(context, 7, &bytes), RM_OK);
            cr_assert_eq(bytes, wins * nbytes);
        }
        if (round == 0)
            cr_log_info("refused at the limit: %s", racers[0].message);
        for (int t = 0; t < THREADS; t++)
            for (size_t i = 0; i < racers[t].wins; i++)
                release(context, racers[t].won[i]);
    }
    expect_pool_empty(context, "after the races");
}

typedef struct churner {
    rm_context *context;
    volatile int *stop;
    uint64_t quota;
    int cycles;
    int over_quota; /* session bytes seen above the quota */
    int failures;
} churner;

static void *churn_session(void *arg)
{
    churner *job = arg;
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)(64 * KiB);
    spec.session = 7;
    rm_tensor *mine[8] = {0};
    while (!*job->stop || job->cycles < 200) {
        for (int i = 0; i < 8; i++) {
            int32_t rc = vt->tensor_allocate(job->context, &spec, &mine[i]);
            if (rc != RM_OK && rc != RM_E_QUOTA_EXCEEDED)
                job->failures++;
            uint64_t bytes = 0;
            vt->tensor_session_bytes(job->context, 7, &bytes);
            if (bytes > job->quota)
                job->over_quota++;
        }
        for (int i = 0; i < 8; i++)
            if (mine[i] != NULL) {
                if (vt->tensor_release(job->context, mine[i]) != RM_OK)
                    job->failures++;
                mine[i] = NULL;
            }
        job->cycles++;
    }
    return NULL;
}

Test(tensor_processes, quotas_are_exact_under_thread_races_while_processes_import)
{
    const char *ns = make_namespace("quota");
    rm_context *by_session, *by_pool;
    new_context(&by_session, ns, "shm.session_quota", "1M");
    new_context(&by_pool, ns, "shm.pool_bytes", "4M");
    race_rounds(by_session, 64 * KiB, true, 16, "shm.session_quota");
    race_rounds(by_pool, 256 * KiB, false, 16, "shm.pool_bytes");

    /* 8 tensors of session 9, imported by 4 processes at once while 3
     * threads churn session 7 against its quota. */
    enum { K = 8, PEERS = 4, CHURNERS = 3 };
    rm_tensor *tensors[K];
    uint8_t descriptors[K][RM_TENSOR_DESCRIPTOR_SIZE];
    char expected[K][LINE_BYTES];
    for (int i = 0; i < K; i++) {
        tensors[i] = allocate_bytes(by_session, 64 * KiB, 9, 0);
        fill_and_describe(by_session, tensors[i], 900 + (uint64_t)i, expected[i], LINE_BYTES);
        export_both(by_session, tensors[i], descriptors[i], NULL);
    }
    peer *peers[PEERS];
    for (int p = 0; p < PEERS; p++)
        peers[p] = start_peer_with(ns, NULL, NULL);
    for (int p = 0; p < PEERS; p++)
        expect_ready(peers[p]);

    volatile int stop = 0;
    churner jobs[CHURNERS];
    pthread_t threads[CHURNERS];
    for (int t = 0; t < CHURNERS; t++) {
        jobs[t] = (churner){.context = by_session, .stop = &stop, .quota = 1 * MiB};
        cr_assert_eq(pthread_create(&threads[t], NULL, churn_session, &jobs[t]), 0);
    }
    /* All requests first, then all replies: the imports run at once. */
    for (int p = 0; p < PEERS; p++)
        for (int i = 0; i < K; i++) {
            char line[32];
            snprintf(line, sizeof line, "importbin %d", RM_TENSOR_DESCRIPTOR_SIZE);
            cr_assert_eq(peer_send_line(&peers[p]->io, line), 0);
            cr_assert_eq(
                peer_send_all(peers[p]->io.to, descriptors[i], RM_TENSOR_DESCRIPTOR_SIZE), 0);
        }
    for (int p = 0; p < PEERS; p++)
        for (int i = 0; i < K; i++) {
            const char *reply = must_reply(peers[p], peer_read(peers[p], REPLY_TIMEOUT_MS),
                                           "importbin");
            int id = -1;
            cr_assert(peer_starts_with(reply, "ok ") && sscanf(reply, "ok %d", &id) == 1 && id == i,
                      "peer %d, import %d: %s", p, i, reply);
        }
    for (int p = 0; p < PEERS; p++)
        for (int i = 0; i < K; i++)
            cr_assert_str_eq(CALL(peers[p], "sum %d", i), expected[i], "peer %d, tensor %d", p, i);
    cr_assert_eq(stats_of(by_session).holders, PEERS);

    /* The owner lets go; the importers still hold: the bytes stay charged. */
    for (int i = 0; i < K; i++)
        release(by_session, tensors[i]);
    uint64_t bytes = 0;
    cr_assert_eq(vt->tensor_session_bytes(by_session, 9, &bytes), RM_OK);
    cr_assert_eq(bytes, K * 64 * KiB, "memory still held by importers was uncharged");
    for (int p = 0; p < PEERS; p++)
        cr_assert_eq(peer_send_line(&peers[p]->io, "releaseall"), 0);
    for (int p = 0; p < PEERS; p++) {
        const char *reply = must_reply(peers[p], peer_read(peers[p], REPLY_TIMEOUT_MS),
                                       "releaseall");
        char want[16];
        snprintf(want, sizeof want, "ok %d", K);
        cr_assert_str_eq(reply, want);
    }
    stop = 1;
    for (int t = 0; t < CHURNERS; t++) {
        pthread_join(threads[t], NULL);
        cr_assert_eq(jobs[t].failures, 0, "churner %d", t);
        cr_assert_eq(jobs[t].over_quota, 0, "churner %d saw session 7 above its quota", t);
    }
    reclaim(by_session);
    cr_assert_eq(vt->tensor_session_bytes(by_session, 9, &bytes), RM_OK);
    cr_assert_eq(bytes, 0);
    cr_assert_eq(vt->tensor_session_bytes(by_session, 7, &bytes), RM_OK);
    cr_assert_eq(bytes, 0);
    rm_tensor_pool_stats stats = stats_of(by_session);
    cr_assert_eq(stats.live_tensors, 0);
    cr_assert_eq(stats.remote_releases, K, "the last release of each came from an importer");
    for (int p = 0; p < PEERS; p++)
        quit_peer(peers[p]);
    destroy_context(by_pool);
    destroy_context(by_session);
    cr_assert_eq(count_segments(ns, 0), 0);
}

Test(tensor_processes, at_most_max_holders_processes_import_from_a_pool)
{
    const char *ns = make_namespace("holders");
    rm_context *context;
    new_context(&context, ns);
    rm_tensor *tensor = allocate_bytes(context, 4 * KiB, 0, 0);
    char expected[LINE_BYTES];
    fill_and_describe(context, tensor, 5, expected, sizeof expected);
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    export_both(context, tensor, descriptor, NULL);

    enum { N = RM_TENSOR_MAX_HOLDERS };
    peer *peers[N + 2];
    for (int i = 0; i < N + 2; i++)
        peers[i] = start_peer_with(ns, NULL, NULL);
    for (int i = 0; i < N + 2; i++)
        expect_ready(peers[i]);
    for (int i = 0; i < N; i++) {
        char line[32];
        snprintf(line, sizeof line, "importbin %d", RM_TENSOR_DESCRIPTOR_SIZE);
        cr_assert_eq(peer_send_line(&peers[i]->io, line), 0);
        cr_assert_eq(peer_send_all(peers[i]->io.to, descriptor, sizeof descriptor), 0);
    }
    for (int i = 0; i < N; i++) {
        const char *reply = must_reply(peers[i], peer_read(peers[i], REPLY_TIMEOUT_MS),
                                       "importbin");
        cr_assert(peer_starts_with(reply, "ok 0 "), "importer %d of %d: %s", i + 1, N, reply);
    }
    cr_assert_eq(stats_of(context).holders, N);

    /* One more process is refused, with the plugin's code and message. */
    const char *reply = must_reply(peers[N], peer_import_binary(peers[N], descriptor,
                                                                sizeof descriptor, false),
                                   "importbin");
    cr_assert_eq(error_code_of(reply), RM_E_QUOTA_EXCEEDED, "importer %d: %s", N + 1, reply);
    cr_assert(strlen(reply) > strlen("err -23 QUOTA_EXCEEDED tensor_import: "),
              "no message: %s", reply);
    cr_log_info("importer %d: %s", N + 1, reply);

    /* A killed importer's entry comes back through reclaim... */
    kill_peer(peers[0]);
    rm_reclaim_report report = reclaim(context);
    cr_assert_eq(report.dead_holders, 1);
    cr_assert_eq(report.holds_dropped, 1);
    cr_assert_eq(report.tensors_freed, 0, "the owner still holds it");
    int id = import_ok(peers[N], descriptor, sizeof descriptor, false, NULL);
    cr_assert_str_eq(CALL(peers[N], "sum %d", id), expected);
    /* ...and a clean exit gives its entry back by itself. */
    quit_peer(peers[1]);
    id = import_ok(peers[N + 1], descriptor, sizeof descriptor, false, NULL);
    cr_assert_str_eq(CALL(peers[N + 1], "sum %d", id), expected);
    cr_assert_eq(stats_of(context).holders, N);

    for (int i = 2; i < N + 2; i++)
        quit_peer(peers[i]);
    release(context, tensor);
    reclaim(context);
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.holders, 0);
    cr_assert_eq(stats.live_tensors, 0);
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}

/* ------------------------------------------------------------------------ */
/* Namespaces                                                               */
/* ------------------------------------------------------------------------ */

Test(tensor_processes, namespaces_are_isolated)
{
    const char *ns_a = make_namespace("nsa");
    const char *ns_b = make_namespace("nsb");
    rm_context *a, *b;
    new_context(&a, ns_a);
    new_context(&b, ns_b);
    rm_tensor *tensor = allocate_bytes(a, 64 * KiB, 0, 0);
    char expected[LINE_BYTES];
    fill_and_describe(a, tensor, 3, expected, sizeof expected);
    uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    export_both(a, tensor, binary, text);

    peer *other = start_peer(ns_b, NULL);
    const char *reply = must_reply(other, peer_import_binary(other, binary, sizeof binary, false),
                                   "importbin");
    int32_t code = error_code_of(reply);
    cr_assert(code == RM_E_INVALID_DESCRIPTOR || code == RM_E_STALE_DESCRIPTOR,
              "namespace %s imported from %s: %s", ns_b, ns_a, reply);
    cr_log_info("across namespaces: %s", reply);
    reply = CALL(other, "importtext %s", text);
    cr_assert_eq(error_code_of(reply), code, "text form: %s", reply);
    cr_assert_str_eq(CALL(other, "releaseall"), "ok 0", "a refused import left a handle");
    cr_assert_eq(field_of(CALL_OK(other, "stats"), "pools_mapped"), 0,
                 "a refused import left a mapping");
    quit_peer(other);

    rm_tensor *in_b = NULL;
    cr_assert_eq(vt->tensor_import(b, binary, sizeof binary, 0, &in_b), code);
    cr_assert_null(in_b);

    /* The same descriptor in namespace A, for contrast. */
    peer *same = start_peer(ns_a, NULL);
    int id = import_ok(same, binary, sizeof binary, false, NULL);
    cr_assert_str_eq(CALL(same, "sum %d", id), expected);
    quit_peer(same);

    uint32_t count = 99;
    cr_assert_eq(vt->shm_list(b, NULL, sizeof(rm_shm_pool_info), 0, &count), RM_OK);
    cr_assert_eq(count, 0, "namespace %s lists a pool of %s", ns_b, ns_a);
    rm_shm_pool_info pools[4];
    for (int i = 0; i < 4; i++)
        pools[i] = (rm_shm_pool_info)RM_STRUCT_INIT(rm_shm_pool_info);
    cr_assert_eq(vt->shm_list(a, pools, sizeof pools[0], 4, &count), RM_OK);
    cr_assert_eq(count, 1);
    cr_assert_eq(pools[0].owner_pid, (uint32_t)getpid());
    cr_assert_eq(pools[0].owner_alive, 1);
    cr_assert_eq(pools[0].live_tensors, 1);

    release(a, tensor);
    destroy_context(b);
    destroy_context(a);
    cr_assert_eq(count_segments(ns_a, 0), 0);
    cr_assert_eq(count_segments(ns_b, 0), 0);
}

/* ------------------------------------------------------------------------ */
/* Forgery                                                                  */
/* ------------------------------------------------------------------------ */

/* A real descriptor of ours must read as the documented layout. */
static void check_layout(const uint8_t *d, const rm_tensor_pool_stats *stats, uint64_t nbytes)
{
    cr_assert_eq(df_get(d, DF_MAGIC, 4), 0x31544d52u, "descriptor layout changed: magic");
    cr_assert_eq(df_get(d, DF_CHECKSUM, 8), df_checksum(d),
                 "descriptor layout changed: checksum");
    cr_assert_eq(df_get(d, DF_KIND, 1), 1);
    cr_assert_eq(df_get(d, DF_PID, 4), (uint64_t)getpid());
    cr_assert_eq(df_get(d, DF_POOL, 8), stats->pool_id);
    cr_assert_eq(df_get(d, DF_NBYTES, 8), nbytes);
    char name_end[24];
    snprintf(name_end, sizeof name_end, ".%016" PRIx64, stats->pool_id);
    size_t length = strlen(stats->pool_name);
    cr_assert(length > 17 && strcmp(stats->pool_name + length - 17, name_end) == 0,
              "pool %s is not named by its id %016" PRIx64, stats->pool_name, stats->pool_id);
}

/* One importer per attempt (no cached mapping), which must refuse with
 * `code` (or `other_code` when not 0), answer in time and stay alive. */
static void expect_refused(const char *ns, const uint8_t *descriptor, int32_t code,
                           int32_t other_code, const char *what)
{
    peer *p = start_peer(ns, NULL);
    const char *reply = peer_import_binary_within(p, descriptor, RM_TENSOR_DESCRIPTOR_SIZE,
                                                  false, 15000);
    cr_assert_not_null(reply, "%s: the importer %s", what, p->io.why);
    int32_t got = error_code_of(reply);
    cr_assert(got == code || (other_code != 0 && got == other_code),
              "%s: want %s, got: %s", what, vt->error_name(code), reply);
    cr_log_info("%s: %s", what, reply);
    quit_peer(p);
}

typedef enum fake_kind {
    FAKE_MODE_0644,     /* a regular file of ours, mode 0644, right size */
    FAKE_SYMLINK,       /* a symlink to the real (renamed) segment */
    FAKE_OTHER_OWNER,   /* 0600 but another user's (root only) */
    FAKE_TRUNCATED,     /* 0600, ours, 4 KiB */
    FAKE_FIFO,          /* a named pipe */
    FAKE_DIRECTORY,
    FAKE_GARBAGE,       /* 0600, ours, right size, zeros */
} fake_kind;

static const char *fake_names[] = {"mode 0644", "symlink", "another user's", "truncated",
                                   "fifo", "directory", "zeros"};

/* Puts a fake at `path` whose real file now lives at `real`; 0, or 1 when
 * the case cannot be made here. */
static int make_fake(fake_kind kind, const char *path, const char *real)
{
    struct stat info;
    cr_assert_eq(stat(real, &info), 0);
    switch (kind) {
    case FAKE_SYMLINK:
        cr_assert_eq(symlink(real, path), 0, "symlink: %s", strerror(errno));
        return 0;
    case FAKE_FIFO:
        cr_assert_eq(mkfifo(path, 0600), 0, "mkfifo: %s", strerror(errno));
        return 0;
    case FAKE_DIRECTORY:
        cr_assert_eq(mkdir(path, 0700), 0, "mkdir: %s", strerror(errno));
        return 0;
    default:
        break;
    }
    if (kind == FAKE_OTHER_OWNER && geteuid() != 0)
        return 1;
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    if (kind == FAKE_GARBAGE || kind == FAKE_MODE_0644 || kind == FAKE_OTHER_OWNER) {
        /* The same bytes as the real one (zeros for garbage). */
        int from = open(real, O_RDONLY | O_CLOEXEC);
        cr_assert_geq(from, 0);
        cr_assert_eq(ftruncate(fd, info.st_size), 0);
        if (kind != FAKE_GARBAGE) {
            void *source = mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_SHARED, from, 0);
            void *target = mmap(NULL, (size_t)info.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                                fd, 0);
            cr_assert(source != MAP_FAILED && target != MAP_FAILED);
            /* Only the control segment is copied whole; the data segment
             * is sparse and large, its first MiB is enough. */
            size_t copy = (size_t)info.st_size < MiB ? (size_t)info.st_size : MiB;
            memcpy(target, source, copy);
            munmap(source, (size_t)info.st_size);
            munmap(target, (size_t)info.st_size);
        }
        close(from);
    } else if (kind == FAKE_TRUNCATED) {
        cr_assert_eq(ftruncate(fd, 4096), 0);
    }
    if (kind == FAKE_MODE_0644)
        cr_assert_eq(fchmod(fd, 0644), 0);
    if (kind == FAKE_OTHER_OWNER)
        cr_assert_eq(fchown(fd, 65534, 65534), 0, "fchown: %s", strerror(errno));
    close(fd);
    return 0;
}

static void remove_fake(const char *path)
{
    if (unlink(path) != 0)
        cr_assert_eq(rmdir(path), 0, "cannot remove the fake %s: %s", path, strerror(errno));
}

Test(tensor_processes, a_segment_that_is_not_the_owner_s_is_refused)
{
    const char *ns = make_namespace("forge");
    rm_context *context;
    new_context(&context, ns);
    rm_tensor *tensor = allocate_bytes(context, 64 * KiB, 0, 0);
    char expected[LINE_BYTES];
    fill_and_describe(context, tensor, 8, expected, sizeof expected);
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    export_both(context, tensor, descriptor, NULL);
    rm_tensor_pool_stats stats = stats_of(context);
    char data_path[256], control_path[256];
    snprintf(data_path, sizeof data_path, "/dev/shm%s", stats.pool_name);
    snprintf(control_path, sizeof control_path, "/dev/shm%s.ctl", stats.pool_name);
    struct stat info;
    cr_assert_eq(stat(data_path, &info), 0, "%s: %s", data_path, strerror(errno));
    cr_assert_eq(info.st_mode & 07777, 0600);
    cr_assert_eq(stat(control_path, &info), 0, "%s: %s", control_path, strerror(errno));
    cr_assert_eq(info.st_mode & 07777, 0600);

    /* The real segment is moved aside and something else put in its place;
     * the owner keeps its mapping. A process that imports must refuse, in
     * time, and not crash; with the real file back, it imports. */
    const char *targets[2] = {data_path, control_path};
    const fake_kind kinds[] = {FAKE_MODE_0644, FAKE_SYMLINK, FAKE_OTHER_OWNER, FAKE_TRUNCATED,
                               FAKE_FIFO,      FAKE_DIRECTORY, FAKE_GARBAGE};
    for (int t = 0; t < 2; t++) {
        char held[128];
        snprintf(held, sizeof held, "/dev/shm/pr-hold-%ld-%d", (long)getpid(), t);
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            if (t == 0 && kinds[k] == FAKE_GARBAGE)
                continue; /* zeros are valid tensor data */
            peer *p = start_peer(ns, NULL);
            cr_assert_eq(rename(targets[t], held), 0, "%s", strerror(errno));
            if (make_fake(kinds[k], targets[t], held) != 0) {
                cr_assert_eq(rename(held, targets[t]), 0);
                quit_peer(p);
                cr_log_warn("%s segment, %s: cannot be made without root, not run",
                            t ? "control" : "data", fake_names[kinds[k]]);
                continue;
            }
            /* A fifo must not block the importer: 15 s is plenty. */
            const char *reply = peer_import_binary_within(p, descriptor, sizeof descriptor,
                                                          false, 15000);
            char what[96];
            snprintf(what, sizeof what, "%s segment replaced by a %s file",
                     t ? "control" : "data", fake_names[kinds[k]]);
            remove_fake(targets[t]);
            cr_assert_eq(rename(held, targets[t]), 0, "%s", strerror(errno));
            /* Every case runs and reports (expect, not assert). */
            if (reply == NULL) {
                cr_expect_fail("%s: the importer %s", what, p->io.why);
                peer_kill(p);
                continue;
            }
            cr_expect_eq(error_code_of(reply), RM_E_INVALID_DESCRIPTOR, "%s: %s", what, reply);
            cr_log_info("%s: %s", what, reply);
            if (error_code_of(reply) == 1) {
                quit_peer(p); /* it imported the fake: what it maps now is moot */
                continue;
            }
            int id = import_ok(p, descriptor, sizeof descriptor, false, NULL);
            cr_assert_str_eq(CALL(p, "sum %d", id), expected, "%s, then the real one", what);
            quit_peer(p);
        }
    }

    /* A descriptor that names a pool of ours that does not exist, whose
     * files we then make ourselves. */
    check_layout(descriptor, &stats, 64 * KiB);
    uint8_t forged[RM_TENSOR_DESCRIPTOR_SIZE];
    memcpy(forged, descriptor, sizeof forged);
    uint64_t fake_id = stats.pool_id ^ 0x0123456789abcdefu;
    df_put(forged, DF_POOL, 8, fake_id);
    df_reseal(forged);
    char fake_data[256], fake_control[264];
    snprintf(fake_data, sizeof fake_data, "/dev/shm/rm.%s.%ld.%016" PRIx64, ns, (long)getpid(),
             fake_id);
    snprintf(fake_control, sizeof fake_control, "%s.ctl", fake_data);
    expect_refused(ns, forged, RM_E_STALE_DESCRIPTOR, 0, "a pool with no segments");
    make_fake(FAKE_MODE_0644, fake_data, data_path);
    make_fake(FAKE_MODE_0644, fake_control, control_path);
    expect_refused(ns, forged, RM_E_INVALID_DESCRIPTOR, 0, "segments of mode 0644");
    remove_fake(fake_data);
    remove_fake(fake_control);
    cr_assert_eq(symlink(data_path, fake_data), 0);
    cr_assert_eq(symlink(control_path, fake_control), 0);
    expect_refused(ns, forged, RM_E_INVALID_DESCRIPTOR, 0, "symlinks to a real pool");
    remove_fake(fake_data);
    remove_fake(fake_control);
    /* 0600 files of ours: a copy of a real pool's control segment names
     * another pool id. */
    make_fake(FAKE_GARBAGE, fake_data, data_path);
    make_fake(FAKE_GARBAGE, fake_control, control_path);
    int from = open(control_path, O_RDONLY);
    int to = open(fake_control, O_WRONLY);
    cr_assert(from >= 0 && to >= 0);
    char page[4096];
    ssize_t got = read(from, page, sizeof page);
    cr_assert_eq(got, (ssize_t)sizeof page);
    cr_assert_eq(write(to, page, sizeof page), (ssize_t)sizeof page);
    close(from);
    close(to);
    expect_refused(ns, forged, RM_E_INVALID_DESCRIPTOR, 0, "0600 files copied from another pool");
    remove_fake(fake_data);
    remove_fake(fake_control);

    release(context, tensor);
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}

typedef struct corruption {
    const char *what;
    size_t at;
    size_t width;
    int mode; /* 0: xor value, 1: set value, 2: add value */
    uint64_t value;
    bool reseal; /* recompute the checksum */
    int32_t code;
    int32_t other_code; /* also accepted when not 0 */
} corruption;

Test(tensor_processes, descriptors_corrupted_in_transit_or_forged_field_by_field_are_refused)
{
    const char *ns = make_namespace("fields");
    rm_context *context;
    new_context(&context, ns);
    rm_tensor *tensor = allocate_bytes(context, 64 * KiB, 0, 0);
    rm_tensor *other = allocate_bytes(context, 8 * KiB, 0, 0);
    char expected[LINE_BYTES];
    fill_and_describe(context, tensor, 4, expected, sizeof expected);
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    export_both(context, tensor, descriptor, text);
    rm_tensor_pool_stats stats = stats_of(context);
    check_layout(descriptor, &stats, 64 * KiB);
    peer *p = start_peer(ns, NULL);

    /* Every byte damaged in transit: the checksum catches it. */
    for (size_t at = 0; at < sizeof descriptor; at++) {
        uint8_t damaged[RM_TENSOR_DESCRIPTOR_SIZE];
        memcpy(damaged, descriptor, sizeof damaged);
        damaged[at] ^= (uint8_t)(1u << (at % 8));
        const char *reply = must_reply(p, peer_import_binary(p, damaged, sizeof damaged, false),
                                       "importbin");
        cr_assert_eq(error_code_of(reply), RM_E_INVALID_DESCRIPTOR, "byte %zu: %s", at, reply);
    }
    const char *reply = must_reply(p, peer_import_binary(p, descriptor, 199, false), "short");
    cr_assert_eq(error_code_of(reply), RM_E_INVALID_DESCRIPTOR, "199 bytes: %s", reply);

    /* Forged field by field, checksum recomputed: the pool checks refuse. */
    CALL_OK(p, "release %d", import_ok(p, descriptor, sizeof descriptor, false, NULL));
    uint64_t offset = df_get(descriptor, DF_OFFSET, 8);
    const corruption table[] = {
        {"magic", DF_MAGIC, 4, 0, 1, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"version 1 (an older plugin's)", DF_VERSION, 2, 1, 1, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"version 3", DF_VERSION, 2, 1, 3, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"kind 3 (device) over a pool's identity", DF_KIND, 1, 1, 3, true,
         RM_E_STALE_DESCRIPTOR, RM_E_FEATURE_UNAVAILABLE},
        {"kind 4", DF_KIND, 1, 1, 4, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"kind inline, no data", DF_KIND, 1, 1, 2, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"ndim 9", DF_NDIM, 1, 1, 9, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"dtype 7 bits", DF_DTYPE_BITS, 1, 1, 7, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"slot past the table", DF_SLOT, 4, 1, 0xffffffffu, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"slot of another tensor", DF_SLOT, 4, 0, 1, true, RM_E_INVALID_DESCRIPTOR,
         RM_E_STALE_DESCRIPTOR},
        {"generation + 1", DF_GENERATION, 4, 2, 1, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"generation 0", DF_GENERATION, 4, 1, 0, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"owner pid", DF_PID, 4, 1, 1, true, RM_E_STALE_DESCRIPTOR, 0},
        {"owner start time", DF_START, 8, 0, 1, true, RM_E_STALE_DESCRIPTOR, 0},
        {"pool id", DF_POOL, 8, 0, 1, true, RM_E_STALE_DESCRIPTOR, 0},
        {"offset moved", DF_OFFSET, 8, 1, offset + 64, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"offset past the pool", DF_OFFSET, 8, 1, (uint64_t)1 << 62, true,
         RM_E_INVALID_DESCRIPTOR, 0},
        {"nbytes + 1", DF_NBYTES, 8, 1, 64 * KiB + 1, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"nbytes 2^63", DF_NBYTES, 8, 1, (uint64_t)1 << 63, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"shape doubled", DF_SHAPE, 8, 1, 128 * KiB, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"shape -1", DF_SHAPE, 8, 1, UINT64_MAX, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"stride -1", DF_STRIDES, 8, 1, UINT64_MAX, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"stride 2", DF_STRIDES, 8, 1, 2, true, RM_E_INVALID_DESCRIPTOR, 0},
        {"checksum", DF_CHECKSUM, 8, 0, 1, false, RM_E_INVALID_DESCRIPTOR, 0},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const corruption *row = &table[i];
        uint8_t forged[RM_TENSOR_DESCRIPTOR_SIZE];
        memcpy(forged, descriptor, sizeof forged);
        uint64_t value = df_get(forged, row->at, row->width);
        value = row->mode == 0 ? value ^ row->value : row->mode == 2 ? value + row->value
                                                                     : row->value;
        df_put(forged, row->at, row->width, value);
        if (row->reseal)
            df_reseal(forged);
        /* The same answer from a process that maps the pool already
         * (warm) and from one that does not (cold): validation must not
         * depend on the cache. */
        peer *cold = start_peer(ns, NULL);
        peer *both[2] = {p, cold};
        int accepted = 0;
        for (int w = 0; w < 2; w++) {
            reply = must_reply(both[w], peer_import_binary(both[w], forged, sizeof forged, false),
                               row->what);
            int32_t got = error_code_of(reply);
            accepted += w == 0 && peer_starts_with(reply, "ok ");
            cr_expect(got == row->code || (row->other_code != 0 && got == row->other_code),
                      "%s, %s importer: want %s, got: %s", row->what, w ? "cold" : "warm",
                      vt->error_name(row->code), reply);
            cr_log_info("%s, %s importer: %s", row->what, w ? "cold" : "warm", reply);
        }
        quit_peer(cold);
        char handles[16];
        snprintf(handles, sizeof handles, "ok %d", accepted);
        cr_assert_str_eq(CALL(p, "releaseall"), handles, "%s: a refused import left a handle",
                         row->what);
    }

    /* The text form: damaged, cut short, or not one at all. */
    char damaged[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    snprintf(damaged, sizeof damaged, "%s", text);
    damaged[20] = damaged[20] == 'A' ? 'B' : 'A';
    const char *texts[] = {damaged, "rmt1.", "rmt1.AAAA", "rmt2.AAAA", "nonsense",
                           "rmt1.!!!!!!!!"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        reply = CALL(p, "importtext %s", texts[i]);
        cr_assert_eq(error_code_of(reply), RM_E_INVALID_DESCRIPTOR, "text %s: %s", texts[i],
                     reply);
    }
    char shortened[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    snprintf(shortened, sizeof shortened, "%.*s", (int)strlen(text) - 1, text);
    reply = CALL(p, "importtext %s", shortened);
    cr_assert_eq(error_code_of(reply), RM_E_INVALID_DESCRIPTOR, "text cut short: %s", reply);

    /* After all that the same process imports the real one. */
    cr_assert_str_eq(CALL(p, "releaseall"), "ok 0", "a refused import left a handle");
    int id = import_ok(p, descriptor, sizeof descriptor, false, NULL);
    cr_assert_str_eq(CALL(p, "sum %d", id), expected);
    quit_peer(p);
    release(context, other);
    release(context, tensor);
    expect_pool_empty(context, "after the forgeries");
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}

/* ------------------------------------------------------------------------ */
/* An importer's data outlives its owner                                    */
/* ------------------------------------------------------------------------ */

/* What the owning process does once it has released its own handles. */
typedef enum owner_exit {
    OWNER_DESTROYS,             /* context_destroy, process lives on */
    OWNER_DESTROYS_AND_UNLOADS, /* context_destroy, then dlclose */
    OWNER_UNLOADS,              /* dlclose with its context still alive */
    OWNER_EXITS,                /* exit(0), destroying nothing */
    OWNER_IS_KILLED,            /* SIGKILL */
} owner_exit;

static const uint64_t survivor_sizes[] = {4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB};
#define SURVIVORS (sizeof survivor_sizes / sizeof survivor_sizes[0])

static uint64_t view_hash(rm_context *context, rm_tensor *tensor)
{
    rm_tensor_info info = info_of(context, tensor);
    tp_view view = tp_view_of(&info);
    return tp_view_hash(&view);
}

/* True while this process maps any segment of namespace `ns`. */
static bool maps_namespace(const char *ns)
{
    char needle[96];
    snprintf(needle, sizeof needle, "/dev/shm/rm.%s.", ns);
    FILE *maps = fopen("/proc/self/maps", "r");
    cr_assert_not_null(maps);
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, maps) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(maps);
    return found;
}

static void importer_keeps_its_data(owner_exit how, const char *tag)
{
    const char *ns = make_namespace(tag);
    rm_context *context;
    new_context(&context, ns);
    peer *owner = start_peer(ns, NULL);
    pid_t owner_pid = owner->pid;
    rm_tensor *views[SURVIVORS];
    uint64_t hashes[SURVIVORS];
    for (size_t i = 0; i < SURVIVORS; i++) {
        char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
        uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
        produce_in_peer(owner, survivor_sizes[i], 200 + i, text, binary);
        int32_t rc = vt->tensor_import(context, binary, sizeof binary, 0, &views[i]);
        cr_assert_eq(rc, RM_OK, "import of %" PRIu64 " bytes: %s", survivor_sizes[i],
                     vt->context_last_error(context));
        hashes[i] = tp_pattern_hash(200 + i, survivor_sizes[i]);
        cr_assert_eq(view_hash(context, views[i]), hashes[i], "before the owner went");
    }
    cr_assert_str_eq(CALL(owner, "releaseall"), "ok 5");

    switch (how) {
    case OWNER_DESTROYS:
        cr_assert_str_eq(CALL(owner, "destroy"), "ok destroyed");
        break;
    case OWNER_DESTROYS_AND_UNLOADS:
        cr_assert_str_eq(CALL(owner, "destroy"), "ok destroyed");
        cr_assert_str_eq(CALL(owner, "unload"), "ok unloaded");
        break;
    case OWNER_UNLOADS:
        cr_assert_str_eq(CALL(owner, "unload"), "ok unloaded");
        break;
    case OWNER_EXITS: {
        cr_assert_str_eq(CALL(owner, "exit"), "ok exiting");
        int status = reap(owner_pid, 20000);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %#x", status);
        peer_forget(owner);
        owner = NULL;
        break;
    }
    case OWNER_IS_KILLED:
        kill_peer(owner);
        owner = NULL;
        break;
    }

    /* Another process of the namespace allocates and writes as much again:
     * nothing it gets may be the pages the importer still reads. */
    peer *neighbour = start_peer(ns, NULL);
    for (size_t i = 0; i < SURVIVORS; i++) {
        char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
        uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
        produce_in_peer(neighbour, survivor_sizes[i], 900 + i, text, binary);
    }
    for (size_t i = 0; i < SURVIVORS; i++)
        cr_assert_eq(view_hash(context, views[i]), hashes[i],
                     "%" PRIu64 " bytes changed after the owner went", survivor_sizes[i]);
    /* Released one by one, the others stay intact. */
    for (size_t i = 0; i < SURVIVORS; i++) {
        release(context, views[i]);
        for (size_t j = i + 1; j < SURVIVORS; j++)
            cr_assert_eq(view_hash(context, views[j]), hashes[j],
                         "%" PRIu64 " bytes changed after %zu releases", survivor_sizes[j],
                         i + 1);
    }
    quit_peer(neighbour);

    if (how == OWNER_DESTROYS || how == OWNER_DESTROYS_AND_UNLOADS) {
        /* The owner retired the pool: the last release unmapped it. */
        cr_assert_eq(stats_of(context).pools_mapped, 0, "the retired pool is still mapped");
        cr_assert_not(maps_namespace(ns), "a mapping of the retired pool is left");
        cr_assert_eq(count_segments(ns, owner_pid), 0, "the owner's destroy unlinked it");
    }
    if (owner != NULL) {
        close(owner->io.to); /* end of input: the peer ends */
        owner->io.to = -1;
        int status = reap(owner_pid, 20000);
        cr_assert(WIFEXITED(status), "owner status %#x", status);
        peer_forget(owner);
    }
    /* What a dead owner left goes with a reclaim (as `rmctl gc` does). */
    rm_reclaim_report report = reclaim(context);
    cr_log_info("after the owner's end (%d): segments_unlinked=%" PRIu64, (int)how,
                report.segments_unlinked);
    cr_assert_eq(stats_of(context).pools_mapped, 0, "a pool of a gone owner is still mapped");
    cr_assert_not(maps_namespace(ns), "a mapping of the gone owner's pool is left");
    cr_assert_eq(count_segments(ns, 0), 0, "segments left in the namespace");
    destroy_context(context);
}

Test(tensor_processes, an_importer_keeps_its_data_when_the_owner_destroys_its_context)
{
    importer_keeps_its_data(OWNER_DESTROYS, "kd-destroy");
}

Test(tensor_processes, an_importer_keeps_its_data_when_the_owner_destroys_and_unloads)
{
    importer_keeps_its_data(OWNER_DESTROYS_AND_UNLOADS, "kd-unload");
}

Test(tensor_processes, an_importer_keeps_its_data_when_the_owner_unloads_the_plugin)
{
    importer_keeps_its_data(OWNER_UNLOADS, "kd-dlclose");
}

Test(tensor_processes, an_importer_keeps_its_data_when_the_owner_exits)
{
    importer_keeps_its_data(OWNER_EXITS, "kd-exit");
}

Test(tensor_processes, an_importer_keeps_its_data_when_the_owner_is_killed)
{
    importer_keeps_its_data(OWNER_IS_KILLED, "kd-kill");
}

/* ------------------------------------------------------------------------ */
/* A descriptor is bound to its tensor                                      */
/* ------------------------------------------------------------------------ */

/* A descriptor changed consistently (its layout still spans nbytes, its
 * checksum recomputed by the documented formula) describes a tensor its
 * owner never exported: the importer must refuse it and name the field. */
typedef struct reinterpretation {
    const char *what;
    const char *field; /* must appear in the message */
    uint8_t code, bits; /* dtype */
    uint32_t ndim;
    int64_t shape[2], strides[2];
    uint64_t session;
    int slot_delta, generation_delta;
    int neighbour_offset; /* 1: the other live tensor's offset */
} reinterpretation;

Test(tensor_processes, a_descriptor_changed_after_export_is_refused_naming_the_field)
{
    const char *ns = make_namespace("bind");
    rm_context *context;
    new_context(&context, ns);
    /* The example: float32 (80, 3000), session 42. */
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){RM_DTYPE_FLOAT, 32, 1};
    spec.ndim = 2;
    spec.shape[0] = 80;
    spec.shape[1] = 3000;
    spec.session = 42;
    rm_tensor *tensor = NULL;
    cr_assert_eq(vt->tensor_allocate(context, &spec, &tensor), RM_OK, "%s",
                 vt->context_last_error(context));
    /* A second tensor right after it, so that "offset + its size" and
     * "slot + 1" name a live tensor, not empty space. */
    rm_tensor *neighbour = NULL;
    cr_assert_eq(vt->tensor_allocate(context, &spec, &neighbour), RM_OK);
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    uint8_t neighbour_descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    cr_assert_eq(vt->tensor_export(context, tensor, descriptor, sizeof descriptor), RM_OK);
    cr_assert_eq(vt->tensor_export(context, neighbour, neighbour_descriptor,
                                   sizeof neighbour_descriptor),
                 RM_OK);
    cr_assert_eq(df_checksum(descriptor), df_get(descriptor, DF_CHECKSUM, 8),
                 "the header's checksum formula");
    uint64_t neighbour_offset = df_get(neighbour_descriptor, DF_OFFSET, 8);

    static const reinterpretation table[] = {
        {"int32 (3000, 80) session 7", "session", RM_DTYPE_INT, 32, 2, {3000, 80}, {80, 1}, 7,
         0, 0, 0},
        {"session 7", "session", RM_DTYPE_FLOAT, 32, 2, {80, 3000}, {3000, 1}, 7, 0, 0, 0},
        {"int32", "dtype", RM_DTYPE_INT, 32, 2, {80, 3000}, {3000, 1}, 42, 0, 0, 0},
        {"uint32", "dtype", RM_DTYPE_UINT, 32, 2, {80, 3000}, {3000, 1}, 42, 0, 0, 0},
        {"shape (3000, 80)", "shape", RM_DTYPE_FLOAT, 32, 2, {3000, 80}, {80, 1}, 42, 0, 0, 0},
        {"shape (79, 6000), same span", "shape", RM_DTYPE_FLOAT, 32, 2, {79, 6000}, {3000, 1},
         42, 0, 0, 0},
        {"strides (1, 80)", "strides", RM_DTYPE_FLOAT, 32, 2, {80, 3000}, {1, 80}, 42, 0, 0, 0},
        {"ndim 1 (240000)", "ndim", RM_DTYPE_FLOAT, 32, 1, {240000, 0}, {1, 0}, 42, 0, 0, 0},
        {"offset of the neighbour", "offset", RM_DTYPE_FLOAT, 32, 2, {80, 3000}, {3000, 1}, 42,
         0, 0, 1},
        {"slot + 1", "slot", RM_DTYPE_FLOAT, 32, 2, {80, 3000}, {3000, 1}, 42, 1, 0, 0},
        {"generation + 1", "generation", RM_DTYPE_FLOAT, 32, 2, {80, 3000}, {3000, 1}, 42, 0,
         1, 0},
    };
    peer *importer = start_peer(ns, NULL);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const reinterpretation *row = &table[i];
        uint8_t forged[RM_TENSOR_DESCRIPTOR_SIZE];
        memcpy(forged, descriptor, sizeof forged);
        df_put(forged, DF_DTYPE_CODE, 1, row->code);
        df_put(forged, DF_DTYPE_BITS, 1, row->bits);
        df_put(forged, DF_NDIM, 1, row->ndim);
        for (uint32_t d = 0; d < 2; d++) {
            df_put(forged, DF_SHAPE + 8 * d, 8, (uint64_t)row->shape[d]);
            df_put(forged, DF_STRIDES + 8 * d, 8, (uint64_t)row->strides[d]);
        }
        df_put(forged, DF_SESSION, 8, row->session);
        df_put(forged, DF_SLOT, 4, df_get(forged, DF_SLOT, 4) + (uint64_t)row->slot_delta);
        df_put(forged, DF_GENERATION, 4,
               df_get(forged, DF_GENERATION, 4) + (uint64_t)row->generation_delta);
        if (row->neighbour_offset)
            df_put(forged, DF_OFFSET, 8, neighbour_offset);
        df_reseal(forged);
        cr_assert_neq(memcmp(forged, descriptor, sizeof forged), 0, "%s changes the bytes",
                      row->what);
        char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
        df_to_text(forged, text);
        const char *replies[2];
        char binary_reply[LINE_BYTES];
        snprintf(binary_reply, sizeof binary_reply, "%s",
                 must_reply(importer,
                            peer_import_binary(importer, forged, sizeof forged, false),
                            row->what));
        replies[0] = binary_reply;
        replies[1] = CALL(importer, "importtext %s", text);
        for (int form = 0; form < 2; form++) {
            cr_expect_eq(error_code_of(replies[form]), RM_E_INVALID_DESCRIPTOR,
                         "%s (%s): %s", row->what, form ? "text" : "binary", replies[form]);
            cr_expect_not_null(strstr(replies[form], row->field),
                               "%s (%s): the message does not name '%s': %s", row->what,
                               form ? "text" : "binary", row->field, replies[form]);
        }
        cr_assert_str_eq(CALL(importer, "releaseall"), "ok 0", "%s left a handle", row->what);
    }
    /* The real one still imports, and nothing above left a hold. */
    int id = import_ok(importer, descriptor, sizeof descriptor, false, NULL);
    CALL_OK(importer, "release %d", id);
    quit_peer(importer);
    release(context, neighbour);
    release(context, tensor);
    expect_pool_empty(context, "after the forgeries");
    destroy_context(context);
    cr_assert_eq(count_segments(ns, 0), 0);
}
