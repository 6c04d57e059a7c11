"""Double images: the signature of a tracking jump in a field's compact peaks.

A jump (the telescope moved during the exposure and stayed) records every star twice, the same
vector apart. Among the field's *compact peaks* (:func:`maxitrack.tiles.compact_peaks`: stars and
streaks, on the 2x2-binned grid; galaxies' smooth light, fringes, nebulae and halos make none),
each star bright enough to stand out in both images gives a pair of peaks at that vector. The
pairs of unrelated peaks scatter over the lags, so the jump's pairs pile up in one lag and stand
out above them. The network sees the same thing in
each tile's pixel autocorrelation, where galaxies, fringes and trails often drown it.

Statistic (:func:`double_image_significance`, parameters in :data:`DEFAULT_DOUBLE_IMAGES`, stored
in the network metadata as ``double_images``):

1. **Lines out** (:func:`drop_line_peaks`). Peaks on a straight line (a satellite trail, a hot or
   bleed column, a row) would pair along it at every lag. A Hough accumulator of the peaks
   (``hough_angles`` directions, bands ``hough_band`` binned px wide) finds bands that hold more
   than ``max(line_min_peaks, mu + line_nsig * sqrt(mu))`` peaks (``mu``: the band's expectation
   for peaks scattered uniformly); every peak within ``line_halfwidth`` of such a band goes. The
   strongest band goes first, and its peaks leave the accumulator before the next is looked for
   (at most ``max_lines``): the bands that cross a strong line at neighbouring angles would
   otherwise count as lines too and take a fan of the field's peaks with them. With
   ``wide_lines`` (optional), the same search runs again with coarse bands (its keys override
   these) for what narrow bands miss: a wide, glinting satellite trail or an aircraft's lights
   leave two or three peaks across each blob, too scattered for any narrow band to hold enough of
   them, yet the blobs repeat at the glint period and would pile up pairs at that lag. Then **one peak
   per object** (:func:`merge_close_peaks`): of peaks within ``merge_radius`` of each other, the
   first in raster order is kept (after the lines, whose peaks it would thin below the limit).
2. **Pair counts** (:func:`pair_counts`): the ordered pairs of peaks at each lag ``(dy, dx)``,
   ``|dy|, |dx| <= reach`` binned px, and what uniformly scattered peaks would give. A field's
   HDUs add their counts (a mosaic's CCDs moved together).
3. **Significance** of each lag at least ``min_lag`` from the zero lag, on the counts summed over
   3x3 lags (a peak's position is known to a binned pixel): ``(S - B) / sqrt(B + 1)``, ``B`` the
   larger of the uniform expectation and of two ray samples: the largest count ``ray_steps``
   nearer to the zero lag along the lag's ray, within ``ray_across`` across it, and the same
   farther out. By default (``ray_baseline`` absent or ``"nearer"``) the baseline takes the
   *smaller* of the two: a line of peaks through the zero lag that is as high on both sides (the
   peaks of a diffraction spike seen from its star, what is left of a trail) cancels, a jump's pair
   is an isolated peak, and a double jump's outer pair, at twice the vector, raises only the outer
   sample of the inner one. A ridge that falls off with distance stands out against its farther
   sample: the stars' peaks along a drift's or a wind shake's smear, which all point the same way,
   but also the peaks along the diffraction spikes of a crowded CCD's bright stars.
   ``ray_baseline = "both"`` takes the larger of the two samples, so that such ridges do not
   stand out. With ``ring_baseline``, ``B`` is also at least the median of the lag's
   ring (pairs that depend on distance alone: crowding, clustering); with ``studentize``, the
   significances are divided by their spread over the lags (1.4826 MAD, at least 1), which exceeds
   Poisson's where the field's peaks have structure of their own (a crowded 2048x4096 CCD). The
   statistic ``D`` is the largest significance; with ``min_fraction``, the largest among the lags
   whose excess of pairs ``S - B`` is at least that share of the field's counted peaks (a
   significance grows with the number of peaks, a share does not).

The field's score adds ``weight * log(1 + max(D - offset, 0))`` to the calibrated mean tile logit
(:func:`maxitrack.scoring.field_logit`); the weight is fitted with the calibration.
"""

from __future__ import annotations

import math

import numpy as np

