"""Fringe (FR) ROC AUC as a function of the block smoothing's block size.

The shipped network replaces its FR logits by their means over 256 x 256 blocks of the frame
(metadata ``smoothing``; docs/MODEL.md, "Block smoothing"). When that block was chosen among 16,
64, 128 and 256, the gain grew with the block and 256 was the largest tried. This benchmark scores
larger blocks on the same footing. The network runs once per frame as the command runs it, but
without the smoothing. The FR plane is then smoothed here for each block size B, by the same block
means and bilinear interpolation as the engine. B = 0 stands for the whole frame: one block, one
FR logit per frame. The check that matters: B = 256 here reproduces the engine's own smoothed FR
plane on the first frame.

Batches (root seed, frames, side; spawn keys ``(i,)``, the seeds of docs/MODEL.md's validation
batches): V1 20261125 30 x 2048^2, V2 20261126 30 x 2048^2, V3 20261127 40 x 1024^2, and V6
20261169 30 x 2048^2, which no earlier decision used.

Usage::

    python benchmarks/fringe_blocks.py --batches V1 V2 V3 V6 --blocks 256 512 1024 0 --out FILE.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from maximask.classes import INDEX
from maximask.context import BlockSmoothing, add_block_sums, upsample
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, class_metrics
from maximask.network import Network
from maximask.resources import default_net_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_json  # noqa: E402

BATCHES = {
    "V1": (20261125, 30, 2048),
    "V2": (20261126, 30, 2048),
    "V3": (20261127, 40, 1024),
    "V6": (20261169, 30, 2048),
}


def smooth_plane(plane: np.ndarray, block: int) -> np.ndarray:
    """The engine's block smoothing of one plane: means over ``block`` x ``block`` blocks (0: the
    whole frame), interpolated back bilinearly."""
    h, w = plane.shape
    if block == 0:
        return np.full(plane.shape, plane.mean(dtype=np.float64), np.float32)
    counts = BlockSmoothing(block, ()).block_counts(plane.shape)
    sums = np.zeros(counts.shape, np.float64)
    add_block_sums(sums, plane, 0, 0, block)
    return upsample((sums / counts).astype(np.float32)[None], block, slice(0, h), slice(0, w))[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net-dir", default=str(default_net_dir()))
    ap.add_argument("--batches", nargs="+", default=list(BATCHES), choices=list(BATCHES))
    ap.add_argument("--blocks", type=int, nargs="+", default=[256, 512, 1024, 0])
    ap.add_argument("--frames", type=int, default=None, help="first N frames of each batch (default all)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from maximask.sim import simulate_frame

    net = Network(args.net_dir)
    shipped = net.metadata.smoothing
    if not shipped or "FR" not in shipped.get("classes", []):
        raise SystemExit(f"fringe_blocks: error: {args.net_dir}: the network does not smooth FR")
    plain = copy.copy(net)  # the same loaded network, without the smoothing
    plain.metadata = dataclasses.replace(net.metadata, smoothing=None)
    fr = INDEX["FR"]
    results, checked = {}, None
    t0 = time.time()
    for name in args.batches:
        seed, n, side = BATCHES[name]
        n = min(n, args.frames or n)
        hists = {b: ScoreHistogram(1) for b in args.blocks}
        for i in range(n):
            image, truth, _ = simulate_frame((side, side), np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))))
            logits = infer(image, plain, batch_size=1, tile_transform=lambda lg: lg[..., fr].copy())
            if checked is None:
                engine = infer(image, net, batch_size=1, tile_transform=lambda lg: lg[..., fr].copy())
                ours = smooth_plane(logits, int(shipped["block"]))
                checked = float(np.abs(engine - ours).max())
                print(f"check: B = {shipped['block']} here against the engine, max |difference| {checked:.2e}",
                      file=sys.stderr, flush=True)
                if checked > 1e-4:
                    raise SystemExit("fringe_blocks: error: the smoothing here is not the engine's")
            for b in args.blocks:
                hists[b].add(smooth_plane(logits, b)[None], truth[fr : fr + 1])
        results[name] = {}
        for b in args.blocks:
            m = class_metrics(hists[b].pos[0], hists[b].neg[0], hists[b].edges)
            results[name][str(b)] = {"auc": m["auc"], "tpr_at_fpr_1e-3": m["tpr_at_fpr_1e-3"], "ap": m["ap"],
                                     "best_f1": m["best_f1"], "n_pos": m["n_pos"]}
        line = ", ".join(f"B={b or 'frame'} {results[name][str(b)]['auc']:.4f}" for b in args.blocks)
        print(f"{name} ({n} frames of {side}^2, {time.time() - t0:.0f} s): FR AUC {line}", flush=True)
    write_json(args.out, {"net_dir": args.net_dir, "model_id": net.model_id, "check_max_abs": checked,
                          "batches": {k: BATCHES[k] for k in args.batches}, "frames": args.frames,
                          "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
