/* cuda_tensor_peer: the other process of test_cuda_tensors (fork + exec):
 * a small host that produces, imports, checks, waits for and releases
 * device tensors through the real rm_plugin.so ($RM_PLUGIN_PATH).
 *
 *   cuda_tensor_peer [--ns NAMESPACE] [--set KEY=VALUE]...
 *
 * It creates one context (shm.namespace = NAMESPACE, then the --set pairs;
 * $RM_PLUGIN_CONFIG ignored), prints "ready <pid>", then answers one line
 * per command read from stdin:
 *
 *   alloc DEVICE NBYTES SEED [SESSION]   a uint8 tensor of NBYTES on DEVICE
 *                        ("cpu", "cuda:N"), the pattern of SEED written
 *                        through the driver (or through the pointer for
 *                        cpu); SEED "-" writes nothing
 *       -> ok ID TEXT devtype=T devid=I uuid=HEX
 *   record ID            tensor_record on the legacy default stream -> ok
 *   import TEXT [w]      -> ok ID nbytes=N devtype=T devid=I uuid=HEX flags=F
 *   check ID SEED        every byte against the pattern, through
 *                        cuMemcpyDtoH_v2 (cpu: through the pointer)
 *       -> ok checked=N | fail WHY
 *   importcheck TEXT SEED   import, check, release in one go -> ok
 *   wait ID              tensor_wait(RM_TENSOR_WAIT_HOST) -> ok ms=N
 *   dlpack ID            tensor_to_dlpack_versioned, then its deleter
 *       -> ok type=T id=I flags=F
 *   release ID           -> ok
 *   releaseall           -> ok COUNT
 *   stats                -> ok cuda_tensors=.. cuda_bytes=.. cuda_blocks=..
 *                           cuda_block_bytes=.. opened=.. open=.. hits=..
 *                           orphaned=.. imports=..
 *   counter NAME         the fake's counter (-1 on a real driver) -> ok N
 *   fds                  -> ok N (descriptors open in this process)
 *   shm PREFIX           -> ok N (/dev/shm entries starting with PREFIX)
 *   reclaim              -> ok dead_holders=.. holds_dropped=..
 *                           tensors_freed=.. handles_closed=.. blocks_freed=..
 *   destroy              releases everything, destroys the context, keeps
 *                        running -> ok destroyed
 *   quit                 releases everything, destroys the context -> ok bye
 *
 * A plugin error is "err CODE NAME MESSAGE"; anything else that goes wrong
 * is "fail WHY". Exit status 0 after quit or end of input, 2 when the
 * plugin cannot be loaded or the context not created. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_tensor_common.h"
#include "peer_host.h"
#include "plugin_env.h"

#define MAX_HANDLES 4096
#define MAX_SETTINGS 32

static const rm_plugin_v1 *vt;
static rm_context *context;
static rm_tensor *handles[MAX_HANDLES];
static td_driver driver;
static bool driver_open;

__attribute__((format(printf, 1, 2))) static void reply(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    peer_host_say_v(format, args);
    va_end(args);
}

static void reply_error(int32_t rc, const char *what)
{
    reply("err %d %s %s: %s", (int)rc, vt->error_name(rc), what,
          vt->context_last_error(context));
}

/* The driver, opened on first use: a peer that only handles host
 * tensors never loads it. */
static td_driver *need_driver(void)
{
    if (!driver_open && td_open(&driver) != 0) {
        reply("fail driver: %s", driver.why);
        return NULL;
    }
    driver_open = true;
    return &driver;
}

static int store_handle(rm_tensor *tensor)
{
    for (int id = 0; id < MAX_HANDLES; id++) {
        if (handles[id] == NULL) {
            handles[id] = tensor;
            return id;
        }
    }
    return -1;
}

static rm_tensor *handle_at(const char *text)
{
    long id = text != NULL ? strtol(text, NULL, 10) : -1;
    return id >= 0 && id < MAX_HANDLES ? handles[id] : NULL;
}

static int info_of(rm_tensor *tensor, rm_tensor_info *info)
{
    *info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    int32_t rc = vt->tensor_info(context, tensor, info);
    if (rc != RM_OK)
        reply_error(rc, "tensor_info");
    return rc;
}

