/*
 * rm_plugin.h: the one public header of rm_plugin.
 *
 * rm_plugin is a shared object that a host runtime loads with dlopen() (no
 * LD_PRELOAD, no link-time dependency) to share models and tensors between
 * pipeline nodes and between processes. This header is the whole contract:
 * a host compiles against it and nothing else, and it is the reference
 * documentation for every type and function.
 *
 * SPDX-License-Identifier: Apache-2.0
 *
 * ===========================================================================
 * Contents
 * ===========================================================================
 * Each section starts with a comment line "REF: <name>"; grep for it. Each
 * vtable member has one block that starts "@fn <member>".
 *
 *   REF: versioning     versioning policy and history
 *   REF: loading        loading the plugin: dlopen, negotiation, a context
 *   REF: conventions    what every member shares: context checks and their
 *                       order, structs in and out, messages, threads,
 *                       callbacks, fork
 *   REF: template       how a member's block is laid out
 *   REF: versions       RM_ABI_VERSION, RM_STRUCT_INIT, the entry point name
 *   REF: errors         RM_ERROR_MAP, rm_error
 *   REF: features       RM_FEATURE_*
 *   REF: negotiation    rm_host_services, rm_negotiate_request,
 *                       rm_plugin_negotiate_fn (@fn rm_plugin_negotiate)
 *   REF: config         rm_context_options and every configuration key
 *   REF: context        rm_context, rm_context_info
 *   REF: model-keys     the "name@device" grammar, rm_model_handle
 *   REF: node-scope     what registry.scope = node promises
 *   REF: gpu-weights    model weights in device memory (1.4)
 *   REF: loaders        rm_loaded_model (@fn alloc_buffer,
 *                       @fn alloc_device_buffer),
 *                       rm_model_loader_fn (@fn loader)
 *   REF: registry-rows  rm_model_info, rm_registry_metrics,
 *                       rm_registry_reclaim_report
 *   REF: tensors        shared-memory tensors: pools, lifetime, limits, fork
 *   REF: cuda-tensors   device tensors (CUDA IPC): blocks, handles, events,
 *                       lifetime, what the driver does not allow
 *   REF: descriptors    what a host may rely on about a descriptor
 *   REF: tensor-types   rm_dtype, rm_tensor_spec, rm_tensor_info,
 *                       rm_tensor_pool_stats, rm_reclaim_report,
 *                       rm_shm_pool_info
 *   REF: dlpack         the DLPack mirrors
 *   REF: vtable         rm_plugin_v1, one line per member
 *   REF: members        one block per member, in vtable order:
 *     1.0  error_name strerror context_create context_destroy
 *          context_last_error context_info config_get config_key_at
 *          model_key_normalize model_get_or_load model_release model_evict
 *          registry_metrics registry_list
 *     1.1  tensor_allocate tensor_info tensor_export tensor_export_text
 *          tensor_export_inline tensor_import tensor_import_text
 *          tensor_release tensor_to_dlpack tensor_to_dlpack_versioned
 *          tensor_pool_stats tensor_session_bytes tensor_reclaim shm_list
 *     1.2  registry_reclaim
 *     1.3  tensor_wrap_device tensor_record tensor_wait cuda_info
 *     1.4  model_to_dlpack
 *   REF: plugin-has     RM_PLUGIN_HAS
 *
 * Not contract, and documented apart in docs/internals.md (in the source
 * tree): the names and layouts of the shared-memory segments, the bytes and
 * checksum of a descriptor, the locks and futexes, the background threads
 * and their timing, the bundled allocator's settings. They may change in
 * any plugin version; what the host sees does not.
 *
 * ===========================================================================
 * REF: versioning
 * Versioning policy
 * ===========================================================================
 * The ABI version is MAJOR.MINOR, encoded as RM_ABI_VERSION(major, minor).
 *  - A published struct or vtable only ever grows by appending fields at its
 *    end. A new minor version appends; nothing is removed, reordered or
 *    retyped. A field that is zero/NULL means "behave as the older version".
 *  - Every struct that crosses the boundary starts with `struct_size` and
 *    `abi_version`, filled by whoever allocates it (use RM_STRUCT_INIT).
 *    The receiver reads only the fields that fit in `struct_size`, so an old
 *    host works with a new plugin and a new host with an old plugin.
 *  - Reserved fields must be zero; a non-zero reserved field is rejected
 *    with RM_E_INVALID_ARGUMENT so that they can be given a meaning later.
 *  - A new major version is a new vtable type (rm_plugin_v2); a plugin may
 *    offer several, and negotiation picks one.
 *  - Before calling a vtable member newer than 1.0, check it with
 *    RM_PLUGIN_HAS(); members of 1.0 are always present.
 *
 * History: 1.0 contexts, configuration, the process-scope model registry;
 * 1.1 shared-memory tensors, descriptors, DLPack export, pool listing and
 * reclaim (error codes -20..-23, config keys shm.*);
 * 1.2 the node-scope model registry: loader buffers (rm_loaded_model
 * grows), node rows and counters (rm_model_info, rm_registry_metrics grow),
 * registry_reclaim, error code -24, config keys registry.scope,
 * registry.namespace, registry.table_entries.
 * Plugin 0.2 (ABI unchanged, 1.2): descriptor format version 2 (a faster
 * checksum) and new shared-segment layouts; processes that share tensors
 * or a node table must run the same plugin version (an older one's
 * descriptors and segments are refused with a message that says so).
 * Plugin 0.3.0 (ABI unchanged, 1.2): config key registry.table.
 * 1.3 CUDA IPC (plugin 0.4.0): device tensors (rm_tensor_spec.device,
 * rm_tensor_info.device and device_uuid), tensor_wrap_device,
 * tensor_record, tensor_wait, cuda_info (rm_cuda_info), CUDA figures in
 * rm_tensor_pool_stats, rm_reclaim_report and rm_shm_pool_info, the
 * feature "cuda-ipc", error code -25 (RM_E_DEVICE_UNAVAILABLE), config
 * keys cuda.driver, cuda.pool_bytes, cuda.block_bytes.
 * 1.4 GPU-resident model weights (plugin 0.5.0): loader device buffers
 * (rm_loaded_model.alloc_device_buffer), one copy per GPU for every
 * process in node scope (REF: gpu-weights), rows that say where a model
 * lives (rm_model_info.memory, device_ordinal, device_uuid,
 * device_bytes), model_to_dlpack.
 *
 * ===========================================================================
 * REF: loading
 * Loading
 * ===========================================================================
 *   void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
 *   rm_plugin_negotiate_fn negotiate =
 *       (rm_plugin_negotiate_fn)dlsym(so, RM_PLUGIN_ENTRY_POINT);
 *   rm_negotiate_request req = RM_STRUCT_INIT(rm_negotiate_request);
 *   req.min_abi_version = RM_ABI_VERSION(1, 0);
 *   req.max_abi_version = RM_ABI_VERSION_CURRENT;
 *   const rm_plugin_v1 *vt; uint32_t picked;
 *   if (negotiate(&req, &picked, &vt) != RM_OK) ...;
 *   rm_context *ctx;
 *   rm_context_options opts = RM_STRUCT_INIT(rm_context_options);
 *   if (vt->context_create(&opts, &ctx) != RM_OK) ...;
 *   if (RM_PLUGIN_HAS(vt, tensor_allocate)) ...;   (1.1 and later)
 *
 * The shared object is linked with -z nodelete: dlclose() does not unmap it,
 * because its bundled allocator registers thread-exit destructors that glibc
 * may run after an unload. All state is owned by contexts, so destroying
 * every context releases every resource (memory, threads, descriptors).
 *
 * ===========================================================================
 * REF: conventions
 * What every vtable member shares
 * ===========================================================================
 * Each member's block (REF: members) adds its own rules and lists every
 * code it returns; these rules hold for all of them.
 *
 *  - Results. A member that can fail returns an int32_t: RM_OK (0) or one
 *    of the negative RM_E_* codes (REF: errors). An output pointer that a
 *    block says is "NULL on error" is cleared before anything can fail
 *    (when the pointer to it is not NULL itself).
 *  - Contexts. Every `rm_context *` argument must be a live context from
 *    context_create(). A member checks, in this order, and the first check
 *    that fails decides the code:
 *      1. the context is not NULL, else RM_E_INVALID_ARGUMENT;
 *      2. it was created in this process, not inherited through fork(),
 *         else RM_E_FORKED (create a new context in the child);
 *      3. the member's capability was built into the plugin, else
 *         RM_E_FEATURE_UNAVAILABLE, and the context's "features" enable
 *         it, else RM_E_FEATURE_DISABLED ("model-registry" for model_* and
 *         registry_*, "shared-memory" for tensor_* and shm_list);
 *      4. the other arguments: NULL pointers (RM_E_INVALID_ARGUMENT),
 *         struct sizes (RM_E_STRUCT_SIZE), values.
 *    A destroyed context, a released handle, or a handle used with a
 *    context other than the one that returned it is undefined behaviour,
 *    not an error code.
 *  - Structs the host hands in start with struct_size and abi_version (use
 *    RM_STRUCT_INIT); a struct_size below the struct's oldest published
 *    size is RM_E_STRUCT_SIZE, and non-zero reserved fields or unknown flag
 *    bits are RM_E_INVALID_ARGUMENT.
 *  - Structs the plugin fills for the host (rm_context_info,
 *    rm_registry_metrics, rm_tensor_info, rm_tensor_pool_stats,
 *    rm_reclaim_report, rm_registry_reclaim_report) keep the host's
 *    struct_size and abi_version; the plugin writes only the fields that
 *    fit in struct_size. Rows of registry_list() and shm_list() are
 *    written whole: their struct_size says how many bytes the plugin wrote
 *    (the smaller of the host's and the plugin's size).
 *  - Messages. After an error, context_last_error() on the same thread says
 *    what went wrong, naming the key, value, limit, segment or file.
 *  - Threads. Members are thread-safe unless their block says otherwise:
 *    one context may be used by many threads at once. context_destroy()
 *    must not race with any other call on the same context. Threads inside
 *    the plugin (a caller waiting for a load, a loader) must not be
 *    cancelled with pthread_cancel(): cancellation is not supported.
 *  - Callbacks. Loaders and destroy callbacks never run while the plugin
 *    holds a lock, so they may call back into the plugin. The services of
 *    rm_host_services (log sink, clock) may be called during any member and
 *    from the plugin's own background threads at any time; the log sink may
 *    run while the plugin holds a lock, so it must not call back into the
 *    plugin. A block's @callbacks says which host callbacks the member may
 *    run, and whether any of them can fire after it returned an error.
 *  - Fork. Each context records the fork generation at creation: used in a
 *    child after fork(), members return RM_E_FORKED; context_destroy() of
 *    such a context frees only the child's copy of its memory.
 *  - Liveness. A process that died is recognised by its pid and start time
 *    (read from /proc), so a reused pid is not taken for it; processes that
 *    share tensors or a node table must therefore see each other in /proc
 *    (share a PID namespace).
 *
 * ===========================================================================
 * REF: template
 * How a member's block is laid out
 * ===========================================================================
 *   @fn <member>   what it does, in one paragraph or a few
 *   @param         each parameter, and whether NULL is allowed
 *   @ownership     who owns what the call takes and gives, and for how long
 *   @return        every code it can return and its meaning
 *   @threads       thread safety
 *   @callbacks     the host callbacks it may run, and whether one can fire
 *                  after an error ("none" when it runs none but the log
 *                  sink, which any member may call)
 *   @since         the ABI version that added it
 * A block right above a declaration (rm_plugin_negotiate_fn, alloc_buffer,
 * rm_model_loader_fn) opens with a plain comment marker rather than a
 * Doxygen one: clang's -Wdocumentation, which hosts may turn on, does not
 * know these tags and would warn about them.
 */
#ifndef RM_PLUGIN_H
#define RM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ========================================================================
 * REF: versions
 * Versions
 * ======================================================================== */

/** Encodes an ABI version: major in the high 16 bits, minor in the low. */
#define RM_ABI_VERSION(major, minor) \
    ((uint32_t)(((uint32_t)(major) << 16) | ((uint32_t)(minor) & 0xffffu)))
#define RM_ABI_VERSION_MAJOR(v) ((uint32_t)(v) >> 16)
#define RM_ABI_VERSION_MINOR(v) ((uint32_t)(v) & 0xffffu)

/** The ABI version this header describes. */
#define RM_ABI_MAJOR 1
#define RM_ABI_MINOR 4
#define RM_ABI_VERSION_CURRENT RM_ABI_VERSION(RM_ABI_MAJOR, RM_ABI_MINOR)

/** The project (not ABI) version; the build reads it from here. */
#define RM_PLUGIN_VERSION_STRING "0.5.0"

/** The only symbol the shared object exports. */
#define RM_PLUGIN_ENTRY_POINT "rm_plugin_negotiate"

/**
 * Initialiser for any ABI struct: sets the two leading fields and zeroes the
 * rest. Designated, so that -Wmissing-field-initializers stays quiet (C99,
 * C++20).
 */
#define RM_STRUCT_INIT(type) \
    { .struct_size = (uint32_t)sizeof(type), .abi_version = RM_ABI_VERSION_CURRENT }

/* ========================================================================
 * REF: errors
 * Errors
 * ======================================================================== */

/**
 * Every function that can fail returns an int32_t: RM_OK (0) or one of the
 * negative codes below. The vtable's error_name() and strerror() map a code
 * to static strings; the map is also here so that a host can use it before
 * it has a vtable. Codes are never renumbered; new ones are appended.
 * Which member returns which code, and when: each member's @return.
 *
 * XX(code, NAME, "message")
 */
