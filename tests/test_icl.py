"""The in-context learning experiment's pieces: task formats fit K = 16 in 128 bytes, the probe's rows repeat a
segment, the shuffled control and ceiling, the exact-match scorer equals greedy decoding, the figure's axes."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import model as gm
from experiments.few_shot import icl_data
from experiments.few_shot import icl_eval
from experiments.few_shot import icl_train


@pytest.mark.parametrize('name', list(icl_data.TASKS))
def test_sixteen_demonstrations_fit_the_context_and_queries_are_reproducible(name):
  task = icl_data.TASKS[name]
  items = icl_eval.episodes(task, 16, seed=0, n=50, shuffled=False)
  assert max(len((p + a).encode()) for p, a, _ in items) <= 128
  assert items == icl_eval.episodes(task, 16, seed=0, n=50, shuffled=False)
  assert items != icl_eval.episodes(task, 16, seed=1, n=50, shuffled=False)
  assert icl_eval.episodes(task, 0, seed=0, n=5, shuffled=False)[0][2] is False  # nothing covers a 0-shot query


def test_recall_ceiling_and_shuffled_control():
  task = icl_data.TASKS['recall']
  plain = icl_eval.episodes(task, 8, seed=0, n=200, shuffled=False)
  shuffled = icl_eval.episodes(task, 8, seed=0, n=200, shuffled=True)
  for (p, a, covered), (ps, a_s, covered_s) in zip(plain, shuffled):
    assert p.startswith('R ') and ps.startswith('R ')
    p, ps = p[2:], ps[2:]
    demos, query = p.split(' ')[:-1], p.split(' ')[-1]
    assert covered == any(d[0] == query for d in demos) == covered_s and a == a_s
    table = {d[0]: d[1] for d in demos}
    assert table.get(query, a) == a  # plain demonstrations follow the query's map
    assert sorted(d[1] for d in ps.split(' ')[:-1]) == sorted(d[1] for d in demos)  # same outputs, permuted
  assert 0.5 < np.mean([c for _, _, c in plain]) < 0.8  # 1 - (7/8)^8 = 0.66


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
  prompts = [p for p, _, _ in icl_eval.episodes(icl_data.TASKS['cipher'], 4, seed=0, n=4, shuffled=False)]
  greedy = []
  for p in prompts:  # two greedy bytes, one full forward each
    out = list(p.encode())
    for _ in range(2):
      out.append(int(jnp.argmax(module.apply({'params': params}, jnp.asarray([out]))[0, -1])))
    greedy.append(bytes(out[-2:]).decode('latin-1'))
  score = icl_eval.make_scorer(module, 128)
  assert score(params, prompts, greedy).all()
  wrong = [g[0] + chr((ord(g[1]) + 1) % 128) for g in greedy]
  assert not score(params, prompts, wrong).any()


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


def test_bad_model_spec_is_refused_in_one_sentence_before_any_work(tmp_path):
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-m', 'experiments.few_shot.icl_run', '--models=l2-d64,l2-x',
                           f'--output={tmp_path / "icl.csv"}', f'--models_dir={tmp_path / "models"}'],
                          capture_output=True, text=True, timeout=300, cwd=repo)
  assert result.returncode == 2 and result.stderr.strip() == (
      "error: --models entry 'l2-x' must read l<layers>-d<width> with the width a multiple of 16, e.g. l2-d64.")
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
