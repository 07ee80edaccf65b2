"""Sampling throughput: gpt_jax's jitted KV-cache decoding vs transformers' GPT2LMHeadModel.generate (PyTorch, CPU).

Both models are randomly initialised with the same GPT-2 shapes (no download) and decode the same batch of
prompts greedily with a KV cache for exactly --new_tokens tokens. Prints tokens/s of each and their ratio.
The default shapes are configs/tiny.py:mini with the byte tokenizer, the model this project samples on CPU;
docs/performance.md lists the figures at other shapes (GPT-2's vocabulary, batch 1).

    python -m benchmarks.sample
    python -m benchmarks.sample --vocab_size=50257
    python -m benchmarks.sample --n_layers=12 --d_model=768 --n_heads=12 --vocab_size=50257 --batch=4 --new_tokens=64
"""

from __future__ import annotations

import os
import time

from absl import app, flags

flags.DEFINE_integer('n_layers', 4, 'transformer blocks.')
flags.DEFINE_integer('d_model', 256, 'residual width.')
flags.DEFINE_integer('n_heads', 4, 'attention heads.')
flags.DEFINE_integer('vocab_size', 258, 'vocabulary (258: the byte tokenizer; 50257: GPT-2 BPE).')
flags.DEFINE_integer('batch', 8, 'prompts decoded together.')
flags.DEFINE_integer('prompt_len', 32, 'tokens per prompt.')
flags.DEFINE_integer('new_tokens', 128, 'tokens generated per prompt.')
flags.DEFINE_integer('repeats', 10, 'timed runs of each, interleaved; the fastest is reported.')
flags.DEFINE_bool('matmul_floor', True, 'also time the decode step\'s weight matmuls alone in both frameworks: '
                  'the least time per token any decoder of these shapes on this machine can take.')
FLAGS = flags.FLAGS


def _cores() -> int:
  """Cores this process may run on: `taskset -c 0 python -m benchmarks.sample` gives both frameworks one."""
  return len(os.sched_getaffinity(0))


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def jax_generate(prompts):
  import jax
  from gpt_jax import config as gcfg
  from gpt_jax import model as gm
  from gpt_jax import sample
  config = gcfg.default_config()
  m = config.model
  m.n_layers, m.d_model, m.n_heads, m.vocab_size = FLAGS.n_layers, FLAGS.d_model, FLAGS.n_heads, FLAGS.vocab_size
  m.context = FLAGS.prompt_len + FLAGS.new_tokens
  config.train.batch_tokens = m.context
  config = gcfg.validate(config)
  module = gm.GPTLM(config.model)
  params = gm.init_params(module, jax.random.key(0))
  sampler = sample.Sampler(module, config.model, params, eot_id=None, batch_size=FLAGS.batch)
  run = lambda: sampler.generate(prompts, max_new_tokens=FLAGS.new_tokens, rng=jax.random.key(0), temperature=0.0)
  assert all(len(s.tokens) == FLAGS.new_tokens for s in run())  # also compiles
  return run


def torch_generate(prompts):
  import torch
  import transformers
  torch.set_num_threads(_cores())
  torch.manual_seed(0)
  config = transformers.GPT2Config(n_layer=FLAGS.n_layers, n_embd=FLAGS.d_model, n_head=FLAGS.n_heads,
                                   vocab_size=FLAGS.vocab_size, n_positions=FLAGS.prompt_len + FLAGS.new_tokens,
                                   bos_token_id=FLAGS.vocab_size - 1, eos_token_id=FLAGS.vocab_size - 1)
  model = transformers.GPT2LMHeadModel(config).eval()
  input_ids = torch.tensor(prompts, dtype=torch.long)
  generation = transformers.GenerationConfig(max_new_tokens=FLAGS.new_tokens, min_new_tokens=FLAGS.new_tokens,
                                             do_sample=False, use_cache=True, pad_token_id=0)

  def run():
    with torch.inference_mode():
      return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=generation)

  assert run().shape == (FLAGS.batch, FLAGS.prompt_len + FLAGS.new_tokens)  # also warms up
  return run


