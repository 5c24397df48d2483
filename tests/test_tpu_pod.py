"""scripts/tpu_pod.sh against a fake `gcloud` that records its arguments: the exact commands for a pod
(copy to every worker, install with the tpu extra, start on all workers at once), quoting that brings
every avssl.main argument through two shells unchanged, nothing run on --dry-run, clear refusals."""

import json
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO

SCRIPT = REPO / 'scripts' / 'tpu_pod.sh'
POD = ['--tpu=my-pod', '--zone=us-central2-b']
MAIN_ARGS = ['--config=configs/selavi_vggsound.py', '--workdir=gs://b/runs/x']
START = ('cd avssl && nohup ~/avssl-venv/bin/python -m avssl.main --config=configs/selavi_vggsound.py '
         '--workdir=gs://b/runs/x >> ~/avssl.log 2>&1 < /dev/null &')
INSTALL = ('cd avssl && python3 -m pip install --quiet --user uv && ~/.local/bin/uv venv --quiet '
           '--allow-existing --python 3.11 ~/avssl-venv && ~/.local/bin/uv pip install --quiet '
           '--python ~/avssl-venv/bin/python -e ".[tpu]"')
UNPACK = 'mkdir -p avssl && tar -xzf avssl.tar.gz -C avssl && rm avssl.tar.gz'


@pytest.fixture
def fake(tmp_path):
  """A PATH whose `gcloud` appends its argv (JSON, one call a line) to calls.jsonl and keeps a copy
  of what scp would copy; the workers' venv python records its argv to python3.json. TMPDIR and HOME
  are tmp_path."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'gcloud').write_text(f"""#!{sys.executable}
import json, shutil, sys
with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as f:
  f.write(json.dumps(sys.argv[1:]) + '\\n')
if sys.argv[1:5] == ['compute', 'tpus', 'tpu-vm', 'scp']:
  shutil.copy(sys.argv[5], {str(tmp_path / 'copied.tar.gz')!r})
""")
  venv_python = tmp_path / 'avssl-venv' / 'bin' / 'python'  # HOME is tmp_path.
  venv_python.parent.mkdir(parents=True)
  venv_python.write_text(f"""#!{sys.executable}
