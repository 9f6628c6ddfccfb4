"""ctypes mirrors of abi/rm_plugin.h (ABI 1.4, LP64).

The header is the contract; this module restates its structs, constants and
vtable for ctypes so that the package needs no compiler. Field order and
types follow the header exactly: tests/test_abi_layout.py checks every size
against the plugin's own table of published sizes (plugin/core/abi_sizes.h).
"""

import ctypes
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_int32,
                    c_int64, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p)


def abi_version(major, minor):
    """RM_ABI_VERSION(major, minor)."""
    return ((major & 0xFFFF) << 16) | (minor & 0xFFFF)


ABI_CURRENT = abi_version(1, 4)
ABI_MIN = abi_version(1, 0)
ENTRY_POINT = "rm_plugin_negotiate"
PLUGIN_FILE_NAME = "rm_plugin.so"
PLUGIN_DIR_ENV = "REMOTEMEDIA_PLUGIN_DIR"

# RM_ERROR_MAP: code -> name. The plugin's error_name() is the source of
# truth at run time; this copy serves before a vtable exists.
ERROR_NAMES = {
    0: "OK", -1: "INVALID_ARGUMENT", -2: "INCOMPATIBLE_VERSION",
    -3: "STRUCT_SIZE", -4: "NO_MEMORY", -5: "FEATURE_DISABLED",
    -6: "FEATURE_UNAVAILABLE", -7: "CONFIG_UNKNOWN_KEY",
    -8: "CONFIG_INVALID_VALUE", -9: "CONFIG_FILE", -10: "INVALID_KEY",
    -11: "NOT_FOUND", -12: "BUSY", -13: "LOADER_FAILED", -14: "LOAD_CYCLE",
    -15: "BUFFER_TOO_SMALL", -16: "FORKED", -17: "ALLOCATOR", -18: "SYSTEM",
    -19: "SHUTTING_DOWN", -20: "NOT_SHAREABLE", -21: "INVALID_DESCRIPTOR",
    -22: "STALE_DESCRIPTOR", -23: "QUOTA_EXCEEDED", -24: "CORRUPT_STATE",
    -25: "DEVICE_UNAVAILABLE",
}
CODES = {name: code for code, name in ERROR_NAMES.items()}

FEATURE_MODEL_REGISTRY = 1 << 0
FEATURE_SHARED_MEMORY = 1 << 1
FEATURE_CUDA_IPC = 1 << 2

CONTEXT_IGNORE_ENV = 1 << 0

MODEL_KEY_MAX = 256
REGISTRY_SCOPE_PROCESS = 0
REGISTRY_SCOPE_NODE = 1
MODEL_STATE_READY = 0
MODEL_STATE_LOADING = 1

TENSOR_MAX_DIMS = 8
TENSOR_DESCRIPTOR_SIZE = 200
TENSOR_DESCRIPTOR_TEXT_MAX = 280

DTYPE_INT, DTYPE_UINT, DTYPE_FLOAT = 0, 1, 2
DTYPE_BFLOAT, DTYPE_COMPLEX, DTYPE_BOOL = 4, 5, 6

TENSOR_ALLOC_SHARED_ONLY = 1 << 0
TENSOR_ALLOC_ZERO = 1 << 1
TENSOR_ALLOC_STRIDED = 1 << 2

TENSOR_WRITABLE = 1 << 0
TENSOR_SHAREABLE = 1 << 1
TENSOR_IMPORTED = 1 << 2
TENSOR_OWNED = 1 << 3

TENSOR_IMPORT_WRITABLE = 1 << 0
TENSOR_WAIT_HOST = 1 << 0

MEMORY_SHM = 1
MEMORY_CUDA = 2
MODEL_MEMORY_HOST = 0  # rm_model_info.memory: private host memory (1.4)

DL_CPU = 1
DL_CUDA = 2
DLPACK_FLAG_READ_ONLY = 1 << 0

CUDA_INFO_MAX_DEVICES = 16


class HostServices(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("user", c_void_p),
        ("log", ctypes.CFUNCTYPE(None, c_void_p, c_int32, c_char_p)),
        ("monotonic_ns", ctypes.CFUNCTYPE(c_uint64, c_void_p)),
    ]


