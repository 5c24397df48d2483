"""The training loop's own throughput on the `:tiny` configs: steps/s and clips/s between log steps.

    python benchmarks/loop_throughput.py                    # every :tiny config, 20 timed steps
    python benchmarks/loop_throughput.py --configs=selavi_vggsound --steps=40
    PYTHONPATH=../other-checkout python benchmarks/loop_throughput.py   # another version of avssl

Each config trains on avsynth records made once under `--workdir` (real mp4s through make_records; with
TV-L1 flow for GOCA) through `avssl.loop.train`, with its scheduled updates (label updates, clustering)
and evaluations switched off, so that the figure is the loop's: feeding batches, the step, fetching
and checking metrics. Steps are timed from the first log step (compiling is over) to the last, on the
process's devices (one CPU device unless XLA_FLAGS say otherwise). The same script runs against an
older checkout (`PYTHONPATH`), whose `setup` and `loop.train` have the same signatures: the ratio of two
runs on one machine is the loop's change. Prints the machine.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import machine

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = {  # name: (config file, needs flow)
    'selavi_vggsound': ('selavi_vggsound', False),
    'selavi_demo': ('selavi_demo', False),
    'xdc_kinetics': ('xdc_kinetics', False),
    'goca_ucf101': ('goca_ucf101', True),
    'iicl_kinetics': ('iicl_kinetics', False),
}
LOG_EVERY = 5


def make_records(root: pathlib.Path, flow: bool) -> str:
  """64 avsynth clips (6 classes, 1.2 s at 40², 10 fps, 16 kHz) as records, made once."""
  from avssl.data_prep import annotations, make_records as make, make_synthetic  # pylint: disable=g-import-not-at-top
  out = root / ('records_flow' if flow else 'records')
  if (out / 'manifest.json').exists():
    return str(out)
  videos = root / ('videos_flow' if flow else 'videos')
  make_synthetic.main([f'--output_dir={videos}', '--num_videos=64', '--num_classes=6', '--size=40',
                       '--fps=10', '--duration=1.2', '--sample_rate=16000', '--test_fraction=0.1',
                       '--workers=1'] + (['--flow_friendly'] if flow else []))
  settings = make.Settings(fps=10.0, short_side=40, sample_rate=16000, min_duration=1.0, flow=flow,
                           audio_only=False, require_audio=True, jpeg_quality=90,
                           examples_per_shard=16)
  make.run(annotations.parse('folder', root=str(videos)), str(out), settings, dataset='folder',
           workers=0)
  return str(out)


def measure(name: str, records: str, steps: int) -> tuple[float, int]:
  """(steps/s between the first and the last log step, global batch) of `name`'s :tiny config."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from avssl import config_lib, loop  # pylint: disable=g-import-not-at-top
  from avssl.modes import setup as setup_mode  # pylint: disable=g-import-not-at-top
  config = config_lib.load(f'{REPO / "configs" / CONFIGS[name][0]}.py:tiny')
  config.data.dir = records
  config.total_steps, config.total_epochs = LOG_EVERY + steps, None
  config.log_every_steps, config.log_every_epochs = LOG_EVERY, None
  config.checkpoint_every_steps, config.checkpoint_every_epochs = 10**6, None
  config.eval_every_steps, config.eval_every_epochs = None, None
  logged: dict[int, float] = {}

  class Clock(metric_writers.MetricWriter):
    """Notes when each log step's scalars arrive; writes nothing."""
    def write_scalars(self, step, scalars):
      if 'loss' in scalars:
        logged[step] = time.perf_counter()
    def write_summaries(self, *args, **kwargs): pass
    def write_images(self, *args, **kwargs): pass
    def write_videos(self, *args, **kwargs): pass
    def write_audios(self, *args, **kwargs): pass
    def write_texts(self, *args, **kwargs): pass
    def write_histograms(self, *args, **kwargs): pass
    def write_hparams(self, *args, **kwargs): pass
    def flush(self): pass
    def close(self): pass

  with tempfile.TemporaryDirectory() as workdir:
    run = setup_mode.setup(config, workdir)
    run.method.scheduled_update = lambda state, step: None  # The loop alone.
    loop.train(run, Clock(), lambda state, step: None)
    run.checkpointer.close()
  first, last = min(logged), max(logged)
  return (last - first) / (logged[last] - logged[first]), config.batch_size


def main(argv: list[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--steps', type=int, default=20, help='timed steps (after the first log step)')
  parser.add_argument('--workdir', default=os.path.join(tempfile.gettempdir(), 'avssl_loop_bench'))
  args = parser.parse_args(argv)
  import avssl  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(args.workdir)
  root.mkdir(parents=True, exist_ok=True)
  print(f'machine: {machine.jax_devices()}; host: {machine.cpu()}; avssl from '
        f'{pathlib.Path(avssl.__file__).parent.parent}', flush=True)
  rates = {}
  for name in args.configs.split(','):
    records = make_records(root, CONFIGS[name][1])
    rate, batch = measure(name, records, args.steps)
    rates[name] = rate
    print(f'{name + ":tiny":<22} {rate:8.2f} steps/s {rate * batch:9.1f} clips/s (batch {batch})',
          flush=True)
  return rates


if __name__ == '__main__':
  sys.exit(main() and 0)
