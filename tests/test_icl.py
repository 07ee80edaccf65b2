"""The in-context learning experiment's pieces: task formats fit K = 16 in 128 bytes, the probe's rows repeat a
segment, the shuffled control and ceiling, the exact-match scorer equals greedy decoding, the figure's axes."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import model as gm
from gpt_jax.config import ConfigError
from experiments.few_shot import icl_data
from experiments.few_shot import icl_eval
from experiments.few_shot import icl_train


@pytest.mark.parametrize('name', list(icl_data.TASKS))
def test_sixteen_demonstrations_fit_the_context_and_queries_are_reproducible(name):
  task = icl_data.TASKS[name]
  items = icl_eval.episodes(task, 16, seed=0, n=50, shuffled=False)
  assert max(len((p + a).encode()) for p, a, _, _ in items) <= 128
  assert items == icl_eval.episodes(task, 16, seed=0, n=50, shuffled=False)
  assert items != icl_eval.episodes(task, 16, seed=1, n=50, shuffled=False)
  assert icl_eval.episodes(task, 0, seed=0, n=5, shuffled=False)[0][3] is False  # nothing covers a 0-shot query


def test_recall_ceiling_and_shuffled_control():
  task = icl_data.TASKS['recall']
  plain = icl_eval.episodes(task, 8, seed=0, n=200, shuffled=False)
  shuffled = icl_eval.episodes(task, 8, seed=0, n=200, shuffled=True)
  for (p, a, _, covered), (ps, a_s, _, covered_s) in zip(plain, shuffled):
    assert p.startswith('R ') and ps.startswith('R ')
    p, ps = p[2:], ps[2:]
    demos, query = p.split(' ')[:-1], p.split(' ')[-1]
    assert covered == any(d[0] == query for d in demos) == covered_s and a == a_s
    table = {d[0]: d[1] for d in demos}
    assert table.get(query, a) == a  # plain demonstrations follow the query's map
    assert sorted(d[1] for d in ps.split(' ')[:-1]) == sorted(d[1] for d in demos)  # same outputs, permuted
  assert 0.5 < np.mean([c for *_, c in plain]) < 0.8  # 1 - (7/8)^8 = 0.66


def test_pairs_keys_share_letters_so_only_both_letters_name_the_value():
  ambiguous = []
  for prompt, answer, _, covered in icl_eval.episodes(icl_data.TASKS['pairs'], 16, seed=0, n=100, shuffled=False):
    demos, query = prompt[2:].split(' ')[:-1], prompt[2:].split(' ')[-1]
    assert all(len(d) == 3 and d[2].isdigit() for d in demos) and len(query) == 2 and answer.isdigit()
    assert len(set(''.join(d[:2] for d in demos) + query)) <= 4  # keys over 4 letters
    table = {d[:2]: d[2] for d in demos}
    assert covered == (query in table) and table.get(query, answer) == answer
    ambiguous.append(any(key[1] == query[1] and key != query for key in table))
  assert np.mean(ambiguous) > 0.5  # most queries' last letter also ends another demonstrated key


def test_cipher_writes_each_substitute_after_its_letter_and_scores_only_the_substitutes():
  for prompt, answer, scored, covered in icl_eval.episodes(icl_data.TASKS['cipher'], 8, seed=0, n=100, shuffled=False):
    demos = prompt[2:].split(' ')[:-1]
    table = {d[i]: d[i + 1] for d in demos for i in (0, 2, 4)}
    word = prompt[-1] + answer[1::2]
    assert len(demos) == 8 and scored == (True, False, True, False, True) and len(answer) == 5
    assert covered == (set(word) <= set(table))
    assert all(table.get(c, y) == y for c, y in zip(word, answer[0::2]))  # the query follows the demonstrated map


def test_probe_rows_repeat_a_segment_where_the_mask_says():
  tokens, mask = icl_data.probe_batch(np.random.default_rng(0), 16, 65, 32)
  for row, m in zip(tokens, mask):
    n = int(m.sum()) + 1
    assert 10 <= n < 32 and m[-(n - 1):].all()
    np.testing.assert_array_equal(row[-n:], row[-2 * n:-n])
  assert tokens.min() >= icl_data.ALPHABET_LOW and tokens.max() < icl_data.ALPHABET_LOW + icl_data.ALPHABET_SIZE


def test_exact_match_scorer_equals_greedy_decoding():
  config = icl_train.run_config(1, 16, 128, 'rope')
  module = gm.GPTLM(config.model)
  params = gm.init_params(module, jax.random.key(0))
  items = icl_eval.episodes(icl_data.TASKS['cipher'], 4, seed=0, n=4, shuffled=False)
  greedy = []
  for prompt, answer, _, _ in items:  # each substitute decoded greedily after its given letter, one forward each
    out = list(prompt.encode())
    for letter in answer[1::2] + ' ':
      out += [int(jnp.argmax(module.apply({'params': params}, jnp.asarray([out]))[0, -1])), ord(letter)]
    greedy.append(bytes(out[len(prompt):-1]).decode('latin-1'))
  prompts, scored = [i[0] for i in items], [i[2] for i in items]
  score = icl_eval.make_scorer(module, 128)
  assert score(params, prompts, greedy, scored).all()
  wrong_letter = [g[:2] + chr((ord(g[2]) + 1) % 128) + g[3:] for g in greedy]
  assert not score(params, prompts, wrong_letter, scored).any()
  assert not score(params, prompts, greedy).any()  # scored everywhere, the given letters are not its predictions


def test_figure_reads_the_csv_with_integer_k_ticks(tmp_path):
  from experiments.few_shot import icl_plot
  path = tmp_path / 'icl.csv'
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, ['model', 'n_layers', 'params_non_embedding', 'task', 'k', 'control', 'accuracy',
                                'ceiling', 'chance'])
    writer.writeheader()
    for model, layers in (('l1-d16', 1), ('l2-d16', 2)):
      for task in ('recall', 'add'):
        for k in (0, 1, 2, 4, 8, 16):
          for control in ('none', 'shuffled'):
            writer.writerow(dict(model=model, n_layers=layers, params_non_embedding=1000 * layers, task=task, k=k,
                                 control=control, accuracy=k / 16, ceiling=1 - 0.5**k, chance=0.1))
  png = icl_plot.draw(icl_plot.read_rows(str(path)), str(tmp_path / 'x.png'))
  assert (tmp_path / 'x.png').stat().st_size > 1000 and png.endswith('x.png')


def test_criteria_read_the_mean_over_tasks_per_model():
  from experiments.few_shot import icl_summary
  rows = []
  for model, layers, params, slope in (('l1-d64', 1, 50, 0.004), ('l2-d32', 2, 25, 0.03), ('l2-d64', 2, 100, 0.04),
                                       ('l3-d64', 3, 150, 0.05)):
    for task, offset in (('recall', 0.1), ('add', 0.0)):
      for k in (0, 8):
        for control in ('none', 'shuffled'):
          accuracy = offset + (slope * k if control == 'none' else 0.01 * k)
          rows.append(dict(model=model, n_layers=layers, params_non_embedding=params, task=task, k=k,
                           control=control, accuracy=accuracy))
  table = icl_summary.models_table(rows)
  assert [m['model'] for m in table] == ['l1-d64', 'l2-d32', 'l2-d64', 'l3-d64']  # the control first
  assert table[-1]['gain'] == pytest.approx(0.4) and table[-1]['above_shuffled'] == pytest.approx(0.32)
  c = icl_summary.criteria(table)
  assert c['largest_gains_at_least_0.25']['model'] == 'l3-d64' and all(v['met'] for v in c.values())
  assert c['gains_grow_with_size']['spearman'] == pytest.approx(1.0)
  shrinking = [dict(r, accuracy=r['accuracy'] * (1.5 if r['model'] == 'l2-d32' and r['k'] else 1)) for r in rows]
  assert not icl_summary.criteria(icl_summary.models_table(shrinking))['gains_grow_with_size']['met']


def test_a_csv_that_is_not_the_experiments_is_refused_in_one_sentence(tmp_path):
  from experiments.few_shot import icl_plot
  from gpt_jax.config import ConfigError
  for name, text, message in (('empty.csv', 'model,k\n', 'has no rows'), ('other.csv', 'a,b\n1,2\n', 'no column'),
                              ('text.csv', ','.join(icl_plot.COLUMNS) + '\n' + 'x,' * 8 + 'x\n', 'not a number')):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
      icl_plot.read_rows(str(tmp_path / name))


@pytest.mark.parametrize('flag, message', [
    ('--models=l2-d64,l2-x',
     "error: --models entry 'l2-x' must read l<layers>-d<width> with the width a multiple of 16, e.g. l2-d64."),
    ('--k=1,2,4', 'error: --k=1,2,4 must include 0 and 8: the criteria compare K = 8 with K = 0.'),
    ('--tasks=recall,sums', 'error: --tasks=recall,sums must name distinct task families of recall, cipher, add, '
     'pairs (unknown: sums).')])
def test_bad_flags_are_refused_in_one_sentence_before_any_work(tmp_path, flag, message):
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-m', 'experiments.few_shot.icl_run', flag,
                           f'--output={tmp_path / "icl.csv"}', f'--models_dir={tmp_path / "models"}'],
                          capture_output=True, text=True, timeout=300, cwd=repo)
  assert result.returncode == 2 and result.stderr.strip() == message
  assert os.listdir(tmp_path) == []


def test_induction_rows_repeat_one_period_and_task_rows_open_with_their_tag():
  rng = np.random.default_rng(0)
  for _ in range(20):
    row = np.frombuffer(icl_data.induction_row(rng, 129, 24), np.uint8)
    period = next(p for p in range(8, 24) if np.array_equal(row[p:], row[:-p]))
    assert len(set(row[:period])) > 1 and row.min() >= icl_data.ALPHABET_LOW
  for task in icl_data.TASKS.values():
    row = icl_data.task_row(task, rng, 129).decode()
    assert len(row) == 129 and row.startswith(task.tag) and row[len(task.tag):].count(' ') >= 16


def test_curriculum_draws_induction_rows_until_the_warmup_ends_then_the_mixture():
  texts = [' '.join(str(i * i) for i in range(100)), ' '.join(str(i) for i in range(200))]
  rows = icl_data.curriculum(texts, 65, warmup_rows=64, corpus_fraction=0.25, induction_fraction=0.25)
  def kinds(position):
    out = []
    for row in rows(np.random.default_rng(position), 32, position):
      text = bytes(row.astype(np.uint8))
      periodic = any(np.array_equal(row[p:], row[:-p]) for p in range(8, 24))
      out.append('induction' if periodic else 'task' if text[:2] in {t.tag.encode() for t in icl_data.TASKS.values()}
                 else 'corpus' if set(text) <= set(b''.join(t.encode() for t in texts)) else 'other')
    return out
  assert set(kinds(0)) == set(kinds(32)) == {'induction'}
  after = kinds(64)
  assert set(after) == {'task', 'corpus', 'induction'} and after.count('task') >= 8
  only_pairs = icl_data.curriculum(texts, 65, warmup_rows=0, corpus_fraction=0.0, induction_fraction=0.0,
                                   tasks=('pairs',))
  assert {bytes(row[:2].astype(np.uint8)) for row in only_pairs(np.random.default_rng(0), 16, 0)} == {b'P '}


def test_generated_rows_tell_make_rows_their_position_and_resume_it():
  seen = []
  def make_rows(rng, n, position):
    seen.append(position)
    return np.full((n, 5), position % 7, np.int32)
  stream = icl_train.GeneratedRows(make_rows, seed=0, identity={'rows': 'test'})
  stream.next_batch(4), stream.next_batch(4)
  state = stream.state()
  resumed = icl_train.GeneratedRows(make_rows, seed=0, identity={'rows': 'test'})
  resumed.restore(state)
  np.testing.assert_array_equal(resumed.next_batch(4)['inputs'], stream.next_batch(4)['inputs'])
  assert seen == [0, 4, 8, 8]
  # icl_run's --tasks: a state saved without the key (the default set) resumes as the default set, and only as it.
  icl_train.GeneratedRows(make_rows, seed=0, identity={'rows': 'test', 'tasks': None}).restore(state)
  with pytest.raises(ConfigError, match="saved with tasks=None but this run has tasks='recall,pairs'"):
    icl_train.GeneratedRows(make_rows, seed=0, identity={'rows': 'test', 'tasks': 'recall,pairs'}).restore(state)
