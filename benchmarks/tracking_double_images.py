"""maxitrack with and without the double-image term, on the same simulated frames (paired).

A network with a double-image term (:mod:`maxitrack.double_images`, metadata ``double_images``)
keeps its tile network and adds a term from the field's compact peaks, so the frames are cached
once: each frame's 12 tile logits from the tile network (the command's tiles), its compact
peaks and its stars' shapes (:func:`maxitrack.field_rotation.star_moments` with the default
measurement parameters, for networks with a field-rotation term). ``prepare`` simulates frames
into that cache; ``compare`` scores every network given on
them as the command does (calibrated mean tile logit, plus the double-image term where the
network has one), with paired frame-bootstrap intervals of each network's AUC minus the first's,
and the AUC of each error kind and of jumps of 5 PSF FWHMs or more against all negatives. Every
network must share the cache's tile network (same ``model.tflite``).

Usage::

    python benchmarks/tracking_double_images.py prepare --split bench --first 5000 --frames 800 \\
        --work runs/jump/check --workers 2
    python benchmarks/tracking_double_images.py compare --work runs/jump/check --split bench \\
        --net tensorflow_models/maxitrack --net runs/jump/net [--out FILE.json]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_json  # noqa: E402
from tracking_quality import (  # noqa: E402
    KINDS,
    chunk_stars,
    double_image_extra,
    measured_alike,
    rotation_extra,
    split_peaks,
    star_arrays,
    star_rows,
)

CHUNK = 50


def tile_network_hash(net_dir) -> str:
    """SHA-256 (16 hex) of a network's ``model.tflite``: the tile network the cached logits are of."""
    return hashlib.sha256((Path(net_dir) / "model.tflite").read_bytes()).hexdigest()[:16]


