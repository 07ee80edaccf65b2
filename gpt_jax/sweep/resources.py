"""What each run of a sweep needs on a cluster: SLURM nodes, GPUs, CPUs and time, or a TPU slice, and the mesh (and
memory settings) it trains with there. A sweep file gives them per shape through Sweep.resources, so the 125M and
175B rows of a ladder get different allocations; `sweep slurm|tpu --check` compiles each distinct setting for its
target through the dry-run before anything is written, and refuses a run that does not fit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

from gpt_jax.config import ConfigError

GPU_CHIPS = ('h100', 'h200')  # the dry-run's GPU targets
_TIME = re.compile(r'^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$')  # SLURM's [days-]hours[:minutes[:seconds]]


@dataclasses.dataclass(frozen=True)
class Resources:
  """One run's allocation. overrides are --config.<key> settings for this target (mesh.fsdp, mesh.tensor,
  model.remat, train.microbatches, ...), added to the run's command."""
  nodes: int = 1
  gpus_per_node: int = 8
  gpu: str = 'h100'  # the chip the dry-run checks against: h100 or h200
  cpus_per_task: int = 32
  time: str = '24:00:00'  # SLURM time limit, [days-]hours:minutes:seconds
  tpu: str | None = None  # the TPU slice for `sweep tpu --check`, a dry-run topology such as 'v5p:4x4x4'
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def gpu_topology(self) -> str:
    return f'{self.gpu}:{self.nodes}x{self.gpus_per_node}'

  def slurm_options(self) -> list[str]:
    return [f'--nodes={self.nodes}', f'--gpus-per-node={self.gpus_per_node}', f'--cpus-per-task={self.cpus_per_task}',
            f'--time={self.time}']


def check(resources: Resources, where: str) -> Resources:
  """resources, or a ConfigError of one sentence naming `where` and the field."""
  if not isinstance(resources, Resources):
    raise ConfigError(f'{where}: Sweep.resources must return a gpt_jax.sweep.Resources, not '
                      f'{type(resources).__name__}.')
  for name in ('nodes', 'gpus_per_node', 'cpus_per_task'):
    value = getattr(resources, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ConfigError(f'{where}: {name}={value!r} must be a whole number of at least 1.')
  if resources.gpus_per_node > 8 or resources.gpu not in GPU_CHIPS:
    raise ConfigError(f'{where}: gpu={resources.gpu!r} with gpus_per_node={resources.gpus_per_node}: the GPU must '
                      f'be one of {", ".join(GPU_CHIPS)}, at most 8 per node.')
  check_time(resources.time, f'{where}: time')
  if resources.tpu is not None and not re.fullmatch(r'v\w+:\d+(x\d+)+', str(resources.tpu)):
    raise ConfigError(f'{where}: tpu={resources.tpu!r} must be a slice topology such as \'v5p:4x4x4\'.')
  return resources


def check_time(value: str, what: str) -> str:
  match = _TIME.match(str(value))
  if not match or (match.group(3) and int(match.group(3)) > 59) or (match.group(4) and int(match.group(4)) > 59) \
      or not any(int(g) for g in match.groups() if g):
    raise ConfigError(f'{what}={value!r} is not a SLURM time limit: give [days-]hours:minutes:seconds, e.g. '
                      f'24:00:00 or 2-00:00:00.')
  return value


# ---------------------------------------------------------------------------------------------------------------
# --check: compile each distinct setting for its target.

def check_fit(runs: Sequence, topology_of: Callable, extra_flags: Sequence[str], echo=print) -> None:
  """Compiles every distinct setting (config and overrides but the budget, seed and schedule, on its topology) of
  runs through `python -m gpt_jax.dryrun` with the script's extra flags; raises a ConfigError naming the first run
  that does not fit, with its memory per chip and what would fit."""
  compiled: dict[tuple, dict] = {}
  for run in runs:
    topology = topology_of(run)
    setting = {k: v for k, v in run.overrides.items() if not k.startswith(_PER_RUN)}
    key = (run.config, json.dumps(setting, sort_keys=True, default=str), topology)
    if key not in compiled:
      echo(f'check  {run.name} on {topology} (dry-run compile) ...')
      compiled[key] = _dryrun(run, topology, extra_flags)
    report = compiled[key]
    if not report['fits']:
      raise ConfigError(f'run {run.name} does not fit {topology}: {_shortfall(report, topology)}')
    echo(f'fits   {run.name} on {topology}: {report["memory"]["total"] / 2**30:.2f} of '
         f'{report["hbm_bytes"] / 2**30:.1f} GiB per chip')


# Overrides that change no compiled program: the budget, seed, evaluation cadence and learning-rate schedule.
_PER_RUN = ('train.total_tokens', 'train.seed', 'train.eval_every', 'optim.peak_lr', 'optim.warmup_tokens',
            'optim.decay_tokens')


def _dryrun(run, topology: str, extra_flags: Sequence[str]) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'report.json')
    train = run.command(sys.executable)  # python -m gpt_jax.train --config=... --workdir=... overrides...
    command = [sys.executable, '-m', 'gpt_jax.dryrun', train[3], *train[5:], *extra_flags, f'--topology={topology}',
               f'--out={out}']
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not os.path.isfile(out):
      error = (result.stderr.strip().splitlines() or ['no output'])[-1].removeprefix('error: ')
      raise ConfigError(f'run {run.name}: the dry-run for {topology} failed: {error}')
    with open(out, encoding='utf-8') as f:
      return json.load(f)


def _shortfall(report: dict, topology: str) -> str:
  """How far it is from fitting and roughly what would: parameters, optimizer state and (with FSDP) most
  activations shard over the chips, so the memory per chip falls about as the chips grow."""
  total, hbm = (report.get('memory') or {}).get('total'), report['hbm_bytes']
  search = f'python -m gpt_jax.dryrun --topology={topology} --search finds remat and microbatches that fit'
  if total is None:
    return f'{report["verdict"].rstrip(".")}; {search}.'
  chip, shape = topology.split(':')
  chips = math.ceil(report['devices'] * total / hbm)
  if chip in GPU_CHIPS:
    per_node = int(shape.split('x')[1])
    more = f'about {math.ceil(chips / per_node)} nodes of {per_node} (Resources(nodes=...))'
  else:
    more = f'a slice of about {chips} chips (Resources(tpu=...))'
  return (f'it needs {total / 2**30:.1f} GiB per chip of {hbm / 2**30:.1f}: give it {more} with mesh.fsdp=-1 '
          f'sharding over all of them, or {search}.')