class NegotiateRequest(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("min_abi_version", c_uint32), ("max_abi_version", c_uint32),
        ("services", POINTER(HostServices)),
        ("error_buffer", c_void_p), ("error_buffer_size", c_uint64),
        ("reserved", c_uint64 * 4),
    ]


class ConfigEntry(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class ContextOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("entries", POINTER(ConfigEntry)), ("entry_count", c_uint64),
        ("config_path", c_char_p), ("flags", c_uint64),
        ("reserved", c_uint64 * 4),
    ]


class ContextInfo(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("negotiated_abi_version", c_uint32), ("reserved0", c_uint32),
        ("features_built", c_uint64), ("features_enabled", c_uint64),
        ("allocator", c_char * 96),
        ("allocator_arena", c_uint32), ("reserved1", c_uint32),
    ]


class LoadedModel(Structure):
    pass


DESTROY_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)
ALLOC_BUFFER_FN = ctypes.CFUNCTYPE(c_int32, POINTER(LoadedModel), c_uint64,
                                   POINTER(c_void_p))
ALLOC_DEVICE_BUFFER_FN = ctypes.CFUNCTYPE(c_int32, POINTER(LoadedModel), c_uint64,
                                          POINTER(c_uint64), POINTER(c_void_p))
LoadedModel._fields_ = [
    ("struct_size", c_uint32), ("abi_version", c_uint32),
    ("model", c_void_p), ("bytes", c_uint64),
    ("destroy", DESTROY_FN), ("destroy_user", c_void_p),
    # 1.2
    ("alloc_buffer", ALLOC_BUFFER_FN), ("plugin_private", c_void_p),
    # 1.4
    ("alloc_device_buffer", ALLOC_DEVICE_BUFFER_FN),
]


def loaded_model_has(loaded, member):
    """RM_LOADED_MODEL_HAS_BUFFER / _HAS_DEVICE_BUFFER: the plugin's struct
    reaches `member` ("alloc_buffer", "alloc_device_buffer") and sets it. A
    plugin older than the member gives a shorter struct: nothing past its
    struct_size is read."""
    field = getattr(LoadedModel, member)
    if loaded.struct_size < field.offset + field.size:
        return False
    return bool(getattr(loaded, member))

LOADER_FN = ctypes.CFUNCTYPE(c_int32, c_void_p, c_char_p, POINTER(LoadedModel))


class ModelInfo(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("key", c_char * MODEL_KEY_MAX), ("device", c_char * 32),
        ("bytes", c_uint64), ("refcount", c_uint64),
        ("loaded_at_ns", c_uint64), ("last_used_ns", c_uint64),
        ("scope", c_uint32), ("state", c_uint32), ("holders", c_uint32),
        ("loader_pid", c_int32), ("idle_ns", c_uint64),
        # 1.4
        ("memory", c_uint32), ("device_ordinal", c_int32),
        ("device_uuid", c_uint8 * 16), ("device_bytes", c_uint64),
    ]


class RegistryMetrics(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("hits", c_uint64), ("misses", c_uint64), ("loads", c_uint64),
        ("load_failures", c_uint64), ("evictions", c_uint64),
        ("evictions_ttl", c_uint64), ("evictions_lru", c_uint64),
        ("evictions_explicit", c_uint64), ("models", c_uint64),
        ("bytes", c_uint64), ("over_budget", c_uint64), ("hit_rate", c_double),
        ("attaches", c_uint64), ("takeovers", c_uint64),
        ("dead_references", c_uint64), ("lock_recoveries", c_uint64),
    ]


class RegistryReclaimReport(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("dead_references", c_uint64), ("loads_abandoned", c_uint64),
        ("models_evicted", c_uint64), ("segments_unlinked", c_uint64),
        ("bytes_unlinked", c_uint64),
    ]


class DType(Structure):
    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class TensorSpec(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("dtype", DType), ("ndim", c_uint32),
        ("shape", c_int64 * TENSOR_MAX_DIMS),
        ("strides", c_int64 * TENSOR_MAX_DIMS),
        ("alignment", c_uint64), ("session", c_uint64), ("flags", c_uint64),
        ("reserved", c_uint64 * 4),
        ("device", c_char * 16),
    ]


