/* The node-scope model registry and loader buffers (ABI 1.2) through the
 * real shared object, in one process.
 *
 * Loader buffers in process scope: zeroed, page-aligned, writable while the
 * loader runs and read-only once it returns (a write faults in a forked
 * child); the buffer is the model and its size the model's bytes; misuse
 * (a second call, bad sizes, destroy or a foreign model with a buffer) is
 * RM_E_INVALID_ARGUMENT; a failing loader's buffer is freed; 1.0 loaders
 * still work.
 * Node scope with several contexts of one process: one loader call per
 * namespace, attaches map the same /dev/shm pages (0400, read-only
 * mappings); 1.0 loaders are RM_E_NOT_SHAREABLE; bad keys; a full table;
 * explicit, TTL and LRU eviction node-wide with segments unlinked; rows and
 * counters; registry_reclaim; loader failures; forged table files
 * (RM_E_CORRUPT_STATE, a table of the previous layout among them); the
 * table's lifetime (removed with the last context when nothing is left,
 * kept by an idle model or another context, removed by reclaim, also
 * under threads still loading through the context); configuration; nested
 * loads and cycles (one thread, two contexts, two threads of a context);
 * an 8-thread race.
 * Forked children here only isolate a fault; the registry across processes
 * is test_registry_node_processes.c's.
 *
 * Every test uses its own namespace ("n<pid>x"); the suite's fini destroys
 * the contexts a failed test left and unlinks whatever the namespace has in
 * /dev/shm (node models outlive their contexts by design: TTL decides).
 *
 * Run time (--jobs=2, 2 cores): about 6 s in the default build, about
 * 18 s under ASan+UBSan (84 tests; mostly the start of each test's worker
 * process; the bodies add up to ~3.5 s, the TTL test waits ~0.7 s for a
 * sweep). No test sets its own .timeout: Criterion 2.4's runner then leaks
 * 48 bytes, which LeakSanitizer turns into a failing exit status. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node_table.h"
#include "plugin_fixture.h"
#include "shm_cleanup.h"

#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ------------------------------------------------------------------------ */
/* Fixture: the plugin, a namespace per test, contexts the test opened      */
/* ------------------------------------------------------------------------ */

static char ns[40];          /* this test's registry.namespace */
static char shm_prefix[64];  /* its files as /dev/shm lists them: "rmreg.<ns>." */
static char model_prefix[72]; /* "rmreg.<ns>.m." */
static char table_path[128]; /* /dev/shm/rmreg.<ns>.table */
static uint64_t page_bytes;

/* Unlinks everything of this test's namespace in /dev/shm (files, links,
 * a directory a forgery test made). */
static void remove_namespace_files(void)
{
    shm_unlink_prefix(shm_prefix);
}

static void node_init(void)
{
    fixture_load();
    cr_assert(vt->features_built & RM_FEATURE_MODEL_REGISTRY,
              "the suite is built with model-registry, the plugin lacks it");
    cr_assert_geq(fixture_plugin.abi_version, RM_ABI_VERSION(1, 2),
                  "negotiated %#x, the node registry needs 1.2", fixture_plugin.abi_version);
    cr_assert(RM_PLUGIN_HAS(vt, registry_reclaim), "the 1.2 vtable lacks registry_reclaim");
    snprintf(ns, sizeof ns, "n%ldx", (long)getpid());
    snprintf(shm_prefix, sizeof shm_prefix, "rmreg.%s.", ns);
    snprintf(model_prefix, sizeof model_prefix, "rmreg.%s.m.", ns);
    snprintf(table_path, sizeof table_path, "/dev/shm/rmreg.%s.table", ns);
    page_bytes = (uint64_t)sysconf(_SC_PAGESIZE);
    remove_namespace_files();
}

static void node_fini(void)
{
    fixture_close_all();
    remove_namespace_files();
    fixture_unload();
}

TestSuite(registry_node, .init = node_init, .fini = node_fini, .timeout = 60);

/* Tries a context of `scope` in this test's namespace, registry only, with
 * extra key/value pairs (NULL-terminated, may be NULL; later pairs win). */
static int32_t try_context(const char *scope, const char *const *pairs, rm_context **out)
{
    const char *all[2 * 15 + 1] = {"features",           "model-registry", "registry.scope",
                                   scope,                "registry.namespace", ns};
    size_t n = 6;
    for (size_t i = 0; pairs != NULL && pairs[i] != NULL; i++) {
        cr_assert_lt(n, 2 * 15, "too many configuration pairs");
        all[n++] = pairs[i];
    }
    all[n] = NULL;
    *out = NULL;
    int32_t status = fixture_context(out, all);
    if (status == RM_OK)
        fixture_track(*out);
    return status;
}

static rm_context *open_context(const char *scope, const char *const *pairs)
{
    rm_context *context;
    int32_t status = try_context(scope, pairs, &context);
    cr_assert_eq(status, RM_OK, "context_create (%s scope): %s: %s", scope,
                 vt->error_name(status), vt->context_last_error(NULL));
    return context;
}

static void close_context(rm_context *context)
{
    fixture_close(context);
}

static uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void sleep_ms(unsigned milliseconds)
{
    struct timespec delay = {.tv_sec = milliseconds / 1000,
                             .tv_nsec = (long)(milliseconds % 1000) * 1000000L};
    while (nanosleep(&delay, &delay) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------------ */
/* /dev/shm and /proc/self/maps                                             */
/* ------------------------------------------------------------------------ */

/* Model segments of this namespace: their count (SIZE_MAX if /dev/shm
 * cannot be read); the names in `names` (space-separated) and the mode of
 * the last one in *mode (both optional). */
typedef struct segment_scan {
    shm_name_list list;
    mode_t *mode;
} segment_scan;

static void scan_segment(const char *path, const char *name, void *user)
{
    segment_scan *scan = user;
    if (scan->list.names != NULL)
        shm_name_list_add(path, name, &scan->list);
    if (scan->mode != NULL) {
        struct stat st;
        *scan->mode = stat(path, &st) == 0 ? st.st_mode : 0;
    }
}

static size_t model_segments(char *names, size_t size, mode_t *mode)
{
    if (names != NULL)
        names[0] = '\0';
    /* Loaders call this too, on the plugin's stack: no assertion here. */
    segment_scan scan = {.list = {.names = names, .size = size}, .mode = mode};
    long count = shm_each_prefix(model_prefix, scan_segment, &scan);
    return count < 0 ? SIZE_MAX : (size_t)count;
}

static int table_exists(void)
{
    struct stat st;
    return lstat(table_path, &st) == 0;
}

/* The line of /proc/self/maps that covers `address`: its permissions
 * ("r--s") and path. Returns 1 if found. */
static int mapping_of(const void *address, char perms[8], char path[512])
{
    FILE *maps = fopen("/proc/self/maps", "r");
    cr_assert_not_null(maps);
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, maps) != NULL) {
        unsigned long start, end;
        char p[8] = "", name[512] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %511[^\n]", &start, &end, p, name) < 3)
            continue;
        if ((uintptr_t)address >= start && (uintptr_t)address < end) {
            found = 1;
            snprintf(perms, 8, "%s", p);
            snprintf(path, 512, "%s", name);
        }
    }
    fclose(maps);
    return found;
}

/* Mappings of this namespace's model segments in this process. */
static int model_mappings(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    cr_assert_not_null(maps);
    char line[1024];
    int count = 0;
    while (fgets(line, sizeof line, maps) != NULL)
        count += strstr(line, model_prefix) != NULL;
    fclose(maps);
    return count;
}

static void no_core_dumps(void)
{
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
}

/* A child that writes one byte at `address`, with the default SIGSEGV
 * action (a sanitizer's handler would turn the fault into an exit code).
 * Returns its wait status. */
static int status_of_a_write(const void *address)
{
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0, "fork: %s", strerror(errno));
    if (child == 0) {
        no_core_dumps();
        struct sigaction default_action = {.sa_handler = SIG_DFL};
        sigaction(SIGSEGV, &default_action, NULL);
        sigaction(SIGBUS, &default_action, NULL);
        volatile uint8_t *byte = (volatile uint8_t *)(uintptr_t)address;
        *byte = (uint8_t)(*byte + 1);
        _exit(0);
    }
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    return status;
}

static void expect_write_faults(const void *address, const char *what)
{
    int status = status_of_a_write(address);
    cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
              "%s: a write through the model: status %#x, expected SIGSEGV", what, status);
}

/* ------------------------------------------------------------------------ */
/* Loaders                                                                  */
/* ------------------------------------------------------------------------ */

enum model_choice {
    MODEL_LEAVE_NULL, /* the documented way with a buffer */
    MODEL_BUFFER,     /* allowed: model set to the buffer */
    MODEL_OTHER,      /* misuse: some other pointer */
};

/* What a loader does, and what it saw. Shared with loader threads: the
 * counters are atomic, the rest is written by the one loader call. */
typedef struct load_plan {
    int legacy;         /* a 1.0 loader: a private model, no buffer */
    uint64_t bytes;     /* alloc_buffer size */
    uint8_t seed;       /* pattern written into the buffer */
    int32_t result;     /* what the loader returns */
    int model_choice;   /* enum model_choice */
    int set_destroy;    /* with a buffer: also set destroy (misuse) */
    int alloc_twice;    /* call alloc_buffer again and return its code */
    unsigned delay_ms;  /* sleep before returning */
    int gated;          /* signal the gate and wait for it to open */
    /* A nested get_or_load after the buffer is filled; its failure is
     * returned, its model's first byte is stored at buffer[1]. */
    rm_context *nested_context;
    char nested_key[64];
    struct load_plan *nested;
    int32_t nested_status;

    atomic_int calls;
    atomic_int destroys;
    int has_buffer;      /* RM_LOADED_MODEL_HAS_BUFFER(out) */
    int32_t alloc_status;
    void *buffer;        /* from alloc_buffer (NULL if it failed) */
    int buffer_zeroed, buffer_aligned;
    size_t segments_during; /* this namespace's model segments while loading */
    char key_seen[RM_MODEL_KEY_MAX];
    int32_t second_status;
    void *second_buffer;
    int legacy_object;   /* the model of a 1.0 loader */
} load_plan;

static struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int entered, open;
} gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void gate_wait_entered(void)
{
    pthread_mutex_lock(&gate.mutex);
    while (!gate.entered)
        pthread_cond_wait(&gate.cond, &gate.mutex);
    pthread_mutex_unlock(&gate.mutex);
}

static void gate_open(void)
{
    pthread_mutex_lock(&gate.mutex);
    gate.open = 1;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.mutex);
}

static void count_destroy(void *model, void *user)
{
    atomic_fetch_add(&((load_plan *)user)->destroys, 1);
}

