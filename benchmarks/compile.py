"""Dry-run compile times and the GPT-3 ladder table (docs/dryrun.md), measured on this host.

    python -m benchmarks.compile                  # the 175B step for v5p:8x8x16: lowering and compile seconds
    python -m benchmarks.compile --table          # every GPT-3 row on a TPU slice and on H100 nodes
    python -m benchmarks.compile --table --sizes=125m,1.3b --platforms=tpu

Each table row fixes a target, a mesh split and a remat policy (LADDER below) and walks the microbatch count up
from 1 until the step fits; it prints a markdown row with the setting, memory per chip, fit, compile seconds and
the roofline MFU ceiling. `python -m gpt_jax.dryrun --search` searches mesh and remat too, at more compiles.
"""

from __future__ import annotations

from gpt_jax.dryrun import targets

targets.activate()  # before jax is imported  # pylint: disable=wrong-import-position

import math  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

from gpt_jax import config as gcfg  # noqa: E402
from gpt_jax.dryrun import analyse  # noqa: E402
from gpt_jax.dryrun import search  # noqa: E402
from gpt_jax.dryrun.targets import GIB  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool('table', False, 'compile every GPT-3 row and print the docs/dryrun.md table.')
flags.DEFINE_list('sizes', ['125m', '350m', '760m', '1.3b', '2.7b', '6.7b', '13b', '175b'], 'GPT-3 rows.')
flags.DEFINE_list('platforms', ['tpu', 'gpu'], 'which targets of each row: tpu, gpu.')

# size: {platform: (topology, (data, fsdp, tensor), remat)}: FSDP across the slice or all GPUs of all nodes (one
# flat axis), tensor parallelism where a batch shard would be less than a row, GPT-3's save_dots remat.
LADDER = {
    '125m': {'tpu': ('v5e:2x2', (1, 4, 1), 'save_dots'), 'gpu': ('h100:1x8', (1, 8, 1), 'save_dots')},
    '350m': {'tpu': ('v5e:2x2', (1, 4, 1), 'save_dots'), 'gpu': ('h100:1x8', (1, 8, 1), 'save_dots')},
    '760m': {'tpu': ('v5e:2x4', (1, 8, 1), 'save_dots'), 'gpu': ('h100:1x8', (1, 8, 1), 'save_dots')},
    '1.3b': {'tpu': ('v5e:4x4', (1, 16, 1), 'save_dots'), 'gpu': ('h100:1x8', (1, 8, 1), 'save_dots')},
    '2.7b': {'tpu': ('v6e:4x4', (1, 16, 1), 'save_dots'), 'gpu': ('h100:2x8', (1, 16, 1), 'save_dots')},
    '6.7b': {'tpu': ('v6e:8x8', (1, 64, 1), 'save_dots'), 'gpu': ('h100:4x8', (1, 32, 1), 'save_dots')},
    '13b': {'tpu': ('v5p:4x4x4', (1, 64, 1), 'save_dots'), 'gpu': ('h100:8x8', (1, 64, 1), 'save_dots')},
    '175b': {'tpu': ('v5p:8x8x16', (1, 256, 4), 'save_dots'), 'gpu': ('h100:64x8', (1, 512, 1), 'full')},
}
HEADER = ('| model | target | mesh (data x fsdp x tensor) | remat | microbatches | memory per chip | fits | '
          'compile s | MFU ceiling |\n|---|---|---|---|---|---|---|---|---|')


def fewest_microbatches(config, topology: str, mesh_split, remat: str) -> analyse.Report:
  """The first microbatch count (of those dividing a batch shard's rows) at which the step fits, else the last
  refusal. GPU targets use cuDNN attention."""
  target = targets.build(topology)
  if target.chip.platform == 'gpu':
    config = config.copy_and_resolve_references()
    config.model.attention_impl = 'cudnn'
  shards = math.prod(mesh_split[:2]) * config.mesh.dcn_data * config.mesh.dcn_fsdp
  rows = config.train.batch_tokens // config.model.context // shards
  report = None
  for microbatches in (m for m in range(1, rows + 1) if rows % m == 0):
    report = analyse.compile_step(search.setting(config, mesh_split, remat, microbatches), target)
    if report.fits:
      break
  return report


def table_row(size: str, report: analyse.Report) -> str:
  mesh = ' x '.join(str(v) for v in report.mesh.values())
  total = report.memory['total'] / GIB if report.memory else float('nan')
  mfu = f'{report.roofline["mfu_ceiling"]:.0%}' if report.roofline else '-'
  return (f'| {size} | {report.target} ({report.devices} x {report.chip}) | {mesh} | {report.remat} | '
          f'{report.microbatches} | {total:.1f} GiB of {report.hbm_bytes / GIB:.1f} | '
          f'{"yes" if report.fits else "no"} | {report.compile_seconds:.0f} | {mfu} |')


def main(argv):
  del argv
  if FLAGS.table:
    print(HEADER, flush=True)
    for size in FLAGS.sizes:
      config = gcfg.load_config_file(f'configs/gpt3.py:{size}')
      for platform in FLAGS.platforms:
        print(table_row(size, fewest_microbatches(config, *LADDER[size][platform])), flush=True)
    return
  config = gcfg.load_config_file('configs/gpt3.py:175b', {'mesh.fsdp': 256, 'mesh.tensor': 4,
                                                          'train.microbatches': 2})
  start = time.perf_counter()
  report = analyse.compile_step(config, targets.build('v5p:8x8x16'))
  print(f'GPT-3 175B train step for v5p:8x8x16 (mesh 1 x 256 x 4, save_dots, 2 microbatches): {report.verdict} '
        f'compile {report.compile_seconds:.1f} s, plan + lower + compile {time.perf_counter() - start:.1f} s.')


if __name__ == '__main__':
  app.run(main)
