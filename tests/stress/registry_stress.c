/* registry_stress: the model registry's concurrent scenarios in a plain
 * process, so that ThreadSanitizer watches the plugin's real locking.
 *
 * Criterion cannot run under TSan (its BoxFort arena collides with TSan's
 * memory layout, Snaipe/Criterion#274), so the concurrent tests of
 * tests/unit/test_registry.c are mirrored here. This driver dlopen()s the
 * built plugin through the shared C host loader and uses the vtable only:
 * what TSan sees is the shipped object's locking, not a test build of the
 * internals.
 *
 * The frame is the shared stress harness (tests/support/stress_driver.h),
 * as for its siblings: each scenario returns 0, or -1 with a reason, and
 * the harness prints "ok   name" or "FAIL name: reason"; the last line is
 * "N passed, M failed" (CI reads it), and the exit status is 0 only when
 * every scenario passed. Timings and counts go to stderr as "# ..." lines.
 * What this driver adds through the harness's watch: a scenario fails when
 * the plugin logged an error line during it, a watchdog, and a report of
 * a crash.
 *
 * The scenarios, each on its own context (RM_CONTEXT_IGNORE_ENV):
 *  1 single_flight: 8 callers released at once on one key whose loader is
 *    held: one loader call, 8 misses, one model for all, refcount 8.
 *  2 failure_wakes_all: the same with a loader failing with -1234: every
 *    caller gets -1234, no entry is left, the next get loads again.
 *  3 different_keys_concurrent: two loaders each wait for the other to
 *    start: no lock is held across loads.
 *  4 cross_thread_cycle: a@cpu's loader asks for b@cpu and b@cpu's for
 *    a@cpu, on two threads: RM_E_LOAD_CYCLE instead of a deadlock, with
 *    loaders that pass the failure up and loaders that swallow it.
 *  5 random_failures: 16 threads x 1000 get/release rounds on 8 keys with
 *    loaders failing at random, a tiny TTL, a model budget and evict calls:
 *    right model for every key, every model destroyed exactly once, the
 *    metrics match what the loaders saw.
 *  6 ttl_under_load: an idle model expires while other threads hammer a hot
 *    one; nothing held (hot, or one pinned past its TTL) is destroyed.
 *  7 lru_pressure: 4 threads cycle through 12 keys with max_models = 4:
 *    never more than 4 loaded, destroys = loads - models.
 *  8 list_and_metrics_while_busy: registry_list and registry_metrics called
 *    in a loop while two threads churn 6 keys: every row and every snapshot
 *    is sane on its own, and counters never go back.
 *  9 hits_racing_eviction: 4 threads hit 2 hot keys (lock-free hits) and
 *    now and then 3 cold ones, handing a quarter of their handles to
 *    another thread to release, while a fifth evicts the hot keys in a loop,
 *    with a 0.1 ms TTL and max_models = 3: no model is destroyed while
 *    held or handed out after its destroy, evicted entries are reused for
 *    other keys safely, and hits + misses = lookups.
 *
 * Every wait is bounded, so a bug shows as FAIL and never as a hang:
 *  - gates between threads time out after GATE_S seconds;
 *  - worker threads are waited for at most RM_STRESS_TIMEOUT_S; threads
 *    still running then are abandoned together with their scenario's memory
 *    and context (freeing either under a running thread would be worse);
 *  - a watchdog thread ends the process, printing the FAIL lines and the
 *    summary, when one scenario runs longer than three times that (its own
 *    thread is stuck inside the plugin).
 * A crash (a fatal signal) or a sanitizer that halts on its first report
 * also ends with the FAIL lines and the summary before the process dies.
 *
 * Environment:
 *   RM_PLUGIN_PATH       the rm_plugin.so to load (required)
 *   RM_STRESS_SCALE      multiplies the iteration counts and rounds (default
 *                        1, under TSan as well; 0.1 for a quick run, 10 for
 *                        a soak)
 *   RM_STRESS_TIMEOUT_S  bound on each wait for worker threads, in seconds
 *                        (default 60)
 *   RM_STRESS_VERBOSE    when set, the plugin's log lines go to stderr
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plugin_env.h"
#include "stress_driver.h"

/* ------------------------------------------------------------------------ */
/* Settings and small helpers                                               */
/* ------------------------------------------------------------------------ */

#define GATE_S 10.0 /* one thread waiting for another to reach a point */
#define RELAXED memory_order_relaxed

static const rm_plugin_v1 *vt;
static double thread_limit_s = 60.0;
static bool verbose;
/* Why the running scenario failed; the harness clears and prints it. */
static char reason[1024];

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * UINT64_C(1000000000) + (uint64_t)now.tv_nsec;
}

static void sleep_ms(unsigned milliseconds)
{
    struct timespec delay = {
        .tv_sec = milliseconds / 1000,
        .tv_nsec = (long)(milliseconds % 1000) * 1000000L,
    };
    while (nanosleep(&delay, &delay) != 0 && errno == EINTR) {
    }
}

static struct timespec monotonic_in(double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    uint64_t total = (uint64_t)until.tv_nsec + (uint64_t)(seconds * 1e9);
    until.tv_sec += (time_t)(total / 1000000000u);
    until.tv_nsec = (long)(total % 1000000000u);
    return until;
}

/* Writes the reason for a failure, keeping the first one. Returns -1. */
__attribute__((format(printf, 3, 4))) static int failf(char *why, size_t why_size,
                                                       const char *format, ...)
{
    if (why[0] == '\0') {
        va_list args;
        va_start(args, format);
        vsnprintf(why, why_size, format, args);
        va_end(args);
    }
    return -1;
}

/* Inside a scenario (with `why`, `why_size` and an `out:` label): records
 * the reason and jumps to the clean-up when `condition` is false. */
#define CHECK(condition, ...)                       \
    do {                                            \
        if (!(condition)) {                         \
            failf(why, why_size, __VA_ARGS__);      \
            goto out;                               \
        }                                           \
    } while (0)

/* Waits (bounded) for a crew inside a scenario; a crew still running is a
 * failure, and the clean-up then gives it one more wait before abandoning
 * it. */
#define CHECK_FINISHED(c)                                                   \
    CHECK(crew_finish((c), thread_limit_s) == 0,                            \
          "worker threads still running after %.0f s (hung in the plugin?)", \
          thread_limit_s)

static const char *code_name(int32_t code)
{
    return vt->error_name(code);
}

/* xorshift64*, one state per thread: loaders run on the calling thread, so
 * a thread's draws (and its loaders' failures) repeat from run to run. */
static _Thread_local uint64_t random_state = 1;

static void random_seed(uint64_t seed)
{
    /* splitmix64 spreads small seeds over the state. */
    uint64_t z = seed + UINT64_C(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    z ^= z >> 31;
    random_state = z != 0 ? z : 1;
}

static uint64_t random_next(void)
{
    uint64_t x = random_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    random_state = x;
    return x * UINT64_C(0x2545f4914f6cdd1d);
}

/* ------------------------------------------------------------------------ */
/* The plugin's log                                                         */
/* ------------------------------------------------------------------------ */

/* Log lines the plugin sends to the host, counted: no scenario may end with
 * a handle held at destroy, nor log an error. */
static struct {
    pthread_mutex_t mutex;
    long warnings;
    long errors;
    long held_at_destroy; /* "still held" lines from context_destroy */
    char last_error[512];
} host_log = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static void capture_log(void *user, int32_t level, const char *message)
{
    (void)user;
    pthread_mutex_lock(&host_log.mutex);
    if (level == RM_LOG_WARN)
        host_log.warnings++;
    if (level == RM_LOG_ERROR) {
        host_log.errors++;
        snprintf(host_log.last_error, sizeof host_log.last_error, "%s", message);
    }
    if (strstr(message, "still held") != NULL)
        host_log.held_at_destroy++;
    pthread_mutex_unlock(&host_log.mutex);
    if (verbose)
        fprintf(stderr, "plugin log %d: %s\n", (int)level, message);
}

typedef struct log_counts {
    long warnings;
    long errors;
    long held_at_destroy;
} log_counts;

static log_counts log_snapshot(void)
{
    pthread_mutex_lock(&host_log.mutex);
    log_counts counts = {host_log.warnings, host_log.errors, host_log.held_at_destroy};
    pthread_mutex_unlock(&host_log.mutex);
    return counts;
}

static void log_last_error(char *out, size_t out_size)
{
    pthread_mutex_lock(&host_log.mutex);
    snprintf(out, out_size, "%s", host_log.last_error);
    pthread_mutex_unlock(&host_log.mutex);
}

static const rm_host_services host_services = {
    .struct_size = sizeof(rm_host_services),
    .abi_version = RM_ABI_VERSION_CURRENT,
    .log = capture_log,
};

/* ------------------------------------------------------------------------ */
/* Counters and gates with bounded waits                                    */
/* ------------------------------------------------------------------------ */

/* A value that only grows, and waits (bounded) for it to reach a target. A
 * gate is a counter waited on for 1. */
typedef struct counter {
    pthread_mutex_t mutex;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    long value;
} counter;

static void counter_init(counter *c)
{
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mutex, NULL);
    pthread_cond_init(&c->cond, &attributes);
    pthread_condattr_destroy(&attributes);
    c->value = 0;
}

static void counter_destroy(counter *c)
{
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mutex);
}

static void counter_add(counter *c, long delta)
{
    pthread_mutex_lock(&c->mutex);
    c->value += delta;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
}

/* True when the value reached `target` within `seconds`. */
static bool counter_wait(counter *c, long target, double seconds)
{
    struct timespec until = monotonic_in(seconds);
    pthread_mutex_lock(&c->mutex);
    while (c->value < target) {
        if (pthread_cond_timedwait(&c->cond, &c->mutex, &until) == ETIMEDOUT)
            break;
    }
    bool reached = c->value >= target;
    pthread_mutex_unlock(&c->mutex);
    return reached;
}

static void gate_open(counter *gate)
{
    counter_add(gate, 1);
}

static bool gate_wait(counter *gate, double seconds)
{
    return counter_wait(gate, 1, seconds);
}

/* ------------------------------------------------------------------------ */
/* Crews of worker threads, waited for with a bound                         */
/* ------------------------------------------------------------------------ */

enum { CREW_MAX = 24 };

typedef struct crew crew;

typedef struct crew_member {
    crew *crew;
    void *(*body)(void *);
    void *argument;
} crew_member;

struct crew {
    int started;
    pthread_t threads[CREW_MAX];
    crew_member members[CREW_MAX];
    counter finished;
};

static void *crew_main(void *argument)
{
    crew_member *member = argument;
    member->body(member->argument);
    counter_add(&member->crew->finished, 1);
    return NULL;
}

static void crew_init(crew *c)
{
    c->started = 0;
    counter_init(&c->finished);
}

static int crew_spawn(crew *c, void *(*body)(void *), void *argument, char *why,
                      size_t why_size)
{
    if (c->started == CREW_MAX)
        return failf(why, why_size, "more than %d threads asked for", CREW_MAX);
    crew_member *member = &c->members[c->started];
    *member = (crew_member){.crew = c, .body = body, .argument = argument};
    int failure = pthread_create(&c->threads[c->started], NULL, crew_main, member);
    if (failure != 0)
        return failf(why, why_size, "pthread_create: %s", strerror(failure));
    c->started++;
    return 0;
}

/* Joins every thread started if all end within `seconds`: 0. Otherwise
 * joins none and returns -1; the crew (and whatever its threads use) must
 * then be abandoned, never freed. */
static int crew_finish(crew *c, double seconds)
{
    if (!counter_wait(&c->finished, c->started, seconds))
        return -1;
    for (int i = 0; i < c->started; i++)
        pthread_join(c->threads[i], NULL);
    c->started = 0;
    return 0;
}

/* The common end of a scenario: opens `gates` so that blocked threads run
 * on, waits for the crew and destroys the context. Returns false, leaving
 * context and memory alone, when threads are still running. */
