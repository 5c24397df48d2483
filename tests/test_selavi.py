"""SeLaVi end to end on real (tiny) avsynth records, on 8 simulated devices."""

import csv
import glob
import itertools
import os
import pathlib
import shutil

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from avssl import checkpointing, loop, sharding
from avssl.data import on_device
from avssl.modes import label as label_mode, setup as setup_mode, train
from avssl.methods import selavi
from avssl.reporting import plots
from conftest import load_config, state_leaves


def _tiny(records, name='selavi_vggsound', arg='tiny'):
  config = load_config(name, arg)
  config.data.dir = records
  return config


def test_label_updates_follow_the_prior_and_resume_identically(avsynth_records, tmp_path,
                                                               monkeypatch):
  config = _tiny(avsynth_records)  # 4 steps; label updates at steps 0 and 1.
  config.checkpoint_every_steps, config.keep_checkpoints = 1, 5
  config.profile_start_step, config.profile_num_steps = 2, 1
  method = selavi.SeLaVi(config)
  assert method.label_update_steps(4, 3) == [0, 1]
  solves = []  # Each group's (log r, warm start) of each label update.
  solve = selavi.sk.sinkhorn_heads

  def recording(log_p, lam, **kwargs):
    solves.append((np.log(kwargs['col_marginals']), kwargs['init_log_alphas']))
    return solve(log_p, lam, **kwargs)

  monkeypatch.setattr(selavi.sk, 'sinkhorn_heads', recording)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'a'))
  monkeypatch.undo()
  # Each label update's time and throughput are logged, and the ETA and the time shares with them;
  # step 2 was traced into the workdir.
  scalars = plots.read_scalars(str(tmp_path / 'a'))
  assert set(scalars['label_update/seconds']) == {0, 1}
  assert all(v > 0 for v in scalars['label_update/clips_per_sec'].values())
  for tag in ('eta_hours', 'clips_per_second_per_device', 'time_share/label_update',
              'time_share/data', 'time_share/step'):
    assert tag in scalars, tag
  assert glob.glob(str(tmp_path / 'a' / 'profile' / '**' / '*.xplane.pb'), recursive=True)
  # Every training video has a valid cluster in every head.
  labels = np.asarray(uninterrupted.method_state['self_labels'])
  assert labels.shape == (58, config.selavi.num_heads) and labels.min() >= 0
  assert labels.max() < config.selavi.num_clusters

  # A checkpoint holds the update of its own step (saved right after it), and says so, with each
  # head's cluster potentials for the next update's warm start.
  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'a'), every_steps=1, keep=5)
  potentials = []
  for step, updates in ((0, 1), (1, 2), (2, 2)):
    saved = checkpointer.restore_raw(step)
    assert set(saved['method_state']) == {'self_labels', 'prior', 'updates', 'marginal_error',
                                          'sinkhorn_potential'}
    assert int(saved['method_state']['updates']) == updates
    assert int(saved['updated_at']) == min(step, 1)
    assert float(np.max(saved['method_state']['marginal_error'])) <= config.selavi.sinkhorn_tol
    potentials.append(saved['method_state']['sinkhorn_potential'])
  checkpointer.close()
  assert potentials[0].shape == (config.selavi.num_heads, config.selavi.num_clusters)
  assert np.isfinite(potentials[0]).all() and np.ptp(potentials[0], axis=1).min() > 0
  assert not np.array_equal(potentials[0], potentials[1])
  # The first update starts cold; the second from the first's potentials plus its own log r, each
  # group (one head each here) from its own head's.
  assert len(solves) == 4 and solves[0][1] is None and solves[1][1] is None
  warm = [np.asarray(init) - log_r for log_r, init in solves[2:]]
  matched = [int(np.abs(potentials[0] - w).max(axis=1).argmin()) for w in warm]
  assert sorted(matched) == [0, 1]
  for head, w in zip(matched, warm):
    np.testing.assert_allclose(w[0], potentials[0][head], atol=1e-5)

  # A run interrupted after step 0 (its checkpoint is all that is left) resumes to the same end: its
  # label update at step 1 starts from the potentials in that checkpoint.
  shutil.copytree(tmp_path / 'a' / 'checkpoints' / '0', tmp_path / 'b' / 'checkpoints' / '0')
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))
  a, b = state_leaves(uninterrupted), state_leaves(resumed)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _agreement(log_probs, mask):
  keep = np.asarray(mask) > 0
  v = np.asarray(log_probs['video']).argmax(-1)[:, keep]
  a = np.asarray(log_probs['audio']).argmax(-1)[:, keep]
  return (v == a).mean(axis=1)


