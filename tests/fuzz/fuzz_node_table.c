/* Fuzz target: a node registry table (/dev/shm/rmreg.<ns>.table) holding
 * garbage, written by another process of the same user before a context
 * attaches to it or while contexts use it, and the calls those contexts
 * make next.
 *
 * Every process of a namespace maps the table read-write, so any process
 * of the user can write anything into it. The plugin's promise is that the
 * others then get error codes (RM_E_CORRUPT_STATE above all) or a repaired
 * table, never a crash or a hang; the harness maps the table and plays the
 * scribbling process.
 *
 * Each input starts from the same table: context A holds "held@cpu" in an
 * 8-entry table and context B is attached, holding nothing. The input is a
 * script of at most 48 operations, an opcode byte (% 12) and its arguments
 * (zeros once the input runs out):
 *   0  scribble bytes      u16 offset (% table size), u8 length (% 16 + 1), bytes
 *   1  scribble an entry   u8 entry (% 8), u8 word (% the entry's u64 words), how, u64
 *   2  scribble the header u8 word (% its first 32 u64 words), how, u64
 *   3  scribble attachers  u8 record (% 8), how, u64
 *   4  B: context_create (node scope; a second B first destroys the first)
 *   5  B: model_get_or_load u8 key (% 4), loader: u8 plan (fails, sizes)
 *   6  B: model_release     u8 handle
 *   7  B: registry_list, and every row's model, read end to end
 *   8  B: registry_reclaim   9  B: registry_metrics
 *  10  B: model_evict       u8 key (% 5: the fifth is NULL, every idle one)
 *  11  B: context_destroy                          u8 0xc4 (else nothing)
 * ("how": 0 set, 1 xor, 2 add one.) Every call must return a code its
 * header documents, with a message when it fails; every model handed out
 * must be readable (its first 4 KiB: the smallest model made here). Then B releases
 * what it holds, the harness takes the table lock (re-making it when a
 * scribble left it unusable), puts back every byte of the starting table
 * and removes the model segments B made, so inputs stay independent. An
 * input that destroyed or re-made B, or after which the table file is
 * another one, makes A, B and the table afresh (counted at exit).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz_common.h"
#include "node_table.h"
#include "shm_segment.h"

#define MAX_OPERATIONS 48
#define MAX_HANDLES 16
#define ENTRIES 8
#define KEYS 4
#define RECREATE 0xc4 /* the argument that makes ops 4 and 11 act */
/* registry_reclaim reads all of /dev/shm and /proc entries: a few per
 * input find what more would, at a fraction of the time. */
#define MAX_SCANS 2

static const rm_plugin_v1 *vt;
static char ns[48];
static char table_path[160];
static rm_config_entry entries[5];
static rm_context *a, *b;
static rm_model_handle *a_handle;
static void *a_model;
static uint8_t *table;          /* the harness's mapping */
static size_t table_bytes;
static uint8_t *pristine;       /* the table as each input starts */
static uint64_t a_segment_id;   /* the one model segment that stays */
static uint64_t inputs, b_errors, repairs_needed, rebuilds;
static uint64_t table_device, table_inode;

static const char *const keys[KEYS] = {"held@cpu", "k1@cpu", "k2@cuda:0", "k3@cpu"};

/* ---- the loader --------------------------------------------------------- */

typedef struct plan {
    uint8_t how; /* % 4: 0 a 4 KiB model, 1 64 KiB, 2 fail, 3 a model without a buffer */
} plan;

static int32_t fuzz_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)key;
    const plan *p = user;
    switch (p->how % 4) {
    case 2:
        return RM_E_LOADER_FAILED;
    case 3: {
        static int private_model;
        out->model = &private_model; /* not shareable: refused in node scope */
        out->bytes = sizeof private_model;
        return RM_OK;
    }
    default: {
        uint64_t bytes = p->how % 4 == 0 ? 4096 : 65536;
        void *buffer = NULL;
        int32_t rc = out->alloc_buffer(out, bytes, &buffer);
        if (rc != RM_OK)
            return rc;
        memset(buffer, 0x5a, bytes);
        out->bytes = bytes;
        return RM_OK;
    }
    }
}

