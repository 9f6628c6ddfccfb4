/* A pool's control segment; see shm_control.h for the protocol. */
#include "shm_control.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "process_identity.h"

/* The pending bitmap, rounded up so that the slots after it start on a
 * cache line. */
static size_t bitmap_bytes(uint32_t slot_count)
{
    size_t bytes = ((size_t)slot_count + 63) / 64 * sizeof(uint64_t);
    return (bytes + RM_CONTROL_LINE - 1) / RM_CONTROL_LINE * RM_CONTROL_LINE;
}

size_t rm_control_size(uint32_t slot_count)
{
    size_t bytes = RM_CONTROL_HEADER_BYTES + bitmap_bytes(slot_count) +
                   (size_t)slot_count * sizeof(rm_control_slot);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (bytes + page - 1) / page * page;
}

static void lay_out(rm_control *control, void *base, size_t bytes, uint32_t slot_count)
{
    unsigned char *at = base;
    control->header = base;
    control->pending_bits = (_Atomic uint64_t *)(void *)(at + RM_CONTROL_HEADER_BYTES);
    control->slots = (rm_control_slot *)(void *)(at + RM_CONTROL_HEADER_BYTES +
                                                 bitmap_bytes(slot_count));
    control->mapped_bytes = bytes;
    control->slot_count = slot_count;
}

int32_t rm_control_create(const char *name, uint64_t pool_id, uint32_t slot_count,
                          uint64_t pool_bytes, uint64_t reservation_bytes,
                          const void *error_owner, rm_control *out)
{
    memset(out, 0, sizeof *out);
    size_t bytes = rm_control_size(slot_count);
    /* Committed up front, like the pool's pages: a full /dev/shm must not
     * SIGBUS an importer that touches a slot later. */
    int fd = -1;
    int32_t rc = rm_segment_create(name, bytes, RM_SEGMENT_COMMITTED,
                                   rm_segment_kind_description(RM_SEGMENT_POOL_CONTROL),
                                   error_owner, &fd, NULL);
    if (rc != RM_OK)
        return rc;
    void *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (base == MAP_FAILED) {
        (void)rm_segment_unlink(name, NULL);
        return rm_error_set(error_owner, RM_E_SYSTEM, "mmap() of %s (%zu bytes) failed: %s",
                            name, bytes, strerror(err));
    }
    lay_out(out, base, bytes, slot_count);
    rm_control_header *header = out->header;
    header->pool_id = pool_id;
    header->owner_pid = (uint32_t)getpid();
    header->slot_count = slot_count;
    header->owner_start_time = rm_process_self_start_time();
    header->pool_bytes = pool_bytes;
    header->reservation_bytes = reservation_bytes;
    header->layout_version = RM_CONTROL_LAYOUT_VERSION;
    /* The magic last: a reader that sees it sees the rest. */
    atomic_thread_fence(memory_order_release);
    header->magic = RM_CONTROL_MAGIC;
    return RM_OK;
}

int32_t rm_pool_segment_error_code(int err)
{
    if (err == ENOENT)
        return RM_E_STALE_DESCRIPTOR;
    if (err == EPERM || err == EINVAL || err == ELOOP || err == EACCES)
        return RM_E_INVALID_DESCRIPTOR;
    return RM_E_SYSTEM;
}

