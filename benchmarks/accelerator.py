"""What avssl does on one accelerator, measured: the parts of a SeLaVi VGG-Sound run that cost time.

    bash benchmarks/accelerator.sh              # all parts, one table (the script a GPU session runs)
    python benchmarks/accelerator.py jax --results=/tmp/acc.json [--tiny] [--budget_s=420]
    python benchmarks/accelerator.py torch --results=/tmp/acc.json [--tiny]
    python benchmarks/accelerator.py table --results=/tmp/acc.json

Parts (each a row or a few of the table; each is skipped with a note, not fatal, when it fails or the
time budget is spent, so that one run on a borrowed machine always returns what it measured):

- **peaks**: the device's own ceilings, measured: a bf16 and a float32 matrix product (TFLOP/s) and a
  large elementwise pass (bytes read + written per second). Utilisations below are against these.
- **train step**: SeLaVi's VGG-Sound training step (`configs/selavi_vggsound.py`: R(2+1)D-18 on
  30×112² clips, the audio ResNet on 257×99 logfbanks, 10 heads of 309) on random batches already on the
  device, in float32, bfloat16 and bfloat16 + remat of the encoder blocks: clips/s/device, step time,
  XLA's memory analysis of the compiled step, and model-FLOP utilisation (R(2+1)D-18's hand-counted
  FLOPs, so that recomputation is not counted as useful work) against the measured bf16 peak.
- **encoder**: R(2+1)D-18 alone (forward + backward + SGD) next to torchvision's `r2plus1d_18` on the
  same device and batch (the `torch` part, in its own process so that the two frameworks do not share
  the device's memory).
- **sinkhorn**: SeLaVi's label assignment at VGG-Sound scale (N = 170,752 × K = 309 × 10 heads, λ = 20,
  Gaussian prior, `avssl.clustering.sinkhorn_heads`) in its default chunking for the backend, in the
  CPU's 128-row chunks and in the log domain, against the memory-bandwidth bound of its iterations:
  each reads the N × K kernel twice (the row and the column scaling).
- **k-means**: 1M × 512 → 1,000 (`avssl.clustering.kmeans`, 10 Lloyd iterations), with and without the
  k-means++ initialisation, in 4,096- and 65,536-row blocks, against the FLOP rate of its distance
  products (2·N·D·K per iteration).

Built to run where only jax, flax, optax, orbax and numpy are (no TensorFlow, ml-collections' wheel
carried: `benchmarks/fetch_wheels.sh`); the input pipeline (TensorFlow, PyAV) is measured by
`benchmarks/input_pipeline.py` where they are installed. `--tiny` runs every part at toy sizes (the
test suite runs it so on CPU with TensorFlow hidden).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import machine
from step_cost import r2plus1d_18_forward_flops

REPO = pathlib.Path(__file__).resolve().parent.parent
VARIANTS = {
    'float32': {},
    'bfloat16': {'dtype': 'bfloat16'},
    'bfloat16 + remat': {'dtype': 'bfloat16', 'remat': 'blocks'},
}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The problem sizes of one run: the paper's, or toy ones for CPU tests."""
  batch: int  # Clips per device in a training step.
  steps: int  # Timed training steps (after two warm-up steps).
  matmul: int  # Side of the square matrix products of the peaks.
  copy_bytes: int
  sinkhorn: tuple[int, int, int]  # (heads, N, K)
  kmeans: tuple[int, int, int]  # (N, D, K)
  config_arg: str
  encoder_dtypes: tuple[str, ...] = ('float32', 'bfloat16')
  step_variants: tuple[str, ...] = tuple(VARIANTS)


PAPER = Sizes(batch=32, steps=10, matmul=8192, copy_bytes=2 << 30, sinkhorn=(10, 170_752, 309),
              kmeans=(1_000_000, 512, 1_000), config_arg='')
TINY = Sizes(batch=2, steps=2, matmul=256, copy_bytes=1 << 20, sinkhorn=(2, 512, 8),
             kmeans=(2048, 16, 8), config_arg='tiny', encoder_dtypes=('bfloat16',),
             step_variants=('float32', 'bfloat16 + remat'))


