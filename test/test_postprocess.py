import datetime as dt
import math

import numpy as np
import pytest

from maximask.classes import ABBRS, INDEX
from maximask.errors import UsageError
from maximask.postprocess import (
    MASKS,
    PROBABILITIES,
    SINGLE_MASK,
    header_cards,
    logit,
    logit_thresholds,
    make_plan,
    prior_shift,
    transform,
)


def flags_for(*abbrs):
    f = np.zeros(14, dtype=bool)
    for a in abbrs:
        f[INDEX[a]] = True
    return f


def test_logit_hand_values():
    np.testing.assert_allclose(logit([0.5, 0.75, 0.1]), [0.0, math.log(3), -math.log(9)])
    assert logit(0.0) == -np.inf and logit(1.0) == np.inf


def test_prior_shift_hand_value():
    # odds(0.5) / odds(0.1) = 1 / (1/9) = 9
    np.testing.assert_allclose(prior_shift([0.1, 0.3], [0.5, 0.3]), [math.log(9), 0.0])


def test_prior_modification_hand_value():
    # p = 0.5, train 0.2, new 0.5: odds(p') = 1 * 1 / 0.25 = 4, p' = 0.8
    train = np.full(14, 0.2)
    plan = make_plan(ABBRS, flags_for("CR"), train, np.full(14, 0.5))
    out = transform(plan, np.zeros((2, 3, 14), np.float32))
    assert out.shape == (1, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.8, rtol=1e-6)


def test_probabilities_without_prior_modification_are_the_sigmoid():
    z = np.linspace(-5, 5, 2 * 3 * 14, dtype=np.float32).reshape(2, 3, 14)
    plan = make_plan(ABBRS, np.ones(14, bool))
    assert plan.mode == PROBABILITIES
    np.testing.assert_allclose(transform(plan, z), 1 / (1 + np.exp(-np.moveaxis(z, -1, 0))), rtol=1e-6)


def test_threshold_on_prior_modified_probability_hand_values():
    # shift log 4 (train 0.2 -> new 0.5); t = 0.75.
    # p = 0.45: odds' = (0.45/0.55)*4 = 3.27 -> p' = 0.766 > 0.75: flagged
    # p = 0.40: odds' = (0.4/0.6)*4 = 2.67 -> p' = 0.727: not flagged
    plan = make_plan(ABBRS, flags_for("TRL"), np.full(14, 0.2), np.full(14, 0.5), np.full(14, 0.75))
    np.testing.assert_allclose(plan.raw_thresholds, [math.log(3) - math.log(4)], rtol=1e-6)
    z = np.zeros((1, 2, 14), np.float32)
    z[0, 0, INDEX["TRL"]] = logit(0.45)
    z[0, 1, INDEX["TRL"]] = logit(0.40)
    out = transform(plan, z)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 2)
    assert out.tolist() == [[[1, 0]]]


@pytest.mark.parametrize("t, expected", [(0.0, 1), (1.0, 0)])
def test_threshold_extremes(t, expected):
    plan = make_plan(ABBRS, flags_for("CR"), thresholds=np.full(14, t))
    z = np.array([-30.0, 0.0, 30.0], np.float32).reshape(1, 3, 1).repeat(14, axis=-1)
    assert (transform(plan, z) == expected).all()


def test_masks_agree_with_thresholding_probabilities_directly():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(16, 20, 14)).astype(np.float32)
    train, new, t = rng.uniform(0.01, 0.5, 14), rng.uniform(0.01, 0.5, 14), rng.uniform(0.05, 0.95, 14)
    plan = make_plan(ABBRS, np.ones(14, bool), train, new, t)
    # the product's definition, in probability space
    p = 1 / (1 + np.exp(-z.astype(np.float64)))
    odds = p / (1 - p) * (new / (1 - new)) / (train / (1 - train))
    expected = np.moveaxis(odds / (1 + odds) > t, -1, 0).astype(np.uint8)
    assert plan.mode == MASKS
    np.testing.assert_array_equal(transform(plan, z), expected)


def test_single_mask_sums_bit_codes_and_background_adds_nothing():
    plan = make_plan(ABBRS, flags_for("CR", "TRL", "BG"), thresholds=np.full(14, 0.5), single_mask=True)
    assert plan.mode == SINGLE_MASK and plan.dtype == np.int16
    z = np.full((1, 4, 14), -5.0, np.float32)
    z[0, 0, INDEX["CR"]] = z[0, 0, INDEX["TRL"]] = 5  # CR + TRL -> 1 + 64
    z[0, 1, INDEX["TRL"]] = 5  # TRL -> 64
    z[0, 2, INDEX["BG"]] = 5  # BG -> 0
    z[0, 3, INDEX["SAT"]] = 5  # not flagged -> 0
    out = transform(plan, z)
    assert out.dtype == np.int16 and out.shape == (1, 4)
    assert out.tolist() == [[65, 64, 0, 0]]


