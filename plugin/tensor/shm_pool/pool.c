/* A process's shared-memory pool: one /dev/shm segment, mapped once, with a
 * private jemalloc arena carved out of it.
 *
 * The arena takes its extents from the hooks of hooks/shm_extent_hooks.c,
 * which commit with fallocate() and decommit by punching holes, and keeps
 * its metadata in private memory (create_arena says why). Three arena
 * settings make frees cheap and purging explicit (jemalloc 5.3.0, file:line
 * in its src/):
 *  - dirty_decay_ms = muzzy_decay_ms = -1: no purging on a timer, in the
 *    allocating thread (arena_decay ticks) or in a background thread.
 *  - The same two settings switch off the "oversize" shortcut that would
 *    otherwise purge every freed extent of 8 MiB or more synchronously
 *    inside the free (extent_record, extent.c:940-946, guarded by
 *    extent_may_force_decay, extent.c:55-58, which is false when either
 *    decay time is -1): measured at 76 ms for a 256 MiB free. It is a
 *    per-arena decision, so the plugin's jemalloc needs no global
 *    malloc_conf and other arenas keep their defaults. (The huge arena that
 *    opt.oversize_threshold also selects is never used: MALLOCX_ARENA
 *    bypasses it, arena_inlines_b.h:21-24.)
 *  - No retention (rmje_malloc_conf below): jemalloc asks the hooks for
 *    exactly the extent it needs (ecache_alloc_grow, extent.c:790) instead
 *    of growing its retained address space in an exponential series
 *    (exp_grow.h), which spent the ceiling on growth steps (after a 256 MiB
 *    block the next step took 320 MiB). Extents it decommits still come
 *    back first from its retained cache (extent_recycle, extent.c:782).
 * Every allocation and free passes MALLOCX_TCACHE_NONE: the thread cache
 * mixes arenas, and a block cached from this arena could be handed to
 * someone else's malloc (or a heap block to this pool). */
#include "pool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include "error.h"
#include "jemalloc.h"
#include "shm_extent_hooks.h"
#include "shm_segment.h"

/* The plugin's own jemalloc (prefix rmje_) reads this at its first use;
 * the host's allocator never sees it. With retention, the Linux default,
 * jemalloc never unmaps: destroying an arena purged its metadata's base
 * block (2 MiB) but left it mapped, so every context that made a pool left
 * one mapping behind, and 65530 of them (vm.max_map_count) would end every
 * mmap() of the process (found by tests/fuzz/fuzz_control_segment.c; the
 * lifecycle test checks it). Pools keep their own extents regardless: their
 * dalloc hook opts out. */
const char *rmje_malloc_conf = "retain:false";


struct rm_pool {
    rm_shm_extent_hooks hooks; /* must outlive the arena */
    const void *error_owner;
    pid_t owner;               /* the process that created the pool */
    uint64_t id;               /* the random part of the name */
    char name[RM_POOL_NAME_MAX];
    int fd;                    /* -1 until the segment exists */
    unsigned char *base;       /* NULL until mapped */
    uint64_t ceiling;
    bool hooks_ready;
    bool arena_ready;
    unsigned arena;
    int flags;                 /* MALLOCX_ARENA(arena) | MALLOCX_TCACHE_NONE */
    char purge_ctl[40];        /* "arena.<i>.purge" */
};

/* ------------------------------------------------------------------------ */
/* Creation                                                                 */
/* ------------------------------------------------------------------------ */

/* "/rm.<namespace>.<pid>.<hex>" (shm_segment.h): the random part makes the
 * name unguessable, so nobody can pre-create it or open it without being
 * told. Then the segment: 0600, proven ours and new, and sized to the
 * ceiling sparse, so nothing of /dev/shm is used yet. */
