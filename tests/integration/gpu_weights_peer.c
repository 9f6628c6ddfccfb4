/* gpu_weights_peer: the other processes of test_gpu_weights (fork + exec):
 * a small host that gets, checks, writes into, holds and releases models
 * whose weights are in device memory (ABI 1.4, REF: gpu-weights) through
 * the real rm_plugin.so ($RM_PLUGIN_PATH).
 *
 *   gpu_weights_peer --ns NAMESPACE [--set KEY=VALUE]... [--counter PATH]
 *
 * It creates one context (registry.scope = node, registry.namespace =
 * NAMESPACE, then the --set pairs, which may override both;
 * $RM_PLUGIN_CONFIG ignored), prints "ready <pid>", then answers one line
 * per command read from stdin:
 *
 *   get KEY SEED BYTES [sleep=MS] [block] [gate] [fail=CODE] [barrier]
 *                        model_get_or_load(KEY). Its loader appends one
 *                        byte to the --counter file (O_APPEND: the file's
 *                        size is the loader calls of every process), prints
 *                        "loading PID KEY" (the key it was given), asks for
 *                        a device buffer of BYTES (alloc_device_buffer,
 *                        with a stream), sleeps MS ms if asked, and writes
 *                        the pattern of SEED (cuda_tensor_common.h) with
 *                        cuMemcpyHtoD_v2 in the primary context of the
 *                        device of KEY. With block it writes the first half,
 *                        prints "blocked PID ptr=P" and waits for its
 *                        SIGKILL. With gate, once the pattern is written,
 *                        it prints "gated PID" and reads one more line
 *                        from stdin before it returns. With fail=CODE it
 *                        then prints "failing PID" and returns CODE (a
 *                        negative code). With barrier the peer prints "waiting"
 *                        and reads descriptor 3 until end of file before
 *                        the call (a start barrier). "calling KEY" comes
 *                        right before model_get_or_load.
 *       -> ok id=ID ptr=P calls=N hits=.. misses=.. loads=.. load_failures=..
 *             attaches=.. takeovers=.. ms=MS
 *          (calls: this process's loader calls; the rest registry_metrics
 *          after the call)
 *   check ID             every byte of the model against its pattern, with
 *                        cuMemcpyDtoH_v2 -> ok checked=N | fail WHY
 *   write ID             cuMemcpyHtoD_v2 of 4 KiB into the middle of the
 *                        model -> ok cu=CURESULT
 *   release ID           model_release -> ok
 *   evict KEY|-          model_evict (of every idle model for "-") -> ok
 *                        rc=NAME code=N msg=MESSAGE
 *   metrics              -> ok hits=.. misses=.. loads=.. load_failures=..
 *                           attaches=.. takeovers=.. evictions=.. models=..
 *                           bytes=..
 *   rows                 registry_list -> ok count=N, then N lines
 *                        "row key=K device=D memory=M ordinal=O uuid=HEX bytes=B
 *                        device_bytes=D refcount=R holders=H state=S
 *                        loader_pid=L scope=S"
 *   dlpack ID            model_to_dlpack, then its deleter -> ok type=T
 *                        id=I flags=F ndim=N shape=S code=C bits=B lanes=L
 *                        data=P offset=O major=M minor=m
 *   meminfo ORDINAL      cuMemGetInfo_v2 -> ok free=F total=T used=U
 *   counter NAME         the fake's counter (-1 on a real driver) -> ok N
 *   reclaim              registry_reclaim -> ok dead_references=..
 *                        loads_abandoned=.. models_evicted=..
 *   quit                 releases everything, destroys the context -> ok bye
 *                        (exit status 0)
 *   exit                 -> ok exiting, then exit(0) with the handles held
 *                        and the context alive: a host that ends without
 *                        tearing anything down (atexit handlers and
 *                        destructors run, the plugin's threads are still
 *                        there)
 *   _exit                -> ok exiting, then _exit(0): the same, without
 *                        atexit handlers or destructors
 *
 * A plugin error is "err CODE NAME WHAT: MESSAGE"; anything else that goes
 * wrong is "fail WHY". Exit status 0 after quit, exit or end of input, 2
 * when the plugin cannot be loaded or the context not created. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpu_weights_common.h"
#include "peer_host.h"
#include "plugin_env.h"

#define MAX_MODELS 64
#define MAX_SETTINGS 32
#define BARRIER_FD 3
#define WRITE_BYTES ((size_t)4096)

typedef struct held_model {
    rm_model_handle *handle;
    td_deviceptr pointer;
    char key[RM_MODEL_KEY_MAX];
    int ordinal;
    uint64_t seed;
    uint64_t bytes;
} held_model;

/* What the loader of the current get does. */
typedef struct load_request {
    int ordinal;
    uint64_t seed;
    uint64_t bytes;
    long sleep_ms;
    bool block;
    bool gate;
    int32_t fail_code; /* 0: succeed */
} load_request;

