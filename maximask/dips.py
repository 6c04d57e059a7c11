"""Dead and hot pixels from their neighbours: a pixel far below (above) all eight of its neighbours.

No source on the sky makes a one-pixel hole: the PSF spreads every source over several pixels, so a
pixel well below the lowest of its eight neighbours is a dead (or cold) pixel, or noise. The network
judges dead pixels from a 1/4-resolution body plus a small refinement, and ranks the obvious ones
poorly (docs/MODEL.md, "Dead-pixel dips"). So the engine adds this evidence to the DP logit:

    dip = min(8 neighbours) - pixel            (noise units of the frame's background, linear)
    logit_dip = slope * ln(dip) + offset        where dip > min_dip
    DP logit := logaddexp(DP logit, logit_dip)  (the probabilities add, for small ones)

with ``slope``, ``offset`` and ``min_dip`` from the network's metadata (``dips``), fitted by logistic
regression on validation frames.

Hot pixels are the mirror image (metadata ``peaks``): ``peak = pixel - max(8 neighbours)``, the dip of
the negated frame (the network's input is an odd function of the pixel values), added to the HP
logit in the same way. A one-pixel peak is a hot pixel, a cosmic-ray hit or noise: no source on the
sky is that sharp either.

A pair of such pixels hides each from the other's score, since each has its twin among its
neighbours. An entry's optional ``pairs`` (slope and offset) scores, the same way, the depth below
the *second* lowest neighbour where the one-pixel dip is at most ``min_dip``
(:func:`neighbour_pair_dips`; shipped for DP only, docs/MODEL.md "Pairs of hot or dead pixels").
Everything here is a pure function of arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .context import output_channel


@dataclasses.dataclass(frozen=True)
class DipScore:
    """The dip (or peak) score of a network, from its metadata.

    Attributes
    ----------
    channel : int
        Output channel it adds to (DP; HP for peaks).
    slope, offset : float
        ``logit_dip = slope * ln(dip) + offset``.
    min_dip : float
        Dips (peaks) at or below it (noise units) add nothing.
    upward : bool
        Peaks above the neighbours (metadata ``peaks``) rather than dips below them (``dips``).
    pairs : bool
        The pair term (the entry's ``pairs``): pixels beyond all their neighbours but one, where
        the one-pixel dip is at most ``min_dip`` (:func:`neighbour_pair_dips`).
    """

    channel: int
    slope: float
    offset: float
    min_dip: float
    upward: bool = False
    pairs: bool = False

    @classmethod
    def from_metadata(cls, dips: dict | None, classes, entry: str = "dips") -> "DipScore | None":
        """The score that the metadata entry ``dips`` describes; None when it is absent.

        Parameters
        ----------
        dips : dict or None
            The entry: ``{"class": ..., "slope": ..., "offset": ..., "min_dip": ...}``.
        classes : sequence of str
            The network's classes.
        entry : {"dips", "peaks"}
            Which entry it is: dips (default class DP) or peaks (default class HP).

        Raises
        ------
        ValueError
            Unknown class, missing value, or a ``min_dip`` that is not positive.
        """
        if not dips:
            return None
        upward = {"dips": False, "peaks": True}[entry]
        channel = output_channel(classes, dips.get("class", "HP" if upward else "DP"), entry)
        try:
            slope, offset, min_dip = (float(dips[k]) for k in ("slope", "offset", "min_dip"))
        except KeyError as exc:
            raise ValueError(f"{entry} needs {exc.args[0]!r}") from None
        if not min_dip > 0:
            raise ValueError(f"{entry} min_dip must be positive, not {min_dip}")
        return cls(channel, slope, offset, min_dip, upward)

    @classmethod
    def all_from_metadata(cls, dips: dict | None, classes, entry: str = "dips") -> list:
        """The one-pixel score of the entry and, where it has ``pairs`` (``{"slope": ...,
        "offset": ...}``), its pair term: a list of zero, one or two scores.

        Raises
        ------
        ValueError
            As :meth:`from_metadata`; or ``pairs`` without a slope or an offset.
        """
        single = cls.from_metadata(dips, classes, entry)
        if single is None or not dips.get("pairs"):
            return [single] if single is not None else []
        try:
            slope, offset = (float(dips["pairs"][k]) for k in ("slope", "offset"))
        except KeyError as exc:
            raise ValueError(f"{entry} pairs needs {exc.args[0]!r}") from None
        return [single, dataclasses.replace(single, slope=slope, offset=offset, pairs=True)]

    def find(self, frame: np.ndarray, rows: slice, cols: slice) -> tuple:
        """The window's pixels that this score adds to: :func:`neighbour_dips` (or
        :func:`neighbour_pair_dips` for the pair term) with its ``min_dip`` and direction."""
        find = neighbour_pair_dips if self.pairs else neighbour_dips
        return find(frame, rows, cols, self.min_dip, upward=self.upward)

    def add_to(self, logits: np.ndarray, dips: tuple) -> np.ndarray:
        """``logits[..., channel] = logaddexp(logits[..., channel], slope * ln(dip) + offset)``, in
        place, at the pixels :meth:`find` lists (the others are left as they are).

        Parameters
        ----------
        logits : ndarray, float32, shape (h, w, C), writable
        dips : tuple of ndarray
            ``(rows, cols, dip)`` from :meth:`find`.
        """
        iy, ix, dip = dips
        if dip.size:
            score = np.float32(self.slope) * np.log(dip) + np.float32(self.offset)
            logits[iy, ix, self.channel] = np.logaddexp(logits[iy, ix, self.channel], score)
        return logits


def neighbour_dips(frame: np.ndarray, rows: slice, cols: slice, min_dip: float, upward: bool = False) -> tuple:
    """The pixels of a window that lie more than ``min_dip`` below the lowest of their 8 neighbours
    (``upward``: above the highest).

    Parameters
    ----------
    frame : ndarray, float32, shape (H, W)
        The network's input: ``asinh((image - background) / sigma)`` (see :mod:`maximask.normalize`).
    rows, cols : slice
        The window (start and stop set).
    min_dip : float
        Least dip returned (linear noise units), > 0.
    upward : bool
        Peaks instead: the dips of the negated frame (``pixel - max(neighbours)``).

    Returns
    -------
    iy, ix : ndarray of intp
        Row and column of each such pixel in the window.
    dip : ndarray of float32
        ``min(neighbours) - pixel`` in linear noise units (``sinh`` of the input). Beyond the
        frame's edges the edge pixels repeat, so a pixel of the first or last row or column never
        dips (its repeated self is among its neighbours). A pixel's dip depends only on its
        neighbourhood, so windows stitch seamlessly.
    """
    window = _window(frame, rows, cols, upward)
    h, w = window.shape[0] - 2, window.shape[1] - 2
    # the 8 neighbours as the rows above and below (a running minimum of 3 columns) and the
    # left and right pixels: 5 passes instead of 8
    across = np.minimum(window[:, :w], window[:, 2:])
    np.minimum(across, window[:, 1:-1], out=across)
    lowest = np.minimum(across[:h], across[2:])
    np.minimum(lowest, window[1:-1, :w], out=lowest)
    np.minimum(lowest, window[1:-1, 2:], out=lowest)
    # sinh is increasing, so only pixels below all their neighbours in the input can dip (about 1
    # in 9 in pure noise): the linear values are computed for those alone, by index (on a 64 x
    # 1024 block, a boolean-mask gather took 160 us, np.take 8 us) and with exp (numpy's float32
    # sinh took 150 us on those ~9000 pixels, exp 30 us)
    lowest -= window[1:-1, 1:-1]
    candidates = np.flatnonzero(lowest > 0)
    iy, ix = np.divmod(candidates, w)
    top = np.take(lowest, candidates) + window[iy + 1, ix + 1]  # the neighbours' minimum
    centre = window[iy + 1, ix + 1]
    dip = 0.5 * ((np.exp(top) - np.exp(-top)) - (np.exp(centre) - np.exp(-centre)))
    keep = dip > min_dip
    return iy[keep], ix[keep], dip[keep].astype(np.float32)


def _window(frame: np.ndarray, rows: slice, cols: slice, upward: bool) -> np.ndarray:
    """The window with a one-pixel border, edge pixels repeated beyond the frame; negated for
    peaks."""
    height, width = frame.shape
    y0, y1, x0, x1 = rows.start - 1, rows.stop + 1, cols.start - 1, cols.stop + 1
    if y0 >= 0 and x0 >= 0 and y1 <= height and x1 <= width:
        window = frame[y0:y1, x0:x1]  # a view: no copy inside the frame
    else:
        ys, xs = np.clip(np.arange(y0, y1), 0, height - 1), np.clip(np.arange(x0, x1), 0, width - 1)
        window = frame[np.ix_(ys, xs)]
    return -window if upward else window


def neighbour_pair_dips(frame: np.ndarray, rows: slice, cols: slice, min_dip: float,
                        upward: bool = False) -> tuple:
    """The pixels of a window that lie more than ``min_dip`` below the second lowest of their 8
    neighbours but not more than ``min_dip`` below the lowest (``upward``: above): one of a pair.

    Parameters and returns as :func:`neighbour_dips`; ``dip`` is ``(second lowest neighbour) -
    pixel``. A pair of dead (hot) pixels hides each from :func:`neighbour_dips`, since each has
    the other among its neighbours.
    """
    window = _window(frame, rows, cols, upward)
    h, w = window.shape[0] - 2, window.shape[1] - 2
    # linear noise units (exp is 5 times faster than numpy's float32 sinh; the clip keeps it finite)
    e = np.exp(np.clip(window, -80.0, 80.0))
    lin = 0.5 * (e - 1.0 / e)
    floor = lin[1:-1, 1:-1] + np.float32(min_dip)
    # exactly 7 neighbours above pixel + min_dip: the second lowest is above it, the lowest not.
    # Counting in uint8 is cheaper than ordering the neighbours of every pixel.
    offsets = [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    above = np.zeros((h, w), np.uint8)
    for dy, dx in offsets:
        above += lin[dy : dy + h, dx : dx + w] > floor
    iy, ix = np.divmod(np.flatnonzero(above == 7), w)
    neighbours = np.sort(np.stack([lin[iy + dy, ix + dx] for dy, dx in offsets]), axis=0)
    return iy, ix, (neighbours[1] - lin[iy + 1, ix + 1]).astype(np.float32)
