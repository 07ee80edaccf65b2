"""PPO with a per-token KL penalty to the SFT policy, and PPO-ptx: all of one update is one compiled program.

    python -m gpt_jax.rlhf.ppo --config=configs/rlhf.py:ppo --workdir=runs/ppo \\
        --config.rlhf.policy_from=runs/sft --config.rlhf.reward_from=runs/rm [--config.rlhf.ptx_source=stdlib]

`update(params, train, frozen, batch, kl_coef)` does, in order and inside one jit: the rollout through the KV-cache
decoder (temperature tau, no top-k / top-p, per-token log-probs of the sampling distribution, done flags), the
reward model's score at EOS (gain and bias from its reward_norm.json, minus rlhf.missing_eos_penalty without
EOS), the reference's log-probs, per-token rewards -beta (logp - logp_ref) with the score added at EOS, values, GAE
as a reverse lax.scan, advantage whitening, then ppo_epochs x minibatches as nested scans (a fresh permutation per
epoch), each minibatch one optimizer step on the clipped policy loss + value_coef x the clipped value loss (+
ptx_coef x the LM loss on a pretraining minibatch). Policy and value are one params tree ({'policy', 'value'}),
one optimizer, one checkpoint item; the reference and reward params are frozen arguments.

The adaptive KL controller lives on the host; its beta is saved with the prompt and pretraining stream positions
in the checkpoint's data state, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import config as gcfg
from gpt_jax import decoding
from gpt_jax import flops
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import metrics as metrics_lib
from gpt_jax import model as gm
from gpt_jax import optim
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import pipeline
from gpt_jax.heads import PolicyValue, RewardModel, ValueModel
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import reward as reward_lib
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy

FLAGS = flags.FLAGS
cli.define_workdir_flag()


def gae(rewards, values, mask, gamma: float, lam: float):
  """(advantages, returns) [B, T] by a reverse scan: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam
  A_{t+1}. Positions where mask is 0 lie after the episode's end: their V and A are 0 and they add nothing.
  returns = advantages + values, unwhitened."""
  mask = mask.astype(jnp.float32)

  def step(carry, x):
    next_value, next_advantage = carry
    r, v, m = x
    advantage = (r + gamma * next_value - v + gamma * lam * next_advantage) * m
    return (v * m, advantage), advantage

  zeros = jnp.zeros(rewards.shape[:1], jnp.float32)
  _, advantages = jax.lax.scan(step, (zeros, zeros), (rewards.T, values.T, mask.T), reverse=True)
  advantages = advantages.T
  return advantages, (advantages + values) * mask


def whiten(x, mask, shift_mean: bool = True):
  """x normalised over the positions where mask is 1: masked mean, unbiased variance, eps 1e-8; with
  shift_mean=False the mean is added back. Masked-out positions are 0."""
  mask = mask.astype(jnp.float32)
  n = jnp.sum(mask)
  mean = jnp.sum(x * mask) / jnp.maximum(n, 1.0)
  var = jnp.sum(jnp.square(x - mean) * mask) / jnp.maximum(n - 1.0, 1.0)
  out = (x - mean) * jax.lax.rsqrt(var + 1e-8)
  return jnp.where(mask > 0, out if shift_mean else out + mean, 0.0)


def episode_ends(tokens, done, eot_id: int):
  """(mask [B, T], last [B], has_eos [B]) from the decoder's tokens and done flags: mask is 1 up to and including
  the first EOS (every position when there is none), last is the EOS index (T - 1 without one)."""
  mask = (~done).astype(jnp.float32)
  eos = (tokens == eot_id) & (mask > 0)
  has_eos = jnp.any(eos, axis=1)
  return mask, jnp.where(has_eos, jnp.argmax(eos, axis=1), tokens.shape[1] - 1), has_eos


def shaped_rewards(logprobs, ref_logprobs, mask, last, score, kl_coef):
  """Per-token rewards [B, T]: -beta (logp - logp_ref) on every valid token, plus the score on the last one
  (the EOS)."""
  return -kl_coef * (logprobs - ref_logprobs) * mask + jax.nn.one_hot(last, mask.shape[1]) * score[:, None]


class Rollout(NamedTuple):
  """One update's episodes; [B, T] per response token unless noted."""
  sequences: jax.Array  # [B, P + T] prompt, response, padding
  lengths: jax.Array  # [B] prompt lengths
  response: jax.Array  # sampled ids (pad after EOS)
  mask: jax.Array  # 1 up to and including EOS (or the last token when there is none)
  logprobs: jax.Array  # of the sampling distribution (logits / tau)
  ref_logprobs: jax.Array
  values: jax.Array
  advantages: jax.Array  # whitened
  returns: jax.Array
  score: jax.Array  # [B] normalised reward-model score (after the no-EOS penalty)
  has_eos: jax.Array  # [B]


