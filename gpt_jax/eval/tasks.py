"""Few-shot task files: the JSONL formats, the task spec, and the GPT-3 Section 3.9 synthetic task generators.

A task is a directory (or a JSON file) holding a spec close to an lm-evaluation-harness YAML task:

    {"task": "arithmetic_2da", "output_type": "loglikelihood", "test_file": "test.jsonl",
     "train_file": "train.jsonl", "description": "", "target_delimiter": "", "fewshot_delimiter": "",
     "metric_list": ["acc"], "num_fewshot": 0, "generation_kwargs": {"until": ["\\n"], "max_gen_toks": 32}}

and JSONL files in one of three formats, chosen by output_type:
  loglikelihood, generate_until   {"context": str, "completion": str}           (GPT-3's released format)
  multiple_choice                 {"query": str, "choices": [str, ...], "gold": int}
  loglikelihood_rolling           {"text": str}

The generators write the arithmetic tasks (2D+ ... 1DC) and the word-scrambling tasks (CL, A1, A2, RI, RW)
in the formats of github.com/openai/gpt-3/data, deterministically from a seed.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
import re
import string
from typing import Iterable, Sequence

from gpt_jax.config import ConfigError

OUTPUT_TYPES = ('loglikelihood', 'multiple_choice', 'generate_until', 'loglikelihood_rolling')

# Metrics each request type can report; the first ones are reported when a spec names none.
METRICS = {
    'loglikelihood': ('acc', 'loglik'),
    'multiple_choice': ('acc', 'acc_norm'),
    'generate_until': ('exact_match', 'f1', 'bleu', 'rouge_l'),
    'loglikelihood_rolling': ('word_perplexity', 'byte_perplexity', 'bits_per_byte'),
}
DEFAULT_METRICS = {
    'loglikelihood': ('acc', 'loglik'),
    'multiple_choice': ('acc', 'acc_norm'),
    'generate_until': ('exact_match',),
    'loglikelihood_rolling': ('word_perplexity', 'byte_perplexity', 'bits_per_byte'),
}
FIELDS = {
    'loglikelihood': ('context', 'completion'),
    'generate_until': ('context', 'completion'),
    'multiple_choice': ('query', 'choices', 'gold'),
    'loglikelihood_rolling': ('text',),
}


class TaskError(ConfigError):
  """A task spec or task file is malformed; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """How to turn a task's documents into requests; field names follow lm-evaluation-harness."""
  task: str  # name used in reports
  output_type: str  # one of OUTPUT_TYPES
  test_file: str  # JSONL of evaluated documents (absolute, or relative to the spec)
  train_file: str | None = None  # JSONL the demonstrations are drawn from; None: the test split, minus the item
  description: str = ''  # prepended to every context (e.g. an instruction)
  target_delimiter: str = ' '  # between a document's text and its target
  fewshot_delimiter: str = '\n\n'  # after each demonstration
  metric_list: tuple[str, ...] = ()  # () -> DEFAULT_METRICS[output_type]
  num_fewshot: int = 0  # K when the command line does not set one
  until: tuple[str, ...] = ('\n\n',)  # generate_until: stop strings
  max_gen_toks: int = 32  # generate_until: most tokens generated per item

  def __post_init__(self):
    if self.output_type not in OUTPUT_TYPES:
      raise TaskError(f'task {self.task!r}: output_type={self.output_type!r} is not valid: '
                      f'use one of {", ".join(OUTPUT_TYPES)}.')
    unknown = [m for m in self.metrics if m not in METRICS[self.output_type]]
    if unknown:
      raise TaskError(f'task {self.task!r}: metric {unknown[0]!r} does not apply to {self.output_type}: '
                      f'use some of {", ".join(METRICS[self.output_type])}.')

  @property
  def metrics(self) -> tuple[str, ...]:
    return tuple(self.metric_list) or DEFAULT_METRICS[self.output_type]

  def to_json(self) -> dict:
    d = {'task': self.task, 'output_type': self.output_type, 'test_file': self.test_file,
         'train_file': self.train_file, 'description': self.description,
         'target_delimiter': self.target_delimiter, 'fewshot_delimiter': self.fewshot_delimiter,
         'metric_list': list(self.metrics), 'num_fewshot': self.num_fewshot}
    if self.output_type == 'generate_until':
      d['generation_kwargs'] = {'until': list(self.until), 'max_gen_toks': self.max_gen_toks}
    return d

  @classmethod
  def from_json(cls, d: dict, where: str = 'task spec') -> 'TaskSpec':
    d = dict(d)
    gen = d.pop('generation_kwargs', None) or {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise TaskError(f'{where}: unknown key {unknown[0]!r}: valid keys are {", ".join(sorted(known))} '
                      f'and generation_kwargs.')
    for key in ('task', 'output_type', 'test_file'):
      if key not in d:
        raise TaskError(f'{where}: the key {key!r} is missing.')
    if 'until' in gen:
      d['until'] = tuple([gen['until']] if isinstance(gen['until'], str) else gen['until'])
    if 'max_gen_toks' in gen:
      d['max_gen_toks'] = int(gen['max_gen_toks'])
    d['metric_list'] = tuple(d.get('metric_list') or ())
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class Task:
  """A spec with its documents loaded."""
  spec: TaskSpec
  test_docs: list[dict]
  train_docs: list[dict] | None


def read_jsonl(path: str, output_type: str) -> list[dict]:
  """Reads a task file, checking every line has the fields its output_type needs."""
  if not os.path.isfile(path):
    raise TaskError(f'task file {path!r} does not exist: check test_file/train_file in the task spec.')
  docs = []
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        doc = json.loads(line)
      except json.JSONDecodeError as e:
        raise TaskError(f'{path}:{lineno} is not valid JSON ({e.msg}): write one JSON object per line.') from e
      missing = [k for k in FIELDS[output_type] if k not in doc]
      if missing:
        raise TaskError(f'{path}:{lineno} lacks the field {missing[0]!r} that {output_type} tasks need '
                        f'({", ".join(FIELDS[output_type])}).')
      if output_type == 'multiple_choice' and not 0 <= doc['gold'] < len(doc['choices']):
        raise TaskError(f'{path}:{lineno}: gold={doc["gold"]} is not an index into its {len(doc["choices"])} '
                        f'choices.')
      docs.append(doc)
  if not docs:
    raise TaskError(f'task file {path!r} holds no documents.')
  return docs


def write_jsonl(path: str, docs: Iterable[dict]) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    for doc in docs:
      f.write(json.dumps(doc, ensure_ascii=False) + '\n')


def load_task(path: str) -> Task:
  """Loads a task from its spec: a JSON file, or a directory holding task.json."""
  spec_path = os.path.join(path, 'task.json') if os.path.isdir(path) else path
  if not os.path.isfile(spec_path):
    raise TaskError(f'task spec {spec_path!r} does not exist: pass --tasks=<dir with task.json or a .json file>.')
  with open(spec_path, encoding='utf-8') as f:
    try:
      spec = TaskSpec.from_json(json.load(f), where=spec_path)
    except json.JSONDecodeError as e:
      raise TaskError(f'task spec {spec_path!r} is not valid JSON ({e.msg}).') from e
  root = os.path.dirname(os.path.abspath(spec_path))
  test_docs = read_jsonl(os.path.join(root, spec.test_file), spec.output_type)
  train_docs = read_jsonl(os.path.join(root, spec.train_file), spec.output_type) if spec.train_file else None
  return Task(spec, test_docs, train_docs)


def write_task(directory: str, spec: TaskSpec, test_docs: Sequence[dict],
               train_docs: Sequence[dict] | None = None) -> str:
  """Writes task.json and its JSONL files into directory; returns the directory."""
  os.makedirs(directory, exist_ok=True)
  write_jsonl(os.path.join(directory, spec.test_file), test_docs)
  if train_docs is not None:
    write_jsonl(os.path.join(directory, spec.train_file), train_docs)
  with open(os.path.join(directory, 'task.json'), 'w', encoding='utf-8') as f:
    json.dump(spec.to_json(), f, indent=2)
  return directory


# ---------------------------------------------------------------------------------------------------------------
# GPT-3 Section 3.9 arithmetic. Released format: {"context": "\n\nQ: What is 98 plus 45?\n\nA:", "completion": " 143"}.

ARITHMETIC_N = 2000  # instances per task (Section 3.9.1)
# paper name -> (lm-evaluation-harness name, digits, operation)
ARITHMETIC_TASKS = {
    '2D+': ('arithmetic_2da', 2, 'plus'),
    '2D-': ('arithmetic_2ds', 2, 'minus'),
    '3D+': ('arithmetic_3da', 3, 'plus'),
    '3D-': ('arithmetic_3ds', 3, 'minus'),
    '4D+': ('arithmetic_4da', 4, 'plus'),
    '4D-': ('arithmetic_4ds', 4, 'minus'),
    '5D+': ('arithmetic_5da', 5, 'plus'),
    '5D-': ('arithmetic_5ds', 5, 'minus'),
    '2Dx': ('arithmetic_2dm', 2, 'times'),
    '1DC': ('arithmetic_1dc', 1, 'compound'),
}
_APPLY = {'plus': lambda a, b: a + b, 'minus': lambda a, b: a - b, 'times': lambda a, b: a * b,
          '+': lambda a, b: a + b, '-': lambda a, b: a - b, '*': lambda a, b: a * b}


def _qa(question: str, answer: int) -> dict:
  return {'context': f'\n\nQ: What is {question}?\n\nA:', 'completion': f' {answer}'}


def arithmetic_examples(name: str, n: int = ARITHMETIC_N, seed: int = 0, split: str = 'test') -> list[dict]:
  """n problems of a Section 3.9.1 task ('2D+', ..., '1DC'), a pure function of (name, n, seed, split).

  Operands are uniform in [0, 10^digits) (so "4344 minus 48888" is a 5D- problem and answers may be negative).
  1DC follows the released file single_digit_three_ops.jsonl, "(9 + 8) * 2": three digits in [0, 10), two
  operators uniform in {+, -, *}, the first pair parenthesised (the paper's text shows "6+(4*8)" instead).
  """
  if name not in ARITHMETIC_TASKS:
    raise TaskError(f'unknown arithmetic task {name!r}: use one of {", ".join(ARITHMETIC_TASKS)}.')
  _, digits, op = ARITHMETIC_TASKS[name]
  # Seeding with a string hashes it with SHA-512: stable across runs and Python processes.
  rng = random.Random(f'gpt3-arithmetic/{name}/{split}/{seed}')
  hi = 10 ** digits
  examples = []
  for _ in range(n):
    if op == 'compound':
      a, b, c = (rng.randrange(10) for _ in range(3))
      op1, op2 = rng.choice('+-*'), rng.choice('+-*')
      examples.append(_qa(f'({a} {op1} {b}) {op2} {c}', _APPLY[op2](_APPLY[op1](a, b), c)))
    else:
      a, b = rng.randrange(hi), rng.randrange(hi)
      examples.append(_qa(f'{a} {op} {b}', _APPLY[op](a, b)))
  return examples


# ---------------------------------------------------------------------------------------------------------------
# GPT-3 Section 3.9.2 word scrambling. Released format: {"context": "\nasinoc =", "completion": " casino"},
# with the instruction of Figure G.19 as the task description.

SCRAMBLE_DESCRIPTION = 'Please unscramble the letters into a word, and write that word:'
N_WORDS = 10_000  # the 10,000 most frequent words ...
MIN_WORD_LEN, MAX_WORD_LEN = 5, 14  # ... longer than 4 and shorter than 15 characters
SCRAMBLE_TASKS = {
    'CL': 'cycle_letters',
    'A1': 'anagrams1',
    'A2': 'anagrams2',
    'RI': 'random_insertion',
    'RW': 'reversed_words',
}
INSERTED_CHARS = string.punctuation + ' '  # RI: "a random punctuation or space character"


def word_list(texts: Iterable[str], n: int = N_WORDS, min_len: int = MIN_WORD_LEN,
              max_len: int = MAX_WORD_LEN) -> list[str]:
  """The n most frequent lower-cased alphabetic words of min_len..max_len characters in texts.

  The paper counted frequencies on a large corpus [Nor09]; we count them on the corpus given. Ties are broken
  alphabetically so the list is a pure function of the texts.
  """
  counts = collections.Counter()
  for text in texts:
    counts.update(w for w in re.findall(r'[a-z]+', text.lower()) if min_len <= len(w) <= max_len)
  return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def scramble(name: str, word: str, rng: random.Random) -> str:
  """One Section 3.9.2 transformation of word."""
  if name == 'CL':  # rotate by a non-zero offset: "inevitably" -> "lyinevitab"
    k = rng.randrange(1, len(word))
    return word[k:] + word[:k]
  if name in ('A1', 'A2'):  # shuffle all but the first and last one (A1) or two (A2) letters
    keep = 1 if name == 'A1' else 2
    middle = list(word[keep:-keep])
    rng.shuffle(middle)
    return word[:keep] + ''.join(middle) + word[-keep:]
  if name == 'RI':  # one random punctuation or space character between each pair of letters
    return ''.join(c + rng.choice(INSERTED_CHARS) for c in word[:-1]) + word[-1]
  if name == 'RW':
    return word[::-1]
  raise TaskError(f'unknown word-scrambling task {name!r}: use one of {", ".join(SCRAMBLE_TASKS)}.')


def scramble_examples(name: str, words: Sequence[str], seed: int = 0) -> list[dict]:
  """One example per word (10,000 for the paper's list), a pure function of (name, words, seed)."""
  rng = random.Random(f'gpt3-scramble/{name}/{seed}')
  return [{'context': f'\n{scramble(name, w, rng)} =', 'completion': f' {w}'} for w in words]


def gpt3_task_dirs(directory: str) -> list[str]:
  """Where write_gpt3_tasks(directory, ...) puts the fifteen tasks, in its order."""
  names = [task for task, _, _ in ARITHMETIC_TASKS.values()] + list(SCRAMBLE_TASKS.values())
  return [os.path.join(directory, name) for name in names]


def write_gpt3_tasks(directory: str, words: Sequence[str], seed: int = 0,
                     n_arithmetic: int = ARITHMETIC_N) -> list[str]:
  """Writes the ten arithmetic and five word-scrambling tasks as task directories; returns their paths.

  Request types follow lm-evaluation-harness: arithmetic is scored as loglikelihood with acc = the answer is the
  greedy continuation (the paper's exact answer), scrambling as generate_until "\\n" with exact match.
  Arithmetic gets a training split drawn independently; the scrambling tasks have one example per word, so
  their demonstrations come from the other words of the same split.
  """
  paths = []
  for name, (task, _, _) in ARITHMETIC_TASKS.items():
    spec = TaskSpec(task=task, output_type='loglikelihood', test_file='test.jsonl', train_file='train.jsonl',
                    target_delimiter='', fewshot_delimiter='', metric_list=('acc', 'loglik'))
    paths.append(write_task(os.path.join(directory, task), spec,
                            arithmetic_examples(name, n_arithmetic, seed, 'test'),
                            arithmetic_examples(name, n_arithmetic, seed, 'train')))
  for name, task in SCRAMBLE_TASKS.items():
    spec = TaskSpec(task=task, output_type='generate_until', test_file='test.jsonl',
                    description=SCRAMBLE_DESCRIPTION, target_delimiter='', fewshot_delimiter='',
                    metric_list=('exact_match',), until=('\n',), max_gen_toks=32)
    paths.append(write_task(os.path.join(directory, task), spec, scramble_examples(name, words, seed)))
  return paths
