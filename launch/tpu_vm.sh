#!/usr/bin/env bash
# Cloud TPU VM lifecycle for nanolm_jax: create, set up every worker, run an experiment on all workers, delete.
#
#   launch/tpu_vm.sh create  --name=nano-v5p --zone=us-east5-a --type=v5p-32 [--version=v2-alpha-tpuv5] [--spot]
#   launch/tpu_vm.sh setup   --name=nano-v5p --zone=us-east5-a [--repo=https://github.com/ORG/nanolm_jax.git --ref=main]
#   launch/tpu_vm.sh run     --name=nano-v5p --zone=us-east5-a -- python -m experiments.pretrain \
#                               --config=configs/pretrain.py:gpt2_124m --config.mesh.fsdp=-1 --config.mesh.data=1 \
#                               --workdir=gs://BUCKET/runs/gpt2_124m
#   launch/tpu_vm.sh delete  --name=nano-v5p --zone=us-east5-a
#
# Add --dry_run to print the gcloud commands instead of running them. `run` executes the same command on every worker
# (--worker=all); each process calls jax.distributed.initialize() itself (nanolm_jax.sharding), loads only its part
# of the global batch, and rerunning the same command after a preemption resumes from the latest checkpoint in the
# (gs://) workdir.
set -euo pipefail

cmd="${1:-}"; shift || true
name="" zone="" type="v5litepod-8" version="" repo="" ref="main" project="" dry_run=0 spot=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --type=*) type="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --repo=*) repo="${1#*=}" ;;
    --ref=*) ref="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --spot) spot=1 ;;
    --dry_run) dry_run=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "error: $*" >&2; exit 2; }
[[ -n "$cmd" ]] || die "usage: launch/tpu_vm.sh {create|setup|run|delete} --name=NAME --zone=ZONE [...]"
[[ -n "$name" ]] || die "--name is required"
[[ -n "$zone" ]] || die "--zone is required"
proj=(); [[ -n "$project" ]] && proj=(--project="$project")

run() {
  if [[ $dry_run -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

# The runtime image follows the TPU generation unless given.
if [[ -z "$version" ]]; then
  case "$type" in
    v5p-*) version="v2-alpha-tpuv5" ;;
    v5litepod-*) version="v2-alpha-tpuv5-lite" ;;
    v6e-*) version="v2-alpha-tpuv6e" ;;
    *) version="tpu-ubuntu2204-base" ;;
  esac
fi

case "$cmd" in
  create)
    flags=(--zone="$zone" --accelerator-type="$type" --version="$version" "${proj[@]}")
    [[ $spot -eq 1 ]] && flags+=(--spot)
    run gcloud compute tpus tpu-vm create "$name" "${flags[@]}"
    ;;
  setup)
    [[ -n "$repo" ]] || repo="$(git config --get remote.origin.url || true)"
    [[ -n "$repo" ]] || die "--repo is required (no git remote to default to)"
    setup_cmd="set -e; (test -d nanolm_jax || git clone $repo nanolm_jax); cd nanolm_jax; git fetch -q origin; \
git checkout -q $ref; python3 -m pip install -q -U pip; python3 -m pip install -q -e . 'jax[tpu]'"
    run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" "${proj[@]}" --worker=all --command="$setup_cmd"
    ;;
  run)
    [[ ${#extra[@]} -gt 0 ]] || die "give the command after --, e.g. -- python -m experiments.pretrain ..."
    quoted=$(printf '%q ' "${extra[@]}")
    run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" "${proj[@]}" --worker=all \
      --command="cd nanolm_jax && $quoted"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" --zone="$zone" "${proj[@]}" --quiet
    ;;
  *) die "unknown command $cmd (create|setup|run|delete)" ;;
esac