static bool wind_up(crew *c, counter *const *gates, size_t gate_count,
                    rm_context **context, char *why, size_t why_size)
{
    for (size_t i = 0; i < gate_count; i++)
        gate_open(gates[i]);
    if (crew_finish(c, thread_limit_s) != 0) {
        size_t used = strlen(why);
        snprintf(why + used, why_size - used,
                 "%sworker threads still running after a further %.0f s; scenario "
                 "abandoned (its context and memory are leaked)",
                 used == 0 ? "" : "; ", thread_limit_s);
        return false;
    }
    if (*context != NULL) {
        vt->context_destroy(*context);
        *context = NULL;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Plugin helpers                                                           */
/* ------------------------------------------------------------------------ */

static rm_context *make_context(const rm_config_entry *entries, size_t entry_count,
                                char *why, size_t why_size)
{
    rm_context *context = NULL;
    int32_t status = create_context_of(vt, entries, entry_count, &context);
    if (status != RM_OK) {
        failf(why, why_size, "context_create: %s: %s", code_name(status),
              vt->context_last_error(NULL));
        return NULL;
    }
    return context;
}

static int32_t metrics_of(rm_context *context, rm_registry_metrics *out)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    int32_t status = vt->registry_metrics(context, &metrics);
    *out = metrics;
    return status;
}

/* Lists up to `capacity` rows; *count gets the number of loaded models. */
static int32_t list_rows(rm_context *context, rm_model_info *rows, uint32_t capacity,
                         uint32_t *count)
{
    if (rows != NULL) /* NULL with capacity 0 asks for the count alone */
        memset(rows, 0, sizeof *rows * capacity);
    *count = UINT32_MAX;
    return vt->registry_list(context, rows, (uint32_t)sizeof *rows, capacity, count);
}

/* ------------------------------------------------------------------------ */
/* Loaders with gates: single flight, failures, concurrent keys             */
/* ------------------------------------------------------------------------ */

/* One key's loader: it opens `started`, sleeps `delay_ms`, waits for
 * `proceed` (if set, bounded) and returns `result`; on success the model is
 * &model. */
typedef struct gated_spec {
    int32_t result;
    unsigned delay_ms;
    counter started;
    counter *proceed;
    atomic_int calls;
    atomic_int destroys;
    atomic_int bad_destroys;    /* destroy got another pointer */
    atomic_bool proceed_timed_out;
    atomic_bool bad_out_struct; /* `out` was not fresh and zeroed */
    char seen_key[RM_MODEL_KEY_MAX];
    int model;
} gated_spec;

static void gated_spec_init(gated_spec *spec, int32_t result, unsigned delay_ms,
                            counter *proceed)
{
    spec->result = result;
    spec->delay_ms = delay_ms;
    counter_init(&spec->started);
    spec->proceed = proceed;
    atomic_init(&spec->calls, 0);
    atomic_init(&spec->destroys, 0);
    atomic_init(&spec->bad_destroys, 0);
    atomic_init(&spec->proceed_timed_out, false);
    atomic_init(&spec->bad_out_struct, false);
    spec->seen_key[0] = '\0';
}

static void gated_destroy(void *model, void *user)
{
    gated_spec *spec = user;
    if (model == &spec->model)
        atomic_fetch_add_explicit(&spec->destroys, 1, RELAXED);
    else
        atomic_fetch_add_explicit(&spec->bad_destroys, 1, RELAXED);
}

static bool fresh_out_struct(const rm_loaded_model *out)
{
    return out->struct_size == sizeof *out && out->abi_version == RM_ABI_VERSION_CURRENT &&
           out->model == NULL && out->bytes == 0 && out->destroy == NULL &&
           out->destroy_user == NULL;
}

static int32_t gated_loader(void *user, const char *key, rm_loaded_model *out)
{
    gated_spec *spec = user;
    atomic_fetch_add_explicit(&spec->calls, 1, RELAXED);
    snprintf(spec->seen_key, sizeof spec->seen_key, "%s", key);
    if (!fresh_out_struct(out))
        atomic_store_explicit(&spec->bad_out_struct, true, RELAXED);
    gate_open(&spec->started);
    if (spec->delay_ms != 0)
        sleep_ms(spec->delay_ms);
    if (spec->proceed != NULL && !gate_wait(spec->proceed, GATE_S))
        atomic_store_explicit(&spec->proceed_timed_out, true, RELAXED);
    if (spec->result != RM_OK)
        return spec->result;
    out->model = &spec->model;
    out->bytes = 64;
    out->destroy = gated_destroy;
    out->destroy_user = spec;
    return RM_OK;
}

/* Checks that nothing went wrong inside the loader or its callbacks. */
static int gated_spec_check(gated_spec *spec, const char *name, char *why, size_t why_size)
{
    if (atomic_load(&spec->proceed_timed_out))
        return failf(why, why_size, "loader %s waited %.0f s for its gate", name, GATE_S);
    if (atomic_load(&spec->bad_out_struct))
        return failf(why, why_size, "loader %s was handed an rm_loaded_model that was "
                     "not fresh (struct_size/abi_version/zeroed fields)", name);
    if (atomic_load(&spec->bad_destroys) != 0)
        return failf(why, why_size, "destroy callback of %s got a foreign model pointer",
                     name);
    return 0;
}

enum { FLIGHT_THREADS = 8 };

typedef struct flight_state flight_state;

typedef struct flight_caller {
    flight_state *state;
    int32_t status;
    rm_model_handle *handle;
    void *model;
    int32_t release_status;
    bool go_timed_out;
    bool release_timed_out;
} flight_caller;

/* FLIGHT_THREADS callers released together on one key. */
struct flight_state {
    rm_context *context;
    const char *key;
    gated_spec spec;
    counter arrived;    /* callers at the start line */
    counter go;         /* opens the start line */
    counter proceed;    /* lets the loader finish */
    counter got;        /* callers back from model_get_or_load */
    counter release_go; /* lets callers release their handles */
    flight_caller callers[FLIGHT_THREADS];
    crew crew;
};

static void *flight_call(void *argument)
{
    flight_caller *caller = argument;
    flight_state *state = caller->state;
    counter_add(&state->arrived, 1);
    if (!gate_wait(&state->go, GATE_S))
        caller->go_timed_out = true;
    caller->status = vt->model_get_or_load(state->context, state->key, gated_loader,
                                           &state->spec, &caller->handle, &caller->model);
    counter_add(&state->got, 1);
    if (caller->handle != NULL) {
        if (!gate_wait(&state->release_go, GATE_S))
            caller->release_timed_out = true;
        caller->release_status = vt->model_release(state->context, caller->handle);
    }
    return NULL;
}

static flight_state *flight_state_new(const char *key, int32_t result)
{
    flight_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return NULL;
    state->key = key;
    counter_init(&state->arrived);
    counter_init(&state->go);
    counter_init(&state->proceed);
    counter_init(&state->got);
    counter_init(&state->release_go);
    gated_spec_init(&state->spec, result, 50, &state->proceed);
    crew_init(&state->crew);
    return state;
}

static void flight_state_free(flight_state *state)
{
    counter_destroy(&state->arrived);
    counter_destroy(&state->go);
    counter_destroy(&state->proceed);
    counter_destroy(&state->got);
    counter_destroy(&state->release_go);
    counter_destroy(&state->spec.started);
    counter_destroy(&state->crew.finished);
    free(state);
}

/* Starts the callers, opens the start line once all are there, and waits
 * until the loader runs and every caller has been counted as a miss (the
 * registry counts a miss under its lock just before the caller runs the
 * loader or blocks, so then all are committed to this one load). Then lets
 * the loader finish and waits for every caller to come back. */
static int flight_run(flight_state *state, char *why, size_t why_size)
{
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        state->callers[i] = (flight_caller){.state = state};
        if (crew_spawn(&state->crew, flight_call, &state->callers[i], why, why_size) != 0)
            return -1;
    }
    if (!counter_wait(&state->arrived, FLIGHT_THREADS, GATE_S))
        return failf(why, why_size, "callers never reached the start line");
    gate_open(&state->go);
    if (!gate_wait(&state->spec.started, GATE_S))
        return failf(why, why_size, "the loader never started");
    rm_registry_metrics metrics;
    uint64_t deadline = now_ns() + (uint64_t)(GATE_S * 1e9);
    for (;;) {
        int32_t status = metrics_of(state->context, &metrics);
        if (status != RM_OK)
            return failf(why, why_size, "registry_metrics: %s", code_name(status));
        if (metrics.misses >= FLIGHT_THREADS || now_ns() > deadline)
            break;
        sleep_ms(1);
    }
    if (metrics.misses != FLIGHT_THREADS || metrics.hits != 0)
        return failf(why, why_size,
                     "while the loader was held: %llu misses and %llu hits, expected %d "
                     "misses (every caller waiting on the one load)",
                     (unsigned long long)metrics.misses, (unsigned long long)metrics.hits,
                     FLIGHT_THREADS);
    if (metrics.loads + metrics.load_failures != 0)
        return failf(why, why_size, "a load ended before the loader was let go");
    if (atomic_load(&state->spec.calls) != 1)
        return failf(why, why_size, "%d loader calls with %d callers waiting",
                     atomic_load(&state->spec.calls), FLIGHT_THREADS);
    gate_open(&state->proceed);
    if (!counter_wait(&state->got, FLIGHT_THREADS, thread_limit_s))
        return failf(why, why_size, "callers never came back from model_get_or_load");
    for (int i = 0; i < FLIGHT_THREADS; i++)
        if (state->callers[i].go_timed_out)
            return failf(why, why_size, "caller %d timed out at the start line", i);
    return gated_spec_check(&state->spec, "m", why, why_size);
}

/* ------------------------------------------------------------------------ */
/* Scenario 1: single_flight                                                */
/* ------------------------------------------------------------------------ */

static int single_flight_round(int round, char *why, size_t why_size)
{
    static const rm_config_entry entries[] = {{"registry.ttl_s", "0"}};
    flight_state *state = flight_state_new("flight@CPU", RM_OK);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    state->context = make_context(entries, 1, why, why_size);
    CHECK(state->context != NULL, "no context");
    CHECK(flight_run(state, why, why_size) == 0, "single flight failed");

    for (int i = 0; i < FLIGHT_THREADS; i++) {
        flight_caller *caller = &state->callers[i];
        CHECK(caller->status == RM_OK, "caller %d: %s", i, code_name(caller->status));
        CHECK(caller->handle != NULL, "caller %d: RM_OK without a handle", i);
        CHECK(caller->model == &state->spec.model,
              "caller %d got model %p, the loader's is %p", i, caller->model,
              (void *)&state->spec.model);
    }
    CHECK(atomic_load(&state->spec.calls) == 1, "loader called %d times",
          atomic_load(&state->spec.calls));
    CHECK(strcmp(state->spec.seen_key, "flight@cpu") == 0,
          "loader got key '%s', expected the normalised 'flight@cpu'", state->spec.seen_key);

    rm_model_info rows[2];
    uint32_t count;
    int32_t status = list_rows(state->context, rows, 2, &count);
    CHECK(status == RM_OK && count == 1, "registry_list: %s, %u rows", code_name(status),
          count);
    CHECK(strcmp(rows[0].key, "flight@cpu") == 0, "listed key '%s'", rows[0].key);
    CHECK(rows[0].refcount == FLIGHT_THREADS, "refcount %llu with %d handles held",
          (unsigned long long)rows[0].refcount, FLIGHT_THREADS);
    rm_registry_metrics metrics;
    CHECK(metrics_of(state->context, &metrics) == RM_OK, "registry_metrics failed");
    CHECK(metrics.loads == 1 && metrics.load_failures == 0 && metrics.models == 1,
          "metrics: %llu loads, %llu failures, %llu models",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
          (unsigned long long)metrics.models);

    gate_open(&state->release_go);
    CHECK_FINISHED(&state->crew);
    for (int i = 0; i < FLIGHT_THREADS; i++) {
        CHECK(!state->callers[i].release_timed_out, "caller %d waited for release", i);
        CHECK(state->callers[i].release_status == RM_OK, "caller %d: release: %s", i,
              code_name(state->callers[i].release_status));
    }
    status = list_rows(state->context, rows, 2, &count);
    CHECK(status == RM_OK && count == 1 && rows[0].refcount == 0,
          "after %d releases: %s, %u rows, refcount %llu", FLIGHT_THREADS,
          code_name(status), count, (unsigned long long)rows[0].refcount);
    vt->context_destroy(state->context);
    state->context = NULL;
    CHECK(atomic_load(&state->spec.destroys) == 1, "model destroyed %d times",
          atomic_load(&state->spec.destroys));
    CHECK(gated_spec_check(&state->spec, "m", why, why_size) == 0, "loader problem");

out:;
    counter *const gates[] = {&state->go, &state->proceed, &state->release_go};
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, gates, 3, &state->context, why, why_size))
        return -1; /* abandoned: threads still use it */
    flight_state_free(state);
    return result;
}

static int scenario_single_flight(void)
{
    return stress_rounds(3, single_flight_round, reason, sizeof reason);
}

/* ------------------------------------------------------------------------ */
/* Scenario 2: failure_wakes_all                                            */
/* ------------------------------------------------------------------------ */

#define FLIGHT_FAILURE (-1234) /* not an rm_error: must arrive unchanged */

static int failure_round(int round, char *why, size_t why_size)
{
    static const rm_config_entry entries[] = {{"registry.ttl_s", "0"}};
    flight_state *state = flight_state_new("failing@cpu", FLIGHT_FAILURE);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    state->context = make_context(entries, 1, why, why_size);
    CHECK(state->context != NULL, "no context");
    CHECK(flight_run(state, why, why_size) == 0, "failing flight failed");
    CHECK_FINISHED(&state->crew);

    for (int i = 0; i < FLIGHT_THREADS; i++) {
        flight_caller *caller = &state->callers[i];
        CHECK(caller->status == FLIGHT_FAILURE, "caller %d got %d (%s), expected %d", i,
              caller->status, code_name(caller->status), FLIGHT_FAILURE);
        CHECK(caller->handle == NULL && caller->model == NULL,
              "caller %d: failure left a handle or model set", i);
    }
    CHECK(atomic_load(&state->spec.calls) == 1, "loader called %d times",
          atomic_load(&state->spec.calls));
    rm_registry_metrics metrics;
    CHECK(metrics_of(state->context, &metrics) == RM_OK, "registry_metrics failed");
    CHECK(metrics.load_failures == 1 && metrics.loads == 0 && metrics.models == 0,
          "metrics: %llu failures, %llu loads, %llu models",
          (unsigned long long)metrics.load_failures, (unsigned long long)metrics.loads,
          (unsigned long long)metrics.models);
    uint32_t count;
    int32_t status = list_rows(state->context, NULL, 0, &count);
    CHECK(status == RM_OK && count == 0, "registry_list after the failure: %s, %u rows",
          code_name(status), count);
    status = vt->model_evict(state->context, "failing@cpu");
    CHECK(status == RM_E_NOT_FOUND, "evict after the failure: %s, expected NOT_FOUND",
          code_name(status));

    /* The next get runs a loader again, and this one succeeds. No thread
     * but this one uses the spec any more. */
    state->spec.result = RM_OK;
    state->spec.proceed = NULL;
    state->spec.delay_ms = 0;
    rm_model_handle *handle = NULL;
    void *model = NULL;
    status = vt->model_get_or_load(state->context, "failing@cpu", gated_loader, &state->spec,
                                   &handle, &model);
    CHECK(status == RM_OK, "retry: %s: %s", code_name(status),
          vt->context_last_error(state->context));
    CHECK(model == &state->spec.model, "retry returned another model");
    CHECK(atomic_load(&state->spec.calls) == 2, "retry: %d loader calls in all, expected 2",
          atomic_load(&state->spec.calls));
    status = vt->model_release(state->context, handle);
    CHECK(status == RM_OK, "release: %s", code_name(status));
    vt->context_destroy(state->context);
    state->context = NULL;
    CHECK(atomic_load(&state->spec.destroys) == 1, "model destroyed %d times",
          atomic_load(&state->spec.destroys));
    CHECK(gated_spec_check(&state->spec, "failing", why, why_size) == 0, "loader problem");

out:;
    counter *const gates[] = {&state->go, &state->proceed, &state->release_go};
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, gates, 3, &state->context, why, why_size))
        return -1;
    flight_state_free(state);
    return result;
}

