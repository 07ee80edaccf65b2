#!/usr/bin/env bash
# Pretraining on a Cloud TPU pod slice: the same command on every worker; jax.distributed finds its peers.
#   launch/tpu_pod.sh TPU_NAME ZONE configs/gpt3.py:6.7b /mnt/shared/runs/gpt3-6.7b [--config.<field>=<value> ...]
# WORKDIR must be visible to every worker (a shared filesystem). A gs:// workdir needs etils' GCS backend
# (pip install gcsfs) on the workers; metrics and TensorBoard files are written with plain file I/O by worker 0.
# Multi-slice: add --config.mesh.dcn_data=<slices> (or dcn_fsdp) and create the slices as one queued resource.
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
zone=${2:?zone}
config=${3:?config}
workdir=${4:?workdir}
shift 4
overrides=$(printf ' %q' "$@")
# Ship this working tree (not the virtual environment) to every worker, then run the same command on all of them.
# A fresh archive per launch: two sweeps started from one machine never ship each other's tree.
src=$(mktemp /tmp/gpt_jax_src.XXXXXXXX)
trap 'rm -f "$src"' EXIT
tar --exclude=.venv --exclude=runs -czf "$src" .
upload=$(basename "$src").tgz
gcloud compute tpus tpu-vm scp "$src" "$tpu":"$upload" --zone="$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command "
  set -e
  mkdir -p gpt_jax && tar -xzf $upload -C gpt_jax && rm -f $upload
  cd gpt_jax
  [ -x .venv/bin/python ] || (python3.11 -m venv .venv && .venv/bin/pip install -q -r requirements-tpu.txt -c constraints.txt)
  GPT_JAX_DISTRIBUTED=1 .venv/bin/python -m gpt_jax.train --config=$config --workdir=$workdir \
    --config.model.dtype=bfloat16 $overrides
"
