/* What test_tensor_processes and tensor_peer share: the data pattern and
 * checksum both sides compute over a tensor view, the record of the
 * streaming handoff, and hex encoding. Test code, header-only.
 *
 * The peer's command protocol (one command line on stdin, one reply line on
 * stdout) is described at the top of tensor_peer.c. */
#ifndef RM_TEST_TENSOR_PEER_PROTOCOL_H
#define RM_TEST_TENSOR_PEER_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "rm_plugin.h"

/* ------------------------------------------------------------------------ */
/* Checksum: 4-lane multiply-xor over little-endian 64-bit words, length    */
/* mixed in at the end. Fast enough for 1 GiB (~0.2 s), sensitive to every  */
/* byte and to its position.                                                */
/* ------------------------------------------------------------------------ */

typedef struct tp_hash {
    uint64_t lane[4];
    uint8_t pending[32];
    size_t pending_bytes;
    uint64_t length;
} tp_hash;

static inline uint64_t tp_load64(const uint8_t *at)
{
    uint64_t word;
    memcpy(&word, at, sizeof word);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word = __builtin_bswap64(word);
#endif
    return word;
}

static inline void tp_store64(uint8_t *at, uint64_t word)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word = __builtin_bswap64(word);
#endif
    memcpy(at, &word, sizeof word);
}

static inline uint64_t tp_mix(uint64_t state, uint64_t word)
{
    state ^= word;
    state *= 0xff51afd7ed558ccdu;
    return state ^ (state >> 32);
}

static inline void tp_hash_init(tp_hash *hash)
{
    static const uint64_t seeds[4] = {0x243f6a8885a308d3u, 0x13198a2e03707344u,
                                      0xa4093822299f31d0u, 0x082efa98ec4e6c89u};
    memcpy(hash->lane, seeds, sizeof seeds);
    hash->pending_bytes = 0;
    hash->length = 0;
}

static inline void tp_hash_block(tp_hash *hash, const uint8_t *block)
{
    for (int i = 0; i < 4; i++)
        hash->lane[i] = tp_mix(hash->lane[i], tp_load64(block + 8 * i));
}

static inline void tp_hash_update(tp_hash *hash, const void *data, size_t size)
{
    const uint8_t *at = data;
    hash->length += size;
    if (hash->pending_bytes > 0) {
        size_t take = 32 - hash->pending_bytes;
        if (take > size)
            take = size;
        memcpy(hash->pending + hash->pending_bytes, at, take);
        hash->pending_bytes += take;
        at += take;
        size -= take;
        if (hash->pending_bytes < 32)
            return;
        tp_hash_block(hash, hash->pending);
        hash->pending_bytes = 0;
    }
    for (; size >= 32; at += 32, size -= 32)
        tp_hash_block(hash, at);
    memcpy(hash->pending, at, size);
    hash->pending_bytes = size;
}

static inline uint64_t tp_hash_final(tp_hash *hash)
{
    if (hash->pending_bytes > 0) {
        memset(hash->pending + hash->pending_bytes, 0, 32 - hash->pending_bytes);
        tp_hash_block(hash, hash->pending);
        hash->pending_bytes = 0;
    }
    uint64_t state = tp_mix(0x6a09e667f3bcc908u, hash->length);
    for (int i = 0; i < 4; i++)
        state = tp_mix(state, hash->lane[i]);
    return state;
}

static inline uint64_t tp_hash_bytes(const void *data, size_t size)
{
    tp_hash hash;
    tp_hash_init(&hash);
    tp_hash_update(&hash, data, size);
    return tp_hash_final(&hash);
}

/* ------------------------------------------------------------------------ */
/* Pattern: byte j of stream `seed` is byte (j % 8) of splitmix64 word      */
/* j / 8, little-endian.                                                     */
/* ------------------------------------------------------------------------ */

static inline uint64_t tp_splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static inline uint64_t tp_pattern_word(uint64_t seed, uint64_t word_index)
{
    return tp_splitmix(seed * 0x2545f4914f6cdd1du + word_index);
}

/* Writes bytes [start, start + size) of stream `seed` to `out`. */
static inline void tp_pattern(uint64_t seed, uint64_t start, void *out, size_t size)
{
    uint8_t *at = out;
    while (size > 0 && (start % 8) != 0) {
        *at++ = (uint8_t)(tp_pattern_word(seed, start / 8) >> (8 * (start % 8)));
        start++;
        size--;
    }
    for (; size >= 8; at += 8, start += 8, size -= 8)
        tp_store64(at, tp_pattern_word(seed, start / 8));
    for (; size > 0; at++, start++, size--)
        *at = (uint8_t)(tp_pattern_word(seed, start / 8) >> (8 * (start % 8)));
}

