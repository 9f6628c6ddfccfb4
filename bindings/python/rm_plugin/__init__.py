"""rm_plugin from Python: shared models and zero-copy tensors between
processes, over the plugin's C ABI (abi/rm_plugin.h) with ctypes.

    import rm_plugin

    with rm_plugin.Context({"registry.scope": "node"}) as ctx:
        with ctx.get_or_load("whisper-tiny@cpu", load_weights) as model:
            weights = model.numpy("float32")          # read-only, shared pages

        frame = ctx.allocate((80, 3000), "float32", session=42)
        np.from_dlpack(frame)[:] = features            # no copy
        pipe.send(frame.export())                      # 200 bytes
        ...
        view = other_ctx.import_tensor(descriptor)     # read-only, no copy
        np.from_dlpack(view)

The plugin is found in $REMOTEMEDIA_PLUGIN_DIR, then in the install
directory (<libdir>/remotemedia/plugins); see load().
"""

from ._plugin import Plugin, find_plugin, load
from .context import Context, default_context
from .errors import *  # noqa: F401,F403 (one exception class per code)
from .errors import RmError, PluginNotFoundError
from .registry import DeviceBuffer, LoadRequest, Loaded, ModelBuffer, ModelHandle
from .tensor import Tensor, from_torch

__version__ = "0.5.0"


def get_or_load(key, loader, context=None):
    """The model for `key` from `context` (default: the process's shared
    context, see default_context()): a ModelHandle. See
    rm_plugin.registry for the loader's contract."""
    return (context or default_context()).get_or_load(key, loader)


__all__ = ["Context", "Plugin", "Tensor", "ModelHandle", "LoadRequest", "Loaded",
           "ModelBuffer", "DeviceBuffer", "RmError", "PluginNotFoundError", "default_context",
           "find_plugin", "from_torch", "get_or_load", "load"]
