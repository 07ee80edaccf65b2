"""The embedded toy task: instructions, rankings, preference pairs and classification items a program can judge.

Items are small sums, differences and word unscrambles ("Q: What is 23 plus 19?\\nA:" -> " 42"), the kind of task
GPT-3 probes with its arithmetic and word-scrambling sets, sized so that a tiny byte-level model learns them on a
CPU in minutes. Every generator is a pure function of (n, seed, held_out): held-out items are those whose prompt
hashes into one eighth of the space, so no training item is ever a held-out one, whatever the seeds.

Wrong answers are realistic (off by one or ten, a dropped carry, swapped digits, an operand, a near-miss anagram),
and `closeness` orders responses from right to wrong, which is what rankings and pairs are built from and what
`judge` (exact match of the first line) scores; `gold` grades a response in [0, 1] by the same closeness. The
held-out items split by kind into a validation half and a test half (`held_out_split`).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import random
import re
import zlib

WORDS = ('apple bread chair dance eagle flame grape house juice knife lemon mouse night ocean piano queen river '
         'snake table tiger uncle voice water youth zebra brick cloud dream event frost ghost heart input lunch '
         'money nurse olive paint quiet radio sheep toast urban value wheat yacht alarm beach candy diary fruit '
         'glass honey ivory jelly koala magic noble orbit pearl robin salad tulip vivid witch blue cold dark fast '
         'gold hand iron kind lamp milk nose open park rain salt tree wind bird fish frog lion wolf rose seed '
         'star moon song ship road book door ring coin desk').split()
HELD_OUT_BUCKETS = 8  # prompts whose hash is 0 modulo this are held out


def _held_out(prompt: str) -> bool:
  return zlib.crc32(prompt.encode()) % HELD_OUT_BUCKETS == 0


KINDS = ('plus', 'minus', 'unscramble')


def _problem(rng: random.Random, kinds: tuple[str, ...], top: int) -> tuple[str, str, str]:
  """(question, answer, kind) of one random item; operands are at most top."""
  kind = rng.choice(kinds)
  if kind == 'unscramble':
    word = rng.choice(WORDS)
    letters = list(word)
    while ''.join(letters) == word:
      rng.shuffle(letters)
    return f'Unscramble {"".join(letters)}', word, kind
  a, b = rng.randint(0, top), rng.randint(0, top)
  if kind == 'minus':
    a, b = max(a, b), min(a, b)
  return f'What is {a} {kind} {b}?', str(a + b if kind == 'plus' else a - b), kind


def prompt_of(question: str) -> str:
  return f'Q: {question}\nA:'


class TooFewItems(ValueError):
  """More items were asked for than the toy task has on that side of the held-out split."""

  def __init__(self, n: int, available: int, held_out: bool):
    self.available = available
    super().__init__(f'the toy task has {available} distinct {"held-out" if held_out else "training"} items, '
                     f'fewer than {n}.')


def _questions(kinds: tuple[str, ...] = KINDS, top: int = 49) -> list[tuple[str, str]]:
  """Every (question, kind) _problem can draw, both sides of the held-out split."""
  questions = [(f'Unscramble {letters}', 'unscramble') for word in WORDS if 'unscramble' in kinds
               for letters in sorted(set(map(''.join, itertools.permutations(word)))) if letters != word]
  questions += [(f'What is {a} {kind} {b}?', kind) for kind in kinds if kind != 'unscramble'
                for a in range(top + 1) for b in range(top + 1) if kind == 'plus' or a >= b]
  return questions


@functools.cache
def available(held_out: bool, kinds: tuple[str, ...] = KINDS, top: int = 49) -> int:
  """How many distinct items _problem can draw on one side of the held-out split (every prompt enumerated)."""
  return sum(_held_out(prompt_of(q)) == held_out for q, _ in _questions(kinds, top))


def _items(n: int, seed: int, held_out: bool, kinds: tuple[str, ...] = KINDS, top: int = 49):
  """n distinct (prompt, answer, kind) items on the requested side of the held-out split; TooFewItems when n is
  more than there are."""
  if n > available(held_out, kinds, top):
    raise TooFewItems(n, available(held_out, kinds, top), held_out)
  rng, seen, out = random.Random(seed), set(), []
  while len(out) < n:
    question, answer, kind = _problem(rng, kinds, top)
    prompt = prompt_of(question)
    if prompt in seen or _held_out(prompt) != held_out:
      continue
    seen.add(prompt)
    out.append((prompt, answer, kind))
  return out


def answer_of(prompt: str) -> str:
  """The right answer to a toy prompt (parsed back from the prompt, so a judge needs nothing else)."""
  words = prompt.removeprefix('Q: ').split('\n')[0].rstrip('?').split()
  if words[0] == 'Unscramble':
    letters = sorted(words[1])
    return next(w for w in WORDS if sorted(w) == letters)
  a, op, b = int(words[2]), words[3], int(words[4])
  return str(a + b if op == 'plus' else a - b)


def first_line(response: str) -> str:
  """What the judges read of a response: its first line, stripped."""
  return response.strip().split('\n')[0].strip()


def _integer(text: str) -> bool:
  return re.fullmatch(r'-?[0-9]+', text) is not None


def closeness(prompt: str, response: str) -> float:
  """How near a response is to the right answer: 0 for exact, more negative for worse; -100 for no answer."""
  answer, given = answer_of(prompt), first_line(response)
  if not given:
    return -100.0
  if answer.isdigit():
    return -float(abs(int(given) - int(answer))) if _integer(given) else -100.0
  same = sum(x == y for x, y in zip(given, answer))
  return float(same - max(len(given), len(answer)))


def gold(prompt: str, response: str) -> float:
  """The graded judge, in [0, 1]: 1 for the right answer; a number off by e scores exp(-e / 5); a word scores the
  fraction of its positions that hold the right letter, over the longer of the answer and the response (so a
  letter too many or too few costs one position); anything else (no answer, a word for a number) scores 0."""
  answer, given = answer_of(prompt), first_line(response)
  if not given:
    return 0.0
  if answer.isdigit():
    return math.exp(-abs(int(given) - int(answer)) / 5) if _integer(given) else 0.0
  return sum(x == y for x, y in zip(given, answer)) / max(len(given), len(answer))


def judge(prompt: str, response: str) -> bool:
  """Exact match of the response's first line with the answer."""
  return closeness(prompt, response) == 0.0


