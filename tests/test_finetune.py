"""Finetuning: a pretraining run's encoder is copied, the frozen probe stays frozen (weights and BN
statistics), head and backbone learn at their own rates, views are aggregated per video, and the
driver selects on val, reads test once per fold after the selection, and averages the folds."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config, tree_leaves
from avssl import checkpointing, loop, methods, sharding
from avssl.modes import setup as setup_mode
from avssl.data import pipeline
from avssl.modes import finetune as driver
from avssl.methods import finetune as finetune_lib
from avssl.train_state import TrainState

HEAD = f"['{finetune_lib.HEAD}']"


def _assert_same(a, b):
  a, b = tree_leaves(a), tree_leaves(b)
  assert a.keys() == b.keys() and a
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _split(shards, files):
  chosen = [shards[i] for i in files]
  offsets = np.cumsum([0] + [s['count'] for s in chosen])
  return {'count': int(offsets[-1]), 'class_counts': {},
          'shards': [{**s, 'offset': int(o)} for s, o in zip(chosen, offsets)]}


@pytest.fixture(scope='module')
def folds(avsynth_records, tmp_path_factory):
  """Two folds over the avsynth records, each with a 'val' split of whole train shards (16, 16, 16,
  10 videos): fold 1 holds out the last shard, fold 2 the first; 'test' is the records' test split."""
  manifest = pipeline.read_manifest(avsynth_records)
  train_shards = manifest['splits']['train']['shards']
  assert [s['count'] for s in train_shards] == [16, 16, 16, 10]
  dirs = []
  for name, (train_files, val_files) in {'fold1': ([0, 1, 2], [3]),
                                         'fold2': ([1, 2, 3], [0])}.items():
    directory = tmp_path_factory.mktemp(name)
    for entry in os.listdir(avsynth_records):
      if entry.endswith('.tfrecord'):
        os.symlink(os.path.join(avsynth_records, entry), directory / entry)
    splits = {'train': _split(train_shards, train_files), 'val': _split(train_shards, val_files),
              'test': manifest['splits']['test']}
    (directory / pipeline.MANIFEST).write_text(json.dumps({**manifest, 'splits': splits}))
    dirs.append(str(directory))
  return dirs


@pytest.fixture(scope='module')
def pretrained(avsynth_records, tmp_path_factory):
  """A checkpoint laid out as a SeLaVi pretraining run's (the SeLaVi model's variables in a
  `TrainState`, saved by the `Checkpointer`; no optimiser state), with random values for every weight
  and BN statistic, so that none equals a fresh initialisation."""
  workdir = str(tmp_path_factory.mktemp('selavi'))
  config = load_config('selavi_vggsound', 'tiny')  # K = 6 at :tiny.
  config.data.dir = avsynth_records
  method = methods.build(config)
  example = {'video': jnp.zeros((1, 4, 32, 32, 3)), 'audio': jnp.zeros((1, 16, 16, 1))}
  variables = jax.eval_shape(method.init_variables, jax.random.PRNGKey(3), example)
  rng = np.random.default_rng(7)
  fill = lambda x: rng.uniform(0.05, 0.1, x.shape).astype(x.dtype)  # SeLaVi's names and shapes.
  state = TrainState(step=np.int32(1), params=jax.tree.map(fill, variables['params']),
                     batch_stats=jax.tree.map(fill, variables['batch_stats']), opt_state={},
                     rng=np.asarray(jax.random.PRNGKey(0)), method_state={})
  assert {'video', 'audio', 'video_heads', 'audio_heads'} <= set(state.params)
  checkpointer = checkpointing.Checkpointer(workdir, every_steps=1, keep=1)
  checkpointer.maybe_save(state, 1, final=True)
  checkpointer.close()
  return workdir, state


def _tiny(records, arg=''):
  config = load_config('finetune_ucf101', ','.join(filter(None, ['tiny', arg])))
  config.data.dir = records
  config.finetune.dirs = (records,)
  return config


@pytest.fixture(scope='module')
def frozen_run(folds, pretrained, tmp_path_factory):
  """The frozen probe set up from the pretraining run (state as set up, before any step)."""
  config = _tiny(folds[0], 'frozen')
  config.init_from = pretrained[0]
  run = setup_mode.setup(config, str(tmp_path_factory.mktemp('frozen')))
  initial = jax.tree.map(np.asarray, (run.state.params, run.state.batch_stats))
  yield run, initial
  run.checkpointer.close()


