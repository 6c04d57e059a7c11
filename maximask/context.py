"""The context pass: the network run a second time on the frame binned b x b, for the large classes.

Nebulosities, fringes, bright background and overscan strips extend over hundreds to thousands of
pixels, more than the network's receptive field (247 px). Binned b x b, a frame shows the network b
times more of the sky in the same window, and b times less noise per pixel (a mean of b**2 pixels),
so faint, extended light stands out of the noise. The binned frame is normalised and tiled like any
frame; its logits, interpolated back to full resolution, replace (``"coarse"``) or are averaged with
(``"mean"``) the full-resolution logits of the classes the network's metadata names
(``context = {"factor": b, "classes": {"NEB": "mean", ...}}``); every other class is untouched.
docs/MODEL.md ("Context pass") gives the measurements behind the factor and the modes.

Everything here is a pure function of arrays; :func:`maximask.engine.infer` calls them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: How a class's full-resolution logit and its context logit are combined.
MODES = ("mean", "coarse")
#: The binned frame must be at least this many pixels on each side for the context pass to run;
#: smaller frames fit (nearly) whole in the network's field of view, and their binned version is too
#: small for the background meshes.
MIN_BINNED_SIDE = 64
# Block rows binned at once: bounds the temporaries to a few MB whatever the frame size.
_BAND_BLOCKS = 64


@dataclasses.dataclass(frozen=True)
class ContextPass:
    """The context pass of a network, from its metadata.

    Attributes
    ----------
    factor : int
        Binning factor b (pixels per side of a block).
    channels : tuple of int
        Output channels the pass changes.
    modes : tuple of str
        For each channel, ``"mean"`` (average of the full-resolution and context logits) or
        ``"coarse"`` (the context logit alone).
    """

    factor: int
    channels: tuple
    modes: tuple

    @classmethod
    def from_metadata(cls, context: dict | None, classes) -> "ContextPass | None":
        """The pass that ``context`` (metadata entry) describes; None when it is absent or empty.

        Raises
        ------
        ValueError
            Unknown class or mode, or a factor below 2.
        """
        if not context or not context.get("classes"):
            return None
        factor = int(context["factor"])
        if factor < 2:
            raise ValueError(f"context factor must be at least 2, not {factor}")
        channels, modes = [], []
        for name, mode in context["classes"].items():
            if name not in classes:
                raise ValueError(f"context class {name!r} is not an output of the network")
            if mode not in MODES:
                raise ValueError(f"context mode {mode!r} of {name} is not one of {MODES}")
            channels.append(list(classes).index(name))
            modes.append(mode)
        return cls(factor, tuple(channels), tuple(modes))

    def applies_to(self, shape) -> bool:
        """Whether a frame of this shape gets the pass (its binned frame is large enough)."""
        return min(-(-int(s) // self.factor) for s in shape) >= MIN_BINNED_SIDE


def bin_frame(image, factor: int) -> np.ndarray:
    """Mean of each ``factor x factor`` block of pixels, NaN and inf ignored.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Raw pixel values, any numeric dtype or byte order.
    factor : int
        Block side b.

    Returns
    -------
    ndarray, float32, shape (ceil(H / b), ceil(W / b))
        Block means; the last row and column of blocks average the pixels they hold. NaN where a
        block holds no finite pixel.
    """
    image = np.asarray(image)
    h, w = image.shape
    b = int(factor)
    hb, wb = -(-h // b), -(-w // b)
    out = np.empty((hb, wb), np.float32)
    band = np.full((_BAND_BLOCKS * b, wb * b), np.nan, np.float64)
    for r0 in range(0, hb, _BAND_BLOCKS):
        rows = min(_BAND_BLOCKS, hb - r0) * b
        src = image[r0 * b : r0 * b + rows].astype(np.float64)
        band[: src.shape[0], :w] = src
        band[:rows, w:] = np.nan
        band[src.shape[0] : rows] = np.nan  # the frame's last, partial block row
        blocks = band[:rows].reshape(rows // b, b, wb, b)
        finite = np.isfinite(blocks)
        n = finite.sum(axis=(1, 3))
        total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[r0 : r0 + rows // b] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return out


def _linear_weights(start: int, stop: int, factor: int, n_coarse: int):
    """Indices and weights interpolating coarse samples at full-resolution positions start..stop-1.

    Full-resolution pixel ``i`` lies at coarse position ``(i + 0.5) / b - 0.5`` (pixel centres);
    positions beyond the first and last coarse centres take the end value.
    """
    u = (np.arange(start, stop, dtype=np.float64) + 0.5) / factor - 0.5
    u = np.clip(u, 0.0, n_coarse - 1)
    i0 = np.minimum(np.floor(u).astype(np.intp), n_coarse - 1)
    i1 = np.minimum(i0 + 1, n_coarse - 1)
    w1 = (u - i0).astype(np.float32)
    return i0, i1, w1


def upsample(coarse: np.ndarray, factor: int, rows: slice, cols: slice) -> np.ndarray:
    """Bilinear interpolation of a binned frame's maps at the full-resolution pixels of a window.

    Parameters
    ----------
    coarse : ndarray, float32, shape (K, h, w)
        Maps of the binned frame (one pixel per ``factor x factor`` block).
    factor : int
        Binning factor.
    rows, cols : slice
        The full-resolution window (start and stop set, step 1).

    Returns
    -------
    ndarray, float32, shape (K, rows.stop - rows.start, cols.stop - cols.start)
        The same at every pixel whichever window it is asked in: the interpolation depends only on
        the pixel's position, so tiles stitch seamlessly.
    """
    y0, y1, wy = _linear_weights(rows.start, rows.stop, factor, coarse.shape[1])
    x0, x1, wx = _linear_weights(cols.start, cols.stop, factor, coarse.shape[2])
    along_rows = coarse[:, y0] + (coarse[:, y1] - coarse[:, y0]) * wy[None, :, None]
    return along_rows[:, :, x0] + (along_rows[:, :, x1] - along_rows[:, :, x0]) * wx


def combine(logits: np.ndarray, context: np.ndarray, plan: ContextPass) -> np.ndarray:
    """Put the context logits into a tile's logits, in place.

    Parameters
    ----------
    logits : ndarray, float32, shape (h, w, C), writable
        Full-resolution logits of a tile core.
    context : ndarray, float32, shape (K, h, w)
        Context logits of the same pixels, one plane per channel of ``plan``.
    plan : ContextPass

    Returns
    -------
    ndarray
        ``logits``.
    """
    for k, (c, mode) in enumerate(zip(plan.channels, plan.modes)):
        if mode == "mean":
            logits[..., c] = 0.5 * (logits[..., c] + context[k])
        else:
            logits[..., c] = context[k]
    return logits
