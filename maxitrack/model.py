"""The maxitrack classifier (Keras; used for training only, inference runs the exported LiteRT model).

A small convolutional network: a full-resolution layer (a 5-px drift in 0.5-arcsec seeing is a
detail of a few pixels, lost if the first layer already downsamples), then three stride-2 stages that
grow the receptive field to ~60 px (long drifts, double images a few tens of pixels apart), and a
global average + max pooling, so that the decision sums the evidence of every star of the tile
whatever their positions. Output: one logit per tile.
"""

from __future__ import annotations

#: Default widths of the convolution stages.
DEFAULT_WIDTHS = (12, 16, 32, 48)


def build_model(tile: int, widths=DEFAULT_WIDTHS, name: str = "maxitrack"):
    """Build the classifier.

    Parameters
    ----------
    tile : int
        Input side (pixels); input shape ``(tile, tile, 1)`` of normalised pixels.
    widths : sequence of 4 int
        Channels of the full-resolution stage and of the three downsampling stages.
    name : str

    Returns
    -------
    keras.Model
        Input ``(None, tile, tile, 1)``, output ``(None, 1)`` logits.
    """
    import keras
    from keras import layers

    def conv(x, n, stride=1):
        x = layers.Conv2D(n, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inp = keras.Input((tile, tile, 1), name="tile")
    x = conv(inp, widths[0])
    for n in widths[1:]:
        x = conv(x, n, stride=2)
        x = conv(x, n)
    pooled = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    h = layers.Dense(32, activation="relu")(pooled)
    logit = layers.Dense(1, name="logit")(h)
    return keras.Model(inp, logit, name=name)
