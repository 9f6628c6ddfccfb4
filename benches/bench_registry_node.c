/* Benchmark of the node-scope model registry (ABI 1.2) across real
 * processes, through the real shared object:
 *  (1) memory: N = 1, 2, 4, 8, 10 processes (node_model_holder, exec'd, so
 *      no page is shared with this benchmark by copy-on-write) each get the
 *      same 1 GiB model in node scope and read every page of it; the
 *      figure is the sum of the whole-process Pss from
 *      /proc/<pid>/smaps_rollup over the N processes (their own code, heap,
 *      plugin and everything else included) divided by the model size.
 *      The baseline, in the same run: the same holders in process scope,
 *      where each loads its own copy (ratio about N). Holder 1 loads; the
 *      others start once the model is ready, together, and attach;
 *  (2) attach latency: with the model ready in another process (a holder
 *      that loaded it), this process times model_get_or_load (it maps the
 *      sealed segment; its own loader must not run) and model_release apart
 *      over many cycles, beside the time of the first load (the holder's
 *      model_get_or_load, whose loader fills the whole model), which is the
 *      baseline of the ratio.
 * Every figure is checked: exactly one loader call per node-scope model and
 * one per process in process scope; every holder reads the loader's bytes
 * in every word; registry_list shows N holders and N references; the Pss
 * of shared memory over the N holders adds up to the model (every page
 * mapped, none copied); the process-scope holders hold N copies; the
 * model is evicted once released and nothing of the run is left in
 * /dev/shm.
 *
 * Usage: bench_registry_node [--json] [--quick] [PLUGIN [HOLDER]]
 *        (PLUGIN defaults to $RM_PLUGIN_PATH, HOLDER to node_model_holder
 *        beside this program)
 * --json prints one JSON object per figure per line instead of a table;
 * --quick runs a short version with a 16 MiB model (a CI smoke test, also
 * run under ASan: a few seconds).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "model_pattern.h"
#include "plugin_loader.h"
#include "rm_plugin.h"

extern char **environ;

const char bench_program[] = "bench_registry_node";

/* ---- plans -------------------------------------------------------------- */

#define MAX_COUNTS 5
#define MAX_HOLDERS 10

typedef struct bench_plan {
    uint64_t model_bytes;
    int node_counts[MAX_COUNTS];
    int node_rows;
    int process_counts[MAX_COUNTS];
    int process_rows;
    int attach_rounds;     /* fresh loads, each followed by attach cycles */
    int attach_warmup;     /* untimed cycles per round */
    int attach_cycles;     /* timed cycles per round */
    int ready_timeout_s;   /* for a holder's "ready" and for its exit */
} bench_plan;

static const bench_plan full_plan = {
    .model_bytes = 1 * GIB,
    .node_counts = {1, 2, 4, 8, 10},
    .node_rows = 5,
    .process_counts = {1, 2, 4, 8, 10},
    .process_rows = 5,
    .attach_rounds = 3,
    .attach_warmup = 50,
    .attach_cycles = 1000,
    .ready_timeout_s = 180,
};

static const bench_plan quick_plan = {
    .model_bytes = 16 * MIB,
    .node_counts = {1, 2, 4},
    .node_rows = 3,
    .process_counts = {1, 2},
    .process_rows = 2,
    .attach_rounds = 2,
    .attach_warmup = 5,
    .attach_cycles = 50,
    .ready_timeout_s = 60,
};

/* Targets from the issue. */
#define TARGET_RATIO 1.05
#define TARGET_RATIO_AIM 1.02
#define TARGET_RATIO_AT 10
#define TARGET_ATTACH_NS 50000.0

/* ---- the run ------------------------------------------------------------ */

typedef struct holder {
    pid_t pid;
    int to_fd;   /* its stdin: closing it tells it to release and exit */
    int from_fd; /* its stdout: the "ready" line */
    int loader_calls;
    uint64_t get_ns;
    uint64_t read_ns;
} holder;

static pid_t bench_pid;
static char run_namespace[33]; /* registry.namespace: 1 to 32 characters */
static holder *live_holders[MAX_HOLDERS];
static const char *holder_path;
static const char *plugin_path;

/* ---- labels ------------------------------------------------------------- */

/* "1.004 GiB", "17.3 MiB": for the table. */
static const char *amount_label(double bytes, char *out, size_t out_size)
{
    if (bytes >= (double)GIB)
        snprintf(out, out_size, "%.3f GiB", bytes / (double)GIB);
    else
        snprintf(out, out_size, "%.1f MiB", bytes / (double)MIB);
    return out;
}

/* ---- /dev/shm hygiene --------------------------------------------------- */

/* Names in /dev/shm of this run's namespace (rmreg.<ns>.table and the
 * model segments rmreg.<ns>.m.*; with models_only, just those). Prints
 * them, or unlinks them. */
static int run_segments(bool models_only, bool unlink_them)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.%s", run_namespace,
             models_only ? "m." : "");
    return shm_leftovers(prefix, NULL, unlink_them, "in /dev/shm");
}

/* A failed run (any exit(1)) must leave no holder and no segment behind.
 * The namespace is this run's alone, so nothing else is touched. */
