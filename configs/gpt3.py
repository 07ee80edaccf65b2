"""GPT-3 (Brown et al. 2020): every row of Table 2.1 with the Appendix B training recipe.

Select a size with --config=configs/gpt3.py:<size>, size in 125m 350m 760m 1.3b 2.7b 6.7b 13b 175b (or the paper's
names small, medium, large, xl). Any field can then be overridden: --config.train.total_tokens=1000000000.

Two printed cells contradict their rows; each is decided from the parameter counts (tests/test_configs.py):
- XL (1.3B) is printed with 24 heads of 128, an attention width of 3072 in a 2048-wide model. With d_attn = 3072
  the model has 1.51B parameters (+16% over 1.3B); with n_heads * d_head = d_model = 2048 it has 1.32B (+1.2%).
  24 heads cannot tile 2048 with an integer head size, so the head count is the wrong cell: 16 heads of 128.
- 13B is printed with d_model 5140 and 40 heads of 128. 5140 is not divisible by 40 (or by any tensor / FSDP
  axis size of 8); 40 x 128 = 5120 is the width every other row's n_heads * d_head = d_model implies. Both widths
  give a count within 2% of 13.0B (5120: 12.85B; 5140: 12.93B), so the count cannot separate them; we take 5120,
  the width the other cells of the row imply and that shards evenly.
The band width of the locally banded layers is not given in the paper; we use 256 (Sparse Transformer's stride
for text was 128-256). Appendix B gives the batch ramp as "over the first 4-12B tokens depending on model size";
we ramp over 4B tokens for the smallest model growing to 12B for 175B.
"""

from gpt_jax.config import ConfigError, default_config

# name: (n_params as printed, n_layers, d_model, n_heads, d_head, batch tokens, learning rate, ramp tokens)
SIZES = {
    '125m': ('125M', 12, 768, 12, 64, 0.5e6, 6.0e-4, 4e9),
    '350m': ('350M', 24, 1024, 16, 64, 0.5e6, 3.0e-4, 4e9),
    '760m': ('760M', 24, 1536, 16, 96, 0.5e6, 2.5e-4, 5e9),
    '1.3b': ('1.3B', 24, 2048, 16, 128, 1e6, 2.0e-4, 6e9),  # printed 24 heads: see the module docstring
    '2.7b': ('2.7B', 32, 2560, 32, 80, 1e6, 1.6e-4, 7e9),
    '6.7b': ('6.7B', 32, 4096, 32, 128, 2e6, 1.2e-4, 8e9),
    '13b': ('13.0B', 40, 5120, 40, 128, 2e6, 1.0e-4, 10e9),  # printed d_model 5140: see the module docstring
    '175b': ('175.0B', 96, 12288, 96, 128, 3.2e6, 0.6e-4, 12e9),
}
ALIASES = {'small': '125m', 'medium': '350m', 'large': '760m', 'xl': '1.3b'}
PUBLISHED_PARAMS = {'125m': 125e6, '350m': 350e6, '760m': 760e6, '1.3b': 1.3e9, '2.7b': 2.7e9, '6.7b': 6.7e9,
                    '13b': 13.0e9, '175b': 175.0e9}
CONTEXT = 2048


def batch_tokens(printed: float) -> int:
  """The paper's batch sizes are round millions of tokens; in 2048-token sequences they are 2^k * 2048 (0.5M =
  256 sequences = 524,288 tokens) except 3.2M = 1536 sequences (3,145,728 tokens)."""
  return round(printed / CONTEXT / 256) * 256 * CONTEXT if printed < 3e6 else 1536 * CONTEXT


def get_config(size: str = '125m'):
  key = ALIASES.get(size.lower(), size.lower())
  if key not in SIZES:
    raise ConfigError(f'unknown GPT-3 size {size!r}: use one of {", ".join(list(SIZES) + list(ALIASES))} '
                      f'(e.g. --config=configs/gpt3.py:125m).')
  _, n_layers, d_model, n_heads, d_head, batch, lr, ramp = SIZES[key]
  c = default_config()
  m = c.model
  m.n_layers, m.d_model, m.n_heads, m.d_head = n_layers, d_model, n_heads, d_head
  m.d_ff = 4 * d_model
  m.vocab_size = 50257
  m.context = CONTEXT
  m.ln_placement = 'pre'
  m.attention = 'alternating'
  m.local_window = 256
  m.dtype = 'bfloat16'
  m.remat = 'save_dots'

  c.train.batch_tokens = batch_tokens(batch)
  c.train.total_tokens = 300_000_000_000
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.eval_batches = 20

  o = c.optim
  o.peak_lr = lr
  o.b1, o.b2, o.eps = 0.9, 0.95, 1e-8
  o.clip = 1.0
  o.weight_decay = 0.1
  o.warmup_tokens = 375_000_000
  o.decay_tokens = 260_000_000_000  # Appendix B; a shorter train.total_tokens needs its own (or None: the run)
  o.final_lr_fraction = 0.1
  o.ramp_start_tokens = 32 * 1024
  o.ramp_tokens = int(ramp)

  c.checkpoint.every_steps = 1000
  c.checkpoint.keep_every = 10_000
  # GPT-3 used GPT-2's 50257-token BPE: train a sentencepiece model of that size (python -m gpt_jax.data
  # train-tokenizer --config.data.source=<your corpus> --vocab_size=50257) and pass --config.data.tokenizer=<path>; training refuses a mismatch.
  c.data.tokenizer = 'byte'
  return c
