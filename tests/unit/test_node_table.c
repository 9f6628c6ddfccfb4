/* The node table's robust lock, through node_table.h alone: a process that
 * dies holding it (it _exits, or is SIGKILLed, in the middle of an update
 * or with derived fields already wrong) hands it to the next locker, which
 * gets EOWNERDEAD, repairs everything derived from the entries (key
 * hashes, holder counts and sums, the ready totals, half-written attacher
 * records, unusable entries) and leaves a table that the locker after it
 * finds consistent; a live holder is waited for, not repaired away.
 *
 * The holders are forked children that take the lock through the mapping
 * they inherit and report by exit status, never through Criterion. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "node_table.h"
#include "process_identity.h"
#include "shm_cleanup.h"

static const int error_owner_token;
#define OWNER ((const void *)&error_owner_token)

#define CAPACITY 8u

/* A namespace per test (each runs in its own process), removed by the
 * suite's fini even when the test failed. */
static char namespace_name[RM_NODE_NAMESPACE_MAX + 1];

static void name_namespace(void)
{
    snprintf(namespace_name, sizeof namespace_name, "ut-nodetable-%ld", (long)getpid());
}

static void remove_namespace(void)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.", namespace_name);
    shm_unlink_prefix(prefix);
}

TestSuite(node_table, .init = name_namespace, .fini = remove_namespace, .timeout = 60);

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                 */
/* ------------------------------------------------------------------------ */

static rm_node_self self(void)
{
    return (rm_node_self){.pid = getpid(), .start_time = rm_process_self_start_time()};
}

static rm_node_view attach_new_table(void)
{
    rm_node_view view;
    bool recovered = true;
    int32_t status =
        rm_node_table_attach(namespace_name, CAPACITY, true, self(), OWNER, &view, &recovered);
    cr_assert_eq(status, RM_OK, "attach: %s: %s", rm_error_name(status), rm_error_last(OWNER));
    cr_assert_not(recovered);
    cr_assert_eq(view.capacity, CAPACITY);
    return view;
}

static void lock_expecting(const rm_node_view *view, bool expect_recovered)
{
    bool recovered = !expect_recovered;
    int32_t status = rm_node_table_lock(view, namespace_name, OWNER, &recovered);
    cr_assert_eq(status, RM_OK, "lock: %s: %s", rm_error_name(status), rm_error_last(OWNER));
    cr_assert_eq(recovered, expect_recovered, "lock reported recovered = %d", recovered);
}

static void retire_and_unmap(rm_node_view *view)
{
    lock_expecting(view, false);
    uint64_t freed = 0;
    cr_expect(rm_node_table_retire(view, namespace_name, &freed));
    rm_node_table_unlock(view);
    rm_node_table_unmap(view);
}

static void set_key(rm_node_entry *e, const char *key)
{
    memset(e->key, 0, sizeof e->key);
    memcpy(e->key, key, strlen(key));
}

typedef enum death {
    DIE_BY_EXIT,    /* _exit(): the kernel releases the robust list */
    DIE_BY_SIGKILL, /* no code of the process runs at all */
} death;

static const char *death_name(death how)
{
    return how == DIE_BY_EXIT ? "_exit" : "SIGKILL";
}

/* The half update a dying holder makes with the lock held; NULL: none. */
typedef void half_update(const rm_node_view *view);

/* Forks a child that takes the table lock through its inherited mapping,
 * makes `update` and dies `how`, holding the lock. The child exits 3 if it
 * could not take the lock. */
static void die_holding_lock(const rm_node_view *view, half_update *update, death how)
{
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0, "fork: %s", strerror(errno));
    if (child == 0) {
        bool recovered = false;
        if (rm_node_table_lock(view, namespace_name, OWNER, &recovered) != RM_OK)
            _exit(3);
        if (update != NULL)
            update(view);
        if (how == DIE_BY_SIGKILL)
            kill(getpid(), SIGKILL);
        _exit(0);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (how == DIE_BY_SIGKILL)
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "child status %#x, expected death by SIGKILL", status);
    else
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %#x, expected exit 0 holding the lock", status);
}

/* ------------------------------------------------------------------------ */
/* Repair after a dead holder                                               */
/* ------------------------------------------------------------------------ */

/* Entries as a live table could hold them, with every derived field wrong
 * (and some entries no locker can use), as a process killed in the middle
 * of several updates would leave them. */
