"""Hot columns (and rows) from their neighbours: a line brighter than the lines on both sides.

A hot column is a charge trap that adds the same charge to every pixel clocked through it, over
hundreds of rows, from the trap to the serial register. Half of the simulated ones are below
3 sigma per pixel, and the network, which sees a few hundred pixels, misses those. Pooling along
the column finds them (docs/MODEL.md, "Hot columns from their neighbours"):

    m[k, x]  = median of column x over the k-th block of B rows       (linear noise units)
    ref      = max(median of m at x-4..x-2, median of m at x+2..x+4)  (a step is no excess)
    excess   = m - ref - max(0, min(m[x-1], m[x+1]) - ref)            (1-2 px wide, not wider)
    s        = excess / MAD(excess), averaged over 3 consecutive blocks

and the same along rows; a pixel's score is the larger of its column's and its row's. The engine
adds it to the HCL logit:

    HCL logit := logaddexp(HCL logit, slope * ln(min(s, max_score)) + offset)
                 where s > min_score and the SAT logit is below ``gate``

(bleed trails are bright, narrow and long, and the network knows them as SAT). ``slope``,
``offset`` and the rest come from the network's metadata (``columns``). The score of a pixel
depends on the whole frame, not on a tile: it is computed once per frame, before the tile pass.
Everything here is a pure function of arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .context import output_channel

#: Reference columns on each side: at distances 2 to 4 (1 is left out, so that a 2-px wide column
#: is not its own reference).
_REFERENCE = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class ColumnScore:
    """The hot-column score of a network, from its metadata.

    Attributes
    ----------
    channel : int
        Output channel it adds to (HCL).
    gate_channel : int
        Output channel that vetoes it (SAT) where its logit is at or above ``gate``.
    gate : float
    slope, offset : float
        ``logit = slope * ln(min(s, max_score)) + offset``.
    min_score, max_score : float
        Scores at or below ``min_score`` add nothing; scores above ``max_score`` count as it.
    block : int
        Rows (columns) pooled into one median.
    """

    channel: int
    gate_channel: int
    gate: float
    slope: float
    offset: float
    min_score: float
    max_score: float
    block: int

    @classmethod
    def from_metadata(cls, columns: dict | None, classes) -> "ColumnScore | None":
        """The score that ``columns`` (metadata entry) describes; None when it is absent.

        Raises
        ------
        ValueError
            Unknown class, missing value, a block under 8 rows, or ``0 < min_score < max_score``
            not holding.
        """
        if not columns:
            return None
        channel = output_channel(classes, columns.get("class", "HCL"), "columns")
        gate_channel = output_channel(classes, columns.get("gate_class", "SAT"), "columns")
        try:
            gate, slope, offset, min_score, max_score = (
                float(columns[k]) for k in ("gate", "slope", "offset", "min_score", "max_score"))
            block = columns["block"]
        except KeyError as exc:
            raise ValueError(f"columns needs {exc.args[0]!r}") from None
        if isinstance(block, bool) or not isinstance(block, int) or block < 8:
            raise ValueError(f"columns block must be an integer of at least 8, not {block!r}")
        if not 0 < min_score < max_score:
            raise ValueError(f"columns needs 0 < min_score < max_score, not {min_score}, {max_score}")
        return cls(channel, gate_channel, gate, slope, offset, min_score, max_score, block)

    def add_to(self, logits: np.ndarray, hits: tuple) -> np.ndarray:
        """Add the score to the HCL logits of a window, in place.

        Parameters
        ----------
        logits : ndarray, float32, shape (h, w, C), writable
        hits : tuple of ndarray
            ``(rows, cols, score)`` of the window's pixels that may score, from
            :meth:`HotLines.window_hits` (the others score at most ``min_score``).
        """
        iy, ix, score = hits
        keep = (score > self.min_score) & (logits[iy, ix, self.gate_channel] < self.gate)
        if keep.any():
            iy, ix = iy[keep], ix[keep]
            s = np.minimum(score[keep], np.float32(self.max_score))
            line = np.float32(self.slope) * np.log(s) + np.float32(self.offset)
            logits[iy, ix, self.channel] = np.logaddexp(logits[iy, ix, self.channel], line)
        return logits


def block_edges(n: int, block: int) -> np.ndarray:
    """Edges of the blocks that pool ``n`` pixels: ``round(n / block)`` blocks (at least one) of
    nearly equal size, so that no block is a short remainder."""
    n_blocks = max(1, int(round(n / block)))
    return np.linspace(0, n, n_blocks + 1).round().astype(np.intp)


def line_medians(frame: np.ndarray, edges: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median of each line of ``frame`` over each block of the other axis, in linear noise units.

    ``axis=0``: each column over each block of rows, shape (len(edges) - 1, W); ``axis=1``: each
    row over each block of columns, shape (len(edges) - 1, H). The median of an even number of
    pixels is the upper of the two middle ones (a partition, not an average: twice as fast, and the
    score does not need the half-pixel difference). ``sinh`` is increasing, so the median of the
    linear values is the ``sinh`` of the input's median, taken on one value per block.
    """
    n_lines = frame.shape[1 - axis]
    out = np.empty((len(edges) - 1, n_lines), dtype=np.float32)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        # one line per row, its pixels contiguous: a partition along the last axis is the fast one
        lines = np.ascontiguousarray(frame[a:b].T) if axis == 0 else frame[:, a:b]
        mid = (b - a) // 2
        out[k] = np.partition(lines, mid, axis=1)[:, mid]
    return np.sinh(out)