static int scenario_failure_wakes_all(void)
{
    return stress_rounds(3, failure_round, reason, sizeof reason);
}

/* ------------------------------------------------------------------------ */
/* Scenario 3: different_keys_concurrent                                    */
/* ------------------------------------------------------------------------ */

typedef struct pair_caller {
    rm_context *context;
    const char *key;
    gated_spec *spec;
    int32_t status;
    void *model;
    int32_t release_status;
} pair_caller;

static void *pair_call(void *argument)
{
    pair_caller *caller = argument;
    rm_model_handle *handle = NULL;
    caller->status = vt->model_get_or_load(caller->context, caller->key, gated_loader,
                                           caller->spec, &handle, &caller->model);
    if (handle != NULL)
        caller->release_status = vt->model_release(caller->context, handle);
    return NULL;
}

typedef struct pair_state {
    rm_context *context;
    gated_spec a;
    gated_spec b;
    pair_caller callers[2];
    crew crew;
} pair_state;

static int different_keys_round(int round, char *why, size_t why_size)
{
    static const rm_config_entry entries[] = {{"registry.ttl_s", "0"}};
    pair_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    /* Each loader waits for the other to have started: were loads of
     * different keys serialised, the first would wait in vain. */
    gated_spec_init(&state->a, RM_OK, 0, &state->b.started);
    gated_spec_init(&state->b, RM_OK, 0, &state->a.started);
    crew_init(&state->crew);
    state->context = make_context(entries, 1, why, why_size);
    CHECK(state->context != NULL, "no context");
    state->callers[0] = (pair_caller){.context = state->context, .key = "a@cpu", .spec = &state->a};
    state->callers[1] = (pair_caller){.context = state->context, .key = "b@cpu", .spec = &state->b};
    for (int i = 0; i < 2; i++)
        CHECK(crew_spawn(&state->crew, pair_call, &state->callers[i], why, why_size) == 0,
              "spawn");
    CHECK_FINISHED(&state->crew);
    CHECK(!atomic_load(&state->a.proceed_timed_out),
          "a's loader never saw b's start: loads of different keys are serialised");
    CHECK(!atomic_load(&state->b.proceed_timed_out),
          "b's loader never saw a's start: loads of different keys are serialised");
    for (int i = 0; i < 2; i++) {
        pair_caller *caller = &state->callers[i];
        CHECK(caller->status == RM_OK, "%s: %s", caller->key, code_name(caller->status));
        CHECK(caller->model == &caller->spec->model, "%s: wrong model", caller->key);
        CHECK(caller->release_status == RM_OK, "%s: release: %s", caller->key,
              code_name(caller->release_status));
        CHECK(atomic_load(&caller->spec->calls) == 1, "%s: %d loader calls", caller->key,
              atomic_load(&caller->spec->calls));
    }
    rm_registry_metrics metrics;
    CHECK(metrics_of(state->context, &metrics) == RM_OK, "registry_metrics failed");
    CHECK(metrics.loads == 2 && metrics.models == 2, "metrics: %llu loads, %llu models",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.models);
    vt->context_destroy(state->context);
    state->context = NULL;
    CHECK(atomic_load(&state->a.destroys) == 1 && atomic_load(&state->b.destroys) == 1,
          "destroys: a %d, b %d", atomic_load(&state->a.destroys),
          atomic_load(&state->b.destroys));
    CHECK(gated_spec_check(&state->a, "a", why, why_size) == 0, "loader problem");
    CHECK(gated_spec_check(&state->b, "b", why, why_size) == 0, "loader problem");

out:;
    counter *const gates[] = {&state->a.started, &state->b.started};
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, gates, 2, &state->context, why, why_size))
        return -1;
    counter_destroy(&state->a.started);
    counter_destroy(&state->b.started);
    counter_destroy(&state->crew.finished);
    free(state);
    return result;
}

static int scenario_different_keys_concurrent(void)
{
    return stress_rounds(3, different_keys_round, reason, sizeof reason);
}

/* ------------------------------------------------------------------------ */
/* Scenario 4: cross_thread_cycle                                           */
/* ------------------------------------------------------------------------ */

/* A loader that asks for another key once the other key's loader runs. */
typedef struct cycle_spec cycle_spec;
struct cycle_spec {
    rm_context *context;
    const char *key;
    const char *inner_key;
    cycle_spec *inner;  /* the spec of inner_key */
    counter started;    /* opened when this loader starts */
    bool swallow;       /* succeed even when the inner request fails */
    atomic_int calls;
    atomic_int destroys;
    atomic_bool wait_timed_out;
    atomic_bool inner_wrong_model;
    int32_t inner_status;
    int32_t inner_release_status;
    int model;
};

static void cycle_destroy(void *model, void *user)
{
    cycle_spec *spec = user;
    atomic_fetch_add_explicit(&spec->destroys, model == &spec->model ? 1 : 1000, RELAXED);
}

static int32_t cycle_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    cycle_spec *spec = user;
    atomic_fetch_add_explicit(&spec->calls, 1, RELAXED);
    gate_open(&spec->started);
    /* Both loaders are running before either asks for the other's key. */
    if (!gate_wait(&spec->inner->started, GATE_S))
        atomic_store(&spec->wait_timed_out, true);
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t status = vt->model_get_or_load(spec->context, spec->inner_key, cycle_loader,
                                           spec->inner, &handle, &model);
    spec->inner_status = status;
    if (status == RM_OK) {
        if (model != &spec->inner->model)
            atomic_store(&spec->inner_wrong_model, true);
        spec->inner_release_status = vt->model_release(spec->context, handle);
    } else if (!spec->swallow) {
        return status;
    }
    out->model = &spec->model;
    out->bytes = 1;
    out->destroy = cycle_destroy;
    out->destroy_user = spec;
    return RM_OK;
}

typedef struct cycle_caller {
    cycle_spec *spec;
    int32_t status;
    int32_t release_status;
    bool wrong_model;
} cycle_caller;

static void *cycle_call(void *argument)
{
    cycle_caller *caller = argument;
    cycle_spec *spec = caller->spec;
    rm_model_handle *handle = NULL;
    void *model = NULL;
    caller->status = vt->model_get_or_load(spec->context, spec->key, cycle_loader, spec,
                                           &handle, &model);
    if (handle != NULL) {
        caller->wrong_model = model != &spec->model;
        caller->release_status = vt->model_release(spec->context, handle);
    }
    return NULL;
}

typedef struct cycle_state {
    rm_context *context;
    cycle_spec a;
    cycle_spec b;
    cycle_caller callers[2];
    crew crew;
} cycle_state;

static void cycle_spec_init(cycle_spec *spec, rm_context *context, const char *key,
                            cycle_spec *inner, bool swallow)
{
    spec->context = context;
    spec->key = key;
    spec->inner = inner;
    spec->inner_key = inner->key;
    spec->swallow = swallow;
    atomic_init(&spec->calls, 0);
    atomic_init(&spec->destroys, 0);
    atomic_init(&spec->wait_timed_out, false);
    atomic_init(&spec->inner_wrong_model, false);
    spec->inner_status = 1; /* not yet asked */
    spec->inner_release_status = RM_OK;
}

/* Thread 1 loads a@cpu, whose loader asks for b@cpu; thread 2 loads b@cpu,
 * whose loader asks for a@cpu; both loaders run before either asks. The
 * registry serialises the two inner requests: the first blocks on the
 * other key, the second would close the wait-for cycle and gets
 * RM_E_LOAD_CYCLE. Then:
 *  - loaders that pass the failure up (swallow false): the detecting loader
 *    fails with LOAD_CYCLE, which reaches the blocked inner request
 *    unchanged, whose loader fails too: every call ends in LOAD_CYCLE;
 *  - loaders that swallow it: the detecting loader succeeds, the blocked
 *    inner request gets its model, and both outer calls succeed.
 * Odd rounds swallow. */
static int cycle_round(int round, char *why, size_t why_size)
{
    bool swallow = round % 2 == 1;
    static const rm_config_entry entries[] = {{"registry.ttl_s", "0"}};
    cycle_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    counter_init(&state->a.started);
    counter_init(&state->b.started);
    crew_init(&state->crew);
    state->context = make_context(entries, 1, why, why_size);
    CHECK(state->context != NULL, "no context");
    state->a.key = "a@cpu";
    state->b.key = "b@cpu";
    cycle_spec_init(&state->a, state->context, "a@cpu", &state->b, swallow);
    cycle_spec_init(&state->b, state->context, "b@cpu", &state->a, swallow);
    state->callers[0] = (cycle_caller){.spec = &state->a};
    state->callers[1] = (cycle_caller){.spec = &state->b};
    for (int i = 0; i < 2; i++)
        CHECK(crew_spawn(&state->crew, cycle_call, &state->callers[i], why, why_size) == 0,
              "spawn");
    CHECK(crew_finish(&state->crew, thread_limit_s) == 0,
          "a cycle across two threads hung (%s loaders): threads still running after %.0f s",
          swallow ? "swallowing" : "failing", thread_limit_s);
    const char *mode = swallow ? "swallowing" : "failing";
    cycle_spec *specs[2] = {&state->a, &state->b};
    int cycles_found = 0;
    for (int i = 0; i < 2; i++) {
        cycle_spec *spec = specs[i];
        CHECK(!atomic_load(&spec->wait_timed_out), "%s: %s's loader never saw the other start",
              mode, spec->key);
        CHECK(atomic_load(&spec->calls) == 1, "%s: %s's loader ran %d times", mode, spec->key,
              atomic_load(&spec->calls));
        CHECK(spec->inner_status == RM_OK || spec->inner_status == RM_E_LOAD_CYCLE,
              "%s: %s's request for %s: %d (%s)", mode, spec->key, spec->inner_key,
              spec->inner_status, code_name(spec->inner_status));
        CHECK(!atomic_load(&spec->inner_wrong_model), "%s: %s's inner request got a wrong model",
              mode, spec->key);
        CHECK(spec->inner_release_status == RM_OK, "%s: inner release: %s", mode,
              code_name(spec->inner_release_status));
        cycles_found += spec->inner_status == RM_E_LOAD_CYCLE;
        cycle_caller *caller = &state->callers[i];
        CHECK(caller->status == RM_OK || caller->status == RM_E_LOAD_CYCLE,
              "%s: outer %s: %d (%s)", mode, spec->key, caller->status,
              code_name(caller->status));
        CHECK(!caller->wrong_model && caller->release_status == RM_OK,
              "%s: outer %s: wrong model or release %s", mode, spec->key,
              code_name(caller->release_status));
    }
    CHECK(cycles_found >= 1, "%s: no nested request returned LOAD_CYCLE (inner a: %s, b: %s)",
          mode, code_name(state->a.inner_status), code_name(state->b.inner_status));
    rm_registry_metrics metrics;
    CHECK(metrics_of(state->context, &metrics) == RM_OK, "registry_metrics failed");
    if (swallow) {
        /* Exactly one request found the cycle; the blocked one got the
         * model of the loader that swallowed it. */
        CHECK(cycles_found == 1, "swallowing: %d requests found the cycle, expected 1",
              cycles_found);
        CHECK(state->callers[0].status == RM_OK && state->callers[1].status == RM_OK,
              "swallowing: outer calls %s / %s, expected both OK",
              code_name(state->callers[0].status), code_name(state->callers[1].status));
        CHECK(metrics.loads == 2 && metrics.load_failures == 0 && metrics.models == 2,
              "swallowing: %llu loads, %llu failures, %llu models",
              (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
              (unsigned long long)metrics.models);
    } else {
        /* The failure travels unchanged to the blocked request and up. */
        CHECK(cycles_found == 2, "failing: inner results %s / %s, expected LOAD_CYCLE twice "
              "(one found, one handed over)", code_name(state->a.inner_status),
              code_name(state->b.inner_status));
        CHECK(state->callers[0].status == RM_E_LOAD_CYCLE &&
                  state->callers[1].status == RM_E_LOAD_CYCLE,
              "failing: outer calls %s / %s, expected LOAD_CYCLE for both",
              code_name(state->callers[0].status), code_name(state->callers[1].status));
        CHECK(metrics.loads == 0 && metrics.load_failures == 2 && metrics.models == 0,
              "failing: %llu loads, %llu failures, %llu models",
              (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
              (unsigned long long)metrics.models);
        uint32_t count;
        int32_t status = list_rows(state->context, NULL, 0, &count);
        CHECK(status == RM_OK && count == 0, "failing: %u entries left", count);
    }
    vt->context_destroy(state->context);
    state->context = NULL;
    int expected = swallow ? 1 : 0;
    CHECK(atomic_load(&state->a.destroys) == expected &&
              atomic_load(&state->b.destroys) == expected,
          "%s: destroys a %d, b %d, expected %d each", mode, atomic_load(&state->a.destroys),
          atomic_load(&state->b.destroys), expected);

out:;
    counter *const gates[] = {&state->a.started, &state->b.started};
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, gates, 2, &state->context, why, why_size))
        return -1;
    counter_destroy(&state->a.started);
    counter_destroy(&state->b.started);
    counter_destroy(&state->crew.finished);
    free(state);
    return result;
}