#define RM_ERROR_MAP(XX)                                                      \
    XX(0, OK, "success")                                                      \
    XX(-1, INVALID_ARGUMENT, "invalid argument")                              \
    XX(-2, INCOMPATIBLE_VERSION, "no ABI version in common with the host")    \
    XX(-3, STRUCT_SIZE, "struct is smaller than its oldest published size")   \
    XX(-4, NO_MEMORY, "out of memory")                                        \
    XX(-5, FEATURE_DISABLED, "capability not enabled in this context")        \
    XX(-6, FEATURE_UNAVAILABLE, "capability not built into this plugin")      \
    XX(-7, CONFIG_UNKNOWN_KEY, "unknown configuration key")                   \
    XX(-8, CONFIG_INVALID_VALUE, "invalid configuration value")               \
    XX(-9, CONFIG_FILE, "configuration file unreadable or malformed")         \
    XX(-10, INVALID_KEY, "malformed model key")                               \
    XX(-11, NOT_FOUND, "no such entry")                                       \
    XX(-12, BUSY, "entry is in use")                                          \
    XX(-13, LOADER_FAILED, "model loader failed")                             \
    XX(-14, LOAD_CYCLE, "model loaders request each other in a cycle")        \
    XX(-15, BUFFER_TOO_SMALL, "output buffer too small")                      \
    XX(-16, FORKED, "context belongs to the parent of a fork()")              \
    XX(-17, ALLOCATOR, "bundled allocator failed")                            \
    XX(-18, SYSTEM, "operating system call failed")                           \
    XX(-19, SHUTTING_DOWN, "context is being destroyed")                     \
    XX(-20, NOT_SHAREABLE, "tensor is in private memory, not shareable")      \
    XX(-21, INVALID_DESCRIPTOR, "malformed or forged tensor descriptor")      \
    XX(-22, STALE_DESCRIPTOR, "descriptor names memory that is gone")         \
    XX(-23, QUOTA_EXCEEDED, "quota exceeded")                                \
    XX(-24, CORRUPT_STATE, "shared state is malformed, foreign or missing")   \
    XX(-25, DEVICE_UNAVAILABLE, "no usable CUDA driver or device")

/* The map also yields RM_E_OK; RM_OK is the same 0 under its usual name. */
typedef enum rm_error {
#define RM_ERROR_ENUM_(code, name, message) RM_E_##name = (code),
    RM_ERROR_MAP(RM_ERROR_ENUM_)
#undef RM_ERROR_ENUM_
    RM_OK = 0
} rm_error;

/* ========================================================================
 * REF: features
 * Features
 * ======================================================================== */

/** Capability bits, as in rm_plugin_v1.features_built and
 *  rm_context_info.features_enabled. Config names are in quotes. */
#define RM_FEATURE_MODEL_REGISTRY ((uint64_t)1 << 0) /* "model-registry" */
#define RM_FEATURE_SHARED_MEMORY ((uint64_t)1 << 1)  /* "shared-memory" */
#define RM_FEATURE_CUDA_IPC ((uint64_t)1 << 2)       /* "cuda-ipc" (1.3) */

/* ========================================================================
 * REF: negotiation
 * Host services and negotiation
 * ======================================================================== */

/** Log levels, most severe first. */
#define RM_LOG_ERROR 0
#define RM_LOG_WARN 1
#define RM_LOG_INFO 2
#define RM_LOG_DEBUG 3

/**
 * What the host lends the plugin. The struct is copied during negotiation;
 * `user` and the functions must stay valid until every context created
 * after that negotiation is destroyed.
 */
typedef struct rm_host_services {
    uint32_t struct_size;
    uint32_t abi_version;
    /** Passed back unchanged as the first argument of every callback. */
    void *user;
    /**
     * Receives the plugin's log lines (one line, no newline, NUL-terminated,
     * valid only during the call). May be called from any thread, including
     * the plugin's own background threads, so it must be thread-safe; it
     * may be called while the plugin holds a lock, so it must not call back
     * into the plugin. NULL: the plugin writes lines at or above the
     * configured level to stderr.
     */
    void (*log)(void *user, int32_t level, const char *message);
    /**
     * Optional monotonic clock in nanoseconds (for hosts that virtualise
     * time). NULL: CLOCK_MONOTONIC. Must be thread-safe and never go back.
     */
    uint64_t (*monotonic_ns)(void *user);
} rm_host_services;

/** The host's half of negotiation. */
typedef struct rm_negotiate_request {
    uint32_t struct_size; /* >= the 1.0 size, else RM_E_STRUCT_SIZE */
    uint32_t abi_version; /* the version of this header the host used */
    /** Inclusive range of ABI versions the host can use. */
    uint32_t min_abi_version;
    uint32_t max_abi_version;
    /** Optional (NULL: log to stderr, CLOCK_MONOTONIC). Copied. */
    const rm_host_services *services;
    /**
     * Optional buffer that receives a NUL-terminated, human-readable reason
     * when negotiation fails (truncated to fit). Untouched on success.
     */
    char *error_buffer;
    uint64_t error_buffer_size;
    uint64_t reserved[4]; /* must be zero */
} rm_negotiate_request;

struct rm_plugin_v1;

/*
 * @fn rm_plugin_negotiate
 * The one exported entry point (RM_PLUGIN_ENTRY_POINT), found with dlsym().
 * Picks the highest ABI version inside both the host's range and the
 * plugin's, and answers with that version and the vtable for its major.
 * Services offered by a successful negotiation are used by contexts
 * created after it; contexts already created keep theirs. They belong to
 * the whole loaded object, not to one caller: two hosts in one process that
 * negotiate with different services each change them for later contexts.
 *
 * @param request          not NULL; struct_size at least the 1.0 size,
 *                         min_abi_version <= max_abi_version, reserved
 *                         fields zero; `services` optional (its
 *                         struct_size at least its 1.0 size), error_buffer
 *                         optional.
 * @param out_abi_version  not NULL; receives the version picked.
 * @param out_vtable       not NULL; receives the vtable.
 * @ownership  The vtable is static: it stays valid while the shared object
 *             is loaded, and is never freed. The request is read during the
 *             call only; *services is copied, but the `user` pointer and
 *             functions it names must stay valid until every context
 *             created after this negotiation is destroyed.
 * @return
 *   RM_OK                      *out_abi_version and *out_vtable are set.
 *   RM_E_INVALID_ARGUMENT      a NULL pointer, min > max, non-zero reserved
 *                              fields, or a services struct too small.
 *   RM_E_STRUCT_SIZE           request->struct_size is below the 1.0 size.
 *   RM_E_INCOMPATIBLE_VERSION  no version in common (e.g. the host wants
 *                              major 2 only, or major 0); the message names
 *                              both ranges.
 *   On any error, *out_vtable is set to NULL, *out_abi_version to 0 (where
 *   those pointers are non-NULL) and the reason is written to error_buffer,
 *   except for RM_E_STRUCT_SIZE, where error_buffer lies beyond what the
 *   host declared and is left alone. context_last_error(NULL) on the
 *   calling thread has the reason after every error.
 * @threads    Thread-safe; may be called any number of times.
 * @callbacks  None during the call. The services it lends are called by
 *             the contexts created after it (REF: conventions).
 * @since 1.0
 */
typedef int32_t (*rm_plugin_negotiate_fn)(
    const rm_negotiate_request *request, uint32_t *out_abi_version,
    const struct rm_plugin_v1 **out_vtable);

/* ========================================================================
 * REF: config
 * Contexts and configuration
 * ======================================================================== */

/** Opaque: one configured instance of the plugin. Thread-safe. */
typedef struct rm_context rm_context;

/** One configuration pair. Both strings are copied during the call. */
typedef struct rm_config_entry {
    const char *key;
    const char *value;
} rm_config_entry;

/** Ignore the RM_PLUGIN_CONFIG environment variable. */
#define RM_CONTEXT_IGNORE_ENV ((uint64_t)1 << 0)

/** Environment variable that may name a configuration file. */
#define RM_CONFIG_ENV "RM_PLUGIN_CONFIG"

/**
 * How to build a context. Configuration is applied in this order, later
 * sources overriding earlier ones: built-in defaults; the file named by
 * `config_path`, or if that is NULL by $RM_PLUGIN_CONFIG (unless
 * RM_CONTEXT_IGNORE_ENV; an empty variable counts as unset); then
 * `entries` in order.
 *
 * File syntax: one `key = value` per line; blank lines and lines whose
 * first non-blank character is '#' are ignored; surrounding blanks are
 * trimmed. A line holds at most 4094 bytes and no NUL byte. Keys and
 * accepted values (see also rmctl info and the README):
 *
 *   features            comma-separated subset of "model-registry",
 *                       "shared-memory", "cuda-ipc" (1.3); "all" or "none".
 *                       Default "all" (every capability built in).
 *                       Naming a capability that was not built gives
 *                       RM_E_FEATURE_UNAVAILABLE.
 *   log.level           error | warn | info | debug.  Default warn.
 *   registry.ttl_s      seconds an unused model stays loaded, decimal,
 *                       0 to 31536000, at most 9 digits after the point;
 *                       0 disables TTL eviction. Default 30.
 *   registry.max_bytes  byte budget for loaded models: an integer with an
 *                       optional K, M, G, T suffix (powers of 1024, also
 *                       KiB, MiB, GiB, TiB); 0 = unlimited. Default 0.
 *   registry.max_models model count budget, 0 to 1048576; 0 = unlimited.
 *                       Default 0.
 *   shm.namespace       (1.1) 1 to 32 characters of [A-Za-z0-9_-]. Tensors
 *                       cross only between contexts of one namespace; it
 *                       is part of every segment name, and rmctl ls/gc work
 *                       per namespace. Default "default".
 *   shm.pool_bytes      (1.1) most bytes of live tensors the context's pool
 *                       holds (exact, the sum of their nbytes; a size as
 *                       for registry.max_bytes), 4M to 512G. The pool
 *                       reserves twice this in address space (room for
 *                       alignment and fragmentation); /dev/shm pages are
 *                       used only as tensors need them. Default 1G.
 *   shm.session_quota   (1.1) most bytes of live tensors per session id of
 *                       one context, shared and heap tensors together;
 *                       0 = unlimited. Default 0.
 *   shm.max_tensors     (1.1) tensors a pool can hold at once (slots in its
 *                       control segment), 64 to 1048576. Default 16384.
 *   registry.scope      (1.2) process | node. Default process.
 *                       process: each context has its own models (1.0).
 *                       node: every context of registry.namespace on the
 *                       machine, in any process, shares one table; a
 *                       model is loaded once per machine into a shared
 *                       buffer and mapped read-only by everyone else (see
 *                       "Node scope", REF: node-scope). Process is the
 *                       default because a 1.0 loader returns a private
 *                       pointer that no other process could use.
 *   registry.namespace  (1.2) node scope: which node table, 1 to 32
 *                       characters of [A-Za-z0-9_-]. Default "default".
 *   registry.table_entries (1.2) node scope: models the node table holds
 *                       at once (loading or loaded), 4 to 65536. Fixed by
 *                       the process that creates the table; later
 *                       contexts use the table as it was created.
 *                       Default 1024.
 *   registry.table      (1.2, plugin 0.3.0; earlier plugins answer
 *                       RM_E_CONFIG_UNKNOWN_KEY: look for it with
 *                       config_key_at()) node scope: what context_create
 *                       does when registry.namespace has no table yet.
 *                       create | existing. Default create.
 *                       create: makes the table (a host's first use).
 *                       existing: attaches only to a table that exists;
 *                       without one, context_create fails with
 *                       RM_E_NOT_FOUND and a message, and creates nothing,
 *                       so that a tool can look at a namespace without
 *                       making it (rmctl ls). Only creation is concerned:
 *                       a table that registry_reclaim() removes later is
 *                       made again by the context's next
 *                       model_get_or_load(), as with create.
 *   cuda.driver         (1.3) the CUDA driver library that device tensors
 *                       load on first use (never at context_create): a
 *                       soname or a path, as dlopen() takes it, 1 to 255
 *                       bytes. Default libcuda.so.1.
 *   cuda.pool_bytes     (1.3) most bytes of device memory the context's
 *                       blocks hold, over all devices (a size as for
 *                       registry.max_bytes), 2M to 1T. Default 4G.
 *   cuda.block_bytes    (1.3) the size of the exportable device blocks
 *                       that device tensors are sub-allocated from (one
 *                       IPC handle per block); a tensor larger than this
 *                       gets a block of its own, rounded up to 2 MiB.
 *                       2M to 1T, rounded up to a multiple of 2M.
 *                       Default 64M.
 */
typedef struct rm_context_options {
    uint32_t struct_size;
    uint32_t abi_version;
    const rm_config_entry *entries; /* may be NULL when entry_count is 0 */
    uint64_t entry_count;
    const char *config_path; /* optional */
    uint64_t flags;          /* RM_CONTEXT_* */
    uint64_t reserved[4];    /* must be zero */
} rm_context_options;

/* ========================================================================
 * REF: context
 * What a context is
 * ======================================================================== */

/** What a context is, for display and for checks. */
typedef struct rm_context_info {
    uint32_t struct_size;
    uint32_t abi_version;
    /** The version negotiated before this context was created. */
    uint32_t negotiated_abi_version;
    uint32_t reserved0;
    uint64_t features_built;
    uint64_t features_enabled;
    /**
     * The bundled allocator's version string (e.g. "jemalloc 5.3.0-..."),
     * or "" when shared-memory was not built.
     */
    char allocator[96];
    /**
     * The private allocator arena this context created and checked at
     * creation (shared-memory enabled), or UINT32_MAX when none.
     */
    uint32_t allocator_arena;
    uint32_t reserved1;
} rm_context_info;

/* ========================================================================
 * REF: model-keys
 * Model registry (feature "model-registry"): keys and handles
 * ======================================================================== */

/**
 * Model keys: "name@device".
 *  - name: 1 to 200 bytes from [A-Za-z0-9._/:+-]; case is kept.
 *  - device: "cpu", or "cuda:N" with N a decimal 0..1023, or "cuda"
 *    (= "cuda:0"). Case-insensitive; leading zeros allowed on input.
 *  - exactly one '@'; no other bytes (no blanks, no control bytes);
 *    at most RM_MODEL_KEY_MAX - 1 bytes in all.
 * Keys are normalised (device lower-case, "cuda" -> "cuda:0", "cuda:007" ->
 * "cuda:7") so equal devices give equal keys; the registry stores and
 * reports the normalised form. Anything else is RM_E_INVALID_KEY, with a
 * message that says what is wrong.
 */
#define RM_MODEL_KEY_MAX 256

/** Opaque reference to a loaded model; released with model_release(), on
 *  any thread. Two gets of one model may give different handles (a handle
 *  names the reference, not the model; compare the model pointers). */
typedef struct rm_model_handle rm_model_handle;