int32_t rm_control_open(const char *name, const void *error_owner, rm_control *out)
{
    memset(out, 0, sizeof *out);
    uint64_t size = 0;
    int fd = rm_pool_segment_open(name, true, &size);
    if (fd < 0) {
        int err = errno;
        int32_t code = rm_pool_segment_error_code(err);
        if (code == RM_E_STALE_DESCRIPTOR)
            return rm_error_set(error_owner, code,
                                "control segment %s no longer exists (its pool was "
                                "destroyed or reclaimed)",
                                name);
        if (code == RM_E_INVALID_DESCRIPTOR)
            return rm_error_set(error_owner, code,
                                "control segment %s is not a 0600 regular file of this "
                                "user (%s)",
                                name, strerror(err));
        return rm_error_set(error_owner, RM_E_SYSTEM, "shm_open() of %s failed: %s",
                            name, strerror(err));
    }
    int32_t rc = RM_OK;
    void *base = MAP_FAILED;
    if (size < RM_CONTROL_HEADER_BYTES || size > rm_control_size(RM_SHM_SLOTS_LIMIT)) {
        rc = rm_error_set(error_owner, RM_E_INVALID_DESCRIPTOR,
                          "control segment %s has an impossible size (%llu bytes)", name,
                          (unsigned long long)size);
    } else {
        base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            rc = rm_error_set(error_owner, errno == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                              "mmap() of %s failed: %s", name, strerror(errno));
    }
    close(fd);
    if (rc != RM_OK)
        return rc;
    const rm_control_header *header = base;
    uint32_t magic = header->magic;
    atomic_thread_fence(memory_order_acquire);
    if (magic != RM_CONTROL_MAGIC || header->layout_version != RM_CONTROL_LAYOUT_VERSION ||
        header->slot_count == 0 || header->slot_count > RM_SHM_SLOTS_LIMIT ||
        rm_control_size(header->slot_count) != size) {
        munmap(base, (size_t)size);
        return rm_error_set(error_owner, RM_E_INVALID_DESCRIPTOR,
                            "control segment %s has no valid header (magic, layout "
                            "version or size)",
                            name);
    }
    lay_out(out, base, (size_t)size, header->slot_count);
    return RM_OK;
}

void rm_control_close(rm_control *control)
{
    if (control->header != NULL)
        munmap(control->header, control->mapped_bytes);
    memset(control, 0, sizeof *control);
}

uint32_t rm_control_claim_holder(rm_control *control)
{
    uint32_t self = (uint32_t)getpid();
    for (uint32_t index = 1; index <= RM_TENSOR_MAX_HOLDERS; index++) {
        rm_control_holder *holder = &control->header->holders[index];
        uint32_t expected = 0;
        if (atomic_load_explicit(&holder->pid, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&holder->pid, &expected, self)) {
            atomic_store_explicit(&holder->start_time, rm_process_self_start_time(),
                                  memory_order_release);
            return index;
        }
    }
    return 0;
}

void rm_control_release_holder(rm_control *control, uint32_t index)
{
    rm_control_holder *holder = &control->header->holders[index];
    atomic_store_explicit(&holder->start_time, 0, memory_order_relaxed);
    atomic_store_explicit(&holder->pid, 0, memory_order_release);
}

