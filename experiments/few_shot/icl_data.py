"""Byte-level data for the in-context learning experiment: the induction rows, the probe's held-out rows and the
K-shot task families, each with parameters drawn per sequence, mixed with windows of the stdlib corpus.

Formats are compact so that K = 16 demonstrations fit a 128-byte context (a task row and a prompt open with the
task's tag, then demonstrations: an input, a separator, an output and a space, or for the cipher its input and
output characters alternating, then a space):

  recall  'R c7 '      a letter key -> a digit; the map is drawn per sequence over 8 of the 26 letters
  cipher  'C aqbxcz '  3-letter words over 6 letters, each letter substituted by a per-sequence map into a-z and
                       written right after it (the word 'abc' enciphered 'qxz')
  add     'A 37=2 '    (a + b + offset) mod 10 with a per-sequence offset in 1..9
  pairs   'P ab7 '     a 2-letter key over 4 letters -> a digit; the map is drawn per sequence over 8 of the 16
                       keys, so a key's last letter alone leaves about two candidates (not in the default set)

The cipher interleaves each input letter with its substitute, so that reading it is induction (a letter's
substitute is what followed the letter before); written as word and enciphered word ('ab:qx' for 2-letter words),
it needs a head matching a letter against the one three places before an earlier letter, which these models never
formed (every model stayed at its shuffled control's level). A cipher query gives the input letters one at a
time and scores the substitutes.

The tag is the K = 0 prompt's whole description of the task (GPT-3's zero-shot prompts carry a natural-language one):
with it, K = 0 knows the output's format, so what K adds is the per-sequence mapping. A task's episode is a list of
(input, output) pairs sharing one drawn parameter; a training row is the tag and an episode's demonstrations until
the row is full, so every position of the row sees 0..K earlier demonstrations.

Induction rows (a random run of 8-23 symbols repeated until the row is full) reward an induction head at
almost every position; a short warm-up on them forms one within a few hundred steps, which the task rows alone,
where a fraction of the targets reward it, did not do in thousands.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Callable

import numpy as np

LETTERS = string.ascii_lowercase
ALPHABET_LOW, ALPHABET_SIZE = 32, 200  # the probe's symbols: byte ids 32..231
INDUCTION_SEGMENT = 24  # induction rows of the K-shot experiment repeat runs of 8-23 symbols


@dataclasses.dataclass(frozen=True)
class Task:
  """A task family: draw(rng) -> a per-sequence example function ex(rng) -> (input, output)."""
  name: str
  tag: str
  separator: str
  draw: Callable[[np.random.Generator], Callable[[np.random.Generator], tuple[str, str]]]
  chance: float  # accuracy of a uniform guess over the output space
  interleaved: bool = False  # each input character followed by its output character, no separator

  def demo(self, x: str, y: str) -> str:
    if self.interleaved:
      return ''.join(a + b for a, b in zip(x, y)) + ' '
    return f'{x}{self.separator}{y} '

  def query(self, x: str, y: str) -> tuple[str, str, tuple[bool, ...]]:
    """The query's text after the demonstrations as (end of the prompt, continuation, which continuation bytes are
    scored): the input and separator, then the output, all scored; for an interleaved task the first input
    character, then the rest of demo(x, y) without its space, its input characters given and its outputs scored."""
    if self.interleaved:
      return x[0], self.demo(x, y)[1:-1], tuple(i % 2 == 0 for i in range(2 * len(x) - 1))
    return x + self.separator, y, (True,) * len(y)


def _lookup(keys, rng):
  """A per-sequence map from the 8 keys to digits, as an example function."""
  values = rng.integers(0, 10, 8)
  def example(rng):
    i = rng.integers(8)
    return keys[i], str(values[i])
  return example


def _recall(rng):
  return _lookup(rng.choice(list(LETTERS), 8, replace=False), rng)


def _cipher(rng):
  source = rng.choice(list(LETTERS), 6, replace=False)
  target = rng.choice(list(LETTERS), 6, replace=False)
  table = dict(zip(source, target))
  def example(rng):
    word = ''.join(rng.choice(source, 3))
    return word, ''.join(table[c] for c in word)
  return example


def _add(rng):
  offset = int(rng.integers(1, 10))
  def example(rng):
    a, b = rng.integers(0, 10, 2)
    return f'{a}{b}', str((a + b + offset) % 10)
  return example


def _pairs(rng):
  letters = rng.choice(list(LETTERS), 4, replace=False)
  keys = [a + b for a in letters for b in letters]
  return _lookup([keys[i] for i in rng.choice(len(keys), 8, replace=False)], rng)


TASKS = {t.name: t for t in (Task('recall', 'R ', '', _recall, 1 / 10),
                             Task('cipher', 'C ', '', _cipher, 1 / 26**3, interleaved=True),
                             Task('add', 'A ', '=', _add, 1 / 10),
                             Task('pairs', 'P ', '', _pairs, 1 / 10))}
DEFAULT_TASKS = ('recall', 'cipher', 'add')


def task_row(task: Task, rng: np.random.Generator, length: int) -> bytes:
  """One training row of `length` bytes: the task's tag, then one episode's demonstrations back to back."""
  example = task.draw(rng)
  text = task.tag
  while len(text) < length:
    text += task.demo(*example(rng))
  return text[:length].encode()


def induction_row(rng: np.random.Generator, length: int, segment: int) -> bytes:
  """A random run of segment // 3 to segment - 1 symbols (the probe's alphabet) repeated until the row holds
  `length` of them: after the first period every symbol is predicted by the successor of its previous occurrence,
  one period back (a copy offset drawn per row)."""
  period = int(rng.integers(segment // 3, segment))
  return np.resize(rng.integers(ALPHABET_LOW, ALPHABET_LOW + ALPHABET_SIZE, period).astype(np.uint8), length).tobytes()


def corpus_row(texts, rng: np.random.Generator, length: int) -> bytes:
  """A random `length`-byte window of a random document long enough to hold one."""
  while True:
    data = texts[int(rng.integers(len(texts)))].encode()
    if len(data) >= length:
      start = int(rng.integers(0, len(data) - length + 1))
      return data[start:start + length]


def mixed_batch(texts, rng: np.random.Generator, batch: int, length: int, corpus_fraction: float,
                induction_fraction: float, segment: int = INDUCTION_SEGMENT,
                tasks: tuple[str, ...] = DEFAULT_TASKS) -> np.ndarray:
  """[batch, length] int32: each row is a corpus window with probability corpus_fraction, an induction row with
  probability induction_fraction, else a task row of one of `tasks` drawn uniformly."""
  names = list(tasks)
  rows = []
  for _ in range(batch):
    u = rng.random()
    if u < corpus_fraction:
      rows.append(corpus_row(texts, rng, length))
    elif u < corpus_fraction + induction_fraction:
      rows.append(induction_row(rng, length, segment))
    else:
      rows.append(task_row(TASKS[names[int(rng.integers(len(names)))]], rng, length))
  return as_tokens(rows, length)


def induction_batch(rng: np.random.Generator, batch: int, length: int, segment: int = INDUCTION_SEGMENT) -> np.ndarray:
  """[batch, length] int32 induction rows (the warm-up, and the probe's training rows)."""
  return as_tokens([induction_row(rng, length, segment) for _ in range(batch)], length)


def curriculum(texts, length: int, warmup_rows: int, corpus_fraction: float, induction_fraction: float,
               tasks: tuple[str, ...] = DEFAULT_TASKS):
  """The K-shot experiment's rows as make_rows(rng, n, position): induction rows only until warmup_rows rows have
  been drawn (the warm-up forms the induction heads), then mixed_batch's mixture."""
  def rows(rng: np.random.Generator, n: int, position: int) -> np.ndarray:
    if position < warmup_rows:
      return induction_batch(rng, n, length)
    return mixed_batch(texts, rng, n, length, corpus_fraction, induction_fraction, tasks=tasks)
  return rows


def as_tokens(rows: list[bytes], length: int) -> np.ndarray:
  return np.frombuffer(b''.join(rows), np.uint8).reshape(len(rows), length).astype(np.int32)


def probe_batch(rng: np.random.Generator, batch: int, length: int, segment: int) -> tuple[np.ndarray, np.ndarray]:
  """The induction probe: rows of uniform random symbols (ALPHABET_SIZE of them) ending with a segment of random
  length in [segment // 3, segment) written twice, so the copy offset varies per row and only content-based
  induction predicts the second copy. Returns tokens [batch, length] and a mask of the second copy's positions
  after its first symbol (the targets induction predicts) in target coordinates [batch, length - 1]."""
  tokens = rng.integers(ALPHABET_LOW, ALPHABET_LOW + ALPHABET_SIZE, (batch, length)).astype(np.int32)
  mask = np.zeros((batch, length - 1), bool)
  for row in range(batch):
    n = int(rng.integers(segment // 3, segment))
    tokens[row, length - n:] = tokens[row, length - 2 * n:length - n]
    mask[row, length - n:] = True  # target t + 1 >= length - n + 1
  return tokens, mask
