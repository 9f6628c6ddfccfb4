/* The part of the CUDA driver API the plugin uses, declared by us.
 *
 * The build never includes NVIDIA's cuda.h nor links libcuda: the driver
 * is dlopen()ed on first use (cuda_driver.c), so this header declares
 * only what crosses that boundary: the result codes we branch on or
 * name in messages, the opaque handle types, the 64-byte IPC handles,
 * the flags and attributes we pass, and one function-pointer type per
 * entry point. The values are the driver's ABI (stable across CUDA
 * releases); the names are NVIDIA's so that a reader can look them up.
 *
 * Versioned entry points. cuda.h maps several plain names onto newer
 * symbols (cuMemAlloc -> cuMemAlloc_v2, cuIpcOpenMemHandle ->
 * cuIpcOpenMemHandle_v2, ...). The plain symbols still exist in
 * libcuda.so.1 with their OLD ABI (cuMemGetAddressRange with a 32-bit
 * size, for instance), so the typedefs below are named after, and only
 * ever bound to, the versioned symbol. */
#ifndef RM_CUDA_API_H
#define RM_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

typedef int CUresult;
#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_DEINITIALIZED 4
#define CUDA_ERROR_STUB_LIBRARY 34
#define CUDA_ERROR_NO_DEVICE 100
#define CUDA_ERROR_INVALID_DEVICE 101
#define CUDA_ERROR_INVALID_CONTEXT 201
#define CUDA_ERROR_INVALID_HANDLE 400
#define CUDA_ERROR_NOT_FOUND 500
#define CUDA_ERROR_NOT_READY 600
#define CUDA_ERROR_ILLEGAL_ADDRESS 700
#define CUDA_ERROR_NOT_SUPPORTED 801
#define CUDA_ERROR_UNKNOWN 999

typedef int CUdevice;
typedef unsigned long long CUdeviceptr; /* 64-bit builds only */
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;

/* The legacy default stream, by its handle value (CU_STREAM_LEGACY);
 * a NULL stream means the same thing for the _v2 entry points we bind.
 * CU_STREAM_PER_THREAD is the calling thread's default stream. */
#define RM_CU_STREAM_LEGACY ((CUstream)0x1)
#define RM_CU_STREAM_PER_THREAD ((CUstream)0x2)

/* cuStreamCreate flags. */
#define CU_STREAM_DEFAULT 0x0u
#define CU_STREAM_NON_BLOCKING 0x1u

#define CU_IPC_HANDLE_SIZE 64
typedef struct CUipcMemHandle {
    char reserved[CU_IPC_HANDLE_SIZE];
} CUipcMemHandle;
typedef struct CUipcEventHandle {
    char reserved[CU_IPC_HANDLE_SIZE];
} CUipcEventHandle;
typedef struct CUuuid {
    char bytes[16];
} CUuuid;

_Static_assert(sizeof(CUdeviceptr) == 8, "CUdeviceptr is 64-bit");
_Static_assert(sizeof(CUipcMemHandle) == 64, "CUipcMemHandle is 64 bytes");
_Static_assert(sizeof(CUipcEventHandle) == 64, "CUipcEventHandle is 64 bytes");
_Static_assert(sizeof(CUuuid) == 16, "CUuuid is 16 bytes");

/* cuIpcOpenMemHandle_v2: the only flag the driver accepts. */
#define CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS 0x1u

/* cuEventCreate flags; an interprocess event must disable timing. */
#define CU_EVENT_DEFAULT 0x0u
#define CU_EVENT_BLOCKING_SYNC 0x1u
#define CU_EVENT_DISABLE_TIMING 0x2u
#define CU_EVENT_INTERPROCESS 0x4u

/* cuGetProcAddress_v2: flags and the status it reports. */
#define CU_GET_PROC_ADDRESS_DEFAULT 0x0u
#define CU_GET_PROC_ADDRESS_LEGACY_STREAM 0x1u
#define CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM 0x2u
typedef int CUdriverProcAddressQueryResult;
#define CU_GET_PROC_ADDRESS_SUCCESS 0
#define CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND 1
#define CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT 2

/* cuDeviceGetAttribute: the attributes we ask for. */
typedef int CUdevice_attribute;
#define CU_DEVICE_ATTRIBUTE_PCI_BUS_ID 33
#define CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING 41
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED 102
#define CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED 103
#define CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED 125

/* cuPointerGetAttribute: the attributes we ask for. */
typedef int CUpointer_attribute;
#define CU_POINTER_ATTRIBUTE_CONTEXT 1
#define CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define CU_POINTER_ATTRIBUTE_BUFFER_ID 7
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9
#define CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE 10
#define CU_POINTER_ATTRIBUTE_RANGE_START_ADDR 11
#define CU_POINTER_ATTRIBUTE_RANGE_SIZE 12
#define CU_MEMORYTYPE_DEVICE 0x2u

