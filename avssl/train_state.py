"""The whole state of a run, as one pytree, so checkpoints and resumes are exact by construction.

Only arrays live here; the optimiser and model are static and are passed to the step by closure. The
RNG key never changes: each step draws from `fold_in(rng, step)`, so a resumed run sees the same random
numbers as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import optax
from jax.sharding import Mesh

from avssl import sharding

from avssl.types import PyTree


class TrainState(flax.struct.PyTreeNode):
  """step, params, batch_stats, opt_state, rng and the method's own state (e.g. SeLaVi's self-labels).

  `updated_at` is the step whose scheduled update (`Method.scheduled_update`) this state already
  holds (-1: none), so a checkpoint saved right after a label update is resumed without redoing it.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: optax.OptState
  rng: jax.Array
  method_state: PyTree
  updated_at: jax.Array | int = -1

  def step_rng(self) -> jax.Array:
    """The key for this step: `fold_in(rng, step)`."""
    return jax.random.fold_in(self.rng, self.step)


def create(init_variables: Callable[[jax.Array], dict[str, PyTree]],
           init_method_state: Callable[[], PyTree],
           tx: optax.GradientTransformation,
           rng: jax.Array,
           mesh: Mesh,
           *,
           abstract: bool = False) -> tuple[TrainState, PyTree]:
  """Builds the state directly in its (replicated) sharding, big_vision's way.

  `jax.eval_shape` gives the state's structure without allocating it; the shardings are derived from
  that; then one jitted init with `out_shardings` materialises every array where it belongs. With
  `abstract`, that last step is skipped: the state's leaves are `jax.ShapeDtypeStruct`s carrying
  their shardings, enough to lower and cost a step without compiling the init or allocating anything.

  Returns the state and its sharding pytree (for the step's in/out shardings and for restoring).
  """
  init_rng, state_rng = jax.random.split(rng)

  def init() -> TrainState:
    variables = dict(init_variables(init_rng))
    params = variables.pop('params')
    batch_stats = variables.pop('batch_stats', {})
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        rng=state_rng,
        method_state=init_method_state(),
        updated_at=jax.numpy.full((), -1, jax.numpy.int32),
    )

  shapes = jax.eval_shape(init)
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
  if abstract:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                        state_sharding), state_sharding
  return jax.jit(init, out_shardings=state_sharding)(), state_sharding
