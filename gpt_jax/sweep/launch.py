"""Running a sweep here (one run at a time, or N at a time on a multi-device host) and its status. Each run is
`python -m gpt_jax.train` with the run's workdir and overrides, started as one attempt of the run (attempt.py: its
lock and recorded time), so rerunning skips finished runs and runs another runner holds, and resumes unfinished ones
from their own checkpoints. cluster.py writes the same commands as SLURM and TPU pod scripts.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Sequence

from gpt_jax.sweep import attempt as attempt_lib
from gpt_jax.sweep import state as state_lib
from gpt_jax.sweep.spec import Run

_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
  """Child side of Popen: SIGTERM when the runner dies (even by kill -9), so a run saves and never trains on as an
  orphan beside the rerun that resumes it. Linux only; elsewhere a killed runner's runs finish on their own."""
  if sys.platform.startswith('linux'):
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Stopped(Exception):
  """SIGTERM reached the runner."""


def _raise_stopped(signum, frame):
  raise _Stopped


def run_state(run: Run) -> state_lib.RunState:
  evaluates = int(run.overrides.get('train.eval_batches', 1)) > 0
  return state_lib.run_state(run.workdir, run.tokens, evaluates)


def run_local(runs: Sequence[Run], parallel: int = 1, gpus_per_run: int = 0,
              echo: Callable[[str], None] = print) -> int:
  """Runs every unfinished run, `parallel` at a time (each with its own gpus_per_run GPUs when given), the output
  of each in <workdir>/train.log; a run another runner holds is skipped. Returns 0 when all finished (or are
  running elsewhere), 130 after Ctrl-C / SIGTERM (each run saved), 1 if any failed."""
  todo = [r for r in runs if run_state(r).state != 'finished']
  echo(f'{len(runs) - len(todo)} of {len(runs)} runs finished; running {len(todo)}, {parallel} at a time.')
  active: dict[int, tuple[subprocess.Popen, Run, attempt_lib.Attempt]] = {}  # slot -> (process, run, attempt)
  failed = []
  previous = signal.signal(signal.SIGTERM, _raise_stopped)
  try:
    while todo or active:
      for slot in [s for s in range(parallel) if s not in active]:
        started = _start_next(todo, slot, gpus_per_run, echo)
        if started:
          active[slot] = started
      time.sleep(0.2)
      for slot, (process, run, attempt) in list(active.items()):
        attempt.beat()
        if process.poll() is not None:
          del active[slot]
          _finish(run, attempt, process.returncode, echo, failed)
  except (KeyboardInterrupt, _Stopped):
    for process, run, attempt in active.values():
      process.send_signal(signal.SIGINT)  # each saves a checkpoint, then exits 130
    for process, run, attempt in active.values():
      _finish(run, attempt, process.wait(), echo, failed)
    echo('interrupted: every started run saved its state; rerun the same command to resume.')
    return 130
  finally:
    signal.signal(signal.SIGTERM, previous)
  return 1 if failed else 0


def _start_next(todo: list[Run], slot: int, gpus_per_run: int, echo):
  """(process, run, attempt) of the next run in todo that no other runner holds, or None when none is left."""
  while todo:
    run = todo.pop(0)
    resuming = run_state(run).state == 'partial'
    try:
      attempt = attempt_lib.Attempt(run.workdir)
    except attempt_lib.Locked as locked:
      echo(f'skip   {run.name}: running on {attempt_lib.where(locked.holder)}')
      continue
    echo(f'start  {run.name}' + (' (resuming)' if resuming else ''))
    return _start(run, attempt, slot, gpus_per_run), run, attempt
  return None


def _start(run: Run, attempt: attempt_lib.Attempt, slot: int, gpus_per_run: int) -> subprocess.Popen:
  env = dict(os.environ)
  if gpus_per_run:
    env['CUDA_VISIBLE_DEVICES'] = ','.join(str(slot * gpus_per_run + i) for i in range(gpus_per_run))
  log = open(os.path.join(run.workdir, state_lib.LOG_FILE), 'a', encoding='utf-8')
  # Its own session: a Ctrl-C at the terminal reaches the runner only, which then asks each run once to save.
  process = attempt.popen(run.command(sys.executable), stdout=log, stderr=subprocess.STDOUT, env=env,
                          start_new_session=True, preexec_fn=_stop_with_parent)
  log.close()
  return process


def _finish(run: Run, attempt: attempt_lib.Attempt, code: int, echo, failed: list) -> None:
  seconds = attempt.finish(code)
  result = run_state(run)
  echo(f'{result.state:<8} {run.name} in {seconds:.0f} s (exit {code})' +
       (f'; see {os.path.join(run.workdir, state_lib.LOG_FILE)}' if result.state == 'failed' else ''))
  if result.state == 'failed':
    failed.append(run)


def status_lines(runs: Sequence[Run]) -> list[str]:
  """One line per run: state, tokens trained of its budget, last training and validation loss."""
  lines = [f'{"run":<32} {"state":<8} {"tokens":>21} {"train":>7} {"eval":>7} {"time":>7}']
  fmt = lambda x: f'{x:7.4f}' if x is not None else f'{"-":>7}'  # noqa: E731
  counts: dict[str, int] = {}
  for run in runs:
    s = run_state(run)
    counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(f'{run.name:<32} {s.state:<8} {s.tokens:>10}/{run.tokens:<10} {fmt(s.train_loss)} '
                 f'{fmt(s.eval_loss)} {s.seconds:6.0f}s' + (f'  on {s.where}' if s.where else ''))
  lines.append(', '.join(f'{n} {state}' for state, n in sorted(counts.items())))
  return lines
