/* Every published size of every ABI struct, passed through the real shared
 * object the way hosts built against the 1.0, 1.1, 1.2, 1.3 and 1.4 headers
 * (and a newer one) pass them.
 *
 * The promise under test is the header's versioning policy: a struct of
 * any published size works; the plugin reads and writes only the bytes its
 * struct_size declares; a size below the oldest published one is
 * RM_E_STRUCT_SIZE with a message naming the struct. Host structs lie at
 * the end of a page followed by an inaccessible one, so reading past the
 * declared size faults; structs the plugin fills are surrounded by a
 * canary pattern that must survive. The sizes come from plugin/core/abi_sizes.h,
 * the table the plugin takes its minimums from (tests/abi checks it against
 * the layout): a sizeof() here would move with the header, which is the
 * mistake this suite exists to catch. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "abi_sizes.h"
#include "plugin_fixture.h"
#include "shm_cleanup.h"

/* ------------------------------------------------------------------------ */
/* The structs and their sizes                                              */
/* ------------------------------------------------------------------------ */

enum abi_struct_id {
    /* handed in by the host */
    NEGOTIATE_REQUEST,
    HOST_SERVICES,
    CONTEXT_OPTIONS,
    TENSOR_SPEC,
    /* filled by the plugin, one struct */
    CONTEXT_INFO,
    REGISTRY_METRICS,
    REGISTRY_RECLAIM_REPORT,
    TENSOR_INFO,
    TENSOR_POOL_STATS,
    RECLAIM_REPORT,
    CUDA_INFO,
    /* filled by the plugin, rows of info_struct_size bytes */
    MODEL_INFO,
    SHM_POOL_INFO,
    ABI_STRUCT_COUNT
};

enum direction { FROM_HOST, FILLED, ROWS };

#define PUBLISHED_VERSIONS 5
static const uint32_t published_versions[PUBLISHED_VERSIONS] = {
    RM_ABI_VERSION(1, 0), RM_ABI_VERSION(1, 1), RM_ABI_VERSION(1, 2), RM_ABI_VERSION(1, 3),
    RM_ABI_VERSION(1, 4)};

typedef struct abi_struct {
    const char *name;
    enum direction direction;
    uint64_t feature;                     /* capability the call needs, or 0 */
    size_t ours;                          /* sizeof in this header */
    size_t published[PUBLISHED_VERSIONS]; /* 0: not part of that version */
} abi_struct;

#define REGISTRY RM_FEATURE_MODEL_REGISTRY
#define SHM RM_FEATURE_SHARED_MEMORY

/* The published sizes of a struct that appeared in 1.0 (1.1, 1.2, 1.3),
 * one per published version: 0 for the versions before it. */
