/* CUDA virtual memory management (VMM) through the loader
 * (plugin/cuda/cuda_driver.h) and the fake driver (tests/fake_cuda), in
 * one process and across real processes: a descriptor of the allocation
 * travels by SCM_RIGHTS over a socketpair to cuda_peer (fork + exec),
 * which imports it and maps it READ. Covered: the wrappers and the
 * driver's rules (granularity, offset 0, whole allocations, no access
 * before cuMemSetAccess, no write through READ: an error code, never a
 * fault); memory that outlives its SIGKILLed creator while importers hold
 * it, counted once by cuMemGetInfo across processes and freed with the
 * last holder; a driver without VMM that still opens, with legacy IPC
 * working and the VMM wrappers failing with their message; injected
 * failures, with map undoing its earlier steps; 200 cycles leaving no
 * descriptor, memfd or /dev/shm object. Both fake variants (with and
 * without cuGetProcAddress_v2), and no legacy symbol ever called.
 *
 * Objects of killed processes are removed by the suite's fini. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_driver.h"
#include "error.h"
#include "fake_cuda.h"
#include "peer_process.h"

static const int owner_token;
#define OWNER ((const void *)&owner_token)

#define PEER_TIMEOUT_MS 30000
#define MiB ((size_t)1 << 20)

static void reap_leftovers(void)
{
    fake_cuda_reap_dead();
}

TestSuite(cuda_vmm, .fini = reap_leftovers, .timeout = 120);

static rm_cuda_driver *open_fake(const char *library)
{
    cr_assert_not_null(library, "FAKE_CUDA_LIBRARY(_NOPROC) is not set (run through meson)");
    rm_cuda_driver *driver = NULL;
    cr_assert_eq(rm_cuda_driver_open(library, OWNER, &driver), RM_OK, "%s",
                 rm_error_last(OWNER));
    return driver;
}

/* The call failed with `code`, CUDA's `result`, and a message holding
 * `part`. */
