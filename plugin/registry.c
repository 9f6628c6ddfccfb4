/* The process-scope model registry: one load per `name@device` key.
 *
 * Design, and the reasons for it:
 *  - One mutex guards the whole table. The hit path is a key normalisation
 *    into a stack buffer, a hash, one lock/unlock and a few pointer moves;
 *    nothing on it allocates. A lock-free table would not help much: every
 *    get and release also moves the entry in the LRU list, which needs the
 *    same exclusion.
 *  - Host code (loaders, destroy callbacks, the log sink and the host
 *    clock) never runs with the mutex held, so loads of different keys run
 *    concurrently and a callback may call back into the registry.
 *  - A miss inserts a LOADING entry and runs the loader on the caller's
 *    thread. Other callers for that key block on the entry's condition
 *    variable; the loader hands each of them a reference when it ends, so
 *    an idle-eviction cannot slip in between the wake-up and the waiter.
 *  - Cycles (A's loader asks for B whose loader asks for A, on any threads)
 *    are found before blocking by walking the wait-for chain under the
 *    mutex: each LOADING entry names the thread running its loader, and
 *    each thread records the entry it is blocked on. The chain is acyclic
 *    by construction (every wait is checked before it starts), so the walk
 *    ends.
 *  - A handle is the entry itself, so taking a reference allocates nothing.
 *  - READY entries sit in one LRU list ordered by last use (get or
 *    release). Only a release (or the end of a load) reads the clock into
 *    last_used_ns: the host clock costs as much as the rest of a hit, and
 *    only idle models' times matter, for TTL. The time is clamped to never
 *    go backwards, so the idle entries of the list are in deadline order
 *    and TTL scanning can stop at the first one that has not expired.
 *  - A background thread sleeps (CLOCK_MONOTONIC timed wait) until the
 *    earliest TTL deadline. Releasers wake it only when they create an
 *    earlier deadline than the one it sleeps for, which in steady state is
 *    never, keeping futex calls off the release path.
 */
#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "loader_buffer.h"
#include "model_key.h"

#define INITIAL_BUCKET_COUNT 16
/* With a host-supplied clock the eviction thread cannot convert a host
 * deadline into CLOCK_MONOTONIC exactly (the host may run time at another
 * rate), so it re-reads the host clock at least this often. */
#define FOREIGN_CLOCK_MAX_SLEEP_NS UINT64_C(1000000000)
#define NS_PER_S UINT64_C(1000000000)

typedef enum entry_state {
    ENTRY_LOADING, /* in the table, loader running, not in the LRU list */
    ENTRY_READY,   /* in the table and the LRU list */
    ENTRY_FAILED,  /* out of the table; kept until its waiters have left */
} entry_state;

/* What each thread publishes so that other threads can follow wait-for
 * chains. A loader may wait on a key of another context (another
 * registry), so the chains cross registries: they are kept under one
 * process-wide lock, wait_graph_lock, which is taken only by misses (to
 * start or end a load, or to wait), always inside a registry mutex and
 * never the other way round. Hits never take it. */
typedef struct load_thread {
    /* The LOADING entry (of any registry) this thread is blocked on, or
     * NULL. Alive while set: the waiter is counted in its `waiters`. */
    struct rm_model_handle *waiting_for;
} load_thread;

static _Thread_local load_thread this_thread;
static pthread_mutex_t wait_graph_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t wait_graph_fork_guard_once = PTHREAD_ONCE_INIT;

/* A fork() while another thread holds wait_graph_lock would hand the child
 * a lock nobody there can release, and a context the child creates would
 * hang on its first miss. The lock is therefore held across fork() and
 * released on both sides. */
static void wait_graph_lock_acquire(void)
{
    pthread_mutex_lock(&wait_graph_lock);
}

static void wait_graph_lock_release(void)
{
    pthread_mutex_unlock(&wait_graph_lock);
}

static void install_wait_graph_fork_guard(void)
{
    /* The plugin is linked -z nodelete, so the handlers outlive no code. */
    (void)pthread_atfork(wait_graph_lock_acquire, wait_graph_lock_release,
                         wait_graph_lock_release);
}

/* One key's entry. A handle given to the host is a pointer to it. */
struct rm_model_handle {
    struct rm_model_handle *bucket_next;
    struct rm_model_handle *lru_prev;
    struct rm_model_handle *lru_next;
    struct rm_model_handle *victim_next; /* while awaiting destruction */
    uint64_t hash;
    uint64_t refcount;
    uint64_t loaded_at_ns;
    uint64_t last_used_ns;
    rm_loaded_model loaded;
    entry_state state;
    int32_t failure;          /* the loader's code, when FAILED */
    uint32_t waiters;         /* threads blocked on load_done */
    load_thread *loader;      /* the thread running the loader, while
                                 LOADING; under wait_graph_lock */
    pthread_cond_t load_done; /* broadcast when LOADING ends */
    size_t key_length;
    size_t name_length; /* the device starts at key + name_length + 1 */
    char key[];         /* normalised, NUL-terminated */
};

