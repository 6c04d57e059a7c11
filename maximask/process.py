"""One input file -> one output file: read each HDU, run the engine, post-process, write.

``file.fits`` gives ``file.masks.fits`` with the input's HDU structure: every 2-D image or 3-D cube
HDU becomes its masks (or probabilities), every other HDU is copied byte for byte.
``file.fits[N]`` gives ``file.masks<N>.fits`` with the masks of HDU N in the primary HDU.

Any failure discards the whole output: a file is written completely or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .errors import MaximaskError
from .fitsio_io import OutputFile, open_task, wcs_cards
from .inputs import Task, output_path
from .postprocess import OutputPlan, header_cards


def tiles_per_plane(shape: tuple, network) -> int:
    """Number of network tiles for one image plane of ``shape`` (H, W)."""
    from .tiling import plan_tiles

    meta = network.metadata
    return len(plan_tiles(tuple(shape[-2:]), meta.tile_size, meta.margin, meta.size_multiple))


def mask_image(data: np.ndarray, network, plan: OutputPlan, batch_size: int = 8,
               progress: Callable[[int], object] | None = None,
               overwrite_input: bool = False) -> tuple[np.ndarray, int]:
    """Run the network on an image or cube and post-process it.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (P, H, W)
        Pixel values (NaN/inf allowed).
    network : maximask.network.Network
    plan : OutputPlan
        From :func:`maximask.postprocess.make_plan`.
    batch_size : int
    progress : callable, optional
        Called with the number of tiles done.
    overwrite_input : bool
        Float32 ``data`` may be overwritten by its normalised values (saves a frame of memory).

    Returns
    -------
    output : ndarray
        ``plan.output_shape(data.shape)``, ``plan.dtype``.
    n_nonfinite : int
        NaN/inf input pixels.

    Raises
    ------
    ValueError
        An all-NaN or constant image (plane), from the normalisation; a cube names its plane.
    """
    from .engine import infer

    out = np.empty(plan.output_shape(data.shape), plan.dtype)
    planes = [data] if data.ndim == 2 else list(data)
    outs = [out] if data.ndim == 2 else list(out)
    n_nonfinite = 0
    for p, (image, o) in enumerate(zip(planes, outs)):
        info = {}
        try:
            infer(image, network, batch_size=batch_size, tile_transform=plan, out=o, progress=progress, info=info,
                  overwrite_input=overwrite_input)
        except ValueError as exc:
            raise ValueError(str(exc) if data.ndim == 2 else f"plane {p}: {exc}") from None
        n_nonfinite += info.get("n_nonfinite", 0)
    return out, n_nonfinite


def _axis_map(ndim: int, plan: OutputPlan) -> dict[int, int]:
    """Input FITS axis -> output FITS axis: the class axis is inserted before a cube's plane axis."""
    if ndim == 2:
        return {1: 1, 2: 2}
    return {1: 1, 2: 2, 3: 3 if plan.mode == "single" else 4}


def mask_file(
    task: Task,
    network,
    plan: OutputPlan,
    out_dir=None,
    batch_size: int = 8,
    compress: bool = False,
    progress: Callable[[int], object] | None = None,
    start: Callable[[int], object] | None = None,
) -> Path:
    """Process one input and write its output.

    Parameters
    ----------
    task : maximask.inputs.Task
        The file and, optionally, the one HDU to process.
    network : maximask.network.Network
    plan : OutputPlan
    out_dir : path, optional
        Output directory; default: next to the input.
    batch_size : int
        Tiles per network call.
    compress : bool
        Write tile-compressed output images.
    progress : callable, optional
        Called with the number of tiles done after each batch.
    start : callable, optional
        Called once with the total number of tiles of the file, before the first one.

    Returns
    -------
    pathlib.Path
        The output file.

    Raises
    ------
    MaximaskError
        Anything wrong with the input or the output; no output (not even a temporary file) is
        left behind.
    """
    with open_task(task) as src:
        hdus = src.hdus
        order = [task.hdu] if task.hdu is not None else list(range(len(hdus)))
        if start is not None:
            start(sum(tiles_per_plane(hdus[i].shape, network) * (hdus[i].shape[0] if len(hdus[i].shape) == 3 else 1)
                      for i in order if hdus[i].is_image))
        try:
            out = OutputFile(output_path(task, out_dir), compress=compress)
        except MaximaskError as exc:
            raise MaximaskError(task.label, f"{exc.path}: {exc.reason}") from None
        with out:
            for i in order:
                info = hdus[i]
                if not info.is_image:
                    out.copy_raw(src.raw_hdu(i))
                    continue
                # the error names the HDU, unless the file or the task has only one
                where = task.label if task.hdu is not None or len(hdus) == 1 else f"{task.label}[{i}]"
                data = src.read_image(i)
                try:
                    # the pixels were read for this call only: normalised in place, they cost no
                    # second frame
                    result, n_nonfinite = mask_image(data, network, plan, batch_size, progress,
                                                     overwrite_input=True)
                except ValueError as exc:
                    raise MaximaskError(where, str(exc)) from None
                del data
                cards = wcs_cards(src.copied_keywords(i), _axis_map(len(info.shape), plan))
                cards += header_cards(plan, __version__, network.model_id, n_nonfinite=n_nonfinite)
                out.write_image(result, cards)
                del result
            return out.commit()
