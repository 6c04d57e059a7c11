"""maxitrack-train: --init-from starts from the given network's weights (a network of another
architecture is refused with a one-line reason); widths options; a resume inside an epoch; the
precomputed network inputs turned with the tile; --train-only and an export from the work directory
alone; maxitrack.ensemble."""

import numpy as np
import pytest

pytest.importorskip("keras")


def _net(tile, inputs, seed):
    import keras

    from maxitrack.model import DEFAULT_WIDTHS, build_model

    keras.utils.set_random_seed(seed)
    return build_model(tile, DEFAULT_WIDTHS, inputs=inputs)


@pytest.mark.parametrize("as_dir", [True, False])
def test_init_from_loads_every_weight(tmp_path, as_dir):
    from maxitrack.model import custom_objects
    from maxitrack.train import _init_weights

    source = _net(32, "tile+autocorr", seed=1)
    target = tmp_path / "net"
    target.mkdir()
    source.save(target / "model.keras")
    fresh = _net(32, "tile+autocorr", seed=2)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), source.get_weights()))
    weights = _init_weights(str(target if as_dir else target / "model.keras"), fresh, custom_objects())
    fresh.set_weights(weights)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 2)).astype(np.float32)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), source.predict(x, verbose=0))


def test_init_from_refuses_other_architecture_or_missing_file(tmp_path):
    from maxitrack.model import custom_objects
    from maxitrack.train import _init_weights

    _net(32, "tile", seed=1).save(tmp_path / "tile_only.keras")
    with pytest.raises(SystemExit, match="does not have the architecture"):
        _init_weights(str(tmp_path / "tile_only.keras"), _net(32, "tile+autocorr", seed=2), custom_objects())
    with pytest.raises(SystemExit, match="no such network"):
        _init_weights(str(tmp_path / "none"), _net(32, "tile", seed=2), custom_objects())


def test_log_loss_is_the_cross_entropy_and_stays_finite():
    from maxitrack.train import log_loss

    z = np.array([-2.0, 0.0, 3.0])
    y = np.array([0, 1, 1])
    p = 1 / (1 + np.exp(-z))
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert log_loss(z, y) == pytest.approx(expected, rel=1e-12)
    # a confident wrong answer costs its logit, without overflow
    assert log_loss(np.array([800.0]), np.array([0])) == pytest.approx(800.0)


def test_calibration_options_default_to_the_training_frames():
    from maxitrack.train import parse_args

    a = parse_args([])
    assert a.calibration_size is None and a.calibration_tiles is None
    b = parse_args(["--calibration-size", "1024", "2048", "--calibration-tiles", "12"])
    assert b.calibration_size == [1024, 2048] and b.calibration_tiles == 12


