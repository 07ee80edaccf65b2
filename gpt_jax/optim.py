"""The optax recipe of GPT-3 Appendix B, with schedules in tokens rather than steps.

Learning rate: linear warmup over warmup_tokens, cosine decay to final_lr_fraction of the peak at decay_tokens,
constant after. AdamW (decoupled weight decay on a configurable mask), global-norm clipping. The learning rate
is a hyperparameter injected each step from the tokens seen, so a batch-size ramp leaves the schedule intact.
The batch ramp itself grows linearly in tokens but is rounded down to power-of-two multiples of its start, so
the train step compiles once per distinct size (a handful), not once per step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def learning_rate(optim_config, tokens):
  """Learning rate after `tokens` tokens (works on Python numbers and traced arrays)."""
  o = optim_config
  tokens = jnp.asarray(tokens, jnp.float32)
  warmup = jnp.minimum(tokens / float(max(o.warmup_tokens, 1)), 1.0)
  progress = jnp.clip((tokens - o.warmup_tokens) / float(max(o.decay_tokens - o.warmup_tokens, 1)), 0.0, 1.0)
  cosine = o.final_lr_fraction + (1 - o.final_lr_fraction) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
  return o.peak_lr * jnp.where(tokens < float(o.warmup_tokens), warmup, cosine)


def weight_decay_mask(params, mode: str):
  """True for parameters that decay: 'matrices' = kernels and embeddings (ndim >= 2 per layer), 'all', 'none'.

  Scanned layers add a leading layers axis, so a leaf counts as a matrix when it is not a bias, LayerNorm scale,
  or position-independent vector.
  """
  def is_matrix(path, leaf):
    name = str(getattr(path[-1], 'key', path[-1]))
    return name not in ('bias', 'scale') and leaf.ndim >= 2
  if mode == 'all':
    return jax.tree.map(lambda _: True, params)
  if mode == 'none':
    return jax.tree.map(lambda _: False, params)
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(optim_config, params) -> optax.GradientTransformation:
  """AdamW with injected learning rate: set state.hyperparams['learning_rate'] each step (see loop.py)."""
  o = optim_config
  mask = weight_decay_mask(params, o.wd_mask)

  def build(learning_rate):
    parts = [optax.clip_by_global_norm(o.clip)] if o.clip > 0 else []
    parts.append(optax.adamw(learning_rate, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask))
    return optax.chain(*parts)
  return optax.inject_hyperparams(build)(learning_rate=o.peak_lr)


def batch_sequences(config, tokens_seen: int, quantum: int, tokens_per_row: int | None = None) -> int:
  """Global batch in rows at `tokens_seen` under the GPT-3 ramp, a multiple of `quantum` (the batch shards); a row
  holds tokens_per_row tokens (default: model.context, a pretraining sequence)."""
  t, o = config.train, config.optim
  context = tokens_per_row or config.model.context
  full = t.batch_tokens // context
  if not o.ramp_start_tokens or tokens_seen >= o.ramp_tokens:
    return full
  start = max(o.ramp_start_tokens // context, 1)
  linear = start + (full - start) * tokens_seen / max(o.ramp_tokens, 1)
  size = start * 2 ** int(math.floor(math.log2(max(linear / start, 1.0))))
  size = max(quantum, size // quantum * quantum)
  return min(size, full)


def schedule_warning(config) -> str | None:
  """A sentence when the run ends before its cosine decay does (a shortened run would stay near peak_lr)."""
  o, total = config.optim, config.train.total_tokens
  if o.decay_tokens <= total:
    return None
  end = float(learning_rate(o, total)) / o.peak_lr
  return (f'optim.decay_tokens={o.decay_tokens:,} is beyond train.total_tokens={total:,}: the run ends at '
          f'{100 * end:.0f}% of optim.peak_lr; pass --config.optim.decay_tokens={total} to decay over the run.')
