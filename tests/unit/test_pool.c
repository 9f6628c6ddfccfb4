/* The shared-memory pool: segment naming and permissions, block sizes and
 * alignment, sharing with another process by name, fork() safety, failed
 * creation, reuse without new commits, cheap frees of huge blocks, explicit
 * purging, concurrency, /dev/shm exhaustion (an error, never SIGBUS), and
 * destruction. Child processes report by exit status, never through
 * Criterion. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "pool.h"

static const int error_owner_token;
#define OWNER ((const void *)&error_owner_token)

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* Names of the pools this test created. A failed assertion ends the test
 * before rm_pool_destroy(); the suite's fini unlinks what is left, so that
 * a failing run does not fill /dev/shm with 1 GiB files. */
static char created_names[16][RM_POOL_NAME_MAX];
static size_t created_count;

static void unlink_leftovers(void)
{
    for (size_t i = 0; i < created_count; i++)
        (void)shm_unlink(created_names[i]); /* ENOENT once destroyed */
}

TestSuite(pool, .timeout = 60, .fini = unlink_leftovers);

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                 */
/* ------------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static rm_pool *make_pool(const char *namespace_name, uint64_t ceiling)
{
    rm_pool_config config = {.namespace_name = namespace_name, .ceiling_bytes = ceiling};
    rm_pool *pool = NULL;
    int32_t rc = rm_pool_create(&config, OWNER, &pool);
    cr_assert_eq(rc, RM_OK, "rm_pool_create: %s: %s", rm_error_name(rc),
                 rm_error_last(OWNER));
    cr_assert_not_null(pool);
    if (created_count < sizeof created_names / sizeof created_names[0])
        snprintf(created_names[created_count++], RM_POOL_NAME_MAX, "%s",
                 rm_pool_name(pool));
    return pool;
}

static void *alloc_ok(rm_pool *pool, size_t size, size_t alignment)
{
    void *block = NULL;
    int32_t rc = rm_pool_alloc(pool, size, alignment, &block);
    cr_assert_eq(rc, RM_OK, "alloc %zu (align %zu): %s: %s", size, alignment,
                 rm_error_name(rc), rm_error_last(OWNER));
    return block;
}

/* What the segment really holds in /dev/shm, from the file system's side. */
static uint64_t segment_allocated_bytes(const rm_pool *pool)
{
    int fd = shm_open(rm_pool_name(pool), O_RDONLY | O_NOFOLLOW, 0);
    cr_assert_geq(fd, 0, "shm_open(%s): %s", rm_pool_name(pool), strerror(errno));
    struct stat info;
    cr_assert_eq(fstat(fd, &info), 0);
    close(fd);
    return (uint64_t)info.st_blocks * 512u;
}

/* The hooks' counter and the file agree exactly: every page the arena uses
 * was committed by fallocate (a page written without it would show up in
 * st_blocks only, and is the page that would SIGBUS on a full /dev/shm). */
static void assert_committed_matches_file(const rm_pool *pool)
{
    uint64_t counted = rm_pool_committed_bytes(pool);
    uint64_t in_file = segment_allocated_bytes(pool);
    cr_assert_eq(counted, in_file, "committed counter %llu != st_blocks bytes %llu",
                 (unsigned long long)counted, (unsigned long long)in_file);
}

/* Segments named "rm.<namespace>." in /dev/shm (-1 if it cannot be read). */
static int count_segments(const char *namespace_name)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rm.%s.", namespace_name);
    DIR *dir = opendir("/dev/shm");
    if (dir == NULL)
        return -1;
    int count = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        if (strncmp(entry->d_name, prefix, strlen(prefix)) == 0)
            count++;
    closedir(dir);
    return count;
}

/* Runs `body` in a forked child and returns its wait status. The child
 * never returns into Criterion: it reports by exit code (and stderr). */
static int run_in_child(int (*body)(void *), void *arg)
{
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0, "fork: %s", strerror(errno));
    if (child == 0)
        _exit(body(arg));
    int status = 0;
    while (waitpid(child, &status, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    return status;
}

static void assert_child_passed(int status, const char *what)
{
    cr_assert(!WIFSIGNALED(status), "%s: child killed by signal %d (%s)", what,
              WTERMSIG(status), strsignal(WTERMSIG(status)));
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s: child failed with exit code %d (reason on stderr)", what,
              WEXITSTATUS(status));
}

