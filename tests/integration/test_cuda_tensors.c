/* Device tensors (CUDA IPC, ABI 1.3) across real processes: this process
 * loads the real rm_plugin.so and forks + execs cuda_tensor_peer
 * ($RM_CUDA_TENSOR_PEER), a small host that produces, imports, checks and
 * releases device tensors on command (protocol at the top of
 * cuda_tensor_peer.c).
 *
 * One binary, two suites (tests/meson.build): "cuda" runs it against the
 * fake driver (FAKE_CUDA_LIBRARY, named to the plugin by cuda.driver);
 * "gpu" against the real driver (cuda.driver left at libcuda.so.1), where
 * main() exits 77 (skip) when cuda_info() finds no usable device. Device
 * memory is read and written only through the driver API in the device's
 * primary context (cuda_tensor_common.h), so every test runs unchanged on
 * a GPU; a check that needs the fake (its counters, its knobs) is skipped
 * there, and says so in the log.
 *
 * Every test uses its own namespace ("cu-<tag>-<pid>"). The suite's fini
 * kills the peers still running, destroys the contexts left and unlinks
 * what those namespaces and dead processes left in /dev/shm; peers also
 * die with this process (PR_SET_PDEATHSIG).
 *
 * Run time (2 cores): a few seconds in all, most of it the 1 GiB handoff. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child_check.h"
#include "cuda_tensor_common.h"
#include "fake_cuda.h"
#include "gpu_suite_main.h"
#include "peer_process.h"
#include "plugin_fixture.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

#define REPLY_TIMEOUT_MS 120000
#define MAX_PEERS 8
#define MAX_NAMESPACES 4
#define MAX_CONTEXTS 8
#define TEXT_MAX RM_TENSOR_DESCRIPTOR_TEXT_MAX

/* ------------------------------------------------------------------------ */
/* Bookkeeping for cleanup                                                  */
/* ------------------------------------------------------------------------ */

typedef struct peer {
    pid_t pid;
    peer_io io;
} peer;

static const char *peer_path;
static peer *live_peers[MAX_PEERS];
static rm_context *live_contexts[MAX_CONTEXTS];
static char namespaces[MAX_NAMESPACES][48];
static int namespace_count;
static td_driver test_driver;
static bool test_driver_open;

static void suite_init(void)
{
    fixture_load();
    peer_path = getenv("RM_CUDA_TENSOR_PEER");
    cr_assert_not_null(peer_path, "RM_CUDA_TENSOR_PEER must name cuda_tensor_peer");
}

static void suite_fini(void)
{
    for (int i = 0; i < MAX_PEERS; i++) {
        if (live_peers[i] != NULL) {
            kill(live_peers[i]->pid, SIGKILL);
            (void)peer_reap(live_peers[i]->pid, 10000, NULL);
            peer_io_close(&live_peers[i]->io);
            free(live_peers[i]);
            live_peers[i] = NULL;
        }
    }
    for (int i = MAX_CONTEXTS - 1; i >= 0; i--) {
        if (live_contexts[i] != NULL)
            vt->context_destroy(live_contexts[i]);
        live_contexts[i] = NULL;
    }
    for (int i = 0; i < namespace_count; i++) {
        char prefix[256];
        snprintf(prefix, sizeof prefix, "rmcu.%s.", namespaces[i]);
        (void)shm_unlink_prefix(prefix);
        snprintf(prefix, sizeof prefix, "rm.%s.", namespaces[i]);
        (void)shm_unlink_prefix(prefix);
    }
    if (test_driver_open)
        td_close(&test_driver);
    test_driver_open = false;
    fake_cuda_reap_dead();
    fixture_unload();
}

TestSuite(cuda_tensors, .init = suite_init, .fini = suite_fini, .timeout = 120);

static const char *make_namespace(const char *tag)
{
    cr_assert_lt(namespace_count, MAX_NAMESPACES);
    char *name = namespaces[namespace_count++];
    snprintf(name, sizeof namespaces[0], "cu-%s-%ld", tag, (long)getpid());
    return name;
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

/* The fake's counter `name` in this process; -1 on a real driver. */
static long long counter(const char *name)
{
    return td_counter_loaded(name);
}

static void fake_only(const char *what)
{
    if (!td_is_fake())
        cr_skip_test("%s needs the fake driver's knobs", what);
}

/* ------------------------------------------------------------------------ */
/* Contexts and tensors in this process                                     */
/* ------------------------------------------------------------------------ */

/* A context in `ns` with the test's driver and extra key/value pairs
 * (NULL-terminated); the code, *out tracked for the fini. */
static int32_t try_context(rm_context **out, const char *ns, ...)
{
    const char *pairs[34] = {"shm.namespace", ns};
    size_t count = 2;
    if (td_is_fake()) {
        pairs[count++] = "cuda.driver";
        pairs[count++] = td_library();
    }
    va_list args;
    va_start(args, ns);
    for (const char *word; count < 32 && (word = va_arg(args, const char *)) != NULL;)
        pairs[count++] = word;
    va_end(args);
    pairs[count] = NULL;
    int32_t rc = fixture_context(out, pairs);
    if (rc == RM_OK) {
        for (int i = 0; i < MAX_CONTEXTS; i++) {
            if (live_contexts[i] == NULL) {
                live_contexts[i] = *out;
                break;
            }
        }
    }
    return rc;
}

#define new_context(out, ...)                                                          \
    do {                                                                               \
        int32_t rc_ = try_context((out), __VA_ARGS__, NULL);                           \
        cr_assert_eq(rc_, RM_OK, "context_create: %s: %s", vt->error_name(rc_),        \
                     vt->context_last_error(NULL));                                    \
    } while (0)

static void destroy_context(rm_context *context)
{
    for (int i = 0; i < MAX_CONTEXTS; i++)
        if (live_contexts[i] == context)
            live_contexts[i] = NULL;
    vt->context_destroy(context);
}

#define expect_code(rc, expected, context, what)                                          \
    do {                                                                                  \
        int32_t got_ = (rc);                                                              \
        cr_assert_eq(got_, (expected), "%s: %s (%d), expected %s: %s", (what),           \
                     vt->error_name(got_), (int)got_, vt->error_name(expected),           \
                     vt->context_last_error(context));                                    \
    } while (0)

#define expect_ok(rc, context, what) expect_code((rc), RM_OK, (context), (what))

static rm_tensor_spec byte_spec(const char *device, uint64_t nbytes, uint64_t session)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)nbytes;
    spec.session = session;
    snprintf(spec.device, sizeof spec.device, "%s", device);
    return spec;
}

static int32_t try_alloc(rm_context *context, const char *device, uint64_t nbytes,
                         uint64_t session, rm_tensor **out)
{
    rm_tensor_spec spec = byte_spec(device, nbytes, session);
    return vt->tensor_allocate(context, &spec, out);
}

static rm_tensor *alloc(rm_context *context, const char *device, uint64_t nbytes)
{
    rm_tensor *tensor = NULL;
    expect_ok(try_alloc(context, device, nbytes, 0, &tensor), context, "tensor_allocate");
    return tensor;
}

static rm_tensor_info info_of(rm_context *context, rm_tensor *tensor)
{
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    expect_ok(vt->tensor_info(context, tensor, &info), context, "tensor_info");
    return info;
}

static rm_tensor_pool_stats stats_of(rm_context *context)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    expect_ok(vt->tensor_pool_stats(context, &stats), context, "tensor_pool_stats");
    return stats;
}

static rm_reclaim_report reclaim(rm_context *context)
{
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    expect_ok(vt->tensor_reclaim(context, &report), context, "tensor_reclaim");
    return report;
}

static void export_text(rm_context *context, rm_tensor *tensor, char text[TEXT_MAX])
{
    expect_ok(vt->tensor_export_text(context, tensor, text, TEXT_MAX), context,
              "tensor_export_text");
}

static void release(rm_context *context, rm_tensor *tensor)
{
    expect_ok(vt->tensor_release(context, tensor), context, "tensor_release");
}

/* Writes the pattern of `seed` into a device tensor, through the driver. */
static void fill(rm_context *context, rm_tensor *tensor, uint64_t seed)
{
    rm_tensor_info info = info_of(context, tensor);
    cr_assert_eq(info.device.device_type, 2, "not a device tensor (device type %d)",
                 info.device.device_type);
    td_driver *d = driver();
    cr_assert_eq(td_fill(d, info.device.device_id, (td_deviceptr)(uintptr_t)info.data,
                         info.nbytes, seed),
                 0, "writing the tensor: %s", d->why);
}

/* Checks every byte of a device tensor against the pattern of `seed`. */
static void expect_bytes(rm_context *context, rm_tensor *tensor, uint64_t seed)
{
    rm_tensor_info info = info_of(context, tensor);
    td_driver *d = driver();
    int rc = td_check(d, info.device.device_id, (td_deviceptr)(uintptr_t)info.data,
                      info.nbytes, seed);
    cr_assert_eq(rc, 0, "the tensor's bytes (cuda:%d, %" PRIu64 " bytes): %s",
                 info.device.device_id, info.nbytes, d->why);
}

