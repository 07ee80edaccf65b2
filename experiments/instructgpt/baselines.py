"""What every RLHF result is compared with: the SFT policy greedy and sampled, best-of-n from SFT, and the reward
model's accuracy on held-out pairs of SFT samples.

    python -m experiments.instructgpt.baselines --sft=runs/igpt/sft --reward=runs/igpt/rm \\
        --heldout=runs/igpt/onpolicy/rankings_heldout.jsonl --toy=runs/igpt/toy --out=runs/igpt/results/baselines.json

On the validation and the test prompts (gpt_jax.rlhf.toy.held_out_split):
- SFT greedy, and sampled at each of --temperatures (--sft_samples per prompt): gold, exact match, RM score; and
  its pretraining loss on the corpus's validation batches (sft_pretrain_loss).
- Best-of-n at --temperature: --samples responses per prompt are drawn once; for each n in 1, 2, 4, ..., samples
  they are cut into samples / n disjoint groups, the reward model's argmax of each group is picked and its gold and
  RM score averaged; KL to SFT is the analytic ln n - (n - 1) / n. The gain of best-of-16 over best-of-1 comes with
  a paired bootstrap 95% interval over prompts.
- Reward model: pairwise accuracy (a pair counts when the better response scores strictly higher) on --heldout
  (SFT samples ranked by gold) and on the toy's synthetic held-out rankings.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from absl import flags

from experiments.instructgpt import episodes
from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.rlhf import reward as reward_lib
from gpt_jax.rlhf import toy

def define_flags() -> None:
  """The command's flags, defined when it runs (tests import the experiment's modules together)."""
  flags.DEFINE_string('sft', None, 'the SFT run.')
  flags.DEFINE_string('reward', None, 'the reward-model run (with reward_norm.json).')
  flags.DEFINE_string('heldout', None, 'held-out rankings of SFT samples (experiments.instructgpt.onpolicy).')
  flags.DEFINE_string('toy', None, 'the toy task directory (for its synthetic held-out rankings).')
  flags.DEFINE_string('out', None, 'JSON file for the results (a new file, unless --overwrite).')
  flags.DEFINE_float('temperature', 0.7, 'best-of-n sampling temperature (PPO\'s).')
  flags.DEFINE_integer('samples', 64, 'responses per prompt for best-of-n (a power of 2).')
  flags.DEFINE_list('temperatures', ['0.3', '0.7', '1.0'], 'temperatures SFT is sampled at.')
  flags.DEFINE_integer('sft_samples', 4, 'SFT samples per prompt at each temperature.')
  flags.DEFINE_integer('response_tokens', 8, 'most tokens per response.')
  flags.DEFINE_integer('limit', None, 'only the first N prompts of each split (smoke runs).')
  flags.DEFINE_integer('seed', 0, 'sampling seed.')
  cli.define_overwrite_flag()


FLAGS = flags.FLAGS


def best_of_n(ep: episodes.Episodes, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Per prompt, the mean gold and RM score of the RM's pick among n, over the disjoint groups of n samples."""
  gold, rm = ep.per_prompt(ep.gold), ep.per_prompt(ep.rm)
  groups = gold.shape[1] // n
  gold, rm = (x[:, :groups * n].reshape(len(x), groups, n) for x in (gold, rm))
  pick = np.argmax(rm, axis=2)[..., None]
  return (np.take_along_axis(gold, pick, 2)[..., 0].mean(1), np.take_along_axis(rm, pick, 2)[..., 0].mean(1))


def best_of_n_table(judge: episodes.Judge, prompts: list[str], seed: int) -> tuple[list[dict], dict]:
  ep = judge.sample(judge.sft_params, prompts, FLAGS.samples, seed)
  rows, per_prompt = [], {}
  for n in (2 ** i for i in range(int(math.log2(FLAGS.samples)) + 1)):
    gold, rm = best_of_n(ep, n)
    per_prompt[n] = gold
    rows.append(dict(n=n, gold=float(gold.mean()), rm_score=float(rm.mean()), kl=math.log(n) - (n - 1) / n))
  gain = per_prompt[16] - per_prompt[1] if 16 in per_prompt else None
  gain_16 = dict(gain=float(gain.mean()), ci95=episodes.bootstrap_ci(gain)) if gain is not None else None
  return rows, gain_16


