/* Descriptors and tensor layouts: encode/decode round trips, the text
 * form, every damaged byte caught, every field check reached with a valid
 * checksum, layout arithmetic at its overflow edges. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "descriptor.h"
#include "tensor_layout.h"

TestSuite(descriptor, .timeout = 10);

static rm_descriptor sample(void)
{
    rm_descriptor d;
    memset(&d, 0, sizeof d); /* padding too: round_trip compares bytes */
    d = (rm_descriptor){
        .kind = RM_DESCRIPTOR_KIND_POOL,
        .ndim = 3,
        .dtype = {.code = RM_DTYPE_FLOAT, .bits = 32, .lanes = 1},
        .slot = 17,
        .generation = 5,
        .owner_pid = 4242,
        .pool_id = 0x0123456789abcdefu,
        .owner_start_time = 987654,
        .offset = 4096,
        .session = 9,
        .shape = {2, 3, 4},
    };
    rm_layout_contiguous_strides(d.ndim, d.shape, d.strides);
    d.nbytes = 2 * 3 * 4 * 4;
    return d;
}

/* Re-seals bytes after a deliberate change, so the field check is reached. */
static void reseal(uint8_t *bytes)
{
    uint64_t sum = rm_descriptor_checksum(bytes);
    for (int i = 0; i < 8; i++)
        bytes[RM_DESCRIPTOR_CHECKED_BYTES + i] = (uint8_t)(sum >> (8 * i));
}

Test(descriptor, round_trip_binary_and_text)
{
    rm_descriptor d = sample(), back;
    /* decode assigns every field but leaves padding alone; zero it on both
     * sides so that memcmp compares fields only. */
    memset(&back, 0, sizeof back);
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    rm_descriptor_encode(&d, bytes);
    const char *why = NULL;
    cr_assert(rm_descriptor_decode(bytes, &back, &why), "%s", why);
    cr_expect_eq(memcmp(&d, &back, sizeof d), 0);
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX];
    size_t length = rm_descriptor_to_text(bytes, text);
    cr_expect_lt(length, (size_t)RM_TENSOR_DESCRIPTOR_TEXT_MAX);
    cr_expect_eq(strncmp(text, "rmt1.", 5), 0);
    uint8_t again[RM_TENSOR_DESCRIPTOR_SIZE];
    cr_assert(rm_descriptor_from_text(text, again, &why), "%s", why);
    cr_expect_eq(memcmp(bytes, again, sizeof bytes), 0);
}

Test(descriptor, every_damaged_byte_is_caught)
{
    rm_descriptor d = sample(), back;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    rm_descriptor_encode(&d, bytes);
    for (size_t at = 0; at < sizeof bytes; at++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t damaged[RM_TENSOR_DESCRIPTOR_SIZE];
            memcpy(damaged, bytes, sizeof damaged);
            damaged[at] ^= (uint8_t)(1u << bit);
            const char *why = NULL;
            cr_expect_not(rm_descriptor_decode(damaged, &back, &why), "byte %zu bit %d", at,
                          bit);
        }
    }
}

struct field_case {
    size_t offset;
    uint64_t value;
    unsigned width;
    char reason[48];
};

Test(descriptor, each_field_check_is_reached)
{
    static const struct field_case cases[] = {
        {4, 1, 2, "version 1"},
        {4, 3, 2, "version"},
        {6, 4, 1, "kind"},
        {6, 0, 1, "kind 0"},
        {7, 9, 1, "ndim"},
        {7, 2, 1, "span (ndim smaller)"},
        {8, 7, 1, "dtype code"},
        {9, 12, 1, "dtype bits"},
        {10, 0, 2, "lanes"},
        {16, 0, 4, "generation 0"},
        {20, 0, 4, "owner pid 0"},
        {24, 0, 8, "pool id 0"},
        {40, 4097, 8, "offset alignment"},
        {48, 97, 8, "nbytes"},
        {64, (uint64_t)-1, 8, "negative shape"},
        {128 + 16, (uint64_t)-1, 8, "negative stride"},
        {64 + 3 * 8, 1, 8, "shape beyond ndim"},
        {128 + 3 * 8, 1, 8, "stride beyond ndim"},
        {64, (uint64_t)1 << 62, 8, "overflow"},
    };
    rm_descriptor d = sample(), back;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    rm_descriptor_encode(&d, bytes);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t forged[RM_TENSOR_DESCRIPTOR_SIZE];
        memcpy(forged, bytes, sizeof forged);
        for (unsigned b = 0; b < cases[i].width; b++)
            forged[cases[i].offset + b] = (uint8_t)(cases[i].value >> (8 * b));
        reseal(forged);
        const char *why = NULL;
        cr_expect_not(rm_descriptor_decode(forged, &back, &why), "%s accepted",
                      cases[i].reason);
        cr_expect(why != NULL && strstr(why, "checksum") == NULL,
                  "%s: stopped at the checksum, not at the field", cases[i].reason);
    }
}

