// The public header compiles alone as C++ and links with C linkage.
#include "rm_plugin.h"

static_assert(sizeof(rm_plugin_v1) == 304 && offsetof(rm_plugin_v1, registry_reclaim) == 256 &&
                  offsetof(rm_plugin_v1, cuda_info) == 288 &&
                  offsetof(rm_plugin_v1, model_to_dlpack) == 296,
              "same layout from C++");
static_assert(sizeof(rm_tensor_spec) == 216 && sizeof(rm_tensor_info) == 216 &&
                  sizeof(rm_dl_managed_tensor_versioned) == 80,
              "1.1 structs (1.3 sizes): same layout from C++");
static_assert(sizeof(rm_cuda_info) == 1944 && sizeof(rm_tensor_pool_stats) == 312 &&
                  sizeof(rm_reclaim_report) == 64 && sizeof(rm_shm_pool_info) == 176,
              "1.3 structs: same layout from C++");
static_assert(sizeof(rm_registry_metrics) == 136 && sizeof(rm_registry_reclaim_report) == 48,
              "1.2 structs: same layout from C++");
static_assert(sizeof(rm_loaded_model) == 64 &&
                  offsetof(rm_loaded_model, alloc_device_buffer) == 56 &&
                  sizeof(rm_model_info) == 384 && offsetof(rm_model_info, memory) == 352 &&
                  offsetof(rm_model_info, device_uuid) == 360 &&
                  offsetof(rm_model_info, device_bytes) == 376,
              "1.2 structs (1.4 sizes): same layout from C++");

extern "C" int32_t rm_plugin_negotiate(const rm_negotiate_request *, uint32_t *,
                                       const rm_plugin_v1 **);

int main()
{
    rm_plugin_negotiate_fn negotiate = nullptr;
    const rm_plugin_v1 *vt = nullptr;
    rm_loaded_model loaded = {};
    loaded.struct_size = sizeof loaded;
    return (negotiate != nullptr) + RM_PLUGIN_HAS(vt, model_evict) + RM_PLUGIN_HAS(vt, shm_list) +
           RM_PLUGIN_HAS(vt, registry_reclaim) + RM_PLUGIN_HAS(vt, cuda_info) +
           RM_PLUGIN_HAS(vt, model_to_dlpack) + RM_LOADED_MODEL_HAS_DEVICE_BUFFER(&loaded) +
           (RM_ABI_VERSION_MAJOR(RM_ABI_VERSION_CURRENT) != 1);
}
