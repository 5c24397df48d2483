"""k-means: scikit-learn's Lloyd from the same start, the same result row-sharded over 8 devices as on
one, no empty cluster left, cosine mode, DeepCluster's PCA-whitening, restarts, N not divisible by 8."""

import jax
import numpy as np
import pytest
from sklearn.cluster import KMeans

from avssl import sharding
from avssl.clustering import kmeans as kmeans_lib


def blobs(n, d, k, seed, spread=0.3):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((k, d)) * 3
  return (centres[rng.integers(0, k, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


def rows_from(x, k, seed):
  return x[np.random.default_rng(seed).choice(len(x), k, replace=False)].copy()


def inertia64(x, centroids, labels):
  return float(np.sum((np.asarray(x, np.float64) - np.asarray(centroids, np.float64)[labels]) ** 2))


def sklearn_lloyd(x, init, iters):
  return KMeans(len(init), init=init, n_init=1, algorithm='lloyd', max_iter=iters, tol=0.0).fit(x)


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh()


def test_same_inertia_as_sklearn_from_the_same_centroids():
  x = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32) + 5.0
  init = rows_from(x, 12, 1)
  ours = kmeans_lib.kmeans(x, 12, init=init, iters=15, tol=0.0)
  ref = sklearn_lloyd(x, init, 15)
  assert ours.inertia == pytest.approx(ref.inertia_, rel=0.01)
  assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-4)  # In fact the same run.
  np.testing.assert_allclose(np.asarray(ours.centroids), ref.cluster_centers_, atol=1e-3)
  assert ours.inertia == pytest.approx(inertia64(x, ours.centroids, np.asarray(ours.labels)), rel=1e-5)


def test_same_labels_as_sklearn_on_separated_blobs():
  x = blobs(500, 8, 6, seed=2)
  init = rows_from(x, 6, 3)
  ours = kmeans_lib.kmeans(x, 6, init=init, iters=20)
  ref = sklearn_lloyd(x, init, 20)
  np.testing.assert_array_equal(np.asarray(ours.labels), ref.labels_)
  assert ours.iterations < 20  # Converged before the cap.


def test_row_sharded_over_8_devices_equals_one_device(mesh):
  x = blobs(1001, 12, 10, seed=4, spread=1.5)  # 1001 rows: not divisible by 8, padded.
  init = rows_from(x, 10, 5)
  one = kmeans_lib.kmeans(x, 10, init=init, iters=10, tol=0.0)
  eight = kmeans_lib.kmeans(x, 10, init=init, iters=10, tol=0.0, mesh=mesh, chunk_size=40)
  np.testing.assert_array_equal(np.asarray(eight.labels), np.asarray(one.labels))
  np.testing.assert_allclose(np.asarray(eight.centroids), np.asarray(one.centroids), atol=1e-4)
  assert eight.inertia == pytest.approx(one.inertia, rel=1e-5)
  assert eight.iterations == one.iterations
  plus_one = kmeans_lib.kmeans(x, 10, iters=10, seed=7)
  plus_eight = kmeans_lib.kmeans(x, 10, iters=10, seed=7, mesh=mesh, chunk_size=40)
  np.testing.assert_array_equal(np.asarray(plus_eight.labels), np.asarray(plus_one.labels))


def test_n_not_divisible_by_8_padding_never_counts(mesh):
  x = blobs(203, 5, 4, seed=6)  # 26 rows per device, the last 5 padded.
  result = kmeans_lib.kmeans(x, 4, iters=10, mesh=mesh, chunk_size=8)
  labels = np.asarray(result.labels)
  assert labels.shape == (203,)
  assert 0 <= labels.min() and labels.max() < 4  # Every real row found its nearest centroid.
  assert result.inertia == pytest.approx(inertia64(x, result.centroids, labels), rel=1e-5)
  np.testing.assert_allclose(np.asarray(result.centroids),
                             [x[labels == j].mean(axis=0) for j in range(4)], atol=1e-4)


def test_no_empty_cluster_survives(mesh):
  x = np.random.default_rng(8).standard_normal((301, 6)).astype(np.float32)
  init = rows_from(x, 5, 9)
  init[1], init[3] = 100.0, -100.0  # Nothing is near these two: they start empty.
  for iters in (0, 1, 10):
    result = kmeans_lib.kmeans(x, 5, init=init, iters=iters, tol=0.0, mesh=mesh)
    assert np.bincount(np.asarray(result.labels), minlength=5).min() > 0, iters
    assert result.iterations >= 1  # Even iters=0 repairs the empty clusters.
  ref = sklearn_lloyd(x, init, 10)  # Re-seeds from the farthest points, as we do.
  assert result.inertia == pytest.approx(ref.inertia_, rel=0.01)


def test_cosine_is_spherical_kmeans():
  rng = np.random.default_rng(10)
  x = blobs(400, 8, 5, seed=10, spread=1.0) * rng.uniform(0.5, 3.0, (400, 1)).astype(np.float32)
  init = rows_from(x, 5, 11)
  result = kmeans_lib.kmeans(x, 5, init=init, iters=8, tol=0.0, metric='cosine')
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  c = init / np.linalg.norm(init, axis=1, keepdims=True)
  for _ in range(8):  # Spherical k-means in float64: nearest by cosine, normalised mean.
    labels = np.argmax(unit @ c.T, axis=1)
    c = np.stack([unit[labels == j].sum(axis=0) for j in range(5)])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
  labels = np.argmax(unit @ c.T, axis=1)
  centroids = np.asarray(result.centroids)
  np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(centroids, c, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(result.labels), labels)
  assert result.inertia == pytest.approx(np.sum(2 - 2 * np.max(unit @ c.T, axis=1)), rel=1e-4)


def test_pca_whitening_gives_unit_rows_of_the_requested_dim(mesh):
  rng = np.random.default_rng(12)
  x = (rng.standard_normal((203, 10)) @ rng.standard_normal((10, 10)) + 4.0).astype(np.float32)
  y = np.asarray(kmeans_lib.pca_whiten(x, 4, mesh=mesh))
  assert y.shape == (203, 4)
  np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
  centred = x - x.mean(axis=0)  # DeepCluster's recipe in float64, up to the sign of each component.
  values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
  ref = centred @ vectors[:, ::-1][:, :4] / np.sqrt(values[::-1][:4])
  ref /= np.linalg.norm(ref, axis=1, keepdims=True)
  signs = np.sign(np.sum(y * ref, axis=0))
  np.testing.assert_allclose(y, ref * signs, atol=1e-4)
  result = kmeans_lib.kmeans(x, 3, pca_dim=4, iters=5, mesh=mesh)
  assert result.centroids.shape == (3, 4)


def test_restarts_keep_the_lowest_inertia(monkeypatch):
  x = np.random.default_rng(13).standard_normal((300, 4)).astype(np.float32)
  seen = []
  lloyd = kmeans_lib._lloyd

  def recording_lloyd(*args, **kwargs):
    out = lloyd(*args, **kwargs)
    seen.append(float(out[2]))
    return out

  monkeypatch.setattr(kmeans_lib, '_lloyd', recording_lloyd)
  result = kmeans_lib.kmeans(x, 8, n_init=4, iters=10, seed=3)
  assert len(seen) == 4 and len(set(seen)) > 1
  assert result.inertia == min(seen)
  assert result.inertia == pytest.approx(inertia64(x, result.centroids, np.asarray(result.labels)),
                                         rel=1e-5)
  assert kmeans_lib.kmeans(x, 8, n_init=1, iters=10, seed=3).inertia == seen[0]


def test_bad_arguments_are_named():
  x = np.zeros((5, 2), np.float32)
  with pytest.raises(ValueError, match='k=6 clusters need'):
    kmeans_lib.kmeans(x, 6)
  with pytest.raises(ValueError, match='metric'):
    kmeans_lib.kmeans(x, 2, metric='manhattan')
  with pytest.raises(ValueError, match='n_init=3'):
    kmeans_lib.kmeans(x, 2, init=x[:2], n_init=3)
  with pytest.raises(ValueError, match='expected \\(2, 2\\)'):
    kmeans_lib.kmeans(x, 2, init=np.zeros((2, 3)))


def test_sharded_input_keeps_labels_sharded_and_is_left_intact(mesh):
  x = jax.device_put(blobs(256, 4, 4, seed=14), sharding.batch_sharded(mesh))
  result = kmeans_lib.kmeans(x, 4, iters=5, mesh=mesh, chunk_size=32)
  assert result.labels.sharding.spec == sharding.batch_sharded(mesh).spec
  assert not x.is_deleted()  # k-means centres a copy in place, never the caller's array.
