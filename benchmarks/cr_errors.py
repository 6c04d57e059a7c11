"""Where a network's cosmic-ray (CR) ranking loses: which negatives outrank which positives.

CR is the class on which MaxiMask 1.4.1 is ahead of us beyond the sampling noise (docs/MODEL.md,
"48 frames"). This benchmark splits CR's ROC AUC by what the pixels are, so that a candidate
network can be judged on the failure it was built to fix:

* the **positives** by their signal-to-noise (the cosmic ray's noise-free layer over the
  simulator's per-pixel noise): the AUC of each S/N bin against all negatives;
* the **negatives** by category: next to a CR pixel (8-neighbours), two pixels away, a pixel of
  another contaminant class (and which), a source pixel (star or galaxy above 3 sigma, no class),
  clean sky. For each, the share of CR's AUC it costs (pairs it wins against positives, over all
  pairs), the AUC of the positives against it alone, and its share of the false positives at the
  thresholds of FPR 1e-4, 1e-3 and 1e-2.

Frames: ``--frames`` simulated frames of ``--size``^2, the simulator's default mix, root seed
``--seed`` with spawn keys ``(i,)`` (default: the 40 validation frames of 1024^2 of seed 20261172
that the stop-22 diagnosis used; no training stream or other benchmark uses that seed). Each
``--net-dir`` runs as the command runs it (:func:`maximask.engine.infer`); ``--reference`` adds
MaxiMask 1.4.1's raw probabilities (as in :mod:`benchmarks.reference_maximask`, about 40 s a frame
of 1024^2). Scores are binned as :class:`maximask.metrics.ScoreHistogram` bins them.

Usage::

    python benchmarks/cr_errors.py [--net-dir DIR ...] [--reference ../mmref/bin/maximask] \\
        [--frames 40] [--size 1024] [--seed 20261172] --out FILE.json [--markdown FILE.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from maximask.classes import ABBRS, INDEX
from maximask.engine import infer
from maximask.metrics import ScoreHistogram, roc_auc_counts
from maximask.network import Network
from maximask.resources import default_net_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_json  # noqa: E402

CR = INDEX["CR"]
#: Negative categories, in the order a pixel is assigned (the first that applies).
CATEGORIES = ("next to a CR pixel", "two pixels from one", "another class", "source above 3 sigma", "clean sky")
SNR_BINS = ((0, 1), (1, 2), (2, 3), (3, 5), (5, 10), (10, 30), (30, np.inf))
SOURCE_BINS = ((3, 10), (10, 100), (100, np.inf))
FPRS = (1e-4, 1e-3, 1e-2)
CONTAMINANTS = ABBRS[:-1]  # BG is no contaminant


def categories(truth: np.ndarray, sources_snr: np.ndarray) -> np.ndarray:
    """Per pixel: -1 for a CR pixel, else the index in :data:`CATEGORIES` of its negative category."""
    from scipy.ndimage import binary_dilation

    t = truth[CR].astype(bool)
    other = truth[[INDEX[c] for c in CONTAMINANTS if c != "CR"]].astype(bool).any(0)
    near1 = binary_dilation(t, np.ones((3, 3), bool))
    near2 = binary_dilation(t, np.ones((5, 5), bool))
    cat = np.full(t.shape, 4, np.int8)
    cat[sources_snr > 3] = 3
    cat[other] = 2
    cat[near2] = 1
    cat[near1] = 0
    cat[t] = -1
    return cat


class Tally:
    """One network's CR histograms, split as the module docstring says."""

    def __init__(self):
        def hist():
            return ScoreHistogram(1)

        self.all = hist()
        self.snr = [hist() for _ in SNR_BINS]
        self.cat = [hist() for _ in CATEGORIES]
        self.other = {c: hist() for c in CONTAMINANTS if c != "CR"}
        self.source = [hist() for _ in SOURCE_BINS]

    def add(self, cr_logit, truth, cat, snr, sources_snr):
        z, t = cr_logit[None], truth[CR : CR + 1]
        self.all.add(z, t)
        neg = ~t[0].astype(bool)
        for (lo, hi), h in zip(SNR_BINS, self.snr):
            h.add(z, t, valid=neg | ((snr >= lo) & (snr < hi)))
        for k, h in enumerate(self.cat):
            h.add(z, t, valid=cat == k)
        for c, h in self.other.items():
            h.add(z, t, valid=(cat == 2) & truth[INDEX[c]].astype(bool))
        for (lo, hi), h in zip(SOURCE_BINS, self.source):
            h.add(z, t, valid=(cat == 3) & (sources_snr >= lo) & (sources_snr < hi))

    def summary(self) -> dict:
        pos, neg = self.all.pos[0].astype(np.float64), self.all.neg[0].astype(np.float64)
        n_pos, n_neg = pos.sum(), neg.sum()
        out = {"positives": int(n_pos), "negatives": int(n_neg), "auc": float(roc_auc_counts(pos, neg))}

        def cost(h):
            # the share of all (positive, negative) pairs that this group of negatives wins or ties half
            nb = h.neg[0].astype(np.float64)
            pos_above = np.cumsum(pos[::-1])[::-1] - pos  # positives in higher bins
            won = (nb * (n_pos - pos_above - 0.5 * pos)).sum()
            return {"negatives": int(nb.sum()), "auc_lost": float(won / (n_pos * n_neg)),
                    "auc_against_these": None if nb.sum() == 0 else float(roc_auc_counts(pos, nb))}

        # thresholds at the FPRs: the lowest bin whose negatives above it stay within the rate
        above = np.cumsum(neg[::-1])[::-1]
        out["at_fpr"] = {}
        for fpr in FPRS:
            k = int(np.argmax(above <= fpr * n_neg))
            tp, fp = pos[k:].sum(), above[k]
            out["at_fpr"][f"{fpr:g}"] = {
                "tpr": float(tp / n_pos) if n_pos else None,
                "false_positive_share": {name: (float(h.neg[0][k:].sum() / fp) if fp else None)
                                         for name, h in zip(CATEGORIES, self.cat)}}
        out["negatives_by_category"] = {name: cost(h) for name, h in zip(CATEGORIES, self.cat)}
        out["other_class_negatives"] = {c: cost(h) for c, h in self.other.items() if h.neg.sum()}
        out["source_negatives_by_snr"] = {f"{lo}-{hi:g}": cost(h) for (lo, hi), h in zip(SOURCE_BINS, self.source)}
        out["positives_by_snr"] = {
            f"{lo}-{hi:g}": {"positives": int(h.pos.sum()),
                             "auc": None if h.pos.sum() == 0 else float(roc_auc_counts(h.pos[0], neg))}
            for (lo, hi), h in zip(SNR_BINS, self.snr)}
        return out


