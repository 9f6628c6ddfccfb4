/* Benchmark of shared-memory tensors through the real shared object, the
 * way a host uses them: dlopen(), negotiate, create contexts, then
 *  (1) tensor_allocate + tensor_release (uint8, 1-D, warm) at 4 KiB, 64 KiB,
 *      1 MiB and 16 MiB: ns per pair, median/p10/p90 over many batches,
 *      against a fresh segment per tensor (shm_open + ftruncate + mmap +
 *      close + munmap + shm_unlink) at the same sizes, batches interleaved;
 *  (2) a handoff round trip between two processes (a forked consumer with
 *      its own context, one pipe each way): the producer exports and writes
 *      the binary descriptor, the consumer imports it, reads the first and
 *      last byte, releases and writes a 1-byte ack. Each round is timed and
 *      interleaved with an empty 1-byte pipe ping-pong between the same two
 *      processes, the baseline it is divided by. Beside it, a pipe copy of
 *      the whole tensor (the consumer reads every byte, then acks), also
 *      divided by the ping-pong;
 *  (3) the plugin's own cost per handoff: export + import into a second
 *      context of this process (its own mapping of the pool, full
 *      validation) + release, warm, with the three steps also timed apart.
 * Every figure is checked: shared (not heap) tensors, bytes seen by the
 * consumer equal to what the producer wrote in that round, pool counters
 * back to zero, and no segment of the run left in /dev/shm.
 *
 * Usage: bench_tensor [--json] [--quick] [PATH_TO_rm_plugin.so]
 *        (PATH defaults to $RM_PLUGIN_PATH)
 * --json prints one JSON object per figure per line instead of a table;
 * --quick runs a much shorter version with small sizes (a CI smoke test,
 * also run under ASan: a few seconds).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "plugin_loader.h"
#include "rm_plugin.h"

const char bench_program[] = "bench_tensor";

/* ---- plans -------------------------------------------------------------- */

#define ALLOC_SIZES 4
#define MAX_HANDOFF_SIZES 4

typedef struct handoff_size_plan {
    uint64_t bytes;
    int copy_rounds; /* pipe copies measured (after one warm-up copy) */
} handoff_size_plan;

typedef struct bench_plan {
    const char *pool_bytes; /* shm.pool_bytes of the producer's context */
    /* (1) allocate + release */
    int alloc_batches;
    int alloc_ops_per_batch;
    int segment_ops_per_batch; /* fresh segments per baseline batch */
    double alloc_warmup_s;     /* per size */
    /* (2) handoff */
    int handoff_sizes;
    handoff_size_plan handoff[MAX_HANDOFF_SIZES];
    int handoff_warmup_rounds;
    int handoff_rounds;        /* at most; ... */
    double handoff_max_s;      /* ... or until this much time per size */
    int handoff_min_rounds;    /* but at least this many */
    /* (3) plugin cost per handoff */
    int cost_batches;
    int cost_ops_per_batch;
    double cost_warmup_s;
} bench_plan;

static const bench_plan full_plan = {
    .pool_bytes = "2G",
    .alloc_batches = 300,
    .alloc_ops_per_batch = 2000,
    .segment_ops_per_batch = 40,
    .alloc_warmup_s = 0.2,
    .handoff_sizes = 4,
    .handoff = {{4 * KIB, 2000}, {1 * MIB, 200}, {100 * MIB, 12}, {1 * GIB, 5}},
    .handoff_warmup_rounds = 200,
    .handoff_rounds = 3000,
    .handoff_max_s = 15.0,
    .handoff_min_rounds = 50,
    .cost_batches = 300,
    .cost_ops_per_batch = 1000,
    .cost_warmup_s = 0.2,
};

static const bench_plan quick_plan = {
    .pool_bytes = "256M",
    .alloc_batches = 30,
    .alloc_ops_per_batch = 200,
    .segment_ops_per_batch = 10,
    .alloc_warmup_s = 0.02,
    .handoff_sizes = 3,
    .handoff = {{4 * KIB, 50}, {1 * MIB, 20}, {16 * MIB, 4}},
    .handoff_warmup_rounds = 20,
    .handoff_rounds = 200,
    .handoff_max_s = 2.0,
    .handoff_min_rounds = 20,
    .cost_batches = 30,
    .cost_ops_per_batch = 200,
    .cost_warmup_s = 0.02,
};

static const uint64_t alloc_sizes[ALLOC_SIZES] = {4 * KIB, 64 * KIB, 1 * MIB,
                                                  16 * MIB};

/* Targets from the issues (tensors: #4, then #10). */
#define TARGET_ALLOC_NS 60.0
#define TARGET_ALLOC_SPEEDUP 50.0
#define TARGET_HANDOFF_RATIO 1.10
#define TARGET_COST_NS 100.0
/* A mode of the round-trip floor needs this many samples to be judged. */
#define MODE_MIN_SAMPLES 20

/* ---- small helpers ------------------------------------------------------ */

/* The run: its producer, its consumer while one runs (for clean-up after
 * a failure), and its own shm.namespace. */
static pid_t producer_pid;
static pid_t running_consumer;
static char run_namespace[33];

typedef struct tensor_api {
    const rm_plugin_v1 *vt;
    rm_context *context;
} tensor_api;

static _Noreturn void fail(const tensor_api *api, const char *what,
                           int32_t status)
{
    die_status(api->vt, api->context, what, status);
}

/* ---- plugin setup ------------------------------------------------------- */

static const rm_plugin_v1 *open_plugin(const char *path,
                                       rm_loaded_plugin *plugin)
{
    const rm_plugin_v1 *vt = load_plugin(path, RM_ABI_VERSION(1, 1), plugin);
    uint32_t version = plugin->abi_version;
    if (!RM_PLUGIN_HAS(vt, tensor_allocate) ||
        !RM_PLUGIN_HAS(vt, tensor_info) ||
        !RM_PLUGIN_HAS(vt, tensor_export) ||
        !RM_PLUGIN_HAS(vt, tensor_import) ||
        !RM_PLUGIN_HAS(vt, tensor_release) ||
        !RM_PLUGIN_HAS(vt, tensor_pool_stats)) {
        fprintf(stderr, "bench_tensor: %s has no tensor functions (ABI %u.%u)\n",
                path, RM_ABI_VERSION_MAJOR(version),
                RM_ABI_VERSION_MINOR(version));
        exit(1);
    }
    return vt;
}

/* A context as a host creates one: every capability enabled (so the
 * registry's eviction thread runs beside the tensor calls), in the run's
 * own namespace (so that neither this run nor any other sees or reclaims
 * the other's segments), whatever the environment says. */
static tensor_api create_context(const rm_plugin_v1 *vt, const char *name_space,
                                 const char *pool_bytes)
{
    rm_config_entry entries[3] = {
        {.key = "features", .value = "all"},
        {.key = "shm.namespace", .value = name_space},
        {.key = "shm.pool_bytes", .value = pool_bytes},
    };
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    options.entries = entries;
    options.entry_count = pool_bytes != NULL ? 3 : 2;
    tensor_api api = {.vt = vt};
    int32_t status = vt->context_create(&options, &api.context);
    if (status != RM_OK)
        die_status(vt, NULL, "context_create", status);
    return api;
}

