/* rmctl demo: device tensors handed from one process to another over CUDA
 * IPC (ABI 1.3).
 *
 * The producer (this rmctl process) allocates two float32 tensors on
 * "cuda:0", fills them through the driver, records them and sends their
 * descriptors (text) down a pipe to a consumer. The consumer must be a new
 * process image, not a fork(): CUDA cannot be used in a child forked after
 * the driver was initialised (the plugin answers RM_E_FORKED there), and
 * rmctl has initialised it by asking cuda_info(). So it is rmctl itself,
 * fork()ed and exec()ed with a hidden command, the same configuration
 * (--plugin, --config, --namespace, -c) and the two pipe fds. It imports
 * both, waits for the producer's recorded work, copies them back to the
 * host, checks every byte, and reports how many IPC handles it opened: the
 * two tensors share one block, so the second import is served by the
 * handle the first opened.
 *
 * Then, on the same device, model weights that several processes share
 * (ABI 1.4, demo_gpu_weights.c).
 *
 * Without a usable device (no driver, NVIDIA's stub, no GPU, a plugin
 * without 1.3 or built without cuda-ipc) the section prints one line with
 * cuda_info()'s reason and succeeds, for both parts: the demo runs on any
 * machine. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_host.h"
#include "rmctl.h"

enum { HANDOFF_TENSORS = 2, ROWS = 512, COLUMNS = 1024 }; /* float32: 2 MiB each */

typedef struct cuda_handoff_message {
    char text[HANDOFF_TENSORS][RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    uint64_t checksum[HANDOFF_TENSORS];
} cuda_handoff_message;

typedef struct cuda_handoff_reply {
    int32_t ok;
    int32_t device_ordinal;       /* where the consumer sees the tensors */
    double import_us[HANDOFF_TENSORS];
    double wait_us;
    double copy_back_us;
    uint64_t handles_opened;      /* the consumer's rm_tensor_pool_stats */
    uint64_t handle_cache_hits;
} cuda_handoff_reply;

static uint64_t checksum_bytes(const unsigned char *bytes, size_t size)
{
    uint64_t hash = 0xcbf29ce484222325u;
    for (size_t i = 0; i < size; i++)
        hash = (hash ^ bytes[i]) * 0x100000001b3u;
    return hash;
}

static size_t tensor_bytes(void)
{
    return (size_t)ROWS * COLUMNS * sizeof(float);
}

/* ---- the consumer (exec'd rmctl) ----------------------------------------- */

static int consume(const rm_loaded_plugin *plugin, rm_context *context,
                   const cuda_handoff_message *message, rm_tensor **tensors,
                   cuda_handoff_reply *reply)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_cuda_info cuda_info;
    char why[1024];
    if (cuda_unusable(plugin, context, &cuda_info, why, sizeof why) != NULL) {
        fprintf(stderr, "rmctl: consumer: no usable CUDA device: %s\n", why);
        return -1;
    }
    rm_tensor_info info[HANDOFF_TENSORS];
    for (int i = 0; i < HANDOFF_TENSORS; i++) {
        double start = now_ms();
        int32_t status = vt->tensor_import_text(context, message->text[i], 0, &tensors[i]);
        reply->import_us[i] = (now_ms() - start) * 1e3;
        if (status != RM_OK) {
            report_failure(vt, context, "consumer: tensor_import_text", status);
            return -1;
        }
        info[i] = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
        vt->tensor_info(context, tensors[i], &info[i]);
        if (info[i].device.device_type != 2) {
            fprintf(stderr, "rmctl: consumer: the import is not device memory (DLPack "
                            "device type %" PRId32 ")\n", info[i].device.device_type);
            return -1;
        }
    }
    double start = now_ms();
    for (int i = 0; i < HANDOFF_TENSORS; i++) {
        int32_t status = vt->tensor_wait(context, tensors[i], NULL, RM_TENSOR_WAIT_HOST);
        if (status != RM_OK) {
            report_failure(vt, context, "consumer: tensor_wait", status);
            return -1;
        }
    }
    reply->wait_us = (now_ms() - start) * 1e3;
    reply->device_ordinal = info[0].device.device_id;

    /* The driver the plugin uses (cuda.driver), in the primary context of
     * the device where this process sees the tensors. */
    cuda_host cuda;
    char error[512];
    if (cuda_host_open(cuda_info.library, info[0].device.device_id, &cuda, error,
                       sizeof error) != 0) {
        fprintf(stderr, "rmctl: consumer: %s\n", error);
        return -1;
    }
    unsigned char *host = malloc(tensor_bytes());
    int result = host != NULL ? 0 : -1;
    start = now_ms();
    for (int i = 0; i < HANDOFF_TENSORS && result == 0; i++) {
        if (cuda_host_copy_to_host(&cuda, host, (uint64_t)(uintptr_t)info[i].data,
                                   tensor_bytes(), error, sizeof error) != 0) {
            fprintf(stderr, "rmctl: consumer: %s\n", error);
            result = -1;
        } else if (checksum_bytes(host, tensor_bytes()) != message->checksum[i]) {
            fprintf(stderr, "rmctl: consumer: tensor %d: the bytes differ from the "
                            "producer's\n", i);
            result = -1;
        }
    }
    reply->copy_back_us = (now_ms() - start) * 1e3;
    free(host);
    cuda_host_close(&cuda);

    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    vt->tensor_pool_stats(context, &stats);
    reply->handles_opened = stats.cuda_handles_opened;
    reply->handle_cache_hits = stats.cuda_handle_cache_hits;
    return result;
}

