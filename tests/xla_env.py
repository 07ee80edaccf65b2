"""The environment of the jax commands the tests start and compare: N simulated CPU devices, and no LLVM
optimisation.

Those commands compile tiny programs, so compiling costs far more than running them, and LLVM's optimisation passes
are most of that cost: at level 0 the one-process PPO command of test_ppo_process.py took 25 s against 35 s, its
updates after the first as fast. Results move at float32 rounding (about 1e-5 after 24 training steps), so runs that
a test compares must all be compiled alike: start each of them through env(). pytest's own process keeps XLA's
default level: test_loop's microbatch equivalence sits at float32 rounding from its tolerance, and at level 0 one
of its 32,768 Adam updates moved 2.6e-5 against 2e-5.
"""

import os

NO_LLVM_OPTIMISATION = '--xla_backend_optimization_level=0'


def env(devices: int = 8, base=None, **extra) -> dict:
  """base (os.environ by default) with `devices` CPU devices, no LLVM optimisation and the extra variables."""
  flags = f'--xla_force_host_platform_device_count={devices} {NO_LLVM_OPTIMISATION}'
  return dict(os.environ if base is None else base, XLA_FLAGS=flags, JAX_PLATFORMS='cpu', **extra)
