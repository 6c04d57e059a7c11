"""Network directories: loading a trained network and running it on batches of tiles.

A network directory holds

``model.tflite``
    the network for inference (LiteRT / TensorFlow Lite flat buffer, float32, NHWC, input
    ``(batch, height, width, 1)``, output ``(batch, height, width, n_outputs)`` of *logits*);
``refine.tflite`` (networks with a full-resolution refinement)
    the refinement, run on strips of rows of each tile after ``model.tflite``, which then outputs
    the coarse head (see :func:`maximask.model.split_refinement` and ``NetworkMetadata.refinement``);
``model.keras``
    the same network as a Keras 3 model, used only to fine-tune it (``maximask-train --init-from``);
``metadata.json``
    everything the code that runs the network needs to know about it (see :class:`NetworkMetadata`).

Nothing about a network is hard-coded elsewhere: tile size, context margin, class list, training priors,
normalisation, the context pass, the dip and peak scores, the hot-column score and the block smoothing
come from the metadata.
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
REFINE_FILE = "refine.tflite"
#: Rows per refinement strip written by :func:`save_network` (8 strips of a 1280-px tile: a
#: process running one tile peaks at 408 MB instead of 708 MB; the 8-row halos add 5 % to the
#: refinement's computation).
REFINE_ROWS = 160
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
    refinement : dict or None
        ``{"file": "refine.tflite", "rows": R, "halo": 4, "block": 4}`` when the network's
        full-resolution refinement runs separately on strips of R rows (R + 2 halo rows in, the
        coarse head's rows at 1/block resolution with one halo row); None otherwise.
    context : dict or None
        ``{"factor": b, "classes": {"NEB": "mean", ...}}`` when the network also runs on the frame
        binned b x b and those classes take (``"coarse"``) or average in (``"mean"``) its logits
        (see :mod:`maximask.context`); with ``"network": "NAME"``, the binned frame is run by the
        context network of the subdirectory NAME instead, for the classes listed in
        ``"network_classes"`` (default: all of them; the others keep this network); with
        ``"without_pass": {"NEB": d, ...}``, frames too small for the pass add d to those classes'
        logits; None otherwise.
    smoothing : dict or None
        ``{"block": B, "classes": ["FR", ...]}`` when those classes' logits are replaced by their
        interpolated means over B x B blocks of the frame (see :mod:`maximask.context`); None
        otherwise.
    dips : dict or None
        ``{"class": "DP", "slope": s, "offset": o, "min_dip": d}`` when a pixel's depth below its
        8 neighbours adds to the dead-pixel logit (see :mod:`maximask.dips`); None otherwise.
    columns : dict or None
        ``{"class": "HCL", "gate_class": "SAT", "gate": g, "slope": a, "offset": b, "min_score": lo,
        "max_score": hi, "block": B}`` when a column's (row's) excess over its neighbours adds to
        the hot-column logit (see :mod:`maximask.columns`); None otherwise.
    peaks : dict or None
        As ``dips`` (default class HP), when a pixel's height above its 8 neighbours adds to the
        hot-pixel logit; None otherwise. Either may hold ``"pairs": {"slope": a, "offset": b}``,
        the score of one of a pair of such pixels (see :func:`maximask.dips.neighbour_pair_dips`).
    double_images : dict or None
        A maxitrack network's double-image term: ``{"weight": c, "offset": D0, "params": {...}}``
        when ``c * log(1 + max(D - D0, 0))`` adds to the field's calibrated logit, D the field's
        double-image statistic with those parameters (see :mod:`maxitrack.double_images`); None
        otherwise.
    field_rotation : dict or None
        A maxitrack network's field-rotation term, the same form as ``double_images`` with R the
        field's rotation statistic (see :mod:`maxitrack.field_rotation`); None otherwise.
    star_elongation : dict or None
        A maxitrack network's star-elongation term, the same form with E the field's stars' mean
        ellipticity in percent (see :mod:`maxitrack.star_elongation`); None otherwise.
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
    refinement: dict | None = None
    context: dict | None = None
    smoothing: dict | None = None
    dips: dict | None = None
    columns: dict | None = None
    peaks: dict | None = None
    double_images: dict | None = None
    field_rotation: dict | None = None
    star_elongation: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkMetadata":
        """The metadata in ``d``; ValueError or TypeError if it cannot describe a network."""
        fields = {f.name for f in dataclasses.fields(cls)}
        meta = cls(**{k: v for k, v in d.items() if k in fields})
        if meta.refinement:
            _check_refinement(meta.refinement, int(meta.tile_size))
        from .context import BlockSmoothing, ContextPass
        from .columns import ColumnScore
        from .dips import DipScore

        ContextPass.from_metadata(meta.context, meta.classes)  # raise if malformed
        BlockSmoothing.from_metadata(meta.smoothing, meta.classes)
        DipScore.all_from_metadata(meta.dips, meta.classes)
        ColumnScore.from_metadata(meta.columns, meta.classes)
        DipScore.all_from_metadata(meta.peaks, meta.classes, "peaks")
        return meta

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_refinement(refinement: dict, tile_size: int) -> tuple[int, int, int]:
    """The strips' ``(rows, halo, block)``; ValueError (TypeError) unless they tile a tile exactly."""
    if not isinstance(refinement, dict):
        raise TypeError(f"refinement must be an object, not {refinement!r}")
    rows, halo, block = (int(refinement.get(k, d)) for k, d in (("rows", None), ("halo", 4), ("block", 4)))
    if min(rows, halo, block) <= 0 or rows % block or halo % block or tile_size % rows:
        raise ValueError(f"refinement strips of {rows} rows (halo {halo}, block {block}) do not tile "
                         f"{tile_size}-px tiles")
    return rows, halo, block


