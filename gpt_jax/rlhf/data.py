"""Fine-tuning data: the record formats people bring, their tokenised rows, and a resumable stream of rows.

Record formats, recognised by their fields (JSONL files, or a prepared tfds catalog dataset):
  prompt_completion  {"prompt", "completion"}                      the legacy OpenAI fine-tuning format
  alpaca             {"instruction", "input" (optional), "output"}  rendered with ALPACA / ALPACA_NO_INPUT
  chat               {"messages": [{"role", "content"}, ...]}        rendered with CHAT_PREFIX; assistant turns are targets
  pairs              {"prompt", "chosen", "rejected"}
  hh                 {"chosen", "rejected"}: two whole dialogues sharing a prompt (Anthropic HH); split at the last
                     "Assistant:" of their common prefix
  rankings           {"prompt", "responses": [K strings], "ranking": [K indices, best first]}
  text / text_pair / choice   {"text", "label"} / {"text_a", "text_b", "label"} / {"context", "choices", "label"}
  prompts            {"prompt"} (PPO; it also takes the prompts of prompt_completion, pairs and rankings records)

A sequence is prompt + response + EOS with no BOS (as the sampler and the eval harness present prompts); EOS ends
every response and lies inside the loss mask; padding uses the tokenizer's pad id, never EOS. A prompt longer than
rlhf.max_prompt_tokens is cut from the left and a response that does not fit is truncated; both are counted.

Rows (numpy, one example per row; every row has weight [] = 1, 0 for rows that only pad an evaluation batch):
  sft       inputs, targets, loss_mask [context] (+ segment_ids, positions when examples are packed)
  rankings  tokens, mask [K, context], ranks [K] (0 = best, -1 = no response in the slot)
  pairs     tokens, loss_mask [2, context + 1]: chosen then rejected; loss_mask marks each response's targets
  classify  tokens, mask [S, context] (S = 1, 2 for both orders of a pair, or one per choice), label []
"""

from __future__ import annotations

import collections
import hashlib
import json
import os

import numpy as np

from gpt_jax.config import ConfigError
from gpt_jax.data import pipeline
from gpt_jax.data import sources

ALPACA = ('Below is an instruction that describes a task, paired with an input that provides further context. '
          'Write a response that appropriately completes the request.\n\n'
          '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n')
ALPACA_NO_INPUT = ('Below is an instruction that describes a task. Write a response that appropriately completes '
                   'the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n')
# Chat template: each turn is "<Role>: <content>" and turns are separated by a blank line; an assistant turn's
# " <content>" + EOS is the target, so a prompt for generation ends with "Assistant:".
CHAT_PREFIX = {'system': 'System:', 'user': 'User:', 'assistant': 'Assistant:'}
HH_SPLIT = 'Assistant:'

# name -> required fields; detection tries them in this order (the most specific first).
FORMATS = {
    'rankings': ('prompt', 'responses', 'ranking'), 'pairs': ('prompt', 'chosen', 'rejected'),
    'hh': ('chosen', 'rejected'), 'prompt_completion': ('prompt', 'completion'), 'alpaca': ('instruction', 'output'),
    'chat': ('messages',), 'choice': ('context', 'choices', 'label'), 'text_pair': ('text_a', 'text_b', 'label'),
    'text': ('text', 'label'), 'prompts': ('prompt',),
}
STAGE_FORMATS = {
    'sft': ('prompt_completion', 'alpaca', 'chat'),
    'reward': ('rankings', 'pairs', 'hh'),
    'dpo': ('pairs', 'hh'),
    'classify': ('text', 'text_pair', 'choice'),
    'ppo': ('prompts', 'prompt_completion', 'pairs', 'rankings'),
}


class DataError(ConfigError):
  """A data file or record is malformed; the message names the file, line and field, and the fix."""


# ---------------------------------------------------------------------------------------------------------------
# Reading records.

