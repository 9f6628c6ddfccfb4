/* Memory backends: where a tensor's bytes live, behind one small table of
 * operations, so that tensor.c keeps handles, quotas and DLPack and names
 * no kind of memory.
 *
 * The shape is SQLite's sqlite3_io_methods (each instance starts with a
 * pointer to its table of functions) and jemalloc's pai_t (allocate, free,
 * and the upkeep that belongs to the allocator rather than to its caller).
 *
 * The backends (registered in mem_backends.c, one line each):
 *  - shm (shm_pool_backend.c, shm_view.c): the context's own pool in
 *    /dev/shm with its control segment, and the mappings of other pools it
 *    imports from. It serves pool descriptors and is tried first.
 *  - heap (heap_backend.c): private memory. The fallback when there is no
 *    shared memory, and what an inline descriptor is imported into.
 *
 * Adding a backend (CUDA IPC, say): its own folder under plugin/tensor/
 * with a meson.build that adds its sources, one subdir() line in
 * plugin/tensor/meson.build, its table declared at the end of this header,
 * and one line in mem_backends.c.
 * What the seam still assumes: blocks are addressable by the CPU
 * (tensor.c zeroes them with memset for RM_TENSOR_ALLOC_ZERO, and
 * tensor_export_inline copies them with memcpy), and a descriptor is the
 * 200 bytes of descriptor.h.
 *
 * Locking: tensor.c calls every operation with the context's lock held,
 * except where an operation says otherwise. The hot paths (allocate,
 * import, release; ~50 ns each) cost one indirect call each, and a
 * backend takes no lock of its own and allocates nothing on them (a
 * glibc malloc + free was ~40 ns of an allocate + release; see
 * new_handle in tensor.c).
 */
#ifndef RM_INTERNAL_MEM_BACKEND_H
#define RM_INTERNAL_MEM_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "descriptor.h"
#include "host.h"
#include "rm_build_config.h"
#include "rm_plugin.h"

typedef struct rm_tensors rm_tensors;
typedef struct rm_mem_ops rm_mem_ops;

/** What tensor.c lends every backend of a context, for its whole life. */
typedef struct rm_mem_env {
    rm_tensors *tensors;          /* for rm_tensors_charge / rm_tensors_uncharge */
    const void *error_owner;      /* the context: rm_error_set's owner */
    const rm_host *host;          /* for rm_host_log */
    pid_t creator;                /* the process that created the context */
    /** The context's statistics. Each backend writes only the fields that
     *  describe its memory (the shm backend the pool's, the heap backend
     *  heap_tensors and heap_bytes); tensor.c counts calls. */
    rm_tensor_pool_stats *stats;
} rm_mem_env;

/** A backend of one context. Each backend's own state starts with this. */
typedef struct rm_mem_backend {
    const rm_mem_ops *ops;
    /** Non-zero while other processes left work for this backend (the shm
     *  pool's pending releases). tensor.c reads it on every call and calls
     *  ops->collect only then: one load, instead of a call per operation.
     *  Read only for backends with a collect operation. */
    const _Atomic uint64_t *deferred;
    /** True once the backend holds memory of its own (the shm pool exists).
     *  Before that, RM_E_SYSTEM from allocate means this kind of memory is
     *  not available here at all (no /dev/shm), which the fallback covers. */
    bool set_up;
} rm_mem_backend;

/** A tensor's memory as its handle holds it. */
typedef struct rm_mem_block {
    void *data;            /* the tensor's first byte, in this process */
    /** RM_TENSOR_WRITABLE, RM_TENSOR_SHAREABLE, RM_TENSOR_OWNED as the
     *  backend allows them; tensor.c adds RM_TENSOR_IMPORTED. A block
     *  without RM_TENSOR_SHAREABLE is never exported by descriptor. */
    uint64_t flags;
    void *home;            /* the backend's: the view of another pool, or NULL */
    /** The local device ordinal a device backend allocates on (set by
     *  tensor.c before allocate), or RM_MEM_HOST_DEVICE. */
    int32_t device;
    /** Bytes charged to where.session that the handle's release gives back
     *  (the heap's). The shm backend keeps the charge with its slot
     *  instead: the memory may outlive the handle. */
    uint64_t charged;
    /** dtype, shape, strides, session and nbytes, and the coordinates the
     *  backend completed (pool, slot, generation, offset, owner). Defined
     *  only up to where.ndim in shape and strides (see check_spec). Copied
     *  in by tensor.c once allocate or import succeeded: copied before,
     *  its 16-byte loads would wait on the narrow stores that had just
     *  filled the descriptor (a failed store forward, measured at 1.5 ns
     *  of a 53 ns allocate + release). */
    rm_descriptor where;
} rm_mem_block;