static const rm_plugin_v1 *vt;
static rm_context *context;
static held_model models[MAX_MODELS];
static td_driver driver;
static bool driver_open;
static const char *counter_path;
static uint64_t loader_calls;

__attribute__((format(printf, 1, 2))) static void say(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    peer_host_say_v(format, args);
    va_end(args);
}

static void say_error(int32_t rc, const char *what)
{
    say("err %d %s %s: %s", (int)rc, vt->error_name(rc), what, vt->context_last_error(context));
}

static td_driver *need_driver(void)
{
    if (!driver_open && td_open(&driver) != 0) {
        say("fail driver: %s", driver.why);
        return NULL;
    }
    driver_open = true;
    return &driver;
}

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static void wait_for_end_of(int fd)
{
    char scratch[64];
    for (;;) {
        ssize_t got = read(fd, scratch, sizeof scratch);
        if (got == 0 || (got < 0 && errno != EINTR))
            return;
    }
}

/* ------------------------------------------------------------------------ */
/* The loader                                                               */
/* ------------------------------------------------------------------------ */

static void count_loader_call(void)
{
    loader_calls++;
    if (counter_path == NULL)
        return;
    int fd = open(counter_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        say("fail counter %s: %s", counter_path, strerror(errno));
        return;
    }
    (void)peer_send_all(fd, "x", 1);
    close(fd);
}

static int32_t peer_loader(void *user, const char *key, rm_loaded_model *out)
{
    const load_request *request = user;
    count_loader_call();
    say("loading %ld %s", (long)getpid(), key);
    if (!RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out)) {
        say("fail the plugin offers no device buffer");
        return RM_E_NOT_SHAREABLE;
    }
    uint64_t pointer = 0;
    void *stream = NULL;
    int32_t rc = out->alloc_device_buffer(out, request->bytes, &pointer, &stream);
    if (rc != RM_OK)
        return rc;
    if (request->sleep_ms > 0)
        peer_sleep_ms(request->sleep_ms);
    td_driver *d = need_driver();
    if (d == NULL)
        return RM_E_LOADER_FAILED;
    if (request->block) {
        uint64_t half = request->bytes / 2 / 8 * 8;
        if (td_fill(d, request->ordinal, pointer, half, request->seed) != 0)
            say("fail fill: %s", d->why);
        say("blocked %ld ptr=0x%" PRIx64, (long)getpid(), pointer);
        for (;;)
            pause();
    }
    if (td_fill(d, request->ordinal, pointer, request->bytes, request->seed) != 0) {
        say("fail fill: %s", d->why);
        return RM_E_LOADER_FAILED;
    }
    if (request->gate) {
        say("gated %ld", (long)getpid());
        char line[64];
        if (fgets(line, sizeof line, stdin) == NULL)
            say("fail the gate's stdin ended");
    }
    if (request->fail_code != 0) {
        say("failing %ld", (long)getpid());
        return request->fail_code;
    }
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                 */
/* ------------------------------------------------------------------------ */

