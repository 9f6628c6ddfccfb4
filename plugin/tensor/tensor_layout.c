/* Tensor layout arithmetic; see tensor_layout.h. */
#include "tensor_layout.h"

#define MAX_ELEMENT_BYTES 1024u

/* Exactly the table of element types in abi/rm_plugin.h (rm_dtype): the
 * widths DLPack consumers (NumPy, PyTorch, CuPy, JAX) have for each code.
 * Anything else, float24 or bfloat32, would import as a type no consumer
 * can read. */
static bool dtype_listed(uint8_t code, uint8_t bits)
{
    switch (code) {
    case RM_DTYPE_INT:
    case RM_DTYPE_UINT:
        return bits == 8 || bits == 16 || bits == 32 || bits == 64;
    case RM_DTYPE_FLOAT:
        return bits == 16 || bits == 32 || bits == 64;
    case RM_DTYPE_BFLOAT:
        return bits == 16;
    case RM_DTYPE_COMPLEX:
        return bits == 64 || bits == 128;
    case RM_DTYPE_BOOL:
        return bits == 8;
    default:
        return false;
    }
}

uint64_t rm_dtype_size(rm_dtype dtype)
{
    if (!dtype_listed(dtype.code, dtype.bits) || dtype.lanes == 0)
        return 0;
    uint64_t size = (uint64_t)(dtype.bits / 8) * dtype.lanes;
    return size <= MAX_ELEMENT_BYTES ? size : 0;
}

bool rm_layout_contiguous_strides(uint32_t ndim, const int64_t *shape, int64_t *strides)
{
    int64_t stride = 1;
    for (uint32_t i = ndim; i-- > 0;) {
        strides[i] = stride;
        int64_t extent = shape[i] > 1 ? shape[i] : 1;
        if (__builtin_mul_overflow(stride, extent, &stride))
            return false;
    }
    return true;
}

bool rm_layout_span(uint64_t element_size, uint32_t ndim, const int64_t *shape,
                    const int64_t *strides, uint64_t *out_bytes, const char **why)
{
    if (ndim > RM_TENSOR_MAX_DIMS) {
        *why = "more dimensions than RM_TENSOR_MAX_DIMS";
        return false;
    }
    bool empty = false;
    int64_t last = 0; /* index of the last element, in elements */
    for (uint32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            *why = "a negative dimension";
            return false;
        }
        if (strides[i] < 0) {
            *why = "a negative stride";
            return false;
        }
        if (shape[i] == 0) {
            empty = true;
            continue;
        }
        int64_t reach;
        if (__builtin_mul_overflow(shape[i] - 1, strides[i], &reach) ||
            __builtin_add_overflow(last, reach, &last)) {
            *why = "shape and strides overflow";
            return false;
        }
    }
    if (empty) {
        *out_bytes = 0;
        return true;
    }
    int64_t bytes;
    if (__builtin_add_overflow(last, 1, &bytes) ||
        __builtin_mul_overflow(bytes, (int64_t)element_size, &bytes)) {
        *why = "shape and strides overflow";
        return false;
    }
    *out_bytes = (uint64_t)bytes;
    return true;
}
