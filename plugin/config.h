/* Runtime configuration: keys, their parsing, defaults and sources. */
#ifndef RM_INTERNAL_CONFIG_H
#define RM_INTERNAL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "node_table.h"
#include "rm_build_config.h"
#include "rm_plugin.h"

#define RM_SHM_NAMESPACE_MAX 32
#define RM_SHM_POOL_BYTES_MIN ((uint64_t)4 << 20)
#define RM_SHM_POOL_BYTES_MAX ((uint64_t)512 << 30)
#define RM_SHM_MAX_TENSORS_MIN 64u
#define RM_SHM_MAX_TENSORS_MAX 1048576u

typedef struct rm_config {
    uint64_t features;          /* RM_FEATURE_* enabled */
    int32_t log_level;          /* RM_LOG_* */
    double registry_ttl_s;      /* 0 = TTL off */
    uint64_t registry_max_bytes;  /* 0 = unlimited */
    uint64_t registry_max_models; /* 0 = unlimited */
    char shm_namespace[RM_SHM_NAMESPACE_MAX + 1];
    uint64_t shm_pool_bytes;      /* exact limit on live tensor bytes */
    uint64_t shm_session_quota;   /* 0 = unlimited */
    uint32_t shm_max_tensors;     /* slots of a pool's control segment */
    uint32_t registry_scope;      /* RM_REGISTRY_SCOPE_* */
    char registry_namespace[RM_SHM_NAMESPACE_MAX + 1];
    uint32_t registry_table_entries; /* node table slots, when creating it */
} rm_config;

/** Capabilities compiled into this build (a constant, so that the static
 *  vtable can use it too). */
#define RM_FEATURES_BUILT                                            \
    ((RM_HAVE_MODEL_REGISTRY ? RM_FEATURE_MODEL_REGISTRY : 0) |     \
     (RM_HAVE_SHARED_MEMORY ? RM_FEATURE_SHARED_MEMORY : 0))

/** Built-in defaults (documented in abi/rm_plugin.h). */
void rm_config_defaults(rm_config *config);

/**
 * Parses `value` for `key` into `config`. `origin` says where the pair came
 * from ("entry 2", "/etc/x.conf:7") and prefixes any error message, which is
 * recorded for `error_owner`. Returns RM_OK, RM_E_CONFIG_UNKNOWN_KEY,
 * RM_E_CONFIG_INVALID_VALUE, RM_E_FEATURE_UNAVAILABLE.
 */
int32_t rm_config_set(rm_config *config, const char *key, const char *value,
                      const char *origin, const void *error_owner);

/**
 * Applies every `key = value` line of the file at `path`. Returns RM_OK,
 * RM_E_CONFIG_FILE (unreadable, or a line that is not `key = value`), or
 * any code of rm_config_set().
 */
int32_t rm_config_apply_file(rm_config *config, const char *path,
                             const void *error_owner);

/**
 * Writes the effective value of `key` in its accepted form. *needed gets the
 * size with the NUL. Returns RM_OK, RM_E_CONFIG_UNKNOWN_KEY,
 * RM_E_BUFFER_TOO_SMALL.
 */
int32_t rm_config_format(const rm_config *config, const char *key,
                         char *buffer, size_t buffer_size, size_t *needed,
                         const void *error_owner);

/** Name of the index-th key, or NULL past the end. */
const char *rm_config_key_at(uint32_t index);

#endif
