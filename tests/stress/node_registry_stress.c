/* node_registry_stress: the node-scope registry's concurrent paths in plain
 * processes, so that ThreadSanitizer (which cannot run Criterion) watches
 * the local layer, the sweeper thread and the shared table together.
 *
 * Scenarios, each in a namespace private to this run:
 *  1 single_flight: 8 threads over 2 contexts race one fresh key whose
 *    loader is slow: exactly 1 loader call, every thread sees its bytes.
 *  2 churn: 4 threads over 2 contexts get, check and release 6 keys at
 *    random under registry.max_models = 3 and a 50 ms TTL, while another
 *    thread lists, evicts and reclaims; 2 forked processes (with contexts
 *    of their own) do the same at once. No call fails except evictions of
 *    models in use (RM_E_BUSY) or gone (RM_E_NOT_FOUND); every model read
 *    has the bytes of its key; at the end nothing is held, everything can
 *    be evicted, and no model segment is left in /dev/shm.
 *  3 table_lifetime: 3 threads in each of 3 processes create a context,
 *    get, check, release and evict one key and destroy the context, over
 *    and over, so the table is removed whenever all are out and made anew
 *    by the next: no call fails, every model read has its key's bytes,
 *    and nothing of the namespace (table included) is left at the end.
 *  4 reclaim_switch: 3 threads get, check, release and evict keys through
 *    one context while another thread of it reclaims and lists: whenever
 *    nothing is loaded, reclaim removes the table under them and their
 *    next get makes a new one (until that happened 20 times, or 10 s; not
 *    once fails); no call fails, and nothing is left at the end.
 * Prints "ok   name" / "FAIL name: reason" and "N passed, M failed"; exits
 * 0 only when all passed. Environment: RM_PLUGIN_PATH (required),
 * RM_STRESS_SCALE (iterations multiplier, default 1).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plugin_env.h"
#include "shm_cleanup.h"
#include "stress_driver.h"

#define KEYS 6
#define MODEL_BYTES (64u << 10)

static const rm_plugin_v1 *vt;
static char namespace_name[40];
static double scale = 1.0;
static atomic_int loader_calls;
static atomic_int errors;
static char reason[512];

static void fail_once(const char *what, rm_context *context, int32_t code)
{
    if (atomic_fetch_add(&errors, 1) == 0)
        snprintf(reason, sizeof reason, "%s: %s (%s)", what, vt->error_name(code),
                 context != NULL ? vt->context_last_error(context) : "");
}

static rm_context *make_context(const char *max_models, const char *ttl)
{
    rm_config_entry entries[] = {
        {"registry.scope", "node"},       {"registry.namespace", namespace_name},
        {"registry.max_models", max_models}, {"registry.ttl_s", ttl},
        {"features", "model-registry"},   {"log.level", "error"},
    };
    rm_context *context = NULL;
    if (create_context_of(vt, entries, sizeof entries / sizeof entries[0], &context) != RM_OK) {
        fprintf(stderr, "# context_create: %s\n", vt->context_last_error(NULL));
        return NULL;
    }
    return context;
}

static unsigned char pattern(const char *key, uint32_t offset)
{
    uint32_t hash = 2166136261u;
    for (const char *p = key; *p != '\0'; p++)
        hash = (hash ^ (unsigned char)*p) * 16777619u;
    return (unsigned char)((hash >> 8) ^ offset ^ (offset >> 9));
}

typedef struct loader_args {
    unsigned sleep_us;
} loader_args;

static int32_t pattern_loader(void *user, const char *key, rm_loaded_model *out)
{
    const loader_args *args = user;
    atomic_fetch_add(&loader_calls, 1);
    unsigned char *bytes = NULL;
    int32_t status = out->alloc_buffer(out, MODEL_BYTES, (void **)&bytes);
    if (status != RM_OK)
        return status;
    for (uint32_t i = 0; i < MODEL_BYTES; i++)
        bytes[i] = pattern(key, i);
    if (args != NULL && args->sleep_us != 0)
        usleep(args->sleep_us);
    return RM_OK;
}

static bool model_ok(const char *key, const unsigned char *bytes)
{
    for (uint32_t i = 0; i < MODEL_BYTES; i += 4093)
        if (bytes[i] != pattern(key, i))
            return false;
    return bytes[MODEL_BYTES - 1] == pattern(key, MODEL_BYTES - 1);
}

static unsigned model_segments(void)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.m.", namespace_name);
    long count = shm_list_prefix(prefix, NULL, 0);
    return count < 0 ? 0 : (unsigned)count;
}

static void remove_namespace(void)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.", namespace_name);
    shm_unlink_prefix(prefix);
}

/* ---- 1 single_flight ---------------------------------------------------- */

