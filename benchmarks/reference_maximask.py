"""Our network against the MaxiMask 1.4.1 network on the same held-out frames (the product's quality target).

The frames are those of :mod:`benchmarks.quality` (root seed ``quality.HELDOUT_SEED``, 2048^2, the
simulator's default mix; ``--first`` and ``--frames`` choose them, the first 24 by default). Each is written to a temporary FITS file and
masked by the reference's own command, ``maximask`` of MaxiMask 1.4.1 (Paillassa, Bertin & Bouy
2020; MIT licence, code and weights on PyPI), with ``--prior_modif false --proba_thresh false``:
its raw probabilities, which are turned back into logits. Our network runs as in
:mod:`benchmarks.quality` (:func:`maximask.engine.infer`). Both are scored against the simulator's
truth with the same histograms: ROC AUC, TPR at FPR 1e-3 and 1e-2, AP.

The reference is not a dependency of this project: install it in a virtual environment of its own
(its module, ``maximask_and_maxitrack``, and its command, ``maximask``, would shadow ours)::

    python3 -m venv ../mmref && ../mmref/bin/pip install --no-deps MaxiMask==1.4.1 \\
        && ../mmref/bin/pip install tensorflow-cpu astropy scipy numpy tqdm
    python benchmarks/reference_maximask.py --reference ../mmref/bin/maximask \\
        --out benchmarks/results/reference_maximask.json --markdown benchmarks/results/reference_maximask.md

A second table gives, per class, our AUC minus the reference's with a 95 % interval from a
paired frame bootstrap (the same frames drawn for both networks; 24 frames hold some classes in only
a few of them), the share of replicates in which ours is at least as high, and about how many frames
would resolve the difference (two standard errors, the error taken to shrink as one over the
square root of the frame count). ``--save-frames`` keeps both networks' per-frame histograms, and
``--load-frames`` redoes the tables from them without running either network (the reference takes
about 2 minutes a frame).

The frames are ours: simulated by our simulator, whose physics and truth rule (a pixel is labelled
where the contaminant adds more than 1 sigma) are not those MaxiMask was trained on. The comparison
says how each network does on these frames, not which is better on real data.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maximask.classes import ABBRS
from maximask.engine import infer
from maximask.metrics import (BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, ScoreHistogram, all_metrics, bootstrap_interval,
                              frame_bootstrap_auc, roc_auc_counts)
from maximask.network import Network
from maximask.resources import default_net_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import FRAME_SHAPE, HELDOUT_SEED, N_FRAMES, frames  # noqa: E402
from results_io import write_json  # noqa: E402

#: The reference's probabilities are float32 sigmoids: 0 and 1 are clipped this far in before the logit.
P_CLIP = 1e-7


def probabilities_to_logits(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[P_CLIP, 1 - P_CLIP]`` (float32)."""
    p = np.clip(np.asarray(p, np.float64), P_CLIP, 1.0 - P_CLIP)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def reference_logits(reference: str, image: np.ndarray, tmp: Path) -> np.ndarray:
    """Logits (14, H, W) of the reference command's raw probabilities for one image."""
    from astropy.io import fits

    path = tmp / "frame.fits"
    fits.PrimaryHDU(image.astype(np.float32)).writeto(path, overwrite=True)
    subprocess.run([reference, str(path), "--prior_modif", "false", "--proba_thresh", "false"],
                   check=True, capture_output=True, cwd=tmp)
    with fits.open(tmp / "frame.mask.fits") as hdul:
        proba = np.asarray(hdul[0].data)
    if proba.shape != (len(ABBRS),) + image.shape:
        raise RuntimeError(f"reference output of shape {proba.shape}, expected {(len(ABBRS),) + image.shape}")
    return probabilities_to_logits(proba)


