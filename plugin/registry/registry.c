/* The process-scope model registry: one load per `name@device` key.
 *
 * Design, and the reasons for it. Figures are from the development VM
 * (2 cores, AMD EPYC, glibc in multi-threaded mode): CLOCK_MONOTONIC costs
 * 23.5 ns, an uncontended `lock xadd` 2 ns, and with the earlier design
 * (one table mutex, one LRU list moved on every hit and release) a hit +
 * release took 50 ns and two threads did 0.2-0.8 times the work of one,
 * on one key or two. This design: 36 ns, of which the release's clock
 * reading is 23.5, and 1.99 times with two threads, one key or two (README,
 * "Benchmarks").
 *
 *  - A hit takes no lock and a release takes none either, unless a budget
 *    is exceeded (see below). What still needs one mutex are the rare
 *    things: misses (single-flight loads, waits, cycle detection), every
 *    eviction, metrics, listing, destroy.
 *  - The reference count of an entry is split into THREAD_SLOTS counters,
 *    each on its own cache line (a "slot"). A thread picks its slot once
 *    (a thread-local index from a process-wide counter) and only touches
 *    that line on a hit, so threads on one key do not bounce a shared
 *    count between cores. A handle is a pointer to the slot it was counted
 *    in (the slot points back at its entry): a release on any thread
 *    decrements the same counter. Beyond THREAD_SLOTS threads, slots are
 *    shared: still correct, only contended.
 *  - The hit, lock-free: find the entry (first in the thread's cache of
 *    the last key it resolved, then in the hash table), add 1 to this
 *    thread's slot (seq_cst), then re-read the entry's state word (seq_cst):
 *    it must still say READY with the incarnation seen before, otherwise
 *    undo and take the locked path. Eviction, under the mutex, stores
 *    EVICTING (seq_cst), then reads every slot (seq_cst) and puts READY
 *    back if any is non-zero. Sequential consistency makes it Dekker's
 *    handshake: either the hit sees EVICTING, or the evictor sees the hit's
 *    count, so an evicted model is never handed out.
 *  - Entries are type-stable: never freed while the registry lives. An
 *    evicted or failed entry goes to a free list and is reused for a later
 *    load with its incarnation number increased, so a lock-free reader
 *    holding a stale pointer reads an entry's words, never freed memory,
 *    and its final state check fails. The key is kept as atomic words in
 *    a fixed RM_MODEL_KEY_MAX array for the same reason (a reader may
 *    compare it while a reuse rewrites it; the new key is stored with
 *    release after the new state, so a reader that read any of it sees
 *    the new state when it re-checks).
 *    Bucket arrays replaced by growth are kept until destroy (they add up
 *    to less than the live one), and a lock-free walk gives up after
 *    LOOKUP_MAX_STEPS links, which a walk diverted by a concurrent unlink,
 *    reuse or rehash could otherwise exceed; giving up only means the
 *    locked path, which is exact.
 *  - No LRU list: each slot records the time of its last release, and an
 *    idle entry's last use is the latest of those and its load. Eviction
 *    and TTL scans, which hold the mutex, gather the idle entries into an
 *    array that grows with the entries (so a scan never allocates and
 *    eviction cannot fail) and leave the choice to the eviction policy
 *    that node scope uses too (eviction_policy.h). The order is that
 *    of the last release, exactly, across threads; only two releases of
 *    one slot that overlap in time may keep the earlier of their two clock
 *    readings. A hit reads no clock (the clock costs more than the rest
 *    of a hit) but marks its slot, and registry_list puts a model gotten
 *    since its last release after the others, as the most recently used;
 *    otherwise rows are in last-release order.
 *  - Eviction thread: it needs no signal from releases. A scan that finds
 *    models in use sleeps at most one TTL: a release after the scan sets a
 *    deadline no earlier than that (a release whose clock reading preceded
 *    the scan's makes the model expire that much late, the length of one
 *    release call). Loads, which hold the mutex anyway, wake it when it
 *    sleeps past the new model's earliest deadline.
 *  - Scans (eviction, TTL, list, metrics) cost THREAD_SLOTS counter reads
 *    per entry: nothing next to loading a model, for the model counts a
 *    process holds.
 *  - Budgets: admitting a model over max_bytes/max_models evicts idle
 *    models in LRU order under the mutex; when models in use prevent it,
 *    an atomic flag is raised and releases take the mutex to evict while
 *    it is up (the rare case). The flag is raised before the scan that
 *    failed and read after a release's decrement, both seq_cst, so a
 *    release that the scan missed sees the flag.
 *  - Counters on the hit path (hits) are per slot as well, summed by
 *    registry_metrics over every entry ever allocated.
 *  - Host code (loaders, destroy callbacks, the log sink and the host
 *    clock) never runs with the mutex held, so loads of different keys run
 *    concurrently and a callback may call back into the registry.
 *  - A miss inserts a LOADING entry and runs the loader on the caller's
 *    thread. Other callers for that key block on the entry's condition
 *    variable; while they are counted in `waiters` the entry cannot be
 *    evicted, and each takes its reference under the mutex when it wakes.
 *  - Cycles (A's loader asks for B whose loader asks for A, on any threads)
 *    are found before blocking by walking the wait-for chain under a
 *    process-wide lock: each LOADING entry names the thread running its
 *    loader, and each thread records the entry it is blocked on. The chain
 *    is acyclic by construction (every wait is checked before it starts),
 *    so the walk ends.
 */
#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "eviction_policy.h"
#include "device_access.h"
#include "device_weights.h"
#include "loader_buffer.h"
#include "model_key.h"
#include "registry_ops.h"

#define INITIAL_BUCKET_COUNT 16
/* With a host-supplied clock the eviction thread cannot convert a host
 * deadline into CLOCK_MONOTONIC exactly (the host may run time at another
 * rate), so it re-reads the host clock at least this often. */
#define FOREIGN_CLOCK_MAX_SLEEP_NS UINT64_C(1000000000)
/* Counters per entry, each on its own SLOT_ALIGN bytes: 2 KiB per entry,
 * nothing next to a model's weights. Threads beyond this many share
 * counters. */
#define THREAD_SLOTS 16
/* Two lines, not one: adjacent-line prefetchers pair 64-byte lines, and
 * two threads' counters must not share the pair. */
#define SLOT_ALIGN 128
#define KEY_WORDS (RM_MODEL_KEY_MAX / 8)
/* Links a lock-free walk follows before it gives up for the locked path;
 * chains average under one link (the table grows at load factor 1). */
#define LOOKUP_MAX_STEPS 8
/* Times an admission re-sorts the idle models when some it meant to evict
 * were taken by a lock-free hit meanwhile (and others were released). */
#define BUDGET_PASSES 4

/* The low bits of an entry's state word; the rest counts incarnations. */
typedef enum entry_state {
    ENTRY_FREE,     /* on the free list, a victim, or never used */
    ENTRY_LOADING,  /* in the table, loader running */
    ENTRY_READY,    /* in the table, model loaded */
    ENTRY_EVICTING, /* READY, being checked by an eviction (mutex held) */
    ENTRY_FAILED,   /* out of the table; kept until its waiters have left */
} entry_state;

#define STATE_BITS 3
#define STATE_CODE_MASK ((UINT64_C(1) << STATE_BITS) - 1)

/* What each thread publishes so that other threads can follow wait-for
 * chains. A loader may wait on a key of another context (another
 * registry), so the chains cross registries: they are kept under one
 * process-wide lock, wait_graph_lock, which is taken only by misses (to
 * start or end a load, or to wait), always inside a registry mutex and
 * never the other way round. Hits never take it. */