static int32_t create_segment(rm_pool *pool, const char *namespace_name)
{
    uint64_t id = 0;
    int32_t rc = rm_segment_random_id(RM_SEGMENT_POOL_DATA, namespace_name, pool->error_owner,
                                      &id);
    if (rc != RM_OK)
        return rc;
    char name[RM_POOL_NAME_MAX];
    if (!rm_segment_name_format(name, RM_SEGMENT_POOL_DATA, namespace_name, pool->owner, id))
        return rm_error_set(pool->error_owner, RM_E_INVALID_ARGUMENT,
                            "no segment name for pool namespace '%s'", namespace_name);
    rc = rm_segment_create(name, pool->ceiling, RM_SEGMENT_SPARSE, "tensor pool",
                           pool->error_owner, &pool->fd, NULL);
    if (rc != RM_OK)
        return rc; /* nothing of ours left under the name: never unlink it */
    pool->id = id;
    memcpy(pool->name, name, sizeof name);
    return RM_OK;
}

/* Maps the whole ceiling once, at an address aligned to the granule, so
 * that a block's offset is aligned as well as its address (up to 2 MiB):
 * a consumer that maps the segment at a 2 MiB boundary sees the alignment
 * the owner asked for. */
static int32_t map_segment(rm_pool *pool)
{
    size_t length = (size_t)pool->ceiling;
    size_t granule = (size_t)RM_POOL_CEILING_GRANULE;
    unsigned char *area = mmap(NULL, length + granule, PROT_NONE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) {
        int err = errno;
        return rm_error_set(pool->error_owner,
                            err == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                            "no address space for the %llu-byte reservation of "
                            "segment %s: %s",
                            (unsigned long long)pool->ceiling, pool->name,
                            strerror(err));
    }
    uintptr_t start = ((uintptr_t)area + granule - 1) & ~(uintptr_t)(granule - 1);
    unsigned char *base = mmap((void *)start, length, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_FIXED, pool->fd, 0);
    if (base == MAP_FAILED) {
        int err = errno;
        munmap(area, length + granule);
        return rm_error_set(pool->error_owner,
                            err == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                            "mmap() of segment %s (%llu bytes) failed: %s", pool->name,
                            (unsigned long long)pool->ceiling, strerror(err));
    }
    /* Give back the unaligned head and the tail of the placeholder. */
    size_t head = start - (uintptr_t)area;
    if (head != 0)
        munmap(area, head);
    if (granule - head != 0)
        munmap(base + length, granule - head);
    pool->base = base;
    return RM_OK;
}

static int32_t arena_setting(rm_pool *pool, const char *leaf, void *value,
                             size_t value_size)
{
    char name[64];
    snprintf(name, sizeof name, "arena.%u.%s", pool->arena, leaf);
    int err = rmje_mallctl(name, NULL, NULL, value, value_size);
    if (err != 0)
        return rm_error_set(pool->error_owner, RM_E_ALLOCATOR,
                            "jemalloc %s failed for pool %s: %s", name, pool->name,
                            strerror(err));
    return RM_OK;
}

/* jemalloc's arena_config_t (5.3.0: include/jemalloc/internal/arena_types.h,
 * lines 44-52), which its public header does not declare. The ctl rejects
 * a struct of any other size (EINVAL), and the build pins 5.3. */
#if JEMALLOC_VERSION_MAJOR != 5 || JEMALLOC_VERSION_MINOR != 3
#error "arena_config_t is copied from jemalloc 5.3; check it against this version"
#endif
typedef struct jemalloc_arena_config {
    extent_hooks_t *extent_hooks;
    bool metadata_use_hooks;
} jemalloc_arena_config;

/* The arena takes its extents from the hooks but keeps its metadata
 * (arena_t, bins, extent records, mutexes) in private memory. With plain
 * "arenas.create" the metadata would be allocated through the hooks, i.e.
 * inside the shared segment, and the segment is shared with every child of
 * a fork(): jemalloc's fork handler re-initialises every arena's mutexes,
 * lists and counters in the child (arena_postfork_child, arena.c:1856-1891),
 * which would rewrite the parent's live allocator state, including a mutex
 * the parent may hold. Private metadata is copied on write instead; it also
 * keeps allocator internals out of reach of anyone who can open the
 * segment, and leaves /dev/shm to tensor bytes alone. */
