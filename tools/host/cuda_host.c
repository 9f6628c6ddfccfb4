/* See cuda_host.h. */
#include "cuda_host.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* The versioned symbols, as cuda.h maps the base names (cuMemcpyHtoD is
 * cuMemcpyHtoD_v2, ...): the plain names that have a _v2 are the legacy
 * ABI. Drivers from 11.4 on, the plugin's minimum, export all of them. */
typedef struct entry_point {
    const char *symbol;
    size_t offset;
} entry_point;

#define ENTRY(field, symbol) {symbol, offsetof(cuda_host, field)}
static const entry_point entry_points[] = {
    ENTRY(init, "cuInit"),
    ENTRY(driver_get_version, "cuDriverGetVersion"),
    ENTRY(device_get, "cuDeviceGet"),
    ENTRY(primary_retain, "cuDevicePrimaryCtxRetain"),
    ENTRY(primary_release, "cuDevicePrimaryCtxRelease_v2"),
    ENTRY(push, "cuCtxPushCurrent_v2"),
    ENTRY(pop, "cuCtxPopCurrent_v2"),
    ENTRY(memcpy_htod, "cuMemcpyHtoD_v2"),
    ENTRY(memcpy_dtoh, "cuMemcpyDtoH_v2"),
    ENTRY(memcpy_dtod, "cuMemcpyDtoD_v2"),
    ENTRY(memcpy_dtod_async, "cuMemcpyDtoDAsync_v2"),
    ENTRY(stream_create, "cuStreamCreate"),
    ENTRY(stream_synchronize, "cuStreamSynchronize"),
    ENTRY(stream_destroy, "cuStreamDestroy_v2"),
    ENTRY(error_name, "cuGetErrorName"),
    ENTRY(mem_get_info, "cuMemGetInfo_v2"),
};

static int failed(const cuda_host *cuda, const char *call, cuda_host_result result, char *error,
                  size_t error_size)
{
    const char *name = NULL;
    if (cuda->error_name == NULL || cuda->error_name(result, &name) != 0 || name == NULL)
        name = "unknown CUresult";
    snprintf(error, error_size, "%s failed: %s (%d)", call, name, result);
    return -1;
}

int cuda_host_open(const char *library, int ordinal, cuda_host *out, char *error,
                   size_t error_size)
{
    memset(out, 0, sizeof *out);
    out->ordinal = ordinal;
    out->library = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (out->library == NULL) {
        snprintf(error, error_size, "dlopen(%s) failed: %s", library, dlerror());
        return -1;
    }
    for (size_t i = 0; i < sizeof entry_points / sizeof entry_points[0]; i++) {
        void *symbol = dlsym(out->library, entry_points[i].symbol);
        if (symbol == NULL) {
            snprintf(error, error_size, "%s has no %s", library, entry_points[i].symbol);
            return -1;
        }
        /* POSIX guarantees that a function pointer survives the trip
         * through void *, which is how dlsym() returns it. */
        memcpy((char *)out + entry_points[i].offset, &symbol, sizeof symbol);
    }
    /* Optional: a loader that has it copies on the load's stream. */
    void *async_copy = dlsym(out->library, "cuMemcpyHtoDAsync_v2");
    memcpy(&out->memcpy_htod_async, &async_copy, sizeof async_copy);
    /* Only the fake exports its call counters; figures measured through it
     * are not GPU figures, and whoever prints them must say so. */
    out->fake = dlsym(out->library, "fake_cuda_calls") != NULL;
    cuda_host_result result = out->init(0);
    if (result != 0)
        return failed(out, "cuInit", result, error, error_size);
    out->driver_get_version(&out->driver_version);
    if ((result = out->device_get(&out->device, ordinal)) != 0)
        return failed(out, "cuDeviceGet", result, error, error_size);
    if ((result = out->primary_retain(&out->context, out->device)) != 0) {
        out->context = NULL;
        return failed(out, "cuDevicePrimaryCtxRetain", result, error, error_size);
    }
    return 0;
}

void cuda_host_close(cuda_host *cuda)
{
    if (cuda->context != NULL)
        cuda->primary_release(cuda->device);
    cuda->context = NULL;
}

/* Runs `call` with the primary context current, leaving the thread's own
 * current context as it was. */
#define IN_PRIMARY_CONTEXT(cuda, name, call)                                 \
    do {                                                                     \
        cuda_host_result pushed = (cuda)->push((cuda)->context);             \
        if (pushed != 0)                                                     \
            return failed(cuda, "cuCtxPushCurrent_v2", pushed, error, error_size); \
        cuda_host_result result = (call);                                    \
        void *popped;                                                        \
        (cuda)->pop(&popped);                                                \
        if (result != 0)                                                     \
            return failed(cuda, name, result, error, error_size);            \
        return 0;                                                            \
    } while (0)

