"""What every fine-tuning stage shares: the config taken from the run it starts from, its data read and counted,
params initialised from a pretrained trunk, and a run through the generic loop.

    config = stage.prepare(cli.config_from_flags())      # model shape and tokenizer of rlhf.init_from
    data = stage.load(config, 'sft', parse_factory)       # records -> parsed examples, with counts
    task = loop.Task(..., init_params=stage.pretrained(config, module))
    return stage.train(config, workdir, task, data)
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys

import jax
import numpy as np

from gpt_jax import checkpoint as ckpt
from gpt_jax import cli
from gpt_jax import config as gcfg
from gpt_jax import flops
from gpt_jax import loop
from gpt_jax import model as gm
from gpt_jax import sharding as gs
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tokenizer_lib
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import toy

# Model fields a stage may set itself; every other one (the shape) comes from the run it starts from.
STAGE_MODEL_FIELDS = ('dropout_embed', 'dropout_attn', 'dropout_resid', 'remat', 'attention_impl', 'dtype')
TOY_HELD_OUT = 256  # held-out toy items used for evaluation


def prepare(config):
  """The stage's config: model shape and tokenizer from rlhf.init_from's run (or export), when given."""
  r = config.rlhf
  if config.train.init_from:
    raise ConfigError(f'train.init_from={config.train.init_from!r} is for pretraining: a fine-tuning stage starts '
                      f'from --config.rlhf.init_from={config.train.init_from}.')
  if r.epochs and config.train.total_tokens != gcfg.default_config().train.total_tokens:
    raise ConfigError(f'rlhf.epochs={r.epochs:g} and train.total_tokens={config.train.total_tokens} both set the run '
                      f'length: drop --config.train.total_tokens, or pass --config.rlhf.epochs=0 to train for '
                      f'train.total_tokens.')
  config = config.copy_and_resolve_references()
  if r.init_from:
    if not os.path.isdir(r.init_from):
      raise ConfigError(f'rlhf.init_from={r.init_from!r} is not a directory: give the run (or export) the stage '
                        f'starts from, e.g. --config.rlhf.init_from=runs/sft.')
    base = ckpt.load_config(r.init_from)
    for name, value in base.model.items():
      if name not in STAGE_MODEL_FIELDS:
        config.model[name] = value
    config.data.tokenizer = base.data.tokenizer
  config = gcfg.validate(config)
  length, name = seq_len(config), 'rlhf.seq_len' if config.rlhf.seq_len else 'model.context'
  if config.rlhf.max_prompt_tokens >= length:
    raise ConfigError(f'rlhf.max_prompt_tokens={config.rlhf.max_prompt_tokens} leaves a response no room in '
                      f'{name}={length}: make it at most {length - 1} (e.g. {length // 2}).')
  return config


def seq_len(config) -> int:
  """Tokens per sequence of the stage's rows: rlhf.seq_len, or the model's context when it is 0. Learned positions
  use their first seq_len rows, so a stage at the length its data needs computes what it would at full context."""
  return config.rlhf.seq_len or config.model.context


@dataclasses.dataclass
class Data:
  """A stage's parsed data: training and held-out examples (None: no evaluation), counts of what was cut or
  skipped in each, the record format and the tokenizer."""
  train: list
  held_out: list | None
  counts: collections.Counter
  held_out_counts: collections.Counter
  format: str
  tokenizer: object


def load(config, stage: str, parser, toy_records) -> Data:
  """Reads rlhf.data (and rlhf.eval_data) for a stage. parser(fmt) -> parse(where, record); toy_records(n, seed,
  held_out, kind) -> the toy task's records for this stage ('toy:<kind>' names a kind, for stages with several)."""
  r = config.rlhf
  if r.sft.pack and stage != 'sft':
    raise ConfigError(f'rlhf.sft.pack=true packs SFT examples, but the {stage} stage keeps one example per row: drop '
                      f'--config.rlhf.sft.pack.')
  tokenizer = tokenizer_lib.load(config.data)
  counts, held_out_counts = collections.Counter(), collections.Counter()
  train_records = _records(config, r.data, toy_records, held_out=False, split='train')
  fmt = rdata.detect_format(stage, train_records)
  train = rdata.parse_all(train_records, fmt, parser(fmt), r.skip_bad_lines, counts)
  eval_spec = r.eval_data or (r.data if _is_toy(r.data) else '')
  held_out = None
  if eval_spec:
    eval_records = _records(config, eval_spec, toy_records, held_out=True, split='test')
    eval_fmt = rdata.detect_format(stage, eval_records)
    held_out = rdata.parse_all(eval_records, eval_fmt, parser(eval_fmt), r.skip_bad_lines, held_out_counts)
  return Data(train, held_out, counts, held_out_counts, fmt, tokenizer)


def _is_toy(spec: str) -> bool:
  return spec == 'toy' or spec.startswith('toy:')


def _records(config, spec: str, toy_records, held_out: bool, split: str):
  if _is_toy(spec):
    n = TOY_HELD_OUT if held_out else config.rlhf.toy_items
    try:
      records = toy_records(n, config.data.seed, held_out, spec.partition(':')[2])
    except toy.TooFewItems as error:
      raise ConfigError(f'rlhf.toy_items={n} is more than the {error.available} distinct training items of the '
                        f'toy task {spec!r}: make it at most {error.available}.') from None
    return [(f'{spec}[{i}]', x) for i, x in enumerate(records)]
  return rdata.read_records(spec, config.data.data_dir, split)


