/* rmctl: the reference command-line host of rm_plugin.
 *
 *   rmctl [--plugin PATH] [--config FILE] [-c key=value]... COMMAND
 *
 *   info   name, version, ABI, features and the effective configuration
 *   ls     the shared-memory pools of the namespace (ABI 1.1) and the node
 *          registry's models (ABI 1.2)
 *   gc     reclaims what dead processes left in the namespace: pools (ABI
 *          1.1), node registry references, loads and segments, and the
 *          node table once nothing is left in it (ABI 1.2)
 *   demo   the plugin at work: the model registry shared by pipeline nodes,
 *          one model shared by several processes (node scope), then a
 *          tensor handed from one process to another
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plugin_loader.h"
#include "rm_build_config.h"

#define MAX_CONFIG_ENTRIES 64

typedef struct rmctl_options {
    const char *plugin_path;
    const char *config_path;
    rm_config_entry entries[MAX_CONFIG_ENTRIES];
    char *entry_storage[MAX_CONFIG_ENTRIES];
    uint64_t entry_count;
    const char *namespace_name; /* --namespace: shm.namespace and registry.namespace */
    const char *command;
} rmctl_options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rmctl [--plugin PATH] [--config FILE] [--namespace NAME]\n"
            "             [-c key=value]... COMMAND\n"
            "\n"
            "commands:\n"
            "  info   plugin name, version, ABI, features, effective configuration\n"
            "  ls     the shared-memory pools of shm.namespace: owner, alive, bytes,\n"
            "         live tensors, importing holders; then the node registry of\n"
            "         registry.namespace: key, bytes, state (ready/loading), holder\n"
            "         processes, references, idle time, age, loader pid\n"
            "  gc     pools: unlinks the segments of dead owners and says how many\n"
            "         (creating a context already does this; gc tells the two apart);\n"
            "         node registry: registry_reclaim drops the references of dead\n"
            "         processes, clears dead loaders' claims, evicts idle models past\n"
            "         TTL or budget, unlinks orphan segments, removes the node table\n"
            "         when nothing is left in it (no model, no load, no live process),\n"
            "         and says how many of each; then lists what is left\n"
            "  demo   the model registry shared by pipeline nodes; one 64 MiB model\n"
            "         shared by 5 processes in node scope (one loader call, the Pss of\n"
            "         each); a tensor handed to a forked process without a copy\n"
            "\n"
            "options:\n"
            "  --plugin PATH     load this rm_plugin.so\n"
            "  --config FILE     configuration file (else $%s)\n"
            "  --namespace NAME  the namespace ls and gc look at: sets both\n"
            "                    shm.namespace (pools) and registry.namespace (node\n"
            "                    registry); -c pairs override it\n"
            "  -c key=value      configuration pair, after the file; repeatable\n"
            "                    (-c shm.namespace=A -c registry.namespace=B picks the\n"
            "                    two namespaces separately)\n"
            "\n"
            "ls and gc show each part the plugin has: pools need shared-memory (ABI\n"
            "1.1), the node registry needs model-registry (ABI 1.2); a part not built\n"
            "is reported as such. A part the configuration disables, or any error,\n"
            "gives exit status 1. ls never creates a node table: a namespace without\n"
            "/dev/shm/rmreg.<namespace>.table is reported as having none. gc creates\n"
            "one only to unlink orphan model segments of the namespace (and removes it\n"
            "again).\n"
            "\n"
            "The plugin is looked up in $%s (colon-separated), then in\n"
            "%s.\n",
            RM_CONFIG_ENV,
            RM_PLUGIN_DIR_ENV, RM_DEFAULT_PLUGIN_DIR);
}

static int parse_arguments(int argc, char **argv, rmctl_options *options)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if ((strcmp(arg, "--plugin") == 0 || strcmp(arg, "--config") == 0 ||
             strcmp(arg, "--namespace") == 0 || strcmp(arg, "-c") == 0) && i + 1 >= argc) {
            fprintf(stderr, "rmctl: %s needs a value\n", arg);
            return -1;
        }
        if (strcmp(arg, "--plugin") == 0) {
            options->plugin_path = argv[++i];
        } else if (strcmp(arg, "--config") == 0) {
            options->config_path = argv[++i];
        } else if (strcmp(arg, "--namespace") == 0) {
            options->namespace_name = argv[++i];
        } else if (strcmp(arg, "-c") == 0) {
            char *pair = argv[++i];
            char *equals = strchr(pair, '=');
            if (equals == NULL || equals == pair) {
                fprintf(stderr, "rmctl: -c expects key=value, got '%s'\n", pair);
                return -1;
            }
            if (options->entry_count == MAX_CONFIG_ENTRIES) {
                fprintf(stderr, "rmctl: more than %d -c options\n", MAX_CONFIG_ENTRIES);
                return -1;
            }
            char *key = strndup(pair, (size_t)(equals - pair));
            options->entry_storage[options->entry_count] = key;
            options->entries[options->entry_count++] =
                (rm_config_entry){.key = key, .value = equals + 1};
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (arg[0] == '-') {
            fprintf(stderr, "rmctl: unknown option '%s'\n", arg);
            return -1;
        } else if (options->command == NULL) {
            options->command = arg;
        } else {
            fprintf(stderr, "rmctl: unexpected argument '%s'\n", arg);
            return -1;
        }
    }
    if (options->command == NULL) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int plugin_knows_key(const rm_plugin_v1 *vt, const char *key)
{
    for (uint32_t i = 0; vt->config_key_at(i) != NULL; i++)
        if (strcmp(vt->config_key_at(i), key) == 0)
            return 1;
    return 0;
}

/* The context's entries, later ones winning: `defaults` (what a command
 * needs unless the user says otherwise), --namespace, the user's -c pairs,
 * then `overrides` (what the command cannot work without). Keys this
 * plugin does not know (an older minor) are left out of --namespace and
 * of the overrides, so that rmctl still runs against it. */
static int create_context_with(const rm_loaded_plugin *plugin, const rmctl_options *options,
                               const rm_config_entry *defaults, uint64_t default_count,
                               const rm_config_entry *overrides, uint64_t override_count,
                               rm_context **out)
{
    enum { MAX_EXTRA = 8 };
    rm_config_entry entries[MAX_CONFIG_ENTRIES + 2 + 2 * MAX_EXTRA];
    uint64_t count = 0;
    if (default_count > MAX_EXTRA || override_count > MAX_EXTRA)
        return RM_E_INVALID_ARGUMENT;
    for (uint64_t i = 0; i < default_count; i++)
        entries[count++] = defaults[i];
    if (options->namespace_name != NULL) {
        static const char *const namespace_keys[] = {"shm.namespace", "registry.namespace"};
        for (size_t i = 0; i < sizeof namespace_keys / sizeof namespace_keys[0]; i++)
            if (plugin_knows_key(plugin->vtable, namespace_keys[i]))
                entries[count++] = (rm_config_entry){.key = namespace_keys[i],
                                                     .value = options->namespace_name};
    }
    for (uint64_t i = 0; i < options->entry_count; i++)
        entries[count++] = options->entries[i];
    for (uint64_t i = 0; i < override_count; i++)
        if (plugin_knows_key(plugin->vtable, overrides[i].key))
            entries[count++] = overrides[i];
    rm_context_options context_options = RM_STRUCT_INIT(rm_context_options);
    context_options.entries = entries;
    context_options.entry_count = count;
    context_options.config_path = options->config_path;
    int32_t status = plugin->vtable->context_create(&context_options, out);
    if (status != RM_OK) {
        fprintf(stderr, "rmctl: context_create failed: %s (%s): %s\n",
                plugin->vtable->error_name(status), plugin->vtable->strerror(status),
                plugin->vtable->context_last_error(NULL));
        return status;
    }
    return 0;
}

static int create_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                          const rm_config_entry *extra, uint64_t extra_count,
                          rm_context **out)
{
    return create_context_with(plugin, options, extra, extra_count, NULL, 0, out);
}

/* Commands that must not open (and so create) a node table whatever the
 * configuration says use this. */
static const rm_config_entry process_scope[] = {{.key = "registry.scope", .value = "process"}};

static void print_features(uint64_t features)
{
    int any = 0;
    if (features & RM_FEATURE_MODEL_REGISTRY) {
        printf("model-registry");
        any = 1;
    }
    if (features & RM_FEATURE_SHARED_MEMORY) {
        printf("%sshared-memory", any ? "," : "");
        any = 1;
    }
    if (!any)
        printf("none");
}

