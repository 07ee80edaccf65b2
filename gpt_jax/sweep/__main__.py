"""Sweep command line.

    python -m gpt_jax.sweep list    --sweep=experiments/scaling_laws/sweep_cpu.py    the runs and their commands
    python -m gpt_jax.sweep run     --sweep=... [--parallel=2] [--gpus_per_run=1]    here; skips finished runs
    python -m gpt_jax.sweep status  --sweep=...                                      state and last losses
    python -m gpt_jax.sweep collect --sweep=... --output=runs.csv [--curves=curves.csv] [--overwrite]
    python -m gpt_jax.sweep slurm   --sweep=... --output=sweep.sh [--check] [--nodes=1 --gpus_per_node=8 ...]
    python -m gpt_jax.sweep tpu     --sweep=... --output=sweep_tpu.sh --tpu=NAME --zone=ZONE [--check]

Run from the repository root: the sweep's config and root paths are relative to it (the scripts slurm and tpu
write use absolute paths). --only=<text> keeps the runs whose name contains the text. Every run's config, and every
flag, is validated before anything is started or written; a flag the command does not use is refused.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.sweep import cluster, collect, launch, resources, spec

COMMANDS = ('list', 'run', 'status', 'collect', 'slurm', 'tpu')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
flags.DEFINE_string('sweep', None, 'the sweep file: a Python file whose get_sweep() returns a gpt_jax.sweep.Sweep.')
flags.DEFINE_string('only', None, 'only the runs whose name contains this text.')
flags.DEFINE_integer('parallel', 1, 'run: runs at a time on this host.')
flags.DEFINE_integer('gpus_per_run', 0, 'run: GPUs given to each run (CUDA_VISIBLE_DEVICES); 0 leaves them all.')
flags.DEFINE_string('output', None, 'collect: the CSV table; slurm / tpu: the script to write.')
cli.define_overwrite_flag()
flags.DEFINE_string('curves', None, 'collect: also write every run\'s validation-loss curve to this CSV.')
flags.DEFINE_bool('check', False, 'slurm / tpu: first compile each distinct setting for its target with the '
                  'dry-run (python -m gpt_jax.dryrun) and refuse a run that does not fit.')
flags.DEFINE_integer('nodes', 1, 'slurm: nodes per run, for a sweep that gives no Sweep.resources.')
flags.DEFINE_integer('gpus_per_node', 8, 'slurm: GPUs per node, for a sweep that gives no Sweep.resources.')
flags.DEFINE_enum('gpu', 'h100', list(resources.GPU_CHIPS), 'slurm: the GPU --check compiles for, for a sweep '
                  'that gives no Sweep.resources.')
flags.DEFINE_integer('cpus_per_task', 32, 'slurm: CPUs per task, for a sweep that gives no Sweep.resources.')
flags.DEFINE_string('time', '24:00:00', 'slurm: time limit of each run, for a sweep that gives no Sweep.resources.')
flags.DEFINE_integer('max_parallel', 0, 'slurm: array tasks running at once per array (0: no limit).')
flags.DEFINE_bool('allow_cpu', False, 'slurm: let the job run with a CPU-only .venv (tests, CPU clusters).')
flags.DEFINE_string('tpu', None, 'tpu: the TPU VM (pod slice) name.')
flags.DEFINE_string('zone', None, 'tpu: its zone.')
flags.DEFINE_string('topology', None, 'tpu --check: the slice, e.g. v5p:4x4x4, for runs whose Resources give none.')
FLAGS = flags.FLAGS

_COMMON = {'sweep', 'only'}
_DEFAULT_RESOURCES = ('nodes', 'gpus_per_node', 'gpu', 'cpus_per_task', 'time')
USES = {'list': _COMMON, 'status': _COMMON, 'run': _COMMON | {'parallel', 'gpus_per_run'},
        'collect': _COMMON | {'output', 'overwrite', 'curves'},
        'slurm': _COMMON | {'output', 'overwrite', 'check', 'max_parallel', 'allow_cpu', *_DEFAULT_RESOURCES},
        'tpu': _COMMON | {'output', 'overwrite', 'check', 'tpu', 'zone', 'topology'}}


def main(argv):
  command = argv[1] if len(argv) == 2 else None
  if command not in COMMANDS:
    given = f'unknown command {command!r}' if command else 'no command'
    raise ConfigError(f'{given}: python -m gpt_jax.sweep {{{"|".join(COMMANDS)}}} --sweep=<file>.py.')
  _check_flags(command)
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
    return launch.run_local(runs, FLAGS.parallel, FLAGS.gpus_per_run)
  if command == 'status':
    print('\n'.join(launch.status_lines(runs)))
    return 0
  if command == 'collect':
    collect.write_csv(FLAGS.output, [collect.row(r) for r in runs], collect.COLUMNS)
    if FLAGS.curves:
      collect.write_csv(FLAGS.curves, collect.curves(runs), collect.CURVE_COLUMNS)
    print(f'wrote {FLAGS.output} ({len(runs)} runs)' + (f' and {FLAGS.curves}' if FLAGS.curves else ''))
    return 0
  return _write_script(command, sweep, runs)


def _write_script(command: str, sweep, runs) -> int:
  if command == 'slurm':
    given = [name for name in _DEFAULT_RESOURCES if FLAGS[name].present]
    if given and sweep.resources:
      raise ConfigError(f'--{given[0]}: sweep {sweep.name!r} gives each run its own Resources (Sweep.resources); '
                        f'change them in {FLAGS.sweep} instead.')
    default = resources.Resources(nodes=FLAGS.nodes, gpus_per_node=FLAGS.gpus_per_node, gpu=FLAGS.gpu,
                                  cpus_per_task=FLAGS.cpus_per_task, time=FLAGS.time)
    if FLAGS.check:
      resources.check_fit(runs, lambda r: (r.resources or default).gpu_topology, cluster.GPU_FLAGS)
    text = cluster.slurm_script(sweep, runs, default, repo=REPO, max_parallel=FLAGS.max_parallel,
                                allow_cpu=FLAGS.allow_cpu)
  else:
    if FLAGS.check:
      resources.check_fit(runs, _tpu_topology, cluster.TPU_FLAGS)
    text = cluster.tpu_script(sweep, runs, tpu=FLAGS.tpu, zone=FLAGS.zone, repo=REPO)
  for warning in cluster.warnings(sweep, runs, repo=REPO, tpu=command == 'tpu'):
    print(f'warning: {warning}', file=sys.stderr)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, 'w', encoding='utf-8') as f:
    f.write(text)
  os.chmod(FLAGS.output, 0o755)
  submit = f'bash {FLAGS.output}' if command == 'slurm' else FLAGS.output
  print(f'wrote {FLAGS.output} ({len(runs)} runs); start them with: {submit}')
  return 0


def _tpu_topology(run) -> str:
  topology = (run.resources and run.resources.tpu) or FLAGS.topology
  if not topology:
    raise ConfigError(f'tpu --check needs the slice of run {run.name}: give --topology=<e.g. v5p:4x4x4> or '
                      f'Resources(tpu=...) in the sweep file.')
  return topology


def _check_flags(command: str) -> None:
  """Refuses, in one sentence, a flag this command does not use and a value no cluster accepts."""
  unused = [name for name in sorted(set().union(*USES.values()))
            if FLAGS[name].present and name not in USES[command]]
  if unused:
    users = [c for c in COMMANDS if unused[0] in USES[c]]
    raise ConfigError(f'--{unused[0]} is not used by {command} (only by {", ".join(users)}): drop it.')
  if not FLAGS.sweep:
    raise ConfigError('--sweep is required: the sweep file, e.g. --sweep=experiments/scaling_laws/sweep_cpu.py.')
  for name, least in (('parallel', 1), ('gpus_per_run', 0), ('nodes', 1), ('gpus_per_node', 1),
                      ('cpus_per_task', 1), ('max_parallel', 0)):
    if FLAGS[name].value < least:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be at least {least}.')
  if FLAGS.gpus_per_node > 8:
    raise ConfigError(f'--gpus_per_node={FLAGS.gpus_per_node}: a node has at most 8 GPUs.')
  resources.check_time(FLAGS.time, '--time')
  if command == 'tpu' and (not FLAGS.tpu or not FLAGS.zone):
    raise ConfigError('tpu needs --tpu=<TPU VM name> and --zone=<zone>, e.g. --tpu=v5p-64 --zone=us-east5-a.')
  if command in ('collect', 'slurm', 'tpu'):
    _check_output(command)


def _check_output(command: str) -> None:
  """Every file the command writes, before anything is done: new, unless --overwrite."""
  if not FLAGS.output:
    example = {'collect': 'runs.csv', 'slurm': 'sweep.sh', 'tpu': 'sweep_tpu.sh'}[command]
    raise ConfigError(f'{command} needs --output=<file>, e.g. --output={example}.')
  cli.check_output('output', FLAGS.output)
  if FLAGS.curves:
    cli.check_output('curves', FLAGS.curves)


def _flags_parser(argv):
  """A bad or unknown flag (--config and the training commands' multi-host flags are not this command's) is one
  sentence and exit status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    print(f'error: {str(error).strip().splitlines()[0]}; see python -m gpt_jax.sweep --help.', file=sys.stderr)
    sys.exit(2)


def _guarded(argv):
  """Not cli.run_main: the sweep command takes no --config and starts no jax.distributed; `run` handles Ctrl-C."""
  try:
    return main(argv)
  except ConfigError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  app.run(_guarded, flags_parser=_flags_parser)
