/* The plugin's one way to the CUDA driver.
 *
 * Nothing here runs at plugin load: rm_cuda_driver_open() dlopen()s the
 * driver on first use, initialises it and binds every entry point the
 * plugin needs, or explains precisely why CUDA is unavailable
 * (RM_E_FEATURE_UNAVAILABLE with a message: no driver, NVIDIA's stub
 * library, no GPU, a driver too old, an entry point missing).
 *
 * Every call below except rm_cuda_driver_release() runs with the
 * device's primary context pushed on the calling thread and popped
 * before it returns, so a host's own current context is left alone and
 * the plugin shares memory with PyTorch and cudart, which use the same
 * primary context.
 *
 * Fork: CUDA does not survive fork(). A driver opened in a process
 * refuses every call from a forked child with RM_E_FORKED and makes no
 * CUDA call there; so does rm_cuda_driver_open() in such a child. A child
 * that needs CUDA must exec.
 *
 * Errors: each function returns RM_OK or a negative rm_error code and
 * sets the calling thread's last-error message for `error_owner` (see
 * core/error.h). A failing CUDA call maps to RM_E_NO_MEMORY (out of
 * memory), RM_E_INVALID_ARGUMENT (invalid value, handle, device or
 * pointer), RM_E_FEATURE_UNAVAILABLE (not initialised, not supported)
 * or RM_E_SYSTEM (anything else, ILLEGAL_ADDRESS included); the message
 * names the entry point and the CUDA error, and
 * rm_cuda_driver_last_result() gives the raw CUresult. */
#ifndef RM_CUDA_DRIVER_H
#define RM_CUDA_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda_api.h"

/** The library opened when the caller names none. */
#define RM_CUDA_DRIVER_DEFAULT_LIBRARY "libcuda.so.1"

/**
 * The oldest driver accepted, as cuDriverGetVersion() reports it
 * (1000 * major + 10 * minor): 11.4, the first with cuDeviceGetUuid_v2,
 * which reports MIG instances' own UUIDs; every other entry point we
 * bind is older. Drivers 11.4 to 11.8 lack cuGetProcAddress_v2 (12.0)
 * and are bound by dlsym() of the versioned names.
 */
#define RM_CUDA_DRIVER_MIN_VERSION 11040

/** The CUDA version whose entry points we ask cuGetProcAddress_v2 for
 *  (the newer of this and the driver's own version is never passed;
 *  cuCtxSynchronize is asked for with 12000, as cuda_driver.c explains). */
#define RM_CUDA_DRIVER_API_VERSION 13000

/** How many entry points rm_cuda_driver_open() binds (all required). */
#define RM_CUDA_DRIVER_ENTRY_POINTS 37

/** How many virtual memory management entry points it binds besides
 *  (optional: see rm_cuda_driver_has_vmm()). */
#define RM_CUDA_DRIVER_VMM_ENTRY_POINTS 11

/** Most devices a driver object records. */
#define RM_CUDA_DRIVER_MAX_DEVICES 64

typedef struct rm_cuda_driver rm_cuda_driver;

/**
 * A reference to the process's driver object for `library` (NULL:
 * RM_CUDA_DRIVER_DEFAULT_LIBRARY; a soname or a path, as dlopen() takes
 * it). The first open of a library in a process loads it (RTLD_NOW |
 * RTLD_LOCAL), calls cuInit(0) and cuDriverGetVersion(), checks the
 * version, binds the entry points and reads every device's UUID; later
 * opens of the same name share that object. A failed open leaves
 * nothing behind, so a later open tries again from the start.
 *
 * @return RM_OK and *out; RM_E_INVALID_ARGUMENT (out is NULL, or the
 *         name is empty or too long); RM_E_FEATURE_UNAVAILABLE (the
 *         message says which case); RM_E_FORKED (CUDA was initialised in
 *         the parent of this fork()ed process); RM_E_QUOTA_EXCEEDED (more
 *         than 8 distinct libraries); RM_E_NO_MEMORY.
 */
int32_t rm_cuda_driver_open(const char *library, const void *error_owner, rm_cuda_driver **out);

/**
 * Drops a reference. The last one releases the primary contexts the
 * object retained (in the process that opened it, never in a forked
 * child). The library itself stays loaded until the process exits: an
 * initialised libcuda has threads and exit handlers of its own and must
 * not be unloaded (NCCL and PyTorch never unload it either); a later
 * open of the same name reuses the object. NULL is ignored.
 */
