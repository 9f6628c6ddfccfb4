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

    def __init__(self, key, scope, loaded):
        self.key = key
        self.scope = scope
        self._loaded = loaded
        self._buffer = None

    def alloc(self, nbytes):
        """A zero-filled writable buffer of `nbytes` for the model (at most
        once). Writable only until the loader returns: then it is sealed,
        and a write faults."""
        if self._buffer is not None:
            raise ValueError("alloc() may be called once per load")
        loaded = self._loaded
        if not (loaded.struct_size >= ctypes.sizeof(_abi.LoadedModel) and loaded.alloc_buffer):
            raise error_for(_CODES["FEATURE_UNAVAILABLE"],
                            "this plugin has no loader buffers (ABI 1.2)")
        out = ctypes.c_void_p()
        status = loaded.alloc_buffer(ctypes.pointer(loaded), int(nbytes), ctypes.byref(out))
        if status != 0:
            raise error_for(status, "alloc_buffer(%d) failed" % nbytes)
        self._buffer = ModelBuffer(out.value, int(nbytes))
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
    request = LoadRequest(key.decode(), scope, loaded)
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
    state = {"loader": loader, "scope": scope, "error": None}
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
        self._nbytes = None
        context._track(self)

    @property
    def is_buffer(self):
        """True when the model is bytes in a sealed buffer (node scope, or a
        loader that used alloc)."""
        return self._is_buffer

    @property
    def nbytes(self):
        """The model's size in bytes (the buffer's size for buffers)."""
        if self._nbytes is None:
            self._nbytes = 0
            for row in self._context.models():
                if row.key == self.key:
                    self._nbytes = row.bytes
                    break
        return self._nbytes

    @property
    def model(self):
        """The model: the loader's object, or a read-only memoryview of the
        buffer (valid while this handle is open)."""
        self._native()
        if not self._is_buffer:
            return self._object
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

    def _export(self, dtype, shape, offset, versioned):
        self._native()
        if not self._is_buffer:
            raise TypeError("%s is a Python object, not a buffer" % self.key)
        name = dtypes.to_name(dtype)
        item = dtypes.itemsize(name)
        available = (self.nbytes - offset) // item
        if shape is None:
            shape = (available,)
        shape = tuple(int(size) for size in shape)
        count = 1
        for size in shape:
            count *= size
        if offset < 0 or count > available:
            raise ValueError("%r of %s at offset %d does not fit %d bytes" % (
                shape, name, offset, self.nbytes))
        strides, step = [], 1
        for size in reversed(shape):
            strides.insert(0, step)
            step *= size
        # The export holds a reference of its own, so an array outlives
        # this handle's close() (a model's mapping ends with the context's
        # last handle on it).
        context = self._context
        native, _ = _acquire(context, self.key, _refuse_load)

        def release_reference():
            if context._ptr is not None:
                context._vt.model_release(context._ptr, native)

        try:
            return _dlpack.Export(context, self.address + offset, shape, strides,
                                  dtypes.to_abi(name), (_abi.DL_CPU, 0), True, versioned,
                                  release_reference)
        except BaseException:
            release_reference()
            raise

    def numpy(self, dtype="uint8", shape=None, offset=0):
        """A read-only numpy array over the shared weights (no copy).

        Args:
            dtype: element type; shape: None for 1-D over the rest of the
            buffer; offset: in bytes from the start of the buffer.
        """
        import numpy
        holder = _DLPackHolder(self, dtype, shape, offset)
        array = numpy.from_dlpack(holder)
        array.flags.writeable = False
        return array.view()  # a view of a read-only base stays read-only

    def torch(self, dtype="uint8", shape=None, offset=0):
        """A torch.Tensor over the shared weights through DLPack (no copy;
        read-only memory: a write faults). torch is optional."""
        import torch.utils.dlpack
        return torch.utils.dlpack.from_dlpack(
            _DLPackHolder(self, dtype, shape, offset).__dlpack__())

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
        return (_abi.DL_CPU, 0)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        if copy:
            raise BufferError("model weights are shared without copies (copy=True)")
        handle, dtype, shape, offset = self._args
        return handle._export(dtype, shape, offset, _dlpack.wants_versioned(max_version)).capsule()
