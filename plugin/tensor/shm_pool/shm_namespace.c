/* Listing and reaping the segments of a namespace; see shm_namespace.h.
 *
 * Names are RM_SEGMENT_POOL_DATA, "rm.<namespace>.<pid>.<16 hex>", and
 * RM_SEGMENT_POOL_CONTROL, the same + ".ctl" (shm_segment.h). The owner's
 * identity comes from the control segment's header (pid and start time, so
 * a reused pid does not keep a dead pool alive); a data segment whose
 * control segment is missing (its owner died between creating the two) is
 * judged by the pid in its name. */
#include "shm_namespace.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "shm_control.h"
#include "shm_segment.h"
#include "process_identity.h"

const rm_shm_family rm_shm_pool_family = {
    .data = RM_SEGMENT_POOL_DATA,
    .control = RM_SEGMENT_POOL_CONTROL,
    .memory = RM_MEMORY_SHM,
};

static unsigned family_kinds(const rm_shm_family *family)
{
    return RM_SEGMENT_KIND_BIT(family->data) | RM_SEGMENT_KIND_BIT(family->control);
}

/* The owner fields of a control segment, read without writing anything.
 * False when it cannot be read or is not a valid control segment of ours. */
static bool read_control_header(const char *control_name, rm_control_header *out)
{
    uint64_t size = 0;
    int fd = rm_pool_segment_open(control_name, false, &size);
    if (fd < 0)
        return false;
    bool ok = false;
    if (size >= RM_CONTROL_HEADER_BYTES) {
        void *page = mmap(NULL, RM_CONTROL_HEADER_BYTES, PROT_READ, MAP_SHARED, fd, 0);
        if (page != MAP_FAILED) {
            const rm_control_header *header = page;
            ok = header->magic == RM_CONTROL_MAGIC &&
                 header->layout_version == RM_CONTROL_LAYOUT_VERSION;
            if (ok) {
                memset(out, 0, sizeof *out);
                out->pool_id = header->pool_id;
                out->owner_pid = header->owner_pid;
                out->owner_start_time = header->owner_start_time;
                out->pool_bytes = header->pool_bytes;
                out->reservation_bytes = header->reservation_bytes;
                out->committed_bytes = atomic_load(&header->committed_bytes);
                out->live_tensors = atomic_load(&header->live_tensors);
                out->live_bytes = atomic_load(&header->live_bytes);
                out->device_blocks = atomic_load(&header->device_blocks);
                uint32_t holders = 0;
                for (uint32_t i = 1; i <= RM_TENSOR_MAX_HOLDERS; i++)
                    holders += atomic_load(&header->holders[i].pid) != 0;
                out->slot_count = holders; /* reused as the holder count */
            }
            munmap(page, RM_CONTROL_HEADER_BYTES);
        }
    }
    close(fd);
    return ok;
}

/* The pool's owner is gone: judged by the control segment's header, or by
 * the pid in the name when there is no readable control segment. A dead
 * owner's control segment is marked retired on the way, so that importers
 * that still map the pool unmap it at their last release. */
static bool pool_owner_gone(const rm_segment_name *segment, const char *name, void *user)
{
    const rm_shm_family *family = user;
    char control_name[RM_SEGMENT_NAME_MAX];
    if (!rm_segment_name_format(control_name, family->control, segment->namespace_name,
                                segment->pid, segment->id))
        return false;
    rm_control_header header;
    bool alive;
    if (read_control_header(control_name, &header))
        alive = rm_process_alive((pid_t)header.owner_pid, header.owner_start_time);
    else
        alive = rm_process_alive(segment->pid, 0);
    if (!alive && segment->kind == family->control)
        (void)rm_control_retire_by_name(name);
    return !alive;
}

int32_t rm_shm_namespace_reap(const rm_shm_family *family, const char *ns,
                              const void *error_owner, uint64_t *segments, uint64_t *bytes)
{
    return rm_segment_reap(ns, family_kinds(family), pool_owner_gone, (void *)family,
                           error_owner, segments, bytes);
}

