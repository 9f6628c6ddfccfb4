/* Tensor descriptors: the bytes that cross a process boundary instead of a
 * tensor, in binary and printable form. Decoding checks everything that
 * can be checked without the pool (format, checksum, ranges, layout); the
 * tensor layer then checks the rest against the pool's control segment. */
#ifndef RM_INTERNAL_DESCRIPTOR_H
#define RM_INTERNAL_DESCRIPTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rm_plugin.h"

/*
 * Binary form, RM_TENSOR_DESCRIPTOR_SIZE (200) bytes, little-endian; the
 * same layout is in docs/internals.md (hosts are promised only its size,
 * its text prefix and that it is checked, abi/rm_plugin.h):
 *   0  u32 magic "RMT1"        4  u16 version (2)   6  u8 kind   7  u8 ndim
 *   8  dtype: u8 code, u8 bits, u16 lanes
 *  12  u32 slot               16  u32 generation  20  u32 owner pid
 *  24  u64 pool id            32  u64 owner start time (clock ticks)
 *  40  u64 offset             48  u64 nbytes      56  u64 session
 *  64  i64 shape[8]          128  i64 strides[8] (elements)
 * 192  u64 checksum of bytes 0..191 (rm_descriptor_checksum; the formula
 *      is in docs/internals.md). It catches damage in transport; it is not a
 *      secret and proves nothing about origin (the pool checks do that).
 * Kind 1 (pool): offset is from the start of the pool's data segment.
 * Kind 2 (inline): pool fields are 0, offset is 200, and nbytes of data
 * follow the descriptor.
 * Kind 3 (CUDA IPC, a legacy cuIpc memory handle; plugin 0.4): pool id,
 * owner, slot and generation name a tensor of the exporter's device table
 * (plugin/tensor/cuda/cuda_table.h), whose slot row names the block (its
 * 64-byte handle, device UUID and size) and the tensor's interprocess
 * event; offset is from the start of that block.
 * Text form: "rmt1." followed by the 200 bytes in base64url, no padding.
 * Version 1 (plugin 0.1) had a serial checksum; it is refused by name.
 */
#define RM_DESCRIPTOR_KIND_POOL 1
#define RM_DESCRIPTOR_KIND_INLINE 2
#define RM_DESCRIPTOR_KIND_CUDA_IPC 3
#define RM_DESCRIPTOR_VERSION 2
#define RM_DESCRIPTOR_CHECKED_BYTES 192
#define RM_DESCRIPTOR_TEXT_PREFIX "rmt1."

typedef struct rm_descriptor {
    uint8_t kind;
    uint32_t ndim;
    rm_dtype dtype;
    uint32_t slot;
    uint32_t generation;
    uint32_t owner_pid;
    uint64_t pool_id;
    uint64_t owner_start_time;
    uint64_t offset;
    uint64_t nbytes;
    uint64_t session;
    int64_t shape[RM_TENSOR_MAX_DIMS];
    int64_t strides[RM_TENSOR_MAX_DIMS];
} rm_descriptor;

/** The kind byte of an encoded descriptor, before any check. */
static inline uint8_t rm_descriptor_kind_of(const uint8_t *bytes)
{
    return bytes[6];
}

/** The checksum over the first RM_DESCRIPTOR_CHECKED_BYTES bytes. */
uint64_t rm_descriptor_checksum(const uint8_t *bytes);

/** Writes RM_TENSOR_DESCRIPTOR_SIZE bytes, checksum included. */
void rm_descriptor_encode(const rm_descriptor *descriptor, uint8_t *out);

/**
 * Parses and checks RM_TENSOR_DESCRIPTOR_SIZE bytes. False with a static
 * reason in *why when any check fails.
 */
bool rm_descriptor_decode(const uint8_t *bytes, rm_descriptor *out, const char **why);

/** The text form of a binary descriptor, NUL-terminated; `out` must hold
 *  RM_TENSOR_DESCRIPTOR_TEXT_MAX bytes. Returns its length. */
size_t rm_descriptor_to_text(const uint8_t *bytes, char *out);

/** The binary bytes of a text form (no other checks). False with a static
 *  reason in *why. */
bool rm_descriptor_from_text(const char *text, uint8_t *out, const char **why);

#endif
