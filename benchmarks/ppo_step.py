"""PPO episodes per second of gpt_jax's one-jit update against TRL's PPOTrainer, same shapes, in one run.

    python -m benchmarks.ppo_step [--rounds=3] [--updates=2]

Both sides: a GPT-2-shaped policy, reference, reward model and value model (4 layers, d_model 256, 4 heads,
vocabulary 8192, no dropout, float32 on the CPU's cores), 32 episodes per update of a 64-token prompt and 32
sampled tokens (temperature 1), 4 PPO epochs x 4 minibatches, fixed KL coefficient 0.05. gpt_jax runs
ppo_update.make_update jitted (rollout with the KV cache, scoring, GAE, the 16 optimizer steps: one program); TRL 1.12
runs PPOTrainer.train (transformers generate, then Python loops). A side's update time is measured without its
set-up: TRL as (time of train() with 2k updates - time with k) / k, gpt_jax as the median of k timed updates after
one compiled warm-up. Rounds alternate the sides; each prints episodes/s of both and the ratio, the last line the
median ratio.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer('rounds', 3, 'alternating rounds.')
flags.DEFINE_integer('updates', 2, 'k: timed updates per side and round.')

S = dict(n_layers=4, d_model=256, n_heads=4, vocab=8192, episodes=32, prompt=64, response=32, epochs=4,
         minibatches=4, kl=0.05, lr=1e-5)


class JaxSide:
  def __init__(self):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gpt_jax import config as gcfg
    from gpt_jax import loop
    from gpt_jax import model as gm
    from gpt_jax import sharding as gs
    from gpt_jax.heads import PolicyValue, RewardModel
    from gpt_jax.rlhf import ppo_update
    c = gcfg.default_config()
    context = S['prompt'] + S['response']
    c.model.update(n_layers=S['n_layers'], d_model=S['d_model'], n_heads=S['n_heads'], vocab_size=S['vocab'],
                   context=context)
    c.train.update(batch_tokens=S['episodes'] * context, total_tokens=10**9)
    c.optim.update(peak_lr=S['lr'], warmup_tokens=0, final_lr_fraction=1.0, clip=0.0, weight_decay=0.0)
    c.rlhf.update(max_prompt_tokens=S['prompt'], response_tokens=S['response'])
    c.rlhf.ppo.update(epochs=S['epochs'], minibatches=S['minibatches'], kl_coef=S['kl'], missing_eos_penalty=0.0)
    c.mesh.update(data=1, fsdp=1)
    config = gcfg.validate(c)
    mesh = gs.make_mesh(config.mesh)
    task = loop.Task(module=PolicyValue(config.model), loss_fn=None, train_stream=None, tokens_per_row=context,
                     flops_per_row=1.0)
    p = loop.plan(config, task, mesh)
    state = loop.setup(config, task, mesh, None, p)
    with gs.activation_context(mesh):
      lm = gm.init_params(gm.GPTLM(config.model), jax.random.key(1))
      rm = gm.init_params(RewardModel(config.model), jax.random.key(2))
    self.frozen = ppo_update.Frozen(lm, rm, jnp.float32(1.0), jnp.float32(0.0))
    ids = ppo_update.TokenIds(S['vocab'] - 2, S['vocab'] - 1)
    self.update = jax.jit(ppo_update.make_update(config, p.optimizer, ids), donate_argnums=(0, 1))
    rng = np.random.default_rng(0)
    self.batch = dict(prompts=jnp.asarray(rng.integers(0, S['vocab'] - 2, (S['episodes'], S['prompt'])), jnp.int32),
                      lengths=jnp.full((S['episodes'],), S['prompt'], jnp.int32))
    self.params, self.train, self.mesh = state.params, state.train_state, mesh

  def update_time(self, k: int) -> float:
    import jax
    import jax.numpy as jnp

    from gpt_jax import sharding as gs
    times = []
    for i in range(k + 1):
      start = time.perf_counter()
      with gs.activation_context(self.mesh):
        self.params, self.train, metrics, _ = self.update(self.params, self.train, self.frozen, self.batch,
                                                          jnp.float32(S['kl']))
      jax.block_until_ready(metrics['score'])
      times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


class TrlSide:
  def __init__(self, workdir: str):
    import datasets
    import numpy as np
    import torch
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    torch.set_num_threads(os.cpu_count())
    vocab = {f'w{i}': i for i in range(S['vocab'] - 2)} | {'<eos>': S['vocab'] - 2, '<pad>': S['vocab'] - 1}
    self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token='<pad>')),
                                             eos_token='<eos>', pad_token='<pad>')
    rng = np.random.default_rng(0)
    rows = rng.integers(0, S['vocab'] - 2, (S['episodes'] * 64, S['prompt'])).tolist()
    self.dataset = datasets.Dataset.from_dict({'input_ids': rows})
    self.workdir = workdir

  def _models(self):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(n_layer=S['n_layers'], n_embd=S['d_model'], n_head=S['n_heads'], vocab_size=S['vocab'],
                        n_positions=S['prompt'] + S['response'], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        pad_token_id=S['vocab'] - 1, eos_token_id=S['vocab'] - 2, num_labels=1)
    return (GPT2LMHeadModel(config), GPT2LMHeadModel(config), GPT2ForSequenceClassification(config),
            GPT2ForSequenceClassification(config))

  def _train_seconds(self, updates: int) -> float:
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    policy, ref, reward, value = self._models()
    per_minibatch = S['episodes'] // S['minibatches']
    args = PPOConfig(output_dir=self.workdir, per_device_train_batch_size=per_minibatch,
                     gradient_accumulation_steps=S['minibatches'], num_mini_batches=S['minibatches'],
                     num_ppo_epochs=S['epochs'], total_episodes=updates * S['episodes'],
                     local_rollout_forward_batch_size=S['episodes'], response_length=S['response'],
                     temperature=1.0, kl_coef=S['kl'], learning_rate=S['lr'], num_sample_generations=0,
                     stop_token='eos', save_strategy='no', report_to=[], use_cpu=True, logging_steps=10**6,
                     disable_tqdm=True, seed=0)
    trainer = PPOTrainer(args=args, processing_class=self.tokenizer, model=policy, ref_model=ref,
                         reward_model=reward, value_model=value, train_dataset=self.dataset)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start

  def update_time(self, k: int) -> float:
    return (self._train_seconds(2 * k) - self._train_seconds(k)) / k


def main(argv):
  del argv
  jax_side = JaxSide()
  with tempfile.TemporaryDirectory() as workdir:
    trl_side = TrlSide(workdir)
    ratios = []
    for r in range(FLAGS.rounds):
      sides = [('gpt_jax', jax_side), ('trl', trl_side)]
      seconds = {name: side.update_time(FLAGS.updates) for name, side in sides[::(-1) ** r]}
      ratios.append(seconds['trl'] / seconds['gpt_jax'])
      print(f'round {r}: gpt_jax {S["episodes"] / seconds["gpt_jax"]:7.2f} episodes/s   TRL PPOTrainer '
            f'{S["episodes"] / seconds["trl"]:7.2f} episodes/s   ratio {ratios[-1]:.2f}x', flush=True)
  print(f'median ratio (gpt_jax episodes/s over TRL\'s) over {FLAGS.rounds} rounds: {statistics.median(ratios):.2f}x')


if __name__ == '__main__':
  app.run(main)
