"""A linear probe on frozen features, with its weight decay chosen on a validation split of train.

The papers measure an encoder by training a linear classifier on its features (UCF-101, HMDB-51 and
ESC-50 folds). How the released code does it overstates the result in two ways
(`docs/papers_and_releases.md`, SeLaVi): SeLaVi's probe leaves BatchNorm in train mode, so its
statistics drift with the probe's batches, and it reports the best test accuracy over epochs, which
selects on the test set. Here:

- **Features are frozen and normalised once.** The caller extracts them with the encoder in inference
  mode, and this module only sees arrays. GOCA's released head (`docs/papers_and_releases.md`) is a
  BatchNorm1d without a learned affine before a linear layer initialised N(0, 0.01); here every feature
  is standardised with the mean and variance of the training examples (the test set never contributes),
  which is what that BatchNorm computes at inference, and the linear layer has the same init.
- **Selection on validation, never on test.** A validation split is carved from train
  (`avssl.data.splits.split_train_val`: a fraction of the videos, stratified by class, whole groups on one side, so one
  performer of UCF-101, source film of HMDB-51 or recording of ESC-50 is never on both). Every weight decay of the grid is
  trained on the rest of train and scored on those validation videos; the best is retrained on all of
  train, and only that model sees the test set, once.
- **Every view is an example; a video is scored on its average logits.** Each of the V views (clips ×
  crops) of a training video is a training example. A test video's logits are averaged over its views
  before the argmax, the papers' 10 clips × 3 crops protocol; `clip_accuracy` scores every view alone.
- **The grid trains at once.** Softmax regression with the penalty `wd/2 ||W||²` on the weights (not
  the bias), minimised by Adam with a cosine decay over mini-batches, is vmapped over the weight decays,
  so every value sees the same batches in one jitted `lax.scan`. Each epoch draws a new permutation of
  the examples from the seed: a seed gives the same result on every run.
- **Large feature sets stay sharded.** With a mesh, the examples are row-sharded over its `data` axis
  and never gathered: XLA gathers a batch's rows where they are and sums the `[B, D]` batch over the
  devices. The batches are those of one device, so the result is too, up to float rounding.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from avssl import sharding
from avssl.data import splits
from avssl.clustering import kmeans

WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)

_HIGHEST = lax.Precision.HIGHEST
_BN_EPSILON = 1e-5  # BatchNorm1d's, so features with no variance stay finite.


def _checked(views: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
  views, labels = np.asarray(views, np.float32), np.asarray(labels)
  if views.ndim != 3 or not views.shape[0] or not views.shape[1]:
    raise ValueError(f'{name}_views must be [videos, views, features], got shape {views.shape}')
  if labels.shape != views.shape[:1]:
    raise ValueError(f'{name}_labels has shape {labels.shape}; expected ({views.shape[0]},)')
  if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
    raise ValueError(f'{name}_labels must be integer class ids >= 0')
  return views, labels.astype(np.int32)


def _on_mesh(views: np.ndarray, mesh: Mesh) -> jax.Array:
  """The views as `[N·V, D]` rows, row-sharded over the mesh (zero rows pad them to divide)."""
  rows = views.reshape(-1, views.shape[-1])
  devices = mesh.devices.size
  return kmeans.pad_rows(rows, devices * math.ceil(len(rows) / devices), mesh)


@functools.partial(jax.jit, static_argnames='n')
def _moments(x: jax.Array, *, n: int) -> tuple[jax.Array, jax.Array]:
  """Mean and `1 / sqrt(var + eps)` of each feature over the first `n` rows (the rest is padding)."""
  valid = (jnp.arange(x.shape[0]) < n)[:, None]
  mean = jnp.sum(jnp.where(valid, x, 0.0), axis=0) / n
  variance = jnp.sum(jnp.where(valid, x - mean, 0.0) ** 2, axis=0) / n
  return mean, lax.rsqrt(variance + _BN_EPSILON)


@jax.jit
def _standardize(x: jax.Array, mean: jax.Array, scale: jax.Array) -> jax.Array:
  return (x - mean) * scale


def _loss(params: dict[str, jax.Array], x: jax.Array, labels: jax.Array,
          weight_decay: jax.Array) -> jax.Array:
  logits = jnp.dot(x, params['w'], precision=_HIGHEST) + params['b']
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return cross_entropy + 0.5 * weight_decay * jnp.sum(params['w'] ** 2)


@functools.partial(jax.jit, static_argnames=('n', 'num_classes', 'epochs', 'batch_size'))
def _train(x: jax.Array, labels: jax.Array, weight_decays: jax.Array, key: jax.Array,
           learning_rate: float, *, n: int, num_classes: int, epochs: int,
           batch_size: int) -> dict[str, jax.Array]:
  """`{'w': [K, D, C], 'b': [K, C]}` fit to the first `n` rows, one per weight decay, same batches."""
  steps = n // batch_size
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * steps))
  init_key, key = jax.random.split(key)
  one = {'w': 0.01 * jax.random.normal(init_key, (x.shape[1], num_classes)),
         'b': jnp.zeros((num_classes,))}
  params = jax.tree.map(lambda p: jnp.broadcast_to(p, weight_decays.shape + p.shape), one)
  grad = jax.vmap(jax.grad(_loss), in_axes=(0, None, None, 0))

  def step(carry, rows):
    params, state = carry
    grads = grad(params, x[rows], labels[rows], weight_decays)
    updates, state = jax.vmap(optimizer.update)(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  def epoch(carry, epoch_key):
    order = jax.random.permutation(epoch_key, n)[:steps * batch_size]
    return lax.scan(step, carry, order.reshape(steps, batch_size))

  carry = (params, jax.vmap(optimizer.init)(params))
  (params, _), _ = lax.scan(epoch, carry, jax.random.split(key, epochs))
  return params


@jax.jit
def _logits(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  return jnp.einsum('rd,kdc->krc', x, params['w'], precision=_HIGHEST) + params['b'][:, None]


def _fit_and_score(train_views: np.ndarray, train_labels: np.ndarray, eval_views: np.ndarray,
                   weight_decays: Sequence[float], key: jax.Array, mesh: Mesh, *, num_classes: int,
                   epochs: int, learning_rate: float, batch_size: int) -> np.ndarray:
  """`[K, M, V, C]` logits of the eval views under each weight decay's classifier.

  Features are standardised with the statistics of `train_views` alone.
  """
  n = train_views.shape[0] * train_views.shape[1]
  x = _on_mesh(train_views, mesh)
  mean, scale = _moments(x, n=n)
  x = _standardize(x, mean, scale)
  labels = jnp.asarray(np.repeat(train_labels, train_views.shape[1]))
  params = _train(x, labels, jnp.asarray(weight_decays, jnp.float32), key, learning_rate, n=n,
                  num_classes=num_classes, epochs=epochs, batch_size=min(batch_size, n))
  logits = _logits(params, _standardize(_on_mesh(eval_views, mesh), mean, scale))
  rows = eval_views.shape[0] * eval_views.shape[1]
  return np.asarray(logits[:, :rows]).reshape(len(weight_decays), *eval_views.shape[:2], num_classes)


def _video_accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """`[K]` accuracies of `[K, M, V, C]` logits, each video's logits averaged over its views."""
  return np.mean(logits.mean(axis=2).argmax(axis=-1) == labels, axis=-1)


