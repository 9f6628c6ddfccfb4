/* Benchmark of device tensors (CUDA IPC, ABI 1.3) between two real
 * processes, through the real shared object and its vtable:
 *  (a) a handoff round trip: the producer allocates a device tensor,
 *      records it (tensor_record) and writes its binary descriptor down a
 *      pipe; the consumer imports it, waits (tensor_wait, on the host),
 *      releases it and writes a 1-byte ack. Each round is interleaved with
 *      an empty 1-byte ping-pong over the same pipes, the baseline it is
 *      divided by, at 4 KiB, 1 MiB, 64 MiB and 1 GiB. The producer's blocks
 *      are made large enough (cuda.block_bytes) that every size lands in a
 *      block the consumer already has open: the figure is the cached-handle
 *      path, the one a pipeline runs in its steady state;
 *  (b) an import that opens a block's IPC handle (the first import of a
 *      tensor of a new block; cuIpcOpenMemHandle) beside an import served
 *      by the handle already open, both timed in the consumer;
 *  (c) a device-to-device copy in the consumer from an imported tensor
 *      (cuMemcpyDtoDAsync_v2 on a stream of its own + cuStreamSynchronize)
 *      against the same copy from a local tensor of the same size,
 *      interleaved, as bandwidth.
 * Every figure is checked: the consumer's counters say how many handles it
 * opened (one per new block in (b), none in (a) after the first), and
 * nothing of the run is left in /dev/shm.
 *
 * Both processes run as a host does: every capability enabled (the
 * registry's eviction thread runs) and one more host thread alive. The
 * consumer is fork()ed before this process loads the driver or creates a
 * context, so it starts clean (CUDA cannot be used in a child forked after
 * cuInit).
 *
 * The driver is cuda.driver: --driver PATH, else the configuration file
 * in $RM_PLUGIN_CONFIG, else libcuda.so.1. The benchmark dlopen()s the same
 * library for its copies and streams (the plugin's wrappers are internal).
 * When that library is the test-only fake (tests/fake_cuda), every row and
 * every JSON object says so: device memory is host memory there, and the
 * figures are not GPU figures.
 *
 * Usage: bench_cuda [--json] [--quick] [--driver PATH] [PATH_TO_rm_plugin.so]
 * Exit status 77 (skipped) when no device is usable, with the reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "cuda_host.h"
#include "plugin_loader.h"
#include "rm_plugin.h"

const char bench_program[] = "bench_cuda";

#define MAX_HANDOFF_SIZES 4
#define MAX_COPY_SIZES 2

/* Targets from the issue. */
#define TARGET_HANDOFF_RATIO 1.10
#define TARGET_CACHED_IMPORT_NS 5000.0
#define TARGET_COPY_RATIO 0.90

typedef struct bench_plan {
    const char *block_bytes;   /* the producer's cuda.block_bytes: holds the largest size */
    const char *pool_bytes;    /* its cuda.pool_bytes */
    int handoff_sizes;
    uint64_t handoff[MAX_HANDOFF_SIZES];
    int handoff_warmup_rounds;
    int handoff_max_rounds;
    int handoff_min_rounds;
    double handoff_max_s;      /* per size */
    int fresh_blocks;          /* (b): blocks whose handle is opened once each */
    int cached_imports;        /* (b): cached imports per block */
    int copy_sizes;
    uint64_t copy[MAX_COPY_SIZES];
    int copy_rounds;
} bench_plan;

static const bench_plan full_plan = {
    .block_bytes = "2G",
    .pool_bytes = "4G",
    .handoff_sizes = 4,
    .handoff = {4 * KIB, 1 * MIB, 64 * MIB, 1 * GIB},
    .handoff_warmup_rounds = 100,
    .handoff_max_rounds = 2000,
    .handoff_min_rounds = 50,
    .handoff_max_s = 8.0,
    .fresh_blocks = 64,
    .cached_imports = 50,
    .copy_sizes = 2,
    .copy = {64 * MIB, 1 * GIB},
    .copy_rounds = 20,
};

static const bench_plan quick_plan = {
    .block_bytes = "4M",
    .pool_bytes = "64M",
    .handoff_sizes = 2,
    .handoff = {4 * KIB, 64 * KIB},
    .handoff_warmup_rounds = 10,
    .handoff_max_rounds = 50,
    .handoff_min_rounds = 20,
    .handoff_max_s = 1.0,
    .fresh_blocks = 4,
    .cached_imports = 10,
    .copy_sizes = 1,
    .copy = {1 * MIB},
    .copy_rounds = 5,
};

/* (b): a tensor of this size fills more than half a 2 MiB block, so each
 * one gets a new block (and a new IPC handle). */
#define FRESH_BLOCK_BYTES "2M"
#define FRESH_TENSOR_BYTES (1 * MIB + 4 * KIB)

/* ---- the run ------------------------------------------------------------ */

static pid_t producer_pid;
static pid_t running_consumer;
static char run_namespace[33];
static char cuda_driver[256] = "libcuda.so.1";

typedef struct tensor_api {
    const rm_plugin_v1 *vt;
    rm_context *context;
} tensor_api;

