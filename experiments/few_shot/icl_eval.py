"""K-shot evaluation of the in-context learning tasks: greedy exact-match accuracy of the query's output after K
demonstrations of the same per-sequence task, with a shuffled-output control, chance and a ceiling.

A query is correct when every output byte is the model's argmax given the prompt and the earlier output bytes
(teacher forcing, which equals greedy decoding of the output's length). The shuffled control permutes the
demonstrations' outputs among themselves (inputs, format and output distribution kept; the mapping broken), while
the query is scored against the true mapping. The ceiling is the fraction of queries whose input is covered by
the demonstrations (recall: its key appears; cipher: both of its letters appear in demonstrated inputs; add: the
same digit pair appears), the most a pure lookup could reach; for add any one demonstration determines the offset.
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
  """n (prompt, answer, covered) triples: the task's tag, K demonstrations and the query of one drawn task parameter
  each."""
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
    out.append((task.tag + ''.join(task.demo(dx, dy) for dx, dy in demos) + x + task.separator, y, covered))
  return out


def make_scorer(module, context: int):
  """score(params, prompts, answers) -> bool [n]: exact greedy match of each answer after its prompt. The prompts'
  rows are spread over the batch axes of the params' mesh (on every process, as training is)."""
  @jax.jit
  def argmax_next(params, tokens):
    return jnp.argmax(module.apply({'params': params}, tokens), axis=-1)

  def score(params, prompts: list[str], answers: list[str]) -> np.ndarray:
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
      start = len(p.encode())
      correct[row] = np.array_equal(predicted[row, start - 1:start - 1 + len(a)], tokens[row, start:start + len(a)])
    return correct

  return score


def evaluate(score, params, ks, seeds, n: int) -> list[dict]:
  """Rows (task, k, control, accuracy, accuracy_se, ceiling, chance, queries) for every task, K and control; the
  standard error is over queries, each query's correctness first averaged over the demonstration seeds."""
  rows = []
  for task in icl_data.TASKS.values():
    for k in ks:
      for control in ('none', 'shuffled'):
        correct, covered = [], []
        for seed in seeds:
          items = episodes(task, k, seed, n, shuffled=control == 'shuffled')
          correct.append(score(params, [p for p, _, _ in items], [a for _, a, _ in items]))
          covered.append([c for _, _, c in items])
        per_query = np.mean(correct, axis=0)
        rows.append(dict(task=task.name, k=k, control=control, accuracy=float(per_query.mean()),
                         accuracy_se=float(per_query.std(ddof=1) / np.sqrt(n)), ceiling=float(np.mean(covered)),
                         chance=task.chance, queries=n * len(seeds)))
  return rows
