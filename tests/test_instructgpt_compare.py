"""experiments.instructgpt.compare on tiny random policies and reward model: it runs through the shared command
line (no orbax INFO lines on the terminal), writes its table, and refuses an existing one."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp

from gpt_jax import checkpoint as ckpt
from gpt_jax import heads
from gpt_jax import model as gm
from gpt_jax.rlhf import reward
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_dir(path, module, seed: int) -> str:
  config = tiny_config()
  ckpt.save_config(str(path), config)
  checkpointer = ckpt.Checkpointer(str(path), config.checkpoint)
  checkpointer.save(1, gm.init_params(module(config.model), jax.random.key(seed)), {'step': jnp.int32(1)}, {},
                    force=True)
  checkpointer.close()
  return str(path)


def test_compare_writes_its_table_without_orbax_logging(tmp_path):
  sft = _run_dir(tmp_path / 'sft', gm.GPTLM, 0)
  other = _run_dir(tmp_path / 'other', gm.GPTLM, 1)
  rm = _run_dir(tmp_path / 'rm', heads.RewardModel, 2)
  (tmp_path / 'rm' / reward.NORM_FILE).write_text(json.dumps({'gain': 1.0, 'bias': 0.0}))
  command = [sys.executable, '-m', 'experiments.instructgpt.compare', f'--reward={rm}', '--prompts=4',
             f'--policies=sft={sft},other={other}', f'--out={tmp_path / "compare.json"}']
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert not [line for line in result.stderr.splitlines() if re.match(r'I\d{4} ', line)], result.stderr[-2000:]
  table = json.loads((tmp_path / 'compare.json').read_text())
  assert table['results']['sft']['win_rate_rm'] == 0.5 and set(table['results']) == {'sft', 'other'}
  again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
  assert again.returncode == 2 and 'already exists' in again.stderr and 'Traceback' not in again.stderr
