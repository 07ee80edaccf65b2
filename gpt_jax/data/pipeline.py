"""The training and evaluation input pipeline: token caches, packing, a grain random-access order, per-host rows.

Each source split is tokenized once into a flat token cache (documents joined by end-of-text) under
data_dir/tokens/<source key>/<tokenizer>/, cut into non-overlapping sequences of context + 1 tokens (GPT-3 packing:
inputs = sequence[:-1], targets = sequence[1:], so every cached token is read exactly once per epoch). A grain
MapDataset gives random access to an endless stream: each source's sequences are shuffled per epoch (without
replacement), and the sources of a mixture are interleaved deterministically by weight.

The stream's only state is the number of global sequences consumed. Global batch b is the next B entries of the
stream and host p of P takes rows [p * B / P, (p + 1) * B / P) of it, so the state does not depend on the process
count or the batch size (which may ramp), and restoring is O(1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time

import grain
import jax
import numpy as np
from absl import logging

from gpt_jax.config import ConfigError
from gpt_jax.data import sources
from gpt_jax.data import tokenizer as tokenizer_lib

EVAL_SEED = 0  # evaluation order ignores data.seed, so runs with different seeds are evaluated on the same batches
_ENCODE_BATCH_DOCUMENTS = 256


def _tokenizer_tag(tokenizer: tokenizer_lib.Tokenizer) -> str:
  return tokenizer.checksum if tokenizer.checksum == 'byte' else f'sp-{tokenizer.checksum[:16]}'


def token_cache(source: sources.Source, split: str, tokenizer: tokenizer_lib.Tokenizer, data_dir: str) -> np.ndarray:
  """The split's documents as one read-only token array, each followed by end-of-text; built on first use.

  Keyed by the source's input fingerprint and the tokenizer checksum, so changed inputs or another tokenizer get a
  fresh cache. Writes go to a temporary file renamed into place, so concurrent builders (hosts sharing data_dir)
  never see a partial cache.
  """
  data_dir = os.path.expanduser(data_dir)
  source.prepare()
  directory = os.path.join(data_dir, 'tokens', source.cache_key, _tokenizer_tag(tokenizer))
  path = os.path.join(directory, f'{split}.bin')
  meta_path = os.path.join(directory, f'{split}.json')
  if not os.path.exists(meta_path):
    _build_token_cache(source, split, tokenizer, directory, path, meta_path)
  with open(meta_path) as f:
    meta = json.load(f)
  return np.memmap(path, dtype=meta['dtype'], mode='r', shape=(meta['tokens'],))


def _write_atomically(path: str, write):
  """Runs write(file) on a temporary file beside `path`, then renames it into place; returns what write returns."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      result = write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return result


def _build_token_cache(source, split, tokenizer, directory, path, meta_path) -> None:
  texts = source.texts(split)
  dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
  eot = np.array([tokenizer.eot_id], dtype).tobytes()
  os.makedirs(directory, exist_ok=True)
  start_time = time.time()
  logging.info('tokenizing %s %s (%d documents) into %s', source.spec, split, len(texts), directory)

  def write_tokens(f) -> int:
    tokens = 0
    for start in range(0, len(texts), _ENCODE_BATCH_DOCUMENTS):
      documents = [texts[i] for i in range(start, min(start + _ENCODE_BATCH_DOCUMENTS, len(texts)))]
      for ids in tokenizer.encode_batch(documents):
        f.write(ids.astype(dtype).tobytes())
        f.write(eot)
        tokens += len(ids) + 1
    return tokens

  tokens = _write_atomically(path, write_tokens)
  meta = {'dtype': dtype.name, 'tokens': tokens, 'documents': len(texts), 'source': source.spec, 'split': split,
          'tokenizer': tokenizer.checksum, 'seconds': round(time.time() - start_time, 3)}
  # The metadata is written last: its presence is what marks the cache complete.
  _write_atomically(meta_path, lambda f: f.write(json.dumps(meta).encode()))
  logging.info('tokenized %s %s: %d documents, %d tokens in %.1f s', source.spec, split, len(texts), tokens,
               meta['seconds'])
  # Caches of this source's earlier inputs are stale now (the prepared text they came from has been rebuilt).
  parent = os.path.dirname(os.path.dirname(directory))
  for name in os.listdir(parent):
    if re.fullmatch(re.escape(source.slug) + r'-[0-9a-f]{12}', name) and name != source.cache_key:
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


class PackedSequences:
  """A grain random-access source: sequence i is tokens[i * length : (i + 1) * length]; the tail is dropped."""

  def __init__(self, tokens: np.ndarray, length: int):
    self.tokens = tokens
    self.length = length
    self._count = len(tokens) // length

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, index: int) -> np.ndarray:
    start = index * self.length
    return self.tokens[start:start + self.length]


def _component_seed(seed: int, component: int) -> int:
  # grain reshuffles epoch e of a component with seed + e; hashing (seed, component) keeps components apart.
  return int(np.random.SeedSequence([seed, component]).generate_state(1)[0])


def pack(sequences: np.ndarray, eot_id: int, segment_ids: bool) -> dict[str, np.ndarray]:
  """[rows, context + 1] token sequences -> inputs, targets (and segment_ids, positions): int32 [rows, context]."""
  sequences = sequences.astype(np.int32)
  inputs = np.ascontiguousarray(sequences[:, :-1])
  batch = {'inputs': inputs, 'targets': np.ascontiguousarray(sequences[:, 1:])}
  if segment_ids:
    # A document starts at each row start and after each end-of-text; the end-of-text closes its own document.
    starts = np.ones(inputs.shape, bool)
    starts[:, 1:] = inputs[:, :-1] == eot_id
    index = np.broadcast_to(np.arange(inputs.shape[1], dtype=np.int32), inputs.shape)
    batch['segment_ids'] = np.cumsum(starts, axis=1, dtype=np.int32)
    batch['positions'] = index - np.maximum.accumulate(np.where(starts, index, 0), axis=1)
  return batch


