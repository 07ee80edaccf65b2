"""Fits a collected scaling sweep: Chinchilla's Approaches 1-3 and Kaplan's L(N), L(C) and L(N, D); writes the
results as JSON and, with --plots=<dir>, four PNGs (loss vs compute with the envelope, IsoFLOP parabolas, the
N_opt(C) / D_opt(C) frontier, L(N) with its power law).

    python -m experiments.scaling_laws.analyze --table=experiments/scaling_laws/results/runs.csv \
        --curves=experiments/scaling_laws/results/curves.csv --output=experiments/scaling_laws/results/results.json \
        --plots=experiments/scaling_laws/plots

The table and curves come from `python -m gpt_jax.sweep collect`; only finished runs are fitted. A fit the runs
cannot support (too few runs, no FLOP budgets, no interior IsoFLOP minimum) is listed under "skipped" with the
reason. Plotting needs matplotlib (requirements-experiments.txt); --plots= (empty) skips it.
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
flags.DEFINE_string('curves', None, 'curves CSV written by collect --curves (Approach 1 and L(C)); optional.')
flags.DEFINE_string('output', None, 'results JSON to write.')
flags.DEFINE_string('plots', None, 'directory for the PNGs; empty: no plots.')
flags.DEFINE_enum('params', 'total', scaling.PARAM_COUNTS, 'the parameter count of Approaches 1-3 (Chinchilla '
                  'counts total parameters); Approach 3 is also fitted with the other count for comparison.')
flags.DEFINE_integer('bootstrap', 100, 'bootstrap replicates of each approach (0: none).')
flags.DEFINE_integer('starts', None, 'L-BFGS starts of the Approach 3 fits: the grid points with the lowest '
                     'objective (default: all 4,500 of Hoffmann et al.\'s grid).')
flags.DEFINE_integer('bootstrap_starts', 64, 'L-BFGS starts of each Approach 3 bootstrap replicate (the grid points '
                     'with the lowest objective on its resample, plus the full fit\'s optimum).')
flags.DEFINE_integer('seed', 0, 'bootstrap seed.')
FLAGS = flags.FLAGS
COMPUTE_POINTS = (1e12, 1e15, 1e18, 5.76e23)  # 5.76e23: Chinchilla's own budget


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


def attempt(results: dict, name: str, fit):
  """Runs fit(); a ValueError (the runs cannot support this fit) is recorded under results['skipped']."""
  try:
    return fit()
  except ValueError as error:
    results['skipped'][name] = str(error)
    return None


def fit_all(rows: list[dict], curve_rows: list[dict]) -> tuple[dict, dict]:
  """(results JSON, the fit objects the plots draw)."""
  n_total, n_non_emb, tokens, loss, budget = columns(rows, 'params_total', 'params_non_embedding', 'tokens',
                                                     'final_eval_loss', 'flops_budget')
  counts = {'total': n_total, 'non_embedding': n_non_emb}
  n = counts[FLAGS.params]
  results = dict(runs=len(rows), params=FLAGS.params, skipped={})
  fits = {}
  fits['L(N)'] = attempt(results, 'L(N)', lambda: law_of_size(n_non_emb, loss, irreducible=False))
  fits['L(N)+E'] = attempt(results, 'L(N)+E', lambda: law_of_size(n_non_emb, loss, irreducible=True))
  fits['kaplan'] = attempt(results, 'L(N,D)', lambda: scaling.fit_kaplan(n_non_emb, tokens, loss))
  if curve_rows:
    c_n, c_tokens, c_loss = columns(curve_rows, f'params_{FLAGS.params}', 'tokens', 'eval_loss')
    runs = [r['run'] for r in curve_rows]
    fits['approach1'] = attempt(results, 'approach1', lambda: scaling.approach1(
        c_n, c_tokens, c_loss, runs=runs, n_bins=12, params=FLAGS.params, bootstrap=FLAGS.bootstrap,
        seed=FLAGS.seed))
    if fits['approach1'] is not None:
      env = fits['approach1']
      fits['L(C)'] = attempt(results, 'L(C)', lambda: scaling.fit_power_law(env.flops, env.loss, irreducible=True,
                                                                              variable='C', params=FLAGS.params))
  else:
    results['skipped']['approach1'] = 'no --curves: the envelope needs every run\'s loss curve.'
  if np.all(np.isnan(budget)):
    results['skipped']['approach2'] = 'no IsoFLOP profiles: the runs have no FLOP budgets (a token-budget sweep).'
  else:
    fits['approach2'] = attempt(results, 'approach2', lambda: scaling.approach2(
        n, loss, budget, params=FLAGS.params, bootstrap=FLAGS.bootstrap, seed=FLAGS.seed))
  for count in (FLAGS.params, *(c for c in scaling.PARAM_COUNTS if c != FLAGS.params)):
    fits[f'approach3/{count}'] = attempt(results, f'approach3/{count}', lambda: scaling.fit_chinchilla(
        counts[count], tokens, loss, params=count, seed=FLAGS.seed, starts=FLAGS.starts,
        bootstrap_starts=FLAGS.bootstrap_starts,
        bootstrap=FLAGS.bootstrap if count == FLAGS.params else 0))
  for name, fit in fits.items():
    if fit is not None:
      results[name] = fit.to_json()
      if name.startswith('approach3'):
        results[name]['compute_optimal'] = frontier_table(fit)
  return results, fits


def law_of_size(n_non_emb, loss, irreducible: bool) -> scaling.PowerLaw:
  """Kaplan's L(N): each model size's lowest loss over its runs (its largest budget), non-embedding N."""
  sizes = np.unique(n_non_emb)
  best = np.array([loss[n_non_emb == s].min() for s in sizes])
  return scaling.fit_power_law(sizes, best, irreducible=irreducible, variable='N', params='non_embedding')


def frontier_table(fit: scaling.ChinchillaFit) -> list[dict]:
  out = []
  for c in COMPUTE_POINTS:
    n_opt, d_opt = scaling.compute_optimal(fit, c)
    out.append(dict(flops=c, n_opt=n_opt, d_opt=d_opt, tokens_per_param=d_opt / n_opt))
  return out


def main(argv):
  del argv
  if not FLAGS.output:
    raise ConfigError('--output is required: the results JSON, e.g. --output=experiments/scaling_laws/results/'
                      'results.json.')
  rows = [r for r in read_csv(FLAGS.table, 'table') if r.get('state') == 'finished']
  curve_rows = read_csv(FLAGS.curves, 'curves') if FLAGS.curves else []
  finished = {r['run'] for r in rows}
  curve_rows = [r for r in curve_rows if r['run'] in finished]
  start = time.time()
  results, fits = fit_all(rows, curve_rows)
  results['fit_seconds'] = round(time.time() - start, 1)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {FLAGS.output}: {len(rows)} runs, {len(results["skipped"])} fits skipped '
        f'({results["fit_seconds"]} s)')
  if FLAGS.plots:
    from experiments.scaling_laws import plots  # matplotlib only when plotting
    for path in plots.draw_all(FLAGS.plots, rows, curve_rows, fits, FLAGS.params):
      print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  cli.run_main(main)