static int command_info(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_context *context;
    if (create_context(plugin, options, NULL, 0, &context) != 0)
        return 1;
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    vt->context_info(context, &info);
    printf("plugin:       %s %s\n", vt->name, vt->version);
    printf("path:         %s\n", plugin->path);
    printf("ABI:          %u.%u negotiated (plugin implements up to %u.%u)\n",
           RM_ABI_VERSION_MAJOR(plugin->abi_version), RM_ABI_VERSION_MINOR(plugin->abi_version),
           RM_ABI_VERSION_MAJOR(vt->abi_version), RM_ABI_VERSION_MINOR(vt->abi_version));
    printf("built:        ");
    print_features(vt->features_built);
    printf("\nenabled:      ");
    print_features(info.features_enabled);
    printf("\nallocator:    %s", info.allocator[0] ? info.allocator : "none (shared-memory not built)");
    if (info.allocator_arena != UINT32_MAX)
        printf(" (private arena %u checked)", info.allocator_arena);
    printf("\nconfiguration:\n");
    for (uint32_t i = 0; vt->config_key_at(i) != NULL; i++) {
        char value[256];
        const char *key = vt->config_key_at(i);
        if (vt->config_get(context, key, value, sizeof value, NULL) == RM_OK)
            printf("  %-20s = %s\n", key, value);
    }
    vt->context_destroy(context);
    return 0;
}

/* ---- ls and gc: the pools of a namespace ---------------------------------- */

static void format_bytes(uint64_t bytes, char *out, size_t out_size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double value = (double)bytes;
    unsigned unit = 0;
    while (value >= 1024.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1024.0;
        unit++;
    }
    if (unit == 0)
        snprintf(out, out_size, "%" PRIu64 " B", bytes);
    else
        snprintf(out, out_size, "%.1f %s", value, units[unit]);
}

static void report_failure(const rm_plugin_v1 *vt, const rm_context *context,
                           const char *what, int32_t status)
{
    fprintf(stderr, "rmctl: %s: %s (%s): %s\n", what, vt->error_name(status),
            vt->strerror(status), vt->context_last_error(context));
}

/* ls and gc call members of ABI 1.1; an older plugin does not have them. */
static int require_shm_listing(const rm_loaded_plugin *plugin, const char *command)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    if (RM_PLUGIN_HAS(vt, shm_list) && RM_PLUGIN_HAS(vt, tensor_reclaim))
        return 0;
    fprintf(stderr, "rmctl: %s: %s does not provide shm_list and tensor_reclaim (ABI 1.1 "
            "members; it reports ABI %u.%u)\n", command, plugin->path,
            RM_ABI_VERSION_MAJOR(vt->abi_version), RM_ABI_VERSION_MINOR(vt->abi_version));
    return -1;
}

/* Every pool of the context's namespace, in a malloc()ed array. */
static int32_t list_pools(const rm_plugin_v1 *vt, rm_context *context,
                          rm_shm_pool_info **out_rows, uint32_t *out_count)
{
    uint32_t capacity = 16;
    for (;;) {
        rm_shm_pool_info *rows = calloc(capacity, sizeof *rows);
        if (rows == NULL)
            return RM_E_NO_MEMORY;
        for (uint32_t i = 0; i < capacity; i++)
            rows[i] = (rm_shm_pool_info)RM_STRUCT_INIT(rm_shm_pool_info);
        uint32_t count = 0;
        int32_t status = vt->shm_list(context, rows, sizeof rows[0], capacity, &count);
        if (status == RM_OK) {
            *out_rows = rows;
            *out_count = count;
            return RM_OK;
        }
        free(rows);
        if (status != RM_E_BUFFER_TOO_SMALL)
            return status;
        capacity = count + 16; /* pools may appear between the two calls */
    }
}

static void print_pool_table(const rm_shm_pool_info *rows, uint32_t count)
{
    if (count == 0) {
        printf("no pools\n");
        return;
    }
    int name_width = (int)strlen("NAME");
    for (uint32_t i = 0; i < count; i++)
        if ((int)strlen(rows[i].name) > name_width)
            name_width = (int)strlen(rows[i].name);
    printf("%-*s %8s %5s %10s %10s %7s %10s %7s\n", name_width, "NAME", "PID", "ALIVE",
           "POOL", "COMMITTED", "TENSORS", "LIVE", "HOLDERS");
    for (uint32_t i = 0; i < count; i++) {
        const rm_shm_pool_info *row = &rows[i];
        if (!row->readable) {
            printf("%-*s %8" PRIu32 " %5s  (control segment unreadable: another user's, or "
                   "damaged)\n", name_width, row->name, row->owner_pid, "?");
            continue;
        }
        char pool[32], committed[32], live[32];
        format_bytes(row->pool_bytes, pool, sizeof pool);
        format_bytes(row->committed_bytes, committed, sizeof committed);
        format_bytes(row->live_bytes, live, sizeof live);
        printf("%-*s %8" PRIu32 " %5s %10s %10s %7" PRIu64 " %10s %7" PRIu32 "\n",
               name_width, row->name, row->owner_pid, row->owner_alive ? "yes" : "no", pool,
               committed, row->live_tensors, live, row->holders);
    }
}

static int print_namespace_pools(const rm_plugin_v1 *vt, rm_context *context)
{
    rm_shm_pool_info *rows;
    uint32_t count;
    int32_t status = list_pools(vt, context, &rows, &count);
    if (status != RM_OK) {
        report_failure(vt, context, "shm_list", status);
        return 1;
    }
    print_pool_table(rows, count);
    free(rows);
    return 0;
}

static void print_namespace(const rm_plugin_v1 *vt, rm_context *context)
{
    char name[64];
    if (vt->config_get(context, "shm.namespace", name, sizeof name, NULL) == RM_OK)
        printf("namespace %s\n", name);
}

/* ---- ls and gc: the node registry of a namespace (ABI 1.2) --------------- */

/* Why the node registry cannot be shown, or NULL when it can. */
static const char *node_registry_missing(const rm_loaded_plugin *plugin, char *why,
                                         size_t why_size)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    if ((vt->features_built & RM_FEATURE_MODEL_REGISTRY) == 0) {
        snprintf(why, why_size, "model-registry not built into %s", plugin->path);
        return why;
    }
    if (!RM_PLUGIN_HAS(vt, registry_reclaim) ||
        plugin->abi_version < RM_ABI_VERSION(1, 2)) {
        snprintf(why, why_size, "%s has no node scope (ABI 1.2; it reports ABI %u.%u)",
                 plugin->path, RM_ABI_VERSION_MAJOR(vt->abi_version),
                 RM_ABI_VERSION_MINOR(vt->abi_version));
        return why;
    }
    return NULL;
}

static void node_table_path(const char *namespace_name, char *out, size_t out_size)
{
    snprintf(out, out_size, "/dev/shm/rmreg.%s.table", namespace_name);
}

/* Files of the namespace's node registry in /dev/shm (the table and model
 * segments, rmreg.<namespace>.*); `remove` unlinks them. */
static int node_namespace_files(const char *namespace_name, int models_only, int remove)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.%s", namespace_name, models_only ? "m." : "");
    DIR *directory = opendir("/dev/shm");
    if (directory == NULL)
        return 0;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        if (strncmp(entry->d_name, prefix, strlen(prefix)) != 0)
            continue;
        if (remove) {
            char path[512];
            snprintf(path, sizeof path, "/dev/shm/%s", entry->d_name);
            if (unlink(path) != 0)
                continue;
        }
        count++;
    }
    closedir(directory);
    return count;
}

/* The node table of `namespace_name`, opened through a context of its own. */
static int create_node_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                               const char *namespace_name, rm_context **out)
{
    const rm_config_entry node[] = {
        {.key = "registry.scope", .value = "node"},
        {.key = "registry.namespace", .value = namespace_name},
    };
    return create_context_with(plugin, options, NULL, 0, node, 2, out);
}

/* Every row of the context's registry, in a malloc()ed array. */
static int32_t list_models(const rm_plugin_v1 *vt, rm_context *context,
                           rm_model_info **out_rows, uint32_t *out_count)
{
    uint32_t capacity = 16;
    for (;;) {
        rm_model_info *rows = calloc(capacity, sizeof *rows);
        if (rows == NULL)
            return RM_E_NO_MEMORY;
        for (uint32_t i = 0; i < capacity; i++)
            rows[i] = (rm_model_info)RM_STRUCT_INIT(rm_model_info);
        uint32_t count = 0;
        int32_t status = vt->registry_list(context, rows, sizeof rows[0], capacity, &count);
        if (status == RM_OK) {
            *out_rows = rows;
            *out_count = count < capacity ? count : capacity;
            return RM_OK;
        }
        free(rows);
        if (status != RM_E_BUFFER_TOO_SMALL)
            return status;
        capacity = count + 16; /* loads may begin between the two calls */
    }
}

static uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void format_duration_ns(uint64_t ns, char *out, size_t out_size)
{
    if (ns < 1000000u)
        snprintf(out, out_size, "%.0fus", (double)ns / 1e3);
    else if (ns < 1000000000u)
        snprintf(out, out_size, "%.1fms", (double)ns / 1e6);
    else
        snprintf(out, out_size, "%.1fs", (double)ns / 1e9);
}

