"""Frames too small for the context pass: the offsets that calibrate them, and their masks.

A frame whose binned version would be under ``maximask.context.MIN_BINNED_SIDE`` a side (under 512
px with b = 8) skips the context pass, so its NEB and OV logits are the network's full-resolution
ones, while the thresholds of ``classes.thresh`` were chosen (on 1024^2 frames) on the logits the
pass combines. Without a correction, the shipped NEB threshold flags about half of a small frame's
clean pixels.

``--fit`` applies the thresholds' own rule to small frames: on the validation batch S1, the
F1-optimal raw-logit threshold ``L_small`` of each pass class's logits without the pass; the
offset is ``L_pass - L_small``, ``L_pass`` the raw-logit threshold of ``classes.thresh`` (after the
default prior modification). Adding it to those logits puts the shipped threshold where the F1
rule puts it on small frames. A class that the thresholds never flag (threshold 1) gets none.
``--write-metadata`` stores the offsets in the network's metadata (``context.without_pass``).

Without ``--fit``, the masks of the shipped thresholds are scored on the check batch S2, with the
network's offsets and with none: pooled ROC AUC (which an offset does not change), and the mask's
F1, TPR and FPR, for every class of the pass and by frame shape.

Both batches cycle through :data:`SHAPES`, every shape under the pass's limit, squares and strips,
with the simulator's default class mix; their root seeds are used nowhere else.

Usage::

    python benchmarks/small_frames.py --fit --out benchmarks/results/small_frames_fit.json
    python benchmarks/small_frames.py --out benchmarks/results/small_frames.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from maximask.assemble import update_metadata
from maximask.config import read_priors, read_thresholds
from maximask.context import ContextPass
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, all_metrics
from maximask.network import Network
from maximask.postprocess import logit_thresholds, prior_shift
from maximask.resources import default_config_dir, default_net_dir
from pixel_scores import without
from quality import mask_scores
from results_io import write_json

#: Frame shapes (rows, columns) of both batches, cycled: every one skips the pass (b = 8).
SHAPES = ((128, 128), (150, 200), (256, 256), (320, 320), (384, 384), (448, 448), (500, 500),
          (256, 1024), (400, 2048), (480, 640))
#: (name, root seed, frames): the batch the offsets are fitted on, and the batch they are checked on.
FIT_BATCH = ("S1", 20261151, 60)
CHECK_BATCH = ("S2", 20261152, 60)


def batch(seed, n):
    """Yield (shape, image, truth) for the frames of a batch (spawn keys (i,))."""
    from maximask.sim import simulate_frame

    for i, seq in enumerate(np.random.SeedSequence(seed).spawn(n)):
        shape = SHAPES[i % len(SHAPES)]
        image, truth, _ = simulate_frame(shape, np.random.default_rng(seq))
        yield shape, image, truth


def fit_offsets(hist: ScoreHistogram, names, pass_names, raw_thresholds) -> dict:
    """The offsets of the rule (module docstring) from small frames' logits without the pass.

    Parameters
    ----------
    hist : ScoreHistogram
        Logits without the pass (and without offsets) against the truth.
    names : sequence of str
        Class abbreviations, in output order.
    pass_names : sequence of str
        Classes of the context pass.
    raw_thresholds : ndarray, shape (14,)
        Raw-logit thresholds of ``classes.thresh`` (inf: never flagged).

    Returns
    -------
    dict
        Per pass class: ``offset`` (None when it gets none), ``L_pass``, ``L_small``, ``auc``.
    """
    metrics = all_metrics(hist, names)
    out = {}
    for name in pass_names:
        c = list(names).index(name)
        m = metrics[name]
        l_pass = float(raw_thresholds[c])
        if not np.isfinite(l_pass) or m["best_f1_logit"] is None:
            out[name] = {"offset": None, "L_pass": l_pass if np.isfinite(l_pass) else None,
                         "L_small": m["best_f1_logit"], "auc": m["auc"]}
            continue
        out[name] = {"offset": round(l_pass - m["best_f1_logit"], 4), "L_pass": l_pass,
                     "L_small": m["best_f1_logit"], "auc": m["auc"], "best_f1": m["best_f1"]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net-dir", default=None)
    p.add_argument("--fit", action="store_true", help="fit the offsets on S1 (default: score S2)")
    p.add_argument("--frames", type=int, default=None, help="frames of the batch (default 60)")
    p.add_argument("--write-metadata", action="store_true",
                   help="with --fit, store the offsets in the network's metadata.json")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    net_dir = args.net_dir or default_net_dir()
    network = Network(net_dir)
    meta = network.metadata
    names = list(meta.classes)
    plan = ContextPass.from_metadata(meta.context, names)
    if plan is None:
        sys.exit(f"{net_dir}: the network has no context pass")
    pass_names = [names[c] for c in plan.channels]
    cfg = default_config_dir()
    thresholds = read_thresholds(cfg / "classes.thresh")
    priors = read_priors(cfg / "classes.priors")
    raw = logit_thresholds(thresholds, prior_shift(meta.training_priors, priors))
    name, seed, n = FIT_BATCH if args.fit else CHECK_BATCH
    n = args.frames or n
    plain = without(network, "context", "without_pass")
    t0 = time.time()
    result = {"batch": name, "seed": seed, "frames": n, "shapes": [list(s) for s in SHAPES],
              "net_dir": str(net_dir), "model_id": network.model_id}

    def logits(net, image):
        return infer(image, net, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))

    if args.fit:
        hist = ScoreHistogram(len(names))
        for _, image, truth in batch(seed, n):
            hist.add(logits(plain, image), truth)
        result["classes"] = fit_offsets(hist, names, pass_names, raw)
        offsets = {k: v["offset"] for k, v in result["classes"].items() if v["offset"] is not None}
        result["without_pass"] = offsets
        if args.write_metadata:

            def update(doc):
                doc["context"]["without_pass"] = offsets
                doc.setdefault("extra", {})["without_pass_fit"] = (
                    f"F1 rule of the thresholds on validation batch {name} (seed {seed}, {n} frames under the "
                    "pass's limit), benchmarks/small_frames.py --fit; docs/MODEL.md 'Frames too small for the "
                    "context pass'")

            result["new_model_id"] = update_metadata(net_dir, update)
    else:
        variants = {"offsets": network, "none": plain}
        pooled = {v: ScoreHistogram(len(names)) for v in variants}
        by_shape = {(s, v): ScoreHistogram(len(names)) for s in SHAPES for v in variants}
        for shape, image, truth in batch(seed, n):
            for v, net in variants.items():
                h = ScoreHistogram(len(names))
                h.add(logits(net, image), truth)
                pooled[v].merge(h)
                by_shape[shape, v].merge(h)

        def summary(hist):
            m = all_metrics(hist, names)
            masks = mask_scores(hist, names, thresholds, meta.training_priors, priors)
            return {k: {"auc": m[k]["auc"], "n_pos": m[k]["n_pos"], **masks[k]} for k in pass_names}

        result["offsets"] = (meta.context or {}).get("without_pass", {})
        result["pooled"] = {v: summary(h) for v, h in pooled.items()}
        result["by_shape"] = {f"{s[0]}x{s[1]}": {v: summary(by_shape[s, v]) for v in variants} for s in SHAPES}
    result["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out, result)
    print(json.dumps(result if args.fit else result["pooled"], indent=1))


if __name__ == "__main__":
    main()
