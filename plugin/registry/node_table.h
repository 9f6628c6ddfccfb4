/* The node registry's shared table: its layout in /dev/shm, shared by every
 * process of a namespace (and read by tests that must break it on
 * purpose, e.g. die holding its lock).
 *
 * File /dev/shm/rmreg.<namespace>.table, 0600, committed with fallocate:
 *   [header, 4096 bytes][attachers[RM_NODE_TABLE_ATTACHERS], 16 KiB]
 *   [slot_hash[capacity], rounded up to 4096][entries]
 * slot_hash[i] is 0 for an empty slot, else the key's hash with the low bit
 * set: a lookup scans this dense array, not the (large) entries.
 * Every field is read and written with the table lock held, except an
 * entry's `wake` futex word (atomic) and the header's immutable prefix.
 *
 * Lifetime. attachers[] records, per process (pid + start time, so that a
 * reused pid is not taken for the holder), how many of its node-scope
 * contexts use the table. The table is removed when nothing is left: no
 * READY or LOADING entry and no live attacher (a dead one no longer
 * counts: a SIGKILLed process cannot pin the table). Removal sets
 * `retired` and unlinks the name, both under the lock. An attacher
 * registers under the same lock and checks `retired` first, so it either
 * registered before the decision (and the table stays) or finds the table
 * retired (and opens the name again, getting the new table or creating
 * one). A creator registers itself in its table before linking it into
 * place. So at any time at most one table of a namespace is linked and
 * not retired, and every live context uses that one. A remover killed
 * between setting `retired` and the unlink leaves the name to the next
 * attacher, which unlinks it under the lock and goes on. */
#ifndef RM_INTERNAL_NODE_TABLE_H
#define RM_INTERNAL_NODE_TABLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config_keys.h" /* RM_NAMESPACE_MAX */
#include "rm_plugin.h"

#define RM_NODE_TABLE_MAGIC UINT64_C(0x3162617464726d72) /* "rmrdtab1" */
/* 2: attachers[] and `retired` (table lifetime); 3: device weights
 * (`memory`, `device_bytes`, `device_uuid`). A table of another layout
 * is refused (RM_E_CORRUPT_STATE): processes of two plugin versions cannot
 * share one. */
#define RM_NODE_TABLE_LAYOUT 3u
#define RM_NODE_TABLE_ENTRIES_MIN 4u
#define RM_NODE_TABLE_ENTRIES_MAX 65536u
#define RM_NODE_TABLE_ENTRIES_DEFAULT 1024u
#define RM_NODE_TABLE_HEADER_BYTES 4096u
/* Processes that can have a context attached to one table at once. */
#define RM_NODE_TABLE_ATTACHERS 1024u
#define RM_NODE_NAMESPACE_MAX RM_NAMESPACE_MAX

/* Segment names: RM_SEGMENT_NODE_TABLE, RM_SEGMENT_NODE_TABLE_NEW and
 * RM_SEGMENT_NODE_MODEL of shm_segment.h. */

typedef enum rm_node_state {
    RM_NODE_EMPTY = 0,
    RM_NODE_LOADING = 1, /* loader_pid runs the loader into segment_id */
    RM_NODE_READY = 2,   /* sealed segment_id, mapped by holders */
    RM_NODE_FAILED = 3,  /* last load failed (failure, failure_ticket);
                            claimable by anyone, as if empty */
} rm_node_state;

/* A process holding references to an entry's model. For device weights a
 * record stays at refs 0 while the process keeps the weights mapped (a
 * keeper): it can still hand them to newcomers (REF: gpu-weights). */
typedef struct rm_node_holder {
    int32_t pid; /* 0: free */
    uint32_t refs;
    uint64_t start_time; /* rm_process_start_time() of pid */
} rm_node_holder;

/* A process using the table through `contexts` node-scope contexts. */
typedef struct rm_node_attacher {
    int32_t pid; /* 0: free */
    uint32_t contexts;
    uint64_t start_time; /* rm_process_start_time() of pid */
} rm_node_attacher;

typedef struct rm_node_entry {
    uint32_t state; /* rm_node_state */
    uint32_t wake;  /* futex word: bumped when a load ends */
    uint64_t ticket; /* load attempts on this slot, never decreases */
    uint64_t segment_id;
    uint64_t bytes;
    uint64_t loaded_at_ns; /* CLOCK_MONOTONIC */
    uint64_t last_used_ns; /* last release (or load, or dead refs dropped) */
    uint64_t loader_start_time;
    int32_t loader_pid;
    int32_t failure;         /* code of the failed load failure_ticket */
    uint64_t failure_ticket;
    uint32_t holder_count;   /* holders[] in use (keepers included) */
    /* RM_MEMORY_SHM: segment_id names a sealed /dev/shm segment;
     * RM_MEMORY_CUDA: segment_id is the weights id the holders serve
     * (device_weights.h), and device_bytes and device_uuid say where. */
    uint32_t memory;
    uint64_t refs;           /* holders[].refs added up */
    uint64_t device_bytes;   /* RM_MEMORY_CUDA: the allocation's size */
    uint8_t device_uuid[16]; /* RM_MEMORY_CUDA */
    char key[RM_MODEL_KEY_MAX];
    rm_node_holder holders[RM_NODE_MAX_HOLDER_PROCESSES];
} rm_node_entry;