typedef struct racer {
    rm_context *context;
    pthread_barrier_t *start;
} racer;

static void *race_thread(void *arg)
{
    racer *r = arg;
    loader_args slow = {.sleep_us = 50000};
    pthread_barrier_wait(r->start);
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t status =
        vt->model_get_or_load(r->context, "race-model@cpu", pattern_loader, &slow, &handle, &model);
    if (status != RM_OK) {
        fail_once("get_or_load", r->context, status);
        return NULL;
    }
    if (!model_ok("race-model@cpu", model))
        fail_once("wrong bytes", NULL, RM_OK);
    vt->model_release(r->context, handle);
    return NULL;
}

static int single_flight(void)
{
    rm_context *contexts[2] = {make_context("0", "30"), make_context("0", "30")};
    if (contexts[0] == NULL || contexts[1] == NULL)
        return -1;
    atomic_store(&loader_calls, 0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 8);
    pthread_t threads[8];
    racer racers[8];
    for (int i = 0; i < 8; i++) {
        racers[i] = (racer){.context = contexts[i % 2], .start = &start};
        pthread_create(&threads[i], NULL, race_thread, &racers[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    int calls = atomic_load(&loader_calls);
    if (atomic_load(&errors) == 0 && calls != 1) {
        atomic_fetch_add(&errors, 1);
        snprintf(reason, sizeof reason, "%d loader calls for one key, expected 1", calls);
    }
    vt->context_destroy(contexts[0]);
    vt->context_destroy(contexts[1]);
    return atomic_load(&errors) == 0 ? 0 : -1;
}

/* ---- 2 churn ------------------------------------------------------------ */

typedef struct churner {
    rm_context *context;
    int rounds;
    uint64_t seed;
} churner;

static const char *const churn_keys[KEYS] = {"a@cpu", "b@cpu", "c@cpu",
                                             "d@cuda:1", "e/x@cpu", "f.q8@cpu"};

static void *churn_thread(void *arg)
{
    churner *c = arg;
    uint64_t state = c->seed | 1;
    for (int round = 0; round < c->rounds && atomic_load(&errors) == 0; round++) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        const char *key = churn_keys[state % KEYS];
        rm_model_handle *handle = NULL;
        void *model = NULL;
        int32_t status =
            vt->model_get_or_load(c->context, key, pattern_loader, NULL, &handle, &model);
        if (status != RM_OK) {
            fail_once("get_or_load", c->context, status);
            break;
        }
        if (!model_ok(key, model))
            fail_once("wrong bytes", NULL, RM_OK);
        if (state % 3 == 0)
            usleep(200);
        status = vt->model_release(c->context, handle);
        if (status != RM_OK)
            fail_once("release", c->context, status);
    }
    return NULL;
}

typedef struct janitor {
    rm_context *context;
    atomic_bool stop;
} janitor;

static void *janitor_thread(void *arg)
{
    janitor *j = arg;
    while (!atomic_load(&j->stop) && atomic_load(&errors) == 0) {
        rm_model_info rows[16];
        uint32_t count = 0;
        int32_t status = vt->registry_list(j->context, rows, sizeof rows[0], 16, &count);
        if (status != RM_OK)
            fail_once("registry_list", j->context, status);
        status = vt->model_evict(j->context, churn_keys[count % KEYS]);
        if (status != RM_OK && status != RM_E_BUSY && status != RM_E_NOT_FOUND)
            fail_once("model_evict", j->context, status);
        rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
        status = vt->registry_reclaim(j->context, &report);
        if (status != RM_OK)
            fail_once("registry_reclaim", j->context, status);
        usleep(2000);
    }
    return NULL;
}

/* Runs the threads of one process; returns 0 when nothing failed. */
static int churn_process(int rounds, uint64_t seed)
{
    rm_context *contexts[2] = {make_context("3", "0.05"), make_context("3", "0.05")};
    if (contexts[0] == NULL || contexts[1] == NULL)
        return -1;
    pthread_t threads[4];
    churner churners[4];
    for (int i = 0; i < 4; i++) {
        churners[i] = (churner){.context = contexts[i % 2], .rounds = rounds, .seed = seed + (uint64_t)i * 7919};
        pthread_create(&threads[i], NULL, churn_thread, &churners[i]);
    }
    janitor j = {.context = contexts[0]};
    pthread_t janitor_id;
    pthread_create(&janitor_id, NULL, janitor_thread, &j);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&j.stop, true);
    pthread_join(janitor_id, NULL);
    vt->context_destroy(contexts[0]);
    vt->context_destroy(contexts[1]);
    return atomic_load(&errors) == 0 ? 0 : -1;
}

static int churn(void)
{
    int rounds = (int)(400 * scale) + 10;
    pid_t children[2];
    for (int i = 0; i < 2; i++) {
        children[i] = fork();
        if (children[i] == 0) {
            int failed = churn_process(rounds, (uint64_t)getpid() * 31);
            if (failed)
                fprintf(stderr, "# child %d: %s\n", (int)getpid(), reason);
            _exit(failed ? 1 : 0);
        }
    }
    int failed = churn_process(rounds, 12345);
    for (int i = 0; i < 2; i++) {
        int status = 0;
        waitpid(children[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (atomic_fetch_add(&errors, 1) == 0)
                snprintf(reason, sizeof reason, "child process %d failed (status 0x%x)",
                         (int)children[i], status);
            failed = -1;
        }
    }
    if (failed)
        return -1;
    /* Every process let go: all of it can be evicted and unlinked now. */
    rm_context *context = make_context("0", "0");
    if (context == NULL)
        return -1;
    int32_t status = vt->model_evict(context, NULL);
    rm_model_info rows[16];
    uint32_t count = 99;
    vt->registry_list(context, rows, sizeof rows[0], 16, &count);
    vt->context_destroy(context);
    unsigned left = model_segments();
    if (status != RM_OK || count != 0 || left != 0) {
        snprintf(reason, sizeof reason,
                 "after every process let go: evict -> %s, %u rows, %u model segments left",
                 vt->error_name(status), count, left);
        return -1;
    }
    return 0;
}

/* ---- 3 table_lifetime ---------------------------------------------------- */

static unsigned namespace_files(void)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.", namespace_name);
    long count = shm_list_prefix(prefix, NULL, 0);
    return count < 0 ? 0 : (unsigned)count;
}

/* One get/check/release/evict of `key` through `context`. */
static void use_and_evict(rm_context *context, const char *key)
{
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t status = vt->model_get_or_load(context, key, pattern_loader, NULL, &handle, &model);
    if (status != RM_OK) {
        fail_once("get_or_load", context, status);
        return;
    }
    if (!model_ok(key, model))
        fail_once("wrong bytes", NULL, RM_OK);
    status = vt->model_release(context, handle);
    if (status != RM_OK)
        fail_once("release", context, status);
    status = vt->model_evict(context, key);
    if (status != RM_OK && status != RM_E_BUSY && status != RM_E_NOT_FOUND)
        fail_once("model_evict", context, status);
}

static void *lifetime_thread(void *arg)
{
    const int *rounds = arg;
    for (int round = 0; round < *rounds && atomic_load(&errors) == 0; round++) {
        rm_context *context = make_context("0", "30");
        if (context == NULL) {
            fail_once("context_create", NULL, RM_E_SYSTEM);
            break;
        }
        use_and_evict(context, "life@cpu");
        vt->context_destroy(context);
        usleep(100);
    }
    return NULL;
}

static int lifetime_process(int rounds)
{
    pthread_t threads[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&threads[i], NULL, lifetime_thread, &rounds);
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);
    return atomic_load(&errors) == 0 ? 0 : -1;
}

