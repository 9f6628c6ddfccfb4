/* Model weights in device memory: see device_weights.h. */
#include "device_weights.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_keys.h"
#include "error.h"
#include "rm_build_config.h"

#if RM_HAVE_CUDA_IPC

#include "cuda_driver.h"
#include "weights_socket.h"

/* A second reference to the process's driver object, so that what holds
 * device memory outlives the context that made it. */
static rm_cuda_driver *driver_reference(rm_cuda_driver *driver)
{
    rm_cuda_driver *again = NULL;
    static const char quiet_owner;
    if (rm_cuda_driver_open(rm_cuda_driver_library(driver), &quiet_owner, &again) != RM_OK)
        return NULL;
    return again;
}

/* RM_E_DEVICE_UNAVAILABLE for a device this process does not have. */
static int32_t check_ordinal(rm_cuda_driver *driver, int ordinal, const char *key,
                             const void *owner)
{
    int count = rm_cuda_driver_device_count(driver);
    if (ordinal < 0 || ordinal >= count)
        return rm_error_set(owner, RM_E_DEVICE_UNAVAILABLE,
                            "model key '%s' names device cuda:%d, but this process sees %d "
                            "CUDA device(s)",
                            key, ordinal, count);
    return RM_OK;
}

/* A driver failure's code as this module reports it: the driver's "not
 * supported" is a device that cannot do it. */
static int32_t device_code(int32_t status)
{
    return status == RM_E_FEATURE_UNAVAILABLE ? RM_E_DEVICE_UNAVAILABLE : status;
}

/* ------------------------------------------------------------------------ */
/* Private buffers                                                          */
/* ------------------------------------------------------------------------ */

int32_t rm_device_buffer_create(rm_cuda_driver *driver, int ordinal, uint64_t bytes,
                                const char *key, const void *owner, rm_device_buffer **out)
{
    *out = NULL;
    int32_t status = check_ordinal(driver, ordinal, key, owner);
    if (status != RM_OK)
        return status;
    rm_device_buffer *buffer = calloc(1, sizeof *buffer);
    if (buffer == NULL)
        return rm_error_set(owner, RM_E_NO_MEMORY, "out of memory for model key '%s'", key);
    buffer->ordinal = ordinal;
    buffer->bytes = bytes;
    buffer->driver = driver_reference(driver);
    if (buffer->driver == NULL) {
        free(buffer);
        return rm_error_set(owner, RM_E_DEVICE_UNAVAILABLE,
                            "the CUDA driver could not be opened again for model key '%s'",
                            key);
    }
    CUdeviceptr pointer = 0;
    status = rm_cuda_driver_mem_alloc(driver, ordinal, (size_t)bytes, &pointer, owner);
    if (status == RM_OK)
        status = rm_cuda_driver_memset_d8(driver, ordinal, pointer, 0, (size_t)bytes, owner);
    CUstream stream = NULL;
    if (status == RM_OK)
        status = rm_cuda_driver_stream_create(driver, ordinal, CU_STREAM_NON_BLOCKING, &stream,
                                              owner);
    if (status != RM_OK) {
        char why[RM_ERROR_MESSAGE_MAX];
        snprintf(why, sizeof why, "%s", rm_error_last(owner));
        if (pointer != 0)
            (void)rm_cuda_driver_mem_free(driver, ordinal, pointer, NULL);
        rm_cuda_driver_release(buffer->driver);
        free(buffer);
        return rm_error_set(owner, device_code(status),
                            "device buffer of %llu bytes on cuda:%d for model key '%s': %s",
                            (unsigned long long)bytes, ordinal, key, why);
    }
    buffer->pointer = pointer;
    buffer->stream = stream;
    *out = buffer;
    return RM_OK;
}

int32_t rm_device_buffer_finish(rm_device_buffer *buffer, const char *key, const void *owner)
{
    int32_t status = rm_cuda_driver_ctx_synchronize(buffer->driver, buffer->ordinal, owner);
    if (buffer->stream != NULL)
        (void)rm_cuda_driver_stream_destroy(buffer->driver, buffer->ordinal, buffer->stream,
                                            NULL);
    buffer->stream = NULL;
    if (status != RM_OK) {
        char why[RM_ERROR_MESSAGE_MAX];
        snprintf(why, sizeof why, "%s", rm_error_last(owner));
        return rm_error_set(owner, status,
                            "the device work of the loader of model key '%s' failed: %s", key,
                            why);
    }
    return RM_OK;
}

