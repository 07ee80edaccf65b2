"""Orbax checkpoints of the training state and the data-iterator state; resume, corruption recovery, export.

A checkpoint step holds three items: 'params', 'train' (optimizer state, step, tokens seen, RNG, skip counters)
and 'data' (the iterator's JSON state), so inference and fine-tuning can read params alone. The run's config is
written once as <workdir>/config.json. Orbax writes each step into a temporary directory and renames it when
complete, so a kill -9 never leaves a step that looks finished. Before a step is restored, the paths and shapes
it stores are compared with the ones asked for: a step written for another model (another config, or an older
parameter layout) is refused with one sentence, never mistaken for corruption. A step that fits but fails to
restore (corrupted on disk) is moved aside to <step>.corrupt and the one before it is used. Good checkpoints are
only ever deleted by the keep policy (last `keep`, plus every `keep_every`-th step).
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import sys
import tempfile
import time
import traceback

import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from etils import epath

from gpt_jax import config as gcfg
from gpt_jax.fd_stderr import captured_stderr
from gpt_jax import sharding as gs

CONFIG_FILE = 'config.json'
RUN_FILE = 'run.json'
# What orbax says when a checkpoint is intact but has another structure or shapes than the state asked for; a
# second line of defence behind the metadata comparison (difference()), so that such a step is never quarantined.
_MISMATCH_MARKERS = ('Structure mismatch', 'not compatible', 'Requested shape', 'Dict key mismatch',
                     'do not match')
_HANDLERS = {'params': ocp.StandardCheckpointHandler, 'train': ocp.StandardCheckpointHandler,
             'data': ocp.JsonCheckpointHandler}


def _item_handlers() -> dict:
  return {name: handler() for name, handler in _HANDLERS.items()}


def _leaf_shapes(tree) -> dict[str, tuple[int, ...]]:
  return {'/'.join(gs.path_keys(path)): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def difference(stored, expected) -> str | None:
  """The first difference between a checkpoint item's stored tree (orbax metadata) and the tree asked for, in
  words, or None when every path and shape agrees."""
  have, want = _leaf_shapes(stored), _leaf_shapes(expected)
  if extra := sorted(have.keys() - want.keys()):
    note = ('; attn/query, key and value have since been fused into one attn/qkv kernel'
            if any('/attn/query/' in key for key in extra) else '')
    return f'it stores {extra[0]}, which this model does not have{note}'
  if missing := sorted(want.keys() - have.keys()):
    return f'it lacks {missing[0]}'
  for key in sorted(want):
    if have[key] != want[key]:
      return f'{key} has shape {have[key]} there and {want[key]} here'
  return None


def _stored_difference(manager, step: int, expected: dict) -> str | None:
  """difference() of each item in expected ({name: tree}) against what step stores, or None. Metadata that cannot
  be read counts as no difference: such a step is corrupt, and the failed restore that follows deals with it."""
  try:
    stored = manager.item_metadata(step)
    items = [(stored[name], tree) for name, tree in expected.items()]
  except Exception:  # noqa: BLE001 -- unreadable metadata, see above
    return None
  for have, want in items:
    if have is not None and (mismatch := difference(have, want)):
      return mismatch
  return None


def absolute(path: str) -> epath.Path:
  """orbax wants absolute paths; URLs such as gs://bucket/run are left as they are."""
  return epath.Path(path if '://' in str(path) else os.path.abspath(path))


class Checkpointer:
  """CheckpointManager for <workdir>/checkpoints with the config's keep policy. The directory is created by the
  first save, so a run refused at start-up (a wrong init_from, say) leaves no empty folder behind."""

  def __init__(self, workdir: str, ckpt_config):
    self.directory = absolute(workdir) / 'checkpoints'
    options = ocp.CheckpointManagerOptions(
        max_to_keep=ckpt_config.keep, keep_period=ckpt_config.keep_every or None, create=False,
        enable_async_checkpointing=ckpt_config.use_async, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=_item_handlers())

  def save(self, step: int, params, train_state, data_state: dict, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(train_state),
        data=ocp.args.JsonSave(data_state)), force=force)

  def restore_latest(self, abstract_params, abstract_train):
    """(params, train_state, data_state, step) of the newest checkpoint that restores, or None if there is none."""
    def refuse(step, mismatch):
      raise gcfg.ConfigError(
          f'checkpoint step {step} in {self.directory} does not match this config ({mismatch}): resume with the '
          f'config (and gpt_jax version) it was written with ({self.directory.parent / CONFIG_FILE}) or use a new '
          f'--workdir.')
    found = restore_newest(
        self.manager, {'params': abstract_params, 'train': abstract_train}, refuse, quarantine=True,
        extra={'data': ocp.args.JsonRestore()})
    if found is None:
      return None
    restored, step = found
    return restored['params'], restored['train'], restored['data'], step

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def save_config(workdir: str, config: ml_collections.ConfigDict, run_record: dict | None = None) -> None:
  """Writes <workdir>/config.json (and run.json: how and where the run was started, when given)."""
  if jax.process_index() == 0:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.to_json(indent=2))
    if run_record is not None:
      (path / RUN_FILE).write_text(json.dumps(run_record, indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The validated config.json of a run or export directory. Fields it lacks (it was written by an older gpt_jax)
  take their defaults; fields it holds under their old names are moved to their new places (gcfg.migrate)."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise gcfg.ConfigError(f'{path} does not exist: pass a run directory written by gpt_jax.train or an '
                           f'export_params directory.')
  config = gcfg.default_config()
  config.update(ml_collections.ConfigDict(gcfg.migrate(json.loads(path.read_text()))))
  return gcfg.validate(config)


def export_params(export_dir: str, params, step: int, config) -> str:
  """Writes a params-only checkpoint (plus config.json and the step) for sampling, fine-tuning and RM init."""
  path = absolute(export_dir)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path / 'params', params, force=True)
  if jax.process_index() == 0:
    (path / CONFIG_FILE).write_text(config.to_json(indent=2))
    (path / 'step').write_text(str(step))
  return str(path)


