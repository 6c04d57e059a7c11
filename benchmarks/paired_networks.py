"""Two maximask networks on the same simulated frames: paired ROC AUC differences, and which classes'
logits differ at all.

A ship rule that asks whether a candidate beats the shipped network needs both scored on the same
frames, with the frame-to-frame spread taken into account: the frames are drawn with replacement
and the *same* draws are used for both networks (:func:`maximask.metrics.frame_bootstrap_auc`), so
the interval is that of the difference. The frames are made by the generator of
:mod:`benchmarks.quality` (the simulator's default mix) from ``--seed`` with spawn keys ``(i,)``;
pick a seed that no training stream and no other benchmark uses. Both networks run as the command
runs them (:func:`maximask.engine.infer`). The largest absolute difference of each class's logits
over all pixels is reported too: 0 for a class a candidate was built to leave bit-identical.

Usage::

    python benchmarks/paired_networks.py --candidate NET --baseline tensorflow_models/maximask \\
        --seed SEED [--frames 24] [--size 2048] --out FILE.json [--markdown FILE.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from maximask.classes import ABBRS
from maximask.engine import infer
from maximask.metrics import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, ScoreHistogram
from maximask.network import Network
from maximask.resources import default_net_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import frames  # noqa: E402
from reference_maximask import difference_table, paired_differences  # noqa: E402
from results_io import write_json  # noqa: E402


def run(candidate: Network, baseline: Network, seed: int, n_frames: int, side: int):
    """Per-frame histograms, shape (2, n_frames, C, n_bins) (candidate first), and the largest
    absolute logit difference of each class over all frames."""
    pos, neg = [[], []], [[], []]
    max_diff = np.zeros(len(ABBRS))
    seqs = [np.random.SeedSequence(seed, spawn_key=(i,)) for i in range(n_frames)]
    for i, (image, truth) in enumerate(frames(seqs, (side, side))):
        logits = []
        for k, net in enumerate((candidate, baseline)):
            lg = infer(image, net, batch_size=1, tile_transform=lambda z: np.moveaxis(z, -1, 0))
            one = ScoreHistogram(len(ABBRS))
            one.add(lg, truth)
            pos[k].append(one.pos.astype(np.int32))
            neg[k].append(one.neg.astype(np.int32))
            logits.append(lg)
        max_diff = np.maximum(max_diff, np.abs(logits[0] - logits[1]).reshape(len(ABBRS), -1).max(1))
        print(f"frame {i + 1}/{n_frames}", file=sys.stderr, flush=True)
    return np.array(pos), np.array(neg), max_diff


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidate", required=True, help="network directory")
    p.add_argument("--baseline", default=str(default_net_dir()), help="network directory (default: the shipped one)")
    p.add_argument("--seed", type=int, required=True, help="root seed of the frames")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=2048, help="frame side (pixels)")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_REPLICATES, metavar="N")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="JSON results")
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    t0 = time.time()
    candidate = Network(args.candidate, num_threads=args.threads)
    baseline = Network(args.baseline, num_threads=args.threads)
    pos, neg, max_diff = run(candidate, baseline, args.seed, args.frames, args.size)
    paired = paired_differences(pos, neg, args.bootstrap, BOOTSTRAP_SEED)
    # the same dictionary as the reference comparison's, named for two networks of ours
    diffs = {c: {"auc_candidate": d["auc_ours"], "auc_baseline": d["auc_reference"],
                 "difference": d["difference"], "difference_ci95": d["difference_ci95"],
                 "candidate_at_least_as_high": d["ours_at_least_as_high"], "replicates": d["replicates"],
                 "frames_to_resolve": d["frames_to_resolve"]} for c, d in paired.items()}
    max_diff = dict(zip(ABBRS, map(float, max_diff)))
    result = {
        "candidate": args.candidate, "candidate_model_id": candidate.model_id,
        "baseline": args.baseline, "baseline_model_id": baseline.model_id,
        "frames": args.frames, "frame_shape": [args.size, args.size],
        "seeds": f"root seed {args.seed}, spawn_key (i,), default mix",
        "command": "python benchmarks/paired_networks.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "paired_differences": diffs,
        "paired_differences_method": {
            "replicates": args.bootstrap, "seed": BOOTSTRAP_SEED, "unit": "frame",
            "interval": "2.5th-97.5th percentiles of (candidate AUC - baseline AUC) over frames drawn with "
                        "replacement, the same draws for both networks"},
        "largest_logit_difference": max_diff,
        "wall_s": round(time.time() - t0, 1),
    }
    md = difference_table(paired, ("candidate", "baseline", "baseline"),
                          ("largest logit difference", {c: f"{v:.3g}" for c, v in max_diff.items()}))
    print(md)
    write_json(args.out, result)
    if args.markdown:
        Path(args.markdown).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
