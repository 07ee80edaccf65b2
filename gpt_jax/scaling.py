"""Scaling-law fits: power laws (Kaplan), the joint L(N, D), and Chinchilla's three compute-optimal approaches.

numpy/scipy in float64; no plotting and no I/O, so the experiments' analysis scripts and the tests share one
implementation. Every fit that involves a parameter count takes `params` ('total' or 'non_embedding': which count
the caller's N is) and carries it in its result, because the two counts give different exponents at small scale.

  fit_power_law        y = E + c x^k (E = 0 without an irreducible term), least squares on log y
  fit_kaplan           L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D
  approach1            lower envelope of loss-vs-compute curves, minima per compute bin, N_opt(C) and D_opt(C)
  approach2            IsoFLOP profiles: a parabola in log N per budget, its minima fitted against C
  fit_chinchilla       L(N, D) = E + A / N^alpha + B / D^beta: summed Huber loss on log L, L-BFGS from a grid
  compute_optimal      N_opt and D_opt of a Chinchilla fit at C = 6 N D

Sign convention, one for every loss law: y = E + A x^(-alpha), alpha = -exponent, so alpha is positive when the
loss falls as x grows (Kaplan's alpha_N = 0.076). PowerLaw.alpha and PowerLaw.label() are the only places the sign is
turned, and results files, plots and READMEs read them. N_opt ~ C^a and D_opt ~ C^b keep their own signs.

Bad input (mismatched lengths, non-positive values, too few runs) is a ValueError of one sentence.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

PARAM_COUNTS = ('total', 'non_embedding', 'flops')  # 'flops': flops_per_token / 6, so that C = 6 N D exactly
HUBER_DELTA = 1e-3  # Hoffmann et al.'s delta for the Huber loss on log L
# Hoffmann et al.'s grid of L-BFGS starts: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5,
# ..., 25}; 4,500 starts, of which only a few percent reach the optimum on real data.
GRID_ALPHA = np.arange(0.0, 2.01, 0.5)
GRID_E = np.arange(-1.0, 1.01, 0.5)
GRID_AB = np.arange(0.0, 25.1, 5.0)
LBFGS_OPTIONS = dict(maxiter=10_000, maxfun=20_000, ftol=1e-15, gtol=1e-12)  # scipy's defaults stop early


def _positive(name: str, values, min_count: int = 1) -> np.ndarray:
  x = np.asarray(values, np.float64).ravel()
  if x.size < min_count:
    raise ValueError(f'{name} has {x.size} values; the fit needs at least {min_count}.')
  if not np.all(np.isfinite(x)) or np.any(x <= 0):
    raise ValueError(f'{name} must be finite and positive; drop the runs whose {name} is not.')
  return x


def _same_length(**arrays: np.ndarray) -> None:
  sizes = {name: a.size for name, a in arrays.items()}
  if len(set(sizes.values())) > 1:
    raise ValueError(f'{", ".join(sizes)} must have one value per run; got {sizes}.')


def _check_params(params: str) -> str:
  if params not in PARAM_COUNTS:
    raise ValueError(f'params={params!r} is not a parameter count: use one of {", ".join(PARAM_COUNTS)}.')
  return params


def _r2(observed: np.ndarray, residuals: np.ndarray) -> float:
  total = np.sum((observed - observed.mean()) ** 2)
  return float(1.0 - np.sum(residuals ** 2) / total) if total > 0 else float('nan')


def _percentile_intervals(draws: list[dict], level: float = 0.95) -> dict:
  """{name: [low, high]}: percentile intervals of each named quantity over bootstrap replicates."""
  if not draws:
    return {}
  tail = 100 * (1 - level) / 2
  return {name: [float(np.percentile([d[name] for d in draws], tail)),
                 float(np.percentile([d[name] for d in draws], 100 - tail))] for name in draws[0]}


def _bootstrap(fit_once: Callable[[np.ndarray], dict], resample: Callable[[np.random.Generator], np.ndarray],
               n: int, seed: int) -> dict:
  """Refits on n resamples (indices drawn with replacement by `resample`); a resample the fit refuses (too few
  distinct model sizes, no interior minimum) is skipped and counted. Returns the intervals and how many replicates
  they hold."""
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(n):
    try:
      draws.append(fit_once(resample(rng)))
    except ValueError:
      continue
  return dict(replicates=len(draws), requested=n, level=0.95, intervals=_percentile_intervals(draws))


# ---------------------------------------------------------------------------------------------------------------
# Power laws.

@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """y = irreducible + coefficient * x ** exponent, fitted by least squares on log y.

  Kaplan's L(N) = (N_c / N)^alpha_N is exponent = -alpha_N and coefficient = N_c^alpha_N (see `scale`); `alpha`
  is -exponent, positive when y falls.
  """
  variable: str  # what x is: 'N', 'D', 'C'
  params: str | None  # which parameter count N is, when x (or y) involves one
  coefficient: float
  exponent: float
  irreducible: float  # 0.0 for a pure power law
  r2: float  # of log y
  residuals: np.ndarray  # log y - log fitted y, per point

  def __call__(self, x) -> np.ndarray:
    return self.irreducible + self.coefficient * np.asarray(x, np.float64) ** self.exponent

  @property
  def alpha(self) -> float:
    """The decay exponent of y = E + A x^(-alpha): positive when y falls as x grows."""
    return -self.exponent

  def label(self, y: str = 'L') -> str:
    """The law as text, in the module's one convention for a loss L; other quantities (N_opt) keep their sign."""
    head = f'{y} = ' + (f'{self.irreducible:.3g} + ' if self.irreducible else '')
    if y != 'L':
      return f'{head}{self.coefficient:.3g} {self.variable}^{self.exponent:.3f}'
    return f'{head}{self.coefficient:.3g} {self.variable}^-{self.alpha:.3f}' if self.alpha >= 0 else (
        f'{head}{self.coefficient:.3g} {self.variable}^+{-self.alpha:.3f} (rises)')

  @property
  def scale(self) -> float:
    """Kaplan's x_c of y - E = (x_c / x)^alpha with alpha = -exponent."""
    log_scale = -np.log(self.coefficient) / self.exponent
    return float(np.exp(log_scale)) if log_scale < 700 else float('inf')  # a flat law has no finite scale

  def to_json(self, y: str = 'L') -> dict:
    """y: what the law gives; a loss ('L') also gets alpha and its scale."""
    loss = dict(alpha=self.alpha, scale=self.scale) if y == 'L' else {}
    return dict(variable=self.variable, params=self.params, coefficient=self.coefficient, exponent=self.exponent,
                law=self.label(y), irreducible=self.irreducible, r2=self.r2, n_points=int(self.residuals.size),
                **loss)


