"""Per-class detection metrics from score histograms (ROC AUC, TPR at fixed FPR, AP, best F1).

Frames of millions of pixels and 14 classes make exact sort-based metrics slow and memory hungry;
instead the scores (logits) of positive and negative pixels are accumulated in fine histograms
(:class:`ScoreHistogram`), frame by frame, and every metric is computed from the cumulative counts.
With 0.005-wide logit bins the binning error on AUC is far below the differences that matter here;
ties inside a bin are counted half, as the trapezoidal ROC does.
"""

from __future__ import annotations

import numpy as np

#: Logit range and bin width of the histograms. Logits outside are clipped into the end bins.
LOGIT_RANGE = (-40.0, 40.0)
BIN_WIDTH = 0.005


class ScoreHistogram:
    """Histograms of the logits of positive and negative pixels, per class.

    Parameters
    ----------
    n_classes : int
    """

    def __init__(self, n_classes: int):
        self.n_bins = int(round((LOGIT_RANGE[1] - LOGIT_RANGE[0]) / BIN_WIDTH))
        self.pos = np.zeros((n_classes, self.n_bins), np.int64)
        self.neg = np.zeros((n_classes, self.n_bins), np.int64)

    @property
    def edges(self) -> np.ndarray:
        """Lower logit edge of each bin, shape (n_bins,)."""
        return LOGIT_RANGE[0] + BIN_WIDTH * np.arange(self.n_bins)

    def add(self, logits: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Accumulate one frame.

        Parameters
        ----------
        logits : ndarray, float32, shape (C, H, W)
        truth : ndarray, uint8/bool, shape (C, H, W)
        valid : ndarray, bool, shape (H, W), optional
            Pixels to count (default all).
        """
        for c in range(logits.shape[0]):
            s, t = logits[c], truth[c].astype(bool)
            if valid is not None:
                s, t = s[valid], t[valid]
            idx = ((np.ravel(s) - LOGIT_RANGE[0]) * (1.0 / BIN_WIDTH)).astype(np.int64)
            np.clip(idx, 0, self.n_bins - 1, out=idx)
            t = np.ravel(t)
            self.pos[c] += np.bincount(idx[t], minlength=self.n_bins)
            self.neg[c] += np.bincount(idx[~t], minlength=self.n_bins)

    def merge(self, other: "ScoreHistogram") -> None:
        self.pos += other.pos
        self.neg += other.neg


def _counts_above(pos: np.ndarray, neg: np.ndarray):
    """True and false positives, and F1, with the threshold at each bin's lower edge (float64)."""
    tp = np.cumsum(pos[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(neg[::-1])[::-1].astype(np.float64)
    f1 = np.where(tp > 0, 2 * tp / (tp + pos.sum() + fp), 0.0)
    return tp, fp, f1


#: Replicates of the benchmarks' frame-bootstrap intervals, and the seed of their draws.
BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 20261124


def roc_auc_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC from score histograms, over the last axis (any leading axes: classes, replicates).

    Parameters
    ----------
    pos, neg : ndarray, shape (..., n_bins)
        Counts of positive and negative pixels per logit bin, bins in increasing logit.

    Returns
    -------
    ndarray, float64, shape (...)
        P(score_pos > score_neg) + 0.5 P(same bin); NaN where there is no positive or no negative.
    """
    pos = np.asarray(pos, np.float64)
    neg = np.asarray(neg, np.float64)
    n_pos, n_neg = pos.sum(-1), neg.sum(-1)
    neg_below = np.cumsum(neg, axis=-1) - neg
    pairs = (pos * (neg_below + 0.5 * neg)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), pairs / (n_pos * n_neg), np.nan)


def frame_bootstrap_auc(pos_frames, neg_frames, n_boot: int, seed: int, chunk: int = 200) -> np.ndarray:
    """ROC AUC of each class on frames drawn with replacement: the sampling spread of a benchmark.

    The pixels of a frame share its conditions (seeing, sky, which contaminants it holds), so they
    are not independent draws and a per-pixel error bar would be far too narrow; the frame is the
    unit resampled. Several networks scored on the same frames are resampled with the *same* draws
    (pass their histograms stacked on the first axis), so the differences between them are paired.

    Parameters
    ----------
    pos_frames, neg_frames : ndarray, int, shape (n_nets, n_frames, n_classes, n_bins)
        Per-frame score histograms (:class:`ScoreHistogram` ``pos`` and ``neg`` of each frame).
    n_boot : int
        Number of bootstrap replicates.
    seed : int
        Seed of the draws (the replicates are a pure function of the inputs and the seed).
    chunk : int
        Replicates computed at once (memory: ``chunk * n_bins`` float64 per class).

    Returns
    -------
    ndarray, float64, shape (n_nets, n_boot, n_classes)
        NaN where a replicate holds no positive (or no negative) pixel of the class.
    """
    pos_frames = np.asarray(pos_frames)
    neg_frames = np.asarray(neg_frames)
    n_nets, n_frames, n_classes, _ = pos_frames.shape
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_frames, np.full(n_frames, 1.0 / n_frames), size=n_boot).astype(np.float64)
    out = np.empty((n_nets, n_boot, n_classes))
    for k in range(n_nets):
        for c in range(n_classes):
            pos_c = pos_frames[k, :, c].astype(np.float64)
            neg_c = neg_frames[k, :, c].astype(np.float64)
            for b0 in range(0, n_boot, chunk):
                w = draws[b0:b0 + chunk]
                out[k, b0:b0 + chunk, c] = roc_auc_counts(w @ pos_c, w @ neg_c)
    return out


def bootstrap_statistic(statistic, scores, labels, n_boot: int, seed: int) -> np.ndarray:
    """A frame-level statistic (e.g. the ROC AUC of per-exposure scores) on frames drawn with replacement.

    Parameters
    ----------
    statistic : callable
        ``statistic(score, label) -> float``, of one network's scores and the labels of the same frames.
    scores : ndarray, shape (n_nets, n_frames)
        Several networks' scores of the same frames; each replicate draws the same frames for all of
        them, so their differences are paired.
    labels : ndarray, shape (n_frames,)
    n_boot : int
    seed : int

    Returns
    -------
    ndarray, float64, shape (n_nets, n_boot)
    """
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, labels.size, size=(n_boot, labels.size))
    return np.array([[statistic(s[i], labels[i]) for i in idx] for s in scores], np.float64)


def bootstrap_interval(replicates: np.ndarray, level: float = 0.95) -> tuple:
    """Percentile interval of bootstrap replicates, NaN replicates left out.

    Parameters
    ----------
    replicates : ndarray, shape (n_boot,)
    level : float

    Returns
    -------
    (low, high, n_valid) : (float or None, float or None, int)
    """
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return None, None, 0
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(r, [q, 100 - q])
    return float(lo), float(hi), int(r.size)


def class_metrics(pos: np.ndarray, neg: np.ndarray, edges: np.ndarray) -> dict:
    """Detection metrics of one class from its score histograms.

    Parameters
    ----------
    pos, neg : ndarray, int, shape (n_bins,)
        Counts of positive and negative pixels per logit bin.
    edges : ndarray, float, shape (n_bins,)
        Lower logit edge of each bin.

    Returns
    -------
    dict
        ``n_pos``, ``n_neg``, ``auc`` (ROC AUC), ``tpr_at_fpr_1e-3`` and ``tpr_at_fpr_1e-2``
        (true-positive rate at the largest threshold whose false-positive rate does not exceed the
        value), ``ap`` (average precision), ``best_f1`` and ``best_f1_logit`` (the logit threshold
        reaching it: a pixel is positive when its logit >= the threshold). Metrics needing both
        classes are None when a class has no positive or no negative pixel.
    """
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    out = {"n_pos": n_pos, "n_neg": n_neg}
    if n_pos == 0 or n_neg == 0:
        out.update({"auc": None, "tpr_at_fpr_1e-3": None, "tpr_at_fpr_1e-2": None, "ap": None,
                    "best_f1": None, "best_f1_logit": None})
        return out
    tp, fp, f1 = _counts_above(pos, neg)
    tpr = tp / n_pos
    fpr = fp / n_neg
    # ROC AUC = P(score_pos > score_neg) + 0.5 P(tie within a bin)
    res = {"auc": float(roc_auc_counts(pos, neg))}
    for name, f in (("tpr_at_fpr_1e-3", 1e-3), ("tpr_at_fpr_1e-2", 1e-2)):
        ok = fpr <= f
        res[name] = float(tpr[ok].max()) if ok.any() else 0.0
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    # AP = sum over recall steps of precision (step-wise, as scikit-learn does)
    recall = tpr
    d_recall = recall - np.concatenate([recall[1:], [0.0]])
    res["ap"] = float((d_recall * precision).sum())
    k = int(np.argmax(f1))
    res["best_f1"] = float(f1[k])
    res["best_f1_logit"] = float(edges[k])
    out.update(res)
    return out


def all_metrics(hist: ScoreHistogram, names) -> dict:
    """:func:`class_metrics` for every class of a histogram, keyed by class name."""
    return {n: class_metrics(hist.pos[c], hist.neg[c], hist.edges) for c, n in enumerate(names)}



#: Default-mask rule: in a validation frame, at most this fraction of the pixels without a class may
#: be flagged as it ...
MAX_CLEAN_FLAGGED = 0.01
#: ... in at least this fraction of the validation frames.
FRAME_QUANTILE = 0.95
#: Default-mask rule: a mask must flag a contaminated pixel at least this many times as often as a
#: clean one (true-positive rate / false-positive rate), or the class is not flagged at all.
MIN_LIFT = 5.0


def mask_logit_threshold(pos: np.ndarray, neg_frames: np.ndarray, edges: np.ndarray,
                         max_fpr: float = MAX_CLEAN_FLAGGED, frame_quantile: float = FRAME_QUANTILE,
                         min_lift: float = MIN_LIFT) -> dict:
    """Logit threshold of a class's default mask, chosen on validation histograms.

    The threshold maximising the F1 score over all validation pixels, raised where needed so that in
    at least ``frame_quantile`` of the validation frames at most ``max_fpr`` of the frame's pixels
    without the class are flagged. The F1 optimum alone depends on how much of the class the sample
    holds (frames rich in cosmic rays pull the cosmic-ray threshold down), and for a class the
    network barely separates it flags most of a frame; false positives gather in some frames (bright
    nebulae, sky lines), so the cap is set frame by frame, which bounds what a mask costs on most
    frames rather than on average. If the capped mask flags contaminated pixels fewer than
    ``min_lift`` times as often as clean ones, it is little better than flagging pixels at random:
    the class gets no threshold (never flagged).

    Parameters
    ----------
    pos : ndarray, int, shape (n_bins,)
        Counts of positive pixels per logit bin, all frames.
    neg_frames : ndarray, int, shape (n_frames, n_bins)
        Counts of negative pixels per logit bin, frame by frame.
    edges : ndarray, float, shape (n_bins,)
        Lower logit edge of each bin; a pixel is flagged when its logit >= the threshold.
    max_fpr : float
        Largest fraction of a frame's negative pixels flagged.
    frame_quantile : float
        Least fraction of the frames that must respect ``max_fpr``.
    min_lift : float
        Least ratio of the true- to the false-positive rate (all frames); 0 disables it.

    Returns
    -------
    dict
        ``logit`` (None: never flag, or no positive/negative pixel), ``branch`` ("f1", "frame cap",
        "lift" or "empty"), and the ``tpr``, ``fpr``, ``lift`` and ``f1`` over all frames, and the
        fraction of frames within the cap (``frames_within_cap``), at the capped threshold.
    """
    neg_frames = np.atleast_2d(neg_frames)
    neg = neg_frames.sum(axis=0)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    empty = {"logit": None, "tpr": None, "fpr": None, "lift": None, "f1": None, "frames_within_cap": None}
    if n_pos == 0 or n_neg == 0:
        return dict(empty, branch="empty")
    tp, fp, f1 = _counts_above(pos, neg)
    k = int(np.argmax(f1))
    branch = "f1"
    # per frame, the fraction of its negatives at or above each threshold (non-increasing in the bin)
    fp_frames = np.cumsum(neg_frames[:, ::-1], axis=1)[:, ::-1]
    n_neg_frames = np.maximum(neg_frames.sum(axis=1, keepdims=True), 1)
    within = (fp_frames / n_neg_frames <= max_fpr).mean(axis=0)
    ok = within >= frame_quantile
    if not ok.any():  # even the highest logit bin flags too many clean pixels in too many frames
        return dict(empty, branch="frame cap")
    k_cap = int(np.argmax(ok))  # the lowest threshold within the cap
    if k_cap > k:
        k, branch = k_cap, "frame cap"
    tpr, fpr = tp[k] / n_pos, fp[k] / n_neg
    lift = np.inf if fpr == 0 else tpr / fpr
    out = {"logit": float(edges[k]), "branch": branch, "tpr": float(tpr), "fpr": float(fpr),
           "lift": float(lift), "f1": float(f1[k]), "frames_within_cap": float(within[k])}
    if lift < min_lift:
        out.update(logit=None, branch="lift")
    return out
