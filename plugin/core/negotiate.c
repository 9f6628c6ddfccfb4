/* Load-time negotiation: the exported entry point and the v1 vtable.
 *
 * The host offers an inclusive version range; the plugin answers with the
 * highest version both implement (as the Vulkan loader and OpenXR do), so a
 * host built against a newer minor still works with an older plugin and the
 * other way round. */
#include "negotiate.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "abi_sizes.h"
#include "context.h"
#include "error.h"
#include "config.h"
#include "fork.h"

/* The vtable says it implements RM_PLUGIN_MAX_ABI, so it must hold every
 * member of that version: RM_PLUGIN_HAS() trusts struct_size. */
_Static_assert(RM_PLUGIN_MAX_ABI == RM_ABI_VERSION(1, 4) &&
                   sizeof(rm_plugin_v1) == RM_PLUGIN_V1_SIZE_V1_4,
               "the vtable must end where its newest version ends (abi_sizes.h)");

static pthread_mutex_t negotiated_lock = PTHREAD_MUTEX_INITIALIZER;
static rm_host_services negotiated_services;
static uint32_t negotiated_version = RM_PLUGIN_MAX_ABI;
static pthread_once_t negotiated_fork_guard_once = PTHREAD_ONCE_INIT;

/* Held across fork() so that a child never inherits it locked: the child
 * negotiates and creates contexts too. */
static void negotiated_lock_acquire(void)
{
    pthread_mutex_lock(&negotiated_lock);
}

static void negotiated_lock_release(void)
{
    pthread_mutex_unlock(&negotiated_lock);
}

static void install_negotiated_fork_guard(void)
{
    (void)pthread_atfork(negotiated_lock_acquire, negotiated_lock_release,
                         negotiated_lock_release);
}

static const rm_plugin_v1 plugin_v1 = {
    .struct_size = sizeof(rm_plugin_v1),
    .abi_version = RM_PLUGIN_MAX_ABI,
    .features_built = RM_FEATURES_BUILT,
    .name = "rm_plugin",
    .version = RM_PLUGIN_VERSION_STRING,
    .error_name = rm_error_name,
    .strerror = rm_error_string,
    .context_create = rm_context_create,
    .context_destroy = rm_context_destroy,
    .context_last_error = rm_context_last_error,
    .context_info = rm_context_info_get,
    .config_get = rm_context_config_get,
    .config_key_at = rm_config_key_at,
    .model_key_normalize = rm_context_model_key_normalize,
    .model_get_or_load = rm_context_model_get_or_load,
    .model_release = rm_context_model_release,
    .model_evict = rm_context_model_evict,
    .registry_metrics = rm_context_registry_metrics,
    .registry_list = rm_context_registry_list,
    .tensor_allocate = rm_context_tensor_allocate,
    .tensor_info = rm_context_tensor_info,
    .tensor_export = rm_context_tensor_export,
    .tensor_export_text = rm_context_tensor_export_text,
    .tensor_export_inline = rm_context_tensor_export_inline,
    .tensor_import = rm_context_tensor_import,
    .tensor_import_text = rm_context_tensor_import_text,
    .tensor_release = rm_context_tensor_release,
    .tensor_to_dlpack = rm_context_tensor_to_dlpack,
    .tensor_to_dlpack_versioned = rm_context_tensor_to_dlpack_versioned,
    .tensor_pool_stats = rm_context_tensor_pool_stats,
    .tensor_session_bytes = rm_context_tensor_session_bytes,
    .tensor_reclaim = rm_context_tensor_reclaim,
    .shm_list = rm_context_shm_list,
    .registry_reclaim = rm_context_registry_reclaim,
    .tensor_wrap_device = rm_context_tensor_wrap_device,
    .tensor_record = rm_context_tensor_record,
    .tensor_wait = rm_context_tensor_wait,
    .cuda_info = rm_context_cuda_info,
    .model_to_dlpack = rm_context_model_to_dlpack,
};

static int32_t refuse(const rm_negotiate_request *request, int32_t code,
                      const char *format, ...) __attribute__((format(printf, 3, 4)));

