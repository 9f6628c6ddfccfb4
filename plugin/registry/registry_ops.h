/* The model registry as a context sees it: one table of operations per
 * scope, so that a context picks its scope once, at creation, and each
 * registry call is one indirect call instead of a branch per scope (and
 * a third scope is one more table, not one more branch per call).
 *
 * `registry` is the scope's own object (rm_registry, rm_node_registry).
 * The members implement the vtable members of the same names (see
 * abi/rm_plugin.h for their contracts); the context has already checked
 * itself (NULL, fork generation, feature enabled), the pointers the
 * contract requires and the struct sizes. `metrics` and `reclaim` fill a
 * struct of the current size, which the context copies out; the caller
 * owns its leading struct_size/abi_version pair. */
#ifndef RM_INTERNAL_REGISTRY_OPS_H
#define RM_INTERNAL_REGISTRY_OPS_H

#include <stdint.h>

#include "registry.h" /* rm_model_view */
#include "rm_plugin.h"

typedef struct rm_registry_ops {
    int32_t (*get_or_load)(void *registry, const char *key, rm_model_loader_fn loader,
                           void *loader_user, rm_model_handle **out_handle, void **out_model);
    int32_t (*release)(void *registry, rm_model_handle *handle);
    int32_t (*evict)(void *registry, const char *key);
    int32_t (*metrics)(void *registry, rm_registry_metrics *out);
    int32_t (*list)(void *registry, rm_model_info *out, uint32_t info_struct_size,
                    uint32_t capacity, uint32_t *out_count);
    int32_t (*reclaim)(void *registry, rm_registry_reclaim_report *out);
    /* model_to_dlpack's half: describes the handle's model and takes one
     * more reference through the handle (given back with `release`). */
    int32_t (*view)(void *registry, rm_model_handle *handle, rm_model_view *out);
    /* Joins the scope's threads and gives back every model. */
    void (*destroy)(void *registry);
} rm_registry_ops;

/* Process scope (registry.c) and node scope (node_registry.c). */
extern const rm_registry_ops rm_process_registry_ops;
extern const rm_registry_ops rm_node_registry_ops;

#endif
