"""Background and noise maps, and the scaling that turns a frame into what the network sees.

The network input is ``compress((image - background) / sigma)`` where

* ``background`` and ``sigma`` are SExtractor-like maps: the frame is cut into meshes of
  ``mesh`` x ``mesh`` pixels; in each mesh a sigma-clipped mode (``2.5 median - 1.5 mean``, the
  median where the distribution is too skewed) and a clipped standard deviation are measured on a
  regular subsample of the pixels; the mesh grid is median filtered (so that a mesh sitting on a
  bright star or a saturated bleed does not leak into its neighbours) and interpolated to full
  resolution with a natural cubic spline through the mesh centres (separable, applied as two small
  matrix products, so the full-resolution maps are never stored).
* ``compress`` is ``asinh(x / softening)``: linear for the noise (|x| of a few sigma), logarithmic
  for bright sources, so that 1-sigma noise (~1) and a saturated star at 1e5 sigma (~12) both land
  in a range a convolutional network handles.

Why large meshes: the background must follow only what no class describes (sky gradients across the
detector). Contaminants extended over hundreds of pixels (nebulosities, halos, scattered light,
fringes) are classes the network must see; a mesh smaller than they are would subtract them. With
256-px meshes and the 3x3 median filter, structures smaller than ~500 px survive background subtraction
almost entirely while gradients over the whole detector are removed.

Non-finite pixels (NaN, +-inf) are ignored by every statistic and set to 0 (the background level) in
the output, so they never change their neighbours' values.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: The normalisation stored in the metadata of networks trained with it. Changing any value changes
#: what a network sees: give the new set another ``name``.
DEFAULT_NORMALISATION = {
    "name": "mesh_bg_sigma_v1",
    "mesh": 256,  # mesh side (pixels)
    "subsample": 4,  # statistics on every 4th pixel of every 4th row of a mesh (4096 pixels)
    "clip": 3.0,  # clipping threshold (sigma)
    "clip_iters": 5,  # clipping iterations (fixed, so that the computation is vectorised)
    "filter": 3,  # median filter over the mesh grid (meshes)
    "softening": 1.0,  # compression: asinh(x / softening), x in units of sigma
    "limit": 30.0,  # compressed values clipped to +-limit (asinh(1e13)); guards against overflow
}

_KNOWN = {"mesh_bg_sigma_v1"}
# A mesh needs this fraction of finite, unclipped pixels to be trusted; others are filled in from
# their neighbours.
_MIN_VALID_FRACTION = 0.5
# Rows of output computed per chunk: bounds the temporary memory to a few chunk-sized arrays.
_CHUNK_ROWS = 512


@dataclasses.dataclass
class Normalized:
    """A frame prepared for the network.

    Attributes
    ----------
    data : ndarray, float32, shape (H, W)
        ``compress((image - background) / sigma)``; non-finite input pixels are 0.
    n_nonfinite : int
        Number of NaN or infinite pixels in the input.
    background : float
        Median of the background mesh grid (input units).
    sigma : float
        Median of the noise mesh grid (input units).
    background_mesh, sigma_mesh : ndarray, float64, shape (ny, nx)
        The filtered mesh grids (input units), for diagnostics.
    """

    data: np.ndarray
    n_nonfinite: int
    background: float
    sigma: float
    background_mesh: np.ndarray
    sigma_mesh: np.ndarray


def _params(params):
    p = dict(DEFAULT_NORMALISATION)
    if params:
        if params.get("name", p["name"]) not in _KNOWN:
            raise ValueError(f"unknown normalisation {params.get('name')!r}")
        p.update(params)
    return p


def mesh_statistics(sample: np.ndarray, clip: float, iters: int) -> tuple:
    """Clipped background mode and standard deviation of each mesh.

    Parameters
    ----------
    sample : ndarray, float64, shape (n_meshes, n_pixels)
        Pixels of each mesh; NaN marks pixels to ignore.
    clip : float
        Pixels farther than ``clip`` standard deviations from the median are rejected at each
        iteration.
    iters : int
        Number of clipping iterations (all meshes get the same number, so it vectorises).

    Returns
    -------
    mode, std : ndarray, float64, shape (n_meshes,)
        SExtractor's mode estimate ``2.5 median - 1.5 mean`` (the median where
        ``|mean - median| > 0.3 std``, i.e. the distribution is crowded) and the clipped standard
        deviation. NaN where a mesh has no finite pixel.
    n_valid : ndarray, int, shape (n_meshes,)
        Pixels left after clipping.
    """
    x = np.sort(sample, axis=1)  # NaN sort last
    n = np.isfinite(x).sum(axis=1)
    rows = np.arange(x.shape[0])
    lo = np.zeros_like(n)
    hi = n.copy()  # the kept pixels are x[lo:hi], a contiguous range of the sorted values
    csum = np.concatenate([np.zeros((x.shape[0], 1)), np.nancumsum(x, axis=1)], axis=1)
    csum2 = np.concatenate([np.zeros((x.shape[0], 1)), np.nancumsum(x * x, axis=1)], axis=1)

    def stats(lo, hi):
        k = np.maximum(hi - lo, 1)
        mean = (csum[rows, hi] - csum[rows, lo]) / k
        var = (csum2[rows, hi] - csum2[rows, lo]) / k - mean * mean
        mid = lo + (k - 1) // 2
        mid2 = lo + k // 2
        med = 0.5 * (x[rows, np.minimum(mid, x.shape[1] - 1)] + x[rows, np.minimum(mid2, x.shape[1] - 1)])
        return mean, np.sqrt(np.maximum(var, 0.0)), med

    for _ in range(iters):
        mean, std, med = stats(lo, hi)
        # a per-row searchsorted, vectorised: count the sorted values below each bound
        lo_val = (med - clip * std)[:, None]
        hi_val = (med + clip * std)[:, None]
        with np.errstate(invalid="ignore"):
            new_lo = (x < lo_val).sum(axis=1)
            new_hi = (x <= hi_val).sum(axis=1)
        new_hi = np.minimum(new_hi, n)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    mean, std, med = stats(lo, hi)
    k = hi - lo
    crowded = np.abs(mean - med) > 0.3 * std
    mode = np.where(crowded, med, 2.5 * med - 1.5 * mean)
    empty = k == 0
    mode[empty] = np.nan
    std[empty] = np.nan
    return mode, std, k


def _fill_invalid(grid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid meshes by the nearest valid one."""
    if valid.all():
        return grid
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return grid[iy, ix]


