"""Network directories: loading a trained network and running it on batches of tiles.

A network directory holds

``model.tflite``
    the network for inference (LiteRT / TensorFlow Lite flat buffer, float32, NHWC, input
    ``(batch, height, width, 1)``, output ``(batch, height, width, n_outputs)`` of *logits*);
``model.keras``
    the same network as a Keras 3 model, used only to fine-tune it (``maximask-train --init-from``);
``metadata.json``
    everything the code that runs the network needs to know about it (see :class:`NetworkMetadata`).

Nothing about a network is hard-coded elsewhere: tile size, context margin, class list, training priors
and normalisation come from the metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from .errors import UsageError

MODEL_FILE = "model.tflite"
KERAS_FILE = "model.keras"
METADATA_FILE = "metadata.json"


@dataclasses.dataclass
class NetworkMetadata:
    """What the inference code needs to know about a network.

    Attributes
    ----------
    name : str
        ``"maximask"`` or ``"maxitrack"``.
    classes : list of str
        Output abbreviations in output-channel order (maximask: the 14 classes of
        :mod:`maximask.classes`; maxitrack: ``["TRACKING_ERROR"]``).
    training_priors : list of float
        Frequency of each class in the training data (pixel frequency for maximask, image
        frequency for maxitrack); the prior modification uses them.
    margin : int
        Context (pixels) the network needs on each side of a pixel for its output to equal the
        output on the whole image; the tiler overlaps tiles by exactly this much.
    tile_size : int
        Preferred tile side (pixels, margins included) for inference.
    size_multiple : int
        Tile sides and tile offsets must be multiples of this (2**number of downsamplings), so that
        tiled and whole-image outputs agree.
    normalisation : dict
        Name and parameters of the normalisation applied before the network
        (see :mod:`maximask.normalize`).
    output : str
        ``"logits"``: outputs are logits; probabilities are ``sigmoid(logit)``.
    extra : dict
        Anything else (training command, data seeds, receptive field measurements...).
    """

    name: str
    classes: list
    training_priors: list
    margin: int
    tile_size: int
    size_multiple: int
    normalisation: dict
    output: str = "logits"
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkMetadata":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def weights_hash(path: str | os.PathLike) -> str:
    """Model identifier: the first 16 hex digits of the SHA-256 of the inference model file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _stderr_silenced():
    """Silence file descriptor 2: LiteRT's C++ logger prints "INFO: Created TensorFlow Lite XNNPACK
    delegate for CPU." on the first tensor allocation, and stderr is reserved for our error lines.
    (No Python API or environment variable sets that logger's level.) Failures still raise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Network:
    """A loaded network, ready to run on batches of normalised tiles.

    Parameters
    ----------
    net_dir : path
        Network directory (see module docstring).
    num_threads : int, optional
        CPU threads for inference; default: ``MAXIMASK_THREADS`` or the number of usable cores.
    """

    def __init__(self, net_dir, num_threads: int | None = None):
        self.net_dir = Path(net_dir)
        model_path = self.net_dir / MODEL_FILE
        meta_path = self.net_dir / METADATA_FILE
        for p in (model_path, meta_path):
            if not p.is_file():
                raise UsageError(self.net_dir, f"not a network directory: {p.name} is missing")
        try:
            self.metadata = NetworkMetadata.from_dict(json.loads(meta_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise UsageError(meta_path, f"malformed network metadata ({exc})") from None
        self.model_id = weights_hash(model_path)
        if num_threads is None:
            num_threads = int(os.environ.get("MAXIMASK_THREADS", 0)) or len(os.sched_getaffinity(0))
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape = None

    @property
    def n_outputs(self) -> int:
        return len(self.metadata.classes)

    def predict_logits(self, batch: np.ndarray, copy: bool = True) -> np.ndarray:
        """Run the network.

        Parameters
        ----------
        batch : ndarray, float32, shape (B, T, T, 1)
            Normalised tiles, T = ``metadata.tile_size`` (the inference model has a fixed spatial
            size; any batch size B works).
        copy : bool
            If False, return a read-only view of the runtime's output buffer instead of a copy
            (saves ~1 ms per MB of logits). The caller must drop every reference to it before the
            next call: the runtime refuses to run while its buffers are referenced.

        Returns
        -------
        ndarray, float32
            Logits, shape (B, H, W, n_outputs) for maximask, (B, n_outputs) for a classifier.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, batch.shape, strict=False)
            with _stderr_silenced():
                self._interpreter.allocate_tensors()
            self._shape = batch.shape
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        if copy:
            return self._interpreter.get_tensor(self._output)
        view = self._interpreter.tensor(self._output)()
        view.flags.writeable = False
        return view


def save_network(model, net_dir, metadata: NetworkMetadata) -> str:
    """Write a Keras model as a network directory (requires TensorFlow).

    Parameters
    ----------
    model : keras.Model
        Network with input ``(None, None, None, 1)`` (or fixed spatial size for classifiers) whose
        outputs are logits.
    net_dir : path
        Created if needed; existing files are replaced.
    metadata : NetworkMetadata

    Returns
    -------
    str
        The model identifier (weights hash) of the written ``model.tflite``.
    """
    import tensorflow as tf

    net_dir = Path(net_dir)
    net_dir.mkdir(parents=True, exist_ok=True)
    model.save(net_dir / KERAS_FILE)
    import keras

    # Spatial size fixed to the tile size: with fully dynamic shapes the converter loses the channel
    # count through upsampling reshapes and falls back to unsupported TF ops. The batch stays dynamic.
    # Wrapping in a functional model (rather than converting a tf.function closure) freezes the
    # weights as constants; a closure leaves READ_VARIABLE ops that LiteRT cannot run.
    in_shape = model.inputs[0].shape[1:]
    if in_shape[0] is None:
        in_shape = (metadata.tile_size, metadata.tile_size, in_shape[-1])
    fixed_in = keras.Input(tuple(in_shape))
    fixed = keras.Model(fixed_in, model(fixed_in))
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    (net_dir / MODEL_FILE).write_bytes(converter.convert())
    model_id = weights_hash(net_dir / MODEL_FILE)
    meta = metadata.to_dict()
    meta["extra"] = dict(meta.get("extra") or {}, model_id=model_id)
    (net_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return model_id
