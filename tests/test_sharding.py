"""Sharding: data / FSDP / tensor parallel meshes give the single-device result, and params sit where RULES say."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from tests.helpers import tiny_config


def _mesh_config(data, fsdp, tensor, dcn_data=1, dcn_fsdp=1):
  return types.SimpleNamespace(data=data, fsdp=fsdp, tensor=tensor, dcn_data=dcn_data, dcn_fsdp=dcn_fsdp)


def _loss(lm, params, tokens):
  logits = lm.apply({'params': params}, tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


@pytest.fixture(scope='module')
def reference():
  cfg = tiny_config(model__attention='alternating', model__local_window=8)
  lm = gm.GPTLM(cfg.model)
  params = gm.init_params(lm, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (8, 33), 0, cfg.model.vocab_size)
  logits = jax.jit(lambda p, t: lm.apply({'params': p}, t))(params, tokens)
  grads = jax.jit(jax.grad(lambda p, t: _loss(lm, p, t)))(params, tokens)
  return cfg, lm, params, tokens, logits, grads


@pytest.mark.parametrize('shape', [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_forward_and_grads_equal_single_device(reference, shape):
  cfg, lm, params, tokens, ref_logits, ref_grads = reference
  mesh = gs.make_mesh(_mesh_config(*shape))
  assert dict(mesh.shape) == dict(zip(gs.MESH_AXES, shape))
  shardings = gs.param_shardings(gm.abstract_variables(lm)['params'], mesh)
  sharded_params = gm.init_params(lm, jax.random.key(0), shardings=shardings)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), sharded_params, params)  # same init
  batch = jax.device_put(tokens, gs.batch_sharding(mesh))
  with gs.activation_context(mesh):
    logits = jax.jit(lambda p, t: lm.apply({'params': p}, t))(sharded_params, batch)
    grads = jax.jit(jax.grad(lambda p, t: _loss(lm, p, t)), out_shardings=shardings)(sharded_params, batch)
  np.testing.assert_allclose(logits, ref_logits, atol=2e-5, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-4), grads, ref_grads)

  data, fsdp, tensor = shape
  qkv = sharded_params['trunk']['blocks']['attn']['qkv']['kernel']  # [layers, embed, heads, 3, head_dim]
  fc = sharded_params['trunk']['blocks']['mlp']['fc']['kernel']  # [layers, embed, mlp]
  wte = sharded_params['trunk']['wte']['embedding']  # [vocab, embed]
  assert qkv.sharding.spec == P(None, 'fsdp', 'tensor', None, None)
  assert fc.sharding.spec == P(None, 'fsdp', 'tensor')
  assert wte.sharding.spec == P('tensor', 'fsdp')
  n_layers, d_model, n_heads, three, d_head = qkv.shape
  shard_shape = qkv.addressable_shards[0].data.shape
  assert shard_shape == (n_layers, d_model // fsdp, n_heads // tensor, three, d_head)
  assert logits.addressable_shards[0].data.shape[0] == tokens.shape[0] // (data * fsdp)


def test_optimizer_state_follows_param_shardings(reference):
  cfg, lm, params, *_ = reference
  mesh = gs.make_mesh(_mesh_config(1, 4, 2))
  shardings = gs.param_shardings(gm.abstract_variables(lm)['params'], mesh)
  optimizer = optax.adamw(1e-3)
  abstract_state = jax.eval_shape(optimizer.init, params)
  state_shardings = gs.state_shardings(abstract_state, params, shardings, mesh)
  sharded_params = gm.init_params(lm, jax.random.key(0), shardings=shardings)
  state = jax.jit(optimizer.init, out_shardings=state_shardings)(sharded_params)
  mu = state[0].mu['trunk']['blocks']['mlp']['fc']['kernel']
  assert mu.sharding.spec == P(None, 'fsdp', 'tensor')
  assert state[0].count.sharding.spec == P()


def test_mesh_inference_and_errors():
  assert gs.mesh_shape(_mesh_config(2, -1, 2), 8)[0] == (2, 2, 2)
  assert gs.mesh_shape(_mesh_config(1, 2, -1), 8)[0] == (1, 2, 4)
  with pytest.raises(ConfigError, match=r'mesh \(data=2, fsdp=2, tensor=1\) has 4 devices but there are 8'):
    gs.make_mesh(_mesh_config(2, 2, 1))
  with pytest.raises(ConfigError, match='do not divide'):
    gs.make_mesh(_mesh_config(3, -1, 1))
  with pytest.raises(ConfigError, match='dcn_data'):
    gs.make_mesh(_mesh_config(1, -1, 1, dcn_data=3))


def test_multislice_hybrid_mesh_layout():
  # 2 "slices" of 4 devices: data is DCN-major, so each slice holds one contiguous half of the batch and FSDP
  # collectives stay inside a slice.
  mesh = gs.make_mesh(_mesh_config(1, 2, 2, dcn_data=2))
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'tensor': 2}
  ids = np.vectorize(lambda d: d.id)(mesh.devices)
  assert set(ids[0].ravel()) == {0, 1, 2, 3} and set(ids[1].ravel()) == {4, 5, 6, 7}


def test_tensor_axis_must_divide_heads():
  with pytest.raises(ConfigError, match='model.n_heads=4 is not divisible by mesh.tensor=3'):
    tiny_config(mesh__tensor=3)


def test_activation_constraints_are_noops_without_a_mesh(reference):
  cfg, lm, params, tokens, ref_logits, _ = reference
  np.testing.assert_array_equal(lm.apply({'params': params}, tokens), ref_logits)


def test_batch_sharding_places_rows_over_data_and_fsdp():
  mesh = gs.make_mesh(_mesh_config(2, 4, 1))
  x = jax.device_put(jnp.arange(16 * 4).reshape(16, 4), gs.batch_sharding(mesh))
  assert {s.data.shape for s in x.addressable_shards} == {(2, 4)}
