"""Training helpers of maximask-train: tiles at frame edges, growing a network, logit calibration."""

from __future__ import annotations

import numpy as np
import pytest

from maximask.model import Architecture
from maximask.train import draw_tiles, labels_to_cells

COARSE = Architecture(widths=(4, 6, 8), encoder_convs=(1, 1, 1), decoder_convs=(1, 1), n_classes=3)
REFINED = Architecture(widths=(4, 6, 8), encoder_convs=(1, 1, 1), decoder_convs=(1, 1), n_classes=3,
                       refine=2, refine_hidden=4)


def _frames(f=2, h=64, w=96, c=3):
    rng = np.random.default_rng(5)
    # distinct non-zero values: a pixel is recognisable wherever a tile puts it
    data = (rng.permutation(f * h * w).reshape(f, h, w) + 1.0).astype(np.float32)
    truth = (rng.uniform(size=(f, c, h, w)) < 0.3).astype(np.uint8)
    return data, truth


def test_tiles_inside_frame_without_edge_pad():
    data, truth = _frames()
    x, y = draw_tiles(np.random.default_rng(0), data, truth, 50, 32)
    assert x.shape == (50, 32, 32, 1) and y.shape == (50, 32, 32, 3)
    assert (x != 0).all()


def test_tiles_overhang_frame_edges_with_zeros():
    """With edge_pad, some tiles overhang the frame; the overhang is zero (image and labels), the rest
    is a flipped copy of a frame region whose labels moved with it."""
    data, truth = _frames()
    pad = 16
    x, y = draw_tiles(np.random.default_rng(0), data, truth, 400, 32, edge_pad=pad)
    outside = x[..., 0] == 0
    assert outside.any() and (~outside).any()
    # labels are zero wherever the image is the zero canvas
    assert (y[outside] == 0).all()
    # the overhang is at most edge_pad pixels along each axis
    assert (outside.all(axis=2).sum(axis=1) <= pad).all()
    assert (outside.all(axis=1).sum(axis=1) <= pad).all()
    # every tile pixel inside the frame is a frame pixel with its own labels (flips move both)
    vals = {float(v): tuple(t) for d, tr in zip(data, truth) for v, t in zip(d.ravel(), tr.reshape(3, -1).T)}
    for k in range(0, 400, 37):
        inside = ~outside[k]
        for v, t in zip(x[k, ..., 0][inside], y[k][inside]):
            assert vals[float(v)] == tuple(t.astype(np.uint8))


def test_edge_pad_larger_than_tile():
    data, truth = _frames()
    x, _ = draw_tiles(np.random.default_rng(1), data, truth, 100, 16, edge_pad=64)
    assert ((x[..., 0] != 0).mean(axis=(1, 2)) >= 0.25).all()


def test_labels_to_cells_is_space_to_depth():
    y = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    cells = labels_to_cells(y, block=4)
    assert cells.shape == (2, 2, 2, 48)
    # channel (dy * 4 + dx) * C + c of cell (i, j) is pixel (4i + dy, 4j + dx), class c
    assert cells[1, 1, 0, (2 * 4 + 3) * 3 + 1] == y[1, 4 + 2, 0 + 3, 1]


@pytest.fixture(scope="module")
def coarse_model():
    pytest.importorskip("tensorflow")
    import keras

    from maximask.model import build_model

    keras.utils.set_random_seed(3)
    model = build_model(COARSE, batch_norm=False)
    model.set_weights([np.random.default_rng(i).normal(0, 0.5, w.shape).astype(np.float32)
                       for i, w in enumerate(model.get_weights())])
    return model


def _run(model, image):
    return np.asarray(model(image[None, :, :, None], training=False))[0]


