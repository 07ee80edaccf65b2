"""The Hugging Face GPT-2 command line.

    python -m gpt_jax.hf import --hf_dir=path/to/gpt2 --workdir=runs/gpt2
    python -m gpt_jax.hf export --workdir=runs/x --out=path/to/hf_dir [--mesh=-1,1,1]

`import` writes a params export (params, config.json, step 0, and a copy of the tokenizer) that sampling,
evaluation, training and fine-tuning (`--config.train.init_from`) read like any other run. `export` gathers the
params on one host: run it as a single process. `export` writes config.json, model.safetensors
and the tokenizer files that transformers' GPT2LMHeadModel / GPT2TokenizerFast load offline.
"""

from __future__ import annotations

import os

import jax
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import hf
from gpt_jax.config import ConfigError

flags.DEFINE_string('hf_dir', None, 'import: a local Hugging Face GPT-2 directory (config.json, model.safetensors).')
flags.DEFINE_string('out', None, 'export: the directory to write the Hugging Face checkpoint to (new or empty).')
cli.define_overwrite_flag()


def main(argv):
  f = flags.FLAGS
  if len(argv) != 2:
    raise ConfigError('name a command: python -m gpt_jax.hf import --hf_dir=... --workdir=... or export '
                      '--workdir=... --out=....')
  if argv[1] == 'import':
    if not f.hf_dir:
      raise ConfigError('--hf_dir is required: a local Hugging Face GPT-2 directory.')
    workdir = cli.check_output('workdir', f.workdir, directory=True)
    hf.check_tokenizer(f.hf_dir)
    config, params = hf.load_gpt2(f.hf_dir)
    # The run keeps its own copy of the tokenizer, so it does not depend on where the download lies.
    tokenizer_dir = os.path.abspath(os.path.join(workdir, 'tokenizer'))
    if jax.process_index() == 0:
      hf.copy_tokenizer(f.hf_dir, tokenizer_dir)
    config.data.tokenizer = f'hf:{tokenizer_dir}'
    path = ckpt.export_params(workdir, params, 0, config)
    if jax.process_index() == 0:
      print(f'imported {f.hf_dir} ({config.model.n_layers} layers, d_model {config.model.d_model}) to {path}')
  else:
    out = cli.check_output('out', f.out, directory=True)
    if f.workdir and os.path.isdir(f.workdir):
      hf.check_expressible(ckpt.load_config(f.workdir))  # before the checkpoint is read
    config, _, params, step, _ = cli.load_model(cli.config_from_flags(), f.workdir, 'checkpoint', 0, f.mesh)
    if jax.process_index() == 0:
      hf.save_gpt2(config, jax.device_get(params), out)
      print(f'exported step {step} of {f.workdir} to {out}')
  return 0


if __name__ == '__main__':
  cli.define_model_flags(random_init=False)
  cli.run_main(main, commands=('import', 'export'))
