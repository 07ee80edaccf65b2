"""Predict, then verify: the compute-optimal model, tokens and loss at a budget beyond the sweep, written before the
run exists; the sweep then makes that run (sweep_cpu.py reads the prediction) and --measure adds its loss.

    python -m experiments.scaling_laws.predict --table=experiments/scaling_laws/results/runs.csv \
        --output=experiments/scaling_laws/results/prediction.json [--factor=3]
    (commit prediction.json; python -m gpt_jax.sweep run --sweep=experiments/scaling_laws/sweep_cpu.py; collect)
    python -m experiments.scaling_laws.predict --table=experiments/scaling_laws/results/runs.csv \
        --output=experiments/scaling_laws/results/prediction.json --measure

The fit uses the finished runs of the budgets that hold an IsoFLOP profile (analyze.py's selection), N the
FLOP-equivalent size flops_per_token / 6:
- N_opt(C) from Approach 2 (a parabola in ln N per budget, its minima fitted as a power law of C);
- the loss from L(C) = E + A C^-alpha through the IsoFLOP minima (the form of the compute-optimal loss of
  L = E + A / N^alpha + B / D^beta, and GPT-4's final-loss law); the interval is the range of the same prediction
  with each budget left out in turn, beside a pure power law's prediction;
- the run: the width rule's shape nearest N_opt(C) in log, trained on C / flops_per_token tokens with the sweep's
  recipe (its learning rate from the sweep's rule).
"""

from __future__ import annotations

import datetime
import json
import os

import numpy as np
from absl import flags

from gpt_jax import cli
from gpt_jax import scaling
from gpt_jax.config import ConfigError
from gpt_jax.sweep import spec
from experiments.scaling_laws import analyze, sweep_cpu

flags.DEFINE_float('factor', 3.0, 'the prediction\'s budget: this multiple of the largest fitted budget.')
flags.DEFINE_bool('measure', False, 'add the verification run\'s measured loss (from --table) to --output.')
cli.define_overwrite_flag()
FLAGS = flags.FLAGS


def fit(rows: list[dict]) -> tuple[scaling.FrontierFit, scaling.PowerLaw]:
  n, loss, budget = analyze.columns(rows, 'params_flops', 'final_eval_loss', 'flops_budget')
  frontier = scaling.approach2(n, loss, budget, params='flops')
  return frontier, loss_law(frontier.flops, frontier.loss)


def loss_law(flops, losses) -> scaling.PowerLaw:
  return scaling.fit_power_law(flops, losses, irreducible=True, variable='C', params='flops')


def held_out_range(frontier: scaling.FrontierFit, budget: float) -> list[float]:
  """The predicted loss at `budget` with each IsoFLOP minimum left out in turn (needs 4 minima)."""
  if frontier.flops.size < 4:
    return []
  values = []
  for i in range(frontier.flops.size):
    keep = np.arange(frontier.flops.size) != i
    values.append(float(loss_law(frontier.flops[keep], frontier.loss[keep])(budget)))
  return [min(values), max(values)]


def predict(rows: list[dict]) -> dict:
  frontier, law = fit(rows)
  if frontier.flops.size < 3:
    raise ConfigError(f'only {frontier.flops.size} budget(s) have an interior IsoFLOP minimum: a prediction needs 3.')
  budget = float(f'{FLAGS.factor * max(float(r["flops_budget"]) for r in rows):.3g}')
  sweep = sweep_cpu.get_sweep()
  n_opt = float(frontier.n_law(budget))
  run_of = lambda shape: spec.make_run(sweep, shape, budget, None, 0)  # noqa: E731
  shape = sweep_cpu.RULE.nearest(n_opt, lambda s: run_of(s).params_flops)
  run = run_of(shape)
  return dict(
      run=run.name, budget_flops=budget, predicted_n=n_opt, predicted_tokens=budget / (6 * n_opt),
      predicted_loss=float(law(budget)), predicted_loss_leave_one_budget_out=held_out_range(frontier, budget),
      predicted_loss_pure_power_law=float(scaling.fit_power_law(frontier.flops, frontier.loss, variable='C')(budget)),
      params='flops (flops_per_token / 6)', d_model=shape.d_model, shape=shape.name, run_params_flops=run.params_flops,
      run_tokens=run.tokens, run_learning_rate=run.learning_rate, n_opt_law=frontier.n_law.to_json('N_opt'),
      loss_law=law.to_json(), minima=frontier.to_json()['minima'], fit_runs=[r['run'] for r in rows],
      written=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), measured_loss=None)


def measure(prediction: dict, table: list[dict]) -> dict:
  row = next((r for r in table if r['run'] == prediction['run']), None)
  if row is None or row.get('state') != 'finished':
    raise ConfigError(f'run {prediction["run"]} is not finished in --table={FLAGS.table}: run the sweep (python -m '
                      f'gpt_jax.sweep run --sweep=experiments/scaling_laws/sweep_cpu.py), collect, then --measure.')
  measured = float(row['final_eval_loss'])
  return prediction | dict(measured_loss=measured, error=measured - prediction['predicted_loss'],
                           measured_wall_seconds=float(row['wall_seconds'] or 'nan'))


def main(argv):
  del argv
  if not FLAGS.output:
    raise ConfigError('--output is required, e.g. --output=experiments/scaling_laws/results/prediction.json.')
  if not os.path.isdir(os.path.dirname(os.path.abspath(FLAGS.output))):
    raise ConfigError(f'--output={FLAGS.output}: its directory does not exist; create it or pick another path.')
  if not FLAGS.factor > 1:
    raise ConfigError(f'--factor={FLAGS.factor} must be greater than 1 (a budget beyond the sweep).')
  table = analyze.read_csv(FLAGS.table, 'table')
  if FLAGS.measure:
    if not os.path.isfile(FLAGS.output):
      raise ConfigError(f'--measure needs the prediction {FLAGS.output}: write it first (without --measure).')
    with open(FLAGS.output, encoding='utf-8') as f:
      result = measure(json.load(f), table)
  else:
    if os.path.exists(FLAGS.output) and not FLAGS.overwrite:
      raise ConfigError(f'--output={FLAGS.output} exists: a prediction is written once, before its run; pass '
                        f'--overwrite to replace it.')
    rows, _ = analyze.profile_rows(table)
    if not rows:
      raise ConfigError(f'--table={FLAGS.table} has no finished IsoFLOP profile to fit.')
    result = predict(rows)
  with open(FLAGS.output, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {FLAGS.output}: run {result["run"]} at C = {result["budget_flops"]:.3g}, predicted loss '
        f'{result["predicted_loss"]:.4f}' + ('' if result['measured_loss'] is None else
                                              f', measured {result["measured_loss"]:.4f}'))
  return 0


if __name__ == '__main__':
  cli.run_main(main)
