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
int32_t rm_context_model_evict(rm_context *context, const char *key);
int32_t rm_context_registry_metrics(rm_context *context, rm_registry_metrics *out);
int32_t rm_context_registry_list(rm_context *context, rm_model_info *out,
                                 uint32_t info_struct_size, uint32_t capacity,
                                 uint32_t *out_count);

#endif
