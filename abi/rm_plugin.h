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
 * ---------------------------------------------------------------------------
 * Versioning policy
 * ---------------------------------------------------------------------------
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
 * Planned minor versions (not yet part of the ABI, listed so that hosts know
 * where capabilities will arrive): shared-memory tensors and DLPack export,
 * the node-scope model registry, CUDA IPC.
 *
 * ---------------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------------------
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
 *
 * The shared object is linked with -z nodelete: dlclose() does not unmap it,
 * because its bundled allocator registers thread-exit destructors that glibc
 * may run after an unload. All state is owned by contexts, so destroying
 * every context releases every resource (memory, threads, descriptors).
 */
#ifndef RM_PLUGIN_H
#define RM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Versions                                                                 */
/* ------------------------------------------------------------------------ */

/** Encodes an ABI version: major in the high 16 bits, minor in the low. */
#define RM_ABI_VERSION(major, minor) \
    ((uint32_t)(((uint32_t)(major) << 16) | ((uint32_t)(minor) & 0xffffu)))
#define RM_ABI_VERSION_MAJOR(v) ((uint32_t)(v) >> 16)
#define RM_ABI_VERSION_MINOR(v) ((uint32_t)(v) & 0xffffu)

/** The ABI version this header describes. */
#define RM_ABI_MAJOR 1
#define RM_ABI_MINOR 0
#define RM_ABI_VERSION_CURRENT RM_ABI_VERSION(RM_ABI_MAJOR, RM_ABI_MINOR)

/** The project (not ABI) version; the build reads it from here. */
#define RM_PLUGIN_VERSION_STRING "0.1.0"

/** The only symbol the shared object exports. */
#define RM_PLUGIN_ENTRY_POINT "rm_plugin_negotiate"

/**
 * Initialiser for any ABI struct: sets the two leading fields and zeroes the
 * rest. Designated, so that -Wmissing-field-initializers stays quiet (C99,
 * C++20).
 */
#define RM_STRUCT_INIT(type) \
    { .struct_size = (uint32_t)sizeof(type), .abi_version = RM_ABI_VERSION_CURRENT }

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * Every function that can fail returns an int32_t: RM_OK (0) or one of the
 * negative codes below. The vtable's error_name() and strerror() map a code
 * to static strings; the map is also here so that a host can use it before
 * it has a vtable. Codes are never renumbered; new ones are appended.
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
    XX(-19, SHUTTING_DOWN, "context is being destroyed")

/* The map also yields RM_E_OK; RM_OK is the same 0 under its usual name. */
typedef enum rm_error {
#define RM_ERROR_ENUM_(code, name, message) RM_E_##name = (code),
    RM_ERROR_MAP(RM_ERROR_ENUM_)
#undef RM_ERROR_ENUM_
    RM_OK = 0
} rm_error;

/* ------------------------------------------------------------------------ */
/* Features                                                                 */
/* ------------------------------------------------------------------------ */

/** Capability bits, as in rm_plugin_v1.features_built and
 *  rm_context_info.features_enabled. Config names are in quotes. */
#define RM_FEATURE_MODEL_REGISTRY ((uint64_t)1 << 0) /* "model-registry" */
#define RM_FEATURE_SHARED_MEMORY ((uint64_t)1 << 1)  /* "shared-memory" */
#define RM_FEATURE_CUDA_IPC ((uint64_t)1 << 2)       /* reserved */

/* ------------------------------------------------------------------------ */
/* Host services and negotiation                                            */
/* ------------------------------------------------------------------------ */

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
     * the plugin's own background threads, so it must be thread-safe. NULL:
     * the plugin writes lines at or above the configured level to stderr.
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

