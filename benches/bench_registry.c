/* Benchmark of the model registry through the real shared object, the way a
 * host uses it: dlopen(), negotiate, create a context, then
 *  (a) warm hit + release on one thread: ns per pair, median/p10/p90 over
 *      many batches;
 *  (b) throughput of 2 threads on one key and of 2 threads on two keys,
 *      each as a ratio to 1-thread throughput measured in the same run.
 *
 * Usage: bench_registry [--json] [--quick] [PATH_TO_rm_plugin.so]
 *        (PATH defaults to $RM_PLUGIN_PATH)
 * --json prints one JSON object per figure per line instead of a table;
 * --quick runs a much shorter version (a CI smoke test, well under 3 s).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_common.h"
#include "plugin_loader.h"
#include "rm_plugin.h"

const char bench_program[] = "bench_registry";

typedef struct bench_plan {
    int batches;           /* for the hit + release distribution */
    int ops_per_batch;
    double warmup_s;
    double throughput_s;   /* per throughput measurement */
} bench_plan;

static const bench_plan full_plan = {
    .batches = 300,
    .ops_per_batch = 20000,
    .warmup_s = 0.3,
    .throughput_s = 1.0,
};

static const bench_plan quick_plan = {
    .batches = 40,
    .ops_per_batch = 2000,
    .warmup_s = 0.05,
    .throughput_s = 0.1,
};

/* Two keys, as a host spells them (not normalised: normalisation is part
 * of the cost being measured). */
static const char *const bench_keys[2] = {"bench/resnet50@CUDA:0",
                                          "bench/bert-base@cpu"};

typedef struct registry_api {
    const rm_plugin_v1 *vt;
    rm_context *context;
} registry_api;

/* One model per key; its address is what the registry hands back. */
static int bench_models[2];

static int32_t bench_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    out->model = user;
    out->bytes = 1;
    return RM_OK;
}

static double now_s(void)
{
    return (double)now_ns() * 1e-9;
}

static _Noreturn void fail(const registry_api *api, const char *what,
                           int32_t status)
{
    die_status(api->vt, api->context, what, status);
}

/* One get + release. The calls go through function pointers into another
 * shared object, so the compiler cannot drop them; checking the model also
 * proves that every call was a real, correct lookup. */
static inline void hit_and_release(const registry_api *api, int key_index)
{
    rm_model_handle *handle;
    void *model;
    int32_t status = api->vt->model_get_or_load(
        api->context, bench_keys[key_index], bench_loader,
        &bench_models[key_index], &handle, &model);
    if (status != RM_OK)
        fail(api, "model_get_or_load", status);
    if (model != &bench_models[key_index]) {
        fprintf(stderr, "bench_registry: %s returned the wrong model\n",
                bench_keys[key_index]);
        exit(1);
    }
    status = api->vt->model_release(api->context, handle);
    if (status != RM_OK)
        fail(api, "model_release", status);
}

static latency_figure measure_hit_release(const registry_api *api,
                                          const bench_plan *plan)
{
    double *per_op_ns = checked_malloc(sizeof *per_op_ns * (size_t)plan->batches);
    for (int batch = 0; batch < plan->batches; batch++) {
        double start = now_s();
        for (int op = 0; op < plan->ops_per_batch; op++)
            hit_and_release(api, 0);
        per_op_ns[batch] = (now_s() - start) * 1e9 / plan->ops_per_batch;
    }
    latency_figure figure = summarise(per_op_ns, plan->batches);
    free(per_op_ns);
    return figure;
}

/* ---- throughput --------------------------------------------------------- */

typedef struct throughput_run {
    const registry_api *api;
    pthread_barrier_t start;
    atomic_bool stop;
} throughput_run;

typedef struct throughput_worker {
    throughput_run *run;
    int key_index;
    uint64_t ops;
} throughput_worker;

static void *throughput_main(void *argument)
{
    throughput_worker *worker = argument;
    pthread_barrier_wait(&worker->run->start);
    uint64_t ops = 0;
    while (!atomic_load_explicit(&worker->run->stop, memory_order_relaxed)) {
        /* Check the flag every 64 pairs: its load is cheap, but not free. */
        for (int i = 0; i < 64; i++)
            hit_and_release(worker->run->api, worker->key_index);
        ops += 64;
    }
    worker->ops = ops;
    return NULL;
}

/* Runs one worker per entry of key_indexes for `seconds` and returns the
 * total get + release pairs per second. */
static double measure_throughput(const registry_api *api, const int *key_indexes,
                                 int threads, double seconds)
{
    throughput_run run = {.api = api};
    atomic_init(&run.stop, false);
    pthread_barrier_init(&run.start, NULL, (unsigned)threads + 1);
    throughput_worker workers[2];
    pthread_t ids[2];
    for (int i = 0; i < threads; i++) {
        workers[i] = (throughput_worker){.run = &run,
                                         .key_index = key_indexes[i]};
        if (pthread_create(&ids[i], NULL, throughput_main, &workers[i]) != 0)
            die("cannot start a thread");
    }
    pthread_barrier_wait(&run.start);
    double start = now_s();
    struct timespec duration = {
        .tv_sec = (time_t)seconds,
        .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9),
    };
    while (nanosleep(&duration, &duration) != 0) {
    }
    atomic_store(&run.stop, true);
    uint64_t ops = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        ops += workers[i].ops;
    }
    /* Elapsed until the last worker stopped, not until the flag was set. */
    double elapsed = now_s() - start;
    pthread_barrier_destroy(&run.start);
    return (double)ops / elapsed;
}