/* ---- codes -------------------------------------------------------------- */

static bool documented(int32_t rc, const int32_t *codes)
{
    for (; *codes != 1; codes++)
        if (rc == *codes)
            return true;
    return false;
}

static const int32_t create_codes[] = {RM_OK, RM_E_CORRUPT_STATE, RM_E_QUOTA_EXCEEDED,
                                       RM_E_NO_MEMORY, RM_E_SYSTEM, 1};
static const int32_t get_codes[] = {RM_OK, RM_E_LOADER_FAILED, RM_E_NOT_SHAREABLE,
                                    RM_E_CORRUPT_STATE, RM_E_QUOTA_EXCEEDED, RM_E_NO_MEMORY,
                                    RM_E_SYSTEM, RM_E_LOAD_CYCLE, 1};
/* A listed key comes from the table: a scribbled one may not be a key. */
static const int32_t listed_get_codes[] = {RM_OK, RM_E_LOADER_FAILED, RM_E_NOT_SHAREABLE,
                                           RM_E_CORRUPT_STATE, RM_E_QUOTA_EXCEEDED,
                                           RM_E_NO_MEMORY, RM_E_SYSTEM, RM_E_LOAD_CYCLE,
                                           RM_E_INVALID_KEY, 1};
static const int32_t release_codes[] = {RM_OK, RM_E_INVALID_ARGUMENT, RM_E_CORRUPT_STATE, 1};
static const int32_t list_codes[] = {RM_OK, RM_E_BUFFER_TOO_SMALL, RM_E_CORRUPT_STATE,
                                     RM_E_NO_MEMORY, RM_E_SYSTEM, 1};
static const int32_t reclaim_codes[] = {RM_OK, RM_E_CORRUPT_STATE, RM_E_SYSTEM, 1};
static const int32_t metrics_codes[] = {RM_OK, RM_E_CORRUPT_STATE, 1};
static const int32_t evict_codes[] = {RM_OK, RM_E_NOT_FOUND, RM_E_BUSY, RM_E_CORRUPT_STATE,
                                      RM_E_SYSTEM, 1};

static int32_t checked(rm_context *context, int32_t rc, const int32_t *codes, const char *call)
{
    FUZZ_CHECK(documented(rc, codes), "%s: undocumented code %s (%s)", call, vt->error_name(rc),
               vt->context_last_error(context));
    if (rc != RM_OK) {
        fuzz_check_message(context, rc, call);
        b_errors++;
    }
    return rc;
}

/* ---- context B ---------------------------------------------------------- */

static rm_model_handle *handles[MAX_HANDLES];
static size_t handle_count;
static bool b_recreated; /* the script made B anew: the table's records moved */
static int scans;         /* reclaims in this input */

static void b_release_all(void)
{
    for (size_t i = 0; i < handle_count; i++)
        checked(b, vt->model_release(b, handles[i]), release_codes, "model_release");
    handle_count = 0;
}

static void b_destroy(void)
{
    if (b == NULL)
        return;
    b_release_all();
    vt->context_destroy(b);
    b = NULL;
}

static void b_create(void)
{
    b_destroy();
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = entries;
    options.entry_count = sizeof entries / sizeof entries[0];
    options.flags = RM_CONTEXT_IGNORE_ENV;
    int32_t rc = vt->context_create(&options, &b);
    FUZZ_CHECK(documented(rc, create_codes), "context_create: undocumented code %s (%s)",
               vt->error_name(rc), vt->context_last_error(NULL));
    if (rc != RM_OK) {
        fuzz_check_message(NULL, rc, "context_create");
        b = NULL;
        b_errors++;
    }
}

