"""The generic training loop: setup (sharded state, restore, jitted step and eval) and run (batches, metrics,
evaluation, checkpoints, preemption, skip-stop).

It knows nothing about language modelling: a `Task` supplies the module, a loss function, the batches and what a
row is worth (tokens and model FLOPs), so pretraining (train.py), fine-tuning, reward modelling and DPO reuse it
unchanged. A task with an update of its own (PPO: rollout, advantages, epochs x minibatches) plugs in through the
one seam of `train` / `run`: an update function `(params, train, batch) -> (params, train, metrics)` and hooks
called every N steps (the KL controller, a sample table), in the manner of Levanter's trainer hooks; the
non-finite stop, checkpoint bookkeeping, preemption, evaluation and the throughput meter stay here, once.

    plan:  task -> mesh + rules -> abstract state (eval_shape) -> shardings -> jitted step and eval (no allocation)
    setup: plan -> state created sharded, or restored from the newest good checkpoint
    run:   per-host batches -> global jax.Array -> update (jit, donated state) -> hooks -> metrics; async checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from gpt_jax import checkpoint as ckpt_lib
from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import metrics as metrics_lib
from gpt_jax import model as gm
from gpt_jax import optim
from gpt_jax import runlock
from gpt_jax import sharding as gs
from gpt_jax.data import pipeline
from gpt_jax.losses import LossFn


class TrainingStopped(RuntimeError):
  """Raised when training cannot continue (e.g. too many consecutive non-finite steps); the message says why."""


@dataclasses.dataclass
class Task:
  """What the loop trains.

  module: the Flax module whose params are trained (used for init, shapes and logical sharding).
  loss_fn: see losses.LossFn.
  train_stream: next_batch(global rows) -> this host's rows (a dict of arrays, rows on the leading axis);
    state() / restore(state) for exact resume.
  tokens_per_row: tokens one row holds, for the token-based schedules, batch size and throughput.
  flops_per_row: model FLOPs of one training row (forward and backward), for MFU.
  eval_batches: () -> list of this host's validation batches, or None for no evaluation.
  eval_extra: optional {'loss': ...} -> more validation metrics (bits per byte for a language model).
  init_params: optional (rng, shardings) -> params, e.g. a pretrained trunk under new heads; it is called outside
    sharding.activation_context, so one that runs the model enters that context itself.
  frozen: params the loss reads but does not train (a reference policy, a reward model), already placed on the
    mesh; they enter the jitted step as sharded arguments, never as constants. {} for pretraining.
  lm_loss: whether the loss is a language-modelling loss (then evaluation reports its perplexity too).
  eval_at_start: evaluate the starting params before the first step (a baseline the run is compared with).
  """
  module: nn.Module
  loss_fn: LossFn
  train_stream: Any
  tokens_per_row: int
  flops_per_row: float
  eval_batches: Callable[[], list] | None = None
  eval_extra: Callable[[dict], dict] | None = None
  init_params: Callable[[jax.Array, Any], Any] | None = None
  frozen: Any = dataclasses.field(default_factory=dict)
  lm_loss: bool = True
  eval_at_start: bool = False


Update = Callable[[Any, dict, dict], tuple]  # (params, train, global batch) -> (params, train, metrics)


class StepInfo(NamedTuple):
  """What a hook sees after a step: metrics are the update's, still on the device (fetch only what is needed,
  with sharding.to_host); writer is the run's MetricWriter."""
  step: int
  params: Any
  train_state: dict
  metrics: dict
  writer: Any


class Hook(NamedTuple):
  """fn(StepInfo) after every `every`-th step and after the last one, before that step's checkpoint is saved, so
  a hook may change the data state it holds (a KL controller's beta) and have it saved with the step."""
  every: int
  fn: Callable[[StepInfo], None]


