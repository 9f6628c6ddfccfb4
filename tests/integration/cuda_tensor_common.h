/* What test_cuda_tensors and cuda_tensor_peer share: the CUDA driver as a
 * host reaches it (dlopen of the library the plugin uses, the device's
 * primary context, cuMemcpyHtoD_v2/DtoH_v2), and the byte pattern the
 * producers write and the consumers check.
 *
 * Device memory is read and written only through the driver, never
 * through a host pointer, so that the same tests run on a real GPU; only
 * the checks that need the fake's counters skip there (td_counter gives
 * -1). Nothing here asserts: the peer has no Criterion. */
#ifndef RM_TEST_CUDA_TENSOR_COMMON_H
#define RM_TEST_CUDA_TENSOR_COMMON_H

#include <dirent.h>
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The driver's types as its ABI has them (no cuda.h here). */
typedef int td_result;
typedef int td_device;
typedef void *td_context;
typedef unsigned long long td_deviceptr;

#define TD_MAX_DEVICES 8
/* Copies go through a host buffer of this size: 1 GiB tensors must not
 * need 1 GiB of host memory per process. */
#define TD_CHUNK_BYTES ((size_t)16 << 20)

/* The library the plugin is told to use: the fake in the cuda suite
 * (FAKE_CUDA_LIBRARY), the real driver's default otherwise. */
static inline const char *td_library(void)
{
    const char *fake = getenv("FAKE_CUDA_LIBRARY");
    return fake != NULL && fake[0] != '\0' ? fake : "libcuda.so.1";
}

static inline bool td_is_fake(void)
{
    const char *fake = getenv("FAKE_CUDA_LIBRARY");
    return fake != NULL && fake[0] != '\0';
}

typedef struct td_driver {
    void *library;
    td_result (*init)(unsigned int);
    td_result (*device_get)(td_device *, int);
    td_result (*primary_retain)(td_context *, td_device);
    td_result (*primary_release)(td_device);
    td_result (*push)(td_context);
    td_result (*pop)(td_context *);
    td_result (*htod)(td_deviceptr, const void *, size_t);
    td_result (*dtoh)(void *, td_deviceptr, size_t);
    td_result (*alloc)(td_deviceptr *, size_t);
    td_result (*free)(td_deviceptr);
    long long (*fake_calls)(const char *);
    td_context contexts[TD_MAX_DEVICES];
    char why[256];
} td_driver;

static inline void *td_symbol(td_driver *d, const char *name, bool *missing)
{
    void *symbol = dlsym(d->library, name);
    if (symbol == NULL && !*missing) {
        *missing = true;
        snprintf(d->why, sizeof d->why, "%s has no %s", td_library(), name);
    }
    return symbol;
}

#define TD_BIND(d, field, name, missing)                                      \
    do {                                                                      \
        void *symbol_ = td_symbol((d), (name), (missing));                    \
        memcpy(&(d)->field, &symbol_, sizeof symbol_);                        \
    } while (0)

/* Loads the library (the plugin's copy, when it already has one) and
 * initialises the driver; 0, or -1 with d->why. */
static inline int td_open(td_driver *d)
{
    memset(d, 0, sizeof *d);
    d->library = dlopen(td_library(), RTLD_NOW | RTLD_LOCAL);
    if (d->library == NULL) {
        snprintf(d->why, sizeof d->why, "dlopen(%s): %s", td_library(), dlerror());
        return -1;
    }
    bool missing = false;
    TD_BIND(d, init, "cuInit", &missing);
    TD_BIND(d, device_get, "cuDeviceGet", &missing);
    TD_BIND(d, primary_retain, "cuDevicePrimaryCtxRetain", &missing);
    TD_BIND(d, primary_release, "cuDevicePrimaryCtxRelease_v2", &missing);
    TD_BIND(d, push, "cuCtxPushCurrent_v2", &missing);
    TD_BIND(d, pop, "cuCtxPopCurrent_v2", &missing);
    TD_BIND(d, htod, "cuMemcpyHtoD_v2", &missing);
    TD_BIND(d, dtoh, "cuMemcpyDtoH_v2", &missing);
    TD_BIND(d, alloc, "cuMemAlloc_v2", &missing);
    TD_BIND(d, free, "cuMemFree_v2", &missing);
    void *calls = dlsym(d->library, "fake_cuda_calls"); /* the fake only */
    memcpy(&d->fake_calls, &calls, sizeof calls);
    if (missing)
        return -1;
    td_result rc = d->init(0);
    if (rc != 0) {
        snprintf(d->why, sizeof d->why, "cuInit: CUresult %d", rc);
        return -1;
    }
    return 0;
}

