"""Classes per shard and per training batch, for make_records' shards against shards cut in id order.

    python benchmarks/class_mix.py                      # UCF-101 and HMDB-51 split 1 sizes
    python benchmarks/class_mix.py --datasets=vggsound  # 170,752 videos of 309 classes (minutes)

Class-foldered ids (`class/file`: `folder`, i.e. a user's videos for `selavi_custom`, UCF-101,
HMDB-51) sort by class; VGG-Sound's and Kinetics' are YouTube ids in no class order, so `vggsound`
stands for a class folder of its size. For each dataset size, the ids of a class-foldered
training split (class sizes drawn around the real split's mean) go through `make_records.run` twice,
into shards of 256: as it orders them (a hash of the ids) and cut in id order, as an earlier
make_records did. Records hold the label only (nothing is decoded or stored: `convert` is replaced),
and the training stream reads them as a run would (`RecordSource.train_batches`, the default
`cycle_length` and `shuffle_buffer`), with the batch size of that dataset's config. Printed: the mean
distinct classes per shard and per batch (min-max over `--batches` batches), each next to the mean a
random draw of the same size would hold (`avssl.data.class_mix.expected_classes`).
"""

from __future__ import annotations

import argparse
import tempfile
import unittest.mock

import numpy as np

import machine
from avssl.data import class_mix, pipeline, records
from avssl.data_prep import annotations, make_records

#: name: (training videos, classes, batch size, the config that trains on it).
DATASETS = {
    'ucf101': (9537, 101, 640, 'goca_ucf101'),
    'hmdb51': (3570, 51, 32, 'finetune_hmdb51'),
    'vggsound': (170752, 309, 1024, 'selavi_vggsound'),
}
_ARGS = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
_ARGS.add_argument('--datasets', default='ucf101,hmdb51', help=f'some of {",".join(DATASETS)}')
_ARGS.add_argument('--batches', type=int, default=40, help='training batches measured per case')


def class_folder(videos: int, classes: int) -> annotations.Annotations:
  """A training split of `videos` ids `c{class}/v{k}` with uneven class sizes (a seeded draw)."""
  weights = np.random.default_rng(0).uniform(0.7, 1.3, classes)
  sizes = np.maximum(1, np.round(weights / weights.sum() * videos)).astype(int)
  names = [f'c{c:03d}' for c in range(classes)]
  entries = [annotations.Entry(f'{names[c]}/v{k:04d}', '', 'train', c, names[c])
             for c in range(classes) for k in range(sizes[c])]
  return annotations.Annotations(entries, names, [])


def label_only(entry: annotations.Entry, settings: make_records.Settings):
  """`make_records.convert` without a file: a record of the entry's id and label, no frames."""
  record = records.VideoRecord(
      video_id=entry.video_id, source='', split=entry.split, frames=np.zeros((0, 0, 0, 3), np.uint8),
      waveform=np.zeros(16, np.float32), fps=settings.fps, sample_rate=settings.sample_rate,
      duration=1.0, label_index=entry.label_index, label_name=entry.label_name)
  return records.serialize(record), {'video_id': entry.video_id, 'path': '', 'split': entry.split,
                                     'label_index': entry.label_index,
                                     'label_name': entry.label_name, 'duration': 1.0}


def write(parsed: annotations.Annotations, output_dir: str, id_order: bool) -> None:
  settings = make_records.Settings(fps=10.0, short_side=None, sample_rate=16000, min_duration=0.0,
                                   flow=False, audio_only=True, require_audio=False,
                                   jpeg_quality=90, examples_per_shard=256)
  with unittest.mock.patch.object(make_records, 'convert', label_only):
    if id_order:
      with unittest.mock.patch.object(make_records, 'shard_order_key', lambda i, seed: i):
        make_records.run(parsed, output_dir, settings, dataset='folder', workers=0)
    else:
      make_records.run(parsed, output_dir, settings, dataset='folder', workers=0)


def measure(directory: str, batch_size: int, batches: int) -> dict[str, float]:
  """Distinct classes per shard and per training batch, with what random draws would hold."""
  source = pipeline.RecordSource(
      pipeline.default_config(dir=directory, train_split='train', with_video=False,
                              with_audio=False),
      batch_size=batch_size, process_index=0, process_count=1, seed=0)
  labels = np.array([int(r['label_index']) for r in source.video_table('train')])
  shards = [(s['offset'], s['count']) for s in source.manifest['splits']['train']['shards']]
  per_shard, shard_expected = class_mix.shard_classes(labels, shards)
  stream = source.train_batches(0)
  per_batch = [len(np.unique(next(stream)['label'])) for _ in range(batches)]
  return {'shard': per_shard, 'shard_expected': shard_expected, 'batch': float(np.mean(per_batch)),
          'batch_min': min(per_batch), 'batch_max': max(per_batch),
          'batch_expected': class_mix.expected_classes(np.bincount(labels).tolist(), batch_size)}


def main() -> None:
  args = _ARGS.parse_args()
  print(f'machine: {machine.cpu()}; defaults: cycle_length '
        f'{pipeline.default_config().cycle_length}, shuffle_buffer '
        f'{pipeline.default_config().shuffle_buffer}; shards of 256')
  print('| dataset (config, batch) | shards | order | classes per shard (random) | '
        'classes per batch, min-max (random) |')
  print('|---|---|---|---|---|')
  for name in args.datasets.split(','):
    videos, classes, batch_size, config = DATASETS[name]
    parsed = class_folder(videos, classes)
    for id_order in (True, False):
      with tempfile.TemporaryDirectory() as tmp:
        write(parsed, tmp, id_order)
        m = measure(tmp, batch_size, args.batches)
        count = len(pipeline.read_manifest(tmp)['splits']['train']['shards'])
      order = 'id (earlier make_records)' if id_order else 'hashed (make_records)'
      print(f'| {name}: {videos} videos, {classes} classes ({config}, {batch_size}) | {count} | '
            f'{order} | {m["shard"]:.1f} ({m["shard_expected"]:.1f}) | {m["batch"]:.1f}, '
            f'{m["batch_min"]}-{m["batch_max"]} ({m["batch_expected"]:.1f}) |')


if __name__ == '__main__':
  main()
