/* Error codes and the per-thread, per-context last-error message.
 *
 * The message lives in thread-local storage together with the context it
 * belongs to: concurrent threads never see each other's messages, and a
 * context only reports failures that happened on it. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local struct {
    const void *owner;
    char message[RM_ERROR_MESSAGE_MAX];
} last_error;

int32_t rm_error_set(const void *owner, int32_t code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(last_error.message, sizeof last_error.message, format, args);
    va_end(args);
    last_error.owner = owner;
    return code;
}

const char *rm_error_last(const void *owner)
{
    if (last_error.owner != owner)
        return "";
    return last_error.message;
}

void rm_error_clear(void)
{
    last_error.owner = NULL;
    last_error.message[0] = '\0';
}

const char *rm_error_name(int32_t code)
{
    switch (code) {
#define RM_ERROR_NAME_CASE_(value, name, message) \
    case value:                                   \
        return #name;
        RM_ERROR_MAP(RM_ERROR_NAME_CASE_)
#undef RM_ERROR_NAME_CASE_
    }
    return "UNKNOWN";
}

const char *rm_error_string(int32_t code)
{
    switch (code) {
#define RM_ERROR_STRING_CASE_(value, name, message) \
    case value:                                     \
        return message;
        RM_ERROR_MAP(RM_ERROR_STRING_CASE_)
#undef RM_ERROR_STRING_CASE_
    }
    return "unknown error";
}
