"""Time and memory that ``maximask`` spends outside the network on one frame.

The network is replaced by a stand-in with the real geometry (tile side, margin, alignment, 14
outputs) that returns constant logits instantly, so that what is measured is everything else the
command does on a file: FITS reading, normalisation, tiling, post-processing (prior shift +
thresholds), stitching and writing the output. With ``--net_dir`` the geometry is that network's
and the real network is also timed on the same frame, for comparison.

    python benchmarks/outside_network.py --size 4096                # stand-in geometry 512/48/16
    python benchmarks/outside_network.py --size 4096 --net_dir tensorflow_models/maximask

Each measurement runs in a fresh process, so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class StandInNetwork:
    """Network-shaped object: metadata of a real geometry, constant logits, no computation."""

    def __init__(self, tile, margin, multiple, n_out=14):
        from maximask.classes import ABBRS
        from maximask.network import NetworkMetadata
        from maximask.normalize import DEFAULT_NORMALISATION

        self.metadata = NetworkMetadata("maximask", list(ABBRS), [0.01] * 13 + [0.87], margin, tile, multiple,
                                        dict(DEFAULT_NORMALISATION))
        self.model_id = "0" * 16
        self.net_dir = Path("stand-in")
        self._logits = np.random.default_rng(0).normal(-3, 2, (1, tile, tile, n_out)).astype(np.float32)

    def predict_logits(self, batch, copy=True, margin=0):
        return np.broadcast_to(self._logits, (len(batch),) + self._logits.shape[1:])


class TimedNetwork:
    """A real network whose calls are timed."""

    def __init__(self, net):
        self.net, self.seconds = net, 0.0
        self.metadata, self.model_id, self.net_dir = net.metadata, net.model_id, net.net_dir

    def predict_logits(self, batch, copy=True, margin=0):
        t0 = time.perf_counter()
        # what the command asks for, but a copy: the timed call must include the whole network
        out = self.net.predict_logits(batch, margin=margin)
        self.seconds += time.perf_counter() - t0
        return out


def measure(args) -> dict:
    """One run of the per-file pipeline (in this process)."""
    from maximask.config import load_config
    from maximask.inputs import Task
    from maximask.postprocess import make_plan
    from maximask.process import mask_file
    from maximask.resources import default_config_dir

    if args.net_dir:
        from maximask.network import Network

        net = TimedNetwork(Network(args.net_dir))
    else:
        net = StandInNetwork(args.tile, args.margin, args.multiple)
    cfg = load_config(default_config_dir())
    plan = make_plan(net.metadata.classes, cfg.flags, net.metadata.training_priors, cfg.priors, cfg.thresholds,
                     single_mask=args.single_mask)
    t0 = time.perf_counter()
    out = mask_file(Task(Path(args.input), None, args.input), net, plan, out_dir=args.out_dir,
                    batch_size=args.batch_size, compress=args.compress)
    wall = time.perf_counter() - t0
    network = getattr(net, "seconds", 0.0)
    return {
        "network": "stand-in" if not args.net_dir else str(args.net_dir),
        "tile/margin/multiple": [net.metadata.tile_size, net.metadata.margin, net.metadata.size_multiple],
        "wall_s": round(wall, 3),
        "network_s": round(network, 3),
        "outside_network_s": round(wall - network, 3),
        "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "output_MB": round(out.stat().st_size / 2**20, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="frame side (pixels)")
    ap.add_argument("--net_dir", default=None, help="real network to time (default: stand-in only)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--margin", type=int, default=48)
    ap.add_argument("--multiple", type=int, default=16)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--single_mask", action="store_true")
    ap.add_argument("--compress", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs (the fastest is reported)")
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out_dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.input:  # child process
        print(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        from astropy.io import fits

        rng = np.random.default_rng(1)
        frame = (1000 + 10 * rng.standard_normal((args.size, args.size))).astype(np.float32)
        src = Path(tmp) / "frame.fits"
        fits.PrimaryHDU(frame).writeto(src)
        del frame
        base = [sys.executable, __file__, "--input", str(src), "--out_dir", tmp, "--tile", str(args.tile),
                "--margin", str(args.margin), "--multiple", str(args.multiple), "--batch_size", str(args.batch_size)]
        base += ["--single_mask"] * args.single_mask + ["--compress"] * args.compress
        runs = [base] + ([base + ["--net_dir", args.net_dir]] if args.net_dir else [])
        for cmd in runs:
            results = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                       for _ in range(args.repeat)]
            best = min(results, key=lambda r: r["wall_s"])
            best["frame"] = f"{args.size}x{args.size} float32"
            best["cpus"] = len(os.sched_getaffinity(0))
            print(json.dumps(best))


if __name__ == "__main__":
    main()
