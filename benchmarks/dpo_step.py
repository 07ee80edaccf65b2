"""DPO train step of gpt_jax against TRL's DPOTrainer on the same model shapes and batch, in one run.

    python -m benchmarks.dpo_step [--rounds=5] [--steps=5]

Both sides train a GPT-2-shaped policy (4 layers, d_model 256, 4 heads, vocabulary 8192, tied embeddings, no
dropout, float32 on the CPU's cores) against a frozen reference copy run in every step (no precomputed reference
log-probs), sigmoid loss, beta 0.1, AdamW, 8 pairs per step, each sequence a 64-token prompt and a 63-token
response plus EOS (128 tokens). gpt_jax runs dpo.loss_fn in the loop's jitted train step; TRL runs
DPOTrainer.train, timed per optimizer step by a callback (its data loading between steps is not counted).
Rounds alternate the two (the order swapped each round) so the machine's drift hits both alike; each round
prints both median step times and their ratio, and the last line the median ratio.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer('rounds', 5, 'alternating rounds.')
flags.DEFINE_integer('steps', 5, 'timed steps per side and round (after one warm-up step).')

SHAPE = dict(n_layers=4, d_model=256, n_heads=4, vocab=8192, pairs=8, prompt=64, response=63, beta=0.1, lr=1e-5)
_WORDS = [f'w{i}' for i in range(SHAPE['vocab'] - 2)]  # + [EOS] and [PAD]


def _texts(seed: int):
  import random
  rng = random.Random(seed)
  words = lambda n: ' '.join(rng.choice(_WORDS) for _ in range(n))  # noqa: E731
  return [dict(prompt=words(SHAPE['prompt']), chosen=' ' + words(SHAPE['response']),
               rejected=' ' + words(SHAPE['response']))
          for _ in range(SHAPE['pairs'] * 64)]


class JaxSide:
  """gpt_jax's DPO step on batches of already tokenised pairs (word i is token i)."""

  def __init__(self):
    import jax
    import numpy as np

    from gpt_jax import config as gcfg
    from gpt_jax import loop
    from gpt_jax import model as gm
    from gpt_jax import sharding as gs
    from gpt_jax.rlhf import dpo
    s = SHAPE
    length = s['prompt'] + s['response'] + 1
    c = gcfg.default_config()
    c.model.update(n_layers=s['n_layers'], d_model=s['d_model'], n_heads=s['n_heads'], context=length,
                   vocab_size=s['vocab'])
    c.train.update(batch_tokens=s['pairs'] * 2 * length, total_tokens=10**9)
    c.optim.update(peak_lr=s['lr'], warmup_tokens=0, clip=0.0, weight_decay=0.0)
    c.rlhf.dpo.beta = s['beta']
    c.mesh.update(fsdp=1, data=1)
    config = gcfg.validate(c)
    mesh = gs.make_mesh(config.mesh)
    module = gm.GPTLM(config.model)
    with gs.activation_context(mesh):  # the policy's own init (loop.setup's seed split), as a frozen copy
      self.ref = gm.init_params(module, jax.random.split(jax.random.PRNGKey(config.train.seed))[0],
                                shardings=gs.param_shardings(gm.abstract_variables(module)['params'], mesh))
    task = loop.Task(module=module, loss_fn=dpo.loss_fn(config), train_stream=None, tokens_per_row=2 * length,
                     flops_per_row=1.0, frozen={'ref': self.ref})
    state = loop.setup(config, task, mesh)
    self.state, self.step_fn = state, state.plan.step_fn
    index = {w: i for i, w in enumerate(_WORDS)}
    eos = s['vocab'] - 2
    texts = _texts(0)
    tokens = np.zeros((len(texts), 2, length + 1), np.int32)
    mask = np.zeros_like(tokens, np.float32)
    for i, t in enumerate(texts):
      prompt = [index[w] for w in t['prompt'].split()]
      for j, field in enumerate(('chosen', 'rejected')):
        tokens[i, j, :length] = prompt + [index[w] for w in t[field].split()] + [eos]
        mask[i, j, len(prompt):length] = 1
    self.rows = dict(tokens=tokens, loss_mask=mask, weight=np.ones(len(tokens), np.float32))
    self.batch_sharding = gs.batch_sharding(mesh)
    self.mesh, self.position = mesh, 0

  def step(self):
    import jax

    from gpt_jax import sharding as gs
    from gpt_jax.data import pipeline
    n = SHAPE['pairs']
    local = {k: v[self.position:self.position + n] for k, v in self.rows.items()}
    self.position = (self.position + n) % len(self.rows['tokens'])
    batch = pipeline.make_global_batch(local, self.batch_sharding)
    with gs.activation_context(self.mesh):
      params, train, metrics = self.step_fn(self.state.params, self.state.train_state, batch, {'ref': self.ref})
    self.state.params, self.state.train_state = params, train
    jax.block_until_ready(metrics['loss'])

  def step_times(self, steps: int) -> list[float]:
    self.step()
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      self.step()
      times.append(time.perf_counter() - start)
    return times


