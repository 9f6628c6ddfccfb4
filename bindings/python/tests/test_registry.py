"""The registry from Python, in one process: both scopes."""

import gc
import weakref

import numpy as np
import pytest

import rm_plugin


class Model:
    pass


def test_process_scope_keeps_the_object_until_eviction(ctx):
    calls = []

    def load():
        calls.append(1)
        return Model()

    handle = ctx.get_or_load("m@cpu", load)
    model = handle.model
    alive = weakref.ref(model)
    with ctx.get_or_load("m@cpu", load) as again:
        assert again.model is model
    assert calls == [1]
    del model
    handle.close()
    gc.collect()
    assert alive() is not None, "the registry keeps an idle model"
    ctx.evict("m@cpu")
    gc.collect()
    assert alive() is None, "eviction drops it"
    metrics = ctx.metrics()
    assert (metrics.hits, metrics.misses, metrics.loads, metrics.evictions) == (1, 1, 1, 1)


def test_loader_request_sizes_and_listing(ctx):
    def load(request):
        assert request.key == "big@cuda:1" and request.scope == "process"
        return rm_plugin.Loaded([1, 2, 3], nbytes=4096)

    with ctx.get_or_load("big@CUDA:01", load) as handle:
        assert handle.key == "big@cuda:1" and handle.model == [1, 2, 3]
        rows = ctx.models()
        assert [(r.key, r.bytes, r.refcount) for r in rows] == [("big@cuda:1", 4096, 1)]
        with pytest.raises(rm_plugin.BusyError):
            ctx.evict("big@cuda:1")
    with pytest.raises(rm_plugin.NotFoundError):
        ctx.evict("other@cpu")


def test_garbage_collection_releases_a_handle(ctx):
    ctx.get_or_load("g@cpu", lambda: Model())  # dropped at once
    gc.collect()
    assert ctx.models()[0].refcount == 0
    ctx.evict("g@cpu")


def test_a_failing_loader_raises_with_its_cause(ctx):
    def load():
        raise FileNotFoundError("weights.bin")

    with pytest.raises(rm_plugin.LoaderFailedError) as caught:
        ctx.get_or_load("f@cpu", load)
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert ctx.metrics().load_failures == 1
    with ctx.get_or_load("f@cpu", lambda: "second try") as handle:
        assert handle.model == "second try"


def test_node_scope_buffer_is_shared_and_read_only(config):
    config = dict(config, **{"registry.scope": "node"})
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        def load(request):
            buffer = request.alloc(4096)
            buffer.numpy("float32")[:] = np.arange(1024, dtype=np.float32)
            buffer.memoryview[0:4] = np.float32(7).tobytes()

        with ctx.get_or_load("w@cpu", load) as handle:
            assert handle.is_buffer and handle.nbytes == 4096
            weights = handle.numpy("float32")
            assert weights[0] == 7 and weights[1023] == 1023
            assert not weights.flags.writeable
            with pytest.raises(ValueError):
                weights.flags.writeable = True
            matrix = handle.numpy("float32", shape=(4, 256), offset=0)
            assert matrix.shape == (4, 256) and matrix[3, 255] == 1023
            assert bytes(handle.model[4:8]) == np.float32(1).tobytes()
        # The array holds its own reference: still readable after close.
        assert weights.sum() == np.arange(1024).sum() - 0 + 7
        del weights, matrix
        gc.collect()
        ctx.evict("w@cpu")


def test_node_scope_needs_a_buffer(config):
    config = dict(config, **{"registry.scope": "node"})
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        with pytest.raises(rm_plugin.NotShareableError):
            ctx.get_or_load("obj@cpu", lambda: Model())


def test_torch_view_of_weights(config):
    torch = pytest.importorskip("torch")
    config = dict(config, **{"registry.scope": "node"})
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        def load(request):
            request.alloc(64).numpy("float32")[:] = np.arange(16, dtype=np.float32)

        with ctx.get_or_load("t@cpu", load) as handle:
            tensor = handle.torch("float32", shape=(4, 4))
        assert tensor.dtype == torch.float32 and float(tensor.sum()) == 120.0
        del tensor
        gc.collect()
        ctx.evict("t@cpu")