static int compare_rows(const void *a, const void *b)
{
    return strcmp(((const rm_shm_pool_info *)a)->name, ((const rm_shm_pool_info *)b)->name);
}

typedef struct pool_rows {
    const rm_shm_family *family;
    const void *error_owner;
    rm_shm_pool_info *rows;
    size_t used, allocated;
} pool_rows;

static int32_t add_row(const rm_segment_name *segment, const char *name, void *user)
{
    pool_rows *list = user;
    if (list->used == list->allocated) {
        size_t grown = list->allocated == 0 ? 16 : 2 * list->allocated;
        rm_shm_pool_info *bigger = realloc(list->rows, grown * sizeof *bigger);
        if (bigger == NULL)
            return rm_error_set(list->error_owner, RM_E_NO_MEMORY, "no memory to list pools");
        list->rows = bigger;
        list->allocated = grown;
    }
    rm_shm_pool_info *row = &list->rows[list->used++];
    memset(row, 0, sizeof *row);
    row->struct_size = sizeof *row;
    row->abi_version = RM_ABI_VERSION_CURRENT;
    _Static_assert(sizeof row->name >= RM_SEGMENT_NAME_MAX, "a pool name fits the row");
    memcpy(row->name, name, strlen(name) + 1);
    row->pool_id = segment->id;
    row->owner_pid = (uint32_t)segment->pid;
    row->memory = list->family->memory;
    char control_name[RM_SEGMENT_NAME_MAX];
    rm_control_header header;
    if (rm_segment_name_format(control_name, list->family->control, segment->namespace_name,
                               segment->pid, segment->id) &&
        read_control_header(control_name, &header)) {
        row->readable = 1;
        row->owner_start_time = header.owner_start_time;
        row->owner_alive = rm_process_alive((pid_t)header.owner_pid, header.owner_start_time);
        row->pool_bytes = header.pool_bytes;
        row->committed_bytes = header.committed_bytes;
        row->live_tensors = header.live_tensors;
        row->live_bytes = header.live_bytes;
        row->holders = header.slot_count;
        row->device_blocks = (uint32_t)header.device_blocks;
    } else {
        row->owner_alive = rm_process_alive(segment->pid, 0);
    }
    return RM_OK;
}

int32_t rm_shm_namespace_rows(const rm_shm_family *family, const char *ns,
                              const void *error_owner, rm_shm_pool_info **rows, size_t *count)
{
    pool_rows list = {.family = family, .error_owner = error_owner};
    int32_t rc = rm_segment_list(ns, RM_SEGMENT_KIND_BIT(family->data), add_row, &list,
                                 error_owner);
    if (rc != RM_OK) {
        free(list.rows);
        return rc;
    }
    if (list.used > 1)
        qsort(list.rows, list.used, sizeof *list.rows, compare_rows);
    *rows = list.rows;
    *count = list.used;
    return RM_OK;
}

int32_t rm_shm_namespace_list(const rm_shm_family *family, const char *ns,
                              const void *error_owner, rm_shm_pool_info *out,
                              uint32_t row_size, uint32_t capacity, uint32_t *count)
{
    rm_shm_pool_info *rows = NULL;
    size_t used = 0;
    int32_t rc = rm_shm_namespace_rows(family, ns, error_owner, &rows, &used);
    if (rc == RM_OK) {
        size_t copy = row_size < sizeof *rows ? row_size : sizeof *rows;
        for (size_t i = 0; i < used && i < capacity; i++) {
            rm_shm_pool_info *target = (rm_shm_pool_info *)(void *)((char *)out + i * row_size);
            rows[i].struct_size = (uint32_t)copy;
            memcpy(target, &rows[i], copy);
        }
        *count = (uint32_t)used;
        if (used > capacity)
            rc = rm_error_set(error_owner, RM_E_BUFFER_TOO_SMALL,
                              "%zu pools in the namespace, room for %u", used, capacity);
    }
    free(rows);
    return rc;
}
