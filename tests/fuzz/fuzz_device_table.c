/* Fuzz target: a context's device table (plugin/tensor/cuda/cuda_table.h)
 * and its control segment scribbled over by another process of the same
 * user, between calls of the owner and of two importers.
 *
 * Both segments are 0600 files shared read-write with every importer, so
 * any process of the user can write anything into them. The plugin's
 * promise is that owner and importers then get documented error codes,
 * never a crash, a hang, or a pointer into memory they did not map. The
 * harness maps both segments read-write and plays that process.
 *
 * The device is the test-only fake driver (tests/fake_cuda/, named by
 * cuda.driver; its path is FUZZ_FAKE_CUDA, set by meson): device memory
 * is /dev/shm, so a device pointer is a host address whose mapping can be
 * checked in /proc/self/maps. Three contexts of one namespace:
 *   O  the owner, made afresh for every input (so every input starts from
 *      a new table): allocates four tensors (three in one 2 MiB block, one
 *      with a block of its own), records an event on one, exports all;
 *   I  an importer in this process: same-process imports take the owner's
 *      pointer from the table's row (the driver refuses to open one's own
 *      handle);
 *   C  an importer in a child process forked before CUDA is touched and
 *      driven over a pipe: real IPC opens of the fake's handles.
 * Before the script I holds two tensors and C two.
 *
 * The input is a script of at most 48 operations, an opcode byte (% 20)
 * and its arguments (zeros once the input runs out):
 *   0  table bytes       u16 offset, u8 length (% 16 + 1), bytes
 *   1  block row field   u8 row (% 4), u8 field (% 11), how, u64
 *      (generation, live, openers, wanted, size, owner_address, uuid
 *      halves, handle_kind, flags, a handle word)
 *   2  slot row field    u8 slot (% 8), u8 field (% 8), how, u64
 *      (block, block_generation, event_ready, event_generation,
 *      owner_event, event handle words)
 *   3  table header word u8 word (% 4), how, u64
 *   4  control slot word u8 slot (% 8), u8 word (% 8), how, u64
 *   5  control header word  u8 word (fields and holders), how, u64
 *   6  O tensor_allocate u8 size class     7  O tensor_release u8
 *   8  O tensor_record u8                  9  I tensor_import u8, u8 flags
 *  10  I tensor_release u8                11  I tensor_wait u8, u8 host
 *  12  C tensor_import u8, u8 flags       13  C tensor_release u8
 *  14  C tensor_wait u8, u8 host          15  to_dlpack u8 who, u8 handle
 *  16  tensor_info and a read of the first and last byte, I and C, u8
 *  17  tensor_reclaim u8 who              18  pool_stats and shm_list u8 who
 *  19  a forged descriptor: u8 descriptor, u16 offset delta (x 256),
 *      u8 who; its slot's binding rewritten to match, then imported
 * ("how": 0 set, 1 xor, 2 add one, 3 or, 4 and-not.) Every call must
 * return a code documented for it, with a message when it fails; every
 * imported handle's bytes must lie inside one mapping of the fake's
 * device memory (/dev/shm/fakecu.*) of the importing process, and be
 * readable; nothing may crash or hang.
 *
 * Afterwards all handles are released, O is destroyed (its table goes,
 * or to the process's limbo while the importers still have handles open),
 * I and C reclaim (they forget the retired table) and the harness clears
 * what a scribble left that would keep the limbo entry alive (openers and
 * holder bits). An importer that still has anything mapped is made anew
 * (counted). So inputs stay independent.
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cuda_table.h"
#include "descriptor.h"
#include "error.h"
#include "fuzz_common.h"
#include "shm_control.h"
#include "shm_segment.h"

#ifndef FUZZ_FAKE_CUDA
#error "FUZZ_FAKE_CUDA: the path of the fake libcuda.so.1 (tests/fuzz/meson.build)"
#endif

#define MAX_HANDLES 16
#define MAX_DESCRIPTORS 24
#define MAX_OPERATIONS 48
#define MAX_SCANS 3
#define MAX_DLPACK 8
#define ROWS 4u
#define SLOTS 8u

static const rm_plugin_v1 *vt;
static char ns[48];
static rm_config_entry entries[6];
static rm_context *owner, *importer;

/* The scribbler's mappings of O's table and control segment. */
static rm_cuda_table table;
static rm_control control;
static uint32_t table_rows; /* its block rows, as the owner made it */

static rm_tensor *owner_handles[MAX_HANDLES], *importer_handles[MAX_HANDLES];
static size_t owner_count, importer_count, child_count;
static uint8_t descriptors[MAX_DESCRIPTORS][RM_TENSOR_DESCRIPTOR_SIZE];
static size_t descriptor_count;
static int scans;
static rm_dl_managed_tensor *managed[MAX_DLPACK];
static size_t managed_count;

static uint64_t inputs, importer_rebuilds, child_rebuilds, owner_errors, importer_errors,
    child_errors;

