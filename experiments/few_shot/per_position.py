"""In-context learning from natural data, per context position (Kaplan et al. 2020 Sec. 3.3, Olsson et al. 2022).

For models of the scaling sweep: the validation loss at every context position over the whole validation split,
a power law in position fitted to it, L(t) = L_inf + A t^-p over t >= FIT_FROM (t = tokens seen, position + 1), and
the ICL score: the mean loss at positions 100-127 minus the mean at positions 10-20 (0-based, inclusive). A model
that uses its context better has a more negative score. One CSV row per model, and a plot of loss vs position and of
the score vs size:

    python -m experiments.few_shot.per_position --table=experiments/scaling_laws/results/runs.csv \
        --runs_root=experiments/scaling_laws/runs/cpu --output=experiments/few_shot/results/per_position.csv \
        --plots=experiments/few_shot/plots --overwrite

Every finished run of the table is measured; per model shape one is chosen (column `chosen`) for the comparison
across sizes: the one trained on the most tokens, provided it saw at least --min_tokens_per_param tokens per
non-embedding parameter, so that size is not confounded with under-training. Runs on 1 or more processes
(jax.distributed, as training does): the rows of the validation split are spread over every process's devices.
"""

from __future__ import annotations

import csv
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from scipy import optimize, stats

from gpt_jax import cli
from gpt_jax import losses
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import pipeline


def define_flags() -> None:
  """The command's flags, defined when it runs (tests import this module beside others that define --output)."""
  flags.DEFINE_string('table', 'experiments/scaling_laws/results/runs.csv',
                      'the scaling sweep\'s runs CSV (python -m gpt_jax.sweep collect).')
  flags.DEFINE_string('runs_root', 'experiments/scaling_laws/runs/cpu', 'the directory holding the sweep\'s workdirs.')
  flags.DEFINE_string('output', 'experiments/few_shot/results/per_position.csv', 'the CSV to write.')
  flags.DEFINE_string('plots', 'experiments/few_shot/plots', 'directory for per_position.png; empty: no plot.')
  flags.DEFINE_float('min_tokens_per_param', 20.0, 'a model shape\'s chosen run must have seen at least this many '
                     'training tokens per non-embedding parameter; shapes with none are measured but not chosen.')
  flags.DEFINE_integer('batch_rows', 64, 'validation sequences per forward pass (rounded up to the batch shards).')
  cli.define_overwrite_flag()


FLAGS = flags.FLAGS

LATE, EARLY = (100, 127), (10, 20)  # 0-based positions, inclusive, of a 128-token context
FIT_FROM = 2  # the power law is fitted over t >= FIT_FROM tokens seen
PLOT = 'per_position.png'


