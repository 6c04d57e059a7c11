"""Can the normalisation's background map alone tell bright background (BBG) from sky?

For simulated frames that contain BBG, the interpolated mesh background of
:func:`maximask.normalize.background_maps`, relative to the frame's median background and in units of
the median noise, is used as a BBG score, and its ROC AUC is measured against the BBG pixels whose
added signal exceeds S times the local noise (S = 0.25, the truth rule, up to 5), on a random
sample of 20 000 pixels per frame. A high AUC would make that map a useful second network input.

Frames: 1024^2, default mix, ``default_rng(SeedSequence(778, spawn_key=(i,)))`` for i < 60, the
first ``--frames`` that contain BBG (seeds used by no training run).

Usage::

    python benchmarks/bbg_background_map.py [--frames 14]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from maximask.normalize import background_maps
from maxitrack.train import roc_auc


def main(argv=None) -> int:
    from maximask.sim.config import make_config
    from maximask.sim.frame import _simulate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=14)
    args = p.parse_args(argv)
    cfg = make_config(None)
    pick = np.random.default_rng(5)
    scores, snrs = [], []
    for i in range(60):
        debug = {}
        image, _, _ = _simulate((1024, 1024), np.random.default_rng(np.random.SeedSequence(778, spawn_key=(i,))),
                                cfg, debug=debug)
        if "BBG" not in debug["layers"]:
            continue
        bg, sg = background_maps(image)
        sel = pick.choice(image.size, 20000, replace=False)
        scores.append(((bg - np.median(bg)) / np.median(sg)).ravel()[sel])
        snrs.append((debug["layers"]["BBG"] / debug["sigma"]).ravel()[sel])
        if len(scores) == args.frames:
            break
    score, snr = np.concatenate(scores), np.concatenate(snrs)
    print(f"{len(scores)} frames with BBG; BBG truth (S/N > 0.25): {np.mean(snr > 0.25):.0%} of their pixels, "
          f"median S/N of those {np.median(snr[snr > 0.25]):.2f}")
    print("| positives: BBG S/N above | share of pixels | AUC of the background map |\n|---:|---:|---:|")
    for s in (0.25, 0.5, 1, 2, 3, 5):
        y = snr > s
        print(f"| {s} | {y.mean():.3f} | {roc_auc(score, y):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