void rm_cuda_driver_release(rm_cuda_driver *driver);

/** cuDriverGetVersion() as read at open (e.g. 12080 for 12.8). */
int rm_cuda_driver_version(const rm_cuda_driver *driver);

/** Devices visible to this process (CUDA_VISIBLE_DEVICES applies). */
int rm_cuda_driver_device_count(const rm_cuda_driver *driver);

/** The library name as opened. */
const char *rm_cuda_driver_library(const rm_cuda_driver *driver);

/** True when the entry points were bound through cuGetProcAddress_v2,
 *  false when by dlsym() of their versioned names. */
bool rm_cuda_driver_uses_proc_address(const rm_cuda_driver *driver);

/**
 * The 16-byte UUID of local device `ordinal`.
 * @return RM_OK; RM_E_INVALID_ARGUMENT (ordinal out of range, NULL).
 */
int32_t rm_cuda_driver_device_uuid(const rm_cuda_driver *driver, int ordinal, uint8_t uuid[16],
                                   const void *error_owner);

/**
 * The local ordinal of the device with this UUID: how a device named by
 * another process (whose CUDA_VISIBLE_DEVICES may differ) is found here.
 * @return RM_OK and *ordinal; RM_E_NOT_FOUND (no such device visible);
 *         RM_E_INVALID_ARGUMENT (NULL).
 */
int32_t rm_cuda_driver_ordinal_of_uuid(const rm_cuda_driver *driver, const uint8_t uuid[16],
                                       int *ordinal, const void *error_owner);

/** Writes "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (41 bytes, NUL
 *  included) into `text`, nvidia-smi's spelling of a UUID. */
void rm_cuda_uuid_format(const uint8_t uuid[16], char text[41]);

/**
 * One line for `rmctl info`: the driver version, the library, how the
 * entry points were bound, and each device's ordinal and UUID, e.g.
 * "CUDA driver 12.8 (libcuda.so.1, cuGetProcAddress_v2), 1 device: 0 GPU-…".
 * Writes at most `size` bytes, NUL included; returns the length the
 * whole line needs (like snprintf).
 */
size_t rm_cuda_driver_describe(const rm_cuda_driver *driver, char *text, size_t size);

/** The CUresult of the calling thread's last failed CUDA call through
 *  any driver object (CUDA_SUCCESS if none failed yet). */
CUresult rm_cuda_driver_last_result(void);

/* Thin wrappers. `ordinal` picks the device whose primary context is
 * current during the call; a pointer must belong to that context. */
int32_t rm_cuda_driver_mem_alloc(rm_cuda_driver *driver, int ordinal, size_t size,
                                 CUdeviceptr *pointer, const void *error_owner);
int32_t rm_cuda_driver_mem_free(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                const void *error_owner);
/** The allocation that contains `pointer`: its base and size. */
int32_t rm_cuda_driver_mem_address_range(rm_cuda_driver *driver, int ordinal,
                                         CUdeviceptr pointer, CUdeviceptr *base,
                                         size_t *size, const void *error_owner);
int32_t rm_cuda_driver_pointer_attribute(rm_cuda_driver *driver, int ordinal, void *data,
                                         CUpointer_attribute attribute, CUdeviceptr pointer,
                                         const void *error_owner);
int32_t rm_cuda_driver_memcpy_htod(rm_cuda_driver *driver, int ordinal, CUdeviceptr destination,
                                   const void *source, size_t size, const void *error_owner);
int32_t rm_cuda_driver_memcpy_dtoh(rm_cuda_driver *driver, int ordinal, void *destination,
                                   CUdeviceptr source, size_t size, const void *error_owner);
/** `base` must be the base of a cuMemAlloc allocation. */
int32_t rm_cuda_driver_ipc_get_mem_handle(rm_cuda_driver *driver, int ordinal,
                                          CUdeviceptr base, CUipcMemHandle *handle,
                                          const void *error_owner);
/** Opens with CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS. The driver refcounts
 *  re-opens of a handle in one context; each open needs its close. */
int32_t rm_cuda_driver_ipc_open_mem_handle(rm_cuda_driver *driver, int ordinal,
                                           const CUipcMemHandle *handle, CUdeviceptr *pointer,
                                           const void *error_owner);
int32_t rm_cuda_driver_ipc_close_mem_handle(rm_cuda_driver *driver, int ordinal,
                                            CUdeviceptr pointer, const void *error_owner);