/*
 * REF: node-scope
 * Node scope (1.2, registry.scope = node). One table per registry.namespace
 * and machine, in shared memory readable and writable only by the effective
 * user (its name and layout: docs/internals.md). For each key:
 *  - Loading: the first caller on the machine claims the key and runs its
 *    loader, which asks for a buffer with rm_loaded_model.alloc_buffer()
 *    (a new shared-memory segment whose pages are committed at once: a
 *    full /dev/shm is RM_E_NO_MEMORY, never SIGBUS), fills it and returns.
 *    The plugin then seals it: read-only for everyone (file mode and every
 *    mapping), so a later write faults in every process. Callers in other
 *    processes block (no spinning) until the load ends; a failure code
 *    reaches every one of them, and leaves no entry. If the loading process
 *    dies, a waiter notices within RM_NODE_TAKEOVER_POLL_MS, takes the
 *    claim over and runs its own loader.
 *  - Attaching: a caller that finds the model ready maps the sealed
 *    segment read-only (no loader call, no copy: the same physical pages
 *    in every process) and *out_model is the start of its mapping.
 *  - References are counted per process (each context of a process that
 *    holds the model adds one). A process that dies holding references
 *    loses them at the next sweep: every node-scope context sweeps the
 *    table periodically in the background (the period: docs/internals.md),
 *    and registry_reclaim() sweeps at once.
 *  - A model that no live process holds is evicted node-wide when its
 *    idle time passes registry.ttl_s, or in LRU order to fit
 *    registry.max_bytes / registry.max_models (the settings of the context
 *    that evicts: give every context of a namespace the same ones), and
 *    its segment is unlinked. Mappings end when a context's last handle
 *    is released.
 *  - A process that dies while it updates the table does not wedge the
 *    node: the next process to use the table repairs it and goes on
 *    (counted in rm_registry_metrics.lock_recoveries). A table that
 *    another process scribbled over gives RM_E_CORRUPT_STATE, not a hang.
 *  - Loader cycles: RM_E_LOAD_CYCLE when the cycle stays on one thread
 *    (through any contexts of the process), or when every wait in it is
 *    for a load that the same context runs (on any of its threads). A
 *    thread that waits for a load run through another context on another
 *    thread, or by another process, sleeps on the node table, which the
 *    cycle check does not see: a cycle through such a wait (in particular
 *    one through loaders in different processes) is not detected and
 *    waits, as long as its loaders live.
 *  - The table records each process (pid and start time) that has
 *    node-scope contexts on it, at most 1024 processes at once. It is
 *    removed once nothing is left in it (no model loaded or loading) and
 *    no live process uses it: by the namespace's last context_destroy(),
 *    or by registry_reclaim() when only the caller's context and dead
 *    processes are left (a killed process does not keep it). An idle
 *    model within its TTL keeps it. A process opening the table as it is
 *    removed never uses the removed one: it opens (or creates) the next.
 *  - Times in node rows are CLOCK_MONOTONIC nanoseconds (shared by every
 *    process), not the host clock.
 *  - Codes. Besides its own, a member that uses the node table can return
 *    RM_E_CORRUPT_STATE (the table or its lock is damaged, foreign or of
 *    another plugin version: the message names the file; remove it when no
 *    process uses the namespace) and, when the context must open the
 *    namespace's table again because the one it used was removed
 *    (registry_reclaim), the codes of opening it: RM_E_QUOTA_EXCEEDED
 *    (1024 processes use it), RM_E_SYSTEM, and where a table may be
 *    created (model_get_or_load, registry_reclaim) RM_E_NO_MEMORY
 *    (/dev/shm full). Each member's @return lists them as "table codes".
 */
#define RM_NODE_TAKEOVER_POLL_MS 100
/** Processes that can hold one model of a node table at once. */
#define RM_NODE_MAX_HOLDER_PROCESSES 64

/*
 * REF: gpu-weights
 * Model weights in device memory (1.4, feature "cuda-ipc" enabled). A
 * loader for a key "name@cuda:N" may ask for a device buffer
 * (rm_loaded_model.alloc_device_buffer) instead of a host one; every
 * caller then gets a device pointer (a CUdeviceptr cast to void *) as
 * its model, valid in every CUDA context of the process (unified
 * addressing), and model_to_dlpack() describes it as kDLCUDA bytes.
 *  - Process scope: private device memory (cuMemAlloc) in device N's
 *    primary context, freed when the model is evicted.
 *  - Node scope: one copy per GPU for every process of the namespace.
 *    The buffer is exportable device memory (cuMemCreate with POSIX file
 *    descriptor handles, rounded up to the allocation granularity, 2 MiB
 *    on current GPUs). When the loader returns, the plugin waits for the
 *    device's work and seals the buffer: every process, the loader's
 *    included, maps it read-only (access READ: a write through it is an
 *    error of the copy or kernel that tries, never a silent change).
 *    Another process attaches without a loader call: it receives a
 *    descriptor of the memory from a live process that has it mapped, over
 *    a Unix socket (SCM_RIGHTS; both ends check that the other runs as
 *    the same user), maps it and reads the same device memory. No ptrace
 *    rights are needed (no pidfd_getfd).
 *  - Devices are matched by UUID: the table stores "name@cuda:N" as
 *    "name@cuda:GPU-<uuid of local device N>", so processes with different
 *    CUDA_VISIBLE_DEVICES meet on one entry. Rows show that key, and in
 *    `device` and device_ordinal this process's ordinal of the device
 *    ("cuda:N"; "cuda:?" and -1 when it does not see it). model_evict()
 *    takes either form of the key. A process whose
 *    driver cannot be loaded, or whose "cuda-ipc" is disabled, keeps the
 *    key as "name@cuda:N" (and its loader cannot ask for a device buffer).
 *  - Lifetime. The memory lives while a process has it mapped. A process
 *    keeps a model it got mapped after its last handle is released, while
 *    the model stays in the table (idle, subject to registry.ttl_s and
 *    the budgets like any node model), until one of its node-scope
 *    contexts of the namespace sees the entry evicted (within a second,
 *    at its background sweep) or its last context of the namespace is
 *    destroyed, or it exits. When no live process has the weights any
 *    more (the last one exited or was killed), the memory is gone: the
 *    entry is removed at the next sweep or get, and the next get loads
 *    again. So a TTL on a GPU means "keep the weights for that long while
 *    some process of the namespace is alive", not "keep them after every
 *    process has gone" (that would need a holder process, which this
 *    version does not run). The loader's process exiting or being killed
 *    after the load loses nothing while other processes have the weights.
 *  - Everything else is the node scope of CPU models: single flight, the
 *    takeover of a dead loader (its half-made memory dies with it),
 *    failure propagation, holders, eviction, rows and counters.
 *  - Limits of this version: the socket is in the abstract namespace
 *    ("\0rm_plugin.weights.<pid>.<start time>"), so processes that share
 *    weights must share a network namespace as well as a PID namespace;
 *    a model must fit in one allocation of the device.
 */

/* ========================================================================
 * REF: loaders
 * Loaders
 * ======================================================================== */

/**
 * Filled in by a loader. The plugin allocates it zeroed with struct_size
 * and abi_version set; the loader sets the fields below.
 *
 * Two ways to load (1.2):
 *  - With a buffer (both scopes; required for node scope): the loader
 *    calls alloc_buffer() once, writes the model into the buffer and
 *    returns RM_OK, leaving `model` NULL (or set to the buffer) and
 *    `destroy` NULL; `bytes` is the buffer's size whatever the loader
 *    sets. The plugin owns the buffer, seals it read-only when the loader
 *    returns (a later write faults), frees it on eviction, and frees it at
 *    once if the loader fails. Every caller gets the buffer as its model.
 *  - Without (process scope only, the 1.0 way): the loader sets `model`,
 *    `bytes` and optionally `destroy`. In node scope such a load fails
 *    with RM_E_NOT_SHAREABLE (its destroy callback, if any, is called
 *    first, so nothing leaks).
 *  - With a device buffer (1.4, keys "name@cuda:N", both scopes): as with
 *    a buffer, through alloc_device_buffer() (REF: gpu-weights).
 * A loader built against 1.2 runs on a 1.1 plugin only without a buffer:
 * test RM_LOADED_MODEL_HAS_BUFFER(out) first (and
 * RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out) for a device buffer).
 */
typedef struct rm_loaded_model {
    uint32_t struct_size;
    uint32_t abi_version;
    /** The model; opaque to the plugin, returned to every caller. */
    void *model;
    /** Its size in bytes, counted against registry.max_bytes. */
    uint64_t bytes;
    /**
     * Called exactly once, when the model is evicted or its context is
     * destroyed, on whichever thread does that (possibly the plugin's
     * eviction thread), never while a registry lock is held. May be NULL.
     * Not called for a load that fails (the loader frees what it made
     * before it returns an error), except as RM_E_NOT_SHAREABLE says above.
     */
    void (*destroy)(void *model, void *destroy_user);
    void *destroy_user;

    /* ---- 1.2, set by the plugin before the loader runs ---------------- */
    /*
     * @fn alloc_buffer
     * Gives the loader a writable buffer of `bytes` bytes, zero-filled and
     * page-aligned; at most once per load.
     *
     * @param self        the struct the loader was given; not NULL. Valid
     *                    only while the loader runs.
     * @param bytes       1 to 2^48.
     * @param out_buffer  not NULL; receives the buffer, NULL on error.
     * @ownership  The plugin owns the buffer: the loader writes it until it
     *             returns; then the plugin seals it read-only, hands it to
     *             every caller as the model, and frees it at eviction (or
     *             at once if the load fails).
     * @return
     *   RM_OK                  *out_buffer is set.
     *   RM_E_INVALID_ARGUMENT  NULL self/out_buffer, bytes 0 or too large,
     *                          or a second call.
     *   RM_E_NO_MEMORY         /dev/shm (node scope) or memory (process
     *                          scope) cannot hold `bytes` (the message says
     *                          which and how much).
     *   RM_E_SYSTEM            the segment could not be created or mapped.
     *   On error the loader should return the code.
     * @threads    Only while the loader runs, and not concurrently with itself.
     * @callbacks  None.
     * @since 1.2
     */
    int32_t (*alloc_buffer)(struct rm_loaded_model *self, uint64_t bytes,
                            void **out_buffer);
    /** The plugin's own; the loader leaves it alone. */
    void *plugin_private;

    /* ---- 1.4, set by the plugin before the loader runs ---------------- */
    /*
     * @fn alloc_device_buffer
     * Gives the loader a writable device buffer of `bytes` bytes on the
     * key's device (REF: gpu-weights), zero-filled; at most one buffer
     * (host or device) per load. The loader fills it by copying from the
     * host or with its own kernels, in device N's primary context (the
     * one the CUDA runtime and PyTorch use), on `*out_stream` or any
     * stream of that context. A call that fails uses up nothing: the
     * loader may ask again, or for a host buffer. The member is set
     * whatever ABI version the host negotiated (the struct is the
     * plugin's); a loader tests RM_LOADED_MODEL_HAS_DEVICE_BUFFER(out).
     *
     * @param self                the struct the loader was given; not NULL.
     *                            Valid only while the loader runs.
     * @param bytes               1 to 2^48.
     * @param out_device_pointer  not NULL; receives the buffer's address
     *                            (a CUdeviceptr), 0 on error.
     * @param out_stream          may be NULL; receives a CUstream the
     *                            plugin made for this load (NULL on error).
     *                            The plugin destroys it after the loader.
     * @ownership  The plugin owns the buffer: the loader writes it until it
     *             returns; the plugin then synchronises device N's primary
     *             context (work the loader queued on any stream ends
     *             first), seals the buffer read-only (node scope), hands
     *             it to every caller as the model and frees it at eviction
     *             (at once if the load fails). `bytes` is the model's size;
     *             rm_model_info.device_bytes is what the device holds.
     * @return
     *   RM_OK                    *out_device_pointer is set.
     *   RM_E_INVALID_ARGUMENT    NULL self/out_device_pointer, bytes 0 or
     *                            too large, a second buffer, or a key whose
     *                            device is not "cuda:N".
     *   RM_E_FEATURE_UNAVAILABLE / RM_E_FEATURE_DISABLED  "cuda-ipc" not
     *                            built / not enabled in this context.
     *   RM_E_DEVICE_UNAVAILABLE  no usable driver or no device N, or (node
     *                            scope) the device cannot export memory as
     *                            POSIX descriptors (the message says which).
     *   RM_E_NO_MEMORY           the device cannot hold `bytes`.
     *   RM_E_SYSTEM              another driver failure (named).
     *   On error the loader should return the code.
     * @threads    Only while the loader runs, and not concurrently with itself.
     * @callbacks  None.
     * @since 1.4
     */
    int32_t (*alloc_device_buffer)(struct rm_loaded_model *self, uint64_t bytes,
                                   uint64_t *out_device_pointer, void **out_stream);
} rm_loaded_model;

/** True when the plugin offers loader buffers (1.2) in `m`. */
#define RM_LOADED_MODEL_HAS_BUFFER(m)                                       \
    ((m)->struct_size >= offsetof(rm_loaded_model, plugin_private) +        \
                             sizeof(void *) &&                              \
     (m)->alloc_buffer != NULL)

/** True when the plugin offers device buffers (1.4) in `m`. */
#define RM_LOADED_MODEL_HAS_DEVICE_BUFFER(m)                                \
    ((m)->struct_size >= offsetof(rm_loaded_model, alloc_device_buffer) +   \
                             sizeof(void *) &&                              \
     (m)->alloc_device_buffer != NULL)

/*
 * @fn loader
 * A host's loader (rm_model_loader_fn): produces the model for `key`. Run
 * by model_get_or_load() on a miss, on the calling thread, with no plugin
 * lock held. It may call model_get_or_load() for other keys, in this or
 * another context. In process scope a cycle, even one through several
 * contexts and threads of the process, gives RM_E_LOAD_CYCLE instead of a
 * deadlock; in node scope only the cycles that "Node scope" lists do
 * (REF: node-scope), and others wait.
 *
 * @param loader_user  what the host passed to model_get_or_load().
 * @param key          the normalised key; valid during the call.
 * @param out          zeroed, struct_size and abi_version set (and the 1.2
 *                     buffer fields); valid only during the call.
 * @ownership  A buffer from out->alloc_buffer() is the plugin's. A model
 *             without one is the host's, destroyed through out->destroy.
 * @return
 *   RM_OK            after filling `out`.
 *   negative values  a failure, handed unchanged to the caller that ran
 *                    the loader and to every caller waiting for the same
 *                    load; no entry is left behind and the next
 *                    get_or_load() runs a loader again.
 *   positive values  treated as RM_E_LOADER_FAILED.
 * @threads    Runs on the thread that called model_get_or_load().
 * @callbacks  Not applicable (it is the host's callback).
 * @since 1.0 (buffers 1.2)
 */
typedef int32_t (*rm_model_loader_fn)(void *loader_user, const char *key,
                                      rm_loaded_model *out);

/* ========================================================================
 * REF: registry-rows
 * Registry rows, counters and reports
 * ======================================================================== */

