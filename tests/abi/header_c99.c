/* The public header compiles alone, as C99 with -pedantic (see meson). */
#include "rm_plugin.h"

int main(void)
{
    rm_negotiate_request request = RM_STRUCT_INIT(rm_negotiate_request);
    return RM_PLUGIN_HAS((const rm_plugin_v1 *)0, registry_list) +
           (int)(request.struct_size != sizeof request);
}
