/* Benchmark of model weights in device memory (ABI 1.4, REF: gpu-weights)
 * across real processes, through the real shared object:
 *  (a) latency: a new process loads the model (a 1 GiB device buffer from
 *      alloc_device_buffer, filled from a host image that was made before
 *      the clock started: the first load), then newcomers, each a new
 *      process, get the ready model (model_get_or_load until it returns
 *      the mapped device pointer: the attach; target median <= 1 ms on a
 *      GPU), and one of them releases and gets it again many times while
 *      it stays mapped in that process (the cached attach). The first load
 *      is the baseline the attaches are divided by;
 *  (b) device memory: N = 1, 2, 4, 8 processes each hold the same model;
 *      the figure is cuMemGetInfo_v2's total - free with the model held
 *      minus the same with the N processes started but holding nothing
 *      (each has made its CUDA context and its plugin context), divided by
 *      the device bytes of one copy (target <= 1.02). What the N contexts
 *      took (a process that only creates its context) is reported apart,
 *      per process. The baseline, in the same run: the same N processes in
 *      process scope, each loading a private copy (ratio about N).
 * Every process is this program exec'd again (--holder), never a fork of
 * a process that has initialised CUDA. Every figure is checked: one loader
 * call per node-scope model (none in an attacher), one per process in
 * process scope, every holder reads the loader's bytes at the start, the
 * middle and the end of the model, every row says the model is in device
 * memory, the device's memory comes back to the baseline once the holders
 * have exited, and nothing of the run is left in /dev/shm.
 *
 * The driver is cuda.driver: --driver PATH, else the configuration file in
 * $RM_PLUGIN_CONFIG, else libcuda.so.1. When that library is the test-only
 * fake (tests/fake_cuda), every row and every JSON object says so: device
 * memory is host memory there, contexts take none, and the figures are
 * not GPU figures.
 *
 * Usage: bench_gpu_weights [--json] [--quick] [--driver PATH] [--bytes SIZE]
 *                          [--processes N,N,...] [--newcomers N]
 *                          [PATH_TO_rm_plugin.so]
 * SIZE takes a K, M or G suffix (powers of 1024); default 1G (--quick:
 * 8M); processes default 1,2,4,8 (--quick: 1,2), at most 8 each.
 * Exit status 77 (skipped) when no device or no 1.4 plugin is usable.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "cuda_host.h"
#include "model_pattern.h"
#include "plugin_loader.h"
#include "rm_plugin.h"

extern char **environ;

const char bench_program[] = "bench_gpu_weights";

#define MAX_COUNTS 8
#define MAX_HOLDERS 8
#define HOLDER_TIMEOUT_S 180

/* Targets from the issue. */
#define TARGET_ATTACH_NS 1e6
#define TARGET_MEMORY_RATIO 1.02

typedef struct bench_plan {
    uint64_t model_bytes;
    int counts[MAX_COUNTS];
    int count_rows;
    int load_rounds;    /* (a): first loads, each of a new key */
    int newcomers;      /* (a): new processes that attach, per round */
    int cached_cycles;  /* (a): release + get in one newcomer, per round */
} bench_plan;

static bench_plan full_plan = {
    .model_bytes = 1 * GIB,
    .counts = {1, 2, 4, 8},
    .count_rows = 4,
    .load_rounds = 3,
    .newcomers = 10,
    .cached_cycles = 200,
};

static bench_plan quick_plan = {
    .model_bytes = 8 * MIB,
    .counts = {1, 2},
    .count_rows = 2,
    .load_rounds = 2,
    .newcomers = 3,
    .cached_cycles = 20,
};

/* ---- the run ------------------------------------------------------------ */

static pid_t bench_pid;
static char run_namespace[33]; /* registry.namespace: 1 to 32 characters */
static char cuda_driver[256] = "libcuda.so.1";
static const char *plugin_path;

/* A context as a host creates one: every capability, the run's driver,
 * the registry in `scope` ("node": the run's namespace). */
static rm_context *create_context(const rm_plugin_v1 *vt, const char *scope)
{
    rm_config_entry entries[] = {
        {.key = "features", .value = "all"},
        {.key = "cuda.driver", .value = cuda_driver},
        {.key = "registry.scope", .value = scope},
        {.key = "registry.namespace", .value = run_namespace},
    };
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    options.entries = entries;
    options.entry_count = sizeof entries / sizeof entries[0];
    rm_context *context = NULL;
    int32_t status = vt->context_create(&options, &context);
    if (status != RM_OK)
        die_status(vt, NULL, "context_create", status);
    return context;
}

/* Why no device is usable through this plugin and driver, or NULL. */
static const char *device_unusable(const rm_plugin_v1 *vt, rm_context *context,
                                   rm_cuda_info *info, char *why, size_t why_size)
{
    *info = (rm_cuda_info)RM_STRUCT_INIT(rm_cuda_info);
    int32_t status = vt->cuda_info(context, info);
    if (status != RM_OK) {
        snprintf(why, why_size, "cuda_info: %s: %s", vt->error_name(status),
                 vt->context_last_error(context));
        return why;
    }
    if (info->status != RM_OK) {
        snprintf(why, why_size, "%s: %s", vt->error_name(info->status), info->message);
        return why;
    }
    return NULL;
}

/* ---- messages between this program and its holders ---------------------- */

/* To a holder, one byte each, answered before the next is sent. */
enum {
    MSG_GET = 'g',          /* get the model (an attach, expectedly): reply get_reply */
    MSG_PREPARE_GET = 'G',  /* make the host image, then get (a load): reply get_reply */
    MSG_CYCLES = 'c',       /* + int32: release + get, timed: reply cycles_reply */
    MSG_QUIT = 'q',         /* release, destroy, exit 0 */
};

typedef struct ready_reply {
    int32_t pid;
    int32_t ok;
    char message[512];
} ready_reply;

