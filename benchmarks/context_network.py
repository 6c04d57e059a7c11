"""Which network the context pass should run: the shipped one or a candidate context network.

The context pass (:mod:`maximask.context`) runs a network on the frame binned b x b and puts its
logits into some classes (``"mean"`` with the full-resolution logits, or ``"coarse"``: alone). This
script scores, on validation batches that no training stream and no benchmark uses, the pooled ROC
AUC of each context class at full resolution for:

* ``full``: the full-resolution logits alone (no context pass);
* ``shipped``: the context pass as the engine runs it from the shipped network's metadata (the
  network, or its context network, on the binned frame, in its modes);
* ``cand-mean`` and ``cand-coarse``: the candidate network on the binned frame, in either mode.

The full-resolution logits always come from the shipped network (``--net-dir``); only the binned
pass changes. The default batches are those the context pass was chosen on (docs/MODEL.md,
"Context pass"): root seeds 20261125 and 20261126 (2048^2) and 20261127 (1024^2); ``--batches``
adds V4 (20261142, 2048^2), first used for the context network's continuation. Spawn keys ``(i,)``,
the simulator's default class mix. The shipped treatment runs the full-resolution pass a second
time (the engine's own context pass, not a copy of its combination), which costs ~1.4 s per 2048^2
frame.

Usage::

    python benchmarks/context_network.py --candidate runs/ctxnet/net \
        --out benchmarks/results/context_network.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from maximask.context import ContextPass, bin_frame, upsample
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, all_metrics
from maximask.network import Network
from maximask.resources import default_net_dir
from results_io import write_json

#: (name, root seed, frames, side): the validation batches of the context-pass rule (V1-V3, the
#: default), and V4, first used for the context network's continuation (docs/MODEL.md).
BATCHES = (("V1", 20261125, 30, 2048), ("V2", 20261126, 30, 2048), ("V3", 20261127, 40, 1024),
           ("V4", 20261142, 30, 2048))
CLASSES = ("NEB", "BBG", "OV")
VARIANTS = ("full", "shipped", "cand-mean", "cand-coarse")


def binned_logits(image, network, factor, channels):
    """A network's logits of ``channels`` on the frame binned ``factor`` x ``factor``, interpolated
    back to every pixel, shape (K, H, W); as :mod:`maximask.engine` computes them."""
    coarse = infer(bin_frame(image, factor), network, batch_size=1, context=False,
                   tile_transform=lambda lg: np.moveaxis(lg[..., channels], -1, 0))
    h, w = np.shape(image)
    return upsample(coarse, factor, slice(0, h), slice(0, w))


def score_batch(shipped, candidate, seeds, side, names=CLASSES):
    """Histograms of each variant's logits of ``names`` against the truth, over a batch of frames."""
    from maximask.sim import simulate_frame

    classes = list(shipped.metadata.classes)
    channels = [classes.index(n) for n in names]
    plan = ContextPass.from_metadata(shipped.metadata.context, classes)
    hists = {v: ScoreHistogram(len(names)) for v in VARIANTS}
    for seq in seeds:
        image, truth, _ = simulate_frame((side, side), np.random.default_rng(seq))
        full = infer(image, shipped, batch_size=1, context=False,
                     tile_transform=lambda lg: np.moveaxis(lg[..., channels], -1, 0))
        # the shipped treatment is whatever the engine does with the shipped metadata
        shipped_logits = infer(image, shipped, batch_size=1,
                               tile_transform=lambda lg: np.moveaxis(lg[..., channels], -1, 0))
        cand_ctx = binned_logits(image, candidate, plan.factor, channels)
        t = truth[channels]
        hists["full"].add(full, t)
        hists["shipped"].add(shipped_logits, t)
        hists["cand-mean"].add(0.5 * (full + cand_ctx), t)
        hists["cand-coarse"].add(cand_ctx, t)
    return hists


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net-dir", default=str(default_net_dir()), help="the shipped network")
    p.add_argument("--candidate", required=True, help="network directory of the candidate context network")
    p.add_argument("--out", required=True, help="JSON results")
    p.add_argument("--frames", type=int, default=None, help="frames per batch (default: each batch's own)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batches", nargs="+", default=["V1", "V2", "V3"], choices=[b[0] for b in BATCHES],
                   help="validation batches (default %(default)s)")
    args = p.parse_args(argv)

    shipped = Network(args.net_dir, num_threads=args.threads)
    candidate = Network(args.candidate, num_threads=args.threads)
    t0 = time.time()
    result = {"net_dir": args.net_dir, "model_id": shipped.model_id, "candidate": args.candidate,
              "candidate_id": candidate.model_id, "batches": {},
              "command": "python benchmarks/context_network.py "
                         + " ".join(sys.argv[1:] if argv is None else argv)}
    for name, root, n, side in (b for b in BATCHES if b[0] in args.batches):
        n = args.frames or n
        seeds = [np.random.SeedSequence(root, spawn_key=(i,)) for i in range(n)]
        hists = score_batch(shipped, candidate, seeds, side)
        aucs = {v: {c: m["auc"] for c, m in all_metrics(h, CLASSES).items()} for v, h in hists.items()}
        result["batches"][name] = {"root_seed": root, "frames": n, "side": side, "auc": aucs}
        print(name, " ".join(f"{c}: " + " ".join(
            f"{v}={aucs[v][c]:.4f}" if aucs[v][c] is not None else f"{v}=n/a" for v in VARIANTS)
            for c in CLASSES), flush=True)
    result["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