/* ---- codes -------------------------------------------------------------- */

static bool documented(int32_t rc, const int32_t *codes)
{
    for (; *codes != 1; codes++)
        if (rc == *codes)
            return true;
    return false;
}

static const int32_t allocate_codes[] = {RM_OK, RM_E_QUOTA_EXCEEDED, RM_E_NO_MEMORY,
                                         RM_E_DEVICE_UNAVAILABLE, RM_E_SYSTEM, 1};
static const int32_t import_codes[] = {RM_OK,
                                       RM_E_INVALID_DESCRIPTOR,
                                       RM_E_STALE_DESCRIPTOR,
                                       RM_E_QUOTA_EXCEEDED,
                                       RM_E_NO_MEMORY,
                                       RM_E_SYSTEM,
                                       RM_E_DEVICE_UNAVAILABLE,
                                       RM_E_INVALID_ARGUMENT,
                                       1};
static const int32_t ok_codes[] = {RM_OK, 1};
static const int32_t record_codes[] = {RM_OK, RM_E_INVALID_ARGUMENT, RM_E_DEVICE_UNAVAILABLE,
                                       RM_E_SYSTEM, RM_E_NO_MEMORY, 1};
static const int32_t wait_codes[] = {RM_OK, RM_E_STALE_DESCRIPTOR, RM_E_INVALID_ARGUMENT,
                                     RM_E_INVALID_DESCRIPTOR, RM_E_DEVICE_UNAVAILABLE,
                                     RM_E_SYSTEM, RM_E_NO_MEMORY, 1};
/* The header lists RM_E_NO_MEMORY, and STALE_DESCRIPTOR for device tensors
 * whose exporter is gone. */
static const int32_t dlpack_codes[] = {RM_OK, RM_E_NO_MEMORY, RM_E_STALE_DESCRIPTOR, 1};
static const int32_t reclaim_codes[] = {RM_OK, RM_E_SYSTEM, 1};
static const int32_t list_codes[] = {RM_OK, RM_E_BUFFER_TOO_SMALL, RM_E_SYSTEM,
                                     RM_E_NO_MEMORY, 1};

/* A violation as text (empty: none), so that the child can report it. */
static char violation[512];

static int32_t check_code(rm_context *context, int32_t rc, const int32_t *codes,
                          const char *call, uint64_t *errors)
{
    if (violation[0] != '\0')
        return rc;
    if (!documented(rc, codes)) {
        snprintf(violation, sizeof violation, "%s: undocumented code %s (%s)", call,
                 vt->error_name(rc), vt->context_last_error(context));
    } else if (rc != RM_OK) {
        const char *message = vt->context_last_error(context);
        if (message == NULL || message[0] == '\0')
            snprintf(violation, sizeof violation, "%s returned %s without a message", call,
                     vt->error_name(rc));
        (*errors)++;
    }
    return rc;
}

static void raise_violation(const char *who)
{
    if (violation[0] != '\0')
        fuzz_fail("%s: %s", who, violation);
}

static int32_t checked(rm_context *context, int32_t rc, const int32_t *codes, const char *call)
{
    check_code(context, rc, codes, call, context == owner ? &owner_errors : &importer_errors);
    raise_violation(context == owner ? "owner" : "importer");
    return rc;
}

/* [data, data + nbytes) inside one mapping of the fake's device memory
 * (or, for nbytes 0, data inside one), and its first and last byte read. */
static void check_mapped(const char *who, const void *data, uint64_t nbytes)
{
    if (violation[0] != '\0')
        return;
    uintptr_t start = (uintptr_t)data, end = start + (nbytes ? nbytes : 1);
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL) {
        snprintf(violation, sizeof violation, "cannot read /proc/self/maps");
        return;
    }
    char line[512];
    bool inside = false;
    while (!inside && fgets(line, sizeof line, maps) != NULL) {
        unsigned long low = 0, high = 0;
        char path[256] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %255s", &low, &high, path) < 2)
            continue;
        inside = start >= low && end <= high && end > start &&
                 strncmp(path, "/dev/shm/fakecu.", 16) == 0;
    }
    fclose(maps);
    if (!inside) {
        snprintf(violation, sizeof violation,
                 "%s: a handle's %llu bytes at %p are not inside device memory it mapped", who,
                 (unsigned long long)nbytes, data);
        return;
    }
    volatile const uint8_t *bytes = data;
    (void)bytes[0];
    (void)bytes[(nbytes ? nbytes : 1) - 1];
}

static void check_handle(rm_context *context, rm_tensor *tensor, const char *who,
                         uint64_t *errors)
{
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    if (check_code(context, vt->tensor_info(context, tensor, &info), ok_codes, "tensor_info",
                   errors) != RM_OK)
        return;
    if (info.device.device_type != 2 && violation[0] == '\0')
        snprintf(violation, sizeof violation, "%s: an import is not a device tensor", who);
    check_mapped(who, info.data, info.nbytes);
}

