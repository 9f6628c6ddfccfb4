/* A full /dev/shm at each point where the plugin takes space from it: pool
 * growth, the pool's control segment, the node table, a model's segment.
 * Each test runs in a forked child with a private, small tmpfs on /dev/shm
 * (a mount namespace; root, or a user namespace that maps us to root) and
 * checks that the answer is an error code that says what ran out, never
 * SIGBUS, and that nothing half-made is left for another process to see. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "child_check.h"
#include "plugin_fixture.h"

#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)

static void suite_init(void)
{
    fixture_load();
}

static void suite_fini(void)
{
    fixture_unload();
}

TestSuite(exhaustion, .init = suite_init, .fini = suite_fini, .timeout = 120);

/* The names in the (private) /dev/shm, space-separated into `out`. */
static int dev_shm_names(char *out, size_t size)
{
    out[0] = '\0';
    int count = 0;
    DIR *directory = opendir("/dev/shm");
    if (directory == NULL)
        return -1;
    struct dirent *entry;
    size_t used = 0;
    while ((entry = readdir(directory)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        count++;
        int n = snprintf(out + used, size - used, "%s ", entry->d_name);
        if (n > 0 && (size_t)n < size - used)
            used += (size_t)n;
    }
    closedir(directory);
    return count;
}

static rm_context *child_context(const char *const *pairs)
{
    rm_context *context = NULL;
    int32_t rc = fixture_context(&context, pairs);
    if (rc == RM_E_FEATURE_UNAVAILABLE)
        child_skip("a capability this test needs was not built");
    CHILD_EXPECT(rc == RM_OK, "context_create: %s: %s", vt->error_name(rc),
                 vt->context_last_error(NULL));
    return rc == RM_OK ? context : NULL;
}

static rm_tensor_spec bytes_spec(uint64_t bytes, uint64_t flags)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){RM_DTYPE_UINT, 8, 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)bytes;
    spec.flags = flags;
    return spec;
}

static void fill(void *data, uint64_t bytes, uint8_t seed)
{
    uint8_t *at = data;
    for (uint64_t i = 0; i < bytes; i += 4096)
        at[i] = (uint8_t)(seed + i / 4096);
    at[bytes - 1] = seed;
}

static int filled(const void *data, uint64_t bytes, uint8_t seed)
{
    const uint8_t *at = data;
    for (uint64_t i = 0; i < bytes; i += 4096)
        if (at[i] != (uint8_t)(seed + i / 4096))
            return 0;
    return at[bytes - 1] == seed;
}

/* ---- tensors ------------------------------------------------------------ */

#define MAX_TENSORS 64

static void pool_growth_body(void *unused)
{
    (void)unused;
    child_private_dev_shm("16m", 0);
    const char *pairs[] = {"shm.namespace", "exhaust", "shm.pool_bytes", "256M",
                           "shm.max_tensors", "64", NULL};
    rm_context *owner = child_context(pairs);
    rm_context *importer = child_context(pairs);
    if (owner == NULL || importer == NULL)
        return;
    rm_tensor *tensors[MAX_TENSORS];
    int count = 0;
    int32_t rc = RM_OK;
    rm_tensor_spec spec = bytes_spec(MIB, RM_TENSOR_ALLOC_SHARED_ONLY);
    while (count < MAX_TENSORS) {
        rc = vt->tensor_allocate(owner, &spec, &tensors[count]);
        if (rc != RM_OK)
            break;
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        vt->tensor_info(owner, tensors[count], &info);
        fill(info.data, MIB, (uint8_t)count); /* every page touched: SIGBUS would be here */
        count++;
    }
    CHILD_EXPECT(rc == RM_E_NO_MEMORY, "pool growth in 16 MiB ended with %s",
                 vt->error_name(rc));
    CHILD_EXPECT(strstr(vt->context_last_error(owner), "/dev/shm") != NULL,
                 "the message names /dev/shm: %s", vt->context_last_error(owner));
    CHILD_EXPECT(count >= 8 && count < 16, "%d tensors of 1 MiB fit in 16 MiB", count);
    /* What was made before is whole, in the owner and in an importer. */
    for (int i = 0; i < count; i++) {
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        vt->tensor_info(owner, tensors[i], &info);
        CHILD_EXPECT(filled(info.data, MIB, (uint8_t)i), "tensor %d changed", i);
    }
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
    vt->tensor_export(owner, tensors[count - 1], descriptor, sizeof descriptor);
    rm_tensor *view = NULL;
    rc = vt->tensor_import(importer, descriptor, sizeof descriptor, 0, &view);
    CHILD_EXPECT(rc == RM_OK, "import with /dev/shm full: %s", vt->error_name(rc));
    if (view != NULL) {
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        vt->tensor_info(importer, view, &info);
        CHILD_EXPECT(filled(info.data, MIB, (uint8_t)(count - 1)), "the import's bytes");
        vt->tensor_release(importer, view);
    }
    /* Released space is space again. */
    for (int i = 0; i < count; i++)
        vt->tensor_release(owner, tensors[i]);
    rm_tensor *again = NULL;
    rc = vt->tensor_allocate(owner, &spec, &again);
    CHILD_EXPECT(rc == RM_OK, "after the releases: %s: %s", vt->error_name(rc),
                 vt->context_last_error(owner));
    if (again != NULL)
        vt->tensor_release(owner, again);
    vt->context_destroy(importer);
    vt->context_destroy(owner);
    char names[1024];
    CHILD_EXPECT(dev_shm_names(names, sizeof names) == 0, "left in /dev/shm: %s", names);
}

