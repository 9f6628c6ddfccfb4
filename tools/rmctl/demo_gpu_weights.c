/* rmctl demo: model weights in device memory, one copy for several
 * processes (ABI 1.4, node scope; REF: gpu-weights in the header).
 *
 * WEIGHTS_PROCESSES workers, each rmctl itself fork()ed and exec()ed with
 * a hidden command (a forked child of this process could not use CUDA:
 * the GPU section initialised the driver), each with its own node-scope
 * context in a namespace private to the demo and its own binding of the
 * driver (tools/host/cuda_host.h), ask for "demo-weights@cuda:0". The
 * first one's loader asks for a device buffer (alloc_device_buffer) and
 * copies a pattern from the host into it on the stream the plugin gave
 * it; the others, asking once the weights are ready, attach: they are
 * handed a descriptor of the same device memory and map it read-only. Each
 * reads the whole model back and checksums it. This process measures the
 * device's memory (cuMemGetInfo_v2) before the workers, with their CUDA
 * contexts, and with the model, and has one attached worker try to write
 * through its mapping, which the driver must refuse. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_host.h"
#include "rmctl.h"

enum {
    WEIGHTS_PROCESSES = 4,
    WEIGHTS_CHUNK_BYTES = 16 << 20, /* the loader's copies and the read-backs */
    WEIGHTS_WRITE_BYTES = 4096,     /* the write that must be refused */
    WEIGHTS_REPLY_TIMEOUT_MS = 120000,
};
#define WEIGHTS_MODEL_KEY "demo-weights@cuda:0"
#define WEIGHTS_MODEL_BYTES ((uint64_t)256 << 20)

/* Word i of the weights. */
static uint64_t weights_word(uint64_t index)
{
    return (index + 1) * UINT64_C(0x9e3779b97f4a7c15) ^ (index >> 7);
}

#define WEIGHTS_CHECKSUM_START UINT64_C(0xcbf29ce484222325)

static uint64_t weights_checksum(uint64_t hash, const uint64_t *words, size_t count)
{
    for (size_t i = 0; i < count; i++)
        hash = (hash ^ words[i]) * UINT64_C(0x100000001b3);
    return hash;
}

/* What the loader writes, checksummed without making it. */
static uint64_t weights_expected_checksum(void)
{
    uint64_t hash = WEIGHTS_CHECKSUM_START;
    for (uint64_t i = 0; i < WEIGHTS_MODEL_BYTES / sizeof(uint64_t); i++) {
        uint64_t word = weights_word(i);
        hash = weights_checksum(hash, &word, 1);
    }
    return hash;
}

/* A worker's answer to each command, one fixed-size write. */
typedef struct weights_report {
    char phase; /* 'r' ready, 'a' has the model, 'c' read it back, 'w' tried to write,
                   'x' failed */
    int32_t pid;
    int32_t loader_calls;
    double get_us;           /* model_get_or_load */
    double alloc_us;         /* its loader's alloc_device_buffer (the loader's process) */
    double copy_us;          /* its loader's copies from the host, pattern made on the way */
    char copy_call[64];      /* how the loader copied */
    uint64_t device_pointer; /* the model pointer it got */
    uint32_t memory;         /* its row of the model */
    int32_t device_ordinal;
    uint64_t device_bytes;
    char row_key[RM_MODEL_KEY_MAX];
    uint64_t checksum;       /* 'c': of what it read back */
    double read_us;
    int32_t write_refused;   /* 'w' */
    char message[640];       /* 'x': what failed; 'w': the driver's answer */
} weights_report;

/* ---- a worker (exec'd rmctl) --------------------------------------------- */

typedef struct weights_loader {
    cuda_host *cuda;
    int calls;
    double alloc_us;
    double copy_us;
    char copy_call[64];
    char error[512];
} weights_loader;

