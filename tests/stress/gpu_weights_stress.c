/* gpu_weights_stress: GPU-resident weights' concurrent paths (ABI 1.4,
 * REF: gpu-weights) in plain processes, so that ThreadSanitizer (which
 * cannot run Criterion) watches the process's table of mapped weights
 * (device_weights.c: a use per context attachment, drops, the rm-weights
 * server thread started and stopped with the table) and the node table's
 * side of it (attach_device, node_detach, drop_unlisted_weights,
 * forget_kept_weights_locked). Runs against the test-only fake driver
 * ($FAKE_CUDA_LIBRARY, named to the plugin by cuda.driver).
 *
 * The weights are 4 MiB on cuda:0 under "w@cuda:0", in node scope, each
 * scenario in a namespace private to this run. The loader fills its
 * device buffer with cuMemcpyHtoD_v2 in the device's primary context, and
 * every reader checks every byte through cuMemcpyDtoH_v2 (device memory is
 * never touched through a host pointer, as on a GPU).
 *
 * Scenarios:
 *  1 same_process_contexts: contexts A and B of one process; 4 threads
 *    get (in A or B), check and release the weights, export them with
 *    model_to_dlpack now and then (the view goes to another thread, which
 *    checks the bytes through it after the handle was released, and
 *    deletes it), list and read the counters, and evict every idle model
 *    now and then; a fifth thread calls registry_reclaim meanwhile. The
 *    bytes are right on every read, there was at most one load per
 *    eviction (plus the first), and once both contexts are destroyed the
 *    fake has no VMM mapping or handle left in this process.
 *  2 importer_process: the parent loads the weights and holds them; a
 *    child process (this program, spawned: CUDA cannot be used after
 *    fork()) runs 4 threads that get, check, release and evict in two
 *    contexts of its own (receiving the weights from the parent over the
 *    socket, then sharing that mapping; a model_to_dlpack view now and
 *    then), while 2 threads of the parent get, check and release in two
 *    contexts. The child never loads (the parent holds the weights, so
 *    evictions answer RM_E_BUSY), leaves no mapping behind, and after it
 *    exited the parent still reads the bytes, is the only holder, and
 *    leaves no mapping either.
 *  3 serving_while_weights_go: 2 threads of one process, each with a
 *    context of its own namespace, load, check, release and evict their
 *    weights over and over, so that the process's table of mapped weights
 *    empties (and its rm-weights server stops) while the other thread's
 *    load publishes. Whenever a thread holds its weights, the process
 *    must listen on its weights socket (other processes attach through
 *    it); should it not, a process spawned to attach (this program with
 *    --attach) says whether it still gets them.
 * Prints "ok   name" / "FAIL name: reason" and exits 0 only when all
 * passed; 77 (skipped) without $FAKE_CUDA_LIBRARY. Environment:
 * RM_PLUGIN_PATH, FAKE_CUDA_LIBRARY, RM_STRESS_SCALE. */
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_tensor_common.h"
#include "plugin_env.h"
#include "stress_driver.h"

#define KEY "w@cuda:0"
#define MODEL_BYTES ((uint64_t)4 << 20)
#define PATTERN_SEED UINT64_C(0x67772d7374726573)
#define THREADS 4
#define PARENT_THREADS 2
/* Scenario 3's threads: with more, the table of mapped weights would
 * seldom empty, and emptying it is what stops the server. */
#define CHURNERS 2

static const rm_plugin_v1 *vt;
static const char *fake_driver;
static td_driver driver; /* primed: device 0's primary context retained */
static uint8_t *expected; /* the MODEL_BYTES the loader writes */
static atomic_int loader_calls;
static const char *self_path; /* spawned for the other processes */
extern char **environ;

static int fail(const char *name, const char *reason, const char *detail)
{
    printf("FAIL %s: %s%s%s\n", name, reason, detail ? ": " : "", detail ? detail : "");
    return -1;
}

static rm_context *make_context(const char *namespace_name)
{
    rm_config_entry entries[] = {
        {"registry.scope", "node"},
        {"registry.namespace", namespace_name},
        {"cuda.driver", fake_driver},
        {"log.level", "error"},
    };
    rm_context *context = NULL;
    if (create_context_of(vt, entries, sizeof entries / sizeof entries[0], &context) != RM_OK) {
        fprintf(stderr, "# context_create: %s\n", vt->context_last_error(NULL));
        return NULL;
    }
    return context;
}

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

