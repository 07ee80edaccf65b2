"""GPT-2 (Radford et al. 2019): the four released sizes with pre-LayerNorm blocks, a final LayerNorm, context 1024.

--config=configs/gpt2.py:<size>, size in small (124M), medium (355M), large (774M), xl (1558M). The training
recipe is not published; the optimizer fields are GPT-3's for the nearest size.
"""

from gpt_jax.config import ConfigError, default_config

# name: (n_layers, d_model, n_heads, peak learning rate)
SIZES = {
    'small': (12, 768, 12, 6.0e-4),
    'medium': (24, 1024, 16, 3.0e-4),
    'large': (36, 1280, 20, 2.5e-4),
    'xl': (48, 1600, 25, 2.0e-4),
}
ALIASES = {'124m': 'small', '355m': 'medium', '774m': 'large', '1558m': 'xl', '1.5b': 'xl'}
PUBLISHED_PARAMS = {'small': 124e6, 'medium': 355e6, 'large': 774e6, 'xl': 1558e6}


def get_config(size: str = 'small'):
  key = ALIASES.get(size.lower(), size.lower())
  if key not in SIZES:
    raise ConfigError(f'unknown GPT-2 size {size!r}: use one of {", ".join(list(SIZES) + list(ALIASES))} '
                      f'(e.g. --config=configs/gpt2.py:small).')
  n_layers, d_model, n_heads, lr = SIZES[key]
  c = default_config()
  m = c.model
  m.n_layers, m.d_model, m.n_heads = n_layers, d_model, n_heads
  m.vocab_size = 50257
  m.context = 1024
  m.ln_placement = 'pre'
  m.attention = 'dense'
  m.dropout_embed = m.dropout_attn = m.dropout_resid = 0.1
  c.train.batch_tokens = 512 * 1024
  c.train.total_tokens = 100_000_000_000
  c.optim.peak_lr = lr
  c.optim.warmup_tokens = 375_000_000
  c.optim.decay_tokens = None  # decay over the whole run (train.total_tokens)
  return c