/* ------------------------------------------------------------------------ */
/* Peers                                                                    */
/* ------------------------------------------------------------------------ */

/* Starts cuda_tensor_peer in `ns` with this test's driver and the extra
 * "KEY=VALUE" settings (NULL-terminated), and waits for "ready". It gets
 * this process's environment as it is now (FAKE_CUDA_* knobs included). */
static peer *start_peer(const char *ns, ...)
{
    const char *argv[40];
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
    va_list args;
    va_start(args, ns);
    for (const char *setting; argc < 36 && (setting = va_arg(args, const char *)) != NULL;) {
        argv[argc++] = "--set";
        argv[argc++] = setting;
    }
    va_end(args);
    argv[argc] = NULL;
    peer *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    p->pid = peer_spawn((char *const *)argv, NULL, -1, NULL, &p->io);
    cr_assert_gt(p->pid, 0, "cannot start %s: %s", peer_path, strerror(errno));
    for (int i = 0; i < MAX_PEERS; i++) {
        if (live_peers[i] == NULL) {
            live_peers[i] = p;
            break;
        }
    }
    const char *line = peer_read_line(&p->io, REPLY_TIMEOUT_MS);
    cr_assert(peer_starts_with(line, "ready "), "peer %d did not start: %s", (int)p->pid,
              line != NULL ? line : p->io.why);
    return p;
}

static void forget_peer(peer *p)
{
    for (int i = 0; i < MAX_PEERS; i++)
        if (live_peers[i] == p)
            live_peers[i] = NULL;
    peer_io_close(&p->io);
    free(p);
}

static const char *call_v(peer *p, const char *format, va_list args)
{
    char line[PEER_LINE_BYTES];
    vsnprintf(line, sizeof line, format, args);
    cr_assert_eq(peer_send_line(&p->io, line), 0, "peer %d: %s", (int)p->pid, p->io.why);
    const char *reply = peer_read_line(&p->io, REPLY_TIMEOUT_MS);
    cr_assert_not_null(reply, "peer %d, `%.60s`: %s", (int)p->pid, line, p->io.why);
    return reply;
}

/* Sends a command and returns its reply line (valid until the next call). */
__attribute__((format(printf, 2, 3))) static const char *call(peer *p, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    const char *reply = call_v(p, format, args);
    va_end(args);
    return reply;
}

/* A command whose reply must start with "ok". */
__attribute__((format(printf, 2, 3))) static const char *call_ok(peer *p,
                                                                 const char *format, ...)
{
    va_list args;
    va_start(args, format);
    const char *reply = call_v(p, format, args);
    va_end(args);
    cr_assert(peer_starts_with(reply, "ok"), "peer %d, `%s` answered: %s", (int)p->pid,
              format, reply);
    return reply;
}

/* The code of an "err CODE NAME ..." reply, or 1 when it is not one. */
static int32_t error_code_of(const char *reply)
{
    int code = 1;
    if (peer_starts_with(reply, "err ") && sscanf(reply, "err %d", &code) == 1)
        return (int32_t)code;
    return 1;
}

/* The value of " key=<number>" in a reply; UINT64_MAX when absent. */
static uint64_t field_of(const char *reply, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, " %s=", key);
    const char *at = reply != NULL ? strstr(reply, pattern) : NULL;
    return at != NULL ? strtoull(at + strlen(pattern), NULL, 0) : UINT64_MAX;
}

/* "ok N": N. */
static long long number_of(const char *reply)
{
    long long value = -9999;
    cr_assert(sscanf(reply, "ok %lld", &value) == 1, "not a number reply: %s", reply);
    return value;
}

/* The peer's fake counter `name` (-1 on a real driver). */
static long long peer_counter(peer *p, const char *name)
{
    return number_of(call_ok(p, "counter %s", name));
}

/* "alloc DEVICE NBYTES SEED": the handle id, the descriptor text. */
static int peer_alloc(peer *p, const char *device, uint64_t nbytes, const char *seed,
                      char text[TEXT_MAX], const char **reply_out)
{
    const char *reply = call_ok(p, "alloc %s %" PRIu64 " %s", device, nbytes, seed);
    int id = -1;
    _Static_assert(TEXT_MAX == 280, "the width below is TEXT_MAX - 1");
    cr_assert(sscanf(reply, "ok %d %279s", &id, text) == 2, "alloc reply: %s", reply);
    if (reply_out != NULL)
        *reply_out = reply;
    return id;
}

/* "import TEXT [w]" that must succeed: the handle id. */
static int peer_import(peer *p, const char *text, bool writable, const char **reply_out)
{
    const char *reply = call_ok(p, "import %s%s", text, writable ? " w" : "");
    int id = -1;
    cr_assert(sscanf(reply, "ok %d", &id) == 1, "import reply: %s", reply);
    if (reply_out != NULL)
        *reply_out = reply;
    return id;
}

static void quit_peer(peer *p)
{
    pid_t pid = p->pid;
    const char *reply = call(p, "quit");
    cr_assert_str_eq(reply, "ok bye", "peer %d did not say bye: %s", (int)pid, reply);
    int status = peer_reap(pid, 20000, NULL);
    forget_peer(p);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "peer %d ended with status %#x", (int)pid, status);
}

static void kill_peer(peer *p)
{
    kill(p->pid, SIGKILL);
    int status = peer_reap(p->pid, 10000, NULL);
    forget_peer(p);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the peer was to die of SIGKILL, status %#x", status);
}

/* A host tensor made here and checked by the peer: CPU paths work in the
 * context whatever the device paths said. */
static void expect_host_handoff(rm_context *context, peer *p)
{
    rm_tensor *tensor = NULL;
    rm_tensor_spec spec = byte_spec("cpu", 64 * KiB, 0);
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    expect_ok(vt->tensor_allocate(context, &spec, &tensor), context,
              "a host tensor after the device failure");
    rm_tensor_info info = info_of(context, tensor);
    cr_assert_eq(info.device.device_type, 1, "a host tensor has device type %d",
                 info.device.device_type);
    uint8_t *bytes = info.data;
    for (uint64_t i = 0; i < info.nbytes; i++)
        bytes[i] = td_byte(77, i);
    char text[TEXT_MAX];
    export_text(context, tensor, text);
    const char *reply = call(p, "importcheck %s 77", text);
    cr_assert_str_eq(reply, "ok", "the peer's check of a host tensor: %s", reply);
    release(context, tensor);
}

/* ------------------------------------------------------------------------ */
/* 1. Handoffs of 4 KiB to 1 GiB between two processes                      */
/* ------------------------------------------------------------------------ */

/* A producer process writes the pattern into a device tensor, a consumer
 * process imports it and checks every byte; both release, and the
 * producer's figures go back to no tensor. */
static void handoff(const char *tag, uint64_t nbytes, const char *block_bytes,
                    const char *pool_bytes)
{
    const char *ns = make_namespace(tag);
    peer *producer = start_peer(ns, block_bytes, pool_bytes, NULL);
    peer *consumer = start_peer(ns, NULL);
    char text[TEXT_MAX];
    const char *reply = NULL;
    uint64_t seed = nbytes ^ 0x5eed;
    char seed_text[32];
    snprintf(seed_text, sizeof seed_text, "%" PRIu64, seed);
    int produced = peer_alloc(producer, "cuda:0", nbytes, seed_text, text, &reply);
    cr_assert_eq(field_of(reply, "devtype"), 2, "the producer's tensor is not on CUDA: %s",
                 reply);
    int imported = peer_import(consumer, text, false, &reply);
    cr_assert_eq(field_of(reply, "nbytes"), nbytes, "the consumer sees other nbytes: %s",
                 reply);
    cr_assert_eq(field_of(reply, "devtype"), 2, "the consumer's view is not CUDA: %s", reply);
    reply = call(consumer, "check %d %s", imported, seed_text);
    cr_assert(peer_starts_with(reply, "ok"), "the consumer read other bytes (%" PRIu64
              " bytes): %s", nbytes, reply);
    cr_assert_eq(field_of(reply, "checked"), nbytes, "checked %s", reply);
    call_ok(consumer, "release %d", imported);
    call_ok(producer, "release %d", produced);
    reply = call_ok(producer, "stats");
    cr_assert_eq(field_of(reply, "cuda_tensors"), 0, "the tensor was not freed: %s", reply);
    cr_assert_eq(field_of(reply, "cuda_bytes"), 0, "its bytes are still counted: %s", reply);
    quit_peer(consumer);
    quit_peer(producer);
}

Test(cuda_tensors, handoff_4KiB)
{
    handoff("h4k", 4 * KiB, NULL, NULL);
}

Test(cuda_tensors, handoff_1MiB)
{
    handoff("h1m", 1 * MiB, NULL, NULL);
}