typedef struct shared_run {
    rm_context *contexts[THREADS]; /* scenarios 1 and 2 use two */
    int rounds;
    _Atomic int errors;
    _Atomic int running;
    _Atomic(rm_dl_managed_tensor_versioned *) pending_dlpack;
    _Atomic long reads;
    _Atomic long busy_evictions; /* model_evict(KEY) refused: in use */
    long cycles;                 /* evictions at the barrier (scenario 1) */
    _Atomic int unserved;        /* scenario 3: held, but not served */
    rm_model_handle *kept;       /* scenario 3: that handle, still held */
    int kept_index;
    pthread_barrier_t barrier;   /* scenario 1's eviction cycles */
    char reason[640];
} shared_run;

static void run_error(shared_run *r, const char *what, int32_t code, rm_context *context)
{
    if (atomic_fetch_add(&r->errors, 1) == 0)
        snprintf(r->reason, sizeof r->reason, "%s: %s (%s)", what,
                 code != RM_OK ? vt->error_name(code) : "",
                 context != NULL ? vt->context_last_error(context) : "");
}

static void run_failure(shared_run *r, const char *what, const char *why)
{
    if (atomic_fetch_add(&r->errors, 1) == 0)
        snprintf(r->reason, sizeof r->reason, "%s: %s", what, why);
}

/* A thread's own copy of the primed driver (its `why` is the thread's),
 * its read buffer, and the run it is part of; the loader's user too. */
typedef struct worker {
    shared_run *run;
    td_driver d;
    uint8_t *buffer;
    uint64_t random;
    int index;
} worker;

static int worker_init(worker *w, shared_run *r, int index)
{
    *w = (worker){.run = r, .d = driver, .index = index};
    w->random = UINT64_C(0x9e3779b97f4a7c15) * (uint64_t)(index + 1) | 1;
    w->buffer = malloc(MODEL_BYTES);
    return w->buffer != NULL ? 0 : -1;
}

/* The loader: a device buffer, filled in device 0's primary context. */
static int32_t weights_loader(void *user, const char *key, rm_loaded_model *out)
{
    worker *w = user;
    atomic_fetch_add(&loader_calls, 1);
    if (strcmp(key, KEY) != 0) {
        run_failure(w->run, "the loader was asked for another key", key);
        return RM_E_LOADER_FAILED;
    }
    if (!RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out)) {
        run_failure(w->run, "loader", "no alloc_device_buffer offered");
        return RM_E_FEATURE_UNAVAILABLE;
    }
    uint64_t pointer = 0;
    void *stream = NULL;
    int32_t status = out->alloc_device_buffer(out, MODEL_BYTES, &pointer, &stream);
    if (status != RM_OK)
        return status;
    if (td_enter(&w->d, 0) != 0) {
        run_failure(w->run, "loader", w->d.why);
        return RM_E_LOADER_FAILED;
    }
    td_result rc = w->d.htod((td_deviceptr)pointer, expected, (size_t)MODEL_BYTES);
    td_leave(&w->d);
    if (rc != 0) {
        char why[64];
        snprintf(why, sizeof why, "cuMemcpyHtoD_v2: CUresult %d", rc);
        run_failure(w->run, "loader", why);
        return RM_E_LOADER_FAILED;
    }
    /* Scenario 3 found weights held but not served: no new weights may
     * enter the process's table now (that would restart the server). */
    if (atomic_load(&w->run->unserved) != 0)
        return RM_E_BUSY;
    return RM_OK;
}

/* The child's loader: the parent holds the weights, so it never runs. */
static int32_t unexpected_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)out;
    worker *w = user;
    atomic_fetch_add(&loader_calls, 1);
    run_failure(w->run, "the importer ran its loader although the parent holds the weights",
                key);
    return RM_E_LOADER_FAILED;
}

/* Every byte of the weights at `pointer`, through cuMemcpyDtoH_v2. */
static bool weights_intact(worker *w, const void *pointer, const char *what)
{
    if (td_enter(&w->d, 0) != 0) {
        run_failure(w->run, what, w->d.why);
        return false;
    }
    td_result rc = w->d.dtoh(w->buffer, (td_deviceptr)(uintptr_t)pointer, (size_t)MODEL_BYTES);
    td_leave(&w->d);
    atomic_fetch_add(&w->run->reads, 1);
    char why[160];
    if (rc != 0) {
        snprintf(why, sizeof why, "cuMemcpyDtoH_v2 of %p: CUresult %d", pointer, rc);
        run_failure(w->run, what, why);
        return false;
    }
    if (memcmp(w->buffer, expected, (size_t)MODEL_BYTES) != 0) {
        size_t i = 0;
        while (w->buffer[i] == expected[i])
            i++;
        snprintf(why, sizeof why, "byte %zu of the weights at %p is 0x%02x, not 0x%02x", i,
                 pointer, w->buffer[i], expected[i]);
        run_failure(w->run, what, why);
        return false;
    }
    return true;
}