/** One row of registry_list(). */
typedef struct rm_model_info {
    uint32_t struct_size;
    uint32_t abi_version;
    char key[RM_MODEL_KEY_MAX];  /* normalised */
    char device[32];             /* "cpu", "cuda:0", ... */
    uint64_t bytes;
    uint64_t refcount;           /* handles not yet released */
    uint64_t loaded_at_ns;       /* host clock (monotonic) */
    uint64_t last_used_ns;       /* last release (or the load); rows are
                                    least recently used first: by last
                                    release, and a model gotten since its
                                    last release counts as just used */
    /* ---- 1.2 ---- */
    uint32_t scope;              /* RM_REGISTRY_SCOPE_* of the context */
    uint32_t state;              /* RM_MODEL_STATE_* */
    /** Node scope: processes holding references (dead ones not yet swept
     *  included); process scope: 1 while refcount > 0, else 0. Node-scope
     *  refcount is the references of all processes. */
    uint32_t holders;
    /** Node scope while LOADING: the pid running the loader; else 0. */
    int32_t loader_pid;
    /** Nanoseconds since last_used_ns while no reference is held; 0 while
     *  held or loading. */
    uint64_t idle_ns;
    /* ---- 1.4 ---- */
    /** Where the model lives: RM_MODEL_MEMORY_HOST (the loader's own
     *  pointer, or a private buffer), RM_MEMORY_SHM (a sealed shared
     *  segment, node scope) or RM_MEMORY_CUDA (a device buffer); for a
     *  LOADING row, what is known so far (HOST until the buffer exists). */
    uint32_t memory;
    /** RM_MEMORY_CUDA: this process's ordinal of the device, -1 when it
     *  does not see the device; else -1. */
    int32_t device_ordinal;
    /** RM_MEMORY_CUDA: the device's UUID (in node scope the key names it
     *  too); else zero. */
    uint8_t device_uuid[16];
    /** RM_MEMORY_CUDA: the bytes allocated on the device (`bytes` rounded
     *  up to the allocation granularity in node scope); else 0. */
    uint64_t device_bytes;
} rm_model_info;

/** rm_model_info.memory: private host memory of the process. */
#define RM_MODEL_MEMORY_HOST 0u

#define RM_REGISTRY_SCOPE_PROCESS 0u
#define RM_REGISTRY_SCOPE_NODE 1u
#define RM_MODEL_STATE_READY 0u   /* loaded; rows of both scopes */
#define RM_MODEL_STATE_LOADING 1u /* node scope: a loader is running */

/** Counters since the context was created. */
typedef struct rm_registry_metrics {
    uint32_t struct_size;
    uint32_t abi_version;
    uint64_t hits;          /* found ready */
    uint64_t misses;        /* not ready: ran a loader or waited for one */
    uint64_t loads;         /* loader calls that succeeded */
    uint64_t load_failures; /* loader calls that failed */
    uint64_t evictions;     /* all evictions, the three below added up */
    uint64_t evictions_ttl;
    uint64_t evictions_lru;
    uint64_t evictions_explicit;
    uint64_t models;        /* loaded now */
    uint64_t bytes;         /* sum of their sizes */
    uint64_t over_budget;   /* admissions that left the budget exceeded */
    double hit_rate;        /* hits / (hits + misses); 0 when both are 0 */
    /* ---- 1.2; in node scope hits are calls answered by a reference this
     * context already held, loads and load_failures this context's loader
     * calls, evictions those this context made, and models and bytes count
     * the ready models of the whole node table. ---- */
    uint64_t attaches;      /* node: found ready, mapped without a loader */
    uint64_t takeovers;     /* node: loads taken over from a dead loader */
    uint64_t dead_references; /* node: references of dead processes dropped */
    uint64_t lock_recoveries; /* node: table lock found held by a dead process */
} rm_registry_metrics;

/** What registry_reclaim() did (1.2). */
typedef struct rm_registry_reclaim_report {
    uint32_t struct_size;
    uint32_t abi_version;
    uint64_t dead_references;  /* references of dead processes dropped */
    uint64_t loads_abandoned;  /* claims of dead loaders cleared */
    uint64_t models_evicted;   /* idle models evicted (TTL, budget) */
    uint64_t segments_unlinked;/* orphan model segments of the namespace,
                                  and the node table if it was removed */
    uint64_t bytes_unlinked;   /* /dev/shm bytes freed: evicted models,
                                  abandoned loads and those segments */
} rm_registry_reclaim_report;

/* ========================================================================
 * REF: tensors
 * Shared-memory tensors (feature "shared-memory", ABI 1.1)
 * ========================================================================
 *
 * Pools. Each context that allocates owns one pool: shared memory in
 * /dev/shm under an unguessable name, readable and writable only by the
 * effective user (mode 0600), created on the context's first allocation,
 * and beside it a small control segment that records, per live tensor,
 * its generation, its extent and which contexts hold it. Pages are
 * committed before a tensor uses them, so a full /dev/shm is an error code
 * (or the heap fallback), never SIGBUS. (Segment names and layouts, and
 * the allocator over the pool: docs/internals.md.)
 *
 * Crossing processes. A tensor crosses to another process as a descriptor
 * (REF: descriptors). The importing context maps the pool once (read-only
 * unless asked otherwise), caches the mapping by pool identity, checks
 * every field of the descriptor against what the owner recorded for that
 * live tensor (session, dtype, shape, strides, offset, nbytes, slot,
 * generation: any difference is RM_E_INVALID_DESCRIPTOR, naming the
 * field), and only then forms a pointer. Nothing is copied. Descriptors
 * cross only between contexts of one shm.namespace.
 *
 * Lifetime. A tensor's memory is reused only after every context that
 * holds it (the owner and every importer) has released every handle; only
 * the owner frees. A release in another process travels back through the
 * control segment; the owner frees it on its next tensor call in that
 * context (tensor_allocate, tensor_import of a pool descriptor,
 * tensor_release, tensor_pool_stats, tensor_session_bytes, tensor_reclaim,
 * context_destroy). Handles of a context that is destroyed are released
 * with it. Holds of a process that died are dropped by the owner's
 * tensor_reclaim(); the owner also drops them by itself before it refuses
 * an allocation over shm.pool_bytes (not for shm.session_quota, and not
 * always before it reports the pool or /dev/shm full: call tensor_reclaim()
 * when importers may have died). Segments whose owner died are unlinked by
 * any context created in the namespace with shared-memory enabled, by
 * tensor_reclaim(), and by rmctl gc.
 *
 * An importer's view stays intact until the importer releases it, whatever
 * the owner does meanwhile: releases its handle, destroys its context,
 * dlclose()s the plugin, exits or is killed. The owner's pages are then no
 * longer its own: nothing frees, reuses or discards them while anyone maps
 * them. When the importer releases its last handle on a pool whose owner
 * destroyed its context (or died and was reaped), it unmaps the pool, and
 * the pages go back to /dev/shm; a dead owner's pool that was not yet
 * reaped is unmapped by the importer's tensor_reclaim().
 *
 * Limits: RM_TENSOR_MAX_DIMS dimensions; RM_TENSOR_MAX_HOLDERS importing
 * contexts per pool at once (one more gives RM_E_QUOTA_EXCEEDED); strides
 * are counted in elements (as in DLPack) and must be >= 0; the element size
 * (bits * lanes) is a whole number of bytes.
 *
 * Fork: a child never allocates from its parent's pool (its contexts give
 * RM_E_FORKED); a context created in the child gets its own pool.
 *
 * ========================================================================
 * REF: descriptors
 * Descriptors: what a host may rely on
 * ========================================================================
 * A descriptor is RM_TENSOR_DESCRIPTOR_SIZE (200) bytes, or, as printable
 * text, "rmt1." followed by the same bytes in base64url without padding or
 * blanks: at most RM_TENSOR_DESCRIPTOR_TEXT_MAX bytes with the NUL. It
 * names one live tensor of a pool (pool identity, owner pid and start time,
 * slot, generation, offset, nbytes, session, dtype, shape, strides) and
 * carries a checksum. It is opaque: only the plugin produces and consumes
 * it, and a host copies, logs, stores or routes it as bytes (or text). It
 * is not a reference (see tensor_export). tensor_import checks it: the
 * checksum catches damage in transport and proves nothing; every field is
 * then checked against the live tensor its pool records before a pointer
 * exists, so a damaged, forged or altered descriptor is
 * RM_E_INVALID_DESCRIPTOR (naming the field) or RM_E_STALE_DESCRIPTOR, never
 * a crash. An inline descriptor (tensor_export_inline) is followed by the
 * tensor's nbytes of data and has no text form. The format is versioned:
 * descriptors cross only between processes that run the same plugin
 * version, and one of rm_plugin 0.1 (format version 1) is refused with
 * RM_E_INVALID_DESCRIPTOR and a message that says so. The byte layout and
 * the checksum formula: docs/internals.md.
 *
 * ========================================================================
 * REF: cuda-tensors
 * Device tensors: CUDA IPC (feature "cuda-ipc", ABI 1.3)
 * ========================================================================
 *
 * Allocation. A spec whose `device` is "cuda:N" allocates device memory
 * on the process's local device N (CUDA_VISIBLE_DEVICES applies). The
 * plugin sub-allocates tensors from large blocks (cuda.block_bytes) that
 * it allocates with cuMemAlloc and exports once each: one IPC handle per
 * block, however many tensors it holds. cuda.pool_bytes caps the
 * context's blocks and shm.session_quota applies as for shared memory.
 * There is no fallback: no room is RM_E_NO_MEMORY.
 *
 * The driver. libcuda.so.1 (or cuda.driver) is loaded on the first call
 * that needs it (a device allocation or import, tensor_wrap_device,
 * cuda_info), never at dlopen() or context_create. No driver, NVIDIA's
 * stub library, a driver older than 11.4 and no visible device are
 * RM_E_DEVICE_UNAVAILABLE, with a message that says which and what to
 * do: a new code rather than RM_E_FEATURE_UNAVAILABLE, so that a host can
 * tell "this plugin was built without CUDA" (FEATURE_UNAVAILABLE) from
 * "this machine cannot run it now" (DEVICE_UNAVAILABLE). Every CPU
 * capability keeps working either way. The primary context of each
 * device is used (the one PyTorch and the runtime API use); a host's
 * current context is left as it was.
 *
 * Crossing processes. A device tensor's descriptor has the same 200 bytes
 * and text form as any other (REF: descriptors). It carries the handle's
 * kind explicitly (legacy cuIpc memory handle), the offset in its block
 * and the size, and names a row of the exporter's device table, a small
 * 0600 /dev/shm segment beside its control segment, where the block's
 * 64-byte IPC handle, the device UUID, and the tensor's interprocess
 * event are: so a forged descriptor can name only what the exporter
 * published, and is checked like a pool descriptor. The importer maps the
 * UUID to its own ordinal (processes may see different
 * CUDA_VISIBLE_DEVICES), opens the block's handle once per process
 * (every context of the process shares the open handle), keeps it for
 * every later tensor of that block, and closes it lazily (when the
 * exporter asks for the block back, retires or dies, beyond 64 unused
 * blocks per exporter, at tensor_reclaim and at context_destroy). A descriptor exported by another context of the
 * same process is imported as the exporter's own pointer (the driver
 * refuses to open a process's own handle). Imports need a device with
 * that UUID; without one it is RM_E_DEVICE_UNAVAILABLE.
 *
 * Ordering. Device work is asynchronous. The producer calls
 * tensor_record() on the stream that wrote the tensor before it exports
 * the descriptor; the consumer calls tensor_wait() with the stream that
 * will read it (or RM_TENSOR_WAIT_HOST to block the calling thread).
 * Without a record the consumer's wait orders nothing, and the producer
 * must have synchronised itself.
 *
 * Lifetime. As for shared memory (REF: tensors): a tensor's memory is
 * reused only after the owner and every importer released it or died; the
 * holds live in the exporter's control segment, and holds of dead
 * importers are dropped by the exporter's tensor_reclaim() (and before it
 * refuses an allocation over cuda.pool_bytes). The exporter frees a block
 * (cuMemFree) only when no importer has it open: an importer's cached
 * handle counts, as the driver requires. A descriptor is a name, not a
 * hold: one that is never imported pins nothing, and an import after the
 * owner released the tensor is RM_E_STALE_DESCRIPTOR. When the exporting
 * context is destroyed while importers hold its tensors, its blocks stay
 * allocated in the process until the last importer releases them (swept
 * by the process's next device call, or freed at exit). When the
 * exporting process dies, the driver frees its memory: imports fail with
 * RM_E_STALE_DESCRIPTOR, and tensor_wait() and the DLPack exports of
 * tensors already imported return RM_E_STALE_DESCRIPTOR. What a read
 * through a pointer taken before that returns is the driver's (undefined
 * for legacy IPC); the plugin cannot stop it.
 *
 * Read-only. Legacy IPC maps device memory read-write in every process;
 * an import without RM_TENSOR_IMPORT_WRITABLE is read-only by contract
 * (RM_TENSOR_WRITABLE clear, RM_DLPACK_FLAG_READ_ONLY set), not by the
 * hardware.
 *
 * Not supported for device tensors: tensor_export_inline
 * (RM_E_INVALID_ARGUMENT; copy to the host and allocate a host tensor),
 * and tensors of a forked child (RM_E_FORKED: CUDA cannot be used after
 * fork(); exec instead).
 */
#define RM_TENSOR_MAX_DIMS 8
#define RM_TENSOR_MAX_HOLDERS 31
#define RM_TENSOR_DESCRIPTOR_SIZE 200
#define RM_TENSOR_DESCRIPTOR_TEXT_MAX 280
/** Every tensor's data is aligned to at least this many bytes. */
#define RM_TENSOR_MIN_ALIGNMENT 64

/* ========================================================================
 * REF: tensor-types
 * Tensor types
 * ======================================================================== */

/**
 * Element type, laid out as DLPack's DLDataType. Exactly these codes and
 * widths are accepted (by tensor_allocate and in a descriptor); any other
 * is RM_E_INVALID_ARGUMENT (allocate) or RM_E_INVALID_DESCRIPTOR (import):
 *
 *   code                 bits            NumPy / PyTorch names
 *   RM_DTYPE_INT     0   8 16 32 64      int8 ... int64
 *   RM_DTYPE_UINT    1   8 16 32 64      uint8 ... uint64
 *   RM_DTYPE_FLOAT   2   16 32 64        float16, float32, float64
 *   RM_DTYPE_BFLOAT  4   16              bfloat16
 *   RM_DTYPE_COMPLEX 5   64 128          complex64, complex128
 *   RM_DTYPE_BOOL    6   8               bool
 *
 * lanes >= 1 (1 for scalars; more for vector types such as float32x4), and
 * an element (bits / 8 * lanes) is at most 1024 bytes.
 */
