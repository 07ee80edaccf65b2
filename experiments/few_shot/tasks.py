"""The few-shot experiment's tasks: short in-context tasks a model of a few hundred thousand parameters can learn
from its demonstrations, GPT-3's random insertion (Figure 1.2's task) and 2-digit addition next to them, and a
shuffled-label control of each.

Every task is scored as loglikelihood (acc: the target is the greedy continuation; loglik: its summed log-prob).
Items are short so that K demonstrations fit a 128-byte context; MAX_K says up to which K each task fits.

  copy       'kqzv ->' ' kqzv'                 the answer is the query itself
  recall     'x=4 q=7 m=2 q=' '7'              associative recall: the value of the queried key, inside the item
  swap       'get_key ->' ' key_get'           an identifier's two parts swapped
  ri         '\\ns.u!c/c!e.s =' ' succes'       GPT-3 Section 3.9.2 random insertion (words of 5-6 letters)
  add2       '\\n\\nQ: What is 98 plus 45?\\n\\nA:' ' 143'   GPT-3 Section 3.9.1 2D+

<task>_shuffled has the same test items; its demonstrations' targets are permuted among the demonstrations, so
the format stays and the mapping is lost.
"""

from __future__ import annotations

import os
import random
import string

from gpt_jax.eval import tasks as tasks_lib

N_TEST = 200
N_TRAIN = 400
MAX_K = {'copy': 8, 'recall': 6, 'swap': 4, 'ri': 2, 'add2': 2}  # what a 128-byte context holds, longest item
# Between demonstrations: a newline, except where every context already starts with one (GPT-3's formats).
FEWSHOT_DELIMITER = {'copy': '\n', 'recall': '\n', 'swap': '\n', 'ri': '', 'add2': ''}
WORDS3 = ('get set add pop len key val obj arg buf msg ext dir src dst tmp new old raw max min sum map run end top '
          'row col pos tag').split()


def copy_items(n: int, rng: random.Random) -> list[dict]:
  out = []
  for _ in range(n):
    word = ''.join(rng.choice(string.ascii_lowercase) for _ in range(4))
    out.append({'context': f'{word} ->', 'completion': f' {word}'})
  return out


def recall_items(n: int, rng: random.Random) -> list[dict]:
  out = []
  for _ in range(n):
    keys = rng.sample(string.ascii_lowercase, 3)
    values = [rng.choice(string.digits) for _ in keys]
    query = rng.randrange(3)
    pairs = ' '.join(f'{k}={v}' for k, v in zip(keys, values))
    out.append({'context': f'{pairs} {keys[query]}=', 'completion': values[query]})
  return out


def swap_items(n: int, rng: random.Random) -> list[dict]:
  out = []
  for _ in range(n):
    first, second = rng.sample(WORDS3, 2)
    out.append({'context': f'{first}_{second} ->', 'completion': f' {second}_{first}'})
  return out


def ri_items(n: int, rng: random.Random, words) -> list[dict]:
  picked = [rng.choice(words) for _ in range(n)]
  return tasks_lib.scramble_examples('RI', picked, seed=rng.randrange(10**9))


def shuffled(train: list[dict], rng: random.Random) -> list[dict]:
  """The same demonstrations with their targets permuted among them."""
  targets = [d['completion'] for d in train]
  rng.shuffle(targets)
  return [{'context': d['context'], 'completion': t} for d, t in zip(train, targets)]


def write_all(directory: str, words, seed: int = 0) -> dict[str, str]:
  """Writes every task and its control; returns {task name: directory}."""
  rng = random.Random(f'few-shot-tasks/{seed}')
  makers = {'copy': copy_items, 'recall': recall_items, 'swap': swap_items,
            'ri': lambda n, r: ri_items(n, r, words)}
  splits = {name: (make(N_TEST, rng), make(N_TRAIN, rng)) for name, make in makers.items()}
  splits['add2'] = (tasks_lib.arithmetic_examples('2D+', N_TEST, seed, 'test'),
                    tasks_lib.arithmetic_examples('2D+', N_TRAIN, seed, 'train'))
  paths = {}
  for name, (test, train) in splits.items():
    for variant, demos in ((name, train), (f'{name}_shuffled', shuffled(train, rng))):
      spec = tasks_lib.TaskSpec(task=variant, output_type='loglikelihood', test_file='test.jsonl',
                                train_file='train.jsonl', target_delimiter='',
                                fewshot_delimiter=FEWSHOT_DELIMITER[name], metric_list=('acc', 'loglik'))
      paths[variant] = tasks_lib.write_task(os.path.join(directory, variant), spec, test, demos)
  return paths


def short_words(texts, n: int = 1000) -> list[str]:
  """The corpus's n most frequent words of 5-6 letters: random insertion doubles a word's length, and three
  of them must fit the context."""
  return tasks_lib.word_list(texts, n, min_len=5, max_len=6)
