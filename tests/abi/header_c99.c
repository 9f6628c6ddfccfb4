/* The public header compiles alone, as C99 with -pedantic (see meson). */
#include "rm_plugin.h"

int main(void)
{
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    rm_loaded_model loaded = RM_STRUCT_INIT(rm_loaded_model);
    return RM_PLUGIN_HAS((const rm_plugin_v1 *)0, registry_list) +
           RM_PLUGIN_HAS((const rm_plugin_v1 *)0, model_to_dlpack) +
           RM_LOADED_MODEL_HAS_DEVICE_BUFFER(&loaded) +
           (int)(request.struct_size != sizeof request);
}
