"""A finetune on class-sorted shards against the same clips in make_records' hashed order.

    python -m avssl.data_prep.make_synthetic --output_dir=runs/demo/avsynth --num_classes=10
    python benchmarks/shard_order_finetune.py --avsynth=runs/demo/avsynth --workdir=runs/shard_order

make_records orders each split by a hash of the video ids before cutting shards; an earlier version cut
them in id order, and class-foldered ids sort by class, so each shard held one or two classes. This
asks whether that order still reaches the model: `--classes` classes of an avsynth folder (the first
`--train_per_class` and `--test_per_class` clips of each) go through the real `make_records.run` twice
into shards of `--per_shard` clips, once as it orders them and once in id order (its `shard_order_key`
replaced by the id, as `benchmarks/class_mix.py` does), and a video encoder is trained from scratch
on each (the `finetune` method of `configs/finetune_ucf101.py` at the demo's encoder and input sizes,
its schedule's shape over `--epochs`), once per seed. Printed: distinct classes per shard in each order
(and what random shards would hold), then each run's video-level top-1 on the test clips.

avsynth's picture tells its classes apart only in pairs (two classes share each look), so a video
network's accuracy is capped near 50 %; both orders are measured against that same cap.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import shutil
import unittest.mock

import numpy as np

import machine
from avssl import config_lib
from avssl.data import class_mix, pipeline
from avssl.data_prep import annotations, make_records
from avssl.modes import train

FINETUNE = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'finetune_ucf101.py'
_ARGS = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
_ARGS.add_argument('--avsynth', default='runs/demo/avsynth', help='a make_synthetic output folder')
_ARGS.add_argument('--workdir', default='runs/shard_order', help='clips, records and runs go here')
_ARGS.add_argument('--classes', type=int, default=8)
_ARGS.add_argument('--train_per_class', type=int, default=60)
_ARGS.add_argument('--test_per_class', type=int, default=20)
_ARGS.add_argument('--per_shard', type=int, default=32, help='clips per shard')
_ARGS.add_argument('--epochs', type=float, default=12.0)
_ARGS.add_argument('--seeds', default='0,1')


def subset(avsynth: str, output: str, classes: int, per_class: dict[str, int]) -> None:
  """Copies the first `per_class[split]` clips of the first `classes` class folders of each split."""
  for split, count in per_class.items():
    names = sorted(os.listdir(os.path.join(avsynth, split)))[:classes]
    for name in names:
      source, target = os.path.join(avsynth, split, name), os.path.join(output, split, name)
      os.makedirs(target, exist_ok=True)
      for clip in sorted(os.listdir(source))[:count]:
        shutil.copy(os.path.join(source, clip), target)


def write_records(clips: str, output: str, per_shard: int, id_order: bool) -> None:
  """The real make_records conversion with the demo's settings; `id_order` cuts shards by id."""
  if os.path.exists(os.path.join(output, make_records.MANIFEST)):
    return
  settings = make_records.Settings(fps=10.0, short_side=64, sample_rate=16000, min_duration=1.0,
                                   flow=False, audio_only=False, require_audio=True,
                                   jpeg_quality=90, examples_per_shard=per_shard)
  parsed = annotations.folder(clips)
  if id_order:
    with unittest.mock.patch.object(make_records, 'shard_order_key', lambda i, seed: i):
      make_records.run(parsed, output, settings, dataset='folder', workers=2)
  else:
    make_records.run(parsed, output, settings, dataset='folder', workers=2)


def classes_per_shard(directory: str) -> tuple[float, float]:
  manifest = pipeline.read_manifest(directory)
  source = pipeline.RecordSource(pipeline.default_config(dir=directory), batch_size=1,
                                 process_index=0, process_count=1, seed=0)
  labels = np.array([int(r['label_index']) for r in source.video_table('train')])
  shards = [(s['offset'], s['count']) for s in manifest['splits']['train']['shards']]
  return class_mix.shard_classes(labels, shards)


def finetune_config(records: str, epochs: float, seed: int):
  """The finetune protocol's model and augmentations at the demo's sizes, trained from scratch with
  one learning rate, evaluated on 'test' (2 clips per video)."""
  config = config_lib.load(f'{FINETUNE}:records={records},folds=1,init_from=')
  importlib.import_module('configs.common').demo_inputs(config)  # Importable once loaded.
  config.seed = seed
  config.batch_size = 32
  config.total_epochs = epochs
  config.checkpoint_every_epochs, config.keep_checkpoints = epochs, 1
  config.data.update(dict(eval_split='test', eval_clips=2, eval_crops=1))
  config.evaluation.batch_size = 32
  config.optimizer.weight_decay = 5e-4
  config.optimizer.lr_multipliers.video = 1.0  # From scratch: the encoder learns as fast as the head.
  # The protocol's shape (warm-up ×8 over 2 of 12 epochs, ×0.05 at 6 and 10) over `epochs`.
  config.schedule.update(dict(base_lr=0.1 / 8, warmup_epochs=epochs / 6,
                              decay_epochs=(epochs / 2, epochs * 5 / 6)))
  return config


def main() -> None:
  args = _ARGS.parse_args()
  print(f'machine: {machine.cpu()}; {machine.jax_devices()}')
  clips = os.path.join(args.workdir, 'clips')
  if not os.path.exists(clips):
    subset(args.avsynth, clips, args.classes,
           {'train': args.train_per_class, 'test': args.test_per_class})
  results = {}
  for order in ('hashed', 'id'):
    records = os.path.join(args.workdir, f'records_{order}')
    write_records(clips, records, args.per_shard, id_order=order == 'id')
    per_shard, expected = classes_per_shard(records)
    print(f'{order} order: {per_shard:.1f} classes per shard (random shards: {expected:.1f})')
    for seed in map(int, args.seeds.split(',')):
      workdir = os.path.join(args.workdir, f'run_{order}_{seed}')
      if not os.path.exists(os.path.join(workdir, 'eval.json')):
        train.train_and_evaluate(finetune_config(records, args.epochs, seed), workdir)
      with open(os.path.join(workdir, 'eval.json')) as f:
        results[order, seed] = json.load(f)['accuracy_video']
  print('| shard order | ' + ' | '.join(f'seed {s}' for s in args.seeds.split(',')) +
        ' | mean |\n|---|' + '---|' * (len(args.seeds.split(',')) + 1))
  for order in ('hashed', 'id'):
    values = [v for (o, _), v in results.items() if o == order]
    print(f'| {order} | ' + ' | '.join(f'{100 * v:.1f}' for v in values) +
          f' | {100 * np.mean(values):.1f} |')


if __name__ == '__main__':
  main()
