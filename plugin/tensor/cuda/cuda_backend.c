/* The CUDA IPC backend (mem_backend.h): device tensors of a context, and
 * the device tensors of other contexts that it imports.
 *
 * Owner side. Tensors are sub-allocated from exportable blocks
 * (cuda.block_bytes, cuMemAlloc): one IPC handle per block, published in
 * the context's device table (cuda_table.h), first fit over each block's
 * free extents. Each tensor takes a slot of the table's control segment,
 * whose holds decide when its extent may be reused, as for shared memory.
 * A block is freed only when no tensor lives in it and no importer has
 * its handle open.
 *
 * Importer side. One view per exporting table: the two segments mapped,
 * a holder entry claimed, and per block the handle opened once and kept
 * open (cached) after the last tensor of the block goes, because an open
 * costs milliseconds; it is closed when the owner asks for the block back
 * (`wanted`), retires or dies, at tensor_reclaim and at context_destroy.
 * Borrowed blocks (tensor_wrap_device) are closed at the last tensor: the
 * host frees that memory on its own schedule.
 *
 * The driver is loaded on the first call that needs it. Every driver call
 * is made in the device's primary context (cuda_driver.c).
 *
 * A context destroyed while importers hold its tensors (or keep its
 * handles open) leaves its blocks, events and segments to a process-wide
 * limbo, swept by this process's later device calls: freeing them earlier
 * would pull memory from under the importers, and the process cannot wait.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cuda_driver.h"
#include "cuda_table.h"
#include "descriptor.h"
#include "error.h"
#include "mem_backend.h"
#include "process_identity.h"
#include "shm_control.h"
#include "shm_namespace.h"
#include "shm_segment.h"
#include "shm_view.h"

/* Device allocations are aligned like cudaMalloc's, and extents are
 * rounded to it, so neighbouring tensors never share a 256-byte sector. */
#define DEVICE_ALIGNMENT ((uint64_t)256)
#define BLOCK_GRANULE ((uint64_t)2 << 20)
/* Most cached (unheld) open handles per view; older ones are closed. */
#define VIEW_CACHED_BLOCKS_MAX 64

const rm_shm_family rm_cuda_table_family = {
    .data = RM_SEGMENT_CUDA_TABLE,
    .control = RM_SEGMENT_CUDA_CONTROL,
    .memory = RM_MEMORY_CUDA,
};

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct extent {
    uint64_t offset, size;
} extent;

typedef struct device_block {
    CUdeviceptr base;
    uint64_t size;
    int32_t ordinal;
    bool live;
    bool borrowed;
    uint32_t tensors;     /* live slots in it */
    extent *free;         /* free extents, by offset (owned blocks) */
    uint32_t free_count, free_capacity;
} device_block;

typedef struct device_slot {
    uint32_t block;
    uint64_t offset, extent_size;
    uint64_t nbytes, charge, session;
    uint32_t generation, local_holds, next_free;
    bool live;
    CUevent event;        /* made on the first tensor_record of the slot, kept */
    int32_t event_ordinal;
    rm_device_released_fn released;
    void *released_user;
    void *released_pointer;
} device_slot;

typedef struct view_block {
    uint32_t generation;
    CUdeviceptr base;
    uint64_t size;    /* the bytes the driver says are behind `base` */
    int32_t ordinal;
    uint32_t holds;
    bool open;
} view_block;

/* An exporter's event, opened here once and kept (opening one costs a
 * shared-memory lookup in the driver), until the view closes. */
typedef struct view_event {
    CUevent event;
    uint32_t generation;
    int32_t ordinal;
} view_event;

typedef struct cuda_view {
    uint64_t pool_id;
    uint32_t owner_pid;
    uint64_t owner_start_time;
    bool same_process;
    char table_name[RM_SEGMENT_NAME_MAX];
    char control_name[RM_SEGMENT_NAME_MAX];
    rm_control control;
    rm_cuda_table table;
    uint32_t block_capacity;
    uint32_t holder_index;
    uint32_t *slot_holds;
    uint32_t *slot_blocks; /* the block each held slot was imported from */
    view_block *blocks;
    uint32_t holds;
    uint32_t open_blocks; /* blocks whose handle is open here */
    /* The exporter, for a liveness check that costs one poll() instead of
     * a read of /proc: readable once the process has exited. -1: none
     * (no pidfd_open), then /proc is read. */
    int owner_pidfd;
    /* tensor_wait runs without the context's lock (it may block), so its
     * cache has a lock of its own. */
    pthread_mutex_t events_lock;
    view_event *events; /* by slot, made on the first wait */
} cuda_view;

/* What a destroyed context leaves while others still use it. */
typedef struct orphan {
    struct orphan *next;
    rm_cuda_driver *driver;
    rm_control control;
    rm_cuda_table table;
    char table_name[RM_SEGMENT_NAME_MAX];
    char control_name[RM_SEGMENT_NAME_MAX];
    device_block *blocks;
    uint32_t block_count;
    device_slot *slots;
    uint32_t slot_count;
} orphan;

typedef struct cuda_backend {
    rm_mem_backend base;
    rm_mem_env env;
    rm_tensor_pool_stats *stats;
    char namespace_name[RM_NAMESPACE_MAX + 1];
    char library[RM_LIBRARY_NAME_MAX + 1];
    uint64_t pool_bytes;
    uint64_t block_bytes;
    uint32_t slot_count;
    uint32_t block_capacity;

    rm_cuda_driver *driver;

    /* The own table, made on the first device allocation or wrap. */
    bool table_made;
    uint64_t pool_id;
    uint64_t owner_start_time;
    char table_name[RM_SEGMENT_NAME_MAX];
    char control_name[RM_SEGMENT_NAME_MAX];
    rm_control control;
    rm_cuda_table table;
    device_block *blocks;
    uint32_t block_count;        /* rows used so far (high-water) */
    uint64_t block_bytes_held;
    device_slot *slots;
    uint32_t free_head, never_used;

    cuda_view **views;
    size_t view_count, view_capacity;
} cuda_backend;

static const _Atomic uint64_t nothing_pending = 0;

static void cuda_collect(rm_mem_backend *backend);

/* The process's open IPC handles, shared by every context's views: a
 * handle is opened once per process however many plugin contexts import
 * from its block (an open costs milliseconds, and the driver maps it once
 * per CUDA context anyway). Keyed by the driver object, the device and the
 * 64 handle bytes (unique per allocation, even after its address is
 * reused); `users` counts the views that have it open. Touched only when a
 * view opens or closes a block, never on a cached import. */
typedef struct process_mapping {
    struct process_mapping *next;
    rm_cuda_driver *driver;
    int32_t ordinal;
    uint8_t handle[CU_IPC_HANDLE_SIZE];
    CUdeviceptr base;
    uint32_t users;
} process_mapping;

static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;
static process_mapping *mappings;

/* The interprocess events this process's contexts made and have not
 * destroyed. A same-process importer finds a tensor's event as a CUevent
 * value in the exporter's table, which any process of the user can
 * write: it is passed to the driver only if it is one of these (a forged
 * value would be a wild pointer in the driver). */
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static CUevent *live_events;
static size_t live_event_count, live_event_capacity;

static bool event_remember(CUevent event)
{
    pthread_mutex_lock(&events_lock);
    bool ok = true;
    if (live_event_count == live_event_capacity) {
        size_t grown = live_event_capacity == 0 ? 64 : 2 * live_event_capacity;
        CUevent *bigger = realloc(live_events, grown * sizeof *bigger);
        if (bigger == NULL)
            ok = false;
        else
            live_events = bigger, live_event_capacity = grown;
    }
    if (ok)
        live_events[live_event_count++] = event;
    pthread_mutex_unlock(&events_lock);
    return ok;
}

static void event_forget(CUevent event)
{
    pthread_mutex_lock(&events_lock);
    for (size_t i = 0; i < live_event_count; i++) {
        if (live_events[i] == event) {
            live_events[i] = live_events[--live_event_count];
            break;
        }
    }
    pthread_mutex_unlock(&events_lock);
}

static bool event_known(CUevent event)
{
    bool known = false;
    pthread_mutex_lock(&events_lock);
    for (size_t i = 0; i < live_event_count && !known; i++)
        known = live_events[i] == event;
    pthread_mutex_unlock(&events_lock);
    return known;
}

static pthread_mutex_t limbo_lock = PTHREAD_MUTEX_INITIALIZER;
static orphan *limbo;
static _Atomic uint64_t limbo_count;

/* ------------------------------------------------------------------------ */
/* The driver                                                               */
/* ------------------------------------------------------------------------ */

/* The driver, loaded on first use. A failed open keeps nothing, so the
 * next call tries again (a driver installed meanwhile, say). The loader's
 * FEATURE_UNAVAILABLE is this ABI's DEVICE_UNAVAILABLE: the capability is
 * built, the machine cannot run it. */
static int32_t need_driver(cuda_backend *c)
{
    if (c->driver != NULL)
        return RM_OK;
    int32_t rc = rm_cuda_driver_open(c->library, c->env.error_owner, &c->driver);
    if (rc == RM_E_FEATURE_UNAVAILABLE) {
        char message[RM_ERROR_MESSAGE_MAX];
        snprintf(message, sizeof message, "%s", rm_error_last(c->env.error_owner));
        rc = rm_error_set(c->env.error_owner, RM_E_DEVICE_UNAVAILABLE, "%s", message);
    }
    return rc;
}