/* The row of the weights, if listed: READY rows say where they live. */
static void check_rows(worker *w, rm_context *context)
{
    rm_model_info rows[4];
    for (int i = 0; i < 4; i++)
        rows[i] = (rm_model_info)RM_STRUCT_INIT(rm_model_info);
    uint32_t count = 0;
    int32_t status = vt->registry_list(context, rows, sizeof rows[0], 4, &count);
    if (status != RM_OK) {
        run_error(w->run, "registry_list", status, context);
        return;
    }
    if (count > 1) {
        run_failure(w->run, "registry_list", "more than one row for one key");
        return;
    }
    const rm_model_info *row = &rows[0];
    if (count == 0 || row->state != RM_MODEL_STATE_READY)
        return;
    if (strncmp(row->key, "w@cuda:GPU-", 11) != 0 || row->memory != RM_MEMORY_CUDA ||
        row->device_ordinal != 0 || row->bytes != MODEL_BYTES ||
        row->device_bytes != MODEL_BYTES || row->scope != RM_REGISTRY_SCOPE_NODE) {
        char why[RM_MODEL_KEY_MAX + 128];
        snprintf(why, sizeof why,
                 "row '%s': memory %u, ordinal %d, bytes %llu, device_bytes %llu", row->key,
                 row->memory, row->device_ordinal, (unsigned long long)row->bytes,
                 (unsigned long long)row->device_bytes);
        run_failure(w->run, "registry_list", why);
    }
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    status = vt->registry_metrics(context, &metrics);
    if (status != RM_OK)
        run_error(w->run, "registry_metrics", status, context);
    else if (metrics.models > 1)
        run_failure(w->run, "registry_metrics", "more than one model for one key");
}

/* The view as model_to_dlpack documents it for a device buffer. */
static bool view_described(const rm_dl_managed_tensor_versioned *managed, const void *model)
{
    const rm_dl_tensor *t = &managed->dl_tensor;
    return managed->version.major == 1 && (managed->flags & RM_DLPACK_FLAG_READ_ONLY) != 0 &&
           t->data == model && t->device.device_type == 2 && t->device.device_id == 0 &&
           t->ndim == 1 && t->shape != NULL && t->shape[0] == (int64_t)MODEL_BYTES &&
           t->dtype.code == RM_DTYPE_UINT && t->dtype.bits == 8 && t->byte_offset == 0;
}

/* Swaps a view with the one another thread left, and checks and deletes
 * that one here: its handle may be released and its maker's context busy
 * evicting, but the view's own reference keeps the weights. */
static void hand_view_over(worker *w, rm_dl_managed_tensor_versioned *managed)
{
    managed = atomic_exchange(&w->run->pending_dlpack, managed);
    if (managed == NULL)
        return;
    (void)weights_intact(w, managed->dl_tensor.data, "read through a model_to_dlpack view");
    managed->deleter(managed);
}

/* Whether this process listens on its weights socket (REF: gpu-weights,
 * "Limits": "\0rm_plugin.weights.<pid>.<start time>"), as a process that
 * has weights mapped must, to hand them to others. */
static bool serving_weights(void)
{
    FILE *sockets = fopen("/proc/net/unix", "re");
    if (sockets == NULL)
        return true; /* cannot tell */
    char prefix[64];
    int length = snprintf(prefix, sizeof prefix, "@rm_plugin.weights.%ld.", (long)getpid());
    char line[512];
    bool listening = false;
    while (!listening && fgets(line, sizeof line, sockets) != NULL) {
        unsigned long flags = 0;
        char path[256] = "";
        if (sscanf(line, "%*s %*s %*s %lx %*s %*s %*s %255s", &flags, path) == 2)
            listening = strncmp(path, prefix, (size_t)length) == 0 && (flags & 0x10000) != 0;
    }
    fclose(sockets);
    return listening;
}

