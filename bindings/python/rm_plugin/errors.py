"""The plugin's error codes as Python exceptions.

Every failing call raises an RmError subclass named after the code
(``INVALID_DESCRIPTOR`` -> ``InvalidDescriptorError``), carrying the code,
its name and the plugin's message (context_last_error), so a caller can
catch one condition precisely or every plugin error at once.
"""

from . import _abi


class RmError(Exception):
    """An rm_plugin call failed.

    Attributes:
        code: the negative RM_E_* code.
        name: its name without the prefix ("STALE_DESCRIPTOR").
        message: what the plugin said went wrong (may be empty).
    """

    code = None
    name = None

    def __init__(self, code, message="", name=None):
        self.code = code
        self.name = name or _abi.ERROR_NAMES.get(code, "UNKNOWN")
        self.message = message
        text = "%s (%d)" % (self.name, code)
        super().__init__(text + (": " + message if message else ""))


def _class_name(code_name):
    return "".join(part.capitalize() for part in code_name.split("_")) + "Error"


# One subclass per code; RmError.for_code() picks it.
_BY_CODE = {}
for _code, _name in _abi.ERROR_NAMES.items():
    if _code == 0:
        continue
    _cls = type(_class_name(_name), (RmError,), {
        "__doc__": "RM_E_%s." % _name, "__module__": __name__})
    globals()[_cls.__name__] = _cls
    _BY_CODE[_code] = _cls


class PluginNotFoundError(RmError):
    """rm_plugin.so was not found, could not be loaded, or has no entry point."""

    def __init__(self, message):
        super().__init__(-1, message, name="PLUGIN_NOT_FOUND")


def error_for(code, message="", name=None):
    """The exception instance for `code` (an RmError subclass)."""
    cls = _BY_CODE.get(code, RmError)
    return cls(code, message, name)


__all__ = ["RmError", "PluginNotFoundError", "error_for"] + [
    cls.__name__ for cls in _BY_CODE.values()]