static int32_t weights_load(void *user, const char *key, rm_loaded_model *out)
{
    weights_loader *loader = user;
    (void)key;
    loader->calls++;
    if (!RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out)) {
        snprintf(loader->error, sizeof loader->error,
                 "the plugin offers no device buffer (rm_loaded_model of %" PRIu32 " bytes)",
                 out->struct_size);
        return RM_E_FEATURE_UNAVAILABLE;
    }
    uint64_t device = 0;
    void *stream = NULL;
    double allocated = now_ms();
    int32_t status = out->alloc_device_buffer(out, WEIGHTS_MODEL_BYTES, &device, &stream);
    loader->alloc_us = (now_ms() - allocated) * 1e3;
    if (status != RM_OK) {
        snprintf(loader->error, sizeof loader->error, "alloc_device_buffer(%" PRIu64
                 " bytes) returned %" PRId32, WEIGHTS_MODEL_BYTES, status);
        return status;
    }
    /* On the load's stream when the driver has the asynchronous copy; the
     * fake driver of the tests has only the synchronous one, and says so. */
    int on_stream = loader->cuda->memcpy_htod_async != NULL;
    snprintf(loader->copy_call, sizeof loader->copy_call, "%s",
             on_stream ? "cuMemcpyHtoDAsync_v2 on the load's stream"
                       : "cuMemcpyHtoD_v2 (the driver has no cuMemcpyHtoDAsync_v2)");
    uint64_t *chunk = malloc(WEIGHTS_CHUNK_BYTES);
    if (chunk == NULL) {
        snprintf(loader->error, sizeof loader->error, "no host memory for the copies");
        return RM_E_NO_MEMORY;
    }
    double start = now_ms();
    int failed = 0;
    const size_t chunk_words = WEIGHTS_CHUNK_BYTES / sizeof *chunk;
    for (uint64_t offset = 0; offset < WEIGHTS_MODEL_BYTES && !failed;
         offset += WEIGHTS_CHUNK_BYTES) {
        uint64_t first = offset / sizeof *chunk;
        for (size_t i = 0; i < chunk_words; i++)
            chunk[i] = weights_word(first + i);
        /* From pageable memory the driver has the bytes when either call
         * returns: the chunk can be refilled at once. */
        failed = on_stream
                     ? cuda_host_copy_to_device_async(loader->cuda, device + offset, chunk,
                                                      WEIGHTS_CHUNK_BYTES, stream, loader->error,
                                                      sizeof loader->error)
                     : cuda_host_copy_to_device(loader->cuda, device + offset, chunk,
                                                WEIGHTS_CHUNK_BYTES, loader->error,
                                                sizeof loader->error);
    }
    loader->copy_us = (now_ms() - start) * 1e3;
    free(chunk);
    return failed ? RM_E_SYSTEM : RM_OK;
}

static void weights_send(int fd, weights_report *report, char phase)
{
    report->phase = phase;
    if (write_all(fd, report, sizeof *report) != 0)
        _exit(1);
}

static _Noreturn void weights_fail(int fd, weights_report *report, const char *what)
{
    snprintf(report->message, sizeof report->message, "%s", what);
    weights_send(fd, report, 'x');
    _exit(1);
}

static _Noreturn void weights_fail_status(int fd, weights_report *report,
                                          const rm_plugin_v1 *vt, const rm_context *context,
                                          const char *what, int32_t status, const char *more)
{
    char message[sizeof report->message];
    snprintf(message, sizeof message, "%s: %s: %s%s%s", what, vt->error_name(status),
             vt->context_last_error(context), more[0] != '\0' ? "; the loader: " : "", more);
    weights_fail(fd, report, message);
}