typedef struct load_thread {
    /* The LOADING entry (of any registry) this thread is blocked on, or
     * NULL. Alive while set: the waiter is counted in its `waiters`. */
    struct registry_entry *waiting_for;
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

typedef struct registry_entry entry;

/* One thread slot of an entry; a handle given to the host points to one.
 * Written by the threads using the slot, read by scans under the mutex. */
struct rm_model_handle {
    /* References handed out through this slot and not yet released. */
    _Alignas(SLOT_ALIGN) _Atomic int64_t holds;
    _Atomic uint64_t hits;            /* for registry_metrics */
    _Atomic uint64_t last_release_ns; /* host clock; 0: none this incarnation */
    atomic_uint gotten;               /* 1: a get since the last release */
    entry *entry;                     /* constant */
};

/* One key's entry. */
struct registry_entry {
    /* Read by lock-free lookups; written under the mutex. */
    _Alignas(SLOT_ALIGN) _Atomic uint64_t state; /* incarnation, entry_state */
    _Atomic(entry *) bucket_next;
    _Atomic uint64_t hash;
    _Atomic uint64_t key_length;
    /* The loader's model; read by a hit only after its reference is
     * confirmed, when no eviction (hence no reuse) can change it. */
    void *model;
    _Atomic uint64_t key_words[KEY_WORDS]; /* normalised key, zero-padded */

    /* Under the mutex. */
    rm_loaded_model loaded;
    rm_model_placement placement; /* set with `loaded` */
    uint64_t loaded_at_ns;
    uint64_t load_serial;     /* breaks ties between equal times */
    entry *list_next;         /* victims awaiting destroy, or the free list */
    entry *all_next;          /* every entry the registry allocated */
    size_t name_length;       /* the device starts at key + name_length + 1 */
    int32_t failure;          /* the loader's code, when FAILED */
    uint32_t waiters;         /* threads blocked on load_done */
    load_thread *loader;      /* the thread running the loader, while
                                 LOADING; under wait_graph_lock */
    pthread_cond_t load_done; /* broadcast when LOADING ends */

    rm_model_handle slots[THREAD_SLOTS];
};

typedef struct bucket_array {
    struct bucket_array *retired_next; /* replaced arrays, kept until destroy */
    size_t mask;                       /* bucket count - 1, a power of 2 */
    _Atomic(entry *) heads[];
} bucket_array;

struct rm_registry {
    /* Read by every hit and release; written at creation, on table growth
     * and when a budget starts or stops being exceeded. */
    _Alignas(SLOT_ALIGN) uint64_t serial; /* unique per registry in the process */
    _Atomic(bucket_array *) buckets;
    atomic_bool over_budget_now; /* releases must try to evict */
    rm_registry_config config;
    const rm_host *host;
    const void *error_owner;

    /* The rest under the mutex. */
    _Alignas(SLOT_ALIGN) pthread_mutex_t mutex;
    bucket_array *retired_buckets;
    size_t entry_count;   /* LOADING and READY entries in the table */
    entry *free_entries;  /* through list_next */
    entry *all_entries;   /* through all_next */
    rm_eviction_limits limits; /* the config's, as the policy takes them */
    size_t entries_allocated;
    /* Room for every entry allocated: the scans' candidates for the
     * eviction policy, grown with the entries (entry_allocate). */
    rm_eviction_candidate *candidates;
    size_t candidate_capacity;
    uint64_t load_serial;

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

static atomic_uint_fast64_t registry_serials;
static atomic_uint next_thread_slot;

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

/* Per thread: its slot, and the last key it resolved, as given, as
 * normalised, and the entry it found for it. Hosts call get_or_load with
 * the same key string on every inference, and comparing the bytes is
 * several times cheaper than validating and hashing them again. The normal
 * form and hash are a pure function of the raw bytes, so a byte-for-byte
 * match makes them reusable; the entry is re-checked by its state word. */
typedef struct thread_cache {
    unsigned slot_plus_one; /* 0 until the thread's first get */
    size_t raw_length;      /* 0: empty (a valid key is never empty) */
    size_t normal_length;
    uint64_t hash;
    /* The entry `normal` resolved to in `registry`, and its state word
     * (READY, that incarnation) then. The serial tells a new registry
     * from a destroyed one at the same address. */
    const rm_registry *registry;
    uint64_t registry_serial;
    entry *entry;
    uint64_t entry_state;
    char raw[RM_MODEL_KEY_MAX];
    char normal[RM_MODEL_KEY_MAX];
} thread_cache;

static _Thread_local thread_cache this_thread_cache;

static unsigned thread_slot(thread_cache *cache)
{
    if (cache->slot_plus_one == 0)
        cache->slot_plus_one =
            1 + atomic_fetch_add_explicit(&next_thread_slot, 1, memory_order_relaxed) %
                    THREAD_SLOTS;
    return cache->slot_plus_one - 1;
}

/* Checks and normalises `key` (raw_length bytes) into the cache. */
static int32_t resolve_into_cache(const void *error_owner, thread_cache *cache,
                                  const char *key, size_t raw_length)
{
    char normal[RM_MODEL_KEY_MAX];
    int32_t status = rm_model_key_normalize(key, normal, RM_MODEL_KEY_MAX, error_owner);
    if (status != RM_OK)
        return status;
    size_t normal_length = strlen(normal);
    /* raw_length < RM_MODEL_KEY_MAX: normalisation rejects longer keys. */
    cache->raw_length = raw_length;
    memcpy(cache->raw, key, raw_length);
    cache->normal_length = normal_length;
    memcpy(cache->normal, normal, normal_length + 1);
    cache->hash = hash_key(normal, normal_length);
    cache->registry = NULL;
    cache->entry = NULL;
    return RM_OK;
}

/* True when the cache holds `key` (raw_length bytes) already. */
static bool cache_holds_raw(const thread_cache *cache, const char *key, size_t raw_length)
{
    /* An empty cache has raw_length 0; the empty key must not match it. */
    return raw_length != 0 && raw_length == cache->raw_length &&
           memcmp(key, cache->raw, raw_length) == 0;
}

/* Checks and normalises `key` into `normal` (RM_MODEL_KEY_MAX bytes, on the
 * caller's stack: a loader running inside the caller may resolve other
 * keys on the same thread and overwrite the cache) and sets its length and
 * hash. Returns RM_OK or the normalisation error. */
static int32_t resolve_key(const void *error_owner, const char *key, char *normal,
                           size_t *normal_length, uint64_t *hash)
{
    thread_cache *cache = &this_thread_cache;
    size_t raw_length = strnlen(key, RM_MODEL_KEY_MAX);
    if (!cache_holds_raw(cache, key, raw_length)) {
        int32_t status = resolve_into_cache(error_owner, cache, key, raw_length);
        if (status != RM_OK)
            return status;
    }
    memcpy(normal, cache->normal, cache->normal_length + 1);
    *normal_length = cache->normal_length;
    *hash = cache->hash;
    return RM_OK;
}

/* Records that `normal` resolved to `e` (READY, `state`) in `registry`, if
 * the cache still holds that key (a loader may have replaced it). */
static void cache_entry(const rm_registry *registry, const char *normal, size_t length,
                        entry *e, uint64_t state)
{
    thread_cache *cache = &this_thread_cache;
    if (cache->normal_length != length || memcmp(cache->normal, normal, length) != 0)
        return;
    cache->registry = registry;
    cache->registry_serial = registry->serial;
    cache->entry = e;
    cache->entry_state = state;
}

static void lock(rm_registry *registry)
{
    pthread_mutex_lock(&registry->mutex);
}

static void unlock(rm_registry *registry)
{
    pthread_mutex_unlock(&registry->mutex);
}

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */
/* ------------------------------------------------------------------------ */

static entry_state state_code(uint64_t state)
{
    return (entry_state)(state & STATE_CODE_MASK);
}

static uint64_t with_code(uint64_t state, entry_state code)
{
    return (state & ~STATE_CODE_MASK) | (uint64_t)code;
}

/* The entry's state (mutex held: only the holder changes it). */
static entry_state current_code(const entry *e)
{
    return state_code(atomic_load_explicit(&e->state, memory_order_relaxed));
}

/* Changes the state's code, keeping the incarnation (mutex held). */
static void set_code(entry *e, entry_state code)
{
    uint64_t state = atomic_load_explicit(&e->state, memory_order_relaxed);
    atomic_store_explicit(&e->state, with_code(state, code), memory_order_seq_cst);
}

/* True when the entry's key is `key`. Safe against a concurrent reuse
 * rewriting the words (they are atomics); the caller re-checks the state
 * afterwards to know that what it compared was one incarnation's key
 * (acquire: see entry_begin_load). */
static bool key_matches(const entry *e, const char *key, size_t length)
{
    if (atomic_load_explicit(&e->key_length, memory_order_acquire) != length)
        return false;
    for (size_t i = 0; i * 8 < length; i++) {
        uint64_t word = 0;
        size_t left = length - i * 8;
        memcpy(&word, key + i * 8, left < 8 ? left : 8);
        if (atomic_load_explicit(&e->key_words[i], memory_order_acquire) != word)
            return false;
    }
    return true;
}

/* Copies the entry's key, NUL-terminated, into `out` (RM_MODEL_KEY_MAX). */
static void copy_key(const entry *e, char *out)
{
    size_t length = (size_t)atomic_load_explicit(&e->key_length, memory_order_relaxed);
    for (size_t i = 0; i * 8 < length; i++) {
        uint64_t word = atomic_load_explicit(&e->key_words[i], memory_order_relaxed);
        size_t left = length - i * 8;
        memcpy(out + i * 8, &word, left < 8 ? left : 8);
    }
    out[length] = '\0';
}

/* Room for one more entry among the scans' candidates, made here, where a
 * load may fail anyway, so that no scan (eviction, listing) allocates. */
static bool reserve_candidate(rm_registry *registry)
{
    if (registry->entries_allocated < registry->candidate_capacity)
        return true;
    size_t grown = registry->candidate_capacity == 0 ? 16 : 2 * registry->candidate_capacity;
    rm_eviction_candidate *larger =
        realloc(registry->candidates, grown * sizeof *registry->candidates);
    if (larger == NULL)
        return false;
    registry->candidates = larger;
    registry->candidate_capacity = grown;
    return true;
}

/* A new entry, FREE, recorded in all_entries (mutex held). */
static entry *entry_allocate(rm_registry *registry)
{
    if (!reserve_candidate(registry))
        return NULL;
    entry *e = aligned_alloc(SLOT_ALIGN, sizeof *e);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof *e);
    atomic_init(&e->state, ENTRY_FREE);
    atomic_init(&e->bucket_next, NULL);
    atomic_init(&e->hash, 0);
    atomic_init(&e->key_length, 0);
    for (size_t i = 0; i < KEY_WORDS; i++)
        atomic_init(&e->key_words[i], 0);
    for (size_t i = 0; i < THREAD_SLOTS; i++) {
        rm_model_handle *slot = &e->slots[i];
        atomic_init(&slot->holds, 0);
        atomic_init(&slot->hits, 0);
        atomic_init(&slot->last_release_ns, 0);
        atomic_init(&slot->gotten, 0);
        slot->entry = e;
    }
    pthread_cond_init(&e->load_done, NULL);
    e->all_next = registry->all_entries;
    registry->all_entries = e;
    registry->entries_allocated++;
    return e;
}

/* An entry for a new load: a reused one or a new one (mutex held). */
static entry *entry_take(rm_registry *registry)
{
    entry *e = registry->free_entries;
    if (e == NULL)
        return entry_allocate(registry);
    registry->free_entries = e->list_next;
    e->list_next = NULL;
    return e;
}

static void entry_recycle(rm_registry *registry, entry *e)
{
    e->list_next = registry->free_entries;
    registry->free_entries = e;
}

/* Makes a FREE entry the LOADING entry of `key` (mutex held). Every slot's
 * count is 0 here (that is how it was evicted; a late lock-free reader's
 * stray +1 is taken back by that reader), so only the times are reset. */
static void entry_begin_load(entry *e, const char *key, size_t length, uint64_t hash)
{
    uint64_t incarnation = (atomic_load_explicit(&e->state, memory_order_relaxed) >>
                            STATE_BITS) + 1;
    atomic_store_explicit(&e->state, incarnation << STATE_BITS | ENTRY_LOADING,
                          memory_order_relaxed);
    /* Release stores after the new state: a lock-free reader that reads
     * any of them (acquire) then also sees the new state when it re-checks,
     * and rejects the entry. (Not a fence: ThreadSanitizer does not model
     * fences; on x86 both compile to plain moves.) */
    for (size_t i = 0; i * 8 < length; i++) {
        uint64_t word = 0;
        size_t left = length - i * 8;
        memcpy(&word, key + i * 8, left < 8 ? left : 8);
        atomic_store_explicit(&e->key_words[i], word, memory_order_release);
    }
    atomic_store_explicit(&e->key_length, length, memory_order_release);
    atomic_store_explicit(&e->hash, hash, memory_order_release);
    for (size_t i = 0; i < THREAD_SLOTS; i++) {
        atomic_store_explicit(&e->slots[i].last_release_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&e->slots[i].gotten, 0, memory_order_relaxed);
    }
    e->model = NULL;
    e->loaded = (rm_loaded_model){0};
    e->placement = RM_MODEL_PLACEMENT_OPAQUE;
    e->loaded_at_ns = 0;
    e->name_length = (size_t)(strchr(key, '@') - key);
    e->failure = RM_OK;
    e->waiters = 0;
    e->loader = &this_thread;
}

/* References held: every slot's count, plus the waiters of a finished load
 * that have not woken yet (their references are theirs already). */
static uint64_t entry_references(const entry *e)
{
    int64_t sum = 0;
    for (size_t i = 0; i < THREAD_SLOTS; i++)
        sum += atomic_load_explicit(&e->slots[i].holds, memory_order_relaxed);
    return (sum > 0 ? (uint64_t)sum : 0) + e->waiters;
}

/* True when nothing holds `e` (mutex held). seq_cst: see the over-budget
 * flag in evict_lru_to_budget. */
static bool entry_idle(const entry *e)
{
    if (e->waiters != 0)
        return false;
    for (size_t i = 0; i < THREAD_SLOTS; i++) {
        if (atomic_load_explicit(&e->slots[i].holds, memory_order_seq_cst) != 0)
            return false;
    }
    return true;
}

/* The entry's last use: its load, or its latest release since. */
static uint64_t entry_last_use(const entry *e)
{
    uint64_t last = e->loaded_at_ns;
    for (size_t i = 0; i < THREAD_SLOTS; i++) {
        uint64_t released =
            atomic_load_explicit(&e->slots[i].last_release_ns, memory_order_relaxed);
        if (released > last)
            last = released;
    }
    return last;
}

/* True when some slot was used by a get since its last release. */
static bool entry_gotten_since_release(const entry *e)
{
    for (size_t i = 0; i < THREAD_SLOTS; i++) {
        if (atomic_load_explicit(&e->slots[i].gotten, memory_order_relaxed) != 0)
            return true;
    }
    return false;
}

/* Takes a reference through `slot` of `e` if its state is still `expected`
 * (READY, one incarnation) after the count went up; see the top comment.
 * Lock-free. */
static bool acquire_if_unchanged(entry *e, uint64_t expected, unsigned slot,
                                 rm_model_handle **out_handle, void **out_model)
{
    rm_model_handle *handle = &e->slots[slot];
    atomic_fetch_add_explicit(&handle->holds, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&e->state, memory_order_seq_cst) != expected) {
        atomic_fetch_sub_explicit(&handle->holds, 1, memory_order_release);
        return false;
    }
    atomic_fetch_add_explicit(&handle->hits, 1, memory_order_relaxed);
    atomic_store_explicit(&handle->gotten, 1, memory_order_relaxed);
    *out_handle = handle;
    *out_model = e->model;
    return true;
}