def test_alignment_raises_video_audio_agreement_on_random_weights(avsynth_records, tmp_path):
  config = _tiny(avsynth_records)
  config.selavi.num_clusters = 6
  run = setup_mode.setup(config, str(tmp_path))
  heads = tuple(range(config.selavi.num_heads))
  log_probs, _, mask = run.method.dataset_log_probs(run.state, run.data.dataset_batches(), run.mesh,
                                                    heads)
  before = _agreement(log_probs, mask)
  state, aligned = run.method._align(run.state, log_probs, mask, heads, run.mesh)  # pylint: disable=protected-access
  after = _agreement(aligned, mask)
  assert np.all(after >= before) and after.mean() > before.mean()
  # The permutation was applied to the audio head itself: a new pass reproduces the aligned outputs.
  again, _, _ = run.method.dataset_log_probs(state, run.data.dataset_batches(), run.mesh, heads)
  np.testing.assert_allclose(np.asarray(again['audio']), np.asarray(aligned['audio']), atol=1e-5)
  run.checkpointer.close()


def test_labels_csv_matches_the_records_by_video_id(avsynth_records, selavi_workdir):
  tmp_path = pathlib.Path(selavi_workdir)
  config = _tiny(avsynth_records)
  config.label.save_probs = True
  config.data.normalize_on_device = True  # The labelling pass reads uint8 video (a float32 run's).
  label_mode.label(config, str(tmp_path))
  probs = np.load(tmp_path / 'labels_video_audio_probs.npy')
  assert probs.shape == (58, config.selavi.num_heads, config.selavi.num_clusters)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  with open(os.path.join(tmp_path, 'labels.csv')) as f:
    rows = list(csv.DictReader(f))
  with open(os.path.join(avsynth_records, 'train.csv')) as f:
    videos = {r['video_id']: r for r in csv.DictReader(f)}
  assert len(rows) == len(videos) == 58
  assert {r['video_id'] for r in rows} == set(videos)
  for row in rows:
    assert row['source'] == videos[row['video_id']]['source']
    assert row['label'] == videos[row['video_id']]['label_name']
    for h in range(config.selavi.num_heads):
      assert 0 <= int(row[f'video + audio/head{h}']) < config.selavi.num_clusters
      assert 0 < float(row[f'video + audio/head{h}/confidence']) <= 1
      assert 0 <= int(row[f'self-labels/head{h}']) < config.selavi.num_clusters
  for i, row in enumerate(rows):
    assert int(row['video + audio/head0']) == probs[i, 0].argmax()
  # Self-labels are the state's table, by dataset index (the rows are in index order).
  state = setup_mode.setup(config, str(tmp_path))
  table = np.asarray(state.state.method_state['self_labels'])
  state.checkpointer.close()
  np.testing.assert_array_equal([[int(r[f'self-labels/head{h}']) for h in range(table.shape[1])]
                                 for r in rows], table)
  assert not glob.glob(os.path.join(tmp_path, '*.tmp'))


