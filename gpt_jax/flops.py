"""Parameter counts (total and Kaplan's non-embedding N), FLOPs per token, device peak FLOP/s, and MFU.

Counts come two ways that tests hold equal: a closed form from the config, and jax.eval_shape over the real model
(no allocation). FLOPs follow the nanoGPT / PaLM convention: 6 N_matmul + 12 n_layers n_heads d_head context per
trained token, with the LM-head matmul counted in N_matmul and attention counted without the causal halving.
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax.model import ModelConfig

# Dense bf16 peak FLOP/s per chip (vendor figures); matched against jax's device_kind, most specific first.
DEVICE_PEAKS = (
    ('v6 lite', 918e12), ('v6e', 918e12),
    ('v5 lite', 197e12), ('v5e', 197e12),
    ('v5p', 459e12), ('v5', 459e12),
    ('v4', 275e12),
    ('h200', 989e12), ('h100', 989e12),
    ('a100', 312e12),
)


def count_params(config, padded: bool = False) -> dict[str, int]:
  """Closed-form counts: {'total', 'non_embedding', 'embedding'}. padded=True counts the padded vocabulary."""
  c = ModelConfig.of(config)
  vocab = c.padded_vocab_size if padded else c.vocab_size
  d, attn = c.d_model, c.n_heads * c.d_head
  per_layer = (3 * (d * attn + attn)  # query, key, value
               + attn * d + d  # output projection
               + d * c.d_ff + c.d_ff + c.d_ff * d + d  # MLP
               + 4 * d)  # two LayerNorms
  non_embedding = c.n_layers * per_layer + (2 * d if c.ln_placement == 'pre' else 0)
  embedding = vocab * d + (c.context * d if c.positions == 'learned' else 0) + (0 if c.tie_embeddings else vocab * d)
  return dict(total=non_embedding + embedding, non_embedding=non_embedding, embedding=embedding)


def count_params_abstract(params_shapes) -> int:
  """Parameter count of a (possibly abstract) params pytree."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params_shapes))


def flops_per_token(config, context: int | None = None) -> float:
  """Training FLOPs per token (forward + backward = 3x forward) at sequence length `context`."""
  c = ModelConfig.of(config)
  context = c.context if context is None else context
  d, attn = c.d_model, c.n_heads * c.d_head
  matmul_params = c.n_layers * (4 * d * attn + 2 * d * c.d_ff) + c.padded_vocab_size * d
  return 6 * matmul_params + 12 * c.n_layers * attn * context


def device_peak_flops(device=None, probe_seconds: float = 1.0) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the figure came from). CPU: a measured float32 matmul probe."""
  device = device or jax.devices()[0]
  kind = device.device_kind.lower()
  for key, peak in DEVICE_PEAKS:
    if key in kind and device.platform != 'cpu':
      return peak, f'table ({device.device_kind}, dense bf16)'
  return matmul_probe(device, probe_seconds), f'measured float32 matmul probe on {device.device_kind}'


@functools.lru_cache(maxsize=None)
def total_peak_flops() -> tuple[float, str]:
  """(peak FLOP/s of all devices in the job, source). A CPU probe already measures a whole host."""
  device = jax.local_devices()[0]
  peak, source = device_peak_flops(device)
  if device.platform == 'cpu':
    return peak * jax.process_count(), source
  return peak * jax.device_count(), f'{jax.device_count()} x {source}'


def matmul_probe(device=None, seconds: float = 1.0, n: int = 2048) -> float:
  """Best observed FLOP/s of an n x n float32 matmul on `device` (the practical peak of a CPU host)."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32), device)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = math.inf
  deadline = time.perf_counter() + seconds
  while time.perf_counter() < deadline or best == math.inf:
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


def corrected_peak(peak: float, source: str, achieved: float) -> float:
  """The peak to use once a run achieved more model FLOP/s than `peak`. A CPU probe can read low on a busy host:
  it is measured again, and the peak becomes the largest of the old figure, the new one and what the run achieved
  (the host did at least that), so MFU never exceeds 100%. A table peak is a vendor figure and is kept."""
  if not source.startswith('measured'):
    return peak
  new = max(peak, matmul_probe(jax.local_devices()[0]) * jax.process_count(), achieved)
  if jax.process_index() == 0:
    print(f'peak re-measured: {new:.3g} FLOP/s (the run achieved {achieved:.3g} model FLOP/s against the start-up '
          f'probe\'s {peak:.3g}); MFU from here on uses it.', flush=True)
  return new


def mfu(tokens_per_second: float, config, peak_flops: float, context: int | None = None) -> float:
  """Model FLOPs utilisation: achieved model FLOP/s over the peak of the devices used."""
  return tokens_per_second * flops_per_token(config, context) / peak_flops
