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
    # thresholds at each bin's lower edge, from the highest: counts of pixels >= threshold
    tp = np.cumsum(pos[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(neg[::-1])[::-1].astype(np.float64)
    tpr = tp / n_pos
    fpr = fp / n_neg
    # ROC AUC = P(score_pos > score_neg) + 0.5 P(tie within a bin)
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    auc = float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
    res = {"auc": auc}
    for name, f in (("tpr_at_fpr_1e-3", 1e-3), ("tpr_at_fpr_1e-2", 1e-2)):
        ok = fpr <= f
        res[name] = float(tpr[ok].max()) if ok.any() else 0.0
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    # AP = sum over recall steps of precision (step-wise, as scikit-learn does)
    recall = tpr
    d_recall = recall - np.concatenate([recall[1:], [0.0]])
    res["ap"] = float((d_recall * precision).sum())
    f1 = np.where(tp > 0, 2 * tp / (2 * tp + (n_pos - tp) + fp), 0.0)
    k = int(np.argmax(f1))
    res["best_f1"] = float(f1[k])
    res["best_f1_logit"] = float(edges[k])
    out.update(res)
    return out


def all_metrics(hist: ScoreHistogram, names) -> dict:
    """:func:`class_metrics` for every class of a histogram, keyed by class name."""
    return {n: class_metrics(hist.pos[c], hist.neg[c], hist.edges) for c, n in enumerate(names)}