Test(cuda_tensors, handoff_64MiB)
{
    handoff("h64m", 64 * MiB, NULL, NULL);
}

/* The suite's timeout covers it: a test of its own .timeout, run beside
 * another (--jobs=2), makes Criterion's runner leak 48 bytes, which fails
 * the ASan run. */
Test(cuda_tensors, handoff_1GiB)
{
    handoff("h1g", 1 * GiB, "cuda.block_bytes=1G", "cuda.pool_bytes=2G");
}

/* ------------------------------------------------------------------------ */
/* 2. One handle per block and process                                      */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, handle_opened_once_per_block)
{
    enum { TENSORS = 100, BLOCKS = 4 };
    const uint64_t nbytes = 64 * KiB; /* 32 to a 2 MiB block: 32+32+32+4 */
    const char *ns = make_namespace("once");
    rm_context *context = NULL;
    new_context(&context, ns, "cuda.block_bytes", "2M");
    rm_tensor *tensors[TENSORS];
    static char texts[TENSORS][TEXT_MAX];
    for (int i = 0; i < TENSORS; i++) {
        tensors[i] = alloc(context, "cuda:0", nbytes);
        fill(context, tensors[i], 1000 + (uint64_t)i);
        export_text(context, tensors[i], texts[i]);
    }
    cr_assert_eq(stats_of(context).cuda_blocks, BLOCKS, "the producer's tensors are not in %d "
                 "blocks", BLOCKS);
    peer *consumer = start_peer(ns, NULL);
    int ids[TENSORS];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < TENSORS; i++)
            ids[i] = peer_import(consumer, texts[i], false, NULL);
        for (int i = 0; i < TENSORS; i += 33) {
            const char *reply = call(consumer, "check %d %d", ids[i], 1000 + i);
            cr_assert(peer_starts_with(reply, "ok"), "tensor %d: %s", i, reply);
        }
        const char *reply = call_ok(consumer, "stats");
        cr_assert_eq(field_of(reply, "opened"), BLOCKS,
                     "round %d: %d tensors of %d blocks crossed, the consumer opened a "
                     "handle other than once per block: %s",
                     round, TENSORS, BLOCKS, reply);
        cr_assert_eq(field_of(reply, "hits"), (uint64_t)((round + 1) * TENSORS - BLOCKS),
                     "round %d: the other imports were to be cache hits: %s", round, reply);
        cr_assert_eq(field_of(reply, "open"), BLOCKS, "handles open now: %s", reply);
        long long opens = peer_counter(consumer, "cuIpcOpenMemHandle_v2");
        if (opens >= 0)
            cr_assert_eq(opens, BLOCKS, "round %d: the driver was asked to open %lld handles "
                         "for %d blocks", round, opens, BLOCKS);
        call_ok(consumer, "releaseall");
    }
    quit_peer(consumer);
    for (int i = 0; i < TENSORS; i++)
        release(context, tensors[i]);
    cr_assert_eq(stats_of(context).cuda_tensors, 0);
}

/* Two contexts of one process import from the same block: the handle is
 * opened once per process, not once per context. */
Test(cuda_tensors, handle_opened_once_per_process_across_contexts)
{
    const char *ns = make_namespace("twice");
    rm_context *context = NULL;
    new_context(&context, ns, "cuda.block_bytes", "2M");
    rm_tensor *tensor = alloc(context, "cuda:0", 64 * KiB);
    fill(context, tensor, 77);
    static char text[TEXT_MAX];
    export_text(context, tensor, text);
    peer *consumer = start_peer(ns, NULL);
    const char *reply = call(consumer, "importtwice %s", text);
    cr_assert(peer_starts_with(reply, "ok") && strstr(reply, "same=1") != NULL,
              "two contexts of one process must share the block's mapping: %s", reply);
    reply = call_ok(consumer, "stats");
    cr_assert_eq(field_of(reply, "opened"), 1, "the first context opened the handle: %s",
                 reply);
    long long opens = peer_counter(consumer, "cuIpcOpenMemHandle_v2");
    if (opens >= 0)
        cr_assert_eq(opens, 1, "the driver was asked to open the handle %lld times in one "
                     "process", opens);
    quit_peer(consumer);
    release(context, tensor);
    cr_assert_eq(stats_of(context).cuda_tensors, 0);
}

/* ------------------------------------------------------------------------ */
/* 3. An importer killed while it holds tensors                             */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, killed_importer_is_reclaimed)
{
    enum { TENSORS = 3 };
    const char *ns = make_namespace("kimp");
    rm_context *context = NULL;
    /* One block is the whole budget: a block-sized tensor later fits only
     * if the dead importer's holds and handle went. */
    new_context(&context, ns, "cuda.block_bytes", "2M", "cuda.pool_bytes", "2M");
    peer *importer = start_peer(ns, NULL);
    rm_tensor *tensors[TENSORS];
    for (int i = 0; i < TENSORS; i++) {
        tensors[i] = alloc(context, "cuda:0", 512 * KiB);
        fill(context, tensors[i], 30 + (uint64_t)i);
        char text[TEXT_MAX];
        export_text(context, tensors[i], text);
        int id = peer_import(importer, text, false, NULL);
        const char *reply = call(importer, "check %d %d", id, 30 + i);
        cr_assert(peer_starts_with(reply, "ok"), "tensor %d: %s", i, reply);
    }
    kill_peer(importer);
    for (int i = 0; i < TENSORS; i++)
        release(context, tensors[i]);
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.cuda_tensors, TENSORS,
                 "the dead importer's holds must keep the tensors until reclaim: %" PRIu64
                 " live",
                 stats.cuda_tensors);
    rm_tensor *too_big = NULL;
    rm_reclaim_report report = reclaim(context);
    cr_assert_eq(report.dead_holders, 1, "dead holders reported: %" PRIu64,
                 report.dead_holders);
    cr_assert_eq(report.holds_dropped, TENSORS, "holds dropped: %" PRIu64,
                 report.holds_dropped);
    cr_assert_eq(report.tensors_freed, TENSORS, "tensors freed: %" PRIu64,
                 report.tensors_freed);
    stats = stats_of(context);
    cr_assert_eq(stats.cuda_tensors, 0, "tensors still live after reclaim: %" PRIu64,
                 stats.cuda_tensors);
    cr_assert_eq(stats.cuda_bytes, 0, "bytes still counted after reclaim: %" PRIu64,
                 stats.cuda_bytes);
    cr_assert_eq(stats.dead_holders_reclaimed, 1);
    /* The whole budget again: only possible with the memory back. */
    expect_ok(try_alloc(context, "cuda:0", 2 * MiB, 0, &too_big), context,
              "a block-sized tensor after the reclaim");
    fill(context, too_big, 99);
    expect_bytes(context, too_big, 99);
    release(context, too_big);
}

/* ------------------------------------------------------------------------ */
/* 4. The exporter killed: error codes, never a crash                       */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, killed_exporter_gives_stale)
{
    const char *ns = make_namespace("kexp");
    rm_context *context = NULL;
    new_context(&context, ns);
    peer *exporter = start_peer(ns, NULL);
    char held_text[TEXT_MAX], later_text[TEXT_MAX];
    peer_alloc(exporter, "cuda:0", 1 * MiB, "41", held_text, NULL);
    peer_alloc(exporter, "cuda:0", 1 * MiB, "42", later_text, NULL);
    rm_tensor *held = NULL;
    expect_ok(vt->tensor_import_text(context, held_text, 0, &held), context, "import");
    expect_bytes(context, held, 41);
    kill_peer(exporter);

    expect_code(vt->tensor_wait(context, held, NULL, RM_TENSOR_WAIT_HOST),
                RM_E_STALE_DESCRIPTOR, context, "tensor_wait after the exporter died");
    cr_assert_neq(vt->context_last_error(context)[0], '\0', "tensor_wait gave no message");
    rm_dl_managed_tensor *managed = NULL;
    expect_code(vt->tensor_to_dlpack(context, held, &managed), RM_E_STALE_DESCRIPTOR, context,
                "tensor_to_dlpack after the exporter died");
    cr_assert_null(managed);
    rm_dl_managed_tensor_versioned *versioned = NULL;
    expect_code(vt->tensor_to_dlpack_versioned(context, held, &versioned),
                RM_E_STALE_DESCRIPTOR, context,
                "tensor_to_dlpack_versioned after the exporter died");
    rm_tensor *later = NULL;
    expect_code(vt->tensor_import_text(context, later_text, 0, &later), RM_E_STALE_DESCRIPTOR,
                context, "a new import after the exporter died");
    cr_assert_null(later);
    rm_tensor *again = NULL;
    expect_code(vt->tensor_import_text(context, held_text, 0, &again), RM_E_STALE_DESCRIPTOR,
                context, "a second import of the held tensor after the exporter died");

    release(context, held);
    rm_reclaim_report report = reclaim(context);
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.cuda_handles_open, 0,
                 "the dead exporter's handle is still open (%" PRIu64 " closed by reclaim)",
                 report.cuda_handles_closed);
    long long live = counter("@imports_live");
    if (live >= 0)
        cr_assert_eq(live, 0, "the driver still has %lld imports", live);
}

