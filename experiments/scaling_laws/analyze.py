"""Fits a collected scaling sweep: Chinchilla's Approaches 1-3, the compute envelope L(C) and Kaplan's L(N) and
L(N, D); writes the results as JSON and, with --plots=<dir>, four PNGs (final loss vs compute with the envelope,
IsoFLOP parabolas, the N_opt(C) / D_opt(C) frontier, L(N) with its power law).

    python -m experiments.scaling_laws.analyze --table=experiments/scaling_laws/results/runs.csv \
        --output=experiments/scaling_laws/results/results.json --plots=experiments/scaling_laws/plots

The table comes from `python -m gpt_jax.sweep collect`. Only finished runs of budgets that hold an IsoFLOP profile
(at least 3 sizes) are fitted; a budget with fewer (the verification run of predict.py) is left out and listed.
- N is the FLOP-equivalent size flops_per_token / 6 by default (--params), so C = 6 N D is the runs' real model
  FLOPs; Approach 3 is also fitted with the total and non-embedding counts (the counting effect at small scale).
- Approach 1 takes the final point of each run (a run part-way through its cosine is not the compute-optimal run
  at that compute) and only points on the lower envelope.
- Approach 2: a parabola in ln N per budget, runs of every seed together.
- L(C): E + A C^-alpha through the envelope, and a pure power law through the IsoFLOP minima.
- Kaplan's L(N): each size's best run among runs with at least --min_tokens_per_param tokens per non-embedding
  parameter (near convergence), non-embedding N.
- Approach 3's compute-optimal N and D are extrapolated only when its irreducible loss E is identified (the
  bootstrap interval of E excludes 0 and lies below the lowest loss measured).
- Every loss law follows one convention, L = E + A x^-alpha with alpha > 0 when the loss falls (gpt_jax.scaling).

A fit the runs cannot support is listed under "skipped" with the reason. Plotting needs matplotlib
(requirements-experiments.txt); --plots= (empty) skips it.
"""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
from absl import flags

from gpt_jax import cli
from gpt_jax import scaling
from gpt_jax.config import ConfigError

flags.DEFINE_string('table', None, 'runs CSV written by python -m gpt_jax.sweep collect --output.')
flags.DEFINE_string('output', None, 'results JSON to write.')
flags.DEFINE_string('plots', None, 'directory for the PNGs; empty: no plots.')
flags.DEFINE_enum('params', 'flops', scaling.PARAM_COUNTS, 'the parameter count of Approaches 1-3: flops '
                  '(flops_per_token / 6, C = 6 N D exactly), total (Chinchilla\'s) or non_embedding (Kaplan\'s); '
                  'Approach 3 is also fitted with the others.')
flags.DEFINE_integer('bootstrap', 100, 'bootstrap replicates of Approaches 1 and 2 (0: none).')
flags.DEFINE_integer('bootstrap3', None, 'bootstrap replicates of Approach 3, each an L-BFGS fit (default: '
                     '--bootstrap).')
flags.DEFINE_integer('starts', None, 'L-BFGS starts of the Approach 3 fits: the grid points with the lowest '
                     'objective (default: all 4,500 of Hoffmann et al.\'s grid).')
flags.DEFINE_integer('bootstrap_starts', 64, 'L-BFGS starts of each Approach 3 bootstrap replicate (the grid points '
                     'with the lowest objective on its resample, plus the full fit\'s optimum).')
flags.DEFINE_float('min_tokens_per_param', 100.0, 'Kaplan\'s L(N) takes runs with at least this many tokens per '
                   'non-embedding parameter.')
flags.DEFINE_integer('seed', 0, 'bootstrap seed.')
cli.define_overwrite_flag()
FLAGS = flags.FLAGS
COLUMN = {'total': 'params_total', 'non_embedding': 'params_non_embedding', 'flops': 'params_flops'}
MIN_SIZES = 3  # an IsoFLOP profile


def read_csv(path: str, flag: str) -> list[dict]:
  if not path or not os.path.isfile(path):
    raise ConfigError(f'--{flag}={path!r} is not a file: pass the CSV written by python -m gpt_jax.sweep collect.')
  with open(path, encoding='utf-8') as f:
    return list(csv.DictReader(f))


