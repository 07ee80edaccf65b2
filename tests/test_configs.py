"""Every config file loads, validates and builds abstract params fast; counts match the published figures."""

import glob
import importlib.util
import time

import pytest

from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import model as gm
from gpt_jax import optim


def _module(path):
  spec = importlib.util.spec_from_file_location(path, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _all_specs():
  specs = []
  for path in sorted(glob.glob('configs/*.py')):
    sizes = getattr(_module(path), 'SIZES', None)
    specs += [f'{path}:{size}' for size in sizes] if sizes else [path]
  return specs


@pytest.mark.parametrize('spec', _all_specs())
def test_config_loads_and_builds_abstract_params(spec):
  start = time.perf_counter()
  config = gcfg.load_config_file(spec)
  abstract = gm.abstract_variables(gm.GPTLM(config.model))['params']
  counted = flops.count_params_abstract(abstract)
  assert counted == flops.count_params(config.model, padded=True)['total']
  assert time.perf_counter() - start < 30  # 175B included: eval_shape allocates nothing


@pytest.mark.parametrize('size', ['125m', '350m', '760m', '1.3b', '2.7b', '6.7b', '13b', '175b'])
def test_gpt3_rows_within_2_percent_of_paper(size):
  config = gcfg.load_config_file(f'configs/gpt3.py:{size}')
  published = _module('configs/gpt3.py').PUBLISHED_PARAMS[size]
  total = flops.count_params(config.model)['total']
  assert abs(total / published - 1) < 0.02, (size, total)
  m = config.model
  assert (m.context, m.vocab_size, m.d_ff) == (2048, 50257, 4 * m.d_model)
  assert m.n_heads * m.d_head == m.d_model


def test_gpt3_contradictory_cells_decided_by_counts():
  gpt3 = _module('configs/gpt3.py')
  xl = gcfg.load_config_file('configs/gpt3.py:xl')
  assert (xl.model.n_heads, xl.model.d_head, xl.model.d_model) == (16, 128, 2048)
  as_printed = gcfg.load_config_file('configs/gpt3.py:xl', {'model.n_heads': 24, 'model.d_head': 128,
                                                            'mesh.tensor': 1})
  assert flops.count_params(as_printed.model)['total'] / gpt3.PUBLISHED_PARAMS['1.3b'] > 1.15  # 24 x 128: 1.51B
  assert abs(flops.count_params(xl.model)['total'] / 1.3e9 - 1) < 0.02
  big = gcfg.load_config_file('configs/gpt3.py:13b')
  assert big.model.d_model == 5120 and big.model.d_model % 8 == 0
  printed = gcfg.load_config_file('configs/gpt3.py:13b', {'model.d_model': 5140})
  assert printed.model.d_model % printed.model.n_heads != 0  # the printed width cannot be split into 40 heads
  assert abs(flops.count_params(printed.model)['total'] / 13e9 - 1) < 0.02  # the count cannot separate them


def test_gpt3_recipe_appendix_b():
  c = gcfg.load_config_file('configs/gpt3.py:175b')
  o = c.optim
  assert (o.b1, o.b2, o.eps, o.clip, o.weight_decay) == (0.9, 0.95, 1e-8, 1.0, 0.1)
  assert (o.warmup_tokens, o.decay_tokens, o.final_lr_fraction) == (375e6, 260e9, 0.1)
  assert o.ramp_start_tokens == 32 * 1024 and 4e9 <= o.ramp_tokens <= 12e9
  assert c.train.total_tokens == 300e9 and c.train.batch_tokens == 1536 * 2048
  assert gcfg.load_config_file('configs/gpt3.py:125m').train.batch_tokens == 256 * 2048
  assert c.model.attention == 'alternating'


@pytest.mark.parametrize('size,published', [('small', 124e6), ('medium', 355e6), ('large', 774e6), ('xl', 1558e6)])
def test_gpt2_rows_within_2_percent(size, published):
  config = gcfg.load_config_file(f'configs/gpt2.py:{size}')
  assert abs(flops.count_params(config.model)['total'] / published - 1) < 0.02


def test_gpt1_as_published():
  m = gcfg.load_config_file('configs/gpt1.py').model
  assert (m.n_layers, m.d_model, m.n_heads, m.d_ff, m.context, m.ln_placement) == (12, 768, 12, 3072, 512, 'post')
  assert 110e6 < flops.count_params(m)['total'] < 120e6  # ~117M


def test_tiny_configs_start_near_100k_params():
  assert 0.09e6 < flops.count_params(gcfg.load_config_file('configs/tiny.py:nano').model)['total'] < 0.2e6


def test_kaplan_non_embedding_is_about_12_L_d2():
  m = gcfg.load_config_file('configs/gpt3.py:175b').model
  assert flops.count_params(m)['non_embedding'] == pytest.approx(12 * m.n_layers * m.d_model**2, rel=0.01)


@pytest.mark.parametrize('overrides,message', [
    ({'model.n_heads': 5, 'model.d_model': 64}, r'model.d_model=64 is not divisible by model.n_heads=5'),
    ({'model.local_window': 0}, r'model.local_window=0 must be at least 1'),
    ({'model.attention': 'sparse'}, r"model.attention='sparse' is not valid: use one of 'dense', 'alternating'"),
    ({'train.batch_tokens': 100}, r'train.batch_tokens=100 must be a positive multiple of model.context'),
    ({'model.d_modle': 3}, r"unknown config key 'model.d_modle': did you mean 'model.d_model'\?"),
    ({'modle.d_model': 3}, r"unknown config key 'modle.d_model': did you mean 'model'\?"),
    ({'model.attention_impl': 'cudnn', 'model.dtype': 'bfloat16', 'model.dropout_attn': 0.1},
     r"model.attention_impl='cudnn' has no attention dropout"),
    ({'model.attention_impl': 'cudnn'}, r"model.attention_impl='cudnn' needs model.dtype='bfloat16'"),
    ({'optim.decay_tokens': 10, 'optim.warmup_tokens': 100}, r'optim.decay_tokens=10 is shorter than'),
    ({'checkpoint.keep': 0}, r'checkpoint.keep=0 must be at least 1'),
    ({'model.d_model': 'wide'}, r"model.d_model='wide' has the wrong type"),
])
def test_bad_config_fails_with_one_sentence(overrides, message):
  with pytest.raises(gcfg.ConfigError, match=message) as info:
    gcfg.load_config_file('configs/tiny.py:nano', overrides)
  assert '\n' not in str(info.value)


def test_unknown_size_lists_valid_ones():
  with pytest.raises(gcfg.ConfigError, match=r"unknown GPT-3 size '42b': use one of 125m, 350m.*175b.*small"):
    gcfg.load_config_file('configs/gpt3.py:42b')
  with pytest.raises(gcfg.ConfigError, match='does not exist'):
    gcfg.load_config_file('configs/nope.py')


@pytest.mark.parametrize('key,value,message', [
    ('model.ln_eps', 0.0, 'model.ln_eps=0.0 must be greater than 0'),
    ('model.init_std', -0.02, 'model.init_std=-0.02 must be greater than 0'),
    ('model.dropout_resid', 1.0, 'model.dropout_resid=1.0 must be in [0.0, 1.0)'),
    ('model.local_window', 0, 'model.local_window=0 must be at least 1'),
    ('data.source', ' ', "data.source=' ' must be a non-empty string"),
    ('data.text_field', '', "data.text_field='' must be a non-empty string"),
    ('data.seed', -1, 'data.seed=-1 must be at least 0'),
    ('train.eval_every', -1, 'train.eval_every=-1 must be at least 0'),
    ('train.eval_batches', -2, 'train.eval_batches=-2 must be at least 0'),
    ('train.sample_tokens', -5, 'train.sample_tokens=-5 must be at least 0'),
    ('train.seed', -3, 'train.seed=-3 must be at least 0'),
    ('train.log_every', 0, 'train.log_every=0 must be at least 1'),
    ('optim.peak_lr', -1.0, 'optim.peak_lr=-1.0 must be greater than 0.0'),
    ('optim.peak_lr', 0.0, 'optim.peak_lr=0.0 must be greater than 0.0'),
    ('optim.weight_decay', -0.1, 'optim.weight_decay=-0.1 must be at least 0.0'),
    ('optim.b1', 1.0, 'optim.b1=1.0 must be in [0.0, 1.0)'),
    ('optim.b2', -0.5, 'optim.b2=-0.5 must be in [0.0, 1.0)'),
    ('optim.eps', 0.0, 'optim.eps=0.0 must be greater than 0.0'),
    ('optim.clip', -1.0, 'optim.clip=-1.0 must be at least 0.0'),
    ('optim.final_lr_fraction', 1.5, 'optim.final_lr_fraction=1.5 must be in [0.0, 1.0]'),
    ('optim.warmup_tokens', -10, 'optim.warmup_tokens=-10 must be at least 0'),
    ('optim.ramp_tokens', -1, 'optim.ramp_tokens=-1 must be at least 0'),
    ('mesh.tensor', 0, 'mesh.tensor=0 must be a positive integer or -1'),
    ('checkpoint.every_steps', 0, 'checkpoint.every_steps=0 must be at least 1'),
    ('checkpoint.keep_every', -1, 'checkpoint.keep_every=-1 must be at least 0'),
    ('rlhf.sft.pretrain_weight', 0.0, 'rlhf.sft.pretrain_weight=0.0 must be greater than 0.0'),
    ('rlhf.sft.pretrain_weight', 0.1, 'rlhf.sft.pretrain_weight=0.1 weighs the pretraining rows that'),
])
def test_every_field_has_a_rule_and_a_one_sentence_error(key, value, message):
  with pytest.raises(gcfg.ConfigError) as error:
    gcfg.load_config_file('configs/tiny.py:nano', {key: value})
  assert str(error.value).startswith(message) and str(error.value).count('. ') == 0


def test_the_schedule_follows_the_run_length_unless_set():
  short = gcfg.load_config_file('configs/tiny.py:micro', {'train.total_tokens': 2.5e5})
  assert short.train.total_tokens == 250_000 and isinstance(short.train.total_tokens, int)
  assert (short.optim.warmup_tokens, short.optim.decay_tokens) == (5_000, 250_000)
  assert optim.schedule_warning(short) is None
  fixed = gcfg.load_config_file('configs/tiny.py:micro', {'train.total_tokens': 250_000,
                                                         'optim.decay_tokens': 2_000_000})
  assert fixed.optim.decay_tokens == 2_000_000
  gpt3 = gcfg.load_config_file('configs/gpt3.py:125m', {'train.total_tokens': 1e9})
  assert gpt3.optim.decay_tokens == 260_000_000_000  # the paper's, set explicitly by the config file
  assert 'optim.decay_tokens=260,000,000,000 is beyond train.total_tokens=1,000,000,000' in optim.schedule_warning(gpt3)


def test_token_counts_accept_scientific_notation_on_the_command_line():
  from gpt_jax import cli
  assert cli._integral_token_count('--config.train.total_tokens=2.5e9') == '--config.train.total_tokens=2500000000'
  assert cli._integral_token_count('--config.optim.peak_lr=1e3') == '--config.optim.peak_lr=1e3'
  assert cli._integral_token_count('--config.train.total_tokens=1.5') == '--config.train.total_tokens=1.5'


@pytest.mark.parametrize('spec', _all_specs())
def test_smoke_size_keeps_the_architecture_and_fits_any_machine(spec):
  config = gcfg.load_config_file(spec)
  smoke = gcfg.smoke_size(config)
  for field in ('n_layers', 'd_model', 'n_heads', 'd_head', 'd_ff', 'attention', 'ln_placement', 'dtype'):
    assert smoke.model[field] == config.model[field]
  assert smoke.model.context <= 256 and smoke.train.total_tokens == 4 * smoke.train.batch_tokens
  assert smoke.optim.decay_tokens == smoke.train.total_tokens and config.train.total_tokens >= smoke.train.total_tokens
  if config.data.tokenizer == 'byte':
    assert smoke.model.vocab_size == 258