static rm_tensor_spec uint8_spec(uint64_t bytes)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)bytes;
    /* A heap fallback would measure malloc, not the pool: make it an error. */
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    return spec;
}

static rm_tensor_info tensor_info(const tensor_api *api, const rm_tensor *tensor)
{
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    int32_t status = api->vt->tensor_info(api->context, tensor, &info);
    if (status != RM_OK)
        fail(api, "tensor_info", status);
    return info;
}

static rm_tensor_pool_stats pool_stats(const tensor_api *api)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    int32_t status = api->vt->tensor_pool_stats(api->context, &stats);
    if (status != RM_OK)
        fail(api, "tensor_pool_stats", status);
    return stats;
}

/* Allocates a shared uint8 tensor and checks that it is one: in the pool,
 * writable, owned, aligned, of the size asked for. */
static rm_tensor *allocate_shared(const tensor_api *api, uint64_t bytes,
                                  rm_tensor_info *out_info)
{
    rm_tensor_spec spec = uint8_spec(bytes);
    rm_tensor *tensor = NULL;
    int32_t status = api->vt->tensor_allocate(api->context, &spec, &tensor);
    if (status != RM_OK)
        fail(api, "tensor_allocate", status);
    rm_tensor_info info = tensor_info(api, tensor);
    uint64_t want = RM_TENSOR_WRITABLE | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED;
    if ((info.flags & want) != want || info.nbytes != bytes ||
        info.data == NULL ||
        (uintptr_t)info.data % RM_TENSOR_MIN_ALIGNMENT != 0 ||
        info.pool_id == 0) {
        fprintf(stderr,
                "bench_tensor: allocated tensor of %llu bytes is not a shared "
                "writable one: flags %#llx, nbytes %llu, data %p, pool %llu\n",
                (unsigned long long)bytes, (unsigned long long)info.flags,
                (unsigned long long)info.nbytes, info.data,
                (unsigned long long)info.pool_id);
        exit(1);
    }
    if (out_info != NULL)
        *out_info = info;
    return tensor;
}

static void release(const tensor_api *api, rm_tensor *tensor)
{
    int32_t status = api->vt->tensor_release(api->context, tensor);
    if (status != RM_OK)
        fail(api, "tensor_release", status);
}

/* ---- (1) allocate + release against a fresh segment -------------------- */

typedef struct alloc_figure {
    uint64_t bytes;
    latency_figure plugin;
    latency_figure segment;
    double speedup; /* segment median / plugin median */
    bool met;
} alloc_figure;

static double time_alloc_release(const tensor_api *api,
                                 const rm_tensor_spec *spec, int ops)
{
    const rm_plugin_v1 *vt = api->vt;
    rm_context *context = api->context;
    uint64_t start = now_ns();
    for (int op = 0; op < ops; op++) {
        rm_tensor *tensor;
        int32_t status = vt->tensor_allocate(context, spec, &tensor);
        if (status != RM_OK)
            fail(api, "tensor_allocate", status);
        status = vt->tensor_release(context, tensor);
        if (status != RM_OK)
            fail(api, "tensor_release", status);
    }
    return (double)(now_ns() - start) / ops;
}

/* What a pool replaces: one new segment per tensor, created, sized,
 * mapped, then unmapped and unlinked (nothing written: the figure is the
 * cost before any data). The name is reused: each segment is gone before
 * the next is created, and O_EXCL proves it. */
static char segment_name[64];

static double time_fresh_segments(uint64_t bytes, int ops)
{
    uint64_t start = now_ns();
    for (int op = 0; op < ops; op++) {
        int fd = shm_open(segment_name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0)
            die_errno("shm_open (baseline)");
        if (ftruncate(fd, (off_t)bytes) != 0)
            die_errno("ftruncate (baseline)");
        void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED)
            die_errno("mmap (baseline)");
        close(fd);
        if (munmap(map, bytes) != 0)
            die_errno("munmap (baseline)");
        if (shm_unlink(segment_name) != 0)
            die_errno("shm_unlink (baseline)");
    }
    return (double)(now_ns() - start) / ops;
}

static alloc_figure measure_alloc(const tensor_api *api, const bench_plan *plan,
                                  uint64_t bytes)
{
    /* Check once, outside the timing, that this size gives a shared tensor
     * whose bytes can be written at both ends. */
    rm_tensor_info info;
    rm_tensor *tensor = allocate_shared(api, bytes, &info);
    volatile uint8_t *data = info.data;
    data[0] = 1;
    data[bytes - 1] = 2;
    release(api, tensor);

    rm_tensor_spec spec = uint8_spec(bytes);
    uint64_t warm_until = now_ns() + (uint64_t)(plan->alloc_warmup_s * 1e9);
    while (now_ns() < warm_until) {
        time_alloc_release(api, &spec, 100);
        time_fresh_segments(bytes, 2);
    }

    double *plugin_ns = checked_malloc(sizeof *plugin_ns * (size_t)plan->alloc_batches);
    double *segment_ns = checked_malloc(sizeof *segment_ns * (size_t)plan->alloc_batches);
    /* Interleaved batches: both see the same machine at the same time. */
    for (int batch = 0; batch < plan->alloc_batches; batch++) {
        plugin_ns[batch] = time_alloc_release(api, &spec, plan->alloc_ops_per_batch);
        segment_ns[batch] = time_fresh_segments(bytes, plan->segment_ops_per_batch);
    }
    alloc_figure figure = {.bytes = bytes};
    figure.plugin = summarise(plugin_ns, plan->alloc_batches);
    figure.segment = summarise(segment_ns, plan->alloc_batches);
    figure.speedup = figure.segment.median_ns / figure.plugin.median_ns;
    figure.met = figure.plugin.median_ns <= TARGET_ALLOC_NS &&
                 figure.speedup >= TARGET_ALLOC_SPEEDUP;
    free(plugin_ns);
    free(segment_ns);

    /* Every pair gave back its tensor, and none fell back to the heap. */
    rm_tensor_pool_stats stats = pool_stats(api);
    if (stats.live_tensors != 0 || stats.live_bytes != 0 ||
        stats.fallbacks != 0 || stats.heap_tensors != 0) {
        fprintf(stderr,
                "bench_tensor: after allocate + release at %llu bytes: live "
                "tensors %llu, live bytes %llu, fallbacks %llu, heap tensors "
                "%llu (all should be 0)\n",
                (unsigned long long)bytes,
                (unsigned long long)stats.live_tensors,
                (unsigned long long)stats.live_bytes,
                (unsigned long long)stats.fallbacks,
                (unsigned long long)stats.heap_tensors);
        exit(1);
    }
    return figure;
}

/* ---- (2) handoff between two processes --------------------------------- */

