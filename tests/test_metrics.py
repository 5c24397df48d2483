"""Clustering metrics (SeLaVi §4 "Evaluation"): hand-computed values, invariance to cluster renaming,
agreement with sklearn, the per-head summaries, the Table 2 Markdown and the input checks."""

import itertools
import math

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from avssl.evaluation import metrics

# Three clusters over two classes: cluster 0 holds classes (0, 0, 0, 1), cluster 1 holds (0,), cluster 2
# holds (1,). Hungarian matching pairs cluster 0 with class 0 and cluster 2 with class 1, leaving
# cluster 1 unmatched: accuracy 4/6. Purity gives every cluster its majority class: (3 + 1 + 1) / 6.
TRUE = np.array([0, 0, 0, 0, 1, 1])
PRED = np.array([0, 0, 0, 1, 0, 2])
H_3_1 = math.log(4) - 0.75 * math.log(3)  # Entropy of the (3/4, 1/4) class split of cluster 0.


def random_labels(seed, n=300, classes=7, clusters=9):
  rng = np.random.default_rng(seed)
  true = rng.integers(0, classes, n)
  pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, clusters, n))
  return true, pred


def test_hand_example_exact_values():
  assert metrics.accuracy(TRUE, PRED) == pytest.approx(4 / 6)
  assert metrics.purity(TRUE, PRED) == pytest.approx(5 / 6)
  assert metrics.mean_entropy(TRUE, PRED) == pytest.approx(H_3_1 / 3)
  assert metrics.mean_entropy(TRUE, PRED, base=2) == pytest.approx(H_3_1 / 3 / math.log(2))
  assert metrics.mean_entropy(TRUE, PRED, weighted=True) == pytest.approx(4 / 6 * H_3_1)
  assert metrics.mean_max_purity(TRUE, PRED) == pytest.approx((3 / 4 + 1 + 1) / 3)
  assert metrics.mean_max_purity(TRUE, PRED, weighted=True) == pytest.approx(5 / 6)
  # Class 0: TP 3 of 4 true, 4 predicted -> F1 3/4; class 1: TP 1 of 2 true, 1 predicted -> F1 2/3.
  assert metrics.macro_f1(TRUE, PRED) == pytest.approx((3 / 4 + 2 / 3) / 2)
  mapped = np.array([0, -1, 1])[PRED]
  assert metrics.macro_f1(TRUE, PRED) == pytest.approx(
      sk_metrics.f1_score(TRUE, mapped, labels=[0, 1], average='macro'))


def test_nmi_uses_the_arithmetic_mean_of_the_entropies():
  counts = metrics.confusion_matrix(TRUE, PRED) / len(TRUE)
  mutual_info = sum(p * math.log(p / (counts.sum(1)[c] * counts.sum(0)[k]))
                    for (c, k), p in np.ndenumerate(counts) if p > 0)
  h_true = -sum(p * math.log(p) for p in counts.sum(1))
  h_pred = -sum(p * math.log(p) for p in counts.sum(0))
  assert metrics.nmi(TRUE, PRED) == pytest.approx(2 * mutual_info / (h_true + h_pred))


def test_unweighted_and_weighted_means_differ_as_in_the_closed_form():
  # A pure cluster of 4 and a 50/50 cluster of 2: the release's unweighted mean gives (ln 2) / 2.
  true, pred = [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1]
  assert metrics.mean_entropy(true, pred) == pytest.approx(math.log(2) / 2)
  assert metrics.mean_entropy(true, pred, base=2) == pytest.approx(0.5)
  assert metrics.mean_entropy(true, pred, weighted=True) == pytest.approx(math.log(2) / 3)
  assert metrics.mean_max_purity(true, pred) == pytest.approx(3 / 4)
  assert metrics.mean_max_purity(true, pred, weighted=True) == pytest.approx(metrics.purity(true, pred))


