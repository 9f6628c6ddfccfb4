/* Everything the plugin names in /dev/shm (plugin/shm/shm_segment.h): the names
 * of every kind, byte for byte, and the refusal of anything else; random
 * ids, and what a getrandom() failure does (an error, and nothing made);
 * creating a segment (0600 whatever the umask, the size asked, committed
 * or sparse, never over an existing name); and finding and reaping the
 * segments of a namespace, against real processes that exited.
 *
 * Each test runs in its own process with its own namespaces ("ut-seg-<pid>"
 * and "ut-seg-<pid>x"), removed by the suite's fini even after a failure.
 * Children report by exit status, never through Criterion. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "rm_build_config.h"
#include "shm_cleanup.h"
#include "shm_segment.h"
#if RM_HAVE_SHARED_MEMORY
#include "pool.h"
#endif
#if RM_HAVE_MODEL_REGISTRY
#include "node_table.h"
#include "process_identity.h"
#endif

static const int error_owner_token;
#define OWNER ((const void *)&error_owner_token)

static char ns[24];       /* this test's namespace */
static char other_ns[28]; /* its neighbour: ns + "x" */

static void remove_namespace(const char *name_space)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rm.%s.", name_space);
    shm_unlink_prefix(prefix);
    snprintf(prefix, sizeof prefix, "rmreg.%s.", name_space);
    shm_unlink_prefix(prefix);
}

static void name_namespaces(void)
{
    snprintf(ns, sizeof ns, "ut-seg-%ld", (long)getpid());
    snprintf(other_ns, sizeof other_ns, "%sx", ns);
}

static void remove_namespaces(void)
{
    rm_segment_random_source = getrandom;
    remove_namespace(ns);
    remove_namespace(other_ns);
}

TestSuite(shm_segment, .init = name_namespaces, .fini = remove_namespaces, .timeout = 60);

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

/* Every kind, with the name it must have, byte for byte (running peers,
 * rmctl and the tests find segments by these names). Inline strings: a
 * pointer into the parent's data would not survive ASLR. */
struct name_case {
    rm_segment_kind kind;
    char namespace_name[RM_NAMESPACE_MAX + 1];
    int32_t pid;
    uint64_t id;
    char expected[RM_SEGMENT_NAME_MAX];
};