/* A reference through `slot` of a READY entry (mutex held: no eviction
 * can run, so no re-check). */
static void acquire_locked(entry *e, unsigned slot, bool is_hit,
                           rm_model_handle **out_handle, void **out_model)
{
    rm_model_handle *handle = &e->slots[slot];
    atomic_fetch_add_explicit(&handle->holds, 1, memory_order_seq_cst);
    if (is_hit) {
        atomic_fetch_add_explicit(&handle->hits, 1, memory_order_relaxed);
        atomic_store_explicit(&handle->gotten, 1, memory_order_relaxed);
    }
    *out_handle = handle;
    *out_model = e->model;
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
    e->list_next = NULL;
    *victims->tail_link = e;
    victims->tail_link = &e->list_next;
}

/* Runs the destroy callbacks (mutex not held), then puts the entries on
 * the free list: not before, or a load could reuse one whose callback has
 * not run. */
static void destroy_victims(rm_registry *registry, victim_list *victims)
{
    if (victims->head == NULL)
        return;
    for (entry *e = victims->head; e != NULL; e = e->list_next) {
        if (e->loaded.destroy != NULL)
            e->loaded.destroy(e->loaded.model, e->loaded.destroy_user);
    }
    lock(registry);
    *victims->tail_link = registry->free_entries;
    registry->free_entries = victims->head;
    unlock(registry);
    victims_init(victims);
}

