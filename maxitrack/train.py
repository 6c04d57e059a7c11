"""``maxitrack-train``: train the tracking-error classifier from simulated frames.

Reproduce the shipped network (from the repository root)::

    maxitrack-train --threads 1 --work runs/maxitrack_v2 --out tensorflow_models/maxitrack

(one thread: the result depends on the thread count; docs/MAXITRACK.md gives the cost and caveats).

Phases, each resumable (rerun the same command after an interruption):

1. **Frames.** ``--frames`` training and ``--val-frames`` validation frames from
   :func:`maximask.sim.simulate_tracking_frame` (half of them with a tracking error: drift, arc,
   jump, shake, periodic; the others normal frames with random seeing, coma, crowding and
   contaminants). Frame ``i`` of a split is simulated with ``numpy.random.default_rng((seed, split,
   i))`` (split 1 = training, 2 = validation; the benchmark uses 3), so the data is fixed by the
   seed and each frame can be regenerated alone. The tiles that the command would look at are
   selected and normalised by :func:`maxitrack.tiles.prepare_tiles` (the same code as inference)
   and cached in chunks under ``WORK/data`` (``--workers N``: N processes, the same cache).
2. **Training.** The network sees each tile and its autocorrelation (``--input tile+autocorr``,
   :func:`maxitrack.tiles.network_input`: every star's shape summed at the zero lag, double images
   as side peaks). The loss (``--loss frame``) is the binary cross-entropy of the **mean tile logit
   of each frame**, the quantity the command scores (``--loss tile``: every tile with its frame's
   label, which also pushes up tiles that show nothing, e.g. near the centre of a field rotation).
   Adam with a cosine-decayed learning rate, random flips and quarter turns of every tile (a
   tracking error has no preferred orientation on the detector). A checkpoint is written after each
   epoch and every ``--checkpoint-every`` steps inside one (``WORK/checkpoint.keras`` +
   ``WORK/state.json``, which records the settings, so that a work directory is resumed only with
   the same ones, and the epoch's random stream, so that a run resumed inside an epoch sees the
   batches and augmentations it would have seen). SIGTERM or SIGINT stops the run at the next step
   with a checkpoint (exit 128 + signal). The epoch with the lowest validation loss is kept
   (``WORK/best.keras``).
3. **Calibration.** On the validation frames the mean tile logit of each frame
   (:func:`maxitrack.scoring.field_logit`) is mapped to a calibrated logit by one-variable logistic
   regression (Platt scaling). ``--calibration-size`` and ``--calibration-tiles`` fit it on validation
   frames of another size with as many tiles as the command averages (``--inference-tiles``).
4. **Export** to ``--out`` with :func:`maximask.network.save_network` (LiteRT model, Keras model,
   metadata with the training prior, the tile selection, the calibration and this command).

``--train-only`` stops after phase 2. Training needs only Keras, so it can run with another backend
(``KERAS_BACKEND=jax`` on a GPU machine without TensorFlow; ``scripts/maxitrack_gpu_runs.sh``). The
same command without ``--train-only``, on the work directory alone (the training frames are not
needed again: the state keeps their prior), then calibrates and exports where TensorFlow is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from maxitrack.tiles import DEFAULT_SELECTION, NETWORK_INPUTS, fingerprint, network_input, prepare_tiles, tile_normalisation

SPLITS = {"train": 1, "val": 2, "bench": 3}
CHUNK = 50  # frames per cached chunk


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of frame ``index`` of a split (see module docstring)."""
    return np.random.default_rng((int(seed), SPLITS[split], int(index)))


def simulate_frame(seed: int, split: str, index: int, shape, sim_config: dict | None = None):
    """One simulated frame: ``(image float32 (H, W), label 0/1, metadata dict)``."""
    from maximask.sim import simulate_tracking_frame

    return simulate_tracking_frame(tuple(shape), frame_rng(seed, split, index), sim_config)


