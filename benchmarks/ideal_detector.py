"""Ceiling on the pixel ROC AUC of hot and dead pixels under the simulator's truth rule.

A hot pixel (HP) or a dead pixel (DP) is one pixel (a fifth of them come in groups of 2 to 4). The
truth rule labels it where the charge it adds or removes exceeds one local noise sigma
(``k_sigma = 1``). Picture an *ideal* detector that knows the noise-free scene
without the defect exactly, and sees only the pixel. Its best statistic is the pixel's residual in
units of its noise, ``z = (x - M) / sigma``. Under "no defect" ``z ~ N(0, 1)``; under "defect of
signal-to-noise s" ``z ~ N(s, 1)`` (``-s`` for a dead pixel, ranked by ``-z``). The likelihood ratio
of the mixture over ``s > 0`` rises with ``z``, so ranking by ``z`` is optimal. Its ROC AUC is

    AUC* = mean over positive pixels i of Phi(s_i / sqrt(2)).

No detector of this information beats ``AUC*``. A real network does not know ``M``, and in a
single exposure it cannot tell a hot pixel from a one-pixel cosmic-ray hit. So the reachable AUC
is lower still.

Two caveats make ``AUC*`` a close estimate, not a strict bound. For grouped defects a detector
can pool the neighbours. The noise under "no defect" is slightly lower than ``sigma`` (which
includes the defect's own shot noise), which only matters for bright defects, whose AUC is ~1
anyway.

Frames: those of :mod:`benchmarks.quality` (root seed ``HELDOUT_SEED``, spawn keys ``(i,)``,
2048^2, default class mix), so ``AUC*`` applies to its table. No network is run.

Usage::

    python benchmarks/ideal_detector.py [--frames 24] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from maximask.classes import INDEX

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import FRAME_SHAPE, HELDOUT_SEED, N_FRAMES  # noqa: E402
from results_io import write_json  # noqa: E402

#: Signal-to-noise bins (lower edges) of the per-bin table.
SNR_BINS = (1, 2, 3, 5, 10, 30)


def ideal_auc(snr: np.ndarray) -> float:
    """ROC AUC of the ideal single-pixel detector for positives of signal-to-noise ``snr``.

    Parameters
    ----------
    snr : ndarray
        Signal-to-noise (> 0) of each positive pixel: the defect's noise-free charge over the
        pixel's noise.

    Returns
    -------
    float or None
        ``mean(Phi(snr / sqrt(2)))``, with ``Phi`` the standard normal CDF: the probability that
        ``N(s, 1)`` exceeds an independent ``N(0, 1)``, averaged over the positives. None if there
        are none.
    """
    from scipy.special import ndtr

    snr = np.asarray(snr, np.float64).ravel()
    return float(np.mean(ndtr(snr / math.sqrt(2.0)))) if snr.size else None


def dead_pixel_loss(debug: dict, meta: dict) -> np.ndarray:
    """Charge (e-) each pixel lost to the detector's response, noise-free, as the truth rule sees it.

    The expected charge minus the charge after the response, both from the simulator's debug output,
    and resampled as the frame was. Where a dead pixel sits on a dead column, the column's loss is
    included (rare).
    """
    from maximask.sim.detector import resample_shift

    loss = (debug["model"] - debug["charge"]).astype(np.float32)
    if meta.get("resampled"):
        loss = resample_shift(loss, *meta["resample_shift"])
    return loss


def defect_snr(debug: dict, truth: np.ndarray, meta: dict) -> dict:
    """Signal-to-noise of the HP and DP pixels of one simulated frame: the charge the hot pixel adds
    (:func:`dead_pixel_loss` for a dead pixel) over the local noise."""
    sigma = debug["sigma"]
    hp = truth[INDEX["HP"]].astype(bool)
    dp = truth[INDEX["DP"]].astype(bool)
    return {"HP": debug["layers"]["HP"][hp] / sigma[hp] if hp.any() else np.zeros(0),
            "DP": dead_pixel_loss(debug, meta)[dp] / sigma[dp] if dp.any() else np.zeros(0)}


def main(argv=None) -> int:
    from maximask.sim.config import make_config
    from maximask.sim.frame import _simulate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=N_FRAMES)
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)

    cfg = make_config(None)
    snrs = {"HP": [], "DP": []}
    t0 = time.time()
    for i in range(args.frames):
        debug = {}
        rng = np.random.default_rng(np.random.SeedSequence(HELDOUT_SEED, spawn_key=(i,)))
        _, truth, meta = _simulate(FRAME_SHAPE, rng, cfg, debug=debug)
        for c, v in defect_snr(debug, truth, meta).items():
            snrs[c].append(np.asarray(v, np.float64))
    command = "python benchmarks/ideal_detector.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"frames": args.frames, "frame_shape": list(FRAME_SHAPE), "command": command,
              "seeds": f"root seed {HELDOUT_SEED}, spawn_key (i,) (the frames of benchmarks/quality.py)",
              "classes": {}}
    edges = list(SNR_BINS) + [np.inf]
    heads = [f"S/N {lo}-{hi}" if np.isfinite(hi) else f"S/N > {lo}" for lo, hi in zip(edges[:-1], edges[1:])]
    lines = ["| class | positive pixels | ideal AUC | " + " | ".join(heads) + " |",
             "|---|---:|---:|" + "---:|" * len(SNR_BINS)]
    for c, parts in snrs.items():
        s = np.concatenate(parts) if parts else np.zeros(0)
        auc = ideal_auc(s)
        bins = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (s > lo) & (s <= hi)
            bins.append({"snr_min": lo, "snr_max": hi if np.isfinite(hi) else None,
                         "share": float(sel.mean()) if s.size else 0.0,
                         "ideal_auc": ideal_auc(s[sel])})
        result["classes"][c] = {"n_pos": int(s.size), "ideal_auc": auc, "bins": bins}
        cells = [f"{b['share']:.0%} ({b['ideal_auc']:.3f})" if b["ideal_auc"] is not None else "0%"
                 for b in bins]
        shown = "—" if auc is None else f"{auc:.4f}"
        lines.append(f"| {c} | {s.size} | {shown} | " + " | ".join(cells) + " |")
    result["wall_s"] = round(time.time() - t0, 1)
    print("\n".join(lines))
    print(f"({args.frames} frames, {result['wall_s']} s; per S/N bin: the share of the positives, "
          "and their ideal AUC)")
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
