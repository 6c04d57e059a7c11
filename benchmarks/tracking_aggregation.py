"""Does maxitrack lose evidence between its tiles and the field's score?

The command averages the tile logits of a field (:func:`maxitrack.scoring.field_logit`). Two kinds
of frame-level evidence could beat that mean:

* **the spread of the tile logits**: an arc (field rotation) moves tiles far from its centre and
  leaves the tiles near it still, so the largest tile logits or their spread might say more than
  the mean;
* **the field-pooled autocorrelation**: a drift or a jump gives every star of the field the same
  displacement. Summing the autocorrelations of all tiles before any decision gains signal, while
  the network sees one tile at a time.

Each candidate is a logistic regression (L2, standardised features) on frame-level features of the
*shipped* network's tiles. It is fitted on training frames and scored (ROC AUC) on validation
frames against the mean tile logit. Autocorrelation features are invariant to rotation, so a model
of a few hundred coefficients can learn them from a few thousand frames. They are taken over rings
of lag r = 0..48 px (the lags the network's autocorrelation branch sees, which hold every separation
of the simulator's double images): the ring mean, the amplitudes of its 2nd and 4th angular
harmonics (elongation, squareness) and its maximum above the mean (side peaks).

The frames are the tile caches of ``maxitrack-train`` work directories (``data/*.npz``: the tiles
the command would select, ``--tiles`` per frame). Defaults: the 2000 training frames of
1024x2048 of stage 3b (``runs/maxitrack_v6``, split 1) and the 400 validation frames of 1024x2048
that the calibration uses (split 2). The shipped network trained on split-1 frames of 512x512 with
the same seeds, so its training-frame logits are optimistic; the validation frames are clean.

Usage::

    python benchmarks/tracking_aggregation.py [--train GLOB] [--val GLOB] [--tiles 12] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np

TRAIN_GLOB = "runs/maxitrack_v6/data/train_s1_1024x2048_t128_n12_*.npz"
VAL_GLOB = "runs/maxitrack_v4/data/val_s1_1024x2048_t128_n12_*.npz"
#: Largest lag (px) of the autocorrelation features: that of the network's autocorrelation branch.
MAX_LAG = 48
L2_VALUES = (1e-3, 1e-2, 1e-1, 1.0)


def cached_frames(pattern: str, n_tiles: int):
    """Yield ``(label, tiles (n, T, T) float32)`` per frame of ``maxitrack-train`` tile caches."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"tracking_aggregation: no tile cache matches {pattern}")
    for f in files:
        z = np.load(f)
        tiles, frame, label = z["tiles"], z["frame"], z["label"]
        for i in np.unique(frame):
            sel = np.nonzero(frame == i)[0][:n_tiles]
            yield int(label[sel[0]]), tiles[sel].astype(np.float32)


def pooled_autocorrelations(tiles: np.ndarray) -> tuple:
    """Two field-level autocorrelations (lags -MAX_LAG..MAX_LAG) of a field's tiles (N, T, T):
    the sum over tiles normalised by the summed star peak (tiles rich in stars weigh more), and the
    mean of the per-tile normalised autocorrelations (what the network sees, averaged)."""
    from maxitrack.tiles import unscaled_autocorrelation

    a, scale = unscaled_autocorrelation(tiles)
    h = tiles.shape[1] // 2
    c = a[:, h - MAX_LAG : h + MAX_LAG + 1, h - MAX_LAG : h + MAX_LAG + 1]
    summed = c.sum(0) / scale.sum()
    mean_norm = np.clip(c / scale[:, None, None], -1.0, 1.0).mean(0)
    return summed.astype(np.float32), mean_norm.astype(np.float32)


def ring_descriptors(ac: np.ndarray) -> np.ndarray:
    """Rotation-invariant descriptors of autocorrelations (F, S, S): per ring of integer lag r, the
    mean, the amplitudes of the 2nd and 4th angular harmonics, and the maximum above the mean."""
    s = ac.shape[1]
    c = s // 2
    yy, xx = np.mgrid[:s, :s] - c
    r = np.rint(np.hypot(yy, xx)).astype(int)
    th = np.arctan2(yy, xx)
    out = []
    for ring in range(c + 1):
        m = r == ring
        v = ac[:, m]
        out.append(v.mean(1))
        if ring:
            out.append(np.abs((v * np.exp(2j * th[m])).mean(1)))
            out.append(np.abs((v * np.exp(4j * th[m])).mean(1)))
            out.append(v.max(1) - v.mean(1))
    return np.stack(out, 1)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float):
    """L2-penalised logistic regression on standardised features (the intercept and the first
    feature, normally the mean tile logit, unpenalised); returns the scoring function."""
    from scipy.optimize import minimize

    from maxitrack.scoring import sigmoid
    from maxitrack.train import log_loss

    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd

    def loss(w):
        z = xs @ w[1:] + w[0]
        p = sigmoid(z)
        grad = np.r_[np.mean(p - y), xs.T @ (p - y) / len(y)]
        grad[2:] += 2.0 * l2 * w[2:]
        return log_loss(z, y) + l2 * np.sum(w[2:] ** 2), grad

    w = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    return lambda x2: ((x2 - mu) / sd) @ w[1:] + w[0]