/** The role of a backend in tensor_allocate. */
typedef enum rm_mem_allocation {
    RM_MEM_ALLOCATE_NEVER,    /* import only */
    RM_MEM_ALLOCATE_FIRST,    /* tried first */
    RM_MEM_ALLOCATE_FALLBACK, /* when the first has no room or no memory at all,
                                 unless RM_TENSOR_ALLOC_SHARED_ONLY */
    RM_MEM_ALLOCATE_DEVICE,   /* specs that name a device ("cuda:N"); no fallback */
} rm_mem_allocation;

struct rm_mem_ops {
    const char *name;
    /** The descriptor kind it imports (RM_DESCRIPTOR_KIND_*), 0 for none. */
    uint8_t descriptor_kind;

    /* ---- per context ---------------------------------------------------- */
    /** Sets the backend up for a context (memory may come later, on the
     *  first allocation). RM_OK or RM_E_NO_MEMORY. Called without the lock. */
    int32_t (*create)(const rm_mem_env *env, const rm_config *config,
                      rm_mem_backend **out);
    /** Frees the backend after every handle was released. In a child of
     *  fork() (`in_creator` false) it touches nothing shared. */
    void (*destroy)(rm_mem_backend *backend, bool in_creator);

    /* ---- blocks ---------------------------------------------------------- */
    /**
     * A block for `where` (layout, session, nbytes set; coordinates zero),
     * aligned to `alignment`, charged to its session through
     * rm_tensors_charge; completes `where` and sets the block's data,
     * flags, home and charge. RM_OK; RM_E_NO_MEMORY when there is no room
     * (the fallback may take it); RM_E_SYSTEM; any other code is the
     * caller's answer (quotas, slots). Contents unspecified. On failure
     * nothing is left held or charged, and `where` is as it was.
     */
    int32_t (*allocate)(rm_mem_backend *backend, rm_descriptor *where, uint64_t alignment,
                        rm_mem_block *block);
    /**
     * A block for the decoded descriptor `where`, whose encoded form is
     * `bytes` (`size` bytes, the data of an inline descriptor included).
     * Checks everything the decoder could not; may complete `where`. Read-
     * only unless `writable`. Errors name the field or segment at fault.
     */
    int32_t (*import)(rm_mem_backend *backend, rm_descriptor *where, const uint8_t *bytes,
                      uint64_t size, bool writable, rm_mem_block *block);
    /** Encodes the descriptor of a block with RM_TENSOR_SHAREABLE
     *  (RM_TENSOR_DESCRIPTOR_SIZE bytes), for a backend whose descriptor is
     *  more than block->where (a device's IPC handle, say). Called without
     *  the lock. NULL: rm_descriptor_encode(&block->where), as for the shm
     *  backend, which fills the coordinates when it allocates or imports
     *  (and spares the export an indirect call). */
    int32_t (*export)(rm_mem_backend *backend, const rm_mem_block *block, uint8_t *out);
    /** Drops this handle's hold; the memory is freed (and uncharged) when
     *  nobody holds it any more, which for shared memory may be later. */
    void (*release)(rm_mem_backend *backend, rm_mem_block *block);
    /** In a child of fork(): forgets an inherited handle's block, freeing
     *  only this process's private memory. NULL: nothing to free. */
    void (*drop_in_child)(rm_mem_backend *backend, rm_mem_block *block);
    /** The DLPack device of the block. Called without the lock. */
    rm_dl_device (*describe_device)(const rm_mem_backend *backend, const rm_mem_block *block);