/* ------------------------------------------------------------------------ */
/* Hash table                                                               */
/* ------------------------------------------------------------------------ */

/* A READY entry for `key` without taking the mutex, and its state word, or
 * NULL (not found, not ready, or the walk gave up: the locked path then
 * decides). */
static entry *find_ready_lock_free(const rm_registry *registry, const char *key,
                                   size_t length, uint64_t hash, uint64_t *out_state)
{
    bucket_array *buckets = atomic_load_explicit(&registry->buckets, memory_order_acquire);
    entry *e = atomic_load_explicit(&buckets->heads[hash & buckets->mask],
                                    memory_order_acquire);
    for (unsigned steps = 0; e != NULL && steps < LOOKUP_MAX_STEPS; steps++) {
        uint64_t state = atomic_load_explicit(&e->state, memory_order_acquire);
        if (state_code(state) == ENTRY_READY &&
            atomic_load_explicit(&e->hash, memory_order_acquire) == hash &&
            key_matches(e, key, length)) {
            *out_state = state;
            return e;
        }
        e = atomic_load_explicit(&e->bucket_next, memory_order_acquire);
    }
    return NULL;
}

/* The LOADING or READY entry of `key` (mutex held). */
static entry *table_find(const rm_registry *registry, const char *key, size_t length,
                         uint64_t hash)
{
    bucket_array *buckets = atomic_load_explicit(&registry->buckets, memory_order_relaxed);
    for (entry *e = atomic_load_explicit(&buckets->heads[hash & buckets->mask],
                                         memory_order_relaxed);
         e != NULL; e = atomic_load_explicit(&e->bucket_next, memory_order_relaxed)) {
        if (atomic_load_explicit(&e->hash, memory_order_relaxed) == hash &&
            key_matches(e, key, length))
            return e;
    }
    return NULL;
}

/* Doubles the bucket array once the load factor passes 1. Entries are
 * relinked in place; a lock-free walk that meets the change at worst
 * misses and falls back to the locked path. The old array stays allocated
 * until destroy: a reader may still be reading its heads. Failing to grow
 * is harmless (chains get longer), so it is not reported. */
static void table_maybe_grow(rm_registry *registry)
{
    bucket_array *old = atomic_load_explicit(&registry->buckets, memory_order_relaxed);
    size_t bucket_count = old->mask + 1;
    if (registry->entry_count <= bucket_count ||
        bucket_count > (SIZE_MAX - sizeof *old) / 2 / sizeof old->heads[0])
        return;
    size_t new_count = bucket_count * 2;
    bucket_array *bigger = malloc(sizeof *bigger + new_count * sizeof bigger->heads[0]);
    if (bigger == NULL)
        return;
    bigger->retired_next = NULL;
    bigger->mask = new_count - 1;
    for (size_t i = 0; i < new_count; i++)
        atomic_init(&bigger->heads[i], NULL);
    for (size_t i = 0; i < bucket_count; i++) {
        entry *e = atomic_load_explicit(&old->heads[i], memory_order_relaxed);
        while (e != NULL) {
            entry *next = atomic_load_explicit(&e->bucket_next, memory_order_relaxed);
            _Atomic(entry *) *head = &bigger->heads[atomic_load_explicit(
                                                        &e->hash, memory_order_relaxed) &
                                                    bigger->mask];
            atomic_store_explicit(&e->bucket_next,
                                  atomic_load_explicit(head, memory_order_relaxed),
                                  memory_order_release);
            atomic_store_explicit(head, e, memory_order_relaxed);
            e = next;
        }
    }
    atomic_store_explicit(&registry->buckets, bigger, memory_order_release);
    old->retired_next = registry->retired_buckets;
    registry->retired_buckets = old;
}

/* Links `e` (its key and state already written) at the head of its chain;
 * the release store publishes those to lock-free readers. */
