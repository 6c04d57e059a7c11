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
   brightest), not sharper than a star can be (``max_sharpness``: the peak over its 4
   neighbours' mean; hot pixels and cosmic-ray hits, which on some frames outshine every star and
   would set the weight's width), the ``max_stars`` brightest. With ``width_check``, an HDU whose
   weight's width ends at a bound of its range (0.5 px, a third of ``half``) gives no stars: what
   it measured is no star of a supported PSF (cosmic-ray tracks that outnumber the stars, or
   stars smeared beyond the stamp). With ``local_background``, a plane fitted to each
   stamp's border is subtracted first (a star on a bright star's halo, a bleed trail's wings or
   a nebula sits on a gradient, which shifts its moments). Each star gets second moments under a
   round Gaussian weight centred on it (``iterations`` steps of centroid and weight), the weight's
   width that of the frame's median star (a Gaussian star of variance ``s2`` under a weight of
   ``sw2`` has weighted variance ``s2 * sw2 / (s2 + sw2)``).
2. **Selection**: matched-filter S/N of at least ``snr_min``, size within ``size_band`` of the
   median (cosmic rays, galaxies and blends out), ``|eps| < max_ellipticity``; each star weighted
   by ``1 / (intrinsic**2 + (2 / snr)**2)``.
3. **Fit** (``model: "contrast"``, the default). A rotation about any centre adds ``-g (w -
   c)**2`` with ``g > 0``; coma radial about any optical axis (on the frame, or off it as on a
   mosaic's outer CCDs) adds the same with ``g < 0``; a centre or an axis far away leaves a
   gradient, which fits both alike. For each centre ``c`` on a ``contrast_grid`` x
   ``contrast_grid`` lattice spanning ``centre_range`` of the frame on each axis, ``eps`` is
   fitted (weighted least squares, residuals beyond ``clip`` robust sigmas left out) on ``-(w -
   c)**2``, a complex constant and the constant's change with position (``eps0 * x``, ``eps0 *
   y``, ``eps0`` the weighted mean ellipticity: a PSF whose size changes over the field dilutes
   its measured ellipticity there), positions in units of the frame's half diagonal. ``R`` is the
   signed square root of the chi-square difference between the best tangential fit (``g > 0``)
   and the best radial one (``g < 0``), in units of the residual variance: positive for a
   rotation, negative for coma, 0 with fewer than ``min_stars`` stars. Where a frame has both,
   the stronger wins: second moments cannot tell a small arc under strong coma.

   ``model: "scan"`` is the first candidate's statistic (docs/MAXITRACK.md, "Small arcs from the
   stars' shapes"), kept for the record: the largest t-value of ``g`` over a ``grid`` x ``grid``
   lattice from -0.5 to 1.5, with a free coma column ``w**2`` about the frame's centre (unless
   ``coma_term`` is false). It reads coma about an optical axis off the frame as a rotation.

A field's ``R`` is the mean of its HDUs' (those with enough stars): each CCD of a mosaic sees the
same rotation about a centre of its own. The field's score adds ``weight * log(1 + max(R -
offset, 0))`` to the calibrated logit, like the double-image term
(:func:`maxitrack.scoring.field_logit`); ``scripts/maxitrack_double_images.py --rotation-offset``
makes a network with it (docs/MAXITRACK.md, "Small arcs from the stars' shapes", for the
candidates and their results).

Second moments cannot tell a rotation from a tangential PSF pattern of the optics (astigmatism
on one side of focus): a telescope whose normal PSFs elongate tangentially would read as
rotating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The star weight's narrowest width (px): a Gaussian of FWHM 1.4 px; 1.2 px with the width check,
#: which must not take the sharpest supported stars (FWHM 1.5 px, 0.64 px, or 0.70 px with the
#: pixel's own width) for defects.
SIGMA_FLOOR = 0.6
SIGMA_FLOOR_CHECKED = 0.5

