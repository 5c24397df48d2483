"""Linear probe: separable features are learnt, random labels stay at chance, the weight decay is chosen
on validation and never on test, groups stay whole, a seed fixes the result, a mesh changes nothing."""

import numpy as np
import pytest

from avssl import sharding
from avssl.data import splits
from avssl.evaluation import probe

FAST = dict(epochs=10, batch_size=64, learning_rate=0.05)


def blobs(n, seed, classes=4, views=3, dim=8, spread=5.0, weights=None):
  """`[n, views, dim]` features around one random centre per class, and the labels."""
  centres = np.random.default_rng(0).standard_normal((classes, dim)) * spread
  rng = np.random.default_rng(seed)
  labels = rng.choice(classes, n, p=weights)
  return centres[labels][:, None] + rng.standard_normal((n, views, dim)), labels


def test_separable_features_are_learnt():
  train, test = blobs(120, 1), blobs(80, 2)
  result = probe.linear_probe(*train, *test, **FAST)
  assert result['accuracy'] >= 0.99 and result['clip_accuracy'] >= 0.99
  assert result['val_accuracy'] >= 0.99
  assert result['predictions'].shape == (80,)
  assert (result['num_train_videos'], result['num_test_videos'], result['train_views'],
          result['test_views'], result['num_classes']) == (120, 80, 3, 3, 4)
  assert result['weight_decay'] in result['weight_decays']


def test_random_labels_stay_at_chance():
  rng = np.random.default_rng(3)
  train = rng.standard_normal((120, 3, 8)), rng.integers(0, 4, 120)
  test = rng.standard_normal((400, 3, 8)), rng.integers(0, 4, 400)
  result = probe.linear_probe(*train, *test, **FAST)
  assert abs(result['accuracy'] - 0.25) < 0.1  # 4.6 standard deviations of 400 coin flips.
  assert abs(result['clip_accuracy'] - 0.25) < 0.1


def test_weight_decay_is_chosen_on_validation_not_on_test():
  # Overlapping, imbalanced classes: a huge weight decay predicts the majority class everywhere, so the
  # two values of the grid disagree on many test videos.
  noisy = dict(spread=1.0, weights=[0.6, 0.25, 0.15], classes=3)
  train, (test_views, test_labels) = blobs(150, 4, **noisy), blobs(100, 5, **noisy)
  grid = (1e-4, 10.0)
  chosen = probe.linear_probe(*train, test_views, test_labels, weight_decays=grid, **FAST)
  other = [wd for wd in grid if wd != chosen['weight_decay']]
  alone = probe.linear_probe(*train, test_views, test_labels, weight_decays=other, **FAST)
  assert np.mean(alone['predictions'] != chosen['predictions']) > 0.2
  # Test labels that the other value predicts perfectly: selecting on test would now pick it.
  rigged = probe.linear_probe(*train, test_views, alone['predictions'], weight_decays=grid, **FAST)
  assert rigged['weight_decay'] == chosen['weight_decay']
  assert rigged['val_accuracies'] == chosen['val_accuracies']
  assert rigged['accuracy'] < 0.8
  assert probe.linear_probe(*train, test_views, alone['predictions'], weight_decays=other,
                            **FAST)['accuracy'] == 1.0


def test_groups_never_straddle_train_and_val():
  rng = np.random.default_rng(6)
  labels = rng.integers(0, 5, 600)
  groups = rng.integers(0, 25, 600)  # Like UCF-101's groups: every group spans the classes.
  val = splits.split_train_val(labels, groups, fraction=0.2, seed=0)
  for g in range(25):
    assert len(set(val[groups == g])) == 1
  assert 0.15 < val.mean() < 0.25
  for c in range(5):
    assert 0.1 < val[labels == c].mean() < 0.3  # Stratified as far as whole groups allow.
  ungrouped = splits.split_train_val(labels, None, fraction=0.2, seed=0)
  for c in range(5):  # One video per group: exactly each class's rounded share.
    assert ungrouped[labels == c].sum() == round(0.2 * np.sum(labels == c))
  train = rng.standard_normal((600, 1, 4)), labels
  result = probe.linear_probe(*train, *train, groups=groups, val_fraction=0.2, weight_decays=(1e-3,),
                              epochs=1, batch_size=256)
  assert result['grouped'] and result['num_val_videos'] == val.sum()


def test_split_keeps_every_class_in_train():
  labels = np.array([0] * 10 + [1] * 2 + [2])
  val = splits.split_train_val(labels, fraction=0.6, seed=0)
  assert val[labels == 0].sum() == 6 and val[labels == 1].sum() == 1 and val[labels == 2].sum() == 0


def test_same_seed_same_result():
  train, test = blobs(120, 7, spread=1.0), blobs(80, 8, spread=1.0)
  first, again = (probe.linear_probe(*train, *test, seed=3, **FAST) for _ in range(2))
  np.testing.assert_array_equal(first.pop('predictions'), again.pop('predictions'))
  assert first == again
  assert not np.array_equal(splits.split_train_val(train[1], fraction=0.1, seed=3),
                            splits.split_train_val(train[1], fraction=0.1, seed=4))


def test_a_mesh_gives_the_same_result():
  train, test = blobs(121, 9, spread=1.0), blobs(83, 10, spread=1.0)  # Rows do not divide over 8.
  alone = probe.linear_probe(*train, *test, **FAST)
  sharded = probe.linear_probe(*train, *test, mesh=sharding.make_mesh(), **FAST)
  np.testing.assert_array_equal(alone.pop('predictions'), sharded.pop('predictions'))
  assert sharded['val_accuracies'] == pytest.approx(alone['val_accuracies'])
  assert sharded['accuracy'] == alone['accuracy']


def test_group_of():
  assert splits.group_of('ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01') == '08'
  hmdb = 'brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0'
  assert splits.group_of(hmdb, splits.HMDB51_GROUP) == 'April_09'
  assert splits.group_of('kiss/April_09_kiss_h_cm_np2_fr_goo_3', splits.HMDB51_GROUP) == 'April_09'
  assert splits.group_of('1-100032-A-0', splits.ESC50_GROUP) == '100032'
  with pytest.raises(ValueError, match='does not match the group pattern'):
    splits.group_of('brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0')


def test_average_over_folds():
  folds = [{'accuracy': 0.5, 'epochs': 10, 'grouped': True, 'val_accuracy': None, 'name': 'a'},
           {'accuracy': 0.7, 'epochs': 10, 'grouped': True, 'val_accuracy': 0.6, 'name': 'b'}]
  summary = probe.average_over_folds(folds)
  assert summary['accuracy'] == {'mean': pytest.approx(0.6), 'std': pytest.approx(0.1),
                                 'per_fold': [0.5, 0.7]}
  assert summary['epochs'] == {'mean': 10.0, 'std': 0.0, 'per_fold': [10.0, 10.0]}
  assert set(summary) == {'num_folds', 'accuracy', 'epochs'} and summary['num_folds'] == 2


def test_bad_inputs_are_refused():
  train, test = blobs(40, 11), blobs(20, 12)
  with pytest.raises(ValueError, match='needs val_fraction > 0'):
    probe.linear_probe(*train, *test, val_fraction=0.0)
  with pytest.raises(ValueError, match=r'train_views must be \[videos, views, features\]'):
    probe.linear_probe(train[0][:, 0], train[1], *test)
  with pytest.raises(ValueError, match='train features are 8-d, test features 4-d'):
    probe.linear_probe(*train, test[0][..., :4], test[1])