static void forge(uint8_t which, uint16_t delta, uint8_t *out)
{
    rm_descriptor d;
    const char *why = NULL;
    memcpy(out, descriptors[which % descriptor_count], RM_TENSOR_DESCRIPTOR_SIZE);
    if (!rm_descriptor_decode(out, &d, &why))
        return;
    d.offset += (uint64_t)delta * 256;
    rm_descriptor_encode(&d, out);
    if (d.slot < control.slot_count)
        atomic_store(&control.slots[d.slot].offset, d.offset);
}

/* ---- the child importer ------------------------------------------------- */

enum { C_IMPORT = 1, C_RELEASE, C_WAIT, C_TOUCH, C_DLPACK, C_RECLAIM, C_SETTLE, C_STATS };

typedef struct child_request {
    uint8_t op, a, b, pad;
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
} child_request;

typedef struct child_reply {
    int32_t rc;
    uint32_t count;
    uint64_t errors;
    char violation[512];
} child_reply;

static int to_child = -1, from_child = -1;
static pid_t child_pid;

static void full_io(int fd, void *buffer, size_t size, bool write_it)
{
    uint8_t *at = buffer;
    while (size > 0) {
        ssize_t n = write_it ? write(fd, at, size) : read(fd, at, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (write_it)
                fuzz_fail("the child importer stopped reading");
            fuzz_fail("the child importer died (its stderr says why)");
        }
        at += n;
        size -= (size_t)n;
    }
}

static bool child_serve(child_request *request, child_reply *reply, rm_context **context,
                        rm_tensor **handles, size_t *count)
{
    violation[0] = '\0';
    uint64_t errors = 0;
    int32_t rc = RM_OK;
    switch (request->op) {
    case C_IMPORT: {
        if (*count >= MAX_HANDLES)
            break;
        rm_tensor *tensor = NULL;
        uint64_t flags = (request->a & 1) ? RM_TENSOR_IMPORT_WRITABLE : 0;
        if (request->a & 2) {
            char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
            rm_descriptor_to_text(request->descriptor, text);
            rc = vt->tensor_import_text(*context, text, flags, &tensor);
        } else {
            rc = vt->tensor_import(*context, request->descriptor, RM_TENSOR_DESCRIPTOR_SIZE,
                                   flags, &tensor);
        }
        check_code(*context, rc, import_codes, "child tensor_import", &errors);
        if (rc == RM_OK) {
            handles[(*count)++] = tensor;
            check_handle(*context, tensor, "child", &errors);
        }
        break;
    }
    case C_RELEASE:
        if (*count == 0)
            break;
        request->a %= *count;
        check_code(*context, vt->tensor_release(*context, handles[request->a]), ok_codes,
                   "child tensor_release", &errors);
        handles[request->a] = handles[--*count];
        break;
    case C_WAIT:
        if (*count == 0)
            break;
        check_code(*context,
                   vt->tensor_wait(*context, handles[request->a % *count], NULL,
                                   (request->b & 1) ? RM_TENSOR_WAIT_HOST : 0),
                   wait_codes, "child tensor_wait", &errors);
        break;
    case C_TOUCH:
        if (*count > 0)
            check_handle(*context, handles[request->a % *count], "child", &errors);
        break;
    case C_DLPACK: {
        if (*count == 0)
            break;
        rm_dl_managed_tensor_versioned *m = NULL;
        rc = vt->tensor_to_dlpack_versioned(*context, handles[request->a % *count], &m);
        check_code(*context, rc, dlpack_codes, "child tensor_to_dlpack_versioned", &errors);
        if (rc == RM_OK)
            m->deleter(m);
        break;
    }
    case C_RECLAIM: {
        rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
        check_code(*context, vt->tensor_reclaim(*context, &report), reclaim_codes,
                   "child tensor_reclaim", &errors);
        break;
    }
    case C_SETTLE:
        while (*count > 0) {
            check_code(*context, vt->tensor_release(*context, handles[*count - 1]), ok_codes,
                       "child tensor_release", &errors);
            (*count)--;
        }
        break;
    case C_STATS: {
        /* After the owner's destroy: its table is forgotten at reclaim,
         * or the context is made anew. */
        (void)vt->tensor_reclaim(*context, NULL);
        rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
        (void)vt->tensor_pool_stats(*context, &stats);
        reply->count = stats.cuda_handles_open != 0 || stats.live_tensors != 0;
        if (reply->count != 0) {
            vt->context_destroy(*context);
            *context = fuzz_context(entries, sizeof entries / sizeof entries[0]);
        }
        break;
    }
    default:
        return false;
    }
    reply->rc = rc;
    reply->errors = errors;
    snprintf(reply->violation, sizeof reply->violation, "%s", violation);
    return true;
}