static void table_insert(rm_registry *registry, entry *e)
{
    bucket_array *buckets = atomic_load_explicit(&registry->buckets, memory_order_relaxed);
    _Atomic(entry *) *head =
        &buckets->heads[atomic_load_explicit(&e->hash, memory_order_relaxed) & buckets->mask];
    atomic_store_explicit(&e->bucket_next, atomic_load_explicit(head, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(head, e, memory_order_release);
    registry->entry_count++;
    table_maybe_grow(registry);
}

/* Unlinks `e`. Its own link is left as it is, so that a reader standing on
 * it walks on along its old chain. */
static void table_remove(rm_registry *registry, entry *e)
{
    bucket_array *buckets = atomic_load_explicit(&registry->buckets, memory_order_relaxed);
    _Atomic(entry *) *link =
        &buckets->heads[atomic_load_explicit(&e->hash, memory_order_relaxed) & buckets->mask];
    for (;;) {
        entry *at = atomic_load_explicit(link, memory_order_relaxed);
        if (at == e)
            break;
        link = &at->bucket_next;
    }
    atomic_store_explicit(link, atomic_load_explicit(&e->bucket_next, memory_order_relaxed),
                          memory_order_release);
    registry->entry_count--;
}

/* ------------------------------------------------------------------------ */
/* Eviction (mutex held)                                                    */
/* ------------------------------------------------------------------------ */

typedef enum scan_kind {
    SCAN_IDLE, /* idle READY entries, by last use: eviction candidates */
    SCAN_ALL,  /* every READY entry, in the order registry_list shows */
} scan_kind;

/* Gathers READY entries into registry->candidates, keyed by last use (ties
 * in load order), and returns how many. In a SCAN_ALL gathering, a model
 * gotten since its last release (a hit reads no clock) counts as the most
 * recently used. *busy (may be NULL) is set when an entry in use was
 * passed over. */
static size_t gather(rm_registry *registry, scan_kind kind, bool *busy)
{
    size_t count = 0;
    bucket_array *buckets = atomic_load_explicit(&registry->buckets, memory_order_relaxed);
    for (size_t i = 0; i <= buckets->mask; i++) {
        for (entry *e = atomic_load_explicit(&buckets->heads[i], memory_order_relaxed);
             e != NULL; e = atomic_load_explicit(&e->bucket_next, memory_order_relaxed)) {
            if (current_code(e) != ENTRY_READY)
                continue;
            bool idle = entry_idle(e);
            if (!idle && busy != NULL)
                *busy = true;
            if ((kind == SCAN_IDLE && !idle) || count == registry->candidate_capacity)
                continue; /* (never full: it has room for every entry) */
            registry->candidates[count++] = (rm_eviction_candidate){
                .last_use_ns = !idle && entry_gotten_since_release(e) ? UINT64_MAX
                                                                      : entry_last_use(e),
                .tiebreak = e->load_serial,
                .id = (uintptr_t)e,
            };
        }
    }
    return count;
}

static bool over_budget(const rm_registry *registry)
{
    return rm_eviction_exceeded(&registry->limits, registry->bytes, registry->models) != 0;
}

/* Lowers the over-budget flag once the budget holds again. Stored only
 * when it changes: every hit and release reads its cache line. */
static void lower_over_budget_flag(rm_registry *registry)
{
    if (atomic_load_explicit(&registry->over_budget_now, memory_order_relaxed))
        atomic_store_explicit(&registry->over_budget_now, false, memory_order_relaxed);
}

/* Takes READY `e` out of the table if nothing holds it, for destruction
 * after the mutex is dropped. The EVICTING store and the slot reads are
 * one side of the handshake with lock-free hits (top comment). */
static bool try_detach_idle(rm_registry *registry, entry *e, victim_list *victims)
{
    uint64_t ready = atomic_load_explicit(&e->state, memory_order_relaxed);
    if (state_code(ready) != ENTRY_READY || e->waiters != 0)
        return false;
    atomic_store_explicit(&e->state, with_code(ready, ENTRY_EVICTING), memory_order_seq_cst);
    for (size_t i = 0; i < THREAD_SLOTS; i++) {
        if (atomic_load_explicit(&e->slots[i].holds, memory_order_seq_cst) != 0) {
            atomic_store_explicit(&e->state, ready, memory_order_seq_cst);
            return false;
        }
    }
    atomic_store_explicit(&e->state, with_code(ready, ENTRY_FREE), memory_order_release);
    table_remove(registry, e);
    registry->models--;
    registry->bytes -= e->loaded.bytes;
    if (!over_budget(registry))
        lower_over_budget_flag(registry);
    victims_push(victims, e);
    return true;
}

static void count_eviction(rm_registry *registry, unsigned reason)
{
    if (reason == RM_EVICT_EXPIRED)
        registry->evictions_ttl++;
    else if (reason == RM_EVICT_OVER_BUDGET)
        registry->evictions_lru++;
    else
        registry->evictions_explicit++;
}

/* Detaches the idle models the policy picks for `reasons` at `now_ns`,
 * least recently used first, counting each under its reason. *busy: a
 * model in use was passed over; *raced: one the policy picked was taken
 * by a lock-free hit since the scan. Returns the earliest TTL deadline
 * among the idle models left (UINT64_MAX: none). */
static uint64_t evict_idle(rm_registry *registry, unsigned reasons, uint64_t now_ns,
                           victim_list *victims, bool *busy, bool *raced)
{
    size_t count = gather(registry, SCAN_IDLE, busy);
    rm_eviction_walk walk;
    rm_eviction_walk_begin(&walk, &registry->limits, now_ns, reasons, registry->candidates,
                           count);
    unsigned reason;
    for (const rm_eviction_candidate *c;
         (c = rm_eviction_walk_next(&walk, registry->bytes, registry->models, &reason)) !=
         NULL;) {
        if (try_detach_idle(registry, (entry *)c->id, victims))
            count_eviction(registry, reason);
        else
            *raced = true;
    }
    return rm_eviction_walk_next_deadline(&walk);
}

/* Evicts idle models, least recently used first, until the budget holds
 * or no idle model is left; leaves the over-budget flag up if the budget
 * still does not hold. The flag goes up before the slots are read: a
 * release decrements its slot, then reads the flag (both seq_cst), so a
 * release this scan did not see will see the flag and evict. */
static void evict_lru_to_budget(rm_registry *registry, victim_list *victims)
{
    if (!over_budget(registry)) {
        lower_over_budget_flag(registry);
        return;
    }
    atomic_store_explicit(&registry->over_budget_now, true, memory_order_seq_cst);
    for (int pass = 0; pass < BUDGET_PASSES && over_budget(registry); pass++) {
        bool raced = false;
        (void)evict_idle(registry, RM_EVICT_OVER_BUDGET, 0, victims, NULL, &raced);
        if (!raced)
            break;
    }
}

/* Every READY entry in registry->candidates, least recently used first,
 * as registry_list shows them; returns how many. */
static size_t sorted_ready(rm_registry *registry)
{
    size_t count = gather(registry, SCAN_ALL, NULL);
    rm_eviction_sort(registry->candidates, count);
    return count;
}

/* ------------------------------------------------------------------------ */
/* Eviction thread                                                          */
/* ------------------------------------------------------------------------ */

/* Detaches every idle model whose TTL has run out at `now_ns`, least
 * recently used first, and returns when the eviction thread must look
 * again: the earliest deadline among the idle models left, and no later
 * than one TTL from now while any model is in use (its release, whenever
 * it comes, gives a deadline no earlier than that). UINT64_MAX: never. */
static uint64_t collect_expired(rm_registry *registry, uint64_t now_ns,
                                victim_list *victims)
{
    bool busy = false;
    uint64_t next =
        evict_idle(registry, RM_EVICT_EXPIRED, now_ns, victims, &busy, &busy);
    uint64_t busy_deadline = rm_eviction_deadline(&registry->limits, now_ns);
    return busy && busy_deadline < next ? busy_deadline : next;
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
            destroy_victims(registry, &victims);
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
            pthread_cond_timedwait(&registry->evictor_wake, &registry->mutex, &until);
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
    int failure = pthread_create(&registry->evictor, NULL, evictor_main, registry);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (failure == 0)
        pthread_setname_np(registry->evictor, "rm-evictor");
    return failure;
}

/* ------------------------------------------------------------------------ */
/* Creation and destruction                                                 */
/* ------------------------------------------------------------------------ */

static bucket_array *bucket_array_new(size_t count)
{
    bucket_array *buckets = malloc(sizeof *buckets + count * sizeof buckets->heads[0]);
    if (buckets == NULL)
        return NULL;
    buckets->retired_next = NULL;
    buckets->mask = count - 1;
    for (size_t i = 0; i < count; i++)
        atomic_init(&buckets->heads[i], NULL);
    return buckets;
}

int32_t rm_registry_create(const rm_registry_config *config, const rm_host *host,
                           const void *error_owner, rm_registry **out)
{
    if (out == NULL)
        return rm_error_set(error_owner, RM_E_INVALID_ARGUMENT,
                            "rm_registry_create needs an output pointer");
    *out = NULL;
    pthread_once(&wait_graph_fork_guard_once, install_wait_graph_fork_guard);
    rm_registry *registry = aligned_alloc(SLOT_ALIGN, sizeof *registry);
    bucket_array *buckets = bucket_array_new(INITIAL_BUCKET_COUNT);
    if (registry == NULL || buckets == NULL) {
        free(registry);
        free(buckets);
        return rm_error_set(error_owner, RM_E_NO_MEMORY,
                            "out of memory creating the model registry");
    }
    memset(registry, 0, sizeof *registry);
    registry->serial =
        1 + atomic_fetch_add_explicit(&registry_serials, 1, memory_order_relaxed);
    atomic_init(&registry->buckets, buckets);
    atomic_init(&registry->over_budget_now, false);
    if (config != NULL)
        registry->config = *config;
    registry->limits = (rm_eviction_limits){
        .ttl_ns = registry->config.ttl_ns,
        .max_bytes = registry->config.max_bytes,
        .max_models = registry->config.max_models,
    };
    registry->host = host;
    registry->error_owner = error_owner;
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
    size_t ready = sorted_ready(registry);
    for (size_t i = 0; i < ready; i++) {
        entry *e = (entry *)registry->candidates[i].id;
        uint64_t references = entry_references(e);
        if (references != 0) {
            handles_held += references;
            models_held++;
        }
        table_remove(registry, e);
        set_code(e, ENTRY_FREE);
        victims_push(&victims, e);
    }
    /* A LOADING entry here means a loader is still running on another
     * thread: destroy raced with a call, which the contract forbids. The
     * entry itself is not freed, but the registry is, so that thread's
     * return is undefined behaviour; the error below names it. */
    size_t still_loading = registry->entry_count;
    if (handles_held != 0)
        rm_host_log(registry->host, RM_LOG_WARN,
                    "model registry destroyed with %llu handle(s) still held "
                    "on %llu model(s); those handles are now invalid",
                    (unsigned long long)handles_held, (unsigned long long)models_held);
    if (still_loading != 0)
        rm_host_log(registry->host, RM_LOG_ERROR,
                    "model registry destroyed while %zu model(s) were still "
                    "loading (context_destroy raced with model_get_or_load, "
                    "which is not allowed); their entries are leaked",
                    still_loading);
    for (entry *victim = victims.head; victim != NULL; victim = victim->list_next) {
        if (victim->loaded.destroy != NULL)
            victim->loaded.destroy(victim->loaded.model, victim->loaded.destroy_user);
    }

    /* Entries a running loader or a waiter of a failed load still uses
     * (only after a forbidden race, as above) are left allocated. */
    entry *e = registry->all_entries;
    while (e != NULL) {
        entry *next = e->all_next;
        entry_state code = current_code(e);
        if (code != ENTRY_LOADING && !(code == ENTRY_FAILED && e->waiters != 0)) {
            pthread_cond_destroy(&e->load_done);
            free(e);
        }
        e = next;
    }
    bucket_array *buckets = atomic_load_explicit(&registry->buckets, memory_order_relaxed);
    buckets->retired_next = registry->retired_buckets;
    while (buckets != NULL) {
        bucket_array *next = buckets->retired_next;
        free(buckets);
        buckets = next;
    }
    free(registry->candidates);
    pthread_cond_destroy(&registry->evictor_wake);
    pthread_mutex_destroy(&registry->mutex);
    free(registry);
}

/* ------------------------------------------------------------------------ */
/* get_or_load                                                              */
/* ------------------------------------------------------------------------ */

/* What a call that missed the lock-free path asks for. `key` is the
 * caller's copy of the normal form: a loader run from here may resolve
 * other keys on this thread and overwrite the thread's cache. */
typedef struct get_request {
    const char *key;
    size_t key_length;
    uint64_t hash;
    unsigned slot;
    rm_model_loader_fn loader;
    void *loader_user;
    rm_model_handle **out_handle;
    void **out_model;
} get_request;

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

/* Publishes that this thread blocks on `e`, unless that would close a
 * cycle (then false, and nothing is published). */
static bool begin_wait(entry *e)
{
    pthread_mutex_lock(&wait_graph_lock);
    bool cycle = wait_would_cycle(e);
    if (!cycle)
        this_thread.waiting_for = e;
    pthread_mutex_unlock(&wait_graph_lock);
    return !cycle;
}

static void end_wait(void)
{
    pthread_mutex_lock(&wait_graph_lock);
    this_thread.waiting_for = NULL;
    pthread_mutex_unlock(&wait_graph_lock);
}

/* The wait state: blocks until `e` (LOADING; mutex held, released on
 * return) finishes, then shares its model or reports its failure. */
static int32_t wait_for_load(rm_registry *registry, entry *e, const get_request *request)
{
    if (!begin_wait(e)) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_LOAD_CYCLE,
                            "model key '%s' is being loaded by a loader that "
                            "waits (directly or through other loads) for "
                            "this caller: the loaders form a cycle",
                            request->key);
    }
    e->waiters++;
    while (current_code(e) == ENTRY_LOADING)
        pthread_cond_wait(&e->load_done, &registry->mutex);
    end_wait();
    e->waiters--;
    if (current_code(e) == ENTRY_READY) {
        /* Being counted in `waiters` kept it from eviction until now. */
        acquire_locked(e, request->slot, false, request->out_handle, request->out_model);
        cache_entry(registry, request->key, request->key_length, e,
                    atomic_load_explicit(&e->state, memory_order_relaxed));
        unlock(registry);
        return RM_OK;
    }
    int32_t failure = e->failure;
    if (e->waiters == 0)
        entry_recycle(registry, e); /* the last to leave */
    unlock(registry);
    return rm_error_set(registry->error_owner, failure,
                        "loading model key '%s' failed on the thread that "
                        "ran its loader: %s (%s)",
                        request->key, rm_error_name(failure), rm_error_string(failure));
}

