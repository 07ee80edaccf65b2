"""The XLA settings of every jax process the tests run, pytest's own and the commands it starts: N simulated CPU
devices, and no LLVM optimisation.

The tests' programs are tiny, so compiling them costs far more than running them, and LLVM's optimisation passes
are most of that cost: at level 0 a test that compiles a PPO update takes about two thirds of the time (the same
update, its run time unchanged). Results move at float32 rounding (about 1e-5 after 24 training steps), so runs
that a test compares must all be compiled alike: start every jax command through env(). This module imports no jax:
conftest.py uses it before jax is imported.
"""

import os

NO_LLVM_OPTIMISATION = '--xla_backend_optimization_level=0'


def flags(devices: int = 8) -> str:
  return f'--xla_force_host_platform_device_count={devices} {NO_LLVM_OPTIMISATION}'


def env(devices: int = 8, base=None, **extra) -> dict:
  """base (os.environ by default) with `devices` CPU devices, the tests' XLA flags and the extra variables."""
  return dict(os.environ if base is None else base, XLA_FLAGS=flags(devices), JAX_PLATFORMS='cpu', **extra)