static void child_main(int in, int out)
{
    rm_context *context = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    rm_tensor *handles[MAX_HANDLES];
    size_t count = 0;
    for (;;) {
        child_request request;
        size_t got = 0;
        while (got < sizeof request) {
            ssize_t n = read(in, (uint8_t *)&request + got, sizeof request - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                _exit(0);
            got += (size_t)n;
        }
        child_reply reply = {0};
        if (!child_serve(&request, &reply, &context, handles, &count))
            _exit(0);
        full_io(out, &reply, sizeof reply, true);
    }
}

static child_reply child_call(uint8_t op, uint8_t a, uint8_t b, const uint8_t *descriptor)
{
    child_request request = {.op = op, .a = a, .b = b};
    if (descriptor != NULL)
        memcpy(request.descriptor, descriptor, RM_TENSOR_DESCRIPTOR_SIZE);
    full_io(to_child, &request, sizeof request, true);
    child_reply reply;
    full_io(from_child, &reply, sizeof reply, false);
    child_errors += reply.errors;
    if (reply.violation[0] != '\0')
        fuzz_fail("child importer: %s", reply.violation);
    return reply;
}

static void child_import(const uint8_t *descriptor, uint8_t flags)
{
    if (child_count >= MAX_HANDLES)
        return;
    if (child_call(C_IMPORT, flags, 0, descriptor).rc == RM_OK)
        child_count++;
}

static void start_child(void)
{
    int down[2], up[2];
    FUZZ_CHECK(pipe(down) == 0 && pipe(up) == 0, "pipe: %s", strerror(errno));
    child_pid = fork();
    FUZZ_CHECK(child_pid >= 0, "fork: %s", strerror(errno));
    if (child_pid == 0) {
        close(down[1]);
        close(up[0]);
        child_main(down[0], up[1]);
    }
    close(down[0]);
    close(up[1]);
    to_child = down[1];
    from_child = up[0];
}

static void stop_child(void)
{
    if (to_child < 0)
        return;
    close(to_child);
    close(from_child);
    to_child = from_child = -1;
    (void)waitpid(child_pid, NULL, 0);
}

/* ---- the owner ---------------------------------------------------------- */

static const uint64_t size_classes[] = {1, 300, 65536, 3u << 20, 4096, 100000};

static void owner_allocate(uint8_t size_class)
{
    if (owner_count >= MAX_HANDLES || descriptor_count >= MAX_DESCRIPTORS)
        return;
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){RM_DTYPE_UINT, 8, 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)size_classes[size_class % 6];
    spec.session = size_class % 2;
    snprintf(spec.device, sizeof spec.device, "cuda:0");
    rm_tensor *tensor = NULL;
    if (checked(owner, vt->tensor_allocate(owner, &spec, &tensor), allocate_codes,
                "tensor_allocate") != RM_OK)
        return;
    owner_handles[owner_count++] = tensor;
    checked(owner,
            vt->tensor_export(owner, tensor, descriptors[descriptor_count],
                              RM_TENSOR_DESCRIPTOR_SIZE),
            ok_codes, "tensor_export");
    descriptor_count++;
}

static void map_segments(void)
{
    rm_descriptor d;
    const char *why = NULL;
    FUZZ_CHECK(rm_descriptor_decode(descriptors[0], &d, &why), "setup: %s", why);
    char table_name[RM_SEGMENT_NAME_MAX], control_name[RM_SEGMENT_NAME_MAX];
    FUZZ_CHECK(rm_segment_name_format(table_name, RM_SEGMENT_CUDA_TABLE, ns,
                                      (pid_t)d.owner_pid, d.pool_id) &&
                   rm_segment_name_format(control_name, RM_SEGMENT_CUDA_CONTROL, ns,
                                          (pid_t)d.owner_pid, d.pool_id),
               "setup: segment names");
    char path[160];
    snprintf(path, sizeof path, RM_SEGMENT_DIRECTORY "%s", table_name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "setup: %s: %s", path, strerror(errno));
    struct stat st;
    FUZZ_CHECK(fstat(fd, &st) == 0, "setup: fstat");
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    FUZZ_CHECK(base != MAP_FAILED, "setup: mmap of %s", path);
    const rm_cuda_table_header *header = base;
    rm_cuda_table_lay_out(&table, base, (size_t)st.st_size, header->block_capacity);
    table_rows = header->block_capacity;
    FUZZ_CHECK(header->block_capacity >= ROWS && header->slot_count >= SLOTS,
               "setup: %u rows, %u slots", header->block_capacity, header->slot_count);
    static const int token;
    FUZZ_CHECK(rm_control_open(control_name, &token, &control) == RM_OK, "setup: %s: %s",
               control_name, rm_error_last(&token));
}

static void unmap_segments(void)
{
    if (table.header != NULL)
        munmap(table.header, table.mapped_bytes);
    table.header = NULL;
    if (control.header != NULL)
        rm_control_close(&control);
    control.header = NULL;
}

/* ---- one input ---------------------------------------------------------- */