def fit_power_law(x, y, *, irreducible: bool = False, variable: str = 'N', params: str | None = None) -> PowerLaw:
  """Fits y = c x^k (a line in log-log) or, with irreducible, y = E + c x^k with E >= 0 (least squares on log y,
  started from several fractions of min(y) for E)."""
  x, y = _positive(variable, x, 2 + irreducible), _positive('y', y)
  _same_length(x=x, y=y)
  if params is not None:
    _check_params(params)
  log_x, log_y = np.log(x), np.log(y)
  if not irreducible:
    k, log_c = np.polyfit(log_x, log_y, 1)
    return _power_law(variable, params, np.exp(log_c), k, 0.0, log_x, log_y)

  def residuals(theta):  # theta = (log E, log c, k)
    return np.logaddexp(theta[0], theta[1] + theta[2] * log_x) - log_y

  best = None
  for fraction in (0.01, 0.3, 0.6, 0.9):
    e = fraction * y.min()
    k, log_c = np.polyfit(log_x, np.log(y - e), 1)
    result = optimize.least_squares(residuals, [np.log(e), log_c, k], method='lm', xtol=1e-15, ftol=1e-15,
                                    gtol=1e-15, max_nfev=20_000)
    if best is None or result.cost < best.cost:
      best = result
  log_e, log_c, k = best.x
  return _power_law(variable, params, np.exp(log_c), k, np.exp(log_e), log_x, log_y)


def _power_law(variable, params, coefficient, exponent, irreducible, log_x, log_y) -> PowerLaw:
  fitted = np.log(irreducible + coefficient * np.exp(exponent * log_x))
  residuals = log_y - fitted
  return PowerLaw(variable, params, float(coefficient), float(exponent), float(irreducible), _r2(log_y, residuals),
                  residuals)


