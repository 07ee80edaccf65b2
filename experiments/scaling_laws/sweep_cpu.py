"""The CPU scaling sweep: IsoFLOP profiles of tiny byte-level GPTs on the embedded corpus (the Python standard
library), with the recipe that small models need (gpt_jax.sweep.recipe).

- Shapes: widths 16, 24, 32, 48, 64 and 80 from the width rule (depth = width // 24, at least 2; heads of at least
  16 dimensions): l2-d16-h1 (12.8k parameters, FLOP-equivalent N 20k) up to l3-d80-h5 (265k; 323k).
- Budgets in real model FLOPs (flops_per_token x tokens, attention and the padded LM head included): 6e10, 1.25e11,
  2.5e11, 5e11, 1e12 and 2e12 (1.5 decades), widths 16-64 at each and 80 at the two largest: 32 runs of seed 0,
  0.4 to 800 tokens per FLOP-equivalent parameter; and the verification run of results/prediction.json once that
  file exists.
- Recipe: batch 4 x 128 tokens (8 x 128 from width 80), AdamW beta2 0.99, warmup max(150 steps, 5%) (at most half
  the run), cosine to 10% over the run, the learning rate from the rule `python -m gpt_jax.sweep.lrscan` fitted
  (results/lr_rule.json: widths 16-64 over 2e-3 to 1.6e-2 at 1e11 FLOPs; width 80 gets the rule's rate).
- One evaluation, at the end, on the whole validation split (3,556 sequences of 128 bytes).
- A second seed (parameter init; same data order) for the two best sizes of each profile's first seed
  (SECOND_SEED).

    python -m gpt_jax.sweep.lrscan --sweep=experiments/scaling_laws/sweep_cpu.py --parallel=2
    python -m gpt_jax.sweep run --sweep=experiments/scaling_laws/sweep_cpu.py --parallel=2
"""

import json
import os

from gpt_jax.sweep import Sweep
from gpt_jax.sweep.recipe import Recipe, WidthRule

HERE = os.path.dirname(os.path.abspath(__file__))
RULE = WidthRule(aspect=24, min_head_dim=16, min_layers=2)
WIDTHS = {budget: (16, 24, 32, 48, 64) for budget in (6e10, 1.25e11, 2.5e11, 5e11)} | {
    budget: (16, 24, 32, 48, 64, 80) for budget in (1e12, 2e12)}
# budget -> the widths that get seed 1: the two lowest losses of each profile's seed 0
SECOND_SEED = {6e10: (16, 24), 1.25e11: (16, 24), 2.5e11: (24, 32), 5e11: (24, 32), 1e12: (32, 48), 2e12: (48, 64)}
RECIPE = Recipe(batch_tokens=lambda shape: 512 if shape.d_model < 80 else 1024, b2=0.99, warmup_steps=150,
                warmup_fraction=0.05, learning_rate=os.path.join(HERE, 'results', 'lr_rule.json'),
                lr_grid=(2e-3, 4e-3, 8e-3, 1.6e-2), scan_fraction=5 / 3)
PREDICTION = os.path.join(HERE, 'results', 'prediction.json')


def widths() -> dict:
  """The budgets and their widths, with the verification run once results/prediction.json names it."""
  if not os.path.isfile(PREDICTION):
    return WIDTHS
  with open(PREDICTION, encoding='utf-8') as f:
    prediction = json.load(f)
  return WIDTHS | {prediction['budget_flops']: (prediction['d_model'],)}


def keep(run) -> bool:
  chosen = widths().get(run.flops_budget, ())
  if run.seed == 0:
    return run.shape.d_model in chosen
  return run.shape.d_model in SECOND_SEED.get(run.flops_budget, ())


def get_sweep():
  budgets = widths()
  return Sweep(
      name='scaling-cpu',
      config='configs/tiny.py:micro',
      root='experiments/scaling_laws/runs/cpu',
      shapes=[RULE(w) for w in sorted({w for ws in budgets.values() for w in ws})],
      flops=tuple(budgets),
      budget_params='model',
      seeds=(0, 1),
      recipe=RECIPE,
      overrides={'model.context': 128, 'model.local_window': 128, 'train.eval_every': 0,
                 'train.eval_batches': 1_000_000, 'train.log_every': 50, 'train.sample_tokens': 0,
                 'checkpoint.every_steps': 500},
      keep=keep,
  )
