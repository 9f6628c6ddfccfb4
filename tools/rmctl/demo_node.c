/* rmctl demo: one model shared by several processes (node scope). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rmctl.h"

/* ---- demo: one model shared by several processes (node scope) ------------ */

enum {
    NODE_RACERS = 4,    /* ask at once: one loads, the others wait */
    NODE_PROCESSES = 5, /* and one more that comes once the model is ready */
    NODE_LOAD_DELAY_MS = 200,
    NODE_REPLY_TIMEOUT_MS = 30000,
};
#define NODE_MODEL_KEY "demo-weights@cpu"
#define NODE_MODEL_BYTES ((uint64_t)64 << 20)

/* The loader of every process; machine_calls lives in a MAP_SHARED page
 * created before fork(), so it counts the calls of all of them. */
typedef struct node_loader {
    atomic_int *machine_calls;
    int calls; /* this process's */
} node_loader;

/* The model's content: word i of the weights, checked by every process. */
static uint64_t node_weight(uint64_t index)
{
    return (index + 1) * UINT64_C(0x9e3779b97f4a7c15);
}

static int32_t node_load(void *user, const char *key, rm_loaded_model *out)
{
    node_loader *loader = user;
    (void)key;
    loader->calls++;
    atomic_fetch_add(loader->machine_calls, 1);
    if (!RM_LOADED_MODEL_HAS_BUFFER(out))
        return RM_E_NOT_SHAREABLE;
    void *buffer;
    int32_t status = out->alloc_buffer(out, NODE_MODEL_BYTES, &buffer);
    if (status != RM_OK)
        return status;
    struct timespec delay = {.tv_nsec = NODE_LOAD_DELAY_MS * 1000000L}; /* "parsing" */
    nanosleep(&delay, NULL);
    uint64_t *words = buffer;
    for (uint64_t i = 0; i < NODE_MODEL_BYTES / sizeof *words; i++)
        words[i] = node_weight(i);
    return RM_OK;
}

/* What a process reports to the parent, one fixed-size write each time. */
typedef struct node_report {
    char phase;       /* 'r' ready, 'a' has the model, 'm' measured, 'x' failed */
    int32_t pid;
    int32_t status;
    int32_t loader_calls;
    int32_t content_ok;
    double get_us;
    uint64_t loads, attaches; /* registry_metrics of its context */
    uint64_t size_kb, rss_kb, pss_kb;
    char perms[8];
    char path[96];
    char message[256];
} node_report;

typedef struct node_child {
    pid_t pid;
    int to_child;   /* write end */
    int from_child; /* read end */
    node_report report;
} node_child;

/* The mapping of /proc/self/smaps that contains `address`. */
static int measure_mapping(const void *address, node_report *report)
{
    FILE *smaps = fopen("/proc/self/smaps", "r");
    if (smaps == NULL)
        return -1;
    char line[512];
    int inside = 0, found = 0;
    while (fgets(line, sizeof line, smaps) != NULL) {
        unsigned long start, end;
        char perms[8], path[96] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %95s", &start, &end, perms, path) >= 3) {
            if (inside)
                break;
            inside = (uintptr_t)address >= start && (uintptr_t)address < end;
            if (inside) {
                found = 1;
                snprintf(report->perms, sizeof report->perms, "%s", perms);
                snprintf(report->path, sizeof report->path, "%s", path);
            }
            continue;
        }
        if (!inside)
            continue;
        unsigned long kb;
        if (sscanf(line, "Size: %lu kB", &kb) == 1)
            report->size_kb = kb;
        else if (sscanf(line, "Rss: %lu kB", &kb) == 1)
            report->rss_kb = kb;
        else if (sscanf(line, "Pss: %lu kB", &kb) == 1)
            report->pss_kb = kb;
    }
    fclose(smaps);
    return found ? 0 : -1;
}

/* Waits up to NODE_REPLY_TIMEOUT_MS for `size` bytes. */
static int read_timed(int fd, void *buffer, size_t size)
{
    struct pollfd ready = {.fd = fd, .events = POLLIN};
    int polled;
    do
        polled = poll(&ready, 1, NODE_REPLY_TIMEOUT_MS);
    while (polled < 0 && errno == EINTR);
    return polled == 1 ? read_all(fd, buffer, size) : -1;
}

