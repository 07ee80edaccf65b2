"""The scaling experiment's four figures (matplotlib, Agg): loss vs compute with the Approach 1 envelope, IsoFLOP
profiles with their parabolas and minima, the N_opt(C) / D_opt(C) frontier of the three approaches, and L(N) with
its power laws. Small PNGs, drawn from the rows and fits analyze.py already holds."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from gpt_jax import scaling  # noqa: E402

DPI = 90
SIZE = (5.2, 3.8)


def _save(fig, directory: str, name: str) -> str:
  for ax in fig.axes:  # minor-tick labels of log axes spanning less than a decade overlap
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
  path = os.path.join(directory, name)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return path


def _by_size(rows, params: str) -> dict[float, str]:
  """A colour per model size, small to large."""
  sizes = sorted({float(r[f'params_{params}']) for r in rows})
  cmap = plt.get_cmap('viridis')
  return {s: cmap(i / max(len(sizes) - 1, 1)) for i, s in enumerate(sizes)}


def loss_vs_compute(directory, rows, curve_rows, fits, params) -> str | None:
  if not curve_rows:
    return None
  colours = _by_size(rows, params)
  fig, ax = plt.subplots(figsize=SIZE)
  for run in dict.fromkeys(r['run'] for r in curve_rows):
    points = [r for r in curve_rows if r['run'] == run]
    c = [float(r['flops_6nd']) for r in points]
    ax.plot(c, [float(r['eval_loss']) for r in points], color=colours[float(points[0][f'params_{params}'])],
            lw=0.8, alpha=0.8)
  env = fits.get('approach1')
  if env is not None:
    ax.plot(env.flops, env.loss, 'o', color='crimson', ms=4, label='envelope (Approach 1)')
  law = fits.get('L(C)')
  if law is not None:
    grid = np.geomspace(env.flops.min(), env.flops.max(), 100)
    ax.plot(grid, law(grid), '--', color='crimson', lw=1,
            label=f'L(C) = {law.irreducible:.2f} + {law.coefficient:.3g} C^{law.exponent:.3f}')
  ax.set(xscale='log', xlabel='C = 6ND (FLOPs)', ylabel='validation loss (nats/byte)',
         title='Loss vs compute (colour: model size)')
  ax.legend(fontsize=7)
  return _save(fig, directory, 'loss_vs_compute.png')


def isoflop(directory, rows, fits, params) -> str | None:
  fit = fits.get('approach2')
  if fit is None:
    return None
  fig, ax = plt.subplots(figsize=SIZE)
  budgets = sorted({float(r['flops_budget']) for r in rows if r['flops_budget']})
  cmap = plt.get_cmap('plasma')
  parabolas = {p['flops']: p['coefficients'] for p in fit.extra['parabolas']}
  for i, budget in enumerate(budgets):
    colour = cmap(i / max(len(budgets), 1))
    at = [r for r in rows if r['flops_budget'] and float(r['flops_budget']) == budget]
    n = np.array([float(r[f'params_{params}']) for r in at])
    ax.plot(n, [float(r['final_eval_loss']) for r in at], 'o', color=colour, ms=4, label=f'C = {budget:.0e}')
    if budget in parabolas:
      grid = np.geomspace(n.min(), n.max(), 100)
      ax.plot(grid, np.polyval(parabolas[budget], np.log(grid)), '-', color=colour, lw=1)
  ax.plot(fit.n_opt, fit.loss, '*', color='black', ms=10, label='minima')
  ax.set(xscale='log', xlabel=f'N ({params} parameters)', ylabel='final validation loss',
         title='IsoFLOP profiles (Approach 2)')
  ax.legend(fontsize=7)
  return _save(fig, directory, 'isoflop.png')


def frontier(directory, fits, params) -> str | None:
  approaches = [(name, fits.get(name)) for name in ('approach1', 'approach2')]
  chinchilla = fits.get(f'approach3/{params}')
  if all(f is None for _, f in approaches) and chinchilla is None:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(SIZE[0] * 1.6, SIZE[1]))
  lows = [f.flops.min() for _, f in approaches if f is not None] or [1e11]
  highs = [f.flops.max() for _, f in approaches if f is not None] or [1e13]
  grid = np.geomspace(min(lows) / 3, max(highs) * 3, 100)
  for ax, which in zip(axes, ('n', 'd')):
    for (name, fit), marker in zip(approaches, ('o', 's')):
      if fit is not None:
        law = fit.n_law if which == 'n' else fit.d_law
        ax.plot(fit.flops, fit.n_opt if which == 'n' else fit.d_opt, marker, ms=4,
                label=f'{name}: exponent {law.exponent:.2f}')
        ax.plot(grid, law(grid), '-', lw=1, color=ax.lines[-1].get_color())
    if chinchilla is not None:
      n_opt, d_opt = scaling.compute_optimal(chinchilla, grid)
      exponent = chinchilla.a if which == 'n' else chinchilla.b
      ax.plot(grid, n_opt if which == 'n' else d_opt, 'k--', lw=1, label=f'approach3: exponent {exponent:.2f}')
    ax.set(xscale='log', yscale='log', xlabel='C (FLOPs)',
           ylabel=f'N_opt ({params} parameters)' if which == 'n' else 'D_opt (tokens)')
    ax.legend(fontsize=7)
  fig.suptitle('Compute-optimal frontier', fontsize=10)
  return _save(fig, directory, 'frontier.png')


def loss_vs_params(directory, rows, fits) -> str | None:
  law, law_e = fits.get('L(N)'), fits.get('L(N)+E')
  if law is None:
    return None
  fig, ax = plt.subplots(figsize=SIZE)
  n = np.array([float(r['params_non_embedding']) for r in rows])
  loss = np.array([float(r['final_eval_loss']) for r in rows])
  ax.plot(n, loss, 'o', color='lightgray', ms=4, label='every run')
  sizes = np.unique(n)
  ax.plot(sizes, [loss[n == s].min() for s in sizes], 'o', color='black', ms=4, label='best run per size')
  grid = np.geomspace(sizes.min(), sizes.max(), 100)
  ax.plot(grid, law(grid), '-', lw=1, label=f'(N_c/N)^a: a={-law.exponent:.3f}, R2={law.r2:.3f}')
  if law_e is not None:
    ax.plot(grid, law_e(grid), '--', lw=1, label=f'E + (N_c/N)^a: E={law_e.irreducible:.2f}, a={-law_e.exponent:.2f}, '
                                                 f'R2={law_e.r2:.3f}')
  ax.set(xscale='log', yscale='log', xlabel='N (non-embedding parameters)', ylabel='validation loss',
         title='L(N)')
  ax.legend(fontsize=7)
  return _save(fig, directory, 'loss_vs_params.png')


def draw_all(directory: str, rows, curve_rows, fits, params: str) -> list[str]:
  os.makedirs(directory, exist_ok=True)
  paths = [loss_vs_compute(directory, rows, curve_rows, fits, params), isoflop(directory, rows, fits, params),
           frontier(directory, fits, params), loss_vs_params(directory, rows, fits)]
  return [p for p in paths if p]