ParameterizedTestParameters(shm_segment, names_round_trip)
{
    static struct name_case cases[] = {
        {RM_SEGMENT_POOL_DATA, "default", 1234, 0x1f, "/rm.default.1234.000000000000001f"},
        {RM_SEGMENT_POOL_CONTROL, "default", 1234, 0x1f,
         "/rm.default.1234.000000000000001f.ctl"},
        {RM_SEGMENT_NODE_TABLE, "default", 0, 0, "/rmreg.default.table"},
        {RM_SEGMENT_NODE_TABLE_NEW, "default", 1234, 0x1f,
         "/rmreg.default.new.1234.000000000000001f"},
        {RM_SEGMENT_NODE_MODEL, "default", 0, 0xfedcba9876543210,
         "/rmreg.default.m.fedcba9876543210"},
        /* The longest: a 32-character namespace and the largest pid. */
        {RM_SEGMENT_POOL_CONTROL, "A-z_0123456789abcdefghijklmnopqr", 2147483647,
         UINT64_MAX, "/rm.A-z_0123456789abcdefghijklmnopqr.2147483647.ffffffffffffffff.ctl"},
        {RM_SEGMENT_NODE_TABLE_NEW, "A-z_0123456789abcdefghijklmnopqr", 2147483647, 1,
         "/rmreg.A-z_0123456789abcdefghijklmnopqr.new.2147483647.0000000000000001"},
        {RM_SEGMENT_NODE_TABLE, "x", 0, 0, "/rmreg.x.table"},
    };
    return cr_make_param_array(struct name_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct name_case *c, shm_segment, names_round_trip)
{
    char name[RM_SEGMENT_NAME_MAX];
    cr_assert(rm_segment_name_format(name, c->kind, c->namespace_name, c->pid, c->id),
              "format of %s", c->expected);
    cr_expect_str_eq(name, c->expected);

    rm_segment_name parts;
    cr_assert(rm_segment_name_parse(name, c->namespace_name, RM_SEGMENT_ALL_KINDS, &parts),
              "parse of %s", name);
    cr_expect_eq(parts.kind, c->kind);
    cr_expect_str_eq(parts.namespace_name, c->namespace_name);
    cr_expect_eq(parts.pid, c->pid);
    cr_expect_eq(parts.id, c->id);

    /* Any namespace; only its own kind. */
    cr_expect(rm_segment_name_parse(name, NULL, RM_SEGMENT_KIND_BIT(c->kind), &parts));
    cr_expect_str_eq(parts.namespace_name, c->namespace_name);
    cr_expect_not(rm_segment_name_parse(name, NULL, RM_SEGMENT_ALL_KINDS &
                                                        ~RM_SEGMENT_KIND_BIT(c->kind),
                                        &parts),
                  "%s parses as another kind", name);
}

struct malformed_case {
    char name[128];
};

ParameterizedTestParameters(shm_segment, malformed_names_are_refused)
{
    static struct malformed_case cases[] = {
        {""},
        {"/"},
        {"rm.ns.1234.000000000000001f"},            /* no leading slash */
        {"//rm.ns.1234.000000000000001f"},
        {"/rm.other.1234.000000000000001f"},        /* another namespace */
        {"/rm.nsx.1234.000000000000001f"},          /* a longer one */
        {"/rm.n.1234.000000000000001f"},            /* a shorter one */
        {"/rm..1234.000000000000001f"},             /* none */
        {"/rm.n.s.1234.000000000000001f"},
        {"/rm.ns.1234.000000000000001g"},           /* not hex */
        {"/rm.ns.1234.000000000000001F"},           /* not lowercase */
        {"/rm.ns.1234.00000000000001f"},            /* 15 digits */
        {"/rm.ns.1234.0000000000000001f"},          /* 17 digits */
        {"/rm.ns.1234.0000000000000000"},           /* id 0 */
        {"/rm.ns.1234.000000000000001f.ctlx"},      /* trailing junk */
        {"/rm.ns.1234.000000000000001f.ctl."},
        {"/rm.ns.1234.000000000000001f."},
        {"/rm.ns.1234.000000000000001f\n"},
        {"/rm.ns.1234.000000000000001f.CTL"},
        {"/rm.ns.01234.000000000000001f"},          /* leading zero */
        {"/rm.ns.0.000000000000001f"},              /* pid 0 */
        {"/rm.ns.-1.000000000000001f"},
        {"/rm.ns.+1.000000000000001f"},
        {"/rm.ns. 1.000000000000001f"},
        {"/rm.ns.2147483648.000000000000001f"},     /* over a pid_t */
        {"/rm.ns.12345678901.000000000000001f"},    /* 11 digits */
        {"/rm.ns.000000000000001f"},                /* no pid */
        {"/rm.ns.1234"},                            /* no id */
        {"/rmreg.ns.table.ctl"},
        {"/rmreg.ns.tables"},
        {"/rmreg.ns.table."},
        {"/rmreg.ns.Table"},
        {"/rmreg.ns"},
        {"/rmreg.ns."},
        {"/rmreg.other.table"},
        {"/rmreg.ns.new.1234"},                     /* no id */
        {"/rmreg.ns.new.000000000000001f"},         /* no pid */
        {"/rmreg.ns.new.0.000000000000001f"},
        {"/rmreg.ns.m.000000000000001f.ctl"},
        {"/rmreg.ns.m.1234.000000000000001f"},      /* a pid it has not */
        {"/rmreg.ns.m.000000000000001"},
        {"/rmreg.ns.m.0000000000000000"},
        {"/rmreg.ns.x.000000000000001f"},           /* no such word */
        {"/rmx.ns.table"},                          /* no such family */
        {"/rm.ns.table"},                           /* words of the other family */
        {"/rmreg.ns.1234.000000000000001f"},
        /* Over-long: a 33-character namespace, and a name longer than any. */
        {"/rmreg.abcdefghijklmnopqrstuvwxyz0123456.table"},
        {"/rm.ns.1234.000000000000001f.ctl........................................"
         "......................................."},
    };
    return cr_make_param_array(struct malformed_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct malformed_case *c, shm_segment, malformed_names_are_refused)
{
    rm_segment_name parts;
    bool in_ns = rm_segment_name_parse(c->name, "ns", RM_SEGMENT_ALL_KINDS, &parts);
    bool in_any = rm_segment_name_parse(c->name, NULL, RM_SEGMENT_ALL_KINDS, &parts);
    /* "/rm.other..." and the like are fine names, of another namespace. */
    bool other_namespace = strstr(c->name, ".other.") != NULL ||
                           strstr(c->name, ".nsx.") != NULL || strstr(c->name, ".n.1234") != NULL;
    cr_expect_not(in_ns, "'%s' parsed in namespace ns", c->name);
    if (!other_namespace)
        cr_expect_not(in_any, "'%s' parsed (kind %d)", c->name, (int)parts.kind);
}

Test(shm_segment, format_refuses_what_no_name_can_hold)
{
    char name[RM_SEGMENT_NAME_MAX];
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE, "", 0, 0));
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE, "a.b", 0, 0));
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE, "a/b", 0, 0));
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE,
                                         "abcdefghijklmnopqrstuvwxyz0123456", 0, 0));
    cr_expect_str_empty(name);
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_POOL_DATA, "ns", 0, 1), "pid 0");
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_POOL_DATA, "ns", -5, 1), "pid -5");
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_NODE_MODEL, "ns", 0, 0), "id 0");
    cr_expect_not(rm_segment_name_format(name, RM_SEGMENT_KIND_COUNT, "ns", 1, 1));
    /* Kinds without a pid or id ignore them. */
    cr_expect(rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE, "ns", 0, 0));
    cr_expect(rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE, "ns", 77, 99));
    cr_expect_str_eq(name, "/rmreg.ns.table");
}