static void clean_up_at_exit(void)
{
    if (getpid() != bench_pid)
        return;
    for (int i = 0; i < MAX_HOLDERS; i++) {
        holder *h = live_holders[i];
        if (h == NULL)
            continue;
        kill(h->pid, SIGKILL);
        waitpid(h->pid, NULL, 0);
        live_holders[i] = NULL;
    }
    run_segments(false, true);
}

/* ---- holders ------------------------------------------------------------ */

static void track_holder(holder *h)
{
    for (int i = 0; i < MAX_HOLDERS; i++) {
        if (live_holders[i] == NULL) {
            live_holders[i] = h;
            return;
        }
    }
    die("too many holders at once");
}

static void untrack_holder(const holder *h)
{
    for (int i = 0; i < MAX_HOLDERS; i++) {
        if (live_holders[i] == h)
            live_holders[i] = NULL;
    }
}

/* Execs node_model_holder with a pipe on its stdin and one on its stdout. */
static void spawn_holder(holder *h, const char *key, uint64_t bytes,
                         bool node_scope)
{
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0)
        die_errno("pipe2");
    char bytes_text[32];
    snprintf(bytes_text, sizeof bytes_text, "%llu", (unsigned long long)bytes);
    char *argv[] = {(char *)holder_path,
                    (char *)plugin_path,
                    run_namespace,
                    (char *)key,
                    bytes_text,
                    node_scope ? "node" : "process",
                    NULL};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    /* dup2 clears close-on-exec on the copies; the originals close. */
    posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
    pid_t pid;
    int error = posix_spawn(&pid, holder_path, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(to_child[0]);
    close(from_child[1]);
    if (error != 0) {
        errno = error;
        die_errno(holder_path);
    }
    *h = (holder){.pid = pid, .to_fd = to_child[1], .from_fd = from_child[0]};
    track_holder(h);
}

static void describe_exit(pid_t pid, char *out, size_t out_size)
{
    int status = 0;
    /* It closed its stdout, so it is exiting: wait a little for it. */
    for (int i = 0; i < 2000; i++) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            if (WIFEXITED(status))
                snprintf(out, out_size, "exit status %d", WEXITSTATUS(status));
            else if (WIFSIGNALED(status))
                snprintf(out, out_size, "killed by signal %d", WTERMSIG(status));
            else
                snprintf(out, out_size, "wait status %#x", status);
            return;
        }
        struct timespec pause = {.tv_nsec = 1000000};
        nanosleep(&pause, NULL);
    }
    snprintf(out, out_size, "still running");
}

/* Reads the holder's "ready" line (within timeout_s) and parses it. */
static void wait_ready(holder *h, int timeout_s)
{
    char line[256];
    size_t used = 0;
    uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000u;
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline) {
            fprintf(stderr,
                    "bench_registry_node: holder %ld not ready after %d s\n",
                    (long)h->pid, timeout_s);
            exit(1);
        }
        struct pollfd input = {.fd = h->from_fd, .events = POLLIN};
        int wait_ms = (int)((deadline - now) / 1000000u) + 1;
        int ready = poll(&input, 1, wait_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            die_errno("poll");
        if (ready == 0)
            continue;
        ssize_t got = read(h->from_fd, line + used, sizeof line - 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            die_errno("read from a holder");
        if (got == 0) {
            char how[64];
            describe_exit(h->pid, how, sizeof how);
            untrack_holder(h);
            fprintf(stderr,
                    "bench_registry_node: holder %ld ended before it was "
                    "ready (%s; its message is above)\n",
                    (long)h->pid, how);
            exit(1);
        }
        used += (size_t)got;
        line[used] = '\0';
        if (strchr(line, '\n') != NULL)
            break;
        if (used == sizeof line - 1)
            die("a holder's line is too long");
    }
    long pid = 0;
    unsigned long long get_ns = 0, read_ns = 0;
    int calls = -1;
    if (sscanf(line, "ready pid=%ld loader_calls=%d get_ns=%llu read_ns=%llu",
               &pid, &calls, &get_ns, &read_ns) != 4 ||
        pid != (long)h->pid) {
        fprintf(stderr, "bench_registry_node: holder %ld said: %s",
                (long)h->pid, line);
        exit(1);
    }
    h->loader_calls = calls;
    h->get_ns = get_ns;
    h->read_ns = read_ns;
}

/* Closes the holder's stdin (it releases the model, destroys its context
 * and exits) and waits for exit status 0. */
static void stop_holder(holder *h, int timeout_s)
{
    close(h->to_fd);
    uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000u;
    int status = 0;
    for (;;) {
        pid_t done = waitpid(h->pid, &status, WNOHANG);
        if (done == h->pid)
            break;
        if (done < 0 && errno != EINTR)
            die_errno("waitpid");
        if (now_ns() >= deadline) {
            fprintf(stderr,
                    "bench_registry_node: holder %ld did not exit within %d s "
                    "of being told to\n",
                    (long)h->pid, timeout_s);
            exit(1);
        }
        struct timespec pause = {.tv_nsec = 1000000};
        nanosleep(&pause, NULL);
    }
    untrack_holder(h);
    close(h->from_fd);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr,
                "bench_registry_node: holder %ld ended badly after release "
                "(wait status %#x)\n",
                (long)h->pid, status);
        exit(1);
    }
}

/* ---- memory figures ----------------------------------------------------- */

typedef struct rollup {
    uint64_t rss, pss, pss_anon, pss_file, pss_shmem; /* bytes */
} rollup;

