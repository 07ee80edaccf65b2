"""What the experiment's evaluations share: a policy's episodes on toy prompts, each with its gold score, its
reward-model score and its KL to the SFT policy, computed the way a PPO rollout computes them.

    judge = episodes.Judge(sft='runs/igpt/sft', reward='runs/igpt/rm', temperature=0.7, response_tokens=8)
    out = judge.sample(policy_params, prompts, samples=4, seed=0)   # out.gold, out.rm, out.kl, out.text [N * 4]
    judge.greedy_gold(policy_params, prompts)                         # gold of the greedy answers
    judge.pretraining_loss(policy_params)                             # nats per token on the corpus's validation split

The rollout is gpt_jax.rlhf.ppo_update's: the KV-cache decoder samples at the temperature, the SFT policy's
log-probs of the sampled tokens (logits / temperature, as PPO's reference) give KL = sum over response tokens of
log pi - log pi_sft, and the reward model scores each prompt + response at its last token, normalised with the
reward run's reward_norm.json (mean 0, std 1 over SFT samples). Gold is gpt_jax.rlhf.toy.gold of the decoded
response. Everything runs on one device (the evaluations are single-process scripts).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax import checkpoint as ckpt
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import sample as sample_lib
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import pipeline
from gpt_jax.data import tokenizer as tokenizer_lib
from gpt_jax.heads import PolicyValue
from gpt_jax.model import abstract_variables
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import reward as reward_lib
from gpt_jax.rlhf import toy
from gpt_jax.rlhf.ppo_update import Frozen, TokenIds, models_of, response_logits, sample, score_responses

PRETRAINING_BATCHES = 8  # validation batches of 64 sequences for the pretraining loss


@dataclasses.dataclass
class Episodes:
  """Episodes in prompt-major order (sample j of prompt i at i * samples + j)."""
  text: list[str]  # decoded responses, end-of-text removed
  gold: np.ndarray  # toy.gold of each response
  rm: np.ndarray  # normalised reward-model score
  kl: np.ndarray  # sum over response tokens of log pi - log pi_sft (nats per episode)
  has_eos: np.ndarray
  samples: int  # per prompt

  def per_prompt(self, values: np.ndarray) -> np.ndarray:
    """[prompts, samples] view of a per-episode array."""
    return values.reshape(-1, self.samples)


class Judge:
  """The SFT policy (the KL reference) and the reward model, loaded once; evaluates any policy's params."""

  def __init__(self, sft: str, reward: str, temperature: float, response_tokens: int, batch_rows: int = 256):
    config = ckpt.load_config(reward).copy_and_resolve_references()
    config.rlhf.temperature, config.rlhf.response_tokens = temperature, response_tokens
    self.config, self.batch_rows = config, batch_rows
    self.mesh = gs.single_device_mesh()
    self.models = models_of(config)
    self.tokenizer = tokenizer_lib.load(config.data)
    self.ids = TokenIds(self.tokenizer.eot_id, self.tokenizer.pad_id)
    norm = reward_lib.read_normalization(reward)
    self.sft_params = self.load_policy(sft)
    self.frozen = Frozen(self.sft_params, loop.load_params(reward, self.models.reward, self.mesh)[0],
                         jnp.float32(norm['gain']), jnp.float32(norm['bias']))
    self._rollout = jax.jit(self._rollout_fn)
    lm_loss = losses.lm_loss_fn(config)
    self._lm_loss = jax.jit(lambda p, b: lm_loss(p, b, jax.random.key(0), False, None)[:2])
    self._pretraining_batches = loop.cached(lambda: pipeline.eval_batches(config, PRETRAINING_BATCHES, 64, 0, 1))
    # One greedy sampler for every policy (its params are swapped in): the model's own layout, compiled once.
    self._greedy = sample_lib.Sampler(self.models.policy, config.model, self.sft_params, eot_id=self.ids.eot,
                                      pad_id=self.ids.pad, batch_size=batch_rows, decoding_layout=False,
                                      mesh=self.mesh)

  def load_policy(self, path: str, step: int | None = None):
    """A language model's params: a run or export (its newest checkpoint); with step, that checkpoint of a PPO
    run (its policy)."""
    if step is None:
      return loop.load_params(path, self.models.policy, self.mesh)[0]
    abstract = gs.abstract_params(abstract_variables(PolicyValue(self.config.model))['params'], self.mesh)
    return ckpt.load_for_inference(path, abstract, step=step)[0]['policy']

  def _rollout_fn(self, policy, frozen, batch, rng):
    config, models = self.config, self.models
    gen, sequences, mask, last, has_eos = sample(config, models, policy, batch, rng, self.ids)
    steps, lengths = gen.tokens.shape[1], batch['lengths']
    ref = losses.token_logprobs(
        response_logits(models.policy, frozen.ref, sequences, lengths, steps, config.rlhf.temperature), gen.tokens)
    kl = jnp.sum((gen.logprobs - ref) * mask, axis=1)
    rm = frozen.gain * score_responses(models, frozen, sequences, lengths, last) + frozen.bias
    return gen.tokens, mask, kl, rm, has_eos

  def sample(self, policy, prompts: list[str], samples: int, seed: int) -> Episodes:
    """`samples` episodes of policy per prompt at the judge's temperature."""
    counts = collections.Counter()
    rows = rdata.prompt_rows(prompts, self.tokenizer, self.config.rlhf.max_prompt_tokens, counts)
    order = np.repeat(np.arange(len(prompts)), samples)
    parts = []
    for b, start in enumerate(range(0, len(order), self.batch_rows)):
      index = order[start:start + self.batch_rows]
      padded = np.concatenate([index, np.zeros(self.batch_rows - len(index), index.dtype)])
      batch = {name: jnp.asarray(rows[name][padded]) for name in ('prompts', 'lengths')}
      with gs.activation_context(self.mesh):
        out = self._rollout(policy, self.frozen, batch, jax.random.fold_in(jax.random.key(seed), b))
      parts.append([np.asarray(x)[:len(index)] for x in jax.device_get(out)])
    tokens, mask, kl, rm, has_eos = (np.concatenate(x) for x in zip(*parts))
    text = [self.tokenizer.decode([t for t, m in zip(row, keep) if m and t != self.ids.eot])
            for row, keep in zip(tokens.tolist(), mask.tolist())]
    gold = np.array([toy.gold(prompts[i], t) for i, t in zip(order, text)])
    return Episodes(text, gold, rm, kl, has_eos, samples)

  def greedy_gold(self, policy, prompts: list[str]) -> np.ndarray:
    """Gold of each prompt's greedy answer (its first line, at most the judge's response tokens)."""
    self._greedy.params = policy
    out = sample_lib.generate_text(self._greedy, self.tokenizer, prompts, stop=['\n'], temperature=0.0,
                                   max_new_tokens=self.config.rlhf.response_tokens, rng=jax.random.key(0))
    return np.array([toy.gold(p, s.text) for p, s in zip(prompts, out)])

  def pretraining_loss(self, policy) -> float:
    """The policy's loss (nats per token; per byte with the byte tokenizer) on the corpus's validation batches."""
    total = weight = 0.0
    for batch in self._pretraining_batches():
      s, w = jax.device_get(self._lm_loss(policy, batch))
      total, weight = total + float(s), weight + float(w)
    return total / weight


