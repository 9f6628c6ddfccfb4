"""Device tensors (ABI 1.3) without a GPU: no driver is an exception, and
against the test-only fake driver (tests/fake_cuda) when it is built."""

import ctypes
import multiprocessing
import os

import pytest

import rm_plugin
import peers  # noqa: F401 (spawned children import it)

FAKE = os.environ.get("FAKE_CUDA_LIBRARY")


def test_no_driver_is_device_unavailable(config):
    config = dict(config, **{"cuda.driver": "/nonexistent/libcuda.so.1"})
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        info = ctx.cuda_info()
        assert not info.ok and info.status == "DEVICE_UNAVAILABLE"
        assert "/nonexistent/libcuda.so.1" in info.message
        with pytest.raises(rm_plugin.DeviceUnavailableError) as caught:
            ctx.allocate((4,), "float32", device="cuda:0")
        assert caught.value.message
        with ctx.allocate((4,), "float32") as host:  # CPU keeps working
            host.record()  # a host tensor needs no ordering
            host.wait(host=True)


def _fake_consumer(config, descriptor, connection):
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        with ctx.import_tensor(descriptor) as view:
            view.wait(host=True)
            # The fake's device memory is host memory, so the test can read it.
            data = ctypes.string_at(view.data_ptr, 4)
            connection.send((view.device, view.__dlpack_device__(), data, view.writable))


@pytest.mark.skipif(not FAKE, reason="the fake CUDA driver is not built")
def test_device_tensor_crosses_processes_with_the_fake_driver(config):
    config = dict(config, **{"cuda.driver": FAKE})
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        info = ctx.cuda_info()
        assert info.ok, info
        with ctx.allocate((16,), "uint8", device="cuda:0", zero=True) as t:
            assert t.device == "cuda:0" and t.__dlpack_device__() == (2, 0)
            ctypes.memmove(t.data_ptr, b"\x01\x02\x03\x04", 4)
            t.record()
            with pytest.raises(TypeError):
                t.numpy()
            spawn = multiprocessing.get_context("spawn")
            parent, child = spawn.Pipe()
            peer = spawn.Process(target=_fake_consumer, args=(config, t.export(), child))
            peer.start()
            result = parent.recv()
            peer.join(60)
            assert peer.exitcode == 0
            assert result == ("cuda:0", (2, 0), b"\x01\x02\x03\x04", False)
            with pytest.raises(rm_plugin.InvalidArgumentError):
                t.export_inline()