/* Virtual memory management (cuMemCreate and friends, CUDA 10.2): physical
 * allocations named by an opaque 64-bit handle, mapped into address
 * ranges the caller reserves, shared between processes as a POSIX file
 * descriptor. The enums are ints in cuda.h; the structs below have
 * cuda.h's layout exactly (check_cuda_api.py compiles both headers and
 * compares sizes and offsets). */
typedef unsigned long long CUmemGenericAllocationHandle;

typedef int CUmemAllocationType;
#define CU_MEM_ALLOCATION_TYPE_PINNED 0x1

typedef int CUmemAllocationHandleType;
#define CU_MEM_HANDLE_TYPE_NONE 0x0
#define CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR 0x1
#define CU_MEM_HANDLE_TYPE_FABRIC 0x8

typedef int CUmemLocationType;
#define CU_MEM_LOCATION_TYPE_DEVICE 0x1

typedef int CUmemAccess_flags;
#define CU_MEM_ACCESS_FLAGS_PROT_NONE 0x0
#define CU_MEM_ACCESS_FLAGS_PROT_READ 0x1
#define CU_MEM_ACCESS_FLAGS_PROT_READWRITE 0x3

typedef int CUmemAllocationGranularity_flags;
#define CU_MEM_ALLOC_GRANULARITY_MINIMUM 0x0
#define CU_MEM_ALLOC_GRANULARITY_RECOMMENDED 0x1

/* Where memory lives, or who may access it: for us always a device
 * (type CU_MEM_LOCATION_TYPE_DEVICE, id its ordinal). */
typedef struct CUmemLocation {
    CUmemLocationType type;
    int id;
} CUmemLocation;

/* What cuMemCreate makes: pinned device memory, exportable as the
 * handle types requested. Fields we do not use must be zero. */
typedef struct CUmemAllocationProp {
    CUmemAllocationType type;
    CUmemAllocationHandleType requestedHandleTypes;
    CUmemLocation location;
    void *win32HandleMetaData; /* Windows only */
    struct {
        unsigned char compressionType;
        unsigned char gpuDirectRDMACapable;
        unsigned short usage;
        unsigned char reserved[4];
    } allocFlags;
} CUmemAllocationProp;

/* One location's access to a mapped range (cuMemSetAccess). */
typedef struct CUmemAccessDesc {
    CUmemLocation location;
    CUmemAccess_flags flags;
} CUmemAccessDesc;

_Static_assert(sizeof(CUmemGenericAllocationHandle) == 8, "a VMM handle is 64-bit");
_Static_assert(sizeof(CUmemLocation) == 8, "CUmemLocation is 8 bytes");
_Static_assert(sizeof(CUmemAllocationProp) == 32, "CUmemAllocationProp is 32 bytes");
_Static_assert(offsetof(CUmemAllocationProp, location) == 8, "CUmemAllocationProp.location");
_Static_assert(offsetof(CUmemAllocationProp, allocFlags) == 24, "CUmemAllocationProp.allocFlags");
_Static_assert(sizeof(CUmemAccessDesc) == 12, "CUmemAccessDesc is 12 bytes");

/* One function-pointer type per entry point, named after the symbol it
 * is bound to. */
typedef CUresult (*PFN_cuInit)(unsigned int flags);
typedef CUresult (*PFN_cuDriverGetVersion)(int *version);
typedef CUresult (*PFN_cuGetProcAddress_v2)(const char *symbol, void **pfn, int cuda_version,
                                            uint64_t flags,
                                            CUdriverProcAddressQueryResult *status);
typedef CUresult (*PFN_cuGetErrorName)(CUresult error, const char **name);
typedef CUresult (*PFN_cuGetErrorString)(CUresult error, const char **text);
typedef CUresult (*PFN_cuDeviceGetCount)(int *count);
typedef CUresult (*PFN_cuDeviceGet)(CUdevice *device, int ordinal);
typedef CUresult (*PFN_cuDeviceGetAttribute)(int *value, CUdevice_attribute attribute,
                                             CUdevice device);
typedef CUresult (*PFN_cuDeviceGetUuid_v2)(CUuuid *uuid, CUdevice device);
typedef CUresult (*PFN_cuDevicePrimaryCtxRetain)(CUcontext *context, CUdevice device);
typedef CUresult (*PFN_cuDevicePrimaryCtxRelease_v2)(CUdevice device);
typedef CUresult (*PFN_cuCtxPushCurrent_v2)(CUcontext context);
typedef CUresult (*PFN_cuCtxPopCurrent_v2)(CUcontext *context);
/* The CUDA 2.0 signature. CUDA 13.0 added cuCtxSynchronize_v2(CUcontext)
 * without mapping the plain name onto it in cuda.h, yet
 * cuGetProcAddress_v2("cuCtxSynchronize") returns it for versions from
 * 13000: cuda_driver.c asks for this one with an older version. */