@dataclasses.dataclass(frozen=True)
class KaplanFit:
  """Kaplan et al.'s joint law L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D."""
  params: str
  alpha_n: float
  alpha_d: float
  n_c: float
  d_c: float
  r2: float  # of log L
  residuals: np.ndarray

  def loss(self, n_params, n_tokens) -> np.ndarray:
    n, d = np.asarray(n_params, np.float64), np.asarray(n_tokens, np.float64)
    return ((self.n_c / n) ** (self.alpha_n / self.alpha_d) + self.d_c / d) ** self.alpha_d

  def to_json(self) -> dict:
    return dict(params=self.params, alpha_n=self.alpha_n, alpha_d=self.alpha_d, n_c=self.n_c, d_c=self.d_c,
                r2=self.r2, n_runs=int(self.residuals.size))


def fit_kaplan(n_params, n_tokens, losses, *, params: str = 'non_embedding') -> KaplanFit:
  """Least squares on log L over (alpha_N, alpha_D, log N_c, log D_c), from a grid of starts."""
  n, d, loss = _positive('n_params', n_params, 4), _positive('n_tokens', n_tokens), _positive('losses', losses)
  _same_length(n_params=n, n_tokens=d, losses=loss)
  log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)

  def residuals(theta):
    alpha_n, alpha_d, log_nc, log_dc = theta
    return alpha_d * np.logaddexp(alpha_n / alpha_d * (log_nc - log_n), log_dc - log_d) - log_l

  best = None
  for start in itertools.product((0.05, 0.2, 0.5), (0.05, 0.2, 0.5), (10.0, 20.0, 30.0), (10.0, 20.0, 30.0)):
    result = optimize.least_squares(residuals, start, bounds=([1e-4, 1e-4, -50, -50], [5, 5, 100, 100]),
                                    xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=5_000)
    if best is None or result.cost < best.cost:
      best = result
  alpha_n, alpha_d, log_nc, log_dc = best.x
  res = -best.fun
  return KaplanFit(_check_params(params), float(alpha_n), float(alpha_d), float(np.exp(log_nc)),
                   float(np.exp(log_dc)), _r2(log_l, res), res)


# ---------------------------------------------------------------------------------------------------------------
# Chinchilla Approach 1: the lower envelope of loss-vs-compute curves.

@dataclasses.dataclass(frozen=True)
class FrontierFit:
  """N_opt(C) and D_opt(C) as power laws in C, from the loss-minimising (C, N, D) points of Approach 1 or 2."""
  approach: int
  params: str
  flops: np.ndarray  # C of each minimum
  n_opt: np.ndarray
  d_opt: np.ndarray
  loss: np.ndarray  # the loss at each minimum
  n_law: PowerLaw  # N_opt = coefficient * C^a (a = n_law.exponent)
  d_law: PowerLaw  # D_opt = coefficient * C^b
  bootstrap: dict | None = None  # intervals of a and b (and of N_opt, D_opt at the largest C)
  extra: dict = dataclasses.field(default_factory=dict)  # per-approach detail (the IsoFLOP parabolas)

  def to_json(self) -> dict:
    return dict(approach=self.approach, params=self.params, a=self.n_law.exponent, b=self.d_law.exponent,
                n_law=self.n_law.to_json('N_opt'), d_law=self.d_law.to_json('D_opt'),
                minima=[dict(flops=float(c), n_opt=float(n), d_opt=float(d), loss=float(l))
                        for c, n, d, l in zip(self.flops, self.n_opt, self.d_opt, self.loss)],
                bootstrap=self.bootstrap, **self.extra)


def _frontier(approach, params, flops, n_opt, d_opt, loss, extra=None) -> FrontierFit:
  if len(flops) < 2:
    raise ValueError(f'Approach {approach} found {len(flops)} compute-optimal point(s); the frontier needs at '
                     f'least 2 (add FLOP budgets or model sizes).')
  n_law = fit_power_law(flops, n_opt, variable='C', params=params)
  d_law = fit_power_law(flops, d_opt, variable='C', params=params)
  return FrontierFit(approach, params, *(np.asarray(v, np.float64) for v in (flops, n_opt, d_opt, loss)),
                     n_law, d_law, extra=extra or {})


