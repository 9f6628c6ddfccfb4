/* tensor_peer: a small host that test_tensor_processes runs as a separate
 * process (fork + exec) to import, check, hold, release and produce
 * shared-memory tensors through the real rm_plugin.so ($RM_PLUGIN_PATH).
 *
 *   tensor_peer [--ns NAMESPACE] [--set KEY=VALUE]... [--import-text TEXT]...
 *
 * It creates one context (shm.namespace = NAMESPACE, then the --set pairs;
 * $RM_PLUGIN_CONFIG ignored), imports every --import-text descriptor (one
 * reply line each, as for `importtext`), prints "ready <pid>" and then
 * answers one line per command read from stdin:
 *
 *   importbin LEN [w]     LEN raw descriptor bytes follow the line (binary,
 *                         pool or inline); w: RM_TENSOR_IMPORT_WRITABLE
 *   importtext TEXT [w]   the printable form
 *       -> ok ID nbytes=N flags=F owner=PID
 *   sum ID                -> ok VIEWHASH RAWHASH dtype=.. ndim=.. shape=..
 *                            strides=.. nbytes=..   (tp_describe; the hashes
 *                            of the elements in C order and of the whole
 *                            span, 16 hex digits each)
 *   fill ID SEED          writes the pattern into a writable view
 *       -> ok VIEWHASH
 *   poke ID               writes one byte through the view (of a
 *                         read-only view: the peer must die of SIGSEGV)
 *       -> ok poked
 *   release ID            -> ok
 *   releaseall            -> ok COUNT
 *   alloc NBYTES SEED [SESSION]   a uint8 tensor filled with stream SEED
 *       -> ok ID TEXT HEX  (the descriptor as text and as hex of the binary)
 *   reclaim               -> ok dead_holders=.. holds_dropped=..
 *                            tensors_freed=.. segments_unlinked=..
 *                            bytes_unlinked=..
 *   stats                 -> ok live_tensors=.. live_bytes=.. ... (see below)
 *   produce COUNT TAG WFD AFD [WFD AFD]...
 *                         one thread per pair of inherited descriptors:
 *                         COUNT tensors (tp_record on WFD, acks on AFD)
 *       -> ok produced TOTAL
 *   consume COUNT TAG RFD AFD [TAG RFD AFD]...
 *                         one thread per stream: import, ack, check the
 *                         sequence, the header and the payload hash,
 *                         release; then re-import the first descriptor,
 *                         which must be stale by then
 *       -> ok consumed TOTAL stale=ERROR_NAME
 *   destroy               releases everything and destroys the context,
 *                         but keeps running (what a pipeline node does
 *                         when it shuts down while the next one reads)
 *       -> ok destroyed
 *   unload                dlclose()s the plugin (after destroy, or with
 *                         the context still alive)
 *       -> ok unloaded
 *   exit                  exits at once with status 0 (atexit handlers
 *                         run), destroying nothing
 *       -> ok exiting
 *   quit                  releases everything, destroys the context
 *       -> ok bye          (end of input does the same, silently)
 *
 * A plugin error is "err CODE NAME MESSAGE" (code, error_name() and the
 * context's last error); anything else that goes wrong is "fail WHY".
 * The exit status is 0 after quit or end of input, 2 when the plugin
 * cannot be loaded or the context not created. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peer_host.h"
#include "plugin_env.h"
#include "tensor_peer_protocol.h"

#define MAX_HANDLES 4096
#define MAX_STREAMS 8
#define LINE_MAX_BYTES 8192

static const rm_plugin_v1 *vt;
static rm_context *context;
static rm_tensor *handles[MAX_HANDLES];
static pthread_mutex_t reply_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

/* One whole line on stdout; the stream threads reply too, and a line
 * longer than PIPE_BUF would interleave with theirs without the lock. */
__attribute__((format(printf, 1, 2))) static void reply(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    pthread_mutex_lock(&reply_lock);
    peer_host_say_v(format, args);
    pthread_mutex_unlock(&reply_lock);
    va_end(args);
}

/* Formats a plugin error into `out`: "err CODE NAME MESSAGE". Call right
 * after the failing call, on its thread (the message is per thread). */