static inline void td_close(td_driver *d)
{
    for (int i = 0; i < TD_MAX_DEVICES; i++) {
        if (d->contexts[i] != NULL) {
            td_device device;
            if (d->device_get(&device, i) == 0)
                (void)d->primary_release(device);
        }
    }
    if (d->library != NULL)
        dlclose(d->library);
    memset(d, 0, sizeof *d);
}

/* Makes device `ordinal`'s primary context current (retained once). */
static inline int td_enter(td_driver *d, int ordinal)
{
    if (ordinal < 0 || ordinal >= TD_MAX_DEVICES) {
        snprintf(d->why, sizeof d->why, "ordinal %d out of range", ordinal);
        return -1;
    }
    if (d->contexts[ordinal] == NULL) {
        td_device device;
        td_result rc = d->device_get(&device, ordinal);
        if (rc == 0)
            rc = d->primary_retain(&d->contexts[ordinal], device);
        if (rc != 0) {
            snprintf(d->why, sizeof d->why, "primary context of cuda:%d: CUresult %d", ordinal,
                     rc);
            return -1;
        }
    }
    td_result rc = d->push(d->contexts[ordinal]);
    if (rc != 0) {
        snprintf(d->why, sizeof d->why, "cuCtxPushCurrent_v2: CUresult %d", rc);
        return -1;
    }
    return 0;
}

static inline void td_leave(td_driver *d)
{
    td_context popped;
    (void)d->pop(&popped);
}

/* The fake's counter `name` (fake_cuda_calls), or -1 on a real driver. */
static inline long long td_counter(const td_driver *d, const char *name)
{
    return d->fake_calls != NULL ? d->fake_calls(name) : -1;
}

/* The same, read without a driver call and without loading anything: a
 * forked child must make no CUDA call. -1 on a real driver or when the
 * library is not loaded. */
static inline long long td_counter_loaded(const char *name)
{
    void *library = dlopen(td_library(), RTLD_NOW | RTLD_NOLOAD);
    if (library == NULL)
        return -1;
    void *symbol = dlsym(library, "fake_cuda_calls");
    long long (*calls)(const char *) = NULL;
    memcpy(&calls, &symbol, sizeof calls);
    long long count = calls != NULL ? calls(name) : -1;
    dlclose(library);
    return count;
}

static inline int td_alloc(td_driver *d, int ordinal, size_t size, td_deviceptr *out)
{
    if (td_enter(d, ordinal) != 0)
        return -1;
    td_result rc = d->alloc(out, size);
    td_leave(d);
    if (rc != 0)
        snprintf(d->why, sizeof d->why, "cuMemAlloc_v2(%zu): CUresult %d", size, rc);
    return rc == 0 ? 0 : -1;
}

