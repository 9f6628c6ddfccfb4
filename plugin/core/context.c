/* A context: one configured instance of the plugin, and the vtable
 * functions that act on it.
 *
 * Every entry point checks the context before anything else: NULL, a
 * context inherited through fork(), a capability that is not enabled. The
 * checks are a few loads, because get_or_load sits on every node's hot
 * path. */
#include "context.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "host.h"
#include "negotiate.h"
#include "rm_build_config.h"
#include "fork.h"
#if RM_HAVE_MODEL_REGISTRY
#include "model_key.h"
#include "device_access.h"
#include "node_registry.h"
#include "registry.h"
#include "registry_ops.h"
#endif
#if RM_HAVE_SHARED_MEMORY
#include "allocator.h"
#include "tensor.h"
#endif

/* The smallest struct_size accepted for each struct a host hands in or has
 * filled: its size in the oldest version that published it. Literal
 * (abi_sizes.h), not sizeof(), so that a field a later version appends
 * does not lock out the hosts built before it. */
#include "abi_sizes.h"

#define NO_ARENA UINT32_MAX

struct rm_context {
    uint64_t fork_generation;
    uint64_t features_enabled;
    uint32_t negotiated_abi_version;
    uint32_t allocator_arena;
    rm_host host;
    rm_config config;
#if RM_HAVE_MODEL_REGISTRY
    /* The scope's registry and its operations (registry_ops.h), both set
     * at creation when the registry is enabled. */
    const rm_registry_ops *registry_ops;
    void *registry;
    /* The driver for loaders' device buffers (1.4); set up with the
     * registry, gone after it. */
    rm_device_access device;
    bool device_ready;
#endif
#if RM_HAVE_SHARED_MEMORY
    rm_tensors *tensors;
#endif
};

/* ---- checks shared by every entry point ------------------------------- */

static int32_t check_context(const rm_context *context)
{
    if (context == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT, "context is NULL");
    if (context->fork_generation != rm_fork_generation())
        return rm_error_set(context, RM_E_FORKED,
                            "this context was created before fork(); create a new "
                            "context in the child process");
    return RM_OK;
}

static int32_t check_feature(const rm_context *context, uint64_t feature,
                             const char *name)
{
    int32_t status = check_context(context);
    if (status != RM_OK)
        return status;
    if ((RM_FEATURES_BUILT & feature) == 0)
        return rm_error_set(context, RM_E_FEATURE_UNAVAILABLE,
                            "feature '%s' was not built into this plugin", name);
    if ((context->features_enabled & feature) == 0)
        return rm_error_set(context, RM_E_FEATURE_DISABLED,
                            "feature '%s' is not enabled in this context (config key "
                            "'features')",
                            name);
    return RM_OK;
}

static int32_t check_struct_size(const void *owner, uint32_t size, size_t minimum,
                                 const char *type)
{
    if (size < minimum)
        return rm_error_set(owner, RM_E_STRUCT_SIZE,
                            "%s.struct_size %u is below its oldest published size %zu",
                            type, size, minimum);
    return RM_OK;
}

/* Copies a plugin-filled struct into the host's, keeping the host's two
 * leading fields and writing no further than the host's struct_size. */
static void copy_out(void *host_struct, const void *filled, size_t filled_size)
{
    uint32_t host_size;
    memcpy(&host_size, host_struct, sizeof host_size);
    size_t size = host_size < filled_size ? host_size : filled_size;
    size_t header = 2 * sizeof(uint32_t);
    if (size > header)
        memcpy((char *)host_struct + header, (const char *)filled + header, size - header);
}

/* ---- lifecycle ---------------------------------------------------------- */