/* Every listed model must be attachable or refused with a code, and
 * readable once attached. */
static void b_list_and_read(void)
{
    rm_model_info rows[ENTRIES + 2];
    uint32_t count = 0;
    int32_t rc = checked(b, vt->registry_list(b, rows, sizeof rows[0], ENTRIES + 2, &count),
                         list_codes, "registry_list");
    if (rc != RM_OK)
        return;
    for (uint32_t i = 0; i < count && i < ENTRIES + 2; i++) {
        if (rows[i].state != RM_MODEL_STATE_READY)
            continue;
        plan unused = {.how = 2};
        rm_model_handle *handle = NULL;
        void *model = NULL;
        rc = checked(b, vt->model_get_or_load(b, rows[i].key, fuzz_loader, &unused, &handle,
                                              &model),
                     listed_get_codes, "model_get_or_load (listed)");
        if (rc != RM_OK)
            continue;
        FUZZ_CHECK(model != NULL, "a listed model without memory");
        /* Every model this harness makes has at least 4 KiB; the row's
         * size comes from the table, which a scribble may have changed
         * after this process mapped the model, so it is not a bound. */
        volatile const uint8_t *bytes = model;
        uint64_t readable = rows[i].bytes < 4096 ? rows[i].bytes : 4096;
        uint64_t sum = 0;
        for (uint64_t at = 0; at < readable; at += 64)
            sum += bytes[at];
        (void)sum;
        checked(b, vt->model_release(b, handle), release_codes, "model_release");
    }
}

static void b_get(fuzz_script *s)
{
    if (b == NULL || handle_count == MAX_HANDLES)
        return;
    const char *key = keys[fuzz_take(s, 1) % KEYS];
    plan p = {.how = (uint8_t)fuzz_take(s, 1)};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t rc = checked(b, vt->model_get_or_load(b, key, fuzz_loader, &p, &handle, &model),
                         get_codes, "model_get_or_load");
    if (rc != RM_OK)
        return;
    FUZZ_CHECK(handle != NULL && model != NULL, "a model without a handle or memory");
    volatile const uint8_t *first = model;
    (void)*first;
    handles[handle_count++] = handle;
}

/* ---- scribbling --------------------------------------------------------- */

static void apply(uint64_t *word, uint64_t how, uint64_t value)
{
    switch (how % 3) {
    case 0: *word = value; break;
    case 1: *word ^= value; break;
    default: *word += 1; break;
    }
}

static rm_node_entry *entry_at(uint32_t index)
{
    uint64_t offset = RM_NODE_TABLE_HEADER_BYTES + RM_NODE_ATTACHER_ARRAY_BYTES +
                      rm_node_hash_array_bytes(ENTRIES) + (uint64_t)index * sizeof(rm_node_entry);
    return (rm_node_entry *)(void *)(table + offset);
}

