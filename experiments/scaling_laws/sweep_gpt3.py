"""The GPT-3 ladder (Brown et al. 2020, Table 2.1: 125M to 175B) as a sweep for GPU clusters and TPU pods, on the
same recipe machinery as the CPU sweep (gpt_jax.sweep.recipe): each size's batch and learning rate from Table 2.1
(the learning rate is per size, as in the paper), warmup over 375M tokens (at most half of a short run), cosine
decay to 10% over 260/300 of the budget, the batch ramped from 32k tokens, and every run's real model FLOPs and
FLOP-equivalent size recorded.

    python -m gpt_jax.sweep slurm --sweep=experiments/scaling_laws/sweep_gpt3.py --output=gpt3.sh --check
    python -m gpt_jax.sweep tpu --sweep=experiments/scaling_laws/sweep_gpt3.py --output=gpt3_tpu.sh \
        --tpu=<name> --zone=<zone>

GPT_JAX_SWEEP_TOKENS (default 300e9, the paper's) sets every size's token budget; GPT_JAX_SWEEP_FLOPS (e.g.
1e20,1e21) instead gives budgets in real model FLOPs (flops_per_token x tokens), each size getting the tokens its
FLOPs per token allow, the start of IsoFLOP profiles. GPT_JAX_SWEEP_ROOT sets where the workdirs go (storage every
worker sees). GPT-3 used GPT-2's 50257-token BPE: pass a tokenizer of that size in Sweep.overrides (data.tokenizer)
and the corpus in data.source before launching.
"""

import os

from gpt_jax import config as gcfg
from gpt_jax.sweep import Resources, Shape, Sweep
from gpt_jax.sweep.recipe import Recipe

SIZES = ('125m', '350m', '760m', '1.3b', '2.7b', '6.7b', '13b', '175b')
TOKENS = int(float(os.environ.get('GPT_JAX_SWEEP_TOKENS', '300e9')))
FLOPS = tuple(float(x) for x in os.environ.get('GPT_JAX_SWEEP_FLOPS', '').split(',') if x)


def size_config(size: str):
  return gcfg.load_config_file(f'configs/gpt3.py:{size}')


CONFIGS = {size: size_config(size) for size in SIZES}
BY_SHAPE = {Shape(c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.d_head): c for c in CONFIGS.values()}
RECIPE = Recipe(batch_tokens=lambda shape: BY_SHAPE[shape].train.batch_tokens, warmup_tokens=375_000_000)


def table_2_1(shape: Shape) -> dict:
  """The row's learning rate and batch-ramp length."""
  c = BY_SHAPE[shape]
  return {'optim.peak_lr': c.optim.peak_lr, 'optim.ramp_tokens': c.optim.ramp_tokens}


def appendix_b(tokens: int) -> dict:
  """Cosine decay over 260/300 of the budget."""
  return {'optim.decay_tokens': tokens * 260 // 300}


# size: (H100 nodes of 8, remat, microbatches), the settings that fit in docs/dryrun.md's GPT-3 ladder table, FSDP
# over every GPU of the run's nodes; `sweep slurm --check` compiles them again before submitting.
H100 = {'125m': (1, 'save_dots', 1), '350m': (1, 'save_dots', 1), '760m': (1, 'save_dots', 1),
        '1.3b': (1, 'save_dots', 4), '2.7b': (2, 'save_dots', 2), '6.7b': (4, 'save_dots', 4),
        '13b': (8, 'save_dots', 4), '175b': (64, 'full', 1)}
SIZE_OF = {shape: size for size, shape in zip(SIZES, BY_SHAPE)}


def on_h100(shape: Shape) -> Resources:
  nodes, remat, microbatches = H100[SIZE_OF[shape]]
  return Resources(nodes=nodes, gpus_per_node=8, gpu='h100', time='2-00:00:00',
                   overrides={'mesh.data': 1, 'mesh.fsdp': -1, 'mesh.tensor': 1, 'model.remat': remat,
                              'train.microbatches': microbatches})


def get_sweep():
  return Sweep(
      name='gpt3-ladder',
      config='configs/gpt3.py:125m',
      root=os.environ.get('GPT_JAX_SWEEP_ROOT', 'experiments/scaling_laws/runs/gpt3'),
      shapes=list(BY_SHAPE),
      tokens=() if FLOPS else (TOKENS,),
      flops=FLOPS,
      budget_params='model',
      recipe=RECIPE,
      per_shape=table_2_1,
      schedule=appendix_b,
      resources=on_h100,
  )