@pytest.mark.parametrize('classes,clusters', [(3, 3), (5, 7), (7, 4), (7, 7)])
def test_hungarian_accuracy_equals_brute_force_over_permutations(classes, clusters):
  true, pred = random_labels(classes * 10 + clusters, n=120, classes=classes, clusters=clusters)
  counts = metrics.confusion_matrix(true, pred)  # [classes, clusters]
  size = max(counts.shape)
  square = np.zeros((size, size), np.int64)
  square[:counts.shape[0], :counts.shape[1]] = counts
  best = max(square[np.arange(size), list(perm)].sum()
             for perm in itertools.permutations(range(size)))  # class c -> cluster perm[c]
  assert metrics.accuracy(true, pred) == pytest.approx(best / len(true))


def test_ari_and_fowlkes_mallows_from_pair_counts_by_hand():
  # Pairs in the same class: C(4,2) + C(2,2) = 7; same cluster: C(4,2) = 6 (cluster 0); both: C(3,2) = 3.
  pairs = math.comb(6, 2)
  expected_index = 7 * 6 / pairs
  ari = (3 - expected_index) / ((7 + 6) / 2 - expected_index)
  assert metrics.ari(TRUE, PRED) == pytest.approx(ari)
  assert metrics.fowlkes_mallows(TRUE, PRED) == pytest.approx(3 / math.sqrt(7 * 6))


def test_fewer_clusters_than_classes():
  # Clusters (0, 0, 1, 1) and (2, 2): one of classes 0/1 gets no cluster and scores F1 0.
  true, pred = [0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1]
  assert metrics.accuracy(true, pred) == pytest.approx(4 / 6)
  assert metrics.purity(true, pred) == pytest.approx(4 / 6)
  assert metrics.macro_f1(true, pred) == pytest.approx((2 * 2 / (2 + 4) + 0 + 1) / 3)
  assert metrics.mean_entropy(true, pred) == pytest.approx(math.log(2) / 2)


def test_more_clusters_than_classes_leaves_unmatched_clusters_wrong():
  true, pred = random_labels(0, classes=4, clusters=12)
  assert metrics.accuracy(true, pred) < metrics.purity(true, pred)
  split = np.where(true == 0, 10 + np.arange(len(true)) % 2, true)  # Class 0 split over two clusters.
  halves = np.bincount(split[true == 0])[10:]
  assert metrics.purity(true, split) == 1.0
  assert metrics.accuracy(true, split) == pytest.approx(1 - halves.min() / len(true))


def test_renaming_clusters_changes_nothing():
  true, pred = random_labels(1)
  renamed = (np.random.default_rng(2).permutation(9) * 7 + 3)[pred]  # Sparse ids, empty clusters.
  assert metrics.cluster_metrics(true, renamed) == pytest.approx(metrics.cluster_metrics(true, pred))
  for base in (math.e, 2):
    assert metrics.mean_entropy(true, renamed, base=base) == pytest.approx(
        metrics.mean_entropy(true, pred, base=base))


def test_perfect_clustering():
  true, _ = random_labels(3)
  pred = np.random.default_rng(4).permutation(7)[true]
  scores = metrics.cluster_metrics(true, pred)
  assert scores.pop('entropy') == pytest.approx(0.0, abs=1e-12)
  assert scores.pop('num_labelled') == len(true) and scores.pop('num_unknown') == 0
  assert scores == pytest.approx(dict.fromkeys(scores, 1.0))


