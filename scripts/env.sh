# Sourced by the other scripts: creates .venv on first use (python3's venv, or virtualenv), installs
# requirements.txt, the jax build of this machine's GPU or TPU if it has one, and the package, again
# whenever requirements.txt or the accelerator changes, then activates the venv. Installs nothing
# outside the venv and needs no root. AVSSL_VENV sets another location; AVSSL_ACCELERATOR=cpu|cuda12|tpu
# overrides the detection (scripts/lib.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
venv="${AVSSL_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  avssl_make_venv "$venv"
fi
accelerator="$(avssl_accelerator)"
avssl_once "$venv/.requirements.sha256" "$(avssl_stamp "$root" "$accelerator")" \
  avssl_install "$venv" "$root" "$accelerator"
# shellcheck disable=SC1091
source "$venv/bin/activate"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cd "$root"