typedef struct rm_dtype {
    uint8_t code;   /* RM_DTYPE_* (DLPack's DLDataTypeCode) */
    uint8_t bits;   /* bits per lane: see the table above */
    uint16_t lanes; /* 1 for scalars */
} rm_dtype;

#define RM_DTYPE_INT 0
#define RM_DTYPE_UINT 1
#define RM_DTYPE_FLOAT 2
#define RM_DTYPE_BFLOAT 4
#define RM_DTYPE_COMPLEX 5
#define RM_DTYPE_BOOL 6

/** Opaque handle to a tensor held by one context; see tensor_release(). */
typedef struct rm_tensor rm_tensor;

/** tensor_allocate(): fail with RM_E_NO_MEMORY rather than fall back to
 *  private (heap) memory when /dev/shm is missing or full. */
#define RM_TENSOR_ALLOC_SHARED_ONLY ((uint64_t)1 << 0)
/** tensor_allocate(): zero the data (otherwise its contents are unspecified). */
#define RM_TENSOR_ALLOC_ZERO ((uint64_t)1 << 1)
/** tensor_allocate(): use spec.strides (otherwise C-contiguous). */
#define RM_TENSOR_ALLOC_STRIDED ((uint64_t)1 << 2)

/** What to allocate. */
typedef struct rm_tensor_spec {
    uint32_t struct_size;
    uint32_t abi_version;
    rm_dtype dtype;
    uint32_t ndim;                       /* 0 (a scalar) to RM_TENSOR_MAX_DIMS */
    int64_t shape[RM_TENSOR_MAX_DIMS];   /* >= 0; a 0 makes an empty tensor */
    int64_t strides[RM_TENSOR_MAX_DIMS]; /* elements, >= 0; read only with
                                            RM_TENSOR_ALLOC_STRIDED */
    uint64_t alignment;                  /* 0, or a power of two <= 2 MiB;
                                            raised to RM_TENSOR_MIN_ALIGNMENT */
    uint64_t session;                    /* charged for shm.session_quota */
    uint64_t flags;                      /* RM_TENSOR_ALLOC_* */
    uint64_t reserved[4];                /* must be zero */
    /* ---- 1.3 (read only when struct_size covers it) ---- */
    /** Where the tensor lives: "" or "cpu" for host memory (shared memory,
     *  or the heap fallback), "cuda:N" (or "cuda", device 0) for device
     *  memory of local device N (REF: cuda-tensors). NUL-terminated. */
    char device[16];
} rm_tensor_spec;

/** rm_tensor_info.flags */
#define RM_TENSOR_WRITABLE ((uint64_t)1 << 0)  /* data may be written */
#define RM_TENSOR_SHAREABLE ((uint64_t)1 << 1) /* in a pool: tensor_export works */
#define RM_TENSOR_IMPORTED ((uint64_t)1 << 2)  /* from tensor_import*() */
#define RM_TENSOR_OWNED ((uint64_t)1 << 3)     /* allocated by this context */

/** DLPack's DLDevice (REF: dlpack). */
typedef struct rm_dl_device {
    int32_t device_type; /* 1 = kDLCPU, 2 = kDLCUDA */
    int32_t device_id;
} rm_dl_device;

/** What a handle refers to; filled by tensor_info(). */
typedef struct rm_tensor_info {
    uint32_t struct_size;
    uint32_t abi_version;
    /** The first element. Valid while the handle is held; writable only
     *  with RM_TENSOR_WRITABLE (an importer's read-only view is mapped
     *  PROT_READ: a write faults). */
    void *data;
    uint64_t nbytes;   /* the bytes the shape and strides span */
    rm_dtype dtype;
    uint32_t ndim;
    int64_t shape[RM_TENSOR_MAX_DIMS];
    int64_t strides[RM_TENSOR_MAX_DIMS]; /* always set, in elements */
    uint64_t session;
    uint64_t flags;                      /* RM_TENSOR_WRITABLE ... */
    uint64_t pool_id;                    /* 0 for private memory */
    uint32_t owner_pid;                  /* the allocating process */
    uint32_t reserved0;
    /* ---- 1.3 ---- */
    /** DLPack's device: {1 (kDLCPU), 0}, or {2 (kDLCUDA), the device's
     *  ordinal in this process}. `data` is a device pointer for CUDA. */
    rm_dl_device device;
    uint8_t device_uuid[16];             /* the device's UUID; zero for CPU */
} rm_tensor_info;

/** tensor_import*() flags. */
#define RM_TENSOR_IMPORT_WRITABLE ((uint64_t)1 << 0) /* map the pool read-write */

/** Counters of this context's own pool and tensors; tensor_pool_stats(). */
typedef struct rm_tensor_pool_stats {
    uint32_t struct_size;
    uint32_t abi_version;
    char pool_name[96];        /* "" until the first shared allocation */
    uint64_t pool_id;
    uint64_t pool_bytes;       /* shm.pool_bytes */
    uint64_t live_tensors;     /* shared tensors not yet freed */
    uint64_t live_bytes;       /* their nbytes, counted against pool_bytes */
    uint64_t committed_bytes;  /* /dev/shm bytes the pool holds now */
    uint64_t heap_tensors;     /* live private (fallback) tensors */
    uint64_t heap_bytes;
    uint64_t allocations;      /* since the context was created */
    uint64_t fallbacks;        /* allocations that fell back to the heap */
    uint64_t frees;            /* shared tensors freed */
    uint64_t remote_releases;  /* frees that another context's release caused */
    uint64_t holders;          /* importing contexts registered now */
    uint64_t dead_holders_reclaimed;
    uint64_t holds_reclaimed;  /* tensor holds dropped for dead holders */
    uint64_t imports;          /* tensor_import*() successes in this context */
    uint64_t pools_mapped;     /* other pools this context maps now */
    /** Segments of dead owners in the namespace that context creation
     *  unlinked, and the /dev/shm bytes they held. */
    uint64_t startup_segments_unlinked;
    uint64_t startup_bytes_unlinked;
    /* ---- 1.3: device tensors ---- */
    uint64_t cuda_tensors;          /* live device tensors this context allocated */
    uint64_t cuda_bytes;            /* their nbytes */
    uint64_t cuda_blocks;           /* exportable device blocks held now */
    uint64_t cuda_block_bytes;      /* their size: counted against cuda.pool_bytes */
    uint64_t cuda_handles_opened;   /* IPC handles opened (cuIpcOpenMemHandle) */
    uint64_t cuda_handles_open;     /* ... and open now (cached) */
    uint64_t cuda_handle_cache_hits;/* imports served by a handle already open */
    uint64_t cuda_blocks_orphaned;  /* blocks of destroyed contexts of this process
                                       still held by importers */
} rm_tensor_pool_stats;

/** What tensor_reclaim() did. */
typedef struct rm_reclaim_report {
    uint32_t struct_size;
    uint32_t abi_version;
    uint64_t dead_holders;     /* importing contexts of dead processes dropped */
    uint64_t holds_dropped;    /* their holds on this context's tensors */
    uint64_t tensors_freed;    /* tensors freed as a result, or waiting */
    uint64_t segments_unlinked;/* segments of dead owners in the namespace */
    uint64_t bytes_unlinked;   /* /dev/shm bytes those segments held */
    /* ---- 1.3 ---- */
    uint64_t cuda_handles_closed; /* cached IPC handles closed (exporter gone,
                                     or its block asked back) */
    uint64_t cuda_blocks_freed;   /* device blocks freed (none of them in use) */
} rm_reclaim_report;

/** One pool of the namespace, as shm_list() sees it (rmctl ls). */
typedef struct rm_shm_pool_info {
    uint32_t struct_size;
    uint32_t abi_version;
    char name[96];             /* the data segment, as for shm_open() */
    uint64_t pool_id;
    uint32_t owner_pid;
    uint32_t owner_alive;      /* 1: pid and start time match a live process */
    uint64_t owner_start_time; /* clock ticks since boot, /proc/<pid>/stat */
    uint64_t pool_bytes;
    uint64_t committed_bytes;  /* allocated in /dev/shm now */
    uint64_t live_tensors;
    uint64_t live_bytes;
    uint32_t holders;          /* importing contexts registered */
    uint32_t readable;         /* 0: the control segment could not be read
                                  (another user's, missing, or damaged);
                                  then only name, pool_id, owner_pid and
                                  owner_alive (by pid alone) are set */
    /* ---- 1.3 ---- */
    uint32_t memory;           /* RM_MEMORY_SHM, or RM_MEMORY_CUDA: the row is
                                  a device table (name); pool_bytes is
                                  cuda.pool_bytes, committed_bytes the device
                                  blocks' bytes, live_* the device tensors */
    uint32_t device_blocks;    /* RM_MEMORY_CUDA: exportable blocks */
} rm_shm_pool_info;

/** rm_shm_pool_info.memory (1.3; a 1.1 or 1.2 plugin lists only shared
 *  memory and leaves the field out). */
#define RM_MEMORY_SHM 1
#define RM_MEMORY_CUDA 2

/** One device the CUDA driver shows this process (cuda_info). */
typedef struct rm_cuda_device {
    int32_t ordinal;            /* local: CUDA_VISIBLE_DEVICES applies */
    uint32_t reserved;
    uint8_t uuid[16];
    char uuid_text[48];         /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
} rm_cuda_device;

#define RM_CUDA_INFO_MAX_DEVICES 16

/** What cuda_info() found (1.3). */
typedef struct rm_cuda_info {
    uint32_t struct_size;
    uint32_t abi_version;
    /** RM_OK when the driver is loaded and shows a device; otherwise the
     *  code that device tensors get now (RM_E_DEVICE_UNAVAILABLE,
     *  RM_E_FORKED, ...), with `message` saying why. */
    int32_t status;
    int32_t driver_version;     /* cuDriverGetVersion(), e.g. 12080; 0 if none */
    uint32_t device_count;      /* all visible; at most RM_CUDA_INFO_MAX_DEVICES rows */
    uint32_t reserved;
    char library[256];          /* cuda.driver */
    /** One line: the driver, how entry points were bound and the devices,
     *  or why there is no usable driver. */
    char message[512];
    rm_cuda_device devices[RM_CUDA_INFO_MAX_DEVICES];
} rm_cuda_info;

/** tensor_wait() flags: block the calling thread (the stream is ignored). */
#define RM_TENSOR_WAIT_HOST ((uint64_t)1 << 0)

/**
 * tensor_wrap_device(): called once, when nobody holds the wrapped memory
 * any more (the host released its handle, and every importer released its
 * handles or died and was reclaimed): from then on the host may reuse or
 * free it. Runs on a thread that is in a call of the plugin on the same
 * context, or in context_destroy, never under the plugin's locks; it may
 * call the plugin.
 */
typedef void (*rm_device_released_fn)(void *user, void *device_pointer);

/* ========================================================================
 * REF: dlpack
 * DLPack, laid out exactly as dlpack.h's DLDevice, DLTensor,
 * DLManagedTensor (all versions) and DLManagedTensorVersioned (1.0); a host
 * that includes dlpack.h casts the pointers. tests/abi checks the layout
 * against dlpack.h.
 * ======================================================================== */
/* rm_dl_device (DLDevice) is defined with rm_tensor_info, which uses it. */
typedef struct rm_dl_tensor {
    void *data;
    rm_dl_device device;
    int32_t ndim;
    rm_dtype dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} rm_dl_tensor;

typedef struct rm_dl_managed_tensor {
    rm_dl_tensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct rm_dl_managed_tensor *self);
} rm_dl_managed_tensor;

typedef struct rm_dl_pack_version {
    uint32_t major;
    uint32_t minor;
} rm_dl_pack_version;

/** DLPack 1.0 flag: the data must not be written. */
#define RM_DLPACK_FLAG_READ_ONLY ((uint64_t)1 << 0)

typedef struct rm_dl_managed_tensor_versioned {
    rm_dl_pack_version version; /* 1.0 */
    void *manager_ctx;
    void (*deleter)(struct rm_dl_managed_tensor_versioned *self);
    uint64_t flags;             /* RM_DLPACK_FLAG_READ_ONLY for read-only views */
    rm_dl_tensor dl_tensor;
} rm_dl_managed_tensor_versioned;

/* ========================================================================
 * REF: vtable
 * The vtable, ABI major 1
 * ========================================================================
 * Static; never freed. One line per member, in ABI order; each member is
 * documented below (REF: members, "@fn <member>"), and the rules all of
 * them share are in REF: conventions. The markers say which ABI version
 * added the members below them: 1.1 shared-memory tensors, 1.2 the
 * node-scope registry, 1.3 device tensors, 1.4 model_to_dlpack. A plugin
 * older than a member lacks it: check members
 * newer than 1.0 with RM_PLUGIN_HAS().
 */
