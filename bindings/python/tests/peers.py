"""Functions run in other processes by the multi-process tests (spawned, so
that each peer is a fresh interpreter with its own contexts, as a real node
process would be)."""

import os

import numpy as np

import rm_plugin


def pss_kib(pid, segment_prefix=None):
    """The process's Pss in KiB (smaps_rollup), or only that of the mappings
    whose path contains `segment_prefix`."""
    if segment_prefix is None:
        with open("/proc/%d/smaps_rollup" % pid) as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        return 0
    total, inside = 0, False
    with open("/proc/%d/smaps" % pid) as smaps:
        for line in smaps:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:
                inside = len(fields) >= 6 and segment_prefix in fields[5]
            elif inside and line.startswith("Pss:"):
                total += int(fields[1])
    return total


def consume_frames(config, connection, count):
    """Imports `count` descriptors, checks each frame, acknowledges."""
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        for _ in range(count):
            descriptor = connection.recv_bytes()
            with ctx.import_tensor(descriptor) as view:
                frame = view.numpy()
                connection.send((int(frame[0, 0]), float(frame.sum()), view.writable))
                del frame


def node_model_user(config, key, nbytes, connection):
    """Gets the node-scope model, reports its first values and Pss, then
    waits to be told to finish (so that every process maps it at once)."""
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        def load(request):
            weights = request.alloc(nbytes).numpy("uint8")
            weights[:] = np.arange(nbytes, dtype=np.uint64).astype(np.uint8)
            request_pid[0] = os.getpid()

        request_pid = [0]
        with ctx.get_or_load(key, load) as handle:
            weights = handle.numpy("uint8")
            checksum = int(weights[: 1 << 20].sum())
            weights.sum()  # touch every page, as inference would
            connection.send({"loaded_here": request_pid[0] == os.getpid(),
                             "checksum": checksum, "pid": os.getpid()})
            connection.recv()
            del weights
        connection.send(ctx.metrics().as_dict())