static void uuid_of(cuda_backend *c, int32_t ordinal, uint8_t uuid[16])
{
    if (rm_cuda_driver_device_uuid(c->driver, ordinal, uuid, NULL) != RM_OK)
        memset(uuid, 0, 16);
}

/* ------------------------------------------------------------------------ */
/* Limbo: what destroyed contexts of this process leave to their importers  */
/* ------------------------------------------------------------------------ */

/* Drops holds and opener bits of holders that died (owner side of a
 * table: the live one or an orphan). Returns the number of dead holders. */
static uint32_t drop_dead_holders(rm_control *control, rm_cuda_table *table,
                                  uint32_t block_count, uint32_t slot_limit,
                                  uint64_t *holds_dropped)
{
    uint32_t dead = 0;
    rm_control_header *header = control->header;
    for (uint32_t index = 1; index <= RM_TENSOR_MAX_HOLDERS; index++) {
        rm_control_holder *holder = &header->holders[index];
        uint32_t pid = atomic_load_explicit(&holder->pid, memory_order_acquire);
        if (pid == 0)
            continue;
        uint64_t start = atomic_load_explicit(&holder->start_time, memory_order_acquire);
        if (rm_process_alive((pid_t)pid, start))
            continue;
        uint32_t bit = (uint32_t)1 << index;
        for (uint32_t slot = 0; slot < slot_limit; slot++) {
            uint64_t state =
                atomic_load_explicit(&control->slots[slot].state, memory_order_acquire);
            if ((rm_control_mask(state) & bit) == 0)
                continue;
            if (holds_dropped != NULL)
                (*holds_dropped)++;
            (void)rm_control_drop(control, slot, bit, true);
        }
        for (uint32_t b = 0; b < block_count; b++)
            atomic_fetch_and_explicit(&table->blocks[b].openers, ~bit, memory_order_acq_rel);
        rm_control_release_holder(control, index);
        dead++;
    }
    return dead;
}

static bool orphan_in_use(orphan *o)
{
    drop_dead_holders(&o->control, &o->table, o->block_count, o->slot_count, NULL);
    for (uint32_t s = 0; s < o->slot_count; s++)
        if (rm_control_mask(atomic_load_explicit(&o->control.slots[s].state,
                                                 memory_order_acquire)) != 0)
            return true;
    for (uint32_t b = 0; b < o->block_count; b++)
        if (o->blocks[b].live && !o->blocks[b].borrowed &&
            atomic_load_explicit(&o->table.blocks[b].openers, memory_order_acquire) != 0)
            return true;
    return false;
}

static void free_device_state(rm_cuda_driver *driver, device_block *blocks,
                              uint32_t block_count, device_slot *slots, uint32_t slot_count,
                              bool call_driver)
{
    for (uint32_t s = 0; s < slot_count; s++) {
        if (slots[s].event != NULL && call_driver) {
            event_forget(slots[s].event);
            (void)rm_cuda_driver_event_destroy(driver, slots[s].event_ordinal, slots[s].event,
                                               NULL);
        }
    }
    for (uint32_t b = 0; b < block_count; b++) {
        if (blocks[b].live && !blocks[b].borrowed && call_driver)
            (void)rm_cuda_driver_mem_free(driver, blocks[b].ordinal, blocks[b].base, NULL);
        free(blocks[b].free);
    }
    free(blocks);
    free(slots);
}

static void orphan_free(orphan *o)
{
    free_device_state(o->driver, o->blocks, o->block_count, o->slots, o->slot_count, true);
    rm_control_close(&o->control);
    munmap(o->table.header, o->table.mapped_bytes);
    (void)rm_segment_unlink(o->table_name, NULL);
    (void)rm_segment_unlink(o->control_name, NULL);
    rm_cuda_driver_release(o->driver);
    free(o);
}

/* Frees every orphan nobody uses any more. Called from device calls of any
 * context of this process (a few loads per orphan when in use). */
static uint64_t sweep_limbo(void)
{
    if (atomic_load_explicit(&limbo_count, memory_order_acquire) == 0)
        return 0;
    uint64_t freed = 0;
    pthread_mutex_lock(&limbo_lock);
    orphan **at = &limbo;
    while (*at != NULL) {
        orphan *o = *at;
        if (orphan_in_use(o)) {
            at = &o->next;
            continue;
        }
        *at = o->next;
        freed += o->block_count;
        atomic_fetch_sub_explicit(&limbo_count, 1, memory_order_release);
        orphan_free(o);
    }
    pthread_mutex_unlock(&limbo_lock);
    return freed;
}

/* ------------------------------------------------------------------------ */
/* The own table                                                            */
/* ------------------------------------------------------------------------ */

static int32_t make_table(cuda_backend *c)
{
    if (c->table_made)
        return RM_OK;
    uint64_t id = 0;
    int32_t rc = rm_segment_random_id(RM_SEGMENT_CUDA_TABLE, c->namespace_name,
                                      c->env.error_owner, &id);
    if (rc != RM_OK)
        return rc;
    pid_t self = getpid();
    (void)rm_segment_name_format(c->table_name, RM_SEGMENT_CUDA_TABLE, c->namespace_name, self,
                                 id);
    (void)rm_segment_name_format(c->control_name, RM_SEGMENT_CUDA_CONTROL, c->namespace_name,
                                 self, id);
    size_t bytes = rm_cuda_table_size(c->block_capacity, c->slot_count);
    int fd = -1;
    rc = rm_segment_create(c->table_name, bytes, RM_SEGMENT_COMMITTED,
                           rm_segment_kind_description(RM_SEGMENT_CUDA_TABLE),
                           c->env.error_owner, &fd, NULL);
    if (rc != RM_OK)
        return rc;
    void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (base == MAP_FAILED) {
        (void)rm_segment_unlink(c->table_name, NULL);
        return rm_error_set(c->env.error_owner, RM_E_SYSTEM, "mmap() of %s failed: %s",
                            c->table_name, strerror(err));
    }
    rm_cuda_table_lay_out(&c->table, base, bytes, c->block_capacity);
    rc = rm_control_create(c->control_name, id, c->slot_count, c->pool_bytes, c->pool_bytes,
                           c->env.error_owner, &c->control);
    c->blocks = calloc(c->block_capacity, sizeof *c->blocks);
    c->slots = calloc(c->slot_count, sizeof *c->slots);
    if (rc == RM_OK && (c->blocks == NULL || c->slots == NULL)) {
        rm_control_close(&c->control);
        (void)rm_segment_unlink(c->control_name, NULL);
        rc = rm_error_set(c->env.error_owner, RM_E_NO_MEMORY,
                          "no memory for %u device tensor slots", c->slot_count);
    }
    if (rc != RM_OK) {
        free(c->blocks);
        free(c->slots);
        c->blocks = NULL;
        c->slots = NULL;
        munmap(base, bytes);
        (void)rm_segment_unlink(c->table_name, NULL);
        return rc;
    }
    rm_cuda_table_header *header = c->table.header;
    header->pool_id = id;
    header->owner_pid = (uint32_t)self;
    header->block_capacity = c->block_capacity;
    header->owner_start_time = c->control.header->owner_start_time;
    header->slot_count = c->slot_count;
    header->layout_version = RM_CUDA_TABLE_LAYOUT_VERSION;
    /* The magic last: a table is valid only once everything before it is. */
    __atomic_store_n(&header->magic, RM_CUDA_TABLE_MAGIC, __ATOMIC_RELEASE);
    c->pool_id = id;
    c->owner_start_time = c->control.header->owner_start_time;
    c->free_head = UINT32_MAX;
    c->never_used = 0;
    c->table_made = true;
    c->base.deferred = &c->control.header->pending;
    c->base.set_up = true;
    return RM_OK;
}

