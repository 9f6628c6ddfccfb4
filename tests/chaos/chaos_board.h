/* The chaos soak's shared board: what the driver and its workers (separate,
 * exec'd processes) share through one memfd the driver creates and every
 * worker inherits. Each worker says, in its own slot, which plugin call it
 * is inside (so the driver can aim its kills there and see a call that
 * makes no progress), what it holds, and what went wrong; tensors travel
 * between workers through a mailbox of descriptors, as they would through
 * a pipeline's own channel.
 *
 * Everything a worker writes here survives its SIGKILL, and the driver
 * clears a killed worker's traces (held models, half-written mail) after
 * it has reaped it, before it looks at the board again. Test code,
 * header-only. */
#ifndef RM_TEST_CHAOS_BOARD_H
#define RM_TEST_CHAOS_BOARD_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "rm_plugin.h"

#define CHAOS_MAGIC 0x534f4843u /* "CHOS" */
#define CHAOS_MAX_WORKERS 24
#define CHAOS_KEYS 8
#define CHAOS_MAIL_SLOTS 32
#define CHAOS_MESSAGE_BYTES 200

/* What a worker does. */
typedef enum chaos_role {
    ROLE_MODELS = 1,   /* node registry: load (sometimes failing) and hold models */
    ROLE_LOCK_HOG,     /* node registry: list and reclaim, inside the table lock */
    ROLE_PRODUCER,     /* tensors: allocate, fill, post descriptors; destroys its
                          context now and then, and sometimes exits */
    ROLE_CONSUMER,     /* tensors: import, check, release at once */
    ROLE_KEEPER,       /* tensors: import and keep views for a while, checking them
                          again across their producer's release, destroy and exit */
    ROLE_COUNT
} chaos_role;

/* The plugin call (or loader) a worker is inside; 0 outside. */
typedef enum chaos_call {
    CALL_NONE = 0,
    CALL_CONTEXT_CREATE,
    CALL_CONTEXT_DESTROY,
    CALL_GET_OR_LOAD,
    CALL_LOADER,
    CALL_MODEL_RELEASE,
    CALL_REGISTRY_LIST,
    CALL_REGISTRY_RECLAIM,
    CALL_TENSOR_ALLOCATE,
    CALL_TENSOR_EXPORT,
    CALL_TENSOR_IMPORT,
    CALL_TENSOR_RELEASE,
    CALL_TENSOR_RECLAIM,
    CALL_COUNT
} chaos_call;

static const char *const chaos_call_names[CALL_COUNT] = {
    "none",          "context_create", "context_destroy",  "model_get_or_load",
    "loader",        "model_release",  "registry_list",    "registry_reclaim",
    "tensor_allocate", "tensor_export", "tensor_import",   "tensor_release",
    "tensor_reclaim",
};

typedef struct chaos_worker_slot {
    _Atomic uint32_t pid;        /* 0: free */
    _Atomic uint32_t role;
    _Atomic uint32_t call;       /* chaos_call */
    _Atomic uint32_t call_depth; /* a loader runs inside get_or_load */
    _Atomic uint64_t call_started_ns;
    _Atomic uint64_t operations; /* completed calls: progress */
    /* The load stamp of each key's model this worker holds now, 0 none:
     * two live workers holding different stamps of one key at once means
     * the key was loaded twice. */
    _Atomic uint64_t held_stamp[CHAOS_KEYS];
    _Atomic uint32_t failed;     /* the worker saw something wrong: message */
    char message[CHAOS_MESSAGE_BYTES];
} chaos_worker_slot;

/* Mail: state = owner pid << 8 | one of these. */
enum { MAIL_EMPTY = 0, MAIL_WRITING = 1, MAIL_FULL = 2, MAIL_READING = 3 };

typedef struct chaos_mail {
    _Atomic uint64_t state;
    uint64_t producer; /* the producing worker's stream id */
    uint64_t sequence; /* its sequence number: part of the pattern seed */
    uint64_t nbytes;
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
} chaos_mail;

typedef struct chaos_board {
    uint32_t magic;
    char name_space[40];
    _Atomic uint32_t stopping;       /* workers finish cleanly */
    _Atomic uint64_t next_stream;    /* producer stream ids */
    /* Counted by the workers. */
    _Atomic uint64_t loader_calls;
    _Atomic uint64_t loads_failed_on_purpose;
    _Atomic uint64_t models_checked;
    _Atomic uint64_t tensors_posted;
    _Atomic uint64_t tensors_checked;
    _Atomic uint64_t stale_imports;  /* the tensor was gone: expected */
    _Atomic uint64_t views_rechecked; /* a keeper's view checked again later */
    _Atomic uint64_t mismatches;     /* a byte that is not what it must be */
    _Atomic uint64_t unexpected_errors;
    chaos_worker_slot workers[CHAOS_MAX_WORKERS];
    chaos_mail mail[CHAOS_MAIL_SLOTS];
} chaos_board;

static inline uint64_t chaos_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* splitmix64: patterns and seeds. */
static inline uint64_t chaos_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

/* The bytes of a tensor or model: word i of stream `seed` is
 * chaos_mix(seed + i); the stream is part of what is checked. */
static inline void chaos_fill(void *data, uint64_t bytes, uint64_t seed)
{
    uint8_t *at = data;
    uint64_t i = 0;
    for (; (i + 1) * 8 <= bytes; i++) {
        uint64_t word = chaos_mix(seed + i);
        memcpy(at + 8 * i, &word, 8);
    }
    uint64_t tail = chaos_mix(seed + i);
    memcpy(at + 8 * i, &tail, bytes - 8 * i);
}

/* The number of bytes that differ from chaos_fill(seed). */
static inline uint64_t chaos_differences(const void *data, uint64_t bytes, uint64_t seed)
{
    const uint8_t *at = data;
    uint64_t wrong = 0;
    uint64_t i = 0;
    for (; (i + 1) * 8 <= bytes; i++) {
        uint64_t word = chaos_mix(seed + i), seen;
        memcpy(&seen, at + 8 * i, 8);
        wrong += seen != word;
    }
    uint64_t tail = chaos_mix(seed + i);
    wrong += memcmp(at + 8 * i, &tail, bytes - 8 * i) != 0;
    return wrong;
}

/* A tensor's pattern seed: its producer stream and sequence number. */
static inline uint64_t chaos_tensor_seed(uint64_t producer, uint64_t sequence)
{
    return chaos_mix(producer << 32 ^ sequence);
}

#endif
