"""Realism check of maximask.sim against a real frame: noise statistics and cosmic-ray statistics.

Real frame: ../shared/data/gmos_longslit_cr.fits (Gemini-South GMOS, Hamamatsu deep-depletion CCD,
90 s long-slit spectrum, 200x150 cut-out, in electrons; see SOURCES.md). Simulated frames of the
matching kind: thick CCD, 150x200, 90 s, read noise and sky level measured on the real frame,
gain 1 (electrons), cosmic rays only (the cut-out holds sky lines but no point source, so PSF
statistics cannot be compared on it).

The same detector runs on both: background = running median along the slit (axis 0, which
removes the sky lines), noise = sqrt(background + RN**2); a cosmic ray is a connected group of
pixels above 2 sigma holding at least one pixel above 5 sigma. Per cosmic ray: pixel count,
elongation (sqrt of the ratio of the eigenvalues of the flux-weighted second moments), peak/sigma.

Usage: nice -n 10 python benchmarks/sim_realism.py [--frames 300] [--data PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from maximask.classes import ABBRS, INDEX

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gmos_longslit_cr.fits"


def background(image):
    """Running median along the slit (axis 0): the sky lines are constant along it."""
    return ndimage.median_filter(image, size=(31, 1), mode="nearest")


def empirical_sigma(image, bg, sigma):
    """Rescale the model noise by the robust (MAD) scatter actually measured on the frame.

    Resampled or mosaicked frames have less pixel noise than their variance plane says; detecting
    against the measured noise keeps the 5-sigma threshold comparable between frames.
    """
    z = (image - bg) / sigma
    return sigma * 1.4826 * np.median(np.abs(z - np.median(z)))


def autocorr(z):
    """Lag-1 autocorrelation of a noise image along rows (x) and columns (y)."""
    z = z - z.mean()
    v = (z * z).mean()
    return float((z[:, 1:] * z[:, :-1]).mean() / v), float((z[1:] * z[:-1]).mean() / v)


def find_crs(image, bg, sigma, seed=5.0, grow=2.0):
    """Connected groups above ``grow`` sigma with a pixel above ``seed`` sigma; returns (stats, mask)."""
    z = (image - bg) / sigma
    lab, n = ndimage.label(z > grow, structure=np.ones((3, 3)))
    peaks = ndimage.maximum(z, lab, index=np.arange(1, n + 1)) if n else np.array([])
    keep = np.nonzero(peaks > seed)[0] + 1
    stats = []
    mask = np.isin(lab, keep)
    objs = ndimage.find_objects(lab)
    for k in keep:
        sl = objs[k - 1]
        m = lab[sl] == k
        f = np.where(m, image[sl] - bg[sl], 0.0)
        f = np.maximum(f, 0)
        yy, xx = np.nonzero(m)
        w = f[yy, xx]
        if w.sum() <= 0:
            continue
        cy, cx = np.average(yy, weights=w), np.average(xx, weights=w)
        cov = np.cov(np.vstack([yy - cy, xx - cx]), aweights=w) if yy.size > 1 else np.zeros((2, 2))
        ev = np.sort(np.linalg.eigvalsh(cov + np.eye(2) * 1.0 / 12.0))
        stats.append((m.sum(), np.sqrt(ev[1] / ev[0]), z[sl][m].max()))
    return np.array(stats).reshape(-1, 3), mask


def noise_stats(image, bg, sigma, crmask):
    """Noise of the CR-free pixels in units of the model sigma (before the empirical rescaling)."""
    good = ~ndimage.binary_dilation(crmask, iterations=2)
    zfull = np.where(good, (image - bg) / sigma, 0.0)
    ax, ay = autocorr(zfull[10:-10, 10:-10])
    z = zfull[good]
    mad = 1.4826 * np.median(np.abs(z - np.median(z)))
    zc = z[np.abs(z) < 5]
    return {
        "robust_std": mad,
        "std(|z|<5)": zc.std(),
        "skew(|z|<5)": float(np.mean(((zc - zc.mean()) / zc.std()) ** 3)),
        "frac z>5": float(np.mean(z > 5)),
        "autocorr x": ax,
        "autocorr y": ay,
    }


def summarize(stats, area_px, exptime, nframes):
    if len(stats) == 0:
        return {"n": 0}
    q = lambda a: "{:.1f}/{:.1f}/{:.1f}".format(*np.percentile(a, [25, 50, 75]))  # noqa: E731
    return {
        "n": len(stats),
        "rate /px/s": len(stats) / (area_px * exptime * nframes),
        "npix q25/50/75": q(stats[:, 0]),
        "elong q25/50/75": q(stats[:, 1]),
        "peak/sig q25/50/75": q(stats[:, 2]),
        "frac npix>=20": float(np.mean(stats[:, 0] >= 20)),
    }


def real_frame(path):
    from astropy.io import fits

    with fits.open(path) as f:
        sci = f["SCI"].data.astype(np.float64)
        var = f["VAR"].data.astype(np.float64)
    rn2 = float(np.median(var - sci))  # VAR = signal + RN**2 in electrons
    bg = background(sci)
    sigma = np.sqrt(np.maximum(bg, 0) + rn2)
    return sci, bg, sigma, rn2


def main():
    from maximask.sim import simulate_frame

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--binning", type=int, default=None, help="force the simulator's on-chip binning")
    ap.add_argument("--resample-prob", type=float, default=None, help="override the share of resampled frames")
    ap.add_argument("--cr-rate", type=float, nargs=2, default=None, help="override the simulator's cr_rate range")
    a = ap.parse_args()

    sci, bg, sigma, rn2 = real_frame(a.data)
    exptime = 90.0
    rs, rmask = find_crs(sci, bg, empirical_sigma(sci, bg, sigma))
    sky = float(np.median(bg))
    rows = {"real GMOS": {**summarize(rs, sci.size, exptime, 1), **noise_stats(sci, bg, sigma, rmask)}}
    print(f"real frame: {a.data.name} {sci.shape}, RN {np.sqrt(rn2):.2f} e-, median background {sky:.1f} e-")

    cfg = {
        "class_prob": {c: 0.0 for c in ABBRS[:-1]},
        "force": ["CR"],
        "clean_prob": 0.0,
        "detector": "thick",
        "sky_e": (sky, sky),
        "read_noise_e": (np.sqrt(rn2), np.sqrt(rn2)),
        "gain": (1.0, 1.0),
        "exptime_s": (exptime, exptime),
        "star_density": (1e-3, 1e-3),
        "galaxy_density": (1e-3, 1e-3),
        "bright_star_density": (1e-3, 1e-3),
    }
    if a.binning:
        cfg["binning"] = a.binning
    if a.resample_prob is not None:
        cfg["resample_prob"] = a.resample_prob
    if a.cr_rate:
        cfg["cr_rate"] = tuple(a.cr_rate)
    rng = np.random.default_rng(a.seed)
    det, truth_stats, noise = [], [], []
    n_true = 0
    for _ in range(a.frames):
        img, truth, meta = simulate_frame(sci.shape, rng, cfg)
        img = img.astype(np.float64) * meta["gain"]
        b = background(img)
        s = np.sqrt(np.maximum(b, 0) + meta["read_noise_e"] ** 2)
        st, m = find_crs(img, b, empirical_sigma(img, b, s))
        det.append(st)
        noise.append(noise_stats(img, b, s, m))
        n_true += len(meta["objects"]["CR"])
        lab, n = ndimage.label(truth[INDEX["CR"]], structure=np.ones((3, 3)))
        truth_stats.extend(np.bincount(lab.ravel())[1:])
    det = np.vstack(det)
    nz = {k: float(np.mean([d[k] for d in noise])) for k in noise[0]}
    rows["simulated (same detector)"] = {**summarize(det, sci.size, exptime, a.frames), **nz}
    keys = []
    for r in rows.values():
        keys += [k for k in r if k not in keys]
    print(f"{a.frames} simulated frames; {n_true} cosmic rays injected; truth CR groups: {len(truth_stats)}, "
          f"median truth pixels per group {np.median(truth_stats) if truth_stats else 0:.1f}")
    print("| statistic | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        vals = []
        for r in rows.values():
            v = r.get(k, "")
            vals.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print(f"| {k} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