static void publish_figures(cuda_backend *c)
{
    if (!c->table_made)
        return;
    rm_control_header *header = c->control.header;
    atomic_store_explicit(&header->live_tensors, c->stats->cuda_tensors, memory_order_relaxed);
    atomic_store_explicit(&header->live_bytes, c->stats->cuda_bytes, memory_order_relaxed);
    atomic_store_explicit(&header->committed_bytes, c->block_bytes_held, memory_order_relaxed);
    atomic_store_explicit(&header->device_blocks, c->stats->cuda_blocks, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Blocks                                                                   */
/* ------------------------------------------------------------------------ */

static uint64_t round_up(uint64_t value, uint64_t to)
{
    return (value + to - 1) / to * to;
}

/* First fit in one block's free extents; the extent is taken. */
static bool extent_take(device_block *block, uint64_t size, uint64_t alignment,
                        uint64_t *offset)
{
    for (uint32_t i = 0; i < block->free_count; i++) {
        extent *e = &block->free[i];
        uint64_t start = round_up(e->offset, alignment);
        if (start - e->offset > e->size || e->size - (start - e->offset) < size)
            continue;
        uint64_t before = start - e->offset;
        uint64_t after = e->size - before - size;
        *offset = start;
        if (before == 0 && after == 0) {
            memmove(e, e + 1, (block->free_count - i - 1) * sizeof *e);
            block->free_count--;
        } else if (before == 0) {
            e->offset = start + size;
            e->size = after;
        } else if (after == 0) {
            e->size = before;
        } else {
            if (block->free_count == block->free_capacity)
                return false; /* kept as it was; the caller tries elsewhere */
            memmove(e + 2, e + 1, (block->free_count - i - 1) * sizeof *e);
            block->free_count++;
            e->size = before;
            e[1] = (extent){.offset = start + size, .size = after};
        }
        return true;
    }
    return false;
}

/* Gives an extent back, merging with its neighbours. */
static void extent_give(device_block *block, uint64_t offset, uint64_t size)
{
    uint32_t i = 0;
    while (i < block->free_count && block->free[i].offset < offset)
        i++;
    bool joins_left = i > 0 && block->free[i - 1].offset + block->free[i - 1].size == offset;
    bool joins_right = i < block->free_count && offset + size == block->free[i].offset;
    if (joins_left && joins_right) {
        block->free[i - 1].size += size + block->free[i].size;
        memmove(&block->free[i], &block->free[i + 1],
                (block->free_count - i - 1) * sizeof block->free[0]);
        block->free_count--;
    } else if (joins_left) {
        block->free[i - 1].size += size;
    } else if (joins_right) {
        block->free[i].offset = offset;
        block->free[i].size += size;
    } else {
        /* Room is reserved at block creation: a block of n granules never
         * has more than its capacity of separate free extents. */
        memmove(&block->free[i + 1], &block->free[i],
                (block->free_count - i) * sizeof block->free[0]);
        block->free[i] = (extent){.offset = offset, .size = size};
        block->free_count++;
    }
}

/* Frees block `b` (owned, empty, no opener). */
static void block_free(cuda_backend *c, uint32_t b)
{
    device_block *block = &c->blocks[b];
    rm_cuda_block_row *row = &c->table.blocks[b];
    atomic_store_explicit(&row->live, 0, memory_order_release);
    atomic_store_explicit(&row->wanted, 0, memory_order_relaxed);
    if (!block->borrowed) {
        (void)rm_cuda_driver_mem_free(c->driver, block->ordinal, block->base, NULL);
        c->block_bytes_held -= block->size;
        c->stats->cuda_blocks--;
        c->stats->cuda_block_bytes -= block->size;
    }
    free(block->free);
    *block = (device_block){0};
}

static bool block_unused(cuda_backend *c, uint32_t b)
{
    return c->blocks[b].live && c->blocks[b].tensors == 0 &&
           atomic_load_explicit(&c->table.blocks[b].openers, memory_order_acquire) == 0;
}

/* Frees empty blocks nobody has open; asks importers to close the others.
 * Returns the bytes freed. */
static uint64_t free_empty_blocks(cuda_backend *c, uint64_t *blocks_freed)
{
    uint64_t bytes = 0;
    for (uint32_t b = 0; b < c->block_count; b++) {
        device_block *block = &c->blocks[b];
        if (!block->live || block->borrowed || block->tensors != 0)
            continue;
        if (block_unused(c, b)) {
            bytes += block->size;
            block_free(c, b);
            if (blocks_freed != NULL)
                (*blocks_freed)++;
        } else {
            atomic_store_explicit(&c->table.blocks[b].wanted, 1, memory_order_release);
        }
    }
    return bytes;
}

static int32_t free_row(cuda_backend *c, uint32_t *out)
{
    for (uint32_t b = 0; b < c->block_count; b++) {
        if (!c->blocks[b].live) {
            *out = b;
            return RM_OK;
        }
    }
    if (c->block_count < c->block_capacity) {
        *out = c->block_count++;
        return RM_OK;
    }
    return rm_error_set(c->env.error_owner, RM_E_NO_MEMORY,
                        "all %u device blocks of table %s are in use (raise "
                        "cuda.block_bytes)",
                        c->block_capacity, c->table_name);
}

/* Publishes row `b` for importers: contents first, then live. */
static void publish_row(cuda_backend *c, uint32_t b, const CUipcMemHandle *handle,
                        uint32_t flags)
{
    device_block *block = &c->blocks[b];
    rm_cuda_block_row *row = &c->table.blocks[b];
    row->size = block->size;
    row->owner_address = block->base;
    uuid_of(c, block->ordinal, row->uuid);
    row->handle_kind = RM_CUDA_HANDLE_LEGACY_IPC;
    row->flags = flags;
    memcpy(row->handle, handle->reserved, sizeof row->handle);
    atomic_store_explicit(&row->openers, 0, memory_order_relaxed);
    atomic_store_explicit(&row->wanted, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&row->generation, 1, memory_order_relaxed);
    atomic_store_explicit(&row->live, 1, memory_order_release);
}

/* A new exportable block of at least `size` bytes on `ordinal`. */
static int32_t new_block(cuda_backend *c, int32_t ordinal, uint64_t size, uint32_t *out)
{
    uint64_t bytes = size > c->block_bytes ? round_up(size, BLOCK_GRANULE) : c->block_bytes;
    if (bytes > c->pool_bytes - c->block_bytes_held) {
        /* Dead importers may hold what would make room, and empty blocks
         * may be freed: both before the budget says no. */
        drop_dead_holders(&c->control, &c->table, c->block_count, c->never_used, NULL);
        cuda_collect(&c->base);
        free_empty_blocks(c, NULL);
        if (bytes > c->pool_bytes - c->block_bytes_held)
            return rm_error_set(c->env.error_owner, RM_E_NO_MEMORY,
                                "cuda.pool_bytes of %" PRIu64 " bytes exceeded: blocks hold %" PRIu64
                                " bytes, a block of %" PRIu64 " is needed (empty blocks that "
                                "importers still have open were asked back)",
                                c->pool_bytes, c->block_bytes_held, bytes);
    }
    uint32_t b = 0;
    int32_t rc = free_row(c, &b);
    if (rc != RM_OK)
        return rc;
    uint32_t granules = (uint32_t)(bytes / DEVICE_ALIGNMENT);
    uint32_t capacity = granules / 2 + 2;
    extent *free_list = malloc(capacity * sizeof *free_list);
    if (free_list == NULL)
        return rm_error_set(c->env.error_owner, RM_E_NO_MEMORY, "no memory for a device block");
    CUdeviceptr base = 0;
    rc = rm_cuda_driver_mem_alloc(c->driver, ordinal, (size_t)bytes, &base, c->env.error_owner);
    if (rc != RM_OK) {
        free(free_list);
        return rc;
    }
    CUipcMemHandle handle;
    rc = rm_cuda_driver_ipc_get_mem_handle(c->driver, ordinal, base, &handle,
                                           c->env.error_owner);
    if (rc != RM_OK) {
        (void)rm_cuda_driver_mem_free(c->driver, ordinal, base, NULL);
        free(free_list);
        return rc;
    }
    c->blocks[b] = (device_block){.base = base,
                                  .size = bytes,
                                  .ordinal = ordinal,
                                  .live = true,
                                  .free = free_list,
                                  .free_count = 1,
                                  .free_capacity = capacity};
    free_list[0] = (extent){.offset = 0, .size = bytes};
    publish_row(c, b, &handle, 0);
    c->block_bytes_held += bytes;
    c->stats->cuda_blocks++;
    c->stats->cuda_block_bytes += bytes;
    *out = b;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Slots                                                                    */
/* ------------------------------------------------------------------------ */

static int32_t take_slot(cuda_backend *c, uint32_t *out)
{
    if (c->free_head != UINT32_MAX) {
        *out = c->free_head;
        c->free_head = c->slots[*out].next_free;
        return RM_OK;
    }
    if (c->never_used < c->slot_count) {
        *out = c->never_used++;
        return RM_OK;
    }
    return rm_error_set(c->env.error_owner, RM_E_QUOTA_EXCEEDED,
                        "shm.max_tensors: all %u device tensor slots of table %s are live",
                        c->slot_count, c->table_name);
}

static void return_slot(cuda_backend *c, uint32_t index)
{
    c->slots[index].next_free = c->free_head;
    c->free_head = index;
}

/* Makes slot `index` live for the tensor at `offset` of block `b`. */
static void publish_slot(cuda_backend *c, uint32_t index, uint32_t b, rm_descriptor *where)
{
    device_slot *slot = &c->slots[index];
    rm_cuda_slot_row *row = &c->table.slots[index];
    uint32_t generation = slot->generation + 1;
    if (generation == 0)
        generation = 1;
    slot->generation = generation;
    slot->live = true;
    slot->local_holds = 1;
    atomic_store_explicit(&row->block, b, memory_order_relaxed);
    atomic_store_explicit(&row->block_generation,
                          atomic_load_explicit(&c->table.blocks[b].generation,
                                               memory_order_relaxed),
                          memory_order_relaxed);
    where->kind = RM_DESCRIPTOR_KIND_CUDA_IPC;
    where->pool_id = c->pool_id;
    where->slot = index;
    where->generation = generation;
    where->owner_pid = (uint32_t)getpid();
    where->owner_start_time = c->owner_start_time;
    where->offset = slot->offset;
    rm_control_publish(&c->control, index, generation, where);
    c->blocks[b].tensors++;
}

/* Frees slot `index` if it is live and nobody holds it (the shared state
 * is re-read: a pending mark is a hint, never trusted). */
static void free_slot_if_dead(cuda_backend *c, uint32_t index)
{
    if (index >= c->slot_count)
        return;
    device_slot *slot = &c->slots[index];
    if (!slot->live || slot->local_holds != 0)
        return;
    uint64_t state = atomic_load_explicit(&c->control.slots[index].state, memory_order_acquire);
    if (rm_control_mask(state) != 0 || rm_control_generation(state) != slot->generation)
        return;
    device_block *block = &c->blocks[slot->block];
    if (!block->borrowed)
        extent_give(block, slot->offset, slot->extent_size);
    block->tensors--;
    rm_tensors_uncharge(c->env.tensors, slot->session, slot->charge);
    c->stats->cuda_tensors--;
    c->stats->cuda_bytes -= slot->nbytes;
    c->stats->frees++;
    if (slot->released != NULL)
        rm_tensors_call_later(c->env.tensors, slot->released, slot->released_user,
                              slot->released_pointer);
    slot->released = NULL;
    slot->live = false;
    if (block->borrowed && block->tensors == 0)
        block_free(c, slot->block);
    return_slot(c, index);
    publish_figures(c);
}

static void free_pending_slot(void *user, uint32_t index)
{
    cuda_backend *c = user;
    uint64_t before = c->stats->frees;
    free_slot_if_dead(c, index);
    c->stats->remote_releases += c->stats->frees - before;
}

static void cuda_collect(rm_mem_backend *backend)
{
    cuda_backend *c = (cuda_backend *)backend;
    if (c->table_made && rm_control_has_pending(&c->control))
        rm_control_take_pending(&c->control, free_pending_slot, c);
}

/* ------------------------------------------------------------------------ */
/* Owner: allocate, wrap, release                                           */
/* ------------------------------------------------------------------------ */

static int32_t ready(cuda_backend *c, int32_t ordinal)
{
    int32_t rc = need_driver(c);
    if (rc != RM_OK)
        return rc;
    if (ordinal < 0 || ordinal >= rm_cuda_driver_device_count(c->driver))
        return rm_error_set(c->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "device cuda:%d does not exist here: this process sees %d CUDA "
                            "device(s) (CUDA_VISIBLE_DEVICES applies)",
                            ordinal, rm_cuda_driver_device_count(c->driver));
    (void)sweep_limbo();
    return make_table(c);
}

static int32_t cuda_allocate(rm_mem_backend *backend, rm_descriptor *where,
                             uint64_t alignment, rm_mem_block *block)
{
    cuda_backend *c = (cuda_backend *)backend;
    int32_t ordinal = block->device;
    int32_t rc = ready(c, ordinal);
    if (rc != RM_OK)
        return rc;
    uint64_t align = alignment < DEVICE_ALIGNMENT ? DEVICE_ALIGNMENT : alignment;
    uint64_t size = round_up(where->nbytes == 0 ? 1 : where->nbytes, DEVICE_ALIGNMENT);
    uint32_t index = 0;
    rc = take_slot(c, &index);
    if (rc != RM_OK)
        return rc;
    uint64_t offset = 0;
    uint32_t b = UINT32_MAX;
    /* Blocks asked back (`wanted`) are used only when no other block has
     * room: they drain meanwhile; taking one again cancels the request. */
    for (int pass = 0; pass < 2 && b == UINT32_MAX; pass++) {
        for (uint32_t i = 0; i < c->block_count && b == UINT32_MAX; i++) {
            device_block *candidate = &c->blocks[i];
            bool wanted =
                atomic_load_explicit(&c->table.blocks[i].wanted, memory_order_relaxed) != 0;
            if (candidate->live && !candidate->borrowed && candidate->ordinal == ordinal &&
                wanted == (pass == 1) && extent_take(candidate, size, align, &offset)) {
                b = i;
                if (wanted)
                    atomic_store_explicit(&c->table.blocks[i].wanted, 0, memory_order_release);
            }
        }
    }
    if (b == UINT32_MAX) {
        rc = new_block(c, ordinal, size, &b);
        if (rc == RM_OK && !extent_take(&c->blocks[b], size, align, &offset))
            rc = rm_error_set(c->env.error_owner, RM_E_SYSTEM,
                              "a new device block has no room for its first tensor");
        if (rc != RM_OK) {
            return_slot(c, index);
            return rc;
        }
    }
    rc = rm_tensors_charge(c->env.tensors, where->session, where->nbytes);
    if (rc != RM_OK) {
        extent_give(&c->blocks[b], offset, size);
        return_slot(c, index);
        return rc;
    }
    device_slot *slot = &c->slots[index];
    slot->block = b;
    slot->offset = offset;
    slot->extent_size = size;
    slot->nbytes = where->nbytes;
    slot->charge = where->nbytes;
    slot->session = where->session;
    slot->released = NULL;
    publish_slot(c, index, b, where);
    c->stats->cuda_tensors++;
    c->stats->cuda_bytes += where->nbytes;
    publish_figures(c);
    block->data = (void *)(uintptr_t)(c->blocks[b].base + offset);
    block->flags = RM_TENSOR_WRITABLE | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED;
    block->home = NULL;
    block->charged = 0;
    return RM_OK;
}

int32_t rm_cuda_backend_wrap(rm_mem_backend *backend, rm_descriptor *where, void *pointer,
                             int32_t ordinal, rm_device_released_fn released, void *user,
                             rm_mem_block *block)
{
    cuda_backend *c = (cuda_backend *)backend;
    int32_t rc = ready(c, ordinal);
    if (rc != RM_OK)
        return rc;
    CUdeviceptr address = (CUdeviceptr)(uintptr_t)pointer;
    int32_t found = -1;
    rc = rm_cuda_driver_pointer_ordinal(c->driver, address, &found, c->env.error_owner);
    if (rc != RM_OK)
        return rc;
    if (found != ordinal)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "pointer 0x%llx is memory of cuda:%d, the spec says cuda:%d",
                            (unsigned long long)address, found, ordinal);
    CUdeviceptr base = 0;
    size_t size = 0;
    rc = rm_cuda_driver_mem_address_range(c->driver, ordinal, address, &base, &size,
                                          c->env.error_owner);
    if (rc != RM_OK)
        return rc;
    uint64_t offset = address - base;
    if (where->nbytes > size - offset)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "the tensor's %" PRIu64 " bytes at offset %" PRIu64
                            " run past the end of its allocation (%zu bytes)",
                            where->nbytes, offset, size);
    uint32_t index = 0;
    rc = take_slot(c, &index);
    if (rc != RM_OK)
        return rc;
    /* One row per host allocation: every wrap of it shares the handle. */
    uint32_t b = UINT32_MAX;
    for (uint32_t i = 0; i < c->block_count; i++)
        if (c->blocks[i].live && c->blocks[i].borrowed && c->blocks[i].base == base &&
            c->blocks[i].size == size && c->blocks[i].ordinal == ordinal)
            b = i;
    if (b == UINT32_MAX) {
        rc = free_row(c, &b);
        CUipcMemHandle handle;
        if (rc == RM_OK) {
            rc = rm_cuda_driver_ipc_get_mem_handle(c->driver, ordinal, base, &handle,
                                                   c->env.error_owner);
            if (rc == RM_E_INVALID_ARGUMENT) {
                char why[RM_ERROR_MESSAGE_MAX];
                snprintf(why, sizeof why, "%s", rm_error_last(c->env.error_owner));
                rc = rm_error_set(c->env.error_owner, RM_E_NOT_SHAREABLE,
                                  "the driver cannot export the allocation at 0x%llx (only "
                                  "cuMemAlloc memory has a legacy IPC handle): %s",
                                  (unsigned long long)base, why);
            }
        }
        if (rc != RM_OK) {
            return_slot(c, index);
            return rc;
        }
        c->blocks[b] = (device_block){
            .base = base, .size = size, .ordinal = ordinal, .live = true, .borrowed = true};
        publish_row(c, b, &handle, RM_CUDA_BLOCK_BORROWED);
    }
    device_slot *slot = &c->slots[index];
    slot->block = b;
    slot->offset = offset;
    slot->extent_size = 0;
    slot->nbytes = where->nbytes;
    slot->charge = 0;
    slot->session = where->session;
    slot->released = released;
    slot->released_user = user;
    slot->released_pointer = pointer;
    publish_slot(c, index, b, where);
    c->stats->cuda_tensors++;
    c->stats->cuda_bytes += where->nbytes;
    publish_figures(c);
    block->data = pointer;
    block->flags = RM_TENSOR_WRITABLE | RM_TENSOR_SHAREABLE | RM_TENSOR_OWNED;
    block->home = NULL;
    block->charged = 0;
    block->device = ordinal;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Importer: views                                                          */
/* ------------------------------------------------------------------------ */

/* The process's mapping of `handle` on `ordinal`: a use of an open one,
 * or a new open. *opened says which. */
static int32_t mapping_acquire(cuda_backend *c, const uint8_t *handle_bytes, int32_t ordinal,
                               CUdeviceptr *base, bool *opened)
{
    *opened = false;
    pthread_mutex_lock(&mappings_lock);
    for (process_mapping *m = mappings; m != NULL; m = m->next) {
        if (m->driver == c->driver && m->ordinal == ordinal &&
            memcmp(m->handle, handle_bytes, CU_IPC_HANDLE_SIZE) == 0) {
            m->users++;
            *base = m->base;
            pthread_mutex_unlock(&mappings_lock);
            return RM_OK;
        }
    }
    process_mapping *m = calloc(1, sizeof *m);
    int32_t rc = RM_OK;
    if (m == NULL) {
        rc = rm_error_set(c->env.error_owner, RM_E_NO_MEMORY, "no memory for an IPC mapping");
    } else {
        CUipcMemHandle handle;
        memcpy(handle.reserved, handle_bytes, sizeof handle.reserved);
        /* Under the lock: two contexts opening one handle at once must
         * not both open it. */
        rc = rm_cuda_driver_ipc_open_mem_handle(c->driver, ordinal, &handle, base,
                                                c->env.error_owner);
    }
    if (rc == RM_OK) {
        *m = (process_mapping){.next = mappings, .driver = c->driver, .ordinal = ordinal,
                               .base = *base, .users = 1};
        memcpy(m->handle, handle_bytes, CU_IPC_HANDLE_SIZE);
        mappings = m;
        *opened = true;
    } else {
        free(m);
    }
    pthread_mutex_unlock(&mappings_lock);
    return rc;
}

/* A view lets go of its use; the last one closes the handle. */
static void mapping_release(cuda_backend *c, int32_t ordinal, CUdeviceptr base)
{
    pthread_mutex_lock(&mappings_lock);
    for (process_mapping **at = &mappings; *at != NULL; at = &(*at)->next) {
        process_mapping *m = *at;
        if (m->driver != c->driver || m->ordinal != ordinal || m->base != base)
            continue;
        if (--m->users == 0) {
            *at = m->next;
            (void)rm_cuda_driver_ipc_close_mem_handle(c->driver, ordinal, base, NULL);
            free(m);
        }
        break;
    }
    pthread_mutex_unlock(&mappings_lock);
}

static void view_close_block(cuda_backend *c, cuda_view *view, uint32_t b)
{
    view_block *vb = &view->blocks[b];
    if (!vb->open)
        return;
    if (!view->same_process) {
        mapping_release(c, vb->ordinal, vb->base);
        c->stats->cuda_handles_open--;
        atomic_fetch_and_explicit(&view->table.blocks[b].openers,
                                  ~((uint32_t)1 << view->holder_index), memory_order_acq_rel);
    }
    vb->open = false;
    view->open_blocks--;
}

static void close_view(cuda_backend *c, cuda_view *view, bool release_holds)
{
    if (release_holds) {
        for (uint32_t b = 0; b < view->block_capacity; b++)
            view_close_block(c, view, b);
        uint32_t bit = (uint32_t)1 << view->holder_index;
        for (uint32_t s = 0; s < view->control.slot_count && view->holds > 0; s++) {
            if (view->slot_holds[s] == 0)
                continue;
            view->holds -= view->slot_holds[s];
            view->slot_holds[s] = 0;
            (void)rm_control_drop(&view->control, s, bit, true);
        }
        if (view->holder_index != 0)
            rm_control_release_holder(&view->control, view->holder_index);
        /* Opened events are the importer's to destroy (PyTorch leaked
         * them); not in a forked child, where CUDA must not be touched. */
        for (uint32_t s = 0; view->events != NULL && s < view->control.slot_count; s++)
            if (view->events[s].event != NULL)
                (void)rm_cuda_driver_event_destroy(c->driver, view->events[s].ordinal,
                                                   view->events[s].event, NULL);
    }
    if (view->table.header != NULL)
        munmap(view->table.header, view->table.mapped_bytes);
    rm_control_close(&view->control);
    if (view->owner_pidfd >= 0)
        close(view->owner_pidfd);
    pthread_mutex_destroy(&view->events_lock);
    free(view->events);
    free(view->slot_holds);
    free(view->slot_blocks);
    free(view->blocks);
    free(view);
}

/* The exporting process is still the one the view was opened for. */
static bool owner_alive(const cuda_view *view)
{
    if (view->owner_pidfd >= 0) {
        struct pollfd exited = {.fd = view->owner_pidfd, .events = POLLIN};
        return poll(&exited, 1, 0) == 0;
    }
    return rm_process_alive((pid_t)view->owner_pid, view->owner_start_time);
}

static void forget_view(cuda_backend *c, cuda_view *view)
{
    for (size_t i = 0; i < c->view_count; i++) {
        if (c->views[i] == view) {
            c->views[i] = c->views[--c->view_count];
            break;
        }
    }
    close_view(c, view, true);
}

static int32_t map_table(cuda_backend *c, cuda_view *view, const rm_descriptor *d)
{
    uint64_t size = 0;
    int fd = rm_segment_open_owned(view->table_name, true, S_IRUSR | S_IWUSR, &size);
    if (fd < 0)
        return rm_error_set(c->env.error_owner, rm_pool_segment_error_code(errno),
                            "device table %s cannot be opened: %s", view->table_name,
                            strerror(errno));
    int32_t rc = RM_OK;
    if (size < RM_CUDA_TABLE_HEADER_BYTES ||
        size > rm_cuda_table_size(RM_CUDA_BLOCKS_LIMIT, RM_SHM_SLOTS_LIMIT)) {
        rc = rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                          "device table %s has an impossible size (%" PRIu64 " bytes)",
                          view->table_name, size);
    } else {
        void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            rc = rm_error_set(c->env.error_owner, RM_E_SYSTEM, "mmap() of %s failed: %s",
                              view->table_name, strerror(errno));
        else
            view->table.header = base, view->table.mapped_bytes = (size_t)size;
    }
    close(fd);
    if (rc != RM_OK)
        return rc;
    const rm_cuda_table_header *header = view->table.header;
    uint32_t capacity = header->block_capacity;
    if (header->magic != RM_CUDA_TABLE_MAGIC ||
        header->layout_version != RM_CUDA_TABLE_LAYOUT_VERSION)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "%s is not a device table of this plugin version (0.4)",
                            view->table_name);
    if (header->pool_id != d->pool_id || header->owner_pid != d->owner_pid ||
        header->slot_count != view->control.slot_count || capacity == 0 ||
        capacity > RM_CUDA_BLOCKS_LIMIT ||
        rm_cuda_table_size(capacity, header->slot_count) != size)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "device table %s does not match its control segment or the "
                            "descriptor",
                            view->table_name);
    if (header->owner_start_time != d->owner_start_time)
        return rm_shm_owner_changed(c->env.error_owner, view->table_name,
                                    header->owner_start_time, d->owner_start_time);
    rm_cuda_table_lay_out(&view->table, view->table.header, (size_t)size, capacity);
    view->block_capacity = capacity;
    return RM_OK;
}

