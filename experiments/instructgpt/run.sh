#!/usr/bin/env bash
# The toy InstructGPT pipeline end to end on a CPU: base -> SFT -> RM -> PPO and PPO-ptx, and SFT -> DPO; then the
# held-out evaluations, the comparison and the PPO plot. Each stage goes through its public entry point; rerunning
# resumes. Everything is written under the runs directory (tables and plot in <runs>/results); only `publish`
# copies those tables and the plot into experiments/instructgpt/results, the committed results.
# Usage: experiments/instructgpt/run.sh [runs directory, default runs/instructgpt]
#        experiments/instructgpt/run.sh publish [runs directory, default runs/instructgpt]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
if [[ ${1:-} == publish ]]; then
  R=${2:-runs/instructgpt}
  for name in compare.json ppo.png wall_times.txt; do
    [[ -f $R/results/$name ]] || { echo "error: $R/results/$name does not exist: run experiments/instructgpt/run.sh $R first." >&2; exit 2; }
  done
  cp "$R/results/compare.json" "$R/results/ppo.png" "$R/results/wall_times.txt" experiments/instructgpt/results/
  echo "copied compare.json, ppo.png and wall_times.txt from $R/results to experiments/instructgpt/results"
  exit 0
fi
R=${1:-runs/instructgpt}
OUT=$R/results
mkdir -p "$OUT"
stage() { local name=$1; shift; local start=$SECONDS; "$@"; echo "$name $((SECONDS - start)) s" >> "$OUT/wall_times.txt"; }
: > "$OUT/wall_times.txt"
stage base    $PY -m gpt_jax.train --config=configs/tiny.py:micro --workdir=$R/base
[[ -d $R/toy ]] || stage toy $PY -m gpt_jax.rlhf toy --out=$R/toy  # deterministic: made once
stage sft     $PY -m gpt_jax.rlhf.sft --workdir=$R/sft --config.rlhf.init_from=$R/base
stage rm      $PY -m gpt_jax.rlhf.reward --workdir=$R/rm --config.rlhf.init_from=$R/sft
stage ppo     $PY -m gpt_jax.rlhf.ppo --workdir=$R/ppo --config.rlhf.policy_from=$R/sft --config.rlhf.reward_from=$R/rm
stage ppo_ptx $PY -m gpt_jax.rlhf.ppo --workdir=$R/ppo_ptx --config.rlhf.policy_from=$R/sft \
                --config.rlhf.reward_from=$R/rm --config.rlhf.ptx_source=stdlib
stage dpo     $PY -m gpt_jax.rlhf.dpo --workdir=$R/dpo --config.rlhf.init_from=$R/sft
# The evaluations, comparison and plot are recomputed from the (resumed) runs on every pass: --overwrite.
for run in base sft ppo/policy ppo_ptx/policy dpo; do
  $PY -m gpt_jax.eval --workdir=$R/$run --tasks=$R/toy/eval/toy_qa --output_dir=$OUT/eval/${run%/policy} --overwrite
done
stage compare $PY -m experiments.instructgpt.compare --reward=$R/rm --baseline=sft --out=$OUT/compare.json --overwrite \
  --policies=base=$R/base,sft=$R/sft,ppo=$R/ppo/policy,ppo_ptx=$R/ppo_ptx/policy,dpo=$R/dpo
$PY -m experiments.instructgpt.plots --runs=ppo=$R/ppo,ppo_ptx=$R/ppo_ptx --out=$OUT/ppo.png --overwrite
echo "results in $OUT; to replace the committed ones: experiments/instructgpt/run.sh publish $R"
