/* The plugin and a context for test programs that are not Criterion
 * suites (peers, stress drivers): nothing here asserts or exits, the
 * caller says what failed in its own way. */
#ifndef RM_TEST_PLUGIN_ENV_H
#define RM_TEST_PLUGIN_ENV_H

#include <stdio.h>
#include <stdlib.h>

#include "plugin_loader.h"

/* Loads $RM_PLUGIN_PATH (the built rm_plugin.so, never a search) at
 * min_version or later; 0, or -1 with why in `error`. */
static inline int load_plugin_from_env(uint32_t min_version, rm_loaded_plugin *plugin,
                                       char *error, size_t size)
{
    const char *path = getenv("RM_PLUGIN_PATH");
    if (path == NULL) {
        snprintf(error, size, "RM_PLUGIN_PATH must name the built rm_plugin.so");
        return -1;
    }
    return rm_plugin_load(path, NULL, min_version, RM_ABI_VERSION_CURRENT, NULL, plugin, error,
                          size) == 0
               ? 0
               : -1;
}

/* A context of exactly these entries: $RM_PLUGIN_CONFIG is ignored, so
 * that the environment a test runs in cannot change what it configured. */
static inline int32_t create_context_of(const rm_plugin_v1 *vt, const rm_config_entry *entries,
                                        uint64_t count, rm_context **out)
{
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = entries;
    options.entry_count = count;
    options.flags = RM_CONTEXT_IGNORE_ENV;
    return vt->context_create(&options, out);
}

#endif
