/* jemalloc extent hooks that carve one arena out of one shared-memory
 * reservation, committing /dev/shm pages with fallocate() before use.
 *
 * Why each hook does what it does (jemalloc 5.3.0; file:line in its src/):
 *
 *  alloc      Hands out never-used ranges of the reservation by bumping a
 *             cursor. Fresh ranges are holes in the file, so they read as
 *             zeroes and *zero is always true. It commits only when jemalloc
 *             asks (*commit true on entry). The plugin's jemalloc runs
 *             without retention (plugin/tensor/shm_pool/pool.c says why), so it asks for
 *             exactly the extent it needs, committed (ecache_alloc_grow,
 *             extent.c:103-105); with retention it would ask for
 *             uncommitted growth steps and commit the part it uses.
 *  commit     fallocate(mode 0): allocates the pages now, so that a full
 *             /dev/shm is ENOSPC here (jemalloc turns it into a NULL from
 *             mallocx, extent.c:621-625 and 733-737) and never a SIGBUS on
 *             a later write to a sparse page.
 *  decommit   FALLOC_FL_PUNCH_HOLE: frees the pages back to /dev/shm and
 *             leaves a hole that reads as zeroes, which is what jemalloc
 *             assumes after a successful decommit (it marks the extent
 *             zeroed, extent.c:1053-1058) and why a later commit (fallocate
 *             over a hole) again yields zeroed memory, as the commit
 *             contract requires.
 *  dalloc     Opts out (returns true): the mapping is one reservation for
 *             the pool's life. jemalloc then decommits the range and keeps
 *             it as "retained" for reuse (extent.c:1034-1077).
 *  destroy    Punches the range (arena destruction, extent.c:1080-1101).
 *  purge_lazy Unsupported (returns true): MADV_FREE does nothing useful on
 *             MAP_SHARED memory.
 *  purge_forced
 *             Fails on purpose (returns true). On MAP_SHARED memory
 *             MADV_DONTNEED neither frees nor zeroes the file's pages, so
 *             a real forced purge would have to punch holes; but jemalloc
 *             keeps a purged extent marked *committed* (only decommit clears
 *             the flag, extent.c:1122-1130) and will reuse it without
 *             calling commit, so a write into the hole could SIGBUS when
 *             /dev/shm is full. Re-fallocating right after the punch would
 *             keep the pages charged (nothing released) and could itself
 *             fail with ENOSPC, leaving that hole behind. Failing costs
 *             nothing: every caller tries decommit first, which does the
 *             real work (extent_dalloc_wrapper, extent.c:1053-1061;
 *             base_unmap, base.c:93-96, for arenas whose metadata uses the
 *             hooks). The one other caller,
 *             extents_abandon_vm (extent.c:238-242), leaks a range after a
 *             failed split; its pages then stay committed until the pool is
 *             destroyed, which is safe.
 *  split      Allowed (returns false): the reservation is one mapping.
 *  merge      Allowed for adjacent ranges inside this reservation only.
 *
 * No hook is NULL: jemalloc tests the pointers (ehooks.h:77-93) and would
 * silently change behaviour (a NULL split or merge disables splitting or
 * coalescing altogether). */
#include "shm_extent_hooks.h"

#include "fork.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

/* The calling thread's last refusal; see rm_shm_extent_failure_last(). */
static _Thread_local rm_shm_extent_failure last_failure;

void rm_shm_extent_failure_reset(void)
{
    memset(&last_failure, 0, sizeof last_failure);
}

rm_shm_extent_failure rm_shm_extent_failure_last(void)
{
    return last_failure;
}

static rm_shm_extent_hooks *self_of(extent_hooks_t *hooks)
{
    /* `hooks` is the first member, so the addresses coincide. */
    return (rm_shm_extent_hooks *)(void *)hooks;
}

/* False once the file is not the arena's: in a child of fork() (the file
 * is the parent's) and after give_up (it is the importers'); see the
 * header. The fork generation, not getpid(): a system call per hook costs
 * more than the hook (measured ~1 us on these VMs). */
static bool in_owner(const rm_shm_extent_hooks *self)
{
    return rm_fork_generation() == self->owner_generation &&
           !atomic_load_explicit(&self->given_up, memory_order_acquire);
}

