"""Plots PPO runs' score, KL to the SFT policy, response length and pretraining loss over updates (PNG).

    python -m experiments.instructgpt.plots --runs=ppo=runs/rlhf/ppo,ppo-ptx=runs/rlhf/ppo_ptx \\
        --out=runs/rlhf/results/ppo.png
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from absl import flags  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gpt_jax import cli  # noqa: E402
from gpt_jax.config import ConfigError  # noqa: E402

flags.DEFINE_list('runs', None, 'name=workdir pairs of PPO runs.')
flags.DEFINE_string('out', None, 'PNG file (a new file, unless --overwrite).')
cli.define_overwrite_flag()
FLAGS = flags.FLAGS
PANELS = (('train/score', 'reward-model score'), ('train/kl', 'KL to SFT (nats per episode)'),
          ('train/response_length', 'response length (tokens)'), ('eval/loss', 'pretraining loss (stdlib)'))


def read(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def main(argv):
  del argv
  if not FLAGS.runs:
    raise ConfigError('--runs is required: name=workdir pairs of PPO runs, e.g. --runs=ppo=runs/instructgpt/ppo.')
  cli.check_output('out', FLAGS.out)
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
  for item in FLAGS.runs:
    name, workdir = item.split('=', 1)
    rows = read(workdir)
    for ax, (key, title) in zip(axes, PANELS):
      points = [(r['step'], r[key]) for r in rows if key in r]
      if points:
        ax.plot(*zip(*points), label=name, marker='.' if key.startswith('eval') else None)
      ax.set_title(title, fontsize=10)
      ax.set_xlabel('PPO update')
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # updates are whole numbers
  axes[0].legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  fig.savefig(FLAGS.out, dpi=80)


if __name__ == '__main__':
  cli.run_main(main)