def lower_envelope(flops, losses, n_bins: int) -> np.ndarray:
  """Indices of the lowest-loss point in each of n_bins log-spaced compute bins (empty bins are skipped), keeping
  only points on the lower envelope: a bin's best point is dropped when another point reached a lower loss with no
  more compute (a lone poor run in a sparse bin is not compute-optimal)."""
  c, loss = _positive('flops', flops, 2), np.asarray(losses, np.float64)
  edges = np.logspace(np.log10(c.min()), np.log10(c.max()), n_bins + 1)
  which = np.clip(np.searchsorted(edges, c, side='right') - 1, 0, n_bins - 1)
  best = [np.flatnonzero(which == b)[np.argmin(loss[which == b])] for b in range(n_bins) if np.any(which == b)]
  return np.array([i for i in best if not np.any((loss < loss[i]) & (c <= c[i]))], np.int64)


def approach1(n_params, n_tokens, losses, *, runs=None, n_bins: int = 20, params: str = 'total',
              bootstrap: int = 0, seed: int = 0) -> FrontierFit:
  """Chinchilla Approach 1. Points are (N, tokens seen, loss) along every run's training curve, C = 6 N D; the
  lowest loss in each log-spaced compute bin is a compute-optimal (C, N, D), and N_opt, D_opt are fitted
  against C. `runs` names each point's run, so the bootstrap resamples whole curves."""
  n, d = _positive('n_params', n_params, 2), _positive('n_tokens', n_tokens)
  loss = _positive('losses', losses)
  _same_length(n_params=n, n_tokens=d, losses=loss)
  runs = np.zeros(n.size, np.int64) if runs is None else np.unique(np.asarray(runs), return_inverse=True)[1]

  def fit(idx):
    c = 6 * n[idx] * d[idx]
    env = idx[lower_envelope(c, loss[idx], n_bins)]
    return _frontier(1, _check_params(params), 6 * n[env] * d[env], n[env], d[env], loss[env],
                     extra=dict(n_bins=n_bins))

  result = fit(np.arange(n.size))
  if bootstrap:
    members = [np.flatnonzero(runs == r) for r in range(runs.max() + 1)]
    resample = lambda rng: np.concatenate([members[r] for r in rng.integers(0, len(members), len(members))])
    summary = lambda idx: _frontier_summary(fit(idx), result.flops.max())
    result = dataclasses.replace(result, bootstrap=_bootstrap(summary, resample, bootstrap, seed))
  return result


def _frontier_summary(fit: FrontierFit, flops: float) -> dict:
  return dict(a=fit.n_law.exponent, b=fit.d_law.exponent, n_opt=float(fit.n_law(flops)),
              d_opt=float(fit.d_law(flops)))


# ---------------------------------------------------------------------------------------------------------------
# Chinchilla Approach 2: IsoFLOP profiles.

def isoflop_minimum(n_params, losses) -> tuple[np.ndarray, float]:
  """(parabola coefficients of L in log N, highest power first; N at its minimum). A ValueError when the runs hold
  fewer than 3 model sizes or the parabola has no minimum inside the sizes tried."""
  log_n, loss = np.log(n_params), np.asarray(losses, np.float64)
  if np.unique(log_n).size < 3:
    raise ValueError(f'an IsoFLOP profile needs at least 3 model sizes; it has {np.unique(log_n).size}.')
  coef = np.polyfit(log_n, loss, 2)
  vertex = -coef[1] / (2 * coef[0]) if coef[0] > 0 else np.nan
  if not log_n.min() <= vertex <= log_n.max():
    raise ValueError('an IsoFLOP profile has no minimum inside its model sizes; add smaller or larger models.')
  return coef, float(np.exp(vertex))


