/*
 * A stand-in for a plugin too old for this crate: it negotiates ABI 1.0
 * only and its vtable ends after the 1.0 members. The bytes after them are
 * poison (not NULL), so a host that reads a member past struct_size jumps
 * to garbage and crashes instead of seeing a NULL by luck. Built by the
 * crate's tests (tests/loading.rs) or by meson; never installed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rm_plugin.h"

#define V1_0_SIZE offsetof(rm_plugin_v1, tensor_allocate)

struct rm_context {
    int unused;
};

static const char *error_name(int32_t code)
{
    switch (code) {
#define NAME_(c, n, m) case c: return #n;
        RM_ERROR_MAP(NAME_)
#undef NAME_
    default:
        return "UNKNOWN";
    }
}

static const char *error_message(int32_t code)
{
    switch (code) {
#define MESSAGE_(c, n, m) case c: return m;
        RM_ERROR_MAP(MESSAGE_)
#undef MESSAGE_
    default:
        return "unknown error";
    }
}

static int32_t context_create(const rm_context_options *options, rm_context **out)
{
    (void)options;
    *out = calloc(1, sizeof **out);
    return *out ? RM_OK : RM_E_NO_MEMORY;
}

static void context_destroy(rm_context *context) { free(context); }

static const char *last_error(const rm_context *context)
{
    (void)context;
    return "old test plugin: only ABI 1.0";
}

static int32_t context_info(const rm_context *context, rm_context_info *out)
{
    (void)context;
    out->negotiated_abi_version = RM_ABI_VERSION(1, 0);
    out->features_built = RM_FEATURE_MODEL_REGISTRY;
    out->features_enabled = RM_FEATURE_MODEL_REGISTRY;
    out->allocator_arena = UINT32_MAX;
    return RM_OK;
}

static int32_t config_get(const rm_context *c, const char *k, char *b, uint64_t s, uint64_t *n)
{
    (void)c, (void)k, (void)b, (void)s, (void)n;
    return RM_E_CONFIG_UNKNOWN_KEY;
}

static const char *config_key_at(uint32_t index)
{
    (void)index;
    return NULL;
}

static int32_t normalize(const char *key, char *out, uint64_t size)
{
    if (strlen(key) + 1 > size)
        return RM_E_BUFFER_TOO_SMALL;
    memmove(out, key, strlen(key) + 1);
    return RM_OK;
}

static int32_t get_or_load(rm_context *c, const char *k, rm_model_loader_fn l, void *u,
                           rm_model_handle **h, void **m)
{
    (void)c, (void)k, (void)l, (void)u;
    *h = NULL;
    *m = NULL;
    return RM_E_FEATURE_UNAVAILABLE;
}

static int32_t release(rm_context *c, rm_model_handle *h)
{
    (void)c, (void)h;
    return RM_E_INVALID_ARGUMENT;
}

static int32_t evict(rm_context *c, const char *k)
{
    (void)c, (void)k;
    return RM_E_NOT_FOUND;
}

static int32_t metrics(rm_context *c, rm_registry_metrics *out)
{
    (void)c, (void)out;
    return RM_OK;
}

static int32_t list(rm_context *c, rm_model_info *o, uint32_t s, uint32_t cap, uint32_t *n)
{
    (void)c, (void)o, (void)s, (void)cap;
    *n = 0;
    return RM_OK;
}

static union {
    rm_plugin_v1 table;
    unsigned char bytes[sizeof(rm_plugin_v1)];
} vtable;

/* The entry point; declared first for -Wmissing-prototypes. */
__attribute__((visibility("default"))) int32_t rm_plugin_negotiate(
    const rm_negotiate_request *request, uint32_t *out_version, const rm_plugin_v1 **out_vtable);

int32_t rm_plugin_negotiate(
    const rm_negotiate_request *request, uint32_t *out_version, const rm_plugin_v1 **out_vtable)
{
    *out_version = 0;
    *out_vtable = NULL;
    if (request->min_abi_version > RM_ABI_VERSION(1, 0) ||
        request->max_abi_version < RM_ABI_VERSION(1, 0))
        return RM_E_INCOMPATIBLE_VERSION;
    rm_plugin_v1 v = {
        .struct_size = (uint32_t)V1_0_SIZE, .abi_version = RM_ABI_VERSION(1, 0),
        .features_built = RM_FEATURE_MODEL_REGISTRY, .name = "rm_plugin", .version = "0.0.1-old",
        .error_name = error_name, .strerror = error_message, .context_create = context_create,
        .context_destroy = context_destroy, .context_last_error = last_error,
        .context_info = context_info, .config_get = config_get, .config_key_at = config_key_at,
        .model_key_normalize = normalize, .model_get_or_load = get_or_load,
        .model_release = release, .model_evict = evict, .registry_metrics = metrics,
        .registry_list = list,
    };
    memset(vtable.bytes, 0xA5, sizeof vtable.bytes);
    memcpy(vtable.bytes, &v, V1_0_SIZE);
    *out_version = RM_ABI_VERSION(1, 0);
    *out_vtable = &vtable.table;
    return RM_OK;
}