def read_records(spec: str, data_dir: str, default_split: str = 'train') -> list[tuple[str, dict]]:
  """(where, record) of a JSONL file or 'tfds:<name>[:<split>]'; where is 'file:line' for messages."""
  if spec.startswith('tfds:'):
    name, _, split = spec.partition(':')[2].partition(':')
    return [(f'{spec}[{i}]', r) for i, r in enumerate(sources.catalog_records(f'tfds:{name}', split or default_split,
                                                                              data_dir))]
  if os.path.isdir(spec):
    raise DataError(f'data file {spec!r} is a directory, not a file: pass one .jsonl file (e.g. one of the files in '
                    f'it).')
  if not os.path.isfile(spec):
    raise DataError(f'data file {spec!r} does not exist: pass a .jsonl file, \'toy\' or \'tfds:<name>[:<split>]\'.')
  records = []
  with open(spec, encoding='utf-8', errors='strict') as f:
    try:
      lines = f.read().splitlines()
    except UnicodeDecodeError as e:
      raise DataError(f'{spec} is not UTF-8 text (byte {e.start}): save it as UTF-8 JSONL.') from None
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    where = f'{spec}:{lineno}'
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      record = DataError(f'{where} is not valid JSON ({e.msg}): write one JSON object per line.')
    if not isinstance(record, (dict, DataError)):
      record = DataError(f'{where} is a JSON {type(record).__name__}, not an object: write one {{...}} per line.')
    records.append((where, record))
  if not records:
    raise DataError(f'{spec} holds no records: write one JSON object per line.')
  return records


def detect_format(stage: str, records: list[tuple[str, dict]]) -> str:
  """The format of the first well-formed record, among those the stage accepts."""
  where, first = next(((w, r) for w, r in records if isinstance(r, dict)), records[0])
  if isinstance(first, DataError):
    raise first
  for name, fields in FORMATS.items():
    if all(f in first for f in fields):
      if name not in STAGE_FORMATS[stage]:
        raise DataError(f'{where} is a {name} record, which the {stage} stage does not take: give it '
                        f'{" or ".join(STAGE_FORMATS[stage])} records.')
      return name
  wanted = '; '.join(f'{n}: {", ".join(FORMATS[n])}' for n in STAGE_FORMATS[stage])
  raise DataError(f'{where} has the fields {", ".join(sorted(first)) or "(none)"}, which match no format of the '
                  f'{stage} stage: give each record the fields of one of them ({wanted}).')


def parse_all(records, fmt: str, parse, skip_bad: bool, counts: collections.Counter) -> list:
  """parse(where, record) over records of format fmt; a DataError stops unless skip_bad, which counts it."""
  out = []
  for where, record in records:
    try:
      if isinstance(record, DataError):
        raise record
      missing = [f for f in FORMATS[fmt] if f not in record]
      if missing:
        raise DataError(f'{where} lacks the field {missing[0]!r}: every record of this {fmt} file needs '
                        f'{", ".join(FORMATS[fmt])}.')
      out.append(parse(where, record))
    except DataError:
      if not skip_bad:
        raise
      counts['skipped_records'] += 1
  if not out:
    raise DataError(f'no usable records among {len(records)}: fix the data (rlhf.skip_bad_lines skipped them all).')
  return out


def _text(where: str, record: dict, field: str, allow_empty: bool = False) -> str:
  value = record[field]
  if not isinstance(value, str):
    raise DataError(f'{where}: field {field!r} is a {type(value).__name__}, not a string: write it as text.')
  if not allow_empty and not value.strip():
    raise DataError(f'{where}: field {field!r} is empty: give it text, or drop the record.')
  return value


# ---------------------------------------------------------------------------------------------------------------
# Records -> segments: [(text, is_target)], a response's EOS implied after each target segment.

def sft_segments(fmt: str):
  def parse(where, r):
    if fmt == 'prompt_completion':
      return [(_text(where, r, 'prompt', True), False), (_text(where, r, 'completion'), True)]
    if fmt == 'alpaca':
      extra = r.get('input') or ''
      if not isinstance(extra, str):
        raise DataError(f'{where}: field \'input\' is a {type(extra).__name__}, not a string: write it as text.')
      template = ALPACA if extra.strip() else ALPACA_NO_INPUT
      return [(template.format(instruction=_text(where, r, 'instruction'), input=extra), False),
              (_text(where, r, 'output'), True)]
    return _chat_segments(where, r['messages'])
  return parse


