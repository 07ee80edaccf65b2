"""Tiny GPTs for CPU: tests, laptop sweeps and the quick start (pre-LN, GPT-3-style, byte tokenizer by default).

--config=configs/tiny.py:<size>, size in nano (~0.1M params), micro (~0.8M, the quick-start default: a few
minutes on 2 CPU cores), mini (~3.3M), small (~11M). The name sets the shape; the recipe is the default scaled down, and
the schedule follows train.total_tokens (warmup 2%, cosine decay over the whole run) unless optim.* sets it.
"""

from gpt_jax.config import ConfigError, default_config

# name: (n_layers, d_model, n_heads, context, batch sequences, peak lr, total tokens)
SIZES = {
    'nano': (2, 64, 2, 64, 8, 3e-3, 500_000),
    'micro': (4, 128, 4, 128, 8, 2e-3, 2_000_000),
    'mini': (4, 256, 4, 256, 8, 1e-3, 5_000_000),
    'small': (6, 384, 6, 256, 16, 1e-3, 20_000_000),
}


def get_config(size: str = 'micro'):
  if size not in SIZES:
    raise ConfigError(f'unknown tiny size {size!r}: use one of {", ".join(SIZES)} (e.g. --config=configs/tiny.py:mini).')
  n_layers, d_model, n_heads, context, batch, lr, total = SIZES[size]
  c = default_config()
  m = c.model
  m.n_layers, m.d_model, m.n_heads, m.context = n_layers, d_model, n_heads, context
  m.local_window = context // 4
  c.train.batch_tokens = batch * context
  c.train.total_tokens = total
  c.train.log_every = 20
  c.train.eval_every = 250
  c.optim.peak_lr = lr
  c.checkpoint.every_steps = 200
  return c
