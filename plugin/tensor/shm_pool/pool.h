/* A process's shared-memory pool: one /dev/shm segment, mapped once, with a
 * private jemalloc arena carved out of it. */
#ifndef RM_INTERNAL_POOL_H
#define RM_INTERNAL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "config_keys.h" /* RM_NAMESPACE_MAX */
#include "rm_plugin.h"
#include "shm_segment.h"

/*
 * One pool per allocating process. Only that process allocates and frees
 * (the arena's locks and address map are process-private); other processes
 * open the segment by name, read-only, and address a block by its offset
 * from the start of the segment (rm_pool_offset_of).
 *
 * Lifetime of memory:
 *  - Creation reserves the whole ceiling as one sparse file and one mapping;
 *    addresses and offsets are stable for the pool's life. Nothing is
 *    committed yet, and nothing but blocks ever is: the arena's own
 *    metadata lives in private memory (see create_arena in pool.c).
 *  - /dev/shm pages are committed with fallocate() before jemalloc hands
 *    them out, so a full /dev/shm is RM_E_NO_MEMORY from rm_pool_alloc(),
 *    never a SIGBUS on a later write.
 *  - A free keeps its pages committed for reuse (no background or eager
 *    purging: a free of any size costs microseconds). rm_pool_purge() gives
 *    every unused page back to /dev/shm; rm_pool_alloc() does so by itself,
 *    once, before it reports RM_E_NO_MEMORY.
 *
 * fork(): a child inherits the mapping (the parent's live blocks) and a
 * copy of the arena. It must not allocate, free or purge through it (the
 * callers check the fork generation first); rm_pool_destroy() in the child
 * is safe and releases only the child's copy, never the parent's pages or
 * name.
 */

/** Segment names: RM_SEGMENT_POOL_DATA of shm_segment.h,
 *  "/rm.<namespace>.<pid>.<id as 16 hex digits>", id random. */
#define RM_POOL_NAMESPACE_MAX RM_NAMESPACE_MAX /* characters, [A-Za-z0-9_-] */
#define RM_POOL_NAME_MAX RM_SEGMENT_NAME_MAX   /* buffer for a name, NUL included */

/** The ceiling is a multiple of the granule (a huge page), and the mapping
 *  starts on one. */
#define RM_POOL_CEILING_GRANULE ((uint64_t)2 << 20)
#define RM_POOL_DEFAULT_CEILING ((uint64_t)1 << 30)
#define RM_POOL_MIN_CEILING ((uint64_t)4 << 20)
#define RM_POOL_MAX_CEILING ((uint64_t)1 << 40)

/** Every block is aligned to at least a cache line. */
#define RM_POOL_MIN_ALIGNMENT ((size_t)64)

typedef struct rm_pool rm_pool;

typedef struct rm_pool_config {
    /** Part of the segment name, so that a node's pools can be listed (and
     *  reclaimed) per namespace: 1 to RM_POOL_NAMESPACE_MAX characters of
     *  [A-Za-z0-9_-]. Copied. */
    const char *namespace_name;
    /** Most bytes the pool may ever hold, alignment gaps and jemalloc's
     *  per-block padding included; a multiple of RM_POOL_CEILING_GRANULE between
     *  RM_POOL_MIN_CEILING and RM_POOL_MAX_CEILING. 0 =
     *  RM_POOL_DEFAULT_CEILING. Costs address space only until used. */
    uint64_t ceiling_bytes;
} rm_pool_config;

/**
 * Names the segment with a random id and creates it (rm_segment_create():
 * O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600 whatever the umask, proven a new
 * regular file of the effective user), sized to the ceiling (sparse), maps
 * it MAP_SHARED once and creates the arena over it.
 *
 * `error_owner` is the context that failures of this pool are recorded for
 * (rm_error_set), now and in every later call. Returns RM_OK,
 * RM_E_INVALID_ARGUMENT (config), RM_E_NO_MEMORY (no address space for the
 * reservation; or /dev/shm has no inode left), RM_E_SYSTEM (a system call
 * failed, e.g. no /dev/shm or no getrandom()), RM_E_ALLOCATOR (jemalloc refused). On failure nothing is left behind:
 * the segment is unlinked.
 */
int32_t rm_pool_create(const rm_pool_config *config, const void *error_owner,
                       rm_pool **out);

/**
 * Destroys the arena (every block still allocated goes with it, and every
 * page goes back to /dev/shm), unmaps the segment, closes it and unlinks
 * its name. Processes that still map the segment keep the file, but no
 * longer its contents. NULL: no-op. Not concurrently with other calls on
 * the pool. In a child of fork(), see above.
 */
void rm_pool_destroy(rm_pool *pool);

/**
 * Like rm_pool_destroy(), but the pages of blocks still allocated stay in
 * the segment: processes that still map it (importers holding tensors)
 * keep reading valid data; the pages go back to /dev/shm when the last of
 * them unmaps. The name is unlinked all the same.
 */
void rm_pool_abandon(rm_pool *pool);

/** The random identity in the pool's name (never 0). */
uint64_t rm_pool_id(const rm_pool *pool);

/** The usable size of the block rm_pool_alloc(size, alignment) would
 *  return: equal for two requests means their blocks are interchangeable. */
size_t rm_pool_block_size(const rm_pool *pool, size_t size, size_t alignment);

/**
 * Allocates `size` bytes (> 0) aligned to `alignment` (0 or a power of two;
 * raised to RM_POOL_MIN_ALIGNMENT) and commits them. The block's contents
 * are unspecified. Returns RM_OK, RM_E_INVALID_ARGUMENT, or RM_E_NO_MEMORY
 * with a message that says what ran out: /dev/shm (and how many bytes it
 * could not commit) or the pool's ceiling. Thread-safe.
 */
int32_t rm_pool_alloc(rm_pool *pool, size_t size, size_t alignment, void **out);

/**
 * Frees a block from rm_pool_alloc() on this pool; its pages stay committed
 * for reuse until rm_pool_purge(). NULL: RM_OK. A pointer outside the pool
 * (or not aligned like a block) is RM_E_INVALID_ARGUMENT and nothing is
 * freed. Thread-safe.
 */
int32_t rm_pool_free(rm_pool *pool, void *ptr);

/**
 * The offset of `ptr` from the start of the segment, which is where another
 * process that maps the segment finds the same byte. RM_E_INVALID_ARGUMENT
 * if `ptr` is not inside the pool's reservation.
 */
int32_t rm_pool_offset_of(const rm_pool *pool, const void *ptr, uint64_t *offset);

/**
 * Returns every unused committed page to /dev/shm (jemalloc's
 * "arena.<i>.purge", which the hooks turn into punched holes). Costs about
 * as much as committing the pages did. RM_OK or RM_E_ALLOCATOR.
 */
int32_t rm_pool_purge(rm_pool *pool);

/** The segment's name for shm_open(), "/rm.<namespace>.<pid>.<hex>". */
const char *rm_pool_name(const rm_pool *pool);

/** Where the segment is mapped in this process (offset 0). */
void *rm_pool_base(const rm_pool *pool);

/** The ceiling: the segment's size and the mapping's length. */
uint64_t rm_pool_ceiling_bytes(const rm_pool *pool);

/** Bytes committed in /dev/shm now: fallocated minus punched. */
uint64_t rm_pool_committed_bytes(const rm_pool *pool);

#endif
