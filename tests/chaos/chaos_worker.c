/* chaos_worker: one process of the chaos soak (see chaos_driver.c). It
 * loads the real rm_plugin.so ($RM_PLUGIN_PATH), creates its contexts in
 * the soak's namespace and does one role's work until the board says stop
 * (then it releases everything, destroys its context and exits 0) or the
 * driver SIGKILLs it.
 *
 *   chaos_worker --board FD --slot N --role R --seed S
 *
 * Around every plugin call (and inside its loader) it writes the call into
 * its board slot, so the driver can aim kills there and see a call that
 * stops making progress. Everything it checks (model bytes, tensor bytes
 * against their producer's stream and sequence number, error codes
 * against the documented set) is counted on the board; a surprise also
 * leaves its first message there. It never exits on a surprise: the
 * driver counts, the worker goes on. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "chaos_board.h"
#include "plugin_env.h"

#define KEEPER_VIEWS 8
#define PRODUCER_RING 8

static chaos_board *board;
static chaos_worker_slot *self;
static const rm_plugin_v1 *vt;
static rm_context *context;
static uint64_t random_state;

static uint64_t random_next(void)
{
    random_state = chaos_mix(random_state);
    return random_state;
}

static uint64_t random_below(uint64_t bound)
{
    return random_next() % bound;
}

static void sleep_us(uint64_t us)
{
    struct timespec pause = {.tv_sec = (time_t)(us / 1000000),
                             .tv_nsec = (long)(us % 1000000) * 1000};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

/* ---- the board ---------------------------------------------------------- */

static void enter(chaos_call call)
{
    if (atomic_fetch_add(&self->call_depth, 1) == 0)
        atomic_store(&self->call_started_ns, chaos_now_ns());
    atomic_store(&self->call, call);
}

/* Back to `outer` (the call this one ran inside, CALL_NONE at the top). */
static void leave(chaos_call outer)
{
    atomic_store(&self->call, outer);
    if (atomic_fetch_sub(&self->call_depth, 1) == 1)
        atomic_store(&self->call_started_ns, 0);
    atomic_fetch_add(&self->operations, 1);
}

__attribute__((format(printf, 2, 3))) static void surprise(_Atomic uint64_t *counter,
                                                           const char *format, ...)
{
    atomic_fetch_add(counter, 1);
    uint32_t expected = 0;
    if (!atomic_compare_exchange_strong(&self->failed, &expected, 1))
        return; /* the first message is kept */
    va_list args;
    va_start(args, format);
    vsnprintf(self->message, sizeof self->message, format, args);
    va_end(args);
}

static void unexpected(const char *call, int32_t rc)
{
    surprise(&board->unexpected_errors, "%s: %s: %s", call, vt->error_name(rc),
             vt->context_last_error(context));
}

/* ---- contexts ----------------------------------------------------------- */

static int32_t open_context(bool node_scope)
{
    rm_config_entry entries[] = {
        {.key = "shm.namespace", .value = board->name_space},
        {.key = "registry.namespace", .value = board->name_space},
        {.key = "shm.pool_bytes", .value = "64M"},
        {.key = "shm.max_tensors", .value = "256"},
        /* Short, so that models go idle, expire and load again often. */
        {.key = "registry.ttl_s", .value = "0.05"},
        {.key = "registry.table_entries", .value = "16"},
        {.key = "registry.scope", .value = "node"},
    };
    uint64_t count = sizeof entries / sizeof entries[0] - (node_scope ? 0 : 1);
    enter(CALL_CONTEXT_CREATE);
    int32_t rc = create_context_of(vt, entries, count, &context);
    leave(CALL_NONE);
    if (rc != RM_OK) {
        context = NULL;
        unexpected("context_create", rc);
    }
    return rc;
}

static void close_context(void)
{
    if (context == NULL)
        return;
    enter(CALL_CONTEXT_DESTROY);
    vt->context_destroy(context);
    leave(CALL_NONE);
    context = NULL;
}

static bool stopping(void)
{
    return atomic_load(&board->stopping) != 0;
}

/* ---- models (node registry) --------------------------------------------- */

static const char *const model_keys[CHAOS_KEYS] = {
    "chaos-a@cpu", "chaos-b@cpu", "chaos-c@cuda:0", "chaos-d@cpu",
    "chaos-e@cpu", "chaos-f@cuda:1", "chaos-g@cpu", "chaos-h@cpu"};

static uint64_t model_bytes(int key)
{
    return 64 * 1024 + (uint64_t)key * 8 * 1024;
}

/* The first 8 bytes are a stamp unique to the load, the rest its stream:
 * a holder can tell which load it holds and that every byte is right. */
