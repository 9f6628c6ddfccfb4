/* model_holder: a process that holds a node-scope model for rmctl's tests
 * to look at (rmctl ls) and to leave behind when killed (rmctl gc).
 *
 *   model_holder NAMESPACE KEY MIB SECONDS [LOAD_MS]
 *
 * One context with registry.scope = node and registry.namespace =
 * NAMESPACE gets KEY; if nobody on the machine has it, this process's
 * loader fills a MIB MiB buffer from out->alloc_buffer(). With LOAD_MS the
 * loader, once it has its buffer, prints "LOADING KEY" and takes LOAD_MS
 * milliseconds more (time to look at, or kill, a loading model). Prints
 * "READY loaded KEY" or "READY attached KEY" once it holds the model, then
 * waits SECONDS or for SIGTERM/SIGINT, releases it and exits 0 (a SIGKILL
 * leaves its reference in the node table, which is the point). Exit status
 * 1 with a message on stderr on any failure.
 * KEY "-" gets no model: the process only has its context (so it is
 * attached to the node table), prints "READY idle" and waits the same way
 * (MIB is then ignored).
 *
 * The plugin: $RM_PLUGIN_PATH if set, else rm_plugin.so in
 * $REMOTEMEDIA_PLUGIN_DIR (check-rmctl.sh sets the latter).
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin_loader.h"

typedef struct holder_loader {
    uint64_t bytes;
    long load_ms;
    int calls;
} holder_loader;

static int32_t load(void *user, const char *key, rm_loaded_model *out)
{
    holder_loader *loader = user;
    loader->calls++;
    if (!RM_LOADED_MODEL_HAS_BUFFER(out))
        return RM_E_NOT_SHAREABLE;
    void *raw;
    int32_t status = out->alloc_buffer(out, loader->bytes, &raw);
    if (status != RM_OK)
        return status;
    if (loader->load_ms > 0) {
        printf("LOADING %s\n", key);
        fflush(stdout);
        struct timespec delay = {.tv_sec = loader->load_ms / 1000,
                                 .tv_nsec = (loader->load_ms % 1000) * 1000000L};
        nanosleep(&delay, NULL);
    }
    unsigned char *buffer = raw;
    for (uint64_t i = 0; i < loader->bytes; i += 4096)
        buffer[i] = (unsigned char)(i >> 12);
    return RM_OK;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: model_holder NAMESPACE KEY MIB SECONDS [LOAD_MS]\n");
        return 2;
    }
    const char *namespace_name = argv[1];
    const char *key = argv[2];
    holder_loader loader = {.bytes = strtoull(argv[3], NULL, 10) << 20,
                            .load_ms = argc == 6 ? strtol(argv[5], NULL, 10) : 0};
    long seconds = strtol(argv[4], NULL, 10);
    bool idle = strcmp(key, "-") == 0;
    if ((loader.bytes == 0 && !idle) || seconds <= 0 || loader.load_ms < 0) {
        fprintf(stderr, "model_holder: MIB and SECONDS must be positive\n");
        return 2;
    }

    /* Blocked before anything is set up, so that an early SIGTERM waits
     * for the release below instead of killing the process. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);

    rm_loaded_plugin plugin;
    char error[1024];
    if (rm_plugin_load(getenv("RM_PLUGIN_PATH"), NULL, RM_ABI_VERSION(1, 2),
                       RM_ABI_VERSION_CURRENT, NULL, &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "model_holder: %s\n", error);
        return 1;
    }
    const rm_plugin_v1 *vt = plugin.vtable;
    rm_config_entry entries[] = {
        {.key = "features", .value = "model-registry"},
        {.key = "registry.scope", .value = "node"},
        {.key = "registry.namespace", .value = namespace_name},
    };
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = entries;
    options.entry_count = sizeof entries / sizeof entries[0];
    options.flags = RM_CONTEXT_IGNORE_ENV;
    rm_context *context;
    int32_t status = vt->context_create(&options, &context);
    if (status != RM_OK) {
        fprintf(stderr, "model_holder: context_create: %s: %s\n", vt->error_name(status),
                vt->context_last_error(NULL));
        return 1;
    }
    rm_model_handle *handle = NULL;
    void *model;
    status = idle ? RM_OK : vt->model_get_or_load(context, key, load, &loader, &handle, &model);
    if (status != RM_OK) {
        fprintf(stderr, "model_holder: model_get_or_load %s: %s: %s\n", key,
                vt->error_name(status), vt->context_last_error(context));
        vt->context_destroy(context);
        return 1;
    }
    if (idle)
        printf("READY idle\n");
    else
        printf("READY %s %s\n", loader.calls ? "loaded" : "attached", key);
    fflush(stdout);

    struct timespec timeout = {.tv_sec = seconds};
    sigtimedwait(&stop, NULL, &timeout);

    if (handle != NULL)
        vt->model_release(context, handle);
    vt->context_destroy(context);
    rm_plugin_unload(&plugin);
    return 0;
}