/* One line per model: KEY BYTES(2 fields) STATE HOLDERS REFS IDLE AGE
 * LOADER; IDLE is "-" while held or loading, LOADER "-" unless loading. */
static void print_model_table(const rm_model_info *rows, uint32_t count, const char *indent)
{
    if (count == 0) {
        printf("%sno models\n", indent);
        return;
    }
    int key_width = (int)strlen("KEY");
    for (uint32_t i = 0; i < count; i++)
        if ((int)strlen(rows[i].key) > key_width)
            key_width = (int)strlen(rows[i].key);
    printf("%s%-*s %10s %-7s %7s %5s %8s %8s %7s\n", indent, key_width, "KEY", "BYTES",
           "STATE", "HOLDERS", "REFS", "IDLE", "AGE", "LOADER");
    uint64_t now = monotonic_ns();
    for (uint32_t i = 0; i < count; i++) {
        const rm_model_info *row = &rows[i];
        int ready = row->state == RM_MODEL_STATE_READY;
        char bytes[32], idle[32] = "-", age[32] = "-", loader[16] = "-";
        format_bytes(row->bytes, bytes, sizeof bytes);
        if (ready && row->refcount == 0)
            format_duration_ns(row->idle_ns, idle, sizeof idle);
        if (ready && row->loaded_at_ns != 0 && row->loaded_at_ns <= now)
            format_duration_ns(now - row->loaded_at_ns, age, sizeof age);
        if (!ready && row->loader_pid > 0)
            snprintf(loader, sizeof loader, "%" PRId32, row->loader_pid);
        printf("%s%-*s %10s %-7s %7" PRIu32 " %5" PRIu64 " %8s %8s %7s\n", indent, key_width,
               row->key, bytes,
               ready ? "ready" : row->state == RM_MODEL_STATE_LOADING ? "loading" : "?",
               row->holders, row->refcount, idle, age, loader);
    }
}

static int print_node_models(const rm_plugin_v1 *vt, rm_context *context, const char *indent)
{
    rm_model_info *rows;
    uint32_t count;
    int32_t status = list_models(vt, context, &rows, &count);
    if (status != RM_OK) {
        report_failure(vt, context, "registry_list", status);
        return 1;
    }
    print_model_table(rows, count, indent);
    free(rows);
    return 0;
}

static void print_node_header(const rm_plugin_v1 *vt, rm_context *context,
                              const char *namespace_name)
{
    char path[128];
    node_table_path(namespace_name, path, sizeof path);
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    char bytes[32] = "?";
    if (vt->registry_metrics(context, &metrics) == RM_OK)
        format_bytes(metrics.bytes, bytes, sizeof bytes);
    printf("node registry %s (%s): %" PRIu64 " models ready, %s\n", namespace_name, path,
           metrics.models, bytes);
}

/* The node-registry part of ls and gc: the namespace is registry.namespace
 * of `context` (any scope). Returns 0 when shown (or not built), 1 on an
 * error, which it reports. */
typedef int (*node_part_fn)(const rm_loaded_plugin *plugin, const rmctl_options *options,
                            const char *namespace_name);

static int node_part(const rm_loaded_plugin *plugin, const rmctl_options *options,
                     rm_context *context, node_part_fn part)
{
    char why[PATH_MAX + 128];
    printf("\n");
    if (node_registry_missing(plugin, why, sizeof why) != NULL) {
        printf("node registry: %s\n", why);
        return 0;
    }
    char namespace_name[64];
    int32_t status = plugin->vtable->config_get(context, "registry.namespace", namespace_name,
                                                sizeof namespace_name, NULL);
    if (status != RM_OK) {
        report_failure(plugin->vtable, context, "config_get registry.namespace", status);
        return 1;
    }
    return part(plugin, options, namespace_name);
}

static int ls_node_registry(const rm_loaded_plugin *plugin, const rmctl_options *options,
                            const char *namespace_name)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    char path[128];
    node_table_path(namespace_name, path, sizeof path);
    struct stat table;
    if (stat(path, &table) != 0) {
        /* Opening the registry would create the table: say so instead. */
        printf("node registry %s: no node table (%s does not exist: nothing was loaded "
               "in node scope)\n", namespace_name, path);
        return 0;
    }
    rm_context *context;
    if (create_node_context(plugin, options, namespace_name, &context) != 0)
        return 1;
    print_node_header(vt, context, namespace_name);
    int result = print_node_models(vt, context, "");
    vt->context_destroy(context);
    return result;
}

static int gc_node_registry(const rm_loaded_plugin *plugin, const rmctl_options *options,
                            const char *namespace_name)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    char path[128];
    node_table_path(namespace_name, path, sizeof path);
    struct stat table;
    if (stat(path, &table) != 0) {
        int orphans = node_namespace_files(namespace_name, 1, 0);
        if (orphans == 0) {
            printf("node registry %s: no node table (%s does not exist), no model "
                   "segments: nothing to reclaim\n", namespace_name, path);
            return 0;
        }
        /* Only registry_reclaim() can tell a live loader's segment from an
         * orphan, and it needs the table. */
        printf("node registry %s: no node table, but %d model segments: opening the "
               "registry (creates %s) to reclaim them\n", namespace_name, orphans, path);
    }
    rm_context *context;
    if (create_node_context(plugin, options, namespace_name, &context) != 0)
        return 1;
    /* Two passes, so that the report tells the table from orphan segments
     * (both are counted in segments_unlinked). The plugin removes the
     * table only when the calling context is the last one using it; while
     * `keeper`, a second context of this process, exists the first pass
     * reclaims everything else (orphans included) and keeps the table.
     * The second pass, after the keeper is gone, finds nothing else left
     * to unlink (bar an orphan made in the milliseconds between), so what
     * it unlinks is the table. */
    rm_context *keeper;
    if (create_node_context(plugin, options, namespace_name, &keeper) != 0) {
        vt->context_destroy(context);
        return 1;
    }
    rm_registry_reclaim_report first = RM_STRUCT_INIT(rm_registry_reclaim_report);
    rm_registry_reclaim_report second = RM_STRUCT_INIT(rm_registry_reclaim_report);
    rm_registry_metrics keeper_metrics = RM_STRUCT_INIT(rm_registry_metrics);
    int32_t status = vt->registry_reclaim(context, &first);
    if (status == RM_OK) /* its sweeper may have dropped dead references too */
        status = vt->registry_metrics(keeper, &keeper_metrics);
    vt->context_destroy(keeper);
    if (status == RM_OK)
        status = vt->registry_reclaim(context, &second);
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    if (status == RM_OK)
        status = vt->registry_metrics(context, &metrics);
    if (status != RM_OK) {
        report_failure(vt, context, "gc: registry_reclaim", status);
        vt->context_destroy(context);
        return 1;
    }
    rm_registry_reclaim_report report = first;
    report.dead_references += second.dead_references;
    report.loads_abandoned += second.loads_abandoned;
    report.models_evicted += second.models_evicted;
    report.segments_unlinked += second.segments_unlinked;
    report.bytes_unlinked += second.bytes_unlinked;
    int table_removed = second.segments_unlinked > 0;
    /* A node context also sweeps on its own (every min(1 s, ttl/4)), and
     * may have dropped dead references before registry_reclaim() ran: its
     * metrics count both, the report only the latter. */
    uint64_t by_contexts = metrics.dead_references + keeper_metrics.dead_references;
    uint64_t swept = by_contexts >= report.dead_references ? by_contexts - report.dead_references
                                                           : 0;
    print_node_header(vt, context, namespace_name);
    char bytes[32];
    format_bytes(report.bytes_unlinked, bytes, sizeof bytes);
    printf("by the context's own sweep:      %" PRIu64 " dead references dropped\n", swept);
    printf("by gc (registry_reclaim):        %" PRIu64 " dead references dropped, %" PRIu64
           " loads abandoned, %" PRIu64 " models evicted, %" PRIu64
           " segments unlinked, %s freed\n",
           report.dead_references, report.loads_abandoned, report.models_evicted,
           report.segments_unlinked, bytes);
    printf("dead references dropped in all:  %" PRIu64 "\n", swept + report.dead_references);
    if (metrics.lock_recoveries + keeper_metrics.lock_recoveries != 0)
        printf("table lock found held by a dead process and recovered: %" PRIu64 " times\n",
               metrics.lock_recoveries + keeper_metrics.lock_recoveries);
    if (table_removed) {
        char table_bytes[32];
        format_bytes(second.bytes_unlinked, table_bytes, sizeof table_bytes);
        printf("node table removed: %s (%s; one of the segments unlinked): nothing was left "
               "in namespace %s (no model, no load, no live process)\n",
               path, table_bytes, namespace_name);
    } else {
        printf("node table kept: %s (models or loads in it, or live processes using it)\n",
               path);
    }
    printf("models left:\n");
    int result = print_node_models(vt, context, "");
    vt->context_destroy(context);
    return result;
}

