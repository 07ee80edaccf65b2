"""Training for the in-context learning experiment on gpt_jax's shared loop: small GPTs (the repo's GPTLM, byte
vocabulary) trained on rows drawn by a host-side generator, with the loop's checkpoints, exact resume, preemption,
non-finite guard and any number of processes.

The recipe is the induction-friendly one: AdamW with beta2 0.99, no weight decay, gradient clipping at 1, a short
linear warmup and then a constant learning rate (short runs; an induction head forms abruptly and a decayed rate
delays it). A run is a workdir: rerunning resumes it, and rerunning with more steps continues it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
import optax

from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.data import pipeline
from experiments.few_shot import icl_data

WARMUP_STEPS = 100
PROBE_SEED, PROBE_ROWS = 99, 256  # the probe's held-out rows
# (rng, rows, position: rows drawn before these) -> int32 [rows, context + 1]
MakeRows = Callable[[np.random.Generator, int, int], np.ndarray]


def run_config(n_layers: int, d_model: int, context: int, positions: str, *, lr: float = 3e-3, batch: int = 32,
               steps: int = 1500, log_every: int = 100, seed: int = 0):
  """A validated config: byte tokenizer, d_head 16 (n_heads = d_model / 16), MLP 4 d_model, dense attention, and the
  recipe above for `steps` steps of `batch` rows; a checkpoint every 500 steps and at the end."""
  c = gcfg.default_config()
  m, t, o = c.model, c.train, c.optim
  m.n_layers, m.d_model, m.n_heads = n_layers, d_model, max(1, d_model // 16)
  m.context, m.positions = context, positions
  t.batch_tokens, t.total_tokens = batch * context, steps * batch * context
  t.log_every, t.eval_every, t.sample_tokens, t.seed = log_every, 0, 0, seed
  o.peak_lr, o.final_lr_fraction = lr, 1.0
  o.warmup_tokens = o.decay_tokens = WARMUP_STEPS * batch * context  # the rate is flat after the warmup
  o.b2, o.weight_decay, o.clip = 0.99, 0.0, 1.0
  c.checkpoint.every_steps = 500
  return gcfg.validate(c)


class GeneratedRows:
  """This process's rows of an endless stream of global batches drawn by make_rows, each from a generator seeded
  by (seed, rows consumed before it) and told that position (for a curriculum): the stream depends on neither the
  process count nor restarts, and state() / restore() resume it exactly. identity names what the rows are (a
  restore into other data is refused)."""

  def __init__(self, make_rows: MakeRows, seed: int, identity: dict):
    self._make_rows, self._seed, self._identity, self._position = make_rows, seed, dict(identity, seed=seed), 0

  def next_batch(self, global_rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self._seed, self._position))
    rows = np.asarray(self._make_rows(rng, global_rows, self._position), np.int32)
    self._position += global_rows
    local = rows.reshape(jax.process_count(), -1, rows.shape[1])[jax.process_index()]
    return {'inputs': local[:, :-1], 'targets': local[:, 1:]}

  def state(self) -> dict:
    return {'position': self._position, **self._identity}

  def restore(self, state: dict) -> None:
    pipeline.check_identity(self._identity, state)
    self._position = int(state['position'])


def train(config, workdir: str, make_rows: MakeRows, identity: dict,
          hooks: Sequence[loop.Hook] = ()) -> loop.Result:
  """Trains (or resumes) the run in workdir on make_rows' rows with the shared loop."""
  context = config.model.context
  task = loop.Task(module=gm.GPTLM(config.model), loss_fn=losses.lm_loss_fn(config),
                   train_stream=GeneratedRows(make_rows, config.data.seed, identity), tokens_per_row=context,
                   flops_per_row=context * flops.flops_per_token(config.model))
  return loop.train(config, workdir, task, hooks=hooks)


def probe_hook(config, segment: int, every: int) -> loop.Hook:
  """Every `every` steps: the induction probe's held-out losses (icl_data.probe_batch rows of the model's context,
  segment as given), logged as probe/second_copy (the repeated segment's second copy after its first symbol, which
  only induction predicts) and probe/elsewhere."""
  held_out, mask = icl_data.probe_batch(np.random.default_rng(PROBE_SEED), PROBE_ROWS, config.model.context + 1,
                                        segment)
  module = gm.GPTLM(config.model)
  losses = jax.jit(lambda params, tokens: per_token_loss(module, params, tokens))

  def evaluate(info: loop.StepInfo) -> None:
    per_token = gs.to_host(losses(info.params, gs.global_rows(held_out, gs.mesh_of(info.params))))
    info.writer.write(info.step, {'second_copy': float(per_token[mask].mean()),
                                  'elsewhere': float(per_token[~mask].mean())}, prefix='probe')
  return loop.Hook(every, evaluate)


def per_token_loss(module, params, tokens):
  """tokens [batch, length] -> next-token losses [batch, length - 1] (nats)."""
  logits = module.apply({'params': params}, tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