static void write_wrong_derived_fields(const rm_node_view *view)
{
    rm_node_entry *e = view->entries;
    uint64_t *hashes = view->hashes;
    /* 0: READY, held by two processes: hash, counts and sum all wrong. */
    e[0].state = RM_NODE_READY;
    set_key(&e[0], "alpha@cpu");
    e[0].bytes = 4096;
    e[0].holders[0] = (rm_node_holder){.pid = 111, .refs = 2, .start_time = 1};
    e[0].holders[5] = (rm_node_holder){.pid = 222, .refs = 3, .start_time = 2};
    e[0].holder_count = 7;
    e[0].refs = 1;
    hashes[0] = 0;
    /* 1: LOADING, with a holder record half cleared (pid, no references). */
    e[1].state = RM_NODE_LOADING;
    set_key(&e[1], "beta@cpu");
    e[1].loader_pid = 333;
    e[1].holders[2] = (rm_node_holder){.pid = 444, .refs = 0, .start_time = 4};
    e[1].holder_count = 1;
    hashes[1] = 12345;
    /* 2: READY without a size (publication cut short): unusable. */
    e[2].state = RM_NODE_READY;
    set_key(&e[2], "gamma@cuda:0");
    hashes[2] = rm_node_key_hash("gamma@cuda:0");
    /* 3: a state no version writes. */
    e[3].state = 9;
    set_key(&e[3], "junk@cpu");
    /* 4: READY with a key that is not terminated. */
    e[4].state = RM_NODE_READY;
    memset(e[4].key, 'x', sizeof e[4].key);
    e[4].bytes = 10;
    /* 5: FAILED, claimable: kept and hashed, but not ready. */
    e[5].state = RM_NODE_FAILED;
    set_key(&e[5], "delta@cpu");
    e[5].failure = RM_E_LOADER_FAILED;
    /* 6: EMPTY with a stale hash. */
    hashes[6] = 99;
    /* 7: READY and idle, with stray counts. */
    e[7].state = RM_NODE_READY;
    set_key(&e[7], "eps@cpu");
    e[7].bytes = 100;
    e[7].refs = 5;
    e[7].holder_count = 2;
    view->header->ready_models = 42;
    view->header->ready_bytes = 1;
    /* attachers[0] is this process (attach); then half-written records. */
    view->attachers[1] = (rm_node_attacher){.pid = 555, .contexts = 0, .start_time = 5};
    view->attachers[2] = (rm_node_attacher){.pid = -1, .contexts = 2, .start_time = 6};
    view->attachers[3] = (rm_node_attacher){.pid = 666, .contexts = 1, .start_time = 7};
}

static void expect_cleared(const rm_node_view *view, uint32_t slot)
{
    const rm_node_entry *e = &view->entries[slot];
    cr_expect_eq(e->state, RM_NODE_EMPTY, "slot %u: state %u, expected EMPTY", slot, e->state);
    cr_expect_eq(e->key[0], '\0', "slot %u keeps a key", slot);
    cr_expect_eq(view->hashes[slot], 0, "slot %u keeps a hash", slot);
    cr_expect_eq(e->refs, 0, "slot %u keeps references", slot);
    cr_expect_eq(e->holder_count, 0, "slot %u keeps holders", slot);
}

static void expect_repaired(const rm_node_view *view, const uint32_t *wake_before)
{
    const rm_node_entry *e = view->entries;
    const uint64_t *hashes = view->hashes;
    cr_expect_eq(hashes[0], rm_node_key_hash("alpha@cpu"));
    cr_expect_eq(e[0].holder_count, 2);
    cr_expect_eq(e[0].refs, 5);
    cr_expect_eq(e[0].bytes, 4096);
    cr_expect_eq(e[1].state, RM_NODE_LOADING);
    cr_expect_eq(hashes[1], rm_node_key_hash("beta@cpu"));
    cr_expect_eq(e[1].holders[2].pid, 0, "the half-cleared holder record stays");
    cr_expect_eq(e[1].holder_count, 0);
    expect_cleared(view, 2);
    expect_cleared(view, 3);
    expect_cleared(view, 4);
    cr_expect_eq(e[5].state, RM_NODE_FAILED);
    cr_expect_eq(hashes[5], rm_node_key_hash("delta@cpu"));
    cr_expect_eq(hashes[6], 0);
    cr_expect_eq(e[7].refs, 0);
    cr_expect_eq(e[7].holder_count, 0);
    cr_expect_eq(view->header->ready_models, 2, "ready models: alpha and eps, not %llu",
                 (unsigned long long)view->header->ready_models);
    cr_expect_eq(view->header->ready_bytes, 4096 + 100);
    /* Waiters may have read the futex word before the dead process bumped
     * it: every entry kept is woken. */
    for (uint32_t slot = 0; slot < CAPACITY; slot++) {
        bool kept = e[slot].state != RM_NODE_EMPTY;
        cr_expect_eq(e[slot].wake, wake_before[slot] + (kept ? 1u : 0u),
                     "slot %u: wake word %u, was %u", slot, e[slot].wake, wake_before[slot]);
    }
    const rm_node_attacher *a = view->attachers;
    cr_expect_eq(a[0].pid, getpid(), "this process's own record stays");
    cr_expect_eq(a[0].contexts, 1);
    cr_expect_eq(a[1].pid, 0, "a record without contexts is dropped");
    cr_expect_eq(a[2].pid, 0, "a record without a pid is dropped");
    cr_expect_eq(a[3].pid, 666, "a whole record stays (liveness is not repair's)");
}

