"""Import published PyTorch weights into the Flax encoders and heads.

Supported layouts:
  - torchvision's `r2plus1d_18` (and 10/34) -> `R2Plus1D`, fc included when the model has one;
  - XDC's R(2+1)D-18 (torchvision key names, per-conv mid channels) -> `R2Plus1D(mid_channels='per_conv')`,
    its fc dropped as XDC's own loader drops it;
  - SeLaVi's released checkpoint (`module.video_network.base.*`, `module.audio_network.base.*`,
    `module.mlp_v{h}.block_forward.*`, `module.mlp_a{h}.block_forward.*`) -> the variables of a model with
    submodules `video` (R2Plus1D), `audio` (AudioResNet), `video_heads` and `audio_heads` (MultiHead).

Input is a `.pth` (read through torch, when installed) or an `.npz` with the same keys, so users without
torch can convert elsewhere (`np.savez(path, **{k: v.numpy() for k, v in state_dict.items()})`). Every
checkpoint key that was not used and every model variable left at its initial value is reported; a
shape mismatch is refused with the key and both shapes named.

Layouts: PyTorch conv kernels are `[out, in, *kernel]`, Flax's `[*kernel, in, out]`; linear weights are
`[out, in]` vs `[in, out]`; BN `weight/bias/running_mean/running_var` are `scale/bias/mean/var`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable

import jax
import numpy as np

from avssl import files
from avssl.types import PyTree
StateDict = dict[str, np.ndarray]
# A Flax variable path (collection, module..., leaf) -> the checkpoint key(s) it comes from: one key, a
# list of keys to stack on a new leading axis (vmapped heads), or None when the checkpoint has none.
KeyFn = Callable[[tuple[str, ...]], 'str | list[str] | None']

_LEAF = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
         'var': 'running_var'}
_IGNORED_SUFFIXES = ('num_batches_tracked',)


@dataclasses.dataclass
class Report:
  """What a conversion left out: checkpoint keys not used, model variables not filled."""
  unused: list[str]
  uninitialised: list[str]

  def __str__(self) -> str:
    return (f'{len(self.unused)} checkpoint keys unused{": " if self.unused else ""}'
            f'{", ".join(self.unused)}; {len(self.uninitialised)} model variables left at their '
            f'initial values{": " if self.uninitialised else ""}{", ".join(self.uninitialised)}')


def load_state_dict(path: str, trusted: bool = False) -> StateDict:
  """Reads a `.pth`/`.pt`/`.tar` (through torch) or `.npz` into a dict of numpy arrays.

  A training checkpoint that wraps the weights (`{'model': ...}` or `{'state_dict': ...}`) is unwrapped.
  PyTorch files are read with `weights_only=True` (no arbitrary code runs); a full training checkpoint
  that pickles other objects needs `trusted=True`, for files whose origin you trust.
  """
  ext = os.path.splitext(path)[1]
  if ext == '.npz':
    with files.open(path, 'rb') as f, np.load(f) as data:
      return {k: data[k] for k in data.files}
  if ext not in ('.pth', '.pt', '.tar'):
    raise ValueError(f'{path}: expected a .pth, .pt, .tar or .npz file')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'{path}: reading a PyTorch file needs torch; install it, or save the state '
                      'dict as .npz where torch is installed (see avssl/models/convert.py)') from e
  try:
    with files.open(path, 'rb') as f:
      checkpoint = torch.load(f, map_location='cpu', weights_only=not trusted)
  except Exception as e:  # torch raises UnpicklingError subclasses that vary by version
    if trusted:
      raise
    raise ValueError(f'{path}: not loadable with weights_only=True ({e}); if you trust the file, '
                     'pass trusted=True') from e
  for wrapper in ('model', 'state_dict'):
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
      checkpoint = checkpoint[wrapper]
  return {k: v.detach().cpu().numpy() for k, v in checkpoint.items() if hasattr(v, 'numpy')}


def strip_prefix(state_dict: StateDict, prefix: str = 'module.') -> StateDict:
  """Drops DistributedDataParallel's `module.` prefix where present."""
  return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
  """One PyTorch tensor in Flax's layout."""
  if leaf == 'kernel' and array.ndim >= 3:
    return np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))
  if leaf == 'kernel' and array.ndim == 2:
    return array.T
  return array