static int32_t apply_options(rm_config *config, const rm_context_options *options)
{
    const char *path = options->config_path;
    if (path == NULL && (options->flags & RM_CONTEXT_IGNORE_ENV) == 0) {
        const char *from_env = getenv(RM_CONFIG_ENV);
        if (from_env != NULL && from_env[0] != '\0')
            path = from_env;
    }
    if (path != NULL) {
        int32_t status = rm_config_apply_file(config, path, NULL);
        if (status != RM_OK)
            return status;
    }
    for (uint64_t i = 0; i < options->entry_count; i++) {
        const rm_config_entry *entry = &options->entries[i];
        if (entry->key == NULL || entry->value == NULL)
            return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                                "config entry %llu has a NULL key or value",
                                (unsigned long long)i);
        char origin[64];
        snprintf(origin, sizeof origin, "config entry %llu", (unsigned long long)i);
        int32_t status = rm_config_set(config, entry->key, entry->value, origin, NULL);
        if (status != RM_OK)
            return status;
    }
    return RM_OK;
}

static int32_t validate_options(const rm_context_options *options)
{
    int32_t status = check_struct_size(NULL, options->struct_size,
                                       RM_CONTEXT_OPTIONS_SIZE_V1_0, "rm_context_options");
    if (status != RM_OK)
        return status;
    for (size_t i = 0; i < sizeof options->reserved / sizeof options->reserved[0]; i++)
        if (options->reserved[i] != 0)
            return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                                "rm_context_options.reserved[%zu] must be zero", i);
    if (options->flags & ~RM_CONTEXT_IGNORE_ENV)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                            "rm_context_options.flags has unknown bits 0x%llx",
                            (unsigned long long)(options->flags & ~RM_CONTEXT_IGNORE_ENV));
    if (options->entry_count > 0 && options->entries == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                            "rm_context_options.entries is NULL but entry_count is %llu",
                            (unsigned long long)options->entry_count);
    return RM_OK;
}

static int32_t start_capabilities(rm_context *context)
{
    /* Device tensors are tensors: handles, descriptors and holds are the
     * shared-memory capability's. */
    if ((context->features_enabled & RM_FEATURE_CUDA_IPC) != 0 &&
        (context->features_enabled & RM_FEATURE_SHARED_MEMORY) == 0)
        return rm_error_set(NULL, RM_E_CONFIG_INVALID_VALUE,
                            "features: 'cuda-ipc' needs 'shared-memory' enabled as well");
#if RM_HAVE_SHARED_MEMORY
    if (context->features_enabled & RM_FEATURE_SHARED_MEMORY) {
        int32_t status = rm_allocator_arena_create(NULL, &context->allocator_arena);
        if (status != RM_OK)
            return status;
        status = rm_tensors_create(&context->config, &context->host, context,
                                   &context->tensors);
        if (status != RM_OK) {
            char message[RM_ERROR_MESSAGE_MAX];
            snprintf(message, sizeof message, "%s", rm_error_last(context));
            return rm_error_set(NULL, status, "%s", message);
        }
    }
#endif
#if RM_HAVE_MODEL_REGISTRY
    if (context->features_enabled & RM_FEATURE_MODEL_REGISTRY) {
        rm_device_access_init(&context->device,
                              (context->features_enabled & RM_FEATURE_CUDA_IPC) != 0,
                              context->config.cuda_driver);
        context->device_ready = true;
        rm_registry_config registry_config = {
            .device = &context->device,
            /* Rounded: 9 fractional digits at most, so exact in ns. */
            .ttl_ns = (uint64_t)(context->config.registry_ttl_s * 1e9 + 0.5),
            .max_bytes = context->config.registry_max_bytes,
            .max_models = context->config.registry_max_models,
        };
        int32_t status;
        if (context->config.registry_scope == RM_REGISTRY_SCOPE_NODE) {
            rm_node_registry_config node_config = {
                .namespace_name = context->config.registry_namespace,
                .table_entries = context->config.registry_table_entries,
                .ttl_ns = registry_config.ttl_ns,
                .max_bytes = registry_config.max_bytes,
                .max_models = registry_config.max_models,
                .existing_table_only =
                    context->config.registry_table == RM_REGISTRY_TABLE_EXISTING,
                .device = &context->device,
            };
            rm_node_registry *node = NULL;
            status = rm_node_registry_create(&node_config, &context->host, context, &node);
            context->registry = node;
            context->registry_ops = &rm_node_registry_ops;
        } else {
            rm_registry *process = NULL;
            status = rm_registry_create(&registry_config, &context->host, context, &process);
            context->registry = process;
            context->registry_ops = &rm_process_registry_ops;
        }
        if (status != RM_OK) {
            /* The registry recorded its message for the context that does not
             * exist yet; hand it to the NULL owner that create reports on
             * (through a copy: the message lives in the buffer it is written
             * to). */
            char message[RM_ERROR_MESSAGE_MAX];
            snprintf(message, sizeof message, "%s", rm_error_last(context));
            return rm_error_set(NULL, status, "%s", message);
        }
    }
#endif
    return RM_OK;
}

