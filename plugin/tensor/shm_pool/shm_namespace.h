/* The segments of one namespace in /dev/shm: listing them (rmctl ls) and
 * unlinking what dead owners left (context start-up, tensor_reclaim,
 * rmctl gc). */
#ifndef RM_INTERNAL_SHM_NAMESPACE_H
#define RM_INTERNAL_SHM_NAMESPACE_H

#include <stdint.h>

#include "rm_plugin.h"

/**
 * Unlinks the data and control segments in `namespace_name` whose owner is
 * dead (pid and start time from the control segment; the pid in the name
 * when there is none) and that belong to the effective user. Adds to
 * *segments and *bytes (st_blocks of what was unlinked). Returns RM_OK or
 * RM_E_SYSTEM (/dev/shm unreadable; message for `error_owner`).
 */
int32_t rm_shm_namespace_reap(const char *namespace_name, const void *error_owner,
                              uint64_t *segments, uint64_t *bytes);

/**
 * Writes one row per data segment of the namespace (sorted by name) into
 * out[0..capacity) (rows of `row_size` bytes, the host's struct size) and
 * sets *count to the number of pools. RM_OK, RM_E_BUFFER_TOO_SMALL,
 * RM_E_SYSTEM.
 */
int32_t rm_shm_namespace_list(const char *namespace_name, const void *error_owner,
                              rm_shm_pool_info *out, uint32_t row_size,
                              uint32_t capacity, uint32_t *count);

#endif
