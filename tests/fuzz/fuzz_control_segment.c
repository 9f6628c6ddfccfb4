/* Fuzz target: a pool's control segment scribbled over by another process
 * of the same user, and the next calls of its owner and of an importer.
 *
 * The control segment (plugin/tensor/shm_pool/shm_control.h) is shared read-write by the
 * owner and every importer, so any process of the user can write anything
 * into it. The plugin's promise is that the owner and the importers then
 * get error codes, never a crash or a hang. The harness maps the owner's
 * control segment read-write and plays that process.
 *
 * Each input starts from a quiet pool: owner O allocates four tensors and
 * importer I (another context of the namespace) holds three of them, one
 * twice. The input is then a script of at most 64 operations, each an
 * opcode byte (% 16) followed by its arguments (zeros once the input runs
 * out):
 *   0  scribble bytes:      u16 offset, u8 length (% 16 + 1), bytes
 *   1  scribble a slot:     u8 slot (% 8: the slots in use), u8 word, how, u64
 *   2  scribble the header: u8 word (of its 4 KiB: fields, holders), how, u64
 *   3  mark a slot pending: u8 slot, and the pending count
 *   4  write an image:      u16 offset, u16 length, bytes (whole segments)
 *   5  O tensor_allocate    u8 size class
 *   6  O tensor_release     u8 handle
 *   7  O tensor_import of one of its descriptors (u8), binary or text
 *   8  I tensor_import      u8 descriptor, u8 flags (writable, text)
 *   9  I tensor_release     u8 handle
 *  10  O tensor_reclaim     11  I tensor_reclaim (the owner's pid and start
 *      time put back first: see reclaim())
 *  12  pool_stats, session_bytes, export (u8 handle) of both
 *  13  I reads its view     u8 handle (first and last byte)
 *  14  O writes its tensor  u8 handle (first and last byte)
 *  15  shm_list             u8 context
 * ("how": 0 set, 1 xor, 2 add one, 3 set the holder bits of the low half,
 * 4 clear them; at most 3 reclaims and listings per input, as each reads
 * all of /dev/shm.) Every call must return a code documented for it, with
 * a message when it fails; every handle must have memory; the owner never
 * hands out memory that a handle of its own still points at.
 *
 * Then the harness puts the segment back the way the owner and importer
 * left it before the scribbling, through their own calls where it can
 * (both release everything), and by rewriting what only a scribble
 * changed: the header's fixed fields, the holder table (the importer's
 * entry is found from its hold on a fresh tensor), and the state of each
 * slot the owner published, with a pending mark so that the owner's next
 * call frees what a scribble kept alive. If the owner still counts a live
 * tensor, or a scribble made the namespace reaper unlink the pool, the
 * owner is made again with a new pool (see rebuild()); the count is
 * printed at exit with the other observations. So inputs stay
 * independent and the run stays fast.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "descriptor.h"
#include "error.h"
#include "fuzz_common.h"
#include "process_identity.h"
#include "shm_control.h"
#include "shm_segment.h"

#define MAX_HANDLES 24
#define MAX_DESCRIPTORS 48
#define MAX_ALLOCATIONS 40 /* per input: with the probe, fewer than the 64 slots */
#define MAX_OPERATIONS 64
/* tensor_reclaim and shm_list read all of /dev/shm and /proc entries: a
 * few per input find what more would, at a fraction of the time. */
#define MAX_SCANS 3
#define SLOTS 64u

static const rm_plugin_v1 *vt;
static char ns[48];
static rm_context *owner, *importer;
static rm_control control;        /* the scribbler's mapping */
static rm_control_header fixed;   /* the header as the owner wrote it */
static char data_path[160], control_path[160];

typedef struct held {
    rm_tensor *handle;
    int descriptor; /* index into descriptors[] */
} held;

/* What one input did; reset by prepare(). One more entry than the script
 * may use, for settle()'s probe. */
static held owner_handles[MAX_HANDLES + 1], importer_handles[MAX_HANDLES + 1];
static size_t owner_count, importer_count;
static uint8_t descriptors[MAX_DESCRIPTORS + 1][RM_TENSOR_DESCRIPTOR_SIZE];
static size_t descriptor_count;
static uint32_t published[SLOTS]; /* the latest generation the owner gave each slot */
static size_t allocations;
static bool scribbled; /* the script wrote into the segment */
static int scans;      /* reclaims and listings so far */

