/* Fuzz target: tensor descriptors (binary, text, inline) imported into
 * real contexts whose pool holds live tensors.
 *
 * Set up once: an owner context A (its own shm.namespace) whose pool holds
 * live tensors of several dtypes, ranks and layouts, filled with a
 * pattern, plus two stale descriptors (a freed slot since reused, and a
 * freed slot still free); an importer context B of the same namespace that
 * maps the pool and holds the first tensor throughout. So forged fields
 * meet real slots: the right pool, live and dead generations, real
 * offsets.
 *
 * Input: a mode byte, then bytes.
 *   bit 0     import into A (the owner's own pool) instead of B
 *   bit 1     RM_TENSOR_IMPORT_WRITABLE
 *   bits 2-3  0: tensor_import of the bytes (their length is the size)
 *             1: tensor_import_text of the bytes as a string
 *             2: the first 200 bytes in text form (bytes after them are
 *                appended to the text), tensor_import_text
 *             3: tensor_import of the bytes twice (a second handle)
 *   bit 4     rebase: a pool descriptor gets the live pool's id, owner pid
 *             and start time (so that seeds written by another process,
 *             and mutations, reach the real slots)
 *   bit 5     reseal: recompute the checksum (so that mutated fields get
 *             past it and meet the pool's checks)
 *   bit 6     template: the bytes are [index, (offset, value)...]: start
 *             from known descriptor `index` (live, stale, inline) and set
 *             byte `offset` to `value` for each pair
 *   bit 7     add an unknown import flag
 *
 * Checked on every input:
 *  - a refusal is a documented code with a message; RM_E_INVALID_ARGUMENT
 *    exactly when an unknown flag was passed; nothing is returned;
 *  - a copy of a live descriptor is accepted, and an accepted pool
 *    descriptor is byte for byte one that the owner exported for a live
 *    tensor (nothing forged gets through); its handle's view is that
 *    tensor's memory (the owner's pointer for A, the same bytes for B, a
 *    write visible to the owner when writable); an inline import is a
 *    copy of the bytes that came with it;
 *  - importing twice answers the same; every handle is releasable;
 *  - afterwards nothing is held or mapped that was not before: the control
 *    segment's slots hold exactly the owner's and B's holds, no pending
 *    release, no heap tensor, B still maps one pool and A none.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor.h"
#include "descriptor_forge.h"
#include "error.h"
#include "fuzz_common.h"
#include "rm_build_config.h"
#include "shm_control.h"
#include "shm_segment.h"

#define LIVE_COUNT 7
#define KNOWN_MAX (2 * LIVE_COUNT + 2)
#define UNKNOWN_IMPORT_FLAG ((uint64_t)1 << 7)

typedef struct fixture_spec {
    const char *name;
    rm_dtype dtype;
    uint32_t ndim;
    int64_t shape[RM_TENSOR_MAX_DIMS];
    int64_t strides[RM_TENSOR_MAX_DIMS]; /* all 0: contiguous */
    uint64_t session;
} fixture_spec;

/* Every dtype family, ranks 0 to 8, an empty tensor, a strided one, a
 * vector type: the layouts whose checks a forged field must pass. */
static const fixture_spec specs[LIVE_COUNT] = {
    {"f32-2x3", {RM_DTYPE_FLOAT, 32, 1}, 2, {2, 3}, {0}, 7},
    {"u8-4096", {RM_DTYPE_UINT, 8, 1}, 1, {4096}, {0}, 1},
    {"i64-scalar", {RM_DTYPE_INT, 64, 1}, 0, {0}, {0}, 0},
    {"c128-3x0", {RM_DTYPE_COMPLEX, 128, 1}, 2, {3, 0}, {0}, 2},
    {"bool-5-stride3", {RM_DTYPE_BOOL, 8, 1}, 1, {5}, {3}, 3},
    {"f16x4-2x2x2", {RM_DTYPE_FLOAT, 16, 4}, 3, {2, 2, 2}, {0}, 4},
    {"bf16-rank8", {RM_DTYPE_BFLOAT, 16, 1}, 8, {2, 1, 1, 3, 1, 1, 1, 2}, {0}, UINT64_MAX},
};

typedef struct live_tensor {
    rm_tensor *handle;       /* A's */
    rm_tensor_info info;
    uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
    uint8_t *inline_form;    /* descriptor + data */
    uint64_t inline_size;
    rm_descriptor decoded;
} live_tensor;