/* What the host's loader gave, checked (run_loader). */
typedef struct load_result {
    rm_loaded_model loaded;
    rm_model_placement placement;
    int32_t status;
    /* The status has a message of its own (a buffer misuse, or the loader
     * records its own: loader_explains_failures), which the generic
     * "loader failed" one must not replace. */
    bool explained;
    bool null_model; /* RM_OK without a model */
    uint64_t done_ns; /* host clock when the loader had returned */
} load_result;

/* The claim state: a LOADING entry for the key, in the table, whose loader
 * is this thread (mutex held). NULL: out of memory. */
static entry *claim_entry(rm_registry *registry, const get_request *request)
{
    entry *e = entry_take(registry);
    if (e == NULL)
        return NULL;
    entry_begin_load(e, request->key, request->key_length, request->hash);
    table_insert(registry, e);
    return e;
}

/* A process-scope device buffer (1.4): private device memory. */
static int32_t create_private_device(rm_loader_buffer *buffer, uint64_t bytes)
{
    const rm_registry *registry = buffer->scope_state;
    rm_cuda_driver *driver = NULL;
    int32_t status = registry->config.device == NULL
                         ? rm_error_set(buffer->error_owner, RM_E_FEATURE_DISABLED,
                                        "a device buffer for model key '%s' needs feature "
                                        "'cuda-ipc'",
                                        buffer->key)
                         : rm_device_access_driver(registry->config.device, buffer->key,
                                                   buffer->error_owner, &driver);
    rm_device_buffer *made = NULL;
    if (status == RM_OK)
        status = rm_device_buffer_create(driver, buffer->device_ordinal, bytes, buffer->key,
                                         buffer->error_owner, &made);
    if (status != RM_OK)
        return status;
    buffer->device_pointer = made->pointer;
    buffer->stream = made->stream;
    buffer->placement = (rm_model_placement){.memory = RM_MEMORY_CUDA,
                                             .buffer = true,
                                             .device_ordinal = buffer->device_ordinal,
                                             .device_bytes = bytes};
    (void)rm_device_access_uuid(registry->config.device, buffer->device_ordinal,
                                buffer->placement.device_uuid);
    /* Kept where the destroy callback will find it. */
    buffer->base = NULL;
    buffer->scope_state = made;
    return RM_OK;
}

/* After a load that used a device buffer: its work finished, the buffer
 * destroyed with the model; or, when the load failed, freed now. */
static int32_t finish_private_device(rm_loader_buffer *buffer, rm_loaded_model *loaded,
                                     int32_t status)
{
    rm_device_buffer *made = buffer->scope_state;
    if (status == RM_OK)
        status = rm_device_buffer_finish(made, buffer->key, buffer->error_owner);
    if (status != RM_OK) {
        rm_device_buffer_destroy(NULL, made);
        return status;
    }
    loaded->destroy = rm_device_buffer_destroy;
    loaded->destroy_user = made;
    return RM_OK;
}

/* The run-loader state (no lock held): runs the host's loader with a
 * private buffer (host or device) on offer, then seals the host buffer it
 * used, or gives either back when the load failed. */
static void run_loader(const rm_registry *registry, const get_request *request,
                       load_result *result)
{
    *result = (load_result){.loaded = {.struct_size = (uint32_t)sizeof result->loaded,
                                       .abi_version = RM_ABI_VERSION_CURRENT}};
    rm_loader_buffer buffer = {
        .create = rm_loader_buffer_create_private,
        .create_device = registry->config.device != NULL ? create_private_device : NULL,
        .scope_state = (void *)registry,
        .error_owner = registry->error_owner,
        .key = request->key,
    };
    rm_loaded_model *loaded = &result->loaded;
    rm_loader_buffer_offer(loaded, &buffer);
    int32_t status = request->loader(request->loader_user, request->key, loaded);
    loaded->plugin_private = NULL;
    bool used_buffer = false;
    bool device = buffer.device_pointer != 0;
    if (status == RM_OK) {
        status = rm_loader_buffer_check(loaded, &buffer, &used_buffer);
        if (status == RM_OK && used_buffer && !device)
            status = rm_loader_buffer_seal_private(&buffer);
        if (status == RM_OK && used_buffer && !device) {
            loaded->destroy = rm_loader_buffer_destroy_private;
            loaded->destroy_user = (void *)(uintptr_t)buffer.bytes;
            buffer.placement = (rm_model_placement){
                .memory = RM_MODEL_MEMORY_HOST, .buffer = true, .device_ordinal = -1};
        }
        result->explained = status != RM_OK;
    }
    if (device) {
        int32_t finished = finish_private_device(&buffer, loaded, status);
        result->explained = result->explained || (status == RM_OK && finished != RM_OK);
        status = finished;
    }
    result->explained = result->explained || registry->config.loader_explains_failures ||
                        rm_loader_buffer_explains(&buffer, status);
    if (status != RM_OK && buffer.base != NULL)
        rm_loader_buffer_destroy_private(buffer.base, (void *)(uintptr_t)buffer.bytes);
    result->placement = buffer.placement;
    result->null_model = status == RM_OK && loaded->model == NULL;
    if (status > 0)
        status = RM_E_LOADER_FAILED;
    else if (result->null_model)
        status = RM_E_INVALID_ARGUMENT;
    result->status = status;
    result->done_ns = rm_host_now_ns(registry->host);
}

/* This thread no longer runs e's loader: waiting for `e` is no cycle any
 * more. */
static void end_loader_run(entry *e)
{
    pthread_mutex_lock(&wait_graph_lock);
    e->loader = NULL;
    pthread_mutex_unlock(&wait_graph_lock);
}

/* The publish-failure state: takes `e` out of the table and hands the
 * failure to its waiters (mutex held, released on return). */
