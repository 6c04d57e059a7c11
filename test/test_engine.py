"""Tiled inference: no seams, any frame size, batch-size independence, non-finite pixels."""

import dataclasses

import numpy as np
import pytest

from maximask.engine import infer, predict_probabilities, sigmoid_planes
from maximask.normalize import normalize_image
from maximask.tiling import plan_tiles

# TFLite (XNNPACK) against Keras (TensorFlow) on the same weights: float32 rounding only
ATOL = 1e-4


@pytest.fixture(scope="module")
def network(test_net_dir):
    from maximask.network import Network

    return Network(test_net_dir, num_threads=1)


def frame(shape, seed=0):
    """Sky with noise, a few bright sources, a cosmic-ray-like streak and a bad column."""
    rng = np.random.default_rng(seed)
    img = rng.normal(500.0, 8.0, shape).astype(np.float32)
    h, w = shape
    for _ in range(max(1, h * w // 4000)):
        y, x = rng.integers(0, h), rng.integers(0, w)
        img[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] += rng.uniform(50, 5e4)
    img[:, w // 3] += 300.0
    return img


def whole_image_logits(test_net, image):
    """The Keras model applied once to the whole frame, zero-padded by the margin as the tiler does."""
    meta_norm = normalize_image(image).data
    plan = plan_tiles(image.shape, test_net.tile_size, test_net.margin, test_net.size_multiple)
    logits = test_net.apply_whole(plan.canvas(meta_norm))
    m = test_net.margin
    return logits[m : m + image.shape[0], m : m + image.shape[1]]


def test_fixture_margin_is_the_receptive_field(test_net):
    assert test_net.margin >= test_net.radius > 0
    assert (test_net.tile_size - 2 * test_net.margin) % test_net.size_multiple == 0


@pytest.mark.parametrize("shape", [(150, 230), (100, 80), (64, 64), (45, 200), (13, 7), (1, 3), (133, 44)])
def test_no_seams_tiled_equals_whole_image(test_net, network, shape):
    image = frame(shape)
    info = {}
    got = infer(image, network, batch_size=4, info=info)
    ref = sigmoid_planes(whole_image_logits(test_net, image))
    assert got.shape == (14,) + shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
    assert info["n_tiles"] == len(plan_tiles(shape, test_net.tile_size, test_net.margin, test_net.size_multiple))


def test_seams_would_show_with_too_small_a_margin(test_net, network):
    """The no-seam test can fail: a tiler that trusts a margin below the receptive field is caught."""

    class ShortMargin:
        metadata = dataclasses.replace(network.metadata, margin=2)
        predict_logits = staticmethod(network.predict_logits)

    image = frame((150, 230))
    got = infer(image, ShortMargin(), batch_size=4)
    ref = sigmoid_planes(whole_image_logits(test_net, image))
    assert np.abs(got - ref).max() > 100 * ATOL


def test_batch_size_does_not_change_results(network):
    image = frame((150, 230))
    results = [infer(image, network, batch_size=b) for b in (1, 3, 8, 100)]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-6, rtol=0)


def test_progress_counts_every_tile_once(network):
    done = []
    info = {}
    infer(frame((150, 230)), network, batch_size=4, progress=done.append, info=info)
    assert sum(done) == info["n_tiles"] and all(1 <= d <= 4 for d in done)


def test_custom_transform_and_preallocated_output(test_net, network):
    image = frame((100, 130))
    ref = whole_image_logits(test_net, image)
    # a (h, w) integer result: the bit-mask-like path of the CLI
    out = infer(image, network, tile_transform=lambda lg: (lg[..., 0] > 0).astype(np.uint8))
    assert out.shape == (100, 130) and out.dtype == np.uint8
    agree = out == (ref[..., 0] > 0)
    assert agree.mean() > 0.999  # disagreements only where a logit is 0 to float precision
    assert (np.abs(ref[..., 0][~agree]) < ATOL).all()
    # a (K, h, w) result written into the caller's array
    dest = np.full((2, 100, 130), -1.0, np.float32)
    res = infer(image, network, tile_transform=lambda lg: lg[..., [3, 9]].transpose(2, 0, 1), out=dest)
    assert res is dest
    np.testing.assert_allclose(dest, ref[..., [3, 9]].transpose(2, 0, 1), atol=ATOL, rtol=0)


def test_nonfinite_pixels_handled_and_counted(test_net, network):
    image = frame((150, 230))
    image[60:70, 100:120] = np.nan
    image[5, 200] = np.inf
    info = {}
    got = infer(image, network, batch_size=8, info=info)
    assert info["n_nonfinite"] == 201
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, sigmoid_planes(whole_image_logits(test_net, image)), atol=ATOL, rtol=0)


def test_nonfinite_pixels_reach_only_their_margin(test_net, network):
    """NaN, +inf and -inf are one case; beyond the margin they change nothing but the statistics."""
    base = frame((150, 230))
    outputs = []
    for bad in (np.nan, np.inf, -np.inf):
        image = base.copy()
        image[60:70, 100:120] = bad
        outputs.append(infer(image, network))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])
    # the same pixels at the background level instead of NaN: outputs farther than the margin
    # differ only through the mesh statistics (a few hundred samples fewer)
    image = base.copy()
    image[60:70, 100:120] = normalize_image(base).background
    clean = infer(image, network)
    m = test_net.margin
    far = np.ones(base.shape, bool)
    far[60 - m : 70 + m, 100 - m : 120 + m] = False
    assert np.abs(outputs[0] - clean)[:, far].max() < 0.02
    near = ~far
    near[60:70, 100:120] = False
    assert np.isfinite(outputs[0][:, near]).all()


def test_degenerate_frames_raise(network):
    with pytest.raises(ValueError, match="NaN"):
        infer(np.full((40, 40), np.nan), network)
    with pytest.raises(ValueError, match="constant"):
        infer(np.zeros((40, 40)), network)


def test_predict_probabilities_api(test_net_dir, network):
    image = frame((90, 70))
    p = predict_probabilities(image, test_net_dir, batch_size=2)
    assert p.shape == (14, 90, 70) and p.dtype == np.float32
    assert (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p, infer(image, network), atol=1e-6, rtol=0)


def test_sigmoid_planes_extremes():
    lg = np.array([[[-1000.0, 0.0, 1000.0, np.log(3.0)]]], np.float32)
    with np.errstate(over="raise"):
        p = sigmoid_planes(lg)
    assert p.shape == (4, 1, 1)
    np.testing.assert_allclose(p[:, 0, 0], [0.0, 0.5, 1.0, 0.75], atol=1e-7)
