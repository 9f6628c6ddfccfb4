/* tensor_stress: the tensor API's concurrent paths in a plain process, so
 * that ThreadSanitizer (which cannot run Criterion) watches the plugin's
 * real locking and the atomics of the control segment.
 *
 * Scenarios, each on fresh contexts of a namespace private to this run:
 *  1 handoff_churn: 4 threads allocate in context A (the owner), fill,
 *    export, import in context B, verify through B's read-only view, and
 *    release both handles in a random order; with RM_TENSOR_ALLOC_ZERO and
 *    DLPack exports deleted on another thread now and then. Afterwards
 *    every tensor is freed (A's stats: live 0, frees == allocations), and
 *    the session counters are back to 0.
 *  2 quota_race: 4 threads allocate 64 KiB tensors of one session against
 *    shm.session_quota = 1 MiB and hold them: together they get exactly 16
 *    (never more), the rest RM_E_QUOTA_EXCEEDED.
 *  3 remote_release_race: the owner allocates while 3 importer threads of
 *    context B release what it handed them: every remote release is freed
 *    by the owner exactly once (frees == allocations at the end).
 * Prints "ok   name" / "FAIL name: reason" and "N passed, M failed"; exits
 * 0 only when all passed. Environment: RM_PLUGIN_PATH (required),
 * RM_STRESS_SCALE (iterations multiplier, default 1).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_env.h"
#include "stress_driver.h"

#define THREADS 4
#define QUOTA_BYTES ((uint64_t)1 << 20)
#define QUOTA_TENSOR ((uint64_t)64 << 10)

static const rm_plugin_v1 *vt;
static char namespace_name[40];
static double scale = 1.0;

static int fail(const char *name, const char *reason, const char *detail)
{
    printf("FAIL %s: %s%s%s\n", name, reason, detail ? ": " : "", detail ? detail : "");
    return -1;
}

static rm_context *make_context(const char *quota)
{
    rm_config_entry entries[] = {
        {"shm.namespace", namespace_name},
        {"shm.pool_bytes", "256M"},
        {"shm.session_quota", quota},
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

static rm_tensor_spec bytes_spec(uint64_t bytes, uint64_t session, uint64_t flags)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)bytes;
    spec.session = session;
    spec.flags = flags;
    return spec;
}

/* ---- 1 handoff_churn ---------------------------------------------------- */

typedef struct churn {
    rm_context *owner, *importer;
    int rounds;
    _Atomic int errors;
    _Atomic(rm_dl_managed_tensor *) pending_dlpack; /* deleted by another thread */
    char reason[256];
} churn;

static void churn_error(churn *c, const char *what, rm_context *context)
{
    if (atomic_fetch_add(&c->errors, 1) == 0)
        snprintf(c->reason, sizeof c->reason, "%s: %s", what,
                 vt->context_last_error(context));
}

static void *churn_thread(void *arg)
{
    churn *c = arg;
    uint64_t random = (uint64_t)(uintptr_t)&random | 1;
    for (int round = 0; round < c->rounds && atomic_load(&c->errors) == 0; round++) {
        uint64_t bytes = 2 + next_random(&random) % (256 << 10); /* first != last byte */
        uint64_t flags = next_random(&random) % 4 == 0 ? RM_TENSOR_ALLOC_ZERO : 0;
        rm_tensor_spec spec = bytes_spec(bytes, next_random(&random) % 3, flags);
        rm_tensor *tensor = NULL;
        if (vt->tensor_allocate(c->owner, &spec, &tensor) != RM_OK) {
            churn_error(c, "allocate", c->owner);
            break;
        }
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        vt->tensor_info(c->owner, tensor, &info);
        unsigned char *data = info.data;
        if (flags & RM_TENSOR_ALLOC_ZERO)
            for (uint64_t i = 0; i < bytes; i += 997)
                if (data[i] != 0) {
                    churn_error(c, "ALLOC_ZERO left a non-zero byte", NULL);
                    break;
                }
        unsigned char mark = (unsigned char)round;
        data[0] = mark;
        data[bytes - 1] = (unsigned char)(mark ^ 0x5a);
        uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
        rm_tensor *view = NULL;
        if (vt->tensor_export(c->owner, tensor, descriptor, sizeof descriptor) != RM_OK) {
            churn_error(c, "export", c->owner);
        } else if (vt->tensor_import(c->importer, descriptor, sizeof descriptor, 0, &view) !=
                   RM_OK) {
            churn_error(c, "import", c->importer);
        } else {
            rm_tensor_info seen = RM_STRUCT_INIT(rm_tensor_info);
            vt->tensor_info(c->importer, view, &seen);
            const unsigned char *bytes_seen = seen.data;
            if (seen.nbytes != bytes || bytes_seen[0] != mark ||
                bytes_seen[bytes - 1] != (unsigned char)(mark ^ 0x5a))
                churn_error(c, "the importer saw other bytes", NULL);
        }
        if (round % 16 == 0 && view != NULL) {
            rm_dl_managed_tensor *managed = NULL;
            if (vt->tensor_to_dlpack(c->importer, view, &managed) == RM_OK) {
                managed = atomic_exchange(&c->pending_dlpack, managed);
                if (managed != NULL)
                    managed->deleter(managed); /* another thread's export */
            }
        }
        if (next_random(&random) & 1) {
            vt->tensor_release(c->owner, tensor);
            if (view != NULL)
                vt->tensor_release(c->importer, view);
        } else {
            if (view != NULL)
                vt->tensor_release(c->importer, view);
            vt->tensor_release(c->owner, tensor);
        }
    }
    return NULL;
}

