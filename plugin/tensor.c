/* Shared-memory tensors of one context.
 *
 * Three kinds of handle:
 *  - OWNED: a slot of this context's own pool. The slot's `local_holds`
 *    counts the context's handles on it; while it is non-zero the owner
 *    bit is set in the slot's shared state word.
 *  - VIEW: a tensor of another pool (another process, or another context
 *    of this one), mapped through a cached pool_view. Per slot the view
 *    counts this context's handles; while non-zero its holder bit is set.
 *  - HEAP: private memory (the fallback, and inline imports).
 * A handle itself is reference-counted only so that a DLPack export can
 * outlive the host's release of it.
 *
 * One mutex per context guards everything here. Allocation, quota checks
 * and slot bookkeeping under one lock make quotas exact under concurrency
 * at the cost of serialising a context's allocations (jemalloc's arena
 * lock serialises them anyway).
 *
 * Freed blocks go to a small cache of recently freed blocks (by usable
 * size) before they go back to the arena: the arena's thread cache must
 * stay off for shared memory (it mixes arenas), and this is what it would
 * have done for the common case of a pipeline allocating the same sizes
 * over and over. The cache is bounded and flushed whenever space runs
 * short.
 */
#include "tensor.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "descriptor.h"
#include "error.h"
#include "pool.h"
#include "shm_control.h"
#include "shm_namespace.h"
#include "tensor_layout.h"
#include "../hooks/process_identity.h"

#define BLOCK_CACHE_ENTRIES 16
#define SPARE_HANDLES_MAX 1024
#define BLOCK_CACHE_MAX_BYTES ((uint64_t)64 << 20)
#define MAX_ALIGNMENT ((uint64_t)2 << 20)
#define KNOWN_ALLOC_FLAGS \
    (RM_TENSOR_ALLOC_SHARED_ONLY | RM_TENSOR_ALLOC_ZERO | RM_TENSOR_ALLOC_STRIDED)
#define KNOWN_IMPORT_FLAGS RM_TENSOR_IMPORT_WRITABLE

typedef enum tensor_kind { KIND_OWNED, KIND_VIEW, KIND_HEAP } tensor_kind;

typedef struct pool_view pool_view;

struct rm_tensor {
    rm_tensors *tensors;
    rm_tensor *prev, *next;    /* the context's live handles */
    _Atomic uint32_t refs;     /* the host's handle + DLPack exports */
    tensor_kind kind;
    pool_view *view;           /* KIND_VIEW */
    rm_descriptor where;       /* pool coordinates, dtype, shape, strides */
    void *data;
    uint64_t flags;            /* RM_TENSOR_WRITABLE ... */
    uint64_t charged;          /* KIND_HEAP: bytes charged to the session */
};

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

struct pool_view {
    uint64_t pool_id;
    uint32_t owner_pid;
    uint64_t owner_start_time;
    char data_name[RM_POOL_NAME_MAX];
    rm_control control;
    uint64_t reservation;
    unsigned char *read_base;  /* PROT_READ mapping */
    unsigned char *write_base; /* PROT_READ|PROT_WRITE, on first writable import */
    uint32_t holder_index;     /* 1..RM_TENSOR_MAX_HOLDERS */
    uint32_t *local_holds;     /* per slot */
    uint64_t holds;            /* sum of local_holds */
};

typedef struct session_use {
    uint64_t session;
    uint64_t bytes;
} session_use;

typedef struct cached_block {
    void *block;
    size_t usable;
} cached_block;

struct rm_tensors {
    pthread_mutex_t lock;
    const void *error_owner;
    const rm_host *host;
    pid_t creator;
    char namespace_name[RM_SHM_NAMESPACE_MAX + 1];
    uint64_t pool_bytes;
    uint64_t session_quota;
    uint32_t slot_count;

    /* The context's own pool, once created. */
    rm_pool *pool;
    rm_control control;
    owned_slot *slots;
    uint32_t free_head;        /* UINT32_MAX: none */
    uint32_t never_used;       /* slots [never_used, slot_count) are fresh */
    bool fallback_logged;
    cached_block cache[BLOCK_CACHE_ENTRIES];
    uint32_t cache_count;
    /* The last block size asked of jemalloc (nallocx costs ~7% of an
     * allocate + release; pipelines ask for the same sizes over and over). */
    size_t sized_request;
    uint64_t sized_alignment;
    size_t sized_usable;
    uint64_t cache_bytes;
    uint64_t cache_limit;

    session_use *sessions;
    size_t session_count, session_capacity;

    pool_view **views;
    size_t view_count, view_capacity;

    rm_tensor handles;         /* sentinel of the live-handle list */
    rm_tensor *spare_handles;  /* released handles kept for reuse (next) */
    uint32_t spare_count;
    rm_tensor_pool_stats stats;
};

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

static session_use *find_session(rm_tensors *t, uint64_t session)
{
    for (size_t i = 0; i < t->session_count; i++)
        if (t->sessions[i].session == session)
            return &t->sessions[i];
    return NULL;
}

static uint64_t session_bytes(rm_tensors *t, uint64_t session)
{
    session_use *use = find_session(t, session);
    return use != NULL ? use->bytes : 0;
}

/* Checks shm.session_quota for `bytes` more. */
static int32_t check_session_quota(rm_tensors *t, uint64_t session, uint64_t bytes)
{
    if (t->session_quota == 0)
        return RM_OK;
    uint64_t used = session_bytes(t, session);
    if (bytes > t->session_quota - used)
        return rm_error_set(t->error_owner, RM_E_QUOTA_EXCEEDED,
                            "shm.session_quota of %" PRIu64 " bytes exceeded for session "
                            "%" PRIu64 ": %" PRIu64 " bytes in use, %" PRIu64 " asked for",
                            t->session_quota, session, used, bytes);
    return RM_OK;
}

static int32_t charge_session(rm_tensors *t, uint64_t session, uint64_t bytes)
{
    if (bytes == 0)
        return RM_OK;
    session_use *use = find_session(t, session);
    if (use == NULL) {
        if (t->session_count == t->session_capacity) {
            size_t grown = t->session_capacity == 0 ? 8 : 2 * t->session_capacity;
            session_use *bigger = realloc(t->sessions, grown * sizeof *bigger);
            if (bigger == NULL)
                return rm_error_set(t->error_owner, RM_E_NO_MEMORY,
                                    "no memory to account session %" PRIu64, session);
            t->sessions = bigger;
            t->session_capacity = grown;
        }
        use = &t->sessions[t->session_count++];
        *use = (session_use){.session = session, .bytes = 0};
    }
    use->bytes += bytes;
    return RM_OK;
}

static void uncharge_session(rm_tensors *t, uint64_t session, uint64_t bytes)
{
    if (bytes == 0)
        return;
    session_use *use = find_session(t, session);
    if (use == NULL)
        return;
    use->bytes -= bytes < use->bytes ? bytes : use->bytes;
    if (use->bytes == 0)
        *use = t->sessions[--t->session_count];
}

/* ------------------------------------------------------------------------ */
/* The own pool: creation, blocks, slots, frees                             */
/* ------------------------------------------------------------------------ */

static uint64_t reservation_for(uint64_t pool_bytes)
{
    uint64_t granule = RM_POOL_CEILING_GRANULE;
    uint64_t reservation = (2 * pool_bytes + granule - 1) / granule * granule;
    return reservation < RM_POOL_MIN_CEILING ? RM_POOL_MIN_CEILING : reservation;
}

static void publish_stats(rm_tensors *t)
{
    rm_control_header *header = t->control.header;
    atomic_store_explicit(&header->live_tensors, t->stats.live_tensors, memory_order_relaxed);
    atomic_store_explicit(&header->live_bytes, t->stats.live_bytes, memory_order_relaxed);
    atomic_store_explicit(&header->committed_bytes, rm_pool_committed_bytes(t->pool),
                          memory_order_relaxed);
}