def columns(rows: list[dict], *names: str) -> list[np.ndarray]:
  try:
    return [np.array([float(r[n]) if r[n] != '' else np.nan for r in rows]) for n in names]
  except KeyError as missing:
    raise ConfigError(f'the table has no column {missing.args[0]!r}: write it with python -m gpt_jax.sweep '
                      f'collect.') from None


def profile_rows(rows: list[dict]) -> tuple[list[dict], list[str]]:
  """(finished runs of budgets with at least MIN_SIZES sizes, names of the finished runs left out)."""
  finished = [r for r in rows if r.get('state') == 'finished' and r.get('flops_budget')]
  sizes: dict[str, set] = {}
  for r in finished:
    sizes.setdefault(r['flops_budget'], set()).add(r['params_total'])
  kept = [r for r in finished if len(sizes[r['flops_budget']]) >= MIN_SIZES]
  return kept, [r['run'] for r in finished if r not in kept]


def attempt(results: dict, name: str, fit):
  """Runs fit(); a ValueError (the runs cannot support this fit) is recorded under results['skipped']."""
  try:
    return fit()
  except ValueError as error:
    results['skipped'][name] = str(error)
    return None


def fit_all(rows: list[dict]) -> tuple[dict, dict]:
  """(results JSON, the fit objects the plots draw)."""
  counts = dict(zip(COLUMN, columns(rows, *COLUMN.values())))
  tokens, loss, budget = columns(rows, 'tokens', 'final_eval_loss', 'flops_budget')
  n = counts[FLAGS.params]
  results = dict(runs=len(rows), params=FLAGS.params, skipped={})
  fits = {}
  fits['L(N) points'] = attempt(results, 'L(N)', lambda: size_points(counts['non_embedding'], tokens, loss))
  if fits['L(N) points'] is not None:
    fits['L(N)'] = scaling.fit_power_law(*fits['L(N) points'], variable='N', params='non_embedding')
  fits['kaplan'] = attempt(results, 'L(N,D)', lambda: scaling.fit_kaplan(counts['non_embedding'], tokens, loss))
  fits['approach1'] = attempt(results, 'approach1', lambda: scaling.approach1(
      n, tokens, loss, runs=[r['run'] for r in rows], n_bins=2 * np.unique(budget).size, params=FLAGS.params,
      bootstrap=FLAGS.bootstrap, seed=FLAGS.seed))
  if fits['approach1'] is not None:
    env = fits['approach1']
    fits['L(C)'] = attempt(results, 'L(C)', lambda: scaling.fit_power_law(env.flops, env.loss, irreducible=True,
                                                                            variable='C', params=FLAGS.params))
  fits['approach2'] = attempt(results, 'approach2', lambda: scaling.approach2(
      n, loss, budget, params=FLAGS.params, bootstrap=FLAGS.bootstrap, seed=FLAGS.seed))
  if fits['approach2'] is not None:
    minima = fits['approach2']
    fits['L(C) minima'] = attempt(results, 'L(C) minima', lambda: scaling.fit_power_law(
        minima.flops, minima.loss, variable='C', params=FLAGS.params))
  for count in (FLAGS.params, *(c for c in scaling.PARAM_COUNTS if c != FLAGS.params)):
    fits[f'approach3/{count}'] = attempt(results, f'approach3/{count}', lambda: scaling.fit_chinchilla(
        counts[count], tokens, loss, params=count, seed=FLAGS.seed, starts=FLAGS.starts,
        bootstrap_starts=FLAGS.bootstrap_starts, bootstrap=(FLAGS.bootstrap if FLAGS.bootstrap3 is None else
                                                             FLAGS.bootstrap3) if count == FLAGS.params else 0))
  for name, fit in fits.items():
    if fit is not None and name != 'L(N) points':
      results[name] = fit.to_json()
  chinchilla = fits[f'approach3/{FLAGS.params}']
  if chinchilla is not None:
    reason = unidentified(chinchilla, loss.min())
    if reason:
      results['skipped']['approach3 extrapolation'] = reason
    else:
      results[f'approach3/{FLAGS.params}']['compute_optimal'] = frontier_table(chinchilla, budget.max())
  results['minima'] = minima_table(rows, fits['approach2'])
  results['seeds'] = seed_differences(rows)
  return results, fits


