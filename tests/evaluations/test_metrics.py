"""evaluations/metrics.py (torch-fidelity's formulas) against independent float64 computations,
the project's former formulas and hand-worked cases."""

import itertools

import numpy as np
import pytest
import scipy.linalg

from evaluations.metrics import (
    class_accuracy,
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)


def _random_features(seed, n=200, d=16, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def test_feature_statistics_are_mean_and_unbiased_covariance():
    f = _random_features(0, n=50, d=4)
    mu, sigma = feature_statistics(f)
    centred = f - f.sum(0) / len(f)
    np.testing.assert_allclose(mu, f.sum(0) / 50, rtol=1e-12)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)


def test_fid_matches_ttur_scipy_sqrtm_formula():
    mu1, s1 = feature_statistics(_random_features(1))
    mu2, s2 = feature_statistics(_random_features(2, shift=0.3))
    # TTUR / pytorch-fid: d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)).
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def _fid_by_symmetric_roots(mu1, s1, mu2, s2):
    """The project's former FID: tr (S1 S2)^(1/2) from the eigenvalues of S1^(1/2) S2 S1^(1/2)."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    product = np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)
    return (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(product).sum()


@pytest.mark.parametrize("n", [200, 9])  # full-rank and rank-deficient (N < D) covariances
def test_fid_equals_the_former_symmetric_root_formula(n):
    stats1 = feature_statistics(_random_features(12, n=n))
    stats2 = feature_statistics(_random_features(13, n=n, shift=0.2))
    expected = _fid_by_symmetric_roots(*stats1, *stats2)
    # N < D: sigma1 sigma2 has D - N + 1 zero eigenvalues, which a general eigensolver returns
    # as ~1e-16 (complex) values; their square roots add ~1e-7 to the trace.
    assert frechet_distance(*stats1, *stats2) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_fid_rejects_a_matrix_that_is_not_a_covariance():
    mu, sigma = feature_statistics(_random_features(7))
    with pytest.raises(ValueError, match="not a covariance"):
        frechet_distance(mu, sigma, mu, -sigma)


def test_fid_of_a_set_with_itself_is_zero():
    mu, sigma = feature_statistics(_random_features(3))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_fid_of_equal_covariances_is_squared_mean_shift():
    f = _random_features(4)
    mu, sigma = feature_statistics(f)
    shift = np.linspace(-1.0, 2.0, f.shape[1])
    mu_shifted, sigma_shifted = feature_statistics(f + shift)
    value = frechet_distance(mu, sigma, mu_shifted, sigma_shifted)
    assert value == pytest.approx(shift @ shift, rel=1e-6)
    far = frechet_distance(*feature_statistics(f + 2 * shift), mu, sigma)
    assert far == pytest.approx(4 * shift @ shift, rel=1e-6) and far > value


def test_fid_of_one_dimensional_gaussians():
    # d^2 = (m1 - m2)^2 + (s1 - s2)^2 for 1-D Gaussians with standard deviations s1, s2.
    value = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert value == pytest.approx(2.0**2 + (2.0 - 3.0) ** 2, rel=1e-12)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
    # Rank-deficient covariances (N < D), the case the eps offset exists for.
    mu1, s1 = feature_statistics(_random_features(5, n=6, d=20))
    mu2, s2 = feature_statistics(_random_features(6, n=6, d=20))
    assert np.isfinite(frechet_distance(mu1, s1, mu2, s2))


def test_fid_rejects_statistics_of_different_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _mmd2_by_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, summed pair by pair."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * m)
    return xx + yy - 2 * xy


def test_kid_hand_computed_one_dimensional_case():
    # x = {0, 1}, y = {1, 2}, d = 1: k(x, x') off-diagonal: k(0,1) = 1 -> mean 1;
    # k(y, y'): k(1,2) = 27 -> 27; cross: (1 + 1 + 8 + 27) / 4 = 9.25 -> 1 + 27 - 2 * 9.25 = 9.5.
    mean, std = kernel_inception_distance(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]), 1, 2)
    assert mean == pytest.approx(9.5, rel=1e-12) and std == 0.0


def test_kid_with_whole_sets_equals_pairwise_loops():
    x, y = _random_features(7, n=12, d=5), _random_features(8, n=12, d=5, shift=0.5)
    mean, std = kernel_inception_distance(x, y, num_subsets=3, subset_size=12)
    assert mean == pytest.approx(_mmd2_by_loops(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is a permutation of the whole set


def test_kid_subsets_average_their_own_mmd():
    # torch-fidelity's draws: per pair, a subset of the first set, then one of the second, from
    # np.random.RandomState(seed).
    x, y = _random_features(9, n=30, d=4), _random_features(10, n=40, d=4)
    mean, std = kernel_inception_distance(x, y, 5, 10, seed=3)
    rng = np.random.RandomState(3)
    values = [
        _mmd2_by_loops(x[rng.choice(30, 10, replace=False)], y[rng.choice(40, 10, replace=False)])
        for _ in range(5)
    ]
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-8)


def test_kid_rejects_subsets_larger_than_a_set():
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(np.zeros((5, 2)), np.zeros((9, 2)), 1, 6)


def test_precision_recall_by_hand_k1():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])  # k=1 radii: 1, 1, 1, 1, 7
    fake = np.array([[0.5], [5.0], [20.0], [21.0]])  # k=1 radii: 4.5, 4.5, 1, 1
    # precision: 0.5 (near 0), 5 (|5-10| = 5 <= 7) are in; 20, 21 are not -> 2/4.
    # recall: 0..3 lie within 4.5 of 0.5; 10 is 5 from 5 (> 4.5) and 10 from 20 (> 1) -> 4/5.
    precision, recall = precision_recall(real, fake, k=1, batch_size=3)
    assert (precision, recall) == pytest.approx((0.5, 0.8), rel=1e-7)  # float32 means


def test_precision_recall_by_hand_k3_two_dimensions():
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # k=3 radius: sqrt(2)
    fake = np.array([[0.5, 0.5], [2.4, 1.0], [2.5, 1.0], [9.0, 9.0]])
    # precision: (0.5, 0.5) in; (2.4, 1) is 1.4 <= sqrt 2 from (1, 1): in; (2.5, 1) is 1.5: out;
    # (9, 9) out -> 2/4. Fake k=3 radii: 0.5,.5 -> |(.5,.5)-(9,9)|, so its ball covers all real
    # points -> recall 1.
    precision, recall = precision_recall(real, fake, k=3)
    assert (precision, recall) == pytest.approx((0.5, 1.0), rel=1e-7)


def test_precision_recall_of_identical_sets_is_one():
    f = _random_features(11, n=40, d=3)
    assert precision_recall(f, f.copy(), k=3) == (1.0, 1.0)


def _certain(classes, num_classes):
    """Logits of images each certain of its class (softmax 1 - 1e-40 on it)."""
    return 100.0 * np.eye(num_classes)[classes]


def test_inception_score_of_certain_uniform_classes_is_num_classes():
    logits = _certain(np.arange(50) % 10, 10)  # every class equally often in every split
    mean, std = inception_score(logits, splits=5, shuffle=False)
    assert mean == pytest.approx(10.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_identical_rows_is_one():
    logits = np.tile([0.1, 0.2, 0.3, 0.4], (20, 1))
    assert inception_score(logits, splits=2)[0] == pytest.approx(1.0, rel=1e-12)


def test_inception_score_two_class_table():
    # p(y|x) rows (0.9, 0.1) and (0.1, 0.9): p(y) = (0.5, 0.5),
    # KL = 0.9 ln 1.8 + 0.1 ln 0.2 for both -> IS = exp(KL); softmax is shift invariant.
    logits = np.log(np.array([[0.9, 0.1], [0.1, 0.9]] * 4)) + 3.0
    expected = np.exp(0.9 * np.log(1.8) + 0.1 * np.log(0.2))
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-12)


def test_inception_score_splits_are_contiguous_without_shuffle():
    # First half all class 0, second half all class 1: each split alone has IS 1; one split has 2.
    logits = _certain([0] * 6 + [1] * 6, 2)
    assert inception_score(logits, splits=2, shuffle=False) == pytest.approx((1.0, 0.0))
    assert inception_score(logits, splits=1, shuffle=False)[0] == pytest.approx(2.0)


def _is_by_numpy(logits, splits):
    """exp(mean KL(p(y|x) || p(y))) per contiguous split [i N / s, (i + 1) N / s), in numpy."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(p)
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    return np.mean(scores), np.std(scores)


def test_inception_score_shuffles_with_torch_fidelity_seed():
    logits = np.random.default_rng(0).normal(size=(23, 6)) * 2
    order = np.random.RandomState(2020).permutation(23)  # torch-fidelity's rng_seed
    expected = _is_by_numpy(logits[order], 10)
    assert inception_score(logits, splits=10) == pytest.approx(expected, rel=1e-12)
    assert inception_score(logits, 10, shuffle=False) == pytest.approx(
        _is_by_numpy(logits, 10), rel=1e-12
    )
    assert inception_score(logits, 10, seed=1)[0] != pytest.approx(expected[0], rel=1e-6)


def test_class_accuracy_counts_argmax_hits():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    assert class_accuracy(logits, np.array([0, 1, 1, 2])) == 0.5