static int handoff_churn(void)
{
    const char *name = "handoff_churn";
    churn c = {.rounds = (int)(4000 * scale) + 1};
    c.owner = make_context("0");
    c.importer = make_context("0");
    if (c.owner == NULL || c.importer == NULL)
        return fail(name, "context_create failed", NULL);
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, churn_thread, &c);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    rm_dl_managed_tensor *left = atomic_exchange(&c.pending_dlpack, NULL);
    if (left != NULL)
        left->deleter(left);
    int rc = 0;
    if (atomic_load(&c.errors) != 0)
        rc = fail(name, c.reason, NULL);
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    vt->tensor_pool_stats(c.owner, &stats);
    uint64_t in_session = 1;
    for (uint64_t s = 0; s < 3 && in_session != 0; s++)
        vt->tensor_session_bytes(c.owner, s, &in_session);
    if (rc == 0 && (stats.live_tensors != 0 || stats.live_bytes != 0 ||
                    stats.frees != stats.allocations || in_session != 0)) {
        char detail[160];
        snprintf(detail, sizeof detail, "live %llu (%llu bytes), %llu frees of %llu",
                 (unsigned long long)stats.live_tensors, (unsigned long long)stats.live_bytes,
                 (unsigned long long)stats.frees, (unsigned long long)stats.allocations);
        rc = fail(name, "tensors left behind", detail);
    }
    fprintf(stderr, "# %s: %llu allocations, %llu remote releases\n", name,
            (unsigned long long)stats.allocations, (unsigned long long)stats.remote_releases);
    vt->context_destroy(c.importer);
    vt->context_destroy(c.owner);
    return rc;
}

/* ---- 2 quota_race --------------------------------------------------------- */

typedef struct quota_race {
    rm_context *owner;
    pthread_barrier_t start;
    rm_tensor *held[THREADS][32];
    int granted[THREADS];
    _Atomic int unexpected;
} quota_race;

typedef struct quota_arg {
    quota_race *race;
    int index;
} quota_arg;

static void *quota_thread(void *arg)
{
    quota_arg *self = arg;
    quota_race *race = self->race;
    rm_tensor_spec spec = bytes_spec(QUOTA_TENSOR, 7, 0);
    pthread_barrier_wait(&race->start);
    for (int i = 0; i < 32; i++) {
        rm_tensor *tensor = NULL;
        int32_t rc = vt->tensor_allocate(race->owner, &spec, &tensor);
        if (rc == RM_OK)
            race->held[self->index][race->granted[self->index]++] = tensor;
        else if (rc != RM_E_QUOTA_EXCEEDED)
            atomic_fetch_add(&race->unexpected, 1);
    }
    return NULL;
}

static int quota_race_scenario(void)
{
    const char *name = "quota_race";
    quota_race race = {0};
    race.owner = make_context("1M");
    if (race.owner == NULL)
        return fail(name, "context_create failed", NULL);
    int rc = 0;
    for (int repeat = 0; repeat < (int)(20 * scale) + 1 && rc == 0; repeat++) {
        pthread_barrier_init(&race.start, NULL, THREADS);
        memset(race.granted, 0, sizeof race.granted);
        pthread_t threads[THREADS];
        quota_arg args[THREADS];
        for (int i = 0; i < THREADS; i++) {
            args[i] = (quota_arg){.race = &race, .index = i};
            pthread_create(&threads[i], NULL, quota_thread, &args[i]);
        }
        for (int i = 0; i < THREADS; i++)
            pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&race.start);
        int total = 0;
        for (int i = 0; i < THREADS; i++)
            total += race.granted[i];
        if (total != (int)(QUOTA_BYTES / QUOTA_TENSOR)) {
            char detail[64];
            snprintf(detail, sizeof detail, "%d tensors granted, quota allows %d", total,
                     (int)(QUOTA_BYTES / QUOTA_TENSOR));
            rc = fail(name, "quota not exact", detail);
        }
        if (atomic_load(&race.unexpected) != 0)
            rc = fail(name, "an allocation failed with another code", NULL);
        for (int i = 0; i < THREADS; i++)
            for (int j = 0; j < race.granted[i]; j++)
                vt->tensor_release(race.owner, race.held[i][j]);
    }
    vt->context_destroy(race.owner);
    return rc;
}