def column_excess(medians: np.ndarray) -> np.ndarray:
    """Excess of each column's block medians over both sides' references, less the excess its
    nearer adjacent column shares; shape of ``medians`` (n_blocks, W)."""
    pad = _REFERENCE[-1]
    m = np.pad(medians, ((0, 0), (pad, pad)), mode="edge")
    width = medians.shape[1]

    def shifted(d):
        return m[:, pad + d : pad + d + width]

    left = np.median(np.stack([shifted(-d) for d in _REFERENCE]), axis=0)
    right = np.median(np.stack([shifted(d) for d in _REFERENCE]), axis=0)
    reference = np.maximum(left, right)
    shared = np.minimum(shifted(-1), shifted(1)) - reference
    return medians - reference - np.clip(shared, 0, None)


def line_scores(medians: np.ndarray) -> np.ndarray:
    """Hot-line score of each line over each block, from its block medians (n_blocks, n_lines):
    the excess of :func:`column_excess` in units of its median absolute deviation, averaged over
    three consecutive blocks."""
    excess = column_excess(medians)
    mad = 1.4826 * np.median(np.abs(excess - np.median(excess)))
    score = excess / mad if mad > 0 else np.zeros_like(excess)
    # three consecutive blocks: a hot column runs over hundreds of rows, a bleed trail or a star's
    # residual over a few tens
    padded = np.pad(score, ((1, 1), (0, 0)), mode="edge")
    return ((padded[:-2] + padded[1:-1] + padded[2:]) / 3).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class HotLines:
    """The hot-column and hot-row scores of one frame, per block.

    Build it with :meth:`of_frame`; :meth:`window_hits` gives a window's pixels that may score,
    :meth:`window` the score of every pixel of a window.
    """

    columns: np.ndarray  # (n_row_blocks, W): each column's score over each block of rows
    rows: np.ndarray  # (n_col_blocks, H): each row's score over each block of columns
    row_block: np.ndarray  # (H,): the block of rows of each row
    col_block: np.ndarray  # (W,): the block of columns of each column

    @classmethod
    def of_frame(cls, frame: np.ndarray, block: int) -> "HotLines":
        """The scores of ``frame``, the network's input ``asinh((image - background) / sigma)``
        (see :mod:`maximask.normalize`), pooled over blocks of ``block`` pixels."""
        height, width = frame.shape
        row_edges, col_edges = block_edges(height, block), block_edges(width, block)
        columns = line_scores(line_medians(frame, row_edges, axis=0))
        rows = line_scores(line_medians(frame, col_edges, axis=1))
        row_block = np.repeat(np.arange(len(row_edges) - 1), np.diff(row_edges))
        col_block = np.repeat(np.arange(len(col_edges) - 1), np.diff(col_edges))
        return cls(columns, rows, row_block, col_block)

    def _scores(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Scores of the pixels at rows ``ys`` x columns ``xs`` (frame indices), shape (len(ys),
        len(xs)): the larger of the column's score over the row's block and the row's over the
        column's."""
        by_column = self.columns[np.ix_(self.row_block[ys], xs)]
        by_row = self.rows[np.ix_(self.col_block[xs], ys)].T
        return np.maximum(by_column, by_row)

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """Score of every pixel of a window (start and stop set), shape (h, w), float32."""
        return self._scores(np.arange(rows.start, rows.stop), np.arange(cols.start, cols.stop))

    def window_hits(self, rows: slice, cols: slice, min_score: float) -> tuple:
        """The pixels of a window whose score may exceed ``min_score``, and their scores.

        Those lie in the columns that score above it over one of the window's blocks of rows, or
        in the rows that do over one of its blocks of columns: a few lines, so only they are
        looked at.

        Returns
        -------
        iy, ix : ndarray of intp
            Row and column of each pixel in the window, each pixel once.
        score : ndarray, float32
            Its score (:meth:`window`); every other pixel of the window scores at most
            ``min_score``.
        """
        ys, xs = np.arange(rows.start, rows.stop), np.arange(cols.start, cols.stop)
        row_blocks = np.unique(self.row_block[ys])
        col_blocks = np.unique(self.col_block[xs])
        hot_x = np.flatnonzero((self.columns[row_blocks][:, xs] > min_score).any(axis=0))
        hot_y = np.flatnonzero((self.rows[col_blocks][:, ys] > min_score).any(axis=0))
        # the hot columns' pixels, then the hot rows' pixels outside the hot columns: each once
        other_x = np.setdiff1d(np.arange(len(xs)), hot_x, assume_unique=True)
        in_columns = self._scores(ys, xs[hot_x])
        in_rows = self._scores(ys[hot_y], xs[other_x])
        iy = np.concatenate([np.repeat(np.arange(len(ys)), len(hot_x)), np.repeat(hot_y, len(other_x))])
        ix = np.concatenate([np.tile(hot_x, len(ys)), np.tile(other_x, len(hot_y))])
        return iy, ix, np.concatenate([in_columns.ravel(), in_rows.ravel()])
