"""The CPU scaling sweep: IsoFLOP profiles of tiny byte-level GPTs on the embedded corpus (the Python standard
library), about an hour on a shared 2-core machine.

Eight shapes from the shape rule (non-embedding N from 6.6e3 to 9.9e5) x three FLOP budgets (C = 6 N D with N the
total parameter count: 3e11, 1e12, 3e12), keeping the runs with 1 to 400 tokens per parameter, so each budget
holds 5-6 sizes around its minimum and the sweep spans 2 decades of non-embedding N. Context 128 (room for the
few-shot experiment's demonstrations), 16-sequence batches, Kaplan et al.'s learning-rate rule
LR(N) = 0.003239 - 0.0001395 ln N, the default recipe's cosine schedule over each run's own token budget, and 8
evaluations per run (the curves of Approach 1). Runs go budget by budget, smallest first.

    python -m gpt_jax.sweep run --sweep=experiments/scaling_laws/sweep_cpu.py
"""

import math

from gpt_jax.sweep import ShapeRule, Sweep

RULE = ShapeRule(aspect=24, head_dim=16, min_layers=2)
TARGETS = (6e3, 2.5e4, 5.2e4, 9.4e4, 1.7e5, 3.1e5, 5.5e5, 1.0e6)  # non-embedding sizes the rule shapes


def kaplan_lr(shape) -> float:
  n = 12 * shape.n_layers * shape.d_model ** 2
  return round(0.003239 - 0.0001395 * math.log(n), 6)


def get_sweep():
  return Sweep(
      name='scaling-cpu',
      config='configs/tiny.py:micro',
      root='experiments/scaling_laws/runs/cpu',
      shapes=[RULE(t) for t in TARGETS],
      flops=(3e11, 1e12, 3e12),
      budget_params='total',
      learning_rates=kaplan_lr,
      seeds=(0,),
      overrides={'model.context': 128, 'model.local_window': 128, 'train.batch_tokens': 16 * 128,
                 'train.eval_batches': 8, 'train.log_every': 50, 'train.sample_tokens': 0,
                 'checkpoint.every_steps': 250},
      evals_per_run=8,
      keep=lambda run: 1 <= run.tokens / run.params_total <= 3500,
  )
