"""The one config tree: defaults with a comment per field, validation, and derived fields.

Every entry point and every file in configs/ starts from `default_config()` and changes only what it must.
`validate(config)` is called once at load; it fills the derived fields (d_head, d_ff, padded_vocab_size) and turns
every inconsistency into a `ConfigError` whose message is one sentence naming the field and the fix.
Schedules are in tokens, not steps, so a config keeps its meaning at any batch size or device count.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import math
import os
import re

import ml_collections

VOCAB_MULTIPLE = 128  # vocabulary padded to this so the vocab axis shards evenly over tensor (and TPU lanes)


class ConfigError(ValueError):
  """A config field is wrong; the message names the field and the fix."""


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = m = ml_collections.ConfigDict()
  m.n_layers = 2  # number of transformer blocks
  m.d_model = 64  # residual stream width
  m.n_heads = 2  # attention heads per layer
  m.d_head = ml_collections.FieldReference(None, field_type=int)  # per-head width; None -> d_model // n_heads
  m.d_ff = ml_collections.FieldReference(None, field_type=int)  # MLP hidden width; None -> 4 * d_model
  m.vocab_size = 258  # real vocabulary (byte tokenizer: 256 bytes + end-of-text + pad)
  m.padded_vocab_size = ml_collections.FieldReference(None, field_type=int)  # derived: vocab_size rounded up
  m.context = 128  # maximum sequence length (the learned position table's rows)
  m.positions = 'learned'  # 'learned' absolute position table (GPT-1/2/3) or 'rope' (rotary on queries and keys)
  m.ln_placement = 'pre'  # 'pre' (GPT-2/3: pre-LN blocks + final LN) or 'post' (GPT-1)
  m.ln_eps = 1e-5  # LayerNorm epsilon
  m.attention = 'dense'  # 'dense' causal, or 'alternating' dense / locally banded layers (GPT-3)
  m.local_window = 256  # band width of local layers: a query sees itself and the previous local_window - 1 keys
  m.attention_impl = 'xla'  # 'xla' (einsum softmax, default, CPU) or 'cudnn' (jax.nn.dot_product_attention)
  m.dropout_embed = 0.0  # dropout on token + position embeddings
  m.dropout_attn = 0.0  # dropout on attention probabilities
  m.dropout_resid = 0.0  # dropout on each residual branch output
  m.init_std = 0.02  # N(0, init_std) for all weights
  m.scale_residual_init = True  # GPT-2/3: residual output projections start at init_std / sqrt(2 * n_layers)
  m.tie_embeddings = True  # LM head reuses the token embedding matrix
  m.dtype = 'float32'  # compute dtype (bfloat16 on accelerators)
  m.param_dtype = 'float32'  # parameter storage dtype
  m.scan_layers = True  # stack blocks with nn.scan: compile time independent of depth
  m.remat = 'none'  # rematerialisation policy: 'none', 'full' or 'save_dots'

  c.data = d = ml_collections.ConfigDict()
  d.source = 'stdlib'  # 'stdlib' | 'tfds:<name>' | 'files:<glob>[,<glob>...]' | mixture 'src@weight;src@weight'
  d.data_dir = os.path.expanduser(os.environ.get('GPT_JAX_DATA_DIR', '~/gpt_jax_data'))  # prepared data
  d.text_field = 'text'  # field holding the text in JSONL files and tfds features
  d.tokenizer = 'byte'  # 'byte' or a path to a trained sentencepiece .model
  d.segment_ids = False  # emit segment ids so attention does not cross document boundaries
  d.seed = 0  # shuffling seed; the data order is a pure function of it

  c.train = t = ml_collections.ConfigDict()
  t.batch_tokens = 8 * 128  # global batch size in tokens (a multiple of model.context)
  t.microbatches = 1  # gradient accumulation steps per optimizer step
  t.total_tokens = 2_000_000  # training length in tokens
  t.log_every = 10  # steps between metric logs
  t.eval_every = 200  # steps between validation evaluations (0: never)
  t.eval_batches = 4  # validation batches per evaluation
  t.max_consecutive_skips = 20  # stop after this many non-finite steps in a row
  t.seed = 0  # parameter init and dropout seed
  t.sample_tokens = 200  # tokens of text sampled at the end of a run (0: none)
  t.wandb = False  # also log to Weights & Biases when the package is installed
  t.init_from = ''  # a run or export dir whose params start a new run (fresh optimizer and data order); '' = random

  c.optim = o = ml_collections.ConfigDict()
  o.peak_lr = 1e-3  # peak learning rate after warmup
  # Schedule lengths follow the run unless set: decay None -> train.total_tokens, warmup None -> decay / 50.
  o.warmup_tokens = ml_collections.FieldReference(None, field_type=int)  # linear warmup length in tokens
  o.decay_tokens = ml_collections.FieldReference(None, field_type=int)  # cosine decay end (counted from 0), then flat
  o.final_lr_fraction = 0.1  # cosine decays to this fraction of peak_lr
  o.b1 = 0.9  # Adam beta1
  o.b2 = 0.95  # Adam beta2
  o.eps = 1e-8  # Adam epsilon
  o.weight_decay = 0.1  # decoupled weight decay
  o.wd_mask = 'matrices'  # 'matrices' (kernels and embeddings), 'all' or 'none'
  o.clip = 1.0  # global-norm gradient clipping (0: off)
  o.ramp_start_tokens = 0  # batch-size ramp: starting global batch in tokens (0: no ramp)
  o.ramp_tokens = 0  # tokens over which the batch grows linearly to train.batch_tokens

  c.mesh = ms = ml_collections.ConfigDict()
  ms.data = 1  # data-parallel axis size within a slice
  ms.fsdp = -1  # FSDP axis size (-1: all remaining devices)
  ms.tensor = 1  # tensor-parallel axis size
  ms.dcn_data = 1  # data-parallel axis size across slices (DCN)
  ms.dcn_fsdp = 1  # FSDP axis size across slices (DCN)

  # Fine-tuning stages (gpt_jax.rlhf: sft, classify, reward, dpo, ppo); pretraining ignores this section. The fields
  # here are shared by every stage (data and sampling); each stage's own settings are in its subsection.
  c.rlhf = r = ml_collections.ConfigDict()
  r.init_from = ''  # run or export dir the stage starts from; its model shape and tokenizer are used; '' = random
  r.data = 'toy'  # training data: 'toy' (the embedded task), a .jsonl file, or 'tfds:<name>[:<split>]'
  r.eval_data = ''  # held-out data, same forms; '' -> the toy task's held-out items when data is 'toy', else none
  r.toy_items = 4000  # training items drawn from the toy task (its held-out items are never among them)
  r.epochs = 0.0  # > 0: train.total_tokens becomes epochs x the data's rows; 0: train.total_tokens as set
  r.max_prompt_tokens = 64  # prompts longer than this are cut from the left (and counted)
  r.seq_len = 0  # tokens per sequence of every stage's rows and PPO episodes (0: model.context); at most model.context
  r.skip_bad_lines = False  # skip and count malformed data lines instead of stopping at the first one
  r.response_tokens = 16  # most tokens sampled per response (reward normalisation samples, PPO rollouts)
  r.temperature = 1.0  # sampling temperature of those responses (PPO: old, new and reference log-probs use it too)

  r.sft = rs = ml_collections.ConfigDict()
  rs.pack = False  # pack several examples into each row, kept apart by segment ids
  rs.pretrain_mix = 0.0  # share of each batch's rows that are pretraining rows of data.source (all tokens; 0: off)
  rs.pretrain_weight = 1.0  # loss weight of a pretraining token against a response token's 1 (with pretrain_mix)

  r.classify = rc = ml_collections.ConfigDict()
  rc.lm_coef = 0.5  # GPT-1 fine-tuning: lambda of the auxiliary LM loss, L3 = L2 + lambda * L1 (0: off)

  r.reward = rr = ml_collections.ConfigDict()
  rr.max_responses = 4  # response slots per prompt (rankings of K = 2..max_responses)
  rr.norm_samples = 256  # reference-policy samples that set the score gain and bias (0: no sampling)

  r.dpo = rd = ml_collections.ConfigDict()
  rd.beta = 0.1  # strength of the implicit KL constraint to the reference policy
  rd.loss = 'sigmoid'  # 'sigmoid', 'hinge', 'ipo' or 'robust' (label-smoothed sigmoid)
  rd.label_smoothing = 0.0  # 'robust' / 'sigmoid': assumed fraction of flipped preference labels
  rd.nll_coef = 0.0  # weight of an NLL term on the chosen responses (0: off)
  rd.precompute_ref = False  # score the data with the reference once, then train without it in memory

  # PPO (gpt_jax.rlhf.ppo): train.batch_tokens / model.context episodes per update, train.total_tokens the length.
  r.ppo = rp = ml_collections.ConfigDict()
  rp.policy_from = ''  # the SFT run the policy and the reference start from
  rp.reward_from = ''  # the reward-model run that scores responses (with its reward_norm.json)
  rp.value_from = 'policy'  # value network: 'policy' (SFT trunk, zero head) or 'reward' (the reward model)
  rp.epochs = 4  # passes over each update's episodes
  rp.minibatches = 1  # minibatches per pass (each one optimizer step)
  rp.kl_coef = 0.05  # initial beta of the per-token KL penalty to the reference
  rp.kl_target = 0.0  # adaptive beta's target KL per episode (0: beta stays fixed)
  rp.kl_horizon = 10000  # adaptive beta's horizon in episodes
  rp.gamma = 1.0  # discount
  rp.lam = 0.95  # GAE lambda
  rp.ratio_clip = 0.2  # policy ratio clip epsilon
  rp.value_clip = 0.2  # value clip epsilon
  rp.value_coef = 0.1  # weight of the value loss
  rp.whiten_rewards = False  # whiten per-token rewards (mean kept) before GAE
  rp.missing_eos_penalty = 1.0  # subtracted from the score of a response with no EOS
  rp.ptx_source = ''  # PPO-ptx: pretraining data (a data.source spec, e.g. 'stdlib'); '' = plain PPO
  rp.ptx_coef = 1.0  # PPO-ptx: gamma, the weight of the pretraining loss in every minibatch
  rp.ptx_rows = 8  # PPO-ptx: pretraining sequences per minibatch
  rp.frozen_dtype = 'float32'  # dtype of the reference and reward params ('bfloat16' halves their memory)
  rp.sample_every = 10  # updates between tables of sample prompts and responses (0: never)

  c.checkpoint = ck = ml_collections.ConfigDict()
  ck.every_steps = 100  # save every N steps (and at the end, and on SIGTERM)
  ck.keep = 3  # keep the last K checkpoints
  ck.keep_every = 0  # also keep every M-th step forever (0: none)
  ck.use_async = True  # save asynchronously while training continues
  return c


def _fail(msg: str):
  raise ConfigError(msg)


def _get(config, path: str):
  """config['a.b.c'] for a dotted path."""
  node = config
  for part in path.split('.'):
    node = node[part]
  return node


def _choice(config, path: str, allowed):
  value = _get(config, path)
  if value not in allowed:
    _fail(f'{path}={value!r} is not valid: use one of {", ".join(map(repr, allowed))}.')


def _number(config, path: str, *, low, high=None, low_open=False, high_open=False, integer=False, hint: str = ''):
  """Fails unless config[path] is a number (an integer when asked) from low up to high (open or closed ends)."""
  value = _get(config, path)
  typed = (isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
           and math.isfinite(value))
  ok = typed and (value > low if low_open else value >= low)
  ok = ok and (high is None or (value < high if high_open else value <= high))
  if not ok:
    if high is None:
      bound = f'{"greater than" if low_open else "at least"} {low}'
    else:
      bound = f'in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    kind = '' if typed else ('an integer ' if integer else 'a number ')
    _fail(f'{path}={value!r} must be {kind}{bound}{hint}.')


def _flag(config, path: str):
  if not isinstance(_get(config, path), bool):
    _fail(f'{path}={_get(config, path)!r} must be True or False.')


def _path(config, path: str):
  if not isinstance(_get(config, path), str):
    _fail(f'{path}={_get(config, path)!r} must be a path or empty.')


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every field, fills derived fields in place (model.d_head, d_ff, padded_vocab_size; optim.warmup_tokens
  and decay_tokens when None) and returns config. A wrong field is a ConfigError of one sentence naming it."""
  _validate_model(config)
  _validate_data(config)
  _validate_train(config)
  _validate_optim(config)
  _validate_mesh(config)
  _validate_checkpoint(config)
  _validate_rlhf(config)
  return config


