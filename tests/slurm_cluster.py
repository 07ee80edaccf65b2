"""A real one-node SLURM cluster on this machine for the tests: munged, slurmctld and slurmd (Debian's slurm-wlm
and munge, installed by `make setup-slurm`), a generated slurm.conf in a temporary directory, loopback only, the
machine's own CPUs and 8 stand-in GPUs (jobs may ask for --gpus-per-node as on a GPU cluster and train on the CPUs).
Every daemon runs in the foreground as a child of the test process and is stopped at the end. When the cluster
cannot start, the test fails with the reason: these tests are never skipped."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import time

import pytest

DAEMONS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'srun', 'squeue', 'scontrol', 'scancel')
GPUS = 8  # stand-in GPUs of the node


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _conf(d: str, host: str, cpus: int) -> str:
  return f'''ClusterName=gptjax
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge.socket
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=30
MinJobAge=600
InactiveLimit=0
SchedulerParameters=sched_interval=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
'''


class Cluster:
  """The running cluster: env (SLURM_CONF set) for its client commands, and helpers to submit and wait."""

  def __init__(self, directory: str):
    self.dir = directory
    self.env = dict(os.environ, SLURM_CONF=os.path.join(directory, 'slurm.conf'))
    self.daemons: list[subprocess.Popen] = []

  def start(self) -> None:
    path = os.environ['PATH'] + ':/usr/sbin:/sbin'
    missing = [d for d in DAEMONS if not shutil.which(d, path=path)]
    if missing:
      raise RuntimeError(f'{", ".join(missing)} not installed: run `make setup-slurm` (as root).')
    self.env['PATH'] = path
    if os.geteuid() != 0:
      raise RuntimeError('slurmd must run as root to start jobs: run the SLURM tests as root, as CI does.')
    d, host = self.dir, socket.gethostname()
    for sub in ('state', 'spool'):
      os.makedirs(os.path.join(d, sub))
    with open(os.path.join(d, 'munge.key'), 'wb') as f:
      f.write(os.urandom(1024))
    os.chmod(os.path.join(d, 'munge.key'), 0o600)
    open(os.path.join(d, 'plugstack.conf'), 'w').close()
    for i in range(GPUS):  # stand-ins for /dev/nvidia<i>: slurmd wants character devices, these are /dev/null's
      os.mknod(os.path.join(d, f'gpu{i}'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with open(os.path.join(d, 'gres.conf'), 'w') as f:
      f.write(f'NodeName={host} Name=gpu File={d}/gpu[0-{GPUS - 1}]\n')
    with open(os.path.join(d, 'slurm.conf'), 'w') as f:
      f.write(_conf(d, host, os.cpu_count()))
    self._daemon(['munged', '--foreground', '--force', f'--socket={d}/munge.socket', f'--key-file={d}/munge.key',
                  f'--pid-file={d}/munged.pid', f'--seed-file={d}/munged.seed', f'--log-file={d}/munged.log'],
                 f'{d}/munge.socket', 'munged.log')
    self._daemon(['slurmctld', '-D', '-i'], None, 'slurmctld.log')
    self._daemon(['slurmd', '-D'], None, 'slurmd.log')
    self._wait_idle()

  def _daemon(self, command: list[str], ready_path: str | None, log: str) -> None:
    command = [shutil.which(command[0], path=self.env['PATH']), *command[1:]]
    process = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    self.daemons.append(process)
    deadline = time.time() + 30
    while ready_path and not os.path.exists(ready_path):
      self._check_alive(process, log, deadline)
      time.sleep(0.1)

  def _check_alive(self, process: subprocess.Popen, log: str, deadline: float) -> None:
    if process.poll() is not None or time.time() > deadline:
      name = os.path.basename(process.args[0])
      raise RuntimeError(f'{name} did not start (exit {process.poll()}): {self._tail(log)}')

  def _wait_idle(self) -> None:
    deadline = time.time() + 60
    while True:
      for process, log in zip(self.daemons, ('munged.log', 'slurmctld.log', 'slurmd.log')):
        self._check_alive(process, log, float('inf'))
      state = subprocess.run(['sinfo', '-h', '-o', '%T'], env=self.env, capture_output=True, text=True)
      if state.stdout.strip() == 'idle':
        return
      if time.time() > deadline:
        raise RuntimeError(f'the node is {state.stdout.strip() or state.stderr.strip()!r}, not idle, after 60 s: '
                           f'{self._tail("slurmctld.log")}')
      time.sleep(0.3)

  def _tail(self, log: str) -> str:
    path = os.path.join(self.dir, log)
    lines = open(path, encoding='utf-8', errors='replace').read().strip().splitlines() if os.path.isfile(path) else []
    return ' | '.join(lines[-3:]) or f'no {log}'

  def stop(self) -> None:
    subprocess.run(['scancel', '--full', '--user=root'], env=self.env, capture_output=True)
    for process in reversed(self.daemons):
      process.terminate()
      try:
        process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

  def run(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault('env', self.env)
    return subprocess.run(command, capture_output=True, text=True, **kwargs)

  def job_ids(self, sbatch_output: str) -> list[str]:
    return re.findall(r'Submitted batch job (\d+)', sbatch_output)

  def state(self, job: str) -> dict[str, str]:
    """Array task (or job) id -> SLURM state, from scontrol (jobs stay listed MinJobAge seconds after they end)."""
    out = self.run('scontrol', '-o', 'show', 'job', job).stdout
    states = {}
    for line in out.splitlines():
      fields = dict(f.split('=', 1) for f in line.split() if '=' in f)
      task = fields.get('ArrayTaskId')
      states[f'{job}_{task}' if task else job] = fields.get('JobState', '?')
    return states

  def wait(self, job: str, timeout: float = 600) -> dict[str, str]:
    """Waits until every task of job has ended; returns their states."""
    deadline = time.time() + timeout
    while True:
      states = self.state(job)
      if states and all(s in ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY')
                        for s in states.values()):
        return states
      assert time.time() < deadline, f'job {job} still {states} after {timeout} s'
      time.sleep(0.5)


@pytest.fixture(scope='session')
def slurm(tmp_path_factory):
  """The one-node cluster, started once for the session and stopped at its end."""
  cluster = Cluster(str(tmp_path_factory.mktemp('slurm')))
  try:
    cluster.start()
  except RuntimeError as error:
    cluster.stop()
    pytest.fail(f'the test SLURM cluster could not start: {error}', pytrace=False)
  yield cluster
  cluster.stop()
