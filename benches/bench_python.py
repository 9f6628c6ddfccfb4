#!/usr/bin/env python3
"""Frame handoff between two Python processes: rm_plugin's Python package
against the baselines a Python node would otherwise use, in the same run.

One handoff: the producer has a frame in shared memory and tells the
consumer; the consumer gets a numpy view of it (no copy), reads an element,
lets go of it and acknowledges. Timed is the whole round trip, producer
side, per frame; medians over repeated batches.

  rm_plugin               allocate a tensor per frame, send its 200-byte
                          descriptor, consumer imports / reads / releases
  shared_memory in place  one multiprocessing.shared_memory segment mapped
                          by both up front; only an offset is sent
  torch.multiprocessing   a share_memory_() tensor per frame through
                          torch.multiprocessing's Queue (skipped without torch)
  pipe copy               the frame's bytes through the pipe
  notification only       a 1-byte message and its ack: the floor

Last, the package's own cost without a process switch: the same round with
two contexts of one process.

Every method notifies over the same kind of pipe (multiprocessing.Pipe),
except torch.multiprocessing, which uses its own queue.

    REMOTEMEDIA_PLUGIN_DIR=build python3 benches/bench_python.py [--json]
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "bindings", "python"))
import rm_plugin  # noqa: E402

SIZES = {"4 KiB": (1024,), "960 KB (80x3000 f32)": (80, 3000), "100 MiB": (25 * 1024 * 1024,)}


def consumer(method, shape, config, connection, queue, count):
    """The receiving process: gets `count` frames by `method`."""
    if method == "rm_plugin":
        with rm_plugin.Context(config, ignore_env=True) as ctx:
            for _ in range(count):
                with ctx.import_tensor(connection.recv_bytes()) as view:
                    array = view.numpy()
                    value = array.flat[0]
                    del array
                connection.send_bytes(b"k" if value >= 0 else b"?")
    elif method == "shared_memory":
        from multiprocessing import shared_memory
        segment = shared_memory.SharedMemory(name=config["segment"])
        items = int(np.prod(shape))
        for _ in range(count):
            offset = int(connection.recv_bytes())
            array = np.ndarray(shape, np.float32, buffer=segment.buf, offset=offset * 4 * items)
            value = array.flat[0]
            del array
            connection.send_bytes(b"k" if value >= 0 else b"?")
        segment.close()
    elif method == "torch.multiprocessing":
        for _ in range(count):
            tensor = queue.get()
            array = tensor.numpy()
            value = array.flat[0]
            del array, tensor
            connection.send_bytes(b"k" if value >= 0 else b"?")
    elif method == "pipe copy":
        for _ in range(count):
            array = np.frombuffer(connection.recv_bytes(), dtype=np.float32).reshape(shape)
            value = array.flat[0]
            connection.send_bytes(b"k" if value >= 0 else b"?")
    else:
        for _ in range(count):
            connection.recv_bytes()
            connection.send_bytes(b"k")


def measure(method, shape, batches, per_batch, mp_context):
    """Median and quartiles of the round trip (µs) over `batches` batches."""
    count = batches * per_batch + per_batch  # a first batch to warm up
    parent, child = mp_context.Pipe()
    queue = None
    config = {}
    segment = None
    namespace = "bench-py-" + uuid.uuid4().hex[:8]
    items = int(np.prod(shape))
    if method == "rm_plugin":
        config = {"shm.namespace": namespace, "shm.pool_bytes": "1G"}
    elif method == "shared_memory":
        from multiprocessing import shared_memory
        segment = shared_memory.SharedMemory(create=True, size=2 * 4 * items)
        config = {"segment": segment.name}
    elif method == "torch.multiprocessing":
        queue = mp_context.Queue()
    peer = mp_context.Process(target=consumer, args=(method, shape, config, child, queue, count))
    peer.start()
    times = []
    try:
        ctx = rm_plugin.Context(config, ignore_env=True) if method == "rm_plugin" else None
        source = np.ones(shape, np.float32)
        for index in range(count):
            start = time.perf_counter_ns()
            if method == "rm_plugin":
                frame = ctx.allocate(shape, "float32", session=1)
                frame.numpy().flat[0] = index
                parent.send_bytes(frame.export())
                parent.recv_bytes()
                frame.close()
            elif method == "shared_memory":
                slot = index % 2
                np.ndarray(shape, np.float32, buffer=segment.buf,
                           offset=slot * 4 * items).flat[0] = index
                parent.send_bytes(b"%d" % slot)
                parent.recv_bytes()
            elif method == "torch.multiprocessing":
                import torch
                tensor = torch.empty(shape, dtype=torch.float32).share_memory_()
                tensor.view(-1)[0] = index
                queue.put(tensor)
                parent.recv_bytes()
                del tensor
            elif method == "pipe copy":
                source.flat[0] = index
                parent.send_bytes(source)
                parent.recv_bytes()
            else:
                parent.send_bytes(b"n")
                parent.recv_bytes()
            times.append(time.perf_counter_ns() - start)
    finally:
        peer.join(120)
        if ctx is not None:
            ctx.close()
        if segment is not None:
            segment.close()
            segment.unlink()
    medians = [statistics.median(times[b * per_batch:(b + 1) * per_batch]) / 1000.0
               for b in range(1, batches + 1)]
    quartiles = statistics.quantiles(medians, n=4) if len(medians) > 1 else medians * 3
    return statistics.median(medians), quartiles[0], quartiles[-1]


def in_process_round(batches, per_batch):
    """The Python package's own cost, without a process switch: one 4 KiB
    frame allocated, written through numpy, exported, imported by a second
    context of this process, read through numpy and released by both.
    Median and quartiles (µs) of the batch medians."""
    namespace = "bench-py-" + uuid.uuid4().hex[:8]
    config = {"shm.namespace": namespace}
    with rm_plugin.Context(config, ignore_env=True) as producer, \
            rm_plugin.Context(config, ignore_env=True) as consumer:
        def one(index):
            frame = producer.allocate((1024,), "float32", session=1)
            frame.numpy().flat[0] = index
            descriptor = frame.export()
            with consumer.import_tensor(descriptor) as view:
                array = view.numpy()
                value = array.flat[0]
                del array
            frame.close()
            return value
        for index in range(per_batch):  # warm-up
            one(index)
        medians = []
        for _ in range(batches):
            times = []
            for index in range(per_batch):
                start = time.perf_counter_ns()
                one(index)
                times.append(time.perf_counter_ns() - start)
            medians.append(statistics.median(times) / 1000.0)
    quartiles = statistics.quantiles(medians, n=4) if len(medians) > 1 else medians * 3
    return statistics.median(medians), quartiles[0], quartiles[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per figure")
    parser.add_argument("--batches", type=int, default=9)
    parser.add_argument("--per-batch", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.per_batch = 3, 10
    methods = ["rm_plugin", "shared_memory", "torch.multiprocessing", "pipe copy",
               "notification only"]
    try:
        import torch  # noqa: F401
        import torch.multiprocessing as tmp
        mp_context = tmp.get_context("spawn")
    except ImportError:
        methods.remove("torch.multiprocessing")
        mp_context = multiprocessing.get_context("spawn")
    if not args.json:
        print("handoff round trip between two Python processes, µs: median of %d batch "
              "medians (%d frames each) [q1, q3]" % (args.batches, args.per_batch))
        print("%-22s %-24s %12s %22s %10s" % ("frame", "method", "median µs", "[q1, q3]",
                                              "x rm_plugin"))
    for label, shape in SIZES.items():
        results = {}
        for method in methods:
            per_batch = args.per_batch
            if shape[0] * 4 > (64 << 20) and method in ("pipe copy", "torch.multiprocessing"):
                per_batch = max(2, per_batch // 20)  # ~0.1 s a frame: fewer frames
            results[method] = measure(method, shape, args.batches, per_batch, mp_context)
        base = results["rm_plugin"][0]
        for method, (median, q1, q3) in results.items():
            if args.json:
                print(json.dumps({"bench": "python_handoff", "frame": label, "method": method,
                                  "median_us": round(median, 2), "q1_us": round(q1, 2),
                                  "q3_us": round(q3, 2),
                                  "ratio_to_rm_plugin": round(median / base, 2)}))
            else:
                print("%-22s %-24s %12.1f %22s %10.2f" % (
                    label, method, median, "[%.1f, %.1f]" % (q1, q3), median / base))


    median, q1, q3 = in_process_round(args.batches, args.per_batch)
    if args.json:
        print(json.dumps({"bench": "python_in_process_round", "frame": "4 KiB",
                          "median_us": round(median, 2), "q1_us": round(q1, 2),
                          "q3_us": round(q3, 2)}))
    else:
        print("in one process (two contexts, no process switch): 4 KiB round %.1f µs "
              "[%.1f, %.1f]" % (median, q1, q3))


if __name__ == "__main__":
    main()
