/* Loads the real rm_plugin.so (named by $RM_PLUGIN_PATH) for a test suite. */
#ifndef RM_TEST_PLUGIN_FIXTURE_H
#define RM_TEST_PLUGIN_FIXTURE_H

#include <criterion/criterion.h>
#include <stdlib.h>

#include "plugin_env.h"
#include "plugin_loader.h"

static rm_loaded_plugin fixture_plugin;
static const rm_plugin_v1 *vt;

static inline void fixture_load(void)
{
    char error[1024];
    const char *path = getenv("RM_PLUGIN_PATH");
    cr_assert_not_null(path, "RM_PLUGIN_PATH must name the built rm_plugin.so");
    cr_assert_eq(rm_plugin_load(path, NULL, RM_ABI_VERSION(1, 0), RM_ABI_VERSION_CURRENT,
                                NULL, &fixture_plugin, error, sizeof error),
                 0, "%s", error);
    vt = fixture_plugin.vtable;
}

static inline void fixture_unload(void)
{
    rm_plugin_unload(&fixture_plugin);
    vt = NULL;
}

/* A context from key/value pairs (NULL-terminated), ignoring $RM_PLUGIN_CONFIG. */
static inline int32_t fixture_context(rm_context **out, const char *const *pairs)
{
    rm_config_entry entries[16];
    uint64_t count = 0;
    for (; pairs != NULL && pairs[2 * count] != NULL; count++)
        entries[count] = (rm_config_entry){.key = pairs[2 * count], .value = pairs[2 * count + 1]};
    return create_context_of(vt, entries, count, out);
}

/* Contexts a test opened, so that the suite's fini can destroy what a
 * failed test (which stops at its first failed assertion) left open. */
#define FIXTURE_MAX_CONTEXTS 64
static rm_context *fixture_open_contexts[FIXTURE_MAX_CONTEXTS];

static inline void fixture_track(rm_context *context)
{
    for (size_t i = 0; i < FIXTURE_MAX_CONTEXTS; i++) {
        if (fixture_open_contexts[i] == NULL) {
            fixture_open_contexts[i] = context;
            return;
        }
    }
    cr_assert_fail("more than %d contexts open", FIXTURE_MAX_CONTEXTS);
}

/* Destroys a context fixture_track() knows (or any other). */
static inline void fixture_close(rm_context *context)
{
    for (size_t i = 0; i < FIXTURE_MAX_CONTEXTS; i++)
        if (fixture_open_contexts[i] == context)
            fixture_open_contexts[i] = NULL;
    vt->context_destroy(context);
}

/* Newest first, as a test would have closed them. */
static inline void fixture_close_all(void)
{
    for (int i = FIXTURE_MAX_CONTEXTS - 1; i >= 0; i--) {
        if (fixture_open_contexts[i] != NULL)
            vt->context_destroy(fixture_open_contexts[i]);
        fixture_open_contexts[i] = NULL;
    }
}

#endif