static rollup read_rollup(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/smaps_rollup", (long)pid);
    FILE *file = fopen(path, "r");
    if (file == NULL)
        die_errno(path);
    rollup r = {0};
    bool have_pss = false, have_shmem = false;
    char line[256];
    while (fgets(line, sizeof line, file) != NULL) {
        char name[64];
        unsigned long long kib;
        if (sscanf(line, "%63[^:]: %llu kB", name, &kib) != 2)
            continue;
        uint64_t bytes = (uint64_t)kib * KIB;
        if (strcmp(name, "Rss") == 0) {
            r.rss = bytes;
        } else if (strcmp(name, "Pss") == 0) {
            r.pss = bytes;
            have_pss = true;
        } else if (strcmp(name, "Pss_Anon") == 0) {
            r.pss_anon = bytes;
        } else if (strcmp(name, "Pss_File") == 0) {
            r.pss_file = bytes;
        } else if (strcmp(name, "Pss_Shmem") == 0) {
            r.pss_shmem = bytes;
            have_shmem = true;
        }
    }
    fclose(file);
    if (!have_pss || !have_shmem) {
        fprintf(stderr, "bench_registry_node: %s has no Pss / Pss_Shmem "
                        "(kernel older than 5.7?)\n", path);
        exit(1);
    }
    return r;
}

/* From /proc/meminfo; 0 if unknown. */
static uint64_t memory_available(void)
{
    FILE *file = fopen("/proc/meminfo", "r");
    if (file == NULL)
        return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, file) != NULL) {
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    }
    fclose(file);
    return (uint64_t)kib * KIB;
}

static uint64_t shm_available(void)
{
    struct statvfs fs;
    if (statvfs("/dev/shm", &fs) != 0)
        return 0;
    return (uint64_t)fs.f_bavail * fs.f_frsize;
}

typedef struct memory_row {
    bool node_scope;
    int processes;
    bool skipped;
    char skip_reason[160];
    rollup sum;                  /* over the N holders */
    double ratio;                /* sum.pss / model */
    double overhead_per_process; /* (sum.pss - copies * model) / N, bytes */
    int loader_calls;
    uint64_t first_load_ns;      /* holder 1's model_get_or_load */
    uint64_t max_read_ns;        /* slowest read of every word */
    uint64_t table_bytes;        /* node scope: the table file's size */
} memory_row;

/* The size of the namespace's node table file: shared memory that the
 * holders map beside the model (its pages count in their Pss once
 * touched; each context's sweep reads every entry). */
static uint64_t node_table_bytes(void)
{
    char path[96];
    snprintf(path, sizeof path, "/dev/shm/rmreg.%s.table", run_namespace);
    struct stat info;
    if (stat(path, &info) != 0)
        die_errno(path);
    return (uint64_t)info.st_size;
}

/* Room for one row, with 256 MiB to spare and, per process, 64 MiB for its
 * own code and heap. */
static bool row_fits(bool node_scope, int processes, uint64_t model,
                     char *reason, size_t reason_size)
{
    uint64_t spare = 256 * MIB + (uint64_t)processes * 64 * MIB;
    uint64_t copies = node_scope ? 1 : (uint64_t)processes;
    uint64_t memory = memory_available();
    if (memory < copies * model + spare) {
        snprintf(reason, reason_size,
                 "needs %llu MiB of memory, %llu MiB available",
                 (unsigned long long)((copies * model + spare) / MIB),
                 (unsigned long long)(memory / MIB));
        return false;
    }
    if (node_scope && shm_available() < model + 64 * MIB) {
        snprintf(reason, reason_size, "needs %llu MiB in /dev/shm, %llu free",
                 (unsigned long long)((model + 64 * MIB) / MIB),
                 (unsigned long long)(shm_available() / MIB));
        return false;
    }
    return true;
}

static rm_context *create_node_context(const rm_plugin_v1 *vt)
{
    rm_config_entry entries[3] = {
        {.key = "features", .value = "model-registry"},
        {.key = "registry.scope", .value = "node"},
        {.key = "registry.namespace", .value = run_namespace},
    };
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    options.entries = entries;
    options.entry_count = 3;
    rm_context *context = NULL;
    int32_t status = vt->context_create(&options, &context);
    if (status != RM_OK)
        die_status(vt, NULL, "context_create (node scope)", status);
    return context;
}

/* The node table's row for `key` must say: ready, `bytes`, held by
 * `processes` processes with one reference each. */
static void check_node_row(const rm_plugin_v1 *vt, rm_context *context,
                           const char *key, uint64_t bytes, int processes)
{
    enum { ROWS = 16 };
    rm_model_info *rows = checked_calloc(ROWS, sizeof *rows);
    uint32_t count = 0;
    int32_t status =
        vt->registry_list(context, rows, (uint32_t)sizeof *rows, ROWS, &count);
    if (status != RM_OK)
        die_status(vt, context, "registry_list", status);
    const rm_model_info *row = NULL;
    for (uint32_t i = 0; i < count && i < ROWS; i++) {
        if (strcmp(rows[i].key, key) == 0)
            row = &rows[i];
    }
    if (row == NULL || count != 1 || row->scope != RM_REGISTRY_SCOPE_NODE ||
        row->state != RM_MODEL_STATE_READY || row->bytes != bytes ||
        row->holders != (uint32_t)processes ||
        row->refcount != (uint64_t)processes) {
        fprintf(stderr,
                "bench_registry_node: the node table has %u rows; %s: %s "
                "(want 1 row, ready, %llu bytes, %d holders, %d references; "
                "got state %u, %llu bytes, %u holders, %llu references)\n",
                count, key, row == NULL ? "missing" : "present",
                (unsigned long long)bytes, processes, processes,
                row ? row->state : 0u,
                (unsigned long long)(row ? row->bytes : 0),
                row ? row->holders : 0u,
                (unsigned long long)(row ? row->refcount : 0));
        exit(1);
    }
    free(rows);
}

