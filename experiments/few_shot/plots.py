"""The few-shot experiment's figures (matplotlib, Agg): accuracy and mean target log-prob vs K, one line per model
size with the shuffled-label control of the largest model dashed (GPT-3 Figure 1.2's layout), and log-prob vs
model size, one line per K. Small PNGs, one panel per task; a point whose prompts were cut to fit the model's
context is drawn hollow. experiments.few_shot.run draws them after scoring; from its results JSON alone:

    python -m experiments.few_shot.plots --results=experiments/few_shot/results/results.json \
        --plots=experiments/few_shot/plots --overwrite
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from absl import flags  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from gpt_jax import cli  # noqa: E402
from gpt_jax.config import ConfigError  # noqa: E402

DPI = 80
FILES = ('accuracy_vs_k.png', 'logprob_vs_k.png', 'logprob_vs_size.png')  # what draw_all writes
TRUNCATED_NOTE = 'hollow: prompts cut to fit the context'


def _tasks(rows) -> list[str]:
  return list(dict.fromkeys(r['task'] for r in rows))


def _panels(n: int):
  fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
  return fig, axes[0]


def _save(fig, directory: str, name: str, rows) -> str:
  if any(r['truncated'] for r in rows):
    fig.suptitle(TRUNCATED_NOTE, x=0.99, ha='right', fontsize=7)
  fig.tight_layout()
  path = os.path.join(directory, name)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return path


def versus_k(directory: str, rows, metric: str, label: str, name: str) -> str:
  tasks = _tasks(rows)
  models = sorted({(r['params_non_embedding'], r['model']) for r in rows})
  cmap = plt.get_cmap('viridis')
  fig, axes = _panels(len(tasks))
  for ax, task in zip(axes, tasks):
    for i, (n, model) in enumerate(models):
      for control in (False, True):
        if control and model != models[-1][1]:
          continue
        pts = sorted((r['k'], r[metric], r[f'{metric}_se'], r['truncated']) for r in rows
                     if r['task'] == task and r['model'] == model and r['control'] == control)
        if control:  # K = 0 has no demonstrations to shuffle: the control starts from the model's own K = 0
          pts = sorted(pts + [(r['k'], r[metric], r[f'{metric}_se'], r['truncated']) for r in rows
                              if r['task'] == task and r['model'] == model and r['k'] == 0])
        ks, values, errors, cut = zip(*pts)
        _errorbar(ax, ks, values, errors, cut, color='black' if control else cmap(i / max(len(models) - 1, 1)),
                  ls='--' if control else '-', label=f'{n / 1e3:.0f}k shuffled' if control else f'{n / 1e3:.0f}k')
    ax.set(title=task, xlabel='K (demonstrations)', ylabel=label if task == tasks[0] else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # K is a count of demonstrations
  axes[0].legend(fontsize=6, title='non-emb. params', title_fontsize=6)
  return _save(fig, directory, name, rows)


def _errorbar(ax, xs, values, errors, cut, color, label, ls='-'):
  """One line with error bars; the points whose prompts were cut (cut > 0) hollow."""
  ax.errorbar(xs, values, yerr=errors, color=color, ls=ls, lw=1, ms=3, marker='o', capsize=2, label=label)
  hollow = [(x, v) for x, v, c in zip(xs, values, cut) if c]
  if hollow:
    ax.plot(*zip(*hollow), ls='none', marker='o', ms=3, mfc='white', mec=color, zorder=3)


def versus_size(directory: str, rows) -> str:
  tasks = _tasks(rows)
  fig, axes = _panels(len(tasks))
  cmap = plt.get_cmap('plasma')
  ks = sorted({r['k'] for r in rows})
  for ax, task in zip(axes, tasks):
    for k in ks:
      pts = sorted((r['params_non_embedding'], r['loglik'], r['loglik_se'], r['truncated']) for r in rows
                   if r['task'] == task and r['k'] == k and not r['control'])
      if pts:
        n, values, errors, cut = zip(*pts)
        _errorbar(ax, n, values, errors, cut, color=cmap(ks.index(k) / len(ks)), label=f'K={k}')
    ax.set(xscale='log', title=task, xlabel='non-embedding params',
           ylabel='mean target log-prob' if task == tasks[0] else None)
  axes[0].legend(fontsize=6)
  return _save(fig, directory, 'logprob_vs_size.png', rows)


def draw_all(directory: str, rows) -> list[str]:
  """Writes FILES into directory; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  return [versus_k(directory, rows, 'acc', 'accuracy (exact)', FILES[0]),
          versus_k(directory, rows, 'loglik', 'mean target log-prob', FILES[1]),
          versus_size(directory, rows)]


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.results or not os.path.isfile(f.results):
    raise ConfigError(f'--results={f.results!r} is not a file: pass the JSON experiments.few_shot.run wrote.')
  if not f.plots:
    raise ConfigError('--plots is required: the directory the PNGs are written to.')
  cli.check_outputs_in('plots', f.plots, FILES)
  with open(f.results, encoding='utf-8') as handle:
    rows = json.load(handle).get('rows')
  if not rows:
    raise ConfigError(f'--results={f.results} holds no rows: pass the JSON experiments.few_shot.run wrote.')
  for path in draw_all(f.plots, rows):
    print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  flags.DEFINE_string('results', None, 'the results JSON of experiments.few_shot.run.')
  flags.DEFINE_string('plots', None, 'directory the PNGs are written to.')
  cli.define_overwrite_flag()
  cli.run_main(main)