/* A context as a host creates one, in the run's own namespace, with the
 * run's driver; `block_bytes` and `pool_bytes` may be NULL (defaults). */
static tensor_api create_context(const rm_plugin_v1 *vt, const char *block_bytes,
                                 const char *pool_bytes)
{
    rm_config_entry entries[5] = {
        {.key = "features", .value = "all"},
        {.key = "shm.namespace", .value = run_namespace},
        {.key = "cuda.driver", .value = cuda_driver},
    };
    uint64_t count = 3;
    if (block_bytes != NULL)
        entries[count++] = (rm_config_entry){.key = "cuda.block_bytes", .value = block_bytes};
    if (pool_bytes != NULL)
        entries[count++] = (rm_config_entry){.key = "cuda.pool_bytes", .value = pool_bytes};
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    options.entries = entries;
    options.entry_count = count;
    tensor_api api = {.vt = vt};
    int32_t status = vt->context_create(&options, &api.context);
    if (status != RM_OK)
        die_status(vt, NULL, "context_create", status);
    return api;
}

static rm_tensor *allocate_device(const tensor_api *api, uint64_t bytes, rm_tensor_info *info)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)bytes;
    snprintf(spec.device, sizeof spec.device, "cuda:0");
    rm_tensor *tensor = NULL;
    int32_t status = api->vt->tensor_allocate(api->context, &spec, &tensor);
    if (status != RM_OK)
        die_status(api->vt, api->context, "tensor_allocate(cuda:0)", status);
    if (info != NULL) {
        *info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
        status = api->vt->tensor_info(api->context, tensor, info);
        if (status != RM_OK)
            die_status(api->vt, api->context, "tensor_info", status);
        if (info->device.device_type != 2 || info->nbytes != bytes)
            die("a cuda:0 allocation is not a device tensor of the size asked for");
    }
    return tensor;
}

static rm_tensor_pool_stats pool_stats(const tensor_api *api)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    int32_t status = api->vt->tensor_pool_stats(api->context, &stats);
    if (status != RM_OK)
        die_status(api->vt, api->context, "tensor_pool_stats", status);
    return stats;
}

/* Why no device is usable through this plugin and driver, or NULL. */
static const char *device_unusable(const tensor_api *api, rm_cuda_info *info, char *why,
                                   size_t why_size)
{
    *info = (rm_cuda_info)RM_STRUCT_INIT(rm_cuda_info);
    int32_t status = api->vt->cuda_info(api->context, info);
    if (status != RM_OK) {
        snprintf(why, why_size, "cuda_info: %s: %s", api->vt->error_name(status),
                 api->vt->context_last_error(api->context));
        return why;
    }
    if (info->status != RM_OK) {
        snprintf(why, why_size, "%s: %s", api->vt->error_name(info->status), info->message);
        return why;
    }
    return NULL;
}

/* ---- messages ----------------------------------------------------------- */

/* Producer to consumer; the first byte says which, and each is answered
 * before the next is sent. */
enum {
    MSG_PING = 'p',    /* ack 'p' */
    MSG_HANDOFF = 'h', /* + descriptor: import, wait, release; ack 'h' */
    MSG_IMPORT = 'i',  /* + descriptor: import timed, release; reply import_reply */
    MSG_COPY = 'c',    /* + descriptor + int32 rounds; reply copy_reply */
    MSG_STATS = 's',   /* reply: uint64 cuda_handles_opened */
    MSG_READY = 'r',   /* reply: int32 0, or -1 and a 512-byte reason (no device) */
    MSG_QUIT = 'q',    /* ack 'q', exit */
};

#define MSG_MAX (1 + RM_TENSOR_DESCRIPTOR_SIZE + sizeof(int32_t))

typedef struct import_reply {
    double import_ns;
} import_reply;

typedef struct copy_reply {
    double imported_median_ns, imported_p10_ns, imported_p90_ns;
    double local_median_ns, local_p10_ns, local_p90_ns;
    int rounds;
} copy_reply;

static _Noreturn void consumer_die(const tensor_api *api, const char *what, int32_t status)
{
    fprintf(stderr, "bench_cuda consumer: %s failed: %s (%s)\n", what,
            api->vt->error_name(status), api->vt->context_last_error(api->context));
    _exit(1);
}

static rm_tensor *consumer_import(const tensor_api *api, const uint8_t *descriptor)
{
    rm_tensor *tensor = NULL;
    int32_t status = api->vt->tensor_import(api->context, descriptor, RM_TENSOR_DESCRIPTOR_SIZE,
                                            0, &tensor);
    if (status != RM_OK)
        consumer_die(api, "tensor_import", status);
    return tensor;
}

static void consumer_release(const tensor_api *api, rm_tensor *tensor)
{
    int32_t status = api->vt->tensor_release(api->context, tensor);
    if (status != RM_OK)
        consumer_die(api, "tensor_release", status);
}

