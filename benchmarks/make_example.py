"""Make the bundled example frame ``data/examples/example.fits.fz`` (and its truth cube, not bundled).

    python benchmarks/make_example.py [--out data/examples]

A 1024x1024 frame from ``maximask.sim`` (seed fixed below, never used for training or evaluation) with
cosmic rays, a hot column, hot pixels, a satellite trail, saturated stars with bleed trails and
diffraction spikes, written tile-compressed (RICE, quantised at 1/16 of the noise with subtractive dithering, as fpack does) so that the
repository stays small. The truth cube is written beside it only with ``--truth``.
"""

import argparse
from pathlib import Path

import fitsio
import numpy as np

from maximask.sim import simulate_frame

EXAMPLE_SEED = 424242  # distinct from the training, validation and benchmark seeds
FORCED = ("CR", "HCL", "HP", "TRL", "SAT", "SP")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "data" / "examples"))
    ap.add_argument("--truth", action="store_true", help="also write example.truth.fits")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, truth, meta = simulate_frame(
        (1024, 1024), np.random.default_rng(EXAMPLE_SEED), {"force": FORCED, "forbid": ("OV",)}
    )
    path = out / "example.fits.fz"
    path.unlink(missing_ok=True)
    header = [
        {"name": "OBJECT", "value": "maximask example", "comment": "simulated by maximask.sim"},
        {"name": "SIMSEED", "value": EXAMPLE_SEED, "comment": "maximask.sim seed"},
    ]
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(image.astype(np.float32), compress="RICE", qlevel=16, qmethod="SUBTRACTIVE_DITHER_2", header=header, extname="SCI")
    if args.truth:
        fitsio.write(str(out / "example.truth.fits"), truth, clobber=True)
    print(path, path.stat().st_size, "bytes; classes present:",
          [k for k, v in zip(__import__("maximask.classes").classes.ABBRS, truth.any(axis=(1, 2))) if v])


if __name__ == "__main__":
    main()
