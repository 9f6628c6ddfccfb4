/* cuda_stress: device tensors' concurrent paths in plain processes, so that
 * ThreadSanitizer (which cannot run Criterion) watches the CUDA backend's
 * locking: the context's lock on allocate, import, record and release, the
 * view's own lock on tensor_wait (which runs without the context's lock,
 * because a host wait blocks), and the holds and opener bits in shared
 * memory. Runs against the test-only fake driver ($FAKE_CUDA_LIBRARY).
 *
 * Scenarios, on contexts of a namespace private to this run:
 *  1 same_process_churn: 4 threads allocate device tensors in context A,
 *    record them, export, import into context B (the exporter's own
 *    pointer: same process), wait on the host and on the default stream,
 *    export DLPack now and then (deleted by another thread), and release
 *    in a random order; a fifth thread calls tensor_reclaim and
 *    tensor_pool_stats meanwhile. Afterwards A has no live device tensor.
 *  2 importer_process_churn: A allocates and records 48 device tensors over
 *    several blocks and hands their text descriptors to a child process
 *    (this program, spawned: CUDA cannot be used after fork()), whose 4
 *    threads import, wait (opened events, cached per view: the view's
 *    lock), read tensor_info and DLPack, and release, over and over, while
 *    a fifth reclaims. The child's holds all go (A's reclaim finds no
 *    holder), and each block's handle was opened once in the child.
 * Prints "ok name" / "FAIL name: reason" and exits 0 only when all passed;
 * 77 (skipped) without $FAKE_CUDA_LIBRARY. Environment: RM_PLUGIN_PATH,
 * FAKE_CUDA_LIBRARY, RM_STRESS_SCALE. */
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

#include "plugin_env.h"
#include "stress_driver.h"

#define THREADS 4
#define HANDED_TENSORS 48

static const rm_plugin_v1 *vt;
static char namespace_name[40];
static const char *fake_driver;

static int fail(const char *name, const char *reason, const char *detail)
{
    printf("FAIL %s: %s%s%s\n", name, reason, detail ? ": " : "", detail ? detail : "");
    return -1;
}

static rm_context *make_context(void)
{
    rm_config_entry entries[] = {
        {"shm.namespace", namespace_name},
        {"cuda.driver", fake_driver},
        {"cuda.block_bytes", "2M"},
        {"cuda.pool_bytes", "256M"},
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

static rm_tensor_spec device_spec(uint64_t bytes)
{
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)bytes;
    snprintf(spec.device, sizeof spec.device, "cuda:0");
    return spec;
}

typedef struct shared_run {
    rm_context *owner, *importer;
    int rounds;
    _Atomic int errors;
    _Atomic int running;
    _Atomic(rm_dl_managed_tensor_versioned *) pending_dlpack;
    char reason[256];
} shared_run;

static void run_error(shared_run *r, const char *what, rm_context *context)
{
    if (atomic_fetch_add(&r->errors, 1) == 0)
        snprintf(r->reason, sizeof r->reason, "%s: %s", what,
                 context != NULL ? vt->context_last_error(context) : "");
}

/* Swaps a DLPack export with the one another thread left, and deletes that
 * one here: deleters run on other threads than the export. */
static void hand_dlpack_over(shared_run *r, rm_dl_managed_tensor_versioned *managed)
{
    managed = atomic_exchange(&r->pending_dlpack, managed);
    if (managed != NULL)
        managed->deleter(managed);
}

static void *upkeep_thread(void *arg)
{
    shared_run *r = arg;
    rm_context *context = r->importer != NULL ? r->importer : r->owner;
    while (atomic_load(&r->running) != 0) {
        rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
        if (vt->tensor_reclaim(context, &report) != RM_OK)
            run_error(r, "tensor_reclaim", context);
        rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
        if (vt->tensor_pool_stats(context, &stats) != RM_OK)
            run_error(r, "tensor_pool_stats", context);
        usleep(200);
    }
    return NULL;
}

/* ---- 1 same_process_churn ------------------------------------------------- */

static void *same_process_thread(void *arg)
{
    shared_run *r = arg;
    uint64_t random = (uint64_t)(uintptr_t)&random | 1;
    for (int round = 0; round < r->rounds && atomic_load(&r->errors) == 0; round++) {
        rm_tensor_spec spec = device_spec(1 + next_random(&random) % (64 << 10));
        rm_tensor *tensor = NULL, *view = NULL;
        if (vt->tensor_allocate(r->owner, &spec, &tensor) != RM_OK) {
            run_error(r, "allocate", r->owner);
            break;
        }
        if (vt->tensor_record(r->owner, tensor, NULL) != RM_OK)
            run_error(r, "record", r->owner);
        uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
        if (vt->tensor_export(r->owner, tensor, descriptor, sizeof descriptor) != RM_OK)
            run_error(r, "export", r->owner);
        else if (vt->tensor_import(r->importer, descriptor, sizeof descriptor, 0, &view) != RM_OK)
            run_error(r, "import", r->importer);
        if (view != NULL) {
            uint64_t flags = round % 2 ? RM_TENSOR_WAIT_HOST : 0;
            if (vt->tensor_wait(r->importer, view, NULL, flags) != RM_OK)
                run_error(r, "wait", r->importer);
            rm_tensor_info mine = RM_STRUCT_INIT(rm_tensor_info);
            rm_tensor_info seen = RM_STRUCT_INIT(rm_tensor_info);
            vt->tensor_info(r->owner, tensor, &mine);
            vt->tensor_info(r->importer, view, &seen);
            if (seen.data != mine.data || seen.device.device_type != 2)
                run_error(r, "the importer in this process saw another pointer", NULL);
            if (round % 8 == 0) {
                rm_dl_managed_tensor_versioned *managed = NULL;
                if (vt->tensor_to_dlpack_versioned(r->importer, view, &managed) == RM_OK)
                    hand_dlpack_over(r, managed);
                else
                    run_error(r, "dlpack", r->importer);
            }
        }
        bool owner_first = next_random(&random) & 1;
        if (owner_first)
            vt->tensor_release(r->owner, tensor);
        if (view != NULL)
            vt->tensor_release(r->importer, view);
        if (!owner_first)
            vt->tensor_release(r->owner, tensor);
    }
    return NULL;
}

static int same_process_churn(void)
{
    const char *name = "same_process_churn";
    shared_run r = {.rounds = stress_scaled(3000), .running = 1};
    r.owner = make_context();
    r.importer = make_context();
    if (r.owner == NULL || r.importer == NULL)
        return fail(name, "context_create failed", NULL);
    pthread_t threads[THREADS], upkeep;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, same_process_thread, &r);
    pthread_create(&upkeep, NULL, upkeep_thread, &r);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&r.running, 0);
    pthread_join(upkeep, NULL);
    rm_dl_managed_tensor_versioned *left = atomic_exchange(&r.pending_dlpack, NULL);
    if (left != NULL)
        left->deleter(left);
    int rc = atomic_load(&r.errors) != 0 ? fail(name, r.reason, NULL) : 0;
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    vt->tensor_pool_stats(r.owner, &stats);
    if (rc == 0 && (stats.cuda_tensors != 0 || stats.cuda_bytes != 0)) {
        char detail[96];
        snprintf(detail, sizeof detail, "%llu device tensors live",
                 (unsigned long long)stats.cuda_tensors);
        rc = fail(name, "tensors left behind", detail);
    }
    fprintf(stderr, "# %s: %llu allocations in %llu blocks\n", name,
            (unsigned long long)stats.allocations, (unsigned long long)stats.cuda_blocks);
    vt->context_destroy(r.importer);
    vt->context_destroy(r.owner);
    return rc;
}

