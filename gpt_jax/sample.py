"""Jitted generation with the KV cache, and the sampling entry point (python -m gpt_jax.sample).

One jitted function per (batch, prompt bucket, max_new_tokens, sampling mode) prefills the right-padded prompts
once, then runs a lax.scan over decode steps; temperature and top_p are traced, so changing them does not
recompile. It returns the tokens, two per-token log-probs (under the temperature-scaled, filtered distribution
the token was drawn from, which PPO's importance ratios need, and under the raw model distribution) and a done
mask. End-of-text stops a row inside the scan; stop strings are applied on the host after decoding.

    python -m gpt_jax.sample --workdir=runs/x --prompt='Once upon a time' --temperature=0.8 --top_k=40
    python -m gpt_jax.sample --config=configs/tiny.py:nano --init=random --prompt=hello --max_new_tokens=20
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tok_lib

MIN_BUCKET = 16  # shortest padded length: short prompts share one compile


class Generation(NamedTuple):
  """What one jitted generate call returns; every field is [batch, max_new_tokens]."""
  tokens: jax.Array  # int32 sampled ids; pad_id once the row is done
  logprobs: jax.Array  # log-prob under the scaled, filtered distribution sampled from (0 for greedy: a point mass)
  raw_logprobs: jax.Array  # log-prob under the model's own distribution (temperature 1, no filtering)
  done: jax.Array  # bool, True where the row had already emitted end-of-text before this step (padding)


@dataclasses.dataclass
class Sample:
  """One completion, trimmed on the host."""
  tokens: np.ndarray  # [n] generated ids, end-of-text included when it was emitted
  logprobs: np.ndarray  # [n] as Generation.logprobs
  raw_logprobs: np.ndarray  # [n] as Generation.raw_logprobs
  finish_reason: str  # 'eot', 'stop' (a stop string, applied by generate_text) or 'length'
  prompt_truncated: bool  # the prompt was cut from the left to fit the context
  text: str | None = None  # the decoded completion, stop string excluded (generate_text only)


def next_pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def bucket_batches(lengths: Sequence[int], max_len: int, batch_for_length,
                   row_multiple: int = 1) -> list[tuple[np.ndarray, int, int]]:
  """Groups items into (indices, padded length, rows) batches, longest first.

  Lengths are padded to a power of two (at least MIN_BUCKET, at most max_len) and rows to a power of two (at most
  batch_for_length(length), rounded down to a multiple of row_multiple but at least row_multiple), so a task of
  thousands of items compiles a handful of shapes, not one per item. Rows are then rounded up to a multiple of
  row_multiple (the mesh's batch shards); extra rows are padding.
  """
  order = np.argsort(-np.asarray(lengths), kind='stable')
  batches, start = [], 0
  while start < len(order):
    length = min(max_len, max(MIN_BUCKET, next_pow2(int(lengths[order[start]]))))
    capacity = max(row_multiple, batch_for_length(length) // row_multiple * row_multiple)
    indices = order[start:start + capacity]
    rows = min(capacity, next_pow2(len(indices)))
    batches.append((indices, length, -(-rows // row_multiple) * row_multiple))
    start += len(indices)
  return batches


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
  pick = lambda x, token: jnp.take_along_axis(x, token[:, None], axis=-1)[:, 0]
  if greedy:
    token = jnp.argmax(logits, axis=-1)  # ties go to the lower id
    logprob = jnp.zeros(token.shape, jnp.float32)
  else:
    filtered = filter_logits(logits, temperature, top_p, top_k=top_k, nucleus=nucleus)
    token = jax.random.categorical(rng, filtered, axis=-1)
    logprob = pick(filtered, token) - jax.nn.logsumexp(filtered, axis=-1)
  raw_logprob = pick(logits, token) - jax.nn.logsumexp(logits, axis=-1)
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
    cache = gm.init_cache(model_config, batch, prompt_len + max_new_tokens - 1, dtype=cache_dtype)
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


class Sampler:
  """Host side of generation: truncation, bucketing, batching and trimming around make_generate_fn.

  It runs on mesh (default: the mesh params are sharded on, else one device); params are expected sharded on it
  (checkpoint.load_for_inference(path, mesh)). Each batch's rows are split over the mesh's batch axes, and with
  several processes every one must call generate with the same prompts.
  """

  def __init__(self, module, model_config, params, *, eot_id: int | None, pad_id: int = 0, batch_size: int = 16,
               decoding_layout: bool = True, mesh=None):
    model_config = gm.ModelConfig.of(model_config)
    self.mesh = mesh or gs.mesh_of(params)
    if decoding_layout and type(module) is gm.GPTLM:
      # Unrolled layers, an untied head and an unpadded vocabulary: the layout that decodes fastest
      # (docs/performance.md), at a compile time that grows with depth.
      model_config, convert = gm.decoding_layout(model_config, vocab_multiple=self.mesh.shape['tensor'])
      module = gm.GPTLM(model_config)
      shardings = gs.param_shardings(gm.abstract_variables(module)['params'], self.mesh)
      params = jax.jit(convert, out_shardings=shardings)(params)
    self.module = module
    self.model_config = model_config
    self.params = params
    self.eot_id = eot_id
    self.pad_id = pad_id
    self.batch_size = batch_size
    self._generate = make_generate_fn(module, model_config, gs.replicated(self.mesh), eot_id=eot_id, pad_id=pad_id)

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


def inference_mesh(config, spec: str | None):
  """The mesh evaluation and sampling run on: --mesh=data,fsdp,tensor (one of them may be -1), else the run's
  own config.mesh, so a model that needed FSDP or tensor parallelism to train is loaded sharded the same way."""
  if spec:
    try:
      data, fsdp, tensor = (int(x) for x in spec.split(','))
    except ValueError:
      raise ConfigError(f'--mesh={spec} must be three comma-separated sizes data,fsdp,tensor (one may be -1), '
                        f'e.g. --mesh=-1,1,1.') from None
    config = config.copy_and_resolve_references()
    config.mesh.update(data=data, fsdp=fsdp, tensor=tensor, dcn_data=1, dcn_fsdp=1)
  try:
    return gs.make_mesh(gcfg.validate(config).mesh)
  except ConfigError as error:
    reason = str(error).rstrip('.')
    if spec:
      raise ConfigError(f'--mesh={spec} does not fit the {jax.device_count()} devices and this model ({reason}); '
                        f'give other data,fsdp,tensor sizes, e.g. --mesh=-1,1,1.') from None
    raise ConfigError(f'the run\'s own mesh does not fit the {jax.device_count()} devices here ({reason}); pass '
                      f'--mesh=data,fsdp,tensor, e.g. --mesh=-1,1,1.') from None


def load_model(config, workdir: str | None, init: str, seed: int = 0, mesh_spec: str | None = None):
  """(config, module, params, step, mesh) from a run's latest checkpoint, or randomly initialised from a config.

  The entry points' shared loader: --workdir=runs/x reads the run's own config and params; --init=random with
  --config=configs/<file>.py:<arg> builds a smoke-test model (step None). Params come sharded over
  inference_mesh(config, mesh_spec).
  """
  if init == 'random':
    if config is None:
      raise ConfigError('--init=random needs --config=configs/<file>.py[:<arg>] to know the model shape.')
    config = gcfg.validate(config)
    mesh = inference_mesh(config, mesh_spec)
    module = gm.GPTLM(config.model)
    shardings = gs.param_shardings(gm.abstract_variables(module)['params'], mesh)
    return config, module, gm.init_params(module, jax.random.key(seed), shardings=shardings), None, mesh
  if init != 'checkpoint':
    raise ConfigError(f'--init={init!r} is not valid: use checkpoint (with --workdir) or random (with --config).')
  if not workdir:
    raise ConfigError('pass --workdir=runs/<run> to load a checkpoint, or --config=... --init=random for a smoke run.')
  mesh = inference_mesh(ckpt.load_config(workdir), mesh_spec)
  config, params, step = ckpt.load_for_inference(workdir, mesh)
  return config, gm.GPTLM(config.model), params, step, mesh


def define_model_flags():
  """The flags that choose the model and devices, shared by python -m gpt_jax.sample and python -m gpt_jax.eval."""
  flags.DEFINE_string('workdir', None, 'run directory (or export_params directory) whose latest checkpoint and '
                      'config are loaded.')
  flags.DEFINE_enum('init', 'checkpoint', ['checkpoint', 'random'], 'where the parameters come from.')
  flags.DEFINE_integer('seed', 0, 'init seed with --init=random (and the sampling seed of gpt_jax.sample).')
  flags.DEFINE_string('mesh', None, 'data,fsdp,tensor sizes of the device mesh, one may be -1 (default: the '
                      'config\'s mesh section), e.g. --mesh=-1,1,1 for data parallelism over all devices.')
  gs.define_distributed_flags()


def unescape(s: str) -> str:
  """'\\n' typed on a command line -> a newline."""
  return codecs.decode(s, 'unicode_escape')


def main(argv):
  del argv
  f = flags.FLAGS
  gs.initialize_distributed_from_flags()
  config, module, params, step, mesh = load_model(f.config, f.workdir, f.init, f.seed, f.mesh)
  tokenizer = tok_lib.load(config.data)
  sampler = Sampler(module, config.model, params, eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id,
                    batch_size=f.batch_size, mesh=mesh)
  prompts = [unescape(p) for p in f.prompt] * f.num_samples
  samples = generate_text(sampler, tokenizer, prompts, stop=[unescape(s) for s in f.stop],
                          max_new_tokens=f.max_new_tokens, rng=jax.random.key(f.seed), temperature=f.temperature,
                          top_k=f.top_k, top_p=f.top_p)
  if jax.process_index():
    return  # every process decoded the same samples
  print(f'# step {step}, temperature {f.temperature}, top_k {f.top_k}, top_p {f.top_p}, seed {f.seed}')
  for prompt, s in zip(prompts, samples):
    note = ' (prompt cut from the left)' if s.prompt_truncated else ''
    print(f'--- [{s.finish_reason}, {len(s.tokens)} tokens, log-prob {s.raw_logprobs.sum():.2f}]{note}')
    print(prompt + s.text)


def define_flags():
  define_model_flags()
  flags.DEFINE_multi_string('prompt', [''], 'prompt text (repeatable; escapes like \\n are decoded).')
  flags.DEFINE_integer('num_samples', 1, 'completions per prompt.')
  flags.DEFINE_integer('max_new_tokens', 100, 'most tokens generated per completion.')
  flags.DEFINE_float('temperature', 1.0, 'softmax temperature; 0 decodes greedily.')
  flags.DEFINE_integer('top_k', 0, 'sample among the k most likely tokens (0: all).')
  flags.DEFINE_float('top_p', 1.0, 'nucleus sampling mass (1: off).')
  flags.DEFINE_multi_string('stop', [], 'stop strings, applied after decoding (repeatable).')
  flags.DEFINE_integer('batch_size', 16, 'completions generated together.')


if __name__ == '__main__':
  define_flags()
  gcfg.run_main(main)
