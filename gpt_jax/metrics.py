"""Metric writers: stdout (with a progress bar and ETA), JSONL and TensorBoard in the workdir, and wandb.

Only process 0 writes; the other processes get a writer that does nothing, so callers never check.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax


def _format(value) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites a metrics.jsonl without its records of steps after `step` (atomically: a copy is renamed over it)."""
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  def keep(line: str) -> bool:
    try:
      return json.loads(line).get('step', 0) <= step
    except ValueError:  # a line torn by a kill during the write
      return False
  kept = [line for line in lines if keep(line)]
  if len(kept) != len(lines):
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.writelines(kept)
    os.replace(path + '.tmp', path)


class MetricWriter:
  """Writes scalar dicts per step to stdout, <workdir>/metrics.jsonl, TensorBoard (<workdir>/tb) and wandb."""

  def __init__(self, workdir: str, total_tokens: int, config=None, use_wandb: bool = False,
               resume_step: int = 0):
    """resume_step: the step training continues from. Records of later steps, written by a run that was killed
    after its last checkpoint and are about to be written again, are dropped from metrics.jsonl and hidden in
    TensorBoard (purge_step), so the record of a resumed run reads as one uninterrupted run."""
    self.active = jax.process_index() == 0
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, 'metrics.jsonl')
    _drop_records_after(path, resume_step)
    self.jsonl = open(path, 'a', buffering=1)
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(os.path.join(workdir, 'tb'), purge_step=resume_step + 1)
    self.total_tokens = total_tokens
    self.start = time.time()
    self.start_tokens = None
    self.wandb = None
    if use_wandb:
      try:
        import wandb
      except ImportError:
        print('train.wandb is on but wandb is not installed (pip install wandb); logging without it.',
              file=sys.stderr)
      else:
        self.wandb = wandb.init(project='gpt_jax', dir=workdir, config=config.to_dict() if config else None)

  def write(self, step: int, metrics: dict, tokens: int | None = None, prefix: str = 'train') -> None:
    if not self.active:
      return
    record = {'step': step, **({'tokens': tokens} if tokens is not None else {}),
              **{f'{prefix}/{k}': v for k, v in metrics.items()}}
    self.jsonl.write(json.dumps(record) + '\n')
    for key, value in metrics.items():
      self.tb.add_scalar(f'{prefix}/{key}', value, step)
    if self.wandb is not None:
      self.wandb.log(record, step=step)
    line = ' '.join(f'{k}={_format(v)}' for k, v in metrics.items())
    print(f'[{prefix}] step {step} {self._progress(tokens)}{line}', flush=True)

  def _progress(self, tokens) -> str:
    if tokens is None or not self.total_tokens:
      return ''
    if self.start_tokens is None:
      self.start_tokens, self.start = tokens, time.time()
    frac = min(tokens / self.total_tokens, 1.0)
    bar = '#' * int(20 * frac) + '.' * (20 - int(20 * frac))
    rate = (tokens - self.start_tokens) / max(time.time() - self.start, 1e-9)
    eta = max(self.total_tokens - tokens, 0) / rate if rate > 0 else float('nan')
    eta_text = time.strftime('%H:%M:%S', time.gmtime(eta)) if eta == eta else '--:--:--'
    return f'[{bar}] {100 * frac:5.1f}% eta {eta_text} | '

  def text(self, step: int, tag: str, text: str) -> None:
    if self.active:
      self.tb.add_text(tag, text, step)
      print(f'[{tag}] step {step}:\n{text}', flush=True)

  def close(self) -> None:
    if self.active:
      self.jsonl.close()
      self.tb.close()
      if self.wandb is not None:
        self.wandb.finish()
