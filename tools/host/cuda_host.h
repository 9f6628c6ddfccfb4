/* The few CUDA driver calls a host makes on its own, beside the plugin:
 * filling and reading device tensors and model weights, device-to-device
 * copies, a stream and the device's memory figures (rmctl demo,
 * bench_cuda, bench_gpu_weights). The plugin's driver wrappers are
 * internal, so a host binds the driver itself, as PyTorch would: it
 * dlopen()s the library the plugin uses (rm_cuda_info.library, which is
 * cuda.driver) and works in the device's primary context, the one the
 * plugin's device pointers belong to. No CUDA header is needed: the
 * handful of types below are the driver's, as cuda.h declares them.
 * Every call returns 0 or -1 with a message naming the entry point and
 * its CUresult; nothing here exits. */
#ifndef RM_HOST_CUDA_HOST_H
#define RM_HOST_CUDA_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef int cuda_host_result;          /* CUresult; 0 is CUDA_SUCCESS */
typedef unsigned long long cuda_host_deviceptr; /* CUdeviceptr */
typedef void *cuda_host_stream;        /* CUstream; NULL: the legacy default stream */

typedef struct cuda_host {
    void *library;
    int ordinal;
    int device;                        /* CUdevice */
    void *context;                     /* the device's primary CUcontext */
    bool fake;                         /* the test-only fake driver (tests/fake_cuda) */
    int driver_version;
    cuda_host_result (*init)(unsigned int);
    cuda_host_result (*driver_get_version)(int *);
    cuda_host_result (*device_get)(int *, int);
    cuda_host_result (*primary_retain)(void **, int);
    cuda_host_result (*primary_release)(int);
    cuda_host_result (*push)(void *);
    cuda_host_result (*pop)(void **);
    cuda_host_result (*memcpy_htod)(cuda_host_deviceptr, const void *, size_t);
    /* NULL when the library lacks it (the fake driver of the tests). */
    cuda_host_result (*memcpy_htod_async)(cuda_host_deviceptr, const void *, size_t,
                                          cuda_host_stream);
    cuda_host_result (*memcpy_dtoh)(void *, cuda_host_deviceptr, size_t);
    cuda_host_result (*memcpy_dtod)(cuda_host_deviceptr, cuda_host_deviceptr, size_t);
    cuda_host_result (*memcpy_dtod_async)(cuda_host_deviceptr, cuda_host_deviceptr, size_t,
                                          cuda_host_stream);
    cuda_host_result (*stream_create)(cuda_host_stream *, unsigned int);
    cuda_host_result (*stream_synchronize)(cuda_host_stream);
    cuda_host_result (*stream_destroy)(cuda_host_stream);
    cuda_host_result (*error_name)(cuda_host_result, const char **);
    cuda_host_result (*mem_get_info)(size_t *, size_t *);
} cuda_host;

/* Loads `library` (as dlopen() takes it: the same string as cuda.driver,
 * so that the plugin and the host share one driver instance), calls
 * cuInit and retains device `ordinal`'s primary context. */
int cuda_host_open(const char *library, int ordinal, cuda_host *out, char *error,
                   size_t error_size);
/* Releases the primary context. The library stays loaded: an initialised
 * driver has threads and exit handlers, and the plugin uses it too. */
void cuda_host_close(cuda_host *cuda);

/* Each in the primary context, pushed for the call and popped after it. */
int cuda_host_copy_to_device(cuda_host *cuda, uint64_t device_pointer, const void *source,
                             size_t size, char *error, size_t error_size);
int cuda_host_copy_to_host(cuda_host *cuda, void *destination, uint64_t device_pointer,
                           size_t size, char *error, size_t error_size);
int cuda_host_copy_device(cuda_host *cuda, uint64_t destination, uint64_t source, size_t size,
                          char *error, size_t error_size);
/* cuMemcpyDtoDAsync_v2 on `stream`, then cuStreamSynchronize. */
int cuda_host_copy_device_on_stream(cuda_host *cuda, uint64_t destination, uint64_t source,
                                    size_t size, cuda_host_stream stream, char *error,
                                    size_t error_size);
/* cuMemcpyHtoDAsync_v2 on `stream`, not synchronised: whoever queued it
 * orders what follows (a loader's copy: the plugin synchronises after the
 * loader). From pageable memory the driver has taken the bytes when the
 * call returns, so `source` may be reused. -1 with a message when the
 * library has no cuMemcpyHtoDAsync_v2 (cuda->memcpy_htod_async NULL). */
int cuda_host_copy_to_device_async(cuda_host *cuda, uint64_t device_pointer,
                                   const void *source, size_t size, cuda_host_stream stream,
                                   char *error, size_t error_size);
/* cuMemGetInfo_v2 of the device: what every process and context holds on
 * it, the driver's own reservations included. */
int cuda_host_memory_info(cuda_host *cuda, uint64_t *free_bytes, uint64_t *total_bytes,
                          char *error, size_t error_size);
int cuda_host_stream_create(cuda_host *cuda, cuda_host_stream *out, char *error,
                            size_t error_size);
int cuda_host_stream_destroy(cuda_host *cuda, cuda_host_stream stream, char *error,
                             size_t error_size);

#endif