/* Checks inside a child: print why, then exit with `code`. */
#define CHILD_CHECK(condition, code, ...)                      \
    do {                                                       \
        if (!(condition)) {                                    \
            fprintf(stderr, "child check %d failed: ", code);  \
            fprintf(stderr, __VA_ARGS__);                      \
            fprintf(stderr, "\n");                             \
            return code;                                       \
        }                                                      \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Segment                                                                  */
/* ------------------------------------------------------------------------ */

static bool is_hex16(const char *text)
{
    if (strlen(text) != 16)
        return false;
    for (size_t i = 0; i < 16; i++)
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            return false;
    return true;
}

Test(pool, names_are_namespaced_and_unguessable)
{
    rm_pool *a = make_pool("unit-names", 0);
    rm_pool *b = make_pool("unit-names", 0);
    char expected_prefix[64];
    snprintf(expected_prefix, sizeof expected_prefix, "/rm.unit-names.%ld.",
             (long)getpid());
    const rm_pool *pools[] = {a, b};
    for (int i = 0; i < 2; i++) {
        const char *name = rm_pool_name(pools[i]);
        cr_assert_eq(strncmp(name, expected_prefix, strlen(expected_prefix)), 0,
                     "name %s does not start with %s", name, expected_prefix);
        cr_assert(is_hex16(name + strlen(expected_prefix)),
                  "name %s does not end in 16 hex digits", name);
    }
    cr_assert_str_neq(rm_pool_name(a), rm_pool_name(b));
    cr_assert_eq(rm_pool_ceiling_bytes(a), RM_POOL_DEFAULT_CEILING);
    cr_assert_eq(count_segments("unit-names"), 2);
    rm_pool_destroy(a);
    rm_pool_destroy(b);
    cr_assert_eq(count_segments("unit-names"), 0);
}

Test(pool, segment_is_private_whatever_the_umask)
{
    /* 0 would give 0600 from shm_open alone; 0277 would give 0400 without
     * the fchmod. Both must end up 0600. */
    const mode_t masks[] = {0, 0277};
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
        mode_t previous = umask(masks[i]);
        rm_pool *pool = make_pool("unit-mode", 8 * MiB);
        umask(previous);
        int fd = shm_open(rm_pool_name(pool), O_RDONLY | O_NOFOLLOW, 0);
        cr_assert_geq(fd, 0, "shm_open: %s", strerror(errno));
        struct stat info;
        cr_assert_eq(fstat(fd, &info), 0);
        close(fd);
        cr_assert(S_ISREG(info.st_mode));
        cr_assert_eq(info.st_mode & 07777, 0600, "umask %o gave mode %o",
                     (unsigned)masks[i], (unsigned)(info.st_mode & 07777));
        cr_assert_eq(info.st_uid, geteuid());
        cr_assert_eq((uint64_t)info.st_size, 8 * MiB, "the segment is the ceiling");
        rm_pool_destroy(pool);
    }
}

Test(pool, rejects_bad_configs_and_leaves_nothing)
{
    struct {
        const char *namespace_name;
        uint64_t ceiling;
    } cases[] = {
        {NULL, 0},
        {"", 0},
        {"unit/reject", 0},
        {"unit.reject", 0},
        {"unit-reject-aaaaaaaaaaaaaaaaaaaaa", 0}, /* 33 characters */
        {"unit-reject", 3 * MiB},                 /* not a multiple of 2 MiB */
        {"unit-reject", 2 * MiB},                 /* below the minimum */
        {"unit-reject", ((uint64_t)1 << 40) + 2 * MiB},
        {"unit-reject", ((uint64_t)1 << 30) + 4 * KiB},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rm_pool_config config = {.namespace_name = cases[i].namespace_name,
                                 .ceiling_bytes = cases[i].ceiling};
        rm_pool *pool = (rm_pool *)&config; /* must be overwritten with NULL */
        rm_error_clear();
        int32_t rc = rm_pool_create(&config, OWNER, &pool);
        cr_assert_eq(rc, RM_E_INVALID_ARGUMENT, "case %zu: %s", i, rm_error_name(rc));
        cr_assert_null(pool, "case %zu", i);
        cr_assert_str_not_empty(rm_error_last(OWNER), "case %zu has no message", i);
    }
    /* Exactly 32 characters is fine. */
    rm_pool_destroy(make_pool("unit-reject-aaaaaaaaaaaaaaaaaaaa", 4 * MiB));
    cr_assert_eq(rm_pool_create(NULL, OWNER, NULL), RM_E_INVALID_ARGUMENT);
    cr_assert_eq(count_segments("unit-reject"), 0);
    cr_assert_eq(count_segments("unit-reject-aaaaaaaaaaaaaaaaaaaa"), 0);
}