typedef struct rm_model_handle entry;

struct rm_registry {
    pthread_mutex_t mutex;
    rm_registry_config config;
    const rm_host *host;
    const void *error_owner;

    entry **buckets;
    size_t bucket_mask;  /* bucket count - 1; the count is a power of 2 */
    size_t entry_count;  /* LOADING and READY entries in the table */
    entry *lru_head;     /* least recently used READY entry */
    entry *lru_tail;     /* most recently used */
    uint64_t latest_use_ns; /* keeps last_used_ns monotonic along the list */

    uint64_t hits;
    uint64_t misses;
    uint64_t loads;
    uint64_t load_failures;
    uint64_t evictions_ttl;
    uint64_t evictions_lru;
    uint64_t evictions_explicit;
    uint64_t models; /* READY entries */
    uint64_t bytes;  /* their sizes added up */
    uint64_t over_budget;

    bool shutting_down;
    bool evictor_started;
    pthread_t evictor;
    pthread_cond_t evictor_wake; /* CLOCK_MONOTONIC */
    /* The host-clock deadline the evictor sleeps until: UINT64_MAX while it
     * sleeps with nothing to expire, 0 while it is awake (it rescans before
     * sleeping again, so nobody needs to wake it). */
    uint64_t evictor_sleeping_until;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* Word-at-a-time multiply-xorshift with the murmur3 finaliser: cheaper than
 * byte-at-a-time FNV-1a on typical 15-40 byte keys, and every input bit
 * reaches the bucket index. */
static uint64_t hash_key(const char *key, size_t length)
{
    const uint64_t multiplier = UINT64_C(0xff51afd7ed558ccd);
    uint64_t hash = UINT64_C(0x9e3779b97f4a7c15) ^ length;
    size_t offset = 0;
    for (; offset + 8 <= length; offset += 8) {
        uint64_t word;
        memcpy(&word, key + offset, sizeof word);
        hash = (hash ^ word) * multiplier;
        hash ^= hash >> 32;
    }
    uint64_t tail = 0;
    memcpy(&tail, key + offset, length - offset);
    hash = (hash ^ tail) * multiplier;
    hash ^= hash >> 33;
    hash *= UINT64_C(0xc4ceb9fe1a85ec53);
    hash ^= hash >> 33;
    return hash;
}

/* The last key this thread resolved, as given and as normalised. Hosts
 * call get_or_load with the same key string on every inference, and
 * comparing the bytes is several times cheaper than validating and hashing
 * them again. The normal form and hash are a pure function of the raw
 * bytes, so a byte-for-byte match makes them reusable. */
typedef struct resolved_key_cache {
    size_t raw_length; /* 0: empty (a valid key is never empty) */
    size_t normal_length;
    uint64_t hash;
    char raw[RM_MODEL_KEY_MAX];
    char normal[RM_MODEL_KEY_MAX];
} resolved_key_cache;

static _Thread_local resolved_key_cache last_resolved_key;

/* Checks and normalises `key` into `normal` (RM_MODEL_KEY_MAX bytes, on the
 * caller's stack: a loader running inside this call may resolve other keys
 * on the same thread and overwrite the cache) and sets its length and
 * hash. Returns RM_OK or the normalisation error. */
static int32_t resolve_key(const void *error_owner, const char *key,
                           char *normal, size_t *normal_length, uint64_t *hash)
{
    resolved_key_cache *cache = &last_resolved_key;
    size_t raw_length = strnlen(key, RM_MODEL_KEY_MAX);
    /* An empty cache has raw_length 0; the empty key must not match it. */
    if (raw_length != 0 && raw_length == cache->raw_length &&
        memcmp(key, cache->raw, raw_length) == 0) {
        memcpy(normal, cache->normal, cache->normal_length + 1);
        *normal_length = cache->normal_length;
        *hash = cache->hash;
        return RM_OK;
    }
    int32_t status =
        rm_model_key_normalize(key, normal, RM_MODEL_KEY_MAX, error_owner);
    if (status != RM_OK)
        return status;
    *normal_length = strlen(normal);
    *hash = hash_key(normal, *normal_length);
    /* raw_length < RM_MODEL_KEY_MAX: normalisation rejects longer keys. */
    cache->raw_length = raw_length;
    memcpy(cache->raw, key, raw_length);
    cache->normal_length = *normal_length;
    memcpy(cache->normal, normal, *normal_length + 1);
    cache->hash = *hash;
    return RM_OK;
}

static uint64_t saturating_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void lock(rm_registry *registry)
{
    pthread_mutex_lock(&registry->mutex);
}

static void unlock(rm_registry *registry)
{
    pthread_mutex_unlock(&registry->mutex);
}

static void free_entry(entry *e)
{
    pthread_cond_destroy(&e->load_done);
    free(e);
}

/* Models taken out of the registry under the mutex, destroyed after it is
 * dropped, in the order they were evicted (least recently used first). */
typedef struct victim_list {
    entry *head;
    entry **tail_link;
} victim_list;

static void victims_init(victim_list *victims)
{
    victims->head = NULL;
    victims->tail_link = &victims->head;
}

static void victims_push(victim_list *victims, entry *e)
{
    e->victim_next = NULL;
    *victims->tail_link = e;
    victims->tail_link = &e->victim_next;
}

/* Runs the destroy callbacks (mutex not held) and frees the entries. */
static void destroy_victims(victim_list *victims)
{
    entry *e = victims->head;
    while (e != NULL) {
        entry *next = e->victim_next;
        if (e->loaded.destroy != NULL)
            e->loaded.destroy(e->loaded.model, e->loaded.destroy_user);
        free_entry(e);
        e = next;
    }
    victims_init(victims);
}

/* ------------------------------------------------------------------------ */
/* Hash table (mutex held)                                                  */
/* ------------------------------------------------------------------------ */

static entry *table_find(const rm_registry *registry, const char *key,
                         size_t key_length, uint64_t hash)
{
    for (entry *e = registry->buckets[hash & registry->bucket_mask]; e != NULL;
         e = e->bucket_next) {
        if (e->hash == hash && e->key_length == key_length &&
            memcmp(e->key, key, key_length) == 0)
            return e;
    }
    return NULL;
}

/* Doubles the bucket array once the load factor passes 1. Failing to grow
 * is harmless (chains get longer), so it is not reported. */
static void table_maybe_grow(rm_registry *registry)
{
    size_t bucket_count = registry->bucket_mask + 1;
    if (registry->entry_count <= bucket_count ||
        bucket_count > SIZE_MAX / 2 / sizeof(entry *))
        return;
    size_t new_count = bucket_count * 2;
    entry **buckets = calloc(new_count, sizeof *buckets);
    if (buckets == NULL)
        return;
    for (size_t i = 0; i < bucket_count; i++) {
        entry *e = registry->buckets[i];
        while (e != NULL) {
            entry *next = e->bucket_next;
            size_t index = e->hash & (new_count - 1);
            e->bucket_next = buckets[index];
            buckets[index] = e;
            e = next;
        }
    }
    free(registry->buckets);
    registry->buckets = buckets;
    registry->bucket_mask = new_count - 1;
}

static void table_insert(rm_registry *registry, entry *e)
{
    size_t index = e->hash & registry->bucket_mask;
    e->bucket_next = registry->buckets[index];
    registry->buckets[index] = e;
    registry->entry_count++;
    table_maybe_grow(registry);
}

static void table_remove(rm_registry *registry, entry *e)
{
    entry **link = &registry->buckets[e->hash & registry->bucket_mask];
    while (*link != e)
        link = &(*link)->bucket_next;
    *link = e->bucket_next;
    e->bucket_next = NULL;
    registry->entry_count--;
}

/* ------------------------------------------------------------------------ */
/* LRU list and eviction (mutex held)                                       */
/* ------------------------------------------------------------------------ */

static void lru_unlink(rm_registry *registry, entry *e)
{
    if (e->lru_prev != NULL)
        e->lru_prev->lru_next = e->lru_next;
    else
        registry->lru_head = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->lru_prev = e->lru_prev;
    else
        registry->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_append(rm_registry *registry, entry *e)
{
    e->lru_prev = registry->lru_tail;
    e->lru_next = NULL;
    if (registry->lru_tail != NULL)
        registry->lru_tail->lru_next = e;
    else
        registry->lru_head = e;
    registry->lru_tail = e;
}

/* Moves `e` to the most-recently-used end of the list. */
static void move_to_lru_tail(rm_registry *registry, entry *e)
{
    if (registry->lru_tail != e) {
        lru_unlink(registry, e);
        lru_append(registry, e);
    }
}

/* Records that `e` stopped being used (released, or admitted after its
 * load) at `now_ns`, read before the mutex was taken, and makes it the most
 * recently used. */
static void mark_released(rm_registry *registry, entry *e, uint64_t now_ns)
{
    /* Two threads may read the clock in one order and take the mutex in
     * the other; clamping keeps the idle entries of the list sorted by
     * last_used_ns, which TTL scanning relies on. */
    if (now_ns < registry->latest_use_ns)
        now_ns = registry->latest_use_ns;
    registry->latest_use_ns = now_ns;
    e->last_used_ns = now_ns;
    move_to_lru_tail(registry, e);
}

/* Takes a READY entry out of the table and the list and queues it for
 * destruction after the mutex is dropped. */
static void detach_to_victims(rm_registry *registry, entry *e,
                              victim_list *victims)
{
    table_remove(registry, e);
    lru_unlink(registry, e);
    registry->models--;
    registry->bytes -= e->loaded.bytes;
    victims_push(victims, e);
}

static bool over_bytes(const rm_registry *registry)
{
    return registry->config.max_bytes != 0 &&
           registry->bytes > registry->config.max_bytes;
}

static bool over_models(const rm_registry *registry)
{
    return registry->config.max_models != 0 &&
           registry->models > registry->config.max_models;
}

static bool over_budget(const rm_registry *registry)
{
    return over_bytes(registry) || over_models(registry);
}

/* Evicts idle models, least recently used first, until the budget holds
 * or no idle model is left. */
static void evict_lru_to_budget(rm_registry *registry, victim_list *victims)
{
    entry *e = registry->lru_head;
    while (e != NULL && over_budget(registry)) {
        entry *next = e->lru_next;
        if (e->refcount == 0) {
            detach_to_victims(registry, e, victims);
            registry->evictions_lru++;
        }
        e = next;
    }
}

/* ------------------------------------------------------------------------ */
/* Eviction thread                                                          */
/* ------------------------------------------------------------------------ */

/* Detaches every idle model whose TTL has run out at `now_ns` and returns
 * the earliest deadline among the idle models left (UINT64_MAX if none). */
static uint64_t collect_expired(rm_registry *registry, uint64_t now_ns,
                                victim_list *victims)
{
    entry *e = registry->lru_head;
    while (e != NULL) {
        entry *next = e->lru_next;
        if (e->refcount == 0) {
            uint64_t deadline =
                saturating_add(e->last_used_ns, registry->config.ttl_ns);
            if (deadline > now_ns)
                return deadline; /* later idle entries expire later */
            detach_to_victims(registry, e, victims);
            registry->evictions_ttl++;
        }
        e = next;
    }
    return UINT64_MAX;
}

static void *evictor_main(void *argument)
{
    rm_registry *registry = argument;
    bool foreign_clock = registry->host != NULL &&
                         registry->host->services.monotonic_ns != NULL;
    for (;;) {
        /* The host clock is host code: read it without the mutex. */
        uint64_t now_ns = rm_host_now_ns(registry->host);
        lock(registry);
        if (registry->shutting_down) {
            unlock(registry);
            return NULL;
        }
        victim_list victims;
        victims_init(&victims);
        uint64_t next_deadline = collect_expired(registry, now_ns, &victims);
        if (victims.head != NULL) {
            unlock(registry);
            destroy_victims(&victims);
            continue; /* time passed while destroying: rescan */
        }
        registry->evictor_sleeping_until = next_deadline;
        if (next_deadline == UINT64_MAX && !foreign_clock) {
            pthread_cond_wait(&registry->evictor_wake, &registry->mutex);
        } else {
            uint64_t delay_ns = next_deadline - now_ns;
            if (foreign_clock && delay_ns > FOREIGN_CLOCK_MAX_SLEEP_NS)
                delay_ns = FOREIGN_CLOCK_MAX_SLEEP_NS;
            struct timespec until = rm_monotonic_after(delay_ns);
            pthread_cond_timedwait(&registry->evictor_wake, &registry->mutex,
                                   &until);
        }
        registry->evictor_sleeping_until = 0;
        unlock(registry);
    }
}

/* Starts the evictor with every signal blocked, so that the host's signal
 * handlers never run on a thread it does not know about. */
static int start_evictor(rm_registry *registry)
{
    sigset_t all_signals;
    sigset_t previous;
    sigfillset(&all_signals);
    pthread_sigmask(SIG_SETMASK, &all_signals, &previous);
    int failure =
        pthread_create(&registry->evictor, NULL, evictor_main, registry);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (failure == 0)
        pthread_setname_np(registry->evictor, "rm-evictor");
    return failure;
}

/* ------------------------------------------------------------------------ */
/* Creation and destruction                                                 */
/* ------------------------------------------------------------------------ */

int32_t rm_registry_create(const rm_registry_config *config,
                           const rm_host *host, const void *error_owner,
                           rm_registry **out)
{
    if (out == NULL)
        return rm_error_set(error_owner, RM_E_INVALID_ARGUMENT,
                            "rm_registry_create needs an output pointer");
    *out = NULL;
    pthread_once(&wait_graph_fork_guard_once, install_wait_graph_fork_guard);
    rm_registry *registry = calloc(1, sizeof *registry);
    entry **buckets = calloc(INITIAL_BUCKET_COUNT, sizeof *buckets);
    if (registry == NULL || buckets == NULL) {
        free(registry);
        free(buckets);
        return rm_error_set(error_owner, RM_E_NO_MEMORY,
                            "out of memory creating the model registry");
    }
    if (config != NULL)
        registry->config = *config;
    registry->host = host;
    registry->error_owner = error_owner;
    registry->buckets = buckets;
    registry->bucket_mask = INITIAL_BUCKET_COUNT - 1;
    registry->evictor_sleeping_until = 0;

    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_mutex_init(&registry->mutex, NULL);
    pthread_cond_init(&registry->evictor_wake, &monotonic);
    pthread_condattr_destroy(&monotonic);

    /* Without a TTL the evictor would never have anything to do: budget
     * evictions happen synchronously on admission and release. */
    if (registry->config.ttl_ns != 0) {
        int failure = start_evictor(registry);
        if (failure != 0) {
            pthread_cond_destroy(&registry->evictor_wake);
            pthread_mutex_destroy(&registry->mutex);
            free(buckets);
            free(registry);
            return rm_error_set(error_owner, RM_E_SYSTEM,
                                "cannot start the model eviction thread: %s",
                                strerror(failure));
        }
        registry->evictor_started = true;
    }
    *out = registry;
    return RM_OK;
}

void rm_registry_destroy(rm_registry *registry)
{
    if (registry == NULL)
        return;
    lock(registry);
    registry->shutting_down = true;
    pthread_cond_signal(&registry->evictor_wake);
    unlock(registry);
    if (registry->evictor_started)
        pthread_join(registry->evictor, NULL);

    /* The contract forbids racing calls, so from here on this thread is
     * alone and the mutex is not needed. */
    uint64_t handles_held = 0;
    uint64_t models_held = 0;
    victim_list victims;
    victims_init(&victims);
    for (entry *e = registry->lru_head; e != NULL; e = e->lru_next) {
        if (e->refcount != 0) {
            handles_held += e->refcount;
            models_held++;
        }
    }
    while (registry->lru_head != NULL)
        detach_to_victims(registry, registry->lru_head, &victims);
    /* A LOADING entry here means a loader is still running on another
     * thread: destroy raced with a call, which the contract forbids. The
     * entry itself is not freed, but the registry is, so that thread's
     * return is undefined behaviour; the error below names it. */
    size_t still_loading = registry->entry_count;
    if (handles_held != 0)
        rm_host_log(registry->host, RM_LOG_WARN,
                    "model registry destroyed with %llu handle(s) still held "
                    "on %llu model(s); those handles are now invalid",
                    (unsigned long long)handles_held,
                    (unsigned long long)models_held);
    if (still_loading != 0)
        rm_host_log(registry->host, RM_LOG_ERROR,
                    "model registry destroyed while %zu model(s) were still "
                    "loading (context_destroy raced with model_get_or_load, "
                    "which is not allowed); their entries are leaked",
                    still_loading);
    destroy_victims(&victims);

    pthread_cond_destroy(&registry->evictor_wake);
    pthread_mutex_destroy(&registry->mutex);
    free(registry->buckets);
    free(registry);
}

/* ------------------------------------------------------------------------ */
/* get_or_load                                                              */
/* ------------------------------------------------------------------------ */

/* True when blocking on `target` would close a wait-for cycle through the
 * calling thread: its loader is this thread, or is blocked on an entry
 * (in any registry) whose loader is, and so on. wait_graph_lock held. */
static bool wait_would_cycle(const entry *target)
{
    const load_thread *self = &this_thread;
    for (const entry *e = target; e != NULL;) {
        const load_thread *loader = e->loader;
        if (loader == NULL)
            return false; /* that load has ended: not blocked */
        if (loader == self)
            return true;
        e = loader->waiting_for; /* NULL: that loader is running */
    }
    return false;
}

static void hand_out(entry *e, rm_model_handle **out_handle, void **out_model)
{
    *out_handle = e;
    *out_model = e->loaded.model;
}

/* Blocks until `e` (LOADING, mutex held) finishes; releases the mutex. */
static int32_t wait_for_load(rm_registry *registry, entry *e,
                             rm_model_handle **out_handle, void **out_model)
{
    load_thread *self = &this_thread;
    pthread_mutex_lock(&wait_graph_lock);
    bool cycle = wait_would_cycle(e);
    if (!cycle)
        self->waiting_for = e;
    pthread_mutex_unlock(&wait_graph_lock);
    if (cycle) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_LOAD_CYCLE,
                            "model key '%s' is being loaded by a loader that "
                            "waits (directly or through other loads) for "
                            "this caller: the loaders form a cycle",
                            e->key);
    }
    e->waiters++;
    while (e->state == ENTRY_LOADING)
        pthread_cond_wait(&e->load_done, &registry->mutex);
    pthread_mutex_lock(&wait_graph_lock);
    self->waiting_for = NULL;
    pthread_mutex_unlock(&wait_graph_lock);
    e->waiters--;

