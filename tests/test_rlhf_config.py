"""The rlhf config's stage subsections: a config.json written with the flat field names of older runs loads with
each field at its new place (and a stage starts from such a run), and an old --config.rlhf.<name> override is
refused in one sentence that names the new field, before any work."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.rlhf import sft, stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The rlhf section as config.json held it before the subsections: every field, by its old name, at its old default
# except those marked, which the new layout keeps elsewhere (and, for some, under another name).
OLD_RLHF = dict(
    init_from='', data='toy', eval_data='', toy_items=4000, epochs=0.0, max_prompt_tokens=64, skip_bad_lines=False,
    pack=True,  # changed
    max_responses=3,  # changed
    lm_coef=0.5,
    beta=0.3,  # changed
    dpo_loss='ipo',  # changed
    label_smoothing=0.0, nll_coef=0.0, precompute_ref=False,
    norm_samples=32,  # changed
    response_tokens=16, temperature=1.0,
    policy_from='runs/sft',  # changed
    reward_from='', value_from='policy',
    ppo_epochs=2,  # changed
    minibatches=1,
    kl_coef=0.2,  # changed
    kl_target=0.0, kl_horizon=10000, gamma=1.0, lam=0.95,
    clip=0.1,  # changed
    value_clip=0.2, value_coef=0.1, whiten_rewards=False, missing_eos_penalty=1.0, ptx_source='', ptx_coef=1.0,
    ptx_rows=8, frozen_dtype='float32', sample_every=10)

NEW_PLACES = {'rlhf.sft.pack': True, 'rlhf.reward.max_responses': 3, 'rlhf.dpo.beta': 0.3, 'rlhf.dpo.loss': 'ipo',
              'rlhf.reward.norm_samples': 32, 'rlhf.ppo.policy_from': 'runs/sft', 'rlhf.ppo.epochs': 2,
              'rlhf.ppo.kl_coef': 0.2, 'rlhf.ppo.ratio_clip': 0.1}


def _old_run(workdir, model=None) -> str:
  """workdir's config.json rewritten in the old layout (model: the model section to keep, default otherwise)."""
  tree = json.loads(gcfg.validate(gcfg.default_config()).to_json())
  if model is not None:
    tree['model'] = model
  tree['rlhf'] = dict(OLD_RLHF)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, ckpt.CONFIG_FILE), 'w', encoding='utf-8') as f:
    json.dump(tree, f)
  return str(workdir)


def test_an_old_config_json_loads_with_each_field_at_its_new_place(tmp_path):
  expected = gcfg.default_config()
  for key, value in NEW_PLACES.items():
    gcfg.apply_override(expected, key, value)
  loaded = ckpt.load_config(_old_run(tmp_path))
  assert dict(gcfg.leaves(loaded)) == dict(gcfg.leaves(gcfg.validate(expected)))


def test_a_stage_starts_from_an_old_run(tmp_path):
  base = gcfg.load_config_file('configs/rlhf.py:sft', {'model.n_layers': 1, 'model.d_model': 32,
                                                        'model.n_heads': 2, 'model.context': 32})
  params = gm.init_params(gm.GPTLM(base.model), jax.random.key(3))
  ckpt.export_params(str(tmp_path / 'old'), params, 0, base)
  old = _old_run(tmp_path / 'old', model=base.model.to_dict())
  config = stage.prepare(gcfg.load_config_file('configs/rlhf.py:sft', {
      'rlhf.init_from': old, 'rlhf.toy_items': 64, 'rlhf.max_prompt_tokens': 20, 'data.data_dir': str(tmp_path)}))
  assert (config.model.d_model, config.model.context) == (32, 32)
  config, task, _ = sft.build_task(config)
  mesh = gs.single_device_mesh()
  started = task.init_params(jax.random.key(0), gs.param_shardings(gm.abstract_variables(task.module)['params'],
                                                                    mesh))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(started), jax.device_get(params))


def test_an_old_run_prints_its_config_in_the_new_layout(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.rlhf.ppo', f'--workdir={_old_run(tmp_path)}',
                           '--print_config'], capture_output=True, text=True, timeout=120, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  values = {line.split('  # ')[0] for line in result.stdout.splitlines()}
  assert {"rlhf.ppo.kl_coef = 0.2", "rlhf.ppo.ratio_clip = 0.1", "rlhf.dpo.loss = 'ipo'"} <= values
  assert not any(line.startswith(('rlhf.kl_coef', 'rlhf.clip', 'rlhf.dpo_loss')) for line in values)


@pytest.mark.parametrize('module,flag,message', [
    ('gpt_jax.rlhf.ppo', '--config.rlhf.kl_coef=0.2',
     'rlhf.kl_coef is now rlhf.ppo.kl_coef: pass --config.rlhf.ppo.kl_coef=0.2.'),
    ('gpt_jax.rlhf.dpo', '--config.rlhf.dpo_loss=ipo',
     'rlhf.dpo_loss is now rlhf.dpo.loss: pass --config.rlhf.dpo.loss=ipo.'),
])
def test_an_old_override_is_refused_with_the_new_name(module, flag, message, tmp_path):
  workdir = tmp_path / 'run'
  result = subprocess.run([sys.executable, '-m', module, f'--workdir={workdir}', flag], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert errors == [f'error: {message}'] and not workdir.exists()


@pytest.mark.parametrize('old,value', [('rlhf.ppo_epochs', 2), ('rlhf.clip', 0.1), ('rlhf.pack', True),
                                       ('rlhf.beta', 0.3), ('rlhf.max_responses', 3)])
def test_an_old_name_in_python_overrides_names_the_new_place(old, value):
  with pytest.raises(gcfg.ConfigError) as error:
    gcfg.load_config_file('configs/rlhf.py:ppo', {old: value})
  new = gcfg.MOVED[old]
  assert str(error.value) == f'{old} is now {new}: pass --config.{new}={value}.'
  gcfg.check_key(gcfg.default_config(), new)
