"""The K-shot in-context learning experiment: train a 1-layer control and larger GPTs (rotary positions) first on
induction rows alone (a warm-up that forms induction heads in a few hundred steps), then on the stdlib corpus mixed
with induction rows and per-sequence task episodes of --tasks (icl_data), logging the induction probe's held-out
losses; then score each model K-shot on every task with 3 demonstration seeds and the shuffled-output control
(icl_eval); writes the CSV and the figure (icl_plot) and prints the criteria (icl_summary). Each model is a run of the shared
training loop in <models_dir>/<model> (checkpoints, metrics.jsonl; usable by gpt_jax's sampler and eval commands):
rerunning resumes the runs, and a larger --steps continues them.

    nice -n 19 python -m experiments.few_shot.icl_run --output=experiments/few_shot/results/icl.csv \
        --plot=experiments/few_shot/plots/icl_accuracy_vs_k.png --models_dir=/tmp/icl_models

Models are named l<layers>-d<width>; every model trains on the same batches (same data seed and steps).
"""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np
from absl import flags

from gpt_jax import cli
from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import model as gm
from gpt_jax.config import ConfigError
from gpt_jax.data import sources
from experiments.few_shot import icl_data
from experiments.few_shot import icl_eval
from experiments.few_shot import icl_plot
from experiments.few_shot import icl_summary
from experiments.few_shot import icl_train

flags.DEFINE_string('output', None, 'the CSV to write (e.g. experiments/few_shot/results/icl.csv).')
flags.DEFINE_string('models_dir', None, 'directory of the models\' runs (one workdir per model; resumed).')
flags.DEFINE_list('models', ['l1-d64', 'l2-d32', 'l2-d48', 'l2-d64', 'l3-d64'], 'models as l<layers>-d<width>.')
flags.DEFINE_enum('positions', 'rope', ['learned', 'rope'], 'position encoding of every model.')
flags.DEFINE_integer('steps', 2000, 'training steps per model (a resumed run continues up to this many).')
flags.DEFINE_integer('batch', 32, 'rows per step.')
flags.DEFINE_integer('context', 128, 'context in bytes (K = 16 of the longest format, the cipher, needs 120).')
flags.DEFINE_float('lr', 3e-3, 'peak learning rate.')
flags.DEFINE_float('corpus_fraction', 0.25, 'fraction of training rows that are stdlib windows (after the warm-up).')
flags.DEFINE_float('induction_fraction', 0.25, 'fraction of training rows that are induction rows (after the warm-up).')
flags.DEFINE_integer('warmup_steps', 500, 'first steps trained on induction rows only (0: none).')
flags.DEFINE_integer('probe_every', 250, 'steps between evaluations of the induction probe\'s held-out rows.')
flags.DEFINE_list('tasks', list(icl_data.DEFAULT_TASKS), f'task families to train on and score, of '
                  f'{", ".join(icl_data.TASKS)}.')
flags.DEFINE_list('k', ['0', '1', '2', '4', '8', '16'], 'numbers of demonstrations.')
flags.DEFINE_list('seeds', ['0', '1', '2'], 'demonstration seeds.')
flags.DEFINE_integer('n', 500, 'queries per (task, K, seed).')
FLAGS = flags.FLAGS
COLUMNS = ('model', 'n_layers', 'd_model', 'params_non_embedding', 'task', 'k', 'control', 'accuracy', 'accuracy_se',
           'ceiling', 'chance', 'queries', 'train_steps', 'train_seconds', 'final_train_loss', 'probe_second_copy',
           'induction_step')
PROBE_SEGMENT = 32  # the probe's held-out rows: a segment of 10-31 symbols written twice at the end of the row
INDUCED = 2.0  # nats: a second-copy loss below this needs induction (no-induction level about 3.6, chance 5.3)


def parse_model(spec: str) -> tuple[int, int]:
  try:
    layers, width = spec.split('-')
    assert layers[0] == 'l' and width[0] == 'd'
    n_layers, d_model = int(layers[1:]), int(width[1:])
    assert n_layers > 0 and d_model > 0 and d_model % 16 == 0
  except (ValueError, AssertionError, IndexError):
    raise ConfigError(f'--models entry {spec!r} must read l<layers>-d<width> with the width a multiple of 16, '
                      f'e.g. l2-d64.') from None
  return n_layers, d_model


def _integers(flag: str, low: int) -> list[int]:
  try:
    values = [int(v) for v in FLAGS[flag].value]
  except ValueError:
    values = []
  if not values or min(values) < low:
    raise ConfigError(f'--{flag}={",".join(FLAGS[flag].value)} must be a list of integers of at least {low}.')
  return values