typedef struct get_reply {
    int32_t ok;
    int32_t loader_calls;
    double get_ns;
    double alloc_ns;        /* its loader's alloc_device_buffer, when it ran */
    double copy_ns;         /* its loader's copies, when it ran */
    uint64_t device_pointer;
    uint32_t memory;        /* its row */
    uint32_t copied_on_stream;
    uint64_t device_bytes;
    char message[1024];
} get_reply;

typedef struct cycles_reply {
    int32_t ok;
    int32_t loader_calls;   /* after the cycles: still those of the first get */
    double median_ns, p10_ns, p90_ns;
    int32_t cycles;
    char message[512];
} cycles_reply;

/* ---- a holder (this program, exec'd with --holder) ---------------------- */

typedef struct holder_state {
    const rm_plugin_v1 *vt;
    rm_context *context;
    cuda_host cuda;
    const char *key;
    uint64_t seed;          /* of the model's name: "name@cuda:N" on any N */
    uint64_t bytes;
    uint64_t *image;        /* the host image of the model, when prepared */
    int loader_calls;
    double alloc_ns;
    double copy_ns;
    bool copied_on_stream;
    char error[256];
} holder_state;

enum { COPY_CHUNK_BYTES = 64 << 20 };

static void fill_image(uint64_t *words, uint64_t seed, uint64_t first, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++)
        words[i] = pattern_word(seed, first + i);
}

/* Fills the device buffer from the host image (or, in a process that was
 * not meant to load, from a pattern made on the way). */
static int32_t holder_load(void *user, const char *key, rm_loaded_model *out)
{
    holder_state *h = user;
    (void)key;
    h->loader_calls++;
    if (!RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out)) {
        snprintf(h->error, sizeof h->error, "the plugin offers no device buffer");
        return RM_E_FEATURE_UNAVAILABLE;
    }
    uint64_t device = 0;
    void *stream = NULL;
    uint64_t allocated = now_ns();
    int32_t status = out->alloc_device_buffer(out, h->bytes, &device, &stream);
    h->alloc_ns = (double)(now_ns() - allocated);
    if (status != RM_OK) {
        snprintf(h->error, sizeof h->error, "alloc_device_buffer: %" PRId32, status);
        return status;
    }
    uint64_t *scratch = NULL;
    if (h->image == NULL)
        scratch = checked_malloc(COPY_CHUNK_BYTES);
    uint64_t seed = h->seed;
    h->copied_on_stream = h->cuda.memcpy_htod_async != NULL;
    uint64_t start = now_ns();
    int failed = 0;
    for (uint64_t offset = 0; offset < h->bytes && !failed; offset += COPY_CHUNK_BYTES) {
        uint64_t size = h->bytes - offset < COPY_CHUNK_BYTES ? h->bytes - offset
                                                             : COPY_CHUNK_BYTES;
        const uint64_t *source = h->image != NULL ? h->image + offset / 8 : scratch;
        if (scratch != NULL)
            fill_image(scratch, seed, offset / 8, size / 8);
        /* On the load's stream where the driver has the asynchronous copy
         * (the fake has not); the plugin synchronises after the loader. */
        failed = h->copied_on_stream
                     ? cuda_host_copy_to_device_async(&h->cuda, device + offset, source,
                                                      (size_t)size, stream, h->error,
                                                      sizeof h->error)
                     : cuda_host_copy_to_device(&h->cuda, device + offset, source,
                                                (size_t)size, h->error, sizeof h->error);
    }
    h->copy_ns = (double)(now_ns() - start);
    free(scratch);
    return failed ? RM_E_SYSTEM : RM_OK;
}

/* Reads 4 KiB at the start, the middle and the end of the model back and
 * checks them against the pattern. */
static int holder_verify(holder_state *h, uint64_t device, char *message, size_t message_size)
{
    enum { PROBE = 4096 };
    uint64_t words[PROBE / 8];
    uint64_t seed = h->seed;
    uint64_t probe = h->bytes < PROBE ? h->bytes : PROBE;
    uint64_t offsets[3] = {0, (h->bytes / 2) & ~(uint64_t)7, h->bytes - probe};
    for (int i = 0; i < 3; i++) {
        uint64_t offset = offsets[i] + probe > h->bytes ? h->bytes - probe : offsets[i];
        if (cuda_host_copy_to_host(&h->cuda, words, device + offset, (size_t)probe, message,
                                   message_size) != 0)
            return -1;
        for (uint64_t w = 0; w < probe / 8; w++)
            if (words[w] != pattern_word(seed, offset / 8 + w)) {
                snprintf(message, message_size, "the word at byte %" PRIu64
                         " is not the loader's", offset + w * 8);
                return -1;
            }
    }
    return 0;
}

static void holder_row(holder_state *h, get_reply *reply)
{
    rm_model_info rows[8];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        rows[i] = (rm_model_info)RM_STRUCT_INIT(rm_model_info);
    uint32_t count = 0;
    int32_t status = h->vt->registry_list(h->context, rows, sizeof rows[0], 8, &count);
    if (status != RM_OK && status != RM_E_BUFFER_TOO_SMALL)
        return;
    /* The table stores "name@cuda:GPU-<uuid>": match the name. */
    size_t name_length = (size_t)(strchr(h->key, '@') - h->key) + 1;
    for (uint32_t i = 0; i < count && i < 8; i++)
        if (strncmp(rows[i].key, h->key, name_length) == 0) {
            reply->memory = rows[i].memory;
            reply->device_bytes = rows[i].device_bytes;
        }
}

