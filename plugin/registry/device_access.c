/* The registry's way to the CUDA driver: see device_access.h. */
#include "device_access.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model_key.h"
#include "rm_build_config.h"

#if RM_HAVE_CUDA_IPC
#include "cuda_driver.h"
#endif

void rm_device_access_init(rm_device_access *access, bool enabled, const char *library)
{
    access->enabled = enabled && RM_HAVE_CUDA_IPC;
    snprintf(access->library, sizeof access->library, "%s",
             library != NULL && library[0] != '\0' ? library : "libcuda.so.1");
    pthread_mutex_init(&access->lock, NULL);
    access->driver = NULL;
}

void rm_device_access_fini(rm_device_access *access)
{
#if RM_HAVE_CUDA_IPC
    rm_cuda_driver_release(access->driver);
#endif
    access->driver = NULL;
    pthread_mutex_destroy(&access->lock);
}

int rm_device_key_ordinal(const char *key)
{
    const char *at = strrchr(key, '@');
    if (at == NULL || strncmp(at + 1, "cuda:", 5) != 0)
        return -1;
    char *end = NULL;
    long ordinal = strtol(at + 6, &end, 10);
    if (end == at + 6 || *end != '\0' || ordinal < 0 || ordinal > 1023)
        return -1; /* a UUID key, or not normalised */
    return (int)ordinal;
}

bool rm_device_uuid_key(const char *key)
{
    const char *at = strrchr(key, '@');
    static const char prefix[] = "cuda:GPU-";
    if (at == NULL || at == key || strncmp(at + 1, prefix, sizeof prefix - 1) != 0 ||
        strlen(key) >= RM_MODEL_KEY_MAX)
        return false;
    /* The name as the grammar has it (model_key.h). */
    char name[RM_MODEL_KEY_MAX];
    snprintf(name, sizeof name, "%.*s@cpu", (int)(at - key), key);
    char normal[RM_MODEL_KEY_MAX];
    static const char quiet_owner;
    if (rm_model_key_normalize(name, normal, sizeof normal, &quiet_owner) != RM_OK)
        return false;
    const char *uuid = at + 1 + sizeof prefix - 1;
    static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        bool hex = (uuid[i] >= '0' && uuid[i] <= '9') || (uuid[i] >= 'a' && uuid[i] <= 'f');
        if (shape[i] == '-' ? uuid[i] != '-' : !hex)
            return false;
    }
    return uuid[sizeof shape - 1] == '\0';
}

rm_cuda_driver *rm_device_access_opened(rm_device_access *access)
{
    pthread_mutex_lock(&access->lock);
    rm_cuda_driver *driver = access->driver;
    pthread_mutex_unlock(&access->lock);
    return driver;
}

#if RM_HAVE_CUDA_IPC

int32_t rm_device_access_driver(rm_device_access *access, const char *key,
                                const void *error_owner, rm_cuda_driver **out)
{
    *out = NULL;
    if (!access->enabled)
        return rm_error_set(error_owner, RM_E_FEATURE_DISABLED,
                            "a device buffer for model key '%s' needs feature 'cuda-ipc' "
                            "enabled in this context",
                            key);
    pthread_mutex_lock(&access->lock);
    int32_t status = RM_OK;
    if (access->driver == NULL)
        status = rm_cuda_driver_open(access->library, error_owner, &access->driver);
    rm_cuda_driver *driver = access->driver;
    pthread_mutex_unlock(&access->lock);
    if (status != RM_OK) {
        char why[RM_ERROR_MESSAGE_MAX];
        snprintf(why, sizeof why, "%s", rm_error_last(error_owner));
        return rm_error_set(error_owner,
                            status == RM_E_FORKED ? RM_E_FORKED : RM_E_DEVICE_UNAVAILABLE,
                            "no device buffer for model key '%s': %s", key, why);
    }
    *out = driver;
    return RM_OK;
}

/* The driver without a message: key translation must not disturb the
 * message of the call it is part of. */
static rm_cuda_driver *quiet_driver(rm_device_access *access)
{
    if (!access->enabled)
        return NULL;
    pthread_mutex_lock(&access->lock);
    if (access->driver == NULL) {
        static const char quiet_owner; /* messages recorded here are dropped */
        (void)rm_cuda_driver_open(access->library, &quiet_owner, &access->driver);
    }
    rm_cuda_driver *driver = access->driver;
    pthread_mutex_unlock(&access->lock);
    return driver;
}

void rm_device_table_key(rm_device_access *access, const char *key, char out[RM_MODEL_KEY_MAX])
{
    snprintf(out, RM_MODEL_KEY_MAX, "%s", key);
    int ordinal = rm_device_key_ordinal(key);
    if (ordinal < 0)
        return;
    rm_cuda_driver *driver = quiet_driver(access);
    uint8_t uuid[16];
    if (driver == NULL || rm_cuda_driver_device_uuid(driver, ordinal, uuid, NULL) != RM_OK)
        return;
    char text[41];
    rm_cuda_uuid_format(uuid, text);
    const char *at = strrchr(key, '@');
    snprintf(out, RM_MODEL_KEY_MAX, "%.*s@cuda:%s", (int)(at - key), key, text);
}

bool rm_device_access_uuid(rm_device_access *access, int ordinal, uint8_t uuid[16])
{
    rm_cuda_driver *driver = access != NULL ? rm_device_access_opened(access) : NULL;
    return driver != NULL && rm_cuda_driver_device_uuid(driver, ordinal, uuid, NULL) == RM_OK;
}

int rm_device_access_ordinal_of(rm_device_access *access, const uint8_t uuid[16])
{
    rm_cuda_driver *driver = quiet_driver(access);
    int ordinal = -1;
    if (driver == NULL || rm_cuda_driver_ordinal_of_uuid(driver, uuid, &ordinal, NULL) != RM_OK)
        return -1;
    return ordinal;
}

#else /* built without cuda-ipc */

int32_t rm_device_access_driver(rm_device_access *access, const char *key,
                                const void *error_owner, rm_cuda_driver **out)
{
    (void)access;
    *out = NULL;
    return rm_error_set(error_owner, RM_E_FEATURE_UNAVAILABLE,
                        "a device buffer for model key '%s' needs feature 'cuda-ipc', which "
                        "was not built into this plugin",
                        key);
}

void rm_device_table_key(rm_device_access *access, const char *key, char out[RM_MODEL_KEY_MAX])
{
    (void)access;
    snprintf(out, RM_MODEL_KEY_MAX, "%s", key);
}

bool rm_device_access_uuid(rm_device_access *access, int ordinal, uint8_t uuid[16])
{
    (void)access, (void)ordinal, (void)uuid;
    return false;
}

int rm_device_access_ordinal_of(rm_device_access *access, const uint8_t uuid[16])
{
    (void)access;
    (void)uuid;
    return -1;
}

#endif
