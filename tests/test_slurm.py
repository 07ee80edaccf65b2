"""Sweeps and multi-process training on a real SLURM cluster (one node on this machine, tests/slurm_cluster.py): a
sweep's job arrays submitted by its generated script, scancel then resubmit resuming as one run, and a 2-task job of
gpt_jax.train whose processes meet through SLURM's environment, by srun and through launch/slurm_gpu.sbatch."""

import csv
import json
import os
import subprocess
import sys
import time

import pytest

from gpt_jax.sweep import attempt
from tests.slurm_cluster import slurm  # noqa: F401  (the fixture)
from tests import train_runs
from tests.train_runs import FLAGS, assert_equal, final_params
from tests.helpers import load_lm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_STEPS = 40
RUN = 'l2-d16-h1-t10240-s0'


@pytest.fixture(scope='module')
def sweep_file(tmp_path_factory):
  """Two 2-layer runs of RUN_STEPS steps of 8 x 32 tokens on a small local corpus, checkpoints every 2 steps, each on
  one node with one (count-only) GPU and one CPU; the root is given by GPT_JAX_TEST_ROOT."""
  tmp = tmp_path_factory.mktemp('slurm_sweep')
  corpus = tmp / 'corpus.jsonl'
  corpus.write_text(''.join(json.dumps({'text': f'def f_{i}(x):\n    return x * {i} + {i % 7}\n' * 3}) + '\n'
                            for i in range(400)))
  path = tmp / 'sweep.py'
  path.write_text(f'''import os
from gpt_jax.sweep import Resources, Shape, Sweep

def get_sweep():
  return Sweep(name='slurm test', config='configs/tiny.py:nano', root=os.environ['GPT_JAX_TEST_ROOT'],
               shapes=[Shape(2, 16, 1), Shape(2, 32, 2)], tokens=[{RUN_STEPS} * 256],
               overrides={{'model.context': 32, 'model.local_window': 32, 'train.batch_tokens': 256,
                          'train.log_every': 1, 'train.eval_batches': 0, 'train.sample_tokens': 0,
                          'checkpoint.every_steps': 2, 'data.source': 'files:{corpus}',
                          'data.data_dir': {str(tmp / 'data')!r}}},
               resources=lambda shape: Resources(nodes=1, gpus_per_node=1, cpus_per_task=1, time='0:15:00'))
''')
  return str(path)


def _sweep(slurm, sweep_file, root, *args):
  env = train_runs.env(8, base=slurm.env, GPT_JAX_TEST_ROOT=root)
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.sweep', *args, f'--sweep={sweep_file}'], env=env,
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, env


def _submit(slurm, sweep_file, root, *only):
  script = os.path.join(os.path.dirname(root), 'sweep.sh')
  _, env = _sweep(slurm, sweep_file, root, 'slurm', f'--output={script}', '--allow_cpu', '--overwrite', *only)
  submitted = slurm.run('bash', script, env=env, cwd='/')  # absolute paths: any directory will do
  assert submitted.returncode == 0, submitted.stderr
  (job,) = slurm.job_ids(submitted.stdout)
  return job


@pytest.fixture(scope='module')
def finished_sweep(slurm, sweep_file, tmp_path_factory):
  """The sweep's job array, submitted by its generated script from another directory and waited for."""
  root = str(tmp_path_factory.mktemp('finished') / 'runs')
  job = _submit(slurm, sweep_file, root)
  return root, job, slurm.wait(job)


def test_sweep_job_array_trains_both_runs_and_collects(slurm, sweep_file, finished_sweep, tmp_path):
  root, job, states = finished_sweep
  assert states == {f'{job}_0': 'COMPLETED', f'{job}_1': 'COMPLETED'}
  status, _ = _sweep(slurm, sweep_file, root, 'status')
  assert '2 finished' in status, status
  _sweep(slurm, sweep_file, root, 'collect', f'--output={tmp_path / "runs.csv"}')
  rows = list(csv.DictReader(open(tmp_path / 'runs.csv')))
  assert [(r['state'], int(r['tokens'])) for r in rows] == [('finished', RUN_STEPS * 256)] * 2
  for row in rows:  # each array task ran as one recorded attempt of its run
    attempts = attempt.read_attempts(os.path.join(root, row['run']))
    assert [a['exit_code'] for a in attempts] == [0] and float(row['wall_seconds']) == pytest.approx(
        attempts[0]['seconds'], abs=0.1)