def _prepare_chunk(path: str, split: str, c0: int, c1: int, size, net_dir: str, seed: int,
                   also: tuple = ()) -> str:
    from maximask.sim import simulate_tracking_frame
    from maxitrack.cli import Scorer
    from maxitrack.field_rotation import DEFAULT_FIELD_ROTATION
    from maxitrack.tiles import prepare_hdu
    from maxitrack.train import frame_rng

    sc = Scorer(net_dir, 0.5, 16)
    recs, peaks, stars = [], [], []
    others = [dict(DEFAULT_FIELD_ROTATION, **p) for p in also]
    other_stars = [[] for _ in others]
    for i in range(c0, c1):
        image, label, meta = simulate_tracking_frame(tuple(size), frame_rng(seed, split, i))
        # the tiles, peaks and stars exactly as the command finds them
        prepared = prepare_hdu(image, sc.tile, sc.selection, sc.normalisation, with_peaks=True,
                               stars=DEFAULT_FIELD_ROTATION)
        z = sc.logits(prepared.tiles)[:, 0]
        pk = np.argwhere(prepared.peaks).astype(np.int16)
        peaks.append(pk)
        st = prepared.stars
        stars.append(star_rows(st))
        rec = {"index": i, "label": int(label), "kind": meta["kind"],
               "extent_px": float(meta["tracking"].get("extent_px", 0.0)),
               "fwhm_px": float(meta["fwhm_px"]), "psf_coma": float(meta["psf_coma"]),
               "n_stars": int(meta["n_stars"]), "classes": sorted(meta.get("classes_drawn") or []),
               "tile_logits": z.tolist(), "n_peaks": int(len(pk)), "star_sigma": st.weight_sigma}
        for k, p in enumerate(others):  # the same frame's stars measured in another way
            st_k = prepare_hdu(image, sc.tile, sc.selection, sc.normalisation, stars=p).stars
            other_stars[k].append(star_rows(st_k))
            rec[f"star_sigma_{k + 1}"] = st_k.weight_sigma
        if meta["kind"] == "arc":
            from tracking_visibility import arc_smear

            # how much of the arc the frame shows (tracking_visibility.py): its median local smear
            rec["arc_median_fwhm"] = float(np.median(arc_smear(size, meta["tracking"])) / meta["fwhm_px"])
        recs.append(rec)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, peaks=np.concatenate(peaks), counts=np.array([len(p) for p in peaks]),
             **star_arrays(stars, DEFAULT_FIELD_ROTATION),
             **{k: v for n, p in enumerate(others) for k, v in star_arrays(other_stars[n], p, f"_{n + 1}").items()},
             records=np.array(json.dumps(recs)), shape=np.array([size[0] // 2, size[1] // 2]),
             tile_network=np.array(tile_network_hash(net_dir)))
    tmp.replace(path)
    return path


def prepare(args) -> None:
    """Simulate frames FIRST .. FIRST + N - 1 of a split and cache their tile logits and peaks."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    todo = []
    for c0 in range(args.first, args.first + args.frames, CHUNK):
        path = work / f"{args.split}_{c0:05d}.npz"
        if not path.exists():
            todo.append((str(path), args.split, c0, min(args.first + args.frames, c0 + CHUNK)))
    rest = (tuple(args.size), args.tile_net, args.seed, tuple(args.also_measure))
    t0 = time.time()
    if args.workers > 1 and len(todo) > 1:
        import concurrent.futures
        import multiprocessing

        with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_prepare_chunk, *t, *rest) for t in todo]
            for n, f in enumerate(concurrent.futures.as_completed(futures), 1):
                f.result()
                print(f"{n}/{len(todo)} chunks ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    else:
        for t in todo:
            _prepare_chunk(*t, *rest)
            print(f"{t[0]} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)


def load(work, split: str) -> tuple:
    """The cached frames of a split: ``(records, peaks per frame, binned shape, tile network hash)``;
    each record carries the frame's ``tile_logits``."""
    paths = sorted(glob.glob(str(Path(work) / f"{split}_*.npz")))
    paths = [p for p in paths if not p.endswith(".tmp.npz")]
    if not paths:
        raise SystemExit(f"{work}: no cached {split} frames (run 'prepare' first)")
    recs, peaks, shapes, nets = [], [], set(), set()
    for p in paths:
        d = np.load(p)
        recs += json.loads(str(d["records"]))
        peaks += split_peaks(d["peaks"], d["counts"])
        shapes.add(tuple(int(v) for v in d["shape"]))
        nets.add(str(d["tile_network"]))
    if len(shapes) != 1 or len(nets) != 1:
        raise SystemExit(f"{work}: cached chunks of different frame sizes or tile networks")
    return recs, peaks, shapes.pop(), nets.pop()


def load_stars(work, split: str, want: dict | None = None) -> tuple:
    """The cached stars of a split's frames, in :func:`load`'s order: ``(list of
    maxitrack.field_rotation.StarShapes, the measurement parameters)``; with ``want`` (complete
    field-rotation parameters), the stars measured as those parameters measure them, where the
    cache kept several measurements (``prepare --also-measure``)."""
    paths = sorted(p for p in glob.glob(str(Path(work) / f"{split}_*.npz")) if not p.endswith(".tmp.npz"))
    out, params = [], set()
    suffix = ""
    if want is not None and paths:
        first = np.load(paths[0])
        kept = [k[len("star_params"):] for k in first.files if k.startswith("star_params")]
        alike = [x for x in kept if measured_alike(want, json.loads(str(first["star_params" + x])))]
        suffix = alike[0] if alike else ""
    for p in paths:
        d = np.load(p)
        stars, measured = chunk_stars(d, tuple(2 * int(v) for v in d["shape"]), p, suffix)
        out += stars
        params.add(json.dumps(measured, sort_keys=True))
    if len(params) != 1:
        raise SystemExit(f"{work}: cached chunks measured with different parameters")
    return out, json.loads(params.pop())


def field_logits(net_dir, recs: list, peaks: list, shape, stars=None, measured=None) -> np.ndarray:
    """Each cached frame's calibrated field logit under the network in ``net_dir``, as the command
    computes it (:meth:`maxitrack.cli.Scorer.score` at the training prior); ``stars`` and
    ``measured`` (:func:`load_stars`) for a network with a field-rotation term."""
    from maxitrack.cli import Scorer
    from maxitrack.scoring import field_logit

    sc = Scorer(net_dir, 0.5, 64)
    extra = double_image_extra(peaks, shape, sc)
    if sc.field_rotation is not None:
        if stars is None:
            raise SystemExit(f"{net_dir}: has a field-rotation term; give the cache's stars")
        extra = extra + rotation_extra(stars, measured, sc)
    return np.array([field_logit(r["tile_logits"], sc.calibration, e) for r, e in zip(recs, extra)])


def kind_aucs(z: np.ndarray, recs: list) -> dict:
    """AUC of each error kind's frames, and of jumps of 5 FWHM or more, against all negatives."""
    from maxitrack.train import roc_auc

    y = np.array([r["label"] for r in recs])
    kind = np.array([r["kind"] for r in recs])
    strength = np.array([r["extent_px"] / r["fwhm_px"] for r in recs])
    out = {}
    for k in KINDS:
        m = (kind == k) | (y == 0)
        out[k] = roc_auc(z[m], y[m])
    m = ((kind == "jump") & (strength >= 5)) | (y == 0)
    out["jump >= 5 FWHM"] = roc_auc(z[m], y[m])
    out["jump >= 5 FWHM frames"] = int(((kind == "jump") & (strength >= 5)).sum())
    if any("arc_median_fwhm" in r for r in recs):
        small = np.array([r.get("arc_median_fwhm", np.inf) < 1.0 for r in recs])
        if small.any():
            m = small | (y == 0)
            out["arc < 1 FWHM"] = roc_auc(z[m], y[m])
        out["arc < 1 FWHM frames"] = int(small.sum())
    return out


def compare(args) -> None:
    from maximask.metrics import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED
    from maxitrack.train import log_loss, roc_auc
    from tracking_paired import row_line
    from tracking_quality import fpr_at_tpr
    from tracking_validation import add_intervals

    from maximask.network import Network
    from maxitrack.cli import Scorer
    from maxitrack.field_rotation import DEFAULT_FIELD_ROTATION

    recs, peaks, shape, cached = load(args.work, args.split)
    for n in args.net:
        if tile_network_hash(n) != cached:
            raise SystemExit(f"{n}: its tile network is not the one the cache was made with ({cached})")
    y = np.array([r["label"] for r in recs])
    z = []
    for n in args.net:
        stars, measured = None, None
        rotation = Scorer(n, 0.5, 64).field_rotation
        if rotation is not None:  # each network's stars measured as it measures them
            stars, measured = load_stars(args.work, args.split, dict(DEFAULT_FIELD_ROTATION, **rotation.params))
        z.append(field_logits(n, recs, peaks, shape, stars, measured))
    z = np.array(z)

    rows = [{"net": n, "model_id": Network(n).model_id, "auc": roc_auc(z[k], y), "log_loss": log_loss(z[k], y),
             "fpr_at_tpr_95": fpr_at_tpr(z[k], y, 0.95)[0], "kinds": kind_aucs(z[k], recs),
             # normal exposures the command would call tracking errors at the training prior
             "negatives_above_half": int((z[k][y == 0] > 0).sum())}
            for k, n in enumerate(args.net)]
    add_intervals(rows, z, y)
    for row in rows:
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in row["kinds"].items() if not k.endswith("frames"))
        print(f"{row_line(row)}\n    {kinds}; normal frames above 0.5: {row['negatives_above_half']}")
    idx = [r["index"] for r in recs]
    print(f"{len(y)} frames ({int(y.sum())} with an error), split {args.split}, frames {min(idx)}-{max(idx)}, "
          f"binned grid {shape[0]}x{shape[1]}")
    if args.out:
        write_json(args.out, {
            "frames": len(y), "positives": int(y.sum()), "split": args.split, "first": min(idx), "last": max(idx),
            "command": "python benchmarks/tracking_double_images.py " + " ".join(sys.argv[1:]),
            "interval_method": {"replicates": BOOTSTRAP_REPLICATES, "seed": BOOTSTRAP_SEED, "unit": "frame"},
            "rows": rows})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare", help="simulate frames and cache their tile logits and peaks")
    p.add_argument("--split", default="bench", choices=("train", "val", "bench"))
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tile-net", default="tensorflow_models/maxitrack", help="network whose tile logits are cached")
    p.add_argument("--work", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--also-measure", type=json.loads, action="append", default=[], metavar="JSON",
                   help="also cache the stars measured with these field-rotation parameters changed "
                        "(repeat), for a network that measures them so, e.g. '{\"max_sharpness\": null}'")
    c = sub.add_parser("compare", help="score networks on cached frames, paired")
    c.add_argument("--work", required=True)
    c.add_argument("--split", default="bench")
    c.add_argument("--net", action="append", required=True, help="network directory (repeat; the first is the baseline)")
    c.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.what == "prepare":
        if args.first % CHUNK or args.frames % CHUNK:
            ap.error(f"--first and --frames must be multiples of {CHUNK}")
        prepare(args)
    else:
        compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
