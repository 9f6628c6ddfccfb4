"""Element types: the rm_dtype table of the header, by NumPy/PyTorch name.

Accepts a name ("float32"), a numpy dtype or scalar type, or a torch dtype,
without importing either library unless the caller already uses it.
"""

from . import _abi

# name -> (code, bits): exactly the header's table (REF: tensor-types).
_TABLE = {
    "int8": (_abi.DTYPE_INT, 8), "int16": (_abi.DTYPE_INT, 16),
    "int32": (_abi.DTYPE_INT, 32), "int64": (_abi.DTYPE_INT, 64),
    "uint8": (_abi.DTYPE_UINT, 8), "uint16": (_abi.DTYPE_UINT, 16),
    "uint32": (_abi.DTYPE_UINT, 32), "uint64": (_abi.DTYPE_UINT, 64),
    "float16": (_abi.DTYPE_FLOAT, 16), "float32": (_abi.DTYPE_FLOAT, 32),
    "float64": (_abi.DTYPE_FLOAT, 64), "bfloat16": (_abi.DTYPE_BFLOAT, 16),
    "complex64": (_abi.DTYPE_COMPLEX, 64), "complex128": (_abi.DTYPE_COMPLEX, 128),
    "bool": (_abi.DTYPE_BOOL, 8),
}
_BY_CODE = {value: name for name, value in _TABLE.items()}
# torch's spellings that are not numpy's.
_ALIASES = {"half": "float16", "float": "float32", "double": "float64",
            "short": "int16", "int": "int32", "long": "int64",
            "cfloat": "complex64", "cdouble": "complex128"}


def to_name(dtype):
    """The table name of `dtype` (str, numpy dtype/type, torch dtype)."""
    if isinstance(dtype, str):
        name = dtype
    else:
        text = str(dtype)
        if text.startswith("torch."):
            name = text[len("torch."):]
        else:
            import numpy  # a numpy dtype or scalar type: numpy is loaded
            name = numpy.dtype(dtype).name
    name = _ALIASES.get(name, name)
    if name not in _TABLE:
        raise ValueError("dtype %r is not one of rm_plugin's: %s" % (dtype, ", ".join(_TABLE)))
    return name


def to_abi(dtype):
    """(code, bits, lanes) for tensor_allocate."""
    code, bits = _TABLE[to_name(dtype)]
    return code, bits, 1


def from_abi(code, bits, lanes):
    """The table name of an rm_dtype; lanes > 1 gives "float32x4"."""
    name = _BY_CODE.get((code, bits), "code%d_bits%d" % (code, bits))
    return name if lanes == 1 else "%sx%d" % (name, lanes)


def itemsize(dtype):
    """Bytes per element."""
    return _TABLE[to_name(dtype)][1] // 8
