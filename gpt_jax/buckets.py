"""Padding variable-length requests into a few compiled shapes: the bucketing that sampling and scoring share.

A task of thousands of prompts of every length becomes a handful of (rows, length) shapes, each compiled once,
instead of one compile per item.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_BUCKET = 16  # shortest padded length: short prompts share one compile


def next_pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def bucket_batches(lengths: Sequence[int], max_len: int, batch_for_length,
                   row_multiple: int = 1) -> list[tuple[np.ndarray, int, int]]:
  """Groups items into (indices, padded length, rows) batches, longest first.

  Lengths are padded to a power of two (at least MIN_BUCKET, at most max_len) and rows to a power of two (at most
  batch_for_length(length), rounded down to a multiple of row_multiple but at least row_multiple), so a task of
  thousands of items compiles a handful of shapes, not one per item. Rows are then rounded up to a multiple of
  row_multiple (the mesh's batch shards); extra rows are padding.
  """
  order = np.argsort(-np.asarray(lengths), kind='stable')
  batches, start = [], 0
  while start < len(order):
    length = min(max_len, max(MIN_BUCKET, next_pow2(int(lengths[order[start]]))))
    capacity = max(row_multiple, batch_for_length(length) // row_multiple * row_multiple)
    indices = order[start:start + capacity]
    rows = min(capacity, next_pow2(len(indices)))
    batches.append((indices, length, -(-rows // row_multiple) * row_multiple))
    start += len(indices)
  return batches