Test(shm_segment, a_pool_data_name_and_its_control_name_are_siblings)
{
    char control[RM_SEGMENT_NAME_MAX], data[RM_SEGMENT_NAME_MAX];
    cr_assert(rm_segment_name_sibling("/rm.ns.42.00000000000000ab", RM_SEGMENT_POOL_CONTROL,
                                      control));
    cr_expect_str_eq(control, "/rm.ns.42.00000000000000ab.ctl");
    cr_assert(rm_segment_name_sibling(control, RM_SEGMENT_POOL_DATA, data));
    cr_expect_str_eq(data, "/rm.ns.42.00000000000000ab");
    /* A model name has no pid to give a pool's name. */
    cr_expect_not(rm_segment_name_sibling("/rmreg.ns.m.00000000000000ab", RM_SEGMENT_POOL_DATA,
                                          data));
    cr_expect_not(rm_segment_name_sibling("/rm.ns.42.ab", RM_SEGMENT_POOL_CONTROL, data));
}

/* ------------------------------------------------------------------------ */
/* Random ids                                                               */
/* ------------------------------------------------------------------------ */

static int interruptions;

static ssize_t failing_source(void *buffer, size_t length, unsigned flags)
{
    (void)buffer, (void)length, (void)flags;
    errno = ENOSYS;
    return -1;
}

static ssize_t short_source(void *buffer, size_t length, unsigned flags)
{
    (void)flags;
    memset(buffer, 0xab, length / 2);
    return (ssize_t)(length / 2);
}

static ssize_t interrupted_source(void *buffer, size_t length, unsigned flags)
{
    if (interruptions-- > 0) {
        errno = EINTR;
        return -1;
    }
    return getrandom(buffer, length, flags);
}

Test(shm_segment, random_ids_are_nonzero_and_differ)
{
    uint64_t a = 0, b = 0;
    cr_assert_eq(rm_segment_random_id(RM_SEGMENT_NODE_MODEL, ns, OWNER, &a), RM_OK);
    cr_assert_eq(rm_segment_random_id(RM_SEGMENT_NODE_MODEL, ns, OWNER, &b), RM_OK);
    cr_expect_neq(a, 0);
    cr_expect_neq(a, b);
}

Test(shm_segment, an_interrupted_getrandom_is_retried)
{
    interruptions = 3;
    rm_segment_random_source = interrupted_source;
    uint64_t id = 0;
    int32_t rc = rm_segment_random_id(RM_SEGMENT_POOL_DATA, ns, OWNER, &id);
    rm_segment_random_source = getrandom;
    cr_expect_eq(rc, RM_OK, "%s", rm_error_last(OWNER));
    cr_expect_neq(id, 0);
    cr_expect_eq(interruptions, -1, "every EINTR was retried");
}

