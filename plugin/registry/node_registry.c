/* The node-scope model registry.
 *
 * Two layers, so that each does one thing:
 *  - A process-scope registry (registry.c) per context answers repeated
 *    gets from the handles the context already has, runs single-flight
 *    between the context's threads and finds loader cycles. Its "loader"
 *    is node_acquire() below, and its "destroy" node_detach(): the context
 *    holds one node reference per model it has handles on, and gives it
 *    back with its last handle (evict_when_unused), so an idle process
 *    never pins a model node-wide.
 *  - The node table (node_table.h) in /dev/shm says, per key, who loads
 *    it, where its sealed segment is and which processes hold it. It is
 *    guarded by one robust process-shared mutex, held only for table
 *    updates: never across a loader, a futex wait or the unlink of a big
 *    segment (freeing a gigabyte of pages takes long).
 *
 * Cross-process waiting: a waiter reads the entry's `wake` word under the
 * lock, drops the lock and sleeps in FUTEX_WAIT on that word (shared, not
 * private: the word is in a shared mapping) with a timeout of
 * RM_NODE_TAKEOVER_POLL_MS. Whoever ends a load bumps the word and wakes
 * every sleeper. The timeout is there to notice a loader that died: the
 * waiter re-checks the loader's pid and start time and takes the claim
 * over. A dead process's references are found the same way (pid + start
 * time, so a reused pid is not mistaken for the holder) by the sweeper
 * thread every context of node scope runs.
 *
 * A process killed inside the lock leaves it EOWNERDEAD: the next locker
 * repairs the table (node_table.c) before going on.
 *
 * Which idle models go (expired, then least recently used until the
 * budgets hold) is the eviction policy's decision (eviction_policy.h), the
 * one process scope uses too; this file gathers the table's idle slots as
 * candidates, with an array sized to the table when it is attached, and
 * evicts what the policy names.
 *
 * Table lifetime (node_table.h has the protocol): each context is counted
 * in the table's attachers while it uses it. The last context of the
 * namespace to go (destroy) removes the table when nothing is left in it;
 * registry_reclaim removes it when only its own context (and dead
 * processes) are left, and this context then has no table until a call
 * needs one: model_get_or_load creates one, registry_list,
 * registry_metrics, model_evict and registry_reclaim use the namespace's
 * table if there is one again and otherwise see an empty registry. The
 * view of the table can therefore change under a context, so it sits
 * behind a read-write lock: every use of the table holds it shared, only
 * switching tables holds it exclusive. It is held with the table lock
 * (taken inside it), never across host code, a futex wait or a loader.
 */
#include "node_registry.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "device_access.h"
#include "device_weights.h"
#include "error.h"
#include "eviction_policy.h"
#include "loader_buffer.h"
#include "model_key.h"
#include "node_table.h"
#include "process_identity.h"
#include "registry.h"
#include "registry_ops.h"
#include "shm_segment.h"

#define NS_PER_MS UINT64_C(1000000)
#define NS_PER_S UINT64_C(1000000000)
#define SWEEP_PERIOD_MAX_NS NS_PER_S
#define SWEEP_PERIOD_MIN_NS (10 * NS_PER_MS)

struct rm_node_registry {
    rm_registry *local; /* this context's handles; see the top comment */
    const rm_host *host;
    const void *error_owner;
    rm_node_registry_config config;
    rm_eviction_limits limits; /* the config's, as the policy takes them */
    char namespace_name[RM_NODE_NAMESPACE_MAX + 1];
    /* Guards `table` and `table_generation` (see the top comment). */
    pthread_rwlock_t view_lock;
    bool view_lock_ready;
    rm_node_view table;        /* mapped and checked; header NULL: none */
    uint64_t table_generation; /* bumped at each change of `table` */
    /* The eviction policy's candidates, one per slot of `table`: sized
     * when a table is attached (view lock exclusive), used with the table
     * lock held, so that eviction never allocates. */
    rm_eviction_candidate *candidates;
    uint32_t candidate_capacity;
    /* Set by table_lock() after a repair, logged by table_unlock(): host
     * code never runs under the node-wide lock. Guarded by that lock. */
    bool recovery_to_log;
    pid_t pid;
    uint64_t start_time;
    rm_node_self self; /* the two above, as the table records them */

    pthread_mutex_t counters_lock; /* guards the counters below */
    uint64_t loads;
    uint64_t load_failures;
    uint64_t attaches;
    uint64_t takeovers;
    uint64_t dead_references;
    uint64_t lock_recoveries;
    uint64_t evictions_ttl;
    uint64_t evictions_lru;
    uint64_t evictions_explicit;
    uint64_t over_budget;

    pthread_mutex_t sweeper_lock;
    pthread_cond_t sweeper_wake; /* CLOCK_MONOTONIC */
    bool sweeper_started;
    bool shutting_down;
    pthread_t sweeper;
};

/* What a context holds for one model: its read-only mapping and which load
 * of which slot it is (the ticket tells a reused slot from ours). Device
 * weights are mapped once per process (device_weights.h): the attachment
 * is one use of them, named by the weights id. */
typedef struct attachment {
    rm_node_registry *registry;
    uint64_t generation; /* of the table the slot is in */
    uint32_t slot;
    uint64_t ticket;
    void *base;
    uint64_t bytes;
    rm_model_placement placement;
    uint64_t weights_id; /* placement.memory == RM_MEMORY_CUDA */
} attachment;

/* Where a model of a sealed segment lives, for rows and model_to_dlpack. */
static const rm_model_placement shm_placement = {
    .memory = RM_MEMORY_SHM, .buffer = true, .device_ordinal = -1};

/* Segments to unlink once the lock is dropped. */
typedef struct unlink_list {
    uint64_t *ids;
    uint32_t count;
    uint32_t capacity;
    uint64_t freed_bytes; /* /dev/shm bytes its unlinks freed */
} unlink_list;

/* The node loads this thread is running, innermost first (a loader may get
 * other keys, through other contexts): waiting for one of them would wait
 * for ourselves. */
typedef struct running_load {
    const char *namespace_name; /* the table: every context maps its own */
    uint32_t slot;
    uint64_t ticket;
    struct running_load *outer;
} running_load;

static _Thread_local running_load *loads_on_this_thread;