/* Hash of bytes [0, size) of stream `seed`, without the memory. */
static inline uint64_t tp_pattern_hash(uint64_t seed, uint64_t size)
{
    uint8_t chunk[64 * 1024];
    tp_hash hash;
    tp_hash_init(&hash);
    for (uint64_t done = 0; done < size;) {
        size_t take = size - done < sizeof chunk ? (size_t)(size - done) : sizeof chunk;
        tp_pattern(seed, done, chunk, take);
        tp_hash_update(&hash, chunk, take);
        done += take;
    }
    return tp_hash_final(&hash);
}

/* ------------------------------------------------------------------------ */
/* Views: the elements of a tensor in C order, through its strides          */
/* ------------------------------------------------------------------------ */

typedef struct tp_view {
    uint8_t *data;
    uint64_t nbytes;
    uint64_t element_bytes;
    uint32_t ndim;
    int64_t shape[RM_TENSOR_MAX_DIMS];
    int64_t strides[RM_TENSOR_MAX_DIMS]; /* elements */
} tp_view;

static inline tp_view tp_view_of(const rm_tensor_info *info)
{
    tp_view view = {.data = info->data,
                    .nbytes = info->nbytes,
                    .element_bytes = (uint64_t)info->dtype.bits * info->dtype.lanes / 8,
                    .ndim = info->ndim};
    for (uint32_t i = 0; i < info->ndim && i < RM_TENSOR_MAX_DIMS; i++) {
        view.shape[i] = info->shape[i];
        view.strides[i] = info->strides[i];
    }
    return view;
}

static inline uint64_t tp_view_elements(const tp_view *view)
{
    uint64_t count = 1;
    for (uint32_t i = 0; i < view->ndim; i++)
        count *= (uint64_t)view->shape[i];
    return count;
}

/* C-contiguous: the elements are the bytes from data on, in order. */
static inline bool tp_view_is_contiguous(const tp_view *view)
{
    int64_t expected = 1;
    for (uint32_t i = view->ndim; i-- > 0;) {
        if (view->shape[i] != 1 && view->strides[i] != expected)
            return false;
        expected *= view->shape[i];
    }
    return true;
}

/* Calls visit(user, element, index) for every element in C order. */
static inline void tp_view_walk(const tp_view *view,
                                void (*visit)(void *user, uint8_t *element, uint64_t index),
                                void *user)
{
    uint64_t count = tp_view_elements(view);
    int64_t index[RM_TENSOR_MAX_DIMS] = {0};
    int64_t offset = 0; /* elements */
    for (uint64_t e = 0; e < count; e++) {
        visit(user, view->data + (uint64_t)offset * view->element_bytes, e);
        for (uint32_t d = view->ndim; d-- > 0;) {
            offset += view->strides[d];
            if (++index[d] < view->shape[d])
                break;
            offset -= view->strides[d] * view->shape[d];
            index[d] = 0;
        }
    }
}

typedef struct tp_walk_state {
    tp_hash hash;
    uint64_t seed;
    uint64_t element_bytes;
} tp_walk_state;

static inline void tp_visit_hash(void *user, uint8_t *element, uint64_t index)
{
    tp_walk_state *state = user;
    (void)index;
    tp_hash_update(&state->hash, element, (size_t)state->element_bytes);
}

static inline void tp_visit_fill(void *user, uint8_t *element, uint64_t index)
{
    tp_walk_state *state = user;
    tp_pattern(state->seed, index * state->element_bytes, element,
               (size_t)state->element_bytes);
}

/* Hash of the elements as the view shows them (C order). */
static inline uint64_t tp_view_hash(const tp_view *view)
{
    if (tp_view_is_contiguous(view))
        return tp_hash_bytes(view->data, (size_t)(tp_view_elements(view) * view->element_bytes));
    tp_walk_state state = {.element_bytes = view->element_bytes};
    tp_hash_init(&state.hash);
    tp_view_walk(view, tp_visit_hash, &state);
    return tp_hash_final(&state.hash);
}

/* Hash of all nbytes the view spans, gaps between elements included. */
static inline uint64_t tp_view_raw_hash(const tp_view *view)
{
    return tp_hash_bytes(view->data, (size_t)view->nbytes);
}

