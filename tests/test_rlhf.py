"""The fine-tuning stages: their losses against hand computations, the reference at step 0, rewards read at EOS,
resume == uninterrupted for every stage, and the entry points' one-sentence errors and scoring command."""

import itertools
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import heads
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import sample
from gpt_jax import sharding as gs
from gpt_jax.rlhf import classify, dpo, reward, sft, stage
from tests import xla_env

jax.config.update('jax_default_matmul_precision', 'highest')


def _config(stage, data_dir, **overrides):
  sequences = {'sft': 1, 'classify': 4, 'reward': 3, 'dpo': 2}[stage]
  base = {'model.n_layers': 2, 'model.d_model': 32, 'model.n_heads': 2, 'model.context': 32,
          'model.dropout_resid': 0.0, 'rlhf.reward.max_responses': 3, 'rlhf.max_prompt_tokens': 20,
          'rlhf.toy_items': 64, 'rlhf.epochs': 0.0, 'train.batch_tokens': 8 * sequences * 32,
          'train.total_tokens': 4 * 8 * sequences * 32,
          'train.log_every': 2, 'train.eval_every': 0, 'checkpoint.every_steps': 2, 'checkpoint.use_async': False,
          'optim.warmup_tokens': 0, 'optim.decay_tokens': 8 * 8 * sequences * 32, 'data.data_dir': data_dir}
  base.update(overrides)
  return gcfg.load_config_file(f'configs/rlhf.py:{stage}', base)


def _loss(task, frozen=None):
  """task.loss_fn jitted, in evaluation mode: (params, batch) -> (summed loss, weight, extras)."""
  return jax.jit(lambda p, b: task.loss_fn(p, b, jax.random.key(0), False, task.frozen if frozen is None else frozen))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('data'))


def test_ranking_loss_equals_the_pairs_enumerated_by_hand_for_unequal_k():
  rewards = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 0.2, 0.0, 0.0], [0.7, 0.1, -0.4, 0.0]], np.float32)
  ranks = np.array([[2, 3, 0, 1], [1, 0, -1, -1], [0, 1, 1, -1]])  # K = 4, K = 2, K = 3 with a tie
  expected = []
  for r, k in zip(rewards, ranks):
    pairs = [(i, j) for i, j in itertools.permutations(range(4), 2) if 0 <= k[i] < k[j] and k[j] >= 0]
    expected.append(-sum(math.log(1 / (1 + math.exp(-(r[i] - r[j])))) for i, j in pairs) / len(pairs))
  assert len([1 for i, j in itertools.permutations(range(4), 2) if 0 <= ranks[2][i] < ranks[2][j]]) == 2  # tie out
  np.testing.assert_allclose(reward.ranking_loss(rewards, ranks), np.mean(expected), rtol=1e-6)
  per_prompt, pairs, correct = reward.ranking_losses(rewards, ranks)
  np.testing.assert_allclose(per_prompt, expected, rtol=1e-6)
  assert pairs.tolist() == [6, 1, 2] and correct.tolist() == [6, 0, 2]


def test_dpo_loss_variants_against_hand_computations():
  pc, pr, rc, rr = (np.array(x, np.float32) for x in ([-3.0, -5.0], [-4.0, -2.0], [-3.5, -4.0], [-3.0, -3.0]))
  lc, lr = np.array([3.0, 5.0]), np.array([2.0, 4.0])
  beta, eps = 0.5, 0.1
  delta = (pc - rc) - (pr - rr)
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  expected = {
      'sigmoid': -(1 - eps) * np.log(sig(beta * delta)) - eps * np.log(sig(-beta * delta)),
      'robust': (-(1 - eps) * np.log(sig(beta * delta)) + eps * np.log(sig(-beta * delta))) / (1 - 2 * eps),
      'hinge': np.maximum(0, 1 - beta * delta),
      'ipo': ((pc - rc) / lc - (pr - rr) / lr - 1 / (2 * beta)) ** 2,
  }
  for loss_type, want in expected.items():
    got = dpo.dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type, label_smoothing=eps, chosen_lengths=lc,
                       rejected_lengths=lr)
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=loss_type)
  with pytest.raises(ValueError, match='lengths'):
    dpo.dpo_loss(pc, pr, rc, rr, beta=beta, loss_type='ipo')