static bool metrics_of(rm_registry_metrics *metrics)
{
    *metrics = (rm_registry_metrics)RM_STRUCT_INIT(rm_registry_metrics);
    int32_t rc = vt->registry_metrics(context, metrics);
    if (rc != RM_OK)
        say_error(rc, "registry_metrics");
    return rc == RM_OK;
}

static held_model *model_at(const char *id_text)
{
    long id = id_text != NULL ? strtol(id_text, NULL, 10) : -1;
    return id >= 0 && id < MAX_MODELS && models[id].handle != NULL ? &models[id] : NULL;
}

static void command_get(char **words, int count)
{
    if (count < 4) {
        say("fail usage: get KEY SEED BYTES [sleep=MS] [block] [gate] [fail=CODE] [barrier]");
        return;
    }
    const char *key = words[1];
    load_request request = {.ordinal = gw_key_ordinal(key),
                            .seed = strtoull(words[2], NULL, 0),
                            .bytes = strtoull(words[3], NULL, 0)};
    bool barrier = false;
    for (int i = 4; i < count; i++) {
        if (strncmp(words[i], "sleep=", 6) == 0)
            request.sleep_ms = strtol(words[i] + 6, NULL, 10);
        else if (strcmp(words[i], "block") == 0)
            request.block = true;
        else if (strcmp(words[i], "gate") == 0)
            request.gate = true;
        else if (strncmp(words[i], "fail=", 5) == 0)
            request.fail_code = (int32_t)strtol(words[i] + 5, NULL, 10);
        else if (strcmp(words[i], "barrier") == 0)
            barrier = true;
        else {
            say("fail unknown get option %s", words[i]);
            return;
        }
    }
    int id = 0;
    while (id < MAX_MODELS && models[id].handle != NULL)
        id++;
    if (id == MAX_MODELS) {
        say("fail no model slot");
        return;
    }
    if (barrier) {
        say("waiting");
        wait_for_end_of(BARRIER_FD);
    }
    say("calling %s", key);
    rm_model_handle *handle = NULL;
    void *model = NULL;
    uint64_t start = now_ms();
    int32_t rc = vt->model_get_or_load(context, key, peer_loader, &request, &handle, &model);
    uint64_t ms = now_ms() - start;
    if (rc != RM_OK) {
        say_error(rc, key);
        return;
    }
    held_model *m = &models[id];
    *m = (held_model){.handle = handle, .pointer = (td_deviceptr)(uintptr_t)model,
                      .ordinal = request.ordinal, .seed = request.seed, .bytes = request.bytes};
    snprintf(m->key, sizeof m->key, "%s", key);
    rm_registry_metrics metrics;
    if (!metrics_of(&metrics))
        return;
    say("ok id=%d ptr=0x%llx calls=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64
        " loads=%" PRIu64 " load_failures=%" PRIu64 " attaches=%" PRIu64 " takeovers=%" PRIu64
        " ms=%" PRIu64,
        id, m->pointer, loader_calls, metrics.hits, metrics.misses, metrics.loads,
        metrics.load_failures, metrics.attaches, metrics.takeovers, ms);
}

static void command_check(const char *id_text)
{
    held_model *m = model_at(id_text);
    if (m == NULL) {
        say("fail usage: check ID");
        return;
    }
    td_driver *d = need_driver();
    if (d == NULL)
        return;
    int rc = td_check(d, m->ordinal, m->pointer, m->bytes, m->seed);
    if (rc == 0)
        say("ok checked=%" PRIu64, m->bytes);
    else
        say("fail check (cuda:%d, %" PRIu64 " bytes at 0x%llx): %s", m->ordinal, m->bytes,
            m->pointer, d->why);
}

static void command_write(const char *id_text)
{
    held_model *m = model_at(id_text);
    if (m == NULL) {
        say("fail usage: write ID");
        return;
    }
    td_driver *d = need_driver();
    if (d == NULL)
        return;
    size_t size = m->bytes < WRITE_BYTES ? (size_t)m->bytes : WRITE_BYTES;
    int rc = gw_try_write(d, m->ordinal, m->pointer + (m->bytes - size) / 2, size);
    if (rc < 0)
        say("fail write: %s", d->why);
    else
        say("ok cu=%d", rc);
}