static void prepare(void)
{
    owner_count = importer_count = child_count = descriptor_count = managed_count = 0;
    scans = 0;
    owner = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    for (uint8_t size_class = 0; size_class < 4; size_class++)
        owner_allocate(size_class);
    FUZZ_CHECK(owner_count == 4, "prepare: the owner allocated %zu of 4 (%s)", owner_count,
               vt->context_last_error(owner));
    /* The allocations swept the limbo: what the last input's owner left
     * there is gone, now that settle() cleared what kept it. */
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    FUZZ_CHECK(vt->tensor_pool_stats(owner, &stats) == RM_OK, "tensor_pool_stats");
    FUZZ_CHECK(stats.cuda_blocks_orphaned == 0, "%llu retired tables stay in limbo",
               (unsigned long long)stats.cuda_blocks_orphaned);
    checked(owner, vt->tensor_record(owner, owner_handles[1], NULL), record_codes,
            "tensor_record");
    map_segments();
    for (size_t i = 0; i < 2; i++) {
        rm_tensor *tensor = NULL;
        checked(importer,
                vt->tensor_import(importer, descriptors[i], RM_TENSOR_DESCRIPTOR_SIZE, 0,
                                  &tensor),
                import_codes, "tensor_import");
        FUZZ_CHECK(tensor != NULL, "prepare: the importer's import failed: %s",
                   vt->context_last_error(importer));
        importer_handles[importer_count++] = tensor;
        child_import(descriptors[i + 1], 0);
    }
    FUZZ_CHECK(child_count == 2, "prepare: the child imported %zu of 2", child_count);
}

static void settle(void)
{
    for (size_t i = 0; i < managed_count; i++)
        managed[i]->deleter(managed[i]);
    managed_count = 0;
    child_call(C_SETTLE, 0, 0, NULL);
    child_count = 0;
    while (importer_count > 0)
        checked(importer, vt->tensor_release(importer, importer_handles[--importer_count]),
                ok_codes, "tensor_release");
    while (owner_count > 0)
        checked(owner, vt->tensor_release(owner, owner_handles[--owner_count]), ok_codes,
                "tensor_release");
    /* Retired: the importers forget the table at their reclaim. */
    vt->context_destroy(owner);
    owner = NULL;
    if (child_call(C_STATS, 0, 0, NULL).count != 0)
        child_rebuilds++;
    (void)vt->tensor_reclaim(importer, NULL);
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    FUZZ_CHECK(vt->tensor_pool_stats(importer, &stats) == RM_OK, "tensor_pool_stats");
    if (stats.cuda_handles_open != 0 || stats.live_tensors != 0) {
        importer_rebuilds++;
        vt->context_destroy(importer);
        importer = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    }
    /* What a scribble left that keeps a retired table in limbo: opener and
     * holder bits of nobody. The next device call frees it. */
    for (uint32_t b = 0; b < table_rows; b++)
        atomic_store(&table.blocks[b].openers, 0);
    for (uint32_t s = 0; s < control.slot_count; s++) {
        uint64_t state = atomic_load(&control.slots[s].state);
        atomic_store(&control.slots[s].state, state & ~(uint64_t)0xffffffffu);
    }
    unmap_segments();
}

/* ---- the scribbler ------------------------------------------------------ */

/* Changes the `width`-byte field at `at` the way `how` says (plain
 * stores, as another process would make). */
static void scribble(void *at, size_t width, uint8_t how, uint64_t value)
{
    uint64_t word = 0;
    memcpy(&word, at, width);
    switch (how % 5) {
    case 0: word = value; break;
    case 1: word ^= value; break;
    case 2: word += 1; break;
    case 3: word |= value; break;
    case 4: word &= ~value; break;
    }
    memcpy(at, &word, width);
}

static void scribble_block_row(uint8_t row, uint8_t field, uint8_t how, uint64_t value)
{
    static const struct {
        size_t offset, width;
    } fields[] = {
        {offsetof(rm_cuda_block_row, generation), 4},
        {offsetof(rm_cuda_block_row, live), 4},
        {offsetof(rm_cuda_block_row, openers), 4},
        {offsetof(rm_cuda_block_row, wanted), 4},
        {offsetof(rm_cuda_block_row, size), 8},
        {offsetof(rm_cuda_block_row, owner_address), 8},
        {offsetof(rm_cuda_block_row, uuid), 8},
        {offsetof(rm_cuda_block_row, uuid) + 8, 8},
        {offsetof(rm_cuda_block_row, handle_kind), 4},
        {offsetof(rm_cuda_block_row, flags), 4},
        {offsetof(rm_cuda_block_row, handle), 8},
    };
    size_t f = field % 11, offset = fields[f].offset;
    if (f == 10)
        offset += 8 * ((field / 11) % 8);
    scribble((uint8_t *)&table.blocks[row % ROWS] + offset, fields[f].width, how, value);
}

