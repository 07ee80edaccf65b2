"""A run of the wrong kind (a PPO run's root, a reward model, a language model where a reward model is wanted) is
refused in one sentence that says what the run holds and what to pass instead, and a refused start leaves nothing."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import heads
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save_run(workdir: str, params, module_path: str) -> str:
  """A run directory as a training command leaves it: config.json, run.json (started as module_path) and one
  checkpoint holding params."""
  config = tiny_config()
  ckpt.save_config(workdir, config, {'argv': [os.path.join('/somewhere', *module_path.split('/')), '--workdir=x']})
  checkpointer = ckpt.Checkpointer(workdir, config.checkpoint)
  checkpointer.save(1, params, {'step': jnp.int32(1)}, {'consumed': 0}, force=True)
  checkpointer.close()
  return workdir


def _params(module):
  return gm.init_params(module, jax.random.key(0))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('runs')
  model = tiny_config().model
  lm = _params(gm.GPTLM(model))
  policy_value = {'policy': lm, 'value': _params(heads.ValueModel(model))}
  return dict(ppo=_save_run(str(root / 'ppo'), policy_value, 'gpt_jax/rlhf/ppo.py'),
              rm=_save_run(str(root / 'rm'), _params(heads.RewardModel(model)), 'gpt_jax/rlhf/reward.py'),
              sft=_save_run(str(root / 'sft'), lm, 'gpt_jax/rlhf/sft.py'))


def _load(path, module):
  abstract = gs.abstract_params(gm.abstract_variables(module)['params'], gs.single_device_mesh())
  return ckpt.load_for_inference(path, abstract)


def test_a_ppo_runs_root_loaded_as_a_language_model_points_to_its_policy(runs):
  with pytest.raises(gcfg.ConfigError) as error:
    _load(runs['ppo'], gm.GPTLM(tiny_config().model))
  message = str(error.value)
  assert "holds a PPO run's policy and value network (written by gpt_jax.rlhf.ppo)" in message
  assert f"pass {runs['ppo']}/policy instead" in message and 'older gpt_jax' not in message


def test_a_reward_model_loaded_as_a_language_model_says_so_and_how_to_score(runs):
  with pytest.raises(gcfg.ConfigError) as error:
    _load(runs['rm'], gm.GPTLM(tiny_config().model))
  message = str(error.value)
  assert 'holds a reward model (written by gpt_jax.rlhf.reward), not a language model' in message
  assert 'python -m gpt_jax.rlhf.reward score' in message and 'older gpt_jax' not in message


def test_a_language_model_loaded_as_a_reward_model_asks_for_one(runs):
  with pytest.raises(gcfg.ConfigError, match=r'holds a language model \(written by gpt_jax.rlhf.sft\), not a reward '
                                             r'model .*; pass a run holding a reward model\.'):
    _load(runs['sft'], heads.RewardModel(tiny_config().model))


@pytest.mark.parametrize('command', [['gpt_jax.sample'],
                                     ['gpt_jax.hf', 'export', '--out=OUT']])
def test_inference_commands_refuse_a_reward_model_in_one_sentence(command, runs, tmp_path):
  args = [a.replace('OUT', str(tmp_path / 'hf')) for a in command]
  result = subprocess.run([sys.executable, '-m', *args, f"--workdir={runs['rm']}"], capture_output=True, text=True,
                          timeout=180, cwd=REPO)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2 and len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert 'holds a reward model' in errors[0] and not os.path.exists(tmp_path / 'hf')


def test_a_checkpointer_that_never_saved_leaves_no_folder(tmp_path):
  workdir = tmp_path / 'run'
  checkpointer = ckpt.Checkpointer(str(workdir), tiny_config().checkpoint)
  assert checkpointer.manager.all_steps() == []
  checkpointer.close()
  assert not workdir.exists()
