"""Frame AUC and log-loss of maxitrack networks on the cached validation frames of a training run.

The calibration of ``maxitrack-train`` is fitted on validation frames (split 2) with as many tiles
as the command averages; the export logs the frame AUC of the network there. This script scores any
number of networks on the same cached frames (the ``data/*.npz`` chunks of a work directory), so that
a candidate and the shipped network are compared on identical frames. Each AUC gets a 95 %
frame-bootstrap interval, and each network after the first the interval of its AUC minus the
first's (paired: the same frames drawn for both). Each network is its Keras
model (``model.keras`` of a network directory, or a ``.keras`` file); the frame's score is the mean
of its tile logits, and the log-loss is that of the network's own calibration where the directory
has one (none for a bare ``.keras`` file).

Usage::

    python benchmarks/tracking_validation.py --frames 'runs/gpu/calval/data/val_s1_1024x2048_t128_n12_*.npz' \\
        --net tensorflow_models/maxitrack --net runs/gpu/A2/net [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from maximask.metrics import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED


def score_network(net: str, inputs, frame: np.ndarray, labels: dict) -> dict:
    """AUC (and calibrated log-loss, where the network has a calibration) of one network;
    ``inputs(kind)`` gives the network inputs of the frames' tiles for the network's input kind."""
    import keras

    from maxitrack.model import custom_objects
    from maxitrack.train import calibrated_log_loss, frame_mean_logits, roc_auc

    path = Path(net)
    meta_file = path / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    extra = meta.get("extra", {})
    model_file = path / "model.keras" if path.is_dir() else path
    model = keras.models.load_model(model_file, custom_objects=custom_objects())
    z = model.predict(inputs(extra.get("input", "tile+autocorr")), batch_size=256, verbose=0).ravel()
    frames, mean_z = frame_mean_logits(z, frame)
    y = np.array([labels[int(f)] for f in frames])
    row = {"net": net, "frames": len(frames), "positives": int(y.sum()), "auc": roc_auc(mean_z, y)}
    if extra.get("calibration"):
        row["log_loss"] = calibrated_log_loss(mean_z, y, extra["calibration"])
    if meta:
        row["model_id"] = extra.get("model_id")
    return row, mean_z, y


def add_intervals(rows: list, mean_z: list, y: np.ndarray) -> None:
    """Each network's 95 % frame-bootstrap interval of its AUC, and of its AUC minus the first
    network's (the same frames drawn for all: paired), added to ``rows``."""
    from maximask.metrics import bootstrap_interval, bootstrap_statistic
    from maxitrack.train import roc_auc

    reps = bootstrap_statistic(roc_auc, np.array(mean_z), y, BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED)
    for k, row in enumerate(rows):
        row["auc_ci95"] = list(bootstrap_interval(reps[k])[:2])
        if k:
            d = reps[k] - reps[0]
            row["auc_minus_first"] = row["auc"] - rows[0]["auc"]
            row["auc_minus_first_ci95"] = list(bootstrap_interval(d)[:2])
            row["replicates_above_first"] = float(np.mean(d > 0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", required=True, help="glob of cached chunks (a work directory's data/*.npz)")
    ap.add_argument("--net", action="append", required=True, help="network directory or .keras file (repeat)")
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args(argv)

    from maxitrack.train import load_cached_frames, network_inputs

    data = load_cached_frames(args.frames)
    computed = {}  # the inputs of each input kind, computed once for all the networks that take it

    def inputs(kind):
        if kind not in computed:
            computed[kind] = network_inputs(data["tiles"], kind)
        return computed[kind]

    scored = [score_network(n, inputs, data["frame"], data["labels"]) for n in args.net]
    rows = [r for r, _, _ in scored]
    add_intervals(rows, [z for _, z, _ in scored], scored[0][2])
    for r in rows:
        extra = f", log-loss {r['log_loss']:.4f}" if "log_loss" in r else ""
        lo, hi = r["auc_ci95"]
        print(f"{r['net']}: AUC {r['auc']:.4f} ({lo:.4f}-{hi:.4f}){extra} ({r['frames']} frames, "
              f"{r['positives']} with an error)")
        if "auc_minus_first" in r:
            lo, hi = r["auc_minus_first_ci95"]
            print(f"    minus the first: {r['auc_minus_first']:+.4f} ({lo:+.4f} to {hi:+.4f}; above it in "
                  f"{r['replicates_above_first']:.3f} of the replicates)")
    if args.out:
        method = {"replicates": BOOTSTRAP_REPLICATES, "seed": BOOTSTRAP_SEED, "unit": "frame",
                  "interval": "2.5th-97.5th percentiles over frames drawn with replacement, the same draws "
                              "for every network"}
        Path(args.out).write_text(json.dumps({"frames": args.frames, "rows": rows, "interval_method": method},
                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
