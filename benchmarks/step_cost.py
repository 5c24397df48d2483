"""XLA's cost of one training step of each paper config: FLOPs, bytes and memory per device, roofline.

    python benchmarks/step_cost.py                                   # the paper configs, b = 8, 16
    python benchmarks/step_cost.py --configs=selavi_vggsound --batch_sizes=16,32,64
    python benchmarks/step_cost.py --tiny                            # :tiny configs, a smoke check

Every row is one compile of the full-size step for the backend at hand: on a 2-core CPU 25-40 s for
SeLaVi, XDC and IICL, so the default run takes a while there; `--configs`, `--variants` and
`--batch_sizes` pick a part, and each row is printed as soon as it is measured.

Each config's training step (`avssl.loop.make_train_step`) is lowered on the abstract state of
`avssl.setup(..., abstract=True)` and a global batch of `ShapeDtypeStruct`s built from the config's
shapes (no records, no init compile), compiled for the backend at hand, and read back: the cost analysis
(FLOPs and bytes accessed per step and device) and the memory analysis (argument, output, temporary
and generated-code bytes per device). These are the figures of the backend it compiled for (CPU here):
an accelerator's compiler fuses and schedules differently, so its memory is close but not equal, and
XLA:CPU computes bfloat16 convolutions in float32, so on CPU the bfloat16 variant saves no memory.

From them, per device preset (peak FLOP/s, memory bandwidth, memory size; `--peak_flops`,
`--bandwidth`, `--memory` add a custom one): the roofline step time max(FLOPs / peak, bytes /
bandwidth), the largest per-device batch that fits the memory (a straight line through the measured
memory against the batch), and the fewest devices that hold the paper's global batch, as the smallest
TPU v4 slice and the smallest number of GPUs. The FLOP count of R(2+1)D-18 is checked against a hand
count of its convolutions. States the machine it ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import machine
from avssl import config_lib, loop, sharding
from avssl.data import datasets, pipeline
from avssl.models import r2plus1d
from avssl.modes import setup as setup_mode


CONFIGS = pathlib.Path(__file__).resolve().parent.parent / 'configs'


@dataclasses.dataclass(frozen=True)
class Paper:
  """A paper config as the benchmark builds it: `configs/<file>.py:<arg>`, the sample rate its records are made
  with (it sets the spectrogram's frame count; the config files' docstrings give the `make_records`
  command) and the training videos (they size the method's per-video state, nothing else)."""
  file: str
  arg: str
  sample_rate: int
  num_train: int


# Kinetics-400's training split is about 240k videos (XDC §4.1, IICL §IV-A); VGG-Sound's as SeLaVi
# trained on it 170,752; UCF101 split 1 9,537.
PAPERS = {
    'selavi_vggsound': Paper('selavi_vggsound', '', 24000, 170_752),
    'xdc_kinetics': Paper('xdc_kinetics', '', 16000, 240_000),
    'goca_ucf101_s3d': Paper('goca_ucf101', 'backbone=s3d', 16000, 9_537),
    'goca_ucf101_r2plus1d': Paper('goca_ucf101', 'backbone=r2plus1d', 16000, 9_537),
    'iicl_kinetics': Paper('iicl_kinetics', '', 16000, 240_000),
}


@dataclasses.dataclass(frozen=True)
class Device:
  """One accelerator: dense matrix peak in bfloat16 and in float32 (what XLA runs a float32 matmul or
  convolution at by default: bf16 passes on a TPU, TF32 on an NVIDIA GPU), memory bandwidth, memory."""
  peak_bf16: float  # FLOP/s
  peak_f32: float  # FLOP/s
  bandwidth: float  # bytes/s
  memory: float  # bytes

  def peak(self, dtype: str) -> float:
    return self.peak_bf16 if dtype == 'bfloat16' else self.peak_f32


# Sources: TPU v4, Google's Cloud TPU v4 page (docs.cloud.google.com/tpu/docs/v4): 275 TFLOP/s bf16
# per chip, 32 GiB HBM2 at 1200 GB/s. A100 80GB SXM, NVIDIA's A100 datasheet: 312 TFLOP/s bf16 dense,
# 156 TF32 dense, 2,039 GB/s, 80 GB. H100 SXM, NVIDIA's H100 datasheet: 1,979 TFLOP/s bf16 and 989
# TF32 with sparsity (half that dense), 3.35 TB/s, 80 GB. H200 SXM, NVIDIA's H200 page: the H100's
# compute, 4.8 TB/s, 141 GB.
PRESETS = {
    'tpu_v4': Device(275e12, 275e12, 1.2e12, 32 * 2**30),
    'a100_80gb': Device(312e12, 156e12, 2.039e12, 80e9),
    'h100_sxm': Device(989e12, 494.5e12, 3.35e12, 80e9),
    'h200': Device(989e12, 494.5e12, 4.8e12, 141e9),
}
GPU_PRESET = 'a100_80gb'  # The 80 GB GPU the device count is given for (an H100 has the same memory).

VARIANTS = {
    'float32': {},
    'bfloat16': {'dtype': 'bfloat16'},
    'bfloat16_remat': {'dtype': 'bfloat16', 'remat': 'blocks'},
}


@dataclasses.dataclass
class Row:
  """One compiled step: its config, variant, per-device batch and XLA's figures (per device)."""
  config: str
  variant: str
  batch: int
  paper_batch: int
  flops: float
  bytes_accessed: float
  argument: int
  output: int
  alias: int
  temp: int
  code: int
  state: int  # Bytes of the training state (parameters, optimiser, method state) per device.

  @property
  def memory(self) -> int:
    """Bytes live on a device during the step: inputs, outputs not written over a donated input, and
    temporaries."""
    return self.argument + self.output - self.alias + self.temp

  def roofline(self, device: Device) -> float:
    """Seconds per step if bound by compute or by memory traffic, whichever is slower."""
    dtype = 'bfloat16' if self.variant.startswith('bfloat16') else 'float32'
    return max(self.flops / device.peak(dtype), self.bytes_accessed / device.bandwidth)


def measure(name: str, paper: Paper, variant: str, batch: int, tiny: bool) -> Row | None:
  """Compiles one config's training step at `batch` clips per device; None (with a note) where the
  variant needs a config key this version does not have."""
  arg = ','.join(filter(None, [paper.arg, 'tiny' if tiny else '']))
  config = config_lib.load(f'{CONFIGS / paper.file}.py:{arg}')
  missing = [key for key in VARIANTS[variant] if key not in config.model]
  if missing:
    print(f'note: {name} {variant} skipped: config.model has no {", ".join(missing)} yet')
    return None
  config.model.update(VARIANTS[variant])
  if 'goca' in config:  # Its prototypes' values (50,000 SGD steps, minutes here) change no cost.
    config.goca.separation_steps = 1
  paper_batch = config.batch_size
  config.batch_size = batch * jax.device_count()
  example = pipeline.example_spec(config.data, paper.sample_rate)
  num_train = max(paper.num_train, config.batch_size) if not tiny else 4 * config.batch_size
  data = datasets.Described(num_train=num_train, num_eval=0,
                            steps_per_epoch=num_train // config.batch_size, classes=[], records='')
  with tempfile.TemporaryDirectory() as workdir:
    run = setup_mode.setup(config, workdir, abstract=True, data=data, example=example)
    run.checkpointer.close()
  batch_sharding = sharding.batch_sharded(run.mesh)
  global_batch = {k: jax.ShapeDtypeStruct((config.batch_size, *s.shape[1:]), s.dtype,
                                          sharding=batch_sharding) for k, s in example.items()}
  start = time.perf_counter()
  compiled = loop.make_train_step(run).lower(run.state, global_batch).compile()
  print(f'{name} {variant} b={batch}: lowered and compiled in {time.perf_counter() - start:.0f} s',
        flush=True)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  memory = compiled.memory_analysis()
  state = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
              for x in jax.tree.leaves(run.state))
  return Row(name, variant, batch, paper_batch, float(cost['flops']),
             float(cost['bytes accessed']), memory.argument_size_in_bytes,
             memory.output_size_in_bytes, memory.alias_size_in_bytes, memory.temp_size_in_bytes,
             memory.generated_code_size_in_bytes, state)


def fit_memory(rows: Sequence[Row]) -> tuple[float, float]:
  """(bytes at batch 0, bytes per clip) of one config and variant: a least-squares line through the
  measured memory against the per-device batch; from one batch size, the line through it and the
  state's bytes (everything but the state taken to grow with the batch)."""
  if len({r.batch for r in rows}) > 1:
    slope, intercept = np.polyfit([r.batch for r in rows], [r.memory for r in rows], 1)
    return float(intercept), float(slope)
  row = rows[0]
  return float(row.state), (row.memory - row.state) / row.batch


def fewest_devices(global_batch: int, max_batch: int, *, smallest: int = 1,
                   powers_of_two: bool = False) -> int | None:
  """The fewest devices (at least `smallest`; a power of two for TPU slices) over which `global_batch`
  splits evenly with at most `max_batch` per device; None where it never does."""
  if max_batch < 1:
    return None
  n = max(smallest, -(-global_batch // max_batch))
  while n <= global_batch:
    if global_batch % n == 0 and (not powers_of_two or n & (n - 1) == 0):
      return n
    n += 1
  return None


def r2plus1d_18_forward_flops(frames: int, size: int, *, padded: bool = True) -> float:
  """A hand count of R(2+1)D-18's forward FLOPs on one `frames` x `size`² clip: 2 per multiply-add of
  every convolution (torchvision's layer sizes, `avssl/models/r2plus1d.py`); batch norm, ReLU, the
  residual sums and the pooling are left out (under 1%). `padded` counts the taps on the zero padding
  too (the usual convention: torchvision's 40.52 G multiply-adds at 16x112²); without, only the taps
  inside the input, as XLA's cost analysis counts them."""
  total = 0.0
  shape, c = [frames, size, size], 3

  def taps(n: int, k: int, s: int) -> tuple[int, int]:
    """(output length, multiply-adds along one axis of a `k` kernel, stride `s`, padding k // 2)."""
    p = k // 2
    out = (n + 2 * p - k) // s + 1
    valid = sum(1 for o in range(out) for j in range(k) if 0 <= o * s - p + j < n)
    return out, out * k if padded else valid

  def conv(c_out: int, kernel: tuple[int, ...], stride: tuple[int, ...]) -> None:
    nonlocal shape, c, total
    axes = [taps(n, k, s) for n, k, s in zip(shape, kernel, stride)]
    shape = [out for out, _ in axes]
    total += 2.0 * c * c_out * math.prod(m for _, m in axes)
    c = c_out

  conv(45, (1, 7, 7), (1, 2, 2))
  conv(64, (3, 1, 1), (1, 1, 1))
  for stage, width in enumerate(r2plus1d.WIDTHS):
    for block in range(r2plus1d.DEPTHS[18][stage]):
      s = 2 if stage and not block else 1
      c_in = c
      mid = r2plus1d.mid_channels(c_in, width)
      conv(mid, (1, 3, 3), (1, s, s))
      conv(width, (3, 1, 1), (s, 1, 1))
      conv(mid, (1, 3, 3), (1, 1, 1))
      conv(width, (3, 1, 1), (1, 1, 1))
      if s != 1 or c_in != width:  # The 1x1x1 strided shortcut: the block's output from its input.
        total += 2.0 * math.prod(shape) * width * c_in
  return total


def xla_r2plus1d_18_flops(frames: int, size: int) -> tuple[float, float]:
  """XLA's FLOPs of R(2+1)D-18 on one clip: forward (train-mode batch norm) and forward + backward
  (gradients of the parameters), from the lowered programs' cost analysis (no compile)."""
  model = r2plus1d.R2Plus1D()
  clip = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(clip.shape),
                                                train=False))

  def forward(variables, video):
    out, _ = model.apply(variables, video, train=True, mutable=['batch_stats'])
    return jnp.sum(out)

  def training(variables, video):
    return jax.grad(lambda params: forward({**variables, 'params': params}, video))(
        variables['params'])

  def flops(fn) -> float:
    cost = jax.jit(fn).lower(variables, clip).cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)['flops'])

  return flops(forward), flops(training)


