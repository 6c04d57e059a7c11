"""Quality of the maxitrack classifier on held-out simulated frames.

Usage (from the repository root)::

    nice -n 10 python benchmarks/tracking_quality.py [--frames 500] [--size 512 1024] [--net_dir DIR]

Frames: :func:`maximask.sim.simulate_tracking_frame` with ``numpy.random.default_rng((seed, 3, i))``:
split 3, never used by ``maxitrack-train`` (training uses split 1, validation/calibration split 2),
half of them with a tracking error. Each frame is scored by the code the command runs
(:class:`maxitrack.cli.Scorer`: tile selection, normalisation, LiteRT network, aggregation), at the
training prior (the benchmark is balanced like the training set), so that "accuracy at 0.5" is the
accuracy of the calibrated posterior.

Reported: ROC AUC, accuracy at 0.5, log-loss of the calibrated score (how trustworthy its
probabilities are), TPR at FPR 1 % and 5 %, FPR at TPR 95 %; TPR by error kind and by path extent;
the ROC AUC of each kind against all negatives by path extent in PSF FWHMs;
FPR on hard negatives (bad seeing, coma, trails, crowding, cosmic rays, saturation and bleed trails);
and the effect of the number of tiles per frame on AUC (the tiles are ranked once, the first k are
used). The prepared tiles are cached under ``--work`` (``--prepare-only`` builds the
cache without a network), so that the tables can be remade for another network in a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from maximask.metrics import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED
from maximask.sim import TRACKING_KINDS
from maxitrack.scoring import field_logit, sigmoid
from maxitrack.train import frame_rng, log_loss, roc_auc


def tpr_at_fpr(score, label, fpr):
    """TPR at the threshold whose FPR on the negatives is at most ``fpr``; and that threshold."""
    neg = np.sort(score[label == 0])
    k = int(np.floor(fpr * len(neg)))
    thr = neg[len(neg) - k - 1] if k < len(neg) else -np.inf  # scores above thr are positive
    return float(np.mean(score[label == 1] > thr)), float(thr)


def fpr_at_tpr(score, label, tpr):
    pos = np.sort(score[label == 1])
    thr = pos[int(np.floor((1 - tpr) * len(pos)))]  # a fraction tpr of the positives is >= thr
    return float(np.mean(score[label == 0] >= thr)), float(thr)


CHUNK = 25  # frames per cached file


def intervals_line(z, y) -> str:
    """95 % frame-bootstrap intervals of the headline figures (how far another draw of as many frames
    could move them)."""
    from maximask.metrics import bootstrap_interval, bootstrap_statistic

    parts = []
    for name, stat in (("ROC AUC", roc_auc), ("TPR at FPR 1%", lambda s, t: tpr_at_fpr(s, t, 0.01)[0]),
                       ("FPR at TPR 95%", lambda s, t: fpr_at_tpr(s, t, 0.95)[0])):
        lo, hi, _ = bootstrap_interval(bootstrap_statistic(stat, z[None], y, BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED)[0])
        parts.append(f"{name} {lo:.4f}-{hi:.4f}")
    return (f"95 % intervals ({BOOTSTRAP_REPLICATES} frame-bootstrap replicates, seed {BOOTSTRAP_SEED}): "
            + "; ".join(parts) + ".")


def _chunks(first: int, frames: int):
    """(start, stop) frame indices of the cache's chunks covering frames FIRST .. FIRST + N - 1."""
    last = first + frames
    return [(c0, min(last, c0 + CHUNK)) for c0 in range(first, last, CHUNK)]


def cache_files(work, seed: int, size, tile: int, first: int, frames: int) -> list:
    """Paths of the tile-cache chunks of :func:`prepare` for frames FIRST .. FIRST + N - 1."""
    tag = f"s{seed}_{size[0]}x{size[1]}_t{tile}"
    return [Path(work) / f"tiles_{tag}_{c0:05d}_{c1:05d}.npz" for c0, c1 in _chunks(first, frames)]