#: Parameters of the statistic, stored in the network metadata (``field_rotation``).
DEFAULT_FIELD_ROTATION = {
    "isolation": 8,  # binned px free of other peaks around a star
    "half": 16,  # stamp half-side (px); FWHMs of 1.5-10 px fit
    "max_stars": 500,  # brightest isolated stars per HDU
    "saturation": 0.9,  # share of the frame's brightest pixel (above the sky) a star may peak at
    "iterations": 6,
    "local_background": True,  # a plane under each star, fitted to its stamp's border
    # a peak this many times its 4 neighbours' mean is no star (a hot pixel, a cosmic-ray hit):
    # a pixel-integrated Gaussian of FWHM 1.5 px, the sharpest PSF supported, peaks at 2.7 times
    "max_sharpness": 5.0,
    # a weight whose width ends at a bound of its range (0.5 px; a third of the stamp's half-side)
    # measured no star of a supported PSF (FWHM 1.5-10 px): the HDU gives no stars
    "width_check": True,
    "snr_min": 10.0,
    "size_band": [0.6, 1.6],
    "max_ellipticity": 0.6,
    "intrinsic": 0.05,  # ellipticity scatter beyond the noise (galaxies, blends)
    "clip": 4.0,
    "min_stars": 12,
    "model": "contrast",
    "centre_range": [-1.5, 2.5],  # candidate centres, in frame sizes from the first pixel
    "contrast_grid": 17,
    "grid": 9,  # the "scan" model's centres
}
# One more key is optional, absent from these defaults: "coma_term" (True when absent), whether the
# "scan" model's fit has a free coma column ``w**2`` about the frame's centre.


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


def _empty(shape) -> StarShapes:
    z = np.zeros(0)
    return StarShapes(z, z, z, z, z, z, 0.0, tuple(shape))


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
    m = np.asarray(peaks, bool)
    h, w = m.shape
    r = int(isolation)
    # peaks within the box about each peak, the peak itself included, from an integral image
    s = np.zeros((h + 1, w + 1), np.int32)
    np.cumsum(np.cumsum(m, axis=0, dtype=np.int32), axis=1, out=s[1:, 1:])
    y, x = np.nonzero(m)
    y0, y1 = np.maximum(y - r, 0), np.minimum(y + r + 1, h)
    x0, x1 = np.maximum(x - r, 0), np.minimum(x + r + 1, w)
    count = s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0]
    out = np.zeros_like(m)
    out[y[count == 1], x[count == 1]] = True
    return out


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
    if p.get("max_sharpness") is not None:
        # before the weight's width is set from the brightest: where defects outshine the stars,
        # the width would otherwise shrink to a pixel and the moments measure the defects
        around = (image[y - 1, x] + image[y + 1, x] + image[y, x - 1] + image[y, x + 1]).astype(np.float64) / 4.0 - sky
        keep &= top <= float(p["max_sharpness"]) * np.nan_to_num(around, nan=-np.inf)
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
    if p["local_background"]:
        stamps = stamps - _border_plane(stamps, yy, xx)
    sw = 3.0
    floor = SIGMA_FLOOR_CHECKED if p.get("width_check") else SIGMA_FLOOR
    cy = np.zeros(len(y))
    cx = np.zeros(len(y))
    n_iter = int(p["iterations"])
    grid = off.astype(np.float64)
    for it in range(n_iter + 1):
        # the round Gaussian weight is separable: its factors along y and x, per star
        dy = grid[None, :] - cy[:, None]
        dx = grid[None, :] - cx[:, None]
        gy = np.exp(-0.5 * dy * dy / sw**2)
        gx = np.exp(-0.5 * dx * dx / sw**2)
        along_x = np.einsum("nyx,nx->ny", stamps, gx)  # sum over x of stamp * weight_x
        along_x_dx = np.einsum("nyx,nx->ny", stamps, gx * dx)
        f = np.einsum("ny,ny->n", along_x, gy)
        good = f > 0
        fs = np.where(good, f, 1.0)
        qxx = np.einsum("nyx,nx,ny->n", stamps, gx * dx * dx, gy) / fs
        qyy = np.einsum("ny,ny->n", along_x, gy * dy * dy) / fs
        qxy = np.einsum("ny,ny->n", along_x_dx, gy * dy) / fs
        if it == n_iter:
            break
        cy = np.where(good, cy + np.clip(np.einsum("ny,ny->n", along_x, gy * dy) / fs, -1, 1), cy)
        cx = np.where(good, cx + np.clip(np.einsum("ny,ny->n", along_x_dx, gy) / fs, -1, 1), cx)
        m = 0.5 * (qxx + qyy)
        ok = good & (m > 0)
        if not ok.any():
            break
        mm = float(np.median(m[ok][:300]))  # the brightest stars set the weight's width
        if mm < 0.9 * sw**2:
            sw = float(np.clip(np.sqrt(mm * sw**2 / (sw**2 - mm)), floor, half / 3.0))
        else:
            sw = min(2.0 * sw, half / 3.0)
    if p.get("width_check") and not floor < sw < half / 3.0:
        return _empty((h, w))
    ok = good & np.isfinite(qxx) & np.isfinite(qyy) & np.isfinite(qxy)
    snr = f / (noise * np.sqrt(4.0 * np.pi) * sw)
    return StarShapes((x + cx)[ok], (y + cy)[ok], qxx[ok], qyy[ok], qxy[ok], snr[ok], float(sw), (h, w))


