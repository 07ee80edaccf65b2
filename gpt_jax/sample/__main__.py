"""The sampling command line.

    python -m gpt_jax.sample --workdir=runs/x --prompt='Once upon a time' --temperature=0.8 --top_k=40
    python -m gpt_jax.sample --config=configs/tiny.py:nano --init=random --prompt=hello --max_new_tokens=20

Prompts and stop strings reach the tokenizer as typed; the only escapes decoded are \\n, \\t and \\\\.
"""

from __future__ import annotations

import re

import jax
from absl import flags

from gpt_jax import cli
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tok_lib
from gpt_jax.sample import Sampler, generate_text

_ESCAPES = {'\\n': '\n', '\\t': '\t', '\\\\': '\\'}


def unescape(s: str) -> str:
  """'\\n' and '\\t' typed on a command line -> newline and tab, '\\\\' -> one backslash; every other character,
  non-ASCII text and other backslashes included, is left as typed."""
  return re.sub(r'\\[nt\\]', lambda m: _ESCAPES[m.group(0)], s)


def main(argv):
  del argv
  f = flags.FLAGS
  for name in ('num_samples', 'batch_size', 'max_new_tokens'):
    if f[name].value < 1:
      raise ConfigError(f'--{name}={f[name].value} must be at least 1.')
  config, module, params, step, mesh = cli.load_model(cli.config_from_flags(), f.workdir, f.init, f.seed, f.mesh)
  tokenizer = tok_lib.load(config.data)
  sampler = Sampler(module, config.model, params, eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id,
                    batch_size=f.batch_size, mesh=mesh)
  prompts = [unescape(p) for p in f.prompt] * f.num_samples
  samples = generate_text(sampler, tokenizer, prompts, stop=[unescape(s) for s in f.stop],
                          max_new_tokens=f.max_new_tokens, rng=jax.random.key(f.seed), temperature=f.temperature,
                          top_k=f.top_k, top_p=f.top_p)
  if jax.process_index():
    return  # every process decoded the same samples
  print(f'# step {step}, temperature {f.temperature}, top_k {f.top_k}, top_p {f.top_p}, seed {f.seed}')
  for prompt, s in zip(prompts, samples):
    note = ' (prompt cut from the left)' if s.prompt_truncated else ''
    print(f'--- [{s.finish_reason}, {len(s.tokens)} tokens, log-prob {s.raw_logprobs.sum():.2f}]{note}')
    print(prompt + s.text)


def define_flags():
  cli.define_model_flags()
  flags.DEFINE_multi_string('prompt', [''], 'prompt text (repeatable; \\n and \\t are decoded, nothing else).')
  flags.DEFINE_integer('num_samples', 1, 'completions per prompt.')
  flags.DEFINE_integer('max_new_tokens', 100, 'most tokens generated per completion.')
  flags.DEFINE_float('temperature', 1.0, 'softmax temperature; 0 decodes greedily.')
  flags.DEFINE_integer('top_k', 0, 'sample among the k most likely tokens (0: all).')
  flags.DEFINE_float('top_p', 1.0, 'nucleus sampling mass (1: off).')
  flags.DEFINE_multi_string('stop', [], 'stop strings, applied after decoding (repeatable).')
  flags.DEFINE_integer('batch_size', 16, 'completions generated together.')


if __name__ == '__main__':
  define_flags()
  cli.run_main(main)
