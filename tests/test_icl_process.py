"""The in-context learning experiment's training on the shared loop, as real processes: the induction probe run on
2 processes x 4 CPU devices, stopped halfway and continued with more steps, equals one uninterrupted process of 8
devices (its training losses, its held-out probe losses and its final params)."""

import json
import os
import sys

import jax
import numpy as np

from tests import xla_env
from tests.helpers import finish, load_lm, run_on_two_processes, start_beside

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = [sys.executable, '-m', 'experiments.few_shot.icl_probe', '--n_layers=2', '--d_model=16', '--segment=6',
         '--batch=8', '--eval_every=2', '--lr=1e-2']


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  keys = ('train/loss', 'probe/second_copy', 'probe/elsewhere')
  return {(r['step'], k): r[k] for r in records for k in keys if k in r}


def test_probe_on_two_processes_stopped_and_continued_equals_one_uninterrupted_process(tmp_path):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  reference = start_beside([*PROBE, f'--workdir={one}', '--steps=6'], xla_env.env(8), REPO, str(tmp_path / 'one.log'))
  try:
    run_on_two_processes([*PROBE, f'--workdir={two}', '--steps=3'], cwd=REPO)
  finally:
    finish(reference, str(tmp_path / 'one.log'))
  out = run_on_two_processes([*PROBE, f'--workdir={two}', '--steps=6'], cwd=REPO)
  assert 'second_copy=' in out[0]
  expected, got = _records(one), _records(two)
  assert {s for s, _ in expected} == {2, 4, 6} and set(expected) <= set(got)  # the stopped run also logged step 3
  np.testing.assert_allclose([got[k] for k in sorted(expected)], [expected[k] for k in sorted(expected)], rtol=0,
                             atol=2e-5)
  (_, params_one, step_one), (_, params_two, step_two) = load_lm(one), load_lm(two)
  assert step_one == step_two == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=2e-5),
               params_one, params_two)