/* Creates the pool and its control segment (lock held). */
static int32_t open_own_pool(rm_tensors *t)
{
    owned_slot *slots = calloc(t->slot_count, sizeof *slots);
    if (slots == NULL)
        return rm_error_set(t->error_owner, RM_E_NO_MEMORY,
                            "no memory for %u tensor slots", t->slot_count);
    rm_pool_config config = {.namespace_name = t->namespace_name,
                             .ceiling_bytes = reservation_for(t->pool_bytes)};
    rm_pool *pool = NULL;
    int32_t rc = rm_pool_create(&config, t->error_owner, &pool);
    if (rc == RM_OK) {
        rc = rm_control_create(rm_pool_name(pool), rm_pool_id(pool), t->slot_count,
                               t->pool_bytes, rm_pool_ceiling_bytes(pool), t->error_owner,
                               &t->control);
        if (rc != RM_OK)
            rm_pool_destroy(pool);
    }
    if (rc != RM_OK) {
        free(slots);
        return rc;
    }
    t->pool = pool;
    t->slots = slots;
    t->free_head = UINT32_MAX;
    t->never_used = 0;
    snprintf(t->stats.pool_name, sizeof t->stats.pool_name, "%s", rm_pool_name(pool));
    t->stats.pool_id = rm_pool_id(pool);
    return RM_OK;
}

static void block_free(rm_tensors *t, void *block, size_t usable)
{
    if (t->cache_count < BLOCK_CACHE_ENTRIES && usable <= t->cache_limit - t->cache_bytes) {
        t->cache[t->cache_count++] = (cached_block){.block = block, .usable = usable};
        t->cache_bytes += usable;
        return;
    }
    (void)rm_pool_free(t->pool, block);
}

static void cache_flush(rm_tensors *t)
{
    for (uint32_t i = 0; i < t->cache_count; i++)
        (void)rm_pool_free(t->pool, t->cache[i].block);
    t->cache_count = 0;
    t->cache_bytes = 0;
}

static void *cache_take(rm_tensors *t, size_t usable, uint64_t alignment)
{
    for (uint32_t i = t->cache_count; i-- > 0;) {
        cached_block entry = t->cache[i];
        if (entry.usable == usable && ((uintptr_t)entry.block & (alignment - 1)) == 0) {
            t->cache[i] = t->cache[--t->cache_count];
            t->cache_bytes -= usable;
            return entry.block;
        }
    }
    return NULL;
}

/* Frees slot `index` if it is live and nobody holds it (lock held). The
 * shared state is re-read: a pending mark or a dead holder's bit is a
 * hint, never trusted. */
static void free_slot_if_dead(rm_tensors *t, uint32_t index)
{
    if (index >= t->slot_count)
        return;
    owned_slot *slot = &t->slots[index];
    /* The context's own handles are its own truth: a control segment
     * scribbled over by another process cannot make it free (and reuse)
     * a block it still hands out. */
    if (!slot->live || slot->local_holds != 0)
        return;
    uint64_t state = atomic_load_explicit(&t->control.slots[index].state, memory_order_acquire);
    if (rm_control_mask(state) != 0 || rm_control_generation(state) != slot->generation)
        return;
    block_free(t, slot->block, slot->usable);
    uncharge_session(t, slot->session, slot->charge);
    t->stats.live_tensors--;
    t->stats.live_bytes -= slot->nbytes;
    t->stats.frees++;
    slot->live = false;
    slot->block = NULL;
    slot->next_free = t->free_head;
    t->free_head = index;
    publish_stats(t);
}

static void free_pending_slot(void *user, uint32_t index)
{
    rm_tensors *t = user;
    uint64_t before = t->stats.frees;
    free_slot_if_dead(t, index);
    t->stats.remote_releases += t->stats.frees - before;
}

/* Frees what other contexts' releases left (lock held). */
static void drain_pending(rm_tensors *t)
{
    if (t->pool != NULL && rm_control_has_pending(&t->control))
        rm_control_take_pending(&t->control, free_pending_slot, t);
}

/* Drops the bits of holders whose process died (lock held). */
static void reclaim_dead_holders(rm_tensors *t, rm_reclaim_report *report)
{
    if (t->pool == NULL)
        return;
    rm_control_header *header = t->control.header;
    for (uint32_t index = 1; index <= RM_TENSOR_MAX_HOLDERS; index++) {
        rm_control_holder *holder = &header->holders[index];
        uint32_t pid = atomic_load_explicit(&holder->pid, memory_order_acquire);
        if (pid == 0)
            continue;
        uint64_t start = atomic_load_explicit(&holder->start_time, memory_order_acquire);
        if (rm_process_alive((pid_t)pid, start))
            continue;
        uint32_t bit = (uint32_t)1 << index;
        for (uint32_t s = 0; s < t->never_used; s++) {
            if (!t->slots[s].live)
                continue;
            uint64_t state = atomic_load_explicit(&t->control.slots[s].state,
                                                  memory_order_acquire);
            if ((rm_control_mask(state) & bit) == 0)
                continue;
            report->holds_dropped++;
            t->stats.holds_reclaimed++;
            if (rm_control_drop(&t->control, s, bit, false)) {
                free_slot_if_dead(t, s);
                report->tensors_freed++;
            }
        }
        rm_control_release_holder(&t->control, index);
        report->dead_holders++;
        t->stats.dead_holders_reclaimed++;
        rm_host_log(t->host, RM_LOG_INFO,
                    "pool %s: importer pid %u died; its holds were dropped",
                    t->stats.pool_name, pid);
    }
}

static int32_t take_slot(rm_tensors *t, uint32_t *out)
{
    if (t->free_head != UINT32_MAX) {
        *out = t->free_head;
        t->free_head = t->slots[*out].next_free;
        return RM_OK;
    }
    if (t->never_used < t->slot_count) {
        *out = t->never_used++;
        return RM_OK;
    }
    return rm_error_set(t->error_owner, RM_E_QUOTA_EXCEEDED,
                        "shm.max_tensors: all %u tensor slots of pool %s are live",
                        t->slot_count, t->stats.pool_name);
}