int demo_cuda_consumer(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    if (options->command_argument_count != 2) {
        fprintf(stderr, "rmctl: %s is the GPU demo's consumer: it takes the two fds the demo "
                        "hands it\n", DEMO_CUDA_CONSUMER_COMMAND);
        return 2;
    }
    int from_producer = atoi(options->command_arguments[0]);
    int to_producer = atoi(options->command_arguments[1]);
    cuda_handoff_message message;
    if (read_all(from_producer, &message, sizeof message) != 0)
        return 1;
    cuda_handoff_reply reply = {0};
    rm_tensor *tensors[HANDOFF_TENSORS] = {NULL, NULL};
    rm_config_entry config[] = {{.key = "features", .value = "shared-memory,cuda-ipc"}};
    rm_context *context = NULL;
    if (create_context(plugin, options, config, 1, &context) == 0)
        reply.ok = consume(plugin, context, &message, tensors, &reply) == 0;
    fflush(stdout);
    fflush(stderr);
    /* Hold the imports until the producer has looked at its counters. */
    char release = 0;
    int result = write_all(to_producer, &reply, sizeof reply) == 0 &&
                 read_all(from_producer, &release, 1) == 0 && reply.ok ? 0 : 1;
    for (int i = 0; i < HANDOFF_TENSORS; i++)
        if (tensors[i] != NULL)
            vt->tensor_release(context, tensors[i]);
    if (context != NULL)
        vt->context_destroy(context);
    return result;
}

/* ---- the producer (the demo) ----------------------------------------------- */

