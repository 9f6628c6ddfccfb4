/* The importer's side of shared-memory tensors (shm_view.h).
 *
 * A view maps another pool's data segment once (read-only; a second,
 * writable mapping on the first writable import) and its control segment
 * read-write, because holding and releasing a tensor is a write. Per slot
 * it counts this context's handles; while that count is non-zero the
 * context's holder bit is set in the slot's shared state word, so the
 * owner frees nothing this context still reads. */
#include "shm_view.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "pool.h"
#include "process_identity.h"

struct rm_shm_view {
    uint64_t pool_id;
    uint32_t owner_pid;
    uint64_t owner_start_time;
    char data_name[RM_SEGMENT_NAME_MAX];
    char control_name[RM_SEGMENT_NAME_MAX];
    rm_control control;
    uint64_t reservation;
    unsigned char *read_base;  /* PROT_READ mapping */
    unsigned char *write_base; /* PROT_READ|PROT_WRITE, on first writable import */
    uint32_t holder_index;     /* 1..RM_TENSOR_MAX_HOLDERS */
    uint32_t *local_holds;     /* per slot */
    uint64_t holds;            /* sum of local_holds */
};

/* ------------------------------------------------------------------------ */
/* The hold protocol                                                        */
/* ------------------------------------------------------------------------ */

int32_t rm_shm_owner_changed(const void *error_owner, const char *pool_name,
                             uint64_t recorded, uint64_t claimed)
{
    return rm_error_set(error_owner, RM_E_STALE_DESCRIPTOR,
                        "pool %s belongs to another process now (owner start time "
                        "%" PRIu64 ", descriptor says %" PRIu64 ")",
                        pool_name, recorded, claimed);
}

/* Why a hold on slot d->slot was refused: the tensor was freed (or the
 * slot reused since), which is an old descriptor, or the descriptor names
 * a generation the slot has never had, which no export produced. Serial
 * arithmetic keeps "newer" right across the 32-bit wrap. */
static int32_t refused_hold(const void *error_owner, const rm_control *control,
                            const rm_descriptor *d, const char *pool_name)
{
    uint64_t state = atomic_load_explicit(&control->slots[d->slot].state, memory_order_acquire);
    uint32_t generation = rm_control_generation(state);
    if ((int32_t)(d->generation - generation) > 0)
        return rm_error_set(error_owner, RM_E_INVALID_DESCRIPTOR,
                            "descriptor generation %u is newer than slot %u of pool %s has "
                            "ever had (%u): the slot or generation field was changed",
                            d->generation, d->slot, pool_name, generation);
    if (generation == d->generation)
        return rm_error_set(error_owner, RM_E_STALE_DESCRIPTOR,
                            "the tensor in slot %u (generation %u) of pool %s was released "
                            "by every holder and freed",
                            d->slot, d->generation, pool_name);
    return rm_error_set(error_owner, RM_E_STALE_DESCRIPTOR,
                        "the tensor in slot %u (generation %u) of pool %s was freed; the slot "
                        "holds generation %u now",
                        d->slot, d->generation, pool_name, generation);
}

int32_t rm_shm_hold_slot(const void *error_owner, rm_control *control, const rm_descriptor *d,
                         uint32_t held, uint32_t bit, const char *pool_name,
                         bool *freed_by_drop)
{
    *freed_by_drop = false;
    if (d->slot >= control->slot_count)
        return rm_error_set(error_owner, RM_E_INVALID_DESCRIPTOR,
                            "slot %u is outside the %u slots of pool %s", d->slot,
                            control->slot_count, pool_name);
    if (held == 0) {
        if (!rm_control_hold(control, d->slot, d->generation, bit))
            return refused_hold(error_owner, control, d, pool_name);
    } else {
        uint64_t state = atomic_load_explicit(&control->slots[d->slot].state,
                                              memory_order_acquire);
        if (rm_control_generation(state) != d->generation)
            return refused_hold(error_owner, control, d, pool_name);
    }
    /* Held now, so the binding cannot change under us. */
    const char *field = rm_control_binding_mismatch(control, d->slot, d);
    if (field == NULL)
        return RM_OK;
    if (held == 0)
        *freed_by_drop = rm_control_drop(control, d->slot, bit, bit != RM_CONTROL_OWNER_BIT);
    return rm_error_set(error_owner, RM_E_INVALID_DESCRIPTOR,
                        "descriptor field '%s' differs from the tensor in slot %u "
                        "(generation %u) of pool %s: the descriptor was changed after export",
                        field, d->slot, d->generation, pool_name);
}

/* ------------------------------------------------------------------------ */
/* Opening and closing a view                                               */
/* ------------------------------------------------------------------------ */

static void close_view(rm_shm_view *view, bool release_holds)
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