def test_sft_loss_is_the_lm_loss_restricted_to_completion_tokens(data_dir):
  config, task, data = sft.build_task(_config('sft', data_dir))
  rows = task.train_stream.next_batch(8)
  params = gm.init_params(task.module, jax.random.key(1))
  loss_sum, weight, _ = _loss(task)(params, rows)
  logp = jax.jit(lambda p, x: jax.nn.log_softmax(task.module.apply({'params': p}, x), axis=-1))(params, rows['inputs'])
  picked = np.take_along_axis(np.asarray(logp), rows['targets'][..., None], -1)[..., 0]
  completion = rows['loss_mask'] > 0
  # Exactly the response tokens and their EOS: the targets from the first response token to the EOS.
  for inputs, targets, mask in zip(rows['inputs'], rows['targets'], completion):
    text = data.tokenizer.decode(inputs)
    assert targets[mask][-1] == data.tokenizer.eot_id and ('A:' not in data.tokenizer.decode(targets[mask]))
    assert text[:text.index('A:') + 2] == data.tokenizer.decode(inputs[:int(np.argmax(mask)) + 1])
  np.testing.assert_allclose(loss_sum, -picked[completion].sum(), rtol=1e-5)
  assert weight == completion.sum()


def test_packed_sft_rows_give_the_loss_of_the_unpacked_ones(data_dir):
  longer = {'model.context': 96, 'train.batch_tokens': 8 * 96, 'train.total_tokens': 8 * 96}
  config, task, _ = sft.build_task(_config('sft', data_dir, **longer))
  _, packed_task, _ = sft.build_task(_config('sft', data_dir, **longer, **{'rlhf.sft.pack': True}))
  params = gm.init_params(task.module, jax.random.key(2))
  plain = _loss(task)(params, task.train_stream.rows)
  packed = _loss(packed_task)(params, packed_task.train_stream.rows)
  assert packed_task.train_stream.n < task.train_stream.n / 2
  np.testing.assert_allclose(packed[0], plain[0], rtol=1e-5)
  assert packed[1] == plain[1]


def test_dpo_reference_equals_the_policy_at_step_0(data_dir):
  config, task, _ = dpo.build_task(_config('dpo', data_dir))
  batch = task.train_stream.next_batch(8)
  policy = task.frozen['ref']
  loss_sum, weight, extra = _loss(task)(policy, batch)
  np.testing.assert_allclose(loss_sum / weight, math.log(2), rtol=1e-6)
  assert abs(extra['rewards/chosen']) < 1e-5 and abs(extra['rewards/margin']) < 1e-5
  _, pre, _ = dpo.build_task(_config('dpo', data_dir, **{'rlhf.dpo.precompute_ref': True}))
  assert pre.frozen == {}
  ref_logps = pre.train_stream.rows['ref_logps']
  direct = jax.jit(lambda p, b: dpo._pair_logps(gm.GPTLM(config.model), p, b)[0])(policy, task.train_stream.rows)
  np.testing.assert_allclose(ref_logps, direct, rtol=1e-5)


def test_the_reward_is_read_at_eos_whatever_the_padding():
  config = gcfg.load_config_file('configs/rlhf.py:reward', {'model.n_layers': 1, 'model.d_model': 32,
                                                            'model.context': 16})
  model = heads.RewardModel(config.model)
  params = gm.init_params(model, jax.random.key(3))
  eos, pad = 256, 257
  rows = [[eos], [97, 98, eos], list(range(97, 97 + 15)) + [eos], list(range(97, 97 + 16))]  # EOS first/mid/last/none
  tokens = jnp.array([row + [pad] * (16 - len(row)) for row in rows])
  mask = jnp.array([[1] * len(row) + [0] * (16 - len(row)) for row in rows])
  padded = jax.jit(lambda p, t, m: model.apply({'params': p}, t, m))(params, tokens, mask)
  for row, score in zip(rows, padded):
    alone = model.apply({'params': params}, jnp.array([row]))[0]
    np.testing.assert_allclose(score, alone, rtol=1e-5)


