"""How visible each held-out tracking error is, and how maxitrack's score follows it.

The maxitrack targets (ROC AUC >= 0.99, FPR <= 2 % at TPR 95 %) ask the network to find nearly every
simulated error. Whether that is possible depends on how much of each error a frame shows, which
the path extent alone does not say:

* an **arc** (field rotation) smears a star by ``r * angle``, ``r`` its distance from the rotation
  centre; the simulator's extent is the smear at the farthest corner, and where the centre falls
  inside the frame much of the field is hardly smeared. The visibility of an arc is therefore
  given here as the median, over a grid of field positions, of the local smear length in PSF
  FWHMs, and the share of the field where the smear exceeds one FWHM;
* a **drift**, **shake** or **periodic** error smears every star alike; its visibility is the
  anisotropy it adds to the PSF's second moments (Gaussian approximation of the PSF core):
  ``chi = |T_xx - T_yy, 2 T_xy| / (T_xx + T_yy)`` of the path's covariance added to the PSF's,
  against the normal exposures' own PSF anisotropy (axis ratio down to 0.88, i.e. chi up to 0.127,
  plus coma towards the corners). A smear whose chi is within that range reads, to second
  moments, as a slightly elongated normal PSF;
* a **jump** doubles every star; its separation in FWHMs is its visibility.

The frames are those of :mod:`benchmarks.tracking_quality` (``frame_rng(seed, "bench", i)``);
their conditions and paths are drawn again exactly as the simulator draws them, without rendering
the images (seconds for a thousand frames). With ``--work`` (the cache of ``tracking_quality.py``)
the network's scores are read too, and each visibility bin gets the ROC AUC of its frames against
all negatives, and the share of them above the threshold of TPR 95 % over all positives.

Usage::

    python benchmarks/tracking_visibility.py --size 1024 2048 --frames 1000 \\
        --work runs/maxitrack/bench_1024x2048 [--net_dir DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_json  # noqa: E402

#: chi of a normal exposure's PSF at the centre of the field at most: axis ratio 0.88.
CHI_NORMAL_MAX = (1 - 0.88**2) / (1 + 0.88**2)
#: Field positions (per axis) at which an arc's local smear is measured.
ARC_GRID = 16


def draw_condition_and_path(shape, rng):
    """The PSF conditions, the error kind and the path (a ``maximask.sim.tracking._Smear`` or None)
    that ``simulate_tracking_frame(shape, rng)`` would draw, without rendering the frame."""
    import maximask.sim.tracking as tracking
    from maximask.sim.config import choose_classes
    from maximask.sim.scene import draw_conditions

    drawn = {}

    def conditions_only(shape, rng, cfg, smear=None, present=None, debug=None):
        # the first draws of maximask.sim.frame._simulate, in its order
        present = choose_classes(rng, cfg) if present is None else present
        cond = draw_conditions(shape, rng, cfg, present)
        if smear is not None:
            smear._ensure(cond, shape)
        drawn.update(cond=cond, smear=None if smear is None else smear.inner)
        return None, None, {}

    real = tracking._simulate
    tracking._simulate = conditions_only
    try:
        _, label, meta = tracking.simulate_tracking_frame(tuple(shape), rng)
    finally:
        tracking._simulate = real
    return drawn["cond"], meta["kind"], meta["tracking"], drawn["smear"]


def path_chi(dy, dx, fwhm, q=1.0, theta=0.0):
    """Second-moment anisotropy of a Gaussian PSF core (FWHM, axis ratio q, angle theta) smeared by
    the path (dy, dx) sampled uniformly in time."""
    s2 = (fwhm / 2.3548) ** 2
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    psf = rot @ np.diag([s2 / q, s2 * q]) @ rot.T
    t = psf + np.cov(np.vstack([dx, dy]), bias=True)
    return float(np.hypot(t[0, 0] - t[1, 1], 2 * t[0, 1]) / (t[0, 0] + t[1, 1]))


def arc_smear(shape, info):
    """Local smear lengths (px) of an arc over a grid of field positions."""
    h, w = shape
    cy, cx = info["center"]
    ys, xs = np.meshgrid(np.linspace(0, h, ARC_GRID), np.linspace(0, w, ARC_GRID), indexing="ij")
    return np.hypot(ys - cy, xs - cx).ravel() * abs(info["angle_rad"])


def visibility(shape, cond, kind, info, smear):
    """One frame's visibility figures (see the module docstring)."""
    fwhm = float(cond["fwhm_px"])
    q, theta = 1.0 - float(cond["psf_ellipticity"]), float(cond["psf_angle"])
    out = {"kind": kind, "fwhm_px": fwhm, "extent_fwhm": float(info.get("extent_px", 0.0)) / fwhm,
           "chi_psf": path_chi(np.zeros(2), np.zeros(2), fwhm, q, theta)}
    if kind == "arc":
        local = arc_smear(shape, info) / fwhm
        out["arc_median_fwhm"] = float(np.median(local))
        out["arc_share_above_1_fwhm"] = float(np.mean(local > 1.0))
    elif kind in ("drift", "shake", "periodic"):
        out["chi"] = path_chi(smear.dy, smear.dx, fwhm, q, theta)
        out["chi_round_psf"] = path_chi(smear.dy, smear.dx, fwhm)
    return out


