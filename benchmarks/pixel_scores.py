"""Shared by the fits and checks of the scores the engine adds to a class's logit (``hot_columns.py``,
``hot_pixels.py``): simulated batches, the network with and without its score, a weighted logistic
fit on sampled pixels, and the check of a score against the network alone."""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
from scipy.optimize import minimize

from maximask.config import read_priors, read_thresholds
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, all_metrics
from maximask.resources import default_config_dir
from quality import mask_scores
from results_io import write_json

#: Share of the other pixels a fit samples (each then weighs 1 / NEGATIVE_SAMPLE).
NEGATIVE_SAMPLE = 0.02


def parse_arguments(argv, description, check_batch, classes=None):
    """The options the scripts take: ``--net-dir``, ``--fit``, ``--write-metadata``,
    ``--thresh-file``, ``--frames`` (of the check batch) and ``--out``; with ``classes``, also
    ``--classes`` (those whose terms ``--write-metadata`` stores; default all of them)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--net-dir", default=None)
    p.add_argument("--fit", action="store_true",
                   help=f"fit slope and offset (default: score batch {check_batch[0]})")
    p.add_argument("--write-metadata", action="store_true",
                   help="with --fit, store the score in the network's metadata.json")
    p.add_argument("--thresh-file", default=str(default_config_dir() / "classes.thresh"))
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames of batch {check_batch[0]} (default {check_batch[2]})")
    p.add_argument("--out", required=True)
    if classes:
        p.add_argument("--classes", nargs="+", choices=list(classes), default=list(classes),
                       help="with --write-metadata, store only these classes' terms")
    args = p.parse_args(argv)
    args.check_batch = check_batch[:2] + (args.frames or check_batch[2],) + check_batch[3:]
    return args


def frames(seed, n, side):
    """Yield (image, truth) for the frames of a batch (spawn keys (i,), default class mix)."""
    from maximask.sim import simulate_frame

    for seq in np.random.SeedSequence(seed).spawn(n):
        image, truth, _ = simulate_frame((side, side), np.random.default_rng(seq))
        yield image, truth


def logits(network, image):
    """The engine's logits of a frame, shape (C, H, W)."""
    return infer(image.copy(), network, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))


def without(network, entry, key=None):
    """A copy of ``network`` without the metadata entry ``entry``, or, with ``key``, without that
    key of the entry (shares the runtimes)."""
    other = copy.copy(network)
    meta = copy.copy(network.metadata)
    value = getattr(meta, entry)
    if key is None:
        value = None
    elif value:
        value = {k: v for k, v in value.items() if k != key}
    setattr(meta, entry, value)
    other.metadata = meta
    return other


def finish(args, result, t0):
    """Record the wall time, write ``result`` to ``args.out`` and print it."""
    result["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


def sample(truth_plane, always, rng):
    """Pixels a fit keeps: the positives, those in ``always``, and a share NEGATIVE_SAMPLE of the
    others; returns (mask, weight of each kept pixel)."""
    t = truth_plane.ravel() > 0
    certain = t | always.ravel()
    pick = certain | (rng.random(t.size) < NEGATIVE_SAMPLE)
    return pick, np.where(certain[pick], 1.0, 1.0 / NEGATIVE_SAMPLE)


def fit_logistic(combined, t, weight, start):
    """Slope and offset minimising the weighted log-loss of ``combined((slope, offset))`` (logits)
    against ``t``, rounded to 4 decimals as the metadata stores them, with the loss and the
    sample's size."""

    def loss(params):
        lg = combined(params)
        return float(np.sum(weight * (np.logaddexp(0, lg) - t * lg)) / weight.sum())

    result = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-9})
    return {"slope": round(float(result.x[0]), 4), "offset": round(float(result.x[1]), 4),
            "loss": result.fun, "pixels": int(t.size), "positives": int(t.sum())}


def check(network, plain, name, batch, thresh_file, clean_pixels):
    """One class's figures on a batch, the network with its score against the network without.

    Parameters
    ----------
    network, plain : maximask.network.Network
        With the score, and without it (see :func:`without`).
    name : str
        The class the score adds to.
    batch : tuple
        (name, root seed, frames, side).
    thresh_file : path
        classes.thresh for the masks.
    clean_pixels : callable
        ``clean_pixels(truth) -> bool (H, W)``: the pixels where any flag is a false one that
        costs a user (the "flagged_clean" figure).

    Returns
    -------
    dict
        Per variant (``score``, ``network``): ROC AUC, AP, best F1, the mask's F1, TPR and FPR,
        and the share of the clean pixels flagged.
    """
    meta = network.metadata
    c = list(meta.classes).index(name)
    thr, pri, tpri = ([np.asarray(x)[c]] for x in (read_thresholds(thresh_file),
                                                   read_priors(default_config_dir() / "classes.priors"),
                                                   meta.training_priors))
    variants = {"score": network, "network": plain}
    pooled = {v: ScoreHistogram(1) for v in variants}
    clean = {v: ScoreHistogram(1) for v in variants}
    n_clean = 0
    for image, truth in frames(*batch[1:]):
        valid = clean_pixels(truth)
        n_clean += int(valid.sum())
        for v, net in variants.items():
            lg = logits(net, image)[c : c + 1]
            pooled[v].add(lg, truth[c : c + 1])
            if valid.any():
                clean[v].add(lg, truth[c : c + 1], valid)
    result = {"batch": batch[0], "seed": batch[1], "frames": batch[2], "side": batch[3],
              "clean_pixels": n_clean, "thresh_file": str(thresh_file), "threshold": float(thr[0])}
    for v in variants:
        m = all_metrics(pooled[v], [name])[name]
        result[v] = {"auc": m["auc"], "ap": m["ap"], "best_f1": m["best_f1"],
                     "mask": mask_scores(pooled[v], [name], thr, tpri, pri)[name],
                     "flagged_clean": mask_scores(clean[v], [name], thr, tpri, pri)[name]["fpr"]}
    return result
