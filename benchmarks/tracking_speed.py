"""Whole-command speed of ``maxitrack`` on a 4-HDU 2048x4096 mosaic (target: >= 20 MPix/s).

Usage (from the repository root)::

    nice -n 10 python benchmarks/tracking_speed.py [--repeat 5] [--net_dir DIR] [--work runs/maxitrack/speed]

The mosaic is four simulated 4096-row x 2048-column frames (:func:`maximask.sim.simulate_frame`,
fixed seeds) written as float32 image extensions after an empty primary HDU. Each run is the
installed console script in a fresh process (Python start-up, imports, network loading, FITS
reading, tile selection and normalisation, inference, writing the result line), timed from outside;
the median over ``--repeat`` runs is reported, the file being in the page cache after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHAPE = (4096, 2048)  # rows, columns: NAXIS1 = 2048, NAXIS2 = 4096
N_HDU = 4


def make_mosaic(path: Path) -> None:
    import fitsio

    from maximask.sim import simulate_frame

    tmp = path.with_suffix(".tmp.fits")
    with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
        f.write(None)
        for h in range(N_HDU):
            image, _, _ = simulate_frame(SHAPE, np.random.default_rng((2024, h)))
            f.write(image.astype(np.float32), extname=f"CCD{h + 1}")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--net_dir", default=None)
    ap.add_argument("--work", default="runs/maxitrack/speed")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more maxitrack options")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    mosaic = work / "mosaic_4x2048x4096.fits"
    if not mosaic.exists():
        t = time.perf_counter()
        make_mosaic(mosaic)
        print(f"simulated {mosaic} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    exe = shutil.which("maxitrack") or str(Path(sys.executable).parent / "maxitrack")
    cmd = [exe, str(mosaic), "-o", str(work / "speed.out"), "-q"]
    if args.net_dir:
        cmd += ["--net_dir", args.net_dir]
    cmd += args.extra
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        times.append(time.perf_counter() - t)
    mpix = N_HDU * SHAPE[0] * SHAPE[1] / 1e6
    med = statistics.median(times)
    res = {
        "command": " ".join(cmd),
        "mpix": mpix,
        "seconds": [round(t, 3) for t in times],
        "median_s": round(med, 3),
        "mpix_per_s": round(mpix / med, 1),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
