"""The cluster browser: a static site for checking by eye what each cluster holds.

SeLaVi's point is labels a person can check; its authors published a browser of their clusters, sorted
by entropy, with a chart of each cluster's ground-truth classes and its YouTube videos
(`docs/papers_and_releases.md`, SeLaVi). This one shows the user's own videos, offline. `--mode=label`
writes it beside `labels.csv` as plain files that open from disk (file://) in any browser, with no
server or network:

- `index.html`, `browser.js`, `browser.css`: the page (from `browser_site/`). The script builds every
  element with `textContent`, so video ids, paths and class names show as text whatever they contain.
- `data/*.js`: the data, as scripts handing one JSON object each to the page (`AVSSL.receive`), since a
  page opened from disk may not fetch() files. `site.js` lists the clusterings (every head of every view
  in labels.csv) and the class names; `<clustering>/index.js` lists one clustering's clusters with their
  size, entropy, purity and mean confidence; `<clustering>/cluster-<k>.js` holds one cluster's label
  distribution and member sample and is loaded only when the cluster is opened, so the page stays small
  with 400 clusters of 200,000 videos.
- `media/`: for each sampled video, a strip of frames (JPEG) and an audio snippet (WAV), written once
  however many clusterings show the video.

Given a factors table (`avssl/evaluation/factors.py`: camera, date, uploader... per video), each
clustering's NMI against every factor joins its NMI against the classes, the table of clusters gets
the factor that best explains each one (its majority value and share), and an opened cluster lists
every factor and its class by chance-corrected purity κ, so that a cluster of one camera shows as such.

The site is built in a local folder and then put in place, so a reader never sees half of one: a
local site is renamed over the old one; a site at a URL (`gs://`) replaces the old one file by file
with `index.html` last, so the page appears only when everything it loads is there.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import re
import tempfile
import wave
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.signal
import tensorflow as tf
from absl import logging

from avssl import files
from avssl.data import pipeline, records
from avssl.evaluation import factors as factors_lib
from avssl.evaluation import metrics as metrics_lib

#: The view listed first in the head selector: SeLaVi's labels from both modalities (Eq. 6).
PREFERRED_VIEW = 'video + audio'
STRIP_FRAMES = 4
STRIP_HEIGHT = 72
SNIPPET_SECONDS = 3.0
SNIPPET_MAX_RATE = 16000
TOP_CLASSES = 10
SITE_FILES = ('index.html', 'browser.js', 'browser.css')
SITE_DIR = os.path.join(os.path.dirname(__file__), 'browser_site')

#: The columns of `labels.csv` (README.md, "labels.csv"): these three, then clusterings and confidences.
ID_COLUMNS = ('video_id', 'source', 'label')
_CLUSTERING = re.compile(r'^(?P<view>.+)/head(?P<head>\d+)$')
_CONFIDENCE = re.compile(r'^(?P<clustering>.+/head\d+)/confidence$')


@dataclasses.dataclass
class Labels:
  """`labels.csv` as arrays, one entry per video (row).

  Attributes:
    video_ids, sources: each video's id and source file.
    truth: `[N]` index into `classes`, -1 where the video has no ground-truth label.
    classes: the ground-truth class names present, sorted.
    clusterings: column name (`<view>/head<h>`) -> `[N]` cluster ids.
    confidences: clustering name -> `[N]` confidence, for the clusterings that have one.
  """
  video_ids: list[str]
  sources: list[str]
  truth: np.ndarray
  classes: list[str]
  clusterings: dict[str, np.ndarray]
  confidences: dict[str, np.ndarray]


def read_labels(path: str) -> Labels:
  """Reads the `labels.csv` of `--mode=label` (README.md, "labels.csv"): `video_id`, `source`,
  `label`, then `<view>/head<h>` cluster columns, each with an optional `<view>/head<h>/confidence`.
  A file of another scheme (the per-method ones of earlier versions) is refused. Rows stream into
  typed arrays, so 200,000 videos × 40 columns stay small in memory."""
  with files.open(path, newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    missing = {'video_id', 'source'} - set(header)
    if missing:
      raise ValueError(f'{path}: no {sorted(missing)} column; expected the labels.csv of --mode=label')
    unknown = [name for name in header if name not in ID_COLUMNS and not _CLUSTERING.match(name)
               and not _CONFIDENCE.match(name)]
    if unknown:
      raise ValueError(f'{path}: column {unknown[0]!r} is not of the labels.csv scheme (an older '
                       'version wrote it); rerun --mode=label to rewrite it')
    clusters = {i: array.array('q') for i, name in enumerate(header) if _CLUSTERING.match(name)}
    confidences = {i: array.array('d') for i, name in enumerate(header) if _CONFIDENCE.match(name)}
    id_at, source_at = header.index('video_id'), header.index('source')
    label_at = header.index('label') if 'label' in header else None
    ids, sources, names = [], [], []
    for row in reader:
      ids.append(row[id_at])
      sources.append(row[source_at])
      names.append(row[label_at] if label_at is not None else '')
      for i, values in clusters.items():
        values.append(int(row[i]))
      for i, scores in confidences.items():
        scores.append(float(row[i]))
  classes = sorted(set(names) - {''})
  lookup = {name: i for i, name in enumerate(classes)}
  truth = np.array([lookup.get(name, -1) for name in names], np.int64)
  by_name = {header[i]: np.asarray(v, np.int64) for i, v in clusters.items()}
  order = sorted(by_name, key=lambda name: not name.startswith(f'{PREFERRED_VIEW}/'))
  confidence = {header[i][:-len('/confidence')]: np.asarray(v) for i, v in confidences.items()}
  return Labels(ids, sources, truth, classes, {name: by_name[name] for name in order},
                {name: c for name, c in confidence.items() if name in by_name})


def write(labels: Labels, records_dir: str | None, output_dir: str, *, title: str = '',
          members_per_cluster: int = 8, factors: factors_lib.Aligned | None = None) -> str:
  """Writes the site for `labels` to `output_dir` (replacing any earlier one); returns its index.html.

  Args:
    labels: the clusterings to browse (`read_labels`).
    records_dir: the records the labelled videos come from (any split; matched by video id), for the
      frames and sounds; None for a site without media.
    output_dir: the site's folder.
    title: shown in the page's heading (e.g. the run's name).
    members_per_cluster: how many members each cluster shows: half the most confident, half the least
      (a seeded random sample for clusterings without confidences, such as the self-labels).
    factors: per-video factors aligned with `labels`' rows (`factors.align`), or None.
  """
  with tempfile.TemporaryDirectory(prefix='avssl-browser-') as scratch:
    # Beside a local output_dir, so that the finished site is renamed (not copied) into place.
    tmp = os.path.join(scratch, 'site') if files.is_url(output_dir) else f'{output_dir}.tmp'
    files.rmtree(tmp)
    try:
      num_media = _build(labels, records_dir, tmp, title, members_per_cluster, factors)
      (_upload if files.is_url(output_dir) else _swap)(tmp, output_dir)
    finally:
      files.rmtree(tmp)
  logging.info('Wrote the cluster browser of %d clusterings (media of %d videos) to %s',
               len(labels.clusterings), num_media, output_dir)
  return files.join(output_dir, 'index.html')


def _build(labels: Labels, records_dir: str | None, site: str, title: str,
           members_per_cluster: int, factors: factors_lib.Aligned | None) -> int:
  """Writes the whole site into the new folder `site`; returns how many videos got media."""
  files.makedirs(os.path.join(site, 'data'))
  for name in SITE_FILES:
    files.copy(os.path.join(SITE_DIR, name), os.path.join(site, name))
  samples = {name: _sample(labels.clusterings[name], labels.confidences.get(name),
                           members_per_cluster) for name in labels.clusterings}
  rows = sorted({r for sample in samples.values() for members in sample.values() for r, _ in members})
  media = _write_media([labels.video_ids[r] for r in rows], records_dir, site) if records_dir else {}
  factor_list = factors.factors if factors else ()
  _write_data(site, 'site', _site(labels, title, members_per_cluster, len(media), factors))
  for i, name in enumerate(labels.clusterings):
    _write_clustering(site, f'h{i}', labels, name, samples[name], media, factor_list)
  return len(media)


def _swap(tmp: str, output_dir: str) -> None:
  """Puts the finished site `tmp` in place of `output_dir`."""
  old = f'{output_dir}.old'
  files.rmtree(old)
  if files.exists(output_dir):
    files.rename(output_dir, old)
  files.rename(tmp, output_dir)
  files.rmtree(old)


def _upload(tmp: str, output_dir: str) -> None:
  """Replaces the site at the URL `output_dir` by the finished local site `tmp`, `index.html` last:
  an object store has no folder rename, and the page is not there until all it loads is."""
  files.rmtree(output_dir)
  for relative in sorted(files.list_files(tmp), key=lambda name: name == 'index.html'):
    target = files.join(output_dir, relative)
    files.makedirs(os.path.dirname(target))
    files.copy(os.path.join(tmp, relative), target)


def _write_data(site: str, key: str, value: Any) -> None:
  """`data/<key>.js`: the value as JSON handed to the page. JSON is a JavaScript expression whose
  strings are all escaped, so nothing in the data can run as code."""
  path = os.path.join(site, 'data', f'{key}.js')
  files.makedirs(os.path.dirname(path))
  with files.open(path, 'w') as f:
    f.write(f'AVSSL.receive({json.dumps(key)}, '
            f'{json.dumps(value, separators=(",", ":"), allow_nan=False)});\n')


# What the site shows.


def _site(labels: Labels, title: str, members_per_cluster: int, num_media: int,
          factors: factors_lib.Aligned | None) -> dict[str, Any]:
  """The site's header data: the clusterings (with their agreement with the ground truth and the
  factors), the classes and the factors."""
  has_truth = bool((labels.truth >= 0).any())
  clusterings = []
  for i, (name, clusters) in enumerate(labels.clusterings.items()):
    match = _CLUSTERING.match(name)
    if match is None:
      raise ValueError(f'clustering {name!r} is not named <view>/head<h>')
    entry = {'id': f'h{i}', 'name': name, 'view': match['view'], 'head': match['head'],
             'clusters': int(np.unique(clusters).size), 'confidence': name in labels.confidences}
    if has_truth:
      entry.update(nmi=_round(metrics_lib.nmi(labels.truth, clusters)),
                   ari=_round(metrics_lib.ari(labels.truth, clusters)),
                   purity=_round(metrics_lib.purity(labels.truth, clusters)))
    if factors:
      entry['factor_nmi'] = [None if (v := factors_lib.nmi(f.codes, clusters)) is None else _round(v)
                             for f in factors.factors]
    clusterings.append(entry)
  return {'title': title, 'videos': len(labels.video_ids), 'truth': has_truth,
          'labelled': int((labels.truth >= 0).sum()), 'classes': labels.classes,
          'clusterings': clusterings, 'members_per_cluster': members_per_cluster,
          'media': num_media,
          'factors': [{'name': f.name, 'values': list(f.values)} for f in factors.factors]
                     if factors else [],
          'factor_notes': {k: str(v) for k, v in factors.notes().items()} if factors else {}}


def _write_clustering(site: str, key: str, labels: Labels, name: str,
                      sample: dict[int, list[tuple[int, str]]], media: dict[str, dict[str, str]],
                      factors: tuple[factors_lib.Factor, ...]) -> None:
  """`data/<key>/index.js` (a table of the clusters, column by column) and one file per cluster."""
  clusters = labels.clusterings[name]
  confidence = labels.confidences.get(name)
  stats = _cluster_stats(clusters, labels.truth, len(labels.classes), confidence)
  explained = _explained(clusters, labels.truth, len(labels.classes), factors)
  index = {'cluster': stats['cluster'].tolist(), 'size': stats['size'].tolist(),
           'entropy': _rounded(stats['entropy']), 'purity': _rounded(stats['purity']),
           'confidence': _rounded(stats['confidence']), 'top': stats['top'].tolist()}
  if factors:
    index['best'] = [_best_factor(rows) for rows in explained]
  _write_data(site, f'{key}/index', index)
  for row, cluster in enumerate(stats['cluster']):
    members = [_member(labels, r, kind, confidence, media) for r, kind in sample[int(cluster)]]
    _write_data(site, f'{key}/cluster-{cluster}', {
        'cluster': int(cluster), 'size': int(stats['size'][row]),
        'entropy': _round(stats['entropy'][row]), 'purity': _round(stats['purity'][row]),
        'confidence': _round(stats['confidence'][row]),
        'labelled': int(stats['counts'][row].sum()),
        'classes': _distribution(stats['counts'][row]), 'members': members,
        'explained': explained[row]})


def _explained(clusters: np.ndarray, truth: np.ndarray, num_classes: int,
               factors: tuple[factors_lib.Factor, ...]) -> list[list[dict[str, Any]]]:
  """Per cluster (in `np.unique` order), the majority value of the classes (`factor` -1) and of
  each factor (its position) with its share of the cluster, its share of all videos and κ
  (`factors.majority`), best κ first; empty without factors."""
  if not factors:
    return [[] for _ in np.unique(clusters)]
  columns = [(-1, truth, num_classes)] if num_classes else []
  columns += [(i, f.codes, len(f.values)) for i, f in enumerate(factors)]
  found = [(i, factors_lib.majority(clusters, codes, size)) for i, codes, size in columns if size]
  out = []
  for row in range(len(np.unique(clusters))):
    entries = [{'factor': i, 'value': int(m.value[row]), 'share': _round(m.share[row]),
                'base': _round(m.base[row]), 'kappa': _round(m.kappa[row]),
                'known': int(m.known[row])} for i, m in found if m.known[row]]
    out.append(sorted(entries, key=lambda e: math.inf if e['kappa'] is None else -e['kappa']))
  return out


def _best_factor(entries: list[dict[str, Any]]) -> list[Any] | None:
  """[factor, value, share, κ] of the factor (not the classes) with the highest κ, if above 0."""
  for e in entries:
    if e['factor'] >= 0 and e['kappa'] is not None and e['kappa'] > 0:
      return [e['factor'], e['value'], e['share'], e['kappa']]
  return None


def _cluster_stats(clusters: np.ndarray, truth: np.ndarray, num_classes: int,
                   confidence: np.ndarray | None) -> dict[str, np.ndarray]:
  """Per non-empty cluster: id, size, class counts `[K, C]`, entropy of its classes in bits (as the
  authors' browser), purity (share of its majority class), majority class and mean confidence; NaN (-1
  for the class) where a cluster has no labelled member or the clustering no confidence."""
  ids, inverse, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
  known = truth >= 0
  counts = np.bincount(inverse[known] * num_classes + truth[known],
                       minlength=len(ids) * num_classes).reshape(len(ids), num_classes)
  labelled = counts.sum(axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    share = counts / labelled[:, None]
    entropy = np.where(share > 0, -share * np.log2(np.where(share > 0, share, 1)), 0.0).sum(axis=1)
    purity = counts.max(axis=1, initial=0) / labelled
  has_labels = labelled > 0
  mean_confidence = (np.bincount(inverse, weights=confidence) / sizes if confidence is not None
                     else np.full(len(ids), np.nan))
  return {'cluster': ids, 'size': sizes, 'counts': counts,
          'entropy': np.where(has_labels, entropy, np.nan),
          'purity': np.where(has_labels, purity, np.nan),
          'top': np.where(has_labels, counts.argmax(axis=1) if num_classes else -1, -1),
          'confidence': mean_confidence}


def _distribution(counts: np.ndarray) -> list[list[int]]:
  """The cluster's `TOP_CLASSES` most frequent classes as [class, count], then [-1, the rest]."""
  order = np.argsort(-counts, kind='stable')
  top = [[int(c), int(counts[c])] for c in order[:TOP_CLASSES] if counts[c]]
  rest = int(counts.sum()) - sum(n for _, n in top)
  return top + ([[-1, rest]] if rest else [])


