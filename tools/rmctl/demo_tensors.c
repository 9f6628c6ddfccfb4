/* rmctl demo: a tensor handed from one process to another. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rmctl.h"

/* ---- demo: a tensor handed between two processes --------------------------- */

/* The parent sends the child nothing but this: two descriptors (the small
 * tensor's in text form, as a host that passes strings would) and the
 * checksum the child should find. It fits in one atomic pipe write. */
typedef struct handoff_message {
    char small_text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    unsigned char large[RM_TENSOR_DESCRIPTOR_SIZE];
    uint64_t large_checksum;
} handoff_message;

/* Bytes the child writes through its writable view for the parent to find. */
#define HANDOFF_MARKER_MAX 40

enum { LARGE_SIDE = 4096 }; /* float32 [4096, 4096]: 64 MiB */

typedef struct handoff_pipes {
    int to_child[2];
    int to_parent[2];
} handoff_pipes;

static uint64_t checksum_bytes(const void *data, uint64_t nbytes)
{
    const unsigned char *bytes = data;
    uint64_t hash = 0xcbf29ce484222325u;
    uint64_t i = 0;
    for (; i + 8 <= nbytes; i += 8) {
        uint64_t word;
        memcpy(&word, bytes + i, sizeof word);
        hash = (hash ^ word) * 0x100000001b3u;
    }
    for (; i < nbytes; i++)
        hash = (hash ^ bytes[i]) * 0x100000001b3u;
    return hash;
}

int write_all(int fd, const void *buffer, size_t size)
{
    const char *cursor = buffer;
    while (size > 0) {
        ssize_t written = write(fd, cursor, size);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return -1;
        cursor += written;
        size -= (size_t)written;
    }
    return 0;
}

int read_all(int fd, void *buffer, size_t size)
{
    char *cursor = buffer;
    while (size > 0) {
        ssize_t got = read(fd, cursor, size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        cursor += got;
        size -= (size_t)got;
    }
    return 0;
}

static void describe_shape(const rm_tensor_info *info, char *out, size_t out_size)
{
    size_t used = (size_t)snprintf(out, out_size, "[");
    for (uint32_t i = 0; i < info->ndim && used < out_size; i++)
        used += (size_t)snprintf(out + used, out_size - used, "%s%" PRId64, i ? "," : "",
                                 info->shape[i]);
    if (used < out_size)
        snprintf(out + used, out_size - used, "]");
}

static void describe_flags(uint64_t flags, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s%s%s%s", flags & RM_TENSOR_OWNED ? "owned," : "",
             flags & RM_TENSOR_IMPORTED ? "imported," : "",
             flags & RM_TENSOR_SHAREABLE ? "shareable," : "private,",
             flags & RM_TENSOR_WRITABLE ? "writable" : "read-only");
}

static void print_tensor_line(const char *who, const rm_tensor_info *info)
{
    char shape[96], flags[96];
    describe_shape(info, shape, sizeof shape);
    describe_flags(info->flags, flags, sizeof flags);
    printf("   %s: float32 %s at %p, %s\n", who, shape, info->data, flags);
}

/* The [2,3,4] tensor, walked through its strides as any consumer would. */
static void print_small_values(const rm_tensor_info *info)
{
    const float *data = info->data;
    printf("      data [");
    for (int64_t i = 0; i < info->shape[0]; i++) {
        printf("%s[", i ? "," : "");
        for (int64_t j = 0; j < info->shape[1]; j++) {
            printf("%s[", j ? "," : "");
            for (int64_t k = 0; k < info->shape[2]; k++)
                printf("%s%g", k ? "," : "",
                       (double)data[i * info->strides[0] + j * info->strides[1] +
                                    k * info->strides[2]]);
            printf("]");
        }
        printf("]");
    }
    printf("]\n");
}

static void print_pool_stats(const rm_plugin_v1 *vt, rm_context *context, const char *when)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    if (vt->tensor_pool_stats(context, &stats) != RM_OK) {
        printf("   pool stats unavailable: %s\n", vt->context_last_error(context));
        return;
    }
    char live[32], committed[32];
    format_bytes(stats.live_bytes, live, sizeof live);
    format_bytes(stats.committed_bytes, committed, sizeof committed);
    printf("   pool %s: live tensors %" PRIu64 " (%s), committed %s, holders %" PRIu64
           ", remote releases %" PRIu64 "\n",
           when, stats.live_tensors, live, committed, stats.holders, stats.remote_releases);
}

static int allocate_float32(const rm_plugin_v1 *vt, rm_context *context, uint32_t ndim,
                            const int64_t *shape, rm_tensor **out, rm_tensor_info *info)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_FLOAT, .bits = 32, .lanes = 1};
    spec.ndim = ndim;
    memcpy(spec.shape, shape, ndim * sizeof shape[0]);
    /* A demo of sharing: no silent heap fallback. */
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    int32_t status = vt->tensor_allocate(context, &spec, out);
    if (status != RM_OK) {
        report_failure(vt, context, "tensor_allocate", status);
        return -1;
    }
    *info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, *out, info);
    return 0;
}

