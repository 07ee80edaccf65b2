"""The InstructGPT experiment's evaluations: on-policy rankings, best-of-n, the fits, intervals and the
over-optimisation check as functions; the episodes (gold, RM score, KL to SFT) on tiny random runs; and the
commands end to end on those runs (the checkpoints of a PPO run tracked, the baselines, the summary and plots)."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.instructgpt import baselines, episodes, onpolicy, summary
from gpt_jax import checkpoint as ckpt
from gpt_jax import heads
from gpt_jax import model as gm
from gpt_jax.rlhf import reward, toy
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUM = 'Q: What is 23 plus 19?\nA:'


def test_ranking_orders_by_gold_and_drops_ties_and_blanks():
  record = onpolicy.ranking(SUM, [' 41', ' 42', ' 41', ' ', ' 50', ' 40'])
  assert record['responses'] == [' 41', ' 42', ' 50', ' 40']  # the second ' 41' (a tie) and the blank dropped
  assert [record['responses'][i] for i in record['ranking']] == [' 42', ' 41', ' 40', ' 50']
  assert onpolicy.ranking(SUM, [' 42', ' 42', '  ']) is None  # one distinct gold value: no comparison


def _episodes(gold, rm):
  gold, rm = np.asarray(gold, float), np.asarray(rm, float)
  return episodes.Episodes([''] * gold.size, gold.ravel(), rm.ravel(), np.zeros(gold.size), np.ones(gold.size, bool),
                           gold.shape[1])


def test_best_of_n_picks_the_reward_models_argmax_in_disjoint_groups():
  ep = _episodes([[0.1, 0.9, 0.5, 0.2]], [[0.0, 1.0, 3.0, 2.0]])
  assert baselines.best_of_n(ep, 1)[0] == pytest.approx([np.mean([0.1, 0.9, 0.5, 0.2])])
  assert baselines.best_of_n(ep, 2)[0] == pytest.approx([(0.9 + 0.5) / 2])  # groups (0, 1) and (2, 3)
  gold, rm = baselines.best_of_n(ep, 4)
  assert gold == pytest.approx([0.5]) and rm == pytest.approx([3.0])


def test_fits_recover_their_forms():
  d = np.linspace(0.2, 3.0, 12)
  assert summary.fit(d, d * (0.4 - 0.1 * d), 'bon') == dict(alpha=pytest.approx(0.4), beta=pytest.approx(0.1),
                                                            points=12)
  assert summary.fit(np.r_[0.0, d], np.r_[0.0, d * (0.3 - 0.2 * np.log(d))], 'rl') == dict(
      alpha=pytest.approx(0.3), beta=pytest.approx(0.2), points=12)  # d = 0 (SFT itself) is left out
  assert summary.fit(np.array([0.0, 1.0]), np.array([0.0, 0.1]), 'rl') is None


def test_win_rates_and_bootstrap_interval():
  ours, theirs = np.array([[1.0, 0.5], [0.2, 0.2], [0.0, 1.0]]), np.array([[0.5, 0.5], [0.2, 0.1], [1.0, 1.0]])
  assert episodes.win_rates(ours, theirs) == pytest.approx([0.75, 0.75, 0.25])
  values = np.random.default_rng(0).normal(0.6, 0.1, 400)
  lo, hi = episodes.bootstrap_ci(values)
  assert lo < values.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * 0.1 / 20, rel=0.2)
  assert episodes.bootstrap_ci(values) == [lo, hi]  # seeded


def test_overoptimisation_needs_an_interior_peak_a_fall_of_two_errors_and_a_rising_reward():
  def points(gold, rm):
    return [dict(update=10 * i, gold=g, gold_se=0.01, rm_score=r) for i, (g, r) in enumerate(zip(gold, rm))]
  assert summary.overoptimised(points([0.5, 0.6, 0.55], [0.0, 1.0, 2.0]))['met']
  assert not summary.overoptimised(points([0.5, 0.6, 0.59], [0.0, 1.0, 2.0]))['met']  # fell less than 2 SE
  assert not summary.overoptimised(points([0.5, 0.6, 0.55], [0.0, 1.0, 0.5]))['met']  # the RM score fell too
  assert not summary.overoptimised(points([0.5, 0.55, 0.6], [0.0, 1.0, 2.0]))['met']  # no peak inside
  assert not summary.overoptimised(points([0.6, 0.55, 0.5], [0.0, 1.0, 2.0]))['met']  # gold only fell


# ---------------------------------------------------------------------------------------------------------------
# Tiny random runs.

def _config():
  return tiny_config(rlhf__max_prompt_tokens=24)


def _save(path, params, steps=(1,)) -> str:
  config = _config()
  ckpt.save_config(str(path), config)
  checkpointer = ckpt.Checkpointer(str(path), config.checkpoint.copy_and_resolve_references())
  for step in steps:
    checkpointer.save(step, params, {'step': jnp.int32(step)}, {}, force=True)
  checkpointer.wait()
  checkpointer.close()
  return str(path)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(sft, rm, ppo) directories: random SFT and reward model; a PPO run whose checkpoints 10 and 20 hold the SFT
  policy and another random policy."""
  tmp = tmp_path_factory.mktemp('igpt')
  model = _config().model
  sft_params = gm.init_params(gm.GPTLM(model), jax.random.key(0))
  sft = _save(tmp / 'sft', sft_params)
  rm = _save(tmp / 'rm', gm.init_params(heads.RewardModel(model), jax.random.key(1)))
  (tmp / 'rm' / reward.NORM_FILE).write_text(json.dumps({'gain': 2.0, 'bias': 0.5}))
  value = gm.init_params(heads.PolicyValue(model), jax.random.key(2))
  other = gm.init_params(gm.GPTLM(model), jax.random.key(3))
  ppo_dir = tmp / 'ppo'
  _save(ppo_dir, dict(value, policy=sft_params), steps=(10,))
  _save(ppo_dir, dict(value, policy=other), steps=(20,))
  return sft, rm, str(ppo_dir), other


