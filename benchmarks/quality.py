"""Quality of a maximask network on a held-out simulated benchmark (and threshold selection).

The frames are made by :func:`maximask.sim.simulate_frame` with the fixed root seed
:data:`HELDOUT_SEED`, which no training run uses (training uses ``maximask.train.DEFAULT_SEED`` with
its own spawn streams). The network runs exactly as the ``maximask`` command runs it: whole-frame
normalisation, tiling with the network's margin, LiteRT inference
(:func:`maximask.engine.infer`); raw logits are scored against the simulator's truth.

Reported per class: ROC AUC, TPR at FPR 1e-3 and 1e-2, average precision, best F1 (all invariant to
the prior modification, which is a per-class monotonic shift of the logits).

The held-out table also gives each class's ROC AUC a 95 % interval from a frame bootstrap
(:func:`maximask.metrics.frame_bootstrap_auc`, ``--bootstrap`` replicates, fixed seed
:data:`maximask.metrics.BOOTSTRAP_SEED`): the frames are drawn with replacement and the pooled AUC recomputed. It says
how far the figure would move on another draw of as many frames; a class present in few frames has a
wide one.

``--thresholds`` instead runs on the *validation* stream of the training seed (spawn key 1, which
the training loop only monitors) and writes ``data/configs/classes.thresh``: for each class, the
threshold on the prior-modified probability that maximises the F1 score on the validation pixels,
i.e. ``t = sigmoid(L* + log odds(prior) - log odds(training prior))`` where ``L*`` is the
F1-optimal threshold on the raw logits and the priors are those of ``data/configs/classes.priors``;
a class whose validation ROC AUC is below ``MIN_AUC`` (0.6) gets 1, never flagged. This is the
rule of the shipped thresholds. ``--valid-seed`` names one or more validation seeds (``--frames``
frames of each).

``--rule frame-cap`` (or ``pooled-cap``) applies instead the capped rule under study,
:func:`maximask.metrics.mask_logit_threshold`: the F1-optimal logit, raised where needed so that in
at least 95 % of the validation frames (``pooled-cap``: over all validation pixels) at most 1 % of
the pixels without the class are flagged; 1 (never flagged) where the capped mask flags its pixels
fewer than 5 times as often as clean ones; BG, the class of clean pixels, keeps the F1 optimum.
See docs/MODEL.md, "Thresholds", for what it gave.

Usage::

    python benchmarks/quality.py --out benchmarks/results/quality.json --markdown docs/quality_table.md
    python benchmarks/quality.py --thresholds --out benchmarks/results/thresholds.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from maximask.classes import ABBRS
from maximask.engine import infer
from maximask.metrics import (BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, FRAME_QUANTILE, MAX_CLEAN_FLAGGED, MIN_LIFT,
                              ScoreHistogram, all_metrics, bootstrap_interval, frame_bootstrap_auc,
                              mask_logit_threshold)
from maximask.network import Network
from maximask.resources import default_config_dir, default_net_dir
from results_io import write_json

HELDOUT_SEED = 909_090_17  # never used by training (maximask.train.DEFAULT_SEED = 20261123)
N_FRAMES = 24
FRAME_SHAPE = (2048, 2048)
N_VALID_FRAMES = 32
VALID_SHAPE = (1024, 1024)


def frames(seed_seqs, shape):
    """Yield (image, truth) simulated frames for the given seed sequences."""
    from maximask.sim import simulate_frame

    for seq in seed_seqs:
        image, truth, _ = simulate_frame(shape, np.random.default_rng(seq))
        yield image, truth


def score(network, frame_iter, per_frame=False):
    """Accumulate the network's logits against the truth of each frame.

    Returns the histogram of all frames, the number of frames and, with ``per_frame``, the positive
    and negative pixels' histograms of each frame, each of shape (n_frames, n_classes, n_bins)
    (int32; ~1.8 MB a frame each), else None.
    """
    hist = ScoreHistogram(len(network.metadata.classes))
    pos_frames, neg_frames, n = [], [], 0
    for image, truth in frame_iter:
        logits = infer(image, network, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))
        if per_frame:
            one = ScoreHistogram(len(network.metadata.classes))
            one.add(logits, truth)
            hist.merge(one)
            pos_frames.append(one.pos.astype(np.int32))
            neg_frames.append(one.neg.astype(np.int32))
        else:
            hist.add(logits, truth)
        n += 1
    return hist, n, ((np.array(pos_frames), np.array(neg_frames)) if per_frame else None)


def add_intervals(metrics: dict, replicates: np.ndarray, n_boot: int, seed: int) -> dict:
    """Each class's 95 % frame-bootstrap interval of its ROC AUC (``auc_ci95``, and the number of
    replicates that hold the class, ``auc_ci95_replicates``) added to ``metrics``;
    ``replicates`` has shape (n_boot, n_classes). Returns the description of the method."""
    for c, name in enumerate(metrics):
        lo, hi, n_valid = bootstrap_interval(replicates[:, c])
        metrics[name]["auc_ci95"] = None if lo is None else [lo, hi]
        metrics[name]["auc_ci95_replicates"] = n_valid
    return {"replicates": n_boot, "seed": seed, "unit": "frame",
            "interval": "2.5th-97.5th percentiles of the pooled ROC AUC over frames drawn with replacement"}


def mask_scores(hist: ScoreHistogram, names, thresholds, training_priors, priors) -> dict:
    """F1, true- and false-positive rates of the masks that probability thresholds give.

    Parameters
    ----------
    hist : ScoreHistogram
        Logits against the truth.
    names : sequence of str
    thresholds, training_priors, priors : array_like, shape (14,)
        Thresholds on the prior-modified probability (as in ``classes.thresh``), and the priors.

    Returns
    -------
    dict
        Per class: ``f1``, ``tpr``, ``fpr`` (None without positive pixels).
    """
    from maximask.postprocess import logit_thresholds, prior_shift

    logit = logit_thresholds(np.asarray(thresholds, float), prior_shift(training_priors, priors))
    out = {}
    for c, name in enumerate(names):
        pos, neg = hist.pos[c], hist.neg[c]
        k = int(np.searchsorted(hist.edges, logit[c] - 1e-9)) if np.isfinite(logit[c]) else len(pos)
        tp, fp = int(pos[k:].sum()), int(neg[k:].sum())
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        out[name] = {"f1": 2 * tp / (tp + n_pos + fp) if n_pos else None,
                     "tpr": tp / n_pos if n_pos else None, "fpr": fp / max(n_neg, 1)}
    return out


def markdown_table(metrics: dict) -> str:
    """Per-class metrics as a markdown table."""
    with_ci = any("auc_ci95" in m for m in metrics.values())
    ci_head, ci_rule = (" AUC 95 % interval (frames resampled) |", "---:|") if with_ci else ("", "")
    rows = [f"| class | pixels (pos) | ROC AUC |{ci_head} TPR @ FPR 1e-3 | TPR @ FPR 1e-2 | AP | best F1 |",
            f"|---|---:|---:|{ci_rule}---:|---:|---:|---:|"]

    def f(v, d=4):
        return "n/a" if v is None else f"{v:.{d}f}"

    for name, m in metrics.items():
        ci = ""
        if with_ci:
            ci = " n/a |" if m.get("auc_ci95") is None else f" {f(m['auc_ci95'][0])}-{f(m['auc_ci95'][1])} |"
        rows.append(f"| {name} | {m['n_pos']} | {f(m['auc'])} |{ci} {f(m['tpr_at_fpr_1e-3'], 3)} | "
                    f"{f(m['tpr_at_fpr_1e-2'], 3)} | {f(m['ap'], 3)} | {f(m['best_f1'], 3)} |")
    return "\n".join(rows) + "\n"


def choose_thresholds(metrics: dict, training_priors, priors) -> np.ndarray:
    """F1-optimal thresholds expressed on prior-modified probabilities.

    Parameters
    ----------
    metrics : dict
        Validation metrics per class (with ``best_f1_logit``).
    training_priors, priors : array_like, shape (14,)

    Returns
    -------
    ndarray, float64, shape (14,)
        Probability thresholds for ``classes.thresh``; 0.5 for a class absent from the validation set;
        1 (never flagged) for a class whose validation ROC AUC is below ``MIN_AUC``: for a class the
        network cannot separate, the F1 optimum is to flag (nearly) every pixel, which is no mask.
    """
    from maximask.postprocess import prior_shift

    shift = prior_shift(training_priors, priors)
    out = np.full(len(metrics), 0.5)
    for c, m in enumerate(metrics.values()):
        if m["best_f1_logit"] is None:
            continue
        if m["auc"] < MIN_AUC:
            out[c] = 1.0
        else:
            out[c] = 1.0 / (1.0 + np.exp(-(m["best_f1_logit"] + shift[c])))
    return out


#: Least validation ROC AUC (0.5: chance) at which a class's F1-optimal threshold is kept.
MIN_AUC = 0.6


def capped_thresholds(hist: ScoreHistogram, neg_frames, names, training_priors, priors):
    """Thresholds of the capped rule (under study), on prior-modified probabilities.

    Parameters
    ----------
    hist : ScoreHistogram
        Validation logits against the truth.
    neg_frames : ndarray, int, shape (n_frames, 14, n_bins)
        Histograms of the negative pixels, frame by frame (one "frame", all pixels: pooled cap).
    names : sequence of str
        Class abbreviations, in output order.
    training_priors, priors : array_like, shape (14,)

    Returns
    -------
    thresholds : ndarray, float64, shape (14,)
        Probability thresholds for ``classes.thresh``: 0.5 for a class absent from the validation
        set, 1 (never flagged) for a class the rule rejects.
    details : dict
        Per class, the output of :func:`maximask.metrics.mask_logit_threshold` and the threshold.
    """
    from maximask.postprocess import prior_shift

    shift = prior_shift(training_priors, priors)
    out = np.full(len(names), 0.5)
    details = {}
    for c, name in enumerate(names):
        if name == "BG":  # clean pixels: no cost to cap, the F1 optimum is the mask
            d = mask_logit_threshold(hist.pos[c], neg_frames[:, c], hist.edges, max_fpr=1.0, min_lift=0.0)
        else:
            d = mask_logit_threshold(hist.pos[c], neg_frames[:, c], hist.edges)
        if d["logit"] is not None:
            out[c] = 1.0 / (1.0 + np.exp(-(d["logit"] + shift[c])))
        elif d["branch"] != "empty":
            out[c] = 1.0
        details[name] = dict(d, threshold=float(out[c]))
    return out, details


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net-dir", default=str(default_net_dir()))
    p.add_argument("--out", required=True, help="JSON results")
    p.add_argument("--markdown", default=None, help="also write the table here")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--thresholds", action="store_true",
                   help="validation set: choose thresholds and write --thresh-file")
    p.add_argument("--thresh-file", default=str(default_config_dir() / "classes.thresh"))
    p.add_argument("--priors-file", default=str(default_config_dir() / "classes.priors"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rule", default="f1", choices=("f1", "frame-cap", "pooled-cap"),
                   help="with --thresholds: the shipped F1 rule (default) or the capped rule under study")
    p.add_argument("--score-thresh", nargs="+", default=None, metavar="FILE",
                   help="on the validation frames: F1, TPR and FPR of the masks of these classes.thresh "
                        "files (with the priors of --priors-file)")
    p.add_argument("--valid-seed", type=int, nargs="+", default=None,
                   help="with --thresholds: root seed(s) of the validation streams, --frames frames of "
                        "each (default: the network's training seed, from its metadata); to score two "
                        "networks on the same frames")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_REPLICATES, metavar="N",
                   help="held-out mode: N frame-bootstrap replicates for each class's AUC interval "
                        f"(default {BOOTSTRAP_REPLICATES}; 0: none)")
    args = p.parse_args(argv)

    net = Network(args.net_dir, num_threads=args.threads)
    t0 = time.time()
    if args.thresholds or args.score_thresh:
        from maximask.train import DEFAULT_SEED, VALID, frame_seed

        seeds = args.valid_seed or [int(net.metadata.extra.get("seed", DEFAULT_SEED))]
        n = args.frames or N_VALID_FRAMES
        seqs = [frame_seed(seed, VALID, 1000 + i) for seed in seeds for i in range(n)]
        shape = VALID_SHAPE
        what = f"validation streams: seeds {seeds}, spawn_key (1, 1000 + i), i < {n}"
    else:
        n = args.frames or N_FRAMES
        seqs = [np.random.SeedSequence(HELDOUT_SEED, spawn_key=(i,)) for i in range(n)]
        shape, what = FRAME_SHAPE, f"held-out: root seed {HELDOUT_SEED}, spawn_key (i,)"
    held_out = not (args.thresholds or args.score_thresh)
    bootstrap = held_out and args.bootstrap > 0
    hist, n_done, per_frame = score(net, frames(seqs, shape), per_frame=args.rule == "frame-cap" or bootstrap)
    neg_frames = None if per_frame is None else per_frame[1]
    metrics = all_metrics(hist, list(net.metadata.classes))
    method = None
    if bootstrap:
        replicates = frame_bootstrap_auc(per_frame[0][None], per_frame[1][None], args.bootstrap, BOOTSTRAP_SEED)[0]
        method = add_intervals(metrics, replicates, args.bootstrap, BOOTSTRAP_SEED)
    result = {
        "net_dir": str(args.net_dir),
        "model_id": net.model_id,
        "frames": n_done,
        "frame_shape": list(shape),
        "seeds": what,
        "wall_s": round(time.time() - t0, 1),
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "metrics": metrics,
    }
    if method:
        result["auc_ci95_method"] = method
    if args.score_thresh:
        from maximask.config import read_priors, read_thresholds

        result["mask_scores"] = {
            f: mask_scores(hist, list(net.metadata.classes), read_thresholds(f), net.metadata.training_priors,
                           read_priors(args.priors_file))
            for f in args.score_thresh}
        for f, sc in result["mask_scores"].items():
            print(f, " ".join(f"{k} {v['f1']:.3f}" for k, v in sc.items() if v["f1"] is not None))
    if args.thresholds:
        from maximask.config import read_priors

        priors = read_priors(args.priors_file)
        if args.rule == "f1":
            thr = choose_thresholds(metrics, net.metadata.training_priors, priors)
            result["rule"] = ("per class, the F1-maximising threshold on the validation pixels, "
                              "expressed on the probability after prior modification with classes.priors; "
                              f"1 (never flagged) for a class whose validation ROC AUC is below {MIN_AUC}")
        else:
            if neg_frames is None:
                neg_frames = hist.neg[None]
            thr, details = capped_thresholds(hist, neg_frames, list(net.metadata.classes),
                                             net.metadata.training_priors, priors)
            cap_on = "frame's" if args.rule == "frame-cap" else "validation"
            within = f"in at least {FRAME_QUANTILE} of the frames " if args.rule == "frame-cap" else ""
            result["rule"] = ("per class, the F1-maximising threshold on the validation pixels, raised "
                              f"where needed so that {within}at most {MAX_CLEAN_FLAGGED} of the {cap_on} "
                              "pixels without the class are flagged; 1 (never flagged) where the "
                              f"true-positive rate is then below {MIN_LIFT} times the false-positive rate; "
                              "BG: the F1 optimum; expressed on the probability after prior modification "
                              "with classes.priors")
            result["threshold_details"] = details
        result["priors"] = dict(zip(ABBRS, map(float, priors)))
        result["thresholds"] = dict(zip(ABBRS, map(float, thr)))
        lines = [f"{a} {t:.6g}" for a, t in zip(ABBRS, thr)]
        Path(args.thresh_file).write_text("\n".join(lines) + "\n")
    write_json(args.out, result)
    table = markdown_table(metrics)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
