"""PPO (and PPO-ptx) from an SFT policy against a reward model: the run around the update in ppo_update.py.

    python -m gpt_jax.rlhf.ppo --config=configs/rlhf.py:ppo --workdir=runs/ppo \\
        --config.rlhf.ppo.policy_from=runs/sft --config.rlhf.ppo.reward_from=runs/rm \\
        [--config.rlhf.ppo.ptx_source=stdlib]

The shared loop (loop.train) runs it: the update replaces the task's train step, and two hooks do what happens
between updates (the adaptive KL controller, every update; the sample table, every rlhf.ppo.sample_every). So a PPO
run has the loop's non-finite stop, checkpoint bookkeeping, preemption at any update, evaluation (the policy's
pretraining loss, from step 0) and progress lines. The policy is exported to <workdir>/policy when it finishes.

The reward normalisation (gain * raw + bias: mean 0 and std 1 at the start) is measured on a fresh start over the
SFT policy's own responses to the first update's prompts, sampled with PPO's temperature and response length and
scored on the sampled ids, as lm-human-preferences does. It is saved with the prompt and pretraining stream
positions and the KL controller's beta in the checkpoint's data state, so a resumed run equals an uninterrupted
one, and written to run.json.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import pipeline
from gpt_jax.heads import PolicyValue, RewardModel
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy
from gpt_jax.rlhf.ppo_update import Frozen, TokenIds, make_update, models_of, sample, score_responses

FLAGS = flags.FLAGS
cli.define_workdir_flag()


def episodes_per_update(config) -> int:
  return config.train.batch_tokens // stage.seq_len(config)


def prepare(config):
  """The PPO config: model shape and tokenizer of rlhf.ppo.policy_from, checked against the reward model's and the
  rollout shapes."""
  p = config.rlhf.ppo
  for name, what in (('policy_from', 'the SFT run PPO starts from'), ('reward_from', 'the reward-model run')):
    if not p[name]:
      raise ConfigError(f'rlhf.ppo.{name} is required: {what}, e.g. --config.rlhf.ppo.{name}=runs/'
                        f'{"sft" if name == "policy_from" else "rm"}.')
    if not os.path.isdir(p[name]):
      raise ConfigError(f'rlhf.ppo.{name}={p[name]!r} is not a directory: give {what}.')
  config = config.copy_and_resolve_references()
  config.rlhf.init_from = p.policy_from
  config = stage.prepare(config)
  rm_model = ckpt.load_config(p.reward_from).model
  for name, value in config.model.items():
    if name not in stage.STAGE_MODEL_FIELDS and rm_model[name] != value:
      raise ConfigError(f'the reward model in {p.reward_from} has model.{name}={rm_model[name]!r} but the policy '
                        f'has {value!r}: train the reward model from the same SFT run (rlhf.init_from).')
  rl, length = config.rlhf, stage.seq_len(config)
  name = 'rlhf.seq_len' if rl.seq_len else 'model.context'
  if rl.max_prompt_tokens + rl.response_tokens > length:
    raise ConfigError(f'rlhf.max_prompt_tokens={rl.max_prompt_tokens} + rlhf.response_tokens={rl.response_tokens} '
                      f'exceed {name}={length}: shorten one of them.')
  if episodes_per_update(config) % rl.ppo.minibatches:
    raise ConfigError(f'rlhf.ppo.minibatches={rl.ppo.minibatches} does not divide the {episodes_per_update(config)} '
                      f'episodes per update (train.batch_tokens / {name}): choose a divisor.')
  return config


class Streams:
  """A PPO run's data state: prompts, pretraining rows (PPO-ptx), the KL controller's beta and the reward
  normalisation, saved together in each checkpoint."""

  def __init__(self, prompts: rdata.RowStream, ptx: pipeline.TrainStream | None, kl_coef: float):
    self.prompts, self.ptx, self.kl_coef, self.reward_norm = prompts, ptx, kl_coef, None

  def next_batch(self, rows: int) -> dict:
    """This host's share of `rows` prompts (the loop makes them one global batch)."""
    local = self.prompts.next_batch(rows)
    return {name: local[name] for name in ('prompts', 'lengths')}

  def state(self) -> dict:
    return dict(prompts=self.prompts.state(), ptx=self.ptx.state() if self.ptx else None, kl_coef=self.kl_coef,
                reward_norm=self.reward_norm)

  def restore(self, state: dict) -> None:
    self.prompts.restore(state['prompts'])
    if self.ptx:
      self.ptx.restore(state['ptx'])
    self.kl_coef, self.reward_norm = float(state['kl_coef']), state['reward_norm']

  def adapt(self, config, kl: float) -> None:
    """The adaptive KL controller (Ziegler et al.): beta *= 1 + clip(KL / target - 1, +-0.2) n / horizon. A
    non-finite KL (a skipped update's) leaves beta as it is."""
    rl = config.rlhf.ppo
    if rl.kl_target and np.isfinite(kl):
      error = float(np.clip(kl / rl.kl_target - 1.0, -0.2, 0.2))
      self.kl_coef *= 1.0 + error * episodes_per_update(config) / rl.kl_horizon