@dataclasses.dataclass
class Plan:
  """The compiled-program side of training, with nothing allocated: what the dry-run lowers and setup fills."""
  mesh: Any
  optimizer: optax.GradientTransformation
  abstract_params: Any  # sharded ShapeDtypeStructs
  abstract_train: Any  # sharded ShapeDtypeStructs of init_train_state's dict
  step_fn: Callable  # jitted (params, train, batch, frozen) -> (params, train, metrics), donating params and train
  eval_fn: Callable  # jitted (params, batch, frozen) -> (summed loss, summed weight, summed extras)
  rows_quantum: int  # a global batch is a multiple of this many rows (batch shards x microbatches)


@dataclasses.dataclass
class State:
  """A plan with its state in memory: params and train state, sharded, and the step they belong to."""
  plan: Plan
  params: Any
  train_state: dict
  start_step: int


@dataclasses.dataclass
class Result:
  """What train() returns: the final params, the last logged metrics (with eval_* when evaluated), the step they
  belong to and why it stopped: 'finished' (the token budget is spent), 'preempted' (SIGTERM) or 'interrupted'
  (Ctrl-C); a checkpoint of the last step was saved in every case."""
  params: Any
  metrics: dict
  stopped: str
  step: int


def _split_microbatches(batch: dict, n: int) -> dict:
  # Row r goes to microbatch r % n: every device's contiguous block of rows feeds every microbatch evenly.
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1), batch)


def make_train_step(loss_fn: LossFn, optimizer, optim_config, microbatches: int, tokens_per_row: int):
  """train_step(params, train, batch, frozen) -> (params, train, metrics); skips non-finite updates."""

  def train_step(params, train, batch, frozen):
    rng, step_rng = jax.random.split(train['rng'])

    def grad_fn(mb, index):
      def summed_loss(p):
        loss, weight, extra = loss_fn(p, mb, jax.random.fold_in(step_rng, index), True, frozen)
        return loss, (weight, extra)
      (loss, (weight, extra)), grads = jax.value_and_grad(summed_loss, has_aux=True)(params)
      return grads, loss, weight, extra

    if microbatches == 1:
      grads, loss_sum, weight, extra = grad_fn(batch, 0)
    else:
      micro = _split_microbatches(batch, microbatches)
      zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32),
                           jax.eval_shape(grad_fn, jax.tree.map(lambda x: x[0], micro), 0))
      add = lambda carry, inputs: (jax.tree.map(jnp.add, carry, grad_fn(*inputs[::-1])), None)  # noqa: E731
      (grads, loss_sum, weight, extra), _ = jax.lax.scan(add, zeros, (jnp.arange(microbatches), micro))
    weight = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    loss = loss_sum / weight
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    lr = optim.learning_rate(optim_config, train['sequences'].astype(jnp.float32) * tokens_per_row)
    opt_state = with_learning_rate(train['opt_state'], lr)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    # A non-finite step keeps the old params and optimizer state (selected, not recomputed).
    new_params, new_opt_state = jax.lax.cond(
        finite, lambda: (optax.apply_updates(params, updates), new_opt_state), lambda: (params, opt_state))
    rows = jax.tree.leaves(batch)[0].shape[0]
    new_train = count_skips(dict(train, opt_state=new_opt_state, step=train['step'] + 1,
                                 sequences=train['sequences'] + rows, rng=rng), finite)
    metrics = dict(loss=loss, grad_norm=grad_norm, learning_rate=lr, skipped=new_train['total_skips'],
                   **extra_means(extra, weight))
    return new_params, new_train, metrics
  return train_step


def with_learning_rate(opt_state, lr):
  """opt_state (optax.inject_hyperparams') with the schedule's learning rate for this step."""
  return opt_state._replace(hyperparams=dict(opt_state.hyperparams, learning_rate=lr))