def test_scancel_mid_run_then_resubmit_resumes_and_reads_as_one_uninterrupted_run(slurm, sweep_file, finished_sweep,
                                                                                   tmp_path):
  root = str(tmp_path / 'runs')
  job = _submit(slurm, sweep_file, root, '--only=l2-d16')
  workdir = os.path.join(root, RUN)
  checkpoints = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + 300
  while not (os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))):
    assert time.time() < deadline and 'FAILED' not in slurm.state(job).values(), slurm.state(job)
    time.sleep(0.1)
  assert slurm.run('scancel', job).returncode == 0
  assert set(slurm.wait(job).values()) == {'CANCELLED'}
  first = attempt.read_attempts(workdir)  # SIGTERM: the run saved and exited, the attempt recorded itself
  assert len(first) == 1 and not attempt.read_lock(workdir)[1]
  status, _ = _sweep(slurm, sweep_file, root, 'status', '--only=l2-d16')
  assert ' partial ' in status, status

  again = _submit(slurm, sweep_file, root, '--only=l2-d16')
  assert set(slurm.wait(again).values()) == {'COMPLETED'}
  logs = [open(os.path.join(root, 'slurm', name)).read() for name in sorted(os.listdir(os.path.join(root, 'slurm')))]
  assert any('SIGTERM: saved step' in text for text in logs) and any('resumed from step' in t for t in logs), logs
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in records if 'train/loss' in r] == list(range(1, RUN_STEPS + 1))
  assert [a['exit_code'] for a in attempt.read_attempts(workdir)] == [first[0]['exit_code'], 0]
  # Resumed == uninterrupted: the same run in the job array that ran in one go.
  assert_equal(_params(workdir, RUN_STEPS), _params(os.path.join(finished_sweep[0], RUN), RUN_STEPS))


def _params(workdir, steps):
  config, params, step = load_lm(workdir)
  assert step == steps
  return params


# ---------------------------------------------------------------------------------------------------------------
# A 2-task job of gpt_jax.train: the processes find each other through SLURM's environment.

# What launch/slurm_gpu.sbatch appends to the command is undone by these overrides after it (the last value of a
# flag wins): in bf16 the cross-process reduction order alone moved weights by up to 1.5e-2 after 24 steps (measured
# here), too loose a comparison, and cuDNN attention needs bf16. In float32 only that order differs: same math on
# the same 8 devices.
FLOAT32 = ['--config.model.dtype=float32', '--config.model.attention_impl=xla']
ATOL = 5e-5


def _two_task_env(slurm):
  # 4 CPU devices per process, 8 in all as in `straight`, one process's run; gloo for the cross-process collectives.
  return dict(slurm.env, **train_runs.env(devices=4, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo'))


def test_srun_two_tasks_find_each_other_through_slurm_and_equal_one_process(slurm, train_data_dir, straight,
                                                                            tmp_path):
  workdir = str(tmp_path / 'two')
  env = dict(_two_task_env(slurm), GPT_JAX_DISTRIBUTED='1')
  job = slurm.run('srun', '--ntasks=2', '--cpus-per-task=1', '--kill-on-bad-exit=1', '--label',
                  *train_runs.command(workdir, train_data_dir), env=env, cwd=REPO, timeout=600)
  assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
  assert "0: mesh {'data': 1, 'fsdp': 8, 'tensor': 1}" in job.stdout and '1: mesh' not in job.stdout
  assert_equal(final_params(workdir), final_params(straight), atol=ATOL)


def test_slurm_gpu_sbatch_refuses_a_cpu_venv_unless_allowed_then_equals_one_process(slurm, train_data_dir, straight,
                                                                                  tmp_path):
  env = _two_task_env(slurm)
  workdir = str(tmp_path / 'two')
  options = ['--ntasks-per-node=2', '--cpus-per-task=1', f'--output={tmp_path}/%j.out']
  script = os.path.join(REPO, 'launch', 'slurm_gpu.sbatch')
  args = ['configs/tiny.py:nano', workdir, *FLAGS[1:], f'--config.data.data_dir={train_data_dir}', *FLOAT32]
  refused = slurm.run('sbatch', '--wait', *options, script, *args, env=env, cwd=REPO, timeout=600)
  (job,) = slurm.job_ids(refused.stdout)
  text = open(tmp_path / f'{job}.out').read()
  assert refused.returncode != 0 and "no CUDA build of jax: run 'make setup-gpu'" in text, text
  assert '--allow_cpu' in text and not os.path.exists(workdir)

  allowed = slurm.run('sbatch', '--wait', *options, script, '--allow_cpu', *args, env=env, cwd=REPO, timeout=600)
  (job,) = slurm.job_ids(allowed.stdout)
  text = open(tmp_path / f'{job}.out').read()
  assert allowed.returncode == 0 and text.count("mesh {'data': 1, 'fsdp': 8, 'tensor': 1}") == 1, text[-3000:]
  assert_equal(final_params(workdir), final_params(straight), atol=ATOL)
