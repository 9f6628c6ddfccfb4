/* One load / negotiate / create / use / destroy / unload cycle, and the
 * process-wide counts that must not grow across cycles. Shared by the
 * Criterion test and by the plain driver that valgrind and LeakSanitizer
 * watch (Criterion's worker processes hide their exit status from them). */
#ifndef RM_TEST_LIFECYCLE_CYCLES_H
#define RM_TEST_LIFECYCLE_CYCLES_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_loader.h"

static int count_entries(const char *directory)
{
    DIR *dir = opendir(directory);
    if (dir == NULL)
        return -1;
    int count = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;)
        if (entry->d_name[0] != '.')
            count++;
    closedir(dir);
    return count;
}

/* AddressSanitizer keeps freed memory mapped in its quarantine (a pool's
 * owner-side slot table, 4 MiB, is one large chunk), so the maps grow by
 * design; its runtime can drain the quarantine on request. Weak, so that
 * builds without ASan see a null pointer and skip it. */
extern void __sanitizer_purge_allocator(void) __attribute__((weak));

static int count_mappings(void)
{
    if (__sanitizer_purge_allocator != NULL)
        __sanitizer_purge_allocator();
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return -1;
    int lines = 0;
    for (int c; (c = fgetc(maps)) != EOF;)
        lines += c == '\n';
    fclose(maps);
    return lines;
}

static void free_weights(void *weights, void *user)
{
    (void)user;
    free(weights);
}

static int32_t small_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)user, (void)key;
    void *weights = malloc(4096);
    if (weights == NULL)
        return RM_E_NO_MEMORY;
    out->model = weights;
    out->bytes = 4096;
    out->destroy = free_weights;
    return RM_OK;
}

/* Returns 0, or -1 with the reason in `why`. */
static int lifecycle_cycle(const char *path, char *why, size_t why_size)
{
    rm_loaded_plugin plugin;
    if (rm_plugin_load(path, NULL, RM_ABI_VERSION(1, 0), RM_ABI_VERSION_CURRENT, NULL,
                       &plugin, why, why_size) != 0)
        return -1;
    const rm_plugin_v1 *vt = plugin.vtable;
    /* A namespace of this process's own: the pool made below must not meet
     * (or be reaped by) another test's. */
    char name_space[40];
    snprintf(name_space, sizeof name_space, "lifecycle-%ld", (long)getpid());
    rm_config_entry entries[] = {{.key = "shm.namespace", .value = name_space}};
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    if (vt->features_built & RM_FEATURE_SHARED_MEMORY) {
        options.entries = entries;
        options.entry_count = 1;
    }
    rm_context *context;
    int result = 0;
    if (vt->context_create(&options, &context) != RM_OK) {
        snprintf(why, why_size, "context_create: %s", vt->context_last_error(NULL));
        result = -1;
    } else {
        if (vt->features_built & RM_FEATURE_MODEL_REGISTRY) {
            rm_model_handle *handle;
            void *model;
            if (vt->model_get_or_load(context, "cycle@cpu", small_loader, NULL, &handle,
                                      &model) != RM_OK ||
                vt->model_release(context, handle) != RM_OK) {
                snprintf(why, why_size, "registry: %s", vt->context_last_error(context));
                result = -1;
            }
        }
        /* A tensor makes the context's pool: its segments, mapping and
         * allocator arena must go with the context too. */
        if (result == 0 && (vt->features_built & RM_FEATURE_SHARED_MEMORY)) {
            rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
            spec.dtype = (rm_dtype){RM_DTYPE_UINT, 8, 1};
            spec.ndim = 1;
            spec.shape[0] = 4096;
            spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
            rm_tensor *tensor;
            if (vt->tensor_allocate(context, &spec, &tensor) != RM_OK ||
                vt->tensor_release(context, tensor) != RM_OK) {
                snprintf(why, why_size, "tensors: %s", vt->context_last_error(context));
                result = -1;
            }
        }
        vt->context_destroy(context);
    }
    rm_plugin_unload(&plugin);
    return result;
}

/* Runs one warm-up cycle (it maps the object, which stays: -z nodelete,
 * and warms libc), then `cycles` more, failing as soon as one leaves a
 * thread or descriptor behind, or when the mappings grow by more than a
 * few retained allocator extents. Returns 0 or -1 with `why`. */
static int lifecycle_run(const char *path, int cycles, char *why, size_t why_size)
{
    if (lifecycle_cycle(path, why, why_size) != 0)
        return -1;
    int threads = count_entries("/proc/self/task");
    int descriptors = count_entries("/proc/self/fd");
    int mappings = count_mappings();
    for (int cycle = 0; cycle < cycles; cycle++) {
        if (lifecycle_cycle(path, why, why_size) != 0)
            return -1;
        if (count_entries("/proc/self/task") != threads) {
            snprintf(why, why_size, "cycle %d left a thread behind", cycle);
            return -1;
        }
        if (count_entries("/proc/self/fd") != descriptors) {
            snprintf(why, why_size, "cycle %d left a descriptor open", cycle);
            return -1;
        }
    }
    /* ThreadSanitizer maps shadow memory for every region the allocator
     * maps and keeps it, so under TSan the count says nothing about us. */
    int grown = count_mappings() - mappings;
    if (getenv("RM_TEST_UNDER_TSAN") == NULL && grown > 16) {
        snprintf(why, why_size, "mappings grew by %d over %d cycles", grown, cycles);
        return -1;
    }
    return 0;
}

#endif