static void format_error(int32_t rc, const char *what, char *out, size_t size)
{
    snprintf(out, size, "err %d %s %s: %s", (int)rc, vt->error_name(rc), what,
             vt->context_last_error(context));
}

static void reply_error(int32_t rc, const char *what)
{
    char line[LINE_MAX_BYTES];
    format_error(rc, what, line, sizeof line);
    reply("%s", line);
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                  */
/* ------------------------------------------------------------------------ */

static int store_handle(rm_tensor *tensor)
{
    for (int id = 0; id < MAX_HANDLES; id++)
        if (handles[id] == NULL) {
            handles[id] = tensor;
            return id;
        }
    return -1;
}

static rm_tensor *handle_at(const char *text)
{
    char *end = NULL;
    long id = text ? strtol(text, &end, 10) : -1;
    if (text == NULL || *end != '\0' || id < 0 || id >= MAX_HANDLES || handles[id] == NULL) {
        reply("fail no handle %s", text ? text : "(none)");
        return NULL;
    }
    return handles[id];
}

static int info_of(rm_tensor *tensor, rm_tensor_info *info)
{
    *info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    int32_t rc = vt->tensor_info(context, tensor, info);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_info");
        return -1;
    }
    return 0;
}

static void reply_imported(int32_t rc, rm_tensor *tensor, const char *what)
{
    if (rc != RM_OK) {
        reply_error(rc, what);
        return;
    }
    int id = store_handle(tensor);
    if (id < 0) {
        vt->tensor_release(context, tensor);
        reply("fail more than %d handles", MAX_HANDLES);
        return;
    }
    rm_tensor_info info;
    if (info_of(tensor, &info) != 0)
        return;
    reply("ok %d nbytes=%" PRIu64 " flags=%" PRIu64 " owner=%u", id, info.nbytes, info.flags,
          info.owner_pid);
}

static uint64_t import_flags(const char *word)
{
    return word != NULL && strcmp(word, "w") == 0 ? RM_TENSOR_IMPORT_WRITABLE : 0;
}

