"""One PPO update with a per-token KL penalty to the reference policy (and PPO-ptx), pure and jittable.

`make_update(config, optimizer, ids)` returns `update(params, train, frozen, batch, kl_coef)`, which does, in
order and inside one jit, purejaxrl's phases:

    rollout:     the KV-cache decoder samples responses (temperature tau, per-token log-probs of the sampling
                 distribution, done flags); the reward model scores each at its EOS (normalised with gain and
                 bias, minus rlhf.ppo.missing_eos_penalty without EOS); the reference's log-probs; values
    advantages:  per-token rewards -beta (logp - logp_ref) with the score at EOS, GAE as a reverse lax.scan,
                 advantages whitened over valid tokens
    epochs:      rlhf.ppo.epochs x minibatches as nested scans (a fresh permutation per epoch), each minibatch one
                 optimizer step on the clipped policy loss + value_coef x the clipped value loss (+ ptx_coef x the
                 LM loss of a pretraining minibatch); a non-finite step is skipped and counted, as in loop.py.

Policy and value are one params tree ({'policy', 'value'}); the reference and reward params are `Frozen`.
LM-head logits are computed only at the positions that predict response tokens.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gpt_jax import decoding
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax import optim
from gpt_jax.heads import RewardModel, ValueModel

SAMPLE_ROWS = 4  # episodes each update hands back for the sample table


class TokenIds(NamedTuple):
  eot: int
  pad: int


class Frozen(NamedTuple):
  """What an update reads but does not train: the reference policy, the reward model and the normalisation of
  its score (gain * raw + bias)."""
  ref: Any
  reward: Any
  gain: jax.Array
  bias: jax.Array


class Models(NamedTuple):
  policy: gm.GPTLM
  value: ValueModel
  reward: RewardModel


def models_of(config) -> Models:
  return Models(gm.GPTLM(config.model), ValueModel(config.model), RewardModel(config.model))


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


# ---------------------------------------------------------------------------------------------------------------
# Advantages.

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


def masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_var(x, mask):
  """The variance of x over the positions where mask is 1 (the biased estimate)."""
  return masked_mean(jnp.square(x - masked_mean(x, mask)), mask)


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


# ---------------------------------------------------------------------------------------------------------------
# Rollout.

def join(prompts, lengths, response, pad_id: int):
  """[B, P + T]: each row's prompt (lengths[b] tokens), its response right after it, then padding."""
  batch, prompt_len = prompts.shape
  j = jnp.arange(prompt_len + response.shape[1])[None, :]
  in_prompt = j < lengths[:, None]
  at = j - lengths[:, None]
  from_prompt = jnp.take_along_axis(prompts, jnp.minimum(j, prompt_len - 1).repeat(batch, 0), axis=1)
  from_response = jnp.take_along_axis(response, jnp.clip(at, 0, response.shape[1] - 1), axis=1)
  return jnp.where(in_prompt, from_prompt, jnp.where(at < response.shape[1], from_response, pad_id))


def response_positions(lengths, steps: int):
  """[B, T]: the positions whose outputs predict response tokens 0..steps-1 (prompt length - 1 + t)."""
  return lengths[:, None] - 1 + jnp.arange(steps)[None, :]


def response_logits(module, params, sequences, lengths, steps: int, temperature: float):
  """Logits / temperature [B, T, V] over the real vocabulary for each response token; the LM head runs at those
  T positions only."""
  logits = module.apply({'params': params}, sequences, logits_at=response_positions(lengths, steps))
  return logits[..., :module.config.vocab_size] / temperature


def response_values(module, params, sequences, lengths, steps: int):
  """The value head's [B, T] at the positions that predict response tokens."""
  values = module.apply({'params': params}, sequences)
  return jnp.take_along_axis(values, response_positions(lengths, steps), axis=1)


def score_responses(models: Models, frozen: Frozen, sequences, lengths, last):
  """The reward model's raw score [B] of each prompt + response, read at the response's last token (its EOS)."""
  real = jnp.arange(sequences.shape[1])[None, :] <= (lengths + last)[:, None]
  return models.reward.apply({'params': frozen.reward}, sequences, real.astype(jnp.int32))