def _chat_segments(where: str, messages) -> list[tuple[str, bool]]:
  if not isinstance(messages, list) or not messages:
    raise DataError(f'{where}: field \'messages\' must be a non-empty list of {{"role", "content"}} objects.')
  segments, pending = [], ''
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or m.get('role') not in CHAT_PREFIX or not isinstance(m.get('content'), str):
      raise DataError(f'{where}: messages[{i}] must be {{"role": one of {", ".join(CHAT_PREFIX)}, "content": '
                      f'text}}.')
    pending += ('\n\n' if i else '') + CHAT_PREFIX[m['role']]
    if m['role'] == 'assistant':
      segments += [(pending, False), (' ' + m['content'], True)]
      pending = ''
    else:
      pending += ' ' + m['content']
  if messages[-1]['role'] != 'assistant':
    raise DataError(f'{where}: the last message is from {messages[-1]["role"]!r}: a chat record ends with the '
                    f'assistant turn that is trained on.')
  return segments


def ranked_responses(max_k: int):
  """parse(where, record) -> (prompt, responses, ranks) for rankings, pairs and hh records."""
  def parse(where, r):
    if 'responses' in r:
      responses, ranking = r['responses'], r['ranking']
      if not isinstance(responses, list) or not all(isinstance(x, str) and x.strip() for x in responses):
        raise DataError(f'{where}: field \'responses\' must be a list of non-empty strings.')
      if not 2 <= len(responses) <= max_k:
        raise DataError(f'{where}: {len(responses)} responses; a ranking needs K = 2..{max_k} '
                        f'(rlhf.reward.max_responses): drop the record or raise rlhf.reward.max_responses '
                        f'(at most 9).')
      if not isinstance(ranking, list) or sorted(ranking) != list(range(len(responses))):
        raise DataError(f'{where}: field \'ranking\' = {ranking!r} is not a permutation of 0..{len(responses) - 1}: '
                        f'list every response index once, best first.')
      ranks = [0] * len(responses)
      for position, index in enumerate(ranking):
        ranks[index] = position
      return _text(where, r, 'prompt', True), responses, ranks
    prompt, chosen, rejected = pair(where, r)
    return prompt, [chosen, rejected], [0, 1]
  return parse


def pair(where: str, r: dict) -> tuple[str, str, str]:
  """(prompt, chosen, rejected) of a pairs or hh record."""
  chosen, rejected = _text(where, r, 'chosen'), _text(where, r, 'rejected')
  if chosen == rejected:
    raise DataError(f'{where}: \'chosen\' and \'rejected\' are the same {"response" if "prompt" in r else "dialogue"}: '
                    f'a preference needs two different ones; drop the record.')
  if 'prompt' in r:
    return _text(where, r, 'prompt', True), chosen, rejected
  cut = os.path.commonprefix([chosen, rejected]).rfind(HH_SPLIT)
  if cut < 0:
    raise DataError(f'{where}: \'chosen\' and \'rejected\' share no prompt ending in {HH_SPLIT!r}: an hh record is '
                    f'two dialogues that are the same up to the last {HH_SPLIT!r}; give the prompt its own field '
                    f'(a pairs record).')
  cut += len(HH_SPLIT)
  return chosen[:cut], chosen[cut:], rejected[cut:]


def prompt_of(fmt: str):
  """parse(where, record) -> the record's prompt (PPO)."""
  del fmt
  return lambda where, r: _text(where, r, 'prompt')


def prompt_rows(prompts, tokenizer, max_prompt: int, counts) -> dict[str, np.ndarray]:
  """PPO rows: prompts [max_prompt] right-padded, cut from the left to fit (counted), with their lengths."""
  out = dict(prompts=np.full((len(prompts), max_prompt), tokenizer.pad_id, np.int32),
             lengths=np.zeros(len(prompts), np.int32), weight=np.ones(len(prompts), np.float32))
  for i, prompt in enumerate(prompts):
    ids = list(tokenizer.encode(prompt))
    if len(ids) > max_prompt:
      counts['prompts_cut_left'] += 1
      ids = ids[len(ids) - max_prompt:]
    out['prompts'][i, :len(ids)], out['lengths'][i] = ids, len(ids)
  return out


def classify_parse(fmt: str, n_classes: int):
  """parse(where, record) -> (list of sequences' segments, label); see frame() for the GPT-1 framing."""
  def parse(where, r):
    label = r['label']
    if fmt == 'choice':
      choices = r['choices']
      if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise DataError(f'{where}: field \'choices\' must be a list of at least 2 strings.')
      texts = [[_text(where, r, 'context', True), c] for c in choices]
      classes = len(choices)
    elif fmt == 'text_pair':
      a, b = _text(where, r, 'text_a'), _text(where, r, 'text_b')
      texts, classes = [[a, b], [b, a]], n_classes
    else:
      texts, classes = [[_text(where, r, 'text')]], n_classes
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < classes:
      raise DataError(f'{where}: label {label!r} must be an integer in [0, {classes}).')
    return texts, label
  return parse


