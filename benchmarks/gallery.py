"""Render the simulator gallery: one PNG per contaminant class (with its truth contour) and one per
tracking-error kind, into docs/gallery/.

Usage: nice -n 10 python benchmarks/gallery.py [--size 512] [--seed 1] [--out docs/gallery]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from maximask.classes import ABBRS, CLASSES, INDEX  # noqa: E402
from maximask.sim import TRACKING_KINDS, simulate_frame, simulate_tracking_frame  # noqa: E402


def stretch(image, meta):
    """Arcsinh stretch in units of the background noise, sky at 0."""
    sig = max(meta["sigma_bg_adu"], 1e-3)
    med = np.median(image)
    return np.arcsinh((image - med) / (2.0 * sig))


def _show(ax, img, meta, title):
    s = stretch(img, meta)
    ax.imshow(s, origin="lower", cmap="gray", vmin=-2.0, vmax=max(np.percentile(s, 99.7), 3.0), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


# options that make a class easy to see in its panel (the class itself keeps its usual physics)
SHOWCASE = {
    "CR": {"cr_rate": (3e-7, 1e-6), "exptime_s": (300.0, 1200.0)},
    "HP": {"star_density": (100.0, 1000.0)},
    "DP": {"star_density": (100.0, 1000.0)},
}


def _zoom_box(mask, size, half):
    """Centre of the densest (2*half)^2 window of a mask, clipped to the frame."""
    from scipy import ndimage

    dens = ndimage.uniform_filter(mask.astype(np.float32), size=2 * half)
    cy, cx = np.unravel_index(np.argmax(dens), mask.shape)
    cy = int(np.clip(cy, half, mask.shape[0] - half))
    cx = int(np.clip(cx, half, mask.shape[1] - half))
    return slice(cy - half, cy + half), slice(cx - half, cx + half)


def class_panel(abbr, size, seed, out):
    rng = np.random.default_rng(seed)
    # diffuse classes hide small ones at this stretch: keep them out unless they are the subject
    forbid = [c for c in ("NEB", "BBG", "FR") if c != abbr]
    force = [abbr] + (["SAT"] if abbr == "SP" else [])
    # show the class on a clean-ish frame so the eye sees what the label means
    for _ in range(20):
        cfg = {"force": force, "class_prob": {a: 0.15 for a in ABBRS[:-1]}, "clean_prob": 0.0, "forbid": forbid}
        cfg.update(SHOWCASE.get(abbr, {}))
        img, truth, meta = simulate_frame((size, size), rng, cfg)
        if truth[INDEX[abbr]].any():
            break
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.3))
    _show(axes[0], img, meta, f"{abbr} ({CLASSES[INDEX[abbr]].meaning}) — image")
    _show(axes[1], img, meta, f"truth contour (red); also present: {', '.join(c for c in meta['classes_drawn'] if c != abbr) or 'none'}")
    axes[1].contour(truth[INDEX[abbr]], levels=[0.5], colors="red", linewidths=0.6, origin="lower")
    half = max(24, size // 8)
    sy, sx = _zoom_box(truth[INDEX[abbr]], size, half)
    _show(axes[2], img[sy, sx], meta, f"zoom: rows {sy.start}-{sy.stop}, columns {sx.start}-{sx.stop}")
    axes[2].contour(truth[INDEX[abbr]][sy, sx], levels=[0.5], colors="red", linewidths=0.8, origin="lower")
    txt = f"{meta['detector']}  sky {meta['sky_e']:.0f} e-  RN {meta['read_noise_e']:.1f} e-  gain {meta['gain']:.2f}  FWHM {meta['fwhm_px']:.1f} px  stars {meta['n_stars']}"
    fig.text(0.5, 0.02, txt, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out / f"class_{abbr}.png", dpi=80)
    plt.close(fig)


def tracking_panel(kind, size, seed, out):
    rng = np.random.default_rng(seed)
    img, label, meta = simulate_tracking_frame((size, size), rng, {"tracking_kind": kind, "class_prob": {a: 0.1 for a in ABBRS[:-1]}, "star_density": (2000, 8000), "fwhm_px": (2.0, 4.0)})
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3))
    _show(axes[0], img, meta, f"tracking: {kind} (label {label}), extent {meta['tracking']['extent_px']:.1f} px")
    c = size // 2
    z = max(32, size // 6)
    s = stretch(img, meta)[c - z:c + z, c - z:c + z]
    axes[1].imshow(s, origin="lower", cmap="gray", vmin=-2, vmax=max(np.percentile(s, 99.7), 3.0), interpolation="nearest")
    axes[1].set_title("centre, zoomed", fontsize=9)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    fig.text(0.5, 0.02, f"FWHM {meta['fwhm_px']:.1f} px  contaminants: {', '.join(meta['classes_drawn']) or 'none'}", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out / f"tracking_{kind}.png", dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "gallery")
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for i, abbr in enumerate(ABBRS[:-1]):
        if a.only is None or abbr in a.only:
            class_panel(abbr, a.size, a.seed * 1000 + i, a.out)
    for i, kind in enumerate(TRACKING_KINDS):
        if a.only is None or kind in a.only:
            tracking_panel(kind, a.size, a.seed * 1000 + 100 + i, a.out)


if __name__ == "__main__":
    main()