/* One get, check and release in `context`; a view now and then. */
static void use_weights(worker *w, rm_context *context, rm_model_loader_fn loader, bool view)
{
    shared_run *r = w->run;
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t status = vt->model_get_or_load(context, KEY, loader, w, &handle, &model);
    if (status != RM_OK) {
        if (atomic_load(&r->errors) == 0)
            run_error(r, "model_get_or_load", status, context);
        return;
    }
    (void)weights_intact(w, model, "read after model_get_or_load");
    if (!serving_weights())
        run_failure(r, "while a thread of it held the weights",
                    "this process did not listen on its weights socket (no rm-weights "
                    "server: other processes cannot attach)");
    if (view) {
        rm_dl_managed_tensor_versioned *managed = NULL;
        status = vt->model_to_dlpack(context, handle, &managed);
        if (status != RM_OK)
            run_error(r, "model_to_dlpack", status, context);
        else if (!view_described(managed, model))
            run_failure(r, "model_to_dlpack", "not a read-only kDLCUDA view of the weights");
        if (managed != NULL) {
            /* Released first: the view must stand on its own. */
            status = vt->model_release(context, handle);
            handle = NULL;
            hand_view_over(w, managed);
        }
    }
    if (handle != NULL)
        status = vt->model_release(context, handle);
    if (status != RM_OK)
        run_error(r, "model_release", status, context);
}

static void evict_now(worker *w, rm_context *context, bool held_elsewhere)
{
    shared_run *r = w->run;
    int32_t status = vt->model_evict(context, NULL);
    if (status != RM_OK)
        run_error(r, "model_evict(NULL)", status, context);
    status = vt->model_evict(context, KEY);
    if (status == RM_E_BUSY)
        atomic_fetch_add(&r->busy_evictions, 1);
    else if (held_elsewhere || (status != RM_OK && status != RM_E_NOT_FOUND))
        run_error(r, "model_evict(KEY)", status, context);
}

static void *reclaim_thread(void *arg)
{
    shared_run *r = arg;
    for (unsigned turn = 0; atomic_load(&r->running) != 0; turn++) {
        rm_context *context = r->contexts[turn % 2];
        rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
        int32_t status = vt->registry_reclaim(context, &report);
        if (status != RM_OK)
            run_error(r, "registry_reclaim", status, context);
        usleep(500);
    }
    return NULL;
}

/* Deletes the view no thread took. */
static void delete_left_view(worker *w)
{
    rm_dl_managed_tensor_versioned *left = atomic_exchange(&w->run->pending_dlpack, NULL);
    if (left == NULL)
        return;
    (void)weights_intact(w, left->dl_tensor.data, "read through the last view");
    left->deleter(left);
}

/* The fake's VMM mappings and handles in this process: none, once every
 * context is destroyed. 0, or -1 with `why`. */
static int no_device_memory_left(char *why, size_t size)
{
    long long mapped = td_counter(&driver, "@vmm_mapped");
    long long handles = td_counter(&driver, "@vmm_handles");
    if (mapped == 0 && handles == 0)
        return 0;
    snprintf(why, size, "%lld VMM mapping(s) and %lld handle(s) left in pid %ld", mapped,
             handles, (long)getpid());
    return -1;
}

/* ---- 1 same_process_contexts -------------------------------------------- */

/* Every CYCLE rounds the threads meet, the weights are evicted while
 * nobody holds them (the view left over deleted first), and all race to
 * get them again from both contexts: one load. Between meetings they
 * evict at random, which succeeds only in a moment nobody holds them. */
#define CYCLE 12

static void evict_at_barrier(worker *w)
{
    shared_run *r = w->run;
    delete_left_view(w);
    rm_context *context = r->contexts[next_random(&w->random) & 1];
    int32_t status = vt->model_evict(context, NULL);
    if (status != RM_OK) {
        run_error(r, "model_evict(NULL) at the barrier", status, context);
        return;
    }
    rm_model_info row = RM_STRUCT_INIT(rm_model_info);
    uint32_t count = 0;
    status = vt->registry_list(r->contexts[0], &row, sizeof row, 1, &count);
    if (status != RM_OK)
        run_error(r, "registry_list at the barrier", status, r->contexts[0]);
    else if (count != 0)
        run_failure(r, "model_evict(NULL) at the barrier", "the idle weights stayed listed");
    r->cycles++;
}

