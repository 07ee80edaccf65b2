"""Few-shot evaluation entry point: one JSON report per (task, K) and a summary table on stdout.

    python -m gpt_jax.eval --workdir=runs/x --tasks=eval_tasks/gpt3/arithmetic_2da,my_task.json --num_fewshot=0,1,10
    python -m gpt_jax.eval --make_gpt3_tasks=eval_tasks/gpt3 --words_from=corpus.txt          # write the tasks only
    python -m gpt_jax.eval --config=configs/tiny.py:nano --init=random --make_gpt3_tasks=/tmp/gpt3 --limit=50

Reports go to --output_dir (default <workdir>/eval) as <task>.<K>shot.json with the metric values, standard
errors, n, K, the number of prompts cut to fit the context, the checkpoint step and the configuration. Reports (and
GPT-3 task directories) that exist already are refused before any work unless --overwrite is passed.
"""

from __future__ import annotations

import json
import math
import os
import re
import time

import jax
from absl import flags
from jax.experimental import multihost_utils

from gpt_jax import cli
from gpt_jax import config as gcfg
from gpt_jax import sample as sample_lib
from gpt_jax.data import sources
from gpt_jax.data import tokenizer as tok_lib
from gpt_jax.eval import fewshot
from gpt_jax.eval import tasks as tasks_lib

cli.define_model_flags()
flags.DEFINE_list('tasks', [], 'task specs: directories holding task.json, or .json spec files.')
flags.DEFINE_list('num_fewshot', [], 'values of K to evaluate (default: each spec\'s num_fewshot).')
flags.DEFINE_integer('fewshot_seed', 1234, 'seed of the demonstration draws.')
flags.DEFINE_integer('limit', None, 'evaluate only the first N documents of each task (smoke runs).')
flags.DEFINE_integer('batch_tokens', 4096, 'tokens per scoring forward pass over the whole mesh (rows = '
                     'batch_tokens // length, at least one per batch shard); the logits take about '
                     'batch_tokens * vocab * 4 bytes.')
flags.DEFINE_integer('gen_batch_size', 32, 'prompts decoded together for generate_until tasks.')
flags.DEFINE_string('output_dir', None, 'where reports go (default: <workdir>/eval, or ./eval_results).')
flags.DEFINE_string('make_gpt3_tasks', None, 'write the 15 GPT-3 Section 3.9 tasks into this directory '
                    '(and evaluate them when no --tasks are given).')
flags.DEFINE_string('words_from', None, 'text file the scrambling word list is counted from '
                    '(default: the data package\'s stdlib corpus).')
flags.DEFINE_integer('n_words', 10_000, 'size of the scrambling word list.')
flags.DEFINE_integer('task_seed', 0, 'seed of the GPT-3 task generators.')
cli.define_overwrite_flag()
flags.DEFINE_bool('log_samples', False, 'also write <task>.<K>shot.samples.jsonl: each item\'s prompt, target and '
                  'what the model scored or generated.')

FLAGS = flags.FLAGS


def _corpus_texts(config):
  """The texts the scrambling word list is counted from: --words_from, else the stdlib corpus (Python sources).

  The paper counted English word frequencies; pass an English text with --words_from to come close to its list.
  """
  if FLAGS.words_from:
    if not os.path.isfile(FLAGS.words_from):
      raise gcfg.ConfigError(f'--words_from={FLAGS.words_from!r} does not exist: pass a text file.')
    with open(FLAGS.words_from, encoding='utf-8', errors='replace') as f:
      text = f.read()
    if not re.search(r'[A-Za-z]{4,}', text):
      raise gcfg.ConfigError(f'--words_from={FLAGS.words_from!r} holds no words of 4 or more letters to scramble: '
                             f'pass a text file with prose in it.')
    return [text]
  data_dir = (config or gcfg.default_config()).data.data_dir
  return sources.open_source('stdlib', data_dir).texts('train')


def _fewshot_values() -> list[int]:
  try:
    values = [int(k) for k in FLAGS.num_fewshot]
  except ValueError:
    raise gcfg.ConfigError(f'--num_fewshot={",".join(FLAGS.num_fewshot)} must be a comma-separated list of '
                           f'integers, e.g. --num_fewshot=0,1,10.') from None
  if any(k < 0 for k in values):
    raise gcfg.ConfigError('--num_fewshot values must be 0 or more.')
  return values


def _check_flags() -> None:
  """Every flag that has a wrong value, refused before anything runs or is written."""
  for name, low in (('limit', 1), ('batch_tokens', 1), ('gen_batch_size', 1), ('n_words', 1)):
    value = FLAGS[name].value
    if value is not None and value < low:
      leave_out = ' (leave it out to evaluate every item)' if name == 'limit' else ''
      raise gcfg.ConfigError(f'--{name}={value} must be at least {low}{leave_out}.')
  if FLAGS.make_gpt3_tasks:
    cli.check_outputs_in('make_gpt3_tasks', FLAGS.make_gpt3_tasks,
                         [os.path.basename(path) for path in tasks_lib.gpt3_task_dirs(FLAGS.make_gpt3_tasks)])
  if FLAGS.output_dir and os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
    raise gcfg.ConfigError(f'--output_dir={FLAGS.output_dir} is a file, not a directory: pass a directory path.')


def _report_name(task, k: int) -> str:
  return f'{task.spec.task}.{k}shot.json'


