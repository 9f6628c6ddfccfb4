/* Negotiation through the real shared object's one exported entry point. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rm_plugin.h"

static void *library;
static rm_plugin_negotiate_fn negotiate;

static void open_plugin(void)
{
    const char *path = getenv("RM_PLUGIN_PATH");
    cr_assert_not_null(path, "RM_PLUGIN_PATH must name the built rm_plugin.so");
    library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(library, "dlopen: %s", dlerror());
    void *symbol = dlsym(library, RM_PLUGIN_ENTRY_POINT);
    cr_assert_not_null(symbol);
    memcpy(&negotiate, &symbol, sizeof negotiate);
}

static void close_plugin(void)
{
    dlclose(library);
}

TestSuite(negotiate, .init = open_plugin, .fini = close_plugin, .timeout = 10);

struct range_case {
    uint32_t host_min, host_max;
    int32_t code;
    uint32_t picked;
};

ParameterizedTestParameters(negotiate, version_ranges)
{
    static struct range_case cases[] = {
        /* older hosts (1.0 only, ..., 1.3 only) with this plugin (1.4) */
        {RM_ABI_VERSION(1, 0), RM_ABI_VERSION(1, 0), RM_OK, RM_ABI_VERSION(1, 0)},
        {RM_ABI_VERSION(1, 1), RM_ABI_VERSION(1, 1), RM_OK, RM_ABI_VERSION(1, 1)},
        {RM_ABI_VERSION(1, 0), RM_ABI_VERSION(1, 1), RM_OK, RM_ABI_VERSION(1, 1)},
        {RM_ABI_VERSION(1, 2), RM_ABI_VERSION(1, 2), RM_OK, RM_ABI_VERSION(1, 2)},
        {RM_ABI_VERSION(1, 3), RM_ABI_VERSION(1, 3), RM_OK, RM_ABI_VERSION(1, 3)},
        {RM_ABI_VERSION(1, 0), RM_ABI_VERSION(1, 3), RM_OK, RM_ABI_VERSION(1, 3)},
        {RM_ABI_VERSION(1, 4), RM_ABI_VERSION(1, 4), RM_OK, RM_ABI_VERSION(1, 4)},
        /* a newer host minor: the highest common version is ours */
        {RM_ABI_VERSION(1, 0), RM_ABI_VERSION(1, 7), RM_OK, RM_ABI_VERSION(1, 4)},
        /* a host spanning majors */
        {RM_ABI_VERSION(0, 3), RM_ABI_VERSION(2, 1), RM_OK, RM_ABI_VERSION(1, 4)},
        /* a host that needs a newer minor than we have */
        {RM_ABI_VERSION(1, 5), RM_ABI_VERSION(1, 9), RM_E_INCOMPATIBLE_VERSION, 0},
        /* major too new */
        {RM_ABI_VERSION(2, 0), RM_ABI_VERSION(2, 4), RM_E_INCOMPATIBLE_VERSION, 0},
        /* major too old */
        {RM_ABI_VERSION(0, 0), RM_ABI_VERSION(0, 9), RM_E_INCOMPATIBLE_VERSION, 0},
        /* an empty range */
        {RM_ABI_VERSION(1, 2), RM_ABI_VERSION(1, 0), RM_E_INVALID_ARGUMENT, 0},
    };
    return cr_make_param_array(struct range_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct range_case *c, negotiate, version_ranges)
{
    char reason[256] = "";
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.min_abi_version = c->host_min;
    request.max_abi_version = c->host_max;
    request.error_buffer = reason;
    request.error_buffer_size = sizeof reason;
    uint32_t picked = 12345;
    const rm_plugin_v1 *vtable = (const rm_plugin_v1 *)&picked;
    cr_assert_eq(negotiate(&request, &picked, &vtable), c->code, "%s", reason);
    cr_expect_eq(picked, c->picked);
    if (c->code == RM_OK) {
        cr_assert_not_null(vtable);
        cr_expect_geq(vtable->struct_size, sizeof(rm_plugin_v1));
        cr_expect_eq(vtable->abi_version, RM_ABI_VERSION_CURRENT);
        cr_expect_str_eq(vtable->name, "rm_plugin");
        cr_expect_str_eq(vtable->version, RM_PLUGIN_VERSION_STRING);
        cr_expect_str_empty(reason);
    } else {
        cr_expect_null(vtable, "no vtable on failure");
        cr_expect_str_not_empty(reason);
    }
    if (c->code == RM_E_INCOMPATIBLE_VERSION) {
        /* The message names both ranges so that an operator can act. */
        cr_expect(strstr(reason, "host supports") != NULL, "%s", reason);
        cr_expect(strstr(reason, "rm_plugin") != NULL, "%s", reason);
    }
}