class DLDevice(Structure):
    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class TensorInfo(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("data", c_void_p), ("nbytes", c_uint64),
        ("dtype", DType), ("ndim", c_uint32),
        ("shape", c_int64 * TENSOR_MAX_DIMS),
        ("strides", c_int64 * TENSOR_MAX_DIMS),
        ("session", c_uint64), ("flags", c_uint64), ("pool_id", c_uint64),
        ("owner_pid", c_uint32), ("reserved0", c_uint32),
        ("device", DLDevice), ("device_uuid", c_uint8 * 16),
    ]


_POOL_STATS_COUNTERS = [
    "pool_id", "pool_bytes", "live_tensors", "live_bytes", "committed_bytes",
    "heap_tensors", "heap_bytes", "allocations", "fallbacks", "frees",
    "remote_releases", "holders", "dead_holders_reclaimed", "holds_reclaimed",
    "imports", "pools_mapped", "startup_segments_unlinked",
    "startup_bytes_unlinked", "cuda_tensors", "cuda_bytes", "cuda_blocks",
    "cuda_block_bytes", "cuda_handles_opened", "cuda_handles_open",
    "cuda_handle_cache_hits", "cuda_blocks_orphaned",
]


class TensorPoolStats(Structure):
    _fields_ = ([("struct_size", c_uint32), ("abi_version", c_uint32),
                 ("pool_name", c_char * 96)]
                + [(name, c_uint64) for name in _POOL_STATS_COUNTERS])


class ReclaimReport(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("dead_holders", c_uint64), ("holds_dropped", c_uint64),
        ("tensors_freed", c_uint64), ("segments_unlinked", c_uint64),
        ("bytes_unlinked", c_uint64), ("cuda_handles_closed", c_uint64),
        ("cuda_blocks_freed", c_uint64),
    ]


class ShmPoolInfo(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("name", c_char * 96), ("pool_id", c_uint64),
        ("owner_pid", c_uint32), ("owner_alive", c_uint32),
        ("owner_start_time", c_uint64), ("pool_bytes", c_uint64),
        ("committed_bytes", c_uint64), ("live_tensors", c_uint64),
        ("live_bytes", c_uint64), ("holders", c_uint32),
        ("readable", c_uint32), ("memory", c_uint32),
        ("device_blocks", c_uint32),
    ]


class CudaDevice(Structure):
    _fields_ = [
        ("ordinal", c_int32), ("reserved", c_uint32),
        ("uuid", c_uint8 * 16), ("uuid_text", c_char * 48),
    ]


class CudaInfo(Structure):
    _fields_ = [
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("status", c_int32), ("driver_version", c_int32),
        ("device_count", c_uint32), ("reserved", c_uint32),
        ("library", c_char * 256), ("message", c_char * 512),
        ("devices", CudaDevice * CUDA_INFO_MAX_DEVICES),
    ]


class DLTensor(Structure):
    _fields_ = [
        ("data", c_void_p), ("device", DLDevice), ("ndim", c_int32),
        ("dtype", DType), ("shape", POINTER(c_int64)),
        ("strides", POINTER(c_int64)), ("byte_offset", c_uint64),
    ]


class DLManagedTensor(Structure):
    pass


DL_DELETER_FN = ctypes.CFUNCTYPE(None, POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor), ("manager_ctx", c_void_p),
    ("deleter", DL_DELETER_FN),
]


class DLPackVersion(Structure):
    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class DLManagedTensorVersioned(Structure):
    pass


DL_VERSIONED_DELETER_FN = ctypes.CFUNCTYPE(None, POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion), ("manager_ctx", c_void_p),
    ("deleter", DL_VERSIONED_DELETER_FN), ("flags", c_uint64),
    ("dl_tensor", DLTensor),
]

DEVICE_RELEASED_FN = ctypes.CFUNCTYPE(None, c_void_p, c_void_p)

_ctx = c_void_p  # rm_context *
_I = c_int32
_F = ctypes.CFUNCTYPE