typedef struct known_descriptor {
    const char *name;
    const uint8_t *bytes;
    size_t size;
} known_descriptor;

static const rm_plugin_v1 *vt;
static char ns[48];
static rm_context *owner, *importer;
static live_tensor live[LIVE_COUNT];
static rm_tensor *importer_hold; /* B's handle on live[0] */
static uint8_t stale_reused[RM_TENSOR_DESCRIPTOR_SIZE], stale_free[RM_TENSOR_DESCRIPTOR_SIZE];
static known_descriptor known[KNOWN_MAX];
static size_t known_count;
static rm_control control; /* the harness's own mapping of A's control segment */
static uint32_t importer_bit;
static uint64_t pool_id;
static uint32_t owner_pid;
static uint64_t owner_start_time;

/* ---- the fixture ------------------------------------------------------ */

static rm_tensor *allocate(const fixture_spec *spec)
{
    rm_tensor_spec s = RM_STRUCT_INIT(rm_tensor_spec);
    s.dtype = spec->dtype;
    s.ndim = spec->ndim;
    memcpy(s.shape, spec->shape, sizeof s.shape);
    if (spec->strides[0] != 0) {
        memcpy(s.strides, spec->strides, sizeof s.strides);
        s.flags |= RM_TENSOR_ALLOC_STRIDED;
    }
    s.session = spec->session;
    s.flags |= RM_TENSOR_ALLOC_SHARED_ONLY;
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_allocate(owner, &s, &tensor);
    FUZZ_CHECK(rc == RM_OK, "fixture: tensor_allocate(%s): %s: %s", spec->name,
               vt->error_name(rc), vt->context_last_error(owner));
    return tensor;
}

static void export_binary(rm_tensor *tensor, uint8_t *out)
{
    int32_t rc = vt->tensor_export(owner, tensor, out, RM_TENSOR_DESCRIPTOR_SIZE);
    FUZZ_CHECK(rc == RM_OK, "fixture: tensor_export: %s", vt->error_name(rc));
}

static void build_fixture(void)
{
    /* With cuda-ipc (when built), a descriptor forged into kind 3 goes
     * down the device backend's import: it checks the exporter's device
     * table before it needs a driver, and the driver named here does not
     * exist, so nothing outside /dev/shm is touched. */
    const rm_config_entry entries[] = {
        {"features", RM_HAVE_CUDA_IPC ? "shared-memory,cuda-ipc" : "shared-memory"},
        {"shm.namespace", ns},
        {"shm.pool_bytes", "4M"},
        {"shm.max_tensors", "64"},
        {"log.level", "error"},
        {"cuda.driver", "/nonexistent/libcuda.so.1"},
    };
    owner = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    importer = fuzz_context(entries, sizeof entries / sizeof entries[0]);

    /* Freed, and its slot taken again by live[0]: a descriptor of an older
     * generation. */
    rm_tensor *gone = allocate(&specs[0]);
    export_binary(gone, stale_reused);
    FUZZ_CHECK(vt->tensor_release(owner, gone) == RM_OK, "fixture: release");
    for (size_t i = 0; i < LIVE_COUNT; i++) {
        live_tensor *t = &live[i];
        t->handle = allocate(&specs[i]);
        t->info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
        FUZZ_CHECK(vt->tensor_info(owner, t->handle, &t->info) == RM_OK, "fixture: info");
        for (uint64_t b = 0; b < t->info.nbytes; b++)
            ((uint8_t *)t->info.data)[b] = (uint8_t)(b * 31 + i * 7 + 1);
        export_binary(t->handle, t->binary);
        const char *why = NULL;
        FUZZ_CHECK(rm_descriptor_decode(t->binary, &t->decoded, &why), "fixture: %s", why);
        uint64_t needed = 0;
        (void)vt->tensor_export_inline(owner, t->handle, NULL, 0, &needed);
        t->inline_form = malloc(needed);
        t->inline_size = needed;
        FUZZ_CHECK(t->inline_form != NULL &&
                       vt->tensor_export_inline(owner, t->handle, t->inline_form, needed,
                                                &needed) == RM_OK,
                   "fixture: tensor_export_inline");
    }
    /* Freed, its slot free: a descriptor of the slot's last generation. */
    rm_tensor *freed = allocate(&specs[1]);
    export_binary(freed, stale_free);
    FUZZ_CHECK(vt->tensor_release(owner, freed) == RM_OK, "fixture: release");

    int32_t rc = vt->tensor_import(importer, live[0].binary, RM_TENSOR_DESCRIPTOR_SIZE, 0,
                                   &importer_hold);
    FUZZ_CHECK(rc == RM_OK, "fixture: B imports: %s: %s", vt->error_name(rc),
               vt->context_last_error(importer));

    for (size_t i = 0; i < LIVE_COUNT; i++)
        known[known_count++] =
            (known_descriptor){specs[i].name, live[i].binary, RM_TENSOR_DESCRIPTOR_SIZE};
    for (size_t i = 0; i < LIVE_COUNT; i++)
        known[known_count++] =
            (known_descriptor){specs[i].name, live[i].inline_form, live[i].inline_size};
    known[known_count++] = (known_descriptor){"stale-reused", stale_reused, sizeof stale_reused};
    known[known_count++] = (known_descriptor){"stale-free", stale_free, sizeof stale_free};

    pool_id = live[0].decoded.pool_id;
    owner_pid = live[0].decoded.owner_pid;
    owner_start_time = live[0].decoded.owner_start_time;
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    FUZZ_CHECK(vt->tensor_pool_stats(owner, &stats) == RM_OK, "fixture: pool_stats");
    char control_name[RM_SEGMENT_NAME_MAX];
    FUZZ_CHECK(rm_segment_name_sibling(stats.pool_name, RM_SEGMENT_POOL_CONTROL, control_name),
               "fixture: %s is not a pool's name", stats.pool_name);
    static const int token;
    rc = rm_control_open(control_name, &token, &control);
    FUZZ_CHECK(rc == RM_OK, "fixture: cannot map %s: %s", control_name, rm_error_last(&token));
    uint64_t state = atomic_load(&control.slots[live[0].decoded.slot].state);
    importer_bit = rm_control_mask(state) & ~RM_CONTROL_OWNER_BIT;
    FUZZ_CHECK(importer_bit != 0 && (importer_bit & (importer_bit - 1)) == 0,
               "fixture: B's hold is not one bit: 0x%x", importer_bit);
}

