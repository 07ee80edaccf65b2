"""Pretraining entry point.

    python -m gpt_jax.train --config=configs/gpt3.py:125m --workdir=runs/x [--config.<field>=<value> ...]

Running the same command again resumes from the latest complete checkpoint in --workdir. Multi-host: the
coordinator is read from the environment (TPU VM, SLURM, JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID) or from --coordinator_address / --num_processes / --process_id.
"""

from __future__ import annotations

import json
import os
import sys

import jax
from absl import app, flags

from gpt_jax import config as gcfg
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import sample
from gpt_jax import sharding as gs
from gpt_jax.data import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and TensorBoard logs.')
gs.define_distributed_flags()


def bytes_per_token(tokenizer, batches) -> float:
  """UTF-8 bytes per target token over validation batches, for bits per byte."""
  tokens = byte_count = 0
  for batch in batches:
    for row in batch['targets']:
      tokens += len(row)
      byte_count += len(tokenizer.decode(row.tolist()).encode('utf-8'))
  return byte_count / max(tokens, 1)


def build_task(config):
  """The pretraining Task: GPTLM, next-token loss, the configured data stream and validation batches."""
  stream = pipeline.TrainStream(config)
  eval_rows = config.train.batch_tokens // config.model.context
  cached = []

  def eval_batches():
    if not cached:
      cached.extend(pipeline.eval_batches(config, config.train.eval_batches, eval_rows))
    return cached
  ratio = bytes_per_token(stream.tokenizer, eval_batches()) if config.train.eval_batches else None
  return loop.Task(module=gm.GPTLM(config.model), loss_fn=loop.lm_loss_fn(config), train_stream=stream,
                   eval_batches=eval_batches if config.train.eval_batches else None, bytes_per_token=ratio)


def write_run_metadata(workdir: str, config, tokenizer) -> None:
  if jax.process_index() == 0:
    meta = dict(tokenizer=config.data.tokenizer, tokenizer_checksum=tokenizer.checksum,
                processes=jax.process_count(), devices=jax.device_count(), device_kind=jax.devices()[0].device_kind,
                argv=sys.argv)
    with open(os.path.join(workdir, 'run.json'), 'w') as f:
      json.dump(meta, f, indent=2)


def sample_text(config, params, tokenizer, n_tokens: int, mesh) -> str:
  """A short sample (temperature 0.8, top-k 40) from the end-of-text token, to eyeball progress."""
  sampler = sample.Sampler(gm.GPTLM(config.model), config.model, params, eot_id=tokenizer.eot_id,
                           pad_id=tokenizer.pad_id, batch_size=1, mesh=mesh)
  out = sampler.generate([[tokenizer.eot_id]], max_new_tokens=min(n_tokens, config.model.context - 1),
                         rng=jax.random.PRNGKey(config.train.seed), temperature=0.8, top_k=40)
  return tokenizer.decode(out[0].tokens)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}: flags are --config, --workdir and --config.<field>=...')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required: the directory for checkpoints and logs, e.g. --workdir=runs/x.')
  gs.initialize_distributed_from_flags()
  config = gcfg.config_from_flags()
  os.makedirs(FLAGS.workdir, exist_ok=True)
  task = build_task(config)
  write_run_metadata(FLAGS.workdir, config, task.train_stream.tokenizer)
  mesh = gs.make_mesh(config.mesh)
  try:
    result = loop.train(config, FLAGS.workdir, task, mesh)
  except loop.TrainingStopped as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  if 'params' in result and config.train.sample_tokens:
    text = sample_text(config, result['params'], task.train_stream.tokenizer, config.train.sample_tokens, mesh)
    if jax.process_index() == 0:
      print('--- sample ---\n' + text, flush=True)
  return 0


if __name__ == '__main__':
  gcfg.run_main(main, 'configs/tiny.py:micro')