# ---------------------------------------------------------------------------------------------------------------
# Tokenising.

def encode(tokenizer, segments, length: int, max_prompt: int, counts) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, target mask) of at most `length` tokens: the segments joined, EOS after each target segment; the
  part before the last target cut from the left to max_prompt tokens, the end cut to length (both counted)."""
  pieces = []
  for text, is_target in segments:
    ids = list(tokenizer.encode(text)) + ([tokenizer.eot_id] if is_target else [])
    pieces.append((ids, is_target))
  last = max(i for i, (_, t) in enumerate(pieces) if t)
  prompt = [x for ids, t in pieces[:last] for x in ids]
  prompt_mask = [t for ids, t in pieces[:last] for _ in ids]
  if len(prompt) > max_prompt:
    counts['prompts_cut_left'] += 1
    prompt, prompt_mask = prompt[len(prompt) - max_prompt:], prompt_mask[len(prompt) - max_prompt:]
  tokens = prompt + pieces[last][0] + [x for ids, _ in pieces[last + 1:] for x in ids]
  mask = prompt_mask + [True] * len(pieces[last][0]) + [t for ids, t in pieces[last + 1:] for _ in ids]
  if len(tokens) > length:
    counts['responses_truncated'] += 1
    tokens, mask = tokens[:length], mask[:length]
  return np.asarray(tokens, np.int32), np.asarray(mask, bool)


def _place(tokens: np.ndarray, length: int, pad_id: int) -> np.ndarray:
  out = np.full(length, pad_id, np.int32)
  out[:len(tokens)] = tokens
  return out


def sft_rows(examples, tokenizer, context: int, max_prompt: int, pack: bool, counts) -> dict[str, np.ndarray]:
  """SFT rows: next-token inputs/targets with the loss on response tokens (EOS included) only."""
  encoded = [encode(tokenizer, segs, context + 1, max_prompt, counts) for segs in examples]
  if not pack:
    tokens = np.stack([_place(t, context + 1, tokenizer.pad_id) for t, _ in encoded])
    mask = np.stack([_place(m, context + 1, 0) for _, m in encoded]).astype(np.int32)
    return dict(inputs=tokens[:, :-1], targets=tokens[:, 1:], loss_mask=mask[:, 1:].astype(np.float32),
                weight=np.ones(len(encoded), np.float32))
  rows, row = [], []
  for t, m in encoded:
    if row and sum(len(x[0]) - 1 for x in row) + len(t) - 1 > context:
      rows.append(row)
      row = []
    row.append((t, m))
  rows.append(row)
  out = {k: np.zeros((len(rows), context), np.int32) for k in ('inputs', 'targets', 'segment_ids', 'positions')}
  out['inputs'][:], out['targets'][:] = tokenizer.pad_id, tokenizer.pad_id
  out['loss_mask'] = np.zeros((len(rows), context), np.float32)
  for r, row in enumerate(rows):
    start = 0
    for segment, (t, m) in enumerate(row, 1):
      n = len(t) - 1
      out['inputs'][r, start:start + n], out['targets'][r, start:start + n] = t[:-1], t[1:]
      out['loss_mask'][r, start:start + n] = m[1:]
      out['segment_ids'][r, start:start + n], out['positions'][r, start:start + n] = segment, np.arange(n)
      start += n
  out['weight'] = np.ones(len(rows), np.float32)
  return out


def ranking_rows(examples, tokenizer, context: int, max_prompt: int, max_k: int, counts) -> dict[str, np.ndarray]:
  """Reward-model rows: each prompt's responses in max_k slots of [context] tokens, with ranks (-1: empty)."""
  n = len(examples)
  out = dict(tokens=np.full((n, max_k, context), tokenizer.pad_id, np.int32),
             mask=np.zeros((n, max_k, context), np.int32), ranks=np.full((n, max_k), -1, np.int32),
             weight=np.ones(n, np.float32))
  for i, (prompt, responses, ranks) in enumerate(examples):
    for k, (response, rank) in enumerate(zip(responses, ranks)):
      tokens, _ = encode(tokenizer, [(prompt, False), (response, True)], context, max_prompt, counts)
      out['tokens'][i, k, :len(tokens)] = tokens
      out['mask'][i, k, :len(tokens)] = 1
      out['ranks'][i, k] = rank
  return out


