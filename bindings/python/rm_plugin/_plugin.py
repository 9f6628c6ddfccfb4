"""Finding, loading and negotiating with rm_plugin.so (README: "Loading the
plugin from a host"; tools/host/plugin_loader.c does the same in C)."""

import ctypes
import os
import sysconfig
import threading

from . import _abi
from .errors import PluginNotFoundError, error_for

_lock = threading.Lock()
_loaded = None  # the one Plugin of this process


def _install_dirs():
    """Where `meson install` puts the plugin: <prefix>/<libdir>/remotemedia/
    plugins. The C hosts know their prefix at build time; a Python package
    does not, so it tries the prefixes and libdirs meson uses on Debian."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    dirs = []
    for prefix in ("/usr/local", "/usr"):
        for libdir in (os.path.join("lib", multiarch), "lib64", "lib"):
            path = os.path.join(prefix, libdir, "remotemedia", "plugins")
            if path not in dirs:
                dirs.append(path)
    return dirs


def find_plugin():
    """The path of rm_plugin.so: the first one in $REMOTEMEDIA_PLUGIN_DIR
    (colon-separated), then in the install directories. Raises
    PluginNotFoundError when there is none."""
    env = os.environ.get(_abi.PLUGIN_DIR_ENV, "")
    searched = [d for d in env.split(":") if d] + _install_dirs()
    for directory in searched:
        candidate = os.path.join(directory, _abi.PLUGIN_FILE_NAME)
        if os.access(candidate, os.R_OK):
            return candidate
    raise PluginNotFoundError(
        "%s not found in $%s (%s) nor in %s" % (
            _abi.PLUGIN_FILE_NAME, _abi.PLUGIN_DIR_ENV, env or "unset",
            ", ".join(_install_dirs())))


class Plugin:
    """A loaded and negotiated rm_plugin.so.

    Attributes:
        path: the shared object's path.
        abi_version: the negotiated version, as (major, minor).
        version: the plugin's own version string ("0.5.0").
        features_built: the RM_FEATURE_* bits compiled in.
        vt: the ctypes vtable (rm_plugin_v1).
    """

    def __init__(self, path):
        self.path = path
        try:
            # RTLD_LOCAL, as the header's loading recipe says: the plugin
            # exports one symbol and must not interpose on anything.
            self._library = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        except OSError as exc:
            raise PluginNotFoundError("dlopen %s: %s" % (path, exc)) from None
        try:
            negotiate = getattr(self._library, _abi.ENTRY_POINT)
        except AttributeError:
            raise PluginNotFoundError("%s has no %s" % (path, _abi.ENTRY_POINT)) from None
        negotiate.restype = ctypes.c_int32
        negotiate.argtypes = [ctypes.POINTER(_abi.NegotiateRequest),
                              ctypes.POINTER(ctypes.c_uint32),
                              ctypes.POINTER(ctypes.POINTER(_abi.PluginV1))]
        reason = ctypes.create_string_buffer(512)
        request = _abi.struct_init(_abi.NegotiateRequest)
        request.min_abi_version = _abi.ABI_MIN
        request.max_abi_version = _abi.ABI_CURRENT
        request.error_buffer = ctypes.cast(reason, ctypes.c_void_p)
        request.error_buffer_size = len(reason)
        picked = ctypes.c_uint32()
        vtable = ctypes.POINTER(_abi.PluginV1)()
        status = negotiate(ctypes.byref(request), ctypes.byref(picked), ctypes.byref(vtable))
        if status != 0:
            raise error_for(status, "negotiation with %s failed: %s" % (
                path, reason.value.decode(errors="replace")))
        self.vt = vtable.contents
        self.abi_version = (picked.value >> 16, picked.value & 0xFFFF)
        self.version = self.vt.version.decode()
        self.features_built = self.vt.features_built

    def has(self, member):
        """Whether the negotiated vtable has `member` (RM_PLUGIN_HAS)."""
        return self.vt.has(member)

    def error_name(self, code):
        """The plugin's name for an error code."""
        return self.vt.error_name(code).decode()

    def __repr__(self):
        return "<rm_plugin %s ABI %d.%d at %s>" % (
            self.version, self.abi_version[0], self.abi_version[1], self.path)


def load(path=None):
    """The process's Plugin, loaded on first use.

    The shared object is loaded once per process (it is linked -z nodelete
    and never unloaded), so the first call decides which file: `path` if
    given, else discovery (find_plugin). A later call naming another file
    raises ValueError rather than silently using the first.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = Plugin(os.path.realpath(path or find_plugin()))
        elif path is not None and os.path.realpath(path) != _loaded.path:
            raise ValueError("rm_plugin already loaded from %s, not %s" % (_loaded.path, path))
        return _loaded
