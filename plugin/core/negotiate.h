/* Load-time negotiation: the exported entry point and the v1 vtable. */
#ifndef RM_INTERNAL_NEGOTIATE_H
#define RM_INTERNAL_NEGOTIATE_H

#include <stdint.h>

#include "rm_plugin.h"

/** Oldest and newest ABI versions this build implements. */
#define RM_PLUGIN_MIN_ABI RM_ABI_VERSION(1, 0)
#define RM_PLUGIN_MAX_ABI RM_ABI_VERSION_CURRENT

/** Entry point (also exported from the shared object). */
int32_t rm_plugin_negotiate(const rm_negotiate_request *request,
                            uint32_t *out_abi_version,
                            const rm_plugin_v1 **out_vtable);

/**
 * The services and version of the latest successful negotiation, copied
 * for a context being created. `services` is zeroed when there was none.
 */
void rm_negotiated_snapshot(rm_host_services *services, uint32_t *abi_version);

#endif