/* ------------------------------------------------------------------------ */
/* 5. A descriptor is a name, not a hold                                    */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, unimported_descriptor_pins_nothing)
{
    const char *ns = make_namespace("name");
    rm_context *context = NULL;
    new_context(&context, ns);
    rm_tensor *tensor = alloc(context, "cuda:0", 1 * MiB);
    char text[TEXT_MAX];
    export_text(context, tensor, text);
    cr_assert_eq(stats_of(context).cuda_tensors, 1);
    release(context, tensor);
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.cuda_tensors, 0,
                 "a descriptor nobody imported kept the tensor alive after its release");
    cr_assert_eq(stats.cuda_bytes, 0, "its bytes are still counted: %" PRIu64,
                 stats.cuda_bytes);
    rm_reclaim_report report = reclaim(context);
    cr_assert_eq(report.cuda_blocks_freed, 1, "the empty block was not freed (%" PRIu64 ")",
                 report.cuda_blocks_freed);
    cr_assert_eq(stats_of(context).cuda_blocks, 0);
    long long allocations = counter("@allocs_live");
    if (allocations >= 0)
        cr_assert_eq(allocations, 0, "the driver still has %lld allocations", allocations);

    peer *importer = start_peer(ns, NULL);
    const char *reply = call(importer, "import %s", text);
    cr_assert_eq(error_code_of(reply), RM_E_STALE_DESCRIPTOR,
                 "another process imported a released tensor's descriptor: %s", reply);
    quit_peer(importer);
}

/* ------------------------------------------------------------------------ */
/* 6. Device failures are error codes; CPU paths keep working               */
/* ------------------------------------------------------------------------ */

/* A device allocation fails with `expected` and a message that contains
 * `needle`; then a host tensor still crosses to a peer. */
static void expect_device_unusable(rm_context *context, const char *ns, const char *device,
                                   int32_t expected, const char *needle)
{
    rm_tensor *tensor = NULL;
    expect_code(try_alloc(context, device, 4 * KiB, 0, &tensor), expected, context,
                "a device allocation");
    cr_assert_null(tensor);
    const char *message = vt->context_last_error(context);
    cr_assert(needle == NULL || strstr(message, needle) != NULL,
              "the message does not say \"%s\": %s", needle, message);
    cr_log_info("%s: %s", vt->error_name(expected), message);
    peer *other = start_peer(ns, NULL);
    expect_host_handoff(context, other);
    quit_peer(other);
}

static void expect_cuda_info_status(rm_context *context, int32_t expected)
{
    rm_cuda_info info = RM_STRUCT_INIT(rm_cuda_info);
    expect_ok(vt->cuda_info(context, &info), context, "cuda_info");
    cr_assert_eq(info.status, expected, "cuda_info says %s, expected %s: %s",
                 vt->error_name(info.status), vt->error_name(expected), info.message);
    cr_assert_neq(info.message[0], '\0', "cuda_info gave no message");
}

Test(cuda_tensors, missing_driver_is_device_unavailable)
{
    const char *ns = make_namespace("nodrv");
    rm_context *context = NULL;
    new_context(&context, ns, "cuda.driver", "/nonexistent/rm-test/libcuda.so.1");
    expect_device_unusable(context, ns, "cuda:0", RM_E_DEVICE_UNAVAILABLE, "/nonexistent");
    expect_cuda_info_status(context, RM_E_DEVICE_UNAVAILABLE);
    /* Importing a device descriptor needs the driver too. */
    peer *exporter = start_peer(ns, NULL);
    char text[TEXT_MAX];
    peer_alloc(exporter, "cuda:0", 4 * KiB, "5", text, NULL);
    rm_tensor *tensor = NULL;
    expect_code(vt->tensor_import_text(context, text, 0, &tensor), RM_E_DEVICE_UNAVAILABLE,
                context, "importing a device tensor without a driver");
    quit_peer(exporter);
}

Test(cuda_tensors, stub_driver_is_device_unavailable)
{
    fake_only("FAKE_CUDA_STUB");
    setenv("FAKE_CUDA_STUB", "1", 1);
    const char *ns = make_namespace("stub");
    rm_context *context = NULL;
    new_context(&context, ns);
    expect_device_unusable(context, ns, "cuda:0", RM_E_DEVICE_UNAVAILABLE, "stub");
    expect_cuda_info_status(context, RM_E_DEVICE_UNAVAILABLE);
}

Test(cuda_tensors, no_device_is_device_unavailable)
{
    fake_only("FAKE_CUDA_DEVICES");
    setenv("FAKE_CUDA_DEVICES", "0", 1);
    const char *ns = make_namespace("nodev");
    rm_context *context = NULL;
    new_context(&context, ns);
    expect_device_unusable(context, ns, "cuda:0", RM_E_DEVICE_UNAVAILABLE, NULL);
    expect_cuda_info_status(context, RM_E_DEVICE_UNAVAILABLE);
}

Test(cuda_tensors, failed_open_leaks_nothing_and_next_import_works)
{
    fake_only("FAKE_CUDA_FAIL");
    const char *ns = make_namespace("fopen");
    peer *exporter = start_peer(ns, NULL);
    char text[TEXT_MAX];
    int exported = peer_alloc(exporter, "cuda:0", 256 * KiB, "8", text, NULL);
    setenv("FAKE_CUDA_FAIL", "cuIpcOpenMemHandle_v2:1", 1);
    rm_context *context = NULL;
    new_context(&context, ns);
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_import_text(context, text, 0, &tensor);
    cr_assert_lt(rc, 0, "the import whose open failed answered %s", vt->error_name(rc));
    cr_assert_null(tensor);
    cr_log_info("failed open: %s: %s", vt->error_name(rc), vt->context_last_error(context));
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.cuda_handles_open, 0, "a failed open left a handle counted open");
    cr_assert_eq(stats.cuda_handles_opened, 0);
    cr_assert_eq(stats.imports, 0);
    cr_assert_eq(counter("@imports_live"), 0, "a failed open left a mapping");

    expect_ok(vt->tensor_import_text(context, text, 0, &tensor), context,
              "the import after a failed open");
    expect_bytes(context, tensor, 8);
    cr_assert_eq(stats_of(context).cuda_handles_opened, 1);
    release(context, tensor);
    /* No hold of the failed import is left: the exporter frees the tensor
     * as soon as it and this (successful) importer released it. */
    call_ok(exporter, "release %d", exported);
    const char *reply = call_ok(exporter, "stats");
    cr_assert_eq(field_of(reply, "cuda_tensors"), 0,
                 "the failed import left a hold on the exporter's tensor: %s", reply);
    expect_host_handoff(context, exporter);
    /* Nor an opener mark: once this context closed its (cached) handle,
     * the exporter may free the block. */
    destroy_context(context);
    reply = call_ok(exporter, "reclaim");
    cr_assert_eq(field_of(reply, "blocks_freed"), 1,
                 "the exporter cannot free the block: an importer is still marked as having "
                 "it open: %s",
                 reply);
    quit_peer(exporter);
}

Test(cuda_tensors, failed_device_allocation_is_an_error_code)
{
    fake_only("FAKE_CUDA_FAIL");
    setenv("FAKE_CUDA_FAIL", "cuMemAlloc_v2:1", 1);
    const char *ns = make_namespace("falloc");
    rm_context *context = NULL;
    new_context(&context, ns);
    rm_tensor *tensor = NULL;
    int32_t rc = try_alloc(context, "cuda:0", 4 * KiB, 0, &tensor);
    cr_assert_lt(rc, 0, "a failed cuMemAlloc_v2 answered %s", vt->error_name(rc));
    cr_assert_null(tensor);
    cr_assert_neq(vt->context_last_error(context)[0], '\0');
    cr_log_info("failed cuMemAlloc_v2: %s: %s", vt->error_name(rc),
                vt->context_last_error(context));
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.cuda_tensors, 0);
    cr_assert_eq(stats.cuda_blocks, 0, "a failed allocation left a block counted");
    cr_assert_eq(stats.cuda_block_bytes, 0);
    tensor = alloc(context, "cuda:0", 4 * KiB);
    fill(context, tensor, 3);
    expect_bytes(context, tensor, 3);
    release(context, tensor);
    peer *other = start_peer(ns, NULL);
    expect_host_handoff(context, other);
    quit_peer(other);
}

Test(cuda_tensors, missing_device_is_invalid_argument)
{
    const char *ns = make_namespace("dev7");
    rm_context *context = NULL;
    new_context(&context, ns);
    rm_cuda_info info = RM_STRUCT_INIT(rm_cuda_info);
    expect_ok(vt->cuda_info(context, &info), context, "cuda_info");
    expect_code(info.status, RM_OK, context, "cuda_info's status");
    /* cuda:7 with the fake's one device; past the last device on a GPU. */
    char device[16];
    snprintf(device, sizeof device, "cuda:%u", info.device_count > 7 ? info.device_count : 7);
    expect_device_unusable(context, ns, device, RM_E_INVALID_ARGUMENT, "does not exist");
}