static void import_text(const char *text, uint64_t flags)
{
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_import_text(context, text, flags, &tensor);
    reply_imported(rc, tensor, "tensor_import_text");
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                 */
/* ------------------------------------------------------------------------ */

static void command_importbin(FILE *in, char *length_text, const char *flag_word)
{
    char *end = NULL;
    unsigned long long length = length_text ? strtoull(length_text, &end, 10) : 0;
    if (length_text == NULL || *end != '\0' || length > ((uint64_t)1 << 32)) {
        reply("fail bad length %s", length_text ? length_text : "(none)");
        return;
    }
    uint8_t *bytes = malloc(length ? (size_t)length : 1);
    if (bytes == NULL || fread(bytes, 1, (size_t)length, in) != (size_t)length) {
        free(bytes);
        reply("fail could not read %llu descriptor bytes", length);
        return;
    }
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_import(context, bytes, length, import_flags(flag_word), &tensor);
    free(bytes);
    reply_imported(rc, tensor, "tensor_import");
}

static void command_sum(const char *id_text)
{
    rm_tensor *tensor = handle_at(id_text);
    rm_tensor_info info;
    if (tensor == NULL || info_of(tensor, &info) != 0)
        return;
    tp_view view = tp_view_of(&info);
    char described[512];
    tp_describe(&info, described, sizeof described);
    uint64_t elements = 0, raw = 0;
    tp_view_hashes(&view, &elements, &raw);
    reply("ok %016" PRIx64 " %016" PRIx64 " %s", elements, raw, described);
}

static void command_fill(const char *id_text, const char *seed_text)
{
    rm_tensor *tensor = handle_at(id_text);
    rm_tensor_info info;
    if (tensor == NULL || info_of(tensor, &info) != 0)
        return;
    if (seed_text == NULL || !(info.flags & RM_TENSOR_WRITABLE)) {
        reply("fail fill needs a seed and a writable view (flags %" PRIu64 ")", info.flags);
        return;
    }
    tp_view view = tp_view_of(&info);
    tp_view_fill(&view, strtoull(seed_text, NULL, 0));
    reply("ok %016" PRIx64, tp_view_hash(&view));
}

static void command_poke(const char *id_text)
{
    rm_tensor *tensor = handle_at(id_text);
    rm_tensor_info info;
    if (tensor == NULL || info_of(tensor, &info) != 0)
        return;
    volatile uint8_t *first = info.data;
    *first = (uint8_t)(*first ^ 0xff);
    reply("ok poked");
}

static void command_release(const char *id_text)
{
    rm_tensor *tensor = handle_at(id_text);
    if (tensor == NULL)
        return;
    int32_t rc = vt->tensor_release(context, tensor);
    handles[atoi(id_text)] = NULL;
    if (rc != RM_OK)
        reply_error(rc, "tensor_release");
    else
        reply("ok");
}

static int release_all(void)
{
    int released = 0;
    for (int id = 0; id < MAX_HANDLES; id++)
        if (handles[id] != NULL) {
            vt->tensor_release(context, handles[id]);
            handles[id] = NULL;
            released++;
        }
    return released;
}

static void command_alloc(const char *size_text, const char *seed_text, const char *session_text)
{
    if (size_text == NULL || seed_text == NULL) {
        reply("fail alloc NBYTES SEED [SESSION]");
        return;
    }
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)strtoull(size_text, NULL, 0);
    spec.session = session_text ? strtoull(session_text, NULL, 0) : 0;
    rm_tensor *tensor = NULL;
    int32_t rc = vt->tensor_allocate(context, &spec, &tensor);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_allocate");
        return;
    }
    rm_tensor_info info;
    if (info_of(tensor, &info) != 0)
        return;
    tp_view view = tp_view_of(&info);
    tp_view_fill(&view, strtoull(seed_text, NULL, 0));
    uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    char hex[2 * RM_TENSOR_DESCRIPTOR_SIZE + 1];
    rc = vt->tensor_export(context, tensor, binary, sizeof binary);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_export");
        vt->tensor_release(context, tensor);
        return;
    }
    rc = vt->tensor_export_text(context, tensor, text, sizeof text);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_export_text");
        vt->tensor_release(context, tensor);
        return;
    }
    tp_hex_encode(binary, sizeof binary, hex);
    int id = store_handle(tensor);
    if (id < 0) {
        vt->tensor_release(context, tensor);
        reply("fail more than %d handles", MAX_HANDLES);
        return;
    }
    reply("ok %d %s %s", id, text, hex);
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
          " segments_unlinked=%" PRIu64 " bytes_unlinked=%" PRIu64,
          report.dead_holders, report.holds_dropped, report.tensors_freed,
          report.segments_unlinked, report.bytes_unlinked);
}

static void command_stats(void)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    int32_t rc = vt->tensor_pool_stats(context, &stats);
    if (rc != RM_OK) {
        reply_error(rc, "tensor_pool_stats");
        return;
    }
    reply("ok live_tensors=%" PRIu64 " live_bytes=%" PRIu64 " allocations=%" PRIu64
          " frees=%" PRIu64 " remote_releases=%" PRIu64 " holders=%" PRIu64
          " imports=%" PRIu64 " pools_mapped=%" PRIu64 " fallbacks=%" PRIu64
          " heap_tensors=%" PRIu64 " pool_id=%016" PRIx64 " pool=%s",
          stats.live_tensors, stats.live_bytes, stats.allocations, stats.frees,
          stats.remote_releases, stats.holders, stats.imports, stats.pools_mapped,
          stats.fallbacks, stats.heap_tensors, stats.pool_id,
          stats.pool_name[0] ? stats.pool_name : "-");
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct stream_job {
    uint64_t count;
    uint64_t tag;
    int data_fd;
    int ack_fd;
    uint64_t done;
    int32_t stale_rc;
    char failure[LINE_MAX_BYTES];
} stream_job;

#define STREAM_FAIL(job, ...)                                            \
    do {                                                                 \
        snprintf((job)->failure, sizeof (job)->failure, __VA_ARGS__);    \
        goto out;                                                        \
    } while (0)