Test(negotiate, host_struct_smaller_than_v1_0_is_rejected)
{
    char reason[128] = "untouched";
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.min_abi_version = RM_ABI_VERSION(1, 0);
    request.max_abi_version = RM_ABI_VERSION(1, 0);
    request.error_buffer = reason;
    request.error_buffer_size = sizeof reason;
    request.struct_size = offsetof(rm_negotiate_request, error_buffer);
    uint32_t picked;
    const rm_plugin_v1 *vtable;
    cr_expect_eq(negotiate(&request, &picked, &vtable), RM_E_STRUCT_SIZE);
    cr_expect_null(vtable);
    /* The buffer lies past what the host declared, so it is not written. */
    cr_expect_str_eq(reason, "untouched");
}

Test(negotiate, reserved_fields_and_null_arguments_are_rejected)
{
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.min_abi_version = RM_ABI_VERSION(1, 0);
    request.max_abi_version = RM_ABI_VERSION(1, 0);
    uint32_t picked;
    const rm_plugin_v1 *vtable;
    request.reserved[3] = 1;
    cr_expect_eq(negotiate(&request, &picked, &vtable), RM_E_INVALID_ARGUMENT);
    request.reserved[3] = 0;
    cr_expect_eq(negotiate(NULL, &picked, &vtable), RM_E_INVALID_ARGUMENT);
    cr_expect_eq(negotiate(&request, NULL, &vtable), RM_E_INVALID_ARGUMENT);
    cr_expect_eq(negotiate(&request, &picked, NULL), RM_E_INVALID_ARGUMENT);
    rm_host_services services = RM_STRUCT_INIT(rm_host_services);
    services.struct_size = 8;
    request.services = &services;
    cr_expect_eq(negotiate(&request, &picked, &vtable), RM_E_INVALID_ARGUMENT);
}

/* ---- host services reach the plugin --------------------------------- */

static char logged[8][512];
static int logged_count;

static void collect_log(void *user, int32_t level, const char *message)
{
    (*(int *)user)++;
    if (logged_count < 8)
        snprintf(logged[logged_count++], sizeof logged[0], "%d %s", level, message);
}

static uint64_t fake_clock_ns = 123456789;

static uint64_t fake_clock(void *user)
{
    return fake_clock_ns;
}

static int32_t trivial_loader(void *user, const char *key, rm_loaded_model *out)
{
    static int model;
    out->model = &model;
    out->bytes = 1;
    return RM_OK;
}

Test(negotiate, offered_log_sink_and_clock_are_used)
{
    int calls = 0;
    rm_host_services services = RM_STRUCT_INIT(rm_host_services);
    services.user = &calls;
    services.log = collect_log;
    services.monotonic_ns = fake_clock;
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.min_abi_version = RM_ABI_VERSION(1, 0);
    request.max_abi_version = RM_ABI_VERSION_CURRENT;
    request.services = &services;
    uint32_t picked;
    const rm_plugin_v1 *vt;
    cr_assert_eq(negotiate(&request, &picked, &vt), RM_OK);

    rm_config_entry bad = {.key = "registry.max_models", .value = "lots"};
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = &bad;
    options.entry_count = 1;
    options.flags = RM_CONTEXT_IGNORE_ENV;
    rm_context *context;
    cr_assert_eq(vt->context_create(&options, &context), RM_E_CONFIG_INVALID_VALUE);
    cr_assert_eq(calls, 1, "one error line through the host's sink");
    cr_expect(strstr(logged[0], "0 context_create") == logged[0], "%s", logged[0]);
    cr_expect(strstr(logged[0], "registry.max_models") != NULL, "%s", logged[0]);

    if ((vt->features_built & RM_FEATURE_MODEL_REGISTRY) == 0)
        return;
    options.entry_count = 0;
    cr_assert_eq(vt->context_create(&options, &context), RM_OK);
    rm_model_handle *handle;
    void *model;
    cr_assert_eq(vt->model_get_or_load(context, "clock@cpu", trivial_loader, NULL,
                                       &handle, &model), RM_OK);
    rm_model_info row = RM_STRUCT_INIT(rm_model_info);
    uint32_t count;
    cr_assert_eq(vt->registry_list(context, &row, sizeof row, 1, &count), RM_OK);
    cr_expect_eq(row.loaded_at_ns, fake_clock_ns, "the registry reads the host's clock");
    vt->model_release(context, handle);
    vt->context_destroy(context);
}