/* Observations over the run, printed at exit. */
static uint64_t inputs, rebuilds, owner_errors, importer_errors;

/* ---- contexts --------------------------------------------------------- */

static bool documented(int32_t rc, const int32_t *codes)
{
    for (; *codes != 1; codes++)
        if (rc == *codes)
            return true;
    return false;
}

static const int32_t allocate_codes[] = {RM_OK, RM_E_QUOTA_EXCEEDED, RM_E_NO_MEMORY, 1};
static const int32_t import_codes[] = {RM_OK, RM_E_INVALID_DESCRIPTOR, RM_E_STALE_DESCRIPTOR,
                                       RM_E_QUOTA_EXCEEDED, RM_E_NO_MEMORY, RM_E_SYSTEM, 1};
static const int32_t ok_codes[] = {RM_OK, 1};
static const int32_t reclaim_codes[] = {RM_OK, RM_E_SYSTEM, 1};
static const int32_t list_codes[] = {RM_OK, RM_E_BUFFER_TOO_SMALL, RM_E_SYSTEM,
                                     RM_E_NO_MEMORY, 1};

/* Checks a call's code; counts the errors the scribbling caused. */
static int32_t checked(rm_context *context, int32_t rc, const int32_t *codes, const char *call)
{
    FUZZ_CHECK(documented(rc, codes), "%s by the %s: undocumented code %s (%s)", call,
               context == owner ? "owner" : "importer", vt->error_name(rc),
               vt->context_last_error(context));
    if (rc != RM_OK) {
        fuzz_check_message(context, rc, call);
        if (context == owner)
            owner_errors++;
        else
            importer_errors++;
    }
    return rc;
}

static rm_config_entry entries[5];

/* The owner and its pool (made by its first allocation), mapped for the
 * scribbler, its fixed header fields noted. */
static void create_owner(void)
{
    owner = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){RM_DTYPE_UINT, 8, 1};
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    rm_tensor *first = NULL;
    int32_t rc = vt->tensor_allocate(owner, &spec, &first);
    FUZZ_CHECK(rc == RM_OK, "setup: tensor_allocate: %s: %s", vt->error_name(rc),
               vt->context_last_error(owner));
    FUZZ_CHECK(vt->tensor_release(owner, first) == RM_OK, "setup: tensor_release");
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    FUZZ_CHECK(vt->tensor_pool_stats(owner, &stats) == RM_OK, "setup: pool_stats");
    char control_name[RM_SEGMENT_NAME_MAX];
    FUZZ_CHECK(rm_segment_name_sibling(stats.pool_name, RM_SEGMENT_POOL_CONTROL, control_name),
               "setup: %s is not a pool's name", stats.pool_name);
    snprintf(data_path, sizeof data_path, RM_SEGMENT_DIRECTORY "%s", stats.pool_name);
    snprintf(control_path, sizeof control_path, RM_SEGMENT_DIRECTORY "%s", control_name);
    static const int token;
    rc = rm_control_open(control_name, &token, &control);
    FUZZ_CHECK(rc == RM_OK, "setup: cannot map %s: %s", control_name, rm_error_last(&token));
    FUZZ_CHECK(control.slot_count == SLOTS, "setup: %u slots", control.slot_count);
    memcpy(&fixed, control.header, offsetof(rm_control_header, retired));
}

static void destroy_owner(void)
{
    if (control.header != NULL)
        rm_control_close(&control);
    vt->context_destroy(owner);
    owner = NULL;
}

static void build_contexts(void)
{
    entries[0] = (rm_config_entry){"features", "shared-memory"};
    entries[1] = (rm_config_entry){"shm.namespace", ns};
    entries[2] = (rm_config_entry){"shm.pool_bytes", "4M"};
    entries[3] = (rm_config_entry){"shm.max_tensors", "64"};
    entries[4] = (rm_config_entry){"log.level", "error"};
    create_owner();
    importer = fuzz_context(entries, sizeof entries / sizeof entries[0]);
}

