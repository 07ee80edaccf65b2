"""Capturing file descriptor 2: what Python, logging and native libraries (orbax's threads, libtpu, the CUDA plugin)
write to stderr, kept for a log or thrown away. No jax import, so the dry-run can use it before jax starts."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_stderr(buffer: io.StringIO | None = None):
  """Sends everything written to file descriptor 2 while the block runs to buffer (None: discards it)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if buffer is not None:
        captured.seek(0)
        buffer.write(captured.read().decode('utf-8', 'replace'))
