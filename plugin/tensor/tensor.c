/* Tensors of one context: handles, session quotas, descriptors and DLPack,
 * over the memory backends of mem_backend.h (the shared-memory pool, tried
 * first; the heap, its fallback and the home of inline imports).
 *
 * A handle holds one block of one backend and calls that backend through
 * its table: one indirect call per operation, where a switch over the
 * kinds of memory used to be. A handle itself is reference-counted only so
 * that a DLPack export can outlive the host's release of it.
 *
 * One mutex per context guards everything here and in the backends.
 * Allocation, quota checks and slot bookkeeping under one lock make quotas
 * exact under concurrency at the cost of serialising a context's
 * allocations (jemalloc's arena lock serialises them anyway).
 */
#include "tensor.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "descriptor.h"
#include "error.h"
#include "mem_backend.h"
#include "tensor_layout.h"

#define SPARE_HANDLES_MAX 1024
#define MAX_ALIGNMENT ((uint64_t)2 << 20)
#define KNOWN_ALLOC_FLAGS \
    (RM_TENSOR_ALLOC_SHARED_ONLY | RM_TENSOR_ALLOC_ZERO | RM_TENSOR_ALLOC_STRIDED)
#define KNOWN_IMPORT_FLAGS RM_TENSOR_IMPORT_WRITABLE

struct rm_tensor {
    rm_tensors *tensors;
    rm_tensor *prev, *next;    /* the context's live handles */
    _Atomic uint32_t refs;     /* the host's handle + DLPack exports */
    rm_mem_backend *backend;   /* whose memory `block` is */
    rm_mem_block block;        /* data, flags, descriptor */
};

typedef struct session_use {
    uint64_t session;
    uint64_t bytes;
} session_use;

struct rm_tensors {
    pthread_mutex_t lock;
    rm_mem_env env;            /* what every backend is lent */
    uint64_t session_quota;
    session_use *sessions;
    size_t session_count, session_capacity;

    /* One backend of each registered kind, in registration order. */
    rm_mem_backend *backends[RM_MEM_BACKENDS_MAX];
    uint32_t backend_count;
    rm_mem_backend *collecting[RM_MEM_BACKENDS_MAX]; /* those with deferred work */
    uint32_t collecting_count;
    rm_mem_backend *allocate_first;
    rm_mem_backend *allocate_fallback; /* NULL: none */
    rm_mem_backend *allocate_device;   /* NULL: cuda-ipc not built or not enabled */
    bool device_feature_enabled;
    bool fallback_logged;
    uint32_t deferred_count; /* lines in `deferred`, read at every unlock */

    rm_tensor handles;         /* sentinel of the live-handle list */
    rm_tensor *spare_handles;  /* released handles kept for reuse (next) */
    uint32_t spare_count;
    rm_tensor_pool_stats stats;
    /* By descriptor kind (NULL: no backend imports it); last, so that its
     * 2 KiB keep no hot field from its neighbours' cache lines. */
    rm_mem_backend *by_kind[UINT8_MAX + 1];
    /* Lines for the host's log written under the lock, passed on by
     * unlock_and_log() once it is dropped (rm_tensors_log_later). */
    struct {
        int32_t level;
        char text[RM_DEFERRED_LOG_TEXT];
    } deferred[RM_DEFERRED_LOGS];
    uint64_t deferred_dropped; /* lines that found `deferred` full */
    /* Host callbacks due (tensor_wrap_device's `released`), made after the
     * unlock like the log lines (rm_tensors_call_later). */
    struct later_call {
        rm_device_released_fn fn;
        void *user;
        void *pointer;
    } *later;
    uint32_t later_count, later_capacity;
};

/* ------------------------------------------------------------------------ */
/* The lock, and the host's log                                             */
/* ------------------------------------------------------------------------ */

/* The host's log callback never runs under the context's lock: a slow sink
 * (a file, a Python logger taking the GIL) would stall every thread of the
 * context, and a sink that calls back into this context would deadlock.
 * Lines written under the lock wait in `deferred` and go out here, after
 * the unlock. The hot paths pay one read of deferred_count, on a cache
 * line they use anyway. */
void rm_tensors_log_later(rm_tensors *t, int32_t level, const char *format, ...)
{
    if (level > t->env.host->log_level)
        return;
    if (t->deferred_count == RM_DEFERRED_LOGS) {
        t->deferred_dropped++;
        return;
    }
    va_list args;
    va_start(args, format);
    vsnprintf(t->deferred[t->deferred_count].text, RM_DEFERRED_LOG_TEXT, format, args);
    va_end(args);
    t->deferred[t->deferred_count].level = level;
    t->deferred_count++;
}

void rm_tensors_call_later(rm_tensors *t, rm_device_released_fn fn, void *user, void *pointer)
{
    if (t->later_count == t->later_capacity) {
        uint32_t grown = t->later_capacity == 0 ? 16 : 2 * t->later_capacity;
        struct later_call *bigger = realloc(t->later, grown * sizeof *bigger);
        if (bigger == NULL) {
            /* Last resort, and logged: a callback that runs under the lock
             * must not call back into this context. */
            rm_tensors_log_later(t, RM_LOG_ERROR,
                                 "no memory to defer a release callback; it ran under the "
                                 "context's lock");
            fn(user, pointer);
            return;
        }
        t->later = bigger;
        t->later_capacity = grown;
    }
    t->later[t->later_count++] = (struct later_call){.fn = fn, .user = user, .pointer = pointer};
}

/* The lines, copied out under the lock, go to the host after it; so do
 * the callbacks that are due. */