def sample(config, models: Models, policy_params, batch, rng, ids: TokenIds):
  """(generated, sequences [B, P + T], mask, last, has_eos): responses to batch['prompts'] at PPO's temperature."""
  steps = config.rlhf.response_tokens
  generate = decoding.make_generate_fn(models.policy, config.model, eot_id=ids.eot, pad_id=ids.pad)
  gen = generate(policy_params, batch['prompts'], batch['lengths'], rng, jnp.float32(config.rlhf.temperature),
                 jnp.float32(1.0), max_new_tokens=steps, top_k=0, greedy=False, nucleus=False)
  mask, last, has_eos = episode_ends(gen.tokens, gen.done, ids.eot)
  return gen, join(batch['prompts'], batch['lengths'], gen.tokens, ids.pad), mask, last, has_eos


def rollout(config, models: Models, params, frozen: Frozen, batch, kl_coef, rng, ids: TokenIds) -> Rollout:
  """Samples responses to batch['prompts'] and turns them into whitened advantages and returns."""
  rl, steps, lengths = config.rlhf, config.rlhf.response_tokens, batch['lengths']
  gen, sequences, mask, last, has_eos = sample(config, models, params['policy'], batch, rng, ids)
  ref_logits = response_logits(models.policy, frozen.ref, sequences, lengths, steps, rl.temperature)
  ref_logprobs = losses.token_logprobs(ref_logits, gen.tokens)
  values = response_values(models.value, params['value'], sequences, lengths, steps) * mask
  raw = score_responses(models, frozen, sequences, lengths, last)
  score = frozen.gain * raw + frozen.bias - rl.ppo.missing_eos_penalty * (~has_eos)
  rewards = shaped_rewards(gen.logprobs, ref_logprobs, mask, last, score, kl_coef)
  if rl.ppo.whiten_rewards:
    rewards = whiten(rewards, mask, shift_mean=False)
  advantages, returns = gae(rewards, values, mask, rl.ppo.gamma, rl.ppo.lam)
  return Rollout(sequences, lengths, gen.tokens, mask, gen.logprobs * mask, ref_logprobs * mask, values,
                 whiten(advantages, mask), returns, score, has_eos)


# ---------------------------------------------------------------------------------------------------------------
# Loss and update.

def policy_objective(advantages, ratio, clip: float, mask):
  """(PPO's clipped policy loss, clip_frac): the token mean of max(-A r, -A clip(r, 1 +- eps)); clip_frac counts
  the tokens where the clipped branch is the one taken, as lm-human-preferences and TRL do."""
  losses_, clipped = -advantages * ratio, -advantages * jnp.clip(ratio, 1 - clip, 1 + clip)
  return masked_mean(jnp.maximum(losses_, clipped), mask), masked_mean((clipped > losses_).astype(jnp.float32), mask)


def value_objective(values, old_values, returns, clip: float, mask):
  """(the clipped value loss, value_clip_frac): 0.5 x the token mean of max((V - R)^2, (V_clipped - R)^2), V
  clipped to old V +- clip; value_clip_frac counts the tokens where the clipped branch is taken."""
  clipped_values = old_values + jnp.clip(values - old_values, -clip, clip)
  losses_, clipped = jnp.square(values - returns), jnp.square(clipped_values - returns)
  return (0.5 * masked_mean(jnp.maximum(losses_, clipped), mask),
          masked_mean((clipped > losses_).astype(jnp.float32), mask))