/* No fallback to a guessable id: an error that says why, and no id. */
Test(shm_segment, a_failing_getrandom_is_an_error_not_a_guessable_id)
{
    ssize_t (*sources[])(void *, size_t, unsigned) = {failing_source, short_source};
    for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++) {
        rm_segment_random_source = sources[i];
        uint64_t id = 12345;
        int32_t rc = rm_segment_random_id(RM_SEGMENT_NODE_TABLE_NEW, ns, OWNER, &id);
        rm_segment_random_source = getrandom;
        cr_expect_eq(rc, RM_E_SYSTEM, "source %zu: %s", i, rm_error_name(rc));
        cr_expect_eq(id, 12345, "source %zu wrote an id", i);
        const char *message = rm_error_last(OWNER);
        cr_expect(strstr(message, "getrandom()") != NULL && strstr(message, ns) != NULL,
                  "the message names getrandom and the namespace: %s", message);
    }
    cr_expect(strstr(rm_error_last(OWNER), "short read") != NULL, "%s", rm_error_last(OWNER));
}

/* The callers propagate it and make nothing in /dev/shm. */
Test(shm_segment, a_failing_getrandom_creates_nothing)
{
    char prefix[64];
#if RM_HAVE_SHARED_MEMORY
    rm_segment_random_source = failing_source;
    rm_pool_config config = {.namespace_name = ns, .ceiling_bytes = 4u << 20};
    rm_pool *pool = NULL;
    int32_t rc = rm_pool_create(&config, OWNER, &pool);
    rm_segment_random_source = getrandom;
    cr_expect_eq(rc, RM_E_SYSTEM, "rm_pool_create: %s", rm_error_name(rc));
    cr_expect_null(pool);
    cr_expect(strstr(rm_error_last(OWNER), "getrandom()") != NULL, "%s", rm_error_last(OWNER));
    snprintf(prefix, sizeof prefix, "rm.%s.", ns);
    cr_expect_eq(shm_list_prefix(prefix, NULL, 0), 0, "a pool segment was made");
#endif
#if RM_HAVE_MODEL_REGISTRY
    rm_segment_random_source = failing_source;
    rm_node_view view;
    memset(&view, 0, sizeof view);
    bool recovered = false;
    rm_node_self self = {.pid = getpid(), .start_time = rm_process_self_start_time()};
    int32_t status = rm_node_table_attach(ns, 8, true, self, OWNER, &view, &recovered);
    rm_segment_random_source = getrandom;
    cr_expect_eq(status, RM_E_SYSTEM, "rm_node_table_attach: %s", rm_error_name(status));
    cr_expect(strstr(rm_error_last(OWNER), "getrandom()") != NULL, "%s", rm_error_last(OWNER));
    snprintf(prefix, sizeof prefix, "rmreg.%s.", ns);
    cr_expect_eq(shm_list_prefix(prefix, NULL, 0), 0, "a node table segment was made");
    if (status == RM_OK)
        rm_node_table_unmap(&view);
#endif
    (void)prefix;
}

/* ------------------------------------------------------------------------ */
/* Creating                                                                 */
/* ------------------------------------------------------------------------ */

static void fresh_name(char name[RM_SEGMENT_NAME_MAX], rm_segment_kind kind,
                       const char *name_space, pid_t pid)
{
    uint64_t id = 0;
    cr_assert_eq(rm_segment_random_id(kind, name_space, OWNER, &id), RM_OK);
    cr_assert(rm_segment_name_format(name, kind, name_space, pid, id));
}

static struct stat stat_of(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, RM_SEGMENT_DIRECTORY "%s", name);
    struct stat info;
    cr_assert_eq(lstat(path, &info), 0, "lstat(%s): %s", path, strerror(errno));
    return info;
}

struct umask_case {
    mode_t mask;
};