static int scenario_cross_thread_cycle(void)
{
    return stress_rounds(20, cycle_round, reason, sizeof reason);
}

/* ------------------------------------------------------------------------ */
/* Model pools: keys, loaders that may fail, models that check their use   */
/* ------------------------------------------------------------------------ */

enum { POOL_MAX_KEYS = 16, POOL_MAX_SPELLINGS = 3, MODEL_MAGIC = 0x6d6f646c };

typedef struct pool pool;

typedef struct key_stats {
    pool *pool;
    int key_index;
    int spelling_count;
    char spellings[POOL_MAX_SPELLINGS][64]; /* what callers pass */
    char normal[64];  /* what the loader must get and registry_list show */
    uint64_t bytes;
    int32_t failure_code; /* what its loader returns on most failures */
    atomic_int calls;
    atomic_int successes;
    atomic_int failures;
    atomic_int destroys;
    atomic_ullong last_destroy_ns;
} key_stats;

/* One loaded model. Freed only after its context is destroyed, so that a
 * second destroy or a use after destroy is seen rather than crashing. */
typedef struct model {
    uint32_t magic;
    key_stats *stats;
    char key[RM_MODEL_KEY_MAX]; /* the key its loader was given */
    atomic_int held;            /* handles the driver holds on it */
    atomic_int destroys;
    struct model *next;
} model;

struct pool {
    rm_context *context;
    key_stats keys[POOL_MAX_KEYS];
    int key_count;
    unsigned fail_per_mille;
    _Atomic(model *) models;
    atomic_int wrong_key;            /* a loader or caller saw another key */
    atomic_int destroyed_in_use;     /* a get returned a destroyed model */
    atomic_int destroyed_while_held; /* destroy ran while a handle was held */
    atomic_int bad_destroy;          /* foreign pointer, or a second destroy */
    atomic_int bad_out_struct;
    atomic_int bad_outputs;          /* handle/model set on error, or NULL on OK */
    atomic_int unexpected_status;
    _Atomic(int32_t) first_unexpected;
    atomic_llong lookups;
};

static void pool_init(pool *p, unsigned fail_per_mille)
{
    memset(p, 0, sizeof *p);
    p->fail_per_mille = fail_per_mille;
    atomic_init(&p->models, NULL);
    atomic_init(&p->wrong_key, 0);
    atomic_init(&p->destroyed_in_use, 0);
    atomic_init(&p->destroyed_while_held, 0);
    atomic_init(&p->bad_destroy, 0);
    atomic_init(&p->bad_out_struct, 0);
    atomic_init(&p->bad_outputs, 0);
    atomic_init(&p->unexpected_status, 0);
    atomic_init(&p->first_unexpected, 0);
    atomic_init(&p->lookups, 0);
}

/* Adds a key: `normal` and up to POOL_MAX_SPELLINGS spellings of it, each
 * checked against the plugin's own normalisation. */
static int pool_add_key(pool *p, const char *normal, uint64_t bytes,
                        const char *const *spellings, int spelling_count, char *why,
                        size_t why_size)
{
    if (p->key_count == POOL_MAX_KEYS || spelling_count < 1 ||
        spelling_count > POOL_MAX_SPELLINGS)
        return failf(why, why_size, "pool_add_key: bad arguments");
    key_stats *k = &p->keys[p->key_count];
    k->pool = p;
    k->key_index = p->key_count;
    k->bytes = bytes;
    k->failure_code = -100 - p->key_count;
    snprintf(k->normal, sizeof k->normal, "%s", normal);
    k->spelling_count = spelling_count;
    for (int i = 0; i < spelling_count; i++) {
        snprintf(k->spellings[i], sizeof k->spellings[i], "%s", spellings[i]);
        char normalised[RM_MODEL_KEY_MAX];
        int32_t status = vt->model_key_normalize(spellings[i], normalised, sizeof normalised);
        if (status != RM_OK || strcmp(normalised, normal) != 0)
            return failf(why, why_size, "model_key_normalize('%s'): %s '%s', expected '%s'",
                         spellings[i], code_name(status), status == RM_OK ? normalised : "",
                         normal);
    }
    atomic_init(&k->calls, 0);
    atomic_init(&k->successes, 0);
    atomic_init(&k->failures, 0);
    atomic_init(&k->destroys, 0);
    atomic_init(&k->last_destroy_ns, 0);
    p->key_count++;
    return 0;
}

static void pool_note_status(pool *p, int32_t status)
{
    atomic_fetch_add_explicit(&p->unexpected_status, 1, RELAXED);
    int32_t none = 0;
    atomic_compare_exchange_strong_explicit(&p->first_unexpected, &none, status, RELAXED,
                                            RELAXED);
}

static void pool_destroy_model(void *pointer, void *user)
{
    key_stats *k = user;
    pool *p = k->pool;
    model *m = pointer;
    if (m == NULL || m->magic != MODEL_MAGIC || m->stats != k) {
        atomic_fetch_add_explicit(&p->bad_destroy, 1, RELAXED);
        return;
    }
    if (atomic_fetch_add_explicit(&m->destroys, 1, RELAXED) != 0)
        atomic_fetch_add_explicit(&p->bad_destroy, 1, RELAXED);
    /* Callers decrement `held` before they release, and the registry only
     * destroys a model after the last release: it must read 0 here. */
    if (atomic_load_explicit(&m->held, RELAXED) != 0)
        atomic_fetch_add_explicit(&p->destroyed_while_held, 1, RELAXED);
    atomic_fetch_add_explicit(&k->destroys, 1, RELAXED);
    atomic_store_explicit(&k->last_destroy_ns, now_ns(), RELAXED);
}

/* The loader: fails at random (fail_per_mille, drawn from the calling
 * thread's generator), otherwise allocates a model that records its key. */
static int32_t pool_loader(void *user, const char *key, rm_loaded_model *out)
{
    key_stats *k = user;
    pool *p = k->pool;
    atomic_fetch_add_explicit(&k->calls, 1, RELAXED);
    if (strcmp(key, k->normal) != 0)
        atomic_fetch_add_explicit(&p->wrong_key, 1, RELAXED);
    if (!fresh_out_struct(out))
        atomic_fetch_add_explicit(&p->bad_out_struct, 1, RELAXED);
    uint64_t draw = random_next();
    if (draw % 8 == 0)
        sched_yield(); /* widen the window for waiters to pile up */
    if (p->fail_per_mille != 0 && (draw >> 8) % 1000 < p->fail_per_mille) {
        atomic_fetch_add_explicit(&k->failures, 1, RELAXED);
        /* Mostly the key's own code; sometimes a positive value, which must
         * arrive as RM_E_LOADER_FAILED. */
        return (draw >> 20) % 4 == 0 ? 3 : k->failure_code;
    }
    model *m = calloc(1, sizeof *m);
    if (m == NULL) {
        atomic_fetch_add_explicit(&k->failures, 1, RELAXED);
        return RM_E_NO_MEMORY;
    }
    m->magic = MODEL_MAGIC;
    m->stats = k;
    snprintf(m->key, sizeof m->key, "%s", key);
    atomic_init(&m->held, 0);
    atomic_init(&m->destroys, 0);
    /* Relaxed on purpose: the driver adds no ordering of its own between
     * threads that could hide a missing one in the plugin from TSan. The
     * list is walked after the threads are joined. */
    m->next = atomic_load_explicit(&p->models, RELAXED);
    while (!atomic_compare_exchange_weak_explicit(&p->models, &m->next, m, RELAXED, RELAXED)) {
    }
    atomic_fetch_add_explicit(&k->successes, 1, RELAXED);
    out->model = m;
    out->bytes = k->bytes;
    out->destroy = pool_destroy_model;
    out->destroy_user = k;
    return RM_OK;
}

/* get_or_load through spelling `spelling` of key `key_index`. True with a
 * handle to release when it succeeded; failures must be the loader's. */
static bool pool_get(pool *p, int key_index, int spelling, rm_model_handle **handle,
                     model **out)
{
    key_stats *k = &p->keys[key_index];
    void *pointer = NULL;
    *handle = NULL;
    *out = NULL;
    atomic_fetch_add_explicit(&p->lookups, 1, RELAXED);
    int32_t status =
        vt->model_get_or_load(p->context, k->spellings[spelling % k->spelling_count],
                              pool_loader, k, handle, &pointer);
    if (status != RM_OK) {
        if (status != k->failure_code && status != RM_E_LOADER_FAILED &&
            status != RM_E_NO_MEMORY)
            pool_note_status(p, status);
        if (*handle != NULL || pointer != NULL) {
            atomic_fetch_add_explicit(&p->bad_outputs, 1, RELAXED);
            *handle = NULL;
        }
        return false;
    }
    if (*handle == NULL || pointer == NULL) {
        atomic_fetch_add_explicit(&p->bad_outputs, 1, RELAXED);
        return *handle != NULL;
    }
    model *m = pointer;
    if (m->magic != MODEL_MAGIC || m->stats != k || strcmp(m->key, k->normal) != 0)
        atomic_fetch_add_explicit(&p->wrong_key, 1, RELAXED);
    atomic_fetch_add_explicit(&m->held, 1, RELAXED);
    if (atomic_load_explicit(&m->destroys, RELAXED) != 0)
        atomic_fetch_add_explicit(&p->destroyed_in_use, 1, RELAXED);
    *out = m;
    return true;
}

static void pool_release(pool *p, rm_model_handle *handle, model *m)
{
    if (m != NULL)
        atomic_fetch_sub_explicit(&m->held, 1, RELAXED);
    int32_t status = vt->model_release(p->context, handle);
    if (status != RM_OK)
        pool_note_status(p, status);
}

/* The invariants every pool scenario keeps while it runs. */
static int pool_check_running(pool *p, char *why, size_t why_size)
{
    if (atomic_load(&p->wrong_key) != 0)
        return failf(why, why_size, "%d times a loader or caller saw another key's model",
                     atomic_load(&p->wrong_key));
    if (atomic_load(&p->destroyed_in_use) != 0)
        return failf(why, why_size, "%d gets returned an already destroyed model",
                     atomic_load(&p->destroyed_in_use));
    if (atomic_load(&p->destroyed_while_held) != 0)
        return failf(why, why_size, "%d models destroyed while a handle was held",
                     atomic_load(&p->destroyed_while_held));
    if (atomic_load(&p->bad_destroy) != 0)
        return failf(why, why_size, "%d destroy callbacks with a foreign model or repeated",
                     atomic_load(&p->bad_destroy));
    if (atomic_load(&p->bad_out_struct) != 0)
        return failf(why, why_size, "%d loader calls got an rm_loaded_model that was not fresh",
                     atomic_load(&p->bad_out_struct));
    if (atomic_load(&p->bad_outputs) != 0)
        return failf(why, why_size, "%d gets left handle/model inconsistent with the status",
                     atomic_load(&p->bad_outputs));
    if (atomic_load(&p->unexpected_status) != 0) {
        int32_t first = atomic_load(&p->first_unexpected);
        return failf(why, why_size, "%d unexpected statuses, the first %d (%s)",
                     atomic_load(&p->unexpected_status), first, code_name(first));
    }
    return 0;
}

typedef struct pool_totals {
    uint64_t calls, successes, failures, destroys;
} pool_totals;

static pool_totals pool_sum(pool *p)
{
    pool_totals totals = {0, 0, 0, 0};
    for (int i = 0; i < p->key_count; i++) {
        totals.calls += (uint64_t)atomic_load(&p->keys[i].calls);
        totals.successes += (uint64_t)atomic_load(&p->keys[i].successes);
        totals.failures += (uint64_t)atomic_load(&p->keys[i].failures);
        totals.destroys += (uint64_t)atomic_load(&p->keys[i].destroys);
    }
    return totals;
}

/* Before destroy: no handle left, every row a known key in normal form. */
static int pool_check_idle(pool *p, char *why, size_t why_size)
{
    rm_model_info rows[POOL_MAX_KEYS + 1];
    uint32_t count;
    int32_t status = list_rows(p->context, rows, POOL_MAX_KEYS + 1, &count);
    if (status != RM_OK)
        return failf(why, why_size, "registry_list: %s", code_name(status));
    if (count > (uint32_t)p->key_count)
        return failf(why, why_size, "registry_list: %u rows for %d keys", count, p->key_count);
    for (uint32_t i = 0; i < count; i++) {
        if (rows[i].refcount != 0)
            return failf(why, why_size, "%s still has refcount %llu after every release",
                         rows[i].key, (unsigned long long)rows[i].refcount);
        bool known = false;
        for (int j = 0; j < p->key_count; j++)
            known |= strcmp(rows[i].key, p->keys[j].normal) == 0;
        if (!known)
            return failf(why, why_size, "listed key '%s' is none of ours in normal form",
                         rows[i].key);
    }
    return 0;
}

