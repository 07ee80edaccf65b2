"""Fine-tuning at the length the data needs (rlhf.seq_len): the same losses as at the full context, its checks; and
SFT that keeps pretraining (rlhf.sft.pretrain_mix): rows counted, deterministic, resumed exactly."""

import math
import shutil

import jax
import numpy as np
import pytest

from gpt_jax import config as gcfg
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax.config import ConfigError
from gpt_jax.rlhf import classify, dpo, ppo, reward, sft, stage
from gpt_jax.rlhf import data as rdata
from tests.test_rlhf import _config, _loss

SEQUENCES = {'sft': 1, 'classify': 4, 'reward': 3, 'dpo': 2}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('data'))


@pytest.mark.parametrize('name, module', [('sft', sft), ('reward', reward), ('dpo', dpo), ('classify', classify)])
def test_a_stage_at_the_length_its_rows_need_computes_the_full_context_loss(data_dir, name, module):
  """A model of context 64 trained on rows of 32 tokens (what the toy items need): the same examples, the same loss
  and weight as on rows padded to 64."""
  rows = 8 * SEQUENCES[name]
  full = {'model.context': 64, 'train.batch_tokens': rows * 64, 'train.total_tokens': 2 * rows * 64}
  _, long_task, _ = module.build_task(_config(name, data_dir, **full))
  _, short_task, _ = module.build_task(_config(name, data_dir, **dict(full, **{'rlhf.seq_len': 32,
                                                                                'train.batch_tokens': rows * 32})))
  assert short_task.tokens_per_row * 2 == long_task.tokens_per_row
  long_rows, short_rows = long_task.train_stream.next_batch(8), short_task.train_stream.next_batch(8)
  tokens = 'inputs' if name == 'sft' else 'tokens'
  assert short_rows[tokens].shape[-1] in (32, 33) and long_rows[tokens].shape[-1] in (64, 65)
  width = short_rows[tokens].shape[-1]
  np.testing.assert_array_equal(long_rows[tokens][..., :width], short_rows[tokens])  # the same examples, a prefix
  params = gm.init_params(long_task.module, jax.random.key(5))
  long_loss, short_loss = _loss(long_task)(params, long_rows), _loss(short_task)(params, short_rows)
  np.testing.assert_allclose(short_loss[0], long_loss[0], rtol=1e-5)
  assert short_loss[1] == long_loss[1]


def test_seq_len_is_checked_against_the_context_the_prompt_budget_and_the_batch(data_dir):
  with pytest.raises(ConfigError, match=r'rlhf.seq_len=200 is longer than model.context=128'):
    gcfg.load_config_file('configs/rlhf.py:sft', {'rlhf.seq_len': 200})
  with pytest.raises(ConfigError, match=r'train.batch_tokens=2048 must be a positive multiple of rlhf.seq_len=48'):
    gcfg.load_config_file('configs/rlhf.py:sft', {'rlhf.seq_len': 48})
  with pytest.raises(ConfigError, match=r'rlhf.max_prompt_tokens=20 leaves a response no room in rlhf.seq_len=16'):
    stage.prepare(_config('sft', data_dir, **{'rlhf.seq_len': 16, 'train.batch_tokens': 8 * 16}))
  config = gcfg.load_config_file('configs/rlhf.py:ppo', {'rlhf.seq_len': 48, 'train.batch_tokens': 64 * 48,
                                                         'train.total_tokens': 2 * 64 * 48})
  assert ppo.episodes_per_update(config) == 64


def test_pretrain_mix_puts_that_share_of_pretraining_rows_in_every_batch(data_dir):
  plain_config, plain, _ = sft.build_task(_config('sft', data_dir, **{'rlhf.epochs': 1.0,
                                                                       'train.total_tokens': 8 * 32}))
  mixed_config, mixed, _ = sft.build_task(_config('sft', data_dir, **{'rlhf.sft.pretrain_mix': 0.25,
                                                                       'rlhf.epochs': 1.0,
                                                                       'train.total_tokens': 8 * 32}))
  batch = mixed.train_stream.next_batch(8)
  extra = np.isin(np.arange(8), [3, 7])  # 2 of 8 rows pretraining, spread evenly
  assert (batch['loss_mask'][extra] == 1).all() and (batch['loss_mask'][~extra].sum(1) < 32).all()
  own = plain.train_stream.next_batch(6)
  for key, value in own.items():
    np.testing.assert_array_equal(batch[key][~extra], value)  # the SFT rows in their usual order
  _, again, _ = sft.build_task(_config('sft', data_dir, **{'rlhf.sft.pretrain_mix': 0.25, 'rlhf.epochs': 1.0,
                                                            'train.total_tokens': 8 * 32}))
  for key, value in again.train_stream.next_batch(8).items():
    np.testing.assert_array_equal(value, batch[key])  # deterministic
  _, weighted, _ = sft.build_task(_config('sft', data_dir, **{'rlhf.sft.pretrain_mix': 0.25, 'rlhf.epochs': 1.0,
                                                               'rlhf.sft.pretrain_weight': 0.1,
                                                               'train.total_tokens': 8 * 32}))
  light = weighted.train_stream.next_batch(8)
  np.testing.assert_array_equal(light['loss_mask'][extra], np.float32(0.1))  # pretraining tokens at their weight
  for key, value in light.items():
    if key != 'loss_mask':
      np.testing.assert_array_equal(value, batch[key])
  np.testing.assert_array_equal(light['loss_mask'][~extra], batch['loss_mask'][~extra])
  n = plain.train_stream.n
  assert plain_config.train.total_tokens == math.ceil(n / 8) * 8 * 32
  assert mixed_config.train.total_tokens == math.ceil(math.ceil(n / 0.75) / 8) * 8 * 32  # an epoch of SFT rows


def test_a_pretrain_mix_without_both_kinds_of_rows_or_that_does_not_split_is_refused(data_dir):
  assert rdata.pretraining_rows(8, 0.25, 2) == 2
  for rows, mix, processes, message in ((8, 0.05, 1, 'gives 0 pretraining rows in a batch of 8'),
                                        (8, 0.95, 1, 'at most 7'), (8, 0.125, 2, 'do not split over 2 processes')):
    with pytest.raises(ConfigError, match=message):
      rdata.pretraining_rows(rows, mix, processes)
  with pytest.raises(ConfigError, match=r'rlhf.sft.pretrain_mix=0.05 gives 0 pretraining rows in a batch of 8'):
    sft.build_task(_config('sft', data_dir, **{'rlhf.sft.pretrain_mix': 0.05}))


def test_pretrain_mix_resumes_exactly(data_dir, tmp_path):
  """4 steps with checkpoints at 2 and 4, step 4 lost as a kill would lose it, rerun: the same params."""
  overrides = {'rlhf.sft.pretrain_mix': 0.25, 'mesh.fsdp': 8}
  config, task, _ = sft.build_task(_config('sft', data_dir, **overrides))
  workdir = tmp_path / 'run'
  straight = jax.device_get(loop.train(config, str(workdir), task).params)
  shutil.rmtree(workdir / 'checkpoints' / '4')
  config, task, _ = sft.build_task(_config('sft', data_dir, **overrides))
  resumed = loop.train(config, str(workdir), task).params
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), straight, resumed)