static void destroy_contexts(void)
{
    destroy_owner();
    vt->context_destroy(importer);
    importer = NULL;
    fuzz_remove_namespace(ns);
}

/* A new pool, after a scribble made the old one unusable (say the
 * namespace reaper unlinked it): the owner is made again. The importer,
 * which holds nothing by now, forgets its view of the old pool (retired by
 * the owner's destroy) at its own tensor_reclaim; only when it does not
 * is it made again too. */
static void rebuild(void)
{
    rebuilds++;
    destroy_owner();
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    (void)vt->tensor_reclaim(importer, &report);
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    FUZZ_CHECK(vt->tensor_pool_stats(importer, &stats) == RM_OK, "tensor_pool_stats");
    if (stats.pools_mapped != 0 || stats.heap_tensors != 0 || stats.live_tensors != 0) {
        vt->context_destroy(importer);
        importer = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    }
    fuzz_remove_namespace(ns);
    create_owner();
}

static void print_observations(void)
{
    fprintf(stderr,
            "fuzz_control_segment: %llu inputs, %llu new pools; calls that returned an "
            "error: owner %llu, importer %llu\n",
            (unsigned long long)inputs, (unsigned long long)rebuilds,
            (unsigned long long)owner_errors, (unsigned long long)importer_errors);
}

/* ---- what the contexts do --------------------------------------------- */

static const uint64_t size_classes[] = {1, 64, 200, 4096, 12288, 65536};

static void owner_allocate(uint8_t size_class, bool probe)
{
    size_t room = probe ? 1 : 0;
    if ((allocations >= MAX_ALLOCATIONS && !probe) || owner_count >= MAX_HANDLES + room ||
        descriptor_count >= MAX_DESCRIPTORS + room)
        return;
    allocations++;
    rm_tensor_spec spec = RM_STRUCT_INIT(rm_tensor_spec);
    spec.dtype = (rm_dtype){RM_DTYPE_UINT, 8, 1};
    spec.ndim = 1;
    spec.shape[0] = (int64_t)size_classes[size_class % 6];
    spec.session = size_class % 3;
    spec.flags = RM_TENSOR_ALLOC_SHARED_ONLY;
    rm_tensor *tensor = NULL;
    if (checked(owner, vt->tensor_allocate(owner, &spec, &tensor), allocate_codes,
                "tensor_allocate") != RM_OK)
        return;
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    FUZZ_CHECK(vt->tensor_info(owner, tensor, &info) == RM_OK, "tensor_info");
    /* Memory the owner hands out is never memory one of its own live
     * handles still points at, whatever the segment says (a scribble made
     * the owner free blocks it still held until tensor.c trusted its own
     * holds first; seed regress-allocation-overlaps-held-tensor). */
    uintptr_t a = (uintptr_t)info.data;
    for (size_t i = 0; i < owner_count; i++) {
        rm_tensor_info other = RM_STRUCT_INIT(rm_tensor_info);
        FUZZ_CHECK(vt->tensor_info(owner, owner_handles[i].handle, &other) == RM_OK,
                   "tensor_info");
        uintptr_t b = (uintptr_t)other.data;
        FUZZ_CHECK(!(a < b + (other.nbytes ? other.nbytes : 1) &&
                     b < a + (info.nbytes ? info.nbytes : 1)),
                   "the owner handed out memory of a tensor it still holds");
    }
    memset(info.data, (int)(0x40 + allocations), info.nbytes);
    uint8_t *out = descriptors[descriptor_count];
    checked(owner, vt->tensor_export(owner, tensor, out, RM_TENSOR_DESCRIPTOR_SIZE), ok_codes,
            "tensor_export");
    rm_descriptor d;
    const char *why = NULL;
    FUZZ_CHECK(rm_descriptor_decode(out, &d, &why), "the owner exported garbage: %s", why);
    FUZZ_CHECK(d.slot < SLOTS, "slot %u", d.slot);
    published[d.slot] = d.generation;
    owner_handles[owner_count++] = (held){tensor, (int)descriptor_count++};
}