/* Its row of the model, from its own context. */
static void weights_row(const rm_plugin_v1 *vt, rm_context *context, weights_report *report)
{
    rm_model_info rows[4];
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        rows[i] = (rm_model_info)RM_STRUCT_INIT(rm_model_info);
    uint32_t count = 0;
    int32_t status = vt->registry_list(context, rows, sizeof rows[0], 4, &count);
    if (status != RM_OK && status != RM_E_BUFFER_TOO_SMALL)
        return;
    for (uint32_t i = 0; i < count && i < 4; i++) {
        if (strncmp(rows[i].key, "demo-weights@", 13) != 0)
            continue;
        report->memory = rows[i].memory;
        report->device_ordinal = rows[i].device_ordinal;
        report->device_bytes = rows[i].device_bytes;
        snprintf(report->row_key, sizeof report->row_key, "%s", rows[i].key);
    }
}

/* Reads the whole model back through the driver, chunk by chunk. */
static int weights_read_back(cuda_host *cuda, uint64_t device, weights_report *report)
{
    uint64_t *chunk = malloc(WEIGHTS_CHUNK_BYTES);
    if (chunk == NULL) {
        snprintf(report->message, sizeof report->message, "no host memory to read back");
        return -1;
    }
    uint64_t hash = WEIGHTS_CHECKSUM_START;
    double start = now_ms();
    int result = 0;
    for (uint64_t offset = 0; offset < WEIGHTS_MODEL_BYTES && result == 0;
         offset += WEIGHTS_CHUNK_BYTES) {
        result = cuda_host_copy_to_host(cuda, chunk, device + offset, WEIGHTS_CHUNK_BYTES,
                                        report->message, sizeof report->message);
        if (result == 0)
            hash = weights_checksum(hash, chunk, WEIGHTS_CHUNK_BYTES / sizeof *chunk);
    }
    report->read_us = (now_ms() - start) * 1e3;
    report->checksum = hash;
    free(chunk);
    return result;
}

int demo_gpu_weights_worker(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    if (options->command_argument_count != 3) {
        fprintf(stderr, "rmctl: %s is a worker of the GPU weights demo: it takes the two fds "
                        "and the namespace the demo hands it\n", DEMO_GPU_WEIGHTS_WORKER_COMMAND);
        return 2;
    }
    int in = atoi(options->command_arguments[0]);
    int out = atoi(options->command_arguments[1]);
    const char *namespace_name = options->command_arguments[2];
    static weights_report report; /* static: large, and _exit() ends every path */
    memset(&report, 0, sizeof report);
    report.pid = (int32_t)getpid();
    report.device_ordinal = -1;

    rm_context *context;
    int32_t status = create_node_context(plugin, options, namespace_name, "create", &context);
    if (status != 0)
        weights_fail_status(out, &report, vt, NULL, "context_create", status, "");
    rm_cuda_info cuda_info;
    char why[1024];
    if (cuda_unusable(plugin, context, &cuda_info, why, sizeof why) != NULL)
        weights_fail(out, &report, why);
    /* Its own CUDA context (the device's primary one, which the plugin
     * uses too), made before the parent measures what contexts take. */
    cuda_host cuda;
    char error[512];
    if (cuda_host_open(cuda_info.library, 0, &cuda, error, sizeof error) != 0)
        weights_fail(out, &report, error);
    weights_send(out, &report, 'r');

    weights_loader loader = {.cuda = &cuda};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    for (;;) {
        char command;
        if (read_all(in, &command, 1) != 0)
            _exit(1); /* the demo is gone */
        switch (command) {
        case 'g': {
            double start = now_ms();
            status = vt->model_get_or_load(context, WEIGHTS_MODEL_KEY, weights_load, &loader,
                                           &handle, &model);
            report.get_us = (now_ms() - start) * 1e3;
            if (status != RM_OK)
                weights_fail_status(out, &report, vt, context, "model_get_or_load", status,
                                    loader.error);
            report.loader_calls = loader.calls;
            report.alloc_us = loader.alloc_us;
            report.copy_us = loader.copy_us;
            snprintf(report.copy_call, sizeof report.copy_call, "%s", loader.copy_call);
            report.device_pointer = (uint64_t)(uintptr_t)model;
            weights_row(vt, context, &report);
            weights_send(out, &report, 'a');
            break;
        }
        case 'c':
            if (weights_read_back(&cuda, report.device_pointer, &report) != 0)
                weights_fail(out, &report, report.message);
            weights_send(out, &report, 'c');
            break;
        case 'w': {
            static const unsigned char zeros[WEIGHTS_WRITE_BYTES];
            report.write_refused = cuda_host_copy_to_device(&cuda, report.device_pointer, zeros,
                                                            sizeof zeros, report.message,
                                                            sizeof report.message) != 0;
            if (!report.write_refused)
                snprintf(report.message, sizeof report.message,
                         "cuMemcpyHtoD_v2 returned CUDA_SUCCESS");
            weights_send(out, &report, 'w');
            break;
        }
        case 'q': {
            int result = 0;
            if (handle != NULL && (status = vt->model_release(context, handle)) != RM_OK) {
                if (report.write_refused) {
                    /* On a GPU the refused write is a fault of this
                     * process's context, and such errors are sticky: what
                     * the context does next may fail too. Said, not hidden. */
                    printf("   pid %" PRId32 ": model_release after the refused write: %s: %s "
                           "(its CUDA context may be unusable after the fault)\n",
                           report.pid, vt->error_name(status), vt->context_last_error(context));
                } else {
                    report_failure(vt, context, "worker: model_release", status);
                    result = 1;
                }
            }
            vt->context_destroy(context);
            cuda_host_close(&cuda);
            fflush(stdout);
            fflush(stderr);
            _exit(result);
        }
        default:
            _exit(1);
        }
    }
}

