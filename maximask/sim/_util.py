"""Small numerical helpers shared by the simulator modules (random draws, sparse rendering, random fields)."""

from __future__ import annotations

import numpy as np


def log_uniform(rng, lo, hi, size=None):
    """Draw from a log-uniform distribution on [lo, hi]."""
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def moyal(rng, size=None):
    """Draw from the Moyal distribution, the usual closed-form approximation of Landau energy loss.

    If Z is standard normal, -log(Z**2) is Moyal distributed (mode 0, long tail to high energies).
    """
    z = rng.standard_normal(size)
    return -np.log(np.maximum(z * z, 1e-12))


class Canvas:
    """Collects sparse pixel additions and renders them with one ``np.bincount``.

    Rendering thousands of small source stamps into a frame one by one costs a Python call per
    source; collecting (flat index, value) pairs and summing them once is much faster.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (H, W).
    """

    def __init__(self, shape):
        self.shape = (int(shape[0]), int(shape[1]))
        self._idx: list[np.ndarray] = []
        self._val: list[np.ndarray] = []

    def add(self, iy, ix, values):
        """Add ``values`` at integer pixel coordinates (broadcast together); off-frame pixels are dropped."""
        iy, ix, values = np.broadcast_arrays(iy, ix, values)
        iy = iy.ravel()
        ix = ix.ravel()
        values = values.ravel()
        h, w = self.shape
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        if ok.any():
            self._idx.append((iy[ok] * w + ix[ok]).astype(np.int64))
            self._val.append(values[ok].astype(np.float64))

    def add_bilinear(self, y, x, values):
        """Add point charges at fractional positions, shared bilinearly between the four nearest pixels."""
        y, x, values = np.broadcast_arrays(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64), np.asarray(values, dtype=np.float64))
        y, x, values = y.ravel(), x.ravel(), values.ravel()
        y0 = np.floor(y)
        x0 = np.floor(x)
        fy = y - y0
        fx = x - x0
        y0 = y0.astype(np.int64)
        x0 = x0.astype(np.int64)
        self.add(y0, x0, values * (1 - fy) * (1 - fx))
        self.add(y0, x0 + 1, values * (1 - fy) * fx)
        self.add(y0 + 1, x0, values * fy * (1 - fx))
        self.add(y0 + 1, x0 + 1, values * fy * fx)

    def render(self):
        """Return the summed frame, float32 (H, W)."""
        h, w = self.shape
        if not self._idx:
            return np.zeros(self.shape, dtype=np.float32)
        idx = np.concatenate(self._idx)
        val = np.concatenate(self._val)
        return np.bincount(idx, weights=val, minlength=h * w).reshape(self.shape).astype(np.float32)


def gaussian_field(shape, rng, power):
    """A zero-mean, unit-variance Gaussian random field with a given power spectrum.

    Parameters
    ----------
    shape : tuple of int
        (H, W).
    rng : numpy.random.Generator
    power : callable
        ``power(ky, kx)`` -> spectral power at spatial frequencies (cycles per pixel), arrays
        broadcast to (H, W//2+1). The zero frequency is removed.

    Returns
    -------
    numpy.ndarray
        float32 (H, W).
    """
    h, w = shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = np.sqrt(np.nan_to_num(power(ky, kx), nan=0.0, posinf=0.0))
    amp = np.broadcast_to(amp, (h, w // 2 + 1)).copy()
    amp[0, 0] = 0.0
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    field = np.fft.irfft2(spec, s=(h, w))
    sd = field.std()
    if sd > 0:
        field /= sd
    return field.astype(np.float32)


def _interp_index(n_out, n_in):
    """Left neighbour index and weight of the right one, mapping a coarse axis onto a fine one."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.minimum(np.floor(pos).astype(np.intp), max(n_in - 2, 0))
    f = (pos - i0).astype(np.float32)
    return i0, np.minimum(i0 + 1, n_in - 1), f


def upsample(small, shape):
    """Bilinear upsampling of a coarse grid to ``shape`` (separable gathers; no BLAS call, which
    oversubscribes a busy machine for matrices this small)."""
    small = np.asarray(small, dtype=np.float32)
    i0, i1, fy = _interp_index(shape[0], small.shape[0])
    rows = small[i0] * (1 - fy)[:, None] + small[i1] * fy[:, None]
    j0, j1, fx = _interp_index(shape[1], small.shape[1])
    return (rows[:, j0] * (1 - fx)[None, :] + rows[:, j1] * fx[None, :]).astype(np.float32)


def lowres_field(shape, rng, power, factor):
    """Like :func:`gaussian_field` but generated ``factor`` times coarser and upsampled bilinearly.

    Smooth fields (steep spectra) lose nothing visible and cost ``factor**2`` less.
    """
    h, w = shape
    sh = (max(8, -(-h // factor)), max(8, -(-w // factor)))
    fy, fx = sh[0] / h, sh[1] / w

    def p(ky, kx):
        return power(ky * fy, kx * fx)

    return upsample(gaussian_field(sh, rng, p), shape)