/* Evicts `key` now that no process holds it; its segment must be gone. */
static void evict_and_check(const rm_plugin_v1 *vt, rm_context *context,
                            const char *key)
{
    int32_t status = vt->model_evict(context, key);
    if (status != RM_OK)
        die_status(vt, context, "model_evict after every holder released",
                   status);
    if (run_segments(true, false) != 0)
        die("a model segment is left in /dev/shm after its eviction");
}

/* One row of section 1: N holders of one model in one scope. Holder 1
 * loads it; the others start once it is ready, together, and attach (node
 * scope) or load their own copy (process scope). Their first
 * model_get_or_load times go to `attach_ns` (node scope). */
static void measure_memory_row(const rm_plugin_v1 *vt, const bench_plan *plan,
                               bool node_scope, int processes, memory_row *row,
                               double *attach_ns, int *attach_count)
{
    uint64_t model = plan->model_bytes;
    *row = (memory_row){.node_scope = node_scope, .processes = processes};
    if (!row_fits(node_scope, processes, model, row->skip_reason,
                  sizeof row->skip_reason)) {
        row->skipped = true;
        return;
    }
    char key[64];
    snprintf(key, sizeof key, "bench/%s-n%d@cpu",
             node_scope ? "node" : "process", processes);

    holder holders[MAX_HOLDERS];
    spawn_holder(&holders[0], key, model, node_scope);
    wait_ready(&holders[0], plan->ready_timeout_s);
    for (int i = 1; i < processes; i++)
        spawn_holder(&holders[i], key, model, node_scope);
    for (int i = 1; i < processes; i++)
        wait_ready(&holders[i], plan->ready_timeout_s);

    /* Every holder now holds the model and has read all of it. Nothing
     * else of this run maps it. */
    for (int i = 0; i < processes; i++) {
        rollup r = read_rollup(holders[i].pid);
        row->sum.rss += r.rss;
        row->sum.pss += r.pss;
        row->sum.pss_anon += r.pss_anon;
        row->sum.pss_file += r.pss_file;
        row->sum.pss_shmem += r.pss_shmem;
        row->loader_calls += holders[i].loader_calls;
        if (holders[i].read_ns > row->max_read_ns)
            row->max_read_ns = holders[i].read_ns;
    }
    row->first_load_ns = holders[0].get_ns;
    if (node_scope)
        row->table_bytes = node_table_bytes();

    int want_calls = node_scope ? 1 : processes;
    if (holders[0].loader_calls != 1 || row->loader_calls != want_calls) {
        fprintf(stderr,
                "bench_registry_node: %s scope, %d processes: %d loader "
                "calls (holder 1: %d), want %d\n",
                node_scope ? "node" : "process", processes, row->loader_calls,
                holders[0].loader_calls, want_calls);
        exit(1);
    }
    if (node_scope) {
        for (int i = 1; i < processes; i++)
            attach_ns[(*attach_count)++] = (double)holders[i].get_ns;
        /* After the Pss reading: this context maps the table (a few
         * pages), never the model. */
        rm_context *context = create_node_context(vt);
        check_node_row(vt, context, key, model, processes);
        for (int i = 0; i < processes; i++)
            stop_holder(&holders[i], plan->ready_timeout_s);
        evict_and_check(vt, context, key);
        vt->context_destroy(context);
    } else {
        for (int i = 0; i < processes; i++)
            stop_holder(&holders[i], plan->ready_timeout_s);
    }

    double copies = node_scope ? 1.0 : (double)processes;
    row->ratio = (double)row->sum.pss / (double)model;
    row->overhead_per_process =
        ((double)row->sum.pss - copies * (double)model) / processes;

    /* The figure must measure what it claims. Node scope: the shared pages
     * of the N holders add up to one model (every page mapped by every
     * holder, none copied; the table's few pages are shared memory too).
     * Process scope: N private copies. */
    if (node_scope) {
        double slack = (double)model / 100.0 + (double)MIB;
        double low = (double)model - slack;
        double high = (double)model + (double)row->table_bytes + slack;
        if ((double)row->sum.pss_shmem < low ||
            (double)row->sum.pss_shmem > high) {
            fprintf(stderr,
                    "bench_registry_node: node scope, %d processes: their "
                    "shared-memory Pss adds up to %llu bytes, not the "
                    "model's %llu (plus at most the %llu-byte table)\n",
                    processes, (unsigned long long)row->sum.pss_shmem,
                    (unsigned long long)model,
                    (unsigned long long)row->table_bytes);
            exit(1);
        }
    } else if ((double)row->sum.pss < 0.99 * copies * (double)model) {
        fprintf(stderr,
                "bench_registry_node: process scope, %d processes: Pss adds "
                "up to %llu bytes, less than %d copies of the model\n",
                processes, (unsigned long long)row->sum.pss, processes);
        exit(1);
    }
}