static _Noreturn void holder_main(int argc, char **argv)
{
    /* --holder PLUGIN NAMESPACE SCOPE KEY BYTES DRIVER; stdin and stdout
     * are the pipes. */
    if (argc != 8)
        die("--holder: wrong arguments");
    plugin_path = argv[2];
    snprintf(run_namespace, sizeof run_namespace, "%s", argv[3]);
    const char *scope = argv[4];
    snprintf(cuda_driver, sizeof cuda_driver, "%s", argv[7]);
    static holder_state h;
    h.key = argv[5];
    char name[RM_MODEL_KEY_MAX];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(h.key, "@"), h.key);
    h.seed = pattern_seed(name);
    h.bytes = strtoull(argv[6], NULL, 10);
    ready_reply ready = {.pid = (int32_t)getpid(), .ok = 1};
    rm_loaded_plugin plugin;
    h.vt = load_plugin(plugin_path, RM_ABI_VERSION(1, 4), &plugin);
    host_companion_start(); /* a host has more than one thread */
    h.context = create_context(h.vt, scope);
    /* The loader copies in the primary context of the key's device. */
    const char *device = strstr(h.key, "@cuda:");
    int ordinal = device != NULL ? atoi(device + 6) : 0;
    rm_cuda_info info;
    if (device_unusable(h.vt, h.context, &info, ready.message, sizeof ready.message) != NULL ||
        cuda_host_open(info.library, ordinal, &h.cuda, ready.message, sizeof ready.message) != 0)
        ready.ok = 0;
    write_full(STDOUT_FILENO, &ready, sizeof ready);
    if (!ready.ok)
        _exit(1);

    rm_model_handle *handle = NULL;
    void *model = NULL;
    for (;;) {
        uint8_t command;
        if (!read_full(STDIN_FILENO, &command, 1))
            _exit(1); /* the benchmark died */
        switch (command) {
        case MSG_GET:
        case MSG_PREPARE_GET: {
            get_reply reply = {.ok = 1};
            if (command == MSG_PREPARE_GET && h.image == NULL) {
                h.image = checked_malloc((size_t)h.bytes);
                fill_image(h.image, h.seed, 0, h.bytes / 8);
            }
            uint64_t start = now_ns();
            int32_t status = h.vt->model_get_or_load(h.context, h.key, holder_load, &h, &handle,
                                                     &model);
            reply.get_ns = (double)(now_ns() - start);
            reply.loader_calls = h.loader_calls;
            reply.alloc_ns = h.alloc_ns;
            reply.copy_ns = h.copy_ns;
            reply.copied_on_stream = h.copied_on_stream;
            if (status != RM_OK) {
                reply.ok = 0;
                snprintf(reply.message, sizeof reply.message, "model_get_or_load(%s): %s: %s%s%s",
                         h.key, h.vt->error_name(status), h.vt->context_last_error(h.context),
                         h.error[0] != '\0' ? "; the loader: " : "", h.error);
            } else {
                reply.device_pointer = (uint64_t)(uintptr_t)model;
                if (holder_verify(&h, reply.device_pointer, reply.message,
                                  sizeof reply.message) != 0)
                    reply.ok = 0;
                holder_row(&h, &reply);
            }
            free(h.image);
            h.image = NULL;
            write_full(STDOUT_FILENO, &reply, sizeof reply);
            if (!reply.ok)
                _exit(1);
            break;
        }
        case MSG_CYCLES: {
            int32_t cycles;
            if (!read_full(STDIN_FILENO, &cycles, sizeof cycles) || handle == NULL || cycles < 1)
                _exit(1);
            cycles_reply reply = {.ok = 1, .cycles = cycles};
            double *samples = checked_malloc(sizeof(double) * (size_t)cycles);
            for (int32_t i = 0; i < cycles && reply.ok; i++) {
                int32_t status = h.vt->model_release(h.context, handle);
                void *again = NULL;
                uint64_t start = now_ns();
                if (status == RM_OK)
                    status = h.vt->model_get_or_load(h.context, h.key, holder_load, &h, &handle,
                                                     &again);
                samples[i] = (double)(now_ns() - start);
                if (status != RM_OK || again != model) {
                    reply.ok = 0;
                    snprintf(reply.message, sizeof reply.message,
                             "cycle %" PRId32 ": %s: %s%s", i, h.vt->error_name(status),
                             h.vt->context_last_error(h.context),
                             status == RM_OK ? " (a different pointer)" : "");
                }
            }
            latency_figure figure = summarise(samples, cycles);
            free(samples);
            reply.median_ns = figure.median_ns;
            reply.p10_ns = figure.p10_ns;
            reply.p90_ns = figure.p90_ns;
            reply.loader_calls = h.loader_calls;
            write_full(STDOUT_FILENO, &reply, sizeof reply);
            if (!reply.ok)
                _exit(1);
            break;
        }
        case MSG_QUIT: {
            int32_t status = handle != NULL ? h.vt->model_release(h.context, handle) : RM_OK;
            if (status != RM_OK)
                die_status(h.vt, h.context, "model_release", status);
            h.vt->context_destroy(h.context);
            cuda_host_close(&h.cuda);
            host_companion_stop();
            _exit(0);
        }
        default:
            _exit(1);
        }
    }
}

/* ---- holders, from the benchmark's side ---------------------------------- */

typedef struct holder {
    pid_t pid;
    int to_fd;
    int from_fd;
    get_reply got;
} holder;

static holder *live_holders[MAX_HOLDERS + 1];

static void track_holder(holder *h, bool track)
{
    for (int i = 0; i <= MAX_HOLDERS; i++)
        if (track ? live_holders[i] == NULL : live_holders[i] == h) {
            live_holders[i] = track ? h : NULL;
            return;
        }
    if (track)
        die("too many holders at once");
}

/* Reads one reply of `size` bytes within HOLDER_TIMEOUT_S, or dies. */
static void receive(const holder *h, void *reply, size_t size)
{
    struct pollfd input = {.fd = h->from_fd, .events = POLLIN};
    int ready;
    do
        ready = poll(&input, 1, HOLDER_TIMEOUT_S * 1000);
    while (ready < 0 && errno == EINTR);
    if (ready == 0) {
        fprintf(stderr, "bench_gpu_weights: holder %ld did not answer within %d s\n",
                (long)h->pid, HOLDER_TIMEOUT_S);
        exit(1);
    }
    if (ready < 0)
        die_errno("poll");
    if (!read_full(h->from_fd, reply, size)) {
        fprintf(stderr, "bench_gpu_weights: holder %ld exited (its message is above)\n",
                (long)h->pid);
        exit(1);
    }
}

