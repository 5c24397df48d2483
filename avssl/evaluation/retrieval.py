"""Nearest-neighbour video retrieval (R@k) and cross-modal retrieval mAP on extracted features.

Every paper here reports retrieval the same way at heart: test-split videos query the train split, and
R@k counts a query as a hit when ANY of its k nearest train videos shares its class (SeLaVi Table 4,
GOCA §4 "Evaluation Metrics", IICL §IV-C1, CoCLR). What differs is how the clip features become one
vector per video, so `video_embeddings` makes each step an explicit switch:

- **SeLaVi** (§4, Table 4; the release, `docs/papers_and_releases.md`): 10 clips per video, each clip
  feature L2-normalised, then averaged; the release then runs Euclidean kNN on the averages without
  normalising them again. Here the average is always normalised again (cosine kNN), which can reorder
  neighbours when the per-video averages have different norms.
- **GOCA** (§4 "Evaluation Metrics"; the release, `docs/papers_and_releases.md`): 5 clips x 3 crops,
  L2-normalised, averaged, cosine; no centring: `normalize_views=True, center_mean=None`.
- **CoCLR / ViCC** (their released retrieval code): the raw clip features are averaged, mean-centred,
  then L2-normalised: `normalize_views=False, center_mean=gallery_mean(train_views,
  normalize_views=False)`. One mean, the gallery's, is subtracted from queries and gallery alike, so
  both move by the same vector and the geometry between them is kept.
- **IICL** (§IV-C) follows CoCLR/VCOP with 10 clips averaged and does not say
  whether it centres; `retrieval` therefore records the choice in its 'protocol' string.

Centring matters because self-supervised features often share a large common offset: the cosine
between two videos is then dominated by it and every video looks alike.

Why the computations are built this way:

- **kNN is a matmul, gallery rows sharded.** The `[G, D]` gallery is split over the mesh's `data` axis
  (zero rows appended so it divides, as in `avssl.clustering.kmeans`); queries are replicated and walked
  in blocks, so each device holds at most `block x G / devices` similarities. Each device keeps its own
  top k (`lax.top_k`), padded rows set to -inf so they never win, and only those `devices x k`
  candidates per query are merged by a second `top_k`. `top_k` puts the lower index first among equal
  values, and the candidates are concatenated in device order, i.e. in gallery order, so ties always go
  to the lower gallery index, on any number of devices.
- **mAP needs the full ranking, so queries are sharded instead.** Each device ranks every item of the
  other modality for a block of its own queries (one sort per query), so memory is O(block x N) per
  device and the N x N similarity matrix never exists, except where features depend on the partner
  (IICL's pairwise co-attention): then the caller scores every pair and `cross_modal_map_of_scores`
  ranks the rows (and the columns) of that matrix the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from avssl import sharding
from avssl.clustering.kmeans import l2_normalize, pad_rows, row_blocks
from avssl.sharding import DATA_AXIS

RECALL_KS = (1, 5, 10, 20, 50)
_HIGHEST = lax.Precision.HIGHEST


def _check_views(views: Any, name: str) -> jax.Array:
  views = jnp.asarray(views, jnp.float32)
  if views.ndim != 3 or 0 in views.shape:
    raise ValueError(f'{name} must be a non-empty [N, V, D] array of view features, got shape '
                     f'{views.shape}')
  return views


def joint_views(parts: Sequence[np.ndarray]) -> np.ndarray:
  """GOCA's "+" rows (§4.1: "we simply take the average of the two"): the streams' `[N, V, D]` view
  features, each view L2-normalised, averaged view by view; one stream is returned as it is."""
  if len(parts) == 1:
    return parts[0]
  return np.mean([np.asarray(l2_normalize(jnp.asarray(p))) for p in parts], axis=0)


def view_average(views: Any, *, normalize_views: bool = True) -> jax.Array:
  """`[N, D]` mean over the V views of each video, each view first L2-normalised if `normalize_views`.

  This is the vector `video_embeddings` centres and normalises; `gallery_mean` averages it.
  """
  views = _check_views(views, 'views')
  return jnp.mean(l2_normalize(views) if normalize_views else views, axis=1)


def gallery_mean(views: Any, *, normalize_views: bool = True) -> jax.Array:
  """`[D]` mean of the gallery's per-video averages: the `center_mean` of the CoCLR/ViCC protocol.

  Pass the same `normalize_views` as to `video_embeddings`, so the mean lives in the space it is
  subtracted in.
  """
  return jnp.mean(view_average(views, normalize_views=normalize_views), axis=0)


def video_embeddings(views: Any, *, center_mean: Any | None = None,
                     normalize_views: bool = True) -> jax.Array:
  """One unit vector per video from its `[V, D]` view features (clips x spatial crops).

  Args:
    views: `[N, V, D]` features of V views of each of N videos.
    center_mean: if given, a `[D]` vector subtracted from each video's average before the final
      normalisation (CoCLR/ViCC centre, GOCA does not; see the module docstring). Pass the gallery's
      `gallery_mean` for queries and gallery alike.
    normalize_views: L2-normalise each view before averaging (SeLaVi, GOCA); CoCLR averages raw
      features.

  Returns:
    `[N, D]` float32 with unit rows (a row that is exactly zero after centring stays zero).
  """
  average = view_average(views, normalize_views=normalize_views)
  if center_mean is not None:
    center_mean = jnp.asarray(center_mean, jnp.float32)
    if center_mean.shape != average.shape[1:]:
      raise ValueError(f'center_mean must have shape {average.shape[1:]}, got {center_mean.shape}')
    average = average - center_mean
  return l2_normalize(average)


@functools.partial(jax.jit, static_argnames=('k', 'mesh'))
def _sharded_top_k(gallery: jax.Array, query_blocks: jax.Array, size: jax.Array, *, k: int,
                   mesh: Mesh) -> tuple[jax.Array, jax.Array]:
  """The k most similar real gallery rows for each query of `[blocks, block, D]` `query_blocks`."""

  def local(gallery, query_blocks, size):
    rows = gallery.shape[0]
    index = lax.axis_index(DATA_AXIS) * rows + jnp.arange(rows, dtype=jnp.int32)
    local_k = min(k, rows)

    def one_block(queries):
      sims = jnp.dot(queries, gallery.T, precision=_HIGHEST)
      sims = jnp.where(index < size, sims, -jnp.inf)
      values, positions = lax.top_k(sims, local_k)
      return values, index[positions]

    values, indices = lax.map(one_block, query_blocks)
    return values.reshape(1, -1, local_k), indices.reshape(1, -1, local_k)

  values, indices = jax.shard_map(local, mesh=mesh, in_specs=(P(DATA_AXIS), P(), P()),
                                  out_specs=(P(DATA_AXIS), P(DATA_AXIS)))(gallery, query_blocks, size)
  # [devices, Q, local_k] -> [Q, devices * local_k], in gallery order among equal similarities.
  values = jnp.moveaxis(values, 0, 1).reshape(values.shape[1], -1)
  indices = jnp.moveaxis(indices, 0, 1).reshape(indices.shape[1], -1)
  values, best = lax.top_k(values, k)
  return jnp.take_along_axis(indices, best, axis=1), values


def _pad_blocks(x: Any, block_size: int) -> jax.Array:
  """`[n, D]` rows as float32 `[blocks, block, D]`, zero rows appended (one device's walk)."""
  x = jnp.asarray(x, jnp.float32)
  blocks, block = row_blocks(x.shape[0], 1, block_size)
  return jnp.pad(x, [(0, blocks * block - x.shape[0]), (0, 0)]).reshape(blocks, block, x.shape[1])


def _check_matrix(x: Any, name: str) -> tuple[int, int]:
  shape = np.shape(x)
  if len(shape) != 2 or 0 in shape:
    raise ValueError(f'{name} must be a non-empty [N, D] array, got shape {shape}')
  return shape


def nearest_neighbours(queries: Any, gallery: Any, k: int, *, mesh: Mesh | None = None,
                       block_size: int = 1024) -> tuple[jax.Array, jax.Array]:
  """The k gallery rows with the largest cosine similarity to each query, most similar first.

  Args:
    queries: `[Q, D]` unit-norm rows (e.g. from `video_embeddings`).
    gallery: `[G, D]` unit-norm rows, numpy or a `jax.Array` (ideally already row-sharded on `mesh`).
    k: neighbours per query, 1 <= k <= G.
    mesh: mesh whose `data` axis the gallery rows are split over; None uses the first device.
    block_size: queries per block; each device holds `block_size x G / devices` similarities at a time.

  Returns:
    `(indices, similarities)`, both `[Q, k]`: int32 gallery row indices (never a padding row) and their
    float32 similarities. Equal similarities are ordered by increasing gallery index.
  """
  num_queries, dim = _check_matrix(queries, 'queries')
  size, gallery_dim = _check_matrix(gallery, 'gallery')
  if dim != gallery_dim:
    raise ValueError(f'queries have dimension {dim} but the gallery has {gallery_dim}')
  if not 1 <= k <= size:
    raise ValueError(f'k={k} neighbours need 1 <= k <= gallery size {size}')
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  devices = mesh.devices.size
  _, rows = row_blocks(size, devices, size)
  padded = pad_rows(gallery, devices * rows, mesh)
  blocks = jax.device_put(_pad_blocks(queries, block_size), sharding.replicated(mesh))
  indices, similarities = _sharded_top_k(padded, blocks, jnp.int32(size), k=k, mesh=mesh)
  return indices[:num_queries], similarities[:num_queries]


def _check_labels(labels: Any, name: str, length: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (length,):
    raise ValueError(f'{name} must have shape ({length},), got {labels.shape}')
  return labels


def recall_at_k(query_labels: Any, gallery_labels: Any, neighbours: Any,
                ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
  """R@k: the fraction of queries with at least one of their k nearest gallery items in their class.

  Args:
    query_labels: `[Q]` class of each query.
    gallery_labels: `[G]` class of each gallery item.
    neighbours: `[Q, K]` gallery indices, nearest first (`nearest_neighbours`' indices), K >= max(ks).
    ks: the k to report.

  Returns:
    {'R@k': recall} for each k of `ks`.
  """
  neighbours = np.asarray(neighbours)
  if neighbours.ndim != 2:
    raise ValueError(f'neighbours must be [Q, K] gallery indices, got shape {neighbours.shape}')
  query_labels = _check_labels(query_labels, 'query_labels', neighbours.shape[0])
  gallery_labels = np.asarray(gallery_labels)
  if gallery_labels.ndim != 1:
    raise ValueError(f'gallery_labels must be 1-D, got shape {gallery_labels.shape}')
  for k in ks:
    if not 1 <= k <= len(gallery_labels):
      raise ValueError(f'R@{k} needs 1 <= k <= gallery size {len(gallery_labels)}')
    if k > neighbours.shape[1]:
      raise ValueError(f'R@{k} needs at least {k} neighbours per query, got {neighbours.shape[1]}')
  hits = gallery_labels[neighbours] == query_labels[:, None]
  first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), neighbours.shape[1])
  return {f'R@{k}': float(np.mean(first_hit < k)) for k in ks}


def retrieval(train_views: Any, train_labels: Any, test_views: Any, test_labels: Any, *,
              ks: Sequence[int] = RECALL_KS, center: bool, normalize_views: bool = True,
              mesh: Mesh | None = None) -> dict[str, Any]:
  """Video retrieval R@k: test videos query the train videos (the gallery) by cosine similarity.

  Args:
    train_views: `[G, V, D]` view features of the gallery (train split).
    train_labels: `[G]` their classes.
    test_views: `[Q, V', D]` view features of the queries (test split); V' may differ from V.
    test_labels: `[Q]` their classes.
    ks: the k of R@k; each at most G.
    center: subtract the gallery mean from both sets before the final normalisation (CoCLR/ViCC), or
      not (SeLaVi, GOCA). Required, so every caller states its protocol.
    normalize_views: L2-normalise each view before averaging (see `video_embeddings`).
    mesh: mesh to shard the gallery over; None uses one device.

  Returns:
    {'R@k': recall} for each k, and 'protocol': a sentence for tables saying how it was computed.
  """
  train_views = _check_views(train_views, 'train_views')
  test_views = _check_views(test_views, 'test_views')
  gallery_labels = _check_labels(train_labels, 'train_labels', train_views.shape[0])
  query_labels = _check_labels(test_labels, 'test_labels', test_views.shape[0])
  mean = gallery_mean(train_views, normalize_views=normalize_views) if center else None
  gallery = video_embeddings(train_views, center_mean=mean, normalize_views=normalize_views)
  queries = video_embeddings(test_views, center_mean=mean, normalize_views=normalize_views)
  k_max = max(ks)
  if k_max > gallery.shape[0]:
    raise ValueError(f'R@{k_max} needs k <= gallery size {gallery.shape[0]}')
  indices, _ = nearest_neighbours(queries, gallery, k_max, mesh=mesh)
  views = 'L2-normalised views' if normalize_views else 'raw views'
  centring = 'centred on the gallery mean' if center else 'not centred'
  protocol = (f'cosine kNN of {queries.shape[0]} queries ({test_views.shape[1]} views) in '
              f'{gallery.shape[0]} gallery videos ({train_views.shape[1]} views); {views} averaged, '
              f'{centring}, L2-normalised')
  return {**recall_at_k(query_labels, gallery_labels, indices, ks), 'protocol': protocol}


@functools.partial(jax.jit, static_argnames=('blocks', 'mesh'))
def _average_precisions(queries: jax.Array, items: jax.Array | None, labels: jax.Array,
                        include_own_pair: jax.Array, *, blocks: int,
                        mesh: Mesh) -> tuple[jax.Array, jax.Array]:
  """Each query's average precision over all N items, and its number of relevant items.

  `queries` are row-sharded and padded, each device holding `blocks` blocks of rows; `items` (all N) and
  `labels` are replicated. With `items` None, each row of `queries` already holds that query's N
  similarities. Padded queries get garbage and are dropped by the caller.
  """
  size = labels.shape[0]
  scored = items is None

  def local(queries, labels, include_own_pair, *items):
    rows, dim = queries.shape
    block = rows // blocks
    positions = jnp.arange(size, dtype=jnp.int32)
    first = lax.axis_index(DATA_AXIS) * rows + jnp.arange(rows, dtype=jnp.int32)

    def one_block(args):
      block_queries, query_index = args
      sims = block_queries if scored else jnp.dot(block_queries, items[0].T, precision=_HIGHEST)
      relevant = labels[jnp.minimum(query_index, size - 1)][:, None] == labels
      dropped = (query_index[:, None] == positions) & ~include_own_pair
      sims = jnp.where(dropped, -jnp.inf, sims)
      relevant = (relevant & ~dropped).astype(jnp.int32)
      # Rank by decreasing similarity. An item's precision is taken at its score's threshold, over all
      # items scoring at least as high, ties included (sklearn's `average_precision_score`), so the
      # order among equal scores cannot change the result.
      neg_sims, relevant = lax.sort((-sims, relevant), dimension=1, num_keys=1)
      last_of_tie = jnp.concatenate([neg_sims[:, 1:] != neg_sims[:, :-1],
                                     jnp.ones((block, 1), bool)], axis=1)
      tie_end = lax.cummin(jnp.where(last_of_tie, positions, size), axis=1, reverse=True)
      hits = jnp.take_along_axis(jnp.cumsum(relevant, axis=1), tie_end, axis=1)
      precision = hits / (tie_end + 1).astype(jnp.float32)
      count = jnp.sum(relevant, axis=1)
      return jnp.sum(relevant * precision, axis=1) / jnp.maximum(count, 1), count

    ap, count = lax.map(one_block, (queries.reshape(blocks, block, dim),
                                    first.reshape(blocks, block)))
    return ap.reshape(-1), count.reshape(-1)

  items_args = () if scored else (items,)
  return jax.shard_map(local, mesh=mesh, in_specs=(P(DATA_AXIS), P(), P()) + (P(),) * len(items_args),
                       out_specs=(P(DATA_AXIS), P(DATA_AXIS)))(queries, labels, include_own_pair,
                                                                *items_args)


def _mean_ap(queries: Any, items: jax.Array | None, labels: jax.Array, include_own_pair: bool,
             mesh: Mesh, block_size: int) -> float:
  """mAP of `queries` (`[N, D]` features against `items`, or `[N, N]` similarities with `items`
  None) over the queries with a relevant item."""
  size = labels.shape[0]
  devices = mesh.devices.size
  blocks, block = row_blocks(size, devices, block_size)
  padded = pad_rows(queries, devices * blocks * block, mesh)
  if items is not None:
    items = jax.device_put(items, sharding.replicated(mesh))
  ap, count = _average_precisions(padded, items, labels, jnp.asarray(include_own_pair),
                                  blocks=blocks, mesh=mesh)
  ap, count = np.asarray(ap)[:size], np.asarray(count)[:size]
  if not count.any():
    raise ValueError('no query has a relevant item: every class has a single clip')
  return float(ap[count > 0].mean())


def cross_modal_map(video: Any, audio: Any, labels: Any, *, include_own_pair: bool = True,
                    mesh: Mesh | None = None, block_size: int = 256) -> dict[str, float]:
  """Cross-modal retrieval mAP (IICL §IV-C3, Table III): video queries rank audio, and the reverse.

  Each query of one modality ranks all N items of the other modality by cosine similarity (the inputs
  are L2-normalised here); an item is relevant when it has the query's class. A query's average
  precision is the mean, over its relevant items, of the precision among the items ranked at or above
  that one (items with equal similarity count as ranked together, as in sklearn's
  `average_precision_score`); mAP is the mean over queries.

  IICL ranks "between different modalities" by class on Kinetics-400 and says nothing about the query's
  own pair (the audio of the query's own clip). It is an item of the other modality with the query's
  class, so by the paper's definition it is relevant: `include_own_pair=True` (default) keeps it.
  `include_own_pair=False` removes it from the ranking altogether (neither a hit nor a miss), which
  measures class-level retrieval only; queries then left with no relevant item are skipped.

  Args:
    video: `[N, D]` video features, row i from the same clip as `audio` row i.
    audio: `[N, D]` audio features, in the same (joint) space as `video`.
    labels: `[N]` class of each clip.
    include_own_pair: whether the query's own pair is ranked (and relevant).
    mesh: mesh to shard the queries over; None uses one device.
    block_size: queries per block; each device holds `block_size x N` similarities at a time.

  Returns:
    {'video→audio': mAP, 'audio→video': mAP}.
  """
  size, dim = _check_matrix(video, 'video')
  if np.shape(audio) != (size, dim):
    raise ValueError(f'audio must have the shape of video {(size, dim)}, got {np.shape(audio)}')
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  labels = jax.device_put(jnp.asarray(_check_labels(labels, 'labels', size), jnp.int32),
                          sharding.replicated(mesh))
  video = l2_normalize(jnp.asarray(video, jnp.float32))
  audio = l2_normalize(jnp.asarray(audio, jnp.float32))
  return {'video→audio': _mean_ap(video, audio, labels, include_own_pair, mesh, block_size),
          'audio→video': _mean_ap(audio, video, labels, include_own_pair, mesh, block_size)}


def cross_modal_map_of_scores(scores: Any, labels: Any, *, include_own_pair: bool = True,
                              mesh: Mesh | None = None, block_size: int = 256) -> dict[str, float]:
  """`cross_modal_map` from a pair score matrix instead of features: video i ranks the audio by row i
  of `scores`, audio j ranks the videos by column j.

  For features that depend on the partner (IICL's pairwise co-attention), where no single embedding
  per clip exists: the score of every (video, audio) pair is computed as a pair, and ranked here as
  `cross_modal_map` ranks cosine similarities.

  Args:
    scores: `[N, N]`, row i from video i, column j from audio j (a `jax.Array` may stay sharded).
    labels: `[N]` class of each clip.
    include_own_pair, mesh, block_size: as in `cross_modal_map`.

  Returns:
    {'video→audio': mAP, 'audio→video': mAP}.
  """
  size, columns = _check_matrix(scores, 'scores')
  if columns != size:
    raise ValueError(f'scores must be square [N, N], got {np.shape(scores)}')
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  labels = jax.device_put(jnp.asarray(_check_labels(labels, 'labels', size), jnp.int32),
                          sharding.replicated(mesh))
  scores = jnp.asarray(scores, jnp.float32)
  return {'video→audio': _mean_ap(scores, None, labels, include_own_pair, mesh, block_size),
          'audio→video': _mean_ap(scores.T, None, labels, include_own_pair, mesh, block_size)}