/* Messages from producer to consumer; the first byte says which. Each is
 * sent with one write() of at most PIPE_BUF bytes (atomic), except a pipe
 * copy (header and bytes in one writev()), and each is answered before the
 * next is sent, so one read() never sees two messages. */
enum {
    MSG_PING = 'p',     /* 1 byte; ack 1 byte */
    MSG_HANDOFF = 'h',  /* + descriptor; ack: first byte ^ last byte */
    MSG_COPY = 'c',     /* + uint64 length, then the bytes; ack as for 'h' */
    MSG_REPORT = 'r',   /* reply: the consumer's import + read + release
                           latency_figure (3 doubles + int) since the last
                           report, then forget those samples */
    MSG_STATS = 's',    /* reply: imports, pools_mapped (2 uint64) */
    MSG_QUIT = 'q',     /* destroy the context, reply 'q', exit */
};

#define MSG_MAX (1 + RM_TENSOR_DESCRIPTOR_SIZE)
/* The consumer's first read() of a message takes up to this much, so that a
 * small copy costs one read, as a ping does. */
#define INBOX_BYTES (64 * 1024)

typedef struct consumer_report {
    double median_ns;
    double p10_ns;
    double p90_ns;
    int samples;
} consumer_report;

static _Noreturn void consumer_die(const tensor_api *api, const char *what,
                                   int32_t status)
{
    fprintf(stderr, "bench_tensor consumer: %s failed: %s (%s)\n", what,
            api->vt->error_name(status),
            api->vt->context_last_error(api->context));
    _exit(1);
}

/* The consumer process: its own context in the same namespace; answers
 * messages until told to quit or the producer goes away. */
static _Noreturn void consumer_main(const rm_plugin_v1 *vt,
                                    const char *name_space, int in_fd,
                                    int out_fd, int max_samples)
{
    host_companion_start(); /* a consumer is a multi-threaded host too */
    tensor_api api = create_context(vt, name_space, NULL);
    double *samples = checked_malloc(sizeof *samples * (size_t)max_samples);
    int sample_count = 0;
    uint8_t *copy_buffer = NULL;
    uint64_t copy_capacity = 0;
    uint8_t *message = checked_malloc(INBOX_BYTES);
    for (;;) {
        ssize_t got = read(in_fd, message, INBOX_BYTES);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            _exit(1); /* the producer died: nothing to report to */
        uint8_t ack;
        switch (message[0]) {
        case MSG_PING:
            ack = MSG_PING;
            write_full(out_fd, &ack, 1);
            break;
        case MSG_HANDOFF: {
            if (got < MSG_MAX &&
                !read_full(in_fd, message + got, (size_t)(MSG_MAX - got)))
                _exit(1);
            uint64_t start = now_ns();
            rm_tensor *tensor = NULL;
            int32_t status = vt->tensor_import(api.context, message + 1,
                                               RM_TENSOR_DESCRIPTOR_SIZE, 0,
                                               &tensor);
            if (status != RM_OK)
                consumer_die(&api, "tensor_import", status);
            rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
            status = vt->tensor_info(api.context, tensor, &info);
            if (status != RM_OK)
                consumer_die(&api, "tensor_info", status);
            if (info.nbytes == 0 || (info.flags & RM_TENSOR_IMPORTED) == 0 ||
                (info.flags & RM_TENSOR_WRITABLE) != 0) {
                fprintf(stderr, "bench_tensor consumer: imported view has "
                                "nbytes %llu, flags %#llx\n",
                        (unsigned long long)info.nbytes,
                        (unsigned long long)info.flags);
                _exit(1);
            }
            const volatile uint8_t *data = info.data;
            ack = (uint8_t)(data[0] ^ data[info.nbytes - 1]);
            status = vt->tensor_release(api.context, tensor);
            if (status != RM_OK)
                consumer_die(&api, "tensor_release", status);
            if (sample_count < max_samples)
                samples[sample_count++] = (double)(now_ns() - start);
            write_full(out_fd, &ack, 1);
            break;
        }
        case MSG_COPY: {
            uint64_t length;
            size_t header = 1 + sizeof length;
            if ((size_t)got < header &&
                !read_full(in_fd, message + got, header - (size_t)got))
                _exit(1);
            size_t early = (size_t)got > header ? (size_t)got - header : 0;
            memcpy(&length, message + 1, sizeof length);
            if (length == 0 || early > length)
                _exit(1);
            if (length > copy_capacity) {
                free(copy_buffer);
                copy_buffer = checked_malloc((size_t)length);
                copy_capacity = length;
            }
            memcpy(copy_buffer, message + header, early);
            if (length > early &&
                !read_full(in_fd, copy_buffer + early, (size_t)(length - early)))
                _exit(1);
            ack = (uint8_t)(copy_buffer[0] ^ copy_buffer[length - 1]);
            write_full(out_fd, &ack, 1);
            break;
        }
        case MSG_REPORT: {
            latency_figure figure = summarise(samples, sample_count);
            consumer_report report = {figure.median_ns, figure.p10_ns,
                                      figure.p90_ns, figure.samples};
            sample_count = 0;
            /* The buffer of the largest copy is not needed any more. */
            free(copy_buffer);
            copy_buffer = NULL;
            copy_capacity = 0;
            write_full(out_fd, &report, sizeof report);
            break;
        }
        case MSG_STATS: {
            rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
            int32_t status = vt->tensor_pool_stats(api.context, &stats);
            if (status != RM_OK)
                consumer_die(&api, "tensor_pool_stats", status);
            uint64_t reply[2] = {stats.imports, stats.pools_mapped};
            write_full(out_fd, reply, sizeof reply);
            break;
        }
        case MSG_QUIT:
            vt->context_destroy(api.context);
            free(samples);
            free(copy_buffer);
            free(message);
            ack = MSG_QUIT;
            write_full(out_fd, &ack, 1);
            _exit(0);
        default:
            fprintf(stderr, "bench_tensor consumer: unknown message %#x\n",
                    message[0]);
            _exit(1);
        }
    }
}

typedef struct consumer_link {
    pid_t pid;
    int to_consumer;
    int from_consumer;
    int pipe_bytes; /* capacity of the pipe the copies go through */
} consumer_link;

/* Forks the consumer. Called before this process creates any context, so
 * the child starts from a plugin that holds nothing. */
static consumer_link start_consumer(const rm_plugin_v1 *vt,
                                    const char *name_space, int max_samples)
{
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0)
        die_errno("pipe2");
    /* A larger pipe makes the copy baseline faster (fewer wake-ups), not
     * slower: the comparison stays fair to copying. */
    fcntl(down[1], F_SETPIPE_SZ, (int)MIB);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die_errno("fork");
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        consumer_main(vt, name_space, down[0], up[1], max_samples);
    }
    close(down[0]);
    close(up[1]);
    running_consumer = pid;
    consumer_link link = {.pid = pid, .to_consumer = down[1],
                          .from_consumer = up[0]};
    link.pipe_bytes = fcntl(down[1], F_GETPIPE_SZ);
    return link;
}

