/* Benchmark of the model registry through the real shared object, in the
 * configuration a host runs it in: dlopen(), negotiate, a context with the
 * default configuration (features = all, registry.ttl_s = 30, so the
 * registry's eviction thread runs; checked before measuring), and one more
 * host thread alive for the whole run, parked on a condition variable, so
 * that even the one-thread figure runs with glibc in multi-threaded mode.
 * It measures
 *  (a) warm hit + release on one thread: ns per pair, median/p10/p90 over
 *      many batches;
 *  (b) throughput of 2 threads on one key and of 2 threads on two keys, as
 *      ratios to 1-thread throughput, in rounds that interleave the three
 *      (median/p10/p90 of each round's ratio), next to the same ratio for
 *      two threads of plain arithmetic (no shared state): what the machine
 *      gave two threads during the run, since a shared VM may give less
 *      than two cores.
 * Every call is checked to be a hit on the right model, and at the end the
 * registry's metrics must count exactly the calls made.
 *
 * Usage: bench_registry [--json] [--quick] [PATH_TO_rm_plugin.so]
 *        (PATH defaults to $RM_PLUGIN_PATH)
 * --json prints one JSON object per figure per line instead of a table;
 * --quick runs a much shorter version (a CI smoke test, well under 3 s).
 */
#include <dirent.h>
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
    int batches; /* for the hit + release distribution */
    int ops_per_batch;
    double warmup_s;
    int rounds;           /* of the throughput figures */
    double throughput_s;  /* per figure per round */
} bench_plan;

static const bench_plan full_plan = {
    .batches = 300,
    .ops_per_batch = 20000,
    .warmup_s = 0.3,
    .rounds = 7,
    .throughput_s = 0.4,
};

static const bench_plan quick_plan = {
    .batches = 40,
    .ops_per_batch = 2000,
    .warmup_s = 0.05,
    .rounds = 2,
    .throughput_s = 0.05,
};

/* Two keys, as a host spells them (not normalised: normalisation is part
 * of the cost being measured). */
static const char *const bench_keys[2] = {"bench/resnet50@CUDA:0", "bench/bert-base@cpu"};

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

static _Noreturn void fail(const registry_api *api, const char *what, int32_t status)
{
    die_status(api->vt, api->context, what, status);
}

/* get + release pairs made, to check against the registry's metrics. */
static atomic_ullong pairs_made;

/* One get + release. The calls go through function pointers into another
 * shared object, so the compiler cannot drop them; checking the model also
 * proves that every call was a real, correct lookup. */