int32_t rm_cuda_driver_event_create(rm_cuda_driver *driver, int ordinal, unsigned int flags,
                                    CUevent *event, const void *error_owner);
int32_t rm_cuda_driver_event_record(rm_cuda_driver *driver, int ordinal, CUevent event,
                                    CUstream stream, const void *error_owner);
int32_t rm_cuda_driver_event_synchronize(rm_cuda_driver *driver, int ordinal, CUevent event,
                                         const void *error_owner);
int32_t rm_cuda_driver_event_destroy(rm_cuda_driver *driver, int ordinal, CUevent event,
                                     const void *error_owner);
int32_t rm_cuda_driver_ipc_get_event_handle(rm_cuda_driver *driver, int ordinal, CUevent event,
                                            CUipcEventHandle *handle, const void *error_owner);
int32_t rm_cuda_driver_ipc_open_event_handle(rm_cuda_driver *driver, int ordinal,
                                             const CUipcEventHandle *handle, CUevent *event,
                                             const void *error_owner);
int32_t rm_cuda_driver_stream_wait_event(rm_cuda_driver *driver, int ordinal, CUstream stream,
                                         CUevent event, const void *error_owner);
int32_t rm_cuda_driver_stream_synchronize(rm_cuda_driver *driver, int ordinal, CUstream stream,
                                          const void *error_owner);

/** cuMemsetD8_v2: `count` bytes at `pointer` set to `value`. */
int32_t rm_cuda_driver_memset_d8(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                 unsigned char value, size_t count, const void *error_owner);
/** cuMemcpyDtoD_v2. Either side may be an IPC import. */
int32_t rm_cuda_driver_memcpy_dtod(rm_cuda_driver *driver, int ordinal, CUdeviceptr destination,
                                   CUdeviceptr source, size_t size, const void *error_owner);
/** cuMemcpyDtoDAsync_v2 on `stream` (NULL: the legacy default stream). */
int32_t rm_cuda_driver_memcpy_dtod_async(rm_cuda_driver *driver, int ordinal,
                                         CUdeviceptr destination, CUdeviceptr source,
                                         size_t size, CUstream stream, const void *error_owner);
/** cuMemGetInfo_v2: the free and total bytes of the device, as the
 *  driver counts them (memory of every process on it). */
int32_t rm_cuda_driver_mem_get_info(rm_cuda_driver *driver, int ordinal, size_t *free_bytes,
                                    size_t *total_bytes, const void *error_owner);
/** cuStreamCreate; `flags` CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING. */
int32_t rm_cuda_driver_stream_create(rm_cuda_driver *driver, int ordinal, unsigned int flags,
                                     CUstream *stream, const void *error_owner);
/** cuStreamDestroy_v2. */
int32_t rm_cuda_driver_stream_destroy(rm_cuda_driver *driver, int ordinal, CUstream stream,
                                      const void *error_owner);
/**
 * cuEventQuery. @return RM_OK when the work the event last recorded is
 * done (an event never recorded is done); RM_E_BUSY with a short message
 * when not yet (CUDA_ERROR_NOT_READY, also what
 * rm_cuda_driver_last_result() then gives); other codes as for the
 * other wrappers.
 */
int32_t rm_cuda_driver_event_query(rm_cuda_driver *driver, int ordinal, CUevent event,
                                   const void *error_owner);
/** cuCtxSynchronize: waits for all work of `ordinal`'s primary context. */
int32_t rm_cuda_driver_ctx_synchronize(rm_cuda_driver *driver, int ordinal,
                                       const void *error_owner);
/**
 * The local ordinal of the device a device pointer belongs to
 * (CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, asked in device 0's primary
 * context: with unified addressing any context answers for any pointer).
 * An IPC import counts as memory of the device it was opened on.
 * @return RM_OK and *ordinal; RM_E_INVALID_ARGUMENT with a message when
 *         the pointer is not device memory the driver knows (host memory,
 *         freed, a closed import) or `ordinal` is NULL; as the other
 *         wrappers otherwise.
 */
int32_t rm_cuda_driver_pointer_ordinal(rm_cuda_driver *driver, CUdeviceptr pointer,
                                       int *ordinal, const void *error_owner);