static void stop_capabilities(rm_context *context)
{
#if RM_HAVE_MODEL_REGISTRY
    if (context->registry != NULL)
        context->registry_ops->destroy(context->registry);
    context->registry = NULL;
    context->registry_ops = NULL;
    if (context->device_ready)
        rm_device_access_fini(&context->device);
    context->device_ready = false;
#endif
#if RM_HAVE_SHARED_MEMORY
    rm_tensors_destroy(context->tensors);
    context->tensors = NULL;
    if (context->allocator_arena != NO_ARENA)
        rm_allocator_arena_destroy(context->allocator_arena);
    context->allocator_arena = NO_ARENA;
#endif
}

int32_t rm_context_create(const rm_context_options *options, rm_context **out_context)
{
    rm_error_clear();
    if (out_context == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT, "out_context is NULL");
    *out_context = NULL;

    rm_context_options defaults = RM_STRUCT_INIT(rm_context_options);
    if (options == NULL)
        options = &defaults;

    rm_host host = {.log_level = RM_LOG_WARN};
    uint32_t negotiated;
    rm_negotiated_snapshot(&host.services, &negotiated);

    rm_config config;
    rm_config_defaults(&config);
    int32_t status = validate_options(options);
    if (status == RM_OK)
        status = apply_options(&config, options);
    if (status != RM_OK) {
        rm_host_log(&host, RM_LOG_ERROR, "context_create: %s", rm_error_last(NULL));
        return status;
    }

    rm_context *context = calloc(1, sizeof *context);
    if (context == NULL)
        return rm_error_set(NULL, RM_E_NO_MEMORY, "cannot allocate a context");
    *context = (rm_context){
        .fork_generation = rm_fork_generation(),
        .features_enabled = config.features,
        .negotiated_abi_version = negotiated,
        .allocator_arena = NO_ARENA,
        .host = host,
        .config = config,
    };
    context->host.log_level = config.log_level;

    status = start_capabilities(context);
    if (status != RM_OK) {
        /* RM_E_NOT_FOUND is registry.table = existing finding no table:
         * the answer its caller asked for (rmctl ls of an empty namespace),
         * not an error to put in the host's log. */
        rm_host_log(&context->host, status == RM_E_NOT_FOUND ? RM_LOG_INFO : RM_LOG_ERROR,
                    "context_create: %s", rm_error_last(NULL));
        stop_capabilities(context);
        free(context);
        return status;
    }
    rm_host_log(&context->host, RM_LOG_INFO, "context created (ABI %u.%u)",
                RM_ABI_VERSION_MAJOR(negotiated), RM_ABI_VERSION_MINOR(negotiated));
    *out_context = context;
    return RM_OK;
}

void rm_context_destroy(rm_context *context)
{
    if (context == NULL)
        return;
    if (context->fork_generation != rm_fork_generation()) {
        /* A child's copy: the parent's threads do not exist here and its
         * locks may be held, so only the memory is ours to give back. */
        free(context);
        return;
    }
    stop_capabilities(context);
    free(context);
}

