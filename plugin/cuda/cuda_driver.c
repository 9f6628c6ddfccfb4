/* The plugin's one way to the CUDA driver: loaded on first use, bound by
 * versioned entry point, refused after fork().
 *
 * One object per library per process, shared and reference-counted,
 * rather than one per caller: the driver's state is process-wide anyway
 * (cuInit, the primary contexts, what an IPC handle was opened in), so
 * two plugin contexts that name the same library must share one set of
 * primary-context references and one view of the devices; and a
 * process-wide list is what lets a forked child see that CUDA was
 * initialised before the fork and refuse, whichever object it reaches
 * for. A failed open records nothing, so it is retried from the start by
 * the next open (the fault may have been fixed meanwhile: a driver
 * installed, a stub directory taken off the path).
 *
 * Binding. Plain symbols of libcuda.so.1 keep their oldest ABI
 * (cuda_api.h), so every entry point is asked for by its base name and
 * our API version through cuGetProcAddress_v2, which returns the version
 * matching that API, as NCCL and PyTorch do; drivers older than 12.0
 * have no cuGetProcAddress_v2 and get dlsym() of the versioned name
 * instead. A plain legacy name is never looked up. */
#include "cuda_driver.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "fork.h"

/* X(base name, symbol it is bound to, CUDA version to ask for). The
 * field holding each pointer is named after the symbol, and its type is
 * PFN_<symbol> (cuda_api.h). The version is our API version, except
 * where a newer CUDA gave the base name a new signature without cuda.h
 * mapping the plain name onto it: cuGetProcAddress_v2 would hand back
 * that newer function for our API version (cuCtxSynchronize gets
 * cuCtxSynchronize_v2(CUcontext) from 13000 on), so we ask with a version
 * from before it. tests/fake_cuda/check_cuda_api.py checks both columns
 * against cuda.h and cudaTypedefs.h. */
#define API_VERSION RM_CUDA_DRIVER_API_VERSION
#define BEFORE_CUDA_13 12000
#define RM_CUDA_ENTRY_POINT_LIST(X)                                           \
    X(cuInit, cuInit, API_VERSION)                                            \
    X(cuDriverGetVersion, cuDriverGetVersion, API_VERSION)                    \
    X(cuGetErrorName, cuGetErrorName, API_VERSION)                            \
    X(cuGetErrorString, cuGetErrorString, API_VERSION)                        \
    X(cuDeviceGetCount, cuDeviceGetCount, API_VERSION)                        \
    X(cuDeviceGet, cuDeviceGet, API_VERSION)                                  \
    X(cuDeviceGetAttribute, cuDeviceGetAttribute, API_VERSION)                \
    X(cuDeviceGetUuid, cuDeviceGetUuid_v2, API_VERSION)                       \
    X(cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, API_VERSION)        \
    X(cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, API_VERSION)   \
    X(cuCtxPushCurrent, cuCtxPushCurrent_v2, API_VERSION)                     \
    X(cuCtxPopCurrent, cuCtxPopCurrent_v2, API_VERSION)                       \
    X(cuCtxSynchronize, cuCtxSynchronize, BEFORE_CUDA_13)                     \
    X(cuMemAlloc, cuMemAlloc_v2, API_VERSION)                                 \
    X(cuMemFree, cuMemFree_v2, API_VERSION)                                   \
    X(cuMemGetInfo, cuMemGetInfo_v2, API_VERSION)                             \
    X(cuMemGetAddressRange, cuMemGetAddressRange_v2, API_VERSION)             \
    X(cuMemcpyHtoD, cuMemcpyHtoD_v2, API_VERSION)                             \
    X(cuMemcpyDtoH, cuMemcpyDtoH_v2, API_VERSION)                             \
    X(cuMemcpyDtoD, cuMemcpyDtoD_v2, API_VERSION)                             \
    X(cuMemcpyDtoDAsync, cuMemcpyDtoDAsync_v2, API_VERSION)                   \
    X(cuMemsetD8, cuMemsetD8_v2, API_VERSION)                                 \
    X(cuPointerGetAttribute, cuPointerGetAttribute, API_VERSION)              \
    X(cuIpcGetMemHandle, cuIpcGetMemHandle, API_VERSION)                      \
    X(cuIpcOpenMemHandle, cuIpcOpenMemHandle_v2, API_VERSION)                 \
    X(cuIpcCloseMemHandle, cuIpcCloseMemHandle, API_VERSION)                  \
    X(cuEventCreate, cuEventCreate, API_VERSION)                              \
    X(cuEventRecord, cuEventRecord, API_VERSION)                              \
    X(cuEventSynchronize, cuEventSynchronize, API_VERSION)                    \
    X(cuEventQuery, cuEventQuery, API_VERSION)                                \
    X(cuEventDestroy, cuEventDestroy_v2, API_VERSION)                         \
    X(cuIpcGetEventHandle, cuIpcGetEventHandle, API_VERSION)                  \
    X(cuIpcOpenEventHandle, cuIpcOpenEventHandle, API_VERSION)                \
    X(cuStreamWaitEvent, cuStreamWaitEvent, API_VERSION)                      \
    X(cuStreamSynchronize, cuStreamSynchronize, API_VERSION)                  \
    X(cuStreamCreate, cuStreamCreate, API_VERSION)                            \
    X(cuStreamDestroy, cuStreamDestroy_v2, API_VERSION)

/* Virtual memory management, optional: a driver without them (hidden, or
 * too old for one of them) still opens, for legacy IPC, and the vmm_*
 * wrappers then say why they cannot work. All or none: one missing
 * leaves VMM unavailable. Same columns as above. */
#define RM_CUDA_VMM_ENTRY_POINT_LIST(X)                                       \
    X(cuMemGetAllocationGranularity, cuMemGetAllocationGranularity, API_VERSION) \
    X(cuMemCreate, cuMemCreate, API_VERSION)                                  \
    X(cuMemRelease, cuMemRelease, API_VERSION)                                \
    X(cuMemAddressReserve, cuMemAddressReserve, API_VERSION)                  \
    X(cuMemAddressFree, cuMemAddressFree, API_VERSION)                        \
    X(cuMemMap, cuMemMap, API_VERSION)                                        \
    X(cuMemUnmap, cuMemUnmap, API_VERSION)                                    \
    X(cuMemSetAccess, cuMemSetAccess, API_VERSION)                            \
    X(cuMemExportToShareableHandle, cuMemExportToShareableHandle, API_VERSION) \
    X(cuMemImportFromShareableHandle, cuMemImportFromShareableHandle, API_VERSION) \
    X(cuMemRetainAllocationHandle, cuMemRetainAllocationHandle, API_VERSION)

