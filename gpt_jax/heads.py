"""Heads on the GPT trunk: reward (scalar at the last real token), value (scalar per token), classifier (GPT-1),
and PPO's policy and value as one params tree.

Each model here is the same 'trunk' subtree as model.GPTLM plus a head with its own params subtree, so a pretrained
trunk checkpoint initialises any of them: params = dict(head_params, trunk=pretrained['trunk']).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gpt_jax.model import GPTLM, ModelConfig, Transformer, lm_logits


def last_token_index(mask, length: int):
  """Index of the last non-padding position of each row; mask: [batch, length] (1 = real token), None = all real."""
  if mask is None:
    return jnp.full((1,), length - 1)
  positions = jnp.arange(length)[None, :]
  return jnp.max(jnp.where(mask > 0, positions, 0), axis=1)


class ScalarHead(nn.Module):
  """d_model -> 1 projection with its own params; zero-initialised bias, small weights."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, hidden):
    cfg = self.cfg
    out = nn.Dense(1, dtype=jnp.float32, param_dtype=cfg.param_dtype,
                   kernel_init=nn.with_logical_partitioning(
                       nn.initializers.normal(1.0 / (cfg.d_model + 1) ** 0.5), ('embed', None)),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(hidden.astype(jnp.float32))
    return out[..., 0]


class RewardModel(nn.Module):
  """InstructGPT reward model: tokens [batch, length], mask [batch, length] -> reward [batch] at the last real token."""
  config: Any
  deterministic: bool = True

  @nn.compact
  def __call__(self, tokens, mask=None):
    cfg = ModelConfig.of(self.config)
    hidden = Transformer(cfg, self.deterministic, name='trunk')(tokens)
    last = hidden[jnp.arange(hidden.shape[0]), last_token_index(mask, hidden.shape[1])]
    return ScalarHead(cfg, name='reward_head')(last)


class ValueModel(nn.Module):
  """PPO value function: tokens [batch, length] -> values [batch, length], one per position."""
  config: Any
  deterministic: bool = True

  @nn.compact
  def __call__(self, tokens):
    cfg = ModelConfig.of(self.config)
    hidden = Transformer(cfg, self.deterministic, name='trunk')(tokens)
    return ScalarHead(cfg, name='value_head')(hidden)


class Classifier(nn.Module):
  """GPT-1 fine-tuning: class logits from the last real token, plus LM logits for the auxiliary LM loss (L3 = L2 +
  lambda * L1). tokens, mask: [batch, length] -> (class logits [batch, n_classes], lm logits [batch, length, vocab])."""
  config: Any
  n_classes: int
  deterministic: bool = True

  @nn.compact
  def __call__(self, tokens, mask=None):
    cfg = ModelConfig.of(self.config)
    trunk = Transformer(cfg, self.deterministic, name='trunk')
    hidden = trunk(tokens)
    last = hidden[jnp.arange(hidden.shape[0]), last_token_index(mask, hidden.shape[1])]
    class_logits = nn.Dense(self.n_classes, dtype=jnp.float32, param_dtype=cfg.param_dtype, name='cls_head',
                            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                                                     ('embed', None)),
                            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))(last)
    return class_logits, lm_logits(self, trunk, hidden)


class PolicyValue(nn.Module):
  """PPO's trained params as one tree: {'policy': a GPTLM, 'value': a ValueModel with its own trunk}. Calling it
  gives (logits [batch, length, vocab], values [batch, length]); PPO applies the two halves on their own."""
  config: Any

  @nn.compact
  def __call__(self, tokens):
    return GPTLM(self.config, name='policy')(tokens), ValueModel(self.config, name='value')(tokens)
