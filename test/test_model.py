"""The network architecture: output shape, logits, exact receptive field, shipped network consistency."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maximask.classes import ABBRS
from maximask.metrics import ScoreHistogram, class_metrics, mask_logit_threshold
from maximask.model import Architecture, receptive_field, required_margin
from maximask.resources import default_net_dir

SMALL = Architecture(widths=(4, 6, 8), encoder_convs=(1, 1, 1), decoder_convs=(1, 1), n_classes=3)
# the same with the full-resolution refinement
SMALL_REFINED = Architecture(widths=(4, 6, 8), encoder_convs=(1, 1, 1), decoder_convs=(1, 1), n_classes=3,
                             refine=2, refine_hidden=4)
# and with the cosmic-ray refinement as well (its 5x5 convolution)
SMALL_CR = Architecture(widths=(4, 6, 8), encoder_convs=(1, 1, 1), decoder_convs=(1, 1), n_classes=3,
                        refine=2, refine_hidden=4, cr_refine=2, cr_hidden=3)


@pytest.fixture(scope="module", params=[SMALL, SMALL_REFINED, SMALL_CR], ids=["coarse", "refined", "cr-refined"])
def small(request):
    """(architecture, Keras model with random weights)."""
    pytest.importorskip("tensorflow")
    import keras

    from maximask.model import build_model

    keras.utils.set_random_seed(1)
    model = build_model(request.param, batch_norm=False)
    # random biases too, so that zero padding differs from a zero-valued input region
    model.set_weights([np.random.default_rng(i).normal(0, 0.5, w.shape).astype(np.float32)
                       for i, w in enumerate(model.get_weights())])
    return request.param, model


def _run(model, image):
    return np.asarray(model(image[None, :, :, None], training=False))[0]


def test_output_shape_and_logits(small):
    _, small_model = small
    image = np.random.default_rng(0).normal(size=(64, 96)).astype(np.float32) * 5
    out = _run(small_model, image)
    assert out.shape == (64, 96, 3)
    assert out.dtype == np.float32
    # logits, not probabilities: not confined to [0, 1]
    assert out.min() < 0 or out.max() > 1


def test_margin_is_the_receptive_field(small):
    """A pixel's output changes only within the claimed receptive field of a changed input pixel,
    and the bound is reached (the claim is exact, not a loose over-estimate)."""
    arch, small_model = small
    left, right = receptive_field(arch)
    m = arch.size_multiple
    image = np.random.default_rng(1).normal(size=(32, 256)).astype(np.float32)
    cols = np.arange(96, 96 + m)  # every phase of the downsampling grid
    batch = np.repeat(image[None], len(cols) + 1, axis=0)
    for k, col in enumerate(cols):
        batch[k + 1, :, col] += 50.0
    out = np.asarray(small_model(batch[..., None], training=False))
    reach = []
    for k, col in enumerate(cols):
        changed = np.nonzero(np.abs(out[k + 1] - out[0]).max(axis=(0, 2)) > 0)[0]
        assert changed.min() >= col - right
        assert changed.max() <= col + left
        reach.append(max(col - changed.min(), changed.max() - col))
    assert max(reach) == max(left, right)
    assert required_margin(arch) % m == 0 and required_margin(arch) >= max(left, right)


def test_tiled_output_equals_whole_image(small):
    """With the margin and aligned offsets, a tile's core equals the whole-image output there."""
    arch, small_model = small
    margin, m = required_margin(arch), arch.size_multiple
    image = np.random.default_rng(2).normal(size=(3 * margin + 4 * m, 3 * margin + 4 * m)).astype(np.float32)
    whole = _run(small_model, image)
    y0 = x0 = m  # aligned tile offset inside the frame
    t = 2 * margin + 2 * m
    tile = _run(small_model, image[y0:y0 + t, x0:x0 + t])
    core = np.s_[margin:t - margin, margin:t - margin]
    np.testing.assert_allclose(tile[core], whole[y0:y0 + t, x0:x0 + t][core], rtol=1e-4, atol=1e-4)


