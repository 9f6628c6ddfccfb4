"""The model registry from Python: get_or_load and ModelHandle.

The loader is any callable. It is called with no argument if it takes
none (`get_or_load(key, lambda: load_model())`, as in the product this
plugin replaces), else with a LoadRequest:

 - Process scope: the loader returns the model, any Python object. The
   registry keeps it alive while it is loaded and drops it when the model
   is evicted (TTL, LRU, evict(), the context's close). Wrap it in
   Loaded(model, nbytes) to count its size against registry.max_bytes.
 - Node scope (registry.scope = node): the model is bytes that every
   process of the machine shares. The loader calls request.alloc(nbytes),
   fills the writable buffer it gets (a memoryview; .numpy() gives a
   numpy view) and returns. The plugin seals the buffer read-only when the
   loader returns; every process then gets the same physical pages,
   read-only, through ModelHandle.numpy() / .torch() / .buffer.
   A loader that uses alloc() works in process scope too.
 - Weights in device memory (ABI 1.4, keys "name@cuda:N", both scopes):
   the loader calls request.alloc_device(nbytes) and fills the device
   buffer it gets (a DeviceBuffer: device_pointer, stream) with its own
   CUDA copies; in node scope one copy per GPU serves every process.
   ModelHandle.device_pointer, .torch() and DLPack (np/torch.from_dlpack
   of the handle) reach it; .numpy() and .model are host-only.

A loader that raises fails the load: get_or_load raises LoaderFailedError
with the loader's exception as its __cause__ (an RmError the loader raises
passes its own code), and the next get_or_load runs a loader again.
"""

import ctypes
import inspect
import itertools
import threading

from . import _abi, _dlpack, dtypes
from .errors import RmError, error_for

_CODES = _abi.CODES

# Process-scope models by token: the loader's Python object is kept here
# while the plugin has it loaded; `model` in the plugin is the token.
_models = {}
_models_lock = threading.Lock()
_tokens = itertools.count(1)

# Loads in progress by token (loader_user): the loader and what it left.
_loads = {}


class Loaded:
    """What a process-scope loader may return to say the model's size.

    Args:
        model: the model object.
        nbytes: its size, counted against registry.max_bytes.
    """

    def __init__(self, model, nbytes=0):
        self.model = model
        self.nbytes = int(nbytes)


class LoadRequest:
    """What a loader that takes an argument is given.

    Attributes:
        key: the normalised model key ("whisper-tiny@cpu").
        scope: "process" or "node".
    """

    def __init__(self, key, scope, loaded, abi_version=(1, 2)):
        self.key = key
        self.scope = scope
        self._loaded = loaded
        self._abi_version = abi_version
        self._buffer = None

    def alloc(self, nbytes):
        """A zero-filled writable buffer of `nbytes` for the model (at most
        once). Writable only until the loader returns: then it is sealed,
        and a write faults."""
        if self._buffer is not None:
            raise ValueError("alloc() may be called once per load")
        loaded = self._loaded
        if not _abi.loaded_model_has(loaded, "alloc_buffer"):
            raise error_for(_CODES["FEATURE_UNAVAILABLE"],
                            "this plugin has no loader buffers (ABI 1.2)")
        out = ctypes.c_void_p()
        status = loaded.alloc_buffer(ctypes.pointer(loaded), int(nbytes), ctypes.byref(out))
        if status != 0:
            raise error_for(status, "alloc_buffer(%d) failed" % nbytes)
        self._buffer = ModelBuffer(out.value, int(nbytes))
        return self._buffer

    def alloc_device(self, nbytes):
        """A zero-filled device buffer of `nbytes` on the key's GPU (keys
        "name@cuda:N", ABI 1.4), instead of alloc() (one buffer per load).
        The loader fills it in device N's primary context (the one the CUDA
        runtime and torch use), on DeviceBuffer.stream or any stream of
        that context, before it returns; the plugin then waits for the
        device, seals the buffer (node scope) and hands it to every caller.

        Raises FeatureUnavailableError when the plugin (or the negotiated
        version) is older than 1.4; the plugin's errors otherwise
        (InvalidArgumentError for a key that is not "cuda:N",
        DeviceUnavailableError without a usable driver or device, ...)."""
        if self._buffer is not None:
            raise ValueError("alloc_device() may be called once per load (and not after alloc())")
        loaded = self._loaded
        if tuple(self._abi_version) < (1, 4) or not _abi.loaded_model_has(
                loaded, "alloc_device_buffer"):
            raise error_for(_CODES["FEATURE_UNAVAILABLE"],
                            "%s: this plugin has no device buffers (ABI 1.4)" % self.key)
        pointer, stream = ctypes.c_uint64(), ctypes.c_void_p()
        status = loaded.alloc_device_buffer(ctypes.pointer(loaded), int(nbytes),
                                            ctypes.byref(pointer), ctypes.byref(stream))
        if status != 0:
            raise error_for(status, "%s: alloc_device_buffer(%d) failed" % (self.key, nbytes))
        self._buffer = DeviceBuffer(pointer.value, int(nbytes), stream.value)
        return self._buffer

    def _seal(self):
        if self._buffer is not None:
            self._buffer._release()


