"""Train-step throughput and MFU of gpt_jax against PyTorch's GPT-2 on the same shapes, in one run.

    python -m benchmarks.train_step [--shapes=tiny,small256] [--steps=10]
    python -m benchmarks.train_step --against=/path/to/other/checkout [--rounds=6] [--shapes=tiny]

For each shape it times a transformers GPT2LMHeadModel + torch.optim.AdamW step (float32, CPU, all cores) and
gpt_jax's jitted train step (AdamW, clipping, float32) with layers under nn.scan and as a plain Python loop
(model.scan_layers), and prints tokens/s, the ratio to PyTorch, and gpt_jax's MFU against the float32 matmul
peak that flops.matmul_probe measures on this machine in the same run.
With --against it instead times gpt_jax's step from this tree and from another checkout (e.g. the previous commit,
`git worktree add /tmp/prev HEAD~1`) in alternating subprocesses, rounds x (this, other) in swapped order, and
prints each round and the median ratio: an interleaved A/B that the machine's drift affects equally.
Shapes: tiny = 4 layers, d_model 256, 4 heads, context 256, batch 8, vocab 8192;
small256 = GPT-3 Small (12 layers, 768, 12 heads, vocab 50257) at context 256, batch 4.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list('shapes', ['tiny', 'small256'], 'Which shapes to run.')
flags.DEFINE_integer('steps', 10, 'Timed steps per framework and shape (after 2 warm-up steps).')
flags.DEFINE_string('against', None, 'another gpt_jax checkout to A/B the scanned train step against.')
flags.DEFINE_integer('rounds', 6, 'A/B rounds with --against.')

SHAPES = {
    'tiny': dict(n_layers=4, d_model=256, n_heads=4, context=256, batch=8, vocab_size=8192),
    'small256': dict(n_layers=12, d_model=768, n_heads=12, context=256, batch=4, vocab_size=50257),
}


def _best_step_time(step, steps: int) -> float:
  for _ in range(2):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]  # median


def jax_step_time(shape: dict, steps: int, scan_layers: bool) -> tuple[float, object]:
  import jax
  import numpy as np

  from gpt_jax import config as gcfg
  from gpt_jax import loop
  from gpt_jax import losses
  from gpt_jax import model as gm
  from gpt_jax import optim

  c = gcfg.default_config()
  for key in ('n_layers', 'd_model', 'n_heads', 'context', 'vocab_size'):
    c.model[key] = shape[key]
  c.model.scan_layers = scan_layers
  c.train.batch_tokens = shape['batch'] * shape['context']
  gcfg.validate(c)
  module = gm.GPTLM(c.model)
  params = gm.init_params(module, jax.random.key(0))
  optimizer = optim.make_optimizer(c.optim, params)
  train = loop.init_train_state(optimizer, params, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, shape['vocab_size'], (shape['batch'], shape['context'] + 1), dtype=np.int32)
  batch = {'inputs': jax.numpy.asarray(tokens[:, :-1]), 'targets': jax.numpy.asarray(tokens[:, 1:])}
  step_fn = jax.jit(loop.make_train_step(losses.lm_loss_fn(c), optimizer, c.optim, 1, c.model.context),
                    donate_argnums=(0, 1))
  state = [params, train]

  def step():
    state[0], state[1], metrics = step_fn(state[0], state[1], batch, {})
    metrics['loss'].block_until_ready()
  return _best_step_time(step, steps), c.model


def torch_step_time(shape: dict, steps: int) -> float:
  import torch
  from transformers import GPT2Config, GPT2LMHeadModel

  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  model = GPT2LMHeadModel(GPT2Config(
      n_layer=shape['n_layers'], n_embd=shape['d_model'], n_head=shape['n_heads'], n_positions=shape['context'],
      vocab_size=shape['vocab_size'], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
  tokens = torch.randint(0, shape['vocab_size'], (shape['batch'], shape['context'] + 1))

  def step():
    loss = model(input_ids=tokens[:, :-1], labels=tokens[:, 1:].contiguous()).loss
    # transformers shifts labels itself; passing the pre-shifted targets keeps the work identical.
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
  return _best_step_time(step, steps)


def _subprocess_step_time(tree: str, shape: str, steps: int) -> float:
  # Both trees provide jax_step_time(shape, steps, scan_layers); each runs its own gpt_jax.
  code = (f'import json; from benchmarks.train_step import SHAPES, jax_step_time; '
          f'print(json.dumps(jax_step_time(SHAPES[{shape!r}], {steps}, True)[0]))')
  out = subprocess.run([sys.executable, '-c', code], cwd=tree, capture_output=True, text=True, check=True)
  return float(out.stdout.strip().splitlines()[-1])


def ab_main() -> None:
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for name in FLAGS.shapes:
    ratios = []
    for r in range(FLAGS.rounds):
      trees = (here, FLAGS.against) if r % 2 == 0 else (FLAGS.against, here)
      times = {tree: _subprocess_step_time(tree, name, FLAGS.steps) for tree in trees}
      ratios.append(times[FLAGS.against] / times[here])
      print(f'{name} round {r}: this tree {1e3 * times[here]:.1f} ms/step, other {1e3 * times[FLAGS.against]:.1f} '
            f'ms/step, speed ratio this/other {ratios[-1]:.3f}', flush=True)
    print(f'{name}: median speed ratio this/other over {FLAGS.rounds} rounds: {statistics.median(ratios):.3f}')


def main(argv):
  del argv
  if FLAGS.against:
    return ab_main()
  from gpt_jax import flops

  peak = flops.matmul_probe(seconds=2.0)
  print(f'float32 matmul probe peak: {peak / 1e9:.1f} GFLOP/s on {os.cpu_count()} cores')
  print(f'{"shape":10} {"layers":9} {"gpt_jax tok/s":>14} {"torch tok/s":>12} {"ratio":>6} {"gpt_jax MFU":>12}')
  for name in FLAGS.shapes:
    shape = SHAPES[name]
    tokens = shape['batch'] * shape['context']
    torch_tps = tokens / torch_step_time(shape, FLAGS.steps)
    for scan_layers in (True, False):
      jax_time, model_config = jax_step_time(shape, FLAGS.steps, scan_layers)
      jax_tps = tokens / jax_time
      mfu = flops.mfu(jax_tps, model_config, peak)
      print(f'{name:10} {"scanned" if scan_layers else "unrolled":9} {jax_tps:14.0f} {torch_tps:12.0f} '
            f'{jax_tps / torch_tps:6.2f} {100 * mfu:11.1f}%', flush=True)


if __name__ == '__main__':
  app.run(main)