#define expect_failure(call, code, result, part)                              \
    do {                                                                      \
        int32_t rc_ = (call);                                                 \
        cr_expect_eq(rc_, code, "%s: rc %d: %s", #call, rc_, rm_error_last(OWNER)); \
        cr_expect_eq(rm_cuda_driver_last_result(), result, "%s: CUresult %d", #call, \
                     rm_cuda_driver_last_result());                           \
        cr_expect_not_null(strstr(rm_error_last(OWNER), part), "%s: \"%s\" not in: %s", \
                           #call, part, rm_error_last(OWNER));                \
    } while (0)

static void fill(rm_cuda_driver *driver, CUdeviceptr pointer, size_t size, uint64_t seed)
{
    uint8_t *bytes = malloc(size);
    cr_assert_not_null(bytes);
    for (size_t i = 0; i < size; i++)
        bytes[i] = fake_cuda_pattern(seed, i);
    cr_assert_eq(rm_cuda_driver_memcpy_htod(driver, 0, pointer, bytes, size, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    free(bytes);
}

static void expect_pattern(rm_cuda_driver *driver, CUdeviceptr pointer, size_t size,
                           uint64_t seed)
{
    uint8_t *copy = malloc(size);
    cr_assert_not_null(copy);
    cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, copy, pointer, size, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    for (size_t i = 0; i < size; i++)
        cr_assert_eq(copy[i], fake_cuda_pattern(seed, i), "byte %zu", i);
    free(copy);
}

static void expect_nothing_left(const char *library)
{
    cr_expect_eq(fake_cuda_counter(library, "@vmm_live"), 0, "an allocation is still held");
    cr_expect_eq(fake_cuda_counter(library, "@vmm_mapped"), 0, "a mapping is left");
    cr_expect_eq(fake_cuda_counter(library, "@vmm_reserved"), 0, "a reservation is left");
    cr_expect_eq(fake_cuda_vmm_memfds(), 0, "a memfd is still open or mapped");
    cr_expect_eq(fake_cuda_objects_of(getpid()), 0, "/dev/shm objects left");
    cr_expect_eq(fake_cuda_counter(library, "@legacy"), 0, "a plain legacy symbol was called");
}

/* The wrappers in one process: granularity, create, map READWRITE, fill,
 * seal READ, writes refused with an error code, retain by address,
 * export and re-import, unmap and release. */
static void one_process(const char *library)
{
    fake_cuda_use_private_device();
    setenv("FAKE_CUDA_MEMORY_BYTES", "1073741824", 1);
    rm_cuda_driver *driver = open_fake(library);
    cr_assert(rm_cuda_driver_has_vmm(driver, 0), "%s", rm_error_last(OWNER));
    cr_expect_not(rm_cuda_driver_has_vmm(driver, 1), "no device 1");
    size_t granularity = 0;
    cr_assert_eq(rm_cuda_driver_vmm_granularity(driver, 0, &granularity, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_expect_eq(granularity, 2 * MiB);
    const size_t size = 2 * granularity;

    CUmemGenericAllocationHandle handle;
    cr_assert_eq(rm_cuda_driver_vmm_create(driver, 0, size, &handle, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    size_t free_bytes, total;
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total, OWNER), RM_OK);
    cr_expect_eq(free_bytes, total - size, "a created allocation counts before it is mapped");
    CUdeviceptr pointer;
    cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, handle, size, true, &pointer, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_expect_eq(pointer % granularity, 0, "a mapping is aligned to the granularity");
    fill(driver, pointer, size, 41);
    expect_pattern(driver, pointer, size, 41);
    cr_assert_eq(rm_cuda_driver_memset_d8(driver, 0, pointer + 10, 0x77, 3, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    fill(driver, pointer, 64, 41);
    int ordinal = -1;
    cr_expect_eq(rm_cuda_driver_pointer_ordinal(driver, pointer + size - 1, &ordinal, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_expect_eq(ordinal, 0);
    CUdeviceptr base;
    size_t range;
    cr_expect_eq(rm_cuda_driver_mem_address_range(driver, 0, pointer + 5, &base, &range, OWNER),
                 RM_OK);
    cr_expect_eq(base, pointer);
    cr_expect_eq(range, size);
    int capable = -1;
    cr_expect_eq(rm_cuda_driver_pointer_attribute(driver, 0, &capable,
                                                  CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE,
                                                  pointer, OWNER),
                 RM_OK);
    cr_expect_eq(capable, 0, "VMM memory is not legacy-IPC capable");

    /* Sealed: reads work, writes of every kind are refused. */
    cr_assert_eq(rm_cuda_driver_vmm_set_access(driver, 0, pointer, size, false, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    expect_pattern(driver, pointer, size, 41);
    uint8_t byte = 1;
    expect_failure(rm_cuda_driver_memcpy_htod(driver, 0, pointer, &byte, 1, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_ILLEGAL_ADDRESS, "cuMemcpyHtoD_v2 failed: CUDA_ERROR_ILLEGAL_ADDRESS");
    expect_failure(rm_cuda_driver_memset_d8(driver, 0, pointer, 0, 1, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_ILLEGAL_ADDRESS, "cuMemsetD8_v2 failed");
    CUdeviceptr local;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 4096, &local, OWNER), RM_OK);
    expect_failure(rm_cuda_driver_memcpy_dtod(driver, 0, pointer, local, 16, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_ILLEGAL_ADDRESS, "cuMemcpyDtoD_v2 failed");
    cr_expect_eq(rm_cuda_driver_memcpy_dtod(driver, 0, local, pointer, 16, OWNER), RM_OK,
                 "reading out of a READ mapping: %s", rm_error_last(OWNER));
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, local, OWNER), RM_OK);
    expect_pattern(driver, pointer, size, 41);

    /* Retained by any address of the mapping: the same handle, one more
     * reference. */
    CUmemGenericAllocationHandle retained;
    cr_assert_eq(rm_cuda_driver_vmm_retain(driver, 0, pointer + 12345, &retained, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_expect_eq(retained, handle);
    cr_expect_eq(fake_cuda_counter(library, "@vmm_handles"), 2);
    cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, retained, OWNER), RM_OK);
    expect_failure(rm_cuda_driver_vmm_retain(driver, 0, (CUdeviceptr)(uintptr_t)&byte, &retained,
                                             OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemRetainAllocationHandle");

    /* Exported (close-on-exec), imported here too (the driver may refuse
     * that: the fake allows it), mapped a second time. */
    int fd = -1;
    cr_assert_eq(rm_cuda_driver_vmm_export_fd(driver, 0, handle, &fd, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_expect(fcntl(fd, F_GETFD) & FD_CLOEXEC, "the exported descriptor is not close-on-exec");
    CUmemGenericAllocationHandle imported;
    cr_assert_eq(rm_cuda_driver_vmm_import_fd(driver, 0, fd, &imported, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_expect_neq(imported, handle);
    close(fd);
    CUdeviceptr second;
    cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, imported, size, false, &second, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_expect_neq(second, pointer);
    expect_pattern(driver, second, size, 41);
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total, OWNER), RM_OK);
    cr_expect_eq(free_bytes, total - size, "one allocation, two handles and two mappings");
    expect_failure(rm_cuda_driver_vmm_import_fd(driver, 0, -1, &imported, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "descriptor -1");

    /* The creator's handle released first: the mappings keep the memory. */
    cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, handle, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, imported, OWNER), RM_OK);
    expect_pattern(driver, pointer, size, 41);
    cr_expect_eq(fake_cuda_counter(library, "@vmm_handles"), 0);
    cr_expect_eq(fake_cuda_counter(library, "@vmm_live"), 2, "each held by its mapping");
    cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, second, size, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, pointer, size, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total, OWNER), RM_OK);
    cr_expect_eq(free_bytes, total, "freed with the last mapping");
    expect_nothing_left(library);
    /* A released handle is refused (undefined for the driver). */
    expect_failure(rm_cuda_driver_vmm_release(driver, 0, handle, OWNER), RM_E_INVALID_ARGUMENT,
                   CUDA_ERROR_INVALID_VALUE, "cuMemRelease failed");
    rm_cuda_driver_release(driver);
}

Test(cuda_vmm, the_wrappers_map_seal_retain_export_and_free_through_cuGetProcAddress_v2)
{
    one_process(fake_cuda_library());
}

Test(cuda_vmm, the_wrappers_map_seal_retain_export_and_free_by_versioned_dlsym)
{
    one_process(fake_cuda_library_noproc());
}

Test(cuda_vmm, sizes_not_a_multiple_of_the_granularity_are_refused)
{
    rm_cuda_driver *driver = open_fake(fake_cuda_library());
    CUmemGenericAllocationHandle handle;
    expect_failure(rm_cuda_driver_vmm_create(driver, 0, MiB, &handle, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE,
                   "cuMemCreate failed: CUDA_ERROR_INVALID_VALUE (1)");
    expect_failure(rm_cuda_driver_vmm_create(driver, 0, 0, &handle, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemCreate failed");
    cr_assert_eq(rm_cuda_driver_vmm_create(driver, 0, 4 * MiB, &handle, OWNER), RM_OK);
    /* Map exactly the allocation's size; anything else is refused, and
     * leaves no reservation behind. */
    CUdeviceptr pointer;
    expect_failure(rm_cuda_driver_vmm_map(driver, 0, handle, 2 * MiB, false, &pointer, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemMap failed");
    expect_failure(rm_cuda_driver_vmm_map(driver, 0, handle, 6 * MiB, false, &pointer, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemMap failed");
    cr_expect_eq(fake_cuda_counter(fake_cuda_library(), "@vmm_reserved"), 0);
    cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, handle, 4 * MiB, false, &pointer, OWNER), RM_OK);
    expect_failure(rm_cuda_driver_vmm_unmap(driver, 0, pointer, 2 * MiB, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemUnmap failed");
    expect_failure(rm_cuda_driver_vmm_set_access(driver, 0, pointer, 6 * MiB, true, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemSetAccess failed");
    cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, pointer, 4 * MiB, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, handle, OWNER), RM_OK);
    expect_nothing_left(fake_cuda_library());
    rm_cuda_driver_release(driver);
}

/* The fake's rules, called directly (the loader never breaks them). */
#define BIND(handle, name) bind_symbol(handle, #name, (void **)&name)
static void bind_symbol(void *handle, const char *name, void **slot)
{
    void *symbol = dlsym(handle, name);
    cr_assert_not_null(symbol, "the fake has no %s", name);
    memcpy(slot, &symbol, sizeof symbol);
}

Test(cuda_vmm, the_fake_enforces_the_drivers_vmm_rules)
{
    void *fake = dlopen(fake_cuda_library(), RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(fake, "%s", dlerror());
    PFN_cuInit cuInit;
    PFN_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain;
    PFN_cuCtxPushCurrent_v2 cuCtxPushCurrent_v2;
    PFN_cuMemcpyHtoD_v2 cuMemcpyHtoD_v2;
    PFN_cuMemcpyDtoH_v2 cuMemcpyDtoH_v2;
    PFN_cuMemGetAllocationGranularity cuMemGetAllocationGranularity;
    PFN_cuMemCreate cuMemCreate;
    PFN_cuMemRelease cuMemRelease;
    PFN_cuMemAddressReserve cuMemAddressReserve;
    PFN_cuMemAddressFree cuMemAddressFree;
    PFN_cuMemMap cuMemMap;
    PFN_cuMemUnmap cuMemUnmap;
    PFN_cuMemSetAccess cuMemSetAccess;
    PFN_cuMemExportToShareableHandle cuMemExportToShareableHandle;
    PFN_cuMemImportFromShareableHandle cuMemImportFromShareableHandle;
    BIND(fake, cuInit);
    BIND(fake, cuDevicePrimaryCtxRetain);
    BIND(fake, cuCtxPushCurrent_v2);
    BIND(fake, cuMemcpyHtoD_v2);
    BIND(fake, cuMemcpyDtoH_v2);
    BIND(fake, cuMemGetAllocationGranularity);
    BIND(fake, cuMemCreate);
    BIND(fake, cuMemRelease);
    BIND(fake, cuMemAddressReserve);
    BIND(fake, cuMemAddressFree);
    BIND(fake, cuMemMap);
    BIND(fake, cuMemUnmap);
    BIND(fake, cuMemSetAccess);
    BIND(fake, cuMemExportToShareableHandle);
    BIND(fake, cuMemImportFromShareableHandle);

    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    size_t granularity = 0;
    CUmemGenericAllocationHandle handle;
    cr_expect_eq(cuMemCreate(&handle, 2 * MiB, &prop, 0), CUDA_ERROR_NOT_INITIALIZED);
    cr_assert_eq(cuInit(0), CUDA_SUCCESS);
    CUcontext context;
    cr_assert_eq(cuDevicePrimaryCtxRetain(&context, 0), CUDA_SUCCESS);
    cr_assert_eq(cuCtxPushCurrent_v2(context), CUDA_SUCCESS);
    cr_assert_eq(cuMemGetAllocationGranularity(&granularity, &prop,
                                               CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
                 CUDA_SUCCESS);
    cr_expect_eq(granularity, 2 * MiB);
    cr_expect_eq(cuMemGetAllocationGranularity(&granularity, &prop, 7), CUDA_ERROR_INVALID_VALUE);

    /* Creation: properties, flags, granularity. */
    CUmemAllocationProp bad = prop;
    bad.location.id = 3;
    cr_expect_eq(cuMemCreate(&handle, 2 * MiB, &bad, 0), CUDA_ERROR_INVALID_DEVICE);
    bad = prop;
    bad.type = 2; /* managed */
    cr_expect_eq(cuMemCreate(&handle, 2 * MiB, &bad, 0), CUDA_ERROR_INVALID_VALUE);
    bad = prop;
    bad.requestedHandleTypes = CU_MEM_HANDLE_TYPE_FABRIC;
    cr_expect_eq(cuMemCreate(&handle, 2 * MiB, &bad, 0), CUDA_ERROR_NOT_SUPPORTED);
    cr_expect_eq(cuMemCreate(&handle, 2 * MiB, &prop, 1), CUDA_ERROR_INVALID_VALUE, "flags");
    cr_expect_eq(cuMemCreate(&handle, 2 * MiB + 4096, &prop, 0), CUDA_ERROR_INVALID_VALUE);
    cr_assert_eq(cuMemCreate(&handle, 2 * MiB, &prop, 0), CUDA_SUCCESS);

    /* Export: only POSIX descriptors, only of exportable allocations. */
    int fd = -1;
    cr_expect_eq(cuMemExportToShareableHandle(&fd, handle, CU_MEM_HANDLE_TYPE_FABRIC, 0),
                 CUDA_ERROR_NOT_SUPPORTED);
    CUmemGenericAllocationHandle private_handle;
    bad = prop;
    bad.requestedHandleTypes = CU_MEM_HANDLE_TYPE_NONE;
    cr_assert_eq(cuMemCreate(&private_handle, 2 * MiB, &bad, 0), CUDA_SUCCESS);
    cr_expect_eq(cuMemExportToShareableHandle(&fd, private_handle,
                                              CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
                 CUDA_ERROR_INVALID_VALUE, "not requested at creation");
    cr_assert_eq(cuMemRelease(private_handle), CUDA_SUCCESS);
    cr_assert_eq(cuMemExportToShareableHandle(&fd, handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                                              0),
                 CUDA_SUCCESS);
    cr_expect_geq(fd, 0);
    close(fd);
    /* Import: only the fake's memfds. */
    CUmemGenericAllocationHandle imported;
    int not_memory = open("/dev/null", O_RDONLY | O_CLOEXEC);
    cr_expect_eq(cuMemImportFromShareableHandle(&imported, (void *)(intptr_t)not_memory,
                                                CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
                 CUDA_ERROR_INVALID_VALUE);
    close(not_memory);

    /* Reservations and mappings: alignment, offset 0, whole allocation,
     * one mapping per range. */
    CUdeviceptr range;
    cr_expect_eq(cuMemAddressReserve(&range, 4 * MiB, 3, 0, 0), CUDA_ERROR_INVALID_VALUE,
                 "alignment not a power of two");
    cr_expect_eq(cuMemAddressReserve(&range, 4 * MiB, 0, 0, 1), CUDA_ERROR_INVALID_VALUE, "flags");
    cr_assert_eq(cuMemAddressReserve(&range, 4 * MiB, 0, 0, 0), CUDA_SUCCESS);
    cr_expect_eq(range % (2 * MiB), 0);
    cr_expect_eq(cuMemMap(range, 2 * MiB, 2 * MiB, handle, 0), CUDA_ERROR_INVALID_VALUE,
                 "offset must be 0");
    cr_expect_eq(cuMemMap(range + 4096, 2 * MiB, 0, handle, 0), CUDA_ERROR_INVALID_VALUE,
                 "address not aligned");
    cr_expect_eq(cuMemMap(range + 4 * MiB, 2 * MiB, 0, handle, 0), CUDA_ERROR_INVALID_VALUE,
                 "outside the reservation");
    cr_expect_eq(cuMemMap(range, 2 * MiB, 0, handle + 1000, 0), CUDA_ERROR_INVALID_VALUE,
                 "unknown handle");
    cr_expect_eq(cuMemMap(range, 2 * MiB, 0, handle, 1), CUDA_ERROR_INVALID_VALUE, "flags");
    cr_assert_eq(cuMemMap(range, 2 * MiB, 0, handle, 0), CUDA_SUCCESS);
    cr_expect_eq(cuMemMap(range, 2 * MiB, 0, handle, 0), CUDA_ERROR_INVALID_VALUE,
                 "already mapped");

    /* No access before cuMemSetAccess: copies fail, both ways. */
    uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8}, back[8];
    cr_expect_eq(cuMemcpyHtoD_v2(range, bytes, 8), CUDA_ERROR_INVALID_VALUE, "no access yet");
    cr_expect_eq(cuMemcpyDtoH_v2(back, range, 8), CUDA_ERROR_INVALID_VALUE, "no access yet");
    CUmemAccessDesc access = {{CU_MEM_LOCATION_TYPE_DEVICE, 0}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    cr_expect_eq(cuMemSetAccess(range, 4 * MiB, &access, 1), CUDA_ERROR_INVALID_VALUE,
                 "half of the range is not mapped");
    CUmemAccessDesc wrong = access;
    wrong.location.id = 5;
    cr_expect_eq(cuMemSetAccess(range, 2 * MiB, &wrong, 1), CUDA_ERROR_INVALID_DEVICE);
    wrong = access;
    wrong.flags = 2;
    cr_expect_eq(cuMemSetAccess(range, 2 * MiB, &wrong, 1), CUDA_ERROR_INVALID_VALUE);
    cr_assert_eq(cuMemSetAccess(range, 2 * MiB, &access, 1), CUDA_SUCCESS);
    cr_assert_eq(cuMemcpyHtoD_v2(range, bytes, 8), CUDA_SUCCESS);
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READ;
    cr_assert_eq(cuMemSetAccess(range, 2 * MiB, &access, 1), CUDA_SUCCESS);
    cr_expect_eq(cuMemcpyHtoD_v2(range, bytes, 8), CUDA_ERROR_ILLEGAL_ADDRESS, "write through READ");
    cr_assert_eq(cuMemcpyDtoH_v2(back, range, 8), CUDA_SUCCESS);
    cr_expect_arr_eq(back, bytes, 8);

    /* Teardown rules: whole mappings, no free of a mapped range. */
    cr_expect_eq(cuMemAddressFree(range, 4 * MiB), CUDA_ERROR_INVALID_VALUE, "still mapped");
    cr_expect_eq(cuMemUnmap(range, 4 * MiB), CUDA_ERROR_INVALID_VALUE, "not one mapping");
    cr_assert_eq(cuMemRelease(handle), CUDA_SUCCESS);
    cr_expect_eq(cuMemRelease(handle), CUDA_ERROR_INVALID_VALUE, "released twice");
    cr_expect_eq(cuMemMap(range + 2 * MiB, 2 * MiB, 0, handle, 0), CUDA_ERROR_INVALID_VALUE,
                 "a released handle cannot be mapped");
    cr_assert_eq(cuMemcpyDtoH_v2(back, range, 8), CUDA_SUCCESS, "the mapping keeps the memory");
    cr_assert_eq(cuMemUnmap(range, 2 * MiB), CUDA_SUCCESS);
    cr_expect_eq(cuMemcpyDtoH_v2(back, range, 8), CUDA_ERROR_INVALID_VALUE, "unmapped");
    cr_expect_eq(cuMemAddressFree(range, 2 * MiB), CUDA_ERROR_INVALID_VALUE, "not the reservation");
    cr_assert_eq(cuMemAddressFree(range, 4 * MiB), CUDA_SUCCESS);
    cr_expect_eq(fake_cuda_vmm_memfds(), 0);
    cr_expect_eq(fake_cuda_objects_of(getpid()), 0);
}

/* A socketpair for one peer: [0] stays here, [1] becomes its fd 3. Both
 * close-on-exec and above 3, so that no other peer inherits them and
 * dup2 onto 3 is a real copy. */
static void peer_socket(int sockets[2])
{
    int raw[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, raw), 0);
    for (int i = 0; i < 2; i++) {
        sockets[i] = fcntl(raw[i], F_DUPFD_CLOEXEC, 10);
        cr_assert_geq(sockets[i], 10);
        close(raw[i]);
    }
}

static pid_t spawn(peer_io *io, char **argv, int peer_end)
{
    argv[0] = getenv("RM_CUDA_PEER");
    cr_assert_not_null(argv[0], "RM_CUDA_PEER is not set");
    const int map[] = {peer_end, 3, -1};
    pid_t pid = peer_spawn(argv, NULL, -1, peer_end >= 0 ? map : NULL, io);
    cr_assert_gt(pid, 0);
    if (peer_end >= 0)
        close(peer_end);
    return pid;
}

static const char *expect_line(peer_io *io, const char *prefix)
{
    const char *line = peer_read_line(io, PEER_TIMEOUT_MS);
    cr_assert_not_null(line, "waiting for \"%s\": %s", prefix, io->why);
    cr_assert(peer_starts_with(line, prefix), "\"%s\" instead of \"%s\"", line, prefix);
    return line;
}

static void expect_exit(pid_t pid, peer_io *io, int code)
{
    peer_io_close(io);
    int status = peer_reap(pid, PEER_TIMEOUT_MS, NULL);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == code,
              "peer status %#x (exit %d, wanted %d)", status, WEXITSTATUS(status), code);
}

/* This process creates and fills; the peer receives the descriptor by
 * SCM_RIGHTS, imports, maps READ, reads, and cannot write. */
static void a_peer_reads_and_cannot_write(const char *library)
{
    rm_cuda_driver *driver = open_fake(library);
    const size_t size = 4 * MiB;
    CUmemGenericAllocationHandle handle;
    CUdeviceptr pointer;
    cr_assert_eq(rm_cuda_driver_vmm_create(driver, 0, size, &handle, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, handle, size, true, &pointer, OWNER), RM_OK);
    fill(driver, pointer, size, 17);
    int fd;
    cr_assert_eq(rm_cuda_driver_vmm_export_fd(driver, 0, handle, &fd, OWNER), RM_OK);
    int sockets[2];
    peer_socket(sockets);
    char *argv[] = {NULL, "vmm-import", (char *)library, "4194304", "17", "--write-fails", NULL};
    peer_io io;
    pid_t peer = spawn(&io, argv, sockets[1]);
    cr_assert_eq(fake_cuda_send_fd(sockets[0], fd), 0, "%s", strerror(errno));
    close(fd);
    close(sockets[0]);
    char expected[64];
    snprintf(expected, sizeof expected, "write-refused %d %d", RM_E_SYSTEM,
             CUDA_ERROR_ILLEGAL_ADDRESS);
    expect_line(&io, expected);
    expect_line(&io, "ready");
    expect_line(&io, "done");
    expect_exit(peer, &io, 0);
    /* Its attempts changed nothing here. */
    expect_pattern(driver, pointer, size, 17);
    cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, pointer, size, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, handle, OWNER), RM_OK);
    expect_nothing_left(library);
    rm_cuda_driver_release(driver);
}

Test(cuda_vmm, a_peer_imports_by_scm_rights_reads_and_cannot_write)
{
    a_peer_reads_and_cannot_write(fake_cuda_library());
}

Test(cuda_vmm, a_peer_imports_by_scm_rights_reads_and_cannot_write_without_cuGetProcAddress_v2)
{
    a_peer_reads_and_cannot_write(fake_cuda_library_noproc());
}

static size_t free_bytes_now(rm_cuda_driver *driver)
{
    size_t free_bytes, total;
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    return free_bytes;
}

/* The GPU-weights case: a creator exports, three readers import and map
 * READ, the creator is SIGKILLed; the readers still read, the memory
 * counts once on the device throughout, and is freed with the last
 * reader. */
Test(cuda_vmm, memory_outlives_its_killed_creator_counts_once_and_goes_with_the_last_holder)
{
    fake_cuda_use_private_device(); /* inherited by the peers */
    const size_t total = (size_t)1 << 30, size = 6 * MiB;
    setenv("FAKE_CUDA_MEMORY_BYTES", "1073741824", 1);
    const char *library = fake_cuda_library();
    rm_cuda_driver *driver = open_fake(library);
    cr_expect_eq(free_bytes_now(driver), total);

    int creator_socket[2];
    peer_socket(creator_socket);
    char *creator_argv[] = {NULL, "vmm-export", (char *)library, "6291456", "29", NULL};
    peer_io creator_io;
    pid_t creator = spawn(&creator_io, creator_argv, creator_socket[1]);
    expect_line(&creator_io, "exported");
    int fd = fake_cuda_recv_fd(creator_socket[0]);
    cr_assert_geq(fd, 0, "%s", strerror(errno));
    close(creator_socket[0]);
    cr_expect_eq(free_bytes_now(driver), total - size);

    enum { READERS = 3 };
    peer_io io[READERS];
    pid_t readers[READERS];
    for (int i = 0; i < READERS; i++) {
        int sockets[2];
        peer_socket(sockets);
        char *argv[] = {NULL, "vmm-import", (char *)library, "6291456", "29", "--hold", NULL};
        readers[i] = spawn(&io[i], argv, sockets[1]);
        cr_assert_eq(fake_cuda_send_fd(sockets[0], fd), 0, "%s", strerror(errno));
        close(sockets[0]);
        expect_line(&io[i], "ready");
    }
    close(fd); /* from here on only the processes' handles and mappings hold it */
    cr_expect_eq(free_bytes_now(driver), total - size, "four holders, one allocation");

    kill(creator, SIGKILL);
    int status = peer_reap(creator, PEER_TIMEOUT_MS, NULL);
    peer_io_close(&creator_io);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);
    for (int i = 0; i < READERS; i++) {
        cr_assert_eq(peer_send_line(&io[i], "check"), 0, "%s", io[i].why);
        expect_line(&io[i], "read-ok");
    }
    cr_expect_eq(free_bytes_now(driver), total - size, "the readers hold it after the creator died");

    for (int i = 0; i < READERS; i++) {
        cr_assert_eq(peer_send_line(&io[i], "exit"), 0, "%s", io[i].why);
        expect_line(&io[i], "done");
        expect_exit(readers[i], &io[i], 0);
        cr_expect_eq(free_bytes_now(driver), i + 1 < READERS ? total - size : total,
                     "after %d of %d readers left", i + 1, READERS);
    }
    fake_cuda_reap_dead();
    cr_expect_eq(fake_cuda_objects_of(creator), 0);
    rm_cuda_driver_release(driver);
}

/* A reader killed instead of leaving: the kernel drops its hold. */
Test(cuda_vmm, a_killed_last_holder_frees_the_memory)
{
    fake_cuda_use_private_device();
    const size_t total = (size_t)1 << 30, size = 2 * MiB;
    setenv("FAKE_CUDA_MEMORY_BYTES", "1073741824", 1);
    const char *library = fake_cuda_library();
    rm_cuda_driver *driver = open_fake(library);
    CUmemGenericAllocationHandle handle;
    CUdeviceptr pointer;
    cr_assert_eq(rm_cuda_driver_vmm_create(driver, 0, size, &handle, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, handle, size, true, &pointer, OWNER), RM_OK);
    fill(driver, pointer, size, 3);
    int fd;
    cr_assert_eq(rm_cuda_driver_vmm_export_fd(driver, 0, handle, &fd, OWNER), RM_OK);
    int sockets[2];
    peer_socket(sockets);
    char *argv[] = {NULL, "vmm-import", (char *)library, "2097152", "3", "--hold", NULL};
    peer_io io;
    pid_t reader = spawn(&io, argv, sockets[1]);
    cr_assert_eq(fake_cuda_send_fd(sockets[0], fd), 0);
    close(fd);
    close(sockets[0]);
    expect_line(&io, "ready");
    cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, pointer, size, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, handle, OWNER), RM_OK);
    expect_nothing_left(library);
    cr_expect_eq(free_bytes_now(driver), total - size, "the reader holds it");
    kill(reader, SIGKILL);
    int status = peer_reap(reader, PEER_TIMEOUT_MS, NULL);
    peer_io_close(&io);
    cr_assert(WIFSIGNALED(status), "status %#x", status);
    cr_expect_eq(free_bytes_now(driver), total, "a killed process holds nothing");
    rm_cuda_driver_release(driver);
}

/* FAKE_CUDA_NO_VMM: the proc-address variant does not find the entry
 * points, the dlsym variant binds them but the device says no. Either
 * way the driver opens, legacy IPC works across processes, and each VMM
 * wrapper fails with RM_E_FEATURE_UNAVAILABLE and says why. */
static void without_vmm(const char *library, const char *why)
{
    setenv("FAKE_CUDA_NO_VMM", "1", 1);
    rm_cuda_driver *driver = open_fake(library);
    cr_expect_not(rm_cuda_driver_has_vmm(driver, 0));
    size_t granularity;
    CUmemGenericAllocationHandle handle = 1;
    CUdeviceptr pointer = 0;
    int fd = -1;
    struct {
        int32_t rc;
        const char *call;
    } calls[] = {
        {rm_cuda_driver_vmm_granularity(driver, 0, &granularity, OWNER),
         "cuMemGetAllocationGranularity"},
        {rm_cuda_driver_vmm_create(driver, 0, 2 * MiB, &handle, OWNER), "cuMemCreate"},
        {rm_cuda_driver_vmm_release(driver, 0, handle, OWNER), "cuMemRelease"},
        {rm_cuda_driver_vmm_export_fd(driver, 0, handle, &fd, OWNER),
         "cuMemExportToShareableHandle"},
        {rm_cuda_driver_vmm_import_fd(driver, 0, 0, &handle, OWNER),
         "cuMemImportFromShareableHandle"},
        {rm_cuda_driver_vmm_retain(driver, 0, 4096, &handle, OWNER),
         "cuMemRetainAllocationHandle"},
        {rm_cuda_driver_vmm_map(driver, 0, handle, 2 * MiB, false, &pointer, OWNER), "cuMemMap"},
        {rm_cuda_driver_vmm_set_access(driver, 0, 4096, 2 * MiB, false, OWNER), "cuMemSetAccess"},
        {rm_cuda_driver_vmm_unmap(driver, 0, 4096, 2 * MiB, OWNER), "cuMemUnmap"},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
        cr_expect_eq(calls[i].rc, RM_E_FEATURE_UNAVAILABLE, "%s: %d", calls[i].call, calls[i].rc);
    /* The last message, for one of them. */
    const char *message = rm_error_last(OWNER);
    cr_expect_not_null(strstr(message, "cuMemUnmap: "), "%s", message);
    cr_expect_not_null(strstr(message, why), "\"%s\" not in: %s", why, message);
    cr_expect_not_null(strstr(message, "legacy IPC still works"), "%s", message);
    cr_expect_eq(fd, -1);
    cr_expect_eq(pointer, 0);
    cr_expect_eq(fake_cuda_counter(library, "cuMemCreate"), 0, "no VMM call was made");

    /* Legacy IPC: a peer opens this process's block and reads it. */
    CUdeviceptr block;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 8192, &block, OWNER), RM_OK);
    fill(driver, block, 8192, 9);
    CUipcMemHandle ipc;
    cr_assert_eq(rm_cuda_driver_ipc_get_mem_handle(driver, 0, block, &ipc, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    char hex[129];
    fake_cuda_hex(ipc.reserved, hex);
    char *argv[] = {NULL, "import", (char *)library, hex, "8192", "9", NULL};
    peer_io io;
    pid_t peer = spawn(&io, argv, -1);
    expect_exit(peer, &io, 0);
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, block, OWNER), RM_OK);
    cr_expect_eq(fake_cuda_counter(library, "@legacy"), 0);
    rm_cuda_driver_release(driver);
}

Test(cuda_vmm, without_vmm_the_driver_opens_legacy_ipc_works_and_vmm_says_why)
{
    without_vmm(fake_cuda_library(), "has no cuMemGetAllocationGranularity (looked up with "
                                     "cuGetProcAddress_v2)");
}

Test(cuda_vmm, without_vmm_by_device_attribute_on_the_dlsym_path)
{
    without_vmm(fake_cuda_library_noproc(),
                "CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED is 0");
}

Test(cuda_vmm, one_hidden_vmm_entry_point_leaves_vmm_unavailable_and_the_rest_working)
{
    setenv("FAKE_CUDA_HIDE", "cuMemRetainAllocationHandle", 1);
    rm_cuda_driver *driver = open_fake(fake_cuda_library());
    cr_expect_not(rm_cuda_driver_has_vmm(driver, 0));
    CUmemGenericAllocationHandle handle;
    expect_failure(rm_cuda_driver_vmm_create(driver, 0, 2 * MiB, &handle, OWNER),
                   RM_E_FEATURE_UNAVAILABLE, CUDA_SUCCESS, "has no cuMemRetainAllocationHandle");
    CUdeviceptr block;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 4096, &block, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, block, OWNER), RM_OK);
    rm_cuda_driver_release(driver);
}

Test(cuda_vmm, injected_failures_become_codes_and_map_undoes_its_steps)
{
    const char *library = fake_cuda_library();
    setenv("FAKE_CUDA_FAIL",
           "cuDeviceGetAttribute:1,cuMemCreate:1,cuMemMap:1:2,cuMemSetAccess:1,"
           "cuMemExportToShareableHandle:1:1,cuMemImportFromShareableHandle:1:2",
           1);
    rm_cuda_driver *driver = open_fake(library);
    /* The device's answer cannot be read once: not remembered, asked again. */
    size_t granularity;
    expect_failure(rm_cuda_driver_vmm_granularity(driver, 0, &granularity, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_UNKNOWN, "cuDeviceGetAttribute failed: CUDA_ERROR_UNKNOWN (999)");
    cr_assert_eq(rm_cuda_driver_vmm_granularity(driver, 0, &granularity, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    CUmemGenericAllocationHandle handle;
    expect_failure(rm_cuda_driver_vmm_create(driver, 0, 2 * MiB, &handle, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_UNKNOWN, "cuMemCreate failed: CUDA_ERROR_UNKNOWN (999)");
    cr_assert_eq(rm_cuda_driver_vmm_create(driver, 0, 2 * MiB, &handle, OWNER), RM_OK);
    CUdeviceptr pointer = 0;
    expect_failure(rm_cuda_driver_vmm_map(driver, 0, handle, 2 * MiB, true, &pointer, OWNER),
                   RM_E_NO_MEMORY, CUDA_ERROR_OUT_OF_MEMORY, "cuMemMap failed");
    cr_expect_eq(fake_cuda_counter(library, "@vmm_reserved"), 0, "the reservation was not freed");
    expect_failure(rm_cuda_driver_vmm_map(driver, 0, handle, 2 * MiB, true, &pointer, OWNER),
                   RM_E_SYSTEM, CUDA_ERROR_UNKNOWN, "cuMemSetAccess failed");
    cr_expect_eq(fake_cuda_counter(library, "@vmm_mapped"), 0, "the mapping was not undone");
    cr_expect_eq(fake_cuda_counter(library, "@vmm_reserved"), 0, "the reservation was not freed");
    cr_expect_eq(pointer, 0);
    cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, handle, 2 * MiB, true, &pointer, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    int fd = -1;
    expect_failure(rm_cuda_driver_vmm_export_fd(driver, 0, handle, &fd, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE,
                   "cuMemExportToShareableHandle failed");
    cr_expect_eq(fd, -1);
    cr_assert_eq(rm_cuda_driver_vmm_export_fd(driver, 0, handle, &fd, OWNER), RM_OK);
    CUmemGenericAllocationHandle imported;
    expect_failure(rm_cuda_driver_vmm_import_fd(driver, 0, fd, &imported, OWNER), RM_E_NO_MEMORY,
                   CUDA_ERROR_OUT_OF_MEMORY, "cuMemImportFromShareableHandle failed");
    close(fd);
    cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, pointer, 2 * MiB, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, handle, OWNER), RM_OK);
    expect_nothing_left(library);
    rm_cuda_driver_release(driver);
}

/* 200 rounds of the whole life, the descriptor passed through a
 * socketpair (to this process: the same kernel path as to a peer). */
Test(cuda_vmm, two_hundred_cycles_leave_no_descriptor_memfd_or_object)
{
    fake_cuda_use_private_device();
    setenv("FAKE_CUDA_MEMORY_BYTES", "1073741824", 1);
    const char *library = fake_cuda_library();
    rm_cuda_driver *driver = open_fake(library);
    int sockets[2];
    peer_socket(sockets);
    size_t free_before = free_bytes_now(driver);
    long fds = fake_cuda_open_fds();
    for (int i = 0; i < 200; i++) {
        CUmemGenericAllocationHandle created, imported;
        cr_assert_eq(rm_cuda_driver_vmm_create(driver, 0, 2 * MiB, &created, OWNER), RM_OK,
                     "cycle %d: %s", i, rm_error_last(OWNER));
        int fd;
        cr_assert_eq(rm_cuda_driver_vmm_export_fd(driver, 0, created, &fd, OWNER), RM_OK);
        cr_assert_eq(fake_cuda_send_fd(sockets[0], fd), 0);
        close(fd);
        int received = fake_cuda_recv_fd(sockets[1]);
        cr_assert_geq(received, 0);
        cr_assert_eq(rm_cuda_driver_vmm_import_fd(driver, 0, received, &imported, OWNER), RM_OK);
        close(received);
        CUdeviceptr writer, reader;
        cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, created, 2 * MiB, true, &writer, OWNER),
                     RM_OK);
        cr_assert_eq(rm_cuda_driver_vmm_map(driver, 0, imported, 2 * MiB, false, &reader, OWNER),
                     RM_OK);
        uint8_t byte = (uint8_t)i, back = 0;
        cr_assert_eq(rm_cuda_driver_memcpy_htod(driver, 0, writer + 4097, &byte, 1, OWNER), RM_OK);
        cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, &back, reader + 4097, 1, OWNER), RM_OK);
        cr_assert_eq(back, byte, "cycle %d", i);
        cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, writer, 2 * MiB, OWNER), RM_OK);
        cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, created, OWNER), RM_OK);
        cr_assert_eq(rm_cuda_driver_vmm_release(driver, 0, imported, OWNER), RM_OK);
        cr_assert_eq(rm_cuda_driver_vmm_unmap(driver, 0, reader, 2 * MiB, OWNER), RM_OK);
    }
    cr_expect_eq(fake_cuda_open_fds(), fds, "descriptors leaked");
    cr_expect_eq(free_bytes_now(driver), free_before, "device memory leaked");
    expect_nothing_left(library);
    close(sockets[0]);
    close(sockets[1]);
    rm_cuda_driver_release(driver);
}
