"""ROC AUC from histograms and its frame bootstrap (the benchmarks' error bars)."""

import numpy as np
import pytest

from maximask.metrics import (ScoreHistogram, bootstrap_interval, bootstrap_statistic, class_metrics,
                              frame_bootstrap_auc, roc_auc_counts)


def frame_histograms(rng, n_frames, n_classes=3, shift=2.0):
    """Per-frame histograms of random logits: positives ``shift`` higher, a varying share per frame."""
    pos, neg = [], []
    for _ in range(n_frames):
        h = ScoreHistogram(n_classes)
        truth = rng.random((n_classes, 16, 16)) < rng.uniform(0.05, 0.5)
        logits = rng.normal(size=(n_classes, 16, 16)).astype(np.float32) + shift * truth
        h.add(logits, truth)
        pos.append(h.pos)
        neg.append(h.neg)
    return np.array(pos), np.array(neg)


def test_roc_auc_counts_is_the_auc_of_class_metrics_over_any_leading_axes():
    pos, neg = frame_histograms(np.random.default_rng(1), 4)
    edges = ScoreHistogram(3).edges
    got = roc_auc_counts(pos, neg)
    assert got.shape == (4, 3)
    for f in range(4):
        for c in range(3):
            assert got[f, c] == class_metrics(pos[f, c], neg[f, c], edges)["auc"]


def test_roc_auc_counts_separated_tied_and_undefined():
    assert roc_auc_counts([0, 0, 5], [3, 0, 0]) == 1.0
    assert roc_auc_counts([3, 0, 0], [0, 0, 5]) == 0.0
    assert roc_auc_counts([0, 2, 0], [0, 7, 0]) == 0.5  # ties count half
    assert np.isnan(roc_auc_counts([0, 0, 0], [1, 2, 3]))
    assert np.isnan(roc_auc_counts([1, 0, 0], [0, 0, 0]))


def test_frame_bootstrap_is_reproducible_and_paired():
    pos, neg = frame_histograms(np.random.default_rng(2), 6)
    stacked_pos, stacked_neg = np.stack([pos, pos]), np.stack([neg, neg])
    a = frame_bootstrap_auc(stacked_pos, stacked_neg, 64, seed=7, chunk=10)
    b = frame_bootstrap_auc(stacked_pos, stacked_neg, 64, seed=7)
    assert a.shape == (2, 64, 3)
    np.testing.assert_array_equal(a, b)  # the chunking does not change the replicates
    np.testing.assert_array_equal(a[0], a[1])  # the same frames are drawn for both networks
    assert not np.array_equal(a, frame_bootstrap_auc(stacked_pos, stacked_neg, 64, seed=8))
    # frames differ, so the replicates spread around the pooled AUC
    pooled = roc_auc_counts(pos.sum(0), neg.sum(0))
    lo, hi = np.percentile(a[0], [2.5, 97.5], axis=0)
    assert np.all(hi > lo) and np.all((lo <= pooled) & (pooled <= hi))


def test_identical_frames_give_no_spread():
    pos, neg = frame_histograms(np.random.default_rng(3), 1)
    reps = frame_bootstrap_auc(np.repeat(pos, 5, axis=0)[None], np.repeat(neg, 5, axis=0)[None], 20, seed=0)
    np.testing.assert_allclose(reps[0], np.broadcast_to(roc_auc_counts(pos[0], neg[0]), (20, 3)), rtol=0, atol=1e-12)


def test_replicates_without_the_class_are_nan_and_left_out_of_the_interval():
    pos, neg = frame_histograms(np.random.default_rng(4), 5, n_classes=1)
    neg[1:] += pos[1:]  # the positives of frames 1-4 become negatives: only frame 0 holds the class
    pos[1:] = 0
    reps = frame_bootstrap_auc(pos[None], neg[None], 400, seed=1)[0, :, 0]
    missing = np.isnan(reps)
    # frame 0 is left out of a draw of 5 frames with probability (4/5)^5 = 0.33
    assert 0.2 < missing.mean() < 0.45
    lo, hi, n_valid = bootstrap_interval(reps)
    assert n_valid == int((~missing).sum())
    assert lo <= hi


def test_bootstrap_interval_percentiles():
    lo, hi, n = bootstrap_interval(np.r_[np.arange(1001.0), np.nan])
    assert (lo, hi, n) == (pytest.approx(25.0), pytest.approx(975.0), 1001)
    assert bootstrap_interval([np.nan, np.nan]) == (None, None, 0)


def test_bootstrap_statistic_draws_the_same_frames_for_every_network():
    rng = np.random.default_rng(5)
    labels = rng.random(40) < 0.5
    a = rng.normal(size=40) + labels
    reps = bootstrap_statistic(lambda s, y: float(np.mean(s[y]) - np.mean(s[~y])), [a, a + 1.0, -a], labels, 30, seed=3)
    assert reps.shape == (3, 30)
    np.testing.assert_allclose(reps[1], reps[0])  # a shift does not change a difference of means
    np.testing.assert_allclose(reps[2], -reps[0])
    np.testing.assert_array_equal(reps, bootstrap_statistic(lambda s, y: float(np.mean(s[y]) - np.mean(s[~y])),
                                                            [a, a + 1.0, -a], labels, 30, seed=3))
    assert np.std(reps[0]) > 0