static int32_t chaos_loader(void *user, const char *key, rm_loaded_model *out)
{
    int index = (int)(intptr_t)user;
    (void)key;
    enter(CALL_LOADER);
    atomic_fetch_add(&board->loader_calls, 1);
    sleep_us(random_below(20000));
    if (random_below(8) == 0) {
        atomic_fetch_add(&board->loads_failed_on_purpose, 1);
        leave(CALL_GET_OR_LOAD);
        return 1; /* any positive value: RM_E_LOADER_FAILED */
    }
    void *buffer = NULL;
    int32_t rc = out->alloc_buffer(out, model_bytes(index), &buffer);
    if (rc != RM_OK) {
        leave(CALL_GET_OR_LOAD);
        return rc;
    }
    uint64_t stamp = chaos_mix((uint64_t)getpid() << 24 ^ random_next()) | 1;
    memcpy(buffer, &stamp, sizeof stamp);
    chaos_fill((uint8_t *)buffer + 8, model_bytes(index) - 8, stamp);
    out->bytes = model_bytes(index);
    leave(CALL_GET_OR_LOAD);
    return RM_OK;
}

static void models_role(void)
{
    if (open_context(true) != RM_OK)
        return;
    while (!stopping()) {
        int index = (int)random_below(CHAOS_KEYS);
        rm_model_handle *handle = NULL;
        void *model = NULL;
        enter(CALL_GET_OR_LOAD);
        int32_t rc = vt->model_get_or_load(context, model_keys[index], chaos_loader,
                                           (void *)(intptr_t)index, &handle, &model);
        leave(CALL_NONE);
        if (rc == RM_OK) {
            uint64_t stamp;
            memcpy(&stamp, model, sizeof stamp);
            atomic_store(&self->held_stamp[index], stamp);
            uint64_t wrong = chaos_differences((const uint8_t *)model + 8,
                                               model_bytes(index) - 8, stamp);
            atomic_fetch_add(&board->models_checked, 1);
            if (stamp == 0 || wrong != 0)
                surprise(&board->mismatches, "model %s stamp %016" PRIx64 ": %" PRIu64
                         " words differ", model_keys[index], stamp, wrong);
            sleep_us(random_below(5000));
            atomic_store(&self->held_stamp[index], 0);
            enter(CALL_MODEL_RELEASE);
            rc = vt->model_release(context, handle);
            leave(CALL_NONE);
            if (rc != RM_OK)
                unexpected("model_release", rc);
        } else if (rc != RM_E_LOADER_FAILED) {
            unexpected("model_get_or_load", rc);
        }
        if (random_below(64) == 0) { /* a node shutting down and starting again */
            close_context();
            if (open_context(true) != RM_OK)
                return;
        }
        sleep_us(random_below(20000));
    }
    close_context();
}

static void lock_hog_role(void)
{
    if (open_context(true) != RM_OK)
        return;
    rm_model_info rows[32];
    while (!stopping()) {
        uint32_t count = 0;
        enter(CALL_REGISTRY_LIST);
        int32_t rc = vt->registry_list(context, rows, sizeof rows[0], 32, &count);
        leave(CALL_NONE);
        if (rc != RM_OK && rc != RM_E_BUFFER_TOO_SMALL)
            unexpected("registry_list", rc);
        rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
        enter(CALL_REGISTRY_RECLAIM);
        rc = vt->registry_reclaim(context, &report);
        leave(CALL_NONE);
        if (rc != RM_OK)
            unexpected("registry_reclaim", rc);
    }
    close_context();
}

/* ---- tensors ------------------------------------------------------------ */

static const uint64_t tensor_sizes[] = {4096, 65536, 262144, 1048576};

static void release_tensor(rm_tensor *tensor)
{
    enter(CALL_TENSOR_RELEASE);
    int32_t rc = vt->tensor_release(context, tensor);
    leave(CALL_NONE);
    if (rc != RM_OK)
        unexpected("tensor_release", rc);
}

/* Puts a descriptor in an empty mailbox slot; false when all are taken. */
static bool post(uint64_t producer, uint64_t sequence, uint64_t nbytes,
                 const uint8_t *descriptor)
{
    uint64_t mine = (uint64_t)getpid() << 8;
    for (int tries = 0; tries < CHAOS_MAIL_SLOTS; tries++) {
        chaos_mail *mail = &board->mail[random_below(CHAOS_MAIL_SLOTS)];
        uint64_t empty = MAIL_EMPTY;
        if (!atomic_compare_exchange_strong(&mail->state, &empty, mine | MAIL_WRITING))
            continue;
        mail->producer = producer;
        mail->sequence = sequence;
        mail->nbytes = nbytes;
        memcpy(mail->descriptor, descriptor, RM_TENSOR_DESCRIPTOR_SIZE);
        atomic_store(&mail->state, mine | MAIL_FULL);
        atomic_fetch_add(&board->tensors_posted, 1);
        return true;
    }
    return false;
}