static int import_and_describe(const rm_plugin_v1 *vt, rm_context *context,
                               const handoff_message *message, rm_tensor **small,
                               rm_tensor **large)
{
    int32_t status = vt->tensor_import_text(context, message->small_text, 0, small);
    if (status != RM_OK) {
        report_failure(vt, context, "child: tensor_import_text", status);
        return -1;
    }
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, *small, &info);
    char who[32];
    snprintf(who, sizeof who, "child %ld", (long)getpid());
    print_tensor_line(who, &info);
    print_small_values(&info);

    double start = now_ms();
    status = vt->tensor_import(context, message->large, sizeof message->large,
                               RM_TENSOR_IMPORT_WRITABLE, large);
    double import_us = (now_ms() - start) * 1e3;
    if (status != RM_OK) {
        report_failure(vt, context, "child: tensor_import", status);
        return -1;
    }
    info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, *large, &info);
    print_tensor_line(who, &info);
    uint64_t checksum = checksum_bytes(info.data, info.nbytes);
    printf("      imported with RM_TENSOR_IMPORT_WRITABLE in %.0f us\n"
           "      checksum %016" PRIx64 ", the parent's %016" PRIx64 ": %s\n",
           import_us, checksum, message->large_checksum,
           checksum == message->large_checksum ? "equal" : "DIFFERENT");
    if ((info.flags & RM_TENSOR_WRITABLE) == 0) {
        fprintf(stderr, "rmctl: child: a view imported with RM_TENSOR_IMPORT_WRITABLE "
                        "is not writable\n");
        return -1;
    }
    char marker[HANDOFF_MARKER_MAX] = {0};
    snprintf(marker, sizeof marker, "written by child %ld", (long)getpid());
    memcpy(info.data, marker, sizeof marker);
    printf("      writes \"%s\" at its first byte\n", marker);
    return checksum == message->large_checksum ? 0 : -1;
}

/* The child: a process with nothing of the parent's plugin state that it
 * may use (contexts do not survive fork()), only the descriptors. */
static void run_handoff_child(const rm_loaded_plugin *plugin, const rmctl_options *options,
                              const handoff_pipes *pipes)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    close(pipes->to_child[1]);
    close(pipes->to_parent[0]);
    handoff_message message;
    if (read_all(pipes->to_child[0], &message, sizeof message) != 0)
        _exit(1);
    rm_config_entry config[] = {{.key = "features", .value = "shared-memory"}};
    rm_context *context;
    rm_tensor *small = NULL, *large = NULL;
    int ok = create_context(plugin, options, config, 1, &context) == 0;
    ok = ok && import_and_describe(vt, context, &message, &small, &large) == 0;
    fflush(stdout);
    char byte = ok ? 'i' : 'x';
    /* Hold both until the parent has dropped its handle on the small one,
     * so that this process's release is the one that frees it. */
    if (write_all(pipes->to_parent[1], &byte, 1) != 0 || !ok ||
        read_all(pipes->to_child[0], &byte, 1) != 0)
        _exit(1);
    vt->tensor_release(context, small);
    vt->tensor_release(context, large);
    vt->context_destroy(context);
    fflush(stdout);
    _exit(0);
}

static int run_handoff_parent(const rm_plugin_v1 *vt, rm_context *context, pid_t child,
                              const handoff_pipes *pipes, rm_tensor **small,
                              const rm_tensor_info *large_info)
{
    char byte = 0;
    if (read_all(pipes->to_parent[0], &byte, 1) != 0 || byte != 'i')
        return -1;
    print_pool_stats(vt, context, "while the child holds both");
    printf("4. the parent releases its handle on the small tensor; the child then releases "
           "both and exits\n");
    vt->tensor_release(context, *small);
    *small = NULL;
    fflush(stdout);
    if (write_all(pipes->to_child[1], &byte, 1) != 0)
        return -1;
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    /* The child's release came back through the control segment; the
     * owner frees on its next tensor call. */
    vt->tensor_reclaim(context, NULL);
    print_pool_stats(vt, context, "after the child exits");
    char marker[HANDOFF_MARKER_MAX];
    memcpy(marker, large_info->data, sizeof marker);
    marker[sizeof marker - 1] = '\0';
    printf("5. the parent reads \"%s\" at %p, in its own buffer:\n"
           "   both processes mapped the same pages; nothing was copied\n",
           marker, large_info->data);
    return strncmp(marker, "written by child ", 17) == 0 ? 0 : -1;
}