def load_for_inference(path: str, abstract_params, item: str = 'params', step: int | None = None):
  """(params, step) from a training workdir (its newest restorable checkpoint, or the given step) or an
  export_params directory.

  The caller says what it restores: abstract_params are the model's params as sharded ShapeDtypeStructs
  (sharding.abstract_params), so the same call loads an LM, a reward model or a policy with a value head, each
  straight into its shards; `item` names the checkpoint item holding them. A layout that differs is refused.
  """
  path = absolute(path)
  if (path / item).exists():
    with ocp.StandardCheckpointer() as checkpointer:
      stored = checkpointer.metadata(path / item).item_metadata
      if mismatch := difference(stored, abstract_params):
        raise gcfg.ConfigError(wrong_model(path, f'the exported {item} in {path}', mismatch, stored, abstract_params))
      return checkpointer.restore(path / item, abstract_params), int((path / 'step').read_text())
  options = ocp.CheckpointManagerOptions(create=False, save_interval_steps=0)
  with ocp.CheckpointManager(path / 'checkpoints', options=options, item_handlers=_item_handlers()) as manager:

    def refuse(step: int, mismatch: str):
      try:
        stored = manager.item_metadata(step)[item]
      except Exception:  # noqa: BLE001 -- unreadable metadata: the kind is unknown, the mismatch still says why
        stored = None
      raise gcfg.ConfigError(wrong_model(path, f'checkpoint step {step} in {path / "checkpoints"}', mismatch, stored,
                                         abstract_params))
    if step is not None and step not in manager.all_steps():
      raise gcfg.ConfigError(f'no checkpoint step {step} under {path / "checkpoints"}: it holds steps '
                             f'{sorted(manager.all_steps())}.')
    found = restore_newest(manager, {item: abstract_params}, refuse, quarantine=False, only_step=step)
  if found is None:
    raise gcfg.ConfigError(f'no restorable checkpoint under {path / "checkpoints"}: train first or pass an export '
                           f'dir.')
  restored, step = found
  return restored[item], step


# The params subtree that tells what a model is, most telling first (a reward model and a classifier have a trunk
# too), and what to pass instead of a run holding it where a language model is wanted.
_MODEL_KINDS = (
    ('policy', "a PPO run's policy and value network",
     "pass {path}/policy instead: the policy alone, exported by the PPO run as a language model"),
    ('reward_head', 'a reward model',
     'it scores responses (python -m gpt_jax.rlhf.reward score --workdir={path}) and does not generate text: pass '
     'a language model (a pretraining, SFT or DPO run, or a PPO run\'s policy folder)'),
    ('cls_head', 'a classifier', 'pass a language model (a pretraining, SFT or DPO run, or a PPO run\'s policy '
     'folder)'),
    ('trunk', 'a language model', ''),
)


def _model_kind(tree) -> tuple[str, str]:
  """(what the model is, what to pass instead where a language model is wanted) from its params' top-level names."""
  names = {key.split('/')[0] for key in _leaf_shapes(tree)}
  return next(((kind, instead) for name, kind, instead in _MODEL_KINDS if name in names), ('an unknown model', ''))


def _written_by(path: epath.Path) -> str:
  """' (written by <module>)' from the run.json of a training run (the command it was started with), else ''."""
  try:
    script = json.loads((path / RUN_FILE).read_text())['argv'][0]
  except Exception:  # noqa: BLE001 -- an export, or a run.json from elsewhere: the params tell the kind alone
    return ''
  parts = os.path.normpath(os.path.splitext(script)[0]).split(os.sep)
  if 'gpt_jax' not in parts:
    return ''
  module = parts[len(parts) - 1 - parts[::-1].index('gpt_jax'):]
  return f' (written by {".".join(module[:-1] if module[-1] == "__main__" else module)})'