def _validate_model(config) -> None:
  m = config.model
  for name in ('n_layers', 'd_model', 'n_heads', 'vocab_size', 'context'):
    if not isinstance(m[name], int) or m[name] < 1:
      _fail(f'model.{name}={m[name]!r} must be a positive integer.')
  if m.d_head is None:
    if m.d_model % m.n_heads:
      _fail(f'model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}: '
            f'change one of them or set model.d_head explicitly.')
    m.d_head = m.d_model // m.n_heads
  elif m.d_head < 1:
    _fail(f'model.d_head={m.d_head} must be a positive integer (or None for d_model // n_heads).')
  if m.d_ff is None:
    m.d_ff = 4 * m.d_model
  elif m.d_ff < 1:
    _fail(f'model.d_ff={m.d_ff} must be a positive integer (or None for 4 * d_model).')
  m.padded_vocab_size = -(-m.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
  _choice(config, 'model.ln_placement', ('pre', 'post'))
  _choice(config, 'model.attention', ('dense', 'alternating'))
  _choice(config, 'model.attention_impl', ('xla', 'cudnn'))
  _choice(config, 'model.positions', ('learned', 'rope'))
  if m.positions == 'rope' and m.d_head % 2:
    _fail(f"model.positions='rope' rotates pairs of head dimensions: model.d_head={m.d_head} must be even.")
  _choice(config, 'model.remat', ('none', 'full', 'save_dots'))
  _choice(config, 'model.dtype', ('float32', 'bfloat16', 'float16'))
  _choice(config, 'model.param_dtype', ('float32', 'bfloat16'))
  _number(config, 'model.local_window', low=1, integer=True, hint=' (the query itself)')
  _number(config, 'model.ln_eps', low=0, low_open=True)
  _number(config, 'model.init_std', low=0, low_open=True)
  for name in ('dropout_embed', 'dropout_attn', 'dropout_resid'):
    _number(config, f'model.{name}', low=0.0, high=1.0, high_open=True)
  for name in ('scale_residual_init', 'tie_embeddings', 'scan_layers'):
    _flag(config, f'model.{name}')
  if m.attention_impl == 'cudnn' and m.dropout_attn > 0:
    _fail(f'model.attention_impl=\'cudnn\' has no attention dropout: set model.dropout_attn=0 (it is '
          f'{m.dropout_attn}) or use model.attention_impl=\'xla\'.')
  if m.attention_impl == 'cudnn' and m.dtype == 'float32':
    _fail("model.attention_impl='cudnn' needs model.dtype='bfloat16' (or 'float16'): cuDNN attention has no "
          "float32 kernel.")


def _validate_data(config) -> None:
  d = config.data
  for name in ('source', 'data_dir', 'text_field', 'tokenizer'):
    if not isinstance(d[name], str) or not d[name].strip():
      _fail(f'data.{name}={d[name]!r} must be a non-empty string.')
  _flag(config, 'data.segment_ids')
  _number(config, 'data.seed', low=0, integer=True)


def _validate_train(config) -> None:
  m, t = config.model, config.train
  # A fine-tuning stage's sequences are rlhf.seq_len long when it is set (a wrong one is refused by _validate_rlhf).
  fits = isinstance(config.rlhf.seq_len, int) and 0 < config.rlhf.seq_len <= m.context
  length, name = (config.rlhf.seq_len, 'rlhf.seq_len') if fits else (m.context, 'model.context')
  if t.batch_tokens < length or t.batch_tokens % length:
    _fail(f'train.batch_tokens={t.batch_tokens} must be a positive multiple of {name}={length}.')
  if t.microbatches < 1 or (t.batch_tokens // length) % t.microbatches:
    _fail(f'train.microbatches={t.microbatches} must divide the batch of {t.batch_tokens // length} sequences.')
  for name in ('log_every', 'max_consecutive_skips'):
    _number(config, f'train.{name}', low=1, integer=True)
  for name in ('eval_every', 'eval_batches', 'seed', 'sample_tokens'):
    _number(config, f'train.{name}', low=0, integer=True)
  _flag(config, 'train.wandb')
  if not isinstance(t.init_from, str):
    _fail(f'train.init_from={t.init_from!r} must be a path (a run or export_params directory) or empty.')
  if t.total_tokens < t.batch_tokens:
    _fail(f'train.total_tokens={t.total_tokens} is smaller than one batch (train.batch_tokens={t.batch_tokens}).')


def _validate_optim(config) -> None:
  m, t, o = config.model, config.train, config.optim
  _number(config, 'optim.peak_lr', low=0.0, low_open=True, hint=': a learning rate of 0 or less does not train')
  _number(config, 'optim.final_lr_fraction', low=0.0, high=1.0)
  for name in ('b1', 'b2'):
    _number(config, f'optim.{name}', low=0.0, high=1.0, high_open=True)
  _number(config, 'optim.eps', low=0.0, low_open=True)
  _number(config, 'optim.weight_decay', low=0.0)
  _number(config, 'optim.clip', low=0.0, hint=' (0 turns clipping off)')
  _choice(config, 'optim.wd_mask', ('matrices', 'all', 'none'))
  if o.decay_tokens is None:
    o.decay_tokens = t.total_tokens
  if o.warmup_tokens is None:
    o.warmup_tokens = o.decay_tokens // 50
  _number(config, 'optim.warmup_tokens', low=0, integer=True)
  _number(config, 'optim.decay_tokens', low=0, integer=True)
  if o.decay_tokens < o.warmup_tokens:
    _fail(f'optim.decay_tokens={o.decay_tokens} is shorter than optim.warmup_tokens={o.warmup_tokens}: the cosine '
          f'decay ends at decay_tokens, counted from the start of training.')
  _number(config, 'optim.ramp_tokens', low=0, integer=True)
  if o.ramp_start_tokens and not m.context <= o.ramp_start_tokens <= t.batch_tokens:
    _fail(f'optim.ramp_start_tokens={o.ramp_start_tokens} must lie between model.context={m.context} '
          f'and train.batch_tokens={t.batch_tokens} (or be 0 for no ramp).')


def _validate_mesh(config) -> None:
  m, ms = config.model, config.mesh
  for name in ('data', 'fsdp', 'tensor', 'dcn_data', 'dcn_fsdp'):
    if not isinstance(ms[name], int) or ms[name] == 0 or ms[name] < -1:
      _fail(f'mesh.{name}={ms[name]} must be a positive integer or -1 (inferred from the device count).')
  if [ms.data, ms.fsdp, ms.tensor].count(-1) > 1:
    _fail('mesh: at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1.')
  if ms.tensor > 0 and m.n_heads % ms.tensor:
    _fail(f'model.n_heads={m.n_heads} is not divisible by mesh.tensor={ms.tensor}: '
          f'choose a tensor-parallel size that divides the head count.')


def _validate_checkpoint(config) -> None:
  for name in ('every_steps', 'keep'):
    _number(config, f'checkpoint.{name}', low=1, integer=True)
  _number(config, 'checkpoint.keep_every', low=0, integer=True, hint=' (0: none)')
  _flag(config, 'checkpoint.use_async')


def _validate_rlhf(config) -> None:
  r = config.rlhf
  for path in ('rlhf.init_from', 'rlhf.eval_data', 'rlhf.ppo.policy_from', 'rlhf.ppo.reward_from',
               'rlhf.ppo.ptx_source'):
    _path(config, path)
  if not isinstance(r.data, str) or not r.data.strip():
    _fail(f"rlhf.data={r.data!r} must be 'toy', a .jsonl file or 'tfds:<name>[:<split>]'.")
  _number(config, 'rlhf.toy_items', low=1, integer=True)
  _number(config, 'rlhf.epochs', low=0.0, hint=' (0: train.total_tokens decides)')
  _number(config, 'rlhf.max_prompt_tokens', low=1, integer=True)
  _number(config, 'rlhf.seq_len', low=0, integer=True, hint=' (0: model.context)')
  if r.seq_len > config.model.context:
    _fail(f'rlhf.seq_len={r.seq_len} is longer than model.context={config.model.context}: make it at most '
          f'{config.model.context} (0: model.context).')
  _number(config, 'rlhf.sft.pretrain_mix', low=0.0, high=1.0, high_open=True, hint=' (0: off)')
  _number(config, 'rlhf.sft.pretrain_weight', low=0.0, low_open=True)
  if r.sft.pretrain_weight != 1.0 and not r.sft.pretrain_mix:
    _fail(f'rlhf.sft.pretrain_weight={r.sft.pretrain_weight} weighs the pretraining rows that rlhf.sft.pretrain_mix '
          f'puts in SFT batches, and it is 0: set rlhf.sft.pretrain_mix too, for example to 0.25.')
  _number(config, 'rlhf.response_tokens', low=1, integer=True)
  _number(config, 'rlhf.temperature', low=0.0, low_open=True)
  for path in ('rlhf.skip_bad_lines', 'rlhf.sft.pack', 'rlhf.dpo.precompute_ref', 'rlhf.ppo.whiten_rewards'):
    _flag(config, path)
  _number(config, 'rlhf.classify.lm_coef', low=0.0)
  _number(config, 'rlhf.reward.max_responses', low=2, high=9, integer=True)
  _number(config, 'rlhf.reward.norm_samples', low=0, integer=True)
  _number(config, 'rlhf.dpo.beta', low=0.0, low_open=True)
  _choice(config, 'rlhf.dpo.loss', ('sigmoid', 'hinge', 'ipo', 'robust'))
  _number(config, 'rlhf.dpo.label_smoothing', low=0.0, high=0.5, high_open=True)
  _number(config, 'rlhf.dpo.nll_coef', low=0.0)
  _choice(config, 'rlhf.ppo.value_from', ('policy', 'reward'))
  _choice(config, 'rlhf.ppo.frozen_dtype', ('float32', 'bfloat16'))
  for name in ('epochs', 'minibatches', 'kl_horizon', 'ptx_rows'):
    _number(config, f'rlhf.ppo.{name}', low=1, integer=True)
  _number(config, 'rlhf.ppo.kl_coef', low=0.0, hint=' (0: no KL penalty)')
  for name in ('kl_target', 'missing_eos_penalty', 'ptx_coef', 'value_coef'):
    _number(config, f'rlhf.ppo.{name}', low=0.0)
  for name in ('gamma', 'lam'):
    _number(config, f'rlhf.ppo.{name}', low=0.0, high=1.0)
  for name in ('ratio_clip', 'value_clip'):
    _number(config, f'rlhf.ppo.{name}', low=0.0, low_open=True)
  _number(config, 'rlhf.ppo.sample_every', low=0, integer=True)


# Fields that moved into the rlhf stage subsections, old dotted name -> new. A config.json written before the move
# is read through it (migrate); an old --config.<name> override is refused with the new name (_parent).
MOVED = {
    'rlhf.pack': 'rlhf.sft.pack', 'rlhf.lm_coef': 'rlhf.classify.lm_coef',
    'rlhf.max_responses': 'rlhf.reward.max_responses', 'rlhf.norm_samples': 'rlhf.reward.norm_samples',
    'rlhf.dpo_loss': 'rlhf.dpo.loss', 'rlhf.ppo_epochs': 'rlhf.ppo.epochs', 'rlhf.clip': 'rlhf.ppo.ratio_clip',
    **{f'rlhf.{name}': f'rlhf.dpo.{name}' for name in ('beta', 'label_smoothing', 'nll_coef', 'precompute_ref')},
    **{f'rlhf.{name}': f'rlhf.ppo.{name}' for name in (
        'policy_from', 'reward_from', 'value_from', 'minibatches', 'kl_coef', 'kl_target', 'kl_horizon', 'gamma',
        'lam', 'value_clip', 'value_coef', 'whiten_rewards', 'missing_eos_penalty', 'ptx_source', 'ptx_coef',
        'ptx_rows', 'frozen_dtype', 'sample_every')},
}


def migrate(tree: dict) -> dict:
  """A config tree as config.json holds it (nested plain dicts), with the fields of MOVED put at their new places
  (in place; returned)."""
  for old, new in MOVED.items():
    section, name = old.split('.')
    if name in tree.get(section, {}):
      value = tree[section].pop(name)
      *parents, leaf = new.split('.')
      node = tree
      for part in parents:
        node = node.setdefault(part, {})
      node[leaf] = value
  return tree


def load_config_file(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Loads 'path/to/file.py[:arg]', applies {'model.d_model': 128, ...} overrides and validates.

  The same thing the entry points' --config flag does, for tests, notebooks and sweeps.
  """
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    _fail(f'config file {path!r} does not exist: pass --config=configs/<file>.py[:<size>].')
  module_spec = importlib.util.spec_from_file_location('_gpt_jax_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for key, value in (overrides or {}).items():
    apply_override(config, key, value)
  return validate(config)


def apply_override(config: ml_collections.ConfigDict, key: str, value) -> None:
  """Sets config[key] for a dotted key, refusing keys that do not exist (typos) with a suggestion."""
  parent, name = _parent(config, key, value)
  if isinstance(value, float) and value.is_integer() and parent.get_type(name) is int:
    value = int(value)  # token counts written as 1e6 or 2.5e9
  try:
    parent[name] = value
  except TypeError as error:
    _fail(f'{key}={value!r} has the wrong type ({str(error).splitlines()[0]}): give a {type(parent[name]).__name__}.')


def _parent(config: ml_collections.ConfigDict, key: str, value=None):
  """(node holding the last part of the dotted key, last part); a ConfigError if any part does not exist (for a
  moved field, one that names its new place, with the override's value when given)."""
  if key in MOVED:
    _fail(f'{key} is now {MOVED[key]}: pass --config.{MOVED[key]}{"" if value is None else f"={value}"}.')
  node, parts = config, key.split('.')
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      here = '.'.join(parts[:i])
      options = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, options, n=1, cutoff=0.75)
      hint = f'did you mean {".".join(parts[:i] + close)!r}?' if close else (
          f'valid keys{" under " + here if here else ""}: {", ".join(options)}.')
      _fail(f'unknown config key {key!r}: {hint}')
    if i < len(parts) - 1:
      node = node[part]
  return node, parts[-1]


def check_key(config: ml_collections.ConfigDict, key: str, value=None) -> None:
  """A ConfigError naming the closest valid key (or a moved field's new place) when the dotted key does not exist
  in config."""
  _parent(config, key, value)


def describe(config: ml_collections.ConfigDict) -> str:
  """Every field as `section.field = value  # its comment in default_config()`, one per line (subsections as
  `section.subsection.field`)."""
  source = inspect.getsource(default_config)
  paths = {'c': ''}
  for parent, name, var in re.findall(r'^\s*(\w+)\.(\w+) = (\w+) = ml_collections', source, re.M):
    paths[var] = f'{paths[parent]}.{name}'.lstrip('.')
  comments = {f'{paths[var]}.{name}': comment
              for var, name, comment in re.findall(r'^\s*(\w+)\.(\w+) = .*?#\s*(.*)$', source, re.M)
              if var in paths}
  return '\n'.join(f'{path} = {value!r}' + (f'  # {comments[path]}' if path in comments else '')
                   for path, value in leaves(config))


def leaves(node: ml_collections.ConfigDict, prefix: str = ''):
  """(dotted path, value) of every field under node, subsections flattened."""
  for name, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, f'{prefix}{name}.')
    else:
      yield f'{prefix}{name}', value


def smoke_size(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The same architecture (layers, width, heads, attention, dtypes) as a run of a few steps that fits any
  machine: the byte tokenizer's vocabulary when data.tokenizer is 'byte', context at most 256, 8-row batches
  without accumulation or ramp, 4 steps with evaluation and checkpoints, a schedule that follows the run."""
  c = config.copy_and_resolve_references()
  m, t, o = c.model, c.train, c.optim
  if c.data.tokenizer == 'byte':
    m.vocab_size = 258
  m.context = min(m.context, 256)
  m.local_window = min(m.local_window, m.context)
  t.batch_tokens = 8 * m.context
  t.microbatches = 1
  t.total_tokens = 4 * t.batch_tokens
  t.log_every, t.eval_every, t.eval_batches, t.sample_tokens = 1, 2, 1, 32
  o.warmup_tokens, o.decay_tokens, o.ramp_start_tokens, o.ramp_tokens = None, None, 0, 0
  c.checkpoint.every_steps = 2
  return validate(c)
