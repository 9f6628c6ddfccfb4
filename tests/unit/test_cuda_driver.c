/* The CUDA driver loader (plugin/cuda/cuda_driver.h) against the fake
 * driver (tests/fake_cuda): binding every entry point with and without
 * cuGetProcAddress_v2 and never a plain legacy symbol; each reason CUDA
 * can be unavailable, with its message; a failed open retried; one
 * object per library; the fork guard (an error and no CUDA call in the
 * child); UUIDs to local ordinals, in two processes that list the
 * devices in different orders; CUDA errors turned into codes and
 * messages.
 *
 * Criterion runs each test in its own process, so each sets the fake's
 * knobs (FAKE_CUDA_*) for itself before the first open. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cuda_driver.h"
#include "error.h"
#include "fake_cuda.h"
#include "peer_process.h"

static const int owner_token;
#define OWNER ((const void *)&owner_token)

#define UUID_A "GPU-11111111-2222-3333-4444-555555555555"
#define UUID_B "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

static void reap_leftovers(void)
{
    fake_cuda_reap_dead();
}

TestSuite(cuda_driver, .fini = reap_leftovers, .timeout = 60);

static rm_cuda_driver *open_fake(const char *library)
{
    cr_assert_not_null(library, "FAKE_CUDA_LIBRARY(_NOPROC) is not set (run through meson)");
    rm_cuda_driver *driver = NULL;
    int32_t rc = rm_cuda_driver_open(library, OWNER, &driver);
    cr_assert_eq(rc, RM_OK, "open %s: %d %s", library, rc, rm_error_last(OWNER));
    cr_assert_not_null(driver);
    return driver;
}

/* Opening must fail with FEATURE_UNAVAILABLE and a message holding every
 * one of the NULL-terminated parts. */
static void expect_unavailable(const char *library, const char *part, ...)
{
    rm_cuda_driver *driver = (rm_cuda_driver *)1;
    int32_t rc = rm_cuda_driver_open(library, OWNER, &driver);
    const char *message = rm_error_last(OWNER);
    cr_assert_eq(rc, RM_E_FEATURE_UNAVAILABLE, "rc %d: %s", rc, message);
    cr_assert_null(driver);
    va_list parts;
    va_start(parts, part);
    for (const char *p = part; p != NULL; p = va_arg(parts, const char *))
        cr_expect_not_null(strstr(message, p), "\"%s\" not in: %s", p, message);
    va_end(parts);
}

/* A small round trip through the bound pointers: allocate, copy in and
 * out, free. */
static void round_trip(rm_cuda_driver *driver)
{
    CUdeviceptr pointer;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 4096, &pointer, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    char out[32] = "through the fake device", in[32] = {0};
    cr_assert_eq(rm_cuda_driver_memcpy_htod(driver, 0, pointer, out, sizeof out, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, in, pointer, sizeof in, OWNER), RM_OK);
    cr_assert_str_eq(in, out);
    CUdeviceptr base;
    size_t size;
    cr_assert_eq(rm_cuda_driver_mem_address_range(driver, 0, pointer + 100, &base, &size, OWNER),
                 RM_OK);
    cr_expect_eq(base, pointer);
    cr_expect_eq(size, 4096);
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, pointer, OWNER), RM_OK);
}

static long elapsed_ms(const struct timespec *start)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    return (end.tv_sec - start->tv_sec) * 1000 + (end.tv_nsec - start->tv_nsec) / 1000000;
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

static void expect_bytes(rm_cuda_driver *driver, CUdeviceptr pointer, size_t size,
                         unsigned char value)
{
    unsigned char *copy = malloc(size);
    cr_assert_not_null(copy);
    cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, copy, pointer, size, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    for (size_t i = 0; i < size; i++)
        cr_assert_eq(copy[i], value, "byte %zu of %#llx is %#x, not %#x", i, pointer, copy[i],
                     value);
    free(copy);
}

/* Every entry point bound after the first 29, through the wrappers, with
 * their error paths. The caller made device 0 private
 * (fake_cuda_use_private_device) and set FAKE_CUDA_MEMORY_BYTES to 1 GiB. */