/* True and the range's file offset if [addr, addr + length) lies inside the
 * reservation; jemalloc only ever passes ranges it got from alloc, so false
 * means a bug, and the hook refuses rather than touch someone else's pages. */
static bool range_offset(const rm_shm_extent_hooks *self, const void *addr,
                         size_t length, size_t *out_offset)
{
    uintptr_t begin = (uintptr_t)self->base;
    uintptr_t at = (uintptr_t)addr;
    if (at < begin || length > self->size || at - begin > self->size - length)
        return false;
    *out_offset = (size_t)(at - begin);
    return true;
}

/* The check every hook that touches the file makes first: only the
 * creating process may (a forked child shares the segment but not the
 * arena), and only inside the reservation. */
static bool owned_range(const rm_shm_extent_hooks *self, const void *addr,
                        size_t length, size_t *out_offset)
{
    return in_owner(self) && range_offset(self, addr, length, out_offset);
}

/* FALLOC_FL_PUNCH_HOLE over a range; 0 or an errno value. */
static int punch(rm_shm_extent_hooks *self, size_t offset, size_t length)
{
    while (fallocate(self->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     (off_t)offset, (off_t)length) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* Allocates the pages of a range that is a hole. 0, or an errno value
 * (ENOSPC: /dev/shm is full) recorded for the calling thread. */
static int commit_range(rm_shm_extent_hooks *self, size_t offset, size_t length)
{
    /* tmpfs undoes a partial fallocate on EINTR, so retrying is clean. */
    while (fallocate(self->fd, 0, (off_t)offset, (off_t)length) != 0) {
        int err = errno;
        if (err == EINTR)
            continue;
        /* tmpfs already frees what a failed call allocated; a filesystem
         * that does not would leave pages the counter does not know about.
         * The range was a hole, so punching it again loses nothing. */
        (void)punch(self, offset, length);
        last_failure.commit_errno = err;
        last_failure.commit_bytes = length;
        return err;
    }
    atomic_fetch_add_explicit(&self->committed, length, memory_order_relaxed);
    return 0;
}

static void *shm_extent_alloc(extent_hooks_t *hooks, void *new_addr, size_t size,
                              size_t alignment, bool *zero, bool *commit,
                              unsigned arena_ind)
{
    (void)arena_ind;
    rm_shm_extent_hooks *self = self_of(hooks);
    if (size == 0 || alignment == 0 || (alignment & (alignment - 1)) != 0 ||
        !in_owner(self))
        return NULL;

    pthread_mutex_lock(&self->mutex);
    uintptr_t begin = (uintptr_t)self->base;
    uintptr_t next = begin + self->cursor;
    uintptr_t start = (next + (alignment - 1)) & ~(uintptr_t)(alignment - 1);
    if (new_addr != NULL) {
        /* Only never-used space can be handed out, and only exactly. */
        if ((uintptr_t)new_addr < next || ((uintptr_t)new_addr & (alignment - 1)) != 0) {
            pthread_mutex_unlock(&self->mutex);
            return NULL;
        }
        start = (uintptr_t)new_addr;
    }
    size_t offset = (size_t)(start - begin);
    if (start < next || offset > self->size || size > self->size - offset) {
        last_failure.reservation_short = size;
        pthread_mutex_unlock(&self->mutex);
        return NULL;
    }
    if (*commit && commit_range(self, offset, size) != 0) {
        pthread_mutex_unlock(&self->mutex);
        return NULL;
    }
    /* The space skipped for alignment stays unused: address space only. */
    self->cursor = offset + size;
    pthread_mutex_unlock(&self->mutex);

    *zero = true;
    return (void *)start;
}

static bool shm_extent_dalloc(extent_hooks_t *hooks, void *addr, size_t size,
                              bool committed, unsigned arena_ind)
{
    (void)hooks, (void)addr, (void)size, (void)committed, (void)arena_ind;
    return true;
}

static void shm_extent_destroy(extent_hooks_t *hooks, void *addr, size_t size,
                               bool committed, unsigned arena_ind)
{
    (void)arena_ind;
    rm_shm_extent_hooks *self = self_of(hooks);
    size_t offset;
    if (!owned_range(self, addr, size, &offset))
        return;
    /* Uncommitted ranges are holes already; punching them is harmless and
     * the counter only ever held what was committed. */
    if (punch(self, offset, size) == 0 && committed)
        atomic_fetch_sub_explicit(&self->committed, size, memory_order_relaxed);
}

static bool shm_extent_commit(extent_hooks_t *hooks, void *addr, size_t size,
                              size_t offset, size_t length, unsigned arena_ind)
{
    (void)size, (void)arena_ind;
    rm_shm_extent_hooks *self = self_of(hooks);
    size_t at;
    if (!owned_range(self, (const unsigned char *)addr + offset, length, &at))
        return true;
    return commit_range(self, at, length) != 0;
}

static bool shm_extent_decommit(extent_hooks_t *hooks, void *addr, size_t size,
                                size_t offset, size_t length, unsigned arena_ind)
{
    (void)size, (void)arena_ind;
    rm_shm_extent_hooks *self = self_of(hooks);
    size_t at;
    if (!owned_range(self, (const unsigned char *)addr + offset, length, &at))
        return true;
    if (punch(self, at, length) != 0)
        return true;
    atomic_fetch_sub_explicit(&self->committed, length, memory_order_relaxed);
    return false;
}

static bool shm_extent_purge_lazy(extent_hooks_t *hooks, void *addr, size_t size,
                                  size_t offset, size_t length, unsigned arena_ind)
{
    (void)hooks, (void)addr, (void)size, (void)offset, (void)length, (void)arena_ind;
    return true;
}

static bool shm_extent_purge_forced(extent_hooks_t *hooks, void *addr, size_t size,
                                    size_t offset, size_t length,
                                    unsigned arena_ind)
{
    /* Deliberately a failure; see the top of this file. */
    (void)hooks, (void)addr, (void)size, (void)offset, (void)length, (void)arena_ind;
    return true;
}

static bool shm_extent_split(extent_hooks_t *hooks, void *addr, size_t size,
                             size_t size_a, size_t size_b, bool committed,
                             unsigned arena_ind)
{
    (void)size_a, (void)size_b, (void)committed, (void)arena_ind;
    size_t offset;
    return !range_offset(self_of(hooks), addr, size, &offset);
}

static bool shm_extent_merge(extent_hooks_t *hooks, void *addr_a, size_t size_a,
                             void *addr_b, size_t size_b, bool committed,
                             unsigned arena_ind)
{
    (void)committed, (void)arena_ind;
    rm_shm_extent_hooks *self = self_of(hooks);
    size_t offset_a, offset_b;
    if (!range_offset(self, addr_a, size_a, &offset_a) ||
        !range_offset(self, addr_b, size_b, &offset_b))
        return true;
    return offset_a + size_a != offset_b;
}

int rm_shm_extent_hooks_init(rm_shm_extent_hooks *self, int fd, void *base,
                             size_t size)
{
    memset(self, 0, sizeof *self);
    self->hooks = (extent_hooks_t){
        .alloc = shm_extent_alloc,
        .dalloc = shm_extent_dalloc,
        .destroy = shm_extent_destroy,
        .commit = shm_extent_commit,
        .decommit = shm_extent_decommit,
        .purge_lazy = shm_extent_purge_lazy,
        .purge_forced = shm_extent_purge_forced,
        .split = shm_extent_split,
        .merge = shm_extent_merge,
    };
    rm_fork_hook_install();
    self->owner = getpid();
    self->owner_generation = rm_fork_generation();
    self->fd = fd;
    self->base = base;
    self->size = size;
    self->cursor = 0;
    atomic_init(&self->committed, 0);
    atomic_init(&self->given_up, false);
    return pthread_mutex_init(&self->mutex, NULL);
}

void rm_shm_extent_hooks_give_up(rm_shm_extent_hooks *self)
{
    atomic_store_explicit(&self->given_up, true, memory_order_release);
}

void rm_shm_extent_hooks_fini(rm_shm_extent_hooks *self)
{
    pthread_mutex_destroy(&self->mutex);
}

uint64_t rm_shm_extent_hooks_committed(const rm_shm_extent_hooks *self)
{
    return atomic_load_explicit(&self->committed, memory_order_relaxed);
}
