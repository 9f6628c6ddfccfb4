/* Error codes and the per-thread, per-context last-error message. */
#ifndef RM_INTERNAL_ERROR_H
#define RM_INTERNAL_ERROR_H

#include <stdint.h>

#include "rm_plugin.h"

/** Longest last-error message kept, NUL included. */
#define RM_ERROR_MESSAGE_MAX 512

/**
 * Records `code` and a printf-style message as the calling thread's last
 * error for `owner` (a context, or NULL for context-less calls) and returns
 * `code`, so that failures read `return rm_error_set(ctx, RM_E_X, ...)`.
 */
int32_t rm_error_set(const void *owner, int32_t code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/** The calling thread's last message for `owner`, or "". Never NULL. */
const char *rm_error_last(const void *owner);

/** Forgets the calling thread's last error (any owner). */
void rm_error_clear(void);

/** Static strings for a code; "UNKNOWN" / "unknown error" otherwise. */
const char *rm_error_name(int32_t code);
const char *rm_error_string(int32_t code);

#endif