static void destroy_fixture(void)
{
    if (control.header != NULL)
        rm_control_close(&control);
    if (importer_hold != NULL)
        (void)vt->tensor_release(importer, importer_hold);
    importer_hold = NULL;
    for (size_t i = 0; i < LIVE_COUNT; i++) {
        if (live[i].handle != NULL)
            (void)vt->tensor_release(owner, live[i].handle);
        free(live[i].inline_form);
        memset(&live[i], 0, sizeof live[i]);
    }
    vt->context_destroy(importer);
    vt->context_destroy(owner);
    importer = owner = NULL;
    fuzz_remove_namespace(ns);
}

/* ---- the checks ------------------------------------------------------- */

static const live_tensor *live_with_bytes(const uint8_t *bytes)
{
    for (size_t i = 0; i < LIVE_COUNT; i++)
        if (memcmp(live[i].binary, bytes, RM_TENSOR_DESCRIPTOR_SIZE) == 0)
            return &live[i];
    return NULL;
}

/* What an import of `bytes` (`size` of them, or a text form of them) must
 * give when it is genuine: a live descriptor, or a well-formed inline one
 * with its data. -1: no prediction (a forgery the plugin must refuse or,
 * for inline, may take). */
static int genuine(const uint8_t *bytes, size_t size, bool text)
{
    if (size < RM_TENSOR_DESCRIPTOR_SIZE)
        return 0;
    if (live_with_bytes(bytes) != NULL)
        return text || size == RM_TENSOR_DESCRIPTOR_SIZE;
    rm_descriptor d;
    const char *why = NULL;
    if (!text && rm_descriptor_decode(bytes, &d, &why) && d.kind == RM_DESCRIPTOR_KIND_INLINE)
        return size - RM_TENSOR_DESCRIPTOR_SIZE == d.nbytes;
    return 0;
}

static bool documented_refusal(int32_t rc)
{
    /* FEATURE_UNAVAILABLE: kind 3 in a build without cuda-ipc;
     * DEVICE_UNAVAILABLE: a kind 3 that reached the (missing) driver. */
    return rc == RM_E_INVALID_DESCRIPTOR || rc == RM_E_STALE_DESCRIPTOR ||
           rc == RM_E_INVALID_ARGUMENT || rc == RM_E_QUOTA_EXCEEDED || rc == RM_E_NO_MEMORY ||
           rc == RM_E_SYSTEM || rc == RM_E_FEATURE_UNAVAILABLE || rc == RM_E_DEVICE_UNAVAILABLE;
}