static double copy_once(cuda_host *cuda, uint64_t destination, uint64_t source, uint64_t bytes,
                        cuda_host_stream stream)
{
    char error[512];
    uint64_t start = now_ns();
    if (cuda_host_copy_device_on_stream(cuda, destination, source, (size_t)bytes, stream, error,
                                        sizeof error) != 0) {
        fprintf(stderr, "bench_cuda consumer: %s\n", error);
        _exit(1);
    }
    return (double)(now_ns() - start);
}

/* (c) in the consumer: imported -> local and local -> local, interleaved. */
static copy_reply consumer_copy(const tensor_api *api, cuda_host *cuda, const uint8_t *descriptor,
                                int rounds)
{
    rm_tensor *imported = consumer_import(api, descriptor);
    rm_tensor_info imported_info = RM_STRUCT_INIT(rm_tensor_info);
    int32_t status = api->vt->tensor_info(api->context, imported, &imported_info);
    if (status != RM_OK)
        consumer_die(api, "tensor_info", status);
    status = api->vt->tensor_wait(api->context, imported, NULL, RM_TENSOR_WAIT_HOST);
    if (status != RM_OK)
        consumer_die(api, "tensor_wait", status);
    uint64_t bytes = imported_info.nbytes;
    rm_tensor_info source_info, destination_info;
    rm_tensor *source = allocate_device(api, bytes, &source_info);
    rm_tensor *destination = allocate_device(api, bytes, &destination_info);
    cuda_host_stream stream;
    char error[512];
    if (cuda_host_stream_create(cuda, &stream, error, sizeof error) != 0) {
        fprintf(stderr, "bench_cuda consumer: %s\n", error);
        _exit(1);
    }
    uint64_t from_import = (uint64_t)(uintptr_t)imported_info.data;
    uint64_t from_local = (uint64_t)(uintptr_t)source_info.data;
    uint64_t to = (uint64_t)(uintptr_t)destination_info.data;
    copy_once(cuda, to, from_import, bytes, stream); /* warm-up: first touch of each */
    copy_once(cuda, to, from_local, bytes, stream);
    double *imported_ns = checked_malloc(sizeof(double) * (size_t)rounds);
    double *local_ns = checked_malloc(sizeof(double) * (size_t)rounds);
    for (int i = 0; i < rounds; i++) {
        /* Alternate which goes first, so that neither always follows the other. */
        if (i % 2 == 0) {
            imported_ns[i] = copy_once(cuda, to, from_import, bytes, stream);
            local_ns[i] = copy_once(cuda, to, from_local, bytes, stream);
        } else {
            local_ns[i] = copy_once(cuda, to, from_local, bytes, stream);
            imported_ns[i] = copy_once(cuda, to, from_import, bytes, stream);
        }
    }
    latency_figure imported_figure = summarise(imported_ns, rounds);
    latency_figure local_figure = summarise(local_ns, rounds);
    free(imported_ns);
    free(local_ns);
    cuda_host_stream_destroy(cuda, stream, error, sizeof error);
    consumer_release(api, destination);
    consumer_release(api, source);
    consumer_release(api, imported);
    return (copy_reply){imported_figure.median_ns, imported_figure.p10_ns,
                        imported_figure.p90_ns,    local_figure.median_ns,
                        local_figure.p10_ns,       local_figure.p90_ns,
                        rounds};
}

static _Noreturn void consumer_main(const rm_plugin_v1 *vt, int in_fd, int out_fd)
{
    host_companion_start(); /* a consumer is a multi-threaded host too */
    tensor_api api = create_context(vt, NULL, NULL);
    cuda_host cuda;
    bool cuda_open = false;
    uint8_t message[MSG_MAX];
    for (;;) {
        if (!read_full(in_fd, message, 1))
            _exit(1); /* the producer died: nothing to report to */
        uint8_t ack = message[0];
        switch (message[0]) {
        case MSG_PING:
            write_full(out_fd, &ack, 1);
            break;
        case MSG_READY: {
            rm_cuda_info info;
            char why[512] = "";
            int32_t ready = device_unusable(&api, &info, why, sizeof why) == NULL ? 0 : -1;
            char error[400];
            if (ready == 0 && cuda_host_open(info.library, 0, &cuda, error, sizeof error) != 0) {
                snprintf(why, sizeof why, "the consumer's own driver binding: %s", error);
                ready = -1;
            }
            cuda_open = ready == 0;
            write_full(out_fd, &ready, sizeof ready);
            write_full(out_fd, why, sizeof why);
            break;
        }
        case MSG_STATS: {
            uint64_t opened = pool_stats(&api).cuda_handles_opened;
            write_full(out_fd, &opened, sizeof opened);
            break;
        }
        case MSG_HANDOFF: {
            if (!read_full(in_fd, message + 1, RM_TENSOR_DESCRIPTOR_SIZE))
                _exit(1);
            rm_tensor *tensor = consumer_import(&api, message + 1);
            int32_t status = vt->tensor_wait(api.context, tensor, NULL, RM_TENSOR_WAIT_HOST);
            if (status != RM_OK)
                consumer_die(&api, "tensor_wait", status);
            consumer_release(&api, tensor);
            write_full(out_fd, &ack, 1);
            break;
        }
        case MSG_IMPORT: {
            if (!read_full(in_fd, message + 1, RM_TENSOR_DESCRIPTOR_SIZE))
                _exit(1);
            uint64_t start = now_ns();
            rm_tensor *tensor = consumer_import(&api, message + 1);
            import_reply reply = {.import_ns = (double)(now_ns() - start)};
            consumer_release(&api, tensor);
            write_full(out_fd, &reply, sizeof reply);
            break;
        }
        case MSG_COPY: {
            int32_t rounds;
            if (!read_full(in_fd, message + 1, RM_TENSOR_DESCRIPTOR_SIZE) ||
                !read_full(in_fd, &rounds, sizeof rounds) || !cuda_open)
                _exit(1);
            copy_reply reply = consumer_copy(&api, &cuda, message + 1, rounds);
            write_full(out_fd, &reply, sizeof reply);
            break;
        }
        case MSG_QUIT:
            vt->context_destroy(api.context);
            if (cuda_open)
                cuda_host_close(&cuda);
            host_companion_stop();
            write_full(out_fd, &ack, 1);
            _exit(0);
        default:
            fprintf(stderr, "bench_cuda consumer: unknown message %#x\n", message[0]);
            _exit(1);
        }
    }
}

