"""The pair terms of the dip and peak scores (``dips.pairs``, ``peaks.pairs``): fit and check.

The form is fixed (docs/MODEL.md, "Pairs of hot or dead pixels"): for HP (DP),
``logaddexp(z, a ln(d2) + b)`` where ``d2 > MIN_DIP`` and the one-pixel score does not apply,
``d2`` the pixel's height above (depth below) its second highest (lowest) neighbour
(:func:`maximask.dips.neighbour_pair_dips`).

``--fit`` fits ``a`` and ``b`` for each class by logistic regression of its truth on the pixels of
the exploration batch P (every positive, every pair candidate, 2 % of the other pixels, weighted
back), with the network's logits without the pair terms (its one-pixel scores included);
``--write-metadata`` stores them in the network's metadata.json (``--classes``: only those
classes' terms).

Without ``--fit``, the check batch C3 is scored for each class, the network with its pair terms
against the same network without them, as ``hot_pixels.py`` does.

Usage::

    python benchmarks/pixel_pairs.py --fit --write-metadata --net-dir NET --out FIT.json [--classes DP]
    python benchmarks/pixel_pairs.py --net-dir NET --thresh-file THRESH --out CHECK.json
"""

from __future__ import annotations

import time

import numpy as np

from maximask.assemble import update_metadata
from maximask.dips import neighbour_pair_dips
from maximask.network import Network
from maximask.normalize import normalize_image
from maximask.resources import default_net_dir
from pixel_scores import check, finish, fit_logistic, frames, logits, parse_arguments, sample, without

MIN_DIP = 1.0
#: class -> (metadata entry, upward)
TERMS = {"HP": ("peaks", True), "DP": ("dips", False)}
#: (name, root seed, frames, side), default class mix: the exploration batch the fit uses, and the
#: check batch (used nowhere else).
FIT_BATCH = ("P", 20261166, 24, 1024)
CHECK_BATCH = ("C3", 20261167, 24, 2048)


def without_pairs(network):
    """A copy of ``network`` whose dip and peak scores have no pair term (shares the runtimes)."""
    for entry, _ in TERMS.values():
        network = without(network, entry, "pairs")
    return network


def pair_logit(params, z, d2):
    """The logit with the pair term of slope and offset ``params`` where ``d2 > 0`` (the pixels
    :func:`neighbour_pair_dips` lists; 0 elsewhere)."""
    a, b = params
    return np.where(d2 > 0, np.logaddexp(z, a * np.log(np.maximum(d2, MIN_DIP)) + b), z)


def fit(plain):
    """Slope and offset of each class's pair term, from batch P."""
    names = list(plain.metadata.classes)
    name, seed, n, side = FIT_BATCH
    samples = {c: ([], [], [], []) for c in TERMS}
    for i, (image, truth) in enumerate(frames(seed, n, side)):
        lg = logits(plain, image)
        frame = normalize_image(image.copy(), plain.metadata.normalisation).data
        for cls, (_, upward) in TERMS.items():
            c = names.index(cls)
            iy, ix, d2 = neighbour_pair_dips(frame, slice(0, side), slice(0, side), MIN_DIP, upward=upward)
            dense = np.zeros((side, side), np.float32)
            dense[iy, ix] = d2
            pick, weight = sample(truth[c], dense > 0, np.random.default_rng((seed, i, c)))
            for store, values in zip(samples[cls], (lg[c].ravel()[pick], dense.ravel()[pick],
                                                    truth[c].ravel()[pick] > 0, weight)):
                store.append(values)
    out = {}
    for cls, (z, d2, t, w) in samples.items():
        z, d2, t, w = (np.concatenate(v).astype(np.float64) for v in (z, d2, t, w))
        out[cls] = fit_logistic(lambda p: pair_logit(p, z, d2), t, w, [1.0, -6.0])
    return out


def main(argv=None):
    args = parse_arguments(argv, __doc__.splitlines()[0], CHECK_BATCH, classes=TERMS)
    net_dir = args.net_dir or default_net_dir()
    network = Network(net_dir)
    plain = without_pairs(network)
    t0 = time.time()
    result = {"net_dir": str(net_dir), "model_id": network.model_id, "form": {"min_dip": MIN_DIP}}
    if args.fit:
        result["batch"] = list(FIT_BATCH)
        result["fit"] = fit(plain)
        if args.write_metadata:
            def update(doc):
                for cls in args.classes:
                    doc[TERMS[cls][0]]["pairs"] = {k: result["fit"][cls][k] for k in ("slope", "offset")}
                doc.setdefault("extra", {})["pairs_fit"] = (
                    "logistic regression on exploration batch P (seed 20261166, 24 x 1024^2), "
                    "benchmarks/pixel_pairs.py --fit; docs/MODEL.md 'Pairs of hot or dead pixels'; "
                    f"written for {', '.join(args.classes)}")

            result["new_model_id"] = update_metadata(net_dir, update)
    else:
        contaminants = [c for c, name in enumerate(network.metadata.classes) if name != "BG"]

        def no_contaminant(truth):
            return ~truth[contaminants].any(axis=0)

        result["classes"] = {cls: check(network, plain, cls, args.check_batch, args.thresh_file, no_contaminant)
                             for cls in TERMS}
    finish(args, result, t0)


if __name__ == "__main__":
    main()
