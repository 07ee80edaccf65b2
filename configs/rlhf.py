"""Fine-tuning stages: --config=configs/rlhf.py:<stage>, stage in sft, classify, reward, dpo, ppo.

The model shape and tokenizer come from rlhf.init_from (the run the stage starts from); the shape below (the
tiny micro model) is used only for a random start. Batches are in tokens as everywhere: a row is one example
(SFT: one sequence; reward: rlhf.reward.max_responses sequences; DPO: a chosen and a rejected sequence; classify: one
sequence per text order or choice; PPO: one episode), so train.batch_tokens = rows x sequences per row x
the sequence length: model.context, or rlhf.seq_len when a stage needs fewer tokens than the model's context (the
batches below are written for model.context: pass --config.train.batch_tokens with seq_len, e.g. 16 x 48 for SFT
at rlhf.seq_len=48). PPO runs train.total_tokens / train.batch_tokens updates.
rlhf.epochs sets the run length; the schedule (2% warmup, cosine to 10% of peak) follows it.
Defaults suit the embedded toy task on a CPU; InstructGPT's values are in the comments.
"""

from gpt_jax.config import ConfigError, default_config

STAGES = ('sft', 'classify', 'reward', 'dpo', 'ppo')


def get_config(stage: str = 'sft'):
  if stage not in STAGES:
    raise ConfigError(f'unknown stage {stage!r}: use one of {", ".join(STAGES)} (e.g. --config=configs/rlhf.py:sft).')
  c = default_config()
  m, t, o, r = c.model, c.train, c.optim, c.rlhf
  m.n_layers, m.d_model, m.n_heads, m.context = 4, 128, 4, 128
  t.log_every, t.eval_every, t.sample_tokens = 20, 100, 0
  o.weight_decay = 0.0
  c.checkpoint.every_steps = 200
  if stage == 'sft':
    m.dropout_resid = 0.1  # InstructGPT: 0.2
    t.batch_tokens = 16 * m.context  # InstructGPT: 32 sequences
    o.peak_lr = 3e-4  # InstructGPT (1.3B/6B): 9.65e-6
    r.epochs = 4.0  # InstructGPT: 16
  elif stage == 'classify':
    r.data = 'toy:choice'
    t.batch_tokens = 8 * 4 * m.context  # 8 items x 4 choices
    o.peak_lr = 2e-4  # GPT-1: 6.25e-5 with batch 32, 3 epochs
    r.epochs = 3.0
  elif stage == 'reward':
    t.batch_tokens = 16 * r.reward.max_responses * m.context  # InstructGPT: 64 prompts
    o.peak_lr = 1e-4  # InstructGPT (6B): 9e-6
    r.epochs = 2.0  # InstructGPT: 1 (more overfits at scale)
  elif stage == 'dpo':
    t.batch_tokens = 16 * 2 * m.context
    o.peak_lr = 2e-5  # TRL: 1e-6 for billion-parameter models
    r.epochs = 2.0
  else:
    t.batch_tokens = 64 * m.context  # 64 episodes per update (InstructGPT: 512)
    t.total_tokens = 60 * t.batch_tokens  # 60 updates
    t.eval_every, t.eval_batches = 20, 2  # the policy's pretraining loss on data.source
    o.peak_lr, o.warmup_tokens, o.final_lr_fraction = 2e-5, 0, 1.0  # constant (InstructGPT: policy constant)
    o.clip = 0.0
    r.response_tokens, r.temperature = 8, 0.7  # LHP: 24 tokens at 0.7
    r.ppo.epochs, r.ppo.minibatches = 4, 4  # LHP: 4 x 1; InstructGPT: 1 x 8
    r.ppo.kl_coef = 0.05  # TRL: 0.05 fixed; InstructGPT: 0.02; LHP: 0.15 adaptive
    r.ppo.ptx_coef, r.ppo.ptx_rows = 1.0, 8  # InstructGPT: 27.8 with 8x the pretraining examples
    c.checkpoint.every_steps = 20
    t.log_every = 1  # every update; the KL alone is fetched between log steps
  return c