def markdown(results: dict) -> str:
    names = list(results)

    def row(label, values):
        return f"| {label} | " + " | ".join(values) + " |"

    def f(v, fmt="{:.4f}"):
        return "—" if v is None else fmt.format(v)

    lines = [row("", names), "|---|" + "---:|" * len(names)]
    lines.append(row("CR ROC AUC", [f(results[n]["auc"]) for n in names]))
    for fpr in FPRS:
        lines.append(row(f"TPR at FPR {fpr:g}", [f(results[n]["at_fpr"][f"{fpr:g}"]["tpr"], "{:.3f}") for n in names]))
    for cat in CATEGORIES:
        lines.append(row(f"AUC lost to: {cat}", [f(results[n]["negatives_by_category"][cat]["auc_lost"]) for n in names]))
        lines.append(row(f"share of the false positives at FPR 1e-3: {cat}",
                         [f(results[n]["at_fpr"]["0.001"]["false_positive_share"][cat], "{:.2f}") for n in names]))
    for c in results[names[0]]["other_class_negatives"]:
        lines.append(row(f"AUC lost to pixels of {c}",
                         [f(results[n]["other_class_negatives"].get(c, {}).get("auc_lost")) for n in names]))
    for b in results[names[0]]["source_negatives_by_snr"]:
        lines.append(row(f"AUC lost to sources of S/N {b}",
                         [f(results[n]["source_negatives_by_snr"][b]["auc_lost"]) for n in names]))
    for b in results[names[0]]["positives_by_snr"]:
        lines.append(row(f"AUC of positives of S/N {b} ({results[names[0]]['positives_by_snr'][b]['positives']})",
                         [f(results[n]["positives_by_snr"][b]["auc"]) for n in names]))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from maximask.sim.config import make_config
    from maximask.sim.frame import _simulate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net-dir", nargs="+", default=[str(default_net_dir())])
    p.add_argument("--reference", default=None, help="the MaxiMask 1.4.1 command (in its own venv)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=20261172)
    p.add_argument("--out", required=True)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    t0 = time.time()
    nets = {f"{d} ({Network(d).model_id})": Network(d) for d in args.net_dir}
    tallies = {name: Tally() for name in nets}
    if args.reference:
        from reference_maximask import reference_logits

        tallies["MaxiMask 1.4.1"] = Tally()
    cfg = make_config(None)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.frames):
            debug = {}
            rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(i,)))
            image, truth, _ = _simulate((args.size, args.size), rng, cfg, debug=debug)
            snr = debug["layers"].get("CR", np.zeros(image.shape, np.float32)) / debug["sigma"]
            sources_snr = debug["sources"] / debug["sigma"]
            cat = categories(truth, sources_snr)
            for name, net in nets.items():
                z = infer(image, net, batch_size=1, tile_transform=lambda lg: np.moveaxis(lg, -1, 0))[CR]
                tallies[name].add(z, truth, cat, snr, sources_snr)
            if args.reference:
                z = reference_logits(args.reference, image, Path(tmp))[CR]
                tallies["MaxiMask 1.4.1"].add(z, truth, cat, snr, sources_snr)
            print(f"frame {i + 1}/{args.frames} ({int(truth[CR].sum())} CR pixels, {time.time() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    results = {name: t.summary() for name, t in tallies.items()}
    md = markdown(results)
    print(md)
    write_json(args.out, {
        "frames": args.frames, "frame_shape": [args.size, args.size],
        "seeds": f"root seed {args.seed}, spawn_key (i,), default mix",
        "command": "python benchmarks/cr_errors.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "wall_s": round(time.time() - t0, 1), "networks": results})
    if args.markdown:
        Path(args.markdown).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
