"""The set-up of the two commands (scripts/env.sh, scripts/lib.sh) on a machine as a new user has it.

Each run is `bash -c 'source scripts/env.sh'` in an emptied environment (`env -i`: PATH, HOME and the
variables a test names) whose PATH is a folder of links to the few tools the set-up may use: no
Chromium, and `sudo` and `apt-get` replaced by recorders, so that a run which installed anything
outside its venv (or asked for root) is seen. Stand-ins for python3, virtualenv and the venv's python
record the installs instead of downloading them; one run uses a real venv, already installed, and goes
on to the demo's first command. The browser tests' Chromium finder (tests/conftest.py) is tested last.
"""

import glob
import hashlib
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO, find_chromium, require_chromium

#: What the set-up (and the fakes below) may run; nothing else is on the PATH of its runs.
TOOLS = ('bash', 'cat', 'chmod', 'cut', 'dirname', 'mkdir', 'rm', 'sed', 'sha256sum')
JAX = re.search(r'^jax==(\S+)', (REPO / 'requirements.txt').read_text(), re.M).group(1)
ON_A_TPU_VM = bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))

# A stand-in venv whose python records each call: `mkvenv DIR`.
MKVENV = r'''#!/bin/bash
mkdir -p "$1/bin"
printf '#!/bin/bash\necho "python $*" >> "$CALLS"\n' > "$1/bin/python"
chmod +x "$1/bin/python"
printf 'export VIRTUAL_ENV="%s"\nexport PATH="%s/bin:$PATH"\n' "$1" "$1" > "$1/bin/activate"
'''
# python3 whose `-m venv DIR` works, or (NO_VENV_MODULE set) fails after a half-made venv, as Ubuntu's
# python3 does without python3-venv.
PYTHON3 = r'''#!/bin/bash
echo "python3 $*" >> "$CALLS"
mkvenv "$3"
if [ -n "${NO_VENV_MODULE:-}" ]; then
  echo 'The virtual environment was not created successfully because ensurepip is not available.' >&2
  exit 1
fi
'''
VIRTUALENV = '#!/bin/bash\necho "virtualenv $*" >> "$CALLS"\nexec mkvenv "${@: -1}"\n'


def _script(path: pathlib.Path, text: str) -> None:
  path.write_text(text)
  path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
  """(bin folder, run): `run(command, **env)` runs `command` after `source scripts/env.sh` (as the
  scripts do: a statement of its own, so that its `set -e` applies) under `env -i`, its PATH `bin` (the
  tools, a stand-in python3, recording sudo and apt-get), and returns (the completed process, the
  calls recorded)."""
  bin_dir, home, calls = tmp_path / 'bin', tmp_path / 'home', tmp_path / 'calls'
  bin_dir.mkdir()
  home.mkdir()
  for tool in TOOLS:
    (bin_dir / tool).symlink_to(shutil.which(tool))
  _script(bin_dir / 'mkvenv', MKVENV)
  _script(bin_dir / 'python3', PYTHON3)
  for recorder in ('sudo', 'apt-get'):
    _script(bin_dir / recorder, f'#!/bin/bash\necho "{recorder} $*" >> "$CALLS"\n')

  def run(command: str = 'true', **env: str):
    calls.write_text('')
    result = subprocess.run(
        [str(bin_dir / 'bash'), '-c', f'source scripts/env.sh\n{command}'], cwd=REPO,
        env={'PATH': str(bin_dir), 'HOME': str(home), 'CALLS': str(calls), **env},
        capture_output=True, text=True, timeout=120, check=False)
    return result, calls.read_text().splitlines()

  return bin_dir, run


def _pip(*args: str) -> str:
  return 'python -m pip install --quiet ' + ' '.join(args)


