"""A maxitrack network whose autocorrelation branch reads a wider window of lags, with the same weights.

The autocorrelation branch (:class:`maxitrack.model` ``InputPart``) crops each tile's
autocorrelation to its central ``crop`` x ``crop`` lags and ends in global pooling, so its weights
apply to any crop. This script loads a network, sets the crop, refits the calibration (Platt
scaling of the frames' mean tile logits) on the network's validation frames as ``maxitrack-train``
does, and exports the result (docs/MAXITRACK.md, "The autocorrelation's whole window").

Usage::

    python scripts/maxitrack_autocorr_crop.py --net-dir tensorflow_models/maxitrack --crop 128 \\
        --work runs/gpu/A2 --out runs/maxitrack/crop128/net
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net-dir", required=True, help="the maxitrack network to start from")
    ap.add_argument("--crop", type=int, required=True, help="lags kept: -crop/2 .. crop/2 - 1 (at most the tile side)")
    ap.add_argument("--work", required=True,
                    help="maxitrack-train work directory whose validation frames the calibration uses "
                         "(simulated there if not cached)")
    ap.add_argument("--calibration-size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from maximask.network import NetworkMetadata, save_network
    from maxitrack.model import custom_objects
    from maxitrack.tiles import DEFAULT_SELECTION
    from maxitrack.train import calibrate, frame_mean_logits, make_tiles, network_inputs

    meta = json.loads((Path(args.net_dir) / "metadata.json").read_text())
    tile = int(meta["tile_size"])
    if not 0 < args.crop <= tile or args.crop % 2:
        raise SystemExit(f"--crop must be even and at most the tile side ({tile}), not {args.crop}")
    model = keras.models.load_model(Path(args.net_dir) / "model.keras", custom_objects=custom_objects(), compile=False)
    parts = [layer for layer in model.layers if type(layer).__name__ == "InputPart" and layer.part == "autocorr"]
    if len(parts) != 1:
        raise SystemExit(f"{args.net_dir}: no autocorrelation branch to widen")
    # the layer reads its crop when called: the saved configuration and the LiteRT conversion take it
    parts[0].crop = args.crop

    k = int(meta["extra"]["tiles"]["n_tiles"])
    val = make_tiles(Path(args.work), "val", int(meta["extra"]["data"]["val_frames"]), int(meta["extra"]["data"]["seed"]),
                     tuple(args.calibration_size), tile, dict(DEFAULT_SELECTION, n_tiles=k))
    x = network_inputs(val["tiles"], meta["extra"]["input"])
    z = np.concatenate([np.asarray(model(x[i : i + 128], training=False)) for i in range(0, len(x), 128)]).ravel()
    frames, mean_z = frame_mean_logits(z, val["frame"])
    y = np.array([r["label"] for r in val["records"]])[frames]
    shape = "x".join(map(str, args.calibration_size))
    calibration, auc, loss = calibrate(mean_z, y, f"{len(frames)} validation frames {shape}, {k} tiles each")
    print(f"calibration {calibration}; validation frame AUC {auc:.4f}, log-loss {loss:.4f}", file=sys.stderr)

    extra = copy.deepcopy(meta["extra"])
    extra["calibration"] = calibration
    extra["autocorr_crop"] = {"crop": args.crop, "from": args.net_dir,
                              "command": "python scripts/maxitrack_autocorr_crop.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    new = NetworkMetadata.from_dict(dict(meta, extra=extra))
    model_id = save_network(model, args.out, new)
    print(f"exported to {args.out} (model id {model_id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