/* A successful import: what the handle says and points at. `bytes` is
 * the binary form that was imported (`size` of them for tensor_import). */
static void check_handle(rm_context *context, rm_tensor *handle, const uint8_t *bytes,
                         uint64_t size, bool writable)
{
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    FUZZ_CHECK(vt->tensor_info(context, handle, &info) == RM_OK, "tensor_info of an import");
    rm_descriptor d;
    const char *why = NULL;
    FUZZ_CHECK(rm_descriptor_decode(bytes, &d, &why), "accepted a descriptor that does not "
                                                      "decode: %s", why);
    FUZZ_CHECK(info.nbytes == d.nbytes && info.ndim == d.ndim &&
                   memcmp(&info.dtype, &d.dtype, sizeof d.dtype) == 0 &&
                   info.session == d.session,
               "tensor_info differs from the descriptor");
    for (uint32_t i = 0; i < RM_TENSOR_MAX_DIMS; i++)
        FUZZ_CHECK(info.shape[i] == (i < d.ndim ? d.shape[i] : 0) &&
                       info.strides[i] == (i < d.ndim ? d.strides[i] : 0),
                   "tensor_info's dimension %u differs from the descriptor", i);
    FUZZ_CHECK((info.flags & RM_TENSOR_IMPORTED) != 0, "an import without IMPORTED");
    if (d.kind == RM_DESCRIPTOR_KIND_INLINE) {
        FUZZ_CHECK(size == RM_TENSOR_DESCRIPTOR_SIZE + d.nbytes,
                   "inline import of %llu data bytes from %llu bytes",
                   (unsigned long long)d.nbytes, (unsigned long long)size);
        FUZZ_CHECK((info.flags & RM_TENSOR_WRITABLE) && !(info.flags & RM_TENSOR_SHAREABLE),
                   "inline import flags 0x%llx", (unsigned long long)info.flags);
        FUZZ_CHECK(d.nbytes == 0 ||
                       memcmp(info.data, bytes + RM_TENSOR_DESCRIPTOR_SIZE, d.nbytes) == 0,
                   "inline import is not a copy of its data");
        return;
    }
    const live_tensor *t = live_with_bytes(bytes);
    FUZZ_CHECK(t != NULL, "accepted a pool descriptor that no live tensor was exported as "
                          "(slot %u, generation %u, offset %llu, nbytes %llu)",
               d.slot, d.generation, (unsigned long long)d.offset,
               (unsigned long long)d.nbytes);
    FUZZ_CHECK(((info.flags & RM_TENSOR_WRITABLE) != 0) == writable,
               "writable is 0x%llx, asked %d", (unsigned long long)info.flags, writable);
    bool own = context == owner;
    FUZZ_CHECK(((info.flags & RM_TENSOR_OWNED) != 0) == own && (info.flags & RM_TENSOR_SHAREABLE),
               "pool import flags 0x%llx", (unsigned long long)info.flags);
    if (own)
        FUZZ_CHECK(info.data == t->info.data, "the owner's import points elsewhere");
    else if (t->info.nbytes > 0)
        FUZZ_CHECK(memcmp(info.data, t->info.data, t->info.nbytes) == 0,
                   "the view does not show the tensor's bytes");
    if (writable && t->info.nbytes > 0 && !own) {
        volatile uint8_t *view = info.data;
        uint8_t before = view[0];
        view[0] = (uint8_t)~before;
        FUZZ_CHECK(((volatile uint8_t *)t->info.data)[0] == (uint8_t)~before,
                   "a write through a writable view does not reach the owner's memory");
        view[0] = before;
    }
}