def fill(variables: PyTree, state_dict: StateDict, key_fn: KeyFn,
         drop: Iterable[str] = ()) -> tuple[PyTree, Report]:
  """Replaces each variable that `key_fn` maps to a checkpoint key with that tensor.

  `drop`: prefixes of checkpoint keys deliberately not loaded (not reported as unused).
  """
  used: set[str] = set()
  missing: list[str] = []

  def leaf(path, value):
    names = tuple(str(getattr(p, 'key', p)) for p in path)
    keys = key_fn(names)
    flat_keys = [keys] if isinstance(keys, str) else keys
    if not flat_keys or any(k not in state_dict for k in flat_keys):
      missing.append('/'.join(names))
      return value
    stacked = not isinstance(keys, str)
    expected = tuple(value.shape[1:] if stacked else value.shape)
    tensors = []
    for k in flat_keys:
      tensor = to_flax(np.asarray(state_dict[k]), names[-1])
      if tensor.shape != expected:
        raise ValueError(f'checkpoint key {k!r} has shape {state_dict[k].shape} (in Flax layout '
                         f'{tensor.shape}) but the model variable {"/".join(names)} has shape '
                         f'{tuple(value.shape)}{" (stacked over heads)" if stacked else ""}; check the '
                         'architecture flags (depth, mid_channels, number of clusters and heads)')
      tensors.append(tensor)
    if stacked and len(tensors) != value.shape[0]:
      raise ValueError(f'{len(tensors)} checkpoint heads for {"/".join(names)}, which has '
                       f'{value.shape[0]}')
    used.update(flat_keys)
    return np.asarray(np.stack(tensors) if stacked else tensors[0], dtype=value.dtype)

  filled = jax.tree_util.tree_map_with_path(leaf, variables)
  drop = tuple(drop)
  unused = sorted(k for k in state_dict if k not in used and not k.endswith(_IGNORED_SUFFIXES)
                  and not k.startswith(drop))
  return filled, Report(unused, missing)


def _r2plus1d_module_key(modules: tuple[str, ...]) -> str:
  """`layer2_0/conv1/spatial` -> `layer2.0.conv1.0.0` (torchvision's Sequential indices)."""
  path = '/'.join(modules)
  rules = [
      (r'^stem_spatial_bn$', 'stem.1'), (r'^stem_spatial$', 'stem.0'),
      (r'^stem_temporal_bn$', 'stem.4'), (r'^stem_temporal$', 'stem.3'),
      (r'^layer(\d)_(\d+)/', r'layer\1.\2/'),
      (r'/conv(\d)/spatial$', r'/conv\1.0.0'), (r'/conv(\d)/mid_bn$', r'/conv\1.0.1'),
      (r'/conv(\d)/temporal$', r'/conv\1.0.3'), (r'/bn(\d)$', r'/conv\1.1'),
      (r'/downsample_bn$', '/downsample.1'), (r'/downsample$', '/downsample.0'),
  ]
  for pattern, replacement in rules:
    path = re.sub(pattern, replacement, path)
  return path.replace('/', '.')


def _resnet_module_key(modules: tuple[str, ...]) -> str:
  """`layer2_0/downsample_bn` -> `layer2.0.downsample.1` (torchvision's 2-D ResNet names)."""
  path = re.sub(r'^layer(\d)_(\d+)/', r'layer\1.\2/', '/'.join(modules))
  path = re.sub(r'/downsample_bn$', '/downsample.1', path)
  path = re.sub(r'/downsample$', '/downsample.0', path)
  return path.replace('/', '.')


