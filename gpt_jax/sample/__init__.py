"""Sampling, host side: prompts in, trimmed completions out, around decoding.make_generate_fn (the jitted core).

The command line is __main__.py (python -m gpt_jax.sample). One jitted function per (batch, prompt bucket, max_new_tokens, sampling mode) prefills the right-padded prompts
once, then runs a lax.scan over decode steps; temperature and top_p are traced, so changing them does not
recompile. It returns the tokens, two per-token log-probs (under the temperature-scaled, filtered distribution
the token was drawn from, which PPO's importance ratios need, and under the raw model distribution) and a done
mask. End-of-text stops a row inside the scan; stop strings are applied on the host after decoding.

    python -m gpt_jax.sample --workdir=runs/x --prompt='Once upon a time' --temperature=0.8 --top_k=40
    python -m gpt_jax.sample --config=configs/tiny.py:nano --init=random --prompt=hello --max_new_tokens=20
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from gpt_jax import decoding
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.buckets import bucket_batches
from gpt_jax.config import ConfigError


@dataclasses.dataclass
class Sample:
  """One completion, trimmed on the host."""
  tokens: np.ndarray  # [n] generated ids, end-of-text included when it was emitted
  logprobs: np.ndarray  # [n] as Generation.logprobs
  raw_logprobs: np.ndarray  # [n] as Generation.raw_logprobs
  finish_reason: str  # 'eot', 'stop' (a stop string, applied by generate_text) or 'length'
  prompt_truncated: bool  # the prompt was cut from the left to fit the context
  text: str | None = None  # the decoded completion, stop string excluded (generate_text only)


class Sampler:
  """Host side of generation: truncation, bucketing, batching and trimming around decoding.make_generate_fn.

  It runs on mesh (default: the mesh params are sharded on, else one device); params are expected sharded on it
  (cli.load_model does). Each batch's rows are split over the mesh's batch axes, and with
  several processes every one must call generate with the same prompts.
  """

  def __init__(self, module, model_config, params, *, eot_id: int | None, pad_id: int = 0, batch_size: int = 16,
               decoding_layout: bool = True, mesh=None):
    model_config = gm.ModelConfig.of(model_config)
    self.mesh = mesh or gs.mesh_of(params)
    if decoding_layout and type(module) is gm.GPTLM:
      # Unrolled layers, an untied head and an unpadded vocabulary: the layout that decodes fastest
      # (docs/performance.md), at a compile time that grows with depth.
      model_config, convert = decoding.decoding_layout(model_config, vocab_multiple=self.mesh.shape['tensor'])
      module = gm.GPTLM(model_config)
      shardings = gs.param_shardings(gm.abstract_variables(module)['params'], self.mesh)
      params = jax.jit(convert, out_shardings=shardings)(params)
    self.module = module
    self.model_config = model_config
    self.params = params
    self.eot_id = eot_id
    self.pad_id = pad_id
    self.batch_size = batch_size
    self._generate = decoding.make_generate_fn(module, model_config, gs.replicated(self.mesh), eot_id=eot_id, pad_id=pad_id)

  def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, rng: jax.Array,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> list[Sample]:
    """Completes each prompt (a list of ids); temperature 0 is greedy decoding. Results are in prompt order."""
    context, context_vocab = self.model_config.context, self.model_config.vocab_size
    if not 1 <= max_new_tokens <= context - 1:
      raise ConfigError(f'max_new_tokens={max_new_tokens} must be between 1 and model.context - 1 = {context - 1}.')
    if not (temperature == 0 or temperature >= 1e-4) or not 0 < top_p <= 1 or not 0 <= top_k <= context_vocab:
      raise ConfigError(f'temperature={temperature} must be 0 (greedy) or at least 1e-4, top_p={top_p} in (0, 1], '
                        f'and top_k={top_k} between 0 (off) and the vocabulary size {context_vocab}.')
    max_prompt = context - max_new_tokens + 1
    # An empty prompt starts from end-of-text, the document separator the model was trained with.
    prompts = [list(p) if len(p) else [self.eot_id if self.eot_id is not None else self.pad_id] for p in prompts]
    truncated = [len(p) > max_prompt for p in prompts]
    prompts = [p[-max_prompt:] for p in prompts]
    modes = dict(max_new_tokens=max_new_tokens, top_k=top_k, greedy=temperature == 0, nucleus=top_p < 1)
    results = [None] * len(prompts)
    batches = bucket_batches([len(p) for p in prompts], max_prompt, lambda _: self.batch_size,
                             gs.batch_shards(self.mesh))
    for b, (indices, length, rows) in enumerate(batches):
      tokens = np.full((rows, length), self.pad_id, np.int32)
      lengths = np.ones((rows,), np.int32)  # padding rows: one pad token, results discarded
      for row, i in enumerate(indices):
        tokens[row, :len(prompts[i])] = prompts[i]
        lengths[row] = len(prompts[i])
      with gs.activation_context(self.mesh):
        out = jax.device_get(self._generate(
            self.params, gs.global_rows(tokens, self.mesh), gs.global_rows(lengths, self.mesh),
            jax.random.fold_in(rng, b), np.float32(temperature), np.float32(top_p), **modes))
      for row, i in enumerate(indices):
        n = int((~out.done[row]).sum())
        ended = self.eot_id is not None and n > 0 and out.tokens[row, n - 1] == self.eot_id
        results[i] = Sample(out.tokens[row, :n], out.logprobs[row, :n], out.raw_logprobs[row, :n],
                            'eot' if ended else 'length', truncated[i])
    return results


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
  """Cuts text before the earliest stop string; returns (text, whether one was found)."""
  cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
  return (text[:cut], True) if cut >= 0 else (text, False)


def generate_text(sampler: Sampler, tokenizer, prompts: Sequence[str], *, stop: Sequence[str] = (),
                  **kwargs) -> list[Sample]:
  """Encodes prompts, generates, decodes and applies stop strings (kwargs go to Sampler.generate).

  When a stop string ends the text, the token arrays keep the tokens up to the one that completed it, the
  point at which a streaming decoder would have stopped.
  """
  samples = sampler.generate([tokenizer.encode(p) for p in prompts], **kwargs)
  for s in samples:
    body = s.tokens[:-1] if s.finish_reason == 'eot' else s.tokens
    s.text, stopped = apply_stop(tokenizer.decode(body.tolist()), stop)
    if stopped:
      # Containing a stop string is monotone in the prefix length, so the shortest such prefix is a bisection.
      lo, hi = 1, len(body)
      while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if apply_stop(tokenizer.decode(body[:mid].tolist()), stop)[1] else (mid + 1, hi)
      s.tokens, s.logprobs, s.raw_logprobs = s.tokens[:lo], s.logprobs[:lo], s.raw_logprobs[:lo]
      s.finish_reason = 'stop'
  return samples