    if (e->state == ENTRY_READY) {
        /* The loader already counted our reference. */
        hand_out(e, out_handle, out_model);
        unlock(registry);
        return RM_OK;
    }
    int32_t failure = e->failure;
    bool last_to_leave = e->waiters == 0;
    char key[RM_MODEL_KEY_MAX];
    memcpy(key, e->key, e->key_length + 1);
    unlock(registry);
    if (last_to_leave)
        free_entry(e);
    return rm_error_set(registry->error_owner, failure,
                        "loading model key '%s' failed on the thread that "
                        "ran its loader: %s (%s)",
                        key, rm_error_name(failure), rm_error_string(failure));
}

/* Why an admission is over budget, for the warning logged after unlock. */
typedef struct budget_report {
    bool bytes_exceeded;
    bool models_exceeded;
    uint64_t bytes;
    uint64_t models;
} budget_report;

static void log_over_budget(const rm_registry *registry, const char *key,
                            const budget_report *report)
{
    if (report->bytes_exceeded)
        rm_host_log(registry->host, RM_LOG_WARN,
                    "model '%s' admitted over budget: %llu bytes loaded "
                    "exceed registry.max_bytes = %llu, and the models in use "
                    "cannot be evicted",
                    key, (unsigned long long)report->bytes,
                    (unsigned long long)registry->config.max_bytes);
    if (report->models_exceeded)
        rm_host_log(registry->host, RM_LOG_WARN,
                    "model '%s' admitted over budget: %llu models loaded "
                    "exceed registry.max_models = %llu, and the models in use "
                    "cannot be evicted",
                    key, (unsigned long long)report->models,
                    (unsigned long long)registry->config.max_models);
}