/* ---- attach latency ----------------------------------------------------- */

typedef struct attach_figure {
    latency_figure get;        /* model_get_or_load of a ready model */
    latency_figure release;    /* model_release of that handle */
    latency_figure first_load; /* a holder's load of the model */
    latency_figure bare_map;   /* shm_open + mmap + close of the segment */
    latency_figure bare_unmap; /* munmap of that mapping */
    double ratio;              /* get median / first load median */
    bool met;
    int cycles_per_round;
} attach_figure;

static int32_t must_not_load(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    (void)out;
    (*(int *)user)++;
    return RM_E_LOADER_FAILED;
}

static rm_registry_metrics registry_metrics(const rm_plugin_v1 *vt,
                                            rm_context *context)
{
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    int32_t status = vt->registry_metrics(context, &metrics);
    if (status != RM_OK)
        die_status(vt, context, "registry_metrics", status);
    return metrics;
}

/* The name ("/rmreg.<ns>.m.<hex>") of the run's only model segment. */
static void only_model_segment(char *out, size_t out_size)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.m.", run_namespace);
    DIR *dir = opendir("/dev/shm");
    if (dir == NULL)
        die_errno("/dev/shm");
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, prefix, strlen(prefix)) == 0) {
            snprintf(out, out_size, "/%s", entry->d_name);
            count++;
        }
    }
    closedir(dir);
    if (count != 1)
        die("want exactly one model segment of this run in /dev/shm");
}

/* The kernel's part of an attach and a release, without the plugin: the
 * same segment opened, mapped read-only, closed, its two ends read (not
 * timed), unmapped. */
