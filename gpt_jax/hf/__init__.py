"""GPT-2 checkpoints in Hugging Face format, in and out: safetensors read and written with numpy (no torch).
The command line is __main__.py:

    python -m gpt_jax.hf import --hf_dir=path/to/gpt2 --workdir=runs/gpt2     # a params export gpt_jax reads
    python -m gpt_jax.hf export --workdir=runs/x --out=path/to/hf_dir          # GPT2LMHeadModel.from_pretrained

GPT-2 is gpt_jax's pre-LN, dense-attention, tied-head model with GELU (tanh) and learned positions, so the
mapping is a re-layout of the same numbers: the fused [d, 3d] c_attn (Conv1D, input-major) becomes the
[d, heads, 3, d_head] qkv kernel, c_proj [d, d] the [heads, d_head, d] output kernel, and the vocabulary is padded
to gpt_jax's multiple of 128 (zero rows, never predicted) on the way in and cut on the way out. Layers are stacked
for a scanned config. A config GPT-2 cannot express is refused in one sentence.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
from safetensors import numpy as st

from gpt_jax import config as gcfg
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tok_lib

WEIGHTS = 'model.safetensors'
TOKENIZER_FILES = ('tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json')
_BUFFER = re.compile(r'h\.\d+\.attn\.(bias|masked_bias)')  # causal-mask buffers older transformers saved


def _read_hf_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, 'config.json')
  if not os.path.isdir(hf_dir):
    raise ConfigError(f'--hf_dir={hf_dir} is not a directory: pass a local Hugging Face GPT-2 directory (config.json '
                      f'and model.safetensors).')
  if not os.path.isfile(path):
    raise ConfigError(f'{hf_dir} has no config.json: pass the directory save_pretrained wrote (config.json and '
                      f'model.safetensors).')
  hf = json.loads(open(path, encoding='utf-8').read())
  if hf.get('model_type') != 'gpt2':
    raise ConfigError(f'{path} describes a {hf.get("model_type")!r} model: only GPT-2 checkpoints (model_type '
                      f'"gpt2") can be imported.')
  if not os.path.isfile(os.path.join(hf_dir, WEIGHTS)):
    bins = [name for name in os.listdir(hf_dir) if name.endswith('.bin')]
    hint = (' (it has PyTorch .bin weights: convert them once with transformers, GPT2LMHeadModel.from_pretrained(d)'
            '.save_pretrained(d))' if bins else '')
    raise ConfigError(f'{hf_dir} has no {WEIGHTS}{hint}: gpt_jax reads safetensors only.')
  unsupported = {'activation_function': ('gelu_new', 'gelu_pytorch_tanh'), 'scale_attn_weights': (True,),
                 'scale_attn_by_inverse_layer_idx': (False,), 'reorder_and_upcast_attn': (False,)}
  for key, allowed in unsupported.items():
    if key in hf and hf[key] not in allowed:
      raise ConfigError(f'{path} sets {key}={hf[key]!r}, which gpt_jax\'s GPT-2 does not implement (it has '
                        f'{allowed[0]!r}).')
  return hf


def config_from_hf(hf_dir: str):
  """The validated gpt_jax config of a Hugging Face GPT-2 directory, its tokenizer data.tokenizer='hf:<hf_dir>'
  (whose files only a command that reads text needs: see check_tokenizer)."""
  hf = _read_hf_config(hf_dir)
  c = gcfg.default_config()
  m = c.model
  m.n_layers, m.d_model, m.n_heads = hf['n_layer'], hf['n_embd'], hf['n_head']
  m.d_ff = hf.get('n_inner') or 4 * hf['n_embd']
  m.vocab_size, m.context = hf['vocab_size'], hf['n_positions']
  m.ln_eps = hf.get('layer_norm_epsilon', 1e-5)
  m.ln_placement, m.attention, m.tie_embeddings = 'pre', 'dense', True
  m.init_std = hf.get('initializer_range', 0.02)
  m.local_window = m.context
  c.train.batch_tokens = 8 * m.context
  c.train.total_tokens = max(c.train.total_tokens, c.train.batch_tokens)
  c.data.tokenizer = f'hf:{os.path.abspath(hf_dir)}'
  return gcfg.validate(c)


def check_tokenizer(hf_dir: str) -> None:
  """hf_dir is a GPT-2 directory with the tokenizer files an imported run needs to read and write text (load_gpt2
  does not need them)."""
  _read_hf_config(hf_dir)
  if not any(os.path.isfile(os.path.join(hf_dir, name)) for name in ('tokenizer.json', 'vocab.json')):
    raise ConfigError(f'{hf_dir} has no tokenizer.json (or vocab.json + merges.txt): copy the tokenizer files into it '
                      f'(GPT2TokenizerFast.save_pretrained writes them); without them its ids cannot be read.')


def load_gpt2(hf_dir: str):
  """(config, params) of a local Hugging Face GPT-2 directory; params fit GPTLM(config.model) (scanned layers)."""
  config = config_from_hf(hf_dir)
  return config, params_from_hf(config, state_dict(hf_dir))


def state_dict(hf_dir: str) -> dict[str, np.ndarray]:
  """The GPT-2 weights of hf_dir by their names without the 'transformer.' prefix, attention-mask buffers left
  out; a tied head stored under lm_head.weight alone serves as wte.weight."""
  tensors = st.load_file(os.path.join(hf_dir, WEIGHTS))
  head = tensors.pop('lm_head.weight', None)
  tensors = {k.removeprefix('transformer.'): v for k, v in tensors.items()}
  tensors = {k: v for k, v in tensors.items() if not _BUFFER.fullmatch(k)}
  if 'wte.weight' not in tensors and head is not None:
    tensors['wte.weight'] = head
  return tensors


def params_from_hf(config, tensors: dict[str, np.ndarray]) -> dict:
  """gpt_jax params (scanned or unrolled, as config.model.scan_layers says) from GPT-2 state-dict arrays."""
  m = config.model
  h, dh, d = m.n_heads, m.d_head, m.d_model
  expected = {'wte.weight', 'wpe.weight', 'ln_f.weight', 'ln_f.bias'} | {
      f'h.{i}.{name}' for i in range(m.n_layers) for name in _LAYER_KEYS}
  if missing := sorted(expected - tensors.keys()):
    raise ConfigError(f'the GPT-2 weights lack {missing[0]} (and {len(missing) - 1} more): the file does not match '
                      f'its config.json.')
  if extra := sorted(tensors.keys() - expected):
    raise ConfigError(f'the GPT-2 weights hold {extra[0]}, which a GPT-2 of this config does not have.')
  f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731

  def layer(i):
    t = lambda name: f32(tensors[f'h.{i}.{name}'])  # noqa: E731
    return {
        'ln_1': {'scale': t('ln_1.weight'), 'bias': t('ln_1.bias')},
        'attn': {'qkv': {'kernel': t('attn.c_attn.weight').reshape(d, 3, h, dh).transpose(0, 2, 1, 3),
                         'bias': t('attn.c_attn.bias').reshape(3, h, dh).transpose(1, 0, 2)},
                 'out': {'kernel': t('attn.c_proj.weight').reshape(h, dh, d), 'bias': t('attn.c_proj.bias')}},
        'ln_2': {'scale': t('ln_2.weight'), 'bias': t('ln_2.bias')},
        'mlp': {'fc': {'kernel': t('mlp.c_fc.weight'), 'bias': t('mlp.c_fc.bias')},
                'proj': {'kernel': t('mlp.c_proj.weight'), 'bias': t('mlp.c_proj.bias')}},
    }
  layers = [layer(i) for i in range(m.n_layers)]
  wte = np.zeros((m.padded_vocab_size, d), np.float32)
  wte[:m.vocab_size] = f32(tensors['wte.weight'])
  trunk = {'wte': {'embedding': wte}, 'wpe': f32(tensors['wpe.weight']),
           'ln_f': {'scale': f32(tensors['ln_f.weight']), 'bias': f32(tensors['ln_f.bias'])}}
  if m.scan_layers:
    trunk['blocks'] = _stack(layers)
  else:
    trunk.update({f'block_{i}': block for i, block in enumerate(layers)})
  return {'trunk': trunk}


_LAYER_KEYS = ('ln_1.weight', 'ln_1.bias', 'attn.c_attn.weight', 'attn.c_attn.bias', 'attn.c_proj.weight',
               'attn.c_proj.bias', 'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias',
               'mlp.c_proj.weight', 'mlp.c_proj.bias')


def _stack(trees: list[dict]) -> dict:
  if isinstance(trees[0], dict):
    return {key: _stack([t[key] for t in trees]) for key in trees[0]}
  return np.stack(trees)


def check_expressible(config) -> None:
  """A ConfigError naming the first field that GPT-2's architecture cannot express."""
  m = config.model
  rules = [(m.ln_placement == 'pre', f"model.ln_placement={m.ln_placement!r} (GPT-2 is 'pre')"),
           (m.attention == 'dense', f"model.attention={m.attention!r} (GPT-2 is 'dense')"),
           (m.positions == 'learned', f"model.positions={m.positions!r} (GPT-2 learns a position table)"),
           (m.tie_embeddings, 'model.tie_embeddings=False (GPT-2 ties its head to the embedding)'),
           (m.n_heads * m.d_head == m.d_model,
            f'model.n_heads * model.d_head = {m.n_heads * m.d_head} != model.d_model={m.d_model}')]
  for ok, what in rules:
    if not ok:
      raise ConfigError(f'this model cannot be written as GPT-2: {what}.')