def linear_probe(train_views: Any, train_labels: Any, test_views: Any, test_labels: Any, *,
                 val_fraction: float = 0.1, groups: Sequence[Hashable] | np.ndarray | None = None,
                 weight_decays: Sequence[float] = WEIGHT_DECAYS, epochs: int = 10,
                 learning_rate: float = 1e-3, batch_size: int = 256, seed: int = 0,
                 mesh: Mesh | None = None) -> dict[str, Any]:
  """Softmax regression on frozen features; weight decay chosen on a validation split of train.

  Args:
    train_views: `[N, V, D]` features of every view of every training video.
    train_labels: `[N]` class ids.
    test_views: `[M, V', D]` features of the test videos (V' may differ from V).
    test_labels: `[M]` class ids.
    val_fraction: fraction of the training videos held out to choose the weight decay (see
      `split_train_val`); 0 skips the choice and needs a single weight decay.
    groups: `[N]` group of each training video (e.g. `group_of(video_id)`); a group is never split
      between the probe's training and validation parts. None: each video is its own group.
    weight_decays: the grid; L2 penalty `wd/2 ||W||²` on the weights, added to the mean cross-entropy.
    epochs: passes over the training views (each view is an example), for every fit.
    learning_rate: Adam's peak learning rate, cosine-decayed to 0 over the fit.
    batch_size: views per step.
    seed: draws the validation split, the init and the batches.
    mesh: mesh whose `data` axis the examples are row-sharded over; None uses the first device. One
      process: the arrays hold every video.

  Returns:
    'accuracy' (test, logits averaged over each video's views), 'clip_accuracy' (every test view
    alone), 'val_accuracy' (video level, of the chosen weight decay; None without validation),
    'weight_decay' (the chosen one; ties go to the larger), 'val_accuracies' (one per value of
    `weight_decays`; None without validation), 'predictions' (`[M]` predicted classes), and the
    protocol: 'weight_decays', 'val_fraction', 'grouped', 'num_train_videos', 'num_val_videos',
    'num_test_videos', 'train_views', 'test_views' (views per video), 'num_classes', 'epochs',
    'learning_rate', 'batch_size', 'seed'. The test set plays no part in any choice.
  """
  train_views, train_labels = _checked(train_views, train_labels, 'train')
  test_views, test_labels = _checked(test_views, test_labels, 'test')
  if train_views.shape[2] != test_views.shape[2]:
    raise ValueError(f'train features are {train_views.shape[2]}-d, test features '
                     f'{test_views.shape[2]}-d')
  weight_decays = tuple(float(wd) for wd in weight_decays)
  if not weight_decays:
    raise ValueError('weight_decays is empty')
  if val_fraction == 0 and len(weight_decays) > 1:
    raise ValueError(f'choosing among {len(weight_decays)} weight decays needs val_fraction > 0')
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  fit = functools.partial(_fit_and_score, mesh=mesh, num_classes=num_classes, epochs=epochs,
                          learning_rate=learning_rate, batch_size=batch_size)
  key = jax.random.PRNGKey(seed)
  val = splits.split_train_val(train_labels, groups, fraction=val_fraction, seed=seed)
  val_accuracies = None
  if val_fraction > 0:
    if not val.any():
      raise ValueError(f'val_fraction={val_fraction} of {len(val)} training videos leaves an empty '
                       'split; raise it or give more videos')
    logits = fit(train_views[~val], train_labels[~val], train_views[val], weight_decays,
                 jax.random.fold_in(key, 0))
    val_accuracies = _video_accuracy(logits, train_labels[val]).tolist()
  best = (max(range(len(weight_decays)), key=lambda i: (val_accuracies[i], weight_decays[i]))
          if val_accuracies else 0)
  logits = fit(train_views, train_labels, test_views, weight_decays[best:best + 1],
               jax.random.fold_in(key, 1))[0]
  predictions = logits.mean(axis=1).argmax(axis=-1)
  return {
      'accuracy': float(np.mean(predictions == test_labels)),
      'clip_accuracy': float(np.mean(logits.argmax(axis=-1) == test_labels[:, None])),
      'val_accuracy': val_accuracies[best] if val_accuracies else None,
      'weight_decay': weight_decays[best], 'val_accuracies': val_accuracies,
      'predictions': predictions, 'weight_decays': list(weight_decays),
      'val_fraction': val_fraction, 'grouped': groups is not None,
      'num_train_videos': len(train_labels), 'num_val_videos': int(val.sum()),
      'num_test_videos': len(test_labels), 'train_views': train_views.shape[1],
      'test_views': test_views.shape[1], 'num_classes': num_classes, 'epochs': epochs,
      'learning_rate': learning_rate, 'batch_size': batch_size, 'seed': seed}


def average_over_folds(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Mean and std (ddof=0, as `metrics.per_head`) over folds of every numeric entry they all have.

  For the 3 UCF-101 / HMDB-51 folds or the 5 ESC-50 folds: `{name: {'mean', 'std', 'per_fold'}}` for
  each int or float entry present in every result (booleans, lists, arrays and None are left out),
  and 'num_folds'.
  """
  if not results:
    raise ValueError('no results to average')

  def numeric(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))

  summary: dict[str, Any] = {'num_folds': len(results)}
  for name in results[0]:
    values = [r.get(name) for r in results]
    if all(numeric(v) for v in values):
      array = np.asarray(values, np.float64)
      summary[name] = {'mean': float(array.mean()), 'std': float(array.std()),
                       'per_fold': array.tolist()}
  return summary