static void send_command(const holder *h, uint8_t command)
{
    write_full(h->to_fd, &command, 1);
}

/* Execs this program as a holder of `key` in `scope`. The reply to its
 * start is read by holder_ready(). */
static void spawn_holder(holder *h, const char *scope, const char *key, uint64_t bytes)
{
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0)
        die_errno("pipe2");
    char bytes_text[32];
    snprintf(bytes_text, sizeof bytes_text, "%" PRIu64, bytes);
    char *argv[] = {"bench_gpu_weights", "--holder", (char *)plugin_path, run_namespace,
                    (char *)scope, (char *)key, bytes_text, cuda_driver, NULL};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    /* dup2 clears close-on-exec on the copies; the originals close. */
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
    pid_t pid;
    fflush(NULL);
    int error = posix_spawn(&pid, "/proc/self/exe", &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(to_child[0]);
    close(from_child[1]);
    if (error != 0) {
        errno = error;
        die_errno("posix_spawn /proc/self/exe");
    }
    *h = (holder){.pid = pid, .to_fd = to_child[1], .from_fd = from_child[0]};
    track_holder(h, true);
}

static void holder_ready(holder *h)
{
    ready_reply ready;
    receive(h, &ready, sizeof ready);
    if (!ready.ok || ready.pid != (int32_t)h->pid) {
        ready.message[sizeof ready.message - 1] = '\0';
        fprintf(stderr, "bench_gpu_weights: holder %ld cannot start: %s\n", (long)h->pid,
                ready.message);
        exit(1);
    }
}

/* Sends MSG_GET or MSG_PREPARE_GET; holder_got() reads the answer. */
static void holder_get(holder *h, uint8_t command)
{
    send_command(h, command);
}

static const get_reply *holder_got(holder *h)
{
    receive(h, &h->got, sizeof h->got);
    if (!h->got.ok) {
        h->got.message[sizeof h->got.message - 1] = '\0';
        fprintf(stderr, "bench_gpu_weights: holder %ld: %s\n", (long)h->pid, h->got.message);
        exit(1);
    }
    if (h->got.memory != RM_MEMORY_CUDA) {
        fprintf(stderr, "bench_gpu_weights: holder %ld: the model's row says memory %" PRIu32
                        ", not RM_MEMORY_CUDA\n", (long)h->pid, h->got.memory);
        exit(1);
    }
    return &h->got;
}

static void stop_holder(holder *h)
{
    send_command(h, MSG_QUIT);
    close(h->to_fd);
    int status = 0;
    uint64_t deadline = now_ns() + (uint64_t)HOLDER_TIMEOUT_S * 1000000000u;
    for (;;) {
        pid_t done = waitpid(h->pid, &status, WNOHANG);
        if (done == h->pid)
            break;
        if (done < 0 && errno != EINTR)
            die_errno("waitpid");
        if (now_ns() >= deadline) {
            fprintf(stderr, "bench_gpu_weights: holder %ld did not exit\n", (long)h->pid);
            exit(1);
        }
        struct timespec pause = {.tv_nsec = 1000000};
        nanosleep(&pause, NULL);
    }
    track_holder(h, false);
    close(h->from_fd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_gpu_weights: holder %ld ended badly after release (wait status "
                        "%#x)\n", (long)h->pid, status);
        exit(1);
    }
}

static void clean_up_at_exit(void)
{
    if (getpid() != bench_pid)
        return;
    for (int i = 0; i <= MAX_HOLDERS; i++) {
        holder *h = live_holders[i];
        if (h == NULL)
            continue;
        kill(h->pid, SIGKILL);
        waitpid(h->pid, NULL, 0);
        live_holders[i] = NULL;
    }
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.", run_namespace);
    shm_leftovers(prefix, NULL, true, "in /dev/shm");
}

/* ---- device memory ------------------------------------------------------ */

static cuda_host bench_cuda;

static uint64_t device_used(void)
{
    uint64_t free_bytes, total;
    char error[512];
    if (cuda_host_memory_info(&bench_cuda, &free_bytes, &total, error, sizeof error) != 0)
        die(error);
    return total - free_bytes;
}

/* After holders exit the driver frees their memory, a little later on a
 * GPU: waits (up to 10 s) until the device is back within `slack` bytes
 * of `baseline`. */
static uint64_t settle(uint64_t baseline, uint64_t slack)
{
    uint64_t used = device_used();
    for (int i = 0; i < 1000 && used > baseline + slack; i++) {
        struct timespec pause = {.tv_nsec = 10000000};
        nanosleep(&pause, NULL);
        used = device_used();
    }
    if (used > baseline + slack) {
        fprintf(stderr, "bench_gpu_weights: the device holds %.1f MiB more than before the "
                        "holders, 10 s after they exited\n",
                (double)(used - baseline) / (double)MIB);
        exit(1);
    }
    return used;
}

static int64_t difference(uint64_t after, uint64_t before)
{
    return after >= before ? (int64_t)(after - before) : -(int64_t)(before - after);
}

/* ---- (a) first load, attach in a new process, cached attach -------------- */

typedef struct latency_result {
    latency_figure first_load;
    latency_figure alloc;    /* the loader's alloc_device_buffer, within the first load */
    latency_figure copy;     /* the loader's copies, within the first load */
    latency_figure attach;   /* a new process */
    latency_figure cached;   /* the medians of each round's cycles */
    double cached_p10_ns, cached_p90_ns;
    int cached_cycles;
    bool copied_on_stream;
    uint64_t device_bytes;
    bool met;
} latency_result;

