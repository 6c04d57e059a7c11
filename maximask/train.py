"""``maximask-train``: train the maximask network on simulated frames, or fine-tune it on labelled frames.

Training data
    Frames from :func:`maximask.sim.simulate_frame`, normalised whole with
    :func:`maximask.normalize.normalize_image` exactly as inference does, then cut into random training
    tiles. Frames are simulated in a worker process, a *chunk* of frames at a time, while the network
    trains on the previous chunk; each chunk feeds a fixed number of steps. Chunk ``c``'s frames use
    the seeds ``SeedSequence(seed, spawn_key=(0, c, i))`` and its tile draws
    ``SeedSequence(seed, spawn_key=(3, c))``: the whole data stream is a function of the seed and the
    step, so that a run resumed from a checkpoint sees exactly the data an uninterrupted run would.
    Validation frames use ``spawn_key=(1, i)``; the held-out benchmark (benchmarks/quality.py) uses
    another root seed.
Augmentation
    Left-right and up-down flips only: a 90-degree rotation would turn hot/dead columns and bleed
    trails (which follow the detector columns) into rows. Gain and noise changes are not augmented:
    the normalisation divides them out, and the simulator already draws gain, read noise, sky and
    seeing per frame.
Loss
    Binary cross-entropy per class with positive-pixel weights ``w_c`` (rare classes up-weighted,
    :func:`positive_weights`). A weight ``w_c`` shifts the optimal logit by ``log(w_c)``; the export
    subtracts it from the head biases, so that the shipped network's logits are calibrated to the
    training class frequencies (the training priors of its metadata), as the prior modification assumes.
Checkpoints
    ``RUN_DIR/checkpoint.keras`` (model and optimizer) and ``RUN_DIR/state.json`` every
    ``--checkpoint-every`` steps and at the end; a run restarted with the same ``RUN_DIR`` resumes
    from them. SIGTERM or SIGINT stop the run after the current step with a checkpoint (no
    export), end the simulation workers and exit with status 128 + signal (143, 130). Validation
    metrics (per-class ROC AUC and AP) go to ``RUN_DIR/log.jsonl``.

Fine-tuning (``--init-from NET_DIR --data DIR``) starts from a network directory's ``model.keras`` and
trains on the user's frames: pairs ``NAME.fits`` (image) + ``NAME.truth.fits`` (uint8 cube of 14
planes in class order), with the same tiling, loss and augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .classes import ABBRS, N_CLASSES
from .model import has_refinement

DEFAULT_SEED = 20261123
TRAIN, VALID, TILES, PRIOR = 0, 1, 3, 4  # spawn-key streams (the held-out benchmark uses another root seed)
N_FREQ_FRAMES = 32  # frames simulated (512 x 512) to estimate class frequencies for the loss weights


# ------------------------------------------------------------------------------------------------
# Data


def frame_seed(seed: int, stream: int, *index: int) -> np.random.SeedSequence:
    """Seed of one simulated frame: an independent stream per (purpose, chunk, frame)."""
    return np.random.SeedSequence(seed, spawn_key=(stream,) + tuple(index))


def simulate_normalised(seq, shape, normalisation=None, sim_config=None, bin_factor=1):
    """Simulate a frame and normalise it whole, exactly as inference does.

    Parameters
    ----------
    seq : numpy.random.SeedSequence
    shape : tuple of int
        Frame shape (H, W).
    normalisation : dict, optional
        Normalisation parameters (default :data:`maximask.normalize.DEFAULT_NORMALISATION`).
    sim_config : dict, optional
        Simulator options.
    bin_factor : int
        With b > 1, the frame the network is given is the simulated frame binned b x b, as the
        context pass bins it (:func:`maximask.context.bin_frame`), and the truth is each block's
        share of labelled pixels (soft labels): what a context network is trained on.

    Returns
    -------
    data : ndarray, float32, shape (H / b, W / b)
        Normalised frame.
    truth : ndarray, shape (14, H / b, W / b)
        uint8 labels, or with ``bin_factor`` > 1 float32 shares in [0, 1].
    """
    from .normalize import normalize_image
    from .sim import simulate_frame

    image, truth, _ = simulate_frame(tuple(shape), np.random.default_rng(seq), sim_config)
    if bin_factor > 1:
        from .context import bin_frame

        image = bin_frame(image, bin_factor)
        truth = np.stack([bin_frame(plane, bin_factor) for plane in truth])
    return normalize_image(image, normalisation).data, truth


def _simulate_chunk(args):
    seed, chunk, n_frames, shape, sim_config, bin_factor = args
    frames = [simulate_normalised(frame_seed(seed, TRAIN, chunk, i), shape, sim_config=sim_config,
                                  bin_factor=bin_factor)
              for i in range(n_frames)]
    return np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])


def _ignore_sigint():
    """Pool initializer: Ctrl-C reaches the workers too; the trainer alone handles it (and ends them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def draw_tiles(rng, data, truth, n, tile, edge_pad=0):
    """Random training tiles from a stack of frames, with column-preserving flips.

    Tiles may overhang the frame edges by up to ``edge_pad`` pixels (at most half a tile): the overhang holds zeros (image
    and labels), as the inference engine's canvas around a frame does, so that the network learns
    the frame borders in the conditions it meets them at inference.

    Parameters
    ----------
    rng : numpy.random.Generator
    data : ndarray, float32, shape (F, H, W)
        Normalised frames.
    truth : ndarray, uint8, shape (F, 14, H, W)
    n : int
        Number of tiles.
    tile : int
        Tile side (pixels).

    Returns
    -------
    x : ndarray, float32, shape (n, tile, tile, 1)
    y : ndarray, float32, shape (n, tile, tile, 14)
    """
    f, h, w = data.shape
    p = min(int(edge_pad), tile // 2)  # a tile always keeps at least half of its side in the frame
    x = np.zeros((n, tile, tile, 1), np.float32)
    y = np.zeros((n, tile, tile, truth.shape[1]), np.float32)
    for k in range(n):
        i = rng.integers(f)
        y0 = rng.integers(-p, h - tile + p + 1) if p else rng.integers(h - tile + 1)
        x0 = rng.integers(-p, w - tile + p + 1) if p else rng.integers(w - tile + 1)
        # the part of the tile inside the frame; the rest stays zero
        ya, yb = max(y0, 0), min(y0 + tile, h)
        xa, xb = max(x0, 0), min(x0 + tile, w)
        xi = np.zeros((tile, tile), np.float32)
        yi = np.zeros((tile, tile, truth.shape[1]), np.float32)
        xi[ya - y0:yb - y0, xa - x0:xb - x0] = data[i][ya:yb, xa:xb]
        yi[ya - y0:yb - y0, xa - x0:xb - x0] = np.moveaxis(truth[i][:, ya:yb, xa:xb], 0, -1)
        if rng.random() < 0.5:  # left-right flip: columns stay columns
            xi, yi = xi[:, ::-1], yi[:, ::-1]
        if rng.random() < 0.5:  # up-down flip
            xi, yi = xi[::-1], yi[::-1]
        x[k, ..., 0] = xi
        y[k] = yi
    return x, y


def labels_to_cells(y, block=4):
    """Fold full-resolution labels into the network's 1/``block`` cells (space-to-depth).

    Parameters
    ----------
    y : ndarray, shape (n, H, W, C)

    Returns
    -------
    ndarray, shape (n, H / block, W / block, block * block * C)
        Channel ``(dy * block + dx) * C + c``: the order of ``tf.nn.space_to_depth``, inverse of the
        network's final depth-to-space, so that the loss can be computed on the head's output.
    """
    n, h, w, c = y.shape
    y = y.reshape(n, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h // block, w // block, block * block * c)


def positive_weights(freq, power=0.5, cap=30.0):
    """Weights of positive pixels in the loss: ``clip(((1 - f) / f) ** power, 1, cap)``.

    The square root of the imbalance with a cap: very rare classes (hot and dead pixels, 1e-4 of the
    pixels) get a strong but bounded weight, so that they are not drowned by the background without
    flooding the output with false positives.
    """
    f = np.clip(np.asarray(freq, np.float64), 1e-6, 1 - 1e-6)
    return np.clip(((1 - f) / f) ** power, 1.0, cap)


# ------------------------------------------------------------------------------------------------
# Loss and model helpers (TensorFlow imported lazily)


def _loss_class():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="maximask")
    class WeightedBCE(keras.losses.Loss):
        """Per-class weighted binary cross-entropy on logits, averaged over pixels and classes."""

        def __init__(self, pos_weight=None, class_mask=None, name="weighted_bce", **kwargs):
            super().__init__(name=name, **kwargs)
            # one weight per output channel (14, or 14 * 16 on the head's cells)
            self.pos_weight = [float(w) for w in (pos_weight or [1.0] * N_CLASSES)]
            # each channel's loss multiplier: 0 for the channels left out of the loss (--loss-classes),
            # which then get no gradient; W for --class-weight CLASS=W; 1 otherwise
            self.class_mask = [float(m) for m in (class_mask or [1.0] * len(self.pos_weight))]

        def call(self, y_true, y_pred):
            w = ops.convert_to_tensor(self.pos_weight, dtype=y_pred.dtype)
            m = ops.convert_to_tensor(self.class_mask, dtype=y_pred.dtype)
            # softplus(-z) = -log(sigmoid(z)), softplus(z) = -log(1 - sigmoid(z))
            loss = w * y_true * ops.softplus(-y_pred) + (1.0 - y_true) * ops.softplus(y_pred)
            return ops.mean(m * loss, axis=-1)

        def get_config(self):
            return dict(super().get_config(), pos_weight=self.pos_weight, class_mask=self.class_mask)

    return WeightedBCE


def training_view(model):
    """The model the loss is computed on.

    Without refinement, the model up to its head (before depth-to-space): the loss is computed there,
    on labels folded by :func:`labels_to_cells`, which avoids the full-resolution rearrangement (30%
    of a training step) without changing the loss. With refinement, the full model (its output
    depends on full-resolution features).
    """
    import keras

    if has_refinement(model):
        return model
    return keras.Model(model.inputs, model.get_layer("head").output, name="maximask_cells")


def freeze_all_but_refinement(model, part: str = "refinement") -> int:
    """Make only a part of the full-resolution refinement trainable (``part``: ``"refinement"``, all
    of it; ``"refinement-output"``, its last 1x1 layer; ``"cr-refinement"``, the cosmic-ray
    refinement); returns the trainable parameter count.

    The coarse network (encoder, decoder, head) then keeps its weights, and its batch normalisation
    its statistics, so the classes it decides (nebulosity, background, fringes) cannot drift while
    the refinement learns pixel-scale defects.
    """
    from .model import CR_LAYERS, has_cr_refinement

    if part == "cr-refinement":
        if not has_cr_refinement(model):
            raise SystemExit("maximask-train: error: --train-only cr-refinement needs a network with a cosmic-ray "
                             "refinement (--arch '{\"cr_refine\": 8}')")
        for layer in model.layers:
            layer.trainable = layer.name in CR_LAYERS
        return trainable_count(model)
    if not has_refinement(model):
        raise SystemExit("maximask-train: error: --train-only refinement needs a network with a refinement")
    for layer in model.layers:
        layer.trainable = layer.name == "refine_out" if part == "refinement-output" else layer.name.startswith("refine_")
    return trainable_count(model)


def class_emphasis(specs) -> dict:
    """The loss multipliers of ``--class-weight`` (``["CR=4", ...]``) as ``{"CR": 4.0, ...}``.

    Raises
    ------
    SystemExit
        An unknown class, a malformed entry, or a weight that is not a positive number.
    """
    weights = {}
    for spec in specs or []:
        name, _, value = spec.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if name not in ABBRS or not weight > 0 or not np.isfinite(weight):
            raise SystemExit(f"maximask-train: error: --class-weight {spec!r}: expected CLASS=W with CLASS one of "
                             f"{', '.join(ABBRS)} and W a positive number")
        weights[name] = weight
    return weights


def trained(abbr: str, args) -> bool:
    """Whether class ``abbr`` is in the loss (all classes unless ``--loss-classes`` names some)."""
    return args.loss_classes is None or abbr in args.loss_classes


def trainable_count(model) -> int:
    """Number of trainable weights of a Keras model."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def full_view(train_model):
    """The full network (logits at full resolution) from a :func:`training_view` model."""
    import keras

    from .model import STEM, _custom_layers

    if has_refinement(train_model):
        return train_model
    out = _custom_layers()["DepthToSpace"](STEM, name="to_full_res")(train_model.outputs[0])
    return keras.Model(train_model.inputs, out, name="maximask")


def transfer_weights(source, target):
    """Copy the weights of every layer of ``source`` into the layer of the same name and shapes in
    ``target`` (growing a network: e.g. adding the refinement to a trained coarse network).

    Returns
    -------
    list of str
        Names of the target layers that kept their initial weights.
    """
    src = {layer.name: layer for layer in source.layers}
    fresh = []
    for layer in target.layers:
        w = layer.get_weights()
        if not w:
            continue
        s = src.get(layer.name)
        if s is not None and [a.shape for a in s.get_weights()] == [a.shape for a in w]:
            layer.set_weights(s.get_weights())
        else:
            fresh.append(layer.name)
    return fresh


def predict_frame_logits(model, data):
    """Logits of a whole normalised frame with the Keras model.

    Parameters
    ----------
    model : keras.Model
    data : ndarray, float32, shape (H, W), H and W multiples of the network's size_multiple

    Returns
    -------
    ndarray, float32, shape (C, H, W)
    """
    out = model(data[None, :, :, None], training=False)
    return np.moveaxis(np.asarray(out)[0], -1, 0)


def validate(model, frames, names=ABBRS):
    """Per-class ROC AUC and AP of a model on validation frames.

    Parameters
    ----------
    model : keras.Model
    frames : list of (data float32 (H, W), truth uint8 (C, H, W))

    Returns
    -------
    dict
        ``{class: metrics}`` (see :func:`maximask.metrics.class_metrics`) and the histogram.
    """
    from .metrics import ScoreHistogram, all_metrics

    hist = ScoreHistogram(len(names))
    for data, truth in frames:
        hist.add(predict_frame_logits(model, data), truth)
    return all_metrics(hist, names), hist


def shift_logits(model, shift):
    """Add ``shift`` (one value per class) to the model's output logits, in place, through the bias
    of its last layer (the refinement's output layer, or the head's 16 cells per class)."""
    from .model import STEM

    shift = np.asarray(shift, np.float32)
    if has_refinement(model):
        layer = model.get_layer("refine_out")
    else:
        layer = model.get_layer("head")
        shift = np.tile(shift, STEM * STEM)  # depth-to-space order
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + shift])


def calibrated_copy(model, pos_weight):
    """A copy of ``model`` whose logits no longer carry the loss weights' ``log(w_c)`` shift."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    shift_logits(clone, -np.log(np.asarray(pos_weight, np.float32)))
    return clone


def export(model, net_dir, arch, pos_weight, priors, tile_size, extra):
    """Write the trained model as a network directory (see :func:`maximask.network.save_network`)."""
    from .model import required_margin
    from .network import NetworkMetadata, save_network
    from .normalize import DEFAULT_NORMALISATION

    meta = NetworkMetadata(
        name="maximask",
        classes=list(ABBRS),
        training_priors=[float(p) for p in priors],
        margin=required_margin(arch),
        tile_size=int(tile_size),
        size_multiple=arch.size_multiple,
        normalisation=dict(DEFAULT_NORMALISATION),
        output="logits",
        extra=dict(extra, architecture=arch.to_dict()),
    )
    return save_network(calibrated_copy(model, pos_weight), net_dir, meta)


# ------------------------------------------------------------------------------------------------
# Fine-tuning data


def load_labelled_frames(data_dir, normalisation=None):
    """User frames for fine-tuning: ``NAME.fits`` + ``NAME.truth.fits`` pairs in ``data_dir``.

    Returns
    -------
    data : list of ndarray, float32 (H, W)
        Normalised frames.
    truth : list of ndarray, uint8 (14, H, W)
    """
    from astropy.io import fits

    from .errors import UsageError
    from .normalize import normalize_image

    data, truth = [], []
    for tpath in sorted(Path(data_dir).glob("*.truth.fits")):
        ipath = tpath.with_name(tpath.name.replace(".truth.fits", ".fits"))
        if not ipath.is_file():
            raise UsageError(tpath, f"no image {ipath.name} beside this truth cube")
        image = fits.getdata(ipath).astype(np.float32)
        t = fits.getdata(tpath)
        if t.shape != (N_CLASSES,) + image.shape:
            raise UsageError(tpath, f"truth cube shape {t.shape}, expected {(N_CLASSES,) + image.shape}")
        data.append(normalize_image(image, normalisation).data)
        truth.append((t > 0).astype(np.uint8))
    if not data:
        raise UsageError(data_dir, "no NAME.fits + NAME.truth.fits pairs found")
    return data, truth


# ------------------------------------------------------------------------------------------------
# Main loop


def _parser():
    p = argparse.ArgumentParser(
        prog="maximask-train",
        description="Train the maximask network on simulated frames (or fine-tune it on labelled "
        "frames with --init-from and --data), with checkpoints and resume.",
    )
    p.add_argument("--run-dir", default="runs/maximask", help="checkpoints, logs (default %(default)s)")
    p.add_argument("--out", default=None, help="network directory to export at the end")
    p.add_argument("--steps", type=int, default=6000, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tile", type=int, default=256, help="training tile side (pixels)")
    p.add_argument("--sim-config", default=None,
                   help="simulator options for the training and validation frames, as JSON or a JSON "
                        "file (see maximask.sim.config); e.g. more cosmic rays than the default mix")
    p.add_argument("--edge-pad", type=int, default=64,
                   help="training tiles may overhang the frame edge by up to this many pixels, filled "
                        "with zeros as the inference engine's canvas is (default %(default)s)")
    p.add_argument("--frame-size", type=int, default=1024, help="simulated frame side (pixels)")
    p.add_argument("--bin", type=int, default=1, metavar="B",
                   help="train on the simulated frames binned B x B, with soft labels (a context network "
                        "for the context pass, see maximask.context); default 1, no binning")
    p.add_argument("--frames-per-chunk", type=int, default=6)
    p.add_argument("--steps-per-chunk", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--train-only", choices=("all", "refinement", "refinement-output", "cr-refinement"), default="all",
                   help="refinement: train only the full-resolution refinement, the coarse network frozen; "
                        "refinement-output: only its last 1x1 layer; cr-refinement: only the cosmic-ray "
                        "refinement (with --loss-classes CR, every other class's logits stay identical)")
    p.add_argument("--loss-classes", nargs="+", default=None, metavar="CLASS",
                   help="train these classes only; with --init-from the others keep the initial network's "
                        "logits and training priors")
    p.add_argument("--class-weight", nargs="+", default=None, metavar="CLASS=W",
                   help="multiply these classes' whole loss (positive and negative pixels) by W, e.g. CR=4, "
                        "to spend more of the network on them (default 1 for every class)")
    p.add_argument("--max-pos-weight", type=float, default=30.0,
                   help="cap of the positive-pixel loss weights of the rarest classes (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--val-frames", type=int, default=6)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (checkpoint, export) after this wall time in this invocation")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="stop (checkpoint, export) at this step, keeping the --steps schedule: "
                   "reproduces a run that --max-minutes stopped")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    p.add_argument("--workers", type=int, default=1, help="simulation worker processes")
    p.add_argument("--tile-size", type=int, default=None,
                   help="inference tile side written in the metadata (default: from --init-from, or 1024)")
    p.add_argument("--arch", default=None, help="architecture as JSON (maximask.model.Architecture)")
    p.add_argument("--init-from", default=None, help="network directory to start from (fine-tuning)")
    p.add_argument("--data", default=None, help="fine-tuning frames: NAME.fits + NAME.truth.fits pairs")
    p.add_argument("--no-carry", action="store_true",
                   help="with --init-from: export without the initial network's context pass (and its context "
                        "network), block smoothing, dip, peak and hot-column scores, which are otherwise "
                        "carried over (never with --bin)")
    return p


def _log(run_dir, record):
    record = dict(record, time=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    with open(Path(run_dir) / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), file=sys.stderr, flush=True)


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.loss_classes is not None:
        unknown = sorted(set(args.loss_classes) - set(ABBRS))
        if unknown:
            raise SystemExit(f"maximask-train: error: unknown class(es) in --loss-classes: {', '.join(unknown)}")
        if not args.init_from:
            # the other classes would keep their random initial weights
            raise SystemExit("maximask-train: error: --loss-classes needs --init-from NET_DIR")
    emphasis = class_emphasis(args.class_weight)  # a malformed --class-weight fails before anything runs
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.keras.utils.set_random_seed(args.seed)
    import keras

    from .model import STEM, Architecture, build_model, custom_objects
    from .network import KERAS_FILE, METADATA_FILE

    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, state_path = run_dir / "checkpoint.keras", run_dir / "state.json"
    WeightedBCE = _loss_class()
    objects = dict(custom_objects(), WeightedBCE=WeightedBCE)
    finetune = args.data is not None
    if finetune and not args.init_from:
        raise SystemExit("maximask-train: error: --data needs --init-from NET_DIR")

    if state_path.is_file() and ckpt.is_file():
        state = json.loads(state_path.read_text())
        tmodel = keras.models.load_model(ckpt, custom_objects=objects)
        model = full_view(tmodel)
        arch = Architecture.from_dict(state["arch"])
        _log(run_dir, {"event": "resume", "step": state["step"]})
    else:
        init_meta = None
        if args.init_from:
            init_meta = json.loads((Path(args.init_from) / METADATA_FILE).read_text())
            model = keras.models.load_model(Path(args.init_from) / KERAS_FILE, custom_objects=objects)
            # the shipped logits are calibrated (loss-weight shift removed); training with a weighted
            # loss again starts from the uncalibrated logits
            init_w = (init_meta.get("extra") or {}).get("loss_pos_weight")
            if init_w:
                # classes left out of the loss keep their calibrated logits: no shift in, none out
                shift_logits(model, np.log([init_w[c] if trained(c, args) else 1.0 for c in ABBRS]))
            arch = Architecture.from_dict(init_meta["extra"]["architecture"])
            if args.arch:
                # grow the network: new architecture, weights carried over layer by layer
                arch = Architecture.from_dict(dict(arch.to_dict(), **json.loads(args.arch)))
                grown = build_model(arch)
                fresh = transfer_weights(model, grown)
                model = grown
                _log(run_dir, {"event": "init", "from": str(args.init_from), "fresh_layers": fresh})
        else:
            arch = Architecture.from_dict(json.loads(args.arch)) if args.arch else Architecture()
            model = build_model(arch)
        if args.train_only != "all":
            freeze_all_but_refinement(model, part=args.train_only)
        else:
            # a network saved after a --train-only run keeps its frozen layers: all train again
            for layer in model.layers:
                layer.trainable = True
        tmodel = training_view(model)
        state = {"step": 0, "arch": arch.to_dict(), "args": vars(args), "argv": sys.argv,
                 "pixel_counts": [0.0] * N_CLASSES, "n_pixels": 0.0, "wall_s": 0.0}
        if init_meta is not None:
            state["tile_size"] = init_meta["tile_size"]
        # class frequencies for the loss weights, from a first look at the training stream
        if finetune:
            _, truth0 = load_labelled_frames(args.data)
            freq = np.mean([t.reshape(N_CLASSES, -1).mean(1) for t in truth0], axis=0)
        else:
            freq = np.mean([simulate_normalised(frame_seed(args.seed, PRIOR, i), (512, 512),
                                                sim_config=_sim_config(args.sim_config))[1]
                            .reshape(N_CLASSES, -1).mean(1) for i in range(N_FREQ_FRAMES)], axis=0)
        weights = positive_weights(freq, cap=args.max_pos_weight)
        state["pos_weight"] = [float(w) if trained(c, args) else 1.0 for c, w in zip(ABBRS, weights)]
        class_loss = [float(trained(c, args)) * emphasis.get(c, 1.0) for c in ABBRS]
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, args.steps, alpha=0.02, warmup_target=args.lr, warmup_steps=min(200, args.steps // 10))
        if has_refinement(model):
            loss_weights = list(state["pos_weight"])
        else:
            loss_weights = np.tile(state["pos_weight"], STEM * STEM).tolist()  # labels_to_cells order
            class_loss = np.tile(class_loss, STEM * STEM).tolist()
        tmodel.compile(optimizer=keras.optimizers.Adam(schedule), loss=WeightedBCE(loss_weights, class_loss))
        _log(run_dir, {"event": "start", "arch": arch.to_dict(), "params": model.count_params(),
                       "trainable_params": trainable_count(model), "class_weight": emphasis,
                       "pos_weight": dict(zip(ABBRS, np.round(state["pos_weight"], 2).tolist()))})
    args_steps = int(state["args"]["steps"]) if not finetune else args.steps
    # the data stream is fixed by the original invocation's options
    a = argparse.Namespace(**dict(state["args"]))
    frame_shape = (a.frame_size, a.frame_size)
    bin_factor = int(getattr(a, "bin", 1))
    sim_config = _sim_config(getattr(a, "sim_config", None))

    # validation frames (simulated, or a held-back share of the user's frames)
    if finetune:
        fdata, ftruth = load_labelled_frames(args.data)
        n_val = max(1, len(fdata) // 5) if len(fdata) > 1 else 0
        val = [(d, t) for d, t in zip(fdata[:n_val], ftruth[:n_val])]
        fdata, ftruth = fdata[n_val:] or fdata, ftruth[n_val:] or ftruth
        m = arch.size_multiple
        val = [(d[: d.shape[0] // m * m, : d.shape[1] // m * m],
                t[:, : d.shape[0] // m * m, : d.shape[1] // m * m]) for d, t in val]
    else:
        val = []
        for i in range(a.val_frames):
            data, truth = simulate_normalised(frame_seed(a.seed, VALID, i), frame_shape,
                                              sim_config=sim_config, bin_factor=bin_factor)
            val.append((data, (truth >= 0.5).astype(np.uint8)))  # a block is labelled where most of it is

    # SIGTERM/SIGINT only set a flag; the loop stops at the next step (or while waiting for a chunk),
    # writes a checkpoint (rerunning the command resumes), ends the workers and exits 128 + signal.
    # An ignored SIGINT (a background job of a non-interactive shell) stays ignored.
    stop = []
    restore = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                restore[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
    pool = None
    try:
        if not finetune:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(args.workers, initializer=_ignore_sigint)

        def chunk_data(c):
            if finetune:
                return None
            return pool.apply_async(_simulate_chunk,
                                    ((a.seed, c, a.frames_per_chunk, frame_shape, sim_config, bin_factor),))

        full_res_loss = has_refinement(tmodel)  # else the loss is on the head's cells
        t_start = time.time()
        wall_before = float(state["wall_s"])
        step = state["step"]
        chunk = step // a.steps_per_chunk
        pending = chunk_data(chunk)
        losses, t_wait = [], 0.0
        while step < args_steps and not stop:
            if (args.max_minutes is not None and time.time() - t_start > 60 * args.max_minutes) or (
                    args.stop_at_step is not None and step >= args.stop_at_step):
                break
            t0 = time.time()
            if finetune:
                rng = np.random.default_rng(frame_seed(a.seed, TILES, chunk))
            else:
                while not pending.ready() and not stop:  # a signal must not wait for a slow chunk
                    pending.wait(0.5)
                if stop:
                    break
                data, truth = pending.get()
                pending = chunk_data(chunk + 1)
                rng = np.random.default_rng(frame_seed(a.seed, TILES, chunk))
            t_wait += time.time() - t0
            for k in range(a.steps_per_chunk):
                if finetune:
                    i = rng.integers(len(fdata))
                    fr = fdata[i][None], ftruth[i][None]
                    tile = min(a.tile, *fdata[i].shape) // arch.size_multiple * arch.size_multiple
                    x, y = draw_tiles(rng, fr[0], fr[1], a.batch_size, tile)
                else:
                    x, y = draw_tiles(rng, data, truth, a.batch_size, a.tile, getattr(a, "edge_pad", 0))
                if chunk * a.steps_per_chunk + k < step:
                    continue  # resumed inside a chunk: skip the batches already used
                target = y if full_res_loss else labels_to_cells(y)
                losses.append(float(tmodel.train_on_batch(x, target)))
                state["pixel_counts"] = (np.asarray(state["pixel_counts"]) + y.sum(axis=(0, 1, 2))).tolist()
                state["n_pixels"] += float(y.shape[0] * y.shape[1] * y.shape[2])
                step += 1
                state["step"] = step
                if step % 50 == 0:
                    _log(run_dir, {"event": "train", "step": step, "loss": float(np.mean(losses)),
                                   "lr": float(tmodel.optimizer.learning_rate),
                                   "wait_data_s": round(t_wait, 1),
                                   "elapsed_s": round(wall_before + time.time() - t_start, 1)})
                    losses, t_wait = [], 0.0
                if step % a.checkpoint_every == 0 or step == args_steps:
                    _checkpoint(tmodel, ckpt, state, state_path, wall_before, t_start)
                if stop:
                    break  # SIGTERM/SIGINT: checkpoint below, no validation, no export
                if step % a.val_every == 0 or step == args_steps:
                    metrics, _ = validate(model, val)
                    _log(run_dir, {"event": "validation", "step": step,
                                   "auc": {n: _r(m["auc"]) for n, m in metrics.items()},
                                   "ap": {n: _r(m["ap"]) for n, m in metrics.items()}})
                if step >= args_steps or (args.stop_at_step is not None and step >= args.stop_at_step):
                    break
            chunk += 1
        _checkpoint(tmodel, ckpt, state, state_path, wall_before, t_start)
    finally:
        if pool is not None:  # also on errors: no worker outlives the trainer
            pool.terminate()
            pool.join()
        for sig, handler in restore.items():
            signal.signal(sig, handler)
    if stop:
        _log(run_dir, {"event": "stopped", "signal": signal.Signals(stop[0]).name, "step": step})
        return 128 + stop[0]
    if args.out:
        # the prior modification needs priors in (0, 1): a class never seen gets one pixel in 1e7
        priors = np.clip(np.asarray(state["pixel_counts"]) / max(state["n_pixels"], 1.0), 1e-7, 1 - 1e-7)
        if args.loss_classes is not None and args.init_from:
            # the classes left out of the loss keep the initial network's logits, hence its priors
            init_priors = json.loads((Path(args.init_from) / METADATA_FILE).read_text())["training_priors"]
            priors = np.array([p if trained(c, args) else q for c, p, q in zip(ABBRS, priors, init_priors)])
        tile_size = args.tile_size or state.get("tile_size") or 1024
        extra = {
            "training_command": "maximask-train " + " ".join(state["argv"][1:]),
            "seed": a.seed,
            "steps": step,
            "schedule_steps": a.steps,
            "batch_size": a.batch_size,
            "training_tile": a.tile,
            "frame_size": a.frame_size,
            "bin": bin_factor,
            "frames_simulated": (step // a.steps_per_chunk + 1) * a.frames_per_chunk if not finetune else 0,
            "training_wall_s": round(state["wall_s"], 1),
            "loss_pos_weight": dict(zip(ABBRS, state["pos_weight"])),
            "fine_tuned_from": args.init_from,
        }
        model_id = export(model, args.out, arch, state["pos_weight"], priors, tile_size, extra)
        carried = []
        if args.init_from and bin_factor == 1 and not args.no_carry:
            from .assemble import carry_inference

            carried = carry_inference(args.init_from, args.out)
            model_id = json.loads((Path(args.out) / METADATA_FILE).read_text())["extra"]["model_id"]
        _log(run_dir, {"event": "export", "out": str(args.out), "model_id": model_id, "step": step,
                       "carried": carried})
    return 0


def _sim_config(text):
    """Simulator options from ``--sim-config``: inline JSON, or the path of a JSON file."""
    if not text:
        return None
    text = text.strip()
    return json.loads(text if text.startswith("{") else Path(text).read_text())


def _r(v):
    return None if v is None else round(float(v), 5)


def _checkpoint(model, ckpt, state, state_path, wall_before, t_start):
    """Save model + optimizer and the loop state atomically (a crash leaves the previous pair)."""
    state["wall_s"] = wall_before + time.time() - t_start
    tmp = ckpt.with_name("checkpoint.tmp.keras")
    model.save(tmp)
    os.replace(tmp, ckpt)
    tmp_state = state_path.with_suffix(".tmp")
    tmp_state.write_text(json.dumps(state))
    os.replace(tmp_state, state_path)


if __name__ == "__main__":
    sys.exit(main())