def test_interrupted_label_run_leaves_no_partial_file(avsynth_records, selavi_workdir, monkeypatch):
  tmp_path = pathlib.Path(selavi_workdir)
  config = _tiny(avsynth_records)
  (tmp_path / 'labels.csv').write_text('previous labels\n')
  class Interrupted(Exception):
    pass

  real_writer = csv.writer

  def failing_writer(f):
    writer = real_writer(f)

    class Writer:
      rows = 0

      def writerow(self, row):
        Writer.rows += 1
        if Writer.rows == 10:  # The disk fills up, or the job is killed, mid-file.
          raise Interrupted()
        writer.writerow(row)
    return Writer()

  monkeypatch.setattr(label_mode.csv, 'writer', failing_writer)
  with pytest.raises(Interrupted):
    label_mode.label(config, str(tmp_path))
  assert (tmp_path / 'labels.csv').read_text() == 'previous labels\n'
  assert not glob.glob(os.path.join(tmp_path, '*.tmp'))


def test_finetuning_starts_from_another_runs_encoders(avsynth_records, tmp_path):
  source = _tiny(avsynth_records)
  source.total_steps = 1
  trained = train.train_and_evaluate(source, str(tmp_path / 'vggsound'))
  config = _tiny(avsynth_records)
  config.selavi.num_clusters = 4  # Another dataset's K: the heads' last layers cannot be reused.
  config.init_from = str(tmp_path / 'vggsound')
  run = setup_mode.setup(config, str(tmp_path / 'finetune'))
  np.testing.assert_array_equal(run.state.params['video']['spatial0']['kernel'],
                                trained.params['video']['spatial0']['kernel'])
  np.testing.assert_array_equal(run.state.batch_stats['audio']['conv0_bn']['mean'],
                                trained.batch_stats['audio']['conv0_bn']['mean'])
  assert run.state.params['video_heads']['heads']['out']['kernel'].shape[-1] == 4
  assert int(run.state.step) == 0
  run.checkpointer.close()


def test_accel_trains_bfloat16_remat_on_uint8_inputs_with_float32_parameters_and_loss(
    avsynth_records, tmp_path):
  """`:tiny,accel` (`configs/common.py`): convolutions and matmuls run in bfloat16
  (`model.dtype`, `avssl/models/common.py`) inside rematerialised blocks (`model.remat='blocks'`),
  on video sent as uint8 and normalised in the step (`data.normalize_on_device`), while parameters,
  BatchNorm statistics and the logits that the loss and Sinkhorn read stay float32; the model is
  initialised from the float32 inputs, and its training steps give finite losses. (The loop's own
  steps, without its label updates and evaluation, to stay fast; `train_and_evaluate` adds nothing
  dtype-specific.)"""
  config = _tiny(avsynth_records, arg='tiny,accel')
  assert (config.model.dtype, config.model.remat, config.data.normalize_on_device) \
      == ('bfloat16', 'blocks', True)
  run = setup_mode.setup(config, str(tmp_path))
  assert run.example['video'].dtype == np.uint8 and run.example['audio'].dtype == np.float32
  sent = sharding.to_global(next(run.data.train_batches(0)), run.mesh)
  assert sent['video'].dtype == jnp.uint8
  batch = on_device.normalize(sent, config.data)
  jaxpr = jax.make_jaxpr(lambda v: run.method.model.apply(v, batch['video'], batch['audio'],
                                                          train=False))(
      {'params': run.state.params, 'batch_stats': run.state.batch_stats})
  convs = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == 'conv_general_dilated']
  assert convs and all(e.invars[0].aval.dtype == jnp.bfloat16 for e in convs)
  assert any(e.primitive.name == 'remat2' for e in _equations(jaxpr.jaxpr))  # jax.checkpoint
  assert {x.dtype for x in jax.tree.leaves(jaxpr.out_avals)} == {jnp.dtype(jnp.float32)}

  step, state, losses = loop.make_train_step(run), run.state, []
  for batch in itertools.islice(run.data.train_batches(0), 2):
    state, metrics = step(state, sharding.to_global(batch, run.mesh))
    losses.append(float(metrics['loss']))
  run.checkpointer.close()
  assert np.all(np.isfinite(losses)) and losses[-1] != losses[0]
  assert {x.dtype for x in jax.tree.leaves((state.params, state.batch_stats))} \
      == {jnp.dtype(jnp.float32)}