static int handoff(const rm_loaded_plugin *plugin, const rmctl_options *options,
                   rm_context *context, rm_tensor **small, rm_tensor *large,
                   const rm_tensor_info *large_info)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    handoff_message message;
    memset(&message, 0, sizeof message);
    int32_t status = vt->tensor_export_text(context, *small, message.small_text,
                                            sizeof message.small_text);
    if (status == RM_OK)
        status = vt->tensor_export(context, large, message.large, sizeof message.large);
    if (status != RM_OK) {
        report_failure(vt, context, "tensor_export", status);
        return -1;
    }
    message.large_checksum = checksum_bytes(large_info->data, large_info->nbytes);
    size_t text_length = strlen(message.small_text);
    printf("2. exports both: %d-byte descriptors; the small one as text (%zu chars): "
           "%.16s...%s\n",
           RM_TENSOR_DESCRIPTOR_SIZE, text_length, message.small_text,
           message.small_text + (text_length > 8 ? text_length - 8 : 0));
    printf("3. fork(): the child gets the descriptors through a pipe, creates its own context\n"
           "   (contexts do not survive fork) and imports them\n");

    handoff_pipes pipes;
    if (pipe(pipes.to_child) != 0)
        return -1;
    if (pipe(pipes.to_parent) != 0) {
        close(pipes.to_child[0]);
        close(pipes.to_child[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    if (child == 0)
        run_handoff_child(plugin, options, &pipes);
    close(pipes.to_child[0]);
    close(pipes.to_parent[1]);
    int result = -1;
    if (child > 0 && write_all(pipes.to_child[1], &message, sizeof message) == 0)
        result = run_handoff_parent(vt, context, child, &pipes, small, large_info);
    else if (child < 0)
        fprintf(stderr, "rmctl: fork: %s\n", strerror(errno));
    close(pipes.to_child[1]);
    close(pipes.to_parent[0]);
    if (result != 0 && child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        fprintf(stderr, "rmctl: the tensor handoff to child %ld failed\n", (long)child);
    }
    return result;
}

int demo_tensors(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    printf("\n== Shared-memory tensors between two processes ==\n");
    if ((vt->features_built & RM_FEATURE_SHARED_MEMORY) == 0) {
        printf("(shared-memory not built; nothing to show)\n");
        return 0;
    }
    if (!RM_PLUGIN_HAS(vt, tensor_allocate) || !RM_PLUGIN_HAS(vt, tensor_import_text) ||
        !RM_PLUGIN_HAS(vt, tensor_reclaim)) {
        printf("(the plugin provides no tensor functions (ABI 1.1 members; it reports "
               "ABI %u.%u); nothing to show)\n",
               RM_ABI_VERSION_MAJOR(vt->abi_version), RM_ABI_VERSION_MINOR(vt->abi_version));
        return 0;
    }
    rm_config_entry config[] = {{.key = "features", .value = "shared-memory"}};
    rm_context *context;
    if (create_context(plugin, options, config, 1, &context) != 0)
        return 1;
    rm_context_info context_info = RM_STRUCT_INIT(rm_context_info);
    vt->context_info(context, &context_info);
    if ((context_info.features_enabled & RM_FEATURE_SHARED_MEMORY) == 0) {
        printf("(shared-memory disabled by the configuration; nothing to show)\n");
        vt->context_destroy(context);
        return 0;
    }

    static const int64_t small_shape[] = {2, 3, 4};
    static const int64_t large_shape[] = {LARGE_SIDE, LARGE_SIDE};
    rm_tensor *small = NULL, *large = NULL;
    rm_tensor_info small_info, large_info;
    int result = 1;
    if (allocate_float32(vt, context, 3, small_shape, &small, &small_info) != 0 ||
        allocate_float32(vt, context, 2, large_shape, &large, &large_info) != 0)
        goto out;
    float *values = small_info.data;
    for (int i = 0; i < 24; i++)
        values[i] = (float)i;
    values = large_info.data;
    for (size_t i = 0; i < (size_t)LARGE_SIDE * LARGE_SIDE; i++)
        values[i] = (float)(i % 1000) * 0.25f;
    char large_bytes[32];
    format_bytes(large_info.nbytes, large_bytes, sizeof large_bytes);
    printf("1. the parent (pid %ld) allocates float32 [2,3,4] and float32 [%d,%d] (%s)\n"
           "   in its pool and fills them\n",
           (long)getpid(), LARGE_SIDE, LARGE_SIDE, large_bytes);
    print_tensor_line("parent", &small_info);
    print_pool_stats(vt, context, "before the handoff");
    if (handoff(plugin, options, context, &small, large, &large_info) != 0)
        goto out;
    printf("6. the parent releases the large tensor (the pool keeps its pages for the next "
           "allocation)\n");
    vt->tensor_release(context, large);
    large = NULL;
    print_pool_stats(vt, context, "at the end");
    result = 0;
out:
    if (small != NULL)
        vt->tensor_release(context, small);
    if (large != NULL)
        vt->tensor_release(context, large);
    vt->context_destroy(context);
    return result;
}