static void *same_process_thread(void *arg)
{
    worker *w = arg;
    shared_run *r = w->run;
    /* Every thread runs every round (errors skip the work, not the
     * meetings), so that none waits at the barrier alone. */
    for (int round = 0; round < r->rounds; round++) {
        if (round % CYCLE == 0 && round != 0) {
            if (pthread_barrier_wait(&r->barrier) == PTHREAD_BARRIER_SERIAL_THREAD &&
                atomic_load(&r->errors) == 0)
                evict_at_barrier(w);
            pthread_barrier_wait(&r->barrier);
        }
        if (atomic_load(&r->errors) != 0)
            continue;
        rm_context *context = r->contexts[next_random(&w->random) & 1];
        use_weights(w, context, weights_loader, round % 8 == 2 * w->index);
        if (round % 16 == 2 * w->index + 1)
            check_rows(w, context);
        if (round % 12 == 3 * w->index + 2)
            evict_now(w, context, false);
    }
    return NULL;
}

static int same_process_contexts(const char *namespace_name)
{
    const char *name = "same_process_contexts";
    atomic_store(&loader_calls, 0);
    shared_run r = {.rounds = stress_scaled(240), .running = 1};
    r.contexts[0] = make_context(namespace_name);
    r.contexts[1] = make_context(namespace_name);
    if (r.contexts[0] == NULL || r.contexts[1] == NULL)
        return fail(name, "context_create failed", NULL);
    worker workers[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (worker_init(&workers[i], &r, i) != 0)
            return fail(name, "no memory", NULL);
    pthread_barrier_init(&r.barrier, NULL, THREADS);
    pthread_t threads[THREADS], reclaimer;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, same_process_thread, &workers[i]);
    pthread_create(&reclaimer, NULL, reclaim_thread, &r);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&r.running, 0);
    pthread_join(reclaimer, NULL);
    pthread_barrier_destroy(&r.barrier);
    delete_left_view(&workers[0]);
    int rc = atomic_load(&r.errors) != 0 ? fail(name, r.reason, NULL) : 0;
    uint64_t loads = 0, evictions = 0, attaches = 0;
    for (int i = 0; i < 2; i++) {
        rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
        if (vt->registry_metrics(r.contexts[i], &metrics) == RM_OK) {
            loads += metrics.loads;
            evictions += metrics.evictions;
            attaches += metrics.attaches;
        }
    }
    int calls = atomic_load(&loader_calls);
    char detail[160];
    snprintf(detail, sizeof detail,
             "%d loader calls (%llu counted), %llu evictions (%ld at the barrier)", calls,
             (unsigned long long)loads, (unsigned long long)evictions, r.cycles);
    /* Every meeting evicted, and the next get loaded again. */
    if (rc == 0 && (calls < 1 + r.cycles || (uint64_t)calls != loads ||
                    (uint64_t)calls > evictions + 1))
        rc = fail(name, "not one load per eviction", detail);
    fprintf(stderr, "# %s: %ld reads, %s, %llu attaches\n", name, atomic_load(&r.reads), detail,
            (unsigned long long)attaches);
    vt->context_destroy(r.contexts[1]);
    vt->context_destroy(r.contexts[0]);
    char why[128];
    if (rc == 0 && no_device_memory_left(why, sizeof why) != 0)
        rc = fail(name, "device memory left after every context was destroyed", why);
    for (int i = 0; i < THREADS; i++)
        free(workers[i].buffer);
    return rc;
}

/* ---- 2 importer_process -------------------------------------------------- */

static void *importer_thread(void *arg)
{
    worker *w = arg;
    shared_run *r = w->run;
    for (int round = 0; round < r->rounds && atomic_load(&r->errors) == 0; round++) {
        rm_context *context = r->contexts[next_random(&w->random) & 1];
        use_weights(w, context, unexpected_loader, round % 16 == w->index);
        if (round % 10 == 2 * w->index + 1)
            evict_now(w, context, true);
    }
    return NULL;
}