static void return_slot(rm_tensors *t, uint32_t index)
{
    t->slots[index].next_free = t->free_head;
    t->free_head = index;
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                  */
/* ------------------------------------------------------------------------ */

/* Handles come from a per-context list of released ones (lock held):
 * with a second thread in the process, glibc's malloc and free take its
 * arena lock, and calloc + free of a handle measured ~40 ns of a ~100 ns
 * allocate + release pair. The list keeps at most SPARE_HANDLES_MAX; a
 * context that once held more gives the rest back to libc. */
static rm_tensor *new_handle(rm_tensors *t, tensor_kind kind)
{
    rm_tensor *tensor = t->spare_handles;
    if (tensor != NULL) {
        t->spare_handles = tensor->next;
        t->spare_count--;
    } else {
        tensor = malloc(sizeof *tensor);
        if (tensor == NULL) {
            rm_error_set(t->error_owner, RM_E_NO_MEMORY, "no memory for a tensor handle");
            return NULL;
        }
    }
    /* Every field but `where`, which each kind sets whole. */
    tensor->tensors = t;
    tensor->prev = tensor->next = NULL;
    atomic_init(&tensor->refs, 1);
    tensor->kind = kind;
    tensor->view = NULL;
    tensor->data = NULL;
    tensor->flags = 0;
    tensor->charged = 0;
    return tensor;
}

static void recycle_handle(rm_tensors *t, rm_tensor *tensor)
{
    if (t->spare_count >= SPARE_HANDLES_MAX) {
        free(tensor);
        return;
    }
    tensor->next = t->spare_handles;
    t->spare_handles = tensor;
    t->spare_count++;
}

static void free_spare_handles(rm_tensors *t)
{
    while (t->spare_handles != NULL) {
        rm_tensor *tensor = t->spare_handles;
        t->spare_handles = tensor->next;
        free(tensor);
    }
    t->spare_count = 0;
}

static void link_handle(rm_tensors *t, rm_tensor *tensor)
{
    tensor->next = t->handles.next;
    tensor->prev = &t->handles;
    t->handles.next->prev = tensor;
    t->handles.next = tensor;
}

static void unlink_handle(rm_tensor *tensor)
{
    tensor->prev->next = tensor->next;
    tensor->next->prev = tensor->prev;
}

static void forget_view(rm_tensors *t, pool_view *view);

/* Ends what a handle holds (lock held) and recycles the handle. */
static void drop_handle(rm_tensors *t, rm_tensor *tensor)
{
    unlink_handle(tensor);
    switch (tensor->kind) {
    case KIND_OWNED: {
        owned_slot *slot = &t->slots[tensor->where.slot];
        if (--slot->local_holds == 0 &&
            rm_control_drop(&t->control, tensor->where.slot, RM_CONTROL_OWNER_BIT, false))
            free_slot_if_dead(t, tensor->where.slot);
        break;
    }
    case KIND_VIEW: {
        pool_view *view = tensor->view;
        uint32_t index = tensor->where.slot;
        view->holds--;
        if (--view->local_holds[index] == 0)
            (void)rm_control_drop(&view->control, index, (uint32_t)1 << view->holder_index,
                                  true);
        /* The owner gave the pool up and this was our last hold: nothing
         * reads the mapping any more, so its pages may go now. */
        if (view->holds == 0 && rm_control_retired(&view->control))
            forget_view(t, view);
        break;
    }
    case KIND_HEAP:
        uncharge_session(t, tensor->where.session, tensor->charged);
        t->stats.heap_tensors--;
        t->stats.heap_bytes -= tensor->where.nbytes;
        free(tensor->data);
        break;
    }
    recycle_handle(t, tensor);
}

/* ------------------------------------------------------------------------ */
/* Creation and destruction                                                 */
/* ------------------------------------------------------------------------ */

int32_t rm_tensors_create(const rm_config *config, const rm_host *host,
                          const void *error_owner, rm_tensors **out)
{
    rm_tensors *t = calloc(1, sizeof *t);
    if (t == NULL)
        return rm_error_set(error_owner, RM_E_NO_MEMORY, "no memory for tensor state");
    int err = pthread_mutex_init(&t->lock, NULL);
    if (err != 0) {
        free(t);
        return rm_error_set(error_owner, RM_E_SYSTEM, "pthread_mutex_init: %s",
                            strerror(err));
    }
    t->error_owner = error_owner;
    t->host = host;
    t->creator = getpid();
    memcpy(t->namespace_name, config->shm_namespace, sizeof t->namespace_name);
    t->pool_bytes = config->shm_pool_bytes;
    t->session_quota = config->shm_session_quota;
    t->slot_count = config->shm_max_tensors;
    t->cache_limit = t->pool_bytes / 8 < BLOCK_CACHE_MAX_BYTES ? t->pool_bytes / 8
                                                               : BLOCK_CACHE_MAX_BYTES;
    t->handles.next = t->handles.prev = &t->handles;
    t->stats.pool_bytes = t->pool_bytes;
    /* What dead owners left in the namespace goes now; a failure to read
     * /dev/shm is not fatal here (allocation will say what is wrong). */
    (void)rm_shm_namespace_reap(t->namespace_name, NULL, &t->stats.startup_segments_unlinked,
                                &t->stats.startup_bytes_unlinked);
    *out = t;
    return RM_OK;
}

static void close_view(pool_view *view, bool release_holds)
{
    if (release_holds) {
        uint32_t bit = (uint32_t)1 << view->holder_index;
        for (uint32_t s = 0; s < view->control.slot_count && view->holds > 0; s++) {
            if (view->local_holds[s] == 0)
                continue;
            view->holds -= view->local_holds[s];
            view->local_holds[s] = 0;
            (void)rm_control_drop(&view->control, s, bit, true);
        }
        rm_control_release_holder(&view->control, view->holder_index);
    }
    if (view->read_base != NULL)
        munmap(view->read_base, view->reservation);
    if (view->write_base != NULL)
        munmap(view->write_base, view->reservation);
    rm_control_close(&view->control);
    free(view->local_holds);
    free(view);
}

/* Unmaps a view this context holds nothing of and drops it from the cache
 * (lock held). */
static void forget_view(rm_tensors *t, pool_view *view)
{
    for (size_t i = 0; i < t->view_count; i++) {
        if (t->views[i] == view) {
            t->views[i] = t->views[--t->view_count];
            break;
        }
    }
    close_view(view, true);
    t->stats.pools_mapped = t->view_count;
}

/* Forgets every cached view of a pool that is retired, or whose owner died,
 * and that this context holds nothing of (lock held). `check_owners` reads
 * /proc for each, which costs microseconds: only on reclaim. */
static void forget_unused_views(rm_tensors *t, bool check_owners)
{
    for (size_t i = 0; i < t->view_count;) {
        pool_view *view = t->views[i];
        bool gone = rm_control_retired(&view->control) ||
                    (check_owners &&
                     !rm_process_alive((pid_t)view->owner_pid, view->owner_start_time));
        if (view->holds == 0 && gone) {
            forget_view(t, view);
            continue; /* the last view moved into slot i */
        }
        i++;
    }
}

void rm_tensors_destroy(rm_tensors *t)
{
    if (t == NULL)
        return;
    /* In a child of fork() the shared state is the parent's: touch none of
     * it, free only this process's copies. */
    bool in_creator = getpid() == t->creator;
    size_t leaked = 0;
    while (t->handles.next != &t->handles) {
        rm_tensor *tensor = t->handles.next;
        leaked++;
        if (in_creator) {
            drop_handle(t, tensor);
        } else {
            unlink_handle(tensor);
            if (tensor->kind == KIND_HEAP)
                free(tensor->data);
            free(tensor);
        }
    }
    free_spare_handles(t);
    if (leaked > 0 && in_creator)
        rm_host_log(t->host, RM_LOG_WARN,
                    "context destroyed with %zu tensor handles still held; they are "
                    "released now and must not be used",
                    leaked);
    for (size_t i = 0; i < t->view_count; i++)
        close_view(t->views[i], in_creator);
    free(t->views);
    if (t->pool != NULL) {
        bool shared_still = false;
        if (in_creator) {
            drain_pending(t);
            for (uint32_t s = 0; s < t->never_used && !shared_still; s++)
                shared_still = t->slots[s].live;
            char control_name[RM_POOL_NAME_MAX + 8];
            snprintf(control_name, sizeof control_name, "%s%s", rm_pool_name(t->pool),
                     RM_CONTROL_SUFFIX);
            /* Importers still holding tensors unmap the pool at their last
             * release from now on. */
            rm_control_retire(&t->control);
            shm_unlink(control_name);
        }
        rm_control_close(&t->control);
        /* Importers still holding tensors keep their pages; otherwise every
         * page goes back to /dev/shm now. */
        if (shared_still)
            rm_pool_abandon(t->pool);
        else
            rm_pool_destroy(t->pool);
    }
    free(t->slots);
    free(t->sessions);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */
/* ------------------------------------------------------------------------ */

static int32_t check_spec(rm_tensors *t, const rm_tensor_spec *spec, rm_descriptor *where,
                          uint64_t *alignment)
{
    for (size_t i = 0; i < sizeof spec->reserved / sizeof spec->reserved[0]; i++)
        if (spec->reserved[i] != 0)
            return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                                "rm_tensor_spec.reserved[%zu] must be zero", i);
    if ((spec->flags & ~(uint64_t)KNOWN_ALLOC_FLAGS) != 0)
        return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                            "unknown tensor allocation flags 0x%" PRIx64,
                            spec->flags & ~(uint64_t)KNOWN_ALLOC_FLAGS);
    uint64_t element = rm_dtype_size(spec->dtype);
    if (element == 0)
        return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                            "dtype {code %u, bits %u, lanes %u} is not supported (int 0 and "
                            "uint 1: 8, 16, 32 or 64 bits; float 2: 16, 32 or 64; bfloat 4: "
                            "16; complex 5: 64 or 128; bool 6: 8; lanes >= 1, at most 1024 "
                            "bytes per element)",
                            spec->dtype.code, spec->dtype.bits, spec->dtype.lanes);
    if (spec->ndim > RM_TENSOR_MAX_DIMS)
        return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                            "ndim %u exceeds RM_TENSOR_MAX_DIMS (%d)", spec->ndim,
                            RM_TENSOR_MAX_DIMS);
    uint64_t align = spec->alignment == 0 ? RM_TENSOR_MIN_ALIGNMENT : spec->alignment;
    if ((align & (align - 1)) != 0 || align > MAX_ALIGNMENT)
        return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                            "alignment %" PRIu64 " is not a power of two up to 2 MiB",
                            spec->alignment);
    *alignment = align < RM_TENSOR_MIN_ALIGNMENT ? RM_TENSOR_MIN_ALIGNMENT : align;
    /* Field by field, and shape and strides only up to ndim (every reader
     * stops there: copy_dims): zeroing the whole descriptor compiles to
     * `rep stos`, measured at a quarter of rm_tensors_allocate. The pool
     * coordinates are filled when a slot is taken. */
    where->kind = 0;
    where->ndim = spec->ndim;
    where->dtype = spec->dtype;
    where->session = spec->session;
    where->slot = where->generation = where->owner_pid = 0;
    where->pool_id = where->owner_start_time = where->offset = 0;
    for (uint32_t i = 0; i < spec->ndim; i++) {
        if (spec->shape[i] < 0)
            return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                                "shape[%u] = %" PRId64 " is negative", i, spec->shape[i]);
        where->shape[i] = spec->shape[i];
    }
    if ((spec->flags & RM_TENSOR_ALLOC_STRIDED) != 0) {
        for (uint32_t i = 0; i < spec->ndim; i++)
            where->strides[i] = spec->strides[i];
    } else if (!rm_layout_contiguous_strides(spec->ndim, where->shape, where->strides)) {
        return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                            "the shape's element count overflows");
    }
    const char *why = NULL;
    if (!rm_layout_span(element, where->ndim, where->shape, where->strides, &where->nbytes,
                        &why))
        return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT, "tensor layout: %s", why);
    return RM_OK;
}