static __attribute__((noinline)) void unlock_and_pass_on(rm_tensors *t)
{
    struct later_call calls[16];
    uint32_t call_count = t->later_count < 16 ? t->later_count : 16;
    if (call_count > 0) { /* t->later is NULL until the first callback */
        memcpy(calls, t->later, call_count * sizeof calls[0]);
        memmove(t->later, t->later + call_count,
                (t->later_count - call_count) * sizeof calls[0]);
        t->later_count -= call_count;
    }
    uint32_t count = t->deferred_count;
    uint64_t dropped = t->deferred_dropped;
    int32_t levels[RM_DEFERRED_LOGS];
    char texts[RM_DEFERRED_LOGS][RM_DEFERRED_LOG_TEXT];
    for (uint32_t i = 0; i < count; i++) {
        levels[i] = t->deferred[i].level;
        memcpy(texts[i], t->deferred[i].text, RM_DEFERRED_LOG_TEXT);
    }
    t->deferred_count = 0;
    t->deferred_dropped = 0;
    bool more = t->later_count != 0;
    pthread_mutex_unlock(&t->lock);
    for (uint32_t i = 0; i < call_count; i++)
        calls[i].fn(calls[i].user, calls[i].pointer);
    for (uint32_t i = 0; i < count; i++)
        rm_host_log(t->env.host, levels[i], "%s", texts[i]);
    if (dropped > 0)
        rm_host_log(t->env.host, RM_LOG_WARN,
                    "%" PRIu64 " more log lines of this context were dropped (more than %d "
                    "in one call)",
                    dropped, RM_DEFERRED_LOGS);
    if (more) {
        pthread_mutex_lock(&t->lock);
        unlock_and_pass_on(t);
    }
}

/* Lines are dropped only when `deferred` is full, so a count of 0 says
 * there is nothing to pass on. */
static inline void unlock_and_log(rm_tensors *t)
{
    if (__builtin_expect((t->deferred_count | t->later_count) != 0, 0))
        unlock_and_pass_on(t);
    else
        pthread_mutex_unlock(&t->lock);
}

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

static session_use *find_session(rm_tensors *t, uint64_t session)
{
    for (size_t i = 0; i < t->session_count; i++)
        if (t->sessions[i].session == session)
            return &t->sessions[i];
    return NULL;
}

static uint64_t session_bytes(rm_tensors *t, uint64_t session)
{
    session_use *use = find_session(t, session);
    return use != NULL ? use->bytes : 0;
}

/* Checks shm.session_quota for `bytes` more. */
static int32_t check_session_quota(rm_tensors *t, uint64_t session, uint64_t bytes)
{
    if (t->session_quota == 0)
        return RM_OK;
    uint64_t used = session_bytes(t, session);
    if (bytes > t->session_quota - used)
        return rm_error_set(t->env.error_owner, RM_E_QUOTA_EXCEEDED,
                            "shm.session_quota of %" PRIu64 " bytes exceeded for session "
                            "%" PRIu64 ": %" PRIu64 " bytes in use, %" PRIu64 " asked for",
                            t->session_quota, session, used, bytes);
    return RM_OK;
}

/* Backends charge when they make memory live and uncharge when they free
 * it, which for shared memory may be long after the last local release:
 * only the backend knows when that is. */
int32_t rm_tensors_charge(rm_tensors *t, uint64_t session, uint64_t bytes)
{
    if (bytes == 0)
        return RM_OK;
    session_use *use = find_session(t, session);
    if (use == NULL) {
        if (t->session_count == t->session_capacity) {
            size_t grown = t->session_capacity == 0 ? 8 : 2 * t->session_capacity;
            session_use *bigger = realloc(t->sessions, grown * sizeof *bigger);
            if (bigger == NULL)
                return rm_error_set(t->env.error_owner, RM_E_NO_MEMORY,
                                    "no memory to account session %" PRIu64, session);
            t->sessions = bigger;
            t->session_capacity = grown;
        }
        use = &t->sessions[t->session_count++];
        *use = (session_use){.session = session, .bytes = 0};
    }
    use->bytes += bytes;
    return RM_OK;
}

void rm_tensors_uncharge(rm_tensors *t, uint64_t session, uint64_t bytes)
{
    if (bytes == 0)
        return;
    session_use *use = find_session(t, session);
    if (use == NULL)
        return;
    use->bytes -= bytes < use->bytes ? bytes : use->bytes;
    if (use->bytes == 0)
        *use = t->sessions[--t->session_count];
}

/* ------------------------------------------------------------------------ */
/* Backends                                                                 */
/* ------------------------------------------------------------------------ */

/* One backend of each registered kind (no lock: nobody else sees the
 * context yet). On failure the caller destroys those already made. */
static int32_t create_backends(rm_tensors *t, const rm_config *config)
{
    t->device_feature_enabled = (config->features & RM_FEATURE_CUDA_IPC) != 0;
    for (uint32_t i = 0; i < rm_mem_registered_count; i++) {
        const rm_mem_registration *entry = &rm_mem_registered[i];
        /* A device backend exists only where its feature is enabled, so
         * that nothing of it (not even a reap of /dev/shm) runs otherwise. */
        if (entry->allocation == RM_MEM_ALLOCATE_DEVICE && !t->device_feature_enabled)
            continue;
        rm_mem_backend *backend = NULL;
        int32_t rc = entry->ops->create(&t->env, config, &backend);
        if (rc != RM_OK)
            return rc;
        t->backends[t->backend_count++] = backend;
        if (entry->ops->descriptor_kind != 0)
            t->by_kind[entry->ops->descriptor_kind] = backend;
        if (entry->ops->collect != NULL)
            t->collecting[t->collecting_count++] = backend;
        if (entry->allocation == RM_MEM_ALLOCATE_FIRST)
            t->allocate_first = backend;
        else if (entry->allocation == RM_MEM_ALLOCATE_FALLBACK)
            t->allocate_fallback = backend;
        else if (entry->allocation == RM_MEM_ALLOCATE_DEVICE)
            t->allocate_device = backend;
    }
    return RM_OK;
}

static void destroy_backends(rm_tensors *t, bool in_creator)
{
    for (uint32_t i = 0; i < t->backend_count; i++)
        t->backends[i]->ops->destroy(t->backends[i], in_creator);
    t->backend_count = 0;
}

/* Lets backends do the work other processes left them (frees of tensors
 * those processes released), before quotas or figures are read (lock
 * held). One load per backend when there is nothing to do, which is
 * nearly always: this runs on every allocate and release, inlined (as
 * new_handle and drop_handle are) so that the backend's indirect call is
 * the only call these paths gained. */
static inline void collect(rm_tensors *t)
{
    for (uint32_t i = 0; i < t->collecting_count; i++) {
        rm_mem_backend *backend = t->collecting[i];
        if (atomic_load_explicit(backend->deferred, memory_order_acquire) != 0)
            backend->ops->collect(backend);
    }
}

/* A decoded descriptor's kind byte indexes the table: this is asked on
 * every import. */
