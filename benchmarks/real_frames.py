"""What the shipped networks flag on the real frames of ``../shared/data`` (no truth: a description).

For every FITS file there, ``maximask`` runs with default options (thresholded masks) into a
temporary directory, and the share of each image HDU's pixels flagged in each class is reported;
``maxitrack`` gives each file's tracking-error probability. The frames are read where they are and
never copied; nothing of them is written outside the temporary directory but these figures.

Usage::

    python benchmarks/real_frames.py [--data-dir ../shared/data] [--net-dir DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import write_json

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fits.gz")


def mask_fractions(masks_path: Path) -> dict:
    """``{hdu name: {class: flagged share}}`` of a ``maximask`` output with 0/1 mask planes."""
    from astropy.io import fits

    out = {}
    with fits.open(masks_path) as hdul:
        for i, hdu in enumerate(hdul):
            if hdu.data is None or hdu.data.ndim != 3:
                continue
            planes = {k[: -len("_DIM")]: int(v) for k, v in hdu.header.items() if k.endswith("_DIM")}
            name = hdu.name or str(i)
            out[name] = {c: float(np.mean(hdu.data[j] > 0)) for c, j in sorted(planes.items(), key=lambda t: t[1])}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DATA), help="directory of real frames (default ../shared/data)")
    p.add_argument("--net-dir", default=None, help="maximask network directory (default: the bundled one)")
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)
    files = sorted(f for f in Path(args.data_dir).iterdir() if f.name.endswith(SUFFIXES))
    if not files:
        print(f"no FITS files in {args.data_dir}", file=sys.stderr)
        return 1
    bindir = Path(sys.executable).parent
    result = {"data_dir": args.data_dir, "net_dir": args.net_dir or "bundled", "files": {}}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            cmd = [str(bindir / "maximask"), str(f), "-o", tmp, "-q"]
            if args.net_dir:
                cmd += ["--net_dir", args.net_dir]
            subprocess.run(cmd, check=True)
            stem = f.name[: -len(next(s for s in SUFFIXES[::-1] if f.name.endswith(s)))]
            scores = Path(tmp) / "maxitrack.out"
            subprocess.run([str(bindir / "maxitrack"), str(f), "-o", str(scores), "-q"], check=True)
            track = [line.split()[-1] for line in scores.read_text().splitlines()]
            scores.unlink()
            result["files"][f.name] = {"masks": mask_fractions(Path(tmp) / f"{stem}.masks.fits"),
                                       "maxitrack": [float(s) for s in track]}
    result["wall_s"] = round(time.time() - t0, 1)
    for name, r in result["files"].items():
        print(f"{name}: maxitrack {', '.join(f'{s:.3f}' for s in r['maxitrack'])}")
        for hdu, fr in r["masks"].items():
            flagged = ", ".join(f"{c} {100 * v:.2f}%" for c, v in fr.items() if v > 0 and c != "BG")
            print(f"  {hdu}: {flagged or 'nothing flagged'}")
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