def _devices(args: argparse.Namespace) -> dict[str, Device]:
  """The presets, plus 'custom' where `--peak_flops`, `--bandwidth` and `--memory` are all given."""
  devices = dict(PRESETS)
  given = (args.peak_flops, args.bandwidth, args.memory)
  if any(given):
    if not all(given):
      raise SystemExit('--peak_flops, --bandwidth and --memory go together')
    devices['custom'] = Device(args.peak_flops, args.peak_flops, args.bandwidth, args.memory)
  return devices


def _cost_columns(devices: dict[str, Device]) -> str:
  return (f'{"config":<21} {"variant":<15} {"b/dev":>5} {"GFLOP":>9} {"GB acc":>7} {"arg GB":>7} '
          f'{"out GB":>7} {"temp GB":>8} {"live GB":>8} {"code MB":>8} '
          + ' '.join(f'{name + " ms":>13}' for name in devices))


def _cost_line(r: Row, devices: dict[str, Device]) -> str:
  return (f'{r.config:<21} {r.variant:<15} {r.batch:>5} {r.flops / 1e9:>9.1f} '
          f'{r.bytes_accessed / 1e9:>7.2f} {r.argument / 1e9:>7.3f} {r.output / 1e9:>7.3f} '
          f'{r.temp / 1e9:>8.3f} {r.memory / 1e9:>8.3f} {r.code / 1e6:>8.2f} '
          + ' '.join(f'{r.roofline(d) * 1e3:>13.1f}' for d in devices.values()))