typedef struct entry_points {
#define RM_CUDA_FIELD_(base, symbol, version) PFN_##symbol symbol;
    RM_CUDA_ENTRY_POINT_LIST(RM_CUDA_FIELD_)
    RM_CUDA_VMM_ENTRY_POINT_LIST(RM_CUDA_FIELD_)
#undef RM_CUDA_FIELD_
} entry_points;

static const struct entry_point_name {
    const char *base;
    const char *symbol;
    int version; /* the newest CUDA version to ask cuGetProcAddress_v2 for */
    size_t offset;
} entry_point_names[] = {
#define RM_CUDA_NAME_(base, symbol, version) {#base, #symbol, version, offsetof(entry_points, symbol)},
    RM_CUDA_ENTRY_POINT_LIST(RM_CUDA_NAME_)
    RM_CUDA_VMM_ENTRY_POINT_LIST(RM_CUDA_NAME_)
#undef RM_CUDA_NAME_
};

_Static_assert(sizeof entry_point_names / sizeof entry_point_names[0] ==
                   RM_CUDA_DRIVER_ENTRY_POINTS + RM_CUDA_DRIVER_VMM_ENTRY_POINTS,
               "RM_CUDA_DRIVER_ENTRY_POINTS and RM_CUDA_DRIVER_VMM_ENTRY_POINTS count the lists");

#define LIBRARY_NAME_MAX 256
#define MAX_LIBRARIES 8

struct rm_cuda_driver {
    char library[LIBRARY_NAME_MAX];
    void *dl;
    pid_t pid;                /* the process that initialised it */
    uint64_t fork_generation; /* rm_fork_generation() then */
    int version;
    bool proc_address;
    int device_count;
    unsigned refs; /* under drivers_lock */
    entry_points cu;
    /* The first VMM entry point not found (NULL: all bound), and how. */
    const char *vmm_missing;
    CUdevice devices[RM_CUDA_DRIVER_MAX_DEVICES];
    /* Per device, whether it supports VMM with POSIX descriptors: 0 not
     * asked yet, VMM_YES or VMM_NO (asked once, on first use). */
    _Atomic int vmm_support[RM_CUDA_DRIVER_MAX_DEVICES];
    uint8_t uuids[RM_CUDA_DRIVER_MAX_DEVICES][16];
    /* Retained on a device's first call, released with the last ref. */
    _Atomic(CUcontext) primary[RM_CUDA_DRIVER_MAX_DEVICES];
};

/* Every driver object this process (or the parent it was forked from)
 * initialised. Objects are never freed: a re-open reuses them, and a
 * forked child must still see that its parent initialised CUDA. */
static pthread_mutex_t drivers_lock = PTHREAD_MUTEX_INITIALIZER;
static rm_cuda_driver *drivers[MAX_LIBRARIES];
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static _Thread_local CUresult last_result;

/* Held across fork(), as registry.c does with its wait-for graph lock, so
 * that a child never inherits it held by a thread it does not have. */
static void drivers_lock_acquire(void)
{
    pthread_mutex_lock(&drivers_lock);
}

static void drivers_lock_release(void)
{
    pthread_mutex_unlock(&drivers_lock);
}

static void install_atfork(void)
{
    /* The plugin is linked -z nodelete, so the handlers outlive no code. */
    (void)pthread_atfork(drivers_lock_acquire, drivers_lock_release, drivers_lock_release);
}

static bool is_forked_copy(const rm_cuda_driver *driver)
{
    /* rm_fork_hook_install() ran before the generation was recorded
     * (rm_cuda_driver_open), so the generation alone tells a child; a
     * getpid() here would be a system call on every CUDA call. */
    return rm_fork_generation() != driver->fork_generation;
}

static int32_t forked_error(const rm_cuda_driver *driver, const char *call, const void *owner)
{
    return rm_error_set(owner, RM_E_FORKED,
                        "%s: CUDA was initialised in process %ld, the parent of this fork()ed "
                        "process, and cannot be used after fork(): exec a new process, or "
                        "initialise CUDA only after forking",
                        call, (long)driver->pid);
}

/* Names for the codes we can meet before cuGetErrorName is bound. */
static const char *known_result_name(CUresult result)
{
    switch (result) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_DEINITIALIZED: return "CUDA_ERROR_DEINITIALIZED";
    case CUDA_ERROR_STUB_LIBRARY: return "CUDA_ERROR_STUB_LIBRARY";
    case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    default: return "a CUDA error";
    }
}

static const char *result_name(const rm_cuda_driver *driver, CUresult result)
{
    const char *name = NULL;
    if (driver != NULL && driver->cu.cuGetErrorName != NULL &&
        driver->cu.cuGetErrorName(result, &name) == CUDA_SUCCESS && name != NULL)
        return name;
    return known_result_name(result);
}

static int32_t code_of(CUresult result)
{
    switch (result) {
    case CUDA_ERROR_OUT_OF_MEMORY:
        return RM_E_NO_MEMORY;
    case CUDA_ERROR_INVALID_VALUE:
    case CUDA_ERROR_INVALID_DEVICE:
    case CUDA_ERROR_INVALID_HANDLE:
    case CUDA_ERROR_NOT_FOUND:
        return RM_E_INVALID_ARGUMENT;
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_STUB_LIBRARY:
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_NOT_SUPPORTED:
        return RM_E_FEATURE_UNAVAILABLE;
    case CUDA_ERROR_DEINITIALIZED:
        return RM_E_SHUTTING_DOWN;
    default:
        return RM_E_SYSTEM;
    }
}

