"""Shared test fixtures: tiny validated configs and a tiny random language model."""

import jax

from gpt_jax import config as gcfg
from gpt_jax import model as gm


def tiny_config(**overrides):
  """A validated 2-layer config; overrides are dotted keys with '__' for '.', e.g. model__n_heads=4."""
  c = gcfg.default_config()
  c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.context = 2, 64, 4, 32
  for key, value in overrides.items():
    gcfg.apply_override(c, key.replace('__', '.'), value)
  return gcfg.validate(c)


def tiny_lm(context: int, seed: int):
  """(config, module, params, full) for a default-shaped random GPTLM; full(params, tokens) -> log-probs."""
  config = gcfg.default_config()
  config.model.context = context
  config.train.batch_tokens = context
  config = gcfg.validate(config)
  module = gm.GPTLM(config.model)
  params = gm.init_params(module, jax.random.key(seed))
  full = jax.jit(lambda p, t: jax.nn.log_softmax(module.apply({'params': p}, t), axis=-1))
  return config, module, params, full


def load_lm(path, mesh=None):
  """(config, params, step) of the GPTLM saved in a workdir or export dir, params placed on mesh (default: one
  device), as the inference commands load it."""
  from gpt_jax import checkpoint as ckpt_lib
  from gpt_jax import sharding as gs
  config = ckpt_lib.load_config(str(path))
  abstract = gs.abstract_params(gm.abstract_variables(gm.GPTLM(config.model))['params'],
                                mesh or gs.single_device_mesh())
  params, step = ckpt_lib.load_for_inference(str(path), abstract)
  return config, params, step