const char *rm_context_last_error(const rm_context *context)
{
    return rm_error_last(context);
}

int32_t rm_context_info_get(const rm_context *context, rm_context_info *out)
{
    int32_t status = check_context(context);
    if (status != RM_OK)
        return status;
    if (out == NULL)
        return rm_error_set(context, RM_E_INVALID_ARGUMENT, "info is NULL");
    status = check_struct_size(context, out->struct_size, RM_CONTEXT_INFO_SIZE_V1_0,
                               "rm_context_info");
    if (status != RM_OK)
        return status;
    rm_context_info info = {
        .negotiated_abi_version = context->negotiated_abi_version,
        .features_built = RM_FEATURES_BUILT,
        .features_enabled = context->features_enabled,
        .allocator_arena = context->allocator_arena,
    };
#if RM_HAVE_SHARED_MEMORY
    snprintf(info.allocator, sizeof info.allocator, "%s", rm_allocator_version());
#endif
    copy_out(out, &info, sizeof info);
    return RM_OK;
}

int32_t rm_context_config_get(const rm_context *context, const char *key, char *buffer,
                              uint64_t buffer_size, uint64_t *out_needed)
{
    int32_t status = check_context(context);
    if (status != RM_OK)
        return status;
    if (key == NULL)
        return rm_error_set(context, RM_E_INVALID_ARGUMENT, "key is NULL");
    size_t needed = 0;
    status = rm_config_format(&context->config, key, buffer, (size_t)buffer_size,
                              &needed, context);
    if (out_needed != NULL && status != RM_E_CONFIG_UNKNOWN_KEY)
        *out_needed = needed;
    return status;
}

/* ---- model registry ----------------------------------------------------- */

/* The registry's entry points sit on every node's hot path: the usual
 * case (this process's context, registry enabled) is decided here in a few
 * loads, however the compiler treats check_feature at each call site;
 * anything else gets check_feature's verdict and message. */
static inline int32_t check_registry(const rm_context *context)
{
    if ((RM_FEATURES_BUILT & RM_FEATURE_MODEL_REGISTRY) != 0 && context != NULL &&
        context->fork_generation == rm_fork_generation() &&
        (context->features_enabled & RM_FEATURE_MODEL_REGISTRY) != 0)
        return RM_OK;
    return check_feature(context, RM_FEATURE_MODEL_REGISTRY, "model-registry");
}

int32_t rm_context_model_key_normalize(const char *key, char *out, uint64_t out_size)
{
#if RM_HAVE_MODEL_REGISTRY
    rm_error_clear();
    return rm_model_key_normalize(key, out, (size_t)out_size, NULL);
#else
    (void)key, (void)out, (void)out_size;
    return rm_error_set(NULL, RM_E_FEATURE_UNAVAILABLE,
                        "feature 'model-registry' was not built into this plugin");
#endif
}