static int32_t cu_failed(const rm_cuda_driver *driver, const void *owner, CUresult result,
                         const char *call)
{
    last_result = result;
    const char *text = NULL;
    if (driver->cu.cuGetErrorString == NULL ||
        driver->cu.cuGetErrorString(result, &text) != CUDA_SUCCESS || text == NULL)
        text = "no description";
    return rm_error_set(owner, code_of(result), "%s failed: %s (%d): %s", call,
                        result_name(driver, result), (int)result, text);
}

/* ---- loading ------------------------------------------------------------ */

static void *symbol_of(void *dl, const char *name)
{
    return dlsym(dl, name);
}

/* The stub answers cuInit and cuDriverGetVersion alike. */
static int32_t stub_error(const char *library, const char *call, const void *owner)
{
    return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                        "%s is NVIDIA's stub library (CUDA_ERROR_STUB_LIBRARY from %s): a "
                        "stubs directory (such as /usr/local/cuda/lib64/stubs) on "
                        "LD_LIBRARY_PATH shadows the real driver; take it off the path",
                        library, call);
}

static int32_t no_device_error(const char *library, const char *call, const void *owner)
{
    return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                        "the CUDA driver %s sees no GPU (CUDA_ERROR_NO_DEVICE from %s): check "
                        "nvidia-smi, and that CUDA_VISIBLE_DEVICES is not empty",
                        library, call);
}

static int32_t bind_entry_points(rm_cuda_driver *driver, const void *owner)
{
    void *get_proc = symbol_of(driver->dl, "cuGetProcAddress_v2");
    PFN_cuGetProcAddress_v2 get_proc_address = NULL;
    memcpy(&get_proc_address, &get_proc, sizeof get_proc_address);
    driver->proc_address = get_proc_address != NULL;
    driver->vmm_missing = NULL;
    for (size_t i = 0; i < RM_CUDA_DRIVER_ENTRY_POINTS + RM_CUDA_DRIVER_VMM_ENTRY_POINTS; i++) {
        const struct entry_point_name *entry = &entry_point_names[i];
        /* Never newer than the driver: it refuses versions it does not know. */
        int version = driver->version < entry->version ? driver->version : entry->version;
        void *pointer = NULL;
        if (get_proc_address != NULL) {
            CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
            CUresult result = get_proc_address(entry->base, &pointer, version,
                                               CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status);
            if (result != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS)
                pointer = NULL;
        } else {
            pointer = symbol_of(driver->dl, entry->symbol);
        }
        if (pointer == NULL && i >= RM_CUDA_DRIVER_ENTRY_POINTS) {
            /* Optional: VMM is unavailable, the rest works. */
            if (driver->vmm_missing == NULL)
                driver->vmm_missing = entry->symbol;
            continue;
        }
        if (pointer == NULL)
            return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                                "the CUDA driver %s (version %d.%d) has no %s (looked up %s): "
                                "update the NVIDIA driver",
                                driver->library, driver->version / 1000,
                                driver->version % 1000 / 10, entry->symbol,
                                driver->proc_address ? "with cuGetProcAddress_v2"
                                                     : "with dlsym");
        memcpy((char *)&driver->cu + entry->offset, &pointer, sizeof pointer);
    }
    return RM_OK;
}

static int32_t read_devices(rm_cuda_driver *driver, const void *owner)
{
    int count = 0;
    CUresult result = driver->cu.cuDeviceGetCount(&count);
    if (result == CUDA_ERROR_NO_DEVICE || (result == CUDA_SUCCESS && count <= 0))
        return no_device_error(driver->library, "cuDeviceGetCount", owner);
    if (result != CUDA_SUCCESS)
        return cu_failed(driver, owner, result, "cuDeviceGetCount");
    /* More than 64 GPUs in one process: the rest stay invisible. */
    driver->device_count = count < RM_CUDA_DRIVER_MAX_DEVICES ? count : RM_CUDA_DRIVER_MAX_DEVICES;
    for (int i = 0; i < driver->device_count; i++) {
        result = driver->cu.cuDeviceGet(&driver->devices[i], i);
        if (result != CUDA_SUCCESS)
            return cu_failed(driver, owner, result, "cuDeviceGet");
        CUuuid uuid;
        result = driver->cu.cuDeviceGetUuid_v2(&uuid, driver->devices[i]);
        if (result != CUDA_SUCCESS)
            return cu_failed(driver, owner, result, "cuDeviceGetUuid_v2");
        memcpy(driver->uuids[i], uuid.bytes, 16);
    }
    return RM_OK;
}

/* Everything of an open but the sharing; on failure *out is NULL and the
 * library is closed again unless cuInit was called (see release). */