static int32_t publish_failure(rm_registry *registry, entry *e, const get_request *request,
                               const load_result *result)
{
    registry->load_failures++;
    table_remove(registry, e);
    set_code(e, ENTRY_FAILED);
    e->failure = result->status;
    pthread_cond_broadcast(&e->load_done);
    if (e->waiters == 0)
        entry_recycle(registry, e);
    unlock(registry);
    if (result->null_model)
        return rm_error_set(registry->error_owner, result->status,
                            "loader for model key '%s' returned success "
                            "but no model",
                            request->key);
    if (result->explained)
        return result->status;
    return rm_error_set(registry->error_owner, result->status,
                        "loader for model key '%s' failed: %s (%s)", request->key,
                        rm_error_name(result->status), rm_error_string(result->status));
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

/* Makes room for a model just admitted (mutex held): evicts idle models
 * to fit the budget, and counts and describes an admission that stays
 * over it. */
static budget_report fit_budget(rm_registry *registry, victim_list *victims)
{
    evict_lru_to_budget(registry, victims);
    unsigned exceeded =
        rm_eviction_exceeded(&registry->limits, registry->bytes, registry->models);
    if (exceeded == 0)
        return (budget_report){0};
    registry->over_budget++;
    return (budget_report){
        .bytes_exceeded = (exceeded & RM_BUDGET_BYTES) != 0,
        .models_exceeded = (exceeded & RM_BUDGET_MODELS) != 0,
        .bytes = registry->bytes,
        .models = registry->models,
    };
}

/* The admit state: makes `e` READY with what the loader gave, this
 * caller's reference counted, and wakes its waiters (mutex held, released
 * on return). */
static int32_t admit(rm_registry *registry, entry *e, const get_request *request,
                     const load_result *result)
{
    const rm_loaded_model *loaded = &result->loaded;
    e->loaded = (rm_loaded_model){
        .struct_size = (uint32_t)sizeof *loaded,
        .abi_version = RM_ABI_VERSION_CURRENT,
        .model = loaded->model,
        .bytes = loaded->bytes,
        .destroy = loaded->destroy,
        .destroy_user = loaded->destroy_user,
    };
    e->model = loaded->model;
    e->placement = result->placement;
    e->loaded_at_ns = result->done_ns;
    e->load_serial = ++registry->load_serial;
    /* This caller's reference, taken before READY is visible; each waiter
     * takes its own when it wakes (`waiters` protects them until then). */
    acquire_locked(e, request->slot, false, request->out_handle, request->out_model);
    set_code(e, ENTRY_READY);
    registry->loads++;
    registry->models++;
    registry->bytes += loaded->bytes;
    victim_list victims;
    victims_init(&victims);
    budget_report report = fit_budget(registry, &victims);
    /* The new model is in use, so the evictor's next look is one TTL away
     * at the earliest; wake it if it sleeps for longer. */
    if (registry->evictor_started && rm_eviction_deadline(&registry->limits, result->done_ns) <
                                         registry->evictor_sleeping_until)
        pthread_cond_signal(&registry->evictor_wake);
    pthread_cond_broadcast(&e->load_done);
    cache_entry(registry, request->key, request->key_length, e,
                atomic_load_explicit(&e->state, memory_order_relaxed));
    unlock(registry);
    destroy_victims(registry, &victims);
    log_over_budget(registry, request->key, &report);
    return RM_OK;
}

/* Loads a key that is not in the table (mutex held on entry, released on
 * return): claim, run the loader, then publish its failure or admit. */
static int32_t load(rm_registry *registry, const get_request *request)
{
    entry *e = claim_entry(registry, request);
    if (e == NULL) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_NO_MEMORY,
                            "out of memory adding model key '%s'", request->key);
    }
    unlock(registry);
    load_result result;
    run_loader(registry, request, &result);
    lock(registry);
    end_loader_run(e);
    if (result.status != RM_OK)
        return publish_failure(registry, e, request, &result);
    return admit(registry, e, request, &result);
}

/* The locked path: a hit the lock-free one could not confirm, a wait for a
 * running load, or a load. */
static int32_t get_or_load_locked(rm_registry *registry, const get_request *request)
{
    lock(registry);
    if (registry->shutting_down) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_SHUTTING_DOWN,
                            "model key '%s' requested while the registry is "
                            "being destroyed",
                            request->key);
    }
    entry *e = table_find(registry, request->key, request->key_length, request->hash);
    if (e != NULL && current_code(e) == ENTRY_READY) {
        acquire_locked(e, request->slot, true, request->out_handle, request->out_model);
        cache_entry(registry, request->key, request->key_length, e,
                    atomic_load_explicit(&e->state, memory_order_relaxed));
        unlock(registry);
        return RM_OK;
    }
    registry->misses++;
    if (e != NULL)
        return wait_for_load(registry, e, request);
    return load(registry, request);
}

/* The hit path. The context calls it through rm_process_registry_ops
 * directly, not through a wrapper: a jump more per hit would show. */
static int32_t process_get_or_load(void *opaque, const char *key, rm_model_loader_fn loader,
                                   void *loader_user, rm_model_handle **out_handle,
                                   void **out_model)
{
    rm_registry *registry = opaque;
    if (out_handle != NULL)
        *out_handle = NULL;
    if (out_model != NULL)
        *out_model = NULL;
    const void *owner = registry != NULL ? registry->error_owner : NULL;
    if (registry == NULL || key == NULL || loader == NULL || out_handle == NULL ||
        out_model == NULL)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "model_get_or_load needs a key, a loader and both "
                            "output pointers (got a NULL %s)",
                            registry == NULL     ? "registry"
                            : key == NULL        ? "key"
                            : loader == NULL     ? "loader"
                            : out_handle == NULL ? "out_handle"
                                                 : "out_model");

    thread_cache *cache = &this_thread_cache;
    unsigned slot = thread_slot(cache);
    size_t raw_length = strnlen(key, RM_MODEL_KEY_MAX);
    bool resolved = cache_holds_raw(cache, key, raw_length);
    /* The usual hit: the same key string as this thread's last call, its
     * entry unchanged since. */
    if (resolved && cache->registry == registry &&
        cache->registry_serial == registry->serial &&
        acquire_if_unchanged(cache->entry, cache->entry_state, slot, out_handle, out_model))
        return RM_OK;
    if (!resolved) {
        int32_t status = resolve_into_cache(owner, cache, key, raw_length);
        if (status != RM_OK)
            return status;
    }
    uint64_t state;
    entry *e = find_ready_lock_free(registry, cache->normal, cache->normal_length,
                                    cache->hash, &state);
    if (e != NULL && acquire_if_unchanged(e, state, slot, out_handle, out_model)) {
        cache_entry(registry, cache->normal, cache->normal_length, e, state);
        return RM_OK;
    }
    char normal[RM_MODEL_KEY_MAX];
    memcpy(normal, cache->normal, cache->normal_length + 1);
    get_request request = {
        .key = normal,
        .key_length = cache->normal_length,
        .hash = cache->hash,
        .slot = slot,
        .loader = loader,
        .loader_user = loader_user,
        .out_handle = out_handle,
        .out_model = out_model,
    };
    return get_or_load_locked(registry, &request);
}

int32_t rm_registry_get_or_load(rm_registry *registry, const char *key,
                                rm_model_loader_fn loader, void *loader_user,
                                rm_model_handle **out_handle, void **out_model)
{
    return process_get_or_load(registry, key, loader, loader_user, out_handle, out_model);
}

/* ------------------------------------------------------------------------ */
/* release, evict, metrics, list                                            */
/* ------------------------------------------------------------------------ */

/* After the last handle of an entry in an evict_when_unused registry went
 * back through one slot: destroys the model if no other slot holds it.
 * Two last releases on different slots each read the other's slot after
 * their own decrement (seq_cst), so at least one sees both at zero. */
static void evict_if_unused(rm_registry *registry, entry *e)
{
    for (size_t i = 0; i < THREAD_SLOTS; i++) {
        if (atomic_load_explicit(&e->slots[i].holds, memory_order_seq_cst) != 0)
            return; /* that handle's release comes here later */
    }
    victim_list victims;
    victims_init(&victims);
    lock(registry);
    /* Whatever incarnation it is by now, an idle model of this registry
     * must go. */
    (void)try_detach_idle(registry, e, &victims);
    unlock(registry);
    destroy_victims(registry, &victims);
}