def _join(prompts, lengths, response, pad_id: int):
  """[B, P + T]: each row's prompt (lengths[b] tokens), its response right after it, then padding."""
  batch, prompt_len = prompts.shape
  j = jnp.arange(prompt_len + response.shape[1])[None, :]
  in_prompt = j < lengths[:, None]
  at = j - lengths[:, None]
  from_prompt = jnp.take_along_axis(prompts, jnp.minimum(j, prompt_len - 1).repeat(batch, 0), axis=1)
  from_response = jnp.take_along_axis(response, jnp.clip(at, 0, response.shape[1] - 1), axis=1)
  return jnp.where(in_prompt, from_prompt, jnp.where(at < response.shape[1], from_response, pad_id))


def _at_response(x, lengths, steps: int):
  """x [B, S, ...] at the positions that predict response tokens 0..steps-1 (prompt length - 1 + t)."""
  index = lengths[:, None] - 1 + jnp.arange(steps)[None, :]
  return jnp.take_along_axis(x, index.reshape(*index.shape, *([1] * (x.ndim - 2))), axis=1)


def response_logits(module, params, sequences, lengths, steps: int, temperature: float):
  """Logits / temperature [B, T, V] over the real vocabulary for each response token."""
  logits = module.apply({'params': params}, sequences)
  return _at_response(logits, lengths, steps)[..., :module.config.vocab_size] / temperature


class Models(NamedTuple):
  policy: gm.GPTLM
  value: ValueModel
  reward: RewardModel


def rollout(config, models: Models, params, frozen, batch, kl_coef, rng, ids) -> Rollout:
  """Samples responses to batch['prompts'] and turns them into whitened advantages and returns."""
  r, eot_id, pad_id = config.rlhf, ids[0], ids[1]
  steps, tau = r.response_tokens, r.temperature
  generate = decoding.make_generate_fn(models.policy, config.model, eot_id=eot_id, pad_id=pad_id)
  gen = generate(params['policy'], batch['prompts'], batch['lengths'], rng, jnp.float32(tau), jnp.float32(1.0),
                 max_new_tokens=steps, top_k=0, greedy=False, nucleus=False)
  mask, last, has_eos = episode_ends(gen.tokens, gen.done, eot_id)
  sequences = _join(batch['prompts'], batch['lengths'], gen.tokens, pad_id)
  lengths = batch['lengths']
  ref_logits = response_logits(models.policy, frozen['ref'], sequences, lengths, steps, tau)
  ref_logprobs = losses.token_logprobs(ref_logits, gen.tokens)
  values = _at_response(models.value.apply({'params': params['value']}, sequences), lengths, steps) * mask
  real = jnp.arange(sequences.shape[1])[None, :] <= (lengths + last)[:, None]
  raw = models.reward.apply({'params': frozen['reward']}, sequences, real.astype(jnp.int32))
  score = frozen['gain'] * raw + frozen['bias'] - r.missing_eos_penalty * (~has_eos)
  rewards = shaped_rewards(gen.logprobs, ref_logprobs, mask, last, score, kl_coef)
  if r.whiten_rewards:
    rewards = whiten(rewards, mask, shift_mean=False)
  advantages, returns = gae(rewards, values, mask, r.gamma, r.lam)
  return Rollout(sequences, lengths, gen.tokens, mask, gen.logprobs * mask, ref_logprobs * mask, values,
                 whiten(advantages, mask), returns, score, has_eos)