Test(exhaustion, a_full_dev_shm_during_pool_growth_is_no_memory_and_what_was_made_stays)
{
    run_in_child(pool_growth_body, NULL, "16 MiB /dev/shm");
}

/* The pool's segment is sparse, its control segment (64 bytes a slot,
 * committed) is not: with room for neither, nothing may stay behind. */
static void control_segment_body(void *unused)
{
    (void)unused;
    child_private_dev_shm("512k", 0);
    const char *pairs[] = {"shm.namespace", "exhaust", "shm.max_tensors", "16384", NULL};
    rm_context *context = child_context(pairs);
    if (context == NULL)
        return;
    rm_tensor_spec shared_only = bytes_spec(4 * KIB, RM_TENSOR_ALLOC_SHARED_ONLY);
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_allocate(context, &shared_only, &tensor);
    CHILD_EXPECT(rc == RM_E_NO_MEMORY, "shared only: %s", vt->error_name(rc));
    CHILD_EXPECT(strstr(vt->context_last_error(context), "/dev/shm") != NULL, "message: %s",
                 vt->context_last_error(context));
    char names[1024];
    CHILD_EXPECT(dev_shm_names(names, sizeof names) == 0,
                 "a half-made pool is visible: %s", names);
    /* Without SHARED_ONLY: the heap, reported as not shareable. */
    rm_tensor_spec any = bytes_spec(4 * KIB, 0);
    rc = vt->tensor_allocate(context, &any, &tensor);
    CHILD_EXPECT(rc == RM_OK, "heap fallback: %s", vt->error_name(rc));
    if (tensor != NULL) {
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        vt->tensor_info(context, tensor, &info);
        CHILD_EXPECT((info.flags & RM_TENSOR_SHAREABLE) == 0, "a heap tensor is not shareable");
        vt->tensor_release(context, tensor);
    }
    vt->context_destroy(context);
    CHILD_EXPECT(dev_shm_names(names, sizeof names) == 0, "left in /dev/shm: %s", names);
}

Test(exhaustion, a_control_segment_that_does_not_fit_leaves_nothing_behind)
{
    run_in_child(control_segment_body, NULL, "512 KiB /dev/shm");
}

/* ---- node registry ------------------------------------------------------ */

static const char *const node_pairs_default_table[] = {
    "registry.scope", "node", "registry.namespace", "exhaust", NULL};

static void node_table_body(void *unused)
{
    (void)unused;
    child_private_dev_shm("256k", 0); /* the default table needs ~1.4 MiB */
    rm_context *context = NULL;
    int32_t rc = fixture_context(&context, node_pairs_default_table);
    if (rc == RM_E_FEATURE_UNAVAILABLE)
        child_skip("the model registry was not built");
    CHILD_EXPECT(rc == RM_E_NO_MEMORY, "context_create with no room for the table: %s",
                 vt->error_name(rc));
    CHILD_EXPECT(strstr(vt->context_last_error(NULL), "/dev/shm") != NULL, "message: %s",
                 vt->context_last_error(NULL));
    CHILD_EXPECT(context == NULL, "no context on failure");
    char names[1024];
    CHILD_EXPECT(dev_shm_names(names, sizeof names) == 0,
                 "a half-made table is visible: %s", names);
    /* A smaller table fits. */
    const char *small[] = {"registry.scope", "node", "registry.namespace", "exhaust",
                           "registry.table_entries", "4", NULL};
    rc = fixture_context(&context, small);
    CHILD_EXPECT(rc == RM_OK, "a 4-entry table: %s: %s", vt->error_name(rc),
                 vt->context_last_error(NULL));
    if (context != NULL)
        vt->context_destroy(context);
    CHILD_EXPECT(dev_shm_names(names, sizeof names) == 0, "left in /dev/shm: %s", names);
}