def count_skips(train: dict, finite) -> dict:
  """train's skip counters after a step that was (finite) or was not (skipped) applied."""
  consecutive = jnp.where(finite, 0, train['consecutive_skips'] + 1)
  return dict(train, consecutive_skips=consecutive, longest_skip_run=jnp.maximum(train['longest_skip_run'],
                                                                                   consecutive),
              total_skips=train['total_skips'] + (~finite).astype(jnp.int32))


def init_train_state(optimizer, params, rng) -> dict:
  """Everything but params that a checkpoint must hold to resume exactly (rng: a raw uint32 PRNG key).
  'sequences' counts the rows trained on, whatever a row is for the task."""
  counters = ('step', 'sequences', 'consecutive_skips', 'longest_skip_run', 'total_skips')
  # One array per counter: the state is donated, and a buffer may be donated only once.
  return dict(opt_state=optimizer.init(params), rng=rng, **{name: jnp.zeros((), jnp.int32) for name in counters})


def extra_means(extra: dict, weight):
  """A loss function's summed extra metrics as means: a value is divided by the loss weight, a (sum, count) pair
  by its own count (e.g. pairwise accuracy over pairs when the loss weighs prompts)."""
  return {name: value[0] / jnp.maximum(value[1], 1) if isinstance(value, tuple) else value / weight
          for name, value in extra.items()}


def make_eval_step(loss_fn: LossFn):
  def eval_step(params, batch, frozen):
    loss_sum, weight, extra = loss_fn(params, batch, jax.random.PRNGKey(0), False, frozen)
    return loss_sum, weight, extra
  return eval_step


def cached(make: Callable[[], list] | None) -> Callable[[], list] | None:
  """task.eval_batches from make: make() is called once, on first use (None stays None)."""
  if make is None:
    return None
  batches = []

  def once():
    if not batches:
      batches.extend(make())
    return batches
  return once


def load_params(path: str, module, mesh_or_shardings):
  """module's params from a run (its newest good checkpoint) or an export, placed on a mesh by the rules table or
  with the given shardings."""
  boxed = gm.abstract_variables(module)['params']
  abstract = (gs.abstract_params(boxed, mesh_or_shardings) if isinstance(mesh_or_shardings, jax.sharding.Mesh)
              else gs.with_shardings(nn.unbox(boxed), mesh_or_shardings))
  return ckpt_lib.load_for_inference(path, abstract)


def params_from(path: str, module):
  """init_params for a Task that starts from another run's (or export's) params: only the params are taken; the
  optimizer, step and data order start afresh. A checkpoint of another shape is refused in one sentence."""
  ckpt_lib.load_config(path)  # fails now, in one sentence, if path is not a run or export directory

  def init_params(rng, shardings):
    del rng
    params, step = load_params(path, module, shardings)
    if jax.process_index() == 0:
      print(f'initialised from {path} (step {step})', flush=True)
    return params
  return init_params


def plan(config, task: Task, mesh) -> Plan:
  """Shardings, optimizer and the jitted step and eval for task on mesh; allocates nothing. A global batch that
  does not split over the mesh's batch shards and the microbatches is refused here, before any state exists."""
  t_cfg = config.train
  quantum = gs.batch_shards(mesh) * t_cfg.microbatches
  rows = t_cfg.batch_tokens // task.tokens_per_row
  if rows < 1 or t_cfg.batch_tokens % task.tokens_per_row:
    raise gcfg.ConfigError(
        f'train.batch_tokens={t_cfg.batch_tokens} is not a whole number of this task\'s {task.tokens_per_row}-token '
        f'rows: make it a positive multiple of {task.tokens_per_row}.')
  if rows % quantum:
    raise gcfg.ConfigError(
        f'train.batch_tokens={t_cfg.batch_tokens} is {rows} sequences, not a multiple of the {gs.batch_shards(mesh)} '
        f'batch shards (mesh data x fsdp) x {t_cfg.microbatches} microbatches: change train.batch_tokens, '
        f'train.microbatches or the mesh.')
  boxed = gm.abstract_variables(task.module)['params']
  param_sh = gs.param_shardings(boxed, mesh)
  abstract_params = gs.with_shardings(nn.unbox(boxed), param_sh)
  optimizer = optim.make_optimizer(config.optim, abstract_params)
  abstract_train = jax.eval_shape(functools.partial(init_train_state, optimizer), abstract_params,
                                  jax.random.PRNGKey(0))
  train_sh = gs.state_shardings(abstract_train, abstract_params, param_sh, mesh)
  frozen_sh = jax.tree.map(lambda x: x.sharding, task.frozen)
  batch_sh = gs.batch_sharding(mesh)
  step_fn = jax.jit(make_train_step(task.loss_fn, optimizer, config.optim, t_cfg.microbatches, task.tokens_per_row),
                    in_shardings=(param_sh, train_sh, batch_sh, frozen_sh), out_shardings=(param_sh, train_sh, None),
                    donate_argnums=(0, 1))
  eval_fn = jax.jit(make_eval_step(task.loss_fn), in_shardings=(param_sh, batch_sh, frozen_sh))
  return Plan(mesh, optimizer, abstract_params, gs.with_shardings(abstract_train, train_sh), step_fn, eval_fn,
              quantum)