int cuda_host_copy_to_device(cuda_host *cuda, uint64_t device_pointer, const void *source,
                             size_t size, char *error, size_t error_size)
{
    IN_PRIMARY_CONTEXT(cuda, "cuMemcpyHtoD_v2",
                       cuda->memcpy_htod((cuda_host_deviceptr)device_pointer, source, size));
}

int cuda_host_copy_to_host(cuda_host *cuda, void *destination, uint64_t device_pointer,
                           size_t size, char *error, size_t error_size)
{
    IN_PRIMARY_CONTEXT(cuda, "cuMemcpyDtoH_v2",
                       cuda->memcpy_dtoh(destination, (cuda_host_deviceptr)device_pointer, size));
}

int cuda_host_copy_device(cuda_host *cuda, uint64_t destination, uint64_t source, size_t size,
                          char *error, size_t error_size)
{
    IN_PRIMARY_CONTEXT(cuda, "cuMemcpyDtoD_v2",
                       cuda->memcpy_dtod((cuda_host_deviceptr)destination,
                                         (cuda_host_deviceptr)source, size));
}

static cuda_host_result copy_then_synchronize(cuda_host *cuda, uint64_t destination,
                                              uint64_t source, size_t size,
                                              cuda_host_stream stream, const char **call)
{
    *call = "cuMemcpyDtoDAsync_v2";
    cuda_host_result result = cuda->memcpy_dtod_async((cuda_host_deviceptr)destination,
                                                      (cuda_host_deviceptr)source, size, stream);
    if (result != 0)
        return result;
    *call = "cuStreamSynchronize";
    return cuda->stream_synchronize(stream);
}

int cuda_host_copy_device_on_stream(cuda_host *cuda, uint64_t destination, uint64_t source,
                                    size_t size, cuda_host_stream stream, char *error,
                                    size_t error_size)
{
    const char *call = "cuMemcpyDtoDAsync_v2";
    cuda_host_result pushed = cuda->push(cuda->context);
    if (pushed != 0)
        return failed(cuda, "cuCtxPushCurrent_v2", pushed, error, error_size);
    cuda_host_result result = copy_then_synchronize(cuda, destination, source, size, stream,
                                                    &call);
    void *popped;
    cuda->pop(&popped);
    return result != 0 ? failed(cuda, call, result, error, error_size) : 0;
}

int cuda_host_copy_to_device_async(cuda_host *cuda, uint64_t device_pointer,
                                   const void *source, size_t size, cuda_host_stream stream,
                                   char *error, size_t error_size)
{
    if (cuda->memcpy_htod_async == NULL) {
        snprintf(error, error_size, "the driver library has no cuMemcpyHtoDAsync_v2");
        return -1;
    }
    IN_PRIMARY_CONTEXT(cuda, "cuMemcpyHtoDAsync_v2",
                       cuda->memcpy_htod_async((cuda_host_deviceptr)device_pointer, source,
                                               size, stream));
}

int cuda_host_memory_info(cuda_host *cuda, uint64_t *free_bytes, uint64_t *total_bytes,
                          char *error, size_t error_size)
{
    size_t free_now = 0, total = 0;
    cuda_host_result pushed = cuda->push(cuda->context);
    if (pushed != 0)
        return failed(cuda, "cuCtxPushCurrent_v2", pushed, error, error_size);
    cuda_host_result result = cuda->mem_get_info(&free_now, &total);
    void *popped;
    cuda->pop(&popped);
    if (result != 0)
        return failed(cuda, "cuMemGetInfo_v2", result, error, error_size);
    *free_bytes = free_now;
    *total_bytes = total;
    return 0;
}

int cuda_host_stream_create(cuda_host *cuda, cuda_host_stream *out, char *error,
                            size_t error_size)
{
    /* Non-blocking (1): no implicit ordering with the legacy default stream,
     * as the streams of PyTorch and vLLM. */
    IN_PRIMARY_CONTEXT(cuda, "cuStreamCreate", cuda->stream_create(out, 1u));
}

int cuda_host_stream_destroy(cuda_host *cuda, cuda_host_stream stream, char *error,
                             size_t error_size)
{
    IN_PRIMARY_CONTEXT(cuda, "cuStreamDestroy_v2", cuda->stream_destroy(stream));
}