class TrainStream:
  """This host's rows of an endless, deterministic stream of global batches; resumable via state() / restore()."""

  def __init__(self, config, split: str = 'train', process_index: int | None = None,
               process_count: int | None = None, *, seed: int | None = None):
    if split not in sources.SPLITS:
      raise ValueError(f'split={split!r} is not one of {sources.SPLITS}.')
    data = config.data
    self._process_index = jax.process_index() if process_index is None else process_index
    self._process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= self._process_index < self._process_count:
      raise ValueError(f'process_index={self._process_index} is outside [0, process_count={self._process_count}).')
    seed = data.seed if seed is None else seed
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
      raise ConfigError(f'data.seed={seed!r} must be an integer in [0, 2**32).')
    self.tokenizer = tokenizer_lib.load(data)
    if self.tokenizer.vocab_size != config.model.vocab_size:
      raise ConfigError(
          f'model.vocab_size={config.model.vocab_size} but data.tokenizer={data.tokenizer!r} has '
          f'{self.tokenizer.vocab_size} tokens: set --config.model.vocab_size={self.tokenizer.vocab_size}, or train '
          f'a tokenizer of that size (python -m gpt_jax.data train-tokenizer --config.data.source=... '
          f'--vocab_size={config.model.vocab_size}) and set data.tokenizer to it.')
    self._eot_id = self.tokenizer.eot_id
    self._segment_ids = bool(data.segment_ids)
    length = config.model.context + 1
    parts, weights = [], []
    for source, weight in sources.open_sources(data.source, data.data_dir, data.text_field):
      part = PackedSequences(token_cache(source, split, self.tokenizer, data.data_dir), length)
      if not len(part):
        raise ConfigError(f'data.source component {source.spec!r} has {len(part.tokens)} {split} tokens, fewer than '
                          f'one sequence of model.context + 1 = {length}: add text or lower model.context.')
      parts.append(part)
      weights.append(weight)
    self.sequences = parts
    datasets = [grain.MapDataset.source(part).shuffle(seed=_component_seed(seed, k)).repeat()
                for k, part in enumerate(parts)]
    self._dataset = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    # What a saved position means: restoring into a stream that differs in any of these would not be exact.
    self._identity = {'source': data.source, 'text_field': data.text_field, 'split': split, 'seed': seed,
                      'context': config.model.context,
                      'tokenizer': self.tokenizer.checksum, 'sequences': [len(p) for p in parts]}
    self._position = 0

  def next_batch(self, global_batch_size: int) -> dict[str, np.ndarray]:
    """This host's global_batch_size // process_count rows of the next global batch: int32 [rows, context] each."""
    if global_batch_size < 1 or global_batch_size % self._process_count:
      raise ConfigError(f'a global batch of {global_batch_size} sequences does not split evenly over '
                        f'{self._process_count} processes: make train.batch_tokens / model.context a multiple of '
                        f'the process count.')
    rows = global_batch_size // self._process_count
    start = self._position + self._process_index * rows
    sequences = np.stack([self._dataset[i] for i in range(start, start + rows)])
    self._position += global_batch_size
    return pack(sequences, self._eot_id, self._segment_ids)

  def state(self) -> dict:
    """A small JSON-serialisable dict: the global sequences consumed, and what they were drawn from."""
    return {'position': self._position, **self._identity}

  def restore(self, state: dict) -> None:
    """Continues from a state() of a stream with the same data config (any process count)."""
    check_identity(self._identity, state)
    position = state.get('position')
    if not isinstance(position, int) or position < 0:
      raise ValueError(f'data state position={position!r} is not a non-negative integer.')
    self._position = position


def check_identity(identity: dict, state: dict) -> None:
  """Refuses, in one sentence, a saved stream state whose source, order or shapes differ from this stream's."""
  for key, value in identity.items():
    if state.get(key) != value:
      raise ConfigError(f'the data state to restore was saved with {key}={state.get(key)!r} but this run has '
                        f'{key}={value!r}: resume with the data config and data the checkpoint was trained on.')


def eval_batches(config, num_batches: int, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None) -> list[dict[str, np.ndarray]]:
  """The same num_batches validation batches (this host's rows) every call, independent of data.seed."""
  stream = TrainStream(config, 'validation', process_index, process_count, seed=EVAL_SEED)
  available = sum(len(part) for part in stream.sequences)
  if num_batches * global_batch_size > available:
    # Past one epoch the endless stream would repeat sequences and count them twice.
    fitting = max(1, available // global_batch_size)
    logging.warning('the validation split has %d sequences, fewer than %d batches of %d: evaluating on %d.',
                    available, num_batches, global_batch_size, fitting)
    num_batches = fitting
  return [stream.next_batch(global_batch_size) for _ in range(num_batches)]


def make_global_batch(local_batch: dict[str, np.ndarray],
                      sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """Assembles every host's rows into global arrays [global_batch, context] sharded by `sharding`."""
  return {name: jax.make_array_from_process_local_data(sharding, rows) for name, rows in local_batch.items()}
