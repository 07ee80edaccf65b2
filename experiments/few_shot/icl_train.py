"""Training for the in-context learning experiment: small GPTs (the repo's GPTLM, byte vocabulary) trained with
AdamW at a constant learning rate after a short warmup, on batches from a host-side generator.

The recipe is the induction-friendly one: beta2 0.99, no weight decay, gradient clipping at 1, no decay of the
learning rate (short runs; an induction head forms abruptly and a decayed rate delays it).
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gpt_jax import config as gcfg
from gpt_jax import model as gm

WARMUP_STEPS = 100


def model_config(n_layers: int, d_model: int, context: int, positions: str):
  """A validated config: byte tokenizer, d_head 16 (n_heads = d_model / 16), MLP 4 d_model, dense attention."""
  c = gcfg.default_config()
  m = c.model
  m.n_layers, m.d_model, m.n_heads, m.context, m.positions = n_layers, d_model, max(1, d_model // 16), context, positions
  c.train.batch_tokens = context
  return gcfg.validate(c)


def per_token_loss(module, params, tokens):
  """tokens [batch, length] -> next-token losses [batch, length - 1] (nats)."""
  logits = module.apply({'params': params}, tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])


def train(config, batches: Iterator[np.ndarray], steps: int, lr: float, seed: int = 0,
          log_every: int = 100, on_log: Callable[..., None] | None = None):
  """Trains a fresh GPTLM for `steps` steps on `batches` ([batch, length] int32); every log_every steps calls
  on_log(step, mean training loss since the last call, seconds elapsed, params). Returns (module, params)."""
  module = gm.GPTLM(config.model)
  params = gm.init_params(module, jax.random.key(seed))
  schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, WARMUP_STEPS), optax.constant_schedule(lr)],
                                  [WARMUP_STEPS])
  optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=0.0))
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, tokens):
    loss, grads = jax.value_and_grad(lambda p: per_token_loss(module, p, tokens).mean())(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  start, losses = time.time(), []
  for i in range(1, steps + 1):
    params, state, loss = step(params, state, jnp.asarray(next(batches)))
    losses.append(loss)
    if on_log and (i % log_every == 0 or i == steps):
      on_log(i, float(np.mean(jax.device_get(losses))), time.time() - start, params)
      losses = []
  return module, params