/* ------------------------------------------------------------------------ */
/* Blocks                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct live_block {
    unsigned char *at;
    size_t size;
} live_block;

static int by_address(const void *left, const void *right)
{
    const live_block *a = left, *b = right;
    return (a->at > b->at) - (a->at < b->at);
}

Test(pool, blocks_of_every_size_are_aligned_inside_and_disjoint)
{
    rm_pool *pool = make_pool("unit-sizes", 0);
    unsigned char *base = rm_pool_base(pool);
    uint64_t ceiling = rm_pool_ceiling_bytes(pool);
    const size_t sizes[] = {1,         63,       64,       100,      4 * KiB,
                            4 * KiB + 1, 14 * KiB, 64 * KiB, 100000,   1 * MiB,
                            3 * MiB + 5, 16 * MiB, 64 * MiB};
    const size_t alignments[] = {0, 64, 128, 4 * KiB, 64 * KiB, 2 * MiB};
    enum { N_SIZES = sizeof sizes / sizeof sizes[0] };
    enum { N_ALIGN = sizeof alignments / sizeof alignments[0] };
    live_block blocks[N_SIZES * N_ALIGN];
    size_t count = 0;
    for (size_t s = 0; s < N_SIZES; s++) {
        for (size_t a = 0; a < N_ALIGN; a++) {
            /* The biggest sizes once or twice: they would only cost time. */
            if (sizes[s] >= 16 * MiB && a % 3 != 0)
                continue;
            size_t want = alignments[a] < RM_POOL_MIN_ALIGNMENT ? RM_POOL_MIN_ALIGNMENT
                                                                : alignments[a];
            unsigned char *block = alloc_ok(pool, sizes[s], alignments[a]);
            cr_assert_eq((uintptr_t)block % want, 0, "%zu bytes at %p not aligned to %zu",
                         sizes[s], (void *)block, want);
            cr_assert(block >= base && (uint64_t)(block - base) + sizes[s] <= ceiling,
                      "%zu bytes at %p outside the pool [%p, +%llu)", sizes[s],
                      (void *)block, (void *)base, (unsigned long long)ceiling);
            uint64_t offset = UINT64_MAX;
            cr_assert_eq(rm_pool_offset_of(pool, block, &offset), RM_OK);
            cr_assert_eq(offset, (uint64_t)(block - base));
            cr_assert_eq(offset % want, 0, "offset %llu not aligned like the block",
                         (unsigned long long)offset);
            cr_assert_eq(rm_pool_offset_of(pool, block + sizes[s] - 1, &offset), RM_OK);
            /* Write the ends (all of a small block) to catch overlaps. */
            unsigned char mark = (unsigned char)(count + 1);
            size_t edge = sizes[s] < 8 * KiB ? sizes[s] : 4 * KiB;
            memset(block, mark, edge);
            memset(block + sizes[s] - edge, mark, edge);
            blocks[count++] = (live_block){block, sizes[s]};
        }
    }
    for (size_t i = 0; i < count; i++) {
        unsigned char mark = (unsigned char)(i + 1);
        cr_assert_eq(blocks[i].at[0], mark, "block %zu overwritten", i);
        cr_assert_eq(blocks[i].at[blocks[i].size - 1], mark, "block %zu overwritten", i);
    }
    qsort(blocks, count, sizeof blocks[0], by_address);
    for (size_t i = 1; i < count; i++)
        cr_assert(blocks[i - 1].at + blocks[i - 1].size <= blocks[i].at,
                  "blocks at %p (+%zu) and %p overlap", (void *)blocks[i - 1].at,
                  blocks[i - 1].size, (void *)blocks[i].at);
    assert_committed_matches_file(pool);
    for (size_t i = 0; i < count; i++)
        cr_assert_eq(rm_pool_free(pool, blocks[i].at), RM_OK);
    rm_pool_destroy(pool);
}

Test(pool, rejects_bad_blocks_with_a_message)
{
    rm_pool *pool = make_pool("unit-bad", 8 * MiB);
    void *block = (void *)&block;
    cr_assert_eq(rm_pool_alloc(pool, 0, 64, &block), RM_E_INVALID_ARGUMENT);
    cr_assert_null(block, "out is cleared on failure");
    cr_assert(strstr(rm_error_last(OWNER), "at least one byte") != NULL);
    cr_assert_eq(rm_pool_alloc(pool, 100, 96, &block), RM_E_INVALID_ARGUMENT);
    cr_assert(strstr(rm_error_last(OWNER), "power of two") != NULL);
    cr_assert_eq(rm_pool_alloc(pool, 9 * MiB, 64, &block), RM_E_NO_MEMORY);
    cr_assert(strstr(rm_error_last(OWNER), "ceiling") != NULL, "%s", rm_error_last(OWNER));
    cr_assert_eq(rm_pool_alloc(pool, 64, 64, NULL), RM_E_INVALID_ARGUMENT);

    /* The ceiling is reached by the reservation, not only by one request. */
    void *big = alloc_ok(pool, 4 * MiB, 0);
    int32_t rc = rm_pool_alloc(pool, 4 * MiB, 0, &block);
    cr_assert_eq(rc, RM_E_NO_MEMORY, "%s", rm_error_name(rc));
    cr_assert(strstr(rm_error_last(OWNER), "ceiling") != NULL, "%s", rm_error_last(OWNER));
    cr_assert(strstr(rm_error_last(OWNER), rm_pool_name(pool)) != NULL);

    int on_stack = 0;
    uint64_t offset = 0;
    unsigned char *base = rm_pool_base(pool);
    cr_assert_eq(rm_pool_free(pool, &on_stack), RM_E_INVALID_ARGUMENT);
    cr_assert_eq(rm_pool_free(pool, (unsigned char *)big + 1), RM_E_INVALID_ARGUMENT);
    cr_assert_eq(rm_pool_offset_of(pool, &on_stack, &offset), RM_E_INVALID_ARGUMENT);
    cr_assert_eq(rm_pool_offset_of(pool, base + rm_pool_ceiling_bytes(pool), &offset),
                 RM_E_INVALID_ARGUMENT);
    cr_assert_eq(rm_pool_offset_of(pool, base - 1, &offset), RM_E_INVALID_ARGUMENT);
    cr_assert_eq(rm_pool_free(pool, NULL), RM_OK);
    cr_assert_eq(rm_pool_free(pool, big), RM_OK);
    rm_pool_destroy(pool);
}