#define SINCE_1_0(NAME) \
    {NAME##_V1_0, NAME##_V1_1, NAME##_V1_2, NAME##_V1_3, NAME##_V1_4}
#define SINCE_1_1(NAME) {0, NAME##_V1_1, NAME##_V1_2, NAME##_V1_3, NAME##_V1_4}
#define SINCE_1_2(NAME) {0, 0, NAME##_V1_2, NAME##_V1_3, NAME##_V1_4}
#define SINCE_1_3(NAME) {0, 0, 0, NAME##_V1_3, NAME##_V1_4}

static const abi_struct structs[ABI_STRUCT_COUNT] = {
    [NEGOTIATE_REQUEST] = {"rm_negotiate_request", FROM_HOST, 0, sizeof(rm_negotiate_request),
                           SINCE_1_0(RM_NEGOTIATE_REQUEST_SIZE)},
    [HOST_SERVICES] = {"rm_host_services", FROM_HOST, 0, sizeof(rm_host_services),
                       SINCE_1_0(RM_HOST_SERVICES_SIZE)},
    [CONTEXT_OPTIONS] = {"rm_context_options", FROM_HOST, 0, sizeof(rm_context_options),
                         SINCE_1_0(RM_CONTEXT_OPTIONS_SIZE)},
    [TENSOR_SPEC] = {"rm_tensor_spec", FROM_HOST, SHM, sizeof(rm_tensor_spec),
                     SINCE_1_1(RM_TENSOR_SPEC_SIZE)},
    [CONTEXT_INFO] = {"rm_context_info", FILLED, 0, sizeof(rm_context_info),
                      SINCE_1_0(RM_CONTEXT_INFO_SIZE)},
    [REGISTRY_METRICS] = {"rm_registry_metrics", FILLED, REGISTRY, sizeof(rm_registry_metrics),
                          SINCE_1_0(RM_REGISTRY_METRICS_SIZE)},
    [REGISTRY_RECLAIM_REPORT] = {"rm_registry_reclaim_report", FILLED, REGISTRY,
                                 sizeof(rm_registry_reclaim_report),
                                 SINCE_1_2(RM_REGISTRY_RECLAIM_REPORT_SIZE)},
    [TENSOR_INFO] = {"rm_tensor_info", FILLED, SHM, sizeof(rm_tensor_info),
                     SINCE_1_1(RM_TENSOR_INFO_SIZE)},
    [TENSOR_POOL_STATS] = {"rm_tensor_pool_stats", FILLED, SHM, sizeof(rm_tensor_pool_stats),
                           SINCE_1_1(RM_TENSOR_POOL_STATS_SIZE)},
    [RECLAIM_REPORT] = {"rm_reclaim_report", FILLED, SHM, sizeof(rm_reclaim_report),
                        SINCE_1_1(RM_RECLAIM_REPORT_SIZE)},
    /* 1.4 appended where the model lives (352 -> 384 bytes). */
    [MODEL_INFO] = {"rm_model_info", ROWS, REGISTRY, sizeof(rm_model_info),
                    SINCE_1_0(RM_MODEL_INFO_SIZE)},
    [SHM_POOL_INFO] = {"rm_shm_pool_info", ROWS, SHM, sizeof(rm_shm_pool_info),
                       SINCE_1_1(RM_SHM_POOL_INFO_SIZE)},
    [CUDA_INFO] = {"rm_cuda_info", FILLED, 0, sizeof(rm_cuda_info),
                   SINCE_1_3(RM_CUDA_INFO_SIZE)},
};

/* The vtable, by the version a host negotiated. */
static const size_t plugin_v1_sizes[PUBLISHED_VERSIONS] = SINCE_1_0(RM_PLUGIN_V1_SIZE);

/* What a host built against a newer minor adds beyond our struct. */
#define NEWER_HOST_BYTES 32
#define NEWER_HOST_VERSION RM_ABI_VERSION(RM_ABI_MAJOR, RM_ABI_MINOR + 1)
/* Canary bytes after the last row or struct the host passes. */
#define TAIL_BYTES 64
/* Rows a ROWS case lists: two, so that the row stride is checked too. */
#define ROW_COUNT 2

enum size_kind { PUBLISHED, TOO_SMALL, NEWER_HOST };

static const char *const kind_names[] = {"published", "one byte below the oldest", "newer host"};

struct size_case {
    int id;
    int kind;
    uint32_t size;         /* the host's struct_size (rows: info_struct_size) */
    uint32_t host_version; /* the abi_version a host of that size writes */
};

/* Every published size of every struct of `direction`, the oldest minus
 * one, and a newer host's size; into `cases` (static: Criterion keeps the
 * array), their count returned. */
static size_t make_cases(enum direction direction, struct size_case *cases, size_t capacity)
{
    size_t count = 0;
    for (int id = 0; id < ABI_STRUCT_COUNT; id++) {
        const abi_struct *s = &structs[id];
        if (s->direction != direction)
            continue;
        int oldest = -1;
        for (int v = 0; v < PUBLISHED_VERSIONS; v++) {
            if (s->published[v] == 0)
                continue;
            if (oldest < 0)
                oldest = v;
            if (count < capacity)
                cases[count++] = (struct size_case){id, PUBLISHED, (uint32_t)s->published[v],
                                                    published_versions[v]};
        }
        if (count + 2 > capacity)
            abort(); /* a case array too small: make it larger */
        cases[count++] = (struct size_case){id, TOO_SMALL,
                                            (uint32_t)s->published[oldest] - 1,
                                            published_versions[oldest]};
        cases[count++] = (struct size_case){id, NEWER_HOST,
                                            (uint32_t)(s->ours + NEWER_HOST_BYTES),
                                            NEWER_HOST_VERSION};
    }
    return count;
}

/* ------------------------------------------------------------------------ */
/* Fixture: the plugin, a namespace per test                                */
/* ------------------------------------------------------------------------ */

static char ns[40];         /* this test's shm.namespace */
static char shm_prefix[48]; /* "rm.<ns>." */
static rm_plugin_negotiate_fn negotiate;

static void abi_sizes_init(void)
{
    fixture_load();
    void *symbol = dlsym(fixture_plugin.library, RM_PLUGIN_ENTRY_POINT);
    cr_assert_not_null(symbol);
    /* POSIX sanctions this conversion of dlsym's result. */
    memcpy(&negotiate, &symbol, sizeof negotiate);
    snprintf(ns, sizeof ns, "abi%ldx", (long)getpid());
    snprintf(shm_prefix, sizeof shm_prefix, "rm.%s.", ns);
}

static void abi_sizes_fini(void)
{
    fixture_close_all();
    shm_unlink_prefix(shm_prefix);
    fixture_unload();
}

TestSuite(abi_sizes, .init = abi_sizes_init, .fini = abi_sizes_fini, .timeout = 60);

static rm_context *open_context(void)
{
    rm_context *context = NULL;
    int32_t status = fixture_context(&context, (const char *[]){"shm.namespace", ns, NULL});
    cr_assert_eq(status, RM_OK, "context_create: %s: %s", vt->error_name(status),
                 vt->context_last_error(NULL));
    fixture_track(context);
    return context;
}

static void require_feature(const abi_struct *s)
{
    if ((vt->features_built & s->feature) != s->feature)
        cr_skip_test("%s needs a capability that was not built", s->name);
}

static uint32_t get_u32(const unsigned char *at)
{
    uint32_t value;
    memcpy(&value, at, sizeof value);
    return value;
}

static void put_u32(unsigned char *at, uint32_t value)
{
    memcpy(at, &value, sizeof value);
}

/* Position-dependent, so that a shifted copy does not look untouched. */
static unsigned char canary(size_t offset)
{
    return (unsigned char)(0xa5u ^ (offset * 29u));
}

static void fill_canary(unsigned char *bytes, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        bytes[i] = canary(i);
}

/* The first byte in [from, to) that is not the canary, or `to`. */
static size_t first_written(const unsigned char *bytes, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (bytes[i] != canary(i))
            return i;
    return to;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t oldest_size(const abi_struct *s)
{
    for (int v = 0; v < PUBLISHED_VERSIONS; v++)
        if (s->published[v] != 0)
            return s->published[v];
    return 0;
}

/* The refusal says which struct, the size it was given and (at the end)
 * the oldest size it accepts. */
static int message_names(const char *message, const abi_struct *s, uint32_t size)
{
    char expected[96];
    snprintf(expected, sizeof expected, "%s.struct_size %u", s->name, size);
    char minimum[32];
    int length = snprintf(minimum, sizeof minimum, " %zu", oldest_size(s));
    size_t message_length = strlen(message);
    return strstr(message, expected) != NULL && message_length >= (size_t)length &&
           strcmp(message + message_length - (size_t)length, minimum) == 0;
}

/* ------------------------------------------------------------------------ */
/* What a struct needs in order to be filled: models held, tensors, pools   */
/* ------------------------------------------------------------------------ */

typedef struct world {
    rm_context *context;
    rm_context *second; /* a second pool in the namespace: two shm_list rows */
    rm_model_handle *models[ROW_COUNT];
    rm_tensor *tensors[2];
} world;

static char models[ROW_COUNT][64];

static int32_t load_static_model(void *user, const char *key, rm_loaded_model *out)
{
    out->model = user;
    out->bytes = 64;
    return RM_OK;
}

static rm_tensor *allocate_tensor(rm_context *context)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){RM_DTYPE_FLOAT, 32, 1};
    spec.ndim = 2;
    spec.shape[0] = 4;
    spec.shape[1] = 8;
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY | RM_TENSOR_ALLOC_ZERO;
    rm_tensor *tensor = NULL;
    int32_t status = vt->tensor_allocate(context, &spec, &tensor);
    cr_assert_eq(status, RM_OK, "tensor_allocate: %s: %s", vt->error_name(status),
                 vt->context_last_error(context));
    return tensor;
}