static void command_release(const char *id_text)
{
    held_model *m = model_at(id_text);
    if (m == NULL) {
        say("fail usage: release ID");
        return;
    }
    int32_t rc = vt->model_release(context, m->handle);
    *m = (held_model){0};
    if (rc != RM_OK)
        say_error(rc, "model_release");
    else
        say("ok");
}

static void command_evict(const char *key)
{
    if (key == NULL) {
        say("fail usage: evict KEY|-");
        return;
    }
    int32_t rc = vt->model_evict(context, strcmp(key, "-") == 0 ? NULL : key);
    say("ok rc=%s code=%d msg=%s", vt->error_name(rc), (int)rc,
        rc == RM_OK ? "" : vt->context_last_error(context));
}

static void command_metrics(void)
{
    rm_registry_metrics m;
    if (!metrics_of(&m))
        return;
    say("ok hits=%" PRIu64 " misses=%" PRIu64 " loads=%" PRIu64 " load_failures=%" PRIu64
        " attaches=%" PRIu64 " takeovers=%" PRIu64 " evictions=%" PRIu64 " models=%" PRIu64
        " bytes=%" PRIu64,
        m.hits, m.misses, m.loads, m.load_failures, m.attaches, m.takeovers, m.evictions,
        m.models, m.bytes);
}

static void command_rows(void)
{
    rm_model_info rows[16];
    uint32_t count = 0;
    int32_t rc = vt->registry_list(context, rows, sizeof rows[0], 16, &count);
    if (rc != RM_OK) {
        say_error(rc, "registry_list");
        return;
    }
    say("ok count=%u", count);
    for (uint32_t i = 0; i < count && i < 16; i++) {
        const rm_model_info *r = &rows[i];
        char uuid[33];
        td_hex16(r->device_uuid, uuid);
        say("row key=%s device=%.32s memory=%u ordinal=%d uuid=%s bytes=%" PRIu64
            " device_bytes=%" PRIu64 " refcount=%" PRIu64 " holders=%u state=%u loader_pid=%d"
            " scope=%u",
            r->key, r->device[0] != '\0' ? r->device : "-", r->memory, r->device_ordinal, uuid,
            r->bytes, r->device_bytes, r->refcount, r->holders, r->state, r->loader_pid,
            r->scope);
    }
}

static void command_dlpack(const char *id_text)
{
    held_model *m = model_at(id_text);
    if (m == NULL) {
        say("fail usage: dlpack ID");
        return;
    }
    if (!RM_PLUGIN_HAS(vt, model_to_dlpack)) {
        say("fail the plugin has no model_to_dlpack");
        return;
    }
    rm_dl_managed_tensor_versioned *managed = NULL;
    int32_t rc = vt->model_to_dlpack(context, m->handle, &managed);
    if (rc != RM_OK) {
        say_error(rc, "model_to_dlpack");
        return;
    }
    const rm_dl_tensor *t = &managed->dl_tensor;
    say("ok type=%d id=%d flags=%" PRIu64 " ndim=%d shape=%" PRId64 " code=%u bits=%u lanes=%u "
        "data=%p offset=%" PRIu64 " major=%u minor=%u",
        t->device.device_type, t->device.device_id, managed->flags, t->ndim,
        t->ndim >= 1 && t->shape != NULL ? t->shape[0] : -1, t->dtype.code, t->dtype.bits,
        t->dtype.lanes, t->data, t->byte_offset, managed->version.major, managed->version.minor);
    managed->deleter(managed);
}

static void command_meminfo(const char *ordinal_text)
{
    td_driver *d = need_driver();
    if (d == NULL)
        return;
    uint64_t free_bytes = 0, total = 0;
    int ordinal = ordinal_text != NULL ? (int)strtol(ordinal_text, NULL, 10) : 0;
    if (gw_meminfo(d, ordinal, &free_bytes, &total) != 0) {
        say("fail meminfo: %s", d->why);
        return;
    }
    say("ok free=%" PRIu64 " total=%" PRIu64 " used=%" PRIu64, free_bytes, total,
        total - free_bytes);
}

