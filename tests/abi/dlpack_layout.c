/* The DLPack mirrors in rm_plugin.h against dlpack.h itself: a host that
 * includes dlpack.h casts rm_dl_managed_tensor * to DLManagedTensor *, so
 * every size and offset must agree. DLManagedTensorVersioned (DLPack 1.0)
 * is newer than the dlpack.h Debian ships (0.6); its layout is pinned
 * from the DLPack 1.0 header by hand. */
#include <stddef.h>

#include <dlpack/dlpack.h>

#include "rm_plugin.h"

#define SAME(ours, theirs) \
    _Static_assert(sizeof(ours) == sizeof(theirs), #ours " size matches " #theirs)
#define SAME_AT(ours, field, theirs, their_field)                              \
    _Static_assert(offsetof(ours, field) == offsetof(theirs, their_field),     \
                   #ours "." #field " at " #theirs "." #their_field)

SAME(rm_dtype, DLDataType);
SAME_AT(rm_dtype, code, DLDataType, code);
SAME_AT(rm_dtype, bits, DLDataType, bits);
SAME_AT(rm_dtype, lanes, DLDataType, lanes);
_Static_assert(RM_DTYPE_INT == kDLInt && RM_DTYPE_UINT == kDLUInt &&
                   RM_DTYPE_FLOAT == kDLFloat && RM_DTYPE_BFLOAT == kDLBfloat,
               "dtype codes");

SAME(rm_dl_device, DLDevice);
SAME_AT(rm_dl_device, device_type, DLDevice, device_type);
SAME_AT(rm_dl_device, device_id, DLDevice, device_id);

SAME(rm_dl_tensor, DLTensor);
SAME_AT(rm_dl_tensor, data, DLTensor, data);
SAME_AT(rm_dl_tensor, device, DLTensor, device);
SAME_AT(rm_dl_tensor, ndim, DLTensor, ndim);
SAME_AT(rm_dl_tensor, dtype, DLTensor, dtype);
SAME_AT(rm_dl_tensor, shape, DLTensor, shape);
SAME_AT(rm_dl_tensor, strides, DLTensor, strides);
SAME_AT(rm_dl_tensor, byte_offset, DLTensor, byte_offset);

SAME(rm_dl_managed_tensor, DLManagedTensor);
SAME_AT(rm_dl_managed_tensor, dl_tensor, DLManagedTensor, dl_tensor);
SAME_AT(rm_dl_managed_tensor, manager_ctx, DLManagedTensor, manager_ctx);
SAME_AT(rm_dl_managed_tensor, deleter, DLManagedTensor, deleter);

/* DLPack 1.0: {DLPackVersion version; void *manager_ctx; deleter;
 * uint64_t flags; DLTensor dl_tensor;}, DLPackVersion = {u32 major, minor}. */
_Static_assert(offsetof(rm_dl_managed_tensor_versioned, version) == 0 &&
                   offsetof(rm_dl_managed_tensor_versioned, manager_ctx) == 8 &&
                   offsetof(rm_dl_managed_tensor_versioned, deleter) == 16 &&
                   offsetof(rm_dl_managed_tensor_versioned, flags) == 24 &&
                   offsetof(rm_dl_managed_tensor_versioned, dl_tensor) == 32 &&
                   sizeof(rm_dl_managed_tensor_versioned) == 32 + sizeof(DLTensor),
               "DLManagedTensorVersioned layout");
_Static_assert(kDLCPU == 1, "device type of CPU tensors");

int main(void)
{
    return 0;
}
