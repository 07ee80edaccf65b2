"""GPT-1 (Radford et al. 2018) as published: 12 post-LayerNorm blocks, d_model 768, 12 heads, FFN 3072, GELU,
learned positions, context 512, dropout 0.1, batch 64 x 512 tokens, Adam with max lr 2.5e-4 (warmup over the
first 2000 updates, cosine to 0), 100 epochs of BookCorpus. The BPE vocabulary had 40,000 merges (40,478 tokens).

--config=configs/gpt1.py
"""

from gpt_jax.config import default_config


def get_config():
  c = default_config()
  m = c.model
  m.n_layers, m.d_model, m.n_heads, m.d_ff = 12, 768, 12, 3072
  m.vocab_size = 40478
  m.context = 512
  m.ln_placement = 'post'
  m.attention = 'dense'
  m.dropout_embed = m.dropout_attn = m.dropout_resid = 0.1
  m.scale_residual_init = False  # GPT-1 used plain N(0, 0.02); the 1/sqrt(2L) scaling came with GPT-2
  c.train.batch_tokens = 64 * 512
  c.train.total_tokens = 100 * 800_000_000  # ~100 epochs of BookCorpus (~800M words); adjust to your corpus
  o = c.optim
  o.peak_lr = 2.5e-4
  o.warmup_tokens = 2000 * 64 * 512
  o.decay_tokens = None  # decay over the whole run, whatever train.total_tokens is set to
  o.final_lr_fraction = 0.0
  o.b2 = 0.999
  o.weight_decay = 0.01  # the paper's "modified L2 regularisation, w = 0.01, on all non bias or gain weights"
  return c
