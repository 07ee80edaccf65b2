"""gpt_jax.scaling: every fit recovers the constants planted in synthetic runs, and the closed forms agree with
brute-force minimisation."""

import numpy as np
import pytest
from scipy import optimize, special

from gpt_jax import scaling

# Besiroglu et al.'s refit of Chinchilla's Approach 3: the planted law.
TRUE = dict(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)


def planted_loss(n, d):
  return TRUE['E'] + TRUE['A'] / n ** TRUE['alpha'] + TRUE['B'] / d ** TRUE['beta']


def true_optimum(flops):
  """N minimising the planted law at C = 6 N D, by brute force over log N."""
  result = optimize.minimize_scalar(lambda log_n: planted_loss(np.exp(log_n), flops / (6 * np.exp(log_n))),
                                    bounds=(np.log(1e3), np.log(1e14)), method='bounded',
                                    options=dict(xatol=1e-10))
  return np.exp(result.x)


def isoflop_runs(budgets, sizes_per_budget=7, span=8.0):
  """Runs on IsoFLOP profiles: per budget, model sizes log-spaced over `span`x around the planted optimum."""
  n, d, c = [], [], []
  for budget in budgets:
    centre = true_optimum(budget)
    for size in np.geomspace(centre / np.sqrt(span), centre * np.sqrt(span), sizes_per_budget):
      n.append(size)
      d.append(budget / (6 * size))
      c.append(budget)
  return np.array(n), np.array(d), np.array(c)


@pytest.fixture(scope='module')
def noisy_runs():
  """35 runs with 0.5% log-normal noise and three 25% outliers, as on real sweeps."""
  n, d, c = isoflop_runs(np.geomspace(1e18, 1e22, 5))
  rng = np.random.default_rng(0)
  loss = planted_loss(n, d) * np.exp(rng.normal(0, 0.005, n.size))
  loss[[3, 17, 30]] *= 1.25
  return n, d, loss


@pytest.fixture(scope='module')
def chinchilla_fit(noisy_runs):
  return scaling.fit_chinchilla(*noisy_runs, bootstrap=8, bootstrap_starts=8)


def test_huber_objective_is_the_sum_over_runs_and_its_gradient_is_exact():
  rng = np.random.default_rng(1)
  log_n, log_d = rng.uniform(15, 22, 20), rng.uniform(18, 25, 20)
  log_l = np.log(rng.uniform(2, 4, 20))
  theta = np.array([6.0, 7.5, 0.6, 0.34, 0.37])
  value, grad = scaling.huber_objective(theta, log_n, log_d, log_l, 1e-3)
  terms = np.stack([theta[0] - theta[3] * log_n, theta[1] - theta[4] * log_d, np.full(20, theta[2])])
  expected = special.huber(1e-3, special.logsumexp(terms, axis=0) - log_l).sum()
  assert value == pytest.approx(expected, rel=1e-12)
  many = scaling.huber_objective_many(np.stack([theta, theta * 1.1]), log_n, log_d, log_l, 1e-3)
  assert many[0] == pytest.approx(value, rel=1e-12)
  assert many[1] == pytest.approx(scaling.huber_objective(theta * 1.1, log_n, log_d, log_l, 1e-3)[0], rel=1e-12)
  numeric = optimize.approx_fprime(theta, lambda t: scaling.huber_objective(t, log_n, log_d, log_l, 1e-3)[0],
                                   1e-7)
  np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_grid_is_hoffmanns_4500_starts():
  grid = scaling.grid_starts()
  assert grid.shape == (4500, 5)
  assert sorted(set(grid[:, 3])) == [0.0, 0.5, 1.0, 1.5, 2.0]
  assert sorted(set(grid[:, 0])) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
  assert sorted(set(grid[:, 2])) == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_approach3_recovers_planted_constants_despite_noise_and_outliers(chinchilla_fit):
  fit = chinchilla_fit
  assert fit.starts == 4500 and fit.params == 'total' and fit.delta == 1e-3
  assert fit.alpha == pytest.approx(TRUE['alpha'], abs=0.03)
  assert fit.beta == pytest.approx(TRUE['beta'], abs=0.03)
  assert fit.E == pytest.approx(TRUE['E'], rel=0.03)
  assert fit.a == pytest.approx(TRUE['beta'] / (TRUE['alpha'] + TRUE['beta']), abs=0.02)
  n_opt, _ = scaling.compute_optimal(fit, 1e24)
  assert n_opt == pytest.approx(true_optimum(1e24), rel=0.3)