class ModelBuffer:
    """The writable buffer a node-scope loader fills (see LoadRequest.alloc).

    Attributes:
        memoryview: a writable memoryview of bytes ('B').
        nbytes: its size.
    """

    def __init__(self, address, nbytes):
        self.address = address
        self.nbytes = nbytes
        self.memoryview = memoryview((ctypes.c_uint8 * nbytes).from_address(address)).cast("B")

    def numpy(self, dtype="uint8", shape=None):
        """A writable numpy view of the buffer (valid while the loader runs)."""
        import numpy
        array = numpy.frombuffer(self.memoryview, dtype=dtypes.to_name(dtype))
        return array if shape is None else array.reshape(shape)

    def __len__(self):
        return self.nbytes

    def _release(self):
        try:
            self.memoryview.release()
        except (BufferError, ValueError):
            pass  # a numpy view still exports it; the seal makes writes fault


class DeviceBuffer:
    """The device buffer a loader fills (see LoadRequest.alloc_device).

    Attributes:
        device_pointer: its address (a CUdeviceptr, as an int).
        nbytes: its size.
        stream: a CUstream (an int, or None) the plugin made for this load;
            it is destroyed after the loader returns.
    """

    def __init__(self, device_pointer, nbytes, stream):
        self.device_pointer = device_pointer
        self.nbytes = nbytes
        self.stream = stream

    def __len__(self):
        return self.nbytes

    def _release(self):
        pass  # nothing of the host's to let go of

    def __repr__(self):
        return "<rm_plugin.DeviceBuffer 0x%x, %d bytes>" % (self.device_pointer, self.nbytes)


def _takes_request(loader):
    # A zero-argument loader (`lambda: load()`) is the old API's; anything
    # that accepts a positional argument gets the LoadRequest.
    try:
        signature = inspect.signature(loader)
    except (TypeError, ValueError):
        return True
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD,
                              parameter.VAR_POSITIONAL):
            return True
    return False


def _on_destroy(model, user):
    with _models_lock:
        _models.pop(model or 0, None)


_destroy = _abi.DESTROY_FN(_on_destroy)


def _on_load(user, key, out):
    state = _loads.get(user or 0)
    if state is None:
        return _CODES["LOADER_FAILED"]
    loader, scope = state["loader"], state["scope"]
    loaded = out.contents
    request = LoadRequest(key.decode(), scope, loaded, state["abi_version"])
    try:
        result = loader(request) if _takes_request(loader) else loader()
        if request._buffer is not None:
            return 0  # the buffer is the model; what it returned is ignored
        if scope == "node":
            return _CODES["NOT_SHAREABLE"] if result is not None else _CODES["LOADER_FAILED"]
        if isinstance(result, Loaded):
            model, nbytes = result.model, result.nbytes
        else:
            model, nbytes = result, 0
        token = next(_tokens)
        with _models_lock:
            _models[token] = model
        loaded.model = token
        loaded.bytes = nbytes
        loaded.destroy = _destroy
        return 0
    except RmError as exc:
        state["error"] = exc
        return exc.code if exc.code < 0 else _CODES["LOADER_FAILED"]
    except BaseException as exc:  # nothing may propagate out of a C callback
        state["error"] = exc
        return _CODES["LOADER_FAILED"]
    finally:
        request._seal()


_loader_callback = _abi.LOADER_FN(_on_load)


def _refuse_load(request):
    # Used to take a further reference on a model this process already
    # holds: the get is a hit, so this never runs unless something evicted
    # a held model, which the registry does not do.
    raise error_for(_CODES["NOT_FOUND"], "%s is no longer loaded" % request.key)


def _scope(context):
    return getattr(context, "_scope_cache", None) or _cache_scope(context)


def _cache_scope(context):
    context._scope_cache = context.config_get("registry.scope")
    return context._scope_cache


