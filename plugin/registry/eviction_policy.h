/* Which idle models to evict, and in what order: the one LRU/TTL/budget
 * policy of both registry scopes (registry.c in process scope,
 * node_registry.c in node scope).
 *
 * A scope gathers its idle models (nobody holds them) as candidates into
 * an array it owns: when each was last used, and a tie-break that orders
 * equal times (load order, table slot). A walk sorts them least recently
 * used first and hands them back one at a time, each with the reason to
 * evict it, for the reasons the caller asked about:
 *   - RM_EVICT_EXPIRED: idle for ttl_ns or longer (TTL eviction);
 *   - RM_EVICT_OVER_BUDGET: the totals the caller passes, as they are at
 *     that step, exceed max_bytes or max_models (LRU eviction);
 *   - RM_EVICT_EVERY: every idle model (model_evict(NULL), room in a full
 *     table).
 * A candidate that is both expired and over budget is expired: TTL comes
 * first, as the scopes have always counted it. The walk ends at the first
 * candidate no asked-for reason applies to: every later one was used
 * later, so it has not expired either, and a budget that holds keeps
 * holding while models leave.
 *
 * Nothing here allocates, takes a lock or reads a clock: eviction runs
 * under the scope's lock and must not fail, so each scope sizes its array
 * where it may fail anyway (registry.c with its entries, node scope when
 * it attaches a table). A candidate the caller cannot evict after all (a
 * lock-free hit took it) is simply skipped by the caller; the walk goes
 * on with the totals the caller passes next.
 */
#ifndef RM_INTERNAL_EVICTION_POLICY_H
#define RM_INTERNAL_EVICTION_POLICY_H

#include <stddef.h>
#include <stdint.h>

typedef struct rm_eviction_limits {
    uint64_t ttl_ns;     /* idle time before eviction; 0 = none */
    uint64_t max_bytes;  /* 0 = unlimited */
    uint64_t max_models; /* 0 = unlimited */
} rm_eviction_limits;

typedef struct rm_eviction_candidate {
    uint64_t last_use_ns; /* the scope's clock */
    uint64_t tiebreak;    /* orders equal times; unique among the candidates */
    uintptr_t id;         /* the caller's name for it: an entry, a slot */
} rm_eviction_candidate;

/* Why a candidate is handed out (and what a walk is asked to look for). */
enum {
    RM_EVICT_EXPIRED = 1u << 0,
    RM_EVICT_OVER_BUDGET = 1u << 1,
    RM_EVICT_EVERY = 1u << 2,
};

/* Which budget totals exceed (rm_eviction_exceeded). */
enum {
    RM_BUDGET_BYTES = 1u << 0,
    RM_BUDGET_MODELS = 1u << 1,
};

typedef struct rm_eviction_walk {
    rm_eviction_limits limits;
    uint64_t now_ns;
    unsigned reasons;
    const rm_eviction_candidate *candidates; /* sorted */
    size_t count;
    size_t next;
} rm_eviction_walk;

/** RM_BUDGET_BYTES and/or RM_BUDGET_MODELS when `bytes` or `models` exceed
 *  their limit; 0 within budget. */
unsigned rm_eviction_exceeded(const rm_eviction_limits *limits, uint64_t bytes,
                              uint64_t models);

/** When a model last used at `last_use_ns` expires (saturating);
 *  UINT64_MAX without a TTL. Also: a model in use now expires no earlier
 *  than rm_eviction_deadline(limits, now). */
uint64_t rm_eviction_deadline(const rm_eviction_limits *limits, uint64_t last_use_ns);

/** Sorts least recently used first (ties by tiebreak), in place. */
void rm_eviction_sort(rm_eviction_candidate *candidates, size_t count);

/** Sorts `candidates` and starts a walk over them for `reasons` at
 *  `now_ns`. The walk reads the array until it ends. */
void rm_eviction_walk_begin(rm_eviction_walk *walk, const rm_eviction_limits *limits,
                            uint64_t now_ns, unsigned reasons,
                            rm_eviction_candidate *candidates, size_t count);

/** The next candidate to evict and *reason (one RM_EVICT_* bit), judged
 *  with the caller's totals as they are now; NULL when the policy wants no
 *  more evicted. */
const rm_eviction_candidate *rm_eviction_walk_next(rm_eviction_walk *walk, uint64_t bytes,
                                                   uint64_t models, unsigned *reason);

/** The earliest TTL deadline among the candidates the walk has not handed
 *  out (UINT64_MAX: none, or no TTL). */
uint64_t rm_eviction_walk_next_deadline(const rm_eviction_walk *walk);

#endif
