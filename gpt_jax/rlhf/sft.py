"""Supervised fine-tuning: the language-model loss on response tokens only (EOS included), prompts as context.

    python -m gpt_jax.rlhf.sft --config=configs/rlhf.py:sft --workdir=runs/sft --config.rlhf.init_from=runs/pre

The model shape and tokenizer come from rlhf.init_from (a pretraining run or a params export); its trunk and LM
head start the run. rlhf.data: 'toy', or prompt/completion, Alpaca or chat JSONL; rlhf.sft.pack packs several
examples per row; rlhf.sft.pretrain_mix makes that share of every batch's rows pretraining rows of data.source
(the LM loss on every token, each weighted rlhf.sft.pretrain_weight against a response token's 1: a 48-token
pretraining row has about twelve times the targets of a short answer, so at weight 1 it dominates the mean), so SFT
keeps what pretraining taught (rlhf.epochs still counts passes over the SFT examples). Rerunning the command resumes
exactly.
"""

from __future__ import annotations

import dataclasses
import math

import jax
from absl import flags

from gpt_jax import cli
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax.data import pipeline
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy

cli.define_workdir_flag()


def build_task(config):
  """(config with the epoch budget applied, the SFT Task, the data)."""
  r = config.rlhf
  data = stage.load(config, 'sft', rdata.sft_segments, stage.toy_source(toy.instructions))
  length, mix = stage.seq_len(config), r.sft.pretrain_mix

  def rows_of(examples, pack, counts):
    return rdata.sft_rows(examples, data.tokenizer, length, r.max_prompt_tokens, pack, counts)
  train_rows = rows_of(data.train, r.sft.pack, data.counts)
  held_out = rows_of(data.held_out, False, data.held_out_counts) if data.held_out is not None else None
  config, task = stage.make_task(config, data, train_rows, held_out, length, gm.GPTLM(config.model),
                                 losses.lm_loss_fn(config), lm_loss=True,
                                 epoch_rows=math.ceil(stage.n_rows(train_rows) / (1.0 - mix)))
  if mix:
    rdata.pretraining_rows(config.train.batch_tokens // length, mix, jax.process_count())  # refused before any work
    task = dataclasses.replace(task, train_stream=rdata.MixedStream(
        task.train_stream, pretraining(config), mix, r.sft.pretrain_weight, jax.process_count()))
  return config, task, data


def pretraining(config) -> pipeline.TrainStream:
  """The pretraining rows SFT mixes in: data.source cut into sequences of the stage's length, documents not kept
  apart (as SFT rows are not), this process's share."""
  c = config.copy_and_resolve_references()
  c.model.context, c.data.segment_ids = stage.seq_len(config), False
  return pipeline.TrainStream(c, 'train', jax.process_index(), jax.process_count())


if __name__ == '__main__':
  cli.run_main(stage.main_for(build_task, flags.FLAGS['workdir']), 'configs/rlhf.py:sft')
