/* The LRU/TTL/budget policy both registry scopes use (eviction_policy.h),
 * alone: its order, its reasons and where a walk stops. The scopes' own
 * tests (unit/test_registry.c, integration/test_registry_node.c) check that they follow
 * what it hands out. */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdlib.h>

#include "eviction_policy.h"

#define MIB (UINT64_C(1) << 20)

static const rm_eviction_limits no_limits = {0, 0, 0};

Test(eviction_policy, a_zero_limit_is_unlimited)
{
    cr_assert_eq(rm_eviction_exceeded(&no_limits, UINT64_MAX, UINT64_MAX), 0u);
    cr_assert_eq(rm_eviction_deadline(&no_limits, 5), UINT64_MAX);
}

Test(eviction_policy, a_budget_is_exceeded_only_above_it)
{
    rm_eviction_limits limits = {.max_bytes = 10 * MIB, .max_models = 3};
    cr_assert_eq(rm_eviction_exceeded(&limits, 10 * MIB, 3), 0u, "at the limit is within it");
    cr_assert_eq(rm_eviction_exceeded(&limits, 10 * MIB + 1, 3), (unsigned)RM_BUDGET_BYTES);
    cr_assert_eq(rm_eviction_exceeded(&limits, 0, 4), (unsigned)RM_BUDGET_MODELS);
    cr_assert_eq(rm_eviction_exceeded(&limits, UINT64_MAX, 4),
                 (unsigned)(RM_BUDGET_BYTES | RM_BUDGET_MODELS));
}

Test(eviction_policy, deadlines_saturate)
{
    rm_eviction_limits limits = {.ttl_ns = 1000};
    cr_assert_eq(rm_eviction_deadline(&limits, 0), 1000u);
    cr_assert_eq(rm_eviction_deadline(&limits, UINT64_MAX - 1000), UINT64_MAX);
    cr_assert_eq(rm_eviction_deadline(&limits, UINT64_MAX - 999), UINT64_MAX);
    cr_assert_eq(rm_eviction_deadline(&limits, UINT64_MAX), UINT64_MAX);
}

static int reference_order(const void *a, const void *b)
{
    const rm_eviction_candidate *x = a, *y = b;
    if (x->last_use_ns != y->last_use_ns)
        return x->last_use_ns < y->last_use_ns ? -1 : 1;
    return x->tiebreak < y->tiebreak ? -1 : x->tiebreak > y->tiebreak;
}

/* Every size from empty to a few hundred, with many equal times (so the
 * tie-break decides), against qsort with the documented order. */
Test(eviction_policy, sorts_least_recently_used_first_then_by_tiebreak)
{
    unsigned seed = 12345;
    for (size_t count = 0; count <= 300; count += count < 20 ? 1 : 37) {
        rm_eviction_candidate *mine = calloc(count + 1, sizeof *mine);
        rm_eviction_candidate *reference = calloc(count + 1, sizeof *reference);
        cr_assert(mine != NULL && reference != NULL);
        for (size_t i = 0; i < count; i++) {
            seed = seed * 1103515245u + 12345u;
            mine[i] = (rm_eviction_candidate){
                .last_use_ns = (seed >> 16) % 8, /* few distinct times */
                .tiebreak = count - i,           /* unique */
                .id = i,
            };
        }
        for (size_t i = 0; i < count; i++)
            reference[i] = mine[i];
        rm_eviction_sort(mine, count);
        qsort(reference, count, sizeof *reference, reference_order);
        for (size_t i = 0; i < count; i++)
            cr_assert_eq(mine[i].id, reference[i].id, "count %zu, position %zu", count, i);
        free(mine);
        free(reference);
    }
}

Test(eviction_policy, an_empty_walk_evicts_nothing)
{
    rm_eviction_walk walk;
    rm_eviction_limits limits = {.ttl_ns = 1, .max_models = 1};
    rm_eviction_walk_begin(&walk, &limits, 100, RM_EVICT_EXPIRED | RM_EVICT_OVER_BUDGET |
                                                    RM_EVICT_EVERY, NULL, 0);
    unsigned reason = 0;
    cr_assert_null(rm_eviction_walk_next(&walk, 5, 5, &reason));
    cr_assert_eq(rm_eviction_walk_next_deadline(&walk), UINT64_MAX);
}

/* TTL 100 at time 1000: the models used at 850 and 900 have expired (900 +
 * 100 is exactly now: expired), 950 and 990 have not. The walk hands out
 * the expired ones oldest first and stops at 950, whose deadline is then
 * the next one. */
Test(eviction_policy, ttl_evicts_what_expired_oldest_first_and_names_the_next_deadline)
{
    rm_eviction_candidate candidates[] = {
        {.last_use_ns = 990, .tiebreak = 1, .id = 'd'},
        {.last_use_ns = 900, .tiebreak = 2, .id = 'b'},
        {.last_use_ns = 950, .tiebreak = 3, .id = 'c'},
        {.last_use_ns = 850, .tiebreak = 4, .id = 'a'},
    };
    rm_eviction_limits limits = {.ttl_ns = 100};
    rm_eviction_walk walk;
    rm_eviction_walk_begin(&walk, &limits, 1000, RM_EVICT_EXPIRED, candidates, 4);
    unsigned reason = 0;
    const rm_eviction_candidate *next = rm_eviction_walk_next(&walk, 0, 4, &reason);
    cr_assert(next != NULL && next->id == 'a' && reason == RM_EVICT_EXPIRED);
    next = rm_eviction_walk_next(&walk, 0, 3, &reason);
    cr_assert(next != NULL && next->id == 'b' && reason == RM_EVICT_EXPIRED,
              "a deadline equal to now has expired");
    cr_assert_null(rm_eviction_walk_next(&walk, 0, 2, &reason));
    cr_assert_eq(rm_eviction_walk_next_deadline(&walk), 1050u, "c's deadline comes next");
    cr_assert_null(rm_eviction_walk_next(&walk, 0, 2, &reason), "a stopped walk stays stopped");
}

