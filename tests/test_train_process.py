"""`python -m gpt_jax.train` as real processes: kill -9 then resume, SIGTERM, and 2 processes x 4 devices."""

import os
import random
import signal
import socket
import subprocess
import time

from tests import train_runs
from tests.train_runs import STEPS, assert_equal, final_params


def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(train_data_dir, straight, tmp_path):
  # Kept: the last 2 saves plus every 12th step.
  assert sorted(int(p) for p in os.listdir(os.path.join(straight, 'checkpoints')) if p.isdigit()) == [12, 21, 24]
  killed = str(tmp_path / 'killed')
  process = subprocess.Popen(train_runs.command(killed, train_data_dir), env=train_runs.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = os.path.join(killed, 'checkpoints', '3')
  while not os.path.isdir(first) and process.poll() is None:
    time.sleep(0.05)
  # Past the first save, anywhere in training, an async save or its finalisation.
  time.sleep(random.Random().uniform(0.0, 0.8))
  process.kill()
  assert process.wait() == -signal.SIGKILL, 'the run finished before the kill: lengthen it'
  out = train_runs.run(killed, train_data_dir)
  assert 'resumed from step' in out
  assert_equal(final_params(killed), final_params(straight))


def test_sigterm_saves_a_checkpoint_before_exit(train_data_dir, tmp_path):
  workdir = os.path.relpath(tmp_path / 'run')  # relative, as users type it
  process = subprocess.Popen(
      train_runs.command(workdir, train_data_dir, f'--config.train.total_tokens={1024 * 100_000}'),
      env=train_runs.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in process.stdout:
    if '[train] step 4 ' in line:
      process.send_signal(signal.SIGTERM)
      break
  out = process.stdout.read()
  assert process.wait(timeout=120) == 0, out[-2000:]
  assert 'SIGTERM: saved step' in out
  saved = int(out.split('SIGTERM: saved step ')[1].split(';')[0])
  assert saved >= 4 and os.path.isdir(os.path.join(workdir, 'checkpoints', str(saved)))
  resumed = train_runs.run(workdir, train_data_dir, f'--config.train.total_tokens={1024 * (saved + 2)}')
  assert f'resumed from step {saved}' in resumed


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, data_dir, *extra):
  port = _free_port()
  env = train_runs.env(devices=4, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  processes = [subprocess.Popen(
      train_runs.command(workdir, data_dir, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                         f'--process_id={i}', *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def test_two_processes_save_resume_and_match_one_process(train_data_dir, straight, tmp_path):
  multi = str(tmp_path / 'multi')
  first = _run_two_processes(multi, train_data_dir, f'--config.train.total_tokens={1024 * STEPS // 2}')
  assert 'mesh' in first[0] and '[train]' not in first[1]  # only process 0 writes metrics
  second = _run_two_processes(multi, train_data_dir, '--config.train.eval_batches=1',
                              '--config.train.sample_tokens=8')
  assert f'resumed from step {STEPS // 2}' in second[0]
  assert '[eval] step' in second[0] and '--- sample ---' in second[0] and '--- sample ---' not in second[1]
  # Same math on the same 8 devices; only the cross-process reduction order may differ.
  assert_equal(final_params(multi), final_params(straight), atol=5e-5)


def test_run_json_records_the_command_code_and_versions(straight):
  import json
  record = json.loads(open(os.path.join(straight, 'run.json')).read())
  assert record['argv'][0].endswith('train.py') or 'gpt_jax.train' in ' '.join(record['argv'])
  assert set(record['versions']) >= {'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint'}
  assert len(record['git']['commit']) == 40 and isinstance(record['git']['dirty'], bool)  # tests run from a checkout