/* ---- 2 importer_process_churn --------------------------------------------- */

typedef struct child_run {
    shared_run shared;
    char (*descriptors)[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    int count;
} child_run;

static void *importer_thread(void *arg)
{
    child_run *run = arg;
    shared_run *r = &run->shared;
    uint64_t random = (uint64_t)(uintptr_t)&random | 1;
    rm_tensor *held[4] = {0};
    for (int round = 0; round < r->rounds && atomic_load(&r->errors) == 0; round++) {
        int slot = (int)(next_random(&random) % 4);
        if (held[slot] != NULL) {
            vt->tensor_release(r->importer, held[slot]);
            held[slot] = NULL;
        }
        const char *text = run->descriptors[next_random(&random) % (uint64_t)run->count];
        rm_tensor *view = NULL;
        uint64_t flags = round % 3 == 0 ? RM_TENSOR_IMPORT_WRITABLE : 0;
        if (vt->tensor_import_text(r->importer, text, flags, &view) != RM_OK) {
            run_error(r, "import", r->importer);
            break;
        }
        if (vt->tensor_wait(r->importer, view, NULL, round % 2 ? RM_TENSOR_WAIT_HOST : 0) !=
            RM_OK)
            run_error(r, "wait", r->importer);
        rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
        if (vt->tensor_info(r->importer, view, &info) != RM_OK || info.device.device_type != 2)
            run_error(r, "info", r->importer);
        if (round % 8 == 0) {
            rm_dl_managed_tensor_versioned *managed = NULL;
            if (vt->tensor_to_dlpack_versioned(r->importer, view, &managed) == RM_OK)
                hand_dlpack_over(r, managed);
            else
                run_error(r, "dlpack", r->importer);
        }
        held[slot] = view;
    }
    for (int i = 0; i < 4; i++)
        if (held[i] != NULL)
            vt->tensor_release(r->importer, held[i]);
    return NULL;
}

/* The child: argv[2] is a file of text descriptors, one per line. */
static int importer_child(const char *path)
{
    static char descriptors[HANDED_TENSORS][RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return fail("importer_child", "cannot read the descriptors", path);
    int count = 0;
    while (count < HANDED_TENSORS && fgets(descriptors[count], sizeof descriptors[0], file)) {
        descriptors[count][strcspn(descriptors[count], "\n")] = '\0';
        count++;
    }
    fclose(file);
    child_run run = {.shared = {.rounds = stress_scaled(4000), .running = 1},
                     .descriptors = descriptors,
                     .count = count};
    run.shared.importer = make_context();
    if (run.shared.importer == NULL)
        return fail("importer_child", "context_create failed", NULL);
    pthread_t threads[THREADS], upkeep;
    for (int i = 0; i < THREADS; i++)
        pthread_create(&threads[i], NULL, importer_thread, &run);
    pthread_create(&upkeep, NULL, upkeep_thread, &run.shared);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    atomic_store(&run.shared.running, 0);
    pthread_join(upkeep, NULL);
    rm_dl_managed_tensor_versioned *left = atomic_exchange(&run.shared.pending_dlpack, NULL);
    if (left != NULL)
        left->deleter(left);
    int rc = atomic_load(&run.shared.errors) != 0
                 ? fail("importer_child", run.shared.reason, NULL)
                 : 0;
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    vt->tensor_pool_stats(run.shared.importer, &stats);
    if (rc == 0 && stats.cuda_handles_opened > stats.cuda_handles_open + 64)
        rc = fail("importer_child", "handles were opened again and again", NULL);
    fprintf(stderr, "# importer child: %llu imports, %llu handles opened, %llu cache hits\n",
            (unsigned long long)stats.imports, (unsigned long long)stats.cuda_handles_opened,
            (unsigned long long)stats.cuda_handle_cache_hits);
    vt->context_destroy(run.shared.importer);
    return rc;
}

extern char **environ;
static const char *self_path;

static int importer_process_churn(void)
{
    const char *name = "importer_process_churn";
    rm_context *owner = make_context();
    if (owner == NULL)
        return fail(name, "context_create failed", NULL);
    char path[64];
    snprintf(path, sizeof path, "/tmp/cuda_stress.%ld", (long)getpid());
    FILE *file = fopen(path, "w");
    rm_tensor *tensors[HANDED_TENSORS] = {0};
    int rc = file == NULL ? fail(name, "cannot write the descriptors", path) : 0;
    for (int i = 0; i < HANDED_TENSORS && rc == 0; i++) {
        rm_tensor_spec spec = device_spec((uint64_t)(i % 6 + 1) << 17); /* 128 KiB .. 768 KiB */
        char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
        if (vt->tensor_allocate(owner, &spec, &tensors[i]) != RM_OK ||
            vt->tensor_record(owner, tensors[i], NULL) != RM_OK ||
            vt->tensor_export_text(owner, tensors[i], text, sizeof text) != RM_OK)
            rc = fail(name, "allocate, record or export", vt->context_last_error(owner));
        else
            fprintf(file, "%s\n", text);
    }
    if (file != NULL)
        fclose(file);
    if (rc == 0) {
        fflush(NULL);
        /* posix_spawn, not fork + exec: fork's atfork handlers lock every
         * mutex of the bundled allocator, more than TSan's deadlock
         * detector tracks per thread. */
        char *child_argv[] = {(char *)self_path, "--importer", path, NULL};
        pid_t child = -1;
        int status = 0;
        if (posix_spawn(&child, self_path, NULL, NULL, child_argv, environ) != 0 ||
            waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            rc = fail(name, "the importer process failed", NULL);
    }
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    vt->tensor_reclaim(owner, &report);
    if (rc == 0 && report.dead_holders != 0)
        rc = fail(name, "the importer left holds that reclaim had to drop", NULL);
    for (int i = 0; i < HANDED_TENSORS; i++)
        if (tensors[i] != NULL)
            vt->tensor_release(owner, tensors[i]);
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    vt->tensor_pool_stats(owner, &stats);
    if (rc == 0 && stats.cuda_tensors != 0)
        rc = fail(name, "device tensors left after the importer released everything", NULL);
    unlink(path);
    vt->context_destroy(owner);
    return rc;
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    fake_driver = getenv("FAKE_CUDA_LIBRARY");
    if (fake_driver == NULL) {
        fprintf(stderr, "# FAKE_CUDA_LIBRARY is not set: skipped\n");
        return 77;
    }
    bool child = argc == 3 && strcmp(argv[1], "--importer") == 0;
    snprintf(namespace_name, sizeof namespace_name, "cstress%ld",
             (long)(child ? getppid() : getpid()));
    rm_loaded_plugin plugin;
    char error[512];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 3), &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "%s\n", error);
        return 2;
    }
    vt = plugin.vtable;
    int failed;
    if (child) {
        failed = importer_child(argv[2]) != 0;
    } else {
        const stress_scenario scenarios[] = {
            {"same_process_churn", same_process_churn},
            {"importer_process_churn", importer_process_churn},
        };
        failed = stress_run(scenarios, sizeof scenarios / sizeof scenarios[0], NULL, NULL);
    }
    rm_plugin_unload(&plugin);
    return failed == 0 ? 0 : 1;
}
