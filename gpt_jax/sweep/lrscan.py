"""The learning-rate pre-scan of a sweep with a Recipe: a few short runs per shape over Recipe.lr_grid, the best
rate of each shape, and the log-log rule LR(N) fitted through them, written to the file the sweep reads
(Recipe.learning_rate), so a sweep on new hardware gets its learning rates the same way.

    python -m gpt_jax.sweep.lrscan --sweep=experiments/scaling_laws/sweep_cpu.py [--parallel=1] [--overwrite]

Each shape is scanned at Recipe.scan_fraction of the smallest budget it has in the sweep, with the sweep's own
batch, beta2 and warmup rule, one seed; the runs go to <sweep root>/lrscan and are skipped or resumed when the
command is run again (--list prints them). A shape's best rate is the vertex of the parabola in ln LR through its
best grid point and the two neighbours, or the grid's end when the best point is an end (said in the file); the
rule is kept inside the grid.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.sweep import launch, spec
from gpt_jax.sweep.recipe import LRRule, best_rate

flags.DEFINE_string('sweep', None, 'the sweep file whose Sweep has a recipe=Recipe(learning_rate=<json file>).')
flags.DEFINE_integer('parallel', 1, 'scan runs at a time on this host.')
cli.define_overwrite_flag()
flags.DEFINE_bool('list', False, 'print the scan runs and their commands, run nothing.')
FLAGS = flags.FLAGS


def scan_runs(sweep: spec.Sweep) -> list[spec.Run]:
  """Every shape of the sweep x every rate of the grid, at scan_fraction of the shape's smallest budget."""
  recipe = dataclasses.replace(sweep.recipe, learning_rate=None)
  plain = dataclasses.replace(sweep, recipe=recipe, learning_rates=(), seeds=(0,))
  smallest = {}
  for run in spec.expand(plain):
    budget = run.flops_budget if sweep.flops else run.tokens
    smallest[run.shape] = min(budget, smallest.get(run.shape, budget))
  scan = dataclasses.replace(plain, name=f'{sweep.name}-lrscan', root=os.path.join(sweep.root, 'lrscan'),
                             keep=None, evals_per_run=0)
  return [spec.make_run(scan, shape, recipe.scan_fraction * budget, rate, 0)
          for shape, budget in smallest.items() for rate in recipe.lr_grid]


def fit(runs: list[spec.Run]) -> dict:
  """The rule file's content: per shape its losses over the grid and best rate, and the fitted rule."""
  shapes = []
  for shape in dict.fromkeys(r.shape for r in runs):
    mine = [r for r in runs if r.shape == shape]
    losses = {r.learning_rate: launch.run_state(r).eval_loss for r in mine}
    missing = [r.name for r in mine if losses[r.learning_rate] is None]
    if missing:
      raise ConfigError(f'scan runs {", ".join(missing)} have no final validation loss: rerun the scan.')
    rate, inside = best_rate(losses)
    shapes.append(dict(shape=shape.name, params_flops=mine[0].params_flops, tokens=mine[0].tokens,
                       losses={f'{k:g}': v for k, v in sorted(losses.items())}, best_lr=rate, inside_grid=inside))
  grid = sorted({r.learning_rate for r in runs})
  rule = LRRule.fit([s['params_flops'] for s in shapes], [s['best_lr'] for s in shapes], grid)
  return dict(rule=dict(intercept=rule.intercept, slope=rule.slope, low=rule.low, high=rule.high,
                        formula='LR = exp(intercept + slope ln N), N = flops_per_token / 6, kept in [low, high]'),
              shapes=shapes, runs=[r.name for r in runs])


def main(argv):
  del argv
  if not FLAGS.sweep:
    raise ConfigError('--sweep is required: the sweep file, e.g. --sweep=experiments/scaling_laws/sweep_cpu.py.')
  sweep = spec.load_sweep(FLAGS.sweep)
  if sweep.recipe is None or not isinstance(sweep.recipe.learning_rate, str):
    raise ConfigError(f'sweep {sweep.name!r} has no recipe=Recipe(learning_rate=<json file>) for the rule: add one.')
  output = sweep.recipe.learning_rate
  if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
    raise ConfigError(f'the rule file {output!r} is in a directory that does not exist: create it.')
  if os.path.exists(output) and not FLAGS.overwrite and not FLAGS.list:
    raise ConfigError(f'the rule file {output!r} exists: pass --overwrite to scan again and replace it.')
  if FLAGS.parallel < 1:
    raise ConfigError(f'--parallel={FLAGS.parallel} must be at least 1.')
  runs = scan_runs(sweep)
  if FLAGS.list:
    for run in runs:
      print(f'{run.name}: {run.tokens} tokens, lr {run.learning_rate:g}\n  {" ".join(run.command())}')
    return 0
  code = launch.run_local(runs, FLAGS.parallel)
  if code:
    return code
  record = fit(runs)
  with open(output, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=1)
  for s in record['shapes']:
    print(f'{s["shape"]:<14} N {s["params_flops"]:>9.0f}  ' + '  '.join(f'{k}: {v:.4f}' for k, v in s['losses'].items())
          + f'  best {s["best_lr"]:.3g}' + ('' if s['inside_grid'] else ' (grid end)'))
  rule = LRRule.load(output)
  print(f'wrote {output}: LR(N) = exp({rule.intercept:.3f} + {rule.slope:.3f} ln N), kept in [{rule.low:g}, '
        f'{rule.high:g}]')
  return 0


if __name__ == '__main__':
  cli.run_main(main)
