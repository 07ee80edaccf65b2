"""Compile the real training step for a target on abstract inputs and read what the compiler says about it: memory
per device against the chip's HBM, FLOPs and bytes against flops.py, collective traffic, and a roofline bound.

The step is loop.plan()'s, built on a mesh of compile-only devices exactly as training builds it (sharding.make_mesh,
the rules table, the optimizer, donation), lowered on sharded ShapeDtypeStructs: nothing is allocated. A program
the compiler refuses for lack of memory is a result (fits=False), not an error.
"""

from __future__ import annotations

import dataclasses
import re
import time

import jax
import jax.numpy as jnp

from gpt_jax import flops
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.dryrun import hlo
from gpt_jax.dryrun import targets
from gpt_jax.dryrun.targets import GIB, Target, size

# XLA:TPU's refusal, e.g. "... memory required for HLO temporaries (110.73G) exceeds available HBM (95.74G)".
_OOM_FIGURES = re.compile(r'\(([\d.]+)([KMGT])\).*?\(([\d.]+)([KMGT])\)')
_UNITS = {'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}


@dataclasses.dataclass
class Report:
  """What one compile says about one setting. Bytes and FLOPs are per device; times in seconds."""
  target: str
  chip: str
  devices: int
  slices: int
  mesh: dict
  remat: str
  microbatches: int
  attention: str  # 'cudnn' when the compiled step calls cuDNN's fused attention, else 'xla'
  fits: bool
  verdict: str  # one sentence
  hbm_bytes: float
  memory: dict | None = None  # argument, output, alias, temp, code, total
  flops: dict | None = None  # model (flops.py), model_as_counted, compiled (XLA), compiled_step, ratio, source
  bytes_accessed: float | None = None  # XLA's count (loop bodies once)
  collectives: dict | None = None  # kind -> bytes per step (loops unrolled)
  roofline: dict | None = None  # compute_s, memory_s, collective_s, step_s, mfu_ceiling
  compile_seconds: float = 0.0
  error: str | None = None  # the compiler's own sentence when it refused the program

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def lm_task(config) -> loop.Task:
  """Pretraining's Task without its data: the module, loss and what a row is worth are all a compile needs."""
  context = config.model.context
  return loop.Task(module=gm.GPTLM(config.model), loss_fn=losses.lm_loss_fn(config), train_stream=None,
                   tokens_per_row=context, flops_per_row=context * flops.flops_per_token(config.model))


def target_mesh(config, target: Target):
  """The training mesh on the target's devices; a mesh that does not match the topology is one sentence."""
  try:
    return gs.make_mesh(config.mesh, target.devices)
  except ConfigError as error:
    raise ConfigError(f'--topology={target.name} ({len(target.devices)} devices in {target.slices} '
                      f'{"slice" if target.chip.platform == "tpu" else "node"}(s)) does not fit the mesh: '
                      f'{str(error).rstrip(".")}; change --config.mesh.* or --num_slices.') from None
  except ValueError as error:  # jax's hybrid mesh: GPU devices carry one slice_index for every node
    raise ConfigError(f'--topology={target.name}: mesh.dcn_data / mesh.dcn_fsdp cannot split these devices '
                      f'({str(error).rstrip(".")}); span the nodes with mesh.data or mesh.fsdp instead, e.g. '
                      f'--config.mesh.fsdp=-1.') from None


def with_slices(config, num_slices: int):
  """config with the mesh's DCN axes spanning num_slices (dcn_data, unless the config already spans them)."""
  ms = config.mesh
  if ms.dcn_data * ms.dcn_fsdp == num_slices:
    return config
  if ms.dcn_data * ms.dcn_fsdp != 1:
    raise ConfigError(f'--num_slices={num_slices} does not match mesh.dcn_data x mesh.dcn_fsdp = '
                      f'{ms.dcn_data * ms.dcn_fsdp}: make them multiply to {num_slices}.')
  config = config.copy_and_resolve_references()
  config.mesh.dcn_data = num_slices
  return config


def compile_step(config, target: Target) -> Report:
  """Lowers and compiles plan(config).step_fn for target and reports on it."""
  mesh = target_mesh(config, target)
  task = lm_task(config)
  p = loop.plan(config, task, mesh)
  rows = config.train.batch_tokens // task.tokens_per_row
  batch = {key: jax.ShapeDtypeStruct((rows, config.model.context), jnp.int32, sharding=gs.batch_sharding(mesh))
           for key in ('inputs', 'targets')}
  m = config.model
  report = Report(target=target.name, chip=target.chip.kind, devices=len(target.devices), slices=target.slices,
                  mesh=dict(mesh.shape), remat=m.remat, microbatches=config.train.microbatches,
                  attention='cudnn' if m.attention_impl == 'cudnn' and target.chip.platform == 'gpu' else 'xla',
                  fits=False, verdict='', hbm_bytes=target.chip.hbm_bytes)
  if report.attention == 'cudnn' and not targets.cudnn_ready():
    raise ConfigError('model.attention_impl=\'cudnn\' for a GPU target needs cuDNN found when jax started: call '
                      'gpt_jax.dryrun.targets.activate() before importing jax (python -m gpt_jax.dryrun does).')
  start = time.perf_counter()
  try:
    with gs.activation_context(mesh):
      compiled = p.step_fn.trace(p.abstract_params, p.abstract_train, batch, {}).lower().compile()
  except Exception as error:  # noqa: BLE001 -- XLA reports running out of memory as a runtime error
    report.compile_seconds = time.perf_counter() - start
    return _refused(report, error)
  report.compile_seconds = time.perf_counter() - start
  model_flops = rows * task.flops_per_row / len(target.devices)
  _read_compiled(report, compiled, config, model_flops, target)
  return report


def _refused(report: Report, error: Exception) -> Report:
  """An out-of-memory refusal as a report (with XLA's figures when it gives them); anything else propagates."""
  message = str(error).strip().splitlines()[0]
  if 'RESOURCE_EXHAUSTED' not in message and 'out of memory' not in message.lower():
    raise error
  report.error = message
  figures = _OOM_FIGURES.search(message)
  if figures:
    needed = float(figures.group(1)) * _UNITS[figures.group(2)]
    report.memory = dict(total=needed)
    report.verdict = (f'does not fit: XLA needs {needed / GIB:.1f} GiB per chip for temporaries alone, more than '
                      f'the {report.hbm_bytes / GIB:.1f} GiB of HBM.')
  else:
    report.verdict = f'does not fit: {message}'
  return report


def _read_compiled(report: Report, compiled, config, model_flops: float, target: Target) -> None:
  stats = compiled.memory_analysis()
  memory = dict(argument=stats.argument_size_in_bytes, output=stats.output_size_in_bytes,
                alias=stats.alias_size_in_bytes, temp=stats.temp_size_in_bytes,
                code=stats.generated_code_size_in_bytes)
  memory['total'] = memory['argument'] + memory['output'] - memory['alias'] + memory['temp'] + memory['code']
  report.memory = memory
  report.fits = memory['total'] <= report.hbm_bytes
  share = memory['total'] / report.hbm_bytes
  report.verdict = (f'{"fits" if report.fits else "does not fit"}: {size(memory["total"])} per chip of '
                    f'{report.hbm_bytes / GIB:.1f} GiB HBM ({share:.0%}).')
  text = compiled.as_text() or ''
  cost = compiled.cost_analysis() or {}  # XLA gives none for a GPU compiled without one
  counted, whole = loop_scaled_flops(config, model_flops, cost.get('flops'))
  if whole is None:  # count the matmuls in the HLO instead, loops unrolled
    whole = hlo.matmul_flops(text) or None
  report.flops = dict(model=model_flops, model_as_counted=counted, compiled=cost.get('flops'), compiled_step=whole,
                      ratio=whole / model_flops if whole else None,
                      source='xla cost analysis' if cost.get('flops') else 'hlo matmuls')
  report.bytes_accessed = cost.get('bytes accessed')
  report.collectives = hlo.collective_bytes(text)
  report.attention = 'cudnn' if '__cudnn$fmha' in text else 'xla'  # what the executable calls, not the config
  report.roofline = roofline(report, target)


def loop_scaled_flops(config, model_flops: float, compiled: float | None) -> tuple[float, float | None]:
  """(model_flops as XLA's cost analysis counts them, XLA's count scaled to the whole step).

  XLA counts the body of a while loop once: one layer of a scanned stack (scan_layers) and one microbatch of the
  accumulation scan. The part outside the layer stack (the LM head) is not rematerialised, so it is taken at the
  model's figure and the rest of XLA's count, the layer(s) it saw, is scaled up to all layers and microbatches.
  """
  m = config.model
  microbatches = config.train.microbatches
  head = model_flops * 6 * m.padded_vocab_size * m.d_model / flops.flops_per_token(m) / microbatches
  layers_seen = 1 if m.scan_layers else m.n_layers
  counted = head + (model_flops / microbatches - head) * layers_seen / m.n_layers
  if not compiled:
    return counted, None
  return counted, (head + (compiled - head) * m.n_layers / layers_seen) * microbatches


def roofline(report: Report, target: Target) -> dict:
  """A lower bound on step time with every term overlapped, and the MFU it allows.

  compute: XLA's FLOPs scaled to the whole step (rematerialisation included), at least the model's, over the
  chip's peak; memory: XLA's bytes accessed (loop bodies counted once, so a lower bound) over HBM bandwidth;
  collectives: their result bytes with loops unrolled over the chip's ICI / NVLink bandwidth. Where XLA gives no
  cost analysis (GPU targets) the compute term counts the HLO's matmuls and cuDNN attention (hlo.matmul_flops)
  and the memory term is 0.
  """
  peak, _ = flops.device_peak_flops(target.devices[0])
  compute = max(report.flops['compiled_step'] or 0.0, report.flops['model']) / peak
  memory = (report.bytes_accessed or 0.0) / target.chip.hbm_bandwidth
  collective = sum(report.collectives.values()) / target.chip.link_bandwidth
  step = max(compute, memory, collective)
  return dict(peak_flops=peak, compute_s=compute, memory_s=memory, collective_s=collective, step_s=step,
              mfu_ceiling=report.flops['model'] / peak / step if step else None)