static int32_t make_record(stream_job *job, uint64_t seq, rm_tensor **out, tp_record *record)
{
    uint64_t size = tp_stream_size(job->tag, seq);
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){.code = RM_DTYPE_UINT, .bits = 8, .lanes = 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)size;
    spec.session = job->tag;
    int32_t rc = vt->tensor_allocate(context, &spec, out);
    if (rc != RM_OK) {
        format_error(rc, "tensor_allocate", job->failure, sizeof job->failure);
        return rc;
    }
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    rc = vt->tensor_info(context, *out, &info);
    if (rc != RM_OK) {
        format_error(rc, "tensor_info", job->failure, sizeof job->failure);
        return rc;
    }
    uint8_t *data = info.data;
    size_t payload = (size_t)size - sizeof(tp_stream_header);
    tp_pattern(tp_stream_seed(job->tag, seq), 0, data + sizeof(tp_stream_header), payload);
    uint64_t payload_hash = tp_hash_bytes(data + sizeof(tp_stream_header), payload);
    tp_store64(data, TP_STREAM_MAGIC);
    tp_store64(data + 8, job->tag);
    tp_store64(data + 16, seq);
    tp_store64(data + 24, payload_hash);
    *record = (tp_record){.seq = seq, .nbytes = size, .payload_hash = payload_hash,
                          .producer = job->tag};
    rc = vt->tensor_export(context, *out, record->descriptor, sizeof record->descriptor);
    if (rc != RM_OK)
        format_error(rc, "tensor_export", job->failure, sizeof job->failure);
    return rc;
}

static void *produce_stream(void *arg)
{
    stream_job *job = arg;
    rm_tensor *ring[TP_STREAM_WINDOW] = {0};
    tp_record *batch = calloc(TP_STREAM_WINDOW, sizeof *batch);
    uint8_t acks[8 * TP_STREAM_WINDOW];
    size_t ack_bytes = 0;
    uint64_t sent = 0, acked = 0;
    if (batch == NULL)
        STREAM_FAIL(job, "fail out of memory");
    while (acked < job->count) {
        size_t ready = 0;
        while (sent < job->count && sent - acked < TP_STREAM_WINDOW) {
            if (make_record(job, sent, &ring[sent % TP_STREAM_WINDOW], &batch[ready]) != RM_OK)
                goto out;
            ready++;
            sent++;
        }
        if (ready > 0 && peer_send_all(job->data_fd, batch, ready * sizeof *batch) != 0)
            STREAM_FAIL(job, "fail producer %" PRIu64 ": write after %" PRIu64 ": %s",
                        job->tag, sent - ready, strerror(errno));
        /* Wait until half the window is acknowledged (all at the end), so
         * that the next batch is worth a write. */
        uint64_t target = sent == job->count ? job->count : sent - TP_STREAM_WINDOW / 2;
        while (acked < target) {
            size_t want = (size_t)(sent - acked) * 8 - ack_bytes;
            ssize_t got = read(job->ack_fd, acks + ack_bytes, want);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                STREAM_FAIL(job, "fail producer %" PRIu64 ": ack pipe %s after %" PRIu64
                            " acks", job->tag, got == 0 ? "closed" : strerror(errno), acked);
            ack_bytes += (size_t)got;
            size_t whole = ack_bytes / 8;
            for (size_t i = 0; i < whole; i++) {
                uint64_t seq = tp_load64(acks + 8 * i);
                if (seq != acked)
                    STREAM_FAIL(job, "fail producer %" PRIu64 ": ack %" PRIu64
                                " where %" PRIu64 " was due", job->tag, seq, acked);
                rm_tensor **slot = &ring[acked % TP_STREAM_WINDOW];
                int32_t rc = vt->tensor_release(context, *slot);
                *slot = NULL;
                if (rc != RM_OK) {
                    format_error(rc, "tensor_release", job->failure, sizeof job->failure);
                    goto out;
                }
                acked++;
            }
            memmove(acks, acks + 8 * whole, ack_bytes - 8 * whole);
            ack_bytes -= 8 * whole;
        }
    }
    job->done = acked;
out:
    for (size_t i = 0; i < TP_STREAM_WINDOW; i++)
        if (ring[i] != NULL)
            vt->tensor_release(context, ring[i]);
    free(batch);
    close(job->data_fd); /* the consumer sees the end (or our failure) */
    close(job->ack_fd);
    return NULL;
}

