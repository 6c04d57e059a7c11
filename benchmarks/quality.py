"""Quality of a maximask network on a held-out simulated benchmark (and threshold selection).

The frames are made by :func:`maximask.sim.simulate_frame` with the fixed root seed
:data:`HELDOUT_SEED`, which no training run uses (training uses ``maximask.train.DEFAULT_SEED`` with
its own spawn streams). The network runs exactly as the ``maximask`` command runs it: whole-frame
normalisation, tiling with the network's margin, LiteRT inference
(:func:`maximask.engine.infer`); raw logits are scored against the simulator's truth.

Reported per class: ROC AUC, TPR at FPR 1e-3 and 1e-2, average precision, best F1 (all invariant to
the prior modification, which is a per-class monotonic shift of the logits).

``--thresholds`` instead runs on the *validation* stream of the training seed (spawn key 1, which
the training loop only monitors) and writes ``data/configs/classes.thresh``: for each class, the
threshold on the prior-modified probability that maximises the F1 score on the validation pixels,
i.e. ``t = sigmoid(L* + log odds(prior) - log odds(training prior))`` where ``L*`` is the
F1-optimal threshold on the raw logits and the priors are those of ``data/configs/classes.priors``;
a class whose validation ROC AUC is below ``MIN_AUC`` (0.6) gets 1, never flagged.

Usage::

    python benchmarks/quality.py --out benchmarks/results/quality.json --markdown docs/quality_table.md
    python benchmarks/quality.py --thresholds --out benchmarks/results/thresholds.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from maximask.classes import ABBRS
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, all_metrics
from maximask.network import Network
from maximask.resources import default_config_dir, default_net_dir

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


def score(network, frame_iter):
    """Accumulate the network's logits against the truth of each frame."""
    hist = ScoreHistogram(len(network.metadata.classes))
    n = 0
    for image, truth in frame_iter:
        logits = infer(image, network, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))
        hist.add(logits, truth)
        n += 1
    return hist, n


def markdown_table(metrics: dict) -> str:
    """Per-class metrics as a markdown table."""
    rows = ["| class | pixels (pos) | ROC AUC | TPR @ FPR 1e-3 | TPR @ FPR 1e-2 | AP | best F1 |",
            "|---|---:|---:|---:|---:|---:|---:|"]

    def f(v, d=4):
        return "n/a" if v is None else f"{v:.{d}f}"

    for name, m in metrics.items():
        rows.append(f"| {name} | {m['n_pos']} | {f(m['auc'])} | {f(m['tpr_at_fpr_1e-3'], 3)} | "
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
    p.add_argument("--valid-seed", type=int, default=None,
                   help="with --thresholds: root seed of the validation stream (default: the network's "
                        "training seed, from its metadata); to score two networks on the same frames")
    args = p.parse_args(argv)

    net = Network(args.net_dir, num_threads=args.threads)
    t0 = time.time()
    if args.thresholds:
        from maximask.train import DEFAULT_SEED, VALID, frame_seed

        seed = args.valid_seed
        if seed is None:
            seed = int(net.metadata.extra.get("seed", DEFAULT_SEED))
        n = args.frames or N_VALID_FRAMES
        seqs = [frame_seed(seed, VALID, 1000 + i) for i in range(n)]
        shape, what = VALID_SHAPE, f"validation stream: seed {seed}, spawn_key (1, 1000 + i)"
    else:
        n = args.frames or N_FRAMES
        seqs = [np.random.SeedSequence(HELDOUT_SEED, spawn_key=(i,)) for i in range(n)]
        shape, what = FRAME_SHAPE, f"held-out: root seed {HELDOUT_SEED}, spawn_key (i,)"
    hist, n_done = score(net, frames(seqs, shape))
    metrics = all_metrics(hist, list(net.metadata.classes))
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
    if args.thresholds:
        from maximask.config import read_priors

        priors = read_priors(args.priors_file)
        thr = choose_thresholds(metrics, net.metadata.training_priors, priors)
        result["rule"] = ("per class, the F1-maximising threshold on the validation pixels, "
                          "expressed on the probability after prior modification with classes.priors; "
                          f"1 (never flagged) for a class whose validation ROC AUC is below {MIN_AUC}")
        result["priors"] = dict(zip(ABBRS, map(float, priors)))
        result["thresholds"] = dict(zip(ABBRS, map(float, thr)))
        lines = [f"{a} {t:.6g}" for a, t in zip(ABBRS, thr)]
        Path(args.thresh_file).write_text("\n".join(lines) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    table = markdown_table(metrics)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
