"""A maxitrack network with the double-image term: the same tile network, a refitted calibration.

The field's logit becomes ``a * mean_tile_logit + c * log(1 + max(D - D0, 0)) + b``, ``D`` the
field's double-image statistic (:mod:`maxitrack.double_images`), ``D0`` fixed (``--offset``), and
``a``, ``b``, ``c`` fitted by logistic regression on validation frames (the calibration frames of
the tile network, cached by ``benchmarks/tracking_double_images.py prepare --split val``). The tile
network's files are copied unchanged; the metadata gets the new calibration and a
``double_images`` entry (which the model identifier includes). docs/MAXITRACK.md, "Double images
from the field's peaks".

With ``--rotation-offset R0``, the field-rotation term ``d * log(1 + max(R - R0, 0))``
(:mod:`maxitrack.field_rotation`, ``R`` from the cache's stars) is fitted with them, ``a * mean +
c * ... + d * ... + b``, and the metadata gets a ``field_rotation`` entry too (docs/MAXITRACK.md,
"Small arcs from the stars' shapes"). With ``--keep-calibration`` as well, ``a``, ``b``, ``c``, D0
and the double-image parameters stay the source network's and ``d`` alone is fitted: a field
whose rotation statistic stays below R0 keeps its score.

With ``--elongation-offset E0`` as well, the star-elongation term ``e * log(1 + max(E - E0, 0))``
(:mod:`maxitrack.star_elongation`, ``E`` the stars' mean ellipticity in percent, from the same
stars) is fitted with the field-rotation term, and the metadata gets a ``star_elongation`` entry
(docs/MAXITRACK.md, "Stars without defects, and the stars' mean
elongation").

Usage::

    python benchmarks/tracking_double_images.py prepare --split val --first 0 --frames 400 \\
        --work runs/jump/val --workers 2
    python scripts/maxitrack_double_images.py --net-dir tensorflow_models/maxitrack \\
        --work runs/jump/val --out runs/jump/net
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def main(argv=None) -> int:
    from tracking_double_images import load, load_stars, tile_network_hash
    from tracking_quality import check_measured, elongation_statistics, rotation_statistics
    from tracking_quality import double_image_statistics

    from maximask.network import METADATA_FILE, NetworkMetadata, weights_hash
    from maxitrack.double_images import DEFAULT_DOUBLE_IMAGES
    from maxitrack.train import calibrated_log_loss, fit_logistic, roc_auc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net-dir", required=True, help="the maxitrack network whose tile network is kept")
    ap.add_argument("--work", required=True, help="cached validation frames (tracking_double_images.py prepare)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--offset", type=float, default=10.0, help="D0: the statistic counts from there")
    ap.add_argument("--params", type=json.loads, default={},
                    help="JSON object of statistic parameters to change from DEFAULT_DOUBLE_IMAGES")
    ap.add_argument("--rotation-offset", type=float, default=None,
                    help="R0: also fit the field-rotation term, the statistic counting from there")
    ap.add_argument("--rotation-params", type=json.loads, default={},
                    help="JSON object of field-rotation parameters to change from DEFAULT_FIELD_ROTATION")
    ap.add_argument("--elongation-offset", type=float, default=None,
                    help="E0 (percent): with --rotation-offset, also fit the star-elongation term")
    ap.add_argument("--elongation-sigmas", type=float, default=0.0,
                    help="standard errors taken off the stars' mean ellipticity (the term's 'sigmas')")
    ap.add_argument("--keep-calibration", action="store_true",
                    help="with --rotation-offset: keep the source network's calibration and double-image "
                         "term, fit the field-rotation weight alone")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.keep_calibration and args.rotation_offset is None:
        ap.error("--keep-calibration needs --rotation-offset")
    if args.elongation_offset is not None and args.rotation_offset is None:
        ap.error("--elongation-offset needs --rotation-offset (the term reads the same stars)")

    src = Path(args.net_dir)
    source_meta = json.loads((src / METADATA_FILE).read_text())
    if args.keep_calibration:
        # the source's double-image term as it is: its offset and parameters, not the options'
        args.offset = float(source_meta["double_images"]["offset"])
        args.params = dict(source_meta["double_images"]["params"])
    recs, peaks, shape, cached = load(args.work, args.split)
    if tile_network_hash(src) != cached:
        raise SystemExit(f"{src}: its tile network is not the one the cache was made with ({cached})")
    params = copy.deepcopy(dict(DEFAULT_DOUBLE_IMAGES, **args.params))
    d = double_image_statistics(peaks, shape, params)
    mean_z = np.array([np.mean(r["tile_logits"]) for r in recs])
    y = np.array([r["label"] for r in recs])
    term = np.log1p(np.maximum(d - args.offset, 0.0))
    rotation = elongation = None
    if args.rotation_offset is None:
        a, c, b = fit_logistic(np.column_stack([mean_z, term]), y)
        z = a * mean_z + c * term + b
    else:
        from maxitrack.field_rotation import DEFAULT_FIELD_ROTATION

        rparams = copy.deepcopy(dict(DEFAULT_FIELD_ROTATION, **args.rotation_params))
        stars, measured = load_stars(args.work, args.split)
        check_measured(rparams, measured)
        r = rotation_statistics(stars, rparams)
        rterm = np.log1p(np.maximum(r - args.rotation_offset, 0.0))
        columns = [rterm]
        if args.elongation_offset is not None:
            elong = elongation_statistics(stars, rparams, args.elongation_sigmas)
            columns.append(np.log1p(np.maximum(elong - args.elongation_offset, 0.0)))
            print(f"star elongation: normal frames' E 50/90/99 % "
                  f"{np.percentile(elong[y == 0], [50, 90, 99]).round(2).tolist()}, above E0: "
                  f"{int((elong[y == 0] > args.elongation_offset).sum())}", file=sys.stderr)
        X = np.column_stack(columns)
        if args.keep_calibration:
            cal = source_meta["extra"]["calibration"]
            a, b, c = float(cal["slope"]), float(cal["intercept"]), float(source_meta["double_images"]["weight"])
            weights = fit_logistic(X, y, offset=a * mean_z + c * term + b, intercept=False)
        else:
            a, c, *weights, b = fit_logistic(np.column_stack([mean_z, term, X]), y)
        weights = [float(v) for v in weights]
        e = weights[0]
        z = a * mean_z + c * term + b + X @ np.array(weights)
        rotation = {"weight": e, "offset": float(args.rotation_offset), "params": rparams}
        if args.elongation_offset is not None:
            elongation = {"weight": weights[1], "offset": float(args.elongation_offset),
                          "params": {"sigmas": args.elongation_sigmas} if args.elongation_sigmas else {}}
            print(f"star elongation: weight {weights[1]:.4f}", file=sys.stderr)
        print(f"field rotation: weight {e:.4f}; normal frames' R 50/90/99 % "
              f"{np.percentile(r[y == 0], [50, 90, 99]).round(2).tolist()}, above R0: {int((r[y == 0] > args.rotation_offset).sum())}",
              file=sys.stderr)
    calibration = {"slope": float(a), "intercept": float(b),
                   "fitted_on": source_meta["extra"]["calibration"]["fitted_on"] if args.keep_calibration else f"{len(y)} validation frames {2 * shape[0]}x{2 * shape[1]}, 12 tiles each, "
                                f"with the double-image term" + ("" if rotation is None else " and the field-rotation term")
                                + ("" if elongation is None else " and the star-elongation term")}
    print(f"a {a:.4f}, c {c:.4f}, b {b:.4f}; validation AUC {roc_auc(mean_z, y):.4f} -> {roc_auc(z, y):.4f} "
          f"(fitted on these frames), log-loss {calibrated_log_loss(z, y, None):.4f}", file=sys.stderr)

    meta = copy.deepcopy(source_meta)
    meta["double_images"] = {"weight": float(c), "offset": float(args.offset), "params": params}
    meta.pop("field_rotation", None)  # its weight belonged to the calibration being replaced
    meta.pop("star_elongation", None)
    if rotation is not None:
        meta["field_rotation"] = rotation
    if elongation is not None:
        meta["star_elongation"] = elongation
    extra = copy.deepcopy(meta["extra"])
    extra["calibration"] = calibration
    extra["double_images_fit"] = {"from": str(args.net_dir), "frames": len(y),
                                  "command": "python scripts/maxitrack_double_images.py "
                                             + " ".join(sys.argv[1:] if argv is None else argv)}
    meta["extra"] = extra
    NetworkMetadata.from_dict(meta)  # refuse to write what the command could not read
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.tflite", "model.keras"):
        if (src / name).resolve() != (out / name).resolve():
            shutil.copy2(src / name, out / name)
    model_id = weights_hash(out / "model.tflite", inference=meta)
    meta["extra"]["model_id"] = model_id
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"written to {out} (model id {model_id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