static void release_from(rm_context *context, held *table, size_t *count, uint8_t which)
{
    if (*count == 0)
        return;
    size_t i = which % *count;
    checked(context, vt->tensor_release(context, table[i].handle), ok_codes, "tensor_release");
    table[i] = table[--*count];
}

static void import_into(rm_context *context, held *table, size_t *count, uint8_t which,
                        uint8_t flags, bool probe)
{
    if (descriptor_count == 0 || *count >= MAX_HANDLES + (probe ? 1 : 0))
        return;
    int index = (int)(which % descriptor_count);
    rm_tensor *tensor = NULL;
    uint64_t import_flags = (flags & 1) ? RM_TENSOR_IMPORT_WRITABLE : 0;
    int32_t rc;
    if (flags & 2) {
        char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
        rm_descriptor_to_text(descriptors[index], text);
        rc = vt->tensor_import_text(context, text, import_flags, &tensor);
    } else {
        rc = vt->tensor_import(context, descriptors[index], RM_TENSOR_DESCRIPTOR_SIZE,
                               import_flags, &tensor);
    }
    if (checked(context, rc, import_codes, "tensor_import") != RM_OK)
        return;
    /* Every handle has memory, a block of at least one byte (the owner's
     * import of its own slot freed after a scribble had none until
     * tensor.c checked its own slot first; seed
     * regress-own-import-without-memory). */
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    FUZZ_CHECK(vt->tensor_info(context, tensor, &info) == RM_OK, "tensor_info");
    FUZZ_CHECK(info.data != NULL, "the %s's import has no memory",
               context == owner ? "owner" : "importer");
    table[(*count)++] = (held){tensor, index};
}

static void touch(rm_context *context, held *table, size_t count, uint8_t which, bool write)
{
    if (count == 0)
        return;
    rm_tensor_info info = RM_STRUCT_INIT(rm_tensor_info);
    checked(context, vt->tensor_info(context, table[which % count].handle, &info), ok_codes,
            "tensor_info");
    if (info.nbytes == 0)
        return;
    volatile uint8_t *data = info.data;
    if (write) {
        data[0] = 0x5a;
        data[info.nbytes - 1] = 0xa5;
    } else {
        (void)data[0];
        (void)data[info.nbytes - 1];
    }
}

static void stats_of(rm_context *context, held *table, size_t count, uint8_t which)
{
    rm_tensor_pool_stats stats = RM_STRUCT_INIT(rm_tensor_pool_stats);
    checked(context, vt->tensor_pool_stats(context, &stats), ok_codes, "tensor_pool_stats");
    uint64_t bytes = 0;
    checked(context, vt->tensor_session_bytes(context, which % 3, &bytes), ok_codes,
            "tensor_session_bytes");
    if (count == 0)
        return;
    rm_tensor *tensor = table[which % count].handle;
    uint8_t binary[RM_TENSOR_DESCRIPTOR_SIZE];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    checked(context, vt->tensor_export(context, tensor, binary, sizeof binary), ok_codes,
            "tensor_export");
    checked(context, vt->tensor_export_text(context, tensor, text, sizeof text), ok_codes,
            "tensor_export_text");
}

static void reclaim(rm_context *context)
{
    if (scans++ >= MAX_SCANS)
        return;
    /* The owner's pid and start time are put back first: with them
     * scribbled, the namespace reaper rightly takes the pool for a dead
     * owner's and unlinks it, and every new pool the harness would then
     * make leaves a 2 MiB mapping behind (README, "Fuzzing"), enough to
     * exhaust vm.max_map_count long before a long run ends. */
    control.header->owner_pid = fixed.owner_pid;
    control.header->owner_start_time = fixed.owner_start_time;
    rm_reclaim_report report = RM_STRUCT_INIT(rm_reclaim_report);
    checked(context, vt->tensor_reclaim(context, &report), reclaim_codes, "tensor_reclaim");
}

static void list(rm_context *context)
{
    if (scans++ >= MAX_SCANS)
        return;
    rm_shm_pool_info rows[4];
    uint32_t count = 0;
    checked(context, vt->shm_list(context, rows, sizeof rows[0], 4, &count), list_codes,
            "shm_list");
}

/* ---- the scribbler ---------------------------------------------------- */

