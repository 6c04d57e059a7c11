"""maxitrack tile selection, tile preparation and score aggregation (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from maxitrack.scoring import field_logit, field_probability, logit, prior_shift, sigmoid
from maxitrack.tiles import cell_origins, compact_peaks, frame_sky, prepare_tiles, select_tiles
from maxitrack.train import fit_platt, frame_mean_logits, roc_auc


def star_field(shape, boxes, n_stars, seed=0, fwhm=3.0):
    """Noise + Gaussian stars placed inside the given (y0, y1, x0, x1) boxes."""
    rng = np.random.default_rng(seed)
    im = rng.normal(1000.0, 10.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    s = fwhm / 2.355
    for y0, y1, x0, x1 in boxes:
        for _ in range(n_stars):
            y, x = rng.uniform(y0, y1), rng.uniform(x0, x1)
            im += rng.uniform(300, 3000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    return im.astype(np.float32)


@pytest.mark.parametrize("n, tile, expected", [(100, 128, [0]), (256, 128, [0, 128]), (300, 128, [0, 172]), (128, 128, [0])])
def test_cell_origins(n, tile, expected):
    assert cell_origins(n, tile).tolist() == expected


def test_selection_prefers_stars_over_diffuse_light():
    im = star_field((256, 512), [(128, 256, 384, 512)], 25)
    yy, xx = np.mgrid[:256, :512]
    # a bright smooth nebula over the first cell: many pixels above the sky, no compact source
    im += (400.0 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * 50.0**2))).astype(np.float32)
    sky, noise = frame_sky(im)
    assert sky == pytest.approx(1000, abs=5) and noise == pytest.approx(10, rel=0.2)
    peaks = compact_peaks(im, sky, noise, 5.0)
    assert peaks[:64, :64].sum() == 0 and peaks[64:, 192:].sum() >= 10
    assert select_tiles(im, 128, {"n_tiles": 1}) == [(128, 384)]


def test_selection_is_deterministic_and_spreads_ties():
    im = np.random.default_rng(3).normal(0, 1, (512, 512)).astype(np.float32)
    a = select_tiles(im, 64, {"n_tiles": 6})
    assert a == select_tiles(im, 64, {"n_tiles": 6})
    assert len(set(a)) == 6 and len({y for y, _ in a}) > 1


def test_prepare_tiles_shapes_nan_and_small_frames():
    im = star_field((300, 200), [(0, 300, 0, 200)], 20)
    im[10:20, 10:20] = np.nan
    t = prepare_tiles(im, 64, {"n_tiles": 5})
    assert t.shape == (5, 64, 64, 1) and t.dtype == np.float32 and np.isfinite(t).all()
    small = prepare_tiles(star_field((20, 33), [(0, 20, 0, 33)], 2), 64)
    assert small.shape == (1, 64, 64, 1) and np.isfinite(small).all()
    # the padding is sky (0) in the normalised tile
    assert np.all(small[0, 20:, :, 0] == 0) and np.all(small[0, :, 33:, 0] == 0)
    # noise normalised to about unit scale (asinh is linear near 0)
    assert 0.7 < np.std(prepare_tiles(np.random.default_rng(1).normal(5, 3, (64, 64)), 64)) < 1.3


def test_prepare_tiles_can_say_where_its_tiles_lie():
    im = star_field((300, 200), [(0, 150, 0, 100)], 30)
    t, origins = prepare_tiles(im, 64, {"n_tiles": 4}, return_origins=True)
    assert origins == select_tiles(im, 64, {"n_tiles": 4})
    assert np.array_equal(t, prepare_tiles(im, 64, {"n_tiles": 4}))
    # the stars are in the top-left quarter, and so are the best cells
    assert all(y0 < 150 and x0 < 100 for y0, x0 in origins[:2])


@pytest.mark.parametrize(
    "image, reason",
    [(np.full((50, 50), np.nan), "NaN"), (np.ones((50, 50)), "constant"), (np.ones((2, 3, 4)), "2D")],
)
def test_prepare_tiles_rejects_unusable_frames(image, reason):
    with pytest.raises(ValueError, match=reason):
        prepare_tiles(image, 32)


def test_field_logit_is_the_mean_and_independent_of_tile_count():
    z = np.array([-2.0, 0.5, 3.0])
    assert field_logit(z) == pytest.approx(0.5)
    assert field_logit(np.tile(z, 5)) == pytest.approx(field_logit(z))
    assert field_logit(z, {"slope": 2.0, "intercept": -1.0}) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        field_logit([])


def test_prior_modification():
    z = [1.2, 0.4]
    p_train = field_probability(z, 0.5, 0.5)
    assert p_train == pytest.approx(sigmoid(0.8))
    p = field_probability(z, 0.5, 0.05)
    # odds(p') = odds(p) * odds(0.05) / odds(0.5)
    assert p / (1 - p) == pytest.approx(p_train / (1 - p_train) * (0.05 / 0.95), rel=1e-9)
    assert prior_shift(0.3, 0.3) == 0.0
    assert logit(sigmoid(-3.0)) == pytest.approx(-3.0)
    assert sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]


def test_platt_fit_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, 20000)
    y = rng.uniform(size=x.size) < sigmoid(1.7 * x - 0.6)
    cal = fit_platt(x, y)
    assert cal["slope"] == pytest.approx(1.7, rel=0.05) and cal["intercept"] == pytest.approx(-0.6, abs=0.06)


def test_frame_mean_logits_and_auc():
    frames, m = frame_mean_logits(np.array([1.0, 3.0, -1.0, 5.0]), np.array([7, 7, 2, 9]))
    assert frames.tolist() == [2, 7, 9] and m.tolist() == [-1.0, 2.0, 5.0]
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


def test_autocorrelation_shows_double_images_and_elongation():
    from maxitrack.tiles import autocorrelation, network_input

    rng = np.random.default_rng(5)
    size, h = 64, 32
    yy, xx = np.mgrid[:size, :size]

    def field(offsets, sy=1.0, sx=1.0):
        im = rng.normal(0.0, 1.0, (size, size))
        for _ in range(15):
            y, x, f = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(20, 60)
            for (dy, dx), w in offsets:
                im += w * f * np.exp(-((yy - y - dy) ** 2 / (2 * sy * sy) + (xx - x - dx) ** 2 / (2 * sx * sx)))
        return np.arcsinh(im).astype(np.float32)[None, :, :, None]

    single = autocorrelation(field([((0, 0), 1.0)]))[0, :, :, 0]
    double = autocorrelation(field([((0, 0), 0.6), ((0, 12), 0.4)]))[0, :, :, 0]
    streak = autocorrelation(field([((0, 0), 1.0)], sy=1.0, sx=4.0))[0, :, :, 0]
    assert single.dtype == np.float32 and single.shape == (size, size)
    assert single[h, h] == pytest.approx(1.0, abs=0.05) and np.abs(single).max() <= 1.0
    assert np.allclose(single[1:, 1:], single[1:, 1:][::-1, ::-1], atol=1e-5)  # A(-lag) = A(lag)
    # a double image 12 px apart: side peaks at lag (0, +-12); none for single images
    assert double[h, h + 12] > 0.3 and double[h, h - 12] > 0.3 and single[h, h + 12] < 0.15
    # a streak along x: the central peak is wider along x than along y
    assert streak[h, h + 4] > 0.5 > streak[h + 4, h]
    # a flat tile (NaN region) gives zeros, not NaN
    assert np.array_equal(autocorrelation(np.zeros((2, 16, 16, 1), np.float32)), np.zeros((2, 16, 16, 1)))
    x = network_input(field([((0, 0), 1.0)]), "tile+autocorr")
    assert x.shape == (1, size, size, 2)
    with pytest.raises(ValueError):
        network_input(x[..., :1], "nope")


def test_box_mean_matches_scipy_uniform_filter():
    """The cumulative-sum box mean (kept to spare the command scipy's import) equals scipy's, with
    the window cut to the tile near its edges."""
    ndimage = pytest.importorskip("scipy.ndimage")
    from maxitrack.tiles import _box_mean

    t = np.random.default_rng(3).normal(size=(3, 40, 33)).astype(np.float32)
    total = ndimage.uniform_filter(t.astype(np.float64), size=(1, 15, 15), mode="constant")
    inside = ndimage.uniform_filter(np.ones(t.shape[1:]), size=15, mode="constant")
    np.testing.assert_allclose(_box_mean(t, 15), total / inside, rtol=0, atol=2e-6)
