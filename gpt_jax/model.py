"""The GPT trunk (Flax linen): embeddings, scanned decoder blocks, LM logits, and KV-cache decoding.

Everything is a pure function of an explicit params pytree. The trunk returns hidden states; the LM logits (here)
and the reward / value / classifier heads (heads.py) are separate modules with their own params subtrees, so one
'trunk' checkpoint initialises any of them. Positions enter as a learned table added to the token embeddings
(GPT-1/2/3, the default) or, with model.positions='rope', as rotations of each head's queries and keys (no position
parameters). Parameters and key activations carry logical axis names; only sharding.py maps them to mesh axes.

Decoding uses an explicit cache pytree {'k', 'v', 'end': [batch]} (decoding.init_cache): each call appends its tokens
at row b's offset end[b] and returns the cache with end advanced. 'k' and 'v' follow the layer layout: one
[n_layers, batch, n_heads, max_length, d_head] array for scanned layers (what nn.scan slices), a tuple of n_layers
[batch, n_heads, max_length, d_head] arrays for unrolled ones, so a decode loop updates each layer's in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gpt_jax import attention

NEG_INF = -1e30  # logit of padding vocabulary ids: finite (no NaN in x * 0), and never the argmax
DENSE_WINDOW = 2**30  # the band width that makes a banded mask dense


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A hashable copy of the validated config.model section (see config.py for each field's meaning)."""
  n_layers: int
  d_model: int
  n_heads: int
  d_head: int
  d_ff: int
  vocab_size: int
  padded_vocab_size: int
  context: int
  positions: str
  ln_placement: str
  ln_eps: float
  attention: str
  local_window: int
  attention_impl: str
  dropout_embed: float
  dropout_attn: float
  dropout_resid: float
  init_std: float
  scale_residual_init: bool
  tie_embeddings: bool
  dtype: str
  param_dtype: str
  scan_layers: bool
  remat: str

  @classmethod
  def of(cls, config) -> 'ModelConfig':
    if isinstance(config, cls):
      return config
    if isinstance(config, ml_collections.ConfigDict) and 'model' in config:
      config = config.model
    values = {f.name: config[f.name] for f in dataclasses.fields(cls)}
    if values['d_head'] is None or values['padded_vocab_size'] is None:
      raise ValueError('config.model has not been validated: call gpt_jax.config.validate(config) first.')
    return cls(**values)

  def layer_windows(self) -> jnp.ndarray:
    """Band width of each layer: GPT-3 alternates dense (even layers) and locally banded (odd layers)."""
    if self.attention == 'dense':
      return jnp.full((self.n_layers,), DENSE_WINDOW, jnp.int32)
    return jnp.where(jnp.arange(self.n_layers) % 2 == 0, DENSE_WINDOW, self.local_window).astype(jnp.int32)


@jax.custom_vjp
def dense(x, w):
  """x [..., k] @ w [k, n]. Same math as jnp.dot; its VJP writes the weight gradient as one token-major
  contraction (x^T g over all leading axes), which XLA:CPU runs 2-3x faster than the transposed-layout dot that
  autodiff of dot_general yields, and which is no worse on accelerators."""
  return jnp.dot(x, w)


def _dense_fwd(x, w):
  return jnp.dot(x, w), (x, w)


def _dense_bwd(residuals, g):
  x, w = residuals
  dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
  dw = jax.lax.dot_general(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ())))
  return dx, dw


dense.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def dense_transposed(x, w):
  """x [..., k] @ w[n, k]^T, e.g. the tied LM head against the [vocab, embed] table; gradient layout as dense()."""
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))


def _dense_transposed_fwd(x, w):
  return dense_transposed(x, w), (x, w)


def _dense_transposed_bwd(residuals, g):
  x, w = residuals
  dx = jnp.dot(g, w)
  dw = jax.lax.dot_general(g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1]), (((0,), (0,)), ((), ())))
  return dx, dw


dense_transposed.defvjp(_dense_transposed_fwd, _dense_transposed_bwd)


def rotary(x, positions, base: float = 10000.0):
  """Rotary position embedding (Su et al. 2021): x [batch, length, heads, d_head] rotated by angle
  position * base^(-2i/d_head) in each pair (i, i + d_head/2), positions [batch, length]. A query-key dot product
  then depends on the two positions only through their difference."""
  half = x.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[..., None, None].astype(jnp.float32) * freqs  # [batch, length, 1, half]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def _dense_init(std):
  return nn.initializers.normal(stddev=std)


def _resid_std(cfg: ModelConfig) -> float:
  """GPT-2's modified init: residual output projections scaled by 1/sqrt(N) for N = 2 * n_layers residual layers."""
  return cfg.init_std / (2 * cfg.n_layers) ** 0.5 if cfg.scale_residual_init else cfg.init_std


