"""Context: one configured instance of the plugin, and the owner of every
handle made through it."""

import atexit
import ctypes
import os
import threading
import weakref

from . import _abi, _plugin
from .errors import error_for


class _Record:
    """A plain row: the fields of an ABI struct as attributes, with repr."""

    def __init__(self, struct, skip=("struct_size", "abi_version", "reserved",
                                     "reserved0", "reserved1")):
        for name, _ in struct._fields_:
            if name in skip:
                continue
            value = getattr(struct, name)
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            setattr(self, name, value)

    def as_dict(self):
        """The fields as a dict."""
        return dict(vars(self))

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % item for item in vars(self).items()))


class ContextInfo(_Record):
    """context_info(): negotiated version, features built and enabled."""


class RegistryMetrics(_Record):
    """registry_metrics(): the registry's counters."""


class ModelInfo(_Record):
    """One row of registry_list().

    The 1.4 fields say where the model lives: memory is
    _abi.MODEL_MEMORY_HOST (0, private host memory), _abi.MEMORY_SHM (a
    sealed shared segment, node scope) or _abi.MEMORY_CUDA (a device
    buffer, whose device_ordinal, device_uuid (16 bytes) and device_bytes
    are set; otherwise -1, zero bytes and 0, as from a plugin older than
    1.4, which leaves memory 0)."""

    def __init__(self, struct):
        _Record.__init__(self, struct)
        self.device_uuid = bytes(struct.device_uuid)
        if struct.struct_size < _abi.ModelInfo.device_bytes.offset + 8:
            self.device_ordinal = -1  # the plugin wrote no 1.4 fields


class PoolStats(_Record):
    """tensor_pool_stats(): this context's pool and device counters."""


class ReclaimReport(_Record):
    """tensor_reclaim() or registry_reclaim(): what was dropped and unlinked."""


class PoolInfo(_Record):
    """One row of shm_list()."""


class CudaInfo:
    """cuda_info(): the driver and devices, or why device tensors are not
    available (status is then an error name, message says why)."""

    def __init__(self, struct, status_name):
        self.status = status_name
        self.ok = struct.status == 0
        self.driver_version = struct.driver_version
        self.library = struct.library.decode(errors="replace")
        self.message = struct.message.decode(errors="replace")
        self.devices = [
            {"ordinal": d.ordinal, "uuid": d.uuid_text.decode(errors="replace")}
            for d in struct.devices[:min(struct.device_count, _abi.CUDA_INFO_MAX_DEVICES)]]

    def __repr__(self):
        return "CudaInfo(status=%s, driver_version=%d, devices=%r, message=%r)" % (
            self.status, self.driver_version, self.devices, self.message)


_live_contexts = weakref.WeakSet()


@atexit.register
def _close_all_at_exit():
    # Destroying every context before the interpreter goes away stops the
    # plugin's background threads (which may call Python destroy callbacks)
    # and gives back every /dev/shm segment; exports still held at exit
    # cannot keep a context alive past this point.
    for context in list(_live_contexts):
        context._close(force=True)


def _encode(value):
    if isinstance(value, bool):
        value = "true" if value else "false"
    return str(value).encode()


