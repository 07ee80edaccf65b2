"""What a sweep run's workdir says about it: pending, running, partial, finished or failed, with its losses so far.

Read from files any launcher leaves behind (metrics.jsonl, config.json), so `status` and `collect` work the same
for runs done here, under SLURM or on a TPU pod. The local runner and the SLURM script add the run's lock and
sweep_attempts.jsonl (exit status and wall time of each attempt, see attempt.py), which is how a failure is told
apart from a run that was stopped and will resume, and a run in progress from one that stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from gpt_jax.sweep import attempt as attempt_lib

LOG_FILE = 'train.log'
# Ctrl-C, SIGINT, SIGTERM (as a signal or a shell's 128 + 15), or killed before it could say: it resumes when rerun.
INTERRUPTED = (None, 130, 143, -2, -15)


@dataclasses.dataclass(frozen=True)
class RunState:
  state: str  # 'pending' (nothing yet), 'running', 'partial' (stopped early: rerun resumes), 'finished', 'failed'
  tokens: int  # tokens trained so far
  step: int
  train_loss: float | None  # the last logged training loss
  eval_loss: float | None  # the last validation loss
  best_eval_loss: float | None
  exit_code: int | None  # of the last local attempt
  seconds: float  # wall time of every attempt (the running one so far), summed
  where: str | None = None  # host and pid of the runner while running


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


def eval_curve(records: list[dict]) -> list[tuple[int, float]]:
  """(tokens, validation loss) of each evaluation, in order."""
  return [(r['tokens'], r['eval/loss']) for r in records if 'eval/loss' in r and 'tokens' in r]


def run_state(workdir: str, total_tokens: int, evaluates: bool) -> RunState:
  """The run's state: finished once it has trained total_tokens (and, when it evaluates, evaluated at the end)."""
  records = read_metrics(workdir)
  attempts = attempt_lib.read_attempts(workdir)
  lock, held = attempt_lib.read_lock(workdir)
  train = [r for r in records if 'train/loss' in r]
  evals = eval_curve(records)
  tokens = max((r.get('tokens', 0) for r in records), default=0)
  done = tokens >= total_tokens and (not evaluates or (evals and evals[-1][0] >= total_tokens))
  exit_code = attempts[-1]['exit_code'] if attempts else None
  seconds = sum(a.get('seconds', 0.0) for a in attempts) + attempt_lib.stale_seconds(lock, held)
  if held:
    state = 'running'
    seconds += time.time() - (lock or {}).get('started', time.time())
  elif done:
    state = 'finished'
  elif attempts and exit_code not in (0, *INTERRUPTED):
    state = 'failed'
  else:
    state = 'partial' if records or os.path.isdir(os.path.join(workdir, 'checkpoints')) else 'pending'
  return RunState(state, tokens, max((r.get('step', 0) for r in records), default=0),
                  train[-1]['train/loss'] if train else None, evals[-1][1] if evals else None,
                  min(loss for _, loss in evals) if evals else None, exit_code, seconds,
                  attempt_lib.where(lock or {}) if held else None)
