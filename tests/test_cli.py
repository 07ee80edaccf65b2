"""Entry-point flags: every bad --config / --config.<key> ends in one sentence and exit status 2."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('flag,message', [
    ('--config=configs/gpt3.py:42b', "unknown GPT-3 size '42b': use one of 125m"),
    ('--config.model.d_modle=3', "unknown config key 'model.d_modle': did you mean 'model.d_model'?"),
    ('--config=configs/nope.py', "config file 'configs/nope.py' does not exist"),
    ('--config.model.local_window=0', 'model.local_window=0 must be at least 1'),
    ('--config.model.n_heads=5', 'model.d_model=128 is not divisible by model.n_heads=5'),
])
def test_bad_flags_fail_with_one_sentence(flag, message, tmp_path):
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.train', f'--workdir={tmp_path}', flag],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
  assert 'Traceback' not in result.stderr


def test_a_workdir_that_is_a_file_is_one_sentence(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('mine')
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.train', f'--workdir={path}'], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert f'error: --workdir={path} is a file, not a directory' in result.stderr
  assert path.read_text() == 'mine'


def test_stray_arguments_are_one_sentence(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.train', f'--workdir={tmp_path}', 'extra'],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "error: unexpected arguments 'extra'" in result.stderr


def _one_sentence(args, tmp_path):
  result = subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=REPO))
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2 and 'Traceback' not in result.stderr and len(errors) == 1, result.stderr[-2000:]
  return errors[0]


@pytest.mark.parametrize('args,message', [
    (['gpt_jax.sample', '--config=CONFIGS/tiny.py:nano', '--init=random', '--num_samples=0'],
     '--num_samples=0 must be at least 1'),
    (['gpt_jax.sample', '--config=CONFIGS/tiny.py:nano', '--init=random', '--batch_size=0'],
     '--batch_size=0 must be at least 1'),
    (['gpt_jax.sample', '--config=CONFIGS/tiny.py:nano', '--workdir=.'], '--config is not used with --workdir=.'),
    (['gpt_jax.eval', '--config=CONFIGS/tiny.py:nano', '--init=random', '--limit=0', '--tasks=x'],
     '--limit=0 must be at least 1 (leave it out'),
    (['gpt_jax.eval', '--config=CONFIGS/tiny.py:nano', '--init=random', '--batch_tokens=0', '--tasks=x'],
     '--batch_tokens=0 must be at least 1'),
    (['gpt_jax.eval', '--make_gpt3_tasks=afile'], '--make_gpt3_tasks=afile is a file, not a directory'),
    (['gpt_jax.eval', '--make_gpt3_tasks=tasks', '--words_from=empty.txt'], "--words_from='empty.txt' holds no words"),
    (['gpt_jax.hf', 'imprt', '--hf_dir=x'], "unknown command 'imprt': use one of import, export"),
])
def test_inference_commands_refuse_nonsense_in_one_sentence(args, message, tmp_path):
  (tmp_path / 'afile').write_text('mine')
  (tmp_path / 'empty.txt').write_text('')
  args = [a.replace('CONFIGS', os.path.join(REPO, 'configs')) for a in args]
  before = sorted(os.listdir(tmp_path))
  assert message in _one_sentence(args, tmp_path)
  assert sorted(os.listdir(tmp_path)) == before and (tmp_path / 'afile').read_text() == 'mine'


def test_print_config_lists_every_field_with_its_meaning(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'gpt_jax.train', '--print_config', '--config=configs/gpt3.py:125m',
                           '--config.train.total_tokens=2.5e9'], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert 'train.total_tokens = 2500000000  # training length in tokens' in lines
  assert 'optim.peak_lr = 0.0006  # peak learning rate after warmup' in lines
  from gpt_jax import config as gcfg
  fields = len(list(gcfg.leaves(gcfg.default_config())))
  assert len(lines) == fields and all('  # ' in line for line in lines)
  help_text = subprocess.run([sys.executable, '-m', 'gpt_jax.sample', '--help'], capture_output=True, text=True,
                             timeout=120, cwd=REPO).stdout
  assert '--[no]print_config' in help_text
  assert all(f'--{name}:' in help_text for name in ('config', 'workdir', 'mesh', 'prompt'))


@pytest.mark.parametrize('module', ['gpt_jax.train', 'gpt_jax.rlhf.ppo', 'gpt_jax.sample'])
def test_print_config_of_a_run_prints_the_runs_own_config(module, tmp_path):
  from gpt_jax import checkpoint as ckpt
  from tests.helpers import tiny_config
  ckpt.save_config(str(tmp_path), tiny_config(rlhf__ppo__policy_from='runs/sft', rlhf__ppo__reward_from='runs/rm'))
  result = subprocess.run([sys.executable, '-m', module, f'--workdir={tmp_path}', '--print_config'],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  values = {line.split('  # ')[0] for line in result.stdout.splitlines()}
  assert {'model.d_model = 64', "rlhf.ppo.policy_from = 'runs/sft'", "rlhf.ppo.reward_from = 'runs/rm'"} <= values