static int32_t allocate_heap(rm_tensors *t, rm_descriptor *where, uint64_t alignment,
                             bool zero, rm_tensor **out)
{
    int32_t rc = check_session_quota(t, where->session, where->nbytes);
    if (rc != RM_OK)
        return rc;
    rm_tensor *tensor = new_handle(t, KIND_HEAP);
    if (tensor == NULL)
        return RM_E_NO_MEMORY;
    uint64_t bytes = where->nbytes ? where->nbytes : 1;
    bytes = (bytes + alignment - 1) / alignment * alignment;
    tensor->data = bytes <= SIZE_MAX ? aligned_alloc((size_t)alignment, (size_t)bytes) : NULL;
    if (tensor->data == NULL || charge_session(t, where->session, where->nbytes) != RM_OK) {
        free(tensor->data);
        recycle_handle(t, tensor);
        return rm_error_set(t->error_owner, RM_E_NO_MEMORY,
                            "no heap memory for a tensor of %" PRIu64 " bytes", where->nbytes);
    }
    if (zero)
        memset(tensor->data, 0, (size_t)bytes);
    tensor->where = *where;
    tensor->charged = where->nbytes;
    tensor->flags = RM_TENSOR_WRITABLE | RM_TENSOR_OWNED;
    t->stats.heap_tensors++;
    t->stats.heap_bytes += where->nbytes;
    link_handle(t, tensor);
    *out = tensor;
    return RM_OK;
}

/* The pool's block for `where`, or an error (lock held). Reclaims and
 * flushes the cache once before it gives up. */
static int32_t pool_block(rm_tensors *t, const rm_descriptor *where, uint64_t alignment,
                          size_t usable, void **out)
{
    size_t size = where->nbytes ? (size_t)where->nbytes : 1;
    void *block = cache_take(t, usable, alignment);
    if (block != NULL) {
        *out = block;
        return RM_OK;
    }
    int32_t rc = rm_pool_alloc(t->pool, size, (size_t)alignment, out);
    if (rc == RM_E_NO_MEMORY && (t->cache_count > 0 || t->control.header->pending != 0)) {
        rm_reclaim_report ignored = {0};
        reclaim_dead_holders(t, &ignored);
        drain_pending(t);
        cache_flush(t);
        rc = rm_pool_alloc(t->pool, size, (size_t)alignment, out);
    }
    return rc;
}

/* Admission (lock held): the session's quota and the pool's byte budget,
 * exact because both are checked and charged under the lock. Dead
 * importers may be holding what would make room, so they are reclaimed
 * once before the budget says no. */
static int32_t admit(rm_tensors *t, const rm_descriptor *where)
{
    int32_t rc = check_session_quota(t, where->session, where->nbytes);
    if (rc != RM_OK || where->nbytes <= t->pool_bytes - t->stats.live_bytes)
        return rc;
    rm_reclaim_report ignored = {0};
    reclaim_dead_holders(t, &ignored);
    if (where->nbytes <= t->pool_bytes - t->stats.live_bytes)
        return RM_OK;
    return rm_error_set(t->error_owner, RM_E_QUOTA_EXCEEDED,
                        "shm.pool_bytes of %" PRIu64 " bytes exceeded: %" PRIu64
                        " bytes of live tensors, %" PRIu64 " asked for",
                        t->pool_bytes, t->stats.live_bytes, where->nbytes);
}

/* Makes slot `index` live with `block` and publishes it to importers
 * (lock held); completes `where` into the tensor's descriptor. */
static void publish_slot(rm_tensors *t, uint32_t index, void *block, size_t usable,
                         rm_descriptor *where)
{
    owned_slot *slot = &t->slots[index];
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
    where->owner_pid = (uint32_t)t->creator;
    where->pool_id = rm_pool_id(t->pool);
    where->owner_start_time = t->control.header->owner_start_time;
    (void)rm_pool_offset_of(t->pool, block, &where->offset);
    rm_control_publish(&t->control, index, slot->generation, where);
    t->stats.live_tensors++;
    t->stats.live_bytes += where->nbytes;
    publish_stats(t);
}

/* A tensor in the context's own pool (lock held). Each step that can fail
 * undoes exactly the steps before it. */
