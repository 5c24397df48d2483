"""XDC's cluster-balanced sampling on record shards: how uniform an epoch is, and how close together
the copies of a clip come.

    python benchmarks/balanced_sampling.py                    # 20,000 clips, k = 256, batch 256
    python benchmarks/balanced_sampling.py --clips=240000     # Kinetics' size (minutes)

Label-only records (`class_mix.write`: nothing is decoded) in shards of 256 are read by the training
stream as a run reads them (`RecordSource.train_batches`, the default `cycle_length` and
`shuffle_buffer`), resampled by the weights of two skewed clusterings (cluster sizes log-normal with
σ = `--skew`, drawn independently for the video and the audio clustering, as k-means leaves them
uneven). Printed per epoch: each clustering's Pearson χ² against uniform (with the 0.999 quantile of
multinomial draws) and its smallest and largest cluster count over N / K'; the share of the epoch's
draws whose clip comes again in the same batch, next to the same epoch's draws shuffled as a whole
(DeepCluster's sampler, and `IndexedSource`'s); and the largest weight, which `balance='reweight'`
puts on a clip's loss instead.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from scipy import stats

import class_mix
import machine
from avssl.data import pipeline, sampling

_ARGS = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
_ARGS.add_argument('--clips', type=int, default=20000)
_ARGS.add_argument('--clusters', type=int, default=256)
_ARGS.add_argument('--batch', type=int, default=256)
_ARGS.add_argument('--skew', type=float, default=1.0, help='σ of the log-normal cluster sizes')
_ARGS.add_argument('--epochs', type=int, default=2)
_ARGS.add_argument('--shuffle_buffers', default='256,2048',
                   help='config.data.shuffle_buffer values to measure (256: the default)')


def skewed_labels(n: int, k: int, skew: float, seed: int) -> np.ndarray:
  """n labels in k clusters of log-normal sizes (each at least 1), in a random order."""
  rng = np.random.default_rng(seed)
  share = rng.lognormal(0.0, skew, k)
  sizes = 1 + np.floor(share / share.sum() * (n - k)).astype(int)
  sizes[np.argmax(sizes)] += n - sizes.sum()
  return np.repeat(np.arange(k), sizes)[rng.permutation(n)]


def repeated_in_batch(index: np.ndarray, batch: int) -> float:
  """The share of draws whose clip is drawn again within the same batch."""
  shared = 0
  for start in range(0, len(index) - batch + 1, batch):
    counts = np.bincount(index[start:start + batch])
    shared += counts[counts > 1].sum()
  return shared / len(index)


def main() -> None:
  args = _ARGS.parse_args()
  labellings = [skewed_labels(args.clips, args.clusters, args.skew, seed) for seed in (1, 2)]
  started = time.perf_counter()
  weights = sampling.balanced_weights(labellings)
  fitted = time.perf_counter() - started
  print(f'machine: {machine.cpu()}; {args.clips} clips, k = {args.clusters}, batch {args.batch}, '
        f'cycle_length {pipeline.default_config().cycle_length}, shuffle_buffer '
        f'{pipeline.default_config().shuffle_buffer}; cluster sizes '
        + ', '.join(f'{np.bincount(y).min()}-{np.bincount(y).max()}' for y in labellings)
        + f'; weights {weights.min():.3f}-{weights.max():.1f} (fitted in {fitted:.3f} s); '
        f'reweight: up to {max(args.clips / (args.clusters * np.bincount(y).min()) for y in labellings):.1f}')
  parsed = class_mix.class_folder(args.clips, 1)
  print('| shuffle_buffer | epoch | χ² video, audio (0.999 bound) | counts / (N/K′) video, audio | '
        'repeated in a batch: stream (whole-epoch shuffle) |')
  print('|---:|---:|---|---|---|')
  with tempfile.TemporaryDirectory() as tmp:
    class_mix.write(parsed, tmp, id_order=False)
    for buffer in map(int, args.shuffle_buffers.split(',')):
      measure(tmp, buffer, labellings, weights, args)


def measure(directory: str, buffer: int, labellings: list[np.ndarray], weights: np.ndarray,
            args: argparse.Namespace) -> None:
  """One table row per epoch of the stream resampled by `weights` through a `buffer` shuffle."""
  source = pipeline.RecordSource(
      pipeline.default_config(dir=directory, with_video=False, with_audio=False,
                              shuffle_buffer=buffer),
      batch_size=args.batch, process_index=0, process_count=1, seed=0)
  steps = source.steps_per_epoch
  stream = source.train_batches(0, weights)
  for epoch in range(args.epochs):
    index = np.concatenate([next(stream)['index'] for _ in range(steps)])
    chi2, spread = [], []
    for y in labellings:
      counts = np.bincount(y[index], minlength=args.clusters)
      expected = len(index) / args.clusters
      chi2.append(f'{((counts - expected) ** 2 / expected).sum():.0f}')
      spread.append(f'{counts.min() / expected:.2f}-{counts.max() / expected:.2f}')
    bound = stats.chi2.ppf(0.999, args.clusters - 1)
    shuffled = np.random.default_rng(epoch).permutation(index)
    print(f'| {buffer} | {epoch} | {", ".join(chi2)} ({bound:.0f}) | {", ".join(spread)} | '
          f'{repeated_in_batch(index, args.batch):.3f} '
          f'({repeated_in_batch(shuffled, args.batch):.3f}) |')


if __name__ == '__main__':
  main()