static void node_child_send(int fd, node_report *report, char phase)
{
    report->phase = phase;
    if (write_all(fd, report, sizeof *report) != 0)
        _exit(1);
}

static void node_child_fail(int fd, node_report *report, const rm_plugin_v1 *vt,
                            const rm_context *context, const char *what, int32_t status)
{
    report->status = status;
    snprintf(report->message, sizeof report->message, "%s: %s: %s", what,
             vt->error_name(status), vt->context_last_error(context));
    node_child_send(fd, report, 'x');
    _exit(1);
}

/* A process of the demo: it was fork()ed, so it creates its own context
 * (the parent's would answer RM_E_FORKED) and uses nothing of the
 * parent's plugin state. Commands from the parent: 'g' get the model,
 * 'm' measure, 'q' release and exit. */
static void run_node_child(const rm_loaded_plugin *plugin, const rmctl_options *options,
                           const char *namespace_name, atomic_int *machine_calls, int in,
                           int out)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    node_report report;
    memset(&report, 0, sizeof report);
    report.pid = (int32_t)getpid();
    node_loader loader = {.machine_calls = machine_calls};
    rm_context *context;
    int32_t status = create_node_context(plugin, options, namespace_name, "create", &context);
    if (status != 0)
        node_child_fail(out, &report, vt, NULL, "context_create", status);
    node_child_send(out, &report, 'r');
    char command;
    if (read_all(in, &command, 1) != 0 || command != 'g')
        _exit(1);

    rm_model_handle *handle;
    void *model;
    double start = now_ms();
    status = vt->model_get_or_load(context, NODE_MODEL_KEY, node_load, &loader, &handle, &model);
    report.get_us = (now_ms() - start) * 1e3;
    if (status != RM_OK)
        node_child_fail(out, &report, vt, context, "model_get_or_load", status);
    report.loader_calls = loader.calls;
    /* Reads every page: the Pss below is that of the whole model. */
    const uint64_t *words = model;
    report.content_ok = 1;
    for (uint64_t i = 0; i < NODE_MODEL_BYTES / sizeof *words; i++)
        if (words[i] != node_weight(i)) {
            report.content_ok = 0;
            break;
        }
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    vt->registry_metrics(context, &metrics);
    report.loads = metrics.loads;
    report.attaches = metrics.attaches;
    node_child_send(out, &report, 'a');

    if (read_all(in, &command, 1) != 0 || command != 'm')
        _exit(1);
    if (measure_mapping(model, &report) != 0)
        snprintf(report.message, sizeof report.message, "no mapping at %p in /proc/self/smaps",
                 model);
    node_child_send(out, &report, 'm');

    if (read_all(in, &command, 1) != 0 || command != 'q')
        _exit(1);
    vt->model_release(context, handle);
    vt->context_destroy(context);
    _exit(0);
}

static int node_command(node_child *child, char command)
{
    return write_all(child->to_child, &command, 1);
}

/* The child's next report, which must be of `phase`. */
static int node_expect(node_child *child, char phase)
{
    if (read_timed(child->from_child, &child->report, sizeof child->report) != 0) {
        fprintf(stderr, "rmctl: demo: process %ld did not answer\n", (long)child->pid);
        return -1;
    }
    if (child->report.phase == 'x') {
        fprintf(stderr, "rmctl: demo: process %ld: %s\n", (long)child->pid,
                child->report.message);
        return -1;
    }
    if (child->report.phase != phase) {
        fprintf(stderr, "rmctl: demo: process %ld answered '%c', not '%c'\n",
                (long)child->pid, child->report.phase, phase);
        return -1;
    }
    return 0;
}

