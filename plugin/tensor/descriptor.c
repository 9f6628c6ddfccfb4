/* Tensor descriptors; the format is described in descriptor.h. */
#include "descriptor.h"

#include <endian.h>
#include <string.h>

#include "tensor_layout.h"

#define MAGIC 0x31544d52u /* "RMT1" read as a little-endian u32 */

_Static_assert(RM_TENSOR_DESCRIPTOR_SIZE == RM_DESCRIPTOR_CHECKED_BYTES + 8,
               "the checksum is the last field");
_Static_assert(sizeof RM_DESCRIPTOR_TEXT_PREFIX - 1 + (RM_TENSOR_DESCRIPTOR_SIZE * 4 + 2) / 3 <
                   RM_TENSOR_DESCRIPTOR_TEXT_MAX,
               "the text form fits its documented maximum");

/* Little-endian fields through memcpy, which compilers turn into single
 * loads and stores (byte loops were ~40% of an export + import). */
static void put16(uint8_t *at, uint16_t value)
{
    value = htole16(value);
    memcpy(at, &value, sizeof value);
}

static void put32(uint8_t *at, uint32_t value)
{
    value = htole32(value);
    memcpy(at, &value, sizeof value);
}

static void put64(uint8_t *at, uint64_t value)
{
    value = htole64(value);
    memcpy(at, &value, sizeof value);
}

static uint16_t get16(const uint8_t *at)
{
    uint16_t value;
    memcpy(&value, at, sizeof value);
    return le16toh(value);
}

static uint32_t get32(const uint8_t *at)
{
    uint32_t value;
    memcpy(&value, at, sizeof value);
    return le32toh(value);
}

static uint64_t get64(const uint8_t *at)
{
    uint64_t value;
    memcpy(&value, at, sizeof value);
    return le64toh(value);
}

static uint64_t checksum_mix(uint64_t x)
{
    x *= UINT64_C(0xff51afd7ed558ccd);
    return x ^ (x >> 32);
}

static uint64_t rotl23(uint64_t x)
{
    return x << 23 | x >> 41;
}

/* Version 2's checksum: eight independent lanes over the 24 words (three
 * rounds each), folded pairwise. Version 1 chained all 24 words through
 * one multiply each, a dependency chain that measured ~47 ns per
 * descriptor, a third of an export + import; this one is a chain of six.
 * The rotation keeps equal lanes from cancelling when they are folded.
 * The lanes are spelled out as scalars: written as an array loop, gcc
 * vectorised the 64-bit multiplies into SSE2 pmuludq triples, which was
 * slower than the serial version. */
uint64_t rm_descriptor_checksum(const uint8_t *bytes)
{
    const uint64_t seed = UINT64_C(0x243f6a8885a308d3);
    const uint64_t step = UINT64_C(0x9e3779b97f4a7c15);
    uint64_t l0 = seed, l1 = seed + step, l2 = seed + 2 * step, l3 = seed + 3 * step;
    uint64_t l4 = seed + 4 * step, l5 = seed + 5 * step, l6 = seed + 6 * step;
    uint64_t l7 = seed + 7 * step;
    for (size_t at = 0; at < RM_DESCRIPTOR_CHECKED_BYTES; at += 64) {
        const uint8_t *w = bytes + at;
        l0 = checksum_mix(l0 ^ get64(w));
        l1 = checksum_mix(l1 ^ get64(w + 8));
        l2 = checksum_mix(l2 ^ get64(w + 16));
        l3 = checksum_mix(l3 ^ get64(w + 24));
        l4 = checksum_mix(l4 ^ get64(w + 32));
        l5 = checksum_mix(l5 ^ get64(w + 40));
        l6 = checksum_mix(l6 ^ get64(w + 48));
        l7 = checksum_mix(l7 ^ get64(w + 56));
    }
    l0 = checksum_mix(l0 ^ rotl23(l4));
    l1 = checksum_mix(l1 ^ rotl23(l5));
    l2 = checksum_mix(l2 ^ rotl23(l6));
    l3 = checksum_mix(l3 ^ rotl23(l7));
    l0 = checksum_mix(l0 ^ rotl23(l2));
    l1 = checksum_mix(l1 ^ rotl23(l3));
    return checksum_mix(l0 ^ rotl23(l1));
}

void rm_descriptor_encode(const rm_descriptor *d, uint8_t *out)
{
    /* Every byte is written below, so no memset (a `rep stos` here was a
     * tenth of an export). */
    put32(out + 0, MAGIC);
    put16(out + 4, RM_DESCRIPTOR_VERSION);
    out[6] = d->kind;
    out[7] = (uint8_t)d->ndim;
    out[8] = d->dtype.code;
    out[9] = d->dtype.bits;
    put16(out + 10, d->dtype.lanes);
    put32(out + 12, d->slot);
    put32(out + 16, d->generation);
    put32(out + 20, d->owner_pid);
    put64(out + 24, d->pool_id);
    put64(out + 32, d->owner_start_time);
    put64(out + 40, d->offset);
    put64(out + 48, d->nbytes);
    put64(out + 56, d->session);
    for (uint32_t i = 0; i < RM_TENSOR_MAX_DIMS; i++) {
        bool used = i < d->ndim;
        put64(out + 64 + 8 * i, used ? (uint64_t)d->shape[i] : 0);
        put64(out + 128 + 8 * i, used ? (uint64_t)d->strides[i] : 0);
    }
    put64(out + RM_DESCRIPTOR_CHECKED_BYTES, rm_descriptor_checksum(out));
}