/* ---- the demo (this process) --------------------------------------------- */

typedef struct weights_worker {
    pid_t pid;
    int to_worker;   /* write end */
    int from_worker; /* read end */
    weights_report report;
} weights_worker;

static int weights_spawn(const rm_loaded_plugin *plugin, const rmctl_options *options,
                         const char *namespace_name, weights_worker *worker)
{
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(up, O_CLOEXEC) != 0) {
        close(down[0]);
        close(down[1]);
        return -1;
    }
    char fds[2][16];
    snprintf(fds[0], sizeof fds[0], "%d", down[0]);
    snprintf(fds[1], sizeof fds[1], "%d", up[1]);
    const char *const arguments[] = {fds[0], fds[1], namespace_name};
    const int inherit[] = {down[0], up[1]};
    pid_t pid = spawn_rmctl(plugin, options, DEMO_GPU_WEIGHTS_WORKER_COMMAND, arguments, 3,
                            inherit, 2);
    close(down[0]);
    close(up[1]);
    if (pid < 0) {
        close(down[1]);
        close(up[0]);
        return -1;
    }
    *worker = (weights_worker){.pid = pid, .to_worker = down[1], .from_worker = up[0]};
    return 0;
}

static int weights_command(weights_worker *worker, char command)
{
    return write_all(worker->to_worker, &command, 1);
}

/* The worker's next report, which must be of `phase`. */
static int weights_expect(weights_worker *worker, char phase)
{
    struct pollfd ready = {.fd = worker->from_worker, .events = POLLIN};
    int polled;
    do
        polled = poll(&ready, 1, WEIGHTS_REPLY_TIMEOUT_MS);
    while (polled < 0 && errno == EINTR);
    if (polled != 1 || read_all(worker->from_worker, &worker->report,
                                sizeof worker->report) != 0) {
        fprintf(stderr, "rmctl: demo: worker %ld did not answer\n", (long)worker->pid);
        return -1;
    }
    if (worker->report.phase == 'x') {
        fprintf(stderr, "rmctl: demo: worker %ld: %s\n", (long)worker->pid,
                worker->report.message);
        return -1;
    }
    if (worker->report.phase != phase) {
        fprintf(stderr, "rmctl: demo: worker %ld answered '%c', not '%c'\n",
                (long)worker->pid, worker->report.phase, phase);
        return -1;
    }
    return 0;
}

