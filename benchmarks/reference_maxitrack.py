"""Our maxitrack against MaxiTrack 1.4.1 on the same held-out tracking frames.

The frames are the first ``--frames`` of :mod:`benchmarks.tracking_quality`'s held-out set
(:func:`maximask.sim.simulate_tracking_frame` with ``numpy.random.default_rng((seed, 3, i))``, half
of them with a tracking error), written as FITS files into a temporary directory. Both commands run
on that directory as a user would run them: ours (``maxitrack DIR -o FILE``) and the reference's
(``maxitrack DIR`` of MaxiTrack 1.4.1, which appends to ``maxitrack.out`` in its working directory),
each at its default prior. Reported for each: ROC AUC, TPR at FPR 1 % and 5 %, FPR at TPR 95 %, and
the AUC of each error kind against all negatives; all are invariant to the prior.

The reference is not a dependency of this project; install it in a virtual environment of its own,
as described in :mod:`benchmarks.reference_maximask`, then::

    python benchmarks/reference_maxitrack.py --reference ../mmref/bin/maxitrack --frames 300 \\
        --out benchmarks/results/reference_maxitrack.json

The frames are ours (our simulator, our definition of a tracking error, down to 0.7 PSF FWHM of
smear): the comparison says how each network does on them, not which is better on real data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maximask.sim import TRACKING_KINDS
from maxitrack.train import frame_rng, roc_auc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking_quality import fpr_at_tpr, tpr_at_fpr  # noqa: E402
from results_io import write_json  # noqa: E402


def read_scores(path: Path) -> dict:
    """``{file name: score}`` from a ``maxitrack.out``-style file (``path score`` lines)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, score = line.rsplit(maxsplit=1)
            out[Path(name).name] = float(score)
    return out


def summary(score: np.ndarray, label: np.ndarray, kinds: list) -> dict:
    """The prior-invariant figures of one classifier's scores."""
    z = np.log(np.clip(score, 1e-12, 1.0)) - np.log(np.clip(1.0 - score, 1e-12, 1.0))  # ties kept
    neg = label == 0
    return {
        "auc": roc_auc(z, label),
        "tpr_at_fpr_1%": tpr_at_fpr(z, label, 0.01)[0],
        "tpr_at_fpr_5%": tpr_at_fpr(z, label, 0.05)[0],
        "fpr_at_tpr_95%": fpr_at_tpr(z, label, 0.95)[0],
        "auc_by_kind": {k: roc_auc(np.r_[z[np.array(kinds) == k], z[neg]],
                                   np.r_[np.ones(kinds.count(k)), np.zeros(neg.sum())])
                        for k in TRACKING_KINDS[1:] if k in kinds},
    }


def main(argv=None) -> int:
    from astropy.io import fits

    from maximask.sim import simulate_tracking_frame

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="the MaxiTrack 1.4.1 command (in its own venv)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--net_dir", default=None, help="our network (default: the bundled one)")
    ap.add_argument("--out", default=None, help="JSON results")
    args = ap.parse_args(argv)
    t0 = time.time()
    labels, kinds, seconds, scores = [], [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames"
        frames.mkdir()
        for i in range(args.frames):
            rng = frame_rng(args.seed, "bench", i)
            image, label, meta = simulate_tracking_frame(tuple(args.size), rng)
            fits.PrimaryHDU(image.astype(np.float32)).writeto(frames / f"frame_{i:05d}.fits")
            labels.append(int(label))
            kinds.append(meta["kind"])
        print(f"{args.frames} frames simulated ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        ours_out = Path(tmp) / "ours.out"
        ours_cmd = [str(Path(sys.executable).with_name("maxitrack")), str(frames), "-o", str(ours_out), "-q"]
        if args.net_dir:
            ours_cmd += ["--net_dir", args.net_dir]
        for name, cmd, out in (("ours", ours_cmd, ours_out),
                               ("reference", [args.reference, str(frames)], Path(tmp) / "maxitrack.out")):
            t = time.time()
            subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
            seconds[name] = round(time.time() - t, 1)
            scores[name] = read_scores(out)
            print(f"{name}: {seconds[name]} s", file=sys.stderr, flush=True)
    names = [f"frame_{i:05d}.fits" for i in range(args.frames)]
    y = np.array(labels)
    result = {
        "frames": args.frames, "size": list(args.size), "seed": args.seed, "positives": int(y.sum()),
        "command": "python benchmarks/reference_maxitrack.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": seconds,
    }
    for name, s in scores.items():
        result[name] = summary(np.array([s[n] for n in names]), y, kinds)
    print(json.dumps({k: result[k] for k in ("ours", "reference", "seconds")}, indent=1))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