def test_init_from_copies_the_pretrained_encoder_and_starts_a_fresh_orthogonal_head(
    frozen_run, pretrained):
  (params, batch_stats), saved = frozen_run[1], pretrained[1]
  _assert_same(params['video'], saved.params['video'])
  _assert_same(batch_stats['video'], saved.batch_stats['video'])
  assert set(params) == {'video', finetune_lib.HEAD}  # The SeLaVi heads have no place here.
  head = params[finetune_lib.HEAD]
  assert head['kernel'].shape == (16, 6)  # The small encoder's 16-d feature → 6 avsynth classes.
  np.testing.assert_allclose(head['kernel'].T @ head['kernel'], np.eye(6), atol=1e-5)
  np.testing.assert_array_equal(head['bias'], 0.0)


def test_frozen_probe_keeps_backbone_weights_and_statistics_bit_identical(frozen_run, pretrained):
  run, (params, _) = frozen_run
  saved = pretrained[1]
  assert run.config.optimizer.lr_multipliers.video == 0.0
  step, batches = loop.make_train_step(run), run.data.train_batches(0)
  state = run.state
  for _ in range(3):
    state, metrics = step(state, sharding.to_global(next(batches), run.mesh))
  assert np.isfinite(float(metrics['loss'])) and float(metrics['grad_norm']) > 0
  _assert_same(state.params['video'], saved.params['video'])
  _assert_same(state.batch_stats['video'], saved.batch_stats['video'])
  head = tree_leaves(params[finetune_lib.HEAD])
  assert all(not np.array_equal(head[k], v) for k, v in tree_leaves(state.params[finetune_lib.HEAD]).items())

  config = run.config.copy_and_resolve_references()
  config.optimizer.lr_multipliers.video = 0.1  # Weight decay would still move a "frozen" encoder.
  with pytest.raises(ValueError, match='lr_multipliers.video=0'):
    finetune_lib.Finetune(config)


def test_head_and_backbone_learning_rates_differ_by_the_configured_factor(folds, tmp_path):
  config = _tiny(folds[0])
  assert config.optimizer.lr_multipliers.video == 0.1
  assert (config.schedule.base_lr, config.optimizer.weight_decay) == (0.0025, 5e-3)
  run = setup_mode.setup(config, str(tmp_path))
  batch = sharding.to_global(next(run.data.train_batches(0)), run.mesh)
  state = run.state

  @jax.jit
  def grads_and_updates(state, batch):
    grads = jax.grad(lambda p: run.method.loss(p, state, batch, state.step_rng())[0])(state.params)
    return grads, run.tx.update(grads, state.opt_state, state.params)[0]

  grads, updates = jax.tree.map(np.asarray, grads_and_updates(state, batch))
  params, grads, updates = tree_leaves(state.params), tree_leaves(grads), tree_leaves(updates)
  lr, wd = float(run.learning_rate(0)), 5e-3
  assert lr == pytest.approx(0.0025)
  assert any(k.startswith("['video']") for k in params) and any(k.startswith(HEAD) for k in params)
  for key in params:
    factor = 0.1 if key.startswith("['video']") else 1.0
    # First SGD step: the momentum trace is the gradient plus the (coupled) weight decay.
    expected = -lr * factor * (grads[key] + wd * params[key])
    np.testing.assert_allclose(updates[key], expected, rtol=1e-5, atol=1e-12, err_msg=key)

  # One view per example (the training batch's shape): video level is clip level.
  host = {k: v for k, v in next(run.data.train_batches(0)).items() if k in ('video', 'label')}
  results = run.method.evaluate(state, iter([{**host, "mask": np.ones(16, np.float32)}]))
  assert results['num_videos'] == 16 and results['accuracy_video'] == results['accuracy_clip']
  run.checkpointer.close()


