/* rmctl: the reference command-line host of rm_plugin.
 *
 *   rmctl [--plugin PATH] [--config FILE] [-c key=value]... COMMAND
 *
 *   info   name, version, ABI, features and the effective configuration
 *   ls     the shared-memory pools of the namespace (ABI 1.1)
 *   gc     reclaims what dead processes left in the namespace (ABI 1.1)
 *   demo   the plugin at work: the model registry shared by pipeline nodes,
 *          then a tensor handed from one process to another
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    const char *command;
} rmctl_options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rmctl [--plugin PATH] [--config FILE] [-c key=value]... COMMAND\n"
            "\n"
            "commands:\n"
            "  info   plugin name, version, ABI, features, effective configuration\n"
            "  ls     the shared-memory pools of the namespace: owner, alive, bytes,\n"
            "         live tensors, importing holders\n"
            "  gc     unlinks the segments of dead owners in the namespace and says\n"
            "         how many (creating a context already does this; gc tells the\n"
            "         two apart), then lists the pools left\n"
            "  demo   the model registry shared by pipeline nodes, then a tensor\n"
            "         handed to a forked process without a copy, step by step\n"
            "\n"
            "options:\n"
            "  --plugin PATH   load this rm_plugin.so\n"
            "  --config FILE   configuration file (else $%s)\n"
            "  -c key=value    configuration pair, after the file; repeatable.\n"
            "                  ls and gc work on shm.namespace (-c shm.namespace=NAME)\n"
            "\n"
            "ls and gc need a plugin built with shared-memory and a context that\n"
            "enables it (ABI 1.1); otherwise they fail with the plugin's message.\n"
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
             strcmp(arg, "-c") == 0) && i + 1 >= argc) {
            fprintf(stderr, "rmctl: %s needs a value\n", arg);
            return -1;
        }
        if (strcmp(arg, "--plugin") == 0) {
            options->plugin_path = argv[++i];
        } else if (strcmp(arg, "--config") == 0) {
            options->config_path = argv[++i];
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

static int create_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                          const rm_config_entry *extra, uint64_t extra_count,
                          rm_context **out)
{
    rm_config_entry entries[MAX_CONFIG_ENTRIES * 2];
    uint64_t count = 0;
    for (uint64_t i = 0; i < extra_count; i++)
        entries[count++] = extra[i];
    for (uint64_t i = 0; i < options->entry_count; i++)
        entries[count++] = options->entries[i];
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
    if ((vt->features_built & RM_FEATURE_SHARED_MEMORY) == 0) {
        fprintf(stderr, "rmctl: %s: shared-memory not built into %s\n", command, plugin->path);
        return -1;
    }
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

static int command_ls(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_context *context;
    if (create_context(plugin, options, NULL, 0, &context) != 0)
        return 1;
    if (require_shm_listing(plugin, "ls") != 0) {
        vt->context_destroy(context);
        return 1;
    }
    /* shm_list first: when shared-memory is not built or not enabled, its
     * error is the whole output. */
    rm_shm_pool_info *rows;
    uint32_t count;
    int32_t status = list_pools(vt, context, &rows, &count);
    if (status != RM_OK) {
        report_failure(vt, context, "ls", status);
        vt->context_destroy(context);
        return 1;
    }
    print_namespace(vt, context);
    print_pool_table(rows, count);
    free(rows);
    vt->context_destroy(context);
    return 0;
}

static int command_gc(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_context *context;
    if (create_context(plugin, options, NULL, 0, &context) != 0)
        return 1;
    if (require_shm_listing(plugin, "gc") != 0) {
        vt->context_destroy(context);
        return 1;
    }
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
        vt->context_destroy(context);
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
    int result = print_namespace_pools(vt, context);
    vt->context_destroy(context);
    return result;
}

/* ---- demo ---------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
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
    if (create_context(plugin, options, config, 3, &context) != 0)
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

static int command_demo(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    printf("== Plugin ==\n");
    if (command_info(plugin, options) != 0)
        return 1;
    if ((plugin->vtable->features_built & RM_FEATURE_MODEL_REGISTRY) == 0)
        printf("\n(model registry not built; nothing to show of it)\n");
    else if (demo_registry(plugin, options) != 0)
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
