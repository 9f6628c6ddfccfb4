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

struct rm_loader_buffer {
    /* Makes `bytes` writable, zero-filled, page-aligned bytes and sets
     * self->base; returns RM_OK or a code recorded for error_owner. */
    int32_t (*create)(rm_loader_buffer *self, uint64_t bytes);
    void *scope_state;       /* for `create` */
    const void *error_owner;
    const char *key;         /* normalised, for messages */
    void *base;              /* NULL until created */
    uint64_t bytes;
};

/** Offers `buffer` to the loader through `model`'s 1.2 fields. */
void rm_loader_buffer_offer(rm_loaded_model *model, rm_loader_buffer *buffer);

/**
 * After the loader returned RM_OK: RM_OK when it used the buffer properly
 * (model NULL or the buffer, destroy NULL; then model and bytes are set to
 * the buffer's) or did not use it at all (*used false); else
 * RM_E_INVALID_ARGUMENT, recorded for the buffer's error owner.
 */
int32_t rm_loader_buffer_check(rm_loaded_model *model, const rm_loader_buffer *buffer,
                               bool *used);

/** Private pages for a process-scope buffer, and their release. */
int32_t rm_loader_buffer_create_private(rm_loader_buffer *self, uint64_t bytes);
/** Seals a private buffer read-only; RM_OK or RM_E_SYSTEM. */
int32_t rm_loader_buffer_seal_private(rm_loader_buffer *self);
/** A destroy callback for a sealed private buffer: destroy_user is its
 *  size. */
void rm_loader_buffer_destroy_private(void *base, void *destroy_user);

#endif
