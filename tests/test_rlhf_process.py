"""The fine-tuning stages as real processes: two processes x 4 CPU devices (jax.distributed on loopback) train a
reward model, with its normalisation samples, DPO with a precomputed reference, and SFT with pretraining rows, each
equal to one process on 8 devices."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.heads import RewardModel
from gpt_jax.rlhf import sft
from tests import xla_env
from tests.helpers import finish, load_lm, run_on_two_processes, start_beside

CONTEXT = 32
COMMON = ['--config.rlhf.toy_items=32', '--config.rlhf.max_prompt_tokens=20', '--config.rlhf.epochs=0',
          '--config.train.log_every=2', '--config.train.eval_every=0', '--config.checkpoint.use_async=false',
          '--config.optim.warmup_tokens=0']
STAGES = {
    'reward': ['--config.rlhf.reward.max_responses=3', f'--config.train.batch_tokens={8 * 3 * CONTEXT}',
               f'--config.train.total_tokens={3 * 8 * 3 * CONTEXT}', '--config.rlhf.reward.norm_samples=24',
               '--config.rlhf.response_tokens=8'],
    'dpo': [f'--config.train.batch_tokens={8 * 2 * CONTEXT}', f'--config.train.total_tokens={3 * 8 * 2 * CONTEXT}',
            '--config.rlhf.dpo.precompute_ref=true'],
    'sft': [f'--config.train.batch_tokens={8 * CONTEXT}', f'--config.train.total_tokens={3 * 8 * CONTEXT}',
            '--config.rlhf.sft.pretrain_mix=0.25', '--config.rlhf.sft.pretrain_weight=0.1'],
}


@pytest.fixture(scope='module')
def sft_run(tmp_path_factory):
  """A tiny SFT run, the policy every stage here starts from (two steps: not a random model)."""
  base = tmp_path_factory.mktemp('sft')
  overrides = {'model.n_layers': 1, 'model.d_model': 32, 'model.n_heads': 2, 'model.context': CONTEXT,
               'rlhf.toy_items': 32, 'rlhf.max_prompt_tokens': 20, 'rlhf.epochs': 0.0,
               'train.batch_tokens': 8 * CONTEXT, 'train.total_tokens': 2 * 8 * CONTEXT, 'train.eval_every': 0,
               'checkpoint.use_async': False, 'optim.warmup_tokens': 0, 'data.data_dir': str(base / 'data')}
  config, task, _ = sft.build_task(gcfg.load_config_file('configs/rlhf.py:sft', overrides))
  loop.train(config, str(base / 'run'), task)
  return str(base / 'run')


def _command(stage, workdir, init_from, data_dir=None):
  return [sys.executable, '-m', f'gpt_jax.rlhf.{stage}', f'--workdir={workdir}', f'--config.rlhf.init_from={init_from}',
          f'--config.data.data_dir={data_dir or workdir + "-data"}', *COMMON, *STAGES[stage]]


def _run(stage, workdir, init_from, data_dir=None):
  """Runs python -m gpt_jax.rlhf.<stage> as 2 processes x 4 CPU devices; their outputs."""
  return run_on_two_processes(_command(stage, workdir, init_from, data_dir), cwd=None)


def _run_one_and_two(stage, tmp_path, init_from, data_dir=None):
  """The stage on two processes and, beside them, on one: the workdirs tmp_path/one and tmp_path/two, and the
  outputs of the two-process run's processes."""
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  reference = start_beside(_command(stage, one, init_from, data_dir), xla_env.env(8), None, f'{one}.log')
  try:
    outputs = _run(stage, two, init_from, data_dir)
  finally:
    finish(reference, f'{one}.log')
  return one, two, outputs


def _assert_close(a, b, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol), a, b)


def test_two_processes_train_a_reward_model_and_its_normalisation_as_one(sft_run, tmp_path):
  one, two, outputs = _run_one_and_two('reward', tmp_path, sft_run)
  assert 'reward normalisation' in outputs[0] and 'reward normalisation' not in outputs[1]
  norms = [json.loads(open(os.path.join(w, 'reward_norm.json')).read()) for w in (one, two)]
  assert norms[0]['sampling'] == norms[1]['sampling'] and norms[0]['samples'] == 24
  for key in ('gain', 'bias', 'mean', 'std'):
    assert norms[1][key] == pytest.approx(norms[0][key], rel=1e-4, abs=1e-5), key
  mesh = gs.single_device_mesh()
  abstract = gs.abstract_params(gm.abstract_variables(RewardModel(ckpt.load_config(one).model))['params'], mesh)
  _assert_close(ckpt.load_for_inference(one, abstract)[0], ckpt.load_for_inference(two, abstract)[0], atol=5e-5)


def test_two_processes_train_dpo_with_a_precomputed_reference_as_one(sft_run, tmp_path):
  one, two, _ = _run_one_and_two('dpo', tmp_path, sft_run)
  (_, params_one, step), (_, params_two, _) = load_lm(one), load_lm(two)
  assert step == 3
  _assert_close(params_one, params_two, atol=5e-5)


def test_two_processes_train_sft_with_pretraining_rows_as_one(sft_run, train_data_dir, tmp_path):
  """SFT that keeps pretraining (a quarter of every batch from the corpus, at weight 0.1; dropout on): the global
  batch, so the params, do not depend on how many processes hold it."""
  one, two, _ = _run_one_and_two('sft', tmp_path, sft_run, train_data_dir)
  (_, params_one, step), (_, params_two, _) = load_lm(one), load_lm(two)
  assert step == 3
  _assert_close(params_one, params_two, atol=5e-5)
