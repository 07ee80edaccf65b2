"""GPT-3's few-shot sweep at CPU scale: model sizes x K demonstrations x demonstration seeds, on in-context tasks
and GPT-3's random insertion and 2D+, with a shuffled-label control; accuracy and mean target log-prob with
standard errors, as JSON and CSV, and with --plots=<dir> the accuracy-vs-K (GPT-3 Figure 1.2) and vs-size plots.
A model whose context cannot hold a prompt sees it cut from the left: each such (model, task, K) is announced, counted
in the table's truncated column (of `prompts` scored) and drawn hollow in the plots.

    python -m experiments.few_shot.run --table=experiments/scaling_laws/results/runs.csv \
        --runs_root=experiments/scaling_laws/runs/cpu --output=experiments/few_shot/results/results.json \
        --plots=experiments/few_shot/plots --overwrite

The models are the scaling sweep's checkpoints: per model shape, its finished run with the lowest validation loss.
Or any list of run or export directories, e.g. GPT-2 small..xl imported with `python -m gpt_jax.hf import`:

    python -m experiments.few_shot.run --runs=runs/gpt2,runs/gpt2-medium,runs/gpt2-large,runs/gpt2-xl \
        --output=runs/gpt2_few_shot/results.json --plots=runs/gpt2_few_shot/plots
A standard error is over test items, each item's score first averaged over the demonstration seeds (K = 0 has no
demonstrations and runs once).
"""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
from absl import flags

from gpt_jax import checkpoint as ckpt_lib
from gpt_jax import cli
from gpt_jax import flops
from gpt_jax.config import ConfigError
from gpt_jax.data import sources
from gpt_jax.data import tokenizer as tok_lib
from gpt_jax.eval import fewshot
from gpt_jax.eval import tasks as tasks_lib
from experiments.few_shot import tasks as fs_tasks

flags.DEFINE_string('table', None, 'the scaling sweep\'s runs CSV (python -m gpt_jax.sweep collect).')
flags.DEFINE_string('runs_root', None, 'the directory holding the sweep\'s run workdirs.')
flags.DEFINE_list('runs', [], 'instead of --table and --runs_root: run or export directories to evaluate (e.g. '
                  'GPT-2 checkpoints imported with python -m gpt_jax.hf import).')
flags.DEFINE_string('output', None, 'results JSON to write (a CSV of the same rows is written beside it).')
flags.DEFINE_string('plots', None, 'directory for the PNGs; empty: no plots.')
cli.define_overwrite_flag()
flags.DEFINE_integer('n', fs_tasks.N_TEST, 'test items per task.')
flags.DEFINE_list('seeds', ['1234', '1', '2'], 'demonstration seeds.')
FLAGS = flags.FLAGS
K_VALUES = (0, 1, 2, 4, 6, 8)


def pick_models(table: str, root: str) -> list[dict]:
  """Per model shape, the finished run with the lowest final validation loss, smallest model first."""
  if not table or not os.path.isfile(table):
    raise ConfigError(f'--table={table!r} is not a file: pass the scaling sweep\'s runs CSV.')
  if not root or not os.path.isdir(root):
    raise ConfigError(f'--runs_root={root!r} is not a directory: pass the directory of the sweep\'s workdirs.')
  with open(table, encoding='utf-8') as f:
    rows = [r for r in csv.DictReader(f) if r['state'] == 'finished']
  best = {}
  for r in rows:
    shape = (r['n_layers'], r['d_model'])
    if shape not in best or float(r['final_eval_loss']) < float(best[shape]['final_eval_loss']):
      best[shape] = r
  models = sorted(best.values(), key=lambda r: int(r['params_non_embedding']))
  if not models:
    raise ConfigError(f'--table={table} holds no finished run.')
  for r in models:
    r['workdir'] = os.path.join(root, r['run'])
  return models


def listed_models(runs: list[str]) -> list[dict]:
  """--runs: each directory's model with its parameter counts (from its config.json), smallest first; the
  validation loss is unknown (NaN)."""
  models = []
  for workdir in runs:
    if not os.path.isfile(os.path.join(workdir, ckpt_lib.CONFIG_FILE)):
      raise ConfigError(f'--runs entry {workdir} holds no {ckpt_lib.CONFIG_FILE}: pass run directories written by '
                        f'gpt_jax.train or exports (python -m gpt_jax.hf import --workdir=...).')
    counts = flops.count_params(ckpt_lib.load_config(workdir))
    models.append(dict(run=os.path.basename(os.path.normpath(workdir)), workdir=workdir, final_eval_loss='nan',
                       params_non_embedding=counts['non_embedding'], params_total=counts['total']))
  return sorted(models, key=lambda m: m['params_non_embedding'])


