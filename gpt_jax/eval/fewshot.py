"""K-shot prompts (GPT-3 Section 2.4) and batched, jitted scoring of the four request types.

A context is built as in lm-evaluation-harness:

    description + sum over shots of (text + target_delimiter + target + fewshot_delimiter) + text

with the K demonstrations drawn without replacement from the training split (or, for a task without one, from
the test split minus the evaluated item), never the evaluated example, by a generator seeded by (seed, item):
an item's prompt does not depend on batching, order or --limit. Any K is allowed; a prompt longer than the
model's context is cut from the left and counted in the report's "truncated".

Likelihoods come from Scorer: requests are padded into [rows, length] buckets (powers of two), so a 2,000-item
task is a few dozen forward passes and a handful of compiles. generate_until uses gpt_jax.sample's greedy decoding.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax import losses
from gpt_jax import sample as sample_lib
from gpt_jax import sharding as gs
from gpt_jax.buckets import bucket_batches
from gpt_jax.eval import metrics as metrics_lib
from gpt_jax.eval.tasks import Task, TaskError, TaskSpec

FEWSHOT_SEED = 1234  # lm-evaluation-harness's default


# ---------------------------------------------------------------------------------------------------------------
# Prompts.

def doc_text(spec: TaskSpec, doc: dict) -> str:
  return doc['query'] if spec.output_type == 'multiple_choice' else doc['context']


def doc_target(spec: TaskSpec, doc: dict) -> str:
  return doc['choices'][doc['gold']] if spec.output_type == 'multiple_choice' else doc['completion']


def fewshot_examples(task: Task, index: int, k: int, seed: int = FEWSHOT_SEED) -> list[dict]:
  """The K demonstrations for test item `index`: distinct documents, never the item itself nor a copy of its text."""
  if k < 0:
    raise TaskError(f'task {task.spec.task!r}: K={k} demonstrations is not possible: K must be 0 or more.')
  if k == 0:
    return []
  same_split = task.train_docs is None
  pool = task.test_docs if same_split else task.train_docs
  text = doc_text(task.spec, task.test_docs[index])
  usable = lambda i: not (same_split and i == index) and doc_text(task.spec, pool[i]) != text
  rng = random.Random(f'fewshot/{seed}/{index}')
  # K + 1 draws suffice unless the item (or a copy) was among them; then a full permutation settles it.
  draws = min(len(pool), k + 1)
  while True:
    chosen = [i for i in rng.sample(range(len(pool)), draws) if usable(i)][:k]
    if len(chosen) == k or draws == len(pool):
      break
    draws = len(pool)
  if len(chosen) < k:
    raise TaskError(f'task {task.spec.task!r}: K={k} demonstrations were asked for but only {len(chosen)} '
                    f'documents are available besides the evaluated one.')
  return [pool[i] for i in chosen]


def check_request(task: Task, k: int) -> None:
  """A TaskError when task cannot be evaluated at K shots (checked before any item is scored)."""
  spec = task.spec
  if k < 0:
    raise TaskError(f'task {spec.task!r}: K={k} demonstrations is not possible: K must be 0 or more.')
  if spec.output_type == 'loglikelihood_rolling' and k:
    raise TaskError(f'task {spec.task!r}: loglikelihood_rolling scores whole documents; use K=0, not {k}.')
  same_split = task.train_docs is None
  available = len(task.test_docs) - 1 if same_split else len(task.train_docs)
  if k > available:
    raise TaskError(f'task {spec.task!r}: K={k} demonstrations were asked for but only {available} documents are '
                    f'available besides the evaluated one; use a smaller K.')


def build_context(spec: TaskSpec, shots: Sequence[dict], doc: dict) -> str:
  """description + (text + target_delimiter + target + fewshot_delimiter) per shot + the evaluated text."""
  demos = ''.join(doc_text(spec, s) + spec.target_delimiter + doc_target(spec, s) + spec.fewshot_delimiter
                  for s in shots)
  return spec.description + demos + doc_text(spec, doc)


def encode_pair(tokenizer, context: str, continuation: str, eot_id: int) -> tuple[list[int], list[int]]:
  """Token ids of (context, continuation), encoded separately as lm-evaluation-harness does.

  Trailing whitespace of the context moves to the continuation, where BPE vocabularies attach it to the next
  word; an empty context becomes end-of-text so the first continuation token is still predicted.
  """
  stripped = context.rstrip()
  continuation = context[len(stripped):] + continuation
  context_ids = tokenizer.encode(stripped) if stripped else [eot_id]
  return context_ids, tokenizer.encode(continuation)


def fit_request(context_ids: Sequence[int], continuation_ids: Sequence[int],
                max_len: int) -> tuple[list[int], int, bool]:
  """(tokens, n_target, truncated): the last max_len + 1 tokens, of which the last n_target are scored."""
  tokens = list(context_ids) + list(continuation_ids)
  truncated = len(tokens) > max_len + 1
  tokens = tokens[-(max_len + 1):]
  return tokens, min(len(continuation_ids), len(tokens) - 1), truncated


def rolling_windows(token_ids: Sequence[int], max_len: int, prefix_id: int) -> list[tuple[list[int], int]]:
  """Scoring requests covering every token of a document once, each with as much left context as fits.

  The document is prefixed with end-of-text so its first token is predicted; window w scores the next max_len
  tokens after those of window w - 1 (lm-evaluation-harness's disjoint rolling windows, context_len 1).
  """
  full = [prefix_id] + list(token_ids)
  windows, end = [], 0
  while end < len(token_ids):
    new_end = min(end + max_len, len(token_ids))
    windows.append((full[max(0, new_end - max_len):new_end + 1], new_end - end))
    end = new_end
  return windows


# ---------------------------------------------------------------------------------------------------------------
# Batched scoring.

class Scorer:
  """Summed log-probability and greediness of target spans, batched into padded [rows, length] buckets.

  It runs on mesh (default: the mesh params are sharded on, else one device); each batch's rows are split over
  the mesh's batch axes (batch_tokens is the whole mesh's), and with several processes every one must score the
  same requests.
  """

  def __init__(self, module, params, max_len: int, batch_tokens: int = 4096, mesh=None):
    self.params = params
    self.max_len = max_len
    self.batch_tokens = batch_tokens
    self.mesh = mesh or gs.mesh_of(params)

    @functools.partial(jax.jit, out_shardings=gs.replicated(self.mesh))
    def score(params, inputs, targets, mask):
      # inputs, targets, mask: [B, T]; returns summed target log-probs [B] and whether every target is the argmax.
      logits = module.apply({'params': params}, inputs).astype(jnp.float32)  # [B, T, V]
      greedy = jax.lax.top_k(logits, 1)[1][..., 0] == targets  # argmax, about twice as fast on CPU
      return losses.sequence_logprobs(logits, targets, mask), jnp.all(greedy | ~mask, axis=-1)

    self._score = score

  def score(self, requests: Sequence[tuple[Sequence[int], int]]) -> tuple[np.ndarray, np.ndarray]:
    """requests: (tokens, n_target) with 2 <= len(tokens) <= max_len + 1; the last n_target tokens are scored.

    Returns (loglik [N] float64, is_greedy [N] bool) in request order.
    """
    logliks, greedy = np.zeros(len(requests)), np.zeros(len(requests), bool)
    lengths = [len(t) - 1 for t, _ in requests]
    for indices, length, rows in bucket_batches(lengths, self.max_len, lambda t: self.batch_tokens // t,
                                                           gs.batch_shards(self.mesh)):
      inputs = np.zeros((rows, length), np.int32)
      targets = np.zeros((rows, length), np.int32)
      mask = np.zeros((rows, length), bool)
      for row, i in enumerate(indices):
        tokens, n_target = requests[i]
        n = len(tokens) - 1
        inputs[row, :n], targets[row, :n] = tokens[:-1], tokens[1:]
        mask[row, n - n_target:n] = True
      with gs.activation_context(self.mesh):
        ll, gr = jax.device_get(self._score(self.params, *(gs.global_rows(a, self.mesh)
                                                           for a in (inputs, targets, mask))))
      logliks[indices], greedy[indices] = ll[:len(indices)], gr[:len(indices)]
    return logliks, greedy


# ---------------------------------------------------------------------------------------------------------------
# One task at one K.

def evaluate(task: Task, k: int, *, scorer: Scorer, sampler: sample_lib.Sampler | None, tokenizer,
             seed: int = FEWSHOT_SEED, limit: int | None = None, log_samples: bool = False) -> dict:
  """Scores task at K shots; returns the report's body (task, K, n, truncated, metrics with stderr) and, with
  log_samples, 'samples': one record per item (prompt, target, what the model scored or wrote), as
  lm-evaluation-harness's --log_samples does, so a surprising score can be read item by item."""
  spec = task.spec
  docs = task.test_docs[:limit] if limit is not None else task.test_docs
  max_len, eot = scorer.max_len, tokenizer.eot_id
  check_request(task, k)
  contexts = ([build_context(spec, fewshot_examples(task, i, k, seed), doc) for i, doc in enumerate(docs)]
              if spec.output_type != 'loglikelihood_rolling' else None)
  truncated = 0

  if spec.output_type in ('loglikelihood', 'multiple_choice'):
    continuations = ([[spec.target_delimiter + doc_target(spec, d)] for d in docs]
                     if spec.output_type == 'loglikelihood'
                     else [[spec.target_delimiter + c for c in d['choices']] for d in docs])
    requests, owners = [], []
    for i, (context, options) in enumerate(zip(contexts, continuations)):
      cuts = []
      for option in options:
        tokens, n_target, cut = fit_request(*encode_pair(tokenizer, context, option, eot), max_len)
        requests.append((tokens, n_target))
        owners.append(i)
        cuts.append(cut)
      truncated += any(cuts)
    logliks, greedy = scorer.score(requests)
    if spec.output_type == 'loglikelihood':
      metrics = metrics_lib.loglikelihood_metrics(spec.metrics, logliks, greedy)
      per_item = [dict(loglikelihood=float(ll), is_greedy=bool(g)) for ll, g in zip(logliks, greedy)]
    else:
      owners = np.asarray(owners)
      choice_logliks = [logliks[owners == i] for i in range(len(docs))]
      metrics = metrics_lib.multiple_choice_metrics(
          spec.metrics, choice_logliks, [d['gold'] for d in docs],
          [np.array([len(c) for c in d['choices']], np.float64) for d in docs])
      per_item = [dict(loglikelihoods=[float(x) for x in ll], gold=d['gold'], prediction=int(np.argmax(ll)))
                  for ll, d in zip(choice_logliks, docs)]

  elif spec.output_type == 'generate_until':
    if sampler is None:
      raise TaskError(f'task {spec.task!r} generates text and needs a Sampler.')
    samples = sample_lib.generate_text(sampler, tokenizer, contexts, stop=spec.until,
                                       max_new_tokens=spec.max_gen_toks, rng=jax.random.key(0), temperature=0.0)
    truncated = sum(s.prompt_truncated for s in samples)
    metrics = metrics_lib.generation_metrics(spec.metrics, [s.text for s in samples],
                                             [doc_target(spec, d) for d in docs])
    per_item = [dict(generation=s.text, finish_reason=s.finish_reason) for s in samples]

  else:
    requests, owners = [], []
    for i, doc in enumerate(docs):
      windows = rolling_windows(tokenizer.encode(doc['text']), max_len, eot)
      requests += windows
      owners += [i] * len(windows)
    logliks = np.bincount(np.asarray(owners, np.int64), weights=scorer.score(requests)[0], minlength=len(docs))
    n_words = [len(re.split(r'\s+', d['text'])) for d in docs]
    n_bytes = [len(d['text'].encode('utf-8')) for d in docs]
    metrics = metrics_lib.rolling_metrics(spec.metrics, logliks, n_words, n_bytes)
    per_item = [dict(loglikelihood=float(ll), words=w, bytes=b) for ll, w, b in zip(logliks, n_words, n_bytes)]

  report = {'task': spec.task, 'output_type': spec.output_type, 'num_fewshot': k, 'n': len(docs),
            'truncated': int(truncated), 'fewshot_seed': seed, 'metrics': metrics}
  if log_samples:
    report['samples'] = [
        dict(index=i, prompt=contexts[i] if contexts else None,
             target=doc_target(spec, doc) if spec.output_type != 'loglikelihood_rolling' else None, **item)
        for i, (doc, item) in enumerate(zip(docs, per_item))]
  return report