static void bare_map_cycle(const char *segment, uint64_t bytes,
                           uint64_t seed, double *map_ns, double *unmap_ns)
{
    uint64_t t0 = now_ns();
    int fd = shm_open(segment, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        die_errno(segment);
    void *base = mmap(NULL, (size_t)bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        die_errno("mmap of the model segment");
    close(fd);
    uint64_t t1 = now_ns();
    const volatile uint64_t *words = base;
    uint64_t last_word = bytes / sizeof(uint64_t) - 1;
    if (words[0] != pattern_word(seed, 0) ||
        words[last_word] != pattern_word(seed, last_word))
        die("the model segment does not hold the loader's bytes");
    uint64_t t2 = now_ns();
    munmap(base, (size_t)bytes);
    uint64_t t3 = now_ns();
    *map_ns = (double)(t1 - t0);
    *unmap_ns = (double)(t3 - t2);
}

static attach_figure measure_attach(const rm_plugin_v1 *vt,
                                    const bench_plan *plan)
{
    static const char key[] = "bench/attach@cpu";
    uint64_t model = plan->model_bytes;
    uint64_t seed = pattern_seed(key);
    uint64_t last_word = model / sizeof(uint64_t) - 1;
    int total = plan->attach_rounds * plan->attach_cycles;
    double *get_ns = checked_calloc((size_t)total, sizeof *get_ns);
    double *release_ns = checked_calloc((size_t)total, sizeof *release_ns);
    double *load_ns = checked_calloc((size_t)plan->attach_rounds,
                                     sizeof *load_ns);
    double *map_ns = checked_calloc((size_t)total, sizeof *map_ns);
    double *unmap_ns = checked_calloc((size_t)total, sizeof *unmap_ns);
    int samples = 0;
    int loader_ran = 0;
    rm_context *context = create_node_context(vt);

    for (int round = 0; round < plan->attach_rounds; round++) {
        /* A fresh load each round: the last round's model was evicted. */
        holder h;
        spawn_holder(&h, key, model, true);
        wait_ready(&h, plan->ready_timeout_s);
        if (h.loader_calls != 1) {
            fprintf(stderr, "bench_registry_node: the attach round's holder "
                            "did not load %s\n", key);
            exit(1);
        }
        load_ns[round] = (double)h.get_ns;
        char segment[300];
        only_model_segment(segment, sizeof segment);

        rm_registry_metrics before = registry_metrics(vt, context);
        int cycles = plan->attach_warmup + plan->attach_cycles;
        for (int cycle = 0; cycle < cycles; cycle++) {
            rm_model_handle *handle = NULL;
            void *found = NULL;
            uint64_t t0 = now_ns();
            int32_t status = vt->model_get_or_load(
                context, key, must_not_load, &loader_ran, &handle, &found);
            uint64_t t1 = now_ns();
            if (status != RM_OK)
                die_status(vt, context,
                           loader_ran != 0
                               ? "attach (this process's loader ran: the "
                                 "model was not found ready)"
                               : "attach (model_get_or_load)",
                           status);
            /* Outside the timed calls: the mapping shows the holder's
             * loader's bytes at both ends. */
            const volatile uint64_t *words = found;
            if (found == NULL || words[0] != pattern_word(seed, 0) ||
                words[last_word] != pattern_word(seed, last_word))
                die("the attached model does not hold the loader's bytes");
            uint64_t t2 = now_ns();
            status = vt->model_release(context, handle);
            uint64_t t3 = now_ns();
            if (status != RM_OK)
                die_status(vt, context, "model_release", status);
            /* Interleaved: the baseline sees the same machine state. */
            double bare_map = 0, bare_unmap = 0;
            bare_map_cycle(segment, model, seed, &bare_map, &bare_unmap);
            if (cycle >= plan->attach_warmup) {
                get_ns[samples] = (double)(t1 - t0);
                release_ns[samples] = (double)(t3 - t2);
                map_ns[samples] = bare_map;
                unmap_ns[samples] = bare_unmap;
                samples++;
            }
        }
        rm_registry_metrics after = registry_metrics(vt, context);
        if (loader_ran != 0 || after.loads != before.loads ||
            after.attaches - before.attaches != (uint64_t)cycles) {
            fprintf(stderr,
                    "bench_registry_node: %d cycles made %llu attaches and "
                    "%llu loads (this process's loader ran %d times)\n",
                    cycles,
                    (unsigned long long)(after.attaches - before.attaches),
                    (unsigned long long)(after.loads - before.loads),
                    loader_ran);
            exit(1);
        }
        stop_holder(&h, plan->ready_timeout_s);
        evict_and_check(vt, context, key);
    }
    vt->context_destroy(context);

    attach_figure figure = {.cycles_per_round = plan->attach_cycles};
    figure.get = summarise(get_ns, samples);
    figure.release = summarise(release_ns, samples);
    figure.first_load = summarise(load_ns, plan->attach_rounds);
    figure.bare_map = summarise(map_ns, samples);
    figure.bare_unmap = summarise(unmap_ns, samples);
    figure.ratio = figure.get.median_ns / figure.first_load.median_ns;
    figure.met = figure.get.median_ns <= TARGET_ATTACH_NS;
    free(get_ns);
    free(release_ns);
    free(load_ns);
    free(map_ns);
    free(unmap_ns);
    return figure;
}

/* ---- output ------------------------------------------------------------- */

static const memory_row *find_row(const memory_row *rows, int count,
                                  bool node_scope, int processes)
{
    for (int i = 0; i < count; i++) {
        if (rows[i].node_scope == node_scope &&
            rows[i].processes == processes && !rows[i].skipped)
            return &rows[i];
    }
    return NULL;
}

static void print_json(const bench_plan *plan, const memory_row *rows,
                       int row_count, const latency_figure *fresh_attach,
                       const attach_figure *attach)
{
    for (int i = 0; i < row_count; i++) {
        const memory_row *r = &rows[i];
        const char *scope = r->node_scope ? "node" : "process";
        if (r->skipped) {
            printf("{\"bench\":\"registry_node\",\"figure\":\"pss_ratio\","
                   "\"scope\":\"%s\",\"processes\":%d,\"model_bytes\":%llu,"
                   "\"skipped\":\"%s\"}\n",
                   scope, r->processes, (unsigned long long)plan->model_bytes,
                   r->skip_reason);
            continue;
        }
        const memory_row *base =
            r->node_scope ? find_row(rows, row_count, false, r->processes)
                          : NULL;
        char extra[160] = "";
        if (r->node_scope && r->processes == TARGET_RATIO_AT &&
            plan->model_bytes == GIB)
            snprintf(extra, sizeof extra,
                     ",\"target\":\"ratio <= %.2f (aim %.2f) at %d "
                     "processes\",\"met\":%s",
                     TARGET_RATIO, TARGET_RATIO_AIM, TARGET_RATIO_AT,
                     r->ratio <= TARGET_RATIO ? "true" : "false");
        char baseline[160] = "";
        if (base != NULL)
            snprintf(baseline, sizeof baseline,
                     ",\"baseline\":\"process_scope\",\"baseline_ratio\":%.4f,"
                     "\"vs_baseline\":%.4f",
                     base->ratio, r->ratio / base->ratio);
        printf("{\"bench\":\"registry_node\",\"figure\":\"pss_ratio\","
               "\"scope\":\"%s\",\"processes\":%d,\"model_bytes\":%llu,"
               "\"ratio\":%.4f,\"pss_sum_bytes\":%llu,"
               "\"pss_shmem_sum_bytes\":%llu,\"pss_anon_sum_bytes\":%llu,"
               "\"pss_file_sum_bytes\":%llu,\"rss_sum_bytes\":%llu,"
               "\"overhead_per_process_bytes\":%.0f,\"loader_calls\":%d,"
               "\"first_load_ns\":%llu,\"slowest_read_all_ns\":%llu,"
               "\"node_table_bytes\":%llu%s%s}\n",
               scope, r->processes, (unsigned long long)plan->model_bytes,
               r->ratio, (unsigned long long)r->sum.pss,
               (unsigned long long)r->sum.pss_shmem,
               (unsigned long long)r->sum.pss_anon,
               (unsigned long long)r->sum.pss_file,
               (unsigned long long)r->sum.rss, r->overhead_per_process,
               r->loader_calls, (unsigned long long)r->first_load_ns,
               (unsigned long long)r->max_read_ns,
               (unsigned long long)r->table_bytes, baseline, extra);
    }
    printf("{\"bench\":\"registry_node\",\"figure\":\"attach_get_or_load_ns\","
           "\"model_bytes\":%llu,\"median\":%.1f,\"p10\":%.1f,\"p90\":%.1f,"
           "\"unit\":\"ns\",\"release_median\":%.1f,\"release_p10\":%.1f,"
           "\"release_p90\":%.1f,\"baseline\":\"first_load\","
           "\"baseline_median\":%.1f,\"baseline_min\":%.1f,"
           "\"baseline_max\":%.1f,\"baseline_samples\":%d,\"ratio\":%.3g,"
           "\"target\":\"median <= %.0f ns\",\"met\":%s,\"rounds\":%d,"
           "\"cycles_per_round\":%d,\"bare_map_median\":%.1f,"
           "\"bare_unmap_median\":%.1f}\n",
           (unsigned long long)plan->model_bytes, attach->get.median_ns,
           attach->get.p10_ns, attach->get.p90_ns, attach->release.median_ns,
           attach->release.p10_ns, attach->release.p90_ns,
           attach->first_load.median_ns, attach->first_load.min_ns,
           attach->first_load.max_ns, attach->first_load.samples,
           attach->ratio, TARGET_ATTACH_NS, attach->met ? "true" : "false",
           plan->attach_rounds, attach->cycles_per_round,
           attach->bare_map.median_ns, attach->bare_unmap.median_ns);
    if (fresh_attach->samples > 0)
        printf("{\"bench\":\"registry_node\","
               "\"figure\":\"new_process_first_get_or_load_ns\","
               "\"model_bytes\":%llu,\"median\":%.1f,\"p10\":%.1f,"
               "\"p90\":%.1f,\"unit\":\"ns\",\"samples\":%d}\n",
               (unsigned long long)plan->model_bytes, fresh_attach->median_ns,
               fresh_attach->p10_ns, fresh_attach->p90_ns,
               fresh_attach->samples);
}

static void print_table(const bench_plan *plan, const memory_row *rows,
                        int row_count, const latency_figure *fresh_attach,
                        const attach_figure *attach, double total_s)
{
    char s[8][32]; /* each argument of one printf needs its own buffer */
    printf("node-scope registry benchmark (%s; model %s; %.1f s)\n",
           plan == &quick_plan ? "quick" : "full",
           size_label(plan->model_bytes, s[0], sizeof s[0]), total_s);

    printf("\n1. memory: N processes (exec'd node_model_holder) each hold the "
           "same model and read\n   every word of it; sum of whole-process "
           "Pss (/proc/<pid>/smaps_rollup) over the N\n   divided by the "
           "model size. Target, node scope at N = %d: <= %.2f (aim %.2f).\n"
           "   Baseline: process scope, each process loads its own copy.\n",
           TARGET_RATIO_AT, TARGET_RATIO, TARGET_RATIO_AIM);
    printf("   %-8s %3s | %11s %7s %8s | %11s %11s | %6s %10s | %7s\n",
           "scope", "N", "sum Pss", "ratio", "vs proc", "shmem Pss",
           "overhead/p", "loads", "first load", "target");
    for (int i = 0; i < row_count; i++) {
        const memory_row *r = &rows[i];
        const char *scope = r->node_scope ? "node" : "process";
        if (r->skipped) {
            printf("   %-8s %3d | skipped: %s\n", scope, r->processes,
                   r->skip_reason);
            continue;
        }
        const char *target = "";
        if (r->node_scope && r->processes == TARGET_RATIO_AT &&
            plan->model_bytes == GIB)
            target = met_label(r->ratio <= TARGET_RATIO);
        const memory_row *base =
            r->node_scope ? find_row(rows, row_count, false, r->processes)
                          : NULL;
        char versus[16] = "";
        if (base != NULL)
            snprintf(versus, sizeof versus, "%.4f", r->ratio / base->ratio);
        printf("   %-8s %3d | %11s %7.4f %8s | %11s %11s | %6d %10s | %7s\n",
               scope, r->processes,
               amount_label((double)r->sum.pss, s[0], sizeof s[0]), r->ratio,
               versus,
               amount_label((double)r->sum.pss_shmem, s[1], sizeof s[1]),
               amount_label(r->overhead_per_process, s[2], sizeof s[2]),
               r->loader_calls,
               time_label((double)r->first_load_ns, s[3], sizeof s[3]), target);
    }
    printf("   (vs proc: node ratio / process-scope ratio at the same N; "
           "shmem Pss: the\n   shared-memory part of the sum; overhead/p: "
           "(sum Pss - copies of the model) / N;\n   loads: loader calls; "
           "first load: holder 1's model_get_or_load)\n");
    const memory_row *last_node = NULL;
    for (int i = 0; i < row_count; i++) {
        if (rows[i].node_scope && !rows[i].skipped)
            last_node = &rows[i];
    }
    if (last_node != NULL)
        printf("   node scope: the shared-memory Pss holds the model and the "
               "touched pages of the\n   node table (a %s file, shared by the "
               "holders)\n",
               amount_label((double)last_node->table_bytes, s[0], sizeof s[0]));
    if (fresh_attach->samples > 0)
        printf("   node scope, holders 2..N (started together once the model "
               "was ready): first\n   model_get_or_load in the new process "
               "%s median, p10 %s, p90 %s (%d)\n",
               time_label(fresh_attach->median_ns, s[0], sizeof s[0]),
               time_label(fresh_attach->p10_ns, s[1], sizeof s[1]),
               time_label(fresh_attach->p90_ns, s[2], sizeof s[2]),
               fresh_attach->samples);

    printf("\n2. attach: model_get_or_load of a %s model that another process "
           "holds ready (this\n   process maps the sealed segment, its loader "
           "never runs), then model_release,\n   timed apart; %d rounds of %d "
           "cycles, each round after a fresh load. Baseline:\n   the first "
           "load (the holder's model_get_or_load; its loader fills the "
           "model).\n   Target: median <= %.0f us.\n",
           size_label(plan->model_bytes, s[0], sizeof s[0]), plan->attach_rounds,
           attach->cycles_per_round, TARGET_ATTACH_NS / 1e3);
    printf("   %11s %10s %10s | %10s %10s | %10s %10s %10s | %9s | %7s\n",
           "get_or_load", "p10", "p90", "release", "p90", "first load",
           "min", "max", "ratio", "target");
    printf("   %11s %10s %10s | %10s %10s | %10s %10s %10s | %9.2e | %7s\n",
           time_label(attach->get.median_ns, s[0], sizeof s[0]),
           time_label(attach->get.p10_ns, s[1], sizeof s[1]),
           time_label(attach->get.p90_ns, s[2], sizeof s[2]),
           time_label(attach->release.median_ns, s[3], sizeof s[3]),
           time_label(attach->release.p90_ns, s[4], sizeof s[4]),
           time_label(attach->first_load.median_ns, s[5], sizeof s[5]),
           time_label(attach->first_load.min_ns, s[6], sizeof s[6]),
           time_label(attach->first_load.max_ns, s[7], sizeof s[7]),
           attach->ratio, met_label(attach->met));
    printf("   (first load: median, min and max of %d loads; ratio: "
           "get_or_load / first load)\n",
           attach->first_load.samples);
    printf("   the kernel's part, interleaved: shm_open + mmap + close of the "
           "same segment\n   %s median (p90 %s), munmap %s median (p90 %s)\n",
           time_label(attach->bare_map.median_ns, s[0], sizeof s[0]),
           time_label(attach->bare_map.p90_ns, s[1], sizeof s[1]),
           time_label(attach->bare_unmap.median_ns, s[2], sizeof s[2]),
           time_label(attach->bare_unmap.p90_ns, s[3], sizeof s[3]));
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_registry_node [--json] [--quick] "
                    "[PLUGIN [HOLDER]]\n"
                    "       (PLUGIN defaults to $RM_PLUGIN_PATH, HOLDER to "
                    "node_model_holder beside\n       this program)\n");
}

/* node_model_holder in the directory of this program. */
static const char *default_holder(void)
{
    static char path[PATH_MAX];
    ssize_t length = readlink("/proc/self/exe", path, sizeof path - 1);
    if (length <= 0)
        return NULL;
    path[length] = '\0';
    char *slash = strrchr(path, '/');
    if (slash == NULL)
        return NULL;
    size_t left = sizeof path - (size_t)(slash + 1 - path);
    if (snprintf(slash + 1, left, "node_model_holder") >= (int)left)
        return NULL;
    return path;
}

int main(int argc, char **argv)
{
    bench_options options;
    int exit_status = parse_options(argc, argv, 2, usage, &options);
    if (exit_status >= 0)
        return exit_status;
    bool json = options.json;
    const bench_plan *plan = options.quick ? &quick_plan : &full_plan;
    plugin_path = options.plugin_path;
    holder_path = options.positional_count > 1 ? options.positional[1]
                                               : default_holder();
    if (holder_path == NULL) {
        usage();
        return 2;
    }
    if (access(holder_path, X_OK) != 0)
        die_errno(holder_path);
    signal(SIGPIPE, SIG_IGN);

    uint64_t run_start = now_ns();
    bench_pid = getpid();
    snprintf(run_namespace, sizeof run_namespace, "bench-node-%ld",
             (long)bench_pid);
    atexit(clean_up_at_exit);

    rm_loaded_plugin plugin;
    const rm_plugin_v1 *vt = load_plugin(plugin_path, RM_ABI_VERSION(1, 2),
                                         &plugin);
    if (!RM_PLUGIN_HAS(vt, registry_reclaim))
        die("the plugin has no node-scope registry (no registry_reclaim)");

    memory_row rows[2 * MAX_COUNTS];
    int row_count = 0;
    int max_attach = 0;
    for (int i = 0; i < plan->node_rows; i++)
        max_attach += plan->node_counts[i] - 1;
    double *attach_ns = checked_calloc((size_t)max_attach + 1, sizeof *attach_ns);
    int attach_count = 0;
    for (int i = 0; i < plan->node_rows; i++)
        measure_memory_row(vt, plan, true, plan->node_counts[i],
                           &rows[row_count++], attach_ns, &attach_count);
    for (int i = 0; i < plan->process_rows; i++)
        measure_memory_row(vt, plan, false, plan->process_counts[i],
                           &rows[row_count++], NULL, NULL);
    latency_figure fresh_attach = summarise(attach_ns, attach_count);
    free(attach_ns);

    attach_figure attach = measure_attach(vt, plan);

    /* Every model was evicted and every holder is gone: only the node
     * table may be left, and it is this run's to remove. */
    if (run_segments(true, false) != 0)
        die("model segments of this run are left in /dev/shm");
    run_segments(false, true);
    rm_plugin_unload(&plugin);
    double total_s = (double)(now_ns() - run_start) * 1e-9;

    if (json)
        print_json(plan, rows, row_count, &fresh_attach, &attach);
    else
        print_table(plan, rows, row_count, &fresh_attach, &attach, total_s);
    return 0;
}