/* Contexts of ls and gc run in process scope (process_scope), whatever the
 * configuration says, so that looking never creates a node table. */
static int command_ls(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_context *context;
    if (create_context_with(plugin, options, NULL, 0, process_scope, 1, &context) != 0)
        return 1;
    int result = 0, shown = 0;
    if ((vt->features_built & RM_FEATURE_SHARED_MEMORY) == 0) {
        printf("pools: shared-memory not built into %s\n", plugin->path);
    } else if (require_shm_listing(plugin, "ls") != 0) {
        result = 1;
    } else {
        rm_shm_pool_info *rows;
        uint32_t count;
        int32_t status = list_pools(vt, context, &rows, &count);
        if (status != RM_OK) {
            report_failure(vt, context, "ls", status);
            result = 1;
        } else {
            print_namespace(vt, context);
            print_pool_table(rows, count);
            free(rows);
            shown = 1;
        }
    }
    char why[PATH_MAX + 128];
    if (node_registry_missing(plugin, why, sizeof why) == NULL)
        shown = 1;
    result |= node_part(plugin, options, context, ls_node_registry);
    vt->context_destroy(context);
    if (!shown && result == 0) {
        fprintf(stderr, "rmctl: ls: nothing to list: neither shared-memory nor the node "
                        "registry is built into %s\n", plugin->path);
        result = 1;
    }
    return result;
}

static int gc_pools(const rm_loaded_plugin *plugin, rm_context *context)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    int32_t status = vt->tensor_reclaim(context, &report);
    /* Creating the context already unlinked the segments of dead owners
     * that it found, before tensor_reclaim() could see them; the pool
     * counters say how many. */
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    if (status == RM_OK)
        status = vt->tensor_pool_stats(context, &stats);
    if (status != RM_OK) {
        report_failure(vt, context, "gc", status);
        return 1;
    }
    print_namespace(vt, context);
    char bytes[32];
    format_bytes(stats.startup_bytes_unlinked, bytes, sizeof bytes);
    printf("at start-up (context creation): %" PRIu64 " segments of dead owners unlinked, %s\n",
           stats.startup_segments_unlinked, bytes);
    format_bytes(report.bytes_unlinked, bytes, sizeof bytes);
    printf("by gc (tensor_reclaim):         %" PRIu64 " segments of dead owners unlinked, %s\n",
           report.segments_unlinked, bytes);
    printf("pools left:\n");
    return print_namespace_pools(vt, context);
}

static int command_gc(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_context *context;
    if (create_context_with(plugin, options, NULL, 0, process_scope, 1, &context) != 0)
        return 1;
    int result = 0, shown = 0;
    if ((vt->features_built & RM_FEATURE_SHARED_MEMORY) == 0) {
        printf("pools: shared-memory not built into %s\n", plugin->path);
    } else if (require_shm_listing(plugin, "gc") != 0) {
        result = 1;
    } else {
        result = gc_pools(plugin, context);
        shown = 1;
    }
    char why[PATH_MAX + 128];
    if (node_registry_missing(plugin, why, sizeof why) == NULL)
        shown = 1;
    result |= node_part(plugin, options, context, gc_node_registry);
    vt->context_destroy(context);
    if (!shown && result == 0) {
        fprintf(stderr, "rmctl: gc: nothing to reclaim: neither shared-memory nor the node "
                        "registry is built into %s\n", plugin->path);
        result = 1;
    }
    return result;
}

/* ---- demo ---------------------------------------------------------------- */

static double now_ms(void)
{
    return (double)monotonic_ns() / 1e6;
}

/* A stand-in for a model file: weights of a given size, made the way a real
 * loader makes them (allocated, every page written), after a delay that
 * stands for parsing. */
typedef struct demo_model {
    char key[RM_MODEL_KEY_MAX];
    unsigned char *weights;
    size_t bytes;
} demo_model;

typedef struct demo_loader {
    size_t bytes;
    unsigned delay_ms;
    int32_t fail_with; /* 0: succeed */
    atomic_int calls;
} demo_loader;

static void demo_model_destroy(void *model, void *user)
{
    demo_model *m = model;
    printf("      destroy callback: %s (%zu MiB) freed\n", m->key, m->bytes >> 20);
    free(m->weights);
    free(m);
}

static int32_t demo_load(void *user, const char *key, rm_loaded_model *out)
{
    demo_loader *loader = user;
    atomic_fetch_add(&loader->calls, 1);
    struct timespec delay = {.tv_sec = loader->delay_ms / 1000,
                             .tv_nsec = (long)(loader->delay_ms % 1000) * 1000000L};
    nanosleep(&delay, NULL);
    if (loader->fail_with != 0)
        return loader->fail_with;
    demo_model *model = calloc(1, sizeof *model);
    if (model == NULL)
        return RM_E_NO_MEMORY;
    model->weights = malloc(loader->bytes);
    if (model->weights == NULL) {
        free(model);
        return RM_E_NO_MEMORY;
    }
    memset(model->weights, 0x5a, loader->bytes);
    model->bytes = loader->bytes;
    snprintf(model->key, sizeof model->key, "%s", key);
    out->model = model;
    out->bytes = loader->bytes;
    out->destroy = demo_model_destroy;
    return RM_OK;
}

typedef struct demo_node {
    const rm_plugin_v1 *vt;
    rm_context *context;
    const char *key;
    demo_loader *loader;
    rm_model_handle *handle;
    void *model;
    int32_t status;
    double waited_ms;
} demo_node;

static void *demo_node_run(void *arg)
{
    demo_node *node = arg;
    double start = now_ms();
    node->status = node->vt->model_get_or_load(node->context, node->key, demo_load,
                                               node->loader, &node->handle, &node->model);
    node->waited_ms = now_ms() - start;
    return NULL;
}

static int run_nodes(demo_node *nodes, int count)
{
    pthread_t threads[16];
    for (int i = 0; i < count; i++)
        if (pthread_create(&threads[i], NULL, demo_node_run, &nodes[i]) != 0)
            return -1;
    for (int i = 0; i < count; i++)
        pthread_join(threads[i], NULL);
    return 0;
}

static void print_registry(const rm_plugin_v1 *vt, rm_context *context)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    vt->registry_metrics(context, &metrics);
    printf("      metrics: hits %" PRIu64 ", misses %" PRIu64 ", loads %" PRIu64
           ", failures %" PRIu64 ", evictions %" PRIu64 " (ttl %" PRIu64 ", lru %" PRIu64
           ", explicit %" PRIu64 "), models %" PRIu64 ", %.1f MiB, hit rate %.2f%%\n",
           metrics.hits, metrics.misses, metrics.loads, metrics.load_failures,
           metrics.evictions, metrics.evictions_ttl, metrics.evictions_lru,
           metrics.evictions_explicit, metrics.models, (double)metrics.bytes / (1 << 20),
           metrics.hit_rate * 100.0);
    rm_model_info rows[16];
    uint32_t count = 0;
    vt->registry_list(context, rows, sizeof rows[0], 16, &count);
    for (uint32_t i = 0; i < count && i < 16; i++)
        printf("      %-28s device %-7s %6.1f MiB  refs %" PRIu64 "\n", rows[i].key,
               rows[i].device, (double)rows[i].bytes / (1 << 20), rows[i].refcount);
}

