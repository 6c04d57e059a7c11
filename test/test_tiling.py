"""Tile plan geometry: cores tile the frame once, overlap is exactly the margin, offsets aligned."""

import numpy as np
import pytest

from maximask.tiling import fitted_tile_size, plan_tiles

GEOMETRIES = [(64, 10, 4), (64, 8, 8), (512, 48, 16), (32, 0, 1), (33, 5, 1)]
SHAPES = [(1, 1), (100, 80), (64, 64), (44, 44), (45, 200), (300, 131), (7, 513)]


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_cores_cover_every_pixel_once(shape, geom):
    t, m, s = geom
    plan = plan_tiles(shape, t, m, s)
    count = np.zeros(shape, int)
    for tile in plan.tiles:
        count[tile.core] += 1
        ys, xs = tile.core
        iy, ix = tile.inner
        assert (iy.stop - iy.start, ix.stop - ix.start) == (ys.stop - ys.start, xs.stop - xs.start)
        # the core sits at the same place in the canvas and in the tile
        assert tile.y0 + iy.start == ys.start + m and tile.x0 + ix.start == xs.start + m
    assert (count == 1).all()


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_offsets_aligned_and_overlap_is_twice_the_margin(geom):
    t, m, s = geom
    plan = plan_tiles((1000, 700), t, m, s)
    assert all(tile.y0 % s == 0 and tile.x0 % s == 0 for tile in plan.tiles)
    ys = sorted({tile.y0 for tile in plan.tiles})
    steps = set(np.diff(ys))
    assert steps == {plan.step}
    if (t - 2 * m) % s == 0:
        assert t - plan.step == 2 * m  # overlap exactly the context needed, nothing more
    else:
        assert 2 * m < t - plan.step < 2 * m + s
    hc, wc = plan.canvas_shape
    assert hc % s == 0 and wc % s == 0
    assert hc >= 1000 + 2 * m and wc >= 700 + 2 * m
    # every tile lies inside the canvas; the last ones end on its edge
    assert max(tile.y0 for tile in plan.tiles) + t == hc


def test_each_pixel_computed_about_once():
    """MaxiMask computes every pixel ~4 times (400-px tiles overlapping by half); we do not."""
    plan = plan_tiles((4096, 4096), 512, 48, 16)
    computed = len(plan) * 512**2
    # (T / (T - 2M))^2 = 1.51 from the margins, plus the partial last row and column of tiles
    assert computed / 4096**2 < 1.7


@pytest.mark.parametrize("shape", [(1, 1), (44, 44), (30, 44)])
def test_small_frame_is_one_padded_tile(shape):
    plan = plan_tiles(shape, 64, 10, 4)
    assert len(plan) == 1
    assert plan.canvas_shape == (64, 64)
    tile = plan.tiles[0]
    assert (tile.y0, tile.x0) == (0, 0)


def test_100x80_with_large_tiles_one_tile():
    plan = plan_tiles((100, 80), 512, 48, 16)
    assert len(plan) == 1


@pytest.mark.parametrize("shape", [(1, 1), (100, 80), (150, 230)])
def test_gather_equals_cut_from_zero_canvas(shape):
    rng = np.random.default_rng(0)
    frame = rng.normal(size=shape).astype(np.float32)
    plan = plan_tiles(shape, 64, 10, 4)
    canvas = plan.canvas(frame)
    assert canvas[10 : 10 + shape[0], 10 : 10 + shape[1]].sum() == pytest.approx(frame.sum(), rel=1e-5)
    assert np.count_nonzero(canvas) == np.count_nonzero(frame)
    buf = None
    for tiles in plan.batches(3):
        buf = plan.gather(frame, tiles, buf)
        got = buf[: len(tiles)]
        assert got.shape == (len(tiles), 64, 64, 1) and got.dtype == np.float32
        for tile, g in zip(tiles, got):
            np.testing.assert_array_equal(g[..., 0], canvas[tile.y0 : tile.y0 + 64, tile.x0 : tile.x0 + 64])


@pytest.mark.parametrize("batch_size", [1, 3, 8, 100])
def test_batches_cover_tiles_once_last_partial(batch_size):
    plan = plan_tiles((300, 250), 64, 10, 4)
    batches = list(plan.batches(batch_size))
    assert [t for b in batches for t in b] == plan.tiles
    assert all(len(b) == batch_size for b in batches[:-1])
    assert 1 <= len(batches[-1]) <= batch_size
    assert len(batches) == -(-len(plan) // batch_size)


def test_bad_geometry_and_batch_size():
    with pytest.raises(ValueError):
        plan_tiles((10, 10), 64, 32, 4)  # no core left
    with pytest.raises(ValueError):
        plan_tiles((10, 10), 62, 5, 4)  # tile not aligned
    with pytest.raises(ValueError):
        plan_tiles((0, 10), 64, 5, 4)
    with pytest.raises(ValueError):
        list(plan_tiles((10, 10), 64, 10, 4).batches(0))
    with pytest.raises(ValueError):
        plan_tiles((10, 10), 64, 10, 4).canvas(np.zeros((11, 10)))


@pytest.mark.parametrize("shape", [(1, 1), (300, 200), (200, 300), (1000, 700), (768, 768), (769, 10),
                                   (5000, 20)])
def test_fitted_tile_covers_the_frame_in_one_tile_or_keeps_the_tile(shape):
    t, m, s = 1280, 128, 32
    fitted = fitted_tile_size(shape, t, m, s, minimum=160)
    assert fitted % s == 0 and 160 <= fitted <= t
    plan = plan_tiles(shape, fitted, m, s)
    if fitted < t:
        assert len(plan) == 1
        # and it is the smallest such tile
        assert fitted - s < 160 or (fitted - s - 2 * m) // s * s < max(shape)
    else:
        assert len(plan) == len(plan_tiles(shape, t, m, s))