static int32_t driver_load(const char *library, const void *owner, rm_cuda_driver **out)
{
    *out = NULL;
    rm_cuda_driver *driver = calloc(1, sizeof *driver);
    if (driver == NULL)
        return rm_error_set(owner, RM_E_NO_MEMORY, "no memory for the CUDA driver object");
    snprintf(driver->library, sizeof driver->library, "%s", library);

    dlerror();
    driver->dl = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (driver->dl == NULL) {
        const char *why = dlerror();
        int32_t rc = rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                                  "CUDA driver not found: dlopen(\"%s\") failed (%s); install "
                                  "the NVIDIA driver, or name the path of its libcuda.so.1",
                                  library, why != NULL ? why : "no reason given");
        free(driver);
        return rc;
    }
    void *init_symbol = symbol_of(driver->dl, "cuInit");
    void *version_symbol = symbol_of(driver->dl, "cuDriverGetVersion");
    if (init_symbol == NULL || version_symbol == NULL) {
        int32_t rc = rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                                  "%s is not a CUDA driver: it has no %s", library,
                                  init_symbol == NULL ? "cuInit" : "cuDriverGetVersion");
        dlclose(driver->dl);
        free(driver);
        return rc;
    }
    memcpy(&driver->cu.cuInit, &init_symbol, sizeof init_symbol);
    memcpy(&driver->cu.cuDriverGetVersion, &version_symbol, sizeof version_symbol);
    void *name_symbol = symbol_of(driver->dl, "cuGetErrorName");
    memcpy(&driver->cu.cuGetErrorName, &name_symbol, sizeof name_symbol);

    /* From here on the library stays loaded whatever happens: cuInit may
     * have started driver threads. */
    int32_t rc = RM_OK;
    CUresult result = driver->cu.cuInit(0);
    if (result == CUDA_ERROR_STUB_LIBRARY) {
        rc = stub_error(library, "cuInit", owner);
    } else if (result == CUDA_ERROR_NO_DEVICE) {
        rc = no_device_error(library, "cuInit", owner);
    } else if (result != CUDA_SUCCESS) {
        last_result = result;
        rc = rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                          "cuInit(0) of the CUDA driver %s failed: %s (%d); see nvidia-smi "
                          "and the kernel log (dmesg) for the driver's state",
                          library, result_name(driver, result), (int)result);
    } else if ((result = driver->cu.cuDriverGetVersion(&driver->version)) != CUDA_SUCCESS) {
        if (result == CUDA_ERROR_STUB_LIBRARY) {
            rc = stub_error(library, "cuDriverGetVersion", owner);
        } else {
            last_result = result;
            rc = rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                              "cuDriverGetVersion of the CUDA driver %s failed: %s (%d)", library,
                              result_name(driver, result), (int)result);
        }
    } else if (driver->version < RM_CUDA_DRIVER_MIN_VERSION) {
        rc = rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                          "the CUDA driver %s is version %d.%d, older than the %d.%d this "
                          "plugin needs: update the NVIDIA driver",
                          library, driver->version / 1000, driver->version % 1000 / 10,
                          RM_CUDA_DRIVER_MIN_VERSION / 1000,
                          RM_CUDA_DRIVER_MIN_VERSION % 1000 / 10);
    } else {
        rc = bind_entry_points(driver, owner);
        if (rc == RM_OK)
            rc = read_devices(driver, owner);
    }
    if (rc != RM_OK) {
        free(driver);
        return rc;
    }
    driver->pid = getpid();
    driver->fork_generation = rm_fork_generation();
    *out = driver;
    return RM_OK;
}

int32_t rm_cuda_driver_open(const char *library, const void *owner, rm_cuda_driver **out)
{
    if (out == NULL)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT, "rm_cuda_driver_open: out is NULL");
    *out = NULL;
    if (library == NULL)
        library = RM_CUDA_DRIVER_DEFAULT_LIBRARY;
    size_t length = strlen(library);
    if (length == 0 || length >= LIBRARY_NAME_MAX)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "the CUDA driver library name is empty or longer than %d bytes",
                            LIBRARY_NAME_MAX - 1);
    rm_fork_hook_install();
    pthread_once(&atfork_once, install_atfork);

    pthread_mutex_lock(&drivers_lock);
    int32_t rc = RM_OK;
    int free_slot = -1;
    for (int i = 0; i < MAX_LIBRARIES; i++) {
        rm_cuda_driver *driver = drivers[i];
        if (driver == NULL) {
            if (free_slot < 0)
                free_slot = i;
            continue;
        }
        if (is_forked_copy(driver)) {
            rc = forked_error(driver, "rm_cuda_driver_open", owner);
            goto out;
        }
    }
    for (int i = 0; i < MAX_LIBRARIES; i++) {
        if (drivers[i] != NULL && strcmp(drivers[i]->library, library) == 0) {
            drivers[i]->refs++;
            *out = drivers[i];
            goto out;
        }
    }
    if (free_slot < 0) {
        rc = rm_error_set(owner, RM_E_QUOTA_EXCEEDED,
                          "%d different CUDA driver libraries are open in this process already",
                          MAX_LIBRARIES);
        goto out;
    }
    rm_cuda_driver *driver;
    rc = driver_load(library, owner, &driver);
    if (rc == RM_OK) {
        driver->refs = 1;
        drivers[free_slot] = driver;
        *out = driver;
    }
out:
    pthread_mutex_unlock(&drivers_lock);
    return rc;
}

void rm_cuda_driver_release(rm_cuda_driver *driver)
{
    if (driver == NULL)
        return;
    pthread_mutex_lock(&drivers_lock);
    if (driver->refs > 0 && --driver->refs == 0 && !is_forked_copy(driver)) {
        for (int i = 0; i < driver->device_count; i++) {
            CUcontext context = atomic_exchange(&driver->primary[i], NULL);
            if (context != NULL)
                (void)driver->cu.cuDevicePrimaryCtxRelease_v2(driver->devices[i]);
        }
    }
    pthread_mutex_unlock(&drivers_lock);
}

/* ---- what was read at open ------------------------------------------------ */

int rm_cuda_driver_version(const rm_cuda_driver *driver)
{
    return driver->version;
}

int rm_cuda_driver_device_count(const rm_cuda_driver *driver)
{
    return driver->device_count;
}

const char *rm_cuda_driver_library(const rm_cuda_driver *driver)
{
    return driver->library;
}

bool rm_cuda_driver_uses_proc_address(const rm_cuda_driver *driver)
{
    return driver->proc_address;
}

int32_t rm_cuda_driver_device_uuid(const rm_cuda_driver *driver, int ordinal, uint8_t uuid[16],
                                   const void *owner)
{
    if (driver == NULL || uuid == NULL)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT, "rm_cuda_driver_device_uuid: NULL");
    if (ordinal < 0 || ordinal >= driver->device_count)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "CUDA device %d does not exist here (%d visible)", ordinal,
                            driver->device_count);
    memcpy(uuid, driver->uuids[ordinal], 16);
    return RM_OK;
}

void rm_cuda_uuid_format(const uint8_t uuid[16], char text[41])
{
    static const char digits[] = "0123456789abcdef";
    char *p = text;
    memcpy(p, "GPU-", 4);
    p += 4;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = digits[uuid[i] >> 4];
        *p++ = digits[uuid[i] & 0xf];
    }
    *p = '\0';
}

