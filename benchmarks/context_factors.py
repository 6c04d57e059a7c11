"""NEB from the context network at several binnings: the shipped treatment against a candidate.

The shipped context pass sets NEB to the mean of the full-resolution logit and the context
network's logit on the frame binned b x b (b = 8). A candidate adds more binnings: NEB becomes the
mean of the full-resolution logit and the context network's logits at each factor of
``--factors`` (the context network is the one trained at b = 8; see docs/MODEL.md, "NEB from two
binnings"). This script scores both, pooled ROC AUC of NEB per validation batch (those of
``context_network.py``, and V5, first used here), from one simulation and one full-resolution pass
per frame. The first frame checks that the shipped treatment computed here equals the engine's own
output.

Usage::

    python benchmarks/context_factors.py --factors 4 8 --batches V1 V2 V3 V4 V5 \
        --out benchmarks/results/context_factors.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from context_network import BATCHES, binned_logits
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, all_metrics
from maximask.network import Network
from maximask.resources import default_net_dir
from results_io import write_json

#: Batches of context_network.py, and V5 (root seed 20261157, 30 frames of 2048^2), first used for
#: the choice of binnings.
ALL_BATCHES = BATCHES + (("V5", 20261157, 30, 2048),)


def score_batch(network, seed, n, side, factors, shipped_factor, check_engine=False):
    """NEB histograms (shipped, candidate, full resolution alone) over a batch of frames."""
    from maximask.sim import simulate_frame

    names = list(network.metadata.classes)
    neb = [names.index("NEB")]
    ctx = network.context_network
    hists = {v: ScoreHistogram(1) for v in ("full", "shipped", "candidate")}
    for i, seq in enumerate(np.random.SeedSequence(seed).spawn(n)):
        image, truth, _ = simulate_frame((side, side), np.random.default_rng(seq))
        full = infer(image.copy(), network, batch_size=1, context=False,
                     tile_transform=lambda lg: np.moveaxis(lg[..., neb], -1, 0))
        binned = {f: binned_logits(image, ctx, f, neb) for f in set(factors) | {shipped_factor}}
        shipped = 0.5 * (full + binned[shipped_factor])
        if check_engine and i == 0:
            engine = infer(image.copy(), network, batch_size=1,
                           tile_transform=lambda lg: np.moveaxis(lg[..., neb], -1, 0))
            np.testing.assert_allclose(shipped, engine, rtol=0, atol=1e-4)
        candidate = (full + sum(binned[f] for f in factors)) / (1 + len(factors))
        t = truth[neb]
        for v, lg in (("full", full), ("shipped", shipped), ("candidate", candidate)):
            hists[v].add(lg, t)
    return hists


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net-dir", default=None)
    p.add_argument("--factors", type=int, nargs="+", required=True)
    p.add_argument("--batches", nargs="+", default=[b[0] for b in ALL_BATCHES])
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    network = Network(args.net_dir or default_net_dir())
    context = network.metadata.context or {}
    if context.get("classes", {}).get("NEB") != "mean" or "NEB" not in context.get("network_classes", ["NEB"]):
        sys.exit("the shipped context pass must set NEB in mean mode from its context network")
    result = {"model_id": network.model_id, "factors": args.factors, "shipped_factor": context["factor"],
              "batches": {}}
    t0 = time.time()
    for k, (name, seed, n, side) in enumerate(b for b in ALL_BATCHES if b[0] in args.batches):
        t = time.time()
        hists = score_batch(network, seed, n, side, args.factors, int(context["factor"]), check_engine=k == 0)
        result["batches"][name] = {"seed": seed, "frames": n, "side": side, "wall_s": round(time.time() - t, 1),
                                   **{v: all_metrics(h, ["NEB"])["NEB"]["auc"] for v, h in hists.items()}}
        print(name, result["batches"][name], flush=True)
    aucs = {v: [b[v] for b in result["batches"].values()] for v in ("shipped", "candidate")}
    gains = np.subtract(aucs["candidate"], aucs["shipped"])
    result["summary"] = {"wins": int((gains > 0).sum()), "batches": len(gains),
                         "mean_shipped": float(np.mean(aucs["shipped"])),
                         "mean_candidate": float(np.mean(aucs["candidate"])),
                         "worst_gain": float(gains.min())}
    result["wall_s"] = round(time.time() - t0, 1)
    print(result["summary"])
    write_json(args.out, result)


if __name__ == "__main__":
    main()
