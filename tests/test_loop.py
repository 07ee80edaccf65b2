"""The training loop in-process: schedule, accumulation, skips, resume == uninterrupted, mesh change, corruption."""

import dataclasses
import glob
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt_lib
from gpt_jax import config as gcfg
from gpt_jax import heads
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import optim
from gpt_jax import sharding as gs
from gpt_jax import train as train_lib
from gpt_jax.data import pipeline
from tests.helpers import SignalAt, load_lm


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('data'))


def _config(data_dir, **overrides):
  base = {'model.context': 32, 'train.batch_tokens': 16 * 32, 'train.total_tokens': 16 * 32 * 6,
          'train.log_every': 2, 'train.eval_every': 3, 'train.eval_batches': 1, 'train.sample_tokens': 0,
          'checkpoint.every_steps': 2, 'checkpoint.keep': 10, 'checkpoint.use_async': False,
          'data.data_dir': data_dir, 'optim.warmup_tokens': 1024, 'optim.decay_tokens': 4096}
  base.update(overrides)
  return gcfg.load_config_file('configs/tiny.py:nano', base)


def _params(workdir):
  return load_lm(workdir)[1]


def _assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_learning_rate_schedule_appendix_b():
  o = gcfg.load_config_file('configs/gpt3.py:125m').optim
  lr = lambda t: float(optim.learning_rate(o, t))  # noqa: E731
  assert lr(0) == 0.0
  assert lr(o.warmup_tokens / 2) == pytest.approx(o.peak_lr / 2)
  assert lr(o.warmup_tokens) == pytest.approx(o.peak_lr)
  mid = (o.warmup_tokens + o.decay_tokens) / 2
  assert lr(mid) == pytest.approx(o.peak_lr * 0.55, rel=1e-4)  # halfway down the cosine from 1.0 to 0.1
  assert lr(o.decay_tokens) == pytest.approx(0.1 * o.peak_lr, rel=1e-4)
  assert lr(300e9) == pytest.approx(0.1 * o.peak_lr, rel=1e-4)


def test_batch_ramp_is_quantized_and_reaches_full_batch():
  c = gcfg.load_config_file('configs/gpt3.py:175b')
  sizes = {optim.batch_sequences(c, t, quantum=16) for t in np.linspace(0, 13e9, 2000)}
  assert min(sizes) == 16 and max(sizes) == 1536  # 32k tokens -> 3.2M tokens
  assert len(sizes) <= 8  # a handful of compiled shapes, not one per step
  assert all(s % 16 == 0 for s in sizes)
  assert optim.batch_sequences(c, 13e9, quantum=16) == 1536


def test_weight_decay_mask_matrices_only(data_dir):
  params = gm.init_params(gm.GPTLM(_config(data_dir).model), jax.random.key(0))
  mask = optim.weight_decay_mask(params, 'matrices')
  assert mask['trunk']['blocks']['attn']['qkv']['kernel'] and mask['trunk']['wte']['embedding']
  assert not mask['trunk']['blocks']['attn']['qkv']['bias'] and not mask['trunk']['blocks']['ln_1']['scale']


def test_microbatch_accumulation_equals_one_big_batch(data_dir):
  config = _config(data_dir)
  task = train_lib.build_task(config)
  params = gm.init_params(task.module, jax.random.key(0))
  optimizer = optim.make_optimizer(config.optim, params)
  batch = jax.tree.map(jnp.asarray, task.train_stream.next_batch(16))
  results = []
  for n in (1, 4):
    train = dict(loop.init_train_state(optimizer, params, jax.random.PRNGKey(0)), sequences=jnp.int32(64))  # lr > 0
    step = jax.jit(loop.make_train_step(task.loss_fn, optimizer, config.optim, n, config.model.context))
    results.append(step(params, train, batch, {}))
  np.testing.assert_allclose(results[0][2]['loss'], results[1][2]['loss'], rtol=1e-6)
  # Adam divides by sqrt(nu), so float reassociation in near-zero gradients shows up at ~1e-6 in the update.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), results[0][0], results[1][0])