int32_t rm_cuda_driver_ordinal_of_uuid(const rm_cuda_driver *driver, const uint8_t uuid[16],
                                       int *ordinal, const void *owner)
{
    if (driver == NULL || uuid == NULL || ordinal == NULL)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT, "rm_cuda_driver_ordinal_of_uuid: NULL");
    for (int i = 0; i < driver->device_count; i++) {
        if (memcmp(driver->uuids[i], uuid, 16) == 0) {
            *ordinal = i;
            return RM_OK;
        }
    }
    char text[41];
    rm_cuda_uuid_format(uuid, text);
    return rm_error_set(owner, RM_E_NOT_FOUND,
                        "no CUDA device with UUID %s is visible in this process (%d visible; "
                        "check CUDA_VISIBLE_DEVICES)",
                        text, driver->device_count);
}

size_t rm_cuda_driver_describe(const rm_cuda_driver *driver, char *text, size_t size)
{
    char scratch[1];
    if (text == NULL || size == 0) {
        text = scratch;
        size = sizeof scratch;
    }
    size_t used = 0;
    int n = snprintf(text, size, "CUDA driver %d.%d (%s, %s), %d device%s:",
                     driver->version / 1000, driver->version % 1000 / 10, driver->library,
                     driver->proc_address ? "cuGetProcAddress_v2" : "dlsym", driver->device_count,
                     driver->device_count == 1 ? "" : "s");
    used += n > 0 ? (size_t)n : 0;
    for (int i = 0; i < driver->device_count; i++) {
        char uuid[41];
        rm_cuda_uuid_format(driver->uuids[i], uuid);
        n = snprintf(text + (used < size ? used : size - 1), used < size ? size - used : 1,
                     " %d %s", i, uuid);
        used += n > 0 ? (size_t)n : 0;
    }
    return used + 1;
}

CUresult rm_cuda_driver_last_result(void)
{
    return last_result;
}

/* ---- calls in a device's primary context ----------------------------------- */

static int32_t enter(rm_cuda_driver *driver, int ordinal, const char *call, const void *owner)
{
    if (driver == NULL)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT, "%s: the driver object is NULL", call);
    if (is_forked_copy(driver))
        return forked_error(driver, call, owner);
    if (ordinal < 0 || ordinal >= driver->device_count)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "%s: CUDA device %d does not exist here (%d visible)", call, ordinal,
                            driver->device_count);
    CUcontext context = atomic_load(&driver->primary[ordinal]);
    if (context == NULL) {
        pthread_mutex_lock(&drivers_lock);
        context = atomic_load(&driver->primary[ordinal]);
        CUresult result = CUDA_SUCCESS;
        if (context == NULL) {
            result = driver->cu.cuDevicePrimaryCtxRetain(&context, driver->devices[ordinal]);
            if (result == CUDA_SUCCESS)
                atomic_store(&driver->primary[ordinal], context);
        }
        pthread_mutex_unlock(&drivers_lock);
        if (result != CUDA_SUCCESS)
            return cu_failed(driver, owner, result, "cuDevicePrimaryCtxRetain");
    }
    CUresult result = driver->cu.cuCtxPushCurrent_v2(context);
    if (result != CUDA_SUCCESS)
        return cu_failed(driver, owner, result, "cuCtxPushCurrent_v2");
    return RM_OK;
}

static void leave(rm_cuda_driver *driver)
{
    CUcontext popped;
    (void)driver->cu.cuCtxPopCurrent_v2(&popped);
}

/* One entry point called in `ordinal`'s primary context. */
#define CALL_IN_CONTEXT(driver, ordinal, owner, symbol, ...)                  \
    do {                                                                      \
        int32_t rc_ = enter(driver, ordinal, #symbol, owner);                 \
        if (rc_ != RM_OK)                                                     \
            return rc_;                                                       \
        CUresult result_ = (driver)->cu.symbol(__VA_ARGS__);                  \
        leave(driver);                                                        \
        return result_ == CUDA_SUCCESS ? RM_OK                                \
                                       : cu_failed(driver, owner, result_, #symbol); \
    } while (0)

#define REQUIRE(condition, call, owner)                                       \
    do {                                                                      \
        if (!(condition))                                                     \
            return rm_error_set(owner, RM_E_INVALID_ARGUMENT, "%s: %s", call, \
                                "a required pointer is NULL");                \
    } while (0)

int32_t rm_cuda_driver_mem_alloc(rm_cuda_driver *driver, int ordinal, size_t size,
                                 CUdeviceptr *pointer, const void *owner)
{
    REQUIRE(pointer != NULL, "cuMemAlloc_v2", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemAlloc_v2, pointer, size);
}

int32_t rm_cuda_driver_mem_free(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemFree_v2, pointer);
}

int32_t rm_cuda_driver_mem_address_range(rm_cuda_driver *driver, int ordinal,
                                         CUdeviceptr pointer, CUdeviceptr *base, size_t *size,
                                         const void *owner)
{
    REQUIRE(base != NULL && size != NULL, "cuMemGetAddressRange_v2", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemGetAddressRange_v2, base, size, pointer);
}

int32_t rm_cuda_driver_pointer_attribute(rm_cuda_driver *driver, int ordinal, void *data,
                                         CUpointer_attribute attribute, CUdeviceptr pointer,
                                         const void *owner)
{
    REQUIRE(data != NULL, "cuPointerGetAttribute", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuPointerGetAttribute, data, attribute, pointer);
}

int32_t rm_cuda_driver_memcpy_htod(rm_cuda_driver *driver, int ordinal, CUdeviceptr destination,
                                   const void *source, size_t size, const void *owner)
{
    REQUIRE(source != NULL || size == 0, "cuMemcpyHtoD_v2", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemcpyHtoD_v2, destination, source, size);
}

int32_t rm_cuda_driver_memcpy_dtoh(rm_cuda_driver *driver, int ordinal, void *destination,
                                   CUdeviceptr source, size_t size, const void *owner)
{
    REQUIRE(destination != NULL || size == 0, "cuMemcpyDtoH_v2", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemcpyDtoH_v2, destination, source, size);
}

int32_t rm_cuda_driver_ipc_get_mem_handle(rm_cuda_driver *driver, int ordinal, CUdeviceptr base,
                                          CUipcMemHandle *handle, const void *owner)
{
    REQUIRE(handle != NULL, "cuIpcGetMemHandle", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuIpcGetMemHandle, handle, base);
}

int32_t rm_cuda_driver_ipc_open_mem_handle(rm_cuda_driver *driver, int ordinal,
                                           const CUipcMemHandle *handle, CUdeviceptr *pointer,
                                           const void *owner)
{
    REQUIRE(handle != NULL && pointer != NULL, "cuIpcOpenMemHandle_v2", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuIpcOpenMemHandle_v2, pointer, *handle,
                    CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
}

int32_t rm_cuda_driver_ipc_close_mem_handle(rm_cuda_driver *driver, int ordinal,
                                            CUdeviceptr pointer, const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuIpcCloseMemHandle, pointer);
}

int32_t rm_cuda_driver_event_create(rm_cuda_driver *driver, int ordinal, unsigned int flags,
                                    CUevent *event, const void *owner)
{
    REQUIRE(event != NULL, "cuEventCreate", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuEventCreate, event, flags);
}

int32_t rm_cuda_driver_event_record(rm_cuda_driver *driver, int ordinal, CUevent event,
                                    CUstream stream, const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuEventRecord, event, stream);
}

