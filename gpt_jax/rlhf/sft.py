"""Supervised fine-tuning: the language-model loss on response tokens only (EOS included), prompts as context.

    python -m gpt_jax.rlhf.sft --config=configs/rlhf.py:sft --workdir=runs/sft --config.rlhf.init_from=runs/pre

The model shape and tokenizer come from rlhf.init_from (a pretraining run or a params export); its trunk and LM
head start the run. rlhf.data: 'toy', or prompt/completion, Alpaca or chat JSONL; rlhf.sft.pack packs several
examples per row. Rerunning the command resumes exactly.
"""

from __future__ import annotations

from absl import flags

from gpt_jax import cli
from gpt_jax import losses
from gpt_jax import model as gm
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy

cli.define_workdir_flag()


def build_task(config):
  """(config with the epoch budget applied, the SFT Task, the data)."""
  r = config.rlhf
  data = stage.load(config, 'sft', rdata.sft_segments, stage.toy_source(toy.instructions))
  context = config.model.context

  def rows_of(examples, pack, counts):
    return rdata.sft_rows(examples, data.tokenizer, context, r.max_prompt_tokens, pack, counts)
  train_rows = rows_of(data.train, r.sft.pack, data.counts)
  held_out = rows_of(data.held_out, False, data.held_out_counts) if data.held_out is not None else None
  return (*stage.make_task(config, data, train_rows, held_out, context, gm.GPTLM(config.model),
                           losses.lm_loss_fn(config), lm_loss=True), data)


if __name__ == '__main__':
  cli.run_main(stage.main_for(build_task, flags.FLAGS['workdir']), 'configs/rlhf.py:sft')