static void scribble_slot_row(uint8_t slot, uint8_t field, uint8_t how, uint64_t value)
{
    static const struct {
        size_t offset, width;
    } fields[] = {
        {offsetof(rm_cuda_slot_row, block), 4},
        {offsetof(rm_cuda_slot_row, block_generation), 4},
        {offsetof(rm_cuda_slot_row, event_ready), 4},
        {offsetof(rm_cuda_slot_row, event_generation), 4},
        {offsetof(rm_cuda_slot_row, owner_event), 8},
        {offsetof(rm_cuda_slot_row, event_handle), 8},
        {offsetof(rm_cuda_slot_row, event_handle) + 8, 8},
        {offsetof(rm_cuda_slot_row, event_handle) + 56, 8},
    };
    size_t f = field % 8;
    scribble((uint8_t *)&table.slots[slot % SLOTS] + fields[f].offset, fields[f].width, how,
             value);
}

static void reclaim(rm_context *context, bool child)
{
    if (scans++ >= MAX_SCANS)
        return;
    if (child) {
        child_call(C_RECLAIM, 0, 0, NULL);
        return;
    }
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    checked(context, vt->tensor_reclaim(context, &report), reclaim_codes, "tensor_reclaim");
}

static void stats_of(rm_context *context)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    checked(context, vt->tensor_pool_stats(context, &stats), ok_codes, "tensor_pool_stats");
    if (scans++ >= MAX_SCANS)
        return;
    rm_shm_pool_info rows[4];
    uint32_t count = 0;
    checked(context, vt->shm_list(context, rows, sizeof rows[0], 4, &count), list_codes,
            "shm_list");
}

static void dlpack(uint8_t who, uint8_t which)
{
    rm_context *context = who & 1 ? importer : owner;
    rm_tensor **handles = who & 1 ? importer_handles : owner_handles;
    size_t count = who & 1 ? importer_count : owner_count;
    if (who & 2) {
        child_call(C_DLPACK, which, 0, NULL);
        return;
    }
    if (count == 0 || managed_count >= MAX_DLPACK)
        return;
    rm_dl_managed_tensor *m = NULL;
    if (checked(context, vt->tensor_to_dlpack(context, handles[which % count], &m),
                dlpack_codes, "tensor_to_dlpack") != RM_OK)
        return;
    if (who & 4)
        m->deleter(m); /* at once; otherwise at the end of the input */
    else
        managed[managed_count++] = m;
}

