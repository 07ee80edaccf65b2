"""experiments.few_shot on a tiny model with a short context: prompts cut to fit are announced and counted in the
table; the plots mark them and put integer ticks on K (with matplotlib installed: requirements-experiments.txt)."""

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import model as gm
from tests.helpers import tiny_config
from tests.xla_env import env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  """The runner's results JSON and stdout for one random 32-token-context model, 3 items, one seed."""
  root = tmp_path_factory.mktemp('few_shot')
  config = tiny_config()  # model.context = 32: most K > 0 prompts do not fit
  ckpt.save_config(str(root / 'runs' / 'm1'), config)
  checkpointer = ckpt.Checkpointer(str(root / 'runs' / 'm1'), config.checkpoint)
  checkpointer.save(1, gm.init_params(gm.GPTLM(config.model), jax.random.key(0)), {'step': jnp.int32(1)}, {},
                    force=True)
  checkpointer.close()
  with open(root / 'runs.csv', 'w', newline='', encoding='utf-8') as f:
    row = dict(run='m1', state='finished', n_layers=2, d_model=64, final_eval_loss=3.0, params_non_embedding=10**5,
               params_total=12 * 10**4)
    writer = csv.DictWriter(f, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
  result = subprocess.run([sys.executable, '-m', 'experiments.few_shot.run', f'--table={root / "runs.csv"}',
                           f'--runs_root={root / "runs"}', f'--output={root / "out" / "results.json"}', '--n=3',
                           '--seeds=1'], env=env(8), capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return root / 'out' / 'results.json', result.stdout


def test_cut_prompts_are_announced_and_counted_in_the_table(results):
  path, stdout = results
  rows = json.loads(path.read_text())['rows']
  cut = [r for r in rows if r['truncated']]
  assert cut and all(0 < r['truncated'] <= r['prompts'] == 3 for r in cut)
  assert any(not r['truncated'] for r in rows)  # K = 0 prompts fit
  announced = [line for line in stdout.splitlines() if line.startswith('warning: m1 ')]
  assert len(announced) == len(cut) and '32-token context' in announced[0]
  assert f'{len(cut)} of {len(rows)} rows had prompts cut' in stdout
  with open(path.with_suffix('.csv'), encoding='utf-8') as f:
    assert sum(int(r['truncated']) > 0 for r in csv.DictReader(f)) == len(cut)


def test_plots_mark_cut_prompts_and_tick_k_in_integers(results, tmp_path, monkeypatch):
  from experiments.few_shot import plots
  rows = json.loads(results[0].read_text())['rows']
  figures = []
  monkeypatch.setattr(plots, '_save', lambda fig, *args: figures.append(fig) or 'x')
  plots.versus_k(str(tmp_path), rows, 'loglik', 'log-prob', 'x.png')
  fig = figures[0]
  for ax in fig.axes:
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
  assert any(line.get_markerfacecolor() == 'white' for ax in fig.axes for line in ax.get_lines())
  result = subprocess.run([sys.executable, '-m', 'experiments.few_shot.plots', f'--results={results[0]}',
                           f'--plots={tmp_path / "plots"}'], capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / 'plots')) == sorted(plots.FILES)


def test_runs_list_evaluates_an_imported_gpt2_and_an_export_and_refuses_a_directory_without_config(tmp_path):
  from tests.helpers import tiny_gpt2
  hf_dir = tmp_path / 'hf'
  hf_dir.mkdir()
  tiny_gpt2(str(hf_dir))
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.hf', 'import', f'--hf_dir={hf_dir}',
                           f'--workdir={tmp_path / "gpt2"}'], capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  config = tiny_config(model__n_layers=1, model__context=128)
  ckpt.export_params(str(tmp_path / 'small'), gm.init_params(gm.GPTLM(config.model), jax.random.key(0)), 1, config)
  runs = [str(tmp_path / 'gpt2'), str(tmp_path / 'small')]
  output = tmp_path / 'out' / 'results.json'
  command = [sys.executable, '-m', 'experiments.few_shot.run', f'--output={output}', '--n=2', '--seeds=1']
  result = subprocess.run(command + [f'--runs={",".join(runs)}'], env=env(8), capture_output=True, text=True,
                          timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads(output.read_text())
  assert written['models'] == ['small', 'gpt2']  # smallest first
  assert {r['model'] for r in written['rows']} == {'small', 'gpt2'}
  assert all(r['params_non_embedding'] > 0 for r in written['rows'])
  result = subprocess.run(command + ['--overwrite', f'--runs={runs[0]},{tmp_path}'], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
  assert result.returncode == 2 and result.stderr.strip() == (
      f'error: --runs entry {tmp_path} holds no config.json: pass run directories written by gpt_jax.train or '
      f'exports (python -m gpt_jax.hf import --workdir=...).')
