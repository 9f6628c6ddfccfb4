/* A context: one configured instance of the plugin, and the vtable
 * functions that act on it. */
#ifndef RM_INTERNAL_CONTEXT_H
#define RM_INTERNAL_CONTEXT_H

#include <stdint.h>

#include "rm_plugin.h"

int32_t rm_context_create(const rm_context_options *options, rm_context **out_context);
void rm_context_destroy(rm_context *context);
const char *rm_context_last_error(const rm_context *context);
int32_t rm_context_info_get(const rm_context *context, rm_context_info *out);
int32_t rm_context_config_get(const rm_context *context, const char *key, char *buffer,
                              uint64_t buffer_size, uint64_t *out_needed);
int32_t rm_context_model_key_normalize(const char *key, char *out, uint64_t out_size);
int32_t rm_context_model_get_or_load(rm_context *context, const char *key,
                                     rm_model_loader_fn loader, void *loader_user,
                                     rm_model_handle **out_handle, void **out_model);
int32_t rm_context_model_release(rm_context *context, rm_model_handle *handle);
int32_t rm_context_model_to_dlpack(rm_context *context, rm_model_handle *handle,
                                   rm_dl_managed_tensor_versioned **out);
int32_t rm_context_model_evict(rm_context *context, const char *key);
int32_t rm_context_registry_metrics(rm_context *context, rm_registry_metrics *out);
int32_t rm_context_registry_list(rm_context *context, rm_model_info *out,
                                 uint32_t info_struct_size, uint32_t capacity,
                                 uint32_t *out_count);


/* 1.1 */
int32_t rm_context_tensor_allocate(rm_context *context, const rm_tensor_spec *spec,
                                   rm_tensor **out_tensor);
int32_t rm_context_tensor_info(rm_context *context, const rm_tensor *tensor,
                               rm_tensor_info *out);
int32_t rm_context_tensor_export(rm_context *context, const rm_tensor *tensor, void *out,
                                 uint64_t out_size);
int32_t rm_context_tensor_export_text(rm_context *context, const rm_tensor *tensor, char *out,
                                      uint64_t out_size);
int32_t rm_context_tensor_export_inline(rm_context *context, const rm_tensor *tensor,
                                        void *out, uint64_t out_size, uint64_t *out_needed);
int32_t rm_context_tensor_import(rm_context *context, const void *descriptor, uint64_t size,
                                 uint64_t flags, rm_tensor **out_tensor);
int32_t rm_context_tensor_import_text(rm_context *context, const char *text, uint64_t flags,
                                      rm_tensor **out_tensor);
int32_t rm_context_tensor_release(rm_context *context, rm_tensor *tensor);
int32_t rm_context_tensor_to_dlpack(rm_context *context, rm_tensor *tensor,
                                    rm_dl_managed_tensor **out);
int32_t rm_context_tensor_to_dlpack_versioned(rm_context *context, rm_tensor *tensor,
                                              rm_dl_managed_tensor_versioned **out);
int32_t rm_context_tensor_pool_stats(rm_context *context, rm_tensor_pool_stats *out);
int32_t rm_context_tensor_session_bytes(rm_context *context, uint64_t session,
                                        uint64_t *out_bytes);
int32_t rm_context_tensor_reclaim(rm_context *context, rm_reclaim_report *out);
int32_t rm_context_shm_list(rm_context *context, rm_shm_pool_info *out,
                            uint32_t info_struct_size, uint32_t capacity, uint32_t *out_count);

/* 1.2 */
int32_t rm_context_registry_reclaim(rm_context *context, rm_registry_reclaim_report *out);

/* 1.3 */
int32_t rm_context_tensor_wrap_device(rm_context *context, const rm_tensor_spec *spec,
                                      void *device_pointer, rm_device_released_fn released,
                                      void *released_user, rm_tensor **out_tensor);
int32_t rm_context_tensor_record(rm_context *context, rm_tensor *tensor, void *stream);
int32_t rm_context_tensor_wait(rm_context *context, rm_tensor *tensor, void *stream,
                               uint64_t flags);
int32_t rm_context_cuda_info(rm_context *context, rm_cuda_info *out);

#endif