def test_non_finite_steps_are_skipped_then_stop_the_run(data_dir, tmp_path):
  config = _config(data_dir, **{'train.max_consecutive_skips': 2, 'train.total_tokens': 16 * 32 * 12})
  task = train_lib.build_task(config)
  lm_loss = task.loss_fn

  def poisoned(params, batch, rng, train, frozen):
    loss, weight, extra = lm_loss(params, batch, rng, train, frozen)
    return (loss * jnp.nan if poisoned.bad else loss), weight, extra  # read when the step is traced
  poisoned.bad = False
  workdir = str(tmp_path / 'run')
  no_eval = dict(loss_fn=poisoned, eval_batches=None, eval_extra=None)
  loop.train(config, workdir, dataclasses.replace(task, **no_eval))
  good = _params(workdir)
  poisoned.bad = True
  config.train.total_tokens *= 2
  with pytest.raises(loop.TrainingStopped, match='2 consecutive steps had a non-finite loss'):
    loop.train(config, workdir, dataclasses.replace(task, train_stream=train_lib.build_task(config).train_stream,
                                                   **no_eval))
  _assert_trees_equal(_params(workdir), good)  # skipped updates never touched the saved params


def test_resumed_equals_uninterrupted_and_restores_on_another_mesh(data_dir, tmp_path):
  config = _config(data_dir, **{'mesh.fsdp': 8})
  straight = str(tmp_path / 'straight')
  full = loop.train(config, straight, train_lib.build_task(config))
  assert full.metrics['eval_loss'] < 5.0

  half = _config(data_dir, **{'mesh.fsdp': 8, 'train.total_tokens': 16 * 32 * 3})
  resumed = str(tmp_path / 'resumed')
  loop.train(half, resumed, train_lib.build_task(half))
  loop.train(config, resumed, train_lib.build_task(config))
  _assert_trees_equal(_params(resumed), _params(straight))

  # Saved with fsdp=8, restored and continued on (2, 2, 2): same params at the restored step, then training goes on.
  other = _config(data_dir, **{'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2,
                               'train.total_tokens': 16 * 32 * 8})
  moved = str(tmp_path / 'moved')
  loop.train(half, moved, train_lib.build_task(half))
  mesh = gs.make_mesh(other.mesh)
  task = train_lib.build_task(other)
  result = loop.train(other, moved, task, mesh=mesh)
  spec = result.params['trunk']['blocks']['attn']['qkv']['kernel'].sharding.spec
  assert spec == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor', None, None)
  assert sorted(ckpt_lib.Checkpointer(moved, other.checkpoint).manager.all_steps())[-1] == 8


def test_corrupted_latest_checkpoint_is_skipped_and_kept_aside(data_dir, tmp_path):
  config = _config(data_dir)
  workdir = str(tmp_path / 'run')
  loop.train(config, workdir, train_lib.build_task(config))
  straight = _params(workdir)
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '6', 'params', '**', '*'), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 100:
      with open(path, 'r+b') as f:
        f.truncate(10)
  loop.train(config, workdir, train_lib.build_task(config))  # restores step 4, retrains steps 5 and 6
  assert glob.glob(os.path.join(workdir, 'checkpoints', '6.corrupt-*'))
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4'))
  _assert_trees_equal(_params(workdir), straight)
  # The replayed steps 5 and 6 are recorded once: the record reads as one uninterrupted run.
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [(r['step'], next(iter(r.keys() - {'step', 'tokens'})).split('/')[0]) for r in records] == [
      (2, 'train'), (3, 'eval'), (4, 'train'), (6, 'train'), (6, 'eval')]


def _split_qkv(tree):
  """The parameter layout before attn/qkv: separate query, key and value kernels (the test's legacy checkpoint)."""
  if not isinstance(tree, dict):
    return tree
  tree = {k: _split_qkv(v) for k, v in tree.items()}
  if 'qkv' in tree:
    qkv = tree.pop('qkv')
    for i, name in enumerate(('query', 'key', 'value')):
      tree[name] = {k: v[..., i, :] for k, v in qkv.items()}
  return tree