class TrlSide:
  """TRL's DPOTrainer with a transformers GPT-2 of the same shape and a word-level tokenizer (word i = id i)."""

  def __init__(self, workdir: str):
    import datasets
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    s = SHAPE
    vocab = {w: i for i, w in enumerate(_WORDS + ['<eos>', '<pad>'])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token='<pad>'))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token='<eos>', pad_token='<pad>')
    config = GPT2Config(n_layer=s['n_layers'], n_embd=s['d_model'], n_head=s['n_heads'], vocab_size=s['vocab'],
                        n_positions=s['prompt'] + s['response'] + 1, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, tie_word_embeddings=True)
    self.model, self.ref = GPT2LMHeadModel(config), GPT2LMHeadModel(config)
    self.ref.load_state_dict(self.model.state_dict())
    self.dataset = datasets.Dataset.from_list(_texts(0))
    self.workdir = workdir

  def step_times(self, steps: int) -> list[float]:
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer
    s = SHAPE
    times = []

    class Timer(TrainerCallback):
      def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

      def on_step_end(self, args, state, control, **kwargs):
        times.append(time.perf_counter() - self.start)

    args = DPOConfig(output_dir=self.workdir, per_device_train_batch_size=s['pairs'], max_steps=steps + 1,
                     learning_rate=s['lr'], beta=s['beta'], loss_type=['sigmoid'], max_length=128,
                     logging_steps=10**6, save_strategy='no', report_to=[], use_cpu=True, dataloader_num_workers=0,
                     weight_decay=0.0, max_grad_norm=0.0, disable_tqdm=True, seed=0)
    trainer = DPOTrainer(model=self.model, ref_model=self.ref, args=args, train_dataset=self.dataset,
                         processing_class=self.tokenizer, callbacks=[Timer()])
    trainer.train()
    return times[1:]


def main(argv):
  del argv
  import tempfile
  jax_side = JaxSide()
  with tempfile.TemporaryDirectory() as workdir:
    trl_side = TrlSide(workdir)
    trl_side.step_times(1)  # tokenises the dataset once and warms up
    ratios = []
    for r in range(FLAGS.rounds):
      sides = [('gpt_jax', jax_side), ('trl', trl_side)]
      measured = {name: statistics.median(side.step_times(FLAGS.steps)) for name, side in sides[::(-1) ** r]}
      ratios.append(measured['trl'] / measured['gpt_jax'])
      print(f'round {r}: gpt_jax {measured["gpt_jax"] * 1e3:7.1f} ms/step   TRL DPOTrainer '
            f'{measured["trl"] * 1e3:7.1f} ms/step   ratio {ratios[-1]:.2f}x', flush=True)
  print(f'median ratio (TRL step time / gpt_jax step time) over {FLAGS.rounds} rounds: '
        f'{statistics.median(ratios):.2f}x')


if __name__ == '__main__':
  app.run(main)