static int32_t create_arena(rm_pool *pool)
{
    jemalloc_arena_config config = {
        .extent_hooks = &pool->hooks.hooks,
        .metadata_use_hooks = false,
    };
    unsigned arena = 0;
    size_t arena_size = sizeof arena;
    int err = rmje_mallctl("experimental.arenas_create_ext", &arena, &arena_size,
                           &config, sizeof config);
    if (err != 0)
        return rm_error_set(pool->error_owner, RM_E_ALLOCATOR,
                            "jemalloc experimental.arenas_create_ext failed for "
                            "pool %s: %s",
                            pool->name, strerror(err));
    pool->arena = arena;
    pool->arena_ready = true;
    pool->flags = MALLOCX_ARENA(arena) | MALLOCX_TCACHE_NONE;
    snprintf(pool->purge_ctl, sizeof pool->purge_ctl, "arena.%u.purge", arena);

    /* Set before the first block exists, so no free ever sees the defaults. */
    ssize_t never = -1;
    int32_t rc = arena_setting(pool, "dirty_decay_ms", &never, sizeof never);
    if (rc == RM_OK)
        rc = arena_setting(pool, "muzzy_decay_ms", &never, sizeof never);
    return rc;
}

/* Undoes whatever part of creation happened. False if the arena could not
 * be destroyed: then jemalloc may still call the hooks, so the mapping and
 * the hooks (inside `pool`) are deliberately leaked rather than freed.
 *
 * In a child of fork() the pool is the parent's: the hooks refuse to touch
 * the file there, so destroying the child's copy of the arena releases only
 * the child's memory, and the name, which is the parent's, stays. */
static bool discard(rm_pool *pool)
{
    bool released = true;
    if (pool->arena_ready) {
        char name[64];
        snprintf(name, sizeof name, "arena.%u.destroy", pool->arena);
        released = rmje_mallctl(name, NULL, NULL, NULL, 0) == 0;
    }
    if (pool->name[0] != '\0' && getpid() == pool->owner)
        (void)rm_segment_unlink(pool->name, NULL);
    if (!released)
        return false;
    if (pool->hooks_ready)
        rm_shm_extent_hooks_fini(&pool->hooks);
    if (pool->base != NULL)
        munmap(pool->base, (size_t)pool->ceiling);
    if (pool->fd >= 0)
        close(pool->fd);
    free(pool);
    return true;
}

int32_t rm_pool_create(const rm_pool_config *config, const void *error_owner,
                       rm_pool **out)
{
    if (out == NULL || config == NULL)
        return rm_error_set(error_owner, RM_E_INVALID_ARGUMENT,
                            "rm_pool_create: config and out must not be NULL");
    *out = NULL;
    if (config->namespace_name == NULL || !rm_segment_namespace_valid(config->namespace_name))
        return rm_error_set(error_owner, RM_E_INVALID_ARGUMENT,
                            "pool namespace must be 1 to %d characters of "
                            "[A-Za-z0-9_-]",
                            RM_POOL_NAMESPACE_MAX);
    uint64_t ceiling = config->ceiling_bytes != 0 ? config->ceiling_bytes
                                                  : RM_POOL_DEFAULT_CEILING;
    if (ceiling % RM_POOL_CEILING_GRANULE != 0 || ceiling < RM_POOL_MIN_CEILING ||
        ceiling > RM_POOL_MAX_CEILING || ceiling > SIZE_MAX / 2)
        return rm_error_set(error_owner, RM_E_INVALID_ARGUMENT,
                            "pool ceiling of %llu bytes must be a multiple of "
                            "%llu between %llu and %llu",
                            (unsigned long long)ceiling,
                            (unsigned long long)RM_POOL_CEILING_GRANULE,
                            (unsigned long long)RM_POOL_MIN_CEILING,
                            (unsigned long long)RM_POOL_MAX_CEILING);

    rm_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return rm_error_set(error_owner, RM_E_NO_MEMORY,
                            "no memory for a pool (%zu bytes)", sizeof *pool);
    pool->error_owner = error_owner;
    pool->owner = getpid();
    pool->fd = -1;
    pool->ceiling = ceiling;

    int32_t rc = create_segment(pool, config->namespace_name);
    if (rc == RM_OK)
        rc = map_segment(pool);
    if (rc == RM_OK) {
        int err = rm_shm_extent_hooks_init(&pool->hooks, pool->fd, pool->base,
                                           (size_t)pool->ceiling);
        if (err != 0)
            rc = rm_error_set(error_owner, RM_E_SYSTEM,
                              "pool %s: pthread_mutex_init failed: %s", pool->name,
                              strerror(err));
        else
            pool->hooks_ready = true;
    }
    if (rc == RM_OK)
        rc = create_arena(pool);
    if (rc != RM_OK) {
        discard(pool);
        return rc;
    }
    *out = pool;
    return RM_OK;
}