def simulator_hash() -> str:
    """SHA-256 (16 hex) of the simulator's source files: the data depend on them as on the seed."""
    import hashlib

    import maximask.sim

    h = hashlib.sha256()
    for f in sorted(Path(maximask.sim.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _frame_record(index: int, label: int, meta: dict) -> dict:
    """The JSON-serialisable part of a frame's metadata that evaluation needs."""
    rec = {"index": int(index), "label": int(label)}
    for k, v in meta.items():
        if isinstance(v, (bool, int, float, str)) or v is None:
            rec[k] = v
        elif isinstance(v, (np.integer, np.floating)):
            rec[k] = v.item()
    return rec


def _simulate_chunk(path: Path, split: str, c0: int, c1: int, seed: int, shape, tile: int, selection: dict,
                    sim_config: dict | None) -> Path:
    """Simulate frames ``c0 .. c1 - 1`` of a split and write their tiles to ``path`` (atomically)."""
    tiles, labels, frames, records = [], [], [], []
    for i in range(c0, c1):
        image, label, meta = simulate_frame(seed, split, i, shape, sim_config)
        t = prepare_tiles(image, tile, selection, tile_normalisation(tile))[..., 0]
        tiles.append(t.astype(np.float16))
        labels += [int(label)] * len(t)
        frames += [i] * len(t)
        records.append(_frame_record(i, label, meta))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        tiles=np.concatenate(tiles),
        label=np.array(labels, np.uint8),
        frame=np.array(frames, np.int32),
        records=np.array(json.dumps(records)),
    )
    os.replace(tmp, path)
    return path


def make_tiles(
    work: Path,
    split: str,
    n_frames: int,
    seed: int,
    shape,
    tile: int,
    selection: dict,
    sim_config: dict | None = None,
    log=print,
    workers: int = 1,
) -> dict:
    """Simulate the frames of a split and cache their tiles; returns the loaded arrays.

    ``workers`` > 1 simulates chunks in that many processes; every frame has its own random
    generator, so the cache does not depend on it.

    Returns
    -------
    dict
        ``tiles`` float16 (N, T, T), ``label`` uint8 (N,), ``frame`` int32 (N,) (index of each
        tile's frame), ``records`` list of per-frame dicts (label, error kind, simulator metadata).
    """
    d = work / "data"
    d.mkdir(parents=True, exist_ok=True)
    tag = f"{split}_s{seed}_{shape[0]}x{shape[1]}_t{tile}_n{selection['n_tiles']}"
    t0 = time.time()
    chunks = [(c0, min(n_frames, c0 + CHUNK)) for c0 in range(0, n_frames, CHUNK)]
    todo = [(d / f"{tag}_{c0:06d}_{c1:06d}.npz", c0, c1) for c0, c1 in chunks]
    todo = [t for t in todo if not t[0].exists()]
    rest = (seed, tuple(shape), tile, selection, sim_config)
    if workers > 1 and len(todo) > 1:
        import concurrent.futures
        import multiprocessing

        # spawn: the parent may already hold threads (TensorFlow, JAX) that fork would not carry
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_simulate_chunk, path, split, c0, c1, *rest) for path, c0, c1 in todo]
            for n, f in enumerate(concurrent.futures.as_completed(futures), 1):
                f.result()
                log(f"{split}: {n}/{len(todo)} chunks of {CHUNK} frames ({time.time() - t0:.0f} s)")
    else:
        for path, c0, c1 in todo:
            _simulate_chunk(path, split, c0, c1, *rest)
            log(f"{split}: frames {c1}/{n_frames} ({time.time() - t0:.0f} s)")
    parts = [np.load(d / f"{tag}_{c0:06d}_{c1:06d}.npz") for c0, c1 in chunks]
    return {
        "tiles": np.concatenate([p["tiles"] for p in parts]),
        "label": np.concatenate([p["label"] for p in parts]),
        "frame": np.concatenate([p["frame"] for p in parts]),
        "records": sum((json.loads(str(p["records"])) for p in parts), []),
    }


def load_cached_frames(pattern: str) -> dict:
    """The cached tiles, tile-to-frame index and frame labels of the chunks matching ``pattern``
    (a glob of :func:`make_tiles` chunks, e.g. ``WORK/data/val_*.npz``)."""
    import glob

    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"maxitrack: error: {pattern}: no cached frames")
    parts = [np.load(p) for p in paths]
    records = sum((json.loads(str(p["records"])) for p in parts), [])
    return {
        "tiles": np.concatenate([p["tiles"] for p in parts]),
        "frame": np.concatenate([p["frame"] for p in parts]),
        "labels": {r["index"]: r["label"] for r in records},
        "files": len(paths),
    }


