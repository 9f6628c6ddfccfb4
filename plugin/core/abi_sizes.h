/* The published size of every ABI struct that has a struct_size (and of the
 * vtable), per ABI version: RM_<STRUCT>_SIZE_V<major>_<minor>.
 *
 * Why literals: a struct only grows, so sizeof() follows the header, not
 * the ABI. A minimum written as sizeof(rm_tensor_info) would rise with the
 * first field a later version appends, and every host built against the
 * older header would start getting RM_E_STRUCT_SIZE. The sizes a version
 * published never change; they are written down here once (as Linux does
 * with CLONE_ARGS_SIZE_VER0 for copy_struct_from_user()), and each is
 * checked below against the end of the last field of its version, so a
 * wrong number cannot compile. The plugin takes its minimums from here, and
 * tests/abi and the integration tests pass these sizes as old hosts would.
 *
 * A new minor version adds one line per struct (the size of each struct at
 * that version, even when unchanged) and its checks; the guard at the end
 * fails the build until it does.
 *
 * Values are size_t, like sizeof. LP64 only: a pointer-holding struct has
 * other sizes elsewhere, and tests/abi pins the LP64 layout. */
#ifndef RM_INTERNAL_ABI_SIZES_H
#define RM_INTERNAL_ABI_SIZES_H

#include <stddef.h>
#include <stdint.h>

#include "rm_plugin.h"

_Static_assert(sizeof(void *) == 8 && _Alignof(uint64_t) == 8,
               "the published sizes are the LP64 ones");

/* ---- 1.0 ---------------------------------------------------------------- */
#define RM_HOST_SERVICES_SIZE_V1_0 ((size_t)32)
#define RM_NEGOTIATE_REQUEST_SIZE_V1_0 ((size_t)72)
#define RM_CONTEXT_OPTIONS_SIZE_V1_0 ((size_t)72)
#define RM_CONTEXT_INFO_SIZE_V1_0 ((size_t)136)
#define RM_LOADED_MODEL_SIZE_V1_0 ((size_t)40)
#define RM_MODEL_INFO_SIZE_V1_0 ((size_t)328)
#define RM_REGISTRY_METRICS_SIZE_V1_0 ((size_t)104)
#define RM_PLUGIN_V1_SIZE_V1_0 ((size_t)144)

/* ---- 1.1: the tensor structs appear; the vtable grows ------------------- */
#define RM_HOST_SERVICES_SIZE_V1_1 ((size_t)32)
#define RM_NEGOTIATE_REQUEST_SIZE_V1_1 ((size_t)72)
#define RM_CONTEXT_OPTIONS_SIZE_V1_1 ((size_t)72)
#define RM_CONTEXT_INFO_SIZE_V1_1 ((size_t)136)
#define RM_LOADED_MODEL_SIZE_V1_1 ((size_t)40)
#define RM_MODEL_INFO_SIZE_V1_1 ((size_t)328)
#define RM_REGISTRY_METRICS_SIZE_V1_1 ((size_t)104)
#define RM_TENSOR_SPEC_SIZE_V1_1 ((size_t)200)
#define RM_TENSOR_INFO_SIZE_V1_1 ((size_t)192)
#define RM_TENSOR_POOL_STATS_SIZE_V1_1 ((size_t)248)
#define RM_RECLAIM_REPORT_SIZE_V1_1 ((size_t)48)
#define RM_SHM_POOL_INFO_SIZE_V1_1 ((size_t)168)
#define RM_PLUGIN_V1_SIZE_V1_1 ((size_t)256)

/* ---- 1.2: loader buffers and node rows/counters; the reclaim report ---- */
#define RM_HOST_SERVICES_SIZE_V1_2 ((size_t)32)
#define RM_NEGOTIATE_REQUEST_SIZE_V1_2 ((size_t)72)
#define RM_CONTEXT_OPTIONS_SIZE_V1_2 ((size_t)72)
#define RM_CONTEXT_INFO_SIZE_V1_2 ((size_t)136)
#define RM_LOADED_MODEL_SIZE_V1_2 ((size_t)56)
#define RM_MODEL_INFO_SIZE_V1_2 ((size_t)352)
#define RM_REGISTRY_METRICS_SIZE_V1_2 ((size_t)136)
#define RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_2 ((size_t)48)
#define RM_TENSOR_SPEC_SIZE_V1_2 ((size_t)200)
#define RM_TENSOR_INFO_SIZE_V1_2 ((size_t)192)
#define RM_TENSOR_POOL_STATS_SIZE_V1_2 ((size_t)248)
#define RM_RECLAIM_REPORT_SIZE_V1_2 ((size_t)48)
#define RM_SHM_POOL_INFO_SIZE_V1_2 ((size_t)168)
#define RM_PLUGIN_V1_SIZE_V1_2 ((size_t)264)

