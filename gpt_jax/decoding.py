"""Pure, jittable generation with the KV cache: cache init, prefill, the decode scan, top-k / top-p filtering,
sampling, per-token log-probs (of the sampling distribution and of the raw one) and done flags.

Used by the sampler (sample.py), the eval harness and PPO's rollout, all inside jit. The decode-time parameter
layout (decoding_layout) lives here too: the same GPTLM with unrolled layers and an untied, unpadded head, which
decodes fastest. Host-side work (bucketing, padding, text, stop strings) is sample.py's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gpt_jax import losses
from gpt_jax.model import ModelConfig


def init_cache(config, batch_size: int, max_length: int, dtype=None):
  """An empty KV cache for `batch_size` rows of up to `max_length` positions (at most the model context), laid
  out for config's scanned or unrolled layers (see model.py's docstring)."""
  cfg = ModelConfig.of(config)
  if max_length > cfg.context:
    raise ValueError(f'max_length={max_length} exceeds model.context={cfg.context}: shorten the prompt or '
                     f'max new tokens.')
  shape = (batch_size, cfg.n_heads, max_length, cfg.d_head)
  dtype = dtype or jnp.dtype(cfg.dtype)
  if cfg.scan_layers:
    layers = lambda: jnp.zeros((cfg.n_layers, *shape), dtype)
  else:
    layers = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers))
  return dict(k=layers(), v=layers(), end=jnp.zeros((batch_size,), jnp.int32))


def unstack_layers(params, n_layers: int):
  """A scanned model's params (trunk/blocks, stacked on a leading layer axis) as the unscanned model's
  (trunk/block_0 .. block_{n-1}); both models compute the same function."""
  trunk = dict(params['trunk'])
  blocks = trunk.pop('blocks')
  for i in range(n_layers):
    trunk[f'block_{i}'] = jax.tree.map(lambda x, i=i: x[i], blocks)
  return dict(params, trunk=trunk)


def decoding_layout(config, vocab_multiple: int = 1) -> tuple[ModelConfig, Any]:
  """(config, convert) for the same GPTLM laid out for one-token-at-a-time decoding; convert(params) maps params.

  - Layers are unrolled: under nn.scan every token slices each layer's weights and cache out of stacked arrays.
  - The LM head is its own [d_model, vocab] matrix (a tied one is copied): XLA:CPU took twice as long or more to
    read the [vocab, d_model] table transposed at batch-8 decode shapes (docs/performance.md).
  - The vocabulary is padded only to a multiple of vocab_multiple (the mesh's tensor axis), not of 128: with no
    padding ids there is nothing to mask, and masking updates (and copies) the whole logits array every token.
  Token ids below vocab_size get the same logits from both models.
  """
  cfg = ModelConfig.of(config)
  padded = min(-(-cfg.vocab_size // vocab_multiple) * vocab_multiple, cfg.padded_vocab_size)

  def convert(params):
    if cfg.scan_layers:
      params = unstack_layers(params, cfg.n_layers)
    table = params['trunk']['wte']['embedding']
    head = table.T if cfg.tie_embeddings else params['lm_head']
    trunk = dict(params['trunk'], wte=dict(embedding=table[:padded]))
    return dict(params, trunk=trunk, lm_head=head[:, :padded])

  return dataclasses.replace(cfg, scan_layers=False, tie_embeddings=False, padded_vocab_size=padded), convert


class Generation(NamedTuple):
  """What one jitted generate call returns; every field is [batch, max_new_tokens]."""
  tokens: jax.Array  # int32 sampled ids; pad_id once the row is done
  logprobs: jax.Array  # log-prob under the scaled, filtered distribution sampled from (0 for greedy: a point mass)
  raw_logprobs: jax.Array  # log-prob under the model's own distribution (temperature 1, no filtering)
  done: jax.Array  # bool, True where the row had already emitted end-of-text before this step (padding)


def filter_logits(logits: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int,
                  nucleus: bool) -> jax.Array:
  """[batch, vocab] logits -> temperature-scaled logits with -inf outside the top-k / top-p set."""
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if nucleus:
    # Keep the smallest set of most likely tokens whose mass reaches top_p: a token stays when the mass of
    # the tokens strictly more likely than it is still below top_p (so the most likely one always stays).
    sorted_logits = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    n_keep = jnp.sum(jnp.cumsum(probs, axis=-1) - probs < top_p, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(sorted_logits, n_keep - 1, axis=-1)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


def sample_token(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array, *, top_k: int,
                 greedy: bool, nucleus: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[batch, vocab] logits -> token [batch], its sampling log-prob [batch] and its raw log-prob [batch]."""
  logits = logits.astype(jnp.float32)
  if greedy:
    token = jnp.argmax(logits, axis=-1)  # ties go to the lower id
    logprob = jnp.zeros(token.shape, jnp.float32)
  else:
    filtered = filter_logits(logits, temperature, top_p, top_k=top_k, nucleus=nucleus)
    token = jax.random.categorical(rng, filtered, axis=-1)
    logprob = losses.token_logprobs(filtered, token)
  raw_logprob = losses.token_logprobs(logits, token)
  return token.astype(jnp.int32), logprob, raw_logprob


def make_generate_fn(module, model_config, out_sharding=None, *, eot_id: int | None, pad_id: int = 0):
  """The jitted core: (params, prompts [B, P], prompt_lengths [B], rng, temperature, top_p) -> Generation.

  Static (keyword) arguments: max_new_tokens, top_k (0: off), greedy, nucleus (apply top_p). P + max_new_tokens - 1
  must not exceed model_config.context. Rows past their prompt length are padding and never attended to. The
  outputs are placed with out_sharding (the Sampler replicates them, so every process can read them).
  """
  cache_dtype = jnp.dtype(model_config.dtype)
  vocab = model_config.vocab_size  # sampling reads the real vocabulary only

  @functools.partial(jax.jit, static_argnames=('max_new_tokens', 'top_k', 'greedy', 'nucleus'),
                     out_shardings=out_sharding)
  def generate(params, prompts, prompt_lengths, rng, temperature, top_p, *, max_new_tokens, top_k, greedy,
               nucleus):
    batch, prompt_len = prompts.shape
    variables = {'params': params}
    sample = functools.partial(sample_token, temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
                               nucleus=nucleus)
    # The last sampled token is never fed back, hence max_new_tokens - 1 cache slots after the prompt.
    cache = init_cache(model_config, batch, prompt_len + max_new_tokens - 1, dtype=cache_dtype)
    logits, cache = module.apply(variables, prompts, cache=cache, logits_at=prompt_lengths - 1)  # [B, 1, V]
    cache = dict(cache, end=prompt_lengths)
    last = logits[:, 0, :vocab]
    rngs = jax.random.split(rng, max_new_tokens)
    first, first_lp, first_raw = sample(last, rngs[0])

    def step(carry, step_rng):
      cache, token, done = carry
      if eot_id is not None:
        done = done | (token == eot_id)
      logits, cache = module.apply(variables, token[:, None], cache=cache)  # [B, 1, V]
      token, logprob, raw_logprob = sample(logits[:, 0, :vocab], step_rng)
      token = jnp.where(done, pad_id, token)
      logprob, raw_logprob = jnp.where(done, 0.0, logprob), jnp.where(done, 0.0, raw_logprob)
      return (cache, token, done), (token, logprob, raw_logprob, done)

    done = jnp.zeros((batch,), bool)
    _, (tokens, logprobs, raw_logprobs, dones) = jax.lax.scan(step, (cache, first, done), rngs[1:])
    join = lambda head, tail: jnp.concatenate([head[:, None], tail.T], axis=1)
    return Generation(join(first, tokens), join(first_lp, logprobs), join(first_raw, raw_logprobs),
                      join(done, dones))

  return generate