/* Takes a full mailbox slot's contents; false when there is none. */
static bool take(chaos_mail *copy)
{
    uint64_t mine = (uint64_t)getpid() << 8;
    for (int i = 0; i < CHAOS_MAIL_SLOTS; i++) {
        chaos_mail *mail = &board->mail[i];
        uint64_t state = atomic_load(&mail->state);
        if ((state & 0xff) != MAIL_FULL ||
            !atomic_compare_exchange_strong(&mail->state, &state, mine | MAIL_READING))
            continue;
        copy->producer = mail->producer;
        copy->sequence = mail->sequence;
        copy->nbytes = mail->nbytes;
        memcpy(copy->descriptor, mail->descriptor, RM_TENSOR_DESCRIPTOR_SIZE);
        atomic_store(&mail->state, MAIL_EMPTY);
        return true;
    }
    return false;
}

static void producer_role(void)
{
    rm_tensor *ring[PRODUCER_RING] = {0};
    uint64_t stream = atomic_fetch_add(&board->next_stream, 1) + 1;
    uint64_t sequence = 0;
    if (open_context(false) != RM_OK)
        return;
    while (!stopping()) {
        uint64_t nbytes = tensor_sizes[random_below(4)];
        rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
        spec.dtype = (rm_dtype){RM_DTYPE_UINT, 8, 1};
        spec.ndim = 1;
        spec.shape[0] = (int64_t)nbytes;
        spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
        rm_tensor *tensor = NULL;
        enter(CALL_TENSOR_ALLOCATE);
        int32_t rc = vt->tensor_allocate(context, &spec, &tensor);
        leave(CALL_NONE);
        if (rc == RM_OK) {
            rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
            vt->tensor_info(context, tensor, &info);
            sequence++;
            chaos_fill(info.data, nbytes, chaos_tensor_seed(stream, sequence));
            uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
            enter(CALL_TENSOR_EXPORT);
            rc = vt->tensor_export(context, tensor, descriptor, sizeof descriptor);
            leave(CALL_NONE);
            if (rc == RM_OK)
                post(stream, sequence, nbytes, descriptor);
            else
                unexpected("tensor_export", rc);
            int slot = (int)(sequence % PRODUCER_RING);
            if (ring[slot] != NULL)
                release_tensor(ring[slot]);
            ring[slot] = tensor;
        } else if (rc != RM_E_QUOTA_EXCEEDED && rc != RM_E_NO_MEMORY) {
            unexpected("tensor_allocate", rc);
        } else {
            sleep_us(1000); /* importers hold the pool full: let them go */
        }
        if (sequence % 64 == 0) {
            rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
            enter(CALL_TENSOR_RECLAIM);
            rc = vt->tensor_reclaim(context, &report);
            leave(CALL_NONE);
            if (rc != RM_OK)
                unexpected("tensor_reclaim", rc);
        }
        uint64_t turn = random_below(400);
        if (turn == 0) {
            /* A node exits without tearing anything down. */
            exit(0);
        } else if (turn < 4) {
            /* A node shuts down while the next ones still read its output,
             * then starts again with a new pool. */
            for (int i = 0; i < PRODUCER_RING; i++)
                if (ring[i] != NULL) {
                    release_tensor(ring[i]);
                    ring[i] = NULL;
                }
            close_context();
            stream = atomic_fetch_add(&board->next_stream, 1) + 1;
            sequence = 0;
            if (open_context(false) != RM_OK)
                return;
        }
        sleep_us(random_below(2000));
    }
    for (int i = 0; i < PRODUCER_RING; i++)
        if (ring[i] != NULL)
            release_tensor(ring[i]);
    close_context();
}

/* Imports mail; NULL when the tensor is gone (counted) or on a surprise. */
static rm_tensor *import_mail(const chaos_mail *mail, rm_tensor_info *info)
{
    rm_tensor *tensor = NULL;
    enter(CALL_TENSOR_IMPORT);
    int32_t rc = vt->tensor_import(context, mail->descriptor, RM_TENSOR_DESCRIPTOR_SIZE, 0,
                                   &tensor);
    leave(CALL_NONE);
    if (rc == RM_E_STALE_DESCRIPTOR || rc == RM_E_QUOTA_EXCEEDED) {
        /* Freed, its pool gone, or 31 importers on it (dead ones count
         * until the owner reclaims them): all expected here. */
        atomic_fetch_add(&board->stale_imports, 1);
        return NULL;
    }
    if (rc != RM_OK) {
        unexpected("tensor_import", rc);
        return NULL;
    }
    *info = (rm_tensor_info)RM_STRUCT_INIT(rm_tensor_info);
    vt->tensor_info(context, tensor, info);
    return tensor;
}

