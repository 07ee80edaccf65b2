"""The scaling experiment's four figures (matplotlib, Agg): final loss vs compute with the envelope and L(C),
IsoFLOP profiles with their parabolas and minima, the N_opt(C) / D_opt(C) frontier of the three approaches, and
L(N) with its power law. Losses on linear axes (numbers on every axis), colour bars where colour encodes model
size, law labels from gpt_jax.scaling (one sign convention). Drawn from the rows and fits analyze.py holds."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib import colors, ticker  # noqa: E402

from gpt_jax import scaling  # noqa: E402

DPI = 90
SIZE = (5.6, 3.9)
LOSS = 'final validation loss (nats/byte)'


def _save(fig, directory: str, name: str) -> str:
  for ax in fig.axes:  # minor-tick labels of log axes spanning less than a decade overlap
    if ax.get_xscale() == 'log':
      ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  path = os.path.join(directory, name)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return path


def _size_ticks(ax, sizes) -> None:
  """Ticks at the model sizes of a log axis (it spans too little for decade labels), as 20k, 155k."""
  sizes = sorted(set(sizes))
  ax.xaxis.set_major_locator(ticker.FixedLocator(sizes))
  ax.xaxis.set_major_formatter(ticker.FixedFormatter([f'{n / 1e3:.3g}k' for n in sizes]))
  ax.xaxis.set_minor_locator(ticker.NullLocator())


def _size_colours(rows, params: str):
  """(colour of each row by model size on a log scale, the mappable for its colour bar)."""
  n = np.array([float(r[f'params_{params}']) for r in rows])
  mappable = plt.cm.ScalarMappable(colors.LogNorm(n.min(), n.max()), plt.get_cmap('viridis'))
  return mappable.to_rgba(n), mappable


def loss_vs_compute(directory, rows, fits, params) -> str:
  c = np.array([float(r['flops_model']) for r in rows])
  loss = np.array([float(r['final_eval_loss']) for r in rows])
  rgba, mappable = _size_colours(rows, params)
  fig, ax = plt.subplots(figsize=SIZE)
  ax.scatter(c, loss, c=rgba, s=18)
  env = fits.get('approach1')
  if env is not None:
    ax.plot(env.flops, env.loss, 'o', mfc='none', color='crimson', ms=8, label='envelope (Approach 1)')
    law = fits.get('L(C)')
    if law is not None:
      grid = np.geomspace(env.flops.min(), env.flops.max(), 100)
      ax.plot(grid, law(grid), '--', color='crimson', lw=1, label=f'{law.label()}, R2 {law.r2:.3f}')
  ax.set(xscale='log', xlabel='C, model FLOPs (flops_per_token x tokens)', ylabel=LOSS,
         title='Final loss vs compute')
  fig.colorbar(mappable, ax=ax, label=f'N ({params})')
  ax.legend(fontsize=7)
  return _save(fig, directory, 'loss_vs_compute.png')


def isoflop(directory, rows, fits, params) -> str | None:
  fit = fits.get('approach2')
  if fit is None:
    return None
  fig, ax = plt.subplots(figsize=SIZE)
  budgets = sorted({float(r['flops_budget']) for r in rows})
  cmap = plt.get_cmap('plasma')
  parabolas = {p['flops']: p['coefficients'] for p in fit.extra['parabolas']}
  for i, budget in enumerate(budgets):
    colour = cmap(i / max(len(budgets), 1))
    at = [r for r in rows if float(r['flops_budget']) == budget]
    n = np.array([float(r[f'params_{params}']) for r in at])
    ax.plot(n, [float(r['final_eval_loss']) for r in at], 'o', color=colour, ms=4, label=f'C = {budget:.3g}')
    if budget in parabolas:
      grid = np.geomspace(n.min(), n.max(), 100)
      ax.plot(grid, np.polyval(parabolas[budget], np.log(grid)), '-', color=colour, lw=1)
  ax.plot(fit.n_opt, fit.loss, '*', color='black', ms=10, label='parabola minima')
  ax.set(xscale='log', xlabel=f'N ({params})', ylabel=LOSS, title='IsoFLOP profiles (Approach 2)')
  _size_ticks(ax, [float(r[f'params_{params}']) for r in rows])
  ax.legend(fontsize=7)
  return _save(fig, directory, 'isoflop.png')


def frontier(directory, fits, params) -> str | None:
  approaches = [(name, fits.get(name)) for name in ('approach1', 'approach2') if fits.get(name) is not None]
  chinchilla = fits.get(f'approach3/{params}')
  if not approaches:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(SIZE[0] * 1.6, SIZE[1]))
  grid = np.geomspace(min(f.flops.min() for _, f in approaches), max(f.flops.max() for _, f in approaches), 100)
  for ax, which in zip(axes, ('n', 'd')):
    for (name, fit), marker in zip(approaches, ('o', 's')):
      law = fit.n_law if which == 'n' else fit.d_law
      ax.plot(fit.flops, fit.n_opt if which == 'n' else fit.d_opt, marker, ms=4,
              label=f'{name}: C^{law.exponent:.2f}')
      ax.plot(grid, law(grid), '-', lw=1, color=ax.lines[-1].get_color())
    if chinchilla is not None:
      n_opt, d_opt = scaling.compute_optimal(chinchilla, grid)
      exponent = chinchilla.a if which == 'n' else chinchilla.b
      ax.plot(grid, n_opt if which == 'n' else d_opt, 'k--', lw=1, label=f'approach3: C^{exponent:.2f}')
    ax.set(xscale='log', yscale='log', xlabel='C (model FLOPs)',
           ylabel=f'N_opt ({params})' if which == 'n' else 'D_opt (tokens)')
    ax.legend(fontsize=7)
  fig.suptitle('Compute-optimal frontier', fontsize=10)
  return _save(fig, directory, 'frontier.png')


def loss_vs_params(directory, rows, fits) -> str:
  fig, ax = plt.subplots(figsize=SIZE)
  n = np.array([float(r['params_non_embedding']) for r in rows])
  loss = np.array([float(r['final_eval_loss']) for r in rows])
  ax.plot(n, loss, 'o', color='lightgray', ms=4, label='every run')
  law, points = fits.get('L(N)'), fits.get('L(N) points')
  if law is not None:
    ax.plot(*points, 'o', color='black', ms=4, label='best run per size, enough tokens per parameter')
    grid = np.geomspace(points[0].min(), points[0].max(), 100)
    ax.plot(grid, law(grid), '-', lw=1, label=f'{law.label()}, R2 {law.r2:.3f}')
  ax.set(xscale='log', xlabel='N (non-embedding parameters)', ylabel=LOSS,
         title='L(N): best run per size with enough tokens per parameter')
  _size_ticks(ax, n)
  ax.legend(fontsize=7)
  return _save(fig, directory, 'loss_vs_params.png')


FILES = ('loss_vs_compute.png', 'isoflop.png', 'frontier.png', 'loss_vs_params.png')  # what draw_all writes


def draw_all(directory: str, rows, fits, params: str) -> list[str]:
  os.makedirs(directory, exist_ok=True)
  paths = [loss_vs_compute(directory, rows, fits, params), isoflop(directory, rows, fits, params),
           frontier(directory, fits, params), loss_vs_params(directory, rows, fits)]
  return [p for p in paths if p]