def _sample(clusters: np.ndarray, confidence: np.ndarray | None,
            per_cluster: int) -> dict[int, list[tuple[int, str]]]:
  """Each cluster's shown members as (row, kind): the `per_cluster // 2` most confident ('most') and
  as many least confident ('least', lowest first), or a seeded random sample ('sample')."""
  if confidence is not None:
    order = np.lexsort((-confidence, clusters))
  else:
    order = np.lexsort((np.random.default_rng(0).random(len(clusters)), clusters))
  ids, starts = np.unique(clusters[order], return_index=True)
  half = per_cluster // 2
  sample = {}
  for cluster, members in zip(ids.tolist(), np.split(order, starts[1:])):
    if confidence is None:
      sample[cluster] = [(int(r), 'sample') for r in members[:per_cluster]]
      continue
    least = members[max(half, len(members) - half):][::-1]
    sample[cluster] = [(int(r), 'most') for r in members[:half]] + [(int(r), 'least') for r in least]
  return sample


def _member(labels: Labels, row: int, kind: str, confidence: np.ndarray | None,
            media: dict[str, dict[str, str]]) -> dict[str, Any]:
  video_id = labels.video_ids[row]
  return {'video': video_id, 'source': labels.sources[row], 'truth': int(labels.truth[row]),
          'confidence': None if confidence is None else _round(confidence[row]), 'kind': kind,
          **media.get(video_id, {})}