static int32_t allocate_shared(rm_tensors *t, rm_descriptor *where, uint64_t alignment,
                               rm_tensor **out)
{
    int32_t rc = t->pool == NULL ? open_own_pool(t) : RM_OK;
    if (rc != RM_OK)
        return rc;
    if (where->nbytes > SIZE_MAX / 2)
        return rm_error_set(t->error_owner, RM_E_NO_MEMORY,
                            "a tensor of %" PRIu64 " bytes cannot be addressed", where->nbytes);
    uint32_t index = UINT32_MAX; /* set by take_slot on success */
    rc = take_slot(t, &index);
    if (rc != RM_OK)
        return rc;
    size_t request = where->nbytes ? (size_t)where->nbytes : 1;
    if (request != t->sized_request || alignment != t->sized_alignment) {
        t->sized_usable = rm_pool_block_size(t->pool, request, (size_t)alignment);
        t->sized_request = request;
        t->sized_alignment = alignment;
    }
    size_t usable = t->sized_usable;
    void *block = NULL;
    rm_tensor *tensor = NULL;
    rc = pool_block(t, where, alignment, usable, &block);
    if (rc != RM_OK)
        goto give_back_slot;
    rc = charge_session(t, where->session, where->nbytes);
    if (rc != RM_OK)
        goto give_back_block;
    tensor = new_handle(t, KIND_OWNED);
    if (tensor == NULL) {
        rc = RM_E_NO_MEMORY;
        goto give_back_charge;
    }
    publish_slot(t, index, block, usable, where);
    tensor->where = *where;
    tensor->data = block;
    tensor->flags = RM_TENSOR_WRITABLE | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED;
    link_handle(t, tensor);
    *out = tensor;
    return RM_OK;

give_back_charge:
    uncharge_session(t, where->session, where->nbytes);
give_back_block:
    block_free(t, block, usable);
give_back_slot:
    return_slot(t, index);
    return rc;
}

/* After allocate_shared failed with `rc` (lock held): no shared memory (no
 * /dev/shm, or it is full) gives a heap tensor unless the host needs
 * shareable memory; quotas and slots are errors either way. */
static int32_t fall_back(rm_tensors *t, int32_t rc, rm_descriptor *where, uint64_t alignment,
                         uint64_t flags, rm_tensor **out)
{
    bool shared_only = (flags & RM_TENSOR_ALLOC_SHARED_ONLY) != 0;
    bool no_space = rc == RM_E_NO_MEMORY || (rc == RM_E_SYSTEM && t->pool == NULL);
    if (no_space && !shared_only) {
        t->stats.fallbacks++;
        if (!t->fallback_logged) {
            t->fallback_logged = true;
            rm_host_log(t->host, RM_LOG_WARN,
                        "shared memory unavailable (%s); tensors fall back to private "
                        "heap memory, which cannot be shared by descriptor",
                        rm_error_last(t->error_owner));
        }
        return allocate_heap(t, where, alignment, (flags & RM_TENSOR_ALLOC_ZERO) != 0, out);
    }
    if (rc == RM_E_SYSTEM && shared_only) {
        char reason[RM_ERROR_MESSAGE_MAX];
        snprintf(reason, sizeof reason, "%s", rm_error_last(t->error_owner));
        return rm_error_set(t->error_owner, RM_E_NO_MEMORY,
                            "no shared memory for a tensor of %" PRIu64 " bytes: %s",
                            where->nbytes, reason);
    }
    return rc;
}

