"""One rule for every command that writes an output: an existing output (a file, a non-empty directory, a report
the command would write) is refused in one sentence with exit status 2 before any work, and nothing is touched,
unless --overwrite is passed; a path that cannot be created is refused the same way."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from gpt_jax import checkpoint as ckpt
from gpt_jax import model as gm
from gpt_jax.eval import tasks as tasks_lib
from tests.helpers import load_lm, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd):
  return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, timeout=180, cwd=cwd,
                        env=dict(os.environ, PYTHONPATH=REPO))


@pytest.fixture(scope='module')
def place(tmp_path_factory):
  """A directory with a tiny LM run (run/), a task (task/), and outputs that exist: a file, a non-empty directory,
  a GPT-3 task folder and a report."""
  root = tmp_path_factory.mktemp('place')
  config = tiny_config()
  ckpt.save_config(str(root / 'run'), config)
  checkpointer = ckpt.Checkpointer(str(root / 'run'), config.checkpoint)
  checkpointer.save(1, gm.init_params(gm.GPTLM(config.model), jax.random.key(0)), {'step': jnp.int32(1)}, {},
                    force=True)
  checkpointer.close()
  spec = tasks_lib.TaskSpec(task='tiny', output_type='loglikelihood', test_file='test.jsonl')
  tasks_lib.write_task(str(root / 'task'), spec, [{'context': 'a', 'completion': 'b'}])
  (root / 'mine.json').write_text('mine')
  (root / 'full').mkdir()
  (root / 'full' / 'mine.txt').write_text('mine')
  (root / 'gpt3' / 'arithmetic_2da').mkdir(parents=True)
  (root / 'reports').mkdir()
  (root / 'reports' / 'tiny.0shot.json').write_text('mine')
  return root


def _contents(root) -> dict:
  return {os.path.join(d, name): os.path.getmtime(os.path.join(d, name))
          for d, _, names in os.walk(root) for name in names}


CONFIG = os.path.join(REPO, 'configs', 'tiny.py:nano')


@pytest.mark.parametrize('args,message', [
    (['gpt_jax.dryrun', f'--config={CONFIG}', '--topology=v5e:2x2', '--out=mine.json'], '--out=mine.json already'),
    (['gpt_jax.dryrun', f'--config={CONFIG}', '--topology=v5e:2x2', '--out=mine.json/x.json'],
     'cannot be created'),
    (['gpt_jax.export', '--workdir=run', '--out=full'], '--out=full already exists and is not empty'),
    (['gpt_jax.hf', 'export', '--workdir=run', '--out=full'], '--out=full already exists'),
    (['gpt_jax.hf', 'import', '--hf_dir=run', '--workdir=full'], '--workdir=full already exists'),
    (['gpt_jax.eval', '--make_gpt3_tasks=gpt3'], '--make_gpt3_tasks=gpt3 already holds arithmetic_2da'),
    (['gpt_jax.eval', f'--config={CONFIG}', '--init=random', '--tasks=task', '--output_dir=reports'],
     '--output_dir=reports already holds tiny.0shot.json'),
    (['experiments.instructgpt.compare', '--policies=a=run', '--reward=run', '--out=mine.json'],
     '--out=mine.json already exists'),
    (['experiments.few_shot.run', '--table=t.csv', '--runs_root=.', '--output=mine.json'],
     '--output=mine.json already exists'),
])
def test_an_existing_output_is_refused_before_any_work(args, message, place):
  before = _contents(place)
  result = _run(args, place)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2 and len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert message in errors[0] and ('--overwrite' in errors[0] or 'cannot be created' in errors[0])
  assert _contents(place) == before


def test_overwrite_replaces_an_export(place):
  result = _run(['gpt_jax.export', '--workdir=run', '--out=full', '--overwrite'], place)
  assert result.returncode == 0, result.stderr[-2000:]
  assert load_lm(place / 'full')[2] == 1
