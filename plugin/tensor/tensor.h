/* Tensors of one context: handles, session quotas, descriptors and DLPack.
 * Where their bytes live is the memory backends' (mem_backend.h): the
 * context's shared-memory pool and the pools it imports from, or the heap. */
#ifndef RM_INTERNAL_TENSOR_H
#define RM_INTERNAL_TENSOR_H

#include <stdint.h>

#include "config.h"
#include "host.h"
#include "rm_plugin.h"

typedef struct rm_tensors rm_tensors;

/**
 * Creates the tensor state of a context (no segment yet: the pool is made
 * on the first shared allocation) and unlinks what dead owners left in the
 * namespace. `error_owner` is the context. RM_OK or RM_E_NO_MEMORY.
 */
int32_t rm_tensors_create(const rm_config *config, const rm_host *host,
                          const void *error_owner, rm_tensors **out);

/** Releases every handle, hold, mapping and the pool. In a child of fork()
 *  it frees only the child's private memory. NULL: no-op. */
void rm_tensors_destroy(rm_tensors *tensors);

int32_t rm_tensors_allocate(rm_tensors *tensors, const rm_tensor_spec *spec,
                            rm_tensor **out);
int32_t rm_tensors_info(rm_tensors *tensors, const rm_tensor *tensor, rm_tensor_info *out);
int32_t rm_tensors_export(rm_tensors *tensors, const rm_tensor *tensor, void *out,
                          uint64_t out_size);
int32_t rm_tensors_export_text(rm_tensors *tensors, const rm_tensor *tensor, char *out,
                               uint64_t out_size);
int32_t rm_tensors_export_inline(rm_tensors *tensors, const rm_tensor *tensor, void *out,
                                 uint64_t out_size, uint64_t *out_needed);
int32_t rm_tensors_import(rm_tensors *tensors, const void *descriptor, uint64_t size,
                          uint64_t flags, rm_tensor **out);
int32_t rm_tensors_import_text(rm_tensors *tensors, const char *text, uint64_t flags,
                               rm_tensor **out);
int32_t rm_tensors_release(rm_tensors *tensors, rm_tensor *tensor);
int32_t rm_tensors_to_dlpack(rm_tensors *tensors, rm_tensor *tensor,
                             rm_dl_managed_tensor **out);
int32_t rm_tensors_to_dlpack_versioned(rm_tensors *tensors, rm_tensor *tensor,
                                       rm_dl_managed_tensor_versioned **out);
int32_t rm_tensors_pool_stats(rm_tensors *tensors, rm_tensor_pool_stats *out);
int32_t rm_tensors_session_bytes(rm_tensors *tensors, uint64_t session, uint64_t *out);
int32_t rm_tensors_reclaim(rm_tensors *tensors, rm_reclaim_report *out);
int32_t rm_tensors_list(rm_tensors *tensors, rm_shm_pool_info *out, uint32_t row_size,
                        uint32_t capacity, uint32_t *count);

/* Device tensors (1.3). Without the cuda-ipc backend: wrap gives
 * RM_E_FEATURE_UNAVAILABLE or RM_E_FEATURE_DISABLED; record and wait have
 * nothing to order (RM_OK); cuda_info says why in out->status. */
int32_t rm_tensors_wrap_device(rm_tensors *tensors, const rm_tensor_spec *spec, void *pointer,
                               rm_device_released_fn released, void *user, rm_tensor **out);
int32_t rm_tensors_record(rm_tensors *tensors, rm_tensor *tensor, void *stream);
int32_t rm_tensors_wait(rm_tensors *tensors, rm_tensor *tensor, void *stream, uint64_t flags);
int32_t rm_tensors_cuda_info(rm_tensors *tensors, rm_cuda_info *out);

#endif
