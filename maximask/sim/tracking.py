"""Tracking-error frames for maxitrack: every source smeared along one common path.

Kinds: 'drift' (linear, 3-50 px), 'arc' (field rotation about a centre), 'jump' (double or triple
images), 'shake' (wind shake: a correlated random walk), 'periodic' (periodic worm-gear error on
top of a slow drift), against 'none' (normal exposures). Contaminants (trails, cosmic rays, hot
columns, ...) are drawn as for :func:`maximask.sim.simulate_frame` and are never smeared, so a
network cannot use them as a tracking signal; normal frames keep field-dependent PSFs with coma.
The smallest path extents are kept above ~0.7 PSF FWHM so that a label of 1 is visible.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import oaconvolve

from ._util import Canvas, log_uniform
from .config import make_config
from .frame import _check_shape, _simulate
from .scene import render_sources

TRACKING_KINDS = ("none", "drift", "arc", "jump", "shake", "periodic")


def _kernel_from_offsets(dy, dx, weights):
    """Rasterise a path of offsets (px) into a normalised convolution kernel centred on its middle."""
    r = int(np.ceil(max(np.abs(dy).max(), np.abs(dx).max()))) + 2
    canvas = Canvas((2 * r + 1, 2 * r + 1))
    canvas.add_bilinear(dy + r, dx + r, weights)
    k = canvas.render().astype(np.float64)
    return k / k.sum()


class _Smear:
    """A tracking path: translations (dy, dx) sampled in time, or a rotation about a centre."""

    def __init__(self, kind, dy=None, dx=None, weights=None, center=None, angles=None):
        self.kind = kind
        self.dy, self.dx, self.weights = dy, dx, weights
        self.center, self.angles = center, angles

    def apply_image(self, image):
        if self.kind == "arc":
            return self._rotation_smear(image)
        k = _kernel_from_offsets(self.dy, self.dx, self.weights)
        return np.maximum(oaconvolve(image, k, mode="same"), 0).astype(np.float32)

    def apply(self, shape, cond, cat):
        return self.apply_image(render_sources(shape, cond, cat))

    def _rotation_smear(self, image, step=64):
        """Field rotation: the smear varies over the field, so convolve with the local arc kernel
        on a grid of nodes ``step`` px apart and blend with bilinear weights (a partition of unity),
        which keeps the result seamless at a fraction of the cost of rendering rotated copies."""
        h, w = image.shape
        cy, cx = self.center
        ang = np.linspace(self.angles[0], self.angles[-1], 256)
        ca, sa = np.cos(ang), np.sin(ang)
        out = np.zeros((h, w), dtype=np.float64)
        step = int(max(16, min(step, h // 2, w // 2)))
        ys = list(range(0, h - 1, step)) + [h - 1]
        xs = list(range(0, w - 1, step)) + [w - 1]
        for iy, ny in enumerate(ys):
            for ix, nx in enumerate(xs):
                dy = cy + (nx - cx) * sa + (ny - cy) * ca - ny
                dx = cx + (nx - cx) * ca - (ny - cy) * sa - nx
                k = _kernel_from_offsets(dy - dy.mean(), dx - dx.mean(), np.full(ang.size, 1.0 / ang.size))
                # the support of this node's hat function, padded by the kernel radius
                y0, y1 = ys[max(iy - 1, 0)], ys[min(iy + 1, len(ys) - 1)] + 1
                x0, x1 = xs[max(ix - 1, 0)], xs[min(ix + 1, len(xs) - 1)] + 1
                r = k.shape[0] // 2
                py0, py1 = max(0, y0 - r), min(h, y1 + r)
                px0, px1 = max(0, x0 - r), min(w, x1 + r)
                conv = oaconvolve(image[py0:py1, px0:px1], k, mode="same")[y0 - py0:y1 - py0, x0 - px0:x1 - px0]
                wy = _hat(np.arange(y0, y1), ny, ys, iy)
                wx = _hat(np.arange(x0, x1), nx, xs, ix)
                out[y0:y1, x0:x1] += conv * wy[:, None] * wx[None, :]
        # the mean offset of each node's path is removed: the image stays registered on average
        return np.maximum(out, 0).astype(np.float32)


def _hat(pos, node, nodes, i):
    """Bilinear (hat) weight of ``node`` at positions ``pos``; the nodes may be unevenly spaced."""
    wgt = np.zeros(pos.size)
    left = nodes[i - 1] if i > 0 else None
    right = nodes[i + 1] if i + 1 < len(nodes) else None
    on_left = pos <= node
    if left is None:
        wgt[on_left] = 1.0
    else:
        wgt[on_left] = np.clip((pos[on_left] - left) / (node - left), 0, 1)
    if right is None:
        wgt[~on_left] = 1.0
    else:
        wgt[~on_left] = np.clip((right - pos[~on_left]) / (right - node), 0, 1)
    return wgt


def _draw_path(kind, shape, rng, fwhm):
    h, w = shape
    m = 600
    t = np.linspace(0.0, 1.0, m)
    lo = max(3.0, 0.7 * fwhm)
    info = {"kind": kind}
    if kind == "drift":
        length = float(log_uniform(rng, lo, max(50.0, lo * 1.2)))
        ang = rng.uniform(0, 2 * np.pi)
        # guiding drifts are seldom at constant speed
        s = t + rng.uniform(-0.3, 0.3) * t * (1 - t)
        dy, dx = (s - 0.5) * length * np.sin(ang), (s - 0.5) * length * np.cos(ang)
        info["extent_px"] = length
    elif kind == "jump":
        sep = float(log_uniform(rng, max(3.0, 1.2 * fwhm), max(40.0, 1.5 * fwhm)))
        ang = rng.uniform(0, 2 * np.pi)
        njump = 1 if rng.uniform() < 0.8 else 2
        cuts = np.sort(rng.uniform(0.2, 0.8, njump))
        step = np.searchsorted(cuts, t).astype(float)
        jitter = rng.normal(0, 0.3 * fwhm / 2.355, 2)
        dy = step * sep * np.sin(ang) + jitter[0] * t
        dx = step * sep * np.cos(ang) + jitter[1] * t
        dy -= dy.mean()
        dx -= dx.mean()
        info["extent_px"] = sep * njump
    elif kind == "shake":
        rms = float(log_uniform(rng, max(1.5, 0.6 * fwhm), max(15.0, fwhm)))
        # Ornstein-Uhlenbeck walk: wind gusts with a correlation time of a few % of the exposure
        tau = rng.uniform(0.01, 0.1)
        a = np.exp(-1.0 / (m * tau))
        e = rng.standard_normal((m, 2)) * np.sqrt(1 - a * a)
        p = np.zeros((m, 2))
        for i in range(1, m):
            p[i] = a * p[i - 1] + e[i]
        aniso = rng.uniform(0.3, 1.0)
        dy, dx = p[:, 0] * rms * aniso, p[:, 1] * rms
        ang = rng.uniform(0, np.pi)
        dy, dx = dy * np.cos(ang) - dx * np.sin(ang), dy * np.sin(ang) + dx * np.cos(ang)
        info["extent_px"] = rms
    elif kind == "periodic":
        amp = float(log_uniform(rng, max(1.5, 0.5 * fwhm), max(20.0, fwhm)))
        cycles = rng.uniform(0.5, 5.0)
        ang = rng.uniform(0, 2 * np.pi)
        along = amp * np.sin(2 * np.pi * cycles * t + rng.uniform(0, 2 * np.pi))
        drift = rng.uniform(-0.3, 0.3) * amp * (t - 0.5)
        dy, dx = along * np.sin(ang) + drift * np.cos(ang), along * np.cos(ang) - drift * np.sin(ang)
        info["extent_px"] = 2 * amp
    else:
        raise ValueError(kind)
    return _Smear(kind, dy, dx, np.full(m, 1.0 / m)), info


def _draw_arc(shape, rng, fwhm):
    h, w = shape
    lo = max(3.0, 0.7 * fwhm)
    length = float(log_uniform(rng, lo, max(50.0, lo * 1.2)))
    # rotation centre: inside or just outside the frame (field rotation of an alt-az mount)
    cy = rng.uniform(-0.5, 1.5) * h
    cx = rng.uniform(-0.5, 1.5) * w
    corners = np.array([[0, 0], [0, w], [h, 0], [h, w]], dtype=float)
    rmax = np.hypot(corners[:, 0] - cy, corners[:, 1] - cx).max()
    total = length / rmax
    n = int(np.clip(np.ceil(length / max(0.4 * fwhm, 0.6)), 4, 48))
    angles = (np.arange(n) / (n - 1) - 0.5) * total
    return _Smear("arc", center=(cy, cx), angles=angles), {"kind": "arc", "extent_px": length, "center": [cy, cx], "angle_rad": total}


def simulate_tracking_frame(shape, rng, config=None):
    """Simulate one frame with or without a tracking error.

    Parameters
    ----------
    shape : tuple of int
        (H, W), at least 16 each.
    rng : numpy.random.Generator
    config : dict or None
        As for :func:`maximask.sim.simulate_frame`, plus ``tracking_kind`` (one of
        :data:`TRACKING_KINDS`, or None for random) and ``tracking_prob`` (share of frames with a
        tracking error when the kind is random, default 0.5).

    Returns
    -------
    image : numpy.ndarray
        float32 (H, W), processed frame in ADU (raw-like integers with ``raw_dtype``).
    label : int
        1 for a tracking error, 0 for a normal exposure.
    metadata : dict
        As for :func:`simulate_frame`, plus ``kind`` and ``tracking`` (path parameters).
    """
    shape = _check_shape(shape)
    config = dict(config or {})
    kind = config.pop("tracking_kind", None)
    prob = float(config.pop("tracking_prob", 0.5))
    cfg = make_config(config)
    if kind is None:
        if rng.uniform() < prob:
            kind = str(rng.choice(TRACKING_KINDS[1:]))
        else:
            kind = "none"
    if kind not in TRACKING_KINDS:
        from ..errors import UsageError

        raise UsageError("config", f"tracking_kind must be one of {', '.join(TRACKING_KINDS)}, not {kind!r}")
    # the path is drawn from its own stream so that the scene does not depend on the kind
    path_rng = np.random.default_rng(rng.integers(0, 2**63))
    smear = None
    track_info = {"kind": "none", "extent_px": 0.0}

    class _Deferred:
        """Draws the path once the PSF FWHM is known (inside the scene construction)."""

        def __init__(self):
            self.inner = None

        def _ensure(self, cond, shape):
            nonlocal track_info
            if self.inner is None:
                if kind == "arc":
                    self.inner, track_info = _draw_arc(shape, path_rng, cond["fwhm_px"])
                else:
                    self.inner, track_info = _draw_path(kind, shape, path_rng, cond["fwhm_px"])

        def apply(self, shape, cond, cat):
            self._ensure(cond, shape)
            return self.inner.apply(shape, cond, cat)

        def apply_image(self, image):
            return self.inner.apply_image(image)

    if kind != "none":
        smear = _Deferred()
    image, _truth, meta = _simulate(shape, rng, cfg, smear=smear)
    meta["kind"] = kind
    meta["tracking"] = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in track_info.items()}
    if "center" in meta["tracking"]:
        meta["tracking"]["center"] = [float(v) for v in meta["tracking"]["center"]]
    return image, int(kind != "none"), meta
