/* A pool's control segment: the small shared table through which the
 * processes that hold a pool's tensors agree on their lifetime.
 *
 * The owner creates it beside its data segment (the same name + ".ctl",
 * mode 0600) and is the only process that frees. Importers map it
 * read-write, because holding and releasing a tensor is a write:
 *
 *  - one slot per live tensor: a 64-bit state word (generation << 32 |
 *    holder mask) plus the tensor's binding: everything a descriptor says
 *    about it (extent, session, dtype, ndim, and digests of its shape and
 *    strides), so an importer can refuse a descriptor that names a live
 *    slot but describes it differently. Bit 0 of the mask is the owner's
 *    hold, bit i (1..31) is the importing context registered in holder
 *    entry i. Every change of the state word is a compare-and-swap, so a
 *    hold can only be taken while the generation matches and someone still
 *    holds the slot: a freed slot (mask 0) can never be revived, and a
 *    reused one has a new generation. A slot is one cache line, so holders
 *    of neighbouring tensors never contend.
 *  - holder entries: pid and start time of each importing context, so the
 *    owner can tell that a holder died and drop its bits.
 *  - a "pending" bitmap: whoever clears the last bit of a slot that is not
 *    the owner sets the slot's pending bit; the owner frees pending slots
 *    on its next call. The owner trusts none of this: it frees only slots
 *    it knows to be live, whose state it re-reads.
 *
 *  - a "retired" flag: the owner gave the pool up (destroyed its context
 *    while importers held tensors) or died and was reaped. An importer
 *    whose last hold on a retired pool goes unmaps it there and then, so
 *    the pages go back to /dev/shm as soon as nobody reads them.
 *
 * The layout is versioned by the header's magic and layout_version; every
 * importer checks it (and the segment's size) before using it.
 */
#ifndef RM_INTERNAL_SHM_CONTROL_H
#define RM_INTERNAL_SHM_CONTROL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "descriptor.h"
#include "rm_plugin.h"
#include "shm_segment.h"

#define RM_CONTROL_MAGIC 0x31434d52u /* "RMC1" */
/* 2: slots of one cache line with the tensor's binding; the retired flag.
 * 3: device_blocks (device tables use control segments too). */
#define RM_CONTROL_LAYOUT_VERSION 3
#define RM_CONTROL_OWNER_BIT ((uint32_t)1)
#define RM_CONTROL_HEADER_BYTES 4096
/* Most slots a control segment may have (shm.max_tensors's upper bound). */
#define RM_SHM_SLOTS_LIMIT 1048576u

typedef struct rm_control_holder {
    _Atomic uint32_t pid;        /* 0 = free; claimed by compare-and-swap */
    uint32_t reserved;
    _Atomic uint64_t start_time; /* written after the pid; 0 = not yet */
} rm_control_holder;

/* The groups of fields that different processes write live on separate
 * cache lines: the owner's statistics change on every allocation, the
 * pending count on every remote release, and the first line is read on
 * every import and release; sharing lines would make each of those a
 * cache miss in the other process. */
#define RM_CONTROL_LINE 64

typedef struct rm_control_header {
    /* Written once by the owner (retired: once more, by the owner or the
     * reaper of its namespace). */
    uint32_t magic;
    uint32_t layout_version;
    uint64_t pool_id;
    uint32_t owner_pid;
    uint32_t slot_count;
    uint64_t owner_start_time;
    uint64_t pool_bytes;          /* shm.pool_bytes of the owner */
    uint64_t reservation_bytes;   /* size of the data segment */
    _Atomic uint32_t retired;     /* 1: see the top of this file */
    /* Written by the owner, read by rmctl ls. */
    _Alignas(RM_CONTROL_LINE) _Atomic uint64_t committed_bytes;
    _Atomic uint64_t live_tensors;
    _Atomic uint64_t live_bytes;
    _Atomic uint64_t device_blocks; /* a device table's exportable blocks; 0 for a pool */
    /* Set by releasers, consumed by the owner. */
    _Alignas(RM_CONTROL_LINE) _Atomic uint64_t pending;
    _Alignas(RM_CONTROL_LINE) rm_control_holder holders[RM_TENSOR_MAX_HOLDERS + 1];
    /* [0] unused: the owner */
} rm_control_header;

_Static_assert(sizeof(rm_control_header) <= RM_CONTROL_HEADER_BYTES,
               "the header fits its page");

/* The binding fields are written by the owner before the state word
 * (release order) and never change while anyone holds the slot. */
typedef struct rm_control_slot {
    _Alignas(RM_CONTROL_LINE) _Atomic uint64_t state; /* generation << 32 | holder mask */
    _Atomic uint64_t offset;
    _Atomic uint64_t nbytes;
    _Atomic uint64_t session;
    _Atomic uint64_t shape_digest;   /* rm_control_digest of shape[0..ndim) */
    _Atomic uint64_t strides_digest; /* ... and of strides[0..ndim) */
    _Atomic uint32_t dtype;          /* code | bits << 8 | lanes << 16 */
    _Atomic uint32_t ndim;
} rm_control_slot;

_Static_assert(sizeof(rm_control_slot) == RM_CONTROL_LINE, "a slot is one cache line");

