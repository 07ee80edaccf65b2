"""The toy task's graded judge (gold) and its held-out validation/test split."""

import collections
import math
import random

import pytest

from gpt_jax.rlhf import toy

SUM = 'Q: What is 23 plus 19?\nA:'  # 42


def test_gold_of_numbers():
  assert toy.gold(SUM, ' 42') == 1.0
  assert toy.gold(SUM, ' 42\nQ: What is 1 plus 1?') == 1.0  # the first line is the answer
  assert toy.gold(SUM, ' 45') == pytest.approx(math.exp(-3 / 5))
  assert toy.gold(SUM, ' 32') == pytest.approx(math.exp(-2))
  assert toy.gold(SUM, ' -8') == pytest.approx(math.exp(-50 / 5))
  for wrong in ('', '   ', ' forty-two', ' 4 2', ' --42', ' 4²'):
    assert toy.gold(SUM, wrong) == 0.0, wrong


def test_gold_of_words_counts_letters_in_place():
  prompt = toy.prompt_of('Unscramble rtgie')
  assert toy.answer_of(prompt) == 'tiger'
  assert toy.gold(prompt, ' tiger') == 1.0
  assert toy.gold(prompt, ' tigre') == pytest.approx(3 / 5)
  assert toy.gold(prompt, ' tige') == pytest.approx(4 / 5)  # one position missing
  assert toy.gold(prompt, ' tigers') == pytest.approx(5 / 6)  # one position too many
  assert toy.gold(prompt, ' 42') == 0.0


def test_gold_orders_responses_as_closeness_does():
  """Gold is a graded judge: exact match is gold 1, and it never ranks two responses against closeness."""
  for prompt in [x['prompt'] for x in toy.instructions(40, held_out=True)]:
    responses = [' ' + toy.answer_of(prompt)] + [' ' + r for r in toy.wrong_answers(prompt, random.Random(0))]
    for a in responses:
      assert (toy.gold(prompt, a) == 1.0) == toy.judge(prompt, a)
      for b in responses:
        if toy.closeness(prompt, a) > toy.closeness(prompt, b):
          assert toy.gold(prompt, a) >= toy.gold(prompt, b), (prompt, a, b)


def test_closeness_of_a_malformed_number_is_no_answer():
  """' --42' passed the old digit check and then failed in int(); it is no answer."""
  assert toy.closeness(SUM, ' --42') == -100.0
  assert toy.closeness(SUM, ' 4²') == -100.0


def test_held_out_split_is_disjoint_complete_and_stratified():
  validation, test = toy.held_out_split('validation'), toy.held_out_split('test')
  assert toy.held_out_split('validation') == validation  # deterministic
  v, t = {x['prompt'] for x in validation}, {x['prompt'] for x in test}
  assert not v & t and len(v) == len(validation) and len(t) == len(test)
  assert len(v | t) == toy.available(True)  # every held-out item, none of the training ones
  assert all(toy._held_out(p) for p in v | t)
  kinds_v, kinds_t = (collections.Counter(x['kind'] for x in split) for split in (validation, test))
  assert set(kinds_v) == set(toy.KINDS)
  assert all(abs(kinds_v[k] - kinds_t[k]) <= 1 for k in toy.KINDS)
  assert all(toy.judge(x['prompt'], x['completion']) for x in validation + test)
  with pytest.raises(ValueError, match='validation'):
    toy.held_out_split('train')