/* ------------------------------------------------------------------------ */
/* Sharing                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct reader_job {
    char name[RM_POOL_NAME_MAX]; /* inline: the child must not chase pointers */
    uint64_t ceiling;
    uint64_t offsets[3];
    size_t sizes[3];
    int go[2];   /* parent -> child: second pattern written */
    int ready[2]; /* child -> parent: mapped and first pattern checked */
} reader_job;

static unsigned char pattern(size_t block, size_t index, int round)
{
    return (unsigned char)(index * 31u + block * 7u + (unsigned)round * 101u + 1u);
}

static int check_patterns(const unsigned char *view, const reader_job *job, int round)
{
    for (size_t b = 0; b < 3; b++) {
        const unsigned char *block = view + job->offsets[b];
        size_t step = job->sizes[b] > 64 * KiB ? 4093 : 1;
        for (size_t i = 0; i < job->sizes[b]; i += step)
            if (block[i] != pattern(b, i, round))
                return (int)b + 1;
        if (block[job->sizes[b] - 1] != pattern(b, job->sizes[b] - 1, round))
            return (int)b + 1;
    }
    return 0;
}

static int reader_child(void *arg)
{
    reader_job *job = arg;
    close(job->go[1]);
    close(job->ready[0]);
    int fd = shm_open(job->name, O_RDONLY | O_NOFOLLOW, 0);
    CHILD_CHECK(fd >= 0, 10, "shm_open(%s): %s", job->name, strerror(errno));
    struct stat info;
    CHILD_CHECK(fstat(fd, &info) == 0, 11, "fstat: %s", strerror(errno));
    CHILD_CHECK((uint64_t)info.st_size == job->ceiling, 12, "size %lld",
                (long long)info.st_size);
    CHILD_CHECK(mmap(NULL, (size_t)info.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     0) == MAP_FAILED && errno == EACCES,
                13, "a read-only open must not be writable");
    const unsigned char *view =
        mmap(NULL, (size_t)info.st_size, PROT_READ, MAP_SHARED, fd, 0);
    CHILD_CHECK(view != MAP_FAILED, 14, "mmap: %s", strerror(errno));
    close(fd);
    int bad = check_patterns(view, job, 0);
    CHILD_CHECK(bad == 0, 20 + bad, "block %d differs before the update", bad);
    char token = 'r';
    CHILD_CHECK(write(job->ready[1], &token, 1) == 1, 15, "write: %s", strerror(errno));
    CHILD_CHECK(read(job->go[0], &token, 1) == 1, 16, "read: %s", strerror(errno));
    /* Written by the parent after this mapping existed: the same pages. */
    bad = check_patterns(view, job, 1);
    CHILD_CHECK(bad == 0, 30 + bad, "block %d differs after the update", bad);
    return 0;
}

Test(pool, another_process_reads_blocks_by_name_and_offset)
{
    rm_pool *pool = make_pool("unit-share", 0);
    reader_job job = {.ceiling = rm_pool_ceiling_bytes(pool)};
    snprintf(job.name, sizeof job.name, "%s", rm_pool_name(pool));
    const size_t sizes[3] = {100, 1 * MiB + 3, 16 * MiB};
    unsigned char *blocks[3];
    for (size_t b = 0; b < 3; b++) {
        blocks[b] = alloc_ok(pool, sizes[b], 0);
        job.sizes[b] = sizes[b];
        cr_assert_eq(rm_pool_offset_of(pool, blocks[b], &job.offsets[b]), RM_OK);
        for (size_t i = 0; i < sizes[b]; i++)
            blocks[b][i] = pattern(b, i, 0);
    }
    cr_assert_eq(pipe(job.go), 0);
    cr_assert_eq(pipe(job.ready), 0);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0)
        _exit(reader_child(&job));
    close(job.go[0]);
    close(job.ready[1]);
    char token;
    bool mapped = read(job.ready[0], &token, 1) == 1;
    if (mapped)
        for (size_t b = 0; b < 3; b++)
            for (size_t i = 0; i < sizes[b]; i++)
                blocks[b][i] = pattern(b, i, 1);
    token = 'g';
    if (mapped) /* else the child has failed; its status says why */
        cr_assert_eq(write(job.go[1], &token, 1), 1);
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    close(job.go[1]);
    close(job.ready[0]);
    assert_child_passed(status, "reader");
    rm_pool_destroy(pool);
}

/* The segment's bytes as the file holds them. pread() reads holes as
 * zeroes without allocating pages, unlike a fault on a mapping would. */
static unsigned char *segment_snapshot(const rm_pool *pool)
{
    size_t length = (size_t)rm_pool_ceiling_bytes(pool);
    unsigned char *copy = malloc(length);
    cr_assert_not_null(copy);
    int fd = shm_open(rm_pool_name(pool), O_RDONLY | O_NOFOLLOW, 0);
    cr_assert_geq(fd, 0);
    for (size_t done = 0; done < length;) {
        ssize_t got = pread(fd, copy + done, length - done, (off_t)done);
        cr_assert_gt(got, 0, "pread: %s", strerror(errno));
        done += (size_t)got;
    }
    close(fd);
    return copy;
}

