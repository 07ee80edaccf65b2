"""One table of a sweep's results: per run its shape, parameter counts (total, non-embedding and FLOP-equivalent
flops_per_token / 6), recipe (learning rate, batch, warmup, beta2), tokens, FLOPs,
final and best validation loss and few-shot scores, read from each workdir (config.json, metrics.jsonl, run.json,
eval/*.json); and the validation-loss curves of every run, the points of Chinchilla's Approach 1."""

from __future__ import annotations

import csv
import glob
import json
import os
from typing import Sequence

from gpt_jax import checkpoint as ckpt
from gpt_jax import flops
from gpt_jax.sweep import state as state_lib
from gpt_jax.sweep.launch import run_state
from gpt_jax.sweep.spec import Run

COLUMNS = ('run', 'state', 'n_layers', 'd_model', 'n_heads', 'context', 'params_total', 'params_non_embedding',
           'budget_tokens', 'flops_budget', 'tokens', 'flops_6nd', 'flops_model', 'learning_rate', 'seed',
           'final_train_loss', 'final_eval_loss', 'best_eval_loss', 'wall_seconds', 'device_kind', 'git_commit',
           'params_flops', 'peak_lr', 'batch_tokens', 'warmup_tokens', 'b2')
CURVE_COLUMNS = ('run', 'params_total', 'params_non_embedding', 'tokens', 'flops_6nd', 'eval_loss')


def row(run: Run) -> dict:
  """The table row of one run; a run not started yet has its plan and empty results."""
  s = run_state(run)
  out = dict(run=run.name, state=s.state, n_layers=run.shape.n_layers, d_model=run.shape.d_model,
             n_heads=run.shape.n_heads, params_total=run.params_total,
             params_non_embedding=run.params_non_embedding, budget_tokens=run.tokens,
             flops_budget=run.flops_budget or '', tokens=s.tokens, flops_6nd=6 * run.params_total * s.tokens,
             learning_rate=run.learning_rate, seed=run.seed, final_train_loss=s.train_loss,
             final_eval_loss=s.eval_loss, best_eval_loss=s.best_eval_loss, wall_seconds=round(s.seconds, 1))
  if os.path.isfile(os.path.join(run.workdir, ckpt.CONFIG_FILE)):
    config = ckpt.load_config(run.workdir)
    out.update(context=config.model.context, flops_model=flops.flops_per_token(config) * s.tokens,
               params_flops=flops.flops_per_token(config) / 6, peak_lr=config.optim.peak_lr,
               batch_tokens=config.train.batch_tokens, warmup_tokens=config.optim.warmup_tokens, b2=config.optim.b2)
  record_path = os.path.join(run.workdir, ckpt.RUN_FILE)
  if os.path.isfile(record_path):
    with open(record_path, encoding='utf-8') as f:
      record = json.load(f)
    out.update(device_kind=record.get('device_kind'), git_commit=(record.get('git') or {}).get('commit'))
  out.update(fewshot_scores(run.workdir))
  return out


def fewshot_scores(workdir: str) -> dict:
  """{'<task>.<K>shot.<metric>': value} from the run's gpt_jax.eval reports."""
  scores = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'eval', '*shot.json'))):
    with open(path, encoding='utf-8') as f:
      report = json.load(f)
    for metric, value in report.get('metrics', {}).items():
      scores[f'{report["task"]}.{report["num_fewshot"]}shot.{metric}'] = value.get('value')
  return scores


def curves(runs: Sequence[Run]) -> list[dict]:
  """Every evaluation of every run: (run, N, tokens seen, C = 6 N D, validation loss)."""
  rows = []
  for run in runs:
    for tokens, loss in state_lib.eval_curve(state_lib.read_metrics(run.workdir)):
      rows.append(dict(run=run.name, params_total=run.params_total, params_non_embedding=run.params_non_embedding,
                       tokens=tokens, flops_6nd=6 * run.params_total * tokens, eval_loss=loss))
  return rows


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
  """rows as CSV; columns first, then any extra keys (few-shot scores) in sorted order."""
  extra = sorted({key for r in rows for key in r} - set(columns))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=[*columns, *extra])
    writer.writeheader()
    for r in rows:
      writer.writerow({k: ('' if v is None else v) for k, v in r.items()})