/* The child: argv[2] is the namespace where the parent holds the weights. */
static int importer_child(const char *namespace_name)
{
    const char *name = "importer_child";
    shared_run r = {.rounds = stress_scaled(200), .running = 1};
    r.contexts[0] = make_context(namespace_name);
    r.contexts[1] = make_context(namespace_name);
    if (r.contexts[0] == NULL || r.contexts[1] == NULL)
        return fail(name, "context_create failed", NULL);
    worker workers[THREADS];
    pthread_t threads[THREADS];
    int started = 0;
    for (; started < THREADS; started++)
        if (worker_init(&workers[started], &r, started) != 0 ||
            pthread_create(&threads[started], NULL, importer_thread, &workers[started]) != 0)
            break;
    if (started < THREADS)
        run_failure(&r, "setup", "no memory or no thread for a worker");
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    delete_left_view(&workers[0]);
    int rc = atomic_load(&r.errors) != 0 ? fail(name, r.reason, NULL) : 0;
    uint64_t attaches = 0;
    for (int i = 0; i < 2; i++) {
        rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
        if (vt->registry_metrics(r.contexts[i], &metrics) == RM_OK)
            attaches += metrics.attaches;
    }
    if (rc == 0 && atomic_load(&r.busy_evictions) == 0)
        rc = fail(name, "no eviction was refused although the parent holds the weights", NULL);
    fprintf(stderr, "# importer child: %ld reads, %llu attaches, %ld evictions refused\n",
            atomic_load(&r.reads), (unsigned long long)attaches,
            atomic_load(&r.busy_evictions));
    vt->context_destroy(r.contexts[1]);
    vt->context_destroy(r.contexts[0]);
    char why[128];
    if (rc == 0 && no_device_memory_left(why, sizeof why) != 0)
        rc = fail(name, "device memory left after every context was destroyed", why);
    for (int i = 0; i < started; i++)
        free(workers[i].buffer);
    return rc;
}

/* The child of serving_while_weights_go: one attach to the weights of
 * argv[2], which a thread of the parent holds. */
static int attach_child(const char *namespace_name)
{
    rm_context *context = make_context(namespace_name);
    if (context == NULL)
        return fail("attach_child", "context_create failed", NULL);
    shared_run r = {.rounds = 1};
    worker w;
    if (worker_init(&w, &r, 0) != 0)
        return fail("attach_child", "no memory", NULL);
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t status = vt->model_get_or_load(context, KEY, unexpected_loader, &w, &handle, &model);
    int rc = 0;
    if (status != RM_OK) {
        fprintf(stderr, "# attaching process %ld: model_get_or_load: %s: %s\n", (long)getpid(),
                vt->error_name(status), vt->context_last_error(context));
        rc = -1;
    } else {
        rc = weights_intact(&w, model, "the attaching process's read") ? 0 : -1;
        vt->model_release(context, handle);
    }
    vt->context_destroy(context);
    free(w.buffer);
    return rc;
}

static void *parent_thread(void *arg)
{
    worker *w = arg;
    shared_run *r = w->run;
    /* Until the child is done; paced, so that the child gets the CPUs. */
    while (atomic_load(&r->running) != 0 && atomic_load(&r->errors) == 0) {
        rm_context *context = r->contexts[next_random(&w->random) & 1];
        use_weights(w, context, weights_loader, false);
        usleep(5000);
    }
    return NULL;
}

static int importer_process(const char *namespace_name)
{
    const char *name = "importer_process";
    atomic_store(&loader_calls, 0);
    shared_run r = {.running = 1};
    r.contexts[0] = make_context(namespace_name);
    r.contexts[1] = make_context(namespace_name);
    if (r.contexts[0] == NULL || r.contexts[1] == NULL)
        return fail(name, "context_create failed", NULL);
    worker workers[PARENT_THREADS + 1];
    pthread_t threads_of_parent[PARENT_THREADS];
    worker *main_worker = &workers[PARENT_THREADS];
    if (worker_init(main_worker, &r, PARENT_THREADS) != 0)
        return fail(name, "no memory", NULL);
    rm_model_handle *held = NULL;
    void *model = NULL;
    int32_t status =
        vt->model_get_or_load(r.contexts[0], KEY, weights_loader, main_worker, &held, &model);
    int rc = 0;
    if (status != RM_OK)
        rc = fail(name, "the parent's load failed", vt->context_last_error(r.contexts[0]));
    else if (!weights_intact(main_worker, model, "the parent's read after its load"))
        rc = fail(name, r.reason, NULL);
    int started = 0;
    pid_t child = -1;
    if (rc == 0) {
        for (; started < PARENT_THREADS; started++)
            if (worker_init(&workers[started], &r, started) != 0 ||
                pthread_create(&threads_of_parent[started], NULL, parent_thread,
                               &workers[started]) != 0)
                break;
        fflush(NULL);
        /* posix_spawn, not fork + exec: fork's atfork handlers lock every
         * mutex of the bundled allocator, more than TSan's deadlock
         * detector tracks per thread. */
        char *child_argv[] = {(char *)self_path, "--importer", (char *)namespace_name, NULL};
        if (posix_spawn(&child, self_path, NULL, NULL, child_argv, environ) != 0)
            child = -1;
    }
    int child_status = 0;
    bool child_ok = child > 0 && waitpid(child, &child_status, 0) == child &&
                    WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0;
    atomic_store(&r.running, 0);
    for (int i = 0; i < started; i++)
        pthread_join(threads_of_parent[i], NULL);
    if (rc == 0 && atomic_load(&r.errors) != 0)
        rc = fail(name, r.reason, NULL);
    if (rc == 0 && !child_ok)
        rc = fail(name, "the importer process failed", NULL);
    if (rc == 0 && atomic_load(&loader_calls) != 1)
        rc = fail(name, "the weights were loaded more than once", NULL);
    if (rc == 0 && !weights_intact(main_worker, model, "the parent's read after the child"))
        rc = fail(name, r.reason, NULL);
    if (rc == 0) {
        rm_model_info row = RM_STRUCT_INIT(rm_model_info);
        uint32_t count = 0;
        status = vt->registry_list(r.contexts[1], &row, sizeof row, 1, &count);
        if (status != RM_OK || count != 1 || row.refcount != 1 || row.holders != 1) {
            char detail[160];
            snprintf(detail, sizeof detail, "%s, %u row(s), refcount %llu, holders %u",
                     vt->error_name(status), count, (unsigned long long)row.refcount,
                     row.holders);
            rc = fail(name, "the parent's handle is not the only reference left", detail);
        }
    }
    fprintf(stderr, "# %s: the parent's threads read the weights %ld times\n", name,
            atomic_load(&r.reads));
    if (held != NULL)
        vt->model_release(r.contexts[0], held);
    vt->context_destroy(r.contexts[1]);
    vt->context_destroy(r.contexts[0]);
    char why[128];
    if (rc == 0 && no_device_memory_left(why, sizeof why) != 0)
        rc = fail(name, "device memory left after every context was destroyed", why);
    for (int i = 0; i < started; i++)
        free(workers[i].buffer);
    free(main_worker->buffer);
    return rc;
}

