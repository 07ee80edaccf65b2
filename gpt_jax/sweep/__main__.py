"""Sweep command line.

    python -m gpt_jax.sweep list    --sweep=experiments/scaling_laws/sweep_cpu.py    the runs and their commands
    python -m gpt_jax.sweep run     --sweep=... [--parallel=2] [--gpus_per_run=1]    here; skips finished runs
    python -m gpt_jax.sweep status  --sweep=...                                      state and last losses
    python -m gpt_jax.sweep collect --sweep=... --output=runs.csv [--curves=curves.csv]
    python -m gpt_jax.sweep slurm   --sweep=... --output=sweep.sbatch [--nodes=1 --gpus_per_node=8]
    python -m gpt_jax.sweep tpu     --sweep=... --output=sweep_tpu.sh --tpu=NAME --zone=ZONE

Run from the repository root: the sweep's config and root paths are relative to it. --only=<text> keeps the runs
whose name contains the text. Every run's config is validated before anything is started or written.
"""

from __future__ import annotations

import os

from absl import flags

from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.sweep import collect, launch, spec

COMMANDS = ('list', 'run', 'status', 'collect', 'slurm', 'tpu')
flags.DEFINE_string('sweep', None, 'the sweep file: a Python file whose get_sweep() returns a gpt_jax.sweep.Sweep.')
flags.DEFINE_string('only', None, 'only the runs whose name contains this text.')
flags.DEFINE_integer('parallel', 1, 'run: runs at a time on this host.')
flags.DEFINE_integer('gpus_per_run', 0, 'run: GPUs given to each run (CUDA_VISIBLE_DEVICES); 0 leaves them all.')
flags.DEFINE_string('output', None, 'collect: the CSV table; slurm / tpu: the script to write.')
flags.DEFINE_string('curves', None, 'collect: also write every run\'s validation-loss curve to this CSV.')
flags.DEFINE_integer('nodes', 1, 'slurm: nodes per run.')
flags.DEFINE_integer('gpus_per_node', 8, 'slurm: GPUs per node.')
flags.DEFINE_string('time', '24:00:00', 'slurm: time limit of each array task.')
flags.DEFINE_integer('max_parallel', 0, 'slurm: array tasks running at once (0: no limit).')
flags.DEFINE_string('tpu', None, 'tpu: the TPU VM (pod slice) name.')
flags.DEFINE_string('zone', None, 'tpu: its zone.')
FLAGS = flags.FLAGS


def main(argv):
  command = argv[1] if len(argv) == 2 else None
  if command is None:
    raise ConfigError(f'name a command: python -m gpt_jax.sweep {{{"|".join(COMMANDS)}}} --sweep=<file>.py.')
  if not FLAGS.sweep:
    raise ConfigError('--sweep is required: the sweep file, e.g. --sweep=experiments/scaling_laws/sweep_cpu.py.')
  sweep = spec.load_sweep(FLAGS.sweep)
  runs = spec.expand(sweep)
  if FLAGS.only:
    runs = [r for r in runs if FLAGS.only in r.name]
    if not runs:
      raise ConfigError(f'--only={FLAGS.only!r} matches no run of sweep {sweep.name!r}: see python -m '
                        f'gpt_jax.sweep list --sweep={FLAGS.sweep}.')
  if command == 'list':
    for run in runs:
      print(f'{run.name}: {run.tokens} tokens, {run.params_total} params '
            f'({run.params_non_embedding} non-embedding)\n  {" ".join(run.command())}')
    return 0
  if command == 'run':
    if FLAGS.parallel < 1 or FLAGS.gpus_per_run < 0:
      raise ConfigError(f'--parallel={FLAGS.parallel} must be at least 1 and --gpus_per_run={FLAGS.gpus_per_run} '
                        f'at least 0.')
    return launch.run_local(runs, FLAGS.parallel, FLAGS.gpus_per_run)
  if command == 'status':
    print('\n'.join(launch.status_lines(runs)))
    return 0
  output = _output(command)
  if command == 'collect':
    collect.write_csv(output, [collect.row(r) for r in runs], collect.COLUMNS)
    if FLAGS.curves:
      collect.write_csv(FLAGS.curves, collect.curves(runs), collect.CURVE_COLUMNS)
    print(f'wrote {output} ({len(runs)} runs)' + (f' and {FLAGS.curves}' if FLAGS.curves else ''))
    return 0
  if command == 'slurm':
    text = launch.slurm_script(sweep, runs, nodes=FLAGS.nodes, gpus_per_node=FLAGS.gpus_per_node,
                               time_limit=FLAGS.time, max_parallel=FLAGS.max_parallel)
  else:
    if not FLAGS.tpu or not FLAGS.zone:
      raise ConfigError('tpu needs --tpu=<TPU VM name> and --zone=<zone>, e.g. --tpu=v5p-64 --zone=us-east5-a.')
    text = launch.tpu_script(sweep, runs, tpu=FLAGS.tpu, zone=FLAGS.zone)
  with open(output, 'w', encoding='utf-8') as f:
    f.write(text)
  os.chmod(output, 0o755)
  print(f'wrote {output} ({len(runs)} runs)')
  return 0


def _output(command: str) -> str:
  if not FLAGS.output:
    example = {'collect': 'runs.csv', 'slurm': 'sweep.sbatch', 'tpu': 'sweep_tpu.sh'}[command]
    raise ConfigError(f'{command} needs --output=<file>, e.g. --output={example}.')
  parent = os.path.dirname(os.path.abspath(FLAGS.output))
  if not os.path.isdir(parent):
    raise ConfigError(f'--output={FLAGS.output}: directory {parent} does not exist; create it or pick another path.')
  return FLAGS.output


if __name__ == '__main__':
  cli.run_main(main, commands=COMMANDS)
