"""Issue 23's must-show 1 on avnuisance: the raw inputs cluster by nuisance, the class is in the object.

    python benchmarks/nuisance_baselines.py                       # baselines on the default 2,000 clips
    python benchmarks/nuisance_baselines.py --labels=runs/n/labels.csv \
        --factors=runs/nuisance/videos/factors.csv                # a trained run's NMI per factor

Baselines (clips rendered in memory by `avssl.data.synthetic`, the same ones `make_synthetic
--nuisance` writes, before video coding): k-means (k = classes, best inertia of 5 runs) on raw
pixels (every 5th frame, 4 x 4 average-pooled to 16², 3,840 values) and on the whole clip's log-mel
(the product's front end, 40 mel x 40 frames), and on both after the input normalisations of
`configs/selavi_custom.py:nuisance` (each clip minus its median frame, `data.subtract_background`;
each log-mel band standardised over time, `data.audio_band_norm=mean_std`), NMI against the class
and every factor; then a linear probe (multinomial logistic regression on standardised features,
half the clips to train, half to test) on crops centred on the object and on the sound event, against
chance:
- object, raw: the pixels of 24² windows centred on the object in every 4th frame;
- object, background-subtracted: the same windows of |frame - the clip's median frame| (grey);
- event, raw: the log-mel frames the event spans (100-frame log-mel of the clip, 20 frames);
- event, band-normalised: the same after subtracting each band's median over the clip.

With `--labels`, every view of a `labels.csv` (`--mode=label`: its `{view}/head{h}` columns) is scored
by NMI against the class and every factor of `--factors`, the mean over heads, matched by video_id.
"""

from __future__ import annotations

import argparse
import collections
import csv
import re
import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import machine
from avssl.data import audio, augment, synthetic
from avssl.evaluation import factors as factors_lib
from avssl.evaluation import metrics

_ARGS = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
_ARGS.add_argument('--num_videos', type=int, default=2000)
_ARGS.add_argument('--num_classes', type=int, default=10)
_ARGS.add_argument('--seed', type=int, default=0)
_ARGS.add_argument('--skip_baselines', action='store_true')
_ARGS.add_argument('--labels', default='', help="a run's labels.csv to score against --factors")
_ARGS.add_argument('--factors', default='', help='the factors.csv make_synthetic wrote')

_CROP = 24


def render(spec: synthetic.NuisanceSpec) -> dict[str, np.ndarray | list]:
  """Per clip: pooled pixels, object crops, log-mel (40 frames) and event crops, and the factors."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out: dict[str, list] = collections.defaultdict(list)
  for index in range(spec.num_videos):
    label = synthetic.class_of(index, spec)
    frames, coverage, look = synthetic.render_nuisance_video(
        spec, label, np.random.default_rng([spec.seed, 2, index]))
    waveform, (onset, _), sound = synthetic.render_nuisance_audio(
        spec, label, np.random.default_rng([spec.seed, 3, index]))
    out['factors'].append({'class': label, **look, **sound})
    x = frames[::5].astype(np.float32) / 255
    out['pixels'].append(_pooled(x))
    subtracted = augment.subtract_background(tf.constant(frames), 'median').numpy() / 255
    out['pixels_subtracted'].append(_pooled(subtracted[::5]))
    out['object_raw'].append(_object_crops(x, coverage[::5]).ravel())
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255
    foreground = np.abs(grey - np.median(grey, axis=0))[..., None]
    out['object_fg'].append(_object_crops(foreground[::4], coverage[::4]).ravel())
    out['waveform'].append(waveform)
    out['onset'].append(onset)
  waves = tf.constant(np.stack(out.pop('waveform')))
  coarse = audio.logmel(waves, spec.sample_rate, num_mel_bins=40, num_frames=40).numpy()
  fine = audio.logmel(waves, spec.sample_rate, num_mel_bins=40, num_frames=100).numpy()
  out['logmel'] = list(coarse.reshape(len(coarse), -1))
  banded = audio.normalize_bands(tf.constant(coarse)[..., None], 'mean_std').numpy()
  out['logmel_band_normalised'] = list(banded.reshape(len(banded), -1))
  span = round(spec.event_seconds * 100 / spec.duration)
  starts = [round(o / spec.num_samples * 100) for o in out.pop('onset')]
  events = np.stack([f[:, s:s + span] for f, s in zip(fine, starts)])
  out['event_raw'] = list(events.reshape(len(events), -1))
  normalised = events - np.median(fine, axis=2, keepdims=True)
  out['event_norm'] = list(normalised.reshape(len(events), -1))
  return {k: (v if k == 'factors' else np.stack(v)) for k, v in out.items()}


def _pooled(frames: np.ndarray) -> np.ndarray:
  """`[T, H, W, C]` frames 4 x 4 average-pooled and flattened."""
  t, h, w, c = frames.shape
  return frames.reshape(t, h // 4, 4, w // 4, 4, c).mean((2, 4)).ravel()


def _object_crops(frames: np.ndarray, coverage: np.ndarray) -> np.ndarray:
  """`[T, CROP, CROP, C]` windows centred on the object's centre of mass in each frame."""
  size = frames.shape[1]
  padded = np.pad(frames, ((0, 0), (_CROP, _CROP), (_CROP, _CROP), (0, 0)), mode='edge')
  grid = np.arange(size) + 0.5
  crops = []
  for frame, mask in zip(padded, coverage):
    area = mask.sum()
    y, x = (mask.sum(1) @ grid) / area, (mask.sum(0) @ grid) / area
    top, left = int(round(y)) + _CROP // 2, int(round(x)) + _CROP // 2
    crops.append(frame[top:top + _CROP, left:left + _CROP])
  return np.stack(crops)


