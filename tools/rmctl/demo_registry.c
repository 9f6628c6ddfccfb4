/* rmctl demo: the model registry shared by the nodes of a pipeline (process
 * scope), then `command_demo`, which runs every demo in turn. */
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

#include "rmctl.h"

/* ---- demo ---------------------------------------------------------------- */

double now_ms(void)
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

int demo_registry(const rm_loaded_plugin *plugin, const rmctl_options *options)
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


/* `rmctl demo [SECTION]`: every section in turn, or the one named (so that
 * a test or an operator can run the GPU handoff alone). */
int command_demo(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const char *section = options->command_argument_count > 0 ? options->command_arguments[0]
                                                              : "all";
    int all = strcmp(section, "all") == 0;
    int registry = all || strcmp(section, "registry") == 0;
    int node = all || strcmp(section, "node") == 0;
    int tensors = all || strcmp(section, "tensors") == 0;
    int gpu = all || strcmp(section, "gpu") == 0;
    if (options->command_argument_count > 1 || !(registry || node || tensors || gpu)) {
        fprintf(stderr, "rmctl: demo takes one of registry, node, tensors, gpu (or nothing: "
                        "all of them)\n");
        return 2;
    }
    if (all || registry) {
        printf("== Plugin ==\n");
        if (command_info(plugin, options) != 0)
            return 1;
    }
    int registry_built = (plugin->vtable->features_built & RM_FEATURE_MODEL_REGISTRY) != 0;
    if ((registry || node) && !registry_built)
        printf("\n(model registry not built; nothing to show of it, in process or node scope)\n");
    else if ((registry && demo_registry(plugin, options) != 0) ||
             (node && demo_node_registry(plugin, options) != 0))
        return 1;
    if (tensors && demo_tensors(plugin, options) != 0)
        return 1;
    return gpu ? demo_cuda(plugin, options) : 0;
}