static rm_mem_backend *backend_for_kind(const rm_tensors *t, uint8_t kind)
{
    return t->by_kind[kind];
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                  */
/* ------------------------------------------------------------------------ */

/* Handles come from a per-context list of released ones (lock held):
 * with a second thread in the process, glibc's malloc and free take its
 * arena lock, and calloc + free of a handle measured ~40 ns of a ~100 ns
 * allocate + release pair. The list keeps at most SPARE_HANDLES_MAX; a
 * context that once held more gives the rest back to libc. */
static inline rm_tensor *new_handle(rm_tensors *t, rm_mem_backend *backend)
{
    rm_tensor *tensor = t->spare_handles;
    if (tensor != NULL) {
        t->spare_handles = tensor->next;
        t->spare_count--;
    } else {
        tensor = malloc(sizeof *tensor);
        if (tensor == NULL) {
            rm_error_set(t->env.error_owner, RM_E_NO_MEMORY, "no memory for a tensor handle");
            return NULL;
        }
    }
    /* Every field but `block.where`, which the caller copies in whole once
     * the backend filled it. */
    tensor->tensors = t;
    tensor->prev = tensor->next = NULL;
    atomic_init(&tensor->refs, 1);
    tensor->backend = backend;
    tensor->block.data = NULL;
    tensor->block.flags = 0;
    tensor->block.home = NULL;
    tensor->block.charged = 0;
    tensor->block.device = RM_MEM_HOST_DEVICE;
    return tensor;
}

static void recycle_handle(rm_tensors *t, rm_tensor *tensor)
{
    if (t->spare_count >= SPARE_HANDLES_MAX) {
        free(tensor);
        return;
    }
    tensor->next = t->spare_handles;
    t->spare_handles = tensor;
    t->spare_count++;
}

static void free_spare_handles(rm_tensors *t)
{
    while (t->spare_handles != NULL) {
        rm_tensor *tensor = t->spare_handles;
        t->spare_handles = tensor->next;
        free(tensor);
    }
    t->spare_count = 0;
}

static void link_handle(rm_tensors *t, rm_tensor *tensor)
{
    tensor->next = t->handles.next;
    tensor->prev = &t->handles;
    t->handles.next->prev = tensor;
    t->handles.next = tensor;
}

static void unlink_handle(rm_tensor *tensor)
{
    tensor->prev->next = tensor->next;
    tensor->next->prev = tensor->prev;
}

/* Ends what a handle holds (lock held) and recycles the handle. */
static inline void drop_handle(rm_tensors *t, rm_tensor *tensor)
{
    unlink_handle(tensor);
    tensor->backend->ops->release(tensor->backend, &tensor->block);
    recycle_handle(t, tensor);
}

/* Every handle the host still holds, at destruction; their number. In a
 * child of fork() the shared state is the parent's: touch none of it, free
 * only this process's copies. */
static size_t release_all_handles(rm_tensors *t, bool in_creator)
{
    size_t leaked = 0;
    while (t->handles.next != &t->handles) {
        rm_tensor *tensor = t->handles.next;
        leaked++;
        if (in_creator) {
            drop_handle(t, tensor);
            continue;
        }
        unlink_handle(tensor);
        if (tensor->backend->ops->drop_in_child != NULL)
            tensor->backend->ops->drop_in_child(tensor->backend, &tensor->block);
        free(tensor);
    }
    return leaked;
}

/* ------------------------------------------------------------------------ */
/* Creation and destruction                                                 */
/* ------------------------------------------------------------------------ */

int32_t rm_tensors_create(const rm_config *config, const rm_host *host,
                          const void *error_owner, rm_tensors **out)
{
    rm_tensors *t = calloc(1, sizeof *t);
    if (t == NULL)
        return rm_error_set(error_owner, RM_E_NO_MEMORY, "no memory for tensor state");
    int err = pthread_mutex_init(&t->lock, NULL);
    if (err != 0) {
        free(t);
        return rm_error_set(error_owner, RM_E_SYSTEM, "pthread_mutex_init: %s",
                            strerror(err));
    }
    t->env = (rm_mem_env){.tensors = t,
                          .error_owner = error_owner,
                          .host = host,
                          .creator = getpid(),
                          .stats = &t->stats};
    t->session_quota = config->shm_session_quota;
    t->handles.next = t->handles.prev = &t->handles;
    int32_t rc = create_backends(t, config);
    if (rc != RM_OK) {
        destroy_backends(t, true);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return rc;
    }
    *out = t;
    return RM_OK;
}

void rm_tensors_destroy(rm_tensors *t)
{
    if (t == NULL)
        return;
    bool in_creator = getpid() == t->env.creator;
    size_t leaked = release_all_handles(t, in_creator);
    free_spare_handles(t);
    if (leaked > 0 && in_creator)
        rm_host_log(t->env.host, RM_LOG_WARN,
                    "context destroyed with %zu tensor handles still held; they are "
                    "released now and must not be used",
                    leaked);
    destroy_backends(t, in_creator);
    /* Callbacks that the destruction made due run now, outside any lock. */
    for (uint32_t i = 0; in_creator && i < t->later_count; i++)
        t->later[i].fn(t->later[i].user, t->later[i].pointer);
    free(t->later);
    free(t->sessions);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Allocation, one function per step                                       */
/* ------------------------------------------------------------------------ */

static int32_t check_spec(rm_tensors *t, const rm_tensor_spec *spec, rm_descriptor *where,
                          uint64_t *alignment)
{
    for (size_t i = 0; i < sizeof spec->reserved / sizeof spec->reserved[0]; i++)
        if (spec->reserved[i] != 0)
            return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                                "rm_tensor_spec.reserved[%zu] must be zero", i);
    if ((spec->flags & ~(uint64_t)KNOWN_ALLOC_FLAGS) != 0)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "unknown tensor allocation flags 0x%" PRIx64,
                            spec->flags & ~(uint64_t)KNOWN_ALLOC_FLAGS);
    uint64_t element = rm_dtype_size(spec->dtype);
    if (element == 0)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "dtype {code %u, bits %u, lanes %u} is not supported (int 0 and "
                            "uint 1: 8, 16, 32 or 64 bits; float 2: 16, 32 or 64; bfloat 4: "
                            "16; complex 5: 64 or 128; bool 6: 8; lanes >= 1, at most 1024 "
                            "bytes per element)",
                            spec->dtype.code, spec->dtype.bits, spec->dtype.lanes);
    if (spec->ndim > RM_TENSOR_MAX_DIMS)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "ndim %u exceeds RM_TENSOR_MAX_DIMS (%d)", spec->ndim,
                            RM_TENSOR_MAX_DIMS);
    uint64_t align = spec->alignment == 0 ? RM_TENSOR_MIN_ALIGNMENT : spec->alignment;
    if ((align & (align - 1)) != 0 || align > MAX_ALIGNMENT)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "alignment %" PRIu64 " is not a power of two up to 2 MiB",
                            spec->alignment);
    *alignment = align < RM_TENSOR_MIN_ALIGNMENT ? RM_TENSOR_MIN_ALIGNMENT : align;
    /* Field by field, and shape and strides only up to ndim (every reader
     * stops there: copy_dims): zeroing the whole descriptor compiles to
     * `rep stos`, measured at a quarter of rm_tensors_allocate. The
     * coordinates are the backend's to fill (the pool's slot, offset). */
    where->kind = 0;
    where->ndim = spec->ndim;
    where->dtype = spec->dtype;
    where->session = spec->session;
    where->slot = where->generation = where->owner_pid = 0;
    where->pool_id = where->owner_start_time = where->offset = 0;
    for (uint32_t i = 0; i < spec->ndim; i++) {
        if (spec->shape[i] < 0)
            return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                                "shape[%u] = %" PRId64 " is negative", i, spec->shape[i]);
        where->shape[i] = spec->shape[i];
    }
    if ((spec->flags & RM_TENSOR_ALLOC_STRIDED) != 0) {
        for (uint32_t i = 0; i < spec->ndim; i++)
            where->strides[i] = spec->strides[i];
    } else if (!rm_layout_contiguous_strides(spec->ndim, where->shape, where->strides)) {
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "the shape's element count overflows");
    }
    const char *why = NULL;
    if (!rm_layout_span(element, where->ndim, where->shape, where->strides, &where->nbytes,
                        &why))
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT, "tensor layout: %s", why);
    return RM_OK;
}