@pytest.mark.skipif(ON_A_TPU_VM, reason='the set-up would rightly choose the TPU build here')
def test_a_new_venv_gets_the_cpu_lock_and_the_package_and_nothing_outside_it(machine, tmp_path):
  _, run = machine
  venv = tmp_path / 'venv'
  result, calls = run('command -v python', AVSSL_VENV=str(venv))
  assert result.returncode == 0, result.stderr
  assert calls == [f'python3 -m venv {venv}', _pip('--upgrade pip'),
                   _pip(f'-r {REPO}/requirements.txt'), _pip(f'--no-deps -e {REPO}')]
  assert result.stdout.splitlines()[-1] == f'{venv}/bin/python'  # Activated.
  assert 'installed requirements.txt, CPU jax and avssl' in result.stdout
  requirements = hashlib.sha256((REPO / 'requirements.txt').read_bytes()).hexdigest()
  assert (venv / '.requirements.sha256').read_text() == f'{requirements} cpu\n'
  result, calls = run(AVSSL_VENV=str(venv))
  assert result.returncode == 0 and calls == []  # Installed: nothing to do.


def test_a_gpu_gets_the_cuda_build_of_the_pinned_jax_and_a_change_of_accelerator_reinstalls(
    machine, tmp_path):
  bin_dir, run = machine
  _script(bin_dir / 'nvidia-smi', '#!/bin/bash\necho "GPU 0: NVIDIA H100 (UUID: GPU-0)"\n')
  venv = tmp_path / 'venv'
  result, calls = run(AVSSL_VENV=str(venv))
  assert result.returncode == 0, result.stderr
  assert calls[1:] == [_pip('--upgrade pip'), _pip(f'-r {REPO}/requirements.txt'),
                       _pip(f'jax[cuda12]=={JAX}'), _pip(f'--no-deps -e {REPO}')]
  assert f'jax[cuda12]=={JAX}' in result.stdout
  result, calls = run(AVSSL_VENV=str(venv), AVSSL_ACCELERATOR='tpu')
  assert result.returncode == 0, result.stderr
  assert _pip(f'jax[tpu]=={JAX}') in calls and not any('apt-get' in c or 'sudo' in c for c in calls)


def test_without_the_venv_module_virtualenv_stands_in(machine, tmp_path):
  bin_dir, run = machine
  _script(bin_dir / 'virtualenv', VIRTUALENV)
  venv = tmp_path / 'venv'
  result, calls = run(AVSSL_VENV=str(venv), AVSSL_ACCELERATOR='cpu', NO_VENV_MODULE='1')
  assert result.returncode == 0, result.stderr
  assert calls[:2] == [f'python3 -m venv {venv}', f'virtualenv --quiet {venv}']
  assert _pip(f'--no-deps -e {REPO}') in calls


def test_without_venv_module_or_virtualenv_it_says_the_one_command_and_leaves_no_half_venv(
    machine, tmp_path):
  _, run = machine
  venv = tmp_path / 'venv'
  result, calls = run(AVSSL_VENV=str(venv), AVSSL_ACCELERATOR='cpu', NO_VENV_MODULE='1')
  assert result.returncode != 0
  assert 'sudo apt-get install python3-venv' in result.stderr
  assert calls == [f'python3 -m venv {venv}']  # Neither sudo nor apt-get ran.
  assert not venv.exists()  # The next run creates it again rather than trusting a venv without pip.


