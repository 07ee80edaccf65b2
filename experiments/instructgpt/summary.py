"""results/summary.json from the experiment's tables: the baselines, every tracked PPO run, the fits of the
over-optimisation curves and each done-when criterion, met or not, with its measurement.

    python -m experiments.instructgpt.summary --results=runs/igpt/results --chosen=ppo_b0.01 --ptx=ppo_ptx,ppo_ptx0.1

It reads <results>/baselines.json and <results>/track_<run>.json (experiments.instructgpt.baselines and .track).
Runs named <chosen>_s<seed> are further seeds of the chosen PPO setting. Reported numbers are on the test prompts
at the early-stopped update (best validation gold); the over-optimisation curves are on the validation prompts.
The fits are least squares through the origin of the gold gain over SFT against d = sqrt(KL to SFT):
best-of-n d (alpha - beta d), PPO d (alpha - beta ln d) (Gao et al. 2022).
"""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np
from absl import flags

from gpt_jax import cli
from gpt_jax.config import ConfigError

def define_flags() -> None:
  """The command's flags, defined when it runs (tests import the experiment's modules together)."""
  flags.DEFINE_string('results', None, 'the results directory holding baselines.json and track_<run>.json.')
  flags.DEFINE_string('chosen', None, 'the PPO run of the chosen setting (its tracked name, e.g. ppo_b0.01).')
  flags.DEFINE_list('ptx', [], 'the PPO-ptx runs (optional; a coefficient sweep): the one reported is the best on '
                    'validation gold at its early-stopped update.')
  flags.DEFINE_string('out', None, 'the summary JSON (default <results>/summary.json; a new file, unless --overwrite).')
  cli.define_overwrite_flag()


FLAGS = flags.FLAGS
PLOT = 'overoptimisation.png'
REPORTED = ('gold', 'gold_se', 'exact', 'greedy_gold', 'win_rate_vs_sft', 'win_rate_vs_sft_ci95', 'gold_gain',
            'gold_gain_ci95', 'kl', 'rm_score', 'pretrain_loss', 'update')


def read(path: str) -> dict:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def fit(d: np.ndarray, y: np.ndarray, form: str) -> dict | None:
  """alpha, beta of y = d (alpha - beta d) ('bon') or y = d (alpha - beta ln d) ('rl'), least squares; None with
  fewer than two points away from d = 0."""
  keep = d > 1e-6
  if keep.sum() < 2:
    return None
  d, y = d[keep], y[keep]
  columns = np.stack([d, -d * (d if form == 'bon' else np.log(d))], axis=1)
  (alpha, beta), *_ = np.linalg.lstsq(columns, y, rcond=None)
  return dict(alpha=float(alpha), beta=float(beta), points=int(keep.sum()))


def curve(track: dict) -> list[dict]:
  """A run's checkpoints on validation: update, KL, gold, RM score, and the gains over update 0 (SFT)."""
  start = track['checkpoints'][0]['validation']
  return [dict(update=c['update'], kl=c['validation']['kl'], gold=c['validation']['gold'],
               gold_se=c['validation']['gold_se'], rm_score=c['validation']['rm_score'],
               gold_gain=c['validation']['gold'] - start['gold'],
               rm_gain=c['validation']['rm_score'] - start['rm_score'], test_gold=c['test']['gold'],
               greedy_gold=c['validation']['greedy_gold'], pretrain_loss=c['pretrain_loss'])
          for c in track['checkpoints']]


def overoptimised(points: list[dict]) -> dict:
  """Whether gold peaks inside the curve (PPO updates, or best-of-n's n, as 'update'; after its start and before its
  end) and falls by at least 2 standard errors after it while the RM score still rises past the peak."""
  gold = [p['gold'] for p in points]
  peak = int(np.argmax(gold))
  after = points[peak + 1:]
  fall = gold[peak] - min(p['gold'] for p in after) if after else 0.0
  se = points[peak]['gold_se']
  rm_rises = bool(after) and max(p['rm_score'] for p in after) > points[peak]['rm_score']
  return dict(peak_update=points[peak]['update'], peak_gold=gold[peak], fall_after_peak=fall, peak_gold_se=se,
              rm_score_at_peak=points[peak]['rm_score'], rm_score_last=points[-1]['rm_score'],
              met=peak > 0 and bool(after) and fall >= 2 * se and rm_rises)


