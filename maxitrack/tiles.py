"""Which tiles of an HDU the classifier looks at, and how they are prepared.

A tracking error moves the whole field during the exposure, so every star of the frame carries the
same signature (a streak, an arc, a double image, a blur). A few tiles that contain stars hold
as much evidence as the whole frame; tiles of empty sky hold none. The classifier therefore runs
on ``n_tiles`` square cells of side ``tile`` chosen where the sources are:

1. the frame is cut into a grid of non-overlapping cells (spread evenly when the side is not a
   multiple of the cell);
2. the sky level and noise of the frame are measured once on a regular subsample of the pixels
   (the clipped statistics of :func:`maximask.normalize.mesh_statistics`);
3. each cell is scored by the number of pixels above ``sky + detect * noise`` on every second pixel
   of every second row, capped at ``cap`` of the cell, so that a cell with a dozen stars counts as
   much as a cell on a saturated star (whose bleed trail and halo would otherwise always win);
4. the ``n_tiles`` best cells are kept; ties (all capped cells, or all empty ones) are broken by a
   fixed pseudo-random order, so that the kept cells spread over the frame reproducibly.

Each kept tile is normalised on its own with the shared normalisation of
:mod:`maximask.normalize` (one mesh the size of the tile): training and inference call
:func:`prepare_tiles`, so the network always sees tiles prepared the same way.
"""

from __future__ import annotations

import numpy as np

from maximask.normalize import DEFAULT_NORMALISATION, mesh_statistics, normalize_image

#: Tile selection parameters stored in the network metadata (``extra["tiles"]``).
DEFAULT_SELECTION = {
    "n_tiles": 12,  # tiles per HDU
    "detect": 5.0,  # detection threshold (noise sigma) for the source count
    "cap": 0.05,  # a cell's score saturates when this fraction of its (sampled) pixels is detected
    "seed": 12345,  # fixed pseudo-random order that breaks ties between equal cells
}


def tile_normalisation(tile: int) -> dict:
    """Normalisation parameters for a tile of side ``tile``: one background mesh per tile."""
    return dict(DEFAULT_NORMALISATION, mesh=int(tile))


def cell_origins(n_pix: int, tile: int) -> np.ndarray:
    """Origins (int, pixels) of the cells along one axis of ``n_pix`` pixels.

    ``max(1, n_pix // tile)`` cells spread evenly from 0 to ``n_pix - tile``; one cell at 0 when the
    axis is shorter than a tile (the tile is then padded, see :func:`extract_tile`).
    """
    n = max(1, n_pix // tile)
    if n_pix <= tile:
        return np.zeros(1, dtype=int)
    return np.round(np.linspace(0, n_pix - tile, n)).astype(int)


def frame_sky(image: np.ndarray, step: int = 8) -> tuple:
    """Sky level and noise of a frame from a regular subsample.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    step : int
        Every ``step``-th pixel of every ``step``-th row is used (at least ~4000 pixels).

    Returns
    -------
    sky, noise : float
        Clipped mode and standard deviation (input units); noise is 0 for a constant frame and
        NaN when no pixel is finite.
    """
    h, w = image.shape
    step = int(max(1, min(step, np.sqrt(h * w / 4096.0))))
    s = image[::step, ::step].astype(np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    mode, std, _ = mesh_statistics(s[None, :], 3.0, 5)
    return float(mode[0]), float(std[0])


def select_tiles(image: np.ndarray, tile: int, params: dict | None = None, sky_noise: tuple | None = None) -> list:
    """Choose the cells of a frame the classifier looks at.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Raw pixel values (any real dtype; NaN allowed).
    tile : int
        Cell side (pixels).
    params : dict, optional
        Selection parameters (:data:`DEFAULT_SELECTION` keys).
    sky_noise : (float, float), optional
        The frame's sky and noise if already measured (:func:`frame_sky`).

    Returns
    -------
    list of (int, int)
        Origins ``(y0, x0)`` of at most ``n_tiles`` cells, best first.
    """
    p = dict(DEFAULT_SELECTION, **(params or {}))
    h, w = image.shape
    ys, xs = cell_origins(h, tile), cell_origins(w, tile)
    cells = [(int(y), int(x)) for y in ys for x in xs]
    n_keep = min(int(p["n_tiles"]), len(cells))
    tie = np.random.default_rng(int(p["seed"])).random(len(cells))
    if len(cells) > n_keep:
        sky, noise = sky_noise if sky_noise is not None else frame_sky(image)
        if np.isfinite(noise) and noise > 0:
            # Count on every second pixel of every second row: a star covers many pixels, so
            # a quarter of them counts it as well, at a quarter of the cost.
            with np.errstate(invalid="ignore"):
                det = image[::2, ::2] > sky + float(p["detect"]) * noise
            half = -(-tile // 2)
            cap = max(1.0, float(p["cap"]) * half * half)
            score = np.array(
                [min(cap, np.count_nonzero(det[y // 2 : y // 2 + half, x // 2 : x // 2 + half])) for y, x in cells],
                dtype=float,
            )
        else:
            score = np.zeros(len(cells))
        order = np.lexsort((tie, -score))
    else:
        order = np.argsort(tie, kind="stable")
    return [cells[i] for i in order[:n_keep]]


def extract_tile(image: np.ndarray, y0: int, x0: int, tile: int) -> np.ndarray:
    """The ``tile`` x ``tile`` cell at ``(y0, x0)``; a frame smaller than a tile is padded with NaN.

    NaN padding is ignored by the normalisation and becomes 0 (the sky level) in the tile the network
    sees, exactly like non-finite pixels of the frame.
    """
    cut = image[y0 : y0 + tile, x0 : x0 + tile]
    if cut.shape == (tile, tile):
        return cut
    out = np.full((tile, tile), np.nan, dtype=np.float32)
    out[: cut.shape[0], : cut.shape[1]] = cut
    return out


def prepare_tiles(image: np.ndarray, tile: int, selection: dict | None = None) -> np.ndarray:
    """Select and normalise the tiles of one frame.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Raw pixel values.
    tile : int
        Tile side (the network's input side).
    selection : dict, optional
        Selection parameters (:data:`DEFAULT_SELECTION` keys).

    Returns
    -------
    ndarray, float32, shape (N, tile, tile, 1)
        Normalised tiles, N = ``min(n_tiles, number of cells)``.

    Raises
    ------
    ValueError
        If the frame has no finite pixel or is constant (the message gives the reason).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"non-numeric or complex pixel data ({image.dtype})")
    if image.size == 0:
        raise ValueError("empty image")
    sky, noise = frame_sky(image, step=1 if image.size <= 1 << 16 else 8)
    if not np.isfinite(sky):
        raise ValueError("all pixels are NaN or infinite")
    if not noise > 0:
        with np.errstate(invalid="ignore"):
            if np.nanmax(image) == np.nanmin(image):
                raise ValueError("constant image (no noise to normalise by)")
    norm = tile_normalisation(tile)
    origins = select_tiles(image, tile, selection, sky_noise=(sky, noise))
    out = np.empty((len(origins), tile, tile, 1), np.float32)
    for i, (y0, x0) in enumerate(origins):
        cut = extract_tile(image, y0, x0, tile)
        try:
            out[i, :, :, 0] = normalize_image(cut, norm).data
        except ValueError:
            # A constant or empty tile (e.g. wholly inside a saturated core or a NaN region) in a
            # frame that is not: it carries no evidence, the network sees flat sky.
            out[i] = 0.0
    return out