ParameterizedTestParameters(shm_segment, created_committed_is_0600_and_of_its_size)
{
    /* 0: shm_open's mode alone would give 0600; 0277 would give 0400
     * without the fchmod. */
    static struct umask_case cases[] = {{0}, {0277}, {0077}};
    return cr_make_param_array(struct umask_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct umask_case *c, shm_segment, created_committed_is_0600_and_of_its_size)
{
    char name[RM_SEGMENT_NAME_MAX];
    fresh_name(name, RM_SEGMENT_NODE_MODEL, ns, 0);
    const uint64_t bytes = 192 * 1024;
    mode_t previous = umask(c->mask);
    int fd = -1;
    struct stat reported;
    int32_t rc = rm_segment_create(name, bytes, RM_SEGMENT_COMMITTED, "test segment", OWNER,
                                   &fd, &reported);
    umask(previous);
    cr_assert_eq(rc, RM_OK, "%s", rm_error_last(OWNER));
    cr_assert_geq(fd, 0);
    struct stat info = stat_of(name);
    cr_expect(S_ISREG(info.st_mode));
    cr_expect_eq(info.st_mode & 07777, 0600, "mode %o under umask %o", info.st_mode & 07777,
                 c->mask);
    cr_expect_eq(info.st_uid, geteuid());
    cr_expect_eq((uint64_t)info.st_size, bytes);
    cr_expect_geq((uint64_t)info.st_blocks * 512u, bytes, "committed: %lld blocks",
                  (long long)info.st_blocks);
    cr_expect_eq(reported.st_ino, info.st_ino);
    cr_expect_eq(reported.st_dev, info.st_dev);
    cr_expect(fcntl(fd, F_GETFD) & FD_CLOEXEC, "the fd is close-on-exec");
    void *base = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    cr_assert_neq(base, MAP_FAILED);
    memset(base, 0x5a, (size_t)bytes);
    munmap(base, (size_t)bytes);
    close(fd);

    uint64_t freed = 0;
    cr_expect(rm_segment_unlink(name, &freed));
    cr_expect_eq(freed, (uint64_t)info.st_blocks * 512u);
    cr_expect_not(rm_segment_unlink(name, &freed), "unlinked twice");
}

Test(shm_segment, created_sparse_uses_no_page)
{
    char name[RM_SEGMENT_NAME_MAX];
    fresh_name(name, RM_SEGMENT_POOL_DATA, ns, getpid());
    int fd = -1;
    int32_t rc = rm_segment_create(name, 64u << 20, RM_SEGMENT_SPARSE, "test pool", OWNER, &fd,
                                   NULL);
    cr_assert_eq(rc, RM_OK, "%s", rm_error_last(OWNER));
    close(fd);
    struct stat info = stat_of(name);
    cr_expect_eq(info.st_mode & 07777, 0600);
    cr_expect_eq((uint64_t)info.st_size, 64u << 20);
    cr_expect_eq(info.st_blocks, 0);
    cr_expect(rm_segment_unlink(name, NULL));
}

Test(shm_segment, an_existing_name_is_refused_and_left_alone)
{
    char name[RM_SEGMENT_NAME_MAX];
    fresh_name(name, RM_SEGMENT_NODE_MODEL, ns, 0);
    int fd = -1;
    cr_assert_eq(rm_segment_create(name, 4096, RM_SEGMENT_COMMITTED, "first", OWNER, &fd, NULL),
                 RM_OK);
    close(fd);
    struct stat before = stat_of(name);
    int second = 123;
    int32_t rc = rm_segment_create(name, 8192, RM_SEGMENT_COMMITTED, "second", OWNER, &second,
                                   NULL);
    cr_expect_eq(rc, RM_E_SYSTEM, "%s", rm_error_name(rc));
    cr_expect_eq(second, -1);
    const char *message = rm_error_last(OWNER);
    cr_expect(strstr(message, name) != NULL && strstr(message, strerror(EEXIST)) != NULL,
              "the message names the segment and why: %s", message);
    struct stat after = stat_of(name);
    cr_expect_eq(after.st_ino, before.st_ino, "the first segment was replaced");
    cr_expect_eq(after.st_size, 4096, "the first segment was resized");
}

/* ------------------------------------------------------------------------ */
/* Listing and reaping                                                      */
/* ------------------------------------------------------------------------ */

/* A process that makes one data segment, one node table under construction
 * (both named with its pid) and one model segment in `name_space`, and
 * exits: what a killed owner leaves. */
static pid_t leave_segments_and_exit(const char *name_space)
{
    pid_t child = fork();
    cr_assert_geq(child, 0, "fork: %s", strerror(errno));
    if (child == 0) {
        const rm_segment_kind kinds[] = {RM_SEGMENT_POOL_DATA, RM_SEGMENT_NODE_TABLE_NEW,
                                         RM_SEGMENT_NODE_MODEL};
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
            uint64_t id = 0;
            char name[RM_SEGMENT_NAME_MAX];
            int fd = -1;
            if (rm_segment_random_id(kinds[i], name_space, NULL, &id) != RM_OK ||
                !rm_segment_name_format(name, kinds[i], name_space, getpid(), id) ||
                rm_segment_create(name, 8192 * (i + 1), RM_SEGMENT_COMMITTED, "orphan", NULL,
                                  &fd, NULL) != RM_OK)
                _exit(1);
            close(fd);
        }
        _exit(0);
    }
    int status = 0;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child could not make its "
                                                             "segments");
    return child;
}

