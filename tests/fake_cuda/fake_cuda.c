/* A fake libcuda.so.1 for tests: the driver entry points the plugin binds,
 * with the cross-process semantics of legacy CUDA IPC made real and every
 * documented undefined behaviour made loud.
 *
 * Device memory is host memory: cuMemAlloc_v2 creates a /dev/shm object
 * "fakecu.<pid>.m<id>.d<device key>" mapped MAP_SHARED, and the
 * CUdeviceptr is its address. The device key (a hash of the device's
 * UUID) is how cuMemGetInfo_v2 counts what every process holds on a
 * device: the sizes of the objects of living processes with that key. An IPC memory handle names that object and its exporter
 * ({magic, pid, start time, pid namespace, id, nonce, size}), so another
 * process can map the same pages. Interprocess events are a slot in a
 * /dev/shm object "fakecu.<pid>.e<id>": record stamps a completion time,
 * synchronize waits for it.
 *
 * Rules enforced, each with the driver's error code (docs/cuda.md):
 *   - every call but cuDriverGetVersion, cuGetProcAddress_v2 and the
 *     error-string calls needs cuInit first: NOT_INITIALIZED;
 *   - calls in a fork()ed child of an initialised process: NOT_INITIALIZED
 *     (and counted under "@after_fork");
 *   - memory, IPC and stream calls need a current context: INVALID_CONTEXT;
 *   - cuIpcGetMemHandle of anything but an allocation's base: INVALID_VALUE;
 *   - cuIpcOpenMemHandle_v2 flags other than LAZY_ENABLE_PEER_ACCESS:
 *     INVALID_VALUE; of the process's own handle: INVALID_CONTEXT; a
 *     re-open in one context returns the same pointer and counts; close
 *     unmaps at zero;
 *   - the exporter freed the memory or died: opening fails
 *     (INVALID_HANDLE), and copies through an open mapping fail
 *     (ILLEGAL_ADDRESS) instead of reading stale pages;
 *   - memset and device-to-device copies outside an allocation or import
 *     of the current context: INVALID_VALUE;
 *   - a destroyed or unknown stream: INVALID_HANDLE (NULL,
 *     CU_STREAM_LEGACY and CU_STREAM_PER_THREAD are valid);
 *   - an allocation beyond FAKE_CUDA_MEMORY_BYTES on the device, all
 *     processes together: OUT_OF_MEMORY;
 *   - cuGetProcAddress_v2("cuCtxSynchronize") from version 13000 gives
 *     cuCtxSynchronize_v2(CUcontext), as the driver does;
 *   - VMM (a memfd per allocation, see its section): sizes a multiple of
 *     2 MiB, cuMemMap at offset 0 of a whole allocation, no access until
 *     cuMemSetAccess (INVALID_VALUE), no write through READ
 *     (ILLEGAL_ADDRESS, checked before touching memory); the memory lives
 *     while any process holds a descriptor or mapping of it.
 *
 * Knobs (environment, read when used): FAKE_CUDA_STUB=1 (cuInit and
 * cuDriverGetVersion return CUDA_ERROR_STUB_LIBRARY, like NVIDIA's stub),
 * FAKE_CUDA_DRIVER_VERSION (default 13000), FAKE_CUDA_DEVICES (default 1,
 * or the number of UUIDs; 0 makes cuInit return NO_DEVICE),
 * FAKE_CUDA_UUIDS (comma list, "GPU-" prefix and dashes optional),
 * FAKE_CUDA_FAIL=<function>:<N>[:<code>][,...] (the Nth call fails, with
 * CUDA_ERROR_UNKNOWN unless a code is given), FAKE_CUDA_HIDE=<base
 * name>[,...] (cuGetProcAddress_v2 does not find it),
 * FAKE_CUDA_EVENT_DELAY_MS (a recorded event completes that much later;
 * cuEventQuery says NOT_READY until then, cuCtxSynchronize waits),
 * FAKE_CUDA_MEMORY_BYTES (each device's memory, default 80 GiB),
 * FAKE_CUDA_NO_VMM=1 (no VMM: the device attributes say 0,
 * cuGetProcAddress_v2 does not find the VMM entry points, and calling them
 * anyway gives NOT_SUPPORTED).
 *
 * fake_cuda_calls(name), found with dlsym, reads the per-process call
 * counters ("*" for all calls, "@legacy" for plain legacy symbols called,
 * "@after_fork", "@imports_mapped", "@imports_live", "@allocs_live",
 * "@events_live", "@streams_live", "@vmm_live", "@vmm_handles",
 * "@vmm_mapped", "@vmm_reserved").
 *
 * Built twice (tests/fake_cuda/meson.build): with cuGetProcAddress_v2, and
 * without it (FAKE_CUDA_NO_PROC_ADDRESS) for the loader's dlsym path. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cuda_api.h"

#define EXPORT __attribute__((visibility("default")))

#define MAX_DEVICES 8
#define MAX_STACK 16
#define MEM_MAGIC UINT64_C(0x314d454d55434b46)   /* "FKCUMEM1" */
#define EVENT_MAGIC UINT64_C(0x3154564555434b46) /* "FKCUEVT1" */
#define CONTEXT_MAGIC 0x43545846u
#define EVENT_OBJECT_MAGIC 0x45565446u
#define STREAM_OBJECT_MAGIC 0x4d525453u
#define DEFAULT_MEMORY_BYTES (UINT64_C(80) << 30)

/* ---- call counters ---------------------------------------------------- */

#define FAKE_FUNCTIONS(X)                                                     \
    X(cuInit) X(cuDriverGetVersion) X(cuGetProcAddress_v2) X(cuGetErrorName)  \
    X(cuGetErrorString) X(cuDeviceGetCount) X(cuDeviceGet)                    \
    X(cuDeviceGetAttribute) X(cuDeviceGetUuid_v2) X(cuDevicePrimaryCtxRetain) \
    X(cuDevicePrimaryCtxRelease_v2) X(cuCtxPushCurrent_v2)                    \
    X(cuCtxPopCurrent_v2) X(cuMemAlloc_v2) X(cuMemFree_v2)                    \
    X(cuMemGetAddressRange_v2) X(cuMemcpyHtoD_v2) X(cuMemcpyDtoH_v2)          \
    X(cuPointerGetAttribute) X(cuIpcGetMemHandle) X(cuIpcOpenMemHandle_v2)    \
    X(cuIpcCloseMemHandle) X(cuEventCreate) X(cuEventRecord)                  \
    X(cuEventSynchronize) X(cuEventDestroy_v2) X(cuIpcGetEventHandle)         \
    X(cuIpcOpenEventHandle) X(cuStreamWaitEvent) X(cuStreamSynchronize)      \
    X(cuCtxSynchronize) X(cuCtxSynchronize_v2) X(cuMemGetInfo_v2)             \
    X(cuMemcpyDtoD_v2) X(cuMemcpyDtoDAsync_v2) X(cuMemsetD8_v2)               \
    X(cuEventQuery) X(cuStreamCreate) X(cuStreamDestroy_v2)                  \
    X(cuMemGetAllocationGranularity) X(cuMemCreate) X(cuMemRelease)           \
    X(cuMemAddressReserve) X(cuMemAddressFree) X(cuMemMap) X(cuMemUnmap)      \
    X(cuMemSetAccess) X(cuMemExportToShareableHandle)                         \
    X(cuMemImportFromShareableHandle) X(cuMemRetainAllocationHandle)

enum fake_function {
#define FAKE_ENUM_(name) F_##name,
    FAKE_FUNCTIONS(FAKE_ENUM_)
#undef FAKE_ENUM_
    F_COUNT
};

static const char *const function_names[F_COUNT] = {
#define FAKE_NAME_(name) #name,
    FAKE_FUNCTIONS(FAKE_NAME_)
#undef FAKE_NAME_
};

static _Atomic long long calls[F_COUNT];
static _Atomic long long legacy_calls, after_fork_calls, imports_mapped;

/* ---- process state ------------------------------------------------------ */

struct CUctx_st {
    uint32_t magic;
    int device;
    int retains;
    /* When the work recorded in this context completes (CLOCK_MONOTONIC,
     * under `lock`): what cuCtxSynchronize waits for. */
    int64_t busy_until_ns;
};

struct CUstream_st {
    uint32_t magic;
    unsigned flags;
    struct CUctx_st *context;
    struct CUstream_st *next;
};

typedef struct region {
    struct region *next;
    bool imported;
    uintptr_t base;
    size_t size;   /* as allocated */
    size_t mapped; /* rounded up to pages */
    uint64_t id;
    struct CUctx_st *context;
    char name[64];
    /* imports only */
    pid_t exporter;
    uint64_t exporter_start;
    ino_t inode;
    unsigned opens;
} region;

typedef struct event_slot {
    uint64_t magic;
    _Atomic int64_t complete_at_ns; /* CLOCK_MONOTONIC; 0: complete */
    _Atomic uint64_t records;
} event_slot;

struct CUevent_st {
    uint32_t magic;
    unsigned flags;
    bool imported;
    struct CUevent_st *next;
    struct CUctx_st *context;
    event_slot *slot;
    event_slot local; /* the slot of an event that is not interprocess */
    uint64_t id;
    char name[64];
    pid_t exporter;
    uint64_t exporter_start;
    ino_t inode;
};

/* What a handle carries, in its first 56 bytes. */
typedef struct wire {
    uint64_t magic;
    int32_t pid;
    uint32_t device;
    uint64_t start_time;
    uint64_t pid_ns;
    uint64_t id;
    uint64_t nonce;
    uint64_t size;
    uint64_t device_key; /* the exporter's device (device_key_of) */
} wire;
_Static_assert(sizeof(wire) <= CU_IPC_HANDLE_SIZE, "a handle holds the wire record");

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool initialised;
static pid_t init_pid;
static uint64_t self_start, self_pid_ns, nonce;
static uint64_t next_id;
static int device_count;
static uint8_t uuids[MAX_DEVICES][16];
/* A device's UUID hashed to 64 bits, in the name of every allocation
 * object on it, so that any process can sum what a device holds. */
