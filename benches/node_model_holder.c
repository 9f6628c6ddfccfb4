/* node_model_holder: one process of bench_registry_node, a small host that
 * gets one model from the registry and holds it while the benchmark reads
 * its memory figures from /proc/<pid>/smaps_rollup. The benchmark execs it
 * (a real program, not a forked copy of the benchmark, so no page is shared
 * with the benchmark by copy-on-write).
 *
 * Usage: node_model_holder PLUGIN NAMESPACE KEY BYTES MODE
 *   MODE node:    registry.scope = node, registry.namespace = NAMESPACE
 *   MODE process: registry.scope = process (NAMESPACE is ignored)
 * It loads the plugin through tools/host/plugin_loader.h, creates a context
 * with only the model registry enabled (whatever the environment says),
 * calls model_get_or_load(KEY) with a loader that asks for a BYTES buffer
 * and fills it with a pattern derived from KEY, then reads every 8-byte
 * word of the model it got and checks it against that pattern (so every
 * page is touched and the bytes are the loader's). Then it prints one line
 * on stdout:
 *   ready pid=<pid> loader_calls=<0|1> get_ns=<ns> read_ns=<ns>
 * (get_ns: the model_get_or_load call; read_ns: reading every word) and
 * holds the model until stdin reaches end of file or SIGTERM / SIGINT
 * arrives; then it releases the model, destroys the context and exits 0.
 * Any failure: a message on stderr and exit status 1, before "ready".
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "model_pattern.h"
#include "plugin_loader.h"
#include "rm_plugin.h"

const char bench_program[] = "node_model_holder";

typedef struct holder_loader {
    uint64_t bytes;
    uint64_t seed;
    int calls;
} holder_loader;

static int32_t fill_model(void *user, const char *key, rm_loaded_model *out)
{
    holder_loader *loader = user;
    (void)key;
    loader->calls++;
    if (!RM_LOADED_MODEL_HAS_BUFFER(out)) {
        fprintf(stderr, "node_model_holder: the plugin offers no loader "
                        "buffer (rm_loaded_model of %u bytes)\n",
                out->struct_size);
        return RM_E_NOT_SHAREABLE;
    }
    void *buffer = NULL;
    int32_t status = out->alloc_buffer(out, loader->bytes, &buffer);
    if (status != RM_OK)
        return status;
    uint64_t *words = buffer;
    uint64_t count = loader->bytes / sizeof *words;
    for (uint64_t i = 0; i < count; i++)
        words[i] = pattern_word(loader->seed, i);
    return RM_OK;
}

static volatile sig_atomic_t stop_requested;

static void request_stop(int signal_number)
{
    (void)signal_number;
    stop_requested = 1;
}

/* Waits for end of file on stdin or SIGTERM / SIGINT. The signals are
 * blocked except inside ppoll(), so one that arrives before the wait
 * still ends it. */
static void hold_until_told(const sigset_t *wait_mask)
{
    char sink[64];
    while (!stop_requested) {
        struct pollfd input = {.fd = STDIN_FILENO, .events = POLLIN};
        int ready = ppoll(&input, 1, NULL, wait_mask);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        ssize_t got = read(STDIN_FILENO, sink, sizeof sink);
        if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
            return;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: node_model_holder PLUGIN NAMESPACE KEY BYTES "
                    "node|process\n");
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        usage();
        return 2;
    }
    const char *plugin_path = argv[1];
    const char *name_space = argv[2];
    const char *key = argv[3];
    char *end = NULL;
    errno = 0;
    unsigned long long bytes = strtoull(argv[4], &end, 10);
    const char *mode = argv[5];
    if (errno != 0 || end == argv[4] || *end != '\0' || bytes == 0 ||
        bytes % sizeof(uint64_t) != 0 ||
        (strcmp(mode, "node") != 0 && strcmp(mode, "process") != 0)) {
        usage();
        return 2;
    }

    /* Blocked from here on, so no signal is lost before the wait. */
    sigset_t stop_signals, wait_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    struct sigaction action = {.sa_handler = request_stop};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    rm_loaded_plugin plugin;
    const rm_plugin_v1 *vt = load_plugin(plugin_path, RM_ABI_VERSION(1, 2),
                                         &plugin);

    rm_config_entry entries[3] = {
        {.key = "features", .value = "model-registry"},
        {.key = "registry.scope", .value = mode},
        {.key = "registry.namespace", .value = name_space},
    };
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.flags = RM_CONTEXT_IGNORE_ENV;
    options.entries = entries;
    options.entry_count = strcmp(mode, "node") == 0 ? 3 : 2;
    rm_context *context = NULL;
    int32_t status = vt->context_create(&options, &context);
    if (status != RM_OK) {
        fprintf(stderr, "node_model_holder: context_create (%s scope): %s (%s)\n",
                mode, vt->error_name(status), vt->context_last_error(NULL));
        return 1;
    }

    holder_loader loader = {.bytes = bytes, .seed = pattern_seed(key)};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    uint64_t get_start = now_ns();
    status = vt->model_get_or_load(context, key, fill_model, &loader, &handle,
                                   &model);
    uint64_t get_ns = now_ns() - get_start;
    if (status != RM_OK) {
        fprintf(stderr, "node_model_holder: model_get_or_load(%s): %s (%s)\n",
                key, vt->error_name(status), vt->context_last_error(context));
        return 1;
    }

    /* Read every word: every page is now mapped in this process, and the
     * bytes are checked to be the loader's, wherever it ran. */
    const uint64_t *words = model;
    uint64_t count = bytes / sizeof *words;
    uint64_t read_start = now_ns();
    uint64_t mismatch = count;
    for (uint64_t i = 0; i < count; i++) {
        if (words[i] != pattern_word(loader.seed, i)) {
            mismatch = i;
            break;
        }
    }
    uint64_t read_ns = now_ns() - read_start;
    if (mismatch != count) {
        fprintf(stderr, "node_model_holder: %s: word %" PRIu64 " is %#" PRIx64
                        ", the loader wrote %#" PRIx64 "\n",
                key, mismatch, words[mismatch],
                pattern_word(loader.seed, mismatch));
        return 1;
    }

    printf("ready pid=%ld loader_calls=%d get_ns=%" PRIu64 " read_ns=%" PRIu64
           "\n",
           (long)getpid(), loader.calls, get_ns, read_ns);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "node_model_holder: cannot write to stdout\n");
        return 1;
    }

    hold_until_told(&wait_mask);

    status = vt->model_release(context, handle);
    if (status != RM_OK) {
        fprintf(stderr, "node_model_holder: model_release(%s): %s (%s)\n", key,
                vt->error_name(status), vt->context_last_error(context));
        return 1;
    }
    vt->context_destroy(context);
    rm_plugin_unload(&plugin);
    return 0;
}