def pair_rows(examples, tokenizer, context: int, max_prompt: int, counts) -> dict[str, np.ndarray]:
  """DPO rows: chosen and rejected sequences of context + 1 tokens and their response masks."""
  n = len(examples)
  out = dict(tokens=np.full((n, 2, context + 1), tokenizer.pad_id, np.int32),
             loss_mask=np.zeros((n, 2, context + 1), np.float32), weight=np.ones(n, np.float32))
  for i, (prompt, chosen, rejected) in enumerate(examples):
    for j, response in enumerate((chosen, rejected)):
      tokens, mask = encode(tokenizer, [(prompt, False), (response, True)], context + 1, max_prompt, counts)
      out['tokens'][i, j, :len(tokens)] = tokens
      out['loss_mask'][i, j, :len(tokens)] = mask
  return out


def framing_ids(config) -> tuple[int, int, int]:
  """GPT-1's start, delimiter and extract tokens: new ids in the vocabulary's padding (learned in fine-tuning)."""
  m = config.model
  ids = (m.vocab_size + 1, m.vocab_size + 2, m.vocab_size + 3)  # vocab_size itself may be a tokenizer's pad id
  if ids[-1] >= m.padded_vocab_size:
    raise ConfigError(f'model.vocab_size={m.vocab_size} leaves no padding ids for the start, delimiter and extract '
                      f'tokens (padded_vocab_size={m.padded_vocab_size}): use a vocabulary at least 4 below a '
                      f'multiple of 128.')
  return ids


def classify_rows(examples, tokenizer, config, context: int, counts) -> dict[str, np.ndarray]:
  """GPT-1 rows: each sequence framed as start, texts joined by delimiters, extract, in `context` tokens; cut from
  the left to fit."""
  start, delim, extract = framing_ids(config)
  sequences = max(len(texts) for texts, _ in examples)
  n = len(examples)
  out = dict(tokens=np.full((n, sequences, context), tokenizer.pad_id, np.int32),
             mask=np.zeros((n, sequences, context), np.int32), label=np.zeros(n, np.int32),
             weight=np.ones(n, np.float32))
  for i, (texts, label) in enumerate(examples):
    for s, parts in enumerate(texts):
      ids = [start]
      for p, text in enumerate(parts):
        ids += ([delim] if p else []) + list(tokenizer.encode(text))
      ids.append(extract)
      if len(ids) > context:
        counts['prompts_cut_left'] += 1
        ids = [start] + ids[len(ids) - context + 1:]
      out['tokens'][i, s, :len(ids)] = ids
      out['mask'][i, s, :len(ids)] = 1
    out['label'][i] = label
  return out


# ---------------------------------------------------------------------------------------------------------------
# The stream.

def checksum(rows: dict[str, np.ndarray]) -> str:
  digest = hashlib.sha256()
  for name in sorted(rows):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(rows[name]).tobytes())
  return digest.hexdigest()[:16]


class RowStream:
  """This host's rows of an endless stream over a fixed table of rows, each epoch a fresh permutation of them.

  The only state is the number of global rows consumed: epoch e's order is a pure function of (seed, e), global
  batch b is the next B rows of the stream, and host p of P takes rows [p * B / P, (p + 1) * B / P) of it, as the
  pretraining stream does; so resume is exact at any process count.
  """

  def __init__(self, rows: dict[str, np.ndarray], seed: int, identity: dict, process_index: int = 0,
               process_count: int = 1):
    self.rows = rows
    self.n = len(next(iter(rows.values())))
    self._seed, self._index, self._count = seed, process_index, process_count
    self._identity = dict(identity, seed=seed, rows=self.n, checksum=checksum(rows))
    self._position = 0
    self._epoch, self._order = -1, None

  def _row_index(self, i: int) -> int:
    epoch = i // self.n
    if epoch != self._epoch:
      self._epoch, self._order = epoch, np.random.default_rng([self._seed, epoch]).permutation(self.n)
    return int(self._order[i % self.n])

  def next_batch(self, global_rows: int) -> dict[str, np.ndarray]:
    if global_rows % self._count:
      raise ConfigError(f'a global batch of {global_rows} rows does not split over {self._count} processes: make '
                        f'the batch a multiple of the process count.')
    local = global_rows // self._count
    start = self._position + self._index * local
    picked = [self._row_index(i) for i in range(start, start + local)]
    self._position += global_rows
    return {name: value[picked] for name, value in self.rows.items()}

  def state(self) -> dict:
    return {'position': self._position, **self._identity}

  def restore(self, state: dict) -> None:
    pipeline.check_identity(self._identity, state)
    self._position = int(state['position'])


