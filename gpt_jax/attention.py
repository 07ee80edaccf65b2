"""Attention masks (causal, locally banded, per-document) and the two attention implementations.

Masks are built from explicit query and key positions, so the same code serves the full forward pass
(positions 0..T-1), the KV-cache decode step (queries at cache offsets), and packed documents (segment ids).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_mask(q_pos, k_pos, *, window, k_valid=None, q_segment=None, k_segment=None):
  """Boolean mask [batch, 1, q_len, k_len]: True where a query may attend to a key.

  q_pos: [batch, q_len] absolute positions of the queries; k_pos: [batch, k_len] of the keys.
  window: None for dense causal attention, else the band width (a query sees itself and window - 1 earlier keys);
    may be a traced scalar so scanned layers can alternate dense and banded attention.
  k_valid: optional [batch, k_len] mask of keys that exist (the filled part of a KV cache).
  """
  q = q_pos[:, :, None]
  k = k_pos[:, None, :]
  mask = k <= q
  if window is not None:
    mask &= k > q - window
  if k_valid is not None:
    mask &= k_valid[:, None, :]
  if q_segment is not None:
    mask &= q_segment[:, :, None] == k_segment[:, None, :]
  return mask[:, None, :, :]


def xla_attention(q, k, v, mask, *, dropout_rate=0.0, dropout_rng=None, kv_heads_major=False):
  """Plain einsum-softmax attention. q: [b, t, h, d], k/v: [b, s, h, d] (or [b, h, s, d] with kv_heads_major,
  the KV-cache layout), mask: [b, 1, t, s] -> [b, t, h, d]."""
  kv = 'bhsd' if kv_heads_major else 'bshd'
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum(f'bthd,{kv}->bhts', q * scale, k, preferred_element_type=jnp.float32)
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  return jnp.einsum(f'bhts,{kv}->bthd', probs.astype(v.dtype), v)


def dot_product_attention(q, k, v, mask):
  """jax.nn.dot_product_attention: cuDNN flash attention on NVIDIA GPUs, XLA elsewhere. Same shapes as above.

  Attention dropout is not supported by this path and cuDNN needs bf16/fp16 inputs; config validation refuses
  both combinations. The mask is passed whole (alternating layers get their band width as a traced value), so
  cuDNN applies it as a bias rather than skipping masked blocks.
  """
  implementation = 'cudnn' if target_platform() == 'gpu' else None
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


def target_platform() -> str:
  """The platform the program is built for: the mesh's when one is set (jax.set_mesh, as in the training step),
  so a GPU executable compiled ahead of time on a CPU host keeps cuDNN; else this host's default backend."""
  device = jax.sharding.get_abstract_mesh().abstract_device
  return device.platform if device is not None else jax.default_backend()
