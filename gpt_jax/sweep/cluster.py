"""The cluster scripts of a sweep: SLURM job arrays (one per allocation, submitted by the script itself) and runs one
after another on a TPU pod slice, plus the warnings worth reading before submitting them.

Both run `python -m gpt_jax.train` with each run's workdir and overrides, as the scripts in launch/ do, with
absolute paths, so they work from any directory, and every SLURM task runs as one attempt of its run
(gpt_jax.sweep.attempt: the run's lock, its time recorded), so resubmitting resumes unfinished runs and never
starts a second trainer on a run already training.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from typing import Sequence

from gpt_jax import config as gcfg
from gpt_jax.sweep.resources import Resources
from gpt_jax.sweep.spec import Run, Sweep

GPU_FLAGS = ('--config.model.dtype=bfloat16', '--config.model.attention_impl=cudnn')
TPU_FLAGS = ('--config.model.dtype=bfloat16',)
_LOCAL_FILESYSTEMS = {'ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'tmpfs', 'overlay', 'zfs', 'f2fs', 'vfat', 'ramfs'}


def job_name(sweep: Sweep) -> str:
  """The sweep's name as a SLURM job name: letters, digits, '.', '_' and '-' only."""
  return re.sub(r'[^A-Za-z0-9._-]+', '_', sweep.name).strip('_') or 'sweep'


def slurm_script(sweep: Sweep, runs: Sequence[Run], default: Resources, *, repo: str, max_parallel: int = 0,
                 allow_cpu: bool = False) -> str:
  """A bash script that, run by hand, submits one SLURM job array per distinct allocation of runs (each run's
  Resources, else `default`), and, run by SLURM as array task i, trains run i: one process per node driving its
  GPUs, bf16 and cuDNN attention, as launch/slurm_gpu.sbatch."""
  repo = os.path.abspath(repo)
  python = os.path.join(repo, '.venv', 'bin', 'python')
  logs = os.path.join(os.path.abspath(os.path.join(repo, sweep.root)), 'slurm')
  groups: dict[tuple[str, ...], list[int]] = {}  # sbatch options -> the runs' array indices
  for i, run in enumerate(runs):
    groups.setdefault(tuple((run.resources or default).slurm_options()), []).append(i)
  limit = f'%{max_parallel}' if max_parallel else ''
  submits = '\n'.join(
      f'  sbatch --array={",".join(map(str, indices))}{limit} {" ".join(options)} '
      f'--output={shlex.quote(os.path.join(logs, "%x-%A_%a.out"))} "$script"' for options, indices in groups.items())
  cases = '\n'.join(
      f'  {i}) nodes={(run.resources or default).nodes}; workdir={shlex.quote(_absolute(run.workdir, repo))}\n'
      f'     command=({shlex.join(_slurm_command(run, repo, python))}) ;;' for i, run in enumerate(runs))
  return f'''#!/usr/bin/env bash
# Sweep {sweep.name}: {len(runs)} runs as SLURM job arrays, one per allocation (python -m gpt_jax.sweep slurm wrote
# this file). Submit with `bash <this file>`: it runs sbatch once per allocation. Submitting again resumes unfinished
# runs from their checkpoints; finished runs end at once and a run another runner holds is skipped.
#SBATCH --job-name={job_name(sweep)}
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --signal=TERM@120
#SBATCH --requeue
set -euo pipefail
repo={shlex.quote(repo)}
python={shlex.quote(python)}
allow_cpu={int(allow_cpu)}
check_venv() {{
  # A CPU build of jax would hold whole GPU nodes while it trains on their host CPUs.
  if [ "$allow_cpu" != 1 ] && ! "$python" -c 'import importlib.metadata as m; m.version("jax-cuda12-plugin")' \\
      2>/dev/null; then
    echo "error: $repo/.venv has no CUDA build of jax: run 'make setup-gpu' on a GPU node first (or write this" \\
      "script with --allow_cpu)." >&2
    exit 2
  fi
}}
if [ -z "${{SLURM_ARRAY_TASK_ID:-}}" ]; then
  check_venv
  mkdir -p {shlex.quote(logs)}
  script=$(readlink -f "${{BASH_SOURCE[0]}}")
{submits}
  exit 0
fi
case "$SLURM_ARRAY_TASK_ID" in
{cases}
  *) echo "error: no run for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;
esac
if [ "$SLURM_JOB_NUM_NODES" != "$nodes" ]; then
  echo "error: run $SLURM_ARRAY_TASK_ID needs $nodes node(s), the job has $SLURM_JOB_NUM_NODES: submit with bash." >&2
  exit 2
fi
check_venv
cd "$repo"
export GPT_JAX_DISTRIBUTED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${{XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}}
exec "$python" -m gpt_jax.sweep.attempt "$workdir" srun --kill-on-bad-exit=1 "${{command[@]}}"
'''


