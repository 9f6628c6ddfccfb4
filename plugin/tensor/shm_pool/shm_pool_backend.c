/* The shared-memory backend (mem_backend.h), owner side: the context's own
 * pool in /dev/shm (created on the first allocation), its control segment,
 * the slots of its live tensors and a cache of recently freed blocks. The
 * pools of other contexts that it imports from are shm_view.c's.
 *
 * Per slot, `local_holds` counts the context's handles on it; while it is
 * non-zero the owner bit is set in the slot's shared state word. Only the
 * owner frees: releases by other contexts are marked pending in the
 * control segment and freed here on the context's next call (collect).
 *
 * Freed blocks go to a small cache of recently freed blocks (by usable
 * size) before they go back to the arena: the arena's thread cache must
 * stay off for shared memory (it mixes arenas), and this is what it would
 * have done for the common case of a pipeline allocating the same sizes
 * over and over. The cache is bounded and flushed whenever space runs
 * short.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "descriptor.h"
#include "error.h"
#include "mem_backend.h"
#include "pool.h"
#include "shm_control.h"
#include "shm_namespace.h"
#include "shm_view.h"
#include "process_identity.h"

#define BLOCK_CACHE_ENTRIES 16
#define BLOCK_CACHE_MAX_BYTES ((uint64_t)64 << 20)

typedef struct owned_slot {
    void *block;
    uint64_t nbytes;
    uint64_t charge;           /* what was charged to the session */
    size_t usable;             /* the block's usable size (cache key) */
    uint64_t session;
    uint32_t generation;
    uint32_t local_holds;
    uint32_t next_free;
    bool live;
} owned_slot;

typedef struct cached_block {
    void *block;
    size_t usable;
} cached_block;

typedef struct shm_backend {
    rm_mem_backend base;
    rm_mem_env env;
    rm_tensor_pool_stats *stats; /* env.stats, one load nearer on the hot paths */
    char namespace_name[RM_SHM_NAMESPACE_MAX + 1];
    uint64_t pool_bytes;
    uint32_t slot_count;

    /* The context's own pool, once created. */
    rm_pool *pool;
    uint64_t pool_id;          /* rm_pool_id(pool), 0 before: asked on every import */
    /* This process's start time as the control segment recorded it at
     * creation: the owner's own copy, because the segment's can be
     * scribbled over by another process, and descriptors exported with a
     * scribbled value would be refused by every importer. */
    uint64_t owner_start_time;
    rm_control control;
    owned_slot *slots;
    uint32_t free_head;        /* UINT32_MAX: none */
    uint32_t never_used;       /* slots [never_used, slot_count) are fresh */
    cached_block cache[BLOCK_CACHE_ENTRIES];
    uint32_t cache_count;
    /* The last block size asked of jemalloc (nallocx costs ~7% of an
     * allocate + release; pipelines ask for the same sizes over and over). */
    size_t sized_request;
    uint64_t sized_alignment;
    size_t sized_usable;
    uint64_t cache_bytes;
    uint64_t cache_limit;

    /* Other contexts' pools this context imports from. */
    rm_shm_views views;
} shm_backend;

/* What `deferred` reads until the pool (and its pending count) exists. */
static const _Atomic uint64_t nothing_pending = 0;

/* ------------------------------------------------------------------------ */
/* The own pool: creation, statistics                                       */
/* ------------------------------------------------------------------------ */

static uint64_t reservation_for(uint64_t pool_bytes)
{
    uint64_t granule = RM_POOL_CEILING_GRANULE;
    uint64_t reservation = (2 * pool_bytes + granule - 1) / granule * granule;
    return reservation < RM_POOL_MIN_CEILING ? RM_POOL_MIN_CEILING : reservation;
}

static inline void publish_stats(shm_backend *s)
{
    rm_control_header *header = s->control.header;
    atomic_store_explicit(&header->live_tensors, s->stats->live_tensors, memory_order_relaxed);
    atomic_store_explicit(&header->live_bytes, s->stats->live_bytes, memory_order_relaxed);
    atomic_store_explicit(&header->committed_bytes, rm_pool_committed_bytes(s->pool),
                          memory_order_relaxed);
}

