"""Held-out ROC AUC of a maximask network as a function of the contaminant's strength.

The truth rule labels a pixel where a contaminant adds more than ``k_sigma`` (1) times the local
noise (a quarter of it for the diffuse classes NEB and BBG). Many labelled pixels are therefore at
the noise level, where no detector can rank them above clean pixels, and the pixel ROC AUC of
:mod:`benchmarks.quality` mixes two questions: are the faint pixels found, and are the obvious ones?
This benchmark separates them: for each class whose truth comes from an added signal (CR, HCL, HP, P,
TRL, SP, NEB, BBG) or a lost one (DP), the AUC of the positive pixels whose signal exceeds S times
the local noise (S = 0, 3, 10, 30) against *all* negative pixels of that class.

Frames: 1024^2, the simulator's default mix, root seed ``quality.HELDOUT_SEED`` with spawn keys
``(1, i)`` (disjoint from ``quality.py``'s ``(i,)`` and from every training stream). The network
runs as the command runs it (:func:`maximask.engine.infer`). The signal-to-noise of each pixel is
the contaminant's noise-free layer over the simulator's per-pixel noise, read from the simulator's
debug output (``maximask.sim.frame._simulate(debug=...)``).

Usage::

    python benchmarks/quality_by_strength.py [--net-dir DIR] [--frames 16] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from maximask.classes import INDEX
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, class_metrics
from maximask.network import Network
from maximask.resources import default_net_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ideal_detector import dead_pixel_loss  # noqa: E402
from quality import HELDOUT_SEED  # noqa: E402
from results_io import write_json  # noqa: E402

CLASSES = ("CR", "HCL", "HP", "DP", "P", "TRL", "SP", "NEB", "BBG")
STRENGTHS = (0, 3, 10, 30)
SHAPE = (1024, 1024)


def main(argv=None) -> int:
    from maximask.sim.config import make_config
    from maximask.sim.frame import _simulate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net-dir", default=str(default_net_dir()))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--out", default=None, help="JSON results")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    net = Network(args.net_dir, num_threads=args.threads)
    cfg = make_config(None)
    # one histogram per class and strength: its positives are the class's pixels above that S/N,
    # its negatives all of the class's negative pixels
    hists = {c: [ScoreHistogram(1) for _ in STRENGTHS] for c in CLASSES}
    t0 = time.time()
    for i in range(args.frames):
        debug = {}
        rng = np.random.default_rng(np.random.SeedSequence(HELDOUT_SEED, spawn_key=(1, i)))
        image, truth, meta = _simulate(SHAPE, rng, cfg, debug=debug)
        logits = infer(image, net, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))
        for c in CLASSES:
            j = INDEX[c]
            t = truth[j].astype(bool)
            if c == "DP":
                snr = dead_pixel_loss(debug, meta) / debug["sigma"]
            elif c in debug["layers"]:
                snr = debug["layers"][c] / debug["sigma"]
            else:
                snr = np.zeros(t.shape, np.float32)
            for s, hist in zip(STRENGTHS, hists[c]):
                hist.add(logits[j : j + 1], truth[j : j + 1], valid=~t | (snr > s))
    result = {"net_dir": args.net_dir, "model_id": net.model_id, "frames": args.frames, "frame_shape": list(SHAPE),
              "seeds": f"root seed {HELDOUT_SEED}, spawn_key (1, i)", "strengths_sigma": list(STRENGTHS),
              "command": "python benchmarks/quality_by_strength.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "classes": {}}
    head = "| class | positive pixels | " + " | ".join(f"AUC S/N > {s}" if s else "AUC all" for s in STRENGTHS) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(STRENGTHS)]
    for c in CLASSES:
        n_all = int(hists[c][0].pos.sum())
        row = {}
        cells = []
        for s, hist in zip(STRENGTHS, hists[c]):
            m = class_metrics(hist.pos[0], hist.neg[0], hist.edges)
            row[str(s)] = {"n_pos": m["n_pos"], "auc": m["auc"]}
            frac = m["n_pos"] / n_all if n_all else 0.0
            cells.append("—" if m["auc"] is None or m["n_pos"] < 50 else f"{m['auc']:.4f} ({frac:.0%})")
        result["classes"][c] = row
        lines.append(f"| {c} | {n_all} | " + " | ".join(cells) + " |")
    result["wall_s"] = round(time.time() - t0, 1)
    table = "\n".join(lines) + "\n"
    print(table)
    print(f"({args.frames} frames, {result['wall_s']} s; in brackets: the share of the class's positive pixels)")
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
