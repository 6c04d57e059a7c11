"""maximask.sim: determinism, class frequencies, and the truth rule checked against the pixels."""

import numpy as np
import pytest

from maximask.classes import ABBRS, INDEX, N_CLASSES
from maximask.errors import UsageError
from maximask.sim import bleed_columns, simulate_frame, simulate_tracking_frame, to_raw
from maximask.sim.config import DEFAULT_CLASS_PROB, choose_classes, make_config
from maximask.sim.frame import _simulate

CONTAMINANTS = ABBRS[:-1]
ONLY = {a: 0.0 for a in CONTAMINANTS}  # class_prob that draws nothing unless forced


def only(*classes, **extra):
    cfg = {"class_prob": ONLY, "force": list(classes), "clean_prob": 0.0}
    cfg.update(extra)
    return cfg


def test_same_seed_same_frame():
    a = simulate_frame((96, 128), np.random.default_rng(11))
    b = simulate_frame((96, 128), np.random.default_rng(11))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    c = simulate_frame((96, 128), np.random.default_rng(12))
    assert not np.array_equal(a[0], c[0])


def test_same_seed_same_tracking_frame():
    a = simulate_tracking_frame((96, 96), np.random.default_rng(5))
    b = simulate_tracking_frame((96, 96), np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


@pytest.mark.parametrize("detector", ["thick", "thin", "nir"])
def test_outputs_types_and_finite(detector):
    rng = np.random.default_rng(3)
    for _ in range(4):
        img, truth, meta = simulate_frame((80, 112), rng, {"detector": detector, "clean_prob": 0.0})
        assert img.dtype == np.float32 and img.shape == (80, 112)
        assert truth.dtype == np.uint8 and truth.shape == (N_CLASSES, 80, 112)
        assert np.isfinite(img).all()
        assert set(np.unique(truth)) <= {0, 1}
        # BG is exactly "no other class"
        np.testing.assert_array_equal(truth[INDEX["BG"]], 1 - truth[:-1].max(axis=0))


def test_default_class_frequencies():
    cfg = make_config(None)
    rng = np.random.default_rng(0)
    n = 2000
    counts = dict.fromkeys(CONTAMINANTS, 0)
    for _ in range(n):
        for c in choose_classes(rng, cfg):
            counts[c] += 1
    clean = cfg["clean_prob"]
    for c in CONTAMINANTS:
        p = DEFAULT_CLASS_PROB[c] * (1 - clean)
        assert abs(counts[c] / n - p) < 4 * np.sqrt(p * (1 - p) / n), c
        assert 0.1 < counts[c] / n < 0.7  # every class is absent from many frames


@pytest.mark.parametrize("abbr", CONTAMINANTS)
def test_forced_class_is_labelled_and_others_absent(abbr):
    rng = np.random.default_rng(100 + INDEX[abbr])
    hits = 0
    for _ in range(4):
        _img, truth, meta = simulate_frame((96, 96), rng, only(abbr))
        hits += bool(truth[INDEX[abbr]].any())
        assert meta["classes_drawn"] == [abbr]
        for other in CONTAMINANTS:
            if other != abbr:
                assert not truth[INDEX[other]].any(), (abbr, other)
    assert hits >= 3


def test_forbidden_classes_never_labelled():
    rng = np.random.default_rng(8)
    for _ in range(5):
        _img, truth, meta = simulate_frame((64, 64), rng, {"forbid": list(CONTAMINANTS)})
        assert truth[INDEX["BG"]].all()
        assert meta["classes_drawn"] == []


def test_saturated_truth_iff_saturation_level():
    rng = np.random.default_rng(21)
    for det in ("thick", "nir"):
        img, truth, meta = simulate_frame((128, 128), rng, only("SAT", "OV", detector=det))
        sat = np.float32(meta["saturation_adu"])
        assert img.max() <= sat
        sat_truth = truth[INDEX["SAT"]].astype(bool)
        assert sat_truth.any()
        np.testing.assert_array_equal(sat_truth, img == sat)


def test_bleed_trails_conserve_charge():
    charge = np.full((200, 50), 100.0)
    charge[100, 25] = 50_000.0
    charge[99:102, 24:27] += 20_000.0
    out = bleed_columns(charge, 10_000.0)
    assert out.max() <= 10_000.0
    assert np.isclose(out.sum(), charge.sum())
    # charge moves only along its own column
    np.testing.assert_allclose(out.sum(axis=0), charge.sum(axis=0))
    trail = out[:, 25] >= 10_000.0
    assert trail.sum() > 5


def test_bleed_in_frame_conserves_charge_per_column():
    dbg = {}
    cfg = make_config(only("SAT", detector="thick", bright_star_density=(3.0, 3.0)))
    _simulate((160, 160), np.random.default_rng(4), cfg, debug=dbg)
    charge, bled = dbg["charge"].astype(np.float64), dbg["bled"]
    assert (charge > bled.max()).any()  # something did bleed
    # columns whose trail does not reach the top or bottom edge lose nothing
    inside = ~((bled[0] >= bled.max() * 0.999) | (bled[-1] >= bled.max() * 0.999))
    np.testing.assert_allclose(bled.sum(axis=0)[inside], charge.sum(axis=0)[inside], rtol=1e-5)


def test_overscan_holds_no_sky():
    rng = np.random.default_rng(2)
    img, truth, meta = simulate_frame((128, 128), rng, only("OV", sky_e=(5000.0, 20000.0)))
    ov = truth[INDEX["OV"]].astype(bool)
    assert ov.any() and (~ov).any()
    rn_adu = meta["read_noise_e"] / meta["gain"]
    assert abs(np.mean(img[ov])) < 2 * rn_adu  # bias residual only, far below the sky
    assert np.mean(img[~ov]) > 10 * rn_adu + 0.5 * meta["sky_adu"]
    assert 0.8 < np.std(img[ov]) / rn_adu < 1.2
    # nothing else is labelled in the overscan
    assert (truth[:, ov].sum(axis=0) == 1).all()


def test_cr_truth_where_cr_adds_flux_above_rule():
    dbg = {}
    cfg = make_config(only("CR", detector="thick", star_density=(1.0, 1.0), galaxy_density=(1.0, 1.0), bright_star_density=(0.01, 0.01), cr_rate=(5e-6, 5e-6), exptime_s=(300.0, 300.0), resample_prob=0.0))
    img, truth, meta = _simulate((192, 192), np.random.default_rng(9), cfg, debug=dbg)
    cr = truth[INDEX["CR"]].astype(bool)
    assert cr.any()
    k = meta["k_sigma"]
    # the rule on the noise-free layers ...
    np.testing.assert_array_equal(cr, dbg["layers"]["CR"] > k * dbg["sigma"])
    # ... and on the pixels: each labelled pixel has CR signal > k sigma, so image - background,
    # in units of sigma, exceeds k on average and is positive in at least ~84 % of them
    bg = (dbg["sky"] + dbg["sources"]) / meta["gain"]
    z = (img - bg)[cr] / (dbg["sigma"][cr] / meta["gain"])
    assert z.mean() > k
    assert np.mean(z > 0) > 0.8
    # pixels not labelled but touched by a CR carry less than the rule
    touched = (dbg["layers"]["CR"] > 0) & ~cr
    assert (dbg["layers"]["CR"][touched] <= k * dbg["sigma"][touched]).all()


def test_cr_count_scales_with_area_and_time():
    rate, t = 4e-6, 200.0
    cfg = only("CR", cr_rate=(rate, rate), exptime_s=(t, t))
    for shape in ((128, 128), (256, 256)):
        counts = [len(simulate_frame(shape, np.random.default_rng(s), cfg)[2]["objects"]["CR"]) for s in range(3)]
        expected = rate * t * shape[0] * shape[1]
        assert abs(np.mean(counts) - expected) < 4 * np.sqrt(expected / 3) + 1


@pytest.mark.parametrize("dtype", ["uint16", "int16"])
def test_raw_like_frames(dtype):
    rng = np.random.default_rng(6)
    img, truth, meta = simulate_frame((96, 96), rng, only("SAT", "OV"))
    raw = to_raw(img, meta, dtype)
    assert raw.dtype == np.dtype(dtype)
    top = meta["adc_max"] if dtype == "uint16" else min(meta["adc_max"], 32767)
    assert raw.min() >= 0 and raw.max() <= top
    # bias is added back: the overscan sits at the bias level
    ov = truth[INDEX["OV"]].astype(bool)
    assert abs(np.median(raw[ov]) - meta["bias_adu"]) < 3 * meta["read_noise_e"] / meta["gain"] + 1
    img2, _t, _m = simulate_frame((96, 96), np.random.default_rng(6), only("SAT", "OV", raw_dtype=dtype))
    np.testing.assert_array_equal(img2, raw)


def test_hot_and_dead_columns_follow_columns():
    rng = np.random.default_rng(13)
    for abbr in ("HCL", "DCL"):
        for _ in range(3):
            _img, truth, meta = simulate_frame((128, 128), rng, only(abbr))
            for obj in meta["objects"][abbr]:
                if obj.get("kind", "column") == "column" and not obj.get("row", False):
                    plane = truth[INDEX[abbr]]
                    cols = np.nonzero(plane.sum(axis=0) >= 8)[0]
                    assert cols.size  # a vertical run of at least 8 pixels exists


@pytest.mark.parametrize("kind", ["none", "drift", "arc", "jump", "shake", "periodic"])
def test_tracking_kinds_and_labels(kind):
    img, label, meta = simulate_tracking_frame((96, 96), np.random.default_rng(1), {"tracking_kind": kind})
    assert label == int(kind != "none")
    assert meta["kind"] == kind
    assert img.dtype == np.float32 and np.isfinite(img).all()


def test_tracking_smear_spreads_flux_without_losing_it():
    cfg = {"forbid": list(CONTAMINANTS), "star_density": (3000.0, 3000.0), "fwhm_px": (2.0, 2.0), "sky_e": (100.0, 100.0)}
    none, _, m0 = simulate_tracking_frame((128, 128), np.random.default_rng(3), dict(cfg, tracking_kind="none"))
    drift, _, m1 = simulate_tracking_frame((128, 128), np.random.default_rng(3), dict(cfg, tracking_kind="drift"))
    assert m1["tracking"]["extent_px"] >= 3
    sky = m0["sky_adu"]
    f0 = (none - sky).sum()
    f1 = (drift - sky).sum()
    assert abs(f1 - f0) < 0.05 * f0
    assert drift.max() < none.max()


def test_tracking_label_share():
    rng = np.random.default_rng(0)
    labels = [simulate_tracking_frame((48, 48), rng, {"forbid": list(CONTAMINANTS)})[1] for _ in range(40)]
    assert 8 <= sum(labels) <= 32


@pytest.mark.parametrize(
    "config",
    [{"nonsense": 1}, {"force": ["XX"]}, {"force": ["CR"], "forbid": ["CR"]}, {"detector": "cmos"}, {"raw_dtype": "float64"}],
)
def test_bad_config_is_a_usage_error(config):
    with pytest.raises(UsageError):
        simulate_frame((32, 32), np.random.default_rng(0), config)


def test_bad_shape_is_a_usage_error():
    with pytest.raises(UsageError):
        simulate_frame((8, 32), np.random.default_rng(0))
    with pytest.raises(UsageError):
        simulate_tracking_frame((32, 32), np.random.default_rng(0), {"tracking_kind": "wobble"})


def test_resampled_frames_have_correlated_noise_and_consistent_truth():
    cfg = only("CR", "SAT", resample_prob=1.0, star_density=(1.0, 1.0), galaxy_density=(1.0, 1.0))
    img, truth, meta = simulate_frame((128, 128), np.random.default_rng(4), cfg)
    assert meta["resampled"]
    z = img[20:-20, 20:-20][~truth[:, 20:-20, 20:-20][:-1].any(axis=0)]
    row = img[64, 10:-10] - np.median(img)
    assert np.corrcoef(row[1:], row[:-1])[0, 1] > 0.1
    np.testing.assert_array_equal(truth[INDEX["SAT"]].astype(bool), img == np.float32(meta["saturation_adu"]))
    assert z.size