def main(argv=None) -> int:
    from maxitrack.train import frame_rng

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=None, help="tracking_quality.py's cache of these frames (network scores)")
    ap.add_argument("--net_dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    shape = tuple(args.size)
    recs = []
    for i in range(args.frames):
        cond, kind, info, smear = draw_condition_and_path(shape, frame_rng(args.seed, "bench", i))
        recs.append(dict(visibility(shape, cond, kind, info, smear), index=i))
    z = None
    if args.work:
        from tracking_quality import cache_files, score_cached

        from maximask.resources import default_net_dir
        from maxitrack.cli import Scorer
        from maxitrack.scoring import field_logit

        scorer = Scorer(args.net_dir or default_net_dir("maxitrack"), prior=0.5, batch_size=32)
        cached = score_cached(cache_files(args.work, args.seed, shape, scorer.tile, 0, args.frames), scorer)
        n_tiles = int(scorer.selection.get("n_tiles", 12))
        for rec, c in zip(recs, cached):
            if c["index"] != rec["index"] or c["kind"] != rec["kind"]:
                raise SystemExit(f"frame {rec['index']}: the cache holds another frame ({c['kind']}, not {rec['kind']})")
        z = np.array([field_logit(c["tile_logits"][:n_tiles], scorer.calibration, c["extra"]) for c in cached])
    lines = [f"# Visibility of the tracking errors: {args.frames} frames {shape[0]}x{shape[1]}, seed {args.seed} split 3", ""]
    y = np.array([r["kind"] != "none" for r in recs])
    if z is not None:
        from tracking_quality import fpr_at_tpr

        from maxitrack.train import roc_auc

        thr95 = fpr_at_tpr(z, y.astype(int), 0.95)[1]
        neg = z[~y]

        def cells(m):
            if not m.any():
                return ["0", "—", "—"]
            auc = roc_auc(np.concatenate([z[m], neg]), np.concatenate([np.ones(m.sum()), np.zeros(neg.size)]))
            return [str(int(m.sum())), f"{auc:.3f}", f"{np.mean(z[m] >= thr95):.2f}"]

        head = ["frames", "AUC against all negatives", "share above the TPR-95 % threshold"]
    else:
        def cells(m):
            return [str(int(m.sum()))]

        head = ["frames"]
    rows = []
    arc = np.array([r["kind"] == "arc" for r in recs])
    med = np.array([r.get("arc_median_fwhm", np.nan) for r in recs])
    for lo, hi in ((0, 0.5), (0.5, 1), (1, 2), (2, 1e9)):
        rows.append([f"arc, median smear {lo}-{hi if hi < 1e9 else ''} FWHM"] + cells(arc & (med >= lo) & (med < hi)))
    chi = np.array([r.get("chi_round_psf", np.nan) for r in recs])
    for kind in ("drift", "shake", "periodic"):
        k = np.array([r["kind"] == kind for r in recs])
        for lo, hi, name in ((0, CHI_NORMAL_MAX, "within the normal PSFs' range"),
                             (CHI_NORMAL_MAX, 1.01, "beyond it")):
            rows.append([f"{kind}, chi {name}"] + cells(k & (chi >= lo) & (chi < hi)))
    ext = np.array([r["extent_fwhm"] for r in recs])
    jump = np.array([r["kind"] == "jump" for r in recs])
    for lo, hi in ((0, 3), (3, 5), (5, 1e9)):
        rows.append([f"jump, separation {lo}-{hi if hi < 1e9 else ''} FWHM"] + cells(jump & (ext >= lo) & (ext < hi)))
    lines += ["| frames with an error | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"chi: second-moment anisotropy of a round PSF core smeared by the path; a normal exposure's "
              f"PSF has chi up to {CHI_NORMAL_MAX:.3f} at the field centre (axis ratio 0.88), more towards the "
              "corners with coma."]
    print("\n".join(lines))
    if args.out:
        write_json(args.out, {"frames": args.frames, "size": list(shape), "seed": args.seed,
                              "command": "python benchmarks/tracking_visibility.py " + " ".join(sys.argv[1:] if argv is None else argv),
                              "table": lines, "records": recs,
                              "scores": None if z is None else z.tolist()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