/** A mapped control segment. */
typedef struct rm_control {
    rm_control_header *header;
    _Atomic uint64_t *pending_bits; /* slot_count bits */
    rm_control_slot *slots;
    size_t mapped_bytes;
    uint32_t slot_count;
} rm_control;

static inline uint32_t rm_control_generation(uint64_t state)
{
    return (uint32_t)(state >> 32);
}

static inline uint32_t rm_control_mask(uint64_t state)
{
    return (uint32_t)state;
}

/** Bytes of a control segment with `slot_count` slots. */
size_t rm_control_size(uint32_t slot_count);

/**
 * Creates segment `control_name` (the pool's RM_SEGMENT_POOL_CONTROL name,
 * rm_segment_name_sibling() of its data segment's) with rm_segment_create()
 * (O_EXCL, O_NOFOLLOW, 0600, committed), maps it and writes its header.
 * Errors go to `error_owner`: RM_E_SYSTEM, RM_E_NO_MEMORY (/dev/shm full:
 * the segment is committed with fallocate). On failure nothing is left.
 */
int32_t rm_control_create(const char *control_name, uint64_t pool_id, uint32_t slot_count,
                          uint64_t pool_bytes, uint64_t reservation_bytes,
                          const void *error_owner, rm_control *out);

/**
 * Opens and maps an existing control segment read-write, after proving it
 * is a regular 0600 file of the effective user of the expected size with a
 * valid header. Returns RM_OK; RM_E_STALE_DESCRIPTOR when it does not
 * exist; RM_E_INVALID_DESCRIPTOR when it is not what it must be (the
 * message says what); RM_E_SYSTEM.
 */
int32_t rm_control_open(const char *control_name, const void *error_owner,
                        rm_control *out);

/** Unmaps (the segment stays). */
void rm_control_close(rm_control *control);

/**
 * Opens a pool's data or control segment by name for reading or writing, with
 * O_NOFOLLOW, and proves it is a regular file of the effective user with
 * mode 0600. Returns the fd and its size, or -1 with errno (ENOENT: gone;
 * EPERM: not ours or not 0600; EINVAL: not a regular file).
 */
static inline int rm_pool_segment_open(const char *name, bool writable, uint64_t *out_size)
{
    return rm_segment_open_owned(name, writable, S_IRUSR | S_IWUSR, out_size);
}

/**
 * The error code for a failed rm_pool_segment_open(): the segment is
 * gone (RM_E_STALE_DESCRIPTOR), is not what the plugin makes: a symlink,
 * a FIFO, another user's or a non-0600 file (RM_E_INVALID_DESCRIPTOR), or
 * the system failed (RM_E_SYSTEM). One classification for both segments
 * of a pool, so that they cannot drift apart; it is the pool's, in
 * descriptor terms, which is why it lives here and not in shm/.
 */
int32_t rm_pool_segment_error_code(int err);

/** Claims a holder entry for the calling process; its index (1..31), or
 *  0 when all are taken. */
uint32_t rm_control_claim_holder(rm_control *control);

/** Frees holder entry `index` (its bits must be cleared already). */
void rm_control_release_holder(rm_control *control, uint32_t index);

/**
 * Adds holder bit `bit` to slot `slot` if its generation is `generation`
 * and someone holds it. True on success.
 */
bool rm_control_hold(rm_control *control, uint32_t slot, uint32_t generation,
                     uint32_t bit);

/**
 * Removes holder bit `bit` from slot `slot`. True when that left no
 * holder (the slot is then dead: the owner must free it). A non-owner
 * marks it pending for the owner itself.
 */
bool rm_control_drop(rm_control *control, uint32_t slot, uint32_t bit, bool mark_pending);

/** Owner: makes slot `slot` live with `generation`, the owner's hold and
 *  the binding of tensor `d` (binding first, then the state, with release
 *  order). */
void rm_control_publish(rm_control *control, uint32_t slot, uint32_t generation,
                        const rm_descriptor *d);

/**
 * The first field in which descriptor `d` differs from what slot `slot`
 * records for its tensor ("offset", "nbytes", "session", "dtype", "ndim",
 * "shape", "strides"), or NULL when they agree. Meaningful while the
 * caller holds the slot (nothing changes it then).
 */
const char *rm_control_binding_mismatch(const rm_control *control, uint32_t slot,
                                        const rm_descriptor *d);

/** Marks the pool retired (see the top of this file). */
void rm_control_retire(rm_control *control);

/** True once the pool is retired. */
static inline bool rm_control_retired(const rm_control *control)
{
    return atomic_load_explicit(&control->header->retired, memory_order_acquire) != 0;
}

/**
 * Marks the control segment `control_name` retired if it is a valid
 * control segment of this user (the reaper of a dead owner's pool, so that
 * importers unmap it at their last release). Best effort: false if it
 * could not.
 */
bool rm_control_retire_by_name(const char *control_name);

/** True when releasers left pending marks (one load; inline because the
 *  owner asks on every call). */
static inline bool rm_control_has_pending(const rm_control *control)
{
    return atomic_load_explicit(&control->header->pending, memory_order_acquire) != 0;
}

/**
 * Owner: takes every pending mark and calls `visit(user, slot)` for each.
 * Cheap when nothing is pending (one load).
 */
void rm_control_take_pending(rm_control *control, void (*visit)(void *user, uint32_t slot),
                             void *user);

#endif