def test_single_mask_of_every_class_fits_int16():
    plan = make_plan(ABBRS, np.ones(14, bool), thresholds=np.zeros(14), single_mask=True)
    assert transform(plan, np.zeros((1, 1, 14), np.float32))[0, 0] == 8191


def test_selected_classes_in_class_order_from_a_permuted_network():
    net = list(reversed(ABBRS))
    plan = make_plan(net, flags_for("SAT", "CR"), thresholds=np.full(14, 0.5))
    assert plan.classes == (INDEX["CR"], INDEX["SAT"])
    assert plan.channels == (13 - INDEX["CR"], 13 - INDEX["SAT"])
    z = np.full((1, 1, 14), -5.0, np.float32)
    z[0, 0, net.index("SAT")] = 5
    assert transform(plan, z)[:, 0, 0].tolist() == [0, 1]


def test_output_shapes_and_dtypes():
    masks = make_plan(ABBRS, flags_for("CR", "HP"), thresholds=np.full(14, 0.5))
    assert masks.output_shape((10, 20)) == (2, 10, 20) and masks.dtype == np.uint8
    assert masks.output_shape((3, 10, 20)) == (3, 2, 10, 20)
    single = make_plan(ABBRS, flags_for("CR", "HP"), thresholds=np.full(14, 0.5), single_mask=True)
    assert single.output_shape((3, 10, 20)) == (3, 10, 20)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(flags=np.ones(14, bool), single_mask=True), "needs thresholding"),
        (dict(flags=np.zeros(14, bool)), "no class flagged"),
        (dict(flags=np.ones(14, bool), network_classes=ABBRS[:5]), "does not output"),
        (dict(flags=np.ones(14, bool), priors=np.full(14, 0.1)), "training prior"),
        (dict(flags=np.ones(14, bool), priors=np.full(14, 0.1), training_priors=[0.0] * 14), "(0, 1)"),
    ],
)
def test_plan_errors(kwargs, words):
    kwargs.setdefault("network_classes", ABBRS)
    with pytest.raises(UsageError) as e:
        make_plan(**kwargs)
    assert words in e.value.reason


def test_header_cards_full_precision_and_keywords():
    priors = np.full(14, 0.01)
    priors[INDEX["CR"]] = 1e-6
    thresh = np.full(14, 0.5)
    thresh[INDEX["SAT"]] = 0.123456789012345678
    plan = make_plan(ABBRS, flags_for("CR", "SAT"), np.full(14, 0.1), priors, thresh)
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    cards = {k: v for k, v, _ in header_cards(plan, "1.2.3", "abcdef0123456789", n_nonfinite=7, date=when)}
    assert cards["CR"] == "cosmic rays" and cards["SAT"] == "saturated pixels"
    assert cards["CR_DIM"] == 0 and cards["SAT_DIM"] == 1
    assert cards["CR_PR"] == 1e-6 and cards["SAT_TH"] == 0.123456789012345678
    assert "CR_SM" not in cards and "HP" not in cards
    assert cards["PRIORS"] is True and cards["THRESH"] is True and cards["SMASK"] is False
    assert cards["MMVERS"] == "1.2.3" and cards["MMMODEL"] == "abcdef0123456789"
    assert cards["MMNONFIN"] == 7 and cards["DATE"] == "2026-01-02T03:04:05"


def test_header_cards_single_mask_has_bit_codes_and_no_planes():
    plan = make_plan(ABBRS, flags_for("TRL", "BG"), thresholds=np.full(14, 0.5), single_mask=True)
    cards = {k: v for k, v, _ in header_cards(plan, "v", "id")}
    assert cards["TRL_SM"] == 64 and cards["BG_SM"] == 0
    assert "TRL_DIM" not in cards and "TRL_PR" not in cards
    assert cards["PRIORS"] is False and cards["SMASK"] is True and "MMNONFIN" not in cards


def test_logit_thresholds_without_shift():
    np.testing.assert_allclose(logit_thresholds([0.5, 0.75]), [0.0, math.log(3)])


def test_header_cards_fit_in_80_characters():
    import warnings

    from astropy.io import fits

    plan = make_plan(ABBRS, np.ones(14, bool), np.full(14, 0.1), np.full(14, 1 / 3), np.full(14, 1 / 7),
                     single_mask=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for card in header_cards(plan, "10.20.30.dev4+g0123456", "0123456789abcdef", n_nonfinite=10**9):
            assert len(fits.Card(*card).image) == 80