/* ---- setup -------------------------------------------------------------- */

static registry_api open_plugin(const char *path, rm_loaded_plugin *plugin)
{
    registry_api api = {.vt = load_plugin(path, RM_ABI_VERSION(1, 0), plugin)};
    /* Defaults (model-registry on, TTL 30 s), whatever the environment
     * says: the figures must not depend on the caller's configuration. */
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    int32_t status = api.vt->context_create(&options, &api.context);
    if (status != RM_OK)
        die_status(api.vt, NULL, "context_create", status);
    return api;
}

/* The registry must have loaded each key exactly once, or the figures
 * measured something other than hits. */
static void check_metrics(const registry_api *api)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    int32_t status = api->vt->registry_metrics(api->context, &metrics);
    if (status != RM_OK)
        fail(api, "registry_metrics", status);
    if (metrics.loads != 2 || metrics.load_failures != 0 ||
        metrics.misses != 2 || metrics.evictions != 0) {
        fprintf(stderr,
                "bench_registry: unexpected registry activity: loads %llu, "
                "failures %llu, misses %llu, evictions %llu\n",
                (unsigned long long)metrics.loads,
                (unsigned long long)metrics.load_failures,
                (unsigned long long)metrics.misses,
                (unsigned long long)metrics.evictions);
        exit(1);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_registry [--json] [--quick] "
                    "[PATH_TO_rm_plugin.so]\n"
                    "       (PATH defaults to $RM_PLUGIN_PATH)\n");
}

int main(int argc, char **argv)
{
    bench_options options;
    int exit_status = parse_options(argc, argv, 1, usage, &options);
    if (exit_status >= 0)
        return exit_status;
    bool json = options.json;
    const bench_plan *plan = options.quick ? &quick_plan : &full_plan;
    const char *path = options.plugin_path;

    rm_loaded_plugin plugin;
    registry_api api = open_plugin(path, &plugin);

    /* Load both keys, then run warm: caches, branch predictors, CPU
     * frequency. */
    hit_and_release(&api, 0);
    hit_and_release(&api, 1);
    double warm_until = now_s() + plan->warmup_s;
    while (now_s() < warm_until) {
        for (int i = 0; i < 1000; i++)
            hit_and_release(&api, 0);
    }

    latency_figure latency = measure_hit_release(&api, plan);

    static const int one_key[1] = {0};
    static const int same_key[2] = {0, 0};
    static const int two_keys[2] = {0, 1};
    double one_thread =
        measure_throughput(&api, one_key, 1, plan->throughput_s);
    double same =
        measure_throughput(&api, same_key, 2, plan->throughput_s);
    double different =
        measure_throughput(&api, two_keys, 2, plan->throughput_s);

    check_metrics(&api);
    api.vt->context_destroy(api.context);
    rm_plugin_unload(&plugin);

    if (json) {
        printf("{\"bench\":\"registry\",\"figure\":\"hit_release_ns\","
               "\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\","
               "\"batches\":%d,\"ops_per_batch\":%d}\n",
               latency.median_ns, latency.p10_ns, latency.p90_ns,
               plan->batches, plan->ops_per_batch);
        printf("{\"bench\":\"registry\",\"figure\":\"throughput_1t\","
               "\"ops_per_s\":%.0f}\n",
               one_thread);
        printf("{\"bench\":\"registry\",\"figure\":\"throughput_2t_same_key\","
               "\"ops_per_s\":%.0f,\"ratio_vs_1t\":%.3f}\n",
               same, same / one_thread);
        printf("{\"bench\":\"registry\","
               "\"figure\":\"throughput_2t_different_keys\","
               "\"ops_per_s\":%.0f,\"ratio_vs_1t\":%.3f}\n",
               different, different / one_thread);
    } else {
        printf("registry benchmark (%s)\n",
               plan == &quick_plan ? "quick" : "full");
        printf("  %-34s %10s %10s %10s\n", "hit + release, 1 thread",
               "median", "p10", "p90");
        printf("  %-34s %7.1f ns %7.1f ns %7.1f ns\n", "", latency.median_ns,
               latency.p10_ns, latency.p90_ns);
        printf("  %-34s %14s %10s\n", "throughput (get + release pairs)",
               "ops/s", "vs 1t");
        printf("  %-34s %14.0f %10s\n", "1 thread", one_thread, "1.000");
        printf("  %-34s %14.0f %10.3f\n", "2 threads, same key", same,
               same / one_thread);
        printf("  %-34s %14.0f %10.3f\n", "2 threads, different keys",
               different, different / one_thread);
    }
    return 0;
}