static bool this_thread_runs(const char *namespace_name, uint32_t slot, uint64_t ticket)
{
    for (const running_load *load = loads_on_this_thread; load != NULL; load = load->outer) {
        if (load->slot == slot && load->ticket == ticket &&
            strcmp(load->namespace_name, namespace_name) == 0)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* False for id 0, which no segment has (a scribbled entry can hold it). */
static bool model_segment_name(const rm_node_registry *registry, uint64_t id,
                               char out[RM_SEGMENT_NAME_MAX])
{
    return rm_segment_name_format(out, RM_SEGMENT_NODE_MODEL, registry->namespace_name, 0, id);
}

/* The table's key for a normalised key: devices by UUID (REF: gpu-weights). */
static void table_key_of(rm_node_registry *registry, const char *key,
                         char out[RM_MODEL_KEY_MAX])
{
    if (registry->config.device != NULL)
        rm_device_table_key(registry->config.device, key, out);
    else
        snprintf(out, RM_MODEL_KEY_MAX, "%s", key);
}

static void count(rm_node_registry *registry, uint64_t *counter, uint64_t amount)
{
    pthread_mutex_lock(&registry->counters_lock);
    *counter += amount;
    pthread_mutex_unlock(&registry->counters_lock);
}

static bool is_self(const rm_node_registry *registry, int32_t pid, uint64_t start_time)
{
    return pid == registry->pid && start_time == registry->start_time;
}

/* The list is allocated by its first push: most updates evict nothing,
 * and attaching a model should not pay for a list it never uses. */
static void unlink_list_init(unlink_list *list, uint32_t capacity)
{
    list->freed_bytes = 0;
    list->count = 0;
    list->capacity = capacity;
    list->ids = NULL;
}

/* Returns false when there is no room: the caller then unlinks at once. */
static bool unlink_list_push(unlink_list *list, uint64_t id)
{
    if (list->ids == NULL && list->capacity != 0) {
        list->ids = malloc(list->capacity * sizeof *list->ids);
        if (list->ids == NULL)
            list->capacity = 0;
    }
    if (list->count == list->capacity)
        return false;
    list->ids[list->count++] = id;
    return true;
}

/* Returns the /dev/shm bytes the unlink freed (0 if already gone). */
static uint64_t unlink_segment(const rm_node_registry *registry, uint64_t id)
{
    char name[RM_SEGMENT_NAME_MAX];
    uint64_t bytes = 0;
    if (!model_segment_name(registry, id, name) || !rm_segment_unlink(name, &bytes))
        return 0;
    return bytes;
}

static void unlink_list_run(const rm_node_registry *registry, unlink_list *list)
{
    for (uint32_t i = 0; i < list->count; i++)
        list->freed_bytes += unlink_segment(registry, list->ids[i]);
    free(list->ids);
    list->ids = NULL;
    list->count = list->capacity = 0;
}

/* ------------------------------------------------------------------------ */
/* The table, seen from this registry                                       */
/* ------------------------------------------------------------------------ */

static uint64_t *slot_hashes(const rm_node_registry *registry)
{
    return registry->table.hashes;
}

static rm_node_entry *slot_entry(const rm_node_registry *registry, uint32_t slot)
{
    return &registry->table.entries[slot];
}

static void clear_slot(rm_node_registry *registry, uint32_t slot)
{
    rm_node_clear_slot(&registry->table, slot);
}

/* What a call needs of the table when this context has none (its reclaim
 * removed it) or finds its own retired. */
typedef enum table_need {
    TABLE_CURRENT,  /* the one in use, or RM_E_NOT_FOUND */
    TABLE_EXISTING, /* the namespace's, if there is one; else RM_E_NOT_FOUND */
    TABLE_CREATE,   /* the namespace's, created if there is none */
} table_need;

static void log_recovery(rm_node_registry *registry)
{
    rm_host_log(registry->host, RM_LOG_WARN,
                "node registry '%s': a process died holding the table lock; the "
                "table was repaired and is in use again",
                registry->namespace_name);
}

/* The table lock of `registry->table`, counting a recovery. View lock
 * held (either way). */
static int32_t lock_view(rm_node_registry *registry, bool *recovered)
{
    *recovered = false;
    int32_t status = rm_node_table_lock(&registry->table, registry->namespace_name,
                                        registry->error_owner, recovered);
    if (*recovered)
        count(registry, &registry->lock_recoveries, 1);
    return status;
}

/* Sizes the eviction candidates for a table of `capacity` slots before
 * the table is put to use (the view lock exclusive, or at creation).
 * False: out of memory. */
static bool fit_candidates(rm_node_registry *registry, uint32_t capacity)
{
    if (capacity <= registry->candidate_capacity)
        return true;
    rm_eviction_candidate *larger =
        realloc(registry->candidates, (size_t)capacity * sizeof *registry->candidates);
    if (larger == NULL)
        return false;
    registry->candidates = larger;
    registry->candidate_capacity = capacity;
    return true;
}

/* Lets go of a table attached but not put to use: one context fewer in
 * its attachers. */
static void abandon_view(rm_node_registry *registry, rm_node_view *view, bool *recovered)
{
    bool lock_recovered = false;
    if (rm_node_table_lock(view, registry->namespace_name, registry->error_owner,
                           &lock_recovered) == RM_OK) {
        rm_node_detach_context(view, registry->self);
        rm_node_table_unlock(view);
    }
    if (lock_recovered) {
        count(registry, &registry->lock_recoveries, 1);
        *recovered = true;
    }
    rm_node_table_unmap(view);
}

static int32_t out_of_memory_for_table(const rm_node_registry *registry, uint32_t capacity)
{
    return rm_error_set(registry->error_owner, RM_E_NO_MEMORY,
                        "out of memory for the eviction candidates of node registry '%s' "
                        "(%u table entries)",
                        registry->namespace_name, capacity);
}

/* Makes `registry->table` a live table again: drops the one in use if it
 * was retired (only a process that took this one for dead retires a table
 * this context uses), then attaches to the namespace's (creating it if
 * `create`). Takes the view lock exclusive; a thread that switched first
 * wins. RM_E_NOT_FOUND: none, and not `create`. */
static int32_t switch_table(rm_node_registry *registry, bool create)
{
    pthread_rwlock_wrlock(&registry->view_lock);
    int32_t status = RM_OK;
    bool recovered = false;
    bool lost = false;
    bool needed = registry->table.header == NULL;
    if (!needed) {
        status = lock_view(registry, &recovered);
        if (status == RM_OK) {
            needed = registry->table.header->retired != 0;
            rm_node_table_unlock(&registry->table);
        }
        if (status == RM_OK && needed) {
            rm_node_table_unmap(&registry->table);
            registry->table_generation++;
            lost = true;
        }
    }
    if (status == RM_OK && needed) {
        rm_node_view view;
        bool attach_recovered = false;
        status = rm_node_table_attach(registry->namespace_name, registry->config.table_entries,
                                      create, registry->self, registry->error_owner, &view,
                                      &attach_recovered);
        if (attach_recovered) {
            count(registry, &registry->lock_recoveries, 1);
            recovered = true;
        }
        if (status == RM_OK && !fit_candidates(registry, view.capacity)) {
            abandon_view(registry, &view, &recovered);
            status = out_of_memory_for_table(registry, view.capacity);
        }
        if (status == RM_OK) {
            registry->table = view;
            registry->table_generation++;
        }
    }
    pthread_rwlock_unlock(&registry->view_lock);
    if (recovered)
        log_recovery(registry);
    if (lost)
        rm_host_log(registry->host, RM_LOG_WARN,
                    "node registry '%s': another process took this one (pid %d) for dead "
                    "and removed the table it used; the models it held there stay mapped "
                    "but are no longer shared",
                    registry->namespace_name, (int)registry->pid);
    return status;
}

/* Holds the view lock (shared) and the table lock of a live table, as
 * `need` says. RM_E_NOT_FOUND (no message): no table as `need` wants one;
 * nothing is held then. */
static int32_t table_lock(rm_node_registry *registry, table_need need)
{
    for (;;) {
        pthread_rwlock_rdlock(&registry->view_lock);
        if (registry->table.header != NULL) {
            bool recovered = false;
            int32_t status = lock_view(registry, &recovered);
            if (status != RM_OK) {
                pthread_rwlock_unlock(&registry->view_lock);
                return status;
            }
            registry->recovery_to_log = registry->recovery_to_log || recovered;
            if (!registry->table.header->retired)
                return RM_OK;
            bool log = registry->recovery_to_log;
            registry->recovery_to_log = false;
            rm_node_table_unlock(&registry->table);
            if (log)
                log_recovery(registry);
        }
        pthread_rwlock_unlock(&registry->view_lock);
        if (need == TABLE_CURRENT)
            return RM_E_NOT_FOUND;
        int32_t status = switch_table(registry, need == TABLE_CREATE);
        if (status != RM_OK)
            return status;
    }
}

static void table_unlock(rm_node_registry *registry)
{
    bool log = registry->recovery_to_log;
    registry->recovery_to_log = false;
    rm_node_table_unlock(&registry->table);
    pthread_rwlock_unlock(&registry->view_lock);
    if (log)
        log_recovery(registry);
}

/* An update of the table: the locks, and the segments it evicts, which are
 * unlinked only after the lock is dropped (freeing a big segment's pages
 * takes long). On failure nothing is held. */
static int32_t begin_update(rm_node_registry *registry, table_need need, unlink_list *victims)
{
    unlink_list_init(victims, 0);
    int32_t status = table_lock(registry, need);
    if (status == RM_OK)
        victims->capacity = registry->table.capacity;
    return status;
}

static void end_update(rm_node_registry *registry, unlink_list *victims)
{
    table_unlock(registry);
    unlink_list_run(registry, victims);
}

/* ------------------------------------------------------------------------ */
/* Entries (lock held)                                                      */
/* ------------------------------------------------------------------------ */

static int64_t find_slot(rm_node_registry *registry, const char *key, uint64_t hash)
{
    const uint64_t *hashes = slot_hashes(registry);
    uint32_t capacity = registry->table.capacity;
    for (uint32_t slot = 0; slot < capacity; slot++) {
        if (hashes[slot] == hash && strcmp(slot_entry(registry, slot)->key, key) == 0)
            return slot;
    }
    return -1;
}

static uint64_t drop_dead_holders(rm_node_registry *registry, rm_node_entry *e,
                                  uint64_t now_ns);

/* This process's holder record in `e`, or NULL. */
static rm_node_holder *self_holder(const rm_node_registry *registry, rm_node_entry *e)
{
    for (uint32_t i = 0; i < RM_NODE_MAX_HOLDER_PROCESSES; i++) {
        rm_node_holder *h = &e->holders[i];
        if (h->pid != 0 && is_self(registry, h->pid, h->start_time))
            return h;
    }
    return NULL;
}

/* Adds a reference of this process; false when every holder record is
 * taken by live processes. */
static bool holder_add(rm_node_registry *registry, rm_node_entry *e)
{
    rm_node_holder *h = self_holder(registry, e);
    for (uint32_t i = 0; i < RM_NODE_MAX_HOLDER_PROCESSES && h == NULL; i++) {
        if (e->holders[i].pid != 0)
            continue;
        h = &e->holders[i];
        *h = (rm_node_holder){.pid = registry->pid, .start_time = registry->start_time};
        e->holder_count++;
    }
    if (h == NULL)
        return false;
    h->refs++;
    e->refs++;
    return true;
}

/* One reference of this process fewer. For device weights the record
 * stays at zero: this process keeps them mapped and can still hand them
 * over, until holder_forget(). */
static void holder_remove(rm_node_registry *registry, rm_node_entry *e)
{
    rm_node_holder *h = self_holder(registry, e);
    if (h == NULL || h->refs == 0)
        return;
    h->refs--;
    e->refs--;
    if (h->refs == 0 && e->memory != RM_MEMORY_CUDA) {
        *h = (rm_node_holder){0};
        e->holder_count--;
    }
}

/* This process no longer has `e`'s device weights: its keeper record
 * goes (a record with references stays). */
static void holder_forget(rm_node_registry *registry, rm_node_entry *e)
{
    rm_node_holder *h = self_holder(registry, e);
    if (h != NULL && h->refs == 0) {
        *h = (rm_node_holder){0};
        e->holder_count--;
    }
}

/* A reference of this process on `e`, making room among dead processes'
 * records if there is none (lock held); false when live processes hold
 * every record. */
static bool add_reference(rm_node_registry *registry, rm_node_entry *e, uint64_t now_ns)
{
    if (holder_add(registry, e))
        return true;
    (void)drop_dead_holders(registry, e, now_ns);
    return holder_add(registry, e);
}

/* The READY slot whose device weights have id `weights_id`, or -1. */
static int64_t weights_slot(rm_node_registry *registry, uint64_t weights_id)
{
    for (uint32_t slot = 0; slot < registry->table.capacity; slot++) {
        const rm_node_entry *e = slot_entry(registry, slot);
        if (e->state == RM_NODE_READY && e->memory == RM_MEMORY_CUDA &&
            e->segment_id == weights_id)
            return slot;
    }
    return -1;
}

/* The entry of `slot` if it is still the load (`ticket`, in the table of
 * `generation`) this process took a reference on, READY; else NULL (lock
 * held). */
static rm_node_entry *held_entry(rm_node_registry *registry, uint64_t generation, uint32_t slot,
                                 uint64_t ticket)
{
    rm_node_entry *e = slot_entry(registry, slot);
    bool same = registry->table_generation == generation && e->ticket == ticket &&
                e->state == RM_NODE_READY;
    return same ? e : NULL;
}

/* The records of processes that may have `e`'s device weights mapped,
 * this one excepted; returns how many. */
static uint32_t weights_sources(rm_node_registry *registry, const rm_node_entry *e,
                                rm_weights_source sources[RM_NODE_MAX_HOLDER_PROCESSES])
{
    uint32_t count = 0;
    for (uint32_t i = 0; i < RM_NODE_MAX_HOLDER_PROCESSES; i++) {
        const rm_node_holder *h = &e->holders[i];
        if (h->pid != 0 && !is_self(registry, h->pid, h->start_time))
            sources[count++] = (rm_weights_source){.pid = h->pid, .start_time = h->start_time};
    }
    return count;
}

/* Holder records with references (keepers not counted). */
static uint32_t referencing_holders(const rm_node_entry *e)
{
    uint32_t count = 0;
    for (uint32_t i = 0; i < RM_NODE_MAX_HOLDER_PROCESSES; i++)
        count += e->holders[i].pid != 0 && e->holders[i].refs != 0;
    return count;
}

/* Drops the references of dead processes; returns how many. */
static uint64_t drop_dead_holders(rm_node_registry *registry, rm_node_entry *e,
                                  uint64_t now_ns)
{
    uint64_t dropped = 0;
    for (uint32_t i = 0; i < RM_NODE_MAX_HOLDER_PROCESSES; i++) {
        rm_node_holder *h = &e->holders[i];
        if (h->pid == 0 || is_self(registry, h->pid, h->start_time) ||
            rm_process_alive(h->pid, h->start_time))
            continue;
        dropped += h->refs;
        e->refs -= h->refs;
        e->holder_count--;
        *h = (rm_node_holder){0};
    }
    if (dropped != 0 && e->refs == 0)
        e->last_used_ns = now_ns; /* idle from now: the TTL starts here */
    return dropped;
}

/* Empties `slot` and queues its segment for unlinking. Device weights
 * have none: their holders unmap them when they see the entry gone. */
static void clear_and_unlink(rm_node_registry *registry, uint32_t slot, unlink_list *victims)
{
    const rm_node_entry *e = slot_entry(registry, slot);
    uint64_t id = e->segment_id;
    bool segment = e->memory != RM_MEMORY_CUDA;
    clear_slot(registry, slot);
    if (segment && !unlink_list_push(victims, id))
        victims->freed_bytes += unlink_segment(registry, id);
}

static void evict_slot(rm_node_registry *registry, uint32_t slot, unlink_list *victims)
{
    rm_node_entry *e = slot_entry(registry, slot);
    registry->table.header->ready_models--;
    registry->table.header->ready_bytes -= e->bytes;
    clear_and_unlink(registry, slot, victims);
}

typedef struct sweep_result {
    uint64_t freed_bytes;
    uint64_t dead_references;
    uint64_t loads_abandoned;
    uint64_t evicted_ttl;
    uint64_t evicted_lru;
    uint64_t weights_lost; /* device entries no live process had mapped */
} sweep_result;

static bool over_budget(const rm_node_registry *registry)
{
    const rm_node_header *table = registry->table.header;
    return rm_eviction_exceeded(&registry->limits, table->ready_bytes, table->ready_models) != 0;
}

/* The READY slots no process holds, as the eviction policy's candidates;
 * returns how many. */
static size_t gather_idle(rm_node_registry *registry)
{
    size_t count = 0;
    for (uint32_t slot = 0;
         slot < registry->table.capacity && count < registry->candidate_capacity; slot++) {
        const rm_node_entry *e = slot_entry(registry, slot);
        if (e->state == RM_NODE_READY && e->refs == 0)
            registry->candidates[count++] = (rm_eviction_candidate){
                .last_use_ns = e->last_used_ns, .tiebreak = slot, .id = slot};
    }
    return count;
}

/* Evicts the idle models the policy picks for `reasons` at `now_ns`, least
 * recently used first, counting them in *result. */
static void evict_idle(rm_node_registry *registry, unsigned reasons, uint64_t now_ns,
                       unlink_list *victims, sweep_result *result)
{
    rm_eviction_walk walk;
    rm_eviction_walk_begin(&walk, &registry->limits, now_ns, reasons, registry->candidates,
                           gather_idle(registry));
    const rm_node_header *table = registry->table.header;
    unsigned reason;
    for (const rm_eviction_candidate *c;
         (c = rm_eviction_walk_next(&walk, table->ready_bytes, table->ready_models, &reason)) !=
         NULL;) {
        evict_slot(registry, (uint32_t)c->id, victims);
        if (reason == RM_EVICT_EXPIRED)
            result->evicted_ttl++;
        else
            result->evicted_lru++;
    }
}

/* Evicts idle models, least recently used first, until the budget holds;
 * returns how many. */
static uint64_t evict_to_budget(rm_node_registry *registry, unlink_list *victims)
{
    if (!over_budget(registry))
        return 0; /* the usual case, without a scan */
    sweep_result evicted = {0};
    evict_idle(registry, RM_EVICT_OVER_BUDGET, 0, victims, &evicted);
    return evicted.evicted_lru;
}

/* Drops dead processes' references and claims, evicts what the TTL and
 * the budgets say. Lock held. Abandoned loads wake their waiters. */
static void sweep_locked(rm_node_registry *registry, uint64_t now_ns, unlink_list *victims,
                         sweep_result *result)
{
    for (uint32_t slot = 0; slot < registry->table.capacity; slot++) {
        rm_node_entry *e = slot_entry(registry, slot);
        if (e->state == RM_NODE_LOADING && !is_self(registry, e->loader_pid, e->loader_start_time) &&
            !rm_process_alive(e->loader_pid, e->loader_start_time)) {
            clear_and_unlink(registry, slot, victims);
            __atomic_add_fetch(&e->wake, 1, __ATOMIC_RELEASE);
            rm_node_futex_wake_all(&e->wake);
            result->loads_abandoned++;
        } else if (e->state == RM_NODE_READY) {
            result->dead_references += drop_dead_holders(registry, e, now_ns);
            /* Device memory lives only while a process has it mapped: with
             * no holder left, the weights are gone and the key must load
             * again. */
            if (e->memory == RM_MEMORY_CUDA && e->holder_count == 0) {
                evict_slot(registry, slot, victims);
                result->weights_lost++;
            }
        }
    }
    evict_idle(registry, RM_EVICT_EXPIRED | RM_EVICT_OVER_BUDGET, now_ns, victims, result);
}

/* Unmaps the device weights this process keeps (no context uses them)
 * whose entry is gone from the table, or no longer lists this process:
 * evicted, or lost. Takes the table lock; call it without. */
static void drop_unlisted_weights(rm_node_registry *registry)
{
    uint64_t *ids = NULL;
    uint32_t count = rm_weights_list(registry->namespace_name, false, &ids);
    if (count == 0)
        return;
    bool table = table_lock(registry, TABLE_CURRENT) == RM_OK;
    for (uint32_t i = 0; i < count && table; i++) {
        int64_t slot = weights_slot(registry, ids[i]);
        if (slot >= 0 && self_holder(registry, slot_entry(registry, (uint32_t)slot)) != NULL)
            ids[i] = 0; /* kept */
    }
    if (table)
        table_unlock(registry);
    for (uint32_t i = 0; i < count; i++)
        if (ids[i] != 0)
            (void)rm_weights_drop(registry->namespace_name, ids[i]);
    free(ids);
}

/* This process stops keeping the device weights of the namespace (its
 * last context of it goes): its keeper records leave the table (an entry
 * left with no holder is evicted: nobody else has the memory), then the
 * mappings go. Lock held for the records; the mappings go after. */
static void forget_kept_weights_locked(rm_node_registry *registry, unlink_list *victims)
{
    uint64_t *ids = NULL;
    uint32_t count = rm_weights_list(registry->namespace_name, false, &ids);
    for (uint32_t i = 0; i < count; i++) {
        int64_t slot = weights_slot(registry, ids[i]);
        if (slot < 0)
            continue;
        rm_node_entry *e = slot_entry(registry, (uint32_t)slot);
        holder_forget(registry, e);
        if (e->holder_count == 0)
            evict_slot(registry, (uint32_t)slot, victims);
    }
    free(ids);
}

static void drop_kept_weights(rm_node_registry *registry)
{
    uint64_t *ids = NULL;
    uint32_t count = rm_weights_list(registry->namespace_name, false, &ids);
    for (uint32_t i = 0; i < count; i++)
        (void)rm_weights_drop(registry->namespace_name, ids[i]);
    free(ids);
}

/* A sweep of the table `need` names; RM_E_NOT_FOUND: there is none (the
 * result is all zero). With `attachers`, dead processes' attachments are
 * dropped too: a check of every attached process, which only reclaim
 * makes (the periodic sweep of every process would make it once a second
 * per process, and only removal needs it, which checks what it needs). */
static int32_t sweep(rm_node_registry *registry, table_need need, bool attachers,
                     sweep_result *result)
{
    *result = (sweep_result){0};
    unlink_list victims;
    int32_t status = begin_update(registry, need, &victims);
    if (status != RM_OK)
        return status;
    if (attachers)
        (void)rm_node_drop_dead_attachers(&registry->table, registry->self);
    sweep_locked(registry, rm_monotonic_ns(), &victims, result);
    end_update(registry, &victims);
    drop_unlisted_weights(registry);
    result->freed_bytes = victims.freed_bytes;
    pthread_mutex_lock(&registry->counters_lock);
    registry->dead_references += result->dead_references;
    registry->evictions_ttl += result->evicted_ttl;
    registry->evictions_lru += result->evicted_lru;
    pthread_mutex_unlock(&registry->counters_lock);
    return RM_OK;
}

/* A slot for a new key: an empty one, else a failed one, else the least
 * recently used idle model (after dropping dead references). -1: full. */
static int64_t free_slot(rm_node_registry *registry, uint64_t now_ns, unlink_list *victims,
                         sweep_result *result)
{
    int64_t failed = -1;
    for (uint32_t slot = 0; slot < registry->table.capacity; slot++) {
        uint32_t state = slot_entry(registry, slot)->state;
        if (state == RM_NODE_EMPTY)
            return slot;
        if (state == RM_NODE_FAILED && failed < 0)
            failed = slot;
    }
    if (failed >= 0)
        return failed;
    sweep_locked(registry, now_ns, victims, result);
    for (uint32_t slot = 0; slot < registry->table.capacity; slot++) {
        if (slot_entry(registry, slot)->state == RM_NODE_EMPTY)
            return slot;
    }
    rm_eviction_walk walk;
    rm_eviction_walk_begin(&walk, &registry->limits, now_ns, RM_EVICT_EVERY,
                           registry->candidates, gather_idle(registry));
    unsigned reason;
    const rm_eviction_candidate *least_recent = rm_eviction_walk_next(&walk, 0, 0, &reason);
    if (least_recent == NULL)
        return -1;
    evict_slot(registry, (uint32_t)least_recent->id, victims);
    result->evicted_lru++;
    return (int64_t)least_recent->id;
}

/* `segment_id` comes from rm_segment_random_id(), asked for before the
 * claim so that a failure leaves the entry as it was. */
static void claim(rm_node_registry *registry, uint32_t slot, const char *key, uint64_t hash,
                  uint64_t segment_id)
{
    rm_node_entry *e = slot_entry(registry, slot);
    if (e->state != RM_NODE_FAILED || strcmp(e->key, key) != 0) {
        clear_slot(registry, slot);
        size_t length = strlen(key);
        memcpy(e->key, key, length + 1);
    }
    slot_hashes(registry)[slot] = hash;
    e->ticket++;
    e->state = RM_NODE_LOADING;
    e->segment_id = segment_id;
    e->bytes = 0;
    e->memory = RM_MODEL_MEMORY_HOST; /* unknown until the loader asks for a buffer */
    e->device_bytes = 0;
    memset(e->device_uuid, 0, sizeof e->device_uuid);
    e->loader_pid = registry->pid;
    e->loader_start_time = registry->start_time;
}

/* ------------------------------------------------------------------------ */
/* Mapping sealed models                                                    */
/* ------------------------------------------------------------------------ */

/* Maps the sealed segment `id` read-only, checking that it is what a loader
 * of this user sealed: a 0400 regular file of `bytes` bytes. */
static int32_t map_sealed(rm_node_registry *registry, const char *key, uint64_t id,
                          uint64_t bytes, void **out_base)
{
    char name[RM_SEGMENT_NAME_MAX];
    if (!model_segment_name(registry, id, name))
        return rm_error_set(registry->error_owner, RM_E_CORRUPT_STATE,
                            "model key '%s' is ready in node registry '%s' but its entry "
                            "names no segment (id %llu)",
                            key, registry->namespace_name, (unsigned long long)id);
    uint64_t size = 0;
    int fd = rm_segment_open_owned(name, false, S_IRUSR, &size);
    if (fd < 0 && errno != EPERM && errno != EINVAL)
        return rm_error_set(registry->error_owner, RM_E_CORRUPT_STATE,
                            "model key '%s' is ready in node registry '%s' but its segment "
                            "%s cannot be opened: %s",
                            key, registry->namespace_name, name, strerror(errno));
    int32_t status = RM_OK;
    if (fd < 0 || size != bytes)
        status = rm_error_set(registry->error_owner, RM_E_CORRUPT_STATE,
                              "segment %s of model key '%s' is not the sealed %llu-byte "
                              "0400 file of this user that the table names",
                              name, key, (unsigned long long)bytes);
    void *base = MAP_FAILED;
    if (status == RM_OK) {
        base = mmap(NULL, (size_t)bytes, PROT_READ, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            status = rm_error_set(registry->error_owner,
                                  errno == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                                  "mmap() of %s (%llu bytes) failed: %s", name,
                                  (unsigned long long)bytes, strerror(errno));
    }
    if (fd >= 0)
        close(fd);
    if (status == RM_OK)
        *out_base = base;
    return status;
}

/* ------------------------------------------------------------------------ */
/* Loading into a segment                                                   */
/* ------------------------------------------------------------------------ */

/* A load this process claimed: which load of which slot of which table,
 * the segment the loader writes, and how it went. */
typedef struct node_load {
    rm_node_registry *registry;
    const char *key;       /* as the host asked: the loader's */
    const char *table_key; /* as the table has it (REF: gpu-weights) */
    uint64_t generation; /* of the table the slot is in */
    uint32_t slot;
    uint64_t ticket;
    uint64_t segment_id;
    int fd; /* the segment while it is written; -1 */
    rm_loader_buffer buffer;
    rm_loaded_model loaded;
    /* A device buffer: the draft until sealed, then this process's
     * published weights (segment_id is their id). */
    bool device;
    rm_weights_draft draft;
    uint64_t device_pointer; /* once published */
    int device_ordinal;
    uint64_t device_bytes; /* the allocation's */
    uint8_t device_uuid[16];
    int32_t status;
    bool explained; /* the status has a message of its own */
} node_load;

static rm_node_entry *claimed_entry(rm_node_registry *registry, const struct node_load *load);

/* Shows in the LOADING entry what its buffer is (rows of a load in
 * progress; clearing a dead loader's claim unlinks a segment only for
 * shared memory). The claim may have been lost meanwhile: then nothing. */
static void record_buffer(node_load *load, uint32_t memory)
{
    rm_node_registry *registry = load->registry;
    if (table_lock(registry, TABLE_CURRENT) != RM_OK)
        return;
    rm_node_entry *e = claimed_entry(registry, load);
    if (e != NULL) {
        e->memory = memory;
        if (memory == RM_MEMORY_CUDA) {
            e->device_bytes = load->device_bytes;
            memcpy(e->device_uuid, load->device_uuid, sizeof e->device_uuid);
        }
    }
    table_unlock(registry);
}

/* The loader's alloc_buffer(): a new segment, committed and mapped
 * writable. */
static int32_t create_segment(rm_loader_buffer *buffer, uint64_t bytes)
{
    node_load *load = buffer->scope_state;
    char name[RM_SEGMENT_NAME_MAX];
    if (!model_segment_name(load->registry, load->segment_id, name))
        return rm_error_set(buffer->error_owner, RM_E_CORRUPT_STATE,
                            "the claim of model key '%s' names no segment (id 0)", buffer->key);
    char what[64 + RM_MODEL_KEY_MAX];
    snprintf(what, sizeof what, "buffer of model key '%s'", buffer->key);
    /* Committed now: a full /dev/shm is an error here, not a SIGBUS while
     * the loader writes. */
    int fd = -1;
    int32_t status = rm_segment_create(name, bytes, RM_SEGMENT_COMMITTED, what,
                                       buffer->error_owner, &fd, NULL);
    if (status != RM_OK)
        return status;
    void *base = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int err = errno;
        close(fd);
        (void)rm_segment_unlink(name, NULL);
        return rm_error_set(buffer->error_owner, err == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                            "cannot map %llu bytes of %s for model key '%s': %s",
                            (unsigned long long)bytes, name, buffer->key, strerror(err));
    }
    load->fd = fd;
    buffer->base = base;
    record_buffer(load, RM_MEMORY_SHM);
    return RM_OK;
}

/* The loader's alloc_device_buffer(): exportable device memory, mapped
 * read-write here until the load is sealed. */
static int32_t create_device_weights(rm_loader_buffer *buffer, uint64_t bytes)
{
    node_load *load = buffer->scope_state;
    rm_node_registry *registry = load->registry;
    rm_cuda_driver *driver = NULL;
    int32_t status = rm_device_access_driver(registry->config.device, buffer->key,
                                             buffer->error_owner, &driver);
    if (status == RM_OK)
        status = rm_weights_draft_create(driver, buffer->device_ordinal, bytes, buffer->key,
                                         buffer->error_owner, &load->draft);
    if (status != RM_OK)
        return status;
    load->device = true;
    load->device_ordinal = buffer->device_ordinal;
    load->device_bytes = load->draft.bytes;
    (void)rm_device_access_uuid(registry->config.device, buffer->device_ordinal,
                                load->device_uuid);
    buffer->device_pointer = load->draft.pointer;
    buffer->stream = load->draft.stream;
    record_buffer(load, RM_MEMORY_CUDA);
    return RM_OK;
}

/* The load this process has just claimed in `slot` (lock held). */
static void begin_load(node_load *load, rm_node_registry *registry, const char *key,
                       const char *table_key, uint64_t generation, uint32_t slot)
{
    const rm_node_entry *e = slot_entry(registry, slot);
    *load = (node_load){
        .registry = registry,
        .key = key,
        .table_key = table_key,
        .generation = generation,
        .slot = slot,
        .ticket = e->ticket,
        .segment_id = e->segment_id,
        .fd = -1,
    };
}

/* What a loader must give in node scope: its model in the buffer, which
 * other processes can map; a private pointer is of no use to them. */
static void check_shareable(node_load *load)
{
    bool used = false;
    load->status = rm_loader_buffer_check(&load->loaded, &load->buffer, &used);
    load->explained = load->status != RM_OK;
    if (load->status != RM_OK || used)
        return;
    if (load->loaded.destroy != NULL)
        load->loaded.destroy(load->loaded.model, load->loaded.destroy_user);
    load->status = rm_error_set(load->registry->error_owner, RM_E_NOT_SHAREABLE,
                                "loader for model key '%s' returned a private model: in "
                                "node scope a loader must write the model into "
                                "out->alloc_buffer() so other processes can map it",
                                load->key);
    load->explained = true;
}

/* The run-loader state (no lock held): the host's loader writes the model
 * into the segment its alloc_buffer() creates. */
static void call_loader(node_load *load, rm_model_loader_fn loader, void *loader_user)
{
    rm_node_registry *registry = load->registry;
    load->buffer = (rm_loader_buffer){
        .create = create_segment,
        .create_device = registry->config.device != NULL ? create_device_weights : NULL,
        .scope_state = load,
        .error_owner = registry->error_owner,
        .key = load->key,
    };
    load->loaded = (rm_loaded_model){
        .struct_size = (uint32_t)sizeof load->loaded,
        .abi_version = RM_ABI_VERSION_CURRENT,
    };
    rm_loader_buffer_offer(&load->loaded, &load->buffer);
    running_load running = {
        .namespace_name = registry->namespace_name,
        .slot = load->slot,
        .ticket = load->ticket,
        .outer = loads_on_this_thread};
    loads_on_this_thread = &running;
    int32_t status = loader(loader_user, load->key, &load->loaded);
    loads_on_this_thread = running.outer;
    load->loaded.plugin_private = NULL;
    load->status = status > 0 ? RM_E_LOADER_FAILED : status;
    load->explained = rm_loader_buffer_explains(&load->buffer, load->status);
    if (load->status == RM_OK)
        check_shareable(load);
}

/* Seals a loaded segment: no write access for anyone from here on, in
 * this process (mprotect) or any other (mode 0400, read-only opens). The
 * descriptor is closed whatever the outcome. */
static void seal_segment(node_load *load)
{
    if (load->status == RM_OK &&
        (fchmod(load->fd, S_IRUSR) != 0 ||
         mprotect(load->buffer.base, (size_t)load->buffer.bytes, PROT_READ) != 0)) {
        load->status = rm_error_set(load->registry->error_owner, RM_E_SYSTEM,
                                    "cannot seal the buffer of model key '%s' read-only: %s",
                                    load->key, strerror(errno));
        load->explained = true;
    }
    if (load->fd >= 0)
        close(load->fd);
    load->fd = -1;
}

/* Seals a device buffer: the device's work done, every mapping
 * read-only, and the weights published in this process's table (served
 * to others once the entry is READY). A failure frees the draft. */
static void seal_weights(node_load *load)
{
    if (load->status != RM_OK)
        return;
    load->status = rm_weights_publish(&load->draft, load->registry->namespace_name,
                                      load->segment_id, load->table_key,
                                      load->registry->error_owner, &load->device_pointer);
    load->explained = load->explained || load->status != RM_OK;
}

/* The rollback of a load: its segment, if it got one, is unmapped and
 * removed; device memory is freed (a draft) or unmapped (published). */
static void discard_segment(node_load *load)
{
    if (load->device) {
        if (load->device_pointer != 0) {
            rm_weights_unuse(load->registry->namespace_name, load->segment_id);
            (void)rm_weights_drop(load->registry->namespace_name, load->segment_id);
            load->device_pointer = 0;
        } else {
            rm_weights_draft_discard(&load->draft);
        }
        return;
    }
    if (load->buffer.base == NULL)
        return;
    munmap(load->buffer.base, (size_t)load->buffer.bytes);
    (void)unlink_segment(load->registry, load->segment_id);
    load->buffer.base = NULL;
}

/* The admit state: the entry READY with this process's first reference
 * (lock held), then the budget. Returns the evictions that made room;
 * *over: admitted over budget all the same. */
static uint64_t admit(rm_node_registry *registry, rm_node_entry *e, const node_load *load,
                      unlink_list *victims, bool *over)
{
    uint64_t now_ns = rm_monotonic_ns();
    uint64_t bytes = load->buffer.bytes;
    e->memory = load->device ? RM_MEMORY_CUDA : RM_MEMORY_SHM;
    if (load->device) {
        e->device_bytes = load->device_bytes;
        memcpy(e->device_uuid, load->device_uuid, sizeof e->device_uuid);
    }
    /* Size first: a READY entry without one is what repair removes. */
    e->bytes = bytes;
    e->state = RM_NODE_READY;
    e->loaded_at_ns = e->last_used_ns = now_ns;
    e->loader_pid = 0;
    e->loader_start_time = 0;
    (void)holder_add(registry, e); /* a fresh entry has room */
    registry->table.header->ready_models++;
    registry->table.header->ready_bytes += bytes;
    uint64_t evicted = evict_to_budget(registry, victims);
    *over = over_budget(registry);
    return evicted;
}

/* The publish-failure state: the entry FAILED with the loader's code, for
 * its waiters to report (lock held); anyone may claim it again. */
static void publish_failure(rm_node_entry *e, uint64_t ticket, int32_t status)
{
    e->state = RM_NODE_FAILED;
    e->failure = status;
    e->failure_ticket = ticket;
    e->segment_id = 0;
    e->loader_pid = 0;
    e->loader_start_time = 0;
}

/* The claimed entry of `load`, if the claim is still this process's (lock
 * held): another process may have judged this one dead and taken it over,
 * or removed the table. */
static rm_node_entry *claimed_entry(rm_node_registry *registry, const node_load *load)
{
    if (registry->table_generation != load->generation)
        return NULL;
    rm_node_entry *e = slot_entry(registry, load->slot);
    bool ours = e->state == RM_NODE_LOADING && e->ticket == load->ticket &&
                is_self(registry, e->loader_pid, e->loader_start_time);
    return ours ? e : NULL;
}

/* Ends the load with its outcome: admit or publish the failure, and wake
 * the waiters. False when the claim was no longer ours. */
static bool publish_load(node_load *load)
{
    rm_node_registry *registry = load->registry;
    unlink_list victims;
    if (begin_update(registry, TABLE_CURRENT, &victims) != RM_OK)
        return false;
    rm_node_entry *e = claimed_entry(registry, load);
    uint64_t evicted = 0;
    bool over = false;
    if (e != NULL && load->status == RM_OK)
        evicted = admit(registry, e, load, &victims, &over);
    else if (e != NULL)
        publish_failure(e, load->ticket, load->status);
    if (e != NULL)
        __atomic_add_fetch(&e->wake, 1, __ATOMIC_RELEASE);
    end_update(registry, &victims);
    /* The waiters need the lock next: wake them once it is free. */
    if (e != NULL)
        rm_node_futex_wake_all(&e->wake);
    pthread_mutex_lock(&registry->counters_lock);
    registry->evictions_lru += evicted;
    registry->over_budget += over ? 1 : 0;
    pthread_mutex_unlock(&registry->counters_lock);
    return e != NULL;
}

/* Counts the load and hands out its attachment, or its error. */
static int32_t finish_load(node_load *load, attachment *out)
{
    rm_node_registry *registry = load->registry;
    if (load->status != RM_OK) {
        count(registry, &registry->load_failures, 1);
        if (load->explained)
            return load->status;
        return rm_error_set(registry->error_owner, load->status,
                            "loader for model key '%s' failed: %s (%s)", load->key,
                            rm_error_name(load->status), rm_error_string(load->status));
    }
    count(registry, &registry->loads, 1);
    *out = (attachment){.registry = registry,
                        .generation = load->generation,
                        .slot = load->slot,
                        .ticket = load->ticket,
                        .base = load->buffer.base,
                        .bytes = load->buffer.bytes,
                        .placement = shm_placement};
    if (load->device) {
        out->base = (void *)(uintptr_t)load->device_pointer;
        out->weights_id = load->segment_id;
        out->placement = (rm_model_placement){.memory = RM_MEMORY_CUDA,
                                              .buffer = true,
                                              .device_ordinal = load->device_ordinal,
                                              .device_bytes = load->device_bytes};
        memcpy(out->placement.device_uuid, load->device_uuid, sizeof load->device_uuid);
    }
    return RM_OK;
}

/* Runs the host's loader for the slot this process claimed, seals what it
 * wrote and publishes the outcome. A failed load's segment goes before the
 * failure is published, so the waiters' next load starts clean; a sealed
 * one goes only if the claim was lost meanwhile. */
static int32_t run_load(node_load *load, rm_model_loader_fn loader, void *loader_user,
                        attachment *out)
{
    call_loader(load, loader, loader_user);
    if (load->device)
        seal_weights(load);
    else
        seal_segment(load);
    if (load->status != RM_OK)
        discard_segment(load);
    if (!publish_load(load) && load->status == RM_OK) {
        discard_segment(load);
        load->status = rm_error_set(load->registry->error_owner, RM_E_CORRUPT_STATE,
                                    "the claim on model key '%s' was taken from this process "
                                    "while its loader ran (its table lock is unusable, or "
                                    "another process could not see this one alive in /proc)",
                                    load->key);
        load->explained = true;
    }
    return finish_load(load, out);
}

/* ------------------------------------------------------------------------ */
/* Acquire: the local registry's loader, one function per state             */
/* ------------------------------------------------------------------------ */

/* One node_acquire() call: what it asks for, the load it waited for
 * (tickets count per slot, so the slot and the table are part of its
 * name), and this turn's view of the table, taken with the lock. */
typedef struct acquire {
    rm_node_registry *registry;
    const char *key;       /* as the host asked */
    const char *table_key; /* as the table has it (REF: gpu-weights) */
    uint64_t hash;         /* of table_key */
    uint32_t weights_retries; /* device weights nobody handed over */
    rm_model_loader_fn loader;
    void *loader_user;
    attachment *out;
    uint64_t waited_ticket; /* 0: none */
    int64_t waited_slot;
    uint64_t waited_generation;
    uint64_t generation;
    uint64_t now_ns;
    unlink_list victims;
} acquire;

/* A state's answer that asks for another turn (after a wait); every other
 * answer is the call's status. */
#define ACQUIRE_AGAIN 1

/* The load this call waited for failed: report it, even if another caller
 * has started a new load of the key since. (Were that slot given to
 * another key in between, which only a full table does, this caller loads
 * the key itself instead.) */
static int32_t report_waited_failure(acquire *a, const rm_node_entry *e)
{
    int32_t failure = e->failure;
    end_update(a->registry, &a->victims);
    return rm_error_set(a->registry->error_owner, failure,
                        "loading model key '%s' failed in the process that ran its "
                        "loader: %s (%s)",
                        a->key, rm_error_name(failure), rm_error_string(failure));
}

/* Gives back the reference this process took on `slot` (load `ticket` of
 * table `generation`) and cannot use. The reference kept the table; the
 * generation check guards against another process having removed it. */
static void drop_reference(rm_node_registry *registry, uint64_t generation, uint32_t slot,
                           uint64_t ticket)
{
    if (table_lock(registry, TABLE_CURRENT) != RM_OK)
        return;
    rm_node_entry *held = held_entry(registry, generation, slot, ticket);
    if (held != NULL)
        holder_remove(registry, held);
    table_unlock(registry);
}

static int32_t too_many_holders(const acquire *a)
{
    return rm_error_set(a->registry->error_owner, RM_E_QUOTA_EXCEEDED,
                        "model key '%s' is held by %u processes, the most a node table "
                        "entry records",
                        a->key, RM_NODE_MAX_HOLDER_PROCESSES);
}

/* After a failed hand-over: gives back the reference this process took
 * on `slot` (load `ticket`) and, as it never got the weights, its record
 * too (a record at zero references says "has them mapped": a keeper).
 * With `lost` (every holder said it has them not), the weights are gone:
 * the entry goes, so that the next turn loads the key again. A holder that
 * was itself receiving them meanwhile keeps its mapping for as long as it
 * holds it; the table forgets it. */
static void give_back_unmapped(rm_node_registry *registry, uint64_t generation, uint32_t slot,
                               uint64_t ticket, uint64_t weights_id, bool lost)
{
    unlink_list victims;
    if (begin_update(registry, TABLE_CURRENT, &victims) != RM_OK)
        return;
    rm_node_entry *e = held_entry(registry, generation, slot, ticket);
    if (e != NULL && e->memory == RM_MEMORY_CUDA) {
        holder_remove(registry, e);
        if (!rm_weights_has(registry->namespace_name, weights_id))
            holder_forget(registry, e);
        if (e->refs == 0)
            e->last_used_ns = rm_monotonic_ns();
        if (lost || e->holder_count == 0)
            evict_slot(registry, slot, &victims);
    }
    end_update(registry, &victims);
}

/* The attach state for device weights (lock held; ended here): one more
 * use of this process's mapping if it has one, else a reference first
 * (so the entry stays while the weights travel), then the descriptor from
 * a holder, imported and mapped read-only on this process's ordinal of
 * the device. */
static int32_t attach_device(acquire *a, uint32_t slot)
{
    rm_node_registry *registry = a->registry;
    rm_node_entry *e = slot_entry(registry, slot);
    bool added = add_reference(registry, e, a->now_ns);
    uint64_t pointer = 0;
    bool mapped = added && rm_weights_use(registry->namespace_name, e->segment_id, &pointer);
    rm_weights_source sources[RM_NODE_MAX_HOLDER_PROCESSES];
    /* The dead first: a SIGKILLed holder answers nobody. */
    uint32_t source_count = 0;
    if (added && !mapped) {
        count(registry, &registry->dead_references, drop_dead_holders(registry, e, a->now_ns));
        source_count = weights_sources(registry, e, sources);
    }
    attachment held = {.registry = registry,
                       .generation = a->generation,
                       .slot = slot,
                       .ticket = e->ticket,
                       .bytes = e->bytes,
                       .weights_id = e->segment_id,
                       .placement = {.memory = RM_MEMORY_CUDA,
                                     .buffer = true,
                                     .device_bytes = e->device_bytes}};
    memcpy(held.placement.device_uuid, e->device_uuid, sizeof e->device_uuid);
    end_update(registry, &a->victims);
    if (!added)
        return too_many_holders(a);
    int ordinal = rm_device_access_ordinal_of(registry->config.device, held.placement.device_uuid);
    held.placement.device_ordinal = ordinal;
    int32_t status = RM_OK;
    if (!mapped && ordinal < 0)
        status = rm_error_set(registry->error_owner, RM_E_DEVICE_UNAVAILABLE,
                              "model key '%s' is ready on device %s, which this process "
                              "does not see",
                              a->key, strrchr(a->table_key, '@') + 1);
    rm_cuda_driver *driver = NULL;
    if (!mapped && status == RM_OK)
        status = rm_device_access_driver(registry->config.device, a->key,
                                         registry->error_owner, &driver);
    if (!mapped && status == RM_OK)
        status = rm_weights_receive(driver, ordinal, registry->namespace_name, held.weights_id,
                                    a->table_key, held.placement.device_bytes, sources,
                                    source_count, registry->error_owner, &pointer);
    if (status != RM_OK) {
        bool lost = status == RM_E_NOT_FOUND;
        give_back_unmapped(registry, held.generation, slot, held.ticket, held.weights_id, lost);
        if (lost && a->weights_retries++ < 3)
            return ACQUIRE_AGAIN; /* the entry went: load, or attach to who did */
        if (lost) {
            char why[RM_ERROR_MESSAGE_MAX];
            snprintf(why, sizeof why, "%s", rm_error_last(registry->error_owner));
            return rm_error_set(registry->error_owner, RM_E_SYSTEM, "%s", why);
        }
        return status;
    }
    count(registry, &registry->attaches, 1);
    held.base = (void *)(uintptr_t)pointer;
    *a->out = held;
    return RM_OK;
}

/* The attach state: `slot` is READY. A reference of this process, then the
 * sealed segment mapped; the one rollback is the reference, when the
 * mapping fails. Device weights have a state of their own. */
static int32_t attach_ready(acquire *a, uint32_t slot)
{
    rm_node_registry *registry = a->registry;
    rm_node_entry *e = slot_entry(registry, slot);
    if (e->memory == RM_MEMORY_CUDA)
        return attach_device(a, slot);
    bool added = add_reference(registry, e, a->now_ns);
    uint64_t id = e->segment_id;
    uint64_t bytes = e->bytes;
    uint64_t ticket = e->ticket;
    end_update(registry, &a->victims);
    if (!added)
        return too_many_holders(a);
    void *base = NULL;
    int32_t status = map_sealed(registry, a->key, id, bytes, &base);
    if (status != RM_OK) {
        drop_reference(registry, a->generation, slot, ticket);
        return status;
    }
    count(registry, &registry->attaches, 1);
    *a->out = (attachment){.registry = registry,
                           .generation = a->generation,
                           .slot = slot,
                           .ticket = ticket,
                           .base = base,
                           .bytes = bytes,
                           .placement = shm_placement};
    return RM_OK;
}

/* The wait state: sleeps until the load of `slot` ends or the poll
 * interval passes (to re-check the loader's life), then asks for another
 * turn. Should the table go meanwhile (the load failed, and this context's
 * reclaim removed it), the wait on a word no longer mapped ends at once
 * (EFAULT) or at its timeout, and the next turn sees the table this
 * context uses now. */
static int32_t wait_for_loader(acquire *a, uint32_t slot)
{
    rm_node_entry *e = slot_entry(a->registry, slot);
    a->waited_ticket = e->ticket;
    a->waited_slot = slot;
    a->waited_generation = a->generation;
    uint32_t *word = &e->wake;
    uint32_t wake = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    end_update(a->registry, &a->victims);
    rm_node_futex_wait_ms(word, wake, RM_NODE_TAKEOVER_POLL_MS);
    return ACQUIRE_AGAIN;
}

/* The take-over state: the process loading `slot` died. Its claim becomes
 * this process's, its half-written segment goes, and this process loads. */
static int32_t take_over(acquire *a, uint32_t slot)
{
    rm_node_registry *registry = a->registry;
    const rm_node_entry *e = slot_entry(registry, slot);
    uint64_t dead_segment = e->segment_id;
    int32_t dead_pid = e->loader_pid;
    uint64_t segment_id = 0;
    int32_t status = rm_segment_random_id(RM_SEGMENT_NODE_MODEL, registry->namespace_name,
                                          registry->error_owner, &segment_id);
    if (status != RM_OK) {
        end_update(registry, &a->victims);
        return status;
    }
    claim(registry, slot, a->table_key, a->hash, segment_id);
    node_load load;
    begin_load(&load, registry, a->key, a->table_key, a->generation, slot);
    end_update(registry, &a->victims);
    (void)unlink_segment(registry, dead_segment);
    count(registry, &registry->takeovers, 1);
    rm_host_log(registry->host, RM_LOG_WARN,
                "model key '%s': the process loading it (pid %d) died; this process "
                "(pid %d) takes the load over",
                a->key, (int)dead_pid, (int)registry->pid);
    return run_load(&load, a->loader, a->loader_user, a->out);
}

/* `slot` is LOADING: a load this very thread runs (a cycle through another
 * context), one to wait for (this process's, on another thread: this
 * thread's own loads are caught as cycles by the local layer before they
 * get here; or a live process's), or a dead loader's to take over. */
static int32_t on_loading(acquire *a, uint32_t slot)
{
    rm_node_registry *registry = a->registry;
    const rm_node_entry *e = slot_entry(registry, slot);
    bool self = is_self(registry, e->loader_pid, e->loader_start_time);
    if (self && this_thread_runs(registry->namespace_name, slot, e->ticket)) {
        end_update(registry, &a->victims);
        return rm_error_set(registry->error_owner, RM_E_LOAD_CYCLE,
                            "model key '%s' is being loaded by this thread, whose "
                            "loader (through another context) asks for it again",
                            a->key);
    }
    if (self || rm_process_alive(e->loader_pid, e->loader_start_time))
        return wait_for_loader(a, slot);
    return take_over(a, slot);
}

/* The claim state: the key is absent, or its last load failed. A slot
 * (made by sweeping and evicting when the table is full), claimed, and
 * this process loads. */
static int32_t claim_and_load(acquire *a, int64_t found)
{
    rm_node_registry *registry = a->registry;
    /* The id first: a failure then leaves the table as it was. */
    uint64_t segment_id = 0;
    int32_t status = rm_segment_random_id(RM_SEGMENT_NODE_MODEL, registry->namespace_name,
                                          registry->error_owner, &segment_id);
    if (status != RM_OK) {
        end_update(registry, &a->victims);
        return status;
    }
    sweep_result swept = {0};
    int64_t slot = found >= 0 ? found : free_slot(registry, a->now_ns, &a->victims, &swept);
    if (slot < 0) {
        uint32_t capacity = registry->table.capacity;
        end_update(registry, &a->victims);
        return rm_error_set(registry->error_owner, RM_E_QUOTA_EXCEEDED,
                            "node registry '%s' is full: all %u entries of its table "
                            "(registry.table_entries when it was created) are loading "
                            "or held by live processes",
                            registry->namespace_name, capacity);
    }
    claim(registry, (uint32_t)slot, a->table_key, a->hash, segment_id);
    node_load load;
    begin_load(&load, registry, a->key, a->table_key, a->generation, (uint32_t)slot);
    end_update(registry, &a->victims);
    pthread_mutex_lock(&registry->counters_lock);
    registry->dead_references += swept.dead_references;
    registry->evictions_ttl += swept.evicted_ttl;
    registry->evictions_lru += swept.evicted_lru;
    /* We waited for a load that neither finished nor failed: a sweep
     * cleared its dead loader's claim, and this is its takeover. */
    registry->takeovers += a->waited_ticket != 0 ? 1 : 0;
    pthread_mutex_unlock(&registry->counters_lock);
    return run_load(&load, a->loader, a->loader_user, a->out);
}

/* Starts a turn: the table lock, and where the key stands in it (-1:
 * absent). A new table forgets the load waited for: it went with the old
 * one. */
static int32_t begin_turn(acquire *a, int64_t *found)
{
    int32_t status = begin_update(a->registry, TABLE_CREATE, &a->victims);
    if (status != RM_OK)
        return status;
    a->generation = a->registry->table_generation;
    if (a->generation != a->waited_generation) {
        a->waited_slot = -1;
        a->waited_ticket = 0;
    }
    a->now_ns = rm_monotonic_ns();
    *found = find_slot(a->registry, a->table_key, a->hash);
    return RM_OK;
}

/* Finds `key` ready (attach), loading (wait, or take over a dead loader's
 * claim), or absent (claim and load); each state ends the update it is
 * handed. */
static int32_t node_acquire(rm_node_registry *registry, const char *key,
                            rm_model_loader_fn loader, void *loader_user, attachment *out)
{
    char table_key[RM_MODEL_KEY_MAX];
    table_key_of(registry, key, table_key);
    acquire a = {.registry = registry,
                 .key = key,
                 .table_key = table_key,
                 .hash = rm_node_key_hash(table_key),
                 .loader = loader,
                 .loader_user = loader_user,
                 .out = out,
                 .waited_slot = -1};
    int32_t status = ACQUIRE_AGAIN;
    while (status == ACQUIRE_AGAIN) {
        int64_t found = -1;
        status = begin_turn(&a, &found);
        if (status != RM_OK)
            return status;
        const rm_node_entry *e = found >= 0 ? slot_entry(registry, (uint32_t)found) : NULL;
        if (e != NULL && found == a.waited_slot && e->failure_ticket == a.waited_ticket)
            status = report_waited_failure(&a, e);
        else if (e != NULL && e->state == RM_NODE_READY)
            status = attach_ready(&a, (uint32_t)found);
        else if (e != NULL && e->state == RM_NODE_LOADING)
            status = on_loading(&a, (uint32_t)found);
        else
            status = claim_and_load(&a, found);
    }
    return status;
}

/* ------------------------------------------------------------------------ */
/* Detach, and the loader the local registry runs                           */
/* ------------------------------------------------------------------------ */

/* The local registry destroys a model when the context's last handle on it
 * is released: give the node reference back and unmap. */
static void node_detach(void *base, void *user)
{
    attachment *held = user;
    rm_node_registry *registry = held->registry;
    unlink_list victims;
    uint64_t lru = 0;
    int32_t status = begin_update(registry, TABLE_CURRENT, &victims);
    if (status == RM_OK) {
        rm_node_entry *e = held_entry(registry, held->generation, held->slot, held->ticket);
        if (e != NULL) {
            holder_remove(registry, e);
            if (e->refs == 0)
                e->last_used_ns = rm_monotonic_ns();
            lru = evict_to_budget(registry, &victims);
        }
        end_update(registry, &victims);
    } else if (status != RM_E_NOT_FOUND) {
        /* (RM_E_NOT_FOUND: the table went, and the reference with it.) */
        rm_host_log(registry->host, RM_LOG_ERROR,
                    "node registry '%s': could not return a reference (table lock "
                    "unusable); it stays counted until this process exits",
                    registry->namespace_name);
    }
    count(registry, &registry->evictions_lru, lru);
    if (held->placement.memory == RM_MEMORY_CUDA) {
        /* The mapping stays while the entry does (REF: gpu-weights); one
         * evicted just now to fit the budget goes at once. */
        rm_weights_unuse(registry->namespace_name, held->weights_id);
        if (lru != 0)
            drop_unlisted_weights(registry);
    } else {
        munmap(base, (size_t)held->bytes);
    }
    free(held);
}

typedef struct acquire_request {
    rm_node_registry *registry;
    rm_model_loader_fn loader;
    void *loader_user;
} acquire_request;

/* The loader the local registry runs on a miss. */
static int32_t acquire_for_local(void *user, const char *key, rm_loaded_model *out)
{
    acquire_request *request = user;
    attachment *held = malloc(sizeof *held);
    if (held == NULL)
        return rm_error_set(request->registry->error_owner, RM_E_NO_MEMORY,
                            "out of memory attaching model key '%s'", key);
    int32_t status =
        node_acquire(request->registry, key, request->loader, request->loader_user, held);
    if (status != RM_OK) {
        free(held);
        return status;
    }
    out->model = held->base;
    out->bytes = held->bytes;
    out->destroy = node_detach;
    out->destroy_user = held;
    /* For rows and model_to_dlpack: the local registry keeps it. */
    if (out->plugin_private != NULL)
        ((rm_loader_buffer *)out->plugin_private)->placement = held->placement;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Sweeper thread                                                           */
/* ------------------------------------------------------------------------ */

static uint64_t sweep_period_ns(const rm_node_registry *registry)
{
    uint64_t period = registry->config.ttl_ns / 4;
    if (period == 0 || period > SWEEP_PERIOD_MAX_NS)
        period = SWEEP_PERIOD_MAX_NS;
    if (period < SWEEP_PERIOD_MIN_NS)
        period = SWEEP_PERIOD_MIN_NS;
    return period;
}

static void *sweeper_main(void *argument)
{
    rm_node_registry *registry = argument;
    uint64_t period = sweep_period_ns(registry);
    pthread_mutex_lock(&registry->sweeper_lock);
    while (!registry->shutting_down) {
        struct timespec until = rm_monotonic_after(period);
        pthread_cond_timedwait(&registry->sweeper_wake, &registry->sweeper_lock, &until);
        if (registry->shutting_down)
            break;
        pthread_mutex_unlock(&registry->sweeper_lock);
        sweep_result result;
        (void)sweep(registry, TABLE_CURRENT, false, &result);
        pthread_mutex_lock(&registry->sweeper_lock);
    }
    pthread_mutex_unlock(&registry->sweeper_lock);
    return NULL;
}

static int start_sweeper(rm_node_registry *registry)
{
    sigset_t all_signals;
    sigset_t previous;
    sigfillset(&all_signals);
    pthread_sigmask(SIG_SETMASK, &all_signals, &previous);
    int failure = pthread_create(&registry->sweeper, NULL, sweeper_main, registry);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (failure == 0)
        pthread_setname_np(registry->sweeper, "rm-node-sweep");
    return failure;
}

/* ------------------------------------------------------------------------ */
/* Creation and destruction                                                 */
/* ------------------------------------------------------------------------ */

int32_t rm_node_registry_create(const rm_node_registry_config *config, const rm_host *host,
                                const void *error_owner, rm_node_registry **out)
{
    *out = NULL;
    rm_node_registry *registry = calloc(1, sizeof *registry);
    if (registry == NULL)
        return rm_error_set(error_owner, RM_E_NO_MEMORY,
                            "out of memory creating the node registry");
    registry->host = host;
    registry->error_owner = error_owner;
    registry->config = *config;
    snprintf(registry->namespace_name, sizeof registry->namespace_name, "%s",
             config->namespace_name);
    registry->config.namespace_name = registry->namespace_name;
    registry->limits = (rm_eviction_limits){
        .ttl_ns = config->ttl_ns,
        .max_bytes = config->max_bytes,
        .max_models = config->max_models,
    };
    registry->pid = getpid();
    registry->start_time = rm_process_self_start_time();
    registry->self = (rm_node_self){.pid = registry->pid, .start_time = registry->start_time};
    pthread_mutex_init(&registry->counters_lock, NULL);
    pthread_mutex_init(&registry->sweeper_lock, NULL);
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&registry->sweeper_wake, &monotonic);
    pthread_condattr_destroy(&monotonic);

    int failure = pthread_rwlock_init(&registry->view_lock, NULL);
    if (failure != 0) {
        rm_node_registry_destroy(registry);
        return rm_error_set(error_owner, RM_E_SYSTEM,
                            "cannot create the node registry's view lock: %s",
                            strerror(failure));
    }
    registry->view_lock_ready = true;
    bool recovered = false;
    int32_t status = rm_node_table_attach(registry->namespace_name, config->table_entries,
                                          !config->existing_table_only, registry->self,
                                          error_owner, &registry->table, &recovered);
    if (recovered) {
        registry->lock_recoveries++;
        log_recovery(registry);
    }
    /* Only `existing_table_only` gets here without a table (attach sets no
     * message then): the caller asked to look, not to create. */
    if (status == RM_E_NOT_FOUND)
        status = rm_error_set(error_owner, RM_E_NOT_FOUND,
                              "node registry '%s' has no node table, and registry.table = "
                              "existing: none was created",
                              registry->namespace_name);
    if (status == RM_OK && !fit_candidates(registry, registry->table.capacity))
        status = out_of_memory_for_table(registry, registry->table.capacity);
    if (status == RM_OK) {
        registry->table_generation = 1;
        rm_registry_config local = {.evict_when_unused = true,
                                    .loader_explains_failures = true};
        status = rm_registry_create(&local, host, error_owner, &registry->local);
    }
    if (status == RM_OK) {
        failure = start_sweeper(registry);
        if (failure != 0)
            status = rm_error_set(error_owner, RM_E_SYSTEM,
                                  "cannot start the node registry sweeper thread: %s",
                                  strerror(failure));
        else
            registry->sweeper_started = true;
    }
    if (status != RM_OK) {
        rm_node_registry_destroy(registry);
        return status;
    }
    *out = registry;
    return RM_OK;
}

/* This context stops using its table: one context fewer in attachers[],
 * and when it was the namespace's last (live processes counted), a sweep
 * (dead references, dead loads, expired models) and the table's removal
 * if nothing is left in it. Destroy only: no other thread uses the
 * registry any more. */
static void leave_table(rm_node_registry *registry)
{
    unlink_list victims;
    int32_t status = begin_update(registry, TABLE_CURRENT, &victims);
    if (status != RM_OK) {
        if (status != RM_E_NOT_FOUND)
            rm_host_log(registry->host, RM_LOG_ERROR,
                        "node registry '%s': could not leave the table (lock unusable); "
                        "this process stays counted in it until it exits",
                        registry->namespace_name);
        rm_node_table_unmap(&registry->table);
        drop_kept_weights(registry);
        return;
    }
    rm_node_detach_context(&registry->table, registry->self);
    /* The namespace's last context of this process: the device weights it
     * kept go (no context of it is left to see them evicted). */
    bool last_here = rm_node_attached_contexts(&registry->table, registry->self) == 0;
    if (last_here)
        forget_kept_weights_locked(registry, &victims);
    bool removed = false;
    uint64_t table_bytes = 0;
    if (rm_node_attached_contexts(&registry->table, registry->self) == 0 &&
        !rm_node_others_attached(&registry->table, registry->self)) {
        sweep_result result = {0};
        sweep_locked(registry, rm_monotonic_ns(), &victims, &result);
        if (rm_node_table_unused(&registry->table))
            removed = rm_node_table_retire(&registry->table, registry->namespace_name,
                                           &table_bytes);
    }
    end_update(registry, &victims);
    if (last_here)
        drop_kept_weights(registry);
    rm_node_table_unmap(&registry->table);
    if (removed)
        rm_host_log(registry->host, RM_LOG_DEBUG,
                    "node registry '%s': its last context is gone and nothing was left "
                    "in it; table removed (%llu bytes)",
                    registry->namespace_name, (unsigned long long)table_bytes);
}

void rm_node_registry_destroy(rm_node_registry *registry)
{
    if (registry == NULL)
        return;
    pthread_mutex_lock(&registry->sweeper_lock);
    registry->shutting_down = true;
    pthread_cond_signal(&registry->sweeper_wake);
    pthread_mutex_unlock(&registry->sweeper_lock);
    if (registry->sweeper_started)
        pthread_join(registry->sweeper, NULL);
    /* Destroys every local model, which detaches its node reference. */
    rm_registry_destroy(registry->local);
    if (registry->table.header != NULL)
        leave_table(registry);
    else
        drop_kept_weights(registry);
    if (registry->view_lock_ready)
        pthread_rwlock_destroy(&registry->view_lock);
    pthread_cond_destroy(&registry->sweeper_wake);
    pthread_mutex_destroy(&registry->sweeper_lock);
    pthread_mutex_destroy(&registry->counters_lock);
    free(registry->candidates);
    free(registry);
}

/* ------------------------------------------------------------------------ */
/* The vtable members                                                       */
/* ------------------------------------------------------------------------ */

int32_t rm_node_registry_get_or_load(rm_node_registry *registry, const char *key,
                                     rm_model_loader_fn loader, void *loader_user,
                                     rm_model_handle **out_handle, void **out_model)
{
    acquire_request request = {
        .registry = registry, .loader = loader, .loader_user = loader_user};
    /* A NULL loader is refused by the local layer before it could run. */
    return rm_registry_get_or_load(registry->local, key, loader != NULL ? acquire_for_local : NULL,
                                   &request, out_handle, out_model);
}

int32_t rm_node_registry_release(rm_node_registry *registry, rm_model_handle *handle)
{
    return rm_registry_release(registry->local, handle);
}

int32_t rm_node_registry_evict(rm_node_registry *registry, const char *key)
{
    char normal[RM_MODEL_KEY_MAX];
    if (key != NULL && rm_device_uuid_key(key)) {
        /* A row's key (REF: gpu-weights): already the table's. */
        snprintf(normal, sizeof normal, "%s", key);
    } else if (key != NULL) {
        char given[RM_MODEL_KEY_MAX];
        int32_t status =
            rm_model_key_normalize(key, given, sizeof given, registry->error_owner);
        if (status != RM_OK)
            return status;
        table_key_of(registry, given, normal);
    }
    unlink_list victims;
    int32_t status = begin_update(registry, TABLE_EXISTING, &victims);
    if (status == RM_E_NOT_FOUND) {
        /* The namespace has no table, so nothing is loaded. */
        if (key == NULL)
            return RM_OK;
        return rm_error_set(registry->error_owner, RM_E_NOT_FOUND,
                            "model key '%s' is not loaded in node registry '%s' (it has no "
                            "table)",
                            normal, registry->namespace_name);
    }
    if (status != RM_OK)
        return status;
    uint64_t now_ns = rm_monotonic_ns();
    uint64_t evicted = 0;
    uint64_t dead = 0;
    if (key == NULL) {
        for (uint32_t slot = 0; slot < registry->table.capacity; slot++) {
            rm_node_entry *e = slot_entry(registry, slot);
            if (e->state != RM_NODE_READY)
                continue;
            dead += drop_dead_holders(registry, e, now_ns);
            if (e->refs == 0) {
                evict_slot(registry, slot, &victims);
                evicted++;
            }
        }
    } else {
        int64_t found = find_slot(registry, normal, rm_node_key_hash(normal));
        rm_node_entry *e = found >= 0 ? slot_entry(registry, (uint32_t)found) : NULL;
        if (e == NULL || e->state == RM_NODE_FAILED) {
            status = rm_error_set(registry->error_owner, RM_E_NOT_FOUND,
                                  "model key '%s' is not loaded in node registry '%s'",
                                  normal, registry->namespace_name);
        } else if (e->state == RM_NODE_LOADING) {
            status = rm_error_set(registry->error_owner, RM_E_BUSY,
                                  "model key '%s' is still loading (pid %d)", normal,
                                  (int)e->loader_pid);
        } else {
            dead += drop_dead_holders(registry, e, now_ns);
            if (e->refs != 0) {
                status = rm_error_set(registry->error_owner, RM_E_BUSY,
                                      "model key '%s' is in use (%llu reference(s) held by "
                                      "%u live process(es))",
                                      normal, (unsigned long long)e->refs, e->holder_count);
            } else {
                evict_slot(registry, (uint32_t)found, &victims);
                evicted++;
            }
        }
    }
    end_update(registry, &victims);
    if (evicted != 0)
        drop_unlisted_weights(registry);
    pthread_mutex_lock(&registry->counters_lock);
    registry->evictions_explicit += evicted;
    registry->dead_references += dead;
    pthread_mutex_unlock(&registry->counters_lock);
    return status;
}

int32_t rm_node_registry_get_metrics(rm_node_registry *registry, rm_registry_metrics *out)
{
    rm_registry_get_metrics(registry->local, out);
    uint64_t models = 0;
    uint64_t bytes = 0;
    int32_t status = table_lock(registry, TABLE_EXISTING);
    if (status == RM_OK) {
        models = registry->table.header->ready_models;
        bytes = registry->table.header->ready_bytes;
        table_unlock(registry);
    } else if (status != RM_E_NOT_FOUND) { /* none: no model */
        return status;
    }
    pthread_mutex_lock(&registry->counters_lock);
    out->loads = registry->loads;
    out->load_failures = registry->load_failures;
    out->evictions_ttl = registry->evictions_ttl;
    out->evictions_lru = registry->evictions_lru;
    out->evictions_explicit = registry->evictions_explicit;
    out->evictions = out->evictions_ttl + out->evictions_lru + out->evictions_explicit;
    out->over_budget = registry->over_budget;
    out->attaches = registry->attaches;
    out->takeovers = registry->takeovers;
    out->dead_references = registry->dead_references;
    out->lock_recoveries = registry->lock_recoveries;
    pthread_mutex_unlock(&registry->counters_lock);
    out->models = models;
    out->bytes = bytes;
    return RM_OK;
}

static int compare_rows_by_last_use(const void *a, const void *b)
{
    const rm_model_info *left = a;
    const rm_model_info *right = b;
    if (left->last_used_ns != right->last_used_ns)
        return left->last_used_ns < right->last_used_ns ? -1 : 1;
    return strcmp(left->key, right->key);
}

int32_t rm_node_registry_list(rm_node_registry *registry, rm_model_info *out,
                              uint32_t info_struct_size, uint32_t capacity,
                              uint32_t *out_count)
{
    /* The context has checked info_struct_size against the 1.0 size. */
    const void *owner = registry->error_owner;
    size_t row_bytes =
        info_struct_size < sizeof(rm_model_info) ? info_struct_size : sizeof(rm_model_info);
    /* The rows are allocated outside the node-wide lock, for the table's
     * capacity; should the context change tables in between, again. */
    rm_model_info *rows = NULL;
    uint32_t table_capacity = 0;
    int32_t status = RM_OK;
    for (;;) {
        status = table_lock(registry, TABLE_EXISTING);
        if (status != RM_OK || (rows != NULL && registry->table.capacity == table_capacity))
            break;
        table_capacity = registry->table.capacity;
        table_unlock(registry);
        free(rows);
        rows = calloc(table_capacity, sizeof *rows);
        if (rows == NULL)
            return rm_error_set(owner, RM_E_NO_MEMORY,
                                "out of memory listing the node registry");
    }
    if (status == RM_E_NOT_FOUND) { /* no table: no model */
        free(rows);
        *out_count = 0;
        return RM_OK;
    }
    if (status != RM_OK) {
        free(rows);
        return status;
    }
    uint64_t now_ns = rm_monotonic_ns();
    uint32_t found = 0;
    for (uint32_t slot = 0; slot < table_capacity; slot++) {
        const rm_node_entry *e = slot_entry(registry, slot);
        if (e->state != RM_NODE_READY && e->state != RM_NODE_LOADING)
            continue;
        rm_model_info *row = &rows[found++];
        row->struct_size = (uint32_t)row_bytes;
        row->abi_version = RM_ABI_VERSION_CURRENT;
        /* Bounded: an entry's key is not trusted to be terminated. */
        snprintf(row->key, sizeof row->key, "%.*s", RM_MODEL_KEY_MAX - 1, e->key);
        const char *at = strchr(row->key, '@');
        snprintf(row->device, sizeof row->device, "%s", at != NULL ? at + 1 : "");
        row->bytes = e->bytes;
        row->refcount = e->refs;
        row->loaded_at_ns = e->loaded_at_ns;
        row->last_used_ns = e->last_used_ns;
        row->scope = RM_REGISTRY_SCOPE_NODE;
        row->state = e->state == RM_NODE_READY ? RM_MODEL_STATE_READY : RM_MODEL_STATE_LOADING;
        row->holders = e->memory == RM_MEMORY_CUDA ? referencing_holders(e) : e->holder_count;
        row->loader_pid = e->state == RM_NODE_LOADING ? e->loader_pid : 0;
        row->device_ordinal = -1;
        /* A load in progress says what its buffer is once it has one. */
        row->memory = e->memory == RM_MEMORY_CUDA ? RM_MEMORY_CUDA
                      : e->memory == RM_MEMORY_SHM || e->state == RM_NODE_READY
                          ? RM_MEMORY_SHM
                          : RM_MODEL_MEMORY_HOST;
        if (e->memory == RM_MEMORY_CUDA) {
            memcpy(row->device_uuid, e->device_uuid, sizeof row->device_uuid);
            row->device_bytes = e->device_bytes;
        }
        row->idle_ns = e->state == RM_NODE_READY && e->refs == 0 && now_ns > e->last_used_ns
                           ? now_ns - e->last_used_ns
                           : 0;
    }
    table_unlock(registry);
    /* After the lock: naming the device may load the driver. The key names
     * the device by UUID, too long for `device`, which says this process's
     * ordinal ("cuda:?" when it does not see the device). */
    for (uint32_t i = 0; i < found; i++) {
        if (rows[i].memory != RM_MEMORY_CUDA)
            continue;
        if (registry->config.device != NULL)
            rows[i].device_ordinal =
                rm_device_access_ordinal_of(registry->config.device, rows[i].device_uuid);
        if (rows[i].device_ordinal >= 0)
            snprintf(rows[i].device, sizeof rows[i].device, "cuda:%d", rows[i].device_ordinal);
        else
            snprintf(rows[i].device, sizeof rows[i].device, "cuda:?");
    }
    qsort(rows, found, sizeof *rows, compare_rows_by_last_use);
    uint32_t written = found < capacity ? found : capacity;
    for (uint32_t i = 0; i < written; i++)
        memcpy((unsigned char *)out + (size_t)i * info_struct_size, &rows[i], row_bytes);
    free(rows);
    *out_count = found;
    if (found > capacity)
        return rm_error_set(owner, RM_E_BUFFER_TOO_SMALL,
                            "registry_list found %u models but the buffer holds %u rows", found,
                            capacity);
    return RM_OK;
}

/* The model segments of the namespace, as rm_segment_list() finds them. */
typedef struct model_segments {
    const rm_node_registry *registry;
    uint64_t *ids;
    uint32_t count;
    uint32_t capacity;
} model_segments;

static int32_t collect_model_segment(const rm_segment_name *segment, const char *name,
                                     void *user)
{
    (void)name;
    model_segments *found = user;
    if (found->count == found->capacity) {
        uint32_t grown = found->capacity == 0 ? 64 : 2 * found->capacity;
        uint64_t *larger = realloc(found->ids, grown * sizeof *larger);
        if (larger == NULL)
            return rm_error_set(found->registry->error_owner, RM_E_NO_MEMORY,
                                "out of memory listing the model segments of '%s'",
                                found->registry->namespace_name);
        found->ids = larger;
        found->capacity = grown;
    }
    found->ids[found->count++] = segment->id;
    return RM_OK;
}

/* Model segments of the namespace that no entry names. Claims record the
 * segment name before it exists, so loaders cannot leave such segments;
 * a process killed between clearing an entry and unlinking its segment
 * (done after the lock is dropped) can, and so can a table removed by
 * hand. And the tables that creators killed while building them left
 * ("new.<pid>.<hex>"). */
static int32_t unlink_orphans(rm_node_registry *registry, uint64_t *segments, uint64_t *bytes)
{
    int32_t status = rm_segment_reap(registry->namespace_name,
                                     RM_SEGMENT_KIND_BIT(RM_SEGMENT_NODE_TABLE_NEW), NULL, NULL,
                                     registry->error_owner, segments, bytes);
    if (status != RM_OK)
        return status;
    model_segments found = {.registry = registry};
    status = rm_segment_list(registry->namespace_name, RM_SEGMENT_KIND_BIT(RM_SEGMENT_NODE_MODEL),
                             collect_model_segment, &found, registry->error_owner);
    uint64_t *candidates = found.ids;
    uint32_t candidate_count = found.count;
    /* Only a table can tell a live loader's segment from an orphan: were
     * there none, one is made for the look (and removed again by the
     * caller when nothing is left). */
    if (status == RM_OK && candidate_count != 0)
        status = table_lock(registry, TABLE_CREATE);
    if (status != RM_OK || candidate_count == 0) {
        free(candidates);
        return status;
    }
    for (uint32_t i = 0; i < candidate_count; i++) {
        bool named = false;
        for (uint32_t slot = 0; slot < registry->table.capacity && !named; slot++) {
            const rm_node_entry *e = slot_entry(registry, slot);
            named = (e->state == RM_NODE_READY || e->state == RM_NODE_LOADING) &&
                    e->segment_id == candidates[i];
        }
        uint64_t freed = 0;
        char name[RM_SEGMENT_NAME_MAX];
        if (named || !model_segment_name(registry, candidates[i], name) ||
            !rm_segment_unlink(name, &freed))
            continue;
        *segments += 1;
        *bytes += freed;
    }
    table_unlock(registry);
    free(candidates);
    return RM_OK;
}

/* registry_reclaim's last step: removes the table when nothing is left in
 * it and no live process uses it but this context (the caller's other
 * contexts would be left with a removed table). This context then has no
 * table until a call needs one. *removed: the table's name was unlinked;
 * *bytes gets what that freed. The view lock is held exclusive, so no
 * thread of this context is inside the table. Returns RM_OK, or
 * RM_E_CORRUPT_STATE (table lock unusable). */
static int32_t remove_unused_table(rm_node_registry *registry, bool *removed, uint64_t *bytes)
{
    *bytes = 0;
    *removed = false;
    bool recovered = false;
    int32_t status = RM_OK;
    pthread_rwlock_wrlock(&registry->view_lock);
    if (registry->table.header != NULL)
        status = lock_view(registry, &recovered);
    if (registry->table.header != NULL && status == RM_OK) {
        rm_node_view *table = &registry->table;
        bool retire = !table->header->retired &&
                      rm_node_attached_contexts(table, registry->self) <= 1 &&
                      !rm_node_others_attached(table, registry->self) &&
                      rm_node_table_unused(table);
        if (retire)
            *removed = rm_node_table_retire(table, registry->namespace_name, bytes);
        rm_node_table_unlock(table);
        if (retire) {
            rm_node_table_unmap(table);
            registry->table_generation++;
        }
    }
    pthread_rwlock_unlock(&registry->view_lock);
    if (recovered)
        log_recovery(registry);
    if (*removed)
        rm_host_log(registry->host, RM_LOG_INFO,
                    "node registry '%s': nothing was left in it (no model, no load, no other "
                    "live process); registry_reclaim removed its table (%llu bytes)",
                    registry->namespace_name, (unsigned long long)*bytes);
    return status;
}

int32_t rm_node_registry_reclaim(rm_node_registry *registry, rm_registry_reclaim_report *out)
{
    sweep_result result;
    int32_t status = sweep(registry, TABLE_EXISTING, true, &result);
    if (status != RM_OK && status != RM_E_NOT_FOUND) /* none: nothing to sweep */
        return status;
    uint64_t segments = 0;
    uint64_t orphan_bytes = 0;
    status = unlink_orphans(registry, &segments, &orphan_bytes);
    uint64_t table_bytes = 0;
    bool removed = false;
    if (status == RM_OK)
        status = remove_unused_table(registry, &removed, &table_bytes);
    segments += removed ? 1 : 0;
    if (out != NULL) {
        out->dead_references = result.dead_references;
        out->loads_abandoned = result.loads_abandoned;
        out->models_evicted = result.evicted_ttl + result.evicted_lru;
        out->segments_unlinked = segments;
        out->bytes_unlinked = orphan_bytes + result.freed_bytes + table_bytes;
    }
    return status;
}

/* ------------------------------------------------------------------------ */
/* The table a context dispatches through (registry_ops.h)                  */
/* ------------------------------------------------------------------------ */

static int32_t node_get_or_load(void *registry, const char *key, rm_model_loader_fn loader,
                                void *loader_user, rm_model_handle **out_handle,
                                void **out_model)
{
    return rm_node_registry_get_or_load(registry, key, loader, loader_user, out_handle,
                                        out_model);
}

static int32_t node_release(void *registry, rm_model_handle *handle)
{
    return rm_node_registry_release(registry, handle);
}

static int32_t node_evict(void *registry, const char *key)
{
    return rm_node_registry_evict(registry, key);
}

static int32_t node_metrics(void *registry, rm_registry_metrics *out)
{
    return rm_node_registry_get_metrics(registry, out);
}

static int32_t node_list(void *registry, rm_model_info *out, uint32_t info_struct_size,
                         uint32_t capacity, uint32_t *out_count)
{
    return rm_node_registry_list(registry, out, info_struct_size, capacity, out_count);
}

static int32_t node_reclaim(void *registry, rm_registry_reclaim_report *out)
{
    return rm_node_registry_reclaim(registry, out);
}

static int32_t node_view(void *registry, rm_model_handle *handle, rm_model_view *out)
{
    return rm_registry_view(((rm_node_registry *)registry)->local, handle, out);
}

static void node_destroy(void *registry)
{
    rm_node_registry_destroy(registry);
}

const rm_registry_ops rm_node_registry_ops = {
    .get_or_load = node_get_or_load,
    .release = node_release,
    .evict = node_evict,
    .metrics = node_metrics,
    .list = node_list,
    .reclaim = node_reclaim,
    .view = node_view,
    .destroy = node_destroy,
};
