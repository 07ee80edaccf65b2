"""gpt_jax.sweep.recipe and lrscan: the width rule, budgets in model FLOPs, the warmup rule, batch and beta2 per
shape, the learning-rate rule (fit, best rate of a grid, read from the scan's file) and the scan end to end as
real training processes."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax.config import ConfigError
from gpt_jax.sweep import Shape, Sweep, expand
from gpt_jax.sweep.recipe import LRRule, Recipe, WidthRule, best_rate
from tests.xla_env import env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_width_rule_keeps_heads_of_16_and_grows_depth_and_width_together():
  rule = WidthRule(aspect=24, min_head_dim=16, min_layers=2)
  shapes = [rule(w) for w in range(16, 257, 8)]
  assert [s.name for s in shapes[:3]] == ['l2-d16-h1', 'l2-d24-h1', 'l2-d32-h2']
  assert rule(80) == Shape(3, 80, 5) and rule(96) == Shape(4, 96, 6)
  for small, large in zip(shapes, shapes[1:]):
    assert small.n_layers <= large.n_layers and small.d_model < large.d_model
  assert all(s.d_model % s.n_heads == 0 and s.d_model // s.n_heads >= 16 for s in shapes)
  size = lambda s: 12 * s.n_layers * s.d_model ** 2  # noqa: E731
  assert rule.nearest(size(Shape(3, 80, 5)) * 1.05, size) == Shape(3, 80, 5)
  with pytest.raises(ConfigError, match='width 8'):
    rule(8)


def recipe_sweep(tmp_path, **changes):
  fields = dict(name='r', config='configs/tiny.py:nano', root=str(tmp_path), shapes=[Shape(2, 16, 1), Shape(2, 64, 4)],
                flops=(2e10, 2e11), budget_params='model', overrides={'model.context': 64},
                recipe=Recipe(batch_tokens=lambda s: 256 if s.d_model < 64 else 512, b2=0.99, warmup_steps=30,
                              warmup_fraction=0.05, learning_rate=LRRule(math.log(0.5), -0.5)))
  return Sweep(**(fields | changes))


def test_budgets_in_model_flops_and_the_recipe_per_shape_and_run(tmp_path):
  runs = expand(recipe_sweep(tmp_path))
  for run in runs:
    config = gcfg.load_config_file(run.config, run.overrides)
    per_token = flops.flops_per_token(config)
    batch = 256 if run.shape.d_model < 64 else 512
    assert config.train.batch_tokens == batch and config.optim.b2 == 0.99
    assert run.tokens <= run.flops_budget / per_token < run.tokens + batch  # real FLOPs, not 6 N D
    assert run.params_flops == per_token / 6 and run.params_flops > run.params_total
    assert config.optim.warmup_tokens == min(max(30 * batch, int(0.05 * run.tokens)), run.tokens // 2)
    assert config.optim.peak_lr == run.learning_rate == float(f'{0.5 / math.sqrt(run.params_flops):.3g}')
  warmups = {(r.shape.d_model, r.flops_budget): r.overrides['optim.warmup_tokens'] for r in runs}
  assert warmups[(16, 2e11)] > 30 * 256  # 5% of a long run
  assert warmups[(64, 2e10)] == runs[1].tokens // 2  # half of a run shorter than 60 steps
  assert warmups[(64, 2e11)] == 30 * 512  # 150 steps


def test_explicit_rates_win_over_the_rule_and_a_missing_rule_file_says_how_to_make_it(tmp_path):
  runs = expand(recipe_sweep(tmp_path, learning_rates=(1e-3,)))
  assert {r.learning_rate for r in runs} == {1e-3} and all('-lr0.001-' in r.name for r in runs)
  missing = recipe_sweep(tmp_path, recipe=Recipe(learning_rate=str(tmp_path / 'rule.json')))
  with pytest.raises(ConfigError, match='rule.json.*python -m gpt_jax.sweep.lrscan'):
    expand(missing)
  (tmp_path / 'rule.json').write_text(json.dumps({'rule': {'intercept': math.log(2e-3), 'slope': 0.0}}))
  assert {r.learning_rate for r in expand(missing)} == {2e-3}


def test_lr_rule_fit_and_the_best_rate_of_a_grid():
  sizes = [1e4, 3e4, 1e5, 4e5]
  rule = LRRule.fit(sizes, [0.3 * n ** -0.4 for n in sizes])
  assert rule.slope == pytest.approx(-0.4) and rule.intercept == pytest.approx(math.log(0.3))
  kept = LRRule.fit(sizes, [0.3 * n ** -0.4 for n in sizes], grid=(5e-3, 4e-3, 1e-2))
  assert kept(1e3) == 1e-2 and kept(1e7) == 4e-3 and kept(1e4) == rule(1e4)  # never beyond the scanned grid
  bowl = lambda lr: 2.0 + 0.1 * (math.log(lr) - math.log(5e-3)) ** 2  # noqa: E731
  rate, inside = best_rate({lr: bowl(lr) for lr in (2e-3, 4e-3, 8e-3)})
  assert inside and rate == pytest.approx(5e-3)
  assert best_rate({2e-3: 2.1, 4e-3: 2.2, 8e-3: float('nan')}) == (2e-3, False)


def test_bad_recipe_is_one_sentence(tmp_path):
  with pytest.raises(ConfigError, match='warmup_fraction=0.9'):
    expand(recipe_sweep(tmp_path, recipe=Recipe(warmup_fraction=0.9)))
  with pytest.raises(ConfigError, match="'model'"):
    expand(recipe_sweep(tmp_path, budget_params='real'))


SCAN_SWEEP = '''
from gpt_jax.sweep import Shape, Sweep
from gpt_jax.sweep.recipe import Recipe

def get_sweep():
  return Sweep(name='s', config='configs/tiny.py:nano', root={root!r}, shapes=[Shape(1, 16, 1), Shape(1, 32, 2)],
               flops=(3e9,), budget_params='model', seeds=(0,),
               overrides={{'model.context': 32, 'model.local_window': 32, 'train.batch_tokens': 256,
                           'train.eval_every': 0, 'train.eval_batches': 2, 'train.sample_tokens': 0,
                           'train.log_every': 5}},
               recipe=Recipe(warmup_steps=3, learning_rate={rule!r}, lr_grid=(1e-3, 1e-2), scan_fraction=0.5))
'''


def test_lrscan_runs_the_grid_fits_the_rule_and_the_sweep_then_uses_it(tmp_path):
  rule_path = tmp_path / 'rule.json'
  sweep_path = tmp_path / 'sweep.py'
  sweep_path.write_text(SCAN_SWEEP.format(root=str(tmp_path / 'runs'), rule=str(rule_path)))
  command = [sys.executable, '-m', 'gpt_jax.sweep.lrscan', f'--sweep={sweep_path}', '--parallel=2']
  done = subprocess.run(command, cwd=REPO, env=env(8), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  record = json.loads(rule_path.read_text())
  assert sorted(os.listdir(tmp_path / 'runs' / 'lrscan')) == sorted(record['runs']) and len(record['runs']) == 4
  for shape in record['shapes']:
    losses = {float(k): v for k, v in shape['losses'].items()}
    assert shape['best_lr'] == min(losses, key=losses.get)  # two points: the grid's better end
  sizes = [s['params_flops'] for s in record['shapes']]
  fitted = LRRule.fit(sizes, [s['best_lr'] for s in record['shapes']], grid=(1e-3, 1e-2))
  assert LRRule.load(str(rule_path)) == fitted
  from gpt_jax.sweep import load_sweep
  runs = expand(load_sweep(str(sweep_path)))
  assert [r.learning_rate for r in runs] == [fitted(n) for n in sizes]
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert again.returncode == 2 and 'pass --overwrite' in again.stderr and again.stderr.count('\n') == 1
  assert np.isfinite(list(record['shapes'][0]['losses'].values())).all()
