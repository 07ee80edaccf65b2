"""The sweep definition format and its expansion into runs.

A sweep is a Python file with get_sweep() returning a Sweep: a product of model shapes (from a ShapeRule or
listed), token budgets or FLOP budgets (C = 6 N D, or real model FLOPs), learning rates and seeds over one base
config, with an optional Recipe (gpt_jax.sweep.recipe: batch, beta2, warmup and a fitted learning-rate rule). Each run is a
workdir under Sweep.root plus the --config.<field> overrides that make it; its token budget is train.total_tokens,
so a schedule left to the config (optim.warmup_tokens / decay_tokens None) follows it, and a config that fixes
its own schedule (configs/gpt3.py) must say how it scales through Sweep.schedule. Every run's config is built
and validated when the sweep is expanded, before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import itertools
import math
import os
import traceback
from typing import Any, Callable, Mapping, Sequence

from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax.config import ConfigError
from gpt_jax.sweep import resources as resources_lib


@dataclasses.dataclass(frozen=True)
class Shape:
  """One model shape; d_head None keeps d_model // n_heads, d_ff None is 4 d_model (whatever the base config says)."""
  n_layers: int
  d_model: int
  n_heads: int
  d_head: int | None = None
  d_ff: int | None = None

  @property
  def name(self) -> str:
    return f'l{self.n_layers}-d{self.d_model}-h{self.n_heads}'

  def overrides(self) -> dict:
    out = {'model.n_layers': self.n_layers, 'model.d_model': self.d_model, 'model.n_heads': self.n_heads,
           'model.d_ff': self.d_ff or 4 * self.d_model}
    return out | ({'model.d_head': self.d_head} if self.d_head else {})


@dataclasses.dataclass(frozen=True)
class ShapeRule:
  """Depth, width and heads as functions of a target non-embedding size N ~ 12 n_layers d_model^2: the width is
  `aspect` times the depth (Kaplan et al.'s loss is flat over aspect ratios of 20-200), rounded to whole heads of
  `head_dim`, with at least `min_layers` layers (shallower models fall off the trend)."""
  aspect: float = 32.0
  head_dim: int = 32
  min_layers: int = 2

  def __call__(self, target: float) -> Shape:
    n_layers = max(self.min_layers, round((target / (12 * self.aspect ** 2)) ** (1 / 3)))
    heads = max(1, round(math.sqrt(target / (12 * n_layers)) / self.head_dim))
    return Shape(n_layers, heads * self.head_dim, heads)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A product of shapes x budgets x learning rates x seeds over one base config."""
  name: str  # names the sweep in messages and emitted job scripts
  config: str  # base config, e.g. 'configs/tiny.py:micro'
  root: str  # directory holding one workdir per run
  shapes: Sequence[Shape]
  tokens: Sequence[int] = ()  # token budgets; or
  flops: Sequence[float] = ()  # FLOP budgets: C = 6 N D with N counted as budget_params, or model FLOPs
  budget_params: str = 'total'  # 'total', 'non_embedding', or 'model' (C = flops.flops_per_token x D)
  learning_rates: Sequence[float] | Callable[[Shape], float] = ()  # () keeps the config's optim.peak_lr
  seeds: Sequence[int] = (0,)
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # --config.<key> for every run
  per_shape: Callable[[Shape], Mapping[str, Any]] | None = None  # overrides that follow the shape (batch, lr)
  schedule: Callable[[int], Mapping[str, Any]] | None = None  # overrides that follow a run's token budget
  evals_per_run: int = 0  # sets train.eval_every so each run evaluates this often (0: the config's eval_every)
  keep: Callable[['Run'], bool] | None = None  # drops runs (e.g. tokens per parameter far from the frontier)
  recipe: Any = None  # a gpt_jax.sweep.recipe.Recipe: batch and beta2 per shape, warmup per run, LR rule
  resources: Callable[[Shape], resources_lib.Resources] | None = None  # cluster allocation and mesh per shape


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: its workdir, base config and overrides, and what the analysis needs to know about it."""
  name: str
  workdir: str
  config: str
  overrides: dict
  shape: Shape
  tokens: int  # train.total_tokens, a whole number of batches
  flops_budget: float | None  # the nominal C of a FLOP-budget sweep
  learning_rate: float
  seed: int
  params_total: int
  params_non_embedding: int
  params_flops: float  # the FLOP-equivalent size flops_per_token / 6, so that model FLOPs = 6 params_flops tokens
  resources: resources_lib.Resources | None = None  # Sweep.resources(shape); its overrides are in overrides

  def command(self, python: str = 'python') -> list[str]:
    """The training command: the same entry point on a laptop, a SLURM node or a TPU worker."""
    return [python, '-m', 'gpt_jax.train', f'--config={self.config}', f'--workdir={self.workdir}',
            *(f'--config.{key}={_flag_value(value)}' for key, value in self.overrides.items())]