def _torch_key(module_key: str, leaf: str, prefix: str = '') -> str:
  return f'{prefix}{module_key}.{_LEAF[leaf]}'


def r2plus1d_key_fn(prefix: str = '') -> KeyFn:
  """Keys of torchvision's VideoResNet (R2Plus1dStem, Conv2Plus1D) for `R2Plus1D` variables."""
  return lambda names: _torch_key(_r2plus1d_module_key(names[1:-1]), names[-1], prefix)


def audio_resnet_key_fn(prefix: str = '') -> KeyFn:
  """Keys of torchvision's 2-D ResNet (one-channel conv1) for `AudioResNet` variables."""
  return lambda names: _torch_key(_resnet_module_key(names[1:-1]), names[-1], prefix)


# SeLaVi's MLPv2 Sequential: Flatten, Dropout, Linear(no bias), Unsqueeze, BatchNorm1d, Flatten, ReLU,
# Dropout, Linear.
_SELAVI_HEAD = {'hidden': '2', 'bn': '4', 'out': '8'}


def selavi_key_fn(num_heads: int) -> KeyFn:
  """Keys of SeLaVi's `AVModel` (after `strip_prefix`) for the `video`/`audio`/`*_heads` variables."""
  def key_fn(names):
    collection, component, *modules, leaf = names
    del collection
    if component == 'video':
      return _torch_key(_r2plus1d_module_key(tuple(modules)), leaf, 'video_network.base.')
    if component == 'audio':
      return _torch_key(_resnet_module_key(tuple(modules)), leaf, 'audio_network.base.')
    if component in ('video_heads', 'audio_heads') and modules[-1] in _SELAVI_HEAD:
      tag = 'v' if component == 'video_heads' else 'a'
      return [f'mlp_{tag}{h}.block_forward.{_SELAVI_HEAD[modules[-1]]}.{_LEAF[leaf]}'
              for h in range(num_heads)]
    return None
  return key_fn


def convert_torchvision_r2plus1d(state_dict: StateDict, variables: PyTree) -> tuple[PyTree, Report]:
  """torchvision `r2plus1d_18` weights into `R2Plus1D(depth=18)` variables."""
  return fill(variables, state_dict, r2plus1d_key_fn())


def convert_xdc_r2plus1d(state_dict: StateDict, variables: PyTree) -> tuple[PyTree, Report]:
  """XDC's R(2+1)D-18 into `R2Plus1D(mid_channels='per_conv')`; the fc is dropped as in XDC's loader."""
  return fill(variables, strip_prefix(state_dict), r2plus1d_key_fn(), drop=('fc.',))


def convert_selavi(state_dict: StateDict, variables: PyTree, num_heads: int) -> tuple[PyTree, Report]:
  """SeLaVi's released checkpoint into the variables of the SeLaVi model (see module docstring)."""
  return fill(variables, strip_prefix(state_dict), selavi_key_fn(num_heads))


def from_flax(array: np.ndarray, leaf: str) -> np.ndarray:
  """One Flax variable in PyTorch's layout (the inverse of `to_flax`)."""
  if leaf == 'kernel' and array.ndim >= 3:
    return np.transpose(array, (array.ndim - 1, array.ndim - 2) + tuple(range(array.ndim - 2)))
  if leaf == 'kernel' and array.ndim == 2:
    return array.T
  return array


def export(variables: PyTree, key_fn: KeyFn) -> StateDict:
  """Flax variables -> a PyTorch-layout state dict under `key_fn`'s keys (for PyTorch users)."""
  state_dict: StateDict = {}
  for path, value in jax.tree_util.tree_leaves_with_path(variables):
    names = tuple(str(getattr(p, 'key', p)) for p in path)
    keys = key_fn(names)
    value = np.asarray(value)
    if isinstance(keys, str):
      state_dict[keys] = from_flax(value, names[-1])
    elif keys:
      state_dict.update({k: from_flax(v, names[-1]) for k, v in zip(keys, value)})
  return state_dict