typedef struct consumer_link {
    pid_t pid;
    int to_consumer;
    int from_consumer;
} consumer_link;

static consumer_link start_consumer(const rm_plugin_v1 *vt)
{
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0)
        die_errno("pipe2");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die_errno("fork");
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        consumer_main(vt, down[0], up[1]);
    }
    close(down[0]);
    close(up[1]);
    running_consumer = pid;
    return (consumer_link){.pid = pid, .to_consumer = down[1], .from_consumer = up[0]};
}

static uint8_t receive_ack(const consumer_link *link)
{
    uint8_t ack;
    if (!read_full(link->from_consumer, &ack, 1))
        die("the consumer exited (see its message above)");
    return ack;
}

static void receive(const consumer_link *link, void *reply, size_t size)
{
    if (!read_full(link->from_consumer, reply, size))
        die("the consumer exited (see its message above)");
}

static void stop_consumer(consumer_link *link)
{
    uint8_t message = MSG_QUIT;
    write_full(link->to_consumer, &message, 1);
    if (receive_ack(link) != MSG_QUIT)
        die("the consumer did not quit cleanly");
    int status = 0;
    if (waitpid(link->pid, &status, 0) != link->pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        die("the consumer did not exit with status 0");
    running_consumer = 0;
    close(link->to_consumer);
    close(link->from_consumer);
}

static double ping_pong(const consumer_link *link)
{
    uint8_t message = MSG_PING;
    uint64_t start = now_ns();
    write_full(link->to_consumer, &message, 1);
    uint8_t ack = receive_ack(link);
    double elapsed = (double)(now_ns() - start);
    if (ack != MSG_PING)
        die("wrong ping-pong answer");
    return elapsed;
}

static void export_into(const tensor_api *api, const rm_tensor *tensor, uint8_t *out)
{
    int32_t status = api->vt->tensor_export(api->context, tensor, out, RM_TENSOR_DESCRIPTOR_SIZE);
    if (status != RM_OK)
        die_status(api->vt, api->context, "tensor_export", status);
}

/* ---- (a) handoff round trip --------------------------------------------- */

typedef struct handoff_figure {
    uint64_t bytes;
    latency_figure handoff;
    latency_figure ping;
    double ratio;
    bool met;
} handoff_figure;

/* allocate + record + export -> import + wait + release -> ack. The
 * producer's release comes after the ack, outside the timing, as a
 * producer drops its handle once the consumer has the tensor. */
static double handoff(const tensor_api *api, const consumer_link *link, uint64_t bytes)
{
    uint8_t message[1 + RM_TENSOR_DESCRIPTOR_SIZE];
    message[0] = MSG_HANDOFF;
    uint64_t start = now_ns();
    rm_tensor *tensor = allocate_device(api, bytes, NULL);
    int32_t status = api->vt->tensor_record(api->context, tensor, NULL);
    if (status != RM_OK)
        die_status(api->vt, api->context, "tensor_record", status);
    export_into(api, tensor, message + 1);
    write_full(link->to_consumer, message, sizeof message);
    uint8_t ack = receive_ack(link);
    double elapsed = (double)(now_ns() - start);
    if (ack != MSG_HANDOFF)
        die("wrong handoff answer");
    status = api->vt->tensor_release(api->context, tensor);
    if (status != RM_OK)
        die_status(api->vt, api->context, "tensor_release", status);
    return elapsed;
}

static handoff_figure measure_handoff(const tensor_api *api, const consumer_link *link,
                                      const bench_plan *plan, uint64_t bytes)
{
    for (int i = 0; i < plan->handoff_warmup_rounds; i++) {
        ping_pong(link);
        handoff(api, link, bytes);
    }
    int max_rounds = plan->handoff_max_rounds;
    double *handoff_ns = checked_malloc(sizeof(double) * (size_t)max_rounds);
    double *ping_ns = checked_malloc(sizeof(double) * (size_t)max_rounds);
    int rounds = 0;
    uint64_t deadline = now_ns() + (uint64_t)(plan->handoff_max_s * 1e9);
    while (rounds < max_rounds && (rounds < plan->handoff_min_rounds || now_ns() < deadline)) {
        if (rounds % 2 == 0) {
            ping_ns[rounds] = ping_pong(link);
            handoff_ns[rounds] = handoff(api, link, bytes);
        } else {
            handoff_ns[rounds] = handoff(api, link, bytes);
            ping_ns[rounds] = ping_pong(link);
        }
        rounds++;
    }
    handoff_figure figure = {.bytes = bytes};
    figure.handoff = summarise(handoff_ns, rounds);
    figure.ping = summarise(ping_ns, rounds);
    figure.ratio = figure.handoff.median_ns / figure.ping.median_ns;
    figure.met = figure.ratio <= TARGET_HANDOFF_RATIO;
    free(handoff_ns);
    free(ping_ns);
    rm_tensor_pool_stats stats = pool_stats(api);
    if (stats.cuda_tensors != 0)
        die("device tensors are left live after the handoffs were released");
    return figure;
}

/* ---- (b) first import of a block against a cached import ---------------- */

typedef struct import_figure {
    latency_figure first;  /* opens the block's handle */
    latency_figure cached; /* served by the handle already open */
    uint64_t handles_opened;
    int blocks;
    bool met;
} import_figure;

static import_reply import_in_consumer(const consumer_link *link, const uint8_t *descriptor)
{
    uint8_t message[1 + RM_TENSOR_DESCRIPTOR_SIZE];
    message[0] = MSG_IMPORT;
    memcpy(message + 1, descriptor, RM_TENSOR_DESCRIPTOR_SIZE);
    write_full(link->to_consumer, message, sizeof message);
    import_reply reply;
    receive(link, &reply, sizeof reply);
    return reply;
}

static uint64_t consumer_handles_opened(const consumer_link *link)
{
    uint8_t message = MSG_STATS;
    write_full(link->to_consumer, &message, 1);
    uint64_t opened;
    receive(link, &opened, sizeof opened);
    return opened;
}

static import_figure measure_imports(const rm_plugin_v1 *vt, const consumer_link *link,
                                     const bench_plan *plan)
{
    /* A context of its own with small blocks, so that each tensor is in a
     * block the consumer has never seen. */
    tensor_api fresh = create_context(vt, FRESH_BLOCK_BYTES, "1G");
    int blocks = plan->fresh_blocks;
    rm_tensor **tensors = checked_calloc((size_t)blocks, sizeof *tensors);
    uint8_t(*descriptors)[RM_TENSOR_DESCRIPTOR_SIZE] =
        checked_calloc((size_t)blocks, RM_TENSOR_DESCRIPTOR_SIZE);
    for (int i = 0; i < blocks; i++) {
        tensors[i] = allocate_device(&fresh, FRESH_TENSOR_BYTES, NULL);
        export_into(&fresh, tensors[i], descriptors[i]);
    }
    if (pool_stats(&fresh).cuda_blocks != (uint64_t)blocks)
        die("the tensors of (b) do not each have a block of their own");
    double *first_ns = checked_malloc(sizeof(double) * (size_t)blocks);
    double *cached_ns = checked_malloc(sizeof(double) * (size_t)blocks *
                                       (size_t)plan->cached_imports);
    int cached = 0;
    uint64_t opened_before = consumer_handles_opened(link);
    for (int block = 0; block < blocks; block++) {
        first_ns[block] = import_in_consumer(link, descriptors[block]).import_ns;
        for (int k = 0; k < plan->cached_imports; k++)
            cached_ns[cached++] = import_in_consumer(link, descriptors[block]).import_ns;
    }
    import_figure figure = {.blocks = blocks};
    figure.first = summarise(first_ns, blocks);
    figure.cached = summarise(cached_ns, cached);
    /* One handle per new block, and none for the cached imports. */
    figure.handles_opened = consumer_handles_opened(link) - opened_before;
    figure.met = figure.cached.median_ns <= TARGET_CACHED_IMPORT_NS;
    if (figure.handles_opened != (uint64_t)blocks) {
        fprintf(stderr, "bench_cuda: the consumer opened %llu IPC handles for %d new blocks\n",
                (unsigned long long)figure.handles_opened, blocks);
        exit(1);
    }
    for (int i = 0; i < blocks; i++) {
        int32_t status = vt->tensor_release(fresh.context, tensors[i]);
        if (status != RM_OK)
            die_status(vt, fresh.context, "tensor_release", status);
    }
    free(first_ns);
    free(cached_ns);
    free(tensors);
    free(descriptors);
    vt->context_destroy(fresh.context);
    return figure;
}

/* ---- (c) device-to-device copy through an import ------------------------ */

typedef struct copy_figure {
    uint64_t bytes;
    copy_reply reply;
    double imported_gb_s;
    double local_gb_s;
    double ratio; /* imported bandwidth / local bandwidth */
    bool met;
} copy_figure;

static copy_figure measure_copy(const tensor_api *api, const consumer_link *link,
                                const bench_plan *plan, uint64_t bytes)
{
    rm_tensor *tensor = allocate_device(api, bytes, NULL);
    int32_t status = api->vt->tensor_record(api->context, tensor, NULL);
    if (status != RM_OK)
        die_status(api->vt, api->context, "tensor_record", status);
    uint8_t message[MSG_MAX];
    message[0] = MSG_COPY;
    export_into(api, tensor, message + 1);
    int32_t rounds = plan->copy_rounds;
    memcpy(message + 1 + RM_TENSOR_DESCRIPTOR_SIZE, &rounds, sizeof rounds);
    write_full(link->to_consumer, message, sizeof message);
    copy_figure figure = {.bytes = bytes};
    receive(link, &figure.reply, sizeof figure.reply);
    status = api->vt->tensor_release(api->context, tensor);
    if (status != RM_OK)
        die_status(api->vt, api->context, "tensor_release", status);
    figure.imported_gb_s = (double)bytes / figure.reply.imported_median_ns;
    figure.local_gb_s = (double)bytes / figure.reply.local_median_ns;
    figure.ratio = figure.imported_gb_s / figure.local_gb_s;
    figure.met = figure.ratio >= TARGET_COPY_RATIO;
    return figure;
}

/* ---- clean-up ----------------------------------------------------------- */

static int leftover_segments(bool unlink_them)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rm.%s.", run_namespace);
    return shm_leftovers(prefix, NULL, unlink_them, "left in /dev/shm");
}