int32_t rm_tensors_allocate(rm_tensors *t, const rm_tensor_spec *spec, rm_tensor **out)
{
    *out = NULL;
    rm_descriptor where;
    uint64_t alignment = RM_TENSOR_MIN_ALIGNMENT;
    int32_t rc = check_spec(t, spec, &where, &alignment);
    if (rc != RM_OK)
        return rc;

    pthread_mutex_lock(&t->lock);
    t->stats.allocations++;
    drain_pending(t);
    bool zero_shared = false; /* a shared block is zeroed outside the lock */
    rc = admit(t, &where);
    if (rc == RM_OK) {
        rc = allocate_shared(t, &where, alignment, out);
        if (rc == RM_OK)
            zero_shared = (spec->flags & RM_TENSOR_ALLOC_ZERO) != 0;
        else
            rc = fall_back(t, rc, &where, alignment, spec->flags, out);
    }
    pthread_mutex_unlock(&t->lock);
    if (zero_shared)
        memset((*out)->data, 0, where.nbytes ? (size_t)where.nbytes : 1);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Info, export                                                             */
/* ------------------------------------------------------------------------ */

/* A tensor's shape and strides, zero beyond its ndim (a handle's
 * descriptor is defined only up to ndim; see check_spec). */
static void copy_dims(const rm_descriptor *where, int64_t *shape, int64_t *strides)
{
    for (uint32_t i = 0; i < RM_TENSOR_MAX_DIMS; i++) {
        bool used = i < where->ndim;
        shape[i] = used ? where->shape[i] : 0;
        strides[i] = used ? where->strides[i] : 0;
    }
}

int32_t rm_tensors_info(rm_tensors *t, const rm_tensor *tensor, rm_tensor_info *out)
{
    rm_tensor_info info = {.struct_size = sizeof info, .abi_version = RM_ABI_VERSION_CURRENT};
    info.data = tensor->data;
    info.nbytes = tensor->where.nbytes;
    info.dtype = tensor->where.dtype;
    info.ndim = tensor->where.ndim;
    copy_dims(&tensor->where, info.shape, info.strides);
    info.session = tensor->where.session;
    info.flags = tensor->flags;
    info.pool_id = tensor->where.pool_id;
    info.owner_pid = tensor->kind == KIND_HEAP ? (uint32_t)t->creator : tensor->where.owner_pid;
    *out = info;
    return RM_OK;
}

static int32_t check_shareable(rm_tensors *t, const rm_tensor *tensor)
{
    if (tensor->kind == KIND_HEAP)
        return rm_error_set(t->error_owner, RM_E_NOT_SHAREABLE,
                            "this tensor lives in private memory (no shared memory when it "
                            "was made, or an inline import): use tensor_export_inline");
    return RM_OK;
}

int32_t rm_tensors_export(rm_tensors *t, const rm_tensor *tensor, void *out, uint64_t out_size)
{
    int32_t rc = check_shareable(t, tensor);
    if (rc != RM_OK)
        return rc;
    if (out_size < RM_TENSOR_DESCRIPTOR_SIZE)
        return rm_error_set(t->error_owner, RM_E_BUFFER_TOO_SMALL,
                            "a descriptor needs %d bytes, the buffer has %" PRIu64,
                            RM_TENSOR_DESCRIPTOR_SIZE, out_size);
    rm_descriptor_encode(&tensor->where, out);
    return RM_OK;
}

int32_t rm_tensors_export_text(rm_tensors *t, const rm_tensor *tensor, char *out,
                               uint64_t out_size)
{
    int32_t rc = check_shareable(t, tensor);
    if (rc != RM_OK)
        return rc;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    rm_descriptor_encode(&tensor->where, bytes);
    size_t length = rm_descriptor_to_text(bytes, text);
    if (out_size < length + 1)
        return rm_error_set(t->error_owner, RM_E_BUFFER_TOO_SMALL,
                            "a text descriptor needs %zu bytes, the buffer has %" PRIu64,
                            length + 1, out_size);
    memcpy(out, text, length + 1);
    return RM_OK;
}

int32_t rm_tensors_export_inline(rm_tensors *t, const rm_tensor *tensor, void *out,
                                 uint64_t out_size, uint64_t *out_needed)
{
    uint64_t needed = RM_TENSOR_DESCRIPTOR_SIZE + tensor->where.nbytes;
    if (out_needed != NULL)
        *out_needed = needed;
    if (out == NULL || out_size < needed)
        return rm_error_set(t->error_owner, RM_E_BUFFER_TOO_SMALL,
                            "an inline descriptor of this tensor needs %" PRIu64
                            " bytes, the buffer has %" PRIu64,
                            needed, out == NULL ? (uint64_t)0 : out_size);
    rm_descriptor inline_form = {
        .kind = RM_DESCRIPTOR_KIND_INLINE,
        .ndim = tensor->where.ndim,
        .dtype = tensor->where.dtype,
        .offset = RM_TENSOR_DESCRIPTOR_SIZE,
        .nbytes = tensor->where.nbytes,
        .session = tensor->where.session,
    };
    copy_dims(&tensor->where, inline_form.shape, inline_form.strides);
    rm_descriptor_encode(&inline_form, out);
    memcpy((unsigned char *)out + RM_TENSOR_DESCRIPTOR_SIZE, tensor->data,
           (size_t)tensor->where.nbytes);
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Import                                                                   */
/* ------------------------------------------------------------------------ */

/* The descriptor's owner start time differs from the pool's: the pid was
 * reused, or the descriptor is forged. */
static int32_t owner_changed(rm_tensors *t, const char *pool_name, uint64_t recorded,
                             uint64_t claimed)
{
    return rm_error_set(t->error_owner, RM_E_STALE_DESCRIPTOR,
                        "pool %s belongs to another process now (owner start time "
                        "%" PRIu64 ", descriptor says %" PRIu64 ")",
                        pool_name, recorded, claimed);
}

static pool_view *find_view(rm_tensors *t, const rm_descriptor *d)
{
    for (size_t i = 0; i < t->view_count; i++) {
        pool_view *view = t->views[i];
        if (view->pool_id == d->pool_id && view->owner_pid == d->owner_pid)
            return view;
    }
    return NULL;
}

static int32_t map_view_data(rm_tensors *t, pool_view *view, bool writable)
{
    uint64_t size = 0;
    int fd = rm_segment_open_checked(view->data_name, writable, &size);
    if (fd < 0) {
        int err = errno;
        int32_t code = rm_segment_open_error_code(err);
        if (code == RM_E_STALE_DESCRIPTOR)
            return rm_error_set(t->error_owner, code, "data segment %s no longer exists",
                                view->data_name);
        return rm_error_set(t->error_owner, code, "data segment %s cannot be used: %s%s",
                            view->data_name, strerror(err),
                            code == RM_E_INVALID_DESCRIPTOR
                                ? " (not a 0600 regular file of this user)"
                                : "");
    }
    int32_t rc = RM_OK;
    if (size != view->reservation) {
        rc = rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                          "data segment %s has %" PRIu64 " bytes, its control segment says "
                          "%" PRIu64,
                          view->data_name, size, view->reservation);
    } else {
        void *base = mmap(NULL, (size_t)size, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                          MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            rc = rm_error_set(t->error_owner, errno == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                              "mmap() of %s failed: %s", view->data_name, strerror(errno));
        else if (writable)
            view->write_base = base;
        else
            view->read_base = base;
    }
    close(fd);
    return rc;
}

/* The cached view of the descriptor's pool, opened and checked on first
 * use (lock held). */
static int32_t open_view(rm_tensors *t, const rm_descriptor *d, pool_view **out)
{
    *out = NULL;
    pool_view *view = find_view(t, d);
    if (view != NULL) {
        /* Validation never depends on the cache: the start time is checked
         * on every import, not only when the pool is first mapped. */
        if (view->owner_start_time != d->owner_start_time)
            return owner_changed(t, view->data_name, view->owner_start_time,
                                 d->owner_start_time);
        *out = view;
        return RM_OK;
    }
    if (t->view_count == t->view_capacity) {
        size_t grown = t->view_capacity == 0 ? 4 : 2 * t->view_capacity;
        pool_view **bigger = realloc(t->views, grown * sizeof *bigger);
        if (bigger == NULL)
            return rm_error_set(t->error_owner, RM_E_NO_MEMORY, "no memory for a pool view");
        t->views = bigger;
        t->view_capacity = grown;
    }
    view = calloc(1, sizeof *view);
    if (view == NULL)
        return rm_error_set(t->error_owner, RM_E_NO_MEMORY, "no memory for a pool view");
    view->pool_id = d->pool_id;
    view->owner_pid = d->owner_pid;
    view->owner_start_time = d->owner_start_time;
    snprintf(view->data_name, sizeof view->data_name, "/rm.%s.%" PRIu32 ".%016" PRIx64,
             t->namespace_name, d->owner_pid, d->pool_id);
    char control_name[RM_POOL_NAME_MAX + 8];
    snprintf(control_name, sizeof control_name, "%s%s", view->data_name, RM_CONTROL_SUFFIX);
    int32_t rc = rm_control_open(control_name, t->error_owner, &view->control);
    if (rc != RM_OK) {
        if (rc == RM_E_STALE_DESCRIPTOR)
            rc = rm_error_set(t->error_owner, RM_E_STALE_DESCRIPTOR,
                              "pool %" PRIx64 " of pid %" PRIu32 " is not in namespace '%s' "
                              "(destroyed, reclaimed, or another namespace)",
                              d->pool_id, d->owner_pid, t->namespace_name);
        free(view);
        return rc;
    }
    const rm_control_header *header = view->control.header;
    if (header->pool_id != d->pool_id || header->owner_pid != d->owner_pid) {
        rc = rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                          "control segment %s names another pool or owner", control_name);
    } else if (header->owner_start_time != d->owner_start_time) {
        rc = owner_changed(t, view->data_name, header->owner_start_time,
                           d->owner_start_time);
    } else if (header->reservation_bytes == 0 || header->reservation_bytes > SIZE_MAX / 2) {
        rc = rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                          "control segment %s gives an impossible pool size", control_name);
    }
    if (rc == RM_OK) {
        view->reservation = header->reservation_bytes;
        view->local_holds = calloc(view->control.slot_count, sizeof *view->local_holds);
        if (view->local_holds == NULL)
            rc = rm_error_set(t->error_owner, RM_E_NO_MEMORY, "no memory for a pool view");
    }
    if (rc == RM_OK)
        rc = map_view_data(t, view, false);
    if (rc == RM_OK) {
        view->holder_index = rm_control_claim_holder(&view->control);
        if (view->holder_index == 0)
            rc = rm_error_set(t->error_owner, RM_E_QUOTA_EXCEEDED,
                              "pool %s already has %d importing contexts "
                              "(RM_TENSOR_MAX_HOLDERS)",
                              view->data_name, RM_TENSOR_MAX_HOLDERS);
    }
    if (rc != RM_OK) {
        close_view(view, false);
        return rc;
    }
    t->views[t->view_count++] = view;
    t->stats.pools_mapped = t->view_count;
    *out = view;
    return RM_OK;
}

/* Why a hold on slot d->slot was refused: the tensor was freed (or the
 * slot reused since), which is an old descriptor, or the descriptor names
 * a generation the slot has never had, which no export produced. Serial
 * arithmetic keeps "newer" right across the 32-bit wrap. */
static int32_t refused_hold(rm_tensors *t, const rm_control *control, const rm_descriptor *d,
                           const char *pool_name)
{
    uint64_t state = atomic_load_explicit(&control->slots[d->slot].state, memory_order_acquire);
    uint32_t generation = rm_control_generation(state);
    if ((int32_t)(d->generation - generation) > 0)
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "descriptor generation %u is newer than slot %u of pool %s has "
                            "ever had (%u): the slot or generation field was changed",
                            d->generation, d->slot, pool_name, generation);
    if (generation == d->generation)
        return rm_error_set(t->error_owner, RM_E_STALE_DESCRIPTOR,
                            "the tensor in slot %u (generation %u) of pool %s was released "
                            "by every holder and freed",
                            d->slot, d->generation, pool_name);
    return rm_error_set(t->error_owner, RM_E_STALE_DESCRIPTOR,
                        "the tensor in slot %u (generation %u) of pool %s was freed; the slot "
                        "holds generation %u now",
                        d->slot, d->generation, pool_name, generation);
}

/*
 * Takes hold `bit` on slot d->slot of `control` for a context that already
 * has `held` handles on it, after checking every field of `d` against the
 * tensor the slot holds (lock held). On a mismatch a hold just taken is
 * dropped again; true in *freed_by_drop when that drop left the slot dead
 * (the owner must free it).
 */