Test(cuda_tensors, device_tensors_need_the_feature)
{
    const char *ns = make_namespace("nofeat");
    rm_context *context = NULL;
    new_context(&context, ns, "features", "model-registry,shared-memory");
    void *no_pointer = (void *)(uintptr_t)0x1000;
    rm_tensor_spec spec = byte_spec("cuda:0", 4 * KiB, 0);
    rm_tensor *tensor = NULL;
    expect_code(vt->tensor_wrap_device(context, &spec, no_pointer, NULL, NULL, &tensor),
                RM_E_FEATURE_DISABLED, context, "tensor_wrap_device without cuda-ipc");
    expect_device_unusable(context, ns, "cuda:0", RM_E_FEATURE_DISABLED, "cuda-ipc");
}

/* ------------------------------------------------------------------------ */
/* 7. Fork guard                                                            */
/* ------------------------------------------------------------------------ */

typedef struct fork_case {
    rm_context *context;
    rm_tensor *tensor;
    const char *text;
    const char *ns;
    long long calls_before;
} fork_case;

static void child_uses_parent_tensors(void *arg)
{
    fork_case *c = arg;
    rm_tensor_spec spec = byte_spec("cuda:0", 4 * KiB, 0);
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_allocate(c->context, &spec, &tensor);
    CHILD_EXPECT(rc == RM_E_FORKED, "device tensor_allocate: %s", vt->error_name(rc));
    rc = vt->tensor_record(c->context, c->tensor, NULL);
    CHILD_EXPECT(rc == RM_E_FORKED, "tensor_record: %s", vt->error_name(rc));
    rc = vt->tensor_wait(c->context, c->tensor, NULL, RM_TENSOR_WAIT_HOST);
    CHILD_EXPECT(rc == RM_E_FORKED, "tensor_wait: %s", vt->error_name(rc));
    rm_dl_managed_tensor *managed = NULL;
    rc = vt->tensor_to_dlpack(c->context, c->tensor, &managed);
    CHILD_EXPECT(rc == RM_E_FORKED, "tensor_to_dlpack: %s", vt->error_name(rc));
    rc = vt->tensor_import_text(c->context, c->text, 0, &tensor);
    CHILD_EXPECT(rc == RM_E_FORKED, "tensor_import_text: %s", vt->error_name(rc));
    rc = vt->tensor_wrap_device(c->context, &spec, (void *)(uintptr_t)0x1000, NULL, NULL,
                                &tensor);
    CHILD_EXPECT(rc == RM_E_FORKED, "tensor_wrap_device: %s", vt->error_name(rc));
    rm_cuda_info info = RM_STRUCT_INIT(rm_cuda_info);
    rc = vt->cuda_info(c->context, &info);
    CHILD_EXPECT(rc == RM_E_FORKED, "cuda_info: %s", vt->error_name(rc));
    rc = vt->tensor_release(c->context, c->tensor);
    CHILD_EXPECT(rc == RM_E_FORKED, "tensor_release: %s", vt->error_name(rc));
    /* A context of its own does not make CUDA usable after fork(). */
    rm_context *own = NULL;
    const char *pairs[] = {"shm.namespace", c->ns, "cuda.driver", td_library(), NULL};
    if (!td_is_fake())
        pairs[2] = NULL;
    rc = fixture_context(&own, pairs);
    CHILD_EXPECT(rc == RM_OK, "a context in the child: %s", vt->error_name(rc));
    if (rc == RM_OK) {
        rc = vt->tensor_allocate(own, &spec, &tensor);
        CHILD_EXPECT(rc == RM_E_FORKED, "a device tensor of the child's own context: %s",
                     vt->error_name(rc));
        vt->context_destroy(own);
    }
    long long after_fork = td_counter_loaded("@after_fork");
    long long calls = td_counter_loaded("*");
    if (after_fork >= 0) {
        CHILD_EXPECT(after_fork == 0, "the child made %lld CUDA calls", after_fork);
        CHILD_EXPECT(calls == c->calls_before, "the fake counted %lld calls, %lld before fork",
                     calls, c->calls_before);
    }
}

Test(cuda_tensors, forked_child_makes_no_cuda_call)
{
    const char *ns = make_namespace("fork");
    rm_context *context = NULL;
    new_context(&context, ns);
    rm_tensor *tensor = alloc(context, "cuda:0", 64 * KiB);
    fill(context, tensor, 12);
    expect_ok(vt->tensor_record(context, tensor, NULL), context, "tensor_record");
    char text[TEXT_MAX];
    export_text(context, tensor, text);
    fork_case c = {.context = context,
                   .tensor = tensor,
                   .text = text,
                   .ns = ns,
                   .calls_before = counter("*")};
    run_in_child(child_uses_parent_tensors, &c, "fork guard");
    /* The parent's tensors are untouched by the child. */
    expect_bytes(context, tensor, 12);
    expect_ok(vt->tensor_wait(context, tensor, NULL, RM_TENSOR_WAIT_HOST), context,
              "tensor_wait in the parent");
    release(context, tensor);
    cr_assert_eq(stats_of(context).cuda_tensors, 0);
}

/* ------------------------------------------------------------------------ */
/* 8. 1000 cycles leak nothing                                              */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, thousand_cycles_leak_nothing)
{
    enum { CYCLES = 1000 };
    const char *ns = make_namespace("cyc");
    rm_context *context = NULL;
    new_context(&context, ns, "cuda.block_bytes", "2M");
    peer *consumer = start_peer(ns, NULL);
    char own_objects[64], tables[64], peer_objects[64];
    snprintf(own_objects, sizeof own_objects, "fakecu.%ld.", (long)getpid());
    snprintf(tables, sizeof tables, "rmcu.%s.", ns);
    snprintf(peer_objects, sizeof peer_objects, "fakecu.%ld.", (long)consumer->pid);
    long fds = 0, objects = 0, table_count = 0, peer_fds = 0, peer_object_count = 0;
    for (int cycle = 0; cycle <= CYCLES; cycle++) {
        rm_tensor *tensor = alloc(context, "cuda:0", 4 * KiB);
        fill(context, tensor, (uint64_t)cycle);
        char text[TEXT_MAX];
        export_text(context, tensor, text);
        const char *reply = call(consumer, "importcheck %s %d", text, cycle);
        cr_assert_str_eq(reply, "ok", "cycle %d: %s", cycle, reply);
        release(context, tensor);
        if (cycle == 0) {
            /* After one cycle: the driver, the table and the handle exist. */
            fds = td_open_fds();
            objects = td_shm_count(own_objects);
            table_count = td_shm_count(tables);
            peer_fds = number_of(call_ok(consumer, "fds"));
            peer_object_count = number_of(call_ok(consumer, "shm %s", peer_objects));
        }
        if (cycle % 100 == 0) {
            reply = call_ok(consumer, "stats");
            cr_assert_leq(field_of(reply, "open"), 1,
                          "cycle %d: the consumer holds more handles than blocks: %s", cycle,
                          reply);
        }
    }
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.cuda_tensors, 0, "tensors left after %d cycles: %" PRIu64, CYCLES,
                 stats.cuda_tensors);
    cr_assert_eq(stats.cuda_blocks, 1, "blocks after %d cycles: %" PRIu64, CYCLES,
                 stats.cuda_blocks);
    cr_assert_eq(td_open_fds(), fds, "descriptors here: %ld after the first cycle, %ld after "
                 "%d", fds, td_open_fds(), CYCLES);
    cr_assert_eq(td_shm_count(own_objects), objects, "fake device objects here: %ld, then %ld",
                 objects, td_shm_count(own_objects));
    cr_assert_eq(td_shm_count(tables), table_count, "device tables: %ld, then %ld",
                 table_count, td_shm_count(tables));
    cr_assert_eq(number_of(call_ok(consumer, "fds")), peer_fds,
                 "descriptors in the consumer grew over %d cycles", CYCLES);
    cr_assert_eq(number_of(call_ok(consumer, "shm %s", peer_objects)), peer_object_count,
                 "fake objects of the consumer grew over %d cycles", CYCLES);
    const char *reply = call_ok(consumer, "stats");
    cr_assert_eq(field_of(reply, "opened"), 1, "the consumer opened the block's handle more "
                 "than once: %s", reply);
    cr_assert_leq(field_of(reply, "open"), 1, "%s", reply);
    long long live = peer_counter(consumer, "@imports_live");
    if (live >= 0)
        cr_assert_leq(live, 1, "the consumer's driver has %lld imports", live);
    quit_peer(consumer);
    rm_reclaim_report report = reclaim(context);
    cr_assert_eq(report.cuda_blocks_freed, 1, "the block was not freed once the consumer left");
    long long allocations = counter("@allocs_live");
    if (allocations >= 0)
        cr_assert_eq(allocations, 0, "the driver still has %lld allocations", allocations);
}

