"""`python -m gpt_jax.rlhf.ppo` as real processes: 2 processes x 4 devices on loopback run 8 updates (a checkpoint at
6, the sample table at 4 and 8) and end where one process x 8 devices ends."""

import json
import sys

import jax
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import model as gm
from gpt_jax.heads import RewardModel
from tests.helpers import finish, load_lm, run_on_two_processes, start_beside
from tests.xla_env import env

UPDATES = 8


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A random tiny 'SFT' export and reward-model export."""
  root = tmp_path_factory.mktemp('ppo_process')
  config = gcfg.load_config_file('configs/rlhf.py:ppo', {
      'model.n_layers': 2, 'model.d_model': 32, 'model.n_heads': 2, 'model.context': 48,
      'train.batch_tokens': 16 * 48, 'train.total_tokens': 16 * 48})
  ckpt.export_params(str(root / 'sft'), gm.init_params(gm.GPTLM(config.model), jax.random.key(0)), 0, config)
  ckpt.export_params(str(root / 'rm'), gm.init_params(RewardModel(config.model), jax.random.key(1)), 0, config)
  return root


def _command(runs, workdir, *extra):
  return [sys.executable, '-m', 'gpt_jax.rlhf.ppo', '--config=configs/rlhf.py:ppo', f'--workdir={workdir}',
          f'--config.rlhf.ppo.policy_from={runs / "sft"}', f'--config.rlhf.ppo.reward_from={runs / "rm"}',
          '--config.rlhf.toy_items=64', '--config.rlhf.max_prompt_tokens=32', '--config.rlhf.response_tokens=6',
          '--config.rlhf.ppo.minibatches=2', '--config.rlhf.ppo.epochs=1', '--config.rlhf.ppo.sample_every=4',
          '--config.train.batch_tokens=768', f'--config.train.total_tokens={768 * UPDATES}',
          '--config.train.eval_every=0', '--config.checkpoint.every_steps=6', '--config.optim.peak_lr=1e-3',
          f'--config.data.data_dir={runs / "data"}', *extra]


def test_two_processes_with_the_sample_table_equal_one_process(runs, tmp_path):
  one = start_beside(_command(runs, tmp_path / 'one'), env(8), None, str(tmp_path / 'one.log'))
  try:
    outputs = run_on_two_processes(_command(runs, tmp_path / 'two'), cwd=None, timeout=600)
  finally:
    reference = finish(one, str(tmp_path / 'one.log'), timeout=600)
  assert outputs[0].count('[samples] step') == UPDATES // 4 == reference.count('[samples] step')
  assert '[samples]' not in outputs[1]
  record = [json.loads((tmp_path / name / 'run.json').read_text())['reward_norm'] for name in ('one', 'two')]
  assert record[0]['gain'] == pytest.approx(record[1]['gain'], rel=1e-5)
  (_, single, step), (_, double, _) = (load_lm(tmp_path / name / 'policy') for name in ('one', 'two'))
  assert step == UPDATES
  # Same math on the same 8 devices; only the cross-process reduction order may differ.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=5e-5), single,
               double)