def train_and_score(spec: str, texts, ks, seeds) -> list[dict]:
  n_layers, d_model = parse_model(spec)
  config = icl_train.run_config(n_layers, d_model, FLAGS.context, FLAGS.positions, lr=FLAGS.lr, batch=FLAGS.batch,
                                steps=FLAGS.steps)
  workdir = os.path.join(FLAGS.models_dir, spec)
  start = time.time()
  identity = {'rows': 'stdlib, induction rows and task episodes', 'corpus_fraction': FLAGS.corpus_fraction,
              'induction_fraction': FLAGS.induction_fraction, 'warmup_steps': FLAGS.warmup_steps}
  # None for the default set, which runs saved before --tasks existed also read as, so they still resume.
  identity['tasks'] = None if tuple(FLAGS.tasks) == icl_data.DEFAULT_TASKS else ','.join(FLAGS.tasks)
  hook = icl_train.probe_hook(config, PROBE_SEGMENT, FLAGS.probe_every)
  rows = icl_data.curriculum(texts, FLAGS.context + 1, FLAGS.warmup_steps * FLAGS.batch, FLAGS.corpus_fraction,
                             FLAGS.induction_fraction, tuple(FLAGS.tasks))
  result = icl_train.train(config, workdir, rows, identity, hooks=[hook])
  train_seconds = time.time() - start
  start = time.time()
  scorer = icl_eval.make_scorer(gm.GPTLM(config.model), FLAGS.context)
  rows = icl_eval.evaluate(scorer, result.params, ks, seeds, FLAGS.n, tuple(FLAGS.tasks))
  print(json.dumps(dict(model=spec, eval_seconds=round(time.time() - start, 1))), flush=True)
  base = dict(model=spec, n_layers=n_layers, d_model=d_model,
              params_non_embedding=flops.count_params(config)['non_embedding'], train_steps=result.step,
              train_seconds=round(train_seconds, 1), final_train_loss=logged(workdir, 'train/loss')[-1][1],
              probe_second_copy=logged(workdir, 'probe/second_copy')[-1][1], induction_step=induction_step(workdir))
  return [dict(base, **r) for r in rows]


def logged(workdir: str, key: str) -> list[tuple[int, float]]:
  """(step, value) of every record of `key` in the run's metrics.jsonl, resumed runs included."""
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [(r['step'], r[key]) for r in map(json.loads, f) if key in r]


def induction_step(workdir: str) -> int | None:
  """The first probe step whose second-copy loss is below INDUCED nats (None if none is)."""
  return next((step for step, loss in logged(workdir, 'probe/second_copy') if loss < INDUCED), None)


def main(argv):
  del argv
  for spec in FLAGS.models:
    parse_model(spec)
  ks, seeds = _integers('k', 0), _integers('seeds', 0)
  if not {0, 8} <= set(ks):
    raise ConfigError(f'--k={",".join(FLAGS.k)} must include 0 and 8: the criteria compare K = 8 with K = 0.')
  for name in ('steps', 'batch', 'n'):
    if FLAGS[name].value < 2:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be at least 2.')
  unknown = sorted(set(FLAGS.tasks) - set(icl_data.TASKS))
  if unknown or not FLAGS.tasks or len(set(FLAGS.tasks)) < len(FLAGS.tasks):
    raise ConfigError(f'--tasks={",".join(FLAGS.tasks)} must name distinct task families of '
                      f'{", ".join(icl_data.TASKS)}' + (f' (unknown: {", ".join(unknown)}).' if unknown else '.'))
  needed = max(len((p + a).encode()) for task in [icl_data.TASKS[name] for name in FLAGS.tasks]
               for p, a, _, _ in icl_eval.episodes(task, max(ks), seed=0, n=1, shuffled=False))
  if FLAGS.context < needed:
    raise ConfigError(f'--context={FLAGS.context} cannot hold K={max(ks)} prompts ({needed} bytes): use '
                      f'--context={max(needed, 128)} or a smaller --k.')
  for name in ('corpus_fraction', 'induction_fraction'):
    if not 0.0 <= FLAGS[name].value < 1.0:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be in [0, 1).')
  if FLAGS.corpus_fraction + FLAGS.induction_fraction >= 1.0:
    raise ConfigError(f'--corpus_fraction={FLAGS.corpus_fraction} plus --induction_fraction='
                      f'{FLAGS.induction_fraction} must leave room for task rows (sum below 1).')
  if not 0 <= FLAGS.warmup_steps < FLAGS.steps:
    raise ConfigError(f'--warmup_steps={FLAGS.warmup_steps} must be at least 0 and below --steps={FLAGS.steps}.')
  if FLAGS.probe_every < 1:
    raise ConfigError(f'--probe_every={FLAGS.probe_every} must be a positive integer.')
  cli.check_output('output', FLAGS.output)
  cli.check_output('plot', FLAGS.plot)
  cli.check_workdir(FLAGS.models_dir, flag='models_dir')
  texts = sources.open_source('stdlib', gcfg.default_config().data.data_dir).texts('train')
  rows = []
  for spec in FLAGS.models:
    rows += train_and_score(spec, texts, ks, seeds)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, 'w', encoding='utf-8', newline='') as f:  # rewritten after each model
      writer = csv.DictWriter(f, COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.plot)), exist_ok=True)
  results = icl_plot.read_rows(FLAGS.output)
  print(icl_plot.draw(results, FLAGS.plot))
  print(icl_summary.report(results))


if __name__ == '__main__':
  cli.define_overwrite_flag()
  cli.run_main(main)
