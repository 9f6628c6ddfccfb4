/* Contexts through the real shared object: configuration sources, feature
 * switches, errors, the bundled allocator in a plain host, fork. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plugin_fixture.h"
#include "temp_file.h"

TestSuite(context, .init = fixture_load, .fini = fixture_unload, .timeout = 20);

static void expect_config(rm_context *context, const char *key, const char *expected)
{
    char value[128];
    uint64_t needed = 0;
    cr_assert_eq(vt->config_get(context, key, value, sizeof value, &needed), RM_OK);
    cr_expect_str_eq(value, expected, "%s", key);
    cr_expect_eq(needed, strlen(expected) + 1);
}

Test(context, defaults_without_options)
{
    unsetenv(RM_CONFIG_ENV);
    rm_context *context;
    cr_assert_eq(vt->context_create(NULL, &context), RM_OK, "%s", vt->context_last_error(NULL));
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    cr_assert_eq(vt->context_info(context, &info), RM_OK);
    cr_expect_eq(info.features_enabled, vt->features_built, "default features = all built");
    cr_expect_eq(info.negotiated_abi_version, RM_ABI_VERSION_CURRENT);
    expect_config(context, "registry.ttl_s", "30");
    expect_config(context, "log.level", "warn");
    /* 1.2: the node registry is opt-in. */
    expect_config(context, "registry.scope", "process");
    expect_config(context, "registry.namespace", "default");
    expect_config(context, "registry.table_entries", "1024");
    vt->context_destroy(context);
}

Test(context, precedence_defaults_file_entries)
{
    char *path = write_temp_file("registry.ttl_s = 7\nregistry.max_models = 3\n");
    rm_config_entry entry = {.key = "registry.max_models", .value = "9"};
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.config_path = path;
    options.entries = &entry;
    options.entry_count = 1;
    rm_context *context;
    cr_assert_eq(vt->context_create(&options, &context), RM_OK, "%s",
                 vt->context_last_error(NULL));
    expect_config(context, "registry.ttl_s", "7");     /* file over default */
    expect_config(context, "registry.max_models", "9"); /* entry over file */
    expect_config(context, "registry.max_bytes", "0");  /* default */
    vt->context_destroy(context);
    unlink(path);
}

Test(context, environment_names_a_file_unless_ignored)
{
    char *path = write_temp_file("log.level = debug\nregistry.ttl_s = 0.5\n");
    setenv(RM_CONFIG_ENV, path, 1);
    rm_context *context;
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    cr_assert_eq(vt->context_create(&options, &context), RM_OK);
    expect_config(context, "registry.ttl_s", "0.5");
    vt->context_destroy(context);

    options.flags = RM_CONTEXT_IGNORE_ENV;
    cr_assert_eq(vt->context_create(&options, &context), RM_OK);
    expect_config(context, "registry.ttl_s", "30");
    vt->context_destroy(context);

    setenv(RM_CONFIG_ENV, "/nonexistent/rm_plugin.conf", 1);
    options.flags = 0;
    cr_expect_eq(vt->context_create(&options, &context), RM_E_CONFIG_FILE);
    cr_expect_null(context);
    cr_expect(strstr(vt->context_last_error(NULL), "/nonexistent/rm_plugin.conf") != NULL);
    unsetenv(RM_CONFIG_ENV);
    unlink(path);
}

Test(context, bad_options_are_rejected_with_a_message)
{
    rm_context *context = (rm_context *)1;
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.struct_size = 8;
    cr_expect_eq(vt->context_create(&options, &context), RM_E_STRUCT_SIZE);
    cr_expect_null(context);
    cr_expect(strstr(vt->context_last_error(NULL), "rm_context_options") != NULL);

    options = (rm_context_options)RM_STRUCT_INIT(rm_context_options);
    options.reserved[0] = 7;
    cr_expect_eq(vt->context_create(&options, &context), RM_E_INVALID_ARGUMENT);
    options.reserved[0] = 0;
    options.flags = 1u << 5;
    cr_expect_eq(vt->context_create(&options, &context), RM_E_INVALID_ARGUMENT);
    options.flags = 0;
    options.entry_count = 2;
    cr_expect_eq(vt->context_create(&options, &context), RM_E_INVALID_ARGUMENT);
    rm_config_entry null_value = {.key = "log.level", .value = NULL};
    options.entries = &null_value;
    options.entry_count = 1;
    cr_expect_eq(vt->context_create(&options, &context), RM_E_INVALID_ARGUMENT);
    cr_expect_eq(vt->context_create(&options, NULL), RM_E_INVALID_ARGUMENT);

    rm_config_entry unknown = {.key = "registry.tll_s", .value = "5"};
    options.entries = &unknown;
    cr_expect_eq(vt->context_create(&options, &context), RM_E_CONFIG_UNKNOWN_KEY);
    cr_expect(strstr(vt->context_last_error(NULL), "'registry.tll_s'") != NULL, "%s",
              vt->context_last_error(NULL));
}

