"""The few-shot experiment's figures (matplotlib, Agg): accuracy and mean target log-prob vs K, one line per model
size with the shuffled-label control of the largest model dashed (GPT-3 Figure 1.2's layout), and log-prob vs
model size, one line per K. Small PNGs, one panel per task."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

DPI = 80


def _tasks(rows) -> list[str]:
  return list(dict.fromkeys(r['task'] for r in rows))


def _panels(n: int):
  fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
  return fig, axes[0]


def _save(fig, directory: str, name: str) -> str:
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
        pts = sorted((r['k'], r[metric], r[f'{metric}_se']) for r in rows
                     if r['task'] == task and r['model'] == model and r['control'] == control)
        if control:  # K = 0 has no demonstrations to shuffle: the control starts from the model's own K = 0
          pts = sorted(pts + [(r['k'], r[metric], r[f'{metric}_se']) for r in rows
                              if r['task'] == task and r['model'] == model and r['k'] == 0])
        ks, values, errors = zip(*pts)
        ax.errorbar(ks, values, yerr=errors, color='black' if control else cmap(i / max(len(models) - 1, 1)),
                    ls='--' if control else '-', lw=1, ms=3, marker='o', capsize=2,
                    label=f'{n / 1e3:.0f}k shuffled' if control else f'{n / 1e3:.0f}k')
    ax.set(title=task, xlabel='K (demonstrations)', ylabel=label if task == tasks[0] else None)
  axes[0].legend(fontsize=6, title='non-emb. params', title_fontsize=6)
  return _save(fig, directory, name)


def versus_size(directory: str, rows) -> str:
  tasks = _tasks(rows)
  fig, axes = _panels(len(tasks))
  cmap = plt.get_cmap('plasma')
  ks = sorted({r['k'] for r in rows})
  for ax, task in zip(axes, tasks):
    for k in ks:
      pts = sorted((r['params_non_embedding'], r['loglik'], r['loglik_se']) for r in rows
                   if r['task'] == task and r['k'] == k and not r['control'])
      if pts:
        n, values, errors = zip(*pts)
        ax.errorbar(n, values, yerr=errors, color=cmap(ks.index(k) / len(ks)), lw=1, marker='o', ms=3,
                    capsize=2, label=f'K={k}')
    ax.set(xscale='log', title=task, xlabel='non-embedding params',
           ylabel='mean target log-prob' if task == tasks[0] else None)
  axes[0].legend(fontsize=6)
  return _save(fig, directory, 'logprob_vs_size.png')


def draw_all(directory: str, rows) -> list[str]:
  os.makedirs(directory, exist_ok=True)
  return [versus_k(directory, rows, 'acc', 'accuracy (exact)', 'accuracy_vs_k.png'),
          versus_k(directory, rows, 'loglik', 'mean target log-prob', 'logprob_vs_k.png'),
          versus_size(directory, rows)]
