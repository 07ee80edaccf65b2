"""Direct preference optimisation: the policy trained on preference pairs against a frozen reference policy.

    python -m gpt_jax.rlhf.dpo --config=configs/rlhf.py:dpo --workdir=runs/dpo --config.rlhf.init_from=runs/sft

The policy and the reference both start from rlhf.init_from. The reference's params enter the jitted step as
frozen, sharded arguments (no optimizer state); with rlhf.dpo.precompute_ref its log-probs are computed once over the
data before training and the reference leaves memory. Losses: 'sigmoid' (with rlhf.dpo.label_smoothing,
conservative DPO), 'robust', 'hinge' and 'ipo' (length-normalised log-ratios); rlhf.dpo.nll_coef adds an NLL term on
the chosen responses. Logged: rewards/chosen, rewards/rejected, rewards/margin and rewards/accuracy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from gpt_jax import cli
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy

FLAGS = flags.FLAGS
cli.define_workdir_flag()
LOSS_TYPES = ('sigmoid', 'robust', 'hinge', 'ipo')


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float,
             loss_type: str = 'sigmoid', label_smoothing: float = 0.0, chosen_lengths=None, rejected_lengths=None):
  """Per-pair DPO losses [B] from sequence log-probs [B] of the policy and the reference.

  With h = log pi(y|x) - log ref(y|x) and Delta = h_chosen - h_rejected:
    sigmoid  -(1 - eps) log sigmoid(beta Delta) - eps log sigmoid(-beta Delta)   (eps = label_smoothing)
    robust   (-(1 - eps) log sigmoid(beta Delta) + eps log sigmoid(-beta Delta)) / (1 - 2 eps)
    hinge    max(0, 1 - beta Delta)
    ipo      (Delta' - 1 / (2 beta))^2, Delta' from log-ratios divided by the response lengths
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f'loss_type={loss_type!r} is not one of {", ".join(LOSS_TYPES)}.')
  chosen = chosen_logps - ref_chosen_logps
  rejected = rejected_logps - ref_rejected_logps
  if loss_type == 'ipo':
    if chosen_lengths is None or rejected_lengths is None:
      raise ValueError('the ipo loss normalises by response length: pass chosen_lengths and rejected_lengths.')
    delta = chosen / jnp.maximum(chosen_lengths, 1) - rejected / jnp.maximum(rejected_lengths, 1)
    return (delta - 1.0 / (2.0 * beta)) ** 2
  delta = beta * (chosen - rejected)
  if loss_type == 'hinge':
    return jax.nn.relu(1.0 - delta)
  eps = label_smoothing
  if loss_type == 'robust':
    return (-(1 - eps) * jax.nn.log_sigmoid(delta) + eps * jax.nn.log_sigmoid(-delta)) / (1 - 2 * eps)
  return -(1 - eps) * jax.nn.log_sigmoid(delta) - eps * jax.nn.log_sigmoid(-delta)


def _pair_logps(module, params, batch, rng=None):
  """(sequence log-probs [B, 2], response lengths [B, 2]) of the chosen and rejected rows."""
  rows, two, length = batch['tokens'].shape
  tokens = batch['tokens'].reshape(rows * two, length)
  mask = batch['loss_mask'].reshape(rows * two, length)[:, 1:]
  logits = module.apply({'params': params}, tokens[:, :-1], rngs={'dropout': rng} if rng is not None else None)
  logps = losses.sequence_logprobs(logits, tokens[:, 1:], mask)
  return logps.reshape(rows, two), jnp.sum(mask, axis=-1).reshape(rows, two)