class Results:
  """Rows of the final table, kept in a JSON file that every part appends to as soon as it measures,
  so that a run cut short still returns what it had."""

  def __init__(self, path: str):
    self.path = path
    self.data: dict[str, Any] = {'machine': {}, 'rows': [], 'notes': []}
    if os.path.exists(path):
      with open(path) as f:
        self.data = json.load(f)

  def _save(self) -> None:
    with open(self.path, 'w') as f:
      json.dump(self.data, f, indent=1)

  def machine(self, **facts: str) -> None:
    self.data['machine'].update(facts)
    self._save()

  def row(self, part: str, what: str, value: float, unit: str, detail: str = '') -> None:
    self.data['rows'].append(dict(part=part, what=what, value=value, unit=unit, detail=detail))
    print(f'{part:<12} {what:<44} {value:>12.4g} {unit:<10} {detail}', flush=True)
    self._save()

  def note(self, text: str) -> None:
    self.data['notes'].append(text)
    print(f'note: {text}', flush=True)
    self._save()

  def value(self, part: str, what: str) -> float | None:
    for row in self.data['rows']:
      if row['part'] == part and row['what'] == what:
        return row['value']
    return None


def timed(fn: Callable[[], Any], repeats: int) -> float:
  """Median seconds of `fn()` (which must block until its device work is done) after one warm-up."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


# The jax parts.


def peaks(results: Results, sizes: Sizes) -> None:
  """The device's bf16 and float32 matrix rates and its elementwise memory bandwidth."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = sizes.matmul
  product = jax.jit(jnp.matmul)
  for dtype in ('bfloat16', 'float32'):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    seconds = timed(functools.partial(lambda a, b: product(a, b).block_until_ready(), a, b), 10)
    results.row('peaks', f'matmul {n}³ {dtype}', 2 * n**3 / seconds / 1e12, 'TFLOP/s',
                'random operands; float32 at XLA\'s default precision (TF32 on NVIDIA GPUs)')
  x = jax.random.normal(jax.random.PRNGKey(2), (sizes.copy_bytes // 4,), jnp.float32)
  add = jax.jit(lambda x: x + 1.0)
  seconds = timed(lambda: add(x).block_until_ready(), 10)
  results.row('peaks', f'x + 1 over {sizes.copy_bytes / 2**30:.2g} GiB float32',
              2 * sizes.copy_bytes / seconds / 1e9, 'GB/s', 'bytes read + written')


def _selavi_run(sizes: Sizes, variant: str, workdir: str):
  """The SeLaVi VGG-Sound run of `variant` at `sizes.batch` clips per device, built from shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  from avssl import config_lib  # pylint: disable=g-import-not-at-top
  from avssl.data import datasets, pipeline  # pylint: disable=g-import-not-at-top
  from avssl.modes import setup as setup_mode  # pylint: disable=g-import-not-at-top
  config = config_lib.load(f'{REPO / "configs" / "selavi_vggsound.py"}:{sizes.config_arg}')
  config.model.update(VARIANTS[variant])
  config.batch_size = sizes.batch * jax.device_count()
  # VGG-Sound as SeLaVi trained on it: 170,752 videos (sizes the per-video self-labels), 24 kHz audio.
  num_train = 170_752 if not sizes.config_arg else 4 * config.batch_size
  data = datasets.Described(num_train=num_train, num_eval=0, classes=[], records='',
                            steps_per_epoch=num_train // config.batch_size)
  example = pipeline.example_spec(config.data, 24_000)
  return setup_mode.setup(config, workdir, data=data, example=example)


def _random_batch(run, key):
  """A global batch of the example's shapes, drawn on the devices (no host transfer to time)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from avssl import sharding  # pylint: disable=g-import-not-at-top
  size = run.config.batch_size
  out_sharding = sharding.batch_sharded(run.mesh)

  def draw(key):
    batch = {}
    for i, (name, spec) in enumerate(sorted(run.example.items())):
      shape = (size, *spec.shape[1:])
      if name in ('index', 'label'):
        batch[name] = jnp.arange(size, dtype=spec.dtype) % run.data.num_train
      elif spec.dtype == jnp.uint8:
        batch[name] = jax.random.randint(jax.random.fold_in(key, i), shape, 0, 256).astype(jnp.uint8)
      else:
        batch[name] = jax.random.normal(jax.random.fold_in(key, i), shape, spec.dtype)
    return batch

  return jax.jit(draw, out_shardings=out_sharding)(key)


def _seconds_per_step(step: Callable[[Any, Any], tuple[Any, Any]], state: Any, batch: Any,
                      steps: int) -> tuple[float, Any]:
  """Seconds per call of a (donating) `step(state, batch) -> (state, out)` over `steps` calls after
  two warm-up calls, waiting for the device at both ends; and the last call's `out`."""
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(2):
    state, out = step(state, batch)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    state, out = step(state, batch)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps, out


def train_step(results: Results, sizes: Sizes, variant: str) -> None:
  """Clips/s/device, step time, peak memory and MFU of SeLaVi's training step in `variant`."""
  import jax  # pylint: disable=g-import-not-at-top
  from avssl import loop  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    run = _selavi_run(sizes, variant, workdir)
    run.checkpointer.close()
    batch = _random_batch(run, jax.random.PRNGKey(0))
    compiled = loop.make_train_step(run).lower(run.state, batch).compile()
    setup_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    seconds, metrics = _seconds_per_step(compiled, run.state, batch, sizes.steps)
    loss = float(metrics['loss'])
  devices = jax.device_count()
  per_device = run.config.batch_size / seconds / devices
  label = f'SeLaVi VGG-Sound {variant}'
  results.row('train step', f'{label}, clips/s/device', per_device, 'clips/s',
              f'{sizes.batch}/device, {seconds * 1e3:.1f} ms/step, loss {loss:.3f}, '
              f'build + compile {setup_seconds:.0f} s')
  # Model FLOPs from a hand count: a GPU executable's cost analysis leaves out the convolutions it
  # hands to cuDNN (85 GFLOP for a 32-clip step on an H200), and XLA's count with remat would include
  # the recomputation. Training is ~3x the forward pass.
  data = run.config.data
  flops = 3 * r2plus1d_18_forward_flops(data.num_frames, data.crop_size, padded=False) * sizes.batch
  peak = results.value('peaks', f'matmul {sizes.matmul}³ bfloat16')
  if peak:
    results.row('train step', f'{label}, MFU', flops / seconds / (peak * 1e12) * 100, '%',
                "R(2+1)D-18's hand-counted FLOPs (forward x 3; the audio encoder and heads left out) / "
                'step time / measured bf16 matmul rate')
  if memory is not None:
    live = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
    results.row('train step', f'{label}, memory', live / 2**30, 'GiB',
                f'XLA memory analysis: temp {memory.temp_size_in_bytes / 2**30:.1f} GiB + arguments '
                f'and outputs (state donated)')


def encoder(results: Results, sizes: Sizes, dtype: str) -> None:
  """R(2+1)D-18 alone, forward + backward + SGD on 30×112² clips: the jax side of the torch row."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from avssl.models import common, r2plus1d  # pylint: disable=g-import-not-at-top
  frames, size, depth = (30, 112, 18) if not sizes.config_arg else (2, 16, 10)
  model = r2plus1d.R2Plus1D(depth=depth, num_classes=400, norm=common.Norm(dtype=jnp.dtype(dtype)))
  video = jax.random.normal(jax.random.PRNGKey(0), (sizes.batch, frames, size, size, 3))
  labels = jnp.arange(sizes.batch) % 400
  variables = jax.jit(lambda v: model.init(jax.random.PRNGKey(1), v, train=False))(video[:1])
  tx = optax.sgd(0.01, momentum=0.9)
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))

  @jax.jit
  def step(state, video):
    params, stats, opt = state

    def loss(params):
      logits, new = model.apply({'params': params, 'batch_stats': stats}, video, train=True,
                                mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), labels).mean(), new['batch_stats']

    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), stats, opt), value

  seconds, _ = _seconds_per_step(step, state, video, sizes.steps)
  results.row('encoder', f'avssl R(2+1)D-{depth} {dtype} (jax)', sizes.batch / seconds, 'clips/s',
              f'{sizes.batch} clips of {frames}x{size}², {seconds * 1e3:.1f} ms/step')


def sinkhorn(results: Results, sizes: Sizes) -> None:
  """SeLaVi's label assignment at VGG-Sound scale against its memory-bandwidth bound."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from avssl.clustering import sinkhorn as sinkhorn_lib  # pylint: disable=g-import-not-at-top
  heads, n, k = sizes.sinkhorn

  @jax.jit
  def outputs(key):
    """Log-softmax outputs of a partly trained network: skewed true classes plus noise."""
    keys = jax.random.split(key, 3)
    truth = jax.random.categorical(keys[0], jax.random.normal(keys[1], (k,)) * 0.5, shape=(n,))
    logits = 1.5 * jax.random.normal(keys[2], (heads, n, k))
    logits += 2.0 * jax.nn.one_hot(truth, k)
    return jax.nn.log_softmax(logits, axis=-1)

  log_p = jax.block_until_ready(outputs(jax.random.PRNGKey(0)))
  # SeLaVi's marginals (§3.2): a Gaussian prior per head, sorted by the clusters' current masses.
  prior = sinkhorn_lib.gaussian_prior(jax.random.PRNGKey(1), heads, k, n)
  mass = jnp.sum(jnp.exp(log_p), axis=1)
  marginals = jax.vmap(sinkhorn_lib.sorted_marginal)(prior, mass)
  bandwidth = next((r['value'] for r in results.data['rows'] if r['part'] == 'peaks'
                    and r['unit'] == 'GB/s'), None)
  results.note(f'sinkhorn: {heads} heads x N={n:,} x K={k}, λ=20, Gaussian prior, tol 1e-3')
  # The default (the backend's chunking), the CPU's 128-row chunks, and the log-domain mode.
  for mode, chunk, name in [('scaling', None, 'scaling, default chunks'),
                            ('scaling', sinkhorn_lib.CPU_CHUNK, 'scaling, 128-row chunks'),
                            ('log', None, 'log domain')]:
    solve = functools.partial(sinkhorn_lib.sinkhorn_heads, log_p, 20.0, col_marginals=marginals,
                              num_iters=2000, tol=1e-3, mode=mode, chunk_size=chunk)
    jax.block_until_ready(solve().labels)  # Compiles.
    start = time.perf_counter()
    result = solve()
    jax.block_until_ready(result.labels)
    seconds = time.perf_counter() - start
    iterations = int(jnp.sum(result.iterations))
    moved = 2 * iterations * n * k * 4  # Each iteration reads the float32 kernel (or log P) twice.
    share = f', {moved / seconds / 1e9 / bandwidth * 100:.1f} % of the x + 1 rate' if bandwidth else ''
    results.row('sinkhorn', f'{name}: whole solve', seconds, 's',
                f'{iterations} iterations in all, {seconds / iterations * 1e3:.3f} ms each; '
                f'{moved / seconds / 1e9:.0f} GB/s at 2 reads/iteration{share}')


def kmeans(results: Results, sizes: Sizes) -> None:
  """Lloyd's k-means at 1M × 512 → 1,000 against the FLOP bound of its distance products."""
  import jax  # pylint: disable=g-import-not-at-top
  from avssl.clustering import kmeans as kmeans_lib  # pylint: disable=g-import-not-at-top
  n, d, k = sizes.kmeans
  centres = jax.random.normal(jax.random.PRNGKey(0), (k, d)) * 3
  assign = jax.random.randint(jax.random.PRNGKey(1), (n,), 0, k)
  x = jax.block_until_ready(centres[assign] + jax.random.normal(jax.random.PRNGKey(2), (n, d)))
  results.note(f'k-means: N={n:,} x D={d} -> K={k:,}, 10 Lloyd iterations, float32')
  for chunk in (4096, 65536):
    for init in ('k-means++', 'given'):
      start_at = 'k-means++' if init == 'k-means++' else x[:k]
      run = functools.partial(kmeans_lib.kmeans, x, k, iters=10, tol=0.0, seed=0, init=start_at,
                              chunk_size=chunk)
      jax.block_until_ready(run().centroids)  # Compiles.
      start = time.perf_counter()
      result = run()
      jax.block_until_ready(result.centroids)
      seconds = time.perf_counter() - start
      iterations = int(result.iterations)
      flops = 2 * n * d * k * iterations
      what = 'k-means++ + Lloyd' if init == 'k-means++' else 'Lloyd only'
      results.row('k-means', f'{what}, {chunk}-row blocks', seconds, 's',
                  f'{iterations} iterations; distance products {flops / seconds / 1e12:.1f} TFLOP/s '
                  'over the call')


def jax_part(results: Results, sizes: Sizes, budget_s: float, only: str = '') -> None:
  """Every jax part in turn (or those whose name starts with one of the comma-separated `only`),
  each one's failure a note; no new part starts after `budget_s`."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  results.machine(devices=machine.jax_devices(), host=machine.cpu(), python=platform.python_version(),
                  flax=flax.__version__)
  tensorflow = 'tensorflow' in sys.modules
  results.note(f'TensorFlow imported by the jax part: {tensorflow}')
  start = time.monotonic()
  parts: list[tuple[str, Callable[[], None]]] = [
      ('peaks', lambda: peaks(results, sizes)),
      ('sinkhorn', lambda: sinkhorn(results, sizes)),
      ('k-means', lambda: kmeans(results, sizes)),
      *[(f'train step {v}', lambda v=v: train_step(results, sizes, v)) for v in sizes.step_variants],
      *[(f'encoder {d}', lambda d=d: encoder(results, sizes, d)) for d in sizes.encoder_dtypes],
  ]
  for name, part in parts:
    if only and not any(name.startswith(prefix) for prefix in only.split(',')):
      continue
    if time.monotonic() - start > budget_s:
      results.note(f'{name}: skipped, the time budget of {budget_s:.0f} s is spent')
      continue
    began = time.monotonic()
    try:
      part()
    except Exception as e:  # pylint: disable=broad-except  # One failed part must not lose the rest.
      traceback.print_exc()
      results.note(f'{name}: failed: {type(e).__name__}: {str(e)[:300]}')
    jax.clear_caches()
    print(f'({name}: {time.monotonic() - began:.0f} s)', flush=True)


# The torch part.


def torch_part(results: Results, sizes: Sizes) -> None:
  """torchvision's r2plus1d_18, forward + backward + SGD, float32 and bf16 autocast, on the same
  device kind and batch as the jax encoder rows."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError:
    results.note('torch part: skipped, torch or torchvision is not installed')
    return
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  results.machine(torch=f'{torch.__version__} on {device}'
                  + (f' ({torch.cuda.get_device_name()})' if device == 'cuda' else ''))
  torch.backends.cudnn.benchmark = True
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  frames, size = (30, 112) if not sizes.config_arg else (2, 16)
  for dtype in ('float32', 'bfloat16'):
    try:
      seconds = _torch_step_seconds(torch, torchvision, device, sizes, dtype, (frames, size))
    except Exception as e:  # pylint: disable=broad-except  # A note, as the jax parts do.
      traceback.print_exc()
      results.note(f'torch {dtype}: failed: {type(e).__name__}: {str(e)[:300]}')
      continue
    autocast = ' autocast' if dtype == 'bfloat16' else ' (TF32)'
    results.row('encoder', f'torchvision r2plus1d_18 {dtype}{autocast}', sizes.batch / seconds,
                'clips/s', f'{sizes.batch} clips of {frames}x{size}², {seconds * 1e3:.1f} ms/step, '
                'channels_last_3d, cudnn.benchmark')


def _torch_step_seconds(torch, torchvision, device: str, sizes: Sizes, dtype: str,
                        clip: tuple[int, int]) -> float:
  """Seconds per SGD step of r2plus1d_18 on random clips, after three warm-up steps."""
  frames, size = clip
  model = torchvision.models.video.r2plus1d_18(num_classes=400).to(device)
  model = model.to(memory_format=torch.channels_last_3d)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  video = torch.randn(sizes.batch, 3, frames, size, size, device=device).to(
      memory_format=torch.channels_last_3d)
  labels = torch.arange(sizes.batch, device=device) % 400

  def step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
      loss = torch.nn.functional.cross_entropy(model(video), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  for _ in range(3):
    step()
  if device == 'cuda':
    torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(sizes.steps):
    step()
  if device == 'cuda':
    torch.cuda.synchronize()
  return (time.perf_counter() - start) / sizes.steps


# The table.


def table(results: Results) -> None:
  print('\n## avssl on one accelerator')
  for key, value in results.data['machine'].items():
    print(f'- {key}: {value}')
  print('\n| part | what | value | unit | detail |\n| --- | --- | ---: | --- | --- |')
  for row in results.data['rows']:
    print(f'| {row["part"]} | {row["what"]} | {row["value"]:.4g} | {row["unit"]} | {row["detail"]} |')
  jax_rate = {d: results.value('encoder', f'avssl R(2+1)D-18 {d} (jax)')
              for d in ('float32', 'bfloat16')}
  torch_rate = {'float32': results.value('encoder', 'torchvision r2plus1d_18 float32 (TF32)'),
                'bfloat16': results.value('encoder', 'torchvision r2plus1d_18 bfloat16 autocast')}
  for dtype in jax_rate:
    if jax_rate[dtype] and torch_rate[dtype]:
      print(f'\nR(2+1)D-18 {dtype}: avssl (jax) / torchvision = '
            f'{jax_rate[dtype] / torch_rate[dtype]:.2f}')
  for note in results.data['notes']:
    print(f'- note: {note}')


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('part', choices=('jax', 'torch', 'table'))
  parser.add_argument('--results', required=True, help='the JSON file the parts append to')
  parser.add_argument('--tiny', action='store_true', help='toy sizes (CPU tests)')
  parser.add_argument('--budget_s', type=float, default=420.0,
                      help='the jax part starts no new part after this many seconds')
  parser.add_argument('--only', default='',
                      help='jax parts to run, comma-separated name prefixes (e.g. "peaks,train step")')
  args = parser.parse_args(argv)
  sizes = TINY if args.tiny else PAPER
  results = Results(args.results)
  if args.part == 'jax':
    jax_part(results, sizes, args.budget_s, args.only)
  elif args.part == 'torch':
    torch_part(results, sizes)
  else:
    table(results)


if __name__ == '__main__':
  main()