def test_approach3_bootstrap_intervals_hold_the_estimate(chinchilla_fit):
  boot = chinchilla_fit.bootstrap
  assert boot['replicates'] == 8 and boot['starts_per_replicate'] == 9
  for name in ('E', 'A', 'B', 'alpha', 'beta', 'a', 'b'):
    low, high = boot['intervals'][name]
    assert low <= getattr(chinchilla_fit, name) <= high, name
    assert low < high, name


def test_compute_optimal_matches_the_closed_form_and_brute_force():
  fit = scaling.ChinchillaFit('total', **TRUE, objective=0.0, delta=1e-3, n_runs=0, starts=0)
  for flops in (1e18, 5.76e23, 1e26):
    n_opt, d_opt = scaling.compute_optimal(fit, flops)
    assert 6 * n_opt * d_opt == pytest.approx(flops, rel=1e-12)
    assert n_opt == pytest.approx(true_optimum(flops), rel=1e-5)
  n_opt, d_opt = scaling.compute_optimal(fit, np.array([1e20, 1e22]))
  assert n_opt.shape == (2,)
  # D_opt / N_opt grows as C^(b - a).
  assert d_opt[1] / n_opt[1] / (d_opt[0] / n_opt[0]) == pytest.approx(100 ** (fit.b - fit.a), rel=1e-9)


def test_approach2_isoflop_minima_follow_the_planted_frontier():
  budgets = np.geomspace(1e18, 1e22, 5)
  n, d, c = isoflop_runs(budgets, sizes_per_budget=9)
  fit = scaling.approach2(n, planted_loss(n, d), c, params='non_embedding', bootstrap=10)
  truth = [true_optimum(b) for b in budgets]
  np.testing.assert_allclose(fit.n_opt, truth, rtol=0.05)
  np.testing.assert_allclose(fit.d_opt * fit.n_opt * 6, budgets, rtol=1e-9)
  assert fit.n_law.exponent == pytest.approx(TRUE['beta'] / (TRUE['alpha'] + TRUE['beta']), abs=0.01)
  assert fit.n_law.exponent + fit.d_law.exponent == pytest.approx(1.0, abs=1e-9)
  assert fit.params == 'non_embedding' and fit.to_json()['params'] == 'non_embedding'
  assert fit.bootstrap['replicates'] == 10


def test_approach2_leaves_out_a_budget_without_an_interior_minimum():
  n, d, c = isoflop_runs([1e19, 1e20, 1e21])
  small = c == 1e21
  n[small] = n[small] / 100  # every size far below the optimum: loss falls monotonically
  d[small] = 1e21 / (6 * n[small])
  fit = scaling.approach2(n, planted_loss(n, d), c)
  assert list(fit.flops) == [1e19, 1e20]
  assert fit.extra['skipped'][0]['flops'] == 1e21


def test_approach1_envelope_of_training_curves_follows_the_planted_frontier():
  sizes = np.geomspace(1e6, 1e10, 60)
  n = np.repeat(sizes, 80)
  d = np.concatenate([np.geomspace(1e7, 1e13, 80)] * sizes.size)
  runs = np.repeat(np.arange(sizes.size), 80)
  # Compute where the planted optimum lies well inside the sizes and token counts tried; outside it the envelope
  # is pinned to the smallest or largest model.
  inside = (6 * n * d > 1e17) & (6 * n * d < 1e21)
  fit = scaling.approach1(n[inside], d[inside], planted_loss(n, d)[inside], runs=runs[inside], n_bins=20,
                          bootstrap=5)
  assert fit.n_law.exponent == pytest.approx(TRUE['beta'] / (TRUE['alpha'] + TRUE['beta']), abs=0.03)
  for flops in (1e18, 1e20):
    assert fit.n_law(flops) == pytest.approx(true_optimum(flops), rel=0.1)
  np.testing.assert_allclose(6 * fit.n_opt * fit.d_opt, fit.flops, rtol=1e-12)
  assert fit.bootstrap['replicates'] == 5