static latency_result measure_latency(const bench_plan *plan)
{
    int rounds = plan->load_rounds;
    double *first = checked_malloc(sizeof(double) * (size_t)rounds);
    double *alloc = checked_malloc(sizeof(double) * (size_t)rounds);
    double *copy = checked_malloc(sizeof(double) * (size_t)rounds);
    double *attach = checked_malloc(sizeof(double) * (size_t)(rounds * plan->newcomers));
    double *cached = checked_malloc(sizeof(double) * (size_t)rounds);
    double *cached_p10 = checked_malloc(sizeof(double) * (size_t)rounds);
    double *cached_p90 = checked_malloc(sizeof(double) * (size_t)rounds);
    latency_result result = {.cached_cycles = plan->cached_cycles * rounds};
    int attaches = 0;
    uint64_t baseline = device_used();
    for (int round = 0; round < rounds; round++) {
        char key[64];
        snprintf(key, sizeof key, "bench-weights-r%d@cuda:0", round);
        holder loader;
        spawn_holder(&loader, "node", key, plan->model_bytes);
        holder_ready(&loader);
        holder_get(&loader, MSG_PREPARE_GET);
        const get_reply *loaded = holder_got(&loader);
        if (loaded->loader_calls != 1)
            die("(a): the first process's loader did not run");
        first[round] = loaded->get_ns;
        alloc[round] = loaded->alloc_ns;
        copy[round] = loaded->copy_ns;
        result.copied_on_stream = loaded->copied_on_stream;
        result.device_bytes = loaded->device_bytes;
        for (int k = 0; k < plan->newcomers; k++) {
            holder newcomer;
            spawn_holder(&newcomer, "node", key, plan->model_bytes);
            holder_ready(&newcomer);
            holder_get(&newcomer, MSG_GET);
            const get_reply *got = holder_got(&newcomer);
            if (got->loader_calls != 0)
                die("(a): a newcomer ran its loader: the model was not shared");
            attach[attaches++] = got->get_ns;
            if (k == plan->newcomers - 1) {
                uint8_t message[1 + sizeof(int32_t)] = {MSG_CYCLES};
                int32_t cycles = plan->cached_cycles;
                memcpy(message + 1, &cycles, sizeof cycles);
                write_full(newcomer.to_fd, message, sizeof message);
                cycles_reply reply;
                receive(&newcomer, &reply, sizeof reply);
                if (!reply.ok || reply.loader_calls != 0) {
                    reply.message[sizeof reply.message - 1] = '\0';
                    fprintf(stderr, "bench_gpu_weights: (a) cached attaches: %s\n",
                            reply.ok ? "the loader ran" : reply.message);
                    exit(1);
                }
                cached[round] = reply.median_ns;
                cached_p10[round] = reply.p10_ns;
                cached_p90[round] = reply.p90_ns;
            }
            stop_holder(&newcomer);
        }
        stop_holder(&loader);
        settle(baseline, result.device_bytes / 4);
    }
    result.first_load = summarise(first, rounds);
    result.alloc = summarise(alloc, rounds);
    result.copy = summarise(copy, rounds);
    result.attach = summarise(attach, attaches);
    result.cached = summarise(cached, rounds);
    result.cached_p10_ns = summarise(cached_p10, rounds).median_ns;
    result.cached_p90_ns = summarise(cached_p90, rounds).median_ns;
    result.met = result.attach.median_ns <= TARGET_ATTACH_NS;
    free(first);
    free(alloc);
    free(copy);
    free(attach);
    free(cached);
    free(cached_p10);
    free(cached_p90);
    return result;
}

/* ---- (b) device memory with N holders ------------------------------------ */

typedef struct memory_row {
    int processes;
    int64_t contexts_bytes;   /* the N holders started, holding nothing */
    int64_t node_bytes;       /* node scope: with the model minus the contexts */
    int64_t private_bytes;    /* process scope, the same */
    int64_t private_contexts_bytes;
    uint64_t one_copy_bytes;  /* device_bytes of the model */
    double node_ratio;
    double private_ratio;
    double context_per_process;
    bool met;
} memory_row;

/* N holders of one model in `scope`: the bytes their contexts take and
 * the bytes the model then adds. */
static void hold_model(const bench_plan *plan, int n, const char *scope, int64_t *contexts,
                       int64_t *model, uint64_t *device_bytes)
{
    bool node = strcmp(scope, "node") == 0;
    char key[64];
    snprintf(key, sizeof key, "bench-weights-%s%d@cuda:0", node ? "n" : "p", n);
    uint64_t baseline = device_used();
    holder holders[MAX_HOLDERS];
    for (int i = 0; i < n; i++)
        spawn_holder(&holders[i], scope, key, plan->model_bytes);
    for (int i = 0; i < n; i++)
        holder_ready(&holders[i]);
    uint64_t with_contexts = device_used();
    /* Node scope: the first loads, then the others attach together.
     * Process scope: each loads its own copy. */
    holder_get(&holders[0], MSG_PREPARE_GET);
    holder_got(&holders[0]);
    for (int i = 1; i < n; i++)
        holder_get(&holders[i], node ? MSG_GET : MSG_PREPARE_GET);
    int loader_calls = holders[0].got.loader_calls;
    for (int i = 1; i < n; i++)
        loader_calls += holder_got(&holders[i])->loader_calls;
    if (loader_calls != (node ? 1 : n)) {
        fprintf(stderr, "bench_gpu_weights: (b) %d %s-scope holders ran %d loaders\n", n,
                scope, loader_calls);
        exit(1);
    }
    uint64_t with_model = device_used();
    *device_bytes = holders[0].got.device_bytes;
    for (int i = 0; i < n; i++)
        stop_holder(&holders[i]);
    settle(baseline, plan->model_bytes / 4);
    *contexts = difference(with_contexts, baseline);
    *model = difference(with_model, with_contexts);
}

