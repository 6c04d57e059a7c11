"""From network logits to the written output: class selection, prior modification, thresholds,
bit-coded single mask, and the header keywords that describe them.

Everything works on logits ``z`` (``p = sigmoid(z)``), so that probabilities are computed only when
they are the output:

* prior modification, ``odds(p') = odds(p) * odds(pi_new) / odds(pi_train)``, is the additive shift
  ``z' = z + log odds(pi_new) - log odds(pi_train)``;
* a threshold ``t`` on ``p'`` is the threshold ``logit(t)`` on ``z'``, i.e. ``logit(t) - shift`` on
  ``z``; a pixel is flagged when ``p' > t`` (``t = 0`` flags every pixel, ``t = 1`` none).

The functions here are pure: arrays and numbers in, arrays and header cards out.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt

import numpy as np

from .classes import CLASSES
from .errors import UsageError

PROBABILITIES = "probabilities"
MASKS = "masks"
SINGLE_MASK = "single"


def logit(p) -> np.ndarray:
    """``log(p / (1 - p))``, float64; ``logit(0) = -inf``, ``logit(1) = +inf``."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def prior_shift(training_priors, new_priors) -> np.ndarray:
    """Logit shift that moves probabilities from the training priors to new priors.

    Parameters
    ----------
    training_priors, new_priors : array_like of float, shape (C,)
        Class frequencies, each in (0, 1).

    Returns
    -------
    ndarray of float64, shape (C,)
        ``log(odds(new)) - log(odds(train))``, to be added to the logits.
    """
    return logit(new_priors) - logit(training_priors)


