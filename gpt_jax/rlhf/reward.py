"""The reward model: a scalar read at each response's EOS, trained on ranked comparisons (InstructGPT).

    python -m gpt_jax.rlhf.reward --config=configs/rlhf.py:reward --workdir=runs/rm --config.rlhf.init_from=runs/sft
    python -m gpt_jax.rlhf.reward score --workdir=runs/rm --input=responses.jsonl [--output=scored.jsonl]

All C(K, 2) pairs of a prompt's K ranked responses form one batch element, each scaled by 1 / C(K, 2), so a
prompt counts once whatever its K; held-out pairwise accuracy is logged at every evaluation. When training ends,
the gain and bias that give samples of the starting policy (rlhf.init_from, the SFT model PPO starts from) mean 0
and standard deviation 1 are written to <workdir>/reward_norm.json; `score` and PPO apply them.
"""

from __future__ import annotations

import collections
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import sample
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tokenizer_lib
from gpt_jax.heads import RewardModel
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy

NORM_FILE = 'reward_norm.json'
FLAGS = flags.FLAGS
cli.define_workdir_flag()
cli.define_overwrite_flag()
flags.DEFINE_string('input', None, 'score: JSONL of {"prompt", "response"} records to score.')
flags.DEFINE_string('output', None, 'score: where the scored JSONL goes (default: stdout); an existing file is refused unless --overwrite.')
flags.DEFINE_integer('batch_size', 32, 'score: responses per forward pass.')


def ranking_losses(rewards: jax.Array, ranks: jax.Array):
  """Per prompt: (loss, pairs, correct pairs). rewards [P, K] float, ranks [P, K] int (0 = best, -1 = empty slot);
  loss = -1/C(K_p, 2) * sum over the prompt's pairs of log sigmoid(r_winner - r_loser); tied ranks form no pair."""
  valid = ranks >= 0
  wins = (ranks[:, :, None] < ranks[:, None, :]) & valid[:, :, None] & valid[:, None, :]
  margin = rewards[:, :, None].astype(jnp.float32) - rewards[:, None, :].astype(jnp.float32)
  pairs = jnp.sum(wins, axis=(1, 2)).astype(jnp.float32)
  summed = jnp.sum(jnp.where(wins, jax.nn.log_sigmoid(margin), 0.0), axis=(1, 2))
  correct = jnp.sum(wins & (margin > 0), axis=(1, 2)).astype(jnp.float32)
  return -summed / jnp.maximum(pairs, 1.0), pairs, correct


def ranking_loss(rewards: jax.Array, ranks: jax.Array) -> jax.Array:
  """The InstructGPT reward-model loss: the mean over prompts (with at least one pair) of ranking_losses."""
  loss, pairs, _ = ranking_losses(rewards, ranks)
  has_pairs = pairs > 0
  return jnp.sum(jnp.where(has_pairs, loss, 0.0)) / jnp.maximum(jnp.sum(has_pairs), 1)


def loss_fn(config):
  """LossFn over ranking rows: summed per-prompt losses, weighed by prompts; accuracy over pairs."""
  models = {train: RewardModel(config.model, deterministic=not train) for train in (False, True)}

  def fn(params, batch, rng, train, frozen):
    del frozen
    prompts, k, length = batch['tokens'].shape
    rewards = models[train].apply({'params': params}, batch['tokens'].reshape(prompts * k, length),
                                  batch['mask'].reshape(prompts * k, length), rngs={'dropout': rng})
    loss, pairs, correct = ranking_losses(rewards.reshape(prompts, k), batch['ranks'])
    weight = batch['weight'] * (pairs > 0)
    extra = dict(accuracy=(jnp.sum(correct * batch['weight']), jnp.sum(pairs * batch['weight'])))
    return jnp.sum(loss * weight), jnp.sum(weight), extra
  return fn


def build_task(config):
  r, k = config.rlhf, config.rlhf.reward.max_responses
  make = lambda n, seed, held_out: toy.rankings(n, seed, held_out, k)  # noqa: E731
  data = stage.load(config, 'reward', lambda fmt: rdata.ranked_responses(k), stage.toy_source(make))
  context = stage.seq_len(config)
  rows_of = lambda examples, counts: rdata.ranking_rows(examples, data.tokenizer, context,  # noqa: E731
                                                        r.max_prompt_tokens, k, counts)
  train_rows = rows_of(data.train, data.counts)
  held_out = rows_of(data.held_out, data.held_out_counts) if data.held_out is not None else None
  tokens_per_row = k * context
  return (*stage.make_task(config, data, train_rows, held_out, tokens_per_row, RewardModel(config.model),
                           loss_fn(config)), data)


