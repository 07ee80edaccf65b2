"""The induction probe: does a training recipe form induction heads within minutes?

Trains a small GPT on rows of random symbols over a 200-symbol alphabet that end with a segment (random length,
so a random copy offset) written twice, and reports the loss on the second copy (after its first symbol) against
the loss elsewhere, on 256 held-out rows. Chance is ln 200 = 5.30 nats. A model that only learns "the next symbol
is one already in the context" sits near ln(distinct symbols in the context), about 4.0 at segment 32; a
second-copy loss far below that means the model finds the previous occurrence of the current symbol and copies its
successor by content, i.e. it has induction heads.

    nice -n 19 python -m experiments.few_shot.icl_probe --workdir=runs/probe/rope-l2 --positions=rope --n_layers=2 \
        --steps=1500

The run is a workdir of the shared training loop: Ctrl-C saves and rerunning resumes; rerunning with a larger
--steps continues it (the shape flags must stay). Each evaluation is a line `[probe] step ... second_copy=...
elsewhere=...` and a `probe/...` record in the workdir's metrics.jsonl. Runs on 1 or more processes.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import flags

from gpt_jax import cli
from gpt_jax import model as gm
from gpt_jax import loop
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from experiments.few_shot import icl_data
from experiments.few_shot import icl_train

cli.define_workdir_flag()
flags.DEFINE_enum('positions', 'rope', ['learned', 'rope'], 'position encoding of the probed model.')
flags.DEFINE_integer('n_layers', 2, 'layers (1 is the control: one layer cannot form an induction head).')
flags.DEFINE_integer('d_model', 64, 'width (a multiple of 16).')
flags.DEFINE_integer('steps', 1500, 'training steps in all (a resumed run continues up to this many).')
flags.DEFINE_integer('batch', 32, 'rows per step.')
flags.DEFINE_integer('segment', 32, 'longest repeated segment; the context is twice this.')
flags.DEFINE_float('lr', 3e-3, 'peak learning rate.')
flags.DEFINE_integer('eval_every', 250, 'steps between evaluations of the held-out rows.')
FLAGS = flags.FLAGS
HELD_OUT_SEED, HELD_OUT_ROWS = 99, 256


def check_flags() -> None:
  cli.check_workdir(FLAGS.workdir)
  for name in ('n_layers', 'steps', 'batch', 'eval_every'):
    if FLAGS[name].value < 1:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be a positive integer.')
  if FLAGS.d_model < 16 or FLAGS.d_model % 16:
    raise ConfigError(f'--d_model={FLAGS.d_model} must be a positive multiple of 16 (heads of 16 dimensions).')
  if FLAGS.segment < 6:
    raise ConfigError(f'--segment={FLAGS.segment} must be at least 6 (segments are segment/3 to segment long).')
  if FLAGS.lr <= 0:
    raise ConfigError(f'--lr={FLAGS.lr} must be positive.')


def probe_hook(config) -> loop.Hook:
  """Every --eval_every steps: the held-out second-copy and elsewhere losses, printed and logged."""
  context, segment = config.model.context, FLAGS.segment
  held_out, mask = icl_data.probe_batch(np.random.default_rng(HELD_OUT_SEED), HELD_OUT_ROWS, context + 1, segment)
  module = gm.GPTLM(config.model)
  losses = jax.jit(lambda params, tokens: icl_train.per_token_loss(module, params, tokens))

  def evaluate(info: loop.StepInfo) -> None:
    tokens = gs.global_rows(held_out, gs.mesh_of(info.params))
    per_token = gs.to_host(losses(info.params, tokens))
    info.writer.write(info.step, {'second_copy': float(per_token[mask].mean()),
                                  'elsewhere': float(per_token[~mask].mean())}, prefix='probe')
  return loop.Hook(FLAGS.eval_every, evaluate)


def main(argv):
  del argv
  check_flags()
  config = icl_train.run_config(FLAGS.n_layers, FLAGS.d_model, 2 * FLAGS.segment, FLAGS.positions, lr=FLAGS.lr,
                                batch=FLAGS.batch, steps=FLAGS.steps, log_every=min(100, FLAGS.eval_every))
  segment = FLAGS.segment
  rows = lambda rng, n: icl_data.probe_batch(rng, n, 2 * segment + 1, segment)[0]
  icl_train.train(config, FLAGS.workdir, rows, {'rows': 'induction probe', 'segment': segment},
                  hooks=[probe_hook(config)])


if __name__ == '__main__':
  cli.run_main(main)