/* Checks one imported streamed tensor against its record. */
static int check_streamed(stream_job *job, const tp_record *record, rm_tensor *tensor)
{
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    int32_t rc = vt->tensor_info(context, tensor, &info);
    if (rc != RM_OK) {
        format_error(rc, "tensor_info", job->failure, sizeof job->failure);
        return -1;
    }
    if (info.nbytes != record->nbytes || !(info.flags & RM_TENSOR_IMPORTED) ||
        (info.flags & RM_TENSOR_WRITABLE)) {
        snprintf(job->failure, sizeof job->failure,
                 "fail consumer of %" PRIu64 ": seq %" PRIu64 ": nbytes %" PRIu64
                 " (sent %" PRIu64 "), flags %" PRIu64, job->tag, record->seq, info.nbytes,
                 record->nbytes, info.flags);
        return -1;
    }
    const uint8_t *data = info.data;
    size_t payload = (size_t)info.nbytes - sizeof(tp_stream_header);
    uint64_t magic = tp_load64(data), producer = tp_load64(data + 8);
    uint64_t seq = tp_load64(data + 16), stored_hash = tp_load64(data + 24);
    uint64_t seen_hash = tp_hash_bytes(data + sizeof(tp_stream_header), payload);
    if (magic != TP_STREAM_MAGIC || producer != job->tag || seq != record->seq ||
        stored_hash != record->payload_hash || seen_hash != stored_hash) {
        snprintf(job->failure, sizeof job->failure,
                 "fail consumer of %" PRIu64 ": seq %" PRIu64 ": header magic %016" PRIx64
                 " producer %" PRIu64 " seq %" PRIu64 " hash %016" PRIx64
                 ", payload hash %016" PRIx64 ", record hash %016" PRIx64,
                 job->tag, record->seq, magic, producer, seq, stored_hash, seen_hash,
                 record->payload_hash);
        return -1;
    }
    return 0;
}

