"""The training recipe of a scaling sweep, as rules rather than hand-tuned numbers per run.

- Shapes: `WidthRule` gives width and depth that both grow with size (depth = width // aspect, at least
  min_layers) and as many heads as keep each one at least min_head_dim wide.
- Per shape: the batch and Adam's beta2 (`Recipe.batch_tokens`, `Recipe.b2`, a number or a function of the Shape).
- Per run: warmup = max(warmup_tokens, warmup_steps optimizer steps, warmup_fraction of the run), at most half
  of it, so the largest models of a budget (the fewest steps) still warm up; the cosine decays over the run.
- Learning rate: `LRRule`, log LR linear in log N (N the FLOP-equivalent size, flops_per_token / 6), fitted by
  `python -m gpt_jax.sweep.lrscan` from a few short runs per shape over `Recipe.lr_grid` and written to a JSON
  file that the sweep reads (`Recipe.learning_rate`), so a sweep on new hardware is tuned the same way.

Budgets are counted in real model FLOPs (flops.flops_per_token x tokens, attention and the padded LM head
included) when the Sweep says budget_params='model'.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable, Sequence

import numpy as np

from gpt_jax.config import ConfigError
from gpt_jax.sweep.spec import Shape


@dataclasses.dataclass(frozen=True)
class WidthRule:
  """Shape of a given width: depth max(min_layers, width // aspect) and the most heads of at least min_head_dim
  dimensions that divide the width. Width and depth are both non-decreasing in size, so a profile never trades a
  layer for width half-way (a deeper, narrower model in the middle of an IsoFLOP profile)."""
  aspect: int = 24
  min_head_dim: int = 16
  min_layers: int = 2

  def __call__(self, width: int) -> Shape:
    if not isinstance(width, int) or width < self.min_head_dim:
      raise ConfigError(f'WidthRule: width {width!r} must be an integer of at least min_head_dim='
                        f'{self.min_head_dim}.')
    heads = next(h for h in range(width // self.min_head_dim, 0, -1) if width % h == 0)
    return Shape(max(self.min_layers, width // self.aspect), width, heads)

  def nearest(self, target: float, size: Callable[[Shape], float], step: int = 8) -> Shape:
    """The shape of a width in steps of `step` whose size(shape) is nearest to target in log."""
    shapes, width = [], step * -(-self.min_head_dim // step)
    while not shapes or size(shapes[-1]) < target:
      shapes.append(self(width))
      width += step
    return min(shapes[-2:], key=lambda s: abs(math.log(size(s) / target)))


@dataclasses.dataclass(frozen=True)
class LRRule:
  """LR(N) = exp(intercept + slope ln N), N the FLOP-equivalent size (flops_per_token / 6), kept inside the
  scanned grid [low, high]: a rate the scan never tried is not extrapolated to."""
  intercept: float
  slope: float
  low: float = 0.0
  high: float = math.inf

  def __call__(self, n: float) -> float:
    rate = min(max(math.exp(self.intercept + self.slope * math.log(n)), self.low), self.high)
    return float(f'{rate:.3g}')

  @classmethod
  def fit(cls, sizes: Sequence[float], rates: Sequence[float], grid: Sequence[float] = ()) -> 'LRRule':
    """Least squares of ln LR on ln N (a constant rule from one size), kept inside the grid when given."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(rates, float))
    bounds = (min(grid), max(grid)) if grid else (0.0, math.inf)
    if len(set(x.tolist())) < 2:
      return cls(float(y.mean()), 0.0, *bounds)
    slope, intercept = np.polyfit(x, y, 1)
    return cls(float(intercept), float(slope), *bounds)

  @classmethod
  def load(cls, path: str) -> 'LRRule':
    if not os.path.isfile(path):
      raise ConfigError(f'the learning-rate rule {path!r} does not exist: make it with python -m gpt_jax.sweep.lrscan '
                        f'--sweep=<this sweep file> (a few short runs per shape).')
    with open(path, encoding='utf-8') as f:
      record = json.load(f)
    rule = record['rule']
    return cls(rule['intercept'], rule['slope'], rule.get('low', 0.0), rule.get('high', math.inf))


def best_rate(losses: dict[float, float]) -> tuple[float, bool]:
  """(the best learning rate of a grid, whether it lies inside the grid). Inside, the vertex of the parabola in
  ln LR through the best point and its two neighbours; at an end of the grid, that end."""
  rates = sorted(r for r, loss in losses.items() if math.isfinite(loss))
  if not rates:
    raise ValueError('no learning rate of the grid gave a finite loss')
  i = min(range(len(rates)), key=lambda k: losses[rates[k]])
  if i in (0, len(rates) - 1):
    return rates[i], False
  x = np.log(rates[i - 1:i + 2])
  curvature, linear, _ = np.polyfit(x, [losses[r] for r in rates[i - 1:i + 2]], 2)
  return float(math.exp(min(max(-linear / (2 * curvature), x[0]), x[2]))), True


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Batch, beta2, warmup and learning rate of every run of a sweep, from its shape and its token budget."""
  batch_tokens: int | Callable[[Shape], int] | None = None  # None keeps the config's
  b2: float | Callable[[Shape], float] | None = None  # None keeps the config's
  warmup_tokens: int = 0
  warmup_steps: int = 0
  warmup_fraction: float = 0.0
  learning_rate: str | LRRule | None = None  # an LRRule or the JSON file lrscan writes; None: the Sweep's rates
  lr_grid: Sequence[float] = (2e-3, 4e-3, 8e-3)  # the LR scan's grid
  scan_fraction: float = 1 / 3  # a scan run has this multiple of the smallest budget its shape has in the sweep

  def check(self, where: str) -> None:
    counts = (self.warmup_tokens, self.warmup_steps)
    if not all(isinstance(x, int) and x >= 0 for x in counts) or not 0 <= self.warmup_fraction <= 0.5:
      raise ConfigError(f'{where}: Recipe(warmup_tokens={self.warmup_tokens!r}, warmup_steps={self.warmup_steps!r}, '
                        f'warmup_fraction={self.warmup_fraction!r}) needs integers >= 0 and a fraction in [0, 0.5].')
    if not self.lr_grid or not all(isinstance(r, (int, float)) and r > 0 for r in self.lr_grid):
      raise ConfigError(f'{where}: Recipe.lr_grid must be positive learning rates; got {list(self.lr_grid)}.')
    if not 0 < self.scan_fraction <= 10:
      raise ConfigError(f'{where}: Recipe.scan_fraction={self.scan_fraction!r} must be in (0, 10].')

  def per_shape(self, shape: Shape) -> dict:
    out = {}
    if self.batch_tokens is not None:
      out['train.batch_tokens'] = _of(self.batch_tokens, shape)
    if self.b2 is not None:
      out['optim.b2'] = float(_of(self.b2, shape))
    return out

  def schedule(self, tokens: int, batch_tokens: int) -> dict:
    """Warmup: max(warmup_tokens, warmup_steps batches, warmup_fraction x tokens), at most half the run."""
    if not (self.warmup_tokens or self.warmup_steps or self.warmup_fraction):
      return {}
    warmup = max(self.warmup_tokens, self.warmup_steps * batch_tokens, int(self.warmup_fraction * tokens))
    return {'optim.warmup_tokens': min(warmup, tokens // 2)}

  def rule(self) -> LRRule | None:
    if isinstance(self.learning_rate, str):
      return LRRule.load(self.learning_rate)
    return self.learning_rate


def _of(value, shape: Shape):
  return value(shape) if callable(value) else value
