"""Supervised audio-visual classification: the papers' "supervised pretraining" reference row.

Cross-entropy of the labels from both modalities' features. It is also the smallest complete method, so
it is what the loop's own tests train.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from avssl import preemption, sharding
from avssl.data import on_device
from avssl.methods import base
from avssl.models.small import SmallAVNet
from avssl.train_state import TrainState


class Supervised(base.Method):
  """Softmax cross-entropy on `label`; evaluation reports top-1 accuracy on the eval split."""
  inputs = ('video', 'audio')

  def build_model(self) -> nn.Module:
    model = self.config.model
    if model.remat != 'none':  # One convolution per modality: no block worth recomputing.
      raise ValueError(f"config.model.remat={model.remat!r}: SmallAVNet supports only 'none'")
    return SmallAVNet(num_classes=self.config.data.num_classes, width=model.width,
                      dropout=model.dropout, bn_momentum=model.bn_momentum, bn_eps=model.bn_eps,
                      dtype=jnp.dtype(model.dtype))

  def loss(self, params, state: TrainState, batch, rng):
    logits, updates = self.model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, batch['video'], batch['audio'],
        train=True, rngs={'dropout': rng}, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
    accuracy = (logits.argmax(-1) == batch['label']).mean()
    return loss, base.StepOutput(updates['batch_stats'], {'accuracy': accuracy}, state.method_state)

  @functools.partial(jax.jit, static_argnums=0)
  def _correct(self, state: TrainState, batch) -> tuple[jax.Array, jax.Array]:
    batch = on_device.normalize(batch, self.config.data)
    logits = self.model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                              batch['video'], batch['audio'], train=False)
    hits = (logits.argmax(-1) == batch['label']) * batch['mask']
    return hits.sum(), batch['mask'].sum()

  def evaluate(self, state: TrainState, batches: Iterator[base.Batch]) -> dict[str, float]:
    correct = total = 0.0
    for batch in batches:
      preemption.check()
      hits, count = self._correct(state, sharding.to_global(batch, self.context.mesh))
      correct += float(hits)
      total += float(count)
    return {'eval_accuracy': correct / max(total, 1.0)}