def approach2(n_params, losses, budgets, *, params: str = 'total', bootstrap: int = 0, seed: int = 0) -> FrontierFit:
  """Chinchilla Approach 2: runs grouped by FLOP budget C; per budget a parabola of L in log N gives N_opt, and
  D_opt = C / (6 N_opt). Budgets whose profile has no interior minimum are left out and listed (`skipped`)."""
  n, loss, c = _positive('n_params', n_params, 3), _positive('losses', losses), _positive('budgets', budgets)
  _same_length(n_params=n, losses=loss, budgets=c)

  def fit(idx, strict):
    minima, parabolas, skipped = [], [], []
    for budget in np.unique(c[idx]):
      at = idx[c[idx] == budget]
      try:
        coef, n_opt = isoflop_minimum(n[at], loss[at])
      except ValueError as error:
        if strict:
          raise
        skipped.append(dict(flops=float(budget), reason=str(error)))
        continue
      minima.append((budget, n_opt, budget / (6 * n_opt), float(np.polyval(coef, np.log(n_opt)))))
      parabolas.append(dict(flops=float(budget), coefficients=[float(x) for x in coef]))
    return _frontier(2, _check_params(params), *(np.array(v) for v in zip(*minima)) if minima else ([],) * 4,
                     extra=dict(parabolas=parabolas, skipped=skipped))

  result = fit(np.arange(n.size), strict=False)
  if bootstrap:
    kept = np.isin(c, result.flops)  # resample runs within the budgets the full fit used
    groups = [np.flatnonzero(kept & (c == b)) for b in result.flops]
    resample = lambda rng: np.concatenate([rng.choice(g, g.size) for g in groups])
    summary = lambda idx: _frontier_summary(fit(idx, strict=True), result.flops.max())
    result = dataclasses.replace(result, bootstrap=_bootstrap(summary, resample, bootstrap, seed))
  return result


# ---------------------------------------------------------------------------------------------------------------
# Chinchilla Approach 3: L(N, D) = E + A / N^alpha + B / D^beta.

@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
  """Hoffmann et al.'s parametric loss; `objective` is the summed Huber loss at the optimum."""
  params: str
  E: float
  A: float
  B: float
  alpha: float
  beta: float
  objective: float
  delta: float
  n_runs: int
  starts: int  # L-BFGS starts tried
  bootstrap: dict | None = None  # 95% percentile intervals of E, A, B, alpha, beta, a, b

  def loss(self, n_params, n_tokens) -> np.ndarray:
    n, d = np.asarray(n_params, np.float64), np.asarray(n_tokens, np.float64)
    return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

  @property
  def a(self) -> float:
    """N_opt grows as C^a."""
    return self.beta / (self.alpha + self.beta)

  @property
  def b(self) -> float:
    """D_opt grows as C^b."""
    return self.alpha / (self.alpha + self.beta)

  def to_json(self) -> dict:
    return dict(params=self.params, E=self.E, A=self.A, B=self.B, alpha=self.alpha, beta=self.beta, a=self.a,
                b=self.b, objective=self.objective, delta=self.delta, n_runs=self.n_runs, starts=self.starts,
                bootstrap=self.bootstrap)


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                    delta: float) -> tuple[float, np.ndarray]:
  """(sum over runs of Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L), its gradient) at
  theta = (a, b, e, alpha, beta). Summed, not averaged: with L-BFGS's relative tolerances the mean stops early."""
  a, b, e, alpha, beta = theta
  t_n, t_d = a - alpha * log_n, b - beta * log_d
  top = np.maximum(np.maximum(t_n, t_d), e)  # log-sum-exp written out: scipy's is several times slower here
  x_n, x_d, x_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
  total = x_n + x_d + x_e
  r = top + np.log(total) - log_l
  clipped = np.clip(r, -delta, delta)  # dHuber/dr
  huber = clipped * (r - 0.5 * clipped)  # r^2 / 2 inside delta, delta (|r| - delta / 2) outside
  w = clipped / total
  w_n, w_d = w * x_n, w * x_d
  grad = np.array([w_n.sum(), w_d.sum(), (w * x_e).sum(), -(w_n @ log_n), -(w_d @ log_d)])
  return float(huber.sum()), grad


def huber_objective_many(thetas: np.ndarray, log_n, log_d, log_l, delta: float) -> np.ndarray:
  """huber_objective's value at each row of thetas [starts, 5] at once (screening a grid of starts)."""
  a, b, e, alpha, beta = (thetas[:, i:i + 1] for i in range(5))
  terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(thetas), log_n.size))])
  top = terms.max(axis=0)
  r = top + np.log(np.exp(terms - top).sum(axis=0)) - log_l
  clipped = np.clip(r, -delta, delta)
  return (clipped * (r - 0.5 * clipped)).sum(axis=1)


def grid_starts() -> np.ndarray:
  """Hoffmann et al.'s 4,500 starts as rows (a, b, e, alpha, beta)."""
  return np.array([(a, b, e, alpha, beta) for alpha, beta, e, a, b
                   in itertools.product(GRID_ALPHA, GRID_ALPHA, GRID_E, GRID_AB, GRID_AB)], np.float64)


