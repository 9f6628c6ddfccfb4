/* Legacy CUDA IPC across real processes, through the loader
 * (plugin/cuda/cuda_driver.h) and the fake driver (tests/fake_cuda):
 * this process exports, cuda_peer (fork + exec) imports, or the other
 * way round. Covered: bytes written here are read there and back; a
 * second open in one process is the same mapping, opened once; memory
 * freed by its exporter, or whose exporter was SIGKILLed, fails loudly
 * in the importer, never with a crash; 1000 open/close cycles leave no
 * descriptor and no /dev/shm object; interprocess events; and the rules
 * the fake itself enforces (called directly, without the loader).
 *
 * Objects of killed processes are removed by the suite's fini. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <signal.h>
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

#define PEER_TIMEOUT_MS 30000

static void reap_leftovers(void)
{
    fake_cuda_reap_dead();
}

TestSuite(cuda_ipc, .fini = reap_leftovers, .timeout = 120);

static rm_cuda_driver *open_fake(void)
{
    const char *library = fake_cuda_library();
    cr_assert_not_null(library, "FAKE_CUDA_LIBRARY is not set (run through meson)");
    rm_cuda_driver *driver = NULL;
    cr_assert_eq(rm_cuda_driver_open(library, OWNER, &driver), RM_OK, "%s",
                 rm_error_last(OWNER));
    return driver;
}

/* An allocation of `size` bytes filled with the pattern of `seed`, and
 * its IPC handle as text. */
static CUdeviceptr export_block(rm_cuda_driver *driver, size_t size, uint64_t seed,
                                char hex[129])
{
    CUdeviceptr pointer;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, size, &pointer, OWNER), RM_OK);
    uint8_t *bytes = malloc(size);
    cr_assert_not_null(bytes);
    for (size_t i = 0; i < size; i++)
        bytes[i] = fake_cuda_pattern(seed, i);
    cr_assert_eq(rm_cuda_driver_memcpy_htod(driver, 0, pointer, bytes, size, OWNER), RM_OK);
    free(bytes);
    CUipcMemHandle handle;
    cr_assert_eq(rm_cuda_driver_ipc_get_mem_handle(driver, 0, pointer, &handle, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    fake_cuda_hex(handle.reserved, hex);
    return pointer;
}

static pid_t spawn(peer_io *io, char **argv)
{
    argv[0] = getenv("RM_CUDA_PEER");
    cr_assert_not_null(argv[0], "RM_CUDA_PEER is not set");
    pid_t pid = peer_spawn(argv, NULL, -1, NULL, io);
    cr_assert_gt(pid, 0);
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

Test(cuda_ipc, a_peer_reads_the_bytes_opens_twice_for_one_mapping_and_writes_back)
{
    rm_cuda_driver *driver = open_fake();
    size_t size = (1 << 20) + 100;
    char hex[129], size_text[32];
    CUdeviceptr pointer = export_block(driver, size, 7, hex);
    snprintf(size_text, sizeof size_text, "%zu", size);
    char *argv[] = {NULL, "import", (char *)fake_cuda_library(), hex, size_text, "7",
                    "--twice", "--write", NULL};
    peer_io io;
    pid_t peer = spawn(&io, argv);
    expect_exit(peer, &io, 0);
    uint8_t first;
    cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, &first, pointer, 1, OWNER), RM_OK);
    cr_expect_eq(first, 0xab, "the peer's write is not visible here");
    cr_expect_eq(rm_cuda_driver_mem_free(driver, 0, pointer, OWNER), RM_OK);
    cr_expect_eq(fake_cuda_objects_of(getpid()), 0, "the freed block is still in /dev/shm");
    rm_cuda_driver_release(driver);
}

