/* A context's device table: the small shared segment through which other
 * processes find the device memory of its CUDA tensors.
 *
 * Beside it is an ordinary control segment (shm_control.h) with one slot
 * per live device tensor: its generation, its holders and its binding, so
 * that holds, remote releases, dead holders and forged descriptors work
 * exactly as for shared-memory pools. The table adds what a control
 * segment does not know:
 *
 *  - one row per exportable block: its 64-byte IPC handle and its kind,
 *    the device's UUID (importers map it to their own ordinal), its size,
 *    its address in the owner's process (for imports by another context of
 *    that process, which the driver would refuse to open), and `openers`:
 *    the holder bits of the importing contexts that have the handle open.
 *    The driver's rule is that memory must not be freed while another
 *    process has its handle open (cuMemFree before cuIpcCloseMemHandle is
 *    undefined), and importers keep handles open after their last tensor
 *    of a block goes (opening costs milliseconds), so the owner frees a
 *    block only when no opener is left; `wanted` asks importers to close.
 *  - one row per slot: which block (and block generation) the slot's
 *    tensor lives in, and the tensor's interprocess event, once the owner
 *    recorded one.
 *
 * Named RM_SEGMENT_CUDA_TABLE ("/rmcu.<ns>.<pid>.<id>"), 0600, committed;
 * the control segment is its RM_SEGMENT_CUDA_CONTROL sibling. Only the
 * owner writes the rows' contents, before it publishes the slot (release
 * order), and never while someone holds a slot that names them; importers
 * write only `openers`. Importers check magic, version, identity and size
 * before they use a table, and every index they read from it. */
#ifndef RM_INTERNAL_CUDA_TABLE_H
#define RM_INTERNAL_CUDA_TABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define RM_CUDA_TABLE_MAGIC 0x55434d52u /* "RMCU" */
#define RM_CUDA_TABLE_LAYOUT_VERSION 1
#define RM_CUDA_TABLE_HEADER_BYTES 256
/* Most blocks a table has rows for. */
#define RM_CUDA_BLOCKS_LIMIT 4096u

/* rm_cuda_block_row.handle_kind: how the handle bytes are opened. */
#define RM_CUDA_HANDLE_LEGACY_IPC 1u /* cuIpcGetMemHandle / cuIpcOpenMemHandle_v2 */

/* rm_cuda_block_row.flags */
#define RM_CUDA_BLOCK_BORROWED 1u /* the host's memory (tensor_wrap_device): importers
                                     close the handle at their last tensor of it */

typedef struct rm_cuda_table_header {
    uint32_t magic;
    uint32_t layout_version;
    uint64_t pool_id;
    uint32_t owner_pid;
    uint32_t block_capacity;
    uint64_t owner_start_time;
    uint32_t slot_count;
    uint32_t reserved;
} rm_cuda_table_header;

typedef struct rm_cuda_block_row {
    _Atomic uint32_t generation; /* changes whenever the row is reused */
    _Atomic uint32_t live;       /* 1 while the block is allocated */
    _Atomic uint32_t openers;    /* holder bits (control segment) with the handle open */
    _Atomic uint32_t wanted;     /* 1: the owner asks importers to close it when unused */
    uint64_t size;
    uint64_t owner_address;      /* the block's CUdeviceptr in the owner's process */
    uint8_t uuid[16];
    uint32_t handle_kind;        /* RM_CUDA_HANDLE_* */
    uint32_t flags;              /* RM_CUDA_BLOCK_* */
    uint8_t handle[64];
    uint64_t spare;
} rm_cuda_block_row;

typedef struct rm_cuda_slot_row {
    _Atomic uint32_t block;            /* the block row of the slot's tensor */
    _Atomic uint32_t block_generation; /* ... and its generation */
    _Atomic uint32_t event_ready;      /* 1 once event_handle holds an event */
    _Atomic uint32_t event_generation; /* changes when the owner makes a new event
                                          for the slot (its device changed) */
    uint64_t owner_event;              /* the CUevent in the owner's process */
    uint8_t event_handle[64];          /* CUipcEventHandle */
    uint8_t spare[40];
} rm_cuda_slot_row;

_Static_assert(sizeof(rm_cuda_table_header) <= RM_CUDA_TABLE_HEADER_BYTES, "header fits");
_Static_assert(sizeof(rm_cuda_block_row) == 128, "a block row is two cache lines");
_Static_assert(sizeof(rm_cuda_slot_row) == 128, "a slot row is two cache lines");

/** A mapped table. */
typedef struct rm_cuda_table {
    rm_cuda_table_header *header;
    rm_cuda_block_row *blocks;
    rm_cuda_slot_row *slots;
    size_t mapped_bytes;
} rm_cuda_table;

static inline size_t rm_cuda_table_size(uint32_t block_capacity, uint32_t slot_count)
{
    return RM_CUDA_TABLE_HEADER_BYTES + (size_t)block_capacity * sizeof(rm_cuda_block_row) +
           (size_t)slot_count * sizeof(rm_cuda_slot_row);
}

static inline void rm_cuda_table_lay_out(rm_cuda_table *table, void *base, size_t bytes,
                                         uint32_t block_capacity)
{
    unsigned char *at = base;
    table->header = base;
    table->blocks = (rm_cuda_block_row *)(void *)(at + RM_CUDA_TABLE_HEADER_BYTES);
    table->slots = (rm_cuda_slot_row *)(void *)(at + RM_CUDA_TABLE_HEADER_BYTES +
                                                (size_t)block_capacity *
                                                    sizeof(rm_cuda_block_row));
    table->mapped_bytes = bytes;
}

#endif