/* Changes the 8-byte word at `offset` of the segment the way `how` says.
 * Plain stores: the harness is single-threaded, and another process
 * would not use the plugin's atomics either. */
static void scribble_word(size_t offset, uint8_t how, uint64_t value)
{
    uint8_t *base = (uint8_t *)control.header;
    if (offset + 8 > control.mapped_bytes)
        return;
    uint64_t word;
    memcpy(&word, base + offset, sizeof word);
    switch (how % 5) {
    case 0: word = value; break;
    case 1: word ^= value; break;
    case 2: word += 1; break;
    case 3: word |= value & 0xfffffffeu; break;  /* holder bits (not the owner's) */
    case 4: word &= ~(value & 0xffffffffu); break; /* drop holder bits, the owner's too */
    }
    memcpy(base + offset, &word, sizeof word);
}

static void scribble_bytes(size_t offset, const uint8_t *bytes, size_t length)
{
    if (offset >= control.mapped_bytes)
        return;
    if (length > control.mapped_bytes - offset)
        length = control.mapped_bytes - offset;
    memcpy((uint8_t *)control.header + offset, bytes, length);
}

static void run_script(fuzz_script *s)
{
    uint8_t chunk[16];
    for (int n = 0; n < MAX_OPERATIONS && s->left > 0; n++) {
        uint8_t op = fuzz_take8(s) % 16;
        scribbled = scribbled || op <= 4;
        switch (op) {
        case 0: {
            size_t offset = (size_t)fuzz_take(s, 2) % control.mapped_bytes;
            size_t length = fuzz_take8(s) % 16 + 1;
            for (size_t i = 0; i < length; i++)
                chunk[i] = fuzz_take8(s);
            scribble_bytes(offset, chunk, length);
            break;
        }
        case 1: {
            size_t slot = fuzz_take8(s) % 8, word = fuzz_take8(s) % 8;
            uint8_t how = fuzz_take8(s);
            scribble_word((size_t)((uint8_t *)&control.slots[slot] -
                                   (uint8_t *)control.header) + 8 * word,
                          how, fuzz_take(s, 8));
            break;
        }
        case 2: {
            size_t word = fuzz_take8(s);
            uint8_t how = fuzz_take8(s);
            /* Words 0..255 cover the fields and the holder table. */
            scribble_word(8 * word, how, fuzz_take(s, 8));
            break;
        }
        case 3: {
            uint32_t slot = fuzz_take8(s) % SLOTS;
            atomic_fetch_or(&control.pending_bits[slot / 64], (uint64_t)1 << (slot % 64));
            atomic_fetch_add(&control.header->pending, 1);
            break;
        }
        case 4: {
            size_t offset = (size_t)fuzz_take(s, 2), length = (size_t)fuzz_take(s, 2);
            if (length > s->left)
                length = s->left;
            scribble_bytes(offset, s->at, length);
            s->at += length;
            s->left -= length;
            break;
        }
        case 5: owner_allocate(fuzz_take8(s), false); break;
        case 6: release_from(owner, owner_handles, &owner_count, fuzz_take8(s)); break;
        case 7: {
            uint8_t which = fuzz_take8(s);
            import_into(owner, owner_handles, &owner_count, which, fuzz_take8(s) & 2, false);
            break;
        }
        case 8: {
            uint8_t which = fuzz_take8(s);
            import_into(importer, importer_handles, &importer_count, which, fuzz_take8(s), false);
            break;
        }
        case 9: release_from(importer, importer_handles, &importer_count, fuzz_take8(s)); break;
        case 10: reclaim(owner); break;
        case 11: reclaim(importer); break;
        case 12: {
            uint8_t which = fuzz_take8(s);
            stats_of(owner, owner_handles, owner_count, which);
            stats_of(importer, importer_handles, importer_count, which);
            break;
        }
        case 13: touch(importer, importer_handles, importer_count, fuzz_take8(s), false); break;
        case 14: touch(owner, owner_handles, owner_count, fuzz_take8(s), true); break;
        case 15: list(fuzz_take8(s) & 1 ? importer : owner); break;
        }
    }
}

/* ---- a quiet pool before and after each input ------------------------- */

