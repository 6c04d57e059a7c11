"""The double-image statistic (a tracking jump's pairs of peaks) and its term in maxitrack's score."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from maxitrack.double_images import (
    DEFAULT_DOUBLE_IMAGES,
    FieldPairs,
    counted_peaks,
    double_image_significance,
    drop_line_peaks,
    pair_counts,
)
from maxitrack.scoring import DoubleImageTerm, field_logit, field_probability, sigmoid

SHAPE = (400, 600)  # a binned grid


def scattered(n, seed, shape=SHAPE, border=45):
    """``n`` peaks scattered uniformly (int (y, x)), away from the border by ``border``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(border, shape[0] - border, n), rng.integers(border, shape[1] - border, n)], 1)


def jumped(peaks, vector, fraction=1.0, seed=0):
    """The peaks and, for a ``fraction`` of them, a copy ``vector`` away (double images)."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(peaks)) < fraction
    return np.concatenate([peaks, peaks[keep] + np.asarray(vector)])


def significance(peaks, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[peaks[:, 0], peaks[:, 1]] = True
    f = FieldPairs()
    f.add(m)
    return f.significance()


def test_pair_counts_are_the_peak_maps_autocorrelation():
    peaks = scattered(300, 1)
    r = 12
    counts, expected = pair_counts(peaks, SHAPE, r)
    m = np.zeros(SHAPE)
    m[peaks[:, 0], peaks[:, 1]] = 1
    f = np.fft.rfft2(m, s=(SHAPE[0] + r, SHAPE[1] + r))
    auto = np.rint(np.fft.irfft2(np.abs(f) ** 2, s=(SHAPE[0] + r, SHAPE[1] + r)))
    auto = np.roll(auto, (r, r), axis=(0, 1))[: 2 * r + 1, : 2 * r + 1]
    np.testing.assert_array_equal(counts, auto)
    assert counts[r, r] == 300  # each peak with itself
    np.testing.assert_array_equal(counts, counts[::-1, ::-1])  # ordered pairs: d and -d
    # uniform expectation: N^2 / (h w) pairs per lag, less at long lags (smaller overlap)
    assert expected[r, r] == pytest.approx(300**2 / (SHAPE[0] * SHAPE[1]))
    assert expected[0, 0] < expected[r, r]


def test_a_field_of_double_images_stands_out():
    field = scattered(800, 2)
    normal = significance(field)
    assert normal < 6  # a few sigmas: the largest of ~5000 lags
    for vector in [(7, 11), (-15, 4), (0, 20), (30, -25)]:
        assert significance(jumped(field, vector, fraction=0.5)) > 25, vector


def test_a_double_jump_shows_its_inner_pair():
    # triple images at 0, d and 2d: the pairs at 2d do not hide those at d
    field = scattered(600, 3)
    d = np.array([6, -9])
    triple = np.concatenate([field, field + d, field + 2 * d])
    assert significance(triple) > 25


def test_one_peak_per_object():
    # objects that leave two or three peaks a pixel apart: two such objects are one pair, not nine
    field = scattered(300, 12)
    blobs = np.concatenate([field, field + (1, 0), field + (1, 1)])
    m = np.zeros(SHAPE, bool)
    m[blobs[:, 0], blobs[:, 1]] = True
    kept = counted_peaks(m)
    assert len(kept) <= len(np.unique(field, axis=0))
    assert significance(blobs) < 6
    # the merging keeps the first of each cluster in raster order, whatever the others
    from maxitrack.double_images import merge_close_peaks

    m = np.zeros((10, 12), bool)
    for y, x in [(2, 3), (3, 4), (4, 5), (7, 1), (7, 9), (9, 9), (0, 11), (1, 10)]:
        m[y, x] = True
    assert np.argwhere(merge_close_peaks(m, 2)).tolist() == [[0, 11], [2, 3], [7, 1], [7, 9]]


def test_short_lags_are_not_counted():
    # a star's own peaks, the pairs of a crowded field, and jumps shorter than min_lag (which the
    # tile network finds) lie there
    field = scattered(800, 4)
    assert significance(jumped(field, (3, 3))) < 6


def test_lines_of_peaks_are_not_double_images():
    rng = np.random.default_rng(5)
    field = scattered(800, 5)
    # a satellite trail: peaks all along a line, two or three pixels apart
    t = np.arange(0, 560, 2.5)
    trail = np.stack([60 + 0.5 * t + rng.normal(0, 0.7, t.size), 20 + t], 1).round().astype(int)
    # a hot column: a peak every few rows of one column
    column = np.stack([np.arange(10, 390, 3), np.full(127, 321)], 1)
    # a bleed trail in a row
    row = np.stack([np.full(60, 250), np.arange(100, 280, 3)], 1)
    on_field = set(map(tuple, field))
    for line in (trail, column, row):
        assert significance(np.concatenate([field, line])) < 6
        kept = set(map(tuple, drop_line_peaks(np.concatenate([field, line]), SHAPE)))
        # the line's peaks go (a jittered one may leave a few); the scattered ones stay, but for
        # those within the line's band
        on_line = set(map(tuple, line)) - on_field
        assert len(on_line & kept) <= 0.05 * len(on_line)
        assert len(kept & on_field) > 0.95 * len(on_field)


def _ridge_counts(seed=30):
    """Pair counts of a field whose peaks also lie along parallel lines: Poisson counts, plus a
    ridge through the zero lag that falls off with distance (the peaks along bright stars'
    diffraction spikes, which all point the same way)."""
    r = DEFAULT_DOUBLE_IMAGES["reach"]
    lag = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(lag, lag, indexing="ij")
    rng = np.random.default_rng(seed)
    counts = rng.poisson(20.0, dy.shape).astype(float)
    counts = np.rint((counts + counts[::-1, ::-1]) / 2)  # ordered pairs: d and -d
    a = math.radians(30)
    along, across = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    ridge = np.rint((np.abs(across) < 0.8) * 400 * np.exp(-np.abs(along) / 8))
    return counts, ridge, np.full(dy.shape, 20.0)


def test_the_ray_baseline_rule():
    counts, ridge, expected = _ridge_counts()
    plain = double_image_significance(counts, expected)
    assert plain < 4
    # with the larger of the ray's two samples as baseline, each lag on the ridge is below its
    # nearer neighbour and does not stand out ...
    both = dict(DEFAULT_DOUBLE_IMAGES, ray_baseline="both")
    assert double_image_significance(counts + ridge, expected, both) < plain + 1
    # ... while the default, the smaller sample, finds it (as it finds a drift's smeared stars)
    assert double_image_significance(counts + ridge, expected) > 8
    # a jump's pile-up, an isolated lag, stands out either way
    r = DEFAULT_DOUBLE_IMAGES["reach"]
    jump = counts.copy()
    jump[r + 12, r - 9] += 150
    jump[r - 12, r + 9] += 150
    assert double_image_significance(jump, expected) > 8
    assert double_image_significance(jump, expected, both) > 8
    with pytest.raises(ValueError, match="ray_baseline"):
        double_image_significance(counts, expected, dict(DEFAULT_DOUBLE_IMAGES, ray_baseline="mean"))


def test_min_fraction_asks_a_share_of_the_field_not_only_a_significance():
    # a large crowded CCD (the binned grid of a 2048x4096 one) where a few objects pile up pairs
    # at one lag (the peaks along some bright stars' spikes): significant, since a significance
    # grows with the number of peaks, but a small share of the field's objects
    large = (1024, 2048)
    crowded = scattered(20000, 40, shape=large)
    few = np.concatenate([crowded, crowded[:600] + (11, 7)])
    gate = dict(DEFAULT_DOUBLE_IMAGES, min_fraction=0.04)
    assert significance(few, large) > 8
    m = np.zeros(large, bool)
    m[tuple(few.T)] = True
    f = FieldPairs(gate)
    f.add(m)
    assert f.significance() < 4  # the lag does not compete; what is left is noise, or 0
    # a jump doubles a sizeable share: the same D with or without the gate
    jump = jumped(scattered(800, 41), (11, 7), fraction=0.3)
    m = np.zeros(SHAPE, bool)
    m[tuple(jump.T)] = True
    plain, gated = FieldPairs(), FieldPairs(gate)
    plain.add(m)
    gated.add(m)
    assert gated.significance() == plain.significance() > 15
    # no lag passes: D is 0
    assert double_image_significance(plain.counts, plain.expected, dict(gate, min_fraction=10.0)) == 0.0


def test_the_wide_line_search_takes_out_a_dotted_wide_trail():
    # an aircraft's lights or a glinting satellite: a blob every 24 px, each leaving two peaks
    # 8 px apart across a trail 16 px wide, never more than 6 in any 2-px band
    field = scattered(300, 31)
    k = np.arange(24)
    d = (5 * k) % 16 - 8.0
    t, d = np.repeat(24.0 * k, 2), np.stack([d, np.where(d < 0, d + 8, d - 8)], 1).ravel()
    trail = np.rint(np.stack([40 + 0.6 * t + 0.8 * d, 30 + 0.8 * t - 0.6 * d], 1)).astype(int)
    on_trail = set(map(tuple, trail)) - set(map(tuple, field))
    m = np.zeros(SHAPE, bool)
    m[tuple(np.concatenate([field, trail]).T)] = True
    left = {}
    for wide in (None, {"hough_band": 8.0, "line_halfwidth": 8.0, "hough_angles": 90}):
        kept = set(map(tuple, counted_peaks(m, dict(DEFAULT_DOUBLE_IMAGES, wide_lines=wide))))
        left[wide is None] = len(on_trail & kept) / len(on_trail)
        assert len(kept & set(map(tuple, field))) > 0.85 * len(field)
    assert left[True] > 0.6  # the narrow bands miss most of it
    assert left[False] < 0.1


def test_a_jump_beside_a_trail_is_still_found():
    field = scattered(800, 6)
    t = np.arange(0, 560, 2.5)
    trail = np.stack([60 + 0.5 * t, 20 + t], 1).round().astype(int)
    assert significance(np.concatenate([jumped(field, (9, -13), fraction=0.5), trail])) > 25


def test_hdus_of_a_field_add_their_pairs():
    a, b = scattered(400, 7), scattered(400, 8)
    ma, mb = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    ma[a[:, 0], a[:, 1]] = True
    mb[b[:, 0], b[:, 1]] = True
    f = FieldPairs()
    f.add(ma)
    f.add(mb)
    ca, ea = pair_counts(counted_peaks(ma), SHAPE, DEFAULT_DOUBLE_IMAGES["reach"])
    cb, eb = pair_counts(counted_peaks(mb), SHAPE, DEFAULT_DOUBLE_IMAGES["reach"])
    np.testing.assert_array_equal(f.counts, ca + cb)
    np.testing.assert_allclose(f.expected, ea + eb)
    assert f.significance() == double_image_significance(ca + cb, ea + eb)
    # a jump seen in two CCDs, each too sparse to show it clearly alone, is clearer in both
    sa, sb = scattered(60, 9), scattered(60, 10)
    one = FieldPairs()
    m = np.zeros(SHAPE, bool)
    p = jumped(sa, (12, 5))
    m[p[:, 0], p[:, 1]] = True
    one.add(m)
    both = FieldPairs()
    both.add(m)
    m2 = np.zeros(SHAPE, bool)
    p = jumped(sb, (12, 5))
    m2[p[:, 0], p[:, 1]] = True
    both.add(m2)
    assert both.significance() > one.significance()


def test_empty_and_tiny_fields():
    assert significance(np.zeros((0, 2), int)) == 0.0
    small = (20, 30)
    f = FieldPairs()
    f.add(np.zeros(small, bool))
    assert math.isfinite(f.significance())


def test_double_image_term():
    term = DoubleImageTerm(1.5, 10.0)
    assert term(3.0) == 0.0 and term(10.0) == 0.0
    assert term(20.0) == pytest.approx(1.5 * math.log(11.0))
    assert DoubleImageTerm.from_metadata(None) is None
    t = DoubleImageTerm.from_metadata({"weight": 2, "offset": 5, "params": {"reach": 30}})
    assert (t.weight, t.offset, t.params) == (2.0, 5.0, {"reach": 30})
    for bad in ([1, 2], {"weight": 1}, {"weight": "x", "offset": 1}, {"weight": float("nan"), "offset": 1},
                {"weight": 1, "offset": 1, "params": [1]}):
        with pytest.raises(ValueError):
            DoubleImageTerm.from_metadata(bad)
    # the term adds to the calibrated logit, before the prior shift
    cal = {"slope": 2.0, "intercept": -1.0}
    assert field_logit([1.0, 2.0], cal, extra=0.75) == pytest.approx(2.0 * 1.5 - 1.0 + 0.75)
    assert field_probability([1.0, 2.0], 0.5, 0.5, cal, 0.75) == pytest.approx(float(sigmoid(2.75)))


def test_prepare_hdu_gives_the_tiles_and_peaks_of_the_command():
    from maxitrack.tiles import _frame_sky, compact_peaks, prepare_hdu, prepare_tiles

    rng = np.random.default_rng(11)
    im = rng.normal(300.0, 8.0, (300, 420))
    yy, xx = np.mgrid[:300, :420]
    for _ in range(60):
        y, x = rng.uniform(0, 300), rng.uniform(0, 420)
        im += rng.uniform(300, 5000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.6**2))
    im = im.astype(np.float32)
    sel = {"n_tiles": 4, "detect": 5.0}
    p = prepare_hdu(im, 64, sel, with_peaks=True)
    np.testing.assert_array_equal(p.tiles, prepare_tiles(im, 64, sel))
    sky, noise = _frame_sky(im)
    np.testing.assert_array_equal(p.peaks, compact_peaks(im, sky, noise, 5.0))
    assert p.peaks.shape == (150, 210) and 30 < p.peaks.sum() < 90
    assert prepare_hdu(im, 64, sel).peaks is None


def _bundled_with(tmp_path_factory, name, entry):
    """A copy of the bundled maxitrack network whose double-image entry is ``entry`` (None: none)."""
    from maximask.resources import default_net_dir

    d = tmp_path_factory.mktemp("net") / name
    shutil.copytree(default_net_dir("maxitrack"), d)
    meta = json.loads((d / "metadata.json").read_text())
    meta["double_images"] = entry
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


@pytest.fixture(scope="module")
def net_with_term(tmp_path_factory):
    """The bundled network's tiles and calibration, with a double-image term of weight 1 from 10."""
    return _bundled_with(tmp_path_factory, "with_term",
                         {"weight": 1.0, "offset": 10.0, "params": dict(DEFAULT_DOUBLE_IMAGES)})