Test(cuda_ipc, memory_freed_by_its_exporter_fails_in_the_importer)
{
    rm_cuda_driver *driver = open_fake();
    char hex[129];
    CUdeviceptr pointer = export_block(driver, 8192, 3, hex);
    char *argv[] = {NULL, "import", (char *)fake_cuda_library(), hex, "8192", "3", "--hold",
                    NULL};
    peer_io io;
    pid_t peer = spawn(&io, argv);
    expect_line(&io, "ready");
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, pointer, OWNER), RM_OK);
    cr_assert_eq(peer_send_line(&io, "go"), 0, "%s", io.why);
    char expected[64];
    snprintf(expected, sizeof expected, "access-failed %d %d", RM_E_SYSTEM,
             CUDA_ERROR_ILLEGAL_ADDRESS);
    expect_line(&io, expected);
    expect_exit(peer, &io, 0);

    /* A process that opens the handle after the free is refused. */
    char *again[] = {NULL, "import", (char *)fake_cuda_library(), hex, "8192", "3",
                     "--expect-open-fail", NULL};
    peer = spawn(&io, again);
    snprintf(expected, sizeof expected, "open-failed %d %d", RM_E_INVALID_ARGUMENT,
             CUDA_ERROR_INVALID_HANDLE);
    expect_line(&io, expected);
    expect_exit(peer, &io, 0);
    rm_cuda_driver_release(driver);
}

Test(cuda_ipc, an_exporter_killed_with_sigkill_fails_the_importers_without_a_crash)
{
    rm_cuda_driver *driver = open_fake();
    const char *library = fake_cuda_library();
    char *export_argv[] = {NULL, "export", (char *)library, "65536", "11", NULL};
    peer_io exporter_io;
    pid_t exporter = spawn(&exporter_io, export_argv);
    char hex[129];
    snprintf(hex, sizeof hex, "%s", expect_line(&exporter_io, ""));
    cr_assert_eq(strlen(hex), 128, "not a handle: %s", hex);
    cr_expect_eq(fake_cuda_objects_of(exporter), 1);

    /* This process holds an open mapping when the exporter dies. */
    CUipcMemHandle handle;
    cr_assert_eq(fake_cuda_unhex(hex, handle.reserved), 0);
    CUdeviceptr imported;
    cr_assert_eq(rm_cuda_driver_ipc_open_mem_handle(driver, 0, &handle, &imported, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    uint8_t byte;
    cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, &byte, imported + 5, 1, OWNER), RM_OK);
    cr_expect_eq(byte, fake_cuda_pattern(11, 5));

    kill(exporter, SIGKILL);
    int status = peer_reap(exporter, PEER_TIMEOUT_MS, NULL);
    peer_io_close(&exporter_io);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status %#x", status);

    cr_expect_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, &byte, imported, 1, OWNER), RM_E_SYSTEM);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_ILLEGAL_ADDRESS);
    cr_expect_eq(rm_cuda_driver_ipc_close_mem_handle(driver, 0, imported, OWNER), RM_OK);

    /* A process that opens it afterwards gets an error code. */
    char *import_argv[] = {NULL, "import", (char *)library, hex, "65536", "11",
                           "--expect-open-fail", NULL};
    peer_io io;
    pid_t importer = spawn(&io, import_argv);
    char expected[64];
    snprintf(expected, sizeof expected, "open-failed %d %d", RM_E_INVALID_ARGUMENT,
             CUDA_ERROR_INVALID_HANDLE);
    expect_line(&io, expected);
    expect_exit(importer, &io, 0);

    /* What the killed process left is removed by a reaper: this one, or
     * the fini of a test running beside this one (each reaps the objects
     * of every dead process), so only "gone afterwards" can be asserted
     * here; that it was there is checked once the exporter had
     * exported. */
    fake_cuda_reap_dead();
    cr_expect_eq(fake_cuda_objects_of(exporter), 0);
    rm_cuda_driver_release(driver);
}

Test(cuda_ipc, a_thousand_open_close_cycles_leave_no_descriptor_and_no_object)
{
    rm_cuda_driver *driver = open_fake();
    const char *library = fake_cuda_library();
    char *export_argv[] = {NULL, "export", (char *)library, "4096", "5", NULL};
    peer_io exporter_io;
    pid_t exporter = spawn(&exporter_io, export_argv);
    char hex[129];
    snprintf(hex, sizeof hex, "%s", expect_line(&exporter_io, ""));
    CUipcMemHandle handle;
    cr_assert_eq(fake_cuda_unhex(hex, handle.reserved), 0);

    long fds = fake_cuda_open_fds();
    for (int i = 0; i < 1000; i++) {
        CUdeviceptr imported;
        cr_assert_eq(rm_cuda_driver_ipc_open_mem_handle(driver, 0, &handle, &imported, OWNER),
                     RM_OK, "cycle %d: %s", i, rm_error_last(OWNER));
        if (i % 100 == 0) {
            uint8_t byte;
            cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, &byte, imported + 9, 1, OWNER),
                         RM_OK);
            cr_assert_eq(byte, fake_cuda_pattern(5, 9));
        }
        cr_assert_eq(rm_cuda_driver_ipc_close_mem_handle(driver, 0, imported, OWNER), RM_OK);
    }
    cr_expect_eq(fake_cuda_open_fds(), fds, "descriptors leaked");
    cr_expect_eq(fake_cuda_counter(library, "@imports_mapped"), 1000);
    cr_expect_eq(fake_cuda_counter(library, "@imports_live"), 0);
    cr_expect_eq(fake_cuda_objects_of(getpid()), 0);
    cr_expect_eq(fake_cuda_objects_of(exporter), 1);

    /* The exporter's normal exit leaves nothing behind. */
    expect_exit(exporter, &exporter_io, 0);
    cr_expect_eq(fake_cuda_objects_of(exporter), 0);
    rm_cuda_driver_release(driver);
}

