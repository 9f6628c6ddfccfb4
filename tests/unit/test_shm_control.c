/* A pool's control segment, through shm_control.h alone: the state word's
 * compare-and-swap protocol (a hold needs the slot's generation and a
 * holder left, so a freed slot cannot be revived and a reused one is not
 * taken for the old tensor; exactly one drop learns that it was the last,
 * and a non-owner's marks the slot pending for the owner, who takes each
 * mark once), holder entries, the binding a descriptor is checked against,
 * and the same rules with threads racing on one slot. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "process_identity.h"
#include "shm_control.h"
#include "shm_cleanup.h"

static const int error_owner_token;
#define OWNER ((const void *)&error_owner_token)

#define SLOTS 256u

/* Segments of this test ("/rmut-ctl-<pid>.<n>.ctl"), removed by the
 * suite's fini even when the test failed. */
static char segment_prefix[64];
static unsigned segments_made;

static void name_segments(void)
{
    snprintf(segment_prefix, sizeof segment_prefix, "rmut-ctl-%ld.", (long)getpid());
}

static void remove_segments(void)
{
    shm_unlink_prefix(segment_prefix);
}

TestSuite(shm_control, .init = name_segments, .fini = remove_segments, .timeout = 60);

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                 */
/* ------------------------------------------------------------------------ */

static rm_control make_control(void)
{
    char name[96];
    snprintf(name, sizeof name, "/%s%u.ctl", segment_prefix, segments_made++);
    rm_control control;
    int32_t status = rm_control_create(name, 42, SLOTS, 1 << 20, 2 << 20, OWNER, &control);
    cr_assert_eq(status, RM_OK, "rm_control_create: %s: %s", rm_error_name(status),
                 rm_error_last(OWNER));
    cr_assert_eq(control.slot_count, SLOTS);
    return control;
}

static rm_descriptor tensor(void)
{
    rm_descriptor d = {
        .ndim = 2,
        .dtype = {.code = RM_DTYPE_FLOAT, .bits = 32, .lanes = 1},
        .offset = 4096,
        .nbytes = 3 * 8 * 4,
        .session = 7,
        .shape = {3, 8},
        .strides = {8, 1},
    };
    return d;
}

static uint64_t state_of(const rm_control *control, uint32_t slot)
{
    return atomic_load(&control->slots[slot].state);
}

static uint64_t live(uint32_t generation, uint32_t mask)
{
    return (uint64_t)generation << 32 | mask;
}

/* Records each slot take_pending() visits. */
typedef struct visits {
    uint32_t count[SLOTS];
    uint32_t total;
} visits;

static void note_visit(void *user, uint32_t slot)
{
    visits *seen = user;
    cr_assert_lt(slot, SLOTS, "take_pending visited slot %u", slot);
    seen->count[slot]++;
    seen->total++;
}

static visits take_pending(rm_control *control)
{
    visits seen;
    memset(&seen, 0, sizeof seen);
    rm_control_take_pending(control, note_visit, &seen);
    return seen;
}

/* ------------------------------------------------------------------------ */
/* One thread                                                               */
/* ------------------------------------------------------------------------ */

Test(shm_control, publish_makes_the_owner_the_only_holder)
{
    rm_control control = make_control();
    rm_descriptor d = tensor();
    rm_control_publish(&control, 5, 3, &d);
    cr_expect_eq(state_of(&control, 5), live(3, RM_CONTROL_OWNER_BIT));
    cr_expect_eq(rm_control_generation(state_of(&control, 5)), 3);
    cr_expect_eq(rm_control_mask(state_of(&control, 5)), RM_CONTROL_OWNER_BIT);
    cr_expect_null(rm_control_binding_mismatch(&control, 5, &d));
    cr_expect_eq(state_of(&control, 4), 0, "a neighbour is untouched");
    rm_control_close(&control);
}

/* The descriptor fields a slot's binding covers, as the mismatch names
 * them. (Parameters cross into the test's process as bytes, so an index,
 * not a pointer.) */
static const char *const binding_fields[] = {"offset", "nbytes", "session", "dtype",
                                             "ndim",   "shape",  "strides"};
enum { BINDING_FIELDS = sizeof binding_fields / sizeof binding_fields[0] };