# ---------------------------------------------------------------------------------------------------------------
# Scoring and normalisation.

class Scorer:
  """Raw reward-model scores of (prompt, response) texts, EOS appended to each response as in training, or of token
  sequences as they are (score_ids), each read at its last token.

  Every process passes the same inputs: each batch is split over the mesh's batch axes (sharding.global_rows) and
  the scores come back whole to every process (sharding.to_host).
  """

  def __init__(self, config, params, mesh, tokenizer, batch_size: int):
    self.config, self.params, self.mesh, self.tokenizer = config, params, mesh, tokenizer
    self.batch_size = -(-batch_size // gs.batch_shards(mesh)) * gs.batch_shards(mesh)
    module = RewardModel(config.model)
    self._apply = jax.jit(lambda p, t, m: module.apply({'params': p}, t, m))

  def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
    counts = collections.Counter()
    return self.score_ids([rdata.encode(self.tokenizer, [(prompt, False), (response, True)],
                                        self.config.model.context, self.config.rlhf.max_prompt_tokens, counts)[0]
                           for prompt, response in pairs])

  def score_ids(self, sequences: list[np.ndarray]) -> np.ndarray:
    context, out = self.config.model.context, []
    for start in range(0, len(sequences), self.batch_size):
      chunk = sequences[start:start + self.batch_size]
      tokens = np.full((self.batch_size, context), self.tokenizer.pad_id, np.int32)
      mask = np.zeros((self.batch_size, context), np.int32)
      for i, ids in enumerate(chunk):
        tokens[i, :len(ids)], mask[i, :len(ids)] = ids, 1
      mask[len(chunk):, 0] = 1  # padding rows read their first token
      with gs.activation_context(self.mesh):
        scores = self._apply(self.params, gs.global_rows(tokens, self.mesh), gs.global_rows(mask, self.mesh))
      out.append(gs.to_host(scores)[:len(chunk)])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def normalization(config, params, mesh, data: stage.Data) -> dict:
  """{gain, bias, mean, std, samples, source, sampling}: gain * raw + bias has mean 0 and std 1 over responses
  sampled from rlhf.init_from to the first training prompts and scored as PPO scores its rollouts (the sampled ids
  as they are: at EOS, or at the last token of a response the length limit cut); without a starting policy or
  with rlhf.reward.norm_samples = 0, over the training data's own responses (sampling: null)."""
  r = config.rlhf
  scorer = Scorer(config, params, mesh, data.tokenizer, 64)
  if r.init_from and r.reward.norm_samples:
    sequences, sampling = _policy_samples(config, mesh, data)
    raw, source = scorer.score_ids(sequences), f'{len(sequences)} samples of {r.init_from}'
  else:
    pairs = [(example[0], response) for example in data.train for response in example[1]]
    raw, sampling = scorer(pairs), None
    source = f'the {len(pairs)} responses of the training data'
  mean, std = float(np.mean(raw)), float(np.std(raw)) or 1.0
  return dict(gain=1.0 / std, bias=-mean / std, mean=mean, std=std, samples=len(raw), source=source,
              sampling=sampling)


def _policy_samples(config, mesh, data: stage.Data) -> tuple[list[np.ndarray], dict]:
  """(prompt + sampled response ids of rlhf.reward.norm_samples prompts, the sampling settings): prompts cut from
  the left to rlhf.max_prompt_tokens as PPO cuts them (less, if the response would not fit the context)."""
  r, context = config.rlhf, config.model.context
  prompt_budget = min(r.max_prompt_tokens, context - r.response_tokens)
  # An empty prompt starts from EOS, as the sampler starts it.
  prompts = [list(data.tokenizer.encode(data.train[i % len(data.train)][0]))[-prompt_budget:]
             or [data.tokenizer.eot_id] for i in range(r.reward.norm_samples)]
  sampler = sample.Sampler(gm.GPTLM(config.model), config.model, stage.load_lm_params(r.init_from, config, mesh),
                           eot_id=data.tokenizer.eot_id, pad_id=data.tokenizer.pad_id,
                           batch_size=min(64, r.reward.norm_samples), mesh=mesh)
  samples = sampler.generate(prompts, max_new_tokens=r.response_tokens, rng=jax.random.key(config.train.seed),
                             temperature=r.temperature)
  sequences = [np.concatenate([np.asarray(p, np.int32), s.tokens.astype(np.int32)]) for p, s in zip(prompts, samples)]
  sampling = dict(temperature=r.temperature, response_tokens=r.response_tokens, samples=r.reward.norm_samples,
                  max_prompt_tokens=prompt_budget, seed=config.train.seed)
  return sequences, sampling


def read_normalization(workdir: str) -> dict:
  path = os.path.join(workdir, NORM_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f'{workdir} has no {NORM_FILE}: it is written when a reward-model run finishes; rerun '
                      f'gpt_jax.rlhf.reward on it to finish the run.')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


# ---------------------------------------------------------------------------------------------------------------
# Commands.

def train_main(config):
  config = stage.prepare(config)
  r = config.rlhf
  if r.init_from and r.reward.norm_samples and r.response_tokens >= config.model.context:
    raise ConfigError(f'rlhf.response_tokens={r.response_tokens} leaves the normalisation samples no room for a '
                      f'prompt in model.context={config.model.context}: make it at most {config.model.context - 1}.')
  config, task, data = build_task(config)
  status, result = stage.train(config, FLAGS.workdir, task, data, task.train_stream.n)
  if result is None or result.stopped != 'finished':
    return status
  norm = normalization(config, result.params, gs.make_mesh(config.mesh), data)
  if jax.process_index() == 0:
    with open(os.path.join(FLAGS.workdir, NORM_FILE), 'w', encoding='utf-8') as f:
      json.dump(norm, f, indent=2)
    print(f'reward normalisation: gain {norm["gain"]:.4g}, bias {norm["bias"]:.4g} over {norm["source"]} '
          f'(written to {os.path.join(FLAGS.workdir, NORM_FILE)})', flush=True)
  return status


def score_main():
  if FLAGS['config'].present:
    raise ConfigError('score reads the model from --workdir: drop --config.')
  if not FLAGS.input:
    raise ConfigError('score needs --input=<file.jsonl> of {"prompt", "response"} records.')
  if FLAGS.output:
    cli.check_output('output', FLAGS.output)
  if FLAGS.batch_size < 1:
    raise ConfigError(f'--batch_size={FLAGS.batch_size} must be a positive integer.')
  cli.check_workdir(FLAGS.workdir)
  config = ckpt.load_config(FLAGS.workdir)
  norm = read_normalization(FLAGS.workdir)
  records = rdata.read_records(FLAGS.input, config.data.data_dir)
  pairs = []
  for where, record in records:
    if isinstance(record, rdata.DataError):
      raise record
    for field in ('prompt', 'response'):
      if not isinstance(record.get(field), str):
        raise rdata.DataError(f'{where}: field {field!r} is missing or not a string: score takes {{"prompt", '
                              f'"response"}} records.')
    pairs.append((record['prompt'], record['response']))
  mesh = gs.make_mesh(config.mesh)
  params, _ = loop.load_params(FLAGS.workdir, RewardModel(config.model), mesh)
  raw = Scorer(config, params, mesh, tokenizer_lib.load(config.data), FLAGS.batch_size)(pairs)
  lines = [json.dumps(dict(record, raw_score=float(s), score=float(norm['gain'] * s + norm['bias'])))
           for (_, record), s in zip(records, raw)]
  if jax.process_index():
    return 0
  if FLAGS.output:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, 'w', encoding='utf-8') as f:
      f.writelines(line + '\n' for line in lines)
  else:
    sys.stdout.writelines(line + '\n' for line in lines)
  return 0


def main(argv):
  if len(argv) == 2:
    return score_main()
  cli.check_workdir(FLAGS.workdir)
  return train_main(cli.config_from_flags())


if __name__ == '__main__':
  cli.run_main(main, 'configs/rlhf.py:reward', commands=('score',))
