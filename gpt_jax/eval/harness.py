"""gpt_jax as an lm-evaluation-harness model ("gpt_jax"), and the command that runs lm-eval's CLI with it.

    python -m gpt_jax.eval.harness --model_args workdir=runs/x --tasks lambada_openai [any lm-eval flag]
    python -m gpt_jax.eval.harness --model_args workdir=runs/x mesh=-1x1x1 batch_tokens=8192 --tasks ...

lm-eval discovers no plugins, so this module registers the model class and then hands its own arguments to lm-eval's
CLI with `--model gpt_jax` added. lm-eval is an optional dependency (`pip install -r requirements-lmeval.txt`).

The model reuses gpt_jax's own harness pieces: log-likelihoods come from eval.fewshot.Scorer (batched into a few
compiled shapes, sharded over the mesh), generations from the jitted KV-cache sampler. Tokenization follows
lm-eval's TemplateLM (context and continuation encoded together, then split), so the numbers match lm-eval's
transformers model on the same checkpoint request by request.
"""

from __future__ import annotations

import difflib
import os
import sys

import jax
import numpy as np

from gpt_jax import cli
from gpt_jax import sample as sample_lib
from gpt_jax.config import ConfigError
from gpt_jax.data import tokenizer as tok_lib
from gpt_jax.eval import fewshot

try:
  from lm_eval.api.model import TemplateLM
  from lm_eval.api.registry import register_model
  from lm_eval import utils as lm_utils
except ImportError:  # pragma: no cover -- the message below is what a user without lm-eval sees
  raise ImportError('lm-evaluation-harness is not installed: pip install -r requirements-lmeval.txt') from None


@register_model('gpt_jax')
class GptJaxLM(TemplateLM):
  """A gpt_jax run (or export) for lm-eval: loglikelihood, loglikelihood_rolling and generate_until.

  model_args: workdir (required), mesh (dataxfsdpxtensor, e.g. -1x1x1; default the run's), batch_tokens (tokens
  per scoring pass, default 4096), gen_batch_size (prompts decoded together, default 16), seed (for sampled
  generations). lm-eval's own batch_size, max_batch_size and device do not apply and are ignored; any other key
  is refused.
  """

  def __init__(self, workdir: str | None = None, mesh: str | None = None, batch_tokens: int = 4096,
               gen_batch_size: int = 16, seed: int = 0, **others):
    super().__init__()
    _check_model_args(workdir, others)
    mesh = str(mesh) if mesh is not None else None
    config, module, params, self.step, mesh = cli.load_model(None, workdir, 'checkpoint', 0, mesh,
                                                             mesh_flag=('--model_args mesh', 'x'))
    self.tokenizer_ = tok_lib.load(config.data)
    self.max_length = config.model.context
    self.sampler = sample_lib.Sampler(module, config.model, params, eot_id=self.tokenizer_.eot_id,
                                      pad_id=self.tokenizer_.pad_id, batch_size=int(gen_batch_size), mesh=mesh)
    del params  # one copy on the devices: the scorer shares the sampler's (the same function)
    self.scorer = fewshot.Scorer(self.sampler.module, self.sampler.params, self.max_length, int(batch_tokens),
                                 mesh=mesh)
    self.seed = int(seed)

  @property
  def eot_token_id(self) -> int:
    return self.tokenizer_.eot_id

  def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
    return self.tokenizer_.encode(string)

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    # Each request: ((context, continuation), context ids, continuation ids); the last max_length + 1 tokens
    # are kept, as lm-eval's transformers model does.
    scored = [((list(context) + list(continuation))[-(self.max_length + 1):], len(continuation))
              for _, context, continuation in requests]
    logliks, greedy = self.scorer.score(scored)
    return [(float(ll), bool(g)) for ll, g in zip(logliks, greedy)]

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    windows, owners = [], []
    for i, (text,) in enumerate(req.args for req in requests):
      for context, target in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
          token_list=self.tok_encode(text), prefix_token=self.eot_token_id, max_seq_len=self.max_length,
          context_len=1)):
        windows.append((list(context) + list(target), len(target)))
        owners.append(i)
    logliks = self.scorer.score(windows)[0] if windows else np.zeros(0)
    return np.bincount(np.asarray(owners, np.int64), weights=logliks, minlength=len(requests)).tolist()

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    out = [None] * len(requests)
    groups: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
      groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
    eos = self.tokenizer_.decode([self.eot_token_id]) or None
    for indices in groups.values():
      kwargs = dict(requests[indices[0]].args[1])
      until = kwargs.get('until') or []
      until = [until] if isinstance(until, str) else list(until)
      if eos and eos not in until:
        until.append(eos)
      # lm-eval's defaults: greedy unless do_sample, then temperature 1; top_k / top_p as given.
      sampled = bool(kwargs.get('do_sample'))
      max_new = int(kwargs.get('max_gen_toks', kwargs.get('max_new_tokens', 256)))
      samples = sample_lib.generate_text(
          self.sampler, self.tokenizer_, [requests[i].args[0] for i in indices], stop=until,
          max_new_tokens=min(max_new, self.max_length - 1), rng=jax.random.key(self.seed),
          temperature=float(kwargs.get('temperature', 1.0)) if sampled else 0.0,
          top_k=int(kwargs.get('top_k') or 0) if sampled else 0,
          top_p=float(kwargs.get('top_p') or 1.0) if sampled else 1.0)
      for i, s in zip(indices, samples):
        out[i] = s.text
    return out