static int node_spawn(const rm_loaded_plugin *plugin, const rmctl_options *options,
                      const char *namespace_name, atomic_int *machine_calls,
                      node_child *children, int index)
{
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0)
        return -1;
    if (pipe(from_child) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < index; i++) {
            close(children[i].to_child);
            close(children[i].from_child);
        }
        close(to_child[1]);
        close(from_child[0]);
        run_node_child(plugin, options, namespace_name, machine_calls, to_child[0],
                       from_child[1]);
    }
    close(to_child[0]);
    close(from_child[1]);
    if (pid < 0) {
        close(to_child[1]);
        close(from_child[0]);
        return -1;
    }
    children[index] = (node_child){.pid = pid, .to_child = to_child[1],
                                   .from_child = from_child[0]};
    return 0;
}

static void format_us(double us, char *out, size_t out_size)
{
    if (us < 1000.0)
        snprintf(out, out_size, "%.0f us", us);
    else
        snprintf(out, out_size, "%.1f ms", us / 1e3);
}

static void print_node_processes(const node_child *children, int count)
{
    printf("   %7s  %-8s  %11s  %-7s  %4s  %10s  %10s\n", "PID", "HOW", "GET_OR_LOAD",
           "CONTENT", "MAP", "RSS", "PSS");
    for (int i = 0; i < count; i++) {
        const node_report *r = &children[i].report;
        char get[32], rss[32], pss[32];
        format_us(r->get_us, get, sizeof get);
        format_bytes(r->rss_kb << 10, rss, sizeof rss);
        format_bytes(r->pss_kb << 10, pss, sizeof pss);
        printf("   %7" PRId32 "  %-8s  %11s  %-7s  %4s  %10s  %10s\n", r->pid,
               r->loader_calls ? "loaded" : "attached", get, r->content_ok ? "ok" : "WRONG",
               r->perms, rss, pss);
    }
}

/* Steps 1 to 4 with the processes running; returns 0 when sharing held. */
static int node_share(const rm_loaded_plugin *plugin, const rmctl_options *options,
                      const char *namespace_name, atomic_int *machine_calls,
                      node_child *children, int *spawned)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    for (int i = 0; i < NODE_PROCESSES; i++) {
        if (node_spawn(plugin, options, namespace_name, machine_calls, children, i) != 0) {
            fprintf(stderr, "rmctl: demo: fork: %s\n", strerror(errno));
            return -1;
        }
        ++*spawned;
    }
    for (int i = 0; i < NODE_PROCESSES; i++)
        if (node_expect(&children[i], 'r') != 0)
            return -1;

    printf("1. %d processes ask for %s at once\n", NODE_RACERS, NODE_MODEL_KEY);
    for (int i = 0; i < NODE_RACERS; i++)
        if (node_command(&children[i], 'g') != 0)
            return -1;
    for (int i = 0; i < NODE_RACERS; i++)
        if (node_expect(&children[i], 'a') != 0)
            return -1;
    int32_t loader_pid = 0;
    for (int i = 0; i < NODE_RACERS; i++)
        if (children[i].report.loader_calls > 0)
            loader_pid = children[i].report.pid;
    for (int i = 0; i < NODE_RACERS; i++) {
        const node_report *r = &children[i].report;
        char get[32];
        format_us(r->get_us, get, sizeof get);
        if (r->loader_calls > 0)
            printf("   pid %" PRId32 ": loaded it (its loader ran: %d ms + filling the "
                   "buffer) in %s\n", r->pid, NODE_LOAD_DELAY_MS, get);
        else
            printf("   pid %" PRId32 ": attached after %s (blocked until pid %" PRId32
                   "'s load ended; no loader call)\n", r->pid, get, loader_pid);
    }

    printf("2. process %d asks once the model is ready\n", NODE_PROCESSES);
    node_child *late = &children[NODE_PROCESSES - 1];
    if (node_command(late, 'g') != 0 || node_expect(late, 'a') != 0)
        return -1;
    char get[32];
    format_us(late->report.get_us, get, sizeof get);
    printf("   pid %" PRId32 ": %s in %s (mapped the sealed segment read-only)\n",
           late->report.pid, late->report.loader_calls ? "LOADED it again" : "attached", get);

    printf("   the node table now (as `rmctl --namespace %s ls` shows it):\n", namespace_name);
    rm_context *context;
    if (create_node_context(plugin, options, namespace_name, "existing", &context) == 0) {
        print_node_models(vt, context, "      ");
        vt->context_destroy(context);
    }

    printf("3. every process has read all %" PRIu64 " MiB and checked them against the "
           "loader's bytes;\n   its mapping of the model in /proc/self/smaps:\n",
           NODE_MODEL_BYTES >> 20);
    for (int i = 0; i < NODE_PROCESSES; i++)
        if (node_command(&children[i], 'm') != 0)
            return -1;
    for (int i = 0; i < NODE_PROCESSES; i++)
        if (node_expect(&children[i], 'm') != 0)
            return -1;
    print_node_processes(children, NODE_PROCESSES);

    uint64_t pss_kb = 0;
    int loaded = 0, attached = 0, content_ok = 1, same_segment = 1;
    uint64_t metric_loads = 0, metric_attaches = 0;
    for (int i = 0; i < NODE_PROCESSES; i++) {
        const node_report *r = &children[i].report;
        pss_kb += r->pss_kb;
        loaded += r->loader_calls > 0;
        attached += r->loader_calls == 0;
        content_ok &= r->content_ok;
        same_segment &= r->path[0] != '\0' && strcmp(r->path, children[0].report.path) == 0;
        metric_loads += r->loads;
        metric_attaches += r->attaches;
    }
    uint64_t model_kb = NODE_MODEL_BYTES >> 10;
    char sum[32], size[32];
    format_bytes(pss_kb << 10, sum, sizeof sum);
    format_bytes(NODE_MODEL_BYTES, size, sizeof size);
    printf("   all %d map the same segment %s: %s\n", NODE_PROCESSES, children[0].report.path,
           same_segment ? "yes" : "NO");
    printf("4. sum of Pss: %s for a %s model: %.3fx the model (%d private copies would be "
           "%d.000x)\n", sum, size, (double)pss_kb / (double)model_kb, NODE_PROCESSES,
           NODE_PROCESSES);
    int calls = atomic_load(machine_calls);
    printf("   loader calls in all %d processes: %d; loaded %d, attached %d "
           "(their registry_metrics: loads %" PRIu64 ", attaches %" PRIu64 ")\n",
           NODE_PROCESSES, calls, loaded, attached, metric_loads, metric_attaches);
    return calls == 1 && loaded == 1 && content_ok && same_segment ? 0 : -1;
}