static int check_nothing_left(const char *when)
{
    unsigned left = namespace_files();
    if (left != 0) {
        snprintf(reason, sizeof reason, "%s: %u files of the namespace left in /dev/shm", when,
                 left);
        return -1;
    }
    return 0;
}

static int table_lifetime(void)
{
    remove_namespace();
    int rounds = (int)(300 * scale) + 10;
    pid_t children[2];
    for (int i = 0; i < 2; i++) {
        children[i] = fork();
        if (children[i] == 0) {
            int failed = lifetime_process(rounds);
            if (failed)
                fprintf(stderr, "# child %d: %s\n", (int)getpid(), reason);
            _exit(failed ? 1 : 0);
        }
    }
    int failed = lifetime_process(rounds);
    for (int i = 0; i < 2; i++) {
        int status = 0;
        waitpid(children[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (atomic_fetch_add(&errors, 1) == 0)
                snprintf(reason, sizeof reason, "child process %d failed (status 0x%x)",
                         (int)children[i], status);
            failed = -1;
        }
    }
    if (failed)
        return -1;
    return check_nothing_left("after every process let go");
}

/* ---- 4 reclaim_switch ----------------------------------------------------- */

typedef struct switcher {
    rm_context *context;
    const char *key;
    atomic_bool *stop;
} switcher;

static void *switch_user_thread(void *arg)
{
    switcher *w = arg;
    while (!atomic_load(w->stop) && atomic_load(&errors) == 0) {
        use_and_evict(w->context, w->key);
        usleep(1000); /* all out at once now and then: the table can go */
    }
    return NULL;
}

static int reclaim_switch(void)
{
    remove_namespace();
    rm_context *context = make_context("0", "30");
    if (context == NULL)
        return -1;
    atomic_bool stop = false;
    static const char *const keys[3] = {"s1@cpu", "s2@cpu", "s1@cpu"};
    switcher users[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        users[i] = (switcher){.context = context, .key = keys[i], .stop = &stop};
        pthread_create(&threads[i], NULL, switch_user_thread, &users[i]);
    }
    /* Until reclaim has removed the table under the threads 20 times (or
     * 10 s have passed: that it happened at all is what matters). */
    uint64_t removed = 0;
    struct timespec started, now;
    clock_gettime(CLOCK_MONOTONIC, &started);
    for (now = started; removed < 20 && now.tv_sec - started.tv_sec < 10 &&
                        atomic_load(&errors) == 0;
         clock_gettime(CLOCK_MONOTONIC, &now)) {
        rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
        int32_t status = vt->registry_reclaim(context, &report);
        if (status != RM_OK)
            fail_once("registry_reclaim", context, status);
        removed += report.segments_unlinked;
        rm_model_info rows[4];
        uint32_t count = 0;
        status = vt->registry_list(context, rows, sizeof rows[0], 4, &count);
        if (status != RM_OK)
            fail_once("registry_list", context, status);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);
    if (atomic_load(&errors) != 0)
        return -1;
    printf("# reclaim_switch: %llu tables removed under the threads\n",
           (unsigned long long)removed);
    if (removed == 0) {
        snprintf(reason, sizeof reason,
                 "in 10 s reclaim never found the namespace empty, so the switch to a new "
                 "table was not exercised");
        vt->context_destroy(context);
        return -1;
    }
    int32_t status = vt->model_evict(context, NULL);
    vt->context_destroy(context);
    if (status != RM_OK) {
        snprintf(reason, sizeof reason, "evicting at the end: %s", vt->error_name(status));
        return -1;
    }
    return check_nothing_left("after the context was destroyed");
}

static void reset_errors(void)
{
    atomic_store(&errors, 0);
}

int main(void)
{
    scale = stress_scale();
    snprintf(namespace_name, sizeof namespace_name, "nstress%ld", (long)getpid());
    rm_loaded_plugin plugin;
    char error[512];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 2), &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "%s\n", error);
        return 2;
    }
    vt = plugin.vtable;
    const stress_scenario scenarios[] = {
        {"single_flight", single_flight},
        {"churn", churn},
        {"table_lifetime", table_lifetime},
        {"reclaim_switch", reclaim_switch},
    };
    int failed =
        stress_run(scenarios, sizeof scenarios / sizeof scenarios[0], reset_errors, reason);
    remove_namespace();
    rm_plugin_unload(&plugin);
    return failed == 0 ? 0 : 1;
}