/* Writes or checks the pattern of `seed` over a tensor's bytes. */
static int pattern_of(rm_tensor *tensor, uint64_t seed, bool write, char *why, size_t size)
{
    rm_tensor_info info;
    if (info_of(tensor, &info) != RM_OK)
        return -2; /* replied */
    if (info.device.device_type == 1) {
        uint8_t *bytes = info.data;
        for (uint64_t i = 0; i < info.nbytes; i++) {
            if (write) {
                bytes[i] = td_byte(seed, i);
            } else if (bytes[i] != td_byte(seed, i)) {
                snprintf(why, size, "host byte %" PRIu64 " differs", i);
                return 1;
            }
        }
        return 0;
    }
    td_driver *d = need_driver();
    if (d == NULL)
        return -2;
    td_deviceptr pointer = (td_deviceptr)(uintptr_t)info.data;
    int rc = write ? td_fill(d, info.device.device_id, pointer, info.nbytes, seed)
                   : td_check(d, info.device.device_id, pointer, info.nbytes, seed);
    if (rc != 0)
        snprintf(why, size, "%s", d->why);
    return rc;
}

static void describe(rm_tensor *tensor, char *out, size_t size)
{
    rm_tensor_info info;
    if (info_of(tensor, &info) != RM_OK) {
        out[0] = '\0';
        return;
    }
    char uuid[33];
    td_hex16(info.device_uuid, uuid);
    snprintf(out, size, "nbytes=%" PRIu64 " devtype=%d devid=%d uuid=%s flags=%" PRIu64,
             info.nbytes, info.device.device_type, info.device.device_id, uuid, info.flags);
}

static void command_alloc(const char *device, const char *nbytes_text, const char *seed_text,
                          const char *session_text)
{
    if (device == NULL || nbytes_text == NULL || seed_text == NULL) {
        reply("fail usage: alloc DEVICE NBYTES SEED [SESSION]");
        return;
    }
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)strtoull(nbytes_text, NULL, 0);
    spec.session = session_text != NULL ? strtoull(session_text, NULL, 0) : 0;
    snprintf(spec.device, sizeof spec.device, "%s", device);
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_allocate(context, &spec, &tensor);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_allocate");
        return;
    }
    char why[256] = "";
    if (strcmp(seed_text, "-") != 0) {
        int filled = pattern_of(tensor, strtoull(seed_text, NULL, 0), true, why, sizeof why);
        if (filled != 0) {
            if (filled != -2)
                reply("fail fill: %s", why);
            vt->tensor_release(context, tensor);
            return;
        }
    }
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    rc = vt->tensor_export_text(context, tensor, text, sizeof text);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_export_text");
        vt->tensor_release(context, tensor);
        return;
    }
    char description[256];
    describe(tensor, description, sizeof description);
    int id = store_handle(tensor);
    if (id < 0) {
        vt->tensor_release(context, tensor);
        reply("fail no handle slot");
        return;
    }
    reply("ok %d %s %s", id, text, description);
}

static void command_import(const char *text, const char *flag_word)
{
    uint64_t flags =
        flag_word != NULL && strcmp(flag_word, "w") == 0 ? RM_TENSOR_IMPORT_WRITABLE : 0;
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_import_text(context, text != NULL ? text : "", flags, &tensor);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_import_text");
        return;
    }
    char description[256];
    describe(tensor, description, sizeof description);
    int id = store_handle(tensor);
    if (id < 0) {
        vt->tensor_release(context, tensor);
        reply("fail no handle slot");
        return;
    }
    reply("ok %d %s", id, description);
}

/* A second context of this process imports the same descriptor: the
 * process's one mapping of the block is shared (no second handle open),
 * and the two handles see the same address. The first import stays held
 * (its id is in the reply); the second is released here. */
static rm_context *second_context;
static rm_config_entry settings[MAX_SETTINGS];
static uint64_t setting_count;

static void command_importtwice(const char *text)
{
    if (second_context == NULL &&
        create_context_of(vt, settings, setting_count, &second_context) != RM_OK) {
        reply("fail second context_create: %s", vt->context_last_error(NULL));
        return;
    }
    rm_tensor *first = NULL, *again = NULL;
    int32_t rc = vt->tensor_import_text(context, text != NULL ? text : "", 0, &first);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_import_text");
        return;
    }
    rc = vt->tensor_import_text(second_context, text, 0, &again);
    if (rc != RM_OK) {
        vt->tensor_release(context, first);
        reply("fail second import: %s: %s", vt->error_name(rc),
              vt->context_last_error(second_context));
        return;
    }
    rm_tensor_info one = RM_STRUCT_INIT(rm_tensor_info), two = RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, first, &one);
    vt->tensor_info(second_context, again, &two);
    vt->tensor_release(second_context, again);
    int id = store_handle(first);
    if (id < 0) {
        vt->tensor_release(context, first);
        reply("fail no handle slot");
        return;
    }
    reply("ok %d same=%d", id, one.data == two.data);
}