/* Leaves nothing of the demo's namespace behind, through the plugin: after
 * a failure, references of killed processes and a dead loader's claim
 * are reclaimed, idle models evicted, and the table removed once nothing
 * is left in it (after a success its last context has removed it
 * already). 0 when nothing is left. */
int demo_node_cleanup(const rm_loaded_plugin *plugin, const rmctl_options *options,
                      const char *namespace_name)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    rm_context *context;
    int32_t status = create_node_context(plugin, options, namespace_name, "existing", &context);
    if (status == RM_E_NOT_FOUND) {
        printf("   namespace %s: nothing left (its last context removed the node table)\n",
               namespace_name);
        return 0;
    }
    if (status != 0)
        return -1;
    rm_registry_reclaim_report dead = RM_STRUCT_INIT(rm_registry_reclaim_report);
    rm_registry_reclaim_report rest = RM_STRUCT_INIT(rm_registry_reclaim_report);
    status = vt->registry_reclaim(context, &dead);
    if (status == RM_OK)
        status = vt->model_evict(context, NULL);
    if (status == RM_OK) /* the table, now that nothing is left in it */
        status = vt->registry_reclaim(context, &rest);
    if (status != RM_OK)
        report_failure(vt, context, "demo: cleaning up", status);
    vt->context_destroy(context);
    if (status != RM_OK)
        return -1;
    if (!node_table_lookable(plugin)) {
        /* Its "existing" would make a table: nothing to look with. */
        printf("   namespace %s: registry_reclaim and model_evict cleaned up\n",
               namespace_name);
        return 0;
    }
    rm_context *probe;
    status = create_node_context(plugin, options, namespace_name, "existing", &probe);
    if (status == RM_OK)
        vt->context_destroy(probe);
    printf("   namespace %s: registry_reclaim and model_evict cleaned up (%" PRIu64
           " dead references, %" PRIu64 " loads abandoned, %" PRIu64
           " segments unlinked); node table %s\n",
           namespace_name, dead.dead_references + rest.dead_references,
           dead.loads_abandoned + rest.loads_abandoned,
           dead.segments_unlinked + rest.segments_unlinked,
           status == RM_E_NOT_FOUND ? "removed" : "STILL THERE");
    return status == RM_E_NOT_FOUND ? 0 : -1;
}

