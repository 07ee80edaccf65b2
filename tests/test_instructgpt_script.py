"""experiments/instructgpt/run.sh writes only under the runs directory it is given; `publish` refuses a runs
directory without results. The stages themselves are tested in test_rlhf.py and test_ppo.py: here PY is a program
that records each command line, so the script's wiring runs in a second."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'experiments', 'instructgpt', 'run.sh')
RESULTS = os.path.join(REPO, 'experiments', 'instructgpt', 'results')


def _snapshot(directory) -> dict:
  """Every file below directory (the result blocks' subdirectories included) and its modification time."""
  return {os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
          for root, _, names in os.walk(directory) for name in names}


def test_the_pipeline_writes_only_under_its_runs_directory(tmp_path):
  log = tmp_path / 'commands.txt'
  recorder = tmp_path / 'py'
  recorder.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
  recorder.chmod(0o755)
  runs = tmp_path / 'runs'
  before = _snapshot(RESULTS)
  result = subprocess.run(['bash', SCRIPT, str(runs)], env=dict(os.environ, PY=str(recorder)), capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert _snapshot(RESULTS) == before
  commands = log.read_text().splitlines()
  # 6 stages up to the baselines, 5 PPO runs each tracked, DPO, the comparison, the summary and the plots; then the
  # stronger reward model, its baselines, 8 PPO runs each tracked, its summary and plots; then the SFT that keeps
  # pretraining, its comparisons, reward model and baselines, 4 PPO runs each tracked, its summary and plots
  assert len(commands) == 54
  outputs = [arg.split('=', 1)[1] for line in commands for arg in line.split()
             if arg.startswith(('--workdir=', '--out=', '--output_dir=', '--results='))]
  assert outputs and all(path.startswith(str(runs)) for path in outputs)
  assert sorted(os.listdir(runs / 'results')) == ['wall_times.txt']
  assert len((runs / 'results' / 'wall_times.txt').read_text().splitlines()) == 17
  assert len((runs / 'results_rm3' / 'wall_times.txt').read_text().splitlines()) == 18
  assert len((runs / 'results_keep' / 'wall_times.txt').read_text().splitlines()) == 12
  # Each block's PPO runs start from its own SFT against its own reward model; the plots name every PPO-ptx run.
  sources = {'ppo_b0.01': ('sft', 'rm'), 'ppo_rm3_ptx0.03': ('sft', 'rm3'), 'ppo_keep_ptx0.1': ('sft_keep', 'rm_keep')}
  for run, (sft, rm) in sources.items():
    line = next(line for line in commands if f'--workdir={runs}/{run} ' in line)
    assert f'policy_from={runs}/{sft} ' in line and f'reward_from={runs}/{rm} ' in line
  plots = [line for line in commands if 'experiments.instructgpt.plots' in line]
  assert len(plots) == 3 and f',ptx0.1={runs}/ppo_keep_ptx0.1,' in plots[-1]
  # A rerun skips the finished stages and recomputes only the comparison, the summaries and the plots.
  again = subprocess.run(['bash', SCRIPT, str(runs)], env=dict(os.environ, PY=str(recorder)), capture_output=True,
                         text=True, timeout=60)
  assert again.returncode == 0, again.stderr
  assert len(log.read_text().splitlines()) == 61


def test_publish_refuses_a_runs_directory_without_results(tmp_path):
  before = _snapshot(RESULTS)
  result = subprocess.run(['bash', SCRIPT, 'publish', str(tmp_path)], capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and result.stderr.startswith('error: ') and len(result.stderr.splitlines()) == 1
  assert _snapshot(RESULTS) == before