static int32_t open_view(cuda_backend *c, const rm_descriptor *d, cuda_view **out)
{
    for (size_t i = 0; i < c->view_count; i++) {
        cuda_view *view = c->views[i];
        if (view->pool_id == d->pool_id && view->owner_pid == d->owner_pid) {
            if (view->owner_start_time != d->owner_start_time)
                return rm_shm_owner_changed(c->env.error_owner, view->table_name,
                                            view->owner_start_time, d->owner_start_time);
            *out = view;
            return RM_OK;
        }
    }
    if (c->view_count == c->view_capacity) {
        size_t grown = c->view_capacity == 0 ? 4 : 2 * c->view_capacity;
        cuda_view **bigger = realloc(c->views, grown * sizeof *bigger);
        if (bigger == NULL)
            return rm_error_set(c->env.error_owner, RM_E_NO_MEMORY, "no memory for a view");
        c->views = bigger;
        c->view_capacity = grown;
    }
    cuda_view *view = calloc(1, sizeof *view);
    if (view == NULL)
        return rm_error_set(c->env.error_owner, RM_E_NO_MEMORY, "no memory for a view");
    view->pool_id = d->pool_id;
    view->owner_pid = d->owner_pid;
    view->owner_start_time = d->owner_start_time;
    view->same_process = d->owner_pid == (uint32_t)getpid() &&
                         d->owner_start_time == rm_process_self_start_time();
    view->owner_pidfd = -1;
    (void)pthread_mutex_init(&view->events_lock, NULL);
    int32_t rc = RM_E_STALE_DESCRIPTOR;
    if (rm_segment_name_format(view->table_name, RM_SEGMENT_CUDA_TABLE, c->namespace_name,
                               (pid_t)d->owner_pid, d->pool_id) &&
        rm_segment_name_format(view->control_name, RM_SEGMENT_CUDA_CONTROL, c->namespace_name,
                               (pid_t)d->owner_pid, d->pool_id))
        rc = rm_control_open(view->control_name, c->env.error_owner, &view->control);
    if (rc == RM_E_STALE_DESCRIPTOR)
        rc = rm_error_set(c->env.error_owner, RM_E_STALE_DESCRIPTOR,
                          "device table %" PRIx64 " of pid %" PRIu32 " is not in namespace "
                          "'%s' (its context was destroyed, its process died, or another "
                          "namespace)",
                          d->pool_id, d->owner_pid, c->namespace_name);
    if (rc == RM_OK && (view->control.header->pool_id != d->pool_id ||
                        view->control.header->owner_pid != d->owner_pid))
        rc = rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                          "control segment %s names another table or owner",
                          view->control_name);
    if (rc == RM_OK)
        rc = map_table(c, view, d);
    if (rc == RM_OK) {
        view->slot_holds = calloc(view->control.slot_count, sizeof *view->slot_holds);
        view->slot_blocks = calloc(view->control.slot_count, sizeof *view->slot_blocks);
        view->blocks = calloc(view->block_capacity, sizeof *view->blocks);
        if (view->slot_holds == NULL || view->slot_blocks == NULL || view->blocks == NULL)
            rc = rm_error_set(c->env.error_owner, RM_E_NO_MEMORY, "no memory for a view");
    }
    if (rc == RM_OK && !view->same_process) {
        /* Opened, then checked: a pidfd of a process that reused the pid
         * would be of the wrong process. */
        view->owner_pidfd = (int)syscall(SYS_pidfd_open, (pid_t)d->owner_pid, 0);
        if (!rm_process_alive((pid_t)d->owner_pid, d->owner_start_time))
            rc = rm_error_set(c->env.error_owner, RM_E_STALE_DESCRIPTOR,
                              "the exporting process %u died; its device memory is gone",
                              d->owner_pid);
    }
    if (rc == RM_OK) {
        view->holder_index = rm_control_claim_holder(&view->control);
        if (view->holder_index == 0)
            rc = rm_error_set(c->env.error_owner, RM_E_QUOTA_EXCEEDED,
                              "device table %s already has %d importing contexts "
                              "(RM_TENSOR_MAX_HOLDERS)",
                              view->table_name, RM_TENSOR_MAX_HOLDERS);
    }
    if (rc != RM_OK) {
        close_view(c, view, false);
        return rc;
    }
    c->views[c->view_count++] = view;
    *out = view;
    return RM_OK;
}