static uint8_t receive_ack(const consumer_link *link)
{
    uint8_t ack;
    if (!read_full(link->from_consumer, &ack, 1))
        die("the consumer exited (see its message above)");
    return ack;
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

/* One handoff; `round` varies the first and last byte so that each ack
 * proves the consumer read this round's bytes through the shared pool. */
static double handoff(const tensor_api *api, const consumer_link *link,
                      const rm_tensor *tensor, uint8_t *data, uint64_t bytes,
                      uint32_t round)
{
    data[0] = (uint8_t)round;
    data[bytes - 1] = (uint8_t)(round * 7u + 3u);
    uint8_t expected = (uint8_t)(data[0] ^ data[bytes - 1]);
    uint8_t message[MSG_MAX];
    message[0] = MSG_HANDOFF;
    uint64_t start = now_ns();
    int32_t status = api->vt->tensor_export(api->context, tensor, message + 1,
                                            RM_TENSOR_DESCRIPTOR_SIZE);
    if (status != RM_OK)
        fail(api, "tensor_export", status);
    write_full(link->to_consumer, message, sizeof message);
    uint8_t ack = receive_ack(link);
    double elapsed = (double)(now_ns() - start);
    if (ack != expected) {
        fprintf(stderr, "bench_tensor: handoff of %llu bytes: the consumer "
                        "read %#x, expected %#x\n",
                (unsigned long long)bytes, ack, expected);
        exit(1);
    }
    return elapsed;
}

/* The copy the pool avoids: every byte through the pipe, the consumer
 * reading all of them into its own buffer, then the same 1-byte ack. */
static double pipe_copy(const consumer_link *link, uint8_t *data,
                        uint64_t bytes, uint32_t round)
{
    data[0] = (uint8_t)(round + 11u);
    data[bytes - 1] = (uint8_t)(round * 5u + 1u);
    uint8_t expected = (uint8_t)(data[0] ^ data[bytes - 1]);
    uint8_t header[1 + sizeof bytes];
    header[0] = MSG_COPY;
    memcpy(header + 1, &bytes, sizeof bytes);
    uint64_t start = now_ns();
    struct iovec parts[2] = {{.iov_base = header, .iov_len = sizeof header},
                             {.iov_base = data, .iov_len = (size_t)bytes}};
    ssize_t done = writev(link->to_consumer, parts, 2);
    if (done < (ssize_t)sizeof header)
        die_errno("pipe writev (did the consumer die?)");
    size_t sent = (size_t)done - sizeof header;
    write_full(link->to_consumer, data + sent, (size_t)bytes - sent);
    uint8_t ack = receive_ack(link);
    double elapsed = (double)(now_ns() - start);
    if (ack != expected) {
        fprintf(stderr, "bench_tensor: pipe copy of %llu bytes: the consumer "
                        "read %#x, expected %#x\n",
                (unsigned long long)bytes, ack, expected);
        exit(1);
    }
    return elapsed;
}

static consumer_report consumer_samples(const consumer_link *link)
{
    uint8_t message = MSG_REPORT;
    write_full(link->to_consumer, &message, 1);
    consumer_report report;
    if (!read_full(link->from_consumer, &report, sizeof report))
        die("the consumer exited (see its message above)");
    return report;
}

static void consumer_stats(const consumer_link *link, uint64_t *imports,
                           uint64_t *pools_mapped)
{
    uint8_t message = MSG_STATS;
    write_full(link->to_consumer, &message, 1);
    uint64_t reply[2];
    if (!read_full(link->from_consumer, reply, sizeof reply))
        die("the consumer exited (see its message above)");
    *imports = reply[0];
    *pools_mapped = reply[1];
}

/* On these 2-CPU VMs a round trip between two processes is bimodal: about
 * 2 us when the other CPU is awake, 20-70 us when it wakes from idle. One
 * median over both would compare whichever mode each side happened to
 * hit, so each mode is summarised and judged on its own: a sample is
 * "awake" when it is below `threshold_ns`, three times the fastest
 * ping-pong decile (the floor of the awake mode). */
typedef struct handoff_mode {
    latency_figure handoff;
    latency_figure ping;
    double ratio; /* handoff median / ping-pong median within the mode */
    bool judged;  /* both sides have MODE_MIN_SAMPLES samples in it */
    bool met;
} handoff_mode;

typedef struct handoff_figure {
    uint64_t bytes;
    latency_figure handoff;
    latency_figure ping;
    latency_figure copy;
    consumer_report consumer; /* import + info + read + release, in the consumer */
    double ratio;             /* handoff median / ping-pong median, both modes */
    double copy_ratio;        /* copy median / ping-pong median */
    double setup_s;           /* allocating and writing the tensor once */
    double threshold_ns;      /* awake below, waking at or above */
    handoff_mode awake;
    handoff_mode waking;
    bool met;                 /* every judged mode within the target */
} handoff_figure;

/* The samples of `all` below (awake) or at/above the threshold. */
static latency_figure mode_of(const double *all, int count, double threshold_ns,
                              bool awake, double *scratch)
{
    int used = 0;
    for (int i = 0; i < count; i++)
        if ((all[i] < threshold_ns) == awake)
            scratch[used++] = all[i];
    return summarise(scratch, used);
}

static handoff_mode split_mode(const double *handoff_ns, const double *ping_ns, int rounds,
                               double threshold_ns, bool awake, double *scratch)
{
    handoff_mode mode;
    mode.handoff = mode_of(handoff_ns, rounds, threshold_ns, awake, scratch);
    mode.ping = mode_of(ping_ns, rounds, threshold_ns, awake, scratch);
    mode.judged = mode.handoff.samples >= MODE_MIN_SAMPLES &&
                  mode.ping.samples >= MODE_MIN_SAMPLES;
    mode.ratio = mode.ping.samples > 0 && mode.handoff.samples > 0
                     ? mode.handoff.median_ns / mode.ping.median_ns
                     : 0;
    mode.met = !mode.judged || mode.ratio <= TARGET_HANDOFF_RATIO;
    return mode;
}

static handoff_figure measure_handoff(const tensor_api *api,
                                      const consumer_link *link,
                                      const bench_plan *plan,
                                      const handoff_size_plan *size,
                                      uint64_t *handoffs_done)
{
    uint64_t bytes = size->bytes;
    handoff_figure figure = {.bytes = bytes};

    uint64_t setup_start = now_ns();
    rm_tensor_info info;
    rm_tensor *tensor = allocate_shared(api, bytes, &info);
    uint8_t *data = info.data;
    /* Real data in every page: the copy baseline sends it, and the
     * producer's pages are all present, as after a real producer's work. */
    memset(data, 0x5a, (size_t)bytes);
    figure.setup_s = (double)(now_ns() - setup_start) * 1e-9;

    uint32_t round = 0;
    for (int i = 0; i < plan->handoff_warmup_rounds; i++) {
        ping_pong(link);
        handoff(api, link, tensor, data, bytes, round++);
    }
    if (size->copy_rounds > 0)
        pipe_copy(link, data, bytes, round++);
    consumer_samples(link); /* forget the warm-up's samples */
    *handoffs_done += (uint64_t)plan->handoff_warmup_rounds;

    int max_rounds = plan->handoff_rounds;
    double *handoff_ns = checked_malloc(sizeof *handoff_ns * (size_t)max_rounds);
    double *ping_ns = checked_malloc(sizeof *ping_ns * (size_t)max_rounds);
    double *copy_ns = checked_malloc(sizeof *copy_ns * (size_t)max_rounds);
    int rounds = 0, copies = 0;
    uint64_t deadline = now_ns() + (uint64_t)(plan->handoff_max_s * 1e9);
    while (rounds < max_rounds &&
           (rounds < plan->handoff_min_rounds || now_ns() < deadline)) {
        /* Alternate which goes first, so that neither always follows the
         * other's wake-up. */
        if (rounds % 2 == 0) {
            ping_ns[rounds] = ping_pong(link);
            handoff_ns[rounds] = handoff(api, link, tensor, data, bytes, round++);
        } else {
            handoff_ns[rounds] = handoff(api, link, tensor, data, bytes, round++);
            ping_ns[rounds] = ping_pong(link);
        }
        if (copies < size->copy_rounds)
            copy_ns[copies++] = pipe_copy(link, data, bytes, round++);
        rounds++;
    }
    *handoffs_done += (uint64_t)rounds;
    /* The modes first: summarise() sorts in place. */
    double *scratch = checked_malloc(sizeof *scratch * (size_t)max_rounds);
    memcpy(scratch, ping_ns, sizeof *scratch * (size_t)rounds);
    figure.threshold_ns = 3.0 * summarise(scratch, rounds).p10_ns;
    figure.awake = split_mode(handoff_ns, ping_ns, rounds, figure.threshold_ns, true, scratch);
    figure.waking = split_mode(handoff_ns, ping_ns, rounds, figure.threshold_ns, false,
                               scratch);
    free(scratch);
    figure.handoff = summarise(handoff_ns, rounds);
    figure.ping = summarise(ping_ns, rounds);
    figure.copy = summarise(copy_ns, copies);
    figure.consumer = consumer_samples(link);
    figure.ratio = figure.handoff.median_ns / figure.ping.median_ns;
    figure.copy_ratio = copies > 0 ? figure.copy.median_ns / figure.ping.median_ns : 0;
    figure.met = figure.awake.met && figure.waking.met &&
                 (figure.awake.judged || figure.waking.judged);
    free(handoff_ns);
    free(ping_ns);
    free(copy_ns);

    release(api, tensor);
    /* Every consumer hold ended before its ack, and the producer's release
     * was the last: the tensor must be freed now. */
    rm_tensor_pool_stats stats = pool_stats(api);
    if (stats.live_tensors != 0 || stats.live_bytes != 0) {
        fprintf(stderr,
                "bench_tensor: after the %llu-byte handoffs were released: "
                "live tensors %llu, live bytes %llu (should be 0)\n",
                (unsigned long long)bytes,
                (unsigned long long)stats.live_tensors,
                (unsigned long long)stats.live_bytes);
        exit(1);
    }
    return figure;
}

/* ---- (3) the plugin's own cost per handoff ----------------------------- */

typedef struct cost_figure {
    uint64_t bytes;
    latency_figure pair;    /* export + import + release */
    latency_figure export_; /* each step alone */
    latency_figure import;
    latency_figure release;
    latency_figure ping;    /* 1-byte pipe ping-pong between the batches */
    double ratio;           /* pair median / ping-pong median */
    bool met;
} cost_figure;

#define STEP_RUN 32

static void import_one(const tensor_api *importer, const uint8_t *descriptor,
                       rm_tensor **out)
{
    int32_t status = importer->vt->tensor_import(
        importer->context, descriptor, RM_TENSOR_DESCRIPTOR_SIZE, 0, out);
    if (status != RM_OK)
        fail(importer, "tensor_import (second context)", status);
}

static cost_figure measure_cost(const tensor_api *owner,
                                const tensor_api *importer,
                                const consumer_link *link,
                                const bench_plan *plan, uint64_t bytes)
{
    const rm_plugin_v1 *vt = owner->vt;
    rm_tensor_info owner_info;
    rm_tensor *tensor = allocate_shared(owner, bytes, &owner_info);
    uint8_t *data = owner_info.data;
    memset(data, 0x33, (size_t)bytes);
    data[0] = 0xa1;
    data[bytes - 1] = 0x1e;
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];

    /* The path being timed must be a real import: the second context's own
     * read-only mapping of the owner's pool, showing the owner's bytes. */
    int32_t status = vt->tensor_export(owner->context, tensor, descriptor,
                                       sizeof descriptor);
    if (status != RM_OK)
        fail(owner, "tensor_export", status);
    rm_tensor *view;
    import_one(importer, descriptor, &view);
    rm_tensor_info view_info = tensor_info(importer, view);
    const uint8_t *view_data = view_info.data;
    if (view_info.data == owner_info.data ||
        (view_info.flags & RM_TENSOR_IMPORTED) == 0 ||
        (view_info.flags & RM_TENSOR_WRITABLE) != 0 ||
        view_info.nbytes != bytes || view_info.pool_id != owner_info.pool_id ||
        view_data[0] != 0xa1 || view_data[bytes - 1] != 0x1e) {
        fprintf(stderr,
                "bench_tensor: the second context's import is not its own "
                "read-only view of the owner's bytes: data %p (owner %p), "
                "flags %#llx, nbytes %llu\n",
                view_info.data, owner_info.data,
                (unsigned long long)view_info.flags,
                (unsigned long long)view_info.nbytes);
        exit(1);
    }
    release(importer, view);
    rm_tensor_pool_stats importer_stats = pool_stats(importer);
    if (importer_stats.pools_mapped != 1) {
        fprintf(stderr, "bench_tensor: the second context maps %llu pools, "
                        "expected 1\n",
                (unsigned long long)importer_stats.pools_mapped);
        exit(1);
    }

    int ops = plan->cost_ops_per_batch;
    rm_tensor *handles[STEP_RUN];
    double *pair_ns = checked_malloc(sizeof *pair_ns * (size_t)plan->cost_batches);
    double *export_ns = checked_malloc(sizeof *export_ns * (size_t)plan->cost_batches);
    double *import_ns = checked_malloc(sizeof *import_ns * (size_t)plan->cost_batches);
    double *release_ns = checked_malloc(sizeof *release_ns * (size_t)plan->cost_batches);
    /* The baseline the figure is set against: ping-pongs with the consumer
     * between batches, so that both see the same machine. */
    int pings_per_batch = 4;
    double *ping_ns = checked_malloc(sizeof *ping_ns * (size_t)plan->cost_batches *
                                     (size_t)pings_per_batch);
    uint64_t warm_until = now_ns() + (uint64_t)(plan->cost_warmup_s * 1e9);
    int batches = -1; /* -1 and below: warm-up, not recorded */
    for (;;) {
        if (batches < 0 && now_ns() >= warm_until)
            batches = 0;
        if (batches >= plan->cost_batches)
            break;
        /* Export + import + release, as one handoff does them. */
        uint64_t start = now_ns();
        for (int op = 0; op < ops; op++) {
            status = vt->tensor_export(owner->context, tensor, descriptor,
                                       sizeof descriptor);
            if (status != RM_OK)
                fail(owner, "tensor_export", status);
            rm_tensor *handle;
            import_one(importer, descriptor, &handle);
            status = vt->tensor_release(importer->context, handle);
            if (status != RM_OK)
                fail(importer, "tensor_release", status);
        }
        uint64_t pair_end = now_ns();
        /* Each step alone, in runs of STEP_RUN: that many exports, then
         * imports (held), then releases. Short runs keep the handles few,
         * as in a pipeline; a thousand held at once would measure the
         * heap's growth and trimming instead. */
        uint64_t export_total = 0, import_total = 0, release_total = 0;
        for (int done = 0; done < ops; done += STEP_RUN) {
            int run = ops - done < STEP_RUN ? ops - done : STEP_RUN;
            uint64_t step_start = now_ns();
            for (int op = 0; op < run; op++) {
                status = vt->tensor_export(owner->context, tensor, descriptor,
                                           sizeof descriptor);
                if (status != RM_OK)
                    fail(owner, "tensor_export", status);
            }
            uint64_t export_end = now_ns();
            for (int op = 0; op < run; op++)
                import_one(importer, descriptor, &handles[op]);
            uint64_t import_end = now_ns();
            for (int op = 0; op < run; op++) {
                status = vt->tensor_release(importer->context, handles[op]);
                if (status != RM_OK)
                    fail(importer, "tensor_release", status);
            }
            uint64_t release_end = now_ns();
            export_total += export_end - step_start;
            import_total += import_end - export_end;
            release_total += release_end - import_end;
        }
        for (int ping = 0; ping < pings_per_batch; ping++) {
            double elapsed = ping_pong(link);
            if (batches >= 0)
                ping_ns[batches * pings_per_batch + ping] = elapsed;
        }
        if (batches >= 0) {
            pair_ns[batches] = (double)(pair_end - start) / ops;
            export_ns[batches] = (double)export_total / ops;
            import_ns[batches] = (double)import_total / ops;
            release_ns[batches] = (double)release_total / ops;
            batches++;
        }
    }
    cost_figure figure = {.bytes = bytes};
    figure.pair = summarise(pair_ns, batches);
    figure.export_ = summarise(export_ns, batches);
    figure.import = summarise(import_ns, batches);
    figure.release = summarise(release_ns, batches);
    figure.ping = summarise(ping_ns, batches * pings_per_batch);
    figure.ratio = figure.pair.median_ns / figure.ping.median_ns;
    figure.met = figure.pair.median_ns <= TARGET_COST_NS;
    free(ping_ns);
    free(pair_ns);
    free(export_ns);
    free(import_ns);
    free(release_ns);

    /* The owner's release was the last hold: freed now, and the descriptor
     * of freed memory must be refused (the import validated it, it did
     * not trust a cached pointer). */
    release(owner, tensor);
    rm_tensor_pool_stats stats = pool_stats(owner);
    if (stats.live_tensors != 0) {
        fprintf(stderr, "bench_tensor: after the import/release loop: %llu "
                        "live tensors (should be 0)\n",
                (unsigned long long)stats.live_tensors);
        exit(1);
    }
    rm_tensor *stale = NULL;
    status = vt->tensor_import(importer->context, descriptor,
                               RM_TENSOR_DESCRIPTOR_SIZE, 0, &stale);
    if (status != RM_E_STALE_DESCRIPTOR) {
        fprintf(stderr, "bench_tensor: importing the descriptor of a freed "
                        "tensor gave %s, expected RM_E_STALE_DESCRIPTOR\n",
                vt->error_name(status));
        exit(1);
    }
    return figure;
}