/* The pattern: every byte `seed`, and each page starts with its index. */
static void fill_pattern(uint8_t *buffer, uint64_t bytes, uint8_t seed)
{
    memset(buffer, seed, bytes);
    for (uint64_t offset = 0; offset + sizeof(uint64_t) <= bytes; offset += page_bytes) {
        uint64_t stamp = offset / page_bytes;
        memcpy(buffer + offset, &stamp, sizeof stamp);
    }
}

static int pattern_is(const void *model, uint64_t bytes, uint8_t seed)
{
    const uint8_t *data = model;
    for (uint64_t offset = 0; offset + sizeof(uint64_t) <= bytes; offset += page_bytes) {
        uint64_t stamp;
        memcpy(&stamp, data + offset, sizeof stamp);
        if (stamp != offset / page_bytes)
            return 0;
        uint64_t probe = offset + page_bytes / 2;
        if (probe < bytes && data[probe] != seed)
            return 0;
    }
    return data[bytes - 1] == seed || bytes <= sizeof(uint64_t);
}

static int all_zero(const uint8_t *data, uint64_t bytes)
{
    for (uint64_t i = 0; i < bytes; i++)
        if (data[i] != 0)
            return 0;
    return 1;
}

static int32_t plan_loader(void *user, const char *key, rm_loaded_model *out)
{
    load_plan *plan = user;
    atomic_fetch_add(&plan->calls, 1);
    snprintf(plan->key_seen, sizeof plan->key_seen, "%s", key);
    if (plan->gated) {
        pthread_mutex_lock(&gate.mutex);
        gate.entered = 1;
        pthread_cond_broadcast(&gate.cond);
        while (!gate.open)
            pthread_cond_wait(&gate.cond, &gate.mutex);
        pthread_mutex_unlock(&gate.mutex);
    }
    if (plan->delay_ms > 0)
        sleep_ms(plan->delay_ms);
    plan->has_buffer = RM_LOADED_MODEL_HAS_BUFFER(out);

    if (plan->legacy) { /* the 1.0 way: a private pointer */
        out->model = &plan->legacy_object;
        out->bytes = 123;
        out->destroy = count_destroy;
        out->destroy_user = plan;
        return plan->result;
    }
    if (!plan->has_buffer)
        return RM_E_INVALID_ARGUMENT;
    void *buffer = (void *)&plan->legacy_object; /* must be reset to NULL on failure */
    plan->alloc_status = out->alloc_buffer(out, plan->bytes, &buffer);
    plan->buffer = buffer;
    if (plan->alloc_status != RM_OK)
        return plan->alloc_status;
    plan->buffer_aligned = (uintptr_t)buffer % page_bytes == 0;
    plan->buffer_zeroed = all_zero(buffer, plan->bytes);
    plan->segments_during = model_segments(NULL, 0, NULL);
    fill_pattern(buffer, plan->bytes, plan->seed);
    if (plan->alloc_twice) {
        void *second = (void *)&plan->legacy_object;
        plan->second_status = out->alloc_buffer(out, plan->bytes, &second);
        plan->second_buffer = second;
        return plan->second_status;
    }
    if (plan->nested_context != NULL) {
        rm_model_handle *handle = NULL;
        void *model = NULL;
        plan->nested_status = vt->model_get_or_load(plan->nested_context, plan->nested_key,
                                                    plan_loader, plan->nested, &handle, &model);
        if (plan->nested_status != RM_OK)
            return plan->nested_status;
        if (plan->bytes > 1)
            ((uint8_t *)buffer)[1] = ((const uint8_t *)model)[page_bytes / 2];
        vt->model_release(plan->nested_context, handle);
    }
    if (plan->model_choice == MODEL_BUFFER)
        out->model = buffer;
    else if (plan->model_choice == MODEL_OTHER)
        out->model = &plan->legacy_object;
    if (plan->set_destroy) {
        out->destroy = count_destroy;
        out->destroy_user = plan;
    }
    out->bytes = 7; /* ignored with a buffer */
    return plan->result;
}

static load_plan buffer_plan(uint64_t bytes, uint8_t seed)
{
    return (load_plan){.bytes = bytes, .seed = seed, .result = RM_OK};
}

static int calls(load_plan *plan)
{
    return atomic_load(&plan->calls);
}

static int32_t get(rm_context *context, const char *key, load_plan *plan,
                   rm_model_handle **handle, void **model)
{
    *handle = (rm_model_handle *)(uintptr_t)1;
    *model = (void *)(uintptr_t)1;
    return vt->model_get_or_load(context, key, plan_loader, plan, handle, model);
}

/* get() that must succeed. */
static void *get_ok(rm_context *context, const char *key, load_plan *plan,
                    rm_model_handle **handle)
{
    void *model;
    int32_t status = get(context, key, plan, handle, &model);
    cr_assert_eq(status, RM_OK, "get_or_load(%s): %s: %s", key, vt->error_name(status),
                 vt->context_last_error(context));
    cr_assert_not_null(model);
    return model;
}

static void release(rm_context *context, rm_model_handle *handle)
{
    cr_assert_eq(vt->model_release(context, handle), RM_OK, "%s",
                 vt->context_last_error(context));
}

static uint32_t list_rows(rm_context *context, rm_model_info *rows, uint32_t capacity)
{
    for (uint32_t i = 0; i < capacity; i++)
        rows[i] = (rm_model_info)RM_STRUCT_INIT(rm_model_info);
    uint32_t count = UINT32_MAX;
    int32_t status = vt->registry_list(context, rows, sizeof *rows, capacity, &count);
    cr_assert_eq(status, RM_OK, "registry_list: %s: %s", vt->error_name(status),
                 vt->context_last_error(context));
    return count;
}

static rm_registry_metrics metrics_of(rm_context *context)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    cr_assert_eq(vt->registry_metrics(context, &metrics), RM_OK);
    return metrics;
}

/* A failed call leaves no entry, no segment and no mapping. */
static void expect_nothing_left(rm_context *context, const char *when)
{
    rm_model_info rows[4];
    cr_expect_eq(list_rows(context, rows, 4), 0, "%s: entries left", when);
    char names[1024];
    cr_expect_eq(model_segments(names, sizeof names, NULL), 0, "%s: segments left: %s", when,
                 names);
    cr_expect_eq(model_mappings(), 0, "%s: model segments still mapped", when);
}

/* ------------------------------------------------------------------------ */
/* Loader buffers in process scope                                          */
/* ------------------------------------------------------------------------ */

Test(registry_node, process_scope_buffer_is_zeroed_aligned_and_sealed)
{
    rm_context *context = open_context("process", NULL);
    const uint64_t size = 3 * 4096 + 5; /* not a page multiple */
    load_plan plan = buffer_plan(size, 0x5a);
    rm_model_handle *handle;
    void *model = get_ok(context, "buffered@cpu", &plan, &handle);
    cr_expect(plan.has_buffer, "RM_LOADED_MODEL_HAS_BUFFER is false in a 1.2 plugin");
    cr_assert_eq(plan.alloc_status, RM_OK);
    cr_expect(plan.buffer_aligned, "buffer %p is not page-aligned", plan.buffer);
    cr_expect(plan.buffer_zeroed, "the buffer was not zero-filled");
    cr_expect_eq(model, plan.buffer, "*out_model %p is not the buffer %p", model, plan.buffer);
    cr_expect(pattern_is(model, size, 0x5a));
    cr_expect_eq(plan.segments_during, 0, "process scope made a /dev/shm segment");

    rm_model_info row;
    cr_assert_eq(list_rows(context, &row, 1), 1);
    cr_expect_eq(row.bytes, size, "bytes is the buffer's size, not the loader's 7");
    cr_expect_eq(row.scope, RM_REGISTRY_SCOPE_PROCESS);
    cr_expect_eq(vt->model_evict(context, "buffered@cpu"), RM_E_BUSY);

    char perms[8], path[512];
    cr_assert(mapping_of(model, perms, path), "the model is not mapped");
    cr_expect_eq(perms[0], 'r', "%s", perms);
    cr_expect_eq(perms[1], '-', "sealed, yet mapped %s", perms);
    cr_expect(mapping_of((const uint8_t *)model + size - 1, perms, path));
    cr_expect_eq(perms[1], '-', "the last byte's page is mapped %s", perms);
    expect_write_faults(model, "first byte");
    expect_write_faults((const uint8_t *)model + size - 1, "last byte");

    /* The same instance on a hit; eviction frees the buffer (no destroy). */
    rm_model_handle *again;
    cr_expect_eq(get_ok(context, "buffered@cpu", &plan, &again), model);
    cr_expect_eq(calls(&plan), 1);
    release(context, again);
    release(context, handle);
    cr_expect_eq(vt->model_evict(context, "buffered@cpu"), RM_OK);
    cr_expect_eq(atomic_load(&plan.destroys), 0);
    cr_expect_eq(list_rows(context, &row, 1), 0);
    cr_expect_not(table_exists(), "process scope made a node table");
}

Test(registry_node, a_second_alloc_buffer_call_is_rejected)
{
    const char *scopes[] = {"process", "node"};
    for (int s = 0; s < 2; s++) {
        rm_context *context = open_context(scopes[s], NULL);
        load_plan plan = buffer_plan(8192, 1);
        plan.alloc_twice = 1;
        rm_model_handle *handle;
        void *model;
        cr_expect_eq(get(context, "twice@cpu", &plan, &handle, &model), RM_E_INVALID_ARGUMENT,
                     "%s scope", scopes[s]);
        cr_expect_eq(plan.alloc_status, RM_OK);
        cr_expect_eq(plan.second_status, RM_E_INVALID_ARGUMENT, "%s scope: second call: %s",
                     scopes[s], vt->error_name(plan.second_status));
        cr_expect_null(plan.second_buffer, "%s scope: *out_buffer not NULL on failure",
                       scopes[s]);
        cr_expect_null(handle);
        cr_expect_null(model);
        expect_nothing_left(context, scopes[s]);
        close_context(context);
    }
}

struct bad_size_case {
    char scope[8];
    uint64_t bytes;
};