pid_t spawn_rmctl(const rm_loaded_plugin *plugin, const rmctl_options *options,
                  const char *command, const char *const *arguments, int argument_count,
                  const int *inherit_fds, int inherit_count)
{
    enum { MAX_ARGS = 12 + 2 * MAX_CONFIG_ENTRIES + MAX_COMMAND_ARGUMENTS };
    char *args[MAX_ARGS];
    char pairs[MAX_CONFIG_ENTRIES][512];
    int count = 0;
    if (argument_count > MAX_COMMAND_ARGUMENTS)
        return -1;
    args[count++] = "rmctl";
    args[count++] = "--plugin";
    args[count++] = (char *)plugin->path;
    if (options->config_path != NULL) {
        args[count++] = "--config";
        args[count++] = (char *)options->config_path;
    }
    if (options->namespace_name != NULL) {
        args[count++] = "--namespace";
        args[count++] = (char *)options->namespace_name;
    }
    for (uint64_t i = 0; i < options->entry_count; i++) {
        snprintf(pairs[i], sizeof pairs[i], "%s=%s", options->entries[i].key,
                 options->entries[i].value);
        args[count++] = "-c";
        args[count++] = pairs[i];
    }
    args[count++] = (char *)command;
    for (int i = 0; i < argument_count; i++)
        args[count++] = (char *)arguments[i];
    args[count] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* The pipes are close-on-exec, so that the child holds no end of
         * another's: only its own cross. */
        for (int i = 0; i < inherit_count; i++)
            fcntl(inherit_fds[i], F_SETFD, 0);
        execv("/proc/self/exe", args);
        fprintf(stderr, "rmctl: exec /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Execs rmctl as the consumer with this run's configuration. */
static pid_t start_consumer(const rm_loaded_plugin *plugin, const rmctl_options *options,
                            int from_producer, int to_producer)
{
    char fds[2][16];
    snprintf(fds[0], sizeof fds[0], "%d", from_producer);
    snprintf(fds[1], sizeof fds[1], "%d", to_producer);
    const char *const arguments[] = {fds[0], fds[1]};
    const int inherit[] = {from_producer, to_producer};
    return spawn_rmctl(plugin, options, DEMO_CUDA_CONSUMER_COMMAND, arguments, 2, inherit, 2);
}

static int allocate_device(const rm_plugin_v1 *vt, rm_context *context, rm_tensor **out,
                           rm_tensor_info *info)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_FLOAT, .bits = 32, .lanes = 1};
    spec.ndim = 2;
    spec.shape[0] = ROWS;
    spec.shape[1] = COLUMNS;
    snprintf(spec.device, sizeof spec.device, "cuda:0");
    int32_t status = vt->tensor_allocate(context, &spec, out);
    if (status != RM_OK) {
        report_failure(vt, context, "tensor_allocate(cuda:0)", status);
        return -1;
    }
    *info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, *out, info);
    return 0;
}

/* Fills tensor `index` through the driver and records it, so that the
 * consumer's tensor_wait() orders its reads after the copy. */
static int fill_and_record(const rm_plugin_v1 *vt, rm_context *context, cuda_host *cuda,
                           rm_tensor *tensor, const rm_tensor_info *info, int index,
                           uint64_t *checksum)
{
    float *values = malloc(tensor_bytes());
    if (values == NULL)
        return -1;
    for (size_t i = 0; i < (size_t)ROWS * COLUMNS; i++)
        values[i] = (float)((i * 7 + (size_t)index * 13) % 1000) * 0.5f;
    *checksum = checksum_bytes((const unsigned char *)values, tensor_bytes());
    char error[512];
    int result = cuda_host_copy_to_device(cuda, (uint64_t)(uintptr_t)info->data, values,
                                          tensor_bytes(), error, sizeof error);
    free(values);
    if (result != 0) {
        fprintf(stderr, "rmctl: %s\n", error);
        return -1;
    }
    int32_t status = vt->tensor_record(context, tensor, NULL);
    if (status != RM_OK) {
        report_failure(vt, context, "tensor_record", status);
        return -1;
    }
    return 0;
}

static void print_device_stats(const rm_plugin_v1 *vt, rm_context *context, const char *when)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    if (vt->tensor_pool_stats(context, &stats) != RM_OK)
        return;
    char bytes[32], blocks[32];
    format_bytes(stats.cuda_bytes, bytes, sizeof bytes);
    format_bytes(stats.cuda_block_bytes, blocks, sizeof blocks);
    printf("   device tensors %s: %" PRIu64 " (%s) in %" PRIu64 " block%s (%s)\n", when,
           stats.cuda_tensors, bytes, stats.cuda_blocks, stats.cuda_blocks == 1 ? "" : "s",
           blocks);
}