/* After the first backend failed with `rc` (lock held): no memory of its
 * kind (no /dev/shm, or it is full) gives a block of the fallback backend,
 * private heap memory, unless the host needs shareable memory; quotas and
 * slots are errors either way. */
static int32_t fall_back(rm_tensors *t, int32_t rc, rm_descriptor *where, uint64_t alignment,
                         uint64_t flags, rm_tensor *tensor)
{
    rm_mem_backend *fallback = t->allocate_fallback;
    bool shared_only = (flags & RM_TENSOR_ALLOC_SHARED_ONLY) != 0;
    bool no_space = rc == RM_E_NO_MEMORY || (rc == RM_E_SYSTEM && !tensor->backend->set_up);
    if (no_space && !shared_only && fallback != NULL) {
        t->stats.fallbacks++;
        if (!t->fallback_logged) {
            t->fallback_logged = true;
            rm_tensors_log_later(t, RM_LOG_WARN,
                        "shared memory unavailable (%s); tensors fall back to private "
                        "heap memory, which cannot be shared by descriptor",
                        rm_error_last(t->env.error_owner));
        }
        tensor->backend = fallback;
        return fallback->ops->allocate(fallback, where, alignment, &tensor->block);
    }
    if (rc == RM_E_SYSTEM && shared_only) {
        char reason[RM_ERROR_MESSAGE_MAX];
        snprintf(reason, sizeof reason, "%s", rm_error_last(t->env.error_owner));
        return rm_error_set(t->env.error_owner, RM_E_NO_MEMORY,
                            "no shared memory for a tensor of %" PRIu64 " bytes: %s",
                            where->nbytes, reason);
    }
    return rc;
}

/* The handle's block, from the first backend or its fallback (lock held). */
static int32_t allocate_block(rm_tensors *t, rm_descriptor *where, uint64_t alignment,
                              uint64_t flags, rm_tensor *tensor)
{
    rm_mem_backend *first = t->allocate_first;
    tensor->backend = first;
    int32_t rc = first->ops->allocate(first, where, alignment, &tensor->block);
    return rc == RM_OK ? RM_OK : fall_back(t, rc, where, alignment, flags, tensor);
}

/* The session's quota, a handle, its block (lock held). The quota is exact
 * because it is checked here and charged by the backend under the same
 * lock. A failure gives the handle back. */
static int32_t allocate_locked(rm_tensors *t, rm_descriptor *where, uint64_t alignment,
                               uint64_t flags, rm_tensor **out)
{
    int32_t rc = check_session_quota(t, where->session, where->nbytes);
    if (rc != RM_OK)
        return rc;
    rm_tensor *tensor = new_handle(t, NULL);
    if (tensor == NULL)
        return RM_E_NO_MEMORY;
    rc = allocate_block(t, where, alignment, flags, tensor);
    if (rc != RM_OK) {
        recycle_handle(t, tensor);
        return rc;
    }
    tensor->block.where = *where; /* after, not before: see rm_mem_block */
    link_handle(t, tensor);
    *out = tensor;
    return RM_OK;
}

/* The device a spec names (1.3): RM_MEM_HOST_DEVICE for "", "cpu" or a
 * host whose struct predates the field; N for "cuda:N" (0..1023, decimal,
 * as in model keys) or "cuda". */
static int32_t spec_device(rm_tensors *t, const rm_tensor_spec *spec, int32_t *ordinal)
{
    *ordinal = RM_MEM_HOST_DEVICE;
    if (spec->struct_size < offsetof(rm_tensor_spec, device) + sizeof spec->device)
        return RM_OK;
    const char *device = spec->device;
    size_t length = strnlen(device, sizeof spec->device);
    if (length == sizeof spec->device)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "rm_tensor_spec.device is not NUL-terminated");
    if (length == 0 || strcasecmp(device, "cpu") == 0)
        return RM_OK;
    if (strncasecmp(device, "cuda", 4) == 0) {
        const char *digits = device + 4;
        if (*digits == '\0') {
            *ordinal = 0;
            return RM_OK;
        }
        long value = 0;
        bool ok = *digits == ':' && digits[1] != '\0';
        for (const char *at = digits + 1; ok && *at != '\0'; at++) {
            ok = *at >= '0' && *at <= '9' && value <= 1023;
            value = value * 10 + (*at - '0');
        }
        if (ok && value <= 1023) {
            *ordinal = (int32_t)value;
            return RM_OK;
        }
    }
    return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                        "rm_tensor_spec.device '%s' is not \"cpu\", \"cuda\" or "
                        "\"cuda:N\" (N from 0 to 1023)",
                        device);
}

