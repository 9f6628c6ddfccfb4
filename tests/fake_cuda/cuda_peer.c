/* The other process of the CUDA IPC tests (tests/unit/test_cuda_ipc.c):
 * it reaches the (fake) driver through the plugin's loader, does one
 * thing, and reports by its output lines and its exit status.
 *
 *   export LIB SIZE SEED          allocate, fill, print the IPC handle in
 *                                 hex; then "free" on stdin frees ("freed"),
 *                                 end of input exits
 *   import LIB HEX SIZE SEED [--twice] [--write] [--hold] [--expect-open-fail]
 *                                 open the handle, check the bytes, close
 *   ordinal LIB UUID              print "ordinal N" for a device UUID
 *   event LIB HEX                 open an IPC event, wait for it, destroy it
 *   meminfo LIB                   print "free F total T" (cuMemGetInfo_v2 of
 *                                 device 0, as this process sees it)
 *   vmm-export LIB SIZE SEED      cuMemCreate SIZE bytes, fill them through a
 *                                 READWRITE mapping, seal it READ, send a
 *                                 POSIX descriptor of it over the socket on
 *                                 fd 3 (SCM_RIGHTS), print "exported"; end
 *                                 of input unmaps, releases and exits
 *   vmm-import LIB SIZE SEED [--write-fails] [--hold]
 *                                 receive a descriptor on fd 3, import it,
 *                                 close it, map it READ, check the bytes,
 *                                 print "ready"; --write-fails: a copy, a
 *                                 memset and a device copy into the mapping
 *                                 must fail ("write-refused RC CURESULT");
 *                                 --hold: then "check" lines re-check the
 *                                 bytes ("read-ok") until "exit" or end of
 *                                 input; then unmap, release, "done"
 *
 * Exit status: 0 as expected; otherwise the step that went wrong (see
 * the FAIL_* codes), with a line on stderr. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "error.h"
#include "fake_cuda.h"

enum {
    FAIL_USAGE = 1,
    FAIL_OPEN_DRIVER = 2,
    FAIL_OPEN_HANDLE = 3,
    FAIL_BYTES = 4,
    FAIL_TWICE = 5,
    FAIL_COUNTERS = 6,
    FAIL_ACCESS_AFTER_FREE = 7,
    FAIL_CLOSE = 8,
    FAIL_OPENED_BUT_SHOULD_NOT = 9,
    FAIL_EXPORT = 10,
    FAIL_EVENT = 11,
    FAIL_NOT_FOUND = 12,
    FAIL_MEMINFO = 13,
    FAIL_VMM = 14,
    FAIL_WRITE_ALLOWED = 15,
};

#define VMM_SOCKET 3

static const int owner_token;
#define OWNER ((const void *)&owner_token)

__attribute__((format(printf, 2, 3))) static int fail(int code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "cuda_peer: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, " [%s]\n", rm_error_last(OWNER));
    va_end(args);
    return code;
}

static int check_bytes(rm_cuda_driver *driver, CUdeviceptr pointer, size_t size, uint64_t seed)
{
    uint8_t *copy = malloc(size);
    if (copy == NULL)
        return fail(FAIL_BYTES, "no memory");
    int rc = 0;
    if (rm_cuda_driver_memcpy_dtoh(driver, 0, copy, pointer, size, OWNER) != RM_OK) {
        rc = fail(FAIL_BYTES, "memcpy_dtoh failed");
    } else {
        for (size_t i = 0; i < size; i++) {
            if (copy[i] != fake_cuda_pattern(seed, i)) {
                rc = fail(FAIL_BYTES, "byte %zu is %u, not %u", i, copy[i], fake_cuda_pattern(seed, i));
                break;
            }
        }
    }
    free(copy);
    return rc;
}

static int run_export(rm_cuda_driver *driver, size_t size, uint64_t seed)
{
    CUdeviceptr pointer;
    if (rm_cuda_driver_mem_alloc(driver, 0, size, &pointer, OWNER) != RM_OK)
        return fail(FAIL_EXPORT, "mem_alloc");
    uint8_t *bytes = malloc(size);
    if (bytes == NULL)
        return fail(FAIL_EXPORT, "no memory");
    for (size_t i = 0; i < size; i++)
        bytes[i] = fake_cuda_pattern(seed, i);
    int32_t rc = rm_cuda_driver_memcpy_htod(driver, 0, pointer, bytes, size, OWNER);
    free(bytes);
    CUipcMemHandle handle;
    if (rc != RM_OK ||
        rm_cuda_driver_ipc_get_mem_handle(driver, 0, pointer, &handle, OWNER) != RM_OK)
        return fail(FAIL_EXPORT, "memcpy_htod or ipc_get_mem_handle");
    char text[129];
    fake_cuda_hex(handle.reserved, text);
    printf("%s\n", text);
    fflush(stdout);
    char line[64];
    bool freed = false;
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strncmp(line, "free", 4) == 0 && !freed) {
            if (rm_cuda_driver_mem_free(driver, 0, pointer, OWNER) != RM_OK)
                return fail(FAIL_EXPORT, "mem_free");
            freed = true;
            printf("freed\n");
            fflush(stdout);
        }
    }
    if (!freed && rm_cuda_driver_mem_free(driver, 0, pointer, OWNER) != RM_OK)
        return fail(FAIL_EXPORT, "mem_free at the end");
    return 0;
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return true;
    return false;
}

static int run_import(rm_cuda_driver *driver, const char *library, int argc, char **argv)
{
    CUipcMemHandle handle;
    if (argc < 6 || fake_cuda_unhex(argv[3], handle.reserved) != 0)
        return fail(FAIL_USAGE, "import LIB HEX SIZE SEED [flags]");
    size_t size = strtoull(argv[4], NULL, 10);
    uint64_t seed = strtoull(argv[5], NULL, 10);
    bool expect_open_fail = has_flag(argc, argv, "--expect-open-fail");

    CUdeviceptr pointer;
    int32_t rc = rm_cuda_driver_ipc_open_mem_handle(driver, 0, &handle, &pointer, OWNER);
    if (rc != RM_OK) {
        printf("open-failed %d %d\n", rc, rm_cuda_driver_last_result());
        fflush(stdout);
        return expect_open_fail ? 0 : fail(FAIL_OPEN_HANDLE, "ipc_open_mem_handle");
    }
    if (expect_open_fail)
        return fail(FAIL_OPENED_BUT_SHOULD_NOT, "the handle opened");
    int result = check_bytes(driver, pointer, size, seed);
    if (result != 0)
        return result;
    if (has_flag(argc, argv, "--twice")) {
        CUdeviceptr again;
        if (rm_cuda_driver_ipc_open_mem_handle(driver, 0, &handle, &again, OWNER) != RM_OK)
            return fail(FAIL_TWICE, "second open failed");
        if (again != pointer)
            return fail(FAIL_TWICE, "second open gave %llx, first %llx", again, pointer);
        if (fake_cuda_counter(library, "@imports_mapped") != 1 ||
            fake_cuda_counter(library, "cuIpcOpenMemHandle_v2") != 2)
            return fail(FAIL_COUNTERS, "two opens mapped %lld times in %lld calls",
                        fake_cuda_counter(library, "@imports_mapped"),
                        fake_cuda_counter(library, "cuIpcOpenMemHandle_v2"));
        if (rm_cuda_driver_ipc_close_mem_handle(driver, 0, again, OWNER) != RM_OK)
            return fail(FAIL_CLOSE, "first close");
        if (fake_cuda_counter(library, "@imports_live") != 1)
            return fail(FAIL_COUNTERS, "one close of two unmapped the import");
    }
    if (has_flag(argc, argv, "--write")) {
        uint8_t marker = 0xab;
        if (rm_cuda_driver_memcpy_htod(driver, 0, pointer, &marker, 1, OWNER) != RM_OK)
            return fail(FAIL_BYTES, "write through the import");
    }
    if (has_flag(argc, argv, "--hold")) {
        printf("ready\n");
        fflush(stdout);
        char line[64];
        if (fgets(line, sizeof line, stdin) == NULL)
            return fail(FAIL_USAGE, "no go line");
        uint8_t byte;
        rc = rm_cuda_driver_memcpy_dtoh(driver, 0, &byte, pointer, 1, OWNER);
        if (rc == RM_OK)
            return fail(FAIL_ACCESS_AFTER_FREE, "read through a dangling import worked");
        printf("access-failed %d %d\n", rc, rm_cuda_driver_last_result());
        fflush(stdout);
    }
    if (rm_cuda_driver_ipc_close_mem_handle(driver, 0, pointer, OWNER) != RM_OK)
        return fail(FAIL_CLOSE, "close");
    if (fake_cuda_counter(library, "@imports_live") != 0)
        return fail(FAIL_COUNTERS, "an import is still mapped after its last close");
    return 0;
}

static int run_ordinal(rm_cuda_driver *driver, const char *text)
{
    uint8_t uuid[16];
    if (fake_cuda_parse_uuid(text, uuid) != 0)
        return fail(FAIL_USAGE, "bad UUID %s", text);
    int ordinal;
    if (rm_cuda_driver_ordinal_of_uuid(driver, uuid, &ordinal, OWNER) != RM_OK)
        return fail(FAIL_NOT_FOUND, "no device %s", text);
    printf("ordinal %d\n", ordinal);
    return 0;
}

static int run_event(rm_cuda_driver *driver, const char *text)
{
    CUipcEventHandle handle;
    if (fake_cuda_unhex(text, handle.reserved) != 0)
        return fail(FAIL_USAGE, "bad event handle");
    CUevent event;
    int32_t rc = rm_cuda_driver_ipc_open_event_handle(driver, 0, &handle, &event, OWNER);
    if (rc != RM_OK) {
        printf("open-failed %d %d\n", rc, rm_cuda_driver_last_result());
        return fail(FAIL_EVENT, "ipc_open_event_handle");
    }
    if (rm_cuda_driver_stream_wait_event(driver, 0, NULL, event, OWNER) != RM_OK ||
        rm_cuda_driver_event_synchronize(driver, 0, event, OWNER) != RM_OK ||
        rm_cuda_driver_event_destroy(driver, 0, event, OWNER) != RM_OK)
        return fail(FAIL_EVENT, "wait, synchronize or destroy");
    printf("event-done\n");
    return 0;
}

static int run_meminfo(rm_cuda_driver *driver)
{
    size_t free_bytes, total_bytes;
    if (rm_cuda_driver_mem_get_info(driver, 0, &free_bytes, &total_bytes, OWNER) != RM_OK)
        return fail(FAIL_MEMINFO, "mem_get_info");
    printf("free %zu total %zu\n", free_bytes, total_bytes);
    return 0;
}

static int run_vmm_export(rm_cuda_driver *driver, size_t size, uint64_t seed)
{
    CUmemGenericAllocationHandle handle;
    CUdeviceptr pointer;
    if (rm_cuda_driver_vmm_create(driver, 0, size, &handle, OWNER) != RM_OK)
        return fail(FAIL_VMM, "vmm_create");
    if (rm_cuda_driver_vmm_map(driver, 0, handle, size, true, &pointer, OWNER) != RM_OK)
        return fail(FAIL_VMM, "vmm_map READWRITE");
    uint8_t *bytes = malloc(size);
    if (bytes == NULL)
        return fail(FAIL_VMM, "no memory");
    for (size_t i = 0; i < size; i++)
        bytes[i] = fake_cuda_pattern(seed, i);
    int32_t rc = rm_cuda_driver_memcpy_htod(driver, 0, pointer, bytes, size, OWNER);
    free(bytes);
    if (rc != RM_OK || rm_cuda_driver_vmm_set_access(driver, 0, pointer, size, false, OWNER) != RM_OK)
        return fail(FAIL_VMM, "fill or seal");
    int fd;
    if (rm_cuda_driver_vmm_export_fd(driver, 0, handle, &fd, OWNER) != RM_OK)
        return fail(FAIL_VMM, "vmm_export_fd");
    if (fake_cuda_send_fd(VMM_SOCKET, fd) != 0)
        return fail(FAIL_VMM, "sending the descriptor: %s", strerror(errno));
    close(fd);
    printf("exported\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL)
        ;
    if (rm_cuda_driver_vmm_unmap(driver, 0, pointer, size, OWNER) != RM_OK ||
        rm_cuda_driver_vmm_release(driver, 0, handle, OWNER) != RM_OK)
        return fail(FAIL_VMM, "unmap or release");
    return 0;
}

/* Every way to write into a READ mapping fails with an error code. */
static int vmm_writes_refused(rm_cuda_driver *driver, CUdeviceptr pointer)
{
    uint8_t byte = 0xab;
    int32_t rc = rm_cuda_driver_memcpy_htod(driver, 0, pointer + 1, &byte, 1, OWNER);
    if (rc == RM_OK)
        return fail(FAIL_WRITE_ALLOWED, "memcpy_htod into a READ mapping worked");
    int32_t first_rc = rc;
    CUresult first_result = rm_cuda_driver_last_result();
    if (rm_cuda_driver_memset_d8(driver, 0, pointer, 0, 16, OWNER) == RM_OK)
        return fail(FAIL_WRITE_ALLOWED, "memset_d8 into a READ mapping worked");
    if (rm_cuda_driver_last_result() != first_result)
        return fail(FAIL_VMM, "memset_d8 failed with %d, memcpy_htod with %d",
                    rm_cuda_driver_last_result(), first_result);
    CUdeviceptr local;
    if (rm_cuda_driver_mem_alloc(driver, 0, 4096, &local, OWNER) != RM_OK)
        return fail(FAIL_VMM, "mem_alloc");
    rc = rm_cuda_driver_memcpy_dtod(driver, 0, pointer, local, 16, OWNER);
    CUresult dtod_result = rm_cuda_driver_last_result();
    /* Reading from it into local memory is allowed. */
    int32_t read_rc = rm_cuda_driver_memcpy_dtod(driver, 0, local, pointer, 16, OWNER);
    rm_cuda_driver_mem_free(driver, 0, local, OWNER);
    if (rc == RM_OK)
        return fail(FAIL_WRITE_ALLOWED, "memcpy_dtod into a READ mapping worked");
    if (dtod_result != first_result)
        return fail(FAIL_VMM, "memcpy_dtod failed with %d, memcpy_htod with %d", dtod_result,
                    first_result);
    if (read_rc != RM_OK)
        return fail(FAIL_VMM, "memcpy_dtod out of a READ mapping failed");
    printf("write-refused %d %d\n", first_rc, first_result);
    fflush(stdout);
    return 0;
}

