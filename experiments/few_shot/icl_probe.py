"""The induction probe: does a training recipe form induction heads within minutes?

Trains a small GPT on rows of random symbols over a 200-symbol alphabet that end with a segment (random length,
so a random copy offset) written twice, and prints the loss on the second copy (after its first symbol) against
the loss elsewhere. Chance is ln 200 = 5.30 nats; a second-copy loss below half of it means the model finds the
previous occurrence of the current symbol and copies its successor by content, i.e. it has induction heads.

    nice -n 19 python -m experiments.few_shot.icl_probe --positions=rope --n_layers=2 --steps=1500

One JSON line per evaluation: step, training loss, second-copy loss, other-positions loss, seconds.
"""

from __future__ import annotations

import itertools
import json

import jax
import numpy as np
from absl import app
from absl import flags

from gpt_jax import model as gm
from gpt_jax.config import ConfigError
from experiments.few_shot import icl_data
from experiments.few_shot import icl_train

flags.DEFINE_enum('positions', 'rope', ['learned', 'rope'], 'position encoding of the probed model.')
flags.DEFINE_integer('n_layers', 2, 'layers (1 is the control: one layer cannot form an induction head).')
flags.DEFINE_integer('d_model', 64, 'width.')
flags.DEFINE_integer('steps', 1500, 'training steps.')
flags.DEFINE_integer('batch', 32, 'rows per step.')
flags.DEFINE_integer('segment', 32, 'longest repeated segment; the context is twice this.')
flags.DEFINE_float('lr', 3e-3, 'peak learning rate.')
flags.DEFINE_integer('evals', 6, 'evaluations over the run.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  for name in ('n_layers', 'd_model', 'steps', 'batch', 'evals'):
    if FLAGS[name].value < 1:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be a positive integer.')
  if FLAGS.segment < 6:
    raise ConfigError(f'--segment={FLAGS.segment} must be at least 6 (segments are segment/3 to segment long).')
  context = 2 * FLAGS.segment
  config = icl_train.model_config(FLAGS.n_layers, FLAGS.d_model, context, FLAGS.positions)
  rng = np.random.default_rng(0)
  batches = (icl_data.probe_batch(rng, FLAGS.batch, context + 1, FLAGS.segment)[0] for _ in itertools.count())
  held_out, mask = icl_data.probe_batch(np.random.default_rng(99), 256, context + 1, FLAGS.segment)

  def on_log(step, loss, seconds, params):
    losses = np.asarray(jax.device_get(evaluate(params)))
    print(json.dumps(dict(step=step, loss=round(loss, 3), second_copy=round(float(losses[mask].mean()), 3),
                          elsewhere=round(float(losses[~mask].mean()), 3), seconds=round(seconds))), flush=True)

  module = gm.GPTLM(config.model)
  evaluate = jax.jit(lambda p: icl_train.per_token_loss(module, p, held_out))
  icl_train.train(config, batches, FLAGS.steps, FLAGS.lr, log_every=max(1, FLAGS.steps // FLAGS.evals),
                  on_log=on_log)


if __name__ == '__main__':
  from gpt_jax import cli
  cli.run_main(main)