/* The block row of a held slot, checked: every index read from shared
 * memory is bounded before use. */
static int32_t held_block(cuda_backend *c, cuda_view *view, const rm_descriptor *d,
                          uint32_t *out)
{
    const rm_cuda_slot_row *slot_row = &view->table.slots[d->slot];
    uint32_t b = atomic_load_explicit(&slot_row->block, memory_order_acquire);
    if (b >= view->block_capacity)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "slot %u of device table %s names block %u of %u", d->slot,
                            view->table_name, b, view->block_capacity);
    const rm_cuda_block_row *row = &view->table.blocks[b];
    if (atomic_load_explicit(&row->live, memory_order_acquire) == 0 ||
        atomic_load_explicit(&row->generation, memory_order_acquire) !=
            atomic_load_explicit(&slot_row->block_generation, memory_order_acquire))
        return rm_error_set(c->env.error_owner, RM_E_STALE_DESCRIPTOR,
                            "the block of slot %u of device table %s is gone", d->slot,
                            view->table_name);
    if (row->handle_kind != RM_CUDA_HANDLE_LEGACY_IPC)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "block %u of device table %s has handle kind %u (this plugin "
                            "opens legacy IPC handles, kind 1)",
                            b, view->table_name, row->handle_kind);
    if (d->offset > row->size || d->nbytes > row->size - d->offset)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "extent (offset %" PRIu64 ", %" PRIu64 " bytes) lies outside "
                            "its device block (%" PRIu64 " bytes)",
                            d->offset, d->nbytes, row->size);
    *out = b;
    return RM_OK;
}