def score(task, k: int, scorer, tokenizer, seeds: list[int], n: int) -> dict:
  """Accuracy and target log-prob of task at K, per item averaged over the demonstration seeds."""
  acc, loglik, truncated = [], [], 0
  for seed in seeds if k else seeds[:1]:
    report = fewshot.evaluate(task, k, scorer=scorer, sampler=None, tokenizer=tokenizer, seed=seed, limit=n,
                              log_samples=True)
    acc.append([float(s['is_greedy']) for s in report['samples']])
    loglik.append([s['loglikelihood'] for s in report['samples']])
    truncated += report['truncated']
  out = dict(truncated=truncated, prompts=sum(len(a) for a in acc), seeds=len(acc))
  for name, values in (('acc', acc), ('loglik', loglik)):
    per_item = np.mean(values, axis=0)
    out[name] = float(per_item.mean())
    out[f'{name}_se'] = float(per_item.std(ddof=1) / np.sqrt(per_item.size))
  return out


def evaluate_model(model: dict, loaded: dict, seeds: list[int], n: int) -> list[dict]:
  config, module, params, _, mesh = cli.load_model(None, model['workdir'], 'checkpoint')
  tokenizer = tok_lib.load(config.data)
  scorer = fewshot.Scorer(module, params, config.model.context, batch_tokens=16384, mesh=mesh)
  rows = []
  for name, task in loaded.items():
    base = name.removesuffix('_shuffled')
    for k in (k for k in K_VALUES if k <= fs_tasks.MAX_K[base] and (k or name == base)):
      result = score(task, k, scorer, tokenizer, seeds, n)
      if result['truncated']:
        print(f'warning: {model["run"]} {name} K={k}: {result["truncated"]} of {result["prompts"]} prompts cut '
              f'from the left to fit the model\'s {config.model.context}-token context (marked in the table\'s '
              f'truncated column and hollow in the plots)', flush=True)
      rows.append(dict(model=model['run'], params_non_embedding=int(model['params_non_embedding']),
                       params_total=int(model['params_total']), eval_loss=float(model['final_eval_loss']),
                       task=base, control=name != base, k=k, **result))
  return rows


def main(argv):
  del argv
  if not FLAGS.output:
    raise ConfigError('--output is required, e.g. --output=experiments/few_shot/results/results.json.')
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise ConfigError(f'--seeds={",".join(FLAGS.seeds)} must be integers, e.g. --seeds=1234,1,2.') from None
  cli.check_output('output', FLAGS.output)
  cli.check_output('output', _csv_path(FLAGS.output))
  if FLAGS.plots:
    from experiments.few_shot import plots  # matplotlib only when plotting
    cli.check_outputs_in('plots', FLAGS.plots, plots.FILES)
  if FLAGS.runs and (FLAGS.table or FLAGS.runs_root):
    raise ConfigError('--runs replaces --table and --runs_root: pass either the run directories or the sweep table.')
  models = listed_models(FLAGS.runs) if FLAGS.runs else pick_models(FLAGS.table, FLAGS.runs_root)
  first = cli.load_model(None, models[0]['workdir'], 'checkpoint')[0]
  words = fs_tasks.short_words(sources.open_source('stdlib', first.data.data_dir).texts('train'))
  task_dir = os.path.join(os.path.dirname(os.path.abspath(FLAGS.output)) if FLAGS.runs else FLAGS.runs_root,
                          'few_shot_tasks')
  loaded = {name: tasks_lib.load_task(path) for name, path in fs_tasks.write_all(task_dir, words).items()}
  rows, timing = [], {}
  for model in models:
    start = time.time()
    rows += evaluate_model(model, loaded, seeds, FLAGS.n)
    timing[model['run']] = round(time.time() - start, 1)
    print(f'{model["run"]}: {timing[model["run"]]} s', flush=True)
  write(rows, dict(models=[m['run'] for m in models], seeds=seeds, n=FLAGS.n, seconds=timing))
  if cut := sum(1 for r in rows if r['truncated']):
    print(f'{cut} of {len(rows)} rows had prompts cut to fit a model\'s context: their scores are of shortened '
          f'prompts (truncated > 0 in the table, hollow points in the plots).')
  if FLAGS.plots:
    for path in plots.draw_all(FLAGS.plots, rows):
      print(f'wrote {path}')
  return 0


def _csv_path(output: str) -> str:
  return os.path.splitext(output)[0] + '.csv'


def write(rows: list[dict], settings: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, 'w', encoding='utf-8') as f:
    json.dump(dict(settings, rows=rows), f, indent=2)
  with open(_csv_path(FLAGS.output), 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  print(f'wrote {FLAGS.output} ({len(rows)} rows)')


if __name__ == '__main__':
  cli.run_main(main)
