"""XDC and its baselines (SDC, MDC, CDC, same-modality XDC): which encoder learns from which k-means,
heads re-initialised at every deep-clustering iteration, and a :tiny run that resumes exactly."""

import csv
import functools
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from avssl import checkpointing, optim, sharding
from avssl.modes import train
from avssl.data import datasets, sampling, synthetic
from avssl.evaluation import metrics
from avssl.methods import base, xdc
from avssl.reporting import ranking
from avssl.train_state import TrainState
from conftest import load_config, random_like, state_leaves

# §3.2 / Table 1, written out: (encoder, clustering) pairs where the encoder's loss reads the labels.
LEARNS_FROM = {
    'sdc': {('video', 'video'), ('audio', 'audio')},
    'mdc': {('video', 'video'), ('video', 'audio'), ('audio', 'video'), ('audio', 'audio')},
    'cdc': {('video', 'concat'), ('audio', 'concat')},
    'xdc': {('video', 'audio'), ('audio', 'video')},
    'xdc_same_video': {('video', 'video_2'), ('video_2', 'video')},
    'xdc_same_audio': {('audio', 'audio_2'), ('audio_2', 'audio')},
}
_TOY_TRAIN = 36  # Not a multiple of the batch: the dataset pass has 12 padding rows to drop.


@datasets.register('xdc_toy')
def _toy_source(config, **kwargs):
  """Clip i shows video pattern a = i mod 2 and plays audio pattern b = (i div 2) mod 2, noise-free:
  the video k-means (k = 2) must split by a, the audio one by b, which disagree on half the clips;
  the ground-truth class is 2a + b (what CDC's k = 4 clustering of both must find)."""
  rng = np.random.default_rng(0)
  video = rng.standard_normal((2, 2, 8, 8, 3)).astype(np.float32)
  audio = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)

  def fetch(split, indices):
    del split
    a, b = indices % 2, (indices // 2) % 2
    return {'video': video[a], 'audio': audio[b], 'label': (2 * a + b).astype(np.int32)}

  return datasets.IndexedSource(fetch, config.num_train, config.num_eval, **kwargs)


@functools.lru_cache(maxsize=None)
def _toy(variant, num_clusters=2):
  """A method on the toy data and its initial state, replicated on the 8-device mesh (cached: tests
  that share a variant share its compiled functions)."""
  config = load_config('xdc_kinetics', 'tiny')
  config.data = ml_collections.ConfigDict(dict(name='xdc_toy', num_train=_TOY_TRAIN, num_eval=8))
  config.xdc.update(dict(variant=variant, num_clusters=num_clusters, holdout_fraction=0.0,
                         stop='epochs'))
  config.model.video.widths = config.model.audio.widths = (4, 8)
  method = xdc.XDC(config)
  data = datasets.build(config.data, batch_size=config.batch_size, process_index=0,
                        process_count=1, seed=0)
  variables = random_like(jax.eval_shape(method.init_variables, jax.random.PRNGKey(0),
                                          next(data.train_batches(0))))
  tx = optim.optimizer(config.optimizer, optax.constant_schedule(0.1))
  state = TrainState(jnp.zeros((), jnp.int32), variables['params'], variables['batch_stats'],
                     tx.init(variables['params']), jax.random.PRNGKey(1),
                     method.init_method_state(data.num_train))
  mesh = sharding.make_mesh()
  return method, data, mesh, tx, jax.device_put(state, sharding.replicated(mesh))


def _labels(state, **values):
  """`state` with the pseudo-labels of each named clustering set to a constant (weights 1)."""
  labels = {c: jnp.full_like(t, values[c]) for c, t in state.method_state['labels'].items()}
  return state.replace(method_state={**state.method_state, 'labels': labels})


def test_wiring_of_every_variant():
  for variant, pairs in LEARNS_FROM.items():
    assert set(xdc.wiring(variant).heads) == pairs, variant


@pytest.mark.parametrize('variant', ['sdc', 'mdc', 'cdc', 'xdc'])
def test_each_encoder_learns_only_from_its_variants_clusterings(variant):
  """Changing one clustering's pseudo-labels changes the gradient of exactly the encoders that the
  paper has learn from it (in XDC: the video encoder from the audio clusters, and vice versa)."""
  method, data, _, _, state = _toy(variant, num_clusters=3)
  state = jax.device_get(state)  # One device is enough for one gradient.
  batch = {k: jnp.asarray(v) for k, v in next(data.train_batches(0)).items()}
  encoders = list(method.wiring.encoders)
  clusterings = list(state.method_state['labels'])

  def encoder_grads(state):
    grads = jax.grad(lambda p: method.loss(p, state, batch, jax.random.PRNGKey(0))[0])(state.params)
    return {e: grads[e] for e in encoders}

  base = encoder_grads(_labels(state, **dict.fromkeys(clusterings, 0)))
  learns = set()
  for c in clusterings:
    changed = encoder_grads(_labels(state, **{**dict.fromkeys(clusterings, 0), c: 2}))
    for e in encoders:
      differs = jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(x != y)), base[e], changed[e]))
      if any(differs):
        learns.add((e, c))
  assert learns == LEARNS_FROM[variant]