def test_checkpoint_of_an_older_layout_is_refused_not_quarantined(data_dir, tmp_path):
  config = _config(data_dir, **{'train.total_tokens': 16 * 32 * 2})
  workdir = str(tmp_path / 'run')
  loop.train(config, workdir, train_lib.build_task(config))
  checkpointer = ckpt_lib.Checkpointer(workdir, config.checkpoint)
  stored = checkpointer.manager.restore(2)
  checkpointer.save(4, _split_qkv(stored['params']), stored['train'], stored['data'], force=True)
  checkpointer.close()
  longer = _config(data_dir, **{'train.total_tokens': 16 * 32 * 6})
  with pytest.raises(gcfg.ConfigError, match='fused into one attn/qkv kernel'):
    loop.train(longer, workdir, train_lib.build_task(longer))
  with pytest.raises(gcfg.ConfigError, match='another parameter layout'):
    load_lm(workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']


def test_export_params_round_trip(data_dir, tmp_path):
  config = _config(data_dir, **{'train.total_tokens': 16 * 32 * 2})
  workdir = str(tmp_path / 'run')
  result = loop.train(config, workdir, train_lib.build_task(config))
  export = ckpt_lib.export_params(str(tmp_path / 'export'), result.params, 2, config)
  loaded_config, params, step = load_lm(export)
  assert step == 2 and loaded_config.model.d_model == config.model.d_model
  _assert_trees_equal(params, result.params)
  _assert_trees_equal(params, _params(workdir))


def test_checkpoint_of_another_config_is_refused_not_quarantined(data_dir, tmp_path):
  config = _config(data_dir, **{'train.total_tokens': 16 * 32 * 2})
  workdir = str(tmp_path / 'run')
  loop.train(config, workdir, train_lib.build_task(config), run_record={'first': True})
  record = {name: open(os.path.join(workdir, name)).read() for name in ('config.json', 'run.json')}
  wider = _config(data_dir, **{'train.total_tokens': 16 * 32 * 4, 'model.d_model': 128})
  with pytest.raises(gcfg.ConfigError, match='does not match this config'):
    loop.train(wider, workdir, train_lib.build_task(wider), run_record={'refused': True})
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2']
  # The refused run left the run's record as it was.
  assert record == {name: open(os.path.join(workdir, name)).read() for name in record}


def test_batch_that_does_not_split_over_the_mesh_is_refused(data_dir, tmp_path):
  config = _config(data_dir, **{'train.batch_tokens': 12 * 32, 'mesh.fsdp': 8})
  with pytest.raises(gcfg.ConfigError, match='12 sequences, not a multiple of the 8 batch shards'):
    loop.train(config, str(tmp_path / 'run'), train_lib.build_task(config))


class _TokenRows:
  """A stream of random token rows with no 'targets' (a row is `length` tokens) and position-only state."""

  def __init__(self, length: int, vocab: int):
    self.length, self.vocab, self.position = length, vocab, 0

  def next_batch(self, rows: int) -> dict:
    rng = np.random.default_rng(self.position)
    self.position += 1
    return {'tokens': rng.integers(0, self.vocab, (rows, self.length)).astype(np.int32)}

  def state(self) -> dict:
    return {'position': self.position}

  def restore(self, state: dict) -> None:
    self.position = state['position']


def _distillation_task(config, mesh, teacher_seed: int):
  """Distil a frozen teacher GPTLM into the trained one: a task whose batch has no targets and whose loss reads
  frozen params. Rows are 16 tokens, not model.context."""
  module = gm.GPTLM(config.model)
  shardings = gs.param_shardings(gm.abstract_variables(module)['params'], mesh)
  teacher = gm.init_params(module, jax.random.key(teacher_seed), shardings=shardings)

  def loss_fn(params, batch, rng, train, frozen):
    student = jax.nn.log_softmax(module.apply({'params': params}, batch['tokens']))
    target = jax.nn.log_softmax(module.apply({'params': frozen['teacher']}, batch['tokens']))
    kl = jnp.sum(jnp.exp(target) * (target - student), axis=-1)
    return jnp.sum(kl), jnp.float32(kl.size), {}
  length = 16
  return loop.Task(module, loss_fn, _TokenRows(length, config.model.vocab_size), tokens_per_row=length,
                   flops_per_row=length * 1e6, frozen={'teacher': teacher})


def test_a_task_without_targets_trains_with_frozen_params_as_sharded_arguments(data_dir, tmp_path):
  config = _config(data_dir, **{'mesh.fsdp': 8, 'train.total_tokens': 16 * 32 * 3})
  mesh = gs.make_mesh(config.mesh)
  task = _distillation_task(config, mesh, teacher_seed=1)
  result = loop.train(config, str(tmp_path / 'run'), task, mesh)
  # 512-token batches of 16-token rows: 32 rows a step, counted from the batch's leading axis.
  assert result.stopped == 'finished' and result.metrics['batch_tokens'] == 512
  assert result.metrics['loss'] > 0 and 0 < result.metrics['mfu']
  state = loop.setup(config, task, mesh)
  assert state.start_step == 0
  train_state = jax.device_get(state.plan.step_fn(
      jax.tree.map(jnp.copy, state.params), state.train_state,
      pipeline.make_global_batch(task.train_stream.next_batch(32), gs.batch_sharding(mesh)), task.frozen)[1])
  assert int(train_state['sequences']) == 32

  # One compiled step serves any frozen values: they are arguments, placed in their own shards.
  batch = pipeline.make_global_batch(task.train_stream.next_batch(32), gs.batch_sharding(mesh))
  as_teacher = {'teacher': jax.tree.map(jnp.copy, state.params)}
  eval_losses = [float(state.plan.eval_fn(state.params, batch, frozen)[0]) for frozen in (as_teacher, task.frozen)]
  assert abs(eval_losses[0]) < 1e-3 < eval_losses[1]
  assert state.plan.eval_fn._cache_size() == 1
  compiled = state.plan.step_fn.lower(state.plan.abstract_params, state.plan.abstract_train, batch,
                                      task.frozen).compile()
  frozen_shardings = compiled.input_shardings[0][3]
  kernel = frozen_shardings['teacher']['trunk']['blocks']['attn']['qkv']['kernel']
  assert kernel.spec == task.frozen['teacher']['trunk']['blocks']['attn']['qkv']['kernel'].sharding.spec
  assert 'fsdp' in kernel.spec


def test_plan_compiles_the_step_on_abstract_inputs(data_dir):
  config = _config(data_dir, **{'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2})
  mesh = gs.make_mesh(config.mesh)
  task = train_lib.build_task(config)
  p = loop.plan(config, task, mesh)
  rows = config.train.batch_tokens // config.model.context
  abstract_batch = {k: jax.ShapeDtypeStruct((rows, config.model.context), np.int32, sharding=gs.batch_sharding(mesh))
                    for k in ('inputs', 'targets')}
  compiled = p.step_fn.lower(p.abstract_params, p.abstract_train, abstract_batch, {}).compile()
  assert compiled.memory_analysis() is not None
  kernel = compiled.input_shardings[0][0]['trunk']['blocks']['attn']['qkv']['kernel']
  assert kernel.spec == p.abstract_params['trunk']['blocks']['attn']['qkv']['kernel'].sharding.spec


def test_load_for_inference_restores_the_model_the_caller_names(data_dir, tmp_path):
  config = _config(data_dir)
  reward = heads.RewardModel(config.model)
  params = gm.init_params(reward, jax.random.key(3))
  export = ckpt_lib.export_params(str(tmp_path / 'rm'), params, 5, config)
  mesh = gs.make_mesh(config.mesh)
  abstract = gs.abstract_params(gm.abstract_variables(reward)['params'], mesh)
  loaded, step = ckpt_lib.load_for_inference(export, abstract)
  assert step == 5
  _assert_trees_equal(loaded, params)
  assert loaded['reward_head']['Dense_0']['kernel'].sharding.mesh == mesh
  with pytest.raises(gcfg.ConfigError, match='reward_head'):
    load_lm(export)


def test_ctrl_c_saves_a_checkpoint_and_returns(data_dir, tmp_path):
  config = _config(data_dir, **{'checkpoint.every_steps': 100, 'train.eval_every': 0})
  task = train_lib.build_task(config)
  workdir = str(tmp_path / 'run')
  before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
  result = loop.train(config, workdir, dataclasses.replace(task, train_stream=SignalAt(task.train_stream, 3, signal.SIGINT)))
  assert result.stopped == 'interrupted'
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3']
  assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_skip_stop_before_any_checkpoint_says_so(data_dir, tmp_path):
  config = _config(data_dir, **{'train.max_consecutive_skips': 2, 'checkpoint.every_steps': 100})
  task = train_lib.build_task(config)
  nan_loss = lambda *args: (jnp.float32(jnp.nan), jnp.float32(1.0), {})  # noqa: E731
  with pytest.raises(loop.TrainingStopped, match='no checkpoint was saved yet: lower optim.peak_lr'):
    loop.train(config, str(tmp_path / 'run'), dataclasses.replace(task, loss_fn=nan_loss, eval_batches=None))


def test_mfu_never_exceeds_the_peak_a_busy_probe_underestimated(data_dir):
  task = train_lib.build_task(_config(data_dir))
  meter = loop._Meter(task)
  meter.peak = 1.0  # as if the start-up probe had run on a saturated host
  meter.add(16)
  metrics = meter.read({'loss': 1.0}, 16)
  assert 0 < metrics['mfu'] <= 1.0 and meter.peak > 1e6


def test_init_from_takes_another_runs_params_with_a_fresh_optimizer_and_data_order(data_dir, tmp_path):
  config = _config(data_dir, **{'train.total_tokens': 16 * 32 * 2})
  source = str(tmp_path / 'source')
  trained = loop.train(config, source, train_lib.build_task(config)).params
  new = _config(data_dir, **{'train.init_from': source, 'data.seed': 5})
  state = loop.setup(new, train_lib.build_task(new), gs.make_mesh(new.mesh))
  _assert_trees_equal(state.params, trained)
  assert state.start_step == 0 and int(state.train_state['step']) == 0
  moments = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.train_state['opt_state'])[0]
             if {'mu', 'nu'} & set(gs.path_keys(path))]
  assert moments and all(float(jnp.abs(m).max()) == 0 for m in moments)
  wider = _config(data_dir, **{'train.init_from': source, 'model.d_model': 128})
  with pytest.raises(gcfg.ConfigError, match='does not fit the model asked for'):
    loop.setup(wider, train_lib.build_task(wider), gs.make_mesh(wider.mesh))
  with pytest.raises(gcfg.ConfigError, match='does not exist'):
    train_lib.build_task(_config(data_dir, **{'train.init_from': str(tmp_path / 'nope')}))


def test_a_config_json_from_an_older_gpt_jax_loads_with_defaults(data_dir, tmp_path):
  config = _config(data_dir)
  stored = json.loads(config.to_json())
  del stored['train']['init_from']
  (tmp_path / 'config.json').write_text(json.dumps(stored))
  loaded = ckpt_lib.load_config(str(tmp_path))
  assert loaded.train.init_from == '' and loaded.model.to_dict() == config.model.to_dict()


def test_a_corrupted_checkpoint_is_reported_in_one_line_with_details_in_a_log(data_dir, tmp_path, capfd, caplog):
  config = _config(data_dir, **{'train.total_tokens': 16 * 32 * 4, 'train.eval_every': 0})
  workdir = str(tmp_path / 'run')
  loop.train(config, workdir, train_lib.build_task(config))
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '4', 'params', 'ocdbt.process_0', 'd', '*')):
    with open(path, 'r+b') as f:
      f.truncate(10)  # array data only: the restore fails inside tensorstore's background reads
  capfd.readouterr()
  loop.train(config, workdir, train_lib.build_task(config))
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Event loop' not in err and 'Exception ignored' not in err, err[-3000:]
  assert [r.getMessage().count('cannot be restored') for r in caplog.records if 'restored' in r.getMessage()] == [1]
  logs = glob.glob(os.path.join(workdir, 'checkpoints', '4.corrupt-*.log'))
  assert len(logs) == 1 and 'Encountered error while reading array' in open(logs[0]).read()
  # When no step can be read, none is moved and the run does not start over from step 0.
  for step in ('2', '4'):
    for path in glob.glob(os.path.join(workdir, 'checkpoints', step, 'params', 'ocdbt.process_0', 'd', '*')):
      with open(path, 'r+b') as f:
        f.truncate(10)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(gcfg.ConfigError, match='no checkpoint in .* could be restored .* nothing was moved'):
    loop.train(config, workdir, train_lib.build_task(config))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before



@pytest.mark.parametrize('lm_loss', [True, False])
def test_perplexity_is_reported_for_a_language_modelling_loss_only(lm_loss):
  mesh = gs.single_device_mesh()
  task = loop.Task(module=None, loss_fn=None, train_stream=None, tokens_per_row=1, flops_per_row=1.0,
                   eval_batches=lambda: [{'x': np.zeros((2, 1), np.int32)}], lm_loss=lm_loss)
  result = loop.evaluate(lambda params, batch, frozen: (np.float32(1.5), np.float32(1.0), {}), None, task, mesh)
  assert ('perplexity' in result) == lm_loss and result['loss'] == 1.5
