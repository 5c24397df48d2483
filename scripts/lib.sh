# The set-up's functions, sourced by env.sh (and alone by tests/test_env_setup.py): nothing runs on load.

# The jax build this machine needs, printed as cpu, cuda12 or tpu: tpu on a Cloud TPU VM (its chips
# appear as /dev/accel* on v2-v4, /dev/vfio/<n> on v5e and later; GKE and some images also export
# TPU_NAME or TPU_ACCELERATOR_TYPE), cuda12 where nvidia-smi lists a GPU, else cpu.
# AVSSL_ACCELERATOR=cpu|cuda12|tpu overrides the detection.
avssl_accelerator() {
  case "${AVSSL_ACCELERATOR:-}" in
    cpu | cuda12 | tpu)
      echo "$AVSSL_ACCELERATOR"
      return
      ;;
    '') ;;
    *)
      echo "AVSSL_ACCELERATOR=$AVSSL_ACCELERATOR: expected cpu, cuda12 or tpu" >&2
      return 1
      ;;
  esac
  if [ -n "${TPU_NAME:-}${TPU_ACCELERATOR_TYPE:-}" ] || compgen -G '/dev/accel*' > /dev/null \
    || compgen -G '/dev/vfio/[0-9]*' > /dev/null; then
    echo tpu
  elif command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
    echo cuda12
  else
    echo cpu
  fi
}

# What an installed venv must have been installed from: requirements.txt's hash and the jax build.
avssl_stamp() {
  local root="$1" accelerator="$2"
  echo "$(sha256sum "$root/requirements.txt" | cut -d' ' -f1) $accelerator"
}

# Runs the command "$@" unless the file $1 already holds the line $2, then writes $2 there: an install
# is redone exactly when what it installs from has changed.
avssl_once() {
  local stamp="$1" want="$2"
  shift 2
  if [ "$(cat "$stamp" 2> /dev/null)" != "$want" ]; then
    "$@"
    echo "$want" > "$stamp"
  fi
}

# Creates the virtual environment $1 with python3's venv module, or with virtualenv where that module is
# missing (Debian and Ubuntu ship it separately, as python3-venv). Fails with the command that fixes it
# when neither is there, leaving no half-made venv behind for the next run to trust.
avssl_make_venv() {
  local venv="$1" existed=false
  if [ -e "$venv" ]; then
    existed=true
  fi
  if python3 -m venv "$venv"; then
    return
  fi
  if command -v virtualenv > /dev/null; then
    echo "env.sh: python3 -m venv failed; creating $venv with virtualenv instead"
    virtualenv --quiet "$venv"
    return
  fi
  if [ "$existed" = false ]; then
    rm -rf "$venv"
  fi
  echo "env.sh: cannot create $venv: python3 has no working venv module and there is no" \
    "virtualenv. Install one (on Debian or Ubuntu: sudo apt-get install python3-venv), then rerun." >&2
  return 1
}

# Installs requirements.txt, the jax build for the accelerator $3 (for cuda12 or tpu: of the jax version
# pinned there) and the package itself (editable, without dependencies: requirements.txt holds them)
# into the venv $1, from the checkout $2, and says what it installed.
avssl_install() {
  local venv="$1" root="$2" accelerator="$3" jax='CPU jax'
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
  if [ "$accelerator" != cpu ]; then
    jax="jax[$accelerator]==$(sed -n 's/^jax==\([^ #]*\).*/\1/p' "$root/requirements.txt")"
    "$venv/bin/python" -m pip install --quiet "$jax"
  fi
  "$venv/bin/python" -m pip install --quiet --no-deps -e "$root"
  echo "env.sh: installed requirements.txt, $jax and avssl into $venv (accelerator: $accelerator;" \
    "AVSSL_ACCELERATOR=cpu|cuda12|tpu overrides the detection)"
}