def frame_features(pattern: str, n_tiles: int, net) -> dict:
    """Tile logits and pooled autocorrelations of every cached frame."""
    from maxitrack.tiles import network_input

    kind = str(net.metadata.extra.get("input", "tile"))
    logits, summed, mean_norm, labels = [], [], [], []
    for label, tiles in cached_frames(pattern, n_tiles):
        logits.append(net.predict_logits(network_input(tiles[..., None], kind))[:, 0])
        s, m = pooled_autocorrelations(tiles)
        summed.append(s)
        mean_norm.append(m)
        labels.append(label)
    if len({len(z) for z in logits}) != 1:
        raise SystemExit("tracking_aggregation: frames with different tile counts")
    return {"logits": np.array(logits), "summed": np.array(summed), "mean_norm": np.array(mean_norm),
            "label": np.array(labels, np.float64)}


def candidates(d: dict) -> dict:
    """Frame-level feature sets; the first column is the mean tile logit, except for the pooled
    autocorrelation alone."""
    lg = d["logits"]
    top = np.sort(lg, 1)[:, ::-1]
    mean = lg.mean(1)[:, None]
    summed, mean_norm = ring_descriptors(d["summed"]), ring_descriptors(d["mean_norm"])
    return {
        "sorted tile logits": np.c_[mean, top],
        "tile-logit statistics (mean, max, top-3, std, bottom-3)": np.c_[
            mean, top[:, 0], top[:, :3].mean(1), lg.std(1), top[:, -3:].mean(1)],
        "pooled autocorrelation alone (summed)": summed,
        "mean logit + pooled autocorrelation (summed)": np.c_[mean, summed],
        "mean logit + pooled autocorrelation (mean of normalised)": np.c_[mean, mean_norm],
    }


def main(argv=None) -> int:
    from maximask.network import Network
    from maximask.resources import default_net_dir
    from maxitrack.train import roc_auc

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net-dir", default=str(default_net_dir("maxitrack")))
    p.add_argument("--train", default=TRAIN_GLOB, help="glob of training tile caches")
    p.add_argument("--val", default=VAL_GLOB, help="glob of validation tile caches")
    p.add_argument("--tiles", type=int, default=12, help="tiles per frame (the command's count)")
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)

    t0 = time.time()
    net = Network(args.net_dir)
    tr = frame_features(args.train, args.tiles, net)
    va = frame_features(args.val, args.tiles, net)
    base = roc_auc(va["logits"].mean(1), va["label"])
    rows = [("mean tile logit (the command)", None, roc_auc(tr["logits"].mean(1), tr["label"]), base)]
    ctr, cva = candidates(tr), candidates(va)
    for name in ctr:
        for l2 in L2_VALUES:
            g = fit_logistic(ctr[name], tr["label"], l2)
            rows.append((name, l2, roc_auc(g(ctr[name]), tr["label"]), roc_auc(g(cva[name]), va["label"])))
    lines = [f"network {net.model_id}, {args.tiles} tiles per frame; {len(tr['label'])} training frames "
             f"({args.train}), {len(va['label'])} validation frames ({args.val})", "",
             "| frame score | L2 | AUC, training frames | AUC, validation frames |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {'—' if l2 is None else l2} | {a:.4f} | {b:.4f} |" for n, l2, a, b in rows]
    print("\n".join(lines))
    print(f"({time.time() - t0:.0f} s)")
    if args.out:
        given = sys.argv[1:] if argv is None else argv
        command = "python benchmarks/tracking_aggregation.py " + " ".join(given)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "model_id": net.model_id, "tiles": args.tiles, "train": args.train, "val": args.val,
            "n_train": len(tr["label"]), "n_val": len(va["label"]), "command": command,
            "rows": [{"score": n, "l2": l2, "auc_train": a, "auc_val": b} for n, l2, a, b in rows],
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
