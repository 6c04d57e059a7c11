"""The dead-pixel dip score: which pixels dip, by how much, and how it adds to the DP logit."""

import numpy as np
import pytest

from maximask.classes import ABBRS
from maximask.dips import DipScore, neighbour_dips, neighbour_pair_dips
from maximask.engine import infer


def brute_force_dips(frame):
    """min(8 neighbours) - pixel in linear units, edges repeated, by the definition."""
    lin = np.sinh(frame.astype(np.float64))
    p = np.pad(lin, 1, mode="edge")
    h, w = frame.shape
    return np.min([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)],
                  axis=0) - lin


def test_dips_match_the_definition_inside_and_at_the_edges():
    rng = np.random.default_rng(0)
    frame = np.arcsinh(rng.normal(0, 1, (40, 50))).astype(np.float32)
    frame[10, 10] = np.arcsinh(-30.0)  # a dead pixel on the sky
    frame[0, 0] = np.arcsinh(-8.0)  # at a corner: its repeated self is its neighbour, no dip
    frame[20, 48] = np.arcsinh(-6.0)  # next to an edge
    frame[30:33, 30:33] = np.arcsinh(-10.0)  # a 3x3 hole: no pixel of it is below all its neighbours
    expected = brute_force_dips(frame)
    iy, ix, dip = neighbour_dips(frame, slice(0, 40), slice(0, 50), 1.0)
    ey, ex = np.nonzero(expected > 1.0)
    np.testing.assert_array_equal(iy, ey)
    np.testing.assert_array_equal(ix, ex)
    np.testing.assert_allclose(dip, expected[ey, ex], rtol=1e-4)
    got = {(int(y), int(x)) for y, x in zip(iy, ix)}
    assert {(10, 10), (20, 48)} <= got and (0, 0) not in got
    assert not any(30 <= y < 33 and 30 <= x < 33 for y, x in got)
    # any window gives its pixels the whole frame's values
    wy, wx, wd = neighbour_dips(frame, slice(5, 25), slice(30, 50), 1.0)
    inside = (ey >= 5) & (ey < 25) & (ex >= 30)
    np.testing.assert_array_equal(wy + 5, ey[inside])
    np.testing.assert_array_equal(wx + 30, ex[inside])
    np.testing.assert_allclose(wd, expected[ey[inside], ex[inside]], rtol=1e-4)


def test_dip_score_adds_probabilities_at_the_dips_only():
    score = DipScore.from_metadata({"class": "DP", "slope": 1.5, "offset": -7.0, "min_dip": 1.0}, ABBRS)
    dp = ABBRS.index("DP")
    assert score.channel == dp
    logits = np.full((3, 4, len(ABBRS)), -9.0, np.float32)
    before = logits.copy()
    dips = (np.array([1, 2]), np.array([0, 3]), np.array([1.5, 200.0], np.float32))
    score.add_to(logits, dips)
    for y, x, d in zip(*dips):
        p = 1 / (1 + np.exp(9.0)) + 1 / (1 + np.exp(7.0 - 1.5 * np.log(d)))
        assert logits[y, x, dp] == pytest.approx(np.log(p / (1 - p)), abs=0.01)  # for small p
    logits[1, 0, dp] = logits[2, 3, dp] = -9.0
    np.testing.assert_array_equal(logits, before)
    with pytest.raises(ValueError, match="min_dip"):
        DipScore.from_metadata({"slope": 1.0, "offset": 0.0, "min_dip": 0.0}, ABBRS)
    with pytest.raises(ValueError, match="slope"):
        DipScore.from_metadata({"offset": 0.0, "min_dip": 1.0}, ABBRS)
    with pytest.raises(ValueError, match="XYZ"):
        DipScore.from_metadata({"class": "XYZ", "slope": 1.0, "offset": 0.0, "min_dip": 1.0}, ABBRS)


def test_engine_adds_the_dip_score_to_dp_only(one_class_added):
    from maximask.normalize import normalize_image

    rng = np.random.default_rng(1)
    image = rng.normal(500.0, 8.0, (150, 230)).astype(np.float32)
    image[40, 100] = 0.0  # a dead pixel
    image[120, 7] = 300.0
    entry = {"class": "DP", "slope": 1.5, "offset": -7.0, "min_dip": 1.0}

    alone, got = one_class_added(image, "DP", dips=entry)  # every other class unchanged
    dp = ABBRS.index("DP")
    frame = normalize_image(image).data
    iy, ix, dip = neighbour_dips(frame, slice(0, 150), slice(0, 230), 1.0)
    expected = alone[dp].copy()
    expected[iy, ix] = np.logaddexp(expected[iy, ix], 1.5 * np.log(dip) - 7.0)
    np.testing.assert_allclose(got[dp], expected, rtol=1e-5, atol=1e-5)
    assert got[dp, 40, 100] > alone[dp, 40, 100] + 0.1 and got[dp, 120, 7] > alone[dp, 120, 7]


