"""Field rotation: the signature of a tracking arc in the shapes of a field's stars.

An arc (the field rotated about a centre ``c`` during the exposure: an alt-azimuth mount without a
derotator, a guider locked on one star) smears each star along the circle about ``c`` through it,
by ``r * angle``, ``r`` its distance from ``c``. Where the centre lies in or near the frame, most
of the field is smeared by less than a PSF FWHM, and neither the tiles' network nor the
double-image term sees it (docs/MAXITRACK.md, "Visibility of the errors"). The stars' shapes still
carry it, as a pattern over the field: a short smear of length ``L`` along the unit direction
``u`` adds ``L**2 / 12 * u u^T`` to a star's second moments, so in complex notation (``w = x + i
y``, ellipticity ``eps = (Qxx - Qyy + 2 i Qxy) / (Qxx + Qyy)``) an arc adds ``-g * (w - c)**2``,
``g >= 0``: tangential, and growing as the square of the distance from the centre. A normal
exposure's PSF does not look like that: its ellipticity is constant over the field (guiding, wind,
astigmatism in focus), measured a little differently as the PSF's size changes across the field,
plus coma, radial about the optical axis, ``+k * (w - o)**2``.

Statistic (:func:`rotation_significance`, parameters in :data:`DEFAULT_FIELD_ROTATION`, stored in
the network metadata as ``field_rotation``):

1. **Stars** (:func:`star_moments`): the field's compact peaks (:func:`maxitrack.tiles.compact_peaks`,
   the tiles' and the double-image term's peaks) with no other peak within ``isolation`` binned
   px (a neighbour biases the moments), not peaking above ``saturation`` of the frame's brightest
   pixel (flat saturated cores and non-linear ones; on a frame without saturated stars, its few
   brightest), the ``max_stars`` brightest. Each gets second moments under a
   round Gaussian weight centred on it (``iterations`` steps of centroid and weight), the weight's
   width that of the frame's median star (a Gaussian star of variance ``s2`` under a weight of
   ``sw2`` has weighted variance ``s2 * sw2 / (s2 + sw2)``).
2. **Selection**: matched-filter S/N of at least ``snr_min``, size within ``size_band`` of the
   median (cosmic rays, galaxies and blends out), ``|eps| < max_ellipticity``; each star weighted
   by ``1 / (intrinsic**2 + (2 / snr)**2)``.
3. **Fit**, for each candidate centre ``c`` on a ``grid`` x ``grid`` lattice from -0.5 to 1.5 of the
   frame on each axis (an alt-azimuth field's centre is in or near the frame; farther out the
   pattern is a gradient): weighted least squares of ``eps`` on the rotation term ``-(w - c)**2``,
   the coma term ``w**2`` (about the frame's centre), a constant (complex), and the constant's
   change with position (``eps0 * x``, ``eps0 * y``, ``eps0`` the weighted mean ellipticity: a
   PSF whose size changes over the field dilutes its measured ellipticity there), with positions
   in units of the frame's half diagonal, clipping residuals beyond ``clip`` times their robust
   spread. ``R`` is the largest t-value of the rotation term's coefficient over the centres
   (positive: tangential), 0 with fewer than ``min_stars`` stars.

A field's ``R`` is the mean of its HDUs' (those with enough stars): each CCD of a mosaic sees the
same rotation about a centre of its own. The field's score adds ``weight * log(1 + max(R -
offset, 0))`` to the calibrated logit, like the double-image term
(:func:`maxitrack.scoring.field_logit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Parameters of the statistic, stored in the network metadata (``field_rotation``).
DEFAULT_FIELD_ROTATION = {
    "isolation": 8,  # binned px free of other peaks around a star
    "half": 16,  # stamp half-side (px); FWHMs of 1.5-10 px fit
    "max_stars": 500,  # brightest isolated stars per HDU
    "saturation": 0.9,  # share of the frame's brightest pixel (above the sky) a star may peak at
    "iterations": 6,
    "snr_min": 10.0,
    "size_band": [0.6, 1.6],
    "max_ellipticity": 0.6,
    "intrinsic": 0.05,  # ellipticity scatter beyond the noise (galaxies, blends)
    "grid": 9,
    "clip": 4.0,
    "min_stars": 12,
}
# One more key is optional, absent from these defaults: "coma_term" (True when absent): whether the
# fit has a free coma column ``w**2`` about the frame's centre.


@dataclass
class StarShapes:
    """Second moments of one HDU's stars (pixels; positions ``x``, ``y`` in the HDU's frame)."""

    x: np.ndarray
    y: np.ndarray
    qxx: np.ndarray
    qyy: np.ndarray
    qxy: np.ndarray
    snr: np.ndarray
    weight_sigma: float
    shape: tuple

    def __len__(self) -> int:
        return len(self.x)


def _empty(shape, sw=0.0) -> StarShapes:
    z = np.zeros(0)
    return StarShapes(z, z, z, z, z, z, float(sw), tuple(shape))


def isolated_peaks(peaks: np.ndarray, isolation: int) -> np.ndarray:
    """The peaks of a binned peak map with no other peak within ``isolation`` (on each axis).

    Parameters
    ----------
    peaks : ndarray, bool, shape (h, w)
    isolation : int

    Returns
    -------
    ndarray, bool, shape (h, w)
    """
    from scipy import ndimage

    m = np.asarray(peaks, bool)
    side = 2 * int(isolation) + 1
    # peaks within the box, the peak itself included (integer count by a maximum over 0/1 sums)
    count = ndimage.uniform_filter(m.astype(np.float32), size=side, mode="constant") * side * side
    return m & (count < 1.5)


def star_moments(image: np.ndarray, sky: float, noise: float, peaks: np.ndarray,
                 params: dict | None = None) -> StarShapes:
    """Weighted second moments of a frame's isolated stars.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Raw pixel values.
    sky, noise : float
        The frame's sky level and noise (:func:`maxitrack.tiles.frame_sky`).
    peaks : ndarray, bool, shape (H // 2, W // 2)
        The frame's compact peaks (:func:`maxitrack.tiles.compact_peaks`).
    params : dict, optional
        :data:`DEFAULT_FIELD_ROTATION` keys.

    Returns
    -------
    StarShapes
        Brightest first.
    """
    p = dict(DEFAULT_FIELD_ROTATION, **(params or {}))
    image = np.asarray(image)
    h, w = image.shape
    half = int(p["half"])
    if not (np.isfinite(noise) and noise > 0):
        return _empty((h, w))
    yb, xb = np.nonzero(isolated_peaks(peaks, int(p["isolation"])))
    y, x = 2 * yb, 2 * xb
    inside = (y >= half) & (y < h - half - 1) & (x >= half) & (x < w - half - 1)
    y, x = y[inside], x[inside]
    if y.size == 0:
        return _empty((h, w))
    # the brightest pixel of the binned peak's 2x2 block
    block = np.stack([image[y, x], image[y + 1, x], image[y, x + 1], image[y + 1, x + 1]], 1)
    k = np.argmax(np.nan_to_num(block, nan=-np.inf), axis=1)
    y = y + (k % 2)
    x = x + (k // 2)
    top = np.nan_to_num(image[y, x].astype(np.float64), nan=np.inf) - sky
    brightest = float(np.nanmax(image)) - sky
    keep = top < float(p["saturation"]) * brightest
    order = np.argsort(-top[keep], kind="stable")[: int(p["max_stars"])]
    y, x = y[keep][order], x[keep][order]
    if y.size == 0:
        return _empty((h, w))
    off = np.arange(-half, half + 1)
    stamps = image[y[:, None, None] + off[None, :, None], x[:, None, None] + off[None, None, :]].astype(np.float64)
    stamps -= sky
    finite = np.isfinite(stamps).all(axis=(1, 2))
    stamps, y, x = stamps[finite], y[finite], x[finite]
    if y.size == 0:
        return _empty((h, w))
    yy, xx = np.meshgrid(off.astype(np.float64), off.astype(np.float64), indexing="ij")
    sw = 3.0
    cy = np.zeros(len(y))
    cx = np.zeros(len(y))
    n_iter = int(p["iterations"])
    for it in range(n_iter + 1):
        dy = yy[None] - cy[:, None, None]
        dx = xx[None] - cx[:, None, None]
        ws = stamps * np.exp(-0.5 * (dx * dx + dy * dy) / sw**2)
        f = ws.sum(axis=(1, 2))
        good = f > 0
        fs = np.where(good, f, 1.0)
        qxx = (ws * dx * dx).sum(axis=(1, 2)) / fs
        qyy = (ws * dy * dy).sum(axis=(1, 2)) / fs
        qxy = (ws * dx * dy).sum(axis=(1, 2)) / fs
        if it == n_iter:
            break
        cy = np.where(good, cy + np.clip((ws * dy).sum(axis=(1, 2)) / fs, -1, 1), cy)
        cx = np.where(good, cx + np.clip((ws * dx).sum(axis=(1, 2)) / fs, -1, 1), cx)
        m = 0.5 * (qxx + qyy)
        ok = good & (m > 0)
        if not ok.any():
            break
        mm = float(np.median(m[ok][:300]))  # the brightest stars set the weight's width
        if mm < 0.9 * sw**2:
            sw = float(np.clip(np.sqrt(mm * sw**2 / (sw**2 - mm)), 0.6, half / 3.0))
        else:
            sw = min(2.0 * sw, half / 3.0)
    ok = good & np.isfinite(qxx) & np.isfinite(qyy) & np.isfinite(qxy)
    snr = f / (noise * np.sqrt(4.0 * np.pi) * sw)
    return StarShapes((x + cx)[ok], (y + cy)[ok], qxx[ok], qyy[ok], qxy[ok], snr[ok], float(sw), (h, w))


def _selected(stars: StarShapes, p: dict):
    """Positions (complex, units of the half diagonal, origin at the centre), ellipticities
    (complex) and weights of the stars the fit uses."""
    h, w = stars.shape
    t = stars.qxx + stars.qyy
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = (stars.qxx - stars.qyy + 2j * stars.qxy) / t
    base = np.isfinite(eps) & (t > 0) & (stars.snr > float(p["snr_min"]))
    if not base.any():
        return np.zeros(0, complex), np.zeros(0, complex), np.zeros(0)
    med = float(np.median(t[base]))
    lo, hi = p["size_band"]
    ok = base & (t > lo * med) & (t < hi * med) & (np.abs(eps) < float(p["max_ellipticity"]))
    rmax = float(np.hypot(h / 2.0, w / 2.0))
    z = ((stars.x[ok] - w / 2.0) + 1j * (stars.y[ok] - h / 2.0)) / rmax
    wt = 1.0 / (float(p["intrinsic"]) ** 2 + (2.0 / stars.snr[ok]) ** 2)
    return z, eps[ok], wt


def _clip_mask(X: np.ndarray, y: np.ndarray, wt: np.ndarray, clip: float, rounds: int = 3) -> np.ndarray:
    """The rows whose weighted residual from a least-squares fit lies within ``clip`` robust
    sigmas (iterated): galaxies, blends and cosmic rays that passed the selection go."""
    keep = np.ones(len(y), bool)
    for _ in range(rounds):
        sw = np.sqrt(wt * keep)
        beta = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        r = (y - X @ beta) * np.sqrt(wt)
        s = 1.4826 * float(np.median(np.abs(r[keep])))
        keep = np.abs(r) < clip * max(s, 1e-12)
    return keep


def _scan_t(rot: np.ndarray, fixed: np.ndarray, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """t-values of each rotation column's coefficient in the weighted least-squares fit of ``y``
    on that column and the fixed ones, for all the columns at once (the fixed columns projected
    out first)."""
    sw = np.sqrt(wt)
    q, _ = np.linalg.qr(fixed * sw[:, None])
    Rw = rot * sw[:, None]
    yw = y * sw
    Rt = Rw - q @ (q.T @ Rw)
    yt = yw - q @ (q.T @ yw)
    rr = np.einsum("ij,ij->j", Rt, Rt)
    ry = Rt.T @ yt
    dof = max(int(np.count_nonzero(wt)) - fixed.shape[1] - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = ry / rr
        ss = float(yt @ yt) - g * ry
        return g / np.sqrt(np.maximum(ss / dof, 1e-300) / rr)


def rotation_significance(stars: StarShapes, params: dict | None = None) -> float:
    """The largest t-value of a tangential (field-rotation) pattern in one HDU's star shapes.

    Parameters
    ----------
    stars : StarShapes
        :func:`star_moments` of the HDU.
    params : dict, optional
        :data:`DEFAULT_FIELD_ROTATION` keys.

    Returns
    -------
    float
        ``R`` (see the module docstring); 0 with fewer than ``min_stars`` usable stars.
    """
    p = dict(DEFAULT_FIELD_ROTATION, **(params or {}))
    z, eps, wt = _selected(stars, p)
    if len(z) < int(p["min_stars"]):
        return 0.0
    h, w = stars.shape
    rmax = float(np.hypot(h / 2.0, w / 2.0))

    def col(v):
        return np.concatenate([v.real, v.imag])

    one = np.ones(len(z))
    y = col(eps)
    W = np.concatenate([wt, wt])
    clip = float(p["clip"])
    if p.get("model", "scan") == "curvature":
        # eps = A w**2 + (any linear gradient) + C: a rotation's curvature is tangential (Re A < 0)
        # about any centre, a radial PSF pattern's (coma) Re A > 0 about any optical axis
        X = np.column_stack([col(z**2), col(1j * z**2), col(z.real + 0j), col(1j * z.real),
                             col(z.imag + 0j), col(1j * z.imag), col(one + 0j), col(1j * one)])
        keep = _clip_mask(X, y, W, clip)
        t = _scan_t(-X[:, :1], X[:, 1:], y, W * keep)
        return float(t[0]) if np.isfinite(t[0]) else 0.0
    eps0 = np.sum(wt * eps) / np.sum(wt)
    if p.get("model", "scan") == "contrast":
        return _contrast(z, y, W, eps0, col, p, h, w, rmax)
    fixed = [col(one + 0j), col(1j * one), col(eps0 * z.real), col(eps0 * z.imag)]
    if p.get("coma_term", True):
        fixed.insert(0, col(z**2))
    fixed = np.column_stack(fixed)
    fr = np.linspace(-0.5, 1.5, int(p["grid"]))
    fy, fx = np.meshgrid(fr, fr, indexing="ij")
    centres = (((fx - 0.5) * w + 1j * (fy - 0.5) * h) / rmax).ravel()
    rot = np.column_stack([col(-((z - c) ** 2)) for c in centres])
    # outliers judged against the model without a rotation, then with the best centre's
    keep = _clip_mask(fixed, y, W, clip)
    t = _scan_t(rot, fixed, y, W * keep)
    if not np.isfinite(t).any():
        return 0.0
    keep = _clip_mask(np.column_stack([rot[:, int(np.nanargmax(t))], fixed]), y, W, clip)
    t = _scan_t(rot, fixed, y, W * keep)
    return float(np.nanmax(t)) if np.isfinite(t).any() else 0.0


def _contrast(z, y, W, eps0, col, p, h, w, rmax) -> float:
    """Tangential against radial: the best fit of ``-g (w - c)**2`` with g > 0 (a rotation about
    some centre) against the best with g < 0 (a radial pattern, coma, about some optical axis),
    over the centres; the signed square root of the difference of their chi-squares in units of the
    residual variance. A pure gradient (a centre far away) fits both alike."""
    one = np.ones(len(z))
    fixed = np.column_stack([col(one + 0j), col(1j * one), col(eps0 * z.real), col(eps0 * z.imag)])
    lo, hi = p.get("centre_range", [-1.5, 2.5])
    fr = np.linspace(float(lo), float(hi), int(p.get("contrast_grid", 17)))
    fy, fx = np.meshgrid(fr, fr, indexing="ij")
    centres = (((fx - 0.5) * w + 1j * (fy - 0.5) * h) / rmax).ravel()
    rot = np.column_stack([col(-((z - c) ** 2)) for c in centres])
    keep = _clip_mask(fixed, y, W, float(p["clip"]))
    for _ in range(2):
        sw = np.sqrt(W * keep)
        q, _r = np.linalg.qr(fixed * sw[:, None])
        Rw = rot * sw[:, None]
        yw = y * sw
        Rt = Rw - q @ (q.T @ Rw)
        yt = yw - q @ (q.T @ yw)
        rr = np.einsum("ij,ij->j", Rt, Rt)
        ry = Rt.T @ yt
        with np.errstate(invalid="ignore", divide="ignore"):
            gain = np.where(rr > 0, ry * ry / rr, 0.0)  # chi-square drop of each centre's fit
        best = int(np.argmax(gain))
        # outliers judged again against the best pattern
        keep = _clip_mask(np.column_stack([rot[:, best], fixed]), y, W, float(p["clip"]))
    ss0 = float(yt @ yt)
    dof = max(int(np.count_nonzero(W * keep)) - fixed.shape[1] - 1, 1)
    s2 = max((ss0 - float(gain.max())) / dof, 1e-300)
    tang = float(gain[ry > 0].max()) if np.any(ry > 0) else 0.0
    rad = float(gain[ry < 0].max()) if np.any(ry < 0) else 0.0
    d = (tang - rad) / s2
    return float(np.sign(d) * np.sqrt(abs(d)))


class FieldRotation:
    """A field's rotation statistic, accumulated over its HDUs (the mean of their ``R``)."""

    def __init__(self, params: dict | None = None):
        self.params = dict(DEFAULT_FIELD_ROTATION, **(params or {}))
        self.values: list = []

    def add(self, stars: StarShapes | None) -> None:
        """Add one HDU's stars (None or too few stars: the HDU does not count)."""
        if stars is None:
            return
        z, _, _ = _selected(stars, self.params)
        if len(z) >= int(self.params["min_stars"]):
            self.values.append(rotation_significance(stars, self.params))

    def significance(self) -> float:
        """The field's ``R``: the mean over its HDUs with enough stars, 0 when none has."""
        return float(np.mean(self.values)) if self.values else 0.0