def test_views_are_aggregated_per_video_by_logits_or_softmax():
  # One video, three views: view 1 strongly says class 0, views 2 and 3 weakly say class 1.
  logits = jnp.asarray([[[3.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
                        [[0.0, 9.0], [0.0, 9.0], [0.0, 9.0]]])  # Row 2 is padding.
  labels, mask = jnp.asarray([0, -1]), jnp.asarray([1.0, 0.0])
  by_logits = finetune_lib.view_accuracies(logits, labels, mask, 'logits')
  by_softmax = finetune_lib.view_accuracies(logits, labels, mask, 'softmax')
  assert float(by_logits['video_top1']) == 1.0  # Mean logits (1, 2/3): class 0.
  assert float(by_softmax['video_top1']) == 0.0  # Mean probabilities (0.497, 0.503): class 1.
  assert float(by_logits['clip_top1']) == pytest.approx(1 / 3)
  assert float(by_logits['video_top5']) == 1.0 and float(by_logits['count']) == 1.0


def test_select_prefers_the_metric_then_the_loss_then_the_earlier_step():
  val = {10: {'accuracy_video': 0.5, 'eval_loss': 1.0}, 20: {'accuracy_video': 0.7, 'eval_loss': 2.0},
         30: {'accuracy_video': 0.7, 'eval_loss': 1.5}, 40: {'accuracy_video': 0.7, 'eval_loss': 1.5}}
  assert driver.select(val, 'accuracy_video') == 30
  assert driver.select(val, 'eval_loss') == 10  # A loss is minimised.
  with pytest.raises(ValueError, match='no validation results'):
    driver.select({10: {}}, 'accuracy_video')


def test_driver_refuses_to_select_on_test_or_without_a_val_split(avsynth_records, tmp_path):
  config = _tiny(avsynth_records)
  config.finetune.val_split = 'test'
  with pytest.raises(ValueError, match='selecting on the test split'):
    driver.finetune(config, str(tmp_path))
  config.finetune.val_split = 'val'  # The avsynth records have only train and test.
  with pytest.raises(ValueError, match="no videos in split 'val'.*--val_fraction"):
    driver.finetune(config, str(tmp_path))
  assert not (tmp_path / 'fold1' / 'checkpoints').exists()  # Refused before any training.


def test_driver_selects_on_val_reads_test_once_per_fold_and_averages(folds, monkeypatch, tmp_path):
  # Scores made so that val prefers the first checkpoint (step 2) and test the last (step 4): a
  # driver that looked at test to choose would report 0.9, not 0.3.
  fake = {('val', 2): 0.8, ('val', 4): 0.2, ('test', 2): 0.3, ('test', 4): 0.9}
  reads = []
  real_batches, real_evaluate = pipeline.RecordSource.eval_batches, finetune_lib.Finetune.evaluate

  def eval_batches(self):
    reads.append(self.config.eval_split)
    return real_batches(self)

  def evaluate(self, state, batches):
    results = real_evaluate(self, state, batches)
    results['real_accuracy_video'] = results['accuracy_video']
    results['accuracy_video'] = fake[reads[-1], int(state.step)]
    return results

  monkeypatch.setattr(pipeline.RecordSource, 'eval_batches', eval_batches)
  monkeypatch.setattr(finetune_lib.Finetune, 'evaluate', evaluate)
  config = _tiny(folds[0])
  config.finetune.dirs = tuple(folds)
  config.data.normalize_on_device = True  # Training and every evaluation read uint8 video.
  results = driver.finetune(config, str(tmp_path))

  # Per fold: val for every checkpoint (and the loop's own end-of-training evaluation), then test
  # once, last (the loop's evaluation reads val too: config.data.eval_split is set to val).
  assert set(reads) == {'val', 'test'} and reads[-1] == 'test' and reads.count('test') == 2
  first = reads.index('test')
  assert len(reads[:first]) >= 2 and len(reads[first + 1:-1]) >= 2
  assert [f['selected_step'] for f in results['folds']] == [2, 2]
  assert [f['test']['accuracy_video'] for f in results['folds']] == [0.3, 0.3]
  for fold in results['folds']:
    assert sorted(fold['val']) == ['2', '4']
    assert fold['test']['num_videos'] == 6  # The test split's videos, padding excluded.
    assert 0.0 <= fold['test']['accuracy_clip'] <= 1.0
  clip = [f['test']['accuracy_clip'] for f in results['folds']]
  assert results['test']['accuracy_clip'] == {'mean': pytest.approx(np.mean(clip)),
                                              'std': pytest.approx(np.std(clip)), 'folds': clip}
  assert results['test']['accuracy_video']['mean'] == pytest.approx(0.3)
  with open(tmp_path / driver.RESULTS) as f:
    assert json.load(f)['num_folds'] == 2
  assert (tmp_path / 'fold2' / driver.RESULTS).exists()
