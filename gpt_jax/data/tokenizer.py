"""Tokenizers: the byte-level default, trained sentencepiece models (BPE or unigram, with byte fallback), and
Hugging Face GPT-2 BPE tokenizers (data.tokenizer='hf:<dir>').

`load(config.data)` is what training, sampling and evaluation call; `train(...)` fits a sentencepiece model on a
bounded sample of documents. All three share one interface: encode / decode / encode_batch, vocab_size,
eot_id, pad_id and checksum (recorded in each run's metadata so a run can always find the tokenizer it used).
Decoding drops the special ids (end-of-text, pad) and ids outside the vocabulary, so sampled ids always decode.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from gpt_jax.config import ConfigError

EOT_PIECE = '<|endoftext|>'
PAD_PIECE = '<pad>'
# sentencepiece sentences longer than this (in bytes) are dropped by the trainer, so samples are cut below it.
_MAX_SENTENCE_BYTES = 16384
_SENTENCE_CHARS = 4000
# Documents longer than this are encoded in pieces cut at line ends: bounded memory and threads stay busy.
ENCODE_PIECE_CHARS = 1 << 20


class ByteTokenizer:
  """UTF-8 bytes 0..255, then end-of-text (256) and pad (257): no training, nothing is ever unknown."""

  vocab_size = 258
  eot_id = 256
  pad_id = 257
  checksum = 'byte'

  def encode(self, text: str) -> list[int]:
    return list(text.encode('utf-8'))

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [np.frombuffer(text.encode('utf-8'), np.uint8) for text in texts]

  def decode(self, ids: Iterable[int]) -> str:
    # A model can sample byte sequences that are not UTF-8; show them as U+FFFD rather than fail.
    return bytes(i for i in map(int, ids) if 0 <= i < 256).decode('utf-8', errors='replace')


class SentencePieceTokenizer:
  """A trained sentencepiece model; the end-of-text and pad pieces are control symbols text never produces."""

  def __init__(self, path: str, model_proto: bytes):
    self.path = path
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    if not self._sp.get_piece_size():
      raise ValueError('the model has no pieces')  # an empty proto loads without complaint
    self.vocab_size = self._sp.get_piece_size()
    self.eot_id = self._sp.piece_to_id(EOT_PIECE)
    self.pad_id = self._sp.piece_to_id(PAD_PIECE)
    self.checksum = hashlib.sha256(model_proto).hexdigest()
    self._special = {self.eot_id, self.pad_id, self._sp.unk_id()}

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    pieces, owner = [], []
    for i, text in enumerate(texts):
      for piece in _split_long(text, ENCODE_PIECE_CHARS):
        pieces.append(piece)
        owner.append(i)
    encoded = self._sp.encode(pieces, num_threads=os.cpu_count() or 1)
    out = [[] for _ in texts]
    for i, ids in zip(owner, encoded):
      out[i].extend(ids)
    return [np.asarray(ids, np.int64) for ids in out]

  def decode(self, ids: Iterable[int]) -> str:
    return self._sp.decode([i for i in map(int, ids) if 0 <= i < self.vocab_size and i not in self._special])


class HFTokenizer:
  """A Hugging Face byte-level BPE (GPT-2's) through the `tokenizers` library, from a directory's tokenizer.json or
  vocab.json + merges.txt: data.tokenizer='hf:<dir>'. End-of-text is GPT-2's <|endoftext|> (typed in text, it
  encodes to that one id, as GPT2TokenizerFast does). GPT-2 has no pad token: pad is the first id past the
  vocabulary, one of the model's padding rows, which it never predicts."""

  def __init__(self, directory: str):
    import tokenizers
    json_path = os.path.join(directory, 'tokenizer.json')
    if os.path.isfile(json_path):
      self._tok = tokenizers.Tokenizer.from_file(json_path)
      with open(json_path, 'rb') as f:
        digest = hashlib.sha256(f.read())
    else:
      vocab, merges = os.path.join(directory, 'vocab.json'), os.path.join(directory, 'merges.txt')
      self._tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab, merges))
      self._tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
      self._tok.decoder = tokenizers.decoders.ByteLevel()
      self._tok.add_special_tokens([EOT_PIECE])
      digest = hashlib.sha256()
      for path in (vocab, merges):
        with open(path, 'rb') as f:
          digest.update(f.read())
    self.path = directory
    self.eot_id = self._tok.token_to_id(EOT_PIECE)
    if self.eot_id is None:
      raise ValueError(f'it has no {EOT_PIECE} token')
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    self.pad_id = self.vocab_size
    self.checksum = digest.hexdigest()

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, np.int64) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([i for i in map(int, ids) if 0 <= i < self.vocab_size and i != self.eot_id])


Tokenizer = ByteTokenizer | SentencePieceTokenizer | HFTokenizer