def test_episodes_of_the_sft_policy_have_zero_kl_and_their_gold(runs):
  sft, rm, ppo, other = runs
  judge = episodes.Judge(sft, rm, temperature=1.0, response_tokens=6, batch_rows=16)
  prompts = episodes.prompts_of('validation', 5)
  ep = judge.sample(judge.sft_params, prompts, samples=4, seed=0)
  assert len(ep.text) == 20 and ep.per_prompt(ep.gold).shape == (5, 4)
  np.testing.assert_allclose(ep.kl, 0.0, atol=1e-5)
  assert list(ep.gold) == [toy.gold(prompts[i // 4], t) for i, t in enumerate(ep.text)]
  mine = judge.sample(judge.load_policy(ppo, 20), prompts, samples=4, seed=0)
  assert np.mean(mine.kl) > 0.01  # another policy: KL to SFT measured on its own samples
  again = judge.sample(judge.load_policy(ppo, 10), prompts, samples=4, seed=0)
  assert again.text == ep.text and np.array_equal(again.rm, ep.rm)  # checkpoint 10 holds the SFT policy
  assert np.isfinite(judge.pretraining_loss(judge.sft_params))


def _run(*args):
  result = subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_the_commands_track_a_run_and_summarise_it(runs, tmp_path):
  sft, rm, ppo, _ = runs
  toy_dir = tmp_path / 'toy'
  _run('gpt_jax.rlhf', 'toy', f'--out={toy_dir}', '--items=8', '--held_out=8')
  _run('experiments.instructgpt.onpolicy', f'--sft={sft}', f'--toy={toy_dir}', f'--out={tmp_path / "onpolicy"}',
       '--limit=6', '--response_tokens=6')
  stats = json.loads((tmp_path / 'onpolicy' / 'stats.json').read_text())
  assert stats['synthetic'] == 8 and stats['train']['prompts'] == 6 and stats['held_out']['prompts'] == 6
  lines = (tmp_path / 'onpolicy' / 'rankings_train.jsonl').read_text().splitlines()
  assert len(lines) == 8 + stats['train']['kept']
  results = tmp_path / 'results'
  common = [f'--sft={sft}', f'--reward={rm}', '--limit=4', '--response_tokens=6']
  _run('experiments.instructgpt.baselines', *common, f'--toy={toy_dir}', '--samples=16', '--sft_samples=2',
       '--temperatures=0.7',
       f'--heldout={tmp_path / "onpolicy" / "rankings_heldout.jsonl"}', f'--out={results / "baselines.json"}')
  table = json.loads((results / 'baselines.json').read_text())
  assert [r['n'] for r in table['best_of_n']['test']] == [1, 2, 4, 8, 16]
  assert table['best_of_n']['test'][3]['kl'] == pytest.approx(math.log(8) - 7 / 8)
  _run('experiments.instructgpt.track', f'--run={ppo}', *common, '--samples=2',
       f'--out={results / "track_ppo_b0.1.json"}')
  track = json.loads((results / 'track_ppo_b0.1.json').read_text())
  assert [c['update'] for c in track['checkpoints']] == [0, 10, 20]
  assert track['checkpoints'][1]['validation'] == track['checkpoints'][0]['validation']  # update 10 is SFT
  assert track['early_stopped']['update'] in (0, 10, 20)
  assert track['checkpoints'][0]['pretrain_loss'] == pytest.approx(table['sft_pretrain_loss'], rel=1e-5)  # SFT's
  _run('experiments.instructgpt.summary', f'--results={results}', '--chosen=ppo_b0.1')
  s = json.loads((results / 'summary.json').read_text())
  for key in ('reward_model', 'best_of_n', 'sft', 'ppo', 'overoptimisation', 'overoptimisation_plot'):
    assert key in s
  assert s['reward_model']['accuracy_on_policy_samples'] == table['reward_model']['on_policy_samples']['accuracy']
  assert [p['update'] for p in s['overoptimisation']] == [0, 10, 20]
  metrics = tmp_path / 'metrics'
  metrics.mkdir()
  (metrics / 'metrics.jsonl').write_text(''.join(json.dumps({'step': i, 'train/score': i / 10}) + '\n'
                                                 for i in range(3)))
  _run('experiments.instructgpt.plots', f'--results={results}', f'--runs=ppo={metrics}')
  assert (results / 'overoptimisation.png').stat().st_size > 0 and (results / 'ppo.png').stat().st_size > 0
  again = subprocess.run([sys.executable, '-m', 'experiments.instructgpt.summary', f'--results={results}',
                          '--chosen=ppo_b0.1'], capture_output=True, text=True, timeout=300, cwd=REPO)
  assert again.returncode == 2 and 'already exists' in again.stderr
  # A PPO-ptx coefficient sweep: the run reported is the one best on validation gold at its early-stopped update.
  for name, bump in (('ptx_lo', 0.0), ('ptx_hi', 0.1)):
    for c in track['checkpoints']:
      c['validation']['gold'] += bump * (c['update'] == track['early_stopped']['update'])
    (results / f'track_{name}.json').write_text(json.dumps(track))
  _run('experiments.instructgpt.summary', f'--results={results}', '--chosen=ppo_b0.1', '--ptx=ptx_lo,ptx_hi',
       f'--out={results / "with_ptx.json"}')
  s = json.loads((results / 'with_ptx.json').read_text())
  assert s['ppo_ptx']['run'] == 'ptx_hi' and set(s['ppo_ptx_runs']) == {'ptx_lo', 'ptx_hi'}
  assert 'ppo_ptx_pretrain_loss_0.2_below_ppo_win_rate_within_0.05' in s['criteria']


@pytest.mark.parametrize('argv, message', [
    (['--temperature=-1'], '--temperature=-1.0 must be positive'),
    (['--temperature=nan'], '--temperature=nan must be positive'),
    (['--temperatures=0.3,x'], '--temperatures=0.3,x must be positive'),
    (['--response_tokens=0'], '--response_tokens=0 must be at least 1'),
    (['--samples=0'], '--samples=0 must be at least 1')])
def test_sampling_flags_a_command_cannot_use_are_refused(argv, message):
  from absl import flags
  from gpt_jax.config import ConfigError
  values = flags.FlagValues()
  flags.DEFINE_float('temperature', 0.7, '', flag_values=values)
  flags.DEFINE_list('temperatures', ['0.3', '0.7'], '', flag_values=values)
  flags.DEFINE_integer('response_tokens', 8, '', flag_values=values)
  flags.DEFINE_integer('samples', 2, '', flag_values=values)
  values(['prog'])
  episodes.check_sampling(values, ('temperature', 'temperatures'), ('response_tokens', 'samples'))  # the defaults pass
  values(['prog', *argv])
  with pytest.raises(ConfigError, match=message):
    episodes.check_sampling(values, ('temperature', 'temperatures'), ('response_tokens', 'samples'))


def test_the_summary_reads_a_beta_from_every_plain_ppo_runs_name():
  names = ['ppo_b0.01', 'ppo_rm3_b0.05', 'ppo_rm3_b0.05_s1', 'ppo_ptx', 'ppo_rm3_ptx0.1']
  assert [summary.beta_of(n) for n in names] == [0.01, 0.05, None, None, None]
