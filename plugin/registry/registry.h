/* The process-scope model registry: one load per `name@device` key. Hits
 * and releases take no lock (see the design note in registry.c); a handle
 * names the thread slot its reference was counted in, so two threads may
 * get different handles for one model. */
#ifndef RM_INTERNAL_REGISTRY_H
#define RM_INTERNAL_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "host.h"
#include "loader_buffer.h" /* rm_model_placement */
#include "rm_plugin.h"

typedef struct rm_registry rm_registry;

typedef struct rm_registry_config {
    uint64_t ttl_ns;     /* idle time before eviction; 0 = no TTL */
    uint64_t max_bytes;  /* 0 = unlimited */
    uint64_t max_models; /* 0 = unlimited */
    /* Destroy a model as soon as its last handle is released (node scope:
     * the process-local layer must not keep a node reference while idle). */
    bool evict_when_unused;
    /* The loader records its own error messages (node scope's acquire):
     * keep them instead of the generic "loader failed" one. */
    bool loader_explains_failures;
    /* The context's way to the CUDA driver, for loaders' device buffers
     * (1.4); NULL: none offered. Outlives the registry. */
    struct rm_device_access *device;
} rm_registry_config;

/**
 * Creates a registry and starts its eviction thread. `host` (log, clock)
 * must outlive the registry; `error_owner` is the context that failures are
 * recorded for (rm_error_set). Returns RM_OK, RM_E_NO_MEMORY, RM_E_SYSTEM.
 */
int32_t rm_registry_create(const rm_registry_config *config,
                           const rm_host *host, const void *error_owner,
                           rm_registry **out);

/** Joins the eviction thread and destroys every model. NULL: no-op. */
void rm_registry_destroy(rm_registry *registry);

/* The following implement the vtable members of the same names; see
 * abi/rm_plugin.h for their contracts. Callers have already checked the
 * context (NULL, fork generation, feature enabled) and struct sizes. */
int32_t rm_registry_get_or_load(rm_registry *registry, const char *key,
                                rm_model_loader_fn loader, void *loader_user,
                                rm_model_handle **out_handle, void **out_model);
int32_t rm_registry_release(rm_registry *registry, rm_model_handle *handle);
int32_t rm_registry_evict(rm_registry *registry, const char *key);
void rm_registry_get_metrics(rm_registry *registry, rm_registry_metrics *out);
int32_t rm_registry_list(rm_registry *registry, rm_model_info *out,
                         uint32_t info_struct_size, uint32_t capacity,
                         uint32_t *out_count);

/** What model_to_dlpack needs of a handle's model. */
typedef struct rm_model_view {
    void *model;
    uint64_t bytes;
    rm_model_placement placement;
} rm_model_view;

/**
 * Describes `handle`'s model and takes one more reference on it through
 * `handle` (given back with rm_registry_release(handle)). RM_OK;
 * RM_E_INVALID_ARGUMENT (a handle with no reference).
 */
int32_t rm_registry_view(rm_registry *registry, rm_model_handle *handle, rm_model_view *out);

/** Evicts expired and over-budget idle models now (registry_reclaim in
 *  process scope); sets out->models_evicted. */
int32_t rm_registry_reclaim(rm_registry *registry, rm_registry_reclaim_report *out);

#endif