def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random element of the dihedral group (flips, quarter turns) for each tile of a (B, T, T) batch."""
    out = np.empty_like(batch)
    k = rng.integers(0, 8, size=len(batch))
    for i, ki in enumerate(k):
        t = np.rot90(batch[i], ki % 4)
        out[i] = t[:, ::-1] if ki >= 4 else t
    return out


def augment_inputs(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`augment` applied to network inputs ``(B, T, T, C)`` rather than to tiles.

    Channel 0 (the tile) is turned as :func:`augment` turns it, with the same random draws. Channel
    1, if any, is the tile's autocorrelation, whose zero lag is at ``(T/2, T/2)``, not at the array's
    centre; it is turned about that lag, so the result is the autocorrelation of the turned tile
    (which is what ``network_input(augment(tiles))`` computes, 2.5 ms a tile) on every lag but
    ``-T/2``, which the network's crop (:data:`maxitrack.model.AC_CROP`) does not see and which is
    set to 0.
    """
    out = np.empty_like(x)
    k = rng.integers(0, 8, size=len(x))
    size = x.shape[1]
    padded = np.zeros((size + 1, size + 1), x.dtype)  # odd size: the zero lag at its centre
    for i, ki in enumerate(k):
        t = np.rot90(x[i, :, :, 0], ki % 4)
        out[i, :, :, 0] = t[:, ::-1] if ki >= 4 else t
        if x.shape[-1] > 1:
            padded[:size, :size] = x[i, :, :, 1]
            a = np.rot90(padded, ki % 4)
            out[i, :, :, 1] = (a[:, ::-1] if ki >= 4 else a)[:size, :size]
    return out


def _network_input_chunk(tiles: np.ndarray, kind: str) -> np.ndarray:
    return network_input(tiles.astype(np.float32)[..., None], kind)


def network_inputs(tiles: np.ndarray, kind: str, workers: int = 1) -> np.ndarray:
    """:func:`maxitrack.tiles.network_input` of float16 tiles ``(N, T, T)``, computed once before
    training (the autocorrelation would otherwise be recomputed at every step), in ``workers``
    processes. Returns float32 ``(N, T, T, C)``."""
    if workers <= 1 or len(tiles) < 2 * 256:
        return _network_input_chunk(tiles, kind)
    import concurrent.futures
    import multiprocessing

    parts = [tiles[i : i + 256] for i in range(0, len(tiles), 256)]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(_network_input_chunk, parts, [kind] * len(parts))))


def frame_mean_logits(tile_logits: np.ndarray, frame: np.ndarray) -> tuple:
    """Mean tile logit per frame: ``(frames (F,), mean logits (F,))``."""
    frames, inv = np.unique(frame, return_inverse=True)
    sums = np.bincount(inv, weights=np.asarray(tile_logits, np.float64).ravel())
    return frames, sums / np.bincount(inv)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 100, offset=None,
                 intercept: bool = True) -> np.ndarray:
    """Logistic regression ``P(y=1) = sigmoid(X w + b)`` by Newton's method (tiny ridge on w, b).

    Parameters
    ----------
    X : ndarray, float, shape (N, K)
    y : ndarray, 0/1, shape (N,)
    offset : ndarray, float, shape (N,), optional
        A fixed term added to ``X w + b`` (the logits of a model being extended).
    intercept : bool
        Fit the intercept ``b`` (else it is 0 and not returned).

    Returns
    -------
    ndarray, shape (K + 1,), or (K,) without the intercept
        ``w`` then the intercept ``b``. Newton starts from the first weight at 1 and the others at
        0 (for Platt scaling: the identity); with an offset, from 0.
    """
    X = np.asarray(X, np.float64).reshape(len(y), -1)
    y = np.asarray(y, np.float64)
    if intercept:
        X = np.column_stack([X, np.ones(len(X))])
    off = np.zeros(len(y)) if offset is None else np.asarray(offset, np.float64)
    w = np.zeros(X.shape[1])
    if offset is None:
        w[0] = 1.0
    for _ in range(iters):
        z = np.clip(off + X @ w, -50, 50)
        p = 1.0 / (1.0 + np.exp(-z))
        g = X.T @ (p - y) + l2 * w
        H = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(X.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def fit_platt(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 100) -> dict:
    """Logistic regression ``P(y=1) = sigmoid(a x + b)`` by Newton's method (tiny ridge on a, b).

    Parameters
    ----------
    x : ndarray, float, shape (N,)
        Mean tile logits of validation frames.
    y : ndarray, 0/1, shape (N,)
        Their labels.

    Returns
    -------
    dict
        ``{"slope": a, "intercept": b}``.
    """
    w = fit_logistic(np.asarray(x, np.float64)[:, None], y, l2, iters)
    return {"slope": float(w[0]), "intercept": float(w[1])}


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic; ties count one half)."""
    from scipy.stats import rankdata

    score = np.asarray(score, np.float64)
    label = np.asarray(label).astype(bool)
    n1, n0 = label.sum(), (~label).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of labels ``y`` (0/1) under logits, overflow-safe."""
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def calibrated_log_loss(mean_z: np.ndarray, y: np.ndarray, calibration: dict) -> float:
    """Log-loss of frame labels ``y`` under the calibrated scores of their mean tile logits, mapped
    as the command maps them (:func:`maxitrack.scoring.field_logit`)."""
    from maxitrack.scoring import field_logit

    return log_loss(np.array([field_logit([v], calibration) for v in mean_z]), y)


