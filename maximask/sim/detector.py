"""Detector physics: blooming along columns, noise, gain, flat-field residuals, saturation, raw frames."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ._util import lowres_field


def bleed_columns(charge, full_well):
    """Spread the charge above full well along columns (axis 0), conserving it.

    Each pixel keeps at most ``full_well``; its excess flows half up and half down its column,
    filling the next unsaturated pixels, as blooming does in a CCD. Charge pushed past the top or
    bottom edge is lost (it would leave the array in the readout register).

    Parameters
    ----------
    charge : numpy.ndarray
        float (H, W), noise-free charge in e-.
    full_well : float
        Pixel capacity (e-).

    Returns
    -------
    numpy.ndarray
        float64 (H, W), the bled charge; ``(charge.sum() - result.sum())`` equals the charge lost at
        the edges.
    """
    out = np.array(charge, dtype=np.float64, copy=True)
    cols = np.nonzero((out > full_well).any(axis=0))[0]
    h = out.shape[0]
    for j in cols:
        col = out[:, j]
        excess = np.maximum(col - full_well, 0.0)
        np.minimum(col, full_well, out=col)
        half = excess / 2.0
        rows = np.nonzero(excess)[0]
        # upward pass (increasing row index), then downward
        for order, start in ((1, rows[0]), (-1, rows[-1])):
            carry = 0.0
            i = start
            while 0 <= i < h:
                carry += half[i]
                room = full_well - col[i]
                if room > 0.0 and carry > 0.0:
                    take = room if room < carry else carry
                    col[i] += take
                    carry -= take
                if carry <= 0.0 and (order == 1 and i >= rows[-1] or order == -1 and i <= rows[0]):
                    break
                i += order
    return out


def resample_shift(image, fy, fx, square=False):
    """Shift an image by a sub-pixel (fy, fx) with bilinear interpolation (edges replicated).

    This is what registration, mosaicking or rectification does to a processed frame: it smooths
    point-like features and correlates the noise of neighbouring pixels. With ``square=True`` the
    squared weights are used, which propagates a variance map.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W).
    fy, fx : float
        Fractional shifts in [0, 1).
    square : bool

    Returns
    -------
    numpy.ndarray
        float32 (H, W).
    """
    a = np.asarray(image, dtype=np.float32)
    wy = np.float32([(1 - fy), fy])
    wx = np.float32([(1 - fx), fx])
    if square:
        wy, wx = wy * wy, wx * wx
    nxt = np.concatenate([a[1:], a[-1:]], axis=0)
    b = wy[0] * a + wy[1] * nxt
    nxt = np.concatenate([b[:, 1:], b[:, -1:]], axis=1)
    return (wx[0] * b + wx[1] * nxt).astype(np.float32)


def flat_residual(shape, rng, amplitude):
    """Multiplicative flat-field residual: large-scale plus pixel-to-pixel, float32 (H, W) around 1."""
    large = lowres_field(shape, rng, lambda ky, kx: (ky * ky + kx * kx + 1e-6) ** -1.5, 8)
    return (1.0 + amplitude * (0.7 * large + 0.3 * rng.standard_normal(shape).astype(np.float32))).astype(np.float32)


def add_noise(charge, rng, read_noise):
    """Poisson photon noise plus Gaussian read noise on a noise-free charge image (e-), float32."""
    c = np.maximum(charge, 0.0).astype(np.float32)
    # above ~50 e- the Poisson law is Gaussian to well below the read noise and much cheaper to draw
    noisy = c + np.sqrt(c) * rng.standard_normal(c.shape, dtype=np.float32)
    low = c < 50.0
    if low.any():
        noisy[low] = rng.poisson(c[low]).astype(np.float32)
    noisy += rng.normal(0.0, read_noise, charge.shape).astype(np.float32)
    return noisy


def to_raw(image, metadata, dtype="uint16"):
    """Turn a processed frame (bias subtracted, ADU) into a raw-like integer frame.

    The bias level is added back, values are rounded, and clipped at the ADC range: 0..adc_max for
    ``uint16``; for ``int16`` cameras (15-bit ADCs) 0..32767, stored signed.

    Parameters
    ----------
    image : numpy.ndarray
        float32 (H, W), as returned by :func:`maximask.sim.simulate_frame`.
    metadata : dict
        Its metadata (uses ``bias_adu`` and ``adc_max``).
    dtype : {'uint16', 'int16'}

    Returns
    -------
    numpy.ndarray
        (H, W) of the requested dtype.
    """
    if dtype not in ("uint16", "int16"):
        raise UsageError("dtype", f"raw dtype must be uint16 or int16, not {dtype!r}")
    top = int(metadata["adc_max"]) if dtype == "uint16" else min(int(metadata["adc_max"]), 32767)
    raw = np.rint(np.asarray(image, dtype=np.float64) + metadata["bias_adu"])
    return np.clip(raw, 0, top).astype(dtype)
