"""The maximask network architecture (Keras; used for training only, inference runs on LiteRT).

Design, chosen for CPU speed (see docs/MODEL.md for the measurements):

* The input (already compressed by :func:`maximask.normalize.normalize_image`, asinh of the
  signal-to-noise) is folded 4x4 -> channels by a stride-4 4x4 convolution ("learned
  space-to-depth"): every 3x3
  convolution of the network then runs at 1/4 resolution or coarser, on dense channel counts, where
  CPU convolution kernels are efficient. Nothing but element-wise operations runs at full resolution.
* An encoder of stride-2 levels down to 1/32 (default) gathers context for the large-scale classes
  (nebulosities, fringing, halos, trails, spikes); a decoder upsamples (2x2 stride-2 transposed convolutions)
  and adds skip connections back to 1/4 resolution.
* A 1x1 head predicts ``n_classes * 16`` logits per 1/4-resolution cell, rearranged to full
  resolution by depth-to-space. Outputs are *logits* (no sigmoid): post-processing thresholds them.
* Optionally (``refine > 0``) a cheap full-resolution refinement: one 3x3 convolution of the input
  (``refine`` channels: local contrasts such as pixel-minus-neighbours, which single-pixel and
  cosmic-ray classes hinge on) is mixed with the coarse logits by two 1x1 convolutions, whose output
  is *added* to the coarse logits. The last layer starts at zero, so a refined network starts as its
  coarse network (weights can be carried over from a network without refinement).

The receptive field is finite and computed exactly by :func:`receptive_field` from the same
:class:`Architecture` that builds the model; the inference tiler overlaps tiles by that margin so that
tiled outputs equal whole-image outputs.
"""

from __future__ import annotations

import dataclasses
import math

