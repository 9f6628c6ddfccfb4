/* Opening a /dev/shm segment that the plugin made, without trusting the
 * name: tensor pools, their control segments, the node registry's table
 * and its sealed models all go through this one check. */
#ifndef RM_INTERNAL_SHM_SEGMENT_H
#define RM_INTERNAL_SHM_SEGMENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/**
 * Opens segment `name` (as for shm_open) for reading or writing, with
 * O_NOFOLLOW and O_NONBLOCK (a FIFO planted under the name must not block
 * the open), and proves it is a regular file of the effective user whose
 * permission bits are exactly `mode`. Returns the fd and its size, or -1
 * with errno (ENOENT: gone; EPERM: not ours or another mode; EINVAL: not a
 * regular file; or what shm_open/fstat said).
 */
int rm_segment_open_owned(const char *name, bool writable, mode_t mode, uint64_t *out_size);

#endif