#: Parameters of the statistic (binned pixels), stored in the network metadata (``double_images``).
DEFAULT_DOUBLE_IMAGES = {
    "reach": 40,  # largest lag (80 px unbinned): a jump's separation is up to 40 px, 80 for a double jump
    "merge_radius": 2,  # peaks this close (each axis) are one object's
    "min_lag": 6.0,  # within: a star's own peaks, crowding, and short jumps (which the network finds)
    "hough_angles": 180,
    "hough_band": 2.0,
    "line_min_peaks": 8,
    "line_nsig": 6.0,
    "line_halfwidth": 3.0,
    "max_lines": 50,
    "ray_steps": [3.0, 4.0],
    "ray_across": [-2.0, -1.0, 0.0, 1.0, 2.0],
    "ring_baseline": True,
    "studentize": True,
}
# Three more keys are optional, absent from the shipped network's parameters and from these
# defaults (docs/MAXITRACK.md, "Survey-size CCDs"): "ray_baseline": "nearer" (what its absence
# means) or "both"; "wide_lines": a dict of line-search keys for a second, coarse search, e.g.
# {"hough_band": 8.0, "line_halfwidth": 8.0, "hough_angles": 90}; "min_fraction": only the lags
# whose excess of pairs is at least this share of the field's counted peaks compete for D (0 or
# absent: every lag).


def merge_close_peaks(peak_map: np.ndarray, radius: int) -> np.ndarray:
    """One peak per cluster: a peak is kept unless another lies within ``radius`` (on each axis)
    before it in raster order.

    A bright star's core, a galaxy's knots or a cosmic ray can leave two or three peaks a pixel or
    two apart; two such objects would give several pairs at one lag, a pile-up that is not a
    jump's. A jump's two images lie at least ``min_lag`` apart, far beyond ``radius``.

    Parameters
    ----------
    peak_map : ndarray, bool, shape (h, w)
    radius : int

    Returns
    -------
    ndarray, bool, shape (h, w)
    """
    m = np.asarray(peak_map, bool)
    keep = m.copy()
    h, w = m.shape
    r = int(radius)
    for dy in range(-r, 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx >= 0:
                continue
            # keep[y, x] &= not m[y + dy, x + dx]
            ys, yd = slice(max(0, -dy), h), slice(max(0, -dy) + dy, h + dy)
            xs = slice(max(0, -dx), min(w, w - dx))
            xd = slice(max(0, -dx) + dx, min(w, w - dx) + dx)
            keep[ys, xs] &= ~m[yd, xd]
    return keep


def drop_line_peaks(peaks: np.ndarray, shape, params: dict | None = None) -> np.ndarray:
    """The peaks that do not lie on a straight line of peaks.

    Parameters
    ----------
    peaks : ndarray, int, shape (N, 2)
        ``(y, x)`` of the peaks on a grid of ``shape``.
    shape : (int, int)
        The grid's ``(h, w)``.
    params : dict, optional
        :data:`DEFAULT_DOUBLE_IMAGES` keys.

    Returns
    -------
    ndarray, shape (M, 2), M <= N
    """
    p = dict(DEFAULT_DOUBLE_IMAGES, **(params or {}))
    peaks = np.asarray(peaks).reshape(-1, 2)
    if len(peaks) < int(p["line_min_peaks"]):
        return peaks
    h, w = shape
    width = float(p["hough_band"])
    theta = np.arange(int(p["hough_angles"])) * np.pi / int(p["hough_angles"])
    y, x = peaks[:, 0].astype(np.float64), peaks[:, 1].astype(np.float64)
    rmax = math.hypot(h, w)
    n_bands = int(2 * rmax / width) + 1

    cos, sin = np.cos(theta), np.sin(theta)

    def rho(t):
        # the same products as the subtraction below: a peak's band never differs between them
        return x * cos[t] + y * sin[t]

    # a band's length within the frame (its longest chord) times its width, times the peak density
    length = np.minimum(h / np.maximum(np.abs(np.cos(theta)), 1e-9), w / np.maximum(np.abs(np.sin(theta)), 1e-9))
    mu = len(peaks) * width * length / (h * w)
    limit = np.maximum(float(p["line_min_peaks"]), mu + float(p["line_nsig"]) * np.sqrt(mu))
    halfwidth = float(p["line_halfwidth"])
    acc = np.stack([np.bincount(np.floor((rho(t) + rmax) / width).astype(np.int64), minlength=n_bands)
                    for t in range(theta.size)])
    alive = np.ones(len(peaks), bool)
    for _ in range(int(p["max_lines"])):
        # the strongest line first; its peaks out of the accumulator before the next is looked
        # for, so that the bands crossing it at neighbouring angles do not count as lines too
        excess = acc - limit[:, None]
        t, b = np.unravel_index(int(np.argmax(excess)), excess.shape)
        if excess[t, b] <= 0:
            break
        hit = np.flatnonzero(alive & (np.abs(rho(t) - (b * width - rmax + width / 2)) <= halfwidth))
        alive[hit] = False
        bands = np.floor((x[hit, None] * cos[None] + y[hit, None] * sin[None] + rmax) / width).astype(np.int64)
        acc -= np.bincount((np.arange(theta.size)[None] * n_bands + bands).ravel(),
                           minlength=theta.size * n_bands).reshape(acc.shape)
    return peaks[alive]


def pair_counts(peaks: np.ndarray, shape, reach: int) -> tuple:
    """Ordered pairs of peaks at each lag, and their expectation for uniformly scattered peaks.

    Parameters
    ----------
    peaks : ndarray, int, shape (N, 2)
        ``(y, x)`` on a grid of ``shape``.
    shape : (int, int)
    reach : int
        Largest lag on each axis.

    Returns
    -------
    counts, expected : ndarray, float64, shape (2 reach + 1, 2 reach + 1)
        Lag ``(dy, dx)`` at ``[reach + dy, reach + dx]``; the zero lag counts each peak once
        (the autocorrelation of the peak map).
    """
    r = int(reach)
    side = 2 * r + 1
    peaks = np.asarray(peaks).reshape(-1, 2).astype(np.int64)
    n = len(peaks)
    h, w = shape
    # unordered pairs within reach rows of each other, which a sweep along y enumerates
    if n and float(n) * n * (r + 1) / h > SWEEP_PAIRS * h * w:
        return _pair_counts_fft(peaks, shape, r), _expected_pairs(n, shape, r)
    counts = np.zeros(side * side, np.float64)
    if n:
        peaks = peaks[np.lexsort((peaks[:, 1], peaks[:, 0]))]
        ys = peaks[:, 0]
        first = np.arange(1, n + 1)
        last = np.searchsorted(ys, ys + r, side="right")
        m = last - first
        i = np.repeat(np.arange(n), m)
        j = i + 1 + (np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m))
        d = peaks[j] - peaks[i]
        d = d[np.abs(d[:, 1]) <= r]
        counts += np.bincount((d[:, 0] + r) * side + (d[:, 1] + r), minlength=side * side)
        counts += np.bincount((r - d[:, 0]) * side + (r - d[:, 1]), minlength=side * side)
        counts[r * side + r] += n
    return counts.reshape(side, side), _expected_pairs(n, shape, r)