static inline void hit_and_release(const registry_api *api, int key_index)
{
    rm_model_handle *handle;
    void *model;
    int32_t status = api->vt->model_get_or_load(api->context, bench_keys[key_index],
                                                bench_loader, &bench_models[key_index],
                                                &handle, &model);
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

static latency_figure measure_hit_release(const registry_api *api, const bench_plan *plan)
{
    double *per_op_ns = checked_malloc(sizeof *per_op_ns * (size_t)plan->batches);
    for (int batch = 0; batch < plan->batches; batch++) {
        double start = now_s();
        for (int op = 0; op < plan->ops_per_batch; op++)
            hit_and_release(api, 0);
        per_op_ns[batch] = (now_s() - start) * 1e9 / plan->ops_per_batch;
    }
    atomic_fetch_add(&pairs_made, (unsigned long long)plan->batches *
                                      (unsigned long long)plan->ops_per_batch);
    latency_figure figure = summarise(per_op_ns, plan->batches);
    free(per_op_ns);
    return figure;
}

/* ---- the parked host thread ----------------------------------------------- */

/* A host has more threads than the one calling the registry; this one only
 * waits, as a host's idle thread does. */
static struct {
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    bool quit;
    pthread_t thread;
} parked = {.mutex = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void *parked_main(void *argument)
{
    (void)argument;
    pthread_mutex_lock(&parked.mutex);
    while (!parked.quit)
        pthread_cond_wait(&parked.wake, &parked.mutex);
    pthread_mutex_unlock(&parked.mutex);
    return NULL;
}

static void parked_start(void)
{
    if (pthread_create(&parked.thread, NULL, parked_main, NULL) != 0)
        die("cannot start the parked host thread");
}

static void parked_stop(void)
{
    pthread_mutex_lock(&parked.mutex);
    parked.quit = true;
    pthread_cond_signal(&parked.wake);
    pthread_mutex_unlock(&parked.mutex);
    pthread_join(parked.thread, NULL);
}

/* ---- throughput: two persistent worker threads ---------------------------- */

typedef enum work_kind {
    WORK_REGISTRY,  /* get + release pairs */
    WORK_REFERENCE, /* arithmetic on the worker's own state */
} work_kind;

typedef struct worker {
    pthread_t thread;
    bool active;   /* in this measurement */
    int key_index;
    uint64_t ops;
    uint64_t sink; /* the reference work's result, so it is not dropped */
} worker;

/* The workers live for the whole run, as a host's thread pool does: each
 * takes its registry slot once, and idles in a barrier between figures. */
static struct {
    const registry_api *api;
    work_kind kind;
    worker workers[2];
    pthread_barrier_t start; /* main + 2 workers */
    pthread_barrier_t done;
    atomic_bool stop;
    bool quit;
} crew;

/* About as much arithmetic per step as a hit + release takes time, in one
 * dependency chain (xorshift64*). */
static uint64_t reference_work(uint64_t state)
{
    for (int i = 0; i < 8; i++) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state *= UINT64_C(0x2545f4914f6cdd1d);
    }
    return state;
}

static void *worker_main(void *argument)
{
    worker *self = argument;
    for (;;) {
        pthread_barrier_wait(&crew.start);
        if (crew.quit)
            return NULL;
        uint64_t ops = 0;
        if (self->active && crew.kind == WORK_REGISTRY) {
            while (!atomic_load_explicit(&crew.stop, memory_order_relaxed)) {
                /* Check the flag every 64 pairs: its load is cheap, but
                 * not free. */
                for (int i = 0; i < 64; i++)
                    hit_and_release(crew.api, self->key_index);
                ops += 64;
            }
            atomic_fetch_add(&pairs_made, ops);
        } else if (self->active) {
            uint64_t state = self->sink | 1;
            while (!atomic_load_explicit(&crew.stop, memory_order_relaxed)) {
                for (int i = 0; i < 64; i++)
                    state = reference_work(state);
                ops += 64;
            }
            self->sink = state;
        }
        self->ops = ops;
        pthread_barrier_wait(&crew.done);
    }
}

static void crew_start(const registry_api *api)
{
    crew.api = api;
    atomic_init(&crew.stop, false);
    pthread_barrier_init(&crew.start, NULL, 3);
    pthread_barrier_init(&crew.done, NULL, 3);
    for (int i = 0; i < 2; i++) {
        crew.workers[i].sink = (uint64_t)i + 1;
        if (pthread_create(&crew.workers[i].thread, NULL, worker_main, &crew.workers[i]) != 0)
            die("cannot start a worker thread");
    }
}

static void crew_stop(void)
{
    crew.quit = true;
    pthread_barrier_wait(&crew.start);
    for (int i = 0; i < 2; i++)
        pthread_join(crew.workers[i].thread, NULL);
    pthread_barrier_destroy(&crew.start);
    pthread_barrier_destroy(&crew.done);
}

/* Runs `threads` workers (on keys key_indexes[i]) for `seconds`; returns
 * the total operations per second. */
static double measure_throughput(work_kind kind, const int *key_indexes, int threads,
                                 double seconds)
{
    crew.kind = kind;
    for (int i = 0; i < 2; i++) {
        crew.workers[i].active = i < threads;
        crew.workers[i].key_index = i < threads ? key_indexes[i] : 0;
    }
    atomic_store(&crew.stop, false);
    pthread_barrier_wait(&crew.start);
    double start = now_s();
    struct timespec duration = {
        .tv_sec = (time_t)seconds,
        .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9),
    };
    while (nanosleep(&duration, &duration) != 0) {
    }
    atomic_store(&crew.stop, true);
    pthread_barrier_wait(&crew.done);
    /* Elapsed until the last worker stopped, not until the flag was set. */
    double elapsed = now_s() - start;
    uint64_t ops = crew.workers[0].ops + crew.workers[1].ops;
    return (double)ops / elapsed;
}

typedef struct throughput_figures {
    latency_figure one_thread;      /* ops/s, over rounds */
    latency_figure same_key;        /* ratio to the round's one thread */
    latency_figure different_keys;  /* ratio */
    latency_figure reference;       /* ratio of the arithmetic */
    double same_key_ops;            /* median ops/s */
    double different_keys_ops;
} throughput_figures;