@pytest.fixture(scope="module")
def net_without_term(tmp_path_factory):
    """The same without the term."""
    return _bundled_with(tmp_path_factory, "without_term", None)


def _star_field(seed, shape=(512, 512), n=400, jump=None, fwhm=2.0):
    rng = np.random.default_rng(seed)
    im = rng.normal(1000.0, 10.0, shape)
    ys, xs = rng.uniform(0, shape[0], n), rng.uniform(0, shape[1], n)
    flux = rng.uniform(2000, 30000, n)
    s = fwhm / 2.355
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y, x, f in zip(ys, xs, flux):
        for (dy, dx), w in ([((0, 0), 1.0)] if jump is None else [((0, 0), 0.5), (jump, 0.5)]):
            cy, cx = y + dy, x + dx
            y0, y1, x0, x1 = int(max(cy - 8, 0)), int(min(cy + 9, shape[0])), int(max(cx - 8, 0)), int(min(cx + 9, shape[1]))
            if y0 < y1 and x0 < x1:
                im[y0:y1, x0:x1] += w * f / (2 * np.pi * s * s) * np.exp(
                    -((yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2) / (2 * s * s))
    return im.astype(np.float32)


def test_command_adds_the_term_to_a_field_of_double_images(net_with_term, net_without_term, tmp_path, monkeypatch):
    import fitsio

    from maxitrack import cli

    plain = tmp_path / "plain.fits"
    double = tmp_path / "double.fits"
    fitsio.write(str(plain), _star_field(1), clobber=True)
    fitsio.write(str(double), _star_field(1, jump=(14, 22)), clobber=True)
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(plain), str(double), "--net_dir", str(net_with_term), "-o", "with.out", "-q", "--prior", "0.001"]) == 0
    assert cli.main([str(plain), str(double), "--net_dir", str(net_without_term), "-o", "without.out", "-q",
                     "--prior", "0.001"]) == 0
    with_term = [float(line.split()[1]) for line in (tmp_path / "with.out").read_text().splitlines()]
    without = [float(line.split()[1]) for line in (tmp_path / "without.out").read_text().splitlines()]
    # the single-image field gets no term (its statistic is below the offset): the same score
    assert with_term[0] == pytest.approx(without[0], abs=1e-6)
    # the double-image field's logit rises by the term
    sc = cli.Scorer(net_with_term, 0.5, 16)
    pairs = sc.field_pairs()
    pairs.add(sc.hdu(_star_field(1, jump=(14, 22))).peaks)
    assert pairs.significance() > 25
    from maxitrack.scoring import logit

    assert logit(with_term[1]) - logit(without[1]) == pytest.approx(sc.double_images(pairs.significance()), abs=2e-3)