static void command_reclaim(void)
{
    rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
    int32_t rc = vt->registry_reclaim(context, &report);
    if (rc != RM_OK) {
        say_error(rc, "registry_reclaim");
        return;
    }
    say("ok dead_references=%" PRIu64 " loads_abandoned=%" PRIu64 " models_evicted=%" PRIu64,
        report.dead_references, report.loads_abandoned, report.models_evicted);
}

static void release_all(void)
{
    for (int id = 0; id < MAX_MODELS; id++) {
        if (models[id].handle != NULL)
            (void)vt->model_release(context, models[id].handle);
        models[id] = (held_model){0};
    }
}

static int split_words(char *line, char **words, int max_words)
{
    int count = 0;
    for (char *save = NULL, *word = strtok_r(line, " \t", &save); word != NULL && count < max_words;
         word = strtok_r(NULL, " \t", &save))
        words[count++] = word;
    return count;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    rm_config_entry entries[MAX_SETTINGS];
    uint64_t count = 0;
    entries[count++] = (rm_config_entry){.key = "registry.scope", .value = "node"};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ns") == 0 && i + 1 < argc) {
            entries[count++] = (rm_config_entry){.key = "registry.namespace", .value = argv[++i]};
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (!peer_host_add_setting(argv[++i], entries, &count, MAX_SETTINGS)) {
                fprintf(stderr, "gpu_weights_peer: bad --set %s\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--counter") == 0 && i + 1 < argc) {
            counter_path = argv[++i];
        } else {
            fprintf(stderr, "gpu_weights_peer: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    rm_loaded_plugin plugin;
    char error[1024];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 4), &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "gpu_weights_peer: %s\n", error);
        return 2;
    }
    vt = plugin.vtable;
    int32_t rc = create_context_of(vt, entries, count, &context);
    if (rc != RM_OK) {
        fprintf(stderr, "gpu_weights_peer: context_create: %s: %s\n", vt->error_name(rc),
                vt->context_last_error(NULL));
        return 2;
    }
    say("ready %ld", (long)getpid());
    char line[PEER_HOST_LINE_BYTES];
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        char *words[12] = {0};
        int n = split_words(line, words, 12);
        if (n == 0)
            continue;
        const char *verb = words[0];
        if (strcmp(verb, "get") == 0)
            command_get(words, n);
        else if (strcmp(verb, "check") == 0)
            command_check(words[1]);
        else if (strcmp(verb, "write") == 0)
            command_write(words[1]);
        else if (strcmp(verb, "release") == 0)
            command_release(words[1]);
        else if (strcmp(verb, "evict") == 0)
            command_evict(words[1]);
        else if (strcmp(verb, "metrics") == 0)
            command_metrics();
        else if (strcmp(verb, "rows") == 0)
            command_rows();
        else if (strcmp(verb, "dlpack") == 0)
            command_dlpack(words[1]);
        else if (strcmp(verb, "meminfo") == 0)
            command_meminfo(words[1]);
        else if (strcmp(verb, "counter") == 0)
            say("ok %lld", words[1] != NULL ? td_counter_loaded(words[1]) : -1LL);
        else if (strcmp(verb, "reclaim") == 0)
            command_reclaim();
        else if (strcmp(verb, "exit") == 0) {
            say("ok exiting");
            exit(0);
        } else if (strcmp(verb, "_exit") == 0) {
            say("ok exiting");
            _exit(0);
        } else if (strcmp(verb, "quit") == 0)
            break;
        else
            say("fail unknown command %s", verb);
    }
    release_all();
    vt->context_destroy(context);
    if (driver_open)
        td_close(&driver);
    say("ok bye");
    rm_plugin_unload(&plugin);
    return 0;
}
