#!/usr/bin/env python3
"""A 3-process Python pipeline over rm_plugin: source -> transform -> sink.

Each process calls get_or_load() on the same model in node scope (one copy
of the weights on the machine, mapped read-only by all three), and frames
pass between the processes as shared-memory tensors: a 200-byte descriptor
goes through a pipe, the receiver imports a zero-copy numpy view.

With --compare (the default) it runs the same pipeline a second time with a
private copy of the weights in each process, and prints the sum of the
three processes' Pss for both runs.

    REMOTEMEDIA_PLUGIN_DIR=build python3 bindings/python/examples/pipeline.py
"""

import argparse
import multiprocessing
import os
import sys
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import rm_plugin  # noqa: E402

KEY = "demo-weights@cpu"
FRAME_SHAPE = (80, 256)  # a mel spectrogram chunk, 80 bands


def pss_kib(pid, segment=None):
    """Pss of a process in KiB, or of its mappings whose path contains
    `segment`."""
    total, inside = 0, segment is None
    with open("/proc/%d/smaps" % pid) as smaps:
        for line in smaps:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:
                inside = segment is None or (len(fields) >= 6 and segment in fields[5])
            elif inside and line.startswith("Pss:"):
                total += int(fields[1])
    return total


def fill_weights(array):
    """The 'model': deterministic weights (stands in for reading a file)."""
    array.view(np.uint32)[:] = np.arange(array.size, dtype=np.uint32) % 1000
    array[:] = array.view(np.uint32) / np.float32(1000.0)


def get_weights(ctx, mode, mib):
    """(handle or None, float32 weights): node scope, or a private copy."""
    count = (mib << 20) // 4
    if mode == "private":
        weights = np.empty(count, dtype=np.float32)
        fill_weights(weights)
        return None, weights

    def load(request):
        fill_weights(request.alloc(count * 4).numpy("float32"))

    handle = ctx.get_or_load(KEY, load)
    return handle, handle.numpy("float32")


def stage(name, config, mode, mib, frames, inbox, outbox, control):
    """One pipeline process. source: makes frames; transform: projects
    them through the weights; sink: checks them."""
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        handle, weights = get_weights(ctx, mode, mib)
        weights.sum()  # read every page, as a forward pass would
        projection = weights[: 256 * 256].reshape(256, 256)
        for index in range(frames):
            if name == "source":
                frame = ctx.allocate(FRAME_SHAPE, "float32", session=index)
                frame.numpy()[:] = index
                outbox.send_bytes(frame.export())
                outbox.recv()  # the transform imported it: release ours
                frame.close()
            elif name == "transform":
                with ctx.import_tensor(inbox.recv_bytes()) as view:
                    result = ctx.allocate(FRAME_SHAPE, "float32", session=index)
                    np.matmul(view.numpy(), projection, out=result.numpy())
                inbox.send(b"")
                outbox.send_bytes(result.export())
                outbox.recv()
                result.close()
            else:
                with ctx.import_tensor(inbox.recv_bytes()) as view:
                    expected = index * projection.sum(axis=0)
                    assert np.allclose(view.numpy()[0], expected, rtol=1e-4), index
                inbox.send(b"")
        control.send(os.getpid())
        control.recv()  # measured while all three hold the model
        del weights, projection
        if handle is not None:
            handle.close()


def run(mode, mib, frames):
    """Runs the pipeline; returns (total Pss KiB, weights Pss KiB, seconds)."""
    namespace = "pipe-" + uuid.uuid4().hex[:8]
    config = {"registry.scope": "node", "registry.namespace": namespace,
              "shm.namespace": namespace}
    spawn = multiprocessing.get_context("spawn")
    source_out, transform_in = spawn.Pipe()
    transform_out, sink_in = spawn.Pipe()
    controls, processes = [], []
    started = time.monotonic()
    for name, inbox, outbox in (("source", None, source_out),
                                ("transform", transform_in, transform_out),
                                ("sink", sink_in, None)):
        parent, child = spawn.Pipe()
        process = spawn.Process(target=stage, args=(name, config, mode, mib, frames,
                                                    inbox, outbox, child))
        process.start()
        controls.append(parent)
        processes.append(process)
    pids = [control.recv() for control in controls]
    elapsed = time.monotonic() - started
    segment = "rmreg." if mode == "node" else None
    total = sum(pss_kib(pid) for pid in pids)
    model = sum(pss_kib(pid, segment) for pid in pids) if segment else None
    for control in controls:
        control.send(b"")
    for process in processes:
        process.join()
    if any(process.exitcode for process in processes):
        raise SystemExit("a stage failed")
    if mode == "node":
        with rm_plugin.Context(config, ignore_env=True) as ctx:
            ctx.evict(KEY)  # leave nothing in /dev/shm
    return total, model, elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-mib", type=int, default=256)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--mode", choices=["node", "private", "compare"], default="compare")
    args = parser.parse_args()
    modes = ["node", "private"] if args.mode == "compare" else [args.mode]
    print("3 processes, model %d MiB, %d frames %s float32" % (
        args.model_mib, args.frames, FRAME_SHAPE))
    print("%-28s %16s %18s %10s" % ("weights", "sum of Pss (MiB)", "of which weights", "run (s)"))
    for mode in modes:
        total, model, elapsed = run(mode, args.model_mib, args.frames)
        label = {"node": "node scope (get_or_load)", "private": "private copy per process"}[mode]
        print("%-28s %16.1f %18s %10.2f" % (label, total / 1024.0,
                                          "%.1f" % (model / 1024.0) if model is not None else "-",
                                          elapsed))


if __name__ == "__main__":
    main()