/* ------------------------------------------------------------------------ */
/* 9. Processes that list the devices in different orders                   */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, device_order_differs_between_processes)
{
    fake_only("FAKE_CUDA_UUIDS");
    char a[48], b[48], ab[100], ba[100];
    snprintf(a, sizeof a, "GPU-aaaaaaaa-%04x-4000-8000-000000000001", (unsigned)getpid() & 0xffff);
    snprintf(b, sizeof b, "GPU-bbbbbbbb-%04x-4000-8000-000000000002", (unsigned)getpid() & 0xffff);
    snprintf(ab, sizeof ab, "%s,%s", a, b);
    snprintf(ba, sizeof ba, "%s,%s", b, a);
    uint8_t b_uuid[16];
    cr_assert_eq(fake_cuda_parse_uuid(b, b_uuid), 0);
    char b_hex[33];
    td_hex16(b_uuid, b_hex);

    const char *ns = make_namespace("order");
    setenv("FAKE_CUDA_UUIDS", ab, 1);
    peer *producer = start_peer(ns, NULL);
    setenv("FAKE_CUDA_UUIDS", ba, 1);
    char text[TEXT_MAX];
    const char *reply = NULL;
    peer_alloc(producer, "cuda:1", 1 * MiB, "91", text, &reply);
    cr_assert_eq(field_of(reply, "devid"), 1, "the producer's tensor is not on its cuda:1: %s",
                 reply);
    cr_assert(strstr(reply, b_hex) != NULL, "the producer's cuda:1 is not B (%s): %s", b_hex,
              reply);

    rm_context *context = NULL;
    new_context(&context, ns);
    rm_tensor *tensor = NULL;
    expect_ok(vt->tensor_import_text(context, text, 0, &tensor), context, "import");
    rm_tensor_info info = info_of(context, tensor);
    cr_assert(info.device.device_type == 2 && info.device.device_id == 0,
              "the consumer sees B as cuda:0, the tensor says {%d, %d}",
              info.device.device_type, info.device.device_id);
    cr_assert_arr_eq(info.device_uuid, b_uuid, 16, "the consumer's device_uuid is not B's");
    cr_assert_eq(info.flags & RM_TENSOR_WRITABLE, 0, "a read-only import is writable");
    expect_bytes(context, tensor, 91);

    rm_dl_managed_tensor_versioned *versioned = NULL;
    expect_ok(vt->tensor_to_dlpack_versioned(context, tensor, &versioned), context,
              "tensor_to_dlpack_versioned");
    cr_assert_eq(versioned->dl_tensor.device.device_type, 2, "DLPack device type %d, not kDLCUDA",
                 versioned->dl_tensor.device.device_type);
    cr_assert_eq(versioned->dl_tensor.device.device_id, 0, "DLPack device id %d, not 0",
                 versioned->dl_tensor.device.device_id);
    cr_assert(versioned->flags & RM_DLPACK_FLAG_READ_ONLY,
              "a read-only import's DLPack export lacks RM_DLPACK_FLAG_READ_ONLY");
    cr_assert_eq(versioned->dl_tensor.data, info.data);
    versioned->deleter(versioned);
    rm_dl_managed_tensor *managed = NULL;
    expect_ok(vt->tensor_to_dlpack(context, tensor, &managed), context, "tensor_to_dlpack");
    cr_assert(managed->dl_tensor.device.device_type == 2 &&
              managed->dl_tensor.device.device_id == 0,
              "legacy DLPack device {%d, %d}", managed->dl_tensor.device.device_type,
              managed->dl_tensor.device.device_id);
    managed->deleter(managed);

    rm_tensor *writable = NULL;
    expect_ok(vt->tensor_import_text(context, text, RM_TENSOR_IMPORT_WRITABLE, &writable),
              context, "writable import");
    cr_assert_neq(info_of(context, writable).flags & RM_TENSOR_WRITABLE, 0);
    expect_ok(vt->tensor_to_dlpack_versioned(context, writable, &versioned), context,
              "tensor_to_dlpack_versioned (writable)");
    cr_assert_eq(versioned->flags & RM_DLPACK_FLAG_READ_ONLY, 0,
                 "a writable import's DLPack export is read-only");
    versioned->deleter(versioned);
    release(context, writable);
    release(context, tensor);
    quit_peer(producer);
}

/* ------------------------------------------------------------------------ */
/* 10. tensor_wrap_device                                                   */
/* ------------------------------------------------------------------------ */

static atomic_int released_calls;
static void *released_pointer;
static void *released_user;

static void on_released(void *user, void *device_pointer)
{
    atomic_fetch_add(&released_calls, 1);
    released_user = user;
    released_pointer = device_pointer;
}

Test(cuda_tensors, wrapped_device_memory_crosses_and_is_released_once)
{
    const char *ns = make_namespace("wrap");
    rm_context *context = NULL;
    new_context(&context, ns);
    td_driver *d = driver();
    /* A whole 2 MiB granule: a real driver reports exactly this size. */
    const size_t allocation = 2 * MiB;
    const uint64_t offset = 4096 + 256, nbytes = 64 * KiB;
    td_deviceptr base = 0;
    cr_assert_eq(td_alloc(d, 0, allocation, &base), 0, "%s", d->why);
    cr_assert_eq(td_fill(d, 0, base + offset, nbytes, 21), 0, "%s", d->why);
    void *pointer = (void *)(uintptr_t)(base + offset);
    int user_token = 0;

    rm_tensor_spec spec = byte_spec("cuda:0", nbytes, 0);
    rm_tensor *wrapped = NULL;
    expect_ok(vt->tensor_wrap_device(context, &spec, pointer, on_released, &user_token,
                                     &wrapped),
              context, "tensor_wrap_device");
    rm_tensor_info info = info_of(context, wrapped);
    cr_assert_eq(info.data, pointer, "the wrapped tensor's data is not the pointer");
    cr_assert(info.device.device_type == 2 && info.device.device_id == 0);
    cr_assert(info.flags & RM_TENSOR_SHAREABLE);
    char text[TEXT_MAX];
    export_text(context, wrapped, text);

    peer *consumer = start_peer(ns, NULL);
    int id = peer_import(consumer, text, false, NULL);
    const char *reply = call(consumer, "check %d 21", id);
    cr_assert(peer_starts_with(reply, "ok"), "the consumer read other bytes: %s", reply);

    release(context, wrapped);
    for (int i = 0; i < 3; i++)
        (void)stats_of(context);
    (void)reclaim(context);
    cr_assert_eq(atomic_load(&released_calls), 0,
                 "`released` ran while the consumer still held the tensor");
    call_ok(consumer, "release %d", id);
    reply = call_ok(consumer, "stats");
    cr_assert_eq(field_of(reply, "open"), 0,
                 "the consumer kept a borrowed block's handle open: %s", reply);
    (void)stats_of(context);
    cr_assert_eq(atomic_load(&released_calls), 1,
                 "`released` ran %d times after the consumer released", released_calls);
    cr_assert_eq(released_pointer, pointer, "`released` got another pointer");
    cr_assert_eq(released_user, &user_token, "`released` got another user");
    (void)reclaim(context);
    (void)stats_of(context);
    cr_assert_eq(atomic_load(&released_calls), 1, "`released` ran again");
    cr_assert_eq(stats_of(context).cuda_tensors, 0);

    /* Refused: a host pointer, and a span past the allocation's end. */
    uint8_t *host = malloc(nbytes);
    cr_assert_not_null(host);
    rm_tensor *refused = NULL;
    expect_code(vt->tensor_wrap_device(context, &spec, host, on_released, NULL, &refused),
                RM_E_INVALID_ARGUMENT, context, "wrapping a host pointer");
    cr_assert_null(refused);
    free(host);
    void *near_end = (void *)(uintptr_t)(base + allocation - nbytes / 2);
    expect_code(vt->tensor_wrap_device(context, &spec, near_end, on_released, NULL, &refused),
                RM_E_INVALID_ARGUMENT, context, "wrapping a span past the allocation");
    cr_assert_null(refused);
    rm_tensor_spec aligned = spec;
    aligned.alignment = 256;
    expect_code(vt->tensor_wrap_device(context, &aligned, pointer, NULL, NULL, &refused),
                RM_E_INVALID_ARGUMENT, context, "wrapping with an alignment");
    (void)stats_of(context);
    cr_assert_eq(atomic_load(&released_calls), 1, "a refused wrap called `released`");
    quit_peer(consumer);
    cr_assert_eq(td_free(d, 0, base), 0, "%s", d->why);
}