static int32_t refuse(const rm_negotiate_request *request, int32_t code,
                      const char *format, ...)
{
    char message[RM_ERROR_MESSAGE_MAX];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    rm_error_set(NULL, code, "%s", message);
    /* error_buffer is only trusted once struct_size says it exists. */
    if (request != NULL && request->struct_size >= RM_NEGOTIATE_REQUEST_SIZE_V1_0 &&
        request->error_buffer != NULL && request->error_buffer_size > 0)
        snprintf(request->error_buffer, (size_t)request->error_buffer_size, "%s",
                 message);
    return code;
}

static void version_text(uint32_t version, char out[16])
{
    snprintf(out, 16, "%u.%u", RM_ABI_VERSION_MAJOR(version),
             RM_ABI_VERSION_MINOR(version));
}

__attribute__((visibility("default"))) int32_t
rm_plugin_negotiate(const rm_negotiate_request *request, uint32_t *out_abi_version,
                    const rm_plugin_v1 **out_vtable)
{
    if (out_vtable != NULL)
        *out_vtable = NULL;
    if (out_abi_version != NULL)
        *out_abi_version = 0;
    if (request == NULL || out_vtable == NULL || out_abi_version == NULL)
        return refuse(request, RM_E_INVALID_ARGUMENT,
                      "rm_plugin_negotiate: request, out_abi_version and "
                      "out_vtable must not be NULL");
    if (request->struct_size < RM_NEGOTIATE_REQUEST_SIZE_V1_0)
        return refuse(NULL, RM_E_STRUCT_SIZE,
                      "rm_negotiate_request.struct_size %u is below the 1.0 size %zu",
                      request->struct_size, RM_NEGOTIATE_REQUEST_SIZE_V1_0);
    for (size_t i = 0; i < sizeof request->reserved / sizeof request->reserved[0]; i++)
        if (request->reserved[i] != 0)
            return refuse(request, RM_E_INVALID_ARGUMENT,
                          "rm_negotiate_request.reserved[%zu] must be zero", i);
    if (request->services != NULL &&
        request->services->struct_size < RM_HOST_SERVICES_SIZE_V1_0)
        return refuse(request, RM_E_INVALID_ARGUMENT,
                      "rm_host_services.struct_size %u is below the 1.0 size %zu",
                      request->services->struct_size, RM_HOST_SERVICES_SIZE_V1_0);

    char host_min[16], host_max[16], plugin_min[16], plugin_max[16];
    version_text(request->min_abi_version, host_min);
    version_text(request->max_abi_version, host_max);
    version_text(RM_PLUGIN_MIN_ABI, plugin_min);
    version_text(RM_PLUGIN_MAX_ABI, plugin_max);
    if (request->min_abi_version > request->max_abi_version)
        return refuse(request, RM_E_INVALID_ARGUMENT,
                      "host version range %s..%s is empty (min > max)", host_min,
                      host_max);

    uint32_t low = request->min_abi_version > RM_PLUGIN_MIN_ABI ? request->min_abi_version
                                                                : RM_PLUGIN_MIN_ABI;
    uint32_t high = request->max_abi_version < RM_PLUGIN_MAX_ABI ? request->max_abi_version
                                                                 : RM_PLUGIN_MAX_ABI;
    if (low > high)
        return refuse(request, RM_E_INCOMPATIBLE_VERSION,
                      "no common ABI version: host supports %s..%s, rm_plugin %s "
                      "supports %s..%s",
                      host_min, host_max, RM_PLUGIN_VERSION_STRING, plugin_min,
                      plugin_max);

    rm_fork_hook_install();
    pthread_once(&negotiated_fork_guard_once, install_negotiated_fork_guard);
    pthread_mutex_lock(&negotiated_lock);
    memset(&negotiated_services, 0, sizeof negotiated_services);
    if (request->services != NULL) {
        size_t size = request->services->struct_size < sizeof negotiated_services
                          ? request->services->struct_size
                          : sizeof negotiated_services;
        memcpy(&negotiated_services, request->services, size);
    }
    negotiated_version = high;
    pthread_mutex_unlock(&negotiated_lock);

    *out_abi_version = high;
    *out_vtable = &plugin_v1;
    return RM_OK;
}

void rm_negotiated_snapshot(rm_host_services *services, uint32_t *abi_version)
{
    pthread_mutex_lock(&negotiated_lock);
    *services = negotiated_services;
    *abi_version = negotiated_version;
    pthread_mutex_unlock(&negotiated_lock);
}