def test_the_demo_starts_in_an_installed_venv_without_root_or_chromium(machine, tmp_path):
  """A real venv (without pip, seeing this one's packages through a .pth), stamped as installed: the
  set-up activates it, and the demo's first command runs under the stripped PATH."""
  bin_dir, run = machine
  python3 = sys._base_executable  # The interpreter this test's venv was made from.
  (bin_dir / 'python3').unlink()
  (bin_dir / 'python3').symlink_to(python3)
  venv = tmp_path / 'venv'
  subprocess.run([python3, '-m', 'venv', '--without-pip', venv], check=True)
  site = subprocess.check_output([venv / 'bin' / 'python', '-c', 'import sysconfig; '
                                  'print(sysconfig.get_paths()["purelib"])'], text=True).strip()
  (pathlib.Path(site) / 'outer.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
  stamp = subprocess.check_output([bin_dir / 'bash', '-c', f'source {REPO}/scripts/lib.sh && '
                                   f'avssl_stamp {REPO} "$(avssl_accelerator)"'], text=True,
                                  env={'PATH': str(bin_dir)})
  (venv / '.requirements.sha256').write_text(stamp)
  videos = tmp_path / 'avsynth'
  result, calls = run(
      f'python -m avssl.data_prep.make_synthetic --output_dir={videos} --num_videos=3 '
      '--num_classes=3 --size=32 --fps=10 --duration=1.2 --sample_rate=16000 --workers=1',
      AVSSL_VENV=str(venv))
  assert result.returncode == 0, result.stderr
  assert calls == []
  assert len(list(videos.glob('**/*.mp4'))) == 3


def _accelerator(bin_dir: pathlib.Path, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run([bin_dir / 'bash', '-c', f'source {REPO}/scripts/lib.sh && avssl_accelerator'],
                        env={'PATH': str(bin_dir), **env}, capture_output=True, text=True, check=False)


@pytest.mark.skipif(ON_A_TPU_VM, reason='a TPU VM is detected as one')
def test_accelerator_detection_and_its_override(machine):
  bin_dir, _ = machine
  assert _accelerator(bin_dir).stdout == 'cpu\n'
  assert _accelerator(bin_dir, TPU_ACCELERATOR_TYPE='v4-32').stdout == 'tpu\n'
  _script(bin_dir / 'nvidia-smi', '#!/bin/bash\nexit 9\n')  # Installed, but no driver or GPU.
  assert _accelerator(bin_dir).stdout == 'cpu\n'
  _script(bin_dir / 'nvidia-smi', '#!/bin/bash\necho "GPU 0: NVIDIA H100 (UUID: GPU-0)"\n')
  assert _accelerator(bin_dir).stdout == 'cuda12\n'
  assert _accelerator(bin_dir, AVSSL_ACCELERATOR='cpu').stdout == 'cpu\n'
  assert _accelerator(bin_dir, AVSSL_ACCELERATOR='tpu').stdout == 'tpu\n'
  wrong = _accelerator(bin_dir, AVSSL_ACCELERATOR='cuda')
  assert wrong.returncode == 1 and 'expected cpu, cuda12 or tpu' in wrong.stderr


# The browser tests' Chromium.

def test_chromium_is_found_where_the_variable_or_path_says(tmp_path):
  browser = tmp_path / 'chromium-browser'
  _script(browser, '#!/bin/sh\n')
  found, tried = find_chromium({'AVSSL_CHROMIUM': str(browser)}, paths=(), playwright=False)
  assert (found, tried) == (str(browser), [str(browser)])
  found, _ = find_chromium({'AVSSL_CHROMIUM': '/nonexistent/chrome', 'PATH': str(tmp_path)},
                           paths=(), playwright=False)
  assert found == str(browser)


def test_without_chromium_the_browser_tests_skip_naming_where_they_looked(tmp_path):
  nowhere = {'AVSSL_CHROMIUM': '/nonexistent/chrome', 'PATH': str(tmp_path)}
  with pytest.raises(pytest.skip.Exception) as skipped:
    require_chromium(nowhere, paths=('/nonexistent/chromium',), playwright=False)
  reason = str(skipped.value)
  assert '\n' not in reason
  assert reason.startswith('no Chromium found (tried /nonexistent/chrome, /nonexistent/chromium, '
                           'chromium on PATH, chromium-browser on PATH')
  assert reason.endswith('set AVSSL_CHROMIUM to its executable')
  with pytest.raises(pytest.fail.Exception, match='AVSSL_REQUIRE_CHROMIUM=1'):
    require_chromium({**nowhere, 'AVSSL_REQUIRE_CHROMIUM': '1'}, paths=(), playwright=False)


def test_playwrights_own_download_is_the_last_place_looked_in(tmp_path):
  found, tried = find_chromium({'PATH': str(tmp_path)}, paths=())
  assert tried[-1] == "playwright's download (playwright install chromium)"
  assert found is None or pathlib.Path(found).is_file()  # Where `playwright install` was run.
