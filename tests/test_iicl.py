"""IICL: the losses against numpy versions of Eq. 3-6 (pairwise: over explicit pairs), the global-batch
loss on 8 devices equal to one device's, a pair's score blind to the other pairs (no shortcut), the
two-stage switch at the configured step and a resume across it, labels.csv and the Table II / III
evaluation."""

import functools
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from avssl import checkpointing, optim, passes, sharding
from avssl.modes import train
from avssl.data import datasets, synthetic
from avssl.methods import base, iicl
from avssl.models import co_attention
from avssl.train_state import TrainState
from conftest import load_config, random_like, state_leaves

TAU = 0.5


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_nce(a, b, tau, intra):
  """Eq. 3 (or 5 on columns) written out anchor by anchor in float64, both directions."""
  a, b = _unit(np.asarray(a, np.float64)), _unit(np.asarray(b, np.float64))

  def direction(x, y):
    losses = []
    for i in range(len(x)):
      denominator = sum(np.exp(x[i] @ y[j] / tau) for j in range(len(y)))
      if intra:  # CC's extra negatives: the other rows of the anchor's own modality.
        denominator += sum(np.exp(x[i] @ x[j] / tau) for j in range(len(x)) if j != i)
      losses.append(-np.log(np.exp(x[i] @ y[i] / tau) / denominator))
    return np.mean(losses)

  return direction(a, b), direction(b, a)


def _numpy_entropy(y):
  """H of one modality's cluster marginal P(ỹ_i) = Σ_j Y_ji / ‖Y‖₁ (Eq. 6), 0 log 0 = 0."""
  p = np.asarray(y, np.float64).sum(axis=0) / np.abs(np.asarray(y, np.float64)).sum()
  return -sum(q * np.log(q) for q in p if q > 0)


def _fixed_outputs():
  rng = np.random.default_rng(0)
  softmax = lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
  return {'z_video': rng.standard_normal((6, 5)), 'z_audio': rng.standard_normal((6, 5)),
          'y_video': softmax(2 * rng.standard_normal((6, 4))),
          'y_audio': softmax(2 * rng.standard_normal((6, 4)))}


@pytest.mark.parametrize('intra', [False, True])
def test_losses_equal_numpy_eq_3_to_6(intra):
  outputs = _fixed_outputs()
  terms = iicl.losses({k: jnp.asarray(v, jnp.float32) for k, v in outputs.items()},
                      tau_ins=TAU, tau_clu=TAU, intra_negatives=intra)
  ins_v, ins_a = _numpy_nce(outputs['z_video'], outputs['z_audio'], TAU, intra)
  clu_v, clu_a = _numpy_nce(outputs['y_video'].T, outputs['y_audio'].T, TAU, intra)
  entropy = _numpy_entropy(outputs['y_video']) + _numpy_entropy(outputs['y_audio'])
  expected = {'loss_ins_video': ins_v, 'loss_ins_audio': ins_a, 'loss_ins': ins_v + ins_a,  # Eq. 4.
              'loss_clu_video': clu_v, 'loss_clu_audio': clu_a, 'entropy': entropy,
              'loss_clu': clu_v + clu_a - entropy}  # Eq. 6.
  assert set(terms) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(float(terms[name]), value, rtol=2e-6, err_msg=name)