static memory_row measure_memory(const bench_plan *plan, int n)
{
    memory_row row = {.processes = n};
    uint64_t node_copy = 0, private_copy = 0;
    hold_model(plan, n, "node", &row.contexts_bytes, &row.node_bytes, &node_copy);
    hold_model(plan, n, "process", &row.private_contexts_bytes, &row.private_bytes,
               &private_copy);
    /* One copy as node scope allocates it (rounded up to the granularity). */
    row.one_copy_bytes = node_copy != 0 ? node_copy : plan->model_bytes;
    row.node_ratio = (double)row.node_bytes / (double)row.one_copy_bytes;
    row.private_ratio = (double)row.private_bytes / (double)row.one_copy_bytes;
    row.context_per_process = (double)row.contexts_bytes / n;
    row.met = row.node_ratio <= TARGET_MEMORY_RATIO;
    return row;
}

/* ---- output ------------------------------------------------------------- */

typedef struct run_label {
    bool fake;
    int driver_version;
    char device[48];
} run_label;

static void json_label(const run_label *label)
{
    printf(",\"driver\":\"%s\",\"driver_library\":\"%s\",\"driver_version\":%d,"
           "\"device\":\"%s\"%s}\n",
           label->fake ? "fake" : "cuda", cuda_driver, label->driver_version, label->device,
           label->fake ? ",\"fake_driver\":true,"
                         "\"note\":\"fake-driver figures (tests/fake_cuda: device memory is "
                         "host memory, contexts take none), not GPU figures\""
                       : ",\"fake_driver\":false");
}

static void print_json(const bench_plan *plan, const run_label *label,
                       const latency_result *latency, const memory_row *rows, int row_count)
{
    printf("{\"bench\":\"gpu_weights\",\"figure\":\"first_load_ns\",\"bytes\":%" PRIu64
           ",\"device_bytes\":%" PRIu64 ",\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,"
           "\"unit\":\"ns\",\"alloc_median\":%.1f,\"copy_median\":%.1f,\"copy\":\"%s\","
           "\"rounds\":%d",
           plan->model_bytes, latency->device_bytes, latency->first_load.median_ns,
           latency->first_load.p10_ns, latency->first_load.p90_ns, latency->alloc.median_ns,
           latency->copy.median_ns,
           latency->copied_on_stream ? "cuMemcpyHtoDAsync_v2 on the load's stream"
                                     : "cuMemcpyHtoD_v2",
           latency->first_load.samples);
    json_label(label);
    printf("{\"bench\":\"gpu_weights\",\"figure\":\"attach_new_process_ns\",\"bytes\":%" PRIu64
           ",\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\","
           "\"baseline\":\"first_load\",\"baseline_median\":%.1f,\"ratio\":%.6f,"
           "\"target\":\"median <= %.0f ns on a GPU\",\"met\":%s,\"samples\":%d",
           plan->model_bytes, latency->attach.median_ns, latency->attach.p10_ns,
           latency->attach.p90_ns, latency->first_load.median_ns,
           latency->attach.median_ns / latency->first_load.median_ns, TARGET_ATTACH_NS,
           latency->met ? "true" : "false", latency->attach.samples);
    json_label(label);
    printf("{\"bench\":\"gpu_weights\",\"figure\":\"attach_cached_ns\",\"bytes\":%" PRIu64
           ",\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\","
           "\"baseline\":\"first_load\",\"baseline_median\":%.1f,\"ratio\":%.8f,"
           "\"cycles\":%d",
           plan->model_bytes, latency->cached.median_ns, latency->cached_p10_ns,
           latency->cached_p90_ns, latency->first_load.median_ns,
           latency->cached.median_ns / latency->first_load.median_ns, latency->cached_cycles);
    json_label(label);
    for (int i = 0; i < row_count; i++) {
        const memory_row *r = &rows[i];
        printf("{\"bench\":\"gpu_weights\",\"figure\":\"device_memory_ratio\",\"processes\":%d,"
               "\"bytes\":%" PRIu64 ",\"one_copy_bytes\":%" PRIu64 ",\"model_bytes_used\":%"
               PRId64 ",\"ratio\":%.4f,\"unit\":\"copies\",\"baseline\":"
               "\"process_scope_private_copies\",\"baseline_bytes_used\":%" PRId64
               ",\"baseline_ratio\":%.4f,\"contexts_bytes\":%" PRId64
               ",\"context_bytes_per_process\":%.0f,\"target\":\"ratio <= %.2f (plus each "
               "process's own context, apart)\",\"met\":%s",
               r->processes, plan->model_bytes, r->one_copy_bytes, r->node_bytes, r->node_ratio,
               r->private_bytes, r->private_ratio, r->contexts_bytes, r->context_per_process,
               TARGET_MEMORY_RATIO, r->met ? "true" : "false");
        json_label(label);
    }
    double *contexts = checked_malloc(sizeof(double) * (size_t)row_count);
    for (int i = 0; i < row_count; i++)
        contexts[i] = rows[i].context_per_process;
    latency_figure context = summarise(contexts, row_count);
    free(contexts);
    printf("{\"bench\":\"gpu_weights\",\"figure\":\"context_bytes_per_process\","
           "\"median\":%.0f,\"min\":%.0f,\"max\":%.0f,\"unit\":\"bytes\",\"rows\":%d,"
           "\"what\":\"a process that only creates its CUDA context and its plugin context\"",
           context.median_ns, context.min_ns, context.max_ns, row_count);
    json_label(label);
}

static const char *mib_label(double bytes, char *out, size_t out_size)
{
    snprintf(out, out_size, "%.1f MiB", bytes / (double)MIB);
    return out;
}