/* The block's address in this process: the owner's own pointer for
 * another context of the owner's process, else its handle, opened once. */
static int32_t open_block(cuda_backend *c, cuda_view *view, uint32_t b)
{
    const rm_cuda_block_row *row = &view->table.blocks[b];
    uint32_t generation = atomic_load_explicit(&row->generation, memory_order_acquire);
    view_block *vb = &view->blocks[b];
    int32_t rc = need_driver(c);
    if (rc != RM_OK)
        return rc;
    if (vb->open && vb->generation == generation) {
        c->stats->cuda_handle_cache_hits++;
        return RM_OK;
    }
    if (vb->open && vb->holds != 0)
        /* The owner reuses a row only when nobody holds a tensor of it:
         * tensors of the open block are still held here, so the row was
         * written by someone else. Closing would pull their memory. */
        return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "block %u of device table %s changed while tensors of it are held",
                            b, view->table_name);
    if (vb->open)
        view_close_block(c, view, b); /* the row was reused: the old handle is dead */
    int ordinal = 0;
    rc = rm_cuda_driver_ordinal_of_uuid(c->driver, row->uuid, &ordinal,
                                                c->env.error_owner);
    if (rc == RM_E_NOT_FOUND) {
        char text[41];
        rm_cuda_uuid_format(row->uuid, text);
        return rm_error_set(c->env.error_owner, RM_E_DEVICE_UNAVAILABLE,
                            "the tensor is on device %s, which this process does not see "
                            "(CUDA_VISIBLE_DEVICES)",
                            text);
    }
    if (rc != RM_OK)
        return rc;
    CUdeviceptr base = row->owner_address;
    if (!view->same_process) {
        uint32_t bit = (uint32_t)1 << view->holder_index;
        atomic_fetch_or_explicit(&view->table.blocks[b].openers, bit, memory_order_acq_rel);
        bool opened = false;
        rc = mapping_acquire(c, row->handle, ordinal, &base, &opened);
        if (rc != RM_OK) {
            atomic_fetch_and_explicit(&view->table.blocks[b].openers, ~bit,
                                      memory_order_acq_rel);
            if (!owner_alive(view))
                return rm_error_set(c->env.error_owner, RM_E_STALE_DESCRIPTOR,
                                    "the exporting process %u died; its device memory is "
                                    "gone",
                                    view->owner_pid);
            return rc;
        }
        if (opened)
            c->stats->cuda_handles_opened++;
        else
            c->stats->cuda_handle_cache_hits++; /* another context's open */
        c->stats->cuda_handles_open++;
    }
    /* The row's size and (same process) address are only what the table
     * says: the extent is checked against what the driver has there. */
    CUdeviceptr found = 0;
    size_t found_size = 0;
    rc = rm_cuda_driver_mem_address_range(c->driver, ordinal, base, &found, &found_size,
                                          c->env.error_owner);
    if (rc != RM_OK && !view->same_process) {
        /* Whether every driver answers for an IPC mapping is for a GPU to
         * show; if one does not, the mapping is the handle's whole
         * allocation and the row's size is the exporter's word for it. */
        found = base;
        found_size = (size_t)row->size;
        rc = RM_OK;
    }
    if (rc != RM_OK || found != base) {
        if (!view->same_process) {
            mapping_release(c, ordinal, base);
            c->stats->cuda_handles_open--;
            atomic_fetch_and_explicit(&view->table.blocks[b].openers,
                                      ~((uint32_t)1 << view->holder_index),
                                      memory_order_acq_rel);
        }
        return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "block %u of device table %s names no device allocation of its "
                            "own here (address 0x%llx)",
                            b, view->table_name, (unsigned long long)base);
    }
    *vb = (view_block){.generation = generation, .base = base, .size = found_size,
                       .ordinal = ordinal, .holds = 0, .open = true};
    view->open_blocks++;
    return RM_OK;
}

static int32_t cuda_import(rm_mem_backend *backend, rm_descriptor *d, const uint8_t *bytes,
                           uint64_t size, bool writable, rm_mem_block *block)
{
    (void)bytes;
    (void)size;
    cuda_backend *c = (cuda_backend *)backend;
    /* The descriptor is checked against the exporter's table before the
     * driver is needed: a forged or stale one is a descriptor error on a
     * machine without a GPU too. */
    (void)sweep_limbo();
    cuda_view *view = NULL;
    int32_t rc = open_view(c, d, &view);
    if (rc != RM_OK)
        return rc;
    if (rm_control_retired(&view->control))
        return rm_error_set(c->env.error_owner, RM_E_STALE_DESCRIPTOR,
                            "the context that exported into device table %s was destroyed",
                            view->table_name);
    /* A block whose handle is cached needs no driver call, so nothing else
     * would notice that the exporter died and the driver freed its memory. */
    if (!view->same_process && !owner_alive(view))
        return rm_error_set(c->env.error_owner, RM_E_STALE_DESCRIPTOR,
                            "the exporting process %u died; its device memory is gone",
                            view->owner_pid);
    uint32_t held = d->slot < view->control.slot_count ? view->slot_holds[d->slot] : 0;
    uint32_t bit = (uint32_t)1 << view->holder_index;
    bool freed = false;
    rc = rm_shm_hold_slot(c->env.error_owner, &view->control, d, held, bit, view->table_name,
                          &freed);
    if (rc != RM_OK)
        return rc;
    uint32_t b = 0;
    rc = held_block(c, view, d, &b);
    if (rc == RM_OK && held != 0 && view->slot_blocks[d->slot] != b)
        rc = rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                          "slot %u of device table %s names block %u, but its tensor held "
                          "here is in block %u",
                          d->slot, view->table_name, b, view->slot_blocks[d->slot]);
    if (rc == RM_OK)
        rc = open_block(c, view, b);
    if (rc == RM_OK &&
        (d->offset > view->blocks[b].size || d->nbytes > view->blocks[b].size - d->offset))
        rc = rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                          "extent (offset %" PRIu64 ", %" PRIu64 " bytes) lies outside the "
                          "device allocation of its block (%" PRIu64 " bytes)",
                          d->offset, d->nbytes, view->blocks[b].size);
    if (rc != RM_OK) {
        if (held == 0)
            (void)rm_control_drop(&view->control, d->slot, bit, true);
        return rc;
    }
    view->slot_holds[d->slot]++;
    view->slot_blocks[d->slot] = b;
    view->blocks[b].holds++;
    view->holds++;
    block->home = view;
    block->device = view->blocks[b].ordinal;
    block->data = (void *)(uintptr_t)(view->blocks[b].base + d->offset);
    block->flags = (writable ? RM_TENSOR_WRITABLE : 0) | RM_TENSOR_SHAREABLE;
    block->charged = 0;
    return RM_OK;
}

/* Block `b` is open here, unheld, and must not stay open: borrowed, asked
 * back, reused, or of a gone exporter. */
static bool block_unwanted(const cuda_view *view, uint32_t b, bool owner_gone)
{
    const view_block *vb = &view->blocks[b];
    if (!vb->open || vb->holds != 0)
        return false;
    const rm_cuda_block_row *row = &view->table.blocks[b];
    return owner_gone || (row->flags & RM_CUDA_BLOCK_BORROWED) != 0 ||
           atomic_load_explicit(&row->wanted, memory_order_acquire) != 0 ||
           atomic_load_explicit(&row->generation, memory_order_acquire) != vb->generation;
}