def _border_plane(stamps: np.ndarray, yy: np.ndarray, xx: np.ndarray, ring: int = 3) -> np.ndarray:
    """The plane fitted (median-clipped least squares) to the outer ``ring`` pixels of each stamp:
    the local background under a star on a halo, a nebula or a bleed trail's wings, whose gradient
    would shift its weighted moments."""
    half = stamps.shape[1] // 2
    border = (np.abs(yy) > half - ring) | (np.abs(xx) > half - ring)
    A = np.column_stack([np.ones(border.sum()), yy[border], xx[border]])
    v = stamps[:, border]
    # a neighbour's light in the ring would tilt the plane: pixels beyond 3 MADs of the median go
    med = np.median(v, axis=1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(v - med), axis=1, keepdims=True)
    ok = np.abs(v - med) <= 3.0 * np.maximum(mad, 1e-12)
    w = ok.astype(np.float64)
    M = np.einsum("nk,ki,kj->nij", w, A, A) + 1e-9 * np.eye(3)
    b = np.einsum("nk,ki,nk->ni", w, A, v)
    coef = np.linalg.solve(M, b[..., None])[..., 0]
    return coef[:, 0, None, None] + coef[:, 1, None, None] * yy + coef[:, 2, None, None] * xx


def usable_stars(stars: StarShapes, p: dict) -> tuple:
    """The stars a field statistic uses (selection step 2 of the module's description).

    Parameters
    ----------
    stars : StarShapes
    p : dict
        :data:`DEFAULT_FIELD_ROTATION` complete (``snr_min``, ``size_band``, ``max_ellipticity``,
        ``intrinsic``).

    Returns
    -------
    z, eps, wt : ndarray
        Positions (complex, units of the half diagonal, origin at the centre), ellipticities
        (complex) and weights.
    """
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


def _projected(rot: np.ndarray, fixed: np.ndarray, y: np.ndarray, wt: np.ndarray) -> tuple:
    """Weighted least squares of ``y`` on each pattern column of ``rot`` with the fixed columns, for
    all the columns at once (the fixed columns projected out first): ``(rr, ry, yy)``, each
    column's squared norm and product with ``y`` after the projection, and ``y``'s squared norm."""
    sw = np.sqrt(wt)
    q, _ = np.linalg.qr(fixed * sw[:, None])
    Rw = rot * sw[:, None]
    yw = y * sw
    Rt = Rw - q @ (q.T @ Rw)
    yt = yw - q @ (q.T @ yw)
    return np.einsum("ij,ij->j", Rt, Rt), Rt.T @ yt, float(yt @ yt)


