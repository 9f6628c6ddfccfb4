/* The LRU/TTL/budget eviction policy; see eviction_policy.h. */
#include "eviction_policy.h"

#include <stdbool.h>

unsigned rm_eviction_exceeded(const rm_eviction_limits *limits, uint64_t bytes,
                              uint64_t models)
{
    unsigned exceeded = 0;
    if (limits->max_bytes != 0 && bytes > limits->max_bytes)
        exceeded |= RM_BUDGET_BYTES;
    if (limits->max_models != 0 && models > limits->max_models)
        exceeded |= RM_BUDGET_MODELS;
    return exceeded;
}

uint64_t rm_eviction_deadline(const rm_eviction_limits *limits, uint64_t last_use_ns)
{
    if (limits->ttl_ns == 0)
        return UINT64_MAX;
    return last_use_ns > UINT64_MAX - limits->ttl_ns ? UINT64_MAX
                                                     : last_use_ns + limits->ttl_ns;
}

static bool used_before(const rm_eviction_candidate *a, const rm_eviction_candidate *b)
{
    if (a->last_use_ns != b->last_use_ns)
        return a->last_use_ns < b->last_use_ns;
    return a->tiebreak < b->tiebreak;
}

static void swap(rm_eviction_candidate *a, rm_eviction_candidate *b)
{
    rm_eviction_candidate held = *a;
    *a = *b;
    *b = held;
}

static void sift_down(rm_eviction_candidate *heap, size_t root, size_t count)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= count)
            return;
        if (child + 1 < count && used_before(&heap[child], &heap[child + 1]))
            child++;
        if (!used_before(&heap[root], &heap[child]))
            return;
        swap(&heap[root], &heap[child]);
        root = child;
    }
}

/* Heapsort: in place and O(n log n) for a full node table (65536 slots),
 * where qsort() may allocate. Not stable, and need not be: tie-breaks are
 * unique, so the order is total. */
void rm_eviction_sort(rm_eviction_candidate *candidates, size_t count)
{
    for (size_t root = count / 2; root-- > 0;)
        sift_down(candidates, root, count);
    for (size_t end = count; end-- > 1;) {
        swap(&candidates[0], &candidates[end]);
        sift_down(candidates, 0, end);
    }
}

void rm_eviction_walk_begin(rm_eviction_walk *walk, const rm_eviction_limits *limits,
                            uint64_t now_ns, unsigned reasons,
                            rm_eviction_candidate *candidates, size_t count)
{
    rm_eviction_sort(candidates, count);
    *walk = (rm_eviction_walk){
        .limits = *limits,
        .now_ns = now_ns,
        .reasons = reasons,
        .candidates = candidates,
        .count = count,
    };
}

const rm_eviction_candidate *rm_eviction_walk_next(rm_eviction_walk *walk, uint64_t bytes,
                                                   uint64_t models, unsigned *reason)
{
    if (walk->next == walk->count)
        return NULL;
    const rm_eviction_candidate *candidate = &walk->candidates[walk->next];
    unsigned why = 0;
    if ((walk->reasons & RM_EVICT_EXPIRED) != 0 &&
        rm_eviction_deadline(&walk->limits, candidate->last_use_ns) <= walk->now_ns)
        why = RM_EVICT_EXPIRED;
    else if ((walk->reasons & RM_EVICT_OVER_BUDGET) != 0 &&
             rm_eviction_exceeded(&walk->limits, bytes, models) != 0)
        why = RM_EVICT_OVER_BUDGET;
    else if ((walk->reasons & RM_EVICT_EVERY) != 0)
        why = RM_EVICT_EVERY;
    if (why == 0)
        return NULL; /* stays the next: its deadline is the earliest left */
    walk->next++;
    *reason = why;
    return candidate;
}

uint64_t rm_eviction_walk_next_deadline(const rm_eviction_walk *walk)
{
    if (walk->next == walk->count)
        return UINT64_MAX;
    return rm_eviction_deadline(&walk->limits, walk->candidates[walk->next].last_use_ns);
}
