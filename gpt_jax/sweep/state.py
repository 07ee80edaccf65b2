"""What a sweep run's workdir says about it: pending, partial, finished or failed, with its losses so far.

Read from files any launcher leaves behind (metrics.jsonl, config.json), so `status` and `collect` work the same
for runs done here, under SLURM or on a TPU pod. The local runner adds sweep_attempts.jsonl (exit status and wall
time of each attempt), which is how a failure is told apart from a run that was stopped and will resume.
"""

from __future__ import annotations

import dataclasses
import json
import os

ATTEMPTS_FILE = 'sweep_attempts.jsonl'
LOG_FILE = 'train.log'
INTERRUPTED = (130, -2, -15)  # Ctrl-C, SIGINT, SIGTERM: the run saved and resumes when rerun


@dataclasses.dataclass(frozen=True)
class RunState:
  state: str  # 'pending' (nothing yet), 'partial' (stopped early: rerun resumes), 'finished', 'failed'
  tokens: int  # tokens trained so far
  step: int
  train_loss: float | None  # the last logged training loss
  eval_loss: float | None  # the last validation loss
  best_eval_loss: float | None
  exit_code: int | None  # of the last local attempt
  seconds: float  # wall time of the local attempts, summed


def read_metrics(workdir: str) -> list[dict]:
  """metrics.jsonl's records (a line torn by a kill mid-write is skipped)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except ValueError:
        continue
  return records


def read_attempts(workdir: str) -> list[dict]:
  path = os.path.join(workdir, ATTEMPTS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def eval_curve(records: list[dict]) -> list[tuple[int, float]]:
  """(tokens, validation loss) of each evaluation, in order."""
  return [(r['tokens'], r['eval/loss']) for r in records if 'eval/loss' in r and 'tokens' in r]


def run_state(workdir: str, total_tokens: int, evaluates: bool) -> RunState:
  """The run's state: finished once it has trained total_tokens (and, when it evaluates, evaluated at the end)."""
  records = read_metrics(workdir)
  attempts = read_attempts(workdir)
  train = [r for r in records if 'train/loss' in r]
  evals = eval_curve(records)
  tokens = max((r.get('tokens', 0) for r in records), default=0)
  done = tokens >= total_tokens and (not evaluates or (evals and evals[-1][0] >= total_tokens))
  exit_code = attempts[-1]['exit_code'] if attempts else None
  if done:
    state = 'finished'
  elif exit_code is not None and exit_code != 0 and exit_code not in INTERRUPTED:
    state = 'failed'
  else:
    state = 'partial' if records or os.path.isdir(os.path.join(workdir, 'checkpoints')) else 'pending'
  return RunState(state, tokens, max((r.get('step', 0) for r in records), default=0),
                  train[-1]['train/loss'] if train else None, evals[-1][1] if evals else None,
                  min(loss for _, loss in evals) if evals else None, exit_code,
                  sum(a.get('seconds', 0.0) for a in attempts))