ParameterizedTestParameters(registry_node, alloc_buffer_rejects_bad_sizes)
{
    static struct bad_size_case cases[] = {
        {"process", 0},
        {"process", ((uint64_t)1 << 48) + 1},
        {"process", UINT64_MAX},
        {"node", 0},
        {"node", ((uint64_t)1 << 48) + 1},
        {"node", UINT64_MAX},
    };
    return cr_make_param_array(struct bad_size_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_size_case *c, registry_node, alloc_buffer_rejects_bad_sizes)
{
    rm_context *context = open_context(c->scope, NULL);
    load_plan plan = buffer_plan(c->bytes, 1);
    rm_model_handle *handle;
    void *model;
    cr_expect_eq(get(context, "size@cpu", &plan, &handle, &model), RM_E_INVALID_ARGUMENT);
    cr_expect_eq(plan.alloc_status, RM_E_INVALID_ARGUMENT, "%s scope, %" PRIu64 " bytes: %s",
                 c->scope, c->bytes, vt->error_name(plan.alloc_status));
    cr_expect_null(plan.buffer, "*out_buffer not NULL on failure");
    expect_nothing_left(context, "after a bad size");
    /* The next load of the key runs its loader again and works. */
    load_plan good = buffer_plan(4096, 2);
    rm_model_handle *ok;
    get_ok(context, "size@cpu", &good, &ok);
    cr_expect_eq(calls(&good), 1);
    release(context, ok);
}

/* Resident pages of this process. */
static uint64_t resident_bytes(void)
{
    FILE *statm = fopen("/proc/self/statm", "r");
    cr_assert_not_null(statm);
    unsigned long size = 0, resident = 0;
    cr_assert_eq(fscanf(statm, "%lu %lu", &size, &resident), 2);
    fclose(statm);
    return (uint64_t)resident * page_bytes;
}

Test(registry_node, a_failing_loader_in_process_scope_gets_its_code_and_frees_the_buffer)
{
    rm_context *context = open_context("process", NULL);
    const uint64_t size = 8 * MIB;
    load_plan plan = buffer_plan(size, 0x33);
    plan.result = -4321;
    rm_model_handle *handle;
    void *model;
    cr_expect_eq(get(context, "fails@cpu", &plan, &handle, &model), -4321);
    cr_expect_null(handle);
    cr_expect_null(model);
    cr_assert_eq(plan.alloc_status, RM_OK);
    uint64_t baseline = resident_bytes();
    for (int i = 0; i < 6; i++) {
        cr_expect_eq(get(context, "fails@cpu", &plan, &handle, &model), -4321);
    }
    cr_expect_eq(calls(&plan), 7, "no entry is left: every call runs the loader");
    /* Each load touched 8 MiB: kept buffers would add 48 MiB. (Under ASan
     * freed memory sits in the quarantine; LeakSanitizer checks there.) */
    if (!UNDER_ASAN) {
        uint64_t after = resident_bytes();
        cr_expect_lt(after, baseline + size, "resident %" PRIu64 " -> %" PRIu64
                                             " bytes after 6 failed loads of 8 MiB",
                     baseline, after);
    }
    /* A positive code becomes RM_E_LOADER_FAILED. */
    plan.result = 5;
    cr_expect_eq(get(context, "fails@cpu", &plan, &handle, &model), RM_E_LOADER_FAILED);
    rm_model_info row;
    cr_expect_eq(list_rows(context, &row, 1), 0);
}

struct misuse_case {
    char scope[8];
    int model_choice;
    int set_destroy;
    int32_t code;
};

ParameterizedTestParameters(registry_node, buffer_with_destroy_or_a_foreign_model)
{
    static struct misuse_case cases[] = {
        {"process", MODEL_BUFFER, 0, RM_OK},
        {"process", MODEL_OTHER, 0, RM_E_INVALID_ARGUMENT},
        {"process", MODEL_LEAVE_NULL, 1, RM_E_INVALID_ARGUMENT},
        {"process", MODEL_BUFFER, 1, RM_E_INVALID_ARGUMENT},
        {"node", MODEL_BUFFER, 0, RM_OK},
        {"node", MODEL_OTHER, 0, RM_E_INVALID_ARGUMENT},
        {"node", MODEL_LEAVE_NULL, 1, RM_E_INVALID_ARGUMENT},
    };
    return cr_make_param_array(struct misuse_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct misuse_case *c, registry_node, buffer_with_destroy_or_a_foreign_model)
{
    rm_context *context = open_context(c->scope, NULL);
    load_plan plan = buffer_plan(3 * 4096, 9);
    plan.model_choice = c->model_choice;
    plan.set_destroy = c->set_destroy;
    rm_model_handle *handle;
    void *model;
    int32_t status = get(context, "misuse@cpu", &plan, &handle, &model);
    cr_expect_eq(status, c->code, "%s scope, model %d, destroy %d: %s: %s", c->scope,
                 c->model_choice, c->set_destroy, vt->error_name(status),
                 vt->context_last_error(context));
    if (status == RM_OK) {
        cr_expect(pattern_is(model, 3 * 4096, 9));
        release(context, handle);
        cr_expect_eq(vt->model_evict(context, "misuse@cpu"), RM_OK);
    } else {
        cr_expect_null(handle);
        cr_expect_null(model);
        const char *message = vt->context_last_error(context);
        cr_expect(strstr(message, "buffer") != NULL && strstr(message, "misuse@cpu") != NULL,
                  "%s scope: the message names the key and the buffer rule: %s", c->scope,
                  message);
    }
    expect_nothing_left(context, "after the load or its eviction");
}

Test(registry_node, a_loader_without_buffer_still_works_in_process_scope)
{
    rm_context *context = open_context("process", NULL);
    load_plan plan = {.legacy = 1, .result = RM_OK};
    rm_model_handle *handle;
    void *model = get_ok(context, "legacy@cpu", &plan, &handle);
    cr_expect(plan.has_buffer, "1.2 offers a buffer even to a loader that ignores it");
    cr_expect_eq(model, &plan.legacy_object);
    rm_model_info row;
    cr_assert_eq(list_rows(context, &row, 1), 1);
    cr_expect_eq(row.bytes, 123);
    release(context, handle);
    cr_expect_eq(vt->model_evict(context, "legacy@cpu"), RM_OK);
    cr_expect_eq(atomic_load(&plan.destroys), 1, "destroy runs once on eviction");
}

Test(registry_node, process_is_the_default_scope_and_contexts_share_nothing)
{
    rm_context *first, *second;
    const char *pairs[] = {"features", "model-registry", "registry.namespace", ns, NULL};
    cr_assert_eq(fixture_context(&first, pairs), RM_OK, "%s", vt->context_last_error(NULL));
    fixture_track(first);
    cr_assert_eq(fixture_context(&second, pairs), RM_OK);
    fixture_track(second);
    char value[64];
    cr_assert_eq(vt->config_get(first, "registry.scope", value, sizeof value, NULL), RM_OK);
    cr_expect_str_eq(value, "process");
    load_plan plan = buffer_plan(4096, 3);
    rm_model_handle *a, *b;
    void *model_a = get_ok(first, "private@cpu", &plan, &a);
    void *model_b = get_ok(second, "private@cpu", &plan, &b);
    cr_expect_eq(calls(&plan), 2, "process scope: one load per context");
    cr_expect_neq(model_a, model_b);
    cr_expect_not(table_exists(), "process scope made a node table");
    cr_expect_eq(model_segments(NULL, 0, NULL), 0);
    release(first, a);
    release(second, b);
}

/* ------------------------------------------------------------------------ */
/* Node scope: one load per namespace                                       */
/* ------------------------------------------------------------------------ */

Test(registry_node, two_contexts_of_a_namespace_share_one_load)
{
    rm_context *first = open_context("node", NULL);
    rm_context *second = open_context("node", NULL);
    struct stat st;
    cr_assert_eq(lstat(table_path, &st), 0, "no table at %s", table_path);
    cr_expect(S_ISREG(st.st_mode));
    cr_expect_eq(st.st_mode & 07777, 0600, "table mode %o", st.st_mode & 07777);
    cr_expect_eq(st.st_uid, geteuid());

    const uint64_t size = 64 * KIB + 100;
    load_plan plan = buffer_plan(size, 0xc3);
    load_plan never = buffer_plan(size, 0x11);
    rm_model_handle *h1, *h2;
    void *m1 = get_ok(first, "shared@CPU", &plan, &h1);
    cr_expect_eq(calls(&plan), 1);
    cr_expect_str_eq(plan.key_seen, "shared@cpu", "the loader gets the normalised key");
    cr_expect(plan.buffer_aligned && plan.buffer_zeroed, "aligned %d, zeroed %d",
              plan.buffer_aligned, plan.buffer_zeroed);
    cr_expect_eq(plan.segments_during, 1, "alloc_buffer made one segment");
    void *m2 = get_ok(second, "shared@cpu", &never, &h2);
    cr_expect_eq(calls(&never), 0, "the second context attached without a loader call");
    cr_expect(pattern_is(m2, size, 0xc3), "the loader's bytes are visible to the attacher");
    cr_expect(pattern_is(m1, size, 0xc3));

    /* One sealed segment; both models are read-only shared mappings of it. */
    char names[512];
    mode_t mode = 0;
    cr_assert_eq(model_segments(names, sizeof names, &mode), 1, "segments: %s", names);
    cr_expect_eq(mode & 07777, 0400, "sealed segment mode %o", mode & 07777);
    char hex[32];
    cr_expect_eq(sscanf(names + strlen(model_prefix), "%31[0-9a-f]", hex), 1, "%s", names);
    cr_expect_eq(strlen(hex), 16, "segment name %s", names);
    char perms1[8], path1[512], perms2[8], path2[512];
    cr_assert(mapping_of(m1, perms1, path1));
    cr_assert(mapping_of(m2, perms2, path2));
    cr_expect(strstr(path1, model_prefix) != NULL, "the loader's model maps %s", path1);
    cr_expect_str_eq(path1, path2, "both contexts map the same segment");
    cr_expect_str_eq(perms1, "r--s");
    cr_expect_str_eq(perms2, "r--s");
    expect_write_faults(m1, "the loader's context");
    expect_write_faults(m2, "the attaching context");
    expect_write_faults((const uint8_t *)m2 + size - 1, "the attacher's last byte");

    rm_registry_metrics one = metrics_of(first), two = metrics_of(second);
    cr_expect_eq(one.loads, 1);
    cr_expect_eq(one.attaches, 0);
    cr_expect_eq(two.loads, 0);
    cr_expect_eq(two.attaches, 1);
    cr_expect_eq(two.models, 1, "models counts the node table");
    cr_expect_eq(two.bytes, size);

    rm_model_info row;
    cr_assert_eq(list_rows(second, &row, 1), 1);
    cr_expect_str_eq(row.key, "shared@cpu");
    cr_expect_eq(row.scope, RM_REGISTRY_SCOPE_NODE);
    cr_expect_eq(row.state, RM_MODEL_STATE_READY);
    cr_expect_eq(row.holders, 1, "one process holds it");
    cr_expect_eq(row.refcount, 2, "each holding context adds one");
    cr_expect_eq(row.bytes, size);
    cr_expect_eq(row.loader_pid, 0);
    cr_expect_eq(row.idle_ns, 0, "held: not idle");

    /* A context that already holds the model answers from its reference. */
    rm_model_handle *h3;
    cr_expect_eq(get_ok(second, "shared@cpu", &never, &h3), m2);
    cr_expect_eq(metrics_of(second).hits, 1);
    release(second, h3);

    release(first, h1);
    release(second, h2);
    cr_expect_eq(model_mappings(), 0, "a context's mapping ends with its last handle");
    sleep_ms(20);
    cr_assert_eq(list_rows(first, &row, 1), 1, "idle, still loaded (ttl 30 s)");
    cr_expect_eq(row.refcount, 0);
    cr_expect_eq(row.holders, 0);
    cr_expect_geq(row.idle_ns, 10 * 1000000ull, "idle for 20 ms: idle_ns %" PRIu64, row.idle_ns);
    cr_expect_eq(model_segments(NULL, 0, NULL), 1);

    /* Attaching again later maps the same pages: still no loader call. */
    rm_model_handle *h4;
    void *m4 = get_ok(first, "shared@cpu", &never, &h4);
    cr_expect(pattern_is(m4, size, 0xc3));
    cr_expect_eq(calls(&plan) + calls(&never), 1);
    release(first, h4);
}

Test(registry_node, a_loader_without_buffer_is_not_shareable)
{
    rm_context *context = open_context("node", NULL);
    load_plan legacy = {.legacy = 1, .result = RM_OK};
    rm_model_handle *handle;
    void *model;
    int32_t status = get(context, "legacy@cpu", &legacy, &handle, &model);
    cr_expect_eq(status, RM_E_NOT_SHAREABLE, "%s", vt->error_name(status));
    cr_expect_null(handle);
    cr_expect_null(model);
    cr_expect(legacy.has_buffer, "node scope offers a buffer");
    cr_expect_eq(atomic_load(&legacy.destroys), 1, "its destroy was called, nothing leaks");
    const char *message = vt->context_last_error(context);
    cr_expect(strstr(message, "alloc_buffer") != NULL,
              "the message says how to fix the loader: %s", message);
    expect_nothing_left(context, "after NOT_SHAREABLE");
    load_plan good = buffer_plan(4096, 4);
    get_ok(context, "legacy@cpu", &good, &handle);
    cr_expect_eq(calls(&good), 1);
    release(context, handle);
}

struct key_case {
    char key[320];
};

ParameterizedTestParameters(registry_node, bad_and_overlong_keys_are_refused)
{
    static struct key_case cases[] = {
        {""},           {"no-device"},   {"a@b@cpu"},   {"@cpu"},          {"m@"},
        {"m@gpu"},      {"m@cuda:1024"}, {"m@cuda:-1"}, {"sp ace@cpu"},    {"m!@cpu"},
        {"caf\xc3\xa9@cpu"}, {"name"},   {"x"}, /* name of 201 bytes and a key of 300: below */
    };
    size_t count = sizeof cases / sizeof cases[0];
    memset(cases[count - 2].key, 'n', 201);
    strcpy(cases[count - 2].key + 201, "@cpu");
    memset(cases[count - 1].key, 'k', 296);
    strcpy(cases[count - 1].key + 296, "@cpu");
    return cr_make_param_array(struct key_case, cases, count);
}

ParameterizedTest(struct key_case *c, registry_node, bad_and_overlong_keys_are_refused)
{
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 5);
    rm_model_handle *handle;
    void *model;
    int32_t status = get(context, c->key, &plan, &handle, &model);
    cr_expect_eq(status, RM_E_INVALID_KEY, "'%.40s' (%zu bytes): %s", c->key, strlen(c->key),
                 vt->error_name(status));
    cr_expect_null(handle);
    cr_expect_null(model);
    cr_expect_eq(calls(&plan), 0);
    cr_expect_neq(vt->context_last_error(context)[0], '\0', "no message");
    cr_expect_eq(vt->model_evict(context, c->key), RM_E_INVALID_KEY);
    expect_nothing_left(context, "after a bad key");
}

Test(registry_node, the_longest_valid_key_works)
{
    rm_context *context = open_context("node", NULL);
    char key[RM_MODEL_KEY_MAX];
    memset(key, 'n', 200);
    strcpy(key + 200, "@cuda:1023");
    load_plan plan = buffer_plan(4096, 6);
    rm_model_handle *handle;
    get_ok(context, key, &plan, &handle);
    rm_model_info row;
    cr_assert_eq(list_rows(context, &row, 1), 1);
    cr_expect_str_eq(row.key, key);
    cr_expect_str_eq(row.device, "cuda:1023");
    release(context, handle);
}

/* ------------------------------------------------------------------------ */
/* Node scope: a full table, eviction                                       */
/* ------------------------------------------------------------------------ */

Test(registry_node, a_full_table_is_quota_exceeded_until_an_entry_is_idle)
{
    rm_context *context = open_context("node", (const char *[]){"registry.table_entries", "4",
                                                                 NULL});
    load_plan plans[5];
    rm_model_handle *handles[5];
    char key[32];
    for (int i = 0; i < 4; i++) {
        plans[i] = buffer_plan(4096, (uint8_t)(10 + i));
        snprintf(key, sizeof key, "held%d@cpu", i);
        get_ok(context, key, &plans[i], &handles[i]);
    }
    plans[4] = buffer_plan(4096, 14);
    void *model;
    int32_t status = get(context, "fifth@cpu", &plans[4], &handles[4], &model);
    cr_expect_eq(status, RM_E_QUOTA_EXCEEDED, "%s", vt->error_name(status));
    cr_expect_null(handles[4]);
    cr_expect_eq(calls(&plans[4]), 0, "no loader call without a table entry");
    const char *message = vt->context_last_error(context);
    cr_expect(strstr(message, "table") != NULL, "the message names the table: %s", message);
    rm_model_info rows[8];
    cr_expect_eq(list_rows(context, rows, 8), 4);
    cr_expect_eq(model_segments(NULL, 0, NULL), 4);

    /* The table keeps the size it was created with. */
    rm_context *later = open_context("node", (const char *[]){"registry.table_entries", "64",
                                                               NULL});
    cr_expect_eq(get(later, "fifth@cpu", &plans[4], &handles[4], &model), RM_E_QUOTA_EXCEEDED);

    /* An idle entry is evicted to make room. */
    release(context, handles[1]);
    get_ok(later, "fifth@cpu", &plans[4], &handles[4]);
    cr_expect_eq(calls(&plans[4]), 1);
    cr_expect_eq(list_rows(context, rows, 8), 4);
    for (uint32_t i = 0; i < 4; i++)
        cr_expect_str_neq(rows[i].key, "held1@cpu", "the idle model was evicted");
    cr_expect_eq(model_segments(NULL, 0, NULL), 4, "its segment was unlinked");
    release(later, handles[4]);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            release(context, handles[i]);
}

Test(registry_node, evict_is_busy_while_held_and_unlinks_after)
{
    rm_context *first = open_context("node", NULL);
    rm_context *second = open_context("node", NULL);
    load_plan plan = buffer_plan(8192, 7);
    rm_model_handle *handle;
    get_ok(first, "evict@cpu", &plan, &handle);
    cr_expect_eq(vt->model_evict(first, "evict@cpu"), RM_E_BUSY);
    cr_expect_eq(vt->model_evict(second, "evict@cpu"), RM_E_BUSY, "held in another context");
    cr_expect_eq(vt->model_evict(second, NULL), RM_OK, "NULL evicts only idle models");
    cr_expect_eq(model_segments(NULL, 0, NULL), 1, "a held model survives");
    cr_expect_eq(vt->model_evict(second, "never-loaded@cpu"), RM_E_NOT_FOUND);
    release(first, handle);
    cr_expect_eq(vt->model_evict(second, "evict@CPU"), RM_OK, "%s",
                 vt->context_last_error(second));
    cr_expect_eq(metrics_of(second).evictions_explicit, 1);
    expect_nothing_left(first, "after an explicit eviction");
    cr_expect_eq(vt->model_evict(first, "evict@cpu"), RM_E_NOT_FOUND);
    get_ok(first, "evict@cpu", &plan, &handle);
    cr_expect_eq(calls(&plan), 2, "evicted node-wide: loaded again");
    release(first, handle);

    /* NULL evicts every idle model of the table, loaded by anyone. */
    load_plan other = buffer_plan(4096, 8);
    get_ok(second, "other@cpu", &other, &handle);
    release(second, handle);
    cr_expect_eq(vt->model_evict(first, NULL), RM_OK);
    expect_nothing_left(first, "after evicting everything idle");
}

/* Waits up to `timeout_ms` for this namespace's model segments to number
 * `count`. */
static int wait_for_segments(size_t count, unsigned timeout_ms)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (model_segments(NULL, 0, NULL) != count) {
        if (now_ns() > deadline)
            return 0;
        sleep_ms(10);
    }
    return 1;
}