/* Nothing held or mapped beyond the fixture's own. */
static void check_quiescent(void)
{
    rm_tensor_pool_stats a = RM_STRUCT_INIT(rm_tensor_pool_stats);
    rm_tensor_pool_stats b = RM_STRUCT_INIT(rm_tensor_pool_stats);
    FUZZ_CHECK(vt->tensor_pool_stats(owner, &a) == RM_OK &&
                   vt->tensor_pool_stats(importer, &b) == RM_OK,
               "tensor_pool_stats");
    FUZZ_CHECK(a.live_tensors == LIVE_COUNT && a.heap_tensors == 0 && a.pools_mapped == 0,
               "owner: %llu live, %llu heap tensors, %llu pools mapped",
               (unsigned long long)a.live_tensors, (unsigned long long)a.heap_tensors,
               (unsigned long long)a.pools_mapped);
    FUZZ_CHECK(b.heap_tensors == 0 && b.pools_mapped == 1 && b.live_tensors == 0,
               "importer: %llu heap tensors, %llu pools mapped",
               (unsigned long long)b.heap_tensors, (unsigned long long)b.pools_mapped);
    FUZZ_CHECK(atomic_load(&control.header->pending) == 0, "a release is pending");
    for (uint32_t s = 0; s < control.slot_count; s++) {
        uint32_t mask = rm_control_mask(atomic_load(&control.slots[s].state));
        uint32_t expected = 0;
        for (size_t i = 0; i < LIVE_COUNT; i++)
            if (live[i].decoded.slot == s)
                expected = RM_CONTROL_OWNER_BIT | (i == 0 ? importer_bit : 0);
        FUZZ_CHECK(mask == expected, "slot %u is held by 0x%x, expected 0x%x", s, mask,
                   expected);
    }
}

/* ---- one input -------------------------------------------------------- */

typedef struct attempt {
    rm_context *context;
    uint64_t flags;
    int form;              /* bits 2-3 of the mode */
    const uint8_t *bytes;  /* the binary form */
    size_t size;
    const char *text;      /* forms 1 and 2 */
} attempt;

/* Outcomes by code (index -code; 0: accepted), printed at exit: a run
 * shows how many inputs got how far. */
#define OUTCOMES 32
static uint64_t outcomes[OUTCOMES];

static int32_t import_once(const attempt *a, rm_tensor **out)
{
    rm_error_clear();
    int32_t rc;
    if (a->form == 1 || a->form == 2)
        rc = vt->tensor_import_text(a->context, a->text, a->flags, out);
    else
        rc = vt->tensor_import(a->context, a->bytes, a->size, a->flags, out);
    outcomes[-rc < OUTCOMES && rc <= 0 ? -rc : OUTCOMES - 1]++;
    return rc;
}

static void print_outcomes(void)
{
    fprintf(stderr, "fuzz_descriptor: imports accepted %llu", (unsigned long long)outcomes[0]);
    for (int code = 1; code < OUTCOMES; code++)
        if (outcomes[code] != 0)
            fprintf(stderr, ", %s %llu", vt->error_name(-code),
                    (unsigned long long)outcomes[code]);
    fputc('\n', stderr);
}

static void run(const attempt *a)
{
    bool unknown_flag = (a->flags & UNKNOWN_IMPORT_FLAG) != 0;
    bool writable = (a->flags & RM_TENSOR_IMPORT_WRITABLE) != 0;
    /* The binary bytes the plugin will decode, when they are known. */
    uint8_t decoded_text[RM_TENSOR_DESCRIPTOR_SIZE];
    const uint8_t *bytes = a->bytes;
    uint64_t size = a->size;
    bool text = a->form == 1 || a->form == 2;
    if (text) {
        const char *why = NULL;
        if (rm_descriptor_from_text(a->text, decoded_text, &why)) {
            bytes = decoded_text;
            size = sizeof decoded_text;
        } else {
            bytes = NULL;
        }
    }
    int expect_ok = bytes != NULL && !unknown_flag ? genuine(bytes, size, text) : 0;
    if (text && bytes != NULL && rm_descriptor_kind_of(bytes) == RM_DESCRIPTOR_KIND_INLINE)
        expect_ok = 0;

    rm_tensor *handles[2] = {NULL, NULL};
    int32_t first = RM_OK;
    int tries = a->form == 3 ? 2 : 1;
    for (int i = 0; i < tries; i++) {
        int32_t rc = import_once(a, &handles[i]);
        if (i == 0)
            first = rc;
        else
            FUZZ_CHECK(rc == first, "a second import gave %s, the first %s",
                       vt->error_name(rc), vt->error_name(first));
        if (rc != RM_OK) {
            FUZZ_CHECK(handles[i] == NULL, "a refused import returned a handle");
            FUZZ_CHECK(documented_refusal(rc), "import: undocumented code %s",
                       vt->error_name(rc));
            FUZZ_CHECK((rc == RM_E_INVALID_ARGUMENT) == unknown_flag ||
                           (unknown_flag && rc == RM_E_INVALID_DESCRIPTOR),
                       "import: %s with unknown flags %d (%s)", vt->error_name(rc),
                       unknown_flag, vt->context_last_error(a->context));
            FUZZ_CHECK(expect_ok != 1 || rc == RM_E_NO_MEMORY,
                       "a genuine descriptor was refused: %s: %s", vt->error_name(rc),
                       vt->context_last_error(a->context));
            fuzz_check_message(a->context, rc, "tensor_import");
            continue;
        }
        FUZZ_CHECK(!unknown_flag, "accepted an unknown import flag");
        FUZZ_CHECK(bytes != NULL, "accepted text that does not decode");
        check_handle(a->context, handles[i], bytes, size, writable);
    }
    for (int i = 0; i < tries; i++)
        if (handles[i] != NULL)
            FUZZ_CHECK(vt->tensor_release(a->context, handles[i]) == RM_OK, "tensor_release");
}

