"""GPT-2 in Hugging Face format, against transformers on the same random checkpoint: logits, greedy decoding,
export, the BPE tokenizer, and the command line."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from safetensors import numpy as st
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

from gpt_jax import hf
from gpt_jax import model as gm
from gpt_jax import sample
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tok_lib
from tests.helpers import TEXT, load_lm, tiny_gpt2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
  return tiny_gpt2(str(tmp_path_factory.mktemp('gpt2')))


@pytest.fixture(scope='module')
def reference(hf_dir):
  model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
  tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, (3, 40))
  with torch.no_grad():
    logits = model(torch.as_tensor(tokens)).logits.numpy()
  return model, tokens, logits


def _logits(config, params, tokens, mesh=None):
  module = gm.GPTLM(config.model)
  with gs.activation_context(mesh or gs.single_device_mesh()):
    out = jax.jit(lambda p, t: module.apply({'params': p}, t))(params, tokens)
  return np.asarray(out)[..., :config.model.vocab_size]


@pytest.mark.parametrize('scan_layers', [True, False])
def test_imported_gpt2_gives_transformers_logits(hf_dir, reference, scan_layers):
  _, tokens, want = reference
  config = hf.config_from_hf(hf_dir)
  config.model.scan_layers = scan_layers
  params = hf.params_from_hf(config, hf.state_dict(hf_dir))
  np.testing.assert_allclose(_logits(config, params, tokens), want, atol=1e-4, rtol=1e-4)


def test_imported_gpt2_on_an_8_device_mesh(hf_dir, reference):
  _, tokens, want = reference
  config, params = hf.load_gpt2(hf_dir)
  mesh = gs.make_mesh(config.mesh)  # fsdp over all 8 devices
  shardings = gs.param_shardings(gm.abstract_variables(gm.GPTLM(config.model))['params'], mesh)
  params = jax.device_put(params, shardings)
  assert params['trunk']['blocks']['mlp']['fc']['kernel'].sharding.spec[1] == 'fsdp'
  tokens = np.concatenate([tokens] * 3)[:8]
  np.testing.assert_allclose(_logits(config, params, tokens, mesh), np.concatenate([want] * 3)[:8],
                             atol=1e-4, rtol=1e-4)


def test_greedy_decoding_with_the_cache_equals_transformers_generate(hf_dir, reference):
  model, tokens, _ = reference
  config, params = hf.load_gpt2(hf_dir)
  eot = model.config.eos_token_id
  sampler = sample.Sampler(gm.GPTLM(config.model), config.model, params, eot_id=eot, pad_id=eot, batch_size=4)
  prompts = [list(tokens[0, :5]), list(tokens[1, :11]), list(tokens[2, :1])]
  ours = sampler.generate(prompts, max_new_tokens=12, rng=jax.random.key(0), temperature=0.0)
  for prompt, got in zip(prompts, ours):
    with torch.no_grad():
      out = model.generate(torch.as_tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=eot)
    theirs = out[0, len(prompt):].tolist()
    theirs = theirs[:theirs.index(eot) + 1] if eot in theirs else theirs  # both stop at end-of-text
    assert got.tokens.tolist() == theirs and len(set(theirs)) > 2


def test_export_loads_in_transformers_and_import_export_is_bit_exact(hf_dir, reference, tmp_path):
  _, tokens, want = reference
  config, params = hf.load_gpt2(hf_dir)
  out = hf.save_gpt2(config, params, str(tmp_path / 'out'))
  reloaded = GPT2LMHeadModel.from_pretrained(out).eval()
  assert reloaded.config.eos_token_id == GPT2LMHeadModel.from_pretrained(hf_dir).config.eos_token_id
  with torch.no_grad():
    np.testing.assert_allclose(reloaded(torch.as_tensor(tokens)).logits.numpy(), want, atol=1e-5)
  original = st.load_file(os.path.join(hf_dir, hf.WEIGHTS))
  exported = st.load_file(os.path.join(out, hf.WEIGHTS))
  for key, value in exported.items():
    source = original.get(key, original.get(key.removeprefix('transformer.')))
    np.testing.assert_array_equal(value, source)
  assert GPT2TokenizerFast.from_pretrained(out).encode('hello') == GPT2TokenizerFast.from_pretrained(hf_dir).encode(
      'hello')


def test_configs_gpt2_cannot_express_are_refused():
  from tests.helpers import tiny_config
  for overrides, field in ((dict(model__ln_placement='post'), 'ln_placement'),
                           (dict(model__attention='alternating'), 'attention'),
                           (dict(model__tie_embeddings=False), 'tie_embeddings'),
                           (dict(model__d_head=8), 'n_heads \\* model.d_head')):
    with pytest.raises(ConfigError, match=f'cannot be written as GPT-2: model.{field}'):
      hf.check_expressible(tiny_config(**overrides))


def test_hf_tokenizer_encodes_and_decodes_as_gpt2_tokenizer_fast(hf_dir):
  ours = tok_lib.load(hf.config_from_hf(hf_dir).data)
  theirs = GPT2TokenizerFast.from_pretrained(hf_dir)
  assert isinstance(ours, tok_lib.HFTokenizer) and ours.vocab_size == len(theirs) and ours.pad_id == len(theirs)
  for text in ['Hello world', ' leading space', 'naïve café ✓ 漢字 😀', 'def f(x):\n\treturn x<|endoftext|>next',
               TEXT[:500]]:
    ids = ours.encode(text)
    assert ids == theirs.encode(text)
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
  assert ours.encode('a<|endoftext|>b').count(ours.eot_id) == 1
  assert [x.tolist() for x in ours.encode_batch(['ab', 'c d'])] == [theirs.encode('ab'), theirs.encode('c d')]


def test_hf_tokenizer_from_vocab_and_merges_equals_tokenizer_json(hf_dir, tmp_path):
  for name in ('vocab.json', 'merges.txt'):
    (tmp_path / name).write_bytes(open(os.path.join(hf_dir, name), 'rb').read())
  files = tok_lib.HFTokenizer(str(tmp_path))
  json_based = tok_lib.HFTokenizer(hf_dir)
  assert files.vocab_size == json_based.vocab_size and files.eot_id == json_based.eot_id
  for text in ['naïve café ✓ 漢字', TEXT[:300], 'x<|endoftext|>y']:
    assert files.encode(text) == json_based.encode(text) and files.decode(files.encode(text)) == json_based.decode(
        json_based.encode(text))
  with pytest.raises(ConfigError, match='has neither tokenizer.json nor vocab.json'):
    tok_lib.load(type('D', (), {'tokenizer': f'hf:{tmp_path / "nope"}'})())


def _run(*args, cwd=REPO):
  return subprocess.run([sys.executable, '-m', 'gpt_jax.hf', *args], capture_output=True, text=True, timeout=300,
                        cwd=cwd)


def test_command_line_import_then_export(hf_dir, reference, tmp_path):
  _, tokens, want = reference
  result = _run('import', f'--hf_dir={hf_dir}', f'--workdir={tmp_path / "run"}')
  assert result.returncode == 0, result.stderr[-2000:]
  config, params, step = load_lm(tmp_path / 'run')
  # The run keeps its own copy of the tokenizer.
  assert step == 0 and config.data.tokenizer == f'hf:{tmp_path / "run" / "tokenizer"}'
  assert os.path.isfile(tmp_path / 'run' / 'tokenizer' / 'tokenizer.json')
  np.testing.assert_allclose(_logits(config, params, tokens), want, atol=1e-4, rtol=1e-4)
  result = _run('export', f'--workdir={tmp_path / "run"}', f'--out={tmp_path / "hf"}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads((tmp_path / 'hf' / 'config.json').read_text())['n_layer'] == 2
  assert os.path.isfile(tmp_path / 'hf' / 'vocab.json')


def test_command_line_refuses_what_it_cannot_read_in_one_sentence(hf_dir, tmp_path):
  torch_only = tmp_path / 'bin'
  torch_only.mkdir()
  (torch_only / 'config.json').write_text(open(os.path.join(hf_dir, 'config.json')).read())
  (torch_only / 'pytorch_model.bin').write_bytes(b'')
  llama = tmp_path / 'llama'
  llama.mkdir()
  (llama / 'config.json').write_text(json.dumps({'model_type': 'llama'}))
  no_tokenizer = tmp_path / 'weights_only'
  no_tokenizer.mkdir()
  for name in ('config.json', hf.WEIGHTS):
    (no_tokenizer / name).write_bytes(open(os.path.join(hf_dir, name), 'rb').read())
  cases = [(torch_only, 'PyTorch .bin weights: convert them once'), (llama, "describes a 'llama' model"),
           (tmp_path / 'nothing', 'is not a directory'), (no_tokenizer, 'has no tokenizer.json')]
  for path, message in cases:
    result = _run('import', f'--hf_dir={path}', f'--workdir={tmp_path / "w"}')
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert result.returncode == 2 and 'Traceback' not in result.stderr and len(errors) == 1, result.stderr[-2000:]
    assert message in errors[0]
  assert not os.path.exists(tmp_path / 'w')


def test_load_gpt2_reads_a_directory_without_tokenizer_files(hf_dir, reference, tmp_path):
  _, tokens, want = reference
  for name in ('config.json', hf.WEIGHTS):
    (tmp_path / name).write_bytes(open(os.path.join(hf_dir, name), 'rb').read())
  config, params = hf.load_gpt2(str(tmp_path))
  np.testing.assert_allclose(_logits(config, params, tokens), want, atol=1e-4, rtol=1e-4)


def test_export_of_a_byte_tokenizer_run_says_how_to_tokenize(tmp_path):
  from tests.helpers import tiny_config
  config = tiny_config()
  assert config.data.tokenizer == 'byte'
  params = gm.init_params(gm.GPTLM(config.model), jax.random.key(0))
  out = hf.save_gpt2(config, jax.device_get(params), str(tmp_path / 'out'))
  note = open(os.path.join(out, 'TOKENIZER.md'), encoding='utf-8').read()
  byte = tok_lib.ByteTokenizer()
  assert 'UTF-8 bytes of the text (0 to 255), 256 is end-of-text' in note and byte.eot_id == 256
  assert json.loads(open(os.path.join(out, 'config.json')).read())['eos_token_id'] == byte.eot_id
  code = note.split('\n\n    ', 1)[1]  # the note's two lines of code, run as written
  scope = {'text': 'naïve ✓'}
  exec(code.replace('\n    ', '\n'), scope)  # noqa: S102
  assert scope['ids'] == byte.encode('naïve ✓') and scope['text'] == 'naïve ✓'
