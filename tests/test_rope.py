"""model.positions='rope': rotary queries and keys, no position table; shift invariance, sharding, config validation,
parameter counts and the GPT-2 export's refusal (KV-cache decoding: tests/test_model.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import hf
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from tests.helpers import tiny_config
from tests.test_sharding import _mesh_config


@pytest.fixture(scope='module')
def rope():
  cfg = tiny_config(model__positions='rope')
  lm = gm.GPTLM(cfg.model)
  params = gm.init_params(lm, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (3, cfg.model.context), 0, cfg.model.vocab_size)
  return cfg, lm, params, tokens


def test_rope_model_has_no_position_table_and_counts_match(rope):
  cfg, lm, params, _ = rope
  assert 'wpe' not in params['trunk']
  counts = flops.count_params(cfg.model)
  assert flops.count_params(cfg.model, padded=True)['total'] == flops.count_params_abstract(params)
  learned = flops.count_params(tiny_config().model)
  assert learned['total'] - counts['total'] == cfg.model.context * cfg.model.d_model
  assert learned['non_embedding'] == counts['non_embedding']


def test_rope_scores_depend_only_on_the_offset():
  q, k = jax.random.normal(jax.random.key(0), (2, 1, 5, 3, 16))
  positions = jnp.array([[0, 1, 2, 3, 4]])
  scores = lambda shift: jnp.einsum('bthd,bshd->bhts', gm.rotary(q, positions + shift), gm.rotary(k, positions + shift))
  np.testing.assert_allclose(scores(0), scores(17), atol=1e-4)
  assert not np.allclose(scores(0), jnp.einsum('bthd,bshd->bhts', q, k), atol=1e-2)  # the rotation does act


def test_rope_logits_invariant_to_shifting_all_positions(rope):
  cfg, lm, params, tokens = rope
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  base = lm.apply({'params': params}, tokens, positions=positions)
  shifted = lm.apply({'params': params}, tokens, positions=positions + 7)
  np.testing.assert_allclose(base, shifted, atol=1e-4, rtol=1e-4)


def test_rope_sharded_forward_equals_single_device(rope):
  cfg, lm, params, tokens = rope
  tokens = jnp.concatenate([tokens, tokens[:1]] * 2)[:8]
  reference = jax.jit(lambda p, t: lm.apply({'params': p}, t))(params, tokens)
  mesh = gs.make_mesh(_mesh_config(2, 2, 2))
  shardings = gs.param_shardings(gm.abstract_variables(lm)['params'], mesh)
  sharded = gm.init_params(lm, jax.random.key(0), shardings=shardings)
  with gs.activation_context(mesh):
    logits = jax.jit(lambda p, t: lm.apply({'params': p}, t))(sharded, jax.device_put(tokens, gs.batch_sharding(mesh)))
  np.testing.assert_allclose(logits, reference, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize('overrides,message', [
    ({'model.positions': 'alibi'}, r"model.positions='alibi' is not valid: use one of 'learned', 'rope'"),
    ({'model.positions': 'rope', 'model.d_head': 7}, r'model.d_head=7 must be even'),
])
def test_rope_config_validation(overrides, message):
  with pytest.raises(ConfigError, match=message):
    gcfg.load_config_file('configs/tiny.py:nano', overrides)
  assert gcfg.load_config_file('configs/tiny.py:nano').model.positions == 'learned'


def test_gpt2_export_refuses_rope(rope):
  with pytest.raises(ConfigError, match=r"cannot be written as GPT-2: model.positions='rope'"):
    hf.check_expressible(rope[0])