/* ---- seeds ------------------------------------------------------------ */

enum {
    M_OWNER = 1, M_WRITABLE = 2, M_TEXT_RAW = 1 << 2, M_TEXT_OF = 2 << 2, M_TWICE = 3 << 2,
    M_REBASE = 1 << 4, M_RESEAL = 1 << 5, M_TEMPLATE = 1 << 6, M_UNKNOWN_FLAG = 1 << 7
};

static void seed(const char *dir, const char *name, uint8_t mode, const uint8_t *body,
                 size_t size)
{
    uint8_t *bytes = malloc(size + 1);
    FUZZ_CHECK(bytes != NULL, "out of memory");
    bytes[0] = mode;
    memcpy(bytes + 1, body, size);
    fuzz_write_seed(dir, name, bytes, size + 1);
    free(bytes);
}

static void write_seeds(const char *dir)
{
    char name[96];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    for (size_t i = 0; i < LIVE_COUNT; i++) {
        const char *tensor = specs[i].name;
        snprintf(name, sizeof name, "binary-%s", tensor);
        seed(dir, name, M_REBASE | M_RESEAL, live[i].binary, sizeof live[i].binary);
        snprintf(name, sizeof name, "binary-own-%s", tensor);
        seed(dir, name, M_OWNER | M_REBASE | M_RESEAL, live[i].binary, sizeof live[i].binary);
        snprintf(name, sizeof name, "binary-twice-writable-%s", tensor);
        seed(dir, name, M_TWICE | M_WRITABLE | M_REBASE | M_RESEAL, live[i].binary,
             sizeof live[i].binary);
        snprintf(name, sizeof name, "binary-as-exported-%s", tensor);
        seed(dir, name, 0, live[i].binary, sizeof live[i].binary);
        snprintf(name, sizeof name, "text-of-%s", tensor);
        seed(dir, name, M_TEXT_OF | M_REBASE | M_RESEAL, live[i].binary,
             sizeof live[i].binary);
        rm_descriptor_to_text(live[i].binary, text);
        snprintf(name, sizeof name, "text-as-exported-%s", tensor);
        seed(dir, name, M_TEXT_RAW, (const uint8_t *)text, strlen(text));
        snprintf(name, sizeof name, "inline-%s", tensor);
        seed(dir, name, 0, live[i].inline_form, live[i].inline_size);
        uint8_t pick = (uint8_t)i;
        snprintf(name, sizeof name, "template-%s", tensor);
        seed(dir, name, M_TEMPLATE | M_RESEAL, &pick, 1);
    }
    seed(dir, "binary-stale-reused", M_REBASE | M_RESEAL, stale_reused, sizeof stale_reused);
    seed(dir, "binary-stale-free", M_OWNER | M_REBASE | M_RESEAL, stale_free,
         sizeof stale_free);
    /* Forgeries that reach the pool: each changes one field of live[0]
     * (slot, generation, offset, nbytes, session, shape) and reseals. */
    static const struct {
        const char *name;
        uint8_t offset, value;
    } forgeries[] = {
        {"forged-slot", DF_SLOT, 63},      {"forged-generation", DF_GENERATION, 9},
        {"forged-offset", DF_OFFSET + 1, 1}, {"forged-nbytes", DF_NBYTES, 4},
        {"forged-session", DF_SESSION, 8}, {"forged-shape", DF_SHAPE, 1},
    };
    for (size_t i = 0; i < sizeof forgeries / sizeof forgeries[0]; i++) {
        uint8_t body[3] = {0, forgeries[i].offset, forgeries[i].value};
        seed(dir, forgeries[i].name, M_TEMPLATE | M_RESEAL, body, sizeof body);
    }
    uint8_t version_one[RM_TENSOR_DESCRIPTOR_SIZE];
    memcpy(version_one, live[0].binary, sizeof version_one);
    df_put(version_one, DF_VERSION, 2, 1);
    seed(dir, "binary-version-1", M_RESEAL, version_one, sizeof version_one);
    seed(dir, "binary-unknown-flag", M_UNKNOWN_FLAG | M_REBASE | M_RESEAL, live[0].binary,
         sizeof live[0].binary);
    seed(dir, "text-garbage", M_TEXT_RAW, (const uint8_t *)"rmt1.not-base64!", 16);
}