void rm_device_buffer_destroy(void *model, void *user)
{
    (void)model;
    rm_device_buffer *buffer = user;
    if (buffer->stream != NULL)
        (void)rm_cuda_driver_stream_destroy(buffer->driver, buffer->ordinal, buffer->stream,
                                            NULL);
    (void)rm_cuda_driver_mem_free(buffer->driver, buffer->ordinal, buffer->pointer, NULL);
    rm_cuda_driver_release(buffer->driver);
    free(buffer);
}

/* ------------------------------------------------------------------------ */
/* Drafts                                                                   */
/* ------------------------------------------------------------------------ */

int32_t rm_weights_draft_create(rm_cuda_driver *driver, int ordinal, uint64_t bytes,
                                const char *key, const void *owner, rm_weights_draft *out)
{
    *out = (rm_weights_draft){.ordinal = ordinal};
    int32_t status = check_ordinal(driver, ordinal, key, owner);
    if (status != RM_OK)
        return status;
    if (!rm_cuda_driver_has_vmm(driver, ordinal))
        return rm_error_set(owner, RM_E_DEVICE_UNAVAILABLE,
                            "model key '%s': device cuda:%d cannot share memory between "
                            "processes as POSIX descriptors (virtual memory management or "
                            "its POSIX handle type is unsupported by this driver or device), "
                            "so node-scope weights cannot live on it",
                            key, ordinal);
    size_t granularity = 0;
    status = rm_cuda_driver_vmm_granularity(driver, ordinal, &granularity, owner);
    if (status == RM_OK && granularity == 0)
        granularity = (size_t)2 << 20;
    uint64_t rounded = 0;
    if (status == RM_OK)
        rounded = (bytes + granularity - 1) / granularity * granularity;
    CUmemGenericAllocationHandle handle = 0;
    bool created = false;
    if (status == RM_OK) {
        status = rm_cuda_driver_vmm_create(driver, ordinal, (size_t)rounded, &handle, owner);
        created = status == RM_OK;
    }
    CUdeviceptr pointer = 0;
    if (status == RM_OK)
        status = rm_cuda_driver_vmm_map(driver, ordinal, handle, (size_t)rounded, true, &pointer,
                                        owner);
    if (status == RM_OK)
        status = rm_cuda_driver_memset_d8(driver, ordinal, pointer, 0, (size_t)rounded, owner);
    CUstream stream = NULL;
    if (status == RM_OK)
        status = rm_cuda_driver_stream_create(driver, ordinal, CU_STREAM_NON_BLOCKING, &stream,
                                              owner);
    rm_cuda_driver *reference = status == RM_OK ? driver_reference(driver) : NULL;
    if (status == RM_OK && reference == NULL)
        status = rm_error_set(owner, RM_E_DEVICE_UNAVAILABLE,
                              "the CUDA driver could not be opened again");
    if (status != RM_OK) {
        char why[RM_ERROR_MESSAGE_MAX];
        snprintf(why, sizeof why, "%s", rm_error_last(owner));
        if (stream != NULL)
            (void)rm_cuda_driver_stream_destroy(driver, ordinal, stream, NULL);
        if (pointer != 0)
            (void)rm_cuda_driver_vmm_unmap(driver, ordinal, pointer, (size_t)rounded, NULL);
        if (created)
            (void)rm_cuda_driver_vmm_release(driver, ordinal, handle, NULL);
        return rm_error_set(owner, device_code(status),
                            "shareable device buffer of %llu bytes on cuda:%d for model key "
                            "'%s': %s",
                            (unsigned long long)bytes, ordinal, key, why);
    }
    *out = (rm_weights_draft){.driver = reference,
                              .ordinal = ordinal,
                              .handle = handle,
                              .pointer = pointer,
                              .bytes = rounded,
                              .stream = stream};
    return RM_OK;
}