def _scan_t(rot: np.ndarray, fixed: np.ndarray, y: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """t-values of each rotation column's coefficient (:func:`_projected`)."""
    rr, ry, yy = _projected(rot, fixed, y, wt)
    dof = max(int(np.count_nonzero(wt)) - fixed.shape[1] - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = ry / rr
        return g / np.sqrt(np.maximum((yy - g * ry) / dof, 1e-300) / rr)


def rotation_significance(stars: StarShapes, params: dict | None = None) -> float:
    """The tangential (field-rotation) pattern in one HDU's star shapes, as a significance.

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
    value = _significance(stars, dict(DEFAULT_FIELD_ROTATION, **(params or {})))
    return 0.0 if value is None else value


def _significance(stars: StarShapes, p: dict) -> float | None:
    """:func:`rotation_significance` with the parameters complete; None with too few stars."""
    z, eps, wt = usable_stars(stars, p)
    if len(z) < int(p["min_stars"]):
        return None
    col = _components
    one = np.ones(len(z))
    y = col(eps)
    W = np.concatenate([wt, wt])
    clip = float(p["clip"])
    eps0 = np.sum(wt * eps) / np.sum(wt)
    # the fit's columns besides the pattern: a complex constant, and its dilution with position
    fixed = [col(one + 0j), col(1j * one), col(eps0 * z.real), col(eps0 * z.imag)]
    if p["model"] == "contrast":
        lo, hi = p["centre_range"]
        rot = _patterns(z, stars.shape, np.linspace(float(lo), float(hi), int(p["contrast_grid"])))
        return _contrast(rot, np.column_stack(fixed), y, W, clip)
    if p["model"] != "scan":
        raise ValueError(f"field_rotation: unknown model {p['model']!r}")
    if p.get("coma_term", True):
        fixed.insert(0, col(z**2))
    fixed = np.column_stack(fixed)
    rot = _patterns(z, stars.shape, np.linspace(-0.5, 1.5, int(p["grid"])))
    # outliers judged against the model without a rotation, then with the best centre's
    keep = _clip_mask(fixed, y, W, clip)
    t = _scan_t(rot, fixed, y, W * keep)
    if not np.isfinite(t).any():
        return 0.0
    keep = _clip_mask(np.column_stack([rot[:, int(np.nanargmax(t))], fixed]), y, W, clip)
    t = _scan_t(rot, fixed, y, W * keep)
    return float(np.nanmax(t)) if np.isfinite(t).any() else 0.0


def _components(v: np.ndarray) -> np.ndarray:
    """A complex column as its real parts, then its imaginary parts (one row per component)."""
    return np.concatenate([v.real, v.imag])


def _patterns(z: np.ndarray, shape, fractions: np.ndarray) -> np.ndarray:
    """The columns ``-(w - c)**2`` of a lattice of centres ``c`` (``fractions`` of the frame on
    each axis, from its first pixel), for stars at ``z`` (half diagonals from the centre)."""
    h, w = shape
    rmax = float(np.hypot(h / 2.0, w / 2.0))
    fy, fx = np.meshgrid(fractions, fractions, indexing="ij")
    centres = (((fx - 0.5) * w + 1j * (fy - 0.5) * h) / rmax).ravel()
    return np.column_stack([_components(-((z - c) ** 2)) for c in centres])


def _contrast(rot: np.ndarray, fixed: np.ndarray, y: np.ndarray, W: np.ndarray, clip: float) -> float:
    """Tangential against radial: the best fit of ``y`` on one pattern column of ``rot`` (and the
    fixed columns) with a positive coefficient (a rotation about that centre) against the best
    with a negative one (coma about that axis); the signed square root of the difference of their
    chi-squares in units of the residual variance. A pure gradient (a centre far away) fits both
    alike."""
    keep = _clip_mask(fixed, y, W, clip)
    for _ in range(2):
        rr, ry, yy = _projected(rot, fixed, y, W * keep)
        with np.errstate(invalid="ignore", divide="ignore"):
            gain = np.where(rr > 0, ry * ry / rr, 0.0)  # each centre's drop of the chi-square
        # outliers judged again against the best pattern
        keep = _clip_mask(np.column_stack([rot[:, int(np.argmax(gain))], fixed]), y, W, clip)
    dof = max(int(np.count_nonzero(W * keep)) - fixed.shape[1] - 1, 1)
    s2 = max((yy - float(gain.max())) / dof, 1e-300)
    tangential = float(gain[ry > 0].max()) if np.any(ry > 0) else 0.0
    radial = float(gain[ry < 0].max()) if np.any(ry < 0) else 0.0
    d = (tangential - radial) / s2
    return float(np.sign(d) * np.sqrt(abs(d)))


class FieldRotation:
    """A field's rotation statistic, accumulated over its HDUs (the mean of their ``R``)."""

    def __init__(self, params: dict | None = None):
        self.params = dict(DEFAULT_FIELD_ROTATION, **(params or {}))
        self.values: list = []

    def add(self, stars: StarShapes | None) -> None:
        """Add one HDU's stars (None or too few stars: the HDU does not count)."""
        value = None if stars is None else _significance(stars, self.params)
        if value is not None:
            self.values.append(value)

    def significance(self) -> float:
        """The field's ``R``: the mean over its HDUs with enough stars, 0 when none has."""
        return float(np.mean(self.values)) if self.values else 0.0