static void evict_after_release(rm_registry *registry)
{
    victim_list victims;
    victims_init(&victims);
    lock(registry);
    evict_lru_to_budget(registry, &victims);
    unlock(registry);
    destroy_victims(registry, &victims);
}

/* Called like process_get_or_load, for the same reason. */
static int32_t process_release(void *opaque, rm_model_handle *handle)
{
    rm_registry *registry = opaque;
    if (registry == NULL || handle == NULL)
        return rm_error_set(registry != NULL ? registry->error_owner : NULL,
                            RM_E_INVALID_ARGUMENT,
                            "model_release needs a registry and a handle");
    uint64_t now_ns = rm_host_now_ns(registry->host);
    int64_t holds = atomic_load_explicit(&handle->holds, memory_order_relaxed);
    do {
        if (holds <= 0) {
            /* Undefined by contract; caught when cheap to do so. */
            return rm_error_set(registry->error_owner, RM_E_INVALID_ARGUMENT,
                                "model handle released more often than it was "
                                "acquired");
        }
        /* Written before the decrement, which publishes it to the scan
         * that finds the model idle. */
        if (now_ns > atomic_load_explicit(&handle->last_release_ns, memory_order_relaxed))
            atomic_store_explicit(&handle->last_release_ns, now_ns, memory_order_relaxed);
        atomic_store_explicit(&handle->gotten, 0, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(&handle->holds, &holds, holds - 1,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (registry->config.evict_when_unused) {
        if (holds == 1)
            evict_if_unused(registry, handle->entry);
    } else if (atomic_load_explicit(&registry->over_budget_now, memory_order_seq_cst)) {
        evict_after_release(registry);
    }
    return RM_OK;
}

int32_t rm_registry_release(rm_registry *registry, rm_model_handle *handle)
{
    return process_release(registry, handle);
}

int32_t rm_registry_view(rm_registry *registry, rm_model_handle *handle, rm_model_view *out)
{
    /* The caller's own reference keeps the entry READY: it cannot be
     * evicted or reused while the count is above zero, so a second one
     * may be added without the mutex. */
    int64_t holds = atomic_load_explicit(&handle->holds, memory_order_relaxed);
    do {
        if (holds <= 0)
            return rm_error_set(registry->error_owner, RM_E_INVALID_ARGUMENT,
                                "model_to_dlpack: the handle holds no reference (released)");
    } while (!atomic_compare_exchange_weak_explicit(&handle->holds, &holds, holds + 1,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed));
    const entry *e = handle->entry;
    *out = (rm_model_view){
        .model = e->model, .bytes = e->loaded.bytes, .placement = e->placement};
    return RM_OK;
}

int32_t rm_registry_evict(rm_registry *registry, const char *key)
{
    if (registry == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT, "model_evict needs a registry");
    victim_list victims;
    victims_init(&victims);
    if (key == NULL) {
        bool raced = false; /* a model gotten meanwhile is in use: not evicted */
        lock(registry);
        (void)evict_idle(registry, RM_EVICT_EVERY, 0, &victims, NULL, &raced);
        unlock(registry);
        destroy_victims(registry, &victims);
        return RM_OK;
    }

    char normal[RM_MODEL_KEY_MAX];
    size_t key_length;
    uint64_t hash;
    int32_t status = resolve_key(registry->error_owner, key, normal, &key_length, &hash);
    if (status != RM_OK)
        return status;

    lock(registry);
    entry *e = table_find(registry, normal, key_length, hash);
    if (e == NULL) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_NOT_FOUND,
                            "model key '%s' is not loaded", normal);
    }
    if (current_code(e) == ENTRY_LOADING) {
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_BUSY,
                            "model key '%s' is still loading", normal);
    }
    if (!try_detach_idle(registry, e, &victims)) {
        unsigned long long held = entry_references(e);
        unlock(registry);
        return rm_error_set(registry->error_owner, RM_E_BUSY,
                            "model key '%s' is in use (%llu handle(s) held)", normal,
                            held);
    }
    registry->evictions_explicit++;
    unlock(registry);
    destroy_victims(registry, &victims);
    return RM_OK;
}

void rm_registry_get_metrics(rm_registry *registry, rm_registry_metrics *out)
{
    if (registry == NULL || out == NULL)
        return;
    lock(registry);
    /* Hits are counted per slot, in every entry the registry ever had (an
     * entry keeps its counts across reuse). */
    uint64_t hits = 0;
    for (const entry *e = registry->all_entries; e != NULL; e = e->all_next) {
        for (size_t i = 0; i < THREAD_SLOTS; i++)
            hits += atomic_load_explicit(&e->slots[i].hits, memory_order_relaxed);
    }
    /* The caller owns the leading struct_size/abi_version pair. */
    out->hits = hits;
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
    out->evictions = out->evictions_ttl + out->evictions_lru + out->evictions_explicit;
    uint64_t lookups = out->hits + out->misses;
    out->hit_rate = lookups == 0 ? 0.0 : (double)out->hits / (double)lookups;
}

int32_t rm_registry_list(rm_registry *registry, rm_model_info *out,
                         uint32_t info_struct_size, uint32_t capacity, uint32_t *out_count)
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
    size_t row_bytes =
        info_struct_size < sizeof(rm_model_info) ? info_struct_size : sizeof(rm_model_info);
    unsigned char *rows = (unsigned char *)out;
    uint64_t now_ns = rm_host_now_ns(registry->host);

    lock(registry);
    uint64_t count = registry->models;
    uint32_t written = 0;
    size_t ready = sorted_ready(registry);
    for (size_t i = 0; i < ready && written < capacity; i++) {
        const entry *e = (const entry *)registry->candidates[i].id;
        uint64_t references = entry_references(e);
        uint64_t last_used_ns = entry_last_use(e);
        rm_model_info row = {
            .struct_size = (uint32_t)row_bytes,
            .abi_version = RM_ABI_VERSION_CURRENT,
            .bytes = e->loaded.bytes,
            .refcount = references,
            .loaded_at_ns = e->loaded_at_ns,
            .last_used_ns = last_used_ns,
            .scope = RM_REGISTRY_SCOPE_PROCESS,
            .state = RM_MODEL_STATE_READY,
            .holders = references != 0 ? 1 : 0,
            .idle_ns = references == 0 && now_ns > last_used_ns ? now_ns - last_used_ns : 0,
            .memory = e->placement.memory,
            .device_ordinal = e->placement.device_ordinal,
            .device_bytes = e->placement.device_bytes,
        };
        memcpy(row.device_uuid, e->placement.device_uuid, sizeof row.device_uuid);
        copy_key(e, row.key);
        size_t key_length = strlen(row.key);
        memcpy(row.device, row.key + e->name_length + 1, key_length - e->name_length);
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
    for (entry *e = victims.head; e != NULL; e = e->list_next)
        evicted++;
    destroy_victims(registry, &victims);
    /* Process scope has no dead processes or segments to reclaim. */
    if (out != NULL)
        out->models_evicted = evicted;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* The table a context dispatches through (registry_ops.h)                  */
/* ------------------------------------------------------------------------ */

static int32_t process_evict(void *registry, const char *key)
{
    return rm_registry_evict(registry, key);
}

static int32_t process_metrics(void *registry, rm_registry_metrics *out)
{
    rm_registry_get_metrics(registry, out);
    return RM_OK;
}

static int32_t process_list(void *registry, rm_model_info *out, uint32_t info_struct_size,
                            uint32_t capacity, uint32_t *out_count)
{
    return rm_registry_list(registry, out, info_struct_size, capacity, out_count);
}

static int32_t process_reclaim(void *registry, rm_registry_reclaim_report *out)
{
    return rm_registry_reclaim(registry, out);
}

static void process_destroy(void *registry)
{
    rm_registry_destroy(registry);
}

static int32_t process_view(void *registry, rm_model_handle *handle, rm_model_view *out)
{
    return rm_registry_view(registry, handle, out);
}

const rm_registry_ops rm_process_registry_ops = {
    .get_or_load = process_get_or_load,
    .release = process_release,
    .evict = process_evict,
    .metrics = process_metrics,
    .list = process_list,
    .reclaim = process_reclaim,
    .view = process_view,
    .destroy = process_destroy,
};