static void check_view(const chaos_mail *mail, const rm_tensor_info *info, const char *when)
{
    uint64_t seed = chaos_tensor_seed(mail->producer, mail->sequence);
    uint64_t wrong = info->nbytes == mail->nbytes
                         ? chaos_differences(info->data, mail->nbytes, seed)
                         : UINT64_MAX;
    atomic_fetch_add(&board->tensors_checked, 1);
    if (wrong != 0)
        surprise(&board->mismatches,
                 "tensor of stream %" PRIu64 " sequence %" PRIu64 " (%" PRIu64
                 " bytes) %s: %" PRIu64 " words differ",
                 mail->producer, mail->sequence, mail->nbytes, when, wrong);
}

static void reclaim_views(uint64_t round)
{
    if (round % 128 != 0)
        return;
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    enter(CALL_TENSOR_RECLAIM);
    int32_t rc = vt->tensor_reclaim(context, &report);
    leave(CALL_NONE);
    if (rc != RM_OK)
        unexpected("tensor_reclaim", rc);
}

static void consumer_role(void)
{
    if (open_context(false) != RM_OK)
        return;
    for (uint64_t round = 1; !stopping(); round++) {
        chaos_mail mail;
        if (!take(&mail)) {
            sleep_us(500);
            continue;
        }
        rm_tensor_info info;
        rm_tensor *tensor = import_mail(&mail, &info);
        if (tensor != NULL) {
            check_view(&mail, &info, "at import");
            release_tensor(tensor);
        }
        reclaim_views(round);
    }
    close_context();
}

typedef struct kept_view {
    rm_tensor *tensor;
    rm_tensor_info info;
    chaos_mail mail;
    uint64_t until_ns;
} kept_view;

static void keeper_role(void)
{
    kept_view kept[KEEPER_VIEWS] = {0};
    if (open_context(false) != RM_OK)
        return;
    for (uint64_t round = 1; !stopping(); round++) {
        uint64_t now = chaos_now_ns();
        for (int i = 0; i < KEEPER_VIEWS; i++) {
            kept_view *view = &kept[i];
            if (view->tensor == NULL)
                continue;
            /* Checked again while its producer may have released it,
             * destroyed its context or died since. */
            check_view(&view->mail, &view->info, "while kept");
            atomic_fetch_add(&board->views_rechecked, 1);
            if (now >= view->until_ns) {
                release_tensor(view->tensor);
                view->tensor = NULL;
            }
        }
        for (int i = 0; i < KEEPER_VIEWS; i++) {
            if (kept[i].tensor != NULL || !take(&kept[i].mail))
                continue;
            kept[i].tensor = import_mail(&kept[i].mail, &kept[i].info);
            if (kept[i].tensor != NULL) {
                check_view(&kept[i].mail, &kept[i].info, "at import");
                kept[i].until_ns = now + (50 + random_below(700)) * 1000000u;
            }
            break;
        }
        reclaim_views(round);
        sleep_us(2000 + random_below(8000));
    }
    for (int i = 0; i < KEEPER_VIEWS; i++)
        if (kept[i].tensor != NULL)
            release_tensor(kept[i].tensor);
    close_context();
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    int board_fd = -1, slot = -1, role = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--board") == 0)
            board_fd = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--slot") == 0)
            slot = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--role") == 0)
            role = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seed") == 0)
            random_state = strtoull(argv[i + 1], NULL, 0);
    }
    if (board_fd < 0 || slot < 0 || slot >= CHAOS_MAX_WORKERS || role <= 0 ||
        role >= ROLE_COUNT) {
        fprintf(stderr, "usage: chaos_worker --board FD --slot N --role R --seed S\n");
        return 2;
    }
    board = mmap(NULL, sizeof *board, PROT_READ | PROT_WRITE, MAP_SHARED, board_fd, 0);
    if (board == MAP_FAILED || board->magic != CHAOS_MAGIC) {
        fprintf(stderr, "chaos_worker: no board on fd %d\n", board_fd);
        return 2;
    }
    close(board_fd);
    self = &board->workers[slot];
    rm_loaded_plugin plugin;
    char error[512];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 2), &plugin, error, sizeof error) != 0) {
        snprintf(self->message, sizeof self->message, "%.*s", (int)sizeof self->message - 1,
                 error);
        atomic_store(&self->failed, 1);
        return 2;
    }
    vt = plugin.vtable;
    switch ((chaos_role)role) {
    case ROLE_MODELS: models_role(); break;
    case ROLE_LOCK_HOG: lock_hog_role(); break;
    case ROLE_PRODUCER: producer_role(); break;
    case ROLE_CONSUMER: consumer_role(); break;
    case ROLE_KEEPER: keeper_role(); break;
    default: break;
    }
    rm_plugin_unload(&plugin);
    return 0;
}
