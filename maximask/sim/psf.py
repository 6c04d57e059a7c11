"""Source profiles rendered on small stamps: Moffat stars and PSF-softened Sersic galaxies."""

from __future__ import annotations

import numpy as np

#: Largest number of stamp pixels evaluated at once (bounds memory for crowded fields).
_CHUNK_PIXELS = 1_500_000


def moffat_alpha(fwhm, beta):
    """Moffat core width alpha (px) for a FWHM (px) and index beta."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_peak_per_flux(fwhm, beta, q=1.0):
    """Central surface brightness (per px) of a unit-flux elliptical Moffat profile."""
    a = moffat_alpha(fwhm, beta)
    return (beta - 1.0) / (np.pi * a * a * q)


def moffat_radius(flux, fwhm, beta, level):
    """Radius (px) where a Moffat profile of total ``flux`` falls to ``level`` per px."""
    a = moffat_alpha(fwhm, beta)
    peak = flux * (beta - 1.0) / (np.pi * a * a)
    ratio = np.maximum(peak / np.maximum(level, 1e-12), 1.0)
    return a * np.sqrt(np.maximum(ratio ** (1.0 / beta) - 1.0, 0.0))


def _grid(radius, oversample):
    g = np.arange(-radius, radius + 1, dtype=np.float32)
    if oversample > 1:
        sub = (np.arange(oversample, dtype=np.float32) + 0.5) / oversample - 0.5
        g = (g[:, None] + sub[None, :]).ravel()
    return g


def render_moffat(canvas, x, y, flux, fwhm, beta, q, theta, radius, oversample=1):
    """Add elliptical Moffat stars to ``canvas``, all on stamps of the same radius.

    Parameters
    ----------
    canvas : maximask.sim._util.Canvas
    x, y : array of float, shape (N,)
        Centres (px; pixel i covers [i-0.5, i+0.5]).
    flux : array of float, shape (N,)
        Total flux (e-).
    fwhm, beta, q, theta : array of float, shape (N,)
        FWHM along the major axis (px), Moffat index, axis ratio (minor/major), position angle (rad).
    radius : int
        Stamp half-size (px); the profile beyond it is dropped.
    oversample : int
        Sub-pixel sampling factor per axis (pixel integration for undersampled PSFs).
    """
    x, y, flux, fwhm, beta, q, theta = (np.atleast_1d(np.asarray(a, dtype=np.float32)) for a in (x, y, flux, fwhm, beta, q, theta))
    n = x.size
    if n == 0:
        return
    size = 2 * radius + 1
    per = (size * oversample) ** 2
    chunk = max(1, _CHUNK_PIXELS // per)
    g = _grid(radius, oversample)
    off = np.arange(-radius, radius + 1)
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        ix = np.rint(x[sl]).astype(np.int64)
        iy = np.rint(y[sl]).astype(np.int64)
        fx = (x[sl] - ix)[:, None, None]
        fy = (y[sl] - iy)[:, None, None]
        dx = g[None, None, :] - fx
        dy = g[None, :, None] - fy
        c = np.cos(theta[sl])[:, None, None]
        sn = np.sin(theta[sl])[:, None, None]
        u = dx * c + dy * sn
        v = (-dx * sn + dy * c) / q[sl][:, None, None]
        b = beta[sl][:, None, None]
        a = moffat_alpha(fwhm[sl], beta[sl])[:, None, None]
        prof = (1.0 + (u * u + v * v) / (a * a)) ** (-b) * ((b - 1.0) / (np.pi * a * a * q[sl][:, None, None]))
        if oversample > 1:
            m = prof.shape[0]
            prof = prof.reshape(m, size, oversample, size, oversample).mean(axis=(2, 4))
        prof *= flux[sl][:, None, None]
        canvas.add(iy[:, None, None] + off[None, :, None], ix[:, None, None] + off[None, None, :], prof)


def sersic_bn(n):
    """Sersic b_n (Ciotti & Bertin 1999 expansion)."""
    n = np.asarray(n, dtype=np.float64)
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def render_sersic(canvas, x, y, flux, r_eff, n, q, theta, soften, radius):
    """Add Sersic galaxies to ``canvas`` on stamps of one radius, normalised to ``flux`` on the stamp.

    The PSF is approximated by softening the radius, r -> sqrt(r**2 + soften**2), which removes the
    cusp the way a convolution would at a tiny fraction of its cost.

    Parameters
    ----------
    x, y, flux, r_eff, n, q, theta : array of float, shape (N,)
        Centre (px), total flux (e-), effective radius (px), Sersic index, axis ratio, angle (rad).
    soften : float or array
        Softening length (px), about half the PSF FWHM.
    radius : int
        Stamp half-size (px).
    """
    x, y, flux, r_eff, n, q, theta = (np.atleast_1d(np.asarray(a, dtype=np.float32)) for a in (x, y, flux, r_eff, n, q, theta))
    soften = np.broadcast_to(np.asarray(soften, dtype=np.float32), x.shape)
    if x.size == 0:
        return
    size = 2 * radius + 1
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    g = np.arange(-radius, radius + 1, dtype=np.float32)
    for s in range(0, x.size, chunk):
        sl = slice(s, s + chunk)
        ix = np.rint(x[sl]).astype(np.int64)
        iy = np.rint(y[sl]).astype(np.int64)
        dx = g[None, None, :] - (x[sl] - ix)[:, None, None]
        dy = g[None, :, None] - (y[sl] - iy)[:, None, None]
        c = np.cos(theta[sl])[:, None, None]
        sn = np.sin(theta[sl])[:, None, None]
        u = dx * c + dy * sn
        v = (-dx * sn + dy * c) / q[sl][:, None, None]
        r = np.sqrt(u * u + v * v + soften[sl][:, None, None] ** 2)
        nn = n[sl][:, None, None]
        prof = np.exp(-sersic_bn(nn).astype(np.float32) * ((r / r_eff[sl][:, None, None]) ** (1.0 / nn) - 1.0))
        prof *= (flux[sl] / np.maximum(prof.sum(axis=(1, 2)), 1e-30))[:, None, None]
        off = np.arange(-radius, radius + 1)
        canvas.add(iy[:, None, None] + off[None, :, None], ix[:, None, None] + off[None, None, :], prof)
