"""`python -m gpt_jax.train` as a subprocess for the process and SLURM tests: the flags of one small run, its
command and environment, and the session's reference run (one process, 8 devices) that they all compare with."""

import os
import subprocess
import sys

import numpy as np
import pytest

from gpt_jax.data import pipeline
from tests.helpers import load_lm, tiny_config
from tests.xla_env import env

STEPS = 24
FLAGS = ['--config=configs/tiny.py:nano', '--config.model.context=64', '--config.train.batch_tokens=1024',
         f'--config.train.total_tokens={1024 * STEPS}', '--config.train.log_every=2', '--config.train.eval_every=0',
         '--config.train.eval_batches=0', '--config.train.sample_tokens=0', '--config.checkpoint.every_steps=3',
         '--config.checkpoint.keep=2', '--config.checkpoint.keep_every=12',
         # An explicit schedule: runs of other lengths below resume into the same one.
         '--config.optim.warmup_tokens=1024', f'--config.optim.decay_tokens={1024 * STEPS}']


def command(workdir, data_dir, *extra):
  return [sys.executable, '-m', 'gpt_jax.train', f'--workdir={workdir}', *FLAGS,
          f'--config.data.data_dir={data_dir}', *extra]


def run(workdir, data_dir, *extra):
  result = subprocess.run(command(workdir, data_dir, *extra), env=env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def final_params(workdir):
  _, params, step = load_lm(workdir)
  assert step == STEPS
  return params


def assert_equal(a, b, atol=0.0):
  import jax
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol), a, b)


# Session-scoped (registered in conftest.py): the process, SLURM, run-lock and fine-tuning process tests share one
# corpus (and the first two one reference run) instead of preparing it once per module.
@pytest.fixture(scope='session')
def train_data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('train_data'))
  pipeline.TrainStream(tiny_config(**{'data.data_dir': path}))  # prepare once, before processes share it
  return path


@pytest.fixture(scope='session')
def straight(train_data_dir, tmp_path_factory):
  """One uninterrupted single-process run, the reference of the kill -9, two-process and SLURM tests."""
  workdir = str(tmp_path_factory.mktemp('straight'))
  run(workdir, train_data_dir)
  return workdir
