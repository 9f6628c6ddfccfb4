/* rmctl: the reference command-line host of rm_plugin.
 *
 *   rmctl [--plugin PATH] [--config FILE] [-c key=value]... COMMAND
 *
 *   info   name, version, ABI, features and the effective configuration
 *   demo   the plugin at work: the model registry shared by pipeline nodes
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
            "  demo   the model registry shared by pipeline nodes, step by step\n"
            "\n"
            "The plugin is looked up in $%s (colon-separated), then in\n"
            "%s.\n",
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

static int command_demo(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    printf("== Plugin ==\n");
    if (command_info(plugin, options) != 0)
        return 1;
    if ((plugin->vtable->features_built & RM_FEATURE_MODEL_REGISTRY) == 0) {
        printf("\n(model registry not built; nothing more to show)\n");
        return 0;
    }
    return demo_registry(plugin, options);
}

int main(int argc, char **argv)
{
    rmctl_options options = {0};
    if (parse_arguments(argc, argv, &options) != 0)
        return 2;

    int (*command)(const rm_loaded_plugin *, const rmctl_options *) = NULL;
    if (strcmp(options.command, "info") == 0)
        command = command_info;
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