/* Runs the loader for a key that is not in the table (mutex held on entry,
 * released on return). */
static int32_t load(rm_registry *registry, const char *key, size_t key_length,
                    uint64_t hash, rm_model_loader_fn loader,
                    void *loader_user, rm_model_handle **out_handle,
                    void **out_model)
{
    entry *e = malloc(sizeof *e + key_length + 1);
    if (e == NULL) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_NO_MEMORY,
                            "out of memory adding model key '%s'", key);
    }
    *e = (entry){
        .hash = hash,
        .state = ENTRY_LOADING,
        .loader = &this_thread,
        .key_length = key_length,
        .name_length = (size_t)(strchr(key, '@') - key),
    };
    memcpy(e->key, key, key_length + 1);
    pthread_cond_init(&e->load_done, NULL);
    table_insert(registry, e);
    unlock(registry);

    rm_loaded_model loaded = {
        .struct_size = (uint32_t)sizeof loaded,
        .abi_version = RM_ABI_VERSION_CURRENT,
    };
    rm_loader_buffer buffer = {
        .create = rm_loader_buffer_create_private,
        .error_owner = registry->error_owner,
        .key = e->key,
    };
    rm_loader_buffer_offer(&loaded, &buffer);
    int32_t status = loader(loader_user, e->key, &loaded);
    loaded.plugin_private = NULL;
    /* A buffer misuse has its own message, which the generic failure
     * message below must not replace. */
    bool explained = false;
    bool used_buffer = false;
    if (status == RM_OK) {
        status = rm_loader_buffer_check(&loaded, &buffer, &used_buffer);
        if (status == RM_OK && used_buffer)
            status = rm_loader_buffer_seal_private(&buffer);
        if (status == RM_OK && used_buffer) {
            loaded.destroy = rm_loader_buffer_destroy_private;
            loaded.destroy_user = (void *)(uintptr_t)buffer.bytes;
        }
        explained = status != RM_OK;
    }
    if (registry->config.loader_explains_failures)
        explained = true;
    if (status != RM_OK && buffer.base != NULL)
        rm_loader_buffer_destroy_private(buffer.base, (void *)(uintptr_t)buffer.bytes);
    bool null_model = status == RM_OK && loaded.model == NULL;
    if (status > 0)
        status = RM_E_LOADER_FAILED;
    else if (null_model)
        status = RM_E_INVALID_ARGUMENT;
    uint64_t now_ns = rm_host_now_ns(registry->host);

    lock(registry);
    pthread_mutex_lock(&wait_graph_lock);
    e->loader = NULL;
    pthread_mutex_unlock(&wait_graph_lock);
    if (status != RM_OK) {
        registry->load_failures++;
        table_remove(registry, e);
        e->state = ENTRY_FAILED;
        e->failure = status;
        pthread_cond_broadcast(&e->load_done);
        bool nobody_waiting = e->waiters == 0;
        unlock(registry);
        if (nobody_waiting)
            free_entry(e);
        /* `key` is the caller's copy, still valid after the free. */
        if (null_model)
            return rm_error_set(registry->error_owner, status,
                                "loader for model key '%s' returned success "
                                "but no model",
                                key);
        if (explained)
            return status;
        return rm_error_set(registry->error_owner, status,
                            "loader for model key '%s' failed: %s (%s)", key,
                            rm_error_name(status), rm_error_string(status));
    }

    e->loaded = (rm_loaded_model){
        .struct_size = (uint32_t)sizeof loaded,
        .abi_version = RM_ABI_VERSION_CURRENT,
        .model = loaded.model,
        .bytes = loaded.bytes,
        .destroy = loaded.destroy,
        .destroy_user = loaded.destroy_user,
    };
    e->state = ENTRY_READY;
    /* One reference for this caller and one for each waiter, taken now so
     * that nothing can evict the model before the waiters wake up. */
    e->refcount = 1 + (uint64_t)e->waiters;
    registry->loads++;
    registry->models++;
    registry->bytes += loaded.bytes;
    lru_append(registry, e);
    mark_released(registry, e, now_ns);
    e->loaded_at_ns = e->last_used_ns;

    victim_list victims;
    victims_init(&victims);
    budget_report report = {0};
    evict_lru_to_budget(registry, &victims);
    if (over_budget(registry)) {
        registry->over_budget++;
        report = (budget_report){
            .bytes_exceeded = over_bytes(registry),
            .models_exceeded = over_models(registry),
            .bytes = registry->bytes,
            .models = registry->models,
        };
    }
    pthread_cond_broadcast(&e->load_done);
    hand_out(e, out_handle, out_model);
    unlock(registry);

    destroy_victims(&victims);
    log_over_budget(registry, key, &report);
    return RM_OK;
}

