"""DLPack capsules made with ctypes, and the one deleter they share.

numpy (np.from_dlpack) and torch (torch.from_dlpack) take an object with
__dlpack__ and __dlpack_device__; __dlpack__ returns a PyCapsule named
"dltensor" (or, for consumers that ask for DLPack 1.0 with max_version,
"dltensor_versioned") holding a managed tensor. The rules of the capsule:

 - A consumer that takes the tensor renames the capsule "used_dltensor"
   ("used_dltensor_versioned") and calls the managed tensor's deleter
   itself, once, when it is done with the memory.
 - A capsule nobody consumed calls the deleter from its destructor.

Every export here is a managed tensor of our own (an `Export`), whose
deleter is `_deleter` below: it runs the export's `on_delete` exactly once
(for a plugin tensor: the plugin's own deleter; for model weights: the
release of the model reference the export holds) and then tells the
context, which cannot be destroyed while exports are outstanding
(tensor_to_dlpack's contract: every deleter runs before context_destroy).
numpy 1.24 and torch 1.13 know only the unversioned capsule, which is
what they get when they do not pass max_version.
"""

import ctypes
import threading

from . import _abi

_NAME = b"dltensor"
_USED = b"used_dltensor"
_NAME_VERSIONED = b"dltensor_versioned"

_py_capsule_new = ctypes.pythonapi.PyCapsule_New
_py_capsule_new.restype = ctypes.py_object
_py_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
# The destructor runs while the capsule is being freed (reference count 0),
# so it looks at the capsule through a plain pointer, never a py_object.
_py_capsule_is_valid = ctypes.pythonapi.PyCapsule_IsValid
_py_capsule_is_valid.restype = ctypes.c_int
_py_capsule_is_valid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_py_capsule_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_py_capsule_get_pointer.restype = ctypes.c_void_p
_py_capsule_get_pointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

_CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

# Live exports by the address of their managed tensor: the structs must
# stay allocated until the consumer's deleter call, whenever that is.
_exports = {}
_exports_lock = threading.Lock()


class Export:
    """One managed tensor handed to a DLPack consumer.

    Args:
        context: the Context whose destruction must wait for this export.
        data, shape, strides, dtype, device: the DLTensor (strides in
            elements; device as (type, id)).
        read_only: set the DLPack 1.0 read-only flag (versioned only).
        versioned: make a DLManagedTensorVersioned.
        on_delete: called once, with no argument, by the deleter.
    """

    __slots__ = ("context", "managed", "shape", "strides", "on_delete", "versioned", "address")

    def __init__(self, context, data, shape, strides, dtype, device, read_only,
                 versioned, on_delete):
        ndim = len(shape)
        self.context = context
        self.on_delete = on_delete
        self.versioned = versioned
        self.shape = (ctypes.c_int64 * max(ndim, 1))(*shape)
        self.strides = (ctypes.c_int64 * max(ndim, 1))(*strides)
        if versioned:
            managed = _abi.DLManagedTensorVersioned()
            managed.version.major, managed.version.minor = 1, 0
            managed.flags = _abi.DLPACK_FLAG_READ_ONLY if read_only else 0
            managed.deleter = _versioned_deleter
        else:
            managed = _abi.DLManagedTensor()
            managed.deleter = _deleter
        tensor = managed.dl_tensor
        tensor.data = data
        tensor.device.device_type, tensor.device.device_id = device
        tensor.ndim = ndim
        tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes = dtype
        tensor.shape = ctypes.cast(self.shape, ctypes.POINTER(ctypes.c_int64))
        tensor.strides = ctypes.cast(self.strides, ctypes.POINTER(ctypes.c_int64))
        tensor.byte_offset = 0
        self.managed = managed
        self.address = ctypes.addressof(managed)
        context._export_started()
        with _exports_lock:
            _exports[self.address] = self

    def numpy_writable(self, dtype_name):
        """A writable numpy array over the export, kept alive by the array.

        numpy 1.x's from_dlpack marks every array read-only (the unversioned
        capsule cannot say whether writing is allowed), so a writable tensor
        reaches numpy through the array interface instead: the array's base
        is a guard whose collection runs the deleter. Still no copy."""
        import numpy
        tensor = self.managed.dl_tensor
        dtype = numpy.dtype(dtype_name)
        ndim = tensor.ndim
        guard = _Guard(self.address)
        guard.__array_interface__ = {
            "version": 3, "data": (tensor.data or 0, False), "typestr": dtype.str,
            "shape": tuple(self.shape[:ndim]),
            "strides": tuple(stride * dtype.itemsize for stride in self.strides[:ndim]),
        }
        return numpy.asarray(guard)

    def capsule(self):
        """The PyCapsule for __dlpack__."""
        name = _NAME_VERSIONED if self.versioned else _NAME
        return _py_capsule_new(self.address, name, _capsule_destructor_ptr)


def _finish(address):
    with _exports_lock:
        export = _exports.pop(address, None)
    if export is None:
        return  # a second call; the first one did the work
    try:
        export.on_delete()
    finally:
        export.context._export_finished()


class _Guard:
    """Runs an export's deleter when the object holding it is collected."""

    __slots__ = ("address", "__array_interface__")

    def __init__(self, address):
        self.address = address

    def __del__(self):
        try:
            _finish(self.address)
        except Exception:
            pass


def _on_deleter(managed_pointer):
    try:
        _finish(ctypes.cast(managed_pointer, ctypes.c_void_p).value)
    except Exception:  # nothing can propagate out of a C callback
        pass


def _on_capsule_freed(capsule):
    try:
        for name in (_NAME, _NAME_VERSIONED):
            # Still under its first name: nobody consumed it, so the
            # deleter is ours to call. Renamed ("used_..."): the consumer
            # calls it.
            if _py_capsule_is_valid(capsule, name):
                _finish(_py_capsule_get_pointer(capsule, name))
                return
    except Exception:
        pass


_deleter = _abi.DL_DELETER_FN(_on_deleter)
_versioned_deleter = _abi.DL_VERSIONED_DELETER_FN(_on_deleter)
_capsule_destructor = _CAPSULE_DESTRUCTOR(_on_capsule_freed)
_capsule_destructor_ptr = ctypes.cast(_capsule_destructor, ctypes.c_void_p).value


def outstanding():
    """How many exports still wait for their deleter (for tests)."""
    with _exports_lock:
        return len(_exports)


def wants_versioned(max_version):
    """Whether a consumer's max_version asks for a DLPack 1.0 capsule."""
    return max_version is not None and tuple(max_version)[0] >= 1