static void prepare(void)
{
    owner_count = importer_count = descriptor_count = allocations = 0;
    scribbled = false;
    scans = 0;
    memset(published, 0, sizeof published);
    for (uint8_t size_class = 0; size_class < 4; size_class++)
        owner_allocate(size_class, false);
    FUZZ_CHECK(owner_count == 4, "prepare: the owner allocated %zu of 4 (%s)", owner_count,
               vt->context_last_error(owner));
    static const uint8_t imports[][2] = {{0, 0}, {1, 0}, {1, 2}, {2, 1}};
    for (size_t i = 0; i < 4; i++)
        import_into(importer, importer_handles, &importer_count, imports[i][0],
                    imports[i][1], false);
    FUZZ_CHECK(importer_count == 4, "prepare: the importer imported %zu of 4 (%s)",
               importer_count, vt->context_last_error(importer));
}

/* The header's fixed fields, retired clear, and a holder table with only
 * the importer's entry (`importer_index`; 0: none). */
static void restore_header(uint32_t importer_index)
{
    memcpy(control.header, &fixed, offsetof(rm_control_header, retired));
    atomic_store(&control.header->retired, 0);
    for (uint32_t i = 0; i <= RM_TENSOR_MAX_HOLDERS; i++) {
        bool mine = i == importer_index && i != 0;
        control.header->holders[i].reserved = 0;
        atomic_store(&control.header->holders[i].pid, mine ? (uint32_t)getpid() : 0);
        atomic_store(&control.header->holders[i].start_time,
                     mine ? rm_process_self_start_time() : 0);
    }
}

/* Puts both contexts back to a quiet pool: the owner holds nothing, the
 * importer holds nothing and maps the pool under its own holder entry.
 * False when only destroying them will. */
static bool settle(void)
{
    restore_header(0);
    /* A fresh tensor that both hold: the importer's hold on it shows which
     * holder entry the importer uses now (it may have unmapped the pool
     * and mapped it again during the input, or do so for this import).
     * First the importer lets go of everything: while it holds a handle
     * on a slot (say of an older generation that a scribble let the owner
     * free and reuse), another import of that slot takes no new hold. */
    while (importer_count > 0)
        release_from(importer, importer_handles, &importer_count, 0);
    size_t before = owner_count;
    owner_allocate(0, true);
    uint32_t importer_index = 0;
    if (owner_count == before + 1) {
        int descriptor = owner_handles[owner_count - 1].descriptor;
        rm_descriptor probe;
        const char *why = NULL;
        FUZZ_CHECK(rm_descriptor_decode(descriptors[descriptor], &probe, &why), "%s", why);
        /* import_into picks descriptor `which % count`: the probe's is last. */
        import_into(importer, importer_handles, &importer_count, (uint8_t)descriptor, 0,
                    true);
        if (importer_count == 0) {
            /* The importer's view of the pool may be from a descriptor
             * the owner exported while its start time was scribbled over
             * (it copies it from the segment), so that the view refuses
             * every genuine descriptor now. Marked retired, the pool's
             * view goes at the importer's reclaim, and the import maps it
             * afresh. */
            atomic_store(&control.header->retired, 1);
            (void)vt->tensor_reclaim(importer, NULL);
            atomic_store(&control.header->retired, 0);
            import_into(importer, importer_handles, &importer_count, (uint8_t)descriptor, 0,
                        true);
        }
        uint32_t bit = rm_control_mask(atomic_load(&control.slots[probe.slot].state)) &
                       ~RM_CONTROL_OWNER_BIT;
        if (importer_count == 1) {
            FUZZ_CHECK(bit != 0 && (bit & (bit - 1)) == 0, "the importer's hold is 0x%x", bit);
            importer_index = (uint32_t)__builtin_ctz(bit);
        }
    }
    while (importer_count > 0)
        release_from(importer, importer_handles, &importer_count, 0);
    while (owner_count > 0)
        release_from(owner, owner_handles, &owner_count, 0);
    if (importer_index == 0)
        return false;
    /* What a scribble kept alive: nobody holds anything now, so every
     * slot the owner published is dead; the pending marks make the
     * owner's next call free each one it still counts. */
    restore_header(importer_index);
    for (uint32_t slot = 0; slot < SLOTS; slot++) {
        if (published[slot] == 0)
            continue;
        atomic_store(&control.slots[slot].state, (uint64_t)published[slot] << 32);
        atomic_fetch_or(&control.pending_bits[slot / 64], (uint64_t)1 << (slot % 64));
    }
    atomic_store(&control.header->pending, 1);
    rm_tensor_pool_stats o = RM_STRUCT_INIT(rm_tensor_pool_stats);
    rm_tensor_pool_stats i = RM_STRUCT_INIT(rm_tensor_pool_stats);
    FUZZ_CHECK(vt->tensor_pool_stats(owner, &o) == RM_OK &&
                   vt->tensor_pool_stats(importer, &i) == RM_OK,
               "tensor_pool_stats");
    struct stat info;
    return o.live_tensors == 0 && o.heap_tensors == 0 && i.pools_mapped == 1 &&
           i.heap_tensors == 0 && atomic_load(&control.header->pending) == 0 &&
           stat(data_path, &info) == 0 && stat(control_path, &info) == 0;
}

