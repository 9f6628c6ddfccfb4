/* Every configuration key, in one table.
 *
 * RM_CONFIG_KEYS(XX) calls XX(name, field, type, min, max, default, doc)
 * once per key, in config_key_at() order:
 *   name     the key as hosts write it
 *   field    its member of rm_config (config.h declares the members from
 *            this table)
 *   type     how the value is parsed, stored and printed: one of the
 *            types below, defined in config.c
 *   min,max  the limits of the type's number, inclusive: the value's range
 *            for count, bytes and seconds, the name's length for
 *            namespace_name, the levels for log_level; 0, 0 where a type
 *            has none
 *   default  the default as a host would write it; rm_config_defaults()
 *            parses it, so a default the type refuses fails the unit test
 *            rather than shipping
 *   doc      what the key does, plain text (README's table)
 *
 * Read by: config.h (the rm_config members), config.c (parsing, the
 * accepted form named in error messages, config_get, the defaults,
 * config_key_at, and so `rmctl info`, which lists what those two give) and
 * tests/docs/config_table.c (README's configuration table must be the one
 * it prints, row for row). The header's REF: config block documents the
 * same keys for hosts.
 *
 * Append only: hosts may rely on the order of the keys they know.
 *
 * Types (storage in rm_config, accepted form):
 *   features        uint64_t RM_FEATURE_* bits; a comma-separated list of
 *                   capability names, or all, or none
 *   log_level       int32_t RM_LOG_*; a level name from min to max
 *   seconds         double; a decimal without sign or exponent, at most 9
 *                   digits after the point
 *   bytes           uint64_t; an integer with an optional K, M, G, T, KiB,
 *                   MiB, GiB or TiB suffix (powers of 1024)
 *   count           uint32_t; a decimal integer
 *   namespace_name  char[RM_NAMESPACE_MAX + 1]; characters of [A-Za-z0-9_-]
 *                   (they become part of /dev/shm names)
 *   scope           uint32_t RM_REGISTRY_SCOPE_*; process or node
 *   table_mode      uint32_t RM_REGISTRY_TABLE_*; create or existing
 *   library         char[RM_LIBRARY_NAME_MAX + 1]; a soname or a path, as
 *                   dlopen() takes it: printable, no blank
 *
 * This header includes nothing: pool.h and node_table.h take
 * RM_NAMESPACE_MAX from it, and a constant named in a row is needed only
 * where the table is expanded with that column.
 */
#ifndef RM_INTERNAL_CONFIG_KEYS_H
#define RM_INTERNAL_CONFIG_KEYS_H

/** Longest namespace (shm.namespace, registry.namespace), in characters:
 *  the one definition; pools and the node table size their names by it. */
#define RM_NAMESPACE_MAX 32
/** Longest library name (cuda.driver), in bytes. */
#define RM_LIBRARY_NAME_MAX 255

#define RM_CONFIG_KEYS(XX)                                                                 \
    XX("features", features, features, 0, 0, "all",                                       \
       "Capabilities this context enables (all: every one built). Naming one that was "    \
       "not built gives RM_E_FEATURE_UNAVAILABLE; calling one that is built but not "      \
       "enabled gives RM_E_FEATURE_DISABLED.")                                             \
    XX("log.level", log_level, log_level, RM_LOG_ERROR, RM_LOG_DEBUG, "warn",              \
       "The least severe message passed to the host's log callback.")                      \
    XX("registry.ttl_s", registry_ttl_s, seconds, 0, 31536000, "30",                       \
       "How long an unused model stays loaded; 0 disables TTL eviction.")                  \
    XX("registry.max_bytes", registry_max_bytes, bytes, 0, UINT64_MAX, "0",                \
       "Byte budget of loaded models: idle models are evicted, least recently used "      \
       "first, to stay within it; 0 = unlimited.")                                         \
    XX("registry.max_models", registry_max_models, count, 0, 1048576, "0",                 \
       "Budget of loaded models, kept as for registry.max_bytes; 0 = unlimited.")          \
    XX("shm.namespace", shm_namespace, namespace_name, 1, RM_NAMESPACE_MAX, "default",     \
       "Tensors cross only between contexts of one namespace; rmctl ls and gc work per "   \
       "namespace.")                                                                       \
    XX("shm.pool_bytes", shm_pool_bytes, bytes, UINT64_C(4) << 20, UINT64_C(512) << 30,    \
       "1G",                                                                               \
       "Most bytes of live tensors in a context's pool (exact). The pool reserves twice "  \
       "this in address space, /dev/shm pages only as used.")                              \
    XX("shm.session_quota", shm_session_quota, bytes, 0, UINT64_MAX, "0",                  \
       "Most bytes of live tensors per session id, shared and heap tensors together; "     \
       "0 = unlimited.")                                                                   \
    XX("shm.max_tensors", shm_max_tensors, count, 64, 1048576, "16384",                    \
       "Tensors a pool holds at once (slots of its control segment).")                     \
    XX("registry.scope", registry_scope, scope, 0, 0, "process",                           \
       "process: each context has its own models. node: one table per "                   \
       "registry.namespace and machine, shared by every process; each model is loaded "    \
       "once per machine.")                                                                \
    XX("registry.namespace", registry_namespace, namespace_name, 1, RM_NAMESPACE_MAX,      \
       "default", "Node scope: which node table.")                                         \
    XX("registry.table_entries", registry_table_entries, count,                            \
       RM_NODE_TABLE_ENTRIES_MIN, RM_NODE_TABLE_ENTRIES_MAX, "1024",                       \
       "Node scope: models the table holds at once (loading or loaded); fixed by the "     \
       "process that creates the table.")                                                  \
    XX("registry.table", registry_table, table_mode, 0, 0, "create",                       \
       "Node scope, at context creation: create makes the namespace's table if there is "  \
       "none; existing only attaches to a table that exists, and context_create fails "    \
       "with RM_E_NOT_FOUND, creating nothing, when there is none (rmctl ls uses it).")   \
    XX("cuda.driver", cuda_driver, library, 1, RM_LIBRARY_NAME_MAX, "libcuda.so.1",         \
       "The CUDA driver that device tensors load on first use (never at context "          \
       "creation): a soname or a path, as dlopen() takes it.")                             \
    XX("cuda.pool_bytes", cuda_pool_bytes, bytes, UINT64_C(2) << 20, UINT64_C(1) << 40,    \
       "4G",                                                                               \
       "Most bytes of device memory a context's exportable blocks hold, over all its "     \
       "devices.")                                                                         \
    XX("cuda.block_bytes", cuda_block_bytes, bytes, UINT64_C(2) << 20, UINT64_C(1) << 40,  \
       "64M",                                                                              \
       "Size of the exportable device blocks that device tensors are sub-allocated from "  \
       "(one IPC handle per block), rounded up to a multiple of 2M; a larger tensor gets " \
       "a block of its own.")

#endif
