/* What test_gpu_weights and gpu_weights_peer share beyond
 * cuda_tensor_common.h (the driver as a host reaches it, the pattern):
 * the two driver calls the weights tests add (cuMemGetInfo_v2 for the
 * device's used memory, and a write that must fail through a sealed
 * model), a device's UUID as the driver spells it, and reading the
 * "name=value" fields of the peer's lines.
 *
 * As in cuda_tensor_common.h, device memory is touched only through the
 * driver in the device's primary context, so that everything runs on a
 * GPU too; nothing here asserts (the peer has no Criterion). */
#ifndef RM_TEST_GPU_WEIGHTS_COMMON_H
#define RM_TEST_GPU_WEIGHTS_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cuda_tensor_common.h"

/* CUDA_ERROR_ILLEGAL_ADDRESS: what the fake gives for a write through a
 * READ mapping (a GPU faults the copy with it too). */
#define GW_CUDA_ERROR_ILLEGAL_ADDRESS 700

/* The granularity of exportable device memory on current GPUs and in the
 * fake: node-scope weights take a multiple of it. */
#define GW_GRANULARITY ((uint64_t)2 << 20)

/* cuMemGetInfo_v2 on device `ordinal` (in its primary context): 0 with
 * *free_bytes and *total_bytes, or -1 with d->why. */
static inline int gw_meminfo(td_driver *d, int ordinal, uint64_t *free_bytes,
                             uint64_t *total_bytes)
{
    td_result (*get_info)(size_t *, size_t *) = NULL;
    void *symbol = dlsym(d->library, "cuMemGetInfo_v2");
    memcpy(&get_info, &symbol, sizeof symbol);
    if (get_info == NULL) {
        snprintf(d->why, sizeof d->why, "%s has no cuMemGetInfo_v2", td_library());
        return -1;
    }
    if (td_enter(d, ordinal) != 0)
        return -1;
    size_t free_now = 0, total = 0;
    td_result rc = get_info(&free_now, &total);
    td_leave(d);
    if (rc != 0) {
        snprintf(d->why, sizeof d->why, "cuMemGetInfo_v2: CUresult %d", rc);
        return -1;
    }
    *free_bytes = free_now;
    *total_bytes = total;
    return 0;
}

/* Tries to write `size` bytes of 0xa5 at `pointer` on device `ordinal`
 * with cuMemcpyHtoD_v2: the CUresult (0 when the write went through), or
 * -1 with d->why when it could not even be tried. */
static inline int gw_try_write(td_driver *d, int ordinal, td_deviceptr pointer, size_t size)
{
    uint8_t *bytes = malloc(size == 0 ? 1 : size);
    if (bytes == NULL) {
        snprintf(d->why, sizeof d->why, "no memory");
        return -1;
    }
    memset(bytes, 0xa5, size);
    if (td_enter(d, ordinal) != 0) {
        free(bytes);
        return -1;
    }
    td_result rc = d->htod(pointer, bytes, size);
    td_leave(d);
    free(bytes);
    return rc;
}

/* 16 bytes as the driver's text, "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx". */
static inline void gw_uuid_text(const uint8_t uuid[16], char text[48])
{
    static const int groups[5] = {4, 2, 2, 2, 6};
    char *at = text + sprintf(text, "GPU-");
    int byte = 0;
    for (int g = 0; g < 5; g++) {
        if (g > 0)
            *at++ = '-';
        for (int i = 0; i < groups[g]; i++, byte++)
            at += sprintf(at, "%02x", uuid[byte]);
    }
    *at = '\0';
}

/* The ordinal N of a key "name@cuda:N" ("name@cuda" is 0; the device is
 * case-insensitive, N may have leading zeros); -1 for any other device. */
static inline int gw_key_ordinal(const char *key)
{
    const char *device = strrchr(key, '@');
    if (device == NULL || strncasecmp(device, "@cuda", 5) != 0)
        return -1;
    if (device[5] == '\0')
        return 0;
    if (device[5] != ':' || device[6] < '0' || device[6] > '9')
        return -1;
    return (int)strtol(device + 6, NULL, 10);
}

/* Where " name=" starts the value in `line` (or a line-initial "name="),
 * or NULL. */
static inline const char *gw_field(const char *line, const char *name)
{
    if (line == NULL)
        return NULL;
    size_t length = strlen(name);
    for (const char *at = line; (at = strstr(at, name)) != NULL; at += length)
        if ((at == line || at[-1] == ' ') && at[length] == '=')
            return at + length + 1;
    return NULL;
}

/* A number field (decimal, or hexadecimal with 0x); `missing` when absent. */
static inline int64_t gw_field_int(const char *line, const char *name, int64_t missing)
{
    const char *value = gw_field(line, name);
    return value != NULL ? strtoll(value, NULL, 0) : missing;
}

static inline uint64_t gw_field_u64(const char *line, const char *name, uint64_t missing)
{
    const char *value = gw_field(line, name);
    return value != NULL ? strtoull(value, NULL, 0) : missing;
}

/* A word field (up to the next blank) into `out`; false when absent. */
static inline bool gw_field_word(const char *line, const char *name, char *out, size_t size)
{
    const char *value = gw_field(line, name);
    if (value == NULL || size == 0)
        return false;
    size_t length = strcspn(value, " ");
    if (length >= size)
        length = size - 1;
    memcpy(out, value, length);
    out[length] = '\0';
    return true;
}

#endif
