"""Array in, per-class output out: normalise -> tile -> network -> per-tile transform -> stitch.

The engine knows nothing about a particular network: tile size, margin, alignment and normalisation
come from the network's metadata. It streams tiles through the network and hands each tile's core
logits to a ``tile_transform`` whose result is written straight into the output (or which writes it
there itself, block of rows by block, see :func:`maximask.postprocess.write_tile`), so that a full
float32 probability cube (940 MB for 14 classes on a 4096^2 frame) exists only when it is what the
caller asked for (the CLI thresholds tile by tile into uint8 planes or an int16 bit mask).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .context import (BlockSmoothing, ContextPass, add_block_sums, bin_frame, combine, offset_without_pass,
                      upsample_columns, upsample_rows)
from .columns import ColumnScore, HotLines
from .dips import DipScore
from .normalize import normalize_image
from .postprocess import write_probabilities
from .tiling import fitted_tile_size, plan_tiles


def sigmoid_planes(logits: np.ndarray) -> np.ndarray:
    """Default tile transform: per-class probabilities.

    Parameters
    ----------
    logits : ndarray, float32, shape (h, w, C)

    Returns
    -------
    ndarray, float32, shape (C, h, w)
        ``1 / (1 + exp(-logits))``.
    """
    h, w, c = np.shape(logits)
    out = np.empty((c, h, w), np.float32)
    write_probabilities(out, (slice(0, h), slice(0, w)), logits)
    return out


# Rows per block when a tile result is written into the output: a transposed (C, h, w) view of an
# (h, w, C) array is copied 4x faster in blocks that fit in cache than in one strided copy.
_WRITE_ROWS = 8


def _write(out: np.ndarray, core: tuple, res: np.ndarray) -> None:
    """``out[..., core] = res``, by blocks of rows when ``res`` is (K, h, w)."""
    ys, xs = core
    if res.ndim == 2 or res.flags.c_contiguous:
        out[..., ys, xs] = res
        return
    for r in range(0, res.shape[-2], _WRITE_ROWS):
        y = ys.start + r
        out[..., y : min(y + _WRITE_ROWS, ys.stop), xs] = res[..., r : r + _WRITE_ROWS, :]


def _tile_writer(transform, image_shape: tuple) -> Callable:
    """``write(out, core, logits) -> out``: one tile's result written at its core in ``out``,
    which is allocated at the first tile when None.

    Transforms with a ``write_into(out, core, logits)`` method (:class:`maximask.postprocess.OutputPlan`,
    which also gives ``output_shape`` and ``dtype``) and the default probabilities write straight
    into the output, a block of rows at a time, with no tile-sized intermediate; other callables'
    results are copied.
    """
    if transform is None:
        def write(out, core, logits):
            if out is None:
                out = np.empty((logits.shape[-1],) + image_shape, np.float32)
            write_probabilities(out, core, logits)
            return out
    elif hasattr(transform, "write_into"):
        def write(out, core, logits):
            if out is None:
                out = np.empty(transform.output_shape(image_shape), transform.dtype)
            transform.write_into(out, core, logits)
            return out
    else:
        def write(out, core, logits):
            res = transform(logits)
            if out is None:
                out = np.empty(res.shape[:-2] + image_shape, res.dtype)
            _write(out, core, res)
            return out
    return write


# Rows of a tile core combined with the context pass and the dip score and written at once
# (64 x 1024 x 14 float32: 3.7 MB, which stays in cache between the two).
_CONTEXT_ROWS = 64


#: Binned frames from this size up (a 4096^2 frame binned 8 x 8) have the context network's runtime
#: freed after their pass, which costs ~50 ms to set it up again at the next frame. Measured, whole
#: command against the commit before the context network: on a 4096^2 frame, freeing keeps the peak
#: at 734 MiB (887 without) for 4 % more wall time; on eight 1024^2 frames it would cost 17 % in wall
#: time (461 MiB), against 7 % without (545 MiB, previously 434): below the size, speed wins.
RELEASE_MIN_BINNED_PIXELS = 512 * 512


def _context_columns(image, network, plan_ctx: ContextPass, batch_size: int) -> np.ndarray | None:
    """The context pass's logits for a frame, interpolated along its rows (K, h / b, W); None where
    the binned frame cannot be normalised (constant) while the frame itself may be: the frame's own
    logits then stand, and a frame that cannot be normalised fails in the caller."""
    frame = bin_frame(image, plan_ctx.factor)
    context_network = getattr(network, "context_network", network)
    by_context = np.asarray(plan_ctx.by_context_network, bool)
    binned = np.empty((len(plan_ctx.channels),) + frame.shape, np.float32)
    # the classes of each network, in one pass of that network over the binned frame
    for net, rows in ((network, ~by_context), (context_network, by_context)):
        if not rows.any():
            continue
        channels = [c for c, row in zip(plan_ctx.channels, rows) if row]
        try:
            binned[rows] = infer(frame, net, batch_size, context=False,
                                 tile_transform=lambda lg: np.moveaxis(lg[..., channels], -1, 0))
        except ValueError:
            return None
        finally:
            if net is not network and frame.size >= RELEASE_MIN_BINNED_PIXELS:
                net.release()  # its working memory would otherwise add to the tile pass's
    # interpolated along rows once per frame, down columns tile by tile
    return upsample_columns(binned, plan_ctx.factor, np.shape(image)[1])


def _planes_writer(transform, n_channels: int) -> Callable:
    """``write_planes(out, core, channels, planes) -> out``: rewrite what some channels give in an
    output the tile pass has written (block smoothing), the other channels untouched.

    Plans with a ``write_planes`` method do it themselves; the default probabilities plane by plane.
    Any other transform is given logits that are -inf on every other channel, and its result is
    merged into the output by maximum (floats) or bitwise or (integers): exact where the tile pass
    gave the smoothed channels -inf too (it does, for such transforms), since -inf maps to 0 or to
    the least value of any monotonic transform.
    """
    if transform is None:
        def write_planes(out, core, channels, planes):
            for c, plane in zip(channels, planes):
                write_probabilities(out[c : c + 1], core, plane[:, :, None])
            return out
    elif hasattr(transform, "write_planes"):
        def write_planes(out, core, channels, planes):
            transform.write_planes(out, core, channels, planes)
            return out
    else:
        def write_planes(out, core, channels, planes):
            h, w = planes.shape[1:]
            logits = np.full((h, w, n_channels), -np.inf, np.float32)
            for c, plane in zip(channels, planes):
                logits[:, :, c] = plane
            res = np.asarray(transform(logits))
            dst = out[(Ellipsis,) + tuple(core)]
            if np.issubdtype(dst.dtype, np.integer) or dst.dtype == bool:
                np.bitwise_or(dst, res.astype(dst.dtype), out=dst)
            else:
                np.maximum(dst, res, out=dst)
            return out
    return write_planes


#: Memory (bytes) the network's outputs and intermediates of one call may take (see infer).
_CALL_MEMORY = 256 * 2**20


def infer(
    image,
    network,
    batch_size: int = 8,
    tile_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    out: np.ndarray | None = None,
    progress: Callable[[int], object] | None = None,
    info: dict | None = None,
    overwrite_input: bool = False,
    context: bool = True,
) -> np.ndarray:
    """Run a network on a 2D frame of any size, tile by tile.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Raw pixel values (NaN/inf allowed); normalised here with
        ``network.metadata.normalisation``. Cubes: call once per plane.
    network : maximask.network.Network
        Anything with ``metadata`` (tile_size, margin, size_multiple, normalisation) and
        ``predict_logits(float32 (B, T, T, 1), copy, margin) -> float32 (B, T, T, C)``; called with
        ``copy=False``, it may return a view of a buffer that the next call reuses, and with
        ``margin=metadata.margin``, it may leave the tile edges outside the core unset. With a
        context pass it is also called with ``writable=True`` and must then return a writable array.
        If it has a true ``flexible_tiles`` attribute, a frame smaller than a tile's core is run
        in one smaller tile (:func:`maximask.tiling.fitted_tile_size`).
    batch_size : int
        Tiles per network call.
    tile_transform : callable, optional
        ``f(logits float32 (h, w, C)) -> ndarray (K, h, w) or (h, w)`` applied to each tile's core;
        its result is written at the core's place in ``out``. Default: :func:`sigmoid_planes`.
        It may return a view of a buffer it reuses: the result is copied before the next call.
        An object with a ``write_into(out, core, logits)`` method (and ``output_shape(image_shape)``
        and ``dtype`` for an omitted ``out``), such as :class:`maximask.postprocess.OutputPlan`,
        writes each core itself instead, with the same values.
    out : ndarray, shape (K, H, W) or (H, W), optional
        Output; allocated from the first transform result's dtype and leading shape if omitted.
    progress : callable, optional
        Called with the number of tiles done after each batch (e.g. ``tqdm.update``).
    info : dict, optional
        Filled with ``n_tiles``, ``n_nonfinite`` (NaN/inf input pixels, set to the background
        before inference), ``background`` and ``sigma`` (input units).
    overwrite_input : bool
        The normalised frame may replace ``image``'s pixels (float32 input the caller no longer
        needs), saving a frame's worth of memory.
    context : bool
        Run the network's context pass (``metadata.context``, see :mod:`maximask.context`) where
        it has one and the frame is large enough, its dead-pixel dip score (``metadata.dips``, see
        :mod:`maximask.dips`), its hot-pixel peak score (``metadata.peaks``), its hot-column score
        (``metadata.columns``, see :mod:`maximask.columns`) and its block smoothing
        (``metadata.smoothing``) where it has them;
        False gives the network's full-resolution logits alone.

    Returns
    -------
    ndarray
        ``out``.

    Raises
    ------
    ValueError
        From :func:`maximask.normalize.normalize_image` (all-NaN, constant or non-2D image).
    """
    meta = network.metadata
    plan_ctx = ContextPass.from_metadata(getattr(meta, "context", None), meta.classes) if context else None
    smooth = BlockSmoothing.from_metadata(getattr(meta, "smoothing", None), meta.classes) if context else None
    # the dead-pixel dips and the hot-pixel peaks (with their pair terms), where the network has them
    extremes = [score for entry in ("dips", "peaks") if context
                for score in DipScore.all_from_metadata(getattr(meta, entry, None), meta.classes, entry)]
    hot = ColumnScore.from_metadata(getattr(meta, "columns", None), meta.classes) if context else None
    columns = None
    offset = False  # whether the frame skips the pass and its classes take the offsets instead
    if plan_ctx is not None and plan_ctx.applies_to(np.shape(image)):
        # first: the context pass needs the raw pixels, which normalisation may overwrite
        columns = _context_columns(image, network, plan_ctx, batch_size)
    elif plan_ctx is not None:
        offset = any(plan_ctx.offsets_without_pass)
    norm = normalize_image(image, meta.normalisation, overwrite_input=overwrite_input)
    frame = norm.data
    tile_size = meta.tile_size
    if getattr(network, "flexible_tiles", False):
        refine_rows = int((getattr(meta, "refinement", None) or {}).get("rows", 1))
        tile_size = fitted_tile_size(frame.shape, tile_size, meta.margin, meta.size_multiple, refine_rows)
    plan = plan_tiles(frame.shape, tile_size, meta.margin, meta.size_multiple)
    if info is not None:
        info.update(
            n_tiles=len(plan),
            n_nonfinite=norm.n_nonfinite,
            background=norm.background,
            sigma=norm.sigma,
        )
    write = _tile_writer(tile_transform, frame.shape)
    # the hot-line scores pool whole columns and rows, so they are taken from the whole frame
    lines = HotLines.of_frame(frame, hot.block) if hot is not None else None
    if smooth is not None:
        counts = smooth.block_counts(frame.shape)
        sums = np.zeros((len(smooth.channels),) + counts.shape)
        # transforms that cannot rewrite some channels get -inf there in the tile pass (see
        # _planes_writer)
        placeholder = tile_transform is not None and not hasattr(tile_transform, "write_planes")
    by_rows = columns is not None or offset or smooth is not None or extremes or hot is not None
    buf = None
    # Tiles per network call: at most batch_size, and few enough that the network's logits, its
    # largest intermediate (the head before depth-to-space, as large) and the returned copy, about
    # 3 x 4 bytes x C per tile pixel, stay within _CALL_MEMORY (a 1024^2 tile needs 176 MB).
    per_tile = 3 * 4 * len(meta.classes) * meta.tile_size**2
    batch_size = max(1, min(int(batch_size), _CALL_MEMORY // per_tile))
    for tiles in plan.batches(batch_size):
        buf = plan.gather(frame, tiles, buf)
        if by_rows:
            logits = network.predict_logits(buf[: len(tiles)], copy=False, margin=meta.margin, writable=True)
        else:
            logits = network.predict_logits(buf[: len(tiles)], copy=False, margin=meta.margin)
        for tile, lg in zip(tiles, logits):
            core = lg[tile.inner]
            if not by_rows:
                out = write(out, tile.core, core)
                continue
            # combined, summed and written a block of rows at a time, while the block is in cache
            ys, xs = tile.core
            for r in range(0, ys.stop - ys.start, _CONTEXT_ROWS):
                rows = slice(ys.start + r, min(ys.start + r + _CONTEXT_ROWS, ys.stop))
                block = core[r : r + _CONTEXT_ROWS]
                if columns is not None:
                    combine(block, upsample_rows(columns, plan_ctx.factor, rows, xs), plan_ctx)
                elif offset:
                    offset_without_pass(block, plan_ctx)
                for score in extremes:
                    score.add_to(block, score.find(frame, rows, xs))
                if hot is not None:
                    hot.add_to(block, lines.window_hits(rows, xs, hot.min_score))
                if smooth is not None:
                    for k, c in enumerate(smooth.channels):
                        add_block_sums(sums[k], block[:, :, c], rows.start, xs.start, smooth.block)
                        if placeholder:
                            block[:, :, c] = -np.inf
                out = write(out, (rows, xs), block)
        # the logits may be a view of the runtime's buffer, which must be released before its next run
        logits = lg = core = block = None
        if progress is not None:
            progress(len(tiles))
    if smooth is not None:
        # the smoothed classes: block means interpolated back, written a band of rows at a time
        means = (sums / counts).astype(np.float32)
        smooth_columns = upsample_columns(means, smooth.block, frame.shape[1])
        write_planes = _planes_writer(tile_transform, len(meta.classes))
        everything = slice(0, frame.shape[1])
        for r in range(0, frame.shape[0], _CONTEXT_ROWS):
            rows = slice(r, min(r + _CONTEXT_ROWS, frame.shape[0]))
            planes = upsample_rows(smooth_columns, smooth.block, rows, everything)
            out = write_planes(out, (rows, everything), smooth.channels, planes)
    return out


def predict_probabilities(image, net_dir=None, batch_size: int = 8) -> np.ndarray:
    """Per-class contaminant probabilities of a 2D frame (the Python API).

    Parameters
    ----------
    image : array_like, shape (H, W)
        Pixel values of one image plane (NaN/inf allowed).
    net_dir : path or maximask.network.Network, optional
        Network directory (default: the bundled maximask network) or a loaded network.
    batch_size : int
        Tiles per network call.

    Returns
    -------
    ndarray, float32, shape (C, H, W)
        Probability of each class (C = 14, in :mod:`maximask.classes` order), before any prior
        modification or threshold.
    """
    from .network import Network

    if net_dir is None:
        from .resources import default_net_dir

        net_dir = default_net_dir()
    network = net_dir if hasattr(net_dir, "predict_logits") else Network(net_dir)
    return infer(image, network, batch_size=batch_size)
