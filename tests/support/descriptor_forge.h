/* Forging tensor descriptors the way a buggy or hostile process of the same
 * user could: fields read and written at the offsets docs/internals.md
 * documents ("Descriptors: bytes and checksum"), the checksum recomputed by
 * that documentation's formula (written here from the documentation, not
 * taken from the plugin, so a disagreement between the two fails a test),
 * and the text form encoded. Test code, header-only; used by the tensor
 * suites and the descriptor fuzz seeds. */
#ifndef RM_TEST_DESCRIPTOR_FORGE_H
#define RM_TEST_DESCRIPTOR_FORGE_H

#include <stddef.h>
#include <stdint.h>

#include "rm_plugin.h"

/* Field offsets (bytes) of the binary form. */
enum {
    DF_MAGIC = 0, DF_VERSION = 4, DF_KIND = 6, DF_NDIM = 7, DF_DTYPE_CODE = 8,
    DF_DTYPE_BITS = 9, DF_DTYPE_LANES = 10, DF_SLOT = 12, DF_GENERATION = 16, DF_PID = 20,
    DF_POOL = 24, DF_START = 32, DF_OFFSET = 40, DF_NBYTES = 48, DF_SESSION = 56,
    DF_SHAPE = 64, DF_STRIDES = 128, DF_CHECKSUM = 192
};

#define DF_TEXT_PREFIX "rmt1."

static inline uint64_t df_get(const uint8_t *d, size_t at, size_t width)
{
    uint64_t value = 0;
    for (size_t i = 0; i < width; i++)
        value |= (uint64_t)d[at + i] << (8 * i);
    return value;
}

static inline void df_put(uint8_t *d, size_t at, size_t width, uint64_t value)
{
    for (size_t i = 0; i < width; i++)
        d[at + i] = (uint8_t)(value >> (8 * i));
}

static inline uint64_t df_mix(uint64_t x)
{
    uint64_t y = x * 0xff51afd7ed558ccdu;
    return y ^ (y >> 32);
}

/* The checksum of bytes 0..191, as docs/internals.md describes it. */
static inline uint64_t df_checksum(const uint8_t *d)
{
    uint64_t lane[8];
    for (uint64_t j = 0; j < 8; j++)
        lane[j] = 0x243f6a8885a308d3u + j * 0x9e3779b97f4a7c15u;
    for (size_t r = 0; r < 3; r++)
        for (size_t j = 0; j < 8; j++)
            lane[j] = df_mix(lane[j] ^ df_get(d, 8 * (8 * r + j), 8));
    for (size_t width = 4; width > 0; width /= 2)
        for (size_t j = 0; j < width; j++) {
            uint64_t other = lane[j + width];
            lane[j] = df_mix(lane[j] ^ ((other << 23) | (other >> 41)));
        }
    return lane[0];
}

static inline void df_reseal(uint8_t *d)
{
    df_put(d, DF_CHECKSUM, 8, df_checksum(d));
}

static const char df_base64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* "rmt1." and the 200 bytes in unpadded base64url, NUL-terminated; `out`
 * holds RM_TENSOR_DESCRIPTOR_TEXT_MAX bytes. */
static inline void df_to_text(const uint8_t *d, char *out)
{
    size_t n = 0;
    for (const char *p = DF_TEXT_PREFIX; *p != '\0'; p++)
        out[n++] = *p;
    uint32_t bits = 0;
    int have = 0;
    for (size_t i = 0; i < RM_TENSOR_DESCRIPTOR_SIZE; i++) {
        bits = (bits << 8) | d[i];
        have += 8;
        while (have >= 6) {
            have -= 6;
            out[n++] = df_base64url[(bits >> have) & 63];
        }
    }
    if (have > 0)
        out[n++] = df_base64url[(bits << (6 - have)) & 63];
    out[n] = '\0';
}

#endif