static void change_field(rm_descriptor *d, int field)
{
    switch (field) {
    case 0: d->offset += 64; break;
    case 1: d->nbytes -= 4; break;
    case 2: d->session = 8; break;
    case 3: d->dtype.bits = 16; break;
    case 4: d->ndim = 3; break;
    case 5: d->shape[1] = 9; break;
    default: d->strides[0] = 16; break;
    }
}

ParameterizedTestParameters(shm_control, a_descriptor_that_describes_another_tensor_is_named)
{
    static int fields[BINDING_FIELDS] = {0, 1, 2, 3, 4, 5, 6};
    return cr_make_param_array(int, fields, BINDING_FIELDS);
}

ParameterizedTest(int *field, shm_control, a_descriptor_that_describes_another_tensor_is_named)
{
    rm_control control = make_control();
    rm_descriptor d = tensor();
    rm_control_publish(&control, 9, 1, &d);
    change_field(&d, *field);
    const char *mismatch = rm_control_binding_mismatch(&control, 9, &d);
    cr_assert_not_null(mismatch, "a changed %s went unnoticed", binding_fields[*field]);
    cr_expect_str_eq(mismatch, binding_fields[*field]);
    rm_control_close(&control);
}

Test(shm_control, a_hold_needs_the_generation_and_a_holder)
{
    rm_control control = make_control();
    rm_descriptor d = tensor();
    cr_expect_not(rm_control_hold(&control, 2, 0, 1u << 1), "a never used slot is dead");
    rm_control_publish(&control, 2, 7, &d);
    cr_expect_not(rm_control_hold(&control, 2, 6, 1u << 1), "an older generation");
    cr_expect_not(rm_control_hold(&control, 2, 8, 1u << 1), "a newer generation");
    cr_expect_eq(state_of(&control, 2), live(7, RM_CONTROL_OWNER_BIT),
                 "refused holds leave the state alone");
    cr_expect(rm_control_hold(&control, 2, 7, 1u << 1));
    cr_expect(rm_control_hold(&control, 2, 7, 1u << 31));
    cr_expect_eq(state_of(&control, 2), live(7, RM_CONTROL_OWNER_BIT | 1u << 1 | 1u << 31));
    rm_control_close(&control);
}

Test(shm_control, only_the_last_drop_reports_a_dead_slot)
{
    rm_control control = make_control();
    rm_descriptor d = tensor();
    rm_control_publish(&control, 1, 1, &d);
    cr_assert(rm_control_hold(&control, 1, 1, 1u << 2));
    cr_assert(rm_control_hold(&control, 1, 1, 1u << 4));
    cr_expect_not(rm_control_drop(&control, 1, 1u << 2, true));
    cr_expect_not(rm_control_drop(&control, 1, 1u << 2, true), "a bit dropped twice");
    cr_expect_not(rm_control_drop(&control, 1, 1u << 3, true), "a bit never held");
    cr_expect_eq(state_of(&control, 1), live(1, RM_CONTROL_OWNER_BIT | 1u << 4));
    cr_expect_not(rm_control_drop(&control, 1, RM_CONTROL_OWNER_BIT, false));
    cr_expect(rm_control_drop(&control, 1, 1u << 4, true), "the last holder's drop");
    cr_expect_eq(state_of(&control, 1), live(1, 0), "dead, generation kept");
    cr_expect_not(rm_control_drop(&control, 1, 1u << 4, true), "dropped on a dead slot");
    rm_control_close(&control);
}

Test(shm_control, a_freed_slot_cannot_be_revived_and_a_reused_one_has_a_new_generation)
{
    rm_control control = make_control();
    rm_descriptor d = tensor();
    rm_control_publish(&control, 3, 1, &d);
    cr_assert(rm_control_drop(&control, 3, RM_CONTROL_OWNER_BIT, false));
    for (uint32_t bit = 0; bit < 32; bit++)
        cr_expect_not(rm_control_hold(&control, 3, 1, 1u << bit),
                      "holder bit %u revived a freed slot", bit);
    cr_expect_eq(state_of(&control, 3), live(1, 0));
    rm_control_publish(&control, 3, 2, &d);
    cr_expect_not(rm_control_hold(&control, 3, 1, 1u << 1),
                  "a descriptor of the freed tensor took the reused slot");
    cr_expect(rm_control_hold(&control, 3, 2, 1u << 1));
    rm_control_close(&control);
}