static int demo_registry(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    enum { NODES = 6 };
    printf("\n== Model registry (process scope) ==\n");
    rm_config_entry config[] = {
        {.key = "features", .value = "model-registry"},
        {.key = "registry.ttl_s", .value = "1"},
        {.key = "registry.max_models", .value = "2"},
    };
    rm_context *context;
    if (create_context_with(plugin, options, config, 3, process_scope, 1, &context) != 0)
        return 1;

    demo_loader whisper = {.bytes = 48u << 20, .delay_ms = 300};
    demo_node nodes[NODES];
    printf("1. %d pipeline nodes on %d threads ask for whisper-tiny@cpu at once\n"
           "   (the loader takes %u ms and builds %zu MiB of weights)\n",
           NODES, NODES, whisper.delay_ms, whisper.bytes >> 20);
    for (int i = 0; i < NODES; i++)
        nodes[i] = (demo_node){.vt = vt, .context = context,
                               .key = i % 2 ? "whisper-tiny@CPU" : "whisper-tiny@cpu",
                               .loader = &whisper};
    double start = now_ms();
    run_nodes(nodes, NODES);
    int same = 1;
    for (int i = 0; i < NODES; i++) {
        if (nodes[i].status != RM_OK) {
            fprintf(stderr, "rmctl: node %d: %s: %s\n", i, vt->error_name(nodes[i].status),
                    vt->context_last_error(context));
            return 1;
        }
        same &= nodes[i].model == nodes[0].model;
    }
    printf("   loader calls: %d; all %d nodes got the same instance: %s; %.0f ms in all\n",
           atomic_load(&whisper.calls), NODES, same ? "yes" : "NO", now_ms() - start);

    printf("2. a later node asks again (a hit): ");
    rm_model_handle *handle;
    void *model;
    enum { HITS = 100000 };
    start = now_ms();
    for (int i = 0; i < HITS; i++) {
        vt->model_get_or_load(context, "whisper-tiny@cpu", demo_load, &whisper, &handle, &model);
        vt->model_release(context, handle);
    }
    printf("%.0f ns per get + release over %d rounds, loader calls still %d\n",
           (now_ms() - start) * 1e6 / HITS, HITS, atomic_load(&whisper.calls));

    printf("3. a loader that fails: 3 nodes wait on broken@cuda:0, whose loader returns -1000\n");
    demo_loader broken = {.bytes = 1 << 20, .delay_ms = 100, .fail_with = -1000};
    demo_node failing[3];
    for (int i = 0; i < 3; i++)
        failing[i] = (demo_node){.vt = vt, .context = context, .key = "broken@cuda:0",
                                 .loader = &broken};
    run_nodes(failing, 3);
    printf("   loader calls %d; the nodes got %d, %d, %d; the registry keeps no entry\n",
           atomic_load(&broken.calls), failing[0].status, failing[1].status,
           failing[2].status);

    printf("4. every node releases whisper-tiny; two more models arrive with "
           "registry.max_models = 2\n");
    for (int i = 0; i < NODES; i++)
        vt->model_release(context, nodes[i].handle);
    demo_loader small = {.bytes = 8u << 20, .delay_ms = 10};
    vt->model_get_or_load(context, "lfm2-audio@cuda:0", demo_load, &small, &handle, &model);
    vt->model_release(context, handle);
    vt->model_get_or_load(context, "silero-vad@cpu", demo_load, &small, &handle, &model);
    vt->model_release(context, handle);
    print_registry(vt, context);

    printf("5. nobody calls the plugin for 1.5 s (registry.ttl_s = 1)\n");
    struct timespec pause = {.tv_sec = 1, .tv_nsec = 500000000L};
    nanosleep(&pause, NULL);
    print_registry(vt, context);
    vt->context_destroy(context);
    return 0;
}

/* ---- demo: a tensor handed between two processes --------------------------- */

/* The parent sends the child nothing but this: two descriptors (the small
 * tensor's in text form, as a host that passes strings would) and the
 * checksum the child should find. It fits in one atomic pipe write. */
typedef struct handoff_message {
    char small_text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    unsigned char large[RM_TENSOR_DESCRIPTOR_SIZE];
    uint64_t large_checksum;
} handoff_message;

/* Bytes the child writes through its writable view for the parent to find. */
#define HANDOFF_MARKER_MAX 40

enum { LARGE_SIDE = 4096 }; /* float32 [4096, 4096]: 64 MiB */

typedef struct handoff_pipes {
    int to_child[2];
    int to_parent[2];
} handoff_pipes;

static uint64_t checksum_bytes(const void *data, uint64_t nbytes)
{
    const unsigned char *bytes = data;
    uint64_t hash = 0xcbf29ce484222325u;
    uint64_t i = 0;
    for (; i + 8 <= nbytes; i += 8) {
        uint64_t word;
        memcpy(&word, bytes + i, sizeof word);
        hash = (hash ^ word) * 0x100000001b3u;
    }
    for (; i < nbytes; i++)
        hash = (hash ^ bytes[i]) * 0x100000001b3u;
    return hash;
}

static int write_all(int fd, const void *buffer, size_t size)
{
    const char *cursor = buffer;
    while (size > 0) {
        ssize_t written = write(fd, cursor, size);
        if (written < 0 && errno == EINTR)
            continue;
        if (written <= 0)
            return -1;
        cursor += written;
        size -= (size_t)written;
    }
    return 0;
}

static int read_all(int fd, void *buffer, size_t size)
{
    char *cursor = buffer;
    while (size > 0) {
        ssize_t got = read(fd, cursor, size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        cursor += got;
        size -= (size_t)got;
    }
    return 0;
}

static void describe_shape(const rm_tensor_info *info, char *out, size_t out_size)
{
    size_t used = (size_t)snprintf(out, out_size, "[");
    for (uint32_t i = 0; i < info->ndim && used < out_size; i++)
        used += (size_t)snprintf(out + used, out_size - used, "%s%" PRId64, i ? "," : "",
                                 info->shape[i]);
    if (used < out_size)
        snprintf(out + used, out_size - used, "]");
}

static void describe_flags(uint64_t flags, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s%s%s%s", flags & RM_TENSOR_OWNED ? "owned," : "",
             flags & RM_TENSOR_IMPORTED ? "imported," : "",
             flags & RM_TENSOR_SHAREABLE ? "shareable," : "private,",
             flags & RM_TENSOR_WRITABLE ? "writable" : "read-only");
}

static void print_tensor_line(const char *who, const rm_tensor_info *info)
{
    char shape[96], flags[96];
    describe_shape(info, shape, sizeof shape);
    describe_flags(info->flags, flags, sizeof flags);
    printf("   %s: float32 %s at %p, %s\n", who, shape, info->data, flags);
}

/* The [2,3,4] tensor, walked through its strides as any consumer would. */
static void print_small_values(const rm_tensor_info *info)
{
    const float *data = info->data;
    printf("      data [");
    for (int64_t i = 0; i < info->shape[0]; i++) {
        printf("%s[", i ? "," : "");
        for (int64_t j = 0; j < info->shape[1]; j++) {
            printf("%s[", j ? "," : "");
            for (int64_t k = 0; k < info->shape[2]; k++)
                printf("%s%g", k ? "," : "",
                       (double)data[i * info->strides[0] + j * info->strides[1] +
                                    k * info->strides[2]]);
            printf("]");
        }
        printf("]");
    }
    printf("]\n");
}

static void print_pool_stats(const rm_plugin_v1 *vt, rm_context *context, const char *when)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    if (vt->tensor_pool_stats(context, &stats) != RM_OK) {
        printf("   pool stats unavailable: %s\n", vt->context_last_error(context));
        return;
    }
    char live[32], committed[32];
    format_bytes(stats.live_bytes, live, sizeof live);
    format_bytes(stats.committed_bytes, committed, sizeof committed);
    printf("   pool %s: live tensors %" PRIu64 " (%s), committed %s, holders %" PRIu64
           ", remote releases %" PRIu64 "\n",
           when, stats.live_tensors, live, committed, stats.holders, stats.remote_releases);
}

static int allocate_float32(const rm_plugin_v1 *vt, rm_context *context, uint32_t ndim,
                            const int64_t *shape, rm_tensor **out, rm_tensor_info *info)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_FLOAT, .bits = 32, .lanes = 1};
    spec.ndim = ndim;
    memcpy(spec.shape, shape, ndim * sizeof shape[0]);
    /* A demo of sharing: no silent heap fallback. */
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    int32_t status = vt->tensor_allocate(context, &spec, out);
    if (status != RM_OK) {
        report_failure(vt, context, "tensor_allocate", status);
        return -1;
    }
    *info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, *out, info);
    return 0;
}

static int import_and_describe(const rm_plugin_v1 *vt, rm_context *context,
                               const handoff_message *message, rm_tensor **small,
                               rm_tensor **large)
{
    int32_t status = vt->tensor_import_text(context, message->small_text, 0, small);
    if (status != RM_OK) {
        report_failure(vt, context, "child: tensor_import_text", status);
        return -1;
    }
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, *small, &info);
    char who[32];
    snprintf(who, sizeof who, "child %ld", (long)getpid());
    print_tensor_line(who, &info);
    print_small_values(&info);

    double start = now_ms();
    status = vt->tensor_import(context, message->large, sizeof message->large,
                               RM_TENSOR_IMPORT_WRITABLE, large);
    double import_us = (now_ms() - start) * 1e3;
    if (status != RM_OK) {
        report_failure(vt, context, "child: tensor_import", status);
        return -1;
    }
    info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, *large, &info);
    print_tensor_line(who, &info);
    uint64_t checksum = checksum_bytes(info.data, info.nbytes);
    printf("      imported with RM_TENSOR_IMPORT_WRITABLE in %.0f us\n"
           "      checksum %016" PRIx64 ", the parent's %016" PRIx64 ": %s\n",
           import_us, checksum, message->large_checksum,
           checksum == message->large_checksum ? "equal" : "DIFFERENT");
    if ((info.flags & RM_TENSOR_WRITABLE) == 0) {
        fprintf(stderr, "rmctl: child: a view imported with RM_TENSOR_IMPORT_WRITABLE "
                        "is not writable\n");
        return -1;
    }
    char marker[HANDOFF_MARKER_MAX] = {0};
    snprintf(marker, sizeof marker, "written by child %ld", (long)getpid());
    memcpy(info.data, marker, sizeof marker);
    printf("      writes \"%s\" at its first byte\n", marker);
    return checksum == message->large_checksum ? 0 : -1;
}

