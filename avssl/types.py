"""The few types every layer shares, defined once: a pytree, a batch, and a runnable encoder."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

#: Any nest of arrays (params, optimiser state, a method's own state).
PyTree = Any
#: One batch: input name (`video`, `audio`, `flow`, `label`, `index`, `mask`, ...) -> array; numpy on
#: the host (what a `DataSource` yields), `jax.Array` once made global.
Batch = dict[str, np.ndarray | jax.Array]


class Encoder(NamedTuple):
  """One encoder to run: its module, its variables and the modality (batch key) it reads.

  `module.apply(variables, x, False)` gives the pooled feature `[B, D]` of inputs `x` `[B, ...]`.
  """
  module: nn.Module
  variables: dict[str, Any]
  modality: str