def test_default_architecture_budget():
    pytest.importorskip("tensorflow")
    from maximask.model import build_model

    arch = Architecture()
    model = build_model(arch)
    assert model.count_params() <= 3_000_000
    assert arch.n_classes == len(ABBRS)
    assert required_margin(arch) % arch.size_multiple == 0


def test_metrics_from_histograms():
    rng = np.random.default_rng(3)
    truth = (rng.random((1, 50, 50)) < 0.2).astype(np.uint8)
    logits = (rng.normal(size=(1, 50, 50)) + 2.0 * truth).astype(np.float32)
    hist = ScoreHistogram(1)
    hist.add(logits, truth)
    m = class_metrics(hist.pos[0], hist.neg[0], hist.edges)
    # exact AUC by pair counting
    pos, neg = logits[truth == 1], logits[truth == 0]
    exact = (pos[:, None] > neg[None, :]).mean()
    assert m["auc"] == pytest.approx(exact, abs=2e-3)
    assert m["n_pos"] == truth.sum()
    assert 0 < m["best_f1"] <= 1


def _histogram(pos_logits, neg_logits):
    logits = np.concatenate([pos_logits, neg_logits]).astype(np.float32)[None, None, :]
    truth = np.concatenate([np.ones(len(pos_logits)), np.zeros(len(neg_logits))])[None, None, :]
    hist = ScoreHistogram(1)
    hist.add(logits, truth)
    return hist.pos[0], hist.neg[0], hist.edges


def test_mask_threshold_separable_class_is_f1_optimum():
    rng = np.random.default_rng(5)
    pos, neg, edges = _histogram(rng.normal(4, 1, 2000), rng.normal(-4, 1, 200_000))
    d = mask_logit_threshold(pos, neg, edges)
    assert d["branch"] == "f1"
    assert d["logit"] == pytest.approx(class_metrics(pos, neg, edges)["best_f1_logit"])
    assert d["fpr"] <= 0.01 and d["tpr"] > 0.9


def test_mask_threshold_capped_at_one_percent_of_clean_pixels_of_a_frame():
    # a common, weakly separated class: the F1 optimum flags most clean pixels
    rng = np.random.default_rng(6)
    pos, neg, edges = _histogram(rng.normal(1.0, 1, 50_000), rng.normal(0, 1, 100_000))
    k_f1 = int(np.searchsorted(edges, class_metrics(pos, neg, edges)["best_f1_logit"] - 1e-9))
    assert neg[k_f1:].sum() / neg.sum() > 0.1
    d = mask_logit_threshold(pos, neg, edges)
    assert d["branch"] == "frame cap"
    assert d["fpr"] <= 0.01
    # the lowest threshold within the cap: one bin lower exceeds it
    k = int(np.searchsorted(edges, d["logit"] - 1e-9))
    assert neg[k - 1:].sum() / neg.sum() > 0.01
    assert d["lift"] > 5


def test_mask_threshold_caps_frames_where_false_positives_gather():
    # ten frames; in one, many clean pixels score high (a bright nebula under the cosmic-ray class)
    rng = np.random.default_rng(8)
    pos = _histogram(rng.normal(3, 1, 5000), np.array([]))[0]
    negs = [_histogram(np.array([]), rng.normal(-4, 1, 100_000))[1] for _ in range(9)]
    negs.append(_histogram(np.array([]), np.concatenate([rng.normal(-4, 1, 90_000),
                                                         rng.normal(2, 0.5, 10_000)]))[1])
    edges = ScoreHistogram(1).edges
    neg_frames = np.array(negs)
    pooled = mask_logit_threshold(pos, neg_frames.sum(axis=0), edges)  # one "frame": pooled cap
    per_frame = mask_logit_threshold(pos, neg_frames, edges)
    assert pooled["branch"] == "f1" and per_frame["branch"] == "frame cap"
    assert per_frame["logit"] > pooled["logit"]
    flagged = neg_frames[:, int(np.searchsorted(edges, per_frame["logit"] - 1e-9)):].sum(axis=1) / 100_000
    assert (flagged <= 0.01).all() and per_frame["frames_within_cap"] == 1.0
    # 90 % of the frames within the cap is enough at frame_quantile 0.9: the pooled optimum stands
    assert mask_logit_threshold(pos, neg_frames, edges, frame_quantile=0.9)["logit"] == pooled["logit"]