static void world_open(world *w, int id)
{
    *w = (world){0};
    w->context = open_context();
    if (structs[id].feature == REGISTRY) {
        /* Held, so that rows do not age (idle_ns) between two listings. */
        for (int i = 0; i < ROW_COUNT; i++) {
            char key[32];
            snprintf(key, sizeof key, "abi-%d@cpu", i);
            void *model;
            int32_t status = vt->model_get_or_load(w->context, key, load_static_model,
                                                   models[i], &w->models[i], &model);
            cr_assert_eq(status, RM_OK, "%s: %s", key, vt->context_last_error(w->context));
        }
    }
    if (structs[id].feature == SHM) {
        w->tensors[0] = allocate_tensor(w->context);
        if (id == SHM_POOL_INFO) {
            w->second = open_context();
            w->tensors[1] = allocate_tensor(w->second);
        }
    }
}

static void world_close(world *w)
{
    for (int i = 0; i < ROW_COUNT; i++)
        if (w->models[i] != NULL)
            cr_expect_eq(vt->model_release(w->context, w->models[i]), RM_OK);
    if (w->tensors[0] != NULL)
        cr_expect_eq(vt->tensor_release(w->context, w->tensors[0]), RM_OK);
    if (w->tensors[1] != NULL)
        cr_expect_eq(vt->tensor_release(w->second, w->tensors[1]), RM_OK);
    if (w->second != NULL)
        fixture_close(w->second);
    fixture_close(w->context);
}

/* Calls the function that fills struct `id` into `out`; rows are
 * `row_size` bytes each, ROW_COUNT of them. */
static int32_t fill(world *w, int id, void *out, uint32_t row_size, uint32_t *count)
{
    switch (id) {
    case CONTEXT_INFO:
        return vt->context_info(w->context, out);
    case REGISTRY_METRICS:
        return vt->registry_metrics(w->context, out);
    case REGISTRY_RECLAIM_REPORT:
        return vt->registry_reclaim(w->context, out);
    case TENSOR_INFO:
        return vt->tensor_info(w->context, w->tensors[0], out);
    case TENSOR_POOL_STATS:
        return vt->tensor_pool_stats(w->context, out);
    case RECLAIM_REPORT:
        return vt->tensor_reclaim(w->context, out);
    case CUDA_INFO:
        return vt->cuda_info(w->context, out);
    case MODEL_INFO:
        return vt->registry_list(w->context, out, row_size, ROW_COUNT, count);
    case SHM_POOL_INFO:
        return vt->shm_list(w->context, out, row_size, ROW_COUNT, count);
    default:
        cr_assert_fail("struct %d is not filled by the plugin", id);
        return RM_E_INVALID_ARGUMENT;
    }
}