void rm_weights_draft_discard(rm_weights_draft *draft)
{
    if (draft->driver == NULL)
        return;
    if (draft->stream != NULL) {
        (void)rm_cuda_driver_stream_synchronize(draft->driver, draft->ordinal, draft->stream,
                                                NULL);
        (void)rm_cuda_driver_stream_destroy(draft->driver, draft->ordinal, draft->stream, NULL);
    }
    /* The loader's work may still be queued on other streams. */
    (void)rm_cuda_driver_ctx_synchronize(draft->driver, draft->ordinal, NULL);
    (void)rm_cuda_driver_vmm_unmap(draft->driver, draft->ordinal, draft->pointer,
                                   (size_t)draft->bytes, NULL);
    (void)rm_cuda_driver_vmm_release(draft->driver, draft->ordinal, draft->handle, NULL);
    rm_cuda_driver_release(draft->driver);
    *draft = (rm_weights_draft){0};
}

/* ------------------------------------------------------------------------ */
/* The process's table of mapped weights, and its server                    */
/* ------------------------------------------------------------------------ */

typedef struct mapped_weights {
    struct mapped_weights *next;
    char namespace_name[RM_NAMESPACE_MAX + 1];
    char key[RM_MODEL_KEY_MAX];
    uint64_t id;
    rm_cuda_driver *driver; /* a reference of its own */
    int ordinal;
    CUmemGenericAllocationHandle handle;
    CUdeviceptr pointer; /* mapped read-only */
    uint64_t bytes;
    int fd;         /* what the server sends a copy of */
    uint32_t uses;  /* contexts' attachments */
} mapped_weights;

/* Lock order: server_lock, then table_lock. The server thread takes only
 * table_lock (in lookup), so stopping it under server_lock cannot wait on
 * itself. No driver call is made under table_lock. */
static pthread_mutex_t server_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static mapped_weights *table;
static rm_weights_server *server;

/* fork(): the child has none of the parent's mappings (CUDA does not
 * survive fork) and no server thread, but it would inherit the table, the
 * descriptors (which keep the parent's device memory alive for as long as
 * the child lives) and possibly a lock held by the server thread. The
 * locks are therefore held across fork(), and the child starts empty. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&server_lock);
    pthread_mutex_lock(&table_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&table_lock);
    pthread_mutex_unlock(&server_lock);
}

static void fork_child(void)
{
    for (mapped_weights *w = table, *next; w != NULL; w = next) {
        next = w->next;
        if (w->fd >= 0)
            close(w->fd);
        free(w);
    }
    table = NULL;
    rm_weights_server_forget(server);
    server = NULL;
    pthread_mutex_unlock(&table_lock);
    pthread_mutex_unlock(&server_lock);
}

static pthread_once_t fork_guard_once = PTHREAD_ONCE_INIT;

static void install_fork_guard(void)
{
    /* The plugin is linked -z nodelete, so the handlers outlive no code. */
    (void)pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static mapped_weights *find(const char *namespace_name, uint64_t id)
{
    for (mapped_weights *w = table; w != NULL; w = w->next)
        if (w->id == id && strcmp(w->namespace_name, namespace_name) == 0)
            return w;
    return NULL;
}

static int32_t lookup(const rm_weights_request *request, int *out_fd, uint64_t *out_bytes)
{
    pthread_mutex_lock(&table_lock);
    const mapped_weights *w = find(request->namespace_name, request->id);
    int32_t status = RM_E_NOT_FOUND;
    if (w != NULL && strcmp(w->key, request->key) == 0) {
        *out_fd = dup(w->fd);
        *out_bytes = w->bytes;
        status = *out_fd >= 0 ? RM_OK : RM_E_SYSTEM;
    }
    pthread_mutex_unlock(&table_lock);
    return status;
}

static void stop_server_if_idle(void)
{
    pthread_mutex_lock(&server_lock);
    pthread_mutex_lock(&table_lock);
    bool idle = table == NULL;
    pthread_mutex_unlock(&table_lock);
    if (idle && server != NULL) {
        rm_weights_server_stop(server);
        server = NULL;
    }
    pthread_mutex_unlock(&server_lock);
}

static void unmap_weights(mapped_weights *w)
{
    (void)rm_cuda_driver_vmm_unmap(w->driver, w->ordinal, w->pointer, (size_t)w->bytes, NULL);
    (void)rm_cuda_driver_vmm_release(w->driver, w->ordinal, w->handle, NULL);
    if (w->fd >= 0)
        close(w->fd);
    rm_cuda_driver_release(w->driver);
    free(w);
}

/* Enters `w` with one use, the server running first so that it can answer
 * as soon as the node table names this process; *pointer is its address.
 * The server lock is held until `w` is in: a drop of the last weights
 * meanwhile would otherwise stop the server this entry needs.
 * Two contexts of the process may have received the same weights at
 * once: the second mapping is let go and the first used. */