/* ---- /dev/shm hygiene --------------------------------------------------- */

/* Names in /dev/shm that this run created and did not remove: the plugin's
 * segments of the run's namespace ("rm.<namespace>.") and the baseline's.
 * Prints them, or unlinks them. */
static int leftover_segments(const char *name_space, bool unlink_them)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rm.%s.", name_space);
    return shm_leftovers(prefix, segment_name + 1, unlink_them,
                         "left in /dev/shm");
}

/* A failed run (any exit(1)) must not leave a consumer or segments behind.
 * The namespace is this run's alone, so nothing else is touched. The
 * consumer inherits this handler but never runs it (it leaves with
 * _exit(), and the pid check covers an exit() there). */
static void clean_up_at_exit(void)
{
    if (getpid() != producer_pid)
        return;
    if (running_consumer > 0) {
        kill(running_consumer, SIGKILL);
        waitpid(running_consumer, NULL, 0);
        running_consumer = 0;
    }
    leftover_segments(run_namespace, true);
}

/* ---- output ------------------------------------------------------------- */

static void print_json(const bench_plan *plan, const alloc_figure *alloc,
                       const handoff_figure *handoffs, int handoff_count,
                       const cost_figure *cost, int pipe_bytes)
{
    for (int i = 0; i < ALLOC_SIZES; i++) {
        const alloc_figure *f = &alloc[i];
        printf("{\"bench\":\"tensor\",\"figure\":\"alloc_release_ns\","
               "\"bytes\":%llu,\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,"
               "\"unit\":\"ns\",\"baseline\":\"fresh_segment\","
               "\"baseline_median\":%.1f,\"baseline_p10\":%.1f,"
               "\"baseline_p90\":%.1f,\"speedup\":%.1f,"
               "\"target\":\"median <= %.0f ns and speedup >= %.0f\","
               "\"met\":%s,\"batches\":%d,\"ops_per_batch\":%d,"
               "\"baseline_ops_per_batch\":%d}\n",
               (unsigned long long)f->bytes, f->plugin.median_ns,
               f->plugin.p10_ns, f->plugin.p90_ns, f->segment.median_ns,
               f->segment.p10_ns, f->segment.p90_ns, f->speedup,
               TARGET_ALLOC_NS, TARGET_ALLOC_SPEEDUP,
               f->met ? "true" : "false", plan->alloc_batches,
               plan->alloc_ops_per_batch, plan->segment_ops_per_batch);
    }
    for (int i = 0; i < handoff_count; i++) {
        const handoff_figure *f = &handoffs[i];
        printf("{\"bench\":\"tensor\",\"figure\":\"handoff_round_trip_ns\","
               "\"bytes\":%llu,\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,"
               "\"unit\":\"ns\",\"baseline\":\"pipe_ping_pong_1_byte\","
               "\"baseline_median\":%.1f,\"baseline_p10\":%.1f,"
               "\"baseline_p90\":%.1f,\"ratio\":%.3f,"
               "\"target\":\"ratio <= %.2f in each judged mode\",\"met\":%s,"
               "\"rounds\":%d,"
               "\"consumer_import_read_release_median\":%.1f,"
               "\"consumer_import_read_release_p90\":%.1f,"
               "\"mode_threshold_ns\":%.1f,"
               "\"awake_median\":%.1f,\"awake_baseline_median\":%.1f,"
               "\"awake_ratio\":%.3f,\"awake_samples\":%d,\"awake_judged\":%s,"
               "\"waking_median\":%.1f,\"waking_baseline_median\":%.1f,"
               "\"waking_ratio\":%.3f,\"waking_samples\":%d,\"waking_judged\":%s}\n",
               (unsigned long long)f->bytes, f->handoff.median_ns,
               f->handoff.p10_ns, f->handoff.p90_ns, f->ping.median_ns,
               f->ping.p10_ns, f->ping.p90_ns, f->ratio, TARGET_HANDOFF_RATIO,
               f->met ? "true" : "false", f->handoff.samples,
               f->consumer.median_ns, f->consumer.p90_ns, f->threshold_ns,
               f->awake.handoff.median_ns, f->awake.ping.median_ns, f->awake.ratio,
               f->awake.handoff.samples, f->awake.judged ? "true" : "false",
               f->waking.handoff.median_ns, f->waking.ping.median_ns, f->waking.ratio,
               f->waking.handoff.samples, f->waking.judged ? "true" : "false");
        if (f->copy.samples > 0)
            printf("{\"bench\":\"tensor\",\"figure\":\"pipe_copy_round_trip_ns\","
                   "\"bytes\":%llu,\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,"
                   "\"unit\":\"ns\",\"baseline\":\"pipe_ping_pong_1_byte\","
                   "\"baseline_median\":%.1f,\"ratio\":%.3f,"
                   "\"vs_handoff\":%.3f,\"gb_per_s\":%.3f,\"rounds\":%d,"
                   "\"pipe_buffer_bytes\":%d}\n",
                   (unsigned long long)f->bytes, f->copy.median_ns,
                   f->copy.p10_ns, f->copy.p90_ns, f->ping.median_ns,
                   f->copy_ratio, f->copy.median_ns / f->handoff.median_ns,
                   (double)f->bytes / f->copy.median_ns, f->copy.samples,
                   pipe_bytes);
    }
    printf("{\"bench\":\"tensor\",\"figure\":\"plugin_handoff_cost_ns\","
           "\"bytes\":%llu,\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,"
           "\"unit\":\"ns\",\"baseline\":\"pipe_ping_pong_1_byte\","
           "\"baseline_median\":%.1f,\"baseline_p10\":%.1f,"
           "\"baseline_p90\":%.1f,\"ratio\":%.4f,"
           "\"target\":\"median <= %.0f ns\",\"met\":%s,"
           "\"export_median\":%.1f,\"import_median\":%.1f,"
           "\"release_median\":%.1f,\"batches\":%d,\"ops_per_batch\":%d}\n",
           (unsigned long long)cost->bytes, cost->pair.median_ns,
           cost->pair.p10_ns, cost->pair.p90_ns, cost->ping.median_ns,
           cost->ping.p10_ns, cost->ping.p90_ns, cost->ratio, TARGET_COST_NS, cost->met ? "true" : "false",
           cost->export_.median_ns, cost->import.median_ns,
           cost->release.median_ns, cost->pair.samples,
           plan->cost_ops_per_batch);
}