static void run_script(fuzz_script *s)
{
    for (int n = 0; n < MAX_OPERATIONS && s->left > 0; n++) {
        uint8_t op = fuzz_take8(s) % 20;
        switch (op) {
        case 0: {
            size_t offset = (size_t)fuzz_take(s, 2) % table.mapped_bytes;
            size_t length = fuzz_take8(s) % 16 + 1;
            for (size_t i = 0; i < length; i++) {
                uint8_t byte = fuzz_take8(s);
                if (offset + i < table.mapped_bytes)
                    ((uint8_t *)table.header)[offset + i] = byte;
            }
            break;
        }
        case 1: {
            uint8_t row = fuzz_take8(s), field = fuzz_take8(s), how = fuzz_take8(s);
            scribble_block_row(row, field, how, fuzz_take(s, 8));
            break;
        }
        case 2: {
            uint8_t slot = fuzz_take8(s), field = fuzz_take8(s), how = fuzz_take8(s);
            scribble_slot_row(slot, field, how, fuzz_take(s, 8));
            break;
        }
        case 3: {
            uint8_t word = fuzz_take8(s) % 4, how = fuzz_take8(s);
            scribble((uint8_t *)table.header + 8 * word, 8, how, fuzz_take(s, 8));
            break;
        }
        case 4: {
            uint8_t slot = fuzz_take8(s) % SLOTS, word = fuzz_take8(s) % 8, how = fuzz_take8(s);
            scribble((uint8_t *)&control.slots[slot] + 8 * word, 8, how, fuzz_take(s, 8));
            break;
        }
        case 5: {
            uint8_t word = fuzz_take8(s), how = fuzz_take8(s);
            if (8 * (size_t)word + 8 <= RM_CONTROL_HEADER_BYTES)
                scribble((uint8_t *)control.header + 8 * word, 8, how, fuzz_take(s, 8));
            else
                (void)fuzz_take(s, 8);
            break;
        }
        case 6: owner_allocate(fuzz_take8(s)); break;
        case 7:
            if (owner_count > 0) {
                size_t i = fuzz_take8(s) % owner_count;
                checked(owner, vt->tensor_release(owner, owner_handles[i]), ok_codes,
                        "tensor_release");
                owner_handles[i] = owner_handles[--owner_count];
            }
            break;
        case 8:
            if (owner_count > 0)
                checked(owner,
                        vt->tensor_record(owner, owner_handles[fuzz_take8(s) % owner_count], NULL),
                        record_codes, "tensor_record");
            break;
        case 9: {
            uint8_t which = fuzz_take8(s), flags = fuzz_take8(s);
            if (importer_count >= MAX_HANDLES)
                break;
            rm_tensor *tensor = NULL;
            uint64_t import_flags = (flags & 1) ? RM_TENSOR_IMPORT_WRITABLE : 0;
            int32_t rc;
            if (flags & 2) {
                char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
                rm_descriptor_to_text(descriptors[which % descriptor_count], text);
                rc = vt->tensor_import_text(importer, text, import_flags, &tensor);
            } else {
                rc = vt->tensor_import(importer, descriptors[which % descriptor_count],
                                       RM_TENSOR_DESCRIPTOR_SIZE, import_flags, &tensor);
            }
            if (checked(importer, rc, import_codes, "tensor_import") == RM_OK) {
                importer_handles[importer_count++] = tensor;
                check_handle(importer, tensor, "importer", &importer_errors);
                raise_violation("importer");
            }
            break;
        }
        case 10:
            if (importer_count > 0) {
                size_t i = fuzz_take8(s) % importer_count;
                checked(importer, vt->tensor_release(importer, importer_handles[i]), ok_codes,
                        "tensor_release");
                importer_handles[i] = importer_handles[--importer_count];
            }
            break;
        case 11: {
            uint8_t which = fuzz_take8(s), host = fuzz_take8(s);
            if (importer_count > 0)
                checked(importer,
                        vt->tensor_wait(importer, importer_handles[which % importer_count],
                                        NULL, (host & 1) ? RM_TENSOR_WAIT_HOST : 0),
                        wait_codes, "tensor_wait");
            break;
        }
        case 12: {
            uint8_t which = fuzz_take8(s), flags = fuzz_take8(s);
            child_import(descriptors[which % descriptor_count], flags);
            break;
        }
        case 13:
            if (child_count > 0) {
                child_call(C_RELEASE, fuzz_take8(s), 0, NULL);
                child_count--;
            }
            break;
        case 14: {
            uint8_t which = fuzz_take8(s), host = fuzz_take8(s);
            child_call(C_WAIT, which, host, NULL);
            break;
        }
        case 15: {
            uint8_t who = fuzz_take8(s);
            dlpack(who, fuzz_take8(s));
            break;
        }
        case 16: {
            uint8_t which = fuzz_take8(s);
            if (importer_count > 0) {
                check_handle(importer, importer_handles[which % importer_count], "importer",
                             &importer_errors);
                raise_violation("importer");
            }
            child_call(C_TOUCH, which, 0, NULL);
            break;
        }
        case 17: {
            uint8_t who = fuzz_take8(s) % 3;
            reclaim(who == 0 ? owner : importer, who == 2);
            break;
        }
        case 18: stats_of(fuzz_take8(s) & 1 ? importer : owner); break;
        case 19: {
            uint8_t which = fuzz_take8(s);
            uint16_t delta = (uint16_t)fuzz_take(s, 2);
            uint8_t who = fuzz_take8(s);
            uint8_t forged[RM_TENSOR_DESCRIPTOR_SIZE];
            forge(which, delta, forged);
            if (who & 1) {
                child_import(forged, 0);
            } else if (importer_count < MAX_HANDLES) {
                rm_tensor *tensor = NULL;
                if (checked(importer,
                            vt->tensor_import(importer, forged, RM_TENSOR_DESCRIPTOR_SIZE, 0,
                                              &tensor),
                            import_codes, "tensor_import") == RM_OK) {
                    importer_handles[importer_count++] = tensor;
                    check_handle(importer, tensor, "importer", &importer_errors);
                    raise_violation("importer");
                }
            }
            break;
        }
        }
    }
}

/* ---- seeds -------------------------------------------------------------- */

typedef struct seed_buffer {
    uint8_t bytes[4096];
    size_t used;
} seed_buffer;

static void put(seed_buffer *b, uint64_t value, int bytes)
{
    for (int i = 0; i < bytes; i++)
        b->bytes[b->used++] = (uint8_t)(value >> (8 * i));
}

/* The calls after a scribble in most seeds: imports of every descriptor
 * by both importers, waits, touches, releases, reclaims. */
static void put_calls(seed_buffer *b)
{
    static const uint8_t calls[] = {9, 0, 0, 9, 1, 2, 9, 3, 1, 12, 0, 0, 12, 3, 2, 12, 1, 0,
                                    11, 0, 1, 11, 2, 0, 14, 0, 1, 14, 2, 0, 16, 0, 16, 1,
                                    16, 2, 15, 1, 0, 15, 2, 1, 8, 1, 18, 0, 10, 0, 13, 0,
                                    7, 0, 6, 1, 17, 2, 17, 1, 17, 0, 16, 3};
    memcpy(b->bytes + b->used, calls, sizeof calls);
    b->used += sizeof calls;
}

static void write_seed(const char *dir, const char *name, seed_buffer *b)
{
    fuzz_write_seed(dir, name, b->bytes, b->used);
    b->used = 0;
}