/* The child: a process with nothing of the parent's plugin state that it
 * may use (contexts do not survive fork()), only the descriptors. */
static void run_handoff_child(const rm_loaded_plugin *plugin, const rmctl_options *options,
                              const handoff_pipes *pipes)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    close(pipes->to_child[1]);
    close(pipes->to_parent[0]);
    handoff_message message;
    if (read_all(pipes->to_child[0], &message, sizeof message) != 0)
        _exit(1);
    rm_config_entry config[] = {{.key = "features", .value = "shared-memory"}};
    rm_context *context;
    rm_tensor *small = NULL, *large = NULL;
    int ok = create_context(plugin, options, config, 1, &context) == 0;
    ok = ok && import_and_describe(vt, context, &message, &small, &large) == 0;
    fflush(stdout);
    char byte = ok ? 'i' : 'x';
    /* Hold both until the parent has dropped its handle on the small one,
     * so that this process's release is the one that frees it. */
    if (write_all(pipes->to_parent[1], &byte, 1) != 0 || !ok ||
        read_all(pipes->to_child[0], &byte, 1) != 0)
        _exit(1);
    vt->tensor_release(context, small);
    vt->tensor_release(context, large);
    vt->context_destroy(context);
    fflush(stdout);
    _exit(0);
}

static int run_handoff_parent(const rm_plugin_v1 *vt, rm_context *context, pid_t child,
                              const handoff_pipes *pipes, rm_tensor **small,
                              const rm_tensor_info *large_info)
{
    char byte = 0;
    if (read_all(pipes->to_parent[0], &byte, 1) != 0 || byte != 'i')
        return -1;
    print_pool_stats(vt, context, "while the child holds both");
    printf("4. the parent releases its handle on the small tensor; the child then releases "
           "both and exits\n");
    vt->tensor_release(context, *small);
    *small = NULL;
    fflush(stdout);
    if (write_all(pipes->to_child[1], &byte, 1) != 0)
        return -1;
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    /* The child's release came back through the control segment; the
     * owner frees on its next tensor call. */
    vt->tensor_reclaim(context, NULL);
    print_pool_stats(vt, context, "after the child exits");
    char marker[HANDOFF_MARKER_MAX];
    memcpy(marker, large_info->data, sizeof marker);
    marker[sizeof marker - 1] = '\0';
    printf("5. the parent reads \"%s\" at %p, in its own buffer:\n"
           "   both processes mapped the same pages; nothing was copied\n",
           marker, large_info->data);
    return strncmp(marker, "written by child ", 17) == 0 ? 0 : -1;
}

static int handoff(const rm_loaded_plugin *plugin, const rmctl_options *options,
                   rm_context *context, rm_tensor **small, rm_tensor *large,
                   const rm_tensor_info *large_info)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    handoff_message message;
    memset(&message, 0, sizeof message);
    int32_t status = vt->tensor_export_text(context, *small, message.small_text,
                                            sizeof message.small_text);
    if (status == RM_OK)
        status = vt->tensor_export(context, large, message.large, sizeof message.large);
    if (status != RM_OK) {
        report_failure(vt, context, "tensor_export", status);
        return -1;
    }
    message.large_checksum = checksum_bytes(large_info->data, large_info->nbytes);
    size_t text_length = strlen(message.small_text);
    printf("2. exports both: %d-byte descriptors; the small one as text (%zu chars): "
           "%.16s...%s\n",
           RM_TENSOR_DESCRIPTOR_SIZE, text_length, message.small_text,
           message.small_text + (text_length > 8 ? text_length - 8 : 0));
    printf("3. fork(): the child gets the descriptors through a pipe, creates its own context\n"
           "   (contexts do not survive fork) and imports them\n");

    handoff_pipes pipes;
    if (pipe(pipes.to_child) != 0)
        return -1;
    if (pipe(pipes.to_parent) != 0) {
        close(pipes.to_child[0]);
        close(pipes.to_child[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    if (child == 0)
        run_handoff_child(plugin, options, &pipes);
    close(pipes.to_child[0]);
    close(pipes.to_parent[1]);
    int result = -1;
    if (child > 0 && write_all(pipes.to_child[1], &message, sizeof message) == 0)
        result = run_handoff_parent(vt, context, child, &pipes, small, large_info);
    else if (child < 0)
        fprintf(stderr, "rmctl: fork: %s\n", strerror(errno));
    close(pipes.to_child[1]);
    close(pipes.to_parent[0]);
    if (result != 0 && child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        fprintf(stderr, "rmctl: the tensor handoff to child %ld failed\n", (long)child);
    }
    return result;
}

static int demo_tensors(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    printf("\n== Shared-memory tensors between two processes ==\n");
    if ((vt->features_built & RM_FEATURE_SHARED_MEMORY) == 0) {
        printf("(shared-memory not built; nothing to show)\n");
        return 0;
    }
    if (!RM_PLUGIN_HAS(vt, tensor_allocate) || !RM_PLUGIN_HAS(vt, tensor_import_text) ||
        !RM_PLUGIN_HAS(vt, tensor_reclaim)) {
        printf("(the plugin provides no tensor functions (ABI 1.1 members; it reports "
               "ABI %u.%u); nothing to show)\n",
               RM_ABI_VERSION_MAJOR(vt->abi_version), RM_ABI_VERSION_MINOR(vt->abi_version));
        return 0;
    }
    rm_config_entry config[] = {{.key = "features", .value = "shared-memory"}};
    rm_context *context;
    if (create_context(plugin, options, config, 1, &context) != 0)
        return 1;
    rm_context_info context_info = RM_STRUCT_INIT(rm_context_info);
    vt->context_info(context, &context_info);
    if ((context_info.features_enabled & RM_FEATURE_SHARED_MEMORY) == 0) {
        printf("(shared-memory disabled by the configuration; nothing to show)\n");
        vt->context_destroy(context);
        return 0;
    }

    static const int64_t small_shape[] = {2, 3, 4};
    static const int64_t large_shape[] = {LARGE_SIDE, LARGE_SIDE};
    rm_tensor *small = NULL, *large = NULL;
    rm_tensor_info small_info, large_info;
    int result = 1;
    if (allocate_float32(vt, context, 3, small_shape, &small, &small_info) != 0 ||
        allocate_float32(vt, context, 2, large_shape, &large, &large_info) != 0)
        goto out;
    float *values = small_info.data;
    for (int i = 0; i < 24; i++)
        values[i] = (float)i;
    values = large_info.data;
    for (size_t i = 0; i < (size_t)LARGE_SIDE * LARGE_SIDE; i++)
        values[i] = (float)(i % 1000) * 0.25f;
    char large_bytes[32];
    format_bytes(large_info.nbytes, large_bytes, sizeof large_bytes);
    printf("1. the parent (pid %ld) allocates float32 [2,3,4] and float32 [%d,%d] (%s)\n"
           "   in its pool and fills them\n",
           (long)getpid(), LARGE_SIDE, LARGE_SIDE, large_bytes);
    print_tensor_line("parent", &small_info);
    print_pool_stats(vt, context, "before the handoff");
    if (handoff(plugin, options, context, &small, large, &large_info) != 0)
        goto out;
    printf("6. the parent releases the large tensor (the pool keeps its pages for the next "
           "allocation)\n");
    vt->tensor_release(context, large);
    large = NULL;
    print_pool_stats(vt, context, "at the end");
    result = 0;
out:
    if (small != NULL)
        vt->tensor_release(context, small);
    if (large != NULL)
        vt->tensor_release(context, large);
    vt->context_destroy(context);
    return result;
}

/* ---- demo: one model shared by several processes (node scope) ------------ */

enum {
    NODE_RACERS = 4,    /* ask at once: one loads, the others wait */
    NODE_PROCESSES = 5, /* and one more that comes once the model is ready */
    NODE_LOAD_DELAY_MS = 200,
    NODE_REPLY_TIMEOUT_MS = 30000,
};
#define NODE_MODEL_KEY "demo-weights@cpu"
#define NODE_MODEL_BYTES ((uint64_t)64 << 20)

/* The loader of every process; machine_calls lives in a MAP_SHARED page
 * created before fork(), so it counts the calls of all of them. */
typedef struct node_loader {
    atomic_int *machine_calls;
    int calls; /* this process's */
} node_loader;

/* The model's content: word i of the weights, checked by every process. */
static uint64_t node_weight(uint64_t index)
{
    return (index + 1) * UINT64_C(0x9e3779b97f4a7c15);
}

static int32_t node_load(void *user, const char *key, rm_loaded_model *out)
{
    node_loader *loader = user;
    (void)key;
    loader->calls++;
    atomic_fetch_add(loader->machine_calls, 1);
    if (!RM_LOADED_MODEL_HAS_BUFFER(out))
        return RM_E_NOT_SHAREABLE;
    void *buffer;
    int32_t status = out->alloc_buffer(out, NODE_MODEL_BYTES, &buffer);
    if (status != RM_OK)
        return status;
    struct timespec delay = {.tv_nsec = NODE_LOAD_DELAY_MS * 1000000L}; /* "parsing" */
    nanosleep(&delay, NULL);
    uint64_t *words = buffer;
    for (uint64_t i = 0; i < NODE_MODEL_BYTES / sizeof *words; i++)
        words[i] = node_weight(i);
    return RM_OK;
}

/* What a process reports to the parent, one fixed-size write each time. */
typedef struct node_report {
    char phase;       /* 'r' ready, 'a' has the model, 'm' measured, 'x' failed */
    int32_t pid;
    int32_t status;
    int32_t loader_calls;
    int32_t content_ok;
    double get_us;
    uint64_t loads, attaches; /* registry_metrics of its context */
    uint64_t size_kb, rss_kb, pss_kb;
    char perms[8];
    char path[96];
    char message[256];
} node_report;

typedef struct node_child {
    pid_t pid;
    int to_child;   /* write end */
    int from_child; /* read end */
    node_report report;
} node_child;

/* The mapping of /proc/self/smaps that contains `address`. */
static int measure_mapping(const void *address, node_report *report)
{
    FILE *smaps = fopen("/proc/self/smaps", "r");
    if (smaps == NULL)
        return -1;
    char line[512];
    int inside = 0, found = 0;
    while (fgets(line, sizeof line, smaps) != NULL) {
        unsigned long start, end;
        char perms[8], path[96] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %95s", &start, &end, perms, path) >= 3) {
            if (inside)
                break;
            inside = (uintptr_t)address >= start && (uintptr_t)address < end;
            if (inside) {
                found = 1;
                snprintf(report->perms, sizeof report->perms, "%s", perms);
                snprintf(report->path, sizeof report->path, "%s", path);
            }
            continue;
        }
        if (!inside)
            continue;
        unsigned long kb;
        if (sscanf(line, "Size: %lu kB", &kb) == 1)
            report->size_kb = kb;
        else if (sscanf(line, "Rss: %lu kB", &kb) == 1)
            report->rss_kb = kb;
        else if (sscanf(line, "Pss: %lu kB", &kb) == 1)
            report->pss_kb = kb;
    }
    fclose(smaps);
    return found ? 0 : -1;
}

/* Waits up to NODE_REPLY_TIMEOUT_MS for `size` bytes. */
static int read_timed(int fd, void *buffer, size_t size)
{
    struct pollfd ready = {.fd = fd, .events = POLLIN};
    int polled;
    do
        polled = poll(&ready, 1, NODE_REPLY_TIMEOUT_MS);
    while (polled < 0 && errno == EINTR);
    return polled == 1 ? read_all(fd, buffer, size) : -1;
}

static void node_child_send(int fd, node_report *report, char phase)
{
    report->phase = phase;
    if (write_all(fd, report, sizeof *report) != 0)
        _exit(1);
}

static void node_child_fail(int fd, node_report *report, const rm_plugin_v1 *vt,
                            const rm_context *context, const char *what, int32_t status)
{
    report->status = status;
    snprintf(report->message, sizeof report->message, "%s: %s: %s", what,
             vt->error_name(status), vt->context_last_error(context));
    node_child_send(fd, report, 'x');
    _exit(1);
}

/* A process of the demo: it was fork()ed, so it creates its own context
 * (the parent's would answer RM_E_FORKED) and uses nothing of the
 * parent's plugin state. Commands from the parent: 'g' get the model,
 * 'm' measure, 'q' release and exit. */
static void run_node_child(const rm_loaded_plugin *plugin, const rmctl_options *options,
                           const char *namespace_name, atomic_int *machine_calls, int in,
                           int out)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    node_report report;
    memset(&report, 0, sizeof report);
    report.pid = (int32_t)getpid();
    node_loader loader = {.machine_calls = machine_calls};
    rm_context *context;
    int32_t status = create_node_context(plugin, options, namespace_name, &context);
    if (status != 0)
        node_child_fail(out, &report, vt, NULL, "context_create", status);
    node_child_send(out, &report, 'r');
    char command;
    if (read_all(in, &command, 1) != 0 || command != 'g')
        _exit(1);

    rm_model_handle *handle;
    void *model;
    double start = now_ms();
    status = vt->model_get_or_load(context, NODE_MODEL_KEY, node_load, &loader, &handle, &model);
    report.get_us = (now_ms() - start) * 1e3;
    if (status != RM_OK)
        node_child_fail(out, &report, vt, context, "model_get_or_load", status);
    report.loader_calls = loader.calls;
    /* Reads every page: the Pss below is that of the whole model. */
    const uint64_t *words = model;
    report.content_ok = 1;
    for (uint64_t i = 0; i < NODE_MODEL_BYTES / sizeof *words; i++)
        if (words[i] != node_weight(i)) {
            report.content_ok = 0;
            break;
        }
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    vt->registry_metrics(context, &metrics);
    report.loads = metrics.loads;
    report.attaches = metrics.attaches;
    node_child_send(out, &report, 'a');

    if (read_all(in, &command, 1) != 0 || command != 'm')
        _exit(1);
    if (measure_mapping(model, &report) != 0)
        snprintf(report.message, sizeof report.message, "no mapping at %p in /proc/self/smaps",
                 model);
    node_child_send(out, &report, 'm');

    if (read_all(in, &command, 1) != 0 || command != 'q')
        _exit(1);
    vt->model_release(context, handle);
    vt->context_destroy(context);
    _exit(0);
}