def table(ours: dict, ref: dict) -> str:
    """Markdown table: each metric of our network beside the reference's."""
    lines = ["| class | positive pixels | ROC AUC, ours | ROC AUC, MaxiMask 1.4.1 | TPR @ 1e-3, ours / ref | "
             "TPR @ 1e-2, ours / ref | AP, ours / ref |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def f(v):
        return "—" if v is None else f"{v:.4f}" if abs(v) >= 0.1 else f"{v:.3f}"

    for c in ABBRS:
        a, b = ours[c], ref[c]
        lines.append(f"| {c} | {a['n_pos']} | {f(a['auc'])} | {f(b['auc'])} | {f(a['tpr_at_fpr_1e-3'])} / "
                     f"{f(b['tpr_at_fpr_1e-3'])} | {f(a['tpr_at_fpr_1e-2'])} / {f(b['tpr_at_fpr_1e-2'])} | "
                     f"{f(a['ap'])} / {f(b['ap'])} |")
    return "\n".join(lines) + "\n"


def paired_differences(pos_frames, neg_frames, n_boot: int, seed: int) -> dict:
    """Per class: our AUC minus the reference's, its 95 % frame-bootstrap interval (the same frames
    drawn for both networks), the share of replicates in which ours is at least as high, and
    :func:`frames_to_resolve`.

    ``pos_frames``, ``neg_frames``: shape (2, n_frames, n_classes, n_bins), ours first."""
    pos_frames, neg_frames = np.asarray(pos_frames), np.asarray(neg_frames)
    reps = frame_bootstrap_auc(pos_frames, neg_frames, n_boot, seed)
    point = roc_auc_counts(pos_frames.sum(1), neg_frames.sum(1))
    out = {}
    for c, name in enumerate(ABBRS):
        d = reps[0, :, c] - reps[1, :, c]
        lo, hi, n_valid = bootstrap_interval(d)
        ok = np.isfinite(d)
        diff = point[0, c] - point[1, c]
        out[name] = {
            "auc_ours": None if np.isnan(point[0, c]) else float(point[0, c]),
            "auc_reference": None if np.isnan(point[1, c]) else float(point[1, c]),
            "difference": None if np.isnan(diff) else float(diff),
            "difference_ci95": None if lo is None else [lo, hi],
            "ours_at_least_as_high": float((d[ok] >= 0).mean()) if ok.any() else None,
            "replicates": n_valid,
            "frames_to_resolve": frames_to_resolve(d[ok], diff, pos_frames.shape[1]),
        }
    return out


def frames_to_resolve(replicates: np.ndarray, difference: float, n_frames: int):
    """About how many frames would put ``difference`` two standard errors from zero, taking the
    bootstrap's standard error to shrink as one over the square root of the frame count (None
    where the difference is zero or undefined)."""
    if replicates.size < 2 or not np.isfinite(difference) or difference == 0:
        return None
    se = float(np.std(replicates, ddof=1))
    return int(np.ceil(n_frames * (1.96 * se / abs(difference)) ** 2))


def difference_table(diffs: dict, names=("ours", "MaxiMask 1.4.1", "MaxiMask"), extra=None) -> str:
    """Markdown table of :func:`paired_differences`; ``names``: the first network, the second in
    full and in short; ``extra`` = ``(header, {class: text})`` adds a column."""
    first, second_full, second = names
    head = (f"| class | ROC AUC, {first} | ROC AUC, {second_full} | {first} - {second} | 95 % interval (frames "
            f"resampled) | replicates with {first} >= {second} | frames to resolve (about) |")
    lines = [head + (f" {extra[0]} |" if extra else ""), "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if extra else "")]

    def f(v, fmt="{:.4f}"):
        return "—" if v is None else fmt.format(v)

    for c, d in diffs.items():
        ci = "—" if d["difference_ci95"] is None else f"{d['difference_ci95'][0]:+.4f} to {d['difference_ci95'][1]:+.4f}"
        lines.append(f"| {c} | {f(d['auc_ours'])} | {f(d['auc_reference'])} | {f(d['difference'], '{:+.4f}')} | "
                     f"{ci} | {f(d['ours_at_least_as_high'], '{:.3f}')} | {f(d['frames_to_resolve'], '{:d}')} |"
                     + (f" {extra[1][c]} |" if extra else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", default=None, help="the MaxiMask 1.4.1 command (in its own venv)")
    p.add_argument("--net-dir", default=str(default_net_dir()))
    p.add_argument("--frames", type=int, default=N_FRAMES,
                   help=f"N held-out frames, from --first (default {N_FRAMES})")
    p.add_argument("--first", type=int, default=0,
                   help="index of the first held-out frame (default 0): frames FIRST .. FIRST + N - 1")
    p.add_argument("--out", default=None, help="JSON results")
    p.add_argument("--markdown", default=None, help="markdown table")
    p.add_argument("--save-frames", default=None, metavar="FILE.npz",
                   help="also save both networks' per-frame score histograms (tens of MB; not for the repo)")
    p.add_argument("--load-frames", nargs="+", default=None, metavar="FILE.npz",
                   help="score from histograms saved by --save-frames instead of running the networks "
                        "(several files: their frames together)")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_REPLICATES, metavar="N",
                   help=f"frame-bootstrap replicates of the paired differences (default {BOOTSTRAP_REPLICATES})")
    args = p.parse_args(argv)
    if (args.reference is None) == (args.load_frames is None):
        p.error("give exactly one of --reference and --load-frames")
    t0 = time.time()
    if args.load_frames:
        saved = [np.load(f) for f in args.load_frames]
        model_id, reference = str(saved[0]["model_id"]), str(saved[0]["reference"])
        if any(str(d["model_id"]) != model_id for d in saved):
            p.error("--load-frames: the files hold different networks")
        pos = np.concatenate([d["pos"] for d in saved], axis=1)
        neg = np.concatenate([d["neg"] for d in saved], axis=1)
        seconds = {k: float(sum(d["seconds"][i] for d in saved)) for i, k in enumerate(("ours", "reference"))}
    else:
        pos, neg, seconds, model_id = run_both(args)
        reference = f"MaxiMask 1.4.1 ({args.reference})"
        if args.save_frames:
            np.savez_compressed(args.save_frames, pos=pos, neg=neg, model_id=model_id, reference=reference,
                                seconds=[seconds["ours"], seconds["reference"]])
    metrics = {}
    for k, name in enumerate(("ours", "reference")):
        hist = ScoreHistogram(len(ABBRS))
        hist.pos, hist.neg = pos[k].sum(0).astype(np.int64), neg[k].sum(0).astype(np.int64)
        metrics[name] = all_metrics(hist, list(ABBRS))
    diffs = paired_differences(pos, neg, args.bootstrap, BOOTSTRAP_SEED)
    result = {
        "frames": int(pos.shape[1]), "frame_shape": list(FRAME_SHAPE), "seed": HELDOUT_SEED,
        "net_dir": args.net_dir, "model_id": model_id, "reference": reference,
        "command": "python benchmarks/reference_maximask.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": {k: round(v, 1) for k, v in seconds.items()}, "wall_s": round(time.time() - t0, 1),
        "metrics": metrics,
        "paired_differences": diffs,
        "paired_differences_method": {
            "replicates": args.bootstrap, "seed": BOOTSTRAP_SEED, "unit": "frame",
            "interval": "2.5th-97.5th percentiles of (our AUC - the reference's) over frames drawn with "
                        "replacement, the same draws for both networks"},
    }
    md = table(metrics["ours"], metrics["reference"]) + "\n" + difference_table(diffs)
    print(md)
    if args.out:
        write_json(args.out, result)
    if args.markdown:
        Path(args.markdown).write_text(md)
    return 0


def run_both(args):
    """Both networks on the held-out frames: per-frame histograms, shape (2, n_frames, C, n_bins)
    (int32; ours first), seconds spent by each, our model id."""
    net = Network(args.net_dir)
    pos, neg = [[], []], [[], []]
    seconds = {"ours": 0.0, "reference": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        seqs = [np.random.SeedSequence(HELDOUT_SEED, spawn_key=(i,)) for i in range(args.first, args.first + args.frames)]
        for i, (image, truth) in enumerate(frames(seqs, FRAME_SHAPE)):
            for k, name in enumerate(("ours", "reference")):
                t = time.time()
                if name == "ours":
                    logits = infer(image, net, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))
                else:
                    logits = reference_logits(args.reference, image, Path(tmp))
                one = ScoreHistogram(len(ABBRS))
                one.add(logits, truth)
                pos[k].append(one.pos.astype(np.int32))
                neg[k].append(one.neg.astype(np.int32))
                seconds[name] += time.time() - t
            print(f"frame {args.first + i} ({i + 1}/{args.frames}): ours {seconds['ours']:.0f} s, "
                  f"reference {seconds['reference']:.0f} s so far", file=sys.stderr, flush=True)
    return np.array(pos), np.array(neg), seconds, net.model_id


if __name__ == "__main__":
    sys.exit(main())
