"""The in-context learning experiment's figure from its CSV: accuracy vs K (0..16), one line per model size
(1-layer control included), the shuffled-output control dashed, chance and the lookup ceiling dotted; one panel
per task and one for the mean over tasks (GPT-3 Figure 1.2's layout).

    python -m experiments.few_shot.icl_plot --csv=experiments/few_shot/results/icl.csv \
        --plot=experiments/few_shot/plots/icl_accuracy_vs_k.png --overwrite
"""

from __future__ import annotations

import csv
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from gpt_jax import cli  # noqa: E402
from gpt_jax.config import ConfigError  # noqa: E402

flags.DEFINE_string('csv', 'experiments/few_shot/results/icl.csv', 'the experiment\'s CSV (icl_run writes it).')
flags.DEFINE_string('plot', 'experiments/few_shot/plots/icl_accuracy_vs_k.png', 'PNG to write.')
FLAGS = flags.FLAGS
MEAN = 'mean over tasks'


COLUMNS = {'k': int, 'n_layers': int, 'params_non_embedding': int, 'accuracy': float, 'ceiling': float,
           'chance': float, 'model': str, 'task': str, 'control': str}


def read_rows(path: str) -> list[dict]:
  """The CSV's rows with their numbers parsed; a file that is not icl_run's CSV is refused in one sentence."""
  if not os.path.isfile(path):
    raise ConfigError(f'--csv={path} is not a file: run python -m experiments.few_shot.icl_run first.')
  with open(path, encoding='utf-8', errors='replace') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ConfigError(f'--csv={path} has no rows: run python -m experiments.few_shot.icl_run to fill it.')
  missing = sorted(set(COLUMNS) - set(rows[0]))
  if missing:
    raise ConfigError(f'--csv={path} is not a CSV written by python -m experiments.few_shot.icl_run (no column '
                      f'{", ".join(missing)}).')
  try:
    return [dict(r, **{key: kind(r[key]) for key, kind in COLUMNS.items()}) for r in rows]
  except (TypeError, ValueError):
    raise ConfigError(f'--csv={path} has a value that is not a number in one of the columns '
                      f'{", ".join(k for k, kind in COLUMNS.items() if kind is not str)}.') from None


def series(rows, task, model, control, key='accuracy'):
  """[(k, value)] for one line; for the mean panel, the mean over tasks at each K."""
  picked = [r for r in rows if r['model'] == model and r['control'] == control and task in (MEAN, r['task'])]
  ks = sorted({r['k'] for r in picked})
  return ks, [np.mean([r[key] for r in picked if r['k'] == k]) for k in ks]


def draw(rows, path: str) -> str:
  tasks = list(dict.fromkeys(r['task'] for r in rows)) + [MEAN]
  models = sorted({(r['n_layers'] > 1, r['params_non_embedding'], r['model']) for r in rows})
  colors = plt.get_cmap('viridis')(np.linspace(0.0, 0.85, len(models)))
  fig, axes = plt.subplots(1, len(tasks), figsize=(3.3 * len(tasks), 3.4), squeeze=False)
  ks = sorted({r['k'] for r in rows})
  x_of = {k: i for i, k in enumerate(ks)}  # K on an even grid: 0, 1, 2, 4, 8, 16 equally spaced
  for ax, task in zip(axes[0], tasks):
    for color, (_, n, model) in zip(colors, models):
      for control, style in (('none', '-'), ('shuffled', '--')):
        k, acc = series(rows, task, model, control)
        label = f'{model} ({n / 1e3:.0f}k)' if control == 'none' else None
        ax.plot([x_of[v] for v in k], acc, style, color=color, marker='o' if control == 'none' else None,
                markersize=3, label=label)
    k, ceiling = series(rows, task, models[0][2], 'none', 'ceiling')
    ax.plot([x_of[v] for v in k], ceiling, ':', color='black', label='ceiling (key among demos)')
    _, chance = series(rows, task, models[0][2], 'none', 'chance')
    ax.axhline(chance[0], color='grey', linewidth=0.8, label='chance')
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(task, fontsize=10)
    ax.set_xlabel('K (demonstrations in context)')
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('accuracy (exact match)')
  handles, labels = axes[0][0].get_legend_handles_labels()
  handles.append(plt.Line2D([], [], linestyle='--', color='black'))
  labels.append('shuffled-output control')
  fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 4), fontsize=8, frameon=False)
  fig.tight_layout(rect=(0, 0.16, 1, 1))
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def main(argv):
  del argv
  rows = read_rows(FLAGS.csv)
  cli.check_output('plot', FLAGS.plot)
  print(draw(rows, FLAGS.plot))


if __name__ == '__main__':
  cli.define_overwrite_flag()
  cli.run_main(main)