/* ------------------------------------------------------------------------ */
/* Structs the plugin fills                                                 */
/* ------------------------------------------------------------------------ */

ParameterizedTestParameters(abi_sizes, filled_structs_of_every_size)
{
    static struct size_case cases[64];
    return cr_make_param_array(struct size_case, cases, make_cases(FILLED, cases, 64));
}

/* Filled structs keep the host's struct_size and abi_version, and the
 * plugin writes the fields that fit: the same bytes as our own size gets,
 * cut at the host's size. */
ParameterizedTest(struct size_case *c, abi_sizes, filled_structs_of_every_size)
{
    const abi_struct *s = &structs[c->id];
    require_feature(s);
    world w;
    world_open(&w, c->id);

    /* Allocated, like the host's copy below: bytes with no declared type. */
    unsigned char *reference = calloc(1, s->ours);
    cr_assert_not_null(reference);
    put_u32(reference, (uint32_t)s->ours);
    put_u32(reference + 4, RM_ABI_VERSION_CURRENT);
    cr_assert_eq(fill(&w, c->id, reference, 0, NULL), RM_OK, "%s at our size: %s", s->name,
                 vt->context_last_error(w.context));

    size_t span = c->size + TAIL_BYTES;
    unsigned char *host = malloc(span);
    cr_assert_not_null(host);
    fill_canary(host, 0, span);
    put_u32(host, c->size);
    put_u32(host + 4, c->host_version);
    int32_t status = fill(&w, c->id, host, 0, NULL);
    const char *message = vt->context_last_error(w.context);

    cr_expect_eq(get_u32(host), c->size, "%s (%s): the host's struct_size is kept", s->name,
                 kind_names[c->kind]);
    cr_expect_eq(get_u32(host + 4), c->host_version, "%s (%s): the host's abi_version is kept",
                 s->name, kind_names[c->kind]);
    if (c->kind == TOO_SMALL) {
        cr_expect_eq(status, RM_E_STRUCT_SIZE, "%s of %u bytes: %s", s->name, c->size,
                     vt->error_name(status));
        cr_expect(message_names(message, s, c->size), "the message names %s: %s", s->name,
                  message);
        size_t at = first_written(host, 8, span);
        cr_expect_eq(at, span, "%s of %u bytes refused, but byte %zu was written", s->name,
                     c->size, at);
    } else {
        cr_expect_eq(status, RM_OK, "%s of %u bytes (%s): %s: %s", s->name, c->size,
                     kind_names[c->kind], vt->error_name(status), message);
        size_t written = min_size(c->size, s->ours);
        cr_expect_arr_eq(host + 8, reference + 8, written - 8,
                         "%s of %u bytes: the fields that fit are the ones our size gets",
                         s->name, c->size);
        size_t at = first_written(host, written, span);
        cr_expect_eq(at, span, "%s of %u bytes (%s): byte %zu beyond the %zu the plugin "
                               "may write was written",
                     s->name, c->size, kind_names[c->kind], at, written);
    }
    free(host);
    free(reference);
    world_close(&w);
}

ParameterizedTestParameters(abi_sizes, rows_of_every_size)
{
    static struct size_case cases[32];
    return cr_make_param_array(struct size_case, cases, make_cases(ROWS, cases, 32));
}

/* Rows are written whole, info_struct_size apart: each row's struct_size
 * says how many bytes the plugin wrote (the smaller of the two sizes), and
 * the rest of a newer host's row stays as the host left it. */
ParameterizedTest(struct size_case *c, abi_sizes, rows_of_every_size)
{
    const abi_struct *s = &structs[c->id];
    require_feature(s);
    world w;
    world_open(&w, c->id);

    unsigned char *reference = calloc(ROW_COUNT, s->ours);
    cr_assert_not_null(reference);
    uint32_t count = 0;
    cr_assert_eq(fill(&w, c->id, reference, (uint32_t)s->ours, &count), RM_OK,
                 "%s at our size: %s", s->name, vt->context_last_error(w.context));
    cr_assert_eq(count, ROW_COUNT, "%s: rows listed", s->name);

    size_t span = (size_t)ROW_COUNT * c->size + TAIL_BYTES;
    unsigned char *host = malloc(span);
    cr_assert_not_null(host);
    fill_canary(host, 0, span);
    count = 0;
    int32_t status = fill(&w, c->id, host, c->size, &count);
    const char *message = vt->context_last_error(w.context);

    if (c->kind == TOO_SMALL) {
        cr_expect_eq(status, RM_E_STRUCT_SIZE, "%s rows of %u bytes: %s", s->name, c->size,
                     vt->error_name(status));
        cr_expect(message_names(message, s, c->size), "the message names %s: %s", s->name,
                  message);
        size_t at = first_written(host, 0, span);
        cr_expect_eq(at, span, "%s rows of %u bytes refused, but byte %zu was written",
                     s->name, c->size, at);
    } else {
        cr_expect_eq(status, RM_OK, "%s rows of %u bytes (%s): %s: %s", s->name, c->size,
                     kind_names[c->kind], vt->error_name(status), message);
        cr_expect_eq(count, ROW_COUNT);
        size_t written = min_size(c->size, s->ours);
        for (size_t row = 0; row < ROW_COUNT; row++) {
            const unsigned char *got = host + row * c->size;
            const unsigned char *want = reference + row * s->ours;
            cr_expect_eq(get_u32(got), written, "%s row %zu of %u bytes: struct_size", s->name,
                         row, c->size);
            cr_expect_arr_eq(got + 4, want + 4, written - 4,
                             "%s row %zu of %u bytes: the fields that fit", s->name, row,
                             c->size);
            size_t end = (row + 1) * c->size;
            size_t at = first_written(host, row * c->size + written, end);
            cr_expect_eq(at, end, "%s row %zu of %u bytes: byte %zu of the host's row beyond "
                                  "ours was written",
                         s->name, row, c->size, at - row * c->size);
        }
        size_t at = first_written(host, ROW_COUNT * c->size, span);
        cr_expect_eq(at, span, "%s rows of %u bytes: byte %zu after the last row was written",
                     s->name, c->size, at);
    }
    free(host);
    free(reference);
    world_close(&w);
}