/**
 * The one exported entry point (RM_PLUGIN_ENTRY_POINT).
 *
 * Picks the highest ABI version inside both the host's range and the
 * plugin's, and answers with that version and the vtable for its major.
 * Thread-safe; may be called any number of times. The vtable is static:
 * it stays valid while the shared object is loaded, and is never freed.
 *
 * Returns:
 *  RM_OK                      *out_abi_version and *out_vtable are set.
 *  RM_E_INVALID_ARGUMENT      a NULL pointer, min > max, non-zero reserved
 *                             fields, or a services struct too small.
 *  RM_E_STRUCT_SIZE           request->struct_size is below the 1.0 size.
 *  RM_E_INCOMPATIBLE_VERSION  no version in common (e.g. the host wants
 *                             major 2 only, or major 0).
 * On any error, *out_vtable is set to NULL, *out_abi_version to 0 (where
 * those pointers are non-NULL) and the reason is written to error_buffer,
 * except for RM_E_STRUCT_SIZE, where error_buffer lies beyond what the host
 * declared and is left alone (context_last_error(NULL) has the reason).
 * Services offered by a successful negotiation are used by contexts created
 * after it; contexts already created keep theirs. They belong to the whole
 * loaded object, not to one caller: two hosts in one process that negotiate
 * with different services each change them for later contexts.
 */
typedef int32_t (*rm_plugin_negotiate_fn)(
    const rm_negotiate_request *request, uint32_t *out_abi_version,
    const struct rm_plugin_v1 **out_vtable);

/* ------------------------------------------------------------------------ */
/* Contexts and configuration                                               */
/* ------------------------------------------------------------------------ */

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
 * RM_CONTEXT_IGNORE_ENV); then `entries` in order.
 *
 * File syntax: one `key = value` per line; blank lines and lines whose
 * first non-blank character is '#' are ignored; surrounding blanks are
 * trimmed. Keys and accepted values (see also rmctl info and the README):
 *
 *   features            comma-separated subset of "model-registry",
 *                       "shared-memory"; "all" or "none".
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

/* ------------------------------------------------------------------------ */
/* Model registry (feature "model-registry")                                */
/* ------------------------------------------------------------------------ */

/**
 * Model keys: "name@device".
 *  - name: 1 to 200 bytes from [A-Za-z0-9._/:+-]; case is kept.
 *  - device: "cpu", or "cuda:N" with N a decimal 0..1023, or "cuda"
 *    (= "cuda:0"). Case-insensitive; leading zeros allowed on input.
 *  - exactly one '@'; no other bytes (no blanks, no control bytes);
 *    at most RM_MODEL_KEY_MAX - 1 bytes in all.
 * Keys are normalised (device lower-case, "cuda" -> "cuda:0", "cuda:007" ->
 * "cuda:7") so equal devices give equal keys; the registry stores and
 * reports the normalised form. Anything else is RM_E_INVALID_KEY.
 */
#define RM_MODEL_KEY_MAX 256

/** Opaque reference to a loaded model; released with model_release(). */
typedef struct rm_model_handle rm_model_handle;

/**
 * Filled in by a loader. The plugin allocates it zeroed with struct_size
 * and abi_version set; the loader sets the fields below.
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
     */
    void (*destroy)(void *model, void *destroy_user);
    void *destroy_user;
} rm_loaded_model;

/**
 * A host's loader: produces the model for `key` (normalised).
 * Returns RM_OK after filling `out`, or any negative value on failure. A
 * failure code is handed unchanged to the caller that ran the loader and to
 * every caller waiting for the same key; no entry is left behind and the
 * next get_or_load() runs a loader again. A positive return is treated as
 * RM_E_LOADER_FAILED. The loader runs on the calling thread with no
 * registry lock held; it may call model_get_or_load() for other keys, in
 * this or another context (a cycle, even one through several contexts and
 * threads, gives RM_E_LOAD_CYCLE instead of a deadlock).
 */
typedef int32_t (*rm_model_loader_fn)(void *loader_user, const char *key,
                                      rm_loaded_model *out);

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
                                    ordered by last get or release */
} rm_model_info;

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
} rm_registry_metrics;

/* ------------------------------------------------------------------------ */
/* The vtable                                                               */
/* ------------------------------------------------------------------------ */