Test(shm_control, pending_marks_come_from_non_owners_and_are_taken_once)
{
    rm_control control = make_control();
    rm_descriptor d = tensor();
    const uint32_t slots[] = {3, 64, 130, 255};
    for (size_t i = 0; i < 4; i++) {
        rm_control_publish(&control, slots[i], 1, &d);
        cr_assert(rm_control_hold(&control, slots[i], 1, 1u << 1));
        cr_assert_not(rm_control_drop(&control, slots[i], RM_CONTROL_OWNER_BIT, false));
    }
    cr_expect_not(rm_control_has_pending(&control), "no mark before a last drop");
    for (size_t i = 0; i < 3; i++)
        cr_assert(rm_control_drop(&control, slots[i], 1u << 1, true));
    /* The owner's own last drop marks nothing: it frees at once. */
    rm_control_publish(&control, 7, 1, &d);
    cr_assert(rm_control_drop(&control, 7, RM_CONTROL_OWNER_BIT, false));
    cr_expect(rm_control_has_pending(&control));
    visits seen = take_pending(&control);
    cr_expect_eq(seen.total, 3);
    for (size_t i = 0; i < 3; i++)
        cr_expect_eq(seen.count[slots[i]], 1, "slot %u visited %u times", slots[i],
                     seen.count[slots[i]]);
    cr_expect_not(rm_control_has_pending(&control));
    cr_expect_eq(take_pending(&control).total, 0, "a mark is taken once");
    cr_assert(rm_control_drop(&control, slots[3], 1u << 1, true));
    seen = take_pending(&control);
    cr_expect(seen.total == 1 && seen.count[slots[3]] == 1);
    rm_control_close(&control);
}

Test(shm_control, holder_entries_are_claimed_once_each_and_freed)
{
    rm_control control = make_control();
    bool taken[RM_TENSOR_MAX_HOLDERS + 1] = {false};
    for (uint32_t i = 0; i < RM_TENSOR_MAX_HOLDERS; i++) {
        uint32_t index = rm_control_claim_holder(&control);
        cr_assert(index >= 1 && index <= RM_TENSOR_MAX_HOLDERS, "claimed index %u", index);
        cr_expect_not(taken[index], "index %u claimed twice", index);
        taken[index] = true;
        const rm_control_holder *holder = &control.header->holders[index];
        cr_expect_eq(atomic_load(&holder->pid), (uint32_t)getpid());
        cr_expect_eq(atomic_load(&holder->start_time), rm_process_self_start_time());
    }
    cr_expect_eq(rm_control_claim_holder(&control), 0, "all %d taken", RM_TENSOR_MAX_HOLDERS);
    rm_control_release_holder(&control, 5);
    cr_expect_eq(atomic_load(&control.header->holders[5].pid), 0);
    cr_expect_eq(rm_control_claim_holder(&control), 5, "the freed entry is claimed again");
    rm_control_close(&control);
}

Test(shm_control, another_mapping_sees_the_same_protocol)
{
    rm_control owner = make_control();
    rm_descriptor d = tensor();
    rm_control_publish(&owner, 11, 4, &d);
    char name[128];
    snprintf(name, sizeof name, "/%s%u.ctl", segment_prefix, segments_made - 1);
    rm_control importer;
    int32_t status = rm_control_open(name, OWNER, &importer);
    cr_assert_eq(status, RM_OK, "rm_control_open: %s", rm_error_last(OWNER));
    cr_expect(rm_control_hold(&importer, 11, 4, 1u << 3));
    cr_expect_null(rm_control_binding_mismatch(&importer, 11, &d));
    cr_expect_not(rm_control_drop(&owner, 11, RM_CONTROL_OWNER_BIT, false));
    cr_expect(rm_control_drop(&importer, 11, 1u << 3, true));
    visits seen = take_pending(&owner);
    cr_expect(seen.total == 1 && seen.count[11] == 1, "the owner sees the importer's mark");
    cr_expect_not(rm_control_retired(&importer));
    rm_control_retire(&owner);
    cr_expect(rm_control_retired(&importer));
    rm_control_close(&importer);
    rm_control_close(&owner);
}

