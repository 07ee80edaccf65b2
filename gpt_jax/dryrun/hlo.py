"""Collective traffic and matmul FLOPs of a compiled program, read from its HLO text with loop trip counts applied.

XLA's cost analysis counts the body of a while loop once, so a scanned stack of 96 layers shows one layer's
all-gathers. Here every computation gets the number of times it runs per call of the program (the product of the
known trip counts of the loops around it), and each collective's result bytes are counted that many times. The
matmul count (dots and cuDNN fused attention) stands in for the cost analysis XLA does not give for a GPU
executable compiled without a device.
"""

from __future__ import annotations

import collections
import math
import re

COLLECTIVES = ('all-gather', 'all-reduce', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4,
                's64': 8, 'u64': 8, 'f64': 8}
_HEADER = re.compile(r'^(ENTRY )?%?([\w.\-]+) .*\{\s*$')
_CALL = re.compile(r'\b(body|condition|calls|to_apply)=%?([\w.\-]+)')
_BRANCHES = re.compile(r'\bbranch_computations=\{([^}]*)\}')
_KNOWN_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_CONSTANT = re.compile(r'= [su](?:32|64)\[\][^=]*? constant\((\d+)\)')
_OP = re.compile(r'=\s*(.*?)\s(' + '|'.join(COLLECTIVES) + r')(-start)?\(')
_ARRAY = re.compile(r'\b([a-z]+\d*)\[([\d,]*)\]')
_RESULT = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = [a-z]+\d*\[([\d,]*)\]')
_PARAM = re.compile(r'([\w.\-]+): [a-z]+\d*\[([\d,]*)\]')
_DOT = re.compile(r'= [a-z]+\d*\[([\d,]*)\]\S* dot\(%([\w.\-]+), .*?lhs_contracting_dims=\{([\d,]*)\}')
_FMHA = re.compile(r'custom_call_target="__cudnn\$fmha\w*?(Backward)?"')
_FMHA_SHAPE = re.compile(r'"intermediate_tensor_shape":\s*\{[^}]*?"dimensions":\s*\["(\d+)",\s*"(\d+)",\s*"(\d+)",\s*'
                         r'"(\d+)"\]')


def shape_bytes(shape: str) -> int:
  """Bytes of the largest array in an HLO shape: 'bf16[8,128]{1,0}' or a tuple (an async start's output)."""
  sizes = [_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d)
           for dtype, dims in _ARRAY.findall(shape) if dtype in _DTYPE_BYTES]
  return max(sizes, default=0)


def _dims(text: str) -> list[int]:
  return [int(d) for d in text.split(',') if d]


def computations(text: str) -> tuple[dict[str, list[str]], str | None]:
  """{computation name: its instruction lines} and the entry computation's name."""
  bodies, entry, current = {}, None, None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header and not line.startswith(' '):
      current = header.group(2)
      bodies[current] = []
      entry = current if header.group(1) else entry
    elif current is not None and line.startswith(' '):
      bodies[current].append(line)
  return bodies, entry


def trip_count(line: str, bodies: dict[str, list[str]]) -> int:
  """Iterations of the while loop on `line`: XLA's known_trip_count, else the bound its condition compares the
  counter with (a scan's `i < n`, the only integer constant there); 1 when neither says."""
  known = _KNOWN_TRIP.search(line)
  if known:
    return int(known.group(1))
  condition = dict(_CALL.findall(line)).get('condition')
  bounds = {int(c) for body_line in bodies.get(condition, ()) for c in _CONSTANT.findall(body_line)}
  compares_lt = any('direction=LT' in body_line for body_line in bodies.get(condition, ()))
  return bounds.pop() if len(bounds) == 1 and compares_lt else 1


def _callees(line: str, bodies) -> list[tuple[str, int]]:
  """(called computation, times it runs per execution of line)."""
  calls = _CALL.findall(line)
  loop = ' while(' in line
  times = trip_count(line, bodies) if loop else 1
  found = [(name, times if kind in ('body', 'condition') else 1) for kind, name in calls]
  for names in _BRANCHES.findall(line):
    found.extend((name.strip().lstrip('%'), 1) for name in names.split(','))
  return found


def executions(text: str) -> dict[str, int]:
  """How many times each computation runs per execution of the program (absent: never reached)."""
  bodies, entry = computations(text)
  counts = collections.Counter({entry: 1})
  order, seen = [], set()

  def visit(name):  # callees before callers, so reversed(order) visits each caller before what it calls
    if name in seen or name not in bodies:
      return
    seen.add(name)
    for line in bodies[name]:
      for callee, _ in _callees(line, bodies):
        visit(callee)
    order.append(name)

  visit(entry)
  for name in reversed(order):
    for line in bodies[name]:
      for callee, times in _callees(line, bodies):
        counts[callee] += counts[name] * times
  return dict(counts)


def collective_bytes(text: str) -> dict[str, int]:
  """{collective kind: result bytes per device per execution}, loops unrolled by their trip counts."""
  bodies, _ = computations(text)
  counts = executions(text)
  totals = collections.Counter()
  for name, lines in bodies.items():
    for line in lines:
      op = _OP.search(line)
      if op and counts.get(name):
        totals[op.group(2)] += counts[name] * shape_bytes(op.group(1))
  return dict(totals)


def _matmul_flops(header: str, lines: list[str]) -> float:
  """FLOPs of one computation's dots (2 x output x contracted size) and cuDNN attention calls (forward: 2 matmuls
  of batch x heads x queries x keys x head size; backward: 5, with the recomputed scores)."""
  shapes = {name: _dims(dims) for name, dims in _PARAM.findall(header)}
  total = 0.0
  for line in lines:
    result = _RESULT.match(line)
    if result:
      shapes[result.group(1)] = _dims(result.group(2))
    dot = _DOT.search(line)
    if dot and dot.group(2) in shapes:
      contracted = math.prod(shapes[dot.group(2)][int(c)] for c in _dims(dot.group(3)))
      total += 2 * math.prod(_dims(dot.group(1))) * contracted
    fmha, scores = _FMHA.search(line), _FMHA_SHAPE.search(line)
    if fmha and scores:
      head_dim = _dims(_ARRAY.search(line.split('=', 1)[1]).group(2))[-1]
      total += (10 if fmha.group(1) else 4) * math.prod(int(d) for d in scores.groups()) * head_dim
  return total


def matmul_flops(text: str) -> float:
  """FLOPs per execution of the program's dots and cuDNN attention, loops unrolled by their trip counts."""
  headers = {}
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header and not line.startswith(' '):
      headers[header.group(2)] = line
  bodies, _ = computations(text)
  counts = executions(text)
  return sum(counts.get(name, 0) * _matmul_flops(headers[name], lines) for name, lines in bodies.items())