def minibatch_loss(config, models: Models, params, mb: Rollout, ptx):
  """(PPO loss (+ ptx), metrics) of one minibatch of episodes, InstructGPT/LHP's clipped objectives."""
  rl, steps = config.rlhf, mb.response.shape[1]
  logits = response_logits(models.policy, params['policy'], mb.sequences, mb.lengths, steps, rl.temperature)
  logprobs = losses.token_logprobs(logits, mb.response)
  values = response_values(models.value, params['value'], mb.sequences, mb.lengths, steps)
  log_ratio = (logprobs - mb.logprobs) * mb.mask
  ratio = jnp.exp(log_ratio)
  policy_loss, clip_frac = policy_objective(mb.advantages, ratio, rl.ppo.ratio_clip, mb.mask)
  value_loss, value_clip_frac = value_objective(values, mb.values, mb.returns, rl.ppo.value_clip, mb.mask)
  loss = policy_loss + rl.ppo.value_coef * value_loss
  entropy = -jnp.sum(jax.nn.softmax(logits, axis=-1) * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  metrics = dict(policy_loss=policy_loss, value_loss=value_loss, ratio=masked_mean(ratio, mb.mask),
                 approx_kl=0.5 * masked_mean(jnp.square(log_ratio), mb.mask), clip_frac=clip_frac,
                 value_clip_frac=value_clip_frac, entropy=masked_mean(entropy, mb.mask))
  if ptx is not None:
    ptx_sum, ptx_weight, _ = losses.lm_loss_fn(config)(params['policy'], ptx, jax.random.key(0), False, None)
    metrics['ptx_loss'] = ptx_sum / jnp.maximum(ptx_weight, 1.0)
    loss = loss + rl.ppo.ptx_coef * metrics['ptx_loss']
  return loss, metrics


def rollout_metrics(ro: Rollout, kl_coef) -> dict:
  """What an update's episodes say: score, KL to the reference, lengths, no-EOS share, explained variance (over
  valid tokens)."""
  kl = jnp.sum((ro.logprobs - ro.ref_logprobs) * ro.mask, axis=1)
  explained = 1.0 - masked_var(ro.returns - ro.values, ro.mask) / jnp.maximum(masked_var(ro.returns, ro.mask), 1e-8)
  return dict(score=jnp.mean(ro.score), kl=jnp.mean(kl), kl_coef=kl_coef, response_length=jnp.mean(ro.mask.sum(1)),
              no_eos_fraction=1.0 - jnp.mean(ro.has_eos), explained_variance=explained,
              sampled_logprob=masked_mean(ro.logprobs, ro.mask))


SKIP_COUNTERS = ('consecutive_skips', 'longest_skip_run', 'total_skips')


def make_update(config, optimizer, ids: TokenIds):
  """update(params, train, frozen, batch, kl_coef) -> (params, train, metrics, samples): one PPO update; samples
  is the first SAMPLE_ROWS episodes of its rollout. batch: prompts [B, P], lengths [B] and, for PPO-ptx, 'ptx':
  the pretraining rows as [epochs, minibatches, rows, L] arrays (inputs, targets, and positions and segment_ids
  when packed)."""
  rl = config.rlhf.ppo
  models = models_of(config)

  def minibatch_step(carry, inputs):
    params, opt_state, skips = carry
    mb, ptx = inputs
    (loss, metrics), grads = jax.value_and_grad(
        lambda policy_value: minibatch_loss(config, models, policy_value, mb, ptx), has_aux=True)(params)
    metrics['grad_norm'] = optax.tree.norm(grads)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    # A non-finite step keeps the old params and optimizer state, as the shared loop's train step does.
    finite = jnp.isfinite(loss) & jnp.isfinite(metrics['grad_norm'])
    params, opt_state = jax.lax.cond(finite, lambda: (optax.apply_updates(params, updates), new_opt_state),
                                     lambda: (params, opt_state))
    return (params, opt_state, loop.count_skips(skips, finite)), metrics

  def update(params, train, frozen: Frozen, batch, kl_coef):
    rng, roll_rng, epoch_rng = jax.random.split(train['rng'], 3)
    ro = rollout(config, models, params, frozen, batch, kl_coef, roll_rng, ids)
    episodes = ro.response.shape[0]
    lr = optim.learning_rate(config.optim, train['sequences'].astype(jnp.float32) * config.model.context)

    def epoch(carry, inputs):
      epoch_key, ptx = inputs
      order = jax.random.permutation(epoch_key, episodes)
      split = lambda x: x[order].reshape(rl.minibatches, episodes // rl.minibatches, *x.shape[1:])  # noqa: E731
      return jax.lax.scan(minibatch_step, carry, (jax.tree.map(split, ro), ptx))

    keys = jax.random.split(epoch_rng, rl.epochs)
    skips = {name: train[name] for name in SKIP_COUNTERS}
    carry = (params, loop.with_learning_rate(train['opt_state'], lr), skips)
    (params, opt_state, skips), mb_metrics = jax.lax.scan(epoch, carry, (keys, batch.get('ptx')))
    train = dict(train, **skips, opt_state=opt_state, rng=rng, step=train['step'] + 1,
                 sequences=train['sequences'] + episodes)
    metrics = {name: jnp.mean(value) for name, value in mb_metrics.items()}
    metrics.update({f'first_minibatch/{name}': mb_metrics[name][0, 0] for name in ('ratio', 'approx_kl')})
    metrics.update(rollout_metrics(ro, kl_coef), learning_rate=lr, skipped=skips['total_skips'])
    return params, train, metrics, jax.tree.map(lambda x: x[:SAMPLE_ROWS], ro)
  return update