static int32_t enter(mapped_weights *w, const void *owner, uint64_t *pointer)
{
    pthread_once(&fork_guard_once, install_fork_guard);
    pthread_mutex_lock(&server_lock);
    int32_t status = RM_OK;
    if (server == NULL)
        status = rm_weights_server_start(lookup, owner, &server);
    if (status != RM_OK) {
        pthread_mutex_unlock(&server_lock);
        return status;
    }
    pthread_mutex_lock(&table_lock);
    mapped_weights *first = find(w->namespace_name, w->id);
    if (first != NULL) {
        first->uses++;
        *pointer = first->pointer;
    } else {
        w->uses = 1;
        w->next = table;
        table = w;
        *pointer = w->pointer;
    }
    pthread_mutex_unlock(&table_lock);
    pthread_mutex_unlock(&server_lock);
    if (first != NULL)
        unmap_weights(w);
    return RM_OK;
}

static mapped_weights *new_entry(const char *namespace_name, uint64_t id, const char *key)
{
    mapped_weights *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    snprintf(w->namespace_name, sizeof w->namespace_name, "%s", namespace_name);
    snprintf(w->key, sizeof w->key, "%s", key);
    w->id = id;
    w->fd = -1;
    return w;
}

int32_t rm_weights_publish(rm_weights_draft *draft, const char *namespace_name, uint64_t id,
                           const char *key, const void *owner, uint64_t *pointer)
{
    *pointer = 0;
    rm_cuda_driver *driver = draft->driver;
    int ordinal = draft->ordinal;
    int32_t status = rm_cuda_driver_stream_synchronize(driver, ordinal, draft->stream, owner);
    if (status == RM_OK)
        status = rm_cuda_driver_ctx_synchronize(driver, ordinal, owner);
    if (status == RM_OK)
        (void)rm_cuda_driver_stream_destroy(driver, ordinal, draft->stream, NULL);
    if (status == RM_OK)
        draft->stream = NULL;
    if (status == RM_OK)
        status = rm_cuda_driver_vmm_set_access(driver, ordinal, draft->pointer,
                                               (size_t)draft->bytes, false, owner);
    int fd = -1;
    if (status == RM_OK)
        status = rm_cuda_driver_vmm_export_fd(driver, ordinal, draft->handle, &fd, owner);
    mapped_weights *w = status == RM_OK ? new_entry(namespace_name, id, key) : NULL;
    if (status == RM_OK && w == NULL)
        status = rm_error_set(owner, RM_E_NO_MEMORY, "out of memory");
    if (status == RM_OK) {
        w->driver = driver;
        w->ordinal = ordinal;
        w->handle = draft->handle;
        w->pointer = draft->pointer;
        w->bytes = draft->bytes;
        w->fd = fd;
        status = enter(w, owner, pointer);
        if (status == RM_OK) {
            *draft = (rm_weights_draft){0}; /* now the table's */
            return RM_OK;
        }
        free(w);
    }
    char why[RM_ERROR_MESSAGE_MAX];
    snprintf(why, sizeof why, "%s", rm_error_last(owner));
    if (fd >= 0)
        close(fd);
    rm_weights_draft_discard(draft);
    return rm_error_set(owner, device_code(status),
                        "cannot seal and share the device buffer of model key '%s': %s", key,
                        why);
}

bool rm_weights_use(const char *namespace_name, uint64_t id, uint64_t *pointer)
{
    pthread_mutex_lock(&table_lock);
    mapped_weights *w = find(namespace_name, id);
    if (w != NULL) {
        w->uses++;
        *pointer = w->pointer;
    }
    pthread_mutex_unlock(&table_lock);
    return w != NULL;
}

/* Imports and maps one received descriptor. */
static int32_t map_received(rm_cuda_driver *driver, int ordinal, int fd, uint64_t bytes,
                            const void *owner, mapped_weights *w)
{
    CUmemGenericAllocationHandle handle = 0;
    int32_t status = rm_cuda_driver_vmm_import_fd(driver, ordinal, fd, &handle, owner);
    if (status != RM_OK)
        return status;
    CUdeviceptr pointer = 0;
    status = rm_cuda_driver_vmm_map(driver, ordinal, handle, (size_t)bytes, false, &pointer,
                                    owner);
    if (status != RM_OK) {
        (void)rm_cuda_driver_vmm_release(driver, ordinal, handle, NULL);
        return status;
    }
    w->handle = handle;
    w->pointer = pointer;
    return RM_OK;
}

