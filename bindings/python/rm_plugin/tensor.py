"""Tensors: shared-memory (and, from ABI 1.3, CUDA device) tensors that
numpy and torch take through DLPack without a copy, and their descriptors."""

import ctypes
import threading

from . import _abi, _dlpack, dtypes
from .errors import error_for

_CODES = _abi.CODES


def _spec(shape, dtype, session, device, strides, alignment, flags):
    shape = tuple(int(size) for size in shape)
    if len(shape) > _abi.TENSOR_MAX_DIMS:
        raise ValueError("at most %d dimensions, not %d" % (_abi.TENSOR_MAX_DIMS, len(shape)))
    spec = _abi.struct_init(_abi.TensorSpec)
    spec.dtype.code, spec.dtype.bits, spec.dtype.lanes = dtypes.to_abi(dtype)
    spec.ndim = len(shape)
    for index, size in enumerate(shape):
        spec.shape[index] = size
    if strides is not None:
        if len(strides) != len(shape):
            raise ValueError("strides %r do not match shape %r" % (strides, shape))
        for index, stride in enumerate(strides):
            spec.strides[index] = int(stride)
        flags |= _abi.TENSOR_ALLOC_STRIDED
    spec.alignment = alignment
    spec.session = session
    spec.flags = flags
    spec.device = (device or "cpu").encode()
    return spec


def allocate(context, shape, dtype, session, device, zero, shared_only, strides, alignment):
    """Context.allocate()."""
    flags = ((_abi.TENSOR_ALLOC_ZERO if zero else 0)
             | (_abi.TENSOR_ALLOC_SHARED_ONLY if shared_only else 0))
    spec = _spec(shape, dtype, session, device, strides, alignment, flags)
    out = ctypes.c_void_p()
    context._check(context._vt.tensor_allocate(context._native(), ctypes.byref(spec),
                                               ctypes.byref(out)))
    return Tensor(context, out.value)


def import_tensor(context, descriptor, writable):
    """Context.import_tensor()."""
    flags = _abi.TENSOR_IMPORT_WRITABLE if writable else 0
    out = ctypes.c_void_p()
    native = context._native()
    if isinstance(descriptor, str):
        status = context._vt.tensor_import_text(native, descriptor.encode(), flags,
                                                ctypes.byref(out))
    else:
        data = bytes(descriptor)
        status = context._vt.tensor_import(native, data, len(data), flags, ctypes.byref(out))
    context._check(status)
    return Tensor(context, out.value)


# tensor_wrap_device's released callbacks by token; one C callback serves all.
_wrapped = {}
_wrapped_lock = threading.Lock()
_next_token = [1]


def _on_device_released(user, pointer):
    with _wrapped_lock:
        entry = _wrapped.pop(user or 0, None)
    if entry is not None and entry[0] is not None:
        try:
            entry[0]()
        except Exception:
            pass  # nothing can propagate out of a C callback


_device_released = _abi.DEVICE_RELEASED_FN(_on_device_released)


def wrap_device(context, pointer, shape, dtype, device, strides, session, released, keep):
    """Context.wrap_device()."""
    context._need("tensor_wrap_device")
    spec = _spec(shape, dtype, session, device, strides, 0, 0)
    with _wrapped_lock:
        token = _next_token[0]
        _next_token[0] += 1
        _wrapped[token] = (released, keep)
    out = ctypes.c_void_p()
    try:
        context._check(context._vt.tensor_wrap_device(
            context._native(), ctypes.byref(spec), pointer, _device_released, token,
            ctypes.byref(out)))
    except BaseException:
        with _wrapped_lock:
            _wrapped.pop(token, None)
        raise
    return Tensor(context, out.value)


def from_torch(context, tensor, session=0):
    """A shareable Tensor over a CUDA torch tensor's memory, without a copy
    (tensor_wrap_device). The torch tensor is kept alive until no process
    holds the memory any more."""
    if not tensor.is_cuda:
        raise ValueError("from_torch takes a CUDA tensor; allocate() and copy for CPU")
    return wrap_device(context, tensor.data_ptr(), tuple(tensor.shape), tensor.dtype,
                       "cuda:%d" % tensor.device.index, tuple(tensor.stride()), session,
                       None, tensor)


class _ViewGuard:
    """The base of a numpy() array: its array interface, and the Tensor it
    keeps from being released until the array is collected."""

    __slots__ = ("tensor", "__array_interface__")

    def __init__(self, tensor, interface):
        self.tensor = tensor
        self.__array_interface__ = interface

    def __del__(self):
        try:
            self.tensor._view_gone()
        except Exception:  # nothing can propagate out of a finaliser
            pass


