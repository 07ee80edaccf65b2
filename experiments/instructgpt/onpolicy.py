"""On-policy comparisons for the reward model: the SFT policy's own samples, ranked by the gold score.

    python -m experiments.instructgpt.onpolicy --sft=runs/igpt/sft --toy=runs/igpt/toy --out=runs/igpt/onpolicy

For each training prompt of the toy task (<toy>/prompts_train.jsonl), --samples responses of the SFT policy at
--temperature, as PPO samples them (at most --response_tokens tokens, ended by EOS or the limit, no stop string);
of responses with the same gold score only the first is kept (ties dropped), and a prompt with fewer than two
left is dropped. Written in the reward stage's rankings format (best first):

    <out>/rankings_train.jsonl    the toy's synthetic rankings (<toy>/rankings_train.jsonl), then the on-policy ones
    <out>/rankings_heldout.jsonl  the same for every held-out prompt (validation and test): the pairs on which the
                                  reward model's accuracy on policy samples is measured
    <out>/stats.json              counts (prompts kept, pairs, the samples' gold and exact-match rate)

Train the reward model on them with --config.rlhf.data=<out>/rankings_train.jsonl
--config.rlhf.eval_data=<out>/rankings_heldout.jsonl.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import flags

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import sample as sample_lib
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tokenizer_lib
from gpt_jax.rlhf import toy
from experiments.instructgpt import episodes


def define_flags() -> None:
  """The command's flags, defined when it runs (tests import the experiment's modules together)."""
  flags.DEFINE_string('sft', None, 'the SFT run (or export) that samples.')
  flags.DEFINE_string('toy', None, 'the toy task directory (python -m gpt_jax.rlhf toy --out=...).')
  flags.DEFINE_string('out', None, 'directory for the rankings (absent or empty, unless --overwrite).')
  flags.DEFINE_integer('samples', 4, 'responses sampled per prompt (K).')
  flags.DEFINE_float('temperature', 1.0, 'sampling temperature.')
  flags.DEFINE_integer('response_tokens', 8, 'most tokens per response.')
  flags.DEFINE_integer('limit', None, 'only the first N training and N held-out prompts (smoke runs).')
  flags.DEFINE_integer('seed', 0, 'sampling seed.')
  cli.define_overwrite_flag()


FLAGS = flags.FLAGS


def ranking(prompt: str, responses: list[str]) -> dict | None:
  """A rankings record of the responses ordered by gold (best first), one response per gold value (the first
  sampled); None when fewer than two distinct values remain. Blank responses are dropped (no rankings record may
  hold one)."""
  by_gold = {}
  for response in responses:
    if response.strip():
      by_gold.setdefault(toy.gold(prompt, response), response)
  if len(by_gold) < 2:
    return None
  kept = list(by_gold.values())
  order = sorted(range(len(kept)), key=lambda i: -toy.gold(prompt, kept[i]))
  return dict(prompt=prompt, responses=kept, ranking=order)


def sample_responses(sampler, tokenizer, prompts: list[str], seed: int) -> list[list[str]]:
  """FLAGS.samples decoded responses per prompt (end-of-text removed)."""
  ids = [tokenizer.encode(p) for p in prompts for _ in range(FLAGS.samples)]
  out = sampler.generate(ids, max_new_tokens=FLAGS.response_tokens, rng=jax.random.key(seed),
                         temperature=FLAGS.temperature)
  texts = [tokenizer.decode([t for t in s.tokens.tolist() if t != tokenizer.eot_id]) for s in out]
  return [texts[i:i + FLAGS.samples] for i in range(0, len(texts), FLAGS.samples)]


def rank_all(prompts, responses) -> tuple[list[dict], dict]:
  records = [r for r in map(ranking, prompts, responses) if r is not None]
  gold = np.array([toy.gold(p, r) for p, rs in zip(prompts, responses) for r in rs])
  stats = dict(prompts=len(prompts), samples=int(gold.size), kept=len(records),
               pairs=sum(len(r['responses']) * (len(r['responses']) - 1) // 2 for r in records),
               sample_gold=float(gold.mean()), sample_exact=float(np.mean(gold == 1.0)))
  return records, stats


def write_jsonl(path: str, records) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)


def main(argv):
  del argv
  for name in ('sft', 'toy'):
    if not FLAGS[name].value or not os.path.isdir(FLAGS[name].value):
      raise ConfigError(f'--{name} must be an existing directory: see python -m '
                            f'experiments.instructgpt.onpolicy --help.')
  synthetic = os.path.join(FLAGS.toy, 'rankings_train.jsonl')
  for path in (synthetic, os.path.join(FLAGS.toy, 'prompts_train.jsonl')):
    if not os.path.isfile(path):
      raise ConfigError(f'{path} does not exist: write the toy task with python -m gpt_jax.rlhf toy '
                            f'--out={FLAGS.toy}.')
  if FLAGS.samples < 2:
    raise ConfigError(f'--samples={FLAGS.samples} must be at least 2: a ranking needs two responses.')
  episodes.check_sampling(FLAGS, temperatures=('temperature',), counts=('response_tokens',))
  cli.check_output('out', FLAGS.out, directory=True)
  config = ckpt.load_config(FLAGS.sft)
  mesh = gs.single_device_mesh()
  module = gm.GPTLM(config.model)
  tokenizer = tokenizer_lib.load(config.data)
  sampler = sample_lib.Sampler(module, config.model, loop.load_params(FLAGS.sft, module, mesh)[0],
                               eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id, batch_size=256, mesh=mesh)
  with open(os.path.join(FLAGS.toy, 'prompts_train.jsonl'), encoding='utf-8') as f:
    train_prompts = [json.loads(line)['prompt'] for line in f if line.strip()][:FLAGS.limit]
  held_out_prompts = [x['prompt'] for split in toy.SPLITS for x in toy.held_out_split(split)][:FLAGS.limit]
  train, train_stats = rank_all(train_prompts, sample_responses(sampler, tokenizer, train_prompts, FLAGS.seed))
  held_out, held_out_stats = rank_all(held_out_prompts, sample_responses(sampler, tokenizer, held_out_prompts,
                                                                         FLAGS.seed + 1))
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(synthetic, encoding='utf-8') as f:
    synthetic_records = [json.loads(line) for line in f if line.strip()]
  write_jsonl(os.path.join(FLAGS.out, 'rankings_train.jsonl'), synthetic_records + train)
  write_jsonl(os.path.join(FLAGS.out, 'rankings_heldout.jsonl'), held_out)
  stats = dict(sft=FLAGS.sft, samples_per_prompt=FLAGS.samples, temperature=FLAGS.temperature,
               response_tokens=FLAGS.response_tokens, synthetic=len(synthetic_records), train=train_stats,
               held_out=held_out_stats)
  with open(os.path.join(FLAGS.out, 'stats.json'), 'w', encoding='utf-8') as f:
    json.dump(stats, f, indent=2)
  print(json.dumps(stats, indent=2))


if __name__ == '__main__':
  define_flags()
  cli.run_main(main)