static uint64_t device_keys[MAX_DEVICES];
static struct CUctx_st primary[MAX_DEVICES];
static region *regions;
static struct CUevent_st *events;
static struct CUstream_st *streams;
static _Thread_local struct CUctx_st *context_stack[MAX_STACK];
static _Thread_local int context_depth;

/* ---- helpers -------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Field 22 of /proc/<pid>/stat, or 0 when the process is gone or a zombie. */
static uint64_t start_time_of(pid_t pid)
{
    char path[64], buffer[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buffer, sizeof buffer - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buffer[n] = '\0';
    char *p = strrchr(buffer, ')');
    if (p == NULL || p[1] != ' ')
        return 0;
    p += 2;
    if (*p == 'Z' || *p == 'X')
        return 0;
    /* p is field 3; walk to field 22. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

static bool exporter_alive(pid_t pid, uint64_t start)
{
    uint64_t now = start_time_of(pid);
    return now != 0 && now == start;
}

static uint64_t pid_namespace(void)
{
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* The object still exists under its name, and is the one we mapped. */
static bool object_present(const char *name, ino_t inode)
{
    char path[96];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    struct stat st;
    return stat(path, &st) == 0 && st.st_ino == inode;
}

static size_t page_round(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (size + page - 1) / page * page;
}

static bool parse_uuid(const char *text, size_t length, uint8_t out[16])
{
    if (length >= 4 && strncmp(text, "GPU-", 4) == 0) {
        text += 4;
        length -= 4;
    }
    int digits = 0;
    for (size_t i = 0; i < length; i++) {
        char c = text[i];
        if (c == '-')
            continue;
        int value;
        if (c >= '0' && c <= '9')
            value = c - '0';
        else if (c >= 'a' && c <= 'f')
            value = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            value = c - 'A' + 10;
        else
            return false;
        if (digits >= 32)
            return false;
        if (digits % 2 == 0)
            out[digits / 2] = (uint8_t)(value << 4);
        else
            out[digits / 2] |= (uint8_t)value;
        digits++;
    }
    return digits == 32;
}

/* FNV-1a: stable across processes, so every process that sees a UUID
 * names its objects alike. */
static uint64_t device_key_of(const uint8_t uuid[16])
{
    uint64_t hash = UINT64_C(0xcbf29ce484222325);
    for (int i = 0; i < 16; i++)
        hash = (hash ^ uuid[i]) * UINT64_C(0x100000001b3);
    return hash;
}

static void allocation_name(char *name, size_t size, pid_t pid, uint64_t id, uint64_t key)
{
    snprintf(name, size, "fakecu.%ld.m%016llx.d%016llx", (long)pid, (unsigned long long)id,
             (unsigned long long)key);
}

static bool env_flag(const char *name)
{
    const char *value = getenv(name);
    return value != NULL && strcmp(value, "1") == 0;
}

/* FAKE_CUDA_NO_VMM=1: a driver without virtual memory management. */
static bool vmm_disabled(void)
{
    return env_flag("FAKE_CUDA_NO_VMM");
}

static int driver_version(void)
{
    const char *value = getenv("FAKE_CUDA_DRIVER_VERSION");
    return value != NULL && *value != '\0' ? atoi(value) : 13000;
}

/* FAKE_CUDA_FAIL=<function>:<N>[:<code>][,...]: the Nth call of <function>
 * (its symbol name, or its base name without _v2) fails. */
static CUresult injected_failure(enum fake_function function, long long count)
{
    const char *list = getenv("FAKE_CUDA_FAIL");
    if (list == NULL)
        return CUDA_SUCCESS;
    const char *name = function_names[function];
    size_t name_length = strlen(name);
    size_t base_length = name_length;
    if (name_length > 3 && strcmp(name + name_length - 3, "_v2") == 0)
        base_length -= 3;
    for (const char *item = list; *item != '\0';) {
        const char *colon = strchr(item, ':');
        if (colon == NULL)
            break;
        size_t length = (size_t)(colon - item);
        char *end;
        long long nth = strtoll(colon + 1, &end, 10);
        long code = CUDA_ERROR_UNKNOWN;
        if (*end == ':')
            code = strtol(end + 1, &end, 10);
        bool match = (length == name_length || length == base_length) &&
                     strncmp(item, name, length) == 0;
        if (match && nth == count)
            return (CUresult)code;
        const char *comma = strchr(end, ',');
        if (comma == NULL)
            break;
        item = comma + 1;
    }
    return CUDA_SUCCESS;
}

static bool current_context_valid(void)
{
    if (context_depth == 0)
        return false;
    struct CUctx_st *context = context_stack[context_depth - 1];
    return context != NULL && context->magic == CONTEXT_MAGIC && context->retains > 0;
}

static struct CUctx_st *current_context(void)
{
    return context_stack[context_depth - 1];
}

enum { NEEDS_NOTHING, NEEDS_INIT, NEEDS_CONTEXT };

/* Every entry point starts here: counts the call, then refuses it as the
 * driver would (fork, injected failure, stub, no cuInit, no context). */
static CUresult begin(enum fake_function function, int needs)
{
    long long count = atomic_fetch_add(&calls[function], 1) + 1;
    if (initialised && getpid() != init_pid) {
        atomic_fetch_add(&after_fork_calls, 1);
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    CUresult injected = injected_failure(function, count);
    if (injected != CUDA_SUCCESS)
        return injected;
    if (env_flag("FAKE_CUDA_STUB") && function != F_cuGetErrorName &&
        function != F_cuGetErrorString && function != F_cuGetProcAddress_v2)
        return CUDA_ERROR_STUB_LIBRARY;
    if (needs >= NEEDS_INIT && !initialised)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (needs >= NEEDS_CONTEXT && !current_context_valid())
        return CUDA_ERROR_INVALID_CONTEXT;
    return CUDA_SUCCESS;
}

#define BEGIN(function, needs)                                                \
    do {                                                                      \
        CUresult begin_ = begin(F_##function, needs);                         \
        if (begin_ != CUDA_SUCCESS)                                           \
            return begin_;                                                    \
    } while (0)

/* ---- initialisation, version, errors ------------------------------------- */

static CUresult read_devices(void)
{
    const char *list = getenv("FAKE_CUDA_UUIDS");
    int listed = 0;
    if (list != NULL && *list != '\0') {
        for (const char *item = list; listed < MAX_DEVICES;) {
            const char *comma = strchr(item, ',');
            size_t length = comma != NULL ? (size_t)(comma - item) : strlen(item);
            if (!parse_uuid(item, length, uuids[listed])) {
                fprintf(stderr, "fake libcuda: FAKE_CUDA_UUIDS: bad UUID at \"%s\"\n", item);
                return CUDA_ERROR_UNKNOWN;
            }
            listed++;
            if (comma == NULL)
                break;
            item = comma + 1;
        }
    }
    const char *count = getenv("FAKE_CUDA_DEVICES");
    device_count = count != NULL && *count != '\0' ? atoi(count) : (listed > 0 ? listed : 1);
    if (device_count < 0 || device_count > MAX_DEVICES) {
        fprintf(stderr, "fake libcuda: FAKE_CUDA_DEVICES must be 0 to %d\n", MAX_DEVICES);
        return CUDA_ERROR_UNKNOWN;
    }
    for (int i = listed; i < device_count; i++) {
        static const uint8_t pattern[16] = {0xfa, 0xce, 0xc0, 0xda, 0x00, 0x00, 0x40, 0x00,
                                            0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
        memcpy(uuids[i], pattern, 16);
        uuids[i][15] = (uint8_t)i;
    }
    for (int i = 0; i < device_count; i++)
        device_keys[i] = device_key_of(uuids[i]);
    for (int i = 0; i < MAX_DEVICES; i++)
        primary[i] = (struct CUctx_st){.magic = CONTEXT_MAGIC, .device = i, .retains = 0};
    return CUDA_SUCCESS;
}

EXPORT CUresult cuInit(unsigned int flags)
{
    BEGIN(cuInit, NEEDS_NOTHING);
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_SUCCESS;
    if (!initialised) {
        result = read_devices();
        if (result == CUDA_SUCCESS && device_count == 0)
            result = CUDA_ERROR_NO_DEVICE;
        if (result == CUDA_SUCCESS) {
            init_pid = getpid();
            self_start = start_time_of(init_pid);
            self_pid_ns = pid_namespace();
            uint32_t random_part = 0;
            if (getrandom(&random_part, sizeof random_part, 0) != sizeof random_part)
                random_part = (uint32_t)now_ns();
            nonce = random_part;
            next_id = (uint64_t)random_part << 32;
            initialised = true;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuDriverGetVersion(int *version)
{
    BEGIN(cuDriverGetVersion, NEEDS_NOTHING);
    if (version == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *version = driver_version();
    return CUDA_SUCCESS;
}

static const struct {
    CUresult code;
    const char *name;
    const char *text;
} error_table[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {CUDA_ERROR_STUB_LIBRARY, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
     "an illegal memory access was encountered"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static CUresult error_lookup(CUresult error, const char **out, bool name)
{
    if (out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < sizeof error_table / sizeof error_table[0]; i++) {
        if (error_table[i].code == error) {
            *out = name ? error_table[i].name : error_table[i].text;
            return CUDA_SUCCESS;
        }
    }
    *out = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **name)
{
    BEGIN(cuGetErrorName, NEEDS_NOTHING);
    return error_lookup(error, name, true);
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **text)
{
    BEGIN(cuGetErrorString, NEEDS_NOTHING);
    return error_lookup(error, text, false);
}

/* ---- devices and contexts ------------------------------------------------ */

EXPORT CUresult cuDeviceGetCount(int *count)
{
    BEGIN(cuDeviceGetCount, NEEDS_INIT);
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = device_count;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    BEGIN(cuDeviceGet, NEEDS_INIT);
    if (device == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attribute, CUdevice device)
{
    BEGIN(cuDeviceGetAttribute, NEEDS_INIT);
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (device < 0 || device >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *value = device + 1; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *value = 1; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *value = !vmm_disabled(); break;
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
        *value = !vmm_disabled();
        break;
    case CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED: *value = 1; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice device)
{
    BEGIN(cuDeviceGetUuid_v2, NEEDS_INIT);
    if (uuid == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (device < 0 || device >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    memcpy(uuid->bytes, uuids[device], 16);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *context, CUdevice device)
{
    BEGIN(cuDevicePrimaryCtxRetain, NEEDS_INIT);
    if (context == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (device < 0 || device >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&lock);
    primary[device].retains++;
    pthread_mutex_unlock(&lock);
    *context = &primary[device];
    return CUDA_SUCCESS;
}

static void unmap_region(region *r)
{
    munmap((void *)r->base, r->mapped);
    if (!r->imported) {
        char path[80];
        snprintf(path, sizeof path, "/%s", r->name);
        shm_unlink(path);
    }
}

static void destroy_event_locked(struct CUevent_st *event);

/* The last release destroys the context: what it allocated is freed,
 * what it opened is closed, its events are destroyed. */
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device)
{
    BEGIN(cuDevicePrimaryCtxRelease_v2, NEEDS_INIT);
    if (device < 0 || device >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_SUCCESS;
    struct CUctx_st *context = &primary[device];
    if (context->retains == 0) {
        result = CUDA_ERROR_INVALID_CONTEXT;
    } else if (--context->retains == 0) {
        for (region **link = &regions; *link != NULL;) {
            region *r = *link;
            if (r->context == context) {
                *link = r->next;
                unmap_region(r);
                free(r);
            } else {
                link = &r->next;
            }
        }
        for (struct CUevent_st **link = &events; *link != NULL;) {
            struct CUevent_st *event = *link;
            if (event->context == context) {
                *link = event->next;
                destroy_event_locked(event);
            } else {
                link = &event->next;
            }
        }
        for (struct CUstream_st **link = &streams; *link != NULL;) {
            struct CUstream_st *stream = *link;
            if (stream->context == context) {
                *link = stream->next;
                stream->magic = 0;
                free(stream);
            } else {
                link = &stream->next;
            }
        }
        context->busy_until_ns = 0;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext context)
{
    BEGIN(cuCtxPushCurrent_v2, NEEDS_INIT);
    bool known = false;
    for (int i = 0; i < device_count; i++)
        known |= context == &primary[i];
    if (!known || context->retains == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (context_depth == MAX_STACK)
        return CUDA_ERROR_OUT_OF_MEMORY;
    context_stack[context_depth++] = context;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *context)
{
    BEGIN(cuCtxPopCurrent_v2, NEEDS_INIT);
    if (context_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUctx_st *popped = context_stack[--context_depth];
    if (context != NULL)
        *context = popped;
    return CUDA_SUCCESS;
}

/* ---- memory ---------------------------------------------------------------- */

/* FAKE_CUDA_MEMORY_BYTES, default 80 GiB. */
static uint64_t memory_total(void)
{
    const char *value = getenv("FAKE_CUDA_MEMORY_BYTES");
    return value != NULL && *value != '\0' ? strtoull(value, NULL, 10) : DEFAULT_MEMORY_BYTES;
}

/* The bytes every living process holds on the device with this key: the
 * sizes of the allocation objects "fakecu.<pid>.m<id>.d<key>" in
 * /dev/shm whose pid is alive (not a zombie either: a real driver frees a
 * process's memory when it exits, not when it is reaped). Objects of
 * killed processes stay until reaped but are not counted. */
/* An inode seen among the VMM records (counted once). */
static bool seen_before(uint64_t **seen, size_t *count, uint64_t inode)
{
    for (size_t i = 0; i < *count; i++)
        if ((*seen)[i] == inode)
            return true;
    uint64_t *grown = realloc(*seen, (*count + 1) * sizeof **seen);
    if (grown != NULL) {
        *seen = grown;
        grown[(*count)++] = inode;
    }
    return false;
}

static uint64_t device_memory_used(uint64_t key)
{
    char suffix[24];
    snprintf(suffix, sizeof suffix, ".d%016llx", (unsigned long long)key);
    size_t suffix_length = strlen(suffix);
    DIR *dir = opendir("/dev/shm");
    if (dir == NULL)
        return 0;
    uint64_t used = 0;
    uint64_t *seen = NULL;
    size_t seen_count = 0;
    for (const struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        const char *name = entry->d_name;
        size_t length = strlen(name);
        if (strncmp(name, "fakecu.", 7) != 0 || length <= suffix_length ||
            strcmp(name + length - suffix_length, suffix) != 0)
            continue;
        char *end;
        long pid = strtol(name + 7, &end, 10);
        bool vmm_record = strncmp(end, ".v", 2) == 0;
        if (pid <= 0 || (strncmp(end, ".m", 2) != 0 && !vmm_record) ||
            start_time_of((pid_t)pid) == 0)
            continue;
        /* A VMM allocation has a record in each process that holds it:
         * counted once, by the memfd's inode. */
        if (vmm_record && seen_before(&seen, &seen_count, strtoull(end + 2, NULL, 16)))
            continue;
        struct stat st;
        if (fstatat(dirfd(dir), name, &st, 0) == 0)
            used += (uint64_t)st.st_size;
    }
    closedir(dir);
    free(seen);
    return used;
}

static region *region_containing(uintptr_t address, size_t size)
{
    for (region *r = regions; r != NULL; r = r->next) {
        if (address >= r->base && address - r->base < r->size && size <= r->size - (address - r->base))
            return r;
    }
    return NULL;
}

/* ---- virtual memory management ---------------------------------------------
 *
 * An allocation is a memfd ("fakecu.vmm.d<device key>"), so the kernel's
 * reference count is the driver's: the memory lives while any process
 * holds a descriptor of it (a handle here keeps one, an exported fd is
 * one, one in flight in a socket is one) or a mapping of it, and goes
 * with the last, whoever made it. A reservation is PROT_NONE address
 * space; cuMemMap maps the memfd over it MAP_FIXED, with no access;
 * cuMemSetAccess mprotect()s it to what the most permissive device got.
 * Copies check the current device's access before touching a byte, so a
 * write through a READ mapping is an error code, never a fault; a raw host
 * write through one (the CUdeviceptr is a host address here) is SIGSEGV.
 *
 * Accounting: each process that holds an allocation keeps a record
 * "fakecu.<pid>.v<inode>.d<device key>" in /dev/shm, empty but sized like
 * the allocation (sparse: no pages), removed when it holds the allocation
 * no longer; cuMemGetInfo_v2 counts each inode once among the records of
 * living processes, so an allocation mapped by many processes counts once,
 * survives its creator's SIGKILL, and stops counting with its last
 * holder. An exported descriptor that no process imported yet is not
 * counted (the driver would count it). */

#define VMM_GRANULARITY ((size_t)2 << 20)
#define VMM_MEMFD_PREFIX "fakecu.vmm.d"

typedef struct vmm_alloc {
    struct vmm_alloc *next;
    CUmemGenericAllocationHandle handle;
    int fd; /* our own descriptor of the memfd, until the struct goes */
    ino_t inode;
    size_t size;
    int device;
    uint64_t key;
    unsigned handle_types;
    unsigned refs;     /* handle references: create or import, retains */
    unsigned mappings; /* live cuMemMap mappings of it */
} vmm_alloc;

typedef struct vmm_reservation {
    struct vmm_reservation *next;
    uintptr_t base;
    size_t size;
} vmm_reservation;

typedef struct vmm_mapping {
    struct vmm_mapping *next;
    uintptr_t base;
    size_t size;
    vmm_alloc *alloc;
    unsigned char access[MAX_DEVICES]; /* CU_MEM_ACCESS_FLAGS_PROT_* per device */
} vmm_mapping;

static vmm_alloc *vmm_allocs;
static vmm_reservation *vmm_reservations;
static vmm_mapping *vmm_mappings;

/* BEGIN, then FAKE_CUDA_NO_VMM: a driver without VMM (only reachable by
 * dlsym: cuGetProcAddress_v2 does not find these then). */
#define VMM_BEGIN(function)                                                   \
    do {                                                                      \
        BEGIN(function, NEEDS_INIT);                                          \
        if (vmm_disabled())                                                   \
            return CUDA_ERROR_NOT_SUPPORTED;                                  \
    } while (0)

static void vmm_record_name(char *name, size_t size, pid_t pid, ino_t inode, uint64_t key)
{
    snprintf(name, size, "fakecu.%ld.v%016llx.d%016llx", (long)pid, (unsigned long long)inode,
             (unsigned long long)key);
}

/* This process's record of `inode`: present while some allocation struct
 * of it exists here, removed with the last (under `lock`). */
static void vmm_sync_record(ino_t inode, uint64_t key, size_t size)
{
    bool held = false;
    for (const vmm_alloc *a = vmm_allocs; a != NULL && !held; a = a->next)
        held = a->inode == inode;
    char name[80], path[96];
    vmm_record_name(name, sizeof name, init_pid, inode, key);
    snprintf(path, sizeof path, "/%s", name);
    if (!held) {
        shm_unlink(path);
        return;
    }
    int fd = shm_open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (ftruncate(fd, (off_t)size) != 0)
            fprintf(stderr, "fake libcuda: cannot size %s: %s\n", path, strerror(errno));
        close(fd);
    }
}

static vmm_alloc *vmm_find(CUmemGenericAllocationHandle handle)
{
    for (vmm_alloc *a = vmm_allocs; a != NULL; a = a->next)
        if (a->handle == handle && a->refs > 0)
            return a;
    return NULL;
}

static void vmm_maybe_free(vmm_alloc *alloc)
{
    if (alloc->refs > 0 || alloc->mappings > 0)
        return;
    for (vmm_alloc **link = &vmm_allocs; *link != NULL; link = &(*link)->next) {
        if (*link == alloc) {
            *link = alloc->next;
            break;
        }
    }
    close(alloc->fd);
    vmm_sync_record(alloc->inode, alloc->key, alloc->size);
    free(alloc);
}

/* A mapping that holds [address, address + size), or NULL. */
static vmm_mapping *vmm_mapping_containing(uintptr_t address, size_t size)
{
    for (vmm_mapping *m = vmm_mappings; m != NULL; m = m->next)
        if (address >= m->base && address - m->base < m->size &&
            size <= m->size - (address - m->base))
            return m;
    return NULL;
}

/* What a copy may do through a mapping, for the current device: nothing
 * before cuMemSetAccess (INVALID_VALUE, as an address without memory),
 * and no write through READ (ILLEGAL_ADDRESS, the fault a GPU takes). */
static CUresult vmm_access_check(const vmm_mapping *m, bool write)
{
    unsigned access = m->access[current_context()->device];
    if (access == CU_MEM_ACCESS_FLAGS_PROT_NONE)
        return CUDA_ERROR_INVALID_VALUE;
    if (write && access != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    return CUDA_SUCCESS;
}

/* The properties we emulate: pinned memory on a visible device. */
static CUresult vmm_check_properties(const CUmemAllocationProp *prop)
{
    if (prop == NULL || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->win32HandleMetaData != NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (prop->location.id < 0 || prop->location.id >= device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                              CUmemAllocationGranularity_flags option)
{
    VMM_BEGIN(cuMemGetAllocationGranularity);
    if (granularity == NULL || (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
                                option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
        return CUDA_ERROR_INVALID_VALUE;
    CUresult result = vmm_check_properties(prop);
    if (result == CUDA_SUCCESS)
        *granularity = VMM_GRANULARITY;
    return result;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags)
{
    VMM_BEGIN(cuMemCreate);
    if (handle == NULL || flags != 0 || size == 0 || size % VMM_GRANULARITY != 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult result = vmm_check_properties(prop);
    if (result != CUDA_SUCCESS)
        return result;
    if ((prop->requestedHandleTypes & ~CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) != 0)
        return CUDA_ERROR_NOT_SUPPORTED; /* Windows and fabric handles */
    int device = prop->location.id;
    uint64_t used = device_memory_used(device_keys[device]);
    if (used > memory_total() || size > memory_total() - used)
        return CUDA_ERROR_OUT_OF_MEMORY;
    vmm_alloc *alloc = calloc(1, sizeof *alloc);
    if (alloc == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    char name[40];
    snprintf(name, sizeof name, VMM_MEMFD_PREFIX "%016llx",
             (unsigned long long)device_keys[device]);
    int fd = memfd_create(name, MFD_CLOEXEC);
    struct stat st;
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        free(alloc);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_lock(&lock);
    alloc->handle = ++next_id;
    alloc->fd = fd;
    alloc->inode = st.st_ino;
    alloc->size = size;
    alloc->device = device;
    alloc->key = device_keys[device];
    alloc->handle_types = (unsigned)prop->requestedHandleTypes;
    alloc->refs = 1;
    alloc->next = vmm_allocs;
    vmm_allocs = alloc;
    vmm_sync_record(alloc->inode, alloc->key, alloc->size);
    *handle = alloc->handle;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* An unknown or already released handle is undefined behaviour for the
 * driver; here INVALID_VALUE. */
EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    VMM_BEGIN(cuMemRelease);
    pthread_mutex_lock(&lock);
    vmm_alloc *alloc = vmm_find(handle);
    if (alloc != NULL) {
        alloc->refs--;
        vmm_maybe_free(alloc);
    }
    pthread_mutex_unlock(&lock);
    return alloc != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemAddressReserve(CUdeviceptr *pointer, size_t size, size_t alignment,
                                    CUdeviceptr address, unsigned long long flags)
{
    VMM_BEGIN(cuMemAddressReserve);
    (void)address; /* a hint */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (pointer == NULL || size == 0 || size % page != 0 || flags != 0 ||
        (alignment & (alignment - 1)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    size_t align = alignment > VMM_GRANULARITY ? alignment : VMM_GRANULARITY;
    vmm_reservation *r = calloc(1, sizeof *r);
    if (r == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    size_t span = size + align;
    void *raw = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        free(r);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    uintptr_t start = (uintptr_t)raw, base = (start + align - 1) & ~(uintptr_t)(align - 1);
    if (base > start)
        munmap(raw, base - start);
    if (start + span > base + size)
        munmap((void *)(base + size), start + span - (base + size));
    r->base = base;
    r->size = size;
    pthread_mutex_lock(&lock);
    r->next = vmm_reservations;
    vmm_reservations = r;
    pthread_mutex_unlock(&lock);
    *pointer = (CUdeviceptr)base;
    return CUDA_SUCCESS;
}

/* Exactly a reservation, with nothing mapped in it any more. */
EXPORT CUresult cuMemAddressFree(CUdeviceptr pointer, size_t size)
{
    VMM_BEGIN(cuMemAddressFree);
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_VALUE;
    for (vmm_reservation **link = &vmm_reservations; *link != NULL; link = &(*link)->next) {
        vmm_reservation *r = *link;
        if (r->base != (uintptr_t)pointer || r->size != size)
            continue;
        bool mapped = false;
        for (const vmm_mapping *m = vmm_mappings; m != NULL && !mapped; m = m->next)
            mapped = m->base >= r->base && m->base - r->base < r->size;
        if (!mapped) {
            *link = r->next;
            munmap((void *)r->base, r->size);
            free(r);
            result = CUDA_SUCCESS;
        }
        break;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* The driver's rules: offset 0, a size equal to the allocation's (the
 * fake maps whole allocations only), an address aligned to the
 * granularity inside one reservation, over nothing mapped yet. The new
 * mapping has no access. */
EXPORT CUresult cuMemMap(CUdeviceptr pointer, size_t size, size_t offset,
                         CUmemGenericAllocationHandle handle, unsigned long long flags)
{
    VMM_BEGIN(cuMemMap);
    if (flags != 0 || offset != 0 || (uintptr_t)pointer % VMM_GRANULARITY != 0)
        return CUDA_ERROR_INVALID_VALUE;
    uintptr_t base = (uintptr_t)pointer;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_VALUE;
    vmm_alloc *alloc = vmm_find(handle);
    const vmm_reservation *r = vmm_reservations;
    for (; r != NULL; r = r->next)
        if (base >= r->base && base - r->base < r->size && size <= r->size - (base - r->base))
            break;
    bool overlaps = false;
    for (const vmm_mapping *m = vmm_mappings; m != NULL && !overlaps; m = m->next)
        overlaps = base < m->base + m->size && m->base < base + size;
    vmm_mapping *mapping = NULL;
    if (alloc != NULL && size == alloc->size && r != NULL && !overlaps) {
        mapping = calloc(1, sizeof *mapping);
        result = CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (mapping != NULL && mmap((void *)base, size, PROT_NONE, MAP_SHARED | MAP_FIXED, alloc->fd,
                                0) != MAP_FAILED) {
        mapping->base = base;
        mapping->size = size;
        mapping->alloc = alloc;
        mapping->next = vmm_mappings;
        vmm_mappings = mapping;
        alloc->mappings++;
        result = CUDA_SUCCESS;
    } else {
        free(mapping);
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* Exactly one whole mapping; the range becomes reserved address space
 * again. */
EXPORT CUresult cuMemUnmap(CUdeviceptr pointer, size_t size)
{
    VMM_BEGIN(cuMemUnmap);
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_VALUE;
    for (vmm_mapping **link = &vmm_mappings; *link != NULL; link = &(*link)->next) {
        vmm_mapping *m = *link;
        if (m->base != (uintptr_t)pointer || m->size != size)
            continue;
        *link = m->next;
        if (mmap((void *)m->base, m->size, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
            fprintf(stderr, "fake libcuda: cuMemUnmap: %s\n", strerror(errno));
        m->alloc->mappings--;
        vmm_maybe_free(m->alloc);
        free(m);
        result = CUDA_SUCCESS;
        break;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* The range must be whole mappings, back to back. */
EXPORT CUresult cuMemSetAccess(CUdeviceptr pointer, size_t size, const CUmemAccessDesc *desc,
                               size_t count)
{
    VMM_BEGIN(cuMemSetAccess);
    if (desc == NULL || count == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
            (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
             desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
             desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE))
            return CUDA_ERROR_INVALID_VALUE;
        if (desc[i].location.id < 0 || desc[i].location.id >= device_count)
            return CUDA_ERROR_INVALID_DEVICE;
    }
    uintptr_t start = (uintptr_t)pointer, end = start + size;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_SUCCESS;
    for (uintptr_t at = start; at < end && result == CUDA_SUCCESS;) {
        vmm_mapping *m = vmm_mappings;
        while (m != NULL && m->base != at)
            m = m->next;
        if (m == NULL || m->size > end - at)
            result = CUDA_ERROR_INVALID_VALUE;
        else
            at += m->size;
    }
    for (uintptr_t at = start; at < end && result == CUDA_SUCCESS;) {
        vmm_mapping *m = vmm_mappings;
        while (m->base != at)
            m = m->next;
        for (size_t i = 0; i < count; i++)
            m->access[desc[i].location.id] = (unsigned char)desc[i].flags;
        unsigned widest = 0;
        for (int d = 0; d < MAX_DEVICES; d++)
            widest |= m->access[d];
        int prot = widest == CU_MEM_ACCESS_FLAGS_PROT_READWRITE ? PROT_READ | PROT_WRITE
                   : widest != 0                                ? PROT_READ
                                                                : PROT_NONE;
        mprotect((void *)m->base, m->size, prot);
        at += m->size;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* A new descriptor of the memfd (not close-on-exec, as we assume the
 * driver's is not), the caller's to close. Only for allocations made
 * exportable as POSIX descriptors (imports are: re-export is allowed here,
 * which a GPU has to confirm). */
EXPORT CUresult cuMemExportToShareableHandle(void *shareable, CUmemGenericAllocationHandle handle,
                                             CUmemAllocationHandleType type,
                                             unsigned long long flags)
{
    VMM_BEGIN(cuMemExportToShareableHandle);
    if (shareable == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return CUDA_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_VALUE;
    vmm_alloc *alloc = vmm_find(handle);
    if (alloc != NULL && (alloc->handle_types & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) {
        int fd = fcntl(alloc->fd, F_DUPFD, 0);
        if (fd >= 0) {
            memcpy(shareable, &fd, sizeof fd);
            result = CUDA_SUCCESS;
        } else {
            result = CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* The device key of a descriptor of one of the fake's memfds (its name in
 * /proc/self/fd), or false. */
static bool vmm_descriptor_key(int fd, uint64_t *key)
{
    char path[64], target[128];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t length = readlink(path, target, sizeof target - 1);
    if (length <= 0)
        return false;
    target[length] = '\0';
    static const char prefix[] = "/memfd:" VMM_MEMFD_PREFIX;
    if (strncmp(target, prefix, sizeof prefix - 1) != 0)
        return false;
    char *end;
    *key = strtoull(target + sizeof prefix - 1, &end, 16);
    return end == target + sizeof prefix - 1 + 16;
}

/* `os_handle` is the descriptor's value; the caller keeps (and closes)
 * it: the handle holds a descriptor of its own. A descriptor that is not
 * the fake's VMM memory: INVALID_VALUE; memory of a device this process
 * does not see: INVALID_DEVICE. */
EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle,
                                               void *os_handle, CUmemAllocationHandleType type)
{
    VMM_BEGIN(cuMemImportFromShareableHandle);
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
        return CUDA_ERROR_NOT_SUPPORTED;
    int fd = (int)(intptr_t)os_handle;
    uint64_t key;
    struct stat st;
    if (fd < 0 || !vmm_descriptor_key(fd, &key) || fstat(fd, &st) != 0 || st.st_size <= 0 ||
        (size_t)st.st_size % VMM_GRANULARITY != 0)
        return CUDA_ERROR_INVALID_VALUE;
    int device = -1;
    for (int i = 0; i < device_count && device < 0; i++)
        if (device_keys[i] == key)
            device = i;
    if (device < 0)
        return CUDA_ERROR_INVALID_DEVICE;
    vmm_alloc *alloc = calloc(1, sizeof *alloc);
    if (alloc == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    alloc->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (alloc->fd < 0) {
        free(alloc);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_lock(&lock);
    alloc->handle = ++next_id;
    alloc->inode = st.st_ino;
    alloc->size = (size_t)st.st_size;
    alloc->device = device;
    alloc->key = key;
    alloc->handle_types = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    alloc->refs = 1;
    alloc->next = vmm_allocs;
    vmm_allocs = alloc;
    vmm_sync_record(alloc->inode, alloc->key, alloc->size);
    *handle = alloc->handle;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* The handle mapped at any address of a mapping, one more reference. */
EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *address)
{
    VMM_BEGIN(cuMemRetainAllocationHandle);
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    vmm_mapping *m = vmm_mapping_containing((uintptr_t)address, 1);
    if (m != NULL) {
        m->alloc->refs++;
        *handle = m->alloc->handle;
    }
    pthread_mutex_unlock(&lock);
    return m != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *pointer, size_t size)
{
    BEGIN(cuMemAlloc_v2, NEEDS_CONTEXT);
    if (pointer == NULL || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    /* The device's memory is shared by every process on it. Two processes
     * allocating at once may both pass: a test knob, not a quota. */
    uint64_t used = device_memory_used(device_keys[current_context()->device]);
    if (used > memory_total() || page_round(size) > memory_total() - used)
        return CUDA_ERROR_OUT_OF_MEMORY;
    region *r = calloc(1, sizeof *r);
    if (r == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    r->id = ++next_id;
    r->size = size;
    r->mapped = page_round(size);
    r->context = current_context();
    allocation_name(r->name, sizeof r->name, init_pid, r->id, device_keys[r->context->device]);
    char path[80];
    snprintf(path, sizeof path, "/%s", r->name);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    void *base = MAP_FAILED;
    if (fd >= 0) {
        if (ftruncate(fd, (off_t)r->mapped) == 0)
            base = mmap(NULL, r->mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (base == MAP_FAILED)
            shm_unlink(path);
    }
    if (base == MAP_FAILED) {
        pthread_mutex_unlock(&lock);
        free(r);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r->base = (uintptr_t)base;
    r->next = regions;
    regions = r;
    pthread_mutex_unlock(&lock);
    *pointer = (CUdeviceptr)r->base;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr pointer)
{
    BEGIN(cuMemFree_v2, NEEDS_CONTEXT);
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_VALUE;
    for (region **link = &regions; *link != NULL; link = &(*link)->next) {
        region *r = *link;
        if (!r->imported && r->base == (uintptr_t)pointer) {
            *link = r->next;
            unmap_region(r);
            free(r);
            result = CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr pointer)
{
    BEGIN(cuMemGetAddressRange_v2, NEEDS_CONTEXT);
    pthread_mutex_lock(&lock);
    region *r = region_containing((uintptr_t)pointer, 1);
    const vmm_mapping *m = r == NULL ? vmm_mapping_containing((uintptr_t)pointer, 1) : NULL;
    if (r != NULL || m != NULL) {
        if (base != NULL)
            *base = (CUdeviceptr)(r != NULL ? r->base : m->base);
        if (size != NULL)
            *size = r != NULL ? r->size : m->size;
    }
    pthread_mutex_unlock(&lock);
    return r != NULL || m != NULL ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

/* A range inside one VMM mapping that gives the current device the
 * access needed, or INVALID_VALUE. */
static CUresult vmm_range(CUdeviceptr pointer, size_t size, bool write, void **host)
{
    vmm_mapping *m = vmm_mapping_containing((uintptr_t)pointer, size);
    if (m == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult result = vmm_access_check(m, write);
    if (result == CUDA_SUCCESS)
        *host = (void *)(uintptr_t)pointer;
    return result;
}

/* The range a copy touches: inside one region, and for an import, still
 * backed by a living exporter's allocation; or inside one VMM mapping
 * that gives the current device the access needed. */
static CUresult device_range(CUdeviceptr pointer, size_t size, bool write, void **host)
{
    region *r = region_containing((uintptr_t)pointer, size);
    if (r == NULL)
        return vmm_range(pointer, size, write, host);
    if (r->imported && (!exporter_alive(r->exporter, r->exporter_start) ||
                        !object_present(r->name, r->inode)))
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    *host = (void *)(uintptr_t)pointer;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr destination, const void *source, size_t size)
{
    BEGIN(cuMemcpyHtoD_v2, NEEDS_CONTEXT);
    if (size == 0)
        return CUDA_SUCCESS;
    if (source == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    void *host;
    CUresult result = device_range(destination, size, true, &host);
    if (result == CUDA_SUCCESS)
        memcpy(host, source, size);
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuMemcpyDtoH_v2(void *destination, CUdeviceptr source, size_t size)
{
    BEGIN(cuMemcpyDtoH_v2, NEEDS_CONTEXT);
    if (size == 0)
        return CUDA_SUCCESS;
    if (destination == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    void *host;
    CUresult result = device_range(source, size, false, &host);
    if (result == CUDA_SUCCESS)
        memcpy(destination, host, size);
    pthread_mutex_unlock(&lock);
    return result;
}

/* What the device-to-device calls touch: a range inside one allocation or
 * import of the current context (a copy through another context's
 * pointer is a bug the fake makes loud), and for an import, still backed
 * by a living exporter's allocation; or a VMM mapping (process-wide, as
 * on a GPU) with the access needed for the current device. */
static CUresult context_range(CUdeviceptr pointer, size_t size, bool write, void **host)
{
    struct CUctx_st *context = current_context();
    region *r;
    for (r = regions; r != NULL; r = r->next) {
        uintptr_t address = (uintptr_t)pointer;
        if (r->context == context && address >= r->base && address - r->base < r->size &&
            size <= r->size - (address - r->base))
            break;
    }
    if (r == NULL)
        return vmm_range(pointer, size, write, host);
    if (r->imported && (!exporter_alive(r->exporter, r->exporter_start) ||
                        !object_present(r->name, r->inode)))
        return CUDA_ERROR_ILLEGAL_ADDRESS;
    *host = (void *)(uintptr_t)pointer;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemsetD8_v2(CUdeviceptr destination, unsigned char value, size_t count)
{
    BEGIN(cuMemsetD8_v2, NEEDS_CONTEXT);
    if (count == 0)
        return CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    void *host;
    CUresult result = context_range(destination, count, true, &host);
    if (result == CUDA_SUCCESS)
        memset(host, value, count);
    pthread_mutex_unlock(&lock);
    return result;
}

/* Both sides are host mappings, whether allocated here or imported. */
static CUresult copy_device_to_device(CUdeviceptr destination, CUdeviceptr source, size_t size)
{
    if (size == 0)
        return CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    void *to, *from;
    CUresult result = context_range(destination, size, true, &to);
    if (result == CUDA_SUCCESS)
        result = context_range(source, size, false, &from);
    if (result == CUDA_SUCCESS)
        memmove(to, from, size);
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr destination, CUdeviceptr source, size_t size)
{
    BEGIN(cuMemcpyDtoD_v2, NEEDS_CONTEXT);
    return copy_device_to_device(destination, source, size);
}

static bool valid_stream(CUstream stream);

/* The fake's work is synchronous: done before it returns, on a stream
 * that must still exist. */
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr destination, CUdeviceptr source, size_t size,
                                     CUstream stream)
{
    BEGIN(cuMemcpyDtoDAsync_v2, NEEDS_CONTEXT);
    if (!valid_stream(stream))
        return CUDA_ERROR_INVALID_HANDLE;
    return copy_device_to_device(destination, source, size);
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes)
{
    BEGIN(cuMemGetInfo_v2, NEEDS_CONTEXT);
    if (free_bytes == NULL || total_bytes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t total = memory_total();
    uint64_t used = device_memory_used(device_keys[current_context()->device]);
    *total_bytes = (size_t)total;
    *free_bytes = (size_t)(used < total ? total - used : 0);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute,
                                      CUdeviceptr pointer)
{
    BEGIN(cuPointerGetAttribute, NEEDS_INIT);
    if (data == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    region *r = region_containing((uintptr_t)pointer, 1);
    const vmm_mapping *m = r == NULL ? vmm_mapping_containing((uintptr_t)pointer, 1) : NULL;
    CUresult result = r != NULL || m != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    if (m != NULL) {
        /* A VMM mapping: memory of its allocation's device. */
        switch (attribute) {
        case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = &primary[m->alloc->device]; break;
        case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: *(unsigned int *)data = CU_MEMORYTYPE_DEVICE; break;
        case CU_POINTER_ATTRIBUTE_BUFFER_ID: *(unsigned long long *)data = m->alloc->handle; break;
        case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = m->alloc->device; break;
        case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: *(int *)data = 0; break;
        case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(CUdeviceptr *)data = m->base; break;
        case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = m->size; break;
        default: result = CUDA_ERROR_INVALID_VALUE;
        }
    } else if (r != NULL) {
        switch (attribute) {
        case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = r->context; break;
        case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: *(unsigned int *)data = CU_MEMORYTYPE_DEVICE; break;
        case CU_POINTER_ATTRIBUTE_BUFFER_ID: *(unsigned long long *)data = r->id; break;
        case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = r->context->device; break;
        case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: *(int *)data = !r->imported; break;
        case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(CUdeviceptr *)data = r->base; break;
        case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = r->size; break;
        default: result = CUDA_ERROR_INVALID_VALUE;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* ---- legacy IPC memory ---------------------------------------------------- */

static void wire_write(char out[CU_IPC_HANDLE_SIZE], uint64_t magic, int device, uint64_t id,
                       uint64_t size)
{
    wire w = {
        .magic = magic,
        .pid = (int32_t)init_pid,
        .device = (uint32_t)device,
        .start_time = self_start,
        .pid_ns = self_pid_ns,
        .id = id,
        .nonce = nonce,
        .size = size,
        .device_key = device_keys[device],
    };
    memset(out, 0, CU_IPC_HANDLE_SIZE);
    memcpy(out, &w, sizeof w);
}

static bool is_self(const wire *w)
{
    return w->pid == (int32_t)init_pid && w->start_time == self_start && w->pid_ns == self_pid_ns;
}

EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *handle, CUdeviceptr pointer)
{
    BEGIN(cuIpcGetMemHandle, NEEDS_CONTEXT);
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_VALUE;
    for (region *r = regions; r != NULL; r = r->next) {
        /* Only the base of a block this process allocated. */
        if (!r->imported && r->base == (uintptr_t)pointer) {
            wire_write(handle->reserved, MEM_MAGIC, r->context->device, r->id, r->size);
            result = CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pointer, CUipcMemHandle handle,
                                      unsigned int flags)
{
    BEGIN(cuIpcOpenMemHandle_v2, NEEDS_CONTEXT);
    if (pointer == NULL || flags != CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)
        return CUDA_ERROR_INVALID_VALUE;
    wire w;
    memcpy(&w, handle.reserved, sizeof w);
    if (w.magic != MEM_MAGIC || w.size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (is_self(&w))
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUctx_st *context = current_context();
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_SUCCESS;
    region *r;
    for (r = regions; r != NULL; r = r->next) {
        if (r->imported && r->context == context && r->exporter == (pid_t)w.pid &&
            r->exporter_start == w.start_time && r->id == w.id)
            break;
    }
    if (r != NULL) {
        r->opens++;
        *pointer = (CUdeviceptr)r->base;
        goto out;
    }
    if (!exporter_alive((pid_t)w.pid, w.start_time)) {
        result = CUDA_ERROR_INVALID_HANDLE;
        goto out;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        result = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    r->imported = true;
    r->id = w.id;
    r->size = w.size;
    r->mapped = page_round(w.size);
    r->context = context;
    r->exporter = (pid_t)w.pid;
    r->exporter_start = w.start_time;
    r->opens = 1;
    allocation_name(r->name, sizeof r->name, (pid_t)w.pid, w.id, w.device_key);
    char path[80];
    snprintf(path, sizeof path, "/%s", r->name);
    int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    struct stat st;
    void *base = MAP_FAILED;
    if (fd >= 0) {
        if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= r->mapped) {
            r->inode = st.st_ino;
            base = mmap(NULL, r->mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        }
        close(fd);
    }
    if (base == MAP_FAILED) {
        free(r);
        result = CUDA_ERROR_INVALID_HANDLE; /* freed, or not what the handle says */
        goto out;
    }
    r->base = (uintptr_t)base;
    r->next = regions;
    regions = r;
    atomic_fetch_add(&imports_mapped, 1);
    *pointer = (CUdeviceptr)r->base;
out:
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr pointer)
{
    BEGIN(cuIpcCloseMemHandle, NEEDS_CONTEXT);
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_VALUE;
    for (region **link = &regions; *link != NULL; link = &(*link)->next) {
        region *r = *link;
        if (r->imported && r->base == (uintptr_t)pointer) {
            if (--r->opens == 0) {
                *link = r->next;
                unmap_region(r);
                free(r);
            }
            result = CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* ---- events --------------------------------------------------------------- */

/* NULL and CU_STREAM_LEGACY (the legacy default stream),
 * CU_STREAM_PER_THREAD, or a stream cuStreamCreate made and
 * cuStreamDestroy_v2 did not destroy yet. */
static bool valid_stream(CUstream stream)
{
    if (stream == NULL || stream == RM_CU_STREAM_LEGACY || stream == RM_CU_STREAM_PER_THREAD)
        return true;
    pthread_mutex_lock(&lock);
    bool found = false;
    for (const struct CUstream_st *s = streams; s != NULL && !found; s = s->next)
        found = s == stream && s->magic == STREAM_OBJECT_MAGIC;
    pthread_mutex_unlock(&lock);
    return found;
}

static bool valid_event(const struct CUevent_st *event)
{
    for (const struct CUevent_st *e = events; e != NULL; e = e->next)
        if (e == event && e->magic == EVENT_OBJECT_MAGIC)
            return true;
    return false;
}

static bool event_backed(const struct CUevent_st *event)
{
    return !event->imported || (exporter_alive(event->exporter, event->exporter_start) &&
                                object_present(event->name, event->inode));
}

static void destroy_event_locked(struct CUevent_st *event)
{
    if (event->slot != &event->local) {
        munmap(event->slot, page_round(sizeof(event_slot)));
        if (!event->imported) {
            char path[80];
            snprintf(path, sizeof path, "/%s", event->name);
            shm_unlink(path);
        }
    }
    event->magic = 0;
    free(event);
}

EXPORT CUresult cuEventCreate(CUevent *out, unsigned int flags)
{
    BEGIN(cuEventCreate, NEEDS_CONTEXT);
    if (out == NULL || (flags & ~0x7u) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if ((flags & CU_EVENT_INTERPROCESS) && !(flags & CU_EVENT_DISABLE_TIMING))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUevent_st *event = calloc(1, sizeof *event);
    if (event == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    event->magic = EVENT_OBJECT_MAGIC;
    event->flags = flags;
    event->context = current_context();
    event->id = ++next_id;
    event->slot = &event->local;
    if (flags & CU_EVENT_INTERPROCESS) {
        snprintf(event->name, sizeof event->name, "fakecu.%ld.e%016llx", (long)init_pid,
                 (unsigned long long)event->id);
        char path[80];
        snprintf(path, sizeof path, "/%s", event->name);
        int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        void *slot = MAP_FAILED;
        if (fd >= 0) {
            size_t size = page_round(sizeof(event_slot));
            if (ftruncate(fd, (off_t)size) == 0)
                slot = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            if (slot == MAP_FAILED)
                shm_unlink(path);
        }
        if (slot == MAP_FAILED) {
            pthread_mutex_unlock(&lock);
            free(event);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        event->slot = slot;
    }
    event->slot->magic = EVENT_MAGIC;
    event->next = events;
    events = event;
    pthread_mutex_unlock(&lock);
    *out = event;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent event, CUstream stream)
{
    BEGIN(cuEventRecord, NEEDS_CONTEXT);
    if (!valid_stream(stream))
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_SUCCESS;
    if (!valid_event(event) || !event_backed(event)) {
        result = CUDA_ERROR_INVALID_HANDLE;
    } else {
        const char *delay = getenv("FAKE_CUDA_EVENT_DELAY_MS");
        int64_t delay_ns = delay != NULL ? (int64_t)atoi(delay) * 1000000 : 0;
        int64_t complete_at = now_ns() + delay_ns;
        atomic_store(&event->slot->complete_at_ns, complete_at);
        atomic_fetch_add(&event->slot->records, 1);
        struct CUctx_st *context = current_context();
        if (context->busy_until_ns < complete_at)
            context->busy_until_ns = complete_at;
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* Waits for the last record to complete, without holding the lock; an
 * imported event whose exporter goes away meanwhile is an error. */
static CUresult wait_event(CUevent event)
{
    pthread_mutex_lock(&lock);
    bool valid = valid_event(event) && event_backed(event);
    pthread_mutex_unlock(&lock);
    if (!valid)
        return CUDA_ERROR_INVALID_HANDLE;
    for (;;) {
        int64_t remaining = atomic_load(&event->slot->complete_at_ns) - now_ns();
        if (remaining <= 0)
            return CUDA_SUCCESS;
        struct timespec pause = {0, remaining < 1000000 ? (long)remaining : 1000000};
        nanosleep(&pause, NULL);
        if (event->imported && !event_backed(event))
            return CUDA_ERROR_INVALID_HANDLE;
    }
}

EXPORT CUresult cuEventSynchronize(CUevent event)
{
    BEGIN(cuEventSynchronize, NEEDS_INIT);
    return wait_event(event);
}

/* Done once the last record's completion time has passed; an event never
 * recorded is done. */
EXPORT CUresult cuEventQuery(CUevent event)
{
    BEGIN(cuEventQuery, NEEDS_INIT);
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_SUCCESS;
    if (!valid_event(event) || !event_backed(event))
        result = CUDA_ERROR_INVALID_HANDLE;
    else if (atomic_load(&event->slot->complete_at_ns) > now_ns())
        result = CUDA_ERROR_NOT_READY;
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuEventDestroy_v2(CUevent event)
{
    BEGIN(cuEventDestroy_v2, NEEDS_INIT);
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_HANDLE;
    for (struct CUevent_st **link = &events; *link != NULL; link = &(*link)->next) {
        if (*link == event) {
            *link = event->next;
            destroy_event_locked(event);
            result = CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuIpcGetEventHandle(CUipcEventHandle *handle, CUevent event)
{
    BEGIN(cuIpcGetEventHandle, NEEDS_CONTEXT);
    if (handle == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_SUCCESS;
    if (!valid_event(event))
        result = CUDA_ERROR_INVALID_HANDLE;
    else if (!(event->flags & CU_EVENT_INTERPROCESS) || event->imported)
        result = CUDA_ERROR_INVALID_VALUE;
    else
        wire_write(handle->reserved, EVENT_MAGIC, event->context->device, event->id, 0);
    pthread_mutex_unlock(&lock);
    return result;
}

EXPORT CUresult cuIpcOpenEventHandle(CUevent *out, CUipcEventHandle handle)
{
    BEGIN(cuIpcOpenEventHandle, NEEDS_CONTEXT);
    if (out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    wire w;
    memcpy(&w, handle.reserved, sizeof w);
    if (w.magic != EVENT_MAGIC)
        return CUDA_ERROR_INVALID_VALUE;
    if (is_self(&w))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!exporter_alive((pid_t)w.pid, w.start_time))
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUevent_st *event = calloc(1, sizeof *event);
    if (event == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    event->magic = EVENT_OBJECT_MAGIC;
    event->flags = CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING;
    event->imported = true;
    event->context = current_context();
    event->id = w.id;
    event->exporter = (pid_t)w.pid;
    event->exporter_start = w.start_time;
    snprintf(event->name, sizeof event->name, "fakecu.%ld.e%016llx", (long)w.pid,
             (unsigned long long)w.id);
    char path[80];
    snprintf(path, sizeof path, "/%s", event->name);
    int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    void *slot = MAP_FAILED;
    struct stat st;
    if (fd >= 0) {
        size_t size = page_round(sizeof(event_slot));
        if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= size) {
            event->inode = st.st_ino;
            slot = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        }
        close(fd);
    }
    if (slot == MAP_FAILED || ((event_slot *)slot)->magic != EVENT_MAGIC) {
        if (slot != MAP_FAILED)
            munmap(slot, page_round(sizeof(event_slot)));
        free(event);
        return CUDA_ERROR_INVALID_HANDLE; /* destroyed by its exporter */
    }
    event->slot = slot;
    pthread_mutex_lock(&lock);
    event->next = events;
    events = event;
    pthread_mutex_unlock(&lock);
    *out = event;
    return CUDA_SUCCESS;
}

/* The fake's work is synchronous, so a stream that waits for an event is
 * the host waiting for it. */
EXPORT CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned int flags)
{
    BEGIN(cuStreamWaitEvent, NEEDS_CONTEXT);
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_stream(stream))
        return CUDA_ERROR_INVALID_HANDLE;
    return wait_event(event);
}

EXPORT CUresult cuStreamSynchronize(CUstream stream)
{
    BEGIN(cuStreamSynchronize, NEEDS_CONTEXT);
    return valid_stream(stream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuStreamCreate(CUstream *out, unsigned int flags)
{
    BEGIN(cuStreamCreate, NEEDS_CONTEXT);
    if (out == NULL || (flags != CU_STREAM_DEFAULT && flags != CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *stream = calloc(1, sizeof *stream);
    if (stream == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    stream->magic = STREAM_OBJECT_MAGIC;
    stream->flags = flags;
    stream->context = current_context();
    pthread_mutex_lock(&lock);
    stream->next = streams;
    streams = stream;
    pthread_mutex_unlock(&lock);
    *out = stream;
    return CUDA_SUCCESS;
}

/* The default streams are not the caller's to destroy. */
EXPORT CUresult cuStreamDestroy_v2(CUstream stream)
{
    BEGIN(cuStreamDestroy_v2, NEEDS_INIT);
    pthread_mutex_lock(&lock);
    CUresult result = CUDA_ERROR_INVALID_HANDLE;
    for (struct CUstream_st **link = &streams; *link != NULL; link = &(*link)->next) {
        if (*link == stream) {
            *link = stream->next;
            stream->magic = 0;
            free(stream);
            result = CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

/* The fake's work is synchronous but for event records, whose completion
 * FAKE_CUDA_EVENT_DELAY_MS postpones: synchronizing a context waits for
 * the last of them. */
static CUresult synchronize_context(struct CUctx_st *context)
{
    pthread_mutex_lock(&lock);
    int64_t busy_until = context->busy_until_ns;
    pthread_mutex_unlock(&lock);
    for (int64_t remaining; (remaining = busy_until - now_ns()) > 0;) {
        struct timespec pause = {remaining / 1000000000, remaining % 1000000000};
        nanosleep(&pause, NULL);
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize(void)
{
    BEGIN(cuCtxSynchronize, NEEDS_CONTEXT);
    return synchronize_context(current_context());
}

/* CUDA 13.0's: NULL is the current context. cuGetProcAddress_v2 returns
 * it for "cuCtxSynchronize" from version 13000, as the driver does; a
 * caller that declared the old signature passes garbage here, which an
 * unknown context makes loud. */
EXPORT CUresult cuCtxSynchronize_v2(CUcontext context)
{
    BEGIN(cuCtxSynchronize_v2, NEEDS_INIT);
    if (context == NULL) {
        if (!current_context_valid())
            return CUDA_ERROR_INVALID_CONTEXT;
        return synchronize_context(current_context());
    }
    bool known = false;
    for (int i = 0; i < device_count; i++)
        known |= context == &primary[i];
    if (!known || context->retains == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    return synchronize_context(context);
}

/* ---- plain legacy symbols: calling one is the bug being tested for ------- */

static CUresult legacy_called(void)
{
    atomic_fetch_add(&legacy_calls, 1);
    return CUDA_ERROR_NOT_SUPPORTED;
}

#define LEGACY_SYMBOLS(X)                                                     \
    X(cuMemAlloc) X(cuMemFree) X(cuMemGetAddressRange) X(cuMemcpyHtoD)        \
    X(cuMemcpyDtoH) X(cuIpcOpenMemHandle) X(cuCtxPushCurrent)                 \
    X(cuCtxPopCurrent) X(cuEventDestroy) X(cuDevicePrimaryCtxRelease)         \
    X(cuDeviceGetUuid) X(cuMemsetD8) X(cuMemcpyDtoD) X(cuMemcpyDtoDAsync)      \
    X(cuMemGetInfo) X(cuStreamDestroy)
#define LEGACY_DEFINE_(name)                                                  \
    EXPORT CUresult name(void);                                               \
    EXPORT CUresult name(void) { return legacy_called(); }
LEGACY_SYMBOLS(LEGACY_DEFINE_)
#undef LEGACY_DEFINE_

/* ---- cuGetProcAddress_v2 ------------------------------------------------------ */

#ifndef FAKE_CUDA_NO_PROC_ADDRESS
typedef void (*any_function)(void);

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
                                    uint64_t flags, CUdriverProcAddressQueryResult *status);

static const struct {
    const char *base;
    any_function current; /* the versioned symbol */
    int since;            /* the CUDA version that introduced it */
    any_function legacy;  /* what older versions get, if anything: a legacy
                             trap, or the older signature's function */
} proc_table[] = {
#define PROC_(base, symbol, since, legacy) {#base, (any_function)symbol, since, legacy},
    PROC_(cuInit, cuInit, 2000, NULL)
    PROC_(cuDriverGetVersion, cuDriverGetVersion, 2020, NULL)
    PROC_(cuGetProcAddress, cuGetProcAddress_v2, 12000, NULL)
    PROC_(cuGetErrorName, cuGetErrorName, 6000, NULL)
    PROC_(cuGetErrorString, cuGetErrorString, 6000, NULL)
    PROC_(cuDeviceGetCount, cuDeviceGetCount, 2000, NULL)
    PROC_(cuDeviceGet, cuDeviceGet, 2000, NULL)
    PROC_(cuDeviceGetAttribute, cuDeviceGetAttribute, 2000, NULL)
    PROC_(cuDeviceGetUuid, cuDeviceGetUuid_v2, 11040, (any_function)cuDeviceGetUuid)
    PROC_(cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, 7000, NULL)
    PROC_(cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, 11000,
          (any_function)cuDevicePrimaryCtxRelease)
    PROC_(cuCtxPushCurrent, cuCtxPushCurrent_v2, 4000, (any_function)cuCtxPushCurrent)
    PROC_(cuCtxPopCurrent, cuCtxPopCurrent_v2, 4000, (any_function)cuCtxPopCurrent)
    PROC_(cuCtxSynchronize, cuCtxSynchronize_v2, 13000, (any_function)cuCtxSynchronize)
    PROC_(cuMemAlloc, cuMemAlloc_v2, 3020, (any_function)cuMemAlloc)
    PROC_(cuMemFree, cuMemFree_v2, 3020, (any_function)cuMemFree)
    PROC_(cuMemGetInfo, cuMemGetInfo_v2, 3020, (any_function)cuMemGetInfo)
    PROC_(cuMemGetAddressRange, cuMemGetAddressRange_v2, 3020,
          (any_function)cuMemGetAddressRange)
    PROC_(cuMemcpyHtoD, cuMemcpyHtoD_v2, 3020, (any_function)cuMemcpyHtoD)
    PROC_(cuMemcpyDtoH, cuMemcpyDtoH_v2, 3020, (any_function)cuMemcpyDtoH)
    PROC_(cuMemcpyDtoD, cuMemcpyDtoD_v2, 3020, (any_function)cuMemcpyDtoD)
    PROC_(cuMemcpyDtoDAsync, cuMemcpyDtoDAsync_v2, 3020, (any_function)cuMemcpyDtoDAsync)
    PROC_(cuMemsetD8, cuMemsetD8_v2, 3020, (any_function)cuMemsetD8)
    PROC_(cuPointerGetAttribute, cuPointerGetAttribute, 4000, NULL)
    PROC_(cuIpcGetMemHandle, cuIpcGetMemHandle, 4010, NULL)
    PROC_(cuIpcOpenMemHandle, cuIpcOpenMemHandle_v2, 11000, (any_function)cuIpcOpenMemHandle)
    PROC_(cuIpcCloseMemHandle, cuIpcCloseMemHandle, 4010, NULL)
    PROC_(cuEventCreate, cuEventCreate, 2000, NULL)
    PROC_(cuEventRecord, cuEventRecord, 2000, NULL)
    PROC_(cuEventSynchronize, cuEventSynchronize, 2000, NULL)
    PROC_(cuEventQuery, cuEventQuery, 2000, NULL)
    PROC_(cuEventDestroy, cuEventDestroy_v2, 4000, (any_function)cuEventDestroy)
    PROC_(cuIpcGetEventHandle, cuIpcGetEventHandle, 4010, NULL)
    PROC_(cuIpcOpenEventHandle, cuIpcOpenEventHandle, 4010, NULL)
    PROC_(cuStreamWaitEvent, cuStreamWaitEvent, 3020, NULL)
    PROC_(cuStreamSynchronize, cuStreamSynchronize, 2000, NULL)
    PROC_(cuStreamCreate, cuStreamCreate, 2000, NULL)
    PROC_(cuStreamDestroy, cuStreamDestroy_v2, 4000, (any_function)cuStreamDestroy)
    /* Virtual memory management: not found under FAKE_CUDA_NO_VMM. */
    PROC_(cuMemGetAllocationGranularity, cuMemGetAllocationGranularity, 10020, NULL)
    PROC_(cuMemCreate, cuMemCreate, 10020, NULL)
    PROC_(cuMemRelease, cuMemRelease, 10020, NULL)
    PROC_(cuMemAddressReserve, cuMemAddressReserve, 10020, NULL)
    PROC_(cuMemAddressFree, cuMemAddressFree, 10020, NULL)
    PROC_(cuMemMap, cuMemMap, 10020, NULL)
    PROC_(cuMemUnmap, cuMemUnmap, 10020, NULL)
    PROC_(cuMemSetAccess, cuMemSetAccess, 10020, NULL)
    PROC_(cuMemExportToShareableHandle, cuMemExportToShareableHandle, 10020, NULL)
    PROC_(cuMemImportFromShareableHandle, cuMemImportFromShareableHandle, 10020, NULL)
    PROC_(cuMemRetainAllocationHandle, cuMemRetainAllocationHandle, 11000, NULL)
#undef PROC_
};

static bool is_vmm_entry(const char *base)
{
    static const char *const names[] = {
        "cuMemGetAllocationGranularity", "cuMemCreate", "cuMemRelease", "cuMemAddressReserve",
        "cuMemAddressFree", "cuMemMap", "cuMemUnmap", "cuMemSetAccess",
        "cuMemExportToShareableHandle", "cuMemImportFromShareableHandle",
        "cuMemRetainAllocationHandle"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i], base) == 0)
            return true;
    return false;
}

static bool hidden(const char *base)
{
    const char *list = getenv("FAKE_CUDA_HIDE");
    size_t length = strlen(base);
    for (const char *item = list; item != NULL && *item != '\0';) {
        const char *comma = strchr(item, ',');
        size_t item_length = comma != NULL ? (size_t)(comma - item) : strlen(item);
        if (item_length == length && strncmp(item, base, length) == 0)
            return true;
        item = comma != NULL ? comma + 1 : NULL;
    }
    return false;
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
                                    uint64_t flags, CUdriverProcAddressQueryResult *status)
{
    BEGIN(cuGetProcAddress_v2, NEEDS_NOTHING);
    if (symbol == NULL || pfn == NULL || flags > CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
        return CUDA_ERROR_INVALID_VALUE;
    if (cuda_version > driver_version())
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    CUdriverProcAddressQueryResult found = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    for (size_t i = 0; i < sizeof proc_table / sizeof proc_table[0]; i++) {
        if (strcmp(proc_table[i].base, symbol) != 0 || hidden(symbol) ||
            (vmm_disabled() && is_vmm_entry(symbol)))
            continue;
        any_function function = cuda_version >= proc_table[i].since ? proc_table[i].current
                                                                     : proc_table[i].legacy;
        if (function == NULL) {
            found = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
        } else {
            memcpy(pfn, &function, sizeof function);
            found = CU_GET_PROC_ADDRESS_SUCCESS;
        }
        break;
    }
    if (status != NULL)
        *status = found;
    return CUDA_SUCCESS;
}
#endif

/* ---- what tests read, and cleaning up ------------------------------------------ */

EXPORT long long fake_cuda_calls(const char *name);
EXPORT long long fake_cuda_calls(const char *name)
{
    if (name == NULL)
        return -1;
    if (strcmp(name, "*") == 0) {
        long long total = 0;
        for (int i = 0; i < F_COUNT; i++)
            total += atomic_load(&calls[i]);
        return total + atomic_load(&legacy_calls);
    }
    if (strcmp(name, "@legacy") == 0)
        return atomic_load(&legacy_calls);
    if (strcmp(name, "@after_fork") == 0)
        return atomic_load(&after_fork_calls);
    if (strcmp(name, "@imports_mapped") == 0)
        return atomic_load(&imports_mapped);
    if (strcmp(name, "@vmm_live") == 0 || strcmp(name, "@vmm_mapped") == 0 ||
        strcmp(name, "@vmm_reserved") == 0 || strcmp(name, "@vmm_handles") == 0) {
        long long count = 0;
        pthread_mutex_lock(&lock);
        if (strcmp(name, "@vmm_live") == 0) {
            for (const vmm_alloc *a = vmm_allocs; a != NULL; a = a->next)
                count++;
        } else if (strcmp(name, "@vmm_handles") == 0) {
            for (const vmm_alloc *a = vmm_allocs; a != NULL; a = a->next)
                count += a->refs;
        } else if (strcmp(name, "@vmm_mapped") == 0) {
            for (const vmm_mapping *m = vmm_mappings; m != NULL; m = m->next)
                count++;
        } else {
            for (const vmm_reservation *r = vmm_reservations; r != NULL; r = r->next)
                count++;
        }
        pthread_mutex_unlock(&lock);
        return count;
    }
    if (strcmp(name, "@imports_live") == 0 || strcmp(name, "@allocs_live") == 0 ||
        strcmp(name, "@events_live") == 0 || strcmp(name, "@streams_live") == 0) {
        long long count = 0;
        pthread_mutex_lock(&lock);
        if (name[1] == 'e') {
            for (struct CUevent_st *e = events; e != NULL; e = e->next)
                count++;
        } else if (name[1] == 's') {
            for (struct CUstream_st *st = streams; st != NULL; st = st->next)
                count++;
        } else {
            bool imports = name[1] == 'i';
            for (region *r = regions; r != NULL; r = r->next)
                count += r->imported == imports;
        }
        pthread_mutex_unlock(&lock);
        return count;
    }
    for (int i = 0; i < F_COUNT; i++)
        if (strcmp(function_names[i], name) == 0)
            return atomic_load(&calls[i]);
    return -1;
}

/* A normal exit leaves nothing in /dev/shm. Only the process that made
 * the objects removes them: a fork()ed child that exits must not take
 * its parent's memory with it. */
__attribute__((destructor)) static void remove_objects_at_exit(void)
{
    if (!initialised || getpid() != init_pid)
        return;
    for (region *r = regions; r != NULL; r = r->next) {
        if (!r->imported) {
            char path[80];
            snprintf(path, sizeof path, "/%s", r->name);
            shm_unlink(path);
        }
    }
    for (struct CUevent_st *e = events; e != NULL; e = e->next) {
        if (!e->imported && e->slot != &e->local) {
            char path[80];
            snprintf(path, sizeof path, "/%s", e->name);
            shm_unlink(path);
        }
    }
    /* The memfds go with the process; their records must too. */
    for (const vmm_alloc *a = vmm_allocs; a != NULL; a = a->next) {
        char name[80], path[96];
        vmm_record_name(name, sizeof name, init_pid, a->inode, a->key);
        snprintf(path, sizeof path, "/%s", name);
        shm_unlink(path);
    }
}