def test_agrees_with_sklearn():
  for seed in range(3):
    true, pred = random_labels(seed)
    scores = metrics.cluster_metrics(true, pred)
    assert scores['nmi'] == pytest.approx(sk_metrics.normalized_mutual_info_score(true, pred))
    assert scores['anmi'] == pytest.approx(sk_metrics.adjusted_mutual_info_score(true, pred))
    assert scores['ari'] == pytest.approx(sk_metrics.adjusted_rand_score(true, pred))
    assert scores['fmi'] == pytest.approx(sk_metrics.fowlkes_mallows_score(true, pred))
    assert scores['nmi'] == metrics.nmi(true, pred)
    assert scores['anmi'] == metrics.adjusted_nmi(true, pred)
    assert scores['ari'] == metrics.ari(true, pred)
    assert scores['fmi'] == metrics.fowlkes_mallows(true, pred)
    assert scores['accuracy'] == metrics.accuracy(true, pred)
    assert scores['purity'] == metrics.purity(true, pred)
    assert scores['macro_f1'] == metrics.macro_f1(true, pred)
    assert scores['entropy'] == metrics.mean_entropy(true, pred)
    assert scores['max_purity'] == metrics.mean_max_purity(true, pred)


def test_vectorised_confusion_equals_a_loop():
  true, pred = random_labels(5, n=500, classes=11, clusters=13)
  true, pred = true * 5 + 1, pred * 3  # Sparse ids.
  classes, clusters = np.unique(true), np.unique(pred)
  loop = np.zeros((len(classes), len(clusters)), np.int64)
  for i, c in enumerate(classes):
    for j, k in enumerate(clusters):
      loop[i, j] = np.sum((true == c) & (pred == k))
  np.testing.assert_array_equal(metrics.confusion_matrix(true, pred), loop)


def test_unknown_labels_are_excluded_and_counted():
  true, pred = random_labels(6)
  unknown = np.random.default_rng(7).random(len(true)) < 0.2
  scores = metrics.cluster_metrics(np.where(unknown, -1, true), pred)
  assert scores['num_unknown'] == unknown.sum()
  assert scores['num_labelled'] == len(true) - unknown.sum()
  assert scores == pytest.approx({**metrics.cluster_metrics(true[~unknown], pred[~unknown]),
                                  'num_unknown': unknown.sum()})
  assert metrics.accuracy(np.where(unknown, -1, true), pred) == metrics.accuracy(
      true[~unknown], pred[~unknown])


def test_per_head_summaries():
  true = np.concatenate([TRUE, [-1]])
  heads = np.stack([np.concatenate([PRED, [0]]), np.concatenate([TRUE + 4, [5]]),
                    np.array([0, 1, 0, 1, 0, 1, 1])], axis=1)
  result = metrics.per_head(true, heads)
  columns = [metrics.cluster_metrics(true, heads[:, h]) for h in range(3)]
  assert result['best_head_optimistic_index'] == 1  # The perfect head has the best NMI.
  assert result['num_heads'] == 3 and result['num_labelled'] == 6 and result['num_unknown'] == 1
  for name in metrics.METRICS:
    values = [column[name] for column in columns]
    assert result[name]['per_head'] == pytest.approx(values)
    assert result[name]['mean'] == pytest.approx(np.mean(values))
    assert result[name]['std'] == pytest.approx(np.std(values))
    assert result[name]['head0'] == pytest.approx(values[0])
    assert result[name]['best_head_optimistic'] == pytest.approx(values[1])
  assert result['accuracy']['head0'] == pytest.approx(4 / 6)
  assert result['entropy']['best_head_optimistic'] == pytest.approx(0.0, abs=1e-12)


def test_pairwise_nmi():
  true, pred = random_labels(8)
  renamed = np.random.default_rng(9).permutation(9)[pred]
  assert metrics.pairwise_nmi(np.stack([pred, renamed], 1)) == pytest.approx((1.0, 0.0))
  heads = np.stack([pred, renamed, true], 1)
  other = sk_metrics.normalized_mutual_info_score(pred, true)
  pairs = [1.0, other, other]
  assert metrics.pairwise_nmi(heads) == pytest.approx((np.mean(pairs), np.std(pairs)))


