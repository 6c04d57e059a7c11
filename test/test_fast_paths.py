"""The numpy fast paths of the command against their plain definitions: the mesh interpolation
and median filter against scipy, and the fused per-tile write against a transform followed by a
copy, byte for byte."""

import numpy as np
import pytest

from maximask import postprocess
from maximask.classes import ABBRS, N_CLASSES
from maximask.engine import _write, infer, sigmoid_planes
from maximask.network import NetworkMetadata
from maximask.normalize import DEFAULT_NORMALISATION, _median_filter, _spline_matrix
from maximask.postprocess import make_plan, transform, write_tile

TRAIN = [0.01] * (N_CLASSES - 1) + [0.9]


def scipy_weights(n_mesh, mesh, n_pix, at):
    """The interpolation weights as scipy computes them (what the command used before)."""
    interpolate = pytest.importorskip("scipy.interpolate")
    if n_mesh == 1:
        return np.ones((len(at), 1))
    # mesh centres, the last one on the pixels a partial last mesh holds (never beyond the regular
    # centre, hence the minimum, which leaves the other centres alone)
    knots = np.minimum((np.arange(n_mesh) + 0.5) * mesh - 0.5, 0.5 * ((n_mesh - 1) * mesh + n_pix - 1))
    unit = np.eye(n_mesh)
    if n_mesh < 4:
        return interpolate.interp1d(knots, unit, axis=0, fill_value="extrapolate")(at)
    w = interpolate.CubicSpline(knots, unit, bc_type="natural")(at)
    w[np.abs(w) < 1e-9] = 0.0
    return w


@pytest.mark.parametrize("mesh,n_pix", [(64, 50), (64, 100), (64, 192), (100, 399), (100, 401), (32, 289),
                                        (128, 700), (256, 4000), (256, 4096)])
def test_spline_weights_at_any_position_equal_scipy(mesh, n_pix):
    """1 to 16 meshes, the last one partial or not (401 px: a one-pixel last mesh); knot rows,
    fractional positions and extrapolation beyond both ends; equal to rounding."""
    n_mesh = -(-n_pix // mesh)
    at = np.concatenate([np.arange(0, n_pix + 8, 8), [-40.5, -0.25, 0.5, n_pix - 0.75, n_pix + 33.0]])
    got = _spline_matrix(n_mesh, mesh, n_pix, at=at)
    np.testing.assert_allclose(got, scipy_weights(n_mesh, mesh, n_pix, at), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 2), (3, 8), (6, 6), (16, 17)])
def test_five_mesh_median_filter_equals_scipy(shape):
    ndimage = pytest.importorskip("scipy.ndimage")
    grid = np.random.default_rng(shape[1]).normal(size=shape)
    grid[0, 0] = grid[-1, -1]  # ties
    padded = np.pad(grid, 2, mode="reflect", reflect_type="odd")
    expected = ndimage.median_filter(padded, size=5)[2:-2, 2:-2]
    np.testing.assert_array_equal(_median_filter(grid, 5), expected)


def logits(h, w, seed=0):
    """Logits of a tile's core: a view into a larger, margin-padded buffer (as the engine has them),
    with the extremes: overflowing exponentials, +-inf, NaN, signed zeros, thresholds themselves."""
    rng = np.random.default_rng(seed)
    buf = rng.normal(-4.0, 6.0, (h + 5, w + 7, N_CLASSES)).astype(np.float32)
    core = buf[2 : 2 + h, 3 : 3 + w]
    special = np.array([-1e4, -88.8, -87.0, -0.0, 0.0, 17.0, 1e4, np.inf, -np.inf, np.nan], np.float32)
    core[0, : special.size] = special[:, None]  # in every channel
    return core


def plans():
    flags = np.ones(N_CLASSES, bool)
    some = np.zeros(N_CLASSES, bool)
    some[[0, 3, 4, 9, 13]] = True  # not consecutive
    run = np.zeros(N_CLASSES, bool)
    run[2:6] = True  # consecutive
    priors = np.linspace(0.001, 0.9, N_CLASSES)
    thresh = np.linspace(0.05, 0.95, N_CLASSES)
    thresh[1] = 0.0  # every pixel
    thresh[2] = 1.0  # none
    return {
        "masks": make_plan(ABBRS, flags, TRAIN, priors, thresh),
        "masks, no prior": make_plan(ABBRS, flags, thresholds=thresh),
        "masks, some classes": make_plan(ABBRS, some, TRAIN, priors, thresh),
        "masks, consecutive classes": make_plan(ABBRS, run, TRAIN, priors, thresh),
        "single mask": make_plan(ABBRS, flags, TRAIN, priors, thresh, single_mask=True),
        "single mask, some classes": make_plan(ABBRS, some, TRAIN, priors, thresh, single_mask=True),
        "probabilities": make_plan(ABBRS, flags),
        "probabilities, prior": make_plan(ABBRS, flags, TRAIN, priors),
        "probabilities, some classes, prior": make_plan(ABBRS, some, TRAIN, priors),
    }


