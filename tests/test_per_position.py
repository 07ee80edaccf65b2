"""The per-position loss experiment: averaged over positions it is the ordinary eval loss over the whole validation
split (sharded over 8 devices against the training loop's eval step on one device); the ICL score and the power-law
fit on planted curves; the choice of run per model shape; two processes measure what one does; bad flags end in
one sentence."""

import csv
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.few_shot import per_position as pp
from gpt_jax import checkpoint as ckpt_lib
from gpt_jax import loop, losses
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.data import pipeline
from tests import xla_env
from tests.helpers import finish, run_on_two_processes, start_beside, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loss_per_position_averages_to_the_eval_loss_over_the_whole_split():
  config = tiny_config(**{'model.context': 64, 'model.vocab_size': 258, 'model.d_model': 32, 'model.n_heads': 2})
  module = gm.GPTLM(config.model)
  mesh = gs.make_mesh(config.mesh)  # 8 devices over fsdp
  params = gm.init_params(module, jax.random.key(0), shardings=gs.param_shardings(
      gm.abstract_variables(module)['params'], mesh))
  batches = list(pp.whole_split(config, 3000, gs.batch_shards(mesh)))
  available = sum(len(p) for p in pipeline.TrainStream(config, 'validation').sequences)
  assert sum(b['weights'].sum() for b in batches) == available  # every row once, the last batch padded
  assert batches[-1]['weights'].min() == 0

  curve = pp.position_losses(module, params, mesh, batches)
  assert curve.shape == (64,)

  one = gs.single_device_mesh()
  eval_step = jax.jit(loop.make_eval_step(losses.lm_loss_fn(config)))
  host_params = jax.device_get(params)
  total = weight = 0.0
  for b in batches:
    batch = dict(inputs=b['inputs'], targets=b['targets'],
                 loss_mask=np.broadcast_to(b['weights'][:, None], b['inputs'].shape))
    loss_sum, w, _ = eval_step(host_params, jax.device_put(batch, one.devices.flat[0]), {})
    total, weight = total + float(loss_sum), weight + float(w)
  np.testing.assert_allclose(curve.mean(), total / weight, rtol=1e-5)


def test_icl_score_is_late_minus_early_on_a_planted_curve():
  curve = np.full(128, 100.0)  # any position outside the two windows would show
  curve[10:21], curve[100:128] = 2.0, 1.5
  assert pp.icl_score(curve) == pytest.approx(-0.5)
  with pytest.raises(pp.ConfigError, match='context of at least 128'):
    pp.icl_score(curve[:100])


def test_power_law_fit_recovers_a_planted_law():
  t = np.arange(1, 129)
  fit = pp.fit_power_law(1.6 + 0.9 * t ** -0.7)
  assert fit['fit_l_inf'] == pytest.approx(1.6, abs=1e-4)
  assert fit['fit_a'] == pytest.approx(0.9, abs=1e-3)
  assert fit['fit_p'] == pytest.approx(0.7, abs=1e-3)
  assert fit['fit_r2'] == pytest.approx(1.0, abs=1e-9)


def _table(tmp_path, rows):
  header = 'run,state,n_layers,d_model,params_non_embedding,tokens,seed'
  path = tmp_path / 'runs.csv'
  path.write_text('\n'.join([header] + [','.join(map(str, r)) for r in rows]) + '\n')
  for r in rows:
    (tmp_path / r[0]).mkdir()
  return str(path)


def test_each_shape_chooses_its_longest_run_that_saw_enough_tokens(tmp_path):
  table = _table(tmp_path, [('a-long-s1', 'finished', 2, 16, 100, 9000, 1),
                            ('a-long-s0', 'finished', 2, 16, 100, 9000, 0),
                            ('a-short', 'finished', 2, 16, 100, 3000, 0),
                            ('a-failed', 'failed', 2, 16, 100, 99999, 0),
                            ('b-under', 'finished', 2, 32, 1000, 5000, 0)])
  runs = pp.read_runs(table, str(tmp_path), min_tokens_per_param=20)
  assert {r['run']: r['chosen'] for r in runs} == {'a-short': False, 'a-long-s0': True, 'a-long-s1': False,
                                                    'b-under': False}


@pytest.mark.parametrize('flags, named', [(['--table=/nonexistent.csv'], '--table'),
                                          (['--batch_rows=0'], '--batch_rows')])
def test_bad_flags_end_in_one_sentence_before_any_work(tmp_path, flags, named):
  out = tmp_path / 'out.csv'
  result = subprocess.run([sys.executable, '-m', 'experiments.few_shot.per_position', f'--output={out}',
                           f'--plots={tmp_path}', f'--runs_root={tmp_path}', *flags], cwd=REPO,
                          capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 2, result.stderr
  assert named in result.stderr and 'Traceback' not in result.stderr
  assert not out.exists()


def test_two_processes_measure_like_one(tmp_path):
  config = tiny_config(**{'model.context': 128, 'model.vocab_size': 258, 'model.d_model': 32, 'model.n_heads': 2})
  module = gm.GPTLM(config.model)
  ckpt_lib.export_params(str(tmp_path / 'runs' / 'r0'), gm.init_params(module, jax.random.key(1)), 7, config)
  (tmp_path / 'runs.csv').write_text(
      'run,state,n_layers,d_model,params_non_embedding,params_flops,tokens,flops_budget,seed,final_eval_loss\n'
      'r0,finished,2,32,25000,50000,1000000,1e12,0,5.5\n')
  common = [sys.executable, '-m', 'experiments.few_shot.per_position', f'--table={tmp_path}/runs.csv',
            f'--runs_root={tmp_path}/runs', '--plots=']
  env = xla_env.env(8)
  one = start_beside([*common, f'--output={tmp_path}/one.csv'], env, REPO, str(tmp_path / 'one.log'))
  try:
    run_on_two_processes([*common, f'--output={tmp_path}/two.csv'], REPO)
  finally:
    finish(one, str(tmp_path / 'one.log'))
  a, b = (list(csv.DictReader(open(tmp_path / name))) for name in ('one.csv', 'two.csv'))
  assert len(a) == len(b) == 1 and a[0]['chosen'] == 'True'
  for column in a[0]:
    if column.startswith('loss_t') or column in ('icl_score', 'mean_loss'):
      assert float(b[0][column]) == pytest.approx(float(a[0][column]), rel=1e-4), column