typedef CUresult (*PFN_cuCtxSynchronize)(void);
typedef CUresult (*PFN_cuMemAlloc_v2)(CUdeviceptr *pointer, size_t size);
typedef CUresult (*PFN_cuMemFree_v2)(CUdeviceptr pointer);
typedef CUresult (*PFN_cuMemGetInfo_v2)(size_t *free_bytes, size_t *total_bytes);
typedef CUresult (*PFN_cuMemGetAddressRange_v2)(CUdeviceptr *base, size_t *size,
                                                CUdeviceptr pointer);
typedef CUresult (*PFN_cuMemcpyHtoD_v2)(CUdeviceptr destination, const void *source,
                                        size_t size);
typedef CUresult (*PFN_cuMemcpyDtoH_v2)(void *destination, CUdeviceptr source, size_t size);
typedef CUresult (*PFN_cuMemcpyDtoD_v2)(CUdeviceptr destination, CUdeviceptr source,
                                        size_t size);
typedef CUresult (*PFN_cuMemcpyDtoDAsync_v2)(CUdeviceptr destination, CUdeviceptr source,
                                             size_t size, CUstream stream);
typedef CUresult (*PFN_cuMemsetD8_v2)(CUdeviceptr destination, unsigned char value,
                                      size_t count);
typedef CUresult (*PFN_cuPointerGetAttribute)(void *data, CUpointer_attribute attribute,
                                              CUdeviceptr pointer);
typedef CUresult (*PFN_cuIpcGetMemHandle)(CUipcMemHandle *handle, CUdeviceptr pointer);
/* The handle is passed by value, all 64 bytes. */
typedef CUresult (*PFN_cuIpcOpenMemHandle_v2)(CUdeviceptr *pointer, CUipcMemHandle handle,
                                              unsigned int flags);
typedef CUresult (*PFN_cuIpcCloseMemHandle)(CUdeviceptr pointer);
typedef CUresult (*PFN_cuEventCreate)(CUevent *event, unsigned int flags);
typedef CUresult (*PFN_cuEventRecord)(CUevent event, CUstream stream);
typedef CUresult (*PFN_cuEventSynchronize)(CUevent event);
typedef CUresult (*PFN_cuEventQuery)(CUevent event);
typedef CUresult (*PFN_cuEventDestroy_v2)(CUevent event);
typedef CUresult (*PFN_cuIpcGetEventHandle)(CUipcEventHandle *handle, CUevent event);
typedef CUresult (*PFN_cuIpcOpenEventHandle)(CUevent *event, CUipcEventHandle handle);
typedef CUresult (*PFN_cuStreamWaitEvent)(CUstream stream, CUevent event, unsigned int flags);
typedef CUresult (*PFN_cuStreamSynchronize)(CUstream stream);
typedef CUresult (*PFN_cuStreamCreate)(CUstream *stream, unsigned int flags);
typedef CUresult (*PFN_cuStreamDestroy_v2)(CUstream stream);

/* Virtual memory management. None has a versioned symbol: cuda.h maps
 * no plain name here, so the symbol is the base name. */
typedef CUresult (*PFN_cuMemGetAllocationGranularity)(size_t *granularity,
                                                      const CUmemAllocationProp *prop,
                                                      CUmemAllocationGranularity_flags option);
typedef CUresult (*PFN_cuMemCreate)(CUmemGenericAllocationHandle *handle, size_t size,
                                    const CUmemAllocationProp *prop, unsigned long long flags);
typedef CUresult (*PFN_cuMemRelease)(CUmemGenericAllocationHandle handle);
typedef CUresult (*PFN_cuMemAddressReserve)(CUdeviceptr *pointer, size_t size, size_t alignment,
                                            CUdeviceptr address, unsigned long long flags);
typedef CUresult (*PFN_cuMemAddressFree)(CUdeviceptr pointer, size_t size);
typedef CUresult (*PFN_cuMemMap)(CUdeviceptr pointer, size_t size, size_t offset,
                                 CUmemGenericAllocationHandle handle, unsigned long long flags);
typedef CUresult (*PFN_cuMemUnmap)(CUdeviceptr pointer, size_t size);
typedef CUresult (*PFN_cuMemSetAccess)(CUdeviceptr pointer, size_t size,
                                       const CUmemAccessDesc *desc, size_t count);
/* For CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, `shareable` points to an
 * int that receives a new descriptor, the caller's to close. */
typedef CUresult (*PFN_cuMemExportToShareableHandle)(void *shareable,
                                                     CUmemGenericAllocationHandle handle,
                                                     CUmemAllocationHandleType type,
                                                     unsigned long long flags);
/* For a POSIX descriptor, `os_handle` is the descriptor's value cast to a
 * pointer ((void *)(intptr_t)fd); the caller still owns (and closes) it. */
typedef CUresult (*PFN_cuMemImportFromShareableHandle)(CUmemGenericAllocationHandle *handle,
                                                       void *os_handle,
                                                       CUmemAllocationHandleType type);
typedef CUresult (*PFN_cuMemRetainAllocationHandle)(CUmemGenericAllocationHandle *handle,
                                                    void *address);

#endif
