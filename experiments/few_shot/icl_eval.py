"""K-shot evaluation of the in-context learning tasks: greedy exact-match accuracy of the query's output after K
demonstrations of the same per-sequence task, with a shuffled-output control, chance and a ceiling.

A query is correct when every output byte is the model's argmax given the prompt and the earlier bytes (teacher
forcing, which equals greedy decoding of the output's length; for the interleaved cipher, greedy decoding of each
substitute after its input letter). The shuffled control permutes the
demonstrations' outputs among themselves (inputs, format and output distribution kept; the mapping broken), while
the query is scored against the true mapping. The ceiling is the fraction of queries whose input is covered by
the demonstrations (recall and pairs: its key appears; cipher: all its letters appear in demonstrated inputs; add:
the same digit pair appears), the most a pure lookup could reach; for add any one demonstration determines the offset.
The queries depend only on (task, K, seed, query index), so every model sees the same prompts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gpt_jax import sharding as gs
from experiments.few_shot import icl_data

PAD = ord(' ')


def episodes(task: icl_data.Task, k: int, seed: int, n: int, shuffled: bool):
  """n (prompt, answer, scored, covered): the task's tag, K demonstrations and the query of one drawn task parameter
  each (Task.query: the answer bytes after the prompt, and which of them are scored)."""
  task_index = list(icl_data.TASKS).index(task.name)
  out = []
  for i in range(n):
    rng = np.random.default_rng((seed, task_index, k, i))
    example = task.draw(rng)
    demos = [example(rng) for _ in range(k)]
    x, y = example(rng)
    if shuffled:
      outputs = [demos[j][1] for j in rng.permutation(k)]
      demos = [(dx, dy) for (dx, _), dy in zip(demos, outputs)]
    seen = [dx for dx, _ in demos]
    covered = set(x) <= set(''.join(seen)) if task.name == 'cipher' else x in seen
    end, answer, scored = task.query(x, y)
    out.append((task.tag + ''.join(task.demo(dx, dy) for dx, dy in demos) + end, answer, scored, covered))
  return out


def make_scorer(module, context: int):
  """score(params, prompts, answers, scored=None) -> bool [n]: exact greedy match of each answer after its prompt
  at the answer's scored bytes (all by default). The prompts' rows are spread over the batch axes of the params'
  mesh (on every process, as training is)."""
  @jax.jit
  def argmax_next(params, tokens):
    return jnp.argmax(module.apply({'params': params}, tokens), axis=-1)

  def score(params, prompts: list[str], answers: list[str], scored=None) -> np.ndarray:
    mesh = gs.mesh_of(params)
    rows = -(-len(prompts) // gs.batch_shards(mesh)) * gs.batch_shards(mesh)
    tokens = np.full((rows, context), PAD, np.int32)
    for row, (p, a) in enumerate(zip(prompts, answers)):
      text = (p + a).encode()
      if len(text) > context:
        raise ValueError(f'a {len(text)}-byte prompt does not fit the {context}-byte context')
      tokens[row, :len(text)] = np.frombuffer(text, np.uint8)
    with gs.activation_context(mesh):
      predicted = gs.to_host(argmax_next(params, gs.global_rows(tokens, mesh)))
    correct = np.ones(len(prompts), bool)
    for row, (p, a) in enumerate(zip(prompts, answers)):
      start, mask = len(p.encode()), np.asarray(scored[row] if scored else [True] * len(a))
      correct[row] = np.array_equal(predicted[row, start - 1:start - 1 + len(a)][mask],
                                    tokens[row, start:start + len(a)][mask])
    return correct

  return score


def evaluate(score, params, ks, seeds, n: int, tasks: tuple[str, ...] = icl_data.DEFAULT_TASKS) -> list[dict]:
  """Rows (task, k, control, accuracy, accuracy_se, ceiling, chance, queries) for every task, K and control; the
  standard error is over queries, each query's correctness first averaged over the demonstration seeds."""
  rows = []
  for task in [icl_data.TASKS[name] for name in tasks]:
    for k in ks:
      for control in ('none', 'shuffled'):
        correct, covered = [], []
        for seed in seeds:
          items = episodes(task, k, seed, n, shuffled=control == 'shuffled')
          prompts, answers, scored, covers = zip(*items)
          correct.append(score(params, prompts, answers, scored))
          covered.append(covers)
        per_query = np.mean(correct, axis=0)
        rows.append(dict(task=task.name, k=k, control=control, accuracy=float(per_query.mean()),
                         accuracy_se=float(per_query.std(ddof=1) / np.sqrt(n)), ceiling=float(np.mean(covered)),
                         chance=task.chance, queries=n * len(seeds)))
  return rows
