"""Speed and memory of maximask on a 4096 x 4096 simulated frame (2-core machine).

Two measurements:

* the whole command, ``maximask FRAME`` with default options, under ``/usr/bin/time -v``: wall time,
  MPix/s and peak RSS (a fresh process each run; the best of ``--repeat`` runs is reported, since
  the machine is shared);
* the network alone: LiteRT on batches of one tile of the network's tile size, MPix/s counting
  only the core pixels each tile contributes (``tile - 2 margin``)^2, and counting the raw tile
  pixels, with the tile count the tiler actually uses on the frame.

Usage::

    nice -n 10 python benchmarks/speed.py --out benchmarks/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (4096, 4096)
SEED = 4096


def make_frame(path: Path, shape=SHAPE, seed=SEED) -> None:
    """Write a simulated frame (float32 primary HDU)."""
    from astropy.io import fits

    from maximask.sim import simulate_frame

    image, _, _ = simulate_frame(shape, np.random.default_rng(seed))
    fits.PrimaryHDU(image.astype(np.float32)).writeto(path, overwrite=True)


def time_command(cmd: list, cwd) -> dict:
    """Run a command under /usr/bin/time -v; wall time (s) and peak RSS (MB)."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v"] + cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {res.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(rss_kb / 1024, 1)}


def network_alone(net_dir, shape=SHAPE, threads=None, repeat=3) -> dict:
    """Time the LiteRT network on the tiles of a frame of ``shape`` (random normalised data)."""
    from maximask.network import Network
    from maximask.tiling import plan_tiles

    net = Network(net_dir, num_threads=threads)
    m = net.metadata
    plan = plan_tiles(shape, m.tile_size, m.margin, m.size_multiple)
    tile = np.random.default_rng(0).normal(size=(1, m.tile_size, m.tile_size, 1)).astype(np.float32)
    net.predict_logits(tile)  # allocation
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        net.predict_logits(tile)
        best = min(best, time.perf_counter() - t0)
    n = len(plan)
    core = (m.tile_size - 2 * m.margin) ** 2
    return {
        "tile_size": m.tile_size,
        "margin": m.margin,
        "s_per_tile": round(best, 4),
        "tiles_for_frame": n,
        "network_s_for_frame": round(best * n, 2),
        "mpix_per_s_frame": round(shape[0] * shape[1] / (best * n) / 1e6, 2),
        "mpix_per_s_core": round(core / best / 1e6, 2),
        "mpix_per_s_raw": round(m.tile_size**2 / best / 1e6, 2),
    }


def main(argv=None):
    from maximask.resources import default_net_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net-dir", default=str(default_net_dir()))
    p.add_argument("--out", default=None)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--no-command", action="store_true", help="network alone only")
    args = p.parse_args(argv)
    result = {"shape": list(SHAPE), "cpus": len(os.sched_getaffinity(0)),
              "load_avg_at_start": os.getloadavg()}
    result["network_alone"] = network_alone(args.net_dir)
    if not args.no_command:
        with tempfile.TemporaryDirectory() as tmp:
            frame = Path(tmp) / "frame4096.fits"
            make_frame(frame)
            exe = str(Path(sys.executable).with_name("maximask"))
            runs = []
            for _ in range(args.repeat):
                runs.append(time_command([exe, str(frame), "--net_dir", args.net_dir], tmp))
                for f in Path(tmp).glob("*.masks*.fits"):
                    f.unlink()
            best = min(runs, key=lambda r: r["wall_s"])
            result["command"] = {
                "runs": runs,
                "wall_s": best["wall_s"],
                "mpix_per_s": round(SHAPE[0] * SHAPE[1] / best["wall_s"] / 1e6, 2),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            }
    result["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