import json, sys
json.dump(sys.argv[1:], open({str(tmp_path / 'python3.json')!r}, 'w'))
""")
  for program in [*bin_dir.iterdir(), venv_python]:
    program.chmod(0o755)
  env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'TMPDIR': str(tmp_path),
         'HOME': str(tmp_path)}
  return tmp_path, env


def _launch(args, env, check=True):
  return subprocess.run(['bash', str(SCRIPT), *args], env=env, text=True, capture_output=True,
                        timeout=60, check=check)


def _calls(tmp_path):
  path = tmp_path / 'calls.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_dry_run_prints_the_commands_for_a_pod_and_runs_nothing(fake):
  tmp_path, env = fake
  result = _launch(['--dry-run', *POD, '--', *MAIN_ARGS], env)
  assert result.stdout.splitlines() == [
      f'git -C {REPO} archive --format=tar.gz --output={tmp_path}/avssl-my-pod.tar.gz HEAD',
      f'gcloud compute tpus tpu-vm scp {tmp_path}/avssl-my-pod.tar.gz my-pod:avssl.tar.gz '
      '--zone=us-central2-b --worker=all',
      'gcloud compute tpus tpu-vm ssh my-pod --zone=us-central2-b --worker=all '
      f"--command='{UNPACK} && {INSTALL}'",
      f"gcloud compute tpus tpu-vm ssh my-pod --zone=us-central2-b --worker=all --command='{START}'",
  ]
  assert not _calls(tmp_path)
  assert not (tmp_path / 'avssl-my-pod.tar.gz').exists()


def test_dry_run_with_a_clone_in_the_foreground():
  result = subprocess.run(
      ['bash', str(SCRIPT), '--dry-run', *POD, '--project=p1', '--repo=https://example.com/avssl.git',
       '--ref=v1.0', '--foreground', '--', *MAIN_ARGS], text=True, capture_output=True, timeout=60,
      check=True)
  fetch = ('{ [ -d avssl/.git ] || git clone --quiet https://example.com/avssl.git avssl; } && '
           'git -C avssl fetch --quiet origin v1.0 && git -C avssl checkout --quiet --detach '
           'FETCH_HEAD')
  ssh = 'gcloud compute tpus tpu-vm ssh my-pod --zone=us-central2-b --project=p1 --worker=all'
  assert result.stdout.splitlines() == [
      f"{ssh} --command='{fetch} && {INSTALL}'",
      f"{ssh} --command='cd avssl && ~/avssl-venv/bin/python -m avssl.main {' '.join(MAIN_ARGS)}'",
  ]


def test_launch_calls_gcloud_with_those_arguments(fake):
  tmp_path, env = fake
  result = _launch([*POD, '--', *MAIN_ARGS], env)
  ssh = ['compute', 'tpus', 'tpu-vm', 'ssh', 'my-pod', '--zone=us-central2-b', '--worker=all']
  assert _calls(tmp_path) == [
      ['compute', 'tpus', 'tpu-vm', 'scp', f'{tmp_path}/avssl-my-pod.tar.gz', 'my-pod:avssl.tar.gz',
       '--zone=us-central2-b', '--worker=all'],
      [*ssh, f'--command={UNPACK} && {INSTALL}'],
      [*ssh, f'--command={START}'],
  ]
  with tarfile.open(tmp_path / 'copied.tar.gz') as tar:  # The committed tree, at the archive's root.
    assert {'avssl/main.py', 'avssl/distributed.py', 'pyproject.toml'} <= set(tar.getnames())
  assert not (tmp_path / 'avssl-my-pod.tar.gz').exists()  # The local tarball is removed.
  assert "--command='tail -f ~/avssl.log'" in result.stderr


@pytest.mark.parametrize('arg', ["--config.note=it's $HOME; `ls` * \"x\"\\", '--config.a=b c'])
def test_arguments_reach_python_unchanged(fake, arg):
  """The remote command a worker's shell runs, and the printed line pasted into a shell, both carry
  an argument with quotes, spaces, `$`, backquotes and globs through unchanged."""
  tmp_path, env = fake
  args = ['--config=configs/selavi_vggsound.py', arg]
  _launch([*POD, '--foreground', '--', *args], env)
  command = _calls(tmp_path)[-1][-1].removeprefix('--command=')
  (tmp_path / 'avssl').mkdir()
  subprocess.run(['bash', '-c', command], cwd=tmp_path, env=env, check=True, timeout=60)
  assert json.loads((tmp_path / 'python3.json').read_text()) == ['-m', 'avssl.main', *args]
  printed = _launch(['--dry-run', *POD, '--foreground', '--', *args], env).stdout.splitlines()[-1]
  (tmp_path / 'calls.jsonl').unlink()
  subprocess.run(['bash', '-c', printed], env=env, check=True, timeout=60)
  assert _calls(tmp_path)[-1][-1] == f'--command={command}'


@pytest.mark.parametrize('args,message', [
    (['--tpu=my-pod', '--', *MAIN_ARGS], '--zone=ZONE is required'),
    (['--zone=us-central2-b', '--', *MAIN_ARGS], '--tpu=NAME is required'),
    (POD, 'no avssl.main arguments after --'),
    ([*POD, '--', ], 'no avssl.main arguments after --'),
    ([*POD, *MAIN_ARGS], 'unknown option --config=configs/selavi_vggsound.py (the avssl.main '
                         'arguments go after --)'),
    ([*POD, '--copy', '--repo=https://example.com/a.git', '--', *MAIN_ARGS], '--copy and --repo'),
    ([*POD, '--ref=no-such-ref', '--', *MAIN_ARGS], 'no-such-ref is not a commit'),
])
def test_refusals_name_what_is_missing(fake, args, message):
  tmp_path, env = fake
  result = _launch(args, env, check=False)
  assert result.returncode == 2
  assert result.stderr.startswith(f'tpu_pod.sh: {message}'), result.stderr
  assert not _calls(tmp_path)


def test_help():
  result = subprocess.run(['bash', str(SCRIPT), '--help'], text=True, capture_output=True,
                          timeout=60, check=True)
  assert result.stdout.startswith('Usage: scripts/tpu_pod.sh --tpu=NAME --zone=ZONE')


def test_a_workdir_on_the_workers_disk_is_warned_about(fake):
  _, env = fake
  result = _launch(['--dry-run', *POD, '--', '--config=c.py', '--workdir=runs/x'], env)
  assert 'warning: --workdir=runs/x is on each worker\'s own disk' in result.stderr


def test_is_executable():
  assert os.access(pathlib.Path(SCRIPT), os.X_OK)