/* Device memory in use (total - free, every process), or -1. */
static int weights_device_used(cuda_host *cuda, uint64_t *used, uint64_t *total)
{
    uint64_t free_bytes;
    char error[512];
    if (cuda_host_memory_info(cuda, &free_bytes, total, error, sizeof error) != 0) {
        fprintf(stderr, "rmctl: demo: %s\n", error);
        return -1;
    }
    *used = *total - free_bytes;
    return 0;
}

/* Signed: a difference of two cuMemGetInfo_v2 readings, which other users
 * of the device may move either way. */
static void format_delta(uint64_t after, uint64_t before, char *out, size_t out_size)
{
    if (out_size < 2)
        return;
    out[0] = '-';
    if (after >= before)
        format_bytes(after - before, out, out_size);
    else
        format_bytes(before - after, out + 1, out_size - 1);
}

static const char *weights_memory_name(uint32_t memory)
{
    switch (memory) {
    case RM_MEMORY_CUDA: return "cuda";
    case RM_MEMORY_SHM: return "shm";
    case RM_MODEL_MEMORY_HOST: return "host";
    default: return "?";
    }
}

static void weights_print_row(const weights_report *r, uint64_t expected)
{
    char get[32];
    if (r->get_us < 1000.0)
        snprintf(get, sizeof get, "%.0f us", r->get_us);
    else
        snprintf(get, sizeof get, "%.1f ms", r->get_us / 1e3);
    printf("   %7" PRId32 "  %-8s  %9s  0x%012" PRIx64 "  %-4s  %016" PRIx64 "  %s\n", r->pid,
           r->loader_calls ? "loaded" : "attached", get, r->device_pointer,
           weights_memory_name(r->memory), r->checksum,
           r->checksum == expected ? "yes" : "NO");
}