def prepare(args, tile: int, selection: dict, normalisation: dict, work: Path) -> list:
    """Simulate the frames and cache their ranked tiles (every cell, best first) and their compact
    peaks (for the double-image statistic); returns cache files.

    This stage does not need the network, so it can run while the network trains.
    """
    from maximask.sim import simulate_tracking_frame
    from maxitrack.field_rotation import DEFAULT_FIELD_ROTATION
    from maxitrack.tiles import prepare_hdu

    sel = dict(selection, n_tiles=10**6)  # every cell, best first
    files = cache_files(work, args.seed, args.size, tile, args.first, args.frames)
    t0 = time.time()
    for path, (c0, c1) in zip(files, _chunks(args.first, args.frames)):
        if path.exists():
            continue
        tiles, recs, peaks, stars = [], [], [], []
        for i in range(c0, c1):
            image, label, meta = simulate_tracking_frame(tuple(args.size), frame_rng(args.seed, "bench", i))
            ranked, origins, peak_map, st = prepare_hdu(image, tile, sel, normalisation, with_peaks=True,
                                                        stars=DEFAULT_FIELD_ROTATION)
            tiles.append(ranked[..., 0].astype(np.float16))
            peaks.append(np.argwhere(peak_map).astype(np.int16))  # for the double-image statistic
            stars.append(star_rows(st))  # for the field-rotation statistic
            recs.append({
                "index": i,
                "label": int(label),
                "kind": meta["kind"],
                "extent_px": float(meta["tracking"].get("extent_px", 0.0)),
                "fwhm_px": float(meta["fwhm_px"]),
                "seeing_arcsec": float(meta["seeing_arcsec"]),
                "psf_coma": float(meta["psf_coma"]),
                "n_stars": int(meta["n_stars"]),
                "classes": sorted(meta.get("classes_drawn") or []),
                "n_tiles": len(tiles[-1]),
                "origins": [list(o) for o in origins],  # (y0, x0) of each ranked tile
                "star_sigma": st.weight_sigma,
            })
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, tiles=np.concatenate(tiles), records=np.array(json.dumps(recs)),
                 peaks=np.concatenate(peaks), peak_counts=np.array([len(q) for q in peaks]),
                 peak_grid=np.array(peak_map.shape), **star_arrays(stars, DEFAULT_FIELD_ROTATION))
        tmp.replace(path)
        print(f"{c1 - args.first}/{args.frames} frames simulated ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return files


def double_image_statistics(peaks: list, grid, params: dict | None = None) -> np.ndarray:
    """The double-image statistic of each cached frame (one HDU each) from its peaks' ``(y, x)``
    on the binned grid ``grid``, as the command computes it (:class:`maxitrack.double_images.FieldPairs`)."""
    from maxitrack.double_images import FieldPairs

    out = np.empty(len(peaks))
    for i, q in enumerate(peaks):
        peak_map = np.zeros(grid, bool)
        peak_map[q[:, 0], q[:, 1]] = True
        pairs = FieldPairs(params)
        pairs.add(peak_map)
        out[i] = pairs.significance()
    return out


def split_peaks(peaks: np.ndarray, counts) -> list:
    """The cached peaks of all frames of a chunk, concatenated, cut back into one int array
    ``(n, 2)`` per frame (``counts``: each frame's number of peaks)."""
    off = np.concatenate([[0], np.cumsum(counts)])
    return [peaks[off[n] : off[n + 1]].astype(np.int64) for n in range(len(off) - 1)]


def double_image_extra(peaks: list, grid, scorer) -> np.ndarray:
    """The double-image term of each frame's field logit for the network of ``scorer`` (a
    :class:`maxitrack.cli.Scorer`), from its peaks on the binned grid ``grid``; zeros for a network
    without the term."""
    if scorer.double_images is None:
        return np.zeros(len(peaks))
    d = double_image_statistics(peaks, grid, scorer.double_images.params)
    return np.array([scorer.double_images(v) for v in d])


def double_image_terms(chunk, scorer, path="") -> np.ndarray:
    """The double-image term of each frame of a cache chunk (``np.load`` of it) for the network of
    ``scorer``, from the chunk's peaks; zeros for a network without the term."""
    recs = json.loads(str(chunk["records"]))
    if scorer.double_images is None:
        return np.zeros(len(recs))
    if "peaks" not in chunk:
        raise SystemExit(f"{path}: cached without the frames' peaks, which this network needs; "
                         "move the cache away and prepare it again")
    peaks = split_peaks(chunk["peaks"], chunk["peak_counts"])
    return double_image_extra(peaks, tuple(int(v) for v in chunk["peak_grid"]), scorer)


#: The parameters of :func:`maxitrack.field_rotation.star_moments` (what a cache's stars were
#: measured with); the others only change the fit, which runs on the cached stars.
MEASUREMENT_KEYS = ("isolation", "half", "max_stars", "saturation", "iterations", "local_background",
                    "max_sharpness", "width_check")
#: What a cache made before a measurement key existed measured without it.
MEASUREMENT_BEFORE = {"local_background": False, "max_sharpness": None, "width_check": False}


def star_rows(stars) -> np.ndarray:
    """One frame's :class:`maxitrack.field_rotation.StarShapes` as float32 rows (x, y, qxx, qyy,
    qxy, snr), for a cache."""
    return np.column_stack([stars.x, stars.y, stars.qxx, stars.qyy, stars.qxy, stars.snr]).astype(np.float32)


def star_arrays(rows: list, params: dict, suffix: str = "") -> dict:
    """The arrays a cache chunk keeps of its frames' stars (:func:`star_rows` of each); a chunk
    may keep the same frames' stars measured in other ways too, under keys ending in ``suffix``
    (their weights' widths in the records' ``"star_sigma" + suffix``)."""
    return {"stars" + suffix: np.concatenate(rows), "star_counts" + suffix: np.array([len(r) for r in rows]),
            "star_params" + suffix: np.array(json.dumps(params, sort_keys=True))}


def chunk_stars(chunk, frame_shape, path="", suffix: str = "") -> tuple:
    """The stars of each frame of a cache chunk (``np.load`` of it): ``(list of StarShapes, the
    measurement parameters)``; ``suffix`` picks another measurement (:func:`star_arrays`)."""
    from maxitrack.field_rotation import StarShapes

    if "stars" + suffix not in chunk:
        raise SystemExit(f"{path}: cached without the frames' stars, which this network needs; "
                         "move the cache away and prepare it again")
    recs = json.loads(str(chunk["records"]))
    off = np.concatenate([[0], np.cumsum(chunk["star_counts" + suffix])])
    out = []
    for n, r in enumerate(recs):
        a = chunk["stars" + suffix][off[n] : off[n + 1]].astype(np.float64)
        out.append(StarShapes(*(a[:, k] for k in range(6)), float(r["star_sigma" + suffix]), tuple(frame_shape)))
    return out, json.loads(str(chunk["star_params" + suffix]))


def measured_alike(params: dict, measured: dict) -> bool:
    """Whether stars measured with ``measured`` are what ``params`` would measure."""
    measured = dict(MEASUREMENT_BEFORE, **measured)
    return all(params[k] == measured[k] for k in MEASUREMENT_KEYS)


def _each_frame(stars: list, accumulator, value: str) -> np.ndarray:
    """A field statistic of each cached frame (one HDU each): ``accumulator`` given the frame's
    stars alone, then its method ``value``."""
    out = np.empty(len(stars))
    for i, st in enumerate(stars):
        acc = accumulator()
        acc.add(st)
        out[i] = getattr(acc, value)()
    return out


def rotation_statistics(stars: list, params: dict) -> np.ndarray:
    """The field-rotation statistic of each cached frame (one HDU each), as the command computes it
    (:class:`maxitrack.field_rotation.FieldRotation`)."""
    from maxitrack.field_rotation import FieldRotation

    return _each_frame(stars, lambda: FieldRotation(params), "significance")


def check_measured(params: dict, measured: dict) -> None:
    """Exit unless a cache's stars were measured (``measured``) as ``params`` measure them."""
    if not measured_alike(params, measured):
        raise SystemExit("the cache's stars were not measured as these parameters measure them; prepare it again")


def elongation_statistics(stars: list, params: dict, sigmas: float = 0.0) -> np.ndarray:
    """The star-elongation statistic of each cached frame (one HDU each), in percent, as the
    command computes it (:class:`maxitrack.star_elongation.FieldElongation`)."""
    from maxitrack.star_elongation import FieldElongation

    return _each_frame(stars, lambda: FieldElongation(params, sigmas), "percent")


def rotation_extra(stars: list, measured: dict, scorer) -> np.ndarray:
    """The field-rotation and star-elongation terms of each frame's field logit for the network
    of ``scorer`` (a :class:`maxitrack.cli.Scorer`), from stars measured with ``measured``;
    zeros for a network without them."""
    from maxitrack.field_rotation import DEFAULT_FIELD_ROTATION

    if scorer.field_rotation is None:
        return np.zeros(len(stars))
    params = dict(DEFAULT_FIELD_ROTATION, **scorer.field_rotation.params)  # as the command reads them
    check_measured(params, measured)
    # the command's own accumulators, so that the terms' parameters are read in one place
    extra = np.array([scorer.field_rotation(v) for v in _each_frame(stars, scorer.field_rotation_statistic, "significance")])
    if scorer.star_elongation is not None:
        extra += np.array([scorer.star_elongation(v)
                           for v in _each_frame(stars, scorer.star_elongation_statistic, "percent")])
    return extra


def score_cached(files, scorer) -> list:
    """Per-frame records with the network's logits of the ranked tiles, and ``extra``: the
    double-image and field-rotation terms of the field logit (:func:`double_image_terms`,
    :func:`rotation_extra`)."""
    out = []
    for path in files:
        d = np.load(path)
        tiles = d["tiles"].astype(np.float32)[..., None]
        z = np.concatenate([scorer.logits(tiles[j : j + 64]) for j in range(0, len(tiles), 64)])[:, 0]
        extra = double_image_terms(d, scorer, path)
        if scorer.field_rotation is not None:
            frame = tuple(2 * int(v) for v in d["peak_grid"])
            extra = extra + rotation_extra(*chunk_stars(d, frame, path), scorer)
        k = 0
        for rec, e in zip(json.loads(str(d["records"])), extra):
            rec["tile_logits"] = z[k : k + rec["n_tiles"]].tolist()
            rec["extra"] = float(e)
            k += rec["n_tiles"]
            out.append(rec)
    return out


#: Bins of the path extent in units of the PSF FWHM (how visible an error is: below ~1 FWHM a smear
#: hides in the PSF; the simulator draws extents from ~0.7 FWHM up).
STRENGTH_BINS = ((0, 1), (1, 1.5), (1.5, 2), (2, 3), (3, 5), (5, None))
#: The error kinds (the first of the simulator's kinds, "none", is a normal exposure).
KINDS = TRACKING_KINDS[1:]


def strength_table(recs: list, z: np.ndarray, y: np.ndarray) -> list:
    """Markdown lines: ROC AUC of each error kind's frames against *all* negatives, by path extent in
    PSF FWHMs (frames in brackets). It separates errors that are hard to see (a smear about one FWHM
    long) from errors the network misses although they are plain (a jump of five FWHMs)."""
    ratio = np.array([r["extent_px"] / r["fwhm_px"] for r in recs])
    kind = np.array([r["kind"] for r in recs])
    neg = y == 0

    def cell(pos):
        if not pos.any() or not neg.any():
            return "—"
        m = pos | neg
        return f"{roc_auc(z[m], y[m]):.3f} ({int(pos.sum())})"

    rows = []
    for lo, hi in STRENGTH_BINS:
        in_bin = (y == 1) & (ratio >= lo) & (ratio < (np.inf if hi is None else hi))
        name = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        rows.append([name] + [cell(in_bin & (kind == k)) for k in KINDS] + [cell(in_bin)])
    rows.append(["all"] + [cell((y == 1) & (kind == k)) for k in KINDS] + [cell(y == 1)])
    return ["ROC AUC of the frames with an error against all negatives, by path extent in PSF FWHMs "
            "(frames in brackets):", "", table(rows, ["extent / FWHM", *KINDS, "all kinds"]), ""]


def table(rows, header):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--first", type=int, default=0,
                    help="index of the first frame (a multiple of 25: frames FIRST .. FIRST + FRAMES - 1)")
    ap.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--net_dir", default=None)
    ap.add_argument("--work", default="runs/maxitrack/bench")
    ap.add_argument("--prepare-only", action="store_true",
                    help="only simulate the frames and cache their tiles (no network needed)")
    args = ap.parse_args(argv)
    if args.first % CHUNK:
        ap.error(f"--first must be a multiple of {CHUNK} (the cache's chunks)")
    from maximask.resources import default_net_dir
    from maxitrack.cli import Scorer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    net_dir = args.net_dir or default_net_dir("maxitrack")
    scorer = Scorer(net_dir, prior=0.5, batch_size=32)
    pi = scorer.training_prior
    n_tiles = int(scorer.selection.get("n_tiles", 12))
    files = prepare(args, scorer.tile, scorer.selection, scorer.normalisation, work)
    if args.prepare_only:
        return 0
    recs = score_cached(files, scorer)

    def scores(k):
        return np.array([field_logit(r["tile_logits"][:k], scorer.calibration, r["extra"]) for r in recs])

    y = np.array([r["label"] for r in recs])
    z = scores(n_tiles)  # calibrated logit at the training prior
    p = sigmoid(z)
    auc = roc_auc(z, y)
    acc = float(np.mean((p >= 0.5) == (y == 1)))
    t1, thr1 = tpr_at_fpr(z, y, 0.01)
    t5, thr5 = tpr_at_fpr(z, y, 0.05)
    f95, thr95 = fpr_at_tpr(z, y, 0.95)
    lines = [
        f"# maxitrack quality: {len(recs)} held-out frames {args.size[0]}x{args.size[1]}"
        f"{f' (frames {args.first}-{args.first + args.frames - 1})' if args.first else ''} "
        f"({int(y.sum())} with a tracking error), seed {args.seed} split 3, network {scorer.net.model_id}, "
        f"{n_tiles} tiles per frame, scores at the training prior {pi:.3f}",
        "",
        table(
            [[f"{auc:.4f}", f"{acc:.4f}", f"{log_loss(z, y):.4f}", f"{t1:.4f}", f"{t5:.4f}", f"{f95:.4f}"]],
            ["ROC AUC", "accuracy at 0.5", "log-loss", "TPR at FPR 1%", "TPR at FPR 5%", "FPR at TPR 95%"],
        ),
        "",
        intervals_line(z, y),
        "",
        "TPR by error kind (at p >= 0.5, and at the FPR-1% threshold):",
        "",
    ]
    rows = []
    for kind in KINDS:
        m = np.array([r["kind"] == kind for r in recs])
        if m.any():
            rows.append([kind, int(m.sum()), f"{np.mean(p[m] >= 0.5):.3f}", f"{np.mean(z[m] > thr1):.3f}"])
    lines += [table(rows, ["kind", "frames", "TPR at 0.5", "TPR at FPR 1%"]), ""]
    ext = np.array([r["extent_px"] for r in recs])
    for kinds, name in ((("drift",), "drift length"), (KINDS, "path extent, all kinds")):
        lines += [f"TPR by {name} (px):", ""]
        rows = []
        for lo, hi in ((0, 5), (5, 10), (10, 20), (20, 1e9)):
            m = np.array([r["kind"] in kinds for r in recs]) & (ext >= lo) & (ext < hi)
            if m.any():
                rng_name = f"{lo}-{hi}" if hi < 1e9 else f">= {lo}"
                rows.append([rng_name, int(m.sum()), f"{np.mean(p[m] >= 0.5):.3f}", f"{np.mean(z[m] > thr1):.3f}"])
        lines += [table(rows, ["extent", "frames", "TPR at 0.5", "TPR at FPR 1%"]), ""]
    lines += strength_table(recs, z, y)
    m5 = np.array([r["kind"] == "drift" for r in recs]) & (ext >= 5)
    if m5.any():
        lines += [f"drifts >= 5 px detected: {np.mean(p[m5] >= 0.5):.3f} at p >= 0.5, "
                  f"{np.mean(z[m5] >= thr95):.3f} at the TPR-95% threshold ({int(m5.sum())} frames)", ""]
    neg = y == 0
    hard = {
        "all negatives": np.ones(len(recs), bool),
        "bad seeing (> 2 arcsec)": np.array([r["seeing_arcsec"] > 2.0 for r in recs]),
        "large PSF (FWHM > 6 px)": np.array([r["fwhm_px"] > 6.0 for r in recs]),
        "coma (psf_coma > 0.15)": np.array([r["psf_coma"] > 0.15 for r in recs]),
        "trails (TRL)": np.array(["TRL" in r["classes"] for r in recs]),
        "crowded (> 5000 stars)": np.array([r["n_stars"] > 5000 for r in recs]),
        "cosmic rays (CR)": np.array(["CR" in r["classes"] for r in recs]),
        "saturation / bleed trails (SAT)": np.array(["SAT" in r["classes"] for r in recs]),
        "diffraction spikes (SP)": np.array(["SP" in r["classes"] for r in recs]),
    }
    rows = []
    for name, m in hard.items():
        m = m & neg
        if m.any():
            rows.append([name, int(m.sum()), f"{np.mean(p[m] >= 0.5):.3f}", f"{np.mean(z[m] > thr1):.3f}",
                         f"{np.mean(z[m] >= thr95):.3f}"])
    lines += ["False-positive rate on negatives (normal exposures) by condition:", "",
              table(rows, ["negatives", "frames", "FPR at 0.5", "FPR at FPR-1% thr.", "FPR at TPR-95% thr."]), ""]
    n_cells = min(len(r["tile_logits"]) for r in recs)
    rows = []
    for k in sorted({1, 2, 4, 8, 12, n_tiles, 16, 32, 64, n_cells}):
        if k <= n_cells:
            zk = scores(k)
            rows.append([k if k < n_cells else f"{k} (all)", f"{roc_auc(zk, y):.4f}", f"{tpr_at_fpr(zk, y, 0.01)[0]:.4f}",
                         f"{np.mean((sigmoid(zk) >= 0.5) == (y == 1)):.4f}"])
    lines += ["Tiles per frame (best-ranked first) and quality (calibration fitted for the default count):", "",
              table(rows, ["tiles", "ROC AUC", "TPR at FPR 1%", "accuracy at 0.5"]), ""]
    text = "\n".join(lines)
    print(text)
    (work / "quality.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
