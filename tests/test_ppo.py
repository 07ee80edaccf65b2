"""PPO: GAE and whitening against plain loops, where the score lands, the step-0 identities (ratio 1, approx_kl 0,
KL 0 against itself), rollout log-probs against a full forward pass, 8 devices == 1, resume == uninterrupted, and
the one-sentence config errors."""

import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import config as gcfg
from gpt_jax import loop
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.data import pipeline
from gpt_jax.data.tokenizer import ByteTokenizer
from gpt_jax.heads import RewardModel
from gpt_jax.rlhf import ppo
from gpt_jax.rlhf import ppo_update
from tests.helpers import SignalAt

EOS, PAD = 256, 257
# EOS at t = 0, mid-row, in the last slot, and none.
TOKENS = np.array([[EOS, PAD, PAD, PAD, PAD], [97, 98, EOS, PAD, PAD], [97, 98, 99, 100, EOS], [97, 98, 99, 100, 101]])
DONE = np.array([[0, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], bool)


def test_episode_ends_and_the_score_lands_on_eos():
  mask, last, has_eos = ppo_update.episode_ends(jnp.array(TOKENS), jnp.array(DONE), EOS)
  assert last.tolist() == [0, 2, 4, 4] and has_eos.tolist() == [True, True, True, False]
  assert mask.sum(1).tolist() == [1, 3, 5, 5]
  score = jnp.array([1.0, 2.0, 3.0, 4.0])
  rewards = ppo_update.shaped_rewards(jnp.zeros((4, 5)), jnp.zeros((4, 5)), mask, last, score, 0.1)
  for row, (t, s) in enumerate(zip([0, 2, 4, 4], [1, 2, 3, 4])):
    expected = np.zeros(5)
    expected[t] = s
    np.testing.assert_array_equal(rewards[row], expected)
  kl = ppo_update.shaped_rewards(jnp.full((4, 5), 0.5), jnp.zeros((4, 5)), mask, last, jnp.zeros(4), 0.1)
  np.testing.assert_allclose(kl, -0.05 * np.asarray(mask), rtol=1e-6)


def test_gae_by_reverse_scan_equals_a_python_loop():
  rng = np.random.default_rng(0)
  rewards, values = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
  mask = np.asarray(ppo_update.episode_ends(jnp.array(TOKENS), jnp.array(DONE), EOS)[0])
  gamma, lam = 0.9, 0.8
  advantages, returns = ppo_update.gae(jnp.array(rewards), jnp.array(values * mask), jnp.array(mask), gamma, lam)
  for b in range(4):
    n = int(mask[b].sum())
    expected, running = np.zeros(5), 0.0
    for t in reversed(range(n)):
      next_value = values[b, t + 1] if t + 1 < n else 0.0
      running = rewards[b, t] + gamma * next_value - values[b, t] + gamma * lam * running
      expected[t] = running
    np.testing.assert_allclose(advantages[b], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns[b], (expected + values[b]) * mask[b], rtol=1e-5, atol=1e-6)


def test_whiten_uses_the_masked_mean_and_unbiased_variance():
  x = jnp.array([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -7.0, 9.0]])
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]])
  values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  out = ppo_update.whiten(x, mask)
  np.testing.assert_allclose(out[mask > 0], (values - values.mean()) / np.sqrt(values.var(ddof=1) + 1e-8),
                             rtol=1e-5)
  assert out[0, 3] == 0 and out[1, 2] == 0
  np.testing.assert_allclose(ppo_update.whiten(x, mask, shift_mean=False)[mask > 0], np.asarray(out[mask > 0]) + 3.0,
                             rtol=1e-5)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """An 'SFT' export and a reward-model export (random, tiny) with its normalisation."""
  root = tmp_path_factory.mktemp('ppo')
  config = gcfg.load_config_file('configs/rlhf.py:ppo', {
      'model.n_layers': 2, 'model.d_model': 32, 'model.n_heads': 2, 'model.context': 48,
      'train.batch_tokens': 16 * 48, 'train.total_tokens': 16 * 48, 'data.data_dir': str(root / 'data')})
  ckpt.export_params(str(root / 'sft'), gm.init_params(gm.GPTLM(config.model), jax.random.key(0)), 0, config)
  ckpt.export_params(str(root / 'rm'), gm.init_params(RewardModel(config.model), jax.random.key(1)), 0, config)
  (root / 'rm' / 'reward_norm.json').write_text(json.dumps(dict(gain=2.0, bias=-0.5)))
  return root