/* Both hashes at once: one pass when the elements are the whole span. */
static inline void tp_view_hashes(const tp_view *view, uint64_t *elements, uint64_t *raw)
{
    *elements = tp_view_hash(view);
    if (tp_view_is_contiguous(view) && tp_view_elements(view) * view->element_bytes == view->nbytes)
        *raw = *elements;
    else
        *raw = tp_view_raw_hash(view);
}

/* Fills the span with stream seed ^ 0x5a5a (the gaps), then element k with
 * bytes [k * element_bytes, (k + 1) * element_bytes) of stream `seed`. For
 * a contiguous view that is stream `seed` from its first byte. */
static inline void tp_view_fill(const tp_view *view, uint64_t seed)
{
    if (tp_view_is_contiguous(view)) {
        uint64_t used = tp_view_elements(view) * view->element_bytes;
        tp_pattern(seed, 0, view->data, (size_t)used);
        if (view->nbytes > used)
            tp_pattern(seed ^ 0x5a5a, used, view->data + used, (size_t)(view->nbytes - used));
        return;
    }
    tp_pattern(seed ^ 0x5a5a, 0, view->data, (size_t)view->nbytes);
    tp_walk_state state = {.seed = seed, .element_bytes = view->element_bytes};
    tp_view_walk(view, tp_visit_fill, &state);
}

/* "dtype=C.B.L ndim=N shape=a,b strides=x,y nbytes=M": what both sides
 * print for a view, compared as a string. */
static inline void tp_describe(const rm_tensor_info *info, char *out, size_t size)
{
    size_t used = (size_t)snprintf(out, size, "dtype=%u.%u.%u ndim=%u shape=", info->dtype.code,
                                   info->dtype.bits, info->dtype.lanes, info->ndim);
    for (uint32_t i = 0; i < info->ndim && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%lld", i ? "," : "",
                                 (long long)info->shape[i]);
    if (used < size)
        used += (size_t)snprintf(out + used, size - used, " strides=");
    for (uint32_t i = 0; i < info->ndim && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%lld", i ? "," : "",
                                 (long long)info->strides[i]);
    if (used < size)
        snprintf(out + used, size - used, " nbytes=%llu", (unsigned long long)info->nbytes);
}

/* ------------------------------------------------------------------------ */
/* Streaming handoff (produce / consume)                                    */
/* ------------------------------------------------------------------------ */

/* One record on a producer -> consumer pipe. The consumer answers every
 * record with its seq (8 bytes, little-endian) on the ack pipe once it has
 * imported the tensor; the producer keeps its handle until then. */
typedef struct tp_record {
    uint64_t seq;
    uint64_t nbytes;
    uint64_t payload_hash; /* hash of the tensor's bytes after the header */
    uint64_t producer;     /* the producer's tag */
    uint8_t descriptor[RM_TENSOR_DESCRIPTOR_SIZE];
} tp_record;

/* The first 32 bytes of every streamed tensor; the payload after it is
 * stream tp_stream_seed(tag, seq). */
typedef struct tp_stream_header {
    uint64_t magic;
    uint64_t producer;
    uint64_t seq;
    uint64_t payload_hash;
} tp_stream_header;

#define TP_STREAM_MAGIC 0x4d41455254535054u /* "TPSTREAM" */
#define TP_STREAM_WINDOW 64                 /* tensors in flight per stream */

static inline uint64_t tp_stream_seed(uint64_t producer, uint64_t seq)
{
    return tp_splitmix(producer * 0x100000001b3u ^ seq);
}

/* Mostly 32 B to 4 KiB; one in 64 is 64 KiB. */
static inline uint64_t tp_stream_size(uint64_t producer, uint64_t seq)
{
    uint64_t roll = tp_splitmix(producer ^ (seq << 8));
    if (roll % 64 == 0)
        return 64 * 1024;
    return sizeof(tp_stream_header) + roll % 4064;
}

/* ------------------------------------------------------------------------ */
/* Hex                                                                      */
/* ------------------------------------------------------------------------ */

static inline void tp_hex_encode(const uint8_t *bytes, size_t size, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * size] = '\0';
}

static inline int tp_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes exactly `size` bytes; false on a bad digit or length. */
static inline bool tp_hex_decode(const char *text, size_t text_length, uint8_t *out, size_t size)
{
    if (text_length != 2 * size)
        return false;
    for (size_t i = 0; i < size; i++) {
        int high = tp_hex_digit(text[2 * i]), low = tp_hex_digit(text[2 * i + 1]);
        if (high < 0 || low < 0)
            return false;
        out[i] = (uint8_t)(high << 4 | low);
    }
    return true;
}

#endif
