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

  # Fine-tuning stages (gpt_jax.rlhf: sft, classify, reward, dpo); pretraining ignores this section.
  c.rlhf = r = ml_collections.ConfigDict()
  r.init_from = ''  # run or export dir the stage starts from; its model shape and tokenizer are used; '' = random
  r.data = 'toy'  # training data: 'toy' (the embedded task), a .jsonl file, or 'tfds:<name>[:<split>]'
  r.eval_data = ''  # held-out data, same forms; '' -> the toy task's held-out items when data is 'toy', else none
  r.toy_items = 4000  # training items drawn from the toy task (its held-out items are never among them)
  r.epochs = 0.0  # > 0: train.total_tokens becomes epochs x the data's rows; 0: train.total_tokens as set
  r.max_prompt_tokens = 64  # prompts longer than this are cut from the left (and counted)
  r.skip_bad_lines = False  # skip and count malformed data lines instead of stopping at the first one
  r.pack = False  # SFT: pack several examples into each row, kept apart by segment ids
  r.max_responses = 4  # reward model: response slots per prompt (rankings of K = 2..max_responses)
  r.lm_coef = 0.5  # GPT-1 fine-tuning: lambda of the auxiliary LM loss, L3 = L2 + lambda * L1 (0: off)
  r.beta = 0.1  # DPO: strength of the implicit KL constraint to the reference policy
  r.dpo_loss = 'sigmoid'  # DPO loss: 'sigmoid', 'hinge', 'ipo' or 'robust' (label-smoothed sigmoid)
  r.label_smoothing = 0.0  # DPO 'robust' / 'sigmoid': assumed fraction of flipped preference labels
  r.nll_coef = 0.0  # DPO: weight of an NLL term on the chosen responses (0: off)
  r.precompute_ref = False  # DPO: score the data with the reference once, then train without it in memory
  r.norm_samples = 256  # reward model: reference-policy samples that set the score gain and bias (0: no sampling)
  r.response_tokens = 16  # most tokens sampled per response (reward normalisation samples, PPO rollouts)
  r.temperature = 1.0  # sampling temperature of those responses (PPO: old, new and reference log-probs use it too)
  # PPO (gpt_jax.rlhf.ppo): train.batch_tokens / model.context episodes per update, train.total_tokens the length.
  r.policy_from = ''  # PPO: the SFT run the policy and the reference start from
  r.reward_from = ''  # PPO: the reward-model run that scores responses (with its reward_norm.json)
  r.value_from = 'policy'  # PPO value network: 'policy' (SFT trunk, zero head) or 'reward' (the reward model)
  r.ppo_epochs = 4  # PPO: passes over each update's episodes
  r.minibatches = 1  # PPO: minibatches per pass (each one optimizer step)
  r.kl_coef = 0.05  # PPO: initial beta of the per-token KL penalty to the reference
  r.kl_target = 0.0  # PPO: adaptive beta's target KL per episode (0: beta stays fixed)
  r.kl_horizon = 10000  # PPO: adaptive beta's horizon in episodes
  r.gamma = 1.0  # PPO: discount
  r.lam = 0.95  # PPO: GAE lambda
  r.clip = 0.2  # PPO: policy ratio clip epsilon
  r.value_clip = 0.2  # PPO: value clip epsilon
  r.value_coef = 0.1  # PPO: weight of the value loss
  r.whiten_rewards = False  # PPO: whiten per-token rewards (mean kept) before GAE
  r.missing_eos_penalty = 1.0  # PPO: subtracted from the score of a response with no EOS
  r.ptx_source = ''  # PPO-ptx: pretraining data (a data.source spec, e.g. 'stdlib'); '' = plain PPO
  r.ptx_coef = 1.0  # PPO-ptx: gamma, the weight of the pretraining loss in every minibatch
  r.ptx_rows = 8  # PPO-ptx: pretraining sequences per minibatch
  r.frozen_dtype = 'float32'  # PPO: dtype of the reference and reward params ('bfloat16' halves their memory)
  r.sample_every = 10  # PPO: updates between tables of sample prompts and responses (0: never)

  c.checkpoint = ck = ml_collections.ConfigDict()
  ck.every_steps = 100  # save every N steps (and at the end, and on SIGTERM)
  ck.keep = 3  # keep the last K checkpoints
  ck.keep_every = 0  # also keep every M-th step forever (0: none)
  ck.use_async = True  # save asynchronously while training continues
  return c


def _fail(msg: str):
  raise ConfigError(msg)


def _choice(config, path: str, allowed):
  section, name = path.split('.')
  value = config[section][name]
  if value not in allowed:
    _fail(f'{path}={value!r} is not valid: use one of {", ".join(map(repr, allowed))}.')


