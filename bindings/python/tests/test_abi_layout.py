"""The ctypes mirrors against the plugin's table of published sizes."""

import ctypes
import os
import re

import pytest

from rm_plugin import _abi
from conftest import REPO

SIZES = os.path.join(REPO, "plugin", "core", "abi_sizes.h")
MIRRORS = {
    "HOST_SERVICES": _abi.HostServices, "NEGOTIATE_REQUEST": _abi.NegotiateRequest,
    "CONTEXT_OPTIONS": _abi.ContextOptions, "CONTEXT_INFO": _abi.ContextInfo,
    "LOADED_MODEL": _abi.LoadedModel, "MODEL_INFO": _abi.ModelInfo,
    "REGISTRY_METRICS": _abi.RegistryMetrics,
    "REGISTRY_RECLAIM_REPORT": _abi.RegistryReclaimReport,
    "TENSOR_SPEC": _abi.TensorSpec, "TENSOR_INFO": _abi.TensorInfo,
    "TENSOR_POOL_STATS": _abi.TensorPoolStats, "RECLAIM_REPORT": _abi.ReclaimReport,
    "SHM_POOL_INFO": _abi.ShmPoolInfo, "CUDA_INFO": _abi.CudaInfo,
    "PLUGIN_V1": _abi.PluginV1,
}


def published_sizes(version="1_4"):
    text = open(SIZES).read()
    return {name: int(size) for name, size in re.findall(
        r"#define RM_(\w+)_SIZE_V%s \(\(size_t\)(\d+)\)" % version, text)}


@pytest.mark.skipif(not os.path.exists(SIZES), reason="source tree not present")
def test_every_struct_has_the_published_1_4_size():
    sizes = published_sizes()
    assert set(sizes) == set(MIRRORS), "a struct was added to the ABI: mirror it"
    for name, mirror in MIRRORS.items():
        assert ctypes.sizeof(mirror) == sizes[name], name


@pytest.mark.skipif(not os.path.exists(SIZES), reason="source tree not present")
def test_1_4_appends_after_the_1_3_ends():
    v13 = published_sizes("1_3")
    assert _abi.LoadedModel.alloc_device_buffer.offset == v13["LOADED_MODEL"] == 56
    assert _abi.ModelInfo.memory.offset == v13["MODEL_INFO"] == 352
    assert (_abi.ModelInfo.device_ordinal.offset, _abi.ModelInfo.device_uuid.offset,
            _abi.ModelInfo.device_bytes.offset) == (356, 360, 376)
    assert _abi.PluginV1.model_to_dlpack.offset == v13["PLUGIN_V1"] == 296


def test_dlpack_layouts_match_dlpack_h():
    # dlpack.h: DLTensor 48 bytes, DLManagedTensor 64, versioned 80.
    assert ctypes.sizeof(_abi.DLTensor) == 48
    assert ctypes.sizeof(_abi.DLManagedTensor) == 64
    assert ctypes.sizeof(_abi.DLManagedTensorVersioned) == 80
    assert _abi.DLManagedTensorVersioned.dl_tensor.offset == 32