/* ------------------------------------------------------------------------ */
/* Structs the host hands in                                                */
/* ------------------------------------------------------------------------ */

/* `bytes` bytes (from an 8-aligned start) that end where an inaccessible
 * page begins: a read past what the host declared faults instead of
 * passing unnoticed. Zero-filled. */
typedef struct guarded {
    unsigned char *map;
    size_t length;
    unsigned char *bytes;
    size_t slot;
} guarded;

static unsigned char *guarded_open(guarded *g, size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    g->slot = (bytes + 7) & ~(size_t)7;
    size_t data = (g->slot + page - 1) / page * page;
    g->length = data + page;
    g->map = mmap(NULL, g->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(g->map, MAP_FAILED);
    cr_assert_eq(mprotect(g->map + data, page, PROT_NONE), 0);
    g->bytes = g->map + data - g->slot;
    return g->bytes;
}

static void guarded_close(guarded *g)
{
    munmap(g->map, g->length);
}

/* Lays out `full` (our size) as a host of `c` would: the first c->size
 * bytes, a newer host's extra fields zero ("behave as the older version"),
 * its own struct_size and abi_version. */
static void *host_struct(guarded *g, const struct size_case *c, const void *full, size_t ours)
{
    unsigned char *bytes = guarded_open(g, c->size);
    memcpy(bytes, full, min_size(c->size, ours));
    put_u32(bytes, c->size);
    put_u32(bytes + 4, c->host_version);
    return bytes;
}

static uint32_t expected_pick(uint32_t host_max)
{
    return host_max < RM_ABI_VERSION_CURRENT ? host_max : RM_ABI_VERSION_CURRENT;
}

static int log_lines;

static void count_log_lines(void *user, int32_t level, const char *message)
{
    (void)level;
    (void)message;
    (*(int *)user)++;
}

/* One error line through whichever log sink the last negotiation set. */
static void provoke_log_line(const rm_plugin_v1 *vtable)
{
    rm_config_entry bad = {.key = "registry.max_models", .value = "lots"};
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = &bad;
    options.entry_count = 1;
    options.flags = RM_CONTEXT_IGNORE_ENV;
    rm_context *context;
    cr_expect_eq(vtable->context_create(&options, &context), RM_E_CONFIG_INVALID_VALUE);
}

static void negotiate_request_case(const struct size_case *c, const abi_struct *s)
{
    char reason[256] = "untouched";
    rm_negotiate_request full = RM_STRUCT_INIT(rm_negotiate_request);
    full.min_abi_version = RM_ABI_VERSION(1, 0);
    full.max_abi_version = c->host_version;
    full.error_buffer = reason;
    full.error_buffer_size = sizeof reason;
    guarded g;
    const rm_negotiate_request *request = host_struct(&g, c, &full, sizeof full);
    unsigned char before[512];
    memcpy(before, g.bytes, g.slot);

    uint32_t picked = 12345;
    const rm_plugin_v1 *vtable = vt;
    int32_t status = negotiate(request, &picked, &vtable);
    if (c->kind == TOO_SMALL) {
        cr_expect_eq(status, RM_E_STRUCT_SIZE, "%s", vt->error_name(status));
        cr_expect_null(vtable);
        cr_expect_eq(picked, 0);
        const char *message = vt->context_last_error(NULL);
        cr_expect(message_names(message, s, c->size), "the message names %s: %s", s->name,
                  message);
        /* The buffer lies past what the host declared. */
        cr_expect_str_eq(reason, "untouched");
    } else {
        cr_expect_eq(status, RM_OK, "%s of %u bytes (%s): %s", s->name, c->size,
                     kind_names[c->kind], reason);
        cr_expect_eq(picked, expected_pick(c->host_version));
        cr_expect_not_null(vtable);
        cr_expect_str_eq(reason, "untouched", "no reason on success");
    }
    cr_expect_arr_eq(g.bytes, before, g.slot, "the plugin wrote into the host's request");
    guarded_close(&g);
}

static void host_services_case(const struct size_case *c, const abi_struct *s)
{
    rm_host_services full = RM_STRUCT_INIT(rm_host_services);
    full.user = &log_lines;
    full.log = count_log_lines;
    guarded g;
    const rm_host_services *services = host_struct(&g, c, &full, sizeof full);
    unsigned char before[512];
    memcpy(before, g.bytes, g.slot);

    char reason[256] = "";
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.min_abi_version = RM_ABI_VERSION(1, 0);
    request.max_abi_version = c->host_version;
    request.services = services;
    request.error_buffer = reason;
    request.error_buffer_size = sizeof reason;
    uint32_t picked;
    const rm_plugin_v1 *vtable;
    int32_t status = negotiate(&request, &picked, &vtable);
    log_lines = 0;
    if (c->kind == TOO_SMALL) {
        /* Documented for negotiate: a services struct too small is an
         * invalid argument (the request itself was fine). */
        cr_expect_eq(status, RM_E_INVALID_ARGUMENT, "%s", vt->error_name(status));
        cr_expect(message_names(reason, s, c->size), "the reason names %s: %s", s->name,
                  reason);
        provoke_log_line(vt);
        cr_expect_eq(log_lines, 0, "refused services must not be used");
    } else {
        cr_expect_eq(status, RM_OK, "%s of %u bytes (%s): %s", s->name, c->size,
                     kind_names[c->kind], reason);
        cr_expect_eq(picked, expected_pick(c->host_version));
        provoke_log_line(vtable);
        cr_expect_eq(log_lines, 1, "the plugin logs through services of %u bytes", c->size);
    }
    cr_expect_arr_eq(g.bytes, before, g.slot, "the plugin wrote into the host's services");
    guarded_close(&g);
}

static void context_options_case(const struct size_case *c, const abi_struct *s)
{
    rm_config_entry entries[] = {{"log.level", "debug"}, {"registry.max_models", "7"}};
    rm_context_options full = RM_STRUCT_INIT(rm_context_options);
    full.entries = entries;
    full.entry_count = 2;
    full.flags = RM_CONTEXT_IGNORE_ENV;
    guarded g;
    const rm_context_options *options = host_struct(&g, c, &full, sizeof full);
    unsigned char before[512];
    memcpy(before, g.bytes, g.slot);

    rm_context *context = (rm_context *)1;
    int32_t status = vt->context_create(options, &context);
    if (c->kind == TOO_SMALL) {
        cr_expect_eq(status, RM_E_STRUCT_SIZE, "%s", vt->error_name(status));
        cr_expect_null(context);
        const char *message = vt->context_last_error(NULL);
        cr_expect(message_names(message, s, c->size), "the message names %s: %s", s->name,
                  message);
    } else {
        cr_assert_eq(status, RM_OK, "%s of %u bytes (%s): %s", s->name, c->size,
                     kind_names[c->kind], vt->context_last_error(NULL));
        fixture_track(context);
        char value[32];
        cr_expect_eq(vt->config_get(context, "log.level", value, sizeof value, NULL), RM_OK);
        cr_expect_str_eq(value, "debug", "the entries were read");
        cr_expect_eq(vt->config_get(context, "registry.max_models", value, sizeof value, NULL),
                     RM_OK);
        cr_expect_str_eq(value, "7");
        fixture_close(context);
    }
    cr_expect_arr_eq(g.bytes, before, g.slot, "the plugin wrote into the host's options");
    guarded_close(&g);
}

static void tensor_spec_case(const struct size_case *c, const abi_struct *s)
{
    rm_context *context = open_context();
    rm_tensor_spec full = RM_STRUCT_INIT(rm_tensor_spec);
    full.dtype = (rm_dtype){RM_DTYPE_FLOAT, 32, 1};
    full.ndim = 2;
    full.shape[0] = 3;
    full.shape[1] = 5;
    full.session = 9;
    full.flags = RM_TENSOR_ALLOC_SHARED_ONLY | RM_TENSOR_ALLOC_ZERO;
    guarded g;
    const rm_tensor_spec *spec = host_struct(&g, c, &full, sizeof full);
    unsigned char before[512];
    memcpy(before, g.bytes, g.slot);

    rm_tensor *tensor = (rm_tensor *)1;
    int32_t status = vt->tensor_allocate(context, spec, &tensor);
    if (c->kind == TOO_SMALL) {
        cr_expect_eq(status, RM_E_STRUCT_SIZE, "%s", vt->error_name(status));
        cr_expect_null(tensor);
        const char *message = vt->context_last_error(context);
        cr_expect(message_names(message, s, c->size), "the message names %s: %s", s->name,
                  message);
    } else {
        cr_assert_eq(status, RM_OK, "%s of %u bytes (%s): %s", s->name, c->size,
                     kind_names[c->kind], vt->context_last_error(context));
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        cr_expect_eq(vt->tensor_info(context, tensor, &info), RM_OK);
        cr_expect_eq(info.ndim, 2);
        cr_expect_eq(info.shape[0], 3);
        cr_expect_eq(info.shape[1], 5);
        cr_expect_eq(info.session, 9);
        cr_expect_eq(info.nbytes, 3 * 5 * 4);
        cr_expect(info.flags & RM_TENSOR_SHAREABLE, "the spec's flags were read");
        cr_expect_eq(vt->tensor_release(context, tensor), RM_OK);
    }
    cr_expect_arr_eq(g.bytes, before, g.slot, "the plugin wrote into the host's spec");
    guarded_close(&g);
    fixture_close(context);
}

ParameterizedTestParameters(abi_sizes, host_structs_of_every_size)
{
    static struct size_case cases[32];
    return cr_make_param_array(struct size_case, cases, make_cases(FROM_HOST, cases, 32));
}

/* The plugin reads only what a host's struct_size declares, writes none of
 * it, and treats a newer host's zero extra fields as absent. */
ParameterizedTest(struct size_case *c, abi_sizes, host_structs_of_every_size)
{
    const abi_struct *s = &structs[c->id];
    require_feature(s);
    switch (c->id) {
    case NEGOTIATE_REQUEST:
        negotiate_request_case(c, s);
        break;
    case HOST_SERVICES:
        host_services_case(c, s);
        break;
    case CONTEXT_OPTIONS:
        context_options_case(c, s);
        break;
    case TENSOR_SPEC:
        tensor_spec_case(c, s);
        break;
    default:
        cr_assert_fail("struct %d is not handed in by the host", c->id);
    }
}

/* ------------------------------------------------------------------------ */
/* The vtable and the loader's struct, by negotiated version                */
/* ------------------------------------------------------------------------ */

struct version_case {
    int index; /* into published_versions */
};

ParameterizedTestParameters(abi_sizes, vtable_of_each_negotiated_version)
{
    static struct version_case cases[PUBLISHED_VERSIONS] = {{0}, {1}, {2}, {3}, {4}};
    return cr_make_param_array(struct version_case, cases, PUBLISHED_VERSIONS);
}

/* A host that negotiated version v may call every member of v's vtable:
 * each is within struct_size and set, and works on structs of v's sizes. */
ParameterizedTest(struct version_case *c, abi_sizes, vtable_of_each_negotiated_version)
{
    uint32_t version = published_versions[c->index];
    size_t needed = plugin_v1_sizes[c->index];
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.abi_version = version;
    request.min_abi_version = RM_ABI_VERSION(1, 0);
    request.max_abi_version = version;
    uint32_t picked;
    const rm_plugin_v1 *vtable;
    cr_assert_eq(negotiate(&request, &picked, &vtable), RM_OK);
    cr_expect_eq(picked, version);
    cr_assert_not_null(vtable);
    cr_assert_geq(vtable->struct_size, needed, "vtable of %zu bytes for a %u.%u host",
                  (size_t)vtable->struct_size, RM_ABI_VERSION_MAJOR(version),
                  RM_ABI_VERSION_MINOR(version));
    /* The vtable also covers the newest version it says it implements. */
    cr_expect_geq(vtable->abi_version, version);
    cr_expect_eq(RM_ABI_VERSION_MAJOR(vtable->abi_version), 1);
    uint32_t implemented_minor = RM_ABI_VERSION_MINOR(vtable->abi_version);
    if (implemented_minor < PUBLISHED_VERSIONS)
        cr_expect_geq(vtable->struct_size, plugin_v1_sizes[implemented_minor]);
    cr_expect_str_eq(vtable->name, "rm_plugin");

    /* Every member of v: the strings, then the functions, 8 bytes apart. */
    const unsigned char *bytes = (const unsigned char *)vtable;
    for (size_t at = offsetof(rm_plugin_v1, name); at < needed; at += sizeof(void *)) {
        void *member;
        memcpy(&member, bytes + at, sizeof member);
        cr_expect_not_null(member, "vtable member at offset %zu of a %u.%u host is NULL", at,
                           RM_ABI_VERSION_MAJOR(version), RM_ABI_VERSION_MINOR(version));
    }
    cr_expect(RM_PLUGIN_HAS(vtable, registry_list));
    if (version >= RM_ABI_VERSION(1, 1))
        cr_expect(RM_PLUGIN_HAS(vtable, tensor_allocate) && RM_PLUGIN_HAS(vtable, shm_list));
    if (version >= RM_ABI_VERSION(1, 2))
        cr_expect(RM_PLUGIN_HAS(vtable, registry_reclaim));
    if (version >= RM_ABI_VERSION(1, 3))
        cr_expect(RM_PLUGIN_HAS(vtable, tensor_wrap_device) && RM_PLUGIN_HAS(vtable, cuda_info));
    if (version >= RM_ABI_VERSION(1, 4))
        cr_expect(RM_PLUGIN_HAS(vtable, model_to_dlpack));

    /* The host calls members of its version with structs of its sizes
     * (a published size is never above ours, so our types hold them). */
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.struct_size = (uint32_t)structs[CONTEXT_OPTIONS].published[c->index];
    options.abi_version = version;
    options.flags = RM_CONTEXT_IGNORE_ENV;
    rm_context *context;
    cr_assert_eq(vtable->context_create(&options, &context), RM_OK, "%s",
                 vtable->context_last_error(NULL));
    fixture_track(context);

    union {
        rm_context_info info;
        unsigned char bytes[sizeof(rm_context_info) + TAIL_BYTES];
    } info;
    size_t info_size = structs[CONTEXT_INFO].published[c->index];
    fill_canary(info.bytes, 0, sizeof info.bytes);
    put_u32(info.bytes, (uint32_t)info_size);
    put_u32(info.bytes + 4, version);
    cr_expect_eq(vtable->context_info(context, &info.info), RM_OK);
    cr_expect_eq(info.info.negotiated_abi_version, version,
                 "the context records the version its host negotiated");
    cr_expect_eq(first_written(info.bytes, info_size, sizeof info.bytes), sizeof info.bytes);

    if (version >= RM_ABI_VERSION(1, 1) && (vtable->features_built & SHM)) {
        union {
            rm_tensor_pool_stats stats;
            unsigned char bytes[sizeof(rm_tensor_pool_stats) + TAIL_BYTES];
        } stats;
        size_t size = structs[TENSOR_POOL_STATS].published[c->index];
        fill_canary(stats.bytes, 0, sizeof stats.bytes);
        put_u32(stats.bytes, (uint32_t)size);
        put_u32(stats.bytes + 4, version);
        cr_expect_eq(vtable->tensor_pool_stats(context, &stats.stats), RM_OK, "%s",
                     vtable->context_last_error(context));
        cr_expect_eq(first_written(stats.bytes, size, sizeof stats.bytes), sizeof stats.bytes);
    }
    if (version >= RM_ABI_VERSION(1, 2) && (vtable->features_built & REGISTRY)) {
        rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
        report.abi_version = version;
        cr_expect_eq(vtable->registry_reclaim(context, &report), RM_OK, "%s",
                     vtable->context_last_error(context));
    }
    fixture_close(context);
}

struct loader_view {
    uint32_t struct_size;
    uint32_t abi_version;
    int zeroed;
    int has_buffer;
    int has_device_buffer;
    int32_t device_buffer_status; /* alloc_device_buffer for a cpu key */
    uint64_t device_pointer;
    void *stream;
};

static int32_t inspect_loaded_model(void *user, const char *key, rm_loaded_model *out)
{
    struct loader_view *view = user;
    view->struct_size = out->struct_size;
    view->abi_version = out->abi_version;
    view->zeroed = out->model == NULL && out->bytes == 0 && out->destroy == NULL &&
                   out->destroy_user == NULL;
    view->has_buffer = RM_LOADED_MODEL_HAS_BUFFER(out);
    view->has_device_buffer = RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out);
    if (view->has_device_buffer) {
        /* A key whose device is not "cuda:N" has no device buffer. */
        view->device_pointer = 1;
        view->stream = view;
        view->device_buffer_status =
            out->alloc_device_buffer(out, 64, &view->device_pointer, &view->stream);
    }
    /* What a 1.0 loader does: only the 1.0 fields. */
    out->model = view;
    out->bytes = 1;
    return RM_OK;
}

