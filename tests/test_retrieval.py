"""Retrieval: R@k on feature sets with known neighbours, the 8-device mesh equal to one device, ties to
the lower index, padding never returned, mean-centring, view averaging, cross-modal mAP against a hand
computation and sklearn, and clear errors."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from avssl import sharding
from avssl.evaluation import retrieval as retrieval_lib


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh()


def unit(x):
  x = np.asarray(x, np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def on_circle(degrees):
  """`[N, 1, 2]` single-view features at the given angles."""
  radians = np.deg2rad(np.asarray(degrees, np.float64))
  return np.stack([np.cos(radians), np.sin(radians)], -1)[:, None].astype(np.float32)


def test_recall_at_k_counts_a_hit_at_the_first_neighbour_of_the_query_class():
  gallery_labels = [0, 0, 1, 1, 2, 2, 3, 3]
  neighbours = np.array([[0, 2, 4]] * 4)  # Classes 0, 1, 2 in that order for every query.
  recall = retrieval_lib.recall_at_k([0, 1, 2, 3], gallery_labels, neighbours, ks=(1, 2, 3))
  assert recall == {'R@1': 0.25, 'R@2': 0.5, 'R@3': 0.75}


def test_retrieval_known_recall():
  train = np.eye(4, dtype=np.float32)[:, None].repeat(2, axis=1)  # Video c points along e_c, 2 views.
  test = np.array([[1, 0, 0, 0], [3, 2, 0, 0], [3, 2, 1, 0], [3, 2, 1, 0]], np.float32)[:, None]
  # Gallery order by similarity: class 0 first for all; class 1 second for the last three; class 2
  # third for the last two; class 3 last.
  result = retrieval_lib.retrieval(train, [0, 1, 2, 3], test, [0, 1, 2, 3], ks=(1, 2, 3, 4),
                                   center=False)
  assert {k: result[k] for k in ('R@1', 'R@2', 'R@3', 'R@4')} == {
      'R@1': 0.25, 'R@2': 0.5, 'R@3': 0.75, 'R@4': 1.0}
  assert 'not centred' in result['protocol']
  assert '4 queries (1 views)' in result['protocol'] and '4 gallery videos (2 views)' in result[
      'protocol']


def test_eight_devices_equal_one_device(mesh):
  rng = np.random.default_rng(0)
  gallery = unit(rng.standard_normal((45, 6)))  # 45 rows: padded to 48 over 8 devices.
  queries = unit(rng.standard_normal((13, 6)))
  one_index, one_sims = retrieval_lib.nearest_neighbours(queries, gallery, 7)
  eight_index, eight_sims = retrieval_lib.nearest_neighbours(queries, gallery, 7, mesh=mesh,
                                                             block_size=4)
  sims = queries.astype(np.float64) @ gallery.T.astype(np.float64)
  expected = np.argsort(-sims, axis=1, kind='stable')[:, :7]
  np.testing.assert_array_equal(np.asarray(one_index), expected)
  np.testing.assert_array_equal(np.asarray(eight_index), expected)
  np.testing.assert_allclose(np.asarray(eight_sims), np.take_along_axis(sims, expected, 1), atol=1e-6)
  np.testing.assert_allclose(np.asarray(eight_sims), np.asarray(one_sims), atol=1e-6)


@pytest.mark.parametrize('sharded', [False, True])
def test_ties_go_to_the_lower_index_and_padding_is_never_returned(mesh, sharded):
  gallery = np.eye(3, dtype=np.float32)[np.arange(21) % 3]  # Rows 0, 3, ..., 18 along e0.
  queries = np.array([[1, 0, 0], [-1, 0, 0]], np.float32)
  index, sims = retrieval_lib.nearest_neighbours(queries, gallery, 21, mesh=mesh if sharded else None)
  index, sims = np.asarray(index), np.asarray(sims)
  along, across = np.arange(0, 21, 3), np.setdiff1d(np.arange(21), np.arange(0, 21, 3))
  np.testing.assert_array_equal(index[0], np.concatenate([along, across]))
  # For -e0 the 14 orthogonal rows score 0 and come first; zero padding rows would too if not masked.
  np.testing.assert_array_equal(index[1], np.concatenate([across, along]))
  np.testing.assert_array_equal(sims[1], [0.0] * 14 + [-1.0] * 7)


def test_centring_removes_a_dominating_offset():
  train = on_circle([80, 90, 100])  # All near the common direction (0, 1).
  test = on_circle([86])  # Class 0; closest to class 1 by angle, to class 0 once the offset is gone.
  mean = retrieval_lib.gallery_mean(train)
  np.testing.assert_allclose(np.asarray(mean), [0.0, 0.98987], atol=1e-5)
  for center_mean, nearest in ((None, 1), (mean, 0)):
    queries = retrieval_lib.video_embeddings(test, center_mean=center_mean)
    gallery = retrieval_lib.video_embeddings(train, center_mean=center_mean)
    index, _ = retrieval_lib.nearest_neighbours(queries, gallery, 1)
    assert int(index[0, 0]) == nearest
  kwargs = dict(ks=(1,))
  assert retrieval_lib.retrieval(train, [0, 1, 2], test, [0], center=False, **kwargs)['R@1'] == 0.0
  centred = retrieval_lib.retrieval(train, [0, 1, 2], test, [0], center=True, **kwargs)
  assert centred['R@1'] == 1.0 and 'centred on the gallery mean' in centred['protocol']


def test_centring_on_a_zero_mean_changes_nothing():
  rng = np.random.default_rng(1)
  half = np.eye(5, dtype=np.float32)[[[0, 1], [2, 3], [4, 0], [1, 2]]]  # Unit views, exact sums.
  train = np.concatenate([half, -half])  # Every video has its opposite: the mean is exactly 0.
  test = rng.standard_normal((6, 2, 5)).astype(np.float32)
  labels = [0, 1, 2, 3, 1, 0, 3, 2]
  np.testing.assert_array_equal(np.asarray(retrieval_lib.gallery_mean(train)), np.zeros(5))
  np.testing.assert_array_equal(
      np.asarray(retrieval_lib.video_embeddings(test, center_mean=np.zeros(5))),
      np.asarray(retrieval_lib.video_embeddings(test)))
  runs = [retrieval_lib.retrieval(train, labels, test, [0, 1, 2, 3, 0, 1], ks=(1, 2, 5), center=c)
          for c in (False, True)]
  assert {k: v for k, v in runs[0].items() if k != 'protocol'} == {
      k: v for k, v in runs[1].items() if k != 'protocol'}


def test_a_video_whose_views_disagree_lands_at_their_average():
  gallery = unit([[1, 0], [0, 1], [1, 1]])[:, None]  # Classes 0, 1 and the diagonal, class 2.
  query = np.array([[[10, 0], [0, 1]]], np.float32)  # A long view along e0, a short one along e1.
  for normalize_views, nearest in ((True, 2), (False, 0)):
    embedding = retrieval_lib.video_embeddings(query, normalize_views=normalize_views)
    index, _ = retrieval_lib.nearest_neighbours(embedding, retrieval_lib.video_embeddings(gallery), 1)
    assert int(index[0, 0]) == nearest  # Unit views average to the diagonal; raw ones lean to e0.
  views = np.random.default_rng(2).standard_normal((3, 4, 6)).astype(np.float32)
  expected = unit(unit(views).mean(axis=1))
  np.testing.assert_allclose(np.asarray(retrieval_lib.video_embeddings(views)), expected, atol=1e-6)


def test_cross_modal_map_hand_computed():
  # Video and audio features equal, at 0, 60, 20 and 150 degrees; classes 0, 0, 1, 1. Rankings (R =
  # same class): item 0: R N R N, AP 5/6; item 1: R N R N, 5/6; item 2: R N N R, 3/4; item 3: R N R N.
  features = on_circle([0, 60, 20, 150])[:, 0]
  labels = [0, 0, 1, 1]
  result = retrieval_lib.cross_modal_map(features, features, labels)
  assert result['video→audio'] == pytest.approx(0.8125, abs=1e-6)
  assert result['audio→video'] == pytest.approx(0.8125, abs=1e-6)
  # Without the own pair: N R N (1/2), N R N (1/2), N N R (1/3), N R N (1/2).
  without = retrieval_lib.cross_modal_map(features, features, labels, include_own_pair=False)
  assert without['video→audio'] == pytest.approx(11 / 24, abs=1e-6)


def sklearn_map(queries, items, labels):
  sims = unit(queries).astype(np.float64) @ unit(items).T.astype(np.float64)
  return np.mean([average_precision_score(labels == labels[i], sims[i]) for i in range(len(labels))])


def test_cross_modal_map_matches_sklearn_and_eight_devices(mesh):
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 4, 30)
  video = rng.standard_normal((30, 5)).astype(np.float32)
  audio = (video + rng.standard_normal((30, 5))).astype(np.float32)
  one = retrieval_lib.cross_modal_map(video, audio, labels)
  eight = retrieval_lib.cross_modal_map(video, audio, labels, mesh=mesh, block_size=2)
  assert one['video→audio'] == pytest.approx(sklearn_map(video, audio, labels), abs=1e-6)
  assert one['audio→video'] == pytest.approx(sklearn_map(audio, video, labels), abs=1e-6)
  assert eight == pytest.approx(one, abs=1e-7)


def test_cross_modal_map_of_scores_ranks_rows_and_columns_as_sklearn(mesh):
  """Pair scores that are not a product of embeddings (IICL's pairwise co-attention): video i ranks
  the audio by row i, audio j the videos by column j, on one device and on eight (block 2)."""
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 4, 30)
  scores = rng.standard_normal((30, 30)).astype(np.float32) + 2 * (labels[:, None] == labels)
  one = retrieval_lib.cross_modal_map_of_scores(scores, labels)
  eight = retrieval_lib.cross_modal_map_of_scores(scores, labels, mesh=mesh, block_size=2)
  for name, matrix in (('video→audio', scores), ('audio→video', scores.T)):
    expected = np.mean([average_precision_score(labels == labels[i], matrix[i]) for i in range(30)])
    assert one[name] == pytest.approx(expected, abs=1e-6)
  assert eight == pytest.approx(one, abs=1e-7)
  video = rng.standard_normal((30, 5)).astype(np.float32)
  audio = rng.standard_normal((30, 5)).astype(np.float32)
  assert retrieval_lib.cross_modal_map_of_scores(unit(video) @ unit(audio).T, labels) == pytest.approx(
      retrieval_lib.cross_modal_map(video, audio, labels), abs=1e-6)
  with pytest.raises(ValueError, match='square'):
    retrieval_lib.cross_modal_map_of_scores(scores[:, :20], labels)


def test_cross_modal_map_ties_as_sklearn():
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 3, 24)
  video = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 24)]  # Similarities 0 or 1: many ties.
  audio = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 24)]
  result = retrieval_lib.cross_modal_map(video, audio, labels)
  assert result['video→audio'] == pytest.approx(sklearn_map(video, audio, labels), abs=1e-6)
  assert result['audio→video'] == pytest.approx(sklearn_map(audio, video, labels), abs=1e-6)


def test_clear_errors():
  views = np.zeros((4, 2, 3), np.float32)
  with pytest.raises(ValueError, match=r'\[N, V, D\]'):
    retrieval_lib.video_embeddings(np.zeros((4, 3)))
  with pytest.raises(ValueError, match='center_mean must have shape'):
    retrieval_lib.video_embeddings(views, center_mean=np.zeros(4))
  gallery = unit(np.eye(3))
  with pytest.raises(ValueError, match='gallery size 3'):
    retrieval_lib.nearest_neighbours(gallery, gallery, 4)
  with pytest.raises(ValueError, match='1 <= k'):
    retrieval_lib.nearest_neighbours(gallery, gallery, 0)
  with pytest.raises(ValueError, match='dimension'):
    retrieval_lib.nearest_neighbours(np.ones((2, 4)), gallery, 1)
  with pytest.raises(ValueError, match='gallery size 3'):
    retrieval_lib.recall_at_k([0], [0, 1, 2], [[0, 1, 2]], ks=(5,))
  with pytest.raises(ValueError, match='at least 3 neighbours'):
    retrieval_lib.recall_at_k([0], [0, 1, 2], [[0, 1]], ks=(3,))
  with pytest.raises(ValueError, match='query_labels'):
    retrieval_lib.recall_at_k([0, 1], [0, 1, 2], [[0, 1]], ks=(1,))
  with pytest.raises(ValueError, match='gallery size 4'):
    retrieval_lib.retrieval(views, [0, 1, 2, 3], views, [0, 1, 2, 3], ks=(1, 5), center=False)
  with pytest.raises(ValueError, match='train_labels'):
    retrieval_lib.retrieval(views, [0, 1], views, [0, 1, 2, 3], ks=(1,), center=False)
  with pytest.raises(ValueError, match='audio must have the shape'):
    retrieval_lib.cross_modal_map(np.ones((4, 3)), np.ones((4, 2)), [0, 0, 1, 1])
  with pytest.raises(ValueError, match='labels must have shape'):
    retrieval_lib.cross_modal_map(np.ones((4, 3)), np.ones((4, 3)), [0, 1])
  with pytest.raises(ValueError, match='no query has a relevant item'):
    retrieval_lib.cross_modal_map(gallery, gallery, [0, 1, 2], include_own_pair=False)