#: Metadata entries that change what the inference code computes from the network's outputs, so
#: that the model identifier names them with the weights.
INFERENCE_ENTRIES = ("context", "dips", "smoothing", "columns", "peaks", "double_images", "field_rotation",
                     "star_elongation")


def weights_hash(path: str | os.PathLike, *more: str | os.PathLike, inference: dict | None = None) -> str:
    """Model identifier: the first 16 hex digits of the SHA-256 of the inference model file(s)
    (``model.tflite``, then ``refine.tflite`` where there is one), then of each entry of
    ``inference`` that is set, in :data:`INFERENCE_ENTRIES` order, as ``name:`` + canonical JSON
    (the metadata's context pass, dip score, block smoothing, hot-column and peak scores, and a
    maxitrack network's double-image, field-rotation and star-elongation terms: they change the
    outputs)."""
    h = hashlib.sha256()
    for p in (path,) + more:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    for name in INFERENCE_ENTRIES:
        value = (inference or {}).get(name)
        if value:
            h.update(name.encode() + b":" + json.dumps(value, sort_keys=True, separators=(",", ":")).encode())
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


#: LiteRT operators whose output shape follows from their input's alone, so that a graph made only
#: of them runs on any spatial size (a RESHAPE, for one, carries the converted size as a constant).
_SIZE_FREE_OPS = frozenset({"ADD", "SUB", "MUL", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
                            "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RELU",
                            "RELU6", "LOGISTIC"})