static void print_table(const bench_plan *plan, bool quick, const run_label *label,
                        const latency_result *latency, const memory_row *rows, int row_count,
                        double total_s)
{
    char s[8][32];
    const char *driver = label->fake ? "FAKE" : "gpu";
    printf("gpu weights benchmark (%s; driver %s %d.%d, %s; %s; %.1f s)\n",
           quick ? "quick" : "full", cuda_driver, label->driver_version / 1000,
           label->driver_version % 1000 / 10, label->device,
           label->fake ? "THE FAKE DRIVER" : "a GPU", total_s);
    if (label->fake)
        printf("*** fake-driver figures (tests/fake_cuda: device memory is host memory, "
               "copies are memcpy,\n*** contexts take no device memory): not GPU figures; "
               "every row is marked FAKE ***\n");
    printf("model: %s from alloc_device_buffer (%s on the device), filled from a host image "
           "with\n%s; every holder is a new process (this program exec'd)\n",
           size_label(plan->model_bytes, s[0], sizeof s[0]),
           size_label(latency->device_bytes, s[1], sizeof s[1]),
           latency->copied_on_stream ? "cuMemcpyHtoDAsync_v2 on the load's stream"
                                     : "cuMemcpyHtoD_v2 (the driver has no "
                                       "cuMemcpyHtoDAsync_v2)");

    printf("\na. the first load (a new process; its loader fills the buffer) vs the attach of "
           "the ready\n   model in a new process (model_get_or_load until it returns the "
           "mapped pointer) vs\n   the attach in a process that has it mapped (release + get); "
           "target attach <= %.0f ms\n", TARGET_ATTACH_NS / 1e6);
    printf("   %-6s %-22s %10s %10s %10s | %10s %7s %7s\n", "driver", "get_or_load", "median",
           "p10", "p90", "vs load", "target", "samples");
    printf("   %-6s %-22s %10s %10s %10s | %10s %7s %7d\n", driver, "first load",
           time_label(latency->first_load.median_ns, s[0], sizeof s[0]),
           time_label(latency->first_load.p10_ns, s[1], sizeof s[1]),
           time_label(latency->first_load.p90_ns, s[2], sizeof s[2]), "1", "",
           latency->first_load.samples);
    printf("   %-6s %-22s %10s %10s %10s | %10.6f %7s %7d\n", driver, "attach, new process",
           time_label(latency->attach.median_ns, s[0], sizeof s[0]),
           time_label(latency->attach.p10_ns, s[1], sizeof s[1]),
           time_label(latency->attach.p90_ns, s[2], sizeof s[2]),
           latency->attach.median_ns / latency->first_load.median_ns, met_label(latency->met),
           latency->attach.samples);
    printf("   %-6s %-22s %10s %10s %10s | %10.8f %7s %7d\n", driver, "attach, already mapped",
           time_label(latency->cached.median_ns, s[0], sizeof s[0]),
           time_label(latency->cached_p10_ns, s[1], sizeof s[1]),
           time_label(latency->cached_p90_ns, s[2], sizeof s[2]),
           latency->cached.median_ns / latency->first_load.median_ns, "",
           latency->cached_cycles);
    printf("   (within the first load, medians: alloc_device_buffer %s, the loader's copies "
           "from the host %s)\n", time_label(latency->alloc.median_ns, s[0], sizeof s[0]),
           time_label(latency->copy.median_ns, s[1], sizeof s[1]));

    printf("\nb. device memory with N processes holding the model (cuMemGetInfo_v2 total - "
           "free with\n   the model minus with the N processes started), in copies of %s; "
           "baseline: the\n   same N in process scope (private copies); contexts apart; "
           "target node <= %.2fx\n",
           size_label(rows[0].one_copy_bytes, s[0], sizeof s[0]), TARGET_MEMORY_RATIO);
    printf("   %-6s %3s | %12s %7s | %12s %7s | %12s | %7s\n", "driver", "N", "node scope",
           "ratio", "private", "ratio", "ctx/process", "target");
    for (int i = 0; i < row_count; i++) {
        const memory_row *r = &rows[i];
        printf("   %-6s %3d | %12s %6.3fx | %12s %6.3fx | %12s | %7s\n", driver, r->processes,
               mib_label((double)r->node_bytes, s[0], sizeof s[0]), r->node_ratio,
               mib_label((double)r->private_bytes, s[1], sizeof s[1]), r->private_ratio,
               mib_label(r->context_per_process, s[2], sizeof s[2]), met_label(r->met));
    }
}

