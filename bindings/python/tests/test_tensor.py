"""Tensors in one process: numpy and torch through DLPack, descriptors,
release idioms, and the error paths."""

import gc

import numpy as np
import pytest

import rm_plugin
from rm_plugin import _dlpack


def test_allocate_is_writable_without_a_copy(ctx):
    with ctx.allocate((80, 3000), "float32", session=42, zero=True) as t:
        assert (t.shape, t.dtype, t.nbytes, t.session) == ((80, 3000), "float32", 960000, 42)
        assert t.writable and t.shareable and not t.imported
        a = t.numpy()
        a[1, 2] = 5.0
        b = np.from_dlpack(t)  # numpy 1.x: read-only, same memory
        assert b[1, 2] == 5.0 and b.ctypes.data == a.ctypes.data == t.data_ptr
        assert ctx.session_bytes(42) == 960000
    assert a[1, 2] == 5.0, "arrays outlive the handle"
    del a, b
    gc.collect()
    assert _dlpack.outstanding() == 0


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int32", "int64", "float16",
                                   "float64", "complex64", "bool", np.float32])
def test_dtypes_round_trip(ctx, dtype):
    with ctx.allocate((3, 2), dtype) as t:
        assert t.numpy().dtype == np.dtype(dtype)


def test_strided_allocation(ctx):
    with ctx.allocate((4, 3), "int32", strides=(1, 4)) as t:  # column-major
        a = t.numpy()
        assert a.strides == (4, 16)
        a[:] = np.arange(12).reshape(4, 3)
        assert np.from_dlpack(t)[3, 2] == 11


def test_descriptors_bytes_and_text(config, ctx):
    with rm_plugin.Context(config, ignore_env=True) as other:
        t = ctx.allocate((16,), "float32")
        t.numpy()[:] = np.arange(16)
        descriptor, text = t.export(), t.export_text()
        assert len(descriptor) == 200 and text.startswith("rmt1.")
        view = other.import_tensor(descriptor)
        assert view.imported and not view.writable
        array = view.numpy()
        assert array[15] == 15 and not array.flags.writeable
        with pytest.raises(ValueError):
            array.flags.writeable = True
        writable = other.import_tensor(text, writable=True)
        writable.numpy()[0] = 100
        assert array[0] == 100 and t.numpy()[0] == 100
        inline = t.export_inline()
        copy = other.import_tensor(inline)
        t.numpy()[1] = -1
        assert copy.numpy()[1] == 1, "an inline descriptor is a copy"
        for handle in (view, writable, copy, t):
            handle.close()
        del array
        gc.collect()


def test_unconsumed_capsules_run_the_deleter_once(ctx):
    with ctx.allocate((8,), "uint8") as t:
        for versioned in (None, (1, 0)):
            capsule = t.__dlpack__(max_version=versioned)
            assert _dlpack.outstanding() == 1
            del capsule
            assert _dlpack.outstanding() == 0
    assert ctx.pool_stats().live_tensors == 0


def test_close_with_live_arrays_defers_the_context(config):
    ctx = rm_plugin.Context(config, ignore_env=True)
    t = ctx.allocate((4,), "float64")
    array = t.numpy()
    array[:] = 1.5
    ctx.close()
    assert t.closed and ctx._ptr is not None, "an export keeps the native context"
    assert array.sum() == 6.0
    del array
    gc.collect()
    assert ctx._ptr is None


def test_stale_and_forged_descriptors(config, ctx):
    with rm_plugin.Context(config, ignore_env=True) as other:
        t = ctx.allocate((4,), "float32")
        descriptor = t.export()
        t.close()
        ctx.allocate((1,), "float32").close()  # the owner frees on its next call
        with pytest.raises(rm_plugin.StaleDescriptorError):
            other.import_tensor(descriptor)
        with pytest.raises(rm_plugin.InvalidDescriptorError) as caught:
            other.import_tensor(b"\0" * 200)
        assert caught.value.message
        with pytest.raises(rm_plugin.InvalidDescriptorError):
            other.import_tensor("rmt1.not-base64!")


def test_quota_and_arguments(config):
    config = dict(config, **{"shm.session_quota": "1M"})
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        with ctx.allocate((512, 1024), "uint8", session=1):
            with pytest.raises(rm_plugin.QuotaExceededError) as caught:
                ctx.allocate((1024, 1024), "uint8", session=1)
            assert "quota" in caught.value.message
        with pytest.raises(ValueError):
            ctx.allocate((2,), "float24")
        with pytest.raises(ValueError):
            ctx.allocate((1,) * 9, "uint8")


def test_torch_interop(ctx):
    torch = pytest.importorskip("torch")
    with ctx.allocate((2, 3), "float32") as t:
        t.numpy()[:] = 2.0
        tensor = torch.from_dlpack(t)
        assert tensor.shape == (2, 3) and float(tensor.sum()) == 12.0
        tensor += 1  # writable tensor, same memory
        assert t.numpy()[0, 0] == 3.0
        assert tensor.data_ptr() == t.data_ptr
        bf = ctx.allocate((4,), torch.bfloat16)
        assert bf.torch().dtype == torch.bfloat16
        bf.close()
    del tensor
    gc.collect()
    assert _dlpack.outstanding() == 0