static throughput_figures measure_scaling(const bench_plan *plan)
{
    static const int one_key[2] = {0, 0};
    static const int two_keys[2] = {0, 1};
    int rounds = plan->rounds;
    double *one = checked_malloc(sizeof(double) * (size_t)rounds);
    double *same = checked_malloc(sizeof(double) * (size_t)rounds);
    double *different = checked_malloc(sizeof(double) * (size_t)rounds);
    double *same_ratio = checked_malloc(sizeof(double) * (size_t)rounds);
    double *different_ratio = checked_malloc(sizeof(double) * (size_t)rounds);
    double *reference_ratio = checked_malloc(sizeof(double) * (size_t)rounds);
    for (int round = 0; round < rounds; round++) {
        double s = plan->throughput_s;
        one[round] = measure_throughput(WORK_REGISTRY, one_key, 1, s);
        same[round] = measure_throughput(WORK_REGISTRY, one_key, 2, s);
        different[round] = measure_throughput(WORK_REGISTRY, two_keys, 2, s);
        double reference_one = measure_throughput(WORK_REFERENCE, one_key, 1, s / 2);
        double reference_two = measure_throughput(WORK_REFERENCE, one_key, 2, s / 2);
        same_ratio[round] = same[round] / one[round];
        different_ratio[round] = different[round] / one[round];
        reference_ratio[round] = reference_two / reference_one;
    }
    throughput_figures figures = {
        .one_thread = summarise(one, rounds),
        .same_key = summarise(same_ratio, rounds),
        .different_keys = summarise(different_ratio, rounds),
        .reference = summarise(reference_ratio, rounds),
        .same_key_ops = summarise(same, rounds).median_ns,
        .different_keys_ops = summarise(different, rounds).median_ns,
    };
    free(one);
    free(same);
    free(different);
    free(same_ratio);
    free(different_ratio);
    free(reference_ratio);
    return figures;
}

/* ---- setup and checks ----------------------------------------------------- */

static registry_api open_plugin(const char *path, rm_loaded_plugin *plugin)
{
    registry_api api = {.vt = load_plugin(path, RM_ABI_VERSION(1, 0), plugin)};
    /* Defaults (features = all, registry.ttl_s = 30), whatever the
     * environment says: the figures must not depend on the caller's
     * configuration. */
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    int32_t status = api.vt->context_create(&options, &api.context);
    if (status != RM_OK)
        die_status(api.vt, NULL, "context_create", status);
    return api;
}

/* Threads of this process named `name` (/proc/self/task/<tid>/comm). */
static int threads_named(const char *name)
{
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL)
        die_errno("opendir /proc/self/task");
    int found = 0;
    struct dirent *task;
    while ((task = readdir(tasks)) != NULL) {
        if (task->d_name[0] == '.')
            continue;
        char path[64];
        char comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%.20s/comm", task->d_name);
        FILE *file = fopen(path, "r");
        if (file == NULL)
            continue; /* the thread ended meanwhile */
        if (fgets(comm, sizeof comm, file) != NULL) {
            comm[strcspn(comm, "\n")] = '\0';
            found += strcmp(comm, name) == 0;
        }
        fclose(file);
    }
    closedir(tasks);
    return found;
}

typedef struct setup_report {
    char features[128];
    char ttl_s[32];
} setup_report;

/* The configuration a host runs: every built feature enabled, a TTL, and
 * the registry's eviction thread running. */
static setup_report check_setup(const registry_api *api)
{
    setup_report report;
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    int32_t status = api->vt->context_info(api->context, &info);
    if (status != RM_OK)
        fail(api, "context_info", status);
    if ((info.features_enabled & RM_FEATURE_MODEL_REGISTRY) == 0 ||
        info.features_enabled != info.features_built)
        die("the context does not enable every built feature (features = all)");
    status = api->vt->config_get(api->context, "features", report.features,
                                 sizeof report.features, NULL);
    if (status != RM_OK)
        fail(api, "config_get features", status);
    status = api->vt->config_get(api->context, "registry.ttl_s", report.ttl_s,
                                 sizeof report.ttl_s, NULL);
    if (status != RM_OK)
        fail(api, "config_get registry.ttl_s", status);
    if (threads_named("rm-evictor") != 1)
        die("the registry's eviction thread (rm-evictor) is not running");
    return report;
}

/* The registry must have loaded each key exactly once and counted every
 * other call as a hit, or the figures measured something else. */
static void check_metrics(const registry_api *api)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    int32_t status = api->vt->registry_metrics(api->context, &metrics);
    if (status != RM_OK)
        fail(api, "registry_metrics", status);
    unsigned long long pairs = atomic_load(&pairs_made);
    if (metrics.loads != 2 || metrics.load_failures != 0 || metrics.misses != 2 ||
        metrics.evictions != 0 || metrics.hits + metrics.misses != pairs) {
        fprintf(stderr,
                "bench_registry: unexpected registry activity: loads %llu, "
                "failures %llu, misses %llu, evictions %llu, hits %llu for %llu calls\n",
                (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
                (unsigned long long)metrics.misses, (unsigned long long)metrics.evictions,
                (unsigned long long)metrics.hits, pairs);
        exit(1);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_registry [--json] [--quick] "
                    "[PATH_TO_rm_plugin.so]\n"
                    "       (PATH defaults to $RM_PLUGIN_PATH)\n");
}

