"""The training loop in-process: schedule, accumulation, skips, resume == uninterrupted, mesh change, corruption."""

import dataclasses
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt_jax import checkpoint as ckpt_lib
from gpt_jax import config as gcfg
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import optim
from gpt_jax import sharding as gs
from gpt_jax import train as train_lib
from tests.helpers import load_lm


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
  loop.train(config, workdir, train_lib.build_task(config))
  wider = _config(data_dir, **{'train.total_tokens': 16 * 32 * 4, 'model.d_model': 128})
  with pytest.raises(gcfg.ConfigError, match='does not match this config'):
    loop.train(wider, workdir, train_lib.build_task(wider))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2']


def test_batch_that_does_not_split_over_the_mesh_is_refused(data_dir, tmp_path):
  config = _config(data_dir, **{'train.batch_tokens': 12 * 32, 'mesh.fsdp': 8})
  with pytest.raises(gcfg.ConfigError, match='12 sequences, not a multiple of the 8 batch shards'):
    loop.train(config, str(tmp_path / 'run'), train_lib.build_task(config))