def test_power_law_with_and_without_irreducible_term():
  n = np.geomspace(1e5, 1e9, 12)
  kaplan = (8.8e13 / n) ** 0.076
  fit = scaling.fit_power_law(n, kaplan, params='non_embedding')
  assert fit.exponent == pytest.approx(-0.076, rel=1e-9) and fit.scale == pytest.approx(8.8e13, rel=1e-6)
  assert fit.r2 == pytest.approx(1.0) and fit.irreducible == 0.0 and fit.params == 'non_embedding'
  noisy = (1.7 + 40 * n ** -0.3) * np.exp(np.random.default_rng(2).normal(0, 0.002, n.size))
  fit = scaling.fit_power_law(n, noisy, irreducible=True)
  assert fit.irreducible == pytest.approx(1.7, rel=0.02)
  assert fit.exponent == pytest.approx(-0.3, abs=0.02)
  assert fit.r2 > 0.99 and fit.residuals.shape == (12,)
  assert fit(n) == pytest.approx(noisy, rel=0.01)


def test_kaplan_joint_law_recovers_its_constants():
  n, d = (x.ravel() for x in np.meshgrid(np.geomspace(1e6, 1e9, 7), np.geomspace(1e8, 1e11, 7)))
  truth = dict(alpha_n=0.076, alpha_d=0.103, n_c=6.4e13, d_c=1.8e13)
  loss = ((truth['n_c'] / n) ** (truth['alpha_n'] / truth['alpha_d']) + truth['d_c'] / d) ** truth['alpha_d']
  fit = scaling.fit_kaplan(n, d, loss * np.exp(np.random.default_rng(3).normal(0, 1e-4, n.size)))
  assert fit.alpha_n == pytest.approx(truth['alpha_n'], rel=0.05)
  assert fit.alpha_d == pytest.approx(truth['alpha_d'], rel=0.05)
  assert fit.loss(3e7, 3e9) == pytest.approx(((6.4e13 / 3e7) ** (0.076 / 0.103) + 1.8e13 / 3e9) ** 0.103, rel=1e-3)
  assert fit.r2 > 0.999 and fit.params == 'non_embedding'