def _slurm_command(run: Run, repo: str, python: str) -> list[str]:
  return _absolute_run(run, repo).command(python) + list(GPU_FLAGS)


def tpu_script(sweep: Sweep, runs: Sequence[Run], *, tpu: str, zone: str, repo: str) -> str:
  """The runs one after another on a TPU pod slice through launch/tpu_pod.sh (the same command on every worker);
  the workdirs must be on storage every worker sees. Rerunning the script resumes where it stopped."""
  repo = os.path.abspath(repo)
  launcher = os.path.join(repo, 'launch', 'tpu_pod.sh')
  lines = [shlex.join([launcher, tpu, zone, r.config, r.workdir, *r.command()[5:]]) for r in runs]
  return (f'#!/usr/bin/env bash\n# Sweep {sweep.name}: {len(runs)} runs on TPU {tpu} ({zone}), one after another '
          f'(python -m gpt_jax.sweep tpu wrote this file).\nset -euo pipefail\ncd {shlex.quote(repo)}\n'
          + '\n'.join(lines) + '\n')


def _absolute(path: str, repo: str) -> str:
  return path if '://' in path else os.path.abspath(os.path.join(repo, path))


def _absolute_run(run: Run, repo: str) -> Run:
  file, sep, arg = run.config.partition(':')
  return dataclasses.replace(run, workdir=_absolute(run.workdir, repo), config=_absolute(file, repo) + sep + arg)


# ---------------------------------------------------------------------------------------------------------------
# Warnings.

def warnings(sweep: Sweep, runs: Sequence[Run], *, repo: str, tpu: bool) -> list[str]:
  """Sentences about what would waste an allocation without being wrong: a workdir root other hosts may not
  see, and runs that train on the embedded corpus or the byte tokenizer."""
  out = []
  root = sweep.root
  if tpu and '://' not in root and not os.path.isabs(root):
    out.append(f'the sweep root {root!r} is relative: each TPU worker would write its own copy under its home '
               f'directory; give an absolute path on storage every worker mounts, or a gs:// bucket.')
  elif '://' not in root:
    kind = filesystem_type(_absolute(root, repo))
    if kind in _LOCAL_FILESYSTEMS:
      out.append(f'the sweep root {_absolute(root, repo)} is on a local {kind} filesystem: every host of a '
                 f'multi-host run (and every node the jobs land on) must see the same workdirs; put the root on '
                 f'shared storage.')
  configs = [gcfg.load_config_file(r.config, r.overrides) for r in runs]
  stdlib = [r.name for r, c in zip(runs, configs) if c.data.source == 'stdlib']
  byte = [r.name for r, c in zip(runs, configs) if c.data.tokenizer == 'byte']
  if stdlib:
    out.append(f'{len(stdlib)} run(s) (e.g. {stdlib[0]}) train on the embedded stdlib corpus, a few MB of Python: '
               f'set data.source in Sweep.overrides to the corpus you mean.')
  if byte:
    out.append(f'{len(byte)} run(s) (e.g. {byte[0]}) use the byte tokenizer: set data.tokenizer (and '
               f'model.vocab_size) in Sweep.overrides unless bytes are what you mean.')
  return out


def filesystem_type(path: str) -> str | None:
  """The type of the filesystem holding path (its nearest existing parent), from /proc/mounts; None off Linux."""
  try:
    with open('/proc/mounts', encoding='utf-8') as f:
      mounts = [line.split()[1:3] for line in f]
  except OSError:
    return None
  path = os.path.realpath(path)
  best = max((m for m in mounts if path == m[0] or path.startswith(m[0].rstrip('/') + '/')),
             key=lambda m: len(m[0]), default=None)
  return best[1] if best else None