/* ---- 1.3: device tensors ------------------------------------------------- */
#define RM_HOST_SERVICES_SIZE_V1_3 ((size_t)32)
#define RM_NEGOTIATE_REQUEST_SIZE_V1_3 ((size_t)72)
#define RM_CONTEXT_OPTIONS_SIZE_V1_3 ((size_t)72)
#define RM_CONTEXT_INFO_SIZE_V1_3 ((size_t)136)
#define RM_LOADED_MODEL_SIZE_V1_3 ((size_t)56)
#define RM_MODEL_INFO_SIZE_V1_3 ((size_t)352)
#define RM_REGISTRY_METRICS_SIZE_V1_3 ((size_t)136)
#define RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_3 ((size_t)48)
#define RM_TENSOR_SPEC_SIZE_V1_3 ((size_t)216)
#define RM_TENSOR_INFO_SIZE_V1_3 ((size_t)216)
#define RM_TENSOR_POOL_STATS_SIZE_V1_3 ((size_t)312)
#define RM_RECLAIM_REPORT_SIZE_V1_3 ((size_t)64)
#define RM_SHM_POOL_INFO_SIZE_V1_3 ((size_t)176)
#define RM_CUDA_INFO_SIZE_V1_3 ((size_t)1944)
#define RM_PLUGIN_V1_SIZE_V1_3 ((size_t)296)

/* ---- 1.4: GPU weights ---------------------------------------------------- */
#define RM_HOST_SERVICES_SIZE_V1_4 ((size_t)32)
#define RM_NEGOTIATE_REQUEST_SIZE_V1_4 ((size_t)72)
#define RM_CONTEXT_OPTIONS_SIZE_V1_4 ((size_t)72)
#define RM_CONTEXT_INFO_SIZE_V1_4 ((size_t)136)
#define RM_LOADED_MODEL_SIZE_V1_4 ((size_t)64)
#define RM_MODEL_INFO_SIZE_V1_4 ((size_t)384)
#define RM_REGISTRY_METRICS_SIZE_V1_4 ((size_t)136)
#define RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_4 ((size_t)48)
#define RM_TENSOR_SPEC_SIZE_V1_4 ((size_t)216)
#define RM_TENSOR_INFO_SIZE_V1_4 ((size_t)216)
#define RM_TENSOR_POOL_STATS_SIZE_V1_4 ((size_t)312)
#define RM_RECLAIM_REPORT_SIZE_V1_4 ((size_t)64)
#define RM_SHM_POOL_INFO_SIZE_V1_4 ((size_t)176)
#define RM_CUDA_INFO_SIZE_V1_4 ((size_t)1944)
#define RM_PLUGIN_V1_SIZE_V1_4 ((size_t)304)

/* ---- checks ------------------------------------------------------------- */

/* What sizeof() gave a host whose header ended `type` at `field`: the end
 * of that field rounded up to the struct's alignment. That alignment is 8
 * for every struct here: each has a uint64_t or a pointer among the fields
 * of its first version, and nothing aligned more strictly. (A later field
 * that is would make sizeof() round further; the checks below and
 * tests/abi's PIN_SIZE would then fail to compile, not pass wrongly.) */