/**
 * The plugin's functions, ABI major 1. Static; never freed.
 * Structs the plugin fills for the host (rm_context_info,
 * rm_registry_metrics) keep the host's struct_size and abi_version; the
 * plugin writes only the fields that fit in struct_size. Rows of
 * registry_list() are written whole: their struct_size says how many bytes
 * the plugin wrote (the smaller of the host's and the plugin's size).
 * Capability functions return RM_E_FEATURE_UNAVAILABLE when the capability
 * was not built, and RM_E_FEATURE_DISABLED when it was built but the
 * context's "features" leaves it out.
 * Unless a function says otherwise, every `rm_context *` argument must be a
 * live context from context_create(), and a NULL one gives
 * RM_E_INVALID_ARGUMENT. After an error, context_last_error() on the same
 * thread says what went wrong, naming the key, value, limit or file.
 * Each context records the fork generation at creation: used in a child
 * after fork(), functions return RM_E_FORKED (create a new context there).
 * Threads inside the plugin (a caller waiting for a load, a loader) must
 * not be cancelled with pthread_cancel(): cancellation is not supported.
 */
typedef struct rm_plugin_v1 {
    uint32_t struct_size; /* sizeof the plugin's vtable */
    uint32_t abi_version; /* highest version the plugin implements */
    uint64_t features_built; /* RM_FEATURE_* compiled in */
    const char *name;     /* "rm_plugin" */
    const char *version;  /* RM_PLUGIN_VERSION_STRING of the build */

    /** Static name ("INVALID_KEY") of a code; "UNKNOWN" if not a code. */
    const char *(*error_name)(int32_t code);
    /** Static description of a code; "unknown error" if not a code. */
    const char *(*strerror)(int32_t code);

    /**
     * Creates a context from `options` (NULL: defaults and the environment).
     * Returns RM_OK and sets *out_context, which the host destroys with
     * context_destroy(). Errors (*out_context set to NULL; the reason is
     * logged and returned by context_last_error(NULL) on this thread):
     *  RM_E_INVALID_ARGUMENT      NULL out_context, reserved fields set,
     *                             NULL key or value in entries.
     *  RM_E_STRUCT_SIZE           options->struct_size below 1.0 size.
     *  RM_E_CONFIG_UNKNOWN_KEY    a key not listed in rm_context_options.
     *  RM_E_CONFIG_INVALID_VALUE  malformed or out-of-range value.
     *  RM_E_CONFIG_FILE           the file cannot be read, or a line is
     *                             not `key = value`.
     *  RM_E_FEATURE_UNAVAILABLE   "features" names a capability not built.
     *  RM_E_ALLOCATOR             the bundled allocator failed its check.
     *  RM_E_NO_MEMORY, RM_E_SYSTEM (a thread could not be started).
     */
    int32_t (*context_create)(const rm_context_options *options,
                              rm_context **out_context);

    /**
     * Destroys a context: stops and joins its threads, destroys every model
     * it holds (calling each destroy callback once, handles or not; handles
     * still held become invalid and are logged as a warning) and frees
     * everything. NULL is a no-op. Must not race with other calls on the
     * same context.
     */
    void (*context_destroy)(rm_context *context);

    /**
     * The message of the last failed call made on this thread with this
     * context (NULL: the last failed context_create on this thread), or ""
     * when there is none. Owned by the plugin; valid on this thread until
     * its next call into the plugin. Never NULL.
     */
    const char *(*context_last_error)(const rm_context *context);

    /** Fills *out (struct_size set by the caller). RM_E_INVALID_ARGUMENT,
     *  RM_E_STRUCT_SIZE, RM_E_FORKED. */
    int32_t (*context_info)(const rm_context *context, rm_context_info *out);

    /**
     * Writes the effective value of configuration `key` into `buffer` as
     * NUL-terminated text in the accepted form, expanded (features as the
     * list of enabled names or "none", sizes in bytes). *out_needed (optional) gets
     * the size needed, NUL included.
     * Returns RM_OK, RM_E_CONFIG_UNKNOWN_KEY, RM_E_BUFFER_TOO_SMALL (buffer
     * untouched), RM_E_INVALID_ARGUMENT, RM_E_FORKED.
     */
    int32_t (*config_get)(const rm_context *context, const char *key,
                          char *buffer, uint64_t buffer_size,
                          uint64_t *out_needed);

    /**
     * The name of the index-th configuration key (0-based, stable order),
     * or NULL past the last one. Static strings; no context needed.
     */
    const char *(*config_key_at)(uint32_t index);

    /**
     * Normalises a model key into `out` (see RM_MODEL_KEY_MAX).
     * Returns RM_OK, RM_E_INVALID_KEY (message through
     * context_last_error(NULL)), RM_E_BUFFER_TOO_SMALL,
     * RM_E_INVALID_ARGUMENT, RM_E_FEATURE_UNAVAILABLE (registry not built).
     */
    int32_t (*model_key_normalize)(const char *key, char *out,
                                   uint64_t out_size);

    /**
     * Returns the model for `key`, loading it at most once per context.
     * A ready model is a hit. Otherwise the first caller runs
     * `loader(loader_user, normalised_key, &loaded)` on its own thread while
     * concurrent callers for the same key block (no spinning) until it ends
     * and then share its result. Loads of different keys run concurrently.
     * On success *out_handle holds a reference (release it with
     * model_release()) and *out_model the loader's model pointer; admitting
     * a new model evicts idle models in LRU order to fit registry.max_bytes
     * and registry.max_models. Models in use are never evicted: if the
     * budget cannot be met the model is admitted anyway, `over_budget` is
     * counted and a warning logged, and idle models are evicted as soon as
     * they are released.
     * Returns RM_OK, or (with *out_handle and *out_model set to NULL):
     *  RM_E_INVALID_ARGUMENT   NULL pointers.
     *  RM_E_INVALID_KEY        the key breaks the grammar above.
     *  RM_E_FEATURE_DISABLED   "model-registry" not enabled.
     *  RM_E_FEATURE_UNAVAILABLE not built.
     *  RM_E_LOAD_CYCLE         the key is being loaded by a loader that is
     *                          (directly or through other loads) waiting for
     *                          this caller.
     *  RM_E_INVALID_ARGUMENT   the loader succeeded but left model NULL.
     *  any negative code the loader returned (positive ones become
     *  RM_E_LOADER_FAILED).
     *  RM_E_SHUTTING_DOWN, RM_E_NO_MEMORY, RM_E_FORKED.
     */
    int32_t (*model_get_or_load)(rm_context *context, const char *key,
                                 rm_model_loader_fn loader, void *loader_user,
                                 rm_model_handle **out_handle,
                                 void **out_model);

    /**
     * Gives back a reference from model_get_or_load(). The model stays
     * loaded (idle) until TTL, LRU pressure, model_evict() or
     * context_destroy(). Releasing a handle twice or a handle from another
     * context is undefined. Returns RM_OK, RM_E_INVALID_ARGUMENT (NULL, or a
     * handle with no reference left, when that can still be seen),
     * RM_E_FEATURE_DISABLED, RM_E_FEATURE_UNAVAILABLE, RM_E_FORKED.
     */
    int32_t (*model_release)(rm_context *context, rm_model_handle *handle);

    /**
     * Evicts `key` now if no handle holds it (its destroy callback runs
     * before this returns); NULL evicts every idle model.
     * Returns RM_OK, RM_E_NOT_FOUND (not loaded), RM_E_BUSY (in use or
     * still loading), RM_E_INVALID_KEY, RM_E_FEATURE_DISABLED,
     * RM_E_FORKED.
     */
    int32_t (*model_evict)(rm_context *context, const char *key);

    /** Fills *out. RM_E_INVALID_ARGUMENT, RM_E_STRUCT_SIZE,
     *  RM_E_FEATURE_DISABLED, RM_E_FORKED. */
    int32_t (*registry_metrics)(rm_context *context, rm_registry_metrics *out);

    /**
     * Writes one rm_model_info per loaded model (in least-recently-used
     * first order) into `out[0..capacity)`, each of size
     * `info_struct_size` (the host's sizeof(rm_model_info)), and sets
     * *out_count to the number of loaded models. Returns RM_OK, or
     * RM_E_BUFFER_TOO_SMALL when *out_count > capacity (the first
     * `capacity` rows are written), RM_E_INVALID_ARGUMENT (NULL out_count,
     * or NULL out with capacity > 0; out may be NULL when capacity is 0),
     * RM_E_STRUCT_SIZE, RM_E_FEATURE_DISABLED, RM_E_FORKED.
     */
    int32_t (*registry_list)(rm_context *context, rm_model_info *out,
                             uint32_t info_struct_size, uint32_t capacity,
                             uint32_t *out_count);
} rm_plugin_v1;

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