class Context:
    """A plugin context: configuration, the model registry and tensors.

    Args:
        config: key/value pairs (a dict or a sequence of pairs), applied
            after the file; values are converted with str(). The keys are
            the header's (REF: config): "registry.scope", "shm.namespace",
            "cuda.driver", ...
        config_path: a `key = value` file; None uses $RM_PLUGIN_CONFIG.
        ignore_env: ignore $RM_PLUGIN_CONFIG.
        plugin_path: load this rm_plugin.so rather than discover one (only
            the first context of a process chooses; see rm_plugin.load).

    A context is a context manager; close() (or leaving the `with`)
    releases every tensor and model handle it still holds and destroys it.
    DLPack exports (numpy arrays, torch tensors) keep the memory they view
    alive: the native context is destroyed when the last of them goes.
    """

    def __init__(self, config=None, config_path=None, ignore_env=False, plugin_path=None):
        self.plugin = _plugin.load(plugin_path)
        self._vt = self.plugin.vt
        pairs = list(config.items() if hasattr(config, "items") else (config or ()))
        entries = (_abi.ConfigEntry * max(len(pairs), 1))()
        keep = []  # the encoded strings must outlive the call
        for index, (key, value) in enumerate(pairs):
            key_bytes, value_bytes = _encode(key), _encode(value)
            keep += [key_bytes, value_bytes]
            entries[index].key, entries[index].value = key_bytes, value_bytes
        options = _abi.struct_init(_abi.ContextOptions)
        options.entries = entries
        options.entry_count = len(pairs)
        options.config_path = os.fsencode(config_path) if config_path else None
        options.flags = _abi.CONTEXT_IGNORE_ENV if ignore_env else 0
        native = ctypes.c_void_p()
        status = self._vt.context_create(ctypes.byref(options), ctypes.byref(native))
        if status != 0:
            raise error_for(status, self._message(None))
        self._ptr = native.value
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._closing = False
        self._exports = 0
        self._handles = {}  # id -> weakref of Tensor / ModelHandle
        _live_contexts.add(self)

    # ---- plumbing -------------------------------------------------------

    def _message(self, native):
        return (self._vt.context_last_error(native) or b"").decode(errors="replace")

    def _check(self, status):
        """Raises the exception for a failed call made on this thread."""
        if status != 0:
            raise error_for(status, self._message(self._ptr),
                            self.plugin.error_name(status))

    def _native(self):
        """The native pointer, or ValueError once closed."""
        if self._closing:
            raise ValueError("the rm_plugin context is closed")
        return self._ptr

    def _usable(self):
        # A context inherited through fork() belongs to the parent: the
        # plugin refuses it (RM_E_FORKED), and handles must not be released
        # on the parent's behalf.
        return self._ptr is not None and os.getpid() == self._pid

    def _track(self, handle):
        with self._lock:
            self._handles[id(handle)] = weakref.ref(handle)

    def _untrack(self, handle):
        with self._lock:
            self._handles.pop(id(handle), None)

    def _export_started(self):
        with self._lock:
            self._exports += 1

    def _export_finished(self):
        with self._lock:
            self._exports -= 1
            destroy = self._closing and self._exports == 0
        if destroy:
            self._destroy()

    def _destroy(self):
        with self._lock:
            native, self._ptr = self._ptr, None
        if native is not None:
            _live_contexts.discard(self)
            self._vt.context_destroy(native)

    def _close(self, force=False):
        with self._lock:
            if self._ptr is None:
                return
            self._closing = True
            handles = [ref() for ref in self._handles.values()]
            self._handles.clear()
        for handle in handles:
            if handle is not None:
                handle._drop(release=self._usable())
        with self._lock:
            ready = self._exports == 0 or force
        if ready:
            self._destroy()

    # ---- lifetime -------------------------------------------------------

    def close(self):
        """Releases the context's handles and destroys it (once the last
        DLPack export of its tensors or models is gone). Idempotent."""
        self._close()

    @property
    def closed(self):
        """True once close() was called."""
        return self._closing

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._close()
        except Exception:
            pass

    # ---- context and configuration -------------------------------------

    def info(self):
        """context_info(): ContextInfo."""
        out = _abi.struct_init(_abi.ContextInfo)
        self._check(self._vt.context_info(self._native(), ctypes.byref(out)))
        return ContextInfo(out)

    def config_get(self, key):
        """The effective value of configuration `key`, as text."""
        needed = ctypes.c_uint64()
        native = self._native()
        status = self._vt.config_get(native, key.encode(), None, 0, ctypes.byref(needed))
        if status != _abi.CODES["BUFFER_TOO_SMALL"]:
            self._check(status)
        buffer = ctypes.create_string_buffer(needed.value)
        self._check(self._vt.config_get(native, key.encode(), buffer, len(buffer), None))
        return buffer.value.decode()

    def config_keys(self):
        """Every configuration key this plugin knows (config_key_at)."""
        keys, index = [], 0
        while True:
            key = self._vt.config_key_at(index)
            if key is None:
                return keys
            keys.append(key.decode())
            index += 1

    def _need(self, member):
        if not self.plugin.has(member):
            raise error_for(_abi.CODES["FEATURE_UNAVAILABLE"],
                            "this plugin (ABI %d.%d) has no %s" % (
                                self.plugin.abi_version + (member,)))

    # ---- model registry (registry.py does the work) --------------------

    def get_or_load(self, key, loader):
        """The model for `key` ("name@device"), loading it at most once per
        context (process scope) or per machine (node scope). Returns a
        ModelHandle; see rm_plugin.registry for the loader's contract."""
        from .registry import get_or_load
        return get_or_load(self, key, loader)

    def evict(self, key=None):
        """model_evict(): evicts `key` now if nothing holds it; None evicts
        every idle model. BusyError if in use, NotFoundError if absent."""
        self._check(self._vt.model_evict(self._native(), key.encode() if key else None))

    def metrics(self):
        """registry_metrics(): RegistryMetrics."""
        out = _abi.struct_init(_abi.RegistryMetrics)
        self._check(self._vt.registry_metrics(self._native(), ctypes.byref(out)))
        return RegistryMetrics(out)

    def models(self):
        """registry_list(): a list of ModelInfo, least recently used first."""
        native = self._native()
        capacity = 16
        while True:
            rows = (_abi.ModelInfo * capacity)()
            count = ctypes.c_uint32()
            status = self._vt.registry_list(native, rows, ctypes.sizeof(_abi.ModelInfo),
                                            capacity, ctypes.byref(count))
            if status == _abi.CODES["BUFFER_TOO_SMALL"]:
                capacity = count.value + 8  # models may be loaded meanwhile
                continue
            self._check(status)
            return [ModelInfo(row) for row in rows[:count.value]]

    def registry_reclaim(self):
        """registry_reclaim(): ReclaimReport."""
        self._need("registry_reclaim")
        out = _abi.struct_init(_abi.RegistryReclaimReport)
        self._check(self._vt.registry_reclaim(self._native(), ctypes.byref(out)))
        return ReclaimReport(out)

    def normalize_key(self, key):
        """model_key_normalize(): the key's normalised form."""
        out = ctypes.create_string_buffer(_abi.MODEL_KEY_MAX)
        status = self._vt.model_key_normalize(key.encode(), out, len(out))
        if status != 0:
            raise error_for(status, self._message(None), self.plugin.error_name(status))
        return out.value.decode()

    # ---- tensors (tensor.py does the work) -----------------------------

    def allocate(self, shape, dtype="float32", session=0, device="cpu", zero=False,
                 shared_only=False, strides=None, alignment=0):
        """tensor_allocate(): a new writable Tensor.

        Args:
            shape: a sequence of at most 8 sizes (() for a scalar).
            dtype: a name ("float32"), numpy dtype or torch dtype.
            session: the id charged for shm.session_quota.
            device: "cpu" (shared memory) or "cuda:N" (device memory, ABI 1.3).
            zero: zero the data.
            shared_only: fail (NoMemoryError) rather than fall back to a
                private heap tensor when /dev/shm is full.
            strides: in elements; None for C-contiguous.
            alignment: 0, or a power of two up to 2 MiB.
        """
        from .tensor import allocate
        return allocate(self, shape, dtype, session, device, zero, shared_only,
                        strides, alignment)

    def import_tensor(self, descriptor, writable=False):
        """tensor_import(): a Tensor viewing what `descriptor` names.

        `descriptor` is the bytes of Tensor.export() or export_inline(), or
        the text of export_text(). The view is read-only unless `writable`.
        """
        from .tensor import import_tensor
        return import_tensor(self, descriptor, writable)

    def wrap_device(self, pointer, shape, dtype, device, strides=None, session=0,
                    released=None, keep=None):
        """tensor_wrap_device() (ABI 1.3): a shareable Tensor over device
        memory the caller already has (no copy). `released()` is called
        once nobody holds the memory any more; `keep` is held until then."""
        from .tensor import wrap_device
        return wrap_device(self, pointer, shape, dtype, device, strides, session,
                           released, keep)

    def pool_stats(self):
        """tensor_pool_stats(): PoolStats."""
        out = _abi.struct_init(_abi.TensorPoolStats)
        self._check(self._vt.tensor_pool_stats(self._native(), ctypes.byref(out)))
        return PoolStats(out)

    def session_bytes(self, session):
        """tensor_session_bytes(): bytes of live tensors charged to `session`."""
        out = ctypes.c_uint64()
        self._check(self._vt.tensor_session_bytes(self._native(), session, ctypes.byref(out)))
        return out.value

    def reclaim(self):
        """tensor_reclaim(): drops dead importers' holds, unlinks dead
        owners' segments; ReclaimReport."""
        out = _abi.struct_init(_abi.ReclaimReport)
        self._check(self._vt.tensor_reclaim(self._native(), ctypes.byref(out)))
        return ReclaimReport(out)

    def pools(self):
        """shm_list(): PoolInfo rows of the namespace's pools (and, from
        ABI 1.3, device tables)."""
        native = self._native()
        capacity = 16
        while True:
            rows = (_abi.ShmPoolInfo * capacity)()
            count = ctypes.c_uint32()
            status = self._vt.shm_list(native, rows, ctypes.sizeof(_abi.ShmPoolInfo),
                                       capacity, ctypes.byref(count))
            if status == _abi.CODES["BUFFER_TOO_SMALL"]:
                capacity = count.value + 8
                continue
            self._check(status)
            return [PoolInfo(row) for row in rows[:count.value]]

    def cuda_info(self):
        """cuda_info() (ABI 1.3): CudaInfo, also when no driver is usable
        (then .ok is False and .message says why)."""
        self._need("cuda_info")
        out = _abi.struct_init(_abi.CudaInfo)
        status = self._vt.cuda_info(self._native(), ctypes.byref(out))
        if status not in (0, _abi.CODES["FEATURE_UNAVAILABLE"]):
            self._check(status)
        return CudaInfo(out, self.plugin.error_name(out.status))

    def __repr__(self):
        state = "closed" if self._closing else "open"
        return "<rm_plugin.Context %s, plugin %s>" % (state, self.plugin.version)


_default = None
_default_lock = threading.Lock()


def default_context():
    """The process's shared Context, made on first use from the defaults
    and $RM_PLUGIN_CONFIG (what the module-level get_or_load uses)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed or _default._pid != os.getpid():
            _default = Context()
        return _default