def _flag_value(value) -> str:
  return repr(value) if isinstance(value, float) else str(value)


def load_sweep(path: str) -> Sweep:
  """The Sweep that `path`'s get_sweep() returns; a missing file, an error inside it or a wrong field is a
  ConfigError of one sentence naming the file (and line)."""
  if not os.path.isfile(path):
    raise ConfigError(f'sweep file {path!r} does not exist: pass --sweep=<file>.py, e.g. '
                      f'--sweep=experiments/scaling_laws/sweep_cpu.py.')
  module_spec = importlib.util.spec_from_file_location('_gpt_jax_sweep', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, 'get_sweep', None)):
      raise ConfigError(f'sweep file {path!r} defines no get_sweep(): add def get_sweep(): return Sweep(...).')
    sweep = module.get_sweep()
  except ConfigError:
    raise
  except TypeError as error:
    raise ConfigError(f'sweep file {path!r}: {_field_hint(error)}') from None
  except Exception as error:  # noqa: BLE001 -- any mistake in the user's file becomes one sentence
    raise ConfigError(f'sweep file {path!r}{_line_in(error, path)}: {type(error).__name__}: {error}; fix the '
                      f'file.') from None
  if not isinstance(sweep, Sweep):
    raise ConfigError(f'sweep file {path!r}: get_sweep() returned {type(sweep).__name__}, not a Sweep.')
  return sweep


def _line_in(error: Exception, path: str) -> str:
  if isinstance(error, SyntaxError) and error.lineno:
    return f' line {error.lineno}'
  frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.samefile(f.filename, path)
            ] if os.path.exists(path) else []
  return f' line {frames[-1].lineno}' if frames else ''


def _field_hint(error: TypeError) -> str:
  """'Sweep() got an unexpected keyword argument 'learing_rates'' -> the message with the closest field."""
  text = str(error)
  if 'unexpected keyword argument' not in text:
    return f'{text}; fix the file.'
  bad = text.rsplit("'", 2)[-2]
  fields = [f.name for cls in (Sweep, Shape, ShapeRule, resources_lib.Resources) for f in dataclasses.fields(cls)]
  close = difflib.get_close_matches(bad, fields, n=1)
  if close:
    return f'{text}: did you mean {close[0]!r}?'
  return f'{text}: valid Sweep fields are {", ".join(f.name for f in dataclasses.fields(Sweep))}.'


def expand(sweep: Sweep) -> list[Run]:
  """Every run of the sweep, its config built and validated; a ConfigError naming the sweep (and run) if any
  field, override or budget is wrong."""
  _check_fields(sweep)
  runs = []
  # Budget-major: a sweep stopped part-way has whole IsoFLOP profiles of its smaller budgets.
  for budget, shape, seed in itertools.product(sweep.flops or sweep.tokens, sweep.shapes, sweep.seeds):
    rates = ([sweep.learning_rates(shape)] if callable(sweep.learning_rates) else list(sweep.learning_rates)
             ) or [None]
    for lr in rates:
      run = make_run(sweep, shape, budget, lr, seed)
      if sweep.keep is None or sweep.keep(run):
        runs.append(run)
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    twice = next(n for n in names if names.count(n) > 1)
    raise ConfigError(f'sweep {sweep.name!r} names two runs {twice!r}: make its shapes, budgets, learning rates '
                      f'and seeds distinct.')
  if not runs:
    raise ConfigError(f'sweep {sweep.name!r} has no runs: its product is empty or keep() drops every run.')
  return runs


