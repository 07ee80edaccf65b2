"""The induction probe: does a training recipe form induction heads within minutes?

Trains a small GPT on rows of symbols from a 200-symbol alphabet and reports, on 256 held-out rows of random symbols
that end with a segment (random length, so a random copy offset) written twice, the loss on the second copy (after
its first symbol) against the loss elsewhere. Chance is ln 200 = 5.30 nats. A model that only learns "the next
symbol is one already in the context" reaches about 3.6 nats on the second copy at segment 32; a second-copy loss
far below that means the model finds the previous occurrence of the current symbol and copies its successor by
content, i.e. it has induction heads. The training rows (--rows) are either induction rows (a segment repeated until
the row is full: nearly every target rewards induction) or tail rows (the held-out rows' own design: one repeat at
the end of each row, so about a quarter of the targets reward it).

    nice -n 19 python -m experiments.few_shot.icl_probe --workdir=runs/probe/rope-l2 --positions=rope --n_layers=2 \
        --steps=1500

The run is a workdir of the shared training loop: Ctrl-C saves and rerunning resumes; rerunning with a larger
--steps continues it (the shape flags must stay). Each evaluation is a line `[probe] step ... second_copy=...
elsewhere=...` and a `probe/...` record in the workdir's metrics.jsonl. Runs on 1 or more processes.
"""

from __future__ import annotations

from absl import flags

from gpt_jax import cli
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
flags.DEFINE_enum('rows', 'induction', ['induction', 'tail'],
                  'training rows: induction (a segment repeated until the row is full) or tail (random symbols ending '
                  'with one segment written twice, the held-out rows\' design).')
flags.DEFINE_float('lr', 3e-3, 'peak learning rate.')
flags.DEFINE_integer('eval_every', 250, 'steps between evaluations of the held-out rows.')
FLAGS = flags.FLAGS


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


def main(argv):
  del argv
  check_flags()
  config = icl_train.run_config(FLAGS.n_layers, FLAGS.d_model, 2 * FLAGS.segment, FLAGS.positions, lr=FLAGS.lr,
                                batch=FLAGS.batch, steps=FLAGS.steps, log_every=min(100, FLAGS.eval_every))
  segment, length = FLAGS.segment, 2 * FLAGS.segment + 1
  if FLAGS.rows == 'induction':
    rows = lambda rng, n, position: icl_data.induction_batch(rng, n, length, segment)
  else:
    rows = lambda rng, n, position: icl_data.probe_batch(rng, n, length, segment)[0]
  identity = {'rows': 'induction probe' if FLAGS.rows == 'tail' else 'induction rows', 'segment': segment}
  hook = icl_train.probe_hook(config, segment, FLAGS.eval_every)
  icl_train.train(config, FLAGS.workdir, rows, identity, hooks=[hook])


if __name__ == '__main__':
  cli.run_main(main)