/* After context_destroy: every model loaded was destroyed exactly once, and
 * every loader call is accounted for. Frees the models. */
static int pool_check_destroyed(pool *p, char *why, size_t why_size)
{
    int result = pool_check_running(p, why, why_size);
    for (int i = 0; i < p->key_count && result == 0; i++) {
        key_stats *k = &p->keys[i];
        int calls = atomic_load(&k->calls);
        int successes = atomic_load(&k->successes);
        int failures = atomic_load(&k->failures);
        int destroys = atomic_load(&k->destroys);
        if (calls != successes + failures)
            result = failf(why, why_size, "%s: %d loader calls, %d successes + %d failures",
                           k->normal, calls, successes, failures);
        else if (destroys != successes)
            result = failf(why, why_size, "%s: %d models loaded, %d destroyed", k->normal,
                           successes, destroys);
    }
    uint64_t models = 0;
    model *m = atomic_load(&p->models);
    while (m != NULL) {
        model *next = m->next;
        int destroys = atomic_load(&m->destroys);
        if (destroys != 1 && result == 0)
            result = failf(why, why_size, "a model of %s was destroyed %d times", m->key,
                           destroys);
        models++;
        free(m);
        m = next;
    }
    atomic_store(&p->models, NULL);
    pool_totals totals = pool_sum(p);
    if (result == 0 && models != totals.successes)
        result = failf(why, why_size, "%llu models allocated, %llu successful loads",
                       (unsigned long long)models, (unsigned long long)totals.successes);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Scenario 5: random_failures                                              */
/* ------------------------------------------------------------------------ */

enum { RANDOM_THREADS = 16, RANDOM_KEYS = 8 };

typedef struct random_worker {
    pool *pool;
    int worker;
    int rounds;
} random_worker;

static void *random_thread(void *argument)
{
    random_worker *w = argument;
    pool *p = w->pool;
    random_seed(UINT64_C(0x5eed0000) + (uint64_t)w->worker);
    for (int iteration = 0; iteration < w->rounds; iteration++) {
        uint64_t draw = random_next();
        rm_model_handle *first = NULL;
        rm_model_handle *second = NULL;
        model *first_model = NULL;
        model *second_model = NULL;
        bool have_first = pool_get(p, (int)(draw % RANDOM_KEYS), (int)((draw >> 4) % 3),
                                   &first, &first_model);
        bool have_second = false;
        /* Sometimes hold two models at once. */
        if ((draw >> 8) % 4 == 0)
            have_second = pool_get(p, (int)((draw >> 12) % RANDOM_KEYS),
                                   (int)((draw >> 16) % 3), &second, &second_model);
        /* One thread evicts every idle model now and then. */
        if (w->worker == 0 && (draw >> 20) % 16 == 0) {
            int32_t status = vt->model_evict(p->context, NULL);
            if (status != RM_OK)
                pool_note_status(p, status);
        }
        if ((draw >> 24) % 32 == 0) {
            key_stats *k = &p->keys[(draw >> 28) % RANDOM_KEYS];
            int32_t status = vt->model_evict(p->context, k->spellings[(draw >> 32) % 3]);
            if (status != RM_OK && status != RM_E_BUSY && status != RM_E_NOT_FOUND)
                pool_note_status(p, status);
        }
        if (have_second)
            pool_release(p, second, second_model);
        if (have_first)
            pool_release(p, first, first_model);
    }
    return NULL;
}

typedef struct random_state {
    pool pool;
    random_worker workers[RANDOM_THREADS];
    crew crew;
} random_failures_state;

static int scenario_random_failures(void)
{
    char *why = reason;
    size_t why_size = sizeof reason;
    /* A count budget below the key count and a very short TTL keep all
     * three eviction paths busy while the threads run: with 16 threads on 8
     * keys a model is rarely idle for long, and 2 ms (the unit test's TTL)
     * lets the eviction thread in only after the threads have ended. */
    static const rm_config_entry entries[] = {
        {"registry.ttl_s", "0.0002"},
        {"registry.max_models", "4"},
    };
    random_failures_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    pool *p = &state->pool;
    pool_init(p, 200);
    crew_init(&state->crew);
    log_counts logs_before = log_snapshot();
    int rounds = stress_scaled(1000);
    for (int i = 0; i < RANDOM_KEYS; i++) {
        char normal[64], upper[64], zeros[64];
        snprintf(normal, sizeof normal, "stress-%d@cuda:%d", i, i);
        snprintf(upper, sizeof upper, "stress-%d@CUDA:%d", i, i);
        snprintf(zeros, sizeof zeros, "stress-%d@cuda:00%d", i, i);
        const char *spellings[] = {normal, upper, zeros};
        CHECK(pool_add_key(p, normal, 100, spellings, 3, why, why_size) == 0, "keys");
    }
    p->context = make_context(entries, 2, why, why_size);
    CHECK(p->context != NULL, "no context");
    for (int i = 0; i < RANDOM_THREADS; i++) {
        state->workers[i] = (random_worker){.pool = p, .worker = i, .rounds = rounds};
        CHECK(crew_spawn(&state->crew, random_thread, &state->workers[i], why, why_size) == 0,
              "spawn");
    }
    CHECK_FINISHED(&state->crew);
    CHECK(pool_check_running(p, why, why_size) == 0, "invariant");
    CHECK(pool_check_idle(p, why, why_size) == 0, "idle");

    rm_registry_metrics metrics;
    CHECK(metrics_of(p->context, &metrics) == RM_OK, "registry_metrics failed");
    pool_totals totals = pool_sum(p);
    CHECK(metrics.loads == totals.successes && metrics.load_failures == totals.failures,
          "metrics say %llu loads + %llu failures, loaders saw %llu + %llu",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
          (unsigned long long)totals.successes, (unsigned long long)totals.failures);
    CHECK(metrics.loads + metrics.load_failures == totals.calls,
          "metrics: %llu loads + failures, %llu loader calls",
          (unsigned long long)(metrics.loads + metrics.load_failures),
          (unsigned long long)totals.calls);
    CHECK(metrics.hits + metrics.misses == (uint64_t)atomic_load(&p->lookups),
          "%llu hits + misses for %lld lookups",
          (unsigned long long)(metrics.hits + metrics.misses), atomic_load(&p->lookups));
    CHECK(metrics.evictions ==
              metrics.evictions_ttl + metrics.evictions_lru + metrics.evictions_explicit,
          "evictions is not the sum of its parts");
    if (rounds >= 100)
        CHECK(totals.failures > 0, "the seeded loader failures never happened");
    fprintf(stderr,
            "# random_failures: %lld lookups, %llu hits, %llu loads, %llu failures, "
            "evictions ttl %llu lru %llu explicit %llu, over budget %llu\n",
            atomic_load(&p->lookups), (unsigned long long)metrics.hits,
            (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
            (unsigned long long)metrics.evictions_ttl, (unsigned long long)metrics.evictions_lru,
            (unsigned long long)metrics.evictions_explicit,
            (unsigned long long)metrics.over_budget);

    /* Idle now: what is left expires on the eviction thread. */
    uint64_t deadline = now_ns() + UINT64_C(5000000000);
    while (metrics_of(p->context, &metrics) == RM_OK && metrics.models != 0 &&
           now_ns() < deadline)
        sleep_ms(2);
    CHECK(metrics.models == 0, "%llu idle models outlived a 0.2 ms TTL by 5 s",
          (unsigned long long)metrics.models);
    /* Nothing runs now: every model loaded has been evicted, once. */
    CHECK(metrics.evictions == metrics.loads, "%llu loads but %llu evictions",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.evictions);
    CHECK(pool_sum(p).destroys == metrics.loads, "%llu loads but %llu destroy callbacks",
          (unsigned long long)metrics.loads, (unsigned long long)pool_sum(p).destroys);

    vt->context_destroy(p->context);
    p->context = NULL;
    log_counts logs_after = log_snapshot();
    CHECK(logs_after.held_at_destroy == logs_before.held_at_destroy,
          "context_destroy reported handles still held");
    CHECK(pool_check_destroyed(p, why, why_size) == 0, "after destroy");

out:;
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, NULL, 0, &p->context, why, why_size))
        return -1;
    if (result != 0)
        pool_check_destroyed(p, why, why_size); /* frees the models */
    counter_destroy(&state->crew.finished);
    free(state);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Scenario 6: ttl_under_load                                               */
/* ------------------------------------------------------------------------ */

enum { TTL_THREADS = 4, HOT = 0, COLD = 1, PINNED = 2 };

typedef struct ttl_state {
    pool pool;
    atomic_bool stop;
    atomic_llong hot_gets;
    crew crew;
} ttl_state;

static void *ttl_hammer(void *argument)
{
    ttl_state *state = argument;
    pool *p = &state->pool;
    int spelling = 0;
    while (!atomic_load_explicit(&state->stop, RELAXED)) {
        rm_model_handle *handle;
        model *m;
        if (pool_get(p, HOT, spelling++, &handle, &m)) {
            atomic_fetch_add_explicit(&state->hot_gets, 1, RELAXED);
            pool_release(p, handle, m);
        }
        if (spelling % 64 == 0)
            sched_yield(); /* under valgrind, let the main thread look */
    }
    return NULL;
}

static int scenario_ttl_under_load(void)
{
    char *why = reason;
    size_t why_size = sizeof reason;
    static const rm_config_entry entries[] = {{"registry.ttl_s", "0.1"}};
    const uint64_t ttl_ns = UINT64_C(100000000);
    ttl_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    pool *p = &state->pool;
    rm_model_handle *pinned_handle = NULL;
    model *pinned_model = NULL;
    pool_init(p, 0);
    atomic_init(&state->stop, false);
    atomic_init(&state->hot_gets, 0);
    crew_init(&state->crew);
    log_counts logs_before = log_snapshot();
    const char *hot[] = {"hot@cpu", "hot@CPU"};
    const char *cold[] = {"cold@cpu"};
    const char *pinned[] = {"pinned@cpu"};
    CHECK(pool_add_key(p, "hot@cpu", 10, hot, 2, why, why_size) == 0, "keys");
    CHECK(pool_add_key(p, "cold@cpu", 20, cold, 1, why, why_size) == 0, "keys");
    CHECK(pool_add_key(p, "pinned@cpu", 30, pinned, 1, why, why_size) == 0, "keys");
    p->context = make_context(entries, 1, why, why_size);
    CHECK(p->context != NULL, "no context");

    /* pinned@cpu stays held for the whole run, far past its TTL: the
     * eviction thread must leave it alone. */
    CHECK(pool_get(p, PINNED, 0, &pinned_handle, &pinned_model), "loading pinned@cpu failed");
    uint64_t started_ns = now_ns();
    rm_model_handle *handle;
    model *m;
    CHECK(pool_get(p, COLD, 0, &handle, &m), "loading cold@cpu failed");
    /* Read before the release: the registry's idle time starts no earlier. */
    uint64_t cold_released_ns = now_ns();
    pool_release(p, handle, m);

    for (int i = 0; i < TTL_THREADS; i++)
        CHECK(crew_spawn(&state->crew, ttl_hammer, state, why, why_size) == 0, "spawn");
    /* Hammer for 300 ms, and on until cold is gone (bounded: slow under
     * sanitizers, but the eviction thread must get there). */
    const uint64_t hammer_ns = UINT64_C(300000000);
    const uint64_t give_up_ns = (uint64_t)(thread_limit_s / 2 * 1e9);
    for (;;) {
        uint64_t elapsed = now_ns() - started_ns;
        bool cold_gone = atomic_load_explicit(&p->keys[COLD].destroys, RELAXED) != 0;
        if ((elapsed >= hammer_ns && cold_gone) || elapsed >= give_up_ns)
            break;
        sleep_ms(5);
    }
    uint64_t stopped_ns = now_ns();
    atomic_store(&state->stop, true);
    CHECK_FINISHED(&state->crew);

    CHECK(pool_check_running(p, why, why_size) == 0, "invariant");
    CHECK(atomic_load(&p->keys[PINNED].destroys) == 0,
          "pinned@cpu was destroyed while its handle was held");
    pool_release(p, pinned_handle, pinned_model);
    pinned_handle = NULL;
    CHECK(atomic_load(&state->hot_gets) > 0, "the hammer threads never got hot@cpu");
    key_stats *c = &p->keys[COLD];
    CHECK(atomic_load(&c->destroys) == 1,
          "cold@cpu was not evicted within %.1f s of a 0.1 s TTL while hot@cpu was busy "
          "(%d destroys)",
          (double)(stopped_ns - cold_released_ns) / 1e9, atomic_load(&c->destroys));
    uint64_t cold_destroyed_ns = atomic_load(&c->last_destroy_ns);
    CHECK(cold_destroyed_ns >= cold_released_ns + ttl_ns,
          "cold@cpu destroyed %.1f ms after its release, before its 100 ms TTL",
          (double)(cold_destroyed_ns - cold_released_ns) / 1e6);
    CHECK(cold_destroyed_ns <= stopped_ns, "cold@cpu destroyed after the threads stopped");
    rm_registry_metrics metrics;
    CHECK(metrics_of(p->context, &metrics) == RM_OK, "registry_metrics failed");
    CHECK(metrics.evictions_ttl >= 1, "evictions_ttl is %llu after cold@cpu expired",
          (unsigned long long)metrics.evictions_ttl);
    CHECK(metrics.evictions_lru == 0 && metrics.evictions_explicit == 0,
          "no budget and no evict call, yet %llu LRU and %llu explicit evictions",
          (unsigned long long)metrics.evictions_lru,
          (unsigned long long)metrics.evictions_explicit);
    fprintf(stderr,
            "# ttl_under_load: %lld hot gets, hot loaded %d times, cold expired %.1f ms after "
            "release, threads ran %.0f ms\n",
            atomic_load(&state->hot_gets), atomic_load(&p->keys[HOT].successes),
            (double)(cold_destroyed_ns - cold_released_ns) / 1e6,
            (double)(stopped_ns - started_ns) / 1e6);
    CHECK(pool_check_idle(p, why, why_size) == 0, "idle");
    /* Idle now, hot expires as well. */
    uint64_t deadline = now_ns() + UINT64_C(5000000000);
    while (metrics_of(p->context, &metrics) == RM_OK && metrics.models != 0 &&
           now_ns() < deadline)
        sleep_ms(5);
    CHECK(metrics.models == 0, "%llu models outlived their 0.1 s TTL by 5 s once idle",
          (unsigned long long)metrics.models);
    CHECK(metrics.evictions_ttl == metrics.loads, "%llu loads but %llu TTL evictions",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.evictions_ttl);

    vt->context_destroy(p->context);
    p->context = NULL;
    CHECK(log_snapshot().held_at_destroy == logs_before.held_at_destroy,
          "context_destroy reported handles still held");
    CHECK(pool_check_destroyed(p, why, why_size) == 0, "after destroy");

out:;
    atomic_store(&state->stop, true);
    if (pinned_handle != NULL && p->context != NULL)
        pool_release(p, pinned_handle, pinned_model);
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, NULL, 0, &p->context, why, why_size))
        return -1;
    if (result != 0)
        pool_check_destroyed(p, why, why_size);
    counter_destroy(&state->crew.finished);
    free(state);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Scenario 7: lru_pressure                                                 */