int32_t rm_context_model_get_or_load(rm_context *context, const char *key,
                                     rm_model_loader_fn loader, void *loader_user,
                                     rm_model_handle **out_handle, void **out_model)
{
    if (out_handle != NULL)
        *out_handle = NULL;
    if (out_model != NULL)
        *out_model = NULL;
    int32_t status = check_registry(context);
    if (status != RM_OK)
        return status;
    if (key == NULL || loader == NULL || out_handle == NULL || out_model == NULL)
        return rm_error_set(context, RM_E_INVALID_ARGUMENT,
                            "model_get_or_load: key, loader, out_handle and out_model "
                            "must not be NULL");
#if RM_HAVE_MODEL_REGISTRY
    return context->registry_ops->get_or_load(context->registry, key, loader, loader_user,
                                              out_handle, out_model);
#else
    (void)loader_user;
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_model_release(rm_context *context, rm_model_handle *handle)
{
    int32_t status = check_registry(context);
    if (status != RM_OK)
        return status;
    if (handle == NULL)
        return rm_error_set(context, RM_E_INVALID_ARGUMENT, "model_release: handle is NULL");
#if RM_HAVE_MODEL_REGISTRY
    return context->registry_ops->release(context->registry, handle);
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_model_evict(rm_context *context, const char *key)
{
    int32_t status = check_registry(context);
    if (status != RM_OK)
        return status;
#if RM_HAVE_MODEL_REGISTRY
    return context->registry_ops->evict(context->registry, key);
#else
    (void)key;
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_registry_metrics(rm_context *context, rm_registry_metrics *out)
{
    int32_t status = check_registry(context);
    if (status != RM_OK)
        return status;
    if (out == NULL)
        return rm_error_set(context, RM_E_INVALID_ARGUMENT, "metrics is NULL");
    status = check_struct_size(context, out->struct_size, RM_REGISTRY_METRICS_SIZE_V1_0,
                               "rm_registry_metrics");
    if (status != RM_OK)
        return status;
#if RM_HAVE_MODEL_REGISTRY
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    status = context->registry_ops->metrics(context->registry, &metrics);
    if (status != RM_OK)
        return status;
    copy_out(out, &metrics, sizeof metrics);
    return RM_OK;
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_registry_list(rm_context *context, rm_model_info *out,
                                 uint32_t info_struct_size, uint32_t capacity,
                                 uint32_t *out_count)
{
    int32_t status = check_registry(context);
    if (status != RM_OK)
        return status;
    if (out_count == NULL || (out == NULL && capacity > 0))
        return rm_error_set(context, RM_E_INVALID_ARGUMENT,
                            "registry_list: out_count is NULL, or out is NULL with "
                            "capacity %u",
                            capacity);
    status = check_struct_size(context, info_struct_size, RM_MODEL_INFO_SIZE_V1_0,
                               "rm_model_info");
    if (status != RM_OK)
        return status;
#if RM_HAVE_MODEL_REGISTRY
    return context->registry_ops->list(context->registry, out, info_struct_size, capacity,
                                       out_count);
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

#if RM_HAVE_MODEL_REGISTRY
/* What a model's DLPack view owns: the tensor, its shape, and the
 * reference it gives back. */
typedef struct model_dlpack {
    rm_dl_managed_tensor_versioned managed;
    int64_t shape[1];
    rm_context *context;
    rm_model_handle *handle;
} model_dlpack;

static void model_dlpack_delete(rm_dl_managed_tensor_versioned *self)
{
    if (self == NULL)
        return;
    model_dlpack *view = self->manager_ctx;
    (void)view->context->registry_ops->release(view->context->registry, view->handle);
    free(view);
}
#endif

int32_t rm_context_model_to_dlpack(rm_context *context, rm_model_handle *handle,
                                   rm_dl_managed_tensor_versioned **out)
{
    if (out != NULL)
        *out = NULL;
    int32_t status = check_registry(context);
    if (status != RM_OK)
        return status;
    if (handle == NULL || out == NULL)
        return rm_error_set(context, RM_E_INVALID_ARGUMENT,
                            "model_to_dlpack: handle and out must not be NULL");
#if RM_HAVE_MODEL_REGISTRY
    model_dlpack *view = calloc(1, sizeof *view);
    if (view == NULL)
        return rm_error_set(context, RM_E_NO_MEMORY, "model_to_dlpack: out of memory");
    rm_model_view described;
    status = context->registry_ops->view(context->registry, handle, &described);
    if (status != RM_OK) {
        free(view);
        return status;
    }
    if (!described.placement.buffer) {
        (void)context->registry_ops->release(context->registry, handle);
        free(view);
        return rm_error_set(context, RM_E_NOT_SHAREABLE,
                            "model_to_dlpack: the loader returned a model of its own, not a "
                            "buffer, so its bytes are unknown to the plugin");
    }
    bool device = described.placement.memory == RM_MEMORY_CUDA;
    view->context = context;
    view->handle = handle;
    view->shape[0] = (int64_t)described.bytes;
    view->managed = (rm_dl_managed_tensor_versioned){
        .version = {.major = 1, .minor = 0},
        .manager_ctx = view,
        .deleter = model_dlpack_delete,
        .flags = RM_DLPACK_FLAG_READ_ONLY,
        .dl_tensor = {.data = described.model,
                      .device = {.device_type = device ? 2 : 1,
                                 .device_id = device ? described.placement.device_ordinal : 0},
                      .ndim = 1,
                      .dtype = {.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1},
                      .shape = view->shape,
                      .strides = NULL,
                      .byte_offset = 0}};
    *out = &view->managed;
    return RM_OK;
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_registry_reclaim(rm_context *context, rm_registry_reclaim_report *out)
{
    int32_t status = check_registry(context);
    if (status != RM_OK)
        return status;
    if (out != NULL) {
        status = check_struct_size(context, out->struct_size, RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_2,
                                   "rm_registry_reclaim_report");
        if (status != RM_OK)
            return status;
    }
#if RM_HAVE_MODEL_REGISTRY
    rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
    status = context->registry_ops->reclaim(context->registry, &report);
    if (out != NULL)
        copy_out(out, &report, sizeof report);
    return status;
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

/* ---- 1.1: shared-memory tensors ----------------------------------------- */

#define SHM_FEATURE RM_FEATURE_SHARED_MEMORY, "shared-memory"

#if RM_HAVE_SHARED_MEMORY
#define TENSORS_OR_UNAVAILABLE(call) return (call)
#else
#define TENSORS_OR_UNAVAILABLE(call) return RM_E_FEATURE_UNAVAILABLE
#endif

static int32_t check_tensor_call(rm_context *context, const void *a, const void *b,
                                 const char *what)
{
    int32_t status = check_feature(context, SHM_FEATURE);
    if (status != RM_OK)
        return status;
    if (a == NULL || b == NULL)
        return rm_error_set(context, RM_E_INVALID_ARGUMENT, "%s: NULL argument", what);
    return RM_OK;
}

int32_t rm_context_tensor_allocate(rm_context *context, const rm_tensor_spec *spec,
                                   rm_tensor **out_tensor)
{
    if (out_tensor != NULL)
        *out_tensor = NULL;
    int32_t status = check_tensor_call(context, spec, out_tensor, "tensor_allocate");
    if (status == RM_OK && spec->struct_size < RM_TENSOR_SPEC_SIZE_V1_1)
        status = rm_error_set(context, RM_E_STRUCT_SIZE,
                              "rm_tensor_spec.struct_size %u is below the 1.1 size %zu",
                              spec->struct_size, RM_TENSOR_SPEC_SIZE_V1_1);
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_allocate(context->tensors, spec, out_tensor));
}

int32_t rm_context_tensor_info(rm_context *context, const rm_tensor *tensor,
                               rm_tensor_info *out)
{
    int32_t status = check_tensor_call(context, tensor, out, "tensor_info");
    if (status == RM_OK)
        status = check_struct_size(context, out->struct_size, RM_TENSOR_INFO_SIZE_V1_1,
                                   "rm_tensor_info");
    if (status != RM_OK)
        return status;
#if RM_HAVE_SHARED_MEMORY
    rm_tensor_info info;
    status = rm_tensors_info(context->tensors, tensor, &info);
    if (status == RM_OK)
        copy_out(out, &info, sizeof info);
    return status;
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_tensor_export(rm_context *context, const rm_tensor *tensor, void *out,
                                 uint64_t out_size)
{
    int32_t status = check_tensor_call(context, tensor, out, "tensor_export");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_export(context->tensors, tensor, out, out_size));
}

int32_t rm_context_tensor_export_text(rm_context *context, const rm_tensor *tensor, char *out,
                                      uint64_t out_size)
{
    int32_t status = check_tensor_call(context, tensor, out, "tensor_export_text");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_export_text(context->tensors, tensor, out, out_size));
}

int32_t rm_context_tensor_export_inline(rm_context *context, const rm_tensor *tensor,
                                        void *out, uint64_t out_size, uint64_t *out_needed)
{
    int32_t status = check_tensor_call(context, tensor, tensor, "tensor_export_inline");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(
        rm_tensors_export_inline(context->tensors, tensor, out, out_size, out_needed));
}

int32_t rm_context_tensor_import(rm_context *context, const void *descriptor, uint64_t size,
                                 uint64_t flags, rm_tensor **out_tensor)
{
    if (out_tensor != NULL)
        *out_tensor = NULL;
    int32_t status = check_tensor_call(context, descriptor, out_tensor, "tensor_import");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(
        rm_tensors_import(context->tensors, descriptor, size, flags, out_tensor));
}

int32_t rm_context_tensor_import_text(rm_context *context, const char *text, uint64_t flags,
                                      rm_tensor **out_tensor)
{
    if (out_tensor != NULL)
        *out_tensor = NULL;
    int32_t status = check_tensor_call(context, text, out_tensor, "tensor_import_text");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_import_text(context->tensors, text, flags, out_tensor));
}

int32_t rm_context_tensor_release(rm_context *context, rm_tensor *tensor)
{
    int32_t status = check_tensor_call(context, tensor, tensor, "tensor_release");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_release(context->tensors, tensor));
}

int32_t rm_context_tensor_to_dlpack(rm_context *context, rm_tensor *tensor,
                                    rm_dl_managed_tensor **out)
{
    if (out != NULL)
        *out = NULL;
    int32_t status = check_tensor_call(context, tensor, out, "tensor_to_dlpack");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_to_dlpack(context->tensors, tensor, out));
}

int32_t rm_context_tensor_to_dlpack_versioned(rm_context *context, rm_tensor *tensor,
                                              rm_dl_managed_tensor_versioned **out)
{
    if (out != NULL)
        *out = NULL;
    int32_t status = check_tensor_call(context, tensor, out, "tensor_to_dlpack_versioned");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_to_dlpack_versioned(context->tensors, tensor, out));
}

int32_t rm_context_tensor_pool_stats(rm_context *context, rm_tensor_pool_stats *out)
{
    int32_t status = check_tensor_call(context, out, out, "tensor_pool_stats");
    if (status == RM_OK)
        status = check_struct_size(context, out->struct_size, RM_TENSOR_POOL_STATS_SIZE_V1_1,
                                   "rm_tensor_pool_stats");
    if (status != RM_OK)
        return status;
#if RM_HAVE_SHARED_MEMORY
    rm_tensor_pool_stats stats;
    status = rm_tensors_pool_stats(context->tensors, &stats);
    if (status == RM_OK)
        copy_out(out, &stats, sizeof stats);
    return status;
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_tensor_session_bytes(rm_context *context, uint64_t session,
                                        uint64_t *out_bytes)
{
    int32_t status = check_tensor_call(context, out_bytes, out_bytes, "tensor_session_bytes");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_session_bytes(context->tensors, session, out_bytes));
}

int32_t rm_context_tensor_reclaim(rm_context *context, rm_reclaim_report *out)
{
    int32_t status = check_tensor_call(context, context, context, "tensor_reclaim");
    if (status == RM_OK && out != NULL)
        status = check_struct_size(context, out->struct_size, RM_RECLAIM_REPORT_SIZE_V1_1,
                                   "rm_reclaim_report");
    if (status != RM_OK)
        return status;
#if RM_HAVE_SHARED_MEMORY
    rm_reclaim_report report;
    status = rm_tensors_reclaim(context->tensors, &report);
    if (out != NULL)
        copy_out(out, &report, sizeof report);
    return status;
#else
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_context_shm_list(rm_context *context, rm_shm_pool_info *out,
                            uint32_t info_struct_size, uint32_t capacity, uint32_t *out_count)
{
    int32_t status = check_tensor_call(context, out_count, out_count, "shm_list");
    if (status == RM_OK && out == NULL && capacity > 0)
        status = rm_error_set(context, RM_E_INVALID_ARGUMENT,
                              "shm_list: out is NULL with capacity %u", capacity);
    if (status == RM_OK)
        status = check_struct_size(context, info_struct_size, RM_SHM_POOL_INFO_SIZE_V1_1,
                                   "rm_shm_pool_info");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(
        rm_tensors_list(context->tensors, out, info_struct_size, capacity, out_count));
}

/* ---- 1.3: device tensors --------------------------------------------------- */

#define CUDA_FEATURE RM_FEATURE_CUDA_IPC, "cuda-ipc"

int32_t rm_context_tensor_wrap_device(rm_context *context, const rm_tensor_spec *spec,
                                      void *device_pointer, rm_device_released_fn released,
                                      void *released_user, rm_tensor **out_tensor)
{
    if (out_tensor != NULL)
        *out_tensor = NULL;
    int32_t status = check_feature(context, CUDA_FEATURE);
    if (status == RM_OK)
        status = check_tensor_call(context, spec, out_tensor, "tensor_wrap_device");
    if (status == RM_OK && spec->struct_size < RM_TENSOR_SPEC_SIZE_V1_3)
        status = rm_error_set(context, RM_E_STRUCT_SIZE,
                              "rm_tensor_spec.struct_size %u is below the 1.3 size %zu (the "
                              "device field is needed)",
                              spec->struct_size, RM_TENSOR_SPEC_SIZE_V1_3);
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_wrap_device(context->tensors, spec, device_pointer,
                                                  released, released_user, out_tensor));
}

int32_t rm_context_tensor_record(rm_context *context, rm_tensor *tensor, void *stream)
{
    int32_t status = check_tensor_call(context, tensor, tensor, "tensor_record");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_record(context->tensors, tensor, stream));
}

