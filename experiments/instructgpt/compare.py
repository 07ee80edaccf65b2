"""Compares policies on the toy task's held-out prompts: exact match (the programmatic judge), mean reward-model
score, and win rates against a baseline policy under the reward model and under the judge.

    python -m experiments.instructgpt.compare --reward=runs/rlhf/rm --baseline=sft \\
        --policies=base=runs/rlhf/base,sft=runs/rlhf/sft,ppo=runs/rlhf/ppo/policy,dpo=runs/rlhf/dpo \\
        --out=runs/rlhf/results/compare.json

Every policy answers the same held-out prompts greedily (temperature 0, at most 8 tokens, stopping at EOS or a
newline). A win counts 1, a tie 1/2: under the reward model by the higher normalised score, under the judge by
closeness to the right answer (toy.closeness).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import model as gm
from gpt_jax import sample
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tokenizer_lib
from gpt_jax.heads import RewardModel
from gpt_jax.rlhf import reward, toy

flags.DEFINE_list('policies', None, 'name=workdir pairs of the policies to compare.')
flags.DEFINE_string('baseline', 'sft', 'the policy the others are compared against.')
flags.DEFINE_string('reward', None, 'reward-model workdir (with reward_norm.json).')
flags.DEFINE_integer('prompts', 256, 'held-out toy prompts.')
flags.DEFINE_string('out', None, 'JSON file for the results (a new file, unless --overwrite).')
cli.define_overwrite_flag()
FLAGS = flags.FLAGS


def answers(path: str, prompts: list[str]) -> list[str]:
  config = ckpt.load_config(path)
  mesh = gs.single_device_mesh()
  module = gm.GPTLM(config.model)
  params, _ = ckpt.load_for_inference(path, gs.abstract_params(gm.abstract_variables(module)['params'], mesh))
  tokenizer = tokenizer_lib.load(config.data)
  sampler = sample.Sampler(module, config.model, params, eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id,
                           batch_size=64, mesh=mesh)
  out = sample.generate_text(sampler, tokenizer, prompts, stop=['\n'], max_new_tokens=8, rng=jax.random.key(0),
                             temperature=0.0)
  return [s.text for s in out]


def win_rate(ours: np.ndarray, theirs: np.ndarray) -> float:
  return float(np.mean((ours > theirs) + 0.5 * (ours == theirs)))


def main(argv):
  del argv
  for name in ('policies', 'reward'):
    if not FLAGS[name].value:
      raise ConfigError(f'--{name} is required: see python -m experiments.instructgpt.compare --help.')
  if FLAGS.out:
    cli.check_output('out', FLAGS.out)
  prompts = [x['prompt'] for x in toy.instructions(FLAGS.prompts, held_out=True)]
  policies = dict(item.split('=', 1) for item in FLAGS.policies)
  texts = {name: answers(path, prompts) for name, path in policies.items()}
  rm_config = ckpt.load_config(FLAGS.reward)
  mesh = gs.single_device_mesh()
  abstract = gs.abstract_params(gm.abstract_variables(RewardModel(rm_config.model))['params'], mesh)
  rm_params, _ = ckpt.load_for_inference(FLAGS.reward, abstract)
  norm = reward.read_normalization(FLAGS.reward)
  scorer = reward.Scorer(rm_config, rm_params, mesh, tokenizer_lib.load(rm_config.data), 64)
  scores = {name: norm['gain'] * scorer(list(zip(prompts, t))) + norm['bias'] for name, t in texts.items()}
  closeness = {name: np.array([toy.closeness(p, a) for p, a in zip(prompts, t)]) for name, t in texts.items()}
  base = FLAGS.baseline
  results = {name: dict(exact_match=float(np.mean(closeness[name] == 0)), mean_score=float(np.mean(scores[name])),
                        win_rate_rm=win_rate(scores[name], scores[base]),
                        win_rate_judge=win_rate(closeness[name], closeness[base]),
                        examples=[dict(prompt=p, answer=a) for p, a in list(zip(prompts, texts[name]))[:5]])
             for name in policies}
  print(f'{"policy":8s} {"exact":>7s} {"score":>7s} {"win/RM":>7s} {"win/judge":>9s}   (against {base})')
  for name, r in results.items():
    print(f'{name:8s} {r["exact_match"]:7.3f} {r["mean_score"]:7.3f} {r["win_rate_rm"]:7.3f} '
          f'{r["win_rate_judge"]:9.3f}')
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'w', encoding='utf-8') as f:
      json.dump(dict(baseline=base, prompts=len(prompts), policies=policies, results=results), f, indent=2)


if __name__ == '__main__':
  cli.run_main(main)
