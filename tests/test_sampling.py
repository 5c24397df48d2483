"""Cluster-balanced sampling (`avssl/data/sampling.py`): the weights, the per-epoch draws, and the
training streams of record shards and of indexed data resampled by them."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from avssl.data import audio, datasets, pipeline, sampling


def test_one_labelling_weighs_a_clip_n_over_k_times_its_cluster_size():
  labels = np.array([0, 0, 0, 0, 0, 0, 2, 2, 5, 0])  # Clusters of 7, 2 and 1; K' = 3 of 6 used.
  expected = np.array([10 / (3 * {0: 7, 2: 2, 5: 1}[c]) for c in labels])
  np.testing.assert_allclose(sampling.balanced_weights([labels]), expected, rtol=1e-12)


def test_two_labellings_are_balanced_by_product_weights():
  """Clips (y, z) = (0,0), (0,0), (0,1), (1,0), (1,1): a weight a_y · b_z per clip that gives each
  cluster of both labellings the mass 5/2 is t/√2 on (0,0), t on (0,1) and (1,0), √2·t on (1,1),
  t = 2.5 / (1 + √2) (solving the four marginal equations with x00·x11 = x01·x10 by hand)."""
  y, z = np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 0, 1])
  t = 2.5 / (1 + math.sqrt(2))
  expected = np.array([t / math.sqrt(2), t / math.sqrt(2), t, t, math.sqrt(2) * t])
  np.testing.assert_allclose(sampling.balanced_weights([y, z], tolerance=1e-12), expected,
                             rtol=1e-9)


def test_integer_weights_are_drawn_exactly_and_shares_scaled_to_the_rows():
  np.testing.assert_array_equal(sampling.draws(np.array([2.0, 0.0, 1.0, 1.0]), np.arange(4), 0, 3),
                                [2, 0, 1, 1])
  # Rows 1 and 3 of weights 3 and 7 hold 2 draws: 0.6 and 1.4 on average, so 0 or 1, and 1 or 2.
  for epoch in range(20):
    first, second = sampling.draws(np.array([1.0, 3.0, 5.0, 7.0]), np.array([1, 3]), 0, epoch)
    assert first + second == 2 and first in (0, 1) and second in (1, 2)
  table = sampling.draw_table(np.array([1.0, 3.0, 5.0, 7.0]), np.array([1, 3]), 0, 0)
  assert table[0] == table[2] == 0 and table.sum() == 2


def test_draws_add_up_to_the_rows_round_each_weight_and_average_to_it():
  w = np.array([3.2, 0.1, 0.1, 0.5, 1.7, 0.9, 0.75, 0.75])  # Sums to 8.
  epochs = np.stack([sampling.draws(w, np.arange(8), 0, e) for e in range(2000)])
  assert np.all(epochs.sum(1) == 8)
  assert np.all((epochs == np.floor(w)) | (epochs == np.ceil(w)))
  np.testing.assert_allclose(epochs.mean(0), w, atol=0.04)  # The mean's std is at most 0.011.
  np.testing.assert_array_equal(sampling.draws(w, np.arange(8), 0, 5), epochs[5])
  assert not np.array_equal(sampling.draws(w, np.arange(8), 1, 5), epochs[5])


def test_bad_weights_are_refused():
  with pytest.raises(ValueError, match='not all zero'):
    sampling.draws(np.zeros(4), np.arange(4), 0, 0)
  with pytest.raises(ValueError, match='finite'):
    sampling.draws(np.array([1.0, np.nan]), np.arange(2), 0, 0)


# The resampled streams.

def _uniformity(counts: np.ndarray) -> tuple[float, float]:
  """Pearson's χ² of `counts` against the uniform, and its 0.999 quantile under multinomial draws
  (K' − 1 degrees of freedom); the draws here vary less than multinomial ones."""
  counts = counts[counts > 0]
  expected = counts.sum() / len(counts)
  return float(((counts - expected) ** 2 / expected).sum()), stats.chi2.ppf(0.999, len(counts) - 1)


def _labelled(n: int) -> tuple[np.ndarray, np.ndarray]:
  """Two labellings of n clips into 4 clusters, skewed and nearly independent of each other: a
  video-like one of sizes n/2, n/4, n/8, n/8 and an audio-like one of 5n/8, 3n/16, n/8, n/16."""
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(4), [n // 2, n // 4, n // 8, n // 8])[rng.permutation(n)]
  z = np.repeat(np.arange(4), [5 * n // 8, 3 * n // 16, n // 8, n // 16])[rng.permutation(n)]
  return y, z


def _record_source(directory, process_index=0, process_count=1, batch_size=8, **overrides):
  config = pipeline.default_config(dir=directory, with_video=False, with_audio=False, **overrides)
  return pipeline.RecordSource(config, batch_size=batch_size, process_index=process_index,
                               process_count=process_count, seed=0)


def test_an_epoch_of_the_record_stream_is_uniform_over_both_labellings(class_folder_records):
  """64 clips in 4 shards of 16, pseudo-labelled twice with skewed clusters (χ² 24 and 50 against
  uniform as read): over each of 3 resampled epochs of 64 clips, both labellings' histograms are
  uniform within sampling noise (χ² under its 0.999 quantile, 16.3 for 3 degrees of freedom)."""
  y, z = _labelled(64)
  weights = sampling.balanced_weights([y, z])
  source = _record_source(class_folder_records[0])
  for balanced in (None, weights):
    batches = list(itertools.islice(source.train_batches(0, balanced), 3 * source.steps_per_epoch))
    for epoch in range(3):
      index = np.concatenate([b['index'] for b in batches[8 * epoch:8 * (epoch + 1)]])
      for labels in (y, z):
        chi2, bound = _uniformity(np.bincount(labels[index], minlength=4))
        assert (chi2 < bound) == (balanced is not None), (epoch, chi2)


@pytest.mark.parametrize('hosts', [1, 2])
def test_each_hosts_epoch_holds_its_rows_as_often_as_drawn(class_folder_records, hosts):
  """The records a host reads in an epoch are exactly `sampling.draws` of its own rows (its share of
  the weights scaled to its count of clips): the epoch keeps its length on every host."""
  weights = sampling.balanced_weights(list(_labelled(64)))
  for host in range(hosts):
    source = _record_source(class_folder_records[0], host, hosts, batch_size=8 * hosts)
    rows = np.concatenate([np.arange(s['offset'], s['offset'] + s['count'])
                           for s in source.host_shards('train')])
    steps = len(rows) // 8
    batches = list(itertools.islice(source.train_batches(0, weights), 2 * steps))
    for epoch in range(2):
      index = np.concatenate([b['index'] for b in batches[epoch * steps:(epoch + 1) * steps]])
      np.testing.assert_array_equal(np.bincount(index, minlength=64),
                                    sampling.draw_table(weights, rows, 0, epoch))


def test_the_resampled_record_stream_is_deterministic_and_resumes_exactly(class_folder_records):
  """Two streams with the same weights give the same bits; one built at step 5 gives those of
  steps 5-10 of one built at 0 (across the epoch boundary at step 8); copies of a clip are different
  clips of it (their own window and augmentation: here the volume's)."""
  weights = sampling.balanced_weights(list(_labelled(64)))
  logmel = audio.default_config('logmel')
  logmel.num_mel_bins, logmel.num_frames = 16, 8
  config = pipeline.default_config(dir=class_folder_records[0], with_video=False, audio=logmel,
                                   audio_seconds=0.4)
  run = lambda start, n: list(itertools.islice(pipeline.RecordSource(
      config, batch_size=8, process_index=0, process_count=1, seed=0).train_batches(
          start, weights), n))
  first, again, resumed = run(0, 11), run(0, 11), run(5, 6)
  for a, b in zip(first, again):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  for a, b in zip(first[5:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  index = np.concatenate([b['index'] for b in first[:8]])
  spectra = np.concatenate([b['audio'] for b in first[:8]])
  repeated = np.flatnonzero(np.bincount(index) > 1)[0]
  copies = spectra[index == repeated]
  assert not np.array_equal(copies[0], copies[1])


def test_bad_weights_name_what_the_method_must_give(class_folder_records):
  source = _record_source(class_folder_records[0])
  with pytest.raises(ValueError, match='one weight per example'):
    next(source.train_batches(0, np.ones(10)))


def test_indexed_data_spread_an_examples_copies_over_the_epoch():
  """Random-access data draw as the records do and shuffle the epoch's draws as a whole, as
  DeepCluster's sampler does; the stream resumes exactly."""
  fetch = lambda split, indices: {'x': indices.astype(np.float32)}
  source = datasets.IndexedSource(fetch, 64, 8, batch_size=8, process_index=0, process_count=1,
                                  seed=0)
  weights = sampling.balanced_weights(list(_labelled(64)))
  batches = list(itertools.islice(source.train_batches(0, weights), 16))
  for epoch in range(2):
    index = np.concatenate([b['index'] for b in batches[8 * epoch:8 * (epoch + 1)]])
    np.testing.assert_array_equal(np.bincount(index, minlength=64),
                                  sampling.draws(weights, np.arange(64), 0, epoch))
    assert np.any(np.diff(index) < 0)  # Shuffled as a whole, not each example's copies in a row.
  resumed = list(itertools.islice(source.train_batches(6, weights), 4))
  for a, b in zip(batches[6:], resumed):
    np.testing.assert_array_equal(a['index'], b['index'])
  unweighted = next(source.train_batches(0))
  np.testing.assert_array_equal(unweighted['index'],
                                np.random.default_rng([0, 0]).permutation(64)[:8])