/* The one struct the plugin allocates for the host (a loader's `out`): a
 * loader of any published version finds every field it may read. */
Test(abi_sizes, loaded_model_covers_every_published_version)
{
    if ((vt->features_built & REGISTRY) == 0)
        cr_skip_test("model-registry not built");
    rm_context *context = open_context();
    struct loader_view view = {0};
    rm_model_handle *handle;
    void *model;
    cr_assert_eq(vt->model_get_or_load(context, "view@cpu", inspect_loaded_model, &view,
                                       &handle, &model),
                 RM_OK, "%s", vt->context_last_error(context));
    cr_expect_eq(model, &view, "a 1.0 loader's model is returned");
    cr_expect_geq(view.struct_size, RM_LOADED_MODEL_SIZE_V1_0);
    cr_expect_geq(view.struct_size, RM_LOADED_MODEL_SIZE_V1_2,
                  "this plugin implements 1.2: a 1.2 loader reads alloc_buffer");
    cr_expect_geq(view.struct_size, RM_LOADED_MODEL_SIZE_V1_4,
                  "this plugin implements 1.4: a 1.4 loader reads alloc_device_buffer");
    cr_expect_eq(view.abi_version, RM_ABI_VERSION_CURRENT);
    cr_expect(view.zeroed, "the plugin hands the loader a zeroed struct");
    cr_expect(view.has_buffer, "RM_LOADED_MODEL_HAS_BUFFER on a 1.2 plugin");
    if (view.has_device_buffer) {
        /* Invalid for a cpu key; the feature checks may come first. */
        int32_t status = view.device_buffer_status;
        cr_expect(status == RM_E_INVALID_ARGUMENT || status == RM_E_FEATURE_UNAVAILABLE ||
                      status == RM_E_FEATURE_DISABLED,
                  "alloc_device_buffer for a cpu key: %s", vt->error_name(status));
        cr_expect_eq(view.device_pointer, 0, "0 on error");
        cr_expect_null(view.stream, "no stream on error");
    }
    cr_expect_eq(vt->model_release(context, handle), RM_OK);
    fixture_close(context);
}
