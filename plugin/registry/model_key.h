/* The `name@device` model key grammar (documented in abi/rm_plugin.h). */
#ifndef RM_INTERNAL_MODEL_KEY_H
#define RM_INTERNAL_MODEL_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "rm_plugin.h"

/**
 * Checks `key` against the grammar and writes its normalised form into
 * `out` (NUL-terminated). On failure records a message naming the problem
 * through rm_error_set(error_owner, ...).
 * Returns RM_OK, RM_E_INVALID_KEY, RM_E_BUFFER_TOO_SMALL (out too small for
 * the normalised key), RM_E_INVALID_ARGUMENT (NULL key or out).
 */
int32_t rm_model_key_normalize(const char *key, char *out, size_t out_size,
                               const void *error_owner);

#endif
