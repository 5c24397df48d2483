"""GOCA's maximally separated prototypes (GOCA §3.3, Eq. 11; the release:
`docs/papers_and_releases.md`).

GOCA fixes its prototype layer before training to N unit vectors spread as far apart as possible on the
sphere in Phi dimensions (after Mettes et al.'s hyperspherical prototypes), which keeps the features from
collapsing. There is no closed form beyond the circle and the simplex (N <= Phi + 1), so it is found
by projected gradient descent on

    L = (1/N) sum_i max_j Omega[i, j],   Omega = W W^T - 2 I,   ||w_i|| = 1     (Eq. 11)

i.e. each prototype pushes away from its nearest neighbour (the -2 I removes the self-similarity), and
the rows are re-projected onto the unit sphere after every step. The release adds 1 inside the max,
which changes nothing, and its optimiser amounts to plain projected SGD with learning rate 0.1 (it is
re-created every step), which is what runs here by default, deterministically from a seed and as one
jitted loop. The release's file is 1000 prototypes x 128 dims x 50,000 steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_HIGHEST = lax.Precision.HIGHEST


def _unit_rows(w: jax.Array) -> jax.Array:
  return w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True), 1e-12)


def _omega(w: jax.Array) -> jax.Array:
  return jnp.dot(w, w.T, precision=_HIGHEST) - 2 * jnp.eye(w.shape[0], dtype=w.dtype)


def separation_loss(w: jax.Array) -> jax.Array:
  """Eq. 11: the mean over prototypes of the cosine to the nearest other prototype (unit rows)."""
  return jnp.mean(jnp.max(_omega(w), axis=1))


@jax.jit
def max_cosine(w: jax.Array) -> jax.Array:
  """The largest cosine between two different rows of `w` (unit rows)."""
  return jnp.max(_omega(w))


@functools.partial(jax.jit, static_argnames=('num', 'dim', 'linear_decay'))
def _separate(key: jax.Array, steps: jax.Array, learning_rate: jax.Array, *, num: int, dim: int,
              linear_decay: bool) -> jax.Array:
  w = _unit_rows(jax.random.normal(key, (num, dim), jnp.float32))
  grad = jax.grad(separation_loss)

  def step(t, w):
    eta = learning_rate * (1 - t / steps) if linear_decay else learning_rate
    return _unit_rows(w - eta * grad(w))

  return lax.fori_loop(0, steps, step, w)


def separated_prototypes(num: int, dim: int, *, steps: int = 50_000, learning_rate: float = 0.1,
                         linear_decay: bool = False,
                         seed: int | jax.Array = 0) -> tuple[jax.Array, float]:
  """N unit prototypes in `dim` dimensions, pushed maximally apart (GOCA Eq. 11).

  With a constant step (the release's choice) the non-smooth max makes the prototypes circle around the
  optimum at a distance set by the step: 4 prototypes in 3-D end near cos -0.29 instead of the simplex's
  -1/3. `linear_decay` lowers the step linearly to zero over `steps`, which removes that: it reaches the
  simplex and the cross-polytope (10 in 5-D, cos 0) to about 1e-4. Like any descent on Eq. 11 it can
  stop in a poorer local optimum (1 of 8 seeds for 10 in 5-D), and in crowded settings two prototypes
  can merge (cos 1; 4 of 8 seeds for 20 in 3-D, whose other seeds end within 0.02 of the best known
  packing, cos 0.6763): the push that separates a close pair shrinks with their angle, so a third
  prototype's push can overcome it. GOCA's 1000 x 128 is far from that regime (it reached 0.18 in 2000
  steps from 0.39 at random, on both seeds tried); check the returned `max_cos`.

  Args:
    num: N, the number of prototypes (GOCA: 1000).
    dim: Phi, their dimension (GOCA: 128).
    steps: projected gradient steps (GOCA: 50,000). Each costs three N x N x Phi matmuls.
    learning_rate: SGD step size (GOCA: 0.1).
    linear_decay: decay the step linearly to zero instead of keeping it constant.
    seed: integer seed or PRNG key of the Gaussian start.

  Returns:
    `(prototypes, max_cos)`: `[num, dim]` float32 unit rows, and their largest pairwise cosine. GOCA's
    online prototype table (`methods/goca.py`) is `[dim, num]`, i.e. the transpose.
  """
  if num < 2 or dim < 2:
    raise ValueError(f'need at least 2 prototypes in at least 2 dimensions; got {num} x {dim}')
  key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
  w = _separate(key, jnp.int32(steps), jnp.float32(learning_rate), num=num, dim=dim,
                linear_decay=linear_decay)
  return w, float(max_cosine(w))