static void print_ratio_json(const char *figure, double ops, const latency_figure *ratio,
                             int rounds)
{
    printf("{\"bench\":\"registry\",\"figure\":\"%s\",\"ops_per_s\":%.0f,"
           "\"ratio_vs_1t\":%.3f,\"ratio_p10\":%.3f,\"ratio_p90\":%.3f,\"rounds\":%d}\n",
           figure, ops, ratio->median_ns, ratio->p10_ns, ratio->p90_ns, rounds);
}

static void print_ratio_row(const char *label, double ops, const latency_figure *ratio)
{
    printf("  %-40s %14.0f %8.3f %8.3f %8.3f\n", label, ops, ratio->median_ns,
           ratio->p10_ns, ratio->p90_ns);
}

int main(int argc, char **argv)
{
    bench_options options;
    int exit_status = parse_options(argc, argv, 1, usage, &options);
    if (exit_status >= 0)
        return exit_status;
    bool json = options.json;
    const bench_plan *plan = options.quick ? &quick_plan : &full_plan;

    parked_start();
    rm_loaded_plugin plugin;
    registry_api api = open_plugin(options.plugin_path, &plugin);
    setup_report setup = check_setup(&api);
    crew_start(&api);

    /* Load both keys, then run warm: caches, branch predictors, CPU
     * frequency. */
    hit_and_release(&api, 0);
    hit_and_release(&api, 1);
    unsigned long long warm_pairs = 2;
    double warm_until = now_s() + plan->warmup_s;
    while (now_s() < warm_until) {
        for (int i = 0; i < 1000; i++)
            hit_and_release(&api, 0);
        warm_pairs += 1000;
    }
    atomic_fetch_add(&pairs_made, warm_pairs);

    latency_figure latency = measure_hit_release(&api, plan);
    throughput_figures scaling = measure_scaling(plan);

    crew_stop();
    check_metrics(&api);
    api.vt->context_destroy(api.context);
    rm_plugin_unload(&plugin);
    parked_stop();

    if (json) {
        printf("{\"bench\":\"registry\",\"figure\":\"hit_release_ns\","
               "\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,\"unit\":\"ns\","
               "\"batches\":%d,\"ops_per_batch\":%d,\"features\":\"%s\","
               "\"ttl_s\":\"%s\",\"host_threads\":2}\n",
               latency.median_ns, latency.p10_ns, latency.p90_ns, plan->batches,
               plan->ops_per_batch, setup.features, setup.ttl_s);
        printf("{\"bench\":\"registry\",\"figure\":\"throughput_1t\","
               "\"ops_per_s\":%.0f,\"p10\":%.0f,\"p90\":%.0f,\"rounds\":%d}\n",
               scaling.one_thread.median_ns, scaling.one_thread.p10_ns,
               scaling.one_thread.p90_ns, plan->rounds);
        print_ratio_json("throughput_2t_same_key", scaling.same_key_ops, &scaling.same_key,
                         plan->rounds);
        print_ratio_json("throughput_2t_different_keys", scaling.different_keys_ops,
                         &scaling.different_keys, plan->rounds);
        printf("{\"bench\":\"registry\",\"figure\":\"machine_2t_reference\","
               "\"ratio_vs_1t\":%.3f,\"ratio_p10\":%.3f,\"ratio_p90\":%.3f,\"rounds\":%d}\n",
               scaling.reference.median_ns, scaling.reference.p10_ns,
               scaling.reference.p90_ns, plan->rounds);
    } else {
        printf("registry benchmark (%s): features %s, registry.ttl_s %s, eviction thread "
               "running, 1 parked host thread\n",
               plan == &quick_plan ? "quick" : "full", setup.features, setup.ttl_s);
        printf("  %-40s %10s %10s %10s\n", "hit + release, 1 thread", "median", "p10",
               "p90");
        printf("  %-40s %7.1f ns %7.1f ns %7.1f ns\n", "", latency.median_ns,
               latency.p10_ns, latency.p90_ns);
        printf("  %-40s %14s %8s %8s %8s\n",
               "throughput (get + release pairs)", "ops/s", "vs 1t", "p10", "p90");
        printf("  %-40s %14.0f %8s\n", "1 thread", scaling.one_thread.median_ns, "1.000");
        print_ratio_row("2 threads, same key", scaling.same_key_ops, &scaling.same_key);
        print_ratio_row("2 threads, different keys", scaling.different_keys_ops,
                        &scaling.different_keys);
        printf("  %-40s %14s %8.3f %8.3f %8.3f\n", "2 threads, no shared state (machine)",
               "", scaling.reference.median_ns, scaling.reference.p10_ns,
               scaling.reference.p90_ns);
        printf("  (%d rounds of %.2f s per figure; ratios are per round, against that "
               "round's 1 thread)\n",
               plan->rounds, plan->throughput_s);
    }
    return 0;
}
