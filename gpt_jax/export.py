"""Export a run's params: a params-only copy (with its config.json and step) for sampling, evaluation, fine-tuning
(train.init_from) and reward-model initialisation, without the optimizer state.

    python -m gpt_jax.export --workdir=runs/x --out=exports/x [--mesh=-1,1,1]

The newest restorable checkpoint of --workdir is read straight into the shards of the run's mesh (or --mesh) and
written to --out, which must not exist yet or be empty (or pass --overwrite).
"""

from __future__ import annotations

import jax
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax.config import ConfigError

flags.DEFINE_string('out', None, 'directory the params-only copy is written to (new or empty).')
cli.define_overwrite_flag()


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.out:
    raise ConfigError('--out is required: the directory to write the exported params to, e.g. --out=exports/x.')
  cli.check_output('out', f.out, directory=True)
  config, _, params, step, _ = cli.load_model(cli.config_from_flags(), f.workdir, 'checkpoint', 0, f.mesh)
  path = ckpt.export_params(f.out, params, step, config)
  if jax.process_index() == 0:
    print(f'exported step {step} of {f.workdir} to {path}')
  return 0


if __name__ == '__main__':
  cli.define_model_flags(random_init=False)
  cli.run_main(main)