#define RM_ABI_FIELD_END_(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
#define RM_ABI_SIZE_ENDING_AT_(type, field) ((RM_ABI_FIELD_END_(type, field) + 7u) & ~(size_t)7u)
#define RM_ABI_CHECK_SIZE_(size, type, field)                                   \
    _Static_assert((size) == RM_ABI_SIZE_ENDING_AT_(type, field),              \
                   #size " is not where " #type " ended (at " #field ")")

RM_ABI_CHECK_SIZE_(RM_HOST_SERVICES_SIZE_V1_0, rm_host_services, monotonic_ns);
RM_ABI_CHECK_SIZE_(RM_NEGOTIATE_REQUEST_SIZE_V1_0, rm_negotiate_request, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_OPTIONS_SIZE_V1_0, rm_context_options, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_INFO_SIZE_V1_0, rm_context_info, reserved1);
RM_ABI_CHECK_SIZE_(RM_LOADED_MODEL_SIZE_V1_0, rm_loaded_model, destroy_user);
RM_ABI_CHECK_SIZE_(RM_MODEL_INFO_SIZE_V1_0, rm_model_info, last_used_ns);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_METRICS_SIZE_V1_0, rm_registry_metrics, hit_rate);
RM_ABI_CHECK_SIZE_(RM_PLUGIN_V1_SIZE_V1_0, rm_plugin_v1, registry_list);

RM_ABI_CHECK_SIZE_(RM_HOST_SERVICES_SIZE_V1_1, rm_host_services, monotonic_ns);
RM_ABI_CHECK_SIZE_(RM_NEGOTIATE_REQUEST_SIZE_V1_1, rm_negotiate_request, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_OPTIONS_SIZE_V1_1, rm_context_options, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_INFO_SIZE_V1_1, rm_context_info, reserved1);
RM_ABI_CHECK_SIZE_(RM_LOADED_MODEL_SIZE_V1_1, rm_loaded_model, destroy_user);
RM_ABI_CHECK_SIZE_(RM_MODEL_INFO_SIZE_V1_1, rm_model_info, last_used_ns);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_METRICS_SIZE_V1_1, rm_registry_metrics, hit_rate);
RM_ABI_CHECK_SIZE_(RM_TENSOR_SPEC_SIZE_V1_1, rm_tensor_spec, reserved);
RM_ABI_CHECK_SIZE_(RM_TENSOR_INFO_SIZE_V1_1, rm_tensor_info, reserved0);
RM_ABI_CHECK_SIZE_(RM_TENSOR_POOL_STATS_SIZE_V1_1, rm_tensor_pool_stats, startup_bytes_unlinked);
RM_ABI_CHECK_SIZE_(RM_RECLAIM_REPORT_SIZE_V1_1, rm_reclaim_report, bytes_unlinked);
RM_ABI_CHECK_SIZE_(RM_SHM_POOL_INFO_SIZE_V1_1, rm_shm_pool_info, readable);
RM_ABI_CHECK_SIZE_(RM_PLUGIN_V1_SIZE_V1_1, rm_plugin_v1, shm_list);

RM_ABI_CHECK_SIZE_(RM_HOST_SERVICES_SIZE_V1_2, rm_host_services, monotonic_ns);
RM_ABI_CHECK_SIZE_(RM_NEGOTIATE_REQUEST_SIZE_V1_2, rm_negotiate_request, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_OPTIONS_SIZE_V1_2, rm_context_options, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_INFO_SIZE_V1_2, rm_context_info, reserved1);
RM_ABI_CHECK_SIZE_(RM_LOADED_MODEL_SIZE_V1_2, rm_loaded_model, plugin_private);
RM_ABI_CHECK_SIZE_(RM_MODEL_INFO_SIZE_V1_2, rm_model_info, idle_ns);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_METRICS_SIZE_V1_2, rm_registry_metrics, lock_recoveries);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_2, rm_registry_reclaim_report,
                   bytes_unlinked);
RM_ABI_CHECK_SIZE_(RM_TENSOR_SPEC_SIZE_V1_2, rm_tensor_spec, reserved);
RM_ABI_CHECK_SIZE_(RM_TENSOR_INFO_SIZE_V1_2, rm_tensor_info, reserved0);
RM_ABI_CHECK_SIZE_(RM_TENSOR_POOL_STATS_SIZE_V1_2, rm_tensor_pool_stats, startup_bytes_unlinked);
RM_ABI_CHECK_SIZE_(RM_RECLAIM_REPORT_SIZE_V1_2, rm_reclaim_report, bytes_unlinked);
RM_ABI_CHECK_SIZE_(RM_SHM_POOL_INFO_SIZE_V1_2, rm_shm_pool_info, readable);
RM_ABI_CHECK_SIZE_(RM_PLUGIN_V1_SIZE_V1_2, rm_plugin_v1, registry_reclaim);