/* ------------------------------------------------------------------------ */

enum { LRU_THREADS = 4, LRU_KEYS = 12, LRU_MAX_MODELS = 4 };

typedef struct lru_state lru_state;

typedef struct lru_worker {
    lru_state *state;
    int worker;
    int rounds;
} lru_worker;

struct lru_state {
    pool pool;
    lru_worker workers[LRU_THREADS];
    atomic_ullong most_models_seen;
    atomic_int metrics_failures;
    crew crew;
};

static void *lru_thread(void *argument)
{
    lru_worker *w = argument;
    lru_state *state = w->state;
    pool *p = &state->pool;
    random_seed(UINT64_C(0x1a0000) + (uint64_t)w->worker);
    int operations = 0;
    for (int iteration = 0; iteration < w->rounds; iteration++) {
        for (int j = 0; j < LRU_KEYS; j++) {
            int key_index = (j + w->worker * 3) % LRU_KEYS;
            rm_model_handle *handle;
            model *m;
            if (pool_get(p, key_index, 0, &handle, &m)) {
                if (random_next() % 4 == 0)
                    sched_yield(); /* hold it a little longer */
                pool_release(p, handle, m);
            }
            /* Each thread holds at most one model, so at most 4 are in use
             * and every admission can meet the budget: never more than 4
             * loaded, at any moment. */
            if (++operations % 8 == 0) {
                rm_registry_metrics metrics;
                if (metrics_of(p->context, &metrics) != RM_OK) {
                    atomic_fetch_add_explicit(&state->metrics_failures, 1, RELAXED);
                    continue;
                }
                unsigned long long seen = atomic_load_explicit(&state->most_models_seen,
                                                               RELAXED);
                while (metrics.models > seen &&
                       !atomic_compare_exchange_weak_explicit(&state->most_models_seen, &seen,
                                                              metrics.models, RELAXED,
                                                              RELAXED)) {
                }
            }
        }
    }
    return NULL;
}

static int scenario_lru_pressure(void)
{
    char *why = reason;
    size_t why_size = sizeof reason;
    static const rm_config_entry entries[] = {
        {"registry.ttl_s", "0"},
        {"registry.max_models", "4"},
    };
    lru_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    pool *p = &state->pool;
    pool_init(p, 0);
    atomic_init(&state->most_models_seen, 0);
    atomic_init(&state->metrics_failures, 0);
    crew_init(&state->crew);
    log_counts logs_before = log_snapshot();
    for (int i = 0; i < LRU_KEYS; i++) {
        char normal[64];
        snprintf(normal, sizeof normal, "lru-%d@cpu", i);
        const char *spellings[] = {normal};
        CHECK(pool_add_key(p, normal, 1000, spellings, 1, why, why_size) == 0, "keys");
    }
    p->context = make_context(entries, 2, why, why_size);
    CHECK(p->context != NULL, "no context");
    int rounds = stress_scaled(150);
    for (int i = 0; i < LRU_THREADS; i++) {
        state->workers[i] = (lru_worker){.state = state, .worker = i, .rounds = rounds};
        CHECK(crew_spawn(&state->crew, lru_thread, &state->workers[i], why, why_size) == 0,
              "spawn");
    }
    CHECK_FINISHED(&state->crew);

    CHECK(pool_check_running(p, why, why_size) == 0, "invariant");
    CHECK(atomic_load(&state->metrics_failures) == 0, "registry_metrics failed mid-run");
    CHECK(atomic_load(&state->most_models_seen) <= LRU_MAX_MODELS,
          "%llu models loaded at once with max_models = 4 and at most 4 in use",
          (unsigned long long)atomic_load(&state->most_models_seen));
    CHECK(pool_check_idle(p, why, why_size) == 0, "idle");
    rm_registry_metrics metrics;
    CHECK(metrics_of(p->context, &metrics) == RM_OK, "registry_metrics failed");
    pool_totals totals = pool_sum(p);
    CHECK(metrics.models <= LRU_MAX_MODELS, "%llu models after every release, max 4",
          (unsigned long long)metrics.models);
    CHECK(metrics.loads == totals.successes, "metrics: %llu loads, loaders: %llu",
          (unsigned long long)metrics.loads, (unsigned long long)totals.successes);
    /* No TTL thread: every destroy ran before the call that evicted it
     * returned, so the counts are final. */
    CHECK(totals.destroys == metrics.loads - metrics.models,
          "%llu destroys, expected loads - models = %llu - %llu",
          (unsigned long long)totals.destroys, (unsigned long long)metrics.loads,
          (unsigned long long)metrics.models);
    CHECK(metrics.evictions_lru == totals.destroys && metrics.evictions_ttl == 0 &&
              metrics.evictions_explicit == 0,
          "evictions lru %llu ttl %llu explicit %llu for %llu destroys",
          (unsigned long long)metrics.evictions_lru, (unsigned long long)metrics.evictions_ttl,
          (unsigned long long)metrics.evictions_explicit, (unsigned long long)totals.destroys);
    CHECK(metrics.over_budget == 0,
          "%llu admissions over budget, though at most 4 models were ever in use",
          (unsigned long long)metrics.over_budget);
    CHECK(metrics.hits + metrics.misses == (uint64_t)atomic_load(&p->lookups),
          "%llu hits + misses for %lld lookups",
          (unsigned long long)(metrics.hits + metrics.misses), atomic_load(&p->lookups));
    fprintf(stderr, "# lru_pressure: %lld lookups, %llu hits, %llu loads, %llu LRU evictions\n",
            atomic_load(&p->lookups), (unsigned long long)metrics.hits,
            (unsigned long long)metrics.loads, (unsigned long long)metrics.evictions_lru);

    vt->context_destroy(p->context);
    p->context = NULL;
    CHECK(log_snapshot().held_at_destroy == logs_before.held_at_destroy,
          "context_destroy reported handles still held");
    CHECK(pool_check_destroyed(p, why, why_size) == 0, "after destroy");

out:;
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, NULL, 0, &p->context, why, why_size))
        return -1;
    if (result != 0)
        pool_check_destroyed(p, why, why_size);
    counter_destroy(&state->crew.finished);
    free(state);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Scenario 8: list_and_metrics_while_busy                                  */
/* ------------------------------------------------------------------------ */

enum { BUSY_HAMMERS = 2, BUSY_KEYS = 6, BUSY_MAX_HELD = 2 * BUSY_HAMMERS };

typedef struct busy_state busy_state;

typedef struct busy_worker {
    busy_state *state;
    int worker;
    int rounds;
} busy_worker;

struct busy_state {
    pool pool;
    busy_worker workers[BUSY_HAMMERS];
    atomic_int hammers_done;
    uint64_t context_created_ns;
    /* Written by the observer thread only, read after it is joined. */
    long observations;
    char observer_problem[512];
    crew crew;
};

static void *busy_hammer(void *argument)
{
    busy_worker *w = argument;
    pool *p = &w->state->pool;
    random_seed(UINT64_C(0xb0500) + (uint64_t)w->worker);
    for (int iteration = 0; iteration < w->rounds; iteration++) {
        uint64_t draw = random_next();
        rm_model_handle *first = NULL;
        rm_model_handle *second = NULL;
        model *first_model = NULL;
        model *second_model = NULL;
        bool have_first = pool_get(p, (int)(draw % BUSY_KEYS), (int)((draw >> 4) % 2), &first,
                                   &first_model);
        bool have_second = false;
        if ((draw >> 8) % 4 == 0)
            have_second = pool_get(p, (int)((draw >> 12) % BUSY_KEYS), (int)((draw >> 16) % 2),
                                   &second, &second_model);
        if ((draw >> 20) % 64 == 0) {
            int32_t status = vt->model_evict(p->context, p->keys[(draw >> 26) % BUSY_KEYS].normal);
            if (status != RM_OK && status != RM_E_BUSY && status != RM_E_NOT_FOUND)
                pool_note_status(p, status);
        }
        if (have_second)
            pool_release(p, second, second_model);
        if (have_first)
            pool_release(p, first, first_model);
    }
    atomic_fetch_add(&w->state->hammers_done, 1);
    return NULL;
}

/* Checks one registry_list call: what the API promises for each row. */
static int busy_check_rows(busy_state *state, char *why, size_t why_size)
{
    pool *p = &state->pool;
    rm_model_info rows[BUSY_KEYS + 2];
    uint32_t count;
    int32_t status = list_rows(p->context, rows, BUSY_KEYS + 2, &count);
    uint64_t listed_ns = now_ns();
    if (status != RM_OK)
        return failf(why, why_size, "registry_list: %s", code_name(status));
    if (count > BUSY_KEYS)
        return failf(why, why_size, "registry_list: %u models for %d keys", count, BUSY_KEYS);
    unsigned seen = 0;
    for (uint32_t i = 0; i < count; i++) {
        const rm_model_info *row = &rows[i];
        if (row->struct_size != sizeof *row || row->abi_version != RM_ABI_VERSION_CURRENT)
            return failf(why, why_size, "row %u: struct_size %u, abi_version 0x%x", i,
                         row->struct_size, row->abi_version);
        if (memchr(row->key, '\0', sizeof row->key) == NULL ||
            memchr(row->device, '\0', sizeof row->device) == NULL)
            return failf(why, why_size, "row %u: key or device not NUL-terminated", i);
        int found = -1;
        for (int j = 0; j < p->key_count; j++)
            if (strcmp(row->key, p->keys[j].normal) == 0)
                found = j;
        if (found < 0)
            return failf(why, why_size, "row %u: key '%s' is none of ours in normal form", i,
                         row->key);
        if (seen & (1u << found))
            return failf(why, why_size, "key '%s' listed twice in one call", row->key);
        seen |= 1u << found;
        const char *at = strchr(row->key, '@');
        if (at == NULL || strcmp(row->device, at + 1) != 0)
            return failf(why, why_size, "row '%s': device '%s'", row->key, row->device);
        if (row->bytes != p->keys[found].bytes)
            return failf(why, why_size, "row '%s': %llu bytes, its loader says %llu", row->key,
                         (unsigned long long)row->bytes,
                         (unsigned long long)p->keys[found].bytes);
        if (row->refcount > BUSY_MAX_HELD)
            return failf(why, why_size, "row '%s': refcount %llu, at most %d handles exist",
                         row->key, (unsigned long long)row->refcount, BUSY_MAX_HELD);
        if (row->loaded_at_ns < state->context_created_ns ||
            row->last_used_ns < row->loaded_at_ns || row->last_used_ns > listed_ns)
            return failf(why, why_size,
                         "row '%s': loaded_at %llu, last_used %llu outside [%llu, %llu]",
                         row->key, (unsigned long long)row->loaded_at_ns,
                         (unsigned long long)row->last_used_ns,
                         (unsigned long long)state->context_created_ns,
                         (unsigned long long)listed_ns);
    }
    return 0;
}