static void make_segment(rm_segment_kind kind, const char *name_space, pid_t pid, uint64_t bytes)
{
    char name[RM_SEGMENT_NAME_MAX];
    fresh_name(name, kind, name_space, pid);
    int fd = -1;
    cr_assert_eq(rm_segment_create(name, bytes, RM_SEGMENT_COMMITTED, "test", OWNER, &fd, NULL),
                 RM_OK, "%s", rm_error_last(OWNER));
    close(fd);
}

typedef struct tally {
    unsigned per_kind[RM_SEGMENT_KIND_COUNT];
    unsigned dead_owner;  /* of the children's pids */
    pid_t dead[4];
    unsigned dead_count;
    uint64_t dead_bytes;  /* what the reaped kinds of the dead hold */
    unsigned stop_after;  /* 0: never stop */
    unsigned seen;
} tally;

static int32_t count_segment(const rm_segment_name *segment, const char *name, void *user)
{
    tally *t = user;
    t->per_kind[segment->kind]++;
    for (unsigned i = 0; i < t->dead_count; i++)
        if (segment->pid == t->dead[i]) {
            t->dead_owner++;
            t->dead_bytes += (uint64_t)stat_of(name).st_blocks * 512u;
        }
    if (t->stop_after != 0 && ++t->seen == t->stop_after)
        return RM_E_BUFFER_TOO_SMALL;
    return RM_OK;
}

#define PID_KINDS                                                                            \
    (RM_SEGMENT_KIND_BIT(RM_SEGMENT_POOL_DATA) | RM_SEGMENT_KIND_BIT(RM_SEGMENT_NODE_TABLE_NEW))

Test(shm_segment, reaping_takes_only_dead_owners_segments_of_the_namespace)
{
    /* Two dead owners here, one in the neighbouring namespace, and this
     * (live) process's own segments. */
    tally before = {0};
    before.dead[before.dead_count++] = leave_segments_and_exit(ns);
    before.dead[before.dead_count++] = leave_segments_and_exit(ns);
    pid_t dead_neighbour = leave_segments_and_exit(other_ns);
    make_segment(RM_SEGMENT_POOL_DATA, ns, getpid(), 4096);
    make_segment(RM_SEGMENT_NODE_TABLE_NEW, ns, getpid(), 4096);
    make_segment(RM_SEGMENT_POOL_CONTROL, ns, getpid(), 4096);
    make_segment(RM_SEGMENT_NODE_MODEL, ns, 0, 4096);

    cr_assert_eq(rm_segment_list(ns, RM_SEGMENT_ALL_KINDS, count_segment, &before, OWNER),
                 RM_OK, "%s", rm_error_last(OWNER));
    cr_expect_eq(before.per_kind[RM_SEGMENT_POOL_DATA], 3);
    cr_expect_eq(before.per_kind[RM_SEGMENT_NODE_TABLE_NEW], 3);
    cr_expect_eq(before.per_kind[RM_SEGMENT_POOL_CONTROL], 1);
    cr_expect_eq(before.per_kind[RM_SEGMENT_NODE_MODEL], 3);
    cr_expect_eq(before.dead_owner, 4, "the dead children's pid-named segments");

    /* A visitor's error stops the walk and is returned. */
    tally stopped = {.stop_after = 2};
    cr_expect_eq(rm_segment_list(ns, RM_SEGMENT_ALL_KINDS, count_segment, &stopped, OWNER),
                 RM_E_BUFFER_TOO_SMALL);
    cr_expect_eq(stopped.seen, 2);

    uint64_t segments = 0, bytes = 0;
    cr_assert_eq(rm_segment_reap(ns, PID_KINDS, NULL, NULL, OWNER, &segments, &bytes), RM_OK);
    cr_expect_eq(segments, 4, "reaped %llu segments", (unsigned long long)segments);
    cr_expect_eq(bytes, before.dead_bytes, "counted %llu bytes of %llu",
                 (unsigned long long)bytes, (unsigned long long)before.dead_bytes);

    tally after = {.dead = {before.dead[0], before.dead[1]}, .dead_count = 2};
    cr_assert_eq(rm_segment_list(ns, RM_SEGMENT_ALL_KINDS, count_segment, &after, OWNER), RM_OK);
    cr_expect_eq(after.dead_owner, 0, "a dead owner's segment is left");
    cr_expect_eq(after.per_kind[RM_SEGMENT_POOL_DATA], 1, "this process's pool");
    cr_expect_eq(after.per_kind[RM_SEGMENT_NODE_TABLE_NEW], 1, "this process's table");
    cr_expect_eq(after.per_kind[RM_SEGMENT_POOL_CONTROL], 1, "a kind not asked for");
    cr_expect_eq(after.per_kind[RM_SEGMENT_NODE_MODEL], 3, "models carry no pid");

    tally neighbour = {.dead = {dead_neighbour}, .dead_count = 1};
    cr_assert_eq(rm_segment_list(other_ns, RM_SEGMENT_ALL_KINDS, count_segment, &neighbour,
                                 OWNER),
                 RM_OK);
    cr_expect_eq(neighbour.dead_owner, 2, "the neighbouring namespace was reaped");

    /* A second reap finds nothing more. */
    segments = bytes = 0;
    cr_expect_eq(rm_segment_reap(ns, PID_KINDS, NULL, NULL, OWNER, &segments, &bytes), RM_OK);
    cr_expect_eq(segments, 0);
    cr_expect_eq(bytes, 0);
}