/* ------------------------------------------------------------------------ */
/* Threads racing                                                           */
/* ------------------------------------------------------------------------ */

#define RACE_SLOTS 3
#define HOLDERS_PER_SLOT 3
#define RACE_ROUNDS 200
#define RACE_TRIES 2000
#define RACE_THREADS (RACE_SLOTS * HOLDERS_PER_SLOT + 1)

/* Three slots whose pending bits share one word (1 and 62) or not (65). */
static const uint32_t race_slots[RACE_SLOTS] = {1, 62, 65};

typedef struct race {
    rm_control control;
    pthread_barrier_t start;
    pthread_barrier_t end;
    _Atomic uint32_t generation;         /* of the round */
    _Atomic int last_drops[RACE_SLOTS];  /* by a holder thread, this round */
    _Atomic int stale_holds;             /* holds of the previous generation */
    _Atomic int holds_after_death[RACE_SLOTS];
} race;

typedef struct racer {
    race *race;
    int index; /* slot index, or -1 for the stale-generation thread */
    uint32_t bit;
} racer;

/* Holds and drops until the slot is dead (a hold fails) or the tries run
 * out, and counts the drops that were last. A slot seen dead must stay
 * dead for the round: a later successful hold would be a revival. */
static void hold_and_drop(race *r, const racer *me, uint32_t generation)
{
    uint32_t slot = race_slots[me->index];
    bool seen_dead = false;
    for (int attempt = 0; attempt < RACE_TRIES; attempt++) {
        if (!rm_control_hold(&r->control, slot, generation, me->bit)) {
            seen_dead = true;
            break;
        }
        if (rm_control_drop(&r->control, slot, me->bit, true))
            atomic_fetch_add(&r->last_drops[me->index], 1);
    }
    if (seen_dead && rm_control_hold(&r->control, slot, generation, me->bit)) {
        atomic_fetch_add(&r->holds_after_death[me->index], 1);
        (void)rm_control_drop(&r->control, slot, me->bit, true);
    }
}

/* Tries the previous round's generation on every slot all round long. */
static void hold_stale(race *r, const racer *me, uint32_t generation)
{
    for (int attempt = 0; attempt < RACE_TRIES; attempt++) {
        uint32_t slot = race_slots[attempt % RACE_SLOTS];
        if (rm_control_hold(&r->control, slot, generation - 1, me->bit)) {
            atomic_fetch_add(&r->stale_holds, 1);
            (void)rm_control_drop(&r->control, slot, me->bit, true);
        }
    }
}