/* Creates the pool and its control segment. */
static int32_t open_own_pool(shm_backend *s)
{
    owned_slot *slots = calloc(s->slot_count, sizeof *slots);
    if (slots == NULL)
        return rm_error_set(s->env.error_owner, RM_E_NO_MEMORY,
                            "no memory for %u tensor slots", s->slot_count);
    rm_pool_config config = {.namespace_name = s->namespace_name,
                             .ceiling_bytes = reservation_for(s->pool_bytes)};
    rm_pool *pool = NULL;
    int32_t rc = rm_pool_create(&config, s->env.error_owner, &pool);
    if (rc == RM_OK) {
        char control_name[RM_SEGMENT_NAME_MAX];
        (void)rm_segment_name_sibling(rm_pool_name(pool), RM_SEGMENT_POOL_CONTROL,
                                      control_name);
        rc = rm_control_create(control_name, rm_pool_id(pool), s->slot_count, s->pool_bytes,
                               rm_pool_ceiling_bytes(pool), s->env.error_owner, &s->control);
        if (rc != RM_OK)
            rm_pool_destroy(pool);
    }
    if (rc != RM_OK) {
        free(slots);
        return rc;
    }
    s->pool = pool;
    s->pool_id = rm_pool_id(pool);
    s->owner_start_time = s->control.header->owner_start_time;
    s->slots = slots;
    s->free_head = UINT32_MAX;
    s->never_used = 0;
    s->base.deferred = &s->control.header->pending;
    s->base.set_up = true;
    snprintf(s->stats->pool_name, sizeof s->stats->pool_name, "%s", rm_pool_name(pool));
    s->stats->pool_id = rm_pool_id(pool);
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Blocks and the cache of freed ones                                       */
/* ------------------------------------------------------------------------ */

static void block_free(shm_backend *s, void *block, size_t usable)
{
    if (s->cache_count < BLOCK_CACHE_ENTRIES && usable <= s->cache_limit - s->cache_bytes) {
        s->cache[s->cache_count++] = (cached_block){.block = block, .usable = usable};
        s->cache_bytes += usable;
        return;
    }
    (void)rm_pool_free(s->pool, block);
}

static void cache_flush(shm_backend *s)
{
    for (uint32_t i = 0; i < s->cache_count; i++)
        (void)rm_pool_free(s->pool, s->cache[i].block);
    s->cache_count = 0;
    s->cache_bytes = 0;
}

static void *cache_take(shm_backend *s, size_t usable, uint64_t alignment)
{
    for (uint32_t i = s->cache_count; i-- > 0;) {
        cached_block entry = s->cache[i];
        if (entry.usable == usable && ((uintptr_t)entry.block & (alignment - 1)) == 0) {
            s->cache[i] = s->cache[--s->cache_count];
            s->cache_bytes -= usable;
            return entry.block;
        }
    }
    return NULL;
}

/* The usable size of the block a request gets, remembered for the next
 * request of the same size. */
static size_t block_size(shm_backend *s, size_t request, uint64_t alignment)
{
    if (request != s->sized_request || alignment != s->sized_alignment) {
        s->sized_usable = rm_pool_block_size(s->pool, request, (size_t)alignment);
        s->sized_request = request;
        s->sized_alignment = alignment;
    }
    return s->sized_usable;
}

/* ------------------------------------------------------------------------ */
/* Slots: frees, remote releases, dead holders                              */
/* ------------------------------------------------------------------------ */

/* Frees slot `index` if it is live and nobody holds it. The shared state
 * is re-read: a pending mark or a dead holder's bit is a hint, never
 * trusted. */
static inline void free_slot_if_dead(shm_backend *s, uint32_t index)
{
    if (index >= s->slot_count)
        return;
    owned_slot *slot = &s->slots[index];
    /* The context's own handles are its own truth: a control segment
     * scribbled over by another process cannot make it free (and reuse)
     * a block it still hands out. */
    if (!slot->live || slot->local_holds != 0)
        return;
    uint64_t state = atomic_load_explicit(&s->control.slots[index].state, memory_order_acquire);
    if (rm_control_mask(state) != 0 || rm_control_generation(state) != slot->generation)
        return;
    block_free(s, slot->block, slot->usable);
    rm_tensors_uncharge(s->env.tensors, slot->session, slot->charge);
    s->stats->live_tensors--;
    s->stats->live_bytes -= slot->nbytes;
    s->stats->frees++;
    slot->live = false;
    slot->block = NULL;
    slot->next_free = s->free_head;
    s->free_head = index;
    publish_stats(s);
}

static void free_pending_slot(void *user, uint32_t index)
{
    shm_backend *s = user;
    uint64_t before = s->stats->frees;
    free_slot_if_dead(s, index);
    s->stats->remote_releases += s->stats->frees - before;
}

/* Frees what other contexts' releases left. */
static void drain_pending(shm_backend *s)
{
    if (s->pool != NULL && rm_control_has_pending(&s->control))
        rm_control_take_pending(&s->control, free_pending_slot, s);
}

/* Drops the bits of holders whose process died. */
static void reclaim_dead_holders(shm_backend *s, rm_reclaim_report *report)
{
    if (s->pool == NULL)
        return;
    rm_control_header *header = s->control.header;
    for (uint32_t index = 1; index <= RM_TENSOR_MAX_HOLDERS; index++) {
        rm_control_holder *holder = &header->holders[index];
        uint32_t pid = atomic_load_explicit(&holder->pid, memory_order_acquire);
        if (pid == 0)
            continue;
        uint64_t start = atomic_load_explicit(&holder->start_time, memory_order_acquire);
        if (rm_process_alive((pid_t)pid, start))
            continue;
        uint32_t bit = (uint32_t)1 << index;
        for (uint32_t slot = 0; slot < s->never_used; slot++) {
            if (!s->slots[slot].live)
                continue;
            uint64_t state = atomic_load_explicit(&s->control.slots[slot].state,
                                                  memory_order_acquire);
            if ((rm_control_mask(state) & bit) == 0)
                continue;
            report->holds_dropped++;
            s->stats->holds_reclaimed++;
            if (rm_control_drop(&s->control, slot, bit, false)) {
                free_slot_if_dead(s, slot);
                report->tensors_freed++;
            }
        }
        rm_control_release_holder(&s->control, index);
        report->dead_holders++;
        s->stats->dead_holders_reclaimed++;
        rm_tensors_log_later(s->env.tensors, RM_LOG_INFO,
                             "pool %s: importer pid %u died; its holds were dropped",
                    s->stats->pool_name, pid);
    }
}

static int32_t take_slot(shm_backend *s, uint32_t *out)
{
    if (s->free_head != UINT32_MAX) {
        *out = s->free_head;
        s->free_head = s->slots[*out].next_free;
        return RM_OK;
    }
    if (s->never_used < s->slot_count) {
        *out = s->never_used++;
        return RM_OK;
    }
    return rm_error_set(s->env.error_owner, RM_E_QUOTA_EXCEEDED,
                        "shm.max_tensors: all %u tensor slots of pool %s are live",
                        s->slot_count, s->stats->pool_name);
}

static void return_slot(shm_backend *s, uint32_t index)
{
    s->slots[index].next_free = s->free_head;
    s->free_head = index;
}

/* ------------------------------------------------------------------------ */
/* Allocation, one function per step                                       */
/* ------------------------------------------------------------------------ */

/* The pool's byte budget (shm.pool_bytes), exact because it is checked and
 * charged under the context's lock. Dead importers may be holding what
 * would make room, so they are reclaimed once before the budget says no. */
static int32_t admit(shm_backend *s, const rm_descriptor *where)
{
    if (where->nbytes <= s->pool_bytes - s->stats->live_bytes)
        return RM_OK;
    rm_reclaim_report ignored = {0};
    reclaim_dead_holders(s, &ignored);
    if (where->nbytes <= s->pool_bytes - s->stats->live_bytes)
        return RM_OK;
    return rm_error_set(s->env.error_owner, RM_E_QUOTA_EXCEEDED,
                        "shm.pool_bytes of %" PRIu64 " bytes exceeded: %" PRIu64
                        " bytes of live tensors, %" PRIu64 " asked for",
                        s->pool_bytes, s->stats->live_bytes, where->nbytes);
}

/* The pool exists (made now on the first allocation) and can address the
 * tensor. */
static int32_t ready_pool(shm_backend *s, const rm_descriptor *where)
{
    int32_t rc = s->pool == NULL ? open_own_pool(s) : RM_OK;
    if (rc != RM_OK)
        return rc;
    if (where->nbytes > SIZE_MAX / 2)
        return rm_error_set(s->env.error_owner, RM_E_NO_MEMORY,
                            "a tensor of %" PRIu64 " bytes cannot be addressed", where->nbytes);
    return RM_OK;
}

/* The pool's block for `where`, or an error. Reclaims and flushes the
 * cache once before it gives up. */
static int32_t pool_block(shm_backend *s, const rm_descriptor *where, uint64_t alignment,
                          size_t usable, void **out)
{
    size_t size = where->nbytes ? (size_t)where->nbytes : 1;
    void *block = cache_take(s, usable, alignment);
    if (block != NULL) {
        *out = block;
        return RM_OK;
    }
    int32_t rc = rm_pool_alloc(s->pool, size, (size_t)alignment, out);
    if (rc == RM_E_NO_MEMORY && (s->cache_count > 0 || s->control.header->pending != 0)) {
        rm_reclaim_report ignored = {0};
        reclaim_dead_holders(s, &ignored);
        drain_pending(s);
        cache_flush(s);
        rc = rm_pool_alloc(s->pool, size, (size_t)alignment, out);
    }
    return rc;
}

/* Makes slot `index` live with `block` and publishes it to importers;
 * completes `where` into the tensor's descriptor. */
static void publish_slot(shm_backend *s, uint32_t index, void *block, size_t usable,
                         rm_descriptor *where)
{
    owned_slot *slot = &s->slots[index];
    slot->generation = slot->generation + 1 != 0 ? slot->generation + 1 : 1;
    slot->block = block;
    slot->nbytes = where->nbytes;
    slot->charge = where->nbytes;
    slot->usable = usable;
    slot->session = where->session;
    slot->local_holds = 1;
    slot->live = true;
    where->kind = RM_DESCRIPTOR_KIND_POOL;
    where->slot = index;
    where->generation = slot->generation;
    where->owner_pid = (uint32_t)s->env.creator;
    where->pool_id = s->pool_id;
    where->owner_start_time = s->owner_start_time;
    (void)rm_pool_offset_of(s->pool, block, &where->offset);
    rm_control_publish(&s->control, index, slot->generation, where);
    s->stats->live_tensors++;
    s->stats->live_bytes += where->nbytes;
    publish_stats(s);
}

/* Each step that can fail undoes exactly the steps before it. */
static int32_t shm_allocate(rm_mem_backend *backend, rm_descriptor *where, uint64_t alignment,
                            rm_mem_block *block)
{
    shm_backend *s = (shm_backend *)backend;
    int32_t rc = admit(s, where);
    if (rc == RM_OK)
        rc = ready_pool(s, where);
    if (rc != RM_OK)
        return rc;
    uint32_t index = UINT32_MAX; /* set by take_slot on success */
    rc = take_slot(s, &index);
    if (rc != RM_OK)
        return rc;
    size_t usable = block_size(s, where->nbytes ? (size_t)where->nbytes : 1, alignment);
    void *data = NULL;
    rc = pool_block(s, where, alignment, usable, &data);
    if (rc != RM_OK)
        goto give_back_slot;
    rc = rm_tensors_charge(s->env.tensors, where->session, where->nbytes);
    if (rc != RM_OK)
        goto give_back_block;
    publish_slot(s, index, data, usable, where);
    block->data = data;
    block->flags = RM_TENSOR_WRITABLE | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED;
    return RM_OK;

give_back_block:
    block_free(s, data, usable);
give_back_slot:
    return_slot(s, index);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Import, export, release                                                  */
/* ------------------------------------------------------------------------ */

/* Another handle on a slot of the context's own pool. Not inlined into
 * shm_import: its registers would make every import of another pool (the
 * common case) save and restore six of them, ~1 ns of a ~50 ns import. */
__attribute__((noinline)) static int32_t import_own(shm_backend *s, const rm_descriptor *d,
                                                    bool writable, rm_mem_block *block)
{
    if (d->owner_start_time != s->owner_start_time)
        return rm_shm_owner_changed(s->env.error_owner, s->stats->pool_name,
                                    s->owner_start_time, d->owner_start_time);
    /* What the owner itself knows comes first: a slot it freed (or reused)
     * is refused whatever the shared state word says. */
    if (d->slot < s->slot_count &&
        (!s->slots[d->slot].live || s->slots[d->slot].generation != d->generation)) {
        const owned_slot *known = &s->slots[d->slot];
        if ((int32_t)(d->generation - known->generation) > 0)
            return rm_error_set(s->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                                "descriptor generation %u is newer than slot %u of pool %s "
                                "has ever had (%u): the slot or generation field was changed",
                                d->generation, d->slot, s->stats->pool_name,
                                known->generation);
        return rm_error_set(s->env.error_owner, RM_E_STALE_DESCRIPTOR,
                            "the tensor in slot %u (generation %u) of pool %s was freed",
                            d->slot, d->generation, s->stats->pool_name);
    }
    uint32_t held = d->slot < s->slot_count ? s->slots[d->slot].local_holds : 0;
    bool freed = false;
    int32_t rc = rm_shm_hold_slot(s->env.error_owner, &s->control, d, held,
                                  RM_CONTROL_OWNER_BIT, s->stats->pool_name, &freed);
    if (freed)
        free_slot_if_dead(s, d->slot);
    if (rc != RM_OK)
        return rc;
    owned_slot *slot = &s->slots[d->slot];
    slot->local_holds++;
    block->data = slot->block;
    block->flags = (writable ? RM_TENSOR_WRITABLE : 0) | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED;
    return RM_OK;
}

/* A pool descriptor of the context's own pool, or of another one. */
static int32_t import_pool(shm_backend *s, const rm_descriptor *d, bool writable,
                           rm_mem_block *block)
{
    bool own = s->pool != NULL && d->pool_id == s->pool_id &&
               d->owner_pid == (uint32_t)s->env.creator;
    return own ? import_own(s, d, writable, block)
               : rm_shm_views_import(&s->views, d, writable, block);
}

__attribute__((noinline)) static int32_t drain_then_import(shm_backend *s, const rm_descriptor *d,
                                                           bool writable, rm_mem_block *block)
{
    drain_pending(s);
    return import_pool(s, d, writable, block);
}

/* Releases that other contexts left pending are freed first: the own slot
 * an import names may be one of them. That rare call is out of line, so
 * that the usual import is two tail calls and saves no registers. */
static int32_t shm_import(rm_mem_backend *backend, rm_descriptor *d, const uint8_t *bytes,
                          uint64_t size, bool writable, rm_mem_block *block)
{
    (void)bytes;
    shm_backend *s = (shm_backend *)backend;
    if (size != RM_TENSOR_DESCRIPTOR_SIZE)
        return rm_error_set(s->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "a pool descriptor has %d bytes, got %" PRIu64,
                            RM_TENSOR_DESCRIPTOR_SIZE, size);
    if (s->pool != NULL && rm_control_has_pending(&s->control))
        return drain_then_import(s, d, writable, block);
    return import_pool(s, d, writable, block);
}

/* A handle on a slot of the context's own pool. Not inlined: see
 * shm_release. */
__attribute__((noinline)) static void release_own(shm_backend *s, rm_mem_block *block)
{
    uint32_t index = block->where.slot;
    owned_slot *slot = &s->slots[index];
    if (--slot->local_holds == 0 &&
        rm_control_drop(&s->control, index, RM_CONTROL_OWNER_BIT, false))
        free_slot_if_dead(s, index);
}

/* Both branches are tail calls, so that the release of a view (another
 * pool's tensor) does not pay for the registers of the owner's. */
static void shm_release(rm_mem_backend *backend, rm_mem_block *block)
{
    shm_backend *s = (shm_backend *)backend;
    if (block->home != NULL)
        rm_shm_views_release(&s->views, block);
    else
        release_own(s, block);
}

static rm_dl_device shm_describe_device(const rm_mem_backend *backend,
                                        const rm_mem_block *block)
{
    (void)backend;
    (void)block;
    return (rm_dl_device){.device_type = 1 /* kDLCPU */, .device_id = 0};
}

/* ------------------------------------------------------------------------ */
/* Creation and destruction                                                 */
/* ------------------------------------------------------------------------ */

/* No segment yet (the pool is made on the first shared allocation); what
 * dead owners left in the namespace goes now. */
static int32_t shm_create(const rm_mem_env *env, const rm_config *config,
                          rm_mem_backend **out)
{
    shm_backend *s = calloc(1, sizeof *s);
    if (s == NULL)
        return rm_error_set(env->error_owner, RM_E_NO_MEMORY, "no memory for tensor state");
    s->base.ops = &rm_shm_backend;
    s->base.deferred = &nothing_pending;
    s->env = *env;
    s->stats = env->stats;
    memcpy(s->namespace_name, config->shm_namespace, sizeof s->namespace_name);
    s->pool_bytes = config->shm_pool_bytes;
    s->slot_count = config->shm_max_tensors;
    s->cache_limit = s->pool_bytes / 8 < BLOCK_CACHE_MAX_BYTES ? s->pool_bytes / 8
                                                               : BLOCK_CACHE_MAX_BYTES;
    s->views = (rm_shm_views){.error_owner = env->error_owner,
                              .namespace_name = s->namespace_name,
                              .stats = env->stats};
    s->stats->pool_bytes = s->pool_bytes;
    /* A failure to read /dev/shm is not fatal here (allocation will say
     * what is wrong). */
    (void)rm_shm_namespace_reap(&rm_shm_pool_family, s->namespace_name, NULL,
                                &s->stats->startup_segments_unlinked,
                                &s->stats->startup_bytes_unlinked);
    *out = &s->base;
    return RM_OK;
}

/* Gives the pool up. Importers still holding tensors keep their pages (and
 * unmap the pool at their last release); otherwise every page goes back to
 * /dev/shm now. In a child of fork() the pool is the parent's: only the
 * child's copies go. */
static void close_own_pool(shm_backend *s, bool in_creator)
{
    bool shared_still = false;
    if (in_creator) {
        drain_pending(s);
        for (uint32_t slot = 0; slot < s->never_used && !shared_still; slot++)
            shared_still = s->slots[slot].live;
        rm_control_retire(&s->control);
        char control_name[RM_SEGMENT_NAME_MAX];
        if (rm_segment_name_sibling(rm_pool_name(s->pool), RM_SEGMENT_POOL_CONTROL,
                                    control_name))
            (void)rm_segment_unlink(control_name, NULL);
    }
    rm_control_close(&s->control);
    if (shared_still)
        rm_pool_abandon(s->pool);
    else
        rm_pool_destroy(s->pool);
}

static void shm_destroy(rm_mem_backend *backend, bool in_creator)
{
    shm_backend *s = (shm_backend *)backend;
    rm_shm_views_close(&s->views, in_creator);
    if (s->pool != NULL)
        close_own_pool(s, in_creator);
    free(s->slots);
    free(s);
}

/* ------------------------------------------------------------------------ */
/* Upkeep: collect, reclaim, statistics, listing                            */
/* ------------------------------------------------------------------------ */

static void shm_collect(rm_mem_backend *backend)
{
    drain_pending((shm_backend *)backend);
}

static void shm_reclaim(rm_mem_backend *backend, rm_reclaim_report *report)
{
    shm_backend *s = (shm_backend *)backend;
    uint64_t reported = report->tensors_freed;
    uint64_t frees_before = s->stats->frees;
    reclaim_dead_holders(s, report);
    drain_pending(s);
    /* Every free counts once, whether a dead holder's drop or a pending
     * release made it. */
    report->tensors_freed = reported + (s->stats->frees - frees_before);
    /* Views of dead or retired pools that this context no longer holds
     * anything of: unmap them, so their pages can go back to /dev/shm. */
    rm_shm_views_forget_unused(&s->views, true);
}

static int32_t shm_reap(rm_mem_backend *backend, rm_reclaim_report *report)
{
    shm_backend *s = (shm_backend *)backend;
    return rm_shm_namespace_reap(&rm_shm_pool_family, s->namespace_name, s->env.error_owner,
                                 &report->segments_unlinked, &report->bytes_unlinked);
}

static void shm_stats(rm_mem_backend *backend, rm_tensor_pool_stats *out)
{
    shm_backend *s = (shm_backend *)backend;
    if (s->pool != NULL) {
        out->committed_bytes = rm_pool_committed_bytes(s->pool);
        uint64_t holders = 0;
        for (uint32_t i = 1; i <= RM_TENSOR_MAX_HOLDERS; i++)
            holders += atomic_load(&s->control.header->holders[i].pid) != 0;
        out->holders = holders;
    }
    out->pools_mapped = s->views.count;
}

static void shm_publish(rm_mem_backend *backend)
{
    shm_backend *s = (shm_backend *)backend;
    if (s->pool != NULL)
        publish_stats(s);
}

static int32_t shm_list(rm_mem_backend *backend, rm_shm_pool_info **rows, size_t *count)
{
    shm_backend *s = (shm_backend *)backend;
    return rm_shm_namespace_rows(&rm_shm_pool_family, s->namespace_name, s->env.error_owner,
                                 rows, count);
}

const rm_mem_ops rm_shm_backend = {
    .name = "shm",
    .descriptor_kind = RM_DESCRIPTOR_KIND_POOL,
    .create = shm_create,
    .destroy = shm_destroy,
    .allocate = shm_allocate,
    .import = shm_import,
    .export = NULL, /* the coordinates are in block->where since allocate/import */
    .release = shm_release,
    .drop_in_child = NULL, /* nothing private per block */
    .describe_device = shm_describe_device,
    .collect = shm_collect,
    .reclaim = shm_reclaim,
    .reap = shm_reap,
    .stats = shm_stats,
    .publish = shm_publish,
    .list = shm_list,
};