static int32_t hold_slot(rm_tensors *t, rm_control *control, const rm_descriptor *d,
                         uint32_t held, uint32_t bit, const char *pool_name,
                         bool *freed_by_drop)
{
    *freed_by_drop = false;
    if (d->slot >= control->slot_count)
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "slot %u is outside the %u slots of pool %s", d->slot,
                            control->slot_count, pool_name);
    if (held == 0) {
        if (!rm_control_hold(control, d->slot, d->generation, bit))
            return refused_hold(t, control, d, pool_name);
    } else {
        uint64_t state = atomic_load_explicit(&control->slots[d->slot].state,
                                              memory_order_acquire);
        if (rm_control_generation(state) != d->generation)
            return refused_hold(t, control, d, pool_name);
    }
    /* Held now, so the binding cannot change under us. */
    const char *field = rm_control_binding_mismatch(control, d->slot, d);
    if (field == NULL)
        return RM_OK;
    if (held == 0)
        *freed_by_drop = rm_control_drop(control, d->slot, bit, bit != RM_CONTROL_OWNER_BIT);
    return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                        "descriptor field '%s' differs from the tensor in slot %u "
                        "(generation %u) of pool %s: the descriptor was changed after export",
                        field, d->slot, d->generation, pool_name);
}

/* Another handle on a slot of the context's own pool (lock held). */
static int32_t import_own(rm_tensors *t, const rm_descriptor *d, rm_tensor *tensor)
{
    if (d->owner_start_time != t->control.header->owner_start_time)
        return owner_changed(t, t->stats.pool_name, t->control.header->owner_start_time,
                             d->owner_start_time);
    /* What the owner itself knows comes first: a slot it freed (or reused)
     * is refused whatever the shared state word says. */
    if (d->slot < t->slot_count &&
        (!t->slots[d->slot].live || t->slots[d->slot].generation != d->generation)) {
        const owned_slot *known = &t->slots[d->slot];
        if ((int32_t)(d->generation - known->generation) > 0)
            return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                                "descriptor generation %u is newer than slot %u of pool %s "
                                "has ever had (%u): the slot or generation field was changed",
                                d->generation, d->slot, t->stats.pool_name, known->generation);
        return rm_error_set(t->error_owner, RM_E_STALE_DESCRIPTOR,
                            "the tensor in slot %u (generation %u) of pool %s was freed",
                            d->slot, d->generation, t->stats.pool_name);
    }
    uint32_t held = d->slot < t->slot_count ? t->slots[d->slot].local_holds : 0;
    bool freed = false;
    int32_t rc = hold_slot(t, &t->control, d, held, RM_CONTROL_OWNER_BIT, t->stats.pool_name,
                           &freed);
    if (freed)
        free_slot_if_dead(t, d->slot);
    if (rc != RM_OK)
        return rc;
    owned_slot *slot = &t->slots[d->slot];
    slot->local_holds++;
    tensor->kind = KIND_OWNED;
    tensor->data = slot->block;
    return RM_OK;
}

/* A handle on a slot of another pool (lock held). */
static int32_t import_view(rm_tensors *t, const rm_descriptor *d, bool writable,
                           rm_tensor *tensor)
{
    pool_view *view = NULL;
    int32_t rc = open_view(t, d, &view);
    if (rc != RM_OK)
        return rc;
    if (d->offset > view->reservation || d->nbytes > view->reservation - d->offset)
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "extent (offset %" PRIu64 ", %" PRIu64 " bytes) lies outside "
                            "pool %s (%" PRIu64 " bytes)",
                            d->offset, d->nbytes, view->data_name, view->reservation);
    if (writable && view->write_base == NULL) {
        rc = map_view_data(t, view, true);
        if (rc != RM_OK)
            return rc;
    }
    uint32_t held = d->slot < view->control.slot_count ? view->local_holds[d->slot] : 0;
    bool freed = false;
    rc = hold_slot(t, &view->control, d, held, (uint32_t)1 << view->holder_index,
                   view->data_name, &freed);
    if (rc != RM_OK)
        return rc;
    view->local_holds[d->slot]++;
    view->holds++;
    tensor->kind = KIND_VIEW;
    tensor->view = view;
    tensor->data = (writable ? view->write_base : view->read_base) + d->offset;
    return RM_OK;
}

/* A private copy of the bytes after an inline descriptor (lock held). */
static int32_t import_inline(rm_tensors *t, const rm_descriptor *d, const unsigned char *bytes,
                             uint64_t size, rm_tensor *tensor)
{
    if (size - RM_TENSOR_DESCRIPTOR_SIZE != d->nbytes)
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "inline descriptor of %" PRIu64 " data bytes arrived with %" PRIu64,
                            d->nbytes, size - RM_TENSOR_DESCRIPTOR_SIZE);
    uint64_t bytes_needed = d->nbytes ? d->nbytes : 1;
    bytes_needed = (bytes_needed + RM_TENSOR_MIN_ALIGNMENT - 1) / RM_TENSOR_MIN_ALIGNMENT *
                   RM_TENSOR_MIN_ALIGNMENT;
    void *data = bytes_needed <= SIZE_MAX
                     ? aligned_alloc(RM_TENSOR_MIN_ALIGNMENT, (size_t)bytes_needed)
                     : NULL;
    if (data == NULL)
        return rm_error_set(t->error_owner, RM_E_NO_MEMORY,
                            "no heap memory for an inline tensor of %" PRIu64 " bytes",
                            d->nbytes);
    memcpy(data, bytes + RM_TENSOR_DESCRIPTOR_SIZE, (size_t)d->nbytes);
    tensor->kind = KIND_HEAP;
    tensor->data = data;
    t->stats.heap_tensors++;
    t->stats.heap_bytes += d->nbytes;
    return RM_OK;
}

static int32_t import_bytes(rm_tensors *t, const uint8_t *bytes, uint64_t size, uint64_t flags,
                            rm_tensor **out)
{
    *out = NULL;
    if ((flags & ~(uint64_t)KNOWN_IMPORT_FLAGS) != 0)
        return rm_error_set(t->error_owner, RM_E_INVALID_ARGUMENT,
                            "unknown tensor import flags 0x%" PRIx64,
                            flags & ~(uint64_t)KNOWN_IMPORT_FLAGS);
    if (size < RM_TENSOR_DESCRIPTOR_SIZE)
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "a descriptor has %d bytes, got %" PRIu64,
                            RM_TENSOR_DESCRIPTOR_SIZE, size);
    rm_descriptor d;
    const char *why = NULL;
    if (!rm_descriptor_decode(bytes, &d, &why))
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR, "descriptor: %s", why);
    bool inline_form = d.kind == RM_DESCRIPTOR_KIND_INLINE;
    if (!inline_form && size != RM_TENSOR_DESCRIPTOR_SIZE)
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "a pool descriptor has %d bytes, got %" PRIu64,
                            RM_TENSOR_DESCRIPTOR_SIZE, size);
    bool writable = inline_form || (flags & RM_TENSOR_IMPORT_WRITABLE) != 0;
    pthread_mutex_lock(&t->lock);
    rm_tensor *tensor = new_handle(t, KIND_VIEW);
    int32_t rc = tensor != NULL ? RM_OK : RM_E_NO_MEMORY;
    bool own = false;
    if (rc == RM_OK && inline_form) {
        rc = import_inline(t, &d, bytes, size, tensor);
    } else if (rc == RM_OK) {
        drain_pending(t);
        own = t->pool != NULL && d.pool_id == rm_pool_id(t->pool) &&
              d.owner_pid == (uint32_t)t->creator;
        rc = own ? import_own(t, &d, tensor) : import_view(t, &d, writable, tensor);
    }
    if (rc == RM_OK) {
        tensor->where = d;
        tensor->flags = RM_TENSOR_IMPORTED | (writable ? RM_TENSOR_WRITABLE : 0) |
                        (inline_form ? 0 : RM_TENSOR_SHAREABLE) | (own ? RM_TENSOR_OWNED : 0);
        t->stats.imports++;
        link_handle(t, tensor);
        *out = tensor;
    } else if (tensor != NULL) {
        recycle_handle(t, tensor);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

int32_t rm_tensors_import(rm_tensors *t, const void *descriptor, uint64_t size, uint64_t flags,
                          rm_tensor **out)
{
    return import_bytes(t, descriptor, size, flags, out);
}

int32_t rm_tensors_import_text(rm_tensors *t, const char *text, uint64_t flags, rm_tensor **out)
{
    *out = NULL;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    const char *why = NULL;
    if (!rm_descriptor_from_text(text, bytes, &why))
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR, "%s", why);
    if (rm_descriptor_kind_of(bytes) == RM_DESCRIPTOR_KIND_INLINE)
        return rm_error_set(t->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "inline descriptors have no text form");
    return import_bytes(t, bytes, sizeof bytes, flags, out);
}

