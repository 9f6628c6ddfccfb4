/* Runtime configuration: the values of the keys of config_keys.h, their
 * parsing, defaults and sources. */
#ifndef RM_INTERNAL_CONFIG_H
#define RM_INTERNAL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config_keys.h"
#include "rm_build_config.h"
#include "rm_plugin.h"

/* RM_NAMESPACE_MAX under the name the shared-memory code knows it by. */
#define RM_SHM_NAMESPACE_MAX RM_NAMESPACE_MAX

/* registry.table: what creating a node-scope context does when the
 * namespace has no table. */
#define RM_REGISTRY_TABLE_CREATE 0u
#define RM_REGISTRY_TABLE_EXISTING 1u

/* How each type of config_keys.h is stored. */
typedef uint64_t rm_config_features;  /* RM_FEATURE_* */
typedef int32_t rm_config_log_level;  /* RM_LOG_* */
typedef double rm_config_seconds;     /* 0 = off where the key says so */
typedef uint64_t rm_config_bytes;
typedef uint32_t rm_config_count;
typedef char rm_config_namespace_name[RM_NAMESPACE_MAX + 1];
typedef uint32_t rm_config_scope;      /* RM_REGISTRY_SCOPE_* */
typedef uint32_t rm_config_table_mode; /* RM_REGISTRY_TABLE_* */
typedef char rm_config_library[RM_LIBRARY_NAME_MAX + 1];

/* One member per key, named by the table's `field` column. */
#define RM_CONFIG_MEMBER_(name, field, type, min, max, default_value, doc) \
    rm_config_##type field;
typedef struct rm_config {
    RM_CONFIG_KEYS(RM_CONFIG_MEMBER_)
} rm_config;
#undef RM_CONFIG_MEMBER_

/** Capabilities compiled into this build (a constant, so that the static
 *  vtable can use it too). */
#define RM_FEATURES_BUILT                                            \
    ((RM_HAVE_MODEL_REGISTRY ? RM_FEATURE_MODEL_REGISTRY : 0) |     \
     (RM_HAVE_SHARED_MEMORY ? RM_FEATURE_SHARED_MEMORY : 0) |       \
     (RM_HAVE_CUDA_IPC ? RM_FEATURE_CUDA_IPC : 0))

/** Built-in defaults: the table's `default` column, parsed. */
void rm_config_defaults(rm_config *config);

/**
 * Parses `value` for `key` into `config`. `origin` says where the pair came
 * from ("entry 2", "/etc/x.conf:7") and prefixes any error message, which is
 * recorded for `error_owner` and names the accepted form. A refused value
 * changes nothing. Returns RM_OK, RM_E_CONFIG_UNKNOWN_KEY,
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

/** A key as the documentation shows it (rm_config_key_doc()). */
typedef struct rm_config_key_info {
    const char *name;
    const char *default_value; /* as a host writes it */
    const char *doc;           /* what the key does */
    char accepted[512];        /* the accepted form, from the type and limits */
} rm_config_key_info;

/**
 * Describes the index-th key: the accepted form as error messages give it,
 * or with `markdown` with literal values in backquotes (README's table).
 * False past the end.
 */
bool rm_config_key_doc(uint32_t index, bool markdown, rm_config_key_info *out);

#endif