def test_classifier_framing_pair_symmetry_and_lm_coefficient(data_dir):
  config, task, _ = classify.build_task(_config('classify', data_dir, **{'rlhf.data': 'toy:pair',
                                                                         'train.batch_tokens': 8 * 2 * 32}))
  rows = task.train_stream.next_batch(8)
  start, delim, extract = [int(x) for x in np.unique(rows['tokens'][rows['tokens'] > 257])]
  assert (rows['tokens'][:, :, 0] == start).all() and (rows['tokens'] == delim).sum() == 16
  params = gm.init_params(task.module, jax.random.key(4))
  swapped = dict(rows, tokens=rows['tokens'][:, ::-1], mask=rows['mask'][:, ::-1])
  a, b = _loss(task)(params, rows), _loss(task)(params, swapped)
  np.testing.assert_allclose(a[2]['cls_loss'], b[2]['cls_loss'], rtol=1e-5)  # both orders, summed
  no_lm_config = _config('classify', data_dir, **{'rlhf.classify.lm_coef': 0.0})
  no_lm = jax.jit(lambda p, b: classify.loss_fn(no_lm_config, 'text_pair', 2)(p, b, jax.random.key(0), False, {}))(params, rows)
  np.testing.assert_allclose(no_lm[0], a[2]['cls_loss'], rtol=1e-5)
  np.testing.assert_allclose(a[0], a[2]['cls_loss'] + 0.5 * a[2]['lm_loss'], rtol=1e-5)


@pytest.mark.parametrize('stage_name, module', [('sft', sft), ('reward', reward), ('dpo', dpo),
                                                ('classify', classify)])
def test_resumed_stage_equals_uninterrupted(data_dir, tmp_path, stage_name, module):
  """Trains 4 steps (checkpoints at 2 and 4), loses step 4 as a kill would, reruns: the same params at step 4."""
  config, task, _ = module.build_task(_config(stage_name, data_dir, **{'mesh.fsdp': 8}))
  workdir = tmp_path / 'run'
  straight = jax.device_get(loop.train(config, str(workdir), task).params)
  shutil.rmtree(workdir / 'checkpoints' / '4')
  config, task, _ = module.build_task(_config(stage_name, data_dir, **{'mesh.fsdp': 8}))
  resumed = loop.train(config, str(workdir), task).params
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), straight, resumed)


def _run(module, *args, cwd=None):
  env = xla_env.env(1)
  return subprocess.run([sys.executable, '-m', module, *args], capture_output=True, text=True, env=env,
                        cwd=cwd or os.getcwd(), timeout=600)


def test_a_malformed_line_stops_the_stage_in_one_sentence_before_the_workdir_exists(tmp_path):
  data = tmp_path / 'd.jsonl'
  data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": }\n', encoding='utf-8')
  out = _run('gpt_jax.rlhf.sft', f'--workdir={tmp_path / "run"}', f'--config.rlhf.data={data}')
  assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(f'error: {data}:2 is not valid JSON')
  assert not (tmp_path / 'run').exists()