Test(context, disabled_capability_gives_a_distinct_error)
{
    rm_context *context;
    cr_assert_eq(fixture_context(&context, (const char *[]){"features", "none", NULL}), RM_OK);
    rm_model_handle *handle = (rm_model_handle *)1;
    void *model = (void *)1;
    int32_t status = vt->model_get_or_load(context, "m@cpu", NULL, NULL, &handle, &model);
    cr_expect_eq(status, (vt->features_built & RM_FEATURE_MODEL_REGISTRY)
                             ? RM_E_FEATURE_DISABLED
                             : RM_E_FEATURE_UNAVAILABLE);
    cr_expect_null(handle);
    cr_expect_null(model);
    cr_expect(strstr(vt->context_last_error(context), "model-registry") != NULL);
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    cr_expect_eq(vt->registry_metrics(context, &metrics), status);
    cr_expect_eq(vt->model_evict(context, NULL), status);
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    cr_assert_eq(vt->context_info(context, &info), RM_OK);
    cr_expect_eq(info.features_enabled, 0);
    cr_expect_eq(info.allocator_arena, UINT32_MAX);
    vt->context_destroy(context);
}

Test(context, null_context_and_struct_sizes)
{
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    cr_expect_eq(vt->context_info(NULL, &info), RM_E_INVALID_ARGUMENT);
    cr_expect_str_eq(vt->context_last_error(NULL), "context is NULL");
    char value[8];
    cr_expect_eq(vt->config_get(NULL, "log.level", value, sizeof value, NULL),
                 RM_E_INVALID_ARGUMENT);
    rm_context *context;
    cr_assert_eq(fixture_context(&context, NULL), RM_OK);
    info.struct_size = 4;
    cr_expect_eq(vt->context_info(context, &info), RM_E_STRUCT_SIZE);
    cr_expect_eq(vt->config_get(context, "nope", value, sizeof value, NULL),
                 RM_E_CONFIG_UNKNOWN_KEY);
    cr_expect_eq(vt->config_get(context, NULL, value, sizeof value, NULL),
                 RM_E_INVALID_ARGUMENT);
    uint64_t needed = 0;
    cr_expect_eq(vt->config_get(context, "features", value, 2, &needed),
                 RM_E_BUFFER_TOO_SMALL);
    cr_expect_gt(needed, 2);
    vt->context_destroy(NULL);
    vt->context_destroy(context);
}

static void *fail_on_other_thread(void *arg)
{
    rm_context *context = arg;
    char value[8];
    vt->config_get(context, "other.thread", value, sizeof value, NULL);
    return NULL;
}

Test(context, last_error_is_per_thread_and_per_context)
{
    rm_context *first, *second;
    cr_assert_eq(fixture_context(&first, NULL), RM_OK);
    cr_assert_eq(fixture_context(&second, NULL), RM_OK);
    char value[8];
    vt->config_get(first, "first.key", value, sizeof value, NULL);
    cr_expect(strstr(vt->context_last_error(first), "first.key") != NULL);
    cr_expect_str_eq(vt->context_last_error(second), "", "no failure on second");
    pthread_t thread;
    pthread_create(&thread, NULL, fail_on_other_thread, first);
    pthread_join(thread, NULL);
    cr_expect(strstr(vt->context_last_error(first), "first.key") != NULL,
              "another thread's failure does not overwrite ours");
    vt->context_destroy(first);
    vt->context_destroy(second);
}