typedef struct rm_plugin_v1 {
    /* ---- 1.0 ---- */
    uint32_t struct_size;    /* sizeof the plugin's vtable */
    uint32_t abi_version;    /* highest version the plugin implements */
    uint64_t features_built; /* RM_FEATURE_* compiled in */
    const char *name;        /* "rm_plugin" */
    const char *version;     /* RM_PLUGIN_VERSION_STRING of the build */
    const char *(*error_name)(int32_t code);
    const char *(*strerror)(int32_t code);
    int32_t (*context_create)(const rm_context_options *options, rm_context **out_context);
    void (*context_destroy)(rm_context *context);
    const char *(*context_last_error)(const rm_context *context);
    int32_t (*context_info)(const rm_context *context, rm_context_info *out);
    int32_t (*config_get)(const rm_context *context, const char *key, char *buffer, uint64_t buffer_size, uint64_t *out_needed);
    const char *(*config_key_at)(uint32_t index);
    int32_t (*model_key_normalize)(const char *key, char *out, uint64_t out_size);
    int32_t (*model_get_or_load)(rm_context *context, const char *key, rm_model_loader_fn loader, void *loader_user, rm_model_handle **out_handle, void **out_model);
    int32_t (*model_release)(rm_context *context, rm_model_handle *handle);
    int32_t (*model_evict)(rm_context *context, const char *key);
    int32_t (*registry_metrics)(rm_context *context, rm_registry_metrics *out);
    int32_t (*registry_list)(rm_context *context, rm_model_info *out, uint32_t info_struct_size, uint32_t capacity, uint32_t *out_count);
    /* ---- 1.1 ---- */
    int32_t (*tensor_allocate)(rm_context *context, const rm_tensor_spec *spec, rm_tensor **out_tensor);
    int32_t (*tensor_info)(rm_context *context, const rm_tensor *tensor, rm_tensor_info *out);
    int32_t (*tensor_export)(rm_context *context, const rm_tensor *tensor, void *out, uint64_t out_size);
    int32_t (*tensor_export_text)(rm_context *context, const rm_tensor *tensor, char *out, uint64_t out_size);
    int32_t (*tensor_export_inline)(rm_context *context, const rm_tensor *tensor, void *out, uint64_t out_size, uint64_t *out_needed);
    int32_t (*tensor_import)(rm_context *context, const void *descriptor, uint64_t size, uint64_t flags, rm_tensor **out_tensor);
    int32_t (*tensor_import_text)(rm_context *context, const char *text, uint64_t flags, rm_tensor **out_tensor);
    int32_t (*tensor_release)(rm_context *context, rm_tensor *tensor);
    int32_t (*tensor_to_dlpack)(rm_context *context, rm_tensor *tensor, rm_dl_managed_tensor **out);
    int32_t (*tensor_to_dlpack_versioned)(rm_context *context, rm_tensor *tensor, rm_dl_managed_tensor_versioned **out);
    int32_t (*tensor_pool_stats)(rm_context *context, rm_tensor_pool_stats *out);
    int32_t (*tensor_session_bytes)(rm_context *context, uint64_t session, uint64_t *out_bytes);
    int32_t (*tensor_reclaim)(rm_context *context, rm_reclaim_report *out);
    int32_t (*shm_list)(rm_context *context, rm_shm_pool_info *out, uint32_t info_struct_size, uint32_t capacity, uint32_t *out_count);
    /* ---- 1.2 ---- */
    int32_t (*registry_reclaim)(rm_context *context, rm_registry_reclaim_report *out);
    /* ---- 1.3 ---- */
    int32_t (*tensor_wrap_device)(rm_context *context, const rm_tensor_spec *spec, void *device_pointer, rm_device_released_fn released, void *released_user, rm_tensor **out_tensor);
    int32_t (*tensor_record)(rm_context *context, rm_tensor *tensor, void *stream);
    int32_t (*tensor_wait)(rm_context *context, rm_tensor *tensor, void *stream, uint64_t flags);
    int32_t (*cuda_info)(rm_context *context, rm_cuda_info *out);
    /* ---- 1.4 ---- */
    int32_t (*model_to_dlpack)(rm_context *context, rm_model_handle *handle, rm_dl_managed_tensor_versioned **out);
} rm_plugin_v1;

/* ========================================================================
 * REF: members
 * The vtable's members, one block each, in vtable order
 * ========================================================================
 * "The context checks" below means the checks of REF: conventions, in
 * their order: RM_E_INVALID_ARGUMENT (NULL context), RM_E_FORKED (a
 * context of the parent of a fork()), then for capability members
 * RM_E_FEATURE_UNAVAILABLE (not built) and RM_E_FEATURE_DISABLED (not
 * enabled in this context).
 *
 * ---- 1.0: errors ---------------------------------------------------- */

/**
 * @fn error_name
 * The static name of a code ("INVALID_KEY" for RM_E_INVALID_KEY).
 *
 * @param code       any value.
 * @ownership  A static string, never freed.
 * @return     The name, "OK" for RM_OK, or "UNKNOWN" if `code` is not a
 *             code. Never NULL.
 * @threads    Thread-safe; needs no context.
 * @callbacks  None.
 * @since 1.0
 */

/**
 * @fn strerror
 * The static description of a code (the message of RM_ERROR_MAP).
 *
 * @param code       any value.
 * @ownership  A static string, never freed.
 * @return     The description, or "unknown error" if `code` is not a code.
 *             Never NULL.
 * @threads    Thread-safe; needs no context.
 * @callbacks  None.
 * @since 1.0
 */

/* ---- 1.0: contexts and configuration -------------------------------- */

/**
 * @fn context_create
 * Creates a context from `options` (NULL: defaults and the environment),
 * applying configuration in the order REF: config gives. With
 * "shared-memory" enabled it creates and checks the context's allocator
 * arena and unlinks what dead owners left in shm.namespace (no pool yet:
 * the first allocation makes it). With registry.scope = node it opens the
 * namespace's node table, creating it on first use, so a full /dev/shm is
 * RM_E_NO_MEMORY here, and starts the context's background sweep.
 *
 * @param options      NULL, or made with RM_STRUCT_INIT: entries may be
 *                     NULL when entry_count is 0; config_path optional;
 *                     flags RM_CONTEXT_*; reserved zero.
 * @param out_context  not NULL; receives the context, NULL on error.
 * @ownership  The host owns the new context and destroys it with
 *             context_destroy(). The options, their strings and the file
 *             are read during the call only.
 * @return
 *   RM_OK                      *out_context is set.
 *   RM_E_INVALID_ARGUMENT      NULL out_context; reserved fields or unknown
 *                              flag bits set; NULL entries with a non-zero
 *                              entry_count; a NULL key or value in entries.
 *   RM_E_STRUCT_SIZE           options->struct_size below the 1.0 size.
 *   RM_E_CONFIG_UNKNOWN_KEY    a key not listed in rm_context_options.
 *   RM_E_CONFIG_INVALID_VALUE  malformed or out-of-range value.
 *   RM_E_CONFIG_FILE           the file cannot be read, or a line is not
 *                              `key = value` (or is too long, or holds a
 *                              NUL byte).
 *   RM_E_FEATURE_UNAVAILABLE   "features" names a capability not built.
 *   RM_E_ALLOCATOR             the bundled allocator failed its check.
 *   RM_E_NO_MEMORY             out of memory; (1.2, node scope) /dev/shm
 *                              has no room for a new node table.
 *   RM_E_SYSTEM                a thread or lock could not be created, or
 *                              (node scope) the table could not be opened,
 *                              created or mapped.
 *   RM_E_CORRUPT_STATE         (1.2) registry.scope = node and the
 *                              namespace's node table is not a valid
 *                              0600 table of this user, or one of
 *                              another plugin version's layout, or its
 *                              lock is unusable (the message names the
 *                              file; remove it when no process uses it).
 *   RM_E_QUOTA_EXCEEDED        (1.2) node scope: 1024 live processes
 *                              already use the namespace's node table.
 *   On error the reason is logged and returned by context_last_error(NULL)
 *   on this thread.
 * @threads    Thread-safe.
 * @callbacks  The log sink (the reason of a failure). No other host
 *             callback; none fires after an error.
 * @since 1.0
 */

/**
 * @fn context_destroy
 * Destroys a context: stops and joins its threads, destroys every model it
 * holds (calling each destroy callback once, handles or not; handles still
 * held become invalid and are logged as a warning), releases every tensor
 * handle it still holds (logged as a warning; importers of its tensors keep
 * their views, REF: tensors), gives back its node-scope references and
 * leaves the node table (removing it if this was the namespace's last
 * context and nothing is left in it), and frees everything. In a child of
 * fork(), a context of the parent is only freed (its threads and shared
 * state are the parent's).
 *
 * @param context  a context from context_create(), or NULL (a no-op).
 * @ownership  The context, its handles, and DLPack exports of its tensors
 *             are invalid afterwards (call every DLPack deleter first).
 * @return     Nothing.
 * @threads    Must not race with any other call on the same context
 *             (handle releases and DLPack deleters included).
 * @callbacks  Destroy callbacks of the context's models, on the calling
 *             thread, before it returns; the log sink.
 * @since 1.0
 */

/**
 * @fn context_last_error
 * The message of the calling thread's last failure, if it was recorded
 * for `context`: one message is kept per thread, and a later failure on
 * another context (or without one) replaces it. NULL asks for failures
 * without a context: rm_plugin_negotiate, context_create,
 * model_key_normalize, and a call given a NULL context.
 *
 * @param context  a context, or NULL.
 * @ownership  Owned by the plugin; valid on this thread until its next call
 *             into the plugin.
 * @return     The message, or "" when there is none. Never NULL.
 * @threads    Thread-safe (each thread sees its own).
 * @callbacks  None.
 * @since 1.0
 */

/**
 * @fn context_info
 * Fills *out: negotiated version, capabilities built and enabled, the
 * allocator's version and arena.
 *
 * @param context  a live context.
 * @param out      not NULL; struct_size set by the caller (RM_STRUCT_INIT).
 * @ownership  The host's struct; the plugin writes what fits in
 *             out->struct_size.
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT  NULL context or out.
 *   RM_E_FORKED            a context of the parent of a fork().
 *   RM_E_STRUCT_SIZE       out->struct_size below the 1.0 size.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.0
 */

/**
 * @fn config_get
 * Writes the effective value of configuration `key` into `buffer` as
 * NUL-terminated text in the accepted form, expanded (features as the
 * list of enabled names or "none", sizes in bytes).
 *
 * @param context      a live context.
 * @param key          a key name (config_key_at()); not NULL.
 * @param buffer       receives the value; may be NULL (with any
 *                     buffer_size) to ask for the size.
 * @param buffer_size  its size in bytes.
 * @param out_needed   optional; gets the size needed, NUL included (also
 *                     with RM_E_BUFFER_TOO_SMALL).
 * @ownership  The host's buffer; nothing is kept.
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT    NULL context or key.
 *   RM_E_FORKED              a context of the parent of a fork().
 *   RM_E_CONFIG_UNKNOWN_KEY  not a key (*out_needed untouched).
 *   RM_E_BUFFER_TOO_SMALL    buffer NULL or smaller than needed (buffer
 *                            untouched).
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.0
 */

/**
 * @fn config_key_at
 * The name of the index-th configuration key (0-based, stable order), or
 * NULL past the last one.
 *
 * @param index  any value.
 * @ownership  Static strings; no context needed.
 * @return     The name, or NULL past the last key.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.0
 */

/* ---- 1.0: the model registry ---------------------------------------- */

/**
 * @fn model_key_normalize
 * Checks a model key against the grammar (REF: model-keys) and writes its
 * normalised form into `out`.
 *
 * @param key       NUL-terminated; not NULL (at most RM_MODEL_KEY_MAX
 *                  bytes are read).
 * @param out       not NULL; may be `key` itself (normalised in place).
 * @param out_size  RM_MODEL_KEY_MAX always suffices.
 * @ownership  The host's buffers; nothing is kept.
 * @return
 *   RM_OK
 *   RM_E_INVALID_KEY          the key breaks the grammar (the message,
 *                             through context_last_error(NULL), says how).
 *   RM_E_BUFFER_TOO_SMALL     out_size is too small for the normalised key.
 *   RM_E_INVALID_ARGUMENT     NULL key or out.
 *   RM_E_FEATURE_UNAVAILABLE  the registry was not built.
 * @threads    Thread-safe; needs no context.
 * @callbacks  None.
 * @since 1.0
 */

/**
 * @fn model_get_or_load
 * Returns the model for `key`, loading it at most once per context
 * (process scope) or per machine (node scope, REF: node-scope). A ready
 * model is a hit. Otherwise the first caller runs
 * `loader(loader_user, normalised_key, &loaded)` on its own thread while
 * concurrent callers for the same key block (no spinning) until it ends
 * and then share its result. Loads of different keys run concurrently.
 * Admitting a new model evicts idle models in LRU order to fit
 * registry.max_bytes and registry.max_models. Models in use are never
 * evicted: if the budget cannot be met the model is admitted anyway,
 * `over_budget` is counted and a warning logged, and idle models are
 * evicted as soon as they are released.
 *
 * @param context      a live context.
 * @param key          "name@device"; not NULL.
 * @param loader       not NULL; runs only on a miss (REF: loaders).
 * @param loader_user  passed to the loader unchanged; may be NULL.
 * @param out_handle   not NULL; receives a reference, NULL on error.
 * @param out_model    not NULL; receives the model, NULL on error: the
 *                     loader's model pointer, or its buffer (the start of
 *                     this process's read-only mapping in node scope);
 *                     a device pointer for a device buffer (1.4).
 * @ownership  *out_handle is one reference, the caller's until it gives it
 *             back with model_release(). *out_model is valid while the
 *             context holds a handle on the model. The key is copied. A
 *             loader buffer is the plugin's; a model without one is the
 *             host's, destroyed through its destroy callback.
 * @return
 *   RM_OK                     *out_handle and *out_model are set.
 *   RM_E_INVALID_ARGUMENT     NULL context, key, loader, out_handle or
 *                             out_model; the loader succeeded but left
 *                             model NULL (process scope; node scope:
 *                             RM_E_NOT_SHAREABLE); with a loader buffer
 *                             (1.2), the loader set `destroy`, or a
 *                             `model` other than the buffer.
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                             the context checks ("model-registry").
 *   RM_E_INVALID_KEY          the key breaks the grammar.
 *   RM_E_LOAD_CYCLE           the key is being loaded by a loader that is
 *                             (directly or through other loads) waiting for
 *                             this caller (node scope: for the cycles
 *                             "Node scope" lists; others wait).
 *   the loader's code         any negative code the loader returned
 *                             (positive ones become RM_E_LOADER_FAILED),
 *                             for the caller that ran it and every caller
 *                             that waited for that load.
 *   RM_E_SHUTTING_DOWN        the context is being destroyed.
 *   RM_E_NO_MEMORY            out of memory.
 *   RM_E_SYSTEM               the loader's buffer could not be sealed.
 *   Node scope (1.2), also:
 *   RM_E_NOT_SHAREABLE        the loader returned without a buffer.
 *   RM_E_QUOTA_EXCEEDED       the node table has no free entry (every
 *                             entry loading or held by a live process),
 *                             or RM_NODE_MAX_HOLDER_PROCESSES processes
 *                             already hold the model.
 *   RM_E_CORRUPT_STATE        the table says ready but the model's segment
 *                             is missing or not what the plugin sealed; or
 *                             the claim of this caller's load was taken
 *                             over while its loader ran (another process
 *                             could not see this one alive).
 *   RM_E_NO_MEMORY, RM_E_SYSTEM  mapping the model failed.
 *   table codes               REF: node-scope.
 *   Device weights (1.4, REF: gpu-weights), also:
 *   RM_E_DEVICE_UNAVAILABLE   the weights are ready on a device this
 *                             process cannot map them on (the driver
 *                             lacks POSIX-descriptor VMM, say).
 *   RM_E_SYSTEM               no live process that has the weights
 *                             answered with a descriptor (the message
 *                             names each one tried and why), or mapping
 *                             them failed (the driver call is named).
 *   A loader failure in another process reaches this caller with the
 *   loader's code (when it was waiting for that load).
 * @threads    Thread-safe. Callers of one key in any threads, contexts (and,
 *             in node scope, processes) share one load.
 * @callbacks  `loader` runs at most once per call, on the calling thread,
 *             before the call returns, never after it. A caller that waited
 *             for another's load does not run its own, except in node scope
 *             when that load was abandoned (its process died) or its
 *             outcome was lost (a full table reused the entry). The
 *             destroy callback of a model this call admitted runs later,
 *             exactly once (eviction or context_destroy()). After an error
 *             no callback of this call fires: a failed load's destroy is
 *             not called, except that RM_E_NOT_SHAREABLE calls it before
 *             returning. Admitting a model may run the destroy callbacks
 *             of idle models it evicts, on the calling thread, before it
 *             returns (process scope).
 * @since 1.0 (loader buffers and node scope 1.2)
 */

