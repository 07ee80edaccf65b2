"""gpt_jax.sweep: expansion, one-sentence errors for bad sweep files, the SLURM / TPU emitters, and a two-run sweep
end to end (run, kill, resume, status, collect, analyse) as real processes."""

import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax.config import ConfigError
from gpt_jax.sweep import Resources, Shape, ShapeRule, Sweep, attempt, cluster, expand, load_sweep, resources
from tests import xla_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_sweep(tmp_path, body: str, name='sweep.py') -> str:
  path = tmp_path / name
  path.write_text('from gpt_jax.sweep import Shape, ShapeRule, Sweep\n\n' + body, encoding='utf-8')
  return str(path)


def flops_sweep(root, **changes):
  fields = dict(name='t', config='configs/tiny.py:nano', root=str(root), shapes=[Shape(2, 32, 2), Shape(2, 64, 2)],
                flops=(1e10, 1e11), learning_rates=lambda s: 1e-3 * 64 / s.d_model, seeds=(0,),
                overrides={'model.context': 64, 'train.batch_tokens': 512})
  return Sweep(**(fields | changes))


def test_shape_rule_gives_whole_heads_and_grows_with_the_target():
  rule = ShapeRule(aspect=24, head_dim=16, min_layers=2)
  shapes = [rule(t) for t in (6e3, 1e5, 1e6, 1e8)]
  assert shapes[0] == Shape(2, 16, 1)
  for shape in shapes:
    assert shape.d_model == shape.n_heads * 16 and shape.n_layers >= 2
  sizes = [12 * s.n_layers * s.d_model ** 2 for s in shapes]
  assert sizes == sorted(sizes) and 0.5e8 < sizes[-1] < 2e8


def test_flop_budgets_expand_budget_major_with_tokens_and_schedule_per_run(tmp_path):
  runs = expand(flops_sweep(tmp_path))
  assert [r.name for r in runs] == ['l2-d32-h2-c1e10-lr0.002-s0', 'l2-d64-h2-c1e10-lr0.001-s0',
                                    'l2-d32-h2-c1e11-lr0.002-s0', 'l2-d64-h2-c1e11-lr0.001-s0']
  for run in runs:
    config = gcfg.load_config_file(run.config, run.overrides)
    total = flops.count_params(config)['total']
    assert run.params_total == total and run.tokens % 512 == 0
    assert run.tokens <= run.flops_budget / (6 * total) < run.tokens + 512
    assert config.train.total_tokens == run.tokens and config.optim.decay_tokens == run.tokens
    assert config.optim.peak_lr == run.learning_rate and run.workdir == os.path.join(str(tmp_path), run.name)
  assert runs[0].command('py')[:5] == ['py', '-m', 'gpt_jax.train', '--config=configs/tiny.py:nano',
                                       f'--workdir={runs[0].workdir}']
  assert f'--config.train.total_tokens={runs[0].tokens}' in runs[0].command()


def test_token_budgets_seeds_keep_and_eval_every(tmp_path):
  sweep = flops_sweep(tmp_path, flops=(), tokens=(5120, 51200), seeds=(0, 1), learning_rates=(),
                      evals_per_run=4, keep=lambda run: run.tokens > 5120 or run.shape.d_model == 32)
  runs = expand(sweep)
  assert len(runs) == 6 and {r.seed for r in runs} == {0, 1}
  assert all(r.learning_rate == 3e-3 for r in runs)  # the nano config's own rate
  assert {r.overrides['train.eval_every'] for r in runs} == {2, 25}