Test(cuda_ipc, an_interprocess_event_is_waited_for_in_another_process)
{
    rm_cuda_driver *driver = open_fake();
    CUevent event;
    cr_assert_eq(rm_cuda_driver_event_create(driver, 0,
                                             CU_EVENT_INTERPROCESS | CU_EVENT_DISABLE_TIMING,
                                             &event, OWNER),
                 RM_OK, "%s", rm_error_last(OWNER));
    /* Here: a record completes after the fake's delay, and synchronize
     * waits for it. */
    setenv("FAKE_CUDA_EVENT_DELAY_MS", "60", 1);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    cr_assert_eq(rm_cuda_driver_event_record(driver, 0, event, NULL, OWNER), RM_OK);
    cr_assert_eq(rm_cuda_driver_event_synchronize(driver, 0, event, OWNER), RM_OK);
    clock_gettime(CLOCK_MONOTONIC, &end);
    long waited_ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    cr_expect_geq(waited_ms, 55, "synchronize returned after %ld ms", waited_ms);

    cr_assert_eq(rm_cuda_driver_event_record(driver, 0, event, NULL, OWNER), RM_OK);
    CUipcEventHandle handle;
    cr_assert_eq(rm_cuda_driver_ipc_get_event_handle(driver, 0, event, &handle, OWNER), RM_OK);
    char hex[129];
    fake_cuda_hex(handle.reserved, hex);
    char *argv[] = {NULL, "event", (char *)fake_cuda_library(), hex, NULL};
    peer_io io;
    pid_t peer = spawn(&io, argv);
    expect_line(&io, "event-done");
    expect_exit(peer, &io, 0);

    /* Once its exporter destroyed it, it cannot be opened. */
    cr_assert_eq(rm_cuda_driver_event_destroy(driver, 0, event, OWNER), RM_OK);
    peer = spawn(&io, argv);
    char expected[64];
    snprintf(expected, sizeof expected, "open-failed %d %d", RM_E_INVALID_ARGUMENT,
             CUDA_ERROR_INVALID_HANDLE);
    expect_line(&io, expected);
    expect_exit(peer, &io, 11);
    cr_expect_eq(fake_cuda_objects_of(getpid()), 0);
    rm_cuda_driver_release(driver);
}

Test(cuda_ipc, the_fake_refuses_a_self_open_and_a_non_base_pointer_through_the_loader)
{
    rm_cuda_driver *driver = open_fake();
    char hex[129];
    CUdeviceptr pointer = export_block(driver, 4096, 1, hex);
    CUipcMemHandle handle;
    cr_assert_eq(fake_cuda_unhex(hex, handle.reserved), 0);
    CUdeviceptr opened;
    cr_expect_eq(rm_cuda_driver_ipc_open_mem_handle(driver, 0, &handle, &opened, OWNER),
                 RM_E_SYSTEM);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_INVALID_CONTEXT);
    cr_expect_eq(rm_cuda_driver_ipc_get_mem_handle(driver, 0, pointer + 16, &handle, OWNER),
                 RM_E_INVALID_ARGUMENT);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_INVALID_VALUE);
    cr_expect_eq(rm_cuda_driver_mem_free(driver, 0, pointer + 16, OWNER), RM_E_INVALID_ARGUMENT);
    int capable = -1;
    cr_expect_eq(rm_cuda_driver_pointer_attribute(driver, 0, &capable,
                                                  CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE,
                                                  pointer + 16, OWNER),
                 RM_OK);
    cr_expect_eq(capable, 1);
    cr_expect_eq(rm_cuda_driver_mem_free(driver, 0, pointer, OWNER), RM_OK);
    rm_cuda_driver_release(driver);
}

