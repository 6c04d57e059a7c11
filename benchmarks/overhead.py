"""Time spent outside the network on a 4096 x 4096 frame: normalisation + tiling + stitching.

The network is replaced by a stub that returns precomputed logits (random, fixed) for a batch, so
that everything the engine does around the network is measured: normalisation, cutting tiles
(gather), the per-tile transform (prior shift + thresholds from ``maximask.postprocess``, or the
engine's sigmoid) and writing the cores into the output. "peak MB" is the peak of memory traced by
``tracemalloc`` during one call (numpy arrays included; the stub's logits excluded: with a real
network, add the batch of logits, B x T x T x 14 x 4 bytes). Reading and writing FITS are not included (see the CLI benchmarks).

Geometry defaults to the production architecture (``maximask.model.Architecture``: margin 128,
alignment 32) with 1024-px tiles; ``--tile`` changes it. The stub's own cost (returning an array)
is measured and subtracted.

Run::

    nice -n 10 python benchmarks/overhead.py [--size 4096] [--tile 1024] [--batch 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from maximask.classes import ABBRS, N_CLASSES
from maximask.engine import infer
from maximask.network import NetworkMetadata
from maximask.normalize import DEFAULT_NORMALISATION, normalize_image
from maximask.tiling import plan_tiles


class StubNetwork:
    """Stands in for :class:`maximask.network.Network`: fixed logits, no computation."""

    def __init__(self, tile, margin, multiple, seed=0):
        self.metadata = NetworkMetadata(
            name="maximask",
            classes=list(ABBRS),
            training_priors=[0.01] * (N_CLASSES - 1) + [0.9],
            margin=margin,
            tile_size=tile,
            size_multiple=multiple,
            normalisation=dict(DEFAULT_NORMALISATION),
        )
        rng = np.random.default_rng(seed)
        self._logits = rng.normal(-4.0, 3.0, (1, tile, tile, N_CLASSES)).astype(np.float32)
        self.calls = 0

    def predict_logits(self, batch, copy=True, margin=0):
        self.calls += 1
        return np.broadcast_to(self._logits, (batch.shape[0],) + self._logits.shape[1:])


def frame(n, seed=1):
    rng = np.random.default_rng(seed)
    img = rng.normal(1000.0, 10.0, (n, n)).astype(np.float32)
    img[rng.integers(0, n, 5000), rng.integers(0, n, 5000)] = 60000.0
    img[100:140, 2000:2600] = np.nan
    return img


def transforms():
    from maximask.postprocess import make_plan

    flags = np.ones(N_CLASSES, bool)
    train = [0.01] * (N_CLASSES - 1) + [0.9]
    priors = np.full(N_CLASSES, 0.02)
    thresh = np.full(N_CLASSES, 0.5)
    def noop(logits, _res={}):  # engine alone: gather + stitch of a constant (h, w) result
        h, w = logits.shape[:2]
        if (h, w) not in _res:
            _res[(h, w)] = np.zeros((h, w), np.uint8)
        return _res[(h, w)]

    return {
        "no-op transform (uint8 plane)": noop,
        "masks (uint8 14 planes, CLI default)": make_plan(ABBRS, flags, train, priors, thresh),
        "single mask (int16)": make_plan(ABBRS, flags, train, priors, thresh, single_mask=True),
        "probabilities (float32 14 planes)": None,  # engine default: sigmoid
    }


def best_of(fn, repeat):
    best = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        t = (time.perf_counter() - t0, time.process_time() - c0)
        best = t if best is None or t[0] < best[0] else best
    return best


def main():
    from maximask.model import Architecture, required_margin

    arch = Architecture()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--margin", type=int, default=required_margin(arch))
    ap.add_argument("--multiple", type=int, default=arch.size_multiple)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    net = StubNetwork(args.tile, args.margin, args.multiple)
    img = frame(args.size)
    plan = plan_tiles(img.shape, args.tile, args.margin, args.multiple)
    computed = len(plan) * args.tile**2 / img.size
    print(
        f"frame {args.size}^2, tile {args.tile} margin {args.margin} multiple {args.multiple}: "
        f"{len(plan)} tiles, {computed:.2f} network pixels per frame pixel; batch {args.batch}; "
        f"cores {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}"
    )
    normalize_image(img[:600, :600])  # warm-up: imports (scipy) are not part of the per-frame cost
    stub = best_of(lambda: [net.predict_logits(np.empty((args.batch, 1, 1, 1))) for _ in plan.batches(args.batch)], 3)
    norm = best_of(lambda: normalize_image(img), args.repeat)
    print(f"{'outside the network (stub cost subtracted)':44s} {'wall s':>8s} {'cpu s':>8s} {'peak MB':>8s}")
    print(f"{'normalisation alone':44s} {norm[0]:8.3f} {norm[1]:8.3f}")
    for name, tf in transforms().items():
        out_holder = []

        def run():
            out_holder.clear()
            out_holder.append(infer(img, net, batch_size=args.batch, tile_transform=tf))

        wall, cpu = best_of(run, args.repeat)
        out_holder.clear()
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        out = out_holder[0]
        print(
            f"{'engine, ' + name:44s} {wall - stub[0]:8.3f} {cpu - stub[1]:8.3f} {peak:8.0f}"
            f"   (out {out.dtype} {out.shape}, {out.nbytes / 2**20:.0f} MB)"
        )


if __name__ == "__main__":
    main()
