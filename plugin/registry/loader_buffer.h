/* Loader buffers (ABI 1.2): the memory a loader asks the plugin for with
 * rm_loaded_model.alloc_buffer(), the same call in both registry scopes.
 * The scope decides where the bytes live (private pages, or a /dev/shm
 * segment every process of a node can map); this file owns the parts the
 * scopes share: the one-call rule, the size limits, and the checks made on
 * what the loader returned. */
#ifndef RM_INTERNAL_LOADER_BUFFER_H
#define RM_INTERNAL_LOADER_BUFFER_H

#include <stdbool.h>
#include <stdint.h>

#include "rm_plugin.h"

#define RM_LOADER_BUFFER_MAX_BYTES ((uint64_t)1 << 48)

typedef struct rm_loader_buffer rm_loader_buffer;

/* Where a model lives, for rows (rm_model_info.memory and the device
 * fields) and model_to_dlpack. */
typedef struct rm_model_placement {
    uint32_t memory; /* RM_MODEL_MEMORY_HOST, RM_MEMORY_SHM, RM_MEMORY_CUDA */
    bool buffer;     /* the model is a buffer of `bytes` bytes the plugin made */
    int32_t device_ordinal; /* RM_MEMORY_CUDA: this process's; else -1 */
    uint8_t device_uuid[16];
    uint64_t device_bytes;
} rm_model_placement;

/* A host model of the loader's own: bytes unknown to the plugin. */
#define RM_MODEL_PLACEMENT_OPAQUE                                                      \
    ((rm_model_placement){.memory = RM_MODEL_MEMORY_HOST, .device_ordinal = -1})

struct rm_loader_buffer {
    /* Makes `bytes` writable, zero-filled, page-aligned bytes and sets
     * self->base; returns RM_OK or a code recorded for error_owner. */
    int32_t (*create)(rm_loader_buffer *self, uint64_t bytes);
    /* Makes a zero-filled device buffer on the key's device (1.4): sets
     * device_pointer and stream; RM_OK or a recorded code. The key has
     * been checked to name "cuda:N" (device_ordinal). */
    int32_t (*create_device)(rm_loader_buffer *self, uint64_t bytes);
    void *scope_state;       /* for `create` and `create_device` */
    const void *error_owner;
    const char *key;         /* normalised, for messages */
    void *base;              /* NULL until created */
    uint64_t device_pointer; /* 0 until created */
    void *stream;            /* the device buffer's, for the loader */
    int device_ordinal;      /* of the key, when a device buffer is asked */
    uint64_t bytes;
    /* The code the last failed create/create_device returned (0: none):
     * a loader that returns it hands on that call's message. */
    int32_t failure;
    /* Set by the scope once the model is in place (a buffer's, or the one
     * node scope's acquire attached); the process registry records it. */
    rm_model_placement placement;
};

/** Offers `buffer` to the loader through `model`'s 1.2 fields and, when
 *  the buffer can make device buffers, its 1.4 field. */
void rm_loader_buffer_offer(rm_loaded_model *model, rm_loader_buffer *buffer);

/**
 * After the loader returned RM_OK: RM_OK when it used the buffer (host or
 * device) properly (model NULL or the buffer, destroy NULL; then model and
 * bytes are set to the buffer's) or did not use it at all (*used false); else
 * RM_E_INVALID_ARGUMENT, recorded for the buffer's error owner.
 */
int32_t rm_loader_buffer_check(rm_loaded_model *model, const rm_loader_buffer *buffer,
                               bool *used);

/** True when a loader's failure `status` is the code a buffer call gave it:
 *  the message recorded then explains it better than "loader failed". */
bool rm_loader_buffer_explains(const rm_loader_buffer *buffer, int32_t status);

/** Private pages for a process-scope buffer, and their release. */
int32_t rm_loader_buffer_create_private(rm_loader_buffer *self, uint64_t bytes);
/** Seals a private buffer read-only; RM_OK or RM_E_SYSTEM. */
int32_t rm_loader_buffer_seal_private(rm_loader_buffer *self);
/** A destroy callback for a sealed private buffer: destroy_user is its
 *  size. */
void rm_loader_buffer_destroy_private(void *base, void *destroy_user);

#endif