    /* ---- upkeep (NULL: none) -------------------------------------------- */
    /** Does the work `deferred` announces (frees what other processes
     *  released), before tensor.c reads quotas or statistics. */
    void (*collect)(rm_mem_backend *backend);
    /** tensor_reclaim, the context's part: drops holders that died and
     *  what they held, unmaps what nobody uses any more. */
    void (*reclaim)(rm_mem_backend *backend, rm_reclaim_report *report);
    /** tensor_reclaim, outside any context: unlinks what dead processes
     *  left. Called without the lock (it reads /dev/shm and /proc, which
     *  takes milliseconds). RM_OK or an error with its message set. */
    int32_t (*reap)(rm_mem_backend *backend, rm_reclaim_report *report);
    /** Fills the figures of *out that are read live (committed bytes,
     *  holders, pools mapped). */
    void (*stats)(rm_mem_backend *backend, rm_tensor_pool_stats *out);
    /** Publishes the backend's figures where other processes read them
     *  (the control segment, for rmctl ls). */
    void (*publish)(rm_mem_backend *backend);
    /** tensor_list: one row per pool of the namespace that this backend
     *  makes, as a malloc()ed array sorted by name (tensor.c merges the
     *  backends' rows). Called without the lock (it reads /dev/shm and
     *  /proc). RM_OK, RM_E_NO_MEMORY, RM_E_SYSTEM. */
    int32_t (*list)(rm_mem_backend *backend, rm_shm_pool_info **rows, size_t *count);

    /* ---- device memory (NULL: host memory that the CPU addresses) ------- */
    /** Zeroes a block's `where.nbytes` bytes (RM_TENSOR_ALLOC_ZERO), without
     *  the lock. NULL: memset. */
    int32_t (*zero)(rm_mem_backend *backend, const rm_mem_block *block);
    /** The device's UUID (rm_tensor_info.device_uuid). NULL: zero. */
    void (*device_uuid)(const rm_mem_backend *backend, const rm_mem_block *block,
                        uint8_t uuid[16]);
    /** tensor_record / tensor_wait (the stream is a CUstream). NULL: host
     *  memory, nothing to order. Called without the lock. */
    int32_t (*record)(rm_mem_backend *backend, rm_mem_block *block, void *stream);
    int32_t (*wait)(rm_mem_backend *backend, rm_mem_block *block, void *stream, bool host);
    /** Checked before a DLPack export: RM_OK, or why the memory is gone
     *  (RM_E_STALE_DESCRIPTOR). NULL: always RM_OK. Without the lock. */
    int32_t (*check_alive)(rm_mem_backend *backend, const rm_mem_block *block);
};

/** A device allocation's request, beside `where`: which device. */
#define RM_MEM_HOST_DEVICE (-1)

/** One line of the registration table (mem_backends.c). */
typedef struct rm_mem_registration {
    const rm_mem_ops *ops;
    rm_mem_allocation allocation;
} rm_mem_registration;

/** Most backends a build may register. */
#define RM_MEM_BACKENDS_MAX 4

extern const rm_mem_registration rm_mem_registered[];
extern const uint32_t rm_mem_registered_count;

/* ---- what tensor.c gives backends (context lock held) --------------------- */

/** Charges `bytes` to `session`. RM_OK or RM_E_NO_MEMORY (message set). */
int32_t rm_tensors_charge(rm_tensors *tensors, uint64_t session, uint64_t bytes);

/** Gives back what rm_tensors_charge charged, when the memory is freed. */
void rm_tensors_uncharge(rm_tensors *tensors, uint64_t session, uint64_t bytes);

/** A line for the host's log, passed on once the context's lock is
 *  dropped: the host's callback never runs under it. At most
 *  RM_DEFERRED_LOGS lines per call into tensor.c (more are counted and
 *  reported as dropped), RM_DEFERRED_LOG_TEXT bytes each. */
#define RM_DEFERRED_LOGS 4
#define RM_DEFERRED_LOG_TEXT 256
void rm_tensors_log_later(rm_tensors *tensors, int32_t level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/** A host callback (tensor_wrap_device's `released`) to run once the lock
 *  is dropped, like the log lines. */
void rm_tensors_call_later(rm_tensors *tensors, rm_device_released_fn fn, void *user,
                           void *pointer);

/* ---- the backends --------------------------------------------------------- */

extern const rm_mem_ops rm_shm_backend;  /* shm_pool_backend.c */
extern const rm_mem_ops rm_heap_backend; /* heap_backend.c */
#if RM_HAVE_CUDA_IPC
extern const rm_mem_ops rm_cuda_backend; /* cuda/cuda_backend.c */

/** tensor_wrap_device's part in the CUDA backend (lock held): a block for
 *  `where` over the host's `pointer` on local device `ordinal`. */
int32_t rm_cuda_backend_wrap(rm_mem_backend *backend, rm_descriptor *where, void *pointer,
                             int32_t ordinal, rm_device_released_fn released, void *user,
                             rm_mem_block *block);

/** cuda_info's part: fills *out (status and message included). */
void rm_cuda_backend_info(rm_mem_backend *backend, rm_cuda_info *out);
#endif

#endif