static void clean_up_at_exit(void)
{
    if (getpid() != producer_pid)
        return;
    if (running_consumer > 0) {
        kill(running_consumer, SIGKILL);
        waitpid(running_consumer, NULL, 0);
        running_consumer = 0;
    }
    leftover_segments(true);
}

/* ---- output ------------------------------------------------------------- */

typedef struct run_label {
    bool fake;
    int driver_version;
    char device[48];
} run_label;

/* The fields every JSON object ends with: which driver measured it. */
static void json_label(const run_label *label)
{
    printf(",\"driver\":\"%s\",\"driver_library\":\"%s\",\"driver_version\":%d,"
           "\"device\":\"%s\"%s}\n",
           label->fake ? "fake" : "cuda", cuda_driver, label->driver_version, label->device,
           label->fake ? ",\"fake_driver\":true,"
                         "\"note\":\"fake-driver figures (tests/fake_cuda: device memory is "
                         "host memory), not GPU figures\""
                       : ",\"fake_driver\":false");
}

static void print_json(const run_label *label, const handoff_figure *handoffs, int handoff_count,
                       const import_figure *imports, const copy_figure *copies, int copy_count)
{
    for (int i = 0; i < handoff_count; i++) {
        const handoff_figure *f = &handoffs[i];
        printf("{\"bench\":\"cuda\",\"figure\":\"device_handoff_round_trip_ns\","
               "\"bytes\":%llu,\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\","
               "\"baseline\":\"pipe_ping_pong_1_byte\",\"baseline_median\":%.1f,"
               "\"baseline_p10\":%.1f,\"baseline_p90\":%.1f,\"ratio\":%.3f,"
               "\"target\":\"ratio <= %.2f (cached handles)\",\"met\":%s,\"rounds\":%d",
               (unsigned long long)f->bytes, f->handoff.median_ns, f->handoff.p10_ns,
               f->handoff.p90_ns, f->ping.median_ns, f->ping.p10_ns, f->ping.p90_ns, f->ratio,
               TARGET_HANDOFF_RATIO, f->met ? "true" : "false", f->handoff.samples);
        json_label(label);
    }
    printf("{\"bench\":\"cuda\",\"figure\":\"device_import_cached_ns\",\"bytes\":%llu,"
           "\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\","
           "\"baseline\":\"first_import_opens_handle\",\"baseline_median\":%.1f,"
           "\"baseline_p10\":%.1f,\"baseline_p90\":%.1f,\"ratio\":%.4f,"
           "\"target\":\"median <= %.0f ns\",\"met\":%s,\"samples\":%d,\"blocks\":%d,"
           "\"handles_opened\":%llu",
           (unsigned long long)FRESH_TENSOR_BYTES, imports->cached.median_ns,
           imports->cached.p10_ns, imports->cached.p90_ns, imports->first.median_ns,
           imports->first.p10_ns, imports->first.p90_ns,
           imports->cached.median_ns / imports->first.median_ns, TARGET_CACHED_IMPORT_NS,
           imports->met ? "true" : "false", imports->cached.samples, imports->blocks,
           (unsigned long long)imports->handles_opened);
    json_label(label);
    printf("{\"bench\":\"cuda\",\"figure\":\"device_import_first_ns\",\"bytes\":%llu,"
           "\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\",\"samples\":%d",
           (unsigned long long)FRESH_TENSOR_BYTES, imports->first.median_ns,
           imports->first.p10_ns, imports->first.p90_ns, imports->first.samples);
    json_label(label);
    for (int i = 0; i < copy_count; i++) {
        const copy_figure *f = &copies[i];
        printf("{\"bench\":\"cuda\",\"figure\":\"dtod_copy_from_import_ns\",\"bytes\":%llu,"
               "\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\","
               "\"baseline\":\"dtod_copy_local\",\"baseline_median\":%.1f,"
               "\"baseline_p10\":%.1f,\"baseline_p90\":%.1f,\"gb_per_s\":%.3f,"
               "\"baseline_gb_per_s\":%.3f,\"ratio\":%.3f,"
               "\"target\":\"bandwidth ratio >= %.2f\",\"met\":%s,\"rounds\":%d",
               (unsigned long long)f->bytes, f->reply.imported_median_ns,
               f->reply.imported_p10_ns, f->reply.imported_p90_ns, f->reply.local_median_ns,
               f->reply.local_p10_ns, f->reply.local_p90_ns, f->imported_gb_s, f->local_gb_s,
               f->ratio, TARGET_COPY_RATIO, f->met ? "true" : "false", f->reply.rounds);
        json_label(label);
    }
}