def _print_costs(rows: Sequence[Row], devices: dict[str, Device]) -> None:
  print('\nper device and step (XLA cost and memory analysis of the compiled training step):')
  print(_cost_columns(devices))
  for r in rows:
    print(_cost_line(r, devices))
  print('live = argument + output - aliased (donated state) + temp; roofline ms = max(FLOPs / peak, '
        'bytes / bandwidth), peak bf16 for the bfloat16 variants, TF32 (GPUs) or bf16 passes (TPU) '
        'for float32')
  if jax.default_backend() == 'cpu' and any(r.variant.startswith('bfloat16') for r in rows):
    print('on CPU, XLA computes bfloat16 convolutions in float32 (it converts their operands to '
          'float32 and the result back), so the bfloat16 rows keep float32 temporaries and add the '
          "conversions' bytes: what bfloat16 saves shows only when compiled for an accelerator")
  if jax.default_backend() == 'cpu' and any(r.variant.endswith('remat') for r in rows):
    print("on CPU, XLA's memory analysis shows no saving from rematerialisation (nor for a plain "
          'stack of 16 jax.checkpoint-ed layers: 197 -> 193 MB of temporaries), only its '
          'recomputed FLOPs: what remat saves is measured on an accelerator '
          '(benchmarks/accelerator.sh prints each variant\'s memory analysis)')