def calibrate(mean_z: np.ndarray, y: np.ndarray, fitted_on: str) -> tuple:
    """Platt calibration of validation frames' mean tile logits.

    Returns
    -------
    tuple
        ``(calibration, auc, log_loss)``: the calibration dict (:func:`fit_platt`, with
        ``fitted_on``), the frames' AUC and their log-loss once calibrated.
    """
    calibration = fit_platt(mean_z, y)
    calibration["fitted_on"] = fitted_on
    return calibration, roc_auc(mean_z, y), calibrated_log_loss(mean_z, y, calibration)


def _init_weights(source: str, net, objects: dict) -> list:
    """The weights of the tile network in ``source`` (a network directory or a .keras file), which
    must have the architecture of ``net``; SystemExit with a one-line reason otherwise."""
    import keras

    path = Path(source)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise SystemExit(f"maxitrack-train: error: {source}: no such network (expected a directory with "
                         "model.keras, or a .keras file)")
    init = keras.models.load_model(path, custom_objects=objects)
    weights = init.get_weights()
    shapes = [w.shape for w in net.get_weights()]
    if [w.shape for w in weights] != shapes:
        raise SystemExit(f"maxitrack-train: error: {source}: its network does not have the architecture "
                         "being trained (other --input or --tile?)")
    return weights


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="maxitrack-train",
        description="Train the maxitrack tracking-error classifier on simulated frames and export it.",
    )
    ap.add_argument("--out", default="tensorflow_models/maxitrack", help="network directory to write")
    ap.add_argument("--work", default="runs/maxitrack", help="work directory (cached tiles, checkpoints)")
    ap.add_argument("--frames", type=int, default=2000, help="training frames")
    ap.add_argument("--val-frames", type=int, default=400, help="validation frames (calibration, model choice)")
    ap.add_argument("--frame-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    ap.add_argument("--tile", type=int, default=128, help="tile side (network input)")
    ap.add_argument("--tiles-per-frame", type=int, default=4, help="tiles selected per training frame")
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--input", default="tile+autocorr", choices=NETWORK_INPUTS,
                    help="network input: the tile, or the tile and its autocorrelation (default)")
    ap.add_argument("--widths", type=int, nargs=4, default=None, metavar="N",
                    help="channels of the tile branch's four stages (default: model.DEFAULT_WIDTHS)")
    ap.add_argument("--ac-widths", type=int, nargs=4, default=None, metavar="N",
                    help="channels of the autocorrelation branch's four stages (default: DEFAULT_AC_WIDTHS)")
    ap.add_argument("--loss", default="frame", choices=("frame", "tile"),
                    help="frame: cross-entropy of the mean tile logit of each frame (what the command "
                         "scores; default); tile: every tile with its frame's label")
    ap.add_argument("--batch", type=int, default=32, help="tiles per step (a multiple of --tiles-per-frame)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1, help="seed of the simulated data and of the training")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow CPU threads (0: all)")
    ap.add_argument("--init-from", default=None, metavar="NET",
                    help="start from this network's weights (a network directory with model.keras, or a "
                         ".keras file of the tile network) instead of a random initialisation")
    ap.add_argument("--inference-tiles", type=int, default=DEFAULT_SELECTION["n_tiles"],
                    help="tiles per HDU used by the command (stored in the metadata)")
    ap.add_argument("--calibration-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="size of the validation frames the calibration is fitted on (default: --frame-size)")
    ap.add_argument("--calibration-tiles", type=int, default=None,
                    help="tiles per calibration frame (default: --tiles-per-frame); the calibration fits the "
                         "mean of this many tile logits, so it should match --inference-tiles where the "
                         "calibration frames have that many cells")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes that simulate the frames and compute the network inputs (results do not "
                         "depend on it)")
    ap.add_argument("--train-only", action="store_true",
                    help="stop after the last epoch, before calibration and export (which need TensorFlow): "
                         "for training with another Keras backend, e.g. KERAS_BACKEND=jax on a GPU; rerun "
                         "the same command without it, in the same --work, to calibrate and export")
    ap.add_argument("--checkpoint-every", type=int, default=250,
                    help="steps between checkpoints inside an epoch (0: at the end of each epoch only)")
    ap.add_argument("--stop-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests: a resume
    return ap.parse_args(argv)


@contextlib.contextmanager
def signals_as_flag():
    """Within the block, SIGTERM and SIGINT append their number to the yielded list instead of
    stopping the process (in the main thread; an ignored signal stays ignored); handlers restored."""
    stop, restore = [], {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                restore[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
    try:
        yield stop
    finally:
        for sig, handler in restore.items():
            signal.signal(sig, handler)


def save_checkpoint(model, ckpt: Path, state: dict, state_path: Path) -> None:
    """Write the model (with its optimizer) and the loop state, each atomically by a rename: an
    interruption leaves the previous checkpoint, or at worst a newer model with the previous state
    (a resume then replays some steps)."""
    tmp = ckpt.with_name(ckpt.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, ckpt)
    tmp_state = state_path.with_suffix(".tmp")
    tmp_state.write_text(json.dumps(state, indent=1))
    os.replace(tmp_state, state_path)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logf = open(work / "train.log", "a")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    cmd = "maxitrack-train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    log(f"start: {cmd} (simulator source {simulator_hash()})")
    tile = args.tile
    train_sel = dict(DEFAULT_SELECTION, n_tiles=args.tiles_per_frame)
    shape = tuple(args.frame_size)

    if args.threads:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import keras

    from maxitrack.model import DEFAULT_AC_WIDTHS, DEFAULT_WIDTHS, build_model, custom_objects

    if args.threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(args.seed)

    k = args.tiles_per_frame
    per_frame = args.loss == "frame"
    crit = "val_frame_loss" if per_frame else "val_tile_loss"  # the validation loss that picks the best epoch
    state_path = work / "state.json"
    ckpt = work / "checkpoint.keras"
    best = work / "best.keras"
    config = {"input": args.input, "loss": args.loss, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
              "seed": args.seed, "frames": args.frames, "tiles_per_frame": k}
    if args.init_from:
        config["init_from"] = args.init_from
    widths = tuple(args.widths or DEFAULT_WIDTHS)
    ac_widths = tuple(args.ac_widths or DEFAULT_AC_WIDTHS)
    # recorded only when not the defaults, so that runs begun before these options still resume
    if widths != tuple(DEFAULT_WIDTHS):
        config["widths"] = list(widths)
    if ac_widths != tuple(DEFAULT_AC_WIDTHS):
        config["ac_widths"] = list(ac_widths)
    state = json.loads(state_path.read_text()) if state_path.exists() and ckpt.exists() else {"epoch": 0, "history": []}
    resuming = state["epoch"] > 0 or "in_epoch" in state
    if resuming and state.get("config") != config:
        log(f"error: {work} holds a training run with other settings ({state.get('config')}); use another --work")
        return 2
    state["config"] = config
    # A finished run (resumed to calibrate and export, e.g. on another machine than the one that
    # trained it) needs none of the training frames, only their prior, which the state records.
    finished = state["epoch"] >= args.epochs and "in_epoch" not in state
    if finished and "pi_train" in state:
        train = val = None
        pi_train = float(state["pi_train"])
        n_frames_train = args.frames
        log(f"training finished ({state['epoch']} epochs); training prior {pi_train:.3f} from the state")
    else:
        train = make_tiles(work, "train", args.frames, args.seed, shape, tile, train_sel, log=log,
                           workers=args.workers)
        val = make_tiles(work, "val", args.val_frames, args.seed, shape, tile, train_sel, log=log,
                         workers=args.workers)
        pi_train = float(np.mean([r["label"] for r in train["records"]]))
        state["pi_train"] = pi_train
        log(f"tiles: train {len(train['label'])} ({pi_train:.3f} of frames positive), val {len(val['label'])}")
        # each frame's tiles are consecutive (every 512x512 frame has more cells than tiles kept)
        n_frames_train = len(train["label"]) // k
        assert np.array_equal(train["frame"], np.repeat(np.arange(n_frames_train), k)), "tiles not grouped by frame"
    units = n_frames_train if per_frame else n_frames_train * k  # what an epoch shuffles
    per_step = args.batch // k if per_frame else args.batch
    steps_per_epoch = units // per_step
    total = steps_per_epoch * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, total, alpha=0.02)
    n_in = 1 if args.input == "tile" else 2

    def tile_model_of(m):
        """The per-tile network inside the training model (itself for the tile loss)."""
        for layer in m.layers:
            if isinstance(layer, keras.layers.TimeDistributed):
                return layer.layer
        return m

    if resuming:
        model = keras.models.load_model(ckpt, custom_objects=custom_objects())
        inside = state.get("in_epoch")
        within = f", step {inside['step']} of epoch {state['epoch'] + 1}" if inside else ""
        log(f"resumed after epoch {state['epoch']}{within}")
    else:
        net = build_model(tile, widths, inputs=args.input, ac_widths=ac_widths)
        if args.init_from:
            net.set_weights(_init_weights(args.init_from, net, custom_objects()))
            log(f"initialised from {args.init_from}")
        if per_frame:
            # frame model: the k tiles of a frame -> the mean of their logits (the command's aggregation)
            fin = keras.Input((k, tile, tile, n_in), name="frame_tiles")
            z = keras.layers.TimeDistributed(net)(fin)
            model = keras.Model(fin, keras.layers.GlobalAveragePooling1D()(z), name="maxitrack_frames")
        else:
            model = net
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
    log(f"network: {tile_model_of(model).count_params()} parameters, input {args.input}, {args.loss} loss, "
        f"{steps_per_epoch} steps per epoch")
    if val is not None:
        t0 = time.time()
        x_val = network_inputs(val["tiles"], args.input, args.workers)
        yv_frames = np.array([r["label"] for r in val["records"]])
        if not finished:
            x_train = network_inputs(train["tiles"], args.input, args.workers)
        log(f"network inputs computed ({time.time() - t0:.0f} s)")
    # SIGTERM/SIGINT only set a flag: the loop checkpoints at the next step and exits 128 + signal
    with signals_as_flag() as stop:
        done_steps = state["epoch"] * steps_per_epoch + state.get("in_epoch", {}).get("step", 0)
        for epoch in range(state["epoch"], args.epochs):
            rng = np.random.default_rng((args.seed, 100, epoch))
            order = rng.permutation(units)
            first, losses, seconds = 0, [], 0.0
            inside = state.pop("in_epoch", None)
            if inside is not None:  # resumed inside this epoch: same order, the random stream where it was
                rng.bit_generator.state = inside["rng"]
                first, losses, seconds = inside["step"], inside["losses"], inside["seconds"]
            t0 = time.time()
            for s in range(first, steps_per_epoch):
                idx = np.sort(order[s * per_step : (s + 1) * per_step])
                if per_frame:
                    tidx = (idx[:, None] * k + np.arange(k)[None, :]).ravel()
                else:
                    tidx = idx
                xb = augment_inputs(x_train[tidx], rng)
                if per_frame:
                    xb = xb.reshape((len(idx), k) + xb.shape[1:])
                    yb = np.array([train["records"][i]["label"] for i in idx], np.float32)[:, None]
                else:
                    yb = train["label"][tidx].astype(np.float32)[:, None]
                losses.append(float(model.train_on_batch(xb, yb)))
                done_steps += 1
                halt = stop or (args.stop_at_step is not None and done_steps >= args.stop_at_step)
                periodic = args.checkpoint_every and (s + 1) % args.checkpoint_every == 0
                if s + 1 < steps_per_epoch and (halt or periodic):
                    state["in_epoch"] = {"step": s + 1, "rng": rng.bit_generator.state, "losses": losses,
                                         "seconds": seconds + time.time() - t0}
                    save_checkpoint(model, ckpt, state, state_path)
                    del state["in_epoch"]
                    if halt:
                        log(f"stopped at step {s + 1} of epoch {epoch + 1}, checkpoint written; "
                            "rerun to resume")
                        return 128 + stop[0] if stop else 0
            zv = tile_model_of(model).predict(x_val, batch_size=128, verbose=0).ravel()
            frames, mean_z = frame_mean_logits(zv, val["frame"])
            yv = yv_frames[frames]
            rec = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "val_tile_loss": log_loss(zv, val["label"]),
                "val_frame_loss": log_loss(mean_z, yv),
                "val_frame_auc": roc_auc(mean_z, yv),
                "seconds": round(seconds + time.time() - t0, 1),
            }
            is_best = not state["history"] or rec[crit] < min(h.get(crit, np.inf) for h in state["history"])
            state["history"].append(rec)
            state["epoch"] = epoch + 1
            if is_best:
                tile_model_of(model).save(best)
            save_checkpoint(model, ckpt, state, state_path)
            log(f"epoch {rec}" + (" (best)" if is_best else ""))
            if stop or (args.stop_at_step is not None and done_steps >= args.stop_at_step):
                log(f"stopped after epoch {epoch + 1}, checkpoint written; rerun to resume")
                return 128 + stop[0] if stop else 0

    if args.train_only:
        log(f"trained ({state['epoch']} epochs, best {best}); rerun without --train-only to calibrate and export")
        return 0
    from maximask.network import NetworkMetadata, save_network

    model = keras.models.load_model(best, custom_objects=custom_objects())
    # The calibration maps the mean of the tile logits that the command averages, and the mean of
    # many tiles is less noisy than that of a few: --calibration-* fit it with the command's tile
    # count (validation frames of the same seed and split, at another size).
    cal_shape = tuple(args.calibration_size) if args.calibration_size else shape
    cal_k = args.calibration_tiles or k
    if (cal_shape, cal_k) != (shape, k) or val is None:
        val = make_tiles(work, "val", args.val_frames, args.seed, cal_shape, tile,
                         dict(DEFAULT_SELECTION, n_tiles=cal_k), log=log, workers=args.workers)
        x_val = network_inputs(val["tiles"], args.input, args.workers)
        yv_frames = np.array([r["label"] for r in val["records"]])
    zv = model.predict(x_val, batch_size=128, verbose=0).ravel()
    frames, mean_z = frame_mean_logits(zv, val["frame"])
    yv = yv_frames[frames]
    calibration, auc, loss = calibrate(
        mean_z, yv, f"{len(frames)} validation frames {cal_shape[0]}x{cal_shape[1]}, {cal_k} tiles each")
    log(f"calibration {calibration}; validation frame AUC {auc:.4f}, log-loss {loss:.4f}")
    best_epoch = min(state["history"], key=lambda h: h.get(crit, np.inf))["epoch"]
    meta = NetworkMetadata(
        name="maxitrack",
        classes=["TRACKING_ERROR"],
        training_priors=[pi_train],
        margin=0,
        tile_size=tile,
        size_multiple=8,
        normalisation=tile_normalisation(tile),
        output="logits",
        extra={
            "tiles": dict(DEFAULT_SELECTION, n_tiles=args.inference_tiles),
            "calibration": calibration,
            "tile_fingerprint": fingerprint(tile, dict(DEFAULT_SELECTION, n_tiles=args.inference_tiles),
                                            tile_normalisation(tile), args.input),
            "input": args.input,
            "loss": args.loss,
            "aggregation": "mean of tile logits over the field, then slope * mean + intercept",
            "training_command": cmd,
            "data": {
                "simulator": "maximask.sim.simulate_tracking_frame",
                "simulator_source_sha256": simulator_hash(),
                "seed": args.seed,
                "frame_shape": list(shape),
                "train_frames": args.frames,
                "val_frames": args.val_frames,
                "tiles_per_frame": args.tiles_per_frame,
            },
            "best_epoch": best_epoch,
            "fine_tuned_from": args.init_from,
            "history": state["history"],
        },
    )
    model_id = save_network(model, args.out, meta)
    log(f"exported to {args.out} (model id {model_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