def _check_fields(sweep: Sweep) -> None:
  where = f'sweep {sweep.name!r}'
  if not sweep.shapes or not all(isinstance(s, Shape) for s in sweep.shapes):
    raise ConfigError(f'{where}: shapes must be a non-empty list of Shape (or ShapeRule()(target) results).')
  if bool(sweep.tokens) == bool(sweep.flops):
    raise ConfigError(f'{where}: give exactly one of tokens=[...] (token budgets) and flops=[...] (FLOP budgets).')
  budgets = list(sweep.tokens or sweep.flops)
  if not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) and b > 0
             for b in budgets):
    raise ConfigError(f'{where}: budgets must be positive numbers; got {budgets}.')
  if sweep.budget_params not in ('total', 'non_embedding', 'model'):
    raise ConfigError(f'{where}: budget_params={sweep.budget_params!r} must be \'total\', \'non_embedding\' or '
                      f'\'model\'.')
  if not sweep.seeds or not all(isinstance(s, int) and s >= 0 for s in sweep.seeds):
    raise ConfigError(f'{where}: seeds must be a non-empty list of integers >= 0; got {list(sweep.seeds)}.')
  if not callable(sweep.learning_rates) and not all(
      isinstance(x, (int, float)) and x > 0 for x in sweep.learning_rates):
    raise ConfigError(f'{where}: learning_rates must be positive numbers or a function of the Shape.')
  if not isinstance(sweep.evals_per_run, int) or sweep.evals_per_run < 0:
    raise ConfigError(f'{where}: evals_per_run={sweep.evals_per_run!r} must be an integer >= 0.')
  if sweep.recipe is not None:
    sweep.recipe.check(where)


def _budget_tag(sweep: Sweep, budget: float) -> str:
  if sweep.tokens and float(budget).is_integer():
    return f't{int(budget)}'
  return ('c' if sweep.flops else 't') + f'{budget:.3g}'.replace('+', '')


def make_run(sweep: Sweep, shape: Shape, budget: float, lr: float | None, seed: int) -> Run:
  name = f'{shape.name}-{_budget_tag(sweep, budget)}' + (f'-lr{lr:g}' if lr else '') + f'-s{seed}'
  where = f'sweep {sweep.name!r}, run {name}'
  recipe = sweep.recipe
  resources = resources_lib.check(sweep.resources(shape), where) if sweep.resources else None
  base = (dict(sweep.overrides) | shape.overrides() | (recipe.per_shape(shape) if recipe else {})
          | dict(sweep.per_shape(shape) if sweep.per_shape else {})
          | dict(resources.overrides if resources else {}) | ({'optim.peak_lr': float(lr)} if lr else {})
          | {'train.seed': seed})
  config = _config(sweep, base, where)
  counts = flops.count_params(config) | {'model': flops.flops_per_token(config) / 6}
  rule = recipe.rule() if recipe and not lr else None
  if rule:
    base['optim.peak_lr'] = rule(counts['model'])
  batch = config.train.batch_tokens
  wanted = budget / (6 * counts[sweep.budget_params]) if sweep.flops else budget
  tokens = int(wanted // batch) * batch
  if tokens < batch:
    raise ConfigError(f'{where}: a budget of {budget:.3g} {"FLOPs" if sweep.flops else "tokens"} is less than one '
                      f'batch of {batch} tokens: raise the budget or drop the shape (or filter it with keep=).')
  overrides = (base | {'train.total_tokens': tokens} | (recipe.schedule(tokens, batch) if recipe else {})
               | dict(sweep.schedule(tokens) if sweep.schedule else {}))
  if sweep.evals_per_run:
    overrides['train.eval_every'] = max(1, tokens // batch // sweep.evals_per_run)
  config = _config(sweep, overrides, where)
  if not 0.5 * tokens <= config.optim.decay_tokens <= tokens:
    raise ConfigError(f'{where}: optim.decay_tokens={config.optim.decay_tokens} does not follow the run\'s budget '
                      f'of {tokens} tokens: leave it to the config (None) or scale it in Sweep.schedule.')
  return Run(name, os.path.join(sweep.root, name), sweep.config, overrides, shape, tokens,
             float(budget) if sweep.flops else None, float(config.optim.peak_lr), seed, counts['total'],
             counts['non_embedding'], counts['model'], resources)


def _config(sweep: Sweep, overrides: dict, where: str):
  try:
    return gcfg.load_config_file(sweep.config, overrides)
  except ConfigError as error:
    raise ConfigError(f'{where}: {error}') from None