int32_t rm_registry_get_or_load(rm_registry *registry, const char *key,
                                rm_model_loader_fn loader, void *loader_user,
                                rm_model_handle **out_handle, void **out_model)
{
    if (out_handle != NULL)
        *out_handle = NULL;
    if (out_model != NULL)
        *out_model = NULL;
    const void *owner = registry != NULL ? registry->error_owner : NULL;
    if (registry == NULL || key == NULL || loader == NULL ||
        out_handle == NULL || out_model == NULL)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "model_get_or_load needs a key, a loader and both "
                            "output pointers (got a NULL %s)",
                            registry == NULL  ? "registry"
                            : key == NULL     ? "key"
                            : loader == NULL  ? "loader"
                            : out_handle == NULL ? "out_handle"
                                                 : "out_model");

    char normal[RM_MODEL_KEY_MAX];
    size_t key_length;
    uint64_t hash;
    int32_t status = resolve_key(owner, key, normal, &key_length, &hash);
    if (status != RM_OK)
        return status;

    lock(registry);
    if (registry->shutting_down) {
        unlock(registry);
        return rm_error_set(owner, RM_E_SHUTTING_DOWN,
                            "model key '%s' requested while the registry is "
                            "being destroyed",
                            normal);
    }
    entry *e = table_find(registry, normal, key_length, hash);
    if (e != NULL && e->state == ENTRY_READY) {
        /* A hit moves the model in the LRU order but reads no clock: the
         * clock costs as much as the rest of a hit, and only idle models'
         * times matter (TTL), which their release records. */
        e->refcount++;
        registry->hits++;
        move_to_lru_tail(registry, e);
        hand_out(e, out_handle, out_model);
        unlock(registry);
        return RM_OK;
    }
    registry->misses++;
    if (e != NULL)
        return wait_for_load(registry, e, out_handle, out_model);
    return load(registry, normal, key_length, hash, loader, loader_user,
                out_handle, out_model);
}