def wrong_model(path: epath.Path, where: str, mismatch: str, stored, wanted) -> str:
  """The sentence refusing a checkpoint whose params (stored) do not fit the model asked for (wanted): what the
  run holds, from its params and its run.json, and what to pass instead."""
  have, instead = _model_kind(stored)
  want, _ = _model_kind(wanted)
  if have != want and have != 'an unknown model':
    advice = instead.format(path=path) if want == 'a language model' and instead else f'pass a run holding {want}'
    return f'{path} holds {have}{_written_by(path)}, not {want} as asked for here ({mismatch}); {advice}.'
  return (f'{where} does not fit the model asked for ({mismatch}): it holds {have} of another size (its config is '
          f'{path / CONFIG_FILE}) or another parameter layout (an older gpt_jax); load it with its own config, or '
          f'train or export it again.')


def restore_newest(manager, expected: dict, refuse, *, quarantine: bool, extra: dict | None = None,
                   only_step: int | None = None):
  """(restored items, step) of the newest step in manager that restores (only_step: that step alone), or None
  when there is no step.

  expected: {item: abstract tree} restored with StandardRestore (plus `extra` restore args as they are). Before
  each step is read, its stored paths and shapes are compared with expected; a difference calls
  refuse(step, reason), which raises. A step that fits but fails to restore counts as corrupt only once an older
  step restores: then, with quarantine (training's own workdir), the newer ones are moved aside to
  <step>.corrupt-<time>, their details in <step>.corrupt-<time>.log. When steps exist and none restores (out of
  memory, an unreachable filesystem), nothing is moved and a ConfigError says so: a run never restarts from step 0
  over checkpoints it could not read.
  """
  args = {name: ocp.args.StandardRestore(tree) for name, tree in expected.items()} | (extra or {})
  failed = []  # (step, details) of newer steps that did not restore
  for step in sorted(manager.all_steps(), reverse=True) if only_step is None else [only_step]:
    if mismatch := _stored_difference(manager, step, expected):
      refuse(step, mismatch)
    captured = io.StringIO()
    with captured_stderr(captured):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
      except Exception as error:  # noqa: BLE001 -- classified below
        restored, message = None, str(error) or type(error).__name__
        details = ''.join(traceback.format_exception(error))
      if restored is None:
        # The failed restore leaves background reads behind that print hundreds of lines of asyncio tracebacks
        # as they fail and are collected (once `error` is gone): wait for them while stderr is still captured.
        gc.collect()
        time.sleep(1.0)
        gc.collect()
    if restored is not None:
      sys.stderr.write(captured.getvalue())  # whatever a good restore printed is the user's to see
      _set_aside(manager, failed, quarantine)
      return restored, step
    first_line = message.splitlines()[0].split(' See full')[0][:300]
    if any(marker in message for marker in _MISMATCH_MARKERS):
      refuse(step, first_line)  # readable but shaped differently: not corrupt
    failed.append((step, first_line, details + '\n' + captured.getvalue()))
  if failed:
    raise gcfg.ConfigError(
        f'no checkpoint in {manager.directory} could be restored (step {failed[0][0]}: {failed[0][1]}); nothing was '
        f'moved: check memory and the filesystem and rerun, or, if they are corrupt, move them away yourself.')
  return None


def _set_aside(manager, failed: list, quarantine: bool) -> None:
  """Reports (and, with quarantine, moves aside) the newer steps that failed where an older one restored."""
  for step, first_line, text in failed:
    corrupt = manager.directory / f'{step}.corrupt-{int(time.time())}'
    log = _write_log(epath.Path(f'{corrupt}.log') if quarantine else None, step, manager.directory, text)
    logging.warning('checkpoint step %d in %s cannot be restored (%s); used the one before it (details: %s).',
                    step, manager.directory, first_line, log)
    if quarantine:
      if jax.process_index() == 0:
        (manager.directory / str(step)).rename(corrupt)
      multihost_utils.sync_global_devices(f'quarantined checkpoint {step}')
  if failed and quarantine:
    manager.reload()




def _write_log(path, step: int, directory, text: str) -> str:
  """Writes a failed restore's details to path (process 0; default: a local temporary file); returns the path."""
  if path is None:
    handle, path = tempfile.mkstemp(prefix=f'gpt_jax-restore-step{step}-', suffix='.log')
    os.close(handle)
    path = epath.Path(path)
  if jax.process_index() == 0:
    path.write_text(f'checkpoint step {step} in {directory} could not be restored\n\n{text}')
  return str(path)