/* Budget of 2 models and 100 bytes: the walk evicts least recently used
 * first while the totals the caller passes after each eviction are over,
 * and stops as soon as they are within. */
Test(eviction_policy, a_budget_evicts_lru_first_until_the_totals_fit)
{
    rm_eviction_candidate candidates[] = {
        {.last_use_ns = 30, .tiebreak = 3, .id = 3},
        {.last_use_ns = 10, .tiebreak = 1, .id = 1},
        {.last_use_ns = 20, .tiebreak = 2, .id = 2},
        {.last_use_ns = 40, .tiebreak = 4, .id = 4},
    };
    rm_eviction_limits limits = {.max_bytes = 100, .max_models = 2};
    rm_eviction_walk walk;
    rm_eviction_walk_begin(&walk, &limits, 50, RM_EVICT_OVER_BUDGET, candidates, 4);
    uint64_t bytes = 4 * 30, models = 4; /* each model is 30 bytes */
    uintptr_t evicted[4];
    size_t count = 0;
    unsigned reason = 0;
    for (const rm_eviction_candidate *c; (c = rm_eviction_walk_next(&walk, bytes, models,
                                                                     &reason)) != NULL;) {
        cr_assert_eq(reason, (unsigned)RM_EVICT_OVER_BUDGET);
        evicted[count++] = c->id;
        bytes -= 30;
        models -= 1;
    }
    cr_assert_eq(count, 2u, "4 models over a budget of 2: two go");
    cr_assert(evicted[0] == 1 && evicted[1] == 2, "oldest first: %zu, %zu",
              (size_t)evicted[0], (size_t)evicted[1]);
    cr_assert_eq(rm_eviction_walk_next_deadline(&walk), UINT64_MAX, "no TTL: no deadline");
}

/* A candidate that has expired and is over budget too counts as expired;
 * one that is only over budget counts as such. */
Test(eviction_policy, expired_comes_before_over_budget)
{
    rm_eviction_candidate candidates[] = {
        {.last_use_ns = 0, .tiebreak = 1, .id = 1},
        {.last_use_ns = 90, .tiebreak = 2, .id = 2},
    };
    rm_eviction_limits limits = {.ttl_ns = 50, .max_models = 1};
    rm_eviction_walk walk;
    rm_eviction_walk_begin(&walk, &limits, 100, RM_EVICT_EXPIRED | RM_EVICT_OVER_BUDGET,
                           candidates, 2);
    unsigned reason = 0;
    const rm_eviction_candidate *c = rm_eviction_walk_next(&walk, 0, 3, &reason);
    cr_assert(c != NULL && c->id == 1 && reason == RM_EVICT_EXPIRED);
    c = rm_eviction_walk_next(&walk, 0, 2, &reason);
    cr_assert(c != NULL && c->id == 2 && reason == RM_EVICT_OVER_BUDGET);
}

/* Only the reasons asked for count: a sweep that asks for TTL alone
 * leaves an over-budget model that has not expired, and a budget pass
 * leaves an expired model when the totals fit. */
Test(eviction_policy, only_the_reasons_asked_for_count)
{
    rm_eviction_candidate candidates[] = {{.last_use_ns = 0, .tiebreak = 1, .id = 1}};
    rm_eviction_limits limits = {.ttl_ns = 1000, .max_models = 1};
    rm_eviction_walk walk;
    unsigned reason = 0;
    rm_eviction_walk_begin(&walk, &limits, 10, RM_EVICT_EXPIRED, candidates, 1);
    cr_assert_null(rm_eviction_walk_next(&walk, 0, 5, &reason), "over budget, not expired");
    rm_eviction_walk_begin(&walk, &limits, 5000, RM_EVICT_OVER_BUDGET, candidates, 1);
    cr_assert_null(rm_eviction_walk_next(&walk, 0, 1, &reason), "expired, within budget");
}

/* model_evict(NULL) and room in a full table: every candidate, in LRU
 * order, each handed out once. */
Test(eviction_policy, every_hands_out_each_candidate_once_in_lru_order)
{
    enum { COUNT = 64 };
    rm_eviction_candidate candidates[COUNT];
    for (size_t i = 0; i < COUNT; i++)
        candidates[i] = (rm_eviction_candidate){
            .last_use_ns = (i * 37) % COUNT, .tiebreak = i, .id = i};
    rm_eviction_walk walk;
    rm_eviction_walk_begin(&walk, &no_limits, 0, RM_EVICT_EVERY, candidates, COUNT);
    bool seen[COUNT] = {false};
    uint64_t previous = 0;
    unsigned reason = 0;
    size_t handed = 0;
    for (const rm_eviction_candidate *c;
         (c = rm_eviction_walk_next(&walk, 0, 0, &reason)) != NULL; handed++) {
        cr_assert_eq(reason, (unsigned)RM_EVICT_EVERY);
        cr_assert(!seen[c->id], "candidate %zu handed out twice", (size_t)c->id);
        seen[c->id] = true;
        cr_assert_geq(c->last_use_ns, previous);
        previous = c->last_use_ns;
    }
    cr_assert_eq(handed, (size_t)COUNT);
}