int32_t rm_cuda_driver_event_synchronize(rm_cuda_driver *driver, int ordinal, CUevent event,
                                         const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuEventSynchronize, event);
}

int32_t rm_cuda_driver_event_destroy(rm_cuda_driver *driver, int ordinal, CUevent event,
                                     const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuEventDestroy_v2, event);
}

int32_t rm_cuda_driver_ipc_get_event_handle(rm_cuda_driver *driver, int ordinal, CUevent event,
                                            CUipcEventHandle *handle, const void *owner)
{
    REQUIRE(handle != NULL, "cuIpcGetEventHandle", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuIpcGetEventHandle, handle, event);
}

int32_t rm_cuda_driver_ipc_open_event_handle(rm_cuda_driver *driver, int ordinal,
                                             const CUipcEventHandle *handle, CUevent *event,
                                             const void *owner)
{
    REQUIRE(handle != NULL && event != NULL, "cuIpcOpenEventHandle", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuIpcOpenEventHandle, event, *handle);
}

int32_t rm_cuda_driver_stream_wait_event(rm_cuda_driver *driver, int ordinal, CUstream stream,
                                         CUevent event, const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuStreamWaitEvent, stream, event, 0);
}

int32_t rm_cuda_driver_stream_synchronize(rm_cuda_driver *driver, int ordinal, CUstream stream,
                                          const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuStreamSynchronize, stream);
}

int32_t rm_cuda_driver_memset_d8(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                 unsigned char value, size_t count, const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemsetD8_v2, pointer, value, count);
}

int32_t rm_cuda_driver_memcpy_dtod(rm_cuda_driver *driver, int ordinal, CUdeviceptr destination,
                                   CUdeviceptr source, size_t size, const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemcpyDtoD_v2, destination, source, size);
}

int32_t rm_cuda_driver_memcpy_dtod_async(rm_cuda_driver *driver, int ordinal,
                                         CUdeviceptr destination, CUdeviceptr source,
                                         size_t size, CUstream stream, const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemcpyDtoDAsync_v2, destination, source, size,
                    stream);
}

int32_t rm_cuda_driver_mem_get_info(rm_cuda_driver *driver, int ordinal, size_t *free_bytes,
                                    size_t *total_bytes, const void *owner)
{
    REQUIRE(free_bytes != NULL && total_bytes != NULL, "cuMemGetInfo_v2", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemGetInfo_v2, free_bytes, total_bytes);
}

int32_t rm_cuda_driver_stream_create(rm_cuda_driver *driver, int ordinal, unsigned int flags,
                                     CUstream *stream, const void *owner)
{
    REQUIRE(stream != NULL, "cuStreamCreate", owner);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuStreamCreate, stream, flags);
}

int32_t rm_cuda_driver_stream_destroy(rm_cuda_driver *driver, int ordinal, CUstream stream,
                                      const void *owner)
{
    CALL_IN_CONTEXT(driver, ordinal, owner, cuStreamDestroy_v2, stream);
}

int32_t rm_cuda_driver_event_query(rm_cuda_driver *driver, int ordinal, CUevent event,
                                   const void *owner)
{
    int32_t rc = enter(driver, ordinal, "cuEventQuery", owner);
    if (rc != RM_OK)
        return rc;
    CUresult result = driver->cu.cuEventQuery(event);
    leave(driver);
    if (result == CUDA_SUCCESS)
        return RM_OK;
    if (result == CUDA_ERROR_NOT_READY) {
        /* Not a failure but an answer, and callers poll: a short message,
         * no cuGetErrorString round trip. */
        last_result = result;
        return rm_error_set(owner, RM_E_BUSY, "cuEventQuery: the event's work is not done yet");
    }
    return cu_failed(driver, owner, result, "cuEventQuery");
}

int32_t rm_cuda_driver_ctx_synchronize(rm_cuda_driver *driver, int ordinal, const void *owner)
{
    /* Not CALL_IN_CONTEXT: the entry point takes no argument. */
    int32_t rc = enter(driver, ordinal, "cuCtxSynchronize", owner);
    if (rc != RM_OK)
        return rc;
    CUresult result = driver->cu.cuCtxSynchronize();
    leave(driver);
    return result == CUDA_SUCCESS ? RM_OK : cu_failed(driver, owner, result, "cuCtxSynchronize");
}

int32_t rm_cuda_driver_pointer_ordinal(rm_cuda_driver *driver, CUdeviceptr pointer, int *ordinal,
                                       const void *owner)
{
    REQUIRE(ordinal != NULL, "cuPointerGetAttribute", owner);
    /* With unified addressing the driver answers for any pointer whichever
     * context is current; device 0's is the one every process has. */
    int32_t rc = enter(driver, 0, "cuPointerGetAttribute", owner);
    if (rc != RM_OK)
        return rc;
    int device = -1;
    CUresult result =
        driver->cu.cuPointerGetAttribute(&device, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, pointer);
    leave(driver);
    if (result == CUDA_ERROR_INVALID_VALUE) {
        last_result = result;
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "pointer 0x%llx is not device memory the CUDA driver knows "
                            "(cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL): "
                            "CUDA_ERROR_INVALID_VALUE): not allocated by CUDA, already freed, "
                            "or an IPC import already closed",
                            (unsigned long long)pointer);
    }
    if (result != CUDA_SUCCESS)
        return cu_failed(driver, owner, result, "cuPointerGetAttribute");
    /* The driver's device ordinal; ours index the devices we recorded. */
    for (int i = 0; i < driver->device_count; i++) {
        if (driver->devices[i] == device) {
            *ordinal = i;
            return RM_OK;
        }
    }
    return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                        "pointer 0x%llx is memory of CUDA device %d, which is not one of the %d "
                        "devices this driver object records",
                        (unsigned long long)pointer, device, driver->device_count);
}