Test(exhaustion, a_node_table_that_does_not_fit_is_no_memory_and_invisible)
{
    run_in_child(node_table_body, NULL, "256 KiB /dev/shm");
}

typedef struct model_plan {
    uint64_t bytes;
    int32_t buffer_rc; /* what alloc_buffer said */
    int calls;
} model_plan;

static int32_t sized_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    model_plan *plan = user;
    plan->calls++;
    void *buffer = NULL;
    plan->buffer_rc = out->alloc_buffer(out, plan->bytes, &buffer);
    if (plan->buffer_rc != RM_OK)
        return plan->buffer_rc;
    fill(buffer, plan->bytes, 0x5a); /* every page: SIGBUS would be here */
    out->bytes = plan->bytes;
    return RM_OK;
}

static void model_body(void *unused)
{
    (void)unused;
    child_private_dev_shm("4m", 0);
    const char *pairs[] = {"registry.scope", "node", "registry.namespace", "exhaust",
                           "registry.table_entries", "4", NULL};
    rm_context *context = NULL, *other = NULL;
    int32_t rc = fixture_context(&context, pairs);
    if (rc == RM_E_FEATURE_UNAVAILABLE)
        child_skip("the model registry was not built");
    CHILD_EXPECT(rc == RM_OK, "context: %s", vt->context_last_error(NULL));
    rc = fixture_context(&other, pairs);
    CHILD_EXPECT(rc == RM_OK, "second context: %s", vt->context_last_error(NULL));
    if (context == NULL || other == NULL)
        return;
    char names_before[1024], names[1024];
    int before = dev_shm_names(names_before, sizeof names_before); /* the table */

    /* A model bigger than what is left: the buffer is refused, the load
     * fails with that code, and no entry or segment is left. */
    model_plan big = {.bytes = 8 * MIB};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    rc = vt->model_get_or_load(context, "big@cpu", sized_loader, &big, &handle, &model);
    CHILD_EXPECT(big.calls == 1 && big.buffer_rc == RM_E_NO_MEMORY,
                 "alloc_buffer of 8 MiB in 4 MiB: %s", vt->error_name(big.buffer_rc));
    CHILD_EXPECT(rc == RM_E_NO_MEMORY, "get_or_load: %s", vt->error_name(rc));
    CHILD_EXPECT(handle == NULL && model == NULL, "no handle on failure");
    uint32_t count = 99;
    rm_model_info rows[4];
    rc = vt->registry_list(other, rows, sizeof rows[0], 4, &count);
    CHILD_EXPECT(rc == RM_OK && count == 0, "entries after the failed load: %u (%s)", count,
                 vt->error_name(rc));
    CHILD_EXPECT(dev_shm_names(names, sizeof names) == before,
                 "a half-made model is visible: %s (before: %s)", names, names_before);

    /* One that fits loads, is sealed and shared: the other context gets the
     * same bytes without a loader call. */
    model_plan fits = {.bytes = 2 * MIB};
    rc = vt->model_get_or_load(context, "fits@cpu", sized_loader, &fits, &handle, &model);
    CHILD_EXPECT(rc == RM_OK, "a 2 MiB model in the space left: %s: %s", vt->error_name(rc),
                 vt->context_last_error(context));
    if (rc == RM_OK) {
        CHILD_EXPECT(filled(model, fits.bytes, 0x5a), "the model's bytes");
        model_plan unused_plan = {.bytes = 2 * MIB};
        rm_model_handle *other_handle = NULL;
        void *other_model = NULL;
        rc = vt->model_get_or_load(other, "fits@cpu", sized_loader, &unused_plan,
                                   &other_handle, &other_model);
        CHILD_EXPECT(rc == RM_OK && unused_plan.calls == 0, "attach: %s, %d loader calls",
                     vt->error_name(rc), unused_plan.calls);
        if (rc == RM_OK) {
            CHILD_EXPECT(filled(other_model, fits.bytes, 0x5a), "the attached bytes");
            vt->model_release(other, other_handle);
        }
        vt->model_release(context, handle);
        rc = vt->model_evict(context, "fits@cpu");
        CHILD_EXPECT(rc == RM_OK, "evict: %s", vt->error_name(rc));
    }
    vt->context_destroy(other);
    vt->context_destroy(context);
    CHILD_EXPECT(dev_shm_names(names, sizeof names) == 0, "left in /dev/shm: %s", names);
}

Test(exhaustion, a_model_that_does_not_fit_fails_its_load_and_leaves_nothing)
{
    run_in_child(model_body, NULL, "4 MiB /dev/shm");
}