static void run(fuzz_script *s)
{
    for (int op = 0; op < MAX_OPERATIONS && s->left > 0; op++) {
        switch (fuzz_take(s, 1) % 12) {
        case 0: {
            size_t offset = (size_t)(fuzz_take(s, 2) % table_bytes);
            size_t length = (size_t)(fuzz_take(s, 1) % 16 + 1);
            for (size_t i = 0; i < length && offset + i < table_bytes; i++)
                table[offset + i] = (uint8_t)fuzz_take(s, 1);
            break;
        }
        case 1: {
            rm_node_entry *entry = entry_at((uint32_t)(fuzz_take(s, 1) % ENTRIES));
            size_t words = sizeof *entry / 8;
            uint64_t *word = (uint64_t *)(void *)entry + fuzz_take(s, 1) % words;
            uint64_t how = fuzz_take(s, 1);
            apply(word, how, fuzz_take(s, 8));
            break;
        }
        case 2: {
            uint64_t *word = (uint64_t *)(void *)table + fuzz_take(s, 1) % 32;
            uint64_t how = fuzz_take(s, 1);
            apply(word, how, fuzz_take(s, 8));
            break;
        }
        case 3: {
            uint64_t *word = (uint64_t *)(void *)(table + RM_NODE_TABLE_HEADER_BYTES) +
                             fuzz_take(s, 1) % 16;
            uint64_t how = fuzz_take(s, 1);
            apply(word, how, fuzz_take(s, 8));
            break;
        }
        case 4:
            /* Costly (everything is made again after the input): only on
             * an explicit request. */
            if (fuzz_take(s, 1) == RECREATE) {
                b_create();
                b_recreated = true;
            }
            break;
        case 5: b_get(s); break;
        case 6:
            if (b != NULL && handle_count > 0) {
                size_t i = (size_t)(fuzz_take(s, 1) % handle_count);
                checked(b, vt->model_release(b, handles[i]), release_codes, "model_release");
                handles[i] = handles[--handle_count];
            }
            break;
        case 7:
            if (b != NULL)
                b_list_and_read();
            break;
        case 8:
            if (b != NULL && scans++ < MAX_SCANS) {
                rm_registry_reclaim_report report = RM_STRUCT_INIT(rm_registry_reclaim_report);
                checked(b, vt->registry_reclaim(b, &report), reclaim_codes, "registry_reclaim");
            }
            break;
        case 9:
            if (b != NULL) {
                rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
                checked(b, vt->registry_metrics(b, &metrics), metrics_codes,
                        "registry_metrics");
            }
            break;
        case 10:
            if (b != NULL) {
                uint64_t which = fuzz_take(s, 1) % (KEYS + 1);
                checked(b, vt->model_evict(b, which == KEYS ? NULL : keys[which]), evict_codes,
                        "model_evict");
            }
            break;
        default:
            if (fuzz_take(s, 1) == RECREATE)
                b_destroy();
            break;
        }
    }
}

/* ---- back to the starting table ----------------------------------------- */

/* The harness takes the table lock the way the plugin does; a lock a
 * scribble left unusable (a garbage owner, not recoverable) is made anew,
 * which only the harness may do: it knows no one else holds it. */
static void remake_lock(rm_node_header *header)
{
    repairs_needed++;
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&header->lock, &attributes);
    pthread_mutexattr_destroy(&attributes);
    FUZZ_CHECK(pthread_mutex_lock(&header->lock) == 0, "the re-made table lock");
}

static void lock_for_restore(void)
{
    rm_node_header *header = (rm_node_header *)(void *)table;
    const rm_node_header *start = (const rm_node_header *)(const void *)pristine;
    /* A lock of another type could make glibc abort inside lock(). */
    if (header->lock.__data.__kind != start->lock.__data.__kind) {
        remake_lock(header);
        return;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += 50 * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    int rc = pthread_mutex_timedlock(&header->lock, &deadline);
    if (rc == 0)
        return;
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(&header->lock);
        return;
    }
    remake_lock(header);
}

static void restore(void)
{
    rm_node_header *header = (rm_node_header *)(void *)table;
    lock_for_restore();
    size_t lock_start = offsetof(rm_node_header, lock);
    size_t lock_end = lock_start + sizeof header->lock;
    memcpy(table, pristine, lock_start);
    memcpy(table + lock_end, pristine + lock_end, table_bytes - lock_end);
    pthread_mutex_unlock(&header->lock);
    /* Model segments B made are not in the starting table: remove them. */
    char keep[64], prefix[64];
    snprintf(keep, sizeof keep, "rmreg.%s.m.%016llx", ns, (unsigned long long)a_segment_id);
    snprintf(prefix, sizeof prefix, "rmreg.%s.m.", ns);
    (void)shm_unlink_prefix_except(prefix, keep);
}

/* ---- set-up ------------------------------------------------------------- */

