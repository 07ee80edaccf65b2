"""`python -m gpt_jax.train` as real processes: kill -9 then resume, SIGTERM, and 2 processes x 4 devices."""

import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt_lib
from gpt_jax.data import pipeline
from tests.helpers import load_lm, tiny_config

STEPS = 24
FLAGS = ['--config=configs/tiny.py:nano', '--config.model.context=64', '--config.train.batch_tokens=1024',
         f'--config.train.total_tokens={1024 * STEPS}', '--config.train.log_every=2', '--config.train.eval_every=0',
         '--config.train.eval_batches=0', '--config.train.sample_tokens=0', '--config.checkpoint.every_steps=3',
         '--config.checkpoint.keep=2', '--config.checkpoint.keep_every=12',
         # An explicit schedule: runs of other lengths below resume into the same one.
         '--config.optim.warmup_tokens=1024', f'--config.optim.decay_tokens={1024 * STEPS}']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('data'))
  pipeline.TrainStream(tiny_config(**{'data.data_dir': path}))  # prepare once, before processes share it
  return path


def _env(devices=8, **extra):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', JAX_PLATFORMS='cpu')
  env.update(extra)
  return env


def _command(workdir, data_dir, *extra):
  return [sys.executable, '-m', 'gpt_jax.train', f'--workdir={workdir}', *FLAGS,
          f'--config.data.data_dir={data_dir}', *extra]


def _run(workdir, data_dir, *extra, env=None):
  result = subprocess.run(_command(workdir, data_dir, *extra), env=env or _env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.fixture(scope='module')
def straight(data_dir, tmp_path_factory):
  """One uninterrupted single-process run, the reference of the kill -9 and the two-process tests."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  _run(workdir, data_dir)
  return workdir


def _final_params(workdir):
  config, params, step = load_lm(workdir)
  assert step == STEPS
  return params


def _assert_equal(a, b, atol=0.0):
  import jax
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol), a, b)


def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(data_dir, straight, tmp_path):
  # Kept: the last 2 saves plus every 12th step.
  assert sorted(int(p) for p in os.listdir(os.path.join(straight, 'checkpoints')) if p.isdigit()) == [12, 21, 24]
  killed = str(tmp_path / 'killed')
  process = subprocess.Popen(_command(killed, data_dir), env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  first = os.path.join(killed, 'checkpoints', '3')
  while not os.path.isdir(first) and process.poll() is None:
    time.sleep(0.05)
  # Past the first save, anywhere in training, an async save or its finalisation.
  time.sleep(random.Random().uniform(0.0, 0.8))
  process.kill()
  assert process.wait() == -signal.SIGKILL, 'the run finished before the kill: lengthen it'
  out = _run(killed, data_dir)
  assert 'resumed from step' in out
  _assert_equal(_final_params(killed), _final_params(straight))


def test_sigterm_saves_a_checkpoint_before_exit(data_dir, tmp_path):
  workdir = os.path.relpath(tmp_path / 'run')  # relative, as users type it
  process = subprocess.Popen(_command(workdir, data_dir, f'--config.train.total_tokens={1024 * 100_000}'),
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in process.stdout:
    if '[train] step 4 ' in line:
      process.send_signal(signal.SIGTERM)
      break
  out = process.stdout.read()
  assert process.wait(timeout=120) == 0, out[-2000:]
  assert 'SIGTERM: saved step' in out
  saved = int(out.split('SIGTERM: saved step ')[1].split(';')[0])
  assert saved >= 4 and os.path.isdir(os.path.join(workdir, 'checkpoints', str(saved)))
  resumed = _run(workdir, data_dir, f'--config.train.total_tokens={1024 * (saved + 2)}')
  assert f'resumed from step {saved}' in resumed


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, data_dir, *extra):
  port = _free_port()
  env = _env(devices=4, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  processes = [subprocess.Popen(
      _command(workdir, data_dir, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
               f'--process_id={i}', *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def test_two_processes_save_resume_and_match_one_process(data_dir, straight, tmp_path):
  multi = str(tmp_path / 'multi')
  first = _run_two_processes(multi, data_dir, f'--config.train.total_tokens={1024 * STEPS // 2}')
  assert 'mesh' in first[0] and '[train]' not in first[1]  # only process 0 writes metrics
  second = _run_two_processes(multi, data_dir, '--config.train.eval_batches=1', '--config.train.sample_tokens=8')
  assert f'resumed from step {STEPS // 2}' in second[0]
  assert '[eval] step' in second[0] and '--- sample ---' in second[0] and '--- sample ---' not in second[1]
  # Same math on the same 8 devices; only the cross-process reduction order may differ.
  _assert_equal(_final_params(multi), _final_params(straight), atol=5e-5)


def test_run_json_records_the_command_code_and_versions(straight):
  import json
  record = json.loads(open(os.path.join(straight, 'run.json')).read())
  assert record['argv'][0].endswith('train.py') or 'gpt_jax.train' in ' '.join(record['argv'])
  assert set(record['versions']) >= {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'}
  assert len(record['git']['commit']) == 40 and isinstance(record['git']['dirty'], bool)  # tests run from a checkout
