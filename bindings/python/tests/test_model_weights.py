"""ABI 1.4 without a GPU: model_to_dlpack of host models (the view holds
its own reference), where rows say a model lives, device buffers asked for
where there are none, and device weights in both scopes against the
test-only fake driver (tests/fake_cuda) when it is built."""

import ctypes
import gc
import os

import numpy as np
import pytest

import rm_plugin
from rm_plugin import _abi

NO_DRIVER = "/nonexistent/libcuda.so.1"
FAKE = os.environ.get("FAKE_CUDA_LIBRARY")


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


class FakeDriver:
    """The test-only fake driver's API through ctypes, with device 0's
    primary context current on this thread (as a loader that copies with
    the driver API or the CUDA runtime has it)."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        device, context = ctypes.c_int(), ctypes.c_void_p()
        assert self.lib.cuInit(0) == 0
        assert self.lib.cuDeviceGet(ctypes.byref(device), 0) == 0
        assert self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), device) == 0
        assert self.lib.cuCtxPushCurrent_v2(context) == 0

    def close(self):
        popped = ctypes.c_void_p()
        assert self.lib.cuCtxPopCurrent_v2(ctypes.byref(popped)) == 0
        assert self.lib.cuDevicePrimaryCtxRelease_v2(0) == 0

    def upload(self, pointer, data):
        assert self.lib.cuMemcpyHtoD_v2(ctypes.c_uint64(pointer), data,
                                        ctypes.c_size_t(len(data))) == 0

    def download(self, pointer, size):
        out = ctypes.create_string_buffer(size)
        assert self.lib.cuMemcpyDtoH_v2(out, ctypes.c_uint64(pointer),
                                        ctypes.c_size_t(size)) == 0
        return out.raw


@pytest.mark.skipif(not FAKE, reason="the fake CUDA driver is not built")
@pytest.mark.parametrize("scope", ["process", "node"])
def test_device_weights_with_the_fake_driver(config, scope):
    config = dict(config, **{"cuda.driver": FAKE, "registry.scope": scope,
                             "registry.ttl_s": "0"})
    weights = bytes(i * 7 % 256 for i in range(5000))
    driver = FakeDriver(FAKE)
    try:
        with rm_plugin.Context(config, ignore_env=True) as ctx:
            if not ctx.info().features_built & _abi.FEATURE_CUDA_IPC:
                pytest.skip("cuda-ipc not built")
            uuid = ctx.cuda_info().devices[0]["uuid"]

            def load(request):
                buffer = request.alloc_device(len(weights))
                assert buffer.nbytes == len(weights) and buffer.device_pointer
                driver.upload(buffer.device_pointer, weights)

            with ctx.get_or_load("gpu@cuda:0", load) as model:
                assert model.device == (_abi.DL_CUDA, 0)
                assert model.nbytes == len(weights)
                assert model.device_pointer == model.address
                assert driver.download(model.device_pointer, len(weights)) == weights
                with pytest.raises(TypeError):
                    model.numpy()
                with pytest.raises(TypeError):
                    model.model
                assert model.__dlpack_device__() == (_abi.DL_CUDA, 0)
                r = ctx.models()[0]
                assert (r.memory, r.device_ordinal, r.bytes) == (
                    _abi.MEMORY_CUDA, 0, len(weights)), r
                assert r.device_bytes >= r.bytes and r.device_uuid != bytes(16)
                assert r.key == ("gpu@cuda:" + uuid if scope == "node" else "gpu@cuda:0")
                if scope == "node":
                    with rm_plugin.Context(config, ignore_env=True) as other:
                        with other.get_or_load("gpu@cuda:0", lambda request: pytest.fail(
                                "node scope loads once")) as attached:
                            # No row under the key asked for: found through DLPack.
                            assert attached.device == (_abi.DL_CUDA, 0)
                            assert attached.nbytes == len(weights)
                            assert driver.download(attached.device_pointer,
                                                   len(weights)) == weights
            ctx.evict("gpu@cuda:0")
            assert ctx.models() == []
    finally:
        driver.close()