def test_the_term_is_part_of_the_model_identifier(net_with_term, net_without_term):
    from maximask.network import Network
    from maximask.resources import default_net_dir

    ids = {Network(d).model_id for d in (net_with_term, net_without_term, default_net_dir("maxitrack"))}
    assert len(ids) == 3


def test_malformed_term_is_a_usage_error(net_with_term, tmp_path, monkeypatch, capsys):
    import fitsio

    from maxitrack import cli

    d = tmp_path / "bad"
    shutil.copytree(net_with_term, d)
    meta = json.loads((d / "metadata.json").read_text())
    meta["double_images"] = {"weight": "heavy", "offset": 10}
    (d / "metadata.json").write_text(json.dumps(meta))
    f = tmp_path / "a.fits"
    fitsio.write(str(f), _star_field(2, shape=(128, 128), n=20), clobber=True)
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(f), "--net_dir", str(d), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"maxitrack: error: {d}: malformed metadata: double_images")
    assert not (tmp_path / "maxitrack.out").exists()


def test_each_cube_plane_and_each_mosaic_is_one_field(net_with_term, net_without_term, tmp_path, monkeypatch):
    """A cube's planes are fields of their own (the double-image plane alone gains the term); a
    mosaic's HDUs are one field (their pairs add up)."""
    import fitsio

    from maxitrack import cli
    from maxitrack.scoring import logit

    plain, double = _star_field(3), _star_field(3, jump=(-16, 18))
    cube = tmp_path / "cube.fits"
    fitsio.write(str(cube), np.stack([plain, double]), clobber=True)
    mosaic = tmp_path / "mosaic.fits"
    with fitsio.FITS(str(mosaic), "rw", clobber=True) as f:
        f.write(None)
        f.write(plain)
        f.write(double)
    monkeypatch.chdir(tmp_path)
    for name, net in (("with", net_with_term), ("without", net_without_term)):
        assert cli.main([str(cube), str(mosaic), "--net_dir", str(net), "-o", f"{name}.out", "-q", "--prior", "0.001"]) == 0
    with_term = [line.split() for line in (tmp_path / "with.out").read_text().splitlines()]
    without = [line.split() for line in (tmp_path / "without.out").read_text().splitlines()]
    assert [w[:-1] for w in with_term] == [w[:-1] for w in without]
    assert [w[1:5] for w in with_term[:2]] == [["HDU", "0", "Channel", "0"], ["HDU", "0", "Channel", "1"]]
    gain = [logit(float(a[-1])) - logit(float(b[-1])) for a, b in zip(with_term, without)]
    assert gain[0] == pytest.approx(0.0, abs=1e-3)  # the plain plane
    sc = cli.Scorer(net_with_term, 0.5, 16)
    pairs = sc.field_pairs()
    pairs.add(sc.hdu(double).peaks)
    assert gain[1] == pytest.approx(sc.double_images(pairs.significance()), abs=2e-3) and gain[1] > 1
    # the mosaic: the pairs of both HDUs together
    pairs.add(sc.hdu(plain).peaks)
    assert gain[2] == pytest.approx(sc.double_images(pairs.significance()), abs=2e-3) and gain[2] > 1
