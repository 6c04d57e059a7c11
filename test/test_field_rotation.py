"""The field-rotation statistic (a small tracking arc in the stars' shapes) and its term in
maxitrack's score."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from maxitrack.field_rotation import (
    DEFAULT_FIELD_ROTATION,
    FieldRotation,
    StarShapes,
    isolated_peaks,
    rotation_significance,
    star_moments,
)
from maxitrack.scoring import FieldRotationTerm
from maxitrack.tiles import compact_peaks, frame_sky


def star_table(seed, shape=(1024, 2048), n=300, sigma=1.5, e_const=(0.06, -0.03), coma=0.0, arc=None, noise=0.02):
    """Second moments of ``n`` stars of a Gaussian PSF (variance ``sigma**2``) with a constant
    ellipticity, radial coma ``coma * r**2`` (r in half diagonals) and, with ``arc = (cy, cx,
    angle)``, the smear of a field rotation about (cy, cx) by ``angle`` radians."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = rng.uniform(20, h - 20, n), rng.uniform(20, w - 20, n)
    rmax = np.hypot(h / 2, w / 2)
    z = ((x - w / 2) + 1j * (y - h / 2)) / rmax
    eps = e_const[0] + 1j * e_const[1] + coma * z**2
    s2 = sigma**2
    qxx = s2 * (1 + eps.real)
    qyy = s2 * (1 - eps.real)
    qxy = s2 * eps.imag
    if arc is not None:
        cy, cx, angle = arc
        # the smear is along the circle about the centre: direction i (w - c)
        v = 1j * ((x - cx) + 1j * (y - cy))
        length = np.abs(v) * angle
        u = v / np.abs(v)
        add = length**2 / 12.0
        qxx = qxx + add * u.real**2
        qyy = qyy + add * u.imag**2
        qxy = qxy + add * u.real * u.imag
    t = qxx + qyy
    qxx = qxx + rng.normal(0, noise, n) * t
    qyy = qyy + rng.normal(0, noise, n) * t
    qxy = qxy + rng.normal(0, noise, n) * t / 2
    snr = rng.uniform(15, 200, n)
    return StarShapes(x, y, qxx, qyy, qxy, snr, 2.0, shape)


def test_a_normal_psf_with_coma_reads_as_no_rotation():
    for seed in range(4):
        assert rotation_significance(star_table(seed)) < 4
        assert rotation_significance(star_table(seed, coma=0.25)) < 4  # radial, not tangential


def test_a_small_arc_reads_as_rotation_unless_stronger_coma_hides_it():
    # centre inside the frame: at the farthest corner the smear is 0.8 FWHM, at the centre none
    angle = 0.8 * 2.355 * 1.5 / np.hypot(700, 1500)
    for seed in range(4):
        plain = rotation_significance(star_table(seed))
        arc = rotation_significance(star_table(seed, arc=(300, 500, angle)))
        assert arc > 8 and arc > plain + 5
        # coma of 0.15 at the corners outweighs this arc's pattern: second moments cannot see it
        assert rotation_significance(star_table(seed, coma=0.15, arc=(300, 500, angle))) < 0
        # the first candidate's scan, with its free coma column, did see it
        assert rotation_significance(star_table(seed, coma=0.15, arc=(300, 500, angle)), {"model": "scan"}) > 8


def test_an_unknown_model_is_an_error():
    with pytest.raises(ValueError, match="unknown model 'quad'"):
        rotation_significance(star_table(0), {"model": "quad"})


def test_too_few_stars_give_nothing():
    few = star_table(0, n=DEFAULT_FIELD_ROTATION["min_stars"] - 1, arc=(300, 500, 0.01))
    assert rotation_significance(few) == 0.0
    acc = FieldRotation()
    acc.add(few)
    acc.add(None)
    assert acc.significance() == 0.0


def test_a_field_is_the_mean_of_its_hdus():
    tables = [star_table(1), star_table(2, arc=(300, 500, 0.002))]
    acc = FieldRotation()
    for t in tables:
        acc.add(t)
    values = [rotation_significance(t) for t in tables]
    assert acc.significance() == pytest.approx(np.mean(values))


def test_isolated_peaks_drop_close_pairs():
    m = np.zeros((60, 60), bool)
    m[10, 10] = m[10, 15] = True  # 5 apart: neither is isolated at 8
    m[40, 40] = True
    out = isolated_peaks(m, 8)
    assert out.sum() == 1 and out[40, 40]