def _print_fit(rows: Sequence[Row], devices: dict[str, Device]) -> None:
  print('\nlargest per-device batch that fits (a straight line through the measured live memory '
        'against the batch; from one batch size, through it and the state) and the fewest devices '
        "for the paper's global batch:")
  print(f'{"config":<21} {"variant":<15} {"paper B":>7} {"GB + GB/b":>13} '
        + ' '.join(f'{name + " b":>13}' for name in devices)
        + f' {"TPU v4 slice":>13} {"80 GB GPUs":>10}')
  groups: dict[tuple[str, str], list[Row]] = {}
  for r in rows:
    groups.setdefault((r.config, r.variant), []).append(r)
  for (config, variant), group in groups.items():
    intercept, slope = fit_memory(group)
    fits = {name: int((d.memory - intercept) // slope) for name, d in devices.items()}
    paper_batch = group[0].paper_batch
    chips = fewest_devices(paper_batch, fits['tpu_v4'], smallest=4, powers_of_two=True)
    gpus = fewest_devices(paper_batch, fits[GPU_PRESET])
    print(f'{config:<21} {variant:<15} {paper_batch:>7} '
          f'{f"{intercept / 1e9:.2f}+{slope / 1e9:.3f}":>13} '
          + ' '.join(f'{max(b, 0):>13}' for b in fits.values())
          + f' {f"v4-{2 * chips}" if chips else "none":>13} {gpus or "none":>10}')
  print('TPU v4 slice: the fewest chips (a power of two, at least 4; v4-N has N/2 chips) that split '
        'the batch evenly; GPUs: the fewest that do')


def _print_hand_count(frames: int, size: int) -> None:
  hand = r2plus1d_18_forward_flops(frames, size)
  valid = r2plus1d_18_forward_flops(frames, size, padded=False)
  forward, training = xla_r2plus1d_18_flops(frames, size)
  print(f'\nR(2+1)D-18 on one {frames}x{size}x{size} clip, GFLOP (2 per multiply-add of the '
        f'convolutions): hand count forward {hand / 1e9:.1f} with the taps on the padding, '
        f'{valid / 1e9:.1f} without; XLA forward {forward / 1e9:.1f} (XLA / hand {forward / hand:.3f},'
        f' / hand without padding {forward / valid:.3f}); training ~3x forward: hand '
        f'{3 * hand / 1e9:.1f}, XLA forward + backward {training / 1e9:.1f} (ratio '
        f'{training / (3 * hand):.3f})')


def main(argv: Sequence[str] | None = None) -> list[Row]:
  """Compiles, prints and returns the rows of `--configs` x `--variants` x `--batch_sizes`."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(PAPERS),
                      help=f'comma-separated, of {", ".join(PAPERS)}')
  parser.add_argument('--batch_sizes', default='8,16',
                      help='examples per device, comma-separated (two or more fit a line)')
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help=f'comma-separated, of {", ".join(VARIANTS)}')
  parser.add_argument('--tiny', action='store_true', help="the configs' :tiny variants")
  parser.add_argument('--peak_flops', type=float, default=0.0, help='a custom device: FLOP/s')
  parser.add_argument('--bandwidth', type=float, default=0.0, help='a custom device: bytes/s')
  parser.add_argument('--memory', type=float, default=0.0, help='a custom device: bytes')
  parser.add_argument('--hand_count', action=argparse.BooleanOptionalAction, default=True,
                      help="R(2+1)D-18's FLOPs on 30x112² against a hand count")
  args = parser.parse_args(argv)
  devices = _devices(args)
  names, variants = args.configs.split(','), args.variants.split(',')
  unknown = [n for n in names if n not in PAPERS] + [v for v in variants if v not in VARIANTS]
  if unknown:
    raise SystemExit(f'unknown config or variant: {", ".join(unknown)}')
  print(f'machine: {machine.jax_devices()}; host: {machine.cpu()}')
  print(f'compiled for {jax.default_backend()}; global batch = per-device batch x '
        f'{jax.device_count()} device(s){"; :tiny configs" if args.tiny else ""}')
  print(_cost_columns(devices))
  rows = []
  for name in names:
    for variant in variants:
      for batch in (int(b) for b in args.batch_sizes.split(',')):
        row = measure(name, PAPERS[name], variant, batch, args.tiny)
        if row is not None:  # Each row as soon as it is measured: a full run takes a while.
          print(_cost_line(row, devices), flush=True)
          rows.append(row)
  _print_costs(rows, devices)
  if rows:
    _print_fit(rows, devices)
  if args.hand_count:
    _print_hand_count(30, 112)
  return rows


if __name__ == '__main__':
  main()