/* Every unwanted block of a view, and unheld ones beyond the cache's size
 * (VIEW_CACHED_BLOCKS_MAX). A scan of the view's block rows: for reclaim,
 * and for a release that finds the cache full. */
static void close_unwanted(cuda_backend *c, cuda_view *view, bool owner_gone)
{
    uint32_t cached = 0;
    for (uint32_t b = 0; b < view->block_capacity && view->open_blocks > 0; b++) {
        view_block *vb = &view->blocks[b];
        if (!vb->open || vb->holds != 0)
            continue;
        if (block_unwanted(view, b, owner_gone) || ++cached > VIEW_CACHED_BLOCKS_MAX)
            view_close_block(c, view, b);
    }
}

static void cuda_release(rm_mem_backend *backend, rm_mem_block *block)
{
    cuda_backend *c = (cuda_backend *)backend;
    uint32_t index = block->where.slot;
    cuda_view *view = block->home;
    if (view == NULL) {
        device_slot *slot = &c->slots[index];
        if (--slot->local_holds == 0 &&
            rm_control_drop(&c->control, index, RM_CONTROL_OWNER_BIT, false))
            free_slot_if_dead(c, index);
        return;
    }
    /* The block the tensor was imported from, not what the shared row
     * says now: another process may have written it. */
    uint32_t b = view->slot_blocks[index];
    if (b < view->block_capacity && view->blocks[b].holds > 0)
        view->blocks[b].holds--;
    view->holds--;
    bool last = --view->slot_holds[index] == 0;
    bool retired = rm_control_retired(&view->control);
    /* Closed before the hold goes: once the slot is free the owner may
     * hand a borrowed block back to the host, which may free it. */
    if (last && b < view->block_capacity && view->blocks[b].holds == 0) {
        /* The common release looks at its own block only: a scan of
         * every row on each release cost microseconds. */
        if (block_unwanted(view, b, retired))
            view_close_block(c, view, b);
        else if (view->open_blocks > VIEW_CACHED_BLOCKS_MAX)
            close_unwanted(c, view, retired);
    }
    if (last)
        (void)rm_control_drop(&view->control, index, (uint32_t)1 << view->holder_index, true);
    if (view->holds == 0 && retired)
        forget_view(c, view);
}

static void cuda_drop_in_child(rm_mem_backend *backend, rm_mem_block *block)
{
    (void)backend;
    (void)block;
}

/* ------------------------------------------------------------------------ */
/* Device operations                                                        */
/* ------------------------------------------------------------------------ */

static rm_dl_device cuda_describe_device(const rm_mem_backend *backend,
                                         const rm_mem_block *block)
{
    (void)backend;
    return (rm_dl_device){.device_type = 2 /* kDLCUDA */, .device_id = block->device};
}

static void cuda_device_uuid(const rm_mem_backend *backend, const rm_mem_block *block,
                             uint8_t uuid[16])
{
    const cuda_backend *c = (const cuda_backend *)backend;
    if (c->driver == NULL ||
        rm_cuda_driver_device_uuid(c->driver, block->device, uuid, NULL) != RM_OK)
        memset(uuid, 0, 16);
}

static int32_t cuda_zero(rm_mem_backend *backend, const rm_mem_block *block)
{
    cuda_backend *c = (cuda_backend *)backend;
    if (block->where.nbytes == 0)
        return RM_OK;
    return rm_cuda_driver_memset_d8(c->driver, block->device,
                                    (CUdeviceptr)(uintptr_t)block->data, 0,
                                    (size_t)block->where.nbytes, c->env.error_owner);
}

/* Lock held (tensor.c): the slot's event is made once and kept. */
static int32_t cuda_record(rm_mem_backend *backend, rm_mem_block *block, void *stream)
{
    cuda_backend *c = (cuda_backend *)backend;
    if (block->home != NULL || (block->flags & RM_TENSOR_OWNED) == 0)
        return rm_error_set(c->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "tensor_record: only the context that allocated or wrapped a "
                            "device tensor records its writes");
    device_slot *slot = &c->slots[block->where.slot];
    rm_cuda_slot_row *row = &c->table.slots[block->where.slot];
    if (slot->event != NULL && slot->event_ordinal != block->device) {
        /* The slot's earlier tensor was on another device: an event is
         * recorded only on streams of its own device. Nobody holds the old
         * tensor any more (the slot was reused), so nobody waits on it. */
        atomic_store_explicit(&row->event_ready, 0, memory_order_release);
        event_forget(slot->event);
        (void)rm_cuda_driver_event_destroy(c->driver, slot->event_ordinal, slot->event, NULL);
        slot->event = NULL;
    }
    if (slot->event == NULL) {
        CUevent event = NULL;
        int32_t rc = rm_cuda_driver_event_create(
            c->driver, block->device, CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS, &event,
            c->env.error_owner);
        if (rc != RM_OK)
            return rc;
        CUipcEventHandle handle;
        rc = rm_cuda_driver_ipc_get_event_handle(c->driver, block->device, event, &handle,
                                                 c->env.error_owner);
        if (rc == RM_OK && !event_remember(event))
            rc = rm_error_set(c->env.error_owner, RM_E_NO_MEMORY, "no memory for an event");
        if (rc != RM_OK) {
            (void)rm_cuda_driver_event_destroy(c->driver, block->device, event, NULL);
            return rc;
        }
        slot->event = event;
        slot->event_ordinal = block->device;
        memcpy(row->event_handle, handle.reserved, sizeof row->event_handle);
        row->owner_event = (uint64_t)(uintptr_t)event;
        atomic_fetch_add_explicit(&row->event_generation, 1, memory_order_release);
        atomic_store_explicit(&row->event_ready, 1, memory_order_release);
    }
    return rm_cuda_driver_event_record(c->driver, slot->event_ordinal, slot->event,
                                       (CUstream)stream, c->env.error_owner);
}

static bool exporter_gone(const cuda_view *view)
{
    return rm_control_retired(&view->control) || (!view->same_process && !owner_alive(view));
}

static int32_t stale(cuda_backend *c, const cuda_view *view)
{
    return rm_error_set(c->env.error_owner, RM_E_STALE_DESCRIPTOR,
                        "the exporter of this device tensor (pid %u) died or destroyed its "
                        "context: its memory is gone or going",
                        view->owner_pid);
}

/* Slot `slot`'s event in this process: opened on the first wait and kept.
 * The exporter keeps a slot's event while anyone holds the slot (the
 * caller does), and makes a new one only for a new tensor on another
 * device, with a new generation: a cached event of an older generation is
 * destroyed and the new one opened. */
static int32_t opened_event(cuda_backend *c, cuda_view *view, uint32_t slot, int32_t ordinal,
                            CUevent *out)
{
    const rm_cuda_slot_row *row = &view->table.slots[slot];
    uint32_t generation = atomic_load_explicit(&row->event_generation, memory_order_acquire);
    int32_t rc = RM_OK;
    pthread_mutex_lock(&view->events_lock);
    if (view->events == NULL)
        view->events = calloc(view->control.slot_count, sizeof *view->events);
    if (view->events == NULL) {
        rc = rm_error_set(c->env.error_owner, RM_E_NO_MEMORY, "no memory for event handles");
    } else {
        view_event *cached = &view->events[slot];
        if (cached->event != NULL &&
            (cached->generation != generation || cached->ordinal != ordinal)) {
            (void)rm_cuda_driver_event_destroy(c->driver, cached->ordinal, cached->event, NULL);
            cached->event = NULL;
        }
        if (cached->event == NULL) {
            CUipcEventHandle handle;
            memcpy(handle.reserved, row->event_handle, sizeof handle.reserved);
            rc = rm_cuda_driver_ipc_open_event_handle(c->driver, ordinal, &handle,
                                                      &cached->event, c->env.error_owner);
            if (rc == RM_OK) {
                cached->generation = generation;
                cached->ordinal = ordinal;
            } else {
                cached->event = NULL;
            }
        }
        *out = cached->event;
    }
    pthread_mutex_unlock(&view->events_lock);
    return rc;
}

static int32_t cuda_wait(rm_mem_backend *backend, rm_mem_block *block, void *stream,
                         bool host)
{
    cuda_backend *c = (cuda_backend *)backend;
    cuda_view *view = block->home;
    const rm_cuda_slot_row *row =
        view != NULL ? &view->table.slots[block->where.slot] : &c->table.slots[block->where.slot];
    if (view != NULL && exporter_gone(view))
        return stale(c, view);
    if (atomic_load_explicit(&row->event_ready, memory_order_acquire) == 0)
        return RM_OK; /* never recorded: nothing to order */
    int32_t ordinal = block->device;
    CUevent event = NULL;
    if (view == NULL) {
        /* The owner's own tensor: its private record of the event, never
         * the shared row's copy. */
        event = c->slots[block->where.slot].event;
        if (event == NULL)
            return RM_OK;
    } else if (view->same_process) {
        event = (CUevent)(uintptr_t)row->owner_event;
        if (!event_known(event))
            return rm_error_set(c->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                                "slot %u of device table %s names an event this process does "
                                "not have: the table was written by someone else",
                                block->where.slot, view->table_name);
    } else {
        int32_t rc = opened_event(c, view, block->where.slot, ordinal, &event);
        if (rc != RM_OK)
            return exporter_gone(view) ? stale(c, view) : rc;
    }
    return host ? rm_cuda_driver_event_synchronize(c->driver, ordinal, event, c->env.error_owner)
                : rm_cuda_driver_stream_wait_event(c->driver, ordinal, (CUstream)stream, event,
                                                   c->env.error_owner);
}