int32_t rm_weights_receive(rm_cuda_driver *driver, int ordinal, const char *namespace_name,
                           uint64_t id, const char *key, uint64_t bytes,
                           const rm_weights_source *sources, uint32_t source_count,
                           const void *owner, uint64_t *pointer)
{
    *pointer = 0;
    int32_t status = check_ordinal(driver, ordinal, key, owner);
    if (status != RM_OK)
        return status;
    if (!rm_cuda_driver_has_vmm(driver, ordinal))
        return rm_error_set(owner, RM_E_DEVICE_UNAVAILABLE,
                            "model key '%s' is ready on device cuda:%d, which cannot import "
                            "memory shared as POSIX descriptors here",
                            key, ordinal);
    mapped_weights *w = new_entry(namespace_name, id, key);
    if (w == NULL)
        return rm_error_set(owner, RM_E_NO_MEMORY, "out of memory attaching model key '%s'",
                            key);
    w->driver = driver_reference(driver);
    w->ordinal = ordinal;
    w->bytes = bytes;
    if (w->driver == NULL) {
        free(w);
        return rm_error_set(owner, RM_E_DEVICE_UNAVAILABLE,
                            "the CUDA driver could not be opened again");
    }
    rm_weights_request request = {.id = id};
    snprintf(request.namespace_name, sizeof request.namespace_name, "%s", namespace_name);
    snprintf(request.key, sizeof request.key, "%s", key);
    char tried[RM_ERROR_MESSAGE_MAX] = "";
    size_t used = 0;
    bool mapping_failed = false;
    status = RM_E_NOT_FOUND;
    for (uint32_t i = 0; i < source_count; i++) {
        int fd = -1;
        uint64_t answered = 0;
        char why[160];
        int32_t fetched = rm_weights_fetch(sources[i].pid, sources[i].start_time, &request, &fd,
                                           &answered, why, sizeof why);
        if (fetched == RM_OK && answered != bytes) {
            snprintf(why, sizeof why, "it has %llu bytes where the table says %llu",
                     (unsigned long long)answered, (unsigned long long)bytes);
            close(fd);
            fetched = RM_E_SYSTEM;
        }
        if (fetched == RM_OK) {
            /* A mapping failure is this process's, not the source's: no
             * other source would do better. */
            status = map_received(driver, ordinal, fd, bytes, owner, w);
            if (status == RM_OK)
                w->fd = fd;
            else
                close(fd);
            mapping_failed = status != RM_OK;
            break;
        }
        if (fetched != RM_E_NOT_FOUND)
            status = RM_E_SYSTEM;
        if (used < sizeof tried)
            used += (size_t)snprintf(tried + used, sizeof tried - used, "%spid %d: %s",
                                     i == 0 ? "" : "; ", (int)sources[i].pid, why);
    }
    if (status == RM_OK) {
        status = enter(w, owner, pointer);
        if (status == RM_OK)
            return RM_OK;
        unmap_weights(w);
        return status;
    }
    rm_cuda_driver_release(w->driver);
    free(w);
    if (mapping_failed) {
        char why[RM_ERROR_MESSAGE_MAX];
        snprintf(why, sizeof why, "%s", rm_error_last(owner));
        return rm_error_set(owner, device_code(status),
                            "cannot map the weights of model key '%s' received from another "
                            "process: %s",
                            key, why);
    }
    if (source_count == 0)
        return rm_error_set(owner, RM_E_NOT_FOUND,
                            "model key '%s' is ready on the device but no live process holds "
                            "its weights",
                            key);
    return rm_error_set(owner, status,
                        "no process holding model key '%s' handed over its weights (%s)", key,
                        tried);
}

bool rm_weights_has(const char *namespace_name, uint64_t id)
{
    pthread_mutex_lock(&table_lock);
    bool found = find(namespace_name, id) != NULL;
    pthread_mutex_unlock(&table_lock);
    return found;
}

void rm_weights_unuse(const char *namespace_name, uint64_t id)
{
    pthread_mutex_lock(&table_lock);
    mapped_weights *w = find(namespace_name, id);
    if (w != NULL && w->uses > 0)
        w->uses--;
    pthread_mutex_unlock(&table_lock);
}

