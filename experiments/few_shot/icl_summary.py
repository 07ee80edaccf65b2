"""The in-context learning experiment's criteria from its CSV: per model, the accuracy at each K and the shuffled
control at K = 8, each the mean over tasks; then whether the largest 2+ layer model gains at least 0.25 from K = 0
to K = 8 and sits at least 0.15 above its shuffled control at K = 8, whether the gains grow with size over the 2+
layer models (Spearman rank correlation of gain with non-embedding parameters, at least 0.8), and whether every
1-layer control gains at most 0.05.

    python -m experiments.few_shot.icl_summary --csv=experiments/few_shot/results/icl.csv
"""

from __future__ import annotations

from absl import flags
from scipy import stats

from gpt_jax import cli
from gpt_jax.config import ConfigError
from experiments.few_shot import icl_plot

FLAGS = flags.FLAGS


def models_table(rows) -> list[dict]:
  """One entry per model, smallest first, controls first: its size, mean accuracy at each K, gain and margin."""
  ks = sorted({r['k'] for r in rows})
  if not {0, 8} <= set(ks):
    raise ConfigError(f'the CSV has K = {", ".join(map(str, ks))}: the criteria need K = 0 and K = 8 (icl_run\'s '
                      f'--k must include them).')
  models = sorted({(r['n_layers'] > 1, r['params_non_embedding'], r['model'], r['n_layers']) for r in rows})
  out = []
  for _, params, model, layers in models:
    accuracy = dict(zip(*icl_plot.series(rows, icl_plot.MEAN, model, 'none')))
    shuffled = dict(zip(*icl_plot.series(rows, icl_plot.MEAN, model, 'shuffled')))[8]
    out.append(dict(model=model, n_layers=layers, params_non_embedding=params, accuracy=accuracy,
                    shuffled_k8=shuffled, gain=accuracy[8] - accuracy[0], above_shuffled=accuracy[8] - shuffled))
  return out


def criteria(table: list[dict]) -> dict:
  """The criteria the models in the table can be judged on (those on 2+ layer models need one; the control's a
  1-layer model; the growth with size three 2+ layer models)."""
  deep = [m for m in table if m['n_layers'] > 1]
  controls = [m for m in table if m['n_layers'] == 1]
  out = {}
  if deep:
    largest = max(deep, key=lambda m: m['params_non_embedding'])
    out['largest_gains_at_least_0.25'] = dict(model=largest['model'], gain=largest['gain'],
                                              met=largest['gain'] >= 0.25)
    out['largest_at_least_0.15_above_shuffled'] = dict(model=largest['model'], margin=largest['above_shuffled'],
                                                       met=largest['above_shuffled'] >= 0.15)
  if len(deep) >= 3:
    rho = float(stats.spearmanr([m['params_non_embedding'] for m in deep], [m['gain'] for m in deep])[0])
    out['gains_grow_with_size'] = dict(gains=[round(float(m['gain']), 4) for m in deep], spearman=rho, met=rho >= 0.8)
  if controls:
    out['one_layer_control_gains_at_most_0.05'] = dict(gains=[round(float(m['gain']), 4) for m in controls],
                                                       met=max(m['gain'] for m in controls) <= 0.05)
  return out


def report(rows) -> str:
  """The per-model table and the criteria as text."""
  table = models_table(rows)
  ks = list(table[0]['accuracy'])
  lines = ['model (non-emb. params) | ' + ' | '.join(f'K={k}' for k in ks) + ' | shuffled K=8 | gain | above shuffled']
  for m in table:
    lines.append(f'{m["model"]} ({m["params_non_embedding"]:,}) | '
                 + ' | '.join(f'{m["accuracy"][k]:.3f}' for k in ks)
                 + f' | {m["shuffled_k8"]:.3f} | {m["gain"]:.3f} | {m["above_shuffled"]:.3f}')
  for name, c in criteria(table).items():
    lines.append(f'{"met    " if c["met"] else "NOT met"} {name}: '
                 + ', '.join(f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}'
                             for k, v in c.items() if k != 'met'))
  return '\n'.join(lines)


def main(argv):
  del argv
  print(report(icl_plot.read_rows(FLAGS.csv)))


if __name__ == '__main__':
  cli.run_main(main)