Test(cuda_tensors, wrapped_memory_is_released_after_a_killed_consumer)
{
    const char *ns = make_namespace("wrapk");
    rm_context *context = NULL;
    new_context(&context, ns);
    td_driver *d = driver();
    td_deviceptr base = 0;
    cr_assert_eq(td_alloc(d, 0, 2 * MiB, &base), 0, "%s", d->why);
    cr_assert_eq(td_fill(d, 0, base, 2 * MiB, 22), 0, "%s", d->why);
    rm_tensor_spec spec = byte_spec("cuda:0", 2 * MiB, 0);
    rm_tensor *wrapped = NULL;
    int user_token = 0;
    expect_ok(vt->tensor_wrap_device(context, &spec, (void *)(uintptr_t)base, on_released,
                                     &user_token, &wrapped),
              context, "tensor_wrap_device");
    char text[TEXT_MAX];
    export_text(context, wrapped, text);
    peer *consumer = start_peer(ns, NULL);
    int id = peer_import(consumer, text, false, NULL);
    const char *reply = call(consumer, "check %d 22", id);
    cr_assert(peer_starts_with(reply, "ok"), "the consumer read other bytes: %s", reply);
    kill_peer(consumer);
    release(context, wrapped);
    (void)stats_of(context);
    cr_assert_eq(atomic_load(&released_calls), 0,
                 "`released` ran before the dead consumer's hold was reclaimed");
    rm_reclaim_report report = reclaim(context);
    cr_assert_eq(report.dead_holders, 1);
    (void)stats_of(context);
    cr_assert_eq(atomic_load(&released_calls), 1,
                 "`released` ran %d times once the dead consumer was reclaimed",
                 released_calls);
    cr_assert_eq(released_pointer, (void *)(uintptr_t)base);
    cr_assert_eq(td_free(d, 0, base), 0, "%s", d->why);
}

/* ------------------------------------------------------------------------ */
/* 11. Ordering: record and wait                                            */
/* ------------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    return peer_now_ms();
}

Test(cuda_tensors, wait_orders_after_the_record)
{
    const char *ns = make_namespace("wait");
    enum { DELAY_MS = 300 };
    if (td_is_fake())
        setenv("FAKE_CUDA_EVENT_DELAY_MS", "300", 1);
    peer *producer = start_peer(ns, NULL);
    unsetenv("FAKE_CUDA_EVENT_DELAY_MS");
    rm_context *context = NULL;
    new_context(&context, ns);
    char recorded_text[TEXT_MAX], plain_text[TEXT_MAX];
    int recorded_id = peer_alloc(producer, "cuda:0", 64 * KiB, "61", recorded_text, NULL);
    peer_alloc(producer, "cuda:0", 64 * KiB, "62", plain_text, NULL);
    rm_tensor *plain = NULL;
    expect_ok(vt->tensor_import_text(context, plain_text, 0, &plain), context, "import");
    uint64_t start = now_ms();
    expect_ok(vt->tensor_wait(context, plain, NULL, RM_TENSOR_WAIT_HOST), context,
              "waiting for a tensor never recorded");
    uint64_t plain_ms = now_ms() - start;
    expect_ok(vt->tensor_wait(context, plain, NULL, 0), context,
              "a stream wait for a tensor never recorded");

    uint64_t recorded_at = now_ms();
    call_ok(producer, "record %d", recorded_id);
    rm_tensor *recorded = NULL;
    expect_ok(vt->tensor_import_text(context, recorded_text, 0, &recorded), context, "import");
    start = now_ms();
    expect_ok(vt->tensor_wait(context, recorded, NULL, RM_TENSOR_WAIT_HOST), context,
              "tensor_wait(RM_TENSOR_WAIT_HOST)");
    uint64_t end = now_ms();
    expect_bytes(context, recorded, 61);
    if (td_is_fake()) {
        cr_assert_lt(plain_ms, 100, "waiting for nothing took %" PRIu64 " ms", plain_ms);
        cr_assert_geq(end - recorded_at, DELAY_MS - 5,
                      "the wait returned %" PRIu64 " ms after the record, before the "
                      "recorded work (%d ms) was done",
                      end - recorded_at, DELAY_MS);
        cr_assert_geq(end - start, DELAY_MS / 2,
                      "the wait itself took %" PRIu64 " ms: it did not wait", end - start);
        start = now_ms();
        expect_ok(vt->tensor_wait(context, recorded, NULL, RM_TENSOR_WAIT_HOST), context,
                  "a second wait");
        cr_assert_lt(now_ms() - start, 100, "a wait for work already done took %" PRIu64 " ms",
                     now_ms() - start);
    } else {
        cr_log_info("real driver: wait timings not checked (no delay knob)");
    }
    expect_ok(vt->tensor_wait(context, recorded, NULL, 0), context, "a stream wait");
    expect_code(vt->tensor_record(context, recorded, NULL), RM_E_INVALID_ARGUMENT, context,
                "tensor_record on an imported tensor");
    expect_code(vt->tensor_wait(context, recorded, NULL, (uint64_t)1 << 7),
                RM_E_INVALID_ARGUMENT, context, "tensor_wait with an unknown flag");
    /* Bad arguments of the 1.3 members: a code, and a message naming them. */
    expect_code(vt->tensor_record(context, NULL, NULL), RM_E_INVALID_ARGUMENT, context,
                "tensor_record of a NULL tensor");
    cr_expect(strstr(vt->context_last_error(context), "tensor_record") != NULL, "%s",
              vt->context_last_error(context));
    expect_code(vt->tensor_wait(context, NULL, NULL, 0), RM_E_INVALID_ARGUMENT, context,
                "tensor_wait of a NULL tensor");
    cr_expect(strstr(vt->context_last_error(context), "tensor_wait") != NULL, "%s",
              vt->context_last_error(context));
    expect_code(vt->cuda_info(context, NULL), RM_E_INVALID_ARGUMENT, context,
                "cuda_info without a struct");
    cr_expect(strstr(vt->context_last_error(context), "cuda_info") != NULL, "%s",
              vt->context_last_error(context));
    rm_cuda_info small = RM_STRUCT_INIT(rm_cuda_info);
    small.struct_size = (uint32_t)offsetof(rm_cuda_info, devices);
    expect_code(vt->cuda_info(context, &small), RM_E_STRUCT_SIZE, context,
                "cuda_info with a struct below the 1.3 size");
    cr_expect(strstr(vt->context_last_error(context), "rm_cuda_info") != NULL, "%s",
              vt->context_last_error(context));
    rm_tensor *host = alloc(context, "cpu", 4 * KiB);
    expect_ok(vt->tensor_record(context, host, NULL), context, "tensor_record of a host tensor");
    expect_ok(vt->tensor_wait(context, host, NULL, RM_TENSOR_WAIT_HOST), context,
              "tensor_wait of a host tensor");
    release(context, host);
    release(context, recorded);
    release(context, plain);
    quit_peer(producer);
}

/* ------------------------------------------------------------------------ */
/* 12. Two contexts of one process                                          */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, same_process_import_is_the_exporters_pointer)
{
    const char *ns = make_namespace("same");
    rm_context *exporter = NULL, *importer = NULL;
    new_context(&exporter, ns);
    new_context(&importer, ns);
    rm_tensor *tensor = alloc(exporter, "cuda:0", 1 * MiB);
    fill(exporter, tensor, 71);
    char text[TEXT_MAX];
    export_text(exporter, tensor, text);
    rm_tensor *imported = NULL;
    expect_ok(vt->tensor_import_text(importer, text, 0, &imported), importer,
              "an import from another context of this process");
    rm_tensor_info own = info_of(exporter, tensor), seen = info_of(importer, imported);
    cr_assert_eq(seen.data, own.data, "the importer got %p, not the exporter's pointer %p",
                 seen.data, own.data);
    cr_assert(seen.device.device_type == 2 && seen.device.device_id == 0);
    cr_assert_arr_eq(seen.device_uuid, own.device_uuid, 16);
    expect_bytes(importer, imported, 71);
    cr_assert_eq(stats_of(importer).cuda_handles_opened, 0,
                 "the importer opened the exporter's handle in its own process");
    long long opens = counter("cuIpcOpenMemHandle_v2");
    if (opens >= 0)
        cr_assert_eq(opens, 0, "the driver was asked to open a handle %lld times", opens);
    release(importer, imported);
    release(exporter, tensor);
    cr_assert_eq(stats_of(exporter).cuda_tensors, 0);
}