def pretraining_rows(global_rows: int, mix: float, processes: int) -> int:
  """The pretraining rows of a MixedStream batch of global_rows rows, round(global_rows * mix); refused in one
  sentence unless it leaves both kinds of rows in every batch and splits over the processes."""
  k = round(global_rows * mix)
  if not 0 < k < global_rows:
    raise ConfigError(f'rlhf.sft.pretrain_mix={mix} gives {k} pretraining rows in a batch of {global_rows}: choose a '
                      f'mix that gives at least 1 and at most {global_rows - 1}.')
  if k % processes:
    raise ConfigError(f'rlhf.sft.pretrain_mix={mix} gives {k} pretraining rows in a batch of {global_rows}, which do '
                      f'not split over {processes} processes: choose a mix that gives a multiple of {processes}.')
  return k


class MixedStream:
  """A RowStream with pretraining rows in every batch (SFT that keeps pretraining): of a global batch of B rows,
  k = round(B * mix) come from the pretraining stream, with the loss on every token at `weight` (a response token's
  is 1; the loss is the weighted mean over tokens), and the rest from the rows; each process takes its share of both.
  The pretraining rows sit at fixed, evenly spread global positions (row i is one iff floor((i+1) k / B) >
  floor(i k / B)); every process's slice of the batch then holds its share of both streams in the same pattern, so
  the global batch, and the dropout drawn per row, do not depend on the process count. The state is both streams'
  positions, so resume is exact."""

  def __init__(self, rows: RowStream, pretraining, mix: float, weight: float = 1.0, processes: int = 1):
    self.rows, self.pretraining, self.mix, self.weight, self.processes = rows, pretraining, mix, weight, processes
    self.n = rows.n

  def next_batch(self, global_rows: int) -> dict[str, np.ndarray]:
    k = pretraining_rows(global_rows, self.mix, self.processes)
    own = self.rows.next_batch(global_rows - k)
    extra = self.pretraining.next_batch(k)
    length = extra['inputs'].shape
    extra.update(loss_mask=np.full(length, self.weight, np.float32), weight=np.ones(length[0], np.float32))
    if 'segment_ids' in own:  # packed SFT rows: a pretraining row is one segment
      extra.update(segment_ids=np.ones(length, np.int32), positions=np.broadcast_to(
          np.arange(length[1], dtype=np.int32), length).copy())
    n_own = len(next(iter(own.values())))
    local = np.arange(n_own + length[0])  # the pattern of process 0's slice, which every process's slice repeats
    is_extra = (local + 1) * k // global_rows > local * k // global_rows
    order = np.where(is_extra, n_own + np.cumsum(is_extra) - 1, np.cumsum(~is_extra) - 1)
    return {name: np.concatenate([value, extra[name].astype(value.dtype)])[order] for name, value in own.items()}

  def state(self) -> dict:
    return {'rows': self.rows.state(), 'pretraining': self.pretraining.state()}

  def restore(self, state: dict) -> None:
    self.rows.restore(state['rows'])
    self.pretraining.restore(state['pretraining'])


def eval_batches(rows: dict[str, np.ndarray], global_rows: int, process_index: int = 0,
                 process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """Every held-out row once, in order, in global batches of global_rows (this host's part); the last batch is
  filled with weight-0 rows that add nothing to any loss or metric."""
  n = len(next(iter(rows.values())))
  total = -(-n // global_rows) * global_rows
  index = np.arange(total) % n
  padded = {name: value[index].copy() for name, value in rows.items()}
  padded['weight'][n:] = 0
  for name, blank in (('loss_mask', 0), ('ranks', -1)):
    if name in padded:
      padded[name][n:] = blank
  local = global_rows // process_count
  return [{name: value[b + process_index * local:b + (process_index + 1) * local] for name, value in padded.items()}
          for b in range(0, total, global_rows)]