/* A peer that exports `size` bytes filled with `seed`; its handle as text. */
static pid_t spawn_exporter(peer_io *io, const char *size, const char *seed, char hex[129])
{
    char *argv[] = {NULL, "export", (char *)fake_cuda_library(), (char *)size, (char *)seed,
                    NULL};
    pid_t pid = spawn(io, argv);
    snprintf(hex, 129, "%s", expect_line(io, ""));
    cr_assert_eq(strlen(hex), 128, "not a handle: %s", hex);
    return pid;
}

static CUdeviceptr open_handle(rm_cuda_driver *driver, const char *hex)
{
    CUipcMemHandle handle;
    cr_assert_eq(fake_cuda_unhex(hex, handle.reserved), 0);
    CUdeviceptr pointer;
    cr_assert_eq(rm_cuda_driver_ipc_open_mem_handle(driver, 0, &handle, &pointer, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    return pointer;
}

/* `size` bytes at `pointer` are the pattern of `seed` (from byte `from`
 * of the pattern on). */
static void expect_pattern(rm_cuda_driver *driver, CUdeviceptr pointer, size_t size,
                           uint64_t seed, size_t from)
{
    uint8_t *copy = malloc(size);
    cr_assert_not_null(copy);
    cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, copy, pointer, size, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    for (size_t i = 0; i < size; i++)
        cr_assert_eq(copy[i], fake_cuda_pattern(seed, from + i), "byte %zu", i);
    free(copy);
}

static void expect_illegal_address(int32_t rc, const char *what)
{
    cr_expect_eq(rc, RM_E_SYSTEM, "%s: rc %d: %s", what, rc, rm_error_last(OWNER));
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_ILLEGAL_ADDRESS, "%s", what);
    cr_expect_not_null(strstr(rm_error_last(OWNER), "CUDA_ERROR_ILLEGAL_ADDRESS (700)"), "%s: %s",
                       what, rm_error_last(OWNER));
}

Test(cuda_ipc, memset_and_device_copies_work_through_imports_and_fail_once_the_exporter_is_gone)
{
    rm_cuda_driver *driver = open_fake();
    peer_io first_io, second_io;
    char first_hex[129], second_hex[129];
    pid_t first = spawn_exporter(&first_io, "8192", "21", first_hex);
    pid_t second = spawn_exporter(&second_io, "8192", "22", second_hex);
    CUdeviceptr one = open_handle(driver, first_hex);
    CUdeviceptr two = open_handle(driver, second_hex);
    CUdeviceptr local;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, 8192, &local, OWNER), RM_OK);

    /* An import to a local block, and between two imports. */
    cr_assert_eq(rm_cuda_driver_memcpy_dtod(driver, 0, local, one, 8192, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    expect_pattern(driver, local, 8192, 21, 0);
    cr_assert_eq(rm_cuda_driver_memcpy_dtod_async(driver, 0, two, one, 4096, NULL, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    expect_pattern(driver, two, 4096, 21, 0);
    expect_pattern(driver, two + 4096, 4096, 22, 4096);
    cr_assert_eq(rm_cuda_driver_memset_d8(driver, 0, one + 100, 0xee, 10, OWNER), RM_OK);
    uint8_t bytes[12];
    cr_assert_eq(rm_cuda_driver_memcpy_dtoh(driver, 0, bytes, one + 99, 12, OWNER), RM_OK);
    cr_expect_eq(bytes[0], fake_cuda_pattern(21, 99));
    for (int i = 1; i <= 10; i++)
        cr_expect_eq(bytes[i], 0xee, "byte %d", i);
    cr_expect_eq(bytes[11], fake_cuda_pattern(21, 110));
    cr_assert_eq(rm_cuda_driver_memcpy_dtod(driver, 0, one, local, 16, OWNER), RM_OK);
    int ordinal = -1;
    cr_expect_eq(rm_cuda_driver_pointer_ordinal(driver, one + 8191, &ordinal, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_expect_eq(ordinal, 0);
    /* Past the end of an import. */
    cr_expect_eq(rm_cuda_driver_memset_d8(driver, 0, two + 8000, 0, 193, OWNER),
                 RM_E_INVALID_ARGUMENT);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_INVALID_VALUE);

    /* The first exporter frees: its import fails loudly, either way. */
    cr_assert_eq(peer_send_line(&first_io, "free"), 0, "%s", first_io.why);
    expect_line(&first_io, "freed");
    expect_illegal_address(rm_cuda_driver_memset_d8(driver, 0, one, 0, 16, OWNER), "memset");
    expect_illegal_address(rm_cuda_driver_memcpy_dtod(driver, 0, local, one, 16, OWNER),
                           "copy from");
    expect_illegal_address(rm_cuda_driver_memcpy_dtod(driver, 0, one, local, 16, OWNER),
                           "copy to");
    expect_illegal_address(rm_cuda_driver_memcpy_dtod_async(driver, 0, two, one, 16, NULL, OWNER),
                           "async copy");
    cr_expect_eq(rm_cuda_driver_memcpy_dtod(driver, 0, two, local, 16, OWNER), RM_OK,
                 "the other import is alive: %s", rm_error_last(OWNER));

    /* The second dies. */
    kill(second, SIGKILL);
    int status = peer_reap(second, PEER_TIMEOUT_MS, NULL);
    peer_io_close(&second_io);
    cr_assert(WIFSIGNALED(status), "status %#x", status);
    expect_illegal_address(rm_cuda_driver_memcpy_dtod(driver, 0, local, two, 16, OWNER),
                           "copy from a dead exporter's block");
    expect_illegal_address(rm_cuda_driver_memset_d8(driver, 0, two, 1, 1, OWNER),
                           "memset of a dead exporter's block");

    cr_expect_eq(rm_cuda_driver_ipc_close_mem_handle(driver, 0, one, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_ipc_close_mem_handle(driver, 0, two, OWNER), RM_OK);
    cr_expect_eq(rm_cuda_driver_mem_free(driver, 0, local, OWNER), RM_OK);
    expect_exit(first, &first_io, 0);
    fake_cuda_reap_dead();
    rm_cuda_driver_release(driver);
}

static size_t free_bytes_now(rm_cuda_driver *driver, size_t expected_total)
{
    size_t free_bytes, total;
    cr_assert_eq(rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total, OWNER), RM_OK, "%s",
                 rm_error_last(OWNER));
    cr_assert_eq(total, expected_total);
    return free_bytes;
}

/* Device memory is shared by the processes on a device: what a peer
 * allocates is missing here until it frees, exits or dies. */
Test(cuda_ipc, mem_get_info_counts_the_memory_of_every_process_on_the_device)
{
    fake_cuda_use_private_device(); /* inherited by the peers */
    const size_t total = (size_t)1 << 30;
    setenv("FAKE_CUDA_MEMORY_BYTES", "1073741824", 1);
    rm_cuda_driver *driver = open_fake();
    cr_expect_eq(free_bytes_now(driver, total), total);
    const size_t mine = 2 << 20, theirs = 8 << 20;
    CUdeviceptr block;
    cr_assert_eq(rm_cuda_driver_mem_alloc(driver, 0, mine, &block, OWNER), RM_OK);
    cr_expect_eq(free_bytes_now(driver, total), total - mine);

    peer_io exporter_io;
    char hex[129];
    pid_t exporter = spawn_exporter(&exporter_io, "8388608", "1", hex);
    cr_expect_eq(free_bytes_now(driver, total), total - mine - theirs,
                 "the peer's allocation is not counted here");
    /* And a third process sees both. */
    char *meminfo_argv[] = {NULL, "meminfo", (char *)fake_cuda_library(), NULL};
    peer_io io;
    pid_t meminfo = spawn(&io, meminfo_argv);
    char expected[96];
    snprintf(expected, sizeof expected, "free %zu total %zu", total - mine - theirs, total);
    const char *line = expect_line(&io, "free ");
    cr_expect_str_eq(line, expected);
    expect_exit(meminfo, &io, 0);

    cr_assert_eq(peer_send_line(&exporter_io, "free"), 0, "%s", exporter_io.why);
    expect_line(&exporter_io, "freed");
    cr_expect_eq(free_bytes_now(driver, total), total - mine, "the peer's free is not counted");
    expect_exit(exporter, &exporter_io, 0);
    cr_expect_eq(free_bytes_now(driver, total), total - mine);

    /* Not freed, but exited normally. */
    exporter = spawn_exporter(&exporter_io, "8388608", "2", hex);
    cr_expect_eq(free_bytes_now(driver, total), total - mine - theirs);
    expect_exit(exporter, &exporter_io, 0);
    cr_expect_eq(free_bytes_now(driver, total), total - mine, "an exited peer still counts");

    /* Killed: its object stays in /dev/shm until reaped, but a dead
     * process holds no device memory. */
    exporter = spawn_exporter(&exporter_io, "8388608", "3", hex);
    cr_expect_eq(free_bytes_now(driver, total), total - mine - theirs);
    kill(exporter, SIGKILL);
    int status = peer_reap(exporter, PEER_TIMEOUT_MS, NULL);
    peer_io_close(&exporter_io);
    cr_assert(WIFSIGNALED(status), "status %#x", status);
    cr_expect_eq(free_bytes_now(driver, total), total - mine, "a killed peer still counts");

    /* More than is free: out of memory. */
    CUdeviceptr too_much;
    cr_expect_eq(rm_cuda_driver_mem_alloc(driver, 0, total - mine + 1, &too_much, OWNER),
                 RM_E_NO_MEMORY);
    cr_expect_eq(rm_cuda_driver_last_result(), CUDA_ERROR_OUT_OF_MEMORY);
    cr_assert_eq(rm_cuda_driver_mem_free(driver, 0, block, OWNER), RM_OK);
    cr_expect_eq(free_bytes_now(driver, total), total);
    fake_cuda_reap_dead();
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

Test(cuda_ipc, the_fake_enforces_the_drivers_rules)
{
    void *fake = dlopen(fake_cuda_library(), RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(fake, "%s", dlerror());
    PFN_cuInit cuInit;
    PFN_cuMemAlloc_v2 cuMemAlloc_v2;
    PFN_cuMemFree_v2 cuMemFree_v2;
    PFN_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain;
    PFN_cuDevicePrimaryCtxRelease_v2 cuDevicePrimaryCtxRelease_v2;
    PFN_cuCtxPushCurrent_v2 cuCtxPushCurrent_v2;
    PFN_cuCtxPopCurrent_v2 cuCtxPopCurrent_v2;
    PFN_cuIpcGetMemHandle cuIpcGetMemHandle;
    PFN_cuIpcOpenMemHandle_v2 cuIpcOpenMemHandle_v2;
    PFN_cuIpcCloseMemHandle cuIpcCloseMemHandle;
    PFN_cuEventCreate cuEventCreate;
    PFN_cuEventDestroy_v2 cuEventDestroy_v2;
    PFN_cuIpcGetEventHandle cuIpcGetEventHandle;
    PFN_cuGetProcAddress_v2 cuGetProcAddress_v2;
    BIND(fake, cuInit);
    BIND(fake, cuMemAlloc_v2);
    BIND(fake, cuMemFree_v2);
    BIND(fake, cuDevicePrimaryCtxRetain);
    BIND(fake, cuDevicePrimaryCtxRelease_v2);
    BIND(fake, cuCtxPushCurrent_v2);
    BIND(fake, cuCtxPopCurrent_v2);
    BIND(fake, cuIpcGetMemHandle);
    BIND(fake, cuIpcOpenMemHandle_v2);
    BIND(fake, cuIpcCloseMemHandle);
    BIND(fake, cuEventCreate);
    BIND(fake, cuEventDestroy_v2);
    BIND(fake, cuIpcGetEventHandle);
    BIND(fake, cuGetProcAddress_v2);

    CUdeviceptr pointer;
    CUcontext context;
    cr_expect_eq(cuMemAlloc_v2(&pointer, 64), CUDA_ERROR_NOT_INITIALIZED);
    cr_expect_eq(cuDevicePrimaryCtxRetain(&context, 0), CUDA_ERROR_NOT_INITIALIZED);
    cr_assert_eq(cuInit(0), CUDA_SUCCESS);
    cr_expect_eq(cuMemAlloc_v2(&pointer, 64), CUDA_ERROR_INVALID_CONTEXT, "no current context");
    cr_assert_eq(cuDevicePrimaryCtxRetain(&context, 0), CUDA_SUCCESS);
    cr_expect_eq(cuDevicePrimaryCtxRetain(&context, 1), CUDA_ERROR_INVALID_DEVICE);
    cr_assert_eq(cuCtxPushCurrent_v2(context), CUDA_SUCCESS);
    cr_assert_eq(cuMemAlloc_v2(&pointer, 64), CUDA_SUCCESS);

    CUipcMemHandle handle;
    cr_expect_eq(cuIpcGetMemHandle(&handle, pointer + 8), CUDA_ERROR_INVALID_VALUE, "non-base");
    cr_assert_eq(cuIpcGetMemHandle(&handle, pointer), CUDA_SUCCESS);
    CUdeviceptr opened;
    cr_expect_eq(cuIpcOpenMemHandle_v2(&opened, handle, 0), CUDA_ERROR_INVALID_VALUE, "flags 0");
    cr_expect_eq(cuIpcOpenMemHandle_v2(&opened, handle, 3), CUDA_ERROR_INVALID_VALUE, "flags 3");
    cr_expect_eq(cuIpcOpenMemHandle_v2(&opened, handle, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
                 CUDA_ERROR_INVALID_CONTEXT, "own handle");
    CUipcMemHandle forged = handle;
    forged.reserved[0] ^= 1;
    cr_expect_eq(cuIpcOpenMemHandle_v2(&opened, forged, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
                 CUDA_ERROR_INVALID_VALUE, "bad magic");
    cr_expect_eq(cuIpcCloseMemHandle(pointer), CUDA_ERROR_INVALID_VALUE, "not an import");

    CUevent event;
    cr_expect_eq(cuEventCreate(&event, CU_EVENT_INTERPROCESS), CUDA_ERROR_INVALID_VALUE,
                 "interprocess needs DISABLE_TIMING");
    cr_assert_eq(cuEventCreate(&event, CU_EVENT_DEFAULT), CUDA_SUCCESS);
    CUipcEventHandle event_handle;
    cr_expect_eq(cuIpcGetEventHandle(&event_handle, event), CUDA_ERROR_INVALID_VALUE,
                 "not an interprocess event");
    cr_expect_eq(cuEventDestroy_v2(event), CUDA_SUCCESS);

    void *function = NULL;
    CUdriverProcAddressQueryResult status = -1;
    cr_expect_eq(cuGetProcAddress_v2("cuMemAlloc", &function, 13000,
                                     CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status),
                 CUDA_SUCCESS);
    cr_expect_eq(status, CU_GET_PROC_ADDRESS_SUCCESS);
    cr_expect_eq(function, dlsym(fake, "cuMemAlloc_v2"), "the base name gives the _v2 entry");
    cr_expect_eq(cuGetProcAddress_v2("cuMemAlloc", &function, 3000,
                                     CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status),
                 CUDA_SUCCESS);
    cr_expect_eq(function, dlsym(fake, "cuMemAlloc"), "an old version gives the legacy entry");
    cr_expect_eq(cuGetProcAddress_v2("cuMemAlloc_v2", &function, 13000,
                                     CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status),
                 CUDA_SUCCESS);
    cr_expect_eq(status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, "versioned names are not looked up");
    cr_expect_eq(cuGetProcAddress_v2("cuMemAlloc", &function, 13010,
                                     CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status),
                 CUDA_ERROR_INVALID_VALUE, "a version newer than the driver");

    /* The last release of the primary context frees what it allocated. */
    CUcontext popped;
    cr_assert_eq(cuCtxPopCurrent_v2(&popped), CUDA_SUCCESS);
    cr_expect_eq(popped, context);
    cr_expect_eq(cuCtxPopCurrent_v2(&popped), CUDA_ERROR_INVALID_CONTEXT, "empty stack");
    cr_expect_eq(cuMemFree_v2(pointer), CUDA_ERROR_INVALID_CONTEXT, "no current context");
    cr_expect_eq(fake_cuda_objects_of(getpid()), 1);
    cr_assert_eq(cuDevicePrimaryCtxRelease_v2(0), CUDA_SUCCESS);
    cr_expect_eq(fake_cuda_objects_of(getpid()), 0);
    cr_expect_eq(cuCtxPushCurrent_v2(context), CUDA_ERROR_INVALID_CONTEXT, "released context");
}
