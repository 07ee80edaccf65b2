"""The experiment's figures (PNG), from results/summary.json and the PPO runs' metrics:

    python -m experiments.instructgpt.plots --results=runs/igpt/results --runs=ppo=runs/igpt/ppo_b0.01,ppo-ptx=...

- <results>/overoptimisation.png: left, the gold gain over SFT (solid, left axis) and the reward-model score gain
  (dashed, right axis) against sqrt(KL to SFT) on the validation prompts, for best-of-n (n = 1..64, analytic KL)
  and every PPO run's checkpoints, one line per beta, with the fitted d (alpha - beta d) (best-of-n) and
  d (alpha - beta ln d) (PPO) dotted and the early-stopped checkpoint starred; right, gold against update on
  validation (solid) and test (dashed).
- <results>/ppo.png: the --runs' reward-model score, KL to SFT, response length and pretraining loss over updates,
  as the runs logged them.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gpt_jax import cli  # noqa: E402
from gpt_jax.config import ConfigError  # noqa: E402

def define_flags() -> None:
  """The command's flags, defined when it runs (tests import the experiment's modules together)."""
  flags.DEFINE_string('results', None, 'the results directory holding summary.json; the PNGs are written there.')
  flags.DEFINE_list('runs', None, 'name=workdir pairs of PPO runs for ppo.png.')
  cli.define_overwrite_flag()


FLAGS = flags.FLAGS
PANELS = (('train/score', 'reward-model score'), ('train/kl', 'KL to SFT (nats per episode)'),
          ('train/response_length', 'response length (tokens)'), ('eval/loss', 'pretraining loss (nats/byte)'))


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def fitted(ax, d_max: float, form: str, params: dict | None, color) -> None:
  if params:
    d = np.linspace(1e-3, d_max, 100)
    y = d * (params['alpha'] - params['beta'] * (d if form == 'bon' else np.log(d)))
    ax.plot(d, y, ':', color=color, linewidth=1)


def overoptimisation(summary: dict, out: str) -> None:
  fig, (ax, ax_updates) = plt.subplots(1, 2, figsize=(12, 4.5))
  ax_rm = ax.twinx()
  bon = summary['best_of_n_validation']
  d_bon = np.sqrt([r['kl'] for r in bon])
  ax.plot(d_bon, [r['gold'] - bon[0]['gold'] for r in bon], 'o-', color='black', label='best-of-n: gold')
  ax_rm.plot(d_bon, [r['rm_score'] - bon[0]['rm_score'] for r in bon], 'o--', color='black', alpha=0.6)
  for r, d in zip(bon, d_bon):
    ax.annotate(f'n={r["n"]}', (d, r['gold'] - bon[0]['gold']), fontsize=7, xytext=(2, -9), textcoords='offset points')
  fitted(ax, d_bon.max(), 'bon', summary['fits']['best_of_n'], 'black')
  early = {name: run['update'] for name, run in summary['ppo_runs'].items()}
  for (name, points), color in zip(summary['overoptimisation_curves'].items(), plt.cm.tab10.colors):
    d = np.sqrt(np.maximum([p['kl'] for p in points], 0.0))
    label = f'PPO beta {name[len("ppo_b"):]}' if name.startswith('ppo_b') else name
    ax.plot(d, [p['gold_gain'] for p in points], '.-', color=color, label=f'{label}: gold')
    ax_rm.plot(d, [p['rm_gain'] for p in points], '.--', color=color, alpha=0.6)
    fitted(ax, d.max(), 'rl', summary['fits'].get(name), color)
    stop = next(i for i, p in enumerate(points) if p['update'] == early[name])
    ax.plot(d[stop], points[stop]['gold_gain'], '*', color=color, markersize=14, markeredgecolor='black',
            label=f'{label}: early stop (update {early[name]})')
    ax_updates.plot([p['update'] for p in points], [p['gold'] for p in points], '.-', color=color,
                    label=f'{label}: validation')
    ax_updates.plot([p['update'] for p in points], [p['test_gold'] for p in points], '.--', color=color,
                    label=f'{label}: test')
  ax.axhline(0, color='grey', linewidth=0.5)
  ax.set_xlabel('sqrt(KL to SFT)  (nats^1/2 per episode)')
  ax.set_ylabel('gold gain over SFT (solid)')
  ax_rm.set_ylabel('reward-model score gain over SFT (dashed)')
  ax.set_title('over-optimisation (validation prompts; dotted: fits)', fontsize=10)
  ax.legend(fontsize=7, loc='lower left')
  ax_updates.set_xlabel('PPO update')
  ax_updates.set_ylabel('gold (sampled at the policy\'s temperature)')
  ax_updates.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax_updates.set_title('gold over training', fontsize=10)
  ax_updates.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out, dpi=90)


def training_curves(runs: list[str], out: str) -> None:
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
  for item in runs:
    name, workdir = item.split('=', 1)
    rows = read_metrics(workdir)
    for ax, (key, title) in zip(axes, PANELS):
      points = [(r['step'], r[key]) for r in rows if key in r]
      if points:
        ax.plot(*zip(*points), label=name, marker='.' if key.startswith('eval') else None)
      ax.set_title(title, fontsize=10)
      ax.set_xlabel('PPO update')
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # updates are whole numbers
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(out, dpi=80)


def main(argv):
  del argv
  summary_path = os.path.join(FLAGS.results or '', 'summary.json')
  if not os.path.isfile(summary_path):
    raise ConfigError(f'--results={FLAGS.results} must be a directory holding summary.json (python -m '
                      f'experiments.instructgpt.summary writes it).')
  if not FLAGS.runs:
    raise ConfigError('--runs is required: name=workdir pairs of PPO runs, e.g. --runs=ppo=runs/igpt/ppo_b0.01.')
  outputs = [cli.check_output('results', os.path.join(FLAGS.results, name))
             for name in ('overoptimisation.png', 'ppo.png')]
  with open(summary_path, encoding='utf-8') as f:
    summary = json.load(f)
  overoptimisation(summary, outputs[0])
  training_curves(FLAGS.runs, outputs[1])


if __name__ == '__main__':
  define_flags()
  cli.run_main(main)