/**
 * @fn model_release
 * Gives back a reference from model_get_or_load(). The model stays loaded
 * (idle) until TTL, LRU pressure, model_evict() or context_destroy(). In
 * node scope the context's last handle on a model gives its node reference
 * back and unmaps the model; the model stays loaded node-wide.
 *
 * @param context  the context that returned the handle.
 * @param handle   not NULL; a handle not yet released. Releasing a handle
 *                 twice or a handle from another context is undefined.
 * @ownership  The reference ends; *out_model of that get must not be used
 *             once the context holds no handle on the model.
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT  NULL context or handle, or a handle with no
 *                          reference left, when that can still be seen.
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                          the context checks ("model-registry").
 * @threads    Thread-safe; a handle may be released on any thread.
 * @callbacks  Process scope: while the registry is over budget, the
 *             destroy callbacks of idle models evicted to fit it, on the
 *             calling thread, before it returns.
 * @since 1.0
 */

/**
 * @fn model_evict
 * Evicts `key` now if no handle holds it (its destroy callback runs
 * before this returns); NULL evicts every idle model. Node scope: the
 * model is evicted node-wide (segment unlinked) if no live process holds
 * it (references of dead processes are dropped first); RM_E_BUSY
 * otherwise.
 *
 * @param context  a live context.
 * @param key      a model key, or NULL for every idle model. In node scope
 *                 also a device-weights row's key, "name@cuda:GPU-<uuid>"
 *                 (1.4, REF: gpu-weights).
 * @ownership  -
 * @return
 *   RM_OK
 *   RM_E_NOT_FOUND         not loaded (node scope: also when the namespace
 *                          has no table, or the key's last load failed).
 *   RM_E_BUSY              in use (node scope: by a live process), or
 *                          still loading.
 *   RM_E_INVALID_KEY       the key breaks the grammar.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("model-registry").
 *   table codes            node scope (REF: node-scope).
 * @threads    Thread-safe.
 * @callbacks  Process scope: the destroy callbacks of the evicted models,
 *             on the calling thread, before it returns. None after an
 *             error.
 * @since 1.0
 */

/**
 * @fn registry_metrics
 * Fills *out with the registry's counters (rm_registry_metrics says what
 * each counts in each scope).
 *
 * @param context  a live context.
 * @param out      not NULL; struct_size set by the caller.
 * @ownership  The host's struct; the plugin writes what fits.
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("model-registry"); NULL out.
 *   RM_E_STRUCT_SIZE       out->struct_size below the 1.0 size.
 *   table codes            node scope (REF: node-scope).
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.0
 */

/**
 * @fn registry_list
 * Writes one rm_model_info per loaded model (in least-recently-used first
 * order) into `out[0..capacity)`, each of size `info_struct_size` (the
 * host's sizeof(rm_model_info)), and sets *out_count to the number of
 * loaded models. Node scope (1.2): one row per entry of the node table,
 * loading ones included (state, holders, loader_pid, idle_ns), every
 * process's references in refcount; a namespace without a table has no
 * rows.
 *
 * @param context           a live context.
 * @param out               rows; may be NULL when capacity is 0.
 * @param info_struct_size  the host's row size, at least the 1.0 size.
 * @param capacity          rows `out` holds.
 * @param out_count         not NULL; receives the number of models.
 * @ownership  The host's buffer; rows are written whole (REF: conventions).
 * @return
 *   RM_OK
 *   RM_E_BUFFER_TOO_SMALL  *out_count > capacity (the first `capacity`
 *                          rows are written).
 *   RM_E_INVALID_ARGUMENT  NULL out_count, or NULL out with capacity > 0.
 *   RM_E_STRUCT_SIZE       info_struct_size below the 1.0 size.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("model-registry").
 *   RM_E_NO_MEMORY         node scope: out of memory for the rows.
 *   table codes            node scope (REF: node-scope).
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.0
 */

/* ---- 1.1: shared-memory tensors --------------------------------------
 * Every tensor member applies the context checks ("shared-memory"), gives
 * RM_E_INVALID_ARGUMENT for NULL pointers it needs, and RM_E_FORKED in a
 * child of fork(). A handle belongs to the context that returned it; using
 * it with another context, or after releasing it, is undefined. */

/**
 * @fn tensor_allocate
 * Allocates a tensor in the context's pool (creating the pool on first
 * use) and returns a writable handle. nbytes is what the shape and
 * strides span (element size * (1 + sum((shape[i]-1) * strides[i]))),
 * at least one byte is reserved even for an empty tensor. The data is
 * aligned to spec->alignment (at least RM_TENSOR_MIN_ALIGNMENT), zeroed
 * with RM_TENSOR_ALLOC_ZERO. Without RM_TENSOR_ALLOC_SHARED_ONLY, a
 * missing or full /dev/shm (or a full pool) gives a private heap tensor
 * instead (RM_TENSOR_SHAREABLE clear; counted as a fallback and logged
 * once per pool).
 * With a spec of 1.3 or later whose `device` is "cuda:N", allocates device
 * memory instead (REF: cuda-tensors): aligned to at least 256 bytes,
 * zeroed on the device with RM_TENSOR_ALLOC_ZERO, never a fallback.
 *
 * @param context     a live context.
 * @param spec        not NULL; struct_size at least the 1.1 size (a
 *                    smaller one than 1.3's allocates host memory).
 * @param out_tensor  not NULL; receives the handle, NULL on error.
 * @ownership  The handle is the caller's until tensor_release() (or
 *             context_destroy()); the data is valid while it is held.
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT  a bad dtype, ndim, shape, stride, alignment,
 *                          reserved field or flag; a size that overflows;
 *                          NULL spec or out_tensor.
 *   RM_E_STRUCT_SIZE       spec smaller than its 1.1 size.
 *   RM_E_QUOTA_EXCEEDED    shm.session_quota or shm.pool_bytes would be
 *                          exceeded (the message names the limit, the
 *                          bytes in use and the bytes asked for), or the
 *                          pool's shm.max_tensors slots are all live.
 *   RM_E_NO_MEMORY         with RM_TENSOR_ALLOC_SHARED_ONLY: /dev/shm is
 *                          missing or full, or the pool is (the message
 *                          says which and how many bytes); otherwise the
 *                          heap is full.
 *   RM_E_ALLOCATOR         the bundled allocator refused to set up the
 *                          pool (first allocation).
 *   Device tensors (1.3):
 *   RM_E_INVALID_ARGUMENT  a device other than "", "cpu", "cuda", "cuda:N";
 *                          a device this process does not see;
 *                          RM_TENSOR_ALLOC_SHARED_ONLY.
 *   RM_E_NO_MEMORY         the device or cuda.pool_bytes has no room, or
 *                          every block row is taken.
 *   RM_E_DEVICE_UNAVAILABLE no usable driver or device (message says why).
 *   RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED  "cuda-ipc" not built,
 *                          or not enabled.
 *   RM_E_SYSTEM            another driver failure (message names the call).
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                          the context checks ("shared-memory"); NULL
 *                          context: RM_E_INVALID_ARGUMENT.
 * @threads    Thread-safe; a context's allocations are serialised, so
 *             concurrent allocations never exceed a quota together (a
 *             device allocation holds the context's lock while the driver
 *             allocates a new block: milliseconds, rarely).
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_info
 * Fills *out with what the handle refers to (REF: tensor-types,
 * rm_tensor_info). For a device tensor (1.3), data is a device pointer
 * of this process, device is {2, the device's ordinal here}, and
 * device_uuid names it; pool_id is the exporter's device table.
 *
 * @param context  the handle's context.
 * @param tensor   not NULL; a live handle.
 * @param out      not NULL; struct_size set by the caller.
 * @ownership  The host's struct; out->data is valid while the handle is
 *             held.
 * @return
 *   RM_OK
 *   RM_E_STRUCT_SIZE       out->struct_size below the 1.1 size.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          tensor or out.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_export
 * Writes the tensor's descriptor (RM_TENSOR_DESCRIPTOR_SIZE bytes,
 * REF: descriptors) to `out`.
 *
 * @param context   the handle's context.
 * @param tensor    not NULL; a live handle on a shareable tensor.
 * @param out       not NULL.
 * @param out_size  at least RM_TENSOR_DESCRIPTOR_SIZE.
 * @ownership  The descriptor is not a reference: the tensor stays alive
 *             only while some handle holds it, so keep the handle until the
 *             receiver has imported (or acknowledged).
 * @return
 *   RM_OK
 *   RM_E_NOT_SHAREABLE     a heap tensor: use tensor_export_inline.
 *   RM_E_BUFFER_TOO_SMALL  out_size below RM_TENSOR_DESCRIPTOR_SIZE.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          tensor or out.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_export_text
 * The same descriptor as printable text ("rmt1." and base64url, no
 * blanks), NUL-terminated, at most RM_TENSOR_DESCRIPTOR_TEXT_MAX bytes
 * with the NUL.
 *
 * @param context   the handle's context.
 * @param tensor    not NULL; a live handle on a shareable tensor.
 * @param out       not NULL.
 * @param out_size  RM_TENSOR_DESCRIPTOR_TEXT_MAX always suffices.
 * @ownership  As tensor_export.
 * @return
 *   RM_OK
 *   RM_E_NOT_SHAREABLE     a heap tensor (inline descriptors have no text
 *                          form).
 *   RM_E_BUFFER_TOO_SMALL  out_size too small for the text and its NUL.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          tensor or out.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_export_inline
 * Serialises the tensor by value for hosts that must (another machine,
 * a file): a descriptor marked inline followed by the nbytes of data.
 * Works for every tensor, shared or not.
 *
 * @param context     the handle's context.
 * @param tensor      not NULL; a live handle.
 * @param out         receives the bytes; may be NULL to ask for the size.
 * @param out_size    its size.
 * @param out_needed  optional; gets RM_TENSOR_DESCRIPTOR_SIZE + nbytes
 *                    (also with RM_E_BUFFER_TOO_SMALL).
 * @ownership  A copy: the bytes are the host's, independent of the tensor.
 * @return
 *   RM_OK
 *   RM_E_BUFFER_TOO_SMALL  out NULL or smaller than needed (nothing
 *                          written).
 *   RM_E_INVALID_ARGUMENT  a device tensor (1.3): it has no inline form.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          tensor.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_import
 * Imports a descriptor from tensor_export (`size` ==
 * RM_TENSOR_DESCRIPTOR_SIZE), or an inline one from tensor_export_inline
 * (`size` == its whole length), and returns a new handle. A pool
 * descriptor gives a view of the same memory, read-only unless
 * RM_TENSOR_IMPORT_WRITABLE; an inline one gives a private copy
 * (writable). Importing into the owning context gives another handle
 * on the owner's memory. Each import is one handle to release.
 *
 * @param context     a live context of the descriptor's shm.namespace.
 * @param descriptor  not NULL; `size` bytes.
 * @param size        as above.
 * @param flags       0 or RM_TENSOR_IMPORT_WRITABLE.
 * @param out_tensor  not NULL; receives the handle, NULL on error.
 * @ownership  The handle is the caller's until tensor_release(). A view's
 *             memory stays valid while the handle is held, whatever the
 *             owner does (REF: tensors). The descriptor is read during the
 *             call only.
 * @return
 *   RM_OK
 *   RM_E_INVALID_DESCRIPTOR  wrong size, magic, version or checksum; a
 *                            field out of range; a dtype not in the
 *                            rm_dtype table; dtype, shape and strides
 *                            that do not fit nbytes; an extent outside
 *                            the pool; a segment that is not a 0600
 *                            regular file of this user, or not a valid
 *                            segment of that pool; a descriptor that
 *                            differs from the live tensor of its slot in
 *                            any field (session, dtype, ndim, shape,
 *                            strides, offset, nbytes), or names a
 *                            generation its slot never had: the message
 *                            names the field.
 *   RM_E_STALE_DESCRIPTOR    the pool's segments are gone (destroyed,
 *                            reclaimed, or of another namespace), belong
 *                            to another process now (owner start time),
 *                            or the tensor was freed (an older
 *                            generation).
 *   RM_E_QUOTA_EXCEEDED      RM_TENSOR_MAX_HOLDERS contexts already
 *                            import from that pool.
 *   RM_E_NO_MEMORY, RM_E_SYSTEM  mapping failed; RM_E_NO_MEMORY also when
 *                            no memory is left for the handle or an
 *                            inline copy.
 *   RM_E_INVALID_ARGUMENT    NULL descriptor or out_tensor; unknown flags.
 *   Device descriptors (1.3): the same checks against the exporter's
 *   device table and control segment (REF: cuda-tensors); and
 *   RM_E_STALE_DESCRIPTOR    the exporter destroyed its context or died;
 *   RM_E_DEVICE_UNAVAILABLE  no usable driver, or no device here with the
 *                            tensor's UUID;
 *   RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED  "cuda-ipc" not built,
 *                            or not enabled in this context;
 *   RM_E_SYSTEM, RM_E_INVALID_ARGUMENT  the driver refused to open the
 *                            handle (the message names the CUresult).
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                            the context checks ("shared-memory"); NULL
 *                            context: RM_E_INVALID_ARGUMENT.
 *   On error nothing is held, and nothing is mapped that is not cached.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_import_text
 * tensor_import of the text form (pool descriptors only; inline ones have
 * no text form).
 *
 * @param context     a live context of the descriptor's shm.namespace.
 * @param text        not NULL; NUL-terminated.
 * @param flags       0 or RM_TENSOR_IMPORT_WRITABLE.
 * @param out_tensor  not NULL; receives the handle, NULL on error.
 * @ownership  As tensor_import.
 * @return     As tensor_import; RM_E_INVALID_DESCRIPTOR also for text that
 *             is not "rmt1." and base64url of the right length, or that
 *             encodes an inline descriptor.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_release
 * Releases a handle. When it was the context's last handle on that
 * tensor, the context's hold ends; when every hold has ended the owner
 * frees it (at once if this is the owner, else on the owner's next
 * tensor call, REF: tensors). A DLPack export of the handle holds its own
 * reference, so its data stays valid until its deleter runs.
 *
 * @param context  the handle's context.
 * @param tensor   not NULL; a live handle of this context. Releasing it
 *                 twice is undefined.
 * @ownership  The handle ends (the data with it, unless other handles or
 *             DLPack exports hold the tensor).
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT  NULL context or tensor.
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                          the context checks ("shared-memory").
 * @threads    Thread-safe; not concurrently with another call on the same
 *             handle.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_to_dlpack
 * Exports as DLPack (unversioned DLManagedTensor) without a copy. The
 * unversioned form cannot say that a view is read-only; a write to one
 * still faults.
 *
 * @param context  the handle's context.
 * @param tensor   not NULL; a live handle.
 * @param out      not NULL; receives the managed tensor, NULL on error.
 * @ownership  The managed tensor (and its shape and strides arrays) is the
 *             consumer's until it calls `deleter`, exactly once, from any
 *             thread, before the context is destroyed. It holds its own
 *             reference: the handle may be released before that.
 * @return
 *   RM_OK
 *   RM_E_NO_MEMORY         no memory for the managed tensor.
 *   RM_E_STALE_DESCRIPTOR  a device tensor (1.3) whose exporter died or
 *                          destroyed its context.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          tensor or out.
 * @threads    Thread-safe.
 * @callbacks  None (the deleter is the plugin's; the consumer calls it).
 * @since 1.1
 */

