/* The heap backend: private memory of this process (mem_backend.h). It is
 * what an allocation falls back to when there is no shared memory, and
 * what an inline descriptor (the tensor's bytes following its descriptor)
 * is imported into. Nothing here crosses a process boundary by
 * descriptor: its blocks are never RM_TENSOR_SHAREABLE. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "mem_backend.h"

typedef struct heap_backend {
    rm_mem_backend base;
    rm_mem_env env;
} heap_backend;

static int32_t heap_create(const rm_mem_env *env, const rm_config *config,
                           rm_mem_backend **out)
{
    (void)config;
    heap_backend *heap = calloc(1, sizeof *heap);
    if (heap == NULL)
        return rm_error_set(env->error_owner, RM_E_NO_MEMORY, "no memory for tensor state");
    heap->base.ops = &rm_heap_backend;
    heap->env = *env;
    *out = &heap->base;
    return RM_OK;
}

static void heap_destroy(rm_mem_backend *backend, bool in_creator)
{
    (void)in_creator;
    free(backend);
}

/* A private block is the creating process's own: tensor_info reports it
 * as the owner (no pool coordinates otherwise). */
static void count_block(heap_backend *heap, rm_descriptor *where, rm_mem_block *block,
                        void *data)
{
    block->data = data;
    where->owner_pid = (uint32_t)heap->env.creator;
    heap->env.stats->heap_tensors++;
    heap->env.stats->heap_bytes += where->nbytes;
}

static int32_t heap_allocate(rm_mem_backend *backend, rm_descriptor *where, uint64_t alignment,
                             rm_mem_block *block)
{
    heap_backend *heap = (heap_backend *)backend;
    uint64_t bytes = where->nbytes ? where->nbytes : 1;
    bytes = (bytes + alignment - 1) / alignment * alignment;
    void *data = bytes <= SIZE_MAX ? aligned_alloc((size_t)alignment, (size_t)bytes) : NULL;
    if (data == NULL ||
        rm_tensors_charge(heap->env.tensors, where->session, where->nbytes) != RM_OK) {
        free(data);
        return rm_error_set(heap->env.error_owner, RM_E_NO_MEMORY,
                            "no heap memory for a tensor of %" PRIu64 " bytes", where->nbytes);
    }
    block->charged = where->nbytes;
    block->flags = RM_TENSOR_WRITABLE | RM_TENSOR_OWNED;
    count_block(heap, where, block, data);
    return RM_OK;
}

/* A private copy of the bytes after an inline descriptor, writable
 * whatever the import asked (nobody else sees it). Not charged to the
 * session: the context did not allocate it. */
static int32_t heap_import(rm_mem_backend *backend, rm_descriptor *d, const uint8_t *bytes,
                           uint64_t size, bool writable, rm_mem_block *block)
{
    (void)writable;
    heap_backend *heap = (heap_backend *)backend;
    if (size - RM_TENSOR_DESCRIPTOR_SIZE != d->nbytes)
        return rm_error_set(heap->env.error_owner, RM_E_INVALID_DESCRIPTOR,
                            "inline descriptor of %" PRIu64 " data bytes arrived with %" PRIu64,
                            d->nbytes, size - RM_TENSOR_DESCRIPTOR_SIZE);
    uint64_t bytes_needed = d->nbytes ? d->nbytes : 1;
    bytes_needed = (bytes_needed + RM_TENSOR_MIN_ALIGNMENT - 1) / RM_TENSOR_MIN_ALIGNMENT *
                   RM_TENSOR_MIN_ALIGNMENT;
    void *data = bytes_needed <= SIZE_MAX
                     ? aligned_alloc(RM_TENSOR_MIN_ALIGNMENT, (size_t)bytes_needed)
                     : NULL;
    if (data == NULL)
        return rm_error_set(heap->env.error_owner, RM_E_NO_MEMORY,
                            "no heap memory for an inline tensor of %" PRIu64 " bytes",
                            d->nbytes);
    memcpy(data, bytes + RM_TENSOR_DESCRIPTOR_SIZE, (size_t)d->nbytes);
    block->flags = RM_TENSOR_WRITABLE;
    count_block(heap, d, block, data);
    return RM_OK;
}

static void heap_release(rm_mem_backend *backend, rm_mem_block *block)
{
    heap_backend *heap = (heap_backend *)backend;
    rm_tensors_uncharge(heap->env.tensors, block->where.session, block->charged);
    heap->env.stats->heap_tensors--;
    heap->env.stats->heap_bytes -= block->where.nbytes;
    free(block->data);
}

static void heap_drop_in_child(rm_mem_backend *backend, rm_mem_block *block)
{
    (void)backend;
    free(block->data);
}

static rm_dl_device heap_describe_device(const rm_mem_backend *backend,
                                         const rm_mem_block *block)
{
    (void)backend;
    (void)block;
    return (rm_dl_device){.device_type = 1 /* kDLCPU */, .device_id = 0};
}

const rm_mem_ops rm_heap_backend = {
    .name = "heap",
    .descriptor_kind = RM_DESCRIPTOR_KIND_INLINE,
    .create = heap_create,
    .destroy = heap_destroy,
    .allocate = heap_allocate,
    .import = heap_import,
    .export = NULL, /* never called: no block is shareable (tensor_export_inline copies) */
    .release = heap_release,
    .drop_in_child = heap_drop_in_child,
    .describe_device = heap_describe_device,
};