static int32_t cuda_check_alive(rm_mem_backend *backend, const rm_mem_block *block)
{
    cuda_backend *c = (cuda_backend *)backend;
    const cuda_view *view = block->home;
    return view != NULL && exporter_gone(view) ? stale(c, view) : RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Context: create, destroy, upkeep                                         */
/* ------------------------------------------------------------------------ */

static int32_t cuda_create(const rm_mem_env *env, const rm_config *config,
                           rm_mem_backend **out)
{
    cuda_backend *c = calloc(1, sizeof *c);
    if (c == NULL)
        return rm_error_set(env->error_owner, RM_E_NO_MEMORY, "no memory for CUDA state");
    c->base.ops = &rm_cuda_backend;
    c->base.deferred = &nothing_pending;
    c->env = *env;
    c->stats = env->stats;
    memcpy(c->namespace_name, config->shm_namespace, sizeof c->namespace_name);
    memcpy(c->library, config->cuda_driver, sizeof c->library);
    c->pool_bytes = config->cuda_pool_bytes;
    c->block_bytes = round_up(config->cuda_block_bytes, BLOCK_GRANULE);
    c->slot_count = config->shm_max_tensors;
    uint64_t blocks = c->pool_bytes / BLOCK_GRANULE;
    c->block_capacity = blocks > RM_CUDA_BLOCKS_LIMIT ? RM_CUDA_BLOCKS_LIMIT : (uint32_t)blocks;
    /* No driver here: context creation never touches CUDA. Dead owners'
     * tables go as pools do. */
    (void)rm_shm_namespace_reap(&rm_cuda_table_family, c->namespace_name, NULL,
                                &c->stats->startup_segments_unlinked,
                                &c->stats->startup_bytes_unlinked);
    *out = &c->base;
    return RM_OK;
}

static bool own_table_in_use(cuda_backend *c)
{
    drop_dead_holders(&c->control, &c->table, c->block_count, c->never_used, NULL);
    for (uint32_t s = 0; s < c->never_used; s++)
        if (rm_control_mask(atomic_load_explicit(&c->control.slots[s].state,
                                                 memory_order_acquire)) != 0)
            return true;
    for (uint32_t b = 0; b < c->block_count; b++)
        if (c->blocks[b].live && !c->blocks[b].borrowed &&
            atomic_load_explicit(&c->table.blocks[b].openers, memory_order_acquire) != 0)
            return true;
    return false;
}

static void cuda_destroy(rm_mem_backend *backend, bool in_creator)
{
    cuda_backend *c = (cuda_backend *)backend;
    if (!in_creator) {
        /* A forked child: the driver, the blocks and the segments are the
         * parent's. Only private memory goes. */
        for (size_t i = 0; i < c->view_count; i++)
            close_view(c, c->views[i], false);
        free(c->views);
        if (c->table_made) {
            for (uint32_t b = 0; b < c->block_count; b++)
                free(c->blocks[b].free);
            free(c->blocks);
            free(c->slots);
            rm_control_close(&c->control);
            munmap(c->table.header, c->table.mapped_bytes);
        }
        rm_cuda_driver_release(c->driver);
        free(c);
        return;
    }
    for (size_t i = 0; i < c->view_count; i++)
        close_view(c, c->views[i], true);
    free(c->views);
    if (c->table_made) {
        cuda_collect(backend);
        rm_control_retire(&c->control);
        if (own_table_in_use(c)) {
            orphan *o = calloc(1, sizeof *o);
            if (o != NULL) {
                *o = (orphan){.driver = c->driver,
                              .control = c->control,
                              .table = c->table,
                              .blocks = c->blocks,
                              .block_count = c->block_count,
                              .slots = c->slots,
                              .slot_count = c->never_used};
                memcpy(o->table_name, c->table_name, sizeof o->table_name);
                memcpy(o->control_name, c->control_name, sizeof o->control_name);
                pthread_mutex_lock(&limbo_lock);
                o->next = limbo;
                limbo = o;
                atomic_fetch_add_explicit(&limbo_count, 1, memory_order_release);
                pthread_mutex_unlock(&limbo_lock);
                rm_host_log(c->env.host, RM_LOG_INFO,
                            "device table %s: importers still use %u block(s); they are "
                            "freed when the last one lets go",
                            c->table_name, c->block_count);
                free(c);
                return;
            }
            /* No memory to keep them: freeing under the importers is what
             * the driver calls undefined; leaking is not. Keep it mapped. */
            rm_host_log(c->env.host, RM_LOG_WARN,
                        "device table %s: no memory to keep it for its importers; its "
                        "device memory stays allocated until the process exits",
                        c->table_name);
            free(c);
            return;
        }
        free_device_state(c->driver, c->blocks, c->block_count, c->slots, c->never_used,
                          true);
        rm_control_close(&c->control);
        munmap(c->table.header, c->table.mapped_bytes);
        (void)rm_segment_unlink(c->table_name, NULL);
        (void)rm_segment_unlink(c->control_name, NULL);
    }
    (void)sweep_limbo();
    rm_cuda_driver_release(c->driver);
    free(c);
}

static void cuda_reclaim(rm_mem_backend *backend, rm_reclaim_report *report)
{
    cuda_backend *c = (cuda_backend *)backend;
    if (c->table_made) {
        uint64_t frees_before = c->stats->frees;
        cuda_collect(backend);
        uint64_t holds = 0;
        uint32_t dead = drop_dead_holders(&c->control, &c->table, c->block_count, c->never_used,
                                          &holds);
        if (dead > 0) {
            report->dead_holders += dead;
            report->holds_dropped += holds;
            c->stats->dead_holders_reclaimed += dead;
            c->stats->holds_reclaimed += holds;
            rm_tensors_log_later(c->env.tensors, RM_LOG_INFO,
                                 "device table %s: %u importer(s) died; their holds were "
                                 "dropped",
                                 c->table_name, dead);
            cuda_collect(backend);
        }
        report->tensors_freed += c->stats->frees - frees_before;
        free_empty_blocks(c, &report->cuda_blocks_freed);
        publish_figures(c);
    }
    for (size_t i = c->view_count; i-- > 0;) {
        cuda_view *view = c->views[i];
        bool gone = exporter_gone(view);
        uint64_t open_before = c->stats->cuda_handles_open;
        if (gone && view->holds == 0)
            forget_view(c, view);
        else
            close_unwanted(c, view, gone);
        report->cuda_handles_closed += open_before - c->stats->cuda_handles_open;
    }
    report->cuda_blocks_freed += sweep_limbo();
}

static int32_t cuda_reap(rm_mem_backend *backend, rm_reclaim_report *report)
{
    cuda_backend *c = (cuda_backend *)backend;
    return rm_shm_namespace_reap(&rm_cuda_table_family, c->namespace_name, c->env.error_owner,
                                 &report->segments_unlinked, &report->bytes_unlinked);
}

static void cuda_stats(rm_mem_backend *backend, rm_tensor_pool_stats *out)
{
    (void)backend;
    out->cuda_blocks_orphaned = atomic_load_explicit(&limbo_count, memory_order_acquire);
}

static void cuda_publish(rm_mem_backend *backend)
{
    publish_figures((cuda_backend *)backend);
}

static int32_t cuda_list(rm_mem_backend *backend, rm_shm_pool_info **rows, size_t *count)
{
    cuda_backend *c = (cuda_backend *)backend;
    return rm_shm_namespace_rows(&rm_cuda_table_family, c->namespace_name, c->env.error_owner,
                                 rows, count);
}

void rm_cuda_backend_info(rm_mem_backend *backend, rm_cuda_info *out)
{
    cuda_backend *c = (cuda_backend *)backend;
    snprintf(out->library, sizeof out->library, "%s", c->library);
    int32_t rc = need_driver(c);
    out->status = rc;
    if (rc != RM_OK) {
        snprintf(out->message, sizeof out->message, "%s", rm_error_last(c->env.error_owner));
        return;
    }
    out->driver_version = rm_cuda_driver_version(c->driver);
    int count = rm_cuda_driver_device_count(c->driver);
    out->device_count = count < 0 ? 0 : (uint32_t)count;
    for (int i = 0; i < count && i < RM_CUDA_INFO_MAX_DEVICES; i++) {
        rm_cuda_device *device = &out->devices[i];
        device->ordinal = i;
        uuid_of(c, i, device->uuid);
        char text[41];
        rm_cuda_uuid_format(device->uuid, text);
        snprintf(device->uuid_text, sizeof device->uuid_text, "%s", text);
    }
    (void)rm_cuda_driver_describe(c->driver, out->message, sizeof out->message);
}

const rm_mem_ops rm_cuda_backend = {
    .name = "cuda",
    .descriptor_kind = RM_DESCRIPTOR_KIND_CUDA_IPC,
    .create = cuda_create,
    .destroy = cuda_destroy,
    .allocate = cuda_allocate,
    .import = cuda_import,
    .export = NULL, /* the coordinates are in block->where */
    .release = cuda_release,
    .drop_in_child = cuda_drop_in_child,
    .describe_device = cuda_describe_device,
    .collect = cuda_collect,
    .reclaim = cuda_reclaim,
    .reap = cuda_reap,
    .stats = cuda_stats,
    .publish = cuda_publish,
    .list = cuda_list,
    .zero = cuda_zero,
    .device_uuid = cuda_device_uuid,
    .record = cuda_record,
    .wait = cuda_wait,
    .check_alive = cuda_check_alive,
};
