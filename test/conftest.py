"""Shared fixtures: a tiny test network saved in the network-directory format.

The test network is a fixture, never a shipped model: a two-level U-Net-like Keras model (two
stride-2 downsamplings, two nearest-neighbour upsamplings with skip connections, tanh activations,
random non-zero biases so that zero padding inside a layer differs from zero input) with 14 logit
outputs. Its receptive-field radius is measured (not assumed) and stored as its margin, so that a
tiler error shows as seams.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

#: Geometry of the test network: tile side and alignment (two downsamplings).
TEST_TILE = 64
TEST_MULTIPLE = 4


@dataclasses.dataclass
class TestNet:
    """A saved test network: its directory, the Keras model it holds, and its geometry."""

    net_dir: object
    model: object
    margin: int
    tile_size: int
    size_multiple: int
    radius: int

    __test__ = False  # not a pytest test class

    def apply_whole(self, canvas: np.ndarray) -> np.ndarray:
        """Keras model on a whole (Hc, Wc) canvas at once: float32 logits (Hc, Wc, C)."""
        return np.asarray(self.model(canvas[None, :, :, None].astype(np.float32), training=False))[0]


def _build_model(n_out: int):
    import keras
    from keras import layers

    keras.utils.set_random_seed(1234)

    def conv(x, n, stride=1):
        return layers.Conv2D(
            n,
            3,
            strides=stride,
            padding="same",
            activation="tanh",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.4),
            bias_initializer=keras.initializers.RandomNormal(stddev=0.5),
        )(x)

    inp = keras.Input((None, None, 1))
    c1 = conv(inp, 6)
    d1 = conv(c1, 8, stride=2)
    d2 = conv(d1, 8, stride=2)
    u1 = layers.Concatenate()([layers.UpSampling2D(2)(d2), d1])
    u1 = conv(u1, 8)
    u0 = layers.Concatenate()([layers.UpSampling2D(2)(u1), c1])
    u0 = conv(u0, 8)
    out = layers.Conv2D(n_out, 1, bias_initializer=keras.initializers.RandomNormal(stddev=1.0))(u0)
    return keras.Model(inp, out)


def receptive_radius(model, multiple: int, size: int = 96) -> int:
    """Largest distance (pixels, Chebyshev) at which an input pixel changes an output pixel.

    Measured by perturbing one input pixel at each alignment modulo ``multiple`` on a zero image.
    """
    base = np.asarray(model(np.zeros((1, size, size, 1), np.float32), training=False))[0]
    radius = 0
    yy, xx = np.mgrid[0:size, 0:size]
    for dy in range(multiple):
        for dx in range(multiple):
            c = size // 2 + dy, size // 2 + dx
            x = np.zeros((1, size, size, 1), np.float32)
            x[0, c[0], c[1], 0] = 5.0
            y = np.asarray(model(x, training=False))[0]
            changed = np.abs(y - base).max(axis=-1) > 0
            d = np.maximum(np.abs(yy - c[0]), np.abs(xx - c[1]))[changed]
            radius = max(radius, int(d.max()))
    return radius


@pytest.fixture(scope="session")
def test_net(tmp_path_factory) -> TestNet:
    """The tiny 14-output test network, saved once per session (TensorFlow needed)."""
    pytest.importorskip("tensorflow")
    from maximask.classes import ABBRS
    from maximask.network import NetworkMetadata, save_network
    from maximask.normalize import DEFAULT_NORMALISATION

    model = _build_model(len(ABBRS))
    radius = receptive_radius(model, TEST_MULTIPLE)
    # smallest margin >= radius that keeps the core (T - 2M) a multiple of the alignment
    half = TEST_MULTIPLE // 2
    margin = -(-radius // half) * half
    net_dir = tmp_path_factory.mktemp("test_net")
    meta = NetworkMetadata(
        name="maximask",
        classes=list(ABBRS),
        training_priors=[0.01] * (len(ABBRS) - 1) + [0.9],
        margin=margin,
        tile_size=TEST_TILE,
        size_multiple=TEST_MULTIPLE,
        normalisation=dict(DEFAULT_NORMALISATION),
        extra={"fixture": "test network (random weights), not a trained model", "receptive_radius": radius},
    )
    save_network(model, net_dir, meta)
    return TestNet(net_dir, model, margin, TEST_TILE, TEST_MULTIPLE, radius)


@pytest.fixture(scope="session")
def test_net_dir(test_net):
    """Directory of the tiny 14-output test network (``metadata.json``, ``model.tflite``, ``model.keras``)."""
    return test_net.net_dir


@pytest.fixture(scope="module")
def network(test_net_dir):
    """The test network, loaded (LiteRT, one thread)."""
    from maximask.network import Network

    return Network(test_net_dir, num_threads=1)


class _WithMetadata:
    def __init__(self, network, entries):
        import dataclasses

        self.metadata = dataclasses.replace(network.metadata, **entries)
        self.predict_logits = network.predict_logits


@pytest.fixture(scope="module")
def with_metadata(network):
    """``with_metadata(context=..., smoothing=..., dips=...)``: the test network with those metadata
    entries, which the engine reads (the weights are the same)."""
    return lambda **entries: _WithMetadata(network, entries)


@pytest.fixture(scope="session")
def logit_planes():
    """A tile transform for ``maximask.engine.infer``: the raw logits, as planes (C, h, w)."""
    import numpy as np

    return lambda lg: np.moveaxis(lg, -1, 0).copy()


@pytest.fixture(scope="module")
def one_class_added(network, with_metadata, logit_planes):
    """``one_class_added(image, cls, **entries) -> (alone, got)``: the test network's logit planes
    without and with those metadata entries (a score the engine adds to class ``cls``), after
    checking that every other class is unchanged to the bit."""
    import numpy as np

    from maximask.classes import ABBRS
    from maximask.engine import infer

    def run(image, cls, **entries):
        alone = infer(image, network, batch_size=3, tile_transform=logit_planes)
        got = infer(image, with_metadata(**entries), batch_size=3, tile_transform=logit_planes)
        others = [c for c in range(len(ABBRS)) if c != ABBRS.index(cls)]
        np.testing.assert_array_equal(got[others], alone[others])
        return alone, got

    return run