def elliptical_field(seed, shape=(256, 384), n=60, sig=(2.0, 1.4), sky=500.0, noise=5.0):
    """An image of isolated elliptical Gaussian stars, longer along x."""
    rng = np.random.default_rng(seed)
    im = rng.normal(sky, noise, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    grid = [(y, x) for y in range(30, shape[0] - 30, 40) for x in range(30, shape[1] - 30, 40)]
    pos = [grid[i] for i in rng.permutation(len(grid))[:n]]
    for y, x in pos:
        cy, cx = y + rng.uniform(-0.5, 0.5), x + rng.uniform(-0.5, 0.5)
        f = rng.uniform(5000, 20000)
        im += f / (2 * np.pi * sig[0] * sig[1]) * np.exp(-0.5 * (((xx - cx) / sig[0]) ** 2 + ((yy - cy) / sig[1]) ** 2))
    return im.astype(np.float32), pos


def test_star_moments_measure_the_stars_elongation():
    im, pos = elliptical_field(3)
    sky, noise = frame_sky(im, step=1)
    stars = star_moments(im, sky, noise, compact_peaks(im, sky, noise, 5.0))
    # all but the few within 10 % of the brightest pixel (left out as if saturated)
    assert len(stars) >= 0.8 * len(pos)
    e1 = (stars.qxx - stars.qyy) / (stars.qxx + stars.qyy)
    e2 = 2 * stars.qxy / (stars.qxx + stars.qyy)
    # a round weight dilutes the ellipticity ((4 - 1.96) / (4 + 1.96) = 0.34 unweighted) but keeps its sign
    assert 0.1 < np.median(e1) < 0.34 and abs(np.median(e2)) < 0.02
    # positions to a fraction of a pixel
    found = np.array([[y, x] for y, x in zip(stars.y, stars.x)])
    d = np.min(np.hypot(found[:, None, 0] - np.array(pos)[None, :, 0], found[:, None, 1] - np.array(pos)[None, :, 1]), 1)
    assert np.all(d < 0.8)
    assert 1.4 < stars.weight_sigma < 2.0


def test_hot_pixels_brighter_than_the_stars_do_not_set_the_weight():
    """Where single-pixel defects outshine every star, the weight's width must still be the stars'
    (it used to shrink to 0.6 px on such frames, and the moments then measured the defects)."""
    im, pos = elliptical_field(5, sig=(3.0, 3.0), n=16)
    for k, (y, x) in enumerate((y, x) for y in range(30, 226, 40) for x in range(30, 354, 40)):
        # 40 hot pixels, brighter than any star's peak, spread over two rows as in a resampled frame
        im[y + 18, x + 18] += 0.7 * (3000.0 + 50.0 * k)
        im[y + 19, x + 18] += 0.3 * (3000.0 + 50.0 * k)
    sky, noise = frame_sky(im, step=1)
    peaks = compact_peaks(im, sky, noise, 5.0)
    stars = star_moments(im, sky, noise, peaks)
    assert 2.6 < stars.weight_sigma < 3.4
    old = star_moments(im, sky, noise, peaks, {"max_sharpness": None, "width_check": False})
    assert old.weight_sigma < 1.0  # what the cut prevents
    # with the check alone, a weight at its floor gives no stars rather than the defects' shapes
    assert len(star_moments(im, sky, noise, peaks, {"max_sharpness": None})) == 0


def test_the_sharpest_supported_stars_pass_the_sharpness_cut():
    # FWHM 1.5 px, pixel-integrated (the simulator's sharpest PSF): peaks 2.7 times their neighbours
    im, pos = elliptical_field(6, sig=(0.64, 0.64), n=40)
    sky, noise = frame_sky(im, step=1)
    peaks = compact_peaks(im, sky, noise, 5.0)
    cut = star_moments(im, sky, noise, peaks)
    assert len(cut) == len(star_moments(im, sky, noise, peaks, {"max_sharpness": None})) >= 0.8 * len(pos)


def test_saturated_stars_and_empty_frames_are_left_out():
    im, pos = elliptical_field(4)
    y, x = pos[0]
    im[y - 2 : y + 3, x - 2 : x + 3] = im.max() * 2  # a flat saturated core
    sky, noise = frame_sky(im, step=1)
    stars = star_moments(im, sky, noise, compact_peaks(im, sky, noise, 5.0))
    assert not np.any(np.hypot(stars.y - y, stars.x - x) < 3)
    flat = np.full((64, 64), 100.0, np.float32)
    assert len(star_moments(flat, 100.0, 0.0, np.zeros((32, 32), bool))) == 0


def test_malformed_term_names_its_entry():
    with pytest.raises(ValueError, match="^field_rotation needs numeric"):
        FieldRotationTerm.from_metadata({"weight": "x", "offset": 1})
    term = FieldRotationTerm.from_metadata({"weight": 2.0, "offset": 5.0, "params": {"grid": 5}})
    # a network made before the sharpness cut measures its stars without it
    assert term(4.0) == 0.0 and term(6.0) == pytest.approx(2.0 * np.log(2.0))
    assert term.params == {"grid": 5, "max_sharpness": None, "width_check": False}
    newer = FieldRotationTerm.from_metadata({"weight": 2.0, "offset": 5.0,
                                             "params": {"max_sharpness": 5.0, "width_check": True}})
    assert newer.params == {"max_sharpness": 5.0, "width_check": True}


@pytest.fixture(scope="module")
def net_with_rotation(tmp_path_factory):
    """The bundled network with a field-rotation term of weight 1 from -50 (every field with stars
    gains log(1 + R + 50))."""
    from maximask.resources import default_net_dir

    d = tmp_path_factory.mktemp("rot") / "net"
    shutil.copytree(default_net_dir("maxitrack"), d)
    meta = json.loads((d / "metadata.json").read_text())
    meta["field_rotation"] = {"weight": 1.0, "offset": -50.0, "params": dict(DEFAULT_FIELD_ROTATION)}
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def test_command_adds_the_term(net_with_rotation, tmp_path, monkeypatch):
    import fitsio

    from maximask.network import Network
    from maximask.resources import default_net_dir
    from maxitrack import cli
    from maxitrack.scoring import logit

    im, _ = elliptical_field(5, shape=(512, 512), n=40, sig=(1.6, 1.6))  # round stars: a normal field
    f = tmp_path / "a.fits"
    fitsio.write(str(f), im, clobber=True)
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(f), "--net_dir", str(net_with_rotation), "-o", "with.out", "-q", "--prior", "0.001"]) == 0
    assert cli.main([str(f), "-o", "without.out", "-q", "--prior", "0.001"]) == 0
    p_with = float((tmp_path / "with.out").read_text().split()[1])
    p_without = float((tmp_path / "without.out").read_text().split()[1])
    sc = cli.Scorer(net_with_rotation, 0.5, 16)
    acc = sc.field_rotation_statistic()
    acc.add(sc.hdu(im).stars)
    gain = np.log1p(max(acc.significance() + 50.0, 0.0))
    assert gain > 3 and logit(p_with) - logit(p_without) == pytest.approx(gain, abs=2e-3)
    assert Network(net_with_rotation).model_id != Network(default_net_dir("maxitrack")).model_id


