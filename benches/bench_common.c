/* What the benchmark programs share; see bench_common.h. */
#include "bench_common.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int parse_options(int argc, char **argv, int max_positional,
                  void (*usage)(void), bench_options *out)
{
    *out = (bench_options){0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            out->json = true;
        } else if (strcmp(argv[i], "--quick") == 0) {
            out->quick = true;
        } else if (strcmp(argv[i], "--help") == 0 ||
                   strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        } else if (argv[i][0] == '-' ||
                   out->positional_count == max_positional ||
                   out->positional_count == BENCH_MAX_POSITIONAL) {
            usage();
            return 2;
        } else {
            out->positional[out->positional_count++] = argv[i];
        }
    }
    out->plugin_path = out->positional_count > 0 ? out->positional[0]
                                                 : getenv("RM_PLUGIN_PATH");
    if (out->plugin_path == NULL || out->plugin_path[0] == '\0') {
        usage();
        return 2;
    }
    return -1;
}

const rm_plugin_v1 *load_plugin(const char *path, uint32_t min_abi,
                                rm_loaded_plugin *out)
{
    char error[768];
    if (rm_plugin_load(path, NULL, min_abi, RM_ABI_VERSION_CURRENT, NULL, out,
                       error, sizeof error) != 0)
        die(error);
    return out->vtable;
}

uint64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

_Noreturn void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", bench_program, what);
    exit(1);
}

_Noreturn void die_errno(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", bench_program, what, strerror(errno));
    exit(1);
}

_Noreturn void die_status(const rm_plugin_v1 *vt, rm_context *context,
                          const char *what, int32_t status)
{
    fprintf(stderr, "%s: %s failed: %s (%s)\n", bench_program, what,
            vt->error_name(status), vt->context_last_error(context));
    exit(1);
}

_Noreturn void skip_cuda_bench(bool json, const char *bench, const char *prefix,
                               const char *why, const char *driver_library)
{
    fprintf(stderr, "%s: skipped: %s%s\n", bench_program, prefix, why);
    if (json) {
        printf("{\"bench\":\"%s\",\"skipped\":true,\"reason\":\"", bench);
        for (const char *c = why; *c != '\0'; c++)
            if (*c == '"' || *c == '\\')
                printf("\\%c", *c);
            else if ((unsigned char)*c >= 0x20)
                putchar(*c);
        printf("\",\"driver_library\":\"%s\"}\n", driver_library);
    }
    fflush(stdout);
    exit(77);
}

void cuda_driver_from_configuration(const rm_plugin_v1 *vt, char *out, size_t out_size)
{
    rm_config_entry entries[] = {{.key = "features", .value = "none"}};
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = entries;
    options.entry_count = 1;
    rm_context *context;
    int32_t status = vt->context_create(&options, &context);
    if (status != RM_OK)
        die_status(vt, NULL, "context_create ($RM_PLUGIN_CONFIG)", status);
    status = vt->config_get(context, "cuda.driver", out, out_size, NULL);
    if (status != RM_OK)
        die_status(vt, context, "config_get(cuda.driver)", status);
    vt->context_destroy(context);
}

void *checked_malloc(size_t bytes)
{
    void *memory = malloc(bytes);
    if (memory == NULL)
        die("out of memory");
    return memory;
}

void *checked_calloc(size_t count, size_t size)
{
    void *memory = calloc(count, size);
    if (memory == NULL)
        die("out of memory");
    return memory;
}

void write_full(int fd, const void *buffer, size_t bytes)
{
    const char *at = buffer;
    while (bytes > 0) {
        ssize_t done = write(fd, at, bytes);
        if (done < 0 && errno == EINTR)
            continue;
        if (done <= 0)
            die_errno("pipe write (did the other process die?)");
        at += done;
        bytes -= (size_t)done;
    }
}

bool read_full(int fd, void *buffer, size_t bytes)
{
    char *at = buffer;
    size_t left = bytes;
    while (left > 0) {
        ssize_t done = read(fd, at, left);
        if (done < 0 && errno == EINTR)
            continue;
        if (done < 0)
            die_errno("pipe read");
        if (done == 0) {
            if (left == bytes)
                return false;
            die("pipe closed in the middle of a message");
        }
        at += done;
        left -= (size_t)done;
    }
    return true;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, int count, double fraction)
{
    int index = (int)(fraction * (count - 1) + 0.5);
    return sorted[index];
}

latency_figure summarise(double *samples, int count)
{
    latency_figure figure = {0};
    if (count <= 0)
        return figure;
    qsort(samples, (size_t)count, sizeof *samples, compare_doubles);
    figure.median_ns = percentile(samples, count, 0.5);
    figure.p10_ns = percentile(samples, count, 0.1);
    figure.p90_ns = percentile(samples, count, 0.9);
    figure.min_ns = samples[0];
    figure.max_ns = samples[count - 1];
    figure.samples = count;
    return figure;
}

const char *size_label(uint64_t bytes, char *out, size_t out_size)
{
    if (bytes >= GIB && bytes % GIB == 0)
        snprintf(out, out_size, "%llu GiB", (unsigned long long)(bytes / GIB));
    else if (bytes >= MIB && bytes % MIB == 0)
        snprintf(out, out_size, "%llu MiB", (unsigned long long)(bytes / MIB));
    else if (bytes >= KIB && bytes % KIB == 0)
        snprintf(out, out_size, "%llu KiB", (unsigned long long)(bytes / KIB));
    else
        snprintf(out, out_size, "%llu B", (unsigned long long)bytes);
    return out;
}

const char *time_label(double ns, char *out, size_t out_size)
{
    if (ns < 1e3)
        snprintf(out, out_size, "%.1f ns", ns);
    else if (ns < 1e6)
        snprintf(out, out_size, "%.2f us", ns / 1e3);
    else if (ns < 1e9)
        snprintf(out, out_size, "%.2f ms", ns / 1e6);
    else
        snprintf(out, out_size, "%.3f s", ns / 1e9);
    return out;
}

const char *met_label(bool met)
{
    return met ? "met" : "missed";
}

int shm_leftovers(const char *prefix, const char *exact, bool unlink_them,
                  const char *listing)
{
    DIR *dir = opendir("/dev/shm");
    if (dir == NULL)
        return 0;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, prefix, strlen(prefix)) != 0 &&
            (exact == NULL || strcmp(entry->d_name, exact) != 0))
            continue;
        if (unlink_them) {
            char name[300];
            snprintf(name, sizeof name, "/%s", entry->d_name);
            shm_unlink(name);
        } else {
            fprintf(stderr, "%s: %s: %s\n", bench_program, listing,
                    entry->d_name);
        }
        count++;
    }
    closedir(dir);
    return count;
}

static pthread_mutex_t companion_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t companion_wake = PTHREAD_COND_INITIALIZER;
static bool companion_running;
static pthread_t companion;

static void *companion_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&companion_lock);
    while (companion_running)
        pthread_cond_wait(&companion_wake, &companion_lock);
    pthread_mutex_unlock(&companion_lock);
    return NULL;
}

void host_companion_start(void)
{
    companion_running = true;
    int err = pthread_create(&companion, NULL, companion_main, NULL);
    if (err != 0) {
        errno = err;
        die_errno("pthread_create (host companion thread)");
    }
}

void host_companion_stop(void)
{
    pthread_mutex_lock(&companion_lock);
    companion_running = false;
    pthread_cond_signal(&companion_wake);
    pthread_mutex_unlock(&companion_lock);
    pthread_join(companion, NULL);
}