def setup(config, task: Task, mesh, checkpointer: ckpt_lib.Checkpointer | None = None,
          p: Plan | None = None) -> State:
  """plan() (or the given one) plus the state: restored from checkpointer's newest good step (the data stream moved
  to its position), else initialised sharded from config.train.seed (or task.init_params)."""
  p = p or plan(config, task, mesh)
  restored = checkpointer.restore_latest(p.abstract_params, p.abstract_train) if checkpointer else None
  if restored is not None:
    params, train_state, data_state, start_step = restored
    task.train_stream.restore(data_state)
    return State(p, params, train_state, start_step)
  param_sh = jax.tree.map(lambda x: x.sharding, p.abstract_params)
  train_sh = jax.tree.map(lambda x: x.sharding, p.abstract_train)
  rng_init, rng_train = jax.random.split(jax.random.PRNGKey(config.train.seed))
  if task.init_params is not None:
    params = task.init_params(rng_init, param_sh)  # outside the activation context: restores run no model code
  with gs.activation_context(mesh):
    if task.init_params is None:
      params = gm.init_params(task.module, rng_init, shardings=param_sh)
    train_state = jax.jit(functools.partial(init_train_state, p.optimizer), out_shardings=train_sh)(params, rng_train)
  return State(p, params, train_state, 0)


class Preemption:
  """Turns SIGTERM (preemption) and a first Ctrl-C (SIGINT) into a flag checked between steps (agreed on by all
  processes), so a checkpoint is saved before the run ends; a second Ctrl-C exits at once, without saving."""

  def __init__(self):
    self.signal_name = None
    self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.signal_name == 'SIGINT':
      print('second Ctrl-C: exiting now, without saving.', file=sys.stderr, flush=True)
      os._exit(130)
    self.signal_name = self.signal_name or signal.Signals(signum).name
    if signum == signal.SIGINT:
      print('Ctrl-C: saving a checkpoint after this step (Ctrl-C again to exit without saving).', file=sys.stderr,
            flush=True)

  def should_stop(self, step: int, every: int) -> bool:
    if jax.process_count() == 1:
      return self.signal_name is not None
    # All processes must agree on the step to save at; a collective every step would stall the input pipeline.
    if step % every:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.array(self.signal_name is not None))))

  def restore(self):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


