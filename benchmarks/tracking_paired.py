"""Two or more maxitrack networks on the same cached held-out frames, with paired frame-bootstrap intervals.

The frames are the tile caches of :mod:`benchmarks.tracking_quality` (``--work``, its chunks of
frames FIRST .. FIRST + N - 1). Each network scores each frame as the command does: its first
``n_tiles`` ranked tiles (from the network's metadata), the mean of their logits, mapped by the
network's own calibration, plus its double-image term where it has one
(:func:`maxitrack.scoring.field_logit`). Reported per network: ROC AUC,
calibrated log-loss, FPR at TPR 95 %; and for each network after the first, its AUC minus the
first's with a 95 % interval from frames drawn with replacement, the same draws for every network
(:func:`tracking_validation.add_intervals`).

Usage::

    python benchmarks/tracking_paired.py --size 1024 2048 --first 2600 --frames 1000 \\
        --work runs/maxitrack/bench_1024x2048 --net tensorflow_models/maxitrack --net runs/gpu/A2/net \\
        [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_json  # noqa: E402
from tracking_quality import CHUNK, cache_files, double_image_terms, fpr_at_tpr  # noqa: E402
from tracking_validation import add_intervals  # noqa: E402


def row_line(row: dict) -> str:
    """One network's line: AUC with its interval, log-loss, FPR at TPR 95 %, and its paired
    difference from the first network where it has one."""
    extra = ""
    if "auc_minus_first" in row:
        lo, hi = row["auc_minus_first_ci95"]
        extra = (f"; minus the first {row['auc_minus_first']:+.4f} ({lo:+.4f} to {hi:+.4f}, above in "
                 f"{row['replicates_above_first']:.3f})")
    return (f"{row['net']} ({row['model_id']}): AUC {row['auc']:.4f} ({row['auc_ci95'][0]:.4f}-{row['auc_ci95'][1]:.4f}), "
            f"log-loss {row['log_loss']:.4f}, FPR at TPR 95 % {row['fpr_at_tpr_95']:.4f}{extra}")


def main(argv=None) -> int:
    from maximask.metrics import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED
    from maxitrack.cli import Scorer
    from maxitrack.scoring import field_logit
    from maxitrack.train import log_loss, roc_auc

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--work", required=True, help="the tile cache of tracking_quality.py --prepare-only")
    ap.add_argument("--net", action="append", required=True, help="network directory (repeat; the first is the baseline)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.first % CHUNK or args.frames % CHUNK:
        ap.error(f"--first and --frames must be multiples of {CHUNK} (the cache's chunks)")
    scorers = [Scorer(n, prior=0.5, batch_size=64) for n in args.net]
    files = cache_files(args.work, args.seed, args.size, scorers[0].tile, args.first, args.frames)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        ap.error(f"missing cache chunks (run tracking_quality.py --prepare-only): {missing[0]} ...")
    z = [[] for _ in scorers]
    y = []
    for path in files:
        d = np.load(path)
        recs = json.loads(str(d["records"]))
        starts = np.cumsum([0] + [r["n_tiles"] for r in recs])
        for k, sc in enumerate(scorers):
            n = int(sc.selection.get("n_tiles", 12))
            pick = np.concatenate([np.arange(s, s + min(n, r["n_tiles"])) for s, r in zip(starts, recs)])
            tl = sc.logits(d["tiles"][pick].astype(np.float32)[..., None])[:, 0]
            bounds = np.cumsum([0] + [min(n, r["n_tiles"]) for r in recs])
            extra = double_image_terms(d, sc, path)
            z[k] += [field_logit(tl[a:b], sc.calibration, e) for a, b, e in zip(bounds[:-1], bounds[1:], extra)]
        y += [r["label"] for r in recs]
    z, y = np.array(z), np.array(y)
    rows = [{"net": net, "model_id": sc.net.model_id, "auc": roc_auc(z[k], y), "log_loss": log_loss(z[k], y),
             "fpr_at_tpr_95": fpr_at_tpr(z[k], y, 0.95)[0]} for k, (net, sc) in enumerate(zip(args.net, scorers))]
    add_intervals(rows, z, y)
    for row in rows:
        print(row_line(row))
    print(f"{len(y)} frames ({int(y.sum())} with an error), {args.size[0]}x{args.size[1]}, "
          f"frames {args.first}-{args.first + args.frames - 1}")
    if args.out:
        write_json(args.out, {
            "frames": len(y), "positives": int(y.sum()), "first": args.first, "size": list(args.size),
            "command": "python benchmarks/tracking_paired.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "interval_method": {"replicates": BOOTSTRAP_REPLICATES, "seed": BOOTSTRAP_SEED, "unit": "frame"},
            "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