def _config(runs, **overrides):
  base = {'rlhf.ppo.policy_from': str(runs / 'sft'), 'rlhf.ppo.reward_from': str(runs / 'rm'), 'rlhf.toy_items': 64,
          'rlhf.max_prompt_tokens': 32, 'rlhf.response_tokens': 6, 'rlhf.ppo.minibatches': 2, 'rlhf.ppo.epochs': 2,
          'train.batch_tokens': 16 * 48, 'train.total_tokens': 2 * 16 * 48, 'train.eval_every': 0,
          'rlhf.ppo.sample_every': 0, 'checkpoint.every_steps': 1, 'checkpoint.use_async': False,
          'data.data_dir': str(runs / 'data'), 'optim.peak_lr': 1e-3}
  base.update(overrides)
  return ppo.prepare(gcfg.load_config_file('configs/rlhf.py:ppo', base))


def _one_update(config, mesh_overrides=None):
  """(params after one update, metrics, rollout samples, frozen, config) on the config's mesh with
  mesh_overrides, or on one device (mesh_overrides='single')."""
  if mesh_overrides == 'single':
    mesh = gs.single_device_mesh()
  else:
    config = config.copy_and_resolve_references()
    config.mesh.update(mesh_overrides or {})
    mesh = gs.make_mesh(config.mesh)
  run = ppo.Run(config)
  p = loop.plan(config, run.task, mesh)
  state = loop.setup(config, run.task, mesh, None, p)
  update = run._make_update(p)
  with gs.activation_context(mesh):
    batch = pipeline.make_global_batch(run.streams.next_batch(16), gs.batch_sharding(mesh))
    params, _, metrics = update(state.params, state.train_state, batch)
  return jax.device_get(params), jax.device_get(metrics), run.samples, run.frozen, config


def test_step_0_identities_rollout_logprobs_and_8_devices_equal_one(runs):
  """One update on one device: ratio 1 and approx_kl 0 on epoch 0, minibatch 0; KL 0 against itself; the
  rollout's log-probs equal a full forward pass at the same temperature. Then on 8 devices (fsdp, data): the same
  params after the update."""
  # The schedule of test_sigterm's 3 updates, so the fsdp programs below are its programs too (the session's cache).
  overrides = {'train.total_tokens': 3 * 16 * 48}
  single, metrics, ro, frozen, config = _one_update(_config(runs, **overrides), 'single')
  assert metrics['first_minibatch/ratio'] == pytest.approx(1.0, abs=1e-6)
  assert metrics['first_minibatch/approx_kl'] == pytest.approx(0.0, abs=1e-9)
  assert metrics['kl'] == pytest.approx(0.0, abs=1e-5)  # the policy is its reference before the update
  logits = ppo_update.response_logits(gm.GPTLM(config.model), frozen.ref, ro.sequences, ro.lengths,
                                      config.rlhf.response_tokens, config.rlhf.temperature)
  full = losses.token_logprobs(logits, ro.response) * ro.mask
  np.testing.assert_allclose(ro.logprobs, full, atol=2e-5)
  prompt = ByteTokenizer().decode(ro.sequences[0, :ro.lengths[0]].tolist())
  assert prompt.startswith('Q: ') and prompt.endswith('\nA:')
  for mesh in ({'fsdp': 8, 'data': 1}, {'data': 8, 'fsdp': 1}):
    sharded, sharded_metrics, *_ = _one_update(_config(runs, **overrides), mesh)
    # Adam normalises gradients, so entries whose gradient is ~0 differ at float32 noise (~1e-6) after 4 steps.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5), sharded, single)
    assert sharded_metrics['score'] == pytest.approx(metrics['score'], rel=1e-5)