def _spline_matrix(n_mesh: int, mesh: int, n_pix: int) -> np.ndarray:
    """Weights (n_pix, n_mesh) interpolating values at mesh centres to every pixel.

    Natural cubic spline through the centres, held constant beyond the first and last centre
    (extrapolating a cubic would amplify the edge meshes' noise).
    """
    if n_mesh == 1:
        return np.ones((n_pix, 1))
    centres = (np.arange(n_mesh) + 0.5) * mesh - 0.5
    # the last mesh may be partial: centre it on the pixels it really holds
    centres[-1] = 0.5 * ((n_mesh - 1) * mesh + n_pix - 1)
    pix = np.clip(np.arange(n_pix, dtype=np.float64), centres[0], centres[-1])
    if n_mesh < 4:
        w = np.empty((n_pix, n_mesh))
        eye = np.eye(n_mesh)
        for j in range(n_mesh):
            w[:, j] = np.interp(pix, centres, eye[j])
        return w
    from scipy.interpolate import CubicSpline

    w = CubicSpline(centres, np.eye(n_mesh), bc_type="natural")(pix)
    # far-away weights decay to subnormal numbers, which slow the matrix products down tenfold
    w[np.abs(w) < 1e-9] = 0.0
    return w


def _asinh(x: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """``out = asinh(x)`` as ``sign(x) log(|x| + sqrt(x^2 + 1))``.

    numpy's ``arcsinh`` takes a slow path for |x| of order 1 (0.9 s for 16 Mpix of unit noise);
    this form uses the vectorised ``log`` (0.07 s) and is exact to 2e-7 (absolute) in float32.
    """
    np.abs(x, out=tmp)
    np.multiply(tmp, tmp, out=out)
    out += 1.0
    np.sqrt(out, out=out)
    out += tmp
    np.log(out, out=out)
    np.copysign(out, x, out=out)


def background_meshes(image: np.ndarray, finite: np.ndarray, p: dict) -> tuple:
    """Filtered background and noise mesh grids (input units), shape (ny, nx) each."""
    h, w = image.shape
    mesh, sub = int(p["mesh"]), int(p["subsample"])
    # Small frames: meshes no larger than the frame, and never fewer than ~1000 sampled pixels.
    mesh = max(min(mesh, max(h, w)), 1)
    sub = max(1, min(sub, mesh // 32 or 1))
    ny, nx = -(-h // mesh), -(-w // mesh)
    # Subsample on a regular grid, pad with NaN to whole meshes, and put each mesh's pixels on a row.
    s = image[::sub, ::sub].astype(np.float64)
    s[~finite[::sub, ::sub]] = np.nan
    m = -(-mesh // sub)
    padded = np.full((ny * m, nx * m), np.nan)
    padded[: s.shape[0], : s.shape[1]] = s
    blocks = padded.reshape(ny, m, nx, m).transpose(0, 2, 1, 3).reshape(ny * nx, m * m)
    mode, std, k = mesh_statistics(blocks, float(p["clip"]), int(p["clip_iters"]))
    n_in = np.isfinite(blocks).sum(axis=1)
    # expected pixels per mesh (edge meshes are partial)
    rows_in = np.minimum(m, s.shape[0] - np.arange(ny) * m)
    cols_in = np.minimum(m, s.shape[1] - np.arange(nx) * m)
    n_exp = (rows_in[:, None] * cols_in[None, :]).ravel()
    valid = (n_in >= _MIN_VALID_FRACTION * n_exp) & np.isfinite(std) & (std > 0)
    valid &= k >= 0.5 * np.maximum(n_in, 1) * _MIN_VALID_FRACTION  # not mostly clipped away
    if not valid.any():
        # no mesh is trustworthy (e.g. mostly constant): fall back to global statistics
        finite_vals = blocks[np.isfinite(blocks)]
        if finite_vals.size == 0:
            raise ValueError("no finite pixel")
        gm, gs, _ = mesh_statistics(finite_vals[None, :], float(p["clip"]), int(p["clip_iters"]))
        if not (np.isfinite(gs[0]) and gs[0] > 0):
            gs = np.array([np.std(image[finite], dtype=np.float64)])
            gm = np.array([np.median(image[finite])])
        if not (np.isfinite(gs[0]) and gs[0] > 0):
            raise ValueError("constant image (no noise to normalise by)")
        return np.full((ny, nx), gm[0]), np.full((ny, nx), gs[0]), mesh
    valid = valid.reshape(ny, nx)
    bg = _fill_invalid(mode.reshape(ny, nx), valid)
    sg = _fill_invalid(std.reshape(ny, nx), valid)
    f = int(p["filter"])
    if f > 1 and (ny > 1 or nx > 1):
        # imported here: scipy.ndimage costs 0.6 s to import, and maxitrack's one-mesh tiles never filter
        from scipy import ndimage

        bg = ndimage.median_filter(bg, size=(min(f, ny), min(f, nx)), mode="nearest")
        sg = ndimage.median_filter(sg, size=(min(f, ny), min(f, nx)), mode="nearest")
    return bg, sg, mesh


def normalize_image(image, params: dict | None = None) -> Normalized:
    """Prepare a frame for the network.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Pixel values (any real dtype; ADU or e-). NaN and infinite values allowed.
    params : dict, optional
        The ``normalisation`` entry of the network metadata; default :data:`DEFAULT_NORMALISATION`.

    Returns
    -------
    Normalized

    Raises
    ------
    ValueError
        If the image is not 2D, has no finite pixel, or is constant (the reason is in the message;
        the caller adds the file name).
    """
    p = _params(params)
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"non-numeric or complex pixel data ({image.dtype})")
    if image.size == 0:
        raise ValueError("empty image")
    # float32 everywhere except float64 input, whose full precision is kept through the subtraction
    work = np.float64 if image.dtype == np.float64 else np.float32
    finite = np.isfinite(image)
    n_nonfinite = int(image.size - np.count_nonzero(finite))
    if n_nonfinite == image.size:
        raise ValueError("all pixels are NaN or infinite")
    bg, sg, mesh = background_meshes(image, finite, p)
    h, w = image.shape
    ry = _spline_matrix(bg.shape[0], mesh, h)
    rx = _spline_matrix(bg.shape[1], mesh, w)
    # (ny, nx) @ (nx, W): the grids interpolated along x, then along y chunk by chunk
    bg_x = (bg @ rx.T).astype(work)
    # interpolate 1/sigma: the division becomes a multiplication
    isg_x = ((1.0 / sg) @ rx.T).astype(work)
    ry = ry.astype(work)
    soft = float(p["softening"])
    lim = float(p["limit"])
    out = np.empty((h, w), np.float32)
    rows = min(h, _CHUNK_ROWS)
    x = np.empty((rows, w), work)
    m = np.empty((rows, w), work)
    x32 = x if work == np.float32 else np.empty((rows, w), np.float32)
    tmp = np.empty((rows, w), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            n = y1 - y0
            np.matmul(ry[y0:y1], bg_x, out=m[:n])
            np.subtract(image[y0:y1], m[:n], out=x[:n], casting="unsafe")
            np.matmul(ry[y0:y1], isg_x, out=m[:n])
            x[:n] *= m[:n]
            if soft != 1.0:
                x[:n] *= 1.0 / soft
            if x32 is not x:
                x32[:n] = x[:n]
            o = out[y0:y1]
            _asinh(x32[:n], o, tmp[:n])
            np.clip(o, -lim, lim, out=o)
            if n_nonfinite:
                o[~finite[y0:y1]] = 0.0
    return Normalized(
        data=out,
        n_nonfinite=n_nonfinite,
        background=float(np.median(bg)),
        sigma=float(np.median(sg)),
        background_mesh=bg,
        sigma_mesh=sg,
    )
