/* pool_holder: a process that holds a shared-memory pool for rmctl's tests
 * to look at (rmctl ls) and to leave behind when killed (rmctl gc).
 *
 *   pool_holder NAMESPACE SECONDS
 *
 * In NAMESPACE, one context allocates two tensors (1 MiB and 4 KiB, both
 * shared) and a second context of this process imports the first, so the
 * pool shows 2 live tensors, 1,052,672 live bytes and 1 holder. Prints
 * "ready <pool name>" once all that is in place, then waits SECONDS or for
 * SIGTERM/SIGINT and cleans up (a SIGKILL leaves the segments behind, which
 * is the point). Exit status 0, or 1 with a message on stderr.
 *
 * With POOL_HOLDER_CUDA_DRIVER set (a driver library: the tests give the
 * fake), the first context also enables cuda-ipc with that cuda.driver and
 * holds one 1 MiB device tensor on cuda:0, so that ls shows a device table
 * beside the pool.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin_loader.h"
#include "rm_build_config.h"

static int fail(const rm_plugin_v1 *vt, const rm_context *context, const char *what,
                int32_t status)
{
    fprintf(stderr, "pool_holder: %s: %s: %s\n", what, vt->error_name(status),
            vt->context_last_error(context));
    return 1;
}

static int32_t create(const rm_plugin_v1 *vt, const char *namespace_name,
                      const char *cuda_driver, rm_context **out)
{
    rm_config_entry entries[] = {
        {.key = "features", .value = cuda_driver != NULL ? "shared-memory,cuda-ipc"
                                                         : "shared-memory"},
        {.key = "shm.namespace", .value = namespace_name},
        {.key = "cuda.driver", .value = cuda_driver},
    };
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = entries;
    options.entry_count = cuda_driver != NULL ? 3 : 2;
    options.flags = RM_CONTEXT_IGNORE_ENV;
    return vt->context_create(&options, out);
}

static int32_t allocate_bytes(const rm_plugin_v1 *vt, rm_context *context, int64_t bytes,
                              rm_tensor **out)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = bytes;
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY | RM_TENSOR_ALLOC_ZERO;
    return vt->tensor_allocate(context, &spec, out);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pool_holder NAMESPACE SECONDS\n");
        return 2;
    }
    const char *namespace_name = argv[1];
    long seconds = strtol(argv[2], NULL, 10);

    /* Blocked before anything is set up, so that an early SIGTERM waits
     * for the clean-up below instead of killing the process. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);

    rm_loaded_plugin plugin;
    char error[1024];
    if (rm_plugin_load(NULL, RM_DEFAULT_PLUGIN_DIR, RM_ABI_VERSION(1, 1),
                       RM_ABI_VERSION_CURRENT, NULL, &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "pool_holder: %s\n", error);
        return 1;
    }
    const rm_plugin_v1 *vt = plugin.vtable;
    if (!RM_PLUGIN_HAS(vt, tensor_import) || !RM_PLUGIN_HAS(vt, tensor_pool_stats)) {
        fprintf(stderr, "pool_holder: the plugin has no tensor functions\n");
        return 1;
    }
    const char *cuda_driver = getenv("POOL_HOLDER_CUDA_DRIVER");
    rm_context *owner, *importer;
    int32_t status = create(vt, namespace_name, cuda_driver, &owner);
    if (status != RM_OK)
        return fail(vt, NULL, "context_create", status);
    status = create(vt, namespace_name, NULL, &importer);
    if (status != RM_OK)
        return fail(vt, NULL, "context_create", status);

    rm_tensor *large, *small, *view;
    unsigned char descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    if ((status = allocate_bytes(vt, owner, 1 << 20, &large)) != RM_OK ||
        (status = allocate_bytes(vt, owner, 4096, &small)) != RM_OK ||
        (status = vt->tensor_export(owner, large, descriptor, sizeof descriptor)) != RM_OK)
        return fail(vt, owner, "allocate and export", status);
    status = vt->tensor_import(importer, descriptor, sizeof descriptor, 0, &view);
    if (status != RM_OK)
        return fail(vt, importer, "tensor_import", status);
    rm_tensor *device_tensor = NULL;
    if (cuda_driver != NULL) {
        rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
        spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
        spec.ndim = 1;
        spec.shape[0] = 1 << 20;
        snprintf(spec.device, sizeof spec.device, "cuda:0");
        status = vt->tensor_allocate(owner, &spec, &device_tensor);
        if (status != RM_OK)
            return fail(vt, owner, "tensor_allocate(cuda:0)", status);
    }

    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    status = vt->tensor_pool_stats(owner, &stats);
    if (status != RM_OK)
        return fail(vt, owner, "tensor_pool_stats", status);
    printf("ready %s\n", stats.pool_name);
    fflush(stdout);

    struct timespec timeout = {.tv_sec = seconds};
    sigtimedwait(&stop, NULL, &timeout);

    if (device_tensor != NULL)
        vt->tensor_release(owner, device_tensor);
    vt->tensor_release(importer, view);
    vt->tensor_release(owner, small);
    vt->tensor_release(owner, large);
    vt->context_destroy(importer);
    vt->context_destroy(owner);
    rm_plugin_unload(&plugin);
    return 0;
}