@pytest.mark.parametrize('call, message', [
    (lambda: scaling.fit_chinchilla([1, 2, 3, 4, 5], [1, 2, 3], [1, 2, 3, 4, 5]), 'one value per run'),
    (lambda: scaling.fit_chinchilla([1, 2, 3, 4, -5], [1] * 5, [1] * 5), 'n_params must be finite and positive'),
    (lambda: scaling.fit_chinchilla([1, 2], [1, 2], [1, 2]), 'at least 5'),
    (lambda: scaling.fit_power_law([1, 2, 3], [1, 2, 3], params='embedding'), "params='embedding'"),
    (lambda: scaling.approach2([1, 2, 3], [3, 2, 3], [1, 1, 1]), 'at least 2'),
])
def test_bad_input_is_one_sentence(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_approach3_from_the_best_screened_starts_reaches_the_full_grid_optimum(noisy_runs, chinchilla_fit):
  fit = scaling.fit_chinchilla(*noisy_runs, starts=32)
  assert fit.starts == 32
  assert fit.objective == pytest.approx(chinchilla_fit.objective, rel=1e-6)
  assert fit.alpha == pytest.approx(chinchilla_fit.alpha, rel=1e-4)


def test_one_sign_convention_alpha_is_positive_when_the_loss_falls():
  n = np.geomspace(1e4, 1e6, 8)
  falls = scaling.fit_power_law(n, (8.8e13 / n) ** 0.076, params='non_embedding')
  rises = scaling.fit_power_law(n, 0.5 * n ** 0.046, params='non_embedding')
  assert falls.alpha == pytest.approx(0.076) and falls.to_json()['alpha'] == falls.alpha == -falls.exponent
  assert falls.label() == f'L = {falls.coefficient:.3g} N^-0.076' and falls.to_json()['law'] == falls.label()
  assert rises.alpha == pytest.approx(-0.046) and rises.label().endswith('N^+0.046 (rises)')
  with_e = scaling.fit_power_law(n, 1.5 + 30 * n ** -0.3, irreducible=True, variable='C')
  assert with_e.label().startswith('L = 1.5 + ') and ' C^-0.30' in with_e.label()


def test_the_envelope_leaves_out_a_lone_run_above_a_cheaper_better_one():
  # A run alone in its compute bin (1.25e11, loss 2.935) while a cheaper point already reached 2.6: it is not on
  # the lower envelope and must not be fitted.
  flops = np.array([1e10, 9.8e10, 1.25e11, 1.27e11, 4e11, 1e12])
  losses = np.array([3.2, 2.6, 2.935, 2.535, 2.2, 2.05])
  assert list(scaling.lower_envelope(flops, losses, n_bins=20)) == [0, 1, 3, 4, 5]


def planted_table(path, budgets=(1e11, 2e11, 4e11, 8e11)):
  """runs.csv of IsoFLOP profiles whose losses follow E + A / N^0.35 + B / D^0.35 (N_opt ~ 3e4 at 1e11)."""
  import csv
  rows = []
  for budget in budgets:
    centre = 0.232 * (budget / 6) ** 0.5
    for i, n in enumerate(centre * np.geomspace(0.25, 4, 5)):
      d = budget / (6 * n)
      rows.append(dict(run=f'r{i}-c{budget:g}-s0', state='finished', params_total=round(0.8 * n),
                       params_non_embedding=round(0.5 * n), params_flops=n, tokens=round(d), flops_budget=budget,
                       flops_model=budget, final_eval_loss=1.0 + 100 / n ** 0.35 + 278 / d ** 0.35, seed=0,
                       wall_seconds=1.0))
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return rows


def test_analyze_and_predict_commands_on_a_planted_sweep(tmp_path):
  import json
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rows = planted_table(tmp_path / 'runs.csv')
  run = lambda module, *args: subprocess.run(  # noqa: E731
      [sys.executable, '-m', f'experiments.scaling_laws.{module}', f'--table={tmp_path / "runs.csv"}', *args],
      capture_output=True, text=True, cwd=repo, timeout=600)
  analyze = ('analyze', f'--output={tmp_path / "results.json"}', f'--plots={tmp_path / "plots"}', '--bootstrap=5',
             '--bootstrap3=0', '--starts=4')
  done = run(*analyze)
  assert done.returncode == 0, done.stderr
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['approach2']['a'] == pytest.approx(0.5, abs=0.02) and results['params'] == 'flops'
  assert results['L(C) minima']['alpha'] > 0 and results['L(C) minima']['law'].startswith('L = ')
  assert all(not m['best_at_an_end'] for m in results['minima'])
  assert 'no bootstrap interval of E' in results['skipped']['approach3 extrapolation']
  assert sorted(os.listdir(tmp_path / 'plots')) == ['frontier.png', 'isoflop.png', 'loss_vs_compute.png',
                                                     'loss_vs_params.png']
  again = run(*analyze)
  assert again.returncode == 2 and again.stderr.strip() == (
      f'error: --output={tmp_path / "results.json"} already exists: choose a new path, or pass --overwrite to '
      f'replace it.')
  output = tmp_path / 'prediction.json'
  assert run('predict', f'--output={output}').returncode == 0
  prediction = json.loads(output.read_text())
  truth = 1.0 + 100 / prediction['predicted_n'] ** 0.35 + 278 / prediction['predicted_tokens'] ** 0.35
  assert prediction['budget_flops'] == 2.4e12 and prediction['measured_loss'] is None
  assert prediction['predicted_n'] == pytest.approx(0.232 * (2.4e12 / 6) ** 0.5, rel=0.05)
  assert prediction['predicted_loss'] == pytest.approx(truth, abs=0.03)
  assert prediction['fit_runs'] == [r['run'] for r in rows] and prediction['run'].endswith('-c2.4e12-s0')
  again = run('predict', f'--output={output}')
  assert again.returncode == 2 and 'pass --overwrite' in again.stderr and json.loads(output.read_text()) == prediction
  early = run('predict', f'--output={output}', '--measure')
  assert early.returncode == 2 and 'is not finished' in early.stderr