def _round(value: float, digits: int = 4) -> float | None:
  value = float(value)
  return None if math.isnan(value) else round(value, digits)


def _rounded(values: np.ndarray) -> list[float | None]:
  return [_round(v) for v in values]


# Media: frames and sound from the records.


def _write_media(video_ids: list[str], records_dir: str, site: str) -> dict[str, dict[str, str]]:
  """Writes a frame strip and an audio snippet of each video found in the records; returns, per video,
  the site-relative paths of what it has ('strip', 'audio'). Videos not in the records get none
  (counted in the log), so labels of records that moved still browse."""
  wanted = set(video_ids)
  media: dict[str, dict[str, str]] = {}
  for video_id, features in _read_records(files.local_or_url(records_dir), wanted):
    stem = hashlib.sha1(video_id.encode()).hexdigest()[:20]
    outputs = {
        'strip': (_strip(features['frames']), 'jpg'),
        'audio': (_snippet(features['waveform'].numpy(), int(features['sample_rate'])), 'wav')}
    media[video_id] = {}
    for kind, (data, extension) in outputs.items():
      if data is not None:
        media[video_id][kind] = _write_file(site, f'media/{stem[:2]}/{stem}.{extension}', data)
  if len(media) < len(wanted):
    logging.warning('Cluster browser: %d of %d sampled videos are not in %s; they show no media',
                    len(wanted) - len(media), len(wanted), records_dir)
  return media


