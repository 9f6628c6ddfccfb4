/* Model weights in device memory (ABI 1.4, REF: gpu-weights).
 *
 * Private buffers (process scope): cuMemAlloc memory of the loader's
 * device, freed on eviction.
 *
 * Shared weights (node scope): a loader's buffer starts as a draft, VMM
 * memory (cuMemCreate, POSIX-descriptor handles) mapped read-write in the
 * loader's process only. Publishing it waits for the device, maps it
 * read-only and exports a descriptor; from then on the weights are in
 * this process's table of mapped weights, keyed by (namespace, weights
 * id), and the process serves their descriptor to any process of its
 * user that asks (weights_socket.h). Another process receives the
 * descriptor from one of the holders the node table lists, imports and
 * maps it read-only: one copy on the device, mapped in every process.
 *
 * The table is process-wide, so contexts of one process share one mapping
 * (each context's use is counted). Weights no context uses stay mapped
 * (and served) until the registry drops them: when the node table no
 * longer has them, or when the namespace's last context of this process
 * goes. The memory itself lives while any process maps the weights or
 * holds a descriptor of them (the driver's rule), whoever created it.
 *
 * The server thread runs while the table has weights. Pointers here are
 * CUdeviceptr values. Built without cuda-ipc, creation answers
 * RM_E_FEATURE_UNAVAILABLE and the table stays empty. */
#ifndef RM_INTERNAL_DEVICE_WEIGHTS_H
#define RM_INTERNAL_DEVICE_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "rm_plugin.h"

typedef struct rm_cuda_driver rm_cuda_driver;

/* ---- private buffers (process scope) --------------------------------- */

/** A private device buffer: what its destroy callback frees. */
typedef struct rm_device_buffer {
    rm_cuda_driver *driver; /* a reference of its own */
    int ordinal;
    uint64_t pointer;
    uint64_t bytes;
    void *stream; /* for the loader; destroyed once the loader returned */
} rm_device_buffer;

/** cuMemAlloc of `bytes` on `ordinal`, zero-filled, and a stream; the
 *  message names `key`. RM_OK, RM_E_NO_MEMORY, RM_E_DEVICE_UNAVAILABLE (no
 *  device `ordinal`), RM_E_SYSTEM. */
int32_t rm_device_buffer_create(rm_cuda_driver *driver, int ordinal, uint64_t bytes,
                                const char *key, const void *error_owner,
                                rm_device_buffer **out);
/** After the loader: waits for the device's work, drops the stream. */
int32_t rm_device_buffer_finish(rm_device_buffer *buffer, const char *key,
                                const void *error_owner);
/** Frees the memory (a model's destroy callback: `user` is the buffer). */
void rm_device_buffer_destroy(void *model, void *user);

/* ---- shared weights (node scope) -------------------------------------- */

typedef struct rm_weights_draft {
    rm_cuda_driver *driver; /* a reference of its own */
    int ordinal;
    uint64_t handle;  /* CUmemGenericAllocationHandle */
    uint64_t pointer; /* mapped read-write here */
    uint64_t bytes;   /* the allocation: rounded up to the granularity */
    void *stream;     /* for the loader */
} rm_weights_draft;

/**
 * Exportable memory for `bytes` bytes on `ordinal` (rounded up to the
 * granularity), zero-filled, mapped read-write, and a stream.
 * RM_OK; RM_E_DEVICE_UNAVAILABLE (no device `ordinal`, or it cannot
 * export memory as POSIX descriptors); RM_E_NO_MEMORY; RM_E_SYSTEM.
 */
int32_t rm_weights_draft_create(rm_cuda_driver *driver, int ordinal, uint64_t bytes,
                                const char *key, const void *error_owner,
                                rm_weights_draft *out);

/** Unmaps and frees a draft (a failed load). */
void rm_weights_draft_discard(rm_weights_draft *draft);

/**
 * Seals the loader's work (synchronises the device's primary context,
 * maps the buffer read-only, exports its descriptor) and enters it into
 * this process's table under (namespace_name, id) with one use; *pointer
 * is its address. The draft is consumed: on error it is discarded.
 * RM_OK, RM_E_NO_MEMORY, RM_E_SYSTEM (a driver call, or the server).
 */
int32_t rm_weights_publish(rm_weights_draft *draft, const char *namespace_name, uint64_t id,
                           const char *key, const void *error_owner, uint64_t *pointer);

/** One more use of weights this process has mapped; false when it has
 *  none under (namespace_name, id). */
bool rm_weights_use(const char *namespace_name, uint64_t id, uint64_t *pointer);

/** A process that may have the weights: a holder of the node entry. */
typedef struct rm_weights_source {
    int32_t pid;
    uint64_t start_time;
} rm_weights_source;

/**
 * Receives the weights from the first of `sources` that answers, maps them
 * read-only on `ordinal` and enters them with one use. `bytes` is the
 * allocation size the node entry records (checked against the answer).
 * RM_OK; RM_E_NOT_FOUND (every source said it has them not, or was not
 * listening: the weights are gone; each one tried is named in the
 * message); RM_E_DEVICE_UNAVAILABLE (this device cannot import POSIX
 * descriptors); RM_E_NO_MEMORY; RM_E_SYSTEM.
 */
int32_t rm_weights_receive(rm_cuda_driver *driver, int ordinal, const char *namespace_name,
                           uint64_t id, const char *key, uint64_t bytes,
                           const rm_weights_source *sources, uint32_t source_count,
                           const void *error_owner, uint64_t *pointer);

/** True when this process has the weights mapped (uses not counted). */
bool rm_weights_has(const char *namespace_name, uint64_t id);

/** One use fewer; the weights stay mapped at zero (see the top). */
void rm_weights_unuse(const char *namespace_name, uint64_t id);

/** Unmaps and forgets weights no context uses; false when they are in use
 *  or unknown. */
bool rm_weights_drop(const char *namespace_name, uint64_t id);

/**
 * The ids of the weights of `namespace_name` this process has mapped and
 * no context uses (malloc'd into *ids, the caller frees; NULL when none);
 * returns how many. With `all`, those in use too.
 */
uint32_t rm_weights_list(const char *namespace_name, bool all, uint64_t **ids);

#endif