int32_t rm_context_tensor_wait(rm_context *context, rm_tensor *tensor, void *stream,
                               uint64_t flags)
{
    int32_t status = check_tensor_call(context, tensor, tensor, "tensor_wait");
    if (status != RM_OK)
        return status;
    TENSORS_OR_UNAVAILABLE(rm_tensors_wait(context->tensors, tensor, stream, flags));
}

int32_t rm_context_cuda_info(rm_context *context, rm_cuda_info *out)
{
    int32_t status = check_context(context);
    if (status == RM_OK && out == NULL)
        status = rm_error_set(context, RM_E_INVALID_ARGUMENT, "cuda_info: out is NULL");
    if (status == RM_OK)
        status = check_struct_size(context, out->struct_size, RM_CUDA_INFO_SIZE_V1_3,
                                   "rm_cuda_info");
    if (status != RM_OK)
        return status;
    rm_cuda_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    info.abi_version = RM_ABI_VERSION_CURRENT;
    if ((RM_FEATURES_BUILT & RM_FEATURE_CUDA_IPC) == 0) {
        info.status = rm_error_set(context, RM_E_FEATURE_UNAVAILABLE,
                                   "feature 'cuda-ipc' was not built into this plugin");
        snprintf(info.message, sizeof info.message, "%s", rm_error_last(context));
        copy_out(out, &info, sizeof info);
        return info.status;
    }
#if RM_HAVE_SHARED_MEMORY
    if (context->tensors != NULL) {
        status = rm_tensors_cuda_info(context->tensors, &info);
        copy_out(out, &info, sizeof info);
        return status;
    }
#endif
    info.status = rm_error_set(context, RM_E_FEATURE_DISABLED,
                               "device tensors need features 'shared-memory' and 'cuda-ipc' "
                               "enabled in this context");
    snprintf(info.message, sizeof info.message, "%s", rm_error_last(context));
    copy_out(out, &info, sizeof info);
    return RM_OK;
}
