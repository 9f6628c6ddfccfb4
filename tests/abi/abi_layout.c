/* Pins the size and every field offset of each published ABI struct (1.0,
 * LP64; 1.1, 1.2, 1.3 and 1.4 appended). A failure here means the ABI changed: only appending is allowed,
 * which changes sizes but never an existing offset; update a size only for
 * an append, and never an offset.
 *
 * The per-version sizes are the plugin's own (plugin/core/abi_sizes.h, checked
 * there against the end of each version's last field), so the plugin's
 * minimums and these pins cannot drift apart. The offsets below are
 * written out independently. A struct with a struct_size must be exactly
 * its newest published size: a field appended without publishing the new
 * version's sizes in abi_sizes.h fails here. */
#include <stddef.h>

#include "abi_sizes.h"
#include "rm_plugin.h"

#define PIN_SIZE(type, size) _Static_assert(sizeof(type) == (size), #type " size")
#define PIN_OFFSET(type, field, offset) \
    _Static_assert(offsetof(type, field) == (offset), #type "." #field " offset")

_Static_assert(sizeof(void *) == 8, "the pinned layout is the LP64 one");

PIN_SIZE(rm_host_services, RM_HOST_SERVICES_SIZE_V1_4);
PIN_OFFSET(rm_host_services, struct_size, 0);
PIN_OFFSET(rm_host_services, abi_version, 4);
PIN_OFFSET(rm_host_services, user, 8);
PIN_OFFSET(rm_host_services, log, 16);
PIN_OFFSET(rm_host_services, monotonic_ns, 24);

PIN_SIZE(rm_negotiate_request, RM_NEGOTIATE_REQUEST_SIZE_V1_4);
PIN_OFFSET(rm_negotiate_request, struct_size, 0);
PIN_OFFSET(rm_negotiate_request, abi_version, 4);
PIN_OFFSET(rm_negotiate_request, min_abi_version, 8);
PIN_OFFSET(rm_negotiate_request, max_abi_version, 12);
PIN_OFFSET(rm_negotiate_request, services, 16);
PIN_OFFSET(rm_negotiate_request, error_buffer, 24);
PIN_OFFSET(rm_negotiate_request, error_buffer_size, 32);
PIN_OFFSET(rm_negotiate_request, reserved, 40);

PIN_SIZE(rm_config_entry, 16);
PIN_OFFSET(rm_config_entry, key, 0);
PIN_OFFSET(rm_config_entry, value, 8);

PIN_SIZE(rm_context_options, RM_CONTEXT_OPTIONS_SIZE_V1_4);
PIN_OFFSET(rm_context_options, entries, 8);
PIN_OFFSET(rm_context_options, entry_count, 16);
PIN_OFFSET(rm_context_options, config_path, 24);
PIN_OFFSET(rm_context_options, flags, 32);
PIN_OFFSET(rm_context_options, reserved, 40);

PIN_SIZE(rm_context_info, RM_CONTEXT_INFO_SIZE_V1_4);
PIN_OFFSET(rm_context_info, negotiated_abi_version, 8);
PIN_OFFSET(rm_context_info, reserved0, 12);
PIN_OFFSET(rm_context_info, features_built, 16);
PIN_OFFSET(rm_context_info, features_enabled, 24);
PIN_OFFSET(rm_context_info, allocator, 32);
PIN_OFFSET(rm_context_info, allocator_arena, 128);
PIN_OFFSET(rm_context_info, reserved1, 132);

/* 1.0 ended at destroy_user (40 bytes); 1.2 appended the loader buffer,
 * 1.4 the device buffer. */
PIN_SIZE(rm_loaded_model, RM_LOADED_MODEL_SIZE_V1_4);
PIN_OFFSET(rm_loaded_model, model, 8);
PIN_OFFSET(rm_loaded_model, bytes, 16);
PIN_OFFSET(rm_loaded_model, destroy, 24);
PIN_OFFSET(rm_loaded_model, destroy_user, 32);
_Static_assert(offsetof(rm_loaded_model, destroy_user) + 8 == RM_LOADED_MODEL_SIZE_V1_0,
               "rm_loaded_model 1.0 end");
PIN_OFFSET(rm_loaded_model, alloc_buffer, 40);
PIN_OFFSET(rm_loaded_model, plugin_private, 48);
_Static_assert(offsetof(rm_loaded_model, plugin_private) + 8 == RM_LOADED_MODEL_SIZE_V1_3,
               "rm_loaded_model 1.3 end");
PIN_OFFSET(rm_loaded_model, alloc_device_buffer, 56);

/* 1.0 ended at last_used_ns (328 bytes); 1.2 appended the node fields,
 * 1.4 where the model lives. */
PIN_SIZE(rm_model_info, RM_MODEL_INFO_SIZE_V1_4);
PIN_OFFSET(rm_model_info, key, 8);
PIN_OFFSET(rm_model_info, device, 264);
PIN_OFFSET(rm_model_info, bytes, 296);
PIN_OFFSET(rm_model_info, refcount, 304);
PIN_OFFSET(rm_model_info, loaded_at_ns, 312);
PIN_OFFSET(rm_model_info, last_used_ns, 320);
_Static_assert(offsetof(rm_model_info, last_used_ns) + 8 == RM_MODEL_INFO_SIZE_V1_0,
               "rm_model_info 1.0 end");
PIN_OFFSET(rm_model_info, scope, 328);
PIN_OFFSET(rm_model_info, state, 332);
PIN_OFFSET(rm_model_info, holders, 336);
PIN_OFFSET(rm_model_info, loader_pid, 340);
PIN_OFFSET(rm_model_info, idle_ns, 344);
_Static_assert(offsetof(rm_model_info, idle_ns) + 8 == RM_MODEL_INFO_SIZE_V1_3,
               "rm_model_info 1.3 end");
PIN_OFFSET(rm_model_info, memory, 352);
PIN_OFFSET(rm_model_info, device_ordinal, 356);
PIN_OFFSET(rm_model_info, device_uuid, 360);
PIN_OFFSET(rm_model_info, device_bytes, 376);

/* 1.0 ended at hit_rate (104 bytes); 1.2 appended the node counters. */
PIN_SIZE(rm_registry_metrics, RM_REGISTRY_METRICS_SIZE_V1_4);
PIN_OFFSET(rm_registry_metrics, hits, 8);
PIN_OFFSET(rm_registry_metrics, misses, 16);
PIN_OFFSET(rm_registry_metrics, loads, 24);
PIN_OFFSET(rm_registry_metrics, load_failures, 32);
PIN_OFFSET(rm_registry_metrics, evictions, 40);
PIN_OFFSET(rm_registry_metrics, evictions_ttl, 48);
PIN_OFFSET(rm_registry_metrics, evictions_lru, 56);
PIN_OFFSET(rm_registry_metrics, evictions_explicit, 64);
PIN_OFFSET(rm_registry_metrics, models, 72);
PIN_OFFSET(rm_registry_metrics, bytes, 80);
PIN_OFFSET(rm_registry_metrics, over_budget, 88);
PIN_OFFSET(rm_registry_metrics, hit_rate, 96);
_Static_assert(offsetof(rm_registry_metrics, hit_rate) + 8 == RM_REGISTRY_METRICS_SIZE_V1_0,
               "rm_registry_metrics 1.0 end");
PIN_OFFSET(rm_registry_metrics, attaches, 104);
PIN_OFFSET(rm_registry_metrics, takeovers, 112);
PIN_OFFSET(rm_registry_metrics, dead_references, 120);
PIN_OFFSET(rm_registry_metrics, lock_recoveries, 128);

/* ---- 1.2: registry_reclaim's report ---- */
PIN_SIZE(rm_registry_reclaim_report, RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_4);
PIN_OFFSET(rm_registry_reclaim_report, struct_size, 0);
PIN_OFFSET(rm_registry_reclaim_report, abi_version, 4);
PIN_OFFSET(rm_registry_reclaim_report, dead_references, 8);
PIN_OFFSET(rm_registry_reclaim_report, loads_abandoned, 16);
PIN_OFFSET(rm_registry_reclaim_report, models_evicted, 24);
PIN_OFFSET(rm_registry_reclaim_report, segments_unlinked, 32);
PIN_OFFSET(rm_registry_reclaim_report, bytes_unlinked, 40);

/* 1.0 ended at registry_list (144 bytes); 1.1 appended the tensor
 * functions (256 bytes); 1.2 appended registry_reclaim; 1.3 the device
 * tensor functions (296 bytes); 1.4 model_to_dlpack. */
PIN_SIZE(rm_plugin_v1, RM_PLUGIN_V1_SIZE_V1_4);
PIN_OFFSET(rm_plugin_v1, struct_size, 0);
PIN_OFFSET(rm_plugin_v1, abi_version, 4);
PIN_OFFSET(rm_plugin_v1, features_built, 8);
PIN_OFFSET(rm_plugin_v1, name, 16);
PIN_OFFSET(rm_plugin_v1, version, 24);
PIN_OFFSET(rm_plugin_v1, error_name, 32);
PIN_OFFSET(rm_plugin_v1, strerror, 40);
PIN_OFFSET(rm_plugin_v1, context_create, 48);
PIN_OFFSET(rm_plugin_v1, context_destroy, 56);
PIN_OFFSET(rm_plugin_v1, context_last_error, 64);
PIN_OFFSET(rm_plugin_v1, context_info, 72);
PIN_OFFSET(rm_plugin_v1, config_get, 80);
PIN_OFFSET(rm_plugin_v1, config_key_at, 88);
PIN_OFFSET(rm_plugin_v1, model_key_normalize, 96);
PIN_OFFSET(rm_plugin_v1, model_get_or_load, 104);
PIN_OFFSET(rm_plugin_v1, model_release, 112);
PIN_OFFSET(rm_plugin_v1, model_evict, 120);
PIN_OFFSET(rm_plugin_v1, registry_metrics, 128);
PIN_OFFSET(rm_plugin_v1, registry_list, 136);
_Static_assert(offsetof(rm_plugin_v1, registry_list) + 8 == RM_PLUGIN_V1_SIZE_V1_0, "1.0 end");
PIN_OFFSET(rm_plugin_v1, tensor_allocate, 144);
PIN_OFFSET(rm_plugin_v1, tensor_info, 152);
PIN_OFFSET(rm_plugin_v1, tensor_export, 160);
PIN_OFFSET(rm_plugin_v1, tensor_export_text, 168);
PIN_OFFSET(rm_plugin_v1, tensor_export_inline, 176);
PIN_OFFSET(rm_plugin_v1, tensor_import, 184);
PIN_OFFSET(rm_plugin_v1, tensor_import_text, 192);
PIN_OFFSET(rm_plugin_v1, tensor_release, 200);
PIN_OFFSET(rm_plugin_v1, tensor_to_dlpack, 208);
PIN_OFFSET(rm_plugin_v1, tensor_to_dlpack_versioned, 216);
PIN_OFFSET(rm_plugin_v1, tensor_pool_stats, 224);
PIN_OFFSET(rm_plugin_v1, tensor_session_bytes, 232);
PIN_OFFSET(rm_plugin_v1, tensor_reclaim, 240);
PIN_OFFSET(rm_plugin_v1, shm_list, 248);
_Static_assert(offsetof(rm_plugin_v1, shm_list) + 8 == RM_PLUGIN_V1_SIZE_V1_1, "1.1 end");
PIN_OFFSET(rm_plugin_v1, registry_reclaim, 256);
_Static_assert(offsetof(rm_plugin_v1, registry_reclaim) + 8 == RM_PLUGIN_V1_SIZE_V1_2, "1.2 end");
PIN_OFFSET(rm_plugin_v1, tensor_wrap_device, 264);
PIN_OFFSET(rm_plugin_v1, tensor_record, 272);
PIN_OFFSET(rm_plugin_v1, tensor_wait, 280);
PIN_OFFSET(rm_plugin_v1, cuda_info, 288);
_Static_assert(offsetof(rm_plugin_v1, cuda_info) + 8 == RM_PLUGIN_V1_SIZE_V1_3, "1.3 end");
PIN_OFFSET(rm_plugin_v1, model_to_dlpack, 296);
_Static_assert(offsetof(rm_plugin_v1, model_to_dlpack) + 8 == RM_PLUGIN_V1_SIZE_V1_4, "1.4 end");

/* ---- 1.1: shared-memory tensors ---- */
PIN_SIZE(rm_dtype, 4);
PIN_OFFSET(rm_dtype, code, 0);
PIN_OFFSET(rm_dtype, bits, 1);
PIN_OFFSET(rm_dtype, lanes, 2);

PIN_SIZE(rm_tensor_spec, RM_TENSOR_SPEC_SIZE_V1_4);
PIN_OFFSET(rm_tensor_spec, dtype, 8);
PIN_OFFSET(rm_tensor_spec, ndim, 12);
PIN_OFFSET(rm_tensor_spec, shape, 16);
PIN_OFFSET(rm_tensor_spec, strides, 80);
PIN_OFFSET(rm_tensor_spec, alignment, 144);
PIN_OFFSET(rm_tensor_spec, session, 152);
PIN_OFFSET(rm_tensor_spec, flags, 160);
PIN_OFFSET(rm_tensor_spec, reserved, 168);
PIN_OFFSET(rm_tensor_spec, device, 200);

PIN_SIZE(rm_tensor_info, RM_TENSOR_INFO_SIZE_V1_4);
PIN_OFFSET(rm_tensor_info, data, 8);
PIN_OFFSET(rm_tensor_info, nbytes, 16);
PIN_OFFSET(rm_tensor_info, dtype, 24);
PIN_OFFSET(rm_tensor_info, ndim, 28);
PIN_OFFSET(rm_tensor_info, shape, 32);
PIN_OFFSET(rm_tensor_info, strides, 96);
PIN_OFFSET(rm_tensor_info, session, 160);
PIN_OFFSET(rm_tensor_info, flags, 168);
PIN_OFFSET(rm_tensor_info, pool_id, 176);
PIN_OFFSET(rm_tensor_info, owner_pid, 184);
PIN_OFFSET(rm_tensor_info, reserved0, 188);
PIN_OFFSET(rm_tensor_info, device, 192);
PIN_OFFSET(rm_tensor_info, device_uuid, 200);

PIN_SIZE(rm_tensor_pool_stats, RM_TENSOR_POOL_STATS_SIZE_V1_4);
PIN_OFFSET(rm_tensor_pool_stats, pool_name, 8);
PIN_OFFSET(rm_tensor_pool_stats, pool_id, 104);
PIN_OFFSET(rm_tensor_pool_stats, pool_bytes, 112);
PIN_OFFSET(rm_tensor_pool_stats, live_tensors, 120);
PIN_OFFSET(rm_tensor_pool_stats, live_bytes, 128);
PIN_OFFSET(rm_tensor_pool_stats, committed_bytes, 136);
PIN_OFFSET(rm_tensor_pool_stats, heap_tensors, 144);
PIN_OFFSET(rm_tensor_pool_stats, heap_bytes, 152);
PIN_OFFSET(rm_tensor_pool_stats, allocations, 160);
PIN_OFFSET(rm_tensor_pool_stats, fallbacks, 168);
PIN_OFFSET(rm_tensor_pool_stats, frees, 176);
PIN_OFFSET(rm_tensor_pool_stats, remote_releases, 184);
PIN_OFFSET(rm_tensor_pool_stats, holders, 192);
PIN_OFFSET(rm_tensor_pool_stats, dead_holders_reclaimed, 200);
PIN_OFFSET(rm_tensor_pool_stats, holds_reclaimed, 208);
PIN_OFFSET(rm_tensor_pool_stats, imports, 216);
PIN_OFFSET(rm_tensor_pool_stats, pools_mapped, 224);
PIN_OFFSET(rm_tensor_pool_stats, startup_segments_unlinked, 232);
PIN_OFFSET(rm_tensor_pool_stats, startup_bytes_unlinked, 240);
PIN_OFFSET(rm_tensor_pool_stats, cuda_tensors, 248);
PIN_OFFSET(rm_tensor_pool_stats, cuda_bytes, 256);
PIN_OFFSET(rm_tensor_pool_stats, cuda_blocks, 264);
PIN_OFFSET(rm_tensor_pool_stats, cuda_block_bytes, 272);
PIN_OFFSET(rm_tensor_pool_stats, cuda_handles_opened, 280);
PIN_OFFSET(rm_tensor_pool_stats, cuda_handles_open, 288);
PIN_OFFSET(rm_tensor_pool_stats, cuda_handle_cache_hits, 296);
PIN_OFFSET(rm_tensor_pool_stats, cuda_blocks_orphaned, 304);

PIN_SIZE(rm_reclaim_report, RM_RECLAIM_REPORT_SIZE_V1_4);
PIN_OFFSET(rm_reclaim_report, dead_holders, 8);
PIN_OFFSET(rm_reclaim_report, holds_dropped, 16);
PIN_OFFSET(rm_reclaim_report, tensors_freed, 24);
PIN_OFFSET(rm_reclaim_report, segments_unlinked, 32);
PIN_OFFSET(rm_reclaim_report, bytes_unlinked, 40);
PIN_OFFSET(rm_reclaim_report, cuda_handles_closed, 48);
PIN_OFFSET(rm_reclaim_report, cuda_blocks_freed, 56);

PIN_SIZE(rm_shm_pool_info, RM_SHM_POOL_INFO_SIZE_V1_4);
PIN_OFFSET(rm_shm_pool_info, name, 8);
PIN_OFFSET(rm_shm_pool_info, pool_id, 104);
PIN_OFFSET(rm_shm_pool_info, owner_pid, 112);
PIN_OFFSET(rm_shm_pool_info, owner_alive, 116);
PIN_OFFSET(rm_shm_pool_info, owner_start_time, 120);
PIN_OFFSET(rm_shm_pool_info, pool_bytes, 128);
PIN_OFFSET(rm_shm_pool_info, committed_bytes, 136);
PIN_OFFSET(rm_shm_pool_info, live_tensors, 144);
PIN_OFFSET(rm_shm_pool_info, live_bytes, 152);
PIN_OFFSET(rm_shm_pool_info, holders, 160);
PIN_OFFSET(rm_shm_pool_info, readable, 164);
PIN_OFFSET(rm_shm_pool_info, memory, 168);
PIN_OFFSET(rm_shm_pool_info, device_blocks, 172);

PIN_SIZE(rm_cuda_device, 72);
PIN_OFFSET(rm_cuda_device, ordinal, 0);
PIN_OFFSET(rm_cuda_device, uuid, 8);
PIN_OFFSET(rm_cuda_device, uuid_text, 24);

PIN_SIZE(rm_cuda_info, RM_CUDA_INFO_SIZE_V1_4);
PIN_OFFSET(rm_cuda_info, status, 8);
PIN_OFFSET(rm_cuda_info, driver_version, 12);
PIN_OFFSET(rm_cuda_info, device_count, 16);
PIN_OFFSET(rm_cuda_info, library, 24);
PIN_OFFSET(rm_cuda_info, message, 280);
PIN_OFFSET(rm_cuda_info, devices, 792);

PIN_SIZE(rm_dl_device, 8);

PIN_SIZE(rm_dl_tensor, 48);

PIN_SIZE(rm_dl_managed_tensor, 64);

PIN_SIZE(rm_dl_pack_version, 8);

PIN_SIZE(rm_dl_managed_tensor_versioned, 80);
PIN_OFFSET(rm_dl_managed_tensor_versioned, version, 0);
PIN_OFFSET(rm_dl_managed_tensor_versioned, manager_ctx, 8);
PIN_OFFSET(rm_dl_managed_tensor_versioned, deleter, 16);
PIN_OFFSET(rm_dl_managed_tensor_versioned, flags, 24);
PIN_OFFSET(rm_dl_managed_tensor_versioned, dl_tensor, 32);

/* Error codes and feature bits are part of the ABI too. */
_Static_assert(RM_E_INVALID_ARGUMENT == -1 && RM_E_SHUTTING_DOWN == -19, "error codes");
_Static_assert(RM_E_NOT_SHAREABLE == -20 && RM_E_INVALID_DESCRIPTOR == -21 &&
                   RM_E_STALE_DESCRIPTOR == -22 && RM_E_QUOTA_EXCEEDED == -23,
               "1.1 error codes");
_Static_assert(RM_E_CORRUPT_STATE == -24, "1.2 error codes");
_Static_assert(RM_REGISTRY_SCOPE_PROCESS == 0 && RM_REGISTRY_SCOPE_NODE == 1 &&
                   RM_MODEL_STATE_READY == 0 && RM_MODEL_STATE_LOADING == 1,
               "1.2 scope and state values");
_Static_assert(RM_NODE_TAKEOVER_POLL_MS == 100 && RM_NODE_MAX_HOLDER_PROCESSES == 64,
               "1.2 node limits");
_Static_assert(RM_E_DEVICE_UNAVAILABLE == -25, "1.3 error codes");
_Static_assert(RM_MEMORY_SHM == 1 && RM_MEMORY_CUDA == 2 && RM_TENSOR_WAIT_HOST == 1 &&
                   RM_CUDA_INFO_MAX_DEVICES == 16,
               "1.3 values");
_Static_assert(RM_MODEL_MEMORY_HOST == 0, "1.4 values");
_Static_assert(RM_ABI_MAJOR == 1 && RM_ABI_MINOR == 4, "this file pins 1.4");
_Static_assert(RM_TENSOR_MAX_DIMS == 8 && RM_TENSOR_MAX_HOLDERS == 31 &&
                   RM_TENSOR_DESCRIPTOR_SIZE == 200 && RM_TENSOR_DESCRIPTOR_TEXT_MAX == 280,
               "tensor limits");
_Static_assert(RM_FEATURE_MODEL_REGISTRY == 1 && RM_FEATURE_SHARED_MEMORY == 2 &&
                   RM_FEATURE_CUDA_IPC == 4, "feature bits");
_Static_assert(RM_MODEL_KEY_MAX == 256, "key limit");

int main(void)
{
    return 0;
}