def _masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def minibatch_loss(config, models: Models, params, mb: Rollout, ptx):
  """(PPO loss (+ ptx), metrics) of one minibatch of episodes, InstructGPT/LHP's clipped objectives."""
  r = config.rlhf
  steps = mb.response.shape[1]
  logits = response_logits(models.policy, params['policy'], mb.sequences, mb.lengths, steps, r.temperature)
  logprobs = losses.token_logprobs(logits, mb.response)
  values = _at_response(models.value.apply({'params': params['value']}, mb.sequences), mb.lengths, steps)
  log_ratio = (logprobs - mb.logprobs) * mb.mask
  ratio = jnp.exp(log_ratio)
  clipped_ratio = jnp.clip(ratio, 1 - r.clip, 1 + r.clip)
  policy_loss = _masked_mean(jnp.maximum(-mb.advantages * ratio, -mb.advantages * clipped_ratio), mb.mask)
  clipped_values = mb.values + jnp.clip(values - mb.values, -r.value_clip, r.value_clip)
  value_losses = jnp.maximum(jnp.square(values - mb.returns), jnp.square(clipped_values - mb.returns))
  value_loss = 0.5 * _masked_mean(value_losses, mb.mask)
  loss = policy_loss + r.value_coef * value_loss
  probs = jax.nn.softmax(logits, axis=-1)
  entropy = -jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  metrics = dict(policy_loss=policy_loss, value_loss=value_loss, ratio=_masked_mean(ratio, mb.mask),
                 approx_kl=0.5 * _masked_mean(jnp.square(log_ratio), mb.mask),
                 clip_frac=_masked_mean((jnp.abs(ratio - 1) > r.clip).astype(jnp.float32), mb.mask),
                 value_clip_frac=_masked_mean((jnp.abs(values - mb.values) > r.value_clip).astype(jnp.float32),
                                              mb.mask),
                 entropy=_masked_mean(entropy, mb.mask))
  if ptx is not None:
    ptx_logits = models.policy.apply({'params': params['policy']}, ptx['inputs'])
    ptx_loss = -jnp.mean(losses.token_logprobs(ptx_logits, ptx['targets']))
    loss = loss + r.ptx_coef * ptx_loss
    metrics['ptx_loss'] = ptx_loss
  return loss, metrics


