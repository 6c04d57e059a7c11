"""The context pass: the network run a second time on the frame binned b x b, for the large classes.

Nebulosities, fringes, bright background and overscan strips extend over hundreds to thousands of
pixels, more than the network's receptive field (247 px). Binned b x b, a frame shows the network b
times more of the sky in the same window, and b times less noise per pixel (a mean of b**2 pixels),
so faint, extended light stands out of the noise. The binned frame is normalised and tiled like any
frame; its logits, interpolated back to full resolution, replace (``"coarse"``) or are averaged with
(``"mean"``) the full-resolution logits of the classes the network's metadata names
(``context = {"factor": b, "classes": {"NEB": "mean", ...}}``); every other class is untouched.
docs/MODEL.md ("Context pass") gives the measurements behind the factor and the modes.

A frame too small for the pass (binned, under :data:`MIN_BINNED_SIDE` a side) keeps its
full-resolution logits, which are calibrated differently from the combined ones that the thresholds
were chosen on. The metadata's ``"without_pass": {"NEB": d, ...}`` adds a logit offset to those
classes on such frames, so that the same thresholds give the same rule's masks there
(docs/MODEL.md, "Frames too small for the context pass").

**Block smoothing** (metadata ``smoothing = {"block": B, "classes": ["FR", ...]}``) goes further
for classes that are coherent over large areas: their logits (after the context pass) are replaced
by the bilinear interpolation of their means over B x B blocks of the whole frame. It needs every
tile's logits before any of those pixels is written, so the engine accumulates the block sums
during the tile pass and writes the smoothed classes after it.

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


def output_channel(classes, name: str, entry: str) -> int:
    """The output channel of class ``name`` among a network's ``classes``, for the metadata entry
    ``entry``; ValueError if the network has no such output."""
    if name not in classes:
        raise ValueError(f"{entry} class {name!r} is not an output of the network")
    return list(classes).index(name)


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
    network : str or None
        Subdirectory of the network directory holding the *context network*, the network run on
        the binned frame (trained on binned frames, ``maximask-train --bin``); None: the network
        itself.
    by_context_network : tuple of bool
        For each channel, whether the context network gives its binned logits (metadata
        ``network_classes``; default, and empty here, all of them) or the network itself, run on
        the same binned frame (a second pass over it). Without a context network, the network
        itself is the context network.
    offsets_without_pass : tuple of float
        For each channel, the logit offset added on frames too small for the pass (metadata
        ``without_pass``; default, and empty here, 0 for every channel).
    """

    factor: int
    channels: tuple
    modes: tuple
    network: str | None = None
    by_context_network: tuple = ()
    offsets_without_pass: tuple = ()

    def __post_init__(self):
        if not self.by_context_network:
            object.__setattr__(self, "by_context_network", (True,) * len(self.channels))
        if not self.offsets_without_pass:
            object.__setattr__(self, "offsets_without_pass", (0.0,) * len(self.channels))

    @classmethod
    def from_metadata(cls, context: dict | None, classes) -> "ContextPass | None":
        """The pass that ``context`` (metadata entry) describes; None when it is absent or empty.

        Raises
        ------
        ValueError
            Unknown class or mode, a factor below 2, a context network that is not a plain
            subdirectory name, context-network classes without a context network or outside
            the pass's classes, or an offset without the pass that is not a finite number or is
            for a class outside the pass.
        """
        if not context or not context.get("classes"):
            return None
        factor = int(context["factor"])
        if factor < 2:
            raise ValueError(f"context factor must be at least 2, not {factor}")
        network = context.get("network")
        if network is not None and (not isinstance(network, str) or network in ("", ".", "..")
                                    or "/" in network or "\\" in network):
            raise ValueError(f"context network {network!r} is not the name of a subdirectory")
        channels, modes = [], []
        for name, mode in context["classes"].items():
            channels.append(output_channel(classes, name, "context"))
            if mode not in MODES:
                raise ValueError(f"context mode {mode!r} of {name} is not one of {MODES}")
            modes.append(mode)
        names = list(context["classes"])
        network_classes = context.get("network_classes")
        if network_classes and network is None:
            raise ValueError("context network_classes given without a context network")
        if network_classes is None:
            network_classes = names
        unknown = [n for n in network_classes if n not in names]
        if unknown:
            raise ValueError(f"context network class {unknown[0]!r} is not one of the pass's classes")
        by_context_network = tuple(n in network_classes for n in names)
        without = context.get("without_pass") or {}
        for name, offset in without.items():
            if name not in names:
                raise ValueError(f"context without_pass class {name!r} is not one of the pass's classes")
            if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not np.isfinite(offset):
                raise ValueError(f"context without_pass offset of {name} is not a finite number: {offset!r}")
        offsets = tuple(float(without.get(n, 0.0)) for n in names)
        return cls(factor, tuple(channels), tuple(modes), network, by_context_network, offsets)

    def applies_to(self, shape) -> bool:
        """Whether a frame of this shape gets the pass (its binned frame is large enough)."""
        return min(-(-int(s) // self.factor) for s in shape) >= MIN_BINNED_SIDE


@dataclasses.dataclass(frozen=True)
class BlockSmoothing:
    """The block smoothing of a network, from its metadata.

    Attributes
    ----------
    block : int
        Block side B (pixels).
    channels : tuple of int
        Output channels that are smoothed.
    """

    block: int
    channels: tuple

    @classmethod
    def from_metadata(cls, smoothing: dict | None, classes) -> "BlockSmoothing | None":
        """The smoothing that ``smoothing`` (metadata entry) describes; None when absent or empty.

        Raises
        ------
        ValueError
            Unknown class, or a block below 2.
        """
        if not smoothing or not smoothing.get("classes"):
            return None
        block = int(smoothing["block"])
        if block < 2:
            raise ValueError(f"smoothing block must be at least 2, not {block}")
        return cls(block, tuple(output_channel(classes, name, "smoothing") for name in smoothing["classes"]))

    def block_counts(self, shape) -> np.ndarray:
        """Pixels in each block of a frame of ``shape``, float64 (ceil(H / B), ceil(W / B))."""
        h, w = (int(v) for v in shape)
        return np.outer(_block_counts(h, self.block), _block_counts(w, self.block)).astype(np.float64)


def add_block_sums(sums: np.ndarray, plane: np.ndarray, y0: int, x0: int, block: int) -> None:
    """Add the sums of a window of a frame's plane over the frame's block grid into ``sums``.

    Parameters
    ----------
    sums : ndarray, float64, shape (ceil(H / B), ceil(W / B))
        Block sums of the frame, accumulated window by window.
    plane : ndarray, shape (h, w)
        The window's values (any strides).
    y0, x0 : int
        The window's first row and column in the frame.
    block : int
        B.
    """
    h, w = plane.shape
    rows = _block_starts(y0, h, block)
    cols = _block_starts(x0, w, block)
    part = np.add.reduceat(np.add.reduceat(plane, rows, axis=0, dtype=np.float64), cols, axis=1)
    by, bx = y0 // block, x0 // block
    sums[by : by + len(rows), bx : bx + len(cols)] += part


def _block_starts(start: int, n: int, block: int) -> np.ndarray:
    """Offsets, within a window of n pixels starting at frame pixel ``start``, where a block begins
    (the window's first pixel included)."""
    first = -start % block
    return np.unique(np.r_[0, np.arange(first, n, block)]).astype(np.intp)


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
    h, w = np.shape(image)
    b = int(factor)
    hb, wb = -(-h // b), -(-w // b)
    out = np.empty((hb, wb), np.float32)
    col_counts = _block_counts(w, b)
    for r0 in range(0, hb, _BAND_BLOCKS):
        band = np.asarray(image[r0 * b : (r0 + _BAND_BLOCKS) * b], dtype=np.float32)
        finite = np.isfinite(band)
        if finite.all():
            n = np.outer(_block_counts(band.shape[0], b), col_counts)
        else:
            band = np.where(finite, band, np.float32(0))
            n = _block_sums(finite.astype(np.float32), b)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[r0 : r0 + n.shape[0]] = np.where(n > 0, _block_sums(band, b) / n, np.float32(np.nan))
    return out


def _block_counts(n: int, b: int) -> np.ndarray:
    """Pixels in each of the ceil(n / b) blocks along an axis of n pixels (the last may be short)."""
    return np.minimum(b, n - b * np.arange(-(-n // b))).astype(np.float32)


def _block_sums(x: np.ndarray, b: int) -> np.ndarray:
    """Sums over the b x b blocks of ``x`` (partial blocks at the far edges sum what they hold);
    contiguous reductions, along rows then down columns (float32 is exact enough for b**2 terms)."""
    h, w = x.shape
    hb, wb = -(-h // b), -(-w // b)
    if (h, w) != (hb * b, wb * b):
        padded = np.zeros((hb * b, wb * b), np.float32)
        padded[:h, :w] = x
        x = padded
    return x.reshape(hb * b, wb, b).sum(axis=2).reshape(hb, b, wb).sum(axis=1)


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


def upsample_columns(coarse: np.ndarray, factor: int, width: int) -> np.ndarray:
    """First half of :func:`upsample`: the binned frame's maps interpolated along rows to every
    full-resolution column (done once per frame; the rows are interpolated tile by tile).

    Parameters
    ----------
    coarse : ndarray, float32, shape (K, h, w)
    factor : int
    width : int
        Full-resolution width W.

    Returns
    -------
    ndarray, float32, shape (K, h, W)
    """
    x0, x1, wx = _linear_weights(0, width, factor, coarse.shape[2])
    # np.take and in-place arithmetic: 6x faster than fancy indexing and fresh temporaries
    left = np.take(coarse, x0, axis=2)
    out = np.take(coarse, x1, axis=2)
    out -= left
    out *= wx
    out += left
    return out


def upsample_rows(columns: np.ndarray, factor: int, rows: slice, cols: slice) -> np.ndarray:
    """Second half of :func:`upsample`: ``columns`` (from :func:`upsample_columns`) interpolated
    down the columns at the full-resolution rows ``rows``, in the columns ``cols``."""
    y0, y1, wy = _linear_weights(rows.start, rows.stop, factor, columns.shape[1])
    # by runs of rows between the same two coarse rows (b rows each): broadcast operations on
    # slices, 5x faster than fancy indexing, and no BLAS threads spinning on small products
    out = np.empty((columns.shape[0], len(y0), cols.stop - cols.start), np.float32)
    starts = np.flatnonzero(np.diff(y0, prepend=-1))
    for a, z in zip(starts, np.append(starts[1:], len(y0))):
        top, bottom = columns[:, y0[a], cols], columns[:, y1[a], cols]
        np.multiply((bottom - top)[:, None, :], wy[a:z, None], out=out[:, a:z])
        out[:, a:z] += top[:, None, :]
    return out


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
    columns = upsample_columns(coarse, factor, cols.stop)
    return upsample_rows(columns, factor, rows, cols)


def offset_without_pass(logits: np.ndarray, plan: ContextPass) -> np.ndarray:
    """Add the pass's offsets for frames too small for it to a tile's logits, in place.

    Parameters
    ----------
    logits : ndarray, float32, shape (h, w, C), writable
        Full-resolution logits of a tile core of a frame that skips the pass.
    plan : ContextPass

    Returns
    -------
    ndarray
        ``logits``.
    """
    for c, offset in zip(plan.channels, plan.offsets_without_pass):
        if offset:
            logits[..., c] += np.float32(offset)
    return logits


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