static void new_entry_points(rm_cuda_driver *driver, const char *library)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t free_before, total;
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_before, &total, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_expect_eq(total, (size_t)1 << 30, "FAKE_CUDA_MEMORY_BYTES");
    cr_expect_eq(free_before, total, "nothing is allocated on this device yet");

    CUdeviceptr a, b;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 2 * page, &a, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 2 * page, &b, OWNER), RM_OK);
    size_t free_now;
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_now, &total, OWNER), RM_OK);
    cr_expect_eq(free_now, free_before - 4 * page);

    /* memset and device-to-device copies, synchronous and on streams. */
    cr_assert_eq(rm_cuda_driver_memset_d8(driver, 0, a, 0x5a, 2 * page, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    expect_bytes(driver, a, 2 * page, 0x5a);
    cr_assert_eq(rm_cuda_driver_memcpy_dtod(driver, 0, b, a, 2 * page, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    expect_bytes(driver, b, 2 * page, 0x5a);
    CUstream first = NULL, second = NULL;
    cr_assert_eq(rm_cuda_driver_stream_create(driver, 0, CU_STREAM_DEFAULT, &first, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_assert_eq(rm_cuda_driver_stream_create(driver, 0, CU_STREAM_NON_BLOCKING, &second, OWNER),
                 RM_OK);
    cr_expect_not_null(first);
    cr_expect_not_null(second);
    cr_expect_neq(first, second);
    cr_expect_eq(fake_cuda_counter(library, "@streams_live"), 2);
    cr_assert_eq(rm_cuda_driver_memset_d8(driver, 0, a, 0x11, page, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_memcpy_dtod_async(driver, 0, b, a, page, first, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_assert_eq(rm_cuda_driver_stream_synchronize(driver, 0, first, OWNER), RM_OK);
    expect_bytes(driver, b, page, 0x11);
    expect_bytes(driver, b + page, page, 0x5a);
    CUstream defaults[] = {NULL, RM_CU_STREAM_LEGACY, RM_CU_STREAM_PER_THREAD, second};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        cr_expect_eq(rm_cuda_driver_memcpy_dtod_async(driver, 0, b + 1, a, 16, defaults[i], OWNER),
                     RM_OK, "stream %zu: %s", i, rm_error_last(OWNER));

    /* Out of range: past the end, and not device memory at all. */
    expect_failure(rm_cuda_driver_memset_d8(driver, 0, a + page, 0, page + 1, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE,
                   "cuMemsetD8_v2 failed: CUDA_ERROR_INVALID_VALUE (1)");
    char host[16];
    expect_failure(rm_cuda_driver_memcpy_dtod(driver, 0, b, (CUdeviceptr)(uintptr_t)host, 16,
                                              OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE,
                   "cuMemcpyDtoD_v2 failed: CUDA_ERROR_INVALID_VALUE");
    expect_failure(rm_cuda_driver_memcpy_dtod_async(driver, 0, b + page, a, page + 1, first,
                                                    OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemcpyDtoDAsync_v2 failed");

    /* Events: never recorded is done; a record is not done until the
     * fake's delay passed; cuCtxSynchronize waits for it. */
    CUevent event;
    cr_assert_eq(rm_cuda_driver_event_create(driver, 0, CU_EVENT_DISABLE_TIMING, &event, OWNER),
                 RM_OK);
    cr_expect_eq(rm_cuda_driver_event_query(driver, 0, event, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    setenv("FAKE_CUDA_EVENT_DELAY_MS", "150", 1);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    cr_assert_eq(rm_cuda_driver_event_record(driver, 0, event, first, OWNER), RM_OK);
    unsetenv("FAKE_CUDA_EVENT_DELAY_MS");
    int32_t rc = rm_cuda_driver_event_query(driver, 0, event, OWNER);
    if (elapsed_ms(&start) < 140) {
        cr_expect_eq(rc, RM_E_BUSY, "a query before the delay: %d %s", rc, rm_error_last(OWNER));
        cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_NOT_READY);
        cr_expect_neq(rm_error_last(OWNER)[0], '\0');
    }
    cr_assert_eq(rm_cuda_driver_ctx_synchronize(driver, 0, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_expect_geq(elapsed_ms(&start), 145, "cuCtxSynchronize returned before the record's delay");
    cr_expect_eq(rm_cuda_driver_event_query(driver, 0, event, OWNER), RM_OK, "after the delay: %s",
                 rm_error_last(OWNER));
    cr_expect_eq(fake_cuda_counter(library, "cuEventQuery"), 3);
    /* The CUDA 2.0 cuCtxSynchronize, never 13.0's cuCtxSynchronize_v2(CUcontext). */
    cr_expect_eq(fake_cuda_counter(library, "cuCtxSynchronize"), 1);
    cr_expect_eq(fake_cuda_counter(library, "cuCtxSynchronize_v2"), 0);

    /* A destroyed stream is refused by every call that takes one. */
    cr_assert_eq(rm_cuda_driver_stream_destroy(driver, 0, first, OWNER), RM_OK);
    cr_expect_eq(fake_cuda_counter(library, "@streams_live"), 1);
    expect_failure(rm_cuda_driver_memcpy_dtod_async(driver, 0, b, a, 16, first, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_HANDLE,
                   "cuMemcpyDtoDAsync_v2 failed: CUDA_ERROR_INVALID_HANDLE (400)");
    expect_failure(rm_cuda_driver_event_record(driver, 0, event, first, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_HANDLE, "cuEventRecord failed");
    expect_failure(rm_cuda_driver_stream_wait_event(driver, 0, first, event, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_HANDLE, "cuStreamWaitEvent failed");
    expect_failure(rm_cuda_driver_stream_synchronize(driver, 0, first, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_HANDLE, "cuStreamSynchronize failed");
    expect_failure(rm_cuda_driver_stream_destroy(driver, 0, first, OWNER), RM_E_INVALID_ARGUMENT,
                   CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy_v2 failed");
    expect_failure(rm_cuda_driver_stream_destroy(driver, 0, NULL, OWNER), RM_E_INVALID_ARGUMENT,
                   CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy_v2 failed");
    expect_failure(rm_cuda_driver_stream_create(driver, 0, 4, &first, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuStreamCreate failed");
    cr_assert_eq(rm_cuda_driver_stream_destroy(driver, 0, second, OWNER), RM_OK);
    cr_expect_eq(fake_cuda_counter(library, "@streams_live"), 0);

    int ordinal = -1;
    cr_expect_eq(rm_cuda_driver_pointer_ordinal(driver, b + page + 5, &ordinal, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_expect_eq(ordinal, 0);

    cr_assert_eq(rm_cuda_driver_event_destroy(driver, 0, event, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, a, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_now, &total, OWNER), RM_OK);
    cr_expect_eq(free_now, free_before - 2 * page, "a free gives its bytes back");
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, b, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_now, &total, OWNER), RM_OK);
    cr_expect_eq(free_now, free_before);
    cr_expect_eq(rm_cuda_driver_mem_get_info(driver, 0, NULL, &total, OWNER),
                 RM_E_INVALID_ARGUMENT);
    cr_expect_eq(rm_cuda_driver_pointer_ordinal(driver, a, NULL, OWNER), RM_E_INVALID_ARGUMENT);
}

Test(cuda_driver, binds_every_entry_point_through_cuGetProcAddress_v2)
{
    const char *library = fake_cuda_library();
    fake_cuda_use_private_device();
    setenv("FAKE_CUDA_MEMORY_BYTES", "1073741824", 1);
    rm_cuda_driver *driver = open_fake(library);
    cr_expect(rm_cuda_driver_uses_proc_address(driver));
    cr_expect_eq(fake_cuda_counter(library, "cuGetProcAddress_v2"),
                 RM_CUDA_DRIVER_ENTRY_POINTS + RM_CUDA_DRIVER_VMM_ENTRY_POINTS);
    cr_expect(rm_cuda_driver_has_vmm(driver, 0), "%s", rm_error_last(NULL));
    cr_expect_eq(rm_cuda_driver_version(driver), 13000);
    cr_expect_eq(rm_cuda_driver_device_count(driver), 1);
    cr_expect_str_eq(rm_cuda_driver_library(driver), library);
    round_trip(driver);
    new_entry_points(driver, library);
    cr_expect_eq(fake_cuda_counter(library, "@legacy"), 0, "a plain legacy symbol was called");
    char line[512];
    size_t needed = rm_cuda_driver_describe(driver, line, sizeof line);
    cr_expect_eq(needed, strlen(line) + 1);
    cr_expect_not_null(strstr(line, "CUDA driver 13.0"), "%s", line);
    cr_expect_not_null(strstr(line, "cuGetProcAddress_v2"), "%s", line);
    cr_expect_not_null(strstr(line, "1 device: 0 GPU-"), "%s", line);
    /* A short buffer is cut, NUL-terminated, and told the length needed. */
    char short_line[10];
    cr_expect_eq(rm_cuda_driver_describe(driver, short_line, sizeof short_line), needed);
    cr_expect_eq(strlen(short_line), sizeof short_line - 1);
    rm_cuda_driver_release(driver);
}

Test(cuda_driver, binds_every_entry_point_by_versioned_dlsym_without_cuGetProcAddress_v2)
{
    const char *library = fake_cuda_library_noproc();
    fake_cuda_use_private_device();
    setenv("FAKE_CUDA_MEMORY_BYTES", "1073741824", 1);
    rm_cuda_driver *driver = open_fake(library);
    cr_expect_not(rm_cuda_driver_uses_proc_address(driver));
    cr_expect_eq(fake_cuda_counter(library, "cuGetProcAddress_v2"), 0);
    round_trip(driver);
    new_entry_points(driver, library);
    cr_expect_eq(fake_cuda_counter(library, "@legacy"), 0, "a plain legacy symbol was called");
    char line[512];
    rm_cuda_driver_describe(driver, line, sizeof line);
    cr_expect_not_null(strstr(line, "(" ), "%s", line);
    cr_expect_not_null(strstr(line, ", dlsym)"), "%s", line);
    rm_cuda_driver_release(driver);
}

Test(cuda_driver, no_library_is_unavailable_with_not_found)
{
    expect_unavailable("/nonexistent/rm-cuda-test/libcuda.so.1", "CUDA driver not found",
                       "/nonexistent/rm-cuda-test/libcuda.so.1", "install the NVIDIA driver",
                       NULL);
}

Test(cuda_driver, a_library_without_cuInit_is_not_a_driver)
{
    expect_unavailable("libm.so.6", "libm.so.6 is not a CUDA driver", "cuInit", NULL);
}

Test(cuda_driver, the_stub_library_is_named_as_such)
{
    setenv("FAKE_CUDA_STUB", "1", 1);
    expect_unavailable(fake_cuda_library(), "NVIDIA's stub library", "CUDA_ERROR_STUB_LIBRARY",
                       "LD_LIBRARY_PATH", NULL);
}

/* NVIDIA's own stub, where the toolkit is installed. */
Test(cuda_driver, the_real_stub_library_is_named_as_such)
{
    static const char *const stubs[] = {"/usr/local/cuda/lib64/stubs/libcuda.so",
                                        "/usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so"};
    for (size_t i = 0; i < sizeof stubs / sizeof stubs[0]; i++) {
        if (access(stubs[i], R_OK) == 0) {
            expect_unavailable(stubs[i], "NVIDIA's stub library", "CUDA_ERROR_STUB_LIBRARY",
                               NULL);
            return;
        }
    }
    cr_skip_test("no CUDA toolkit stub library on this machine");
}

Test(cuda_driver, no_device_is_unavailable_with_its_own_message)
{
    setenv("FAKE_CUDA_DEVICES", "0", 1);
    expect_unavailable(fake_cuda_library(), "sees no GPU", "CUDA_ERROR_NO_DEVICE",
                       "CUDA_VISIBLE_DEVICES", NULL);
}

Test(cuda_driver, a_driver_older_than_the_minimum_is_refused)
{
    setenv("FAKE_CUDA_DRIVER_VERSION", "11020", 1);
    expect_unavailable(fake_cuda_library(), "version 11.2", "older than the 11.4",
                       "update the NVIDIA driver", NULL);
}

Test(cuda_driver, the_minimum_driver_version_is_accepted)
{
    setenv("FAKE_CUDA_DRIVER_VERSION", "11040", 1);
    rm_cuda_driver *driver = open_fake(fake_cuda_library());
    cr_expect_eq(rm_cuda_driver_version(driver), 11040);
    round_trip(driver);
    rm_cuda_driver_release(driver);
}

Test(cuda_driver, a_missing_entry_point_is_named)
{
    setenv("FAKE_CUDA_HIDE", "cuIpcOpenMemHandle", 1);
    expect_unavailable(fake_cuda_library(), "has no cuIpcOpenMemHandle_v2",
                       "update the NVIDIA driver", NULL);
}

Test(cuda_driver, a_failed_cuInit_is_reported_and_a_later_open_retries)
{
    const char *library = fake_cuda_library();
    setenv("FAKE_CUDA_FAIL", "cuInit:1", 1);
    expect_unavailable(library, "cuInit(0)", "failed", "CUDA_ERROR_UNKNOWN (999)", NULL);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_UNKNOWN);
    /* Nothing was kept: once the fault is gone, the next open works. */
    unsetenv("FAKE_CUDA_FAIL");
    rm_cuda_driver *driver = open_fake(library);
    cr_expect_eq(fake_cuda_counter(library, "cuInit"), 2);
    round_trip(driver);
    rm_cuda_driver_release(driver);
}

Test(cuda_driver, invalid_arguments)
{
    rm_cuda_driver *driver;
    cr_expect_eq(rm_cuda_driver_open(fake_cuda_library(), OWNER, NULL), RM_E_INVALID_ARGUMENT);
    cr_expect_eq(rm_cuda_driver_open("", OWNER, &driver), RM_E_INVALID_ARGUMENT);
    char long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    cr_expect_eq(rm_cuda_driver_open(long_name, OWNER, &driver), RM_E_INVALID_ARGUMENT);
    rm_cuda_driver_release(NULL);
}

Test(cuda_driver, one_object_per_library_and_primary_contexts_released_with_the_last_reference)
{
    const char *library = fake_cuda_library();
    rm_cuda_driver *first = open_fake(library);
    rm_cuda_driver *second = open_fake(library);
    cr_expect_eq(first, second);
    cr_expect_eq(fake_cuda_counter(library, "cuInit"), 1);
    /* No context until a call needs one. */
    cr_expect_eq(fake_cuda_counter(library, "cuDevicePrimaryCtxRetain"), 0);
    round_trip(first);
    round_trip(second);
    cr_expect_eq(fake_cuda_counter(library, "cuDevicePrimaryCtxRetain"), 1);
    /* Every call pushed and popped the context around itself. */
    cr_expect_eq(fake_cuda_counter(library, "cuCtxPushCurrent_v2"),
                 fake_cuda_counter(library, "cuCtxPopCurrent_v2"));
    rm_cuda_driver_release(first);
    cr_expect_eq(fake_cuda_counter(library, "cuDevicePrimaryCtxRelease_v2"), 0);
    rm_cuda_driver_release(second);
    cr_expect_eq(fake_cuda_counter(library, "cuDevicePrimaryCtxRelease_v2"), 1);
    /* A re-open reuses the object: no second cuInit, a fresh context. */
    rm_cuda_driver *third = open_fake(library);
    cr_expect_eq(third, first);
    cr_expect_eq(fake_cuda_counter(library, "cuInit"), 1);
    round_trip(third);
    cr_expect_eq(fake_cuda_counter(library, "cuDevicePrimaryCtxRetain"), 2);
    rm_cuda_driver_release(third);
}

Test(cuda_driver, a_forked_child_gets_an_error_and_makes_no_cuda_call)
{
    const char *library = fake_cuda_library();
    rm_cuda_driver *driver = open_fake(library);
    CUdeviceptr pointer;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 4096, &pointer, OWNER), RM_OK);
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        long long before = fake_cuda_counter(library, "*");
        int failures = 0;
        CUdeviceptr other;
        failures += rm_cuda_driver_mem_alloc(driver, 0, 4096, &other, OWNER) != RM_E_FORKED;
        failures += strstr(rm_error_last(OWNER), "fork") == NULL;
        uint8_t byte;
        failures += rm_cuda_driver_memcpy_dtoh(driver, 0, &byte, pointer, 1, OWNER) != RM_E_FORKED;
        rm_cuda_driver *again = NULL;
        failures += rm_cuda_driver_open(library, OWNER, &again) != RM_E_FORKED;
        failures += again != NULL;
        rm_cuda_driver_release(driver); /* no CUDA call either */
        failures += fake_cuda_counter(library, "*") != before;
        failures += fake_cuda_counter(library, "@after_fork") != 0;
        _exit(failures);
    }
    int status;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child saw %d failed checks (status %#x)", WEXITSTATUS(status), status);
    /* The parent's driver and memory are untouched. */
    cr_expect_eq(rm_cuda_driver_mem_free(driver, 0, pointer, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    rm_cuda_driver_release(driver);
}

Test(cuda_driver, uuids_map_to_local_ordinals_in_each_process)
{
    const char *library = fake_cuda_library();
    setenv("FAKE_CUDA_UUIDS", UUID_A "," UUID_B, 1);
    rm_cuda_driver *driver = open_fake(library);
    cr_assert_eq(rm_cuda_driver_device_count(driver), 2);
    uint8_t a[16], b[16], got[16];
    cr_assert_eq(fake_cuda_parse_uuid(UUID_A, a), 0);
    cr_assert_eq(fake_cuda_parse_uuid(UUID_B, b), 0);
    cr_assert_eq(rm_cuda_driver_device_uuid(driver, 1, got, OWNER), RM_OK);
    cr_expect_arr_eq(got, b, 16);
    char text[41];
    rm_cuda_uuid_format(got, text);
    cr_expect_str_eq(text, UUID_B);
    int ordinal = -1;
    cr_assert_eq(rm_cuda_driver_ordinal_of_uuid(driver, b, &ordinal, OWNER), RM_OK);
    cr_expect_eq(ordinal, 1);
    cr_assert_eq(rm_cuda_driver_ordinal_of_uuid(driver, a, &ordinal, OWNER), RM_OK);
    cr_expect_eq(ordinal, 0);
    uint8_t unknown[16] = {1};
    cr_expect_eq(rm_cuda_driver_ordinal_of_uuid(driver, unknown, &ordinal, OWNER),
                 RM_E_NOT_FOUND);
    cr_expect_not_null(strstr(rm_error_last(OWNER), "CUDA_VISIBLE_DEVICES"));
    cr_expect_eq(rm_cuda_driver_device_uuid(driver, 2, got, OWNER), RM_E_INVALID_ARGUMENT);
    char line[512];
    rm_cuda_driver_describe(driver, line, sizeof line);
    cr_expect_not_null(strstr(line, "2 devices: 0 " UUID_A " 1 " UUID_B), "%s", line);

    /* Another process that sees the devices the other way round. */
    setenv("FAKE_CUDA_UUIDS", UUID_B "," UUID_A, 1);
    char *argv[] = {getenv("RM_CUDA_PEER"), "ordinal", (char *)library, UUID_B, NULL};
    cr_assert_not_null(argv[0], "RM_CUDA_PEER is not set");
    peer_io io;
    pid_t peer = peer_spawn(argv, NULL, -1, NULL, &io);
    cr_assert_gt(peer, 0);
    const char *answer = peer_read_line(&io, 20000);
    cr_expect_not_null(answer, "%s", io.why);
    if (answer != NULL)
        cr_expect_str_eq(answer, "ordinal 0");
    int status = peer_reap(peer, 20000, NULL);
    peer_io_close(&io);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "peer status %#x", status);
    rm_cuda_driver_release(driver);
}

Test(cuda_driver, cuda_errors_become_codes_and_messages)
{
    rm_cuda_driver *driver = open_fake(fake_cuda_library());
    CUdeviceptr pointer;
    cr_expect_eq(rm_cuda_driver_mem_alloc(driver, 0, 0, &pointer, OWNER), RM_E_INVALID_ARGUMENT);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_INVALID_VALUE);
    cr_expect_not_null(strstr(rm_error_last(OWNER),
                              "cuMemAlloc_v2 failed: CUDA_ERROR_INVALID_VALUE (1)"),
                       "%s", rm_error_last(OWNER));
    cr_expect_eq(rm_cuda_driver_mem_alloc(driver, 1, 64, &pointer, OWNER), RM_E_INVALID_ARGUMENT);
    cr_expect_not_null(strstr(rm_error_last(OWNER), "device 1 does not exist"));
    cr_expect_eq(rm_cuda_driver_mem_alloc(driver, 0, 64, NULL, OWNER), RM_E_INVALID_ARGUMENT);
    setenv("FAKE_CUDA_FAIL", "cuMemAlloc:2:2", 1); /* the 2nd call: out of memory */
    cr_expect_eq(rm_cuda_driver_mem_alloc(driver, 0, 64, &pointer, OWNER), RM_E_NO_MEMORY);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_OUT_OF_MEMORY);
    unsetenv("FAKE_CUDA_FAIL");
    /* The failed call still popped its context. */
    cr_expect_eq(fake_cuda_counter(fake_cuda_library(), "cuCtxPushCurrent_v2"),
                 fake_cuda_counter(fake_cuda_library(), "cuCtxPopCurrent_v2"));
    rm_cuda_driver_release(driver);
}

/* cuda.h's old signature of cuCtxSynchronize is bound on a CUDA 13 driver
 * too, where cuGetProcAddress_v2 at 13000 would give cuCtxSynchronize_v2;
 * and on a 12.x driver, whose version is below the one asked. */
Test(cuda_driver, ctx_synchronize_binds_the_cuda_2_signature_on_every_driver)
{
    static const char *const versions[] = {"13000", "12040"};
    const char *library = fake_cuda_library();
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        fflush(NULL);
        pid_t child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
            setenv("FAKE_CUDA_DRIVER_VERSION", versions[i], 1);
            rm_cuda_driver *driver;
            int failures = rm_cuda_driver_open(library, OWNER, &driver) != RM_OK;
            if (failures == 0) {
                failures += rm_cuda_driver_ctx_synchronize(driver, 0, OWNER) != RM_OK;
                failures += fake_cuda_counter(library, "cuCtxSynchronize") != 1;
                failures += fake_cuda_counter(library, "cuCtxSynchronize_v2") != 0;
                failures += fake_cuda_counter(library, "@legacy") != 0;
                rm_cuda_driver_release(driver);
            }
            _exit(failures);
        }
        int status;
        cr_assert_eq(waitpid(child, &status, 0), child);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "driver %s: %d failed checks (status %#x)", versions[i], WEXITSTATUS(status),
                  status);
    }
}

Test(cuda_driver, pointer_ordinal_names_the_device_of_a_pointer)
{
    setenv("FAKE_CUDA_UUIDS", UUID_A "," UUID_B, 1);
    rm_cuda_driver *driver = open_fake(fake_cuda_library());
    CUdeviceptr on_0, on_1;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 4096, &on_0, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 1, 4096, &on_1, OWNER), RM_OK);
    int ordinal = -1;
    cr_expect_eq(rm_cuda_driver_pointer_ordinal(driver, on_1 + 4095, &ordinal, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_expect_eq(ordinal, 1);
    cr_expect_eq(rm_cuda_driver_pointer_ordinal(driver, on_0, &ordinal, OWNER), RM_OK);
    cr_expect_eq(ordinal, 0);

    /* Memory of device 1 is not device 0's context's to set or copy. */
    expect_failure(rm_cuda_driver_memset_d8(driver, 0, on_1, 1, 16, OWNER), RM_E_INVALID_ARGUMENT,
                   CUDA_ERROR_INVALID_VALUE, "cuMemsetD8_v2 failed");
    expect_failure(rm_cuda_driver_memcpy_dtod(driver, 0, on_0, on_1, 16, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "cuMemcpyDtoD_v2 failed");
    cr_expect_eq(rm_cuda_driver_memset_d8(driver, 1, on_1, 1, 16, OWNER), RM_OK);

    int host = 0;
    expect_failure(rm_cuda_driver_pointer_ordinal(driver, (CUdeviceptr)(uintptr_t)&host, &ordinal,
                                                  OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE,
                   "is not device memory the CUDA driver knows");
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 1, on_1, OWNER), RM_OK);
    expect_failure(rm_cuda_driver_pointer_ordinal(driver, on_1, &ordinal, OWNER),
                   RM_E_INVALID_ARGUMENT, CUDA_ERROR_INVALID_VALUE, "not device memory");
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, on_0, OWNER), RM_OK);
    rm_cuda_driver_release(driver);
}

/* FAKE_CUDA_FAIL reaches every new entry point: each fails at its first
 * call, with the code it was given, and the wrapper says which. */
Test(cuda_driver, injected_failures_of_the_new_entry_points_become_codes_and_messages)
{
    const char *library = fake_cuda_library();
    setenv("FAKE_CUDA_FAIL",
           "cuMemsetD8:1:1,cuMemcpyDtoD_v2:1:700,cuMemcpyDtoDAsync:1:999,cuMemGetInfo:1:4,"
           "cuStreamCreate:1:2,cuStreamDestroy:1:400,cuEventQuery:1:700,cuCtxSynchronize:1:999,"
           "cuPointerGetAttribute:1:999",
           1);
    rm_cuda_driver *driver = open_fake(library);
    CUdeviceptr a;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 4096, &a, OWNER), RM_OK);
    expect_failure(rm_cuda_driver_memset_d8(driver, 0, a, 0, 16, OWNER), RM_E_INVALID_ARGUMENT,
                   CUDA_ERROR_INVALID_VALUE, "cuMemsetD8_v2 failed: CUDA_ERROR_INVALID_VALUE (1)");
    expect_failure(rm_cuda_driver_memcpy_dtod(driver, 0, a, a + 16, 16, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_ILLEGAL_ADDRESS,
                   "cuMemcpyDtoD_v2 failed: CUDA_ERROR_ILLEGAL_ADDRESS (700)");
    expect_failure(rm_cuda_driver_memcpy_dtod_async(driver, 0, a, a + 16, 16, NULL, OWNER),
                   RM_E_SYSTEM, CUDA_ERROR_UNKNOWN,
                   "cuMemcpyDtoDAsync_v2 failed: CUDA_ERROR_UNKNOWN (999)");
    size_t free_bytes, total;
    expect_failure(rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total, OWNER),
                   RM_E_SHUTTING_DOWN, CUDA_ERROR_DEINITIALIZED,
                   "cuMemGetInfo_v2 failed: CUDA_ERROR_DEINITIALIZED (4)");
    CUstream stream;
    expect_failure(rm_cuda_driver_stream_create(driver, 0, 0, &stream, OWNER), RM_E_NO_MEMORY,
                   CUDA_ERROR_OUT_OF_MEMORY, "cuStreamCreate failed: CUDA_ERROR_OUT_OF_MEMORY");
    cr_assert_eq(rm_cuda_driver_stream_create(driver, 0, 0, &stream, OWNER), RM_OK);
    expect_failure(rm_cuda_driver_stream_destroy(driver, 0, stream, OWNER), RM_E_INVALID_ARGUMENT,
                   CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy_v2 failed");
    CUevent event;
    cr_assert_eq(rm_cuda_driver_event_create(driver, 0, 0, &event, OWNER), RM_OK);
    expect_failure(rm_cuda_driver_event_query(driver, 0, event, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_ILLEGAL_ADDRESS, "cuEventQuery failed: CUDA_ERROR_ILLEGAL_ADDRESS");
    expect_failure(rm_cuda_driver_ctx_synchronize(driver, 0, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_UNKNOWN, "cuCtxSynchronize failed: CUDA_ERROR_UNKNOWN");
    int ordinal;
    expect_failure(rm_cuda_driver_pointer_ordinal(driver, a, &ordinal, OWNER), RM_E_SYSTEM,
                   CUDA_ERROR_UNKNOWN, "cuPointerGetAttribute failed: CUDA_ERROR_UNKNOWN");
    /* The second calls work: the failures were injected, nothing broke. */
    cr_expect_eq(rm_cuda_driver_memset_d8(driver, 0, a, 0, 16, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_memcpy_dtod(driver, 0, a, a + 16, 16, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_memcpy_dtod_async(driver, 0, a, a + 16, 16, NULL, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_stream_destroy(driver, 0, stream, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_event_query(driver, 0, event, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_ctx_synchronize(driver, 0, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_pointer_ordinal(driver, a, &ordinal, OWNER), RM_OK);
    cr_expect_eq(fake_cuda_counter(library, "cuCtxPushCurrent_v2"),
                 fake_cuda_counter(library, "cuCtxPopCurrent_v2"));
    cr_expect_eq(fake_cuda_counter(library, "@legacy"), 0);
    unsetenv("FAKE_CUDA_FAIL");
    rm_cuda_driver_release(driver);
}