static void print_table(const bench_plan *plan, const run_label *label,
                        const handoff_figure *handoffs, int handoff_count,
                        const import_figure *imports, const copy_figure *copies, int copy_count,
                        double total_s)
{
    char s[8][32];
    const char *driver = label->fake ? "FAKE" : "gpu";
    printf("cuda benchmark (%s; driver %s %d.%d, %s; %s; %.1f s)\n",
           plan == &quick_plan ? "quick" : "full", cuda_driver, label->driver_version / 1000,
           label->driver_version % 1000 / 10, label->device,
           label->fake ? "THE FAKE DRIVER" : "a GPU", total_s);
    if (label->fake)
        printf("*** fake-driver figures (tests/fake_cuda: device memory is host memory, "
               "copies are memcpy):\n*** not GPU figures; every row is marked FAKE ***\n");
    printf("configuration of a host: features = all, one more host thread in each process;\n"
           "producer cuda.block_bytes %s (every size in one block, handles cached)\n",
           plan->block_bytes);

    printf("\na. handoff round trip between two processes (allocate + record + export, "
           "descriptor\n   down a pipe, import + wait + release, 1-byte ack) vs an empty "
           "1-byte ping-pong\n   interleaved with it; target ratio <= %.2f\n",
           TARGET_HANDOFF_RATIO);
    printf("   %-6s %-8s %10s %10s %10s | %10s %7s | %7s %6s\n", "driver", "size", "handoff",
           "p10", "p90", "ping-pong", "ratio", "target", "rounds");
    for (int i = 0; i < handoff_count; i++) {
        const handoff_figure *f = &handoffs[i];
        printf("   %-6s %-8s %10s %10s %10s | %10s %7.3f | %7s %6d\n", driver,
               size_label(f->bytes, s[0], sizeof s[0]),
               time_label(f->handoff.median_ns, s[1], sizeof s[1]),
               time_label(f->handoff.p10_ns, s[2], sizeof s[2]),
               time_label(f->handoff.p90_ns, s[3], sizeof s[3]),
               time_label(f->ping.median_ns, s[4], sizeof s[4]), f->ratio, met_label(f->met),
               f->handoff.samples);
    }

    printf("\nb. import in the consumer: the first of a new block (opens its IPC handle) vs "
           "one\n   served by the handle already open (%d blocks); target cached <= %.0f us\n",
           imports->blocks, TARGET_CACHED_IMPORT_NS / 1e3);
    printf("   %-6s %-8s %10s %10s %10s | %10s %10s %10s | %7s %7s\n", "driver", "import",
           "median", "p10", "p90", "first", "p10", "p90", "handles", "target");
    printf("   %-6s %-8s %10s %10s %10s | %10s %10s %10s | %7llu %7s\n", driver, "cached",
           time_label(imports->cached.median_ns, s[0], sizeof s[0]),
           time_label(imports->cached.p10_ns, s[1], sizeof s[1]),
           time_label(imports->cached.p90_ns, s[2], sizeof s[2]),
           time_label(imports->first.median_ns, s[3], sizeof s[3]),
           time_label(imports->first.p10_ns, s[4], sizeof s[4]),
           time_label(imports->first.p90_ns, s[5], sizeof s[5]),
           (unsigned long long)imports->handles_opened, met_label(imports->met));

    printf("\nc. device-to-device copy in the consumer (cuMemcpyDtoDAsync_v2 + "
           "cuStreamSynchronize)\n   from an imported tensor vs from a local one, "
           "interleaved; target >= %.2fx\n",
           TARGET_COPY_RATIO);
    printf("   %-6s %-8s %10s %10s | %10s %10s | %7s %7s %6s\n", "driver", "size", "imported",
           "GB/s", "local", "GB/s", "ratio", "target", "rounds");
    for (int i = 0; i < copy_count; i++) {
        const copy_figure *f = &copies[i];
        printf("   %-6s %-8s %10s %10.2f | %10s %10.2f | %6.3fx %7s %6d\n", driver,
               size_label(f->bytes, s[0], sizeof s[0]),
               time_label(f->reply.imported_median_ns, s[1], sizeof s[1]), f->imported_gb_s,
               time_label(f->reply.local_median_ns, s[2], sizeof s[2]), f->local_gb_s,
               f->ratio, met_label(f->met), f->reply.rounds);
    }
}

