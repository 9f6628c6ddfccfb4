/* jemalloc extent hooks that carve one arena out of one shared-memory
 * reservation, committing /dev/shm pages with fallocate() before use. */
#ifndef RM_HOOKS_SHM_EXTENT_HOOKS_H
#define RM_HOOKS_SHM_EXTENT_HOOKS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "jemalloc.h"

/**
 * The hooks of one arena and the reservation they serve: `size` bytes of a
 * shared-memory file `fd`, mapped MAP_SHARED once at `base` (file offset 0
 * at `base`). jemalloc passes `&hooks` back to every hook, which is how a
 * hook finds its reservation, so `hooks` is the first member and the struct
 * must not move or be freed while its arena exists (destroy the arena
 * first).
 *
 * Commit state, as jemalloc sees it, maps onto the file exactly:
 *  - committed = the range is allocated in the file (fallocate), so writes
 *    can never raise SIGBUS when /dev/shm fills;
 *  - decommitted = the range is a hole (FALLOC_FL_PUNCH_HOLE), which both
 *    returns its pages to /dev/shm and reads as zeroes afterwards.
 * Every range is handed out by alloc at most once (dalloc opts out, so
 * jemalloc retains and reuses ranges itself), and it starts as a hole.
 *
 * The hooks touch the file only while it is the arena's, which ends in two
 * ways: in a child of fork() (the child inherits a copy of the arena, but
 * the segment stays the parent's), and after rm_shm_extent_hooks_give_up()
 * (the owner hands the pages to the processes that still map them). From
 * then on every hook refuses: alloc and commit fail, decommit and the
 * purges opt out, destroy does nothing. Destroying that arena then frees
 * only its private bookkeeping and never punches a page someone reads.
 */
typedef struct rm_shm_extent_hooks {
    extent_hooks_t hooks;    /* first: see above; never holds a NULL hook */
    pid_t owner;             /* the process whose pool this is */
    uint64_t owner_generation; /* rm_fork_generation() in that process */
    int fd;                  /* the segment; not owned */
    unsigned char *base;     /* the reservation, page-aligned; not owned */
    size_t size;             /* its bytes, a multiple of the page size */
    pthread_mutex_t mutex;   /* guards cursor */
    size_t cursor;           /* offset of the first never-handed-out byte */
    atomic_uint_least64_t committed; /* bytes fallocated minus bytes punched */
    atomic_bool given_up;    /* the file is no longer the arena's */
} rm_shm_extent_hooks;

/**
 * Prepares `self` for a reservation owned by the calling process. Returns
 * 0, or an errno value if the mutex could not be created. The reservation
 * must be a hole throughout (a freshly ftruncate()d file): alloc reports
 * its ranges as zeroed.
 */
int rm_shm_extent_hooks_init(rm_shm_extent_hooks *self, int fd, void *base,
                             size_t size);

/**
 * Ends the arena's claim on the file: no hook changes it any more, so
 * destroying the arena afterwards leaves every page (live blocks and free
 * ones alike) in the file for whoever still maps it; tmpfs returns them
 * when the last mapping goes. Called before "arena.<i>.destroy", whose
 * teardown first frees every block (arena_reset) and purges all of it
 * (arena_decay with all = true), which decommits, i.e. punches, every page
 * before the destroy hook runs (jemalloc 5.3.0: arena_i_destroy_ctl,
 * ctl.c:2705-2711).
 */
void rm_shm_extent_hooks_give_up(rm_shm_extent_hooks *self);

/** Releases what init created. The arena must already be destroyed. */
void rm_shm_extent_hooks_fini(rm_shm_extent_hooks *self);

/** Bytes the hooks have committed in the file and not yet released. */
uint64_t rm_shm_extent_hooks_committed(const rm_shm_extent_hooks *self);

/**
 * Why the calling thread's hooks last refused memory. jemalloc reports a
 * failed allocation only as NULL; the pool resets this record before it
 * calls jemalloc and reads it after a NULL to say what ran out.
 */
typedef struct rm_shm_extent_failure {
    int commit_errno;         /* fallocate's errno (ENOSPC: /dev/shm full); 0 = none */
    uint64_t commit_bytes;    /* the bytes that fallocate could not commit */
    uint64_t reservation_short; /* bytes asked for beyond the reservation; 0 = none */
} rm_shm_extent_failure;

/** Forgets the calling thread's failure record. */
void rm_shm_extent_failure_reset(void);

/** The calling thread's failure record since the last reset. */
rm_shm_extent_failure rm_shm_extent_failure_last(void);

#endif