static int run_vmm_import(rm_cuda_driver *driver, const char *library, int argc, char **argv)
{
    if (argc < 5)
        return fail(FAIL_USAGE, "vmm-import LIB SIZE SEED [flags]");
    size_t size = strtoull(argv[3], NULL, 10);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    int fd = fake_cuda_recv_fd(VMM_SOCKET);
    if (fd < 0)
        return fail(FAIL_VMM, "receiving the descriptor: %s", strerror(errno));
    CUmemGenericAllocationHandle handle;
    int32_t rc = rm_cuda_driver_vmm_import_fd(driver, 0, fd, &handle, OWNER);
    close(fd);
    if (rc != RM_OK)
        return fail(FAIL_VMM, "vmm_import_fd");
    CUdeviceptr pointer;
    if (rm_cuda_driver_vmm_map(driver, 0, handle, size, false, &pointer, OWNER) != RM_OK)
        return fail(FAIL_VMM, "vmm_map READ");
    int result = check_bytes(driver, pointer, size, seed);
    if (result != 0)
        return result;
    if (has_flag(argc, argv, "--write-fails") && (result = vmm_writes_refused(driver, pointer)) != 0)
        return result;
    if ((result = check_bytes(driver, pointer, size, seed)) != 0)
        return result;
    printf("ready\n");
    fflush(stdout);
    if (has_flag(argc, argv, "--hold")) {
        char line[64];
        while (fgets(line, sizeof line, stdin) != NULL && strncmp(line, "exit", 4) != 0) {
            if (strncmp(line, "check", 5) == 0) {
                if ((result = check_bytes(driver, pointer, size, seed)) != 0)
                    return result;
                printf("read-ok\n");
                fflush(stdout);
            }
        }
    }
    if (rm_cuda_driver_vmm_unmap(driver, 0, pointer, size, OWNER) != RM_OK ||
        rm_cuda_driver_vmm_release(driver, 0, handle, OWNER) != RM_OK)
        return fail(FAIL_VMM, "unmap or release");
    if (fake_cuda_counter(library, "@vmm_live") != 0 ||
        fake_cuda_counter(library, "@vmm_mapped") != 0 ||
        fake_cuda_counter(library, "@vmm_reserved") != 0 || fake_cuda_vmm_memfds() != 0 ||
        fake_cuda_counter(library, "@legacy") != 0)
        return fail(FAIL_COUNTERS, "VMM memory left after unmap and release, or a legacy call");
    printf("done\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return fail(FAIL_USAGE, "usage: cuda_peer MODE LIB ...");
    const char *mode = argv[1];
    const char *library = argv[2];
    rm_cuda_driver *driver;
    if (rm_cuda_driver_open(library, OWNER, &driver) != RM_OK)
        return fail(FAIL_OPEN_DRIVER, "rm_cuda_driver_open(%s)", library);
    int rc;
    if (strcmp(mode, "export") == 0 && argc == 5)
        rc = run_export(driver, strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    else if (strcmp(mode, "import") == 0)
        rc = run_import(driver, library, argc, argv);
    else if (strcmp(mode, "ordinal") == 0 && argc == 4)
        rc = run_ordinal(driver, argv[3]);
    else if (strcmp(mode, "event") == 0 && argc == 4)
        rc = run_event(driver, argv[3]);
    else if (strcmp(mode, "meminfo") == 0 && argc == 3)
        rc = run_meminfo(driver);
    else if (strcmp(mode, "vmm-export") == 0 && argc == 5)
        rc = run_vmm_export(driver, strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    else if (strcmp(mode, "vmm-import") == 0)
        rc = run_vmm_import(driver, library, argc, argv);
    else
        rc = fail(FAIL_USAGE, "unknown mode %s", mode);
    rm_cuda_driver_release(driver);
    return rc;
}
