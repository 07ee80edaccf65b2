"""Language-model losses and log-prob helpers, shared by pretraining, the eval harness, sampling, SFT, DPO and PPO.

Every gather of a target's log-probability goes through token_logprobs, so the numerics (float32, one
logsumexp over the real vocabulary and its padding at NEG_INF) are the same wherever a log-prob is compared with
another: a sampler's against a trainer's (PPO ratios), a policy's against its reference (DPO, the KL penalty).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from gpt_jax import model as gm

# loss_fn(params, batch, rng, train, frozen) -> (summed loss, summed weight, dict of summed extra metrics).
# `train` switches dropout on; `frozen` holds params that are inputs but not trained (a reference policy, a reward
# model), passed to the jitted step as sharded arguments; it is {} for pretraining.
LossFn = Callable[[Any, dict, jax.Array, bool, Any], tuple[jax.Array, jax.Array, dict]]


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log p(targets) under logits: logits [..., vocab], targets [...] int -> [...] float32."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def sequence_logprobs(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """Summed log p(targets) over the positions where mask is true (a completion): [batch, length, vocab],
  [batch, length], [batch, length] -> [batch]."""
  return jnp.sum(jnp.where(mask.astype(bool), token_logprobs(logits, targets), 0.0), axis=-1)


def lm_loss_fn(config) -> LossFn:
  """Next-token cross entropy of GPTLM over batch['inputs'] / batch['targets'], summed over batch['loss_mask']
  (default: every position); batch['positions'] and batch['segment_ids'] are passed on when present."""
  deterministic_lm = gm.GPTLM(config.model, deterministic=True)
  dropout_lm = gm.GPTLM(config.model, deterministic=False)

  def loss_fn(params, batch, rng, train, frozen):
    del frozen
    module = dropout_lm if train else deterministic_lm
    logits = module.apply({'params': params}, batch['inputs'], positions=batch.get('positions'),
                          segment_ids=batch.get('segment_ids'), rngs={'dropout': rng})
    losses = -token_logprobs(logits, batch['targets'])
    mask = batch.get('loss_mask', jnp.ones_like(losses))
    return jnp.sum(losses * mask), jnp.sum(mask), {}
  return loss_fn