def test_mask_threshold_refuses_a_class_the_network_cannot_separate():
    rng = np.random.default_rng(7)
    pos, neg, edges = _histogram(rng.normal(0.2, 1, 50_000), rng.normal(0, 1, 100_000))
    d = mask_logit_threshold(pos, neg, edges)
    assert d["logit"] is None and d["branch"] == "lift"
    assert mask_logit_threshold(pos, neg, edges, min_lift=0)["logit"] is not None


def test_mask_threshold_without_positives():
    pos, neg, edges = _histogram(np.array([]), np.zeros(10))
    assert mask_logit_threshold(pos, neg, edges)["branch"] == "empty"


SHIPPED = default_net_dir()


@pytest.mark.skipif(not (SHIPPED / "model.tflite").is_file(), reason="no shipped network")
def test_shipped_network_consistent():
    from maximask.network import Network, weights_hash

    meta = json.loads((SHIPPED / "metadata.json").read_text())
    assert meta["classes"] == list(ABBRS)
    assert meta["output"] == "logits"
    net = Network(SHIPPED, num_threads=1)
    files = [SHIPPED / "model.tflite"] + ([SHIPPED / meta["refinement"]["file"]] if meta.get("refinement") else [])
    context_dir = (meta.get("context") or {}).get("network")
    if context_dir:  # the context network's weights count too
        inner = json.loads((SHIPPED / context_dir / "metadata.json").read_text())
        files += [SHIPPED / context_dir / "model.tflite"] + (
            [SHIPPED / context_dir / inner["refinement"]["file"]] if inner.get("refinement") else [])
    assert net.files == files
    assert meta["extra"]["model_id"] == weights_hash(*files, inference=meta)
    arch = Architecture.from_dict(meta["extra"]["architecture"])
    assert meta["margin"] == required_margin(arch)
    assert meta["size_multiple"] == arch.size_multiple
    assert meta["tile_size"] % arch.size_multiple == 0 and meta["tile_size"] > 2 * meta["margin"]
    assert len(meta["training_priors"]) == len(ABBRS)
    assert all(0 < p < 1 for p in meta["training_priors"])
    assert sum(f.stat().st_size for f in files) <= 15e6
    t = meta["tile_size"]
    out = net.predict_logits(np.zeros((1, t, t, 1), np.float32))
    assert out.shape == (1, t, t, len(ABBRS))
    assert np.isfinite(out).all()
    assert net.model_id == meta["extra"]["model_id"]


@pytest.mark.skipif(not (SHIPPED / "model.tflite").is_file(), reason="no shipped network")
def test_shipped_network_small_frames_run_in_a_fitted_tile():
    """The shipped graphs are made of size-free operators: a frame smaller than a tile's core runs
    in one smaller tile (a 300 x 200 frame: 576^2 instead of 1280^2) with the same logits."""
    from maximask.engine import infer
    from maximask.network import Network
    from maximask.tiling import fitted_tile_size

    net = Network(SHIPPED, num_threads=1)
    assert net.flexible_tiles
    meta = net.metadata
    shape = (300, 200)
    assert fitted_tile_size(shape, meta.tile_size, meta.margin, meta.size_multiple) == 576
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 5.0, shape).astype(np.float32)
    image[150:156, 40:120] += 400.0

    def logits(lg):
        return np.moveaxis(lg, -1, 0).copy()

    fitted = infer(image, net, tile_transform=logits)
    net.flexible_tiles = False  # the whole tile, as before fitting
    whole = infer(image, net, tile_transform=logits)
    np.testing.assert_array_equal(fitted, whole)