static void *consume_stream(void *arg)
{
    stream_job *job = arg;
    enum { CAPACITY = TP_STREAM_WINDOW };
    tp_record *records = calloc(CAPACITY, sizeof *records);
    rm_tensor *imported[CAPACITY] = {0};
    uint8_t acks[8 * CAPACITY];
    uint8_t first[RM_TENSOR_DESCRIPTOR_SIZE];
    size_t have = 0, held = 0;
    uint64_t expect = 0;
    job->stale_rc = 1; /* "not tried" */
    if (records == NULL)
        STREAM_FAIL(job, "fail out of memory");
    while (expect < job->count) {
        ssize_t got = read(job->data_fd, (uint8_t *)records + have,
                           CAPACITY * sizeof *records - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            STREAM_FAIL(job, "fail consumer of %" PRIu64 ": data pipe %s after %" PRIu64
                        " of %" PRIu64 " tensors", job->tag,
                        got == 0 ? "closed" : strerror(errno), expect, job->count);
        have += (size_t)got;
        size_t whole = have / sizeof *records;
        if (whole == 0)
            continue;
        /* Import the batch, acknowledge it (the producer may now release
         * its handles), then check and release: either side can be the
         * last to let go. */
        for (held = 0; held < whole; held++) {
            const tp_record *record = &records[held];
            if (record->seq != expect + held || record->producer != job->tag)
                STREAM_FAIL(job, "fail consumer of %" PRIu64 ": record seq %" PRIu64
                            " from %" PRIu64 " where %" PRIu64 " was due (lost or duplicated)",
                            job->tag, record->seq, record->producer, expect + held);
            if (expect + held == 0)
                memcpy(first, record->descriptor, sizeof first);
            int32_t rc = vt->tensor_import(context, record->descriptor,
                                           sizeof record->descriptor, 0, &imported[held]);
            if (rc != RM_OK) {
                char what[128];
                snprintf(what, sizeof what, "tensor_import of %" PRIu64 " seq %" PRIu64,
                         job->tag, record->seq);
                format_error(rc, what, job->failure, sizeof job->failure);
                goto out;
            }
            tp_store64(acks + 8 * held, record->seq);
        }
        if (peer_send_all(job->ack_fd, acks, 8 * whole) != 0)
            STREAM_FAIL(job, "fail consumer of %" PRIu64 ": ack write: %s", job->tag,
                        strerror(errno));
        for (size_t i = 0; i < whole; i++) {
            if (check_streamed(job, &records[i], imported[i]) != 0)
                goto out;
            int32_t rc = vt->tensor_release(context, imported[i]);
            imported[i] = NULL;
            if (rc != RM_OK) {
                format_error(rc, "tensor_release", job->failure, sizeof job->failure);
                goto out;
            }
        }
        held = 0;
        expect += whole;
        have -= whole * sizeof *records;
        memmove(records, (uint8_t *)records + whole * sizeof *records, have);
    }
    if (have != 0)
        STREAM_FAIL(job, "fail consumer of %" PRIu64 ": %zu bytes after the last record",
                    job->tag, have);
    job->done = expect;
    /* Every tensor of the stream is released on both sides by now; the
     * first one was freed long ago, so its descriptor must be stale. */
    if (expect > 0) {
        rm_tensor *again = NULL;
        job->stale_rc = vt->tensor_import(context, first, sizeof first, 0, &again);
        if (again != NULL)
            vt->tensor_release(context, again);
    }
out:
    for (size_t i = 0; i < CAPACITY; i++)
        if (imported[i] != NULL)
            vt->tensor_release(context, imported[i]);
    free(records);
    close(job->data_fd);
    close(job->ack_fd);
    return NULL;
}

/* produce COUNT TAG WFD AFD [WFD AFD]... / consume COUNT TAG RFD AFD [TAG RFD AFD]... */
static void command_stream(bool producing, char **words, int count_words)
{
    stream_job jobs[MAX_STREAMS];
    pthread_t threads[MAX_STREAMS];
    int streams = 0;
    int per = producing ? 2 : 3;
    if (count_words < (producing ? 3 : 2) + per || (count_words - (producing ? 3 : 2)) % per != 0) {
        reply("fail produce COUNT TAG WFD AFD [WFD AFD]... | consume COUNT TAG RFD AFD "
              "[TAG RFD AFD]...");
        return;
    }
    uint64_t count = strtoull(words[1], NULL, 0);
    uint64_t tag = producing ? strtoull(words[2], NULL, 0) : 0;
    for (int at = producing ? 3 : 2; at + per <= count_words && streams < MAX_STREAMS;
         at += per) {
        stream_job *job = &jobs[streams];
        *job = (stream_job){.count = count, .stale_rc = 1};
        if (producing) {
            job->tag = tag;
            job->data_fd = atoi(words[at]);
            job->ack_fd = atoi(words[at + 1]);
        } else {
            job->tag = strtoull(words[at], NULL, 0);
            job->data_fd = atoi(words[at + 1]);
            job->ack_fd = atoi(words[at + 2]);
        }
        if (pthread_create(&threads[streams], NULL, producing ? produce_stream : consume_stream,
                           job) != 0) {
            reply("fail pthread_create");
            break;
        }
        streams++;
    }
    uint64_t total = 0;
    const char *failure = NULL;
    int32_t stale_rc = RM_E_STALE_DESCRIPTOR;
    for (int i = 0; i < streams; i++) {
        pthread_join(threads[i], NULL);
        total += jobs[i].done;
        if (failure == NULL && jobs[i].failure[0] != '\0')
            failure = jobs[i].failure;
        if (!producing && jobs[i].stale_rc != RM_E_STALE_DESCRIPTOR)
            stale_rc = jobs[i].stale_rc;
    }
    if (failure != NULL)
        reply("%s", failure);
    else if (producing)
        reply("ok produced %" PRIu64, total);
    else
        reply("ok consumed %" PRIu64 " stale=%s", total,
              stale_rc == 1 ? "NOT_TRIED" : vt->error_name(stale_rc));
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

static int split_words(char *line, char **words, int max_words)
{
    int count = 0;
    for (char *save = NULL, *word = strtok_r(line, " \t", &save); word && count < max_words;
         word = strtok_r(NULL, " \t", &save))
        words[count++] = word;
    return count;
}

static rm_loaded_plugin plugin;

static void shut_down(void)
{
    if (vt == NULL || context == NULL)
        return;
    release_all();
    vt->context_destroy(context);
    context = NULL;
}

/* dlclose() with whatever context there is left alive, as a host that
 * unloads its plugins without tearing them down would. */
static void shut_down_plugin(void)
{
    if (vt == NULL)
        return;
    rm_plugin_unload(&plugin);
    vt = NULL;
    context = NULL;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a dead partner is an error reply, not death */
    char error[1024];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 1), &plugin, error, sizeof error) != 0) {
        reply("fail %s", error);
        return 2;
    }
    vt = plugin.vtable;
    if (!RM_PLUGIN_HAS(vt, shm_list)) {
        reply("fail the plugin has no 1.1 tensor functions");
        return 2;
    }

    rm_config_entry entries[32];
    uint64_t entry_count = 0;
    const char *texts[64];
    int text_count = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ns") == 0 && i + 1 < argc) {
            entries[entry_count++] = (rm_config_entry){.key = "shm.namespace", .value = argv[++i]};
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            char *pair = argv[++i];
            if (!peer_host_add_setting(pair, entries, &entry_count, 32)) {
                reply("fail --set wants KEY=VALUE (32 entries at most), not %s", pair);
                return 2;
            }
        } else if (strcmp(argv[i], "--import-text") == 0 && i + 1 < argc && text_count < 64) {
            texts[text_count++] = argv[++i];
        } else {
            reply("fail unknown argument %s", argv[i]);
            return 2;
        }
    }
    int32_t created = create_context_of(vt, entries, entry_count, &context);
    if (created != RM_OK) {
        reply("err %d %s context_create: %s", (int)created, vt->error_name(created),
              vt->context_last_error(NULL));
        return 2;
    }
    for (int i = 0; i < text_count; i++)
        import_text(texts[i], 0);
    reply("ready %ld", (long)getpid());

    char *line = NULL;
    size_t line_size = 0;
    for (;;) {
        ssize_t length = getline(&line, &line_size, stdin);
        if (length < 0)
            break;
        while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == '\r'))
            line[--length] = '\0';
        char *words[3 + 3 * MAX_STREAMS];
        int count = split_words(line, words, (int)(sizeof words / sizeof words[0]));
        if (count == 0) {
            reply("fail empty command");
            continue;
        }
        const char *verb = words[0];
        const char *arg1 = count > 1 ? words[1] : NULL;
        const char *arg2 = count > 2 ? words[2] : NULL;
        const char *arg3 = count > 3 ? words[3] : NULL;
        if (strcmp(verb, "destroy") == 0) {
            shut_down();
            reply("ok destroyed");
        } else if (strcmp(verb, "unload") == 0) {
            shut_down_plugin();
            reply("ok unloaded");
        } else if (strcmp(verb, "exit") == 0) {
            reply("ok exiting");
            exit(0);
        } else if (strcmp(verb, "quit") == 0) {
            shut_down();
            reply("ok bye");
            free(line);
            return 0;
        } else if (vt == NULL || context == NULL) {
            reply("fail no context (after destroy or unload)");
        } else if (strcmp(verb, "importbin") == 0)
            command_importbin(stdin, count > 1 ? words[1] : NULL, arg2);
        else if (strcmp(verb, "importtext") == 0 && arg1 != NULL)
            import_text(arg1, import_flags(arg2));
        else if (strcmp(verb, "sum") == 0)
            command_sum(arg1);
        else if (strcmp(verb, "fill") == 0)
            command_fill(arg1, arg2);
        else if (strcmp(verb, "poke") == 0)
            command_poke(arg1);
        else if (strcmp(verb, "release") == 0)
            command_release(arg1);
        else if (strcmp(verb, "releaseall") == 0)
            reply("ok %d", release_all());
        else if (strcmp(verb, "alloc") == 0)
            command_alloc(arg1, arg2, arg3);
        else if (strcmp(verb, "reclaim") == 0)
            command_reclaim();
        else if (strcmp(verb, "stats") == 0)
            command_stats();
        else if (strcmp(verb, "produce") == 0 || strcmp(verb, "consume") == 0)
            command_stream(verb[0] == 'p', words, count);
        else
            reply("fail unknown command %s", verb);
    }
    free(line);
    shut_down();
    return 0;
}