def beta_of(name: str) -> float | None:
  """The KL coefficient in a PPO run's name (ppo_b0.01, ppo_rm3_b0.05), None for other runs (seeds _s<n>, ptx)."""
  match = re.fullmatch(r'(?:.*_)?b([0-9.]+)', name)
  return float(match.group(1)) if match else None


def validation_gold_at_early_stop(track: dict) -> float:
  """A tracked run's validation gold at the update its early stopping chose (how runs of a sweep are compared)."""
  update = track['early_stopped']['update']
  return next(c['validation']['gold'] for c in track['checkpoints'] if c['update'] == update)


def reported(entry: dict) -> dict:
  """The REPORTED figures of a tracked checkpoint's test results (a track's early_stopped or last entry)."""
  return {k: entry[k] for k in REPORTED if k in entry}


def criteria(s: dict) -> dict:
  out = {}
  acc = s['reward_model']['accuracy_on_policy_samples']
  out['reward_model_accuracy_on_policy_at_least_0.80'] = dict(value=acc, met=acc >= 0.80)
  gain = s['best_of_n_gain_16_vs_1']
  out['best_of_16_minus_best_of_1_at_least_0.10'] = dict(value=gain['gain'], ci95=gain['ci95'],
                                                         met=gain['gain'] >= 0.10)
  ppo = s['ppo']
  out['ppo_beats_sft_win_rate_interval_above_0.5_kl_at_most_3'] = dict(
      win_rate=ppo['win_rate_vs_sft'], ci95=ppo['win_rate_vs_sft_ci95'], kl=ppo['kl'],
      met=ppo['win_rate_vs_sft_ci95'][0] > 0.5 and ppo['kl'] <= 3.0)
  if 'ppo_ptx' in s:
    ptx = s['ppo_ptx']
    out['ppo_ptx_pretrain_loss_0.2_below_ppo_win_rate_within_0.05'] = dict(
        pretrain_loss_drop=ppo['pretrain_loss'] - ptx['pretrain_loss'],
        win_rate_difference=ptx['win_rate_vs_sft'] - ppo['win_rate_vs_sft'],
        met=ppo['pretrain_loss'] - ptx['pretrain_loss'] >= 0.2
        and abs(ptx['win_rate_vs_sft'] - ppo['win_rate_vs_sft']) <= 0.05)
  ppo_check, bon_check = s['overoptimisation_check'], s['overoptimisation_check_best_of_n']
  out['rm_score_rises_after_gold_peaks_and_falls'] = dict(ppo=ppo_check, best_of_n=bon_check,
                                                          met=ppo_check['met'] or bon_check['met'])
  return out