def params_to_hf(config, params) -> dict[str, np.ndarray]:
  """GPT-2 state-dict arrays ('transformer.'-prefixed, as save_pretrained writes them) from gpt_jax params."""
  check_expressible(config)
  m = config.model
  d = m.d_model
  trunk = {k: _numpy(v) for k, v in params['trunk'].items()}
  if 'blocks' in trunk:
    layers = [_index(trunk['blocks'], i) for i in range(m.n_layers)]
  else:
    layers = [trunk[f'block_{i}'] for i in range(m.n_layers)]
  out = {'wte.weight': trunk['wte']['embedding'][:m.vocab_size], 'wpe.weight': trunk['wpe'],
         'ln_f.weight': trunk['ln_f']['scale'], 'ln_f.bias': trunk['ln_f']['bias']}
  for i, b in enumerate(layers):
    qkv = b['attn']['qkv']
    out.update({
        f'h.{i}.ln_1.weight': b['ln_1']['scale'], f'h.{i}.ln_1.bias': b['ln_1']['bias'],
        f'h.{i}.attn.c_attn.weight': qkv['kernel'].transpose(0, 2, 1, 3).reshape(d, 3 * d),
        f'h.{i}.attn.c_attn.bias': qkv['bias'].transpose(1, 0, 2).reshape(3 * d),
        f'h.{i}.attn.c_proj.weight': b['attn']['out']['kernel'].reshape(d, d),
        f'h.{i}.attn.c_proj.bias': b['attn']['out']['bias'],
        f'h.{i}.ln_2.weight': b['ln_2']['scale'], f'h.{i}.ln_2.bias': b['ln_2']['bias'],
        f'h.{i}.mlp.c_fc.weight': b['mlp']['fc']['kernel'], f'h.{i}.mlp.c_fc.bias': b['mlp']['fc']['bias'],
        f'h.{i}.mlp.c_proj.weight': b['mlp']['proj']['kernel'], f'h.{i}.mlp.c_proj.bias': b['mlp']['proj']['bias'],
    })
  return {f'transformer.{k}': np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _numpy(tree):
  if isinstance(tree, dict):
    return {k: _numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def _index(tree, i: int):
  if isinstance(tree, dict):
    return {k: _index(v, i) for k, v in tree.items()}
  return tree[i]


def hf_config(config) -> dict:
  """GPT2Config fields for config.model; end-of-text is the run's tokenizer's (GPT-2's last id if it is missing)."""
  m = config.model
  try:
    eot = tok_lib.load(config.data).eot_id
  except ConfigError:  # a tokenizer file that is not on this machine: GPT-2's convention, the last id
    eot = m.vocab_size - 1
  return {'model_type': 'gpt2', 'architectures': ['GPT2LMHeadModel'], 'vocab_size': m.vocab_size,
          'n_positions': m.context, 'n_embd': m.d_model, 'n_layer': m.n_layers, 'n_head': m.n_heads,
          'n_inner': m.d_ff, 'activation_function': 'gelu_new', 'layer_norm_epsilon': m.ln_eps,
          'initializer_range': m.init_std, 'resid_pdrop': m.dropout_resid, 'embd_pdrop': m.dropout_embed,
          'attn_pdrop': m.dropout_attn, 'scale_attn_weights': True, 'tie_word_embeddings': True,
          'bos_token_id': eot, 'eos_token_id': eot}


def copy_tokenizer(source_dir: str, out_dir: str) -> None:
  """Copies the Hugging Face tokenizer files of source_dir that exist into out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(source_dir, name)):
      shutil.copyfile(os.path.join(source_dir, name), os.path.join(out_dir, name))


def save_gpt2(config, params, out_dir: str) -> str:
  """Writes config.json and model.safetensors to out_dir, with the tokenizer files of an hf: tokenizer, or a note
  on how to tokenize (TOKENIZER.md) for gpt_jax's byte and sentencepiece tokenizers."""
  tensors = params_to_hf(config, params)
  os.makedirs(out_dir, exist_ok=True)
  st.save_file(tensors, os.path.join(out_dir, WEIGHTS), metadata={'format': 'pt'})
  with open(os.path.join(out_dir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(hf_config(config), f, indent=2)
  tokenizer = str(config.data.tokenizer)
  if tokenizer.startswith('hf:'):
    copy_tokenizer(tokenizer[len('hf:'):], out_dir)
  else:
    write_tokenizer_note(tokenizer, out_dir)
  return out_dir


_BYTE_NOTE = """# Tokenizer

This GPT-2 was trained by gpt_jax with its byte tokenizer, which transformers has no class for: token ids are the
UTF-8 bytes of the text (0 to 255), 256 is end-of-text (bos_token_id and eos_token_id in config.json) and 257 is
padding, never predicted.

    ids = list(text.encode('utf-8'))
    text = bytes(i for i in ids if i < 256).decode('utf-8', errors='replace')
"""

_SENTENCEPIECE_NOTE = """# Tokenizer

This GPT-2 was trained by gpt_jax with the sentencepiece model copied here as `{name}`; transformers' GPT-2
tokenizers do not read it. End-of-text (bos_token_id and eos_token_id in config.json) is its `{eot}` piece.

    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file='{name}')
    ids = sp.encode(text)
    text = sp.decode(ids)
"""


def write_tokenizer_note(tokenizer: str, out_dir: str) -> None:
  """TOKENIZER.md in an export of a run whose tokenizer is not a Hugging Face one (byte or sentencepiece): how to
  turn text into the model's ids and back; a sentencepiece model is copied beside it."""
  if tokenizer == 'byte':
    note = _BYTE_NOTE
  else:
    name = 'tokenizer.model'
    note = _SENTENCEPIECE_NOTE.format(name=name, eot=tok_lib.EOT_PIECE)
    if os.path.isfile(os.path.expanduser(tokenizer)):
      shutil.copyfile(os.path.expanduser(tokenizer), os.path.join(out_dir, name))
    else:
      note += f'\n{tokenizer} was not on the machine that exported this model: copy it here as {name}.\n'
  with open(os.path.join(out_dir, 'TOKENIZER.md'), 'w', encoding='utf-8') as f:
    f.write(note)