/* ---- seeds ------------------------------------------------------------ */

typedef struct seed_buffer {
    uint8_t bytes[40000];
    size_t used;
} seed_buffer;

static void put(seed_buffer *b, uint64_t value, int bytes)
{
    for (int i = 0; i < bytes; i++)
        b->bytes[b->used++] = (uint8_t)(value >> (8 * i));
}

/* The calls that follow a scribble in most seeds. */
static void put_calls(seed_buffer *b)
{
    static const uint8_t calls[] = {5, 1, 8, 0, 0, 8, 4, 3, 9, 1, 6, 0, 12, 0, 13, 0, 14, 0,
                                    7, 1, 2, 10, 11, 15, 0, 6, 0, 6, 0, 9, 0, 10, 12, 1};
    memcpy(b->bytes + b->used, calls, sizeof calls);
    b->used += sizeof calls;
}

static void write_seed(const char *dir, const char *name, seed_buffer *b)
{
    fuzz_write_seed(dir, name, b->bytes, b->used);
    b->used = 0;
}

static void write_seeds(const char *dir)
{
    seed_buffer b = {.used = 0};
    put_calls(&b);
    write_seed(dir, "calls-only", &b);

    static const struct {
        const char *name;
        size_t offset;
        uint64_t value;
    } fields[] = {
        {"magic", offsetof(rm_control_header, magic), 0},
        {"slot-count", offsetof(rm_control_header, magic) + 16, (uint64_t)0xffffffff << 32},
        {"pool-id", offsetof(rm_control_header, pool_id), 1},
        {"owner-pid", offsetof(rm_control_header, owner_pid), 1},
        {"start-time", offsetof(rm_control_header, owner_start_time), 12345},
        {"reservation", offsetof(rm_control_header, reservation_bytes), UINT64_MAX},
        {"retired", offsetof(rm_control_header, retired), 1},
        {"pending", offsetof(rm_control_header, pending), UINT64_MAX},
        {"holder-1-start", offsetof(rm_control_header, holders[1].start_time), 1},
        {"holder-2-pid", offsetof(rm_control_header, holders[2].pid), 1},
    };
    char name[64];
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        put(&b, 2, 1);
        put(&b, fields[i].offset / 8, 1);
        put(&b, 0, 1);
        put(&b, fields[i].value, 8);
        put_calls(&b);
        snprintf(name, sizeof name, "header-%s", fields[i].name);
        write_seed(dir, name, &b);
    }
    /* Every slot in use: its state without holders, a foreign holder, an
     * older generation; its binding changed. */
    static const struct {
        const char *name;
        uint8_t word, how;
        uint64_t value;
    } slot_changes[] = {
        {"no-holders", 0, 4, 0xffffffff}, {"foreign-holder", 0, 3, 1u << 9},
        {"generation", 0, 1, (uint64_t)1 << 32}, {"offset", 1, 0, 1 << 20},
        {"nbytes", 2, 0, UINT64_MAX}, {"dtype-ndim", 6, 0, UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof slot_changes / sizeof slot_changes[0]; i++) {
        for (uint8_t slot = 0; slot < 6; slot++) {
            put(&b, 1, 1);
            put(&b, slot, 1);
            put(&b, slot_changes[i].word, 1);
            put(&b, slot_changes[i].how, 1);
            put(&b, slot_changes[i].value, 8);
        }
        put_calls(&b);
        snprintf(name, sizeof name, "slots-%s", slot_changes[i].name);
        write_seed(dir, name, &b);
    }
    for (uint8_t slot = 0; slot < SLOTS; slot += 7) {
        put(&b, 3, 1);
        put(&b, slot, 1);
    }
    put_calls(&b);
    write_seed(dir, "pending-marks", &b);
    /* All 31 holder entries taken by live pids with wrong start times. */
    for (uint32_t i = 1; i <= RM_TENSOR_MAX_HOLDERS; i++) {
        put(&b, 2, 1);
        put(&b, offsetof(rm_control_header, holders[i]) / 8, 1);
        put(&b, 0, 1);
        put(&b, 1 | (uint64_t)0 << 32, 8);
    }
    put(&b, 2, 1);
    put(&b, offsetof(rm_control_header, retired) / 8, 1);
    put(&b, 0, 1);
    put(&b, 1, 8);
    put_calls(&b);
    write_seed(dir, "holders-full-retired", &b);

    /* The two owner defects this target found (README, "Fuzzing"), as
     * short as they get: every slot in use loses its holders and gets a
     * pending mark, so that the owner's next call frees what it still
     * held. Then (a) the slots look held again and the owner imports its
     * own descriptors: handles whose data was NULL; (b) the owner
     * allocates the same sizes again and got the memory its old handles
     * point at. */
    for (int variant = 0; variant < 2; variant++) {
        for (uint8_t slot = 0; slot < 8; slot++) {
            put(&b, 1, 1);
            put(&b, slot, 1);
            put(&b, 0, 1);
            put(&b, 4, 1);
            put(&b, 0xffffffff, 8);
            put(&b, 3, 1);
            put(&b, slot, 1);
        }
        put(&b, 12, 1);
        put(&b, 0, 1);
        for (uint8_t i = 0; i < 8; i++) {
            if (variant == 0) {
                put(&b, 1, 1);
                put(&b, i, 1);
                put(&b, 0, 1);
                put(&b, 3, 1);
                put(&b, 1u << 20, 8);
            }
        }
        for (uint8_t i = 0; i < 4; i++) {
            put(&b, variant == 0 ? 7 : 5, 1);
            put(&b, i, 1);
            if (variant == 0)
                put(&b, 0, 1);
        }
        for (uint8_t i = 0; i < 8; i++) {
            put(&b, 14, 1);
            put(&b, i, 1);
        }
        write_seed(dir, variant == 0 ? "regress-own-import-without-memory"
                                     : "regress-allocation-overlaps-held-tensor",
                   &b);
    }

    /* Images of real control segments over this one: the pool of the
     * process that wrote the seeds (another pool, another owner) as its
     * inputs begin, and zeros. */
    size_t image = RM_CONTROL_HEADER_BYTES + 64 + 8 * sizeof(rm_control_slot);
    put(&b, 4, 1);
    put(&b, 0, 2);
    put(&b, image, 2);
    memcpy(b.bytes + b.used, control.header, image);
    b.used += image;
    put_calls(&b);
    write_seed(dir, "image-foreign-pool", &b);
    put(&b, 4, 1);
    put(&b, 0, 2);
    put(&b, image, 2);
    memset(b.bytes + b.used, 0, image);
    b.used += image;
    put_calls(&b);
    write_seed(dir, "image-zeros", &b);
}

/* ---- libFuzzer -------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vt = fuzz_vtable();
    fuzz_namespace("ctl", ns, sizeof ns);
    build_contexts();
    if (fuzz_seed_directory() != NULL) {
        prepare();
        write_seeds(fuzz_seed_directory());
        FUZZ_CHECK(settle(), "seeds: the pool did not settle");
        destroy_contexts();
        exit(0);
    }
    atexit(destroy_contexts);
    atexit(print_observations);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inputs++;
    prepare();
    fuzz_script s = {.at = data, .left = size};
    run_script(&s);
    if (!settle())
        rebuild();
    return 0;
}