/* ------------------------------------------------------------------------ */
/* release, evict, metrics, list                                            */
/* ------------------------------------------------------------------------ */

int32_t rm_registry_release(rm_registry *registry, rm_model_handle *handle)
{
    if (registry == NULL || handle == NULL)
        return rm_error_set(registry != NULL ? registry->error_owner : NULL,
                            RM_E_INVALID_ARGUMENT,
                            "model_release needs a registry and a handle");
    uint64_t now_ns = rm_host_now_ns(registry->host);
    victim_list victims;
    victims_init(&victims);

    lock(registry);
    if (handle->state != ENTRY_READY || handle->refcount == 0) {
        /* Undefined by contract; caught when cheap to do so. */
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_INVALID_ARGUMENT,
                            "model handle released more often than it was "
                            "acquired");
    }
    handle->refcount--;
    mark_released(registry, handle, now_ns);
    if (handle->refcount == 0 && registry->config.evict_when_unused) {
        detach_to_victims(registry, handle, &victims);
    } else if (handle->refcount == 0) {
        if (registry->evictor_started) {
            uint64_t deadline =
                saturating_add(handle->last_used_ns, registry->config.ttl_ns);
            if (deadline < registry->evictor_sleeping_until)
                pthread_cond_signal(&registry->evictor_wake);
        }
        if (over_budget(registry))
            evict_lru_to_budget(registry, &victims);
    }
    unlock(registry);

    destroy_victims(&victims);
    return RM_OK;
}