def matmul_floor():
  """Seconds per decode step of only the weight matmuls (fused qkv, out, fc, proj per layer, then the head, as both
  decoders lay them out) on [batch, d_model] rows, new_tokens steps in a row: in JAX a jitted
  fori_loop, in PyTorch a plain loop."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  d, f, v, steps = FLAGS.d_model, 4 * FLAGS.d_model, FLAGS.vocab_size, FLAGS.new_tokens
  rng = np.random.default_rng(0)
  w = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)
  layers = [[w(d, 3 * d), w(d, d), w(d, f), w(f, d)] for _ in range(FLAGS.n_layers)]
  head = w(d, v)
  x0 = np.ones((FLAGS.batch, d), np.float32)

  def step(x, layers, head, mm, gelu):
    for qkv, o, fc, proj in layers:
      y = mm(x, qkv)
      x = x + mm(y[:, :d] + y[:, d:2 * d] + y[:, 2 * d:], o)
      x = x + mm(gelu(mm(x, fc)), proj)
    return x + mm(x, head)[:, :d] * 1e-3  # feeds the head back so no step can be skipped

  jax_loop = jax.jit(lambda x, layers, head: jax.lax.fori_loop(
      0, steps, lambda _, x: step(x, layers, head, jnp.dot, jax.nn.gelu), x))
  args = jax.device_put((x0, layers, head))
  jax_run = lambda: jax_loop(*args).block_until_ready()
  torch_args = [torch.from_numpy(x0), [[torch.from_numpy(a) for a in layer] for layer in layers],
                torch.from_numpy(head)]

  def torch_run():
    with torch.inference_mode():
      x = torch_args[0]
      for _ in range(steps):
        x = step(x, torch_args[1], torch_args[2], torch.matmul, torch.nn.functional.gelu)

  jax_run(), torch_run()
  return {name: min(_seconds(run) for _ in range(FLAGS.repeats)) / steps
          for name, run in (('jax', jax_run), ('torch', torch_run))}


def main(argv):
  del argv
  import numpy as np
  prompts = np.random.default_rng(0).integers(0, FLAGS.vocab_size, (FLAGS.batch, FLAGS.prompt_len)).tolist()
  tokens = FLAGS.batch * FLAGS.new_tokens
  runs = {'jax': jax_generate(prompts), 'torch': torch_generate(prompts)}
  # Interleaved runs, fastest of each: other load on the machine then slows neither figure more than the other.
  seconds = {name: float('inf') for name in runs}
  for _ in range(FLAGS.repeats):
    for name, run in runs.items():
      seconds[name] = min(seconds[name], _seconds(run))
  print(f'shapes: n_layers={FLAGS.n_layers} d_model={FLAGS.d_model} n_heads={FLAGS.n_heads} '
        f'vocab={FLAGS.vocab_size} batch={FLAGS.batch} prompt={FLAGS.prompt_len} new={FLAGS.new_tokens} '
        f'({_cores()} CPU cores, greedy, KV cache, best of {FLAGS.repeats})')
  print(f'gpt_jax.sample          {tokens / seconds["jax"]:10.1f} tokens/s  ({seconds["jax"]:.3f} s)')
  print(f'transformers generate   {tokens / seconds["torch"]:10.1f} tokens/s  ({seconds["torch"]:.3f} s)')
  print(f'ratio                   {seconds["torch"] / seconds["jax"]:10.2f}x')
  if FLAGS.matmul_floor:
    floor = matmul_floor()
    print(f'per decode step: gpt_jax {seconds["jax"] / FLAGS.new_tokens * 1e3:.3f} ms, transformers '
          f'{seconds["torch"] / FLAGS.new_tokens * 1e3:.3f} ms; the weight matmuls alone: XLA '
          f'{floor["jax"] * 1e3:.3f} ms, PyTorch {floor["torch"] * 1e3:.3f} ms')
    print(f'ratio if gpt_jax spent nothing beyond XLA\'s matmuls: {seconds["torch"] / FLAGS.new_tokens / floor["jax"]:.2f}x')


if __name__ == '__main__':
  app.run(main)