void rm_pool_destroy(rm_pool *pool)
{
    if (pool != NULL)
        (void)discard(pool);
}

void rm_pool_abandon(rm_pool *pool)
{
    if (pool == NULL)
        return;
    /* Before the arena's teardown, which would punch every extent it frees;
     * see rm_shm_extent_hooks_give_up. */
    rm_shm_extent_hooks_give_up(&pool->hooks);
    (void)discard(pool);
}

uint64_t rm_pool_id(const rm_pool *pool)
{
    return pool->id;
}

size_t rm_pool_block_size(const rm_pool *pool, size_t size, size_t alignment)
{
    if (alignment < RM_POOL_MIN_ALIGNMENT)
        alignment = RM_POOL_MIN_ALIGNMENT;
    return rmje_nallocx(size, pool->flags | MALLOCX_LG_ALIGN(__builtin_ctzll(alignment)));
}

/* ------------------------------------------------------------------------ */
/* Blocks                                                                   */
/* ------------------------------------------------------------------------ */

static bool inside(const rm_pool *pool, const void *ptr)
{
    uintptr_t at = (uintptr_t)ptr;
    uintptr_t begin = (uintptr_t)pool->base;
    return at >= begin && at - begin < pool->ceiling;
}

/* Why the calling thread's last jemalloc call got no memory, as an error. */
static int32_t report_no_memory(rm_pool *pool, rm_shm_extent_failure failure,
                                size_t size)
{
    if (failure.commit_errno != 0)
        return rm_error_set(pool->error_owner, RM_E_NO_MEMORY,
                            "/dev/shm has no room for a block of %zu bytes in pool "
                            "%s: committing %llu bytes failed (fallocate: %s)",
                            size, pool->name, (unsigned long long)failure.commit_bytes,
                            strerror(failure.commit_errno));
    if (failure.reservation_short != 0)
        return rm_error_set(pool->error_owner, RM_E_NO_MEMORY,
                            "pool %s reached its ceiling of %llu bytes: a block of "
                            "%zu bytes does not fit in what is left",
                            pool->name, (unsigned long long)pool->ceiling, size);
    return rm_error_set(pool->error_owner, RM_E_NO_MEMORY,
                        "jemalloc arena %u of pool %s could not provide a block of "
                        "%zu bytes", pool->arena, pool->name, size);
}

