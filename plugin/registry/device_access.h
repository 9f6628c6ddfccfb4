/* How a registry reaches the CUDA driver for device buffers (ABI 1.4,
 * REF: gpu-weights): whether the context may use it ("cuda-ipc" built and
 * enabled), the driver opened on first need, and what a key's device is
 * on this process's devices. Built without cuda-ipc, every call answers
 * "not built" and keys stay as they are. */
#ifndef RM_INTERNAL_DEVICE_ACCESS_H
#define RM_INTERNAL_DEVICE_ACCESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config_keys.h" /* RM_LIBRARY_NAME_MAX */
#include "rm_plugin.h"

typedef struct rm_cuda_driver rm_cuda_driver;

typedef struct rm_device_access {
    bool enabled; /* "cuda-ipc" built and enabled in the context */
    char library[RM_LIBRARY_NAME_MAX + 1];
    pthread_mutex_t lock; /* guards `driver` */
    rm_cuda_driver *driver; /* NULL until a call needs it and it opens */
} rm_device_access;

void rm_device_access_init(rm_device_access *access, bool enabled, const char *library);
/** Releases the driver reference, if one was taken. */
void rm_device_access_fini(rm_device_access *access);

/**
 * The driver, opened on first use, for a device buffer of `key`. RM_OK;
 * RM_E_FEATURE_UNAVAILABLE ("cuda-ipc" not built), RM_E_FEATURE_DISABLED
 * (not enabled), RM_E_DEVICE_UNAVAILABLE (no usable driver: the driver's
 * own message, naming `key`); each with a message for `error_owner`.
 */
int32_t rm_device_access_driver(rm_device_access *access, const char *key,
                                const void *error_owner, rm_cuda_driver **out);

/** The driver if it is already open, else NULL (never opens it). */
rm_cuda_driver *rm_device_access_opened(rm_device_access *access);

/** N for a normalised key "name@cuda:N", -1 for any other device. */
int rm_device_key_ordinal(const char *key);

/** True for a key as node rows show device weights: a valid model name,
 *  then "@cuda:GPU-" and a UUID in lower-case hex, 8-4-4-4-12. */
bool rm_device_uuid_key(const char *key);

/**
 * The node table's key for the normalised `key`: "name@cuda:N" becomes
 * "name@cuda:GPU-<UUID of local device N>" when the context may use the
 * driver, the driver opens and device N exists; any other key, or when
 * that fails, is copied unchanged. Sets no message.
 */
void rm_device_table_key(rm_device_access *access, const char *key,
                         char out[RM_MODEL_KEY_MAX]);

/** The UUID of local device `ordinal` into `uuid` (left alone when no
 *  driver is open or there is no such device); false then. */
bool rm_device_access_uuid(rm_device_access *access, int ordinal, uint8_t uuid[16]);

/** This process's ordinal of the device with `uuid`, or -1 (no usable
 *  driver, or the device is not visible here). Opens the driver if the
 *  context may use it; sets no message. */
int rm_device_access_ordinal_of(rm_device_access *access, const uint8_t uuid[16]);

#endif