/* ------------------------------------------------------------------------ */
/* Release and DLPack                                                       */
/* ------------------------------------------------------------------------ */

static void unref(rm_tensor *tensor)
{
    /* Without a DLPack export nothing else holds the handle, so the
     * caller's reference is the last and needs no atomic read-modify-write
     * (a locked instruction on every release otherwise). A concurrent
     * export of a handle being released is a host bug either way. */
    if (atomic_load_explicit(&tensor->refs, memory_order_acquire) != 1 &&
        atomic_fetch_sub_explicit(&tensor->refs, 1, memory_order_acq_rel) != 1)
        return;
    rm_tensors *t = tensor->tensors;
    pthread_mutex_lock(&t->lock);
    drop_handle(t, tensor);
    drain_pending(t);
    pthread_mutex_unlock(&t->lock);
}

int32_t rm_tensors_release(rm_tensors *t, rm_tensor *tensor)
{
    (void)t;
    unref(tensor);
    return RM_OK;
}

typedef struct dlpack_export {
    union {
        rm_dl_managed_tensor plain;
        rm_dl_managed_tensor_versioned versioned;
    } managed;
    rm_tensor *tensor;
    int64_t shape[RM_TENSOR_MAX_DIMS];
    int64_t strides[RM_TENSOR_MAX_DIMS];
} dlpack_export;

static void dlpack_delete_plain(rm_dl_managed_tensor *self)
{
    dlpack_export *export = self->manager_ctx;
    unref(export->tensor);
    free(export);
}

static void dlpack_delete_versioned(rm_dl_managed_tensor_versioned *self)
{
    dlpack_export *export = self->manager_ctx;
    unref(export->tensor);
    free(export);
}

static dlpack_export *dlpack_begin(rm_tensors *t, rm_tensor *tensor, rm_dl_tensor *dl)
{
    (void)dl;
    dlpack_export *export = calloc(1, sizeof *export);
    if (export == NULL) {
        rm_error_set(t->error_owner, RM_E_NO_MEMORY, "no memory for a DLPack export");
        return NULL;
    }
    export->tensor = tensor;
    copy_dims(&tensor->where, export->shape, export->strides);
    atomic_fetch_add_explicit(&tensor->refs, 1, memory_order_relaxed);
    return export;
}

static rm_dl_tensor dl_tensor_of(const rm_tensor *tensor, dlpack_export *export)
{
    return (rm_dl_tensor){
        .data = tensor->data,
        .device = {.device_type = 1, .device_id = 0},
        .ndim = (int32_t)tensor->where.ndim,
        .dtype = tensor->where.dtype,
        .shape = export->shape,
        .strides = export->strides,
        .byte_offset = 0,
    };
}

int32_t rm_tensors_to_dlpack(rm_tensors *t, rm_tensor *tensor, rm_dl_managed_tensor **out)
{
    *out = NULL;
    dlpack_export *export = dlpack_begin(t, tensor, NULL);
    if (export == NULL)
        return RM_E_NO_MEMORY;
    export->managed.plain = (rm_dl_managed_tensor){
        .dl_tensor = dl_tensor_of(tensor, export),
        .manager_ctx = export,
        .deleter = dlpack_delete_plain,
    };
    *out = &export->managed.plain;
    return RM_OK;
}

int32_t rm_tensors_to_dlpack_versioned(rm_tensors *t, rm_tensor *tensor,
                                       rm_dl_managed_tensor_versioned **out)
{
    *out = NULL;
    dlpack_export *export = dlpack_begin(t, tensor, NULL);
    if (export == NULL)
        return RM_E_NO_MEMORY;
    export->managed.versioned = (rm_dl_managed_tensor_versioned){
        .version = {.major = 1, .minor = 0},
        .manager_ctx = export,
        .deleter = dlpack_delete_versioned,
        .flags = (tensor->flags & RM_TENSOR_WRITABLE) ? 0 : RM_DLPACK_FLAG_READ_ONLY,
        .dl_tensor = dl_tensor_of(tensor, export),
    };
    *out = &export->managed.versioned;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Stats, reclaim, listing                                                  */
/* ------------------------------------------------------------------------ */

int32_t rm_tensors_pool_stats(rm_tensors *t, rm_tensor_pool_stats *out)
{
    pthread_mutex_lock(&t->lock);
    drain_pending(t);
    rm_tensor_pool_stats stats = t->stats;
    if (t->pool != NULL) {
        stats.committed_bytes = rm_pool_committed_bytes(t->pool);
        uint64_t holders = 0;
        for (uint32_t i = 1; i <= RM_TENSOR_MAX_HOLDERS; i++)
            holders += atomic_load(&t->control.header->holders[i].pid) != 0;
        stats.holders = holders;
    }
    stats.pools_mapped = t->view_count;
    pthread_mutex_unlock(&t->lock);
    stats.struct_size = sizeof stats;
    stats.abi_version = RM_ABI_VERSION_CURRENT;
    *out = stats;
    return RM_OK;
}

int32_t rm_tensors_session_bytes(rm_tensors *t, uint64_t session, uint64_t *out)
{
    pthread_mutex_lock(&t->lock);
    drain_pending(t);
    *out = session_bytes(t, session);
    pthread_mutex_unlock(&t->lock);
    return RM_OK;
}

int32_t rm_tensors_reclaim(rm_tensors *t, rm_reclaim_report *out)
{
    rm_reclaim_report report = {.struct_size = sizeof report,
                                .abi_version = RM_ABI_VERSION_CURRENT};
    pthread_mutex_lock(&t->lock);
    uint64_t frees_before = t->stats.frees;
    reclaim_dead_holders(t, &report);
    drain_pending(t);
    report.tensors_freed = t->stats.frees - frees_before;
    /* Views of dead or retired pools that this context no longer holds
     * anything of: unmap them, so their pages can go back to /dev/shm. */
    forget_unused_views(t, true);
    pthread_mutex_unlock(&t->lock);
    int32_t rc = rm_shm_namespace_reap(t->namespace_name, t->error_owner,
                                       &report.segments_unlinked, &report.bytes_unlinked);
    if (out != NULL)
        *out = report;
    return rc;
}

int32_t rm_tensors_list(rm_tensors *t, rm_shm_pool_info *out, uint32_t row_size,
                        uint32_t capacity, uint32_t *count)
{
    pthread_mutex_lock(&t->lock);
    if (t->pool != NULL)
        publish_stats(t);
    pthread_mutex_unlock(&t->lock);
    return rm_shm_namespace_list(t->namespace_name, t->error_owner, out, row_size, capacity,
                                 count);
}