@pytest.mark.parametrize('variant,num_clusters,expected', [
    ('xdc', 2, {'video': lambda i: i % 2, 'audio': lambda i: (i // 2) % 2}),
    ('cdc', 4, {'concat': lambda i: 2 * (i % 2) + (i // 2) % 2}),
])
def test_kmeans_clusters_each_variants_own_features(variant, num_clusters, expected):
  """XDC's video k-means follows the video pattern and its audio k-means the audio pattern (they
  disagree on half the clips); CDC's one k-means on both features separates all four combinations."""
  method, data, mesh, _, state = _toy(variant, num_clusters)
  state = method.label_update(state, data, mesh)
  index = np.arange(_TOY_TRAIN)
  labels = state.method_state['labels']
  assert set(labels) == set(expected)
  for name, truth in expected.items():
    assert metrics.nmi(truth(index), np.asarray(labels[name])) == pytest.approx(1.0)
  if variant == 'xdc':
    assert metrics.nmi(np.asarray(labels['video']), np.asarray(labels['audio'])) < 0.01
  else:  # CDC also clusters each modality alone, for evaluation only.
    quality = jax.device_get(state.method_state['quality'])
    assert set(quality) == {'concat', 'video', 'audio'}
    assert quality['concat'][0, 0] == pytest.approx(1.0)  # NMI of iteration 0.
    assert quality['video'][0, 0] < 0.9  # The video alone tells a, not b.


def test_heads_and_their_optimiser_state_are_reinitialised_each_iteration():
  method, data, mesh, tx, state = _toy('xdc')
  state = method.label_update(state, data, mesh)
  first_heads = state.params['heads']
  batch = sharding.to_global(next(data.train_batches(0)), mesh)

  @jax.jit
  def step(state):
    grads = jax.grad(lambda p: method.loss(p, state, batch, jax.random.PRNGKey(0))[0])(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)

  for _ in range(2):  # Some training, so heads move and every momentum is non-zero.
    state = step(state)
  trained = state
  state = method.label_update(state, data, mesh)

  momentum = lambda s: s.opt_state[1][0].trace  # SGD: chain(weight decay, (trace, lr)).
  for name, head in state.params['heads'].items():
    for leaf, was_trained, was_first in zip(jax.tree.leaves(head),
                                           jax.tree.leaves(trained.params['heads'][name]),
                                           jax.tree.leaves(first_heads[name])):
      assert np.all(np.asarray(leaf) != np.asarray(was_trained)), name
      assert np.any(np.asarray(leaf) != np.asarray(was_first)), name  # A new draw each iteration.
      assert np.abs(np.asarray(leaf)).max() <= 1 / np.sqrt(8)  # The fc initialiser's bound.
    assert all(np.any(np.asarray(m) != 0) for m in jax.tree.leaves(momentum(trained)['heads'][name]))
    assert all(np.all(np.asarray(m) == 0) for m in jax.tree.leaves(momentum(state)['heads'][name]))
  for encoder in ('video', 'audio'):  # Encoders and their momentum carry over untouched.
    for a, b in zip(jax.tree.leaves((state.params[encoder], momentum(state)[encoder])),
                    jax.tree.leaves((trained.params[encoder], momentum(trained)[encoder]))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(state.method_state['iteration']) == 2


def test_plateau_ends_an_iteration_after_patience_epochs_or_at_the_cap(monkeypatch):
  _, data, mesh, _, state = _toy('xdc')
  config = load_config('xdc_kinetics', 'tiny')
  config.data = ml_collections.ConfigDict(dict(name='xdc_toy', num_train=_TOY_TRAIN, num_eval=8))
  config.xdc.update(dict(stop='plateau', patience=2, epochs_per_iteration=5.0))
  method = xdc.XDC(config)
  updates = []  # The iteration's epoch count at each new iteration.

  def label_update(state, data, mesh):
    del data, mesh
    updates.append(int(state.method_state['holdout']['epochs']))
    return method._with_holdout(state, best=np.inf, stale=0, epochs=0, last=np.nan)  # pylint: disable=protected-access

  monkeypatch.setattr(method, 'label_update', label_update)
  # Held-out losses, epoch by epoch: better, better, worse, equal: 2 epochs without improvement end
  # the iteration; then better every epoch, until the cap of 5 epochs ends the next one.
  for loss, stale, expected in ((3.0, 0, []), (2.0, 0, []), (2.5, 1, []), (2.0, 0, [4]),
                                (5.0, 0, [4]), (4.0, 0, [4]), (3.0, 0, [4]), (2.0, 0, [4]),
                                (1.0, 0, [4, 5])):
    holdout = {**state.method_state['holdout'], 'sum': jnp.float32(10 * loss),
               'count': jnp.float32(10)}
    state = method.epoch_end(state.replace(method_state={**state.method_state, 'holdout': holdout}),
                             data, mesh)
    assert updates == expected and int(state.method_state['holdout']['stale']) == stale, loss


def test_pseudo_labels_head_probabilities_and_clusters_ranked_by_purity(tmp_path):
  method, data, mesh, _, state = _toy('xdc')
  assert isinstance(method, (base.Clusters, base.SelfLabels, base.HasEncoders))
  assert not method.self_labels(state)  # No k-means yet.
  state = method.label_update(state, data, mesh)
  pseudo = method.self_labels(state)
  assert set(pseudo) == {'self-labels video', 'self-labels audio'}
  for name in ('video', 'audio'):
    np.testing.assert_array_equal(pseudo[f'self-labels {name}'][:, 0],
                                  np.asarray(state.method_state['labels'][name]))
  batch = sharding.to_global(next(data.dataset_batches()), mesh)
  probs = jax.jit(method.cluster_probs)(state, batch)
  assert set(probs) == {'video_audio', 'audio_video'}
  assert probs['video_audio'].shape == (1, batch['mask'].shape[0], 2)
  np.testing.assert_allclose(np.asarray(probs['audio_video']).sum(-1), 1.0, rtol=1e-5)

  classes = np.array([2 * (i % 2) + i // 2 % 2 for i in range(_TOY_TRAIN)])
  class_names = {c: f'class{c}' for c in range(4)}
  ranking.write_cluster_ranking(
      {name: ranking.rank_clusters(classes, table[:, 0], class_names)
       for name, table in pseudo.items()}, str(tmp_path))
  with open(tmp_path / 'clusters.csv') as f:
    ranked = list(csv.DictReader(f))
  # Each video cluster holds one look, i.e. two classes in equal parts; so does each audio cluster.
  assert sorted((r['clustering'], float(r['purity'])) for r in ranked) == [
      ('self-labels audio', 0.5), ('self-labels audio', 0.5), ('self-labels video', 0.5),
      ('self-labels video', 0.5)]
  assert '## self-labels video: clusters ranked by purity' in (tmp_path / 'clusters.md').read_text()
  ranked = ranking.rank_clusters(np.array([0, 0, 0, 1, 1, 1, 2, 2, -1]),
                                 np.array([1, 1, 1, 1, 0, 0, 0, 0, 0]), {0: 'a', 1: 'b', 2: 'c'})
  assert [(r['cluster'], r['size'], r['purity'], r['classes'][0][0]) for r in ranked] == [
      (1, 4, 0.75, 'a'), (0, 5, 0.5, 'b')]
  table = method.report(method.evaluate(state, iter(())))
  assert table.splitlines()[0].startswith('| Iteration | video NMI |') and '| 0 |' in table


def test_compact_rows_keeps_exactly_the_real_rows():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(0)
  masks = [rng.random(16) < p for p in (1.0, 0.6, 0.3)]  # Padding anywhere, as with many hosts.
  chunks, start = [], 0
  for mask in masks:
    index = np.where(mask, start + np.cumsum(mask) - 1, -1)
    start += mask.sum()
    chunks.append(sharding.to_global({'x': np.stack([index, -index], 1).astype(np.float32),
                                      'index': index.astype(np.int32),
                                      'mask': mask.astype(np.float32)}, mesh))
  rows = xdc.compact_rows(chunks, start, mesh)
  index = np.asarray(rows['index'])
  np.testing.assert_array_equal(np.sort(index), np.arange(start))
  np.testing.assert_array_equal(np.asarray(rows['x']), np.stack([index, -index], 1))


def test_balance_modes_and_the_flag_they_replace():
  """'sample' resamples the stream by weights that balance both clusterings and leaves the loss
  unweighted; 'reweight' weighs the loss by N / (K' n_c) and leaves the stream alone; configs from
  before `balance` (a run's run.json) keep what their `balanced` flag did."""
  method, data, mesh, _, state = _toy('xdc')
  assert method.balance == 'sample' and method.sampling_weights(state) is None  # No clusters yet.
  state = method.label_update(state, data, mesh)
  assert all(np.all(np.asarray(w) == 1) for w in state.method_state['weights'].values())
  y, z = np.arange(_TOY_TRAIN) % 3 // 2, np.arange(_TOY_TRAIN) % 4 // 3  # Sizes 12:24 and 27:9.
  labels = {'video': jnp.asarray(y, jnp.int32), 'audio': jnp.asarray(z, jnp.int32)}
  state = state.replace(method_state={**state.method_state, 'labels': labels})
  np.testing.assert_array_equal(method.sampling_weights(state), sampling.balanced_weights([y, z]))

  settings = lambda **values: ml_collections.ConfigDict(values)
  assert xdc.balance_mode(settings(balance='reweight')) == 'reweight'
  assert xdc.balance_mode(settings(balanced=True)) == 'reweight'
  assert xdc.balance_mode(settings(balanced=False)) == 'none'
  with pytest.raises(ValueError, match='replaced by config.xdc.balance'):
    xdc.balance_mode(settings(balanced=True, balance='sample'))
  with pytest.raises(ValueError, match="config.xdc.balance='uniform' is not one of"):
    xdc.balance_mode(settings(balance='uniform'))
  config = load_config('xdc_kinetics', 'tiny')
  config.xdc.balance = 'reweight'
  assert xdc.XDC(config).sampling_weights(state) is None
  np.testing.assert_allclose(np.asarray(xdc._balance_weights(labels['audio'], 4)),  # pylint: disable=protected-access
                             [36 / (2 * 27), 36 / (2 * 9), 0, 0], rtol=1e-6)


def test_tiny_run_does_two_iterations_and_resumes_between_them_identically(tmp_path, monkeypatch):
  """With balanced sampling, the loop resamples the stream after each clustering, and a run resumed
  between them draws from the same weights."""
  config = load_config('xdc_kinetics', 'tiny')  # 6 steps, iterations of at most one epoch.
  config.data = synthetic.default_config(num_train=48, num_eval=16)  # 3 steps per epoch.
  assert config.checkpoint_every_steps == 3 and config.xdc.balance == 'sample'
  streams = []  # (start step, weights) of every training stream built.
  read = datasets.IndexedSource.train_batches

  def recorded(source, start_step, weights=None):
    streams.append((start_step, weights))
    return read(source, start_step, weights)

  monkeypatch.setattr(datasets.IndexedSource, 'train_batches', recorded)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'a'))
  built = [(step, w) for step, w in streams if w is not None]
  assert [step for step, _ in built] == [0, 3]  # After the clusterings of steps 0 and 3.
  assert not np.array_equal(built[0][1], built[1][1]) and np.ptp(built[1][1]) > 0
  final = uninterrupted.method_state
  assert int(final['iteration']) == 2  # Steps 0 and 3 (the epoch cap, at epoch_end).
  for name in ('video', 'audio'):
    labels = np.asarray(final['labels'][name])
    assert labels.shape == (48,) and 0 <= labels.min() and labels.max() < config.xdc.num_clusters

  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'a'), every_steps=3, keep=3)
  # Step 3's checkpoint holds step 3's update: the epoch-end decision and iteration 1's clustering.
  first, between = (checkpointer.restore_raw(step) for step in (0, 3))
  checkpointer.close()
  assert int(first['method_state']['iteration']) == 1 and int(first['updated_at']) == 0
  assert int(between['method_state']['iteration']) == 2 and int(between['updated_at']) == 3
  assert np.isfinite(float(between['method_state']['holdout']['last']))  # Iteration 0's held-out loss.

  shutil.copytree(tmp_path / 'a' / 'checkpoints' / '3', tmp_path / 'b' / 'checkpoints' / '3')
  streams.clear()
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))
  assert [(step, w is not None) for step, w in streams][-1] == (3, True)
  np.testing.assert_array_equal(streams[-1][1], built[1][1])
  a, b = state_leaves(uninterrupted), state_leaves(resumed)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  results = (tmp_path / 'a' / 'eval.md').read_text()
  assert '| 0 |' in results and '| 1 |' in results  # A row per iteration.