bool rm_control_hold(rm_control *control, uint32_t slot, uint32_t generation,
                     uint32_t bit)
{
    _Atomic uint64_t *state = &control->slots[slot].state;
    uint64_t seen = atomic_load_explicit(state, memory_order_acquire);
    for (;;) {
        if (rm_control_generation(seen) != generation || rm_control_mask(seen) == 0)
            return false;
        uint64_t wanted = seen | bit;
        if (atomic_compare_exchange_weak_explicit(state, &seen, wanted,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return true;
    }
}

bool rm_control_drop(rm_control *control, uint32_t slot, uint32_t bit, bool mark_pending)
{
    uint64_t before = atomic_fetch_and_explicit(&control->slots[slot].state,
                                                ~(uint64_t)bit, memory_order_acq_rel);
    if ((rm_control_mask(before) & bit) == 0 || rm_control_mask(before) != bit)
        return false;
    if (mark_pending) {
        atomic_fetch_or_explicit(&control->pending_bits[slot / 64],
                                 (uint64_t)1 << (slot % 64), memory_order_release);
        atomic_fetch_add_explicit(&control->header->pending, 1, memory_order_release);
    }
    return true;
}

/* A 64-bit digest of `count` values (shape or strides): not a secret,
 * just enough that a changed dimension is never mistaken for the same
 * tensor by accident (every input bit reaches every output bit). */
static uint64_t digest(const int64_t *values, uint32_t count)
{
    uint64_t hash = UINT64_C(0x9e3779b97f4a7c15) ^ count;
    for (uint32_t i = 0; i < count && i < RM_TENSOR_MAX_DIMS; i++) {
        hash = (hash ^ (uint64_t)values[i]) * UINT64_C(0xff51afd7ed558ccd);
        hash ^= hash >> 32;
    }
    hash *= UINT64_C(0xc4ceb9fe1a85ec53);
    return hash ^ (hash >> 33);
}

static uint32_t packed_dtype(rm_dtype dtype)
{
    return (uint32_t)dtype.code | (uint32_t)dtype.bits << 8 | (uint32_t)dtype.lanes << 16;
}

void rm_control_publish(rm_control *control, uint32_t slot, uint32_t generation,
                        const rm_descriptor *d)
{
    rm_control_slot *entry = &control->slots[slot];
    atomic_store_explicit(&entry->offset, d->offset, memory_order_relaxed);
    atomic_store_explicit(&entry->nbytes, d->nbytes, memory_order_relaxed);
    atomic_store_explicit(&entry->session, d->session, memory_order_relaxed);
    atomic_store_explicit(&entry->shape_digest, digest(d->shape, d->ndim),
                          memory_order_relaxed);
    atomic_store_explicit(&entry->strides_digest, digest(d->strides, d->ndim),
                          memory_order_relaxed);
    atomic_store_explicit(&entry->dtype, packed_dtype(d->dtype), memory_order_relaxed);
    atomic_store_explicit(&entry->ndim, d->ndim, memory_order_relaxed);
    atomic_store_explicit(&entry->state,
                          (uint64_t)generation << 32 | RM_CONTROL_OWNER_BIT,
                          memory_order_release);
}

const char *rm_control_binding_mismatch(const rm_control *control, uint32_t slot,
                                        const rm_descriptor *d)
{
    const rm_control_slot *entry = &control->slots[slot];
    if (atomic_load_explicit(&entry->offset, memory_order_relaxed) != d->offset)
        return "offset";
    if (atomic_load_explicit(&entry->nbytes, memory_order_relaxed) != d->nbytes)
        return "nbytes";
    if (atomic_load_explicit(&entry->session, memory_order_relaxed) != d->session)
        return "session";
    if (atomic_load_explicit(&entry->dtype, memory_order_relaxed) != packed_dtype(d->dtype))
        return "dtype";
    if (atomic_load_explicit(&entry->ndim, memory_order_relaxed) != d->ndim)
        return "ndim";
    if (atomic_load_explicit(&entry->shape_digest, memory_order_relaxed) !=
        digest(d->shape, d->ndim))
        return "shape";
    if (atomic_load_explicit(&entry->strides_digest, memory_order_relaxed) !=
        digest(d->strides, d->ndim))
        return "strides";
    return NULL;
}

void rm_control_retire(rm_control *control)
{
    atomic_store_explicit(&control->header->retired, 1, memory_order_release);
}

bool rm_control_retire_by_name(const char *control_name)
{
    uint64_t size = 0;
    int fd = rm_pool_segment_open(control_name, true, &size);
    if (fd < 0)
        return false;
    bool done = false;
    if (size >= RM_CONTROL_HEADER_BYTES) {
        void *page = mmap(NULL, RM_CONTROL_HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED,
                          fd, 0);
        if (page != MAP_FAILED) {
            rm_control_header *header = page;
            if (header->magic == RM_CONTROL_MAGIC &&
                header->layout_version == RM_CONTROL_LAYOUT_VERSION) {
                atomic_store_explicit(&header->retired, 1, memory_order_release);
                done = true;
            }
            munmap(page, RM_CONTROL_HEADER_BYTES);
        }
    }
    close(fd);
    return done;
}

void rm_control_take_pending(rm_control *control, void (*visit)(void *user, uint32_t slot),
                             void *user)
{
    if (atomic_load_explicit(&control->header->pending, memory_order_acquire) == 0)
        return;
    atomic_store_explicit(&control->header->pending, 0, memory_order_relaxed);
    size_t words = ((size_t)control->slot_count + 63) / 64;
    for (size_t word = 0; word < words; word++) {
        if (atomic_load_explicit(&control->pending_bits[word], memory_order_relaxed) == 0)
            continue;
        uint64_t bits = atomic_exchange_explicit(&control->pending_bits[word], 0,
                                                 memory_order_acquire);
        while (bits != 0) {
            uint32_t bit = (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            visit(user, (uint32_t)(word * 64 + bit));
        }
    }
}