Test(descriptor, inline_kind_rejects_pool_fields)
{
    rm_descriptor d = sample(), back;
    d.kind = RM_DESCRIPTOR_KIND_INLINE;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    rm_descriptor_encode(&d, bytes);
    const char *why = NULL;
    cr_expect_not(rm_descriptor_decode(bytes, &back, &why));
    d = (rm_descriptor){.kind = RM_DESCRIPTOR_KIND_INLINE, .ndim = 1,
                        .dtype = {RM_DTYPE_UINT, 8, 1}, .offset = RM_TENSOR_DESCRIPTOR_SIZE,
                        .nbytes = 10, .shape = {10}, .strides = {1}};
    rm_descriptor_encode(&d, bytes);
    cr_expect(rm_descriptor_decode(bytes, &back, &why), "%s", why);
}

/* A device tensor's descriptor names a slot of a device table like a pool
 * descriptor, but a wrapped pointer may sit anywhere in its block: the
 * offset is the backend's to check, identity is still required. */
Test(descriptor, cuda_kind_needs_identity_not_alignment)
{
    rm_descriptor d = sample(), back;
    d.kind = RM_DESCRIPTOR_KIND_CUDA_IPC;
    d.offset = 4;
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE];
    rm_descriptor_encode(&d, bytes);
    const char *why = NULL;
    cr_expect(rm_descriptor_decode(bytes, &back, &why), "%s", why);
    cr_expect_eq(back.kind, RM_DESCRIPTOR_KIND_CUDA_IPC);
    cr_expect_eq(back.offset, 4);
    rm_descriptor missing = d;
    missing.pool_id = 0;
    rm_descriptor_encode(&missing, bytes);
    cr_expect_not(rm_descriptor_decode(bytes, &back, &why));
    cr_expect(why != NULL && strstr(why, "identity") != NULL, "%s", why);
    missing = d;
    missing.generation = 0;
    rm_descriptor_encode(&missing, bytes);
    cr_expect_not(rm_descriptor_decode(bytes, &back, &why));
    missing = d;
    missing.owner_pid = 0;
    rm_descriptor_encode(&missing, bytes);
    cr_expect_not(rm_descriptor_decode(bytes, &back, &why));
}

Test(descriptor, text_form_rejects_bad_input)
{
    rm_descriptor d = sample();
    uint8_t bytes[RM_TENSOR_DESCRIPTOR_SIZE], out[RM_TENSOR_DESCRIPTOR_SIZE];
    rm_descriptor_encode(&d, bytes);
    char text[RM_TENSOR_DESCRIPTOR_TEXT_MAX + 8];
    size_t length = rm_descriptor_to_text(bytes, text);
    const char *why = NULL;
    char bad[sizeof text];
    memcpy(bad, text, length + 1);
    bad[0] = 'x';
    cr_expect_not(rm_descriptor_from_text(bad, out, &why), "prefix");
    memcpy(bad, text, length + 1);
    bad[length - 1] = '\0';
    cr_expect_not(rm_descriptor_from_text(bad, out, &why), "truncated");
    memcpy(bad, text, length + 1);
    bad[length] = 'A';
    bad[length + 1] = '\0';
    cr_expect_not(rm_descriptor_from_text(bad, out, &why), "overlong");
    memcpy(bad, text, length + 1);
    bad[10] = '+';
    cr_expect_not(rm_descriptor_from_text(bad, out, &why), "not base64url");
    memcpy(bad, text, length + 1);
    bad[length - 1] = 'B'; /* sets the two unused trailing bits */
    cr_expect_not(rm_descriptor_from_text(bad, out, &why), "stray bits");
}

Test(layout, spans_and_overflow)
{
    int64_t shape[8] = {2, 3}, strides[8] = {0};
    uint64_t bytes = 0;
    const char *why = NULL;
    cr_assert(rm_layout_contiguous_strides(2, shape, strides));
    cr_expect(strides[0] == 3 && strides[1] == 1);
    cr_assert(rm_layout_span(4, 2, shape, strides, &bytes, &why));
    cr_expect_eq(bytes, 24);
    int64_t transposed[8] = {1, 2};
    cr_assert(rm_layout_span(4, 2, shape, transposed, &bytes, &why));
    cr_expect_eq(bytes, 4 * (1 + 1 * 1 + 2 * 2));
    int64_t empty[8] = {0, 5};
    cr_assert(rm_layout_span(8, 2, empty, strides, &bytes, &why));
    cr_expect_eq(bytes, 0);
    cr_assert(rm_layout_span(2, 0, shape, strides, &bytes, &why));
    cr_expect_eq(bytes, 2, "a scalar is one element");
    int64_t huge[8] = {INT64_MAX, 2}, unit[8] = {2, 1};
    cr_expect_not(rm_layout_span(1, 2, huge, unit, &bytes, &why));
    cr_expect_not(rm_layout_span(8, 1, (int64_t[8]){INT64_MAX / 4}, (int64_t[8]){1}, &bytes,
                                 &why));
    cr_expect_not(rm_layout_contiguous_strides(3, (int64_t[8]){INT64_MAX, 4, 4}, strides));
    cr_expect_eq(rm_dtype_size((rm_dtype){RM_DTYPE_COMPLEX, 32, 1}), 0);
    cr_expect_eq(rm_dtype_size((rm_dtype){RM_DTYPE_BOOL, 8, 1}), 1);
    cr_expect_eq(rm_dtype_size((rm_dtype){RM_DTYPE_BFLOAT, 16, 4}), 8);
    cr_expect_eq(rm_dtype_size((rm_dtype){3, 8, 1}), 0);
}