def toy_source(make, kinds: tuple[str, ...] = ('',)):
  """toy_records for stage.load from a toy generator make(n, seed, held_out[, kind]) with the given kinds."""
  def records(n, seed, held_out, kind):
    if kind not in kinds:
      names = ', '.join(f"'toy:{k}'" if k else "'toy'" for k in kinds)
      raise ConfigError(f"rlhf.data='toy:{kind}' is not a toy task of this stage: use {names}.")
    return make(n, seed, held_out, kind) if kind else make(n, seed, held_out)
  return records


def with_epochs(config, rows: int, tokens_per_row: int):
  """config with train.total_tokens = rlhf.epochs passes over `rows` rows when rlhf.epochs > 0; schedule lengths
  that followed the old total (the defaults) follow the new one."""
  if not config.rlhf.epochs:
    return config
  c = config.copy_and_resolve_references()
  old, o = c.train.total_tokens, c.optim
  batch_rows = c.train.batch_tokens // tokens_per_row
  steps = max(1, math.ceil(c.rlhf.epochs * rows / batch_rows))
  c.train.total_tokens = steps * c.train.batch_tokens
  if o.decay_tokens == old:
    o.decay_tokens = c.train.total_tokens
    if o.warmup_tokens == old // 50:
      o.warmup_tokens = o.decay_tokens // 50
  return gcfg.validate(c)


def stream(config, rows: dict, data: Data) -> rdata.RowStream:
  return rdata.RowStream(rows, config.data.seed, {'data': config.rlhf.data, 'format': data.format},
                         jax.process_index(), jax.process_count())


def eval_batches(config, rows: dict | None, tokens_per_row: int):
  """task.eval_batches for held-out rows (None without held-out data), in the training batch's row count."""
  if rows is None or not config.train.eval_every:
    return None
  batch_rows = config.train.batch_tokens // tokens_per_row
  return loop.cached(lambda: rdata.eval_batches(rows, batch_rows, jax.process_index(), jax.process_count()))


def load_lm_params(path: str, config, mesh):
  """The GPTLM params of a run or export, sharded on mesh (the policy a stage starts from, or its reference)."""
  return loop.load_params(path, gm.GPTLM(config.model), mesh)[0]


def pretrained(config, module):
  """task.init_params: module's params freshly initialised, then every subtree the LM of rlhf.init_from also has
  (the trunk, and an untied lm_head) replaced by the pretrained one; None for a random start."""
  path = config.rlhf.init_from
  if not path:
    return None

  def init_params(rng, shardings):
    mesh = jax.tree.leaves(shardings)[0].mesh
    with gs.activation_context(mesh):
      params = gm.init_params(module, rng, shardings=shardings)
    lm = load_lm_params(path, config, mesh)
    if jax.process_index() == 0:
      print(f'initialised {", ".join(sorted(set(lm) & set(params)))} from {path}', flush=True)
    return {name: lm.get(name, value) for name, value in params.items()}
  return init_params


def make_task(config, data: Data, rows: dict, held_out: dict | None, tokens_per_row: int, module, loss_fn,
              flops_factor: float = 1.0, frozen=None, lm_loss: bool = False, epoch_rows: int | None = None) -> tuple:
  """(config with the epoch budget applied, the stage's Task): rows streamed, held-out rows evaluated, module
  initialised from rlhf.init_from; a row's FLOPs are flops_factor x a training pass over its tokens; lm_loss: the
  loss is a language-modelling loss (SFT), so evaluation reports a perplexity; epoch_rows: the batch rows one epoch
  takes (default: the rows' count)."""
  config = with_epochs(config, epoch_rows or n_rows(rows), tokens_per_row)
  return config, loop.Task(module=module, loss_fn=loss_fn, train_stream=stream(config, rows, data),
                           tokens_per_row=tokens_per_row,
                           flops_per_row=tokens_per_row * flops.flops_per_token(config.model) * flops_factor,
                           eval_batches=eval_batches(config, held_out, tokens_per_row),
                           init_params=pretrained(config, module), frozen=frozen or {}, lm_loss=lm_loss)


def main_for(build_task, workdir_flag):
  """The entry point of a stage whose build_task(config) -> (config, task, data): prepare, build, train."""
  def main(argv):
    del argv
    cli.check_workdir(workdir_flag.value)
    config, task, data = build_task(prepare(cli.config_from_flags()))
    return train(config, workdir_flag.value, task, data, task.train_stream.n)[0]
  return main


def train(config, workdir: str, task: loop.Task, data: Data, rows: int) -> tuple[int, loop.Result | None]:
  """Runs task with the loop, after reporting the data counts: (exit status, the loop's Result or None)."""
  if jax.process_index() == 0:
    print(describe(data, rows), flush=True)
  held_out = dict(rows=len(data.held_out), **data.held_out_counts) if data.held_out else None
  record = dict(cli.run_record(config, data.tokenizer),
                data=dict(format=data.format, rows=rows, **data.counts, held_out=held_out))
  try:
    result = loop.train(config, workdir, task, gs.make_mesh(config.mesh), record)
  except loop.TrainingStopped as error:
    print(f'error: {error}', file=sys.stderr, flush=True)
    return 2, None
  return (130 if result.stopped == 'interrupted' else 0), result


def describe(data: Data, rows: int) -> str:
  """The line a stage prints about its data: training rows and held-out rows, each with what was cut or skipped."""
  held_out = f'; held out: {len(data.held_out)} rows ({_cut(data.held_out_counts)})' if data.held_out else ''
  return f'data: {rows} training rows of {data.format} records ({_cut(data.counts)}){held_out}'


def _cut(counts: collections.Counter) -> str:
  return ', '.join(f'{v} {k.replace("_", " ")}' for k, v in sorted(counts.items())) or 'nothing cut or skipped'


def n_rows(rows: dict) -> int:
  return int(np.shape(next(iter(rows.values())))[0])