def _write_file(site: str, relative: str, data: bytes) -> str:
  path = os.path.join(site, relative)
  files.makedirs(os.path.dirname(path))
  with files.open(path, 'wb') as f:
    f.write(data)
  return relative


def _read_records(directory: str, wanted: set[str]) -> Iterator[tuple[str, dict[str, tf.Tensor]]]:
  """(video id, parsed record) of the `wanted` videos, in any split: each split's `{split}.csv` gives
  their dataset indices, and only the shards holding them are read, up to the last one needed."""
  manifest = pipeline.read_manifest(directory)
  for split, info in manifest['splits'].items():
    with files.open(files.join(directory, f'{split}.csv'), newline='') as f:
      indices = {int(r['index']): r['video_id'] for r in csv.DictReader(f) if r['video_id'] in wanted}
    for shard in info['shards']:
      local = sorted(i - shard['offset'] for i in indices
                     if 0 <= i - shard['offset'] < shard['count'])
      if not local:
        continue
      keep = set(local)
      stream = tf.data.TFRecordDataset(files.join(directory, shard['file']))
      for position, serialized in enumerate(itertools.islice(stream, local[-1] + 1)):
        if position in keep:
          yield indices[shard['offset'] + position], records.parse(serialized)


def _strip(encoded: tf.Tensor) -> bytes | None:
  """`STRIP_FRAMES` frames spread over the video, side by side at `STRIP_HEIGHT`, as one JPEG."""
  count = int(tf.shape(encoded)[0])
  if not count:
    return None
  picks = sorted({int((i + 0.5) * count / STRIP_FRAMES) for i in range(STRIP_FRAMES)})
  frames = []
  for i in picks:
    frame = tf.io.decode_jpeg(encoded[i], channels=3)
    width = max(1, round(int(frame.shape[1]) * STRIP_HEIGHT / int(frame.shape[0])))
    frames.append(tf.image.resize(frame, (STRIP_HEIGHT, width), antialias=True))
  strip = tf.cast(tf.clip_by_value(tf.round(tf.concat(frames, axis=1)), 0, 255), tf.uint8)
  return tf.io.encode_jpeg(strip, quality=85).numpy()


def _snippet(waveform: np.ndarray, rate: int) -> bytes | None:
  """Up to `SNIPPET_SECONDS` from the middle of the sound as 16-bit mono WAV, at most
  `SNIPPET_MAX_RATE` Hz (enough to hear what a cluster sounds like, at a third of 48 kHz's size)."""
  if not waveform.size or rate <= 0:
    return None
  length = min(waveform.size, int(SNIPPET_SECONDS * rate))
  start = (waveform.size - length) // 2
  clip = waveform[start:start + length]
  if rate > SNIPPET_MAX_RATE:
    divisor = math.gcd(SNIPPET_MAX_RATE, rate)
    clip = scipy.signal.resample_poly(clip, SNIPPET_MAX_RATE // divisor, rate // divisor)
    rate = SNIPPET_MAX_RATE
  buffer = io.BytesIO()
  with wave.open(buffer, 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes((np.clip(clip, -1.0, 1.0) * 32767).astype('<i2').tobytes())
  return buffer.getvalue()