def _logical(init, names):
  return nn.with_logical_partitioning(init, names)


def _constrain(x, names):
  return nn.with_logical_constraint(x, names)


def _layer_norm(cfg: ModelConfig, name: str):
  return nn.LayerNorm(
      epsilon=cfg.ln_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name,
      scale_init=_logical(nn.initializers.ones, ('embed',)), bias_init=_logical(nn.initializers.zeros, ('embed',)))


class QKVProjection(nn.Module):
  """[batch, length, d_model] -> q, k, v, each [batch, length, n_heads, d_head], from one fused matmul.

  The kernel is [embed, heads, 3, head_dim]: one [d_model, 3 n_heads d_head] matmul instead of three (the
  per-token decode step is dominated by per-matmul cost), and heads stay the major sharded axis, so tensor
  parallelism gives each device whole heads with their q, k and v.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    kernel = self.param('kernel', _logical(_dense_init(cfg.init_std), ('embed', 'heads', None, 'head_dim')),
                        (cfg.d_model, cfg.n_heads, 3, cfg.d_head), jnp.dtype(cfg.param_dtype))
    bias = self.param('bias', _logical(nn.initializers.zeros, ('heads', None, 'head_dim')),
                      (cfg.n_heads, 3, cfg.d_head), jnp.dtype(cfg.param_dtype))
    y = dense(x.astype(cfg.dtype), kernel.reshape(cfg.d_model, -1).astype(cfg.dtype))
    y = y.reshape(*x.shape[:-1], cfg.n_heads, 3, cfg.d_head) + bias.astype(cfg.dtype)
    return y[..., 0, :], y[..., 1, :], y[..., 2, :]


class OutputProjection(nn.Module):
  """[batch, length, n_heads, d_head] -> [batch, length, d_model]; init scaled by 1/sqrt(2 n_layers) (GPT-2)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    kernel = self.param('kernel', _logical(_dense_init(_resid_std(cfg)), ('heads', 'head_dim', 'embed')),
                        (cfg.n_heads, cfg.d_head, cfg.d_model), jnp.dtype(cfg.param_dtype))
    bias = self.param('bias', _logical(nn.initializers.zeros, ('embed',)), (cfg.d_model,), jnp.dtype(cfg.param_dtype))
    x = x.reshape(*x.shape[:-2], cfg.n_heads * cfg.d_head).astype(cfg.dtype)
    return dense(x, kernel.reshape(-1, cfg.d_model).astype(cfg.dtype)) + bias.astype(cfg.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with d_head independent of d_model / n_heads, and an optional KV cache."""
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, window, ctx, layer_cache):
    # x: [batch, length, d_model]; layer_cache: None or (k, v), each [batch, n_heads, max_length, d_head].
    cfg = self.cfg
    names = ('act_batch', 'act_length', 'act_heads', None)
    q, k, v = QKVProjection(cfg, name='qkv')(x)
    if cfg.positions == 'rope':
      q, k = rotary(q, ctx['positions']), rotary(k, ctx['positions'])
    q, k, v = (_constrain(y, names) for y in (q, k, v))
    new_cache = None
    if layer_cache is not None:
      # The cache is heads-major, [batch, n_heads, max_length, d_head]: attention reads it without a transpose,
      # and each call writes only its new positions (row b at offset end[b]).
      write = jax.vmap(lambda cache, new, start: jax.lax.dynamic_update_slice(cache, new, (0, start, 0)))
      k = write(layer_cache[0], k.swapaxes(1, 2).astype(layer_cache[0].dtype), ctx['write_start'])
      v = write(layer_cache[1], v.swapaxes(1, 2).astype(layer_cache[1].dtype), ctx['write_start'])
      new_cache = (k, v)
      k, v = k.astype(cfg.dtype), v.astype(cfg.dtype)
    mask = attention.attention_mask(ctx['q_pos'], ctx['k_pos'], window=window, k_valid=ctx['k_valid'],
                                    q_segment=ctx['q_segment'], k_segment=ctx['k_segment'])
    if cfg.attention_impl == 'cudnn':
      if new_cache is not None:
        k, v = k.swapaxes(1, 2), v.swapaxes(1, 2)
      out = attention.dot_product_attention(q, k, v, mask)
    else:
      use_dropout = not self.deterministic and cfg.dropout_attn > 0.0
      out = attention.xla_attention(q, k, v, mask, dropout_rate=cfg.dropout_attn if use_dropout else 0.0,
                                    dropout_rng=self.make_rng('dropout') if use_dropout else None,
                                    kv_heads_major=new_cache is not None)
    out = _constrain(out, names)
    out = OutputProjection(cfg, name='out')(out)
    return out, new_cache


class Linear(nn.Module):
  """[..., d_in] -> [..., features] with a logically named kernel and bias."""
  cfg: ModelConfig
  features: int
  names: tuple[str, str]
  std: float

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    kernel = self.param('kernel', _logical(_dense_init(self.std), self.names), (x.shape[-1], self.features),
                        jnp.dtype(cfg.param_dtype))
    bias = self.param('bias', _logical(nn.initializers.zeros, self.names[1:]), (self.features,),
                      jnp.dtype(cfg.param_dtype))
    return dense(x.astype(cfg.dtype), kernel.astype(cfg.dtype)) + bias.astype(cfg.dtype)


class MLP(nn.Module):
  """Position-wise GELU MLP, d_model -> d_ff -> d_model."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    h = Linear(cfg, cfg.d_ff, ('embed', 'mlp'), cfg.init_std, name='fc')(x)
    h = _constrain(nn.gelu(h, approximate=True), ('act_batch', 'act_length', 'act_mlp'))
    return Linear(cfg, cfg.d_model, ('mlp', 'embed'), _resid_std(cfg), name='proj')(h)


class Block(nn.Module):
  """One decoder block. Signature (carry, per-layer inputs, broadcast context) so it can be nn.scan-ned."""
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x, layer_inputs, ctx):
    # x: [batch, length, d_model]; layer_inputs: (band width, this layer's (k, v) cache or None).
    cfg = self.cfg
    window, layer_cache = layer_inputs
    attn = Attention(cfg, self.deterministic, name='attn')
    mlp = MLP(cfg, name='mlp')
    drop = nn.Dropout(cfg.dropout_resid, deterministic=self.deterministic)
    if cfg.ln_placement == 'pre':
      h, new_cache = attn(_layer_norm(cfg, 'ln_1')(x), window, ctx, layer_cache)
      x = x + drop(h)
      x = x + drop(mlp(_layer_norm(cfg, 'ln_2')(x)))
    else:
      h, new_cache = attn(x, window, ctx, layer_cache)
      x = _layer_norm(cfg, 'ln_1')(x + drop(h))
      x = _layer_norm(cfg, 'ln_2')(x + drop(mlp(x)))
    x = _constrain(x, ('act_batch', 'act_length', 'act_embed'))
    return x, new_cache


REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'save_dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nn.Module):
  """The GPT trunk: tokens [batch, length] -> hidden states [batch, length, d_model] (after the final LN if pre-LN)."""
  config: Any
  deterministic: bool = True

  def setup(self):
    cfg = self.cfg = ModelConfig.of(self.config)
    self.wte = nn.Embed(cfg.padded_vocab_size, cfg.d_model, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                        embedding_init=_logical(_dense_init(cfg.init_std), ('vocab', 'embed')))
    if cfg.positions == 'learned':
      self.wpe = self.param('wpe', _logical(_dense_init(cfg.init_std), (None, 'embed')),
                            (cfg.context, cfg.d_model), jnp.dtype(cfg.param_dtype))
    block = Block
    if cfg.remat != 'none':
      block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.blocks = nn.scan(
          block, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
          in_axes=(0, nn.broadcast), length=cfg.n_layers, metadata_params={nn.PARTITION_NAME: 'layers'},
      )(cfg, self.deterministic, name='blocks')
    else:
      self.blocks = [block(cfg, self.deterministic, name=f'block_{i}') for i in range(cfg.n_layers)]
    self.drop = nn.Dropout(cfg.dropout_embed, deterministic=self.deterministic)
    if cfg.ln_placement == 'pre':
      self.ln_f = _layer_norm(cfg, 'ln_f')

  def __call__(self, tokens, *, positions=None, segment_ids=None, cache=None):
    """Returns hidden [batch, length, d_model], plus the updated cache when one is given."""
    cfg = self.cfg
    batch, length = tokens.shape
    if cache is not None:
      start = cache['end']
      positions = start[:, None] + jnp.arange(length)[None, :]
      max_length = jax.tree.leaves(cache['k'])[0].shape[-2]
      k_pos = jnp.broadcast_to(jnp.arange(max_length), (batch, max_length))
      ctx = dict(q_pos=positions, k_pos=k_pos, k_valid=k_pos < (start + length)[:, None], write_start=start,
                 q_segment=None, k_segment=None)
      layer_caches = (cache['k'], cache['v'])
    else:
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
      ctx = dict(q_pos=jnp.arange(length)[None, :].repeat(batch, 0), k_valid=None, write_start=None,
                 q_segment=segment_ids, k_segment=segment_ids)
      ctx['k_pos'] = ctx['q_pos']
      layer_caches = None
    ctx['positions'] = positions
    # Gathering rows from a vocab/FSDP-sharded table makes the partitioner replicate it anyway; doing so explicitly
    # (the same all-gather FSDP does for every matmul) avoids its slow fallback. Likewise for the position table.
    table = _constrain(self.wte.embedding, (None, None))
    # mode='clip': an id past the table (a tokenizer's pad id beyond the decoding layout's trimmed vocabulary) reads
    # a real row instead of NaN; such positions are padding, masked out of attention and never scored.
    x = jnp.take(table, tokens, axis=0, mode='clip').astype(cfg.dtype)
    if cfg.positions == 'learned':
      x = x + jnp.take(_constrain(self.wpe, (None, None)), positions, axis=0).astype(cfg.dtype)
    x = _constrain(self.drop(x), ('act_batch', 'act_length', 'act_embed'))
    windows = cfg.layer_windows()
    if cfg.scan_layers:
      x, new_caches = self.blocks(x, (windows, layer_caches), ctx)
    else:
      per_layer = []
      for i, block in enumerate(self.blocks):
        layer_cache = None if layer_caches is None else (layer_caches[0][i], layer_caches[1][i])
        x, new_cache = block(x, (windows[i], layer_cache), ctx)
        per_layer.append(new_cache)
      new_caches = None if layer_caches is None else tuple(zip(*per_layer))
    if cfg.ln_placement == 'pre':
      x = self.ln_f(x)
    if cache is None:
      return x
    return x, dict(k=new_caches[0], v=new_caches[1], end=cache['end'] + length)

  def embed_attend(self, hidden):
    """Tied LM head: hidden [batch, length, d_model] -> logits over the padded vocabulary."""
    return dense_transposed(hidden.astype(self.cfg.dtype), self.wte.embedding.astype(self.cfg.dtype))