/* ------------------------------------------------------------------------ */
/* 13. The exporting context destroyed while another process reads          */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, destroyed_exporter_context_outlives_its_importers)
{
    const char *ns = make_namespace("orph");
    rm_context *exporter = NULL, *other = NULL;
    new_context(&exporter, ns);
    new_context(&other, ns);
    rm_tensor *tensor = alloc(exporter, "cuda:0", 1 * MiB);
    fill(exporter, tensor, 81);
    char text[TEXT_MAX];
    export_text(exporter, tensor, text);
    peer *importer = start_peer(ns, NULL);
    int id = peer_import(importer, text, false, NULL);
    const char *reply = call(importer, "check %d 81", id);
    cr_assert(peer_starts_with(reply, "ok"), "before the destroy: %s", reply);

    release(exporter, tensor);
    destroy_context(exporter);
    cr_assert_eq(stats_of(other).cuda_blocks_orphaned, 1,
                 "the destroyed context's block is not kept for its importer");
    reply = call(importer, "check %d 81", id);
    cr_assert(peer_starts_with(reply, "ok"),
              "the importer read other bytes after the exporter's context was destroyed: %s",
              reply);
    (void)reclaim(other);
    cr_assert_eq(stats_of(other).cuda_blocks_orphaned, 1,
                 "the block was freed while the importer still held it");
    call_ok(importer, "release %d", id);

    rm_reclaim_report report = reclaim(other);
    cr_assert_eq(stats_of(other).cuda_blocks_orphaned, 0,
                 "the orphaned block is still kept after its importer released it");
    cr_assert_geq(report.cuda_blocks_freed, 1, "reclaim reported %" PRIu64 " blocks freed",
                  report.cuda_blocks_freed);
    long long allocations = counter("@allocs_live");
    if (allocations >= 0)
        cr_assert_eq(allocations, 0, "the driver still has %lld allocations here",
                     allocations);
    char prefix[96];
    snprintf(prefix, sizeof prefix, "rmcu.%s.%ld.", ns, (long)getpid());
    cr_assert_eq(td_shm_count(prefix), 0, "the destroyed context's device table is left");
    quit_peer(importer);
}

/* ------------------------------------------------------------------------ */
/* 14. shm_list, cuda.pool_bytes, shm.session_quota                          */
/* ------------------------------------------------------------------------ */

Test(cuda_tensors, shm_list_shows_the_device_table)
{
    const char *ns = make_namespace("list");
    rm_context *context = NULL, *lister = NULL;
    new_context(&context, ns, "cuda.block_bytes", "4M", "cuda.pool_bytes", "64M");
    new_context(&lister, ns);
    rm_tensor *first = alloc(context, "cuda:0", 100 * KiB);
    rm_tensor *second = alloc(context, "cuda:0", 300 * KiB);
    rm_shm_pool_info rows[16];
    uint32_t count = 0;
    expect_ok(vt->shm_list(lister, rows, sizeof rows[0], 16, &count), lister, "shm_list");
    const rm_shm_pool_info *row = NULL;
    for (uint32_t i = 0; i < count; i++)
        if (rows[i].memory == RM_MEMORY_CUDA && rows[i].owner_pid == (uint32_t)getpid())
            row = &rows[i];
    cr_assert_not_null(row, "shm_list shows no RM_MEMORY_CUDA row of this process (%u rows)",
                       count);
    cr_assert_eq(row->live_tensors, 2, "live tensors %" PRIu64, row->live_tensors);
    cr_assert_eq(row->live_bytes, 400 * KiB, "live bytes %" PRIu64, row->live_bytes);
    cr_assert_eq(row->device_blocks, 1, "device blocks %u", row->device_blocks);
    cr_assert_eq(row->committed_bytes, 4 * MiB, "committed (block) bytes %" PRIu64,
                 row->committed_bytes);
    cr_assert_eq(row->pool_bytes, 64 * MiB, "pool_bytes %" PRIu64, row->pool_bytes);
    cr_assert_eq(row->owner_alive, 1);
    cr_assert_eq(row->readable, 1);
    cr_assert(strstr(row->name, "rmcu.") != NULL, "the row's name: %s", row->name);
    release(context, first);
    release(context, second);
}

Test(cuda_tensors, pool_bytes_exhaustion_is_no_memory)
{
    const char *ns = make_namespace("pool");
    rm_context *context = NULL;
    new_context(&context, ns, "cuda.block_bytes", "2M", "cuda.pool_bytes", "4M");
    rm_tensor *a = alloc(context, "cuda:0", 2 * MiB);
    rm_tensor *b = alloc(context, "cuda:0", 2 * MiB);
    rm_tensor *c = NULL;
    expect_code(try_alloc(context, "cuda:0", 4 * KiB, 0, &c), RM_E_NO_MEMORY, context,
                "an allocation past cuda.pool_bytes");
    cr_assert_null(c);
    cr_assert(strstr(vt->context_last_error(context), "cuda.pool_bytes") != NULL,
              "the message does not name cuda.pool_bytes: %s", vt->context_last_error(context));
    expect_code(try_alloc(context, "cuda:0", 8 * MiB, 0, &c), RM_E_NO_MEMORY, context,
                "a tensor larger than cuda.pool_bytes");
    release(context, a);
    c = alloc(context, "cuda:0", 4 * KiB); /* room again */
    release(context, c);
    release(context, b);
    cr_assert_eq(stats_of(context).cuda_tensors, 0);
}

Test(cuda_tensors, pool_bytes_drops_dead_importers_before_refusing)
{
    const char *ns = make_namespace("pooldead");
    rm_context *context = NULL;
    new_context(&context, ns, "cuda.block_bytes", "2M", "cuda.pool_bytes", "2M");
    rm_tensor *whole = alloc(context, "cuda:0", 2 * MiB);
    char text[TEXT_MAX];
    export_text(context, whole, text);
    peer *importer = start_peer(ns, NULL);
    peer_import(importer, text, false, NULL);
    kill_peer(importer);
    release(context, whole);
    /* No tensor_reclaim: the budget check itself drops the dead holder's
     * hold and handle before it says no. */
    rm_tensor *again = NULL;
    expect_ok(try_alloc(context, "cuda:0", 2 * MiB, 0, &again), context,
              "the whole cuda.pool_bytes again, a dead importer holding the old tensor");
    fill(context, again, 4);
    expect_bytes(context, again, 4);
    rm_tensor_pool_stats stats = stats_of(context);
    cr_assert_eq(stats.cuda_tensors, 1, "live device tensors: %" PRIu64, stats.cuda_tensors);
    cr_assert_eq(stats.cuda_block_bytes, 2 * MiB, "block bytes: %" PRIu64,
                 stats.cuda_block_bytes);
    release(context, again);
}

Test(cuda_tensors, session_quota_applies_to_device_tensors)
{
    const char *ns = make_namespace("quota");
    rm_context *context = NULL;
    new_context(&context, ns, "shm.session_quota", "1M");
    rm_tensor *first = NULL, *refused = NULL, *other = NULL, *host = NULL;
    expect_ok(try_alloc(context, "cuda:0", 768 * KiB, 5, &first), context, "768 KiB, session 5");
    expect_code(try_alloc(context, "cuda:0", 512 * KiB, 5, &refused), RM_E_QUOTA_EXCEEDED,
                context, "512 KiB more in session 5 (quota 1 MiB)");
    cr_assert_null(refused);
    expect_code(try_alloc(context, "cpu", 512 * KiB, 5, &refused), RM_E_QUOTA_EXCEEDED,
                context, "a host tensor in the same session counts with the device one");
    uint64_t bytes = 0;
    expect_ok(vt->tensor_session_bytes(context, 5, &bytes), context, "tensor_session_bytes");
    cr_assert_eq(bytes, 768 * KiB, "session 5 is charged %" PRIu64 " bytes", bytes);
    expect_ok(try_alloc(context, "cuda:0", 512 * KiB, 6, &other), context, "session 6");
    release(context, first);
    expect_ok(vt->tensor_session_bytes(context, 5, &bytes), context, "tensor_session_bytes");
    cr_assert_eq(bytes, 0, "session 5 still charged %" PRIu64 " after the release", bytes);
    expect_ok(try_alloc(context, "cpu", 512 * KiB, 5, &host), context,
              "session 5 after the release");
    release(context, host);
    release(context, other);

    /* Wrapped memory is the host's: charged to no quota. */
    td_driver *d = driver();
    td_deviceptr base = 0;
    cr_assert_eq(td_alloc(d, 0, 2 * MiB, &base), 0, "%s", d->why);
    rm_tensor_spec spec = byte_spec("cuda:0", 2 * MiB, 5);
    rm_tensor *wrapped = NULL;
    expect_ok(vt->tensor_wrap_device(context, &spec, (void *)(uintptr_t)base, NULL, NULL,
                                     &wrapped),
              context, "wrapping 2 MiB in session 5 (quota 1 MiB)");
    expect_ok(vt->tensor_session_bytes(context, 5, &bytes), context, "tensor_session_bytes");
    cr_assert_eq(bytes, 0, "a wrapped tensor was charged %" PRIu64 " bytes to its session",
                 bytes);
    release(context, wrapped);
    (void)stats_of(context);
    cr_assert_eq(td_free(d, 0, base), 0, "%s", d->why);
}

/* ------------------------------------------------------------------------ */
/* main: the gpu suite skips (77) without a usable device                   */
/* ------------------------------------------------------------------------ */

int main(int argc, char *argv[])
{
    return gpu_suite_main(argc, argv, "test_cuda_tensors");
}
