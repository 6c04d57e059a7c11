"""The hot-column score (``maximask.columns``): its fit, and its check against the network alone.

The form is fixed (docs/MODEL.md, "Hot columns from their neighbours"):
``HCL := logaddexp(HCL, a ln(min(s, MAX_SCORE)) + b)`` where ``s > MIN_SCORE`` and the SAT logit is
below ``GATE``, ``s`` the score of :class:`maximask.columns.HotLines` over blocks of ``BLOCK``.

``--fit`` fits ``a`` and ``b`` by logistic regression of the HCL truth on the pixels of the two
exploration batches (every positive, 2 % of the negatives, weighted back), with the network's
logits without the score; ``--write-metadata`` stores the entry in the network's metadata.json.

Without ``--fit``, the check batch C is scored, the network with its score against the same
network without it: HCL pooled ROC AUC and AP; the HCL mask's F1, TPR and FPR at the thresholds of
``--thresh-file``; and the fraction of the pixels flagged HCL in C's frames without a hot column
or row.

Usage::

    python benchmarks/hot_columns.py --fit --write-metadata --net-dir NET --out FIT.json
    python benchmarks/hot_columns.py --net-dir NET --thresh-file THRESH --out CHECK.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
from scipy.optimize import minimize

from maximask.columns import ColumnScore, HotLines
from maximask.config import read_priors, read_thresholds
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, all_metrics
from maximask.network import Network
from maximask.normalize import normalize_image
from maximask.resources import default_config_dir, default_net_dir
from quality import mask_scores
from results_io import update_network_metadata, write_json

BLOCK, MIN_SCORE, MAX_SCORE, GATE = 64, 3.0, 30.0, -1.0
#: (name, root seed, frames, side), default class mix: the exploration batches the fit uses, and
#: the check batch (used nowhere else).
FIT_BATCHES = (("D1", 20261158, 24, 1024), ("D2", 20261159, 12, 2048))
CHECK_BATCH = ("C", 20261160, 24, 2048)
NEGATIVE_SAMPLE = 0.02


def frames(seed, n, side):
    """Yield (image, truth) for the frames of a batch (spawn keys (i,))."""
    from maximask.sim import simulate_frame

    for seq in np.random.SeedSequence(seed).spawn(n):
        image, truth, _ = simulate_frame((side, side), np.random.default_rng(seq))
        yield image, truth


def without_score(network):
    """A copy of ``network`` without its hot-column score (shares the runtimes)."""
    other = copy.copy(network)
    meta = copy.copy(network.metadata)
    meta.columns = None
    other.metadata = meta
    return other


def logits(network, image):
    return infer(image.copy(), network, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))


def line_logit(params, z, s, gate_logit):
    """The HCL logit with the score of slope and offset ``params`` added (the form above)."""
    a, b = params
    hit = (s > MIN_SCORE) & (gate_logit < GATE)
    line = a * np.log(np.clip(s, MIN_SCORE, MAX_SCORE)) + b
    return np.where(hit, np.logaddexp(z, line), z)


def fit(network, seed_base=0):
    """Slope and offset of the score, and the sample's size, from the exploration batches."""
    names = list(network.metadata.classes)
    hcl, sat = names.index("HCL"), names.index("SAT")
    z, s, g, t = [], [], [], []
    for name, seed, n, side in FIT_BATCHES:
        for i, (image, truth) in enumerate(frames(seed, n, side)):
            lg = logits(network, image)
            frame = normalize_image(image.copy(), network.metadata.normalisation).data
            score = HotLines.of_frame(frame, BLOCK).window(slice(0, side), slice(0, side))
            truth_hcl = truth[hcl].ravel() > 0
            pick = truth_hcl | (np.random.default_rng((seed_base, seed, i)).random(truth_hcl.size) < NEGATIVE_SAMPLE)
            z.append(lg[hcl].ravel()[pick])
            g.append(lg[sat].ravel()[pick])
            s.append(score.ravel()[pick])
            t.append(truth_hcl[pick])
    z, s, g, t = (np.concatenate(v).astype(np.float64) for v in (z, s, g, t))
    weight = np.where(t > 0, 1.0, 1.0 / NEGATIVE_SAMPLE)

    def loss(params):
        lg = line_logit(params, z, s, g)
        return float(np.sum(weight * (np.logaddexp(0, lg) - t * lg)) / weight.sum())

    result = minimize(loss, [1.0, -3.0], method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-9})
    return {"slope": round(float(result.x[0]), 4), "offset": round(float(result.x[1]), 4),
            "loss": result.fun, "pixels": int(t.size), "positives": int(t.sum())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net-dir", default=None)
    p.add_argument("--fit", action="store_true", help="fit slope and offset (default: score batch C)")
    p.add_argument("--write-metadata", action="store_true",
                   help="with --fit, store the score in the network's metadata.json")
    p.add_argument("--thresh-file", default=str(default_config_dir() / "classes.thresh"))
    p.add_argument("--frames", type=int, default=None, help="frames of batch C (default 24)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    net_dir = args.net_dir or default_net_dir()
    network = Network(net_dir)
    plain = without_score(network)
    t0 = time.time()
    result = {"net_dir": str(net_dir), "model_id": network.model_id,
              "form": {"block": BLOCK, "min_score": MIN_SCORE, "max_score": MAX_SCORE, "gate": GATE}}
    if args.fit:
        result["batches"] = [list(b) for b in FIT_BATCHES]
        result["fit"] = fit(plain)
        if args.write_metadata:
            entry = {"class": "HCL", "gate_class": "SAT", "gate": GATE, "slope": result["fit"]["slope"],
                     "offset": result["fit"]["offset"], "min_score": MIN_SCORE, "max_score": MAX_SCORE,
                     "block": BLOCK}
            ColumnScore.from_metadata(entry, network.metadata.classes)  # raise if malformed

            def update(doc):
                doc["columns"] = entry
                doc.setdefault("extra", {})["columns_fit"] = (
                    "logistic regression on exploration batches D1 (seed 20261158, 24 x 1024^2) and D2 (seed "
                    "20261159, 12 x 2048^2), benchmarks/hot_columns.py --fit; docs/MODEL.md 'Hot columns from "
                    "their neighbours'")

            result["new_model_id"] = update_network_metadata(net_dir, update)
    else:
        meta = network.metadata
        names = list(meta.classes)
        hcl = names.index("HCL")
        name, seed, n, side = CHECK_BATCH
        n = args.frames or n
        thresholds = read_thresholds(args.thresh_file)
        priors = read_priors(default_config_dir() / "classes.priors")
        variants = {"score": network, "network": plain}
        pooled = {v: ScoreHistogram(1) for v in variants}
        clean = {v: ScoreHistogram(1) for v in variants}
        n_clean = 0
        for image, truth in frames(seed, n, side):
            without = not truth[hcl].any()
            n_clean += without
            for v, net in variants.items():
                lg = logits(net, image)[hcl : hcl + 1]
                pooled[v].add(lg, truth[hcl : hcl + 1])
                if without:
                    clean[v].add(lg, truth[hcl : hcl + 1])
        thr, pri, tpri = ([np.asarray(x)[hcl]] for x in (thresholds, priors, meta.training_priors))
        result.update(batch=name, seed=seed, frames=n, side=side, frames_without_hcl=n_clean,
                      thresh_file=args.thresh_file, hcl_threshold=float(thr[0]))
        for v in variants:
            m = all_metrics(pooled[v], ["HCL"])["HCL"]
            result[v] = {"auc": m["auc"], "ap": m["ap"], "best_f1": m["best_f1"],
                         "mask": mask_scores(pooled[v], ["HCL"], thr, tpri, pri)["HCL"],
                         "flagged_without_hcl": mask_scores(clean[v], ["HCL"], thr, tpri, pri)["HCL"]["fpr"]}
    result["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