static void map_table(void)
{
    int fd = open(table_path, O_RDWR | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "cannot open %s: %s", table_path, strerror(errno));
    struct stat info;
    FUZZ_CHECK(fstat(fd, &info) == 0, "fstat %s", table_path);
    table_bytes = (size_t)info.st_size;
    table_device = (uint64_t)info.st_dev;
    table_inode = (uint64_t)info.st_ino;
    FUZZ_CHECK(table_bytes == rm_node_table_bytes(ENTRIES), "table of %zu bytes", table_bytes);
    table = mmap(NULL, table_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    FUZZ_CHECK(table != MAP_FAILED, "mmap %s", table_path);
    pristine = malloc(table_bytes);
    FUZZ_CHECK(pristine != NULL, "out of memory");
    memcpy(pristine, table, table_bytes);
    a_segment_id = 0;
    for (uint32_t i = 0; i < ENTRIES; i++)
        if (entry_at(i)->state == RM_NODE_READY)
            a_segment_id = entry_at(i)->segment_id;
    FUZZ_CHECK(a_segment_id != 0, "A's model is not in the table");
}

static void tear_down(void)
{
    b_destroy();
    if (a != NULL) {
        vt->model_release(a, a_handle);
        vt->context_destroy(a);
        a = NULL;
        a_handle = NULL;
        a_model = NULL;
    }
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rmreg.%s.", ns);
    (void)shm_unlink_prefix(prefix);
}

/* A fresh namespace state: A with its model, B attached, the table mapped
 * and its bytes kept as every input's starting point. */
static void start_over(void)
{
    if (table != NULL) {
        munmap(table, table_bytes);
        table = NULL;
        free(pristine);
        pristine = NULL;
    }
    tear_down();
    a = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    plan held = {.how = 0};
    int32_t rc = vt->model_get_or_load(a, keys[0], fuzz_loader, &held, &a_handle, &a_model);
    FUZZ_CHECK(rc == RM_OK, "A's model: %s", vt->context_last_error(a));
    b_create();
    FUZZ_CHECK(b != NULL, "B: %s", vt->context_last_error(NULL));
    map_table();
}

static void print_observations(void)
{
    fprintf(stderr, "fuzz_node_table: %llu inputs; calls of B that returned an error: %llu; "
                    "table locks the harness had to re-make: %llu; fresh starts: %llu\n",
            (unsigned long long)inputs, (unsigned long long)b_errors,
            (unsigned long long)repairs_needed, (unsigned long long)rebuilds);
}

/* ---- seeds -------------------------------------------------------------- */

typedef struct seed {
    uint8_t bytes[256];
    size_t used;
} seed;

static void put(seed *s, uint64_t value, size_t width)
{
    for (size_t i = 0; i < width && s->used < sizeof s->bytes; i++)
        s->bytes[s->used++] = (uint8_t)(value >> (8 * i));
}

static void write_seeds(const char *dir)
{
    seed s = {0};
    /* Plain use: get every key (loads, a failure, a refusal), list,
     * release, reclaim, evict all. */
    for (uint8_t k = 0; k < KEYS; k++) {
        put(&s, 5, 1);
        put(&s, k, 1);
        put(&s, k, 1);
    }
    put(&s, 7, 1);
    put(&s, 6, 1);
    put(&s, 0, 1);
    put(&s, 8, 1);
    put(&s, 9, 1);
    put(&s, 10, 1);
    put(&s, KEYS, 1);
    fuzz_write_seed(dir, "plain-use", s.bytes, s.used);

    /* Each entry word of A's model scribbled before B attaches, then B
     * asks for it and lists. */
    for (uint8_t word = 0; word < 12; word++) {
        s.used = 0;
        put(&s, 1, 1);
        put(&s, 0, 1);
        put(&s, word, 1);
        put(&s, 1, 1);
        put(&s, 0x00ff00ff00ff00ffu, 8);
        put(&s, 5, 1);
        put(&s, 0, 1);
        put(&s, 0, 1);
        put(&s, 7, 1);
        char name[32];
        snprintf(name, sizeof name, "entry-word-%u", word);
        fuzz_write_seed(dir, name, s.bytes, s.used);
    }
    /* Header words (magic, layout, capacity, sizes, the lock) after B
     * attached. */
    for (uint8_t word = 0; word < 12; word++) {
        s.used = 0;
        put(&s, 2, 1);
        put(&s, word, 1);
        put(&s, 2, 1);
        put(&s, 0, 8);
        put(&s, 5, 1);
        put(&s, 1, 1);
        put(&s, 0, 1);
        put(&s, 7, 1);
        put(&s, 8, 1);
        char name[32];
        snprintf(name, sizeof name, "header-word-%u", word);
        fuzz_write_seed(dir, name, s.bytes, s.used);
    }
    /* An attacher record of a live process with a garbage count, then B
     * comes and goes. */
    s.used = 0;
    put(&s, 3, 1);
    put(&s, 1, 1);
    put(&s, 0, 1);
    put(&s, 0xffffffff00000001u, 8);
    put(&s, 4, 1);
    put(&s, RECREATE, 1);
    put(&s, 8, 1);
    put(&s, 11, 1);
    put(&s, RECREATE, 1);
    fuzz_write_seed(dir, "attacher-count", s.bytes, s.used);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vt = fuzz_vtable();
    /* A scribbled lock word is answered after this wait: a second per
     * input would make the run a thousand times slower, and the check
     * that follows the wait is the same. */
    rm_node_table_lock_patience_ns = 2 * UINT64_C(1000000);
    fuzz_namespace("table", ns, sizeof ns);
    char table_name[RM_SEGMENT_NAME_MAX];
    if (!rm_segment_name_format(table_name, RM_SEGMENT_NODE_TABLE, ns, 0, 0))
        abort();
    snprintf(table_path, sizeof table_path, RM_SEGMENT_DIRECTORY "%s", table_name);
    entries[0] = (rm_config_entry){.key = "registry.scope", .value = "node"};
    entries[1] = (rm_config_entry){.key = "registry.namespace", .value = ns};
    entries[2] = (rm_config_entry){.key = "registry.table_entries", .value = "8"};
    /* No TTL: the only evictions are the script's, so the starting table
     * stays what it is between inputs. */
    entries[3] = (rm_config_entry){.key = "registry.ttl_s", .value = "0"};
    /* Only the registry: a context with tensors makes a jemalloc arena,
     * which was most of an input's time. */
    entries[4] = (rm_config_entry){.key = "features", .value = "model-registry"};
    start_over();
    if (fuzz_seed_directory() != NULL) {
        write_seeds(fuzz_seed_directory());
        tear_down();
        exit(0);
    }
    atexit(tear_down);
    atexit(print_observations);
    return 0;
}

/* True while /dev/shm's table is still the file the harness maps (a
 * reclaim of a scribbled table may have removed it, and a context made a
 * new one). */
static bool same_table(void)
{
    struct stat info;
    return stat(table_path, &info) == 0 && (uint64_t)info.st_dev == table_device &&
           (uint64_t)info.st_ino == table_inode;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inputs++;
    scans = 0;
    fuzz_script s = {.at = data, .left = size};
    run(&s);
    /* B stays for the next input (making a context per input was nearly
     * all of the time); it gives back what it holds, and the table is put
     * back as it was, with B attached. A B the script destroyed, or a
     * table that is not the one the run began with, starts everything
     * again. */
    if (b != NULL)
        b_release_all();
    if (b == NULL || b_recreated || !same_table()) {
        b_recreated = false;
        rebuilds++;
        start_over();
        return 0;
    }
    restore();
    /* A still has its model, whole. */
    volatile const uint8_t *model = a_model;
    FUZZ_CHECK(model[0] == 0x5a && model[4095] == 0x5a, "A's model changed");
    return 0;
}