def test_resumed_run_equals_uninterrupted(runs, tmp_path):
  """Two PPO-ptx updates with an adaptive beta (checkpoints after each); the second lost as a kill would lose it;
  the rerun resumes from the first and ends with the same params and beta."""
  config = _config(runs, **{'rlhf.ppo.ptx_source': 'stdlib', 'rlhf.ppo.ptx_rows': 2, 'rlhf.ppo.kl_target': 1.0,
                            'rlhf.ppo.kl_horizon': 100})
  workdir = tmp_path / 'run'
  ends = []
  for attempt in range(2):
    run = ppo.Run(config)
    assert run.train(str(workdir)).stopped == 'finished'
    abstract = loop.plan(config, run.task, gs.make_mesh(config.mesh)).abstract_params
    params, step = ckpt.load_for_inference(str(workdir), abstract)
    ends.append((jax.device_get(params), run.streams.kl_coef))
    assert step == 2
    if not attempt:
      shutil.rmtree(workdir / 'checkpoints' / '2')
  jax.tree.map(np.testing.assert_array_equal, ends[0][0], ends[1][0])
  assert ends[0][1] == ends[1][1] != config.rlhf.ppo.kl_coef  # the adaptive beta moved, and was restored


@pytest.mark.parametrize('overrides, message', [
    ({'rlhf.ppo.kl_coef': -0.1}, 'rlhf.ppo.kl_coef=-0.1 must be at least 0.0'),
    ({'rlhf.ppo.minibatches': 3}, 'rlhf.ppo.minibatches=3 does not divide the 16 episodes'),
    ({'rlhf.response_tokens': 40}, 'exceed model.context=48'),
    ({'rlhf.ppo.reward_from': '/nonexistent/rm'}, "rlhf.ppo.reward_from='/nonexistent/rm' is not a directory"),
    ({'rlhf.ppo.reward_from': ''}, 'rlhf.ppo.reward_from is required'),
])
def test_bad_ppo_config_is_one_sentence(runs, overrides, message):
  with pytest.raises(gcfg.ConfigError) as error:
    _config(runs, **overrides)
  assert message in str(error.value) and '\n' not in str(error.value)


def test_explained_variance_counts_valid_tokens_only():
  rng = np.random.default_rng(0)
  mask = np.asarray(ppo_update.episode_ends(jnp.array(TOKENS), jnp.array(DONE), EOS)[0])
  returns, values = (rng.normal(size=(4, 5)).astype(np.float32) * mask for _ in range(2))
  zeros = jnp.zeros((4, 5))
  rollout = ppo_update.Rollout(None, None, None, jnp.array(mask), zeros, zeros, jnp.array(values), zeros,
                               jnp.array(returns), jnp.zeros(4), jnp.ones(4, bool))
  valid = mask > 0
  expected = 1 - np.var((returns - values)[valid]) / np.var(returns[valid])
  got = ppo_update.rollout_metrics(rollout, 0.1)['explained_variance']
  assert got == pytest.approx(expected, rel=1e-5)


def test_clip_fractions_count_the_tokens_where_the_clipped_branch_is_taken():
  """lm-human-preferences: pg_clipfrac = mean(pg_losses2 > pg_losses), vf_clipfrac = mean(vf_losses2 >
  vf_losses1); a ratio outside 1 +- eps whose clipped loss is the smaller one is not counted."""
  advantages = jnp.array([[1.0, 1.0, -1.0, -1.0, 1.0]])
  ratio = jnp.array([[1.5, 0.5, 1.5, 0.5, 1.1]])  # all outside 1 +- 0.2; the clipped branch is taken at t = 0, 3
  mask = jnp.array([[1.0, 1.0, 1.0, 1.0, 0.0]])
  loss, clip_frac = ppo_update.policy_objective(advantages, ratio, 0.2, mask)
  assert clip_frac == pytest.approx(0.5) and loss == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4)
  old, returns = jnp.zeros((1, 5)), jnp.array([[1.0, 1.0, -1.0, 0.0, 0.0]])
  values = jnp.array([[0.5, 2.0, -0.5, 0.5, 0.5]])  # all moved past +-0.2; clipped is worse at t = 0 and 2 only
  loss, value_clip_frac = ppo_update.value_objective(values, old, returns, 0.2, mask)
  assert value_clip_frac == pytest.approx(0.5)
  assert loss == pytest.approx(0.5 * (0.64 + 1.0 + 0.64 + 0.25) / 4)