/* ---- main --------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: bench_gpu_weights [--json] [--quick] [--driver PATH] [--bytes SIZE]\n"
                    "                         [--processes N,N,...] [--newcomers N]\n"
                    "                         [PATH_TO_rm_plugin.so]\n"
                    "       (PATH defaults to $RM_PLUGIN_PATH; the driver to --driver, else\n"
                    "       cuda.driver of $RM_PLUGIN_CONFIG, else libcuda.so.1; SIZE with a\n"
                    "       K, M or G suffix, default 1G (--quick 8M); processes 1,2,4,8\n"
                    "       (--quick 1,2), each 1 to %d)\n"
                    "       exit status 77: no usable device or no 1.4 plugin (skipped)\n",
            MAX_HOLDERS);
}

static _Noreturn void skip(bool json, const char *why)
{
    skip_cuda_bench(json, "gpu_weights", "", why, cuda_driver);
}

static uint64_t parse_size(const char *text)
{
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    uint64_t unit = 1;
    if (*end == 'K' || *end == 'k')
        unit = KIB;
    else if (*end == 'M' || *end == 'm')
        unit = MIB;
    else if (*end == 'G' || *end == 'g')
        unit = GIB;
    if (unit != 1)
        end++;
    if (errno != 0 || end == text || *end != '\0' || value == 0 || value > (1ull << 40) / unit)
        return 0;
    return (uint64_t)value * unit;
}

static int parse_counts(const char *text, int *counts)
{
    int rows = 0;
    const char *at = text;
    while (*at != '\0') {
        char *end;
        long n = strtol(at, &end, 10);
        if (end == at || n < 1 || n > MAX_HOLDERS || rows == MAX_COUNTS ||
            (*end != ',' && *end != '\0'))
            return 0;
        counts[rows++] = (int)n;
        at = *end == ',' ? end + 1 : end;
    }
    return rows;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--holder") == 0)
        holder_main(argc, argv);
    /* This benchmark's own options; the rest are the common ones. */
    const char *driver_option = NULL, *bytes_option = NULL, *processes_option = NULL,
               *newcomers_option = NULL;
    char **rest = checked_calloc((size_t)argc + 1, sizeof *rest);
    int rest_count = 0;
    for (int i = 0; i < argc; i++) {
        const char **value = NULL;
        if (i > 0 && strcmp(argv[i], "--driver") == 0)
            value = &driver_option;
        else if (i > 0 && strcmp(argv[i], "--bytes") == 0)
            value = &bytes_option;
        else if (i > 0 && strcmp(argv[i], "--processes") == 0)
            value = &processes_option;
        else if (i > 0 && strcmp(argv[i], "--newcomers") == 0)
            value = &newcomers_option;
        if (value == NULL) {
            rest[rest_count++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            usage();
            return 2;
        }
        *value = argv[++i];
    }
    bench_options options;
    int exit_status = parse_options(rest_count, rest, 1, usage, &options);
    if (exit_status >= 0)
        return exit_status;
    bench_plan *plan = options.quick ? &quick_plan : &full_plan;
    if (bytes_option != NULL && (plan->model_bytes = parse_size(bytes_option)) == 0) {
        fprintf(stderr, "bench_gpu_weights: --bytes: '%s' is not a size\n", bytes_option);
        return 2;
    }
    if (processes_option != NULL &&
        (plan->count_rows = parse_counts(processes_option, plan->counts)) == 0) {
        fprintf(stderr, "bench_gpu_weights: --processes: '%s' is not a list of 1 to %d\n",
                processes_option, MAX_HOLDERS);
        return 2;
    }
    if (newcomers_option != NULL &&
        ((plan->newcomers = atoi(newcomers_option)) < 1 || plan->newcomers > 1000)) {
        fprintf(stderr, "bench_gpu_weights: --newcomers: 1 to 1000\n");
        return 2;
    }
    if (plan->model_bytes % 8 != 0)
        die("--bytes: a multiple of 8");
    signal(SIGPIPE, SIG_IGN);

    uint64_t run_start = now_ns();
    bench_pid = getpid();
    plugin_path = options.plugin_path;
    snprintf(run_namespace, sizeof run_namespace, "bench-gpuw-%ld", (long)bench_pid);
    atexit(clean_up_at_exit);

    rm_loaded_plugin plugin;
    const rm_plugin_v1 *vt = load_plugin(plugin_path, RM_ABI_VERSION(1, 1), &plugin);
    if (driver_option != NULL) {
        if (strlen(driver_option) >= sizeof cuda_driver)
            die("--driver: the path is longer than cuda.driver allows (255 bytes)");
        snprintf(cuda_driver, sizeof cuda_driver, "%s", driver_option);
    }
    if (!RM_PLUGIN_HAS(vt, model_to_dlpack) || (vt->features_built & RM_FEATURE_CUDA_IPC) == 0 ||
        (vt->features_built & RM_FEATURE_MODEL_REGISTRY) == 0) {
        char why[PATH_MAX + 128];
        snprintf(why, sizeof why, "%s has no GPU-resident weights (ABI 1.4, model-registry "
                 "and cuda-ipc needed; it has ABI %u.%u)", plugin.path,
                 RM_ABI_VERSION_MAJOR(vt->abi_version), RM_ABI_VERSION_MINOR(vt->abi_version));
        skip(options.json, why);
    }
    if (driver_option == NULL)
        cuda_driver_from_configuration(vt, cuda_driver, sizeof cuda_driver);

    /* This process binds the driver for cuMemGetInfo_v2; its own context
     * is in every reading, so it cancels out of every difference. */
    rm_context *context = create_context(vt, "process");
    rm_cuda_info info;
    char why[1024];
    if (device_unusable(vt, context, &info, why, sizeof why) != NULL)
        skip(options.json, why);
    char error[512];
    if (cuda_host_open(info.library, 0, &bench_cuda, error, sizeof error) != 0)
        die(error);
    run_label label = {.fake = bench_cuda.fake, .driver_version = info.driver_version};
    snprintf(label.device, sizeof label.device, "%s", info.devices[0].uuid_text);
    host_companion_start();

    latency_result latency = measure_latency(plan);
    memory_row rows[MAX_COUNTS];
    for (int i = 0; i < plan->count_rows; i++)
        rows[i] = measure_memory(plan, plan->counts[i]);

    /* The table of the run's namespace: gone with its last process; a
     * node context here makes sure nothing is left, and removes it. */
    rm_context *node = create_context(vt, "node");
    int32_t status = vt->registry_reclaim(node, NULL);
    if (status == RM_OK)
        status = vt->model_evict(node, NULL);
    if (status == RM_OK)
        status = vt->registry_reclaim(node, NULL);
    if (status != RM_OK)
        die_status(vt, node, "registry_reclaim / model_evict at the end", status);
    vt->context_destroy(node);
    vt->context_destroy(context);
    cuda_host_close(&bench_cuda);
    host_companion_stop();
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.", run_namespace);
    if (shm_leftovers(prefix, NULL, false, "left in /dev/shm") != 0)
        die("segments of this run are left in /dev/shm after every context was destroyed");

    double total_s = (double)(now_ns() - run_start) * 1e-9;
    if (options.json)
        print_json(plan, &label, &latency, rows, plan->count_rows);
    else
        print_table(plan, options.quick, &label, &latency, rows, plan->count_rows, total_s);
    free(rest);
    return 0;
}
