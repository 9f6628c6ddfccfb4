/* The host's log callback never runs under a context's tensor lock: while
 * the callback is still running, another thread of the host can use the
 * same context. (A slow sink, a file or a Python logger waiting for the
 * GIL, must not stall every thread of a context.)
 *
 * The line used is the one-time warning that tensors fall back to the
 * heap. It is made by the first allocation of a context whose pool cannot
 * be created, written while the allocation holds the lock: the child
 * lowers RLIMIT_NOFILE to the descriptors it has, so the pool's shm_open()
 * fails with EMFILE. Inside the callback a second thread calls
 * tensor_pool_stats() on the same context and must return within 2 s. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plugin_env.h"

TestSuite(tensor_log, .timeout = 60);

typedef struct sink_probe {
    const rm_plugin_v1 *vt;
    rm_context *context;
    pthread_mutex_t mutex;
    pthread_cond_t done_changed;
    bool stats_done;
    int32_t stats_rc;
    atomic_int fallback_lines;
    atomic_int probes_passed;
    atomic_int probes_failed;
} sink_probe;

static sink_probe probe = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .done_changed = PTHREAD_COND_INITIALIZER,
};

static void *call_stats(void *unused)
{
    (void)unused;
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    int32_t rc = probe.vt->tensor_pool_stats(probe.context, &stats);
    pthread_mutex_lock(&probe.mutex);
    probe.stats_done = true;
    probe.stats_rc = rc;
    pthread_cond_signal(&probe.done_changed);
    pthread_mutex_unlock(&probe.mutex);
    return NULL;
}

static void log_sink(void *user, int32_t level, const char *message)
{
    (void)user, (void)level;
    if (probe.context == NULL || strstr(message, "fall back to private heap memory") == NULL)
        return;
    atomic_fetch_add(&probe.fallback_lines, 1);
    pthread_mutex_lock(&probe.mutex);
    probe.stats_done = false;
    pthread_mutex_unlock(&probe.mutex);
    pthread_t thread;
    if (pthread_create(&thread, NULL, call_stats, NULL) != 0) {
        atomic_fetch_add(&probe.probes_failed, 1);
        return;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 2;
    pthread_mutex_lock(&probe.mutex);
    int wait = 0;
    while (!probe.stats_done && wait == 0)
        wait = pthread_cond_timedwait(&probe.done_changed, &probe.mutex, &deadline);
    bool done = probe.stats_done && probe.stats_rc == RM_OK;
    pthread_mutex_unlock(&probe.mutex);
    atomic_fetch_add(done ? &probe.probes_passed : &probe.probes_failed, 1);
    if (!done)
        fprintf(stderr, "tensor_pool_stats on another thread did not return within 2 s of "
                        "the log callback: the callback runs under the context's lock\n");
    /* A thread still blocked gets the lock once this callback returns. */
    if (done)
        pthread_join(thread, NULL);
    else
        pthread_detach(thread);
}

/* Exit codes of the child: 0 passed, 77 skipped, else the failed step. */
static int child_main(void)
{
    const char *path = getenv("RM_PLUGIN_PATH");
    if (path == NULL)
        return 2;
    rm_host_services services = RM_STRUCT_INIT(rm_host_services);
    services.log = log_sink;
    rm_loaded_plugin plugin;
    char why[512];
    if (rm_plugin_load(path, NULL, RM_ABI_VERSION(1, 1), RM_ABI_VERSION_CURRENT, &services,
                       &plugin, why, sizeof why) != 0) {
        fprintf(stderr, "load: %s\n", why);
        return 3;
    }
    probe.vt = plugin.vtable;
    if (!(probe.vt->features_built & RM_FEATURE_SHARED_MEMORY))
        return 77;
    char name_space[40];
    snprintf(name_space, sizeof name_space, "tlog-%ld", (long)getpid());
    rm_config_entry entries[] = {{.key = "shm.namespace", .value = name_space}};
    rm_context *context;
    if (create_context_of(probe.vt, entries, 1, &context) != RM_OK) {
        fprintf(stderr, "context_create: %s\n", probe.vt->context_last_error(NULL));
        return 4;
    }
    probe.context = context;

    /* No descriptor left to open: the pool's shm_open() fails (EMFILE).
     * Every free number below the highest open one is filled first (a new
     * descriptor takes the lowest free number). */
    int highest = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) != -1)
            highest = fd;
    int filler;
    do
        filler = open("/dev/null", O_RDONLY | O_CLOEXEC);
    while (filler >= 0 && filler < highest);
    if (filler < 0)
        return 5;
    struct rlimit limit = {.rlim_cur = (rlim_t)filler + 1, .rlim_max = (rlim_t)filler + 1};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
        return 5;

    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){RM_DTYPE_UINT, 8, 1};
    spec.ndim = 1;
    spec.shape[0] = 4096;
    rm_tensor *tensor = NULL;
    int32_t rc = probe.vt->tensor_allocate(context, &spec, &tensor);
    if (rc != RM_OK) {
        fprintf(stderr, "tensor_allocate without descriptors: %s: %s\n", probe.vt->error_name(rc),
                probe.vt->context_last_error(context));
        return 6;
    }
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    if (probe.vt->tensor_pool_stats(context, &stats) != RM_OK || stats.fallbacks != 1 ||
        stats.heap_tensors != 1) {
        fprintf(stderr, "expected one heap fallback: fallbacks %llu, heap tensors %llu\n",
                (unsigned long long)stats.fallbacks, (unsigned long long)stats.heap_tensors);
        return 7;
    }
    probe.vt->tensor_release(context, tensor);
    probe.context = NULL;
    probe.vt->context_destroy(context);
    if (atomic_load(&probe.fallback_lines) != 1) {
        fprintf(stderr, "the fallback warning reached the sink %d times, not once\n",
                atomic_load(&probe.fallback_lines));
        return 8;
    }
    if (atomic_load(&probe.probes_failed) != 0 || atomic_load(&probe.probes_passed) != 1)
        return 9;
    return 0;
}

Test(tensor_log, another_thread_uses_the_context_while_the_log_callback_runs)
{
    fflush(NULL);
    pid_t child = fork();
    cr_assert_geq(child, 0, "fork: %s", strerror(errno));
    if (child == 0)
        _exit(child_main());
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        cr_skip_test("built without shared memory");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child failed step %d, or died (status %#x); its reason is on stderr",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
}