/* The device backend, or why there is none. */
static int32_t device_backend(rm_tensors *t, rm_mem_backend **out)
{
    *out = t->allocate_device;
    if (*out != NULL)
        return RM_OK;
    if (!RM_HAVE_CUDA_IPC)
        return rm_error_set(t->env.error_owner, RM_E_FEATURE_UNAVAILABLE,
                            "device tensors need feature 'cuda-ipc', which was not built "
                            "into this plugin (meson option -Dcuda-ipc)");
    return rm_error_set(t->env.error_owner, RM_E_FEATURE_DISABLED,
                        "device tensors need feature 'cuda-ipc', which is not enabled in "
                        "this context (config key 'features')");
}

/* A device tensor: the session's quota, a handle, a block of the device
 * backend (lock held). No fallback: host memory is not what was asked. */
static int32_t allocate_device_locked(rm_tensors *t, rm_mem_backend *backend,
                                      rm_descriptor *where, uint64_t alignment,
                                      int32_t ordinal, rm_tensor **out)
{
    int32_t rc = check_session_quota(t, where->session, where->nbytes);
    if (rc != RM_OK)
        return rc;
    rm_tensor *tensor = new_handle(t, backend);
    if (tensor == NULL)
        return RM_E_NO_MEMORY;
    tensor->block.device = ordinal;
    rc = backend->ops->allocate(backend, where, alignment, &tensor->block);
    if (rc != RM_OK) {
        recycle_handle(t, tensor);
        return rc;
    }
    tensor->block.where = *where;
    link_handle(t, tensor);
    *out = tensor;
    return RM_OK;
}

/* Zeroes a new block, outside the lock: the block is the caller's alone
 * until it exports it, and zeroing megabytes must not hold up other
 * threads. A failure gives the tensor back. */
static int32_t zero_block(rm_tensors *t, rm_tensor **out)
{
    rm_tensor *tensor = *out;
    const rm_mem_ops *ops = tensor->backend->ops;
    if (ops->zero == NULL) {
        memset(tensor->block.data, 0,
               tensor->block.where.nbytes ? (size_t)tensor->block.where.nbytes : 1);
        return RM_OK;
    }
    int32_t rc = ops->zero(tensor->backend, &tensor->block);
    if (rc != RM_OK) {
        char message[RM_ERROR_MESSAGE_MAX];
        snprintf(message, sizeof message, "%s", rm_error_last(t->env.error_owner));
        (void)rm_tensors_release(t, tensor);
        *out = NULL;
        rc = rm_error_set(t->env.error_owner, rc, "%s", message);
    }
    return rc;
}

int32_t rm_tensors_allocate(rm_tensors *t, const rm_tensor_spec *spec, rm_tensor **out)
{
    *out = NULL;
    rm_descriptor where;
    uint64_t alignment = RM_TENSOR_MIN_ALIGNMENT;
    int32_t ordinal = RM_MEM_HOST_DEVICE;
    int32_t rc = spec_device(t, spec, &ordinal);
    if (rc == RM_OK)
        rc = check_spec(t, spec, &where, &alignment);
    if (rc != RM_OK)
        return rc;
    if (ordinal != RM_MEM_HOST_DEVICE) {
        rm_mem_backend *backend = NULL;
        rc = device_backend(t, &backend);
        if (rc != RM_OK)
            return rc;
        if ((spec->flags & RM_TENSOR_ALLOC_SHARED_ONLY) != 0)
            return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                                "RM_TENSOR_ALLOC_SHARED_ONLY is for host tensors (device "
                                "tensors never fall back)");
        pthread_mutex_lock(&t->lock);
        t->stats.allocations++;
        collect(t);
        rc = allocate_device_locked(t, backend, &where, alignment, ordinal, out);
        unlock_and_log(t);
        if (rc == RM_OK && (spec->flags & RM_TENSOR_ALLOC_ZERO) != 0)
            rc = zero_block(t, out);
        return rc;
    }
    pthread_mutex_lock(&t->lock);
    t->stats.allocations++;
    collect(t);
    rc = allocate_locked(t, &where, alignment, spec->flags, out);
    unlock_and_log(t);
    if (rc == RM_OK && (spec->flags & RM_TENSOR_ALLOC_ZERO) != 0)
        rc = zero_block(t, out);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Info, export                                                             */
/* ------------------------------------------------------------------------ */

/* A tensor's shape and strides, zero beyond its ndim (a handle's
 * descriptor is defined only up to ndim; see check_spec). */
static void copy_dims(const rm_descriptor *where, int64_t *shape, int64_t *strides)
{
    for (uint32_t i = 0; i < RM_TENSOR_MAX_DIMS; i++) {
        bool used = i < where->ndim;
        shape[i] = used ? where->shape[i] : 0;
        strides[i] = used ? where->strides[i] : 0;
    }
}

int32_t rm_tensors_info(rm_tensors *t, const rm_tensor *tensor, rm_tensor_info *out)
{
    (void)t;
    const rm_mem_block *block = &tensor->block;
    rm_tensor_info info = {.struct_size = sizeof info, .abi_version = RM_ABI_VERSION_CURRENT};
    info.data = block->data;
    info.nbytes = block->where.nbytes;
    info.dtype = block->where.dtype;
    info.ndim = block->where.ndim;
    copy_dims(&block->where, info.shape, info.strides);
    info.session = block->where.session;
    info.flags = block->flags;
    info.pool_id = block->where.pool_id;
    info.owner_pid = block->where.owner_pid;
    info.device = tensor->backend->ops->describe_device(tensor->backend, block);
    if (tensor->backend->ops->device_uuid != NULL)
        tensor->backend->ops->device_uuid(tensor->backend, block, info.device_uuid);
    *out = info;
    return RM_OK;
}

/* The descriptor of a shareable block. */
static int32_t encode(const rm_tensor *tensor, uint8_t *out)
{
    const rm_mem_ops *ops = tensor->backend->ops;
    if (ops->export != NULL)
        return ops->export(tensor->backend, &tensor->block, out);
    rm_descriptor_encode(&tensor->block.where, out);
    return RM_OK;
}