def test_reward_run_writes_its_normalisation_and_scores_a_jsonl(tmp_path):
  workdir, out = tmp_path / 'rm', tmp_path / 'scored.jsonl'
  flags = ['--config.model.n_layers=1', '--config.model.d_model=32', '--config.model.context=32',
           '--config.rlhf.max_prompt_tokens=20', '--config.rlhf.toy_items=32', '--config.rlhf.epochs=1',
           '--config.train.batch_tokens=2048', '--config.rlhf.reward.norm_samples=0',
           f'--config.data.data_dir={tmp_path}']
  trained = _run('gpt_jax.rlhf.reward', f'--workdir={workdir}', *flags)
  assert trained.returncode == 0, trained.stderr[-2000:]
  norm = json.loads((workdir / 'reward_norm.json').read_text())
  responses = tmp_path / 'responses.jsonl'
  responses.write_text(''.join(json.dumps({'prompt': 'Q: What is 2 plus 2?\nA:', 'response': f' {x}'}) + '\n'
                               for x in (4, 5, 40)), encoding='utf-8')
  scored = _run('gpt_jax.rlhf.reward', 'score', f'--workdir={workdir}', f'--input={responses}', f'--output={out}')
  assert scored.returncode == 0, scored.stderr[-2000:]
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert [x['response'] for x in lines] == [' 4', ' 5', ' 40']
  for x in lines:
    assert x['score'] == pytest.approx(norm['gain'] * x['raw_score'] + norm['bias'], rel=1e-6)
  again = _run('gpt_jax.rlhf.reward', 'score', f'--workdir={workdir}', f'--input={responses}', f'--output={out}')
  assert again.returncode == 2 and again.stderr.strip() == (
      f'error: --output={out} already exists: choose a new path, or pass --overwrite to replace it.')
  under_a_file = responses / 'scored.jsonl'
  nowhere = _run('gpt_jax.rlhf.reward', 'score', f'--workdir={workdir}', f'--input={responses}',
                 f'--output={under_a_file}')
  assert nowhere.returncode == 2 and nowhere.stderr.strip() == (
      f'error: --output={under_a_file} cannot be created: {responses} is a file, not a directory.')


def test_the_normalisation_scores_the_sampled_ids_as_ppo_scores_rollouts(data_dir, tmp_path):
  """No ids -> text -> ids round trip and no EOS added: a response the length limit cut is read at its last token;
  reward_norm.json records the sampling settings."""
  settings = {'rlhf.reward.norm_samples': 16, 'rlhf.response_tokens': 6, 'rlhf.temperature': 0.9}
  config = _config('reward', data_dir, **settings)
  mesh = gs.single_device_mesh()
  lm = gm.init_params(gm.GPTLM(config.model), jax.random.key(5))
  ckpt.export_params(str(tmp_path / 'lm'), lm, 0, config)
  config, _, data = reward.build_task(stage.prepare(_config('reward', data_dir, **settings, **{
      'rlhf.init_from': str(tmp_path / 'lm')})))
  model = heads.RewardModel(config.model)
  params = gm.init_params(model, jax.random.key(6))
  norm = reward.normalization(config, params, mesh, data)
  sampler = sample.Sampler(gm.GPTLM(config.model), config.model, lm, eot_id=data.tokenizer.eot_id,
                           pad_id=data.tokenizer.pad_id, batch_size=16, mesh=mesh)
  prompts = [list(data.tokenizer.encode(prompt))[-20:] for prompt, _, _ in data.train[:16]]
  samples = sampler.generate(prompts, max_new_tokens=6, rng=jax.random.key(config.train.seed), temperature=0.9)
  assert sum(s.finish_reason == 'length' for s in samples) >= 8  # a random model rarely ends a response
  raw = [model.apply({'params': params}, jnp.array([p + s.tokens.tolist()]))[0] for p, s in zip(prompts, samples)]
  assert norm['mean'] == pytest.approx(float(np.mean(raw)), abs=1e-5)
  assert norm['std'] == pytest.approx(float(np.std(raw)), rel=1e-4)
  assert norm['sampling'] == dict(temperature=0.9, response_tokens=6, samples=16, max_prompt_tokens=20,
                                  seed=config.train.seed)


def test_training_and_held_out_rows_are_counted_apart(data_dir):
  config, task, data = sft.build_task(_config('sft', data_dir, **{'rlhf.max_prompt_tokens': 4}))
  assert stage.describe(data, task.train_stream.n) == ('data: 64 training rows of prompt_completion records (64 '
                                                       'prompts cut left); held out: 256 rows (256 prompts cut left)')
