/* How a C host finds, loads and negotiates with rm_plugin: the code that
 * rmctl, the integration tests and the benchmarks share. */
#ifndef RM_HOST_PLUGIN_LOADER_H
#define RM_HOST_PLUGIN_LOADER_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "rm_plugin.h"

/** Colon-separated plugin directories searched before the install default. */
#define RM_PLUGIN_DIR_ENV "REMOTEMEDIA_PLUGIN_DIR"
#define RM_PLUGIN_FILE_NAME "rm_plugin.so"

typedef struct rm_loaded_plugin {
    void *library;
    const rm_plugin_v1 *vtable;
    uint32_t abi_version;
    char path[PATH_MAX];
} rm_loaded_plugin;

/**
 * Finds the plugin (`explicit_path` if non-NULL; else the first
 * rm_plugin.so in $REMOTEMEDIA_PLUGIN_DIR, then in `default_dir`), loads it
 * with RTLD_NOW | RTLD_LOCAL and negotiates the range min..max with
 * `services` (may be NULL). Returns 0, or the negative rm_error / -1 for a
 * loader error, with a message in `error` (error_size bytes).
 */
int rm_plugin_load(const char *explicit_path, const char *default_dir,
                   uint32_t min_abi, uint32_t max_abi,
                   const rm_host_services *services, rm_loaded_plugin *out,
                   char *error, size_t error_size);

/** dlclose()s the plugin. */
void rm_plugin_unload(rm_loaded_plugin *plugin);

#endif
