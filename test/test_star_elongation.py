"""The star-elongation statistic (the stars' mean ellipticity, the mark of a drift) and its term
in maxitrack's score."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_field_rotation import elliptical_field, star_table

from maxitrack.field_rotation import DEFAULT_FIELD_ROTATION, StarShapes
from maxitrack.scoring import StarElongationTerm
from maxitrack.star_elongation import FieldElongation, elongation_sums


def field_percent(*tables) -> float:
    acc = FieldElongation()
    for t in tables:
        acc.add(t)
    return acc.percent()


def test_a_constant_ellipticity_reads_as_its_modulus_in_percent():
    for seed in range(3):
        e = field_percent(star_table(seed, e_const=(0.06, -0.03)))
        assert e == pytest.approx(100 * np.hypot(0.06, -0.03), abs=0.5)


def test_coma_about_the_frame_centre_averages_out_on_a_square_frame():
    # radial coma reaching 0.25 at the corners: each star is elongated, the field's mean is not
    for seed in range(3):
        assert field_percent(star_table(seed, shape=(1024, 1024), e_const=(0.0, 0.0), coma=0.25)) < 1.5
    # on a 2:1 frame more stars lie left and right of the centre than above and below: their
    # radial elongation leaves a mean along the long side of about a fifth of the corners' value
    for seed in range(3):
        assert 3.0 < field_percent(star_table(seed, e_const=(0.0, 0.0), coma=0.25)) < 7.0


def off_axis_ccd(seed, dx, dy, n=300, size=1024):
    """A square CCD whose centre lies (dx, dy) CCD widths from the optical axis, its stars
    elongated radially about the axis (coma reaching 0.15 at the CCD's farthest star)."""
    rng = np.random.default_rng(seed)
    y, x = rng.uniform(20, size - 20, n), rng.uniform(20, size - 20, n)
    d = (x + (dx - 0.5) * size) + 1j * (y + (dy - 0.5) * size)
    eps = 0.15 * d**2 / np.abs(d).max() ** 2
    qxx, qyy, qxy = 2.25 * (1 + eps.real), 2.25 * (1 - eps.real), 2.25 * eps.imag
    return StarShapes(x, y, qxx, qyy, qxy, rng.uniform(15, 200, n), 2.0, (size, size))


def test_a_mosaic_pools_its_ccds_so_off_axis_coma_cancels():
    """Four CCDs about the optical axis: coma elongates each one's stars along its own direction
    (radially: along x left and right of the axis, along y above and below), which reads as a
    drift on each CCD alone and cancels over the mosaic, where a drift would add up."""
    ccds = [off_axis_ccd(k, dx, dy) for k, (dx, dy) in enumerate([(1, 0), (-1, 0), (0, 1), (0, -1)])]
    assert min(field_percent(c) for c in ccds) > 5.0
    assert field_percent(*ccds) < 1.0


def test_sigmas_take_the_noise_of_few_stars_off():
    """The lower bound (``sigmas``) leaves a well-measured elongation nearly whole and takes a
    sparse field's noise to zero."""
    def lower_bound(table, sigmas):
        acc = FieldElongation(sigmas=sigmas)
        acc.add(table)
        return acc.percent()

    many = star_table(1, e_const=(0.06, 0.0), n=400)
    assert lower_bound(many, 2.0) == pytest.approx(lower_bound(many, 0.0), abs=0.5)
    # 15 round stars with a 10 % scatter of their own: the mean is off by a few percent
    sparse = [star_table(s, e_const=(0.0, 0.0), n=15, noise=0.05) for s in range(20)]
    plain = [lower_bound(t, 0.0) for t in sparse]
    bounded = [lower_bound(t, 2.0) for t in sparse]
    assert max(plain) > 2.0 and max(bounded) < 0.5 * max(plain)
    assert all(b <= p for b, p in zip(bounded, plain))


def test_outliers_are_clipped_and_too_few_stars_give_nothing():
    t = star_table(0, e_const=(0.0, 0.0))
    base = field_percent(t)
    # 10 galaxies aligned along x among 300 stars: the clipped mean hardly moves
    qxx = t.qxx.copy()
    qxx[:10] *= 3.0
    bent = StarShapes(t.x, t.y, qxx, t.qyy, t.qxy, t.snr, t.weight_sigma, t.shape)
    assert abs(field_percent(bent) - base) < 0.5
    few = star_table(0, n=DEFAULT_FIELD_ROTATION["min_stars"] - 1)
    assert elongation_sums(few) is None and field_percent(few) == 0.0 and field_percent(None) == 0.0


def test_term_form_and_malformed_entry():
    term = StarElongationTerm.from_metadata({"weight": 1.5, "offset": 8.0, "params": {"sigmas": 2.0}})
    assert term(7.9) == 0.0 and term(9.0) == pytest.approx(1.5 * np.log(2.0)) and term.params == {"sigmas": 2.0}
    with pytest.raises(ValueError, match="^star_elongation needs numeric"):
        StarElongationTerm.from_metadata({"weight": None, "offset": 1})


def _network_with(tmp_path, entries: dict):
    from maximask.resources import default_net_dir

    d = tmp_path / "net"
    shutil.copytree(default_net_dir("maxitrack"), d)
    meta = json.loads((d / "metadata.json").read_text())
    meta.update(entries)
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def test_command_adds_the_term_for_elongated_stars(tmp_path, monkeypatch):
    import fitsio

    from maximask.network import Network
    from maxitrack import cli
    from maxitrack.scoring import logit

    net = _network_with(tmp_path, {
        "field_rotation": {"weight": 0.0, "offset": 0.0, "params": dict(DEFAULT_FIELD_ROTATION)},
        "star_elongation": {"weight": 1.0, "offset": 0.0, "params": {"sigmas": 2.0}},
    })
    base = _network_with(tmp_path / "b", {
        "field_rotation": {"weight": 0.0, "offset": 0.0, "params": dict(DEFAULT_FIELD_ROTATION)},
    })
    im, _ = elliptical_field(7, shape=(512, 512), n=40, sig=(2.0, 1.4))  # every star longer along x
    f = tmp_path / "a.fits"
    fitsio.write(str(f), im, clobber=True)
    monkeypatch.chdir(tmp_path)
    # the tiles alone already call these stars smeared: a tiny prior keeps both scores off 1
    assert cli.main([str(f), "--net_dir", str(net), "-o", "with.out", "-q", "--prior", "1e-6"]) == 0
    assert cli.main([str(f), "--net_dir", str(base), "-o", "without.out", "-q", "--prior", "1e-6"]) == 0
    p_with = float((tmp_path / "with.out").read_text().split()[1])
    p_without = float((tmp_path / "without.out").read_text().split()[1])
    sc = cli.Scorer(net, 0.5, 16)
    acc = sc.star_elongation_statistic()
    assert acc.sigmas == 2.0  # the term's parameter reaches the statistic
    acc.add(sc.hdu(im).stars)
    assert acc.percent() > 10  # (4 - 1.96) / (4 + 1.96) = 34 % unweighted, diluted by the weight
    gain = np.log1p(acc.percent())
    assert logit(p_with) - logit(p_without) == pytest.approx(gain, abs=2e-3)
    assert Network(net).model_id != Network(base).model_id


def test_the_term_needs_the_field_rotation_entry(tmp_path, capsys):
    import fitsio

    from maxitrack import cli

    net = _network_with(tmp_path, {"field_rotation": None, "star_elongation": {"weight": 1.0, "offset": 0.0}})
    im, _ = elliptical_field(7, shape=(256, 256), n=10)
    f = tmp_path / "a.fits"
    fitsio.write(str(f), im, clobber=True)
    assert cli.main([str(f), "--net_dir", str(net), "-o", str(tmp_path / "x.out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "star_elongation needs field_rotation" in err[0] and str(net) in err[0]
    assert not (tmp_path / "x.out").exists()
