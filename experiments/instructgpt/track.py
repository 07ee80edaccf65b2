"""A PPO run's saved policies against gold: each checkpoint on the validation and test prompts, the early-stopped
one (best validation gold) reported on test against SFT.

    python -m experiments.instructgpt.track --run=runs/igpt/ppo --sft=runs/igpt/sft --reward=runs/igpt/rm \\
        --out=runs/igpt/results/track_ppo.json

Update 0 is the SFT policy itself. At every saved update (the run's checkpoints; save them often with
--config.checkpoint.every_steps and keep them with --config.checkpoint.keep_every), --samples responses per prompt
at --temperature (PPO's): gold, exact match, reward-model score, KL to SFT per episode and the EOS share; the
gold of the greedy answers; the pretraining loss (the corpus's validation batches). The early-stopped update is
the one with the highest validation gold (sampled). On test it is compared with SFT sampled the same way: the win
rate (a prompt's paired samples, a tie 1/2) and the gold gain, each with a paired bootstrap 95% interval over
prompts.
"""

from __future__ import annotations

import os

from absl import flags

from experiments.instructgpt import episodes
from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.rlhf import toy

def define_flags() -> None:
  """The command's flags, defined when it runs (tests import the experiment's modules together)."""
  flags.DEFINE_string('run', None, 'the PPO run (its workdir, with checkpoints/).')
  flags.DEFINE_string('sft', None, 'the SFT run PPO started from (update 0 and the KL reference).')
  flags.DEFINE_string('reward', None, 'the reward-model run (with reward_norm.json).')
  flags.DEFINE_string('out', None, 'JSON file for the results (a new file, unless --overwrite).')
  flags.DEFINE_float('temperature', 0.7, 'sampling temperature (PPO\'s).')
  flags.DEFINE_integer('samples', 2, 'responses per prompt.')
  flags.DEFINE_integer('response_tokens', 8, 'most tokens per response (PPO\'s).')
  flags.DEFINE_integer('limit', None, 'only the first N prompts of each split (smoke runs).')
  flags.DEFINE_integer('seed', 0, 'sampling seed (the same for every checkpoint).')
  cli.define_overwrite_flag()


FLAGS = flags.FLAGS


def saved_updates(run: str) -> list[int]:
  directory = os.path.join(run, 'checkpoints')
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def evaluate(judge: episodes.Judge, policy, prompts: dict) -> tuple[dict, dict]:
  """({split: summary}, {split: episodes}) of one policy."""
  out, eps = {}, {}
  for split, items in prompts.items():
    eps[split] = judge.sample(policy, items, FLAGS.samples, FLAGS.seed)
    out[split] = dict(episodes.summary(eps[split]), greedy_gold=float(judge.greedy_gold(policy, items).mean()))
  return out, eps


def versus_sft(ours: episodes.Episodes, sft: episodes.Episodes) -> dict:
  wins = episodes.win_rates(ours.per_prompt(ours.gold), sft.per_prompt(sft.gold))
  gain = ours.per_prompt(ours.gold).mean(1) - sft.per_prompt(sft.gold).mean(1)
  return dict(win_rate_vs_sft=float(wins.mean()), win_rate_vs_sft_ci95=episodes.bootstrap_ci(wins),
              gold_gain=float(gain.mean()), gold_gain_ci95=episodes.bootstrap_ci(gain))


def main(argv):
  del argv
  for name in ('run', 'sft', 'reward'):
    if not FLAGS[name].value or not os.path.isdir(FLAGS[name].value):
      raise ConfigError(f'--{name} must be an existing directory: see python -m experiments.instructgpt.track '
                        f'--help.')
  updates = saved_updates(FLAGS.run)
  if not updates:
    raise ConfigError(f'{FLAGS.run} has no saved checkpoints: pass a PPO run trained with checkpoints kept '
                      f'(--config.checkpoint.keep_every).')
  episodes.check_sampling(FLAGS, temperatures=('temperature',), counts=('response_tokens', 'samples'))
  cli.check_output('out', FLAGS.out)
  judge = episodes.Judge(FLAGS.sft, FLAGS.reward, FLAGS.temperature, FLAGS.response_tokens)
  prompts = {split: episodes.prompts_of(split, FLAGS.limit) for split in toy.SPLITS}
  rows, test_episodes = [], {}
  for update in [0, *updates]:
    policy = judge.sft_params if update == 0 else judge.load_policy(FLAGS.run, update)
    metrics, eps = evaluate(judge, policy, prompts)
    test_episodes[update] = eps['test']
    rows.append(dict(update=update, pretrain_loss=judge.pretraining_loss(policy), **metrics))
    print(f'update {update}: validation gold {metrics["validation"]["gold"]:.3f} (greedy '
          f'{metrics["validation"]["greedy_gold"]:.3f}), RM {metrics["validation"]["rm_score"]:.3f}, KL '
          f'{metrics["validation"]["kl"]:.3f}; test gold {metrics["test"]["gold"]:.3f}', flush=True)
  best = max(rows, key=lambda r: r['validation']['gold'])
  chosen = dict(update=best['update'], pretrain_loss=best['pretrain_loss'], **best['test'],
                **versus_sft(test_episodes[best['update']], test_episodes[0]))
  final = rows[-1]
  last = dict(update=final['update'], pretrain_loss=final['pretrain_loss'], **final['test'],
              **versus_sft(test_episodes[final['update']], test_episodes[0]))
  results = dict(run=FLAGS.run, temperature=FLAGS.temperature, samples=FLAGS.samples,
                 prompts={split: len(p) for split, p in prompts.items()}, checkpoints=rows, early_stopped=chosen,
                 last=last)
  print(f'early-stopped at update {chosen["update"]}: test gold {chosen["gold"]:.3f}, win rate vs SFT '
        f'{chosen["win_rate_vs_sft"]:.3f} {chosen["win_rate_vs_sft_ci95"]}, KL {chosen["kl"]:.3f}, '
        f'pretraining loss {chosen["pretrain_loss"]:.3f}')
  episodes.write_json(FLAGS.out, results)


if __name__ == '__main__':
  define_flags()
  cli.run_main(main)