/* ---- libFuzzer -------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vt = fuzz_vtable();
    fuzz_namespace("desc", ns, sizeof ns);
    build_fixture();
    if (fuzz_seed_directory() != NULL) {
        write_seeds(fuzz_seed_directory());
        destroy_fixture();
        exit(0);
    }
    atexit(destroy_fixture);
    atexit(print_outcomes);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    const uint8_t *body = data + 1;
    size_t body_size = size - 1;

    /* The binary form, in a heap buffer of exactly its size. */
    uint8_t *bytes;
    size_t bytes_size;
    if ((mode & M_TEMPLATE) != 0 && body_size > 0) {
        const known_descriptor *k = &known[body[0] % known_count];
        bytes_size = k->size;
        bytes = malloc(bytes_size);
        FUZZ_CHECK(bytes != NULL, "out of memory");
        memcpy(bytes, k->bytes, bytes_size);
        for (size_t i = 1; i + 1 < body_size; i += 2)
            bytes[body[i] % bytes_size] = body[i + 1];
    } else {
        bytes_size = body_size;
        bytes = malloc(bytes_size > 0 ? bytes_size : 1);
        FUZZ_CHECK(bytes != NULL, "out of memory");
        if (body_size > 0)
            memcpy(bytes, body, body_size);
    }
    if (bytes_size >= RM_TENSOR_DESCRIPTOR_SIZE) {
        if ((mode & M_REBASE) != 0 && bytes[DF_KIND] == RM_DESCRIPTOR_KIND_POOL) {
            df_put(bytes, DF_POOL, 8, pool_id);
            df_put(bytes, DF_PID, 4, owner_pid);
            df_put(bytes, DF_START, 8, owner_start_time);
        }
        if ((mode & M_RESEAL) != 0)
            df_put(bytes, DF_CHECKSUM, 8, rm_descriptor_checksum(bytes));
    }

    attempt a = {
        .context = (mode & M_OWNER) != 0 ? owner : importer,
        .flags = ((mode & M_WRITABLE) != 0 ? RM_TENSOR_IMPORT_WRITABLE : 0) |
                 ((mode & M_UNKNOWN_FLAG) != 0 ? UNKNOWN_IMPORT_FLAG : 0),
        .form = (mode >> 2) & 3,
        .bytes = bytes,
        .size = bytes_size,
    };
    char *text = NULL;
    if (a.form == 1) {
        text = fuzz_string_copy(bytes, bytes_size);
    } else if (a.form == 2) {
        /* The text form of the first 200 bytes, then whatever followed
         * them (a suffix the plugin must refuse). */
        uint8_t padded[RM_TENSOR_DESCRIPTOR_SIZE] = {0};
        memcpy(padded, bytes, bytes_size < sizeof padded ? bytes_size : sizeof padded);
        size_t tail = bytes_size > sizeof padded ? bytes_size - sizeof padded : 0;
        text = malloc(RM_TENSOR_DESCRIPTOR_TEXT_MAX + tail);
        FUZZ_CHECK(text != NULL, "out of memory");
        size_t length = rm_descriptor_to_text(padded, text);
        memcpy(text + length, bytes + sizeof padded, tail);
        text[length + tail] = '\0';
    }
    a.text = text;
    run(&a);
    check_quiescent();
    free(text);
    free(bytes);
    return 0;
}