int32_t rm_pool_alloc(rm_pool *pool, size_t size, size_t alignment, void **out)
{
    if (pool == NULL || out == NULL)
        return rm_error_set(pool != NULL ? pool->error_owner : NULL,
                            RM_E_INVALID_ARGUMENT,
                            "rm_pool_alloc: pool and out must not be NULL");
    *out = NULL;
    if (size == 0)
        return rm_error_set(pool->error_owner, RM_E_INVALID_ARGUMENT,
                            "pool %s: a block must have at least one byte", pool->name);
    if ((alignment & (alignment - 1)) != 0)
        return rm_error_set(pool->error_owner, RM_E_INVALID_ARGUMENT,
                            "pool %s: alignment %zu is not a power of two",
                            pool->name, alignment);
    if (alignment < RM_POOL_MIN_ALIGNMENT)
        alignment = RM_POOL_MIN_ALIGNMENT;
    if (size > pool->ceiling || alignment > pool->ceiling)
        return rm_error_set(pool->error_owner, RM_E_NO_MEMORY,
                            "pool %s: a block of %zu bytes aligned to %zu can never "
                            "fit in its ceiling of %llu bytes",
                            pool->name, size, alignment,
                            (unsigned long long)pool->ceiling);

    int flags = pool->flags | MALLOCX_LG_ALIGN(__builtin_ctzll(alignment));
    rm_shm_extent_failure_reset();
    void *block = rmje_mallocx(size, flags);
    if (block == NULL) {
        /* Freed pages stay committed (no decay), so /dev/shm may be full of
         * our own unused pages: give them back and try once more. */
        rm_shm_extent_failure first = rm_shm_extent_failure_last();
        (void)rmje_mallctl(pool->purge_ctl, NULL, NULL, NULL, 0);
        rm_shm_extent_failure_reset();
        block = rmje_mallocx(size, flags);
        if (block == NULL) {
            rm_shm_extent_failure again = rm_shm_extent_failure_last();
            bool told = again.commit_errno != 0 || again.reservation_short != 0;
            return report_no_memory(pool, told ? again : first, size);
        }
    }
    *out = block;
    return RM_OK;
}

int32_t rm_pool_free(rm_pool *pool, void *ptr)
{
    if (pool == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                            "rm_pool_free: pool must not be NULL");
    if (ptr == NULL)
        return RM_OK;
    if (!inside(pool, ptr) || ((uintptr_t)ptr & (RM_POOL_MIN_ALIGNMENT - 1)) != 0)
        return rm_error_set(pool->error_owner, RM_E_INVALID_ARGUMENT,
                            "pool %s: %p is not a block of this pool", pool->name, ptr);
    rmje_dallocx(ptr, pool->flags);
    return RM_OK;
}

int32_t rm_pool_offset_of(const rm_pool *pool, const void *ptr, uint64_t *offset)
{
    if (pool == NULL || offset == NULL)
        return rm_error_set(pool != NULL ? pool->error_owner : NULL,
                            RM_E_INVALID_ARGUMENT,
                            "rm_pool_offset_of: pool and offset must not be NULL");
    if (!inside(pool, ptr))
        return rm_error_set(pool->error_owner, RM_E_INVALID_ARGUMENT,
                            "pool %s: %p lies outside its %llu bytes at %p",
                            pool->name, ptr, (unsigned long long)pool->ceiling,
                            (void *)pool->base);
    *offset = (uint64_t)((uintptr_t)ptr - (uintptr_t)pool->base);
    return RM_OK;
}

int32_t rm_pool_purge(rm_pool *pool)
{
    if (pool == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                            "rm_pool_purge: pool must not be NULL");
    int err = rmje_mallctl(pool->purge_ctl, NULL, NULL, NULL, 0);
    if (err != 0)
        return rm_error_set(pool->error_owner, RM_E_ALLOCATOR,
                            "jemalloc %s failed for pool %s: %s", pool->purge_ctl,
                            pool->name, strerror(err));
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Introspection                                                            */
/* ------------------------------------------------------------------------ */

const char *rm_pool_name(const rm_pool *pool)
{
    return pool->name;
}

void *rm_pool_base(const rm_pool *pool)
{
    return pool->base;
}

uint64_t rm_pool_ceiling_bytes(const rm_pool *pool)
{
    return pool->ceiling;
}

uint64_t rm_pool_committed_bytes(const rm_pool *pool)
{
    return rm_shm_extent_hooks_committed(&pool->hooks);
}