static int32_t check_shareable(rm_tensors *t, const rm_tensor *tensor)
{
    if ((tensor->block.flags & RM_TENSOR_SHAREABLE) == 0)
        return rm_error_set(t->env.error_owner, RM_E_NOT_SHAREABLE,
                            "this tensor lives in private memory (no shared memory when it "
                            "was made, or an inline import): use tensor_export_inline");
    return RM_OK;
}

int32_t rm_tensors_export(rm_tensors *t, const rm_tensor *tensor, void *out, uint64_t out_size)
{
    int32_t rc = check_shareable(t, tensor);
    if (rc != RM_OK)
        return rc;
    if (out_size < RM_TENSOR_DESCRIPTOR_SIZE)
        return rm_error_set(t->env.error_owner, RM_E_BUFFER_TOO_SMALL,
                            "a descriptor needs %d bytes, the buffer has %" PRIu64,
                            RM_TENSOR_DESCRIPTOR_SIZE, out_size);
    return encode(tensor, out);
}

int32_t rm_tensors_export_text(rm_tensors *t, const rm_tensor *tensor, char *out,
                               uint64_t out_size)
{
    int32_t rc = check_shareable(t, tensor);
    if (rc != RM_OK)
        return rc;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    rc = encode(tensor, bytes);
    if (rc != RM_OK)
        return rc;
    size_t length = rm_descriptor_to_text(bytes, text);
    if (out_size < length + 1)
        return rm_error_set(t->env.error_owner, RM_E_BUFFER_TOO_SMALL,
                            "a text descriptor needs %zu bytes, the buffer has %" PRIu64,
                            length + 1, out_size);
    memcpy(out, text, length + 1);
    return RM_OK;
}

int32_t rm_tensors_export_inline(rm_tensors *t, const rm_tensor *tensor, void *out,
                                 uint64_t out_size, uint64_t *out_needed)
{
    const rm_descriptor *where = &tensor->block.where;
    if (tensor->backend->ops->zero != NULL)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "a device tensor has no inline form: copy it to a host tensor "
                            "first");
    uint64_t needed = RM_TENSOR_DESCRIPTOR_SIZE + where->nbytes;
    if (out_needed != NULL)
        *out_needed = needed;
    if (out == NULL || out_size < needed)
        return rm_error_set(t->env.error_owner, RM_E_BUFFER_TOO_SMALL,
                            "an inline descriptor of this tensor needs %" PRIu64
                            " bytes, the buffer has %" PRIu64,
                            needed, out == NULL ? (uint64_t)0 : out_size);
    rm_descriptor inline_form = {
        .kind = RM_DESCRIPTOR_KIND_INLINE,
        .ndim = where->ndim,
        .dtype = where->dtype,
        .offset = RM_TENSOR_DESCRIPTOR_SIZE,
        .nbytes = where->nbytes,
        .session = where->session,
    };
    copy_dims(where, inline_form.shape, inline_form.strides);
    rm_descriptor_encode(&inline_form, out);
    memcpy((unsigned char *)out + RM_TENSOR_DESCRIPTOR_SIZE, tensor->block.data,
           (size_t)where->nbytes);
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Import, one function per step                                           */
/* ------------------------------------------------------------------------ */

/* Everything that can be checked without the lock: flags, size, format,
 * checksum and layout (rm_descriptor_decode). */
static int32_t parse_descriptor(rm_tensors *t, const uint8_t *bytes, uint64_t size,
                                uint64_t flags, rm_descriptor *out)
{
    if ((flags & ~(uint64_t)KNOWN_IMPORT_FLAGS) != 0)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "unknown tensor import flags 0x%" PRIx64,
                            flags & ~(uint64_t)KNOWN_IMPORT_FLAGS);
    if (size < RM_TENSOR_DESCRIPTOR_SIZE)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "a descriptor has %d bytes, got %" PRIu64,
                            RM_TENSOR_DESCRIPTOR_SIZE, size);
    const char *why = NULL;
    if (!rm_descriptor_decode(bytes, out, &why))
        return rm_error_set(t->env.error_owner, RM_E_INVALID_DESCRIPTOR, "descriptor: %s", why);
    return RM_OK;
}

/* A handle on the tensor `d` describes, from `backend` (lock held). A
 * failure gives the handle back. */
static int32_t import_locked(rm_tensors *t, rm_mem_backend *backend, rm_descriptor *d,
                             const uint8_t *bytes, uint64_t size, bool writable,
                             rm_tensor **out)
{
    rm_tensor *tensor = new_handle(t, backend);
    if (tensor == NULL)
        return RM_E_NO_MEMORY;
    int32_t rc = backend->ops->import(backend, d, bytes, size, writable, &tensor->block);
    if (rc != RM_OK) {
        recycle_handle(t, tensor);
        return rc;
    }
    tensor->block.where = *d; /* after, not before: see rm_mem_block */
    tensor->block.flags |= RM_TENSOR_IMPORTED;
    t->stats.imports++;
    link_handle(t, tensor);
    *out = tensor;
    return RM_OK;
}

static int32_t import_bytes(rm_tensors *t, const uint8_t *bytes, uint64_t size, uint64_t flags,
                            rm_tensor **out)
{
    *out = NULL;
    rm_descriptor d;
    int32_t rc = parse_descriptor(t, bytes, size, flags, &d);
    if (rc != RM_OK)
        return rc;
    rm_mem_backend *backend = backend_for_kind(t, d.kind);
    if (backend == NULL && d.kind == RM_DESCRIPTOR_KIND_CUDA_IPC)
        return device_backend(t, &backend);
    if (backend == NULL)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "descriptor kind %u has no memory backend in this build", d.kind);
    pthread_mutex_lock(&t->lock);
    rc = import_locked(t, backend, &d, bytes, size, (flags & RM_TENSOR_IMPORT_WRITABLE) != 0,
                       out);
    unlock_and_log(t);
    return rc;
}

int32_t rm_tensors_import(rm_tensors *t, const void *descriptor, uint64_t size, uint64_t flags,
                          rm_tensor **out)
{
    return import_bytes(t, descriptor, size, flags, out);
}

int32_t rm_tensors_import_text(rm_tensors *t, const char *text, uint64_t flags, rm_tensor **out)
{
    *out = NULL;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    const char *why = NULL;
    if (!rm_descriptor_from_text(text, bytes, &why))
        return rm_error_set(t->env.error_owner, RM_E_INVALID_DESCRIPTOR, "%s", why);
    if (rm_descriptor_kind_of(bytes) == RM_DESCRIPTOR_KIND_INLINE)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "inline descriptors have no text form");
    return import_bytes(t, bytes, sizeof bytes, flags, out);
}

