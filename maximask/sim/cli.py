"""``maximask-sim OUTDIR --n N --size H W --seed S [--tracking]``: write simulated frames to disk.

Masking frames: ``sim_NNNNN.fits`` (float32 processed frame, or raw-like integers with ``--raw``)
and ``sim_NNNNN.truth.fits`` (uint8 cube of 14 planes in class order, plane names in PLANEn
keywords), plus one JSON line of metadata per frame in ``metadata.jsonl``.
Tracking frames (``--tracking``): ``trk_NNNNN.fits`` and ``labels.csv`` (file, label, kind,
extent_px), plus ``metadata.jsonl``.

Frame i is drawn from ``numpy.random.default_rng([seed, i])``, so any frame can be regenerated
alone. Exit codes: 0 done, 2 usage error, 1 failure writing.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import MaximaskError, UsageError

PROG = "maximask-sim"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError("usage", f"{message} (see {PROG} -h)")


def build_parser():
    p = _Parser(prog=PROG, description="Simulate CCD/NIR frames with contaminants and exact truth, or tracking-error frames.")
    p.add_argument("outdir", metavar="OUTDIR", type=Path, help="output directory (created if needed)")
    p.add_argument("--n", type=int, default=10, help="number of frames (default 10)")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="frame size in pixels (default 512 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--tracking", action="store_true", help="tracking-error frames and labels.csv instead of masking frames")
    p.add_argument("--raw", choices=("uint16", "int16"), default=None, help="write raw-like integer frames (bias added, clipped at the ADC limit)")
    p.add_argument("--force", nargs="*", default=(), metavar="CLASS", help="classes present in every frame")
    p.add_argument("--forbid", nargs="*", default=(), metavar="CLASS", help="classes never present")
    return p


def _header(meta):
    from astropy.io import fits

    hdr = fits.Header()
    keys = [
        ("DETECTOR", "detector", "simulated detector type"),
        ("GAIN", "gain", "e-/ADU"),
        ("RDNOISE", "read_noise_e", "read noise (e-)"),
        ("SKYLEV", "sky_adu", "mean sky level (ADU)"),
        ("SKYSIG", "sigma_bg_adu", "background noise (ADU)"),
        ("FWHM", "fwhm_px", "PSF FWHM (px)"),
        ("PIXSCALE", "pixel_scale", "arcsec/px"),
        ("SATURATE", "saturation_adu", "saturation level (ADU)"),
        ("BIASLEV", "bias_adu", "bias level removed (ADU)"),
        ("EXPTIME", "exptime_s", "exposure time (s)"),
    ]
    for key, name, comment in keys:
        hdr[key] = (meta[name], comment)
    hdr["SIMCLASS"] = (",".join(meta["classes_drawn"]) or "none", "contaminant classes drawn")
    return hdr


def run(args):
    from astropy.io import fits

    from ..classes import ABBRS
    from . import simulate_frame, simulate_tracking_frame

    if args.n < 1:
        raise UsageError("--n", "must be at least 1")
    h, w = args.size
    out = args.outdir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MaximaskError(out, f"cannot create the output directory: {exc.strerror}") from None
    cfg = {"raw_dtype": args.raw, "force": list(args.force), "forbid": list(args.forbid)}
    labels = []
    with open(out / "metadata.jsonl", "w") as mfile:
        for i in range(args.n):
            rng = np.random.default_rng([args.seed, i])
            if args.tracking:
                img, label, meta = simulate_tracking_frame((h, w), rng, cfg)
                name = f"trk_{i:05d}.fits"
                labels.append((name, label, meta["kind"], meta["tracking"]["extent_px"]))
            else:
                img, truth, meta = simulate_frame((h, w), rng, cfg)
                name = f"sim_{i:05d}.fits"
                th = fits.Header()
                for k, abbr in enumerate(ABBRS):
                    th[f"PLANE{k}"] = (abbr, "truth plane class")
                fits.PrimaryHDU(truth, header=th).writeto(out / f"sim_{i:05d}.truth.fits", overwrite=True)
            hdr = _header(meta)
            if args.tracking:
                hdr["TRKKIND"] = (meta["kind"], "tracking error kind")
            fits.PrimaryHDU(img, header=hdr).writeto(out / name, overwrite=True)
            mfile.write(json.dumps({"file": name, **meta}) + "\n")
            print(out / name, flush=True)
    if args.tracking:
        with open(out / "labels.csv", "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["file", "label", "kind", "extent_px"])
            for row in labels:
                wr.writerow([row[0], row[1], row[2], f"{row[3]:.2f}"])


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        run(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except MaximaskError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