def test_markdown_table_text():
  rows = {
      'video + audio': {'nmi': {'mean': 0.567, 'std': 0.001}, 'ari': {'mean': 0.225, 'std': 0.004},
                        'accuracy': {'mean': 0.323, 'std': 0.012},
                        'entropy': {'mean': 2.4, 'std': 0.031},
                        'max_purity': {'mean': 0.38, 'std': 0.005}},
      'video': {'nmi': 0.528, 'ari': 0.197, 'accuracy': 0.301, 'entropy': 2.6, 'max_purity': 0.356},
      'SeLa (frames only)': {'nmi': 0.2, 'ari': -0.0004, 'accuracy': 0.05, 'entropy': 4.4142,
                             'max_purity': 0.074},
  }
  assert metrics.markdown_table(rows) == (
      '| Method | NMI | ARI | Acc. | ⟨H⟩ | ⟨p_max⟩ |\n'
      '|:---|---:|---:|---:|---:|---:|\n'
      '| video + audio | 56.7 ± 0.1 | 22.5 ± 0.4 | 32.3 ± 1.2 | 2.40 ± 0.03 | 38.0 ± 0.5 |\n'
      '| video | 52.8 | 19.7 | 30.1 | 2.60 | 35.6 |\n'
      '| SeLa (frames only) | 20.0 | -0.0 | 5.0 | 4.41 | 7.4 |')
  assert metrics.markdown_table({'x': {'nmi': 0.5, 'fmi': 0.25}}, metrics=('fmi', 'nmi')) == (
      '| Method | FMI | NMI |\n|:---|---:|---:|\n| x | 25.0 | 50.0 |')


def test_markdown_table_takes_real_results():
  true, pred = random_labels(10)
  table = metrics.markdown_table({
      'video + audio': metrics.per_head(true, np.stack([pred, true], 1)),
      'video': metrics.cluster_metrics(true, pred)}, metrics=metrics.METRICS)
  lines = table.split('\n')
  assert len(lines) == 4 and lines[2].count('±') == len(metrics.METRICS)
  assert lines[3].count('±') == 0


@pytest.mark.parametrize('call, message', [
    (lambda: metrics.nmi([0, 1, 1], [0, 1]), 'labels_true has 3 samples but labels_pred has 2'),
    (lambda: metrics.accuracy([0, 1], [0, -1]), 'labels_pred must be >= 0, got -1'),
    (lambda: metrics.purity([0, -2], [0, 1]), r'labels_true must be >= 0 or -1 \(unknown\), got -2'),
    (lambda: metrics.ari([0, 1], [0.0, 1.5]), 'labels_pred must hold integer labels'),
    (lambda: metrics.ari([0.0, np.nan], [0, 1]), 'labels_true must hold integer labels'),
    (lambda: metrics.fowlkes_mallows(['a', 'b'], [0, 1]), 'labels_true must hold integer labels'),
    (lambda: metrics.cluster_metrics([-1, -1], [0, 1]), 'labels_true has no known labels'),
    (lambda: metrics.macro_f1([[0, 1]], [0, 1]), r'labels_true must be 1-D, got shape \(1, 2\)'),
    (lambda: metrics.adjusted_nmi([], []), 'labels_true is empty'),
    (lambda: metrics.mean_entropy([0, 1], [0, 1], base=1), 'base must be positive and not 1'),
    (lambda: metrics.per_head([0, 1], [0, 1]), 'labels_per_head must be 2-D'),
    (lambda: metrics.per_head([0, 1, 1], [[0], [1]]),
     'labels_true has 3 samples but labels_per_head has 2'),
    (lambda: metrics.per_head([0, 1], [[0, -1], [1, 0]]), 'labels_per_head must be >= 0'),
    (lambda: metrics.pairwise_nmi([[0], [1]]), 'labels_per_head needs at least 2 heads, got 1'),
    (lambda: metrics.markdown_table({}, metrics=('nmi', 'acc')), r"metrics \['acc'\] are not among"),
    (lambda: metrics.markdown_table({'v': {'nmi': 0.5}}), "row 'v' has no 'ari'"),
])
def test_errors_name_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_whole_valued_float_labels_are_accepted():
  assert metrics.accuracy(TRUE.astype(float), PRED.astype(np.float32)) == pytest.approx(4 / 6)