typedef struct rm_node_header {
    /* Immutable after creation. */
    uint64_t magic;
    uint32_t layout;
    uint32_t capacity;
    uint64_t file_bytes;
    uint32_t entry_bytes; /* sizeof(rm_node_entry) of the creator */
    uint32_t lock_bytes;  /* sizeof(pthread_mutex_t) of the creator */
    uint32_t attacher_slots; /* RM_NODE_TABLE_ATTACHERS of the creator */
    uint32_t reserved;
    /* Robust, process-shared. */
    pthread_mutex_t lock;
    uint64_t ready_models;
    uint64_t ready_bytes;
    uint64_t lock_recoveries; /* times the lock was found held by the dead */
    /* Set once, under the lock, right before the name is unlinked: nobody
     * may start using the table any more. */
    uint32_t retired;
    uint32_t reserved2;
} rm_node_header;

static inline uint64_t rm_node_hash_array_bytes(uint32_t capacity)
{
    return ((uint64_t)capacity * sizeof(uint64_t) + 4095u) & ~(uint64_t)4095u;
}

#define RM_NODE_ATTACHER_ARRAY_BYTES                                                   \
    (((uint64_t)RM_NODE_TABLE_ATTACHERS * sizeof(rm_node_attacher) + 4095u) & ~(uint64_t)4095u)

static inline uint64_t rm_node_table_bytes(uint32_t capacity)
{
    return RM_NODE_TABLE_HEADER_BYTES + RM_NODE_ATTACHER_ARRAY_BYTES +
           rm_node_hash_array_bytes(capacity) + (uint64_t)capacity * sizeof(rm_node_entry);
}

/* A mapped table as this process checked it at attach. The header's
 * capacity lives in shared memory, where a buggy process could change it;
 * the plugin uses only the copy made when the size was proven. */
typedef struct rm_node_view {
    rm_node_header *header;
    uint64_t bytes;      /* mapped */
    uint32_t capacity;   /* checked against `bytes` at attach */
    rm_node_attacher *attachers; /* [RM_NODE_TABLE_ATTACHERS] */
    uint64_t *hashes;    /* slot_hash[capacity] */
    rm_node_entry *entries; /* [capacity] */
    /* The file mapped, so that removal unlinks the name only while it
     * still names this table. */
    uint64_t device;
    uint64_t inode;
} rm_node_view;

/* The calling process, as attachers[] records it. */
typedef struct rm_node_self {
    int32_t pid;
    uint64_t start_time;
} rm_node_self;

/** How long rm_node_table_lock() waits before it asks whether the lock's
 *  owner could hold it (1 s; the fuzz harness lowers it). */
extern uint64_t rm_node_table_lock_patience_ns;

/** The key's hash as stored in slot_hash[] (never 0). */
uint64_t rm_node_key_hash(const char *key);

/** Empties `slot` (keeps its ticket and futex word). Lock held. */
void rm_node_clear_slot(const rm_node_view *table, uint32_t slot);

/** FUTEX_WAKE every waiter of `word` (a shared mapping: not private). */
void rm_node_futex_wake_all(uint32_t *word);
/** FUTEX_WAIT on `word` while it holds `expected`, at most `ms`. */
void rm_node_futex_wait_ms(uint32_t *word, uint32_t expected, uint64_t ms);

/**
 * Maps the table of `namespace_name` and records `self` in its attachers
 * (one more context). When there is none: with `create`, creates one with
 * `entries_if_created` entries (built under a private name, `self` already
 * recorded, and linked into place, so no process sees it half-initialised
 * or unused); without, returns RM_E_NOT_FOUND and sets no message. A table
 * found is checked first: a 0600 regular file of this user, not a
 * symlink, with this build's magic, layout, entry and lock sizes and a
 * consistent size; one found retired is let go and the name opened again.
 * *recovered as for rm_node_table_lock(). Returns RM_OK, RM_E_NOT_FOUND,
 * RM_E_CORRUPT_STATE, RM_E_QUOTA_EXCEEDED (RM_NODE_TABLE_ATTACHERS live
 * processes attached), RM_E_NO_MEMORY (/dev/shm full), RM_E_SYSTEM (a system
 * call failed, getrandom() for the name of a new table included).
 */
int32_t rm_node_table_attach(const char *namespace_name, uint32_t entries_if_created,
                             bool create, rm_node_self self, const void *error_owner,
                             rm_node_view *out, bool *recovered);

/** Unmaps `table` (the view is cleared). */
void rm_node_table_unmap(rm_node_view *table);

/* ---- attachers[] and removal; the lock held ---------------------------- */

/** Contexts `self` has attached. */
uint32_t rm_node_attached_contexts(const rm_node_view *table, rm_node_self self);

/** One context of `self` fewer (its record freed at 0). */
void rm_node_detach_context(const rm_node_view *table, rm_node_self self);

/** Frees the records of dead processes (never self's); returns how many. */
uint32_t rm_node_drop_dead_attachers(const rm_node_view *table, rm_node_self self);

/** True when a live process other than `self` is recorded; the dead ones
 *  met on the way are dropped. */
bool rm_node_others_attached(const rm_node_view *table, rm_node_self self);

/** True when no entry is READY or LOADING. */
bool rm_node_table_unused(const rm_node_view *table);

/**
 * Retires the table and unlinks its name if the name still names it (a
 * table removed by hand and made anew is left alone). True when it
 * unlinked the name; *freed_bytes gets the /dev/shm bytes that freed.
 */
bool rm_node_table_retire(const rm_node_view *table, const char *namespace_name,
                          uint64_t *freed_bytes);

/**
 * Takes the robust lock. If its holder died, repairs what the entries
 * imply (hashes, holder counts and sums, ready totals) and drops attacher
 * records it may have left half written, counts it in
 * lock_recoveries, marks the lock consistent and sets *recovered. Returns
 * RM_OK, or RM_E_CORRUPT_STATE (lock unrecoverable).
 */
int32_t rm_node_table_lock(const rm_node_view *table, const char *namespace_name,
                           const void *error_owner, bool *recovered);
void rm_node_table_unlock(const rm_node_view *table);

#endif