def _pretraining(config, source: str):
  c = config.copy_and_resolve_references()
  c.data.source = source
  return gcfg.validate(c)


class Run:
  """A PPO run outside the jitted update: the Task the loop trains, its streams, the frozen params (loaded once),
  the start (policy, value and reward normalisation), the update, the hooks and the policy export."""

  def __init__(self, config):
    rl, self.config = config.rlhf, config
    self.data = stage.load(config, 'ppo', rdata.prompt_of, stage.toy_source(
        lambda n, seed, held_out: [{'prompt': x['prompt']} for x in toy.instructions(n, seed, held_out)]))
    self.ids = TokenIds(self.data.tokenizer.eot_id, self.data.tokenizer.pad_id)
    rows = rdata.prompt_rows(self.data.train, self.data.tokenizer, rl.max_prompt_tokens, self.data.counts)
    ptx = (pipeline.TrainStream(_pretraining(config, rl.ppo.ptx_source), process_index=0, process_count=1)
           if rl.ppo.ptx_source else None)
    self.streams = Streams(stage.stream(config, rows, self.data), ptx, rl.ppo.kl_coef)
    eval_batches = (lambda: pipeline.eval_batches(config, config.train.eval_batches, episodes_per_update(config))) \
        if config.train.eval_every and config.train.eval_batches else None
    lm_loss = losses.lm_loss_fn(config)
    self.task = loop.Task(
        module=PolicyValue(config.model),
        loss_fn=lambda params, batch, rng, train, frozen: lm_loss(params['policy'], batch, rng, train, {}),
        train_stream=self.streams, tokens_per_row=stage.seq_len(config),  # an episode is a seq_len-long row
        flops_per_row=stage.seq_len(config) * flops.flops_per_token(config.model),
        eval_batches=loop.cached(eval_batches), init_params=self._init_params, eval_at_start=True)
    self.record = dict(cli.run_record(config, self.data.tokenizer),
                       data=dict(format=self.data.format, rows=self.streams.prompts.n, **self.data.counts))
    self.frozen, self.samples = None, None

  def train(self, workdir: str) -> loop.Result:
    hooks = [loop.Hook(1, self._adapt_kl)] if self.config.rlhf.ppo.kl_target else []
    if self.config.rlhf.ppo.sample_every:
      hooks.append(loop.Hook(self.config.rlhf.ppo.sample_every, self._sample_table))
    return loop.train(self.config, workdir, self.task, gs.make_mesh(self.config.mesh), self.record,
                      make_update=self._make_update, hooks=hooks)

  # The start: frozen params, reward normalisation, policy and value.

  def _load_frozen(self, mesh) -> Frozen:
    """The reference policy and the reward model on mesh (optionally bfloat16); gain 1, bias 0 until the
    normalisation is known."""
    if self.frozen is None:  # a Run trains on one mesh
      config = self.config
      cast = (lambda t: jax.tree.map(lambda x: x.astype(jnp.bfloat16), t)) \
          if config.rlhf.ppo.frozen_dtype == 'bfloat16' else (lambda t: t)
      ref = loop.load_params(config.rlhf.ppo.policy_from, gm.GPTLM(config.model), mesh)[0]
      reward = loop.load_params(config.rlhf.ppo.reward_from, RewardModel(config.model), mesh)[0]
      self.frozen = Frozen(cast(ref), cast(reward), jnp.float32(1.0), jnp.float32(0.0))
    return self.frozen

  def _measure_reward_norm(self, mesh) -> dict:
    """gain and bias that give the SFT policy's responses to the first update's prompts (PPO's temperature and
    response length, the sampled ids scored as they are) mean 0 and std 1; the prompt stream is left in place."""
    config, streams = self.config, self.streams
    frozen, models, position = self._load_frozen(mesh), models_of(config), streams.prompts.state()
    prompts = pipeline.make_global_batch(streams.next_batch(episodes_per_update(config)), gs.batch_sharding(mesh))
    streams.prompts.restore(position)

    def raw_scores(frozen, batch, rng):
      _, sequences, _, last, _ = sample(config, models, frozen.ref, batch, rng, self.ids)
      return score_responses(models, frozen, sequences, batch['lengths'], last)
    with gs.activation_context(mesh):
      raw = gs.to_host(jax.jit(raw_scores)(frozen, prompts, jax.random.PRNGKey(config.train.seed)))
    mean, std = float(np.mean(raw)), float(np.std(raw)) or 1.0
    return dict(gain=1.0 / std, bias=-mean / std, mean=mean, std=std, samples=int(raw.size),
                temperature=config.rlhf.temperature, response_tokens=config.rlhf.response_tokens)

  def _init_params(self, rng, shardings):
    """The policy from rlhf.ppo.policy_from; the value network from it with a zero head, or from the reward model with
    the normalisation folded into its head (so values start on the scale of the normalised scores)."""
    config = self.config
    mesh = jax.tree.leaves(shardings)[0].mesh
    with gs.activation_context(mesh):
      params = gm.init_params(PolicyValue(config.model), rng, shardings=shardings)
    norm = self.streams.reward_norm = self._measure_reward_norm(mesh)
    self.record['reward_norm'] = norm
    if jax.process_index() == 0:
      print(f'initialised the policy from {config.rlhf.ppo.policy_from}, the value from the '
            f'{"reward model" if config.rlhf.ppo.value_from == "reward" else "policy"}', flush=True)
      print(f'reward normalisation: gain {norm["gain"]:.4g}, bias {norm["bias"]:.4g} over {norm["samples"]} '
            f'responses of {config.rlhf.ppo.policy_from} (temperature {norm["temperature"]}, '
            f'{norm["response_tokens"]} tokens)', flush=True)
    policy = loop.load_params(config.rlhf.ppo.policy_from, gm.GPTLM(config.model), mesh)[0]
    if config.rlhf.ppo.value_from == 'reward':
      reward = loop.load_params(config.rlhf.ppo.reward_from, RewardModel(config.model), mesh)[0]
      head = reward['reward_head']['Dense_0']
      value = dict(trunk=reward['trunk'], value_head={'Dense_0': dict(
          kernel=head['kernel'] * norm['gain'], bias=head['bias'] * norm['gain'] + norm['bias'])})
    else:
      value = dict(trunk=jax.tree.map(jnp.copy, policy['trunk']),  # its own buffers: params are donated
                   value_head=jax.tree.map(jnp.zeros_like, params['value']['value_head']))
    return dict(policy={k: policy.get(k, v) for k, v in params['policy'].items()}, value=value)

  # The update and the hooks.

  def _make_update(self, plan: loop.Plan) -> loop.Update:
    """make_update jitted on the plan's mesh (params and train state donated), fed the frozen params, the
    pretraining rows and the current beta."""
    config, mesh = self.config, plan.mesh
    frozen = self._load_frozen(mesh)
    norm = self.streams.reward_norm
    scalar = lambda v: jax.device_put(jnp.float32(v), gs.replicated(mesh))  # noqa: E731
    frozen = frozen._replace(gain=scalar(norm['gain']), bias=scalar(norm['bias']))
    param_sh = jax.tree.map(lambda x: x.sharding, plan.abstract_params)
    train_sh = jax.tree.map(lambda x: x.sharding, plan.abstract_train)
    batch_sh = {'prompts': gs.batch_sharding(mesh), 'lengths': gs.batch_sharding(mesh)}
    if config.rlhf.ppo.ptx_source:
      batch_sh['ptx'] = gs.replicated(mesh)
    update = jax.jit(make_update(config, plan.optimizer, self.ids), donate_argnums=(0, 1),
                     in_shardings=(param_sh, train_sh, jax.tree.map(lambda x: x.sharding, frozen), batch_sh, None),
                     out_shardings=(param_sh, train_sh, None, None))

    def step(params, train, batch):
      if self.streams.ptx:
        batch = dict(batch, ptx=self._ptx_rows(mesh))
      params, train, metrics, self.samples = update(params, train, frozen, batch, jnp.float32(self.streams.kl_coef))
      return params, train, metrics
    return step

  def _ptx_rows(self, mesh) -> dict:
    """The pretraining rows of one update, [epochs, minibatches, ptx_rows, L] each, replicated."""
    rl = self.config.rlhf.ppo
    rows = self.streams.ptx.next_batch(rl.epochs * rl.minibatches * rl.ptx_rows)
    shape = (rl.epochs, rl.minibatches, rl.ptx_rows, -1)
    return {name: jax.device_put(value.reshape(shape), gs.replicated(mesh)) for name, value in rows.items()}

  def _adapt_kl(self, info: loop.StepInfo) -> None:
    self.streams.adapt(self.config, float(gs.to_host(info.metrics['kl'])))

  def _sample_table(self, info: loop.StepInfo) -> None:
    rollout = gs.to_host(self.samples)
    if jax.process_index():
      return
    decode = self.data.tokenizer.decode
    lines = ['| prompt | response | score |', '|---|---|---|']
    for i in range(len(rollout.score)):
      prompt = decode(rollout.sequences[i, :rollout.lengths[i]].tolist())
      response = decode(rollout.response[i, rollout.mask[i] > 0].tolist())
      lines.append(f'| {prompt!r} | {response!r} | {rollout.score[i]:.3f} |')
    info.writer.text(info.step, 'samples', '\n'.join(lines))

  def export_policy(self, workdir: str, params, step: int) -> None:
    """<workdir>/policy: the policy alone as a params export, so sampling and evaluation read it as any GPT."""
    path = os.path.join(os.path.abspath(workdir), 'policy')
    ckpt.export_params(path, params['policy'], step, self.config)
    if jax.process_index() == 0:
      print(f'policy written to {path} (sample or evaluate it with --workdir={path})', flush=True)


def train(config, workdir: str) -> tuple[int, loop.Result | None]:
  """(exit status, the loop's Result or None): a PPO run in workdir, its policy exported when it finishes."""
  run = Run(config)
  if jax.process_index() == 0:
    counts = ', '.join(f'{v} {k.replace("_", " ")}' for k, v in sorted(run.data.counts.items()))
    print(f'data: {run.streams.prompts.n} prompts of {run.data.format} records ({counts or "nothing cut"}); '
          f'{episodes_per_update(config)} episodes per update', flush=True)
  try:
    result = run.train(workdir)
  except loop.TrainingStopped as error:
    print(f'error: {error}', file=sys.stderr, flush=True)
    return 2, None
  if result.stopped == 'finished':
    run.export_policy(workdir, result.params, result.step)
  return (130 if result.stopped == 'interrupted' else 0), result


def main(argv):
  del argv
  cli.check_workdir(FLAGS.workdir)
  return train(prepare(cli.config_from_flags()), FLAGS.workdir)[0]


if __name__ == '__main__':
  cli.run_main(main, 'configs/rlhf.py:ppo')