Test(registry_node, ttl_evicts_node_wide_only_what_nobody_holds)
{
    const char *ttl[] = {"registry.ttl_s", "0.2", NULL};
    rm_context *loader = open_context("node", ttl);
    rm_context *sweeper = open_context("node", ttl);
    load_plan plan = buffer_plan(8192, 9);
    rm_model_handle *handle;
    get_ok(loader, "ttl@cpu", &plan, &handle);
    sleep_ms(500);
    cr_expect_eq(model_segments(NULL, 0, NULL), 1, "held for 2.5 TTLs: still there");
    release(loader, handle);
    /* The loading context goes away: the other one's sweep evicts. */
    close_context(loader);
    uint64_t released = now_ns();
    cr_expect(wait_for_segments(0, 3000), "not evicted 3 s after its 0.2 s TTL");
    cr_expect_geq(now_ns() - released, 150 * 1000000ull, "evicted before its TTL");
    expect_nothing_left(sweeper, "after TTL eviction");
    rm_registry_metrics metrics = metrics_of(sweeper);
    cr_expect_eq(metrics.evictions_ttl, 1, "the sweeping context made the eviction");
    cr_expect_eq(metrics.models, 0);
}

Test(registry_node, max_bytes_evicts_idle_models_in_lru_order_node_wide)
{
    const char *budget[] = {"registry.max_bytes", "3M", NULL};
    rm_context *first = open_context("node", budget);
    rm_context *second = open_context("node", budget);
    load_plan a = buffer_plan(MIB, 1), b = buffer_plan(MIB, 2), c = buffer_plan(MIB, 3),
              d = buffer_plan(MIB, 4);
    rm_model_handle *handle, *held;
    get_ok(first, "a@cpu", &a, &handle);
    release(first, handle);
    sleep_ms(2);
    get_ok(first, "b@cpu", &b, &held); /* held: never evicted */
    sleep_ms(2);
    get_ok(second, "c@cpu", &c, &handle);
    release(second, handle);
    sleep_ms(2);
    cr_expect_eq(model_segments(NULL, 0, NULL), 3);
    get_ok(second, "d@cpu", &d, &handle);
    rm_model_info rows[8];
    uint32_t count = list_rows(second, rows, 8);
    cr_expect_eq(count, 3);
    for (uint32_t i = 0; i < count && i < 8; i++)
        cr_expect_str_neq(rows[i].key, "a@cpu", "the least recently used model stayed");
    cr_expect_eq(model_segments(NULL, 0, NULL), 3, "the evicted segment was unlinked");
    rm_registry_metrics metrics = metrics_of(second);
    cr_expect_eq(metrics.evictions_lru, 1, "the admitting context evicted first's model");
    cr_expect_eq(metrics.bytes, 3 * MIB);
    release(second, handle);
    /* b is held and the least recently used now: admitting e evicts c. */
    load_plan e = buffer_plan(MIB, 5);
    get_ok(first, "e@cpu", &e, &handle);
    count = list_rows(first, rows, 8);
    int have_b = 0, have_c = 0;
    for (uint32_t i = 0; i < count && i < 8; i++) {
        have_b |= strcmp(rows[i].key, "b@cpu") == 0;
        have_c |= strcmp(rows[i].key, "c@cpu") == 0;
    }
    cr_expect(have_b, "a held model was evicted");
    cr_expect_not(have_c, "c should have gone");
    release(first, handle);
    release(first, held);
}

