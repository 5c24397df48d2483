r"""Finetuning evaluation over a dataset's folds, with the checkpoint chosen on validation data.

    python -m avssl.main --mode=finetune --config=configs/finetune_ucf101.py --workdir=runs/ft_ucf101

For each records folder of `config.finetune.dirs` (a fold: UCF101/HMDB51 3, ESC-50 5), in
`workdir/fold<i>/`: train the `finetune` method with the shared loop (`avssl.modes.train`,
resumable; a checkpoint per epoch, all kept), restore every checkpoint and evaluate it on
`finetune.val_split`, select the best by `finetune.select_metric` (default video-level top-1; ties:
lower validation loss, then the earlier checkpoint), and only then evaluate that one checkpoint on
`finetune.test_split`. The test split is read once per fold, after the selection, and nothing read
from it feeds back. SeLaVi's release instead reports the best test accuracy over epochs, which
selects on test (`docs/papers_and_releases.md`).

`workdir/finetune.json` has, per fold, the validation results of every checkpoint, the selected step
and its test results; and over folds, each test metric's mean and standard deviation (population,
ddof = 0) with the per-fold values.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from avssl import checkpointing, files, methods, sharding
from avssl.methods import base
from avssl.modes import train
from avssl.data import datasets

RESULTS = 'finetune.json'


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, selects on val and tests every fold of `config.finetune.dirs`; writes and returns the
  results (see the module docstring)."""
  settings = config.finetune
  _check_splits(config)
  dirs = list(settings.dirs) or [config.data.dir]
  folds = []
  for i, directory in enumerate(dirs, start=1):
    logging.info('Finetuning fold %d of %d: %s', i, len(dirs), directory)
    folds.append(finetune_fold(config, directory, files.join(workdir, f'fold{i}')))
  metrics = sorted(folds[0]['test'])
  summary = {}
  for name in metrics:
    values = [fold['test'][name] for fold in folds]
    summary[name] = {'mean': float(np.mean(values)), 'std': float(np.std(values)),
                     'folds': values}
  results = {'selection': {'split': settings.val_split, 'metric': settings.select_metric},
             'test_split': settings.test_split, 'num_folds': len(folds), 'test': summary,
             'folds': folds}
  if jax.process_index() == 0:
    with files.atomic_open(files.join(workdir, RESULTS)) as f:
      json.dump(results, f, indent=1, sort_keys=True)
  name = settings.select_metric
  logging.info('Finetuning over %d folds: test %s %.4f ± %.4f', len(folds), name,
               summary[name]['mean'], summary[name]['std'])
  return results


def finetune_fold(config: ml_collections.ConfigDict, directory: str, workdir: str) -> dict[str, Any]:
  """One fold: train on `directory`'s train split, select on val, test the selected checkpoint."""
  settings = config.finetune
  config = config.copy_and_resolve_references()
  config.data.dir = directory
  config.data.eval_split = settings.val_split  # The loop's own evaluation reads val, never test.
  config.keep_checkpoints = None  # Every checkpoint stays for the selection.
  if config.get('checkpoint_dir'):  # One folder per fold, named as the fold's workdir.
    config.checkpoint_dir = files.join(config.checkpoint_dir, os.path.basename(workdir))
  # Both splits must exist before hours of training; building a source reads only the manifest.
  val_source = _eval_source(config, settings.val_split)
  test_source = _eval_source(config, settings.test_split)
  final = train.train_and_evaluate(config, workdir)

  # The selection restores into the trained state's structure and placement; the method's evaluation
  # is compiled once per model and batch shape, so the loop's and these share it.
  steps_per_epoch = val_source.num_train // config.batch_size
  method = methods.build(config, base.RunContext(sharding.make_mesh(), val_source, steps_per_epoch,
                                                 int(final.step)))
  placement = jax.tree.map(lambda x: x.sharding, final)
  checkpointer = checkpointing.Checkpointer(workdir, every_steps=1, keep=None,
                                            directory=config.get('checkpoint_dir', ''))
  try:
    val = {}
    for step in sorted(checkpointer.all_steps()):
      state = checkpointer.restore(final, placement, step)
      val[step] = method.evaluate(state, val_source.eval_batches())
      logging.info('%s: step %d on %s: %s', workdir, step, settings.val_split, val[step])
    selected = select(val, settings.select_metric)
    state = checkpointer.restore(final, placement, selected)
    test = method.evaluate(state, test_source.eval_batches())  # The one read of test.
    logging.info('%s: selected step %d on %s; %s: %s', workdir, selected, settings.val_split,
                 settings.test_split, test)
  finally:
    checkpointer.close()
  result = {'dir': directory, 'workdir': workdir, 'selected_step': selected,
            'selected_epoch': selected / (val_source.num_train // config.batch_size),
            'val': {str(step): results for step, results in val.items()}, 'test': test}
  if jax.process_index() == 0:
    with files.atomic_open(files.join(workdir, RESULTS)) as f:
      json.dump(result, f, indent=1, sort_keys=True)
  return result


def select(val: dict[int, dict[str, float]], metric: str) -> int:
  """The step with the best `metric` (the highest; the lowest for a loss); ties go to the lower
  `eval_loss`, then to the earlier step."""
  missing = [step for step, results in val.items() if metric not in results]
  if not val or missing:
    raise ValueError(f'cannot select on {metric!r}: no validation results for steps '
                     f'{missing or "(none)"}; is the val split empty?')
  sign = 1.0 if 'loss' in metric else -1.0
  return min(val, key=lambda s: (sign * val[s][metric], val[s].get('eval_loss', 0.0), s))


def _check_splits(config: ml_collections.ConfigDict) -> None:
  settings = config.finetune
  if settings.val_split == settings.test_split:
    raise ValueError(f'config.finetune.val_split and test_split are both {settings.val_split!r}: '
                     'selecting on the test split is what this driver exists to avoid')
  if settings.val_split == config.data.train_split:
    raise ValueError(f'config.finetune.val_split={settings.val_split!r} is the training split; '
                     'select on held-out data (make_records --val_fraction writes a "val" split)')


def _eval_source(config: ml_collections.ConfigDict, split: str) -> datasets.DataSource:
  """The fold's data with `split` as the evaluation split, in `finetune.eval_batch_size` batches."""
  data = config.data.copy_and_resolve_references()
  data.eval_split = split
  source = datasets.build(data, batch_size=config.finetune.eval_batch_size or config.batch_size,
                          process_index=jax.process_index(), process_count=jax.process_count(),
                          seed=config.seed)
  if not source.num_eval:
    raise ValueError(f'{config.data.dir} has no videos in split {split!r}'
                     + (' (make_records --val_fraction writes one)'
                        if split == config.finetune.val_split else ''))
  return source
