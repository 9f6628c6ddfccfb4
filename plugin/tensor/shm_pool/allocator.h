/* The bundled jemalloc: private arenas for the shared-memory capability. */
#ifndef RM_INTERNAL_ALLOCATOR_H
#define RM_INTERNAL_ALLOCATOR_H

#include <stddef.h>
#include <stdint.h>

/** "jemalloc <version>" of the bundled copy. Static. */
const char *rm_allocator_version(void);

/**
 * Creates a private arena and proves it works in this process: a block is
 * allocated from it without the thread cache, written end to end, looked up
 * back to the arena and freed. Returns RM_OK and the arena index, or
 * RM_E_ALLOCATOR with a message for `error_owner`.
 */
int32_t rm_allocator_arena_create(const void *error_owner, uint32_t *out_arena);

/** Destroys an arena from rm_allocator_arena_create() and its memory. */
void rm_allocator_arena_destroy(uint32_t arena);

#endif