static int exit_at_once(void *arg)
{
    (void)arg;
    return 0;
}

Test(pool, a_forked_child_does_not_write_into_the_pool)
{
    /* jemalloc's fork handlers re-initialise every arena's mutexes, lists
     * and counters in the child. If the arena's metadata lived in the
     * shared segment, the child would be rewriting the parent's live
     * allocator state (a mutex the parent holds, unlocked by the child). */
    rm_pool *pool = make_pool("unit-fork", 16 * MiB);
    void *blocks[64];
    for (int i = 0; i < 64; i++) {
        blocks[i] = alloc_ok(pool, (size_t)(i + 1) * 1000, 0);
        memset(blocks[i], i, (size_t)(i + 1) * 1000);
    }
    for (int i = 0; i < 64; i += 2)
        cr_assert_eq(rm_pool_free(pool, blocks[i]), RM_OK);
    unsigned char *before = segment_snapshot(pool);
    assert_child_passed(run_in_child(exit_at_once, NULL), "fork");
    unsigned char *after = segment_snapshot(pool);
    size_t length = (size_t)rm_pool_ceiling_bytes(pool);
    size_t first_change = length;
    for (size_t i = 0; i < length && first_change == length; i++)
        if (before[i] != after[i])
            first_change = i;
    cr_assert_eq(first_change, length, "the child changed the pool at offset %zu",
                 first_change);
    free(before);
    free(after);
    rm_pool_destroy(pool);
}

static int purge_and_destroy_copy(void *arg)
{
    rm_pool *pool = arg;
    (void)rm_pool_purge(pool);
    rm_pool_destroy(pool);
    return 0;
}

Test(pool, a_forked_child_destroying_its_copy_leaves_the_parent_intact)
{
    rm_pool *pool = make_pool("unit-forkdestroy", 16 * MiB);
    unsigned char *kept = alloc_ok(pool, 1 * MiB, 0);
    memset(kept, 0x6d, 1 * MiB);
    unsigned char *freed = alloc_ok(pool, 2 * MiB, 0);
    memset(freed, 0x6e, 2 * MiB);
    cr_assert_eq(rm_pool_free(pool, freed), RM_OK); /* dirty: a purge would punch it */
    uint64_t committed = rm_pool_committed_bytes(pool);
    unsigned char *before = segment_snapshot(pool);

    assert_child_passed(run_in_child(purge_and_destroy_copy, pool), "destroy in child");

    int fd = shm_open(rm_pool_name(pool), O_RDONLY | O_NOFOLLOW, 0);
    cr_assert_geq(fd, 0, "the child unlinked the parent's segment: %s", strerror(errno));
    close(fd);
    unsigned char *after = segment_snapshot(pool);
    cr_assert_eq(memcmp(before, after, (size_t)rm_pool_ceiling_bytes(pool)), 0,
                 "the child changed the parent's segment");
    cr_assert_eq(segment_allocated_bytes(pool), committed,
                 "the child released the parent's pages");
    for (size_t i = 0; i < 1 * MiB; i += 4093)
        cr_assert_eq(kept[i], 0x6d);
    free(before);
    free(after);
    rm_pool_destroy(pool);
}

/* ------------------------------------------------------------------------ */
/* Failed creation                                                          */
/* ------------------------------------------------------------------------ */

static int create_without_address_space(void *arg)
{
    (void)arg;
    /* Room for everything but the 1 GiB reservation, so that creation
     * fails after the segment exists and must unlink it. */
    long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    CHILD_CHECK(statm != NULL && fscanf(statm, "%ld", &pages) == 1, 2, "statm");
    fclose(statm);
    rlim_t limit = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + 256 * MiB;
    struct rlimit address_space = {.rlim_cur = limit, .rlim_max = limit};
    CHILD_CHECK(setrlimit(RLIMIT_AS, &address_space) == 0, 3, "setrlimit: %s",
                strerror(errno));
    rm_pool_config config = {.namespace_name = "unit-nospace",
                             .ceiling_bytes = (uint64_t)1 << 30};
    rm_pool *pool = (rm_pool *)&config;
    int32_t rc = rm_pool_create(&config, OWNER, &pool);
    CHILD_CHECK(rc == RM_E_NO_MEMORY && pool == NULL, 4, "create: %s (%s)",
                rm_error_name(rc), rm_error_last(OWNER));
    CHILD_CHECK(strstr(rm_error_last(OWNER), "address space") != NULL, 5, "message: %s",
                rm_error_last(OWNER));
    CHILD_CHECK(count_segments("unit-nospace") == 0, 6,
                "a failed creation left its segment in /dev/shm");
    return 0;
}

Test(pool, a_failed_creation_unlinks_its_segment)
{
    assert_child_passed(run_in_child(create_without_address_space, NULL),
                        "create under RLIMIT_AS");
    cr_assert_eq(count_segments("unit-nospace"), 0);
}

