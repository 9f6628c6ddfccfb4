/* The importer's side of shared-memory tensors: the pools of other
 * contexts (other processes, or other contexts of this one) that a context
 * maps, one cached view per pool, and the holds it takes on their slots.
 * Part of the shm backend (shm_pool_backend.c), which owns the cache and
 * calls everything here with the context's lock held. */
#ifndef RM_INTERNAL_SHM_VIEW_H
#define RM_INTERNAL_SHM_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "descriptor.h"
#include "mem_backend.h"
#include "rm_plugin.h"
#include "shm_control.h"

typedef struct rm_shm_view rm_shm_view;

/** A context's cache of mapped pools, by pool identity. */
typedef struct rm_shm_views {
    const void *error_owner;
    const char *namespace_name;    /* where descriptors' pools are looked up */
    rm_tensor_pool_stats *stats;   /* pools_mapped is kept equal to count */
    rm_shm_view **list;
    size_t count, capacity;
} rm_shm_views;

/**
 * A handle on the tensor of pool descriptor `d` in another pool:
 * maps the pool on first use (read-only; read-write too once `writable`
 * is asked), checks the descriptor against the owner's control segment,
 * and takes this context's holder bit on the slot. Sets block->data,
 * block->home and block->flags. Errors: RM_E_INVALID_DESCRIPTOR naming the
 * field, RM_E_STALE_DESCRIPTOR (freed, or the pool is gone),
 * RM_E_QUOTA_EXCEEDED (RM_TENSOR_MAX_HOLDERS), RM_E_NO_MEMORY, RM_E_SYSTEM.
 */
int32_t rm_shm_views_import(rm_shm_views *views, const rm_descriptor *d, bool writable,
                            rm_mem_block *block);

/** Drops a handle's hold (block->home is its view). The view's pages go
 *  at its last hold if the owner retired the pool. */
void rm_shm_views_release(rm_shm_views *views, rm_mem_block *block);

/** Unmaps every view this context holds nothing of whose pool is retired
 *  or, with `check_owners` (which reads /proc for each: microseconds),
 *  whose owner died. */
void rm_shm_views_forget_unused(rm_shm_views *views, bool check_owners);

/** Unmaps every view and frees the cache. `release_holds` false (a child
 *  of fork()): the shared holder state is left as it is. */
void rm_shm_views_close(rm_shm_views *views, bool release_holds);

/* ---- the hold protocol, shared with the owner's imports of its own pool -- */

/**
 * Takes hold `bit` on slot d->slot of `control` for a context that already
 * has `held` handles on it, after checking every field of `d` against the
 * tensor the slot holds. On a mismatch a hold just taken is dropped again;
 * true in *freed_by_drop when that drop left the slot dead (the owner must
 * free it). `pool_name` is for messages.
 */
int32_t rm_shm_hold_slot(const void *error_owner, rm_control *control, const rm_descriptor *d,
                         uint32_t held, uint32_t bit, const char *pool_name,
                         bool *freed_by_drop);

/** RM_E_STALE_DESCRIPTOR: the descriptor's owner start time differs from
 *  the pool's (the pid was reused, or the descriptor is forged). */
int32_t rm_shm_owner_changed(const void *error_owner, const char *pool_name,
                             uint64_t recorded, uint64_t claimed);

#endif