#: Above this many candidate pairs (peaks within ``reach`` rows of each other) per pixel of the
#: grid, :func:`pair_counts` uses the FFT of the peak map (a cost per pixel, ~0.1-0.2 s for a
#: 2048x4096 CCD) rather than a sweep along y (a cost per pair, about twice a pixel's); both give
#: the same counts.
SWEEP_PAIRS = 0.5


def _expected_pairs(n: int, shape, r: int) -> np.ndarray:
    h, w = shape
    lag = np.arange(-r, r + 1)
    overlap = np.clip(h - np.abs(lag), 0, None)[:, None] * np.clip(w - np.abs(lag), 0, None)[None, :]
    return float(n) * n / float(h * w) * overlap / float(h * w)


def _smooth_size(n: int) -> int:
    """The smallest 5-smooth integer >= n (a fast FFT length)."""
    best = 2 * n
    p5 = 1
    while p5 < best:
        p3 = p5
        while p3 < best:
            p2 = p3
            while p2 < n:
                p2 *= 2
            best = min(best, p2)
            p3 *= 3
        p5 *= 5
    return best


def _pair_counts_fft(peaks: np.ndarray, shape, r: int) -> np.ndarray:
    """:func:`pair_counts`' counts as the autocorrelation of the peak map (zero-padded: no wrap)."""
    h, w = shape
    m = np.zeros((h, w), np.float64)
    m[peaks[:, 0], peaks[:, 1]] = 1.0
    size = (_smooth_size(h + r + 1), _smooth_size(w + r + 1))
    f = np.fft.rfft2(m, s=size)
    a = np.fft.irfft2(f.real**2 + f.imag**2, s=size)
    a = np.roll(a, (r, r), axis=(0, 1))[: 2 * r + 1, : 2 * r + 1]
    return np.rint(a)


def _sum3x3(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1)
    out = np.zeros_like(a)
    for i in range(3):
        for j in range(3):
            out += p[i : i + a.shape[0], j : j + a.shape[1]]
    return out