/* ------------------------------------------------------------------------ */
/* Rows, counters, reclaim                                                  */
/* ------------------------------------------------------------------------ */

struct loading_call {
    rm_context *context;
    load_plan *plan;
    int32_t status;
    rm_model_handle *handle;
    void *model;
};

static void *load_on_a_thread(void *arg)
{
    struct loading_call *call = arg;
    call->status = get(call->context, "gated@cpu", call->plan, &call->handle, &call->model);
    return NULL;
}

Test(registry_node, node_rows_show_loading_ready_holders_and_idle_time)
{
    rm_context *first = open_context("node", NULL);
    rm_context *second = open_context("node", NULL);
    load_plan plan = buffer_plan(4 * KIB, 12);
    plan.gated = 1;
    struct loading_call call = {.context = first, .plan = &plan};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, load_on_a_thread, &call), 0);
    gate_wait_entered();
    rm_model_info row;
    uint32_t count = list_rows(second, &row, 1);
    cr_expect_eq(count, 1, "a loading entry is listed");
    if (count == 1) {
        cr_expect_str_eq(row.key, "gated@cpu");
        cr_expect_eq(row.state, RM_MODEL_STATE_LOADING);
        cr_expect_eq(row.scope, RM_REGISTRY_SCOPE_NODE);
        cr_expect_eq(row.loader_pid, getpid());
        cr_expect_eq(row.refcount, 0);
        cr_expect_eq(row.idle_ns, 0, "loading: not idle");
    }
    cr_expect_eq(metrics_of(second).models, 0, "a loading model is not ready");
    gate_open();
    pthread_join(thread, NULL);
    cr_assert_eq(call.status, RM_OK, "%s", vt->error_name(call.status));
    cr_assert_eq(list_rows(second, &row, 1), 1);
    cr_expect_eq(row.state, RM_MODEL_STATE_READY);
    cr_expect_eq(row.loader_pid, 0);
    cr_expect_eq(row.holders, 1);
    cr_expect_eq(row.refcount, 1);
    cr_expect_eq(row.bytes, 4 * KIB);
    cr_expect_gt(row.loaded_at_ns, 0);
    release(first, call.handle);
    sleep_ms(30);
    cr_assert_eq(list_rows(second, &row, 1), 1);
    cr_expect_eq(row.holders, 0);
    cr_expect_eq(row.refcount, 0);
    cr_expect_geq(row.idle_ns, 20 * 1000000ull, "idle_ns %" PRIu64, row.idle_ns);
    cr_expect_geq(row.last_used_ns, row.loaded_at_ns);

    /* A 1.0-sized row buffer gets 1.0 rows, and nothing past them. */
    const uint32_t old_size = offsetof(rm_model_info, last_used_ns) + sizeof(uint64_t);
    unsigned char old_rows[2 * 328 + 64];
    memset(old_rows, 0xab, sizeof old_rows);
    rm_model_info *first_row = (rm_model_info *)(void *)old_rows;
    first_row->struct_size = old_size;
    first_row->abi_version = RM_ABI_VERSION(1, 0);
    cr_assert_eq(vt->registry_list(second, first_row, old_size, 2, &count), RM_OK);
    cr_expect_eq(count, 1);
    cr_expect_str_eq((const char *)old_rows + offsetof(rm_model_info, key), "gated@cpu");
    for (size_t i = old_size; i < sizeof old_rows; i++)
        cr_expect_eq(old_rows[i], 0xab, "byte %zu past a 1.0 row was written", i);
}

Test(registry_node, process_rows_say_process_scope_and_ready)
{
    rm_context *context = open_context("process", NULL);
    load_plan plan = buffer_plan(4096, 13);
    rm_model_handle *handle;
    get_ok(context, "proc@cpu", &plan, &handle);
    rm_model_info row;
    cr_assert_eq(list_rows(context, &row, 1), 1);
    cr_expect_eq(row.scope, RM_REGISTRY_SCOPE_PROCESS);
    cr_expect_eq(row.state, RM_MODEL_STATE_READY);
    cr_expect_eq(row.holders, 1);
    cr_expect_eq(row.refcount, 1);
    cr_expect_eq(row.loader_pid, 0);
    cr_expect_eq(row.idle_ns, 0);
    release(context, handle);
    sleep_ms(30);
    cr_assert_eq(list_rows(context, &row, 1), 1);
    cr_expect_eq(row.holders, 0);
    cr_expect_geq(row.idle_ns, 20 * 1000000ull, "idle_ns %" PRIu64, row.idle_ns);
    rm_registry_metrics metrics = metrics_of(context);
    cr_expect_eq(metrics.attaches + metrics.takeovers + metrics.dead_references +
                     metrics.lock_recoveries,
                 0, "node counters stay 0 in process scope");
}

Test(registry_node, reclaim_in_process_scope)
{
    rm_context *context = open_context("process", NULL);
    load_plan plan = buffer_plan(4096, 14);
    rm_model_handle *handle;
    get_ok(context, "kept@cpu", &plan, &handle);
    release(context, handle);
    rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
    report.dead_references = 77; /* must be overwritten */
    cr_assert_eq(vt->registry_reclaim(context, &report), RM_OK, "%s",
                 vt->context_last_error(context));
    cr_expect_eq(report.dead_references, 0);
    cr_expect_eq(report.loads_abandoned, 0);
    cr_expect_eq(report.models_evicted, 0, "ttl 30 s: nothing expired");
    cr_expect_eq(report.segments_unlinked, 0);
    rm_model_info row;
    cr_expect_eq(list_rows(context, &row, 1), 1);
    cr_expect_eq(vt->registry_reclaim(context, NULL), RM_OK, "out is optional");
    report.struct_size = 8;
    cr_expect_eq(vt->registry_reclaim(context, &report), RM_E_STRUCT_SIZE);
    cr_expect(strstr(vt->context_last_error(context), "rm_registry_reclaim_report.struct_size 8") !=
                  NULL,
              "message: %s", vt->context_last_error(context));
    cr_expect_eq(vt->registry_reclaim(NULL, NULL), RM_E_INVALID_ARGUMENT);
    cr_expect_str_eq(vt->context_last_error(NULL), "context is NULL");
}

/* Writes a file of `bytes` bytes (all pages present) into /dev/shm with
 * `mode`. */
static void write_shm_file(const char *name, uint64_t bytes, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    static const uint8_t page[4096] = {1};
    for (uint64_t done = 0; done < bytes; done += sizeof page)
        cr_assert_eq(write(fd, page, sizeof page), (ssize_t)sizeof page);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

Test(registry_node, reclaim_in_node_scope_unlinks_orphan_segments_of_its_namespace)
{
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 15);
    rm_model_handle *handle;
    get_ok(context, "live@cpu", &plan, &handle);
    release(context, handle); /* idle, within its TTL */

    /* What a loader that died before recording its claim leaves, and a
     * segment of a namespace whose name starts with ours. */
    char orphan[128], neighbour[128];
    snprintf(orphan, sizeof orphan, "rmreg.%s.m.00000000deadbeef", ns);
    snprintf(neighbour, sizeof neighbour, "rmreg.%sy.m.00000000deadbeef", ns);
    write_shm_file(orphan, 64 * KIB, 0600);
    write_shm_file(neighbour, 4096, 0400);
    rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
    int32_t status = vt->registry_reclaim(context, &report);
    char neighbour_path[160];
    snprintf(neighbour_path, sizeof neighbour_path, "/dev/shm/%s", neighbour);
    int neighbour_left = access(neighbour_path, F_OK) == 0;
    unlink(neighbour_path);
    cr_assert_eq(status, RM_OK, "%s", vt->context_last_error(context));
    cr_expect_eq(report.segments_unlinked, 1);
    cr_expect_geq(report.bytes_unlinked, 64 * KIB);
    cr_expect_eq(report.dead_references, 0);
    cr_expect_eq(report.loads_abandoned, 0);
    cr_expect_eq(report.models_evicted, 0);
    cr_expect(neighbour_left, "another namespace's segment was unlinked");
    char names[512];
    cr_expect_eq(model_segments(names, sizeof names, NULL), 1, "left: %s", names);
    cr_expect(strstr(names, "deadbeef") == NULL, "the orphan is still there: %s", names);
    rm_model_info row;
    cr_expect_eq(list_rows(context, &row, 1), 1, "the live model stays");
    rm_model_handle *again;
    get_ok(context, "live@cpu", &plan, &again);
    cr_expect_eq(calls(&plan), 1);
    release(context, again);

    /* A second pass finds nothing. */
    report = (rm_registry_reclaim_report)RM_STRUCT_INIT(rm_registry_reclaim_report);
    cr_assert_eq(vt->registry_reclaim(context, &report), RM_OK);
    cr_expect_eq(report.segments_unlinked + report.models_evicted + report.dead_references, 0);
}

/* ------------------------------------------------------------------------ */
/* Node scope: the table's lifetime                                         */
/* ------------------------------------------------------------------------ */

Test(registry_node, the_last_context_removes_the_table_when_nothing_is_left)
{
    rm_context *first = open_context("node", NULL);
    rm_context *second = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 40);
    rm_model_handle *handle;
    get_ok(first, "gone@cpu", &plan, &handle);
    release(first, handle);
    cr_assert_eq(vt->model_evict(first, "gone@cpu"), RM_OK, "%s",
                 vt->context_last_error(first));
    close_context(first);
    cr_expect(table_exists(), "the table went while another context used it");
    close_context(second);
    cr_expect_not(table_exists(), "the namespace's last context left an empty table");
    cr_expect_eq(shm_each_prefix(shm_prefix, NULL, NULL), 0, "files of the namespace left");
}