def train(config, workdir: str, task: Task, mesh=None, run_record: dict | None = None,
          make_update: Callable[[Plan], Update] | None = None, hooks: Sequence[Hook] = ()) -> Result:
  """Trains until config.train.total_tokens, resuming from <workdir>/checkpoints. The run's config.json (and
  run.json with run_record) are written only once the restore, if any, has accepted this config. Process 0 holds
  the workdir's lock (runlock) from before the restore to the end: a second run on the same workdir is refused.
  make_update(plan) -> the update to run instead of the task's train step; hooks: see Hook."""
  mesh = mesh or gs.make_mesh(config.mesh)
  p = plan(config, task, mesh)  # refuses a bad batch before anything exists in the workdir
  with runlock.hold(workdir):  # a second run on this workdir is refused here, before the restore
    checkpointer = ckpt_lib.Checkpointer(workdir, config.checkpoint)
    try:
      state = setup(config, task, mesh, checkpointer, p)
      ckpt_lib.save_config(workdir, config, run_record)
      writer = metrics_lib.MetricWriter(workdir, config.train.total_tokens, config, config.train.wandb,
                                        resume_step=state.start_step)
      try:
        return run(config, task, state, checkpointer, writer, make_update(p) if make_update else None, hooks)
      finally:
        writer.close()
    finally:
      checkpointer.wait()
      checkpointer.close()


def run(config, task: Task, state: State, checkpointer: ckpt_lib.Checkpointer, writer, update: Update | None = None,
        hooks: Sequence[Hook] = ()) -> Result:
  """Steps state with update (the task's train step by default) until the token budget is spent or SIGTERM: calls
  the hooks, logs, evaluates, saves, and stops after too many consecutive non-finite steps (TrainingStopped)."""
  p, t_cfg, ckpt_every = state.plan, config.train, config.checkpoint.every_steps
  update = update or (lambda params, train, batch: p.step_fn(params, train, batch, task.frozen))
  params, train_state, step = state.params, state.train_state, state.start_step
  _announce(config, p, state, checkpointer, writer)
  tokens = int(jax.device_get(train_state['sequences'])) * task.tokens_per_row
  meter, last, evaluated = _Meter(task), {}, None
  if tokens >= t_cfg.total_tokens:
    writer.text(step, 'finished', f'the run already finished at step {step}: raise train.total_tokens to go on.')
    return Result(params, {}, 'finished', step)
  preemption = Preemption()
  try:
    with gs.activation_context(p.mesh):
      if task.eval_batches is not None and task.eval_at_start and step == 0:
        evaluated = _evaluate_and_write(p, params, task, writer, step, tokens)
        meter.restart()
      while tokens < t_cfg.total_tokens:
        rows = optim.batch_sequences(config, tokens, p.rows_quantum, task.tokens_per_row)
        batch = pipeline.make_global_batch(task.train_stream.next_batch(rows), gs.batch_sharding(p.mesh))
        params, train_state, step_metrics = update(params, train_state, batch)
        step, tokens = step + 1, tokens + rows * task.tokens_per_row
        meter.add(rows)
        for hook in hooks:
          if step % hook.every == 0 or tokens >= t_cfg.total_tokens:
            hook.fn(StepInfo(step, params, train_state, step_metrics, writer))
        if step % t_cfg.log_every == 0 or tokens >= t_cfg.total_tokens:
          last = meter.read(gs.to_host(step_metrics), rows)
          writer.write(step, last, tokens)
          _stop_after_skips(config, train_state, step, checkpointer)
        saved = step % ckpt_every == 0 and checkpointer.save(step, params, train_state, task.train_stream.state())
        if task.eval_batches is not None and t_cfg.eval_every and step % t_cfg.eval_every == 0:
          evaluated = _evaluate_and_write(p, params, task, writer, step, tokens)
          meter.restart()  # evaluation time is not training throughput
        if preemption.should_stop(step, t_cfg.log_every):
          if not saved:
            checkpointer.save(step, params, train_state, task.train_stream.state(), force=True)
          checkpointer.wait()
          how = 'Ctrl-C (SIGINT)' if preemption.signal_name == 'SIGINT' else 'SIGTERM'
          writer.text(step, 'preempted', f'{how}: saved step {step}; rerun the same command to resume.')
          stopped = 'interrupted' if preemption.signal_name == 'SIGINT' else 'preempted'
          return Result(params, last, stopped, step)
      if step not in checkpointer.manager.all_steps():
        checkpointer.save(step, params, train_state, task.train_stream.state(), force=True)
      if task.eval_batches is not None:
        if evaluated is None or evaluated[0] != step:
          evaluated = _evaluate_and_write(p, params, task, writer, step, tokens)
        last.update({f'eval_{k}': v for k, v in evaluated[1].items()})
    checkpointer.wait()
    return Result(params, last, 'finished', step)
  finally:
    preemption.restore()


