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
 *          tensor handed from one process to another, then a device tensor
 *          (CUDA IPC, ABI 1.3) and model weights on the GPU that 4 processes
 *          share (ABI 1.4) when a GPU is usable
 */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rmctl.h"

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
            "  demo [registry|node|tensors|gpu]\n"
            "         the model registry shared by pipeline nodes; one 64 MiB model\n"
            "         shared by 5 processes in node scope (one loader call, the Pss of\n"
            "         each); a tensor handed to a forked process without a copy; a\n"
            "         device tensor handed to another process over CUDA IPC, then\n"
            "         256 MiB of model weights on the GPU shared by 4 processes, one\n"
            "         read-only copy (ABI 1.4); the GPU parts are skipped, with the\n"
            "         reason, when no GPU is usable. A section name runs that part\n"
            "         alone (registry: the plugin and the process scope; node: node\n"
            "         scope; gpu: both GPU parts)\n"
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
            "gives exit status 1. ls never creates a node table: it opens the registry\n"
            "with registry.table = existing, and a namespace without a table is\n"
            "reported as having none. gc, in a namespace without a table, makes one so\n"
            "that registry_reclaim can find orphan model segments, and removes it again.\n"
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
        } else if (options->command_argument_count < MAX_COMMAND_ARGUMENTS) {
            /* demo's section, or what the demo's GPU consumer or weights
             * worker is handed; the command decides whether it takes any. */
            options->command_arguments[options->command_argument_count++] = arg;
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
static int open_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                        const rm_config_entry *defaults, uint64_t default_count,
                        const rm_config_entry *overrides, uint64_t override_count,
                        int32_t quiet_status, rm_context **out)
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
    if (status != RM_OK && status == quiet_status)
        return status; /* an answer the caller expects, and reports itself */
    if (status != RM_OK) {
        fprintf(stderr, "rmctl: context_create failed: %s (%s): %s\n",
                plugin->vtable->error_name(status), plugin->vtable->strerror(status),
                plugin->vtable->context_last_error(NULL));
        return status;
    }
    return 0;
}

int create_context_with(const rm_loaded_plugin *plugin, const rmctl_options *options,
                        const rm_config_entry *defaults, uint64_t default_count,
                        const rm_config_entry *overrides, uint64_t override_count,
                        rm_context **out)
{
    return open_context(plugin, options, defaults, default_count, overrides, override_count,
                        RM_OK, out);
}

int create_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                   const rm_config_entry *extra, uint64_t extra_count, rm_context **out)
{
    return create_context_with(plugin, options, extra, extra_count, NULL, 0, out);
}


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
    if (features & RM_FEATURE_CUDA_IPC) {
        printf("%scuda-ipc", any ? "," : "");
        any = 1;
    }
    if (!any)
        printf("none");
}

const char *cuda_unusable(const rm_loaded_plugin *plugin, rm_context *context,
                          rm_cuda_info *info, char *why, size_t why_size)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    *info = (rm_cuda_info)RM_STRUCT_INIT(rm_cuda_info);
    if (!RM_PLUGIN_HAS(vt, cuda_info)) {
        snprintf(why, why_size, "%s has no device tensors (ABI 1.3; it reports ABI %u.%u)",
                 plugin->path, RM_ABI_VERSION_MAJOR(vt->abi_version),
                 RM_ABI_VERSION_MINOR(vt->abi_version));
        return why;
    }
    if ((vt->features_built & RM_FEATURE_CUDA_IPC) == 0) {
        snprintf(why, why_size, "cuda-ipc not built into %s", plugin->path);
        return why;
    }
    int32_t status = vt->cuda_info(context, info);
    if (status != RM_OK) {
        snprintf(why, why_size, "cuda_info failed: %s: %s", vt->error_name(status),
                 vt->context_last_error(context));
        return why;
    }
    if (info->status != RM_OK) {
        snprintf(why, why_size, "%s: %s", vt->error_name(info->status), info->message);
        return why;
    }
    return NULL;
}

/* The driver line of info: what cuda_info() found, or plainly why there
 * is none. Asking loads the driver (never context_create): info is the
 * command an operator runs to find out. */
static void print_cuda_driver(const rm_loaded_plugin *plugin, rm_context *context)
{
    rm_cuda_info info;
    char why[1024];
    if (cuda_unusable(plugin, context, &info, why, sizeof why) != NULL) {
        printf("cuda driver:  none usable: %s\n", why);
        if (info.library[0] != '\0')
            printf("              library %s\n", info.library);
        return;
    }
    printf("cuda driver:  %d.%d (%s), %" PRIu32 " device%s\n", info.driver_version / 1000,
           info.driver_version % 1000 / 10, info.library, info.device_count,
           info.device_count == 1 ? "" : "s");
    uint32_t rows = info.device_count < RM_CUDA_INFO_MAX_DEVICES ? info.device_count
                                                                 : RM_CUDA_INFO_MAX_DEVICES;
    for (uint32_t i = 0; i < rows; i++)
        printf("              cuda:%" PRId32 "  %s\n", info.devices[i].ordinal,
               info.devices[i].uuid_text);
    if (info.device_count > rows)
        printf("              (%" PRIu32 " more not listed)\n", info.device_count - rows);
    printf("              %s\n", info.message);
}