static void print_table(const bench_plan *plan, const alloc_figure *alloc,
                        const handoff_figure *handoffs, int handoff_count,
                        const cost_figure *cost, int pipe_bytes,
                        double total_s)
{
    char s[8][32]; /* each argument of one printf needs its own buffer */
    printf("tensor benchmark (%s; shm.pool_bytes %s; %.1f s)\n",
           plan == &quick_plan ? "quick" : "full", plan->pool_bytes, total_s);
    printf("configuration of a host: features = all (the registry's eviction thread "
           "runs),\none more host thread alive in each process\n");

    printf("\n1. tensor_allocate + tensor_release (uint8 1-D, warm) vs a fresh "
           "segment per tensor\n   (shm_open + ftruncate + mmap + close + "
           "munmap + shm_unlink); target <= %.0f ns and >= %.0fx\n",
           TARGET_ALLOC_NS, TARGET_ALLOC_SPEEDUP);
    printf("   %-8s %10s %10s %10s | %10s %10s %10s | %8s %7s\n", "size",
           "median", "p10", "p90", "segment", "p10", "p90", "speedup",
           "target");
    for (int i = 0; i < ALLOC_SIZES; i++) {
        const alloc_figure *f = &alloc[i];
        printf("   %-8s %10s %10s %10s | %10s %10s %10s | %7.0fx %7s\n",
               size_label(f->bytes, s[0], sizeof s[0]),
               time_label(f->plugin.median_ns, s[1], sizeof s[1]),
               time_label(f->plugin.p10_ns, s[2], sizeof s[2]),
               time_label(f->plugin.p90_ns, s[3], sizeof s[3]),
               time_label(f->segment.median_ns, s[4], sizeof s[4]),
               time_label(f->segment.p10_ns, s[5], sizeof s[5]),
               time_label(f->segment.p90_ns, s[6], sizeof s[6]),
               f->speedup, met_label(f->met));
    }

    printf("\n2. handoff round trip between two processes (export, descriptor "
           "down a pipe,\n   import, read first + last byte, release, 1-byte "
           "ack) vs an empty 1-byte\n   pipe ping-pong interleaved with it; "
           "target ratio <= %.2f\n",
           TARGET_HANDOFF_RATIO);
    printf("   %-8s %10s %10s %10s | %10s %7s | %10s %7s %6s\n", "size",
           "handoff", "p10", "p90", "ping-pong", "ratio", "consumer", "target",
           "rounds");
    for (int i = 0; i < handoff_count; i++) {
        const handoff_figure *f = &handoffs[i];
        printf("   %-8s %10s %10s %10s | %10s %7.3f | %10s %7s %6d\n",
               size_label(f->bytes, s[0], sizeof s[0]),
               time_label(f->handoff.median_ns, s[1], sizeof s[1]),
               time_label(f->handoff.p10_ns, s[2], sizeof s[2]),
               time_label(f->handoff.p90_ns, s[3], sizeof s[3]),
               time_label(f->ping.median_ns, s[4], sizeof s[4]), f->ratio,
               time_label(f->consumer.median_ns, s[5], sizeof s[5]),
               met_label(f->met), f->handoff.samples);
    }
    printf("   (consumer: its import + tensor_info + 2 byte reads + release, "
           "median, timed inside it)\n");
    printf("   the same rounds by mode of the round-trip floor (awake: below 3x the fastest\n"
           "   ping-pong decile; waking: a CPU woke from idle), each judged on its own:\n");
    printf("   %-8s %9s | %10s %10s %7s %5s | %10s %10s %7s %5s | %6s\n", "size",
           "threshold", "awake", "ping", "ratio", "n", "waking", "ping", "ratio", "n",
           "target");
    for (int i = 0; i < handoff_count; i++) {
        const handoff_figure *f = &handoffs[i];
        char ratio[2][16];
        const handoff_mode *modes[2] = {&f->awake, &f->waking};
        for (int m = 0; m < 2; m++) {
            if (modes[m]->judged)
                snprintf(ratio[m], sizeof ratio[m], "%.3f", modes[m]->ratio);
            else
                snprintf(ratio[m], sizeof ratio[m], "n/a");
        }
        printf("   %-8s %9s | %10s %10s %7s %5d | %10s %10s %7s %5d | %6s\n",
               size_label(f->bytes, s[0], sizeof s[0]),
               time_label(f->threshold_ns, s[1], sizeof s[1]),
               time_label(f->awake.handoff.median_ns, s[2], sizeof s[2]),
               time_label(f->awake.ping.median_ns, s[3], sizeof s[3]), ratio[0],
               f->awake.handoff.samples,
               time_label(f->waking.handoff.median_ns, s[4], sizeof s[4]),
               time_label(f->waking.ping.median_ns, s[5], sizeof s[5]), ratio[1],
               f->waking.handoff.samples, met_label(f->met));
    }
    printf("   (n/a: fewer than %d samples of that mode on one side)\n", MODE_MIN_SAMPLES);
    printf("   pipe copy of the whole tensor (pipe buffer %d bytes; consumer "
           "reads every byte):\n",
           pipe_bytes);
    printf("   %-8s %10s %10s %10s | %10s %9s %9s %6s\n", "size", "copy",
           "p10", "p90", "vs ping", "vs handoff", "GB/s", "rounds");
    for (int i = 0; i < handoff_count; i++) {
        const handoff_figure *f = &handoffs[i];
        if (f->copy.samples == 0)
            continue;
        printf("   %-8s %10s %10s %10s | %9.1fx %9.1fx %9.2f %6d\n",
               size_label(f->bytes, s[0], sizeof s[0]),
               time_label(f->copy.median_ns, s[1], sizeof s[1]),
               time_label(f->copy.p10_ns, s[2], sizeof s[2]),
               time_label(f->copy.p90_ns, s[3], sizeof s[3]), f->copy_ratio,
               f->copy.median_ns / f->handoff.median_ns,
               (double)f->bytes / f->copy.median_ns, f->copy.samples);
    }

    printf("\n3. the plugin's own cost per handoff: export + import (second "
           "context, own mapping,\n   full validation) + release, warm, %s "
           "tensor; target <= %.0f ns\n",
           size_label(cost->bytes, s[0], sizeof s[0]), TARGET_COST_NS);
    printf("   %10s %10s %10s | %10s %8s | %7s | %10s %10s %10s\n", "median",
           "p10", "p90", "ping-pong", "ratio", "target", "export", "import",
           "release");
    printf("   %10s %10s %10s | %10s %8.4f | %7s | %10s %10s %10s\n",
           time_label(cost->pair.median_ns, s[0], sizeof s[0]),
           time_label(cost->pair.p10_ns, s[1], sizeof s[1]),
           time_label(cost->pair.p90_ns, s[2], sizeof s[2]),
           time_label(cost->ping.median_ns, s[6], sizeof s[6]), cost->ratio,
           met_label(cost->met),
           time_label(cost->export_.median_ns, s[3], sizeof s[3]),
           time_label(cost->import.median_ns, s[4], sizeof s[4]),
           time_label(cost->release.median_ns, s[5], sizeof s[5]));
    printf("   (ping-pong: the same 1-byte pipe ping-pong, between the "
           "batches; export, import,\n   release: each step alone, "
           "medians)\n");
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_tensor [--json] [--quick] "
                    "[PATH_TO_rm_plugin.so]\n"
                    "       (PATH defaults to $RM_PLUGIN_PATH)\n");
}