class Tensor:
    """A handle on a tensor held by one Context.

    Take the data with numpy (`np.from_dlpack(t)` or `t.numpy()`) or torch
    (`torch.from_dlpack(t)` or `t.torch()`): no copy, and the array keeps
    the memory alive on its own, so the handle may be closed before it.
    A read-only import gives a read-only numpy array (a write through
    torch, which has no read-only tensors, faults).

    Release follows Python's idioms: `with`, close(), or garbage
    collection as the last resort.
    """

    def __init__(self, context, native):
        self._context = context
        self._ptr = native
        self._lock = threading.Lock()
        # numpy views made by numpy(): while any lives, a release waits
        # (the native handle parks in _pending_native until the last goes).
        self._views = 0
        self._pending_native = None
        info = _abi.struct_init(_abi.TensorInfo)
        try:
            context._check(context._vt.tensor_info(context._ptr, native, ctypes.byref(info)))
        except BaseException:
            context._vt.tensor_release(context._ptr, native)
            raise
        self._info = info
        context._track(self)

    # ---- what it is -----------------------------------------------------

    @property
    def shape(self):
        """The shape, a tuple of ints."""
        return tuple(self._info.shape[:self._info.ndim])

    @property
    def strides(self):
        """The strides in elements (DLPack's convention, not numpy's bytes)."""
        return tuple(self._info.strides[:self._info.ndim])

    @property
    def dtype(self):
        """The element type's name ("float32")."""
        d = self._info.dtype
        return dtypes.from_abi(d.code, d.bits, d.lanes)

    @property
    def nbytes(self):
        """The bytes the shape and strides span."""
        return self._info.nbytes

    @property
    def data_ptr(self):
        """The first element's address (a device pointer for CUDA)."""
        return self._info.data or 0

    @property
    def session(self):
        """The session id charged for the tensor."""
        return self._info.session

    @property
    def device(self):
        """"cpu" or "cuda:N" (N: this process's ordinal)."""
        device = self._info.device
        return "cuda:%d" % device.device_id if device.device_type == _abi.DL_CUDA else "cpu"

    @property
    def writable(self):
        """Whether the data may be written (false for read-only imports)."""
        return bool(self._info.flags & _abi.TENSOR_WRITABLE)

    @property
    def shareable(self):
        """Whether it lives in a pool (export works); false for heap fallbacks."""
        return bool(self._info.flags & _abi.TENSOR_SHAREABLE)

    @property
    def imported(self):
        """Whether the handle came from import_tensor."""
        return bool(self._info.flags & _abi.TENSOR_IMPORTED)

    @property
    def owner_pid(self):
        """The allocating process."""
        return self._info.owner_pid

    @property
    def closed(self):
        """True once released."""
        return self._ptr is None

    def _native(self):
        if self._ptr is None:
            raise ValueError("the tensor is closed")
        return self._context._native(), self._ptr

    def _call(self, member, *args):
        context, tensor = self._native()
        self._context._check(getattr(self._context._vt, member)(context, tensor, *args))

    # ---- descriptors ------------------------------------------------------

    def export(self):
        """The 200-byte descriptor (bytes). It is a name, not a reference:
        keep this handle until the receiver has imported."""
        out = ctypes.create_string_buffer(_abi.TENSOR_DESCRIPTOR_SIZE)
        self._call("tensor_export", out, len(out))
        return out.raw

    def export_text(self):
        """The descriptor as printable text ("rmt1." + base64url)."""
        out = ctypes.create_string_buffer(_abi.TENSOR_DESCRIPTOR_TEXT_MAX)
        self._call("tensor_export_text", out, len(out))
        return out.value.decode()

    def export_inline(self):
        """The tensor by value: a descriptor followed by the data (bytes), for
        another machine or a file; works for heap tensors too."""
        context, tensor = self._native()
        needed = ctypes.c_uint64()
        status = self._context._vt.tensor_export_inline(context, tensor, None, 0,
                                                        ctypes.byref(needed))
        if status != _CODES["BUFFER_TOO_SMALL"]:
            self._context._check(status)
        out = ctypes.create_string_buffer(needed.value)
        self._call("tensor_export_inline", out, len(out), None)
        return out.raw

    # ---- DLPack -----------------------------------------------------------

    def __dlpack_device__(self):
        """(1, 0) for host memory, (2, ordinal) for CUDA."""
        device = self._info.device
        return (device.device_type or _abi.DL_CPU, device.device_id)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule of the data, without a copy.

        An unversioned "dltensor" capsule unless the consumer passes
        max_version >= (1, 0) (numpy 1.24 and torch 1.13 do not). For an
        imported CUDA tensor, `stream` (a CUstream as an int; None or 1 the
        legacy default stream, 2 the per-thread one, -1 none) is made to
        wait for the producer's recorded work (tensor_wait).
        """
        if copy:
            raise BufferError("rm_plugin tensors are shared without copies (copy=True)")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError("the tensor is on %r, not %r" % (
                self.__dlpack_device__(), tuple(dl_device)))
        if self._info.device.device_type == _abi.DL_CUDA and stream != -1:
            self.wait(stream=None if stream in (None, 1) else stream)
        return self._export(_dlpack.wants_versioned(max_version)).capsule()

    def _export(self, versioned):
        context, tensor = self._native()
        vt = self._context._vt
        owner = self._context
        if versioned:
            inner = ctypes.POINTER(_abi.DLManagedTensorVersioned)()
            self._context._check(vt.tensor_to_dlpack_versioned(context, tensor,
                                                               ctypes.byref(inner)))
        else:
            inner = ctypes.POINTER(_abi.DLManagedTensor)()
            self._context._check(vt.tensor_to_dlpack(context, tensor, ctypes.byref(inner)))
        managed = inner.contents

        def release_plugin_reference():
            # Skipped only when the context was destroyed at interpreter
            # exit with this export still alive (the plugin's memory for it
            # went with the context).
            if owner._ptr is not None:
                managed.deleter(inner)

        t = managed.dl_tensor
        ndim = t.ndim
        read_only = bool(versioned and managed.flags & _abi.DLPACK_FLAG_READ_ONLY)
        try:
            return _dlpack.Export(
                owner, t.data, t.shape[:ndim], t.strides[:ndim],
                (t.dtype.code, t.dtype.bits, t.dtype.lanes),
                (t.device.device_type, t.device.device_id), read_only, versioned,
                release_plugin_reference)
        except BaseException:
            release_plugin_reference()
            raise

    def numpy(self):
        """A numpy array over the data, without a copy: writable when the
        handle is, read-only (and not settable back) for read-only imports.
        It stays valid after close(). Host tensors only.

        Made from the handle's own description through numpy's array
        interface, not through a DLPack export: the export's malloc, its
        ctypes mirror and the capsule cost ~8 us of a ~12 us numpy() call.
        The array's base holds this Tensor, whose release waits for the
        last such array (see _drop)."""
        if self._info.device.device_type == _abi.DL_CUDA:
            raise TypeError("a CUDA tensor has no numpy view; use torch()")
        import numpy
        with self._lock:
            if self._ptr is None:
                raise ValueError("the tensor is closed")
            self._views += 1
        self._context._export_started()
        try:
            info = self._info
            dtype = numpy.dtype(self.dtype)
            ndim = info.ndim
            writable = bool(info.flags & _abi.TENSOR_WRITABLE)
            guard = _ViewGuard(self, {
                "version": 3,
                "data": (info.data or 0, not writable),
                "typestr": dtype.str,
                "shape": tuple(info.shape[:ndim]),
                "strides": tuple(stride * dtype.itemsize for stride in info.strides[:ndim]),
            })
        except BaseException:
            self._view_gone()
            raise
        array = numpy.asarray(guard)
        if writable:
            return array
        # A view whose base is read-only cannot be made writable again.
        array.flags.writeable = False
        return array.view()

    def _view_gone(self):
        """A numpy() array was collected: the last one ends a release that
        close() had to park."""
        with self._lock:
            self._views -= 1
            native = None
            if self._views == 0:
                native, self._pending_native = self._pending_native, None
        context = self._context
        if native is not None and context._usable():
            context._vt.tensor_release(context._ptr, native)
        context._export_finished()

    to_numpy = numpy  # the name of the product this plugin replaces

    def torch(self):
        """A torch.Tensor over the data (DLPack); torch is optional."""
        import torch.utils.dlpack
        return torch.utils.dlpack.from_dlpack(self)

    # ---- CUDA ordering (ABI 1.3) -----------------------------------------

    def record(self, stream=None):
        """tensor_record(): the producer's work on `stream` (a CUstream as
        an int; None: the legacy default stream) is what consumers wait for.
        Call before exporting. A host tensor needs none (no-op)."""
        self._context._need("tensor_record")
        self._call("tensor_record", stream)

    def wait(self, stream=None, host=False):
        """tensor_wait(): make `stream` wait for the producer's recorded
        work, or with host=True block this thread until it is done."""
        self._context._need("tensor_wait")
        self._call("tensor_wait", stream, _abi.TENSOR_WAIT_HOST if host else 0)

    # ---- release ------------------------------------------------------------

    def _drop(self, release):
        with self._lock:
            native, self._ptr = self._ptr, None
            if native is not None and release and self._views > 0:
                # numpy() arrays still read the data: the last one releases
                # (the context waits for them as for DLPack exports).
                self._pending_native, native = native, None
        if native is not None and release:
            self._context._vt.tensor_release(self._context._ptr, native)

    def close(self):
        """tensor_release(): ends the handle (arrays taken through DLPack
        keep the memory). Idempotent."""
        context = self._context
        if self._ptr is None:
            return
        context._untrack(self)
        self._drop(release=context._usable() and not context._closing)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        if self._ptr is None:
            return "<rm_plugin.Tensor closed>"
        kind = "imported" if self.imported else "owned"
        mode = "rw" if self.writable else "ro"
        return "<rm_plugin.Tensor %s %s %s on %s, %s>" % (self.dtype, self.shape, kind,
                                                         self.device, mode)