Test(registry_node, an_idle_model_keeps_the_table_until_it_expires)
{
    /* Released models stay for their TTL, for the next process to find;
     * so does the table that names them. */
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 41);
    rm_model_handle *handle;
    get_ok(context, "idle@cpu", &plan, &handle);
    release(context, handle);
    close_context(context);
    cr_expect(table_exists(), "the table of an idle model went");
    cr_expect_eq(model_segments(NULL, 0, NULL), 1, "the idle model went");
    context = open_context("node", NULL);
    rm_model_handle *again;
    get_ok(context, "idle@cpu", &plan, &again);
    cr_expect_eq(calls(&plan), 1, "the model was loaded again");
    release(context, again);
    close_context(context);

    /* Once the TTL has passed, the last context evicts it on its way out,
     * and removes the table with it. */
    context = open_context("node", (const char *[]){"registry.ttl_s", "0.02", NULL});
    sleep_ms(40);
    close_context(context);
    cr_expect_not(table_exists(), "an expired model kept the table");
    cr_expect_eq(shm_each_prefix(shm_prefix, NULL, NULL), 0, "files of the namespace left");
}

Test(registry_node, reclaim_keeps_a_table_another_context_uses_and_removes_it_after)
{
    rm_context *context = open_context("node", NULL);
    rm_context *other = open_context("node", NULL);
    struct stat table;
    cr_assert_eq(lstat(table_path, &table), 0);
    rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
    cr_assert_eq(vt->registry_reclaim(context, &report), RM_OK);
    cr_expect_eq(report.segments_unlinked, 0, "another context of this process uses it");
    cr_expect(table_exists());
    close_context(other);
    cr_expect(table_exists(), "destroyed while another context used it");
    report = (rm_registry_reclaim_report)RM_STRUCT_INIT(rm_registry_reclaim_report);
    cr_assert_eq(vt->registry_reclaim(context, &report), RM_OK);
    cr_expect_eq(report.segments_unlinked, 1, "the table: %" PRIu64, report.segments_unlinked);
    cr_expect_eq(report.bytes_unlinked, (uint64_t)table.st_blocks * 512u);
    cr_expect_not(table_exists(), "reclaim left an unused table");

    /* Without a table: nothing to list, evict or count, and none made. */
    rm_model_info row;
    cr_expect_eq(list_rows(context, &row, 1), 0);
    cr_expect_eq(metrics_of(context).models, 0);
    cr_expect_eq(vt->model_evict(context, NULL), RM_OK);
    int32_t status = vt->model_evict(context, "none@cpu");
    cr_expect_eq(status, RM_E_NOT_FOUND, "%s", vt->error_name(status));
    cr_expect(strstr(vt->context_last_error(context), "none@cpu") != NULL, "%s",
              vt->context_last_error(context));
    cr_expect_not(table_exists(), "a call without a load made a table");

    /* Another context made since has one: this context finds it there. */
    other = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 42);
    rm_model_handle *handle;
    get_ok(other, "shared@cpu", &plan, &handle);
    cr_expect_eq(list_rows(context, &row, 1), 1, "the context does not see the new table");
    rm_model_handle *mine;
    get_ok(context, "shared@cpu", &plan, &mine);
    cr_expect_eq(calls(&plan), 1, "the context loaded into a table of its own");
    cr_expect_eq(metrics_of(context).attaches, 1);
    release(context, mine);
    release(other, handle);
    cr_expect_eq(vt->model_evict(other, NULL), RM_OK);
    close_context(other);
    close_context(context);
    cr_expect_eq(shm_each_prefix(shm_prefix, NULL, NULL), 0, "files of the namespace left");
}

/* Threads of one context keep loading and releasing while another thread
 * of it reclaims: whenever nothing is loaded, reclaim removes the table
 * under them, and their next load makes a new one. */
struct churn_thread {
    rm_context *context;
    load_plan *plan;
    atomic_int *stop;
    int failures;
    int32_t first_failure;
    int cycles;
};

static void *churn_loads(void *argument)
{
    struct churn_thread *self = argument;
    while (!atomic_load(self->stop)) {
        rm_model_handle *handle;
        void *model;
        int32_t status = get(self->context, "churned@cpu", self->plan, &handle, &model);
        if (status == RM_OK && !pattern_is(model, self->plan->bytes, self->plan->seed))
            status = RM_E_CORRUPT_STATE;
        if (status == RM_OK)
            status = vt->model_release(self->context, handle);
        if (status == RM_OK) {
            status = vt->model_evict(self->context, "churned@cpu");
            if (status == RM_E_BUSY || status == RM_E_NOT_FOUND)
                status = RM_OK;
        }
        if (status != RM_OK && self->failures++ == 0)
            self->first_failure = status;
        self->cycles++;
        /* Out of the registry for a moment: all of them at once is when
         * the table can go. */
        struct timespec pause = {.tv_nsec = 200 * 1000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

Test(registry_node, reclaim_removing_the_table_under_loading_threads_of_its_context)
{
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 43);
    atomic_int stop = 0;
    enum { THREADS = 2 };
    struct churn_thread threads[THREADS];
    pthread_t ids[THREADS];
    for (int i = 0; i < THREADS; i++) {
        threads[i] = (struct churn_thread){.context = context, .plan = &plan, .stop = &stop};
        cr_assert_eq(pthread_create(&ids[i], NULL, churn_loads, &threads[i]), 0);
    }
    uint64_t removed = 0;
    uint64_t until = now_ns() + 500 * 1000000ull;
    while (now_ns() < until) {
        rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
        int32_t status = vt->registry_reclaim(context, &report);
        cr_expect_eq(status, RM_OK, "%s", vt->context_last_error(context));
        removed += report.segments_unlinked;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(ids[i], NULL);
        cr_expect_eq(threads[i].failures, 0, "thread %d: %d of %d cycles failed, first: %s", i,
                     threads[i].failures, threads[i].cycles,
                     vt->error_name(threads[i].first_failure));
    }
    cr_log_info("%" PRIu64 " tables removed, %d loads", removed, calls(&plan));
    cr_expect_gt(removed, 0, "reclaim never found the namespace empty");
    cr_expect_eq(vt->model_evict(context, NULL), RM_OK);
    close_context(context);
    cr_expect_eq(shm_each_prefix(shm_prefix, NULL, NULL), 0, "files of the namespace left");
}

/* ------------------------------------------------------------------------ */
/* Node scope: failures                                                     */
/* ------------------------------------------------------------------------ */

Test(registry_node, a_failed_node_load_leaves_no_entry_and_no_segment)
{
    rm_context *context = open_context("node", NULL);
    rm_context *other = open_context("node", NULL);
    load_plan plan = buffer_plan(256 * KIB, 16);
    plan.result = -777;
    rm_model_handle *handle;
    void *model;
    cr_expect_eq(get(context, "broken@cpu", &plan, &handle, &model), -777);
    cr_expect_null(handle);
    cr_expect_null(model);
    cr_expect_eq(plan.segments_during, 1, "the buffer was a segment");
    expect_nothing_left(other, "after a failed load");
    rm_registry_metrics metrics = metrics_of(context);
    cr_expect_eq(metrics.load_failures, 1);
    cr_expect_eq(metrics.models, 0);
    /* The next call, from any context, runs a loader again. */
    cr_expect_eq(get(other, "broken@cpu", &plan, &handle, &model), -777);
    cr_expect_eq(calls(&plan), 2);
    plan.result = 3;
    cr_expect_eq(get(other, "broken@cpu", &plan, &handle, &model), RM_E_LOADER_FAILED);
    plan.result = RM_OK;
    get_ok(context, "broken@cpu", &plan, &handle);
    cr_expect_eq(calls(&plan), 4);
    release(context, handle);
}

Test(registry_node, a_buffer_larger_than_dev_shm_is_no_memory)
{
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan((uint64_t)1 << 48, 17);
    rm_model_handle *handle;
    void *model;
    int32_t status = get(context, "huge@cpu", &plan, &handle, &model);
    cr_expect_eq(plan.alloc_status, RM_E_NO_MEMORY, "alloc_buffer(2^48): %s: %s",
                 vt->error_name(plan.alloc_status), vt->context_last_error(context));
    cr_expect_eq(status, RM_E_NO_MEMORY);
    cr_expect_null(plan.buffer);
    expect_nothing_left(context, "after a buffer /dev/shm cannot hold");
}

struct forgery_case {
    int kind;
    char name[24];
};

enum forgery {
    FORGE_NOTHING, /* the genuine table, copied back: accepted */
    FORGE_MODE_0644,
    FORGE_MAGIC,
    FORGE_LAYOUT,
    FORGE_PREVIOUS_LAYOUT, /* a whole, consistent table of layout 1 */
    FORGE_CAPACITY,
    FORGE_ENTRY_BYTES,
    FORGE_LOCK_BYTES,
    FORGE_FILE_BYTES,
    FORGE_TRUNCATED_HEADER,
    FORGE_TRUNCATED_ENTRIES,
    FORGE_SYMLINK,
    FORGE_DIRECTORY,
    FORGE_FIFO,
    FORGE_OTHER_OWNER,
};

ParameterizedTestParameters(registry_node, forged_tables_are_corrupt_state)
{
    static struct forgery_case cases[] = {
        {FORGE_NOTHING, "genuine copy"},
        {FORGE_MODE_0644, "mode 0644"},
        {FORGE_MAGIC, "wrong magic"},
        {FORGE_LAYOUT, "other layout"},
        {FORGE_PREVIOUS_LAYOUT, "layout 1"},
        {FORGE_CAPACITY, "capacity 2"},
        {FORGE_ENTRY_BYTES, "other entry size"},
        {FORGE_LOCK_BYTES, "other lock size"},
        {FORGE_FILE_BYTES, "file_bytes too large"},
        {FORGE_TRUNCATED_HEADER, "100 bytes"},
        {FORGE_TRUNCATED_ENTRIES, "entries cut"},
        {FORGE_SYMLINK, "symlink"},
        {FORGE_DIRECTORY, "directory"},
        {FORGE_FIFO, "fifo"},
        {FORGE_OTHER_OWNER, "other owner"},
    };
    return cr_make_param_array(struct forgery_case, cases, sizeof cases / sizeof cases[0]);
}

static void write_table_file(const char *path, const void *bytes, size_t size, mode_t mode)
{
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, bytes, size), (ssize_t)size);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
}