static int node_command(node_child *child, char command)
{
    return write_all(child->to_child, &command, 1);
}

/* The child's next report, which must be of `phase`. */
static int node_expect(node_child *child, char phase)
{
    if (read_timed(child->from_child, &child->report, sizeof child->report) != 0) {
        fprintf(stderr, "rmctl: demo: process %ld did not answer\n", (long)child->pid);
        return -1;
    }
    if (child->report.phase == 'x') {
        fprintf(stderr, "rmctl: demo: process %ld: %s\n", (long)child->pid,
                child->report.message);
        return -1;
    }
    if (child->report.phase != phase) {
        fprintf(stderr, "rmctl: demo: process %ld answered '%c', not '%c'\n",
                (long)child->pid, child->report.phase, phase);
        return -1;
    }
    return 0;
}

static int node_spawn(const rm_loaded_plugin *plugin, const rmctl_options *options,
                      const char *namespace_name, atomic_int *machine_calls,
                      node_child *children, int index)
{
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0)
        return -1;
    if (pipe(from_child) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < index; i++) {
            close(children[i].to_child);
            close(children[i].from_child);
        }
        close(to_child[1]);
        close(from_child[0]);
        run_node_child(plugin, options, namespace_name, machine_calls, to_child[0],
                       from_child[1]);
    }
    close(to_child[0]);
    close(from_child[1]);
    if (pid < 0) {
        close(to_child[1]);
        close(from_child[0]);
        return -1;
    }
    children[index] = (node_child){.pid = pid, .to_child = to_child[1],
                                   .from_child = from_child[0]};
    return 0;
}

static void format_us(double us, char *out, size_t out_size)
{
    if (us < 1000.0)
        snprintf(out, out_size, "%.0f us", us);
    else
        snprintf(out, out_size, "%.1f ms", us / 1e3);
}

static void print_node_processes(const node_child *children, int count)
{
    printf("   %7s  %-8s  %11s  %-7s  %4s  %10s  %10s\n", "PID", "HOW", "GET_OR_LOAD",
           "CONTENT", "MAP", "RSS", "PSS");
    for (int i = 0; i < count; i++) {
        const node_report *r = &children[i].report;
        char get[32], rss[32], pss[32];
        format_us(r->get_us, get, sizeof get);
        format_bytes(r->rss_kb << 10, rss, sizeof rss);
        format_bytes(r->pss_kb << 10, pss, sizeof pss);
        printf("   %7" PRId32 "  %-8s  %11s  %-7s  %4s  %10s  %10s\n", r->pid,
               r->loader_calls ? "loaded" : "attached", get, r->content_ok ? "ok" : "WRONG",
               r->perms, rss, pss);
    }
}