def pair_accuracy(scorer, records: list[dict]) -> dict:
  pairs = [(r['prompt'], response) for r in records for response in r['responses']]
  scores, correct, total, at = scorer(pairs), 0, 0, 0
  for r in records:
    rank = {index: position for position, index in enumerate(r['ranking'])}
    s = scores[at:at + len(r['responses'])]
    at += len(r['responses'])
    for i in range(len(s)):
      for j in range(len(s)):
        if rank[i] < rank[j]:
          total += 1
          correct += int(s[i] > s[j])
  return dict(accuracy=correct / max(total, 1), pairs=total, prompts=len(records))


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def main(argv):
  del argv
  for name in ('sft', 'reward', 'toy'):
    if not FLAGS[name].value or not os.path.isdir(FLAGS[name].value):
      raise ConfigError(f'--{name} must be an existing directory: see python -m experiments.instructgpt.baselines '
                        f'--help.')
  synthetic = os.path.join(FLAGS.toy, 'rankings_heldout.jsonl')
  for path in (FLAGS.heldout, synthetic):
    if not path or not os.path.isfile(path):
      raise ConfigError(f'{path} is not a file: --heldout takes experiments.instructgpt.onpolicy\'s '
                        f'rankings_heldout.jsonl, --toy the toy task directory.')
  if FLAGS.samples < 1 or FLAGS.samples & (FLAGS.samples - 1):
    raise ConfigError(f'--samples={FLAGS.samples} must be a power of 2 (n runs over 1, 2, 4, ..., samples).')
  episodes.check_sampling(FLAGS, temperatures=('temperature', 'temperatures'),
                          counts=('response_tokens', 'sft_samples'))
  cli.check_output('out', FLAGS.out)
  judges = {float(t): episodes.Judge(FLAGS.sft, FLAGS.reward, float(t), FLAGS.response_tokens)
            for t in dict.fromkeys([*FLAGS.temperatures, FLAGS.temperature])}
  judge = judges[FLAGS.temperature]
  results = dict(sft={}, best_of_n={}, best_of_n_gain_16_vs_1={}, temperature=FLAGS.temperature,
                 samples=FLAGS.samples, sft_pretrain_loss=judge.pretraining_loss(judge.sft_params))
  for split in toy.SPLITS:
    prompts = episodes.prompts_of(split, FLAGS.limit)
    sft = dict(prompts=len(prompts), greedy=dict(gold=float(judge.greedy_gold(judge.sft_params, prompts).mean())))
    for t, j in judges.items():
      sft[f'T={t:g}'] = episodes.summary(j.sample(j.sft_params, prompts, FLAGS.sft_samples, FLAGS.seed))
    results['sft'][split] = sft
    rows, gain = best_of_n_table(judge, prompts, FLAGS.seed + 1)
    results['best_of_n'][split], results['best_of_n_gain_16_vs_1'][split] = rows, gain
    print(f'{split}: SFT greedy gold {sft["greedy"]["gold"]:.3f}; best-of-n gold '
          + ', '.join(f'{r["n"]}: {r["gold"]:.3f}' for r in rows), flush=True)
  scorer = reward_lib.Scorer(judge.config, judge.frozen.reward, judge.mesh, judge.tokenizer, 256)
  results['reward_model'] = dict(on_policy_samples=pair_accuracy(scorer, read_jsonl(FLAGS.heldout)),
                                 synthetic=pair_accuracy(scorer, read_jsonl(synthetic)))
  print(f'reward model accuracy: SFT-sample pairs {results["reward_model"]["on_policy_samples"]["accuracy"]:.3f}, '
        f'synthetic {results["reward_model"]["synthetic"]["accuracy"]:.3f}')
  episodes.write_json(FLAGS.out, results)


if __name__ == '__main__':
  define_flags()
  cli.run_main(main)