def test_widths_options_build_the_exported_network_and_guard_the_resume(tmp_path):
    """--widths/--ac-widths set the channels of the trained and exported network; a work
    directory holding a run of other widths is refused (exit 2) instead of resumed."""
    import keras

    from maxitrack.model import custom_objects
    from maxitrack.train import main

    common = ["--work", str(tmp_path / "work"), "--frames", "4", "--val-frames", "2",
              "--frame-size", "256", "256", "--epochs", "1", "--batch", "8",
              "--ac-widths", "4", "4", "8", "8"]
    out = tmp_path / "net"
    assert main(common + ["--widths", "4", "6", "8", "10", "--out", str(out)]) == 0
    net = keras.models.load_model(out / "model.keras", custom_objects=custom_objects())
    convs = [layer.filters for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sorted(set(convs)) == [4, 6, 8, 10]
    assert main(common + ["--widths", "4", "6", "8", "12", "--out", str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other").exists()


def test_a_run_stopped_inside_an_epoch_resumes_to_the_same_network(tmp_path):
    """A checkpoint inside an epoch keeps the epoch's random stream: a run stopped at step 2 of 4
    (then again at step 5, inside the second epoch) and resumed exports the network that the same
    run gives uninterrupted."""
    import json

    import keras

    from maxitrack.model import custom_objects
    from maxitrack.train import main

    def args(work, *extra):
        return ["--work", str(tmp_path / work), "--frames", "8", "--val-frames", "2",
                "--frame-size", "256", "256", "--epochs", "2", "--batch", "8",
                "--widths", "4", "4", "8", "8", "--ac-widths", "4", "4", "8", "8",
                "--checkpoint-every", "3", "--out", str(tmp_path / work / "net"), *extra]

    assert main(args("whole")) == 0
    assert main(args("pieces", "--stop-at-step", "2")) == 0
    state = json.loads((tmp_path / "pieces" / "state.json").read_text())
    assert state["epoch"] == 0 and state["in_epoch"]["step"] == 2 and len(state["in_epoch"]["losses"]) == 2
    assert not (tmp_path / "pieces" / "net").exists()
    assert main(args("pieces", "--stop-at-step", "5")) == 0
    state = json.loads((tmp_path / "pieces" / "state.json").read_text())
    assert state["epoch"] == 1 and state["in_epoch"]["step"] == 1
    assert main(args("pieces")) == 0
    nets = [keras.models.load_model(tmp_path / w / "net" / "model.keras", custom_objects=custom_objects())
            for w in ("whole", "pieces")]
    for a, b in zip(*(n.get_weights() for n in nets)):
        np.testing.assert_array_equal(a, b)
    history = [json.loads((tmp_path / w / "state.json").read_text())["history"] for w in ("whole", "pieces")]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]


def test_a_signal_during_training_is_a_flag_and_the_handlers_come_back():
    """SIGTERM inside the training loop sets the flag the loop checks (it then checkpoints and
    exits 128 + 15) instead of killing the process; the handler is restored afterwards."""
    import os
    import signal

    from maxitrack.train import signals_as_flag

    before = signal.getsignal(signal.SIGTERM)
    with signals_as_flag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before


def test_turning_the_network_inputs_equals_the_inputs_of_the_turned_tiles():
    """Training turns the precomputed tile + autocorrelation (:func:`augment_inputs`) instead of
    recomputing the autocorrelation of each turned tile: on every lag the network sees, the two are
    the same, for each of the 8 flips and quarter turns (drawn identically from the same seed)."""
    from maxitrack.model import AC_CROP
    from maxitrack.tiles import network_input
    from maxitrack.train import augment, augment_inputs

    rng = np.random.default_rng(3)
    tiles = rng.normal(0, 1, (24, 64, 64)).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    for t in tiles:  # stars, each elongated along a random direction, some doubled: no symmetry to hide a wrong turn
        for _ in range(6):
            y0, x0, dy, dx = rng.uniform(8, 56), rng.uniform(8, 56), rng.uniform(-4, 4), rng.uniform(0, 6)
            t += 20 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / 4)
            t += 10 * np.exp(-((yy - y0 - dy) ** 2 + (xx - x0 - dx) ** 2) / 4)
    assert set(np.random.default_rng(7).integers(0, 8, size=24)) == set(range(8))
    expected = network_input(augment(tiles, np.random.default_rng(7))[..., None], "tile+autocorr")
    got = augment_inputs(network_input(tiles[..., None], "tile+autocorr"), np.random.default_rng(7))
    np.testing.assert_array_equal(got[..., 0], expected[..., 0])
    h, c = 32, min(64, AC_CROP) // 2
    lags = (slice(None), slice(h - c + 1, h + c), slice(h - c + 1, h + c), 1)  # all lags but -T/2
    np.testing.assert_allclose(got[lags], expected[lags], atol=1e-5)
    assert np.abs(expected[lags]).max() > 0.5


def test_a_run_trained_with_train_only_is_exported_without_its_training_frames(tmp_path):
    """--train-only stops before the calibration and the export (which need TensorFlow; the
    training may run with another Keras backend). The same command without it, on the work
    directory alone, calibrates and exports without the training frames: the state keeps their
    prior."""
    import json
    import shutil

    from maxitrack.train import main

    work = tmp_path / "work"
    common = ["--work", str(work), "--frames", "4", "--val-frames", "2", "--frame-size", "256", "256",
              "--epochs", "1", "--batch", "8", "--widths", "4", "4", "8", "8", "--ac-widths", "4", "4", "8", "8",
              "--out", str(tmp_path / "net")]
    assert main(common + ["--train-only"]) == 0
    assert (work / "best.keras").is_file() and not (tmp_path / "net").exists()
    prior = json.loads((work / "state.json").read_text())["pi_train"]
    shutil.rmtree(work / "data")
    assert main(common) == 0
    assert not list((work / "data").glob("train_*"))  # only the validation frames were simulated again
    meta = json.loads((tmp_path / "net" / "metadata.json").read_text())
    assert meta["training_priors"] == [prior]


def test_an_ensemble_outputs_the_mean_of_its_members_tile_logits():
    """maxitrack.ensemble: one model whose tile logit is the mean of its members' (what the command
    then averages over tiles, so the frame score is the mean of the members' frame scores); members
    whose tile preparation differs are refused, naming the member."""
    from maxitrack.ensemble import build_ensemble, check_members
    from maxitrack.tiles import network_input

    members = [_net(64, "tile+autocorr", seed) for seed in (1, 2, 3)]
    x = network_input(np.random.default_rng(0).normal(0, 1, (5, 64, 64, 1)).astype(np.float32), "tile+autocorr")
    each = [m.predict(x, verbose=0) for m in members]
    assert np.ptp([e.mean() for e in each]) > 0  # the members differ
    got = build_ensemble(members).predict(x, verbose=0)
    np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)

    meta = {"tile_size": 128, "normalisation": {}, "output": "logits", "extra": {"input": "tile+autocorr"}}
    check_members([meta, meta], ["a", "b"])
    other = dict(meta, extra={"input": "tile"})
    with pytest.raises(SystemExit, match="b: its input differs from a's"):
        check_members([meta, other], ["a", "b"])


def test_fit_logistic_with_a_fixed_offset_fits_the_added_weight_alone():
    """Extending a calibrated model by one term: the offset's logits stay as they are."""
    from maxitrack.train import fit_logistic

    rng = np.random.default_rng(7)
    n = 20000
    off = rng.normal(0.0, 2.0, n)
    x = np.maximum(rng.normal(0.0, 1.0, n), 0.0)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(off + 2.0 * x)))).astype(float)
    w = fit_logistic(x, y, offset=off, intercept=False)
    assert w.shape == (1,) and abs(w[0] - 2.0) < 0.15
    # without the offset the same data give another weight and an intercept
    assert fit_logistic(x, y).shape == (2,)
