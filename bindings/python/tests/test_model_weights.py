"""ABI 1.4 without a GPU: model_to_dlpack of host models (the view holds
its own reference), where rows say a model lives, and device buffers asked
for where there are none."""

import ctypes
import gc

import numpy as np
import pytest

import rm_plugin
from rm_plugin import _abi

NO_DRIVER = "/nonexistent/libcuda.so.1"


class Model:
    pass


def row(ctx, key):
    rows = [r for r in ctx.models() if r.key == key]
    assert rows, "no row for %s" % key
    return rows[0]


def assert_host_fields(r, memory):
    assert (r.memory, r.device_ordinal, r.device_uuid, r.device_bytes) == (
        memory, -1, bytes(16), 0), r


def fill(data):
    def load(request):
        request.alloc(len(data)).memoryview[:] = data
    return load


def test_the_plugin_offers_model_to_dlpack(ctx):
    assert ctx.plugin.abi_version >= (1, 4)
    assert ctx.plugin.has("model_to_dlpack"), "a 1.4 vtable sets every 1.4 member"


def test_model_to_dlpack_describes_a_host_buffer(ctx):
    with ctx.get_or_load("raw@cpu", fill(b"weights!")) as handle:
        inner, managed = handle._model_view()
        try:
            t = managed.dl_tensor
            assert (managed.version.major, managed.version.minor) == (1, 0)
            assert managed.flags & _abi.DLPACK_FLAG_READ_ONLY
            assert (t.device.device_type, t.device.device_id) == (_abi.DL_CPU, 0)
            assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (_abi.DTYPE_UINT, 8, 1)
            assert t.ndim == 1 and t.shape[0] == 8
            assert not t.strides or t.strides[0] == 1
            assert t.data == handle.address
            assert ctypes.string_at(t.data + t.byte_offset, 8) == b"weights!"
            assert row(ctx, "raw@cpu").refcount == 2, "the view's own reference"
        finally:
            managed.deleter(inner)
        assert row(ctx, "raw@cpu").refcount == 1, "the deleter gives it back"
    ctx.evict("raw@cpu")


def test_an_array_of_the_weights_holds_the_model_until_collected(ctx):
    handle = ctx.get_or_load("w@cpu", fill(b"weights!"))
    assert handle.device == (_abi.DL_CPU, 0) and handle.device_pointer is None
    array = np.from_dlpack(handle)
    assert array.dtype == np.uint8 and array.tobytes() == b"weights!"
    assert not array.flags.writeable
    words = handle.numpy("uint16", shape=(2, 2))
    assert words.tobytes() == b"weights!"
    handle.close()
    with pytest.raises(rm_plugin.BusyError):
        ctx.evict("w@cpu")
    assert array.tobytes() == b"weights!"
    del array, words
    gc.collect()
    assert row(ctx, "w@cpu").refcount == 0
    ctx.evict("w@cpu")


def test_a_python_object_has_no_dlpack_view_and_rows_say_host(ctx):
    with ctx.get_or_load("obj@cpu", Model) as obj, \
            ctx.get_or_load("buf@cpu", fill(b"hi")) as buf:
        with pytest.raises(TypeError):
            np.from_dlpack(obj)
        if ctx.plugin.has("model_to_dlpack"):
            with pytest.raises(rm_plugin.NotShareableError):
                obj._model_view()
        assert row(ctx, "obj@cpu").refcount == 1, "a failed view takes no reference"
        for key in ("obj@cpu", "buf@cpu"):
            r = row(ctx, key)
            assert r.scope == _abi.REGISTRY_SCOPE_PROCESS
            assert_host_fields(r, _abi.MODEL_MEMORY_HOST)
        assert bytes(buf.model) == b"hi"
    ctx.evict()


def test_node_scope_rows_are_shared_memory(config):
    config = dict(config, **{"registry.scope": "node", "registry.ttl_s": "0"})
    with rm_plugin.Context(config, ignore_env=True) as a, \
            rm_plugin.Context(config, ignore_env=True) as b:
        with a.get_or_load("n@cpu", fill(b"NODE" * 1024)):
            r = row(b, "n@cpu")
            assert (r.scope, r.bytes) == (_abi.REGISTRY_SCOPE_NODE, 4096)
            assert_host_fields(r, _abi.MEMORY_SHM)
            with b.get_or_load("n@cpu", lambda request: pytest.fail("loads once")) as h:
                array = np.from_dlpack(h)
        assert array[:4].tobytes() == b"NODE" and array.size == 4096
        with pytest.raises(rm_plugin.BusyError):
            b.evict("n@cpu")
        del array
        gc.collect()
        a.evict("n@cpu")


def test_a_device_buffer_needs_a_cuda_key_and_a_driver(config):
    config = dict(config, **{"cuda.driver": NO_DRIVER})
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        with pytest.raises((rm_plugin.InvalidArgumentError, rm_plugin.FeatureUnavailableError,
                            rm_plugin.FeatureDisabledError)) as caught:
            ctx.get_or_load("host@cpu", lambda request: request.alloc_device(64))
        assert "host@cpu" in str(caught.value.__cause__), "the loader's own error"
        with pytest.raises((rm_plugin.DeviceUnavailableError,
                            rm_plugin.FeatureUnavailableError)):
            ctx.get_or_load("gpu@cuda:0", lambda request: request.alloc_device(64))

        def fall_back(request):
            with pytest.raises(rm_plugin.RmError):
                request.alloc_device(64)
            request.alloc(2).memoryview[:] = b"ok"

        with ctx.get_or_load("fallback@cuda:0", fall_back) as handle:
            assert bytes(handle.model) == b"ok" and handle.device == (_abi.DL_CPU, 0)
            assert_host_fields(row(ctx, "fallback@cuda:0"), _abi.MODEL_MEMORY_HOST)
        ctx.evict()
