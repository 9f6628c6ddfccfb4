/* How a C host finds, loads and negotiates with rm_plugin. */
#include "plugin_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int find_in_dirs(const char *dirs, char *out, size_t out_size)
{
    const char *cursor = dirs;
    while (cursor != NULL && *cursor != '\0') {
        size_t length = strcspn(cursor, ":");
        if (length > 0) {
            snprintf(out, out_size, "%.*s/%s", (int)length, cursor, RM_PLUGIN_FILE_NAME);
            if (access(out, R_OK) == 0)
                return 1;
        }
        cursor += length;
        if (*cursor == ':')
            cursor++;
    }
    return 0;
}

int rm_plugin_load(const char *explicit_path, const char *default_dir,
                   uint32_t min_abi, uint32_t max_abi,
                   const rm_host_services *services, rm_loaded_plugin *out,
                   char *error, size_t error_size)
{
    memset(out, 0, sizeof *out);
    if (explicit_path != NULL) {
        snprintf(out->path, sizeof out->path, "%s", explicit_path);
    } else if (!find_in_dirs(getenv(RM_PLUGIN_DIR_ENV), out->path, sizeof out->path) &&
               !find_in_dirs(default_dir, out->path, sizeof out->path)) {
        snprintf(error, error_size, "%s not found in $%s (%s) nor in %s",
                 RM_PLUGIN_FILE_NAME, RM_PLUGIN_DIR_ENV,
                 getenv(RM_PLUGIN_DIR_ENV) ? getenv(RM_PLUGIN_DIR_ENV) : "unset",
                 default_dir ? default_dir : "(none)");
        return -1;
    }

    out->library = dlopen(out->path, RTLD_NOW | RTLD_LOCAL);
    if (out->library == NULL) {
        snprintf(error, error_size, "dlopen %s: %s", out->path, dlerror());
        return -1;
    }
    rm_plugin_negotiate_fn negotiate;
    void *symbol = dlsym(out->library, RM_PLUGIN_ENTRY_POINT);
    /* POSIX sanctions this conversion of dlsym's result. */
    memcpy(&negotiate, &symbol, sizeof negotiate);
    if (negotiate == NULL) {
        snprintf(error, error_size, "%s has no %s: %s", out->path,
                 RM_PLUGIN_ENTRY_POINT, dlerror());
        dlclose(out->library);
        out->library = NULL;
        return -1;
    }

    char reason[512] = "";
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    request.min_abi_version = min_abi;
    request.max_abi_version = max_abi;
    request.services = services;
    request.error_buffer = reason;
    request.error_buffer_size = sizeof reason;
    int32_t status = negotiate(&request, &out->abi_version, &out->vtable);
    if (status != RM_OK) {
        snprintf(error, error_size, "negotiation with %s failed (%d): %s", out->path,
                 status, reason);
        dlclose(out->library);
        out->library = NULL;
        return status;
    }
    return 0;
}

void rm_plugin_unload(rm_loaded_plugin *plugin)
{
    if (plugin->library != NULL)
        dlclose(plugin->library);
    memset(plugin, 0, sizeof *plugin);
}