/* Steps 1 to 4 with the processes running; returns 0 when sharing held. */
static int node_share(const rm_loaded_plugin *plugin, const rmctl_options *options,
                      const char *namespace_name, atomic_int *machine_calls,
                      node_child *children, int *spawned)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    for (int i = 0; i < NODE_PROCESSES; i++) {
        if (node_spawn(plugin, options, namespace_name, machine_calls, children, i) != 0) {
            fprintf(stderr, "rmctl: demo: fork: %s\n", strerror(errno));
            return -1;
        }
        ++*spawned;
    }
    for (int i = 0; i < NODE_PROCESSES; i++)
        if (node_expect(&children[i], 'r') != 0)
            return -1;

    printf("1. %d processes ask for %s at once\n", NODE_RACERS, NODE_MODEL_KEY);
    for (int i = 0; i < NODE_RACERS; i++)
        if (node_command(&children[i], 'g') != 0)
            return -1;
    for (int i = 0; i < NODE_RACERS; i++)
        if (node_expect(&children[i], 'a') != 0)
            return -1;
    int32_t loader_pid = 0;
    for (int i = 0; i < NODE_RACERS; i++)
        if (children[i].report.loader_calls > 0)
            loader_pid = children[i].report.pid;
    for (int i = 0; i < NODE_RACERS; i++) {
        const node_report *r = &children[i].report;
        char get[32];
        format_us(r->get_us, get, sizeof get);
        if (r->loader_calls > 0)
            printf("   pid %" PRId32 ": loaded it (its loader ran: %d ms + filling the "
                   "buffer) in %s\n", r->pid, NODE_LOAD_DELAY_MS, get);
        else
            printf("   pid %" PRId32 ": attached after %s (blocked until pid %" PRId32
                   "'s load ended; no loader call)\n", r->pid, get, loader_pid);
    }

    printf("2. process %d asks once the model is ready\n", NODE_PROCESSES);
    node_child *late = &children[NODE_PROCESSES - 1];
    if (node_command(late, 'g') != 0 || node_expect(late, 'a') != 0)
        return -1;
    char get[32];
    format_us(late->report.get_us, get, sizeof get);
    printf("   pid %" PRId32 ": %s in %s (mapped the sealed segment read-only)\n",
           late->report.pid, late->report.loader_calls ? "LOADED it again" : "attached", get);

    printf("   the node table now (as `rmctl --namespace %s ls` shows it):\n", namespace_name);
    rm_context *context;
    if (create_node_context(plugin, options, namespace_name, &context) == 0) {
        print_node_models(vt, context, "      ");
        vt->context_destroy(context);
    }

    printf("3. every process has read all %" PRIu64 " MiB and checked them against the "
           "loader's bytes;\n   its mapping of the model in /proc/self/smaps:\n",
           NODE_MODEL_BYTES >> 20);
    for (int i = 0; i < NODE_PROCESSES; i++)
        if (node_command(&children[i], 'm') != 0)
            return -1;
    for (int i = 0; i < NODE_PROCESSES; i++)
        if (node_expect(&children[i], 'm') != 0)
            return -1;
    print_node_processes(children, NODE_PROCESSES);

    uint64_t pss_kb = 0;
    int loaded = 0, attached = 0, content_ok = 1, same_segment = 1;
    uint64_t metric_loads = 0, metric_attaches = 0;
    for (int i = 0; i < NODE_PROCESSES; i++) {
        const node_report *r = &children[i].report;
        pss_kb += r->pss_kb;
        loaded += r->loader_calls > 0;
        attached += r->loader_calls == 0;
        content_ok &= r->content_ok;
        same_segment &= r->path[0] != '\0' && strcmp(r->path, children[0].report.path) == 0;
        metric_loads += r->loads;
        metric_attaches += r->attaches;
    }
    uint64_t model_kb = NODE_MODEL_BYTES >> 10;
    char sum[32], size[32];
    format_bytes(pss_kb << 10, sum, sizeof sum);
    format_bytes(NODE_MODEL_BYTES, size, sizeof size);
    printf("   all %d map the same segment %s: %s\n", NODE_PROCESSES, children[0].report.path,
           same_segment ? "yes" : "NO");
    printf("4. sum of Pss: %s for a %s model: %.3fx the model (%d private copies would be "
           "%d.000x)\n", sum, size, (double)pss_kb / (double)model_kb, NODE_PROCESSES,
           NODE_PROCESSES);
    int calls = atomic_load(machine_calls);
    printf("   loader calls in all %d processes: %d; loaded %d, attached %d "
           "(their registry_metrics: loads %" PRIu64 ", attaches %" PRIu64 ")\n",
           NODE_PROCESSES, calls, loaded, attached, metric_loads, metric_attaches);
    return calls == 1 && loaded == 1 && content_ok && same_segment ? 0 : -1;
}

static int demo_node_registry(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    printf("\n== Model registry (node scope): one copy for %d processes ==\n", NODE_PROCESSES);
    char why[PATH_MAX + 128];
    if (node_registry_missing(plugin, why, sizeof why) != NULL) {
        printf("(%s; nothing to show)\n", why);
        return 0;
    }
    /* Is the registry enabled? Asked of a process-scope context, which
     * opens no node table. */
    rm_context *probe;
    if (create_context_with(plugin, options, NULL, 0, process_scope, 1, &probe) != 0)
        return 1;
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    vt->context_info(probe, &info);
    vt->context_destroy(probe);
    if ((info.features_enabled & RM_FEATURE_MODEL_REGISTRY) == 0) {
        printf("(model registry disabled by the configuration; nothing to show)\n");
        return 0;
    }

    char namespace_name[32];
    snprintf(namespace_name, sizeof namespace_name, "demo-%ld", (long)getpid());
    printf("registry.scope = node, registry.namespace = %s (private to this demo);\n"
           "%d processes, each fork()ed, each with its own context; the model is %" PRIu64
           " MiB,\nmade by a loader that takes %d ms and writes it into out->alloc_buffer()\n",
           namespace_name, NODE_PROCESSES, NODE_MODEL_BYTES >> 20, NODE_LOAD_DELAY_MS);
    atomic_int *machine_calls = mmap(NULL, sizeof *machine_calls, PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (machine_calls == MAP_FAILED) {
        fprintf(stderr, "rmctl: demo: mmap: %s\n", strerror(errno));
        return 1;
    }
    atomic_init(machine_calls, 0);
    node_child children[NODE_PROCESSES];
    int spawned = 0;
    int result = node_share(plugin, options, namespace_name, machine_calls, children, &spawned);

    /* The processes release and exit; on a failure they are killed. */
    for (int i = 0; i < spawned; i++) {
        if (result != 0 || node_command(&children[i], 'q') != 0)
            kill(children[i].pid, SIGKILL);
        close(children[i].to_child);
        close(children[i].from_child);
    }
    for (int i = 0; i < spawned; i++) {
        int status;
        if (waitpid(children[i].pid, &status, 0) != children[i].pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            result = -1;
    }
    munmap(machine_calls, sizeof *machine_calls);

    if (result == 0) {
        rm_context *context;
        if (create_node_context(plugin, options, namespace_name, &context) != 0) {
            result = -1;
        } else {
            printf("5. the processes release the model and exit: it stays loaded, held by "
                   "no one,\n   until its TTL, the budget, or model_evict():\n");
            print_node_models(vt, context, "      ");
            int32_t status = vt->model_evict(context, NODE_MODEL_KEY);
            printf("   model_evict(\"%s\"): %s; model segments of the namespace left: %d\n",
                   NODE_MODEL_KEY, vt->error_name(status),
                   node_namespace_files(namespace_name, 1, 0));
            if (status != RM_OK)
                result = -1;
            vt->context_destroy(context);
        }
    }
    int removed = node_namespace_files(namespace_name, 0, 1);
    printf("   namespace %s removed from /dev/shm (%d files)\n", namespace_name, removed);
    if (result != 0)
        fprintf(stderr, "rmctl: demo: the node-scope section failed\n");
    return result == 0 ? 0 : 1;
}

static int command_demo(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    printf("== Plugin ==\n");
    if (command_info(plugin, options) != 0)
        return 1;
    if ((plugin->vtable->features_built & RM_FEATURE_MODEL_REGISTRY) == 0)
        printf("\n(model registry not built; nothing to show of it, in process or node scope)\n");
    else if (demo_registry(plugin, options) != 0 || demo_node_registry(plugin, options) != 0)
        return 1;
    return demo_tensors(plugin, options);
}

int main(int argc, char **argv)
{
    rmctl_options options = {0};
    if (parse_arguments(argc, argv, &options) != 0)
        return 2;

    int (*command)(const rm_loaded_plugin *, const rmctl_options *) = NULL;
    if (strcmp(options.command, "info") == 0)
        command = command_info;
    else if (strcmp(options.command, "ls") == 0)
        command = command_ls;
    else if (strcmp(options.command, "gc") == 0)
        command = command_gc;
    else if (strcmp(options.command, "demo") == 0)
        command = command_demo;
    if (command == NULL) {
        fprintf(stderr, "rmctl: unknown command '%s'\n", options.command);
        usage(stderr);
        return 2;
    }

    rm_loaded_plugin plugin;
    char error[1024];
    if (rm_plugin_load(options.plugin_path, RM_DEFAULT_PLUGIN_DIR, RM_ABI_VERSION(1, 0),
                       RM_ABI_VERSION_CURRENT, NULL, &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "rmctl: %s\n", error);
        return 1;
    }
    int result = command(&plugin, &options);
    rm_plugin_unload(&plugin);
    for (uint64_t i = 0; i < options.entry_count; i++)
        free(options.entry_storage[i]);
    return result;
}
