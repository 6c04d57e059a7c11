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

import time

import numpy as np

from maximask.assemble import update_metadata
from maximask.columns import ColumnScore, HotLines
from maximask.network import Network
from maximask.normalize import normalize_image
from maximask.resources import default_net_dir
from pixel_scores import check, finish, fit_logistic, frames, logits, parse_arguments, sample, without

BLOCK, MIN_SCORE, MAX_SCORE, GATE = 64, 3.0, 30.0, -1.0
#: (name, root seed, frames, side), default class mix: the exploration batches the fit uses, and
#: the check batch (used nowhere else).
FIT_BATCHES = (("D1", 20261158, 24, 1024), ("D2", 20261159, 12, 2048))
CHECK_BATCH = ("C", 20261160, 24, 2048)


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
    z, s, g, t, w = [], [], [], [], []
    for name, seed, n, side in FIT_BATCHES:
        for i, (image, truth) in enumerate(frames(seed, n, side)):
            lg = logits(network, image)
            frame = normalize_image(image.copy(), network.metadata.normalisation).data
            score = HotLines.of_frame(frame, BLOCK).window(slice(0, side), slice(0, side))
            pick, weight = sample(truth[hcl], np.zeros(truth[hcl].shape, bool),
                                  np.random.default_rng((seed_base, seed, i)))
            z.append(lg[hcl].ravel()[pick])
            g.append(lg[sat].ravel()[pick])
            s.append(score.ravel()[pick])
            t.append(truth[hcl].ravel()[pick] > 0)
            w.append(weight)
    z, s, g, t, w = (np.concatenate(v).astype(np.float64) for v in (z, s, g, t, w))
    return fit_logistic(lambda p: line_logit(p, z, s, g), t, w, [1.0, -3.0])


def main(argv=None):
    args = parse_arguments(argv, __doc__.splitlines()[0], CHECK_BATCH)

    net_dir = args.net_dir or default_net_dir()
    network = Network(net_dir)
    t0 = time.time()
    result = {"net_dir": str(net_dir), "model_id": network.model_id,
              "form": {"block": BLOCK, "min_score": MIN_SCORE, "max_score": MAX_SCORE, "gate": GATE}}
    if args.fit:
        result["batches"] = [list(b) for b in FIT_BATCHES]
        result["fit"] = fit(without(network, "columns"))
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

            result["new_model_id"] = update_metadata(net_dir, update)
    else:
        hcl = list(network.metadata.classes).index("HCL")

        def without_hot_lines(truth):
            # "clean": every pixel of a frame without a hot column or row
            return np.full(truth.shape[1:], not truth[hcl].any())

        result.update(check(network, without(network, "columns"), "HCL", args.check_batch, args.thresh_file,
                            without_hot_lines))
    finish(args, result, t0)


if __name__ == "__main__":
    main()