/* ------------------------------------------------------------------------ */
/* Reuse, frees, purging                                                    */
/* ------------------------------------------------------------------------ */

Test(pool, freed_memory_is_reused_without_new_commits)
{
    rm_pool *pool = make_pool("unit-reuse", 0);
    void *block = alloc_ok(pool, 1 * MiB, 0);
    memset(block, 1, 1 * MiB);
    cr_assert_eq(rm_pool_free(pool, block), RM_OK);
    uint64_t after_first = rm_pool_committed_bytes(pool);
    for (int cycle = 0; cycle < 1000; cycle++) {
        block = alloc_ok(pool, 1 * MiB, 0);
        ((unsigned char *)block)[cycle * 1000] = 2;
        cr_assert_eq(rm_pool_free(pool, block), RM_OK);
    }
    cr_assert_eq(rm_pool_committed_bytes(pool), after_first,
                 "1000 cycles of 1 MiB grew the commit from %llu to %llu",
                 (unsigned long long)after_first,
                 (unsigned long long)rm_pool_committed_bytes(pool));
    assert_committed_matches_file(pool);
    rm_pool_destroy(pool);
}

Test(pool, freeing_huge_blocks_does_not_purge)
{
    rm_pool *pool = make_pool("unit-bigfree", 0);
    const size_t sizes[] = {16 * MiB, 256 * MiB};
    for (size_t s = 0; s < 2; s++) {
        /* Minimum of a few runs: immune to a preempted run, while a
         * synchronous purge (punching every page) costs every run. */
        uint64_t fastest = UINT64_MAX;
        for (int run = 0; run < 4; run++) {
            unsigned char *block = alloc_ok(pool, sizes[s], 0);
            for (size_t i = 0; i < sizes[s]; i += 4 * KiB)
                block[i] = 1;
            uint64_t committed = rm_pool_committed_bytes(pool);
            uint64_t start = now_ns();
            cr_assert_eq(rm_pool_free(pool, block), RM_OK);
            uint64_t took = now_ns() - start;
            fastest = took < fastest ? took : fastest;
            cr_assert_eq(rm_pool_committed_bytes(pool), committed,
                         "the free of %zu bytes purged pages", sizes[s]);
        }
        cr_log_info("free of %zu MiB: %.1f us (fastest of 4)", sizes[s] / MiB,
                    (double)fastest / 1e3);
        cr_assert_lt(fastest, 5000000u, "free of %zu bytes took %.3f ms", sizes[s],
                     (double)fastest / 1e6);
    }
    assert_committed_matches_file(pool);
    rm_pool_destroy(pool);
}

Test(pool, purge_returns_pages_to_dev_shm)
{
    rm_pool *pool = make_pool("unit-purge", 0);
    unsigned char *big[4];
    unsigned char *small[256];
    for (int i = 0; i < 4; i++) {
        big[i] = alloc_ok(pool, 16 * MiB, 0);
        memset(big[i], 0x11, 16 * MiB);
    }
    for (int i = 0; i < 256; i++) {
        small[i] = alloc_ok(pool, 8 * KiB, 0);
        memset(small[i], 0x22, 8 * KiB);
    }
    uint64_t held = rm_pool_committed_bytes(pool);
    cr_assert_geq(held, 64 * MiB + 256 * 8 * KiB);
    assert_committed_matches_file(pool);

    for (int i = 0; i < 4; i++)
        cr_assert_eq(rm_pool_free(pool, big[i]), RM_OK);
    for (int i = 0; i < 256; i++)
        cr_assert_eq(rm_pool_free(pool, small[i]), RM_OK);
    cr_assert_eq(rm_pool_committed_bytes(pool), held, "frees alone keep the pages");

    cr_assert_eq(rm_pool_purge(pool), RM_OK);
    uint64_t left = rm_pool_committed_bytes(pool);
    cr_assert_eq(left, 0, "purge kept %llu of %llu bytes with no block allocated",
                 (unsigned long long)left, (unsigned long long)held);
    assert_committed_matches_file(pool);

    /* Purged space is committed again (zeroed) before it is handed out. */
    unsigned char *again = alloc_ok(pool, 16 * MiB, 0);
    memset(again, 0x33, 16 * MiB);
    cr_assert_geq(rm_pool_committed_bytes(pool), 16 * MiB);
    assert_committed_matches_file(pool);
    rm_pool_destroy(pool);
}

typedef struct churn_job {
    rm_pool *pool;
    unsigned seed;
    int failures;
} churn_job;