def wrong_answers(prompt: str, rng: random.Random) -> list[str]:
  """Distinct plausible wrong answers, each at its own closeness, in random order."""
  answer = answer_of(prompt)
  if answer.isdigit():
    value = int(answer)
    candidates = {value + d for d in (1, -1, 2, -2, 10, -10, 20, 11, -9)} | {int(answer[::-1])}
    candidates |= {int(w.rstrip('?')) for w in prompt.split() if w.rstrip('?').isdigit()}  # an operand
    texts = [str(c) for c in candidates if c >= 0 and c != value]
  else:
    # dict.fromkeys, not a set: a set of strings iterates in an order that changes with PYTHONHASHSEED.
    texts = dict.fromkeys([answer[1] + answer[0] + answer[2:], answer[:-2] + answer[-1] + answer[-2],
                           answer[::-1], answer[0] + ''.join(sorted(answer[1:])), prompt.split()[2]])
    texts = [t for t in texts if t != answer]
  rng.shuffle(texts)
  by_closeness = {}
  for text in texts:
    by_closeness.setdefault(closeness(prompt, text), text)
  wrong = list(by_closeness.values())
  rng.shuffle(wrong)
  return wrong + ['I do not know']


def instructions(n: int, seed: int = 0, held_out: bool = False) -> list[dict]:
  """SFT items in the prompt/completion format: {"prompt": "Q: ...\\nA:", "completion": " <answer>"}."""
  return [dict(prompt=p, completion=' ' + a) for p, a, _ in _items(n, seed, held_out)]


SPLITS = ('validation', 'test')


def held_out_split(split: str) -> list[dict]:
  """Every held-out item of one split, {"prompt", "completion", "kind"}: 'validation' (for choosing checkpoints) or
  'test' (for reporting). Within each kind the held-out prompts are ordered by a hash and dealt alternately, so the
  two splits are disjoint, together hold every held-out item, and have the same share of each kind (+-1)."""
  if split not in SPLITS:
    raise ValueError(f'split {split!r} is not one of {SPLITS}.')
  out = []
  for kind in KINDS:
    prompts = sorted((prompt_of(q) for q, k in _questions() if k == kind and _held_out(prompt_of(q))),
                     key=lambda p: (zlib.crc32(f'split:{p}'.encode()), p))
    out += [dict(prompt=p, completion=' ' + answer_of(p), kind=kind)
            for p in prompts[SPLITS.index(split)::len(SPLITS)]]
  return out


def rankings(n: int, seed: int = 0, held_out: bool = False, max_k: int = 4) -> list[dict]:
  """Reward-model items: {"prompt", "responses", "ranking"} with K in 2..max_k responses, ranking best first."""
  rng = random.Random(seed + 1)
  out = []
  for prompt, answer, _ in _items(n, seed, held_out):
    k = rng.randint(2, max_k)
    responses = [answer] + wrong_answers(prompt, rng)[:k - 1]
    rng.shuffle(responses)
    ranking = sorted(range(len(responses)), key=lambda i: -closeness(prompt, responses[i]))
    out.append(dict(prompt=prompt, responses=[' ' + r for r in responses], ranking=ranking))
  return out