def test_grown_network_starts_as_the_coarse_one(coarse_model):
    """Adding the refinement to a trained network keeps its output until the refinement learns."""
    from maximask.model import build_model
    from maximask.train import transfer_weights

    grown = build_model(REFINED, batch_norm=False)
    fresh = transfer_weights(coarse_model, grown)
    assert sorted(fresh) == ["refine_local", "refine_mix", "refine_out"]
    image = np.random.default_rng(4).normal(size=(64, 64)).astype(np.float32) * 3
    np.testing.assert_allclose(_run(grown, image), _run(coarse_model, image), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", [COARSE, REFINED], ids=["coarse", "refined"])
def test_calibrated_copy_removes_loss_weight_shift(arch):
    """The export subtracts log(w_c) from every output logit of class c, exactly, for both layouts."""
    pytest.importorskip("tensorflow")
    from maximask.model import build_model
    from maximask.train import calibrated_copy

    model = build_model(arch, batch_norm=False)
    model.set_weights([np.random.default_rng(i + 10).normal(0, 0.5, w.shape).astype(np.float32)
                       for i, w in enumerate(model.get_weights())])
    w = np.array([30.0, 2.0, 1.0])
    image = np.random.default_rng(6).normal(size=(32, 64)).astype(np.float32)
    diff = _run(model, image) - _run(calibrated_copy(model, w), image)
    np.testing.assert_allclose(diff, np.broadcast_to(np.log(w), diff.shape), rtol=1e-4, atol=1e-4)


def test_sim_config_inline_or_file(tmp_path):
    from maximask.train import _sim_config

    assert _sim_config(None) is None
    assert _sim_config('{"cr_rate": [1e-7, 1e-6]}') == {"cr_rate": [1e-7, 1e-6]}
    path = tmp_path / "sim.json"
    path.write_text('{"class_prob": {"CR": 0.9}}')
    assert _sim_config(str(path)) == {"class_prob": {"CR": 0.9}}


def test_bundled_training_sim_config_is_valid():
    """The simulator options the shipped network was trained with are accepted by the simulator."""
    import json
    from pathlib import Path

    from maximask.sim.config import make_config

    cfg = make_config(json.loads((Path(__file__).parents[1] / "data/training/maximask_sim.json").read_text()))
    assert cfg["class_prob"]["CR"] > 0.6


def test_positive_weights_square_root_of_imbalance_within_cap():
    from maximask.train import positive_weights

    w = positive_weights([0.5, 0.01, 1e-5, 0.9])
    assert w[0] == 1.0 and w[3] == 1.0  # common classes are not down-weighted below 1
    assert w[1] == pytest.approx(np.sqrt(99.0))
    assert w[2] == 30.0  # the default cap
    assert positive_weights([1e-5], cap=100.0)[0] == 100.0
    assert positive_weights([0.01], cap=100.0)[0] == pytest.approx(np.sqrt(99.0))


def test_bundled_point_defect_sim_config_is_the_training_mix_with_defects_in_every_frame():
    """The stage-7 mix (data/training/maximask_sim_defects.json) differs from the training mix only in
    hot and dead pixels, which are drawn in every frame."""
    import json
    from pathlib import Path

    from maximask.sim.config import make_config

    root = Path(__file__).parents[1] / "data/training"
    mix = json.loads((root / "maximask_sim.json").read_text())
    defects = json.loads((root / "maximask_sim_defects.json").read_text())
    make_config(defects)
    assert defects["class_prob"].pop("HP") == 1.0 and defects["class_prob"].pop("DP") == 1.0
    mix["class_prob"].pop("HP"), mix["class_prob"].pop("DP")
    assert defects == mix


def test_freezing_all_but_the_refinement_leaves_the_coarse_network_fixed():
    """--train-only refinement: a training step moves the refinement's weights and no other."""
    import keras

    from maximask.model import build_model
    from maximask.train import freeze_all_but_refinement

    model = build_model(REFINED)
    n = freeze_all_but_refinement(model)
    assert 0 < n < model.count_params()
    before = {w.path: w.numpy().copy() for w in model.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype(np.float32)
    model.train_on_batch(x, np.ones((2, 32, 32, REFINED.n_classes), np.float32))
    moved = {w.path for w in model.weights if not np.array_equal(before[w.path], w.numpy())}
    assert moved and all(p.split("/")[0].startswith("refine_") for p in moved)


def test_freezing_needs_a_refinement():
    from maximask.model import build_model
    from maximask.train import freeze_all_but_refinement

    with pytest.raises(SystemExit, match="needs a network with a refinement"):
        freeze_all_but_refinement(build_model(COARSE))


def test_binned_training_frames_are_the_context_pass_frames_with_soft_labels():
    """With ``bin_factor`` the network gets the frame binned as the context pass bins it, normalised
    whole, and each block's share of labelled pixels as its label."""
    from maximask.context import bin_frame
    from maximask.normalize import normalize_image
    from maximask.sim import simulate_frame
    from maximask.train import simulate_normalised

    seq = np.random.SeedSequence(5, spawn_key=(2,))
    data, truth = simulate_normalised(seq, (512, 512), bin_factor=8)
    image, full_truth, _ = simulate_frame((512, 512), np.random.default_rng(seq))
    assert data.shape == (64, 64) and truth.shape == (14, 64, 64) and truth.dtype == np.float32
    np.testing.assert_array_equal(data, normalize_image(bin_frame(image, 8)).data)
    shares = full_truth.reshape(14, 64, 8, 64, 8).mean(axis=(2, 4))
    np.testing.assert_allclose(truth, shares, atol=1e-6)
    assert ((truth > 0) & (truth < 1)).any()  # soft labels where a class ends inside a block