def test_empty_cluster_gives_finite_entropy_and_gradient():
  y = jnp.asarray([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
  np.testing.assert_allclose(float(iicl.marginal_entropy(y)), _numpy_entropy(y), rtol=1e-6)
  assert np.isfinite(np.asarray(jax.grad(iicl.marginal_entropy)(y))).all()


def _config():
  """`iicl_kinetics:tiny` (4 steps, co-training from step 2) on in-memory synthetic clips."""
  config = load_config('iicl_kinetics', 'tiny')
  config.data = synthetic.default_config(num_train=32, num_eval=16, num_classes=4)
  return config


@functools.lru_cache(maxsize=None)
def _toy(devices=8):
  """The tiny method on the first `devices` devices, its synthetic data and a random initial state
  (cached: tests share compiles)."""
  config = _config()
  data = datasets.build(config.data, batch_size=config.batch_size, process_index=0,
                        process_count=1, seed=0)
  mesh = sharding.make_mesh(jax.devices()[:devices])
  method = iicl.IICL(config, base.RunContext(mesh, data, data.steps_per_epoch, config.total_steps))
  variables = random_like(jax.eval_shape(method.init_variables, jax.random.PRNGKey(0),
                                          next(data.train_batches(0))))
  tx = optim.optimizer(config.optimizer, optax.constant_schedule(5e-4))
  state = TrainState(jnp.zeros((), jnp.int32), variables['params'], variables['batch_stats'],
                     tx.init(variables['params']), jax.random.PRNGKey(1),
                     method.init_method_state(data.num_train))
  return method, data, state


@functools.lru_cache(maxsize=None)
def _jitted_loss(devices):
  method, _, _ = _toy(devices)
  mesh = method.context.mesh
  replicated = sharding.replicated(mesh)
  loss = jax.jit(method.loss, in_shardings=(replicated, replicated, sharding.batch_sharded(mesh),
                                            replicated))
  return mesh, loss


def _loss_at(step, devices=8):
  method, data, state = _toy(devices)
  mesh, loss = _jitted_loss(devices)
  state = jax.device_put(state.replace(step=jnp.asarray(step, jnp.int32)),
                         sharding.replicated(mesh))
  batch = sharding.to_global(next(data.train_batches(0)), mesh)
  value, out = loss(state.params, state, batch, state.step_rng())
  return float(value), {k: float(v) for k, v in out.metrics.items()}, out.batch_stats, method


def test_global_batch_loss_on_eight_devices_equals_one_device():
  one, one_metrics, one_stats, _ = _loss_at(5, devices=1)
  eight, eight_metrics, eight_stats, _ = _loss_at(5, devices=8)
  np.testing.assert_allclose(eight, one, rtol=1e-5)
  for name, value in one_metrics.items():
    np.testing.assert_allclose(eight_metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  for a, b in zip(jax.tree.leaves(one_stats), jax.tree.leaves(eight_stats)):  # Synchronised BN.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def _numpy_pairwise_nce(scores, tau):
  """Eq. 3 over explicit pair scores in float64: video i's positive s_ii against its row, audio j's
  s_jj against its column."""
  s = np.asarray(scores, np.float64) / tau
  video = np.mean([-np.log(np.exp(s[i, i]) / np.exp(s[i]).sum()) for i in range(len(s))])
  audio = np.mean([-np.log(np.exp(s[j, j]) / np.exp(s[:, j]).sum()) for j in range(len(s))])
  return video, audio


def test_pairwise_loss_equals_numpy_eq_3_over_explicit_pairs():
  """The 8-device L_ins against Eq. 3 in float64 over the N² pair scores, each pair put through the
  co-attention and the instance heads on its own; the blocked, rematerialised score matrix against
  the same pairs (float32 on both sides: 1e-5)."""
  method, data, state = _toy()
  assert method.pairwise
  _, metrics, _, _ = _loss_at(1)
  batch = next(data.train_batches(0))
  model, n = method.model, batch['video'].shape[0]

  @jax.jit
  def streams(params, batch_stats, video, audio):  # The loss's train-mode encoder pass.
    (tokens_v, tokens_a), _ = model.apply({'params': params, 'batch_stats': batch_stats}, video, audio,
                                          train=True, method=iicl.IICLModel.tokens,
                                          mutable=['batch_stats'])
    return model.apply({'params': params}, tokens_v, tokens_a, method=iicl.IICLModel.clips)

  video, audio = streams(state.params, state.batch_stats, batch['video'], batch['audio'])
  one_pair = jax.jit(lambda params, v, a: model.apply({'params': params}, v, a,
                                                       method=iicl.IICLModel.pair))
  take = lambda stream, k: jax.tree.map(lambda x: x[k], stream)
  explicit = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      z = one_pair(state.params, take(video, i), take(audio, j))
      explicit[i, j] = float(jnp.sum(z['z_video'] * z['z_audio']))
  ins_v, ins_a = _numpy_pairwise_nce(explicit, TAU)
  np.testing.assert_allclose(metrics['loss_ins_video'], ins_v, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss_ins_audio'], ins_a, rtol=1e-5)

  mesh = method.context.mesh  # 2 rows a device, one row a block (16 pairs), each block remat'd.
  one_view = lambda stream: jax.tree.map(lambda x: x[:, None], stream)
  grid = jax.jit(lambda params, v, a: iicl.pair_scores(model, params, one_view(v), one_view(a),
                                                       mesh=mesh, pair_block=n, remat=True))
  scores, positives = grid(state.params, *sharding.to_global((video, audio), mesh))
  np.testing.assert_allclose(scores, explicit, atol=1e-5)
  np.testing.assert_allclose(positives, np.diag(explicit), atol=1e-5)


class _Tokens(nn.Module):
  """A stand-in encoder: `[B, T, C]` tokens in, their mean and themselves out."""

  @nn.compact
  def __call__(self, x, train, return_map=False):
    del train, return_map
    return x.mean(axis=1), x


@pytest.mark.parametrize('reading', iicl.READINGS)
def test_a_pairs_score_sees_its_own_video_and_audio_only(reading):
  """The shortcut is gone: pairwise, s_ij depends on video i and audio j alone, so giving the videos
  other audio (shuffled: no correspondence) moves the columns of the score matrix and changes no
  score. A positive (i, i) then carries nothing a negative (i, j) lacks: with no correspondence the
  pairs are exchangeable, E[softmax of the positive] = 1/N, and E[L_ins] ≥ 2 log N (Jensen). Per clip,
  the embedding of video i carries audio i, so the same shuffle changes the scores themselves."""
  n, width = 16, 8
  rng = np.random.default_rng(0)
  video = rng.standard_normal((n, 5, 6)).astype(np.float32)
  audio = rng.standard_normal((n, 3, 4)).astype(np.float32)
  kind = co_attention.PairwiseCoAttention if reading == 'pairwise' else co_attention.CoAttention
  model = iicl.IICLModel(_Tokens(), _Tokens(), kind(width=width, num_heads=2, mlp_ratio=1.0),
                         ('ins',), num_clusters=2, instance_dim=width)
  params = random_like(jax.eval_shape(functools.partial(model.init, train=False),
                                      jax.random.PRNGKey(0), video, audio))['params']
  mesh = sharding.make_mesh()
  one_view = lambda stream: jax.tree.map(lambda x: x[:, None], stream)

  @jax.jit
  def scores(params, video, audio):
    if reading == 'per_clip':
      z = model.apply({'params': params}, video, audio, train=False)
      return z['z_video'] @ z['z_audio'].T
    v, a = model.apply({'params': params}, video, audio, method=iicl.IICLModel.clips)
    return iicl.pair_scores(model, params, one_view(v), one_view(a), mesh=mesh, pair_block=n,
                            remat=False)[0]

  order = rng.permutation(n)
  before = np.asarray(scores(params, *sharding.to_global((video, audio), mesh)))
  after = np.asarray(scores(params, *sharding.to_global((video, audio[order]), mesh)))
  if reading == 'pairwise':
    np.testing.assert_allclose(after, before[:, order], atol=1e-6)
  else:
    assert np.abs(after - before[:, order]).max() > 1e-2


def test_table_iii_scores_each_pair_through_the_co_attention():
  """Table III's score of (video i, audio j) is that pair's own eval-mode forward pass, views matched
  and averaged as in `outputs`; its diagonal is `outputs`' own-pair cosine."""
  method, data, state = _toy()
  state = jax.device_put(state, sharding.replicated(method.context.mesh))
  out = method.outputs(state, data.eval_batches())
  n = len(out['index'])
  host_mesh = sharding.make_mesh(jax.local_devices())
  scores = np.asarray(method._pair_scores_of(state, out['tokens_video'], out['tokens_audio'],
                                             host_mesh))
  assert scores.shape == (n, n)
  np.testing.assert_allclose(np.diag(scores), np.sum(out['z_video'] * out['z_audio'], axis=1),
                             atol=1e-5)
  batch = next(data.eval_batches())
  order = np.roll(np.arange(len(batch['index'])), 1)  # Video i with the audio of clip i - 1.
  repaired = method._forward_fn()(state.params, state.batch_stats,
                                  sharding.to_global({**batch, 'audio': batch['audio'][order]},
                                                     method.context.mesh))
  cosine = np.sum(np.asarray(repaired['z_video']) * np.asarray(repaired['z_audio']), axis=1)
  rows, columns = batch['index'], batch['index'][order]
  real = batch['mask'] > 0
  np.testing.assert_allclose(cosine[real], scores[rows[real], columns[real]], atol=1e-5)


def test_loss_switches_to_co_training_at_the_configured_step():
  _, _, state = _toy()
  assert int(state.method_state['switch_step']) == 2  # `:tiny` sets init_steps = 2.
  before, metrics_before, _, method = _loss_at(1)
  after, metrics_after, _, _ = _loss_at(2)
  assert metrics_before['co_training'] == 0.0 and metrics_after['co_training'] == 1.0
  np.testing.assert_allclose(before, metrics_before['loss_ins'], rtol=1e-6)
  np.testing.assert_allclose(
      after, metrics_after['loss_ins'] + method.settings.lam * metrics_after['loss_clu'], rtol=1e-6)
  assert method.restart_steps(total_steps=4, steps_per_epoch=2) == [2]
  assert method.scheduled_update(None, 1) is None  # 2 steps per epoch of 32: the switch is step 2.


def test_switch_step_from_epochs_and_ablation_settings():
  config = _config()
  config.iicl.init_epochs, config.iicl.init_steps = 2.5, None
  assert iicl.IICL(config).switch_step(steps_per_epoch=4) == 10
  config.iicl.losses = ('ins',)
  assert iicl.IICL(config).switch_step(steps_per_epoch=4) == 0
  config.iicl.losses = ('clu',)
  with pytest.raises(ValueError, match='init_epochs'):
    iicl.IICL(config)
  config.iicl.losses = ('ins', 'cluster')
  with pytest.raises(ValueError, match="name one or both of \\('ins', 'clu'\\)"):
    iicl.IICL(config)
  config = _config()
  assert iicl.IICL(config).pairwise
  config.iicl.co_attention.reading = 'per_clip'
  assert not iicl.IICL(config).pairwise
  config.iicl.co_attention.update(dict(reading='pairwise', depth=0))
  assert not iicl.IICL(config).pairwise  # No co-attention: the heads read the pooled features.
  config.iicl.co_attention.reading = 'both'
  with pytest.raises(ValueError, match="reading='both' is not one of \\('pairwise', 'per_clip'\\)"):
    iicl.IICL(config)


def test_cluster_heads_restart_at_the_switch_with_fresh_moments():
  method, data, state = _toy()
  mesh = sharding.make_mesh()
  state = jax.device_put(state, sharding.replicated(mesh))
  tx = optim.optimizer(method.config.optimizer, optax.constant_schedule(5e-4))
  grads = jax.tree.map(jnp.ones_like, state.params)
  _, opt_state = jax.jit(tx.update)(grads, state.opt_state, state.params)  # Non-zero moments.
  update = method.scheduled_update(state.replace(opt_state=opt_state), 2)
  assert update is not None and not update.data_pass and not update.scalars
  restarted = update.state
  moments = {jax.tree_util.keystr(p): np.asarray(x)
             for p, x in jax.tree_util.tree_leaves_with_path(restarted.opt_state)}
  for name, value in moments.items():
    if "'cluster_" in name:
      assert not value.any(), name
    elif "'mu'" in name:
      assert value.any(), name
  for name in ('cluster_video', 'cluster_audio'):
    before, after = state.params[name]['out']['kernel'], restarted.params[name]['out']['kernel']
    assert after.shape == before.shape and not np.allclose(after, before)
  np.testing.assert_array_equal(restarted.params['video']['spatial0']['kernel'],
                                state.params['video']['spatial0']['kernel'])


def test_run_resumed_at_the_switch_equals_an_uninterrupted_one(avsynth_records, tmp_path):
  config = load_config('iicl_kinetics', 'tiny')  # The programs `test_configs` compiles too.
  config.data.dir = avsynth_records
  assert config.checkpoint_every_steps == 2 and config.total_steps == 4
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'a'))
  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'a'), every_steps=2, keep=3)
  at_switch = checkpointer.restore_raw(2)
  checkpointer.close()
  assert int(at_switch['method_state']['switch_step']) == 2  # Saved before the switch's update.

  shutil.copytree(tmp_path / 'a' / 'checkpoints' / '2', tmp_path / 'b' / 'checkpoints' / '2')
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))
  a, b = state_leaves(uninterrupted), state_leaves(resumed)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  table = (tmp_path / 'a' / 'eval.md').read_text()
  assert 'Table II' in table and 'k-means, instance space: video + audio' in table
  assert 'cluster head: video + audio' in table
  assert 'Table III' in table and 'mAP video→audio' in table