def make_update(config, optimizer, ids: tuple[int, int]):
  """update(params, train, frozen, batch, kl_coef) -> (params, train, metrics, rollout): one PPO update.
  batch: prompts [B, P], lengths [B] and, for PPO-ptx, ptx_inputs / ptx_targets [epochs, minibatches, rows, L]."""
  r = config.rlhf
  models = Models(gm.GPTLM(config.model), ValueModel(config.model), RewardModel(config.model))

  def update(params, train, frozen, batch, kl_coef):
    rng, roll_rng, epoch_rng = jax.random.split(train['rng'], 3)
    ro = rollout(config, models, params, frozen, batch, kl_coef, roll_rng, ids)
    episodes = ro.response.shape[0]
    size = episodes // r.minibatches
    lr = optim.learning_rate(config.optim, train['sequences'].astype(jnp.float32) * config.model.context)
    opt_state = train['opt_state']
    opt_state = opt_state._replace(hyperparams=dict(opt_state.hyperparams, learning_rate=lr))

    def minibatch_step(carry, inputs):
      params, opt_state = carry
      mb, ptx = inputs
      grads, mb_metrics = jax.grad(lambda p: minibatch_loss(config, models, p, mb, ptx), has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      mb_metrics['grad_norm'] = optax.tree.norm(grads)
      return (optax.apply_updates(params, updates), opt_state), mb_metrics

    def epoch(carry, inputs):
      epoch_key, ptx = inputs
      order = jax.random.permutation(epoch_key, episodes)
      split = lambda x: x[order].reshape(r.minibatches, size, *x.shape[1:])  # noqa: E731
      return jax.lax.scan(minibatch_step, carry, (jax.tree.map(split, ro), ptx))

    ptx = ({'inputs': batch['ptx_inputs'], 'targets': batch['ptx_targets']} if 'ptx_inputs' in batch else
           None)
    keys = jax.random.split(epoch_rng, r.ppo_epochs)
    (params, opt_state), mb_metrics = jax.lax.scan(epoch, (params, opt_state), (keys, ptx))
    train = dict(train, opt_state=opt_state, rng=rng, step=train['step'] + 1,
                 sequences=train['sequences'] + episodes)
    metrics = {name: jnp.mean(value) for name, value in mb_metrics.items()}
    metrics.update({f'first_minibatch/{name}': mb_metrics[name][0, 0] for name in ('ratio', 'approx_kl')})
    metrics.update(rollout_metrics(ro, kl_coef), learning_rate=lr)
    return params, train, metrics, ro
  return update


def rollout_metrics(ro: Rollout, kl_coef) -> dict:
  """What an update's episodes say: score, KL to the reference, lengths, no-EOS share, explained variance."""
  kl = jnp.sum((ro.logprobs - ro.ref_logprobs) * ro.mask, axis=1)
  residual = jnp.var(jnp.where(ro.mask > 0, ro.returns - ro.values, 0.0))
  explained = 1.0 - residual / jnp.maximum(jnp.var(jnp.where(ro.mask > 0, ro.returns, 0.0)), 1e-8)
  return dict(score=jnp.mean(ro.score), kl=jnp.mean(kl), kl_coef=kl_coef, response_length=jnp.mean(ro.mask.sum(1)),
              no_eos_fraction=1.0 - jnp.mean(ro.has_eos), explained_variance=explained,
              sampled_logprob=jnp.sum(ro.logprobs) / jnp.maximum(jnp.sum(ro.mask), 1.0))


# ---------------------------------------------------------------------------------------------------------------
# The run: config, prompts and pretraining streams, state, the update loop.

def prepare(config):
  """The PPO config: model shape and tokenizer of rlhf.policy_from, checked against the reward model's and the
  rollout shapes."""
  r = config.rlhf
  for name, what in (('policy_from', 'the SFT run PPO starts from'), ('reward_from', 'the reward-model run')):
    if not r[name]:
      raise ConfigError(f'rlhf.{name} is required: {what}, e.g. --config.rlhf.{name}=runs/'
                        f'{"sft" if name == "policy_from" else "rm"}.')
    if not os.path.isdir(r[name]):
      raise ConfigError(f'rlhf.{name}={r[name]!r} is not a directory: give {what}.')
  config = config.copy_and_resolve_references()
  config.rlhf.init_from = r.policy_from
  config = stage.prepare(config)
  rm_model = ckpt.load_config(r.reward_from).model
  for name, value in config.model.items():
    if name not in stage.STAGE_MODEL_FIELDS and rm_model[name] != value:
      raise ConfigError(f'the reward model in {r.reward_from} has model.{name}={rm_model[name]!r} but the policy '
                        f'has {value!r}: train the reward model from the same SFT run (rlhf.init_from).')
  reward_lib.read_normalization(r.reward_from)
  r, context = config.rlhf, config.model.context
  if r.max_prompt_tokens + r.response_tokens > context:
    raise ConfigError(f'rlhf.max_prompt_tokens={r.max_prompt_tokens} + rlhf.response_tokens={r.response_tokens} '
                      f'exceed model.context={context}: shorten one of them.')
  episodes = config.train.batch_tokens // context
  if episodes % r.minibatches:
    raise ConfigError(f'rlhf.minibatches={r.minibatches} does not divide the {episodes} episodes per update '
                      f'(train.batch_tokens / model.context): choose a divisor.')
  return config


class Streams:
  """Prompts, pretraining rows (PPO-ptx) and the KL controller's beta, saved together as the data state."""

  def __init__(self, prompts: rdata.RowStream, ptx: pipeline.TrainStream | None, kl_coef: float):
    self.prompts, self.ptx, self.kl_coef = prompts, ptx, kl_coef

  def state(self) -> dict:
    return dict(prompts=self.prompts.state(), ptx=self.ptx.state() if self.ptx else None, kl_coef=self.kl_coef)

  def restore(self, state: dict) -> None:
    self.prompts.restore(state['prompts'])
    if self.ptx:
      self.ptx.restore(state['ptx'])
    self.kl_coef = float(state['kl_coef'])

  def adapt(self, config, kl: float, episodes: int) -> None:
    """The adaptive KL controller (Ziegler et al.): beta *= 1 + clip(KL / target - 1, +-0.2) n / horizon."""
    r = config.rlhf
    if r.kl_target:
      error = float(np.clip(kl / r.kl_target - 1.0, -0.2, 0.2))
      self.kl_coef *= 1.0 + error * episodes / r.kl_horizon


def _pretraining(config, source: str):
  c = config.copy_and_resolve_references()
  c.data.source = source
  return gcfg.validate(c)


def build_task(config):
  """(Task, Data, prompts) for PPO: PolicyValue trained, the pretraining loss of the policy as the eval loss."""
  r, context = config.rlhf, config.model.context
  data = stage.load(config, 'ppo', rdata.prompt_of,
                    stage.toy_source(lambda n, seed, held_out: [{'prompt': x['prompt']}
                                                                for x in toy.instructions(n, seed, held_out)]))
  rows = rdata.prompt_rows(data.train, data.tokenizer, r.max_prompt_tokens, data.counts)
  ptx = (pipeline.TrainStream(_pretraining(config, r.ptx_source), process_index=0, process_count=1)
         if r.ptx_source else None)
  streams = Streams(stage.stream(config, rows, data), ptx, r.kl_coef)
  eval_rows = config.train.batch_tokens // context  # the pretraining loss of the policy, on data.source
  eval_batches = (lambda: pipeline.eval_batches(config, config.train.eval_batches, eval_rows)) \
      if config.train.eval_every and config.train.eval_batches else None
  lm_loss = losses.lm_loss_fn(config)
  task = loop.Task(module=PolicyValue(config.model),
                   loss_fn=lambda params, batch, rng, train, frozen: lm_loss(params['policy'], batch, rng, train, {}),
                   train_stream=streams, tokens_per_row=context,  # PPO's loop reports episodes/s, not MFU
                   flops_per_row=context * flops.flops_per_token(config.model),
                   eval_batches=_cached(eval_batches), init_params=_init_params(config))
  return task, data


def _cached(make):
  """make() evaluated once, on first use (None stays None)."""
  if make is None:
    return None
  cached = []

  def batches():
    if not cached:
      cached.extend(make())
    return cached
  return batches


def _init_params(config):
  """The policy from rlhf.policy_from; the value network from it with a zero head, or from the reward model."""
  r = config.rlhf

  def init_params(rng, shardings):
    mesh = jax.tree.leaves(shardings)[0].mesh
    with gs.activation_context(mesh):
      params = gm.init_params(PolicyValue(config.model), rng, shardings=shardings)
    policy = stage.load_lm_params(r.policy_from, config, mesh)
    if r.value_from == 'reward':
      rm = _load_reward(config, mesh)
      value = dict(trunk=rm['trunk'], value_head=rm['reward_head'])
    else:
      value = dict(trunk=jax.tree.map(jnp.copy, policy['trunk']),  # its own buffers: params are donated
                   value_head=jax.tree.map(jnp.zeros_like, params['value']['value_head']))
    return dict(policy={k: policy.get(k, v) for k, v in params['policy'].items()}, value=value)
  return init_params


def _load_reward(config, mesh):
  abstract = gs.abstract_params(gm.abstract_variables(RewardModel(config.model))['params'], mesh)
  return ckpt.load_for_inference(config.rlhf.reward_from, abstract)[0]


def frozen_params(config, mesh) -> dict:
  """The reference policy, the reward model and its gain and bias, placed on mesh (optionally bfloat16)."""
  r = config.rlhf
  cast = (lambda t: jax.tree.map(lambda x: x.astype(jnp.bfloat16), t)) if r.frozen_dtype == 'bfloat16' else \
      (lambda t: t)
  norm = reward_lib.read_normalization(r.reward_from)
  scalar = lambda v: jax.device_put(jnp.float32(v), gs.replicated(mesh))  # noqa: E731
  return dict(ref=cast(stage.load_lm_params(r.policy_from, config, mesh)), reward=cast(_load_reward(config, mesh)),
              gain=scalar(norm['gain']), bias=scalar(norm['bias']))


def _update_fn(config, p: loop.Plan, frozen, ids):
  """make_update jitted on the run's mesh: params and train state donated, prompts split over the batch axes."""
  param_sh = jax.tree.map(lambda x: x.sharding, p.abstract_params)
  train_sh = jax.tree.map(lambda x: x.sharding, p.abstract_train)
  frozen_sh = jax.tree.map(lambda x: x.sharding, frozen)
  batch_sh = {'prompts': gs.batch_sharding(p.mesh), 'lengths': gs.batch_sharding(p.mesh)}
  if config.rlhf.ptx_source:
    batch_sh.update(ptx_inputs=gs.replicated(p.mesh), ptx_targets=gs.replicated(p.mesh))
  return jax.jit(make_update(config, p.optimizer, ids), donate_argnums=(0, 1),
                 in_shardings=(param_sh, train_sh, frozen_sh, batch_sh, None),
                 out_shardings=(param_sh, train_sh, None, None))


def _batch(config, streams: Streams, mesh) -> dict:
  r = config.rlhf
  episodes = config.train.batch_tokens // config.model.context
  local = streams.prompts.next_batch(episodes)
  batch = pipeline.make_global_batch({k: local[k] for k in ('prompts', 'lengths')}, gs.batch_sharding(mesh))
  if streams.ptx:
    rows = streams.ptx.next_batch(r.ppo_epochs * r.minibatches * r.ptx_rows)
    shape = (r.ppo_epochs, r.minibatches, r.ptx_rows, -1)
    for name in ('inputs', 'targets'):
      batch[f'ptx_{name}'] = jax.device_put(rows[name].reshape(shape), gs.replicated(mesh))
  return batch


def _samples_table(tokenizer, ro: Rollout, n: int = 4) -> str:
  ro = jax.device_get(ro)
  lines = ['| prompt | response | score |', '|---|---|---|']
  for i in range(min(n, len(ro.score))):
    prompt = tokenizer.decode(ro.sequences[i, :ro.lengths[i]].tolist())
    response = tokenizer.decode(ro.response[i, ro.mask[i] > 0].tolist())
    lines.append(f'| {prompt!r} | {response!r} | {ro.score[i]:.3f} |')
  return '\n'.join(lines)


def run(config, workdir: str, task: loop.Task, tokenizer, run_record: dict | None = None) -> str:
  """Updates until train.total_tokens episodes' tokens: 'finished', 'preempted' or 'interrupted'."""
  mesh = gs.make_mesh(config.mesh)
  p = loop.plan(config, task, mesh)
  checkpointer = ckpt.Checkpointer(workdir, config.checkpoint)
  try:
    state = loop.setup(config, task, mesh, checkpointer, p)
    ckpt.save_config(workdir, config, run_record)
    writer = metrics_lib.MetricWriter(workdir, config.train.total_tokens, config, config.train.wandb,
                                      resume_step=state.start_step)
    try:
      return _updates(config, task, state, checkpointer, writer, tokenizer)
    finally:
      writer.close()
  finally:
    checkpointer.wait()
    checkpointer.close()


def _updates(config, task: loop.Task, state: loop.State, checkpointer, writer, tokenizer) -> str:
  p, streams, r = state.plan, task.train_stream, config.rlhf
  frozen = frozen_params(config, p.mesh)
  update = _update_fn(config, p, frozen, (tokenizer.eot_id, tokenizer.pad_id))
  params, train, step = state.params, state.train_state, state.start_step
  episodes = config.train.batch_tokens // config.model.context
  updates = config.train.total_tokens // config.train.batch_tokens
  preemption = loop.Preemption()
  try:
    with gs.activation_context(p.mesh):
      if task.eval_batches and step == 0:  # the SFT policy's own pretraining loss, the baseline PPO-ptx guards
        writer.write(0, loop.evaluate(p.eval_fn, params, task, p.mesh), 0, prefix='eval')
      while step < updates:
        start = time.perf_counter()
        batch = _batch(config, streams, p.mesh)
        params, train, metrics, ro = update(params, train, frozen, batch, jnp.float32(streams.kl_coef))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - start
        streams.adapt(config, metrics['kl'], episodes)
        step += 1
        # tokens/s: the episodes' prompt and response slots per second of update.
        metrics.update(episodes_per_sec=episodes / elapsed,
                       tokens_per_sec=episodes * (r.max_prompt_tokens + r.response_tokens) / elapsed)
        writer.write(step, metrics, step * config.train.batch_tokens)
        if r.sample_every and step % r.sample_every == 0:
          writer.text(step, 'samples', _samples_table(tokenizer, ro))
        if step % config.checkpoint.every_steps == 0 or step == updates:
          checkpointer.save(step, params, train, streams.state(), force=True)
        if task.eval_batches and (step % config.train.eval_every == 0 or step == updates):
          writer.write(step, loop.evaluate(p.eval_fn, params, task, p.mesh), step * config.train.batch_tokens,
                       prefix='eval')
        if preemption.should_stop(step, 1):
          if step % config.checkpoint.every_steps:
            checkpointer.save(step, params, train, streams.state(), force=True)
          checkpointer.wait()
          writer.text(step, 'preempted', f'saved update {step}; rerun the same command to resume.')
          return 'interrupted' if preemption.signal_name == 'SIGINT' else 'preempted'
    _export_policy(config, checkpointer.directory, params, step)
    return 'finished'
  finally:
    preemption.restore()


def _export_policy(config, checkpoints: str, params, step: int) -> None:
  """<workdir>/policy: the policy alone as a params export, so sampling and evaluation read it as any GPT."""
  path = os.path.join(os.path.dirname(os.path.abspath(checkpoints)), 'policy')
  ckpt.export_params(path, params['policy'], step, config)
  if jax.process_index() == 0:
    print(f'policy written to {path} (sample or evaluate it with --workdir={path})', flush=True)


def main(argv):
  del argv
  cli.check_workdir(FLAGS.workdir)
  config = prepare(cli.config_from_flags())
  task, data = build_task(config)
  record = dict(cli.run_record(config, data.tokenizer), data=dict(format=data.format, rows=task.train_stream.prompts.n,
                                                                 **data.counts))
  stopped = run(config, FLAGS.workdir, task, data.tokenizer, record)
  return 130 if stopped == 'interrupted' else 0


if __name__ == '__main__':
  cli.run_main(main, 'configs/rlhf.py:ppo')