def logit_thresholds(thresholds, shift=0.0) -> np.ndarray:
    """Thresholds on (prior-modified) probabilities as thresholds on raw logits.

    Parameters
    ----------
    thresholds : array_like of float, shape (C,)
        Probability thresholds ``t`` in [0, 1] applied to ``p'``.
    shift : array_like of float, shape (C,) or scalar
        Prior shift added to the logits (0 without prior modification).

    Returns
    -------
    ndarray of float64, shape (C,)
        ``logit(t) - shift``: a pixel is flagged when its raw logit is strictly greater.
    """
    return logit(thresholds) - np.asarray(shift, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """What to compute from the logits and how to describe it.

    Build it with :func:`make_plan`.

    Attributes
    ----------
    mode : str
        ``"probabilities"`` (float32 (K, H, W)), ``"masks"`` (uint8 0/1 (K, H, W)) or
        ``"single"`` (int16 (H, W), sum of bit codes).
    classes : tuple of int
        Indices in :data:`maximask.classes.CLASSES` of the written classes, in class order.
    channels : tuple of int
        Network output channel of each written class.
    shift : ndarray of float32, shape (K,)
        Logit shift of the prior modification (zeros without it).
    raw_thresholds : ndarray of float32, shape (K,) or None
        Thresholds on raw logits (see :func:`logit_thresholds`); None without thresholding.
    priors, thresholds : ndarray of float64, shape (K,) or None
        The configured values for the written classes, for the header.
    channel_thresholds : ndarray of float32, shape (C,) or None
        Raw-logit threshold of every network channel; +inf (never over) for the channels not
        written, so that one comparison serves the whole (h, w, C) tile.
    channel_bits : ndarray of int16, shape (C,)
        Bit code of every network channel in the single mask; 0 for the channels not written.
    """

    mode: str
    classes: tuple
    channels: tuple
    shift: np.ndarray
    raw_thresholds: np.ndarray | None
    priors: np.ndarray | None
    thresholds: np.ndarray | None
    channel_thresholds: np.ndarray | None
    channel_bits: np.ndarray

    @property
    def n_planes(self) -> int:
        """Planes per image: K, or 1 for the single mask."""
        return 1 if self.mode == SINGLE_MASK else len(self.classes)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({PROBABILITIES: np.float32, MASKS: np.uint8, SINGLE_MASK: np.int16}[self.mode])

    def output_shape(self, image_shape: tuple) -> tuple:
        """Output array shape for an image (H, W) -> (K, H, W) or (H, W); a cube (P, H, W) ->
        (P, K, H, W) or (P, H, W)."""
        *planes, h, w = image_shape
        if self.mode == SINGLE_MASK:
            return (*planes, h, w)
        return (*planes, len(self.classes), h, w)

    @property
    def bits(self) -> np.ndarray:
        """Bit code of each written class, int16, shape (K,)."""
        return np.array([CLASSES[i].bit for i in self.classes], dtype=np.int16)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """The tile transform: logits (h, w, C) float32 -> (K, h, w) or (h, w) in ``self.dtype``."""
        return transform(self, logits)

    def write_into(self, out: np.ndarray, core: tuple, logits: np.ndarray) -> None:
        """``out[..., core] = self(logits)`` without the intermediate tile (see :func:`write_tile`)."""
        write_tile(self, out, core, logits)

    def write_planes(self, out: np.ndarray, core: tuple, channels, planes: np.ndarray) -> None:
        """Rewrite the output of some channels only (see :func:`write_planes`)."""
        write_planes(self, out, core, channels, planes)


def make_plan(
    network_classes,
    flags,
    training_priors=None,
    priors=None,
    thresholds=None,
    single_mask: bool = False,
) -> OutputPlan:
    """Decide what to compute.

    Parameters
    ----------
    network_classes : sequence of str
        Abbreviation of each network output channel (network metadata ``classes``).
    flags : array_like of bool, shape (14,)
        Classes to write, in the order of :data:`maximask.classes.CLASSES`.
    training_priors : array_like of float, shape (len(network_classes),), optional
        Class frequencies in the training data, per network channel; required with ``priors``.
    priors : array_like of float, shape (14,), optional
        New priors; None disables the prior modification.
    thresholds : array_like of float, shape (14,), optional
        Probability thresholds; None writes probabilities.
    single_mask : bool
        Combine the thresholded classes into one bit-coded int16 plane.

    Raises
    ------
    UsageError
        Single mask without thresholds, no class flagged, a flagged class the network does not
        output, or training priors missing or outside (0, 1).
    """
    flags = np.asarray(flags, dtype=bool)
    if single_mask and thresholds is None:
        raise UsageError("--single_mask", "a single mask needs thresholding (--proba_thresh true)")
    classes = tuple(int(i) for i in np.flatnonzero(flags))
    if not classes:
        raise UsageError("classes.flags", "no class flagged")
    network_classes = list(network_classes)
    missing = [CLASSES[i].abbr for i in classes if CLASSES[i].abbr not in network_classes]
    if missing:
        raise UsageError("--net_dir", f"the network does not output class(es) {', '.join(missing)}")
    channels = tuple(network_classes.index(CLASSES[i].abbr) for i in classes)

    shift = np.zeros(len(classes))
    sel_priors = None
    if priors is not None:
        if training_priors is None or len(training_priors) != len(network_classes):
            raise UsageError("--net_dir", "network metadata lacks one training prior per class")
        train = np.asarray(training_priors, dtype=np.float64)[list(channels)]
        if not np.all((train > 0) & (train < 1)):
            raise UsageError("--net_dir", "network training priors must lie in (0, 1)")
        sel_priors = np.asarray(priors, dtype=np.float64)[list(classes)]
        shift = prior_shift(train, sel_priors)
    sel_thresh = raw = None
    if thresholds is not None:
        sel_thresh = np.asarray(thresholds, dtype=np.float64)[list(classes)]
        raw = logit_thresholds(sel_thresh, shift).astype(np.float32)
    mode = SINGLE_MASK if single_mask else (PROBABILITIES if thresholds is None else MASKS)
    channel_thresholds = None
    if raw is not None:
        channel_thresholds = np.full(len(network_classes), np.inf, np.float32)
        channel_thresholds[list(channels)] = raw
    channel_bits = np.zeros(len(network_classes), np.int16)
    channel_bits[list(channels)] = [CLASSES[i].bit for i in classes]
    return OutputPlan(mode, classes, channels, shift.astype(np.float32), raw, sel_priors, sel_thresh,
                      channel_thresholds, channel_bits)


def transform(plan: OutputPlan, logits: np.ndarray) -> np.ndarray:
    """Apply a plan to logits.

    Parameters
    ----------
    plan : OutputPlan
    logits : ndarray of float32, shape (h, w, C)
        Network outputs in channel order.

    Returns
    -------
    ndarray
        float32 probabilities (K, h, w), uint8 0/1 masks (K, h, w), or the int16 single mask (h, w).
    """
    logits = np.asarray(logits)
    h, w = logits.shape[:2]
    out = np.empty(plan.output_shape((h, w)), plan.dtype)
    write_tile(plan, out, (slice(0, h), slice(0, w)), logits)
    return out


# Bytes of a tile's per-pixel intermediate (comparisons or probabilities, all C channels) handled at
# once: the block is computed in the logits' (h, w, C) layout, where every pass is contiguous, and
# copied into the (K, H, W) planes while it is still in the L2 cache. Thresholding a 1024^2 tile
# of 14 channels: 28 ms as one broadcast comparison then a transposed copy of the whole tile, 14-17 ms
# by blocks of 64 kB to 1 MB (the block size matters little).
_BLOCK_BYTES = 256 * 2**10


def _row_blocks(h: int, row_bytes: int):
    """(start, stop) of the blocks of rows of a tile, each about ``_BLOCK_BYTES``."""
    rows = max(1, _BLOCK_BYTES // max(row_bytes, 1))
    return [(r, min(r + rows, h)) for r in range(0, h, rows)]


def _copy_planes(dst: np.ndarray, block: np.ndarray, channels) -> None:
    """``dst[k] = block[:, :, channels[k]]``: (n, w, C) -> (K, n, w)."""
    c0 = channels[0]
    if tuple(channels) == tuple(range(c0, c0 + len(channels))):
        # one copy of the transposed view: numpy walks it plane by plane
        np.copyto(dst, block[:, :, c0 : c0 + len(channels)].transpose(2, 0, 1))
        return
    for k, c in enumerate(channels):
        np.copyto(dst[k], block[:, :, c])


def sigmoid_inplace(x: np.ndarray) -> np.ndarray:
    """``x = 1 / (1 + exp(-x))`` in place (float32), 0 and 1 at the limits without a warning.

    numpy instead of ``scipy.special.expit``, whose import costs 0.2 s per command: within 3
    float32 ulps of the correctly rounded value (expit: 2; the two differ by up to 4), numpy's float32
    ``exp`` being within 2.5. ``exp`` overflows to inf for ``x < -88`` and ``1 / (1 + inf) = 0`` is
    the right limit.
    """
    np.negative(x, out=x)
    with np.errstate(over="ignore"):
        np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x


def write_probabilities(out: np.ndarray, core: tuple, logits: np.ndarray, channels=None, shift=None) -> None:
    """``out[..., k, core] = sigmoid(logits[..., channels[k]] + shift[k])``, block of rows by block.

    Parameters
    ----------
    out : ndarray, float32, shape (K, H, W)
    core : tuple of slice
        Rows and columns of ``out`` the tile covers (h and w long).
    logits : ndarray, shape (h, w, C)
    channels : sequence of int, optional
        Channel of each output plane; default all C, in order.
    shift : array_like of float32, shape (K,), optional
        Logit shift of each output plane (prior modification); default none.
    """
    logits = np.asarray(logits)
    h, w, c = logits.shape
    channels = tuple(range(c)) if channels is None else tuple(channels)
    flat = logits.reshape(h, w * c)  # a view for a tile's core: each row is contiguous
    shift_row = None
    if shift is not None and np.any(shift):
        # the shift of every pixel of a row (0 on channels not written: z + 0 = z, bar the sign
        # of a zero, which the sigmoid ignores)
        per_channel = np.zeros(c, np.float32)
        per_channel[list(channels)] = shift
        shift_row = np.tile(per_channel, w)
    ys, xs = core
    block = None
    for r0, r1 in _row_blocks(h, w * c * 4):
        if block is None:
            block = np.empty((r1 - r0, w, c), np.float32)
        b = block[: r1 - r0]
        bf = b.reshape(r1 - r0, w * c)
        if shift_row is None:
            np.copyto(bf, flat[r0:r1])
        else:
            np.add(flat[r0:r1], shift_row, out=bf)
        sigmoid_inplace(bf)
        _copy_planes(out[..., ys.start + r0 : ys.start + r1, xs], b, channels)


def write_tile(plan: OutputPlan, out: np.ndarray, core: tuple, logits: np.ndarray) -> None:
    """Apply a plan to a tile's logits and write the result at its place in the output.

    The same values as ``out[..., core] = transform(plan, logits)``, without the tile-sized
    intermediates: the thresholds are compared with the logits a block of rows at a time, in the
    logits' memory order (one comparison against the thresholds repeated along a row: a broadcast
    over the 14-long channel axis runs twice as slowly), and each block is copied into the output
    planes at once.

    Parameters
    ----------
    plan : OutputPlan
    out : ndarray, shape (K, H, W) or (H, W) (single mask), ``plan.dtype``
    core : tuple of slice
        Rows and columns of ``out`` the tile covers (h and w long).
    logits : ndarray of float32, shape (h, w, C)
        Network outputs in channel order.
    """
    logits = np.asarray(logits)
    if plan.mode == PROBABILITIES:
        write_probabilities(out, core, logits, plan.channels, plan.shift)
        return
    h, w, c = logits.shape
    flat = logits.reshape(h, w * c)
    thresholds = np.tile(plan.channel_thresholds, w)
    ys, xs = core
    over = None
    for r0, r1 in _row_blocks(h, w * c):
        if over is None:
            over = np.empty((r1 - r0, w, c), bool)
        b = over[: r1 - r0]
        np.greater(flat[r0:r1], thresholds, out=b.reshape(r1 - r0, w * c))
        dst = out[..., ys.start + r0 : ys.start + r1, xs]
        if plan.mode == SINGLE_MASK:
            np.matmul(b.view(np.uint8), plan.channel_bits, out=dst)
        else:
            _copy_planes(dst, b.view(np.uint8), plan.channels)


def write_planes(plan: OutputPlan, out: np.ndarray, core: tuple, channels, planes: np.ndarray) -> None:
    """Rewrite, in an output already written, what some channels give, from new logits.

    The other channels' output is left as it is: for the single mask, the channels' bits are
    cleared and set again. Used for the block-smoothed classes (:mod:`maximask.context`).

    Parameters
    ----------
    plan : OutputPlan
    out : ndarray, shape (K, H, W) or (H, W) (single mask), ``plan.dtype``
    core : tuple of slice
        Rows and columns of ``out`` (h and w long).
    channels : sequence of int
        Network output channels.
    planes : ndarray of float32, shape (len(channels), h, w)
        Their new logits.
    """
    ys, xs = core
    for c, plane in zip(channels, planes):
        if plan.mode == SINGLE_MASK:
            bit = plan.channel_bits[c]
            if bit:
                dst = out[ys, xs]
                dst &= ~bit
                dst |= np.where(plane > plan.channel_thresholds[c], bit, np.int16(0))
            continue
        if c not in plan.channels:
            continue
        k = plan.channels.index(c)
        if plan.mode == PROBABILITIES:
            write_probabilities(out[k : k + 1], core, plane[:, :, None], (0,), plan.shift[k : k + 1])
        else:
            np.greater(plane, plan.channel_thresholds[c], out=out[k, ys, xs].view(np.bool_))


def header_cards(
    plan: OutputPlan,
    version: str,
    model_id: str,
    n_nonfinite: int | None = None,
    date: _dt.datetime | None = None,
) -> list[tuple[str, object, str]]:
    """Header keywords that describe an output HDU.

    Parameters
    ----------
    plan : OutputPlan
    version : str
        maximask version.
    model_id : str
        Network identifier (:attr:`maximask.network.Network.model_id`).
    n_nonfinite : int, optional
        Number of NaN/inf input pixels (set to 0 before the network).
    date : datetime, optional
        Creation time (UTC); default now.

    Returns
    -------
    list of (keyword, value, comment)
        For each written class ``ABBR = meaning``, ``ABBR_DIM`` (0-based plane on the class axis;
        absent for the single mask), ``ABBR_PR`` (prior), ``ABBR_TH`` (threshold), ``ABBR_SM``
        (bit code); then ``PRIORS``, ``THRESH``, ``SMASK``, ``MMVERS``, ``MMMODEL``, ``MMNONFIN``,
        ``DATE``. Floats are full precision (astropy writes the shortest exact representation).
    """
    if date is None:
        date = _dt.datetime.now(_dt.timezone.utc)
    cards = []
    for k, i in enumerate(plan.classes):
        cls = CLASSES[i]
        cards.append((cls.abbr, cls.meaning, "maximask class"))
        if plan.mode != SINGLE_MASK:
            cards.append((f"{cls.abbr}_DIM", k, f"{cls.abbr} plane on the class axis (0-based)"))
        if plan.priors is not None:
            cards.append((f"{cls.abbr}_PR", float(plan.priors[k]), f"{cls.abbr} prior"))
        if plan.thresholds is not None:
            cards.append((f"{cls.abbr}_TH", float(plan.thresholds[k]), f"{cls.abbr} probability threshold"))
        if plan.mode == SINGLE_MASK:
            cards.append((f"{cls.abbr}_SM", int(cls.bit), f"{cls.abbr} bit code in the single mask"))
    cards += [
        ("PRIORS", plan.priors is not None, "probabilities prior-modified"),
        ("THRESH", plan.thresholds is not None, "probabilities thresholded"),
        ("SMASK", plan.mode == SINGLE_MASK, "single bit-coded mask"),
        ("MMVERS", str(version), "maximask version"),
        ("MMMODEL", str(model_id), "network id: SHA-256 of its files, 16 hex"),
    ]
    if n_nonfinite is not None:
        cards.append(("MMNONFIN", int(n_nonfinite), "NaN/inf input pixels (ignored by the network)"))
    cards.append(("DATE", date.strftime("%Y-%m-%dT%H:%M:%S"), "file creation date (UTC)"))
    return cards