/* ---- virtual memory management (VMM) ------------------------------------------
 *
 * Physical allocations (cuMemCreate) named by a CUmemGenericAllocationHandle,
 * shared between processes as POSIX file descriptors and mapped into
 * address ranges each process reserves: the way to share memory that
 * outlives its creator (legacy IPC memory dies with its exporter) and to
 * map it read-only in hardware. The memory is freed only when every
 * process released every handle to it (including imported ones), closed
 * every descriptor exported for it and unmapped every mapping of it.
 *
 * Optional: a driver without the 11 entry points (hidden, or too old), or
 * a device whose CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED or
 * CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED is 0,
 * still opens (legacy IPC works), and every vmm_* wrapper then returns
 * RM_E_FEATURE_UNAVAILABLE with a message naming the missing entry point
 * or the attribute. Otherwise they fail as the other wrappers, each in
 * `ordinal`'s primary context. Sizes must be multiples of
 * rm_cuda_driver_vmm_granularity() (CUDA_ERROR_INVALID_VALUE, so
 * RM_E_INVALID_ARGUMENT, otherwise). */

/** True when VMM with POSIX descriptors works on `ordinal`: the entry
 *  points were bound and the device says it supports both (asked once). */
bool rm_cuda_driver_has_vmm(rm_cuda_driver *driver, int ordinal);

/** cuMemGetAllocationGranularity (MINIMUM) for the allocations
 *  rm_cuda_driver_vmm_create() makes: 2 MiB on current GPUs. */
int32_t rm_cuda_driver_vmm_granularity(rm_cuda_driver *driver, int ordinal, size_t *granularity,
                                       const void *error_owner);

/** cuMemCreate: `size` bytes of pinned memory on the device, exportable
 *  as a POSIX descriptor. Not mapped anywhere yet. */
int32_t rm_cuda_driver_vmm_create(rm_cuda_driver *driver, int ordinal, size_t size,
                                  CUmemGenericAllocationHandle *handle, const void *error_owner);

/** cuMemRelease: drops one reference to a handle (from create, import or
 *  retain). The memory lives on while mapped or referenced elsewhere. */
int32_t rm_cuda_driver_vmm_release(rm_cuda_driver *driver, int ordinal,
                                   CUmemGenericAllocationHandle handle, const void *error_owner);

/** cuMemExportToShareableHandle(POSIX_FD): a new descriptor for the
 *  allocation, made close-on-exec; the caller's to send (SCM_RIGHTS) and
 *  close. While it is open, the memory lives. */
int32_t rm_cuda_driver_vmm_export_fd(rm_cuda_driver *driver, int ordinal,
                                     CUmemGenericAllocationHandle handle, int *fd,
                                     const void *error_owner);

/** cuMemImportFromShareableHandle(POSIX_FD): a handle of this process to
 *  the allocation behind `fd` (received from another process). `fd` stays
 *  the caller's: close it once imported; the handle keeps the memory. */
int32_t rm_cuda_driver_vmm_import_fd(rm_cuda_driver *driver, int ordinal, int fd,
                                     CUmemGenericAllocationHandle *handle,
                                     const void *error_owner);

/** cuMemRetainAllocationHandle: the handle mapped at `pointer` (any
 *  address inside a mapping), with a new reference to release. */
int32_t rm_cuda_driver_vmm_retain(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                  CUmemGenericAllocationHandle *handle, const void *error_owner);

/**
 * Maps a whole allocation: cuMemAddressReserve of exactly `size` bytes,
 * cuMemMap at offset 0 (the only offset the driver accepts; `size` must be
 * the allocation's), and cuMemSetAccess for this device, READWRITE when
 * `writable`, READ otherwise (a write through a READ mapping faults on a
 * GPU: keep readers' mappings READ). A failed step undoes the earlier
 * ones; the message names it. Undo with rm_cuda_driver_vmm_unmap().
 */
int32_t rm_cuda_driver_vmm_map(rm_cuda_driver *driver, int ordinal,
                               CUmemGenericAllocationHandle handle, size_t size, bool writable,
                               CUdeviceptr *pointer, const void *error_owner);

/** cuMemSetAccess of a mapped range for this device: READWRITE or READ
 *  (sealing: a writer maps READWRITE, fills, synchronises, then READ). */
int32_t rm_cuda_driver_vmm_set_access(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                      size_t size, bool writable, const void *error_owner);

/** cuMemUnmap, then cuMemAddressFree, of what rm_cuda_driver_vmm_map()
 *  gave. Neither synchronises: finish the work that uses it first. */
int32_t rm_cuda_driver_vmm_unmap(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                 size_t size, const void *error_owner);

#endif
