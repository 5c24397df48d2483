"""What every encoder shares: BatchNorm settings, precision, and PyTorch-compatible initialisers.

BatchNorm: PyTorch's `momentum=m` updates `running = (1 - m) * running + m * batch`; Flax's `momentum`
is the decay, so Flax momentum = 1 - PyTorch momentum (0.1 -> 0.9). Under `jax.jit` on a batch sharded
over the mesh, the statistics are those of the global batch (synchronised BN).

Precision: `dtype` ('float32', every paper's and the default, or 'bfloat16' on accelerators) is the
dtype of the activations and of the convolutions' and dense layers' arithmetic (inputs and float32
kernels are cast to it), in every encoder and head. Kept in float32 whatever `dtype` is: parameters
(`param_dtype`, so optimiser updates are not rounded), BatchNorm statistics (Flax reduces in float32 and
keeps `batch_stats` float32), and everything a loss reads: encoders return float32 pooled features and
heads float32 logits, so softmax, cross-entropy, Sinkhorn and k-means run in float32.

Rematerialisation (`remat`: 'none' | 'blocks' | 'full'): the backward pass recomputes activations
instead of keeping them, trading about one extra forward pass for memory, so that a paper's per-device
batch fits an accelerator (Chen et al. 2016, "Training deep nets with sublinear memory cost"). 'blocks'
wraps each residual / Inception block (and each stage of the small encoders) in `nn.remat`, so only
block inputs are kept between blocks; 'full' wraps the whole encoder, keeping only its input.
`remat_policy` names the `jax.checkpoint_policies` member that says what may still be saved inside a
rematerialised region; the default 'nothing_saveable' saves nothing, the most memory-saving choice
(convolutions are not `dot_general`s, so the dot policies would save only the heads' matmuls).
Parameters, results and BatchNorm updates are those without remat; only memory and time change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

# torchvision's video and image ResNets: kaiming-normal, fan_out, for ReLU.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


REMAT = ('none', 'blocks', 'full')
# The argument-free members of `jax.checkpoint_policies` (the others are factories taking names).
REMAT_POLICIES = ('nothing_saveable', 'everything_saveable', 'dots_saveable',
                  'dots_with_no_batch_dims_saveable')

Target = TypeVar('Target')


@dataclasses.dataclass(frozen=True)
class Norm:
  """BatchNorm settings, activation dtype and rematerialisation, passed to every encoder and head."""
  momentum: float = 0.9
  eps: float = 1e-5
  dtype: Any = jnp.float32
  remat: str = 'none'
  remat_policy: str = 'nothing_saveable'

  def __post_init__(self):
    if self.remat not in REMAT:
      raise ValueError(f'config.model.remat={self.remat!r} is not one of {REMAT}')
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'config.model.remat_policy={self.remat_policy!r} is not one of '
                       f'{REMAT_POLICIES}')

  def __call__(self, train: bool, name: str | None = None, scale_init=nn.initializers.ones) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.eps,
                        dtype=self.dtype, param_dtype=jnp.float32, scale_init=scale_init, name=name)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Norm:
    """From `bn_momentum` (Flax decay), `bn_eps`, `dtype` ('float32' or 'bfloat16'), `remat` and
    `remat_policy` (absent in model configs written before they existed, e.g. an older run's
    `run.json`: no rematerialisation)."""
    return cls(float(config.bn_momentum), float(config.bn_eps), jnp.dtype(config.dtype),
               str(config.get('remat', 'none')), str(config.get('remat_policy', 'nothing_saveable')))

  def remat_module(self, target: Target, level: str, static_argnums: tuple[int, ...] = (2,)) -> Target:
    """`target` (a Module class, or a function whose first argument is a Module) under `nn.remat`
    when `self.remat == level` ('blocks' or 'full'), else unchanged.

    `static_argnums` (Flax counts `self` / the module as argument 0) must cover `train` and any other
    Python value that chooses the computation (BatchNorm's mode, `return_map`), passed positionally:
    `jax.checkpoint` traces keyword arguments. The names of the submodules do not change, so neither do
    parameter paths.
    """
    if self.remat != level:
      return target
    return nn.remat(target, policy=getattr(jax.checkpoint_policies, self.remat_policy),
                    static_argnums=static_argnums)


def conv(features: int, kernel: tuple[int, ...], strides: tuple[int, ...] | int = 1,
         norm: Norm = Norm(), name: str | None = None) -> nn.Module:
  """A bias-free convolution with PyTorch's symmetric padding (`kernel // 2` per side).

  Factorised 3-D kernels (`(1, k, k)` or `(k, 1, 1)`, all of R(2+1)D's) run as 2-D convolutions on a
  reshaped input, which XLA's CPU backend executes about twice as fast as 3-D ones; parameters and
  results are those of the 3-D convolution.
  """
  strides = (strides,) * len(kernel) if isinstance(strides, int) else tuple(strides)
  if len(kernel) == 3 and (kernel[0] == 1 or kernel[1:] == (1, 1)):
    (kt, kh, kw), (st, sh, sw) = kernel, strides
    return FactorizedConv3D(features, (kt, kh, kw), (st, sh, sw), norm.dtype, name=name)
  return nn.Conv(features, kernel, strides=strides, padding=tuple((k // 2, k // 2) for k in kernel),
                 use_bias=False, kernel_init=conv_init, dtype=norm.dtype, param_dtype=jnp.float32,
                 name=name)


class FactorizedConv3D(nn.Module):
  """A 3-D convolution whose kernel is 1 along time or along both spatial axes, computed in 2-D.

  `(1, kh, kw)`: time is folded into the batch (after striding it); `(kt, 1, 1)`: height and width are
  folded into one axis (after striding them). The parameter is the `[kt, kh, kw, in, out]` kernel of
  `nn.Conv`, so checkpoints and weight conversion see an ordinary 3-D convolution.
  """
  features: int
  kernel: tuple[int, int, int]
  strides: tuple[int, int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kt, kh, kw = self.kernel
    st, sh, sw = self.strides
    w = self.param('kernel', conv_init, (kt, kh, kw, x.shape[-1], self.features), jnp.float32)
    x, w = x.astype(self.dtype), w.astype(self.dtype)
    dims = ('NHWC', 'HWIO', 'NHWC')
    if kt == 1:
      x = x[:, ::st]
      b, t, h, wd, c = x.shape
      y = jax.lax.conv_general_dilated(x.reshape(b * t, h, wd, c), w[0], (sh, sw),
                                       ((kh // 2, kh // 2), (kw // 2, kw // 2)), dimension_numbers=dims)
      return y.reshape(b, t, *y.shape[1:])
    x = x[:, :, ::sh, ::sw]
    b, t, h, wd, c = x.shape
    y = jax.lax.conv_general_dilated(x.reshape(b, t, h * wd, c), w[:, 0], (st, 1),
                                     ((kt // 2, kt // 2), (0, 0)), dimension_numbers=dims)
    return y.reshape(b, y.shape[1], h, wd, -1)


# PyTorch's `nn.Linear` default kernel init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
linear_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def linear_bias_init(fan_in: int):
  """PyTorch's `nn.Linear` default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / float(fan_in) ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