def whole_split(config, batch_rows: int, quantum: int):
  """This process's rows of the validation split in batches of batch_rows global rows (a multiple of quantum),
  in eval order, as many rows as the split holds (each exactly once for a single data source; a mixture draws them
  by its weights, as the ordinary eval does); 'weights' [rows] is 0 on the rows that pad the last batch."""
  stream = pipeline.TrainStream(config, 'validation', seed=pipeline.EVAL_SEED)
  available = sum(len(part) for part in stream.sequences)
  batch_rows = -(-batch_rows // quantum) * quantum
  for start in range(0, available, batch_rows):
    rows = min(batch_rows, -(-(available - start) // quantum) * quantum)
    batch = stream.next_batch(rows)
    local = len(batch['inputs'])
    first = start + jax.process_index() * local
    batch['weights'] = (np.arange(first, first + local) < available).astype(np.float32)
    yield batch


def make_position_step(module, mesh):
  """jit(params, batch) -> (summed loss per position [context], summed weight): every row's next-token loss at
  each position, weighted by batch['weights'], summed over the batch rows (across processes)."""
  def step(params, batch):
    logits = module.apply({'params': params}, batch['inputs'])
    per_token = -losses.token_logprobs(logits, batch['targets'])
    return jnp.sum(per_token * batch['weights'][:, None], axis=0), jnp.sum(batch['weights'])
  return jax.jit(step, out_shardings=gs.replicated(mesh))


def position_losses(module, params, mesh, batches) -> np.ndarray:
  """Mean validation loss at each context position [context] over batches (as whole_split yields them)."""
  step = make_position_step(module, mesh)
  totals, weight = 0.0, 0.0
  with gs.activation_context(mesh):
    for local in batches:
      batch = pipeline.make_global_batch(local, gs.batch_sharding(mesh))
      sums, count = gs.to_host(step(params, batch))
      totals, weight = totals + sums.astype(np.float64), weight + float(count)
  return totals / weight


def icl_score(curve) -> float:
  """Mean loss at positions LATE minus mean loss at positions EARLY (nats per token)."""
  curve = np.asarray(curve)
  if len(curve) <= LATE[1]:
    raise ConfigError(f'the ICL score needs a context of at least {LATE[1] + 1} tokens; this model has {len(curve)}.')
  return float(curve[LATE[0]:LATE[1] + 1].mean() - curve[EARLY[0]:EARLY[1] + 1].mean())


def fit_power_law(curve) -> dict:
  """L(t) = L_inf + A t^-p fitted by least squares over t = position + 1 >= FIT_FROM, with its R^2."""
  t = np.arange(1, len(curve) + 1, dtype=np.float64)[FIT_FROM - 1:]
  y = np.asarray(curve, np.float64)[FIT_FROM - 1:]
  law = lambda t, l_inf, a, p: l_inf + a * t ** -p  # noqa: E731
  (l_inf, a, p), _ = optimize.curve_fit(law, t, y, p0=(y[-1], y[0] - y[-1], 0.5), maxfev=20000)
  residual = y - law(t, l_inf, a, p)
  return dict(fit_l_inf=float(l_inf), fit_a=float(a), fit_p=float(p),
              fit_r2=float(1 - residual @ residual / ((y - y.mean()) @ (y - y.mean()))))


def read_runs(table: str, root: str, min_tokens_per_param: float) -> list[dict]:
  """The table's finished runs, smallest model first, each with its workdir and whether it is its shape's chosen
  run (most tokens, at least min_tokens_per_param tokens per non-embedding parameter, seed 0 first)."""
  if not table or not os.path.isfile(table):
    raise ConfigError(f'--table={table!r} is not a file: pass the scaling sweep\'s runs CSV.')
  if not root or not os.path.isdir(root):
    raise ConfigError(f'--runs_root={root!r} is not a directory: pass the directory of the sweep\'s workdirs.')
  with open(table, encoding='utf-8') as f:
    runs = [r for r in csv.DictReader(f) if r.get('state') == 'finished']
  if not runs:
    raise ConfigError(f'--table={table} holds no finished run.')
  for r in runs:
    r['workdir'] = os.path.join(root, r['run'])
    if not os.path.isdir(r['workdir']):
      raise ConfigError(f'run {r["run"]} of --table has no workdir {r["workdir"]}: pass the --runs_root it ran in.')
    r['tokens_per_param'] = int(r['tokens']) / int(r['params_non_embedding'])
  chosen = {}
  for r in sorted(runs, key=lambda r: (int(r['tokens']), -int(r['seed']))):
    if r['tokens_per_param'] >= min_tokens_per_param:
      chosen[(r['n_layers'], r['d_model'])] = r['run']
  for r in runs:
    r['chosen'] = chosen.get((r['n_layers'], r['d_model'])) == r['run']
  return sorted(runs, key=lambda r: (int(r['params_non_embedding']), int(r['tokens']), int(r['seed'])))


def measure(run: dict, batch_rows: int) -> tuple[dict, np.ndarray]:
  """(CSV row, loss per position) of one run's final checkpoint over the whole validation split."""
  start = time.time()
  config, module, params, step, mesh = cli.load_model(None, run['workdir'], 'checkpoint')
  curve = position_losses(module, params, mesh, whole_split(config, batch_rows, gs.batch_shards(mesh)))
  row = dict(model=run['run'], params_non_embedding=int(run['params_non_embedding']), icl_score=icl_score(curve),
             chosen=run['chosen'], n_layers=int(run['n_layers']), d_model=int(run['d_model']),
             params_flops=float(run['params_flops']), tokens=int(run['tokens']),
             tokens_per_param=round(run['tokens_per_param'], 2), flops_budget=float(run['flops_budget']),
             seed=int(run['seed']), step=step, final_eval_loss=float(run['final_eval_loss']),
             mean_loss=float(curve.mean()), loss_early=float(curve[EARLY[0]:EARLY[1] + 1].mean()),
             loss_late=float(curve[LATE[0]:LATE[1] + 1].mean()), **fit_power_law(curve),
             seconds=round(time.time() - start, 1))
  return row, curve


def summary(rows: list[dict]) -> str:
  """The done-when criteria over the chosen runs, as measured."""
  chosen = [r for r in rows if r['chosen']]
  if len(chosen) < 2:
    return f'{len(chosen)} chosen run(s): no rank correlation.'
  rho = stats.spearmanr([r['params_non_embedding'] for r in chosen], [r['icl_score'] for r in chosen]).statistic
  worst = max(r['icl_score'] for r in chosen)
  return (f'{len(chosen)} sizes; ICL score from {min(r["icl_score"] for r in chosen):.3f} to {worst:.3f} nats/token '
          f'(every score below -0.1: {"met" if worst < -0.1 else "NOT met"}); Spearman rho(size, ICL score) = '
          f'{rho:.3f} (<= -0.8: {"met" if rho <= -0.8 else "NOT met"}).')


def main(argv):
  del argv
  cli.check_output('output', FLAGS.output)
  if FLAGS.plots:
    cli.check_outputs_in('plots', FLAGS.plots, (PLOT,))
  if FLAGS.batch_rows < 1:
    raise ConfigError(f'--batch_rows={FLAGS.batch_rows} must be a positive number of sequences, e.g. 64.')
  runs = read_runs(FLAGS.table, FLAGS.runs_root, FLAGS.min_tokens_per_param)
  rows, curves = [], []
  for run in runs:
    row, curve = measure(run, FLAGS.batch_rows)
    rows.append(row)
    curves.append(curve)
    if jax.process_index() == 0:
      print(f'{row["model"]}: ICL score {row["icl_score"]:.4f}, mean loss {row["mean_loss"]:.4f} '
            f'(eval {row["final_eval_loss"]:.4f}), fit p={row["fit_p"]:.3f} R^2={row["fit_r2"]:.4f}, '
            f'{row["seconds"]} s', flush=True)
  if jax.process_index() == 0:
    write(FLAGS.output, rows, curves)
    if FLAGS.plots:
      print(f'wrote {draw(os.path.join(FLAGS.plots, PLOT), rows, curves)}')
    print(summary(rows))
  return 0


def write(path: str, rows: list[dict], curves: list[np.ndarray]) -> None:
  """The CSV: one row per run, its columns then loss_t<position> for every position."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(list(rows[0]) + [f'loss_t{t}' for t in range(len(curves[0]))])
    for row, curve in zip(rows, curves):
      writer.writerow([_cell(v) for v in row.values()] + [f'{v:.5f}' for v in curve])
  print(f'wrote {path} ({len(rows)} runs)')


def draw(path: str, rows: list[dict], curves: list[np.ndarray]) -> str:
  """Loss vs position (log x) of the chosen runs, coloured by size, and ICL score vs size of every run (chosen
  runs filled)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
  sizes = [r['params_non_embedding'] for r in rows]
  norm = matplotlib.colors.LogNorm(min(sizes), max(sizes))
  cmap = matplotlib.colormaps['viridis']
  for row, curve in zip(rows, curves):
    if row['chosen']:
      left.plot(np.arange(1, len(curve) + 1), curve, color=cmap(norm(row['params_non_embedding'])), lw=1.2)
  for lo, hi in (EARLY, LATE):
    left.axvspan(lo + 1, hi + 1, color='0.9', zorder=0)
  left.set(xscale='log', xlabel='tokens seen t (position + 1)', ylabel='validation loss (nats/token)',
           title='loss per position (chosen run per size)')
  fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=left, label='non-embedding params')
  for row in rows:
    right.scatter(row['params_non_embedding'], row['icl_score'], color=cmap(norm(row['params_non_embedding'])),
                  facecolor=None if row['chosen'] else 'none', s=30 if row['chosen'] else 14)
  right.axhline(-0.1, color='0.5', ls='--', lw=0.8)
  right.set(xscale='log', xlabel='non-embedding params', ylabel='ICL score: loss(100-127) - loss(10-20)',
            title='ICL score (filled: chosen run; hollow: other runs)')
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def _cell(value):
  return f'{value:.5g}' if isinstance(value, float) and not math.isnan(value) else value


if __name__ == '__main__':
  define_flags()
  cli.run_main(main)