int32_t rm_registry_evict(rm_registry *registry, const char *key)
{
    if (registry == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                            "model_evict needs a registry");
    victim_list victims;
    victims_init(&victims);
    if (key == NULL) {
        lock(registry);
        entry *e = registry->lru_head;
        while (e != NULL) {
            entry *next = e->lru_next;
            if (e->refcount == 0) {
                detach_to_victims(registry, e, &victims);
                registry->evictions_explicit++;
            }
            e = next;
        }
        unlock(registry);
        destroy_victims(&victims);
        return RM_OK;
    }

    char normal[RM_MODEL_KEY_MAX];
    size_t key_length;
    uint64_t hash;
    int32_t status = resolve_key(registry->error_owner, key, normal,
                                 &key_length, &hash);
    if (status != RM_OK)
        return status;

    lock(registry);
    entry *e = table_find(registry, normal, key_length, hash);
    if (e == NULL) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_NOT_FOUND,
                            "model key '%s' is not loaded", normal);
    }
    if (e->state == ENTRY_LOADING) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_BUSY,
                            "model key '%s' is still loading", normal);
    }
    if (e->refcount != 0) {
        unsigned long long held = e->refcount;
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_BUSY,
                            "model key '%s' is in use (%llu handle(s) held)",
                            normal, held);
    }
    detach_to_victims(registry, e, &victims);
    registry->evictions_explicit++;
    unlock(registry);
    destroy_victims(&victims);
    return RM_OK;
}