/* ---- virtual memory management (optional) ------------------------------------ */

/* vmm_support[]: 0 not asked yet, VMM_YES, or 2 + the index in
 * vmm_attributes of the attribute that said no. */
enum { VMM_UNKNOWN = 0, VMM_YES = 1, VMM_NO = 2 };

static const struct {
    CUdevice_attribute attribute;
    const char *name;
} vmm_attributes[] = {
    {CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
     "CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED"},
    {CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
     "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED"},
};

/* Whether `ordinal` supports VMM with POSIX descriptors, asked once
 * (cuDeviceGetAttribute needs no context); a failed question is not
 * remembered. On RM_OK *supported is set, and *attribute names the
 * attribute that said no. */
static int32_t device_vmm_support(rm_cuda_driver *driver, int ordinal, bool *supported,
                                  const char **attribute, const void *owner)
{
    *attribute = NULL;
    int known = atomic_load(&driver->vmm_support[ordinal]);
    if (known != VMM_UNKNOWN) {
        *supported = known == VMM_YES;
        if (!*supported)
            *attribute = vmm_attributes[known - VMM_NO].name;
        return RM_OK;
    }
    *supported = true;
    int answer = VMM_YES;
    for (size_t i = 0; i < sizeof vmm_attributes / sizeof vmm_attributes[0] && *supported; i++) {
        int value = 0;
        CUresult result = driver->cu.cuDeviceGetAttribute(&value, vmm_attributes[i].attribute,
                                                          driver->devices[ordinal]);
        if (result != CUDA_SUCCESS)
            return cu_failed(driver, owner, result, "cuDeviceGetAttribute");
        if (value == 0) {
            *supported = false;
            *attribute = vmm_attributes[i].name;
            answer = VMM_NO + (int)i;
        }
    }
    atomic_store(&driver->vmm_support[ordinal], answer);
    return RM_OK;
}

bool rm_cuda_driver_has_vmm(rm_cuda_driver *driver, int ordinal)
{
    if (driver == NULL || is_forked_copy(driver) || driver->vmm_missing != NULL || ordinal < 0 ||
        ordinal >= driver->device_count)
        return false;
    bool supported = false;
    const char *attribute;
    int32_t rc = device_vmm_support(driver, ordinal, &supported, &attribute, NULL);
    return rc == RM_OK && supported;
}

/* What every VMM wrapper checks before enter(): the entry points were
 * bound and the device supports VMM with POSIX descriptors. */
static int32_t vmm_available(rm_cuda_driver *driver, int ordinal, const char *call,
                             const void *owner)
{
    if (driver == NULL)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT, "%s: the driver object is NULL", call);
    if (is_forked_copy(driver))
        return forked_error(driver, call, owner);
    if (ordinal < 0 || ordinal >= driver->device_count)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "%s: CUDA device %d does not exist here (%d visible)", call, ordinal,
                            driver->device_count);
    if (driver->vmm_missing != NULL)
        return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                            "%s: CUDA virtual memory management is unavailable: the CUDA driver "
                            "%s (version %d.%d) has no %s (looked up %s); legacy IPC still "
                            "works; update the NVIDIA driver for VMM",
                            call, driver->library, driver->version / 1000,
                            driver->version % 1000 / 10, driver->vmm_missing,
                            driver->proc_address ? "with cuGetProcAddress_v2" : "with dlsym");
    bool supported = false;
    const char *attribute = NULL;
    int32_t rc = device_vmm_support(driver, ordinal, &supported, &attribute, owner);
    if (rc != RM_OK)
        return rc;
    if (!supported)
        return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                            "%s: CUDA device %d does not support virtual memory management with "
                            "POSIX file descriptors (%s is 0); legacy IPC still works",
                            call, ordinal, attribute);
    return RM_OK;
}

/* The allocation properties of every VMM allocation we make: pinned
 * memory on the device, exportable as a POSIX descriptor. */
static CUmemAllocationProp vmm_properties(const rm_cuda_driver *driver, int ordinal)
{
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = driver->devices[ordinal];
    return prop;
}

static CUmemAccessDesc vmm_access(const rm_cuda_driver *driver, int ordinal, bool writable)
{
    CUmemAccessDesc access;
    memset(&access, 0, sizeof access);
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = driver->devices[ordinal];
    access.flags = writable ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE : CU_MEM_ACCESS_FLAGS_PROT_READ;
    return access;
}

/* As CALL_IN_CONTEXT, after vmm_available(). */
#define VMM_CALL_IN_CONTEXT(driver, ordinal, owner, symbol, ...)              \
    do {                                                                      \
        int32_t vmm_rc_ = vmm_available(driver, ordinal, #symbol, owner);     \
        if (vmm_rc_ != RM_OK)                                                 \
            return vmm_rc_;                                                   \
        CALL_IN_CONTEXT(driver, ordinal, owner, symbol, __VA_ARGS__);         \
    } while (0)

int32_t rm_cuda_driver_vmm_granularity(rm_cuda_driver *driver, int ordinal, size_t *granularity,
                                       const void *owner)
{
    REQUIRE(granularity != NULL, "cuMemGetAllocationGranularity", owner);
    int32_t rc = vmm_available(driver, ordinal, "cuMemGetAllocationGranularity", owner);
    if (rc != RM_OK)
        return rc;
    CUmemAllocationProp prop = vmm_properties(driver, ordinal);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemGetAllocationGranularity, granularity, &prop,
                    CU_MEM_ALLOC_GRANULARITY_MINIMUM);
}