def test_peaks_are_the_dips_of_the_negated_frame():
    rng = np.random.default_rng(4)
    frame = np.arcsinh(rng.normal(0, 1, (40, 50))).astype(np.float32)
    frame[12, 30] = np.arcsinh(40.0)  # a hot pixel
    frame[20:23, 5:8] = np.arcsinh(25.0)  # a star-like 3x3 plateau: no pixel above all its neighbours
    expected = brute_force_dips(-frame)  # pixel - max(8 neighbours)
    iy, ix, peak = neighbour_dips(frame, slice(0, 40), slice(0, 50), 1.0, upward=True)
    ey, ex = np.nonzero(expected > 1.0)
    np.testing.assert_array_equal(iy, ey)
    np.testing.assert_array_equal(ix, ex)
    np.testing.assert_allclose(peak, expected[ey, ex], rtol=1e-4)
    assert (12, 30) in set(zip(iy.tolist(), ix.tolist()))
    assert not any(20 <= y < 23 and 5 <= x < 8 for y, x in zip(iy, ix))
    score = DipScore.from_metadata({"slope": 1.0, "offset": -6.0, "min_dip": 1.0}, ABBRS, "peaks")
    assert score.channel == ABBRS.index("HP") and score.upward
    for got, want in zip(score.find(frame, slice(0, 40), slice(0, 50)), (iy, ix, peak)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="peaks needs 'slope'"):
        DipScore.from_metadata({"offset": 0.0, "min_dip": 1.0}, ABBRS, "peaks")


def test_engine_adds_dips_to_dp_and_peaks_to_hp(network, with_metadata, logit_planes):
    rng = np.random.default_rng(5)
    image = rng.normal(500.0, 8.0, (150, 230)).astype(np.float32)
    image[40, 100] = 0.0  # a dead pixel
    image[90, 150] = 900.0  # a hot pixel
    dips = {"class": "DP", "slope": 1.5, "offset": -7.0, "min_dip": 1.0}
    peaks = {"class": "HP", "slope": 1.5, "offset": -7.0, "min_dip": 1.0}

    alone = infer(image, network, batch_size=3, tile_transform=logit_planes)
    with_dips = infer(image, with_metadata(dips=dips), batch_size=3, tile_transform=logit_planes)
    both = infer(image, with_metadata(dips=dips, peaks=peaks), batch_size=3, tile_transform=logit_planes)
    dp, hp = ABBRS.index("DP"), ABBRS.index("HP")
    others = [c for c in range(len(ABBRS)) if c != hp]
    np.testing.assert_array_equal(both[others], with_dips[others])
    assert both[hp, 90, 150] > alone[hp, 90, 150] and both[dp, 40, 100] > alone[dp, 40, 100]
    assert both[hp, 40, 100] == alone[hp, 40, 100]  # a hole is no peak


def test_pairs_are_beyond_all_neighbours_but_one_and_not_single_dips():
    rng = np.random.default_rng(6)
    frame = np.arcsinh(rng.normal(0, 1, (40, 50))).astype(np.float32)
    frame[10, 20:22] = np.arcsinh(-30.0)  # a pair of dead pixels
    frame[30, 40] = np.arcsinh(-30.0)  # a single one: the one-pixel score's, not the pair term's
    lin = np.sinh(frame.astype(np.float64))
    p = np.pad(lin, 1, mode="edge")
    ordered = np.sort([p[dy : dy + 40, dx : dx + 50] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)],
                      axis=0)
    lowest, second = ordered[0] - lin, ordered[1] - lin
    expected = (lowest <= 1.0) & (second > 1.0)
    iy, ix, d2 = neighbour_pair_dips(frame, slice(0, 40), slice(0, 50), 1.0)
    ey, ex = np.nonzero(expected)
    np.testing.assert_array_equal(np.lexsort((ix, iy)), np.arange(len(iy)))
    np.testing.assert_array_equal(iy, ey)
    np.testing.assert_array_equal(ix, ex)
    np.testing.assert_allclose(d2, second[ey, ex], rtol=1e-4)
    found = set(zip(iy.tolist(), ix.tolist()))
    assert {(10, 20), (10, 21)} <= found and (30, 40) not in found
    single = set(zip(*[a.tolist() for a in neighbour_dips(frame, slice(0, 40), slice(0, 50), 1.0)[:2]]))
    assert not found & single
    # a window gives its pixels the whole frame's values
    wy, wx, wd = neighbour_pair_dips(frame, slice(5, 25), slice(15, 45), 1.0)
    assert {(5, 5), (5, 6)} <= set(zip(wy.tolist(), wx.tolist()))


def test_pair_terms_come_from_the_entrys_pairs():
    entry = {"slope": 1.5, "offset": -7.0, "min_dip": 1.0}
    assert len(DipScore.all_from_metadata(entry, ABBRS)) == 1
    assert DipScore.all_from_metadata(None, ABBRS, "peaks") == []
    single, pair = DipScore.all_from_metadata(dict(entry, pairs={"slope": 2.0, "offset": -9.0}), ABBRS, "peaks")
    assert (single.pairs, pair.pairs, pair.upward, pair.channel) == (False, True, True, ABBRS.index("HP"))
    assert (pair.slope, pair.offset, pair.min_dip) == (2.0, -9.0, 1.0)
    with pytest.raises(ValueError, match="dips pairs needs 'offset'"):
        DipScore.all_from_metadata(dict(entry, pairs={"slope": 2.0}), ABBRS)


def test_engine_adds_the_pair_term_to_its_class_only(network, with_metadata, logit_planes):
    rng = np.random.default_rng(7)
    image = rng.normal(500.0, 8.0, (150, 230)).astype(np.float32)
    image[60, 70:72] = 900.0  # a pair of hot pixels
    peaks = {"class": "HP", "slope": 1.5, "offset": -7.0, "min_dip": 1.0}

    single = infer(image, with_metadata(peaks=peaks), batch_size=3, tile_transform=logit_planes)
    both = infer(image, with_metadata(peaks=dict(peaks, pairs={"slope": 1.5, "offset": -7.0})), batch_size=3,
                 tile_transform=logit_planes)
    hp = ABBRS.index("HP")
    others = [c for c in range(len(ABBRS)) if c != hp]
    np.testing.assert_array_equal(both[others], single[others])
    assert (both[hp, 60, 70:72] > single[hp, 60, 70:72]).all()
