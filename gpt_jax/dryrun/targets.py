"""Compile targets for the dry-run: TPU slices from libtpu's topologies and NVIDIA GPU clusters from a described
chip, as compile-only devices on a CPU host, with what each chip offers (HBM, bandwidths) for the fit check and
the roofline.

    --topology=v5p:8x8x16   a TPU slice (chip:shape as a Cloud TPU topology), --num_slices for multi-slice
    --topology=h100:2x8     2 nodes of 8 H100s (nodes x GPUs per node), compiled by the jax CUDA plugin

libtpu and the jax CUDA plugin (with cuDNN) live in a directory of their own, DRYRUN_DIR (`pip install --no-deps
--target .venv/dryrun -r requirements-dryrun.txt`), put on the path only here: installed beside CPU jax, every jax
process would try them first (libtpu looks for a TPU VM and takes a lock file, the plugin looks for a driver).
XLA compiles for a GPU from the target description below (GpuTargetConfigProto text); it does not check device
memory, so the dry-run does.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys

from gpt_jax.config import ConfigError
from gpt_jax.fd_stderr import captured_stderr

GIB = 2**30
MIB = 2**20


def size(n_bytes: float) -> str:
  """A byte count for a person: GiB from 1 GiB up, MiB below (so a tiny config does not read 0.00 GiB)."""
  return f'{n_bytes / GIB:.2f} GiB' if n_bytes >= GIB else f'{n_bytes / MIB:.2f} MiB'


# Where requirements-dryrun.txt is installed (pip install --target): libtpu, the jax CUDA plugin and cuDNN.
DRYRUN_DIR = os.environ.get('GPT_JAX_DRYRUN_DIR', os.path.join(sys.prefix, 'dryrun'))
INSTALL = f'pip install --no-deps --target {DRYRUN_DIR} -r requirements-dryrun.txt'
# launch/slurm_gpu.sbatch lets XLA take this fraction of GPU memory; the rest is not the program's.
GPU_MEMORY_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip as the fit check and the roofline see it (vendor figures; peak FLOP/s is flops.py's)."""
  kind: str  # human name
  platform: str  # 'tpu' or 'gpu'
  hbm_bytes: float  # memory the compiled program may use
  hbm_bandwidth: float  # bytes/s
  link_bandwidth: float  # bytes/s of ICI (TPU) or NVLink (GPU) per chip, both directions
  gpu_spec: dict | None = None  # GPU only: the device description XLA compiles for


def _gpu_spec(name: str, memory_bytes: int, bandwidth: float) -> dict:
  """An SM90 (Hopper) GPU with 132 SMs at 1.98 GHz boost and a 50 MiB L2: H100 SXM and H200 differ only in memory."""
  return dict(name=name, core_count=132, clock_rate_ghz=1.98, l2_cache_size=50 * 2**20, memory_bandwidth=bandwidth,
              device_memory_size=memory_bytes, shared_memory_per_core=228 * 1024,
              shared_memory_per_block_optin=227 * 1024, compute_capability=(9, 0))


CHIPS = {
    # TPU HBM is what libtpu reports as available to a program (its out-of-memory message names the same figure).
    'v5e': Chip('TPU v5e', 'tpu', 15.75 * GIB, 819e9, 200e9),
    'v5p': Chip('TPU v5p', 'tpu', 95.74 * GIB, 2765e9, 600e9),
    'v6e': Chip('TPU v6e', 'tpu', 31.25 * GIB, 1640e9, 448e9),
    'h100': Chip('NVIDIA H100 SXM 80GB', 'gpu', 81559 * 2**20 * GPU_MEMORY_FRACTION, 3.35e12, 900e9,
                 _gpu_spec('NVIDIA H100 80GB HBM3', 81559 * 2**20, 3.35e12)),
    'h200': Chip('NVIDIA H200 141GB', 'gpu', 143771 * 2**20 * GPU_MEMORY_FRACTION, 4.8e12, 900e9,
                 _gpu_spec('NVIDIA H200', 143771 * 2**20, 4.8e12)),
}


@dataclasses.dataclass
class Target:
  """A topology as compile-only devices: name as given, its chip, how many slices (TPU) or nodes (GPU)."""
  name: str
  chip: Chip
  slices: int
  devices: list


def parse(topology: str) -> tuple[str, tuple[int, ...]]:
  """'v5p:8x8x16' -> ('v5p', (8, 8, 16)); a ConfigError naming the flag for anything else."""
  match = re.fullmatch(r'([a-z0-9]+):(\d+(?:x\d+)*)', topology.strip().lower())
  if not match or match.group(1) not in CHIPS:
    raise ConfigError(f'--topology={topology!r} is not a known topology: use <chip>:<shape> with chip one of '
                      f'{", ".join(CHIPS)}, e.g. --topology=v5p:4x4x4, --topology=v5e:2x2 or --topology=h100:2x8 '
                      f'(nodes x GPUs per node).')
  return match.group(1), tuple(int(x) for x in match.group(2).split('x'))