static inline int td_free(td_driver *d, int ordinal, td_deviceptr pointer)
{
    if (td_enter(d, ordinal) != 0)
        return -1;
    td_result rc = d->free(pointer);
    td_leave(d);
    if (rc != 0)
        snprintf(d->why, sizeof d->why, "cuMemFree_v2: CUresult %d", rc);
    return rc == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* The pattern                                                              */
/* ------------------------------------------------------------------------ */

/* Word k of the pattern of `seed` (splitmix64): byte i of a tensor is
 * byte i % 8 (little-endian) of word i / 8, so neighbouring tensors,
 * offsets and pages all differ. */
static inline uint64_t td_word(uint64_t seed, uint64_t k)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15u + k + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static inline uint8_t td_byte(uint64_t seed, uint64_t i)
{
    return (uint8_t)(td_word(seed, i / 8) >> (8 * (i % 8)));
}

/* Bytes [from, from + size) of the pattern; `from` a multiple of 8. */
static inline void td_pattern(uint64_t seed, uint64_t from, uint8_t *out, size_t size)
{
    size_t words = size / 8;
    for (size_t w = 0; w < words; w++) {
        uint64_t value = td_word(seed, from / 8 + w);
        memcpy(out + 8 * w, &value, 8);
    }
    for (size_t i = 8 * words; i < size; i++)
        out[i] = td_byte(seed, from + i);
}

/* Writes the pattern of `seed` into [pointer, pointer + size) of device
 * `ordinal`, through cuMemcpyHtoD_v2; 0, or -1 with d->why. */
static inline int td_fill(td_driver *d, int ordinal, td_deviceptr pointer, uint64_t size,
                          uint64_t seed)
{
    size_t chunk = size < TD_CHUNK_BYTES ? (size_t)size : TD_CHUNK_BYTES;
    uint8_t *buffer = malloc(chunk == 0 ? 1 : chunk);
    if (buffer == NULL) {
        snprintf(d->why, sizeof d->why, "no memory");
        return -1;
    }
    bool entered = td_enter(d, ordinal) == 0;
    int result = entered ? 0 : -1;
    for (uint64_t at = 0; result == 0 && at < size; at += chunk) {
        size_t n = size - at < chunk ? (size_t)(size - at) : chunk;
        td_pattern(seed, at, buffer, n);
        td_result rc = d->htod(pointer + at, buffer, n);
        if (rc != 0) {
            snprintf(d->why, sizeof d->why, "cuMemcpyHtoD_v2 at byte %llu: CUresult %d",
                     (unsigned long long)at, rc);
            result = -1;
        }
    }
    if (entered)
        td_leave(d);
    free(buffer);
    return result;
}

/* Checks every byte of [pointer, pointer + size) against the pattern,
 * through cuMemcpyDtoH_v2: 0 when all match, 1 with d->why naming the
 * first byte that does not, -1 with d->why when the copy failed. */
static inline int td_check(td_driver *d, int ordinal, td_deviceptr pointer, uint64_t size,
                           uint64_t seed)
{
    size_t chunk = size < TD_CHUNK_BYTES ? (size_t)size : TD_CHUNK_BYTES;
    uint8_t *buffer = malloc(chunk == 0 ? 1 : chunk);
    uint8_t *expected = malloc(chunk == 0 ? 1 : chunk);
    int result = buffer != NULL && expected != NULL ? 0 : -1;
    if (result != 0)
        snprintf(d->why, sizeof d->why, "no memory");
    bool entered = result == 0 && td_enter(d, ordinal) == 0;
    if (result == 0 && !entered)
        result = -1;
    for (uint64_t at = 0; result == 0 && at < size; at += chunk) {
        size_t n = size - at < chunk ? (size_t)(size - at) : chunk;
        td_result rc = d->dtoh(buffer, pointer + at, n);
        if (rc != 0) {
            snprintf(d->why, sizeof d->why, "cuMemcpyDtoH_v2 at byte %llu: CUresult %d",
                     (unsigned long long)at, rc);
            result = -1;
            break;
        }
        td_pattern(seed, at, expected, n);
        if (memcmp(buffer, expected, n) != 0) {
            size_t i = 0;
            while (buffer[i] == expected[i])
                i++;
            snprintf(d->why, sizeof d->why, "byte %llu of %llu is 0x%02x, not 0x%02x",
                     (unsigned long long)(at + i), (unsigned long long)size, buffer[i],
                     expected[i]);
            result = 1;
        }
    }
    if (entered)
        td_leave(d);
    free(buffer);
    free(expected);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Process figures                                                          */
/* ------------------------------------------------------------------------ */

/* Descriptors open in this process (-1 if /proc/self/fd is unreadable). */
static inline long td_open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return -1;
    long count = 0;
    for (const struct dirent *entry; (entry = readdir(dir)) != NULL;)
        count += entry->d_name[0] != '.';
    closedir(dir);
    return count - 1; /* the directory's own descriptor */
}

/* /dev/shm entries whose name starts with `prefix` (-1: unreadable). */
static inline long td_shm_count(const char *prefix)
{
    DIR *dir = opendir("/dev/shm");
    if (dir == NULL)
        return -1;
    size_t length = strlen(prefix);
    long count = 0;
    for (const struct dirent *entry; (entry = readdir(dir)) != NULL;)
        count += strncmp(entry->d_name, prefix, length) == 0;
    closedir(dir);
    return count;
}

/* 16 bytes as 32 lowercase hex digits. */
static inline void td_hex16(const uint8_t bytes[16], char text[33])
{
    for (int i = 0; i < 16; i++)
        snprintf(text + 2 * i, 3, "%02x", bytes[i]);
}

#endif
