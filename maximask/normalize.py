"""Background and noise maps, and the scaling that turns a frame into what the network sees.

The network input is ``compress((image - background) / sigma)`` where

* ``background`` and ``sigma`` are SExtractor-like maps: the frame is cut into meshes of
  ``mesh`` x ``mesh`` pixels; in each mesh a sigma-clipped mode (``2.5 median - 1.5 mean``, the
  median where the distribution is too skewed) and a clipped standard deviation are measured on a
  regular subsample of the pixels; the mesh grid is median filtered (so that a mesh sitting on a
  bright star or a saturated bleed does not leak into its neighbours) and interpolated to full
  resolution with a natural cubic spline through the mesh centres (applied chunk by chunk, so the
  full-resolution maps are never stored).
* ``compress`` is ``asinh(x / softening)``: linear for the noise (|x| of a few sigma), logarithmic
  for bright sources, so that 1-sigma noise (~1) and a saturated star at 1e5 sigma (~12) both land
  in a range a convolutional network handles.

Why large meshes: the background must follow only what no class describes (sky gradients across the
detector). Contaminants extended over hundreds of pixels (nebulosities, halos, scattered light,
fringes) are classes the network must see; a mesh smaller than they are would subtract them, a mesh
much larger would leave vignetting in. ``benchmarks/normalisation.py --mesh-scan`` measures both
on a 4096^2 frame with 10 % vignetting: 256-px meshes keep the background error at its floor
(0.05 sigma rms; 0.12 at 384 px, 0.21 at 512 px) while keeping 97 % of a 100-px (FWHM) nebulosity,
76 % of a 300-px one and 41 % of a 600-px one (64-px meshes: 79 %, 11 %, 0 %).

Why not ``sep`` (SExtractor's background in C): measured on a 4096^2 frame, its ``Background`` alone
takes twice the CPU time of our mesh statistics (it reads every pixel; a 1/25 subsample gives the
same accuracy), it needs a separate mask for NaN/inf and native byte order, and it returns full-size
maps that we then have to read again (``benchmarks/normalisation.py``).

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
    "subsample": 5,  # statistics on every 5th pixel of every 5th row of a mesh (2704 pixels)
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
# Rows per element-wise chunk (64 x 4096 float32 = 1 MB: the operands of the seven passes of the
# scaling stay in L2 cache; 512-row chunks take twice as long).
_CHUNK_ROWS = 64
# Rows between exact evaluations of the background spline (see _MapRows); divides _CHUNK_ROWS.
_KNOT_ROWS = 8


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

    The first cut is ``median +- clip * sigma_q`` with the quantile width
    ``sigma_q = (q84.13 - q15.87) / 2`` (robust to any outlier, even 1e300); then, ``iters``
    times at most, ``median +- clip * std`` of the pixels kept.

    Parameters
    ----------
    sample : ndarray, float64, shape (n_meshes, n_pixels)
        Pixels of each mesh; NaN marks pixels to ignore.
    clip : float
        Clipping threshold (standard deviations).
    iters : int
        Maximum number of clipping iterations after the first cut (the same for all meshes, so the
        loop is over iterations, never over meshes).

    Returns
    -------
    mode, std : ndarray, float64, shape (n_meshes,)
        SExtractor's mode estimate ``2.5 median - 1.5 mean`` (the median where
        ``|mean - median| > 0.3 std``, i.e. the mesh is crowded) and the clipped standard
        deviation. NaN where a mesh has no finite pixel.
    n_kept : ndarray, int, shape (n_meshes,)
        Pixels left after clipping.
    """
    x = np.sort(sample, axis=1)  # NaN sort last: the finite values are x[:, :n]
    n_rows, width = x.shape
    n = np.isfinite(x).sum(axis=1)
    rows = np.arange(n_rows)
    last = np.maximum(n - 1, 0)

    def at(q):  # the q-quantile of the finite values (nearest rank)
        return x[rows, np.round(q * last).astype(int)]

    # centre each mesh on its median: cumulative sums of squares then lose no precision on frames
    # with a large offset, and clamping far outliers keeps the squares finite
    centre = np.nan_to_num(at(0.5))
    x -= centre[:, None]
    np.clip(x, -1e30, 1e30, out=x)
    zeros = np.zeros((n_rows, 1))
    csum = np.concatenate([zeros, np.nancumsum(x, axis=1)], axis=1)
    csum2 = np.concatenate([zeros, np.nancumsum(x * x, axis=1)], axis=1)

    def stats(lo, hi):  # mean, std, median of the kept range x[lo:hi] of each row
        k = np.maximum(hi - lo, 1)
        mean = (csum[rows, hi] - csum[rows, lo]) / k
        var = (csum2[rows, hi] - csum2[rows, lo]) / k - mean * mean
        a = np.minimum(lo + (k - 1) // 2, width - 1)
        b = np.minimum(lo + k // 2, width - 1)
        return mean, np.sqrt(np.maximum(var, 0.0)), 0.5 * (x[rows, a] + x[rows, b])

    def cut(med, width_):  # a per-row searchsorted, vectorised: count values below each bound
        with np.errstate(invalid="ignore"):
            lo = (x < (med - clip * width_)[:, None]).sum(axis=1)
            hi = (x <= (med + clip * width_)[:, None]).sum(axis=1)
        return lo, np.minimum(hi, n)

    sigma_q = 0.5 * (at(0.8413) - at(0.1587))
    lo, hi = cut(at(0.5), sigma_q)
    for _ in range(iters):
        mean, std, med = stats(lo, hi)
        new_lo, new_hi = cut(med, std)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    mean, std, med = stats(lo, hi)
    kept = hi - lo
    crowded = np.abs(mean - med) > 0.3 * std
    mode = np.where(crowded, med, 2.5 * med - 1.5 * mean) + centre
    empty = kept == 0
    mode[empty] = np.nan
    std[empty] = np.nan
    return mode, std, kept


def _fill_invalid(grid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid meshes by the nearest valid one."""
    if valid.all():
        return grid
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return grid[iy, ix]


def _spline_matrix(n_mesh: int, mesh: int, n_pix: int, at=None) -> np.ndarray:
    """Weights (len(at), n_mesh) interpolating values at mesh centres to pixel positions ``at``.

    Natural cubic spline through the centres (linear below 4 meshes), extrapolated over the half
    mesh beyond the first and last centre so that a gradient continues to the frame edge.
    ``at`` defaults to every pixel, ``0 .. n_pix - 1``.
    """
    pix = np.arange(n_pix, dtype=np.float64) if at is None else np.asarray(at, dtype=np.float64)
    if n_mesh == 1:
        return np.ones((pix.size, 1))
    centres = (np.arange(n_mesh) + 0.5) * mesh - 0.5
    # the last mesh may be partial: centre it on the pixels it really holds
    centres[-1] = 0.5 * ((n_mesh - 1) * mesh + n_pix - 1)
    # interval of each position; the end intervals extend beyond the end centres (extrapolation)
    i = np.clip(np.searchsorted(centres, pix, side="right") - 1, 0, n_mesh - 2)
    h = np.diff(centres)
    t = pix - centres[i]
    if n_mesh < 4:
        u = t / h[i]
        w = np.zeros((pix.size, n_mesh))
        rows = np.arange(pix.size)
        w[rows, i] = 1.0 - u
        w[rows, i + 1] = u
        return w
    w = _natural_spline_weights(centres, h, i, t)
    # far-away weights decay to subnormal numbers, which slow the matrix products down tenfold
    w[np.abs(w) < 1e-9] = 0.0
    return w


def _natural_spline_weights(x: np.ndarray, h: np.ndarray, i: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Weights (len(t), n) of the natural cubic spline through knots ``x`` (spacings ``h``), at the
    offsets ``t`` from knot ``i``: the spline of data ``y`` there is ``weights @ y``.

    The spline is linear in its data, so it is built for the n unit vectors at once (as scipy's
    ``CubicSpline(x, eye(n), bc_type="natural")`` would, extrapolating with the end polynomials) in
    numpy alone: importing scipy.interpolate costs 0.3 s per command.
    """
    n = x.size
    eye = np.eye(n)
    # slopes of the data on each interval, as linear maps of y: (n-1, n)
    slope = (eye[1:] - eye[:-1]) / h[:, None]
    # second derivatives M (M_0 = M_{n-1} = 0) from the continuity of the first derivative
    a = np.zeros((n - 2, n - 2))
    k = np.arange(n - 2)
    a[k, k] = 2.0 * (h[:-1] + h[1:])
    a[k[1:], k[:-1]] = h[1:-1]
    a[k[:-1], k[1:]] = h[1:-1]
    m = np.zeros((n, n))
    m[1:-1] = np.linalg.solve(a, 6.0 * (slope[1:] - slope[:-1]))
    hi = h[i][:, None]
    tt = t[:, None]
    b = slope[i] - hi * (2.0 * m[i] + m[i + 1]) / 6.0
    return eye[i] + tt * (b + tt * (m[i] / 2.0 + tt * (m[i + 1] - m[i]) / (6.0 * hi)))


class _MapRows:
    """Rows of the interpolated background and 1/sigma maps, computed chunk by chunk.

    The spline is evaluated exactly along x and every ``_KNOT_ROWS`` rows along y; rows in between
    are linearly interpolated (error below 1e-3 sigma for a mesh-scale spline). No matrix product
    runs per chunk: multi-threaded BLAS calls on a busy 2-core machine cost more than they save,
    and their spinning threads would slow the network's threads that follow.
    """

    def __init__(self, bg, sg, mesh, shape, dtype):
        h, w = shape
        k = _KNOT_ROWS
        knots = np.arange(-(-h // k) + 1) * k  # rows 0, k, 2k, ... up to >= h
        ry = _spline_matrix(bg.shape[0], mesh, h, at=knots)
        rx = _spline_matrix(bg.shape[1], mesh, w)
        # einsum: small products in numpy's own loops, no BLAS thread pool
        self.bg = np.einsum("yj,jx->yx", np.einsum("yi,ij->yj", ry, bg), rx.T).astype(dtype)
        self.isg = np.einsum("yj,jx->yx", np.einsum("yi,ij->yj", ry, 1.0 / sg), rx.T).astype(dtype)
        self.dbg = np.diff(self.bg, axis=0)
        self.disg = np.diff(self.isg, axis=0)
        self.frac = (np.arange(k) / k).astype(dtype)[None, :, None]

    def fill(self, which: str, y0: int, y1: int, out: np.ndarray) -> np.ndarray:
        """Rows ``y0:y1`` (``y0`` a multiple of ``_KNOT_ROWS``) of ``"bg"`` or ``"isg"`` into ``out``."""
        k = _KNOT_ROWS
        base, diff = (self.bg, self.dbg) if which == "bg" else (self.isg, self.disg)
        g = -(-(y1 - y0) // k)
        k0 = y0 // k
        view = out[: g * k].reshape(g, k, -1)
        np.multiply(diff[k0 : k0 + g, None, :], self.frac, out=view)
        view += base[k0 : k0 + g, None, :]
        return out[: y1 - y0]


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


def _mesh_index(n: int, mesh: int, sub: int) -> tuple:
    """Sampled pixel indices along one axis, grouped by mesh: (n_mesh * m,), validity, m."""
    n_mesh = -(-n // mesh)
    offs = np.arange(sub // 2, mesh, sub)
    idx = (np.arange(n_mesh)[:, None] * mesh + offs[None, :]).ravel()
    return np.minimum(idx, n - 1), idx < n, offs.size


def background_meshes(image: np.ndarray, finite: np.ndarray, p: dict) -> tuple:
    """Filtered background and noise mesh grids.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    finite : ndarray, bool, shape (H, W)
        ``np.isfinite(image)``.
    p : dict
        Normalisation parameters.

    Returns
    -------
    background, sigma : ndarray, float64, shape (ny, nx)
        Input units.
    mesh : int
        Mesh side used (smaller than ``p["mesh"]`` for frames smaller than a mesh).
    """
    # scipy.ndimage (0.6 s to import) is imported only where needed: maxitrack's one-mesh tiles
    # never use it
    h, w = image.shape
    mesh = max(1, min(int(p["mesh"]), max(h, w)))
    # keep >= ~1000 samples per mesh in small frames
    sub = max(1, min(int(p["subsample"]), mesh // 32))
    iy, vy, my = _mesh_index(h, mesh, sub)
    ix, vx, mx = _mesh_index(w, mesh, sub)
    ny, nx = iy.size // my, ix.size // mx
    # every sub-th pixel of every sub-th row, laid out mesh by mesh; an odd stride does not alias
    # with the period-2 patterns of interlaced readouts or bad alternate rows
    s = image[np.ix_(iy, ix)].astype(np.float64)
    s[~(finite[np.ix_(iy, ix)] & vy[:, None] & vx[None, :])] = np.nan
    blocks = s.reshape(ny, my, nx, mx).transpose(0, 2, 1, 3).reshape(ny * nx, my * mx)
    clip, iters = float(p["clip"]), int(p["clip_iters"])
    mode, std, kept = mesh_statistics(blocks, clip, iters)
    n_in = np.isfinite(blocks).sum(axis=1)
    n_exp = np.outer(vy.reshape(ny, my).sum(1), vx.reshape(nx, mx).sum(1)).ravel()
    # a mesh is trusted when mostly made of finite pixels, mostly kept by the clipping, and noisy
    valid = (n_in >= _MIN_VALID_FRACTION * n_exp) & (kept >= _MIN_VALID_FRACTION * n_in)
    valid &= np.isfinite(std) & (std > 0)
    if not valid.any():
        # no trustworthy mesh (e.g. a mostly constant frame): global statistics of every pixel
        vals = image[finite].astype(np.float64)[None, :]
        gm, gs, _ = mesh_statistics(vals, clip, iters)
        if not (np.isfinite(gs[0]) and gs[0] > 0):
            gm, gs = np.median(vals, axis=1), np.std(vals, axis=1)
        if not (np.isfinite(gs[0]) and gs[0] > 0):
            raise ValueError("constant image (no noise to normalise by)")
        return np.full((ny, nx), gm[0]), np.full((ny, nx), gs[0]), mesh
    valid = valid.reshape(ny, nx)
    bg = _fill_invalid(mode.reshape(ny, nx), valid)
    sg = _fill_invalid(std.reshape(ny, nx), valid)
    f = int(p["filter"])
    return _median_filter(bg, f), _median_filter(sg, f), mesh


def _median_filter(grid: np.ndarray, size: int) -> np.ndarray:
    """Median filter of a mesh grid that keeps gradients up to the edges.

    The grid is padded by point reflection (linear extrapolation), so that a plane is left
    unchanged; edge replication would bias edge meshes by up to a mesh's worth of gradient.
    """
    r = size // 2
    pad = [(r, r) if n > 1 else (0, 0) for n in grid.shape]
    if r == 0 or grid.size == 1:
        return grid
    padded = np.pad(grid, pad, mode="reflect", reflect_type="odd")
    # the grid is small (16 x 16 meshes for 4096^2): numpy's windows instead of scipy.ndimage,
    # whose import alone (0.4 s) would cost more than the command's normalisation
    windows = np.lib.stride_tricks.sliding_window_view(padded, [2 * a + 1 for a, _ in pad])
    return np.median(windows.reshape(grid.shape + (-1,)), axis=-1)


def background_maps(image, params: dict | None = None) -> tuple:
    """Full-resolution background and noise maps (for diagnostics and benchmarks).

    :func:`normalize_image` never builds these maps; it applies the same interpolation chunk by
    chunk.

    Parameters
    ----------
    image : array_like, shape (H, W)
    params : dict, optional
        Normalisation parameters (default :data:`DEFAULT_NORMALISATION`).

    Returns
    -------
    background, sigma : ndarray, float32, shape (H, W)
        Input units; ``sigma`` is the reciprocal of the interpolated ``1 / sigma`` map, as used.
    """
    p = _params(params)
    image = np.asarray(image)
    finite = np.isfinite(image)
    if not finite.any():
        raise ValueError("all pixels are NaN or infinite")
    bg, sg, mesh = background_meshes(image, finite, p)
    h, w = image.shape
    maps = _MapRows(bg, sg, mesh, (h, w), np.float64)
    hk = -(-h // _KNOT_ROWS) * _KNOT_ROWS
    b = maps.fill("bg", 0, h, np.empty((hk, w)))
    s = maps.fill("isg", 0, h, np.empty((hk, w)))
    return b.astype(np.float32), (1.0 / s).astype(np.float32)


def check_image(image) -> np.ndarray:
    """The image as an array, or ValueError if no network can read it.

    Parameters
    ----------
    image : array_like
        Expected: a non-empty 2D array of real numbers.

    Raises
    ------
    ValueError
        Not 2D, non-numeric or complex, or empty (the caller adds the file name).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"non-numeric or complex pixel data ({image.dtype})")
    if image.size == 0:
        raise ValueError("empty image")
    return image


def normalize_image(image, params: dict | None = None, overwrite_input: bool = False) -> Normalized:
    """Prepare a frame for the network.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Pixel values (any real dtype; ADU or e-). NaN and infinite values allowed.
    params : dict, optional
        The ``normalisation`` entry of the network metadata; default :data:`DEFAULT_NORMALISATION`.
    overwrite_input : bool
        Write the result into ``image`` itself when it is a writeable C-contiguous float32 array
        (the caller no longer needs the pixels): a 4096^2 frame then takes 64 MB less memory.

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
    image = check_image(image)
    # float32 everywhere except float64 input, whose full precision is kept through the subtraction
    work = np.float64 if image.dtype == np.float64 else np.float32
    finite = np.isfinite(image)
    n_nonfinite = int(image.size - np.count_nonzero(finite))
    if n_nonfinite == image.size:
        raise ValueError("all pixels are NaN or infinite")
    bg, sg, mesh = background_meshes(image, finite, p)
    h, w = image.shape
    maps = _MapRows(bg, sg, mesh, (h, w), work)
    # in place is safe: each chunk of rows is read into x before the same rows of out are written
    in_place = (overwrite_input and isinstance(image, np.ndarray) and image.dtype == np.float32
                and image.flags.c_contiguous and image.flags.writeable)
    out = image if in_place else np.empty((h, w), np.float32)
    # element-wise passes on _CHUNK_ROWS rows at a time, so that their operands stay in cache
    rows = min(-(-h // _KNOT_ROWS) * _KNOT_ROWS, _CHUNK_ROWS)
    x = np.empty((rows, w), work)
    m = np.empty((rows, w), work)
    x32 = x if work == np.float32 else np.empty((rows, w), np.float32)
    tmp = np.empty((rows, w), np.float32)
    scale = 1.0 / float(p["softening"])
    lim = float(p["limit"])
    with np.errstate(invalid="ignore", over="ignore"):
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            n = y1 - y0
            np.subtract(image[y0:y1], maps.fill("bg", y0, y1, m), out=x[:n], casting="unsafe")
            x[:n] *= maps.fill("isg", y0, y1, m)
            if scale != 1.0:
                x[:n] *= scale
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
