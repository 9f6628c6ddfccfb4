/* The segments of one namespace in /dev/shm: listing them (rmctl ls) and
 * unlinking what dead owners left (context start-up, tensor_reclaim,
 * rmctl gc). */
#ifndef RM_INTERNAL_SHM_NAMESPACE_H
#define RM_INTERNAL_SHM_NAMESPACE_H

#include <stdint.h>

#include "rm_plugin.h"
#include "shm_segment.h"

/** The two segments of one kind of pool: its data (or device table) and
 *  its control segment, and what rm_shm_pool_info.memory says of it. */
typedef struct rm_shm_family {
    rm_segment_kind data;
    rm_segment_kind control;
    uint32_t memory; /* RM_MEMORY_* */
} rm_shm_family;

extern const rm_shm_family rm_shm_pool_family; /* shared-memory pools */

/**
 * Unlinks the data and control segments in `namespace_name` whose owner is
 * dead (pid and start time from the control segment; the pid in the name
 * when there is none) and that belong to the effective user. Adds to
 * *segments and *bytes (st_blocks of what was unlinked). Returns RM_OK or
 * RM_E_SYSTEM (/dev/shm unreadable; message for `error_owner`).
 */
int32_t rm_shm_namespace_reap(const rm_shm_family *family, const char *namespace_name,
                              const void *error_owner, uint64_t *segments, uint64_t *bytes);

/**
 * Writes one row per data segment of the namespace (sorted by name) into
 * out[0..capacity) (rows of `row_size` bytes, the host's struct size) and
 * sets *count to the number of pools. RM_OK, RM_E_BUFFER_TOO_SMALL,
 * RM_E_SYSTEM.
 */
int32_t rm_shm_namespace_list(const rm_shm_family *family, const char *namespace_name,
                              const void *error_owner, rm_shm_pool_info *out,
                              uint32_t row_size, uint32_t capacity, uint32_t *count);

/**
 * The rows of rm_shm_namespace_list() as a malloc()ed array (sorted by
 * name), for a caller that merges the families: RM_OK with *rows (free()
 * it) and *count, RM_E_NO_MEMORY, RM_E_SYSTEM.
 */
int32_t rm_shm_namespace_rows(const rm_shm_family *family, const char *namespace_name,
                              const void *error_owner, rm_shm_pool_info **rows,
                              size_t *count);

#endif