def check_sampling(flag_values, temperatures: Sequence[str] = (), counts: Sequence[str] = ()) -> None:
  """Refuses, before any work, a sampling flag a command cannot use: each flag named in `temperatures` (a float or a
  list of them) must hold positive numbers (these commands sample; greedy answers are scored on their own), each in
  `counts` (response_tokens, samples) an integer of at least 1."""
  for name in temperatures:
    value = flag_values[name].value
    values = value if isinstance(value, list) else [value]
    try:
      ok = bool(values) and all(math.isfinite(float(v)) and float(v) > 0 for v in values)
    except ValueError:
      ok = False
    if not ok:
      shown = ','.join(map(str, values)) if isinstance(value, list) else value
      raise ConfigError(f'--{name}={shown} must be positive (a sampling temperature), e.g. --{name}=0.7.')
  for name in counts:
    if flag_values[name].value < 1:
      raise ConfigError(f'--{name}={flag_values[name].value} must be at least 1.')


def win_rates(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
  """Per prompt, the share of paired samples ([prompts, samples] each) where ours beats theirs, a tie 1/2."""
  return np.mean((ours > theirs) + 0.5 * (ours == theirs), axis=1)


def bootstrap_ci(per_prompt: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
  """The 95% percentile interval of the mean of per-prompt values over prompts resampled with replacement (paired:
  pass a per-prompt difference or win rate)."""
  rng = np.random.default_rng(seed)
  means = per_prompt[rng.integers(0, len(per_prompt), (resamples, len(per_prompt)))].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summary(ep: Episodes) -> dict:
  """Means over a set of episodes: gold (and its standard error over prompts), exact match, reward-model score,
  KL to SFT, share ended by EOS."""
  per_prompt = ep.per_prompt(ep.gold).mean(1)
  return dict(gold=float(ep.gold.mean()), gold_se=float(per_prompt.std(ddof=1) / np.sqrt(len(per_prompt))),
              exact=float(np.mean(ep.gold == 1.0)), rm_score=float(ep.rm.mean()), kl=float(ep.kl.mean()),
              eos=float(ep.has_eos.mean()), episodes=len(ep.gold))


def prompts_of(split: str, limit: int | None = None) -> list[str]:
  """The prompts of a held-out split (the first `limit` of them, when given)."""
  return [x['prompt'] for x in toy.held_out_split(split)][:limit]


def write_json(path: str, value) -> None:
  """value as indented JSON at path (its folder created)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2)
