"""Tokenizers: byte and sentencepiece round trips on real text, the train-tokenizer CLI, loading, bad input."""

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gpt_jax.config import ConfigError
from gpt_jax.data import sources
from gpt_jax.data import tokenizer as tokenizer_lib
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRICKY = 'def f(x):\n\tif x:  # é 中文 ☃\r\n        return "\x01\ufffd"  \n\n\n'


def _copy_stdlib_packages(target, packages=('json', 'email', 'html')):
  """A small real corpus: a few packages of the standard library, copied so a test can change them."""
  for package in packages:
    shutil.copytree(os.path.join(sources.stdlib_root(), package), os.path.join(target, package),
                    ignore=shutil.ignore_patterns('__pycache__'))
  return f'files:{target}/**/*.py'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A BPE tokenizer trained through the CLI on a ~0.5 MB corpus: (tokenizer, data config, source spec)."""
  root = tmp_path_factory.mktemp('tok')
  source = _copy_stdlib_packages(str(root / 'corpus'))
  data_dir = str(root / 'data')
  result = subprocess.run(
      [sys.executable, '-m', 'gpt_jax.data', 'train-tokenizer', f'--config.data.source={source}', '--vocab_size=1024',
       f'--config.data.data_dir={data_dir}'], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-2000:]
  path = result.stdout.strip().splitlines()[-1]
  assert path.startswith(os.path.join(data_dir, 'tokenizers')) and path.endswith('-bpe-1024.model')
  before = os.stat(path).st_mtime_ns
  again = subprocess.run(result.args, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'})
  assert again.returncode == 2 and again.stderr.strip() == (
      f'error: {path} already exists (a tokenizer of this source, type and size; runs that use it keep its '
      f'checksum): use it with --config.data.tokenizer={path}, or pass --overwrite to train it again.')
  assert os.stat(path).st_mtime_ns == before
  config = tiny_config(data__tokenizer=path, data__data_dir=data_dir, data__source=source)
  return tokenizer_lib.load(config.data), config.data, source


def test_byte_tokenizer_round_trip_and_specials():
  tok = tokenizer_lib.load(tiny_config().data)
  assert (tok.vocab_size, tok.eot_id, tok.pad_id, tok.checksum) == (258, 256, 257, 'byte')
  ids = tok.encode(TRICKY)
  assert ids == list(TRICKY.encode('utf-8')) and max(ids) < 256
  assert tok.decode(ids) == TRICKY
  assert tok.decode([104, 256, 105, 257, 999, -1]) == 'hi'
  assert tok.decode([0xff, 65]) == '\ufffdA'  # sampled non-UTF-8 bytes decode instead of failing
  batch = tok.encode_batch(['ab', '', 'é'])
  assert [b.tolist() for b in batch] == [[97, 98], [], [0xc3, 0xa9]]


def test_sentencepiece_round_trips_losslessly_on_its_corpus(trained):
  tok, data_config, source_spec = trained
  assert tok.vocab_size == 1024 and tok.eot_id != tok.pad_id
  with open(data_config.tokenizer, 'rb') as f:
    assert tok.checksum == hashlib.sha256(f.read()).hexdigest()
  source = sources.open_source(source_spec, data_config.data_dir)
  documents = [text for split in sources.SPLITS for text in source.texts(split)]
  assert len(documents) > 30
  for text, ids in zip(documents, tok.encode_batch(documents)):
    assert tok.decode(ids.tolist()) == text
    assert ids.tolist() == tok.encode(text)
  # Characters never seen in training fall back to bytes: nothing is unknown, nothing is lost.
  assert tok.decode(tok.encode(TRICKY)) == TRICKY
  assert 0 not in tok.encode(TRICKY + '\U0001F600')
  assert tok.decode(tok.encode('x') + [tok.eot_id, tok.pad_id, 5000] + tok.encode('y')) == 'xy'


def test_sentencepiece_encodes_a_document_longer_than_one_piece(trained):
  tok, _, _ = trained
  line = 'for key, value in sorted(items.items()):  # a long generated line of code\n'
  text = line * (tokenizer_lib.ENCODE_PIECE_CHARS // len(line) + 50) + 'x' * 1000
  assert len(text) > tokenizer_lib.ENCODE_PIECE_CHARS
  (ids,) = tok.encode_batch([text])
  assert tok.decode(ids.tolist()) == text


def test_unigram_training_round_trips(tmp_path):
  rng = np.random.default_rng(0)
  words = [''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), size=rng.integers(2, 9))) for _ in range(300)]
  texts = [' '.join(rng.choice(words, size=12)) + f' {i}: élan, naïve café\n' for i in range(600)]
  tok = tokenizer_lib.train(texts, str(tmp_path / 'u.model'), vocab_size=320, model_type='unigram')
  assert tok.vocab_size == 320 and os.path.isfile(tmp_path / 'u.model')
  assert all(tok.decode(tok.encode(t)) == t for t in texts)


def test_load_refuses_a_missing_or_corrupt_model(tmp_path):
  with pytest.raises(ConfigError, match=r'data.tokenizer=.*does not exist.*train-tokenizer'):
    tokenizer_lib.load(tiny_config(data__tokenizer=str(tmp_path / 'missing.model')).data)
  corrupt = tmp_path / 'corrupt.model'
  corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  with pytest.raises(ConfigError, match=r'data.tokenizer=.*not a readable sentencepiece model.*train-tokenizer'):
    tokenizer_lib.load(tiny_config(data__tokenizer=str(corrupt)).data)
  empty = tmp_path / 'empty.model'
  empty.write_bytes(b'')
  with pytest.raises(ConfigError, match='data.tokenizer'):
    tokenizer_lib.load(tiny_config(data__tokenizer=str(empty)).data)


def test_training_refuses_impossible_vocabulary_sizes(tmp_path):
  texts = ['a tiny corpus of a few words\n'] * 20
  with pytest.raises(ConfigError, match=r'--vocab_size=8192 is larger than this corpus supports: use at most \d+'):
    tokenizer_lib.train(texts, str(tmp_path / 'big.model'), vocab_size=8192)
  with pytest.raises(ConfigError, match='--vocab_size=100 is smaller than'):
    tokenizer_lib.train(texts, str(tmp_path / 'small.model'), vocab_size=100)
  with pytest.raises(ConfigError, match='no text'):
    tokenizer_lib.train(['', '  \n'], str(tmp_path / 'none.model'), vocab_size=300)
  assert not os.listdir(tmp_path)  # nothing half-written is left behind
