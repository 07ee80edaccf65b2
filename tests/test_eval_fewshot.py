"""Tests of gpt_jax.eval.fewshot and metrics: K-shot contexts equal to expected strings, demonstration draws,
batched scoring against log-probs computed by hand for a tiny model, every request type's metrics, truncation,
and the command line end to end."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gpt_jax import sample
from gpt_jax.data import tokenizer as tok_lib
from gpt_jax.eval import fewshot, metrics, tasks
from gpt_jax.eval.tasks import Task, TaskSpec
from tests.helpers import tiny_lm
from tests.xla_env import env

CONTEXT = 64
TOK = tok_lib.ByteTokenizer()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def lm():
  config, module, params, full = tiny_lm(CONTEXT, seed=1)
  scorer = fewshot.Scorer(module, params, CONTEXT, batch_tokens=256)
  sampler = sample.Sampler(module, config.model, params, eot_id=TOK.eot_id, pad_id=TOK.pad_id, batch_size=4)
  return params, full, scorer, sampler


def hand_logprobs(lm, tokens):
  """[len(tokens) - 1, V] float64 log-probs of each next token, from one unbatched, uncached forward pass."""
  params, full = lm[0], lm[1]
  assert len(tokens) <= CONTEXT + 1
  padded = np.zeros((1, CONTEXT), np.int32)
  padded[0, :len(tokens) - 1] = tokens[:-1]
  return np.asarray(full(params, padded), np.float64)[0, :len(tokens) - 1]


def hand_score(lm, context_ids, continuation_ids):
  """Summed log-prob of the continuation and whether it is the greedy one, cut to the context as documented."""
  tokens = (list(context_ids) + list(continuation_ids))[-(CONTEXT + 1):]
  lp = hand_logprobs(lm, tokens)
  n = len(continuation_ids)
  rows = np.arange(len(tokens) - 1 - n, len(tokens) - 1)
  targets = np.array(tokens[-n:])
  return lp[rows, targets].sum(), bool(np.all(lp[rows].argmax(-1) == targets))


def greedy_text(lm, prompt_ids, n):
  tokens = list(prompt_ids)
  for _ in range(n):
    tokens.append(int(hand_logprobs(lm, tokens + [0])[-1].argmax()))
  return tokens[len(prompt_ids):]


# ---------------------------------------------------------------------------------------------------------------
# Prompts.

def test_context_follows_the_lm_eval_layout():
  spec = TaskSpec(task='t', output_type='loglikelihood', test_file='x', description='Add the numbers.\n\n')
  shots = [{'context': 'Q: 1+1', 'completion': '2'}, {'context': 'Q: 2+5', 'completion': '7'}]
  doc = {'context': 'Q: 3+4', 'completion': '7'}
  assert fewshot.build_context(spec, shots, doc) == 'Add the numbers.\n\nQ: 1+1 2\n\nQ: 2+5 7\n\nQ: 3+4'
  assert fewshot.build_context(spec, [], doc) == 'Add the numbers.\n\nQ: 3+4'


def test_gpt3_released_formats_concatenate_into_the_paper_prompts():
  spec = TaskSpec(task='arithmetic_2da', output_type='loglikelihood', test_file='x', target_delimiter='',
                  fewshot_delimiter='')
  shots = [tasks._qa('98 plus 45', 143), tasks._qa('0 plus 25', 25)]
  assert fewshot.build_context(spec, shots, tasks._qa('72 plus 25', 97)) == (
      '\n\nQ: What is 98 plus 45?\n\nA: 143\n\nQ: What is 0 plus 25?\n\nA: 25\n\nQ: What is 72 plus 25?\n\nA:')
  spec = TaskSpec(task='cycle_letters', output_type='generate_until', test_file='x', target_delimiter='',
                  fewshot_delimiter='', description=tasks.SCRAMBLE_DESCRIPTION)
  shots = [{'context': '\nasinoc =', 'completion': ' casino'}, {'context': '\nyfrogg =', 'completion': ' froggy'}]
  assert fewshot.build_context(spec, shots, {'context': '\nastedro =', 'completion': ' roasted'}) == (
      'Please unscramble the letters into a word, and write that word:\nasinoc = casino\nyfrogg = froggy\nastedro =')


def test_multiple_choice_demonstrations_show_the_gold_choice():
  spec = TaskSpec(task='mc', output_type='multiple_choice', test_file='x', fewshot_delimiter='\n')
  shots = [{'query': 'Sky color?', 'choices': ['green', 'blue'], 'gold': 1}]
  assert fewshot.build_context(spec, shots, {'query': 'Grass color?', 'choices': ['green'], 'gold': 0}) == (
      'Sky color? blue\nGrass color?')


def _arith_task(n_test=30, n_train=40):
  spec = TaskSpec(task='a', output_type='loglikelihood', test_file='x', target_delimiter='', fewshot_delimiter='')
  return Task(spec, tasks.arithmetic_examples('2D+', n_test, 0, 'test'),
              tasks.arithmetic_examples('2D+', n_train, 0, 'train'))


def test_demonstrations_are_seeded_distinct_and_never_the_evaluated_item():
  task = _arith_task()
  shots = [fewshot.fewshot_examples(task, i, 5) for i in range(len(task.test_docs))]
  assert shots == [fewshot.fewshot_examples(task, i, 5) for i in range(len(task.test_docs))]
  assert shots != [fewshot.fewshot_examples(task, i, 5, seed=99) for i in range(len(task.test_docs))]
  for i, s in enumerate(shots):
    assert len(s) == 5 and all(d in task.train_docs for d in s)
    assert len({d['context'] for d in s}) == 5 and task.test_docs[i] not in s
  # Without a training split, demonstrations come from the other test items.
  same = Task(task.spec, task.test_docs, None)
  for i in range(len(same.test_docs)):
    s = fewshot.fewshot_examples(same, i, len(same.test_docs) - 1)
    assert task.test_docs[i] not in s and len(s) == len(same.test_docs) - 1
  with pytest.raises(tasks.TaskError, match='only'):
    fewshot.fewshot_examples(same, 0, len(same.test_docs))
  # A training document with the evaluated text is never shown.
  copy = Task(task.spec, task.test_docs[:1], task.test_docs[:1] + task.train_docs[:3])
  assert task.test_docs[0] not in fewshot.fewshot_examples(copy, 0, 3)


def test_encode_pair_and_left_truncation():
  assert fewshot.encode_pair(TOK, 'Q: hi \n', 'yes', TOK.eot_id) == (list(b'Q: hi'), list(b' \nyes'))
  assert fewshot.encode_pair(TOK, '', 'abc', TOK.eot_id) == ([TOK.eot_id], list(b'abc'))
  assert fewshot.fit_request([1, 2, 3], [4, 5], 10) == ([1, 2, 3, 4, 5], 2, False)
  assert fewshot.fit_request([1, 2, 3], [4, 5], 3) == ([2, 3, 4, 5], 2, True)


def test_rolling_windows_score_every_token_once():
  tokens = list(range(1, 151))
  windows = fewshot.rolling_windows(tokens, 64, prefix_id=0)
  scored = [t for seq, n in windows for t in seq[-n:]]
  assert scored == tokens
  assert all(len(seq) <= 65 for seq, _ in windows) and windows[0][0][0] == 0
  assert [n for _, n in windows] == [64, 64, 22] and len(windows[2][0]) == 65


# ---------------------------------------------------------------------------------------------------------------
# Scoring against log-probs computed by hand.

def test_scorer_matches_hand_computed_logprobs(lm):
  rng = np.random.default_rng(0)
  requests = [(list(rng.integers(0, 256, n)), k) for n, k in [(2, 1), (5, 3), (17, 4), (40, 40 - 1), (65, 10),
                                                            (33, 1), (9, 2)]]
  prompt = [72, 101, 121]
  greedy = greedy_text(lm, prompt, 4)
  requests.append((prompt + greedy, 4))
  logliks, is_greedy = lm[2].score(requests)
  for (tokens, n), ll, g in zip(requests, logliks, is_greedy):
    want_ll, want_g = hand_score(lm, tokens[:-n], tokens[-n:])
    assert ll == pytest.approx(want_ll, abs=1e-3) and g == want_g
  assert is_greedy[-1] and not is_greedy[:3].any()


def test_loglikelihood_task(lm):
  # A question whose greedy 2-byte answer is ASCII, so it survives decoding into the task file's text.
  prompt, greedy = next((p, g) for p in (f'\n\nQ: What is {i} plus 1?\n\nA:' for i in range(100))
                        for g in [greedy_text(lm, TOK.encode(p), 2)] if max(g) < 128)
  greedy = TOK.decode(greedy)
  docs = [{'context': prompt, 'completion': greedy}, {'context': '\n\nQ: What is 3 plus 4?\n\nA:', 'completion': ' 7'},
          {'context': '', 'completion': 'hello'}]
  task = Task(TaskSpec(task='ll', output_type='loglikelihood', test_file='x', target_delimiter=''), docs, None)
  report = fewshot.evaluate(task, 0, scorer=lm[2], sampler=None, tokenizer=TOK)
  hand = [hand_score(lm, *fewshot.encode_pair(TOK, d['context'], d['completion'], TOK.eot_id)) for d in docs]
  assert report['metrics']['loglik']['value'] == pytest.approx(np.mean([h[0] for h in hand]), abs=1e-3)
  assert report['metrics']['acc']['value'] == pytest.approx(np.mean([h[1] for h in hand]))
  assert hand[0][1] and report['n'] == 3 and report['truncated'] == 0 and report['num_fewshot'] == 0


def test_multiple_choice_task(lm):
  docs = [{'query': 'The sky is', 'choices': ['blue', 'a very long green answer', 'x'], 'gold': 0},
          {'query': 'One plus one is', 'choices': ['two', 'three', 'eleven'], 'gold': 2},
          {'query': 'Pick', 'choices': ['a', 'bb'], 'gold': 1}]
  task = Task(TaskSpec(task='mc', output_type='multiple_choice', test_file='x'), docs, None)
  report = fewshot.evaluate(task, 0, scorer=lm[2], sampler=None, tokenizer=TOK)
  acc, acc_norm = [], []
  for d in docs:
    ll = np.array([hand_score(lm, *fewshot.encode_pair(TOK, d['query'], ' ' + c, TOK.eot_id))[0]
                   for c in d['choices']])
    acc.append(np.argmax(ll) == d['gold'])
    acc_norm.append(np.argmax(ll / [len(c) for c in d['choices']]) == d['gold'])
  assert report['metrics']['acc']['value'] == pytest.approx(np.mean(acc))
  assert report['metrics']['acc_norm']['value'] == pytest.approx(np.mean(acc_norm))


def test_rolling_loglikelihood_task(lm):
  docs = [{'text': 'A short document.'}, {'text': 'A longer document that does not fit the context. ' * 3}]
  task = Task(TaskSpec(task='ppl', output_type='loglikelihood_rolling', test_file='x'), docs, None)
  report = fewshot.evaluate(task, 0, scorer=lm[2], sampler=None, tokenizer=TOK)
  total = 0.0
  for d in docs:
    full = [TOK.eot_id] + TOK.encode(d['text'])
    n = len(full) - 1
    for j in range(1, n + 1):  # token j is scored in window (j - 1) // CONTEXT with context up to CONTEXT tokens
      end = min(((j - 1) // CONTEXT + 1) * CONTEXT, n)
      start = max(0, end - CONTEXT)
      total += hand_logprobs(lm, full[start:j + 1])[-1, full[j]]
  n_bytes = sum(len(d['text'].encode()) for d in docs)
  n_words = sum(len(d['text'].split(' ')) for d in docs)
  assert report['metrics']['bits_per_byte']['value'] == pytest.approx(-total / n_bytes / math.log(2), rel=1e-4)
  assert report['metrics']['byte_perplexity']['value'] == pytest.approx(math.exp(-total / n_bytes), rel=1e-4)
  assert report['metrics']['word_perplexity']['value'] == pytest.approx(math.exp(-total / n_words), rel=1e-3)
  with pytest.raises(tasks.TaskError, match='K=0'):
    fewshot.evaluate(task, 1, scorer=lm[2], sampler=None, tokenizer=TOK)


def test_generate_until_task(lm):
  answer = TOK.decode(greedy_text(lm, TOK.encode('Unscramble:\nasinoc ='), 8)).split('\n')[0]
  docs = [{'context': '\nasinoc =', 'completion': answer}, {'context': '\nyfrogg =', 'completion': ' froggy'}]
  spec = TaskSpec(task='cl', output_type='generate_until', test_file='x', description='Unscramble:',
                  target_delimiter='', fewshot_delimiter='', until=('\n',), max_gen_toks=8,
                  metric_list=('exact_match', 'f1'))
  report = fewshot.evaluate(Task(spec, docs, None), 0, scorer=lm[2], sampler=lm[3], tokenizer=TOK)
  second = TOK.decode(greedy_text(lm, TOK.encode('Unscramble:\nyfrogg ='), 8)).split('\n')[0]
  want = [1.0, metrics.exact_match(second, ' froggy')]
  assert report['metrics']['exact_match']['value'] == pytest.approx(np.mean(want))
  assert report['metrics']['f1']['value'] == pytest.approx(np.mean([1.0, metrics.f1(second, ' froggy')]))


def test_prompts_longer_than_the_context_are_cut_from_the_left_and_counted(lm):
  task = _arith_task(n_test=4)
  report = fewshot.evaluate(task, 3, scorer=lm[2], sampler=None, tokenizer=TOK)  # ~100 bytes > 64
  assert report['truncated'] == 4 and report['num_fewshot'] == 3
  hand = []
  for i, d in enumerate(task.test_docs):
    context = fewshot.build_context(task.spec, fewshot.fewshot_examples(task, i, 3), d)
    hand.append(hand_score(lm, *fewshot.encode_pair(TOK, context, d['completion'], TOK.eot_id))[0])
  assert report['metrics']['loglik']['value'] == pytest.approx(np.mean(hand), abs=1e-3)
  assert fewshot.evaluate(task, 0, scorer=lm[2], sampler=None, tokenizer=TOK)['truncated'] == 0


# ---------------------------------------------------------------------------------------------------------------
# Metrics.

def test_metrics_against_hand_values():
  assert metrics.mean_stderr([1, 0, 1, 1]) == pytest.approx((0.75, 0.5 / 2))
  assert metrics.exact_match(' casino\n', 'casino') == 1.0 and metrics.exact_match('casino', 'Casino') == 0.0
  assert metrics.f1('The cat sat', 'a cat sat down') == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
  assert metrics.f1('', '') == 1.0 and metrics.f1('dog', 'cat') == 0.0
  bleu = metrics.generation_metrics(['bleu', 'rouge_l'], ['the cat sat on the mat'] * 3, ['the cat sat on the mat'] * 3)
  assert bleu['bleu']['value'] == pytest.approx(100.0) and bleu['rouge_l']['value'] == pytest.approx(100.0)
  # ROUGE-L of 'the cat sat' vs 'the cat on the mat': LCS 2 -> P 2/3, R 2/5.
  assert metrics.rouge_l(['the cat sat'], ['the cat on the mat'])[0] == pytest.approx(100 * 2 * (2 / 3) * (2 / 5)
                                                                                      / (2 / 3 + 2 / 5))
  mc = metrics.multiple_choice_metrics(['acc', 'acc_norm'], [np.array([-4.0, -6.0])], [1], [np.array([2.0, 6.0])])
  assert mc['acc']['value'] == 0.0 and mc['acc_norm']['value'] == 1.0
  ppl = metrics.rolling_metrics(['bits_per_byte', 'word_perplexity'], np.array([-10.0, -20.0]), np.array([2, 3]),
                                np.array([10, 20]))
  assert ppl['bits_per_byte']['value'] == pytest.approx(1.0 / math.log(2))
  assert ppl['word_perplexity']['value'] == pytest.approx(math.exp(30 / 5)) and ppl['bits_per_byte']['stderr'] >= 0


# ---------------------------------------------------------------------------------------------------------------
# The command line.

def test_command_line_writes_tasks_reports_and_a_summary(tmp_path):
  corpus = tmp_path / 'corpus.txt'
  corpus.write_text('casino froggy simple biggest roasted inevitably objects reciprocal opponent ' * 3)
  out = tmp_path / 'reports'
  task_dir = tmp_path / 'gpt3'
  result = subprocess.run(
      [sys.executable, '-m', 'gpt_jax.eval', '--config=configs/tiny.py:nano', '--init=random',
       f'--make_gpt3_tasks={task_dir}', f'--words_from={corpus}', '--limit=4', '--num_fewshot=0,1',
       f'--tasks={task_dir}/arithmetic_2da,{task_dir}/reversed_words', f'--output_dir={out}'],
      cwd=REPO, env=env(8), capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(os.listdir(task_dir)) == 15
  assert sorted(os.listdir(out)) == ['arithmetic_2da.0shot.json', 'arithmetic_2da.1shot.json',
                                     'reversed_words.0shot.json', 'reversed_words.1shot.json']
  report = json.loads((out / 'reversed_words.1shot.json').read_text())
  assert report['n'] == 4 and report['num_fewshot'] == 1 and report['checkpoint_step'] is None
  assert set(report['metrics']) == {'exact_match'} and report['config']['model']['n_layers'] == 2
  assert 0 <= report['metrics']['exact_match']['value'] <= 1
  assert 'arithmetic_2da' in result.stdout and 'exact_match' in result.stdout


def test_negative_k_and_bad_flags_are_refused(tmp_path):
  task = Task(TaskSpec(task='t', output_type='loglikelihood', test_file='t.jsonl'), [{'context': f'q{i}', 'completion': ' a'}
                                                                for i in range(10)], None)
  with pytest.raises(tasks.TaskError, match='K=-1'):
    fewshot.fewshot_examples(task, 0, -1)
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.eval', '--config=configs/tiny.py:nano', '--init=random',
                           f'--tasks={tmp_path}/missing'], capture_output=True, text=True, timeout=120, cwd=REPO)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')


def test_every_task_and_k_is_checked_before_any_runs():
  rolling = Task(TaskSpec(task='wiki', output_type='loglikelihood_rolling', test_file='t.jsonl'),
                 [{'text': 'a b c'}] * 3, None)
  fewshot.check_request(rolling, 0)
  with pytest.raises(tasks.TaskError, match='use K=0, not 2'):
    fewshot.check_request(rolling, 2)
  small = Task(TaskSpec(task='t', output_type='loglikelihood', test_file='t.jsonl'),
               [{'context': f'q{i}', 'completion': ' a'} for i in range(4)], None)
  fewshot.check_request(small, 3)
  with pytest.raises(tasks.TaskError, match='only 3 documents'):
    fewshot.check_request(small, 4)


def test_log_samples_record_each_item_as_scored(lm):
  docs = [{'query': 'The sky is', 'choices': ['blue', 'green'], 'gold': 0},
          {'query': 'Pick', 'choices': ['a', 'bb', 'c'], 'gold': 2}]
  task = Task(TaskSpec(task='mc', output_type='multiple_choice', test_file='x'), docs, None)
  report = fewshot.evaluate(task, 0, scorer=lm[2], sampler=None, tokenizer=TOK, log_samples=True)
  samples = report['samples']
  assert [s['index'] for s in samples] == [0, 1] and samples[1]['prompt'] == 'Pick' and samples[1]['target'] == 'c'
  assert np.mean([s['prediction'] == s['gold'] for s in samples]) == report['metrics']['acc']['value']
  for s, d in zip(samples, docs):
    want = [hand_score(lm, *fewshot.encode_pair(TOK, d['query'], ' ' + c, TOK.eot_id))[0] for c in d['choices']]
    np.testing.assert_allclose(s['loglikelihoods'], want, rtol=1e-4)
  spec = TaskSpec(task='cl', output_type='generate_until', test_file='x', target_delimiter='', fewshot_delimiter='',
                  until=('\n',), max_gen_toks=8, metric_list=('exact_match',))
  gen = fewshot.evaluate(Task(spec, [{'context': 'ab =', 'completion': ' ba'}], None), 0, scorer=lm[2],
                         sampler=lm[3], tokenizer=TOK, log_samples=True)
  assert gen['samples'][0]['generation'] == TOK.decode(greedy_text(lm, TOK.encode('ab ='), 8)).split('\n')[0]
  assert 'samples' not in fewshot.evaluate(task, 0, scorer=lm[2], sampler=None, tokenizer=TOK)