MODEL_ARGS = ('workdir', 'mesh', 'batch_tokens', 'gen_batch_size', 'seed')
_LM_EVAL_ARGS = ('batch_size', 'max_batch_size', 'device')  # what lm-eval passes every model


def _check_model_args(workdir, others: dict) -> None:
  """--model_args in this command's syntax: known keys only, and a workdir that is a directory."""
  unknown = sorted(set(others) - set(_LM_EVAL_ARGS))
  if unknown:
    close = difflib.get_close_matches(unknown[0], MODEL_ARGS, n=1)
    hint = f'did you mean {close[0]}? ' if close else ''
    raise ConfigError(f'--model_args key {unknown[0]!r} is not one of gpt_jax\'s ({", ".join(MODEL_ARGS)}): '
                      f'{hint}e.g. --model_args workdir=runs/x mesh=-1x1x1.')
  if not workdir:
    raise ConfigError('--model_args needs workdir=<run>: the gpt_jax run or export to evaluate, e.g. --model_args '
                      'workdir=runs/x.')
  if not os.path.isdir(workdir):
    raise ConfigError(f'--model_args workdir={workdir} is not a directory: pass a run or export directory.')


def _check_tasks(args: list[str]) -> None:
  """A run without --tasks (or a --config that may name them) is refused before lm-eval starts."""
  if not any(arg.split('=', 1)[0] in ('--tasks', '--config', '-t', '-C') for arg in args):
    raise ConfigError('--tasks is required: the lm-eval tasks to run, e.g. --tasks lambada_openai (list them with '
                      'python -m gpt_jax.eval.harness ls tasks; add --include_path <dir> for your own YAML tasks).')


def main() -> None:
  if any(arg == '--model' or arg.startswith('--model=') for arg in sys.argv[1:]):
    print('error: --model is set by this command (gpt_jax); pass the run with --model_args workdir=runs/x.',
          file=sys.stderr)
    sys.exit(2)
  from lm_eval.__main__ import cli_evaluate
  args = sys.argv[1:]
  if args[:1] in (['ls'], ['validate']):
    sys.argv = ['lm-eval', *args]  # lm-eval's own subcommands, which take no model
  else:
    args = args[1:] if args[:1] == ['run'] else args
    sys.argv = ['lm-eval', 'run', '--model', 'gpt_jax', *args]
  try:
    if sys.argv[1] == 'run':
      _check_tasks(args)
    cli_evaluate()
  except ConfigError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  except ValueError as error:  # lm-eval's word for task names it does not know, raised before any model loads
    if not str(error).startswith('Tasks not found'):
      raise
    print(f'error: unknown lm-eval task(s) {str(error).split(":", 1)[1].strip()}: list the tasks with python -m '
          f'gpt_jax.eval.harness ls tasks, or pass --include_path <dir> holding your own task YAML.', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
