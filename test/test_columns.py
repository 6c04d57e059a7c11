"""The hot-column score: which lines score, and how it adds to the HCL logit."""

import numpy as np
import pytest

from maximask.classes import ABBRS
from maximask.columns import ColumnScore, HotLines, block_edges

ENTRY = {"class": "HCL", "gate_class": "SAT", "gate": -1.0, "slope": 0.9, "offset": -3.8,
         "min_score": 3.0, "max_score": 30.0, "block": 64}


def noise_frame(shape, seed=0):
    """The network's input for pure sky noise, plus ``lin`` to add features to (noise units)."""
    return np.random.default_rng(seed).normal(0.0, 1.0, shape)


def scores(lin, block=64):
    frame = np.arcsinh(lin).astype(np.float32)
    return HotLines.of_frame(frame, block).window(slice(0, lin.shape[0]), slice(0, lin.shape[1]))


def test_blocks_cover_the_frame_in_nearly_equal_parts():
    np.testing.assert_array_equal(block_edges(256, 64), [0, 64, 128, 192, 256])
    np.testing.assert_array_equal(block_edges(150, 64), [0, 75, 150])  # no 22-row remainder
    np.testing.assert_array_equal(block_edges(20, 64), [0, 20])


def test_a_faint_hot_column_and_row_score_and_the_sky_does_not():
    lin = noise_frame((256, 320))
    lin[:, 100] += 1.0  # 1 sigma per pixel: invisible pixel by pixel
    lin[200, :] += 1.0  # a hot row
    s = scores(lin)
    assert s[:, 100].min() > 3.0 and s[200, :].min() > 3.0
    sky = np.ones_like(s, bool)
    sky[:, 99:102] = sky[199:202, :] = False
    assert s[sky].max() < 3.0


def test_steps_and_wide_lines_are_not_hot_columns():
    lin = noise_frame((256, 256), seed=1)
    lin[:, :60] += 5.0  # an overscan-like step: an excess over one side only
    x = np.arange(256)
    lin += 5.0 * np.exp(-0.5 * ((x - 180) / 1.7) ** 2)  # a sky line of a spectrum, 4 px FWHM
    hot = lin.copy()
    hot[:, 120] += 5.0  # a hot column as bright as the line's peak
    s, s_hot = scores(lin), scores(hot)
    # a line's flanks still stand out of their far side, but less than half as much
    assert s.max() < 0.5 * s_hot[:, 120].min()
    assert s[:, 55:65].max() < 3.0


def test_the_score_adds_probabilities_where_it_passes_and_the_gate_is_open():
    score = ColumnScore.from_metadata(ENTRY, ABBRS)
    hcl, sat = ABBRS.index("HCL"), ABBRS.index("SAT")
    assert (score.channel, score.gate_channel) == (hcl, sat)
    logits = np.full((2, 3, len(ABBRS)), -9.0, np.float32)
    logits[1, 2, sat] = 0.5  # a bleed trail, which the network calls SAT
    before = logits.copy()
    s = np.array([[2.0, 4.0, 1000.0], [3.0, 10.0, 50.0]], np.float32)
    iy, ix = np.nonzero(np.ones_like(s, bool))
    score.add_to(logits, (iy, ix, s[iy, ix]))
    for (y, x), expected in {(0, 1): 4.0, (0, 2): 30.0, (1, 1): 10.0}.items():
        assert logits[y, x, hcl] == pytest.approx(np.logaddexp(-9.0, 0.9 * np.log(expected) - 3.8), abs=1e-5)
        logits[y, x, hcl] = -9.0
    np.testing.assert_array_equal(logits, before)  # at or below min_score, behind the gate: unchanged


def test_window_hits_are_the_pixels_over_the_floor_each_once():
    lin = noise_frame((300, 280), seed=3)
    lin[:, 40] += 2.0
    lin[:150, 200] += 1.5  # a partial column: from its trap to the serial register
    lin[77, :] += 2.0
    lines = HotLines.of_frame(np.arcsinh(lin).astype(np.float32), 64)
    windows = ((slice(0, 300), slice(0, 280)), (slice(60, 124), slice(30, 230)), (slice(140, 150), slice(0, 50)))
    for rows, cols in windows:
        dense = lines.window(rows, cols)
        iy, ix, s = lines.window_hits(rows, cols, 3.0)
        assert len(set(zip(iy.tolist(), ix.tolist()))) == len(iy)
        np.testing.assert_array_equal(s, dense[iy, ix])
        missed = np.ones_like(dense, bool)
        missed[iy, ix] = False
        assert dense[missed].max() <= 3.0 and (s > 3.0).any()


@pytest.mark.parametrize("change, match", [
    ({"block": 4}, "block"), ({"block": 64.0}, "block"), ({"block": True}, "block"),
    ({"min_score": 40.0}, "min_score"), ({"min_score": 0.0}, "min_score"),
    ({"class": "XYZ"}, "XYZ"), ({"gate_class": "XYZ"}, "XYZ"), ({"slope": None}, "slope"),
])
def test_malformed_metadata_is_refused(change, match):
    entry = {k: v for k, v in {**ENTRY, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        ColumnScore.from_metadata(entry, ABBRS)


def test_engine_adds_the_score_to_hcl_only_and_tiles_seamlessly(network, one_class_added):
    assert network.metadata.tile_size - 2 * network.metadata.margin < 230  # several tiles
    from maximask.normalize import normalize_image

    rng = np.random.default_rng(2)
    image = rng.normal(500.0, 8.0, (300, 230)).astype(np.float32)
    image[:, 77] += 24.0  # a 3-sigma hot column
    entry = dict(ENTRY, block=32, gate=50.0)  # the test network's SAT logits would close the gate

    alone, got = one_class_added(image, "HCL", columns=entry)  # every other class unchanged
    hcl = ABBRS.index("HCL")
    s = HotLines.of_frame(normalize_image(image).data, 32).window(slice(0, 300), slice(0, 230))
    expected = np.moveaxis(alone, 0, -1).copy()
    iy, ix = np.nonzero(s > entry["min_score"])
    ColumnScore.from_metadata(entry, ABBRS).add_to(expected, (iy, ix, s[iy, ix]))
    np.testing.assert_allclose(got[hcl], expected[..., hcl], rtol=1e-6, atol=1e-6)
    assert (got[hcl, :, 77] > alone[hcl, :, 77]).all()