/* Steps 1 to 5 with the workers running; 0 when the weights were shared. */
static int weights_share(const rm_loaded_plugin *plugin, const rmctl_options *options,
                         const char *namespace_name, cuda_host *cuda, uint64_t used_before,
                         weights_worker *workers, int *spawned)
{
    uint64_t total, used_contexts, used_model;
    printf("1. %d workers start (fork + exec of rmctl): each makes its node-scope context "
           "and binds\n   the driver in the device's primary context\n", WEIGHTS_PROCESSES);
    for (int i = 0; i < WEIGHTS_PROCESSES; i++) {
        if (weights_spawn(plugin, options, namespace_name, &workers[i]) != 0) {
            fprintf(stderr, "rmctl: demo: fork: %s\n", strerror(errno));
            return -1;
        }
        ++*spawned;
    }
    for (int i = 0; i < WEIGHTS_PROCESSES; i++)
        if (weights_expect(&workers[i], 'r') != 0)
            return -1;
    if (weights_device_used(cuda, &used_contexts, &total) != 0)
        return -1;
    char delta[40], per[32];
    format_delta(used_contexts, used_before, delta, sizeof delta);
    format_bytes((used_contexts > used_before ? used_contexts - used_before : 0) /
                     WEIGHTS_PROCESSES, per, sizeof per);
    printf("   device memory their %d CUDA contexts take: %s (%s each)%s\n", WEIGHTS_PROCESSES,
           delta, per, cuda->fake ? " (the fake driver's contexts take none)" : "");

    printf("2. pid %" PRId32 " asks for %s: its loader calls alloc_device_buffer and copies "
           "the\n   weights from the host; then the other %d ask at once, once they are "
           "ready\n", workers[0].report.pid, WEIGHTS_MODEL_KEY, WEIGHTS_PROCESSES - 1);
    if (weights_command(&workers[0], 'g') != 0 || weights_expect(&workers[0], 'a') != 0)
        return -1;
    for (int i = 1; i < WEIGHTS_PROCESSES; i++)
        if (weights_command(&workers[i], 'g') != 0)
            return -1;
    for (int i = 1; i < WEIGHTS_PROCESSES; i++)
        if (weights_expect(&workers[i], 'a') != 0)
            return -1;
    const weights_report *first = &workers[0].report;
    if (first->loader_calls > 0)
        printf("   its loader: alloc_device_buffer %.1f ms; the pattern made and copied in "
               "%.1f ms with\n   %s\n", first->alloc_us / 1e3, first->copy_us / 1e3,
               first->copy_call);

    printf("3. each reads all %" PRIu64 " MiB back (cuMemcpyDtoH_v2) and checksums them; "
           "per process:\n", WEIGHTS_MODEL_BYTES >> 20);
    for (int i = 0; i < WEIGHTS_PROCESSES; i++)
        if (weights_command(&workers[i], 'c') != 0)
            return -1;
    for (int i = 0; i < WEIGHTS_PROCESSES; i++)
        if (weights_expect(&workers[i], 'c') != 0)
            return -1;
    uint64_t expected = weights_expected_checksum();
    printf("   %7s  %-8s  %9s  %-14s  %-4s  %-16s  %s\n", "PID", "HOW", "GET", "DEVICE POINTER",
           "MEM", "CHECKSUM", "THE LOADER'S BYTES");
    int loaded = 0, content_ok = 1, on_device = 1;
    for (int i = 0; i < WEIGHTS_PROCESSES; i++) {
        const weights_report *r = &workers[i].report;
        weights_print_row(r, expected);
        loaded += r->loader_calls;
        content_ok &= r->checksum == expected;
        on_device &= r->memory == RM_MEMORY_CUDA && r->device_ordinal == 0;
    }
    printf("   (one device allocation, which each process maps at an address of its own)\n");
    char device_bytes[32];
    format_bytes(first->device_bytes, device_bytes, sizeof device_bytes);
    printf("   its row: key %s, memory %s, %s on the device (cuda:%" PRId32 " here)\n",
           first->row_key[0] != '\0' ? first->row_key : "(no row)",
           weights_memory_name(first->memory), device_bytes, first->device_ordinal);
    printf("   the node table now (as `rmctl --namespace %s ls` shows it):\n", namespace_name);
    rm_context *context;
    if (create_node_context(plugin, options, namespace_name, "existing", &context) == 0) {
        print_node_models(plugin->vtable, context, "      ");
        plugin->vtable->context_destroy(context);
    }

    if (weights_device_used(cuda, &used_model, &total) != 0)
        return -1;
    char model_delta[40], one_copy[32], private_copies[32];
    format_delta(used_model, used_contexts, model_delta, sizeof model_delta);
    uint64_t copy_bytes = first->device_bytes != 0 ? first->device_bytes : WEIGHTS_MODEL_BYTES;
    format_bytes(copy_bytes, one_copy, sizeof one_copy);
    format_bytes(copy_bytes * WEIGHTS_PROCESSES, private_copies, sizeof private_copies);
    double ratio = used_model >= used_contexts
                       ? (double)(used_model - used_contexts) / (double)copy_bytes
                       : 0.0;
    printf("4. device memory the model takes with %d processes holding it: %s = %.3fx one "
           "copy of %s\n   (cuMemGetInfo_v2 with the model minus with the contexts alone); %d "
           "private copies\n   would take %s (%d.000x)\n",
           WEIGHTS_PROCESSES, model_delta, ratio, one_copy, WEIGHTS_PROCESSES, private_copies,
           WEIGHTS_PROCESSES);

    weights_worker *writer = &workers[WEIGHTS_PROCESSES - 1];
    weights_worker *checker = &workers[0];
    printf("5. pid %" PRId32 " (attached) writes %d bytes of zeros through its mapping with "
           "cuMemcpyHtoD_v2:\n", writer->report.pid, WEIGHTS_WRITE_BYTES);
    if (weights_command(writer, 'w') != 0 || weights_expect(writer, 'w') != 0)
        return -1;
    printf("   %s (%s)\n", writer->report.write_refused ? "refused" : "ACCEPTED",
           writer->report.message);
    if (weights_command(checker, 'c') != 0 || weights_expect(checker, 'c') != 0)
        return -1;
    int unchanged = checker->report.checksum == expected;
    printf("   pid %" PRId32 " reads the model again: %s\n", checker->report.pid,
           unchanged ? "the same checksum, the weights are unchanged" : "the bytes CHANGED");
    printf("   loader calls in all %d processes: %d\n", WEIGHTS_PROCESSES, loaded);
    return loaded == 1 && content_ok && on_device && writer->report.write_refused &&
                   unchanged && ratio < 1.5
               ? 0
               : -1;
}