@pytest.mark.parametrize("arch", [SMALL_REFINED, SMALL_CR], ids=["refined", "cr-refined"])
def test_exported_refinement_runs_in_exact_strips(tmp_path, monkeypatch, arch):
    """A refined network is exported as a coarse model plus a row-strip refinement (with the
    cosmic-ray refinement, where there is one); LiteRT running the two, strip by strip, gives the
    Keras model's logits on whole tiles (strip edges, tile edges and several tiles per batch
    included)."""
    pytest.importorskip("tensorflow")
    import keras

    import maximask.network as network_module
    from maximask.model import build_model
    from maximask.network import Network, NetworkMetadata, save_network, strip_starts, weights_hash

    keras.utils.set_random_seed(4)
    model = build_model(arch, batch_norm=False)
    model.set_weights([np.random.default_rng(10 + i).normal(0, 0.5, w.shape).astype(np.float32)
                       for i, w in enumerate(model.get_weights())])
    monkeypatch.setattr(network_module, "REFINE_ROWS", 32)
    tile = 192  # more than twice the margin (64), as the tiler needs
    meta = NetworkMetadata(name="maximask", classes=["CR", "HP", "BG"], training_priors=[0.1, 0.1, 0.8],
                           margin=required_margin(arch), tile_size=tile,
                           size_multiple=arch.size_multiple, normalisation={})
    net_dir = tmp_path / "net"
    model_id = save_network(model, net_dir, meta)
    saved = json.loads((net_dir / "metadata.json").read_text())
    assert saved["refinement"] == {"file": "refine.tflite", "rows": 32, "halo": 4, "block": 4}
    assert model_id == weights_hash(net_dir / "model.tflite", net_dir / "refine.tflite")
    net = Network(net_dir, num_threads=1)
    assert net.model_id == model_id
    batch = np.random.default_rng(5).normal(0, 3, (3, tile, tile, 1)).astype(np.float32)
    batch[1, 30:34] += 20.0  # a bright band across a strip boundary (row 32)
    expected = np.asarray(model(batch, training=False))
    # random weights give logits in the hundreds: float32 accumulation differs by ~1e-5 of that
    tol = 2e-5 * np.abs(expected).max()
    got = net.predict_logits(batch)
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
    # the refinement matters here: without it the logits differ
    coarse = np.asarray(keras.Model(model.inputs[0], model.get_layer("to_full_res").output)(batch))
    assert np.abs(coarse - expected).max() > 1e-2
    # a view of a reused buffer, read-only, when asked for
    view = net.predict_logits(batch[:1], copy=False)
    np.testing.assert_allclose(view, expected[:1], rtol=0, atol=tol)
    assert not view.flags.writeable
    # the tiler's margin: only the strips that cover the core run, and the core is exact
    m = saved["margin"]
    assert 0 < m and strip_starts(tile, 32, 4, m) == [64, 96]
    core = np.s_[:, m:tile - m, m:tile - m]
    np.testing.assert_allclose(net.predict_logits(batch, margin=m)[core], expected[core], rtol=0, atol=tol)


def test_refinement_strips_cover_the_core_only():
    from maximask.network import strip_starts

    assert strip_starts(1280, 160, 4, 0) == list(range(0, 1280, 160))  # the whole tile: 8 strips
    # the shipped geometry: 7 strips for rows 128 .. 1152, the last moved up to end at row 1248
    assert strip_starts(1280, 160, 4, 128) == [128, 288, 448, 608, 768, 928, 1088]
    assert strip_starts(1280, 160, 4, 200) == [200, 360, 520, 680, 840, 1000]  # rows 200 .. 1160
    assert strip_starts(100, 40, 4, 0) == [0, 40, 60]  # the last strip overlaps its neighbour
    assert strip_starts(100, 40, 4, 10) == [8, 48, 60]  # on the head's 4-px grid; rows 8 .. 100


def test_missing_refinement_file_is_a_usage_error(tmp_path):
    from maximask.errors import UsageError
    from maximask.network import Network

    if not (SHIPPED / "refine.tflite").is_file():
        pytest.skip("the shipped network has no separate refinement")
    net_dir = tmp_path / "net"
    net_dir.mkdir()
    for name in ("model.tflite", "metadata.json"):
        (net_dir / name).write_bytes((SHIPPED / name).read_bytes())
    with pytest.raises(UsageError, match="refine.tflite is missing"):
        Network(net_dir)


def test_a_cosmic_ray_refinement_needs_the_refinement():
    with pytest.raises(ValueError, match="cr_refine needs refine > 0"):
        Architecture(cr_refine=8)