ParameterizedTestParameters(node_table, a_dead_holder_leaves_the_lock_to_a_repair)
{
    static death deaths[] = {DIE_BY_EXIT, DIE_BY_SIGKILL};
    return cr_make_param_array(death, deaths, sizeof deaths / sizeof deaths[0]);
}

ParameterizedTest(death *how, node_table, a_dead_holder_leaves_the_lock_to_a_repair)
{
    rm_node_view view = attach_new_table();
    write_wrong_derived_fields(&view);
    uint32_t wake_before[CAPACITY];
    for (uint32_t slot = 0; slot < CAPACITY; slot++)
        wake_before[slot] = view.entries[slot].wake;
    uint64_t recoveries = view.header->lock_recoveries;

    die_holding_lock(&view, NULL, *how);
    lock_expecting(&view, true);
    cr_expect_eq(view.header->lock_recoveries, recoveries + 1,
                 "after a holder's %s: %llu recoveries counted", death_name(*how),
                 (unsigned long long)view.header->lock_recoveries);
    expect_repaired(&view, wake_before);
    rm_node_table_unlock(&view);

    /* Consistent again: the next locker neither recovers nor changes it. */
    lock_expecting(&view, false);
    cr_expect_eq(view.header->lock_recoveries, recoveries + 1);
    expect_repaired(&view, wake_before);
    rm_node_table_unlock(&view);
    retire_and_unmap(&view);
}

/* A publication as node_registry.c makes it, cut off before the totals,
 * the hash and the holder count: size and state written, the first holder
 * recorded. */
static void publish_halfway(const rm_node_view *view)
{
    rm_node_entry *e = &view->entries[3];
    set_key(e, "half@cpu");
    e->bytes = 1 << 20;
    e->state = RM_NODE_READY;
    e->holders[0] = (rm_node_holder){.pid = getpid(), .refs = 1, .start_time = 9};
}

/* The same cut off earlier still: READY before its size. */
static void publish_without_size(const rm_node_view *view)
{
    rm_node_entry *e = &view->entries[5];
    set_key(e, "unsized@cpu");
    view->hashes[5] = rm_node_key_hash("unsized@cpu");
    e->state = RM_NODE_READY;
}

ParameterizedTestParameters(node_table, a_holder_dying_mid_update_leaves_a_consistent_table)
{
    static death deaths[] = {DIE_BY_EXIT, DIE_BY_SIGKILL};
    return cr_make_param_array(death, deaths, sizeof deaths / sizeof deaths[0]);
}

ParameterizedTest(death *how, node_table, a_holder_dying_mid_update_leaves_a_consistent_table)
{
    rm_node_view view = attach_new_table();
    die_holding_lock(&view, publish_halfway, *how);
    lock_expecting(&view, true);
    const rm_node_entry *e = &view.entries[3];
    cr_expect_eq(e->state, RM_NODE_READY);
    cr_expect_eq(view.hashes[3], rm_node_key_hash("half@cpu"));
    cr_expect_eq(e->holder_count, 1);
    cr_expect_eq(e->refs, 1);
    cr_expect_eq(view.header->ready_models, 1);
    cr_expect_eq(view.header->ready_bytes, 1 << 20);
    rm_node_table_unlock(&view);

    die_holding_lock(&view, publish_without_size, *how);
    lock_expecting(&view, true);
    expect_cleared(&view, 5);
    cr_expect_eq(view.header->ready_models, 1, "the unsized entry is not counted");
    cr_expect_eq(view.header->lock_recoveries, 2);
    rm_node_table_unlock(&view);
    retire_and_unmap(&view);
}

/* ------------------------------------------------------------------------ */
/* A live holder                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* With the patience far below the time the lock is held, the locker asks
 * /proc about the holder, finds a live process that maps the table, and
 * keeps waiting: no repair, no error. */
Test(node_table, a_live_holder_is_waited_for_past_the_patience)
{
    rm_node_view view = attach_new_table();
    rm_node_table_lock_patience_ns = UINT64_C(20000000); /* 20 ms */
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        close(ready[0]);
        bool recovered = false;
        if (rm_node_table_lock(&view, namespace_name, OWNER, &recovered) != RM_OK)
            _exit(3);
        if (write(ready[1], "L", 1) != 1)
            _exit(4);
        usleep(300000);
        view.header->ready_models = 7; /* a complete update */
        rm_node_table_unlock(&view);
        _exit(0);
    }
    close(ready[1]);
    char byte;
    cr_assert_eq(read(ready[0], &byte, 1), 1, "the child never took the lock");
    close(ready[0]);
    uint64_t started = monotonic_ms();
    lock_expecting(&view, false);
    uint64_t waited = monotonic_ms() - started;
    cr_expect_geq(waited, 200, "took the lock after %llu ms, while the child held it",
                  (unsigned long long)waited);
    cr_expect_eq(view.header->ready_models, 7, "the holder's update was kept");
    cr_expect_eq(view.header->lock_recoveries, 0);
    rm_node_table_unlock(&view);
    int status = 0;
    waitpid(child, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
    retire_and_unmap(&view);
}
