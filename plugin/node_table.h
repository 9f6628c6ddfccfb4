/* The node registry's shared table: its layout in /dev/shm, shared by every
 * process of a namespace (and read by tests that must break it on
 * purpose, e.g. die holding its lock).
 *
 * File /dev/shm/rmreg.<namespace>.table, 0600, committed with fallocate:
 *   [header, 4096 bytes][slot_hash[capacity], rounded up to 4096][entries]
 * slot_hash[i] is 0 for an empty slot, else the key's hash with the low bit
 * set: a lookup scans this dense array, not the (large) entries.
 * Every field is read and written with the table lock held, except an
 * entry's `wake` futex word (atomic) and the header's immutable prefix. */
#ifndef RM_INTERNAL_NODE_TABLE_H
#define RM_INTERNAL_NODE_TABLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "rm_plugin.h"

#define RM_NODE_TABLE_MAGIC UINT64_C(0x3162617464726d72) /* "rmrdtab1" */
#define RM_NODE_TABLE_LAYOUT 1u
#define RM_NODE_TABLE_ENTRIES_MIN 4u
#define RM_NODE_TABLE_ENTRIES_MAX 65536u
#define RM_NODE_TABLE_ENTRIES_DEFAULT 1024u
#define RM_NODE_TABLE_HEADER_BYTES 4096u
#define RM_NODE_NAMESPACE_MAX 32

/* Segment names, as for shm_open(). */
#define RM_NODE_TABLE_NAME_FORMAT "/rmreg.%s.table"
#define RM_NODE_MODEL_NAME_FORMAT "/rmreg.%s.m.%016llx"
#define RM_NODE_NAME_MAX 96

typedef enum rm_node_state {
    RM_NODE_EMPTY = 0,
    RM_NODE_LOADING = 1, /* loader_pid runs the loader into segment_id */
    RM_NODE_READY = 2,   /* sealed segment_id, mapped by holders */
    RM_NODE_FAILED = 3,  /* last load failed (failure, failure_ticket);
                            claimable by anyone, as if empty */
} rm_node_state;

typedef struct rm_node_holder {
    int32_t pid; /* 0: free */
    uint32_t refs;
    uint64_t start_time; /* rm_process_start_time() of pid */
} rm_node_holder;

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
    uint32_t holder_count;   /* holders[] in use */
    uint32_t reserved;
    uint64_t refs;           /* holders[].refs added up */
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
    /* Robust, process-shared. */
    pthread_mutex_t lock;
    uint64_t ready_models;
    uint64_t ready_bytes;
    uint64_t lock_recoveries; /* times the lock was found held by the dead */
} rm_node_header;

static inline uint64_t rm_node_hash_array_bytes(uint32_t capacity)
{
    return ((uint64_t)capacity * sizeof(uint64_t) + 4095u) & ~(uint64_t)4095u;
}

static inline uint64_t rm_node_table_bytes(uint32_t capacity)
{
    return RM_NODE_TABLE_HEADER_BYTES + rm_node_hash_array_bytes(capacity) +
           (uint64_t)capacity * sizeof(rm_node_entry);
}

/* A mapped table as this process checked it at attach. The header's
 * capacity lives in shared memory, where a buggy process could change it;
 * the plugin uses only the copy made when the size was proven. */
typedef struct rm_node_view {
    rm_node_header *header;
    uint64_t bytes;      /* mapped */
    uint32_t capacity;   /* checked against `bytes` at attach */
    uint64_t *hashes;    /* slot_hash[capacity] */
    rm_node_entry *entries; /* [capacity] */
} rm_node_view;

/** The key's hash as stored in slot_hash[] (never 0). */
uint64_t rm_node_key_hash(const char *key);

/** A random, non-zero id for a segment name (unguessable while
 *  getrandom() works). */
uint64_t rm_node_random_id(void);

/** Empties `slot` (keeps its ticket and futex word). Lock held. */
void rm_node_clear_slot(const rm_node_view *table, uint32_t slot);

/** FUTEX_WAKE every waiter of `word` (a shared mapping: not private). */
void rm_node_futex_wake_all(uint32_t *word);
/** FUTEX_WAIT on `word` while it holds `expected`, at most `ms`. */
void rm_node_futex_wait_ms(uint32_t *word, uint32_t expected, uint64_t ms);

/**
 * Maps the table of `namespace_name`, creating it with `entries_if_created`
 * entries when there is none (built under a private name and linked into
 * place, so no process sees it half-initialised). A table found is checked
 * first: a 0600 regular file of this user, not a symlink, with this build's
 * magic, layout, entry and lock sizes and a consistent size. Returns RM_OK,
 * RM_E_CORRUPT_STATE, RM_E_NO_MEMORY (/dev/shm full), RM_E_SYSTEM.
 */
int32_t rm_node_table_attach(const char *namespace_name, uint32_t entries_if_created,
                             const void *error_owner, rm_node_view *out);

/**
 * Takes the robust lock. If its holder died, repairs what the entries
 * imply (hashes, holder counts and sums, ready totals), counts it in
 * lock_recoveries, marks the lock consistent and sets *recovered. Returns
 * RM_OK, or RM_E_CORRUPT_STATE (lock unrecoverable).
 */
int32_t rm_node_table_lock(const rm_node_view *table, const char *namespace_name,
                           const void *error_owner, bool *recovered);
void rm_node_table_unlock(const rm_node_view *table);

#endif