def test_a_fixed_schedule_must_be_scaled_to_each_budget(tmp_path):
  sweep = flops_sweep(tmp_path, config='configs/gpt3.py:125m', shapes=[Shape(2, 64, 2)], flops=(1e15,),
                      learning_rates=(), overrides={'model.context': 64, 'train.batch_tokens': 512,
                                                    'optim.ramp_tokens': 0, 'optim.ramp_start_tokens': 0,
                                                    'model.vocab_size': 258})
  with pytest.raises(ConfigError, match='optim.decay_tokens=260000000000 does not follow'):
    expand(sweep)
  scaled = expand(dataclasses.replace(sweep, schedule=lambda t: {
      'optim.decay_tokens': t * 260 // 300, 'optim.warmup_tokens': t // 100}))
  assert scaled[0].overrides['optim.decay_tokens'] == scaled[0].tokens * 260 // 300


@pytest.mark.parametrize('body, message', [
    ('def get_sweep():\n  return Sweep(name="x", config="configs/tiny.py:nano", root="r", shapes=[Shape(2, 32, 2)],'
     ' tokens=[5120], learing_rates=[1e-3])\n', "unexpected keyword argument 'learing_rates'.*did you mean "
                                               "'learning_rates'"),
    ('def get_sweep():\n  return Sweep(name="x", config="configs/tiny.py:nano", root="r", shapes=[Shape(2, 32, 2)],'
     ' tokens=[5120], overrides={"optim.peek_lr": 1e-3})\n', "run l2-d32-h2-t5120-s0: unknown config key "
                                                             "'optim.peek_lr': did you mean 'optim.peak_lr'"),
    ('def get_sweep():\n  return Sweep(name="x", config="configs/tiny.py:nano", root="r", shapes=[Shape(2, 32, 2)],'
     ' tokens=[5120], flops=[1e12])\n', 'exactly one of tokens'),
    ('def get_sweep():\n  return Sweep(name="x", config="configs/tiny.py:nano", root="r", shapes=[Shape(2, 32, 2)],'
     ' flops=[1e3])\n', 'less than one batch'),
    ('def get_sweep():\n  return Sweep(name="x", config="configs/nope.py", root="r", shapes=[Shape(2, 32, 2)],'
     ' tokens=[5120])\n', "config file 'configs/nope.py' does not exist"),
    ('x = 1\n\ndef get_sweep():\n  return Swep()\n', "line 6: NameError: name 'Swep' is not defined"),
    ('def get_sweep(:\n', 'line 3: SyntaxError'),
    ('SWEEP = 1\n', 'defines no get_sweep'),
    ('def get_sweep():\n  return {"name": "x"}\n', 'returned dict, not a Sweep'),
])
def test_bad_sweep_files_are_one_sentence(tmp_path, body, message):
  path = write_sweep(tmp_path, body)
  with pytest.raises(ConfigError, match=message) as error:
    expand(load_sweep(path))
  text = str(error.value)
  assert '\n' not in text and (path in text or text.startswith("sweep 'x'")), text


def test_missing_file_and_unicode(tmp_path):
  with pytest.raises(ConfigError, match="sweep file 'no/such.py' does not exist"):
    load_sweep('no/such.py')
  path = write_sweep(tmp_path, '# Größe: Ünïcödé\ndef get_sweep():\n  return Sweep(name="größe", config='
                     '"configs/tiny.py:nano", root="r", shapes=[Shape(2, 32, 2)], tokens=[5120])\n', 'ü.py')
  assert expand(load_sweep(path))[0].name == 'l2-d32-h2-t5120-s0'
  (tmp_path / 'latin1.py').write_bytes(b'NAME = "gr\xf6\xdfe"\ndef get_sweep():\n  pass\n')
  with pytest.raises(ConfigError, match='SyntaxError'):
    load_sweep(str(tmp_path / 'latin1.py'))


def _fake(tmp_path, name, body='echo "$0 $*" >> "$FAKE_LOG"'):
  """An executable `name` on a PATH of its own that logs its arguments to $FAKE_LOG."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  (bin_dir / name).write_text(f'#!/usr/bin/env bash\n{body}\n')
  (bin_dir / name).chmod(0o755)
  return dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', FAKE_LOG=str(tmp_path / 'fake.log'))


def test_slurm_script_submits_one_array_per_allocation_with_absolute_paths(tmp_path):
  sizes = {32: Resources(nodes=1, gpus_per_node=4, cpus_per_task=8, time='2:00:00', overrides={'mesh.fsdp': -1}),
           64: Resources(nodes=2, gpus_per_node=8, time='1-00:00:00', overrides={'train.microbatches': 2})}
  sweep = flops_sweep(tmp_path / 'runs', name='my sweep; rm -rf x', resources=lambda shape: sizes[shape.d_model])
  runs = expand(sweep)
  assert [r.overrides.get('train.microbatches') for r in runs] == [None, 2, None, 2]
  script = cluster.slurm_script(sweep, runs, Resources(), repo=REPO, max_parallel=3)
  path = tmp_path / 'sweep.sh'
  path.write_text(script)
  assert subprocess.run(['bash', '-n', str(path)]).returncode == 0
  assert '#SBATCH --job-name=my_sweep_rm_-rf_x\n' in script
  # Run by hand it submits itself, once per allocation, from any directory.
  env = _fake(tmp_path, 'sbatch')
  env['PATH'] = f'{tmp_path / "bin"}:/usr/bin:/bin'
  cpu_venv = subprocess.run(['bash', str(path)], env=env, capture_output=True, text=True, cwd=tmp_path)
  assert cpu_venv.returncode == 2 and "no CUDA build of jax: run 'make setup-gpu'" in cpu_venv.stderr
  allowed = path.with_name('allowed.sh')
  allowed.write_text(cluster.slurm_script(sweep, runs, Resources(), repo=REPO, max_parallel=3, allow_cpu=True))
  assert subprocess.run(['bash', str(allowed)], env=env, cwd=tmp_path).returncode == 0
  calls = (tmp_path / 'fake.log').read_text().splitlines()
  logs = os.path.join(tmp_path, 'runs', 'slurm', '%x-%A_%a.out')
  assert calls == [
      f'{tmp_path}/bin/sbatch --array=0,2%3 --nodes=1 --gpus-per-node=4 --cpus-per-task=8 --time=2:00:00 '
      f'--output={logs} {allowed}',
      f'{tmp_path}/bin/sbatch --array=1,3%3 --nodes=2 --gpus-per-node=8 --cpus-per-task=32 --time=1-00:00:00 '
      f'--output={logs} {allowed}']
  # As array task 3 it runs the run's command through srun, as one attempt of the run.
  env = _fake(tmp_path, 'srun', 'printf "%s\\n" "$@" > "$FAKE_LOG"')
  task = subprocess.run(['bash', str(allowed)], env=dict(env, SLURM_ARRAY_TASK_ID='3', SLURM_JOB_NUM_NODES='2'),
                        capture_output=True, text=True, cwd=tmp_path)
  assert task.returncode == 0, task.stderr
  srun = (tmp_path / 'fake.log').read_text().splitlines()
  workdir = runs[3].workdir
  assert srun[:6] == ['--kill-on-bad-exit=1', os.path.join(REPO, '.venv', 'bin', 'python'), '-m', 'gpt_jax.train',
                      f'--config={REPO}/configs/tiny.py:nano', f'--workdir={workdir}']
  assert srun[6:] == runs[3].command()[5:] + list(cluster.GPU_FLAGS)
  assert [a['exit_code'] for a in attempt.read_attempts(workdir)] == [0]
  wrong = subprocess.run(['bash', str(allowed)], env=dict(env, SLURM_ARRAY_TASK_ID='3', SLURM_JOB_NUM_NODES='1'),
                         capture_output=True, text=True)
  assert wrong.returncode == 2 and 'run 3 needs 2 node(s), the job has 1' in wrong.stderr


def test_tpu_script_and_its_launcher_use_a_fresh_upload_path_per_sweep(tmp_path):
  sweep = flops_sweep('runs/s')
  runs = expand(sweep)
  script = cluster.tpu_script(sweep, runs, tpu='pod', zone='us-east5-a', repo=REPO)
  lines = [x for x in script.splitlines() if x.startswith(REPO)]
  assert f'\ncd {REPO}\n' in script and len(lines) == 4
  assert lines[1].startswith(f'{REPO}/launch/tpu_pod.sh pod us-east5-a configs/tiny.py:nano {runs[1].workdir} '
                             f'--config.model.context=64')
  env = _fake(tmp_path, 'gcloud')
  env['PATH'] = f'{tmp_path / "bin"}:/usr/bin:/bin'
  for _ in range(2):
    subprocess.run([os.path.join(REPO, 'launch', 'tpu_pod.sh'), 'pod', 'z', 'configs/tiny.py:nano', 'gs://b/r'],
                   env=env, cwd=REPO, check=True, capture_output=True)
  uploads = [line.split()[5] for line in (tmp_path / 'fake.log').read_text().splitlines() if ' scp ' in line]
  assert len(uploads) == 2 and uploads[0] != uploads[1] and not any(os.path.exists(u) for u in uploads)
  warned = cluster.warnings(dataclasses.replace(sweep, root='runs/s'), runs, repo=REPO, tpu=True)
  assert 'is relative: each TPU worker would write its own copy' in warned[0]
  assert 'embedded stdlib corpus' in warned[1] and 'byte tokenizer' in warned[2]


@pytest.mark.parametrize('args, message', [
    (('--nodes=0',), '--nodes=0 must be at least 1.'),
    (('--gpus_per_node=-1',), '--gpus_per_node=-1 must be at least 1.'),
    (('--time=forever',), "--time='forever' is not a SLURM time limit"),
    (('--config=configs/tiny.py:nano',), "Unknown command line flag 'config'"),
    (('--print_config',), "Unknown command line flag 'print_config'"),
    (('--num_processes=2',), "Unknown command line flag 'num_processes'"),
    (('--zone=us-east5-a',), '--zone is not used by slurm (only by tpu): drop it.'),
    (('--nodes=4',), "--nodes: sweep 'gpt3-ladder' gives each run its own Resources (Sweep.resources)"),
    (('--output=README.md/x.sh',), 'cannot be created: '),
])
def test_impossible_or_unused_slurm_flags_are_one_sentence_before_anything_is_written(tmp_path, args, message):
  command, kwargs = _sweep_cli('slurm', '--sweep=experiments/scaling_laws/sweep_gpt3.py',
                               f'--output={tmp_path / "x.sh"}', *args, capture_output=True, text=True)
  result = subprocess.run(command, **kwargs)
  assert result.returncode == 2 and message in result.stderr and 'Traceback' not in result.stderr, result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / 'x.sh').exists()


def test_a_written_script_is_not_overwritten_without_the_flag(tmp_path):
  (tmp_path / 'x.sh').write_text('mine')
  command, kwargs = _sweep_cli('slurm', '--sweep=experiments/scaling_laws/sweep_gpt3.py',
                               f'--output={tmp_path / "x.sh"}', capture_output=True, text=True)
  result = subprocess.run(command, **kwargs)
  assert result.returncode == 2 and 'already exists' in result.stderr and (tmp_path / 'x.sh').read_text() == 'mine'


def test_check_compiles_each_setting_once_and_refuses_a_run_that_does_not_fit(tmp_path):
  sweep = flops_sweep(tmp_path, flops=(), tokens=(512 * 4,), learning_rates=(), seeds=(0, 1),
                      shapes=[Shape(2, 64, 2), Shape(2, 12288, 96)],
                      resources=lambda shape: Resources(gpus_per_node=1, gpu='h100'))
  runs = expand(sweep)
  lines = []
  with pytest.raises(ConfigError) as error:
    resources.check_fit(runs, lambda r: r.resources.gpu_topology, cluster.GPU_FLAGS, echo=lines.append)
  assert [x.split(' on ')[0] for x in lines] == ['check  l2-d64-h2-t2048-s0', 'fits   l2-d64-h2-t2048-s0',
                                                'fits   l2-d64-h2-t2048-s1', 'check  l2-d12288-h96-t2048-s0']
  text = str(error.value)
  assert text.startswith('run l2-d12288-h96-t2048-s0 does not fit h100:1x1: it needs ') and '\n' not in text
  assert 'GiB per chip of 71.7: give it about 2 nodes of 1 (Resources(nodes=...))' in text, text


_HOLDER = """
import sys, time
from gpt_jax.sweep import attempt
attempt.HEARTBEAT_SECONDS = 0.1
held = attempt.Attempt(sys.argv[1])
print(held.popen(['sleep', '600']).pid, flush=True)
while True:
  held.beat()
  time.sleep(0.05)
"""


def test_run_lock_outlives_a_killed_runner_while_its_training_process_lives_then_counts_its_time(tmp_path):
  from gpt_jax.sweep import state
  workdir = str(tmp_path / 'run')
  runner = subprocess.Popen([sys.executable, '-c', _HOLDER, workdir], stdout=subprocess.PIPE, text=True, cwd=REPO)
  child = int(runner.stdout.readline())
  began = time.time()
  record, held = attempt.read_lock(workdir)
  assert held and record['pid'] == runner.pid and record['host'] == socket.gethostname()
  assert state.run_state(workdir, 100, False).where == f'{socket.gethostname()} (pid {runner.pid})'
  with pytest.raises(attempt.Locked, match=f'pid {runner.pid}'):
    attempt.Attempt(workdir)
  # A SLURM array task of the same run leaves it alone.
  marker = tmp_path / 'ran'
  task = subprocess.run([sys.executable, '-m', 'gpt_jax.sweep.attempt', workdir, 'touch', str(marker)],
                        capture_output=True, text=True, cwd=REPO)
  assert task.returncode == 0 and f'is being trained by {socket.gethostname()} (pid {runner.pid})' in task.stdout
  assert not marker.exists()
  time.sleep(0.5)
  runner.kill()
  runner.wait()
  lived = time.time() - began
  assert attempt.read_lock(workdir)[1] and state.run_state(workdir, 100, False).state == 'running'
  os.kill(child, 9)
  _wait_for(lambda: not attempt.read_lock(workdir)[1], what='the lock to be released')
  stale = state.run_state(workdir, 100, False)
  assert stale.state == 'pending' and stale.where is None and lived - 0.3 < stale.seconds < lived
  rerun = attempt.Attempt(workdir)  # takes over the stale lock and records the dead attempt
  rerun.finish(0)
  attempts = attempt.read_attempts(workdir)
  assert [a['exit_code'] for a in attempts] == [None, 0] and attempts[0]['seconds'] == stale.seconds
  assert state.run_state(workdir, 100, False).seconds == pytest.approx(stale.seconds + attempts[1]['seconds'])


# ---------------------------------------------------------------------------------------------------------------
# End to end.

def _sweep_cli(*args, cwd=REPO, **kwargs):
  env = xla_env.env(8)
  return [sys.executable, '-m', 'gpt_jax.sweep', *args], dict(cwd=cwd, env=env, **kwargs)


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory):
  """Two 2-layer runs on a small local corpus: 40 steps of 8 x 32 tokens, checkpoints every 2 steps."""
  tmp = tmp_path_factory.mktemp('sweep')
  corpus = tmp / 'corpus.jsonl'
  lines = [json.dumps({'text': f'def f_{i}(x):\n    return x * {i} + {i % 7}\n' * 3}) for i in range(400)]
  corpus.write_text('\n'.join(lines) + '\n')
  body = f'''
def get_sweep():
  return Sweep(name='e2e', config='configs/tiny.py:nano', root={str(tmp / 'runs')!r},
               shapes=[Shape(2, 16, 1), Shape(2, 32, 2)], tokens=[40 * 256], evals_per_run=2,
               overrides={{'model.context': 32, 'model.local_window': 32, 'train.batch_tokens': 256,
                          'train.log_every': 1, 'train.eval_batches': 1, 'train.sample_tokens': 0,
                          'checkpoint.every_steps': 2, 'data.source': 'files:{corpus}',
                          'data.data_dir': {str(tmp / 'data')!r}}})
'''
  return tmp, write_sweep(tmp, body)


def _wait_for(predicate, timeout=120, what=''):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.05)


def test_two_run_sweep_runs_resumes_after_a_kill_collects_and_analyses(tiny_sweep):
  tmp, path = tiny_sweep
  first = os.path.join(tmp, 'runs', 'l2-d16-h1-t10240-s0')
  command, kwargs = _sweep_cli('run', f'--sweep={path}', stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  runner = subprocess.Popen(command, **kwargs)
  checkpoints = os.path.join(first, 'checkpoints')
  _wait_for(lambda: os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)),
            what='the first checkpoint')
  checkpointed = time.time()  # the attempt began before this
  # One runner per run: status says where it runs, and a second runner leaves it alone.
  command, kwargs = _sweep_cli('status', f'--sweep={path}', capture_output=True, text=True)
  status = subprocess.run(command, **kwargs).stdout
  assert ' running ' in status and f'on {socket.gethostname()} (pid {runner.pid})' in status, status
  command, kwargs = _sweep_cli('run', f'--sweep={path}', '--only=l2-d16', capture_output=True, text=True)
  second = subprocess.run(command, **kwargs)
  assert second.returncode == 0 and f'skip   l2-d16-h1-t10240-s0: running on {socket.gethostname()} ' \
      f'(pid {runner.pid})' in second.stdout, second.stdout + second.stderr
  runner.kill()  # kill -9: the run gets SIGTERM from the kernel (parent death), saves and stops
  runner.wait()
  trained_at_least = time.time() - checkpointed
  log = os.path.join(first, 'train.log')
  _wait_for(lambda: '[preempted]' in open(log).read(), what='the orphaned run to save and stop')
  _wait_for(lambda: not attempt.read_lock(first)[1], what='the orphaned run to exit and release its lock')
  command, kwargs = _sweep_cli('status', f'--sweep={path}', capture_output=True, text=True)
  status = subprocess.run(command, **kwargs).stdout
  assert 'l2-d16-h1-t10240-s0' in status and ' partial ' in status and '1 partial, 1 pending' in status

  command, kwargs = _sweep_cli('run', f'--sweep={path}', capture_output=True, text=True)
  rerun = subprocess.run(command, **kwargs)
  assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
  assert 'start  l2-d16-h1-t10240-s0 (resuming)' in rerun.stdout
  assert 'resumed from step' in open(log).read()
  again = subprocess.run(command, **kwargs)
  assert '2 of 2 runs finished; running 0' in again.stdout
  # The killed attempt counts: recorded by the rerun from its last heartbeat.
  attempts = attempt.read_attempts(first)
  assert [a['exit_code'] for a in attempts] == [None, 0]
  assert attempts[0]['seconds'] > trained_at_least - attempt.HEARTBEAT_SECONDS

  table, curves = os.path.join(tmp, 'runs.csv'), os.path.join(tmp, 'curves.csv')
  command, kwargs = _sweep_cli('collect', f'--sweep={path}', f'--output={table}', f'--curves={curves}',
                               capture_output=True, text=True)
  assert subprocess.run(command, **kwargs).returncode == 0
  rows = list(csv.DictReader(open(table)))
  assert [r['state'] for r in rows] == ['finished', 'finished']
  assert [int(r['tokens']) for r in rows] == [10240, 10240]
  assert float(rows[0]['wall_seconds']) == pytest.approx(sum(a['seconds'] for a in attempts), abs=0.1)
  assert int(rows[0]['params_total']) < int(rows[1]['params_total'])
  assert int(rows[0]['params_non_embedding']) < int(rows[0]['params_total'])
  assert float(rows[0]['best_eval_loss']) <= float(rows[0]['final_eval_loss'])
  assert float(rows[1]['flops_6nd']) == 6 * int(rows[1]['params_total']) * 10240
  assert len(list(csv.DictReader(open(curves)))) == 4  # two evaluations per run
  again = subprocess.run(command, **kwargs)  # the tables exist now: refused, then replaced with --overwrite
  assert again.returncode == 2 and again.stderr.strip() == (
      f'error: --output={table} already exists: choose a new path, or pass --overwrite to replace it.')
  command, kwargs = _sweep_cli('collect', f'--sweep={path}', f'--output={table}', f'--curves={curves}',
                               '--overwrite', capture_output=True, text=True)
  assert subprocess.run(command, **kwargs).returncode == 0

  results = os.path.join(tmp, 'results.json')
  analysis = subprocess.run([sys.executable, '-m', 'experiments.scaling_laws.analyze', f'--table={table}',
                             f'--output={results}', '--plots='], capture_output=True, text=True, cwd=REPO)
  assert analysis.returncode == 2 and 'no finished run of a FLOP budget' in analysis.stderr  # a token sweep
  assert not os.path.exists(results)


def test_cli_errors_are_one_sentence_with_exit_2(tiny_sweep):
  _, path = tiny_sweep
  for args, message in [(('launch', f'--sweep={path}'), "unknown command 'launch'"),
                        (('status', '--sweep=nope.py'), "sweep file 'nope.py' does not exist"),
                        (('run', f'--sweep={path}', '--only=zzz'), "--only='zzz' matches no run")]:
    command, kwargs = _sweep_cli(*args, capture_output=True, text=True)
    result = subprocess.run(command, **kwargs)
    assert result.returncode == 2 and message in result.stderr and 'Traceback' not in result.stderr, result.stderr


def test_gpt3_ladder_sweep_reproduces_each_table_2_1_config():
  runs = expand(load_sweep(os.path.join(REPO, 'experiments', 'scaling_laws', 'sweep_gpt3.py')))
  sizes = ('125m', '350m', '760m', '1.3b', '2.7b', '6.7b', '13b', '175b')
  assert len(runs) == len(sizes)
  for run, size in zip(runs, sizes):
    built = gcfg.load_config_file(run.config, run.overrides)
    paper = gcfg.load_config_file(f'configs/gpt3.py:{size}')
    # The model but its remat policy, which is the run's resources' (as microbatches and mesh are).
    assert built.model.to_dict() | {'remat': None} == paper.model.to_dict() | {'remat': None}, size
    assert built.model.remat == run.resources.overrides['model.remat'] and built.mesh.fsdp == -1
    assert built.train.batch_tokens == paper.train.batch_tokens and built.optim.peak_lr == paper.optim.peak_lr
    assert built.optim.ramp_tokens == paper.optim.ramp_tokens
    assert 300e9 - paper.train.batch_tokens < built.train.total_tokens <= 300e9
    assert built.optim.warmup_tokens == 375_000_000
    assert built.optim.decay_tokens == built.train.total_tokens * 260 // 300
