#!/usr/bin/env bash
# Starts one avssl run on every worker of a Cloud TPU VM (a pod slice such as v4-32 has one worker per
# host, and all of them must run the same command at once): puts the code on each worker (a `git
# archive` of this checkout copied over, or a `git clone` there), installs it with the `tpu` extra,
# then starts `~/avssl-venv/bin/python -m avssl.main ARGS` on all workers together. avssl joins the hosts through
# jax.distributed by itself on a multi-host TPU (avssl/distributed.py). Runs in the background by
# default (nohup, each worker's output appended to ~/avssl.log there), so a closed laptop does not stop
# it; rerunning the same command after a preemption resumes from the latest checkpoint.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/tpu_pod.sh --tpu=NAME --zone=ZONE [options] -- AVSSL_MAIN_ARGS...

Copies the code to every worker of the TPU VM NAME, installs it with the tpu extra and runs
`~/avssl-venv/bin/python -m avssl.main AVSSL_MAIN_ARGS` (Python 3.11, made by uv) on all workers at once.

  --tpu=NAME       the TPU VM (gcloud compute tpus tpu-vm create NAME ...)      required
  --zone=ZONE      its zone, e.g. us-central2-b                                 required
  --project=P      its project (default: gcloud's configured project)
  --copy           copy a `git archive` of this checkout's REF to the workers   (default)
  --repo=URL       instead, `git clone URL` on every worker (and fetch on later launches)
  --ref=REF        the commit, branch or tag to run (default HEAD: this checkout's for --copy, the
                   repository's default branch for --repo); uncommitted changes are never copied
  --foreground     wait for the run, with every worker's output here, instead of nohup and ~/avssl.log
  --dry-run        print the commands, one per line, and run nothing
  -h, --help       this message

Example:
  scripts/tpu_pod.sh --tpu=my-pod --zone=us-central2-b -- --config=configs/selavi_vggsound.py \
    --workdir=gs://BUCKET/runs/selavi --config.data.dir=gs://BUCKET/records/vggsound
EOF
}

fail() {
  echo "tpu_pod.sh: $*" >&2
  echo "Run scripts/tpu_pod.sh --help for the options." >&2
  exit 2
}

# One argument as the shell reads it back: bare when it holds no special character, else in single
# quotes (after the `--flag=` of an option); used to print the commands so that a printed line can be
# pasted and run as it is.
shell_word() {
  local flag="" value="$1"
  if [[ $value =~ ^(--[a-z-]+=)(.*)$ ]]; then
    flag="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
  fi
  if [[ $value =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s%s' "$flag" "$value"
  else
    printf "%s'%s'" "$flag" "${value//\'/\'\\\'\'}"
  fi
}

# Prints a command (--dry-run) or runs it.
run() {
  if [ "$dry_run" = 1 ]; then
    local line="" arg
    for arg in "$@"; do
      line+="${line:+ }$(shell_word "$arg")"
    done
    printf '%s\n' "$line"
  else
    "$@"
  fi
}

tpu="" zone="" project="" repo="" ref="HEAD" foreground=0 dry_run=0 source_mode=copy copy_given=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --repo=*) repo="${1#*=}"; source_mode=clone ;;
    --copy) copy_given=1 ;;
    --ref=*) ref="${1#*=}" ;;
    --foreground) foreground=1 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) fail "unknown option $1 (the avssl.main arguments go after --)" ;;
  esac
  shift
done
[ -n "$tpu" ] || fail "--tpu=NAME is required (the TPU VM to run on)"
[ -n "$zone" ] || fail "--zone=ZONE is required (the TPU VM's zone, e.g. us-central2-b)"
[ $# -gt 0 ] || fail "no avssl.main arguments after -- (e.g. -- --config=configs/selavi_vggsound.py --workdir=gs://BUCKET/runs/x)"
if [ -n "$repo" ] && [ "$copy_given" = 1 ]; then
  fail "--copy and --repo=URL exclude each other"
fi
for arg in "$@"; do
  case "$arg" in
    --workdir=gs://*) ;;
    --workdir=*) echo "tpu_pod.sh: warning: $arg is on each worker's own disk; on a pod every host" \
                      "must reach the workdir (use gs://BUCKET/...)" >&2 ;;
  esac
done

gcloud_tpu=(gcloud compute tpus tpu-vm)
target=(--zone="$zone")
[ -z "$project" ] || target+=(--project="$project")

# What the workers run, as one command line for their shell; the avssl.main arguments are quoted with
# printf %q, so that spaces, quotes and $ in them reach Python unchanged.
main_args="$(printf ' %q' "$@")"
# avssl needs Python 3.11 or later and TPU images ship older ones (Ubuntu 22.04: 3.10): uv makes a
# venv with its own 3.11 build (downloaded once) and installs avssl with the tpu extra into it.
install='cd avssl && python3 -m pip install --quiet --user uv && ~/.local/bin/uv venv --quiet --allow-existing --python 3.11 ~/avssl-venv && ~/.local/bin/uv pip install --quiet --python ~/avssl-venv/bin/python -e ".[tpu]"'
if [ "$foreground" = 1 ]; then
  start="cd avssl && ~/avssl-venv/bin/python -m avssl.main$main_args"
else
  start="cd avssl && nohup ~/avssl-venv/bin/python -m avssl.main$main_args >> ~/avssl.log 2>&1 < /dev/null &"
fi

if [ "$source_mode" = copy ]; then
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  git -C "$root" rev-parse --verify --quiet "$ref^{commit}" > /dev/null \
    || fail "$ref is not a commit of a git checkout at $root; copy from a checkout or use --repo=URL"
  if [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
    echo "tpu_pod.sh: warning: uncommitted changes in $root are not copied (only $ref is)" >&2
  fi
  tarball="${TMPDIR:-/tmp}/avssl-$tpu.tar.gz"
  [ "$dry_run" = 1 ] || trap 'rm -f "$tarball"' EXIT
  run git -C "$root" archive --format=tar.gz --output="$tarball" "$ref"
  run "${gcloud_tpu[@]}" scp "$tarball" "$tpu:avssl.tar.gz" "${target[@]}" --worker=all
  fetch="mkdir -p avssl && tar -xzf avssl.tar.gz -C avssl && rm avssl.tar.gz"
else
  fetch="{ [ -d avssl/.git ] || git clone --quiet $(printf %q "$repo") avssl; }"
  fetch+=" && git -C avssl fetch --quiet origin $(printf %q "$ref")"
  fetch+=" && git -C avssl checkout --quiet --detach FETCH_HEAD"
fi
run "${gcloud_tpu[@]}" ssh "$tpu" "${target[@]}" --worker=all --command="$fetch && $install"
run "${gcloud_tpu[@]}" ssh "$tpu" "${target[@]}" --worker=all --command="$start"

if [ "$dry_run" = 0 ] && [ "$foreground" = 0 ]; then
  cat >&2 <<EOF
tpu_pod.sh: started on every worker of $tpu. Follow worker 0's output:
  ${gcloud_tpu[*]} ssh $tpu ${target[*]} --worker=0 --command='tail -f ~/avssl.log'
EOF
fi