bool rm_weights_drop(const char *namespace_name, uint64_t id)
{
    pthread_mutex_lock(&table_lock);
    mapped_weights *dropped = NULL;
    for (mapped_weights **link = &table; *link != NULL; link = &(*link)->next) {
        mapped_weights *w = *link;
        if (w->id != id || strcmp(w->namespace_name, namespace_name) != 0)
            continue;
        if (w->uses == 0) {
            *link = w->next;
            dropped = w;
        }
        break;
    }
    pthread_mutex_unlock(&table_lock);
    if (dropped == NULL)
        return false;
    unmap_weights(dropped);
    stop_server_if_idle();
    return true;
}

uint32_t rm_weights_list(const char *namespace_name, bool all, uint64_t **ids)
{
    *ids = NULL;
    pthread_mutex_lock(&table_lock);
    uint32_t count = 0;
    for (const mapped_weights *w = table; w != NULL; w = w->next)
        count += strcmp(w->namespace_name, namespace_name) == 0 && (all || w->uses == 0);
    uint64_t *found = count != 0 ? malloc(count * sizeof *found) : NULL;
    uint32_t listed = 0;
    for (const mapped_weights *w = table; w != NULL && found != NULL; w = w->next)
        if (strcmp(w->namespace_name, namespace_name) == 0 && (all || w->uses == 0))
            found[listed++] = w->id;
    pthread_mutex_unlock(&table_lock);
    *ids = found;
    return listed;
}

#else /* built without cuda-ipc: nothing can be created, so nothing is mapped */

int32_t rm_device_buffer_create(rm_cuda_driver *driver, int ordinal, uint64_t bytes,
                                const char *key, const void *owner, rm_device_buffer **out)
{
    (void)driver, (void)ordinal, (void)bytes;
    *out = NULL;
    return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                        "model key '%s': 'cuda-ipc' was not built into this plugin", key);
}

int32_t rm_device_buffer_finish(rm_device_buffer *buffer, const char *key, const void *owner)
{
    (void)buffer, (void)key, (void)owner;
    return RM_OK;
}

void rm_device_buffer_destroy(void *model, void *user)
{
    (void)model, (void)user;
}

int32_t rm_weights_draft_create(rm_cuda_driver *driver, int ordinal, uint64_t bytes,
                                const char *key, const void *owner, rm_weights_draft *out)
{
    (void)driver, (void)bytes;
    *out = (rm_weights_draft){.ordinal = ordinal};
    return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                        "model key '%s': 'cuda-ipc' was not built into this plugin", key);
}

void rm_weights_draft_discard(rm_weights_draft *draft)
{
    (void)draft;
}

int32_t rm_weights_publish(rm_weights_draft *draft, const char *namespace_name, uint64_t id,
                           const char *key, const void *owner, uint64_t *pointer)
{
    (void)draft, (void)namespace_name, (void)id;
    *pointer = 0;
    return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                        "model key '%s': 'cuda-ipc' was not built into this plugin", key);
}

bool rm_weights_use(const char *namespace_name, uint64_t id, uint64_t *pointer)
{
    (void)namespace_name, (void)id, (void)pointer;
    return false;
}

int32_t rm_weights_receive(rm_cuda_driver *driver, int ordinal, const char *namespace_name,
                           uint64_t id, const char *key, uint64_t bytes,
                           const rm_weights_source *sources, uint32_t source_count,
                           const void *owner, uint64_t *pointer)
{
    (void)driver, (void)ordinal, (void)namespace_name, (void)id, (void)bytes, (void)sources,
        (void)source_count;
    *pointer = 0;
    return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                        "model key '%s': 'cuda-ipc' was not built into this plugin", key);
}

void rm_weights_unuse(const char *namespace_name, uint64_t id)
{
    (void)namespace_name, (void)id;
}

bool rm_weights_drop(const char *namespace_name, uint64_t id)
{
    (void)namespace_name, (void)id;
    return false;
}

bool rm_weights_has(const char *namespace_name, uint64_t id)
{
    (void)namespace_name, (void)id;
    return false;
}

uint32_t rm_weights_list(const char *namespace_name, bool all, uint64_t **ids)
{
    (void)namespace_name, (void)all;
    *ids = NULL;
    return 0;
}

#endif
