"""The K-shot in-context learning experiment: train a 1-layer control and larger GPTs (rotary positions) on the
stdlib corpus mixed with per-sequence task episodes (icl_data), then score each model K-shot on every task with 3
demonstration seeds and the shuffled-output control (icl_eval); writes the CSV, the figure (icl_plot), each
model's training log, and each model as an export directory (usable by gpt_jax's sampler and eval commands).

    nice -n 19 python -m experiments.few_shot.icl_run --output=experiments/few_shot/results/icl.csv \
        --plot=experiments/few_shot/plots/icl_accuracy_vs_k.png --models_dir=/tmp/icl_models

Models are named l<layers>-d<width>; every model trains on the same batches (same data seed and steps).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time

import numpy as np
from absl import flags

from gpt_jax import checkpoint as ckpt_lib
from gpt_jax import cli
from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax.config import ConfigError
from gpt_jax.data import sources
from experiments.few_shot import icl_data
from experiments.few_shot import icl_eval
from experiments.few_shot import icl_plot
from experiments.few_shot import icl_train

flags.DEFINE_string('output', None, 'the CSV to write (e.g. experiments/few_shot/results/icl.csv).')
flags.DEFINE_string('models_dir', None, 'directory for each model\'s export directory and training log.')
flags.DEFINE_list('models', ['l1-d64', 'l2-d32', 'l2-d48', 'l2-d64'], 'models as l<layers>-d<width>.')
flags.DEFINE_enum('positions', 'rope', ['learned', 'rope'], 'position encoding of every model.')
flags.DEFINE_integer('steps', 1500, 'training steps per model.')
flags.DEFINE_integer('batch', 32, 'rows per step.')
flags.DEFINE_integer('context', 128, 'context in bytes (K = 16 of the longest format needs 101).')
flags.DEFINE_float('lr', 3e-3, 'peak learning rate.')
flags.DEFINE_float('corpus_fraction', 0.25, 'fraction of training rows that are stdlib windows.')
flags.DEFINE_list('k', ['0', '1', '2', '4', '8', '16'], 'numbers of demonstrations.')
flags.DEFINE_list('seeds', ['0', '1', '2'], 'demonstration seeds.')
flags.DEFINE_integer('n', 500, 'queries per (task, K, seed).')
FLAGS = flags.FLAGS
COLUMNS = ('model', 'n_layers', 'd_model', 'params_non_embedding', 'task', 'k', 'control', 'accuracy', 'accuracy_se',
           'ceiling', 'chance', 'queries', 'train_steps', 'train_seconds', 'final_train_loss')


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
  config = icl_train.model_config(n_layers, d_model, FLAGS.context, FLAGS.positions)
  rng = np.random.default_rng(0)
  batches = (icl_data.mixed_batch(texts, rng, FLAGS.batch, FLAGS.context + 1, FLAGS.corpus_fraction)
             for _ in itertools.count())
  log = []

  def on_log(step, loss, seconds, params):
    log.append(dict(step=step, loss=round(loss, 4), seconds=round(seconds, 1)))
    print(json.dumps(dict(model=spec, **log[-1])), flush=True)

  module, params = icl_train.train(config, batches, FLAGS.steps, FLAGS.lr, on_log=on_log)
  ckpt_lib.export_params(os.path.join(FLAGS.models_dir, spec), params, FLAGS.steps, config)
  with open(os.path.join(FLAGS.models_dir, f'{spec}.train_log.json'), 'w', encoding='utf-8') as f:
    json.dump(log, f)
  start = time.time()
  rows = icl_eval.evaluate(icl_eval.make_scorer(module, FLAGS.context), params, ks, seeds, FLAGS.n)
  print(json.dumps(dict(model=spec, eval_seconds=round(time.time() - start, 1))), flush=True)
  base = dict(model=spec, n_layers=n_layers, d_model=d_model,
              params_non_embedding=flops.count_params(config)['non_embedding'], train_steps=FLAGS.steps,
              train_seconds=log[-1]['seconds'], final_train_loss=log[-1]['loss'])
  return [dict(base, **r) for r in rows]


def main(argv):
  del argv
  for spec in FLAGS.models:
    parse_model(spec)
  ks, seeds = _integers('k', 0), _integers('seeds', 0)
  for name in ('steps', 'batch', 'n'):
    if FLAGS[name].value < 2:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be at least 2.')
  if FLAGS.context < 101 and max(ks) >= 16:
    raise ConfigError(f'--context={FLAGS.context} cannot hold K=16 cipher prompts (101 bytes): use --context=128.')
  if not 0.0 <= FLAGS.corpus_fraction < 1.0:
    raise ConfigError(f'--corpus_fraction={FLAGS.corpus_fraction} must be in [0, 1).')
  cli.check_output('output', FLAGS.output)
  cli.check_output('plot', FLAGS.plot)
  cli.check_output('models_dir', FLAGS.models_dir, directory=True)
  os.makedirs(FLAGS.models_dir, exist_ok=True)
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
  print(icl_plot.draw(icl_plot.read_rows(FLAGS.output), FLAGS.plot))


if __name__ == '__main__':
  cli.define_overwrite_flag()
  cli.run_main(main)