int demo_gpu_weights(const rm_loaded_plugin *plugin, const rmctl_options *options,
                     const rm_cuda_info *cuda_info, cuda_host *cuda)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    printf("\n== GPU weights shared by %d processes (node scope, ABI 1.4) ==\n",
           WEIGHTS_PROCESSES);
    char why[PATH_MAX + 128];
    if (!RM_PLUGIN_HAS(vt, model_to_dlpack)) {
        printf("(%s has ABI %u.%u: no GPU-resident weights, which need 1.4; part skipped)\n",
               plugin->path, RM_ABI_VERSION_MAJOR(vt->abi_version),
               RM_ABI_VERSION_MINOR(vt->abi_version));
        return 0;
    }
    if (node_registry_missing(plugin, why, sizeof why) != NULL) {
        printf("(%s; part skipped)\n", why);
        return 0;
    }
    char namespace_name[32];
    snprintf(namespace_name, sizeof namespace_name, "demo-gpu-%ld", (long)getpid());
    printf("registry.scope = node, registry.namespace = %s (private to this demo);\n"
           "a %" PRIu64 " MiB model on cuda:0 (%s)%s\n",
           namespace_name, WEIGHTS_MODEL_BYTES >> 20, cuda_info->devices[0].uuid_text,
           cuda->fake ? ",\nthrough the fake driver of the tests: device memory is host "
                        "memory here"
                      : "");
    uint64_t used_before, total;
    if (weights_device_used(cuda, &used_before, &total) != 0)
        return 1;
    char before[32], capacity[32];
    format_bytes(used_before, before, sizeof before);
    format_bytes(total, capacity, sizeof capacity);
    printf("device memory in use before the workers: %s of %s\n", before, capacity);
    weights_worker workers[WEIGHTS_PROCESSES];
    int spawned = 0;
    int result = weights_share(plugin, options, namespace_name, cuda, used_before, workers,
                               &spawned);

    /* The workers release and exit; on a failure they are killed. */
    for (int i = 0; i < spawned; i++) {
        if (result != 0 || weights_command(&workers[i], 'q') != 0)
            kill(workers[i].pid, SIGKILL);
        close(workers[i].to_worker);
        close(workers[i].from_worker);
    }
    for (int i = 0; i < spawned; i++) {
        int status;
        if (waitpid(workers[i].pid, &status, 0) != workers[i].pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            if (result == 0)
                fprintf(stderr, "rmctl: demo: worker %ld did not exit cleanly\n",
                        (long)workers[i].pid);
            result = -1;
        }
    }
    uint64_t used_after;
    if (spawned > 0 && weights_device_used(cuda, &used_after, &total) == 0) {
        char after[32];
        format_bytes(used_after, after, sizeof after);
        printf("6. the workers released the model and exited: the weights lived while a "
               "process had\n   them mapped; device memory in use now: %s (before the "
               "workers: %s)\n", after, before);
    }
    if (demo_node_cleanup(plugin, options, namespace_name) != 0)
        result = -1;
    if (result != 0)
        fprintf(stderr, "rmctl: demo: the GPU weights part failed\n");
    return result == 0 ? 0 : 1;
}