def factor_codes(rows: list[dict]) -> dict[str, np.ndarray]:
  """Each factor's values as integer codes (`factors.discretise`, as the nuisance report reads a
  table), the class first."""
  return {name: factors_lib.discretise(name, [str(r[name]) for r in rows]).codes for name in rows[0]}


def nmi_row(pred: np.ndarray, factors: dict[str, np.ndarray]) -> dict[str, float]:
  return {name: metrics.nmi(truth, pred) for name, truth in factors.items()}


def chance_nmi(factors: dict[str, np.ndarray], k: int, seed: int = 0) -> float:
  """The class NMI of a random balanced k-way assignment (the finite-sample floor)."""
  rng = np.random.default_rng(seed)
  return metrics.nmi(factors['class'], rng.permutation(np.arange(len(factors['class'])) % k))


def _print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
  names = list(next(iter(rows.values())))
  print(f'\n{title}\n')
  print('| features | ' + ' | '.join(names) + ' |')
  print('|' + '---|' * (len(names) + 1))
  for label, row in rows.items():
    print(f'| {label} | ' + ' | '.join(f'{row[n]:.3f}' for n in names) + ' |')


def baselines(args: argparse.Namespace) -> None:
  spec = synthetic.NuisanceSpec(num_videos=args.num_videos, num_classes=args.num_classes,
                                seed=args.seed)
  start = time.perf_counter()
  data = render(spec)
  factors = factor_codes(data['factors'])
  print(f'{spec.num_videos} avnuisance clips rendered in {time.perf_counter() - start:.0f} s')
  rows = {}
  for name in ('pixels', 'pixels_subtracted', 'logmel', 'logmel_band_normalised'):
    x = StandardScaler().fit_transform(data[name])
    pred = KMeans(args.num_classes, n_init=5, random_state=0).fit_predict(x)
    rows[f'k-means, {name}'] = nmi_row(pred, factors)
  rows['random assignment'] = nmi_row(
      np.random.default_rng(0).permutation(np.arange(spec.num_videos) % args.num_classes), factors)
  _print_table('NMI against the class and each factor', rows)
  y = factors['class']
  half = np.arange(len(y)) % 2 == 0
  print(f'\nLinear probe accuracy on centred crops (chance {1 / args.num_classes:.3f})\n')
  for name in ('object_raw', 'object_fg', 'event_raw', 'event_norm'):
    scaler = StandardScaler().fit(data[name][half])
    probe = LogisticRegression(C=0.1, max_iter=300).fit(scaler.transform(data[name][half]), y[half])
    accuracy = probe.score(scaler.transform(data[name][~half]), y[~half])
    print(f'- {name}: {accuracy:.3f}')


def score_labels(labels_path: str, factors_path: str) -> None:
  """NMI of every head of every view of a labels.csv against each factor (mean over heads), read and
  matched by the nuisance report's own code (`avssl/evaluation/factors.py`)."""
  table = factors_lib.read(factors_path)
  with open(labels_path) as f:
    labels = list(csv.DictReader(f))
  ids = [row['video_id'] for row in labels]
  aligned = factors_lib.align(table, ids, set(ids))
  columns = collections.defaultdict(list)
  for name in labels[0]:
    head = re.fullmatch(r'(.*)/head\d+', name)
    if head:
      columns[head.group(1)].append(name)
  clusterings = {f'{view} (mean of {len(names)})': np.array([[int(r[n]) for n in names]
                                                              for r in labels])
                 for view, names in columns.items()}
  rows = factors_lib.nmi_rows(clusterings, None, aligned)
  codes = {f.name: f.codes for f in aligned.factors}
  print(f'chance (random {len(ids)} x 10): {chance_nmi(codes, 10):.3f}')
  _print_table(f'NMI of {labels_path} against {factors_path}',
               {name: {c: row[c]['mean'] for c in codes} for name, row in rows.items()})


def main() -> None:
  args = _ARGS.parse_args()
  print(f'Machine: {machine.cpu()}')
  if not args.skip_baselines:
    baselines(args)
  if args.labels:
    score_labels(args.labels, args.factors)


if __name__ == '__main__':
  main()