def _lbfgs_best(starts: np.ndarray, log_n, log_d, log_l, delta) -> tuple[np.ndarray, float]:
  best_x, best_f = None, np.inf
  # One BLAS thread: L-BFGS-B's products here are of 5 x 10 matrices, and OpenBLAS handing each to its thread
  # pool made every start about 10x slower on a 2-core machine (same optima).
  with threadpool_limits(1, user_api='blas'):
    for start in starts:
      result = optimize.minimize(huber_objective, start, args=(log_n, log_d, log_l, delta), jac=True,
                                 method='L-BFGS-B', options=LBFGS_OPTIONS)
      if np.isfinite(result.fun) and result.fun < best_f:
        best_x, best_f = result.x, float(result.fun)
  return best_x, best_f


def fit_chinchilla(n_params, n_tokens, losses, *, delta: float = HUBER_DELTA, bootstrap: int = 0, seed: int = 0,
                   params: str = 'total', starts: int | None = None, bootstrap_starts: int = 64) -> ChinchillaFit:
  """Chinchilla Approach 3 as Hoffmann et al. and Besiroglu et al. fit it: the summed Huber loss (delta 1e-3) on
  log L, L-BFGS from each of the 4,500 grid starts, float64, the best optimum kept.

  starts=k runs L-BFGS only from the k grid points with the lowest objective (for a machine where 4,500 runs take
  too long; the result records how many starts it used). bootstrap > 0 refits on that many resamples of the runs
  for 95% percentile intervals. Each replicate starts
  L-BFGS from the bootstrap_starts grid points with the lowest objective on its resample plus the full fit's
  optimum (4,500 starts per replicate would take hours on a laptop); the number of starts is recorded.
  """
  n, d = _positive('n_params', n_params, 5), _positive('n_tokens', n_tokens)
  loss = _positive('losses', losses)
  _same_length(n_params=n, n_tokens=d, losses=loss)
  if not delta > 0:
    raise ValueError(f'delta={delta} must be positive (Hoffmann et al. use 1e-3).')
  logs = np.log(n), np.log(d), np.log(loss)
  grid = grid_starts()
  chosen = grid if starts is None else grid[np.argsort(huber_objective_many(grid, *logs, delta))[:starts]]
  theta, objective = _lbfgs_best(chosen, *logs, delta)
  fit = _chinchilla(_check_params(params), theta, objective, delta, n.size, len(chosen))
  if not bootstrap:
    return fit

  def refit(idx):
    resampled = tuple(x[idx] for x in logs)
    screen = huber_objective_many(grid, *resampled, delta)
    starts = np.vstack([grid[np.argsort(screen)[:bootstrap_starts]], theta])
    t, f = _lbfgs_best(starts, *resampled, delta)
    replicate = _chinchilla(params, t, f, delta, idx.size, len(starts))
    return dict(E=replicate.E, A=replicate.A, B=replicate.B, alpha=replicate.alpha, beta=replicate.beta,
                a=replicate.a, b=replicate.b)

  summary = _bootstrap(refit, lambda rng: rng.integers(0, n.size, n.size), bootstrap, seed)
  return dataclasses.replace(fit, bootstrap=dict(summary, starts_per_replicate=bootstrap_starts + 1))


def _chinchilla(params, theta, objective, delta, n_runs, starts) -> ChinchillaFit:
  a, b, e, alpha, beta = (float(x) for x in theta)
  with np.errstate(over='ignore'):  # an unidentified constant can run off to inf in a bootstrap replicate
    E, A, B = np.exp([e, a, b])
  return ChinchillaFit(params, float(E), float(A), float(B), alpha, beta, objective, delta, n_runs, starts)


def compute_optimal(fit: ChinchillaFit, flops) -> tuple[np.ndarray, np.ndarray]:
  """(N_opt, D_opt) minimising fit.loss(N, D) subject to 6 N D = C: N_opt = G (C/6)^a, D_opt = (C/6)^b / G with
  G = (alpha A / (beta B))^(1 / (alpha + beta))."""
  c = _positive('flops', flops)
  g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1.0 / (fit.alpha + fit.beta))
  n_opt, d_opt = g * (c / 6) ** fit.a, (c / 6) ** fit.b / g
  return (n_opt, d_opt) if np.ndim(flops) else (float(n_opt[0]), float(d_opt[0]))