class PluginV1(Structure):
    """rm_plugin_v1, in ABI order. Members newer than 1.0 must be checked
    with has() before use (RM_PLUGIN_HAS)."""

    _fields_ = [
        # 1.0
        ("struct_size", c_uint32), ("abi_version", c_uint32),
        ("features_built", c_uint64), ("name", c_char_p), ("version", c_char_p),
        ("error_name", _F(c_char_p, c_int32)),
        ("strerror", _F(c_char_p, c_int32)),
        ("context_create", _F(_I, POINTER(ContextOptions), POINTER(_ctx))),
        ("context_destroy", _F(None, _ctx)),
        ("context_last_error", _F(c_char_p, _ctx)),
        ("context_info", _F(_I, _ctx, POINTER(ContextInfo))),
        ("config_get", _F(_I, _ctx, c_char_p, c_void_p, c_uint64, POINTER(c_uint64))),
        ("config_key_at", _F(c_char_p, c_uint32)),
        ("model_key_normalize", _F(_I, c_char_p, c_void_p, c_uint64)),
        ("model_get_or_load", _F(_I, _ctx, c_char_p, LOADER_FN, c_void_p,
                                 POINTER(c_void_p), POINTER(c_void_p))),
        ("model_release", _F(_I, _ctx, c_void_p)),
        ("model_evict", _F(_I, _ctx, c_char_p)),
        ("registry_metrics", _F(_I, _ctx, POINTER(RegistryMetrics))),
        ("registry_list", _F(_I, _ctx, c_void_p, c_uint32, c_uint32, POINTER(c_uint32))),
        # 1.1
        ("tensor_allocate", _F(_I, _ctx, POINTER(TensorSpec), POINTER(c_void_p))),
        ("tensor_info", _F(_I, _ctx, c_void_p, POINTER(TensorInfo))),
        ("tensor_export", _F(_I, _ctx, c_void_p, c_void_p, c_uint64)),
        ("tensor_export_text", _F(_I, _ctx, c_void_p, c_void_p, c_uint64)),
        ("tensor_export_inline", _F(_I, _ctx, c_void_p, c_void_p, c_uint64,
                                    POINTER(c_uint64))),
        ("tensor_import", _F(_I, _ctx, c_void_p, c_uint64, c_uint64, POINTER(c_void_p))),
        ("tensor_import_text", _F(_I, _ctx, c_char_p, c_uint64, POINTER(c_void_p))),
        ("tensor_release", _F(_I, _ctx, c_void_p)),
        ("tensor_to_dlpack", _F(_I, _ctx, c_void_p, POINTER(POINTER(DLManagedTensor)))),
        ("tensor_to_dlpack_versioned", _F(_I, _ctx, c_void_p,
                                          POINTER(POINTER(DLManagedTensorVersioned)))),
        ("tensor_pool_stats", _F(_I, _ctx, POINTER(TensorPoolStats))),
        ("tensor_session_bytes", _F(_I, _ctx, c_uint64, POINTER(c_uint64))),
        ("tensor_reclaim", _F(_I, _ctx, POINTER(ReclaimReport))),
        ("shm_list", _F(_I, _ctx, c_void_p, c_uint32, c_uint32, POINTER(c_uint32))),
        # 1.2
        ("registry_reclaim", _F(_I, _ctx, POINTER(RegistryReclaimReport))),
        # 1.3
        ("tensor_wrap_device", _F(_I, _ctx, POINTER(TensorSpec), c_void_p,
                                  DEVICE_RELEASED_FN, c_void_p, POINTER(c_void_p))),
        ("tensor_record", _F(_I, _ctx, c_void_p, c_void_p)),
        ("tensor_wait", _F(_I, _ctx, c_void_p, c_void_p, c_uint64)),
        ("cuda_info", _F(_I, _ctx, POINTER(CudaInfo))),
        # 1.4
        ("model_to_dlpack", _F(_I, _ctx, c_void_p,
                               POINTER(POINTER(DLManagedTensorVersioned)))),
    ]

    def has(self, member):
        """RM_PLUGIN_HAS: the plugin's vtable reaches `member` and sets it."""
        field = getattr(PluginV1, member)
        if self.struct_size < field.offset + field.size:
            return False
        return bool(getattr(self, member))


def struct_init(cls, **fields):
    """RM_STRUCT_INIT: a zeroed struct with struct_size and abi_version set."""
    value = cls(**fields)
    value.struct_size = ctypes.sizeof(cls)
    value.abi_version = ABI_CURRENT
    return value
