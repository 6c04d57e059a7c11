"""The shipped maxitrack network: metadata complete, and its inputs still prepared as in training.

Skipped when the network has not been exported yet (``maxitrack-train``).
"""

from __future__ import annotations

import numpy as np
import pytest

from maximask.resources import default_net_dir

NET = default_net_dir("maxitrack")
pytestmark = pytest.mark.skipif(not (NET / "model.tflite").is_file(), reason="maxitrack network not exported")


@pytest.fixture(scope="module")
def network():
    from maximask.network import Network

    return Network(NET)


def test_metadata(network):
    meta = network.metadata
    assert meta.name == "maxitrack" and meta.classes == ["TRACKING_ERROR"] and meta.output == "logits"
    assert 0.0 < meta.training_priors[0] < 1.0
    cal = meta.extra["calibration"]
    assert cal["slope"] > 0  # a higher network logit means a higher probability of an error
    assert meta.extra["tiles"]["n_tiles"] >= 1
    assert meta.extra["model_id"] == network.model_id
    assert meta.extra["training_command"].startswith("maxitrack-train")


def test_tiles_prepared_as_in_training(network):
    """The tile selection and the shared normalisation give what they gave when the network was
    trained; if this fails, inputs changed under a trained network: retrain, or restore them."""
    from maxitrack.tiles import fingerprint

    meta = network.metadata
    ref = meta.extra["tile_fingerprint"]
    now = fingerprint(meta.tile_size, meta.extra["tiles"], meta.normalisation, meta.extra.get("input", "tile"))
    assert now["origins"] == ref["origins"]
    assert now["mean"] == pytest.approx(ref["mean"], abs=1e-4)
    assert now["std"] == pytest.approx(ref["std"], abs=1e-4)
    assert np.allclose(now["probe"], ref["probe"], atol=1e-4)
    if "input_probe" in ref:  # the network's other input channels (the autocorrelation)
        assert np.allclose(now["input_probe"], ref["input_probe"], atol=1e-4)


def test_scores_a_frame(network):
    from maxitrack.cli import Scorer

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (300, 260)).astype(np.float32)
    scorer = Scorer(NET, prior=0.05, batch_size=4)
    prepared = scorer.hdu(image)
    pairs, rotation = scorer.field_pairs(), scorer.field_rotation_statistic()
    if pairs is not None:
        pairs.add(prepared.peaks)
    if rotation is not None:
        rotation.add(prepared.stars)
    p = scorer.score(prepared.tiles, pairs, rotation)
    assert 0.0 <= p <= 1.0


def test_field_rotation_term_as_fitted(network):
    """A network with a field-rotation term stores its parameters, a positive weight and its
    offset; the shipped one was fitted alone on top of the kept calibration."""
    from maxitrack.field_rotation import DEFAULT_FIELD_ROTATION
    from maxitrack.scoring import FieldRotationTerm

    entry = network.metadata.field_rotation
    if entry is None:
        pytest.skip("the shipped network has no field-rotation term")
    term = FieldRotationTerm.from_metadata(entry)
    assert term.weight > 0 and term(term.offset) == 0.0 and term(term.offset + 5) > 0
    # every parameter is stored, so that later defaults cannot change the shipped statistic
    assert set(DEFAULT_FIELD_ROTATION) <= set(term.params)
    assert "--rotation-offset" in network.metadata.extra["double_images_fit"]["command"]


def test_double_image_term_as_fitted(network):
    """A network with a double-image term stores its parameters, weight and offset, and the
    calibration fitted with it."""
    from maxitrack.scoring import DoubleImageTerm

    entry = network.metadata.double_images
    if entry is None:
        pytest.skip("the shipped network has no double-image term")
    term = DoubleImageTerm.from_metadata(entry)
    assert term.weight > 0 and term.offset > 0
    assert term(term.offset) == 0.0 and term(term.offset + 10) > 0
    assert "double-image" in network.metadata.extra["calibration"]["fitted_on"]
    assert network.metadata.extra["double_images_fit"]["command"].startswith("python scripts/maxitrack_double_images.py")