/* ---- 3 serving_while_weights_go ------------------------------------------ */

/* Loads, checks, releases and evicts the weights of its own namespace,
 * over and over: each eviction may leave the process with no weights
 * mapped (its rm-weights server then stops) just as the other thread's
 * load publishes its weights. A thread that finds itself holding weights
 * the process does not serve keeps them, and both stop. */
static void *namespace_churn_thread(void *arg)
{
    worker *w = arg;
    shared_run *r = w->run;
    rm_context *context = r->contexts[w->index];
    for (int round = 0; round < r->rounds && atomic_load(&r->errors) == 0 &&
                        atomic_load(&r->unserved) == 0;
         round++) {
        rm_model_handle *handle = NULL;
        void *model = NULL;
        int32_t status = vt->model_get_or_load(context, KEY, weights_loader, w, &handle, &model);
        if (status != RM_OK) {
            if (atomic_load(&r->unserved) == 0)
                run_error(r, "model_get_or_load", status, context);
            break;
        }
        (void)weights_intact(w, model, "read after model_get_or_load");
        if (!serving_weights() && atomic_exchange(&r->unserved, 1) == 0) {
            r->kept = handle;
            r->kept_index = w->index;
            break;
        }
        vt->model_release(context, handle);
        status = vt->model_evict(context, KEY);
        if (status != RM_OK)
            run_error(r, "model_evict of weights nobody holds", status, context);
    }
    return NULL;
}

/* Runs this program as a process that attaches to `namespace_name`'s
 * weights once (attach_child); true when it got them. */
static bool attached_from_another_process(const char *namespace_name)
{
    fflush(NULL);
    char *child_argv[] = {(char *)self_path, "--attach", (char *)namespace_name, NULL};
    pid_t child = -1;
    int status = 0;
    return posix_spawn(&child, self_path, NULL, NULL, child_argv, environ) == 0 &&
           waitpid(child, &status, 0) == child && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0;
}

