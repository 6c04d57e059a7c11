"""The maxitrack classifier (Keras; used for training only, inference runs the exported LiteRT model).

A small convolutional network: a full-resolution layer (a 5-px drift in 0.5-arcsec seeing is a
detail of a few pixels, lost if the first layer already downsamples), then three stride-2 stages that
grow the receptive field to ~60 px (long drifts, double images a few tens of pixels apart), and a
global average + max pooling, so that the decision sums the evidence of every star of the tile
whatever their positions. Output: one logit per tile.

With the ``"tile+autocorr"`` input (:func:`maxitrack.tiles.network_input`) a second branch of the
same shape looks at the tile's autocorrelation, lags up to +-48 px (where every star's shape is summed at the centre,
and double images make side peaks), with the distance from the zero lag as an extra channel (the
central peak is always there; a side peak is what matters); the two branches' pooled features are
concatenated before the dense layer.
"""

from __future__ import annotations

#: Default widths of the convolution stages.
DEFAULT_WIDTHS = (12, 16, 32, 48)
#: Default widths of the autocorrelation branch.
DEFAULT_AC_WIDTHS = (8, 16, 32, 48)

#: The autocorrelation branch sees the lags within +-AC_CROP/2 px (double images up to ~45 px apart).
AC_CROP = 96

_CUSTOM = {}


def custom_objects() -> dict:
    """Keras custom layers of the maxitrack models (for ``keras.models.load_model``)."""
    if _CUSTOM:
        return _CUSTOM
    import keras
    import numpy as np

    @keras.saving.register_keras_serializable(package="maxitrack")
    class InputPart(keras.layers.Layer):
        """Channel 0 of the input (``part="tile"``), or channel 1 (the autocorrelation) cut to its
        central ``crop`` x ``crop`` lags, with the distance from the zero lag, divided by
        ``crop / 2``, as a second channel."""

        def __init__(self, part="tile", crop=None, **kwargs):
            super().__init__(**kwargs)
            self.part = part
            self.crop = crop

        def call(self, x):
            if self.part == "tile":
                return x[..., :1]
            size = int(x.shape[1])
            h = size // 2
            c = int(self.crop or size) // 2
            ac = x[:, h - c : h + c, h - c : h + c, 1:2]
            size, h = 2 * c, c
            yy, xx = np.mgrid[:size, :size]
            r = (np.hypot(yy - h, xx - h) / h).astype("float32")[None, :, :, None]
            return keras.ops.concatenate([ac, keras.ops.zeros_like(ac) + r], axis=-1)

        def compute_output_shape(self, shape):
            if self.part == "tile":
                return tuple(shape[:-1]) + (1,)
            c = int(self.crop or shape[1])
            return (shape[0], c, c, 2)

        def get_config(self):
            return dict(super().get_config(), part=self.part, crop=self.crop)

    _CUSTOM["InputPart"] = InputPart
    return _CUSTOM


def build_model(tile: int, widths=DEFAULT_WIDTHS, name: str = "maxitrack", inputs: str = "tile",
                ac_widths=DEFAULT_AC_WIDTHS):
    """Build the classifier.

    Parameters
    ----------
    tile : int
        Input side (pixels); input shape ``(tile, tile, C)`` (C = 1 for ``inputs="tile"``, 2 for
        ``"tile+autocorr"``).
    widths : sequence of 4 int
        Channels of the full-resolution stage and of the three downsampling stages.
    name : str
    inputs : str
        ``"tile"`` or ``"tile+autocorr"`` (:data:`maxitrack.tiles.NETWORK_INPUTS`).
    ac_widths : sequence of 4 int
        Widths of the autocorrelation branch.

    Returns
    -------
    keras.Model
        Input ``(None, tile, tile, C)``, output ``(None, 1)`` logits.
    """
    import keras
    from keras import layers

    def conv(x, n, stride=1):
        x = layers.Conv2D(n, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    def branch(x, w):
        x = conv(x, w[0])
        for n in w[1:]:
            x = conv(x, n, stride=2)
            x = conv(x, n)
        return [layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)]

    if inputs == "tile":
        inp = keras.Input((tile, tile, 1), name="tile")
        pooled = branch(inp, widths)
    elif inputs == "tile+autocorr":
        part = custom_objects()["InputPart"]
        inp = keras.Input((tile, tile, 2), name="tile")
        crop = min(tile, AC_CROP)
        pooled = branch(part("tile")(inp), widths) + branch(part("autocorr", crop)(inp), ac_widths)
    else:
        raise ValueError(f"unknown network input {inputs!r}")
    h = layers.Dense(32, activation="relu")(layers.Concatenate()(pooled))
    logit = layers.Dense(1, name="logit")(h)
    return keras.Model(inp, logit, name=name)
