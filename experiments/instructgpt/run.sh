#!/usr/bin/env bash
# The toy InstructGPT pipeline end to end on a CPU: base -> SFT -> RM -> PPO and PPO-ptx, and SFT -> DPO; then the
# held-out comparison and the PPO plots. Each stage goes through its public entry point; rerunning resumes.
# Usage: experiments/instructgpt/run.sh [runs directory, default runs/instructgpt]
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-runs/instructgpt}
PY=${PY:-.venv/bin/python}
OUT=experiments/instructgpt/results
mkdir -p "$OUT"
stage() { local name=$1; shift; local start=$SECONDS; "$@"; echo "$name $((SECONDS - start)) s" >> "$OUT/wall_times.txt"; }
: > "$OUT/wall_times.txt"
stage base    $PY -m gpt_jax.train --config=configs/tiny.py:micro --workdir=$R/base
stage toy     $PY -m gpt_jax.rlhf toy --out=$R/toy
stage sft     $PY -m gpt_jax.rlhf.sft --workdir=$R/sft --config.rlhf.init_from=$R/base
stage rm      $PY -m gpt_jax.rlhf.reward --workdir=$R/rm --config.rlhf.init_from=$R/sft
stage ppo     $PY -m gpt_jax.rlhf.ppo --workdir=$R/ppo --config.rlhf.policy_from=$R/sft --config.rlhf.reward_from=$R/rm
stage ppo_ptx $PY -m gpt_jax.rlhf.ppo --workdir=$R/ppo_ptx --config.rlhf.policy_from=$R/sft \
                --config.rlhf.reward_from=$R/rm --config.rlhf.ptx_source=stdlib
stage dpo     $PY -m gpt_jax.rlhf.dpo --workdir=$R/dpo --config.rlhf.init_from=$R/sft
for run in base sft ppo/policy ppo_ptx/policy dpo; do
  $PY -m gpt_jax.eval --workdir=$R/$run --tasks=$R/toy/eval/toy_qa --output_dir=$OUT/eval/${run%/policy}
done
$PY -m experiments.instructgpt.compare --reward=$R/rm --baseline=sft --out=$OUT/compare.json \
  --policies=base=$R/base,sft=$R/sft,ppo=$R/ppo/policy,ppo_ptx=$R/ppo_ptx/policy,dpo=$R/dpo
$PY -m experiments.instructgpt.plots --runs=ppo=$R/ppo,ppo_ptx=$R/ppo_ptx --out=$OUT/ppo.png