int command_info(const rm_loaded_plugin *plugin, const rmctl_options *options)
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
    printf("\n");
    print_cuda_driver(plugin, context);
    printf("configuration:\n");
    /* The plugin's keys in its order, and their values as config_get
     * prints them: both come from its key table, so a key added there is
     * listed here without a change to rmctl. */
    int width = 0;
    for (uint32_t i = 0; vt->config_key_at(i) != NULL; i++)
        if ((int)strlen(vt->config_key_at(i)) > width)
            width = (int)strlen(vt->config_key_at(i));
    for (uint32_t i = 0; vt->config_key_at(i) != NULL; i++) {
        char value[256];
        const char *key = vt->config_key_at(i);
        if (vt->config_get(context, key, value, sizeof value, NULL) == RM_OK)
            printf("  %-*s = %s\n", width, key, value);
    }
    vt->context_destroy(context);
    return 0;
}

/* ---- ls and gc: the pools of a namespace ---------------------------------- */

void format_bytes(uint64_t bytes, char *out, size_t out_size)
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

void report_failure(const rm_plugin_v1 *vt, const rm_context *context,
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
    /* MEMORY and BLOCKS come last so that the columns before them keep
     * their places for scripts. A device table (1.3) is a row like a pool:
     * POOL is cuda.pool_bytes, COMMITTED its blocks' bytes, BLOCKS their
     * number; a plugin before 1.3 leaves `memory` zero: shared memory. */
    printf("%-*s %8s %5s %10s %10s %7s %10s %7s %6s %6s\n", name_width, "NAME", "PID", "ALIVE",
           "POOL", "COMMITTED", "TENSORS", "LIVE", "HOLDERS", "MEMORY", "BLOCKS");
    for (uint32_t i = 0; i < count; i++) {
        const rm_shm_pool_info *row = &rows[i];
        if (!row->readable) {
            printf("%-*s %8" PRIu32 " %5s  (control segment unreadable: another user's, or "
                   "damaged)\n", name_width, row->name, row->owner_pid, "?");
            continue;
        }
        char pool[32], committed[32], live[32], blocks[16] = "-";
        format_bytes(row->pool_bytes, pool, sizeof pool);
        format_bytes(row->committed_bytes, committed, sizeof committed);
        format_bytes(row->live_bytes, live, sizeof live);
        int device_table = row->memory == RM_MEMORY_CUDA;
        if (device_table)
            snprintf(blocks, sizeof blocks, "%" PRIu32, row->device_blocks);
        printf("%-*s %8" PRIu32 " %5s %10s %10s %7" PRIu64 " %10s %7" PRIu32 " %6s %6s\n",
               name_width, row->name, row->owner_pid, row->owner_alive ? "yes" : "no", pool,
               committed, row->live_tensors, live, row->holders,
               device_table ? "cuda" : "shm", blocks);
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
const char *node_registry_missing(const rm_loaded_plugin *plugin, char *why, size_t why_size)
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

int node_table_lookable(const rm_loaded_plugin *plugin)
{
    return plugin_knows_key(plugin->vtable, "registry.table");
}

int create_node_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                        const char *namespace_name, const char *table, rm_context **out)
{
    const rm_config_entry node[] = {
        {.key = "registry.scope", .value = "node"},
        {.key = "registry.namespace", .value = namespace_name},
        {.key = "registry.table", .value = table},
    };
    int32_t quiet = strcmp(table, "existing") == 0 ? RM_E_NOT_FOUND : RM_OK;
    return open_context(plugin, options, NULL, 0, node, 3, quiet, out);
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

uint64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

void format_duration_ns(uint64_t ns, char *out, size_t out_size)
{
    if (ns < 1000000u)
        snprintf(out, out_size, "%.0fus", (double)ns / 1e3);
    else if (ns < 1000000000u)
        snprintf(out, out_size, "%.1fms", (double)ns / 1e6);
    else
        snprintf(out, out_size, "%.1fs", (double)ns / 1e9);
}

/* Where a row's model lives: "shm", "host", or "cuda:N" (this process's
 * ordinal of the device; "cuda:?" when it does not see it). A plugin
 * older than 1.4 fills no such field: "-". */
static void format_memory(const rm_model_info *row, char *out, size_t out_size)
{
    if (row->struct_size < offsetof(rm_model_info, device_bytes) + sizeof row->device_bytes)
        snprintf(out, out_size, "-");
    else if (row->memory == RM_MEMORY_CUDA && row->device_ordinal >= 0)
        snprintf(out, out_size, "cuda:%" PRId32, row->device_ordinal);
    else if (row->memory == RM_MEMORY_CUDA)
        snprintf(out, out_size, "cuda:?");
    else
        snprintf(out, out_size, "%s", row->memory == RM_MEMORY_SHM ? "shm" : "host");
}

/* One line per model: KEY BYTES(2 fields) MEMORY STATE HOLDERS REFS IDLE
 * AGE LOADER; IDLE is "-" while held or loading, LOADER "-" unless
 * loading. */
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
    printf("%s%-*s %10s %-7s %-7s %7s %5s %8s %8s %7s\n", indent, key_width, "KEY", "BYTES",
           "MEMORY", "STATE", "HOLDERS", "REFS", "IDLE", "AGE", "LOADER");
    uint64_t now = monotonic_ns();
    for (uint32_t i = 0; i < count; i++) {
        const rm_model_info *row = &rows[i];
        int ready = row->state == RM_MODEL_STATE_READY;
        char bytes[32], idle[32] = "-", age[32] = "-", loader[16] = "-", memory[16];
        format_bytes(row->bytes, bytes, sizeof bytes);
        format_memory(row, memory, sizeof memory);
        if (ready && row->refcount == 0)
            format_duration_ns(row->idle_ns, idle, sizeof idle);
        if (ready && row->loaded_at_ns != 0 && row->loaded_at_ns <= now)
            format_duration_ns(now - row->loaded_at_ns, age, sizeof age);
        if (!ready && row->loader_pid > 0)
            snprintf(loader, sizeof loader, "%" PRId32, row->loader_pid);
        printf("%s%-*s %10s %-7s %-7s %7" PRIu32 " %5" PRIu64 " %8s %8s %7s\n", indent,
               key_width, row->key, bytes, memory,
               ready ? "ready" : row->state == RM_MODEL_STATE_LOADING ? "loading" : "?",
               row->holders, row->refcount, idle, age, loader);
    }
}

int print_node_models(const rm_plugin_v1 *vt, rm_context *context, const char *indent)
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
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    char bytes[32] = "?";
    if (vt->registry_metrics(context, &metrics) == RM_OK)
        format_bytes(metrics.bytes, bytes, sizeof bytes);
    printf("node registry %s: %" PRIu64 " models ready, %s\n", namespace_name, metrics.models,
           bytes);
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
    if (!node_table_lookable(plugin)) {
        /* Its only way to open a table would create one: looking must not. */
        printf("node registry %s: not shown: %s cannot open a node table without creating "
               "one (it has no registry.table key)\n",
               namespace_name, plugin->path);
        return 0;
    }
    rm_context *context;
    int status = create_node_context(plugin, options, namespace_name, "existing", &context);
    if (status == RM_E_NOT_FOUND) {
        printf("node registry %s: no node table (no model is loaded or loading in node "
               "scope)\n",
               namespace_name);
        return 0;
    }
    if (status != 0)
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
    /* A namespace without a table can still hold model segments, of loaders
     * that died before it existed or after it went. Only registry_reclaim()
     * can tell them from a live loader's, and it needs a table: gc looks
     * for one (registry.table = existing) and, finding none, makes one for
     * the look, which the second pass below removes again. */
    rm_context *context;
    int made_table = 0;
    int opened = create_node_context(plugin, options, namespace_name,
                                     node_table_lookable(plugin) ? "existing" : "create",
                                     &context);
    if (opened == RM_E_NOT_FOUND) {
        made_table = 1;
        opened = create_node_context(plugin, options, namespace_name, "create", &context);
    }
    if (opened != 0)
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
    if (create_node_context(plugin, options, namespace_name, "create", &keeper) != 0) {
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
    if (made_table && table_removed && first.segments_unlinked == 0 &&
        report.dead_references == 0 && report.loads_abandoned == 0 &&
        report.models_evicted == 0 && swept == 0) {
        printf("node registry %s: no node table, no orphan model segments: nothing to "
               "reclaim (the table gc made to look was removed again)\n",
               namespace_name);
        vt->context_destroy(context);
        return 0;
    }
    if (made_table)
        printf("node registry %s: no node table; gc made one so that registry_reclaim could "
               "look for orphan model segments\n",
               namespace_name);
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
        printf("node table removed (%s; one of the segments unlinked): nothing was left "
               "in namespace %s (no model, no load, no live process)\n",
               table_bytes, namespace_name);
    } else {
        printf("node table kept (models or loads in it, or live processes using it)\n");
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
    /* The CUDA figures exist from ABI 1.3 on (cuda_info is its marker);
     * they count this process's cached IPC handles and its own blocks, so
     * gc, which imports nothing, mostly reports zeros: the line says that
     * the plugin looked. */
    if (RM_PLUGIN_HAS(vt, cuda_info))
        printf("device tensors (tensor_reclaim): %" PRIu64 " cached CUDA IPC handles closed, %"
               PRIu64 " device blocks freed\n",
               report.cuda_handles_closed, report.cuda_blocks_freed);
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
    else if (strcmp(options.command, DEMO_CUDA_CONSUMER_COMMAND) == 0)
        command = demo_cuda_consumer;
    else if (strcmp(options.command, DEMO_GPU_WEIGHTS_WORKER_COMMAND) == 0)
        command = demo_gpu_weights_worker;
    if (command != NULL && command != command_demo && command != demo_cuda_consumer &&
        command != demo_gpu_weights_worker && options.command_argument_count > 0) {
        fprintf(stderr, "rmctl: unexpected argument '%s'\n", options.command_arguments[0]);
        return 2;
    }
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