static int serving_while_weights_go(char namespaces[CHURNERS][48])
{
    const char *name = "serving_while_weights_go";
    atomic_store(&loader_calls, 0);
    shared_run r = {.rounds = stress_scaled(400), .running = 1};
    worker workers[CHURNERS];
    for (int i = 0; i < CHURNERS; i++) {
        r.contexts[i] = make_context(namespaces[i]);
        if (r.contexts[i] == NULL)
            return fail(name, "context_create failed", NULL);
        if (worker_init(&workers[i], &r, i) != 0)
            return fail(name, "no memory", NULL);
    }
    pthread_t threads[CHURNERS];
    for (int i = 0; i < CHURNERS; i++)
        pthread_create(&threads[i], NULL, namespace_churn_thread, &workers[i]);
    for (int i = 0; i < CHURNERS; i++)
        pthread_join(threads[i], NULL);
    int rc = atomic_load(&r.errors) != 0 ? fail(name, r.reason, NULL) : 0;
    if (rc == 0 && atomic_load(&r.unserved) != 0) {
        /* Still held, and the other threads stopped. Does another process
         * get the weights from this one? */
        const char *kept_namespace = namespaces[r.kept_index];
        bool still_unserved = !serving_weights();
        bool attached = attached_from_another_process(kept_namespace);
        char detail[320];
        snprintf(detail, sizeof detail,
                 "a thread held the weights of namespace %s while this process (pid %ld) did "
                 "not listen on its weights socket @rm_plugin.weights.%ld.*; after the "
                 "threads stopped it %s, and a process attaching to them %s",
                 kept_namespace, (long)getpid(), (long)getpid(),
                 still_unserved ? "still did not" : "did again",
                 attached ? "got them" : "failed (its message is on stderr)");
        rc = fail(name, "the holder of device weights does not serve them", detail);
    }
    if (r.kept != NULL)
        vt->model_release(r.contexts[r.kept_index], r.kept);
    int calls = atomic_load(&loader_calls);
    if (rc == 0 && calls != CHURNERS * r.rounds)
        rc = fail(name, "not one load per round and namespace", NULL);
    fprintf(stderr, "# %s: %d loads, %ld reads\n", name, calls, atomic_load(&r.reads));
    for (int i = 0; i < CHURNERS; i++)
        vt->context_destroy(r.contexts[i]);
    char why[128];
    if (rc == 0 && no_device_memory_left(why, sizeof why) != 0)
        rc = fail(name, "device memory left after every context was destroyed", why);
    for (int i = 0; i < CHURNERS; i++)
        free(workers[i].buffer);
    return rc;
}

static char namespace_base[40];

static int run_same_process_contexts(void)
{
    char namespace_name[48];
    snprintf(namespace_name, sizeof namespace_name, "%sa", namespace_base);
    return same_process_contexts(namespace_name);
}

static int run_importer_process(void)
{
    char namespace_name[48];
    snprintf(namespace_name, sizeof namespace_name, "%sb", namespace_base);
    return importer_process(namespace_name);
}

static int run_serving_while_weights_go(void)
{
    char namespaces[CHURNERS][48];
    for (int i = 0; i < CHURNERS; i++)
        snprintf(namespaces[i], sizeof namespaces[i], "%sc%d", namespace_base, i);
    return serving_while_weights_go(namespaces);
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    fake_driver = getenv("FAKE_CUDA_LIBRARY");
    if (fake_driver == NULL || fake_driver[0] == '\0') {
        fprintf(stderr, "# FAKE_CUDA_LIBRARY is not set: skipped\n");
        return 77;
    }
    bool child = argc == 3 && strcmp(argv[1], "--importer") == 0;
    bool attacher = argc == 3 && strcmp(argv[1], "--attach") == 0;
    snprintf(namespace_base, sizeof namespace_base, "gwstress%ld", (long)getpid());
    expected = malloc(MODEL_BYTES);
    if (expected == NULL)
        return 2;
    td_pattern(PATTERN_SEED, 0, expected, (size_t)MODEL_BYTES);
    /* The driver as a host reaches it, primed before any thread runs:
     * td_enter() retains the primary context on its first call. */
    if (td_open(&driver) != 0 || td_enter(&driver, 0) != 0) {
        fprintf(stderr, "# %s\n", driver.why);
        return 2;
    }
    td_leave(&driver);
    rm_loaded_plugin plugin;
    char error[512];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 4), &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "%s\n", error);
        return 2;
    }
    vt = plugin.vtable;
    int failed;
    if (child) {
        failed = importer_child(argv[2]) != 0;
    } else if (attacher) {
        failed = attach_child(argv[2]) != 0;
    } else {
        const stress_scenario scenarios[] = {
            {"same_process_contexts", run_same_process_contexts},
            {"importer_process", run_importer_process},
            {"serving_while_weights_go", run_serving_while_weights_go},
        };
        failed = stress_run(scenarios, sizeof scenarios / sizeof scenarios[0], NULL, NULL);
    }
    rm_plugin_unload(&plugin);
    td_close(&driver);
    free(expected);
    return failed == 0 ? 0 : 1;
}