def _announce(config, p: Plan, state: State, checkpointer, writer) -> None:
  peak, peak_source = flops.total_peak_flops()
  if jax.process_index() == 0:
    print(f'mesh {dict(p.mesh.shape)} | {flops.count_params_abstract(p.abstract_params):,} params | peak '
          f'{peak:.3g} FLOP/s ({peak_source})', flush=True)
    if warning := optim.schedule_warning(config):
      print(f'warning: {warning}', flush=True)
  if state.start_step:
    writer.text(state.start_step, 'resume', f'resumed from step {state.start_step} in {checkpointer.directory}')


class _Meter:
  """Throughput and MFU over the steps since the last read (or restart)."""

  def __init__(self, task: Task):
    self.task = task
    self.peak, self.peak_source = flops.total_peak_flops()
    self.restart()

  def restart(self):
    self.start, self.rows = time.perf_counter(), 0

  def add(self, rows: int):
    self.rows += rows

  def read(self, step_metrics: dict, batch_rows: int) -> dict:
    elapsed = time.perf_counter() - self.start
    rows_per_sec = self.rows / elapsed
    tokens_per_row = self.task.tokens_per_row
    out = {k: float(v) for k, v in step_metrics.items()}
    achieved = rows_per_sec * self.task.flops_per_row
    if achieved > self.peak:
      self.peak = flops.corrected_peak(self.peak, self.peak_source, achieved)
    out.update(tokens_per_sec=rows_per_sec * tokens_per_row, step_time=elapsed * batch_rows / self.rows,
               mfu=achieved / self.peak, batch_tokens=batch_rows * tokens_per_row)
    self.restart()
    return out


def _stop_after_skips(config, train_state, step: int, checkpointer) -> None:
  limit = config.train.max_consecutive_skips
  if int(jax.device_get(train_state['longest_skip_run'])) < limit:
    return
  saved = checkpointer.manager.all_steps()
  where = (f'the last good checkpoint (step {max(saved)}) in {checkpointer.directory} is intact' if saved else
           'no checkpoint was saved yet')
  raise TrainingStopped(f'{limit} consecutive steps had a non-finite loss or gradient (step {step}); {where}: '
                        f'lower optim.peak_lr or check the data, then rerun{" to resume" if saved else ""}.')


def _evaluate_and_write(p: Plan, params, task: Task, writer, step: int, tokens: int) -> tuple[int, dict]:
  result = evaluate(p.eval_fn, params, task, p.mesh)
  writer.write(step, result, tokens, prefix='eval')
  return step, result


def evaluate(eval_fn, params, task: Task, mesh) -> dict:
  """Loss, perplexity (of an LM loss), the loss function's extra metrics and task.eval_extra's over
  task.eval_batches()."""
  totals = None
  for local in task.eval_batches():
    batch = pipeline.make_global_batch(local, gs.batch_sharding(mesh))
    sums = jax.tree.map(np.float64, jax.device_get(eval_fn(params, batch, task.frozen)))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  loss_sum, weight, extra = totals
  loss = float(loss_sum / max(weight, 1.0))
  result = dict(loss=loss, perplexity=math.exp(min(loss, 50.0))) if task.lm_loss else dict(loss=loss)
  result.update({name: float(value) for name, value in extra_means(extra, max(weight, 1.0)).items()})
  if task.eval_extra is not None:
    result.update(task.eval_extra(result))
  return result
