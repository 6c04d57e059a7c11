"""Frame AUC and log-loss of maxitrack networks on the cached validation frames of a training run.

The calibration of ``maxitrack-train`` is fitted on validation frames (split 2) with as many tiles
as the command averages; the export logs the frame AUC of the network there. This script scores any
number of networks on the same cached frames (the ``data/*.npz`` chunks of a work directory), so that
a candidate and the shipped network are compared on identical frames. Each network is its Keras
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
    return row


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

    rows = [score_network(n, inputs, data["frame"], data["labels"]) for n in args.net]
    for r in rows:
        extra = f", log-loss {r['log_loss']:.4f}" if "log_loss" in r else ""
        print(f"{r['net']}: AUC {r['auc']:.4f}{extra} ({r['frames']} frames, {r['positives']} with an error)")
    if args.out:
        Path(args.out).write_text(json.dumps({"frames": args.frames, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
