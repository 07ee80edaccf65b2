"""One attempt at a sweep run, whoever starts it (the local runner, a SLURM array task): the run's lock, so one
runner trains a run at a time, and the attempt's exit status and wall time in sweep_attempts.jsonl.

The lock is an flock on <workdir>/sweep.lock, which holds the holder's host, pid, start and a heartbeat. The
training process inherits the locked descriptor, so the lock lasts as long as the runner or its training process
lives (a run orphaned by a kill -9 of its runner keeps it while it saves) and the kernel releases it however they
end. A lock file left unended and unlocked is stale: its attempt died without recording itself, and its heartbeat
gives that attempt's time, recorded by the next runner to take the lock (and counted by `status` until then).
Across hosts this needs a filesystem whose flock other hosts see (NFSv4, Lustre mounted with flock, GPFS).

    python -m gpt_jax.sweep.attempt WORKDIR COMMAND...   runs COMMAND as one attempt (the generated SLURM script)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time

ATTEMPTS_FILE = 'sweep_attempts.jsonl'
LOCK_FILE = 'sweep.lock'
HEARTBEAT_SECONDS = 5.0


class Locked(Exception):
  """The run is being trained by another runner: holder = {'host', 'pid', 'started', ...}."""

  def __init__(self, workdir: str, holder: dict):
    super().__init__(f'{workdir} is locked by {where(holder)}')
    self.holder = holder


def where(holder: dict) -> str:
  return f'{holder.get("host", "?")} (pid {holder.get("pid", "?")})'


def read_lock(workdir: str) -> tuple[dict | None, bool]:
  """(the lock file's record or None, whether a live runner holds it)."""
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY)
  except FileNotFoundError:
    return None, False
  try:
    held = not _try_flock(fd, fcntl.LOCK_SH)
    if not held:
      fcntl.flock(fd, fcntl.LOCK_UN)
    return _parse(os.pread(fd, 4096, 0)), held
  finally:
    os.close(fd)


def stale_seconds(record: dict | None, held: bool) -> float:
  """The time of an attempt that died without recording itself (0 when there is none)."""
  if record is None or held or 'ended' in record:
    return 0.0
  return max(0.0, record.get('heartbeat', 0.0) - record.get('started', 0.0))


def read_attempts(workdir: str) -> list[dict]:
  path = os.path.join(workdir, ATTEMPTS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


class Attempt:
  """The lock of one run, taken by acquire(); beat() while it trains, finish(exit code) records it and unlocks."""

  def __init__(self, workdir: str):
    """Takes the lock or raises Locked. A stale lock's attempt is recorded first."""
    os.makedirs(workdir, exist_ok=True)
    self.workdir = workdir
    self.fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    # A reader (status) holds a shared lock for a moment: retry for a second before calling the run taken.
    for _ in range(10):
      if _try_flock(self.fd, fcntl.LOCK_EX):
        break
      time.sleep(0.1)
    else:
      holder = _parse(os.pread(self.fd, 4096, 0)) or {}
      os.close(self.fd)
      raise Locked(workdir, holder)
    previous = _parse(os.pread(self.fd, 4096, 0))
    if previous is not None and 'ended' not in previous:
      self._record(dict(exit_code=None, seconds=stale_seconds(previous, held=False), host=previous.get('host'),
                        ended=_iso(previous.get('heartbeat', 0.0)), note='died without recording (killed)'))
    self.started = time.time()
    self.record = dict(host=socket.gethostname(), pid=os.getpid(), started=self.started, heartbeat=self.started)
    self._write()

  def popen(self, command: list[str], **kwargs) -> subprocess.Popen:
    """Starts the training command holding the lock too (see the module docstring)."""
    return subprocess.Popen(command, pass_fds=(self.fd,), **kwargs)

  def beat(self) -> None:
    now = time.time()
    if now - self.record['heartbeat'] >= HEARTBEAT_SECONDS:
      self.record['heartbeat'] = now
      self._write()

  def finish(self, exit_code: int) -> float:
    """Records the attempt, releases the lock; returns its wall seconds."""
    now = time.time()
    seconds = now - self.started
    self._record(dict(exit_code=exit_code, seconds=seconds, host=self.record['host'], ended=_iso(now)))
    self.record.update(heartbeat=now, ended=now)
    self._write()
    os.close(self.fd)  # the training process has exited, so this was the last holder
    return seconds

  def _write(self) -> None:
    data = json.dumps(self.record).encode()
    os.ftruncate(self.fd, 0)
    os.pwrite(self.fd, data, 0)

  def _record(self, attempt: dict) -> None:
    with open(os.path.join(self.workdir, ATTEMPTS_FILE), 'a', encoding='utf-8') as f:
      f.write(json.dumps(attempt) + '\n')


def _try_flock(fd: int, kind: int) -> bool:
  try:
    fcntl.flock(fd, kind | fcntl.LOCK_NB)
    return True
  except OSError as error:
    if error.errno in (errno.EAGAIN, errno.EACCES):
      return False
    raise


def _parse(data: bytes) -> dict | None:
  try:
    return json.loads(data) if data.strip() else None
  except ValueError:  # caught mid-rewrite
    return None


def _iso(t: float) -> str:
  return time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(t))


def main(argv: list[str]) -> int:
  """Runs COMMAND as one attempt of WORKDIR's run; exits 0 without running it when another runner holds the run.
  SIGTERM and SIGINT (scancel, the time limit, Ctrl-C) are passed on and the attempt still recorded."""
  if len(argv) < 3:
    print('usage: python -m gpt_jax.sweep.attempt WORKDIR COMMAND...', file=sys.stderr)
    return 2
  workdir, command = argv[1], argv[2:]
  try:
    attempt = Attempt(workdir)
  except Locked as locked:
    print(f'skipped: {workdir} is being trained by {where(locked.holder)}.', flush=True)
    return 0
  process = attempt.popen(command)
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda s, frame: process.send_signal(s))
  while process.poll() is None:
    attempt.beat()
    time.sleep(0.5)
  attempt.finish(process.returncode)
  return process.returncode if process.returncode >= 0 else 128 - process.returncode


if __name__ == '__main__':
  sys.exit(main(sys.argv))