RM_ABI_CHECK_SIZE_(RM_HOST_SERVICES_SIZE_V1_3, rm_host_services, monotonic_ns);
RM_ABI_CHECK_SIZE_(RM_NEGOTIATE_REQUEST_SIZE_V1_3, rm_negotiate_request, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_OPTIONS_SIZE_V1_3, rm_context_options, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_INFO_SIZE_V1_3, rm_context_info, reserved1);
RM_ABI_CHECK_SIZE_(RM_LOADED_MODEL_SIZE_V1_3, rm_loaded_model, plugin_private);
RM_ABI_CHECK_SIZE_(RM_MODEL_INFO_SIZE_V1_3, rm_model_info, idle_ns);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_METRICS_SIZE_V1_3, rm_registry_metrics, lock_recoveries);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_3, rm_registry_reclaim_report,
                   bytes_unlinked);
RM_ABI_CHECK_SIZE_(RM_TENSOR_SPEC_SIZE_V1_3, rm_tensor_spec, device);
RM_ABI_CHECK_SIZE_(RM_TENSOR_INFO_SIZE_V1_3, rm_tensor_info, device_uuid);
RM_ABI_CHECK_SIZE_(RM_TENSOR_POOL_STATS_SIZE_V1_3, rm_tensor_pool_stats, cuda_blocks_orphaned);
RM_ABI_CHECK_SIZE_(RM_RECLAIM_REPORT_SIZE_V1_3, rm_reclaim_report, cuda_blocks_freed);
RM_ABI_CHECK_SIZE_(RM_SHM_POOL_INFO_SIZE_V1_3, rm_shm_pool_info, device_blocks);
RM_ABI_CHECK_SIZE_(RM_CUDA_INFO_SIZE_V1_3, rm_cuda_info, devices);
RM_ABI_CHECK_SIZE_(RM_PLUGIN_V1_SIZE_V1_3, rm_plugin_v1, cuda_info);

RM_ABI_CHECK_SIZE_(RM_HOST_SERVICES_SIZE_V1_4, rm_host_services, monotonic_ns);
RM_ABI_CHECK_SIZE_(RM_NEGOTIATE_REQUEST_SIZE_V1_4, rm_negotiate_request, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_OPTIONS_SIZE_V1_4, rm_context_options, reserved);
RM_ABI_CHECK_SIZE_(RM_CONTEXT_INFO_SIZE_V1_4, rm_context_info, reserved1);
RM_ABI_CHECK_SIZE_(RM_LOADED_MODEL_SIZE_V1_4, rm_loaded_model, alloc_device_buffer);
RM_ABI_CHECK_SIZE_(RM_MODEL_INFO_SIZE_V1_4, rm_model_info, device_bytes);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_METRICS_SIZE_V1_4, rm_registry_metrics, lock_recoveries);
RM_ABI_CHECK_SIZE_(RM_REGISTRY_RECLAIM_REPORT_SIZE_V1_4, rm_registry_reclaim_report,
                   bytes_unlinked);
RM_ABI_CHECK_SIZE_(RM_TENSOR_SPEC_SIZE_V1_4, rm_tensor_spec, device);
RM_ABI_CHECK_SIZE_(RM_TENSOR_INFO_SIZE_V1_4, rm_tensor_info, device_uuid);
RM_ABI_CHECK_SIZE_(RM_TENSOR_POOL_STATS_SIZE_V1_4, rm_tensor_pool_stats, cuda_blocks_orphaned);
RM_ABI_CHECK_SIZE_(RM_RECLAIM_REPORT_SIZE_V1_4, rm_reclaim_report, cuda_blocks_freed);
RM_ABI_CHECK_SIZE_(RM_SHM_POOL_INFO_SIZE_V1_4, rm_shm_pool_info, device_blocks);
RM_ABI_CHECK_SIZE_(RM_CUDA_INFO_SIZE_V1_4, rm_cuda_info, devices);
RM_ABI_CHECK_SIZE_(RM_PLUGIN_V1_SIZE_V1_4, rm_plugin_v1, model_to_dlpack);

/* A header of a newer minor has sizes this table lacks: publishing it
 * without them would leave its structs' sizes to sizeof() again. */
_Static_assert(RM_ABI_VERSION_CURRENT == RM_ABI_VERSION(1, 4),
               "abi_sizes.h lists the sizes up to ABI 1.4: add those of the new version");

#endif