static bool every_model_is_gone(const rm_segment_name *segment, const char *name, void *user)
{
    (void)name;
    unsigned *asked = user;
    (*asked)++;
    return segment->kind == RM_SEGMENT_NODE_MODEL;
}

Test(shm_segment, a_judge_decides_what_is_reaped)
{
    make_segment(RM_SEGMENT_NODE_MODEL, ns, 0, 4096);
    make_segment(RM_SEGMENT_NODE_MODEL, ns, 0, 4096);
    make_segment(RM_SEGMENT_NODE_TABLE_NEW, ns, getpid(), 4096);
    make_segment(RM_SEGMENT_NODE_MODEL, other_ns, 0, 4096);
    unsigned asked = 0;
    uint64_t segments = 0, bytes = 0;
    cr_assert_eq(rm_segment_reap(ns, RM_SEGMENT_ALL_KINDS, every_model_is_gone, &asked, OWNER,
                                 &segments, &bytes),
                 RM_OK);
    cr_expect_eq(asked, 3);
    cr_expect_eq(segments, 2);
    cr_expect_geq(bytes, 2 * 4096);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.m.", other_ns);
    cr_expect_eq(shm_list_prefix(prefix, NULL, 0), 1, "another namespace's model was reaped");
}

Test(shm_segment, unlink_takes_only_a_regular_file_and_the_file_named)
{
    char name[RM_SEGMENT_NAME_MAX];
    fresh_name(name, RM_SEGMENT_NODE_TABLE, ns, 0);
    char path[128];
    snprintf(path, sizeof path, RM_SEGMENT_DIRECTORY "%s", name);
    cr_assert_eq(mkdir(path, 0700), 0, "mkdir: %s", strerror(errno));
    cr_expect_not(rm_segment_unlink(name, NULL), "a directory was taken for a segment");
    rmdir(path);

    int fd = -1;
    cr_assert_eq(rm_segment_create(name, 4096, RM_SEGMENT_COMMITTED, "table", OWNER, &fd, NULL),
                 RM_OK);
    close(fd);
    struct stat info = stat_of(name);
    cr_expect_not(rm_segment_unlink_if_file(name, (uint64_t)info.st_dev,
                                            (uint64_t)info.st_ino + 1, NULL),
                  "another file's name was unlinked");
    uint64_t freed = 0;
    cr_expect(rm_segment_unlink_if_file(name, (uint64_t)info.st_dev, (uint64_t)info.st_ino,
                                        &freed));
    cr_expect_eq(freed, (uint64_t)info.st_blocks * 512u);
}