static void *churn(void *arg)
{
    churn_job *job = arg;
    enum { LIVE = 48 };
    unsigned char *live[LIVE] = {0};
    size_t sizes[LIVE] = {0};
    for (int op = 0; op < 3000; op++) {
        unsigned slot = (unsigned)rand_r(&job->seed) % LIVE;
        if (live[slot] != NULL) {
            if (live[slot][0] != (unsigned char)slot ||
                live[slot][sizes[slot] - 1] != (unsigned char)slot)
                job->failures++;
            if (rm_pool_free(job->pool, live[slot]) != RM_OK)
                job->failures++;
            live[slot] = NULL;
            continue;
        }
        /* Mostly small, sometimes up to 2 MiB. */
        unsigned roll = (unsigned)rand_r(&job->seed);
        size_t size = (roll % 8 == 0) ? 1 + roll % (2 * MiB) : 1 + roll % (16 * KiB);
        void *block = NULL;
        if (rm_pool_alloc(job->pool, size, 0, &block) != RM_OK) {
            job->failures++;
            continue;
        }
        live[slot] = block;
        sizes[slot] = size;
        live[slot][0] = (unsigned char)slot;
        live[slot][size - 1] = (unsigned char)slot;
    }
    for (unsigned slot = 0; slot < LIVE; slot++)
        if (live[slot] != NULL && rm_pool_free(job->pool, live[slot]) != RM_OK)
            job->failures++;
    return NULL;
}

Test(pool, threads_share_the_arena_and_the_books_balance)
{
    rm_pool *pool = make_pool("unit-threads", 0);
    churn_job jobs[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (churn_job){.pool = pool, .seed = 1234u + (unsigned)i};
        cr_assert_eq(pthread_create(&threads[i], NULL, churn, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_eq(jobs[i].failures, 0, "thread %d saw %d failures", i,
                     jobs[i].failures);
    }
    assert_committed_matches_file(pool);
    cr_assert_gt(rm_pool_committed_bytes(pool), 0, "freed pages stay until a purge");
    cr_assert_eq(rm_pool_purge(pool), RM_OK);
    cr_assert_eq(rm_pool_committed_bytes(pool), 0);
    assert_committed_matches_file(pool);
    rm_pool_destroy(pool);
}

/* ------------------------------------------------------------------------ */
/* Exhaustion: a 64 MiB /dev/shm, as Docker gives by default                */
/* ------------------------------------------------------------------------ */

#define SKIP_EXIT 77

static int exhaustion_child(void *arg)
{
    (void)arg;
    /* A private mount namespace, so the small /dev/shm is ours alone. */
    if (unshare(CLONE_NEWNS) != 0)
        return errno == EPERM ? SKIP_EXIT : 2;
    CHILD_CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, 3,
                "make-rprivate: %s", strerror(errno));
    if (mount("rm-test", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
              "size=64m,mode=1777") != 0)
        return errno == EPERM ? SKIP_EXIT : 4;

    rm_pool_config config = {.namespace_name = "unit-full"};
    rm_pool *pool = NULL;
    int32_t rc = rm_pool_create(&config, OWNER, &pool);
    CHILD_CHECK(rc == RM_OK, 5, "create: %s", rm_error_last(OWNER));

    /* Fill /dev/shm with a mix of sizes until the pool says no. */
    enum { MAX_BLOCKS = 4096 };
    static unsigned char *blocks[MAX_BLOCKS];
    static size_t sizes[MAX_BLOCKS];
    const size_t pattern_sizes[] = {8 * MiB, 1 * MiB, 64 * KiB, 4 * KiB, 3 * MiB + 17};
    size_t count = 0, total = 0, refused = 0, refused_size = 0;
    char message[RM_ERROR_MESSAGE_MAX] = "";
    for (size_t i = 0; count < MAX_BLOCKS; i++) {
        size_t size = pattern_sizes[i % 5];
        void *block = NULL;
        rc = rm_pool_alloc(pool, size, 0, &block);
        if (rc == RM_E_NO_MEMORY) {
            if (refused++ == 0) {
                refused_size = size;
                snprintf(message, sizeof message, "%s", rm_error_last(OWNER));
            }
            /* Keep going with the smaller sizes until even 4 KiB fails. */
            if (refused >= 5)
                break;
            continue;
        }
        CHILD_CHECK(rc == RM_OK, 7, "alloc %zu: %s", size, rm_error_last(OWNER));
        blocks[count] = block;
        sizes[count++] = size;
        total += size;
    }

    /* First write every byte of every block that was handed out: each must
     * be backed, so no SIGBUS (the exit status of this process is the
     * proof). A pool that left its pages sparse would have handed out more
     * than /dev/shm holds and die here. */
    for (size_t i = 0; i < count; i++)
        memset(blocks[i], (int)(i & 0xff), sizes[i]);
    for (size_t i = 0; i < count; i++)
        CHILD_CHECK(blocks[i][0] == (unsigned char)(i & 0xff) &&
                        blocks[i][sizes[i] - 1] == (unsigned char)(i & 0xff),
                    10, "block %zu lost its contents", i);

    CHILD_CHECK(refused >= 5, 8, "64 MiB of /dev/shm never ran out (%zu bytes)", total);
    CHILD_CHECK(total <= 64 * MiB && total >= 40 * MiB, 9,
                "%zu bytes allocated from a 64 MiB /dev/shm", total);
    char size_text[32];
    snprintf(size_text, sizeof size_text, "%zu bytes", refused_size);
    CHILD_CHECK(strstr(message, "/dev/shm") != NULL && strstr(message, size_text) != NULL,
                6, "message does not name /dev/shm and %s: %s", size_text, message);
    int fd = shm_open(rm_pool_name(pool), O_RDONLY, 0);
    CHILD_CHECK(fd >= 0, 11, "shm_open: %s", strerror(errno));
    struct stat info;
    CHILD_CHECK(fstat(fd, &info) == 0, 11, "fstat: %s", strerror(errno));
    close(fd);
    CHILD_CHECK((uint64_t)info.st_blocks * 512u == rm_pool_committed_bytes(pool), 12,
                "file holds %llu bytes, counter says %llu",
                (unsigned long long)info.st_blocks * 512u,
                (unsigned long long)rm_pool_committed_bytes(pool));

    /* Freed pages stay committed; a request they cannot serve as they are
     * makes the pool purge them and succeed. */
    for (size_t i = 0; i < count; i++)
        CHILD_CHECK(rm_pool_free(pool, blocks[i]) == RM_OK, 13, "free %zu", i);
    void *large = NULL;
    rc = rm_pool_alloc(pool, 48 * MiB, 2 * MiB, &large);
    CHILD_CHECK(rc == RM_OK, 14, "48 MiB after freeing everything: %s",
                rm_error_last(OWNER));
    memset(large, 0x7e, 48 * MiB);
    rm_pool_destroy(pool);
    CHILD_CHECK(count_segments("unit-full") == 0, 29, "segment left after destroy");

    /* Purged space must be committed again before it is reused: after a
     * purge, another tenant fills /dev/shm; the pool must then say no, not
     * hand out the purged range and SIGBUS on the write. A fresh pool, so
     * that the purged range is the only one that fits. */
    rc = rm_pool_create(&config, OWNER, &pool);
    CHILD_CHECK(rc == RM_OK, 20, "create: %s", rm_error_last(OWNER));
    rc = rm_pool_alloc(pool, 48 * MiB, 0, &large);
    CHILD_CHECK(rc == RM_OK, 21, "48 MiB: %s", rm_error_last(OWNER));
    memset(large, 0x7f, 48 * MiB);
    CHILD_CHECK(rm_pool_free(pool, large) == RM_OK, 22, "free 48 MiB");
    CHILD_CHECK(rm_pool_purge(pool) == RM_OK, 23, "purge: %s", rm_error_last(OWNER));
    int filler = open("/dev/shm/unit-full-filler", O_CREAT | O_EXCL | O_RDWR, 0600);
    CHILD_CHECK(filler >= 0, 24, "filler: %s", strerror(errno));
    off_t filled = 0;
    while (fallocate(filler, 0, filled, (off_t)MiB) == 0)
        filled += (off_t)MiB;
    CHILD_CHECK(errno == ENOSPC, 25, "filler stopped with %s", strerror(errno));
    void *reused = NULL;
    rc = rm_pool_alloc(pool, 16 * MiB, 0, &reused);
    if (rc == RM_OK)
        memset(reused, 0x5b, 16 * MiB); /* SIGBUS here if it was not committed */
    CHILD_CHECK(rc == RM_E_NO_MEMORY, 26, "16 MiB on a full /dev/shm after a purge: %s",
                rm_error_name(rc));
    close(filler);
    CHILD_CHECK(unlink("/dev/shm/unit-full-filler") == 0, 27, "unlink filler: %s",
                strerror(errno));
    rc = rm_pool_alloc(pool, 16 * MiB, 0, &reused);
    CHILD_CHECK(rc == RM_OK, 28, "16 MiB once /dev/shm has room: %s", rm_error_last(OWNER));
    memset(reused, 0x5c, 16 * MiB);
    rm_pool_destroy(pool);
    CHILD_CHECK(count_segments("unit-full") == 0, 15, "segment left after destroy");

    return 0;
}

Test(pool, a_full_dev_shm_is_an_error_not_a_sigbus)
{
    int status = run_in_child(exhaustion_child, NULL);
    if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_EXIT)
        cr_skip_test("no permission for a private mount namespace (unshare: EPERM)");
    assert_child_passed(status, "exhaustion");
}

