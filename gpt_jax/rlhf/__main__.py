"""Writes the embedded toy task's files: python -m gpt_jax.rlhf toy --out=runs/toy [--items=4000] [--seed=0]

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

flags.DEFINE_string('out', None, 'directory the toy files are written into (created; existing toy files are replaced).')
flags.DEFINE_integer('items', 4000, 'training items per file.')
flags.DEFINE_integer('held_out', 256, 'held-out items per file.')
flags.DEFINE_integer('seed', 0, 'generator seed.')
flags.DEFINE_integer('max_responses', 4, 'largest K of the rankings.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) != 2:
    raise ConfigError('name a command: python -m gpt_jax.rlhf toy --out=<dir>.')
  if not FLAGS.out:
    raise ConfigError('--out is required: the directory the toy files go into, e.g. --out=runs/toy.')
  if os.path.exists(FLAGS.out) and not os.path.isdir(FLAGS.out):
    raise ConfigError(f'--out={FLAGS.out} is a file: pass a directory.')
  for name in ('items', 'held_out'):
    if FLAGS[name].value < 1:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be a positive integer.')
  if not 2 <= FLAGS.max_responses <= 9:
    raise ConfigError(f'--max_responses={FLAGS.max_responses} must be in 2..9.')
  paths = toy.write(FLAGS.out, FLAGS.items, FLAGS.held_out, FLAGS.seed, FLAGS.max_responses)
  print(f'wrote {len(paths)} files into {FLAGS.out}; evaluate with --tasks={os.path.join(FLAGS.out, "eval/toy_qa")}')
  return 0


if __name__ == '__main__':
  cli.run_main(main, commands=('toy',))
