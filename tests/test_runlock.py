"""One run per workdir (gpt_jax.runlock): a second run on a workdir that a run holds is refused in one sentence
before it reads or writes anything, on one process and on two; the lock goes with its holder."""

import os
import shutil
import subprocess

import pytest

from gpt_jax import runlock
from gpt_jax.config import ConfigError
from tests import train_runs
from tests import xla_env
from tests.test_train_process import _free_port


def test_second_holder_is_refused_and_the_lock_goes_with_the_first(tmp_path):
  workdir = str(tmp_path / 'run')
  with runlock.hold(workdir):
    with pytest.raises(ConfigError, match=rf'run directory {workdir} is in use by another run \(process {os.getpid()}'):
      with runlock.hold(workdir):
        pass
    open(os.path.join(workdir, 'kept'), 'w').close()
  with runlock.hold(workdir):  # released
    pass
  assert sorted(os.listdir(workdir)) == ['.lock', 'kept']


def test_a_workdir_the_lock_created_goes_if_nothing_else_was_written(tmp_path):
  workdir = str(tmp_path / 'run')
  with runlock.hold(workdir):
    assert os.path.isdir(workdir)
  assert not os.path.exists(workdir)


def test_a_workdir_that_cannot_be_created_is_one_sentence(tmp_path):
  (tmp_path / 'file').write_text('x')
  with pytest.raises(ConfigError, match=r'cannot write the run directory .*file/run \(Not a directory\)'):
    with runlock.hold(str(tmp_path / 'file' / 'run')):
      pass


def _before(workdir):
  return {name: os.path.getmtime(os.path.join(workdir, name)) for name in os.listdir(workdir)}


def test_a_second_training_run_is_refused_on_one_and_two_processes(train_data_dir, straight, tmp_path):
  """A copy of the session's finished reference run, held as a live run would hold it: a resume of it on one
  process, and on two, exits 2 with the sentence and changes nothing in it."""
  held = str(tmp_path / 'held')
  shutil.copytree(straight, held)
  with runlock.hold(held):
    before = _before(held)
    one = subprocess.run(train_runs.command(held, train_data_dir), env=xla_env.env(), capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 2, one.stderr[-2000:]
    lines = one.stderr.strip().splitlines()
    assert len(lines) == 1 and f'is in use by another run (process {os.getpid()} on' in lines[0], one.stderr[-2000:]
    assert 'mesh' not in one.stdout
    port = _free_port()
    processes = [subprocess.Popen(
        train_runs.command(held, train_data_dir, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                           f'--process_id={i}'),
        env=xla_env.env(4, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo'), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [2, 2], outputs
    assert 'is in use by another run (process' in outputs[0][1] and 'process 0 could not take' in outputs[1][1]
    assert _before(held) == before
