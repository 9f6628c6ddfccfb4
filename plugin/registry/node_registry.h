/* The node-scope model registry: one load per key per machine, shared by
 * every process of a namespace through a table in /dev/shm (see the "Node
 * scope" block of abi/rm_plugin.h and node_table.h). */
#ifndef RM_INTERNAL_NODE_REGISTRY_H
#define RM_INTERNAL_NODE_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "host.h"
#include "rm_plugin.h"

typedef struct rm_node_registry rm_node_registry;

typedef struct rm_node_registry_config {
    const char *namespace_name; /* checked by the config parser */
    uint32_t table_entries;     /* used only when this context creates the table */
    uint64_t ttl_ns;            /* 0 = no TTL eviction */
    uint64_t max_bytes;         /* 0 = unlimited */
    uint64_t max_models;        /* 0 = unlimited */
    /* registry.table = existing: creation attaches to the namespace's
     * table only if there is one, else fails with RM_E_NOT_FOUND and
     * creates nothing (false: creates it, as a host's first use must). */
    bool existing_table_only;
    /* The context's way to the CUDA driver: device buffers of loaders and
     * keys by device UUID (1.4). Outlives the registry. */
    struct rm_device_access *device;
} rm_node_registry_config;

/**
 * Opens (or creates, unless `existing_table_only`) the namespace's node
 * table, counting this context in it, and starts the sweeper thread.
 * Returns RM_OK, RM_E_NOT_FOUND (no table, and `existing_table_only`),
 * RM_E_CORRUPT_STATE, RM_E_QUOTA_EXCEEDED (RM_NODE_TABLE_ATTACHERS
 * processes use the table), RM_E_NO_MEMORY, RM_E_SYSTEM.
 */
int32_t rm_node_registry_create(const rm_node_registry_config *config,
                                const rm_host *host, const void *error_owner,
                                rm_node_registry **out);

/** Stops the sweeper, drops this context's references, leaves the table
 *  (removing it when this was the namespace's last context and nothing is
 *  left in it), unmaps. NULL: no-op. */
void rm_node_registry_destroy(rm_node_registry *registry);

/* The vtable members of the same names, in node scope (see the header).
 * Callers have checked the context and struct sizes. */
int32_t rm_node_registry_get_or_load(rm_node_registry *registry, const char *key,
                                     rm_model_loader_fn loader, void *loader_user,
                                     rm_model_handle **out_handle, void **out_model);
int32_t rm_node_registry_release(rm_node_registry *registry, rm_model_handle *handle);
int32_t rm_node_registry_evict(rm_node_registry *registry, const char *key);
int32_t rm_node_registry_get_metrics(rm_node_registry *registry, rm_registry_metrics *out);
int32_t rm_node_registry_list(rm_node_registry *registry, rm_model_info *out,
                              uint32_t info_struct_size, uint32_t capacity,
                              uint32_t *out_count);
/* Reclaim also removes the table when nothing is left in it and no live
 * process but this context uses it (counted as one segment unlinked). */
int32_t rm_node_registry_reclaim(rm_node_registry *registry,
                                 rm_registry_reclaim_report *out);

#endif