def size_points(n_non_emb, tokens, loss) -> tuple[np.ndarray, np.ndarray]:
  """The points of Kaplan's L(N): (sizes, the best loss of each) among runs with enough tokens per non-embedding
  parameter."""
  trained = tokens / n_non_emb >= FLAGS.min_tokens_per_param
  sizes = np.unique(n_non_emb[trained])
  if sizes.size < 3:
    raise ValueError(f'{sizes.size} model size(s) have runs with at least {FLAGS.min_tokens_per_param:g} tokens per '
                     f'non-embedding parameter; L(N) needs 3.')
  return sizes, np.array([loss[trained & (n_non_emb == s)].min() for s in sizes])


def unidentified(fit: scaling.ChinchillaFit, lowest_loss: float) -> str | None:
  """Why Approach 3's E does not support extrapolation, or None when it does."""
  interval = ((fit.bootstrap or {}).get('intervals') or {}).get('E')
  if interval is None:
    return 'no bootstrap interval of E (--bootstrap=0): E cannot be shown to be identified.'
  low, high = interval
  if low <= 1e-3 * lowest_loss or high >= lowest_loss:
    return (f'E = {fit.E:.3g} with 95% interval [{low:.3g}, {high:.3g}] is not identified (the interval reaches 0 '
            f'or the lowest loss measured, {lowest_loss:.3f}): no compute-optimal extrapolation.')
  return None


def frontier_table(fit: scaling.ChinchillaFit, largest: float) -> list[dict]:
  out = []
  for c in (largest, 10 * largest, 100 * largest):
    n_opt, d_opt = scaling.compute_optimal(fit, c)
    out.append(dict(flops=c, n_opt=float(n_opt), d_opt=float(d_opt), tokens_per_param=float(d_opt / n_opt)))
  return out


def minima_table(rows: list[dict], fit) -> list[dict]:
  """Per budget: the best run, and the parabola's minimum with its tokens per parameter."""
  vertex = {float(c): (n, d) for c, n, d in zip(fit.flops, fit.n_opt, fit.d_opt)} if fit is not None else {}
  out = []
  for budget in sorted({float(r['flops_budget']) for r in rows}):
    at = [r for r in rows if float(r['flops_budget']) == budget]
    best = min(at, key=lambda r: float(r['final_eval_loss']))
    sizes = sorted({float(r[COLUMN[FLAGS.params]]) for r in at})
    entry = dict(flops=budget, best_run=best['run'], best_loss=float(best['final_eval_loss']),
                 best_at_an_end=float(best[COLUMN[FLAGS.params]]) in (sizes[0], sizes[-1]))
    if budget in vertex:
      entry.update(n_opt=float(vertex[budget][0]), tokens_per_param=float(vertex[budget][1] / vertex[budget][0]))
    out.append(entry)
  return out


def seed_differences(rows: list[dict]) -> list[dict]:
  """Runs repeated with another seed: the loss of each seed and the difference."""
  by_plan: dict[tuple, dict] = {}
  for r in rows:
    by_plan.setdefault((r['flops_budget'], r['params_total']), {})[int(r['seed'])] = r
  out = []
  for seeds in by_plan.values():
    if len(seeds) > 1:
      losses = {s: float(r['final_eval_loss']) for s, r in sorted(seeds.items())}
      out.append(dict(run=seeds[min(seeds)]['run'], losses=losses, spread=max(losses.values()) - min(losses.values())))
  return out


def main(argv):
  del argv
  if not FLAGS.output:
    raise ConfigError('--output is required: the results JSON, e.g. --output=experiments/scaling_laws/results/'
                      'results.json.')
  cli.check_output('output', FLAGS.output)
  if FLAGS.plots:
    from experiments.scaling_laws import plots  # matplotlib only when plotting
    cli.check_outputs_in('plots', FLAGS.plots, plots.FILES)
  rows, left_out = profile_rows(read_csv(FLAGS.table, 'table'))
  if not rows:
    raise ConfigError(f'--table={FLAGS.table} has no finished run of a FLOP budget with {MIN_SIZES} sizes or more.')
  start = time.time()
  results, fits = fit_all(rows)
  results['left_out'] = left_out
  results['fit_seconds'] = round(time.time() - start, 1)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {FLAGS.output}: {len(rows)} runs, {len(results["skipped"])} fits skipped '
        f'({results["fit_seconds"]} s)')
  if FLAGS.plots:
    for path in plots.draw_all(FLAGS.plots, rows, fits, FLAGS.params):
      print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  cli.run_main(main)