static void *race_thread(void *argument)
{
    racer *me = argument;
    race *r = me->race;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_barrier_wait(&r->start);
        uint32_t generation = atomic_load(&r->generation);
        if (me->index < 0)
            hold_stale(r, me, generation);
        else
            hold_and_drop(r, me, generation);
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

/* One round's verdict, from the owner's side, once every thread is done. */
static void check_round(race *r, int round, uint32_t generation, int *owner_last)
{
    visits seen = take_pending(&r->control);
    uint32_t marks = 0;
    for (int i = 0; i < RACE_SLOTS; i++) {
        uint32_t slot = race_slots[i];
        int by_holders = atomic_exchange(&r->last_drops[i], 0);
        cr_assert_eq(by_holders + owner_last[i], 1,
                     "round %d, slot %u: %d last drops by holders, %d by the owner", round,
                     slot, by_holders, owner_last[i]);
        cr_assert_eq(state_of(&r->control, slot), live(generation, 0),
                     "round %d, slot %u: state %#llx after every holder left", round, slot,
                     (unsigned long long)state_of(&r->control, slot));
        cr_assert_eq(seen.count[slot], (uint32_t)by_holders,
                     "round %d, slot %u: visited %u times for %d holder last drops", round,
                     slot, seen.count[slot], by_holders);
        marks += (uint32_t)by_holders;
        cr_assert_eq(atomic_load(&r->holds_after_death[i]), 0,
                     "round %d, slot %u: a dead slot was held again", round, slot);
    }
    cr_assert_eq(seen.total, marks);
    cr_assert_eq(atomic_load(&r->stale_holds), 0,
                 "round %d: a hold with the previous generation succeeded", round);
}

Test(shm_control, racing_holders_never_revive_a_slot_and_one_drop_is_last)
{
    static race r;
    r.control = make_control();
    pthread_barrier_init(&r.start, NULL, RACE_THREADS + 1);
    pthread_barrier_init(&r.end, NULL, RACE_THREADS + 1);
    racer racers[RACE_THREADS];
    pthread_t threads[RACE_THREADS];
    for (int t = 0; t < RACE_THREADS; t++) {
        bool stale = t == RACE_THREADS - 1;
        racers[t] = (racer){.race = &r,
                            .index = stale ? -1 : t / HOLDERS_PER_SLOT,
                            .bit = 1u << (1 + (stale ? HOLDERS_PER_SLOT : t % HOLDERS_PER_SLOT))};
        cr_assert_eq(pthread_create(&threads[t], NULL, race_thread, &racers[t]), 0);
    }
    rm_descriptor d = tensor();
    for (int round = 0; round < RACE_ROUNDS; round++) {
        uint32_t generation = (uint32_t)round + 2;
        atomic_store(&r.generation, generation);
        for (int i = 0; i < RACE_SLOTS; i++)
            rm_control_publish(&r.control, race_slots[i], generation, &d);
        pthread_barrier_wait(&r.start);
        /* The owner lets go while the holders race. */
        int owner_last[RACE_SLOTS];
        for (int i = 0; i < RACE_SLOTS; i++)
            owner_last[i] =
                rm_control_drop(&r.control, race_slots[i], RM_CONTROL_OWNER_BIT, false) ? 1 : 0;
        pthread_barrier_wait(&r.end);
        check_round(&r, round, generation, owner_last);
    }
    for (int t = 0; t < RACE_THREADS; t++)
        pthread_join(threads[t], NULL);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.end);
    rm_control_close(&r.control);
}

#define CLAIMERS 8

typedef struct claim_race {
    rm_control *control;
    pthread_barrier_t start;
    uint32_t claimed[CLAIMERS][RM_TENSOR_MAX_HOLDERS];
} claim_race;

typedef struct claimer {
    claim_race *race;
    int index;
} claimer;

static void *claim_thread(void *argument)
{
    claimer *me = argument;
    pthread_barrier_wait(&me->race->start);
    for (int i = 0; i < RM_TENSOR_MAX_HOLDERS; i++)
        me->race->claimed[me->index][i] = rm_control_claim_holder(me->race->control);
    return NULL;
}

Test(shm_control, racing_claims_hand_each_holder_entry_out_once)
{
    rm_control control = make_control();
    static claim_race r;
    r.control = &control;
    pthread_barrier_init(&r.start, NULL, CLAIMERS);
    claimer claimers[CLAIMERS];
    pthread_t threads[CLAIMERS];
    for (int t = 0; t < CLAIMERS; t++) {
        claimers[t] = (claimer){.race = &r, .index = t};
        cr_assert_eq(pthread_create(&threads[t], NULL, claim_thread, &claimers[t]), 0);
    }
    for (int t = 0; t < CLAIMERS; t++)
        pthread_join(threads[t], NULL);
    pthread_barrier_destroy(&r.start);
    int owners[RM_TENSOR_MAX_HOLDERS + 1] = {0};
    int granted = 0;
    for (int t = 0; t < CLAIMERS; t++) {
        for (int i = 0; i < RM_TENSOR_MAX_HOLDERS; i++) {
            uint32_t index = r.claimed[t][i];
            cr_assert_leq(index, RM_TENSOR_MAX_HOLDERS);
            if (index == 0)
                continue;
            owners[index]++;
            granted++;
        }
    }
    cr_expect_eq(granted, RM_TENSOR_MAX_HOLDERS, "%d entries granted", granted);
    for (uint32_t index = 1; index <= RM_TENSOR_MAX_HOLDERS; index++)
        cr_expect_eq(owners[index], 1, "entry %u granted %d times", index, owners[index]);
    rm_control_close(&control);
}