def test_value_from_reward_starts_at_the_normalised_score_and_ptx_keeps_segments(runs):
  """value_from=reward: the value at the last token equals gain * reward + bias (the normalisation measured on
  the SFT policy's own samples, recorded with PPO's sampling settings); PPO-ptx rows keep positions and segment
  ids, and the ptx term equals the LM loss with them."""
  config = _config(runs, **{'rlhf.ppo.value_from': 'reward', 'rlhf.ppo.ptx_source': 'stdlib', 'rlhf.ppo.ptx_rows': 8,
                            'data.segment_ids': True})
  run = ppo.Run(config)
  mesh = gs.make_mesh(config.mesh)
  p = loop.plan(config, run.task, mesh)
  params = loop.setup(config, run.task, mesh, None, p).params
  norm = run.streams.reward_norm
  assert (norm['temperature'], norm['response_tokens']) == (config.rlhf.temperature, config.rlhf.response_tokens)
  assert norm['gain'] != 2.0 and run.record['reward_norm'] == norm  # not reward_norm.json's, and in run.json
  tokens = jnp.array([[5, 6, 7, 8, 9, 10]])
  models = ppo_update.models_of(config)
  raw = models.reward.apply({'params': run.frozen.reward}, tokens)
  value = models.value.apply({'params': params['value']}, tokens)[:, -1]
  np.testing.assert_allclose(value, norm['gain'] * raw + norm['bias'], rtol=1e-4, atol=1e-5)
  ptx = jax.tree.map(lambda x: x[0, 0], run._ptx_rows(mesh))
  assert {'positions', 'segment_ids'} <= set(ptx)
  half = ptx['inputs'].shape[1] // 2  # each row packed as two documents
  ptx.update(segment_ids=jnp.where(jnp.arange(2 * half) < half, 1, 2)[None].repeat(8, 0),
             positions=(jnp.arange(2 * half) % half)[None].repeat(8, 0))
  steps, zeros = config.rlhf.response_tokens, jnp.zeros((8, config.rlhf.response_tokens))
  mb = ppo_update.Rollout(ptx['inputs'], jnp.full(8, 20), ptx['inputs'][:, 20:20 + steps], jnp.ones((8, steps)),
                          zeros, zeros, zeros, zeros, zeros, jnp.zeros(8), jnp.ones(8, bool))
  with gs.activation_context(mesh):
    _, metrics = ppo_update.minibatch_loss(config, models, params, mb, ptx)
    loss_sum, weight, _ = losses.lm_loss_fn(config)(params['policy'], ptx, jax.random.key(0), False, None)
    unsegmented, _, _ = losses.lm_loss_fn(config)(params['policy'], {k: ptx[k] for k in ('inputs', 'targets')},
                                                  jax.random.key(0), False, None)
  assert metrics['ptx_loss'] == pytest.approx(float(loss_sum / weight), rel=1e-6)
  assert float(unsegmented / weight) != pytest.approx(float(loss_sum / weight), rel=1e-6)


def test_non_finite_updates_are_skipped_then_stop_and_nothing_non_finite_is_kept(runs, tmp_path, capsys):
  config = _config(runs, **{'optim.peak_lr': 1e38, 'train.max_consecutive_skips': 6, 'train.log_every': 1,
                            'train.total_tokens': 4 * 16 * 48, 'rlhf.ppo.kl_target': 1.0, 'rlhf.ppo.kl_horizon': 100})
  status, result = ppo.train(config, str(tmp_path))
  assert status == 2 and result is None
  assert '6 consecutive steps had a non-finite loss or gradient' in capsys.readouterr().err
  assert not (tmp_path / 'policy').exists()
  # Update 1 applied its first minibatch step (finite, huge); every later step was skipped; update 2 stopped the
  # run before its save.
  assert os.listdir(tmp_path / 'checkpoints') == ['1']
  abstract = loop.plan(config, ppo.Run(config).task, gs.make_mesh(config.mesh)).abstract_params
  params, _ = ckpt.load_for_inference(str(tmp_path), abstract)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  assert np.isfinite(json.loads((tmp_path / 'checkpoints' / '1' / 'data' / 'metadata').read_text())['kl_coef'])


def test_sigterm_during_the_last_update_saves_it_and_exits_cleanly(runs, tmp_path):
  config = _config(runs, **{'train.total_tokens': 3 * 16 * 48, 'checkpoint.every_steps': 2})
  run = ppo.Run(config)
  run.task.train_stream = SignalAt(run.streams, 3, signal.SIGTERM)
  result = run.train(str(tmp_path))
  assert result.stopped == 'preempted' and result.step == 3
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '3']