def _equations(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs nested in it (remat, pjit, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _equations(sub)


def test_cross_targets_train_each_modality_on_the_other_modalitys_labels(avsynth_records, tmp_path,
                                                                          monkeypatch):
  """`targets='cross'`: each group solves the shared Eq. 6 average and each modality alone; the
  video heads learn the labels solved from the audio and the audio heads those from the video."""
  config = _tiny(avsynth_records)
  config.selavi.targets = 'cross'
  run = setup_mode.setup(config, str(tmp_path))
  solves = []
  solve = selavi.sk.sinkhorn_heads

  def recording(log_p, lam, **kwargs):
    solves.append((np.asarray(log_p), solve(log_p, lam, **kwargs)))
    return solves[-1][1]

  monkeypatch.setattr(selavi.sk, 'sinkhorn_heads', recording)
  state = run.method.label_update(run.state, run.data, run.mesh)
  assert len(solves) == 3 * config.selavi.num_groups
  for shared, video, audio in zip(solves[::3], solves[1::3], solves[2::3]):
    np.testing.assert_allclose(shared[0], (video[0] + audio[0]) / 2, atol=1e-6)
    assert not np.allclose(video[0], audio[0])
  cross = np.asarray(state.method_state['cross_labels'])
  table = np.asarray(state.method_state['self_labels'])
  assert cross.shape == (2, 58, config.selavi.num_heads) and not np.array_equal(cross[0], cross[1])
  for labels in (cross[0], cross[1], table):  # Every video got a label from every solve.
    assert labels.max() < config.selavi.num_clusters and len(np.unique(labels)) > 1

  batch = sharding.to_global(next(run.data.train_batches(0)), run.mesh)
  rng = jax.random.PRNGKey(3)
  loss, _ = run.method.loss(state.params, state, batch, rng)
  outputs, _ = run.method._apply({'params': state.params, 'batch_stats': state.batch_stats}, batch,  # pylint: disable=protected-access
                                 train=True, rngs={'dropout': rng}, mutable=['batch_stats'])
  index = np.asarray(batch['index'])
  expected = []
  for m, source in (('video', 1), ('audio', 0)):
    log_q = jax.nn.log_softmax(np.asarray(outputs[m]), axis=-1)
    targets = cross[source][index].T  # [heads, B]
    expected.append(-np.take_along_axis(np.asarray(log_q), targets[..., None], -1).mean())
  np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-5)
  run.checkpointer.close()


def test_modality_weights_weight_eq_6():
  config = load_config('selavi_vggsound', 'tiny')
  log_probs = {'video': jnp.log(jnp.array([[0.7, 0.3]])), 'audio': jnp.log(jnp.array([[0.2, 0.8]]))}
  method = selavi.SeLaVi(config)
  np.testing.assert_allclose(method._fuse(log_probs), (log_probs['video'] + log_probs['audio']) / 2)  # pylint: disable=protected-access
  config.selavi.modality_weights = (3.0, 1.0)
  np.testing.assert_allclose(selavi.SeLaVi(config)._fuse(log_probs),  # pylint: disable=protected-access
                             0.75 * log_probs['video'] + 0.25 * log_probs['audio'], rtol=1e-6)
  config.selavi.modality_weights = (0.0, 0.0)
  with pytest.raises(ValueError, match='modality_weights'):
    selavi.SeLaVi(config)


def test_overrelaxation_outside_its_range_is_refused_naming_the_key():
  config = load_config('selavi_vggsound', 'tiny')
  config.selavi.sinkhorn_overrelaxation = 2.0
  with pytest.raises(ValueError, match='config.selavi.sinkhorn_overrelaxation=2.0'):
    selavi.SeLaVi(config)