/* ------------------------------------------------------------------------ */
/* Release and DLPack                                                       */
/* ------------------------------------------------------------------------ */

static void unref(rm_tensor *tensor)
{
    /* Without a DLPack export nothing else holds the handle, so the
     * caller's reference is the last and needs no atomic read-modify-write
     * (a locked instruction on every release otherwise). A concurrent
     * export of a handle being released is a host bug either way. */
    if (atomic_load_explicit(&tensor->refs, memory_order_acquire) != 1 &&
        atomic_fetch_sub_explicit(&tensor->refs, 1, memory_order_acq_rel) != 1)
        return;
    rm_tensors *t = tensor->tensors;
    pthread_mutex_lock(&t->lock);
    drop_handle(t, tensor);
    collect(t);
    unlock_and_log(t);
}

int32_t rm_tensors_release(rm_tensors *t, rm_tensor *tensor)
{
    (void)t;
    unref(tensor);
    return RM_OK;
}

typedef struct dlpack_export {
    union {
        rm_dl_managed_tensor plain;
        rm_dl_managed_tensor_versioned versioned;
    } managed;
    rm_tensor *tensor;
    int64_t shape[RM_TENSOR_MAX_DIMS];
    int64_t strides[RM_TENSOR_MAX_DIMS];
} dlpack_export;

static void dlpack_delete_plain(rm_dl_managed_tensor *self)
{
    dlpack_export *export = self->manager_ctx;
    unref(export->tensor);
    free(export);
}

static void dlpack_delete_versioned(rm_dl_managed_tensor_versioned *self)
{
    dlpack_export *export = self->manager_ctx;
    unref(export->tensor);
    free(export);
}

static dlpack_export *dlpack_begin(rm_tensors *t, rm_tensor *tensor, rm_dl_tensor *dl)
{
    (void)dl;
    dlpack_export *export = calloc(1, sizeof *export);
    if (export == NULL) {
        rm_error_set(t->env.error_owner, RM_E_NO_MEMORY, "no memory for a DLPack export");
        return NULL;
    }
    export->tensor = tensor;
    copy_dims(&tensor->block.where, export->shape, export->strides);
    atomic_fetch_add_explicit(&tensor->refs, 1, memory_order_relaxed);
    return export;
}

static rm_dl_tensor dl_tensor_of(const rm_tensor *tensor, dlpack_export *export)
{
    return (rm_dl_tensor){
        .data = tensor->block.data,
        .device = tensor->backend->ops->describe_device(tensor->backend, &tensor->block),
        .ndim = (int32_t)tensor->block.where.ndim,
        .dtype = tensor->block.where.dtype,
        .shape = export->shape,
        .strides = export->strides,
        .byte_offset = 0,
    };
}

/* A DLPack consumer reads the data at once: refuse memory that is gone. */
static int32_t check_alive(const rm_tensor *tensor)
{
    const rm_mem_ops *ops = tensor->backend->ops;
    return ops->check_alive != NULL ? ops->check_alive(tensor->backend, &tensor->block)
                                    : RM_OK;
}

int32_t rm_tensors_to_dlpack(rm_tensors *t, rm_tensor *tensor, rm_dl_managed_tensor **out)
{
    *out = NULL;
    int32_t rc = check_alive(tensor);
    if (rc != RM_OK)
        return rc;
    dlpack_export *export = dlpack_begin(t, tensor, NULL);
    if (export == NULL)
        return RM_E_NO_MEMORY;
    export->managed.plain = (rm_dl_managed_tensor){
        .dl_tensor = dl_tensor_of(tensor, export),
        .manager_ctx = export,
        .deleter = dlpack_delete_plain,
    };
    *out = &export->managed.plain;
    return RM_OK;
}