/* ---- 3 remote_release_race ------------------------------------------------ */

#define HANDOFF_QUEUE 64

typedef struct remote {
    rm_context *owner, *importer;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    rm_tensor *queue[HANDOFF_QUEUE];
    int head, tail;
    bool done;
    _Atomic int errors;
} remote;

static void *remote_importer(void *arg)
{
    remote *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        while (r->head == r->tail && !r->done)
            pthread_cond_wait(&r->changed, &r->lock);
        if (r->head == r->tail && r->done) {
            pthread_mutex_unlock(&r->lock);
            return NULL;
        }
        rm_tensor *view = r->queue[r->head++ % HANDOFF_QUEUE];
        pthread_cond_broadcast(&r->changed);
        pthread_mutex_unlock(&r->lock);
        if (vt->tensor_release(r->importer, view) != RM_OK)
            atomic_fetch_add(&r->errors, 1);
    }
}

static int remote_release_race(void)
{
    const char *name = "remote_release_race";
    remote r = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};
    r.owner = make_context("0");
    r.importer = make_context("0");
    if (r.owner == NULL || r.importer == NULL)
        return fail(name, "context_create failed", NULL);
    pthread_t threads[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&threads[i], NULL, remote_importer, &r);
    int rounds = (int)(5000 * scale) + 1;
    for (int i = 0; i < rounds && atomic_load(&r.errors) == 0; i++) {
        rm_tensor_spec spec = bytes_spec(4096, 0, 0);
        rm_tensor *tensor = NULL, *view = NULL;
        uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
        if (vt->tensor_allocate(r.owner, &spec, &tensor) != RM_OK ||
            vt->tensor_export(r.owner, tensor, descriptor, sizeof descriptor) != RM_OK ||
            vt->tensor_import(r.importer, descriptor, sizeof descriptor, 0, &view) != RM_OK) {
            atomic_fetch_add(&r.errors, 1);
            break;
        }
        vt->tensor_release(r.owner, tensor); /* the importer's release frees it */
        pthread_mutex_lock(&r.lock);
        while (r.tail - r.head == HANDOFF_QUEUE)
            pthread_cond_wait(&r.changed, &r.lock);
        r.queue[r.tail++ % HANDOFF_QUEUE] = view;
        pthread_cond_broadcast(&r.changed);
        pthread_mutex_unlock(&r.lock);
    }
    pthread_mutex_lock(&r.lock);
    r.done = true;
    pthread_cond_broadcast(&r.changed);
    pthread_mutex_unlock(&r.lock);
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);
    int rc = 0;
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    vt->tensor_pool_stats(r.owner, &stats); /* drains the remote releases */
    if (atomic_load(&r.errors) != 0)
        rc = fail(name, "a call failed", vt->context_last_error(r.owner));
    else if (stats.live_tensors != 0 || stats.frees != stats.allocations ||
             stats.remote_releases != stats.allocations) {
        char detail[160];
        snprintf(detail, sizeof detail, "live %llu, frees %llu, remote %llu, allocations %llu",
                 (unsigned long long)stats.live_tensors, (unsigned long long)stats.frees,
                 (unsigned long long)stats.remote_releases,
                 (unsigned long long)stats.allocations);
        rc = fail(name, "remote releases not freed exactly once", detail);
    }
    vt->context_destroy(r.importer);
    vt->context_destroy(r.owner);
    return rc;
}

int main(void)
{
    scale = stress_scale();
    snprintf(namespace_name, sizeof namespace_name, "stress%ld", (long)getpid());
    rm_loaded_plugin plugin;
    char error[512];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 1), &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "%s\n", error);
        return 2;
    }
    vt = plugin.vtable;
    /* The scenarios print their own FAIL lines (fail()): no reason here. */
    const stress_scenario scenarios[] = {
        {"handoff_churn", handoff_churn},
        {"quota_race", quota_race_scenario},
        {"remote_release_race", remote_release_race},
    };
    int failed = stress_run(scenarios, sizeof scenarios / sizeof scenarios[0], NULL, NULL);
    rm_plugin_unload(&plugin);
    return failed == 0 ? 0 : 1;
}