/* Checks one registry_metrics call, and that counters never go back. */
static int busy_check_metrics(busy_state *state, rm_registry_metrics *previous, char *why,
                              size_t why_size)
{
    pool *p = &state->pool;
    rm_registry_metrics m;
    int32_t status = metrics_of(p->context, &m);
    if (status != RM_OK)
        return failf(why, why_size, "registry_metrics: %s", code_name(status));
    if (m.struct_size != sizeof m || m.abi_version != RM_ABI_VERSION_CURRENT)
        return failf(why, why_size, "registry_metrics changed struct_size/abi_version");
    if (!(m.hit_rate >= 0.0 && m.hit_rate <= 1.0))
        return failf(why, why_size, "hit_rate %g outside [0, 1]", m.hit_rate);
    uint64_t lookups = m.hits + m.misses;
    double expected_rate = lookups == 0 ? 0.0 : (double)m.hits / (double)lookups;
    if (m.hit_rate < expected_rate - 1e-9 || m.hit_rate > expected_rate + 1e-9)
        return failf(why, why_size, "hit_rate %g, hits/(hits+misses) = %g", m.hit_rate,
                     expected_rate);
    if (m.evictions != m.evictions_ttl + m.evictions_lru + m.evictions_explicit)
        return failf(why, why_size, "evictions %llu is not ttl + lru + explicit",
                     (unsigned long long)m.evictions);
    uint64_t all_bytes = 0;
    for (int j = 0; j < p->key_count; j++)
        all_bytes += p->keys[j].bytes;
    if (m.models > BUSY_KEYS || m.bytes > all_bytes)
        return failf(why, why_size, "%llu models, %llu bytes loaded from %d keys of %llu bytes",
                     (unsigned long long)m.models, (unsigned long long)m.bytes, BUSY_KEYS,
                     (unsigned long long)all_bytes);
#define MONOTONIC(field)                                                                  \
    if (m.field < previous->field)                                                        \
        return failf(why, why_size, #field " went back from %llu to %llu",                \
                     (unsigned long long)previous->field, (unsigned long long)m.field);
    MONOTONIC(hits)
    MONOTONIC(misses)
    MONOTONIC(loads)
    MONOTONIC(load_failures)
    MONOTONIC(evictions_ttl)
    MONOTONIC(evictions_lru)
    MONOTONIC(evictions_explicit)
    MONOTONIC(over_budget)
#undef MONOTONIC
    *previous = m;
    return 0;
}

static void *busy_observer(void *argument)
{
    busy_state *state = argument;
    rm_registry_metrics previous;
    memset(&previous, 0, sizeof previous);
    uint64_t deadline = now_ns() + (uint64_t)(thread_limit_s * 1e9);
    char *why = state->observer_problem;
    size_t why_size = sizeof state->observer_problem;
    while (why[0] == '\0') {
        bool last = atomic_load(&state->hammers_done) == BUSY_HAMMERS;
        if (busy_check_rows(state, why, why_size) != 0 ||
            busy_check_metrics(state, &previous, why, why_size) != 0)
            break;
        state->observations++;
        if (last)
            break; /* one more pass after the hammers ended */
        /* Leave the registry lock to the hammers now and then: under
         * valgrind, which runs one thread at a time, a loop that never
         * blocks starves them. */
        if (state->observations % 1024 == 0)
            sleep_ms(1);
        else
            sched_yield();
        if (now_ns() > deadline) {
            failf(why, why_size, "the hammer threads did not end");
            break;
        }
    }
    return NULL;
}

static int scenario_list_and_metrics_while_busy(void)
{
    char *why = reason;
    size_t why_size = sizeof reason;
    /* A small budget and a short TTL keep rows coming and going. */
    static const rm_config_entry entries[] = {
        {"registry.ttl_s", "0.0005"},
        {"registry.max_models", "3"},
    };
    busy_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    pool *p = &state->pool;
    pool_init(p, 100);
    atomic_init(&state->hammers_done, 0);
    crew_init(&state->crew);
    log_counts logs_before = log_snapshot();
    for (int i = 0; i < BUSY_KEYS; i++) {
        char normal[64], first[64], second[64];
        if (i % 2 == 0) {
            snprintf(normal, sizeof normal, "Net-%d@cuda:%d", i, i);
            snprintf(first, sizeof first, "Net-%d@CUDA:0%d", i, i);
            snprintf(second, sizeof second, "Net-%d@Cuda:%d", i, i);
        } else {
            snprintf(normal, sizeof normal, "net.%d/v2@cpu", i);
            snprintf(first, sizeof first, "net.%d/v2@CPU", i);
            snprintf(second, sizeof second, "net.%d/v2@Cpu", i);
        }
        const char *spellings[] = {first, second};
        CHECK(pool_add_key(p, normal, 100 + (uint64_t)i, spellings, 2, why, why_size) == 0,
              "keys");
    }
    state->context_created_ns = now_ns();
    p->context = make_context(entries, 2, why, why_size);
    CHECK(p->context != NULL, "no context");
    int rounds = stress_scaled(10000);
    for (int i = 0; i < BUSY_HAMMERS; i++) {
        state->workers[i] = (busy_worker){.state = state, .worker = i, .rounds = rounds};
        CHECK(crew_spawn(&state->crew, busy_hammer, &state->workers[i], why, why_size) == 0,
              "spawn");
    }
    CHECK(crew_spawn(&state->crew, busy_observer, state, why, why_size) == 0, "spawn");
    CHECK_FINISHED(&state->crew);
    CHECK(state->observer_problem[0] == '\0', "while busy: %s", state->observer_problem);
    CHECK(state->observations >= 2, "only %ld observations", state->observations);
    CHECK(pool_check_running(p, why, why_size) == 0, "invariant");
    CHECK(pool_check_idle(p, why, why_size) == 0, "idle");
    rm_registry_metrics metrics;
    CHECK(metrics_of(p->context, &metrics) == RM_OK, "registry_metrics failed");
    pool_totals totals = pool_sum(p);
    CHECK(metrics.loads == totals.successes && metrics.load_failures == totals.failures,
          "metrics say %llu loads + %llu failures, loaders saw %llu + %llu",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
          (unsigned long long)totals.successes, (unsigned long long)totals.failures);
    fprintf(stderr,
            "# list_and_metrics_while_busy: %ld observations, %lld lookups, %llu loads, "
            "%llu failures, evictions ttl %llu lru %llu explicit %llu\n",
            state->observations, atomic_load(&p->lookups), (unsigned long long)metrics.loads,
            (unsigned long long)metrics.load_failures, (unsigned long long)metrics.evictions_ttl,
            (unsigned long long)metrics.evictions_lru,
            (unsigned long long)metrics.evictions_explicit);
    vt->context_destroy(p->context);
    p->context = NULL;
    CHECK(log_snapshot().held_at_destroy == logs_before.held_at_destroy,
          "context_destroy reported handles still held");
    CHECK(pool_check_destroyed(p, why, why_size) == 0, "after destroy");

out:;
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, NULL, 0, &p->context, why, why_size))
        return -1;
    if (result != 0)
        pool_check_destroyed(p, why, why_size);
    counter_destroy(&state->crew.finished);
    free(state);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Scenario 9: hits_racing_eviction                                         */
/* ------------------------------------------------------------------------ */

enum { RACE_HITTERS = 4, RACE_KEYS = 5, RACE_HOT_KEYS = 2 };

/* A handle on its way from the thread that got it to the one that
 * releases it. */
typedef struct parcel {
    rm_model_handle *handle;
    model *model;
} parcel;

typedef struct race_state race_state;

typedef struct race_worker {
    race_state *state;
    int worker;
    int rounds;
} race_worker;

struct race_state {
    pool pool;
    race_worker workers[RACE_HITTERS];
    /* Handed over with an acq_rel exchange: a host passes a handle to
     * another thread with some synchronisation, as it would any pointer;
     * it orders the hand-over only, none of the registry's own accesses. */
    _Atomic(parcel *) mailbox;
    atomic_int hitters_done;
    atomic_llong handed_over;
    atomic_llong explicit_evictions;
    crew crew;
};

/* Leaves this handle in the mailbox and releases the one found there, so
 * that references are given back on another thread than they were got. */
static void race_hand_over(race_state *state, rm_model_handle *handle, model *m)
{
    parcel *mine = malloc(sizeof *mine);
    if (mine == NULL) {
        pool_release(&state->pool, handle, m);
        return;
    }
    *mine = (parcel){.handle = handle, .model = m};
    parcel *theirs = atomic_exchange_explicit(&state->mailbox, mine, memory_order_acq_rel);
    if (theirs != NULL) {
        pool_release(&state->pool, theirs->handle, theirs->model);
        free(theirs);
        atomic_fetch_add_explicit(&state->handed_over, 1, RELAXED);
    }
}

static void *race_hitter(void *argument)
{
    race_worker *w = argument;
    race_state *state = w->state;
    pool *p = &state->pool;
    random_seed(UINT64_C(0xace000) + (uint64_t)w->worker);
    for (int iteration = 0; iteration < w->rounds; iteration++) {
        uint64_t draw = random_next();
        /* Mostly the hot keys, whose hits take the lock-free path; now and
         * then a cold one, so that the budget evicts and evicted entries
         * are reused for other keys under the hitters' feet. */
        int key_index = draw % 8 == 0
                            ? RACE_HOT_KEYS + (int)((draw >> 3) % (RACE_KEYS - RACE_HOT_KEYS))
                            : (int)((draw >> 3) % RACE_HOT_KEYS);
        rm_model_handle *handle;
        model *m;
        if (!pool_get(p, key_index, (int)((draw >> 8) % 2), &handle, &m))
            continue;
        if ((draw >> 16) % 4 == 0)
            race_hand_over(state, handle, m);
        else
            pool_release(p, handle, m);
    }
    atomic_fetch_add(&state->hitters_done, 1);
    return NULL;
}

/* Evicts the hot keys (and now and then every idle model) for as long as
 * the hitters run: each try meets lock-free hits in flight. */
static void *race_evictor(void *argument)
{
    race_state *state = argument;
    pool *p = &state->pool;
    random_seed(UINT64_C(0xe51c7));
    for (long tries = 0; atomic_load(&state->hitters_done) < RACE_HITTERS; tries++) {
        uint64_t draw = random_next();
        if (draw % 16 == 0) {
            int32_t status = vt->model_evict(p->context, NULL);
            if (status != RM_OK)
                pool_note_status(p, status);
        } else {
            key_stats *k = &p->keys[(draw >> 4) % RACE_HOT_KEYS];
            int32_t status = vt->model_evict(p->context, k->spellings[(draw >> 8) % 2]);
            if (status == RM_OK) /* one model evicted */
                atomic_fetch_add_explicit(&state->explicit_evictions, 1, RELAXED);
            else if (status != RM_E_BUSY && status != RM_E_NOT_FOUND)
                pool_note_status(p, status);
        }
        if (tries % 64 == 0)
            sched_yield(); /* under valgrind, let the hitters run */
    }
    return NULL;
}

static int scenario_hits_racing_eviction(void)
{
    char *why = reason;
    size_t why_size = sizeof reason;
    /* A 0.1 ms TTL and room for 3 of the 5 keys: the eviction thread, the
     * budget and explicit evictions all race the lock-free hits. */
    static const rm_config_entry entries[] = {
        {"registry.ttl_s", "0.0001"},
        {"registry.max_models", "3"},
    };
    race_state *state = calloc(1, sizeof *state);
    if (state == NULL)
        return failf(why, why_size, "out of memory");
    pool *p = &state->pool;
    parcel *left = NULL;
    pool_init(p, 20);
    atomic_init(&state->mailbox, NULL);
    atomic_init(&state->hitters_done, 0);
    atomic_init(&state->handed_over, 0);
    atomic_init(&state->explicit_evictions, 0);
    crew_init(&state->crew);
    log_counts logs_before = log_snapshot();
    for (int i = 0; i < RACE_KEYS; i++) {
        char normal[64], upper[64];
        snprintf(normal, sizeof normal, "race-%d@cuda:%d", i, i);
        snprintf(upper, sizeof upper, "race-%d@CUDA:%d", i, i);
        const char *spellings[] = {normal, upper};
        CHECK(pool_add_key(p, normal, 10, spellings, 2, why, why_size) == 0, "keys");
    }
    p->context = make_context(entries, 2, why, why_size);
    CHECK(p->context != NULL, "no context");
    int rounds = stress_scaled(20000);
    for (int i = 0; i < RACE_HITTERS; i++) {
        state->workers[i] = (race_worker){.state = state, .worker = i, .rounds = rounds};
        CHECK(crew_spawn(&state->crew, race_hitter, &state->workers[i], why, why_size) == 0,
              "spawn");
    }
    CHECK(crew_spawn(&state->crew, race_evictor, state, why, why_size) == 0, "spawn");
    CHECK_FINISHED(&state->crew);
    left = atomic_exchange(&state->mailbox, NULL);
    if (left != NULL) {
        pool_release(p, left->handle, left->model);
        free(left);
    }

    CHECK(pool_check_running(p, why, why_size) == 0, "invariant");
    CHECK(pool_check_idle(p, why, why_size) == 0, "idle");
    rm_registry_metrics metrics;
    CHECK(metrics_of(p->context, &metrics) == RM_OK, "registry_metrics failed");
    pool_totals totals = pool_sum(p);
    CHECK(metrics.loads == totals.successes && metrics.load_failures == totals.failures,
          "metrics say %llu loads + %llu failures, loaders saw %llu + %llu",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.load_failures,
          (unsigned long long)totals.successes, (unsigned long long)totals.failures);
    CHECK(metrics.hits + metrics.misses == (uint64_t)atomic_load(&p->lookups),
          "%llu hits + misses for %lld lookups",
          (unsigned long long)(metrics.hits + metrics.misses), atomic_load(&p->lookups));
    CHECK(metrics.evictions_explicit >= (uint64_t)atomic_load(&state->explicit_evictions),
          "%lld models evicted by key, %llu explicit evictions counted",
          atomic_load(&state->explicit_evictions),
          (unsigned long long)metrics.evictions_explicit);
    if (rounds >= 1000) {
        CHECK(metrics.hits > metrics.misses, "%llu hits, %llu misses: the hits hardly ran",
              (unsigned long long)metrics.hits, (unsigned long long)metrics.misses);
        CHECK(atomic_load(&state->handed_over) > 0, "no handle was released on another thread");
    }
    fprintf(stderr,
            "# hits_racing_eviction: %lld lookups, %llu hits, %llu loads, %lld handed over, "
            "evictions ttl %llu lru %llu explicit %llu\n",
            atomic_load(&p->lookups), (unsigned long long)metrics.hits,
            (unsigned long long)metrics.loads, atomic_load(&state->handed_over),
            (unsigned long long)metrics.evictions_ttl, (unsigned long long)metrics.evictions_lru,
            (unsigned long long)metrics.evictions_explicit);

    /* Idle now: what is left expires on the eviction thread. */
    uint64_t deadline = now_ns() + UINT64_C(5000000000);
    while (metrics_of(p->context, &metrics) == RM_OK && metrics.models != 0 &&
           now_ns() < deadline)
        sleep_ms(2);
    CHECK(metrics.models == 0, "%llu idle models outlived a 0.1 ms TTL by 5 s",
          (unsigned long long)metrics.models);
    CHECK(metrics.evictions == metrics.loads, "%llu loads but %llu evictions",
          (unsigned long long)metrics.loads, (unsigned long long)metrics.evictions);
    CHECK(pool_sum(p).destroys == metrics.loads, "%llu loads but %llu destroy callbacks",
          (unsigned long long)metrics.loads, (unsigned long long)pool_sum(p).destroys);

    vt->context_destroy(p->context);
    p->context = NULL;
    CHECK(log_snapshot().held_at_destroy == logs_before.held_at_destroy,
          "context_destroy reported handles still held");
    CHECK(pool_check_destroyed(p, why, why_size) == 0, "after destroy");

out:;
    int result = why[0] == '\0' ? 0 : -1;
    if (!wind_up(&state->crew, NULL, 0, &p->context, why, why_size))
        return -1;
    left = atomic_exchange(&state->mailbox, NULL);
    free(left); /* its context is gone, and with it the handle */
    if (result != 0)
        pool_check_destroyed(p, why, why_size);
    counter_destroy(&state->crew.finished);
    free(state);
    return result;
}