def main(argv):
  del argv
  if not FLAGS.results or not os.path.isfile(os.path.join(FLAGS.results, 'baselines.json')):
    raise ConfigError(f'--results={FLAGS.results} must be a directory holding baselines.json: see python -m '
                      f'experiments.instructgpt.summary --help.')
  tracks = {os.path.basename(p)[len('track_'):-len('.json')]: read(p)
            for p in sorted(glob.glob(os.path.join(FLAGS.results, 'track_*.json')))}
  for name, flag in [(FLAGS.chosen, 'chosen')] + [(name, 'ptx') for name in FLAGS.ptx]:
    if name not in tracks:
      raise ConfigError(f'--{flag}={name} has no track_{name}.json in {FLAGS.results}: give one of '
                        f'{", ".join(tracks) or "(none tracked yet)"}.')
  out_path = cli.check_output('out', FLAGS.out or os.path.join(FLAGS.results, 'summary.json'))
  baselines = read(os.path.join(FLAGS.results, 'baselines.json'))
  chosen = tracks[FLAGS.chosen]
  sft = chosen['checkpoints'][0]
  s = dict(reward_model=dict(accuracy_on_policy_samples=baselines['reward_model']['on_policy_samples']['accuracy'],
                             **baselines['reward_model']),
           best_of_n=baselines['best_of_n']['test'], best_of_n_validation=baselines['best_of_n']['validation'],
           best_of_n_gain_16_vs_1=baselines['best_of_n_gain_16_vs_1']['test'],
           sft=dict(gold=sft['test']['gold'], pretrain_loss=sft['pretrain_loss'],
                    greedy_gold=sft['test']['greedy_gold'],
                    at_temperatures=baselines['sft']['test']),
           ppo=dict(run=FLAGS.chosen, **reported(chosen['early_stopped'])))
  s['ppo_last'] = reported(chosen['last'])
  if FLAGS.ptx:
    # The coefficient is chosen as the checkpoint is, on validation gold (the first listed on a tie).
    best = max(FLAGS.ptx, key=lambda name: validation_gold_at_early_stop(tracks[name]))
    ptx = tracks[best]
    s['ppo_ptx'] = dict(run=best, **reported(ptx['early_stopped']))
    s['ppo_ptx_runs'] = {name: dict(reported(tracks[name]['early_stopped']),
                                    validation_gold=validation_gold_at_early_stop(tracks[name]),
                                    last=reported(tracks[name]['last'])) for name in FLAGS.ptx}
    s['ppo_ptx_last'] = reported(ptx['last'])
    # Both runs at PPO-ptx's last update (whatever early stopping chose): test gold, KL, pretraining loss.
    update = ptx['last']['update']
    at = {name: next((c for c in t['checkpoints'] if c['update'] == update), None)
          for name, t in ((FLAGS.chosen, chosen), (best, ptx))}
    if all(at.values()):
      s['ppo_vs_ppo_ptx_at_update'] = dict(update=update, **{
          name: dict(gold=c['test']['gold'], kl=c['test']['kl'], pretrain_loss=c['pretrain_loss'])
          for name, c in at.items()})
  seeds = {name: reported(t['early_stopped']) for name, t in tracks.items()
           if name == FLAGS.chosen or name.startswith(FLAGS.chosen + '_s')}
  s['ppo_seeds'] = dict(runs=seeds, **{f'{k}_mean': float(np.mean([r[k] for r in seeds.values()]))
                                       for k in ('gold', 'win_rate_vs_sft', 'kl')},
                        **{f'{k}_std': float(np.std([r[k] for r in seeds.values()], ddof=1)) if len(seeds) > 1 else None
                           for k in ('gold', 'win_rate_vs_sft', 'kl')})
  s['ppo_runs'] = {name: reported(t['early_stopped']) for name, t in tracks.items()}
  betas = {name: curve(t) for name, t in tracks.items() if beta_of(name) is not None}
  plotted = min(betas, key=beta_of) if betas else FLAGS.chosen
  curves = betas or {FLAGS.chosen: curve(chosen)}
  s['overoptimisation'] = [{k: p[k] for k in ('update', 'kl', 'gold', 'rm_score')} for p in curves[plotted]]
  s['overoptimisation_run'] = plotted
  s['overoptimisation_curves'] = curves
  s['overoptimisation_check'] = overoptimised(curves[plotted])
  bon = baselines['best_of_n']['validation']
  # Best-of-n keeps no per-prompt values: its standard error is taken as SFT's at update 0 (same prompts, T).
  s['overoptimisation_check_best_of_n'] = dict(overoptimised(
      [dict(update=r['n'], gold=r['gold'], gold_se=sft['validation']['gold_se'], rm_score=r['rm_score'])
       for r in bon]), se_from='SFT at update 0 of the chosen run (validation)')
  s['fits'] = dict(best_of_n=fit(np.sqrt([r['kl'] for r in bon]), np.array([r['gold'] - bon[0]['gold'] for r in bon]),
                                 'bon'),
                   **{name: fit(np.sqrt(np.maximum([p['kl'] for p in c], 0.0)), np.array([p['gold_gain'] for p in c]),
                                'rl') for name, c in curves.items()})
  s['overoptimisation_plot'] = PLOT
  s['criteria'] = criteria(s)
  with open(out_path, 'w', encoding='utf-8') as f:
    json.dump(s, f, indent=2)
  for name, c in s['criteria'].items():
    print(f'{"met    " if c["met"] else "NOT met"} {name}: {json.dumps({k: v for k, v in c.items() if k != "met"})}')


if __name__ == '__main__':
  define_flags()
  cli.run_main(main)