int main(int argc, char **argv)
{
    bench_options options;
    int exit_status = parse_options(argc, argv, 1, usage, &options);
    if (exit_status >= 0)
        return exit_status;
    bool json = options.json;
    const bench_plan *plan = options.quick ? &quick_plan : &full_plan;
    const char *path = options.plugin_path;
    /* A dead consumer must show up as an error, not kill the producer. */
    signal(SIGPIPE, SIG_IGN);

    uint64_t run_start = now_ns();
    producer_pid = getpid();
    const char *name_space = run_namespace;
    snprintf(run_namespace, sizeof run_namespace, "bench-%ld", (long)producer_pid);
    snprintf(segment_name, sizeof segment_name, "/rm-bench-segment.%ld",
             (long)producer_pid);
    atexit(clean_up_at_exit);

    rm_loaded_plugin plugin;
    const rm_plugin_v1 *vt = open_plugin(path, &plugin);
    /* Fork the consumer before any context exists here. */
    int max_samples = plan->handoff_rounds + plan->handoff_warmup_rounds;
    consumer_link link = start_consumer(vt, name_space, max_samples);
    /* After the fork: the consumer starts its own (see consumer_main). */
    host_companion_start();

    tensor_api api = create_context(vt, name_space, plan->pool_bytes);

    alloc_figure alloc[ALLOC_SIZES];
    for (int i = 0; i < ALLOC_SIZES; i++)
        alloc[i] = measure_alloc(&api, plan, alloc_sizes[i]);

    handoff_figure handoffs[MAX_HANDOFF_SIZES];
    uint64_t handoffs_done = 0;
    for (int i = 0; i < plan->handoff_sizes; i++)
        handoffs[i] = measure_handoff(&api, &link, plan, &plan->handoff[i],
                                      &handoffs_done);
    uint64_t consumer_imports = 0, consumer_pools = 0;
    consumer_stats(&link, &consumer_imports, &consumer_pools);
    if (consumer_imports != handoffs_done || consumer_pools != 1) {
        fprintf(stderr,
                "bench_tensor: the consumer counted %llu imports (sent %llu) "
                "and maps %llu pools (expected 1)\n",
                (unsigned long long)consumer_imports,
                (unsigned long long)handoffs_done,
                (unsigned long long)consumer_pools);
        exit(1);
    }

    tensor_api second = create_context(vt, name_space, NULL);
    cost_figure cost = measure_cost(&api, &second, &link, plan, 4 * KIB);
    stop_consumer(&link);

    vt->context_destroy(second.context);
    vt->context_destroy(api.context);
    host_companion_stop();
    if (leftover_segments(name_space, false) != 0)
        die("segments of this run are left in /dev/shm after every context "
            "was destroyed");
    rm_plugin_unload(&plugin);
    double total_s = (double)(now_ns() - run_start) * 1e-9;

    if (json)
        print_json(plan, alloc, handoffs, plan->handoff_sizes, &cost,
                   link.pipe_bytes);
    else
        print_table(plan, alloc, handoffs, plan->handoff_sizes, &cost,
                    link.pipe_bytes, total_s);
    return 0;
}
