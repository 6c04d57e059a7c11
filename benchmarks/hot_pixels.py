"""The hot-pixel peak score (metadata ``peaks``, ``maximask.dips``): its fit, and its check.

The form is fixed (docs/MODEL.md, "Hot-pixel peaks"): ``HP := logaddexp(HP, a ln(peak) + b)`` where
``peak > MIN_PEAK``, ``peak = pixel - max(8 neighbours)`` in linear noise units
(:func:`maximask.dips.neighbour_dips` with ``upward=True``).

``--fit`` fits ``a`` and ``b`` by logistic regression of the HP truth on the pixels of the
exploration batch E (every positive, every peak, 2 % of the other pixels, weighted back), with
the network's logits without the score; ``--write-metadata`` stores the entry in the network's
metadata.json.

Without ``--fit``, the check batch C2 is scored, the network with its score against the same
network without it: HP pooled ROC AUC and AP; the HP mask's F1, TPR and FPR at the thresholds of
``--thresh-file``; and the share of C2's pixels without any contaminant class (BG aside) that the
HP mask flags (``flagged_clean``).

Usage::

    python benchmarks/hot_pixels.py --fit --write-metadata --net-dir NET --out FIT.json
    python benchmarks/hot_pixels.py --net-dir NET --thresh-file THRESH --out CHECK.json
"""

from __future__ import annotations

import time

import numpy as np

from maximask.assemble import update_metadata
from maximask.dips import DipScore, neighbour_dips
from maximask.network import Network
from maximask.normalize import normalize_image
from maximask.resources import default_net_dir
from pixel_scores import check, finish, fit_logistic, frames, logits, parse_arguments, sample, without

MIN_PEAK = 1.0
#: (name, root seed, frames, side), default class mix: the exploration batch the fit uses, and the
#: check batch (used nowhere else).
FIT_BATCH = ("E", 20261162, 24, 1024)
CHECK_BATCH = ("C2", 20261163, 24, 2048)


def peak_logit(params, z, peak):
    """The HP logit with the score of slope and offset ``params`` added (the form above)."""
    a, b = params
    return np.where(peak > MIN_PEAK, np.logaddexp(z, a * np.log(np.maximum(peak, MIN_PEAK)) + b), z)


def fit(network, seed_base=0):
    """Slope and offset of the score, and the sample's size, from batch E."""
    hp = list(network.metadata.classes).index("HP")
    name, seed, n, side = FIT_BATCH
    z, s, t, w = [], [], [], []
    for i, (image, truth) in enumerate(frames(seed, n, side)):
        lg = logits(network, image)
        frame = normalize_image(image.copy(), network.metadata.normalisation).data
        iy, ix, height = neighbour_dips(frame, slice(0, side), slice(0, side), MIN_PEAK, upward=True)
        peak = np.zeros((side, side), np.float32)
        peak[iy, ix] = height
        pick, weight = sample(truth[hp], peak > MIN_PEAK, np.random.default_rng((seed_base, seed, i)))
        z.append(lg[hp].ravel()[pick])
        s.append(peak.ravel()[pick])
        t.append(truth[hp].ravel()[pick] > 0)
        w.append(weight)
    z, s, t, w = (np.concatenate(v).astype(np.float64) for v in (z, s, t, w))
    return fit_logistic(lambda p: peak_logit(p, z, s), t, w, [1.0, -6.0])


def main(argv=None):
    args = parse_arguments(argv, __doc__.splitlines()[0], CHECK_BATCH)

    net_dir = args.net_dir or default_net_dir()
    network = Network(net_dir)
    t0 = time.time()
    result = {"net_dir": str(net_dir), "model_id": network.model_id, "form": {"min_peak": MIN_PEAK}}
    if args.fit:
        result["batch"] = list(FIT_BATCH)
        result["fit"] = fit(without(network, "peaks"))
        if args.write_metadata:
            entry = {"class": "HP", "slope": result["fit"]["slope"], "offset": result["fit"]["offset"],
                     "min_dip": MIN_PEAK}
            DipScore.from_metadata(entry, network.metadata.classes, "peaks")  # raise if malformed

            def update(doc):
                doc["peaks"] = entry
                doc.setdefault("extra", {})["peaks_fit"] = (
                    "logistic regression on exploration batch E (seed 20261162, 24 x 1024^2), "
                    "benchmarks/hot_pixels.py --fit; docs/MODEL.md 'Hot-pixel peaks'")

            result["new_model_id"] = update_metadata(net_dir, update)
    else:
        names = list(network.metadata.classes)
        contaminants = [c for c, name in enumerate(names) if name != "BG"]

        def no_contaminant(truth):
            return ~truth[contaminants].any(axis=0)

        result.update(check(network, without(network, "peaks"), "HP", args.check_batch, args.thresh_file,
                            no_contaminant))
    finish(args, result, t0)


if __name__ == "__main__":
    main()