static void write_seeds(const char *dir)
{
    static const char *block_fields[] = {"generation", "live",   "openers",  "wanted",
                                         "size",       "address", "uuid",    "uuid2",
                                         "kind",       "flags",  "handle"};
    static const uint64_t block_values[] = {1, 1, 0xfffffffe, 1, 1ull << 40, 1ull << 20,
                                            0xff, 0xff, 1, 1, 0xff};
    static const uint8_t block_hows[] = {1, 4, 0, 0, 0, 1, 1, 1, 1, 0, 1};
    seed_buffer b = {.used = 0};
    char name[64];
    put_calls(&b);
    write_seed(dir, "calls-only", &b);
    for (uint8_t f = 0; f < 11; f++) {
        for (uint8_t row = 0; row < 2; row++) {
            put(&b, 1, 1);
            put(&b, row, 1);
            put(&b, f, 1);
            put(&b, block_hows[f], 1);
            put(&b, block_values[f], 8);
        }
        put_calls(&b);
        snprintf(name, sizeof name, "block-%s", block_fields[f]);
        write_seed(dir, name, &b);
    }
    static const char *slot_fields[] = {"block", "block-generation", "event-ready",
                                        "event-generation", "owner-event", "event-handle",
                                        "event-handle2", "event-handle-key"};
    static const uint64_t slot_values[] = {1, 1, 1, 1, 0x1000, 0xff, 0xff, 0xff};
    for (uint8_t f = 0; f < 8; f++) {
        for (uint8_t slot = 0; slot < 4; slot++) {
            put(&b, 2, 1);
            put(&b, slot, 1);
            put(&b, f, 1);
            put(&b, f == 2 ? 0 : 1, 1);
            put(&b, slot_values[f], 8);
        }
        put_calls(&b);
        snprintf(name, sizeof name, "slot-%s", slot_fields[f]);
        write_seed(dir, name, &b);
    }
    for (uint8_t word = 0; word < 4; word++) {
        put(&b, 3, 1);
        put(&b, word, 1);
        put(&b, 1, 1);
        put(&b, 0x10001, 8);
        put_calls(&b);
        snprintf(name, sizeof name, "header-word-%u", word);
        write_seed(dir, name, &b);
    }
    /* A forged offset with a block row that claims a larger size. */
    put(&b, 1, 1);
    put(&b, 0, 1);
    put(&b, 4, 1);
    put(&b, 0, 1);
    put(&b, 1ull << 30, 8);
    put(&b, 19, 1);
    put(&b, 0, 1);
    put(&b, 0x4000, 2);
    put(&b, 0, 1);
    put(&b, 19, 1);
    put(&b, 1, 1);
    put(&b, 0x4000, 2);
    put(&b, 1, 1);
    put_calls(&b);
    write_seed(dir, "forged-offset-large-row", &b);
    /* Control slots without holders, then the owner's calls. */
    for (uint8_t slot = 0; slot < 4; slot++) {
        put(&b, 4, 1);
        put(&b, slot, 1);
        put(&b, 0, 1);
        put(&b, 4, 1);
        put(&b, 0xffffffff, 8);
    }
    put(&b, 7, 1);
    put(&b, 0, 1);
    put(&b, 6, 1);
    put(&b, 0, 1);
    put_calls(&b);
    write_seed(dir, "control-no-holders", &b);
}

/* ---- libFuzzer ---------------------------------------------------------- */

static void finish(void)
{
    fprintf(stderr,
            "fuzz_device_table: %llu inputs; importers made anew: %llu here, %llu in the "
            "child; calls that returned an error: owner %llu, importer %llu, child %llu\n",
            (unsigned long long)inputs, (unsigned long long)importer_rebuilds,
            (unsigned long long)child_rebuilds, (unsigned long long)owner_errors,
            (unsigned long long)importer_errors, (unsigned long long)child_errors);
    stop_child();
    vt->context_destroy(importer);
    fuzz_remove_namespace(ns);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vt = fuzz_vtable();
    fuzz_namespace("dev", ns, sizeof ns);
    entries[0] = (rm_config_entry){"shm.namespace", ns};
    entries[1] = (rm_config_entry){"cuda.driver", FUZZ_FAKE_CUDA};
    entries[2] = (rm_config_entry){"cuda.block_bytes", "2M"};
    entries[3] = (rm_config_entry){"cuda.pool_bytes", "16M"};
    entries[4] = (rm_config_entry){"shm.max_tensors", "64"};
    entries[5] = (rm_config_entry){"log.level", "error"};
    /* The child first, before this process touches CUDA (the driver
     * refuses a forked child of an initialised process). */
    start_child();
    importer = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    if (fuzz_seed_directory() != NULL) {
        write_seeds(fuzz_seed_directory());
        finish();
        exit(0);
    }
    atexit(finish);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inputs++;
    prepare();
    fuzz_script s = {.at = data, .left = size};
    run_script(&s);
    settle();
    return 0;
}