static int hand_off(const rm_loaded_plugin *plugin, const rmctl_options *options,
                    rm_context *context, rm_tensor *const *tensors,
                    const uint64_t *checksums)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    cuda_handoff_message message;
    memset(&message, 0, sizeof message);
    double start = now_ms();
    for (int i = 0; i < HANDOFF_TENSORS; i++) {
        int32_t status = vt->tensor_export_text(context, tensors[i], message.text[i],
                                                sizeof message.text[i]);
        if (status != RM_OK) {
            report_failure(vt, context, "tensor_export_text", status);
            return -1;
        }
        message.checksum[i] = checksums[i];
    }
    size_t length = strlen(message.text[0]);
    printf("3. exports both as text (%zu chars each, the same %d bytes as a host tensor's "
           "descriptor):\n   %.16s...%s\n",
           length, RM_TENSOR_DESCRIPTOR_SIZE, message.text[0],
           message.text[0] + (length > 8 ? length - 8 : 0));
    printf("4. fork + exec of rmctl as the consumer (a forked child cannot use CUDA): it "
           "imports\n   both, waits for the recorded copies, copies them back and checks "
           "every byte\n");
    int down[2], up[2];
    if (pipe2(down, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(up, O_CLOEXEC) != 0) {
        close(down[0]);
        close(down[1]);
        return -1;
    }
    pid_t child = start_consumer(plugin, options, down[0], up[1]);
    close(down[0]);
    close(up[1]);
    cuda_handoff_reply reply = {0};
    int result = -1;
    if (child > 0 && write_all(down[1], &message, sizeof message) == 0 &&
        read_all(up[0], &reply, sizeof reply) == 0 && reply.ok) {
        double round_trip_ms = now_ms() - start;
        char bytes[32];
        format_bytes(tensor_bytes(), bytes, sizeof bytes);
        printf("   consumer %ld: imported 2 x %s on cuda:%" PRId32 " in %.0f us (first: "
               "opens the block's IPC handle)\n"
               "   and %.0f us (second: the cached handle); waited %.0f us; copied back in "
               "%.0f us\n",
               (long)child, bytes, reply.device_ordinal, reply.import_us[0], reply.import_us[1],
               reply.wait_us, reply.copy_back_us);
        printf("   bytes equal to the producer's: yes (both tensors, every byte)\n");
        printf("   IPC handles opened by the consumer: %" PRIu64 " for %d tensors (%" PRIu64
               " import%s served by a cached handle)\n",
               reply.handles_opened, HANDOFF_TENSORS, reply.handle_cache_hits,
               reply.handle_cache_hits == 1 ? "" : "s");
        printf("   round trip, export to checked reply (exec of the consumer included): "
               "%.1f ms\n", round_trip_ms);
        print_device_stats(vt, context, "while the consumer holds both");
        result = 0;
    }
    char release = 'r';
    if (child > 0)
        write_all(down[1], &release, 1);
    close(down[1]);
    close(up[0]);
    int status = 0;
    if (child > 0 && (waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
                      WEXITSTATUS(status) != 0))
        result = -1;
    if (result != 0)
        fprintf(stderr, "rmctl: the device tensor handoff to consumer %ld failed\n",
                (long)child);
    return result;
}

