/* The arithmetic of a tensor's layout: element size, default strides and
 * the bytes a shape and strides span, with every overflow caught. Shared
 * by allocation (trusting the host) and import (trusting nobody). */
#ifndef RM_INTERNAL_TENSOR_LAYOUT_H
#define RM_INTERNAL_TENSOR_LAYOUT_H

#include <stdbool.h>
#include <stdint.h>

#include "rm_plugin.h"

/** Bytes per element (bits * lanes / 8), or 0 when `dtype` is not one the
 *  plugin carries: a code and width from the table in abi/rm_plugin.h
 *  (rm_dtype), lanes >= 1, at most 1024 bytes per element. */
uint64_t rm_dtype_size(rm_dtype dtype);

/** Fills strides[0..ndim) for a C-contiguous layout of `shape`; false on
 *  overflow. */
bool rm_layout_contiguous_strides(uint32_t ndim, const int64_t *shape, int64_t *strides);

/**
 * The bytes spanned: element size * (1 + sum((shape[i]-1) * strides[i])),
 * or 0 when any shape[i] is 0. False (with a reason in *why, a static
 * string) for ndim > RM_TENSOR_MAX_DIMS, a negative shape or stride, or
 * arithmetic that overflows int64.
 */
bool rm_layout_span(uint64_t element_size, uint32_t ndim, const int64_t *shape,
                    const int64_t *strides, uint64_t *out_bytes, const char **why);

#endif
