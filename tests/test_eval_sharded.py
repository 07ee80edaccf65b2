"""Evaluation and sampling on a device mesh: sharded params and batch rows give what one device gives, in one
process (8 CPU devices) and in two processes over gloo; params load from a checkpoint straight onto the mesh."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt_lib
from gpt_jax import cli
from gpt_jax import model as gm
from gpt_jax import sample
from gpt_jax import sharding as gs
from gpt_jax.data import tokenizer as tok_lib
from gpt_jax.eval import fewshot, tasks
from tests import xla_env
from tests.helpers import load_lm, run_on_two_processes, tiny_config

TOK = tok_lib.ByteTokenizer()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mesh(data, fsdp, tensor):
  config = tiny_config(mesh__data=data, mesh__fsdp=fsdp, mesh__tensor=tensor)
  return gs.make_mesh(config.mesh)


@pytest.fixture(scope='module')
def model():
  config = tiny_config(model__context=64, model__vocab_size=TOK.vocab_size, model__d_model=128,
                       model__attention='alternating', model__local_window=8)
  module = gm.GPTLM(config.model)
  params = gm.init_params(module, jax.random.key(3))
  # Sharpen the random model so greedy choices are well separated from float noise.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 8 if 'wte' in jax.tree_util.keystr(path) else x, params)
  return config, module, jax.device_get(params)


def _on_mesh(module, params, mesh):
  shardings = gs.param_shardings(gm.abstract_variables(module)['params'], mesh)
  return jax.device_put(params, shardings)


def _split_leaves(params):
  return [x for x in jax.tree.leaves(params) if not x.sharding.is_fully_replicated]


@pytest.mark.parametrize('shape', [(2, 2, 2), (1, 2, 4)])
def test_sharded_scorer_equals_one_device(model, shape):
  config, module, params = model
  rng = np.random.default_rng(0)
  # 7 requests of mixed lengths: no bucket's row count is a multiple of the 4 or 2 batch shards by itself.
  requests = [(list(rng.integers(0, 256, n)), k) for n, k in [(2, 1), (5, 3), (17, 4), (40, 39), (65, 10),
                                                            (33, 1), (9, 2)]]
  single = fewshot.Scorer(module, params, 64, batch_tokens=256).score(requests)
  mesh = _mesh(*shape)
  sharded_params = _on_mesh(module, params, mesh)
  assert _split_leaves(sharded_params)
  sharded = fewshot.Scorer(module, sharded_params, 64, batch_tokens=256).score(requests)  # mesh from the params
  np.testing.assert_allclose(sharded[0], single[0], rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(sharded[1], single[1])


@pytest.mark.parametrize('shape,temperature,top_k', [((2, 2, 2), 0.0, 0), ((1, 2, 4), 0.0, 0), ((2, 2, 2), 0.9, 20)])
def test_sharded_sampler_equals_one_device(model, shape, temperature, top_k):
  config, module, params = model
  prompts = [[72, 101, 108, 108, 111], [7], list(range(30, 50))]
  kwargs = dict(max_new_tokens=8, rng=jax.random.key(5), temperature=temperature, top_k=top_k)
  make = lambda p, mesh=None: sample.Sampler(module, config.model, p, eot_id=None, pad_id=TOK.pad_id,
                                             batch_size=2, mesh=mesh)
  single = make(params).generate(prompts, **kwargs)
  mesh = _mesh(*shape)
  sharded = make(_on_mesh(module, params, mesh), mesh).generate(prompts, **kwargs)
  for a, b in zip(sharded, single):
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.raw_logprobs, b.raw_logprobs, rtol=1e-4, atol=1e-4)


def test_load_for_inference_places_params_on_the_mesh(model, tmp_path):
  config, module, params = model
  ckpt_lib.export_params(str(tmp_path / 'export'), params, 7, config)
  mesh = _mesh(1, 2, 4)
  _, loaded, step = load_lm(tmp_path / 'export', mesh)
  assert step == 7
  wanted = gs.param_shardings(gm.abstract_variables(module)['params'], mesh)
  jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim) or pytest.fail(f'{x.sharding} != {s}'),
               loaded, wanted)
  assert _split_leaves(loaded)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), y), loaded, params)


@pytest.mark.parametrize('spec,reason', [('2,2', 'three comma-separated sizes'), ('3,1,1', 'has 3 devices'),
                                         ('0,1,1', 'positive integer'), ('1,1,3', 'not divisible')])
def test_bad_mesh_flag_is_one_sentence_naming_it(spec, reason):
  with pytest.raises(gs.ConfigError) as error:
    cli.inference_mesh(tiny_config(), spec)
  message = str(error.value)
  assert message.startswith(f'--mesh={spec} ') and reason in message and '--mesh=-1,1,1' in message
  assert message.replace('e.g. ', '').count('. ') == 0 and '\n' not in message


def test_a_saved_mesh_that_does_not_fit_points_to_the_flag():
  with pytest.raises(gs.ConfigError, match=r"run's own mesh .* pass --mesh=data,fsdp,tensor"):
    cli.inference_mesh(tiny_config(mesh__data=16, mesh__fsdp=1), None)


def test_two_processes_evaluate_like_one(tmp_path):
  docs = [{'text': f'def f{i}(x):\n    return x * {i} + {i * i}\n' * (1 + i % 3)} for i in range(6)]
  rolling = tasks.write_task(str(tmp_path / 'code'), tasks.TaskSpec(
      task='code', output_type='loglikelihood_rolling', test_file='test.jsonl'), docs)
  questions = [{'context': f'Q: {i} + {i}\nA:', 'completion': f' {2 * i}'} for i in range(6)]
  generate = tasks.write_task(str(tmp_path / 'sums'), tasks.TaskSpec(
      task='sums', output_type='generate_until', test_file='test.jsonl', until=('\n',), max_gen_toks=6), questions)
  common = [sys.executable, '-m', 'gpt_jax.eval', '--config=configs/tiny.py:nano', '--init=random',
            f'--tasks={rolling},{generate}', '--num_fewshot=0', '--mesh=2,2,2']
  env = xla_env.env(8)
  one = subprocess.run([*common, f'--output_dir={tmp_path}/one'], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert one.returncode == 0, one.stderr[-3000:]
  outputs = run_on_two_processes([*common, f'--output_dir={tmp_path}/two'], REPO)
  assert 'bits_per_byte' in outputs[0] and 'bits_per_byte' not in outputs[1]  # process 0 alone reports
  for name in ('code.0shot.json', 'sums.0shot.json'):
    a, b = (json.loads((tmp_path / run / name).read_text()) for run in ('one', 'two'))
    assert a['eval_settings']['mesh'] == b['eval_settings']['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 2}
    assert b['eval_settings']['processes'] == 2 and a['n'] == b['n'] == 6
    for metric, value in a['metrics'].items():
      assert b['metrics'][metric]['value'] == pytest.approx(value['value'], rel=1e-5), (name, metric)
    if name == 'code.0shot.json':
      assert a['metrics']['bits_per_byte']['value'] > 1  # a random model: well above a trained one's