int32_t rm_cuda_driver_vmm_create(rm_cuda_driver *driver, int ordinal, size_t size,
                                  CUmemGenericAllocationHandle *handle, const void *owner)
{
    REQUIRE(handle != NULL, "cuMemCreate", owner);
    int32_t rc = vmm_available(driver, ordinal, "cuMemCreate", owner);
    if (rc != RM_OK)
        return rc;
    CUmemAllocationProp prop = vmm_properties(driver, ordinal);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemCreate, handle, size, &prop, 0);
}

int32_t rm_cuda_driver_vmm_release(rm_cuda_driver *driver, int ordinal,
                                   CUmemGenericAllocationHandle handle, const void *owner)
{
    VMM_CALL_IN_CONTEXT(driver, ordinal, owner, cuMemRelease, handle);
}

int32_t rm_cuda_driver_vmm_export_fd(rm_cuda_driver *driver, int ordinal,
                                     CUmemGenericAllocationHandle handle, int *fd,
                                     const void *owner)
{
    REQUIRE(fd != NULL, "cuMemExportToShareableHandle", owner);
    int32_t rc = vmm_available(driver, ordinal, "cuMemExportToShareableHandle", owner);
    if (rc != RM_OK)
        return rc;
    rc = enter(driver, ordinal, "cuMemExportToShareableHandle", owner);
    if (rc != RM_OK)
        return rc;
    int exported = -1;
    CUresult result = driver->cu.cuMemExportToShareableHandle(
        &exported, handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    leave(driver);
    if (result != CUDA_SUCCESS)
        return cu_failed(driver, owner, result, "cuMemExportToShareableHandle");
    /* A descriptor that leaks into an exec()ed child keeps the memory
     * alive there: close-on-exec, whatever the driver set. */
    int flags = fcntl(exported, F_GETFD);
    if (flags < 0 || fcntl(exported, F_SETFD, flags | FD_CLOEXEC) != 0) {
        int error = errno;
        close(exported);
        return rm_error_set(owner, RM_E_SYSTEM,
                            "cuMemExportToShareableHandle gave descriptor %d, which cannot be "
                            "made close-on-exec: %s",
                            exported, strerror(error));
    }
    *fd = exported;
    return RM_OK;
}

int32_t rm_cuda_driver_vmm_import_fd(rm_cuda_driver *driver, int ordinal, int fd,
                                     CUmemGenericAllocationHandle *handle, const void *owner)
{
    REQUIRE(handle != NULL, "cuMemImportFromShareableHandle", owner);
    if (fd < 0)
        return rm_error_set(owner, RM_E_INVALID_ARGUMENT,
                            "cuMemImportFromShareableHandle: descriptor %d is not valid", fd);
    VMM_CALL_IN_CONTEXT(driver, ordinal, owner, cuMemImportFromShareableHandle, handle,
                        (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
}

int32_t rm_cuda_driver_vmm_retain(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                  CUmemGenericAllocationHandle *handle, const void *owner)
{
    REQUIRE(handle != NULL, "cuMemRetainAllocationHandle", owner);
    VMM_CALL_IN_CONTEXT(driver, ordinal, owner, cuMemRetainAllocationHandle, handle,
                        (void *)(uintptr_t)pointer);
}

int32_t rm_cuda_driver_vmm_map(rm_cuda_driver *driver, int ordinal,
                               CUmemGenericAllocationHandle handle, size_t size, bool writable,
                               CUdeviceptr *pointer, const void *owner)
{
    REQUIRE(pointer != NULL, "cuMemMap", owner);
    int32_t rc = vmm_available(driver, ordinal, "cuMemMap", owner);
    if (rc != RM_OK)
        return rc;
    rc = enter(driver, ordinal, "cuMemAddressReserve", owner);
    if (rc != RM_OK)
        return rc;
    /* Exactly `size` of address space (pytorch#186213: over-reserving per
     * import ran out of it), mapped from offset 0, the only offset the
     * driver accepts; then access for this device, as a mapping starts
     * with none. Each step undone if a later one fails. */
    CUdeviceptr address = 0;
    const char *call = "cuMemAddressReserve";
    CUresult result = driver->cu.cuMemAddressReserve(&address, size, 0, 0, 0);
    if (result == CUDA_SUCCESS) {
        call = "cuMemMap";
        result = driver->cu.cuMemMap(address, size, 0, handle, 0);
        if (result == CUDA_SUCCESS) {
            call = "cuMemSetAccess";
            CUmemAccessDesc access = vmm_access(driver, ordinal, writable);
            result = driver->cu.cuMemSetAccess(address, size, &access, 1);
            if (result != CUDA_SUCCESS)
                (void)driver->cu.cuMemUnmap(address, size);
        }
        if (result != CUDA_SUCCESS)
            (void)driver->cu.cuMemAddressFree(address, size);
    }
    leave(driver);
    if (result != CUDA_SUCCESS)
        return cu_failed(driver, owner, result, call);
    *pointer = address;
    return RM_OK;
}

int32_t rm_cuda_driver_vmm_set_access(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                      size_t size, bool writable, const void *owner)
{
    int32_t rc = vmm_available(driver, ordinal, "cuMemSetAccess", owner);
    if (rc != RM_OK)
        return rc;
    CUmemAccessDesc access = vmm_access(driver, ordinal, writable);
    CALL_IN_CONTEXT(driver, ordinal, owner, cuMemSetAccess, pointer, size, &access, 1);
}

int32_t rm_cuda_driver_vmm_unmap(rm_cuda_driver *driver, int ordinal, CUdeviceptr pointer,
                                 size_t size, const void *owner)
{
    int32_t rc = vmm_available(driver, ordinal, "cuMemUnmap", owner);
    if (rc != RM_OK)
        return rc;
    rc = enter(driver, ordinal, "cuMemUnmap", owner);
    if (rc != RM_OK)
        return rc;
    const char *call = "cuMemUnmap";
    CUresult result = driver->cu.cuMemUnmap(pointer, size);
    if (result == CUDA_SUCCESS) {
        call = "cuMemAddressFree";
        result = driver->cu.cuMemAddressFree(pointer, size);
    }
    leave(driver);
    return result == CUDA_SUCCESS ? RM_OK : cu_failed(driver, owner, result, call);
}