def loss_fn(config):
  """LossFn over pair rows; the reference log-probs come from batch['ref_logps'] (precomputed) or frozen['ref']."""
  d = config.rlhf.dpo
  policy = {train: gm.GPTLM(config.model, deterministic=not train) for train in (False, True)}

  def fn(params, batch, rng, train, frozen):
    logps, lengths = _pair_logps(policy[train], params, batch, rng)
    if 'ref_logps' in batch:
      ref = batch['ref_logps']
    else:
      ref = jax.lax.stop_gradient(_pair_logps(policy[False], frozen['ref'], batch)[0])
    pair_losses = dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta=d.beta, loss_type=d.loss,
                           label_smoothing=d.label_smoothing, chosen_lengths=lengths[:, 0],
                           rejected_lengths=lengths[:, 1])
    if d.nll_coef:
      pair_losses = pair_losses - d.nll_coef * logps[:, 0] / jnp.maximum(lengths[:, 0], 1)
    w = batch['weight']
    chosen, rejected = d.beta * (logps[:, 0] - ref[:, 0]), d.beta * (logps[:, 1] - ref[:, 1])
    extra = {'rewards/chosen': jnp.sum(w * chosen), 'rewards/rejected': jnp.sum(w * rejected),
             'rewards/margin': jnp.sum(w * (chosen - rejected)), 'rewards/accuracy': jnp.sum(w * (chosen > rejected))}
    return jnp.sum(w * pair_losses), jnp.sum(w), extra
  return fn


def reference_logps(config, ref_params, rows: dict, mesh) -> np.ndarray:
  """The reference's sequence log-probs [N, 2] over every row, in batches of the training batch's rows, whole on
  every process (each holds every row, as its row stream does)."""
  module = gm.GPTLM(config.model)
  shards = gs.batch_shards(mesh)
  batch_rows = shards * max(1, config.train.batch_tokens // (2 * stage.seq_len(config)) // shards)
  score = jax.jit(lambda p, b: _pair_logps(module, p, b)[0])
  out = []
  with gs.activation_context(mesh):
    for whole in rdata.eval_batches(rows, batch_rows):
      batch = {k: gs.global_rows(whole[k], mesh) for k in ('tokens', 'loss_mask')}
      out.append(gs.to_host(score(ref_params, batch)))
  return np.concatenate(out)[:stage.n_rows(rows)]


def build_task(config):
  r = config.rlhf
  data = stage.load(config, 'dpo', lambda fmt: rdata.pair, stage.toy_source(toy.pairs))
  context = stage.seq_len(config)
  rows_of = lambda examples, counts: rdata.pair_rows(examples, data.tokenizer, context,  # noqa: E731
                                                     r.max_prompt_tokens, counts)
  train_rows = rows_of(data.train, data.counts)
  held_out = rows_of(data.held_out, data.held_out_counts) if data.held_out is not None else None
  tokens_per_row = 2 * context
  mesh = gs.make_mesh(config.mesh)
  module = gm.GPTLM(config.model)
  if r.init_from:
    ref = stage.load_lm_params(r.init_from, config, mesh)
  else:
    with gs.activation_context(mesh):  # the same random init as the policy's in loop.setup
      ref = gm.init_params(module, jax.random.split(jax.random.PRNGKey(config.train.seed))[0],
                           shardings=gs.param_shardings(gm.abstract_variables(module)['params'], mesh))
  frozen = {'ref': ref}
  if r.dpo.precompute_ref:
    train_rows['ref_logps'] = reference_logps(config, ref, train_rows, mesh)
    if held_out is not None:
      held_out['ref_logps'] = reference_logps(config, ref, held_out, mesh)
    frozen = {}
  # The reference's forward pass is a third of a training row's FLOPs, counted only when it runs in the step.
  return (*stage.make_task(config, data, train_rows, held_out, tokens_per_row, module, loss_fn(config),
                           1.0 if r.dpo.precompute_ref else 4 / 3, frozen), data)


def main(argv):
  del argv
  cli.check_workdir(FLAGS.workdir)
  config = stage.prepare(cli.config_from_flags())
  if not config.rlhf.init_from:
    print('warning: rlhf.init_from is empty: the policy and its reference start from the same random init.',
          flush=True)
  config, task, data = build_task(config)
  return stage.train(config, FLAGS.workdir, task, data, task.train_stream.n)[0]


if __name__ == '__main__':
  cli.run_main(main, 'configs/rlhf.py:dpo')