int32_t rm_tensors_to_dlpack_versioned(rm_tensors *t, rm_tensor *tensor,
                                       rm_dl_managed_tensor_versioned **out)
{
    *out = NULL;
    int32_t rc = check_alive(tensor);
    if (rc != RM_OK)
        return rc;
    dlpack_export *export = dlpack_begin(t, tensor, NULL);
    if (export == NULL)
        return RM_E_NO_MEMORY;
    export->managed.versioned = (rm_dl_managed_tensor_versioned){
        .version = {.major = 1, .minor = 0},
        .manager_ctx = export,
        .deleter = dlpack_delete_versioned,
        .flags = (tensor->block.flags & RM_TENSOR_WRITABLE) ? 0 : RM_DLPACK_FLAG_READ_ONLY,
        .dl_tensor = dl_tensor_of(tensor, export),
    };
    *out = &export->managed.versioned;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Stats, reclaim, listing                                                  */
/* ------------------------------------------------------------------------ */

int32_t rm_tensors_pool_stats(rm_tensors *t, rm_tensor_pool_stats *out)
{
    pthread_mutex_lock(&t->lock);
    collect(t);
    rm_tensor_pool_stats stats = t->stats;
    for (uint32_t i = 0; i < t->backend_count; i++)
        if (t->backends[i]->ops->stats != NULL)
            t->backends[i]->ops->stats(t->backends[i], &stats);
    unlock_and_log(t);
    stats.struct_size = sizeof stats;
    stats.abi_version = RM_ABI_VERSION_CURRENT;
    *out = stats;
    return RM_OK;
}

int32_t rm_tensors_session_bytes(rm_tensors *t, uint64_t session, uint64_t *out)
{
    pthread_mutex_lock(&t->lock);
    collect(t);
    *out = session_bytes(t, session);
    unlock_and_log(t);
    return RM_OK;
}

/* The context's own state under the lock; what dead processes left in the
 * namespace without it (reading /dev/shm and /proc takes milliseconds). */
int32_t rm_tensors_reclaim(rm_tensors *t, rm_reclaim_report *out)
{
    rm_reclaim_report report = {.struct_size = sizeof report,
                                .abi_version = RM_ABI_VERSION_CURRENT};
    pthread_mutex_lock(&t->lock);
    for (uint32_t i = 0; i < t->backend_count; i++)
        if (t->backends[i]->ops->reclaim != NULL)
            t->backends[i]->ops->reclaim(t->backends[i], &report);
    unlock_and_log(t);
    int32_t rc = RM_OK;
    for (uint32_t i = 0; i < t->backend_count; i++) {
        if (t->backends[i]->ops->reap == NULL)
            continue;
        int32_t reaped = t->backends[i]->ops->reap(t->backends[i], &report);
        if (rc == RM_OK)
            rc = reaped;
    }
    if (out != NULL)
        *out = report;
    return rc;
}

/* The backend's own figures are published first, under the lock, so that
 * its own row is current; the listing itself runs without the lock. */
int32_t rm_tensors_list(rm_tensors *t, rm_shm_pool_info *out, uint32_t row_size,
                        uint32_t capacity, uint32_t *count)
{
    pthread_mutex_lock(&t->lock);
    for (uint32_t i = 0; i < t->backend_count; i++)
        if (t->backends[i]->ops->publish != NULL)
            t->backends[i]->ops->publish(t->backends[i]);
    unlock_and_log(t);
    rm_shm_pool_info *rows = NULL;
    size_t used = 0;
    int32_t rc = RM_OK;
    for (uint32_t i = 0; i < t->backend_count && rc == RM_OK; i++) {
        if (t->backends[i]->ops->list == NULL)
            continue;
        rm_shm_pool_info *more = NULL;
        size_t more_count = 0;
        rc = t->backends[i]->ops->list(t->backends[i], &more, &more_count);
        if (rc != RM_OK)
            break;
        if (more_count > 0) {
            rm_shm_pool_info *all = realloc(rows, (used + more_count) * sizeof *all);
            if (all == NULL) {
                free(more);
                rc = rm_error_set(t->env.error_owner, RM_E_NO_MEMORY, "no memory to list pools");
                break;
            }
            rows = all;
            memcpy(rows + used, more, more_count * sizeof *more);
            used += more_count;
        }
        free(more);
    }
    if (rc == RM_OK) {
        /* Host structs older than 1.3 end before `memory`: rows are copied
         * to the host's size, and the fields it lacks are dropped. */
        size_t copy = row_size < sizeof *rows ? row_size : sizeof *rows;
        for (size_t i = 0; i < used && i < capacity; i++) {
            rows[i].struct_size = (uint32_t)copy;
            memcpy((char *)out + i * row_size, &rows[i], copy);
        }
        *count = (uint32_t)used;
        if (used > capacity)
            rc = rm_error_set(t->env.error_owner, RM_E_BUFFER_TOO_SMALL,
                              "%zu pools in the namespace, room for %u", used, capacity);
    }
    free(rows);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Device tensors: wrap, ordering, driver information                       */
/* ------------------------------------------------------------------------ */

int32_t rm_tensors_wrap_device(rm_tensors *t, const rm_tensor_spec *spec, void *pointer,
                               rm_device_released_fn released, void *user, rm_tensor **out)
{
    *out = NULL;
    rm_mem_backend *backend = NULL;
    int32_t rc = device_backend(t, &backend);
    if (rc != RM_OK)
        return rc;
    int32_t ordinal = RM_MEM_HOST_DEVICE;
    rc = spec_device(t, spec, &ordinal);
    if (rc != RM_OK)
        return rc;
    if (ordinal == RM_MEM_HOST_DEVICE)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "tensor_wrap_device: spec.device must name the pointer's device "
                            "(\"cuda:N\")");
    if ((spec->flags & ~(uint64_t)RM_TENSOR_ALLOC_STRIDED) != 0 || spec->alignment != 0)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "tensor_wrap_device: only RM_TENSOR_ALLOC_STRIDED may be set, "
                            "and alignment must be 0 (the memory is the host's)");
    if (pointer == NULL)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "tensor_wrap_device: device_pointer is NULL");
    rm_descriptor where;
    uint64_t alignment = 0;
    rc = check_spec(t, spec, &where, &alignment);
    if (rc != RM_OK)
        return rc;
#if RM_HAVE_CUDA_IPC
    pthread_mutex_lock(&t->lock);
    collect(t);
    rm_tensor *tensor = new_handle(t, backend);
    if (tensor == NULL) {
        rc = RM_E_NO_MEMORY;
    } else {
        rc = rm_cuda_backend_wrap(backend, &where, pointer, ordinal, released, user,
                                  &tensor->block);
        if (rc == RM_OK) {
            tensor->block.where = where;
            link_handle(t, tensor);
            *out = tensor;
        } else {
            recycle_handle(t, tensor);
        }
    }
    unlock_and_log(t);
    return rc;
#else
    (void)released;
    (void)user;
    return RM_E_FEATURE_UNAVAILABLE;
#endif
}

int32_t rm_tensors_record(rm_tensors *t, rm_tensor *tensor, void *stream)
{
    const rm_mem_ops *ops = tensor->backend->ops;
    if (ops->record == NULL)
        return RM_OK;
    pthread_mutex_lock(&t->lock);
    int32_t rc = ops->record(tensor->backend, &tensor->block, stream);
    unlock_and_log(t);
    return rc;
}

int32_t rm_tensors_wait(rm_tensors *t, rm_tensor *tensor, void *stream, uint64_t flags)
{
    if ((flags & ~(uint64_t)RM_TENSOR_WAIT_HOST) != 0)
        return rm_error_set(t->env.error_owner, RM_E_INVALID_ARGUMENT,
                            "unknown tensor_wait flags 0x%" PRIx64,
                            flags & ~(uint64_t)RM_TENSOR_WAIT_HOST);
    const rm_mem_ops *ops = tensor->backend->ops;
    if (ops->wait == NULL)
        return RM_OK;
    return ops->wait(tensor->backend, &tensor->block, stream,
                     (flags & RM_TENSOR_WAIT_HOST) != 0);
}

int32_t rm_tensors_cuda_info(rm_tensors *t, rm_cuda_info *out)
{
    rm_cuda_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    info.abi_version = RM_ABI_VERSION_CURRENT;
#if RM_HAVE_CUDA_IPC
    if (t->allocate_device != NULL) {
        pthread_mutex_lock(&t->lock);
        rm_cuda_backend_info(t->allocate_device, &info);
        unlock_and_log(t);
        *out = info;
        return RM_OK;
    }
#endif
    rm_mem_backend *none = NULL;
    info.status = device_backend(t, &none);
    snprintf(info.message, sizeof info.message, "%s", rm_error_last(t->env.error_owner));
    *out = info;
    return RM_OK;
}