def mask_padding_logits(logits, vocab_size: int):
  """Sets the logits of vocabulary padding ids to NEG_INF so they are never sampled or scored.

  Written as an update of the padding columns only: a select over the whole [batch, length, vocab] array costs a
  full extra pass over the largest activation, forward and backward."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] == vocab_size:
    return logits
  return logits.at[..., vocab_size:].set(NEG_INF)


class GPTLM(nn.Module):
  """Trunk + LM head: tokens [batch, length] -> logits [batch, length, padded_vocab] (float32)."""
  config: Any
  deterministic: bool = True

  @nn.compact
  def __call__(self, tokens, *, positions=None, segment_ids=None, cache=None, logits_at=None):
    """logits_at: optional positions, [batch] or [batch, n]; then only row b's logits at those positions are
    computed, [batch, 1 or n, padded_vocab] (a prefill needs just the last prompt token's, PPO the response
    positions', and the head is the largest matmul)."""
    cfg = ModelConfig.of(self.config)
    trunk = Transformer(cfg, self.deterministic, name='trunk')
    out = trunk(tokens, positions=positions, segment_ids=segment_ids, cache=cache)
    hidden, new_cache = out if cache is not None else (out, None)
    if logits_at is not None:
      at = logits_at if logits_at.ndim == 2 else logits_at[:, None]
      hidden = jnp.take_along_axis(hidden, at[:, :, None], axis=1)
    logits = lm_logits(self, trunk, hidden)
    return logits if cache is None else (logits, new_cache)


def lm_logits(parent: nn.Module, trunk: Transformer, hidden):
  """The LM head, called from the compact method of a module that owns `trunk`: the tied embedding, or that
  module's own 'lm_head' kernel. hidden [batch, length, d_model] -> float32 logits, padding ids at NEG_INF."""
  cfg = ModelConfig.of(trunk.config)
  if cfg.tie_embeddings:
    logits = trunk.embed_attend(hidden)
  else:
    kernel = parent.param('lm_head', _logical(_dense_init(cfg.init_std), ('embed', 'vocab')),
                          (cfg.d_model, cfg.padded_vocab_size), jnp.dtype(cfg.param_dtype))
    logits = dense(hidden.astype(cfg.dtype), kernel.astype(cfg.dtype))
  return _constrain(mask_padding_logits(logits, cfg.vocab_size), ('act_batch', 'act_length', 'act_vocab'))


def abstract_variables(module: nn.Module, batch_size: int = 1):
  """Boxed (logically partitioned) shapes of module's variables, via jax.eval_shape: nothing is allocated."""
  tokens = jax.ShapeDtypeStruct((batch_size, 1), jnp.int32)
  return jax.eval_shape(lambda rng, t: module.init({'params': rng, 'dropout': rng}, t), jax.random.key(0), tokens)


def init_params(module: nn.Module, rng, batch_size: int = 1, shardings=None):
  """Initialises module's params as a plain pytree; placed with `shardings` (sharding.param_shardings) if given."""
  def init(rng):
    tokens = jnp.zeros((batch_size, 1), jnp.int32)
    return nn.unbox(module.init({'params': rng, 'dropout': rng}, tokens)['params'])
  return jax.jit(init, out_shardings=shardings)(rng)