/* Unmaps a view this context holds nothing of and drops it from the cache. */
static void forget_view(rm_shm_views *views, rm_shm_view *view)
{
    for (size_t i = 0; i < views->count; i++) {
        if (views->list[i] == view) {
            views->list[i] = views->list[--views->count];
            break;
        }
    }
    close_view(view, true);
    views->stats->pools_mapped = views->count;
}

void rm_shm_views_forget_unused(rm_shm_views *views, bool check_owners)
{
    for (size_t i = 0; i < views->count;) {
        rm_shm_view *view = views->list[i];
        bool gone = rm_control_retired(&view->control) ||
                    (check_owners &&
                     !rm_process_alive((pid_t)view->owner_pid, view->owner_start_time));
        if (view->holds == 0 && gone) {
            forget_view(views, view);
            continue; /* the last view moved into slot i */
        }
        i++;
    }
}

void rm_shm_views_close(rm_shm_views *views, bool release_holds)
{
    for (size_t i = 0; i < views->count; i++)
        close_view(views->list[i], release_holds);
    free(views->list);
    views->list = NULL;
    views->count = views->capacity = 0;
}

static rm_shm_view *find_view(const rm_shm_views *views, const rm_descriptor *d)
{
    for (size_t i = 0; i < views->count; i++) {
        rm_shm_view *view = views->list[i];
        if (view->pool_id == d->pool_id && view->owner_pid == d->owner_pid)
            return view;
    }
    return NULL;
}