def pairs(n: int, seed: int = 0, held_out: bool = False) -> list[dict]:
  """Preference pairs {"prompt", "chosen", "rejected"}: the right answer against a plausible wrong one."""
  rng = random.Random(seed + 2)
  return [dict(prompt=p, chosen=' ' + a, rejected=' ' + rng.choice(wrong_answers(p, rng)[:-1]))
          for p, a, _ in _items(n, seed, held_out)]


CLASSIFY_KINDS, CLASSIFY_TOP = ('plus', 'minus'), 99  # the classification items' space


def classification(kind: str, n: int, seed: int = 0, held_out: bool = False) -> list[dict]:
  """GPT-1 style items: 'single' {"text": "23 + 19 = 42", "label": 0|1} (is the sum right?), 'pair'
  {"text_a": "23 + 19", "text_b": "50 - 8", "label"} (same value?), 'choice' {"context": "23 + 19 =", "choices":
  [4 sums], "label"}."""
  rng = random.Random(seed + 3)
  out = []
  for prompt, answer, _ in _items(n, seed, held_out, CLASSIFY_KINDS, CLASSIFY_TOP):
    words = prompt.split()
    expression = f'{words[3]} {"+" if words[4] == "plus" else "-"} {words[5].rstrip("?")}'
    wrong = wrong_answers(prompt, rng)[:3]
    label = rng.randint(0, 1)
    if kind == 'single':
      out.append(dict(text=f'{expression} = {answer if label else wrong[0]}', label=label))
    elif kind == 'pair':
      value = int(answer if label else wrong[0])
      b = rng.randint(0, 30)
      other = f'{value + b} - {b}' if rng.random() < 0.5 or value < b else f'{value - b} + {b}'
      out.append(dict(text_a=expression, text_b=other, label=label))
    else:
      choices = [answer] + wrong
      rng.shuffle(choices)
      out.append(dict(context=f'{expression} =', choices=[' ' + c for c in choices], label=choices.index(answer)))
  return out


def _classification_files(kind: str):
  return {f'classify_{kind}_train.jsonl': lambda n, held_out_n, seed, max_k: classification(kind, n, seed),
          f'classify_{kind}_heldout.jsonl': lambda n, held_out_n, seed, max_k: classification(kind, held_out_n, seed,
                                                                                              True)}


# What `write` puts in its directory: name -> rows(n, held_out_n, seed, max_k), and the eval-harness task's spec.
FILES = {
    'sft_train.jsonl': lambda n, held_out_n, seed, max_k: instructions(n, seed),
    'sft_heldout.jsonl': lambda n, held_out_n, seed, max_k: instructions(held_out_n, seed, True),
    'rankings_train.jsonl': lambda n, held_out_n, seed, max_k: rankings(n, seed, max_k=max_k),
    'rankings_heldout.jsonl': lambda n, held_out_n, seed, max_k: rankings(held_out_n, seed, True, max_k),
    'pairs_train.jsonl': lambda n, held_out_n, seed, max_k: pairs(n, seed),
    'pairs_heldout.jsonl': lambda n, held_out_n, seed, max_k: pairs(held_out_n, seed, True),
    'prompts_train.jsonl': lambda n, held_out_n, seed, max_k: [{'prompt': x['prompt']} for x in instructions(n, seed)],
    'eval/toy_qa/test.jsonl': lambda n, held_out_n, seed, max_k: [
        dict(context=x['prompt'], completion=x['completion']) for x in instructions(held_out_n, seed, True)],
    **_classification_files('single'), **_classification_files('pair'), **_classification_files('choice'),
}
TASK_SPEC = 'eval/toy_qa/task.json'
OUTPUTS = (*FILES, TASK_SPEC)


def max_items(held_out: bool) -> int:
  """The most items per file `write` can make: the smaller of the instructions' and the classification's spaces."""
  return min(available(held_out), available(held_out, CLASSIFY_KINDS, CLASSIFY_TOP))


def write(directory: str, n: int = 4000, held_out_n: int = 256, seed: int = 0, max_k: int = 4) -> list[str]:
  """Writes the toy task's JSONL files and an eval-harness task (arith_qa: exact match of generations on the
  held-out instructions) into directory, replacing those files; returns the paths written. Every file is generated
  before anything is written (TooFewItems leaves no trace)."""
  contents = {name: rows(n, held_out_n, seed, max_k) for name, rows in FILES.items()}
  written = []
  for name, rows in contents.items():
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(row) + '\n' for row in rows)
    written.append(path)
  spec = dict(task='toy_qa', output_type='generate_until', test_file='test.jsonl', target_delimiter='',
              metric_list=['exact_match'], generation_kwargs={'until': ['\n'], 'max_gen_toks': 8})
  with open(os.path.join(directory, TASK_SPEC), 'w', encoding='utf-8') as f:
    json.dump(spec, f, indent=2)
  return written + [os.path.join(directory, TASK_SPEC)]