def _number(config, path: str, *, low, high=None, low_open=False, high_open=False, integer=False, hint: str = ''):
  """Fails unless config[path] is a number (an integer when asked) from low up to high (open or closed ends)."""
  section, name = path.split('.')
  value = config[section][name]
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
  section, name = path.split('.')
  if not isinstance(config[section][name], bool):
    _fail(f'{path}={config[section][name]!r} must be True or False.')


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
  if t.batch_tokens < m.context or t.batch_tokens % m.context:
    _fail(f'train.batch_tokens={t.batch_tokens} must be a positive multiple of model.context={m.context}.')
  if t.microbatches < 1 or (t.batch_tokens // m.context) % t.microbatches:
    _fail(f'train.microbatches={t.microbatches} must divide the batch of {t.batch_tokens // m.context} sequences.')
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
  for name in ('init_from', 'eval_data'):
    if not isinstance(r[name], str):
      _fail(f'rlhf.{name}={r[name]!r} must be a path or empty.')
  if not isinstance(r.data, str) or not r.data.strip():
    _fail(f"rlhf.data={r.data!r} must be 'toy', a .jsonl file or 'tfds:<name>[:<split>]'.")
  _number(config, 'rlhf.toy_items', low=1, integer=True)
  _number(config, 'rlhf.epochs', low=0.0, hint=' (0: train.total_tokens decides)')
  _number(config, 'rlhf.max_prompt_tokens', low=1, integer=True)
  _number(config, 'rlhf.max_responses', low=2, high=9, integer=True)
  _number(config, 'rlhf.lm_coef', low=0.0)
  _number(config, 'rlhf.beta', low=0.0, low_open=True)
  _choice(config, 'rlhf.dpo_loss', ('sigmoid', 'hinge', 'ipo', 'robust'))
  _number(config, 'rlhf.label_smoothing', low=0.0, high=0.5, high_open=True)
  _number(config, 'rlhf.nll_coef', low=0.0)
  _number(config, 'rlhf.norm_samples', low=0, integer=True)
  _number(config, 'rlhf.response_tokens', low=1, integer=True)
  _number(config, 'rlhf.temperature', low=0.0, low_open=True)
  for name in ('skip_bad_lines', 'pack', 'precompute_ref', 'whiten_rewards'):
    _flag(config, f'rlhf.{name}')
  for name in ('policy_from', 'reward_from', 'ptx_source'):
    if not isinstance(r[name], str):
      _fail(f'rlhf.{name}={r[name]!r} must be a path or empty.')
  _choice(config, 'rlhf.value_from', ('policy', 'reward'))
  _choice(config, 'rlhf.frozen_dtype', ('float32', 'bfloat16'))
  for name in ('ppo_epochs', 'minibatches', 'kl_horizon', 'ptx_rows'):
    _number(config, f'rlhf.{name}', low=1, integer=True)
  _number(config, 'rlhf.kl_coef', low=0.0, hint=' (0: no KL penalty)')
  for name in ('kl_target', 'missing_eos_penalty', 'ptx_coef', 'value_coef'):
    _number(config, f'rlhf.{name}', low=0.0)
  for name in ('gamma', 'lam'):
    _number(config, f'rlhf.{name}', low=0.0, high=1.0)
  for name in ('clip', 'value_clip'):
    _number(config, f'rlhf.{name}', low=0.0, low_open=True)
  _number(config, 'rlhf.sample_every', low=0, integer=True)


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
  parent, name = _parent(config, key)
  if isinstance(value, float) and value.is_integer() and parent.get_type(name) is int:
    value = int(value)  # token counts written as 1e6 or 2.5e9
  try:
    parent[name] = value
  except TypeError as error:
    _fail(f'{key}={value!r} has the wrong type ({str(error).splitlines()[0]}): give a {type(parent[name]).__name__}.')


def _parent(config: ml_collections.ConfigDict, key: str):
  """(node holding the last part of the dotted key, last part); a ConfigError if any part does not exist."""
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


def check_key(config: ml_collections.ConfigDict, key: str) -> None:
  """A ConfigError naming the closest valid key when the dotted key does not exist in config."""
  _parent(config, key)


def describe(config: ml_collections.ConfigDict) -> str:
  """Every field as `section.field = value  # its comment in default_config()`, one per line."""
  source = inspect.getsource(default_config)
  sections = {var: name for name, var in re.findall(r'^\s*c\.(\w+) = (\w+) = ml_collections', source, re.M)}
  comments = {f'{sections[var]}.{name}': comment
              for var, name, comment in re.findall(r'^\s*(\w+)\.(\w+) = .*?#\s*(.*)$', source, re.M)
              if var in sections}
  lines = []
  for section, fields in config.items():
    for name, value in fields.items():
      comment = comments.get(f'{section}.{name}')
      lines.append(f'{section}.{name} = {value!r}' + (f'  # {comment}' if comment else ''))
  return '\n'.join(lines)


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
