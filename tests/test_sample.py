"""Tests of gpt_jax.sample: cached greedy decoding equals argmax decoding from the full forward pass, the
per-token log-probs, top-k / top-p filtering, end-of-text and stop strings, truncation and bucketing."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import buckets
from gpt_jax import decoding
from gpt_jax import sample
from gpt_jax.data import tokenizer as tok_lib
from tests.helpers import tiny_lm

CONTEXT = 64
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def lm():
  config, module, params, _ = tiny_lm(CONTEXT, seed=0)
  # Sharpen the random model so greedy choices are well separated from float noise.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 8 if 'wte' in jax.tree_util.keystr(path) else x, params)
  full = jax.jit(lambda p, t: jax.nn.log_softmax(module.apply({'params': p}, t), axis=-1))
  return config, module, params, full


def full_logprobs(full, params, tokens):
  """Log-probs of the next token after every prefix of `tokens`, from one uncached forward pass.

  Sequences are right-padded to the context: attention is causal, so padding never changes earlier positions.
  """
  padded = np.zeros((1, CONTEXT), np.int32)
  padded[0, :len(tokens)] = tokens
  return np.asarray(full(params, padded))[0, :len(tokens)]


def argmax_decode(full, params, prompt, n):
  tokens, logprobs = list(prompt), []
  for _ in range(n):
    lp = full_logprobs(full, params, tokens)[-1]
    tokens.append(int(np.argmax(lp)))
    logprobs.append(lp[tokens[-1]])
  return tokens[len(prompt):], np.array(logprobs)


PROMPTS = [[72, 101, 108, 108, 111], [7], list(range(30, 50)), [200, 13, 10]]
NEW = 6  # one max_new_tokens throughout, so tests share compiled functions


@pytest.fixture(scope='module')
def sampler(lm):
  config, module, params, _ = lm
  return sample.Sampler(module, config.model, params, eot_id=None, pad_id=tok_lib.ByteTokenizer.pad_id)


def test_greedy_equals_argmax_of_the_full_forward_pass(lm, sampler):
  _, _, params, full = lm
  samples = sampler.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(0), temperature=0.0)
  for prompt, s in zip(PROMPTS, samples):
    expected, expected_lp = argmax_decode(full, params, prompt, NEW)
    assert s.tokens.tolist() == expected
    np.testing.assert_allclose(s.raw_logprobs, expected_lp, atol=1e-4)
    np.testing.assert_array_equal(s.logprobs, 0.0)  # greedy samples from a point mass
    assert s.finish_reason == 'length' and not s.prompt_truncated


def test_top_k_1_is_greedy_at_any_temperature(sampler):
  greedy = sampler.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(0), temperature=0.0)
  top1 = sampler.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(3), temperature=1.7, top_k=1)
  for g, t in zip(greedy, top1):
    assert g.tokens.tolist() == t.tokens.tolist()
    np.testing.assert_allclose(t.logprobs, 0.0, atol=1e-6)


def test_sampled_logprobs_are_under_the_scaled_distribution(lm, sampler):
  _, _, params, full = lm
  T = 2.0  # the sharpened model repeats its last token with p = 0.993 at T = 0.7: seeds would rarely differ
  samples = sampler.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(1), temperature=T)
  again = sampler.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(1), temperature=T)
  other = sampler.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(2), temperature=T)
  assert all(a.tokens.tolist() == b.tokens.tolist() for a, b in zip(samples, again))
  assert any(a.tokens.tolist() != b.tokens.tolist() for a, b in zip(samples, other))
  for prompt, s in zip(PROMPTS, samples):
    raw = full_logprobs(full, params, prompt + s.tokens.tolist())[len(prompt) - 1:-1]  # [NEW, V]
    scaled = np.asarray(jax.nn.log_softmax(raw / T, axis=-1))
    rows = np.arange(len(s.tokens))
    np.testing.assert_allclose(s.raw_logprobs, raw[rows, s.tokens], atol=1e-4)
    np.testing.assert_allclose(s.logprobs, scaled[rows, s.tokens], atol=1e-4)


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
  keep = lambda top_p=1.0, **kw: np.isfinite(np.asarray(decoding.filter_logits(logits, 1.0, top_p, **kw)))[0].tolist()
  assert keep(top_k=0, nucleus=False) == [True, True, True, True]
  assert keep(top_k=2, nucleus=False) == [False, True, False, True]
  assert keep(top_k=0, nucleus=True, top_p=0.75) == [False, True, False, True]
  assert keep(top_k=0, nucleus=True, top_p=0.85) == [False, True, True, True]
  assert keep(top_k=0, nucleus=True, top_p=0.1) == [False, True, False, False]  # the argmax always stays
  assert keep(top_k=2, nucleus=True, top_p=0.99) == [False, True, False, True]


def test_end_of_text_stops_a_row_inside_the_scan(lm, sampler):
  config, module, params, _ = lm
  free = [s.tokens.tolist() for s in sampler.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(0),
                                                      temperature=0.0)]
  eot = free[0][3]  # pretend the token greedy decoding emits at step 3 of row 0 is end-of-text
  stopped = sample.Sampler(module, config.model, params, eot_id=eot, pad_id=0)
  for row, s in zip(free, stopped.generate(PROMPTS, max_new_tokens=NEW, rng=jax.random.key(0), temperature=0.0)):
    n = row.index(eot) + 1 if eot in row else NEW
    assert s.tokens.tolist() == row[:n] and s.finish_reason == ('eot' if eot in row else 'length')
  # The raw Generation of row 0: padding and done after end-of-text (same shapes as above: no new compile).
  tokens = np.zeros((4, 32), np.int32)
  for i, p in enumerate(PROMPTS):
    tokens[i, :len(p)] = p
  out = stopped._generate(stopped.params, tokens, np.array([len(p) for p in PROMPTS], np.int32), jax.random.key(0),
                          jnp.float32(0), jnp.float32(1), max_new_tokens=NEW, top_k=0, greedy=True, nucleus=False)
  n = free[0].index(eot) + 1
  assert np.asarray(out.done)[0].tolist() == [False] * n + [True] * (NEW - n)
  assert np.asarray(out.tokens)[0].tolist() == free[0][:n] + [0] * (NEW - n)
  assert np.all(np.asarray(out.raw_logprobs)[0, n:] == 0)


def test_stop_strings_cut_text():
  assert sample.apply_stop('abc\nde\n\nf', ['\n\n', 'e']) == ('abc\nd', True)
  assert sample.apply_stop('abc', ['x']) == ('abc', False)


def test_generate_text_applies_stop_strings_to_text_and_tokens(sampler):
  tok = tok_lib.ByteTokenizer()
  prompts = [bytes(p).decode('latin-1') if max(p) < 128 else 'abc' for p in PROMPTS]
  plain = sample.generate_text(sampler, tok, prompts, max_new_tokens=NEW, rng=jax.random.key(0), temperature=0.0)
  text = plain[0].text
  stop = text[2:4]
  cut = sample.generate_text(sampler, tok, prompts, stop=[stop], max_new_tokens=NEW, rng=jax.random.key(0),
                             temperature=0.0)
  kept = text[:text.index(stop)]
  n_tokens = len(kept.encode()) + len(stop.encode())
  assert cut[0].text == kept and cut[0].finish_reason == 'stop'
  assert cut[0].tokens.tolist() == plain[0].tokens[:n_tokens].tolist() and len(cut[0].raw_logprobs) == n_tokens
  for p, c in zip(plain[1:], cut[1:]):
    assert c.text == p.text.split(stop)[0]


def test_long_prompts_are_cut_from_the_left(sampler):
  long_prompt = list(np.arange(100) % 250)
  max_prompt = CONTEXT - NEW + 1
  s, = sampler.generate([long_prompt], max_new_tokens=NEW, rng=jax.random.key(0), temperature=0.0)
  r, = sampler.generate([long_prompt[-max_prompt:]], max_new_tokens=NEW, rng=jax.random.key(0), temperature=0.0)
  assert s.prompt_truncated and not r.prompt_truncated and s.tokens.tolist() == r.tokens.tolist()
  with pytest.raises(ValueError, match='max_new_tokens'):
    sampler.generate([[1]], max_new_tokens=CONTEXT, rng=jax.random.key(0))


def test_bucket_batches_compile_few_shapes():
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 300, size=2000)
  batches = buckets.bucket_batches(lengths, 256, lambda t: 4096 // t)
  covered = np.sort(np.concatenate([idx for idx, _, _ in batches]))
  np.testing.assert_array_equal(covered, np.arange(2000))
  for idx, length, rows in batches:
    assert len(idx) <= rows <= max(1, 4096 // length) and length <= 256
    assert all(min(lengths[i], 256) <= length for i in idx)
  assert len({(length, rows) for _, length, rows in batches}) <= 8
  assert len(batches) < 200


def test_command_line_samples_from_an_exported_checkpoint(lm, sampler, tmp_path):
  from gpt_jax import checkpoint as ckpt
  config, _, params, _ = lm
  ckpt.export_params(str(tmp_path / 'export'), params, 7, config)
  tok = tok_lib.ByteTokenizer()
  want, = sample.generate_text(sampler, tok, ['Hello'], max_new_tokens=NEW, rng=jax.random.key(0), temperature=0.0)
  result = subprocess.run(
      [sys.executable, '-m', 'gpt_jax.sample', f'--workdir={tmp_path / "export"}', '--prompt=Hello',
       f'--max_new_tokens={NEW}', '--temperature=0'], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_DEFAULT_MATMUL_PRECISION='highest'))  # as conftest sets for this process
  assert result.returncode == 0, result.stderr[-3000:]
  assert '# step 7, temperature 0.0' in result.stdout and f'[length, {NEW} tokens' in result.stdout, result.stdout
  assert 'Hello' + want.text in result.stdout, (want.text, result.stdout)


def test_command_line_text_reaches_the_tokenizer_as_typed():
  from gpt_jax.sample.__main__ import unescape
  assert unescape('naïve café ✓') == 'naïve café ✓'
  assert unescape('C:\\x') == 'C:\\x' and unescape('\\u00e9') == '\\u00e9'
  assert unescape('a\\nb\\tc\\\\n') == 'a\nb\tc\\n'


def test_export_command_writes_what_sampling_reads(lm, tmp_path):
  from gpt_jax import checkpoint as ckpt
  from tests.helpers import load_lm
  config, _, params, _ = lm
  ckpt.export_params(str(tmp_path / 'first'), params, 3, config)
  run = lambda *args: subprocess.run([sys.executable, '-m', 'gpt_jax.export', *args], cwd=REPO,  # noqa: E731
                                     capture_output=True, text=True, timeout=300)
  result = run(f'--workdir={tmp_path / "first"}', f'--out={tmp_path / "second"}')
  assert result.returncode == 0, result.stderr[-2000:]
  _, loaded, step = load_lm(tmp_path / 'second')
  assert step == 3
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), loaded, params)
  again = run(f'--workdir={tmp_path / "first"}', f'--out={tmp_path / "second"}')
  assert again.returncode == 2 and 'already exists' in again.stderr and 'Traceback' not in again.stderr