def reference(plan, z):
    """The plan's output by its definition, plane by plane (the transform before the fused write)."""
    planes = []
    for c, s in zip(plan.channels, plan.shift):
        zc = np.ascontiguousarray(z[:, :, c])
        if plan.mode == postprocess.PROBABILITIES:
            p = -(zc + s) if s else -zc
            with np.errstate(over="ignore"):
                p = 1.0 / (np.exp(p) + np.float32(1.0))
            planes.append(p)
        else:
            planes.append(zc > plan.channel_thresholds[c])
    if plan.mode == postprocess.SINGLE_MASK:
        return sum(p.astype(np.int16) * plan.channel_bits[c] for p, c in zip(planes, plan.channels)).astype(np.int16)
    return np.stack(planes).astype(plan.dtype)


def assert_same_bytes(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("block_bytes", [None, 1, 3000])
@pytest.mark.parametrize("name", list(plans()))
def test_fused_write_equals_transform_then_copy(name, block_bytes, monkeypatch):
    """``write_into`` leaves the output byte for byte as the reference transform and a copy do,
    around the core too, with one-row blocks, a few rows and the default."""
    if block_bytes is not None:
        monkeypatch.setattr(postprocess, "_BLOCK_BYTES", block_bytes)
    plan = plans()[name]
    z = logits(37, 23)
    if plan.channel_thresholds is not None:
        z[1, 0] = plan.channel_thresholds  # logits at the thresholds are not over them
    core = (slice(5, 42), slice(11, 34))
    expected = np.full(plan.output_shape((50, 40)), 7, plan.dtype)
    _write(expected, core, reference(plan, z))
    got = np.full_like(expected, 7)
    plan.write_into(got, core, z)
    assert_same_bytes(got, expected)
    assert_same_bytes(transform(plan, z), reference(plan, z))
    # a cube plane's output is a view into the cube
    cube = np.full((2,) + expected.shape, 7, plan.dtype)
    write_tile(plan, cube[1], core, z)
    assert_same_bytes(cube[1], expected)
    assert (cube[0] == 7).all()


def test_probabilities_within_a_few_float32_ulps():
    """numpy's float32 exp is within 2.5 ulps, so the sigmoid within 4 of the correctly rounded
    value (measured: 3; scipy's expit, which the command used before, is within 2 and within 4 of
    this one); 0 below -88 (where the exact value is below the smallest normal float32) and 1 at
    the top, without a warning."""
    z = logits(64, 64, seed=3)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = sigmoid_planes(z)
    with np.errstate(over="ignore"):
        exact = np.moveaxis(1.0 / (1.0 + np.exp(-z.astype(np.float64))), -1, 0).astype(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(exact))
    normal = exact >= np.finfo(np.float32).tiny
    ulps = np.abs(got[normal].view(np.int32).astype(np.int64) - exact[normal].view(np.int32))
    assert ulps.max() <= 4
    assert (got[~normal & ~np.isnan(exact)] < np.finfo(np.float32).tiny).all()
    assert np.nanmin(got) == 0.0 and np.nanmax(got) == 1.0


class StubNetwork:
    """Fixed random logits, so that the engine's writes can be compared over a whole frame."""

    def __init__(self, tile=96, margin=16):
        self.metadata = NetworkMetadata(name="stub", classes=list(ABBRS), training_priors=TRAIN, margin=margin,
                                        tile_size=tile, size_multiple=8, normalisation=dict(DEFAULT_NORMALISATION))
        self._logits = logits(tile, tile, seed=5)

    def predict_logits(self, batch, copy=True, margin=0):
        return np.broadcast_to(self._logits, (len(batch),) + self._logits.shape)


@pytest.mark.parametrize("name", ["masks", "single mask", "probabilities, prior", "masks, some classes"])
def test_engine_writes_plans_as_copies_of_their_transform(name):
    """The engine's fused path (the plan's ``write_into``) against the generic path (a plain
    callable whose result is copied), over a frame of several tiles with partial last ones."""
    plan = plans()[name]
    image = np.random.default_rng(1).normal(100.0, 3.0, (150, 170)).astype(np.float32)
    fused = infer(image, StubNetwork(), tile_transform=plan)
    copied = infer(image, StubNetwork(), tile_transform=lambda lg: transform(plan, lg))
    assert_same_bytes(fused, copied)
    # the engine's default (fused probabilities of every channel) likewise
    every = make_plan(ABBRS, np.ones(N_CLASSES, bool))
    assert_same_bytes(infer(image, StubNetwork()), infer(image, StubNetwork(), tile_transform=lambda lg: reference(every, lg)))