def pattern_table(seed, centre, sign, shape=(2048, 4096), n=400, sigma=1.5, noise=0.02):
    """Stars whose ellipticity is 0.04 plus a pattern ``sign * k (w - centre)**2`` (radial for
    sign +1, tangential for -1) reaching 0.15 at the farthest star; ``centre`` in frame units."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = rng.uniform(20, h - 20, n), rng.uniform(20, w - 20, n)
    d = (x + 1j * y) - (centre[1] * w + 1j * centre[0] * h)
    eps = 0.04 + sign * 0.15 * d**2 / np.abs(d).max() ** 2
    s2 = sigma**2
    qxx, qyy, qxy = s2 * (1 + eps.real), s2 * (1 - eps.real), s2 * eps.imag
    t = qxx + qyy
    qxx, qyy, qxy = (q + rng.normal(0, noise, n) * t * f for q, f in ((qxx, 1), (qyy, 1), (qxy, 0.5)))
    return StarShapes(x, y, qxx, qyy, qxy, rng.uniform(15, 200, n), 2.0, shape)


@pytest.mark.parametrize("centre", [(0.5, 0.5), (-0.5, 0.5), (-1.0, 0.5), (-3.0, -0.5)])
def test_contrast_tells_coma_about_any_axis_from_rotation(centre):
    """Coma radial about an optical axis off the CCD (a mosaic's outer CCD) is not a rotation;
    the same pattern made tangential is, unless the centre is so far that only a gradient is left."""
    radial = [rotation_significance(pattern_table(s, centre, +1)) for s in range(3)]
    tangential = [rotation_significance(pattern_table(s, centre, -1)) for s in range(3)]
    assert max(radial) < 0
    if centre[0] > -2:
        assert min(tangential) > 10
    # the first candidate's scan reads an off-frame axis's coma as a rotation (why it was withdrawn)
    if centre == (-0.5, 0.5):
        assert min(rotation_significance(pattern_table(s, centre, +1), {"model": "scan"}) for s in range(3)) > 10
