"""Pretraining entry point.

    python -m gpt_jax.train --config=configs/gpt3.py:125m --workdir=runs/x [--config.<field>=<value> ...]

Running the same command again resumes from the latest complete checkpoint in --workdir. Multi-host: the
coordinator is read from the environment (TPU VM, SLURM, JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID) or from --coordinator_address / --num_processes / --process_id.
"""

from __future__ import annotations

import json
import math
import os
import sys

import jax
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax import sample
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import pipeline

FLAGS = flags.FLAGS
cli.define_workdir_flag()
flags.DEFINE_bool('smoke', False, 'run the config\'s architecture for 4 short steps (byte vocabulary, context <= 256, '
                  '8-row batches): checks that a config builds, shards, trains, saves and samples on this machine.')


def bytes_per_token(tokenizer, batches) -> float:
  """UTF-8 bytes per target token over validation batches, for bits per byte."""
  tokens = byte_count = 0
  for batch in batches:
    for row in batch['targets']:
      tokens += len(row)
      byte_count += len(tokenizer.decode(row.tolist()).encode('utf-8'))
  return byte_count / max(tokens, 1)


def build_task(config):
  """The pretraining Task: GPTLM, next-token loss, the configured data stream and validation batches; a row is
  one packed sequence of model.context tokens."""
  stream = pipeline.TrainStream(config)
  eval_rows = config.train.batch_tokens // config.model.context
  eval_batches = loop.cached(lambda: pipeline.eval_batches(config, config.train.eval_batches, eval_rows))

  eval_extra = None
  if config.train.eval_batches:
    ratio = bytes_per_token(stream.tokenizer, eval_batches())
    eval_extra = lambda result: {'bits_per_byte': result['loss'] / math.log(2) / ratio}  # noqa: E731
  context = config.model.context
  module = gm.GPTLM(config.model)
  return loop.Task(module=module, loss_fn=losses.lm_loss_fn(config), train_stream=stream,
                   tokens_per_row=context, flops_per_row=context * flops.flops_per_token(config.model),
                   eval_batches=eval_batches if config.train.eval_batches else None, eval_extra=eval_extra,
                   init_params=loop.params_from(config.train.init_from, module) if config.train.init_from else None)


def sample_text(config, params, tokenizer, n_tokens: int, mesh) -> str:
  """A short sample (temperature 0.8, top-k 40) from the end-of-text token, to eyeball progress."""
  sampler = sample.Sampler(gm.GPTLM(config.model), config.model, params, eot_id=tokenizer.eot_id,
                           pad_id=tokenizer.pad_id, batch_size=1, mesh=mesh)
  out = sampler.generate([[tokenizer.eot_id]], max_new_tokens=min(n_tokens, config.model.context - 1),
                         rng=jax.random.PRNGKey(config.train.seed), temperature=0.8, top_k=40)
  return tokenizer.decode(out[0].tokens)


def _refuse_a_real_run(workdir: str, smoke_config) -> None:
  """--smoke resumes only smoke runs: a smoke config can have the same shapes as the run in workdir."""
  path = os.path.join(workdir, ckpt.CONFIG_FILE)
  if os.path.isfile(path) and json.loads(open(path, encoding='utf-8').read()) != json.loads(smoke_config.to_json()):
    raise ConfigError(f'--workdir={workdir} holds a run with another config; --smoke needs a new --workdir '
                      f'(e.g. {workdir.rstrip("/")}-smoke).')


def main(argv):
  del argv
  cli.check_workdir(FLAGS.workdir)
  config = cli.config_from_flags()
  if FLAGS.smoke:
    config = gcfg.smoke_size(config)
    _refuse_a_real_run(FLAGS.workdir, config)
  task = build_task(config)
  mesh = gs.make_mesh(config.mesh)
  try:
    result = loop.train(config, FLAGS.workdir, task, mesh, cli.run_record(config, task.train_stream.tokenizer))
  except loop.TrainingStopped as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  if result.stopped == 'interrupted':
    return 130  # the shell's code for Ctrl-C; the checkpoint is saved
  if result.stopped == 'finished' and result.metrics and config.train.sample_tokens:
    text = sample_text(config, result.params, task.train_stream.tokenizer, config.train.sample_tokens, mesh)
    if jax.process_index() == 0:
      print('--- sample ---\n' + text, flush=True)
  return 0


if __name__ == '__main__':
  cli.run_main(main, 'configs/tiny.py:micro')
