"""GPT-1 task fine-tuning: a linear head on the last (extract) token, with the auxiliary LM loss L3 = L2 + lambda L1.

    python -m gpt_jax.rlhf.classify --config=configs/rlhf.py:classify --workdir=runs/cls --config.rlhf.init_from=runs/pre

Inputs are framed as GPT-1 frames them, with start, delimiter and extract tokens that are new ids in the
vocabulary's padding (learned during fine-tuning): single texts [start] text [extract] ({"text", "label"});
pairs in both orders, their class logits summed ({"text_a", "text_b", "label"}: GPT-1's similarity input, the
two orders' representations through the one linear head, up to a bias); multiple choice as one sequence
[start] context [delim] choice [extract] per choice, a scalar each, softmax over the choices ({"context",
"choices", "label"}). rlhf.classify.lm_coef is lambda (GPT-1: 0.5; 0 switches L1 off). The held-out accuracy is
logged at every evaluation. The toy tasks: 'toy:single' (is a sum right?), 'toy:pair' (same value?), 'toy:choice'.
"""

from __future__ import annotations

import jax.numpy as jnp
from absl import flags

from gpt_jax import cli
from gpt_jax import losses
from gpt_jax.heads import Classifier
from gpt_jax.rlhf import data as rdata
from gpt_jax.rlhf import stage
from gpt_jax.rlhf import toy

cli.define_workdir_flag()


def n_classes(fmt: str, examples) -> int:
  """Head outputs: 1 (a score per choice) for multiple choice, else the labels seen in training (at least 2)."""
  return 1 if fmt == 'choice' else max(2, 1 + max(label for _, label in examples))


def loss_fn(config, fmt: str, classes: int):
  """LossFn over classify rows: cross entropy of the class (or choice) logits plus lm_coef x the LM loss on the
  rows' text tokens (token mean per example)."""
  lm_coef, vocab = config.rlhf.classify.lm_coef, config.model.vocab_size
  models = {train: Classifier(config.model, classes, deterministic=not train) for train in (False, True)}

  def fn(params, batch, rng, train, frozen):
    del frozen
    rows, sequences, length = batch['tokens'].shape
    tokens, mask = batch['tokens'].reshape(-1, length), batch['mask'].reshape(-1, length)
    class_logits, lm_logits = models[train].apply({'params': params}, tokens, mask, rngs={'dropout': rng})
    if fmt == 'choice':
      present = jnp.any(batch['mask'] > 0, axis=-1)
      logits = jnp.where(present, class_logits[:, 0].reshape(rows, sequences), -1e30)
    else:
      logits = class_logits.reshape(rows, sequences, classes).sum(axis=1)
    cls_loss = -losses.token_logprobs(logits, batch['label'])
    targets = tokens[:, 1:]
    lm_mask = (mask[:, 1:] > 0) & (targets < vocab)  # framing tokens are inputs, never targets
    nll = jnp.sum(jnp.where(lm_mask, -losses.token_logprobs(lm_logits[:, :-1], targets), 0.0), axis=-1)
    lm_loss = nll.reshape(rows, sequences).sum(1) / jnp.maximum(lm_mask.reshape(rows, -1).sum(1), 1)
    w = batch['weight']
    extra = dict(accuracy=jnp.sum(w * (jnp.argmax(logits, -1) == batch['label'])), cls_loss=jnp.sum(w * cls_loss),
                 lm_loss=jnp.sum(w * lm_loss))
    return jnp.sum(w * (cls_loss + lm_coef * lm_loss)), jnp.sum(w), extra
  return fn


def build_task(config):
  data = stage.load(config, 'classify', lambda fmt: rdata.classify_parse(fmt, 2 ** 31 - 1),
                    stage.toy_source(lambda n, seed, held_out, kind: toy.classification(kind, n, seed, held_out),
                                     ('single', 'pair', 'choice')))
  classes = n_classes(data.format, data.train)
  if data.format != 'choice' and data.held_out is not None:
    for _, label in data.held_out:
      if label >= classes:
        raise rdata.DataError(f'a held-out label is {label} but training has labels 0..{classes - 1} only: give the '
                              f'training data every class.')
  length = stage.seq_len(config)
  rows_of = lambda examples, counts: rdata.classify_rows(examples, data.tokenizer, config, length,  # noqa: E731
                                                         counts)
  train_rows = rows_of(data.train, data.counts)
  sequences = train_rows['tokens'].shape[1]
  held_out = rows_of(data.held_out, data.held_out_counts) if data.held_out is not None else None
  if held_out is not None and held_out['tokens'].shape[1] != sequences:
    raise rdata.DataError(f'held-out items have {held_out["tokens"].shape[1]} sequences each, training items '
                          f'{sequences}: give both the same number of choices.')
  tokens_per_row = sequences * length
  return (*stage.make_task(config, data, train_rows, held_out, tokens_per_row, Classifier(config.model, classes),
                           loss_fn(config, data.format, classes)), data)


if __name__ == '__main__':
  cli.run_main(stage.main_for(build_task, flags.FLAGS['workdir']), 'configs/rlhf.py:classify')
