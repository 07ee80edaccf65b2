"""Data CLI: prepare a source, or train a sentencepiece tokenizer on one.

  python -m gpt_jax.data prepare [--config=configs/<file>.py:<arg>] [--config.data.source=stdlib]
      [--config.data.tokenizer=byte|<path.model>] [--config.data.data_dir=...]
  python -m gpt_jax.data prepare --config.data.source=tfds:lm1b     (on a machine with network access)
  python -m gpt_jax.data train-tokenizer --config.data.source=stdlib --vocab_size=8192 [--model_type=bpe|unigram]

The data fields come from the same config tree and --config.data.<field> flags as training, so a run's config
prepares exactly the data that run reads.

`prepare` writes the ArrayRecord copy of each source of a mixture and its token caches for --tokenizer, and prints
what it found (documents, replaced bytes, skipped lines). `train-tokenizer` samples at most --sample_chars
characters of the training split (a fixed shuffle of documents, shared out by mixture weight), writes
<data_dir>/tokenizers/<source>-<model_type>-<vocab_size>.model (an existing one is refused unless --overwrite)
and prints its path on the last line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys

import numpy as np
from absl import flags

from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.data import pipeline
from gpt_jax.data import sources
from gpt_jax.data import tokenizer as tokenizer_lib

_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 8192, 'train-tokenizer: vocabulary size, specials included.')
_MODEL_TYPE = flags.DEFINE_enum('model_type', 'bpe', ['bpe', 'unigram'], 'train-tokenizer: sentencepiece model.')
_SAMPLE_CHARS = flags.DEFINE_integer('sample_chars', 16_000_000, 'train-tokenizer: characters of text to train on.')
cli.define_overwrite_flag()

_USAGE = ('usage: python -m gpt_jax.data prepare|train-tokenizer [--config=...] [--config.data.source=...] '
          '(see --help)')


def _prepare(d) -> None:
  tokenizer = tokenizer_lib.load(d)
  for source, _ in sources.open_sources(d.source, d.data_dir, d.text_field):
    report = source.prepare(download=True)
    print(f'{source.spec}: {json.dumps(report)}')
    for split in sources.SPLITS:
      try:
        tokens = pipeline.token_cache(source, split, tokenizer, d.data_dir)
      except ConfigError as e:
        print(f'{source.spec} {split}: {e}')
        continue
      print(f'{source.spec} {split}: {len(tokens)} tokens with tokenizer {tokenizer.checksum}')


def _sample(texts, chars: int):
  """Documents of `texts` in a fixed shuffled order until `chars` characters have been yielded."""
  total = 0
  for index in np.random.default_rng(0).permutation(len(texts)):
    if total >= chars:
      return
    text = texts[int(index)]
    total += len(text)
    yield text


def _train_tokenizer(d) -> str:
  components = sources.open_sources(d.source, d.data_dir, d.text_field)
  name = components[0][0].slug if len(components) == 1 else (
      'mix-' + hashlib.sha256(d.source.encode()).hexdigest()[:8])
  path = os.path.join(os.path.expanduser(d.data_dir), 'tokenizers',
                      f'{name}-{_MODEL_TYPE.value}-{_VOCAB_SIZE.value}.model')
  if os.path.exists(path) and not flags.FLAGS.overwrite:
    raise ConfigError(f'{path} already exists (a tokenizer of this source, type and size; runs that use it keep its '
                      f'checksum): use it with --config.data.tokenizer={path}, or pass --overwrite to train it again.')
  total_weight = sum(weight for _, weight in components)
  documents = []
  for source, weight in components:
    source.prepare()
    documents.append(_sample(source.texts('train'), int(_SAMPLE_CHARS.value * weight / total_weight)))
  tokenizer = tokenizer_lib.train(itertools.chain(*documents), path, _VOCAB_SIZE.value, _MODEL_TYPE.value,
                                  _SAMPLE_CHARS.value)
  print(f'trained a {tokenizer.vocab_size}-token {_MODEL_TYPE.value} tokenizer (sha256 {tokenizer.checksum}); '
        f'use it with --config.data.tokenizer={path} --config.model.vocab_size={tokenizer.vocab_size}',
        file=sys.stderr)
  print(path)
  return path


COMMANDS = {'prepare': _prepare, 'train-tokenizer': _train_tokenizer}


def main(argv) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise ConfigError(f'name one command, prepare or train-tokenizer, not {" ".join(argv[1:]) or "none"}: {_USAGE}.')
  COMMANDS[argv[1]](cli.config_from_flags().data)


if __name__ == '__main__':
  cli.run_main(main, 'configs/tiny.py:micro', commands=tuple(COMMANDS))
