"""Writes the embedded toy task's files: python -m gpt_jax.rlhf toy --out=runs/toy [--items=4000] [--seed=0]
[--overwrite]

JSONL files for every stage (instructions, rankings, pairs, classification, PPO prompts; training and held-out
items never overlap) and an eval-harness task, <out>/eval/toy_qa, that scores exact match of generated answers:
    python -m gpt_jax.eval --workdir=runs/sft --tasks=runs/toy/eval/toy_qa
"""

from __future__ import annotations

import os

from absl import flags

from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.rlhf import toy

flags.DEFINE_string('out', None, 'directory the toy files are written into (created if absent; other files in it are '
                    'left alone).')
flags.DEFINE_integer('items', 4000, f'training items per file (at most {toy.max_items(False)}).')
flags.DEFINE_integer('held_out', 256, f'held-out items per file (at most {toy.max_items(True)}).')
flags.DEFINE_integer('seed', 0, 'generator seed.')
flags.DEFINE_integer('max_responses', 4, 'largest K of the rankings.')
cli.define_overwrite_flag()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 2:
    raise ConfigError('name a command: python -m gpt_jax.rlhf toy --out=<dir>.')
  if not FLAGS.out:
    raise ConfigError('--out is required: the directory the toy files go into, e.g. --out=runs/toy.')
  for name, limit in (('items', toy.max_items(False)), ('held_out', toy.max_items(True))):
    if not 1 <= FLAGS[name].value <= limit:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be between 1 and {limit}, the number of distinct '
                        f'{"held-out" if name == "held_out" else "training"} items the toy task has.')
  if not 2 <= FLAGS.max_responses <= 9:
    raise ConfigError(f'--max_responses={FLAGS.max_responses} must be in 2..9.')
  cli.check_outputs_in('out', FLAGS.out, toy.OUTPUTS)
  paths = toy.write(FLAGS.out, FLAGS.items, FLAGS.held_out, FLAGS.seed, FLAGS.max_responses)
  print(f'wrote {len(paths)} files into {FLAGS.out}; evaluate with --tasks={os.path.join(FLAGS.out, "eval/toy_qa")}')
  return 0


if __name__ == '__main__':
  cli.run_main(main, commands=('toy',))