static void command_check(const char *id_text, const char *seed_text)
{
    rm_tensor *tensor = handle_at(id_text);
    if (tensor == NULL || seed_text == NULL) {
        reply("fail usage: check ID SEED");
        return;
    }
    char why[256] = "";
    int rc = pattern_of(tensor, strtoull(seed_text, NULL, 0), false, why, sizeof why);
    if (rc == 0) {
        rm_tensor_info info;
        if (info_of(tensor, &info) == RM_OK)
            reply("ok checked=%" PRIu64, info.nbytes);
    } else if (rc != -2) {
        reply("fail check: %s", why);
    }
}

static void command_importcheck(const char *text, const char *seed_text)
{
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_import_text(context, text != NULL ? text : "", 0, &tensor);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_import_text");
        return;
    }
    char why[256] = "";
    int checked = pattern_of(tensor, seed_text != NULL ? strtoull(seed_text, NULL, 0) : 0, false,
                             why, sizeof why);
    rc = vt->tensor_release(context, tensor);
    if (checked == 0 && rc == RM_OK)
        reply("ok");
    else if (checked != 0 && checked != -2)
        reply("fail check: %s", why);
    else if (checked == 0)
        reply_error(rc, "tensor_release");
}

static uint64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static void command_wait(const char *id_text)
{
    rm_tensor *tensor = handle_at(id_text);
    if (tensor == NULL) {
        reply("fail usage: wait ID");
        return;
    }
    uint64_t start = now_ms();
    int32_t rc = vt->tensor_wait(context, tensor, NULL, RM_TENSOR_WAIT_HOST);
    if (rc != RM_OK)
        reply_error(rc, "tensor_wait");
    else
        reply("ok ms=%" PRIu64, now_ms() - start);
}

static void command_record(const char *id_text)
{
    rm_tensor *tensor = handle_at(id_text);
    if (tensor == NULL) {
        reply("fail usage: record ID");
        return;
    }
    int32_t rc = vt->tensor_record(context, tensor, NULL);
    if (rc != RM_OK)
        reply_error(rc, "tensor_record");
    else
        reply("ok");
}

static void command_dlpack(const char *id_text)
{
    rm_tensor *tensor = handle_at(id_text);
    if (tensor == NULL) {
        reply("fail usage: dlpack ID");
        return;
    }
    rm_dl_managed_tensor_versioned *managed = NULL;
    int32_t rc = vt->tensor_to_dlpack_versioned(context, tensor, &managed);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_to_dlpack_versioned");
        return;
    }
    reply("ok type=%d id=%d flags=%" PRIu64, managed->dl_tensor.device.device_type,
          managed->dl_tensor.device.device_id, managed->flags);
    managed->deleter(managed);
}

static void command_release(const char *id_text)
{
    long id = id_text != NULL ? strtol(id_text, NULL, 10) : -1;
    if (id < 0 || id >= MAX_HANDLES || handles[id] == NULL) {
        reply("fail usage: release ID");
        return;
    }
    int32_t rc = vt->tensor_release(context, handles[id]);
    handles[id] = NULL;
    if (rc != RM_OK)
        reply_error(rc, "tensor_release");
    else
        reply("ok");
}

static int release_all(void)
{
    int count = 0;
    for (int id = 0; id < MAX_HANDLES; id++) {
        if (handles[id] != NULL) {
            (void)vt->tensor_release(context, handles[id]);
            handles[id] = NULL;
            count++;
        }
    }
    return count;
}