void rm_registry_get_metrics(rm_registry *registry, rm_registry_metrics *out)
{
    if (registry == NULL || out == NULL)
        return;
    lock(registry);
    /* The caller owns the leading struct_size/abi_version pair. */
    out->hits = registry->hits;
    out->misses = registry->misses;
    out->loads = registry->loads;
    out->load_failures = registry->load_failures;
    out->evictions_ttl = registry->evictions_ttl;
    out->evictions_lru = registry->evictions_lru;
    out->evictions_explicit = registry->evictions_explicit;
    out->models = registry->models;
    out->bytes = registry->bytes;
    out->over_budget = registry->over_budget;
    unlock(registry);
    out->evictions =
        out->evictions_ttl + out->evictions_lru + out->evictions_explicit;
    uint64_t lookups = out->hits + out->misses;
    out->hit_rate = lookups == 0 ? 0.0 : (double)out->hits / (double)lookups;
}

int32_t rm_registry_list(rm_registry *registry, rm_model_info *out,
                         uint32_t info_struct_size, uint32_t capacity,
                         uint32_t *out_count)
{
    const void *owner = registry != NULL ? registry->error_owner : NULL;
    if (registry == NULL || out_count == NULL || (out == NULL && capacity != 0))
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "registry_list needs a registry, a count pointer "
                            "and rows for a non-zero capacity");
    /* Every row starts with struct_size and abi_version. */
    if (info_struct_size < 2 * sizeof(uint32_t))
        return rm_error_set(owner, RM_E_STRUCT_SIZE,
                            "registry_list row size %u is smaller than the "
                            "struct_size/abi_version header",
                            info_struct_size);
    /* A host built against an older, shorter rm_model_info gets the prefix
     * it knows; a newer, longer one gets ours and keeps the rest. */
    size_t row_bytes = info_struct_size < sizeof(rm_model_info)
                           ? info_struct_size
                           : sizeof(rm_model_info);
    unsigned char *rows = (unsigned char *)out;
    uint64_t now_ns = rm_host_now_ns(registry->host);

    lock(registry);
    uint64_t count = registry->models;
    uint32_t written = 0;
    for (entry *e = registry->lru_head; e != NULL && written < capacity;
         e = e->lru_next) {
        rm_model_info row = {
            .struct_size = (uint32_t)row_bytes,
            .abi_version = RM_ABI_VERSION_CURRENT,
            .bytes = e->loaded.bytes,
            .refcount = e->refcount,
            .loaded_at_ns = e->loaded_at_ns,
            .last_used_ns = e->last_used_ns,
            .scope = RM_REGISTRY_SCOPE_PROCESS,
            .state = RM_MODEL_STATE_READY,
            .holders = e->refcount != 0 ? 1 : 0,
            .idle_ns = e->refcount == 0 && now_ns > e->last_used_ns
                           ? now_ns - e->last_used_ns
                           : 0,
        };
        memcpy(row.key, e->key, e->key_length + 1);
        const char *device = e->key + e->name_length + 1;
        memcpy(row.device, device, e->key_length - e->name_length);
        memcpy(rows + (size_t)written * info_struct_size, &row, row_bytes);
        written++;
    }
    unlock(registry);

    *out_count = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
    if (count > capacity)
        return rm_error_set(owner, RM_E_BUFFER_TOO_SMALL,
                            "registry_list found %llu models but the buffer "
                            "holds %u rows",
                            (unsigned long long)count, capacity);
    return RM_OK;
}

int32_t rm_registry_reclaim(rm_registry *registry, rm_registry_reclaim_report *out)
{
    uint64_t now_ns = rm_host_now_ns(registry->host);
    victim_list victims;
    victims_init(&victims);
    lock(registry);
    if (registry->config.ttl_ns != 0)
        (void)collect_expired(registry, now_ns, &victims);
    evict_lru_to_budget(registry, &victims);
    unlock(registry);
    uint64_t evicted = 0;
    for (entry *e = victims.head; e != NULL; e = e->victim_next)
        evicted++;
    destroy_victims(&victims);
    /* Process scope has no dead processes or segments to reclaim. */
    if (out != NULL)
        out->models_evicted = evicted;
    return RM_OK;
}