def _size_free(interpreter) -> bool:
    """Whether every operator of a LiteRT graph is in ``_SIZE_FREE_OPS`` (False if unknown; call
    it before ``allocate_tensors``, after which delegated operators read ``DELEGATE``)."""
    try:
        ops = {d["op_name"] for d in interpreter._get_ops_details()}
    except Exception:  # a private API: without it, assume the converted size is required
        return False
    return bool(ops) and ops <= _SIZE_FREE_OPS


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
        refinement = self.metadata.refinement
        refine_path = None
        if refinement:
            refine_path = self.net_dir / refinement.get("file", REFINE_FILE)
            if not refine_path.is_file():
                raise UsageError(self.net_dir, f"not a network directory: {refine_path.name} is missing")
        if num_threads is None:
            num_threads = int(os.environ.get("MAXIMASK_THREADS", 0)) or len(os.sched_getaffinity(0))
        #: The network that runs the context pass's binned frame: this one, or the context network
        #: its metadata names (a network directory of its own, inside this one).
        self.context_network = self
        files = [model_path] + ([refine_path] if refine_path else [])
        context_dir = (self.metadata.context or {}).get("network")
        if context_dir:
            if not (self.net_dir / context_dir).is_dir():
                raise UsageError(self.net_dir,
                                 f"not a network directory: its context network {context_dir}/ is missing")
            self.context_network = Network(self.net_dir / context_dir, num_threads)
            if self.context_network.metadata.context:
                raise UsageError(self.net_dir / context_dir,
                                 "malformed network metadata (a context network has no context pass "
                                 "of its own)")
            files += self.context_network.files
        #: The files the model identifier hashes (its weights, its context network's).
        self.files = files
        self.model_id = weights_hash(*files, inference=self.metadata.to_dict())
        from ai_edge_litert.interpreter import Interpreter

        self._model_path, self._num_threads = model_path, num_threads
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape = None
        self._strips = None
        #: Whether tiles smaller than ``metadata.tile_size`` may be run (see ``predict_logits``).
        self.flexible_tiles = _size_free(self._interpreter)
        self._refine_path = refine_path
        if refine_path is not None:
            refine = Interpreter(model_path=str(refine_path), num_threads=num_threads)
            # read before the first allocation, which replaces the operators by XNNPACK's DELEGATE
            self.flexible_tiles = self.flexible_tiles and _size_free(refine)
            self._strips = self._strip_refinement(refine)

    def release(self) -> None:
        """Free the runtime's working memory (its tensors, the refinement's logits buffer); the
        next call allocates it again.

        For a network run once per frame beside another one (a context network): its working
        memory would otherwise stay allocated while the other runs, and add to the peak.
        """
        from ai_edge_litert.interpreter import Interpreter

        # new runtimes allocate nothing until their first call; the old ones' memory goes with them
        self._interpreter = Interpreter(model_path=str(self._model_path), num_threads=self._num_threads)
        self._shape = None
        if self._strips is not None:
            self._strips = self._strip_refinement(
                Interpreter(model_path=str(self._refine_path), num_threads=self._num_threads))

    def _strip_refinement(self, interpreter) -> "_StripRefinement":
        return _StripRefinement(interpreter, self.metadata.refinement, self.metadata.tile_size,
                                len(self.metadata.classes))

    @property
    def n_outputs(self) -> int:
        return len(self.metadata.classes)

    def predict_logits(self, batch: np.ndarray, copy: bool = True, margin: int = 0,
                       writable: bool = False) -> np.ndarray:
        """Run the network.

        Parameters
        ----------
        batch : ndarray, float32, shape (B, T, T, 1)
            Normalised tiles: T = ``metadata.tile_size``, or a smaller multiple of
            ``metadata.size_multiple`` (at least the refinement's strip rows) for a frame smaller
            than a tile (the runtime is resized, which costs an allocation, when T changes between
            calls); any batch size B.
        copy : bool
            If False, return a read-only view of the runtime's output buffer instead of a copy
            (saves ~1 ms per MB of logits). The caller must drop every reference to it before the
            next call: the runtime refuses to run while its buffers are referenced.
        margin : int
            Rows and columns at each edge of a tile whose logits the caller will not read (the
            tiler's margin: it keeps only the core). A network with a refinement then refines and
            copies only the core (7 strips instead of 8 on a 1280-px tile with a 128-px margin);
            the edges of its result are left unset. The core is the same as with ``margin=0``.
        writable : bool
            With ``copy=False``, an array the caller may write into: the refinement's reused
            buffer (the next call overwrites it), or a copy for a network without refinement. The
            engine combines the context pass's logits there.

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
        if self._strips is not None:
            head = self._interpreter.tensor(self._output)()
            try:
                logits = self._strips.run(batch, head, margin)
            finally:
                del head  # the coarse runtime refuses to run again while its output is referenced
            if copy:
                return logits.copy()
            view = logits.view()
            view.flags.writeable = writable
            return view
        if copy or writable:  # LiteRT's own output buffer cannot be made writable
            return self._interpreter.get_tensor(self._output)
        view = self._interpreter.tensor(self._output)()
        view.flags.writeable = False
        return view


def strip_starts(tile_size: int, rows: int, block: int, margin: int = 0) -> list[int]:
    """First rows of the refinement strips of ``rows`` rows that cover the tile rows ``margin ..
    tile_size - margin``.

    They start ``rows`` apart from ``margin`` (rounded down to a multiple of ``block``, the coarse
    head's grid); the last one is moved up to end inside the tile, overlapping its neighbour.
    """
    first = margin // block * block
    return [min(r0, tile_size - rows) for r0 in range(first, tile_size - margin, rows)]


class _StripRefinement:
    """Runs a network's refinement (``refine.tflite``) strip by strip over tiles.

    Strip k covers the tile rows ``r0 = k R .. r0 + R``; it is fed the image rows ``r0 - halo ..
    r0 + R + halo`` and the coarse head rows ``(r0 - halo) / block .. (r0 + R + halo) / block``, with
    zeros beyond the tile's edges (the zero padding the whole-tile model's 3x3 convolution sees),
    and its inner R rows are kept. The logits of a batch go into one buffer, reused call to call.
    """

    def __init__(self, interpreter, refinement: dict, tile_size: int, n_classes: int):
        self.rows, self.halo, self.block = _check_refinement(refinement, tile_size)
        self.tile_size = tile_size
        self.n_classes = n_classes
        self._it = interpreter
        self._allocated = False  # at the first call: a runtime never run holds no working memory
        inputs = sorted(interpreter.get_input_details(), key=lambda d: int(d["shape"][-1]))
        self._image_in, self._head_in = inputs[0], inputs[1]
        self._output = interpreter.get_output_details()[0]["index"]
        self._logits = None

    def _fit_width(self, t: int) -> None:
        """Resize the strip inputs to tiles of side ``t`` (the strips' width), and allocate."""
        if t != self.tile_size:
            for d in (self._image_in, self._head_in):
                shape = list(d["shape"])
                shape[2] = t // self.block if d is self._head_in else t
                self._it.resize_tensor_input(d["index"], shape, strict=False)
            self.tile_size, self._allocated = t, False
        if not self._allocated:
            with _stderr_silenced():
                self._it.allocate_tensors()
            self._allocated = True

    def run(self, batch: np.ndarray, head: np.ndarray, margin: int = 0) -> np.ndarray:
        """Logits (B, T, T, C) of a batch of tiles (B, T, T, 1) from their coarse head outputs;
        only rows and columns ``margin .. T - margin`` are set when ``margin`` > 0."""
        self._fit_width(batch.shape[1])
        t, r, h, b = self.tile_size, self.rows, self.halo, self.block
        if self._logits is None or self._logits.shape[:2] != (len(batch), t):
            self._logits = None  # release the old buffer before allocating the new one
            self._logits = np.empty((len(batch), t, t, self.n_classes), np.float32)
        image_in, head_in = self._image_in["index"], self._head_in["index"]
        cols = slice(margin, t - margin)
        for i in range(len(batch)):
            for r0 in strip_starts(t, r, b, margin):
                lo, hi = r0 - h, r0 + r + h
                a, z = max(lo, 0), min(hi, t)
                # written straight into the runtime's input buffers (set_tensor would copy twice)
                image = self._it.tensor(image_in)()[0]
                image[: a - lo] = 0.0
                image[a - lo : z - lo] = batch[i, a:z]
                image[z - lo :] = 0.0
                coarse = self._it.tensor(head_in)()[0]
                coarse[: (a - lo) // b] = 0.0
                coarse[(a - lo) // b : (z - lo) // b] = head[i, a // b : z // b]
                coarse[(z - lo) // b :] = 0.0
                del image, coarse
                self._it.invoke()
                out = self._it.tensor(self._output)()
                self._logits[i, r0 : r0 + r, cols] = out[0, h : h + r, cols]
                del out
        return self._logits


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
        The model identifier (weights hash) of the written inference file(s).
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
    from .model import STEM, has_refinement, split_refinement

    meta = metadata.to_dict()
    files = [net_dir / MODEL_FILE]
    if has_refinement(model):
        t = metadata.tile_size
        rows = max(r for r in range(STEM, min(REFINE_ROWS, t) + 1, STEM) if t % r == 0)
        fixed, strip = split_refinement(model, t, rows)
        (net_dir / REFINE_FILE).write_bytes(tf.lite.TFLiteConverter.from_keras_model(strip).convert())
        files.append(net_dir / REFINE_FILE)
        meta["refinement"] = {"file": REFINE_FILE, "rows": rows, "halo": STEM, "block": STEM}
    else:
        fixed_in = keras.Input(tuple(in_shape))
        fixed = keras.Model(fixed_in, model(fixed_in))
        (net_dir / REFINE_FILE).unlink(missing_ok=True)
        meta["refinement"] = None
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    (net_dir / MODEL_FILE).write_bytes(converter.convert())
    model_id = weights_hash(*files, inference=meta)
    meta["extra"] = dict(meta.get("extra") or {}, model_id=model_id)
    (net_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return model_id
