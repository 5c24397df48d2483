r"""Entry point: `python -m avssl.main --config=configs/<file>.py[:args] --workdir=DIR [--mode=...]`.

Modes (`avssl/modes/`): `train` (resumes from the latest checkpoint in DIR), `eval` (the evaluations
`config.evaluation.run` lists, of that checkpoint), `label` (the cluster labels, browser and plots),
`finetune` (train, select on val and test every fold of `config.finetune.dirs`). Any config value can be overridden with
`--config.key=value`; the config is locked, so a key that does not exist is an error naming it. A
duration overridden in one unit (`--config.total_epochs=2`) clears the config's other one (`total_steps`).

A problem the user must fix (`avssl.errors.UserError`: a missing checkpoint, an unusable config value)
ends the run with one or two lines `avssl: <message>` on stderr and exit status 2; `--verbose` also
logs its traceback.

Several hosts join one run through `jax.distributed` (`avssl/distributed.py`, which logs why it did
or did not): on a multi-host Cloud TPU (v4-32, ...) without a flag, started on every worker at once
(`scripts/tpu_pod.sh`); elsewhere with `--config.distributed.coordinator_address=host:port`,
`num_processes` and `process_id`, or `--config.distributed.auto=true` where JAX detects the cluster
(SLURM, Open MPI), or an exported `JAX_COORDINATOR_ADDRESS`. A single-host TPU stays one process;
`--config.distributed.enabled=false` keeps one process anywhere.
"""

from __future__ import annotations

import logging as std_logging
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from avssl import config_lib, distributed, files, preemption
from avssl.errors import UserError
from avssl.modes import evaluate, finetune, label, train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (with :args).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and outputs: a '
                               'local path or a URL (gs://...).', required=True)
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'label', 'finetune'], 'What to run.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Also log the traceback of an error the user must fix '
                             '(a missing checkpoint, an unusable config value).')
flags.mark_flags_as_required(['config'])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with an unknown `--config.<key>` reported by name instead of a traceback. The
  config file may import its siblings (`from configs import common`) from any working directory."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      config_lib.make_importable(arg[len('--config='):].partition(':')[0])
    elif arg == '--config' and i + 1 < len(argv):
      config_lib.make_importable(argv[i + 1].partition(':')[0])
  try:
    rest = flags.FLAGS(argv)
    config_lib.prefer_given_units(_CONFIG.value, [a[len('--config.'):].partition('=')[0]
                                                  for a in argv if a.startswith('--config.')])
    return rest
  except (AttributeError, KeyError) as e:
    overrides = [a.split('=')[0] for a in argv if a.startswith('--config.')]
    unknown = [a for a in overrides if a.split('.')[-1] in str(e)] or overrides
    hint = re.search(r'Did you mean "\w+"', str(e))
    sys.exit(f'avssl: {", ".join(unknown)}: the config has no such key'
             f'{"; " + hint.group(0) + "?" if hint else ""}; check the spelling against the config file')
  except flags.Error as e:
    sys.exit(f'avssl: {e}')


def _hide_gpus_from_tensorflow() -> None:
  """tf.data runs on the host; without this TensorFlow would reserve accelerator memory JAX needs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')


def _quiet_orbax() -> None:
  """Orbax logs every step of every save at INFO through absl; keep its warnings, drop the chatter."""
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  _quiet_orbax()
  config = _CONFIG.value
  _hide_gpus_from_tensorflow()
  mode, workdir = _MODE.value, files.local_or_url(_WORKDIR.value)
  try:
    distributed.initialize(config)
    logging.info('process %d of %d; %d local devices, %d in all (%s)', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].platform)
    if mode == 'train':
      train.train_and_evaluate(config, workdir)
    elif mode == 'eval':
      evaluate.evaluate(config, workdir, config_flags.get_config_filename(flags.FLAGS['config']))
    elif mode == 'label':
      label.label(config, workdir)
    else:
      finetune.finetune(config, workdir)
  except preemption.Preempted as e:  # Saved and durable: exit 0, so schedulers don't count a failure.
    logging.warning('%s', e)
  except UserError as e:
    report_user_error(e, verbose=_VERBOSE.value)
    sys.exit(2)


def report_user_error(error: UserError, *, verbose: bool) -> None:
  """`avssl: <message>` on stderr; the traceback, which would bury the file or key to fix, only in
  the log and only when `verbose`."""
  if verbose:
    logging.error('The run stopped on an error to fix', exc_info=error)
  print(f'avssl: {error}', file=sys.stderr, flush=True)


def run() -> None:
  """The `avssl` command (a console script of the package): the same as `python -m avssl.main`."""
  # absl's --help shows the docstring of __main__ and the flags of the module sys.argv[0] names,
  # both the command's launcher here: give it those of this module.
  sys.modules['__main__'].__doc__ = __doc__
  for flag in flags.FLAGS.get_key_flags_for_module(__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