static void command_stats(void)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    int32_t rc = vt->tensor_pool_stats(context, &stats);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_pool_stats");
        return;
    }
    reply("ok cuda_tensors=%" PRIu64 " cuda_bytes=%" PRIu64 " cuda_blocks=%" PRIu64
          " cuda_block_bytes=%" PRIu64 " opened=%" PRIu64 " open=%" PRIu64 " hits=%" PRIu64
          " orphaned=%" PRIu64 " imports=%" PRIu64,
          stats.cuda_tensors, stats.cuda_bytes, stats.cuda_blocks, stats.cuda_block_bytes,
          stats.cuda_handles_opened, stats.cuda_handles_open, stats.cuda_handle_cache_hits,
          stats.cuda_blocks_orphaned, stats.imports);
}

static void command_reclaim(void)
{
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    int32_t rc = vt->tensor_reclaim(context, &report);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_reclaim");
        return;
    }
    reply("ok dead_holders=%" PRIu64 " holds_dropped=%" PRIu64 " tensors_freed=%" PRIu64
          " handles_closed=%" PRIu64 " blocks_freed=%" PRIu64,
          report.dead_holders, report.holds_dropped, report.tensors_freed,
          report.cuda_handles_closed, report.cuda_blocks_freed);
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
    rm_loaded_plugin plugin;
    char error[1024];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 3), &plugin, error, sizeof error) != 0) {
        fprintf(stderr, "cuda_tensor_peer: %s\n", error);
        return 2;
    }
    vt = plugin.vtable;
    rm_config_entry entries[MAX_SETTINGS];
    uint64_t count = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ns") == 0 && i + 1 < argc) {
            entries[count++] = (rm_config_entry){.key = "shm.namespace", .value = argv[++i]};
            settings[setting_count++] = entries[count - 1];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (!peer_host_add_setting(argv[++i], entries, &count, MAX_SETTINGS)) {
                fprintf(stderr, "cuda_tensor_peer: bad --set %s\n", argv[i]);
                return 2;
            }
            settings[setting_count++] = entries[count - 1];
        } else {
            fprintf(stderr, "cuda_tensor_peer: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    int32_t rc = create_context_of(vt, entries, count, &context);
    if (rc != RM_OK) {
        fprintf(stderr, "cuda_tensor_peer: context_create: %s: %s\n", vt->error_name(rc),
                vt->context_last_error(NULL));
        return 2;
    }
    reply("ready %ld", (long)getpid());
    char line[PEER_HOST_LINE_BYTES];
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        char *words[8] = {0};
        int n = split_words(line, words, 8);
        if (n == 0)
            continue;
        const char *verb = words[0];
        if (strcmp(verb, "alloc") == 0)
            command_alloc(words[1], words[2], words[3], words[4]);
        else if (strcmp(verb, "record") == 0)
            command_record(words[1]);
        else if (strcmp(verb, "import") == 0)
            command_import(words[1], words[2]);
        else if (strcmp(verb, "check") == 0)
            command_check(words[1], words[2]);
        else if (strcmp(verb, "importtwice") == 0)
            command_importtwice(words[1]);
        else if (strcmp(verb, "importcheck") == 0)
            command_importcheck(words[1], words[2]);
        else if (strcmp(verb, "wait") == 0)
            command_wait(words[1]);
        else if (strcmp(verb, "dlpack") == 0)
            command_dlpack(words[1]);
        else if (strcmp(verb, "release") == 0)
            command_release(words[1]);
        else if (strcmp(verb, "releaseall") == 0)
            reply("ok %d", release_all());
        else if (strcmp(verb, "stats") == 0)
            command_stats();
        else if (strcmp(verb, "counter") == 0)
            reply("ok %lld", words[1] != NULL ? td_counter_loaded(words[1]) : -1LL);
        else if (strcmp(verb, "fds") == 0)
            reply("ok %ld", td_open_fds());
        else if (strcmp(verb, "shm") == 0)
            reply("ok %ld", td_shm_count(words[1] != NULL ? words[1] : ""));
        else if (strcmp(verb, "reclaim") == 0)
            command_reclaim();
        else if (strcmp(verb, "destroy") == 0) {
            release_all();
            vt->context_destroy(context);
            context = NULL;
            reply("ok destroyed");
        } else if (strcmp(verb, "quit") == 0) {
            break;
        } else {
            reply("fail unknown command %s", verb);
        }
    }
    if (second_context != NULL)
        vt->context_destroy(second_context);
    if (context != NULL) {
        release_all();
        vt->context_destroy(context);
    }
    if (driver_open)
        td_close(&driver);
    reply("ok bye");
    rm_plugin_unload(&plugin);
    return 0;
}