/* Steps 1 to 5: two device tensors handed to an exec'd consumer. */
static int demo_cuda_handoff(const rm_loaded_plugin *plugin, const rmctl_options *options,
                             rm_context *context, const rm_cuda_info *cuda_info, cuda_host *cuda)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    printf("1. the producer (pid %ld) allocates 2 x float32 [%d,%d] on cuda:0 (%s, driver "
           "%s)\n",
           (long)getpid(), ROWS, COLUMNS, cuda_info->devices[0].uuid_text, cuda_info->library);
    if (cuda->fake)
        printf("   (the fake driver of the tests: device memory is host memory here)\n");
    rm_tensor *tensors[HANDOFF_TENSORS] = {NULL, NULL};
    rm_tensor_info info[HANDOFF_TENSORS];
    uint64_t checksums[HANDOFF_TENSORS];
    int result = 1;
    for (int i = 0; i < HANDOFF_TENSORS; i++)
        if (allocate_device(vt, context, &tensors[i], &info[i]) != 0)
            goto out;
    printf("2. fills them with cuMemcpyHtoD_v2 in the primary context and records each "
           "(tensor_record)\n");
    for (int i = 0; i < HANDOFF_TENSORS; i++)
        if (fill_and_record(vt, context, cuda, tensors[i], &info[i], i, &checksums[i]) != 0)
            goto out;
    print_device_stats(vt, context, "before the handoff");
    if (hand_off(plugin, options, context, tensors, checksums) != 0)
        goto out;
    printf("5. the consumer released both and exited; the producer releases its own\n");
    for (int i = 0; i < HANDOFF_TENSORS; i++) {
        vt->tensor_release(context, tensors[i]);
        tensors[i] = NULL;
    }
    vt->tensor_reclaim(context, NULL);
    print_device_stats(vt, context, "at the end");
    result = 0;
out:
    for (int i = 0; i < HANDOFF_TENSORS; i++)
        if (tensors[i] != NULL)
            vt->tensor_release(context, tensors[i]);
    return result;
}

/* The GPU section: the handoff, then the weights that processes share
 * (demo_gpu_weights.c). Whether a device is usable is asked once, so
 * that without one the section is one line. */
int demo_cuda(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    printf("\n== Device tensors between two processes (CUDA IPC) ==\n");
    if ((vt->features_built & RM_FEATURE_SHARED_MEMORY) == 0) {
        printf("(shared-memory not built: device tensors live in its pools; GPU handoff "
               "skipped)\n");
        return 0;
    }
    rm_config_entry config[] = {{.key = "features", .value = "shared-memory,cuda-ipc"}};
    rm_context *context;
    int cuda_built = (vt->features_built & RM_FEATURE_CUDA_IPC) != 0;
    /* Without cuda-ipc built, asking for it fails context_create: the
     * reason is printed below instead. */
    if (create_context(plugin, options, cuda_built ? config : NULL, cuda_built ? 1 : 0,
                       &context) != 0)
        return 1;
    rm_cuda_info cuda_info;
    char why[1024];
    if (cuda_unusable(plugin, context, &cuda_info, why, sizeof why) != NULL) {
        printf("no usable CUDA device (%s): GPU handoff skipped\n", why);
        vt->context_destroy(context);
        return 0;
    }
    rm_context_info context_info = RM_STRUCT_INIT(rm_context_info);
    vt->context_info(context, &context_info);
    if ((context_info.features_enabled & RM_FEATURE_CUDA_IPC) == 0) {
        printf("(cuda-ipc disabled by the configuration: GPU handoff skipped)\n");
        vt->context_destroy(context);
        return 0;
    }

    cuda_host cuda;
    char error[512];
    if (cuda_host_open(cuda_info.library, 0, &cuda, error, sizeof error) != 0) {
        fprintf(stderr, "rmctl: %s\n", error);
        vt->context_destroy(context);
        return 1;
    }
    int result = demo_cuda_handoff(plugin, options, context, &cuda_info, &cuda);
    /* The weights part measures the device's memory: this context's
     * blocks are gone first (its CUDA context stays, in the baseline). */
    vt->context_destroy(context);
    if (result == 0)
        result = demo_gpu_weights(plugin, options, &cuda_info, &cuda);
    cuda_host_close(&cuda);
    return result;
}