def _acquire(context, key, loader):
    """model_get_or_load; returns (native handle, model pointer)."""
    scope = _scope(context)
    token = next(_tokens)
    state = {"loader": loader, "scope": scope, "error": None,
             "abi_version": context.plugin.abi_version}
    _loads[token] = state
    handle, model = ctypes.c_void_p(), ctypes.c_void_p()
    try:
        status = context._vt.model_get_or_load(context._native(), key.encode(),
                                               _loader_callback, token,
                                               ctypes.byref(handle), ctypes.byref(model))
    finally:
        _loads.pop(token, None)
    if status != 0:
        error = error_for(status, context._message(context._ptr),
                          context.plugin.error_name(status))
        cause = state["error"]
        if cause is not None and cause is not error:
            raise error from cause
        raise error
    return handle.value, model.value


def get_or_load(context, key, loader):
    """Context.get_or_load(): a ModelHandle for `key`."""
    handle, model = _acquire(context, key, loader)
    return ModelHandle(context, key, handle, model)


class ModelHandle:
    """One reference on a loaded model.

    Released by close(), by leaving a `with`, or by garbage collection; the
    model itself stays loaded (idle) until the registry evicts it.

    A handle is a DLPack producer (np.from_dlpack(handle),
    torch.from_dlpack(handle)): the model's bytes as 1-D uint8, read-only,
    on the host or (ABI 1.4) on its GPU; dlpack() describes them with
    another dtype or shape.

    Attributes:
        key: the normalised key.
        model: process scope: the object the loader returned; a model
            loaded into a buffer (node scope): a read-only memoryview.
    """

    def __init__(self, context, key, native, model_pointer):
        self._context = context
        self._ptr = native
        self._lock = threading.Lock()
        self.address = model_pointer
        with _models_lock:
            self._object = _models.get(model_pointer, _models)
        self._is_buffer = self._object is _models
        if self._is_buffer:
            self._object = None
        self.key = context.normalize_key(key)
        self._layout = None
        context._track(self)

    @property
    def is_buffer(self):
        """True when the model is bytes in a sealed buffer (node scope, or a
        loader that used alloc or alloc_device)."""
        return self._is_buffer

    def _describe(self):
        """(nbytes, (DLPack device type, id)), found once: from the
        registry's row for the key, else (a node-scope device model, whose
        row names the GPU by UUID) from a model_to_dlpack view."""
        if self._layout is not None:
            return self._layout
        layout = None
        for row in self._context.models():
            if row.key == self.key:
                device = ((_abi.DL_CUDA, row.device_ordinal) if row.memory == _abi.MEMORY_CUDA
                          else (_abi.DL_CPU, 0))
                layout = (row.bytes, device)
                break
        if layout is None and self._is_buffer and self._ptr is not None \
                and self._context.plugin.has("model_to_dlpack"):
            inner, managed = self._model_view()
            t = managed.dl_tensor
            layout = (t.shape[0], (t.device.device_type, t.device.device_id))
            managed.deleter(inner)
        self._layout = layout or (0, (_abi.DL_CPU, 0))
        return self._layout

    @property
    def nbytes(self):
        """The model's size in bytes (the buffer's size for buffers)."""
        return self._describe()[0]

    @property
    def device(self):
        """Where the model is, as DLPack's (device type, id): (1, 0) for
        host memory, (2, ordinal) for weights in device memory (1.4)."""
        return self._describe()[1]

    @property
    def device_pointer(self):
        """The weights' device address (an int; ABI 1.4 device buffers),
        valid while this handle is open; None for a model in host memory."""
        self._native()
        return self.address if self.device[0] == _abi.DL_CUDA else None

    def _require_host(self, what):
        if self.device[0] == _abi.DL_CUDA:
            raise TypeError("%s is in device memory: %s is host-only (use torch(), "
                            "DLPack or device_pointer)" % (self.key, what))

    @property
    def model(self):
        """The model: the loader's object, or a read-only memoryview of the
        buffer (valid while this handle is open)."""
        self._native()
        if not self._is_buffer:
            return self._object
        self._require_host("model")
        view = memoryview((ctypes.c_uint8 * self.nbytes).from_address(self.address))
        return view.cast("B").toreadonly()

    @property
    def closed(self):
        """True once released."""
        return self._ptr is None

    def _native(self):
        if self._ptr is None:
            raise ValueError("the model handle is closed")
        return self._context._native()

    def _model_view(self):
        """model_to_dlpack() (1.4): (pointer, managed tensor), holding a
        reference of its own until its deleter runs."""
        context = self._native()
        self._context._need("model_to_dlpack")
        inner = ctypes.POINTER(_abi.DLManagedTensorVersioned)()
        self._context._check(self._context._vt.model_to_dlpack(context, self._ptr,
                                                               ctypes.byref(inner)))
        return inner, inner.contents

    def _export(self, dtype, shape, offset, versioned):
        self._native()
        if not self._is_buffer:
            raise TypeError("%s is a Python object, not a buffer" % self.key)
        context = self._context
        # The export holds a reference of its own, so an array outlives
        # this handle's close() (a model's mapping ends with the context's
        # last handle on it): model_to_dlpack's (1.4), or else a second get
        # of the key.
        if context.plugin.has("model_to_dlpack"):
            inner, managed = self._model_view()
            t = managed.dl_tensor
            data, nbytes = (t.data or 0) + t.byte_offset, t.shape[0]
            device = (t.device.device_type, t.device.device_id)

            def release_reference():
                if context._ptr is not None:
                    managed.deleter(inner)
        else:
            native, _ = _acquire(context, self.key, _refuse_load)
            data, nbytes, device = self.address, self.nbytes, (_abi.DL_CPU, 0)

            def release_reference():
                if context._ptr is not None:
                    context._vt.model_release(context._ptr, native)

        try:
            name = dtypes.to_name(dtype)
            item = dtypes.itemsize(name)
            available = (nbytes - offset) // item
            if shape is None:
                shape = (available,)
            shape = tuple(int(size) for size in shape)
            count = 1
            for size in shape:
                count *= size
            if offset < 0 or count > available:
                raise ValueError("%r of %s at offset %d does not fit %d bytes" % (
                    shape, name, offset, nbytes))
            strides, step = [], 1
            for size in reversed(shape):
                strides.insert(0, step)
                step *= size
            return _dlpack.Export(context, data + offset, shape, strides,
                                  dtypes.to_abi(name), device, True, versioned,
                                  release_reference)
        except BaseException:
            release_reference()
            raise

    def dlpack(self, dtype="uint8", shape=None, offset=0):
        """A DLPack producer (__dlpack__, __dlpack_device__) of the weights
        as `dtype` and `shape` (None: 1-D over the rest of the buffer) from
        `offset` bytes on, read-only, on the model's device: for
        np.from_dlpack (host models) or torch.from_dlpack (either)."""
        return _DLPackHolder(self, dtype, shape, offset)

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        """The whole model as 1-D uint8 (see dlpack()). The plugin waited
        for the loader's device work, so no stream needs to wait."""
        return self.dlpack().__dlpack__(stream, max_version, dl_device, copy)

    def numpy(self, dtype="uint8", shape=None, offset=0):
        """A read-only numpy array over the shared weights (no copy). Host
        models only.

        Args:
            dtype: element type; shape: None for 1-D over the rest of the
            buffer; offset: in bytes from the start of the buffer.
        """
        import numpy
        self._require_host("numpy()")
        array = numpy.from_dlpack(self.dlpack(dtype, shape, offset))
        array.flags.writeable = False
        return array.view()  # a view of a read-only base stays read-only

    def torch(self, dtype="uint8", shape=None, offset=0):
        """A torch.Tensor over the shared weights through DLPack (no copy;
        read-only memory: a write faults), on the host or the model's GPU.
        torch is optional."""
        import torch.utils.dlpack
        return torch.utils.dlpack.from_dlpack(self.dlpack(dtype, shape, offset).__dlpack__())

    def _drop(self, release):
        with self._lock:
            native, self._ptr = self._ptr, None
        self._object = None
        if native is not None and release:
            self._context._vt.model_release(self._context._ptr, native)

    def close(self):
        """model_release(): gives the reference back. Idempotent."""
        context = self._context
        if self._ptr is None:
            return
        context._untrack(self)
        self._drop(release=context._usable() and not context._closing)

    release = close

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
        state = "closed" if self._ptr is None else ("buffer" if self._is_buffer else "object")
        return "<rm_plugin.ModelHandle %s %s>" % (self.key, state)


class _DLPackHolder:
    """The __dlpack__ object np.from_dlpack needs for a model buffer."""

    def __init__(self, handle, dtype, shape, offset):
        self._args = (handle, dtype, shape, offset)

    def __dlpack_device__(self):
        return self._args[0].device

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        if copy:
            raise BufferError("model weights are shared without copies (copy=True)")
        handle, dtype, shape, offset = self._args
        if dl_device is not None and tuple(dl_device) != handle.device:
            raise BufferError("the model is on %r, not %r" % (handle.device, tuple(dl_device)))
        return handle._export(dtype, shape, offset, _dlpack.wants_versioned(max_version)).capsule()