def build(topology: str, num_slices: int = 1) -> Target:
  """Compile-only devices for --topology (and --num_slices of it, TPU only); nothing runs on them."""
  chip_name, shape = parse(topology)
  chip = CHIPS[chip_name]
  if not isinstance(num_slices, int) or num_slices < 1:
    raise ConfigError(f'--num_slices={num_slices} must be a positive integer.')
  if chip.platform == 'tpu':
    return Target(topology, chip, num_slices, _tpu_devices(topology, chip_name, num_slices))
  if num_slices != 1:
    raise ConfigError(f'--num_slices is for TPU slices; a GPU cluster is --topology={chip_name}:<nodes>x<GPUs per '
                      f'node>, e.g. --topology={chip_name}:4x8.')
  if len(shape) != 2 or not 1 <= shape[1] <= 8:
    raise ConfigError(f'--topology={topology} must be {chip_name}:<nodes>x<GPUs per node> with at most 8 GPUs per '
                      f'node, e.g. --topology={chip_name}:2x8.')
  return Target(topology, chip, shape[0], _gpu_devices(topology, chip, *shape))


def _tpu_devices(topology: str, chip_name: str, num_slices: int) -> list:
  _use_dryrun_dir()
  if importlib.util.find_spec('libtpu') is None:
    raise ConfigError(f'--topology={topology} needs libtpu (pinned to this jax) to compile for TPU: {INSTALL}.')
  from jax.experimental import topologies
  try:
    with captured_stderr():  # libtpu warns that this host is not a TPU VM, which a dry-run knows
      return topologies.get_topology_desc(topology_name=topology.lower(), platform='tpu',
                                          num_slices=num_slices).devices
  except Exception as error:  # noqa: BLE001 -- libtpu's topology errors are JaxRuntimeErrors of several kinds
    reason = str(error).strip().splitlines()[0]
    raise ConfigError(f'--topology={topology} is not a {chip_name} topology libtpu knows ({reason}); give the slice '
                      f'shape, e.g. {chip_name}:2x2 or {chip_name}:4x4{"x4" if chip_name == "v5p" else ""}.') from None


def _gpu_devices(topology: str, chip: Chip, nodes: int, per_node: int) -> list:
  _use_dryrun_dir()
  if importlib.util.find_spec('jax_plugins.xla_cuda12') is None:
    raise ConfigError(f'--topology={topology} needs the jax CUDA plugin and cuDNN (no driver or GPU) to compile for '
                      f'GPUs: {INSTALL}.')
  from jax._src import xla_bridge
  from jax.experimental import topologies
  if 'cuda' not in xla_bridge._topology_factories:  # noqa: SLF001 -- registered once per process
    import jax_plugins.xla_cuda12 as cuda_plugin  # pylint: disable=import-outside-toplevel
    with captured_stderr():  # the plugin's libraries report, once each, that there is no driver
      cuda_plugin.initialize()
  return topologies.get_topology_desc(platform='cuda', topology=f'1x{nodes}x{per_node}',
                                      target_config=target_config(chip.gpu_spec)).devices


def target_config(spec: dict) -> str:
  """The GpuTargetConfigProto text XLA compiles for: the chip's SMs, caches, memory, clock and compute capability,
  and the cuDNN of requirements-dryrun-gpu.txt (cuDNN picks its attention kernels by version)."""
  major, minor = spec['compute_capability']
  return f'''gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {spec['shared_memory_per_core']}
  shared_memory_per_block_optin: {spec['shared_memory_per_block_optin']}
  threads_per_core_limit: 2048
  core_count: {spec['core_count']}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {int(spec['memory_bandwidth'])}
  l2_cache_size: {spec['l2_cache_size']}
  clock_rate_ghz: {spec['clock_rate_ghz']}
  device_memory_size: {spec['device_memory_size']}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  cuda_compute_capability {{ major: {major} minor: {minor} }}
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 28 }}
device_description_str: "{spec['name']}"
'''


def activate() -> None:
  """Readies a dry-run process; call it before jax is first imported (python -m gpt_jax.dryrun does). The host
  only compiles (JAX_PLATFORMS=cpu), libtpu runs as a compile-only client beside other jax processes, and
  DRYRUN_DIR is on the path when jax starts: jax looks for cuDNN then, and its plugin start-up messages about the
  missing driver are silenced here."""
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ['ALLOW_MULTIPLE_LIBTPU_LOAD'] = '1'
  if os.path.isdir(DRYRUN_DIR) and DRYRUN_DIR not in sys.path:
    sys.path.append(DRYRUN_DIR)
  with captured_stderr():
    import jax  # pylint: disable=import-outside-toplevel
    jax.devices()


def cudnn_ready() -> bool:
  """Whether jax found cuDNN when it started (it looks once, at import)."""
  from jax._src.lib import cuda_versions  # pylint: disable=import-outside-toplevel
  return cuda_versions is not None


def _use_dryrun_dir() -> None:
  """DRYRUN_DIR on the path in a process that did not activate(): after jax's backends have started, so its
  plugin discovery does not run the CUDA plugin's start-up."""
  import jax
  jax.devices()
  os.environ['ALLOW_MULTIPLE_LIBTPU_LOAD'] = '1'  # a compile-only client: other jax processes may hold the lock
  if os.path.isdir(DRYRUN_DIR) and DRYRUN_DIR not in sys.path:
    sys.path.append(DRYRUN_DIR)