def test_cluster_probs_are_each_views_head_by_video_index():
  method, data, state = _toy()
  mesh = sharding.make_mesh()
  state = jax.device_put(state, sharding.replicated(mesh))
  assert isinstance(method, base.Clusters) and isinstance(method, base.HasEncoders)
  forward = jax.jit(lambda batch: {v: p[0] for v, p in method.cluster_probs(state, batch).items()})
  probs = passes.ordered_pass(forward, data.dataset_batches(), mesh, keys=iicl.MODALITIES)
  out = method.outputs(state, data.dataset_batches())
  np.testing.assert_array_equal(probs['index'], np.arange(data.num_train))
  for view in ('video', 'audio'):
    np.testing.assert_array_equal(probs[view].argmax(1), out[f'y_{view}'].argmax(axis=1))
  both = (out['y_video'] + out['y_audio']) / 2
  np.testing.assert_allclose(probs['video + audio'], both, rtol=1e-6)
  np.testing.assert_array_equal(probs['video + audio'].argmax(1), both.argmax(1))


def test_instance_only_run_has_no_cluster_labels():
  config = _config()
  config.iicl.losses = ('ins',)
  method = iicl.IICL(config)
  with pytest.raises(ValueError, match='k-means in the instance space'):
    method.cluster_probs(None, {})