def _check_reports(output_dir: str, loaded, ks: list[int]) -> None:
  """The reports (and sample logs) this evaluation writes, refused before the model is loaded if one exists."""
  names = [_report_name(task, k) for task in loaded for k in ks or [task.spec.num_fewshot]]
  if FLAGS.log_samples:
    names += [name[:-len('.json')] + '.samples.jsonl' for name in names]
  cli.check_outputs_in('output_dir', output_dir, names)


def _check_requests(loaded, ks: list[int]) -> None:
  """Every (task, K) is checked before the first one runs, so a bad pair never stops a run halfway."""
  for task in loaded:
    for k in ks or [task.spec.num_fewshot]:
      fewshot.check_request(task, k)


def _jsonable(x):
  """NaN (the standard error of one item) and inf (an overflowing perplexity) as null: reports are strict JSON."""
  if isinstance(x, dict):
    return {k: _jsonable(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_jsonable(v) for v in x]
  return None if isinstance(x, float) and not math.isfinite(x) else x


def _summary(reports: list[dict]) -> str:
  lines = [f'{"task":<24} {"K":>3} {"n":>6} {"metric":<16} {"value":>10} {"stderr":>9} {"truncated":>9}']
  for r in reports:
    for name, m in r['metrics'].items():
      lines.append(f'{r["task"]:<24} {r["num_fewshot"]:>3} {r["n"]:>6} {name:<16} {m["value"]:>10.4f} '
                   f'{m["stderr"]:>9.4f} {r["truncated"]:>9}')
  return '\n'.join(lines)


def main(argv):
  del argv
  _check_flags()
  flag_config = cli.config_from_flags()
  main_process = jax.process_index() == 0  # every process computes the same reports; one writes them

  task_paths = list(FLAGS.tasks)
  if FLAGS.make_gpt3_tasks:
    if main_process:
      words = tasks_lib.word_list(_corpus_texts(flag_config), FLAGS.n_words)
      written = tasks_lib.write_gpt3_tasks(FLAGS.make_gpt3_tasks, words, FLAGS.task_seed)
      print(f'wrote {len(written)} GPT-3 tasks ({len(words)} scrambling words) to {FLAGS.make_gpt3_tasks}')
    multihost_utils.sync_global_devices('gpt3 tasks written')  # the others read them only once they are whole
    task_paths = task_paths or tasks_lib.gpt3_task_dirs(FLAGS.make_gpt3_tasks)
    if not FLAGS.workdir and FLAGS.init != 'random':
      return
  if not task_paths:
    raise gcfg.ConfigError('pass --tasks=<task dir or spec.json>[,...] (or --make_gpt3_tasks=<dir>).')
  loaded = [tasks_lib.load_task(p) for p in task_paths]
  _check_requests(loaded, _fewshot_values())
  output_dir = FLAGS.output_dir or (os.path.join(FLAGS.workdir, 'eval') if FLAGS.workdir else 'eval_results')
  _check_reports(output_dir, loaded, _fewshot_values())

  config, module, params, step, mesh = cli.load_model(flag_config, FLAGS.workdir, FLAGS.init, FLAGS.seed, FLAGS.mesh)
  tokenizer = tok_lib.load(config.data)
  sampler = sample_lib.Sampler(module, config.model, params, eot_id=tokenizer.eot_id, pad_id=tokenizer.pad_id,
                               batch_size=FLAGS.gen_batch_size, mesh=mesh)
  del params  # the scorer shares the sampler's copy (layers unrolled: the same function), so one copy is held
  scorer = fewshot.Scorer(sampler.module, sampler.params, config.model.context, FLAGS.batch_tokens, mesh=mesh)
  if main_process:
    os.makedirs(output_dir, exist_ok=True)
  settings = {'workdir': FLAGS.workdir, 'init': FLAGS.init, 'limit': FLAGS.limit, 'batch_tokens': FLAGS.batch_tokens,
              'gen_batch_size': FLAGS.gen_batch_size, 'mesh': dict(mesh.shape), 'processes': jax.process_count(),
              'devices': str(jax.devices())}
  run_config = json.loads(config.to_json_best_effort())

  reports = []
  for task in loaded:
    for k in _fewshot_values() or [task.spec.num_fewshot]:
      start = time.time()
      report = fewshot.evaluate(task, k, scorer=scorer, sampler=sampler, tokenizer=tokenizer,
                                seed=FLAGS.fewshot_seed, limit=FLAGS.limit, log_samples=FLAGS.log_samples)
      samples = report.pop('samples', None)
      report.update(checkpoint_step=step, seconds=round(time.time() - start, 3), spec=task.spec.to_json(),
                    eval_settings=settings, config=run_config)
      path = os.path.join(output_dir, _report_name(task, k))
      reports.append(report)
      if main_process:
        with open(path, 'w', encoding='utf-8') as f:
          json.dump(_jsonable(report), f, indent=2)
        if samples is not None:
          with open(path[:-len('.json')] + '.samples.jsonl', 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(_jsonable(item), ensure_ascii=False) + '\n' for item in samples)
        print(f'{task.spec.task} K={k}: {report["n"]} items in {report["seconds"]:.1f}s -> {path}', flush=True)
  if main_process:
    print(f'\ncheckpoint step {step}\n' + _summary(reports))


if __name__ == '__main__':
  cli.run_main(main)