_TRAIN_HINT = ('train one with `python -m gpt_jax.data train-tokenizer --config.data.source=stdlib --vocab_size=8192` and pass '
               'the path it prints, or use data.tokenizer=\'byte\'')


def load(data_config) -> Tokenizer:
  """The tokenizer named by data.tokenizer: 'byte', 'hf:<dir>', or the path of a sentencepiece .model file."""
  name = data_config.tokenizer
  if name == 'byte':
    return ByteTokenizer()
  if str(name).startswith('hf:'):
    return _load_hf(name)
  path = os.path.expanduser(str(name))
  if not os.path.isfile(path):
    raise ConfigError(f'data.tokenizer={name!r} does not exist: {_TRAIN_HINT}.')
  with open(path, 'rb') as f:
    model_proto = f.read()
  try:
    tokenizer = SentencePieceTokenizer(path, model_proto)
  except (RuntimeError, OSError, ValueError) as e:
    raise ConfigError(f'data.tokenizer={name!r} is not a readable sentencepiece model ({_first_line(e)}): '
                      f'{_TRAIN_HINT}.') from None
  if min(tokenizer.eot_id, tokenizer.pad_id) <= tokenizer._sp.unk_id():
    raise ConfigError(f'data.tokenizer={name!r} has no {EOT_PIECE} and {PAD_PIECE} pieces, so it was not trained '
                      f'by gpt_jax: {_TRAIN_HINT}.')
  return tokenizer


def _load_hf(name: str) -> HFTokenizer:
  directory = os.path.expanduser(name[len('hf:'):])
  if not any(os.path.isfile(os.path.join(directory, f)) for f in ('tokenizer.json', 'vocab.json')):
    raise ConfigError(f'data.tokenizer={name!r}: {directory} has neither tokenizer.json nor vocab.json + merges.txt: '
                      f'pass the directory of a Hugging Face GPT-2 tokenizer (saved with save_pretrained).')
  try:
    return HFTokenizer(directory)
  except Exception as e:  # noqa: BLE001 -- tokenizers raises its own exception types for unreadable files
    raise ConfigError(f'data.tokenizer={name!r} is not a readable GPT-2 tokenizer ({_first_line(e)}).') from None


def _first_line(e: Exception) -> str:
  return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _split_long(text: str, limit: int) -> list[str]:
  """Cuts text into pieces of at most `limit` characters, at a line end where there is one."""
  if len(text) <= limit:
    return [text]
  pieces, start = [], 0
  while start < len(text):
    stop = min(start + limit, len(text))
    if stop < len(text):
      newline = text.rfind('\n', start, stop)
      if newline > start:
        stop = newline + 1
    pieces.append(text[start:stop])
    start = stop
  return pieces


def train(documents: Iterable[str], path: str, vocab_size: int, model_type: str = 'bpe',
          sample_chars: int = 16_000_000) -> SentencePieceTokenizer:
  """Trains a sentencepiece model on the first `sample_chars` characters of `documents` and writes it to `path`.

  The model is lossless on any text: identity normalisation, no whitespace folding, no dummy prefix, and byte
  fallback for characters outside the vocabulary. Pieces may span line ends, so indentation and newlines get tokens.
  """
  if model_type not in ('bpe', 'unigram'):
    raise ConfigError(f'--model_type={model_type!r} is not valid: use \'bpe\' or \'unigram\'.')
  sentences = []
  total = 0
  for text in documents:
    for sentence in _split_long(text, _SENTENCE_CHARS):
      if sentence.strip():
        sentences.append(sentence)
        total += len(sentence)
    if total >= sample_chars:
      break
  if not sentences:
    raise ConfigError('the tokenizer source holds no text: check --config.data.source (and --config.data.text_field for JSONL).')
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size, model_type=model_type,
        byte_fallback=True, normalization_rule_name='identity', remove_extra_whitespaces=False,
        add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True, character_coverage=0.9995,
        unk_id=0, bos_id=-1, eos_id=1, pad_id=2, eos_piece=EOT_PIECE, pad_piece=PAD_PIECE,
        max_sentence_length=_MAX_SENTENCE_BYTES, input_sentence_size=0, num_threads=os.cpu_count() or 1,
        minloglevel=2)
  except RuntimeError as e:
    message = str(e)
    too_high = re.search(r'Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)', message)
    if too_high:
      raise ConfigError(f'--vocab_size={vocab_size} is larger than this corpus supports: use at most '
                        f'{too_high.group(2)} or train on more text.') from None
    too_low = re.search(r'Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)', message)
    if too_low:
      raise ConfigError(f'--vocab_size={vocab_size} is smaller than the {too_low.group(2)} characters and special '
                        f'pieces this corpus needs: use a larger vocabulary.') from None
    raise ConfigError(f'sentencepiece could not train on this corpus ({_first_line(e)}).') from None
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(model.getvalue())
  os.replace(tmp, path)
  return SentencePieceTokenizer(path, model.getvalue())