ParameterizedTest(struct forgery_case *c, registry_node, forged_tables_are_corrupt_state)
{
    if (c->kind == FORGE_OTHER_OWNER && geteuid() != 0)
        cr_skip_test("changing a file's owner needs root");
    /* A genuine table of 4 entries, made by the plugin, copied. */
    rm_context *maker = open_context("node", (const char *[]){"registry.table_entries", "4",
                                                               NULL});
    int fd = open(table_path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s: %s", table_path, strerror(errno));
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    size_t size = (size_t)st.st_size;
    cr_assert_geq(size, RM_NODE_TABLE_HEADER_BYTES);
    unsigned char *genuine = malloc(size), *forged = malloc(size);
    cr_assert(genuine != NULL && forged != NULL);
    cr_assert_eq(pread(fd, genuine, size, 0), (ssize_t)size);
    close(fd);
    close_context(maker);
    unlink(table_path);
    rm_node_header *header = (rm_node_header *)(void *)genuine;
    cr_assert_eq(header->magic, RM_NODE_TABLE_MAGIC, "the plugin's table has another magic");
    cr_assert_eq(header->capacity, 4);
    cr_assert_eq(header->file_bytes, size);

    memcpy(forged, genuine, size);
    rm_node_header *h = (rm_node_header *)(void *)forged;
    size_t forged_size = size;
    mode_t mode = 0600;
    char real_path[160];
    snprintf(real_path, sizeof real_path, "/dev/shm/rmreg.%s.real", ns);
    switch (c->kind) {
    case FORGE_MODE_0644: mode = 0644; break;
    case FORGE_MAGIC: h->magic ^= 1; break;
    case FORGE_LAYOUT: h->layout = RM_NODE_TABLE_LAYOUT + 1; break;
    case FORGE_CAPACITY: h->capacity = 2; break;
    case FORGE_ENTRY_BYTES: h->entry_bytes += 8; break;
    case FORGE_LOCK_BYTES: h->lock_bytes += 8; break;
    case FORGE_FILE_BYTES: h->file_bytes += 4096; break;
    case FORGE_TRUNCATED_HEADER: forged_size = 100; break;
    case FORGE_TRUNCATED_ENTRIES: forged_size = size - 512; break;
    case FORGE_PREVIOUS_LAYOUT:
        /* What the plugin before table lifetimes made: the same immutable
         * prefix, no attacher array, so 16 KiB less. */
        forged_size = RM_NODE_TABLE_HEADER_BYTES + rm_node_hash_array_bytes(4) +
                      4 * sizeof(rm_node_entry);
        memset(forged, 0, size);
        h->magic = RM_NODE_TABLE_MAGIC;
        h->layout = 1;
        h->capacity = 4;
        h->file_bytes = forged_size;
        h->entry_bytes = sizeof(rm_node_entry);
        h->lock_bytes = sizeof(pthread_mutex_t);
        break;
    default: break;
    }
    switch (c->kind) {
    case FORGE_SYMLINK:
        write_table_file(real_path, genuine, size, 0600);
        cr_assert_eq(symlink(real_path, table_path), 0, "%s", strerror(errno));
        break;
    case FORGE_DIRECTORY:
        cr_assert_eq(mkdir(table_path, 0700), 0, "%s", strerror(errno));
        break;
    case FORGE_FIFO:
        cr_assert_eq(mkfifo(table_path, 0600), 0, "%s", strerror(errno));
        break;
    case FORGE_OTHER_OWNER:
        write_table_file(table_path, genuine, size, 0600);
        cr_assert_eq(chown(table_path, 65534, 65534), 0, "%s", strerror(errno));
        break;
    default:
        write_table_file(table_path, forged, forged_size, mode);
        break;
    }

    rm_context *context;
    uint64_t started = now_ns();
    int32_t status = try_context("node", NULL, &context);
    uint64_t took_ms = (now_ns() - started) / 1000000u;
    if (c->kind == FORGE_NOTHING) {
        cr_expect_eq(status, RM_OK, "a genuine table was refused: %s: %s",
                     vt->error_name(status), vt->context_last_error(NULL));
        if (status == RM_OK) {
            load_plan plan = buffer_plan(4096, 18);
            rm_model_handle *handle;
            get_ok(context, "copied@cpu", &plan, &handle);
            release(context, handle);
        }
    } else {
        cr_expect_eq(status, RM_E_CORRUPT_STATE, "%s: %s: %s", c->name, vt->error_name(status),
                     vt->context_last_error(NULL));
        cr_expect_null(context);
        const char *message = vt->context_last_error(NULL);
        char table_name[96];
        snprintf(table_name, sizeof table_name, "rmreg.%s.table", ns);
        cr_expect(strstr(message, table_name) != NULL, "%s: the message names the file: %s",
                  c->name, message);
        if (c->kind == FORGE_PREVIOUS_LAYOUT)
            cr_expect(strstr(message, "layout 1") != NULL &&
                          strstr(message, "another version of the plugin") != NULL,
                      "the message says why a layout 1 table is refused: %s", message);
        cr_expect_lt(took_ms, 5000, "%s: refused after %" PRIu64 " ms", c->name, took_ms);
        /* The plugin leaves a file it did not make alone. */
        struct stat after;
        cr_expect_eq(lstat(table_path, &after), 0, "%s: the file was removed", c->name);
        if (c->kind != FORGE_SYMLINK && c->kind != FORGE_DIRECTORY && c->kind != FORGE_FIFO &&
            c->kind != FORGE_OTHER_OWNER) {
            cr_expect_eq((size_t)after.st_size, forged_size, "%s: resized", c->name);
            unsigned char *now = malloc(forged_size);
            cr_assert_not_null(now);
            fd = open(table_path, O_RDONLY);
            cr_assert_geq(fd, 0);
            cr_expect_eq(pread(fd, now, forged_size, 0), (ssize_t)forged_size);
            close(fd);
            cr_expect(memcmp(now, forged, forged_size) == 0, "%s: the file was rewritten",
                      c->name);
            free(now);
        }
        cr_expect_eq(model_segments(NULL, 0, NULL), 0);
    }
    free(genuine);
    free(forged);
}

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

struct config_case {
    char key[32];
    char value[48];
};

ParameterizedTestParameters(registry_node, bad_node_settings_are_refused)
{
    static struct config_case cases[] = {
        {"registry.scope", "machine"},       {"registry.scope", "Node"},
        {"registry.scope", ""},              {"registry.scope", "node "},
        {"registry.namespace", ""},          {"registry.namespace", "a.b"},
        {"registry.namespace", "a/b"},       {"registry.namespace", "abcdefghijklmnopqrstuvwxyz0123456"},
        {"registry.table_entries", "3"},     {"registry.table_entries", "65537"},
        {"registry.table_entries", "1K"},
    };
    return cr_make_param_array(struct config_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct config_case *c, registry_node, bad_node_settings_are_refused)
{
    rm_context *context;
    int32_t status = try_context("node", (const char *[]){c->key, c->value, NULL}, &context);
    cr_expect_eq(status, RM_E_CONFIG_INVALID_VALUE, "%s = '%s': %s", c->key, c->value,
                 vt->error_name(status));
    cr_expect_null(context);
    cr_expect(strstr(vt->context_last_error(NULL), c->key) != NULL, "%s",
              vt->context_last_error(NULL));
    cr_expect_not(table_exists(), "a refused context made a table");
}

Test(registry_node, node_settings_are_reported)
{
    rm_context *context = open_context("node", (const char *[]){"registry.table_entries", "16",
                                                                 NULL});
    char value[64];
    cr_assert_eq(vt->config_get(context, "registry.scope", value, sizeof value, NULL), RM_OK);
    cr_expect_str_eq(value, "node");
    cr_assert_eq(vt->config_get(context, "registry.namespace", value, sizeof value, NULL),
                 RM_OK);
    cr_expect_str_eq(value, ns);
    cr_assert_eq(vt->config_get(context, "registry.table_entries", value, sizeof value, NULL),
                 RM_OK);
    cr_expect_str_eq(value, "16");
    cr_expect(table_exists(), "context_create opens (makes) the table");
    struct stat st;
    cr_assert_eq(stat(table_path, &st), 0);
    cr_expect_eq((uint64_t)st.st_size, rm_node_table_bytes(16), "a table of 16 entries");
}

Test(registry_node, node_scope_without_the_registry_feature)
{
    const char *features = (vt->features_built & RM_FEATURE_SHARED_MEMORY) ? "shared-memory"
                                                                             : "none";
    rm_context *context = open_context("node", (const char *[]){"features", features, NULL});
    load_plan plan = buffer_plan(4096, 19);
    rm_model_handle *handle;
    void *model;
    cr_expect_eq(get(context, "m@cpu", &plan, &handle, &model), RM_E_FEATURE_DISABLED);
    cr_expect_eq(calls(&plan), 0);
    cr_expect_eq(vt->registry_reclaim(context, NULL), RM_E_FEATURE_DISABLED);
    cr_expect_eq(vt->model_evict(context, "m@cpu"), RM_E_FEATURE_DISABLED);
    uint32_t count;
    cr_expect_eq(vt->registry_list(context, NULL, sizeof(rm_model_info), 0, &count),
                 RM_E_FEATURE_DISABLED);
    cr_expect_not(table_exists(), "a context without the registry made a node table");
}

/* ------------------------------------------------------------------------ */
/* Nested loads, cycles, a race                                             */
/* ------------------------------------------------------------------------ */

Test(registry_node, a_node_loader_may_load_another_key)
{
    rm_context *context = open_context("node", NULL);
    load_plan inner = buffer_plan(8 * KIB, 0x42);
    load_plan outer = buffer_plan(8 * KIB, 0x24);
    outer.nested_context = context;
    snprintf(outer.nested_key, sizeof outer.nested_key, "inner@cpu");
    outer.nested = &inner;
    rm_model_handle *handle;
    uint8_t *model = get_ok(context, "outer@cpu", &outer, &handle);
    cr_expect_eq(outer.nested_status, RM_OK);
    cr_expect_eq(calls(&outer), 1);
    cr_expect_eq(calls(&inner), 1);
    cr_expect_eq(model[1], 0x42, "the outer loader read the inner model");
    rm_model_info rows[4];
    cr_expect_eq(list_rows(context, rows, 4), 2);
    cr_expect_eq(model_segments(NULL, 0, NULL), 2);
    release(context, handle);
}

static void expect_cycle(rm_context *first, rm_context *second)
{
    load_plan a = buffer_plan(4096, 1), b = buffer_plan(4096, 2);
    a.nested_context = second;
    snprintf(a.nested_key, sizeof a.nested_key, "b@cpu");
    a.nested = &b;
    b.nested_context = first;
    snprintf(b.nested_key, sizeof b.nested_key, "a@cpu");
    b.nested = &a;
    rm_model_handle *handle;
    void *model;
    int32_t status = get(first, "a@cpu", &a, &handle, &model);
    cr_expect_eq(status, RM_E_LOAD_CYCLE, "%s: %s", vt->error_name(status),
                 vt->context_last_error(first));
    cr_expect_eq(calls(&a), 1);
    cr_expect_eq(calls(&b), 1);
    cr_expect_eq(b.nested_status, RM_E_LOAD_CYCLE, "b's request for a: %s",
                 vt->error_name(b.nested_status));
    expect_nothing_left(first, "after a cycle");
    /* No stale claim: a plain load of each key works now. */
    load_plan plain = buffer_plan(4096, 3);
    get_ok(second, "a@cpu", &plain, &handle);
    release(second, handle);
    get_ok(first, "b@cpu", &plain, &handle);
    release(first, handle);
    cr_expect_eq(calls(&plain), 2);
}

Test(registry_node, a_cycle_in_one_context_is_load_cycle)
{
    rm_context *context = open_context("node", NULL);
    expect_cycle(context, context);
}

Test(registry_node, a_cycle_across_two_contexts_of_a_process_is_load_cycle)
{
    rm_context *first = open_context("node", NULL);
    rm_context *second = open_context("node", NULL);
    expect_cycle(first, second);
}

/* Two threads of one context: a's loader (thread 1) asks for b while b's
 * loader (thread 2) asks for a, both loads claimed before either asks.
 * Each waits inside the context that runs the other load, which the
 * cycle check sees ("Node scope" in the header): RM_E_LOAD_CYCLE, not a
 * hang. */
struct crossed_load {
    rm_context *context;
    pthread_barrier_t *both_loading;
    const char *key;
    const char *other_key;
    int32_t nested_status;
    int32_t status;
};

static int32_t crossed_loader(void *user, const char *key, rm_loaded_model *out)
{
    struct crossed_load *self = user;
    (void)key;
    void *buffer;
    int32_t status = out->alloc_buffer(out, 4096, &buffer);
    if (status != RM_OK)
        return status;
    pthread_barrier_wait(self->both_loading);
    /* Should the other load be gone already, this loads it plainly. */
    load_plan plain = buffer_plan(4096, 9);
    rm_model_handle *handle;
    void *model;
    self->nested_status = get(self->context, self->other_key, &plain, &handle, &model);
    if (self->nested_status != RM_OK)
        return self->nested_status;
    vt->model_release(self->context, handle);
    return RM_OK;
}

static void *crossed_thread(void *argument)
{
    struct crossed_load *self = argument;
    rm_model_handle *handle;
    void *model;
    self->status =
        vt->model_get_or_load(self->context, self->key, crossed_loader, self, &handle, &model);
    if (self->status == RM_OK)
        vt->model_release(self->context, handle);
    return NULL;
}

Test(registry_node, a_cycle_across_two_threads_of_one_context_is_load_cycle)
{
    rm_context *context = open_context("node", NULL);
    pthread_barrier_t both_loading;
    pthread_barrier_init(&both_loading, NULL, 2);
    struct crossed_load loads[2] = {
        {.context = context, .both_loading = &both_loading, .key = "x@cpu", .other_key = "y@cpu"},
        {.context = context, .both_loading = &both_loading, .key = "y@cpu", .other_key = "x@cpu"},
    };
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, crossed_thread, &loads[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&both_loading);
    cr_expect(loads[0].nested_status == RM_E_LOAD_CYCLE ||
                  loads[1].nested_status == RM_E_LOAD_CYCLE,
              "neither nested request saw the cycle: %s, %s",
              vt->error_name(loads[0].nested_status), vt->error_name(loads[1].nested_status));
    for (int i = 0; i < 2; i++)
        cr_expect_eq(loads[i].status, RM_E_LOAD_CYCLE, "%s: %s", loads[i].key,
                     vt->error_name(loads[i].status));
    expect_nothing_left(context, "after a cycle across threads");
}

/* Review finding: each context maps the table at its own address, so a
 * loader asking another context of its namespace for the key it is loading
 * once waited for itself forever. */
Test(registry_node, a_loader_asking_another_context_for_its_own_key_is_load_cycle)
{
    rm_context *first = open_context("node", NULL);
    rm_context *second = open_context("node", NULL);
    load_plan inner = buffer_plan(4096, 4);
    load_plan outer = buffer_plan(4096, 5);
    outer.nested_context = second;
    snprintf(outer.nested_key, sizeof outer.nested_key, "self@cpu");
    outer.nested = &inner;
    rm_model_handle *handle;
    void *model;
    int32_t status = get(first, "self@cpu", &outer, &handle, &model);
    cr_expect_eq(outer.nested_status, RM_E_LOAD_CYCLE, "the nested request: %s",
                 vt->error_name(outer.nested_status));
    cr_expect_eq(status, RM_E_LOAD_CYCLE, "%s: %s", vt->error_name(status),
                 vt->context_last_error(first));
    cr_expect_eq(calls(&inner), 0, "the nested request ran a loader");
    expect_nothing_left(first, "after the self-cycle");
}

/* Review finding: orphans past the first 64 model segments of the
 * namespace were never looked at. */
Test(registry_node, reclaim_finds_orphans_among_many_segments)
{
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 16);
    enum { LIVE = 70 };
    rm_model_handle *handles[LIVE];
    char orphan[128];
    snprintf(orphan, sizeof orphan, "rmreg.%s.m.00000000000beef1", ns);
    write_shm_file(orphan, 4096, 0600);
    for (int i = 0; i < LIVE; i++) {
        char key[32];
        snprintf(key, sizeof key, "many%d@cpu", i);
        get_ok(context, key, &plan, &handles[i]);
    }
    snprintf(orphan, sizeof orphan, "rmreg.%s.m.00000000000beef2", ns);
    write_shm_file(orphan, 4096, 0600);
    rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
    cr_assert_eq(vt->registry_reclaim(context, &report), RM_OK, "%s",
                 vt->context_last_error(context));
    cr_expect_eq(report.segments_unlinked, 2, "both orphans, none of the %d live models", LIVE);
    for (int i = 0; i < LIVE; i++)
        release(context, handles[i]);
}

/* Review finding: the plugin re-read the table's capacity from shared
 * memory, so a process that corrupts it crashed every attached host. */
Test(registry_node, a_capacity_changed_after_attach_is_not_trusted)
{
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 17);
    rm_model_handle *handle;
    get_ok(context, "kept@cpu", &plan, &handle);
    int fd = open(table_path, O_RDWR);
    cr_assert_geq(fd, 0);
    struct stat info;
    cr_assert_eq(fstat(fd, &info), 0);
    rm_node_header *header =
        mmap(NULL, (size_t)info.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(header, MAP_FAILED);
    uint32_t genuine = header->capacity;
    header->capacity = RM_NODE_TABLE_ENTRIES_MAX;
    rm_model_info rows[4];
    uint32_t count = 0;
    int32_t status = vt->registry_list(context, rows, sizeof rows[0], 4, &count);
    header->capacity = genuine;
    munmap(header, (size_t)info.st_size);
    cr_expect_eq(status, RM_OK, "%s", vt->context_last_error(context));
    cr_expect_eq(count, 1);
    release(context, handle);
}

/* A process of the user scribbles over the table's lock word, naming a
 * thread that does not exist as its owner: the kernel hands a robust lock
 * over only when a registered owner dies, so without a deadline every
 * process would wait on it forever. It must be RM_E_CORRUPT_STATE within
 * a few seconds, and the table usable again once the word is put back. */
Test(registry_node, a_lock_word_naming_a_thread_that_does_not_exist_is_corrupt_state)
{
    rm_context *context = open_context("node", NULL);
    load_plan plan = buffer_plan(4096, 23);
    rm_model_handle *handle;
    get_ok(context, "locked@cpu", &plan, &handle);
    int fd = open(table_path, O_RDWR);
    cr_assert_geq(fd, 0);
    struct stat info;
    cr_assert_eq(fstat(fd, &info), 0);
    rm_node_header *header =
        mmap(NULL, (size_t)info.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(header, MAP_FAILED);
    /* Above pid_max: no thread has this id. */
    FILE *pid_max_file = fopen("/proc/sys/kernel/pid_max", "r");
    long pid_max = 4194304;
    if (pid_max_file != NULL) {
        cr_assert_eq(fscanf(pid_max_file, "%ld", &pid_max), 1);
        fclose(pid_max_file);
    }
    unsigned saved = (unsigned)header->lock.__data.__lock;
    cr_assert_eq(saved, 0u, "the lock is free between calls");
    header->lock.__data.__lock = (int)(pid_max + 1);
    uint64_t start = now_ns();
    rm_model_info rows[4];
    uint32_t count = 0;
    int32_t status = vt->registry_list(context, rows, sizeof rows[0], 4, &count);
    uint64_t waited_ms = (now_ns() - start) / 1000000u;
    cr_expect_eq(status, RM_E_CORRUPT_STATE, "registry_list: %s", vt->error_name(status));
    cr_expect(strstr(vt->context_last_error(context), "cannot hold it") != NULL, "message: %s",
              vt->context_last_error(context));
    cr_expect_lt(waited_ms, 5000, "answered after %llu ms", (unsigned long long)waited_ms);
    header->lock.__data.__lock = (int)saved;
    munmap(header, (size_t)info.st_size);
    status = vt->registry_list(context, rows, sizeof rows[0], 4, &count);
    cr_expect_eq(status, RM_OK, "after the word was put back: %s",
                 vt->context_last_error(context));
    release(context, handle);
}

#define RACERS 8

struct racer {
    rm_context *context;
    load_plan *plan;
    pthread_barrier_t *start;
    int32_t status;
    rm_model_handle *handle;
    void *model;
};

static void *race(void *arg)
{
    struct racer *racer = arg;
    pthread_barrier_wait(racer->start);
    racer->status = get(racer->context, "raced@cpu", racer->plan, &racer->handle, &racer->model);
    return NULL;
}

Test(registry_node, eight_threads_over_two_contexts_cause_one_load)
{
    rm_context *contexts[2] = {open_context("node", NULL), open_context("node", NULL)};
    const uint64_t size = 256 * KIB;
    load_plan plan = buffer_plan(size, 0x77);
    plan.delay_ms = 100; /* every racer arrives while the load runs */
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    struct racer racers[RACERS];
    pthread_t threads[RACERS];
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (struct racer){.context = contexts[i % 2], .plan = &plan, .start = &start};
        cr_assert_eq(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    cr_expect_eq(calls(&plan), 1, "%d loader calls for one key", calls(&plan));
    for (int i = 0; i < RACERS; i++) {
        cr_expect_eq(racers[i].status, RM_OK, "racer %d: %s", i,
                     vt->error_name(racers[i].status));
        if (racers[i].status == RM_OK)
            cr_expect(pattern_is(racers[i].model, size, 0x77), "racer %d sees other bytes", i);
    }
    rm_registry_metrics m0 = metrics_of(contexts[0]), m1 = metrics_of(contexts[1]);
    cr_expect_eq(m0.loads + m1.loads, 1);
    cr_expect_eq(m0.attaches + m1.attaches, 1, "one context loaded, the other attached once");
    rm_model_info row;
    cr_assert_eq(list_rows(contexts[0], &row, 1), 1);
    cr_expect_eq(row.holders, 1);
    cr_expect_eq(row.refcount, 2, "two holding contexts");
    cr_expect_eq(model_segments(NULL, 0, NULL), 1);
    for (int i = 0; i < RACERS; i++)
        if (racers[i].status == RM_OK)
            release(racers[i].context, racers[i].handle);
    cr_assert_eq(list_rows(contexts[1], &row, 1), 1);
    cr_expect_eq(row.refcount, 0);
}
