"""One run per workdir: a training run's process 0 holds an exclusive lock on <workdir>/.lock from before the
restore until the run ends, so a second command started on the same workdir (the same command typed twice, a
sweep launched twice) is refused before it reads or writes anything, instead of both writing checkpoints.

The lock is flock(2): the kernel drops it when its process ends, by Ctrl-C, kill -9 or a crash, so there is never a
stale lock to clear. The file keeps who holds it (host, pid, start time, command) for the refusal's message. All
processes of a run agree on the outcome, so a refused multi-process run stops everywhere. A workdir that the lock
created is removed again if the run ends leaving nothing else in it (a run refused at start-up leaves no folder).
On a file system without flock support (some parallel file systems mount without it) the run goes on unlocked,
with a warning.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from gpt_jax.config import ConfigError

LOCK_FILE = '.lock'


def _holder() -> str:
  return json.dumps(dict(host=socket.gethostname(), pid=os.getpid(), argv=sys.argv,
                         started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')))


def _describe(text: str) -> str:
  try:
    h = json.loads(text)
    return f'process {h["pid"]} on {h["host"]}, started {h["started"]}'
  except (ValueError, KeyError, TypeError):
    return 'another process'


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock for the block; raises ConfigError (on every process) if another run holds it or the
  directory cannot be written."""
  handle, created, refusal = None, False, ''
  if jax.process_index() == 0:
    created = not os.path.isdir(workdir)
    handle, refusal = _lock(workdir)
  if jax.process_count() > 1:  # a collective on every process: all stop if process 0 was refused
    refused = bool(np.any(multihost_utils.process_allgather(np.array(refusal != ''))))
    if refused and not refusal:
      refusal = f'process 0 could not take the run directory {workdir}: see its message.'
  if refusal:
    raise ConfigError(refusal)
  try:
    yield
  finally:
    if handle is not None:
      if created and os.listdir(workdir) == [LOCK_FILE]:
        os.remove(os.path.join(workdir, LOCK_FILE))
        os.rmdir(workdir)
      handle.close()


def _lock(workdir: str):
  """(the open lock file, '') once locked; (None, the refusal) if another process holds the lock or the directory
  cannot be written; (None, '') where the file system has no flock (with a warning)."""
  try:
    os.makedirs(workdir, exist_ok=True)
    handle = open(os.path.join(workdir, LOCK_FILE), 'a+', encoding='utf-8')
  except OSError as e:
    return None, (f'cannot write the run directory {workdir} ({e.strerror}): pass a directory this user can create '
                  f'and write.')
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = _describe(handle.read())
    handle.close()
    return None, (f'the run directory {workdir} is in use by another run ({holder}): wait for it to end or stop it, '
                  f'or pass another directory.')
  except OSError as e:
    handle.close()
    print(f'warning: cannot lock the run directory {workdir} ({e.strerror}); running without the guard against two '
          f'runs in it.', file=sys.stderr, flush=True)
    return None, ''
  handle.seek(0)
  handle.truncate()
  handle.write(_holder() + '\n')
  handle.flush()
  return handle, ''
