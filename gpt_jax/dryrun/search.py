"""The cheapest setting that fits a topology: mesh split (data / fsdp / tensor), remat policy and microbatches.

Each mesh split is tried from the least recomputation and fewest microbatches upwards, stopping at the first
setting that fits (more remat or more microbatches only add work), and a split whose parameters and optimizer
state alone exceed HBM is skipped without compiling. Settings that compiled and fit are ranked by their roofline
step time; those that did not follow, so the ranking shows what was tried.
"""

from __future__ import annotations

import math
from typing import Callable

import jax

from gpt_jax import loop
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError, validate
from gpt_jax.dryrun import analyse
from gpt_jax.dryrun.targets import GIB, Target, size

REMATS = ('none', 'save_dots', 'full')  # least recomputation first
TENSOR = (1, 2, 4, 8)  # tensor-parallel sizes tried (within a slice or node)


def meshes(config, target: Target) -> list[tuple[int, int, int]]:
  """(data, fsdp, tensor) splits of one slice to try: every tensor size that divides the heads, each with all the
  rest FSDP and with all the rest data parallel, keeping those whose batch shards divide the global batch."""
  per_slice = len(target.devices) // (config.mesh.dcn_data * config.mesh.dcn_fsdp)
  rows = config.train.batch_tokens // config.model.context
  found = []
  for tensor in TENSOR:
    if per_slice % tensor or config.model.n_heads % tensor:
      continue
    for split in ((1, per_slice // tensor, tensor), (per_slice // tensor, 1, tensor)):
      shards = split[0] * split[1] * config.mesh.dcn_data * config.mesh.dcn_fsdp
      if rows % shards == 0 and split not in found:
        found.append(split)
  return found


def setting(config, mesh_split, remat: str, microbatches: int):
  """A copy of config with this mesh split, remat policy and microbatch count."""
  c = config.copy_and_resolve_references()
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh_split
  c.model.remat = remat
  c.train.microbatches = microbatches
  return validate(c)


def state_bytes(config, target: Target) -> float:
  """Bytes per device of the params and optimizer state (the step's arguments), from their shardings alone."""
  p = loop.plan(config, analyse.lm_task(config), analyse.target_mesh(config, target))
  leaves = jax.tree.leaves((p.abstract_params, p.abstract_train))
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in leaves)


def _unfit_state(config, mesh_split, target: Target) -> analyse.Report | None:
  """A not-fitting report, without a compile, when params and optimizer state alone exceed HBM; else None."""
  c = setting(config, mesh_split, REMATS[0], 1)
  needed = state_bytes(c, target)
  if needed <= target.chip.hbm_bytes:
    return None
  mesh = dict(zip(gs.MESH_AXES, mesh_split))
  return analyse.Report(target=target.name, chip=target.chip.kind, devices=len(target.devices),
                        slices=target.slices, mesh=mesh, remat='any', microbatches=0, attention='-', fits=False,
                        verdict=f'does not fit: params and optimizer state alone are {needed / GIB:.1f} GiB per chip '
                                f'of {target.chip.hbm_bytes / GIB:.1f} GiB.',
                        hbm_bytes=target.chip.hbm_bytes, memory=dict(total=needed))


def _walk(config, mesh_split, target, progress) -> list[analyse.Report]:
  """Compiles one split's settings, least work first, until one fits."""
  rows_per_shard = config.train.batch_tokens // config.model.context // math.prod(mesh_split[:2])
  rows_per_shard //= config.mesh.dcn_data * config.mesh.dcn_fsdp
  counts = [m for m in range(1, rows_per_shard + 1) if rows_per_shard % m == 0]
  tried = []
  for remat in REMATS:
    for microbatches in counts:
      report = analyse.compile_step(setting(config, mesh_split, remat, microbatches), target)
      progress(report)
      tried.append(report)
      if report.fits:
        break
    if tried[-1].fits:
      if tried[-1].microbatches == 1:
        break  # more remat cannot beat a fit without accumulation
      counts = [m for m in counts if m < tried[-1].microbatches]  # more remat pays only with fewer microbatches
  return tried


def search(config, target: Target, progress: Callable[[analyse.Report], None] = lambda r: None
           ) -> list[analyse.Report]:
  """Every setting tried, best first: fitting ones by roofline step time, then the rest by memory needed."""
  splits = meshes(config, target)
  if not splits:
    raise ConfigError(f'no (data, fsdp, tensor) split of {target.name} divides the batch of '
                      f'{config.train.batch_tokens // config.model.context} sequences and the '
                      f'{config.model.n_heads} heads: change train.batch_tokens or the topology.')
  tried = []
  for split in splits:
    skipped = _unfit_state(config, split, target)
    if skipped is not None:
      progress(skipped)
      tried.append(skipped)
    else:
      tried.extend(_walk(config, split, target, progress))

  def key(r):
    return (0, r.roofline['step_s']) if r.fits else (1, (r.memory or {}).get('total', math.inf))
  return sorted(tried, key=key)


def row(report: analyse.Report) -> str:
  """One line per setting: mesh, remat, microbatches, memory, fit, roofline and compile time."""
  mesh = 'x'.join(str(s) for s in report.mesh.values())
  total = (report.memory or {}).get('total')
  memory = f'{size(total):>11}' if total is not None else f'{"?":>11}'
  step = f'step >= {report.roofline["step_s"]:.3g} s, MFU <= {report.roofline["mfu_ceiling"]:.0%}' \
      if report.roofline else ''
  return (f'mesh {mesh:>12} remat {report.remat:>9} mb {report.microbatches:>3}  {memory}  '
          f'{"fits" if report.fits else "OOM ":4}  {step:32}  compile {report.compile_seconds:5.1f} s')


def summary(ranking: list[analyse.Report]) -> str:
  """The ranking, best first, with the chosen setting named in one sentence."""
  lines = ['ranking (data x fsdp x tensor):'] + [row(r) for r in ranking]
  best = ranking[0] if ranking else None
  if best is None or not best.fits:
    lines.append('no setting tried fits: use more chips, a smaller batch per chip or a smaller model.')
  else:
    mesh = ', '.join(f'{k}={v}' for k, v in best.mesh.items())
    lines.append(f'best: mesh {mesh}, remat {best.remat}, {best.microbatches} microbatch(es): '
                 f'{size(best.memory["total"])} per chip, step >= {best.roofline["step_s"]:.3g} s, '
                 f'MFU ceiling {best.roofline["mfu_ceiling"]:.0%}.')
  return '\n'.join(lines)
