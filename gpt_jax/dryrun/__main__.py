"""python -m gpt_jax.dryrun: compile a config's training step for a topology this host does not have.

    python -m gpt_jax.dryrun --config=configs/gpt3.py:175b --topology=v5p:8x8x16 \\
        --config.mesh.fsdp=256 --config.mesh.tensor=4 --config.train.microbatches=2 [--out=dryrun.json]
    python -m gpt_jax.dryrun --config=configs/gpt3.py:13b --topology=v5p:4x4x4 --search

Prints memory per chip against HBM, whether it fits, FLOPs against flops.py, collective bytes, the roofline bound
and compile time; --out also writes them as JSON (after the compile, so a refused run writes nothing).
"""

from __future__ import annotations

import json
import os

from gpt_jax.dryrun import targets

targets.activate()  # before jax is imported  # pylint: disable=wrong-import-position

from absl import flags  # noqa: E402

from gpt_jax import cli  # noqa: E402
from gpt_jax.config import ConfigError  # noqa: E402
from gpt_jax.dryrun import analyse  # noqa: E402
from gpt_jax.dryrun import search as search_lib  # noqa: E402
from gpt_jax.dryrun.targets import size  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('topology', None, 'what to compile for: a TPU slice <chip>:<shape> (v5e:2x2, v5p:4x4x4, '
                    'v6e:8x8) or a GPU cluster <chip>:<nodes>x<GPUs per node> (h100:1x8, h200:4x8).')
flags.DEFINE_integer('num_slices', 1, 'TPU slices joined over DCN (the mesh\'s dcn_data is set to this unless '
                     '--config.mesh.dcn_data / dcn_fsdp already multiply to it).')
flags.DEFINE_bool('search', False, 'find the cheapest setting that fits (mesh split, remat, microbatches) and rank '
                  'every setting compiled.')
flags.DEFINE_string('out', None, 'also write the report as JSON here (a new file, unless --overwrite).')
cli.define_overwrite_flag()


def describe(report: analyse.Report) -> str:
  """The report in a few lines for a person."""
  mesh = ' '.join(f'{axis}={size}' for axis, size in report.mesh.items())
  lines = [f'{report.target}: {report.devices} x {report.chip} in {report.slices} slice(s)/node(s); mesh {mesh}; '
           f'remat {report.remat}, {report.microbatches} microbatch(es), {report.attention} attention',
           f'{report.verdict}']
  if report.memory and 'argument' in report.memory:
    mem = {k: size(v) for k, v in report.memory.items()}
    lines.append(f'memory per chip: arguments {mem["argument"]}, outputs {mem["output"]} (aliased {mem["alias"]}), '
                 f'temporaries {mem["temp"]}, code {mem["code"]}, total {mem["total"]} of {size(report.hbm_bytes)}')
  if report.flops:
    f = report.flops
    counted = (f'XLA counts {f["compiled"]:.3g} (loop bodies once; the model counted so: '
               f'{f["model_as_counted"]:.3g}), {f["compiled_step"]:.3g} for the whole step: x{f["ratio"]:.2f} the '
               f'model' if f['compiled'] else
               f'XLA gives no cost analysis here; the HLO\'s matmuls and cuDNN attention are {f["compiled_step"]:.3g}: '
               f'x{f["ratio"]:.2f} the model')
    lines.append(f'FLOPs per chip per step: model {f["model"]:.3g} (flops.py); {counted}')
    traffic = ', '.join(f'{kind} {size(b)}' for kind, b in sorted(report.collectives.items())) or 'none'
    accessed = size(report.bytes_accessed) if report.bytes_accessed is not None else 'not given'
    lines.append(f'bytes accessed (loop bodies once) {accessed}; collectives per step: {traffic}')
    r = report.roofline
    lines.append(f'roofline: compute {r["compute_s"]:.3g} s, HBM >= {r["memory_s"]:.3g} s, collectives '
                 f'{r["collective_s"]:.3g} s -> step >= {r["step_s"]:.3g} s, MFU ceiling {r["mfu_ceiling"]:.0%}')
  lines.append(f'compile {report.compile_seconds:.1f} s')
  return '\n'.join(lines)


def main(argv):
  del argv
  config = cli.config_from_flags()
  if config is None:
    raise ConfigError('--config is required: e.g. --config=configs/gpt3.py:175b.')
  if not FLAGS.topology:
    raise ConfigError('--topology is required: e.g. --topology=v5p:4x4x4 or --topology=h100:1x8.')
  if FLAGS.out:
    cli.check_output('out', FLAGS.out)
  target = targets.build(FLAGS.topology, FLAGS.num_slices)
  if target.chip.platform == 'tpu':
    config = analyse.with_slices(config, FLAGS.num_slices)
  if FLAGS.search:
    ranking = search_lib.search(config, target, progress=lambda r: print(search_lib.row(r), flush=True))
    print(search_lib.summary(ranking))
    result = dict(best=ranking[0].to_json() if ranking and ranking[0].fits else None,
                  ranking=[r.to_json() for r in ranking])
  else:
    report = analyse.compile_step(config, target)
    print(describe(report))
    result = report.to_json()
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=1)
    print(f'wrote {FLAGS.out}')
  return 0


if __name__ == '__main__':
  cli.run_main(main)
