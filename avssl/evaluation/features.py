"""Frozen-encoder features for the evaluation suite: any encoder, any split, every view.

The papers' post-hoc protocols (SeLaVi's k-means baselines of Table 5, retrieval, linear probes) all
start from the same thing: the pooled feature of one encoder, in inference mode, for every view
(clips × crops) of every video of a split. This module provides it for three kinds of encoder, so a
trained model and its baselines are measured by the same code:

- `trained`: the encoder of this run's checkpoint, as the method gives it (`HasEncoders.encoders`);
- `random`: the same architecture freshly initialised (SeLaVi Table 5's "Random" row);
- `torchvision:PATH` / `xdc:PATH`: published PyTorch R(2+1)D weights imported by `models/convert.py`.

Features are computed on the global batch sharded over the mesh and gathered to the host once per
batch (they are small: `[B, views, D]`); BatchNorm always uses its running statistics, so nothing in
the encoder changes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avssl import passes
from avssl.types import Encoder  # pylint: disable=unused-import  (re-exported)
from avssl.data import datasets, on_device
from avssl.models import convert, encoders
from avssl.models.common import Norm

#: The rank of one example of each input, without a views axis.
RANK = {'video': 4, 'flow': 4, 'audio': 3}


@dataclasses.dataclass
class Features:
  """`views [N, V, D]` features of N videos (V views each), their `labels [N]` (-1 where unknown) and
  dataset `index [N]`, sorted by index."""
  views: np.ndarray
  labels: np.ndarray
  index: np.ndarray

  def mean(self) -> np.ndarray:
    """One feature per video: the average over its views (before any normalisation)."""
    return self.views.mean(axis=1)


def records(config: ml_collections.ConfigDict, *, batch_size: int,
            **overrides: Any) -> datasets.DataSource:
  """A `RecordSource` of `config.data` with `overrides` (another folder, splits, views), e.g. an
  evaluation dataset or videos to label that training never saw."""
  from avssl.data import pipeline  # pylint: disable=g-import-not-at-top
  data = config.data.copy_and_resolve_references()
  with data.unlocked():
    data.update(overrides)
  return pipeline.RecordSource(data, batch_size=batch_size, process_index=jax.process_index(),
                               process_count=jax.process_count(), seed=config.seed)


def encoder_module(config: ml_collections.ConfigDict, modality: str,
                   pool: str | None = None) -> nn.Module:
  """The encoder `config.model.<modality>` (flow falls back to the video encoder's config), with its
  pooled feature replaced by `pool` where given (R(2+1)D only: 'avg', 'max222', 'avg122')."""
  if modality not in RANK:
    raise ValueError(f'modality {modality!r} is not one of {sorted(RANK)}')
  model = config.model
  encoder_config = model.get(modality) or model.video
  if pool is not None and pool != encoder_config.pool:
    if encoder_config.name != 'r2plus1d' and pool != 'avg':
      raise ValueError(f'pool={pool!r}: only the r2plus1d encoder has other poolings than avg; '
                       f'config.model.{modality}.name is {encoder_config.name!r}')
    encoder_config = encoder_config.copy_and_resolve_references()
    with encoder_config.unlocked():
      encoder_config.pool = pool
  norm = Norm.from_config(model)
  if modality == 'audio':
    return encoders.audio_encoder(encoder_config, norm)
  return encoders.video_encoder(encoder_config, norm)


def encoder_variables(source: str, module: nn.Module, modality: str,
                      example: Callable[[], np.ndarray], *,
                      trained: Mapping[str, Encoder] | None = None, seed: int = 0) -> dict[str, Any]:
  """Flax variables of the encoder named by `source` (see the module docstring).

  `trained` is the method's `HasEncoders.encoders(state)` (modality -> encoder), for 'trained'.
  `example()` gives one input of the modality (shapes only), needed to initialise the random and
  imported encoders.
  """
  if source == 'trained':
    if not trained or modality not in trained:
      have = sorted(trained or {})
      raise ValueError(f"encoder 'trained' needs a checkpoint whose method has a {modality!r} "
                       f'encoder (methods.base.HasEncoders); this one has {have}')
    return trained[modality].variables
  variables = jax.jit(functools.partial(module.init, train=False))(
      jax.random.PRNGKey(seed), jnp.asarray(example()[None]))
  if source == 'random':
    return variables
  kind, _, path = source.partition(':')
  importers = {'torchvision': convert.convert_torchvision_r2plus1d,
               'xdc': convert.convert_xdc_r2plus1d}
  if kind not in importers or not path:
    raise ValueError(f"encoder {source!r}: use 'trained', 'random', 'torchvision:PATH' or 'xdc:PATH'")
  variables, report = importers[kind](convert.load_state_dict(path), variables)
  del report  # `convert` logs what it did not use.
  return variables


def extract(encoders: Mapping[str, Encoder], batches: Iterator[datasets.Batch],
            mesh: jax.sharding.Mesh, transform: Callable[[jax.Array], jax.Array] | None = None,
            data: ml_collections.ConfigDict | None = None) -> dict[str, Features]:
  """Each encoder's pooled features of every view of every (unmasked) video, from ONE pass over
  `batches`: decoding dominates evaluation, so all encoders and modalities share it.

  Batches hold `[B, V, ...]` (several views) or `[B, ...]` (one) inputs under each modality's key;
  uint8 video and flow (`config.data.normalize_on_device`) are normalised with the `mean` and `std`
  of the data config `data` inside the jitted forward pass (`on_device`); `transform` is applied to
  the global `video` input next (the robustness test's degradation).
  """
  scale = on_device.scale(data) if data is not None else (None, None)
  forwards = {name: _forward_fn(e.module, e.modality, scale,
                                transform if e.modality == 'video' else None)
              for name, e in encoders.items()}
  keys = {e.modality for e in encoders.values()} | {'label'}

  def forward(inputs):
    return {'label': inputs['label'],
            **{f'features/{name}': forwards[name](e.variables, inputs[e.modality])
               for name, e in encoders.items()}}

  try:
    out = passes.ordered_pass(forward, batches, mesh, keys=sorted(keys), name='features')
  except ValueError as e:
    raise ValueError('no batches to extract features from') from e
  return {name: Features(out[f'features/{name}'].astype(np.float32), out['label'], out['index'])
          for name in encoders}


@functools.lru_cache(maxsize=None)
def _forward_fn(module: nn.Module, modality: str, scale: on_device.Scale, transform):
  @jax.jit
  def forward(variables, x):
    x = on_device.normalize_input(modality, x, *scale)
    if transform is not None:
      x = transform(x)
    single = x.ndim == RANK[modality] + 1
    views = x[:, None] if single else x
    flat = views.reshape((-1,) + views.shape[2:])
    feature = module.apply(variables, flat, False)
    return feature.reshape(views.shape[:2] + feature.shape[-1:]).astype(jnp.float32)
  return forward