/* ------------------------------------------------------------------------ */
/* Destruction                                                              */
/* ------------------------------------------------------------------------ */

Test(pool, destroy_unlinks_and_releases_every_page)
{
    rm_pool *pool = make_pool("unit-destroy", 0);
    char name[RM_POOL_NAME_MAX];
    snprintf(name, sizeof name, "%s", rm_pool_name(pool));
    /* An open descriptor keeps the file alive to look at afterwards. */
    int watch = shm_open(name, O_RDONLY | O_NOFOLLOW, 0);
    cr_assert_geq(watch, 0);
    for (int i = 0; i < 8; i++)
        memset(alloc_ok(pool, 3 * MiB, 0), 0x44, 3 * MiB); /* never freed */
    cr_assert_geq(rm_pool_committed_bytes(pool), 24 * MiB);

    rm_pool_destroy(pool);
    errno = 0;
    cr_assert_eq(shm_open(name, O_RDONLY, 0), -1);
    cr_assert_eq(errno, ENOENT, "shm_open after destroy: %s", strerror(errno));
    struct stat info;
    cr_assert_eq(fstat(watch, &info), 0);
    cr_assert_eq(info.st_blocks, 0, "destroy left %lld bytes in /dev/shm",
                 (long long)info.st_blocks * 512);
    close(watch);
}
