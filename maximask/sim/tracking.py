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


class _Smear:
    """A tracking path: translations (dy, dx) sampled in time, or a rotation about a centre."""

    def __init__(self, kind, dy=None, dx=None, weights=None, center=None, angles=None):
        self.kind = kind
        self.dy, self.dx, self.weights = dy, dx, weights
        self.center, self.angles = center, angles

    def kernel(self):
        r = int(np.ceil(max(np.abs(self.dy).max(), np.abs(self.dx).max()))) + 2
        canvas = Canvas((2 * r + 1, 2 * r + 1))
        canvas.add_bilinear(self.dy + r, self.dx + r, self.weights)
        k = canvas.render().astype(np.float64)
        return k / k.sum()

    def apply_image(self, image):
        if self.kind == "arc":
            return image  # spikes and halos rotate little; leave them
        k = self.kernel()
        return np.maximum(oaconvolve(image, k, mode="same"), 0).astype(np.float32)

    def apply(self, shape, cond, cat):
        if self.kind != "arc":
            return self.apply_image(render_sources(shape, cond, cat))
        cy, cx = self.center
        # render the catalogue at every rotation step with its share of the flux
        total = np.zeros(shape, dtype=np.float32)
        n = len(self.angles)
        for a in self.angles:
            ca, sa = np.cos(a), np.sin(a)

            def rot(x, y, ca=ca, sa=sa):
                return cx + (x - cx) * ca - (y - cy) * sa, cy + (x - cx) * sa + (y - cy) * ca

            total += render_sources(shape, cond, cat, offsets=rot)
        return total / np.float32(n)


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