static int32_t map_view_data(const rm_shm_views *views, rm_shm_view *view, bool writable)
{
    uint64_t size = 0;
    int fd = rm_pool_segment_open(view->data_name, writable, &size);
    if (fd < 0) {
        int err = errno;
        int32_t code = rm_pool_segment_error_code(err);
        if (code == RM_E_STALE_DESCRIPTOR)
            return rm_error_set(views->error_owner, code, "data segment %s no longer exists",
                                view->data_name);
        return rm_error_set(views->error_owner, code, "data segment %s cannot be used: %s%s",
                            view->data_name, strerror(err),
                            code == RM_E_INVALID_DESCRIPTOR
                                ? " (not a 0600 regular file of this user)"
                                : "");
    }
    int32_t rc = RM_OK;
    if (size != view->reservation) {
        rc = rm_error_set(views->error_owner, RM_E_INVALID_DESCRIPTOR,
                          "data segment %s has %" PRIu64 " bytes, its control segment says "
                          "%" PRIu64,
                          view->data_name, size, view->reservation);
    } else {
        void *base = mmap(NULL, (size_t)size, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                          MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            rc = rm_error_set(views->error_owner,
                              errno == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                              "mmap() of %s failed: %s", view->data_name, strerror(errno));
        else if (writable)
            view->write_base = base;
        else
            view->read_base = base;
    }
    close(fd);
    return rc;
}

/* A new, unchecked view of the descriptor's pool with its control segment
 * open. */
static int32_t open_control(const rm_shm_views *views, const rm_descriptor *d,
                            rm_shm_view **out)
{
    rm_shm_view *view = calloc(1, sizeof *view);
    if (view == NULL)
        return rm_error_set(views->error_owner, RM_E_NO_MEMORY, "no memory for a pool view");
    view->pool_id = d->pool_id;
    view->owner_pid = d->owner_pid;
    view->owner_start_time = d->owner_start_time;
    /* A pid no process can have names no segment: as stale as a pool that
     * is gone. */
    int32_t rc = RM_E_STALE_DESCRIPTOR;
    if (d->owner_pid <= INT32_MAX &&
        rm_segment_name_format(view->data_name, RM_SEGMENT_POOL_DATA, views->namespace_name,
                               (pid_t)d->owner_pid, d->pool_id) &&
        rm_segment_name_format(view->control_name, RM_SEGMENT_POOL_CONTROL,
                               views->namespace_name, (pid_t)d->owner_pid, d->pool_id))
        rc = rm_control_open(view->control_name, views->error_owner, &view->control);
    if (rc != RM_OK) {
        if (rc == RM_E_STALE_DESCRIPTOR)
            rc = rm_error_set(views->error_owner, RM_E_STALE_DESCRIPTOR,
                              "pool %" PRIx64 " of pid %" PRIu32 " is not in namespace '%s' "
                              "(destroyed, reclaimed, or another namespace)",
                              d->pool_id, d->owner_pid, views->namespace_name);
        free(view);
        return rc;
    }
    *out = view;
    return RM_OK;
}

/* The control segment's header must describe the descriptor's pool. */
static int32_t check_header(const rm_shm_views *views, const rm_shm_view *view,
                            const rm_descriptor *d)
{
    const rm_control_header *header = view->control.header;
    if (header->pool_id != d->pool_id || header->owner_pid != d->owner_pid)
        return rm_error_set(views->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "control segment %s names another pool or owner",
                            view->control_name);
    if (header->owner_start_time != d->owner_start_time)
        return rm_shm_owner_changed(views->error_owner, view->data_name,
                                    header->owner_start_time, d->owner_start_time);
    if (header->reservation_bytes == 0 || header->reservation_bytes > SIZE_MAX / 2)
        return rm_error_set(views->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "control segment %s gives an impossible pool size",
                            view->control_name);
    return RM_OK;
}

/* Maps the data segment read-only and registers this context as a holder. */
static int32_t attach_view(const rm_shm_views *views, rm_shm_view *view)
{
    view->reservation = view->control.header->reservation_bytes;
    view->local_holds = calloc(view->control.slot_count, sizeof *view->local_holds);
    if (view->local_holds == NULL)
        return rm_error_set(views->error_owner, RM_E_NO_MEMORY, "no memory for a pool view");
    int32_t rc = map_view_data(views, view, false);
    if (rc != RM_OK)
        return rc;
    view->holder_index = rm_control_claim_holder(&view->control);
    if (view->holder_index == 0)
        return rm_error_set(views->error_owner, RM_E_QUOTA_EXCEEDED,
                            "pool %s already has %d importing contexts "
                            "(RM_TENSOR_MAX_HOLDERS)",
                            view->data_name, RM_TENSOR_MAX_HOLDERS);
    return RM_OK;
}

static int32_t grow_cache(rm_shm_views *views)
{
    if (views->count < views->capacity)
        return RM_OK;
    size_t grown = views->capacity == 0 ? 4 : 2 * views->capacity;
    rm_shm_view **bigger = realloc(views->list, grown * sizeof *bigger);
    if (bigger == NULL)
        return rm_error_set(views->error_owner, RM_E_NO_MEMORY, "no memory for a pool view");
    views->list = bigger;
    views->capacity = grown;
    return RM_OK;
}

/* The cached view of the descriptor's pool, opened and checked on first
 * use. */
static int32_t open_view(rm_shm_views *views, const rm_descriptor *d, rm_shm_view **out)
{
    *out = NULL;
    rm_shm_view *view = find_view(views, d);
    if (view != NULL) {
        /* Validation never depends on the cache: the start time is checked
         * on every import, not only when the pool is first mapped. */
        if (view->owner_start_time != d->owner_start_time)
            return rm_shm_owner_changed(views->error_owner, view->data_name,
                                        view->owner_start_time, d->owner_start_time);
        *out = view;
        return RM_OK;
    }
    int32_t rc = grow_cache(views);
    if (rc != RM_OK)
        return rc;
    rc = open_control(views, d, &view);
    if (rc != RM_OK)
        return rc;
    rc = check_header(views, view, d);
    if (rc == RM_OK)
        rc = attach_view(views, view);
    if (rc != RM_OK) {
        close_view(view, false);
        return rc;
    }
    views->list[views->count++] = view;
    views->stats->pools_mapped = views->count;
    *out = view;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Holding and releasing tensors                                            */
/* ------------------------------------------------------------------------ */

int32_t rm_shm_views_import(rm_shm_views *views, const rm_descriptor *d, bool writable,
                            rm_mem_block *block)
{
    rm_shm_view *view = NULL;
    int32_t rc = open_view(views, d, &view);
    if (rc != RM_OK)
        return rc;
    if (d->offset > view->reservation || d->nbytes > view->reservation - d->offset)
        return rm_error_set(views->error_owner, RM_E_INVALID_DESCRIPTOR,
                            "extent (offset %" PRIu64 ", %" PRIu64 " bytes) lies outside "
                            "pool %s (%" PRIu64 " bytes)",
                            d->offset, d->nbytes, view->data_name, view->reservation);
    if (writable && view->write_base == NULL) {
        rc = map_view_data(views, view, true);
        if (rc != RM_OK)
            return rc;
    }
    uint32_t held = d->slot < view->control.slot_count ? view->local_holds[d->slot] : 0;
    bool freed = false;
    rc = rm_shm_hold_slot(views->error_owner, &view->control, d, held,
                          (uint32_t)1 << view->holder_index, view->data_name, &freed);
    if (rc != RM_OK)
        return rc;
    view->local_holds[d->slot]++;
    view->holds++;
    block->home = view;
    block->data = (writable ? view->write_base : view->read_base) + d->offset;
    block->flags = (writable ? RM_TENSOR_WRITABLE : 0) | RM_TENSOR_SHAREABLE;
    return RM_OK;
}

void rm_shm_views_release(rm_shm_views *views, rm_mem_block *block)
{
    rm_shm_view *view = block->home;
    uint32_t index = block->where.slot;
    view->holds--;
    if (--view->local_holds[index] == 0)
        (void)rm_control_drop(&view->control, index, (uint32_t)1 << view->holder_index, true);
    /* The owner gave the pool up and this was our last hold: nothing reads
     * the mapping any more, so its pages may go now. */
    if (view->holds == 0 && rm_control_retired(&view->control))
        forget_view(views, view);
}