STEM = 4  # space-to-depth factor of the stem
#: The output channel the cosmic-ray refinement adds to (CR, first in :data:`maximask.classes.ABBRS`).
CR_CLASS = 0
#: Radius of the cosmic-ray refinement's convolution of the input (5x5: a star core's first two rings).
CR_RADIUS = 2
#: The cosmic-ray refinement's layers (``--train-only cr-refinement`` trains those with weights).
CR_LAYERS = ("cr_local", "cr_concat", "cr_mix", "cr_out", "cr_add")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Hyper-parameters of the network.

    Attributes
    ----------
    widths : tuple of int
        Channels at each level; level 0 is at 1/4 resolution, level k at 1/(4 * 2**k).
    encoder_convs : tuple of int
        Number of 3x3 convolutions at each encoder level.
    decoder_convs : tuple of int
        Number of 3x3 convolutions at each decoder level (levels 0 .. n-2; the deepest level has
        no decoder stage).
    n_classes : int
        Number of outputs (logit planes).
    upsampling : str
        Decoder upsampling: ``"nearest"`` (1x1 projection then nearest-neighbour upsampling),
        ``"transposed"`` (2x2 stride-2 transposed convolution) or ``"d2s"`` (1x1 convolution to
        4x channels then depth-to-space). All three map output i to input i // 2.
    refine : int
        Channels of the full-resolution refinement's 3x3 convolution (0: no refinement).
    refine_hidden : int
        Channels of the refinement's hidden 1x1 layer.
    cr_refine : int
        Channels of the cosmic-ray refinement's 5x5 convolution of the input (0: none; needs
        ``refine``). A second full-resolution branch whose single output is added to the CR logit
        alone (:data:`CR_CLASS`): trained with only CR in the loss, it leaves every other class's
        logits bit-identical by construction. Why: at full resolution the shared refinement has 8
        channels for all the pixel-scale classes, and cosmic rays are confused with the cores of
        sharp stars (FWHM under 2 px), which differ in a 5x5 window of the input (a star's core has
        wings, a cosmic ray's pixels do not). Trained alone on the frozen network it did not learn
        that difference (docs/MODEL.md, "Training", stage 9), and the shipped network has none.
    cr_hidden : int
        Channels of the cosmic-ray refinement's hidden 1x1 layer.
    """

    widths: tuple = (32, 48, 64, 96)
    encoder_convs: tuple = (2, 1, 1, 1)
    decoder_convs: tuple = (1, 1, 1)
    n_classes: int = 14
    upsampling: str = "nearest"
    refine: int = 0
    refine_hidden: int = 16
    cr_refine: int = 0
    cr_hidden: int = 16

    def __post_init__(self):
        if self.cr_refine and not self.refine:
            raise ValueError("cr_refine needs refine > 0 (the branch reads the refinement's features)")

    @property
    def size_multiple(self) -> int:
        """Tile sides and offsets must be multiples of this (total downsampling factor)."""
        return STEM * 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Architecture":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---------------------------------------------------------------------------------------------
# Receptive field, computed exactly (1D, per axis) from the layer geometry.
#
# Each stage maps an interval of output indices to the interval of input indices it depends on.
# For a TF/Keras "same" convolution with kernel k and stride s on an input whose size is a multiple
# of s, the padding before is max(k - s, 0) // 2, so output i reads inputs
# [i*s - pad, i*s - pad + k - 1]. Nearest upsampling by 2 maps output i to input i // 2.


def _conv(interval, k, s):
    lo, hi = interval
    pad = max(k - s, 0) // 2
    return (lo * s - pad, hi * s - pad + k - 1)


def _up2(interval):
    lo, hi = interval
    return (lo // 2, hi // 2)


def _union(a, b):
    return (min(a[0], b[0]), max(a[1], b[1]))


def _input_interval(arch: Architecture, out_lo: int, out_hi: int):
    """Full-resolution input interval that full-resolution output pixels [out_lo, out_hi] depend on."""
    n = len(arch.widths)
    # head: 1x1 conv at level 0 then depth-to-space: output pixel i comes from cell i // STEM
    cell = (out_lo // STEM, out_hi // STEM)

    def decoder_out(level, iv):
        """Interval at the output of the encoder of `level` needed by decoder output `level`."""
        # decoder convs at this level
        for _ in range(arch.decoder_convs[level] if level < n - 1 else 0):
            iv = _conv(iv, 3, 1)
        if level == n - 1:
            return encoder_in(level, iv)
        # sum of (projected skip of encoder level) and (upsampled decoder of level+1)
        skip = encoder_in(level, iv)
        deep = decoder_out(level + 1, _up2(iv))
        return _union(skip, deep)

    def encoder_in(level, iv):
        """Map an interval at the output of encoder `level` to the full-resolution input."""
        for lev in range(level, -1, -1):
            for _ in range(arch.encoder_convs[lev]):
                iv = _conv(iv, 3, 1)
            if lev > 0:
                iv = _conv(iv, 2, 2)  # stride-2 2x2 downsampling into level `lev`
        return _conv(iv, STEM, STEM)

    coarse = decoder_out(0, cell)
    if arch.refine:
        # the refinement's 3x3 convolution reads one pixel around each output pixel
        coarse = _union(coarse, (out_lo - 1, out_hi + 1))
    if arch.cr_refine:
        # the cosmic-ray refinement's 5x5 convolution reads two
        coarse = _union(coarse, (out_lo - CR_RADIUS, out_hi + CR_RADIUS))
    return coarse


def receptive_field(arch: Architecture) -> tuple[int, int]:
    """Exact receptive field of the network along one axis.

    Parameters
    ----------
    arch : Architecture

    Returns
    -------
    left, right : int
        The largest number of pixels before (left) and after (right) an output pixel that its
        value depends on, over all pixel positions (the geometry repeats with period
        ``arch.size_multiple``).
    """
    left = right = 0
    # The deep paths go through the deepest level, so a window of several periods covers every phase.
    period = arch.size_multiple
    for i in range(period, 2 * period):
        lo, hi = _input_interval(arch, i, i)
        left, right = max(left, i - lo), max(right, hi - i)
    return left, right


def required_margin(arch: Architecture) -> int:
    """Tile overlap (pixels per side) that makes tiled output equal whole-image output.

    The receptive-field radius rounded up to ``size_multiple`` (tile offsets must stay aligned).
    """
    m = arch.size_multiple
    return int(math.ceil(max(receptive_field(arch)) / m) * m)


# ---------------------------------------------------------------------------------------------
# Keras model

_LAYERS = None


def _custom_layers():
    """Define (once) the custom layers; deferred so that importing this module stays cheap."""
    global _LAYERS
    if _LAYERS is not None:
        return _LAYERS
    import keras
    import numpy as np
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="maximask")
    class DepthToSpace(keras.layers.Layer):
        """Rearrange ``block**2 * C`` channels into a ``block``-times larger image of C channels."""

        def __init__(self, block=STEM, **kwargs):
            super().__init__(**kwargs)
            self.block = int(block)

        def call(self, x):
            return tf.nn.depth_to_space(x, self.block)

        def get_config(self):
            return dict(super().get_config(), block=self.block)

    @keras.saving.register_keras_serializable(package="maximask")
    class AddToClass(keras.layers.Layer):
        """``[logits (..., C), delta (..., 1)]`` -> logits with ``delta`` added to channel ``index``
        only: the other channels get ``+ 0 * delta``, which leaves them bit-identical."""

        def __init__(self, index=0, **kwargs):
            super().__init__(**kwargs)
            self.index = int(index)

        def call(self, inputs):
            logits, delta = inputs
            # a constant of the static class count: converts to one MUL and one ADD (XNNPACK)
            onehot = np.zeros(int(logits.shape[-1]), np.float32)
            onehot[self.index] = 1.0
            return logits + delta * tf.constant(onehot, dtype=logits.dtype)

        def get_config(self):
            return dict(super().get_config(), index=self.index)

    _LAYERS = {"DepthToSpace": DepthToSpace, "AddToClass": AddToClass}
    return _LAYERS


def build_model(arch: Architecture = Architecture(), batch_norm: bool = True):
    """Build the network as a Keras model.

    Parameters
    ----------
    arch : Architecture
    batch_norm : bool
        Batch normalisation after each convolution (folded into the convolutions when the model is
        converted for inference).

    Returns
    -------
    keras.Model
        Input ``(batch, H, W, 1)`` float32 normalised image, H and W multiples of
        ``arch.size_multiple``; output ``(batch, H, W, arch.n_classes)`` float32 logits.
    """
    import keras
    from keras import layers

    L = _custom_layers()

    def conv(x, ch, k=3, s=1, name=None, act=True):
        x = layers.Conv2D(ch, k, strides=s, padding="same", use_bias=not batch_norm, name=name)(x)
        if batch_norm:
            x = layers.BatchNormalization(name=None if name is None else name + "_bn")(x)
        return layers.ReLU()(x) if act else x

    inp = keras.Input((None, None, 1), name="image")
    x = conv(inp, arch.widths[0], k=STEM, s=STEM, name="stem")
    skips = []
    for level, (ch, n) in enumerate(zip(arch.widths, arch.encoder_convs)):
        if level > 0:
            x = conv(x, ch, k=2, s=2, name=f"down{level}")
        for j in range(n):
            x = conv(x, ch, name=f"enc{level}_{j}")
        skips.append(x)
    for level in range(len(arch.widths) - 2, -1, -1):
        ch = arch.widths[level]
        if arch.upsampling == "transposed":
            x = layers.Conv2DTranspose(ch, 2, strides=2, name=f"up{level}")(x)
        elif arch.upsampling == "d2s":
            x = layers.Conv2D(4 * ch, 1, name=f"up{level}")(x)
            x = L["DepthToSpace"](2)(x)
        else:
            # The 1x1 projection commutes with nearest upsampling, so it runs on the coarse grid (4x
            # cheaper), and the upsampling is four copies put back by depth-to-space: Keras's
            # UpSampling2D converts to TILE/RESHAPE ops that LiteRT's XNNPACK delegate does not
            # take, which split the graph and kept ~200 MB more of intermediates alive per tile.
            x = layers.Conv2D(ch, 1, name=f"up{level}")(x)
            x = layers.Concatenate()([x, x, x, x])
            x = L["DepthToSpace"](2)(x)
        x = layers.Add()([x, skips[level]])
        for j in range(arch.decoder_convs[level]):
            x = conv(x, ch, name=f"dec{level}_{j}")
    x = layers.Conv2D(arch.n_classes * STEM * STEM, 1, name="head")(x)
    out = L["DepthToSpace"](STEM, name="to_full_res")(x)
    if arch.refine:
        local = layers.Conv2D(arch.refine, 3, padding="same", activation="relu", name="refine_local")(inp)
        z = layers.Concatenate(name="refine_concat")([out, local])
        z = layers.Conv2D(arch.refine_hidden, 1, activation="relu", name="refine_mix")(z)
        # zero-initialised: the refined network starts as the coarse one
        delta = layers.Conv2D(arch.n_classes, 1, kernel_initializer="zeros", name="refine_out")(z)
        refined = layers.Add(name="refined_logits")([out, delta])
        if arch.cr_refine:
            refined = _cosmic_ray_refinement(_cr_layers(arch), inp, out, local, refined)
        out = refined
    return keras.Model(inp, out, name="maximask")


def _cr_layers(arch: Architecture) -> dict:
    """The layers of the cosmic-ray refinement (fresh), by name."""
    from keras import layers

    L = _custom_layers()
    return {
        "cr_local": layers.Conv2D(arch.cr_refine, 2 * CR_RADIUS + 1, padding="same", activation="relu",
                                  name="cr_local"),
        "cr_concat": layers.Concatenate(name="cr_concat"),
        "cr_mix": layers.Conv2D(arch.cr_hidden, 1, activation="relu", name="cr_mix"),
        # zero-initialised: the network starts as it was without the branch
        "cr_out": layers.Conv2D(1, 1, kernel_initializer="zeros", name="cr_out"),
        "cr_add": L["AddToClass"](CR_CLASS, name="cr_add"),
    }


def _cosmic_ray_refinement(lay, image, coarse, local, refined):
    """The CR logit of ``refined`` plus the branch's output (see ``Architecture.cr_refine``); every
    other class's logit is passed through unchanged."""
    z = lay["cr_concat"]([coarse, local, lay["cr_local"](image)])
    return lay["cr_add"]([refined, lay["cr_out"](lay["cr_mix"](z))])


def _get_layers(model, names):
    return {n: model.get_layer(n) for n in names}


def has_refinement(model) -> bool:
    """Whether a Keras maximask model carries the full-resolution refinement."""
    return any(layer.name == "refine_out" for layer in model.layers)


def split_refinement(model, tile_size: int, rows: int):
    """Split a refined network into its coarse part and a row-strip refinement, for inference.

    The refinement is local (a 3x3 convolution of the input and per-pixel layers on the coarse
    logits), so it can run on strips of rows of a tile instead of the whole tile: LiteRT's XNNPACK
    runtime then holds the refinement's full-resolution intermediates (60 channels at the peak)
    for one strip instead of the whole tile. Together the two parts compute exactly the model.

    Parameters
    ----------
    model : keras.Model
        A model of :func:`build_model` with ``refine > 0``.
    tile_size : int
        Tile side T (fixed in the inference models).
    rows : int
        Rows R per strip; a multiple of the stem's block (4) that divides ``tile_size``.

    Returns
    -------
    coarse : keras.Model
        ``(B, T, T, 1)`` image -> ``(B, T/4, T/4, 16 C)`` coarse head (before depth-to-space).
    strip : keras.Model
        ``[(1, R + 8, T, 1)`` image rows ``r0 - 4 .. r0 + R + 4``, ``(1, R/4 + 2, T/4, 16 C)`` head
        rows ``r0/4 - 1 .. (r0 + R)/4 + 1]`` -> ``(1, R + 8, T, C)`` logits of the same rows, of which
        the inner R rows are exact; rows outside the tile are passed as zeros.
    """
    import keras
    from keras import layers

    if rows % STEM or tile_size % rows:
        raise ValueError(f"strip rows {rows} must be a multiple of {STEM} dividing the tile size {tile_size}")
    L = _custom_layers()
    fixed = keras.Input((tile_size, tile_size, 1))
    coarse = keras.Model(fixed, keras.Model(model.inputs[0], model.get_layer("head").output)(fixed))
    head_channels = model.get_layer("head").output.shape[-1]
    image = keras.Input((rows + 2 * STEM, tile_size, 1), batch_size=1)
    head = keras.Input((rows // STEM + 2, tile_size // STEM, head_channels), batch_size=1)
    logits = L["DepthToSpace"](STEM)(head)
    local = model.get_layer("refine_local")(image)
    z = model.get_layer("refine_concat")([logits, local])
    z = model.get_layer("refine_mix")(z)
    out = layers.Add()([logits, model.get_layer("refine_out")(z)])
    if has_cr_refinement(model):
        out = _cosmic_ray_refinement(_get_layers(model, CR_LAYERS), image, logits, local, out)
    return coarse, keras.Model([image, head], out)


def has_cr_refinement(model) -> bool:
    """Whether a Keras maximask model carries the cosmic-ray refinement."""
    return any(layer.name == "cr_out" for layer in model.layers)


def custom_objects() -> dict:
    """Custom layers needed by ``keras.models.load_model`` for a saved maximask model."""
    return dict(_custom_layers())