def double_image_significance(counts: np.ndarray, expected: np.ndarray, params: dict | None = None) -> float:
    """The largest significance of a pile-up of peak pairs at one lag (see the module docstring).

    Parameters
    ----------
    counts, expected : ndarray, shape (2 R + 1, 2 R + 1)
        :func:`pair_counts` of a field (summed over its HDUs).
    params : dict, optional
        :data:`DEFAULT_DOUBLE_IMAGES` keys.

    Returns
    -------
    float
        In units of a Poisson sigma: a few for a normal field, tens or more for double images
        (0 when no lag qualifies).
    """
    p = dict(DEFAULT_DOUBLE_IMAGES, **(params or {}))
    r = (counts.shape[0] - 1) // 2
    s = _sum3x3(np.asarray(counts, np.float64))
    m = _sum3x3(np.asarray(expected, np.float64))
    lag = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(lag, lag, indexing="ij")
    dist = np.maximum(np.hypot(dy, dx), 1e-9)
    uy, ux = dy / dist, dx / dist

    def ray_sample(steps):
        best = np.zeros_like(s)
        for step in steps:
            for across in p["ray_across"]:
                yy = np.rint(uy * (dist + step) - ux * across).astype(int)
                xx = np.rint(ux * (dist + step) + uy * across).astype(int)
                inside = (np.abs(yy) <= r) & (np.abs(xx) <= r)
                best = np.maximum(best, np.where(inside, s[np.clip(yy + r, 0, 2 * r), np.clip(xx + r, 0, 2 * r)], 0.0))
        return best

    steps = [float(v) for v in p["ray_steps"]]
    inner, outer = ray_sample([-v for v in steps]), ray_sample(steps)
    near = dist - max(steps) < 1.0  # too near the zero lag for an inner sample: the outer one alone
    rule = p.get("ray_baseline", "nearer")
    if rule == "both":
        ray = np.where(near, outer, np.maximum(inner, outer))
    elif rule == "nearer":
        ray = np.minimum(np.where(near, np.inf, inner), outer)
    else:
        raise ValueError(f"ray_baseline must be 'both' or 'nearer', not {rule!r}")
    base = np.maximum(m, ray)
    ok = (dist >= float(p["min_lag"])) & (dist <= r - 1)
    if not ok.any():
        return 0.0
    if p.get("ring_baseline"):
        # the median of each ring of lags: the pairs' smooth dependence on distance (clustering,
        # crowding) that uniformly scattered peaks would not have
        ring = np.rint(dist).astype(int)
        med = np.zeros(r + 2)
        for k in range(int(ring[ok].min()), int(ring[ok].max()) + 1):
            sel = ring == k
            med[k] = np.median(s[sel])
        base = np.maximum(base, med[np.minimum(ring, r + 1)])
    z = (s - base) / np.sqrt(base + 1.0)
    if p.get("studentize"):
        # the spread of the significances over the lags (1 for Poisson counts; more where the
        # field's peaks have structure of their own)
        v = z[ok]
        spread = 1.4826 * np.median(np.abs(v - np.median(v)))
        z = z / max(1.0, spread)
    if p.get("min_fraction"):
        # the excess pairs per counted peak: a jump doubles, and a smear splits, a sizeable share
        # of the field's objects, while the peaks along a few bright stars' diffraction spikes are
        # a small share, whose significance grows with the CCD's area all the same
        ok = ok & ((s - base) >= float(p["min_fraction"]) * max(float(counts[r, r]), 1.0))
        if not ok.any():
            return 0.0
    return float(z[ok].max())


def counted_peaks(peak_map: np.ndarray, params: dict | None = None) -> np.ndarray:
    """The peaks whose pairs are counted: those of ``peak_map`` (bool, h x w) off straight lines
    (:func:`drop_line_peaks`), one per object (:func:`merge_close_peaks`); int (N, 2) ``(y, x)``."""
    p = dict(DEFAULT_DOUBLE_IMAGES, **(params or {}))
    peaks = drop_line_peaks(np.argwhere(peak_map), peak_map.shape, p)
    if p.get("wide_lines"):
        # what the narrow bands missed: a wide trail's or an aircraft's lights leave two or three
        # peaks across each blob, scattered over more than one narrow band
        peaks = drop_line_peaks(peaks, peak_map.shape, dict(p, **p["wide_lines"]))
    if int(p.get("merge_radius", 0)) > 0:
        kept = np.zeros(peak_map.shape, bool)
        kept[peaks[:, 0], peaks[:, 1]] = True
        peaks = np.argwhere(merge_close_peaks(kept, int(p["merge_radius"])))
    return peaks


class FieldPairs:
    """Pair counts of a field, accumulated over its HDUs (or one plane of a cube)."""

    def __init__(self, params: dict | None = None):
        self.params = dict(DEFAULT_DOUBLE_IMAGES, **(params or {}))
        side = 2 * int(self.params["reach"]) + 1
        self.counts = np.zeros((side, side))
        self.expected = np.zeros((side, side))

    def add(self, peak_map: np.ndarray) -> None:
        """Add one HDU's peaks (the boolean map of :func:`maxitrack.tiles.compact_peaks`)."""
        peaks = counted_peaks(peak_map, self.params)
        c, e = pair_counts(peaks, peak_map.shape, int(self.params["reach"]))
        self.counts += c
        self.expected += e

    def significance(self) -> float:
        """:func:`double_image_significance` of the counts so far."""
        return double_image_significance(self.counts, self.expected, self.params)