int demo_node_registry(const rm_loaded_plugin *plugin, const rmctl_options *options)
{
    const rm_plugin_v1 *vt = plugin->vtable;
    printf("\n== Model registry (node scope): one copy for %d processes ==\n", NODE_PROCESSES);
    char why[PATH_MAX + 128];
    if (node_registry_missing(plugin, why, sizeof why) != NULL) {
        printf("(%s; nothing to show)\n", why);
        return 0;
    }
    /* Is the registry enabled? Asked of a process-scope context, which
     * opens no node table. */
    rm_context *probe;
    if (create_context_with(plugin, options, NULL, 0, process_scope, 1, &probe) != 0)
        return 1;
    rm_context_info info = RM_STRUCT_INIT(rm_context_info);
    vt->context_info(probe, &info);
    vt->context_destroy(probe);
    if ((info.features_enabled & RM_FEATURE_MODEL_REGISTRY) == 0) {
        printf("(model registry disabled by the configuration; nothing to show)\n");
        return 0;
    }

    char namespace_name[32];
    snprintf(namespace_name, sizeof namespace_name, "demo-%ld", (long)getpid());
    printf("registry.scope = node, registry.namespace = %s (private to this demo);\n"
           "%d processes, each fork()ed, each with its own context; the model is %" PRIu64
           " MiB,\nmade by a loader that takes %d ms and writes it into out->alloc_buffer()\n",
           namespace_name, NODE_PROCESSES, NODE_MODEL_BYTES >> 20, NODE_LOAD_DELAY_MS);
    atomic_int *machine_calls = mmap(NULL, sizeof *machine_calls, PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (machine_calls == MAP_FAILED) {
        fprintf(stderr, "rmctl: demo: mmap: %s\n", strerror(errno));
        return 1;
    }
    atomic_init(machine_calls, 0);
    node_child children[NODE_PROCESSES];
    int spawned = 0;
    int result = node_share(plugin, options, namespace_name, machine_calls, children, &spawned);

    /* The processes release and exit; on a failure they are killed. */
    for (int i = 0; i < spawned; i++) {
        if (result != 0 || node_command(&children[i], 'q') != 0)
            kill(children[i].pid, SIGKILL);
        close(children[i].to_child);
        close(children[i].from_child);
    }
    for (int i = 0; i < spawned; i++) {
        int status;
        if (waitpid(children[i].pid, &status, 0) != children[i].pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            result = -1;
    }
    munmap(machine_calls, sizeof *machine_calls);

    if (result == 0) {
        rm_context *context;
        int opened = create_node_context(plugin, options, namespace_name, "existing", &context);
        if (opened == RM_E_NOT_FOUND)
            fprintf(stderr, "rmctl: demo: the node table of %s went before model_evict\n",
                    namespace_name);
        if (opened != 0) {
            result = -1;
        } else {
            printf("5. the processes release the model and exit: it stays loaded, held by "
                   "no one,\n   until its TTL, the budget, or model_evict():\n");
            print_node_models(vt, context, "      ");
            int32_t status = vt->model_evict(context, NODE_MODEL_KEY);
            rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
            if (status == RM_OK)
                status = vt->registry_metrics(context, &metrics);
            printf("   model_evict(\"%s\"): %s; models left in the node table: %" PRIu64
                   " (%" PRIu64 " bytes)\n",
                   NODE_MODEL_KEY, vt->error_name(status), metrics.models, metrics.bytes);
            if (status != RM_OK || metrics.models != 0)
                result = -1;
            vt->context_destroy(context);
        }
    }
    if (demo_node_cleanup(plugin, options, namespace_name) != 0)
        result = -1;
    if (result != 0)
        fprintf(stderr, "rmctl: demo: the node-scope section failed\n");
    return result == 0 ? 0 : 1;
}

