"""Tile plan: cut a frame into network tiles that overlap only by the context the network needs.

Geometry (rows; columns alike). The network needs ``margin`` (M) pixels of context on each side of
a pixel for its output to equal its output on the whole image; its tile side is T (margins included)
and its downsamplings require tile sides and offsets to be multiples of S (``size_multiple``).

* The frame is placed at (M, M) in a zero canvas (0 is the background level after normalisation).
* Tile k starts at canvas row ``k * step`` with ``step = T - 2M`` (rounded down to a multiple of S),
  so consecutive tiles overlap by ``T - step`` = 2M pixels: each pixel is computed once, and the
  MaxiMask scheme (400-px tiles overlapping by half, each pixel computed ~4 times) is avoided.
* Tile k's core, canvas rows ``[k step + M, (k + 1) step + M)``, is frame rows
  ``[k step, (k + 1) step)``: the cores tile the frame exactly, and every core pixel has M pixels of
  real context (or zero padding, as on a whole zero-padded image) inside its tile.
* The canvas is ``(n - 1) step + T`` high, a multiple of S, at least M larger than the frame below
  and right; frames smaller than a tile give one tile.

Since tile offsets are multiples of S, every tile sees the frame with the alignment the whole canvas
has, and the stitched cores equal the network applied once to the whole canvas.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: its input window on the canvas and its core in frame coordinates.

    Attributes
    ----------
    y0, x0 : int
        Canvas row and column of the tile's first pixel; tile input is
        ``canvas[y0:y0 + T, x0:x0 + T]``.
    core : tuple of slice
        Frame rows and columns (``slice, slice``) the tile's core covers.
    inner : tuple of slice
        The same pixels in tile coordinates (rows and columns of the network output).
    """

    y0: int
    x0: int
    core: tuple
    inner: tuple


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """How a frame of ``shape`` is cut into tiles.

    Attributes
    ----------
    shape : tuple of int
        Frame shape (H, W).
    tile_size : int
        T, tile side (pixels, margins included).
    margin : int
        M, context pixels on each side of a core.
    step : int
        Offset between consecutive tiles (core side), a multiple of ``size_multiple``.
    canvas_shape : tuple of int
        Shape of the zero canvas holding the frame at (M, M).
    tiles : list of Tile
        Row-major.
    """

    shape: tuple
    tile_size: int
    margin: int
    step: int
    canvas_shape: tuple
    tiles: list

    def __len__(self) -> int:
        return len(self.tiles)

    def canvas(self, data: np.ndarray) -> np.ndarray:
        """The frame placed at (M, M) in a float32 zero canvas of ``canvas_shape``."""
        if data.shape != self.shape:
            raise ValueError(f"frame shape {data.shape} does not match the plan {self.shape}")
        c = np.zeros(self.canvas_shape, np.float32)
        m = self.margin
        c[m : m + self.shape[0], m : m + self.shape[1]] = data
        return c

    def batches(self, batch_size: int) -> Iterator[list]:
        """Consecutive groups of at most ``batch_size`` tiles (the last one may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        for i in range(0, len(self.tiles), batch_size):
            yield self.tiles[i : i + batch_size]

    def gather(self, frame: np.ndarray, tiles: list, out: np.ndarray | None = None) -> np.ndarray:
        """Network input for ``tiles``, cut from the frame as if from the zero canvas.

        Parameters
        ----------
        frame : ndarray, shape ``shape``
            The (normalised) frame; the canvas is never built.
        tiles : list of Tile
        out : ndarray, float32, shape (>= B, T, T, 1), optional
            Buffer to reuse between batches.

        Returns
        -------
        ndarray, float32, shape (B, T, T, 1)
        """
        t, m = self.tile_size, self.margin
        h, w = self.shape
        if out is None or out.shape[0] < len(tiles):
            out = np.empty((len(tiles), t, t, 1), np.float32)
        out = out[: len(tiles)]
        for i, tile in enumerate(tiles):
            # tile window in frame coordinates, and the part of it inside the frame
            fy, fx = tile.y0 - m, tile.x0 - m
            ya, yb = max(fy, 0), min(fy + t, h)
            xa, xb = max(fx, 0), min(fx + t, w)
            dst = out[i, :, :, 0]
            if ya - fy or xa - fx or yb - fy < t or xb - fx < t:
                dst[...] = 0.0
            dst[ya - fy : yb - fy, xa - fx : xb - fx] = frame[ya:yb, xa:xb]
        return out


def _n_tiles(n: int, step: int) -> int:
    return max(1, -(-n // step))


def plan_tiles(shape, tile_size: int, margin: int, size_multiple: int = 1) -> TilePlan:
    """Cut a frame into tiles.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (H, W), each >= 1.
    tile_size : int
        Network tile side T (pixels, margins included), a multiple of ``size_multiple``.
    margin : int
        Context M (pixels) the network needs on each side; ``T - 2M`` must leave at least
        ``size_multiple`` pixels.
    size_multiple : int
        Tile offsets are multiples of it.

    Returns
    -------
    TilePlan

    Raises
    ------
    ValueError
        For inconsistent geometry.
    """
    h, w = (int(v) for v in shape)
    t, m, s = int(tile_size), int(margin), int(size_multiple)
    if h < 1 or w < 1:
        raise ValueError(f"empty frame shape {shape}")
    if s < 1 or m < 0 or t % s:
        raise ValueError(f"tile size {t} is not a multiple of {s} (or negative margin {m})")
    step = (t - 2 * m) // s * s
    if step < s or step < 1:
        raise ValueError(f"tile size {t} leaves no core with margin {m} (multiple {s})")
    ny, nx = _n_tiles(h, step), _n_tiles(w, step)
    canvas_shape = ((ny - 1) * step + t, (nx - 1) * step + t)
    tiles = []
    for iy in range(ny):
        ys = slice(iy * step, min(h, (iy + 1) * step))
        for ix in range(nx):
            xs = slice(ix * step, min(w, (ix + 1) * step))
            inner = (slice(m, m + ys.stop - ys.start), slice(m, m + xs.stop - xs.start))
            tiles.append(Tile(iy * step, ix * step, (ys, xs), inner))
    return TilePlan((h, w), t, m, step, canvas_shape, tiles)


def fitted_tile_size(shape, tile_size: int, margin: int, size_multiple: int = 1, minimum: int = 1) -> int:
    """Tile side for a frame: ``tile_size``, or less where the frame fits in one tile's core.

    A frame smaller than a tile's core would otherwise be padded with zeros to a whole tile; the
    network then computes pixels nobody reads (a 512^2 frame in a 1280^2 tile: 6x its pixels). The
    core's outputs do not depend on the tile size as long as the margin is kept.

    Parameters
    ----------
    shape : tuple of int
        Frame shape (H, W).
    tile_size, margin, size_multiple : int
        As in :func:`plan_tiles`.
    minimum : int
        Least tile side the network accepts (e.g. its refinement's strip rows).

    Returns
    -------
    int
        The smallest multiple of ``size_multiple`` (at least ``minimum``) whose core covers the
        frame in one tile, if that is below ``tile_size``; otherwise ``tile_size``.
    """
    s, m = int(size_multiple), int(margin)
    core = -(-max(int(v) for v in shape) // s) * s
    fitted = -(-(core + 2 * m) // s) * s
    fitted = -(-max(fitted, int(minimum)) // s) * s
    return min(int(tile_size), fitted)