/**
 * @fn tensor_to_dlpack_versioned
 * Exports as DLPack 1.0 (DLManagedTensorVersioned) without a copy;
 * read-only views set RM_DLPACK_FLAG_READ_ONLY.
 *
 * @param context  the handle's context.
 * @param tensor   not NULL; a live handle.
 * @param out      not NULL; receives the managed tensor, NULL on error.
 * @ownership  As tensor_to_dlpack.
 * @return
 *   RM_OK
 *   RM_E_NO_MEMORY         no memory for the managed tensor.
 *   RM_E_STALE_DESCRIPTOR  a device tensor (1.3) whose exporter died or
 *                          destroyed its context.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          tensor or out.
 * @threads    Thread-safe.
 * @callbacks  None (the deleter is the plugin's; the consumer calls it).
 * @since 1.1
 */

/**
 * @fn tensor_pool_stats
 * Fills *out with this context's pool counters (rm_tensor_pool_stats), and
 * from 1.3 its device tensors' (the cuda_* fields).
 *
 * @param context  a live context.
 * @param out      not NULL; struct_size set by the caller.
 * @ownership  The host's struct; the plugin writes what fits.
 * @return
 *   RM_OK
 *   RM_E_STRUCT_SIZE       out->struct_size below the 1.1 size.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL out.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_session_bytes
 * The bytes of live tensors charged to `session` in this context (shared
 * and heap tensors together, as shm.session_quota counts them).
 *
 * @param context    a live context.
 * @param session    any session id (an unknown one has 0 bytes).
 * @param out_bytes  not NULL.
 * @ownership  -
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          out_bytes.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn tensor_reclaim
 * Drops the holds of importing contexts whose process died (pid and
 * start time), frees what that and earlier remote releases left, unmaps
 * the pools of dead or retired owners this context no longer holds
 * anything of, and unlinks the segments of dead owners in the namespace.
 * Device tensors (1.3) the same way: dead importers' holds and open
 * handles on this context's device table are dropped, empty blocks that
 * no importer has open are freed (cuMemFree), cached handles of exporters
 * that died or retired, or that asked for their blocks back, are closed,
 * and blocks of this process's destroyed contexts that nobody uses any
 * more are freed; the report's cuda_* fields count them.
 *
 * @param context  a live context.
 * @param out      optional; struct_size at least the 1.1 size. Filled
 *                 also when RM_E_SYSTEM ends the call.
 * @ownership  The host's struct.
 * @return
 *   RM_OK
 *   RM_E_SYSTEM            /dev/shm unreadable (the holds were dropped).
 *   RM_E_STRUCT_SIZE       out->struct_size below the 1.1 size.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory").
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/**
 * @fn shm_list
 * Lists the pools of the context's namespace found in /dev/shm (sorted by
 * name), like registry_list: rows of `info_struct_size` bytes written
 * whole, *out_count set to the number of pools. From 1.3 the device
 * tables of the namespace are rows too (memory = RM_MEMORY_CUDA); a host
 * whose rows are smaller than the 1.3 size gets them without the fields
 * that say so.
 *
 * @param context           a live context.
 * @param out               rows; may be NULL when capacity is 0.
 * @param info_struct_size  the host's row size, at least the 1.1 size.
 * @param capacity          rows `out` holds.
 * @param out_count         not NULL.
 * @ownership  The host's buffer.
 * @return
 *   RM_OK
 *   RM_E_BUFFER_TOO_SMALL  *out_count > capacity (the first `capacity`
 *                          rows are written).
 *   RM_E_SYSTEM            /dev/shm cannot be read.
 *   RM_E_NO_MEMORY         out of memory for the listing.
 *   RM_E_STRUCT_SIZE       info_struct_size below the 1.1 size.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("shared-memory"); NULL
 *                          out_count, or NULL out with capacity > 0.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.1
 */

/* ---- 1.2: node-scope model registry --------------------------------- */

/**
 * @fn registry_reclaim
 * Node scope: drops the references of dead processes, clears claims of
 * dead loaders, evicts what no live process holds once its TTL has
 * passed (and to fit the budgets), and unlinks model segments of the
 * namespace that no table entry names (a loader that died before its
 * claim was recorded), and removes the node table when nothing is left
 * in it and no live process but the caller's context uses it (counted
 * in segments_unlinked and bytes_unlinked; the context then has none
 * until its next model_get_or_load() creates one, and sees an empty
 * registry meanwhile unless another process made one). A namespace that
 * has model segments but no table gets one for the look, removed again
 * when nothing is left. Process scope: evicts expired idle models, and
 * idle models to fit the budgets.
 *
 * @param context  a live context.
 * @param out      optional; struct_size at least the 1.2 size. Filled with
 *                 what was done, also when an error ends the call.
 * @ownership  The host's struct.
 * @return
 *   RM_OK
 *   RM_E_SYSTEM            node scope: /dev/shm unreadable.
 *   RM_E_NO_MEMORY         node scope: out of memory listing segments.
 *   RM_E_STRUCT_SIZE       out->struct_size below the 1.2 size.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("model-registry").
 *   table codes            node scope (REF: node-scope).
 * @threads    Thread-safe.
 * @callbacks  Process scope: the destroy callbacks of the evicted models,
 *             on the calling thread, before it returns.
 * @since 1.2
 */

/* ---- 1.3: device tensors (REF: cuda-tensors) ------------------------ */

/**
 * @fn tensor_wrap_device
 * Makes a shareable tensor of device memory the host already has (a
 * PyTorch tensor's storage, say) without a copy. The plugin finds the
 * allocation that contains `device_pointer` (cuMemGetAddressRange), exports
 * that allocation's base, and records the pointer's offset in it. The
 * allocation must come from cuMemAlloc (cudaMalloc, PyTorch's caching
 * allocator); memory from cuMemCreate, managed memory and memory pools are
 * refused by the driver. Importers open the allocation's handle once and
 * close it when their last tensor of it goes (the plugin cannot know when
 * the host frees it, so it never caches it).
 *
 * @param context         a context with "cuda-ipc" enabled.
 * @param spec            not NULL; struct_size at least the 1.3 size;
 *                        device "cuda:N" names the pointer's device (a
 *                        different one is RM_E_INVALID_ARGUMENT); dtype,
 *                        ndim, shape, strides (with RM_TENSOR_ALLOC_STRIDED,
 *                        the only flag allowed) and session as for
 *                        tensor_allocate; alignment must be 0.
 * @param device_pointer  the tensor's first element; the layout's span
 *                        must lie inside its allocation.
 * @param released        optional; called once when nobody holds the
 *                        memory any more (rm_device_released_fn).
 * @param released_user   passed to `released`.
 * @param out_tensor      not NULL; NULL on error.
 * @ownership  The memory stays the host's: it must stay allocated and
 *             unchanged in meaning until `released` runs (or, without a
 *             callback, until the host knows every importer released it).
 *             The handle is the host's, released with tensor_release().
 *             The allocation's memory is charged to no quota.
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT    a bad spec or flag, a pointer that is not
 *                            device memory of that device, or a span past
 *                            the end of its allocation.
 *   RM_E_NOT_SHAREABLE       the driver cannot export this allocation
 *                            (not from cuMemAlloc).
 *   RM_E_DEVICE_UNAVAILABLE  no usable driver or device (message says).
 *   RM_E_QUOTA_EXCEEDED      no free slot (shm.max_tensors).
 *   RM_E_SYSTEM, RM_E_NO_MEMORY
 *   RM_E_STRUCT_SIZE         spec->struct_size below the 1.3 size.
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                            the context checks ("cuda-ipc").
 * @threads    Thread-safe.
 * @callbacks  `released`, later (see rm_device_released_fn).
 * @since 1.3
 */

/**
 * @fn tensor_record
 * Producer side of ordering: records the tensor's interprocess event on
 * `stream` after the work that wrote it, so that a consumer's
 * tensor_wait() waits for that work. Call it before exporting the
 * descriptor (a later record also counts for waits made after it). A host
 * tensor needs no ordering: RM_OK and nothing happens.
 *
 * @param context  the handle's context.
 * @param tensor   not NULL; a handle this context allocated or wrapped.
 * @param stream   a CUstream of the tensor's device in its primary
 *                 context, or NULL for the legacy default stream.
 * @return
 *   RM_OK
 *   RM_E_INVALID_ARGUMENT    an imported tensor (only the exporter records),
 *                            or a stream the driver refuses.
 *   RM_E_DEVICE_UNAVAILABLE, RM_E_SYSTEM, RM_E_NO_MEMORY  the driver failed
 *                            (the message names the call and CUresult).
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                            the context checks ("shared-memory").
 * @threads    Thread-safe; not concurrently with a release of the handle.
 * @callbacks  None.
 * @since 1.3
 */

/**
 * @fn tensor_wait
 * Consumer side of ordering: makes `stream` wait (cuStreamWaitEvent) for
 * the work the producer recorded with tensor_record(), or, with
 * RM_TENSOR_WAIT_HOST, blocks the calling thread until it is done. Waits
 * for the last record made before this call. A host tensor, or a device
 * tensor never recorded: RM_OK and nothing happens.
 *
 * @param context  the handle's context.
 * @param tensor   not NULL; a live handle.
 * @param stream   a CUstream of the device where this process sees the
 *                 tensor (rm_tensor_info.device), or NULL for the legacy
 *                 default stream; ignored with RM_TENSOR_WAIT_HOST.
 * @param flags    0 or RM_TENSOR_WAIT_HOST.
 * @return
 *   RM_OK
 *   RM_E_STALE_DESCRIPTOR    the exporting process died or its context was
 *                            destroyed: the data is gone or going.
 *   RM_E_INVALID_ARGUMENT    unknown flags, or a stream the driver refuses.
 *   RM_E_INVALID_DESCRIPTOR  the exporter's device table names an event
 *                            that is not the exporter's (another process of
 *                            the user wrote it).
 *   RM_E_DEVICE_UNAVAILABLE, RM_E_SYSTEM, RM_E_NO_MEMORY  the driver failed,
 *                            or no memory for the opened event (message).
 *   RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE, RM_E_FEATURE_DISABLED
 *                            the context checks ("shared-memory").
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.3
 */

/**
 * @fn cuda_info
 * What the CUDA driver offers this process: loads it if no call did yet
 * (cuda.driver), and reports its version and the devices with their
 * UUIDs, or why device tensors are unavailable. For rmctl info.
 *
 * @param context  a live context ("cuda-ipc" need not be enabled: a host
 *                 may ask before it enables it).
 * @param out      not NULL; struct_size at least the 1.3 size.
 * @return
 *   RM_OK                    *out is filled, also when out->status says
 *                            that no driver or device is usable.
 *   RM_E_STRUCT_SIZE         out->struct_size below the 1.3 size.
 *   RM_E_FEATURE_UNAVAILABLE this plugin was built without CUDA IPC
 *                            (out->status says the same).
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED  the context checks.
 * @threads    Thread-safe.
 * @callbacks  None.
 * @since 1.3
 */

/* ---- 1.4 ---------------------------------------------------------------- */

/**
 * @fn model_to_dlpack
 * Describes a model loaded into a buffer (host or device) as DLPack 1.0:
 * a 1-D uint8 tensor of the model's `bytes` bytes at the model pointer,
 * on kDLCUDA (this process's ordinal of the device) for a device buffer,
 * else kDLCPU, with NULL strides (compact) and RM_DLPACK_FLAG_READ_ONLY set (a sealed buffer is
 * read-only). The view holds a reference of its own: the model stays
 * loaded until the deleter runs, even after `handle` is released.
 *
 * @param context  the handle's context.
 * @param handle   not NULL; a live handle of this context.
 * @param out      not NULL; receives the managed tensor, NULL on error.
 * @ownership  The caller (or the consumer it hands the tensor to) calls
 *             out->deleter(out) exactly once, on any thread, before the
 *             context is destroyed; the deleter releases the view's
 *             reference.
 * @return
 *   RM_OK
 *   RM_E_NOT_SHAREABLE     the loader returned its own pointer, not a
 *                          buffer: the plugin does not know its bytes.
 *   RM_E_NO_MEMORY         no memory for the managed tensor.
 *   RM_E_INVALID_ARGUMENT, RM_E_FORKED, RM_E_FEATURE_UNAVAILABLE,
 *   RM_E_FEATURE_DISABLED  the context checks ("model-registry"); NULL
 *                          handle or out.
 * @threads    Thread-safe.
 * @callbacks  None (the deleter is the plugin's; the consumer calls it).
 * @since 1.4
 */

/* ========================================================================
 * REF: plugin-has
 * ======================================================================== */

/**
 * True when vtable `vt` has member `member` and it is set. Use before
 * calling anything added after 1.0.
 */
#define RM_PLUGIN_HAS(vt, member)                                           \
    ((vt) != NULL &&                                                        \
     (vt)->struct_size >= offsetof(rm_plugin_v1, member) + sizeof((vt)->member) && \
     (vt)->member != NULL)

#ifdef __cplusplus
}
#endif

#endif /* RM_PLUGIN_H */