bool rm_descriptor_decode(const uint8_t *bytes, rm_descriptor *d, const char **why)
{
    if (get32(bytes) != MAGIC) {
        *why = "not a tensor descriptor (magic)";
        return false;
    }
    if (get16(bytes + 4) != RM_DESCRIPTOR_VERSION) {
        *why = get16(bytes + 4) == 1 ? "descriptor version 1, from an older rm_plugin (this "
                                       "one reads version 2)"
                                     : "unsupported descriptor version";
        return false;
    }
    if (get64(bytes + RM_DESCRIPTOR_CHECKED_BYTES) != rm_descriptor_checksum(bytes)) {
        *why = "checksum mismatch (damaged in transport)";
        return false;
    }
    /* Every field is assigned below (no memset: see encode). */
    d->kind = bytes[6];
    d->ndim = bytes[7];
    d->dtype = (rm_dtype){.code = bytes[8], .bits = bytes[9], .lanes = get16(bytes + 10)};
    d->slot = get32(bytes + 12);
    d->generation = get32(bytes + 16);
    d->owner_pid = get32(bytes + 20);
    d->pool_id = get64(bytes + 24);
    d->owner_start_time = get64(bytes + 32);
    d->offset = get64(bytes + 40);
    d->nbytes = get64(bytes + 48);
    d->session = get64(bytes + 56);
    if (d->ndim > RM_TENSOR_MAX_DIMS) {
        *why = "more dimensions than RM_TENSOR_MAX_DIMS";
        return false;
    }
    for (uint32_t i = 0; i < RM_TENSOR_MAX_DIMS; i++) {
        uint64_t shape = get64(bytes + 64 + 8 * i);
        uint64_t stride = get64(bytes + 128 + 8 * i);
        if (i >= d->ndim && (shape != 0 || stride != 0)) {
            *why = "shape or stride set beyond ndim";
            return false;
        }
        d->shape[i] = (int64_t)shape;
        d->strides[i] = (int64_t)stride;
    }
    uint64_t element = rm_dtype_size(d->dtype);
    if (element == 0) {
        *why = "unsupported dtype";
        return false;
    }
    uint64_t span;
    if (!rm_layout_span(element, d->ndim, d->shape, d->strides, &span, why))
        return false;
    if (span != d->nbytes) {
        *why = "dtype, shape and strides do not span nbytes";
        return false;
    }
    switch (d->kind) {
    case RM_DESCRIPTOR_KIND_POOL:
        if (d->pool_id == 0 || d->owner_pid == 0 || d->owner_pid > INT32_MAX ||
            d->generation == 0) {
            *why = "pool identity, owner or generation missing";
            return false;
        }
        if (d->offset % RM_TENSOR_MIN_ALIGNMENT != 0) {
            *why = "offset not aligned like a tensor";
            return false;
        }
        return true;
    case RM_DESCRIPTOR_KIND_CUDA_IPC:
        /* A wrapped device pointer may sit anywhere in its allocation:
         * the offset is checked against the block by the CUDA backend. */
        if (d->pool_id == 0 || d->owner_pid == 0 || d->owner_pid > INT32_MAX ||
            d->generation == 0) {
            *why = "device table identity, owner or generation missing";
            return false;
        }
        return true;
    case RM_DESCRIPTOR_KIND_INLINE:
        if (d->pool_id != 0 || d->owner_pid != 0 || d->owner_start_time != 0 ||
            d->slot != 0 || d->generation != 0 || d->offset != RM_TENSOR_DESCRIPTOR_SIZE) {
            *why = "inline descriptor with pool fields";
            return false;
        }
        return true;
    default:
        *why = "unknown descriptor kind";
        return false;
    }
}

static const char base64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t rm_descriptor_to_text(const uint8_t *bytes, char *out)
{
    size_t used = sizeof RM_DESCRIPTOR_TEXT_PREFIX - 1;
    memcpy(out, RM_DESCRIPTOR_TEXT_PREFIX, used);
    uint32_t bits = 0;
    int held = 0;
    for (size_t i = 0; i < RM_TENSOR_DESCRIPTOR_SIZE; i++) {
        bits = bits << 8 | bytes[i];
        held += 8;
        while (held >= 6) {
            held -= 6;
            out[used++] = base64url[(bits >> held) & 63];
        }
    }
    if (held > 0)
        out[used++] = base64url[(bits << (6 - held)) & 63];
    out[used] = '\0';
    return used;
}

static int base64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

bool rm_descriptor_from_text(const char *text, uint8_t *out, const char **why)
{
    size_t prefix = sizeof RM_DESCRIPTOR_TEXT_PREFIX - 1;
    if (strncmp(text, RM_DESCRIPTOR_TEXT_PREFIX, prefix) != 0) {
        *why = "text descriptor does not start with \"" RM_DESCRIPTOR_TEXT_PREFIX "\"";
        return false;
    }
    const size_t digits = (RM_TENSOR_DESCRIPTOR_SIZE * 4 + 2) / 3;
    const char *cursor = text + prefix;
    if (strnlen(cursor, digits + 1) != digits) {
        *why = "text descriptor has the wrong length";
        return false;
    }
    uint32_t bits = 0;
    int held = 0;
    size_t filled = 0;
    for (size_t i = 0; i < digits; i++) {
        int value = base64url_value(cursor[i]);
        if (value < 0) {
            *why = "text descriptor has a character outside base64url";
            return false;
        }
        bits = bits << 6 | (uint32_t)value;
        held += 6;
        if (held >= 8) {
            held -= 8;
            out[filled++] = (uint8_t)(bits >> held);
        }
    }
    if ((bits & ((1u << held) - 1)) != 0) {
        *why = "text descriptor has stray trailing bits";
        return false;
    }
    return filled == RM_TENSOR_DESCRIPTOR_SIZE;
}
