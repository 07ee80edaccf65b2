"""Shared test fixtures: tiny validated configs, a tiny random language model, a command run on two processes, and
a reference command run beside it."""

import os
import socket
import subprocess

import jax

from gpt_jax import config as gcfg
from gpt_jax import model as gm
from tests import xla_env


def tiny_config(**overrides):
  """A validated 2-layer config; overrides are dotted keys with '__' for '.', e.g. model__n_heads=4."""
  c = gcfg.default_config()
  c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.context = 2, 64, 4, 32
  for key, value in overrides.items():
    gcfg.apply_override(c, key.replace('__', '.'), value)
  return gcfg.validate(c)


def tiny_lm(context: int, seed: int):
  """(config, module, params, full) for a default-shaped random GPTLM; full(params, tokens) -> log-probs."""
  config = gcfg.default_config()
  config.model.context = context
  config.train.batch_tokens = context
  config = gcfg.validate(config)
  module = gm.GPTLM(config.model)
  params = gm.init_params(module, jax.random.key(seed))
  full = jax.jit(lambda p, t: jax.nn.log_softmax(module.apply({'params': p}, t), axis=-1))
  return config, module, params, full


def load_lm(path, mesh=None):
  """(config, params, step) of the GPTLM saved in a workdir or export dir, params placed on mesh (default: one
  device), as the inference commands load it."""
  from gpt_jax import checkpoint as ckpt_lib
  from gpt_jax import sharding as gs
  config = ckpt_lib.load_config(str(path))
  abstract = gs.abstract_params(gm.abstract_variables(gm.GPTLM(config.model))['params'],
                                mesh or gs.single_device_mesh())
  params, step = ckpt_lib.load_for_inference(str(path), abstract)
  return config, params, step


TEXT = ('def main(argv):\n    return 0  # naïve café ✓, 1234 + 5678 = 6912\n'
        'The quick brown fox jumps over the lazy dog. ') * 40


def tiny_gpt2(path: str) -> str:
  """Saves to path a tiny transformers GPT-2 with every weight random (biases and LayerNorm gains too) and a
  byte-level BPE tokenizer of about 300 tokens trained on TEXT; returns path."""
  import os
  import torch
  from tokenizers import ByteLevelBPETokenizer
  from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator([TEXT], vocab_size=300, special_tokens=['<|endoftext|>'], show_progress=False)
  bpe.save_model(path)  # vocab.json and merges.txt
  bpe.save(os.path.join(path, 'tokenizer.json'))
  tokenizer = GPT2TokenizerFast(tokenizer_file=os.path.join(path, 'tokenizer.json'))
  tokenizer.save_pretrained(path)
  assert len(tokenizer) > 250
  torch.manual_seed(0)
  eot = tokenizer.convert_tokens_to_ids('<|endoftext|>')
  model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=len(tokenizer),
                                     bos_token_id=eot, eos_token_id=eot))
  with torch.no_grad():
    for name, p in model.named_parameters():
      gain = name.endswith(('ln_1.weight', 'ln_2.weight', 'ln_f.weight'))
      p.copy_((1.0 if gain else 0.0) + 0.2 * torch.randn_like(p))
  model.save_pretrained(path)
  return path


class SignalAt:
  """Wraps a training stream and sends this process `signum` while the n-th batch is read, as a user's Ctrl-C
  (SIGINT) or a scheduler's preemption (SIGTERM) would in the middle of a step."""

  def __init__(self, stream, n: int, signum):
    self.stream, self.n, self.signum, self.reads = stream, n, signum, 0

  def next_batch(self, rows):
    self.reads += 1
    if self.reads == self.n:
      os.kill(os.getpid(), self.signum)
    return self.stream.next_batch(rows)

  def state(self):
    return self.stream.state()

  def restore(self, state):
    self.stream.restore(state)


def run_on_two_processes(command: list[str], cwd: str, timeout: int = 300) -> list[str]:
  """Runs command as 2 jax processes of 4 CPU devices each over gloo on loopback; asserts both exit 0 and returns
  their outputs (stdout and stderr together), process 0's first."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = xla_env.env(4, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  processes = [subprocess.Popen(
      [*command, f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'], env=env,
      cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=timeout)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def start_beside(command: list[str], env: dict, cwd: str, log: str) -> subprocess.Popen:
  """Starts a reference command (typically the one-process run a two-process run is compared with) to run beside
  the test's other processes: each is mostly single-threaded start-up and compiling. Its output goes to the file
  `log`, which, unlike a pipe, never fills while the test waits on the others."""
  with open(log, 'w', encoding='utf-8') as f:
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: str, timeout: int = 300) -> str:
  """Waits for a start_beside process (killed if it outlives the timeout), asserts it exited 0 and returns its
  output."""
  try:
    process.wait(timeout)
  finally:
    if process.poll() is None:
      process.kill()
  with open(log, encoding='utf-8') as f:
    output = f.read()
  assert process.returncode == 0, output[-3000:]
  return output