Test(context, error_functions_through_the_vtable)
{
    cr_expect_str_eq(vt->error_name(RM_E_LOAD_CYCLE), "LOAD_CYCLE");
    cr_expect_str_eq(vt->strerror(RM_E_FORKED), "context belongs to the parent of a fork()");
    cr_expect_str_eq(vt->error_name(RM_E_CORRUPT_STATE), "CORRUPT_STATE");
    cr_expect_str_eq(vt->strerror(RM_E_CORRUPT_STATE),
                     "shared state is malformed, foreign or missing");
    cr_expect_str_eq(vt->error_name(1), "UNKNOWN");
    cr_expect_str_eq(vt->config_key_at(0), "features");
    cr_expect_null(vt->config_key_at(1000));
}

Test(context, bundled_allocator_works_in_a_plain_host)
{
    if ((vt->features_built & RM_FEATURE_SHARED_MEMORY) == 0)
        cr_skip_test("shared-memory not built: no bundled jemalloc");
    /* This test binary links no jemalloc, and the plugin's stays private. */
    cr_expect_null(dlsym(RTLD_DEFAULT, "rmje_mallocx"));
    cr_expect_null(dlsym(fixture_plugin.library, "rmje_mallocx"));
    /* malloc, looked up globally or through the plugin's handle (which also
     * searches its dependencies), is libc's (or a sanitizer's interceptor),
     * never the plugin's. */
    void *lookups[] = {dlsym(RTLD_DEFAULT, "malloc"), dlsym(fixture_plugin.library, "malloc"),
                       dlsym(fixture_plugin.library, "free")};
    for (size_t i = 0; i < sizeof lookups / sizeof lookups[0]; i++) {
        Dl_info where;
        cr_assert(dladdr(lookups[i], &where) != 0);
        int from_libc = strstr(where.dli_fname, "libc.so") != NULL ||
                        strstr(where.dli_fname, "libasan.so") != NULL ||
                        strstr(where.dli_fname, "libtsan.so") != NULL;
        cr_expect(from_libc && strstr(where.dli_fname, "rm_plugin") == NULL,
                  "lookup %zu resolves to %s", i, where.dli_fname);
    }

    rm_context *context;
    cr_assert_eq(fixture_context(&context, (const char *[]){"features", "shared-memory", NULL}),
                 RM_OK, "%s", vt->context_last_error(NULL));
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    cr_assert_eq(vt->context_info(context, &info), RM_OK);
    cr_expect(strncmp(info.allocator, "jemalloc 5.3.0", 14) == 0, "%s", info.allocator);
    cr_expect_neq(info.allocator_arena, UINT32_MAX, "an arena was created and checked");
    vt->context_destroy(context);
}

Test(context, a_forked_child_cannot_use_its_parents_context)
{
    if ((vt->features_built & RM_FEATURE_MODEL_REGISTRY) == 0)
        cr_skip_test("model-registry not built");
#if defined(__SANITIZE_ADDRESS__)
    /* The child starts a thread (the new registry's evictor); ASan's
     * thread start-up allocates, and gcc 12's ASan allocator can be
     * inherited locked from a parent thread at fork(): the child then
     * hangs inside ASan (seen 1 run in 3). The default and valgrind runs
     * keep this test. */
    cr_skip_test("fork() then a new thread is not reliable under ASan (gcc 12 runtime)");
#endif
    rm_context *context;
    cr_assert_eq(fixture_context(&context, NULL), RM_OK);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
        int ok = vt->registry_metrics(context, &metrics) == RM_E_FORKED &&
                 strstr(vt->context_last_error(context), "fork") != NULL;
        vt->context_destroy(context); /* frees only the child's copy */
        rm_context *fresh;
        ok = ok && fixture_context(&fresh, NULL) == RM_OK;
        ok = ok && vt->registry_metrics(fresh, &metrics) == RM_OK;
        vt->context_destroy(fresh);
        _exit(ok ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(child, &status, 0), child);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    cr_expect_eq(vt->registry_metrics(context, &metrics), RM_OK, "the parent is unaffected");
    vt->context_destroy(context);
}