/* ---- main --------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: bench_cuda [--json] [--quick] [--driver PATH] "
                    "[PATH_TO_rm_plugin.so]\n"
                    "       (PATH defaults to $RM_PLUGIN_PATH; the driver to --driver, else\n"
                    "       cuda.driver of $RM_PLUGIN_CONFIG, else libcuda.so.1)\n"
                    "       exit status 77: no usable device (skipped)\n");
}

static _Noreturn void skip(bool json, const char *why)
{
    skip_cuda_bench(json, "cuda", "no usable CUDA device: ", why, cuda_driver);
}

int main(int argc, char **argv)
{
    /* --driver PATH is this benchmark's own; the rest are the common ones. */
    const char *driver_option = NULL;
    char **rest = checked_calloc((size_t)argc + 1, sizeof *rest);
    int rest_count = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--driver") == 0) {
            if (i + 1 >= argc) {
                usage();
                return 2;
            }
            driver_option = argv[++i];
        } else {
            rest[rest_count++] = argv[i];
        }
    }
    bench_options options;
    int exit_status = parse_options(rest_count, rest, 1, usage, &options);
    if (exit_status >= 0)
        return exit_status;
    const bench_plan *plan = options.quick ? &quick_plan : &full_plan;
    signal(SIGPIPE, SIG_IGN);

    uint64_t run_start = now_ns();
    producer_pid = getpid();
    snprintf(run_namespace, sizeof run_namespace, "bench-cuda-%ld", (long)producer_pid);
    atexit(clean_up_at_exit);

    rm_loaded_plugin plugin;
    const rm_plugin_v1 *vt = load_plugin(options.plugin_path, RM_ABI_VERSION(1, 1), &plugin);
    if (!RM_PLUGIN_HAS(vt, cuda_info) || (vt->features_built & RM_FEATURE_CUDA_IPC) == 0) {
        char why[PATH_MAX + 96];
        snprintf(why, sizeof why, "%s has no device tensors (ABI 1.3 and cuda-ipc needed)",
                 plugin.path);
        skip(options.json, why);
    }
    if (driver_option != NULL) {
        if (strlen(driver_option) >= sizeof cuda_driver)
            die("--driver: the path is longer than cuda.driver allows (255 bytes)");
        snprintf(cuda_driver, sizeof cuda_driver, "%s", driver_option);
    } else {
        cuda_driver_from_configuration(vt, cuda_driver, sizeof cuda_driver);
    }

    /* Fork the consumer before this process loads the driver. */
    consumer_link link = start_consumer(vt);
    host_companion_start();
    tensor_api api = create_context(vt, plan->block_bytes, plan->pool_bytes);
    rm_cuda_info info;
    char why[1024];
    if (device_unusable(&api, &info, why, sizeof why) != NULL)
        skip(options.json, why);
    uint8_t ready_message = MSG_READY;
    write_full(link.to_consumer, &ready_message, 1);
    int32_t consumer_ready;
    char consumer_why[512];
    receive(&link, &consumer_ready, sizeof consumer_ready);
    receive(&link, consumer_why, sizeof consumer_why);
    if (consumer_ready != 0) {
        consumer_why[sizeof consumer_why - 1] = '\0';
        skip(options.json, consumer_why);
    }
    /* The producer binds the driver only to tell the fake from a GPU. */
    cuda_host cuda;
    char error[512];
    if (cuda_host_open(info.library, 0, &cuda, error, sizeof error) != 0)
        die(error);
    run_label label = {.fake = cuda.fake, .driver_version = info.driver_version};
    snprintf(label.device, sizeof label.device, "%s", info.devices[0].uuid_text);

    handoff_figure handoffs[MAX_HANDOFF_SIZES];
    for (int i = 0; i < plan->handoff_sizes; i++)
        handoffs[i] = measure_handoff(&api, &link, plan, plan->handoff[i]);
    import_figure imports = measure_imports(vt, &link, plan);
    copy_figure copies[MAX_COPY_SIZES];
    for (int i = 0; i < plan->copy_sizes; i++)
        copies[i] = measure_copy(&api, &link, plan, plan->copy[i]);
    stop_consumer(&link);

    vt->tensor_reclaim(api.context, NULL);
    vt->context_destroy(api.context);
    cuda_host_close(&cuda);
    host_companion_stop();
    if (leftover_segments(false) != 0)
        die("segments of this run are left in /dev/shm after every context was destroyed");
    double total_s = (double)(now_ns() - run_start) * 1e-9;
    if (options.json)
        print_json(&label, handoffs, plan->handoff_sizes, &imports, copies, plan->copy_sizes);
    else
        print_table(plan, &label, handoffs, plan->handoff_sizes, &imports, copies,
                    plan->copy_sizes, total_s);
    free(rest);
    return 0;
}