/* ------------------------------------------------------------------------ */
/* Running the scenarios: the harness, watched                              */
/* ------------------------------------------------------------------------ */

static const stress_scenario scenarios[] = {
    {"single_flight", scenario_single_flight},
    {"failure_wakes_all", scenario_failure_wakes_all},
    {"different_keys_concurrent", scenario_different_keys_concurrent},
    {"cross_thread_cycle", scenario_cross_thread_cycle},
    {"random_failures", scenario_random_failures},
    {"ttl_under_load", scenario_ttl_under_load},
    {"lru_pressure", scenario_lru_pressure},
    {"list_and_metrics_while_busy", scenario_list_and_metrics_while_busy},
    {"hits_racing_eviction", scenario_hits_racing_eviction},
};
enum { SCENARIO_COUNT = sizeof scenarios / sizeof scenarios[0] };

/* Progress, shared with the watchdog. */
static struct {
    pthread_mutex_t mutex;
    pthread_cond_t wake; /* CLOCK_MONOTONIC */
    int current;         /* the scenario running, or -1 */
    uint64_t deadline_ns;
    uint64_t started_ns;
    log_counts logs_before;
    int passed;
    int failed;
    bool finished;
} progress = {.mutex = PTHREAD_MUTEX_INITIALIZER, .current = -1};

/* What the crash handler reports: plain lock-free atomics, which it may
 * read from a signal handler. */
static atomic_int running_scenario = -1;
static atomic_int passed_so_far;
static atomic_int failed_so_far;

static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
enum { FATAL_SIGNAL_COUNT = sizeof fatal_signals / sizeof fatal_signals[0] };
static struct sigaction previous_actions[FATAL_SIGNAL_COUNT];

static void write_text(const char *text)
{
    size_t length = strlen(text);
    while (length > 0) {
        ssize_t written = write(STDOUT_FILENO, text, length);
        if (written <= 0)
            return;
        text += written;
        length -= (size_t)written;
    }
}

static void write_number(int value)
{
    char digits[16];
    int used = 0;
    unsigned magnitude = value < 0 ? 0u - (unsigned)value : (unsigned)value;
    do {
        digits[sizeof digits - 1 - (size_t)used++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0 && used < 15);
    if (value < 0)
        digits[sizeof digits - 1 - (size_t)used++] = '-';
    char text[17];
    memcpy(text, digits + sizeof digits - (size_t)used, (size_t)used);
    text[used] = '\0';
    write_text(text);
}

/* Writes the FAIL lines and the summary for a process that is ending
 * abnormally (once): the running scenario failed with `why` (+ `number`
 * when not negative), and the ones after it did not run. Only
 * async-signal-safe calls. */
static void report_abnormal_end(const char *why, int number, const char *suffix)
{
    static atomic_flag reported = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&reported))
        return;
    int current = atomic_load(&running_scenario);
    int failed = atomic_load(&failed_so_far) + 1;
    write_text("FAIL ");
    write_text(current >= 0 ? scenarios[current].name : "registry_stress");
    write_text(": ");
    write_text(why);
    if (number >= 0)
        write_number(number);
    write_text(suffix);
    write_text("\n");
    for (int i = current + 1; current >= 0 && i < SCENARIO_COUNT; i++, failed++) {
        write_text("FAIL ");
        write_text(scenarios[i].name);
        write_text(": not run (the process ended)\n");
    }
    write_number(atomic_load(&passed_so_far));
    write_text(" passed, ");
    write_number(failed);
    write_text(" failed\n");
}

/* Under a sanitizer with halt_on_error (TSan exits 66 after its first
 * report) the summary line still comes out: the runtime calls this as it
 * dies. Weak, so that the plain build needs no sanitizer runtime. */
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void sanitizer_death(void)
{
    report_abnormal_end("the sanitizer reported an error (see its report on stderr)", -1, "");
}

/* A crash (most likely a use after free in the plugin) still ends with the
 * FAIL lines and the summary that CI reads; then the previous handler (a
 * sanitizer's, which writes its report) or the default action runs. Only
 * async-signal-safe calls here. */
static void crash_handler(int signal_number, siginfo_t *info, void *ucontext)
{
    int saved_errno = errno;
    report_abnormal_end("crashed with signal ", signal_number, "");
    errno = saved_errno;
    for (int i = 0; i < FATAL_SIGNAL_COUNT; i++) {
        if (fatal_signals[i] != signal_number)
            continue;
        const struct sigaction *previous = &previous_actions[i];
        if ((previous->sa_flags & SA_SIGINFO) != 0 && previous->sa_sigaction != NULL) {
            previous->sa_sigaction(signal_number, info, ucontext);
            return;
        }
        if (previous->sa_handler != SIG_DFL && previous->sa_handler != SIG_IGN &&
            previous->sa_handler != NULL) {
            previous->sa_handler(signal_number);
            return;
        }
    }
    struct sigaction default_action;
    memset(&default_action, 0, sizeof default_action);
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    sigaction(signal_number, &default_action, NULL);
    raise(signal_number);
}

static void install_crash_handler(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = crash_handler;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    for (int i = 0; i < FATAL_SIGNAL_COUNT; i++)
        sigaction(fatal_signals[i], &action, &previous_actions[i]);
    if (__sanitizer_set_death_callback != NULL)
        __sanitizer_set_death_callback(sanitizer_death);
}

/* Ends the process when a scenario runs past its deadline: its own thread
 * is stuck (inside the plugin), and nothing else can report it. */
static void *watchdog_main(void *argument)
{
    (void)argument;
    pthread_mutex_lock(&progress.mutex);
    while (!progress.finished) {
        if (progress.current >= 0 && now_ns() > progress.deadline_ns) {
            fflush(stdout);
            report_abnormal_end("watchdog: still running after ", (int)(3 * thread_limit_s),
                                " s (hung in the plugin?)");
            _exit(1);
        }
        struct timespec until = monotonic_in(0.5);
        pthread_cond_timedwait(&progress.wake, &progress.mutex, &until);
    }
    pthread_mutex_unlock(&progress.mutex);
    return NULL;
}

/* The harness's watch: arms the watchdog and notes the plugin's log as a
 * scenario starts. */
static void scenario_started(size_t index)
{
    atomic_store(&running_scenario, (int)index);
    log_counts logs = log_snapshot();
    pthread_mutex_lock(&progress.mutex);
    progress.current = (int)index;
    progress.started_ns = now_ns();
    progress.deadline_ns = progress.started_ns + (uint64_t)(3 * thread_limit_s * 1e9);
    progress.logs_before = logs;
    pthread_mutex_unlock(&progress.mutex);
}

/* ... and as it ends: an error line from the plugin (e.g. a context
 * destroyed while a model was still loading) fails the scenario even when
 * every check passed. */
static int scenario_ended(size_t index, int result)
{
    log_counts logs = log_snapshot();
    pthread_mutex_lock(&progress.mutex);
    log_counts before = progress.logs_before;
    double seconds = (double)(now_ns() - progress.started_ns) / 1e9;
    if (logs.errors != before.errors && result == 0) {
        char line[512];
        log_last_error(line, sizeof line);
        result = failf(reason, sizeof reason,
                       "the plugin logged %ld error line(s), the last: %s",
                       logs.errors - before.errors, line);
    }
    if (result == 0) {
        progress.passed++;
    } else {
        progress.failed++;
        if (reason[0] == '\0')
            snprintf(reason, sizeof reason, "(no reason)");
    }
    progress.current = -1;
    atomic_store(&passed_so_far, progress.passed);
    atomic_store(&failed_so_far, progress.failed);
    atomic_store(&running_scenario, -1);
    pthread_mutex_unlock(&progress.mutex);
    fprintf(stderr, "# %s: %.2f s (plugin log so far: %ld warnings, %ld errors)\n",
            scenarios[index].name, seconds, logs.warnings, logs.errors);
    return result;
}

static double env_number(const char *name, double fallback)
{
    const char *text = getenv(name);
    if (text == NULL || text[0] == '\0')
        return fallback;
    char *end;
    double value = strtod(text, &end);
    if (*end != '\0' || !(value > 0.0)) {
        fprintf(stderr, "registry_stress: ignoring %s=%s (not a positive number)\n", name,
                text);
        return fallback;
    }
    return value;
}

int main(void)
{
    const char *path = getenv("RM_PLUGIN_PATH");
    if (path == NULL || path[0] == '\0') {
        fprintf(stderr, "RM_PLUGIN_PATH must name the built rm_plugin.so\n");
        return 2;
    }
    thread_limit_s = env_number("RM_STRESS_TIMEOUT_S", 60.0);
    verbose = getenv("RM_STRESS_VERBOSE") != NULL;
    /* Full scale under TSan too, unless asked otherwise: the whole run
     * takes about 2.5 s there (not the minutes the harness's 0.25 saves
     * its siblings), and the lock-free hits it races are what TSan is
     * run for. */
    setenv("RM_STRESS_SCALE", "1", 0);
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* The plugin's log comes here (host_services), so not plugin_env.h's
     * loader, which gives the plugin no host services. */
    rm_loaded_plugin plugin;
    char error[1024] = "";
    if (rm_plugin_load(path, NULL, RM_ABI_VERSION(1, 0), RM_ABI_VERSION_CURRENT,
                       &host_services, &plugin, error, sizeof error) != 0) {
        printf("FAIL load_plugin: %s\n", error);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    vt = plugin.vtable;
    if ((vt->features_built & RM_FEATURE_MODEL_REGISTRY) == 0) {
        fprintf(stderr, "registry_stress: %s was built without the model registry\n", path);
        printf("0 passed, 0 failed\n");
        rm_plugin_unload(&plugin);
        return 77; /* skipped */
    }

    install_crash_handler();
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&progress.wake, &attributes);
    pthread_condattr_destroy(&attributes);
    pthread_t watchdog;
    bool watching = pthread_create(&watchdog, NULL, watchdog_main, NULL) == 0;
    if (!watching)
        fprintf(stderr, "registry_stress: no watchdog thread; a hang will not be caught\n");

    fprintf(stderr, "# registry_stress: %s, scale %g, thread wait limit %.0f s\n", path,
            stress_scale(), thread_limit_s);
    uint64_t all_started = now_ns();
    const stress_watch watch = {.started = scenario_started, .ended = scenario_ended};
    int failed = stress_run_watched(scenarios, SCENARIO_COUNT, NULL, reason, &watch);

    pthread_mutex_lock(&progress.mutex);
    progress.finished = true;
    pthread_cond_signal(&progress.wake);
    pthread_mutex_unlock(&progress.mutex);
    if (watching)
        pthread_join(watchdog, NULL);
    fprintf(stderr, "# all scenarios: %.2f s\n", (double)(now_ns() - all_started) / 1e9);
    rm_plugin_unload(&plugin);
    return failed == 0 ? 0 : 1;
}
