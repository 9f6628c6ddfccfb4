"""Across real processes (multiprocessing, spawn): a frame handoff with
numpy, and a node-scope model shared by three Python processes."""

import gc
import multiprocessing

import numpy as np

import rm_plugin
import peers

spawn = multiprocessing.get_context("spawn")


def test_frames_cross_processes_without_copies(config, ctx):
    parent, child = spawn.Pipe()
    frames = 20
    peer = spawn.Process(target=peers.consume_frames, args=(config, child, frames))
    peer.start()
    try:
        for index in range(frames):
            with ctx.allocate((80, 3000), "float32", session=index) as frame:
                frame.numpy()[:] = index
                parent.send_bytes(frame.export())
                # The descriptor names the tensor; the handle stays open
                # until the peer acknowledges.
                first, total, writable = parent.recv()
                assert (first, total, writable) == (index, index * 240000.0, False)
    finally:
        peer.join(60)
    assert peer.exitcode == 0
    stats = ctx.pool_stats()
    assert stats.live_tensors == 0 and stats.remote_releases + stats.frees >= frames


def test_node_scope_model_is_loaded_once_and_shared(config):
    config = dict(config, **{"registry.scope": "node"})
    nbytes = 32 << 20
    pipes, processes = [], []
    for _ in range(3):
        parent, child = spawn.Pipe()
        process = spawn.Process(target=peers.node_model_user,
                                args=(config, "weights@cpu", nbytes, child))
        process.start()
        pipes.append(parent)
        processes.append(process)
    try:
        reports = [pipe.recv() for pipe in pipes]
        # Measured while all three map the model at once.
        for report in reports:
            report["pss_model_kib"] = peers.pss_kib(report["pid"], "rmreg.")
        for pipe in pipes:
            pipe.send("done")
        metrics = [pipe.recv() for pipe in pipes]
    finally:
        for process in processes:
            process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert sum(r["loaded_here"] for r in reports) == 1, reports
    assert len({r["checksum"] for r in reports}) == 1
    assert sum(m["loads"] for m in metrics) == 1
    assert sum(m["attaches"] for m in metrics) >= 1
    # Three processes map the same pages: their Pss of the model adds up
    # to one copy (32 MiB), not three.
    total = sum(r["pss_model_kib"] for r in reports)
    assert (nbytes >> 10) * 0.9 <= total <= (nbytes >> 10) * 1.1, reports
    with rm_plugin.Context(config, ignore_env=True) as ctx:
        ctx.evict("weights@cpu")
    gc.collect()
